/* SPDX-License-Identifier: MIT */
/* Hot reload, through the public API and the test harness: a system of
 * four "seqcheck" agents (tests/plugins-reload/seqcheck.c) whose plugin
 * file is replaced under them by other builds of the same plugin, as a
 * developer's rebuild would. Each agent checks that every sender's
 * sequence numbers arrive one after the other, so a message lost,
 * duplicated or reordered by a switch shows up as an error in that
 * agent's answer; the answer also says which version is running and how
 * many restores its state went through. */
#include <agenthost/agenthost.h>
#include <agenthost/ah-testing.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <glib/gstdio.h>
#include <sys/stat.h>

#define RELOAD_N_AGENTS      4
#define RELOAD_TYPE          "seqcheck"
/* Senders' numbers: agent i gets the traffic of RELOAD_SENDER_BASE + i. */
#define RELOAD_SENDER_BASE   100
#define RELOAD_EVENT_TIMEOUT_S 20
/* Where a write cut short stops: past the ELF and program headers, before
 * the code segment (page-aligned, so at 4096 or later). The first half of
 * the file would not do: the segments of a build with debug information
 * all lie in it, and that half is a plugin that loads. */
#define RELOAD_CUT_SHORT     4096

static const char reload_manifest[] =
  "name: reload-test\n"
  "bus:\n"
  "  workers: 2\n"
  "agents:\n"
  "  seqcheck:\n"
  "    plugin: ./seqcheck.so\n"
  "    pool_size: 4\n"
  "    subscribe:\n"
  "      - seq.in\n"
  "      - seq.stats\n"
  "      - subject: seq.report\n"
  "        delivery: broadcast\n";

/* What one agent says about itself on seq.report. */
typedef struct {
  guint   version;
  guint64 count;
  guint64 errors;
  guint64 restores;
} AgentStats;

typedef struct {
  char       *dir;           /* private to the test (G_TEST_OPTION_ISOLATE_DIRS) */
  char       *plugin_path;   /* dir/seqcheck.so: the file the manifest runs */
  AhTestHost *test_host;
  AhHost     *host;
  AhAgentId   agents[RELOAD_N_AGENTS];

  /* "$SYS.reload.done" and "$SYS.reload.failed" payloads, in arrival
   * order: the host subscription runs on a bus worker. */
  GMutex      events_lock;
  GCond       events_cond;
  GPtrArray  *done;
  GPtrArray  *failed;
} Reload;

/* ---- files ------------------------------------------------------------------ */

static char *
built_plugin_path (const char *variant)
{
  g_autofree char *file = g_strdup_printf ("seqcheck-%s.so", variant);

  return g_test_build_filename (G_TEST_BUILT, "plugins-reload", file, NULL);
}

static GBytes *
built_plugin_bytes (const char *variant)
{
  g_autofree char *path = built_plugin_path (variant);
  g_autoptr(GError) error = NULL;
  char *contents = NULL;
  gsize size = 0;

  g_file_get_contents (path, &contents, &size, &error);
  g_assert_no_error (error);
  return g_bytes_new_take (contents, size);
}

/* Replaces the running file as a build does: written beside it, then
 * renamed over it (g_file_set_contents). */
static void
reload_write_file (Reload       *fixture,
                   gconstpointer data,
                   gsize         size)
{
  g_autoptr(GError) error = NULL;

  g_file_set_contents (fixture->plugin_path, data, (gssize) size, &error);
  g_assert_no_error (error);
}

static void
reload_install (Reload     *fixture,
                const char *variant)
{
  g_autoptr(GBytes) bytes = built_plugin_bytes (variant);
  gsize size;
  gconstpointer data = g_bytes_get_data (bytes, &size);

  reload_write_file (fixture, data, size);
}

/* ---- the fixture ------------------------------------------------------------ */

static void
reload_on_event (const AhMessage *message,
                 gpointer         user_data)
{
  Reload *fixture = user_data;
  const char *subject = ah_message_get_subject (message);
  gsize size;
  const char *data = ah_message_get_data (message, &size);

  g_mutex_lock (&fixture->events_lock);
  if (g_str_equal (subject, "$SYS.reload.done"))
    g_ptr_array_add (fixture->done, g_strndup (data, size));
  else if (g_str_equal (subject, "$SYS.reload.failed"))
    g_ptr_array_add (fixture->failed, g_strndup (data, size));
  g_cond_broadcast (&fixture->events_cond);
  g_mutex_unlock (&fixture->events_lock);
}

static void
reload_set_up (Reload       *fixture,
               gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GArray) agents = NULL;
  const char *cache = g_get_user_cache_dir ();

  fixture->dir = g_build_filename (cache, "reload", NULL);
  g_assert_cmpint (g_mkdir_with_parents (fixture->dir, 0700), ==, 0);
  fixture->plugin_path = g_build_filename (fixture->dir, "seqcheck.so", NULL);
  reload_install (fixture, "v1");

  g_mutex_init (&fixture->events_lock);
  g_cond_init (&fixture->events_cond);
  fixture->done = g_ptr_array_new_with_free_func (g_free);
  fixture->failed = g_ptr_array_new_with_free_func (g_free);

  fixture->test_host = ah_test_host_new (reload_manifest, fixture->dir, &error);
  g_assert_no_error (error);
  fixture->host = ah_test_host_get_host (fixture->test_host);
  ah_host_subscribe (fixture->host, "$SYS.reload.*", reload_on_event, fixture, &error);
  g_assert_no_error (error);

  agents = ah_test_host_get_agents (fixture->test_host, RELOAD_TYPE);
  g_assert_cmpuint (agents->len, ==, RELOAD_N_AGENTS);
  for (guint i = 0; i < RELOAD_N_AGENTS; i++)
    fixture->agents[i] = g_array_index (agents, AhAgentId, i);
}

