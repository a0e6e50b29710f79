/* SPDX-License-Identifier: MIT */
/* Tests of the plugin loader: ah_plugin_open() on the broken-on-purpose
 * plugins of tests/plugins/ and on files that are no plugin at all, the
 * descriptor checks on descriptors no compiler would produce, describe(),
 * and ah_plugin_find(). */
/* memfd_create() is a GNU extension. */
#define _GNU_SOURCE

#include <agenthost/agenthost.h>
#include "ah-loader-private.h"

#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <math.h>
#include <string.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

/* ---- helpers ------------------------------------------------------------ */

static char *
test_plugin_path (const char *name)
{
  g_autofree char *file_name = g_strconcat (name, ".so", NULL);

  return g_test_build_filename (G_TEST_BUILT, "plugins", file_name, NULL);
}

/* A directory under the per-test isolated directories, which GTest
 * removes with everything in it after each test. */
static char *
scratch_dir_new (void)
{
  char *dir = g_build_filename (g_get_user_cache_dir (), "test-loader", NULL);

  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  return dir;
}

static char *
scratch_write (const char *dir, const char *name, gconstpointer data, gsize size)
{
  g_autoptr(GError) error = NULL;
  char *path = g_build_filename (dir, name, NULL);
  g_autofree char *parent = g_path_get_dirname (path);

  g_assert_cmpint (g_mkdir_with_parents (parent, 0700), ==, 0);
  g_file_set_contents (path, data, (gssize) size, &error);
  g_assert_no_error (error);
  return path;
}

/* Whether the dynamic loader still has @path mapped: RTLD_NOLOAD never
 * loads, it only finds an object already there. */
static gboolean
module_is_loaded (const char *path)
{
  void *handle = dlopen (path, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);

  if (handle == NULL)
    return FALSE;
  dlclose (handle);
  return TRUE;
}

static void
assert_open_fails (const char *path, AhPluginError code, const char *reason_pattern)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhPlugin) plugin = NULL;
  g_autofree char *pattern = g_strdup_printf ("%s: %s", path, reason_pattern);

  plugin = ah_plugin_open (path, &error);
  g_assert_null (plugin);
  g_assert_error (error, AH_PLUGIN_ERROR, (gint) code);
  if (!g_pattern_match_simple (pattern, error->message))
    g_error ("message \"%s\" does not match \"%s\"", error->message, pattern);
}

/* ---- broken plugins ----------------------------------------------------- */

typedef struct {
  const char   *name;
  AhPluginError code;
  const char   *reason;   /* after "PATH: "; GLib glob: '*' and '?' only */
} BrokenPlugin;

static const BrokenPlugin broken_plugins[] = {
  { "abi-major", AH_PLUGIN_ERROR_ABI, "ABI 2.0, host supports 1.3" },
  { "abi-minor-newer", AH_PLUGIN_ERROR_ABI, "ABI 1.99, host supports 1.3" },
  { "no-entry", AH_PLUGIN_ERROR_NO_ENTRY, "missing symbol ah_plugin_entry" },
  { "entry-in-dependency", AH_PLUGIN_ERROR_NO_ENTRY,
    "missing symbol ah_plugin_entry (the one found belongs to its dependency */entry-provider.so)" },
  { "entry-null", AH_PLUGIN_ERROR_INVALID_DESC,
    "invalid descriptor: ah_plugin_entry returned NULL" },
  { "no-handler", AH_PLUGIN_ERROR_INVALID_DESC, "invalid descriptor: handle_batch is NULL" },
  { "bad-name", AH_PLUGIN_ERROR_INVALID_DESC,
    "invalid descriptor: name \"../bad name\" has characters outside [A-Za-z0-9_-]" },
  { "struct-too-small", AH_PLUGIN_ERROR_INVALID_DESC,
    "invalid descriptor: struct_size * is smaller than the * bytes ABI 1.0 requires" },
  { "undefined-symbol", AH_PLUGIN_ERROR_LOAD,
    "cannot load: *undefined symbol: ah_test_symbol_nobody_defines*" },
  { "bad-schema", AH_PLUGIN_ERROR_INVALID_DESC,
    "invalid config schema: the default of key 'count' must be an integer between 1 and 10, "
    "got '20'" },
};

static void
test_loader_open_broken (gconstpointer data)
{
  const BrokenPlugin *broken = data;
  g_autofree char *path = test_plugin_path (broken->name);

  g_test_summary ("A plugin broken in one way is refused with its error code, and a "
                  "message that starts with its path and gives the reason; the module "
                  "is closed again");
  assert_open_fails (path, broken->code, broken->reason);
  g_assert_false (module_is_loaded (path));
}

/* ---- valid plugins ------------------------------------------------------ */

static void
test_loader_open_good (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhPlugin) plugin = NULL;
  g_autofree char *path = test_plugin_path ("good");
  const AhPluginDesc *desc;

  g_test_summary ("The good plugin loads with every field of its descriptor intact");
  plugin = ah_plugin_open (path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (plugin);

  g_assert_cmpstr (ah_plugin_get_path (plugin), ==, path);
  desc = ah_plugin_get_desc (plugin);
  g_assert_cmphex (desc->abi_version, ==, AH_PLUGIN_ABI_VERSION);
  g_assert_cmpuint (desc->struct_size, ==, sizeof (AhPluginDesc));
  g_assert_cmpuint (plugin->plugin_struct_size, ==, sizeof (AhPluginDesc));
  g_assert_cmpstr (desc->name, ==, "good");
  g_assert_cmpstr (desc->version, ==, "1.2.3");
  g_assert_cmpstr (desc->description, ==, "Test plugin with every hook");
  g_assert_cmpuint (desc->state_size, ==, 2 * sizeof (guint64));
  g_assert_cmphex (desc->flags, ==, AH_PLUGIN_FLAG_STATE_LAYOUT_STABLE);
  g_assert_cmpuint (desc->state_format, ==, 1);
  g_assert_nonnull (desc->agent_init);
  g_assert_nonnull (desc->agent_finalize);
  g_assert_nonnull (desc->handle_batch);
  g_assert_nonnull (desc->state_snapshot);
  g_assert_nonnull (desc->state_restore);
}

static void
test_loader_open_old_struct (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhPlugin) plugin = NULL;
  g_autofree char *path = test_plugin_path ("old-struct");
  const AhPluginDesc *desc;

  g_test_summary ("A plugin built with an older, shorter descriptor loads; the fields "
                  "past its struct_size read as unset even though bytes follow it");
  plugin = ah_plugin_open (path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (plugin);

  desc = ah_plugin_get_desc (plugin);
  g_assert_cmpuint (plugin->plugin_struct_size, ==, G_STRUCT_OFFSET (AhPluginDesc, state_snapshot));
  g_assert_cmpuint (desc->struct_size, ==, G_STRUCT_OFFSET (AhPluginDesc, state_snapshot));
  g_assert_cmpstr (desc->name, ==, "old-struct");
  g_assert_cmpstr (desc->version, ==, "0.9.0");
  g_assert_nonnull (desc->handle_batch);
  g_assert_null (desc->state_snapshot);
  g_assert_null (desc->state_restore);
  for (guint i = 0; i < G_N_ELEMENTS (desc->reserved); i++)
    g_assert_null (desc->reserved[i]);
}

typedef struct {
  const char *file;
  const char *name;
} ValidPlugin;

static const ValidPlugin valid_plugins[] = {
  { "init-fails", "init-fails" },
  { "slow-init", "slow-init" },
  { "counter", "counter" },
  { "flaky", "flaky" },
  { "entry-provider", "entry_provider" },
  { "schema", "schema" },
};

static void
test_loader_open_valid (gconstpointer data)
{
  const ValidPlugin *valid = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(AhPlugin) plugin = NULL;
  g_autofree char *path = test_plugin_path (valid->file);

  g_test_summary ("The test plugins other areas run pass the loader's checks");
  plugin = ah_plugin_open (path, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (ah_plugin_get_desc (plugin)->name, ==, valid->name);
  g_assert_nonnull (ah_plugin_get_desc (plugin)->handle_batch);
}

static void
test_loader_open_twice (void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *path = test_plugin_path ("good");
  AhPlugin *first;
  AhPlugin *second;

  g_test_summary ("The same file opens twice; the module stays while any AhPlugin "
                  "holds it and is closed when the last reference goes");
  g_assert_false (module_is_loaded (path));

  first = ah_plugin_open (path, &error);
  g_assert_no_error (error);
  second = ah_plugin_open (path, &error);
  g_assert_no_error (error);
  g_assert_true (first != second);
  g_assert_true (module_is_loaded (path));

  ah_plugin_ref (second);
  ah_plugin_unref (first);
  ah_plugin_unref (second);
  /* Still one reference: the strings in the module must still be there. */
  g_assert_true (module_is_loaded (path));
  g_assert_cmpstr (ah_plugin_get_desc (second)->name, ==, "good");

  ah_plugin_unref (second);
  g_assert_false (module_is_loaded (path));
}

static void
test_loader_open_relative (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhPlugin) anchor = NULL;
  g_autoptr(AhPlugin) plugin = NULL;
  g_autofree char *good = test_plugin_path ("good");
  g_autofree char *dir = scratch_dir_new ();
  g_autofree char *contents = NULL;
  g_autofree char *copy = NULL;
  g_autofree char *saved_cwd = g_get_current_dir ();
  gsize size = 0;

  g_test_summary ("A path without '/' names a file of the current directory, never a "
                  "library searched for in LD_LIBRARY_PATH or the system directories");
  /* The copy's RUNPATH ($ORIGIN/...) does not reach libagenthost from the
   * scratch directory; the dynamic loader reuses the already loaded
   * library of the same soname that this reference keeps. */
  anchor = ah_plugin_open (good, &error);
  g_assert_no_error (error);
  g_file_get_contents (good, &contents, &size, &error);
  g_assert_no_error (error);
  copy = scratch_write (dir, "relative-good.so", contents, size);

  g_assert_cmpint (g_chdir (dir), ==, 0);
  plugin = ah_plugin_open ("relative-good.so", &error);
  g_assert_cmpint (g_chdir (saved_cwd), ==, 0);

  g_assert_no_error (error);
  g_assert_cmpstr (ah_plugin_get_path (plugin), ==, "relative-good.so");
  g_assert_cmpstr (ah_plugin_get_desc (plugin)->name, ==, "good");
  /* A distinct object, the copy, not the build tree's good.so again. */
  g_assert_true (ah_plugin_get_desc (plugin)->handle_batch
                 != ah_plugin_get_desc (anchor)->handle_batch);
  g_assert_true (module_is_loaded (copy));
}

