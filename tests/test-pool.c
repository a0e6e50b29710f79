/* Pools and the host, through the public embedding API only: pre-warm,
 * spawn, terminate, requests from outside, the run's end and its account.
 *
 * SPDX-License-Identifier: MIT
 */
#include <agenthost/agenthost.h>

#include "host-helpers.h"

#include <string.h>

#define EVENT_TIMEOUT_US TEST_EVENT_TIMEOUT_US

/* ---- helpers ------------------------------------------------------------ */

static char *
request_text (AhHost     *host,
              const char *subject,
              const char *text,
              GError    **error)
{
  g_autoptr(GBytes) reply = ah_host_request (host, subject, text, strlen (text), 2000, error);
  gsize size;
  const char *data;

  if (reply == NULL)
    return NULL;
  data = g_bytes_get_data (reply, &size);
  return g_strndup (data, size);
}

/* Messages seen by a host subscription; the callback runs on a worker.
 * With @stop_host set, the host is asked to stop once @stop_after
 * messages were seen. */
typedef struct {
  GMutex     lock;
  GCond      cond;
  GPtrArray *payloads;   /* (element-type utf8) */
  AhHost    *stop_host;
  guint      stop_after;
} Observed;

static void
observed_add (const AhMessage *message,
              gpointer         user_data)
{
  Observed *observed = user_data;
  gsize size;
  const char *data = ah_message_get_data (message, &size);

  g_mutex_lock (&observed->lock);
  g_ptr_array_add (observed->payloads, g_strndup (data, size));
  if (observed->stop_host != NULL && observed->payloads->len == observed->stop_after)
    ah_host_request_stop (observed->stop_host, 0);
  g_cond_broadcast (&observed->cond);
  g_mutex_unlock (&observed->lock);
}

static void
observed_init (Observed *observed)
{
  g_mutex_init (&observed->lock);
  g_cond_init (&observed->cond);
  observed->payloads = g_ptr_array_new_with_free_func (g_free);
  observed->stop_host = NULL;
  observed->stop_after = 0;
}

/* Waits until @n messages were seen; fails the test after the timeout. */
static void
observed_wait (Observed *observed,
               guint     n)
{
  gint64 deadline = g_get_monotonic_time () + EVENT_TIMEOUT_US;

  g_mutex_lock (&observed->lock);
  while (observed->payloads->len < n)
    if (!g_cond_wait_until (&observed->cond, &observed->lock, deadline))
      break;
  g_assert_cmpuint (observed->payloads->len, >=, n);
  g_mutex_unlock (&observed->lock);
}

static void
observed_clear (Observed *observed)
{
  g_ptr_array_unref (observed->payloads);
  g_mutex_clear (&observed->lock);
  g_cond_clear (&observed->cond);
}

