/* Supervision, through the public embedding API: restart policies, the
 * restart budget and its escalation, the messages of a failed batch, the
 * watchdog. The agents are the supervised test plugin
 * (tests/plugins/supervised.c), which fails, blocks and reports on
 * demand. Nothing here sleeps: the tests wait for events, with timeouts.
 *
 * SPDX-License-Identifier: MIT
 */
#include <agenthost/agenthost.h>

#include "host-helpers.h"

#include <string.h>

#define EVENT_TIMEOUT_US TEST_EVENT_TIMEOUT_US

/* ---- helpers ------------------------------------------------------------ */

static void
get_type_stats (AhHost      *host,
                const char  *name,
                AhTypeStats *ret_stats)
{
  g_assert_true (test_get_type_stats (host, name, ret_stats));
}

static void
publish (AhHost     *host,
         const char *subject,
         const char *text)
{
  g_autoptr(GError) error = NULL;

  g_assert_true (ah_host_publish (host, subject, text, strlen (text), &error));
  g_assert_no_error (error);
}

/* The payloads of messages a host subscription saw, in arrival order;
 * the callback runs on a worker, the test waits on @cond. */
typedef struct {
  GMutex     lock;
  GCond      cond;
  GPtrArray *texts;   /* (element-type utf8) "SUBJECT PAYLOAD" */
} Observed;

static void
observed_add (const AhMessage *message,
              gpointer         user_data)
{
  Observed *observed = user_data;
  gsize size;
  const char *data = ah_message_get_data (message, &size);

  g_mutex_lock (&observed->lock);
  g_ptr_array_add (observed->texts, g_strdup_printf ("%s %.*s", ah_message_get_subject (message),
                                                     (int) size, data));
  g_cond_broadcast (&observed->cond);
  g_mutex_unlock (&observed->lock);
}

static void
observed_init (Observed *observed,
               AhHost   *host,
               const char *pattern)
{
  g_autoptr(GError) error = NULL;

  g_mutex_init (&observed->lock);
  g_cond_init (&observed->cond);
  observed->texts = g_ptr_array_new_with_free_func (g_free);
  g_assert_cmpuint (ah_host_subscribe (host, pattern, observed_add, observed, &error), >, 0);
  g_assert_no_error (error);
}

static void
observed_clear (Observed *observed)
{
  g_ptr_array_unref (observed->texts);
  g_mutex_clear (&observed->lock);
  g_cond_clear (&observed->cond);
}

/* How many texts start with @prefix. Lock held. */
static guint
observed_count_unlocked (Observed   *observed,
                         const char *prefix)
{
  guint n = 0;

  for (guint i = 0; i < observed->texts->len; i++)
    if (g_str_has_prefix (g_ptr_array_index (observed->texts, i), prefix))
      n++;
  return n;
}

static guint
observed_count (Observed   *observed,
                const char *prefix)
{
  guint n;

  g_mutex_lock (&observed->lock);
  n = observed_count_unlocked (observed, prefix);
  g_mutex_unlock (&observed->lock);
  return n;
}

/* Waits until @n texts start with @prefix; fails the test after the
 * timeout. */
static void
observed_wait (Observed   *observed,
               const char *prefix,
               guint       n)
{
  gint64 deadline = g_get_monotonic_time () + EVENT_TIMEOUT_US;

  g_mutex_lock (&observed->lock);
  while (observed_count_unlocked (observed, prefix) < n)
    if (!g_cond_wait_until (&observed->cond, &observed->lock, deadline))
      break;
  g_assert_cmpuint (observed_count_unlocked (observed, prefix), >=, n);
  g_mutex_unlock (&observed->lock);
}

/* The text of the @nth (0-based) text starting with @prefix, copied. */
static char *
observed_nth (Observed   *observed,
              const char *prefix,
              guint       nth)
{
  char *found = NULL;

  g_mutex_lock (&observed->lock);
  for (guint i = 0; i < observed->texts->len && found == NULL; i++)
    if (g_str_has_prefix (g_ptr_array_index (observed->texts, i), prefix) && nth-- == 0)
      found = g_strdup (g_ptr_array_index (observed->texts, i));
  g_mutex_unlock (&observed->lock);
  g_assert_nonnull (found);
  return found;
}