static void
reload_tear_down (Reload       *fixture,
                  gconstpointer user_data)
{
  /* The host first: its workers call reload_on_event until it stops. */
  g_clear_pointer (&fixture->test_host, ah_test_host_free);
  g_ptr_array_unref (fixture->done);
  g_ptr_array_unref (fixture->failed);
  g_cond_clear (&fixture->events_cond);
  g_mutex_clear (&fixture->events_lock);
  g_unlink (fixture->plugin_path);
  g_rmdir (fixture->dir);
  g_free (fixture->plugin_path);
  g_free (fixture->dir);
}

/* ---- traffic and what the agents say ---------------------------------------- */

/* Sends SEQ @first .. @last of each agent's sender to that agent,
 * interleaved across agents as concurrent senders would be. */
static void
reload_send_traffic (Reload *fixture,
                     guint64 first,
                     guint64 last)
{
  for (guint64 seq = first; seq <= last; seq++)
    for (guint i = 0; i < RELOAD_N_AGENTS; i++)
      {
        char payload[48];
        int n = g_snprintf (payload, sizeof payload, "%u %" G_GUINT64_FORMAT,
                            RELOAD_SENDER_BASE + i, seq);

        ah_test_host_send (fixture->test_host, fixture->agents[i], "seq.in", payload, (gsize) n);
      }
}

static void
parse_agent_stats (const char *text,
                   AgentStats *ret_stats)
{
  int consumed = 0;
  uint64_t count, errors, restores;

  if (sscanf (text, "version=%u count=%" SCNu64 " errors=%" SCNu64 " restores=%" SCNu64 "%n",
              &ret_stats->version, &count, &errors, &restores, &consumed) != 4
      || text[consumed] != '\0')
    g_error ("not a seqcheck answer: '%s'", text);
  ret_stats->count = count;
  ret_stats->errors = errors;
  ret_stats->restores = restores;
}

/* Asks every agent (a broadcast on seq.report) and waits for the four
 * answers, one per pool index. */
static void
reload_get_stats (Reload     *fixture,
                  AgentStats  ret_stats[RELOAD_N_AGENTS])
{
  g_autoptr(GPtrArray) answers = NULL;
  gboolean seen[RELOAD_N_AGENTS] = { FALSE, };

  ah_test_host_clear (fixture->test_host);
  ah_test_host_publish_string (fixture->test_host, "seq.report", "");
  ah_test_host_run_until_idle (fixture->test_host);

  answers = ah_test_host_get_messages (fixture->test_host, AH_TEST_CAPTURE_PUBLISHED, "seq.stats.*");
  g_assert_cmpuint (answers->len, ==, RELOAD_N_AGENTS);
  for (guint i = 0; i < answers->len; i++)
    {
      const AhTestMessage *answer = g_ptr_array_index (answers, i);
      guint64 index;
      g_autofree char *text = g_strndup (g_bytes_get_data (answer->data, NULL),
                                         g_bytes_get_size (answer->data));

      g_assert_true (g_ascii_string_to_unsigned (answer->subject + strlen ("seq.stats."), 10,
                                                 0, RELOAD_N_AGENTS - 1, &index, NULL));
      g_assert_false (seen[index]);
      seen[index] = TRUE;
      parse_agent_stats (text, &ret_stats[index]);
    }
}

/* Every agent runs @version, has counted @count messages with @errors
 * errors each, and its state went through @restores restores. */
static void
reload_assert_agents (Reload *fixture,
                      guint   version,
                      guint64 count,
                      guint64 errors,
                      guint64 restores)
{
  AgentStats stats[RELOAD_N_AGENTS];

  reload_get_stats (fixture, stats);
  for (guint i = 0; i < RELOAD_N_AGENTS; i++)
    {
      g_test_message ("agent %u: version=%u count=%" G_GUINT64_FORMAT " errors=%"
                      G_GUINT64_FORMAT " restores=%" G_GUINT64_FORMAT,
                      i, stats[i].version, stats[i].count, stats[i].errors, stats[i].restores);
      g_assert_cmpuint (stats[i].version, ==, version);
      g_assert_cmpuint (stats[i].count, ==, count);
      g_assert_cmpuint (stats[i].errors, ==, errors);
      g_assert_cmpuint (stats[i].restores, ==, restores);
    }
}

/* The seq.stats request goes to one agent of the queue group: any of
 * them answers for the version. */
static void
reload_assert_request_version (Reload     *fixture,
                               const char *prefix)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) reply = ah_test_host_request (fixture->test_host, "seq.stats", "", 0,
                                                  5000, &error);
  g_autofree char *text = NULL;

  g_assert_no_error (error);
  text = g_strndup (g_bytes_get_data (reply, NULL), g_bytes_get_size (reply));
  g_assert_true (g_str_has_prefix (text, prefix));
}

static void
reload_assert_host_counters (Reload *fixture,
                             guint   reloads,
                             guint   failures)
{
  AhHostStats stats;

  ah_host_get_stats (fixture->host, &stats);
  g_assert_cmpuint (stats.reloads, ==, reloads);
  g_assert_cmpuint (stats.reload_failures, ==, failures);
}

