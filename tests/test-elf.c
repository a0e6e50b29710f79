/* SPDX-License-Identifier: MIT */
/* Tests of ah_plugin_lint(): one fixture plugin per finding
 * (tests/plugins-elf/), the shipped plugins with nothing to report, and
 * files that are no ELF, or damaged on purpose: by hand, field by field,
 * and by a deterministic fuzzer. */
#include <agenthost/agenthost.h>

#include <elf.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib/gstdio.h>

#define CONSTRUCTOR_LINE \
  "constructor function 'init_cache' runs on every load (hot reload loads the plugin again)"
#define DESTRUCTOR_LINE \
  "destructor function 'flush_cache' runs on every unload (hot reload unloads the old version)"
#define EXPORT_LINE \
  "exports 'helper' besides ah_plugin_entry: another plugin or the host could bind to it"
#define UNIQUE_LINE \
  "unique symbol 'unique_counter': the dynamic loader never unloads this object"
#define TLS_LINE \
  "uses thread-local storage: threads that ran its code keep it until they exit"
#define STATIC_TLS_LINE \
  "uses initial-exec thread-local storage (DF_STATIC_TLS): every load takes room in the " \
  "small static TLS area, and dlopen fails once it is used up"
#define THREAD_DESTRUCTOR_LINE \
  "registers thread-local destructors: the object cannot be unloaded while those threads live"
#define NODELETE_LINE \
  "is marked NODELETE (-z nodelete): dlclose never unloads it, so a reload cannot replace " \
  "its code"

/* ASan gives every object a constructor and a destructor of its own. With
 * names, the lint knows them; in a stripped file nothing tells them from
 * the author's. */
#if defined (__SANITIZE_ADDRESS__)
#  define N_UNNAMED_INSTRUMENTATION 2
#elif defined (__has_feature)
#  if __has_feature (address_sanitizer)
#    define N_UNNAMED_INSTRUMENTATION 2
#  endif
#endif
#ifndef N_UNNAMED_INSTRUMENTATION
#  define N_UNNAMED_INSTRUMENTATION 0
#endif

/* ---- helpers ------------------------------------------------------------ */

static char *
fixture_path (const char *name)
{
  g_autofree char *file_name = g_strconcat ("elf-", name, ".so", NULL);

  return g_test_build_filename (G_TEST_BUILT, "plugins-elf", file_name, NULL);
}

/* A directory under the per-test isolated directories, which GTest
 * removes with everything in it after each test. */
static char *
scratch_path (const char *name)
{
  g_autofree char *dir = g_build_filename (g_get_user_cache_dir (), "test-elf", NULL);

  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  return g_build_filename (dir, name, NULL);
}

static char *
scratch_write (const char *name, gconstpointer data, gsize size)
{
  char *path = scratch_path (name);
  g_autoptr(GError) error = NULL;

  /* No fsync() and no rename: these files are thrown away. */
  g_file_set_contents_full (path, data, (gssize) size, G_FILE_SET_CONTENTS_NONE, 0600, &error);
  g_assert_no_error (error);
  return path;
}

static GBytes *
read_fixture (const char *name)
{
  g_autofree char *path = fixture_path (name);
  g_autoptr(GError) error = NULL;
  char *contents = NULL;
  gsize size = 0;

  g_file_get_contents (path, &contents, &size, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (size, >=, sizeof (Elf64_Ehdr));
  return g_bytes_new_take (contents, size);
}

static void
assert_lint_error (const char *path, AhPluginError code, const char *expected_reason)
{
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) lines = ah_plugin_lint (path, &error);
  g_autofree char *expected = g_strconcat (path, ": ", expected_reason, NULL);

  g_assert_null (lines);
  g_assert_error (error, AH_PLUGIN_ERROR, (gint) code);
  g_assert_cmpstr (error->message, ==, expected);
}

static void
assert_lint_error_prefix (const char *path, AhPluginError code, const char *expected_start)
{
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) lines = ah_plugin_lint (path, &error);
  g_autofree char *expected = g_strconcat (path, ": ", expected_start, NULL);

  g_assert_null (lines);
  g_assert_error (error, AH_PLUGIN_ERROR, (gint) code);
  if (!g_str_has_prefix (error->message, expected))
    g_error ("expected a message starting with \"%s\", got \"%s\"", expected, error->message);
}

