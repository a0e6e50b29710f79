/* SPDX-License-Identifier: MIT */
/* The shell example: the plugin alone in the test harness (output,
 * quoting without a shell, exit status, commands that do not start or do
 * not parse, the timeout and output limits), shell.yaml in the harness,
 * and shell.yaml under `agenthost run`. The plugin and its manifest are
 * in EXAMPLE_BUILD_DIR. */
#include <agenthost/agenthost.h>

#include <stdio.h>
#include <string.h>

#define SHELL_PLUGIN   EXAMPLE_BUILD_DIR "/shell.so"
#define SHELL_MANIFEST EXAMPLE_BUILD_DIR "/shell.yaml"

/* The agent prints each command ("$ COMMAND\nOUTPUT", one call) and
 * each status ("[STATUS]\n"). Output such as "ok" would read as TAP, so
 * what the agent prints is dropped; GTest's own lines go through. */
static void
drop_agent_print (const char *text)
{
  if (g_str_has_prefix (text, "$ ") || g_str_has_prefix (text, "["))
    return;
  fputs (text, stdout);
  fflush (stdout);
}

static AhTestHost *
shell_host_new (const char * const *config)
{
  g_autoptr(GError) error = NULL;
  AhTestHost *host = ah_test_host_new_for_plugin (SHELL_PLUGIN, "shell.run", config, &error);

  g_assert_no_error (error);
  g_assert_nonnull (host);
  return host;
}

/* Runs @command and returns the status line the agent published. */
static char *
run_command (AhTestHost *host,
             const char *command)
{
  ah_test_host_clear (host);
  ah_test_host_publish_string (host, "shell.run", command);
  ah_test_host_run_until_idle (host);
  g_assert_cmpuint (ah_test_host_count (host, AH_TEST_CAPTURE_PUBLISHED, "shell.status"), ==, 1);
  return ah_test_host_last_text (host, AH_TEST_CAPTURE_PUBLISHED, "shell.status");
}

static void
assert_output (AhTestHost *host,
               const char *expected)
{
  g_autofree char *output = ah_test_host_last_text (host, AH_TEST_CAPTURE_PUBLISHED,
                                                    "shell.output");

  g_assert_cmpstr (output, ==, expected);
}

static void
test_shell_output (void)
{
  g_autoptr(AhTestHost) host = shell_host_new (NULL);
  g_autofree char *status = NULL;

  g_test_summary ("A command's output is published on shell.output and its exit status on "
                  "shell.status");

  status = run_command (host, "echo hello world");
  g_assert_cmpstr (status, ==, "echo hello world: exit 0");
  assert_output (host, "hello world\n");
}

static void
test_shell_no_shell (void)
{
  g_autoptr(AhTestHost) host = shell_host_new (NULL);
  g_autofree char *status = NULL;

  g_test_summary ("Quotes group words, but nothing else a shell does happens: no variables, "
                  "no globs, no pipes");

  status = run_command (host, "printf '%s|' 'one word' \"two words\" three");
  g_assert_cmpstr (status, ==, "printf '%s|' 'one word' \"two words\" three: exit 0");
  assert_output (host, "one word|two words|three|");
  g_free (status);

  status = run_command (host, "echo $HOME * | cat");
  g_assert_cmpstr (status, ==, "echo $HOME * | cat: exit 0");
  assert_output (host, "$HOME * | cat\n");
}

static void
test_shell_exit_status (void)
{
  g_autoptr(AhTestHost) host = shell_host_new (NULL);
  g_autofree char *status = NULL;

  g_test_summary ("A failing command reports its exit code; without output, nothing is "
                  "published on shell.output");

  status = run_command (host, "false");
  g_assert_cmpstr (status, ==, "false: exit 1");
  g_assert_cmpuint (ah_test_host_count (host, AH_TEST_CAPTURE_PUBLISHED, "shell.output"), ==, 0);
}

static void
test_shell_not_started (void)
{
  const char *missing = "/nonexistent/no-such-program";
  g_autoptr(AhTestHost) host = shell_host_new (NULL);
  g_autoptr(GSubprocess) process = NULL;
  g_autoptr(GError) spawn_error = NULL;
  g_autoptr(GError) parse_error = NULL;
  g_autofree char *expected = NULL;
  g_autofree char *status = NULL;
  char **argv = NULL;

  g_test_summary ("A program that does not exist, and a line that does not parse, are "
                  "reported as failed with the reason");

  process = g_subprocess_new (G_SUBPROCESS_FLAGS_NONE, &spawn_error, missing, NULL);
  g_assert_null (process);
  status = run_command (host, missing);
  expected = g_strdup_printf ("%s: failed: %s", missing, spawn_error->message);
  g_assert_cmpstr (status, ==, expected);
  g_clear_pointer (&status, g_free);
  g_clear_pointer (&expected, g_free);

  g_assert_false (g_shell_parse_argv ("echo 'unterminated", NULL, &argv, &parse_error));
  status = run_command (host, "echo 'unterminated");
  expected = g_strdup_printf ("echo 'unterminated: failed: %s", parse_error->message);
  g_assert_cmpstr (status, ==, expected);
  g_assert_cmpuint (ah_test_host_count (host, AH_TEST_CAPTURE_PUBLISHED, "shell.output"), ==, 0);
}