/* The value of KEY=VALUE in an event payload, up to the next " key=". */
static char *
event_field (const char *payload,
             const char *key)
{
  g_autofree char *needle = g_strconcat (key, "=", NULL);
  const char *start = NULL;
  const char *end;

  if (g_str_has_prefix (payload, needle))
    start = payload;
  else
    {
      g_autofree char *spaced = g_strconcat (" ", needle, NULL);

      start = strstr (payload, spaced);
      if (start != NULL)
        start++;
    }
  if (start == NULL)
    return NULL;
  start += strlen (needle);
  /* The reason of a failure is free text and comes last. */
  if (g_str_equal (key, "reason"))
    return g_strdup (start);
  end = strchr (start, ' ');
  return end != NULL ? g_strndup (start, (gsize) (end - start)) : g_strdup (start);
}

/* Waits until @n_done done and @n_failed failed events have arrived (the
 * watcher reloads on its own thread), failing the test after
 * RELOAD_EVENT_TIMEOUT_S. */
static void
reload_wait_events (Reload *fixture,
                    guint   n_done,
                    guint   n_failed)
{
  gint64 deadline = g_get_monotonic_time () + RELOAD_EVENT_TIMEOUT_S * G_TIME_SPAN_SECOND;
  gboolean reached = TRUE;

  g_mutex_lock (&fixture->events_lock);
  while (fixture->done->len < n_done || fixture->failed->len < n_failed)
    if (!g_cond_wait_until (&fixture->events_cond, &fixture->events_lock, deadline))
      {
        reached = fixture->done->len >= n_done && fixture->failed->len >= n_failed;
        break;
      }
  g_mutex_unlock (&fixture->events_lock);
  g_assert_true (reached);
}

/* After a quiet @quiet_ms, the events are still exactly these: nothing
 * else was reloaded or refused late. */
static void
reload_assert_no_more_events (Reload *fixture,
                              guint   n_done,
                              guint   n_failed,
                              guint   quiet_ms)
{
  gint64 deadline = g_get_monotonic_time () + (gint64) quiet_ms * 1000;

  g_mutex_lock (&fixture->events_lock);
  while (fixture->done->len == n_done && fixture->failed->len == n_failed)
    if (!g_cond_wait_until (&fixture->events_cond, &fixture->events_lock, deadline))
      break;
  g_assert_cmpuint (fixture->done->len, ==, n_done);
  g_assert_cmpuint (fixture->failed->len, ==, n_failed);
  g_mutex_unlock (&fixture->events_lock);
}

static void
reload_assert_done_event (Reload     *fixture,
                          guint       index,
                          const char *version,
                          const char *how)
{
  const char *payload;
  g_autofree char *plugin = NULL;
  g_autofree char *event_version = NULL;
  g_autofree char *agents = NULL;
  g_autofree char *switched_how = NULL;
  g_autofree char *ms = NULL;
  g_autofree char *expected_agents = g_strdup_printf ("%u", RELOAD_N_AGENTS);

  g_mutex_lock (&fixture->events_lock);
  g_assert_cmpuint (fixture->done->len, >, index);
  payload = g_ptr_array_index (fixture->done, index);
  g_mutex_unlock (&fixture->events_lock);

  g_test_message ("$SYS.reload.done: %s", payload);
  plugin = event_field (payload, "plugin");
  event_version = event_field (payload, "version");
  agents = event_field (payload, "agents");
  switched_how = event_field (payload, how);
  ms = event_field (payload, "ms");
  g_assert_cmpstr (plugin, ==, RELOAD_TYPE);
  g_assert_cmpstr (event_version, ==, version);
  g_assert_cmpstr (agents, ==, expected_agents);
  /* Every agent went the one way this version allows. */
  g_assert_cmpstr (switched_how, ==, expected_agents);
  g_assert_nonnull (ms);
  g_assert_cmpfloat (g_ascii_strtod (ms, NULL), >=, 0.0);
}

static void
reload_assert_failed_event (Reload     *fixture,
                            guint       index,
                            const char *reason_part)
{
  const char *payload;
  g_autofree char *file = NULL;
  g_autofree char *reason = NULL;

  g_mutex_lock (&fixture->events_lock);
  g_assert_cmpuint (fixture->failed->len, >, index);
  payload = g_ptr_array_index (fixture->failed, index);
  g_mutex_unlock (&fixture->events_lock);

  g_test_message ("$SYS.reload.failed: %s", payload);
  file = event_field (payload, "file");
  reason = event_field (payload, "reason");
  g_assert_nonnull (file);
  g_assert_true (g_str_has_suffix (file, "/seqcheck.so"));
  g_assert_nonnull (reason);
  g_assert_nonnull (strstr (reason, reason_part));
}

/* ---- state across one reload ------------------------------------------------- */

static void
test_reload_state_carried (Reload       *fixture,
                           gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;

  g_test_summary ("v1 -> v2: every agent's counts and per-sender positions go through "
                  "snapshot (format 1) and restore into v2's own layout; traffic goes on "
                  "without a gap; $SYS.reload.done names the version and 4 agents migrated");

  reload_send_traffic (fixture, 1, 50);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 1, 50, 0, 0);
  reload_assert_request_version (fixture, "version=1 ");

  reload_install (fixture, "v2");
  g_assert_true (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_no_error (error);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 2, 50, 0, 1);
  reload_assert_request_version (fixture, "version=2 ");

  /* Sequence 51 is next only if the position of every sender came across. */
  reload_send_traffic (fixture, 51, 100);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 2, 100, 0, 1);

  reload_assert_done_event (fixture, 0, "2.0.0", "migrated");
  g_assert_cmpuint (fixture->failed->len, ==, 0);
  reload_assert_host_counters (fixture, 1, 0);
}