/* ---- each finding, from its own fixture -------------------------------- */

typedef struct {
  const char *name;        /* tests/plugins-elf/ fixture, built as elf-NAME.so */
  const char *lines[3];    /* what ah_plugin_lint() says, in order; NULL-ended */
} LintCase;

static const LintCase lint_cases[] = {
  { "clean",             { NULL } },
  { "constructor",       { CONSTRUCTOR_LINE, NULL } },
  { "destructor",        { DESTRUCTOR_LINE, NULL } },
  { "export",            { EXPORT_LINE, NULL } },
  { "unique",            { UNIQUE_LINE, NULL } },
  { "tls",               { TLS_LINE, NULL } },
  { "static-tls",        { TLS_LINE, STATIC_TLS_LINE, NULL } },
  { "thread-destructor", { THREAD_DESTRUCTOR_LINE, NULL } },
  { "nodelete",          { NODELETE_LINE, NULL } },
};

static void
test_elf_lint_fixture (gconstpointer data)
{
  const LintCase *tc = data;
  g_autofree char *path = fixture_path (tc->name);
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) lines = NULL;

  g_test_summary ("Each fixture gets exactly the lines of its finding, in order; the clean "
                  "one none (also under sanitizers, whose constructors are not the author's)");

  lines = ah_plugin_lint (path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (lines);
  g_assert_cmpstrv (lines, tc->lines);
}

static void
test_elf_fixtures_load (void)
{
  g_test_summary ("Every fixture is a valid plugin: the findings are about plugins that load");

  for (gsize i = 0; i < G_N_ELEMENTS (lint_cases); i++)
    {
      g_autofree char *path = fixture_path (lint_cases[i].name);
      g_autofree char *expected_name = NULL;
      g_autoptr(GError) error = NULL;
      g_autoptr(AhPlugin) plugin = NULL;

      /* The nodelete fixture is clean.c linked differently. */
      expected_name = g_strconcat ("elf_", g_str_equal (lint_cases[i].name, "nodelete")
                                   ? "clean" : lint_cases[i].name, NULL);
      g_strdelimit (expected_name, "-", '_');

      plugin = ah_plugin_open (path, &error);
      g_assert_no_error (error);
      g_assert_nonnull (plugin);
      g_assert_cmpstr (ah_plugin_get_desc (plugin)->name, ==, expected_name);
    }
}

static void
test_elf_lint_shipped (void)
{
  g_autofree char *dir_path = g_test_build_filename (G_TEST_BUILT, "..", "plugins", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(GDir) dir = g_dir_open (dir_path, 0, &error);
  const char *name;
  guint n_plugins = 0;

  g_test_summary ("Every shipped plugin, built with the project's plugin settings, has "
                  "nothing to report");

  g_assert_no_error (error);
  while ((name = g_dir_read_name (dir)) != NULL)
    {
      g_autofree char *path = NULL;
      g_auto(GStrv) lines = NULL;

      if (!g_str_has_suffix (name, ".so"))
        continue;
      path = g_build_filename (dir_path, name, NULL);
      lines = ah_plugin_lint (path, &error);
      g_assert_no_error (error);
      g_assert_nonnull (lines);
      if (lines[0] != NULL)
        g_error ("%s: expected nothing to report, got \"%s\"", name, lines[0]);
      n_plugins++;
    }
  g_assert_cmpuint (n_plugins, >=, 5);
}

static void
test_elf_lint_loader_fixtures (void)
{
  g_autofree char *good = g_test_build_filename (G_TEST_BUILT, "plugins", "good.so", NULL);
  g_autofree char *no_entry = g_test_build_filename (G_TEST_BUILT, "plugins", "no-entry.so",
                                                     NULL);
  const char *const good_lines[] = { NULL };
  const char *const no_entry_lines[] = {
    "exports 'ah_plugin_no_entry_get_desc' besides ah_plugin_entry: another plugin or the "
    "host could bind to it",
    NULL,
  };
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) lines = NULL;

  g_test_summary ("The loader's fixtures: the good plugin is clean, and the one exporting "
                  "GStreamer's style of entry point exports something else");

  lines = ah_plugin_lint (good, &error);
  g_assert_no_error (error);
  g_assert_cmpstrv (lines, good_lines);
  g_clear_pointer (&lines, g_strfreev);

  lines = ah_plugin_lint (no_entry, &error);
  g_assert_no_error (error);
  g_assert_cmpstrv (lines, no_entry_lines);
}