/* The value of " KEY=" in an event's text, as a number. */
static guint64
text_get_number (const char *text,
                 const char *key)
{
  g_autofree char *needle = g_strdup_printf (" %s=", key);
  const char *at = strstr (text, needle);

  g_assert_nonnull (at);
  return g_ascii_strtoull (at + strlen (needle), NULL, 10);
}

static char *
gate_address (SupervisedGate *gate)
{
  return g_strdup_printf ("%" G_GSIZE_FORMAT, (gsize) gate);
}

/* Warnings the host logs on purpose (a type stopping, the watchdog) are
 * expected here; they are kept for the tests to check. Any other warning
 * of the host fails the test. (A GTest fatal handler cannot do this: the
 * TAP output would still say "Bail out!".) */
static GMutex warnings_lock;
static GPtrArray *warnings;   /* (element-type utf8) under warnings_lock */

static void
on_host_warning (const char     *log_domain,
                 GLogLevelFlags  log_level,
                 const char     *message,
                 gpointer        user_data)
{
  g_test_message ("warning: %s", message);
  if (!g_str_has_prefix (message, "watchdog: ") && strstr (message, "' stopped: ") == NULL)
    {
      g_printerr ("unexpected warning: %s\n", message);
      g_test_fail ();
    }
  g_mutex_lock (&warnings_lock);
  g_ptr_array_add (warnings, g_strdup (message));
  g_mutex_unlock (&warnings_lock);
}

static gboolean
warning_logged (const char *prefix)
{
  gboolean found = FALSE;

  g_mutex_lock (&warnings_lock);
  for (guint i = 0; i < warnings->len && !found; i++)
    found = g_str_has_prefix (g_ptr_array_index (warnings, i), prefix);
  g_mutex_unlock (&warnings_lock);
  return found;
}

/* ---- one_for_one ---------------------------------------------------------- */