static void
test_reload_state_back_and_forth (Reload       *fixture,
                                  gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;

  g_test_summary ("v1 -> v2 -> v1: v1 reads v2's format 2 snapshot, so versions can "
                  "alternate, and the restores add up");

  reload_send_traffic (fixture, 1, 10);
  reload_install (fixture, "v2");
  g_assert_true (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_no_error (error);
  reload_send_traffic (fixture, 11, 20);
  reload_install (fixture, "v1");
  g_assert_true (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_no_error (error);
  reload_send_traffic (fixture, 21, 30);
  ah_test_host_run_until_idle (fixture->test_host);

  reload_assert_agents (fixture, 1, 30, 0, 2);
  reload_assert_done_event (fixture, 0, "2.0.0", "migrated");
  reload_assert_done_event (fixture, 1, "1.0.0", "migrated");
  reload_assert_host_counters (fixture, 2, 0);
}

static void
test_reload_stable_layout (Reload       *fixture,
                           gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;

  g_test_summary ("A version declaring AH_PLUGIN_FLAG_STATE_LAYOUT_STABLE, without hooks, "
                  "keeps every agent's state as is: counts carried, no restore");

  reload_send_traffic (fixture, 1, 25);
  reload_install (fixture, "v2-stable");
  g_assert_true (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_no_error (error);
  reload_send_traffic (fixture, 26, 40);
  ah_test_host_run_until_idle (fixture->test_host);

  reload_assert_agents (fixture, 2, 40, 0, 0);
  reload_assert_done_event (fixture, 0, "2.0.0-stable", "kept");
  reload_assert_host_counters (fixture, 1, 0);
}

static void
test_reload_reinitialized (Reload       *fixture,
                           gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;

  g_test_summary ("A version with neither hooks nor a stable layout is still loaded: each "
                  "agent starts afresh (count 0), so the next sequence number is a gap");

  reload_send_traffic (fixture, 1, 25);
  /* Handled before the switch: mail still waiting would be counted by the
   * fresh state, as it should be, and the counts below would vary. */
  ah_test_host_run_until_idle (fixture->test_host);
  reload_install (fixture, "v2-noinit-hooks");
  g_assert_true (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_no_error (error);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 2, 0, 0, 0);

  /* The fresh state expects sequence 1 from every sender: 26 is one gap. */
  reload_send_traffic (fixture, 26, 30);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 2, 5, 1, 0);

  reload_assert_done_event (fixture, 0, "2.0.0-nohooks", "reinitialized");
  reload_assert_host_counters (fixture, 1, 0);
}

/* ---- refused reloads: the old version runs on ---------------------------------- */

static void
test_reload_refused_snapshot (Reload       *fixture,
                              gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;

  g_test_summary ("A new version whose restore refuses the old snapshot format rolls the "
                  "whole type back: every agent runs v1 with its state intact, and "
                  "$SYS.reload.failed gives the plugin's reason");

  reload_send_traffic (fixture, 1, 30);
  reload_install (fixture, "v2-refuses");
  g_assert_false (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_RELOAD);
  g_test_message ("refused: %s", error->message);
  g_assert_nonnull (strstr (error->message, "snapshot format 1 is too old"));

  reload_send_traffic (fixture, 31, 40);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 1, 40, 0, 0);
  reload_assert_request_version (fixture, "version=1 ");

  reload_assert_failed_event (fixture, 0, "snapshot format 1 is too old");
  g_assert_cmpuint (fixture->done->len, ==, 0);
  reload_assert_host_counters (fixture, 0, 1);

  /* The refusal left nothing behind: a good version loads next. */
  reload_install (fixture, "v2");
  g_clear_error (&error);
  g_assert_true (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_no_error (error);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 2, 40, 0, 1);
  reload_assert_host_counters (fixture, 1, 1);
}

static void
test_reload_refused_abi (Reload       *fixture,
                         gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;

  g_test_summary ("A build for plugin ABI 2.0 is refused before any agent is touched, "
                  "and the error names the ABI");

  reload_send_traffic (fixture, 1, 20);
  reload_install (fixture, "v2-abi2");
  g_assert_false (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_RELOAD);
  g_test_message ("refused: %s", error->message);
  g_assert_nonnull (strstr (error->message, "ABI 2.0"));

  reload_send_traffic (fixture, 21, 30);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 1, 30, 0, 0);
  reload_assert_failed_event (fixture, 0, "ABI 2.0");
  reload_assert_host_counters (fixture, 0, 1);
}

static void
test_reload_refused_other_plugin (Reload       *fixture,
                                  gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *other = g_test_build_filename (G_TEST_BUILT, "plugins", "counter.so", NULL);
  g_autofree char *contents = NULL;
  gsize size;

  g_test_summary ("Another plugin written over the file (descriptor 'counter') is refused: "
                  "a reload replaces a version of the same plugin only");

  reload_send_traffic (fixture, 1, 20);
  g_file_get_contents (other, &contents, &size, &error);
  g_assert_no_error (error);
  reload_write_file (fixture, contents, size);
  g_assert_false (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_RELOAD);
  g_test_message ("refused: %s", error->message);
  g_assert_nonnull (strstr (error->message, "the new file is plugin 'counter', not 'seqcheck'"));

  reload_send_traffic (fixture, 21, 30);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 1, 30, 0, 0);
  reload_assert_host_counters (fixture, 0, 1);
}

