/* SPDX-License-Identifier: MIT */
/* The flaky plugin in a real host, on the test harness plugin authors
 * use (<agenthost/ah-testing.h>): results and replies, each way it fails
 * on purpose and what the host's supervision makes of it (restarts,
 * retries, the watchdog), the producer's tally, its config checks, and
 * manifests/supervision.yaml (found from G_TEST_SRCDIR, the tests/
 * source directory). The plugin is found through AGENTHOST_PLUGIN_PATH.
 *
 * Messages go in one at a time, each followed by a run until idle,
 * wherever a count depends on how messages are batched: one message is
 * then one handler call. */
#include <agenthost/agenthost.h>

#include <stdio.h>
#include <string.h>

#define REQUEST_TIMEOUT_MS 5000

/* The producer's tally line goes to g_print, on a bus worker. */
static GMutex       printed_lock;
static GString     *printed;
static GPrintFunc   default_print;

/* GTest prints too (TAP lines): only the plugin's lines are taken. */
static void
capture_print (const char *text)
{
  if (!g_str_has_prefix (text, "flaky: "))
    {
      if (default_print != NULL)
        default_print (text);
      else
        fputs (text, stdout);
      return;
    }
  g_mutex_lock (&printed_lock);
  g_string_append (printed, text);
  g_mutex_unlock (&printed_lock);
}

/* The watchdog reports with a warning, which GTest would make fatal:
 * here it is the behaviour under test, so it is shown as a test message.
 * Any other warning of the host fails the test. (A GTest fatal handler
 * cannot do this: the TAP output would still say "Bail out!".) */
static void
on_host_warning (const char     *log_domain,
                 GLogLevelFlags  log_level,
                 const char     *message,
                 gpointer        user_data)
{
  g_test_message ("warning: %s", message);
  if (!g_str_has_prefix (message, "watchdog: "))
    {
      g_printerr ("unexpected warning: %s\n", message);
      g_test_fail ();
    }
}

static char *
printed_take (void)
{
  char *text;

  g_mutex_lock (&printed_lock);
  text = g_strdup (printed->str);
  g_string_truncate (printed, 0);
  g_mutex_unlock (&printed_lock);
  return text;
}

static void
get_type_stats (AhTestHost  *t,
                const char  *name,
                AhTypeStats *ret_stats)
{
  AhHost *host = ah_test_host_get_host (t);

  for (guint i = 0; i < ah_host_get_n_types (host); i++)
    {
      g_assert_true (ah_host_get_type_stats (host, i, ret_stats));
      if (g_str_equal (ret_stats->name, name))
        return;
    }
  g_error ("no agent type '%s'", name);
}

static void
publish_one_by_one (AhTestHost *t,
                    guint       first,
                    guint       n_tasks)
{
  for (guint i = first; i < first + n_tasks; i++)
    {
      g_autofree char *task = g_strdup_printf ("task %u", i);

      ah_test_host_publish_string (t, "flaky.task", task);
      ah_test_host_run_until_idle (t);
    }
}

static void
assert_results (AhTestHost *t,
                guint       n_tasks)
{
  g_autoptr(GPtrArray) results = ah_test_host_get_messages (t, AH_TEST_CAPTURE_PUBLISHED,
                                                            "flaky.result");
  g_autofree guint8 *seen = g_new0 (guint8, n_tasks);

  g_assert_cmpuint (results->len, ==, n_tasks);
  for (guint i = 0; i < results->len; i++)
    {
      const AhTestMessage *result = g_ptr_array_index (results, i);
      gsize size;
      const char *data = g_bytes_get_data (result->data, &size);
      g_autofree char *text = g_strndup (data, size);
      guint task;

      g_assert_cmpint (sscanf (text, "task %u", &task), ==, 1);
      g_assert_cmpuint (task, <, n_tasks);
      g_assert_cmpuint (seen[task], ==, 0);
      seen[task] = 1;
    }
}

