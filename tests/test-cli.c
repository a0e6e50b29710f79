/* End-to-end tests of the agenthost command: each test runs the built
 * binary ($AGENTHOST) as a subprocess and checks its exit status, stdout
 * and stderr, as a user or a script would see them.
 *
 * SPDX-License-Identifier: MIT
 */
#include <agenthost/agenthost.h>
#include <gio/gio.h>

#include <glib/gstdio.h>
#include <link.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

/* What one finished run of the command left behind. */
typedef struct {
  int   status;       /* exit status; the test fails if it died by a signal */
  char *out;
  char *err;
} CliResult;

static void
cli_result_clear (CliResult *result)
{
  g_clear_pointer (&result->out, g_free);
  g_clear_pointer (&result->err, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (CliResult, cli_result_clear)

static const char *
agenthost_path (void)
{
  const char *path = g_getenv ("AGENTHOST");

  g_assert_nonnull (path);
  return path;
}

static char *
test_plugins_dir (void)
{
  return g_test_build_filename (G_TEST_BUILT, "plugins", NULL);
}

static char *
fixture_path (const char *name)
{
  return g_test_build_filename (G_TEST_DIST, "cli", name, NULL);
}

/* A launcher whose children find the shipped plugins and the test
 * plugins by bare name, as AGENTHOST_PLUGIN_PATH allows. */
static GSubprocessLauncher *
cli_launcher_new (GSubprocessFlags flags)
{
  GSubprocessLauncher *launcher = g_subprocess_launcher_new (flags);
  g_autofree char *plugins = test_plugins_dir ();
  const char *shipped = g_getenv ("AGENTHOST_PLUGIN_PATH");
  g_autofree char *search_path = shipped != NULL
    ? g_strconcat (shipped, ":", plugins, NULL) : g_strdup (plugins);

  g_subprocess_launcher_setenv (launcher, "AGENTHOST_PLUGIN_PATH", search_path, TRUE);
  /* G_TEST_OPTION_ISOLATE_DIRS points the variable at /dev/null and
   * gives this process a directory of its own: the children share it,
   * where hosts write their pid files and `reload` finds them. */
  g_subprocess_launcher_setenv (launcher, "XDG_RUNTIME_DIR", g_get_user_runtime_dir (), TRUE);
  /* The command's own debug output is only wanted where a test asks. */
  g_subprocess_launcher_unsetenv (launcher, "G_MESSAGES_DEBUG");
  return launcher;
}

static GPtrArray *
cli_argv_new (const char *first_arg, va_list args)
{
  GPtrArray *argv = g_ptr_array_new ();
  const char *arg;

  g_ptr_array_add (argv, (gpointer) agenthost_path ());
  for (arg = first_arg; arg != NULL; arg = va_arg (args, const char *))
    g_ptr_array_add (argv, (gpointer) arg);
  g_ptr_array_add (argv, NULL);
  return argv;
}

static void
assert_exited (GSubprocess *process)
{
  if (!g_subprocess_get_if_exited (process))
    g_error ("agenthost was killed by signal %d", g_subprocess_get_term_sig (process));
}

/* Runs agenthost with the NULL-terminated arguments to the end. */
G_GNUC_NULL_TERMINATED
static void
cli_run (CliResult *result, const char *first_arg, ...)
{
  g_autoptr(GSubprocessLauncher) launcher = cli_launcher_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE
                                                              | G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_autoptr(GPtrArray) argv = NULL;
  g_autoptr(GSubprocess) process = NULL;
  g_autoptr(GError) error = NULL;
  va_list args;

  va_start (args, first_arg);
  argv = cli_argv_new (first_arg, args);
  va_end (args);

  process = g_subprocess_launcher_spawnv (launcher, (const char * const *) argv->pdata, &error);
  g_assert_no_error (error);
  g_subprocess_communicate_utf8 (process, NULL, NULL, &result->out, &result->err, &error);
  g_assert_no_error (error);
  assert_exited (process);
  result->status = g_subprocess_get_exit_status (process);
}

static guint
count_lines (const char *text)
{
  guint n = 0;

  for (const char *p = text; *p != '\0'; p++)
    if (*p == '\n')
      n++;
  return n;
}

/* A place for files a test writes; G_TEST_OPTION_ISOLATE_DIRS makes it
 * private to the test and removes it afterwards. */
static char *
scratch_path (const char *name)
{
  const char *dir = g_get_user_cache_dir ();

  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  return g_build_filename (dir, name, NULL);
}

/* GLib has no JSON parser and the project adds no dependency: this checks
 * the shape textually. One object, brackets balanced outside strings, no
 * raw control characters in strings. */
static void
assert_json_object (const char *text)
{
  g_autofree char *trimmed = g_strstrip (g_strdup (text));
  g_autoptr(GString) stack = g_string_new (NULL);
  gboolean in_string = FALSE;

  g_assert_true (g_str_has_prefix (trimmed, "{"));
  g_assert_true (g_str_has_suffix (trimmed, "}"));
  for (const char *p = trimmed; *p != '\0'; p++)
    {
      if (in_string)
        {
          g_assert_cmpint ((guchar) *p, >=, 0x20);
          if (*p == '\\')
            {
              p++;
              g_assert_cmpint (*p, !=, '\0');
            }
          else if (*p == '"')
            in_string = FALSE;
          continue;
        }
      switch (*p)
        {
        case '"':
          in_string = TRUE;
          break;
        case '{':
        case '[':
          g_string_append_c (stack, *p);
          break;
        case '}':
        case ']':
          g_assert_cmpuint (stack->len, >, 0);
          g_assert_cmpint (stack->str[stack->len - 1], ==, *p == '}' ? '{' : '[');
          g_string_truncate (stack, stack->len - 1);
          /* The one object closes at the very end, not before. */
          g_assert_true (stack->len > 0 || p[1] == '\0');
          break;
        default:
          break;
        }
    }
  g_assert_false (in_string);
  g_assert_cmpuint (stack->len, ==, 0);
}

static void
assert_json_summary (const char *text)
{
  assert_json_object (text);
  g_assert_nonnull (strstr (text, "\"messages\""));
  g_assert_nonnull (strstr (text, "\"accepted\""));
  g_assert_nonnull (strstr (text, "\"delivered\""));
  g_assert_nonnull (strstr (text, "\"dead_lettered\""));
  g_assert_nonnull (strstr (text, "\"failed\""));
  g_assert_nonnull (strstr (text, "\"per_type\""));
}

/* ---- top level --------------------------------------------------------- */

static void
test_cli_version (void)
{
  g_auto(CliResult) result = { 0 };

  g_test_summary ("--version prints the release and the plugin ABI on stdout");
  cli_run (&result, "--version", NULL);
  g_assert_cmpint (result.status, ==, 0);
  g_assert_cmpstr (result.out, ==, "agenthost " AH_VERSION_STRING " (plugin ABI 1.3)\n");
  g_assert_cmpstr (result.err, ==, "");
}

static void
test_cli_help_main (void)
{
  g_auto(CliResult) result = { 0 };
  const char * const expected[] = {
    "Usage:", "run [MANIFEST]", "validate FILE...", "inspect PLUGIN.so...", "new-plugin NAME [DIR]",
    "reload [NAME]", "help [COMMAND]", "--version", "Exit status:", "130",
  };

  g_test_summary ("--help lists every command and the exit statuses");
  cli_run (&result, "--help", NULL);
  g_assert_cmpint (result.status, ==, 0);
  g_assert_cmpstr (result.err, ==, "");
  for (gsize i = 0; i < G_N_ELEMENTS (expected); i++)
    g_assert_nonnull (strstr (result.out, expected[i]));

  /* "help" alone is the same text. */
  {
    g_auto(CliResult) help = { 0 };

    cli_run (&help, "help", NULL);
    g_assert_cmpint (help.status, ==, 0);
    g_assert_cmpstr (help.out, ==, result.out);
  }
}

static void
test_cli_help_command (void)
{
  g_auto(CliResult) via_help = { 0 };
  g_auto(CliResult) via_option = { 0 };
  const char * const expected[] = {
    "agenthost run [OPTION", "[MANIFEST]", "--json", "--timeout", "--verbose", "--quiet",
    "--watch", "watch_debounce_ms", "SIGHUP", "SIGINT", "Exit status:",
  };

  g_test_summary ("'help run' and 'run --help' print the same help of the command");
  cli_run (&via_help, "help", "run", NULL);
  cli_run (&via_option, "run", "--help", NULL);
  g_assert_cmpint (via_help.status, ==, 0);
  g_assert_cmpint (via_option.status, ==, 0);
  g_assert_cmpstr (via_help.out, ==, via_option.out);
  for (gsize i = 0; i < G_N_ELEMENTS (expected); i++)
    g_assert_nonnull (strstr (via_help.out, expected[i]));

  {
    g_auto(CliResult) validate = { 0 };
    g_auto(CliResult) inspect = { 0 };

    cli_run (&validate, "validate", "-h", NULL);
    g_assert_cmpint (validate.status, ==, 0);
    g_assert_nonnull (strstr (validate.out, "agenthost validate [OPTION"));
    cli_run (&inspect, "help", "inspect", NULL);
    g_assert_cmpint (inspect.status, ==, 0);
    g_assert_nonnull (strstr (inspect.out, "agenthost inspect [OPTION"));
    g_assert_nonnull (strstr (inspect.out, "warning: PATH: "));
  }
}

static void
test_cli_help_new_plugin (void)
{
  g_auto(CliResult) via_help = { 0 };
  g_auto(CliResult) via_option = { 0 };
  const char * const expected[] = {
    "agenthost new-plugin [OPTION", "] NAME [DIR]\n", "./NAME", "must not exist or be empty",
    "meson.build",
    "pkg-config", "tests/test-NAME.c", "manifest.yaml", "README.md", "meson test -C build",
    "agenthost run DIR/manifest.yaml", "at most 64 bytes", "Exit status:",
  };

  g_test_summary ("'help new-plugin' and 'new-plugin --help' say what is written, where, and the NAME rule");
  cli_run (&via_help, "help", "new-plugin", NULL);
  cli_run (&via_option, "new-plugin", "--help", NULL);
  g_assert_cmpint (via_help.status, ==, 0);
  g_assert_cmpint (via_option.status, ==, 0);
  g_assert_cmpstr (via_help.err, ==, "");
  g_assert_cmpstr (via_help.out, ==, via_option.out);
  for (gsize i = 0; i < G_N_ELEMENTS (expected); i++)
    g_assert_nonnull (strstr (via_help.out, expected[i]));
}

typedef struct {
  const char *path;
  const char *args[4];
  const char *stderr_contains[3];
} UsageCase;

static const UsageCase usage_cases[] = {
  { "no-command", { NULL }, { "Usage: agenthost COMMAND", "--help" } },
  { "unknown-command", { "frobnicate", NULL },
    { "agenthost: unknown command 'frobnicate'\n", "Try 'agenthost --help'" } },
  { "typo", { "valdate", "x.yaml", NULL },
    { "unknown command 'valdate'", "Did you mean 'validate'?" } },
  { "unknown-option", { "--frobnicate", NULL }, { "unknown option '--frobnicate'", "--help" } },
  { "run-bad-option", { "run", "--bogus", NULL },
    { "agenthost run: ", "--bogus", "Try 'agenthost run --help'" } },
  { "run-two-manifests", { "run", "a.yaml", "b.yaml", NULL }, { "at most one MANIFEST" } },
  { "run-timeout-text", { "run", "--timeout", "soon", NULL },
    { "--timeout: 'soon' is not a number of seconds" } },
  { "run-timeout-zero", { "run", "--timeout", "0", NULL }, { "greater than 0" } },
  { "run-timeout-huge", { "run", "--timeout", "1e12", NULL }, { "at most 4294967" } },
  { "run-json-missing", { "run", "--json", NULL }, { "agenthost run: ", "--json" } },
  { "run-json-no-dir", { "run", "--json", "/nonexistent-agenthost-dir/summary.json", NULL },
    { "--json: cannot write into directory '/nonexistent-agenthost-dir' (no such directory)" } },
  { "validate-no-file", { "validate", NULL }, { "expected at least one FILE" } },
  { "inspect-no-file", { "inspect", NULL }, { "expected at least one PLUGIN.so" } },
  { "help-unknown", { "help", "frobnicate", NULL }, { "unknown command 'frobnicate'" } },
  { "new-plugin-no-name", { "new-plugin", NULL },
    { "agenthost new-plugin: expected a NAME\n", "Try 'agenthost new-plugin --help'" } },
  { "new-plugin-extra", { "new-plugin", "a", "b", "c" },
    { "agenthost new-plugin: expected a NAME and at most one DIR\n" } },
  { "new-plugin-bad-option", { "new-plugin", "--force", "a", NULL },
    { "agenthost new-plugin: ", "--force", "Try 'agenthost new-plugin --help'" } },
  { "new-plugin-bad-name", { "new-plugin", "Hello-World", "/nonexistent-agenthost-dir/x", NULL },
    { "agenthost new-plugin: 'Hello-World' is not a valid plugin name: a lowercase letter, "
      "then lowercase letters, digits or '_', at most 64 bytes\n" } },
  { "new-plugin-typo", { "new-plugn", "a", NULL }, { "Did you mean 'new-plugin'?" } },
  { "version-extra", { "--version", "now", NULL }, { "--version takes no argument" } },
  { "reload-two-names", { "reload", "a", "b", NULL }, { "agenthost reload: expected at most one NAME\n" } },
  { "reload-bad-name", { "reload", "../x", NULL },
    { "agenthost reload: '../x' is not a system name: 1 to 64 characters of A-Z a-z 0-9 _ . -\n",
      "Try 'agenthost reload --help'" } },
  { "reload-bad-option", { "reload", "--all", NULL }, { "agenthost reload: ", "--all" } },
};

static void
test_cli_usage_error (gconstpointer data)
{
  const UsageCase *usage = data;
  g_auto(CliResult) result = { 0 };

  g_test_summary ("A usage error exits 2 with a message and a hint on stderr, nothing on stdout");
  cli_run (&result, usage->args[0], usage->args[1], usage->args[2], usage->args[3], NULL);
  g_assert_cmpint (result.status, ==, 2);
  g_assert_cmpstr (result.out, ==, "");
  for (gsize i = 0; i < G_N_ELEMENTS (usage->stderr_contains); i++)
    if (usage->stderr_contains[i] != NULL)
      g_assert_nonnull (strstr (result.err, usage->stderr_contains[i]));
}

/* ---- validate ---------------------------------------------------------- */

static void
test_cli_validate_ok (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *manifest = fixture_path ("echo-forever.yaml");
  g_autofree char *expected = g_strdup_printf ("%s: ok (1 agent type, 2 agents)\n", manifest);

  g_test_summary ("validate prints one ok line with the counts for a good manifest");
  cli_run (&result, "validate", manifest, NULL);
  g_assert_cmpint (result.status, ==, 0);
  g_assert_cmpstr (result.out, ==, expected);
  g_assert_cmpstr (result.err, ==, "");
}

typedef struct {
  const char *fixture;
  const char *message;   /* what follows the fixture's path */
} InvalidManifestCase;

static const InvalidManifestCase invalid_manifest_cases[] = {
  { "pool-size-zero.yaml",
    ":6:16: error: 'pool_size' must be an integer between 1 and 10000000, got 0" },
  { "unknown-key.yaml",
    ":6:5: error: unknown key 'replicas' in agent type 'echo' "
    "(expected plugin, pool_size, prewarm, pool, autoscale, supervision, subscribe, config)" },
};

static void
test_cli_validate_invalid (gconstpointer data)
{
  const InvalidManifestCase *invalid = data;
  g_auto(CliResult) result = { 0 };
  g_autofree char *manifest = fixture_path (invalid->fixture);
  g_autofree char *expected = g_strconcat (manifest, invalid->message, "\n", NULL);

  g_test_summary ("An invalid manifest exits 3 with its one error line, as the parser wrote it");
  cli_run (&result, "validate", manifest, NULL);
  g_assert_cmpint (result.status, ==, 3);
  g_assert_cmpstr (result.out, ==, "");
  g_assert_cmpstr (result.err, ==, expected);
}

static void
test_cli_validate_not_found (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *manifest = scratch_path ("absent.yaml");

  g_test_summary ("A manifest that does not exist is an invalid manifest (3), named on stderr");
  cli_run (&result, "validate", manifest, NULL);
  g_assert_cmpint (result.status, ==, 3);
  g_assert_cmpuint (count_lines (result.err), ==, 1);
  g_assert_true (g_str_has_prefix (result.err, manifest));
}

typedef struct {
  const char *fixture;
  const char *stderr_contains[3];
} PluginFailureCase;

static const PluginFailureCase plugin_failure_cases[] = {
  { "missing-plugin.yaml", { ":6:13: error: agent type 'ghost': ", "no-such-plugin" } },
  { "broken-plugin.yaml", { ":7:13: error: agent type 'future': ", "abi-major.so", "ABI 2.0" } },
};

static void
test_cli_validate_plugin_failure (gconstpointer data)
{
  const PluginFailureCase *failure = data;
  g_auto(CliResult) result = { 0 };
  g_autofree char *manifest = fixture_path (failure->fixture);

  g_test_summary ("A manifest whose plugin is missing or broken exits 4, naming the plugin");
  cli_run (&result, "validate", manifest, NULL);
  g_assert_cmpint (result.status, ==, 4);
  g_assert_cmpstr (result.out, ==, "");
  g_assert_cmpuint (count_lines (result.err), ==, 1);
  g_assert_true (g_str_has_prefix (result.err, manifest));
  for (gsize i = 0; i < G_N_ELEMENTS (failure->stderr_contains); i++)
    if (failure->stderr_contains[i] != NULL)
      g_assert_nonnull (strstr (result.err, failure->stderr_contains[i]));
}

static void
test_cli_validate_several (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *good = fixture_path ("echo-forever.yaml");
  g_autofree char *plugin_bad = fixture_path ("missing-plugin.yaml");
  g_autofree char *manifest_bad = fixture_path ("unknown-key.yaml");
  g_autofree char *expected_out = g_strdup_printf ("%s: ok (1 agent type, 2 agents)\n", good);

  g_test_summary ("validate checks every file after a bad one; the status is the first bad file's");
  cli_run (&result, "validate", plugin_bad, good, manifest_bad, NULL);
  g_assert_cmpint (result.status, ==, 4);
  g_assert_cmpstr (result.out, ==, expected_out);
  g_assert_cmpuint (count_lines (result.err), ==, 2);
  g_assert_nonnull (strstr (result.err, "no-such-plugin"));
  g_assert_nonnull (strstr (result.err, "unknown key 'replicas'"));
}

/* ---- inspect ----------------------------------------------------------- */

static void
test_cli_inspect_good (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *plugins = test_plugins_dir ();
  g_autofree char *good = g_build_filename (plugins, "good.so", NULL);
  const char * const hooks[] = {
    "agent_init", "agent_finalize", "handle_batch", "state_snapshot", "state_restore",
  };

  g_test_summary ("inspect describes a plugin: its name and every hook");
  cli_run (&result, "inspect", good, NULL);
  g_assert_cmpint (result.status, ==, 0);
  g_assert_cmpstr (result.err, ==, "");
  g_assert_nonnull (strstr (result.out, "good"));
  g_assert_nonnull (strstr (result.out, good));
  for (gsize i = 0; i < G_N_ELEMENTS (hooks); i++)
    g_assert_nonnull (strstr (result.out, hooks[i]));
}

static void
test_cli_inspect_shipped (void)
{
  g_auto(CliResult) result = { 0 };
  const char *shipped = g_getenv ("AGENTHOST_PLUGIN_PATH");
  g_autofree char *echo = NULL;
  g_autofree char *reporter = NULL;

  g_test_summary ("inspect takes several files and describes each");
  g_assert_nonnull (shipped);
  echo = g_build_filename (shipped, "echo.so", NULL);
  reporter = g_build_filename (shipped, "reporter.so", NULL);
  cli_run (&result, "inspect", echo, reporter, NULL);
  g_assert_cmpint (result.status, ==, 0);
  g_assert_cmpstr (result.err, ==, "");
  g_assert_nonnull (strstr (result.out, echo));
  g_assert_nonnull (strstr (result.out, reporter));
  /* One blank line between two descriptions. */
  g_assert_nonnull (strstr (result.out, "\n\n"));
}

static char *
elf_fixture_path (const char *name)
{
  g_autofree char *file = g_strconcat ("elf-", name, ".so", NULL);
  char *path = g_test_build_filename (G_TEST_BUILT, "plugins-elf", file, NULL);

  /* Built by tests/plugins-elf/ with everything else before the tests run. */
  if (!g_file_test (path, G_FILE_TEST_IS_REGULAR))
    g_error ("%s is missing: build every target before running test-cli", path);
  return path;
}

static void
test_cli_inspect_warnings (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *constructor = elf_fixture_path ("constructor");
  g_autofree char *clean = elf_fixture_path ("clean");
  g_autofree char *prefix = g_strdup_printf ("warning: %s: constructor ", constructor);
  g_auto(GStrv) lines = NULL;

  g_test_summary ("inspect warns on stderr about a constructor, one 'warning: PATH: ...' line per "
                  "finding, still describes the plugin and exits 0; a clean plugin gets no warning");
  cli_run (&result, "inspect", constructor, clean, NULL);
  g_assert_cmpint (result.status, ==, 0);

  lines = g_strsplit (result.err, "\n", -1);
  g_assert_cmpuint (g_strv_length (lines), >=, 2);
  g_assert_true (g_str_has_prefix (lines[0], prefix));
  g_assert_nonnull (strstr (lines[0], "runs on every load"));
  /* Every line a warning about the constructor's file, none about the clean one. */
  for (guint i = 0; lines[i] != NULL && *lines[i] != '\0'; i++)
    {
      g_autofree char *file_prefix = g_strdup_printf ("warning: %s: ", constructor);

      g_assert_true (g_str_has_prefix (lines[i], file_prefix));
    }
  g_assert_null (strstr (result.err, clean));

  /* Both described, in order. */
  g_assert_nonnull (strstr (result.out, constructor));
  g_assert_nonnull (strstr (result.out, clean));
  g_assert_true (strstr (result.out, constructor) < strstr (result.out, clean));
}

static void
test_cli_inspect_warnings_and_error (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *tls = elf_fixture_path ("tls");
  g_autofree char *absent = scratch_path ("absent.so");
  g_autofree char *tls_prefix = g_strdup_printf ("warning: %s: ", tls);
  g_autofree char *absent_warning = g_strdup_printf ("warning: %s", absent);
  g_autofree char *absent_error = g_strdup_printf ("\n%s: ", absent);

  g_test_summary ("Warnings do not change the status: a file that does not load still makes it 4, "
                  "and is reported once, as an error");
  cli_run (&result, "inspect", tls, absent, NULL);
  g_assert_cmpint (result.status, ==, 4);
  g_assert_true (g_str_has_prefix (result.err, tls_prefix));
  g_assert_nonnull (strstr (result.err, "uses thread-local storage"));
  g_assert_null (strstr (result.err, absent_warning));
  g_assert_nonnull (strstr (result.err, absent_error));
  g_assert_nonnull (strstr (result.out, tls));
}

static void
test_cli_inspect_garbage (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *garbage = scratch_path ("garbage.so");
  g_autofree char *empty = scratch_path ("empty.so");
  g_autoptr(GError) error = NULL;
  guint8 bytes[4096];
  g_autofree char *expected_garbage = NULL;

  g_test_summary ("inspect of files that are not ELF exits 4 with 'not an ELF file' for each");
  for (gsize i = 0; i < sizeof bytes; i++)
    bytes[i] = (guint8) g_test_rand_int_range (0, 256);
  bytes[0] = 'G';   /* never the ELF magic, whatever the random bytes */
  g_file_set_contents (garbage, (const char *) bytes, sizeof bytes, &error);
  g_assert_no_error (error);
  g_file_set_contents (empty, "", 0, &error);
  g_assert_no_error (error);

  cli_run (&result, "inspect", garbage, empty, NULL);
  g_assert_cmpint (result.status, ==, 4);
  g_assert_cmpstr (result.out, ==, "");
  g_assert_cmpuint (count_lines (result.err), ==, 2);
  expected_garbage = g_strdup_printf ("%s: not an ELF file", garbage);
  g_assert_true (g_str_has_prefix (result.err, expected_garbage));
  g_assert_nonnull (strstr (result.err, empty));
}

static void
test_cli_inspect_missing (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *absent = scratch_path ("absent.so");

  g_test_summary ("inspect of a file that does not exist exits 4 and names it");
  cli_run (&result, "inspect", absent, NULL);
  g_assert_cmpint (result.status, ==, 4);
  g_assert_cmpuint (count_lines (result.err), ==, 1);
  g_assert_true (g_str_has_prefix (result.err, absent));
}

/* ---- run ---------------------------------------------------------------- */

static void
assert_text_summary (const char *out, const char *system_name)
{
  g_autofree char *header = g_strdup_printf ("'%s' ran ", system_name);

  g_assert_nonnull (strstr (out, header));
  g_assert_nonnull (strstr (out, " delivered"));
  g_assert_nonnull (strstr (out, " failed"));
  g_assert_nonnull (strstr (out, " dead-lettered"));
}

static void
test_cli_run_default (void)
{
  g_auto(CliResult) result = { 0 };

  g_test_summary ("run without a manifest runs the built-in default system to its end, exit 0");
  cli_run (&result, "run", NULL);
  g_assert_cmpint (result.status, ==, 0);
  assert_text_summary (result.out, "wordcount-demo");
  /* The reporter's own report, proof the agents did their work. */
  g_assert_nonnull (strstr (result.out, "validated: "));
  g_assert_nonnull (strstr (result.err, "agenthost: running 'wordcount-demo': 4 agent types, 20 agents, pre-warmed in "));
  g_assert_nonnull (strstr (result.err, " ms (Ctrl-C to stop)\n"));
}

static void
test_cli_run_json_file (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *json_path = scratch_path ("summary.json");
  g_autofree char *json = NULL;
  g_autoptr(GError) error = NULL;

  g_test_summary ("run --json FILE writes the JSON summary to FILE, the text one still on stdout");
  cli_run (&result, "run", "--json", json_path, NULL);
  g_assert_cmpint (result.status, ==, 0);
  assert_text_summary (result.out, "wordcount-demo");
  g_file_get_contents (json_path, &json, NULL, &error);
  g_assert_no_error (error);
  assert_json_summary (json);
  g_assert_nonnull (strstr (json, "\"wordcount-demo\""));
}

static void
test_cli_run_json_stdout (void)
{
  g_auto(CliResult) result = { 0 };

  g_test_summary ("run --json - prints only the JSON document on stdout: no text summary, agents' output on stderr");
  cli_run (&result, "run", "--json", "-", NULL);
  g_assert_cmpint (result.status, ==, 0);
  assert_json_summary (result.out);
  g_assert_null (strstr (result.out, "validated: "));
  g_assert_nonnull (strstr (result.err, "validated: "));
}

static void
test_cli_run_quiet (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *json_path = scratch_path ("quiet.json");
  g_autofree char *json = NULL;
  g_autoptr(GError) error = NULL;

  g_test_summary ("run -q prints no text summary; --json is still written");
  cli_run (&result, "run", "-q", "--json", json_path, NULL);
  g_assert_cmpint (result.status, ==, 0);
  g_assert_null (strstr (result.out, " delivered"));
  g_assert_nonnull (strstr (result.err, "agenthost: running "));
  g_file_get_contents (json_path, &json, NULL, &error);
  g_assert_no_error (error);
  assert_json_summary (json);
}

static void
test_cli_run_verbose (void)
{
  g_auto(CliResult) quiet = { 0 };
  g_auto(CliResult) verbose = { 0 };
  g_autofree char *manifest = fixture_path ("echo-forever.yaml");

  g_test_summary ("run -v shows debug messages of the agenthost domain on stderr, without -v there are none");
  cli_run (&quiet, "run", "--timeout", "0.05", manifest, NULL);
  cli_run (&verbose, "run", "-v", "--timeout", "0.05", manifest, NULL);
  g_assert_cmpint (quiet.status, ==, 0);
  g_assert_cmpint (verbose.status, ==, 0);
  g_assert_null (strstr (quiet.err, "agenthost-DEBUG"));
  g_assert_nonnull (strstr (verbose.err, "agenthost-DEBUG"));
  g_assert_nonnull (strstr (verbose.err, "loaded manifest "));
  /* Debug output never mixes into the summary on stdout. */
  g_assert_null (strstr (verbose.out, "DEBUG"));
}

static void
test_cli_run_invalid_manifest (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *manifest = fixture_path ("unknown-key.yaml");

  g_test_summary ("run of an invalid manifest exits 3 with the parser's error line");
  cli_run (&result, "run", manifest, NULL);
  g_assert_cmpint (result.status, ==, 3);
  g_assert_cmpstr (result.out, ==, "");
  g_assert_cmpuint (count_lines (result.err), ==, 1);
  g_assert_true (g_str_has_prefix (result.err, manifest));
}

static void
test_cli_run_plugin_failure (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *manifest = fixture_path ("broken-plugin.yaml");

  g_test_summary ("run of a manifest whose plugin does not load exits 4, naming the plugin");
  cli_run (&result, "run", manifest, NULL);
  g_assert_cmpint (result.status, ==, 4);
  g_assert_cmpstr (result.out, ==, "");
  g_assert_cmpuint (count_lines (result.err), ==, 1);
  g_assert_true (g_str_has_prefix (result.err, manifest));
  g_assert_nonnull (strstr (result.err, "abi-major.so"));
}

static void
test_cli_config_error (gconstpointer data)
{
  const char *command = data;
  g_auto(CliResult) result = { 0 };
  g_autofree char *manifest = fixture_path ("config-out-of-range.yaml");
  g_autofree char *expected = g_strdup_printf ("%s:9:14: error: agent type 'schema': config 'count' "
                                               "must be an integer between 1 and 10, got '11'\n",
                                               manifest);

  g_test_summary ("A config its plugin's schema refuses is an invalid manifest: run and validate "
                  "exit 3 with the one error line, not 4 as for a plugin that does not load");
  cli_run (&result, command, manifest, NULL);
  g_assert_cmpint (result.status, ==, 3);
  g_assert_cmpstr (result.out, ==, "");
  g_assert_cmpuint (count_lines (result.err), ==, 1);
  g_assert_cmpstr (result.err, ==, expected);
}

static void
test_cli_run_init_fails (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *manifest = fixture_path ("init-fails.yaml");

  g_test_summary ("run exits 1 when an agent's init refuses to start, with the agent's reason");
  cli_run (&result, "run", manifest, NULL);
  g_assert_cmpint (result.status, ==, 1);
  g_assert_cmpstr (result.out, ==, "");
  g_assert_true (g_str_has_prefix (result.err, "agenthost: "));
  g_assert_nonnull (strstr (result.err, "init failed: refusing to start (test)"));
  g_assert_null (strstr (result.err, "agenthost: running"));
}

/* A run whose stderr the test reads line by line while it goes on, its
 * stdout going to a file so the child can never block on a full pipe. */
typedef struct {
  GSubprocess      *process;
  GDataInputStream *err;
  GString          *err_seen;
  char             *out_path;
} LiveRun;

G_GNUC_NULL_TERMINATED
static void
live_run_start (LiveRun *live, const char *first_arg, ...)
{
  g_autoptr(GSubprocessLauncher) launcher = cli_launcher_new (G_SUBPROCESS_FLAGS_STDERR_PIPE);
  g_autoptr(GPtrArray) argv = NULL;
  g_autoptr(GError) error = NULL;
  va_list args;

  va_start (args, first_arg);
  argv = cli_argv_new (first_arg, args);
  va_end (args);

  live->out_path = scratch_path ("live-stdout.txt");
  g_subprocess_launcher_set_stdout_file_path (launcher, live->out_path);
  live->process = g_subprocess_launcher_spawnv (launcher, (const char * const *) argv->pdata, &error);
  g_assert_no_error (error);
  live->err = g_data_input_stream_new (g_subprocess_get_stderr_pipe (live->process));
  live->err_seen = g_string_new (NULL);
}

/* Reads stderr until a line containing @text; fails the test if the
 * process ends first. */
static void
live_run_wait_for_line (LiveRun *live, const char *text)
{
  for (;;)
    {
      g_autoptr(GError) error = NULL;
      g_autofree char *line = g_data_input_stream_read_line_utf8 (live->err, NULL, NULL, &error);

      g_assert_no_error (error);
      if (line == NULL)
        g_error ("agenthost ended before printing '%s'; its stderr:\n%s", text, live->err_seen->str);
      g_string_append_printf (live->err_seen, "%s\n", line);
      if (strstr (line, text) != NULL)
        return;
    }
}

/* Reads the rest of stderr, waits for the exit; returns the status. */
static int
live_run_finish (LiveRun *live, char **ret_out)
{
  g_autoptr(GError) error = NULL;
  char *line;
  int status;

  while ((line = g_data_input_stream_read_line_utf8 (live->err, NULL, NULL, &error)) != NULL)
    {
      g_string_append_printf (live->err_seen, "%s\n", line);
      g_free (line);
    }
  g_assert_no_error (error);
  g_subprocess_wait (live->process, NULL, &error);
  g_assert_no_error (error);
  assert_exited (live->process);
  status = g_subprocess_get_exit_status (live->process);

  g_file_get_contents (live->out_path, ret_out, NULL, &error);
  g_assert_no_error (error);

  g_clear_object (&live->err);
  g_clear_object (&live->process);
  g_free (live->out_path);
  return status;
}

static void
test_cli_run_agent_stop (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *manifest = fixture_path ("agent-stop.yaml");

  g_test_summary ("run exits with the code an agent gave ah_context_request_stop, after the summary");
  cli_run (&result, "run", manifest, NULL);
  g_assert_cmpint (result.status, ==, 42);
  g_assert_nonnull (strstr (result.out, "stopped by agent request, exit code 42"));
}

/* ---- supervision ------------------------------------------------------ */

/* The text of the JSON object that starts at @anchor in @json, up to its
 * balanced closing brace. The summaries' names are [a-z0-9_-], so no
 * brace hides in a string there. */
static char *
json_object_at (const char *json, const char *anchor)
{
  const char *start = strstr (json, anchor);
  guint depth = 0;

  g_assert_nonnull (start);
  start = strchr (start, '{');
  g_assert_nonnull (start);
  for (const char *p = start; *p != '\0'; p++)
    {
      if (*p == '{')
        depth++;
      else if (*p == '}' && --depth == 0)
        return g_strndup (start, (gsize) (p - start + 1));
    }
  g_error ("unbalanced JSON object at '%s'", anchor);
}

/* The unsigned integer of "KEY": in @object. */
static guint64
json_uint (const char *object, const char *key)
{
  g_autofree char *pattern = g_strdup_printf ("\"%s\": ", key);
  const char *at = strstr (object, pattern);
  char *end = NULL;
  guint64 value;

  g_assert_nonnull (at);
  at += strlen (pattern);
  value = g_ascii_strtoull (at, &end, 10);
  g_assert_true (end != at);
  return value;
}

static void
assert_account_exact (const char *json)
{
  g_autofree char *messages = json_object_at (json, "\"messages\": {");

  g_assert_cmpuint (json_uint (messages, "in_flight"), ==, 0);
  g_assert_cmpuint (json_uint (messages, "accepted"), ==,
                    json_uint (messages, "delivered") + json_uint (messages, "dead_lettered")
                    + json_uint (messages, "failed"));
}

static char *
shipped_manifest_path (const char *name)
{
  return g_test_build_filename (G_TEST_DIST, "..", "manifests", name, NULL);
}

static void
test_cli_run_supervision (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *manifest = shipped_manifest_path ("supervision.yaml");
  g_autofree char *worker = NULL;

  g_test_summary ("manifests/supervision.yaml runs to its end with exit 0: workers failing on "
                  "purpose were restarted, their batches retried, the watchdog reported the slow "
                  "calls, every message is accounted for and every task came back");
  cli_run (&result, "run", "--json", "-", manifest, NULL);
  g_assert_cmpint (result.status, ==, 0);
  assert_json_summary (result.out);
  assert_account_exact (result.out);
  worker = json_object_at (result.out, "{\"name\": \"worker\"");
  g_assert_cmpuint (json_uint (worker, "restarted"), >, 0);
  g_assert_cmpuint (json_uint (worker, "retried"), >, 0);
  g_assert_cmpuint (json_uint (worker, "deadline_overruns"), >, 0);
  g_assert_cmpuint (json_uint (worker, "failed_messages"), ==, 0);
  g_assert_nonnull (strstr (worker, "\"stopped\": false"));
  g_assert_nonnull (strstr (worker, "\"success_rate\": 1.000"));
  g_assert_nonnull (strstr (result.err, "flaky: 200 of 200 tasks came back (0 duplicates, 0 malformed)\n"));
  g_assert_nonnull (strstr (result.err, "watchdog: worker agent "));
}

static void
test_cli_run_supervision_text (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *manifest = shipped_manifest_path ("supervision.yaml");

  g_test_summary ("The text summary of manifests/supervision.yaml has the success rate and a "
                  "supervision line for the workers: failures, restarts, retries, watchdog reports");
  cli_run (&result, "run", manifest, NULL);
  g_assert_cmpint (result.status, ==, 0);
  assert_text_summary (result.out, "supervision-demo");
  g_assert_nonnull (strstr (result.out, "  success     100.00% "));
  g_assert_nonnull (strstr (result.out, "\n  supervision worker: "));
  g_assert_nonnull (strstr (result.out, " messages retried, 0 dead-lettered after a failure, "));
  g_assert_nonnull (strstr (result.out, " watchdog report"));
  /* The producer saw no failure: it gets no line. */
  g_assert_null (strstr (result.out, "supervision producer"));
}

static void
test_cli_run_budget_required (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *manifest = fixture_path ("budget-exhausted-required.yaml");

  g_test_summary ("A required type stopped by its restart budget ends the run with exit 1, "
                  "the summary naming the type and why");
  cli_run (&result, "run", manifest, NULL);
  g_assert_cmpint (result.status, ==, 1);
  g_assert_nonnull (strstr (result.out, "'cli-budget-required' ran "));
  g_assert_nonnull (strstr (result.out, " stopped by supervision, exit code 1\n"));
  g_assert_nonnull (strstr (result.out, "\n  why         required agent type 'doomed' stopped: "
                                        "more than 2 restarts within 60000 ms (its budget); "
                                        "last failure: agent "));
  g_assert_nonnull (strstr (result.out, "\n  supervision doomed: "));
  g_assert_nonnull (strstr (result.out, "; stopped: restart budget exhausted\n"));
  g_assert_nonnull (strstr (result.err, "agent type 'doomed' stopped: more than 2 restarts"));
  g_assert_nonnull (strstr (result.err, "; it is required, so the run ends"));
}

static void
test_cli_run_budget_not_required (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *manifest = fixture_path ("budget-exhausted.yaml");
  g_autofree char *doomed = NULL;
  g_autofree char *producer = NULL;

  g_test_summary ("A type that is not required, stopped by its restart budget, does not end "
                  "the run: exit 0, the type reported stopped, the account still exact");
  cli_run (&result, "run", "--json", "-", manifest, NULL);
  g_assert_cmpint (result.status, ==, 0);
  assert_json_summary (result.out);
  assert_account_exact (result.out);
  g_assert_nonnull (strstr (result.out, "\"stopped_by\": \"idle\""));
  g_assert_nonnull (strstr (result.out, "\"exit_code\": 0,"));
  doomed = json_object_at (result.out, "{\"name\": \"doomed\"");
  g_assert_nonnull (strstr (doomed, "\"stopped\": true"));
  g_assert_cmpuint (json_uint (doomed, "restarted"), ==, 2);
  g_assert_cmpuint (json_uint (doomed, "failed"), >, 2);
  producer = json_object_at (result.out, "{\"name\": \"producer\"");
  g_assert_nonnull (strstr (producer, "\"stopped\": false"));
  g_assert_nonnull (strstr (result.err, "agent type 'doomed' stopped: more than 2 restarts"));
  g_assert_null (strstr (result.err, "so the run ends"));
}

static void
test_cli_run_sigterm (void)
{
  LiveRun live = { 0 };
  g_autofree char *manifest = fixture_path ("echo-forever.yaml");
  g_autofree char *out = NULL;
  g_autoptr(GString) err = NULL;
  int status;

  g_test_summary ("SIGTERM stops a run that would go on forever: it drains, prints the summary, exits 0");
  /* The --timeout is only a safety net: should the test fail before its
   * SIGTERM, the child still ends by itself. */
  live_run_start (&live, "run", "--timeout", "60", manifest, NULL);
  live_run_wait_for_line (&live, "agenthost: running 'echo-forever': 1 agent type, 2 agents");
  g_subprocess_send_signal (live.process, SIGTERM);
  status = live_run_finish (&live, &out);
  err = live.err_seen;

  g_assert_cmpint (status, ==, 0);
  g_assert_nonnull (strstr (err->str, "agenthost: SIGTERM received, stopping"));
  g_assert_null (strstr (err->str, "--timeout of"));
  assert_text_summary (out, "echo-forever");
  g_assert_nonnull (strstr (out, "stopped by host request"));
}

static void
test_cli_run_timeout (void)
{
  g_auto(CliResult) result = { 0 };
  g_autofree char *manifest = fixture_path ("echo-forever.yaml");
  gint64 start = g_get_monotonic_time ();
  gint64 elapsed_ms;

  g_test_summary ("--timeout 1 ends a run that would go on forever after about a second, exit 0");
  cli_run (&result, "run", "--timeout", "1", manifest, NULL);
  elapsed_ms = (g_get_monotonic_time () - start) / 1000;
  g_assert_cmpint (result.status, ==, 0);
  g_assert_nonnull (strstr (result.err, "agenthost: --timeout of 1 s reached, stopping\n"));
  assert_text_summary (result.out, "echo-forever");
  g_assert_cmpint (elapsed_ms, >=, 1000);
}

static void
test_cli_run_sigint_twice (void)
{
  LiveRun live = { 0 };
  g_autofree char *manifest = fixture_path ("slow-start.yaml");
  g_autofree char *out = NULL;
  g_autoptr(GString) err = NULL;
  int status;

  g_test_summary ("A second SIGINT while the run is stopping exits at once with 130");
  /* -v shows when the run thread begins pre-warming (the signal handlers
   * are in place by then), which takes seconds here: both signals land
   * while the host is busy. */
  live_run_start (&live, "run", "-v", manifest, NULL);
  live_run_wait_for_line (&live, "pre-warming the pools of 'cli-slow-start'");
  g_subprocess_send_signal (live.process, SIGINT);
  /* Two pending signals of one kind merge into one: the second is sent
   * only once the first has been handled. */
  live_run_wait_for_line (&live, "agenthost: SIGINT received, stopping");
  g_subprocess_send_signal (live.process, SIGINT);
  status = live_run_finish (&live, &out);
  err = live.err_seen;

  g_assert_cmpint (status, ==, 130);
  g_assert_nonnull (strstr (err->str, "agenthost: second SIGINT, exiting at once\n"));
  g_assert_null (strstr (err->str, "agenthost: running"));
  g_assert_cmpstr (out, ==, "");
}

/* ---- reload and watch ------------------------------------------------- */

/* Where a host named @name keeps its pid file: G_TEST_OPTION_ISOLATE_DIRS
 * gives each test its own XDG_RUNTIME_DIR, which the children inherit. */
static char *
pid_file_of (const char *name)
{
  g_autofree char *file_name = g_strconcat (name, ".pid", NULL);

  return g_build_filename (g_get_user_runtime_dir (), "agenthost", file_name, NULL);
}

/* This process's start time, the second field of a pid file. */
static guint64
own_start_time (void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *stat = NULL;
  g_auto(GStrv) fields = NULL;

  g_file_get_contents ("/proc/self/stat", &stat, NULL, &error);
  g_assert_no_error (error);
  fields = g_strsplit (strrchr (stat, ')') + 2, " ", -1);
  g_assert_cmpuint (g_strv_length (fields), >, 19);
  return g_ascii_strtoull (fields[19], NULL, 10);
}

/* A pid file naming this test process: should agenthost reload signal
 * it, SIGHUP's default action ends the test, which then fails. */
static void
write_own_pid_file (const char *name, guint64 start_time)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *path = pid_file_of (name);
  g_autofree char *dir = g_path_get_dirname (path);
  g_autofree char *contents = g_strdup_printf ("%d %" G_GUINT64_FORMAT "\n",
                                               (int) getpid (), start_time);

  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  g_file_set_contents (path, contents, -1, &error);
  g_assert_no_error (error);
}

static void
test_cli_reload_running (void)
{
  LiveRun live = { 0 };
  g_autofree char *manifest = fixture_path ("echo-forever.yaml");
  g_autofree char *pid_path = pid_file_of ("echo-forever");
  g_autofree char *pid_contents = NULL;
  g_autofree char *expected_out = NULL;
  g_autofree char *out = NULL;
  g_autoptr(GError) error = NULL;
  const char *pid;
  int status;

  g_test_summary ("'agenthost reload NAME' (and without NAME, the only host) makes a "
                  "running host reload its changed plugins: with none changed it logs "
                  "'no plugin changed'; the host's pid file names it while it runs and "
                  "is gone after");
  live_run_start (&live, "run", "--timeout", "60", manifest, NULL);
  live_run_wait_for_line (&live, "agenthost: running 'echo-forever'");
  pid = g_subprocess_get_identifier (live.process);
  expected_out = g_strdup_printf ("sent SIGHUP to 'echo-forever' (pid %s): it reloads the "
                                  "plugins whose files changed, and logs what it did\n", pid);

  g_file_get_contents (pid_path, &pid_contents, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (g_str_has_prefix (pid_contents, pid));
  g_assert_cmpint (pid_contents[strlen (pid)], ==, ' ');

  {
    g_auto(CliResult) result = { 0 };

    cli_run (&result, "reload", "echo-forever", NULL);
    g_assert_cmpint (result.status, ==, 0);
    g_assert_cmpstr (result.out, ==, expected_out);
    g_assert_cmpstr (result.err, ==, "");
    live_run_wait_for_line (&live, "agenthost: SIGHUP received, reloading the plugins whose "
                                   "files changed");
    live_run_wait_for_line (&live, "agenthost: reload: no plugin changed");
  }
  {
    g_auto(CliResult) result = { 0 };

    cli_run (&result, "reload", NULL);
    g_assert_cmpint (result.status, ==, 0);
    g_assert_cmpstr (result.out, ==, expected_out);
    live_run_wait_for_line (&live, "agenthost: reload: no plugin changed");
  }

  g_subprocess_send_signal (live.process, SIGTERM);
  status = live_run_finish (&live, &out);
  g_assert_cmpint (status, ==, 0);
  assert_text_summary (out, "echo-forever");
  g_assert_false (g_file_test (pid_path, G_FILE_TEST_EXISTS));
  g_string_free (live.err_seen, TRUE);
}

/* A system of one plugin file of its own, seqcheck version 1, in a
 * scratch directory: the tests replace that file. */
static char *
reload_system_new (const char *extra_yaml, char **ret_plugin)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *v1 = g_test_build_filename (G_TEST_BUILT, "plugins-reload",
                                               "seqcheck-v1.so", NULL);
  g_autofree char *bytes = NULL;
  g_autofree char *yaml = NULL;
  char *manifest = scratch_path ("hot.yaml");
  gsize size = 0;

  g_file_get_contents (v1, &bytes, &size, &error);
  g_assert_no_error (error);
  *ret_plugin = scratch_path ("seqcheck.so");
  g_file_set_contents (*ret_plugin, bytes, (gssize) size, &error);
  g_assert_no_error (error);

  yaml = g_strdup_printf ("name: hot\n"
                          "%s"
                          "agents:\n"
                          "  seq:\n"
                          "    plugin: ./seqcheck.so\n"
                          "    pool_size: 3\n"
                          "    subscribe: [seq.in]\n", extra_yaml);
  g_file_set_contents (manifest, yaml, -1, &error);
  g_assert_no_error (error);
  return manifest;
}

/* Where the last byte the dynamic loader maps from @bytes ends: a file
 * cut before it is a plugin still being written. (Debug sections follow
 * the loaded ones: half a file may well be loadable.) */
static gsize
elf_loaded_end (const char *bytes, gsize size)
{
  ElfW(Ehdr) header;
  gsize end = 0;

  g_assert_cmpuint (size, >=, sizeof header);
  memcpy (&header, bytes, sizeof header);
  g_assert_cmpuint (header.e_phoff + (gsize) header.e_phnum * sizeof (ElfW(Phdr)), <=, size);
  for (guint i = 0; i < header.e_phnum; i++)
    {
      ElfW(Phdr) segment;

      memcpy (&segment, bytes + header.e_phoff + i * sizeof segment, sizeof segment);
      if (segment.p_type == PT_LOAD)
        end = MAX (end, (gsize) (segment.p_offset + segment.p_filesz));
    }
  g_assert_cmpuint (end, >, 0);
  g_assert_cmpuint (end, <=, size);
  return end;
}

/* As a build does: the new file written beside the old one, then moved
 * over it. */
static void
replace_plugin (const char *plugin, const char *version_file)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *source = g_test_build_filename (G_TEST_BUILT, "plugins-reload",
                                                   version_file, NULL);
  g_autofree char *temp = g_strconcat (plugin, ".tmp", NULL);
  g_autofree char *bytes = NULL;
  gsize size = 0;

  g_file_get_contents (source, &bytes, &size, &error);
  g_assert_no_error (error);
  g_file_set_contents (temp, bytes, (gssize) size, &error);
  g_assert_no_error (error);
  g_assert_cmpint (g_rename (temp, plugin), ==, 0);
}