static void
test_reload_refused_config (Reload       *fixture,
                            gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;

  g_test_summary ("A version whose config schema refuses the type's config (a required key "
                  "the manifest lacks) is refused before any agent is touched");

  reload_send_traffic (fixture, 1, 20);
  reload_install (fixture, "v2-needs-config");
  g_assert_false (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_RELOAD);
  g_test_message ("refused: %s", error->message);
  g_assert_nonnull (strstr (error->message, "refuses the config"));
  g_assert_nonnull (strstr (error->message, "window"));

  reload_send_traffic (fixture, 21, 30);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 1, 30, 0, 0);
  reload_assert_failed_event (fixture, 0, "refuses the config");
  reload_assert_host_counters (fixture, 0, 1);
}
static void
test_reload_overwrite_in_place (Reload       *fixture,
                                gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) v2 = built_plugin_bytes ("v2");
  int fd;

  g_test_summary ("The running file overwritten in place (truncated and written, as cp "
                  "does) while traffic flows: the running version is untouched, and the "
                  "reload loads the new bytes");

  reload_send_traffic (fixture, 1, 20);
  ah_test_host_run_until_idle (fixture->test_host);
  fd = g_open (fixture->plugin_path, O_WRONLY | O_TRUNC | O_CLOEXEC, 0);
  g_assert_cmpint (fd, >=, 0);
  /* Traffic while the file is empty: the running code must not be the file's. */
  reload_send_traffic (fixture, 21, 30);
  ah_test_host_run_until_idle (fixture->test_host);
  g_assert_cmpint (write (fd, g_bytes_get_data (v2, NULL), g_bytes_get_size (v2)), ==,
                   (gssize) g_bytes_get_size (v2));
  g_assert_cmpint (close (fd), ==, 0);
  reload_send_traffic (fixture, 31, 40);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 1, 40, 0, 0);

  g_assert_true (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_no_error (error);
  reload_send_traffic (fixture, 41, 50);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 2, 50, 0, 1);
}


typedef enum {
  BAD_FILE_GARBAGE,     /* bytes that are no ELF file at all */
  BAD_FILE_TRUNCATED,   /* a good build cut short: an unfinished write */
  BAD_FILE_EMPTY,
} BadFile;

static void
test_reload_refused_file (Reload       *fixture,
                          gconstpointer user_data)
{
  BadFile kind = GPOINTER_TO_INT (user_data);
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) good = built_plugin_bytes ("v2");
  guint8 garbage[8192];

  g_test_summary ("A plugin file overwritten with garbage, cut short or emptied is refused "
                  "with AH_HOST_ERROR_RELOAD: v1 runs on with its state");

  reload_send_traffic (fixture, 1, 20);
  switch (kind)
    {
    case BAD_FILE_GARBAGE:
      /* Deterministic, and no ELF magic: each byte from a small LCG. */
      for (guint i = 0, x = 12345; i < sizeof garbage; i++)
        {
          x = x * 1103515245u + 12345u;
          garbage[i] = (guint8) (x >> 16);
        }
      reload_write_file (fixture, garbage, sizeof garbage);
      break;
    case BAD_FILE_TRUNCATED:
      reload_write_file (fixture, g_bytes_get_data (good, NULL), RELOAD_CUT_SHORT);
      break;
    case BAD_FILE_EMPTY:
    default:
      reload_write_file (fixture, "", 0);
      break;
    }

  g_assert_false (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_RELOAD);
  g_test_message ("refused: %s", error->message);
  g_assert_nonnull (strstr (error->message, "seqcheck.so"));

  reload_send_traffic (fixture, 21, 30);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 1, 30, 0, 0);
  reload_assert_failed_event (fixture, 0, "seqcheck.so");
  reload_assert_host_counters (fixture, 0, 1);
}

static void
test_reload_unknown_type (Reload       *fixture,
                          gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;

  g_test_summary ("Reloading a type the manifest does not have is AH_HOST_ERROR_UNKNOWN_TYPE "
                  "and is no reload attempt");

  g_assert_false (ah_host_reload (fixture->host, "nope", &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_TYPE);
  reload_assert_host_counters (fixture, 0, 0);
}

/* ---- reload what changed ----------------------------------------------------- */

static void
test_reload_changed (Reload       *fixture,
                     gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;

  g_test_summary ("ah_host_reload_changed: the same bytes written again are no reload; "
                  "new bytes are one");

  reload_send_traffic (fixture, 1, 10);
  reload_install (fixture, "v1");
  g_assert_cmpuint (ah_host_reload_changed (fixture->host, &error), ==, 0);
  g_assert_no_error (error);
  reload_assert_host_counters (fixture, 0, 0);

  reload_install (fixture, "v2");
  g_assert_cmpuint (ah_host_reload_changed (fixture->host, &error), ==, 1);
  g_assert_no_error (error);
  /* And having loaded them, the same bytes again are no reload either. */
  g_assert_cmpuint (ah_host_reload_changed (fixture->host, &error), ==, 0);
  g_assert_no_error (error);

  reload_send_traffic (fixture, 11, 20);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 2, 20, 0, 1);
  reload_assert_host_counters (fixture, 1, 0);
}

/* ---- watching ----------------------------------------------------------------- */

#define RELOAD_DEBOUNCE_MS 300
#define RELOAD_N_PIECES    8