static void
test_worker_results (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new_for_plugin ("flaky", "flaky.task", NULL, &error);
  g_autoptr(GBytes) reply = NULL;
  AhTypeStats stats;

  g_test_summary ("Without failure settings a worker publishes each task's result and "
                  "answers requests with their payload");
  g_assert_no_error (error);

  for (guint i = 0; i < 5; i++)
    {
      g_autofree char *task = g_strdup_printf ("task %u", i);

      ah_test_host_publish_string (t, "flaky.task", task);
    }
  ah_test_host_run_until_idle (t);
  assert_results (t, 5);

  reply = ah_test_host_request (t, "flaky.task", "task 9", 6, REQUEST_TIMEOUT_MS, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (g_bytes_get_data (reply, NULL), g_bytes_get_size (reply), "task 9", 6);

  get_type_stats (t, "flaky", &stats);
  g_assert_cmpuint (stats.failed, ==, 0);
  g_assert_cmpuint (stats.restarted, ==, 0);
}

static void
test_worker_fail_every (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new (
    "name: flaky-fail-every\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: flaky\n"
    "    pool_size: 1\n"
    "    subscribe: [flaky.task]\n"
    "    supervision: {max_restarts: 10, period_ms: 60000, failed_messages: dead_letter}\n"
    "    config: {fail_every: 3}\n", NULL, &error);
  g_autoptr(GPtrArray) dead = NULL;
  g_autoptr(GPtrArray) results = NULL;
  AhTypeStats stats;

  g_test_summary ("fail_every 3: the 3rd and 6th message a worker gets fail its call "
                  "(dead-lettered here), the others come back as results");
  g_assert_no_error (error);

  publish_one_by_one (t, 0, 7);

  results = ah_test_host_get_messages (t, AH_TEST_CAPTURE_PUBLISHED, "flaky.result");
  g_assert_cmpuint (results->len, ==, 5);
  dead = ah_test_host_get_messages (t, AH_TEST_CAPTURE_DEAD_LETTERS, "flaky.task");
  g_assert_cmpuint (dead->len, ==, 2);
  for (guint i = 0; i < dead->len; i++)
    {
      const AhTestMessage *message = g_ptr_array_index (dead, i);
      g_autofree char *expected = g_strdup_printf ("task %u", i == 0 ? 2 : 5);

      g_assert_cmpstr (message->reason, ==, "handler-failed");
      g_assert_cmpmem (g_bytes_get_data (message->data, NULL), g_bytes_get_size (message->data),
                       expected, strlen (expected));
    }

  get_type_stats (t, "worker", &stats);
  g_assert_cmpuint (stats.failed, ==, 2);
  g_assert_cmpuint (stats.restarted, ==, 2);
  g_assert_cmpuint (stats.failed_messages, ==, 2);
  g_assert_cmpuint (stats.retried, ==, 0);
  g_assert_false (stats.stopped);
}

static void
test_worker_retried (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new (
    "name: flaky-retried\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: flaky\n"
    "    pool_size: 2\n"
    "    subscribe: [flaky.task]\n"
    "    supervision: {max_restarts: 100, period_ms: 60000, failed_messages: retry}\n"
    "    config: {fail_every: 1}\n", NULL, &error);
  AhTypeStats stats;

  g_test_summary ("fail_every 1 fails every first delivery, never a redelivered one: "
                  "with retry each task fails once and still comes back");
  g_assert_no_error (error);

  publish_one_by_one (t, 0, 10);

  assert_results (t, 10);
  /* The results reach nobody (no-route); no task is lost. */
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_DEAD_LETTERS, "flaky.task"), ==, 0);
  get_type_stats (t, "worker", &stats);
  g_assert_cmpuint (stats.failed, ==, 10);
  g_assert_cmpuint (stats.restarted, ==, 10);
  g_assert_cmpuint (stats.retried, ==, 10);
  g_assert_cmpuint (stats.failed_messages, ==, 0);
  g_assert_cmpfloat (stats.success_rate, ==, 1.0);
}

static void
test_init_fail_every (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new (
    "name: flaky-init\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: flaky\n"
    "    pool_size: 2\n"
    "    config: {init_fail_every: 3}\n", NULL, &error);
  AhHost *host;
  AhTypeStats stats;
  AhAgentId id;

  g_test_summary ("init_fail_every 3: the pre-warm's 2 inits pass, then spawns 3 and 6 "
                  "fail with the count in the error, 4 and 5 start");
  g_assert_no_error (error);
  host = ah_test_host_get_host (t);

  for (guint init = 3; init <= 6; init++)
    {
      id = ah_host_spawn (host, "worker", &error);
      if (init % 3 != 0)
        {
          g_assert_no_error (error);
          g_assert_cmpuint (id, !=, AH_AGENT_ID_NONE);
          continue;
        }
      g_assert_cmpuint (id, ==, AH_AGENT_ID_NONE);
      g_assert_nonnull (error);
      g_assert_true (error->domain == AH_HOST_ERROR);
      {
        g_autofree char *expected = g_strdup_printf (
          "init failed: failing on purpose: worker init %u (init_fail_every 3), agent index ",
          init);

        g_assert_nonnull (strstr (error->message, expected));
      }
      g_clear_error (&error);
    }

  get_type_stats (t, "worker", &stats);
  g_assert_cmpuint (stats.n_agents, ==, 4);
  g_assert_cmpuint (stats.init_failures, ==, 2);
}