static void
test_one_for_one_in_place (void)
{
  SupervisedGate gate;
  g_autofree char *address = NULL;
  g_autofree char *yaml = NULL;
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *failed = NULL;
  Observed observed;
  AhTypeStats stats;
  AhHostStats host_stats;
  AhAgentInfo info;
  AhAgentId id;

  g_test_summary ("one_for_one restarts the failed agent in place: same id, its queued "
                  "messages kept and handled after the restart, the failed one dead-lettered");

  test_gate_init (&gate);
  address = gate_address (&gate);
  yaml = g_strdup_printf (
    "name: in-place\n"
    "plugin_path: [plugins]\n"
    "bus: {handler_batch: 1}\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: supervised\n"
    "    subscribe: [work]\n"
    "    supervision: {policy: one_for_one, failed_messages: dead_letter}\n"
    "    config: {gate: \"%s\"}\n", address);
  host = test_host_start_from_yaml (yaml);
  observed_init (&observed, host, ">");

  /* Held in a call, so what follows waits in its mailbox. */
  publish (host, "work", "block");
  test_gate_wait_entered (&gate, 1);
  publish (host, "work", "fail");
  publish (host, "work", "a");
  publish (host, "work", "b");
  test_gate_open (&gate);
  test_assert_account_exact (host);

  failed = observed_nth (&observed, "$SYS.agent.failed ", 0);
  id = text_get_number (failed, "id");
  g_assert_true (ah_host_get_agent_info (host, id, &info, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (info.restarts, ==, 1);
  g_assert_cmpint (info.state, ==, AH_AGENT_STATE_READY);
  g_assert_cmpuint (info.handled, ==, 4);
  g_assert_cmpuint (observed_count (&observed, "$SYS.agent.restarted "), ==, 1);
  g_assert_cmpuint (observed_count (&observed, "supervised.seen "), ==, 2);
  for (guint i = 0; i < 2; i++)
    {
      g_autofree char *seen = observed_nth (&observed, "supervised.seen ", i);

      g_assert_cmpuint (text_get_number (seen, "id"), ==, id);
      g_assert_nonnull (strstr (seen, i == 0 ? "payload=a" : "payload=b"));
    }

  get_type_stats (host, "worker", &stats);
  g_assert_cmpuint (stats.failed, ==, 1);
  g_assert_cmpuint (stats.restarted, ==, 1);
  g_assert_cmpuint (stats.retried, ==, 0);
  g_assert_cmpuint (stats.failed_messages, ==, 1);
  g_assert_cmpuint (stats.n_agents, ==, 1);
  g_assert_cmpfloat (stats.restart_p50_us, >, 0.0);
  g_assert_cmpfloat (stats.success_rate, ==, 3.0 / 4.0);
  ah_host_get_stats (host, &host_stats);
  g_assert_cmpuint (host_stats.failed, ==, 1);

  g_clear_pointer (&host, ah_host_free);
  observed_clear (&observed);
  test_gate_clear (&gate);
}

static void
test_invalid_message (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) answer = NULL;
  AhTypeStats stats;
  AhHostStats host_stats;

  g_test_summary ("A batch failed with AH_AGENT_ERROR_INVALID_MESSAGE is the message's "
                  "fault: dead-lettered, never retried, and the agent runs on with its "
                  "state, unrestarted");

  host = test_host_start_from_yaml (
    "name: invalid\n"
    "plugin_path: [plugins]\n"
    "bus: {handler_batch: 1}\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: supervised\n"
    "    subscribe: [work]\n"
    "    supervision: {policy: one_for_one, failed_messages: retry}\n");

  publish (host, "work", "a");
  publish (host, "work", "invalid");
  publish (host, "work", "b");
  test_assert_account_exact (host);
  /* Its count went on from where it was: no restart zeroed it. */
  answer = ah_host_request (host, "work", "q", 1, 10000, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (g_bytes_get_data (answer, NULL), g_bytes_get_size (answer), "handled=3", 9);

  get_type_stats (host, "worker", &stats);
  g_assert_cmpuint (stats.failed, ==, 0);
  g_assert_cmpuint (stats.restarted, ==, 0);
  g_assert_cmpuint (stats.retried, ==, 0);
  g_assert_cmpuint (stats.failed_messages, ==, 1);
  g_assert_cmpuint (stats.handler_failures, ==, 1);
  ah_host_get_stats (host, &host_stats);
  g_assert_cmpuint (host_stats.failed, ==, 1);
}

static void
test_retry_other_agent (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autofree char *failed = NULL;
  g_autofree char *seen = NULL;
  Observed observed;
  AhTypeStats stats;
  AhHostStats host_stats;

  g_test_summary ("failed_messages: retry hands a failed batch's message, which came by a "
                  "queue subscription, to another agent of the type, marked redelivered");

  host = test_host_start_from_yaml (
    "name: retry-other\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: supervised\n"
    "    pool_size: 2\n"
    "    subscribe: [work]\n"
    "    supervision: {failed_messages: retry}\n");
  observed_init (&observed, host, ">");

  publish (host, "work", "fail-once");
  test_assert_account_exact (host);

  failed = observed_nth (&observed, "$SYS.agent.failed ", 0);
  seen = observed_nth (&observed, "supervised.seen ", 0);
  g_assert_cmpuint (observed_count (&observed, "supervised.seen "), ==, 1);
  g_assert_nonnull (strstr (seen, "redelivered=1 payload=fail-once"));
  g_assert_cmpuint (text_get_number (seen, "id"), !=, text_get_number (failed, "id"));

  get_type_stats (host, "worker", &stats);
  g_assert_cmpuint (stats.failed, ==, 1);
  g_assert_cmpuint (stats.retried, ==, 1);
  g_assert_cmpuint (stats.failed_messages, ==, 0);
  g_assert_cmpfloat (stats.success_rate, ==, 1.0);
  ah_host_get_stats (host, &host_stats);
  g_assert_cmpuint (host_stats.failed, ==, 0);
  g_assert_cmpuint (host_stats.dead_lettered, ==, 0);
  g_assert_cmpuint (host_stats.delivered, ==, host_stats.accepted);

  g_clear_pointer (&host, ah_host_free);
  observed_clear (&observed);
}

static void
test_retry_same_agent (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autofree char *failed = NULL;
  g_autofree char *seen = NULL;
  Observed observed;
  AhTypeStats stats;
  AhHostStats host_stats;

  g_test_summary ("A failed message that did not come by a queue subscription (here a "
                  "broadcast) goes back to the same agent, restarted; one redelivered "
                  "already is dead-lettered, and every message is accounted for");

  host = test_host_start_from_yaml (
    "name: retry-same\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: supervised\n"
    "    pool_size: 2\n"
    "    subscribe: [{subject: work, delivery: broadcast}]\n"
    "    supervision: {max_restarts: 100}\n");
  observed_init (&observed, host, ">");

  /* A broadcast reaches both agents: each fails once, each gets its own
   * copy back. */
  publish (host, "work", "fail-once");
  test_assert_account_exact (host);
  g_assert_cmpuint (observed_count (&observed, "supervised.seen "), ==, 2);
  for (guint i = 0; i < 2; i++)
    {
      g_autofree char *failure = observed_nth (&observed, "$SYS.agent.failed ", i);
      guint64 failed_id = text_get_number (failure, "id");
      gboolean found = FALSE;

      for (guint j = 0; j < 2; j++)
        {
          g_autofree char *text = observed_nth (&observed, "supervised.seen ", j);

          found |= text_get_number (text, "id") == failed_id
                   && strstr (text, "redelivered=1") != NULL;
        }
      g_assert_true (found);
    }

  /* "fail" fails its redelivery too: then it is dead-lettered. */
  publish (host, "work", "fail");
  test_assert_account_exact (host);

  get_type_stats (host, "worker", &stats);
  g_assert_cmpuint (stats.failed, ==, 2 + 4);
  g_assert_cmpuint (stats.restarted, ==, 2 + 4);
  g_assert_cmpuint (stats.retried, ==, 2 + 2);
  g_assert_cmpuint (stats.failed_messages, ==, 2);
  ah_host_get_stats (host, &host_stats);
  g_assert_cmpuint (host_stats.failed, ==, 2);

  g_clear_pointer (&host, ah_host_free);
  observed_clear (&observed);
}

/* ---- one_for_all and temporary ----------------------------------------------- */

static void
test_one_for_all (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GHashTable) ids = g_hash_table_new (g_int64_hash, g_int64_equal);
  g_autofree guint64 *keys = g_new0 (guint64, 3);
  Observed observed;
  AhTypeStats stats;

  g_test_summary ("one_for_all restarts every agent of the type when one fails, each "
                  "under its own id, and they all go on working");

  host = test_host_start_from_yaml (
    "name: all\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: supervised\n"
    "    pool_size: 3\n"
    "    subscribe: [work]\n"
    "    supervision: {policy: one_for_all, failed_messages: dead_letter}\n");
  observed_init (&observed, host, "$SYS.agent.>");

  publish (host, "work", "fail");
  observed_wait (&observed, "$SYS.agent.restarted ", 3);
  test_assert_account_exact (host);

  for (guint i = 0; i < 3; i++)
    {
      g_autofree char *text = observed_nth (&observed, "$SYS.agent.restarted ", i);
      AhAgentInfo info;

      keys[i] = text_get_number (text, "id");
      g_hash_table_add (ids, &keys[i]);
      g_assert_true (ah_host_get_agent_info (host, keys[i], &info, NULL));
      g_assert_cmpuint (info.restarts, ==, 1);
      g_assert_cmpint (info.state, !=, AH_AGENT_STATE_IDLE);
    }
  g_assert_cmpuint (g_hash_table_size (ids), ==, 3);

  get_type_stats (host, "worker", &stats);
  g_assert_cmpuint (stats.failed, ==, 1);
  g_assert_cmpuint (stats.restarted, ==, 3);
  g_assert_cmpuint (stats.n_agents, ==, 3);

  for (guint i = 0; i < 6; i++)
    publish (host, "work", "after");
  test_assert_account_exact (host);
  g_assert_cmpuint (observed_count (&observed, "$SYS.agent.restarted "), ==, 3);

  g_clear_pointer (&host, ah_host_free);
  observed_clear (&observed);
}

static void
test_temporary (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *failed = NULL;
  g_autofree char *stopped = NULL;
  Observed observed;
  AhTypeStats stats;
  AhAgentInfo info;

  g_test_summary ("temporary: the failed agent is stopped, not restarted, and its slot "
                  "goes back to the pool");

  host = test_host_start_from_yaml (
    "name: temporary\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: supervised\n"
    "    pool_size: 2\n"
    "    subscribe: [work]\n"
    "    supervision: {policy: temporary}\n");
  observed_init (&observed, host, "$SYS.agent.>");

  publish (host, "work", "fail-once");
  observed_wait (&observed, "$SYS.agent.stopped ", 1);
  test_assert_account_exact (host);

  failed = observed_nth (&observed, "$SYS.agent.failed ", 0);
  stopped = observed_nth (&observed, "$SYS.agent.stopped ", 0);
  g_assert_cmpuint (text_get_number (stopped, "id"), ==, text_get_number (failed, "id"));
  g_assert_true (ah_host_get_agent_info (host, text_get_number (failed, "id"), &info, &error));
  g_assert_no_error (error);
  g_assert_cmpint (info.state, ==, AH_AGENT_STATE_IDLE);

  get_type_stats (host, "worker", &stats);
  g_assert_cmpuint (stats.failed, ==, 1);
  g_assert_cmpuint (stats.restarted, ==, 0);
  g_assert_cmpuint (stats.n_agents, ==, 1);
  g_assert_cmpuint (stats.n_idle, ==, 1);
  g_assert_cmpuint (stats.terminated, ==, 1);
  /* Retried on the agent left, which handles it. */
  g_assert_cmpuint (stats.retried, ==, 1);
  g_assert_cmpuint (observed_count (&observed, "$SYS.agent.restarted "), ==, 0);

  g_clear_pointer (&host, ah_host_free);
  observed_clear (&observed);
}

static void
test_restart_init_fails (void)
{
  g_autoptr(AhHost) host = NULL;
  Observed observed;
  AhTypeStats stats;

  g_test_summary ("A restart whose init fails is tried again, each failure counted against "
                  "the budget (as OTP does); past it the type stops, and no half-made agent "
                  "is left");

  host = test_host_start_from_yaml (
    "name: restart-fails\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: supervised\n"
    "    subscribe: [work]\n"
    "    supervision: {failed_messages: dead_letter}\n"
    "    config: {init_fail_after: 1}\n");
  observed_init (&observed, host, "$SYS.agent.>");

  publish (host, "work", "fail");
  observed_wait (&observed, "$SYS.agent.stopped ", 1);
  test_assert_account_exact (host);

  /* The handler's failure, then three restarts whose init fails: the
   * fourth failure within the period is past the default budget of 3. */
  get_type_stats (host, "worker", &stats);
  g_assert_cmpuint (stats.failed, ==, 4);
  g_assert_cmpuint (stats.init_failures, ==, 3);
  g_assert_cmpuint (stats.restarted, ==, 0);
  g_assert_cmpuint (stats.n_agents, ==, 0);
  g_assert_true (stats.stopped);
  g_assert_cmpuint (observed_count (&observed, "$SYS.agent.failed "), ==, 4);

  g_clear_pointer (&host, ah_host_free);
  observed_clear (&observed);
}

/* ---- the restart budget ---------------------------------------------------------- */

static const char budget_yaml[] =
  "name: budget\n"
  "plugin_path: [plugins]\n"
  "run_timeout_ms: 30000\n"   /* a run that failed to escalate still ends */
  "agents:\n"
  "  worker:\n"
  "    plugin: supervised\n"
  "    subscribe: [work]\n"
  "    supervision: {max_restarts: 2, period_ms: 600000, failed_messages: dead_letter,\n"
  "                  required: %s}\n"
  "  other:\n"
  "    plugin: supervised\n"
  "    subscribe: [other]\n";

static void
test_budget_not_required (void)
{
  g_autofree char *yaml = g_strdup_printf (budget_yaml, "false");
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *event = NULL;
  Observed observed;
  AhTypeStats stats;
  AhHostStats before, after;

  g_test_summary ("More restarts than the budget within the period stop the type: its "
                  "agents are terminated, later spawns refused, its messages "
                  "dead-lettered and counted; the run goes on");

  host = test_host_start_from_yaml (yaml);
  observed_init (&observed, host, "$SYS.>");
  /* What the other type reports is heard: the only dead letter below is
   * the message to the stopped type. */
  g_assert_cmpuint (ah_host_subscribe (host, "supervised.seen", observed_add, &observed, &error), >, 0);

  for (guint i = 0; i < 3; i++)
    {
      publish (host, "work", "fail");
      test_assert_account_exact (host);
    }
  observed_wait (&observed, "$SYS.type.stopped ", 1);
  test_assert_account_exact (host);

  event = observed_nth (&observed, "$SYS.type.stopped ", 0);
  g_assert_true (g_str_has_prefix (event, "$SYS.type.stopped type=worker required=false "
                                          "reason=more than 2 restarts within 600000 ms"));
  g_assert_nonnull (strstr (event, "failing on 'fail' (test)"));
  g_assert_true (warning_logged ("agent type 'worker' stopped: more than 2 restarts within 600000 ms"));

  get_type_stats (host, "worker", &stats);
  g_assert_true (stats.stopped);
  g_assert_cmpuint (stats.n_agents, ==, 0);
  g_assert_cmpuint (stats.failed, ==, 3);
  g_assert_cmpuint (stats.restarted, ==, 2);
  g_assert_cmpuint (stats.failed_messages, ==, 3);

  g_assert_cmpuint (ah_host_spawn (host, "worker", &error), ==, AH_AGENT_ID_NONE);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_TYPE_STOPPED);
  g_clear_error (&error);

  ah_host_get_stats (host, &before);
  publish (host, "work", "lost?");
  publish (host, "other", "fine");
  test_assert_account_exact (host);
  ah_host_get_stats (host, &after);
  g_assert_cmpuint (after.dead_lettered - before.dead_lettered, ==, 1);
  g_assert_cmpuint (after.delivered - before.delivered, >=, 1);
  get_type_stats (host, "other", &stats);
  g_assert_false (stats.stopped);
  g_assert_cmpuint (stats.handled, ==, 1);

  g_clear_pointer (&host, ah_host_free);
  observed_clear (&observed);
}