static void
test_cli_reload_changed (void)
{
  LiveRun live = { 0 };
  g_autoptr(GError) error = NULL;
  g_autofree char *plugin = NULL;
  g_autofree char *manifest = reload_system_new ("", &plugin);
  g_autofree char *out = NULL;
  int status;

  g_test_summary ("After the plugin file is rebuilt, 'agenthost reload' switches the "
                  "running agents to the new version and says so; garbage written over "
                  "the file is refused, logged, and the run goes on");
  live_run_start (&live, "run", "--timeout", "60", manifest, NULL);
  live_run_wait_for_line (&live, "agenthost: running 'hot': 1 agent type, 3 agents");

  replace_plugin (plugin, "seqcheck-v2.so");
  {
    g_auto(CliResult) result = { 0 };

    cli_run (&result, "reload", "hot", NULL);
    g_assert_cmpint (result.status, ==, 0);
    live_run_wait_for_line (&live, ": version 2.0.0, 3 agents switched in ");
    live_run_wait_for_line (&live, "agenthost: reload: 1 plugin file reloaded");
  }

  g_file_set_contents (plugin, "garbage, not a plugin", -1, &error);
  g_assert_no_error (error);
  {
    g_auto(CliResult) result = { 0 };

    cli_run (&result, "reload", "hot", NULL);
    g_assert_cmpint (result.status, ==, 0);
    live_run_wait_for_line (&live, "agenthost: reload failed, the running version stays: ");
    g_assert_nonnull (strstr (live.err_seen->str, "seqcheck.so: not an ELF file\n"));
  }

  g_subprocess_send_signal (live.process, SIGTERM);
  status = live_run_finish (&live, &out);
  g_assert_cmpint (status, ==, 0);
  assert_text_summary (out, "hot");
  g_string_free (live.err_seen, TRUE);
}