static void
test_reload_watch_slow_write (Reload       *fixture,
                              gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) v2 = built_plugin_bytes ("v2");
  gsize size;
  const guint8 *data = g_bytes_get_data (v2, &size);
  gsize piece = (size + RELOAD_N_PIECES - 1) / RELOAD_N_PIECES;
  int fd;

  g_test_summary ("With ah_host_watch on, a file written in pieces (as a linker does: a "
                  "new file, filled in several writes) is reloaded exactly once, complete");

  reload_send_traffic (fixture, 1, 20);
  g_assert_true (ah_host_watch (fixture->host, RELOAD_DEBOUNCE_MS, &error));
  g_assert_no_error (error);

  /* A new inode, as ld makes: the running version was loaded from the
   * old one. The pauses between pieces are the slow writer under test,
   * well inside the debounce, not a synchronisation. */
  g_assert_cmpint (g_unlink (fixture->plugin_path), ==, 0);
  fd = g_open (fixture->plugin_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
  g_assert_cmpint (fd, >=, 0);
  for (gsize offset = 0; offset < size; offset += piece)
    {
      gsize n = MIN (piece, size - offset);

      g_assert_cmpint (write (fd, data + offset, n), ==, (gssize) n);
      g_usleep (RELOAD_DEBOUNCE_MS * 1000 / (4 * RELOAD_N_PIECES));
    }
  g_assert_cmpint (close (fd), ==, 0);

  reload_wait_events (fixture, 1, 0);
  reload_assert_no_more_events (fixture, 1, 0, 3 * RELOAD_DEBOUNCE_MS);
  reload_assert_done_event (fixture, 0, "2.0.0", "migrated");

  reload_send_traffic (fixture, 21, 30);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 2, 30, 0, 1);
  reload_assert_host_counters (fixture, 1, 0);
}

static void
test_reload_watch_incomplete (Reload       *fixture,
                              gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) v2 = built_plugin_bytes ("v2");

  g_test_summary ("Watching: a file that stays incomplete is refused (logged, "
                  "$SYS.reload.failed) and v1 runs on; once it is complete it is loaded");

  reload_send_traffic (fixture, 1, 20);
  g_assert_true (ah_host_watch (fixture->host, RELOAD_DEBOUNCE_MS, &error));
  g_assert_no_error (error);

  reload_write_file (fixture, g_bytes_get_data (v2, NULL), RELOAD_CUT_SHORT);
  reload_wait_events (fixture, 0, 1);
  reload_assert_failed_event (fixture, 0, "seqcheck.so");
  reload_send_traffic (fixture, 21, 30);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 1, 30, 0, 0);

  reload_install (fixture, "v2");
  reload_wait_events (fixture, 1, 1);
  reload_assert_done_event (fixture, 0, "2.0.0", "migrated");
  reload_send_traffic (fixture, 31, 40);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 2, 40, 0, 1);
  reload_assert_host_counters (fixture, 1, 1);
}

/* ---- under load ------------------------------------------------------------------ */

#define LOAD_N_PUBLISHERS 2
#define LOAD_N_RELOADS    20
/* Messages sent between two reloads, at least: every switch happens with
 * mailboxes filling. */
#define LOAD_STEP         1500

typedef struct {
  Reload      *fixture;
  guint        index;
  atomic_int  *stop;
  /* Shared progress: total messages sent by all publishers. */
  GMutex      *lock;
  GCond       *cond;
  guint64     *total_sent;
  GError      *error;
  guint64      sent;
} Publisher;

/* Sends to its own agents (index, index + LOAD_N_PUBLISHERS, ...), each
 * with its own sender, numbers counting up, until told to stop. */
static gpointer
publisher_run (gpointer data)
{
  Publisher *self = data;
  guint64 seq = 0;

  while (!atomic_load (self->stop))
    {
      seq++;
      for (guint i = self->index; i < RELOAD_N_AGENTS; i += LOAD_N_PUBLISHERS)
        {
          char payload[48];
          int n = g_snprintf (payload, sizeof payload, "%u %" G_GUINT64_FORMAT,
                              RELOAD_SENDER_BASE + i, seq);

          if (!ah_host_send (self->fixture->host, self->fixture->agents[i], "seq.in",
                             payload, (gsize) n, &self->error))
            return NULL;
          self->sent++;
        }
      /* Progress is reported in steps: the lock stays off the hot path. */
      if (seq % 64 == 0)
        {
          g_mutex_lock (self->lock);
          *self->total_sent += 64 * (RELOAD_N_AGENTS / LOAD_N_PUBLISHERS);
          g_cond_broadcast (self->cond);
          g_mutex_unlock (self->lock);
        }
    }
  return NULL;
}

