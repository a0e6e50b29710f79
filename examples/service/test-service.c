/* SPDX-License-Identifier: MIT */
/* The service example: calc alone in the test harness (answers, in-band
 * refusals, the failure a requester sees as a timeout), the client's
 * schema, the whole service.yaml in the harness, and service.yaml under
 * `agenthost run`. The plugins and the manifest are in EXAMPLE_BUILD_DIR. */
#include <agenthost/agenthost.h>

#include <stdio.h>
#include <string.h>

#define CALC_PLUGIN      EXAMPLE_BUILD_DIR "/calc.so"
#define SERVICE_MANIFEST EXAMPLE_BUILD_DIR "/service.yaml"

/* The four outcomes service.yaml's client prints, in any order. */
static const char * const service_outcomes[] = {
  "calc.square 12 -> 144\n",
  "calc.square 5000000000 -> error: 5000000000 is outside -1000000000..1000000000\n",
  "calc.square twelve -> no reply within 200 ms\n",
  "calc.cube 3 -> nobody serves 'calc.cube'\n",
};
#define SERVICE_TALLY "client 0: 2 replies, 1 timed out, 1 without responders, 0 pending\n"

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
assert_reply (AhTestHost *host,
              const char *payload,
              const char *expected)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) reply = ah_test_host_request (host, "calc.square", payload, strlen (payload),
                                                  5000, &error);
  gsize size;
  gconstpointer data;

  g_assert_no_error (error);
  data = g_bytes_get_data (reply, &size);
  g_assert_cmpmem (data, size, expected, strlen (expected));
}

static void
assert_outcomes (const char *text)
{
  gsize total = strlen (SERVICE_TALLY);

  for (guint i = 0; i < G_N_ELEMENTS (service_outcomes); i++)
    {
      g_assert_nonnull (strstr (text, service_outcomes[i]));
      total += strlen (service_outcomes[i]);
    }
  g_assert_nonnull (strstr (text, SERVICE_TALLY));
  g_assert_cmpuint (strlen (text), ==, total);
}

static void
test_calc_square (void)
{
  const char * const config[] = { "limit=100", NULL };
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;

  g_test_summary ("calc answers squares, and refuses numbers over its configured limit in-band");
  host = ah_test_host_new_for_plugin (CALC_PLUGIN, "calc.square", config, &error);
  g_assert_no_error (error);

  assert_reply (host, "12", "144");
  assert_reply (host, "-7", "49");
  assert_reply (host, "100", "10000");
  assert_reply (host, "101", "error: 101 is outside -100..100");
  assert_reply (host, "-101", "error: -101 is outside -100..100");
}

static void
test_calc_default_limit (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;

  g_test_summary ("By default calc squares every number whose square fits in 64 bits");
  host = ah_test_host_new_for_plugin (CALC_PLUGIN, "calc.square", NULL, &error);
  g_assert_no_error (error);

  assert_reply (host, "3037000499", "9223372030926249001");
  assert_reply (host, "3037000500", "error: 3037000500 is outside -3037000499..3037000499");
}

static void
test_calc_not_a_number (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;
  g_autoptr(GBytes) reply = NULL;
  AhTypeStats stats;

  g_test_summary ("A payload that is not an integer is a reported failure and no reply: "
                  "the requester times out");
  host = ah_test_host_new_for_plugin (CALC_PLUGIN, "calc.square", NULL, &error);
  g_assert_no_error (error);

  reply = ah_test_host_request (host, "calc.square", "twelve", strlen ("twelve"), 100, &error);
  g_assert_null (reply);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_TIMEOUT);
  g_assert_cmpuint (ah_test_host_count (host, AH_TEST_CAPTURE_REPLIES, NULL), ==, 0);
  g_assert_true (ah_host_get_type_stats (ah_test_host_get_host (host), 0, &stats));
  g_assert_cmpuint (stats.handler_failures, ==, 1);

  /* A NUL inside the payload makes it no number either. */
  g_clear_error (&error);
  reply = ah_test_host_request (host, "calc.square", "12\0" "3", 4, 100, &error);
  g_assert_null (reply);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_TIMEOUT);
  g_clear_error (&error);
  g_assert_true (ah_host_get_type_stats (ah_test_host_get_host (host), 0, &stats));
  g_assert_cmpuint (stats.handler_failures, ==, 2);

  /* The agent failed two batches; it still serves the next request. */
  assert_reply (host, "3", "9");
}