typedef struct {
  const char *extra_yaml;   /* manifest keys */
  const char *option;       /* a run option, or NULL */
  const char *watching;     /* the line that says the watch is in place */
} WatchCase;

static const WatchCase watch_cases[] = {
  { "", "--watch",
    "agenthost: watching the plugin files: one that changes is reloaded after 200 ms "
    "without a write" },
  { "watch: true\nwatch_debounce_ms: 50\n", NULL,
    "agenthost: watching the plugin files: one that changes is reloaded after 50 ms "
    "without a write" },
};

static void
test_cli_run_watch (gconstpointer data)
{
  const WatchCase *tc = data;
  LiveRun live = { 0 };
  g_autoptr(GError) error = NULL;
  g_autofree char *plugin = NULL;
  g_autofree char *manifest = reload_system_new (tc->extra_yaml, &plugin);
  g_autofree char *out = NULL;
  int status;

  g_test_summary ("With --watch or the manifest's watch: true, a rebuilt plugin file is "
                  "reloaded without being asked, once; a file being written is refused, "
                  "the run goes on");
  if (tc->option != NULL)
    live_run_start (&live, "run", "--timeout", "60", tc->option, manifest, NULL);
  else
    live_run_start (&live, "run", "--timeout", "60", manifest, NULL);
  live_run_wait_for_line (&live, "agenthost: running 'hot'");
  live_run_wait_for_line (&live, tc->watching);

  replace_plugin (plugin, "seqcheck-v2.so");
  live_run_wait_for_line (&live, ": version 2.0.0, 3 agents switched in ");

  /* A plugin cut short inside its code, left so: the watch reloads it,
   * the loader refuses it. */
  {
    g_autofree char *v1 = g_test_build_filename (G_TEST_BUILT, "plugins-reload",
                                                 "seqcheck-v1.so", NULL);
    g_autofree char *bytes = NULL;
    gsize size = 0;

    g_file_get_contents (v1, &bytes, &size, &error);
    g_assert_no_error (error);
    g_file_set_contents (plugin, bytes, (gssize) elf_loaded_end (bytes, size) - 1, &error);
    g_assert_no_error (error);
  }
  live_run_wait_for_line (&live, "refused, the running version stays: ");

  g_subprocess_send_signal (live.process, SIGTERM);
  status = live_run_finish (&live, &out);
  g_assert_cmpint (status, ==, 0);
  assert_text_summary (out, "hot");
  /* Reloaded once, refused once: nothing more came of two writes. */
  g_assert_null (strstr (strstr (live.err_seen->str, " agents switched in ") + 1,
                         " agents switched in "));
  g_string_free (live.err_seen, TRUE);
}