/* ---- files that are not plugins ----------------------------------------- */

static void
test_loader_open_missing (void)
{
  g_autofree char *dir = scratch_dir_new ();
  g_autofree char *absent = g_build_filename (dir, "absent.so", NULL);
  g_autofree char *file = scratch_write (dir, "file", "x", 1);
  g_autofree char *under_file = g_build_filename (file, "x.so", NULL);

  g_test_summary ("A file that does not exist is NOT_FOUND, also below a non-directory");
  assert_open_fails (absent, AH_PLUGIN_ERROR_NOT_FOUND, "no such file");
  assert_open_fails (under_file, AH_PLUGIN_ERROR_NOT_FOUND, "no such file");
}

typedef struct {
  const char *name;
  gsize       size;      /* bytes to write; G_MAXSIZE: random garbage */
  const char *content;   /* NULL: the first @size bytes of good.so */
  const char *reason;
} NotElfFile;

static const NotElfFile not_elf_files[] = {
  { "garbage", G_MAXSIZE, NULL, "not an ELF file" },
  { "text", 23, "#!/bin/sh\necho hello\n\n\n", "not an ELF file" },
  { "empty", 0, "", "not an ELF file" },
  { "three-bytes", 3, "\177EL", "not an ELF file" },
  { "wrong-magic", 16, "\177ELG\002\001\001\0\0\0\0\0\0\0\0\0", "not an ELF file" },
  { "truncated-header", 40, NULL, "not an ELF file (truncated header)" },
};

/* Writes the file of @tc into @dir; returns its path. */
static char *
not_elf_file_write (const NotElfFile *tc, const char *dir)
{
  g_autofree char *file_name = g_strconcat (tc->name, ".so", NULL);
  g_autofree guint8 *bytes = NULL;
  gsize size = tc->size;

  if (tc->size == G_MAXSIZE)
    {
      size = 4096;
      bytes = g_malloc (size);
      for (gsize i = 0; i < size; i++)
        bytes[i] = (guint8) g_test_rand_int_range (0, 256);
      bytes[0] = 'G';   /* never the ELF magic, whatever the random bytes */
    }
  else if (tc->content == NULL)
    {
      g_autoptr(GError) error = NULL;
      g_autofree char *good = test_plugin_path ("good");
      gsize good_size = 0;

      g_file_get_contents (good, (char **) &bytes, &good_size, &error);
      g_assert_no_error (error);
      g_assert_cmpuint (good_size, >, size);
    }
  else
    {
      bytes = g_memdup2 (tc->content, size + 1);
    }

  return scratch_write (dir, file_name, bytes, size);
}

static void
test_loader_open_not_elf (gconstpointer data)
{
  const NotElfFile *tc = data;
  g_autofree char *dir = scratch_dir_new ();
  g_autofree char *path = NULL;

  g_test_summary ("Files that do not start with a whole ELF header are NOT_ELF, "
                  "refused before dlopen()");
  path = not_elf_file_write (tc, dir);
  assert_open_fails (path, AH_PLUGIN_ERROR_NOT_ELF, tc->reason);
}

static void
test_loader_open_not_regular (void)
{
  g_autofree char *dir = scratch_dir_new ();
  g_autofree char *subdir = g_build_filename (dir, "directory.so", NULL);
  g_autofree char *fifo = g_build_filename (dir, "fifo.so", NULL);

  g_test_summary ("A directory or a FIFO named *.so is NOT_ELF; the FIFO does not "
                  "block the loader");
  g_assert_cmpint (g_mkdir (subdir, 0700), ==, 0);
  g_assert_cmpint (mkfifo (fifo, 0600), ==, 0);
  assert_open_fails (subdir, AH_PLUGIN_ERROR_NOT_ELF, "not an ELF file (not a regular file)");
  assert_open_fails (fifo, AH_PLUGIN_ERROR_NOT_ELF, "not an ELF file (not a regular file)");
}

typedef enum {
  ELF_PATCH_TYPE,
  ELF_PATCH_CLASS,
  ELF_PATCH_BYTE_ORDER,
  ELF_PATCH_MACHINE,
} ElfPatch;

typedef struct {
  const char *name;
  ElfPatch    patch;
} ElfPatchCase;

static const ElfPatchCase elf_patch_cases[] = {
  { "executable", ELF_PATCH_TYPE },
  { "other-class", ELF_PATCH_CLASS },
  { "other-byte-order", ELF_PATCH_BYTE_ORDER },
  { "other-machine", ELF_PATCH_MACHINE },
};

