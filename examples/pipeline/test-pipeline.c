/* SPDX-License-Identifier: MIT */
/* The pipeline example: pipeline.yaml's three types in the test harness,
 * each stage's own rules (the transform's refusal of bad input and of any
 * config, the source's repeat), and pipeline.yaml under `agenthost run`.
 * The plugins and the manifest are in EXAMPLE_BUILD_DIR. */
#include <agenthost/agenthost.h>

#include <stdio.h>
#include <string.h>

#define TRANSFORM_PLUGIN  EXAMPLE_BUILD_DIR "/transform.so"
#define PIPELINE_MANIFEST EXAMPLE_BUILD_DIR "/pipeline.yaml"

/* What the agents print with g_print() while a test captures it. GTest
 * prints its TAP lines, and log messages as "# " comments, with g_print()
 * too: those, and anything outside a capture, go to stdout as usual. */
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
 * from their finalize hooks. */
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
assert_totals (AhTestHost *host,
               const char *expected)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) reply = ah_test_host_request (host, "pipeline.totals", "", 0, 5000, &error);
  gsize size;
  gconstpointer data;

  g_assert_no_error (error);
  data = g_bytes_get_data (reply, &size);
  g_assert_cmpmem (data, size, expected, strlen (expected));
}

static void
test_pipeline_manifest (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;
  g_autoptr(GPtrArray) counts = NULL;
  g_autoptr(GArray) transforms = NULL;
  g_autofree char *text = NULL;
  guint n_words = 0;

  g_test_summary ("pipeline.yaml: 3 lines sent twice go through three transform agents; "
                  "the sink adds up 6 lines and 18 words and prints them at the end");

  capture_begin ();
  host = ah_test_host_new_for_manifest (PIPELINE_MANIFEST, &error);
  g_assert_no_error (error);

  transforms = ah_test_host_get_agents (host, "transform");
  g_assert_cmpuint (transforms->len, ==, 3);
  g_assert_cmpuint (ah_test_host_count (host, AH_TEST_CAPTURE_PUBLISHED, "pipeline.lines"), ==, 6);
  counts = ah_test_host_get_messages (host, AH_TEST_CAPTURE_PUBLISHED, "pipeline.counts");
  g_assert_cmpuint (counts->len, ==, 6);
  for (guint i = 0; i < counts->len; i++)
    {
      const AhTestMessage *count = g_ptr_array_index (counts, i);
      g_autofree char *digits = g_strndup (g_bytes_get_data (count->data, NULL),
                                           g_bytes_get_size (count->data));

      n_words += (guint) g_ascii_strtoull (digits, NULL, 10);
    }
  g_assert_cmpuint (n_words, ==, 18);
  assert_totals (host, "lines=6 words=18");
  g_assert_cmpuint (ah_test_host_count (host, AH_TEST_CAPTURE_DEAD_LETTERS, NULL), ==, 0);

  g_clear_pointer (&host, ah_test_host_free);
  text = capture_end ();
  g_assert_cmpstr (text, ==, "sink 0: 6 lines, 18 words\n");
}

static void
test_pipeline_repeat (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;
  g_autofree char *text = NULL;

  g_test_summary ("The source sends its lines `repeat` times: 2 lines x 500 arrive whole");

  capture_begin ();
  host = ah_test_host_new ("name: repeat\n"
                           "stop_when_idle: true\n"
                           "agents:\n"
                           "  source:\n"
                           "    plugin: source\n"
                           "    subscribe: [$SYS.host.started]\n"
                           "    config: {repeat: 500, lines: ['one two', '  three  ']}\n"
                           "  transform: {plugin: transform, pool_size: 4, subscribe: [pipeline.lines]}\n"
                           "  sink: {plugin: sink, subscribe: [pipeline.counts, pipeline.totals]}\n",
                           EXAMPLE_BUILD_DIR, &error);
  g_assert_no_error (error);
  assert_totals (host, "lines=1000 words=1500");
  g_clear_pointer (&host, ah_test_host_free);
  text = capture_end ();
  g_assert_cmpstr (text, ==, "sink 0: 1000 lines, 1500 words\n");
}

static void
test_transform_invalid_utf8 (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;
  g_autoptr(GPtrArray) counts = NULL;
  AhTypeStats stats;

  g_test_summary ("A line that is not UTF-8 is refused and reported; the others are counted");
  host = ah_test_host_new_for_plugin (TRANSFORM_PLUGIN, "pipeline.lines", NULL, &error);
  g_assert_no_error (error);

  ah_test_host_publish_string (host, "pipeline.lines", "a b");
  ah_test_host_publish (host, "pipeline.lines", "\xff\xfe", 2);
  ah_test_host_publish_string (host, "pipeline.lines", " c  d\te ");
  ah_test_host_publish_string (host, "pipeline.lines", "");
  ah_test_host_run_until_idle (host);

  counts = ah_test_host_get_messages (host, AH_TEST_CAPTURE_PUBLISHED, "pipeline.counts");
  g_assert_cmpuint (counts->len, ==, 3);
  g_assert_cmpmem (g_bytes_get_data (((AhTestMessage *) counts->pdata[0])->data, NULL), 1, "2", 1);
  g_assert_cmpmem (g_bytes_get_data (((AhTestMessage *) counts->pdata[1])->data, NULL), 1, "3", 1);
  g_assert_cmpmem (g_bytes_get_data (((AhTestMessage *) counts->pdata[2])->data, NULL), 1, "0", 1);
  g_assert_true (ah_host_get_type_stats (ah_test_host_get_host (host), 0, &stats));
  g_assert_cmpuint (stats.handler_failures, ==, 1);
}

static void
test_transform_config_refused (void)
{
  const char * const config[] = { "lowercase=true", NULL };
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;

  g_test_summary ("The transform's empty schema refuses any config key, naming the plugin");
  host = ah_test_host_new_for_plugin (TRANSFORM_PLUGIN, "pipeline.lines", config, &error);
  g_assert_null (host);
  g_assert_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_UNKNOWN_KEY);
  g_assert_true (g_str_has_suffix (error->message, "error: agent type 'transform': unknown "
                                   "config key 'lowercase' (plugin 'transform' accepts no keys)"));
}

static void
test_pipeline_run (void)
{
  const char *agenthost = g_getenv ("AGENTHOST");
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) run = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;

  g_test_summary ("`agenthost run pipeline.yaml` prints the sink's totals and exits 0 once idle");
  if (agenthost == NULL)
    {
      g_test_skip ("AGENTHOST is not set (meson test sets it)");
      return;
    }

  run = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error,
                          agenthost, "run", PIPELINE_MANIFEST, NULL);
  g_assert_no_error (error);
  g_assert_true (g_subprocess_communicate_utf8 (run, NULL, NULL, &out, &err, &error));
  g_assert_no_error (error);
  g_assert_true (g_subprocess_get_if_exited (run));
  g_assert_cmpint (g_subprocess_get_exit_status (run), ==, 0);
  g_assert_true (g_str_has_prefix (out, "sink 0: 6 lines, 18 words\n"));
  g_assert_nonnull (strstr (out, "stopped by idle, exit code 0"));
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_set_print_handler (capture_print);

  g_test_add_func ("/example/pipeline/manifest", test_pipeline_manifest);
  g_test_add_func ("/example/pipeline/source/repeat", test_pipeline_repeat);
  g_test_add_func ("/example/pipeline/transform/invalid-utf8", test_transform_invalid_utf8);
  g_test_add_func ("/example/pipeline/transform/config-refused", test_transform_config_refused);
  g_test_add_func ("/example/pipeline/run", test_pipeline_run);

  return g_test_run ();
}