static void
test_cli_reload_none (void)
{
  g_auto(CliResult) by_default = { 0 };
  g_auto(CliResult) by_name = { 0 };
  g_autofree char *dir = g_build_filename (g_get_user_runtime_dir (), "agenthost", NULL);
  g_autofree char *expected_default = g_strdup_printf (
      "agenthost: no system is running (no live pid file in %s)\n", dir);
  g_autofree char *expected_name = g_strdup_printf (
      "agenthost: no system named 'absent' is running (no %s/absent.pid)\n", dir);

  g_test_summary ("reload with no host running, or none of that name, exits 1 and says so");
  cli_run (&by_default, "reload", NULL);
  g_assert_cmpint (by_default.status, ==, 1);
  g_assert_cmpstr (by_default.out, ==, "");
  g_assert_cmpstr (by_default.err, ==, expected_default);

  cli_run (&by_name, "reload", "absent", NULL);
  g_assert_cmpint (by_name.status, ==, 1);
  g_assert_cmpstr (by_name.err, ==, expected_name);
}

static void
test_cli_reload_stale (void)
{
  g_auto(CliResult) by_name = { 0 };
  g_auto(CliResult) by_default = { 0 };
  g_autofree char *path = pid_file_of ("gone");
  g_autofree char *expected = g_strdup_printf (
      "agenthost: no system named 'gone' is running (%s is stale: process %d is gone)\n",
      path, (int) getpid ());

  g_test_summary ("A pid file whose pid now belongs to another process (its start time "
                  "differs) is stale: nothing is signalled, reload exits 1");
  write_own_pid_file ("gone", own_start_time () + 1);

  cli_run (&by_name, "reload", "gone", NULL);
  g_assert_cmpint (by_name.status, ==, 1);
  g_assert_cmpstr (by_name.err, ==, expected);

  cli_run (&by_default, "reload", NULL);
  g_assert_cmpint (by_default.status, ==, 1);
  g_assert_nonnull (strstr (by_default.err, "agenthost: no system is running"));
}