static void
test_shell_limits (void)
{
  const char * const config[] = { "timeout_ms=300", "max_output=4", NULL };
  g_autoptr(AhTestHost) host = shell_host_new (config);
  g_autofree char *status = NULL;
  gint64 start;

  g_test_summary ("A command running past timeout_ms, or writing more than max_output "
                  "bytes, is killed and reported so; the output kept is published");

  start = g_get_monotonic_time ();
  status = run_command (host, "sleep 60");
  g_assert_cmpstr (status, ==, "sleep 60: killed: timed out after 300 ms");
  g_assert_cmpint (g_get_monotonic_time () - start, <, 30 * G_USEC_PER_SEC);
  g_clear_pointer (&status, g_free);

  status = run_command (host, "yes");
  g_assert_cmpstr (status, ==, "yes: killed: output over 4 bytes");
  assert_output (host, "y\ny\n");
}

static void
test_shell_concurrent (void)
{
  g_autoptr(AhTestHost) host = shell_host_new (NULL);
  g_autoptr(GPtrArray) statuses = NULL;

  g_test_summary ("Several commands run at once on the I/O threads; each status names its "
                  "own command");

  for (guint i = 0; i < 6; i++)
    {
      g_autofree char *command = g_strdup_printf ("echo %u", i);

      ah_test_host_publish_string (host, "shell.run", command);
    }
  ah_test_host_run_until_idle (host);
  statuses = ah_test_host_get_messages (host, AH_TEST_CAPTURE_PUBLISHED, "shell.status");
  g_assert_cmpuint (statuses->len, ==, 6);
  for (guint i = 0; i < 6; i++)
    {
      g_autofree char *expected = g_strdup_printf ("echo %u: exit 0", i);
      gboolean found = FALSE;

      for (guint j = 0; j < statuses->len && !found; j++)
        {
          AhTestMessage *message = g_ptr_array_index (statuses, j);
          gsize size;
          const char *data = g_bytes_get_data (message->data, &size);

          found = size == strlen (expected) && memcmp (data, expected, size) == 0;
        }
      if (!found)
        g_test_fail_printf ("no status \"%s\"", expected);
    }
}

static void
test_shell_manifest (void)
{
  static const char * const expected[] = {
    "echo hello from a subprocess: exit 0",
    "printf '%s|' 'one word' two: exit 0",
    "echo $HOME is not expanded: exit 0",
    "false: exit 1",
  };
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;
  g_autoptr(GPtrArray) statuses = NULL;

  g_test_summary ("shell.yaml runs its four commands when the system starts");

  host = ah_test_host_new_for_manifest (SHELL_MANIFEST, &error);
  g_assert_no_error (error);
  ah_test_host_run_until_idle (host);
  statuses = ah_test_host_get_messages (host, AH_TEST_CAPTURE_PUBLISHED, "shell.status");
  g_assert_cmpuint (statuses->len, ==, G_N_ELEMENTS (expected));
  for (guint i = 0; i < G_N_ELEMENTS (expected); i++)
    {
      gboolean found = FALSE;

      for (guint j = 0; j < statuses->len && !found; j++)
        {
          AhTestMessage *message = g_ptr_array_index (statuses, j);
          gsize size;
          const char *data = g_bytes_get_data (message->data, &size);

          found = size == strlen (expected[i]) && memcmp (data, expected[i], size) == 0;
        }
      if (!found)
        g_test_fail_printf ("no status \"%s\"", expected[i]);
    }
}

static void
test_shell_run (void)
{
  const char *agenthost = g_getenv ("AGENTHOST");
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) run = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;

  g_test_summary ("`agenthost run shell.yaml` prints each command's output and status and "
                  "exits 0 once idle");
  if (agenthost == NULL)
    {
      g_test_skip ("AGENTHOST is not set (meson test sets it)");
      return;
    }

  run = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error,
                          agenthost, "run", SHELL_MANIFEST, NULL);
  g_assert_no_error (error);
  g_assert_true (g_subprocess_communicate_utf8 (run, NULL, NULL, &out, &err, &error));
  g_assert_no_error (error);
  g_assert_true (g_subprocess_get_if_exited (run));
  g_assert_cmpint (g_subprocess_get_exit_status (run), ==, 0);
  g_assert_nonnull (strstr (out, "$ echo hello from a subprocess\nhello from a subprocess\n"));
  g_assert_nonnull (strstr (out, "$ printf '%s|' 'one word' two\none word|two|\n"));
  g_assert_nonnull (strstr (out, "[echo $HOME is not expanded: exit 0]\n"));
  g_assert_nonnull (strstr (out, "[false: exit 1]\n"));
  g_assert_nonnull (strstr (out, "stopped by idle, exit code 0"));
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_set_print_handler (drop_agent_print);

  g_test_add_func ("/example/shell/output", test_shell_output);
  g_test_add_func ("/example/shell/no-shell", test_shell_no_shell);
  g_test_add_func ("/example/shell/exit-status", test_shell_exit_status);
  g_test_add_func ("/example/shell/not-started", test_shell_not_started);
  g_test_add_func ("/example/shell/limits", test_shell_limits);
  g_test_add_func ("/example/shell/concurrent", test_shell_concurrent);
  g_test_add_func ("/example/shell/manifest", test_shell_manifest);
  g_test_add_func ("/example/shell/run", test_shell_run);

  return g_test_run ();
}