static void
test_reload_under_load (Reload       *fixture,
                        gconstpointer user_data)
{
  Publisher publishers[LOAD_N_PUBLISHERS];
  GThread *threads[LOAD_N_PUBLISHERS];
  atomic_int stop = 0;
  GMutex lock;
  GCond cond;
  guint64 total_sent = 0;
  guint64 sent = 0;
  guint64 counted = 0;
  AgentStats stats[RELOAD_N_AGENTS];

  g_test_summary ("20 reloads, v1 and v2 alternating, while two threads send numbered "
                  "messages as fast as they can: no message lost, duplicated or reordered "
                  "(every agent 0 errors, the counts add up to what was sent), every "
                  "agent restored 20 times, 20 reloads counted");

  g_mutex_init (&lock);
  g_cond_init (&cond);
  for (guint t = 0; t < LOAD_N_PUBLISHERS; t++)
    {
      publishers[t] = (Publisher) {
        .fixture = fixture, .index = t, .stop = &stop,
        .lock = &lock, .cond = &cond, .total_sent = &total_sent,
      };
      threads[t] = g_thread_new ("publisher", publisher_run, &publishers[t]);
    }

  for (guint r = 1; r <= LOAD_N_RELOADS; r++)
    {
      g_autoptr(GError) error = NULL;
      gint64 deadline = g_get_monotonic_time () + RELOAD_EVENT_TIMEOUT_S * G_TIME_SPAN_SECOND;
      gboolean progressed = TRUE;

      g_mutex_lock (&lock);
      while (total_sent < (guint64) r * LOAD_STEP && progressed)
        progressed = g_cond_wait_until (&cond, &lock, deadline);
      g_mutex_unlock (&lock);
      g_assert_true (progressed);

      reload_install (fixture, r % 2 == 1 ? "v2" : "v1");
      g_assert_true (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
      g_assert_no_error (error);
    }

  atomic_store (&stop, 1);
  for (guint t = 0; t < LOAD_N_PUBLISHERS; t++)
    {
      g_thread_join (threads[t]);
      g_assert_no_error (publishers[t].error);
      sent += publishers[t].sent;
    }
  ah_test_host_run_until_idle (fixture->test_host);

  reload_get_stats (fixture, stats);
  for (guint i = 0; i < RELOAD_N_AGENTS; i++)
    {
      g_test_message ("agent %u: version=%u count=%" G_GUINT64_FORMAT " errors=%"
                      G_GUINT64_FORMAT " restores=%" G_GUINT64_FORMAT,
                      i, stats[i].version, stats[i].count, stats[i].errors, stats[i].restores);
      g_assert_cmpuint (stats[i].version, ==, 1);
      g_assert_cmpuint (stats[i].errors, ==, 0);
      g_assert_cmpuint (stats[i].restores, ==, LOAD_N_RELOADS);
      counted += stats[i].count;
    }
  g_test_message ("%" G_GUINT64_FORMAT " messages sent, %" G_GUINT64_FORMAT " counted",
                  sent, counted);
  g_assert_cmpuint (sent, >=, (guint64) LOAD_N_RELOADS * LOAD_STEP);
  g_assert_cmpuint (counted, ==, sent);

  g_assert_cmpuint (fixture->done->len, ==, LOAD_N_RELOADS);
  for (guint r = 0; r < LOAD_N_RELOADS; r++)
    reload_assert_done_event (fixture, r, r % 2 == 0 ? "2.0.0" : "1.0.0", "migrated");
  reload_assert_host_counters (fixture, LOAD_N_RELOADS, 0);

  g_cond_clear (&cond);
  g_mutex_clear (&lock);
}

/* ---- unloading the old version --------------------------------------------------- */

/* Identities (device:inode) of the mappings of seqcheck code in this
 * process: the file first loaded, and the memfds private copies live in.
 * Identities, not names: every copy's memfd has the same name. */
static GHashTable *
mapped_plugin_files (void)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *maps = NULL;
  g_auto(GStrv) lines = NULL;
  GHashTable *files = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);

  g_file_get_contents ("/proc/self/maps", &maps, NULL, &error);
  g_assert_no_error (error);
  lines = g_strsplit (maps, "\n", -1);
  for (guint i = 0; lines[i] != NULL; i++)
    {
      char dev[32];
      unsigned long inode;
      int path_start = 0;
      const char *path;

      /* address perms offset dev inode [path] */
      if (sscanf (lines[i], "%*s %*s %*s %31s %lu %n", dev, &inode, &path_start) < 2
          || path_start == 0 || inode == 0)
        continue;
      path = lines[i] + path_start;
      /* The loader names each memfd after the file: "/memfd:seqcheck.so". */
      if (strstr (path, "seqcheck") == NULL)
        continue;
      g_hash_table_replace (files, g_strdup_printf ("%s:%lu", dev, inode), g_strdup (path));
    }
  return files;
}

/* The files in @after that were not in @before. */
static GHashTable *
mapped_files_new (GHashTable *before,
                  GHashTable *after)
{
  GHashTable *added = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);
  GHashTableIter iter;
  gpointer key, value;

  g_hash_table_iter_init (&iter, after);
  while (g_hash_table_iter_next (&iter, &key, &value))
    if (!g_hash_table_contains (before, key))
      g_hash_table_insert (added, g_strdup (key), g_strdup (value));
  return added;
}

static void
assert_none_mapped (GHashTable *gone,
                    GHashTable *now)
{
  GHashTableIter iter;
  gpointer key, value;

  g_hash_table_iter_init (&iter, gone);
  while (g_hash_table_iter_next (&iter, &key, &value))
    if (g_hash_table_contains (now, key))
      g_error ("the old version is still mapped: %s (%s)", (const char *) value,
               (const char *) key);
}

static void
test_reload_unload_old (Reload       *fixture,
                        gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GHashTable) with_v1 = NULL;
  g_autoptr(GHashTable) with_v2 = NULL;
  g_autoptr(GHashTable) v2_files = NULL;
  g_autoptr(GHashTable) with_v1_again = NULL;
  g_autoptr(GHashTable) v1_again_files = NULL;
  g_autoptr(GHashTable) none = g_hash_table_new (g_str_hash, g_str_equal);

  g_test_summary ("Once a reload has returned and the system is idle, the old version's "
                  "code is no longer mapped: the first file, then the private copy of v2");

  reload_send_traffic (fixture, 1, 10);
  ah_test_host_run_until_idle (fixture->test_host);
  with_v1 = mapped_plugin_files ();
  g_assert_cmpuint (g_hash_table_size (with_v1), >, 0);

  reload_install (fixture, "v2");
  g_assert_true (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_no_error (error);
  ah_test_host_run_until_idle (fixture->test_host);
  with_v2 = mapped_plugin_files ();
  v2_files = mapped_files_new (with_v1, with_v2);
  g_assert_cmpuint (g_hash_table_size (v2_files), >, 0);
  assert_none_mapped (with_v1, with_v2);

  reload_install (fixture, "v1");
  g_assert_true (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_no_error (error);
  ah_test_host_run_until_idle (fixture->test_host);
  with_v1_again = mapped_plugin_files ();
  v1_again_files = mapped_files_new (none, with_v1_again);
  g_assert_cmpuint (g_hash_table_size (v1_again_files), >, 0);
  assert_none_mapped (v2_files, with_v1_again);

  /* Still working, on the version loaded last. */
  reload_send_traffic (fixture, 11, 20);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 1, 20, 0, 2);
}

