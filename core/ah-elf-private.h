/* Reading a plugin's ELF file without loading it: the findings behind
 * ah_plugin_lint(), structured for hot reload, which refuses to replace
 * a plugin that can never be unloaded and warns about the rest.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include <agenthost/agenthost.h>

G_BEGIN_DECLS

/* In the order ah__elf_lint() reports them: what makes unloading
 * impossible first. */
typedef enum {
  AH_ELF_FINDING_NODELETE,            /* DF_1_NODELETE: dlclose() is a no-op */
  AH_ELF_FINDING_UNIQUE_SYMBOL,       /* STB_GNU_UNIQUE: the loader pins the object */
  AH_ELF_FINDING_THREAD_DESTRUCTORS,  /* imports __cxa_thread_atexit(_impl) */
  AH_ELF_FINDING_CONSTRUCTOR,         /* DT_INIT or DT_INIT_ARRAY beyond the toolchain's */
  AH_ELF_FINDING_DESTRUCTOR,          /* DT_FINI or DT_FINI_ARRAY beyond the toolchain's */
  AH_ELF_FINDING_TLS,                 /* a PT_TLS segment */
  AH_ELF_FINDING_STATIC_TLS,          /* DF_STATIC_TLS: initial-exec TLS */
  AH_ELF_FINDING_EXPORT,              /* a defined dynamic symbol besides the entry point */
} AhElfFindingKind;

typedef struct {
  AhElfFindingKind  kind;
  /* The function or symbol concerned, as named in the file (may hold any
   * byte but NUL); NULL for findings about the whole object and for
   * functions the file has no name for. */
  char             *symbol;
  /* Constructors and destructors: the function's address in the object
   * (relative to its load base). 0 otherwise. */
  guint64           address;
  /* The line ah_plugin_lint() returns: what, and why it matters. Names
   * are escaped, so it is one line of printable ASCII or UTF-8. */
  char             *message;
} AhElfFinding;

void       ah__elf_finding_free            (AhElfFinding *finding);
/* TRUE for the findings that keep the object mapped after dlclose():
 * a hot reload cannot replace its code, only load a second copy. */
gboolean   ah__elf_finding_prevents_unload (const AhElfFinding *finding);

/* Reads @path (never dlopen()s it) as an ELF64 shared object of this
 * host's byte order and returns its findings, element-type AhElfFinding,
 * empty when there is nothing to say. NULL with an AH_PLUGIN_ERROR
 * (NOT_FOUND, NOT_ELF for a file that is no ELF or is malformed or
 * truncated, LOAD for a valid ELF file of another class, byte order or
 * type, or one that cannot be read), the message starting with @path. */
GPtrArray *ah__elf_lint                    (const char *path, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AhElfFinding, ah__elf_finding_free)

/* "an executable", "a core dump"...: what an ELF e_type is, for the
 * loader's and the lint's messages. */
const char *ah__elf_type_name (guint16 elf_type);

G_END_DECLS