/* Removes the section headers and everything after the last segment,
 * as sstrip does: the loader never reads them, so the plugin still
 * loads, but no symbol names a local function any more. */
static GBytes *
strip_section_headers (GBytes *elf)
{
  gsize size = 0;
  const guint8 *data = g_bytes_get_data (elf, &size);
  Elf64_Ehdr header;
  gsize end = sizeof header;
  guint8 *stripped;

  memcpy (&header, data, sizeof header);
  for (guint i = 0; i < header.e_phnum; i++)
    {
      Elf64_Phdr segment;

      memcpy (&segment, data + header.e_phoff + i * sizeof segment, sizeof segment);
      end = MAX (end, segment.p_offset + segment.p_filesz);
    }
  g_assert_cmpuint (end, <, size);

  stripped = g_memdup2 (data, end);
  header.e_shoff = 0;
  header.e_shnum = 0;
  header.e_shstrndx = SHN_UNDEF;
  memcpy (stripped, &header, sizeof header);
  return g_bytes_new_take (stripped, end);
}

static void
test_elf_lint_stripped (void)
{
  g_autoptr(GBytes) clean = read_fixture ("clean");
  g_autoptr(GBytes) constructor = read_fixture ("constructor");
  g_autoptr(GBytes) clean_stripped = strip_section_headers (clean);
  g_autoptr(GBytes) constructor_stripped = strip_section_headers (constructor);
  g_autofree char *clean_path = NULL;
  g_autofree char *constructor_path = NULL;
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) lines = NULL;
  guint n_constructors = 0;

  g_test_summary ("Without section headers nothing names the toolchain's functions: the "
                  "clean plugin stays clean, the constructor is reported by address");

  clean_path = scratch_write ("clean-stripped.so", g_bytes_get_data (clean_stripped, NULL),
                              g_bytes_get_size (clean_stripped));
  lines = ah_plugin_lint (clean_path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (lines);
  g_assert_cmpuint (g_strv_length (lines), ==, N_UNNAMED_INSTRUMENTATION);
  g_clear_pointer (&lines, g_strfreev);

  constructor_path = scratch_write ("constructor-stripped.so",
                                    g_bytes_get_data (constructor_stripped, NULL),
                                    g_bytes_get_size (constructor_stripped));
  lines = ah_plugin_lint (constructor_path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (lines);
  g_assert_cmpuint (g_strv_length (lines), ==, 1 + N_UNNAMED_INSTRUMENTATION);
  for (guint i = 0; lines[i] != NULL; i++)
    {
      if (g_str_has_prefix (lines[i], "constructor function at 0x")
          && g_str_has_suffix (lines[i],
                               " runs on every load (hot reload loads the plugin again)"))
        n_constructors++;
    }
  g_assert_cmpuint (n_constructors, ==, 1 + N_UNNAMED_INSTRUMENTATION / 2);
}

/* The file offset the loader maps at @address. */
static gsize
address_to_offset (const guint8 *data, guint64 address)
{
  Elf64_Ehdr header;

  memcpy (&header, data, sizeof header);
  for (guint i = 0; i < header.e_phnum; i++)
    {
      Elf64_Phdr segment;

      memcpy (&segment, data + header.e_phoff + i * sizeof segment, sizeof segment);
      if (segment.p_type == PT_LOAD && address >= segment.p_vaddr
          && address - segment.p_vaddr < segment.p_filesz)
        return segment.p_offset + (address - segment.p_vaddr);
    }
  g_error ("address 0x%" G_GINT64_MODIFIER "x is not in the file", address);
  return 0;
}

static gsize find_dynamic_entry (const guint8 *data, gsize size, gint64 tag);

/* Zeroes the slots of the array the dynamic entry @array_tag points at. */
static void
zero_function_array (guint8 *data, gsize size, gint64 array_tag, gint64 size_tag)
{
  Elf64_Dyn array;
  Elf64_Dyn array_size;

  memcpy (&array, data + find_dynamic_entry (data, size, array_tag), sizeof array);
  memcpy (&array_size, data + find_dynamic_entry (data, size, size_tag), sizeof array_size);
  memset (data + address_to_offset (data, array.d_un.d_ptr), 0, array_size.d_un.d_val);
}

static void
test_elf_lint_relocated_slots (void)
{
  g_autoptr(GBytes) constructor = read_fixture ("constructor");
  g_autoptr(GBytes) destructor = read_fixture ("destructor");
  const char *const constructor_lines[] = { CONSTRUCTOR_LINE, NULL };
  const char *const destructor_lines[] = { DESTRUCTOR_LINE, NULL };
  gsize size = g_bytes_get_size (constructor);
  g_autofree guint8 *copy = g_memdup2 (g_bytes_get_data (constructor, NULL), size);
  g_autofree char *path = NULL;
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) lines = NULL;

  g_test_summary ("With RELA relocations the address is the relocation's addend: a linker "
                  "that leaves the slots zero (AArch64's default) still gets them named");

  zero_function_array (copy, size, DT_INIT_ARRAY, DT_INIT_ARRAYSZ);
  path = scratch_write ("constructor-zeroed.so", copy, size);
  lines = ah_plugin_lint (path, &error);
  g_assert_no_error (error);
  g_assert_cmpstrv (lines, constructor_lines);
  g_clear_pointer (&lines, g_strfreev);
  g_clear_pointer (&copy, g_free);
  g_clear_pointer (&path, g_free);

  size = g_bytes_get_size (destructor);
  copy = g_memdup2 (g_bytes_get_data (destructor, NULL), size);
  zero_function_array (copy, size, DT_FINI_ARRAY, DT_FINI_ARRAYSZ);
  path = scratch_write ("destructor-zeroed.so", copy, size);
  lines = ah_plugin_lint (path, &error);
  g_assert_no_error (error);
  g_assert_cmpstrv (lines, destructor_lines);
}