static void
test_client_config_missing (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;

  g_test_summary ("A client without questions is refused before any agent starts, naming the key");
  host = ah_test_host_new ("name: no-questions\n"
                           "agents:\n"
                           "  client: {plugin: client, config: {timeout_ms: 10}}\n",
                           EXAMPLE_BUILD_DIR, &error);
  g_assert_null (host);
  g_assert_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_MISSING_KEY);
  g_assert_cmpstr (error->message, ==, "<test>:3:3: error: agent type 'client': missing required "
                   "config key 'questions' (string: requests to make at start, each "
                   "\"SUBJECT PAYLOAD\" (a sequence))");
}

static void
test_service_manifest (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;
  g_autoptr(GPtrArray) requests = NULL;
  g_autofree char *text = NULL;
  AhHostStats stats;

  g_test_summary ("service.yaml: each of the client's four requests ends once, as a reply, "
                  "a timeout or no responders, and the client prints each and a tally");

  capture_begin ();
  /* The harness runs the start until idle: every request has its outcome. */
  host = ah_test_host_new_for_manifest (SERVICE_MANIFEST, &error);
  g_assert_no_error (error);

  requests = ah_test_host_get_messages (host, AH_TEST_CAPTURE_PUBLISHED, "calc.*");
  g_assert_cmpuint (requests->len, ==, 4);
  for (guint i = 0; i < requests->len; i++)
    {
      const AhTestMessage *request = g_ptr_array_index (requests, i);

      g_assert_cmpint (request->kind, ==, AH_MESSAGE_REQUEST);
      g_assert_cmpuint (request->correlation, !=, 0);
    }
  g_assert_cmpuint (ah_test_host_count (host, AH_TEST_CAPTURE_REPLIES, "calc.square"), ==, 2);
  ah_test_host_get_stats (host, &stats);
  g_assert_cmpuint (stats.requests, ==, 4);
  g_assert_cmpuint (stats.request_timeouts, ==, 1);

  g_clear_pointer (&host, ah_test_host_free);
  text = capture_end ();
  assert_outcomes (text);
}

static void
test_service_run (void)
{
  const char *agenthost = g_getenv ("AGENTHOST");
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) run = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;
  const char *summary;

  g_test_summary ("`agenthost run service.yaml` prints the four outcomes and exits 0 once idle");
  if (agenthost == NULL)
    {
      g_test_skip ("AGENTHOST is not set (meson test sets it)");
      return;
    }

  run = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error,
                          agenthost, "run", SERVICE_MANIFEST, NULL);
  g_assert_no_error (error);
  g_assert_true (g_subprocess_communicate_utf8 (run, NULL, NULL, &out, &err, &error));
  g_assert_no_error (error);
  g_assert_true (g_subprocess_get_if_exited (run));
  g_assert_cmpint (g_subprocess_get_exit_status (run), ==, 0);
  /* The agents' lines come first, then the summary. */
  summary = strstr (out, "agenthost: 'service' ran ");
  g_assert_nonnull (summary);
  g_assert_nonnull (strstr (summary, "stopped by idle, exit code 0"));
  out[summary - out] = '\0';
  assert_outcomes (out);
  /* calc's failure on "twelve" is reported, not hidden. */
  g_assert_nonnull (strstr (err, "calc.square: 'twelve' is not an integer; not answered"));
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_set_print_handler (capture_print);

  g_test_add_func ("/example/service/calc/square", test_calc_square);
  g_test_add_func ("/example/service/calc/default-limit", test_calc_default_limit);
  g_test_add_func ("/example/service/calc/not-a-number", test_calc_not_a_number);
  g_test_add_func ("/example/service/client/config-missing", test_client_config_missing);
  g_test_add_func ("/example/service/manifest", test_service_manifest);
  g_test_add_func ("/example/service/run", test_service_run);

  return g_test_run ();
}