/* Opens @fifo for writing on a thread of its own: open() returns only
 * once the other end is open, here by the agent's offloaded function. */
typedef struct {
  const char *fifo;
  GMutex      lock;
  GCond       cond;
  int         fd;           /* -1 until opened */
  int         open_errno;
} FifoWriter;

static gpointer
fifo_writer_open (gpointer data)
{
  FifoWriter *self = data;
  int fd = g_open (self->fifo, O_WRONLY | O_CLOEXEC, 0);
  int saved_errno = errno;

  g_mutex_lock (&self->lock);
  self->fd = fd;
  self->open_errno = fd < 0 ? saved_errno : 0;
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
  return NULL;
}

static void
test_reload_unload_after_offload (Reload       *fixture,
                                  gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *fifo = g_build_filename (fixture->dir, "hold.fifo", NULL);
  g_autoptr(GHashTable) with_v1 = NULL;
  g_autoptr(GHashTable) during = NULL;
  g_autoptr(GHashTable) after = NULL;
  FifoWriter writer = { .fifo = fifo, .fd = -1 };
  GThread *opener;
  gint64 deadline = g_get_monotonic_time () + RELOAD_EVENT_TIMEOUT_S * G_TIME_SPAN_SECOND;
  gboolean opened = TRUE;
  GHashTableIter iter;
  gpointer key;

  g_test_summary ("An offloaded function of the old version still running keeps that "
                  "version loaded after the switch; once it returns, the version is unloaded");

  g_assert_cmpint (mkfifo (fifo, 0600), ==, 0);
  with_v1 = mapped_plugin_files ();
  g_assert_cmpuint (g_hash_table_size (with_v1), >, 0);

  g_mutex_init (&writer.lock);
  g_cond_init (&writer.cond);
  opener = g_thread_new ("fifo-writer", fifo_writer_open, &writer);
  ah_test_host_send (fixture->test_host, fixture->agents[0], "seq.hold", fifo, strlen (fifo));
  g_mutex_lock (&writer.lock);
  while (writer.fd < 0 && writer.open_errno == 0 && opened)
    opened = g_cond_wait_until (&writer.cond, &writer.lock, deadline);
  g_mutex_unlock (&writer.lock);
  g_assert_true (opened);
  g_assert_cmpint (writer.open_errno, ==, 0);
  g_thread_join (opener);

  /* v1's function is running on an I/O thread from here on. */
  reload_install (fixture, "v2");
  g_assert_true (ah_host_reload (fixture->host, RELOAD_TYPE, &error));
  g_assert_no_error (error);
  during = mapped_plugin_files ();
  g_hash_table_iter_init (&iter, with_v1);
  while (g_hash_table_iter_next (&iter, &key, NULL))
    g_assert_true (g_hash_table_contains (during, key));

  g_assert_cmpint (write (writer.fd, "x", 1), ==, 1);
  g_assert_cmpint (close (writer.fd), ==, 0);
  ah_test_host_run_until_idle (fixture->test_host);
  after = mapped_plugin_files ();
  assert_none_mapped (with_v1, after);

  reload_send_traffic (fixture, 1, 10);
  ah_test_host_run_until_idle (fixture->test_host);
  reload_assert_agents (fixture, 2, 10, 0, 1);

  g_unlink (fifo);
  g_cond_clear (&writer.cond);
  g_mutex_clear (&writer.lock);
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);

#define ADD(path, func, data) \
  g_test_add (path, Reload, data, reload_set_up, func, reload_tear_down)
  ADD ("/reload/state/carried", test_reload_state_carried, NULL);
  ADD ("/reload/state/back-and-forth", test_reload_state_back_and_forth, NULL);
  ADD ("/reload/state/stable-layout", test_reload_stable_layout, NULL);
  ADD ("/reload/state/reinitialized", test_reload_reinitialized, NULL);
  ADD ("/reload/refused/snapshot", test_reload_refused_snapshot, NULL);
  ADD ("/reload/refused/abi", test_reload_refused_abi, NULL);
  ADD ("/reload/refused/other-plugin", test_reload_refused_other_plugin, NULL);
  ADD ("/reload/refused/config", test_reload_refused_config, NULL);
  ADD ("/reload/refused/garbage", test_reload_refused_file, GINT_TO_POINTER (BAD_FILE_GARBAGE));
  ADD ("/reload/overwrite/in-place", test_reload_overwrite_in_place, NULL);
  ADD ("/reload/refused/truncated", test_reload_refused_file, GINT_TO_POINTER (BAD_FILE_TRUNCATED));
  ADD ("/reload/refused/empty", test_reload_refused_file, GINT_TO_POINTER (BAD_FILE_EMPTY));
  ADD ("/reload/refused/unknown-type", test_reload_unknown_type, NULL);
  ADD ("/reload/changed/checksum", test_reload_changed, NULL);
  ADD ("/reload/watch/slow-write", test_reload_watch_slow_write, NULL);
  ADD ("/reload/watch/incomplete", test_reload_watch_incomplete, NULL);
  ADD ("/reload/load/twenty", test_reload_under_load, NULL);
  ADD ("/reload/unload/old-version", test_reload_unload_old, NULL);
  ADD ("/reload/unload/after-offload", test_reload_unload_after_offload, NULL);
#undef ADD

  return g_test_run ();
}