static AhAgentInfo
agent_info (AhHost   *host,
            AhAgentId id)
{
  g_autoptr(GError) error = NULL;
  AhAgentInfo info;

  g_assert_true (ah_host_get_agent_info (host, id, &info, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (info.id, ==, id);
  return info;
}

static const char echo_yaml[] =
  "name: echoes\n"
  "agents:\n"
  "  echo:\n"
  "    plugin: echo\n"
  "    pool_size: 5\n"
  "    subscribe: [echo.in, {subject: all.>, delivery: broadcast}]\n"
  "  mirror:\n"
  "    plugin: echo\n"
  "    pool_size: 3\n"
  "    subscribe: [mirror.in]\n"
  "    config: {reply_subject: mirror.out}\n";

/* ---- pre-warm ----------------------------------------------------------- */

static void
test_prewarm_all_agents (void)
{
  g_autoptr(AhHost) host = NULL;
  AhHostStats stats;
  AhTypeStats echo, mirror;

  g_test_summary ("Every pre-warming type starts its pool_size agents before start returns; two types may share one plugin");

  host = test_host_start_from_yaml (echo_yaml);
  ah_host_get_stats (host, &stats);
  g_assert_cmpuint (stats.n_agents, ==, 8);
  g_assert_cmpuint (stats.n_types, ==, 2);
  g_assert_cmpfloat (stats.prewarm_ms, >, 0.0);

  g_assert_true (test_get_type_stats (host, "echo", &echo));
  g_assert_true (test_get_type_stats (host, "mirror", &mirror));
  g_assert_cmpuint (echo.n_agents, ==, 5);
  g_assert_cmpuint (echo.spawned, ==, 5);
  g_assert_cmpuint (mirror.n_agents, ==, 3);
  g_assert_cmpuint (mirror.pool_size, ==, 3);
}

static void
test_prewarm_parallel (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *a = NULL;
  g_autofree char *b = NULL;

  g_test_summary ("Pools pre-warm concurrently: each slow-init agent waits in its init "
                  "until the other type's agent is in its own init, which can only "
                  "happen if both inits overlap");

  host = test_host_start_from_yaml (
    "name: overlap\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  a:\n"
    "    plugin: slow-init\n"
    "    subscribe: [probe.a]\n"
    "    config: {partner: b}\n"
    "  b:\n"
    "    plugin: slow-init\n"
    "    subscribe: [probe.b]\n"
    "    config: {partner: a}\n");

  a = request_text (host, "probe.a", "", &error);
  g_assert_no_error (error);
  b = request_text (host, "probe.b", "", &error);
  g_assert_no_error (error);
  g_assert_cmpstr (a, ==, "overlap=1");
  g_assert_cmpstr (b, ==, "overlap=1");
}

static void
test_prewarm_init_failure (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  AhHostStats stats;

  g_test_summary ("An agent whose init fails stops the start with the type, the plugin "
                  "and the plugin's own message, and no agent is left running");

  host = test_host_new_from_yaml (
    "name: broken\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  fine:\n"
    "    plugin: echo\n"
    "    pool_size: 4\n"
    "  doomed:\n"
    "    plugin: init-fails\n"
    "    pool_size: 2\n", &error);
  g_assert_no_error (error);

  g_assert_false (ah_host_start (host, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_PREWARM);
  g_assert_nonnull (strstr (error->message, "agent type 'doomed'"));
  g_assert_nonnull (strstr (error->message, "init-fails.so"));
  g_assert_nonnull (strstr (error->message, "init failed: refusing to start (test)"));

  ah_host_get_stats (host, &stats);
  g_assert_cmpuint (stats.n_agents, ==, 0);
}

static void
test_prewarm_off (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  AhTypeStats lazy;
  AhAgentId id;

  g_test_summary ("A type with prewarm: false starts empty; its agents come from spawn");

  host = test_host_start_from_yaml (
    "name: lazy\n"
    "agents:\n"
    "  lazy:\n"
    "    plugin: echo\n"
    "    pool_size: 4\n"
    "    prewarm: false\n"
    "    subscribe: [echo.in]\n");
  g_assert_true (test_get_type_stats (host, "lazy", &lazy));
  g_assert_cmpuint (lazy.n_agents, ==, 0);

  id = ah_host_spawn (host, "lazy", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (id, !=, AH_AGENT_ID_NONE);
  g_assert_true (test_get_type_stats (host, "lazy", &lazy));
  g_assert_cmpuint (lazy.n_agents, ==, 1);
}

/* ---- spawn and terminate ---------------------------------------------------- */

static void
test_spawn_reuse (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *echoed = NULL;
  AhTypeStats echo;
  AhAgentId spawned[4];

  g_test_summary ("A terminated agent goes back to its pool, the next spawn reuses it "
                  "under a new id, and spawns beyond the pool size add slots");

  host = test_host_start_from_yaml (
    "name: spawn\n"
    "agents:\n"
    "  echo:\n"
    "    plugin: echo\n"
    "    pool_size: 2\n"
    "    subscribe: [echo.in]\n");

  for (guint i = 0; i < G_N_ELEMENTS (spawned); i++)
    {
      spawned[i] = ah_host_spawn (host, "echo", &error);
      g_assert_no_error (error);
      for (guint j = 0; j < i; j++)
        g_assert_cmpuint (spawned[i], !=, spawned[j]);
    }
  g_assert_true (test_get_type_stats (host, "echo", &echo));
  g_assert_cmpuint (echo.n_agents, ==, 6);
  g_assert_cmpuint (echo.spawned, ==, 6);

  g_assert_true (ah_host_terminate (host, spawned[0], &error));
  g_assert_no_error (error);
  g_assert_true (ah_host_terminate (host, spawned[1], &error));
  g_assert_true (test_get_type_stats (host, "echo", &echo));
  g_assert_cmpuint (echo.n_agents, ==, 4);
  g_assert_cmpuint (echo.terminated, ==, 2);

  /* Gone agents are gone: terminating again fails, sending dead-letters. */
  g_assert_false (ah_host_terminate (host, spawned[0], &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_AGENT);
  g_clear_error (&error);

  spawned[0] = ah_host_spawn (host, "echo", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (spawned[0], >, spawned[3]);   /* ids are never reused */
  g_assert_true (test_get_type_stats (host, "echo", &echo));
  g_assert_cmpuint (echo.n_agents, ==, 5);
  g_assert_cmpuint (echo.spawned, ==, 7);

  echoed = request_text (host, "echo.in", "still there", &error);
  g_assert_no_error (error);
  g_assert_cmpstr (echoed, ==, "still there");
  test_assert_account_exact (host);
}

static void
test_spawn_errors (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;

  g_test_summary ("Spawning an unknown type and terminating an unknown agent are errors");

  host = test_host_start_from_yaml (echo_yaml);
  g_assert_cmpuint (ah_host_spawn (host, "nope", &error), ==, AH_AGENT_ID_NONE);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_TYPE);
  g_clear_error (&error);
  g_assert_false (ah_host_terminate (host, 123456789, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_AGENT);
}

static void
test_spawn_init_failure (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  AhTypeStats doomed;

  g_test_summary ("A spawn whose init fails reports the plugin's message and leaves the pool as it was");

  host = test_host_start_from_yaml (
    "name: spawn-fail\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  doomed:\n"
    "    plugin: init-fails\n"
    "    prewarm: false\n");
  g_assert_cmpuint (ah_host_spawn (host, "doomed", &error), ==, AH_AGENT_ID_NONE);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_PREWARM);
  g_assert_nonnull (strstr (error->message, "init failed: refusing to start (test)"));
  g_assert_true (test_get_type_stats (host, "doomed", &doomed));
  g_assert_cmpuint (doomed.n_agents, ==, 0);
  g_assert_cmpuint (doomed.init_failures, ==, 1);
}

static void
test_lifecycle_events (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *spawned_text = NULL;
  g_autofree char *stopped_text = NULL;
  Observed observed;
  AhHostStats before, after;
  AhAgentId id;

  g_test_summary ("Spawns, stops and handler failures are announced on $SYS.agent.*; "
                  "with nobody listening they are not counted at all");

  observed_init (&observed);
  host = test_host_start_from_yaml (
    "name: lifecycle\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  flaky:\n"
    "    plugin: flaky\n"
    "    subscribe: [flaky.in]\n");

  /* Nobody listens yet: the account does not move. */
  test_assert_account_exact (host);
  ah_host_get_stats (host, &before);
  id = ah_host_spawn (host, "flaky", &error);
  g_assert_no_error (error);
  g_assert_true (ah_host_terminate (host, id, &error));
  test_assert_account_exact (host);
  ah_host_get_stats (host, &after);
  g_assert_cmpuint (after.accepted, ==, before.accepted);
  g_assert_cmpuint (after.dead_lettered, ==, before.dead_lettered);

  g_assert_cmpuint (ah_host_subscribe (host, "$SYS.agent.>", observed_add, &observed, &error), >, 0);
  id = ah_host_spawn (host, "flaky", &error);
  g_assert_no_error (error);
  test_assert_account_exact (host);
  g_assert_true (ah_host_terminate (host, id, &error));
  test_assert_account_exact (host);
  g_assert_true (ah_host_publish (host, "flaky.in", "fail", 4, &error));
  test_assert_account_exact (host);

  /* The failed message is retried once on the only agent, which fails
   * it again: each failure is followed by the agent's restart. */
  g_assert_cmpuint (observed.payloads->len, ==, 6);
  spawned_text = g_strdup_printf ("type=flaky id=%" G_GUINT64_FORMAT " index=1", id);
  stopped_text = g_strdup_printf ("type=flaky id=%" G_GUINT64_FORMAT " index=1", id);
  g_assert_cmpstr (g_ptr_array_index (observed.payloads, 0), ==, spawned_text);
  g_assert_cmpstr (g_ptr_array_index (observed.payloads, 1), ==, stopped_text);
  for (guint i = 2; i < 6; i += 2)
    {
      g_assert_true (g_str_has_prefix (g_ptr_array_index (observed.payloads, i), "type=flaky id="));
      g_assert_true (g_str_has_suffix (g_ptr_array_index (observed.payloads, i), " index=0 reason=flaky failure"));
      g_assert_true (g_str_has_suffix (g_ptr_array_index (observed.payloads, i + 1), " index=0"));
    }

  g_clear_pointer (&host, ah_host_free);
  observed_clear (&observed);
}


/* ---- batches, waves and bounds ------------------------------------------------ */

static void
test_spawn_batch_one_fails (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  AhSpawnResult results[5];
  AhTypeStats stats;
  guint started;

  g_test_summary ("A batch spawn reports each agent's outcome: the one whose init fails "
                  "has its error, the others run");

  host = test_host_start_from_yaml (
    "name: batch\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: supervised\n"
    "    pool_size: 5\n"
    "    prewarm: false\n"
    "    subscribe: [work]\n"
    "    config: {fail_init_index: 2}\n");

  started = ah_host_spawn_batch (host, "worker", G_N_ELEMENTS (results), results, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (started, ==, 4);
  for (guint i = 0; i < G_N_ELEMENTS (results); i++)
    {
      if (i == 2)
        {
          g_assert_cmpuint (results[i].id, ==, AH_AGENT_ID_NONE);
          g_assert_error (results[i].error, AH_HOST_ERROR, AH_HOST_ERROR_PREWARM);
          g_assert_nonnull (strstr (results[i].error->message,
                                    "init failed: refusing to start at index 2 (test)"));
          continue;
        }
      g_assert_no_error (results[i].error);
      g_assert_cmpuint (agent_info (host, results[i].id).index, ==, i);
      g_assert_cmpint (agent_info (host, results[i].id).state, ==, AH_AGENT_STATE_READY);
    }
  g_assert_true (test_get_type_stats (host, "worker", &stats));
  g_assert_cmpuint (stats.n_agents, ==, 4);
  g_assert_cmpuint (stats.init_failures, ==, 1);
  g_assert_cmpuint (stats.failed, ==, 1);
  ah_spawn_results_clear (results, G_N_ELEMENTS (results));
  g_assert_null (results[2].error);

  /* The failed slot went back to the pool: the next spawn takes it (and
   * the plugin refuses that index again). */
  g_assert_cmpuint (ah_host_spawn (host, "worker", &error), ==, AH_AGENT_ID_NONE);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_PREWARM);
  g_assert_nonnull (strstr (error->message, "refusing to start at index 2"));
  g_clear_error (&error);

  g_assert_cmpuint (ah_host_spawn_batch (host, "nope", 1, results, &error), ==, 0);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_TYPE);
  test_assert_account_exact (host);
}

static void
test_spawn_batch_large (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(GHashTable) ids = g_hash_table_new (g_int64_hash, g_int64_equal);
  g_autofree AhSpawnResult *results = g_new0 (AhSpawnResult, 1000);
  g_autofree char *echoed = NULL;
  AhTypeStats stats;

  g_test_summary ("A large batch (started in parallel chunks) gives every agent its own "
                  "id and slot, they all take traffic, and each is found by id until it "
                  "is terminated");

  host = test_host_start_from_yaml (
    "name: big-batch\n"
    "agents:\n"
    "  echo:\n"
    "    plugin: echo\n"
    "    pool_size: 100\n"
    "    prewarm: false\n"
    "    subscribe: [echo.in]\n");

  g_assert_cmpuint (ah_host_spawn_batch (host, "echo", 1000, results, &error), ==, 1000);
  g_assert_no_error (error);
  for (guint i = 0; i < 1000; i++)
    {
      g_assert_no_error (results[i].error);
      g_assert_true (g_hash_table_add (ids, &results[i].id));
    }
  g_assert_true (test_get_type_stats (host, "echo", &stats));
  g_assert_cmpuint (stats.n_agents, ==, 1000);
  g_assert_cmpuint (stats.spawned, ==, 1000);
  echoed = request_text (host, "echo.in", "many", &error);
  g_assert_no_error (error);
  g_assert_cmpstr (echoed, ==, "many");

  /* Every other one goes: the others are still found, by id. */
  for (guint i = 1; i < 1000; i += 2)
    g_assert_true (ah_host_terminate (host, results[i].id, &error));
  g_assert_no_error (error);
  for (guint i = 0; i < 1000; i++)
    g_assert_cmpint (agent_info (host, results[i].id).state, ==,
                     i % 2 == 0 ? AH_AGENT_STATE_READY : AH_AGENT_STATE_IDLE);
  g_assert_true (test_get_type_stats (host, "echo", &stats));
  g_assert_cmpuint (stats.n_agents, ==, 500);
  for (guint i = 0; i < 1000; i += 2)
    g_assert_true (ah_host_terminate (host, results[i].id, &error));
  g_assert_false (ah_host_terminate (host, results[0].id, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_AGENT);
  g_assert_true (test_get_type_stats (host, "echo", &stats));
  g_assert_cmpuint (stats.n_agents, ==, 0);
  g_assert_cmpuint (stats.n_idle, ==, 1000);
  ah_spawn_results_clear (results, 1000);
}

static void
test_spawn_pool_max (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  AhSpawnResult results[4];
  AhTypeStats stats;
  AhAgentId id, spawned;

  g_test_summary ("Spawns stop at the pool's max: a batch starts what fits and reports the "
                  "rest, a spawn at the max is refused, and a terminate makes room again");

  host = test_host_start_from_yaml (
    "name: bounded\n"
    "agents:\n"
    "  echo:\n"
    "    plugin: echo\n"
    "    pool_size: 2\n"
    "    pool: {max: 4}\n");

  g_assert_cmpuint (ah_host_spawn_batch (host, "echo", 4, results, &error), ==, 2);
  g_assert_no_error (error);
  g_assert_no_error (results[1].error);
  g_assert_error (results[2].error, AH_HOST_ERROR, AH_HOST_ERROR_POOL_LIMIT);
  g_assert_error (results[3].error, AH_HOST_ERROR, AH_HOST_ERROR_POOL_LIMIT);
  g_assert_cmpstr (results[3].error->message, ==, "agent type 'echo' is at its pool max of 4 agents");
  spawned = results[0].id;

  g_assert_cmpuint (ah_host_spawn (host, "echo", &error), ==, AH_AGENT_ID_NONE);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_POOL_LIMIT);
  g_clear_error (&error);
  ah_spawn_results_clear (results, 2);
  g_assert_cmpuint (ah_host_spawn_batch (host, "echo", 2, results, &error), ==, 0);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_POOL_LIMIT);
  g_assert_null (results[0].error);
  g_clear_error (&error);

  g_assert_true (ah_host_terminate (host, spawned, &error));
  g_assert_no_error (error);
  id = ah_host_spawn (host, "echo", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (id, !=, AH_AGENT_ID_NONE);
  g_assert_true (test_get_type_stats (host, "echo", &stats));
  g_assert_cmpuint (stats.n_agents, ==, 4);
  g_assert_cmpuint (stats.pool_max, ==, 4);
  ah_spawn_results_clear (results, G_N_ELEMENTS (results));
}

static void
test_spawn_waves (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  AhSpawnResult results[10];
  Observed observed;

  g_test_summary ("Waves start every agent, in order: slot by slot, ids increasing, the "
                  "spawn events in the same order");

  observed_init (&observed);
  host = test_host_start_from_yaml (
    "name: waves\n"
    "agents:\n"
    "  echo:\n"
    "    plugin: echo\n"
    "    pool_size: 10\n"
    "    prewarm: false\n");
  g_assert_cmpuint (ah_host_subscribe (host, "$SYS.agent.spawned", observed_add, &observed, &error), >, 0);

  g_assert_cmpuint (ah_host_spawn_waves (host, "echo", 10, 3, 1, results, &error), ==, 10);
  g_assert_no_error (error);
  observed_wait (&observed, 10);
  for (guint i = 0; i < 10; i++)
    {
      g_autofree char *expected = g_strdup_printf ("type=echo id=%" G_GUINT64_FORMAT " index=%u",
                                                   results[i].id, i);

      g_assert_no_error (results[i].error);
      if (i > 0)
        g_assert_cmpuint (results[i].id, >, results[i - 1].id);
      g_assert_cmpuint (agent_info (host, results[i].id).index, ==, i);
      g_assert_cmpstr (g_ptr_array_index (observed.payloads, i), ==, expected);
    }

  g_assert_cmpuint (ah_host_spawn_waves (host, "nope", 1, 1, 0, results, &error), ==, 0);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_TYPE);

  g_clear_pointer (&host, ah_host_free);
  observed_clear (&observed);
}

static void
test_spawn_waves_stopped (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  AhSpawnResult results[10];
  Observed observed;

  g_test_summary ("A stop request ends the pause between two waves at once: only the "
                  "first wave of 4 started, the others report why");

  observed_init (&observed);
  host = test_host_start_from_yaml (
    "name: waves-stopped\n"
    "agents:\n"
    "  echo:\n"
    "    plugin: echo\n"
    "    pool_size: 10\n"
    "    prewarm: false\n");
  observed.stop_host = host;
  observed.stop_after = 4;
  g_assert_cmpuint (ah_host_subscribe (host, "$SYS.agent.spawned", observed_add, &observed, &error), >, 0);

  /* A pause of an hour: only the stop can end it within the test. */
  g_assert_cmpuint (ah_host_spawn_waves (host, "echo", 10, 4, 3600 * 1000, results, &error), ==, 4);
  g_assert_no_error (error);
  for (guint i = 0; i < 10; i++)
    {
      if (i < 4)
        {
          g_assert_no_error (results[i].error);
          continue;
        }
      g_assert_cmpuint (results[i].id, ==, AH_AGENT_ID_NONE);
      g_assert_error (results[i].error, AH_HOST_ERROR, AH_HOST_ERROR_STATE);
    }
  ah_spawn_results_clear (results, G_N_ELEMENTS (results));

  g_clear_pointer (&host, ah_host_free);
  observed_clear (&observed);
}

static void
test_terminate_idle_cap (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  AhAgentId first, b, c, d;
  AhAgentInfo info;
  AhTypeStats stats;

  g_test_summary ("A terminated agent's slot returns to the pool and the next spawn takes "
                  "it (same index) up to the idle cap; beyond the cap a spawned slot's "
                  "memory is released, the initial block's never");

  host = test_host_start_from_yaml (
    "name: cap\n"
    "agents:\n"
    "  echo:\n"
    "    plugin: echo\n"
    "    pool_size: 1\n"
    "    prewarm: false\n"
    "    pool: {idle_cap: 1}\n");

  first = ah_host_spawn (host, "echo", &error);   /* the initial block's slot 0 */
  b = ah_host_spawn (host, "echo", &error);
  c = ah_host_spawn (host, "echo", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (agent_info (host, first).index, ==, 0);
  g_assert_cmpuint (agent_info (host, b).index, ==, 1);
  g_assert_cmpuint (agent_info (host, c).index, ==, 2);

  /* Under the cap: kept, and reused by the next spawn. */
  g_assert_true (ah_host_terminate (host, c, &error));
  info = agent_info (host, c);
  g_assert_cmpint (info.state, ==, AH_AGENT_STATE_IDLE);
  g_assert_cmpuint (info.index, ==, 2);
  d = ah_host_spawn (host, "echo", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (d, >, c);
  g_assert_cmpuint (agent_info (host, d).index, ==, 2);
  g_assert_false (ah_host_get_agent_info (host, c, &info, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_AGENT);
  g_clear_error (&error);

  /* At the cap: the second idle slot is freed... */
  g_assert_true (ah_host_terminate (host, d, &error));
  g_assert_true (ah_host_terminate (host, b, &error));
  g_assert_no_error (error);
  g_assert_true (test_get_type_stats (host, "echo", &stats));
  g_assert_cmpuint (stats.n_idle, ==, 1);
  g_assert_cmpint (agent_info (host, d).state, ==, AH_AGENT_STATE_IDLE);
  g_assert_false (ah_host_get_agent_info (host, b, &info, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_AGENT);
  g_clear_error (&error);

  /* ...but the initial block's slot stays, over the cap. */
  g_assert_true (ah_host_terminate (host, first, &error));
  g_assert_true (test_get_type_stats (host, "echo", &stats));
  g_assert_cmpuint (stats.n_idle, ==, 2);
  g_assert_cmpuint (stats.n_agents, ==, 0);

  /* Most recently freed first; then the freed index is reused. */
  g_assert_cmpuint (agent_info (host, ah_host_spawn (host, "echo", &error)).index, ==, 0);
  g_assert_cmpuint (agent_info (host, ah_host_spawn (host, "echo", &error)).index, ==, 2);
  g_assert_cmpuint (agent_info (host, ah_host_spawn (host, "echo", &error)).index, ==, 1);
  g_assert_no_error (error);
  test_assert_account_exact (host);
}

static void
test_agent_info (void)
{
  SupervisedGate gate;
  g_autofree char *yaml = NULL;
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  AhSpawnResult result;
  AhAgentInfo info;
  AhAgentId id;
  gint64 before = g_get_monotonic_time ();

  g_test_summary ("An agent's info follows it: ready after its spawn, busy in its handler, "
                  "idle once terminated; spawn time, last activity and messages handled");

  test_gate_init (&gate);
  yaml = g_strdup_printf (
    "name: info\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: supervised\n"
    "    prewarm: false\n"
    "    subscribe: [work]\n"
    "    config: {gate: \"%" G_GSIZE_FORMAT "\"}\n", (gsize) &gate);
  host = test_host_start_from_yaml (yaml);

  g_assert_cmpuint (ah_host_spawn_batch (host, "worker", 1, &result, &error), ==, 1);
  id = result.id;
  info = agent_info (host, id);
  g_assert_cmpstr (info.type_name, ==, "worker");
  g_assert_cmpint (info.state, ==, AH_AGENT_STATE_READY);
  g_assert_cmpstr (ah_agent_state_to_string (info.state), ==, "ready");
  g_assert_cmpint (info.spawn_time_us, >=, before);
  g_assert_cmpint (info.last_active_us, ==, info.spawn_time_us);
  g_assert_cmpuint (info.handled, ==, 0);
  g_assert_cmpuint (info.restarts, ==, 0);

  g_assert_true (ah_host_publish (host, "work", "block", 5, &error));
  test_gate_wait_entered (&gate, 1);
  g_assert_cmpint (agent_info (host, id).state, ==, AH_AGENT_STATE_BUSY);
  test_gate_open (&gate);
  g_assert_true (ah_host_publish (host, "work", "x", 1, &error));
  test_assert_account_exact (host);
  info = agent_info (host, id);
  g_assert_cmpint (info.state, ==, AH_AGENT_STATE_READY);
  g_assert_cmpuint (info.handled, ==, 2);
  g_assert_cmpint (info.last_active_us, >, info.spawn_time_us);

  g_assert_true (ah_host_terminate (host, id, &error));
  g_assert_no_error (error);
  info = agent_info (host, id);
  g_assert_cmpint (info.state, ==, AH_AGENT_STATE_IDLE);
  g_assert_cmpstr (ah_agent_state_to_string (info.state), ==, "idle");
  g_assert_false (ah_host_get_agent_info (host, 987654321, &info, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_AGENT);

  g_clear_pointer (&host, ah_host_free);
  test_gate_clear (&gate);
}

/* ---- autoscale ---------------------------------------------------------------------- */

static void
test_autoscale_up_and_down (void)
{
  SupervisedGate gate;
  g_autofree char *yaml = NULL;
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  Observed scaled, seen;
  AhTypeStats stats;
  AhHostStats host_stats;

  g_test_summary ("Autoscale grows a type whose mailboxes stay deep, up to its max, and "
                  "shrinks it back to its min once its agents stay idle; each decision is "
                  "announced and counted, and no message is lost to it");

  test_gate_init (&gate);
  observed_init (&scaled);
  observed_init (&seen);
  yaml = g_strdup_printf (
    "name: scale\n"
    "plugin_path: [plugins]\n"
    "bus: {handler_batch: 1}\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: supervised\n"
    "    subscribe: [work]\n"
    "    pool: {min: 1, max: 3}\n"
    "    autoscale: {scale_up_depth: 4, scale_up_after_ms: 0, scale_down_idle_ms: 50, step: 2}\n"
    "    config: {gate: \"%" G_GSIZE_FORMAT "\"}\n", (gsize) &gate);
  host = test_host_start_from_yaml (yaml);
  g_assert_cmpuint (ah_host_subscribe (host, "$SYS.pool.scaled", observed_add, &scaled, &error), >, 0);
  g_assert_cmpuint (ah_host_subscribe (host, "supervised.seen", observed_add, &seen, &error), >, 0);

  /* The only agent is held while its mailbox fills. */
  g_assert_true (ah_host_publish (host, "work", "block", 5, &error));
  test_gate_wait_entered (&gate, 1);
  for (guint i = 0; i < 20; i++)
    g_assert_true (ah_host_publish (host, "work", "m", 1, &error));
  test_gate_open (&gate);

  /* Down to the min in one decision, or two when the two new agents'
   * idle times fall on either side of a check. */
  observed_wait (&scaled, 2);
  g_assert_cmpstr (g_ptr_array_index (scaled.payloads, 0), ==, "type=worker from=1 to=3 reason=deep");
  if (g_strcmp0 (g_ptr_array_index (scaled.payloads, 1), "type=worker from=3 to=2 reason=idle") == 0)
    {
      observed_wait (&scaled, 3);
      g_assert_cmpstr (g_ptr_array_index (scaled.payloads, 2), ==, "type=worker from=2 to=1 reason=idle");
    }
  else
    g_assert_cmpstr (g_ptr_array_index (scaled.payloads, 1), ==, "type=worker from=3 to=1 reason=idle");
  test_assert_account_exact (host);

  g_assert_true (test_get_type_stats (host, "worker", &stats));
  g_assert_cmpuint (stats.scaled_up, ==, 2);
  g_assert_cmpuint (stats.scaled_down, ==, 2);
  g_assert_cmpuint (stats.n_agents, ==, 1);
  g_assert_cmpuint (stats.handled, ==, 21);
  ah_host_get_stats (host, &host_stats);
  g_assert_cmpuint (host_stats.dead_lettered, ==, 0);
  g_assert_cmpuint (host_stats.failed, ==, 0);
  g_assert_cmpuint (seen.payloads->len, ==, 20);

  g_clear_pointer (&host, ah_host_free);
  observed_clear (&scaled);
  observed_clear (&seen);
  test_gate_clear (&gate);
}

/* ---- traffic ------------------------------------------------------------ */

static void
test_request_reply (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *reply = NULL;
  AhHostStats stats;

  g_test_summary ("A request from outside reaches one agent and its reply comes back");

  host = test_host_start_from_yaml (echo_yaml);
  reply = request_text (host, "mirror.in", "ping", &error);
  g_assert_no_error (error);
  g_assert_cmpstr (reply, ==, "ping");

  test_assert_account_exact (host);
  ah_host_get_stats (host, &stats);
  g_assert_cmpuint (stats.requests, >=, 1);
}

static void
test_request_no_responders (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) reply = NULL;
  AhHostStats stats;

  g_test_summary ("A request nobody subscribes to fails at once with no responders, and is dead-lettered");

  host = test_host_start_from_yaml (echo_yaml);
  reply = ah_host_request (host, "nobody.home", "x", 1, 10000, &error);
  g_assert_null (reply);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_NO_RESPONDERS);

  test_assert_account_exact (host);
  ah_host_get_stats (host, &stats);
  g_assert_cmpuint (stats.dead_lettered, >=, 1);
}

static void
test_request_timeout (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) reply = NULL;
  AhHostStats stats;
  AhTypeStats flaky;

  g_test_summary ("A request whose handler fails gets no reply and times out; the failure is "
                  "counted, the message retried once on the restarted agent, then dead-lettered");

  host = test_host_start_from_yaml (
    "name: flaky\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  flaky:\n"
    "    plugin: flaky\n"
    "    subscribe: [flaky.in]\n");
  reply = ah_host_request (host, "flaky.in", "fail", 4, 50, &error);
  g_assert_null (reply);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_TIMEOUT);

  test_assert_account_exact (host);
  ah_host_get_stats (host, &stats);
  g_assert_cmpuint (stats.failed, ==, 1);
  g_assert_cmpuint (stats.request_timeouts, ==, 1);
  g_assert_true (test_get_type_stats (host, "flaky", &flaky));
  g_assert_cmpuint (flaky.handler_failures, ==, 2);
  g_assert_cmpuint (flaky.failed, ==, 2);
  g_assert_cmpuint (flaky.restarted, ==, 2);
  g_assert_cmpuint (flaky.retried, ==, 1);
  g_assert_cmpuint (flaky.failed_messages, ==, 1);
  g_assert_cmpuint (stats.n_agents, ==, 1);
}

static void
test_publish_queue_and_broadcast (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  Observed observed;
  AhTypeStats echo;

  g_test_summary ("Queue delivery hands each message to one agent of the pool, "
                  "broadcast to every agent");

  observed_init (&observed);
  host = test_host_start_from_yaml (echo_yaml);
  g_assert_cmpuint (ah_host_subscribe (host, "echo.out", observed_add, &observed, &error), >, 0);
  g_assert_no_error (error);

  for (guint i = 0; i < 100; i++)
    {
      g_autofree char *text = g_strdup_printf ("q%u", i);
      g_assert_true (ah_host_publish (host, "echo.in", text, strlen (text), &error));
      g_assert_no_error (error);
    }
  g_assert_true (ah_host_publish (host, "all.hands", "b", 1, &error));
  test_assert_account_exact (host);

  /* 100 queued messages echoed once each, the broadcast by all 5 agents. */
  g_assert_cmpuint (observed.payloads->len, ==, 105);
  g_assert_true (test_get_type_stats (host, "echo", &echo));
  g_assert_cmpuint (echo.handled, ==, 105);

  g_clear_pointer (&host, ah_host_free);
  observed_clear (&observed);
}

static void
test_publish_dead_letter (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  AhHostStats before, after;

  g_test_summary ("A message nobody subscribes to, or sent to an agent that does not exist, is dead-lettered and counted");

  host = test_host_start_from_yaml (echo_yaml);
  test_assert_account_exact (host);
  ah_host_get_stats (host, &before);
  g_assert_true (ah_host_publish (host, "no.one.listens", "x", 1, &error));
  g_assert_true (ah_host_send (host, 987654321, "direct", "y", 1, &error));
  g_assert_no_error (error);
  test_assert_account_exact (host);
  ah_host_get_stats (host, &after);
  g_assert_cmpuint (after.dead_lettered - before.dead_lettered, ==, 2);
  g_assert_cmpuint (after.accepted - before.accepted, ==, 2);
}

static void
test_publish_invalid (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;

  g_test_summary ("Publishing to an invalid subject, or before start, is an error");

  host = test_host_new_from_yaml (echo_yaml, &error);
  g_assert_no_error (error);
  g_assert_false (ah_host_publish (host, "echo.in", "x", 1, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_STATE);
  g_clear_error (&error);

  ah_host_start (host, &error);
  g_assert_no_error (error);
  g_assert_false (ah_host_publish (host, "bad..subject", "x", 1, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT);
  g_clear_error (&error);
  g_assert_false (ah_host_publish (host, "wild.*", "x", 1, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT);
}

/* ---- the run ---------------------------------------------------------------- */

static void
test_run_stop_when_idle (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autofree char *summary = NULL;
  g_autofree char *json = NULL;
  AhHostStats stats;

  g_test_summary ("With stop_when_idle the run ends by itself once nothing is in flight, "
                  "stops every agent, and the summary gives the account");

  host = test_host_start_from_yaml (
    "name: idle\n"
    "stop_when_idle: true\n"
    "agents:\n"
    "  echo:\n"
    "    plugin: echo\n"
    "    pool_size: 3\n"
    "    subscribe: [{subject: $SYS.host.started, delivery: broadcast}]\n");
  g_assert_cmpint (ah_host_run (host), ==, 0);

  ah_host_get_stats (host, &stats);
  g_assert_cmpuint (stats.n_agents, ==, 0);
  g_assert_cmpuint (stats.in_flight, ==, 0);
  /* The start event reached 3 agents; each echo went nowhere. */
  g_assert_cmpuint (stats.delivered, ==, 3);
  g_assert_cmpuint (stats.dead_lettered, ==, 3);
  g_assert_cmpuint (stats.accepted, ==, 6);

  summary = ah_host_format_summary (host);
  g_assert_nonnull (strstr (summary, "6 accepted = 3 delivered + 3 dead-lettered + 0 failed"));
  g_assert_nonnull (strstr (summary, "stopped by idle"));
  json = ah_host_format_summary_json (host);
  g_assert_nonnull (strstr (json, "\"delivered\": 3"));
  g_assert_nonnull (strstr (json, "\"stopped_by\": \"idle\""));
}

static gpointer
stop_later (gpointer data)
{
  ah_host_request_stop (data, 7);
  return NULL;
}

static void
test_run_request_stop (void)
{
  g_autoptr(AhHost) host = NULL;
  GThread *thread;

  g_test_summary ("ah_host_request_stop from another thread ends the run with its exit code");

  host = test_host_start_from_yaml (echo_yaml);
  thread = g_thread_new ("stopper", stop_later, host);
  g_assert_cmpint (ah_host_run (host), ==, 7);
  g_thread_join (thread);
}

static void
test_run_agent_stop (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autofree char *summary = NULL;

  g_test_summary ("An agent's ah_context_request_stop ends the run with the agent's exit code");

  host = test_host_start_from_yaml (
    "name: stopping\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  stopper:\n"
    "    plugin: stopper\n"
    "    subscribe: [$SYS.host.started]\n"
    "    config: {exit_code: 42}\n");
  g_assert_cmpint (ah_host_run (host), ==, 42);
  summary = ah_host_format_summary (host);
  g_assert_nonnull (strstr (summary, "stopped by agent request, exit code 42"));
}

static void
test_run_timeout (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autofree char *summary = NULL;

  g_test_summary ("run_timeout_ms ends a run that would otherwise go on");

  host = test_host_start_from_yaml (
    "name: bounded\n"
    "run_timeout_ms: 50\n"
    "agents:\n"
    "  echo:\n"
    "    plugin: echo\n");
  g_assert_cmpint (ah_host_run (host), ==, 0);
  summary = ah_host_format_summary (host);
  g_assert_nonnull (strstr (summary, "stopped by run timeout"));
}


static void
test_run_summary_per_type (void)
{
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GError) error = NULL;
  g_autofree char *summary = NULL;
  g_autofree char *json = NULL;

  g_test_summary ("The summary and its JSON give per type what was spawned, restarted, "
                  "failed, handled and retried, handler times and the success rate");

  host = test_host_start_from_yaml (
    "name: summary\n"
    "plugin_path: [plugins]\n"
    "agents:\n"
    "  worker:\n"
    "    plugin: supervised\n"
    "    pool_size: 2\n"
    "    subscribe: [work]\n");
  g_assert_true (ah_host_publish (host, "work", "fail-once", 9, &error));
  test_assert_account_exact (host);
  ah_host_request_stop (host, 0);
  g_assert_cmpint (ah_host_run (host), ==, 0);

  summary = ah_host_format_summary (host);
  g_assert_nonnull (strstr (summary, "restarted  retried  handler p50/p99 us  success"));
  g_assert_nonnull (strstr (summary, "  success     100.00% "));
  json = ah_host_format_summary_json (host);
  g_assert_nonnull (strstr (json, "\"success_rate\": 1.000"));
  g_assert_nonnull (strstr (json, "\"handler_failures\": 1"));
  g_assert_nonnull (strstr (json, "\"pool_min\": 2, \"pool_max\": null"));
  g_assert_nonnull (strstr (json, "\"restarted\": 1, \"failed\": 1, \"retried\": 1, "
                                  "\"failed_messages\": 0, \"deadline_overruns\": 0, "
                                  "\"stopped\": false, \"handler_us\": {\"p50\": "));
  g_assert_nonnull (strstr (json, "\"stop_detail\": null"));
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/pool/prewarm/all-agents", test_prewarm_all_agents);
  g_test_add_func ("/pool/prewarm/parallel", test_prewarm_parallel);
  g_test_add_func ("/pool/prewarm/init-failure", test_prewarm_init_failure);
  g_test_add_func ("/pool/prewarm/off", test_prewarm_off);
  g_test_add_func ("/pool/spawn/reuse", test_spawn_reuse);
  g_test_add_func ("/pool/spawn/errors", test_spawn_errors);
  g_test_add_func ("/pool/spawn/init-failure", test_spawn_init_failure);
  g_test_add_func ("/pool/spawn/batch-one-fails", test_spawn_batch_one_fails);
  g_test_add_func ("/pool/spawn/batch-large", test_spawn_batch_large);
  g_test_add_func ("/pool/spawn/pool-max", test_spawn_pool_max);
  g_test_add_func ("/pool/spawn/waves", test_spawn_waves);
  g_test_add_func ("/pool/spawn/waves-stopped", test_spawn_waves_stopped);
  g_test_add_func ("/pool/terminate/idle-cap", test_terminate_idle_cap);
  g_test_add_func ("/pool/agent/info", test_agent_info);
  g_test_add_func ("/pool/autoscale/up-and-down", test_autoscale_up_and_down);
  g_test_add_func ("/pool/lifecycle/events", test_lifecycle_events);
  g_test_add_func ("/host/request/reply", test_request_reply);
  g_test_add_func ("/host/request/no-responders", test_request_no_responders);
  g_test_add_func ("/host/request/timeout", test_request_timeout);
  g_test_add_func ("/host/publish/queue-and-broadcast", test_publish_queue_and_broadcast);
  g_test_add_func ("/host/publish/dead-letter", test_publish_dead_letter);
  g_test_add_func ("/host/publish/invalid", test_publish_invalid);
  g_test_add_func ("/host/run/stop-when-idle", test_run_stop_when_idle);
  g_test_add_func ("/host/run/request-stop", test_run_request_stop);
  g_test_add_func ("/host/run/agent-stop", test_run_agent_stop);
  g_test_add_func ("/host/run/timeout", test_run_timeout);
  g_test_add_func ("/host/run/summary-per-type", test_run_summary_per_type);

  return g_test_run ();
}