static void
test_init_fail_prewarm (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new (
    "name: flaky-init-prewarm\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: flaky\n"
    "    pool_size: 3\n"
    "    config: {init_fail_every: 2}\n", NULL, &error);

  g_test_summary ("An init_fail_every within the pool's size fails the pre-warm: the "
                  "start fails with the plugin's reason");
  g_assert_null (t);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_PREWARM);
  g_assert_nonnull (strstr (error->message,
                            "init failed: failing on purpose: worker init 2 (init_fail_every 2)"));
}

static void
test_slow_watchdog (void)
{
  g_autoptr(GError) error = NULL;
  /* 200 ms against a 10 ms deadline: the watchdog reports the call
   * however loaded the machine is. */
  g_autoptr(AhTestHost) t = ah_test_host_new (
    "name: flaky-slow\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: flaky\n"
    "    pool_size: 1\n"
    "    subscribe: [flaky.task]\n"
    "    supervision: {handler_deadline_ms: 10}\n"
    "    config: {slow_every: 2, slow_ms: 200}\n", NULL, &error);
  AhTypeStats stats;

  g_test_summary ("slow_every 2: the 2nd and 4th call sleep slow_ms, the watchdog reports "
                  "both, and every task still comes back");
  g_assert_no_error (error);

  publish_one_by_one (t, 0, 4);

  assert_results (t, 4);
  get_type_stats (t, "worker", &stats);
  g_assert_cmpuint (stats.deadline_overruns, ==, 2);
  g_assert_cmpuint (stats.failed, ==, 0);
}

#define PIPELINE_YAML(tasks, fail_every)                                       \
  "name: flaky-pipeline\n"                                                     \
  "bus: {handler_batch: 4}\n"                                                  \
  "agents:\n"                                                                  \
  "  producer:\n"                                                              \
  "    plugin: flaky\n"                                                        \
  "    pool_size: 1\n"                                                         \
  "    subscribe: [$SYS.host.started, flaky.result]\n"                         \
  "    config: {role: producer, tasks: " tasks "}\n"                           \
  "  worker:\n"                                                                \
  "    plugin: flaky\n"                                                        \
  "    pool_size: 3\n"                                                         \
  "    subscribe: [flaky.task]\n"                                              \
  "    supervision: {max_restarts: 1000, period_ms: 60000}\n"                  \
  "    config: {fail_every: " fail_every "}\n"

static void
test_producer_tally (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = NULL;
  g_autofree char *done = NULL;
  g_autofree char *line = NULL;
  AhTypeStats stats;

  g_test_summary ("A producer publishes its tasks on $SYS.host.started and, once every "
                  "result is back, prints and publishes its tally: failing workers under "
                  "retry lose nothing and duplicate nothing");

  t = ah_test_host_new (PIPELINE_YAML ("60", "7"), NULL, &error);
  g_assert_no_error (error);
  ah_test_host_run_until_idle (t);

  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, "flaky.task"), ==, 60);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, "flaky.result"), ==, 60);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, "flaky.done"), ==, 1);
  done = ah_test_host_last_text (t, AH_TEST_CAPTURE_PUBLISHED, "flaky.done");
  g_assert_cmpstr (done, ==, "tasks=60 results=60 duplicates=0 malformed=0");
  line = printed_take ();
  g_assert_cmpstr (line, ==, "flaky: 60 of 60 tasks came back (0 duplicates, 0 malformed)\n");

  get_type_stats (t, "worker", &stats);
  g_assert_cmpuint (stats.failed, >=, 1);
  g_assert_cmpuint (stats.restarted, ==, stats.failed);
  g_assert_cmpuint (stats.retried, >=, stats.failed);
  g_assert_cmpuint (stats.failed_messages, ==, 0);
  g_assert_cmpfloat (stats.success_rate, ==, 1.0);
}

static void
test_producer_incomplete (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new (
    "name: flaky-incomplete\n"
    "agents:\n"
    "  producer:\n"
    "    plugin: flaky\n"
    "    pool_size: 1\n"
    "    subscribe: [$SYS.host.started, flaky.result]\n"
    "    config: {role: producer, tasks: 3}\n", NULL, &error);
  g_autofree char *line = NULL;

  g_test_summary ("A producer whose results do not all come back says how far it got "
                  "when it stops, and counts duplicates and malformed results");
  g_assert_no_error (error);

  /* Nobody takes the tasks: the results are made up here. */
  ah_test_host_publish_string (t, "flaky.result", "task 1");
  ah_test_host_publish_string (t, "flaky.result", "task 1");
  ah_test_host_publish_string (t, "flaky.result", "task 3");
  ah_test_host_publish_string (t, "flaky.result", "task x");
  ah_test_host_run_until_idle (t);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, "flaky.done"), ==, 0);

  g_clear_pointer (&t, ah_test_host_free);
  line = printed_take ();
  g_assert_cmpstr (line, ==, "flaky: 1 of 3 tasks came back (1 duplicate, 2 malformed)\n");
}

