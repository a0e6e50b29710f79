/* SPDX-License-Identifier: MIT */
/* The hello example, as the README runs it: the plugin alone in the test
 * harness, hello.yaml in the harness, and hello.yaml under `agenthost
 * run`. The plugin and its manifest are in EXAMPLE_BUILD_DIR (meson.build
 * copies the manifest beside the plugin). */
#include <agenthost/agenthost.h>

#include <stdio.h>
#include <string.h>

/* What the agents print with g_print() while a test captures it, so the
 * tests can check what a user would see. GTest prints its TAP lines, and
 * log messages as "# " comments, with g_print() too: those, and anything
 * outside a capture, go to stdout as usual. */
static GMutex printed_lock;
static GString *printed;

static void
capture_print (const char *text)
{
  g_mutex_lock (&printed_lock);
  if (printed != NULL && !g_str_has_prefix (text, "# "))
    g_string_append (printed, text);
  else
    {
      fputs (text, stdout);
      fflush (stdout);
    }
  g_mutex_unlock (&printed_lock);
}

static void
capture_begin (void)
{
  g_mutex_lock (&printed_lock);
  g_assert_null (printed);
  printed = g_string_new (NULL);
  g_mutex_unlock (&printed_lock);
}

/* Ends the capture: call it once the hosts are freed, since agents print
 * from their finalize hooks too. */
static char *
capture_end (void)
{
  char *text;

  g_mutex_lock (&printed_lock);
  text = g_string_free (g_steal_pointer (&printed), FALSE);
  g_mutex_unlock (&printed_lock);
  return text;
}

static void
assert_reply (AhTestHost *host,
              const char *subject,
              const char *payload,
              const char *expected)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) reply = ah_test_host_request (host, subject, payload, strlen (payload),
                                                  5000, &error);
  gsize size;
  gconstpointer data;

  g_assert_no_error (error);
  data = g_bytes_get_data (reply, &size);
  g_assert_cmpmem (data, size, expected, strlen (expected));
}

static void
test_hello_request_default (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;

  g_test_summary ("Without config, a request on hello is answered 'Hello, NAME!'");
  host = ah_test_host_new_for_plugin (EXAMPLE_BUILD_DIR "/hello.so", "hello", NULL, &error);
  g_assert_no_error (error);

  assert_reply (host, "hello", "Ada", "Hello, Ada!");
  assert_reply (host, "hello", "", "Hello, !");
  ah_test_host_run_until_idle (host);
  g_assert_cmpuint (ah_test_host_count (host, AH_TEST_CAPTURE_REPLIES, "hello"), ==, 2);
  g_assert_cmpuint (ah_test_host_count (host, AH_TEST_CAPTURE_PUBLISHED, NULL), ==, 0);
}

static void
test_hello_request_config (void)
{
  const char * const config[] = { "greeting=Good morning", NULL };
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;

  g_test_summary ("The greeting comes from the config's greeting key");
  host = ah_test_host_new_for_plugin (EXAMPLE_BUILD_DIR "/hello.so", "hello", config, &error);
  g_assert_no_error (error);

  assert_reply (host, "hello", "Grace", "Good morning, Grace!");
}

static void
test_hello_publish_prints (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;
  g_autofree char *text = NULL;

  g_test_summary ("A published message makes the agent print its greeting, and publish nothing");
  host = ah_test_host_new_for_plugin (EXAMPLE_BUILD_DIR "/hello.so", "hello", NULL, &error);
  g_assert_no_error (error);

  capture_begin ();
  ah_test_host_publish_string (host, "hello", "ignored");
  ah_test_host_run_until_idle (host);
  g_assert_cmpuint (ah_test_host_count (host, AH_TEST_CAPTURE_PUBLISHED, NULL), ==, 0);
  g_assert_cmpuint (ah_test_host_count (host, AH_TEST_CAPTURE_DEAD_LETTERS, NULL), ==, 0);
  g_clear_pointer (&host, ah_test_host_free);
  text = capture_end ();
  g_assert_cmpstr (text, ==, "Hello from agent 0 of type 'hello'\n");
}

static void
test_hello_manifest (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;
  g_autofree char *text = NULL;

  g_test_summary ("hello.yaml starts three agents that each greet once when the system starts, "
                  "and answer requests on hello");
  capture_begin ();
  host = ah_test_host_new_for_manifest (EXAMPLE_BUILD_DIR "/hello.yaml", &error);
  g_assert_no_error (error);
  assert_reply (host, "hello", "world", "Hello, world!");
  g_clear_pointer (&host, ah_test_host_free);
  text = capture_end ();

  /* Broadcast: every agent heard the start, in whatever order the
   * workers ran them; the request was answered, not printed. */
  for (guint i = 0; i < 3; i++)
    {
      g_autofree char *line = g_strdup_printf ("Hello from agent %u of type 'hello'\n", i);

      g_assert_nonnull (strstr (text, line));
    }
  g_assert_cmpuint (strlen (text), ==, 3 * strlen ("Hello from agent 0 of type 'hello'\n"));
}

static void
test_hello_run (void)
{
  const char *agenthost = g_getenv ("AGENTHOST");
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) run = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;

  g_test_summary ("`agenthost run hello.yaml` prints three greetings and exits 0 once idle");
  if (agenthost == NULL)
    {
      g_test_skip ("AGENTHOST is not set (meson test sets it)");
      return;
    }

  run = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error,
                          agenthost, "run", EXAMPLE_BUILD_DIR "/hello.yaml", NULL);
  g_assert_no_error (error);
  g_assert_true (g_subprocess_communicate_utf8 (run, NULL, NULL, &out, &err, &error));
  g_assert_no_error (error);
  g_assert_true (g_subprocess_get_if_exited (run));
  g_assert_cmpint (g_subprocess_get_exit_status (run), ==, 0);
  for (guint i = 0; i < 3; i++)
    {
      g_autofree char *line = g_strdup_printf ("Hello from agent %u of type 'hello'\n", i);

      g_assert_nonnull (strstr (out, line));
    }
  g_assert_nonnull (strstr (out, "stopped by idle, exit code 0"));
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_set_print_handler (capture_print);

  g_test_add_func ("/example/hello/request/default", test_hello_request_default);
  g_test_add_func ("/example/hello/request/config", test_hello_request_config);
  g_test_add_func ("/example/hello/publish/prints", test_hello_publish_prints);
  g_test_add_func ("/example/hello/manifest", test_hello_manifest);
  g_test_add_func ("/example/hello/run", test_hello_run);

  return g_test_run ();
}