static void
test_loader_open_foreign_elf (gconstpointer data)
{
  const ElfPatchCase *tc = data;
  g_autoptr(GError) error = NULL;
  g_autofree char *good = test_plugin_path ("good");
  g_autofree char *dir = scratch_dir_new ();
  g_autofree char *file_name = g_strconcat (tc->name, ".so", NULL);
  g_autofree char *contents = NULL;
  g_autofree char *path = NULL;
  g_autofree char *reason = NULL;
  const char *host_order = G_BYTE_ORDER == G_LITTLE_ENDIAN ? "little-endian" : "big-endian";
  const char *other_order = G_BYTE_ORDER == G_LITTLE_ENDIAN ? "big-endian" : "little-endian";
  const char *host_class = GLIB_SIZEOF_VOID_P == 8 ? "64-bit" : "32-bit";
  const char *other_class = GLIB_SIZEOF_VOID_P == 8 ? "32-bit" : "64-bit";
  ElfW(Ehdr) header;
  gsize size = 0;
  guint host_machine;

  g_test_summary ("An ELF file that is not a shared object of this machine's class, "
                  "byte order and architecture is refused with the reason");
  g_file_get_contents (good, &contents, &size, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (size, >=, sizeof header);
  memcpy (&header, contents, sizeof header);
  host_machine = header.e_machine;

  switch (tc->patch)
    {
    case ELF_PATCH_TYPE:
      header.e_type = ET_EXEC;
      reason = g_strdup_printf ("not a shared object: an executable (ELF type %u)", ET_EXEC);
      break;
    case ELF_PATCH_CLASS:
      header.e_ident[EI_CLASS] = GLIB_SIZEOF_VOID_P == 8 ? ELFCLASS32 : ELFCLASS64;
      reason = g_strdup_printf ("ELF object is %s, this host is %s", other_class, host_class);
      break;
    case ELF_PATCH_BYTE_ORDER:
      header.e_ident[EI_DATA] = G_BYTE_ORDER == G_LITTLE_ENDIAN ? ELFDATA2MSB : ELFDATA2LSB;
      reason = g_strdup_printf ("ELF object is %s, this host is %s", other_order, host_order);
      break;
    case ELF_PATCH_MACHINE:
      header.e_machine = (ElfW(Half)) (host_machine + 1);
      reason = g_strdup_printf ("ELF object is for machine %u, this host is machine %u",
                                host_machine + 1, host_machine);
      break;
    default:
      g_assert_not_reached ();
    }
  memcpy (contents, &header, sizeof header);

  path = scratch_write (dir, file_name, contents, size);
  assert_open_fails (path, AH_PLUGIN_ERROR_LOAD, reason);
}

/* ---- descriptor checks -------------------------------------------------- */

static gboolean
desc_test_handle_batch (AhContext *ctx, gpointer state,
                        const AhMessage * const *messages, guint n_messages,
                        GError **error)
{
  return TRUE;
}

static GBytes *
desc_test_state_snapshot (AhContext *ctx, gconstpointer state, GError **error)
{
  return g_bytes_new (NULL, 0);
}

static gboolean
desc_test_state_restore (AhContext *ctx, gpointer state, guint32 format,
                         GBytes *snapshot, GError **error)
{
  return TRUE;
}

static const AhPluginDesc valid_desc = {
  .abi_version = AH_PLUGIN_ABI_VERSION,
  .struct_size = sizeof (AhPluginDesc),
  .name = "valid",
  .version = "1.0",
  .handle_batch = desc_test_handle_batch,
  .state_snapshot = desc_test_state_snapshot,
  .state_restore = desc_test_state_restore,
};

/* A key of every type, a range, a default, a required key, a nested key. */
static const AhConfigKey desc_test_schema[] = {
  { .name = "subject", .type = AH_CONFIG_STRING, .default_value = "out",
    .description = "Where to publish" },
  { .name = "count", .type = AH_CONFIG_INT, .default_value = "3", .min = -5, .max = 10 },
  { .name = "ratio", .type = AH_CONFIG_DOUBLE, .min = 0, .max = 0.75 },
  { .name = "enabled", .type = AH_CONFIG_BOOL, .default_value = "TRUE" },
  { .name = "limits.max-size_2", .type = AH_CONFIG_INT, .flags = AH_CONFIG_FLAG_REQUIRED },
  AH_CONFIG_KEY_END
};

static const char name_65[] =
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
static const char name_64[] =
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

static void desc_abi_major_0 (AhPluginDesc *d) { d->abi_version = 0; }
static void desc_abi_major_2 (AhPluginDesc *d) { d->abi_version = 2u << 16 | 1u; }
static void desc_abi_minor_1 (AhPluginDesc *d) { d->abi_version = 1u << 16 | (AH_PLUGIN_ABI_MINOR + 1); }
static void desc_size_zero (AhPluginDesc *d) { d->struct_size = 0; }
static void desc_size_before_handler (AhPluginDesc *d) { d->struct_size = G_STRUCT_OFFSET (AhPluginDesc, handle_batch) + 4; }
static void desc_size_larger (AhPluginDesc *d) { d->struct_size = sizeof (AhPluginDesc) + sizeof (gpointer); }
static void desc_size_mid_field (AhPluginDesc *d) { d->struct_size = G_STRUCT_OFFSET (AhPluginDesc, state_snapshot) + 4; }
static void desc_name_null (AhPluginDesc *d) { d->name = NULL; }
static void desc_name_empty (AhPluginDesc *d) { d->name = ""; }
static void desc_name_long (AhPluginDesc *d) { d->name = name_65; }
static void desc_name_slash (AhPluginDesc *d) { d->name = "a/b"; }
static void desc_name_dot (AhPluginDesc *d) { d->name = "a.b"; }
static void desc_name_utf8 (AhPluginDesc *d) { d->name = "caf\xc3\xa9"; }
static void desc_version_null (AhPluginDesc *d) { d->version = NULL; }
static void desc_version_empty (AhPluginDesc *d) { d->version = ""; }
static void desc_version_long (AhPluginDesc *d) { d->version = name_65; }
static void desc_version_bad_utf8 (AhPluginDesc *d) { d->version = "1.\xff"; }
static void desc_description_bad_utf8 (AhPluginDesc *d) { d->description = "\xc3("; }
static void desc_handler_null (AhPluginDesc *d) { d->handle_batch = NULL; }
static void desc_state_huge (AhPluginDesc *d) { d->state_size = (gsize) 64 * 1024 * 1024 + 1; }
static void desc_flags_unknown (AhPluginDesc *d) { d->flags = AH_PLUGIN_FLAG_STATE_LAYOUT_STABLE | 0x40; }
static void desc_reserved_set (AhPluginDesc *d) { d->reserved[6] = (gpointer) desc_test_handle_batch; }

typedef struct {
  const char   *name;
  void        (*mutate) (AhPluginDesc *desc);
  AhPluginError code;
  const char   *message;   /* GLib glob */
} InvalidDesc;

static const InvalidDesc invalid_descs[] = {
  { "abi-major-0", desc_abi_major_0, AH_PLUGIN_ERROR_ABI, "test.so: ABI 0.0, host supports 1.3" },
  { "abi-major-2", desc_abi_major_2, AH_PLUGIN_ERROR_ABI, "test.so: ABI 2.1, host supports 1.3" },
  { "abi-minor-newer", desc_abi_minor_1, AH_PLUGIN_ERROR_ABI, "test.so: ABI 1.4, host supports 1.3" },
  { "struct-size-zero", desc_size_zero, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: struct_size 0 is smaller than the * bytes ABI 1.0 requires" },
  { "struct-size-before-handler", desc_size_before_handler, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: struct_size * is smaller than the * bytes ABI 1.0 requires" },
  { "struct-size-larger", desc_size_larger, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: struct_size * is larger than the * bytes of ABI 1.3" },
  { "struct-size-mid-field", desc_size_mid_field, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: struct_size * does not end on a field boundary" },
  { "name-null", desc_name_null, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: name is NULL" },
  { "name-empty", desc_name_empty, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: name is empty" },
  { "name-long", desc_name_long, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: name is longer than 64 bytes" },
  { "name-slash", desc_name_slash, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: name \"a/b\" has characters outside [A-Za-z0-9_-]" },
  { "name-dot", desc_name_dot, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: name \"a.b\" has characters outside [A-Za-z0-9_-]" },
  { "name-utf8", desc_name_utf8, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: name \"caf\\303\\251\" has characters outside [A-Za-z0-9_-]" },
  { "version-null", desc_version_null, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: version is NULL" },
  { "version-empty", desc_version_empty, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: version is empty" },
  { "version-long", desc_version_long, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: version is longer than 64 bytes" },
  { "version-bad-utf8", desc_version_bad_utf8, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: version is not valid UTF-8" },
  { "description-bad-utf8", desc_description_bad_utf8, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: description is not valid UTF-8" },
  { "handle-batch-null", desc_handler_null, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: handle_batch is NULL" },
  { "state-size-huge", desc_state_huge, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: state_size 67108865 exceeds the limit of 64 MiB" },
  { "flags-unknown", desc_flags_unknown, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: flags 0x41 has unknown bits 0x40" },
  { "reserved-set", desc_reserved_set, AH_PLUGIN_ERROR_INVALID_DESC,
    "test.so: invalid descriptor: reserved[6] is not zero" },
};

static void
test_loader_desc_invalid (gconstpointer data)
{
  const InvalidDesc *tc = data;
  g_autoptr(GError) error = NULL;
  AhPluginDesc desc = valid_desc;
  AhPluginDesc copy;
  guint32 copy_size = 0;

  g_test_summary ("Each malformed descriptor field is refused with a message naming it");
  /* The unchanged descriptor passes: the mutation is the only defect. */
  g_assert_true (ah__plugin_desc_check (&desc, "test.so", &copy, &copy_size, &error));
  g_assert_no_error (error);

  tc->mutate (&desc);
  g_assert_false (ah__plugin_desc_check (&desc, "test.so", &copy, &copy_size, &error));
  g_assert_error (error, AH_PLUGIN_ERROR, (gint) tc->code);
  if (!g_pattern_match_simple (tc->message, error->message))
    g_error ("message \"%s\" does not match \"%s\"", error->message, tc->message);
}

static void
test_loader_desc_abi_first (void)
{
  g_autoptr(GError) error = NULL;
  g_autofree guint32 *tiny = g_new0 (guint32, 1);
  AhPluginDesc copy;

  g_test_summary ("A descriptor of another ABI is judged on abi_version alone: not a "
                  "byte past it is read (AddressSanitizer watches the 4-byte block)");
  *tiny = 2u << 16;
  g_assert_false (ah__plugin_desc_check ((const AhPluginDesc *) tiny, "tiny.so", &copy, NULL, &error));
  g_assert_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_ABI);
  g_assert_cmpstr (error->message, ==, "tiny.so: ABI 2.0, host supports 1.3");
  g_clear_error (&error);

  *tiny = 1u << 16 | 7u;
  g_assert_false (ah__plugin_desc_check ((const AhPluginDesc *) tiny, "tiny.so", &copy, NULL, &error));
  g_assert_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_ABI);
  g_assert_cmpstr (error->message, ==, "tiny.so: ABI 1.7, host supports 1.3");
}

static void
test_loader_desc_shorter (void)
{
  const guint32 sizes[] = {
    G_STRUCT_OFFSET (AhPluginDesc, state_snapshot),
    G_STRUCT_OFFSET (AhPluginDesc, state_restore),
    G_STRUCT_OFFSET (AhPluginDesc, config_schema),
    G_STRUCT_OFFSET (AhPluginDesc, reserved),
    sizeof (AhPluginDesc),
  };

  g_test_summary ("Shorter descriptors are read only up to their struct_size, and the "
                  "copy reads as zero past it");
  for (gsize i = 0; i < G_N_ELEMENTS (sizes); i++)
    {
      g_autoptr(GError) error = NULL;
      AhPluginDesc full = valid_desc;
      /* Exactly struct_size bytes: a read past them is an ASan error. */
      g_autofree AhPluginDesc *raw = g_malloc (sizes[i]);
      AhPluginDesc copy;
      guint32 copy_size = 0;

      full.struct_size = sizes[i];
      full.config_schema = desc_test_schema;
      memcpy (raw, &full, sizes[i]);
      g_assert_true (ah__plugin_desc_check (raw, "short.so", &copy, &copy_size, &error));
      g_assert_no_error (error);
      g_assert_cmpuint (copy_size, ==, sizes[i]);
      g_assert_cmpstr (copy.name, ==, "valid");
      g_assert_true (copy.handle_batch == desc_test_handle_batch);
      g_assert_true (copy.state_snapshot == (sizes[i] > G_STRUCT_OFFSET (AhPluginDesc, state_snapshot)
                                             ? desc_test_state_snapshot : NULL));
      g_assert_true (copy.state_restore == (sizes[i] > G_STRUCT_OFFSET (AhPluginDesc, state_restore)
                                            ? desc_test_state_restore : NULL));
      g_assert_true (copy.config_schema == (sizes[i] > G_STRUCT_OFFSET (AhPluginDesc, config_schema)
                                            ? desc_test_schema : NULL));
    }
}

static void
test_loader_desc_limits (void)
{
  g_autoptr(GError) error = NULL;
  AhPluginDesc desc = valid_desc;
  AhPluginDesc copy;

  g_test_summary ("Values at the limits are accepted: 64-byte name and version, "
                  "64 MiB of state, every character class of a name, no description");
  desc.name = name_64;
  desc.version = name_64;
  desc.description = NULL;
  desc.state_size = (gsize) 64 * 1024 * 1024;
  g_assert_true (ah__plugin_desc_check (&desc, "limits.so", &copy, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (copy.state_size, ==, (gsize) 64 * 1024 * 1024);

  desc.name = "Az09_-";
  g_assert_true (ah__plugin_desc_check (&desc, "limits.so", &copy, NULL, &error));
  g_assert_no_error (error);
  g_assert_cmpstr (copy.name, ==, "Az09_-");
}

/* ---- config schemas (ABI 1.1) ------------------------------------------ */

static void
test_loader_desc_schema_good (void)
{
  static const AhConfigKey empty_schema[] = { AH_CONFIG_KEY_END };
  g_autoptr(GError) error = NULL;
  AhPluginDesc desc = valid_desc;
  AhPluginDesc copy;

  g_test_summary ("A well-formed schema passes and reaches the copy as the plugin's own "
                  "table; so does an empty one, which accepts no keys");
  desc.config_schema = desc_test_schema;
  g_assert_true (ah__plugin_desc_check (&desc, "schema.so", &copy, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (copy.config_schema == desc_test_schema);

  desc.config_schema = empty_schema;
  g_assert_true (ah__plugin_desc_check (&desc, "schema.so", &copy, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (copy.config_schema == empty_schema);
}

static void
test_loader_desc_schema_abi_1_0 (void)
{
  g_autoptr(GError) error = NULL;
  AhPluginDesc desc = valid_desc;
  AhPluginDesc copy;

  g_test_summary ("A 1.0 plugin loads without a schema; one that sets the slot that was "
                  "its reserved[0] is refused, as a 1.0 host refused it");
  desc.abi_version = 1u << 16;
  g_assert_true (ah__plugin_desc_check (&desc, "old.so", &copy, NULL, &error));
  g_assert_no_error (error);
  g_assert_null (copy.config_schema);

  desc.config_schema = desc_test_schema;
  g_assert_false (ah__plugin_desc_check (&desc, "old.so", &copy, NULL, &error));
  g_assert_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC);
  g_assert_cmpstr (error->message, ==, "old.so: invalid descriptor: config_schema is set, but "
                                       "ABI 1.0 has no such field (its reserved[0] must be zero)");
}

static const char key_name_129[] =
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
  "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

#define SCHEMA_ONE(...) { { __VA_ARGS__ }, AH_CONFIG_KEY_END }

static const AhConfigKey schema_name_empty[] = SCHEMA_ONE (.name = "", .type = AH_CONFIG_STRING);
static const AhConfigKey schema_name_dot_first[] = SCHEMA_ONE (.name = ".a", .type = AH_CONFIG_STRING);
static const AhConfigKey schema_name_dot_last[] = SCHEMA_ONE (.name = "a.", .type = AH_CONFIG_STRING);
static const AhConfigKey schema_name_dots[] = SCHEMA_ONE (.name = "a..b", .type = AH_CONFIG_STRING);
static const AhConfigKey schema_name_space[] = SCHEMA_ONE (.name = "a b", .type = AH_CONFIG_STRING);
static const AhConfigKey schema_name_newline[] = SCHEMA_ONE (.name = "a\nb", .type = AH_CONFIG_STRING);
static const AhConfigKey schema_name_long[] = SCHEMA_ONE (.name = key_name_129, .type = AH_CONFIG_STRING);
static const AhConfigKey schema_duplicate[] = {
  { .name = "a", .type = AH_CONFIG_STRING },
  { .name = "b", .type = AH_CONFIG_INT },
  { .name = "a", .type = AH_CONFIG_BOOL },
  AH_CONFIG_KEY_END
};
static const AhConfigKey schema_type_zero[] = SCHEMA_ONE (.name = "a");
static const AhConfigKey schema_type_five[] = SCHEMA_ONE (.name = "a", .type = 5);
static const AhConfigKey schema_flags[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_INT, .flags = 0x6);
static const AhConfigKey schema_min_nan[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_DOUBLE, .min = NAN, .max = 1);
static const AhConfigKey schema_max_inf[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_DOUBLE, .max = INFINITY);
static const AhConfigKey schema_min_above_max[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_INT, .min = 5, .max = 1);
static const AhConfigKey schema_string_range[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_STRING, .max = 10);
static const AhConfigKey schema_bool_range[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_BOOL, .min = -1);
static const AhConfigKey schema_int_fraction[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_INT, .min = 0.5, .max = 2);
static const AhConfigKey schema_default_int[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_INT, .default_value = "ten");
static const AhConfigKey schema_default_int_plus[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_INT, .default_value = "+1");
static const AhConfigKey schema_default_int_range[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_INT, .default_value = "11", .min = 1, .max = 10);
static const AhConfigKey schema_default_double[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_DOUBLE, .default_value = "inf");
static const AhConfigKey schema_default_double_range[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_DOUBLE, .default_value = "2.5", .max = 1);
static const AhConfigKey schema_default_bool[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_BOOL, .default_value = "yes");
static const AhConfigKey schema_default_required[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_STRING, .flags = AH_CONFIG_FLAG_REQUIRED, .default_value = "x");
static const AhConfigKey schema_default_utf8[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_STRING, .default_value = "caf\xc3");
static const AhConfigKey schema_description_utf8[] = SCHEMA_ONE (.name = "a", .type = AH_CONFIG_STRING, .description = "\xff");

typedef struct {
  const char        *name;
  const AhConfigKey *schema;
  const char        *reason;   /* after "test.so: invalid config schema: " */
} InvalidSchema;

static const InvalidSchema invalid_schemas[] = {
  { "name-empty", schema_name_empty,
    "key 0: '' is not a key name (at most 128 bytes of dot-separated tokens of letters, "
    "digits, '_' and '-')" },
  { "name-dot-first", schema_name_dot_first,
    "key 0: '.a' is not a key name (at most 128 bytes of dot-separated tokens of letters, "
    "digits, '_' and '-')" },
  { "name-dot-last", schema_name_dot_last,
    "key 0: 'a.' is not a key name (at most 128 bytes of dot-separated tokens of letters, "
    "digits, '_' and '-')" },
  { "name-dots", schema_name_dots,
    "key 0: 'a..b' is not a key name (at most 128 bytes of dot-separated tokens of letters, "
    "digits, '_' and '-')" },
  { "name-space", schema_name_space,
    "key 0: 'a b' is not a key name (at most 128 bytes of dot-separated tokens of letters, "
    "digits, '_' and '-')" },
  { "name-newline", schema_name_newline,
    "key 0: 'a\\nb' is not a key name (at most 128 bytes of dot-separated tokens of letters, "
    "digits, '_' and '-')" },
  { "name-long", schema_name_long,
    "key 0: 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...' "
    "is not a key name (at most 128 bytes of dot-separated tokens of letters, digits, '_' "
    "and '-')" },
  { "duplicate", schema_duplicate, "key 'a' declared twice" },
  { "type-zero", schema_type_zero, "key 'a' has unknown type 0" },
  { "type-five", schema_type_five, "key 'a' has unknown type 5" },
  { "flags-unknown", schema_flags, "key 'a' has unknown flags 0x6" },
  { "min-nan", schema_min_nan, "key 'a' has a range bound that is not a finite number" },
  { "max-inf", schema_max_inf, "key 'a' has a range bound that is not a finite number" },
  { "min-above-max", schema_min_above_max, "key 'a' has min 5 above max 1" },
  { "string-range", schema_string_range, "key 'a' is a string and cannot have a range" },
  { "bool-range", schema_bool_range, "key 'a' is a boolean and cannot have a range" },
  { "int-fraction", schema_int_fraction, "key 'a' is an integer but its range 0.5..2 is not" },
  { "default-int", schema_default_int, "the default of key 'a' must be an integer, got 'ten'" },
  { "default-int-plus", schema_default_int_plus,
    "the default of key 'a' must be an integer, got '+1'" },
  { "default-int-range", schema_default_int_range,
    "the default of key 'a' must be an integer between 1 and 10, got '11'" },
  { "default-double", schema_default_double,
    "the default of key 'a' must be a number, got 'inf'" },
  { "default-double-range", schema_default_double_range,
    "the default of key 'a' must be a number between 0 and 1, got '2.5'" },
  { "default-bool", schema_default_bool, "the default of key 'a' must be true or false, got 'yes'" },
  { "default-required", schema_default_required, "key 'a' is required and has a default" },
  { "default-utf8", schema_default_utf8, "the default of key 'a' is not valid UTF-8" },
  { "description-utf8", schema_description_utf8, "the description of key 'a' is not valid UTF-8" },
};

static void
test_loader_desc_schema_invalid (gconstpointer data)
{
  const InvalidSchema *tc = data;
  g_autoptr(GError) error = NULL;
  g_autofree char *expected = g_strconcat ("test.so: invalid config schema: ", tc->reason, NULL);
  AhPluginDesc desc = valid_desc;
  AhPluginDesc copy;

  g_test_summary ("Each malformed schema is refused when the plugin loads, with a message "
                  "naming the key and what is wrong with it");
  desc.config_schema = tc->schema;
  g_assert_false (ah__plugin_desc_check (&desc, "test.so", &copy, NULL, &error));
  g_assert_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC);
  g_assert_cmpstr (error->message, ==, expected);
}

/* @n_keys keys "k0", "k1"... then the end marker. */
static AhConfigKey *
schema_new_with_keys (guint n_keys, GPtrArray *names)
{
  AhConfigKey *schema = g_new0 (AhConfigKey, n_keys + 1);

  for (guint i = 0; i < n_keys; i++)
    {
      char *name = g_strdup_printf ("k%u", i);

      g_ptr_array_add (names, name);
      schema[i].name = name;
      schema[i].type = AH_CONFIG_INT;
    }
  return schema;
}

static void
test_loader_desc_schema_size (void)
{
  g_autoptr(GPtrArray) names = g_ptr_array_new_with_free_func (g_free);
  g_autofree AhConfigKey *full = schema_new_with_keys (256, names);
  g_autofree AhConfigKey *over = schema_new_with_keys (257, names);
  g_autoptr(GError) error = NULL;
  AhPluginDesc desc = valid_desc;
  AhPluginDesc copy;

  g_test_summary ("A schema of 256 keys passes; one more is refused, and so is a table "
                  "whose end marker is missing (the walk stops there)");
  desc.config_schema = full;
  g_assert_true (ah__plugin_desc_check (&desc, "test.so", &copy, NULL, &error));
  g_assert_no_error (error);

  desc.config_schema = over;
  g_assert_false (ah__plugin_desc_check (&desc, "test.so", &copy, NULL, &error));
  g_assert_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC);
  g_assert_cmpstr (error->message, ==, "test.so: invalid config schema: more than 256 keys, "
                                       "or no AH_CONFIG_KEY_END");
}

/* ---- describe ----------------------------------------------------------- */

static void
test_loader_describe_good (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhPlugin) plugin = NULL;
  g_autofree char *path = test_plugin_path ("good");
  g_autofree char *text = NULL;
  g_autofree char *expected = NULL;

  g_test_summary ("describe() of the good plugin lists every field and every hook as present");
  plugin = ah_plugin_open (path, &error);
  g_assert_no_error (error);

  text = ah_plugin_describe (plugin);
  expected = g_strdup_printf (
      "name:            good\n"
      "version:         1.2.3\n"
      "description:     Test plugin with every hook\n"
      "file:            %s\n"
      "abi:             1.3 (host 1.3)\n"
      "descriptor size: %u bytes (host %u)\n"
      "state size:      %u bytes\n"
      "flags:           state-layout-stable\n"
      "snapshot format: 1\n"
      "hooks present:   agent_init, agent_finalize, handle_batch, state_snapshot, state_restore\n"
      "hooks absent:    (none)\n"
      "config:\n"
      "  (no schema: any key is accepted)\n",
      path, (guint) sizeof (AhPluginDesc), (guint) sizeof (AhPluginDesc),
      (guint) (2 * sizeof (guint64)));
  g_assert_cmpstr (text, ==, expected);
}

static void
test_loader_describe_old_struct (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhPlugin) plugin = NULL;
  g_autofree char *path = test_plugin_path ("old-struct");
  g_autofree char *text = NULL;
  g_autofree char *expected = NULL;

  g_test_summary ("describe() of an older plugin reports its own descriptor size and "
                  "the hooks past it as absent");
  plugin = ah_plugin_open (path, &error);
  g_assert_no_error (error);

  text = ah_plugin_describe (plugin);
  expected = g_strdup_printf (
      "name:            old-struct\n"
      "version:         0.9.0\n"
      "description:     (none)\n"
      "file:            %s\n"
      "abi:             1.3 (host 1.3)\n"
      "descriptor size: %u bytes (host %u)\n"
      "state size:      0 bytes\n"
      "flags:           none\n"
      "snapshot format: 0\n"
      "hooks present:   handle_batch\n"
      "hooks absent:    agent_init, agent_finalize, state_snapshot, state_restore\n"
      "config:\n"
      "  (no schema: any key is accepted)\n",
      path, (guint) G_STRUCT_OFFSET (AhPluginDesc, state_snapshot),
      (guint) sizeof (AhPluginDesc));
  g_assert_cmpstr (text, ==, expected);
}

static void
test_loader_describe_schema (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhPlugin) plugin = NULL;
  g_autofree char *path = test_plugin_path ("schema");
  g_autofree char *text = NULL;
  g_autofree char *expected = NULL;

  g_test_summary ("describe() ends with the config schema: one aligned line per key "
                  "with its type, requirement, default, range and description");
  plugin = ah_plugin_open (path, &error);
  g_assert_no_error (error);

  text = ah_plugin_describe (plugin);
  expected = g_strdup_printf (
      "name:            schema\n"
      "version:         1.0.0\n"
      "description:     Test plugin declaring a config schema of every type\n"
      "file:            %s\n"
      "abi:             1.3 (host 1.3)\n"
      "descriptor size: %u bytes (host %u)\n"
      "state size:      0 bytes\n"
      "flags:           none\n"
      "snapshot format: 0\n"
      "hooks present:   handle_batch\n"
      "hooks absent:    agent_init, agent_finalize, state_snapshot, state_restore\n"
      "config:\n"
      "  greeting    string   default \"hello\"             What the agent says\n"
      "  count       integer  default 3, range 1..10      How many times\n"
      "  offset      integer  default -7                  Any integer\n"
      "  ratio       number   default 0.5, range 0..1     A fraction\n"
      "  verbose     boolean  default false               Say more\n"
      "  limits.max  integer  default 100, range 0..1000  A nested key\n"
      "  words       string                               A sequence of words\n"
      "  tags        string   default \"none\"              A sequence with a default\n"
      "  name        string   required                    Who the agent is\n",
      path, (guint) sizeof (AhPluginDesc), (guint) sizeof (AhPluginDesc));
  g_assert_cmpstr (text, ==, expected);
}

/* ---- private copies and checksums --------------------------------------- */

static guint
count_open_fds (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GDir) dir = g_dir_open ("/proc/self/fd", 0, &error);
  guint n = 0;

  g_assert_no_error (error);
  while (g_dir_read_name (dir) != NULL)
    n++;
  return n;
}

/* The build tree's plugins find libagenthost through RUNPATH $ORIGIN/..,
 * which means nothing for a copy loaded from /proc/self/fd (this test
 * program links the library statically). As in a host, where the library
 * is loaded before any plugin, the loader then reuses the copy of that
 * soname this reference keeps loaded. */
static AhPlugin *
library_anchor_new (void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *good = test_plugin_path ("good");
  AhPlugin *anchor = ah_plugin_open (good, &error);

  g_assert_no_error (error);
  return anchor;
}

/* The descriptor as the module itself holds it: a static of the module,
 * at an address of its own in each loaded copy. */
static gconstpointer
module_desc (AhPlugin *plugin)
{
  AhPluginGetDescFunc entry = (AhPluginGetDescFunc) dlsym (plugin->handle, AH_PLUGIN_ENTRY_SYMBOL);

  g_assert_nonnull (entry);
  return entry ();
}

static char *
file_sha256 (const char *path)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *contents = NULL;
  gsize size = 0;

  g_file_get_contents (path, &contents, &size, &error);
  g_assert_no_error (error);
  return g_compute_checksum_for_data (G_CHECKSUM_SHA256, (const guchar *) contents, size);
}

static void
assert_copy_fails (const char *path, AhPluginError code, const char *reason_pattern)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhPlugin) plugin = NULL;
  g_autofree char *pattern = g_strdup_printf ("%s: %s", path, reason_pattern);
  guint n_fds = count_open_fds ();

  plugin = ah_plugin_open_copy (path, &error);
  g_assert_null (plugin);
  g_assert_error (error, AH_PLUGIN_ERROR, (gint) code);
  if (!g_pattern_match_simple (pattern, error->message))
    g_error ("message \"%s\" does not match \"%s\"", error->message, pattern);
  g_assert_null (strstr (error->message, "/proc/self/fd"));
  /* The memfd of a refused copy is closed again. */
  g_assert_cmpuint (count_open_fds (), ==, n_fds);
}

static void
test_loader_copy_distinct (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhPlugin) anchor = library_anchor_new ();
  g_autoptr(AhPlugin) second = NULL;
  g_autofree char *path = test_plugin_path ("good");
  g_autofree char *sha256 = file_sha256 (path);
  g_autofree char *first_fd_name = NULL;
  g_autofree char *first_target = NULL;
  AhPlugin *first;
  gconstpointer first_desc;
  guint64 state[2] = { 0, 0 };

  g_test_summary ("Two private copies of one file are two modules with statics of "
                  "their own, beside the file opened in place; each keeps the original "
                  "path, a memfd named after the file, and the file's checksum");
  first = ah_plugin_open_copy (path, &error);
  g_assert_no_error (error);
  second = ah_plugin_open_copy (path, &error);
  g_assert_no_error (error);

  g_assert_true (first->handle != second->handle);
  g_assert_true (first->handle != anchor->handle);
  first_desc = module_desc (first);
  g_assert_true (first_desc != module_desc (second));
  g_assert_true (first_desc != module_desc (anchor));
  g_assert_true (ah_plugin_get_desc (first)->handle_batch
                 != ah_plugin_get_desc (second)->handle_batch);
  g_assert_cmpstr (ah_plugin_get_desc (first)->name, ==, "good");
  g_assert_cmpstr (ah_plugin_get_desc (second)->version, ==, "1.2.3");
  g_assert_cmpstr (ah_plugin_get_path (first), ==, path);

  first_fd_name = g_strdup_printf ("/proc/self/fd/%d", first->copy_fd);
  first_target = g_file_read_link (first_fd_name, &error);
  g_assert_no_error (error);
  g_assert_true (g_str_has_prefix (first_target, "/memfd:good.so"));
  g_assert_cmpint (anchor->copy_fd, ==, -1);

  g_assert_cmpstr (ah_plugin_get_checksum (first), ==, sha256);
  g_assert_cmpstr (ah_plugin_get_checksum (second), ==, sha256);
  g_assert_cmpstr (ah_plugin_get_checksum (anchor), ==, sha256);

  /* The first copy goes, module and memfd; the second one still runs. */
  ah_plugin_unref (first);
  g_assert_cmpint (fcntl (second->copy_fd, F_GETFD), >=, 0);
  g_assert_true (ah_plugin_get_desc (second)->handle_batch (NULL, state, NULL, 3, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (state[0], ==, 3);
  g_assert_cmpuint (state[1], ==, 1);
}

/* Rewrites @path in place, the same inode, as a linker writing its output
 * does: a module mapped from that file would see its code change. */
static void
overwrite_in_place (const char *path, const char *contents, gsize size)
{
  int fd = g_open (path, O_WRONLY | O_TRUNC | O_CLOEXEC, 0);
  gsize n_written = 0;

  g_assert_cmpint (fd, >=, 0);
  while (n_written < size)
    {
      gssize n = write (fd, contents + n_written, size - n_written);

      g_assert_cmpint (n, >, 0);
      n_written += (gsize) n;
    }
  g_assert_true (g_close (fd, NULL));
}

static void
test_loader_copy_overwrite (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhPlugin) anchor = library_anchor_new ();
  g_autoptr(AhPlugin) plugin = NULL;
  g_autoptr(AhPlugin) rebuilt = NULL;
  g_autoptr(GBytes) snapshot = NULL;
  g_autofree char *good = test_plugin_path ("good");
  g_autofree char *counter = test_plugin_path ("counter");
  g_autofree char *good_sha256 = file_sha256 (good);
  g_autofree char *counter_sha256 = file_sha256 (counter);
  g_autofree char *good_bytes = NULL;
  g_autofree char *counter_bytes = NULL;
  g_autofree char *dir = scratch_dir_new ();
  g_autofree char *path = NULL;
  g_autofree char *now_sha256 = NULL;
  gsize good_size = 0;
  gsize counter_size = 0;
  guint64 state[2] = { 0, 0 };
  const AhPluginDesc *desc;

  g_test_summary ("Overwriting the file after open_copy leaves the loaded copy as it "
                  "was: same descriptor, its code still runs; its checksum stays the "
                  "old bytes' while the file's is the new ones'; a new copy is the new "
                  "plugin");
  g_file_get_contents (good, &good_bytes, &good_size, &error);
  g_assert_no_error (error);
  g_file_get_contents (counter, &counter_bytes, &counter_size, &error);
  g_assert_no_error (error);
  path = scratch_write (dir, "plugin.so", good_bytes, good_size);

  plugin = ah_plugin_open_copy (path, &error);
  g_assert_no_error (error);
  overwrite_in_place (path, counter_bytes, counter_size);

  desc = ah_plugin_get_desc (plugin);
  g_assert_cmpstr (desc->name, ==, "good");
  g_assert_cmpstr (desc->version, ==, "1.2.3");
  g_assert_true (desc->handle_batch (NULL, state, NULL, 5, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (state[0], ==, 5);
  snapshot = desc->state_snapshot (NULL, state, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (g_bytes_get_data (snapshot, NULL), g_bytes_get_size (snapshot),
                   state, sizeof state);

  g_assert_cmpstr (ah_plugin_get_checksum (plugin), ==, good_sha256);
  now_sha256 = ah_plugin_file_checksum (path, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (now_sha256, ==, counter_sha256);
  g_assert_cmpstr (now_sha256, !=, good_sha256);

  rebuilt = ah_plugin_open_copy (path, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (ah_plugin_get_desc (rebuilt)->name, ==, "counter");
  g_assert_cmpstr (ah_plugin_get_checksum (rebuilt), ==, counter_sha256);
  g_assert_cmpstr (ah_plugin_get_desc (plugin)->name, ==, "good");
}

static void
test_loader_copy_broken (gconstpointer data)
{
  const BrokenPlugin *broken = data;
  g_autoptr(AhPlugin) anchor = library_anchor_new ();
  g_autofree char *path = test_plugin_path (broken->name);

  g_test_summary ("A private copy of a plugin broken in one way is refused with the "
                  "error ah_plugin_open() gives, naming the original path and never "
                  "/proc/self/fd; its memfd is closed");
  assert_copy_fails (path, broken->code, broken->reason);
}

static void
test_loader_copy_not_elf (void)
{
  g_autofree char *dir = scratch_dir_new ();
  g_autofree char *subdir = g_build_filename (dir, "directory.so", NULL);
  g_autofree char *fifo = g_build_filename (dir, "fifo.so", NULL);
  g_autofree char *absent = g_build_filename (dir, "absent.so", NULL);

  g_test_summary ("Garbage, text, an empty file, a cut header, a directory, a FIFO "
                  "and a missing file give the errors ah_plugin_open() gives");
  for (gsize i = 0; i < G_N_ELEMENTS (not_elf_files); i++)
    {
      g_autofree char *path = not_elf_file_write (&not_elf_files[i], dir);

      assert_copy_fails (path, AH_PLUGIN_ERROR_NOT_ELF, not_elf_files[i].reason);
    }
  g_assert_cmpint (g_mkdir (subdir, 0700), ==, 0);
  g_assert_cmpint (mkfifo (fifo, 0600), ==, 0);
  assert_copy_fails (subdir, AH_PLUGIN_ERROR_NOT_ELF, "not an ELF file (not a regular file)");
  assert_copy_fails (fifo, AH_PLUGIN_ERROR_NOT_ELF, "not an ELF file (not a regular file)");
  assert_copy_fails (absent, AH_PLUGIN_ERROR_NOT_FOUND, "no such file");
}

static void
test_loader_copy_truncated (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhPlugin) anchor = library_anchor_new ();
  g_autofree char *good = test_plugin_path ("good");
  g_autofree char *dir = scratch_dir_new ();
  g_autofree char *contents = NULL;
  ElfW(Ehdr) header;
  gsize size = 0;
  gsize loaded_end = 0;
  gsize cuts[4];

  g_test_summary ("A plugin cut short anywhere before the end of what the dynamic loader "
                  "maps - a build still writing it - is refused as not a valid ELF file, "
                  "copied or in place, instead of being mapped past its end (SIGBUS)");
  g_file_get_contents (good, &contents, &size, &error);
  g_assert_no_error (error);
  memcpy (&header, contents, sizeof header);
  /* Debug sections follow the loaded ones: cutting half the file may
   * leave every segment whole. */
  for (guint i = 0; i < header.e_phnum; i++)
    {
      ElfW(Phdr) segment;

      memcpy (&segment, contents + header.e_phoff + i * sizeof segment, sizeof segment);
      if (segment.p_type == PT_LOAD)
        loaded_end = MAX (loaded_end, (gsize) (segment.p_offset + segment.p_filesz));
    }

  cuts[0] = sizeof header;                                          /* no program headers */
  cuts[1] = header.e_phoff + sizeof (ElfW(Phdr));                   /* some of them */
  cuts[2] = header.e_phoff + header.e_phnum * sizeof (ElfW(Phdr));  /* no segment data */
  cuts[3] = loaded_end - 1;                                         /* one byte short */
  for (gsize i = 0; i < G_N_ELEMENTS (cuts); i++)
    {
      g_autofree char *name = g_strdup_printf ("cut-%" G_GSIZE_FORMAT ".so", cuts[i]);
      g_autofree char *path = NULL;
      const char *reason = cuts[i] < header.e_phoff + header.e_phnum * sizeof (ElfW(Phdr))
                           ? "not a valid ELF file: program headers (* entries at offset 0x*) "
                             "extend past the end of the file (* bytes)"
                           : "not a valid ELF file: PT_* segment * (offset 0x*, * bytes) "
                             "extends past the end of the file (* bytes)";

      g_assert_cmpuint (cuts[i], <, size);
      path = scratch_write (dir, name, contents, cuts[i]);
      assert_copy_fails (path, AH_PLUGIN_ERROR_NOT_ELF, reason);
      assert_open_fails (path, AH_PLUGIN_ERROR_NOT_ELF, reason);
    }
}

static void
test_loader_copy_too_large (void)
{
  g_autofree char *dir = scratch_dir_new ();
  g_autofree char *path = scratch_write (dir, "huge.so", "\177ELF", 4);

  g_test_summary ("A file over 256 MiB is refused before it is read");
  /* Sparse: no disk or memory is used for it. */
  g_assert_cmpint (truncate (path, (off_t) 256 * 1024 * 1024 + 1), ==, 0);
  assert_copy_fails (path, AH_PLUGIN_ERROR_LOAD, "too large to load (more than 256 MiB)");
}

static void
test_loader_copy_stale_name (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhPlugin) anchor = library_anchor_new ();
  g_autoptr(AhPlugin) plugin = NULL;
  g_autofree char *nodelete = g_test_build_filename (G_TEST_BUILT, "plugins-elf",
                                                     "elf-nodelete.so", NULL);
  g_autofree char *good = test_plugin_path ("good");
  g_autofree char *stale_name = NULL;
  g_autofree char *probe_name = NULL;
  AhPlugin *pinned;
  void *stale;
  int probe;

  g_test_summary ("A copy that could not be unloaded keeps its /proc/self/fd/N name in "
                  "the dynamic loader; a later copy given the same descriptor number is "
                  "still a module of its own, not the old one");
  pinned = ah_plugin_open_copy (nodelete, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (ah_plugin_get_desc (pinned)->name, ==, "elf_clean");
  stale_name = g_strdup_printf ("/proc/self/fd/%d", pinned->copy_fd);
  ah_plugin_unref (pinned);

  /* The hazard is there: the number is free, the lowest one, and the
   * dynamic loader still answers to its name. */
  probe = memfd_create ("probe", MFD_CLOEXEC);
  g_assert_cmpint (probe, >=, 0);
  probe_name = g_strdup_printf ("/proc/self/fd/%d", probe);
  g_assert_cmpstr (probe_name, ==, stale_name);
  g_assert_true (g_close (probe, NULL));
  stale = dlopen (stale_name, RTLD_LAZY | RTLD_LOCAL | RTLD_NOLOAD);
  g_assert_nonnull (stale);
  dlclose (stale);

  plugin = ah_plugin_open_copy (good, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (ah_plugin_get_desc (plugin)->name, ==, "good");
}

static void
test_loader_checksum (void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *good = test_plugin_path ("good");
  g_autofree char *counter = test_plugin_path ("counter");
  g_autofree char *dir = scratch_dir_new ();
  g_autofree char *good_copy = NULL;
  g_autofree char *good_edited = NULL;
  g_autofree char *contents = NULL;
  g_autofree char *sum_good = NULL;
  g_autofree char *sum_copy = NULL;
  g_autofree char *sum_edited = NULL;
  g_autofree char *sum_counter = NULL;
  g_autofree char *sum_empty = NULL;
  g_autofree char *empty = NULL;
  g_autofree char *absent = g_build_filename (dir, "absent.so", NULL);
  g_autofree char *absent_message = g_strconcat (absent, ": no such file", NULL);
  g_autofree char *expected_good = file_sha256 (good);
  g_autofree char *not_regular = NULL;
  gsize size = 0;

  g_test_summary ("A file's checksum is the SHA-256 of its bytes: equal for equal "
                  "bytes wherever they are, different when one byte differs; a missing "
                  "or non-regular file is an error naming it");
  g_file_get_contents (good, &contents, &size, &error);
  g_assert_no_error (error);
  good_copy = scratch_write (dir, "copy.so", contents, size);
  contents[size / 2] ^= 1;
  good_edited = scratch_write (dir, "edited.so", contents, size);
  empty = scratch_write (dir, "empty.so", "", 0);

  sum_good = ah_plugin_file_checksum (good, &error);
  g_assert_no_error (error);
  sum_copy = ah_plugin_file_checksum (good_copy, &error);
  g_assert_no_error (error);
  sum_edited = ah_plugin_file_checksum (good_edited, &error);
  g_assert_no_error (error);
  sum_counter = ah_plugin_file_checksum (counter, &error);
  g_assert_no_error (error);
  sum_empty = ah_plugin_file_checksum (empty, &error);
  g_assert_no_error (error);

  g_assert_cmpuint (strlen (sum_good), ==, 64);
  g_assert_cmpstr (sum_good, ==, expected_good);
  g_assert_cmpstr (sum_copy, ==, sum_good);
  g_assert_cmpstr (sum_edited, !=, sum_good);
  g_assert_cmpstr (sum_counter, !=, sum_good);
  g_assert_cmpstr (sum_empty, ==,
                   "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");

  g_assert_null (ah_plugin_file_checksum (absent, &error));
  g_assert_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_FOUND);
  g_assert_cmpstr (error->message, ==, absent_message);
  g_clear_error (&error);

  not_regular = g_build_filename (dir, "sub.so", NULL);
  g_assert_cmpint (g_mkdir (not_regular, 0700), ==, 0);
  g_assert_null (ah_plugin_file_checksum (not_regular, &error));
  g_assert_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_ELF);
}

/* ---- ah_plugin_find ----------------------------------------------------- */

typedef struct {
  char *scratch;
  char *saved_plugin_path;   /* NULL when it was unset */
} FindFixture;

static void
find_fixture_set_up (FindFixture *fixture, gconstpointer user_data)
{
  fixture->scratch = scratch_dir_new ();
  fixture->saved_plugin_path = g_strdup (g_getenv ("AGENTHOST_PLUGIN_PATH"));
  /* The test environment points it at the shipped plugins; each test
   * sets what it needs. */
  g_unsetenv ("AGENTHOST_PLUGIN_PATH");
}

static void
find_fixture_tear_down (FindFixture *fixture, gconstpointer user_data)
{
  if (fixture->saved_plugin_path != NULL)
    g_setenv ("AGENTHOST_PLUGIN_PATH", fixture->saved_plugin_path, TRUE);
  else
    g_unsetenv ("AGENTHOST_PLUGIN_PATH");
  g_free (fixture->saved_plugin_path);
  g_free (fixture->scratch);
}

static void
test_loader_find_bare_name (FindFixture *fixture, gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhPlugin) plugin = NULL;
  g_autofree char *dir = g_test_build_filename (G_TEST_BUILT, "plugins", NULL);
  g_autofree char *expected = test_plugin_path ("good");
  g_autofree char *found = NULL;
  const char *dirs[] = { fixture->scratch, dir, NULL };

  g_test_summary ("A bare name is found as NAME.so in the given directories, in order, "
                  "and the path found opens");
  found = ah_plugin_find ("good", NULL, dirs, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (found, ==, expected);

  plugin = ah_plugin_open (found, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (ah_plugin_get_desc (plugin)->name, ==, "good");
}

static void
test_loader_find_subdir (FindFixture *fixture, gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *nested = scratch_write (fixture->scratch, "alpha/alpha.so", "", 0);
  g_autofree char *found = NULL;
  g_autofree char *flat = NULL;
  const char *dirs[] = { fixture->scratch, NULL };
  g_autofree char *dir_named_so = g_build_filename (fixture->scratch, "beta.so", NULL);
  g_autofree char *beta = scratch_write (fixture->scratch, "beta/beta.so", "", 0);

  g_test_summary ("NAME/NAME.so is found too; NAME.so comes first when both exist; a "
                  "directory called NAME.so is not a plugin file");
  found = ah_plugin_find ("alpha", NULL, dirs, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (found, ==, nested);
  g_clear_pointer (&found, g_free);

  flat = scratch_write (fixture->scratch, "alpha.so", "", 0);
  found = ah_plugin_find ("alpha", NULL, dirs, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (found, ==, flat);
  g_clear_pointer (&found, g_free);

  g_assert_cmpint (g_mkdir (dir_named_so, 0700), ==, 0);
  found = ah_plugin_find ("beta", NULL, dirs, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (found, ==, beta);
}

static void
test_loader_find_env (FindFixture *fixture, gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *dir_a = g_build_filename (fixture->scratch, "a", NULL);
  g_autofree char *dir_b = g_build_filename (fixture->scratch, "b", NULL);
  g_autofree char *in_a = scratch_write (dir_a, "gamma.so", "", 0);
  g_autofree char *in_b = scratch_write (dir_b, "gamma.so", "", 0);
  g_autofree char *only_b = scratch_write (dir_b, "delta.so", "", 0);
  g_autofree char *env = g_strdup_printf ("%s/absent::%s", fixture->scratch, dir_b);
  g_autofree char *found = NULL;
  const char *dirs[] = { dir_a, NULL };

  g_test_summary ("$AGENTHOST_PLUGIN_PATH is searched after the given directories, "
                  "its empty elements skipped");
  g_setenv ("AGENTHOST_PLUGIN_PATH", env, TRUE);

  found = ah_plugin_find ("delta", NULL, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (found, ==, only_b);
  g_clear_pointer (&found, g_free);

  found = ah_plugin_find ("gamma", NULL, dirs, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (found, ==, in_a);
  g_clear_pointer (&found, g_free);

  found = ah_plugin_find ("gamma", NULL, NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (found, ==, in_b);
}

static void
test_loader_find_path (FindFixture *fixture, gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *file = scratch_write (fixture->scratch, "sub/x.so", "", 0);
  g_autofree char *expected_message = NULL;
  g_autofree char *found = NULL;
  const char *dirs[] = { fixture->scratch, NULL };

  g_test_summary ("A name with a '/' is a path, relative to the base directory, and "
                  "is never searched for");
  found = ah_plugin_find ("sub/x.so", fixture->scratch, dirs, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (found, ==, file);
  g_clear_pointer (&found, g_free);

  found = ah_plugin_find (file, "/nonexistent", NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (found, ==, file);
  g_clear_pointer (&found, g_free);

  found = ah_plugin_find ("sub/y.so", fixture->scratch, dirs, &error);
  g_assert_null (found);
  g_assert_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_FOUND);
  expected_message = g_strdup_printf ("sub/y.so: plugin not found; tried %s/sub/y.so",
                                      fixture->scratch);
  g_assert_cmpstr (error->message, ==, expected_message);
}

static void
test_loader_find_invalid_name (FindFixture *fixture, gconstpointer user_data)
{
  const char *invalid[] = { "", ".", "..", "x.so", "a b", "a\nb", "x*" };
  g_autofree char *outside = scratch_write (fixture->scratch, "x.so", "", 0);
  g_autofree char *sub = g_build_filename (fixture->scratch, "sub", NULL);
  g_autofree char *expected_message = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *found = NULL;
  const char *dirs[] = { sub, NULL };

  g_test_summary ("A bare name outside [A-Za-z0-9_-]+ is refused; \"../x\" is a path "
                  "from the base directory, never a name searched for in the plugin "
                  "directories, so it cannot reach out of them");
  g_assert_cmpint (g_mkdir (sub, 0700), ==, 0);

  for (gsize i = 0; i < G_N_ELEMENTS (invalid); i++)
    {
      g_autoptr(GError) name_error = NULL;
      g_autofree char *name_found = ah_plugin_find (invalid[i], NULL, dirs, &name_error);

      g_assert_null (name_found);
      g_assert_error (name_error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_FOUND);
      g_assert_nonnull (strstr (name_error->message, ": not a valid plugin name (a bare name "
                                                     "is [A-Za-z0-9_-]+, a path contains a '/')"));
    }

  /* sub/../x.so exists: a search of "../x" in sub would find it. */
  g_assert_true (g_file_test (outside, G_FILE_TEST_IS_REGULAR));
  found = ah_plugin_find ("../x", sub, dirs, &error);
  g_assert_null (found);
  g_assert_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_FOUND);
  expected_message = g_strdup_printf ("../x: plugin not found; tried %s/../x", sub);
  g_assert_cmpstr (error->message, ==, expected_message);
}

static void
test_loader_find_not_found (FindFixture *fixture, gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *found = NULL;
  g_autofree char *build_root = g_path_get_dirname (g_test_get_dir (G_TEST_BUILT));
  g_autofree char *expected_prefix = NULL;
  const char *dirs[] = { "/nonexistent/d1", "/nonexistent/d2", "/nonexistent/d1", NULL };

  g_test_summary ("The not-found error lists every path tried, in search order, each "
                  "once: the given directories, $AGENTHOST_PLUGIN_PATH, the build "
                  "tree (this test runs uninstalled), the installed directory");
  g_setenv ("AGENTHOST_PLUGIN_PATH", "/nonexistent/e1:/nonexistent/d2", TRUE);

  found = ah_plugin_find ("omega", NULL, dirs, &error);
  g_assert_null (found);
  g_assert_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_NOT_FOUND);

  expected_prefix = g_strdup_printf (
      "omega: plugin not found; tried "
      "/nonexistent/d1/omega.so, /nonexistent/d1/omega/omega.so, "
      "/nonexistent/d2/omega.so, /nonexistent/d2/omega/omega.so, "
      "/nonexistent/e1/omega.so, /nonexistent/e1/omega/omega.so, "
      "%s/plugins/omega.so, %s/plugins/omega/omega.so, ",
      build_root, build_root);
  if (!g_str_has_prefix (error->message, expected_prefix))
    g_error ("message \"%s\" does not start with \"%s\"", error->message, expected_prefix);
  g_assert_true (g_str_has_suffix (error->message, "/agenthost-1/plugins/omega/omega.so"));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);

  for (gsize i = 0; i < G_N_ELEMENTS (broken_plugins); i++)
    {
      g_autofree char *test_path = g_strconcat ("/loader/open/broken/", broken_plugins[i].name, NULL);

      g_test_add_data_func (test_path, &broken_plugins[i], test_loader_open_broken);
    }
  g_test_add_func ("/loader/open/good", test_loader_open_good);
  g_test_add_func ("/loader/open/old-struct", test_loader_open_old_struct);
  for (gsize i = 0; i < G_N_ELEMENTS (valid_plugins); i++)
    {
      g_autofree char *test_path = g_strconcat ("/loader/open/valid/", valid_plugins[i].file, NULL);

      g_test_add_data_func (test_path, &valid_plugins[i], test_loader_open_valid);
    }
  g_test_add_func ("/loader/open/twice", test_loader_open_twice);
  g_test_add_func ("/loader/open/relative", test_loader_open_relative);
  g_test_add_func ("/loader/open/missing", test_loader_open_missing);
  for (gsize i = 0; i < G_N_ELEMENTS (not_elf_files); i++)
    {
      g_autofree char *test_path = g_strconcat ("/loader/open/not-elf/", not_elf_files[i].name, NULL);

      g_test_add_data_func (test_path, &not_elf_files[i], test_loader_open_not_elf);
    }
  g_test_add_func ("/loader/open/not-regular", test_loader_open_not_regular);
  for (gsize i = 0; i < G_N_ELEMENTS (elf_patch_cases); i++)
    {
      g_autofree char *test_path = g_strconcat ("/loader/open/foreign-elf/", elf_patch_cases[i].name, NULL);

      g_test_add_data_func (test_path, &elf_patch_cases[i], test_loader_open_foreign_elf);
    }

  for (gsize i = 0; i < G_N_ELEMENTS (invalid_descs); i++)
    {
      g_autofree char *test_path = g_strconcat ("/loader/desc/invalid/", invalid_descs[i].name, NULL);

      g_test_add_data_func (test_path, &invalid_descs[i], test_loader_desc_invalid);
    }
  g_test_add_func ("/loader/desc/abi-first", test_loader_desc_abi_first);
  g_test_add_func ("/loader/desc/shorter", test_loader_desc_shorter);
  g_test_add_func ("/loader/desc/limits", test_loader_desc_limits);
  g_test_add_func ("/loader/desc/schema/good", test_loader_desc_schema_good);
  g_test_add_func ("/loader/desc/schema/abi-1.0", test_loader_desc_schema_abi_1_0);
  g_test_add_func ("/loader/desc/schema/size", test_loader_desc_schema_size);
  for (gsize i = 0; i < G_N_ELEMENTS (invalid_schemas); i++)
    {
      g_autofree char *test_path = g_strconcat ("/loader/desc/schema/invalid/", invalid_schemas[i].name, NULL);

      g_test_add_data_func (test_path, &invalid_schemas[i], test_loader_desc_schema_invalid);
    }

  g_test_add_func ("/loader/copy/distinct", test_loader_copy_distinct);
  g_test_add_func ("/loader/copy/overwrite", test_loader_copy_overwrite);
  for (gsize i = 0; i < G_N_ELEMENTS (broken_plugins); i++)
    {
      g_autofree char *test_path = NULL;

      /* Its dependency is found through $ORIGIN, which a copy in a memfd
       * has none of: it fails to load for that reason first. */
      if (g_str_equal (broken_plugins[i].name, "entry-in-dependency"))
        continue;
      test_path = g_strconcat ("/loader/copy/broken/", broken_plugins[i].name, NULL);
      g_test_add_data_func (test_path, &broken_plugins[i], test_loader_copy_broken);
    }
  g_test_add_func ("/loader/copy/not-elf", test_loader_copy_not_elf);
  g_test_add_func ("/loader/copy/truncated", test_loader_copy_truncated);
  g_test_add_func ("/loader/copy/too-large", test_loader_copy_too_large);
  g_test_add_func ("/loader/copy/stale-name", test_loader_copy_stale_name);
  g_test_add_func ("/loader/checksum/file", test_loader_checksum);

  g_test_add_func ("/loader/describe/good", test_loader_describe_good);
  g_test_add_func ("/loader/describe/old-struct", test_loader_describe_old_struct);
  g_test_add_func ("/loader/describe/schema", test_loader_describe_schema);

  g_test_add ("/loader/find/bare-name", FindFixture, NULL,
              find_fixture_set_up, test_loader_find_bare_name, find_fixture_tear_down);
  g_test_add ("/loader/find/subdir", FindFixture, NULL,
              find_fixture_set_up, test_loader_find_subdir, find_fixture_tear_down);
  g_test_add ("/loader/find/env", FindFixture, NULL,
              find_fixture_set_up, test_loader_find_env, find_fixture_tear_down);
  g_test_add ("/loader/find/path", FindFixture, NULL,
              find_fixture_set_up, test_loader_find_path, find_fixture_tear_down);
  g_test_add ("/loader/find/invalid-name", FindFixture, NULL,
              find_fixture_set_up, test_loader_find_invalid_name, find_fixture_tear_down);
  g_test_add ("/loader/find/not-found", FindFixture, NULL,
              find_fixture_set_up, test_loader_find_not_found, find_fixture_tear_down);

  return g_test_run ();
}