static void
test_budget_required (void)
{
  g_autofree char *yaml = g_strdup_printf (budget_yaml, "true");
  g_autoptr(AhHost) host = NULL;
  g_autofree char *summary = NULL;
  g_autofree char *json = NULL;

  g_test_summary ("A required type exhausting its budget ends the run with exit code 1, "
                  "and the summary says why");

  host = test_host_start_from_yaml (yaml);
  /* One at a time: three failed calls, not one of three messages. */
  for (guint i = 0; i < 2; i++)
    {
      publish (host, "work", "fail");
      test_assert_account_exact (host);
    }
  publish (host, "work", "fail");
  g_assert_cmpint (ah_host_run (host), ==, 1);

  summary = ah_host_format_summary (host);
  g_assert_nonnull (strstr (summary, "stopped by supervision, exit code 1"));
  g_assert_nonnull (strstr (summary, "required agent type 'worker' stopped: more than 2 restarts"));
  g_assert_nonnull (strstr (summary, "STOPPED"));
  json = ah_host_format_summary_json (host);
  g_assert_nonnull (strstr (json, "\"stopped_by\": \"supervision\""));
  g_assert_nonnull (strstr (json, "\"stopped\": true"));
  g_assert_nonnull (strstr (json, "\"restarted\": 2"));
}

