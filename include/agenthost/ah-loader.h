/* agenthost: opening plugin files.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#if !defined (AH_INSIDE) && !defined (AH_COMPILATION)
#error "Only <agenthost/agenthost.h> can be included directly."
#endif

#include <agenthost/ah-types.h>
#include <agenthost/ah-plugin.h>

G_BEGIN_DECLS

#define AH_PLUGIN_ERROR (ah_plugin_error_quark ())
/* Every message of this domain starts with the plugin's file name. */
typedef enum {
  AH_PLUGIN_ERROR_FAILED,
  AH_PLUGIN_ERROR_NOT_FOUND,     /* no such file */
  AH_PLUGIN_ERROR_NOT_ELF,       /* "not an ELF file" */
  AH_PLUGIN_ERROR_LOAD,          /* dlopen refused it (the loader's reason follows) */
  AH_PLUGIN_ERROR_NO_ENTRY,      /* "missing symbol ah_plugin_entry" */
  AH_PLUGIN_ERROR_ABI,           /* "ABI 2.0, host supports 1.0" */
  AH_PLUGIN_ERROR_INVALID_DESC,  /* a required field is missing or malformed */
  AH_PLUGIN_ERROR_INIT,          /* "init failed: <plugin's message>" */
} AhPluginError;

typedef struct _AhPlugin AhPlugin;   /* a loaded plugin file; refcounted */

AH_API GQuark              ah_plugin_error_quark  (void);
/* dlopen()s @path with RTLD_NOW | RTLD_LOCAL, resolves the entry symbol
 * and checks the descriptor. Nothing of the plugin runs but its entry
 * function. */
AH_API AhPlugin           *ah_plugin_open         (const char *path, GError **error);
AH_API AhPlugin           *ah_plugin_ref          (AhPlugin *self);
/* The module is closed when the last reference goes. */
AH_API void                ah_plugin_unref        (AhPlugin *self);
AH_API const char         *ah_plugin_get_path     (AhPlugin *self);
/* The plugin's descriptor, normalised to this host's struct layout:
 * fields the plugin's (older) struct lacks read as zero. */
AH_API const AhPluginDesc *ah_plugin_get_desc     (AhPlugin *self);
/* A multi-line human description: name, version, ABI, state size, hooks,
 * as `agenthost inspect` prints it. */
AH_API char               *ah_plugin_describe     (AhPlugin *self);
/* (0.2) Reads @path as an ELF file, without loading it, and returns what
 * would make the plugin unsafe to unload or reload, or to keep isolated,
 * one line each: constructors and destructors, thread-local destructors,
 * unique (STB_GNU_UNIQUE) symbols, thread-local storage, symbols exported
 * beyond the entry point. An empty array when there is nothing to say;
 * NULL with an AH_PLUGIN_ERROR when the file is not a readable ELF
 * shared object. */
AH_API GStrv               ah_plugin_lint         (const char *path, GError **error);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AhPlugin, ah_plugin_unref)

G_END_DECLS