typedef struct {
  const char *name;
  const char *config[3];
  const char *message;   /* what the error must contain */
} BadConfig;

static const BadConfig bad_configs[] = {
  { "role", { "role=boss", NULL },
    "init failed: config 'role': unknown role 'boss' (worker or producer)" },
  { "result-subject", { "result_subject=a..b", NULL },
    "init failed: config 'result_subject': 'a..b' is not a subject" },
  { "task-subject", { "role=producer", "task_subject=t.>", NULL },
    "init failed: config 'task_subject': 't.>' is not a subject" },
  { "same-subjects", { "role=producer", "task_subject=flaky.result", NULL },
    "init failed: config 'task_subject' and 'result_subject' are both 'flaky.result'" },
};

static void
test_config_invalid (gconstpointer data)
{
  const BadConfig *tc = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new_for_plugin ("flaky", NULL, tc->config, &error);

  g_test_summary ("A config the plugin cannot work with stops the start, with the key "
                  "and the reason");
  g_assert_null (t);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_PREWARM);
  g_assert_nonnull (strstr (error->message, tc->message));
}

static void
test_manifest_shipped (void)
{
  g_autofree char *path = g_test_build_filename (G_TEST_DIST, "..", "manifests",
                                                "supervision.yaml", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = ah_manifest_load (path, &error);
  g_autoptr(AhTestHost) t = NULL;
  g_autofree char *done = NULL;
  g_autofree char *line = NULL;
  AhTypeStats stats;

  g_test_summary ("manifests/supervision.yaml loads, checks, and runs every task to its "
                  "result through restarts, retries and watchdog reports");
  g_assert_no_error (error);
  g_assert_true (ah_manifest_check_plugins (manifest, &error));
  g_assert_no_error (error);

  t = ah_test_host_new_for_manifest (path, &error);
  g_assert_no_error (error);
  ah_test_host_run_until_idle (t);

  done = ah_test_host_last_text (t, AH_TEST_CAPTURE_PUBLISHED, "flaky.done");
  g_assert_nonnull (done);
  g_assert_true (g_str_has_suffix (done, "duplicates=0 malformed=0"));
  line = printed_take ();
  g_assert_true (g_str_has_suffix (line, "tasks came back (0 duplicates, 0 malformed)\n"));
  get_type_stats (t, "worker", &stats);
  g_assert_cmpuint (stats.restarted, >, 0);
  g_assert_cmpuint (stats.retried, >, 0);
  g_assert_cmpuint (stats.deadline_overruns, >, 0);
  g_assert_cmpuint (stats.failed_messages, ==, 0);
  g_assert_false (stats.stopped);
  g_assert_cmpfloat (stats.success_rate, ==, 1.0);
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, NULL);
  printed = g_string_new (NULL);
  default_print = g_set_print_handler (capture_print);
  /* The host's warnings go to on_host_warning(), not to the fatal path. */
  g_log_set_always_fatal (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
  g_log_set_handler ("agenthost", G_LOG_LEVEL_WARNING, on_host_warning, NULL);

  g_test_add_func ("/flaky/worker/results", test_worker_results);
  g_test_add_func ("/flaky/worker/fail-every", test_worker_fail_every);
  g_test_add_func ("/flaky/worker/retried", test_worker_retried);
  g_test_add_func ("/flaky/init/fail-every", test_init_fail_every);
  g_test_add_func ("/flaky/init/prewarm", test_init_fail_prewarm);
  g_test_add_func ("/flaky/slow/watchdog", test_slow_watchdog);
  g_test_add_func ("/flaky/producer/tally", test_producer_tally);
  g_test_add_func ("/flaky/producer/incomplete", test_producer_incomplete);
  for (guint i = 0; i < G_N_ELEMENTS (bad_configs); i++)
    {
      g_autofree char *path = g_strdup_printf ("/flaky/config/invalid/%s", bad_configs[i].name);

      g_test_add_data_func (path, &bad_configs[i], test_config_invalid);
    }
  g_test_add_func ("/flaky/manifest/shipped", test_manifest_shipped);

  return g_test_run ();
}