/* ---- files that are no plugin ------------------------------------------ */

static void
test_elf_lint_missing (void)
{
  g_autofree char *path = scratch_path ("missing.so");

  g_test_summary ("A file that does not exist is NOT_FOUND");

  assert_lint_error (path, AH_PLUGIN_ERROR_NOT_FOUND, "no such file");
}

static void
test_elf_lint_not_elf (void)
{
  const char text[] = "#!/bin/sh\necho not a plugin\n";
  g_autofree char *text_path = scratch_write ("script.so", text, sizeof text - 1);
  g_autofree char *empty_path = scratch_write ("empty.so", "", 0);

  g_test_summary ("A text file and an empty file are not ELF files");

  assert_lint_error (text_path, AH_PLUGIN_ERROR_NOT_ELF, "not an ELF file");
  assert_lint_error (empty_path, AH_PLUGIN_ERROR_NOT_ELF, "not an ELF file");
}

static void
test_elf_lint_not_regular (void)
{
  g_autofree char *dir_path = scratch_path ("directory.so");
  g_autofree char *fifo_path = scratch_path ("fifo.so");

  g_test_summary ("A directory and a FIFO are refused without reading (a FIFO would block)");

  g_assert_cmpint (g_mkdir (dir_path, 0700), ==, 0);
  g_assert_cmpint (mkfifo (fifo_path, 0600), ==, 0);
  assert_lint_error (dir_path, AH_PLUGIN_ERROR_NOT_ELF, "not an ELF file (not a regular file)");
  assert_lint_error (fifo_path, AH_PLUGIN_ERROR_NOT_ELF, "not an ELF file (not a regular file)");
}