static void
test_cli_reload_several (void)
{
  g_auto(CliResult) result = { 0 };
  guint64 start_time = own_start_time ();

  g_test_summary ("Without NAME, several running hosts are listed (stale ones left out) "
                  "and none is signalled: exit 2");
  write_own_pid_file ("beta", start_time);
  write_own_pid_file ("alpha", start_time);
  write_own_pid_file ("stale", start_time + 1);

  cli_run (&result, "reload", NULL);
  g_assert_cmpint (result.status, ==, 2);
  g_assert_cmpstr (result.out, ==, "");
  g_assert_cmpstr (result.err, ==,
                   "agenthost reload: 2 systems are running (alpha, beta): name one\n");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);

  g_test_add_func ("/cli/version/print", test_cli_version);
  g_test_add_func ("/cli/help/main", test_cli_help_main);
  g_test_add_func ("/cli/help/command", test_cli_help_command);
  g_test_add_func ("/cli/help/new-plugin", test_cli_help_new_plugin);
  for (gsize i = 0; i < G_N_ELEMENTS (usage_cases); i++)
    {
      g_autofree char *path = g_strdup_printf ("/cli/usage/%s", usage_cases[i].path);

      g_test_add_data_func (path, &usage_cases[i], test_cli_usage_error);
    }

  g_test_add_func ("/cli/validate/ok", test_cli_validate_ok);
  for (gsize i = 0; i < G_N_ELEMENTS (invalid_manifest_cases); i++)
    {
      g_autofree char *name = g_strndup (invalid_manifest_cases[i].fixture,
                                         strlen (invalid_manifest_cases[i].fixture) - strlen (".yaml"));
      g_autofree char *path = g_strdup_printf ("/cli/validate/invalid/%s", name);

      g_test_add_data_func (path, &invalid_manifest_cases[i], test_cli_validate_invalid);
    }
  g_test_add_func ("/cli/validate/not-found", test_cli_validate_not_found);
  for (gsize i = 0; i < G_N_ELEMENTS (plugin_failure_cases); i++)
    {
      g_autofree char *name = g_strndup (plugin_failure_cases[i].fixture,
                                         strlen (plugin_failure_cases[i].fixture) - strlen (".yaml"));
      g_autofree char *path = g_strdup_printf ("/cli/validate/%s", name);

      g_test_add_data_func (path, &plugin_failure_cases[i], test_cli_validate_plugin_failure);
    }
  g_test_add_func ("/cli/validate/several", test_cli_validate_several);

  g_test_add_func ("/cli/inspect/good", test_cli_inspect_good);
  g_test_add_func ("/cli/inspect/shipped", test_cli_inspect_shipped);
  g_test_add_func ("/cli/inspect/warnings", test_cli_inspect_warnings);
  g_test_add_func ("/cli/inspect/warnings-and-error", test_cli_inspect_warnings_and_error);
  g_test_add_func ("/cli/inspect/garbage", test_cli_inspect_garbage);
  g_test_add_func ("/cli/inspect/missing", test_cli_inspect_missing);

  g_test_add_func ("/cli/run/default", test_cli_run_default);
  g_test_add_func ("/cli/run/json-file", test_cli_run_json_file);
  g_test_add_func ("/cli/run/json-stdout", test_cli_run_json_stdout);
  g_test_add_func ("/cli/run/quiet", test_cli_run_quiet);
  g_test_add_func ("/cli/run/verbose", test_cli_run_verbose);
  g_test_add_func ("/cli/run/invalid-manifest", test_cli_run_invalid_manifest);
  g_test_add_func ("/cli/run/plugin-failure", test_cli_run_plugin_failure);
  g_test_add_data_func ("/cli/run/config-error", "run", test_cli_config_error);
  g_test_add_data_func ("/cli/validate/config-error", "validate", test_cli_config_error);
  g_test_add_func ("/cli/run/init-fails", test_cli_run_init_fails);
  g_test_add_func ("/cli/run/agent-stop", test_cli_run_agent_stop);
  g_test_add_func ("/cli/run/supervision/json", test_cli_run_supervision);
  g_test_add_func ("/cli/run/supervision/text", test_cli_run_supervision_text);
  g_test_add_func ("/cli/run/supervision/budget-required", test_cli_run_budget_required);
  g_test_add_func ("/cli/run/supervision/budget-not-required", test_cli_run_budget_not_required);
  g_test_add_func ("/cli/run/sigterm", test_cli_run_sigterm);
  g_test_add_func ("/cli/run/timeout", test_cli_run_timeout);
  g_test_add_func ("/cli/run/sigint-twice", test_cli_run_sigint_twice);
  g_test_add_data_func ("/cli/run/watch/option", &watch_cases[0], test_cli_run_watch);
  g_test_add_data_func ("/cli/run/watch/manifest", &watch_cases[1], test_cli_run_watch);

  g_test_add_func ("/cli/reload/running", test_cli_reload_running);
  g_test_add_func ("/cli/reload/changed", test_cli_reload_changed);
  g_test_add_func ("/cli/reload/none", test_cli_reload_none);
  g_test_add_func ("/cli/reload/stale", test_cli_reload_stale);
  g_test_add_func ("/cli/reload/several", test_cli_reload_several);

  return g_test_run ();
}
