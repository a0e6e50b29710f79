/* Tests of `agenthost new-plugin`: the project it writes builds, passes
 * its own tests and runs - outside this tree, with meson, against this
 * build of agenthost found through pkg-config, as a plugin author's
 * project would - and bad names and occupied directories are refused
 * without writing anything.
 *
 * SPDX-License-Identifier: MIT
 */
#include <agenthost/agenthost.h>
#include <gio/gio.h>
#include <glib/gstdio.h>

#include <signal.h>
#include <string.h>
#include <sys/resource.h>

/* What one finished command left behind. */
typedef struct {
  int   status;
  char *out;
  char *err;
} CommandResult;

static void
command_result_clear (CommandResult *result)
{
  g_clear_pointer (&result->out, g_free);
  g_clear_pointer (&result->err, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (CommandResult, command_result_clear)

static const char *
agenthost_path (void)
{
  const char *path = g_getenv ("AGENTHOST");

  g_assert_nonnull (path);
  return path;
}

/* A directory of the test's own; G_TEST_OPTION_ISOLATE_DIRS makes it
 * private to the test and removes it, build trees included, afterwards. */
static char *
scratch_path (const char *name)
{
  const char *dir = g_get_user_cache_dir ();

  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  return g_build_filename (dir, name, NULL);
}

static GSubprocessLauncher *
launcher_new (const char *cwd)
{
  GSubprocessLauncher *launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE
                                                             | G_SUBPROCESS_FLAGS_STDERR_PIPE);

  if (cwd != NULL)
    g_subprocess_launcher_set_cwd (launcher, cwd);
  /* This test's own settings must not leak into the project's test run. */
  g_subprocess_launcher_unsetenv (launcher, "G_TEST_SRCDIR");
  g_subprocess_launcher_unsetenv (launcher, "G_TEST_BUILDDIR");
  g_subprocess_launcher_unsetenv (launcher, "G_MESSAGES_DEBUG");
  return launcher;
}

static void
launcher_run (GSubprocessLauncher *launcher, const char * const *argv, CommandResult *result)
{
  g_autoptr(GSubprocess) process = NULL;
  g_autoptr(GError) error = NULL;

  process = g_subprocess_launcher_spawnv (launcher, argv, &error);
  g_assert_no_error (error);
  g_subprocess_communicate_utf8 (process, NULL, NULL, &result->out, &result->err, &error);
  g_assert_no_error (error);
  if (!g_subprocess_get_if_exited (process))
    g_error ("%s was killed by signal %d", argv[0], g_subprocess_get_term_sig (process));
  result->status = g_subprocess_get_exit_status (process);
}

/* Runs a command to its end in @cwd (NULL: this one), failing the test
 * with its output if its status is not @expected_status. */
static void
run_expecting (const char * const *argv, const char *cwd, GSubprocessLauncher *launcher,
               int expected_status, CommandResult *result)
{
  g_autoptr(GSubprocessLauncher) own_launcher = NULL;

  if (launcher == NULL)
    launcher = own_launcher = launcher_new (cwd);
  launcher_run (launcher, argv, result);
  if (result->status != expected_status)
    {
      g_autofree char *command = g_strjoinv (" ", (char **) argv);

      g_error ("'%s' exited with %d, not %d\n--- stdout:\n%s\n--- stderr:\n%s", command,
               result->status, expected_status, result->out, result->err);
    }
}

static char *
read_file (const char *path)
{
  g_autoptr(GError) error = NULL;
  char *contents = NULL;

  g_file_get_contents (path, &contents, NULL, &error);
  g_assert_no_error (error);
  return contents;
}

/* The files new-plugin writes for NAME, relative to its directory. */
static GStrv
project_files_new (const char *name)
{
  GStrv files = g_new0 (char *, 6);

  files[0] = g_strconcat (name, ".c", NULL);
  files[1] = g_strdup ("meson.build");
  files[2] = g_strconcat ("tests/test-", name, ".c", NULL);
  files[3] = g_strdup ("manifest.yaml");
  files[4] = g_strdup ("README.md");
  return files;
}

static void
assert_project_written (const char *dir, const char *name, const char *out)
{
  g_auto(GStrv) files = project_files_new (name);
  const char * const placeholders[] = { "@NAME@", "@TYPE@", "@UPPER@", "@PAD@" };

  for (guint i = 0; files[i] != NULL; i++)
    {
      g_autofree char *path = g_build_filename (dir, files[i], NULL);
      g_autofree char *contents = read_file (path);

      /* Listed in the output, and every placeholder filled in. */
      g_assert_nonnull (strstr (out, path));
      for (gsize k = 0; k < G_N_ELEMENTS (placeholders); k++)
        g_assert_null (strstr (contents, placeholders[k]));
      g_assert_nonnull (strstr (contents, name));
    }
}

static gboolean
dir_is_absent_or_empty (const char *dir)
{
  g_autoptr(GDir) listing = g_dir_open (dir, 0, NULL);

  return listing == NULL || g_dir_read_name (listing) == NULL;
}

/* ---- the whole road: write, build, test, run -------------------------- */

static void
test_scaffold_build_test_run (void)
{
  g_autofree char *root = scratch_path ("work");
  g_autofree char *dir = g_build_filename (root, "projects", "greeter", NULL);
  g_autofree char *manifest = g_build_filename (dir, "manifest.yaml", NULL);
  g_autofree char *plugin = g_build_filename (dir, "build", "greeter.so", NULL);
  g_autofree char *pc_dir = g_test_build_filename (G_TEST_BUILT, "..", "meson-uninstalled", NULL);
  g_autofree char *pc_file = g_build_filename (pc_dir, "agenthost-uninstalled.pc", NULL);
  g_autofree char *lib_dir = g_path_get_dirname (agenthost_path ());
  g_autofree char *meson = g_find_program_in_path ("meson");
  g_autofree char *ninja = g_find_program_in_path ("ninja");
  g_autoptr(GSubprocessLauncher) project = NULL;

  g_test_summary ("new-plugin writes a project that meson sets up, builds and tests against this "
                  "build of agenthost, and whose manifest runs from another directory");
  if (meson == NULL || ninja == NULL)
    {
      g_test_skip (meson == NULL ? "meson is not on PATH" : "ninja is not on PATH");
      return;
    }
  g_assert_true (g_file_test (pc_file, G_FILE_TEST_IS_REGULAR));
  g_assert_cmpint (g_mkdir_with_parents (root, 0700), ==, 0);

  /* A DIR whose parents do not exist yet. */
  {
    g_auto(CommandResult) result = { 0 };
    const char *argv[] = { agenthost_path (), "new-plugin", "greeter", dir, NULL };
    g_autofree char *next = g_strdup_printf ("  cd %s\n", dir);

    run_expecting (argv, root, NULL, 0, &result);
    assert_project_written (dir, "greeter", result.out);
    g_assert_nonnull (strstr (result.out, next));
    g_assert_nonnull (strstr (result.out, "meson setup build && meson test -C build\n"));
    g_assert_cmpstr (result.err, ==, "");
  }

  /* The project's own commands, in its directory, with agenthost's build
   * tree standing in for an installed copy. */
  project = launcher_new (dir);
  g_subprocess_launcher_setenv (project, "PKG_CONFIG_PATH", pc_dir, TRUE);
  g_subprocess_launcher_setenv (project, "LD_LIBRARY_PATH", lib_dir, TRUE);
  {
    g_auto(CommandResult) result = { 0 };
    const char *argv[] = {
      meson, "setup", "build", "--werror",
#if defined (__SANITIZE_ADDRESS__)
      /* An uninstrumented program cannot load this sanitized library. */
      "-Db_sanitize=address,undefined",
#endif
      NULL
    };

    run_expecting (argv, NULL, project, 0, &result);
    g_assert_nonnull (strstr (result.out, "agenthost found: YES"));
  }
  {
    g_auto(CommandResult) result = { 0 };
    const char *argv[] = { meson, "test", "-C", "build", "--print-errorlogs", NULL };

    run_expecting (argv, NULL, project, 0, &result);
    g_assert_nonnull (strstr (result.out, "greeter"));
    g_assert_nonnull (strstr (result.out, "3 subtests passed"));
    g_assert_true (g_file_test (plugin, G_FILE_TEST_IS_REGULAR));
  }

  /* From the scratch root, not the project: the manifest's plugin path
   * is relative to the manifest. */
  {
    g_auto(CommandResult) result = { 0 };
    const char *argv[] = { agenthost_path (), "run", manifest, NULL };

    run_expecting (argv, root, NULL, 0, &result);
    g_assert_nonnull (strstr (result.out, "greeter agent 0: ready to say 'Hello'\n"));
    g_assert_nonnull (strstr (result.out, "greeter agent 1: ready to say 'Hello'\n"));
    g_assert_nonnull (strstr (result.out, "'greeter' ran "));
    g_assert_nonnull (strstr (result.out, "stopped by idle, exit code 0"));
  }
  {
    g_auto(CommandResult) result = { 0 };
    const char *argv[] = { agenthost_path (), "validate", manifest, NULL };
    g_autofree char *expected = g_strdup_printf ("%s: ok (1 agent type, 2 agents)\n", manifest);

    run_expecting (argv, root, NULL, 0, &result);
    g_assert_cmpstr (result.out, ==, expected);
  }
  /* The generated plugin is what a plugin should be: nothing for the ELF
   * checks to warn about, and its schema on show. */
  {
    g_auto(CommandResult) result = { 0 };
    const char *argv[] = { agenthost_path (), "inspect", plugin, NULL };

    run_expecting (argv, root, NULL, 0, &result);
    g_assert_cmpstr (result.err, ==, "");
    g_assert_nonnull (strstr (result.out, "greeting"));
    g_assert_nonnull (strstr (result.out, "Greets the names it receives"));
  }
}

/* ---- where it writes ------------------------------------------------------ */

static void
test_scaffold_default_dir (void)
{
  g_autofree char *root = scratch_path ("cwd");
  g_autofree char *dir = g_build_filename (root, "my_agent2", NULL);
  g_autofree char *source = g_build_filename (dir, "my_agent2.c", NULL);
  g_autofree char *contents = NULL;
  g_auto(CommandResult) result = { 0 };
  const char *argv[] = { agenthost_path (), "new-plugin", "my_agent2", NULL };

  g_test_summary ("Without DIR, new-plugin writes into ./NAME; names become C identifiers and types");
  g_assert_cmpint (g_mkdir_with_parents (root, 0700), ==, 0);
  run_expecting (argv, root, NULL, 0, &result);

  g_assert_true (g_str_has_prefix (result.out, "Created the plugin project 'my_agent2' in my_agent2:\n"));
  g_assert_nonnull (strstr (result.out, "  my_agent2/tests/test-my_agent2.c  "));
  g_assert_nonnull (strstr (result.out, "  cd my_agent2\n"));
  contents = read_file (source);
  g_assert_nonnull (strstr (contents, "} MyAgent2State;"));
  g_assert_nonnull (strstr (contents, "#define MY_AGENT2_SUBJECT_GREETED \"my_agent2.greeted\""));
  g_assert_nonnull (strstr (contents, "AH_PLUGIN_DEFINE (my_agent2,"));
}

static void
test_scaffold_empty_dir (void)
{
  g_autofree char *dir = scratch_path ("empty");
  g_auto(CommandResult) result = { 0 };
  const char *argv[] = { agenthost_path (), "new-plugin", "pinger", dir, NULL };

  g_test_summary ("An existing empty DIR is written into");
  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  run_expecting (argv, NULL, NULL, 0, &result);
  assert_project_written (dir, "pinger", result.out);
}

static void
test_scaffold_longest_name (void)
{
  g_autofree char *name = g_strnfill (64, 'a');
  g_autofree char *dir = scratch_path ("longest");
  g_auto(CommandResult) result = { 0 };
  const char *argv[] = { agenthost_path (), "new-plugin", name, dir, NULL };

  g_test_summary ("A name of exactly 64 bytes is accepted");
  run_expecting (argv, NULL, NULL, 0, &result);
  assert_project_written (dir, name, result.out);
}

/* ---- what it refuses ------------------------------------------------------ */

typedef struct {
  const char *path;   /* the test path's last part */
  const char *name;   /* NULL: 65 bytes, one over the limit */
} BadName;

static const BadName bad_names[] = {
  { "empty", "" },
  { "uppercase", "Greeter" },
  { "digit-first", "1greeter" },
  { "underscore-first", "_greeter" },
  { "dash", "greet-er" },
  { "dot", "greet.er" },
  { "space", "greet er" },
  { "slash", "a/b" },
  { "non-ascii", "gr\xc3\xbc\xc3\x9f" "er" },
  { "newline", "a\nb" },
  { "too-long", NULL },
};

static void
test_scaffold_bad_name (gconstpointer data)
{
  const BadName *bad = data;
  g_autofree char *too_long = g_strnfill (65, 'a');
  g_autofree char *dir = scratch_path ("bad-name");
  g_auto(CommandResult) result = { 0 };
  const char *argv[] = {
    agenthost_path (), "new-plugin", bad->name != NULL ? bad->name : too_long, dir, NULL
  };
  g_auto(GStrv) lines = NULL;

  g_test_summary ("A NAME that is not [a-z][a-z0-9_]* of at most 64 bytes is a usage error; nothing is written");
  run_expecting (argv, NULL, NULL, 2, &result);
  lines = g_strsplit (result.err, "\n", -1);
  g_assert_cmpstr (result.out, ==, "");
  g_assert_true (g_str_has_prefix (result.err, "agenthost new-plugin: '"));
  g_assert_nonnull (strstr (result.err, "' is not a valid plugin name: a lowercase letter, then "
                                        "lowercase letters, digits or '_', at most 64 bytes\n"));
  g_assert_nonnull (strstr (result.err, "Try 'agenthost new-plugin --help'"));
  /* The name is escaped: the message is one line, the hint the other. */
  g_assert_cmpuint (g_strv_length (lines), ==, 3);
  g_assert_cmpstr (lines[2], ==, "");
  g_assert_false (g_file_test (dir, G_FILE_TEST_EXISTS));
}

static void
test_scaffold_non_empty_dir (void)
{
  g_autofree char *dir = scratch_path ("occupied");
  g_autofree char *kept = g_build_filename (dir, "notes.txt", NULL);
  g_autofree char *expected = g_strdup_printf ("agenthost new-plugin: '%s' exists and is not empty; "
                                               "give a new or empty directory\n", dir);
  g_autofree char *contents = NULL;
  g_auto(CommandResult) result = { 0 };
  g_autoptr(GError) error = NULL;
  const char *argv[] = { agenthost_path (), "new-plugin", "greeter", dir, NULL };
  g_autoptr(GDir) listing = NULL;

  g_test_summary ("A DIR that holds anything is refused with status 2, and left as it was");
  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  g_file_set_contents (kept, "mine\n", -1, &error);
  g_assert_no_error (error);

  run_expecting (argv, NULL, NULL, 2, &result);
  g_assert_cmpstr (result.out, ==, "");
  g_assert_true (g_str_has_prefix (result.err, expected));

  contents = read_file (kept);
  g_assert_cmpstr (contents, ==, "mine\n");
  listing = g_dir_open (dir, 0, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (g_dir_read_name (listing), ==, "notes.txt");
  g_assert_null (g_dir_read_name (listing));
}

static void
test_scaffold_not_a_dir (void)
{
  g_autofree char *file = scratch_path ("a-file");
  g_autofree char *expected = g_strdup_printf ("agenthost new-plugin: '%s' exists and is not a directory\n", file);
  g_auto(CommandResult) result = { 0 };
  g_autoptr(GError) error = NULL;
  const char *argv[] = { agenthost_path (), "new-plugin", "greeter", file, NULL };

  g_test_summary ("A DIR that is a file is refused with status 2");
  g_file_set_contents (file, "", 0, &error);
  g_assert_no_error (error);
  run_expecting (argv, NULL, NULL, 2, &result);
  g_assert_cmpstr (result.out, ==, "");
  g_assert_true (g_str_has_prefix (result.err, expected));
}

static void
test_scaffold_under_a_file (void)
{
  g_autofree char *file = scratch_path ("plain");
  g_autofree char *dir = g_build_filename (file, "greeter", NULL);
  g_autofree char *expected = g_strdup_printf ("agenthost: cannot use '%s': Not a directory\n", dir);
  g_auto(CommandResult) result = { 0 };
  g_autoptr(GError) error = NULL;
  const char *argv[] = { agenthost_path (), "new-plugin", "greeter", dir, NULL };

  g_test_summary ("A DIR that cannot be made (a parent is a file) fails with status 1 and the reason");
  g_file_set_contents (file, "", 0, &error);
  g_assert_no_error (error);
  run_expecting (argv, NULL, NULL, 1, &result);
  g_assert_cmpstr (result.out, ==, "");
  g_assert_cmpstr (result.err, ==, expected);
}

/* In the child, before exec: files can grow to 100 bytes, and the
 * signal that would kill a write past that is ignored (ignored signals
 * stay ignored across exec), so the write fails with EFBIG instead. */
static void
limit_file_size (gpointer user_data)
{
  struct rlimit limit = { 100, 100 };

  setrlimit (RLIMIT_FSIZE, &limit);
  signal (SIGXFSZ, SIG_IGN);
}

static void
test_scaffold_write_fails (void)
{
  g_autofree char *root = scratch_path ("full");
  g_autofree char *dir = g_build_filename (root, "new", "greeter", NULL);
  g_autofree char *parent = g_build_filename (root, "new", NULL);
  g_autofree char *expected = g_strdup_printf ("agenthost: cannot write '%s/greeter.c': File too large\n", dir);
  g_autoptr(GSubprocessLauncher) launcher = launcher_new (NULL);
  g_auto(CommandResult) result = { 0 };
  const char *argv[] = { agenthost_path (), "new-plugin", "greeter", dir, NULL };

  g_test_summary ("When a file cannot be written, new-plugin exits 1 and removes what it had created");
  g_assert_cmpint (g_mkdir_with_parents (root, 0700), ==, 0);
  g_subprocess_launcher_set_child_setup (launcher, limit_file_size, NULL, NULL);
  run_expecting (argv, NULL, launcher, 1, &result);
  g_assert_cmpstr (result.out, ==, "");
  g_assert_cmpstr (result.err, ==, expected);
  /* Both directories it made are gone again; the one that was there stays. */
  g_assert_false (g_file_test (parent, G_FILE_TEST_EXISTS));
  g_assert_true (g_file_test (root, G_FILE_TEST_IS_DIR));
  g_assert_true (dir_is_absent_or_empty (root));
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);

  g_test_add_func ("/scaffold/new-plugin/build-test-run", test_scaffold_build_test_run);
  g_test_add_func ("/scaffold/new-plugin/default-dir", test_scaffold_default_dir);
  g_test_add_func ("/scaffold/new-plugin/empty-dir", test_scaffold_empty_dir);
  g_test_add_func ("/scaffold/new-plugin/longest-name", test_scaffold_longest_name);
  for (gsize i = 0; i < G_N_ELEMENTS (bad_names); i++)
    {
      g_autofree char *path = g_strdup_printf ("/scaffold/new-plugin/bad-name/%s", bad_names[i].path);

      g_test_add_data_func (path, &bad_names[i], test_scaffold_bad_name);
    }
  g_test_add_func ("/scaffold/new-plugin/non-empty-dir", test_scaffold_non_empty_dir);
  g_test_add_func ("/scaffold/new-plugin/not-a-dir", test_scaffold_not_a_dir);
  g_test_add_func ("/scaffold/new-plugin/under-a-file", test_scaffold_under_a_file);
  g_test_add_func ("/scaffold/new-plugin/write-fails", test_scaffold_write_fails);

  return g_test_run ();
}