static void
test_elf_lint_too_large (void)
{
  g_autofree char *path = scratch_path ("huge.so");
  int fd;

  g_test_summary ("A file over 256 MiB is refused before it is read (sparse here, so cheap)");

  fd = g_open (path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  g_assert_cmpint (fd, >=, 0);
  g_assert_cmpint (ftruncate (fd, (off_t) 257 * 1024 * 1024), ==, 0);
  g_assert_true (g_close (fd, NULL));
  assert_lint_error (path, AH_PLUGIN_ERROR_LOAD,
                     "too large to inspect (269484032 bytes, the limit is 256 MiB)");
}

static void
test_elf_lint_executable (void)
{
  g_test_summary ("An executable is no plugin, also when it is position-independent and so "
                  "of the same ELF type as a shared object");

  /* This test program: a PIE with the toolchain's defaults, an ET_EXEC
   * without them. Either way it is refused. */
  assert_lint_error_prefix ("/proc/self/exe", AH_PLUGIN_ERROR_LOAD, "not a shared object: ");
}

/* ---- real plugins, damaged field by field ------------------------------ */

/* Offset in @data of the first dynamic entry with @tag. */
static gsize
find_dynamic_entry (const guint8 *data, gsize size, gint64 tag)
{
  Elf64_Ehdr header;

  memcpy (&header, data, sizeof header);
  for (guint i = 0; i < header.e_phnum; i++)
    {
      Elf64_Phdr segment;
      gsize end;

      memcpy (&segment, data + header.e_phoff + i * sizeof segment, sizeof segment);
      if (segment.p_type != PT_DYNAMIC)
        continue;
      end = segment.p_offset + segment.p_filesz;

      for (gsize at = segment.p_offset; at + sizeof (Elf64_Dyn) <= end; at += sizeof (Elf64_Dyn))
        {
          Elf64_Dyn entry;

          memcpy (&entry, data + at, sizeof entry);
          if (entry.d_tag == tag)
            return at;
        }
    }
  g_error ("no dynamic entry %" G_GINT64_FORMAT, tag);
  return 0;
}

static gsize
find_segment (const guint8 *data, guint32 type)
{
  Elf64_Ehdr header;

  memcpy (&header, data, sizeof header);
  for (guint i = 0; i < header.e_phnum; i++)
    {
      Elf64_Phdr segment;
      gsize at = header.e_phoff + i * sizeof segment;

      memcpy (&segment, data + at, sizeof segment);
      if (segment.p_type == type)
        return at;
    }
  g_error ("no segment of type %u", type);
  return 0;
}

static void
patch_u8 (guint8 *data, gsize at, guint8 value)
{
  data[at] = value;
}

static void
patch_u16 (guint8 *data, gsize at, guint16 value)
{
  memcpy (data + at, &value, sizeof value);
}

static void
patch_u64 (guint8 *data, gsize at, guint64 value)
{
  memcpy (data + at, &value, sizeof value);
}

static void
damage_class (guint8 *data, gsize size)
{
  patch_u8 (data, EI_CLASS, ELFCLASS32);
}

static void
damage_byte_order (guint8 *data, gsize size)
{
  patch_u8 (data, EI_DATA, G_BYTE_ORDER == G_LITTLE_ENDIAN ? ELFDATA2MSB : ELFDATA2LSB);
}

static void
damage_type (guint8 *data, gsize size)
{
  patch_u16 (data, G_STRUCT_OFFSET (Elf64_Ehdr, e_type), ET_EXEC);
}

static void
damage_phoff (guint8 *data, gsize size)
{
  patch_u64 (data, G_STRUCT_OFFSET (Elf64_Ehdr, e_phoff), G_MAXUINT64 - 8);
}

static void
damage_phentsize (guint8 *data, gsize size)
{
  patch_u16 (data, G_STRUCT_OFFSET (Elf64_Ehdr, e_phentsize), 32);
}

static void
damage_shoff (guint8 *data, gsize size)
{
  patch_u64 (data, G_STRUCT_OFFSET (Elf64_Ehdr, e_shoff), size - 8);
}

static void
damage_dynamic_offset (guint8 *data, gsize size)
{
  patch_u64 (data, find_segment (data, PT_DYNAMIC) + G_STRUCT_OFFSET (Elf64_Phdr, p_offset),
             size);
}

static void
damage_no_dynamic (guint8 *data, gsize size)
{
  patch_u64 (data, find_segment (data, PT_DYNAMIC), PT_NULL);
}

static void
damage_init_array_size (guint8 *data, gsize size)
{
  patch_u64 (data, find_dynamic_entry (data, size, DT_INIT_ARRAYSZ)
             + G_STRUCT_OFFSET (Elf64_Dyn, d_un), (guint64) 1 << 40);
}

static void
damage_init_array_size_odd (guint8 *data, gsize size)
{
  patch_u64 (data, find_dynamic_entry (data, size, DT_INIT_ARRAYSZ)
             + G_STRUCT_OFFSET (Elf64_Dyn, d_un), 12);
}

static void
damage_symtab_address (guint8 *data, gsize size)
{
  patch_u64 (data, find_dynamic_entry (data, size, DT_SYMTAB)
             + G_STRUCT_OFFSET (Elf64_Dyn, d_un), (guint64) 1 << 40);
}

static void
damage_string_table_size (guint8 *data, gsize size)
{
  patch_u64 (data, find_dynamic_entry (data, size, DT_STRSZ)
             + G_STRUCT_OFFSET (Elf64_Dyn, d_un), G_MAXUINT64);
}

static void
damage_rela_entry_size (guint8 *data, gsize size)
{
  patch_u64 (data, find_dynamic_entry (data, size, DT_RELAENT)
             + G_STRUCT_OFFSET (Elf64_Dyn, d_un), 16);
}

static void
damage_symbol_name (guint8 *data, gsize size)
{
  gsize at = find_dynamic_entry (data, size, DT_SYMTAB);
  Elf64_Dyn symtab;
  Elf64_Word huge_name = G_MAXUINT32;

  /* The addresses of this fixture's first segment are its file offsets. */
  memcpy (&symtab, data + at, sizeof symtab);
  for (guint64 i = 1; i < 64; i++)
    {
      Elf64_Sym symbol;
      gsize symbol_at = symtab.d_un.d_ptr + i * sizeof symbol;

      memcpy (&symbol, data + symbol_at, sizeof symbol);
      if (symbol.st_shndx != SHN_UNDEF && ELF64_ST_BIND (symbol.st_info) == STB_GLOBAL)
        {
          memcpy (data + symbol_at + G_STRUCT_OFFSET (Elf64_Sym, st_name), &huge_name,
                  sizeof huge_name);
          return;
        }
    }
  g_error ("no defined global symbol to damage");
}

typedef struct {
  const char    *name;
  void         (*damage) (guint8 *data, gsize size);
  AhPluginError  code;
  const char    *reason_start;   /* after "PATH: " */
} DamageCase;

static const DamageCase damage_cases[] = {
  { "class", damage_class, AH_PLUGIN_ERROR_LOAD,
    "ELF object is 32-bit; only 64-bit objects can be inspected" },
  { "byte-order", damage_byte_order, AH_PLUGIN_ERROR_LOAD,
    G_BYTE_ORDER == G_LITTLE_ENDIAN ? "ELF object is big-endian, this host is little-endian"
                                    : "ELF object is little-endian, this host is big-endian" },
  { "type", damage_type, AH_PLUGIN_ERROR_LOAD,
    "not a shared object: an executable (ELF type 2)" },
  { "phoff", damage_phoff, AH_PLUGIN_ERROR_NOT_ELF,
    "not a valid ELF file: program headers (" },
  { "phentsize", damage_phentsize, AH_PLUGIN_ERROR_NOT_ELF,
    "not a valid ELF file: program header entries are 32 bytes, not 56" },
  { "shoff", damage_shoff, AH_PLUGIN_ERROR_NOT_ELF,
    "not a valid ELF file: section headers (" },
  { "dynamic-offset", damage_dynamic_offset, AH_PLUGIN_ERROR_NOT_ELF,
    "not a valid ELF file: PT_DYNAMIC segment " },
  { "no-dynamic", damage_no_dynamic, AH_PLUGIN_ERROR_NOT_ELF,
    "not a valid ELF file: no dynamic segment: the dynamic loader could not link it" },
  { "init-array-size", damage_init_array_size, AH_PLUGIN_ERROR_NOT_ELF,
    "not a valid ELF file: DT_INIT_ARRAY (1099511627776 bytes at 0x" },
  { "init-array-size-odd", damage_init_array_size_odd, AH_PLUGIN_ERROR_NOT_ELF,
    "not a valid ELF file: DT_INIT_ARRAYSZ is 12, not a whole number of addresses" },
  { "symtab-address", damage_symtab_address, AH_PLUGIN_ERROR_NOT_ELF,
    "not a valid ELF file: DT_SYMTAB (0x10000000000) is not in the file part of a loadable "
    "segment" },
  { "string-table-size", damage_string_table_size, AH_PLUGIN_ERROR_NOT_ELF,
    "not a valid ELF file: DT_STRTAB (18446744073709551615 bytes at 0x" },
  { "rela-entry-size", damage_rela_entry_size, AH_PLUGIN_ERROR_NOT_ELF,
    "not a valid ELF file: DT_RELAENT is 16, not 24" },
  { "symbol-name", damage_symbol_name, AH_PLUGIN_ERROR_NOT_ELF,
    "not a valid ELF file: the name of .dynsym symbol " },
};

static void
test_elf_lint_damaged (gconstpointer data)
{
  const DamageCase *tc = data;
  g_autoptr(GBytes) elf = read_fixture ("constructor");
  gsize size = g_bytes_get_size (elf);
  g_autofree guint8 *copy = g_memdup2 (g_bytes_get_data (elf, NULL), size);
  g_autofree char *file_name = g_strconcat (tc->name, ".so", NULL);
  g_autofree char *path = NULL;

  g_test_summary ("A field damaged on purpose gives its own error, naming the file and "
                  "what does not hold");

  tc->damage (copy, size);
  path = scratch_write (file_name, copy, size);
  assert_lint_error_prefix (path, tc->code, tc->reason_start);
}

typedef struct {
  const char    *name;
  gsize          length;          /* 0: computed from the file */
  AhPluginError  code;
  const char    *reason_start;
} TruncateCase;

static void
test_elf_lint_truncated (void)
{
  g_autoptr(GBytes) elf = read_fixture ("constructor");
  const guint8 *data = g_bytes_get_data (elf, NULL);
  gsize size = g_bytes_get_size (elf);
  Elf64_Ehdr header;
  const TruncateCase cases[] = {
    { "magic", 3, AH_PLUGIN_ERROR_NOT_ELF, "not an ELF file" },
    { "ident", 10, AH_PLUGIN_ERROR_NOT_ELF, "not an ELF file (truncated header)" },
    { "header", sizeof (Elf64_Ehdr) - 1, AH_PLUGIN_ERROR_NOT_ELF,
      "not an ELF file (truncated header)" },
    { "program-headers", sizeof (Elf64_Ehdr) + 10, AH_PLUGIN_ERROR_NOT_ELF,
      "not a valid ELF file: program headers (" },
    { "half", size / 2, AH_PLUGIN_ERROR_NOT_ELF, "not a valid ELF file: PT_LOAD segment " },
    { "last-byte", size - 1, AH_PLUGIN_ERROR_NOT_ELF, "not a valid ELF file: section headers (" },
  };

  g_test_summary ("A truncated plugin is an error, whatever part the cut takes away");

  memcpy (&header, data, sizeof header);
  g_assert_cmpuint (header.e_phoff, ==, sizeof (Elf64_Ehdr));
  for (gsize i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *file_name = g_strconcat ("truncated-", cases[i].name, ".so", NULL);
      g_autofree char *path = scratch_write (file_name, data, cases[i].length);

      assert_lint_error_prefix (path, cases[i].code, cases[i].reason_start);
    }
}

/* ---- fuzzing ----------------------------------------------------------- */

/* Mutates copies of a real plugin with a fixed seed, so a failure
 * replays: truncations anywhere, and runs of overwritten bytes, half of
 * them in the first page (headers, dynamic symbols, relocations), the
 * rest anywhere (the section headers sit at the end). Every outcome must
 * be a list of one-line findings or a plugin error naming the file;
 * under ASan, any read out of bounds fails the test. */
static void
test_elf_lint_fuzz (gconstpointer data)
{
  const char *fixture = data;
  static const guint8 interesting[] = { 0x00, 0x01, 0x7f, 0x80, 0xff };
  g_autoptr(GBytes) elf = read_fixture (fixture);
  const guint8 *original = g_bytes_get_data (elf, NULL);
  gsize size = g_bytes_get_size (elf);
  g_autofree guint8 *copy = g_malloc (size);
  g_autofree char *path = scratch_path ("fuzzed.so");
  g_autoptr(GRand) rand = g_rand_new_with_seed (0x6e1f2024);
  guint n_linted = 0;
  guint n_refused = 0;

  g_test_summary ("Truncated and corrupted copies of a plugin give findings or an error, "
                  "never a crash or an out-of-bounds read");

  for (guint iteration = 0; iteration < 2500; iteration++)
    {
      g_autoptr(GError) error = NULL;
      g_auto(GStrv) lines = NULL;
      gsize length = size;

      memcpy (copy, original, size);
      if (g_rand_int_range (rand, 0, 4) == 0)
        {
          length = (gsize) g_rand_int_range (rand, 0, (gint32) size);
        }
      else
        {
          guint n_changes = (guint) g_rand_int_range (rand, 1, 9);

          for (guint c = 0; c < n_changes; c++)
            {
              gsize limit = g_rand_boolean (rand) ? MIN (size, 4096) : size;
              gsize at = (gsize) g_rand_int_range (rand, 0, (gint32) limit);

              if (g_rand_boolean (rand))
                copy[at] = interesting[g_rand_int_range (rand, 0, G_N_ELEMENTS (interesting))];
              else
                copy[at] ^= (guint8) (1u << g_rand_int_range (rand, 0, 8));
            }
        }

      g_file_set_contents_full (path, (const char *) copy, (gssize) length,
                                G_FILE_SET_CONTENTS_NONE, 0600, &error);
      g_assert_no_error (error);

      lines = ah_plugin_lint (path, &error);
      if (lines != NULL)
        {
          g_assert_no_error (error);
          for (guint i = 0; lines[i] != NULL; i++)
            {
              g_assert_cmpuint (strlen (lines[i]), >, 0);
              g_assert_null (strchr (lines[i], '\n'));
              g_assert_true (g_utf8_validate (lines[i], -1, NULL));
            }
          n_linted++;
        }
      else
        {
          g_assert_nonnull (error);
          g_assert_true (error->domain == AH_PLUGIN_ERROR);
          g_assert_true (error->code == AH_PLUGIN_ERROR_NOT_ELF
                         || error->code == AH_PLUGIN_ERROR_LOAD);
          g_assert_true (g_str_has_prefix (error->message, path));
          g_assert_null (strchr (error->message, '\n'));
          n_refused++;
        }
    }

  /* Both ways were taken, or the mutations never reached the parser. */
  g_assert_cmpuint (n_linted, >, 100);
  g_assert_cmpuint (n_refused, >, 100);
}

int
main (int argc, char *argv[])
{
  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);

  for (gsize i = 0; i < G_N_ELEMENTS (lint_cases); i++)
    {
      g_autofree char *test_path = g_strconcat ("/elf/lint/fixture/", lint_cases[i].name, NULL);

      g_test_add_data_func (test_path, &lint_cases[i], test_elf_lint_fixture);
    }
  g_test_add_func ("/elf/fixtures/load", test_elf_fixtures_load);
  g_test_add_func ("/elf/lint/shipped", test_elf_lint_shipped);
  g_test_add_func ("/elf/lint/loader-fixtures", test_elf_lint_loader_fixtures);
  g_test_add_func ("/elf/lint/stripped", test_elf_lint_stripped);
  g_test_add_func ("/elf/lint/relocated-slots", test_elf_lint_relocated_slots);

  g_test_add_func ("/elf/lint/error/missing", test_elf_lint_missing);
  g_test_add_func ("/elf/lint/error/not-elf", test_elf_lint_not_elf);
  g_test_add_func ("/elf/lint/error/not-regular", test_elf_lint_not_regular);
  g_test_add_func ("/elf/lint/error/too-large", test_elf_lint_too_large);
  g_test_add_func ("/elf/lint/error/executable", test_elf_lint_executable);
  g_test_add_func ("/elf/lint/error/truncated", test_elf_lint_truncated);
  for (gsize i = 0; i < G_N_ELEMENTS (damage_cases); i++)
    {
      g_autofree char *test_path = g_strconcat ("/elf/lint/error/damaged/",
                                                damage_cases[i].name, NULL);

      g_test_add_data_func (test_path, &damage_cases[i], test_elf_lint_damaged);
    }

  g_test_add_data_func ("/elf/lint/fuzz/constructor", "constructor", test_elf_lint_fuzz);
  g_test_add_data_func ("/elf/lint/fuzz/unique", "unique", test_elf_lint_fuzz);

  return g_test_run ();
}