/* ---- the watchdog ---------------------------------------------------------------- */

static void
test_watchdog (void)
{
  SupervisedGate gate;
  g_autofree char *address = NULL;
  g_autofree char *yaml = NULL;
  g_autofree char *event = NULL;
  g_autofree char *expected = NULL;
  g_autoptr(AhHost) host = NULL;
  Observed observed;
  AhTypeStats stats;
  guint64 id;

  g_test_summary ("A handler running past its type's deadline is reported once by the "
                  "watchdog (warning, count, event) and left running");

  test_gate_init (&gate);
  address = gate_address (&gate);
  yaml = g_strdup_printf (
    "name: watchdog\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  slow:\n"
    "    plugin: supervised\n"
    "    subscribe: [work]\n"
    "    supervision: {handler_deadline_ms: 20}\n"
    "    config: {gate: \"%s\"}\n", address);
  host = test_host_start_from_yaml (yaml);
  observed_init (&observed, host, "$SYS.agent.overrun");

  publish (host, "work", "block");
  observed_wait (&observed, "$SYS.agent.overrun ", 1);
  /* Only now does the handler return. */
  test_gate_open (&gate);
  test_assert_account_exact (host);

  event = observed_nth (&observed, "$SYS.agent.overrun ", 0);
  id = text_get_number (event, "id");
  g_assert_true (g_str_has_prefix (event, "$SYS.agent.overrun type=slow id="));
  g_assert_cmpuint (text_get_number (event, "running_ms"), >=, 20);
  g_assert_nonnull (strstr (event, " deadline_ms=20"));
  expected = g_strdup_printf ("watchdog: slow agent %" G_GUINT64_FORMAT " handler running for ", id);
  g_assert_true (warning_logged (expected));

  get_type_stats (host, "slow", &stats);
  g_assert_cmpuint (stats.deadline_overruns, ==, 1);
  g_assert_cmpuint (observed_count (&observed, "$SYS.agent.overrun "), ==, 1);
  g_assert_cmpfloat (stats.handler_p99_us, >=, 20000.0 * 15 / 16);

  g_clear_pointer (&host, ah_host_free);
  observed_clear (&observed);
  test_gate_clear (&gate);
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, NULL);
  warnings = g_ptr_array_new_with_free_func (g_free);
  /* The host's warnings go to on_host_warning(), not to the fatal path. */
  g_log_set_always_fatal (G_LOG_FATAL_MASK | G_LOG_LEVEL_CRITICAL);
  g_log_set_handler ("agenthost", G_LOG_LEVEL_WARNING, on_host_warning, NULL);

  g_test_add_func ("/supervision/one-for-one/in-place", test_one_for_one_in_place);
  g_test_add_func ("/supervision/invalid-message/no-restart", test_invalid_message);
  g_test_add_func ("/supervision/retry/other-agent", test_retry_other_agent);
  g_test_add_func ("/supervision/retry/same-agent", test_retry_same_agent);
  g_test_add_func ("/supervision/one-for-all/all-restarted", test_one_for_all);
  g_test_add_func ("/supervision/temporary/stopped", test_temporary);
  g_test_add_func ("/supervision/restart/init-fails", test_restart_init_fails);
  g_test_add_func ("/supervision/budget/not-required", test_budget_not_required);
  g_test_add_func ("/supervision/budget/required", test_budget_required);
  g_test_add_func ("/supervision/watchdog/overrun", test_watchdog);

  return g_test_run ();
}
