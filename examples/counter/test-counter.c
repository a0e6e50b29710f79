/* SPDX-License-Identifier: MIT */
/* The counter example: its snapshot format through the descriptor's
 * hooks, called directly (the snapshot is the contract between two
 * versions of the plugin, so the tests build and read snapshots byte by
 * byte); its counting in the test harness, across a hot reload; and
 * counter.yaml under `agenthost run`. The plugin and its manifest are in
 * EXAMPLE_BUILD_DIR. */
#include <agenthost/agenthost.h>

#include <stdio.h>
#include <string.h>

#define COUNTER_PLUGIN   EXAMPLE_BUILD_DIR "/counter.so"
#define COUNTER_MANIFEST EXAMPLE_BUILD_DIR "/counter.yaml"

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

/* ---- the snapshot hooks, through the descriptor ------------------------ */

typedef struct {
  AhPlugin           *plugin;
  const AhPluginDesc *desc;
  gpointer            state;    /* desc->state_size bytes, zeroed as the host gives them */
} Hooks;

static void
hooks_set_up (Hooks        *fixture,
              gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;

  fixture->plugin = ah_plugin_open (COUNTER_PLUGIN, &error);
  g_assert_no_error (error);
  fixture->desc = ah_plugin_get_desc (fixture->plugin);
  g_assert_cmpuint (fixture->desc->state_size, >, 0);
  fixture->state = g_malloc0 (fixture->desc->state_size);
}

static void
hooks_tear_down (Hooks        *fixture,
                 gconstpointer user_data)
{
  g_free (fixture->state);
  ah_plugin_unref (fixture->plugin);
}

/* A snapshot as the plugin's formats lay it out: big-endian 64-bit
 * fields, the count first. */
static GBytes *
snapshot_new (guint         n_fields,
              const guint64 *fields)
{
  guint64 be[2];

  g_assert_cmpuint (n_fields, <=, G_N_ELEMENTS (be));
  for (guint i = 0; i < n_fields; i++)
    be[i] = GUINT64_TO_BE (fields[i]);
  return g_bytes_new (be, n_fields * sizeof (guint64));
}

/* The hooks do not use their context (the plugin says so): NULL is what
 * a tool without a host would pass. */
static GBytes *
hooks_snapshot (Hooks *fixture)
{
  g_autoptr(GError) error = NULL;
  GBytes *snapshot = fixture->desc->state_snapshot (NULL, fixture->state, &error);

  g_assert_no_error (error);
  g_assert_nonnull (snapshot);
  return snapshot;
}

static void
test_counter_descriptor (Hooks        *fixture,
                         gconstpointer user_data)
{
  g_test_summary ("The descriptor declares snapshot format 2 and both reload hooks");

  g_assert_cmpstr (fixture->desc->name, ==, "counter");
  g_assert_cmpuint (fixture->desc->state_format, ==, 2);
  g_assert_nonnull (fixture->desc->state_snapshot);
  g_assert_nonnull (fixture->desc->state_restore);
  g_assert_nonnull (fixture->desc->config_schema);
}

static void
test_counter_snapshot_round_trip (Hooks        *fixture,
                                  gconstpointer user_data)
{
  const guint64 fields[] = { 41, 3 };
  g_autoptr(GBytes) written = snapshot_new (G_N_ELEMENTS (fields), fields);
  g_autoptr(GBytes) zero = NULL;
  g_autoptr(GBytes) again = NULL;
  g_autoptr(GError) error = NULL;
  const guint64 zeros[] = { 0, 0 };
  g_autoptr(GBytes) expected_zero = snapshot_new (G_N_ELEMENTS (zeros), zeros);

  g_test_summary ("A fresh agent snapshots as zeros; a format 2 snapshot restores to the "
                  "same count and adds, byte for byte");

  zero = hooks_snapshot (fixture);
  g_assert_true (g_bytes_equal (zero, expected_zero));

  g_assert_true (fixture->desc->state_restore (NULL, fixture->state, 2, written, &error));
  g_assert_no_error (error);
  again = hooks_snapshot (fixture);
  g_assert_true (g_bytes_equal (again, written));
}

static void
test_counter_snapshot_migrate (Hooks        *fixture,
                               gconstpointer user_data)
{
  const guint64 v1_fields[] = { 7 };
  const guint64 v2_fields[] = { 7, 0 };
  g_autoptr(GBytes) v1 = snapshot_new (G_N_ELEMENTS (v1_fields), v1_fields);
  g_autoptr(GBytes) expected = snapshot_new (G_N_ELEMENTS (v2_fields), v2_fields);
  g_autoptr(GBytes) migrated = NULL;
  g_autoptr(GError) error = NULL;

  g_test_summary ("A format 1 snapshot (the count alone) is migrated: same count, 0 adds");

  g_assert_true (fixture->desc->state_restore (NULL, fixture->state, 1, v1, &error));
  g_assert_no_error (error);
  migrated = hooks_snapshot (fixture);
  g_assert_true (g_bytes_equal (migrated, expected));
}

typedef struct {
  const char *name;
  guint32     format;
  guint       n_bytes;
  const char *message;
} BadSnapshot;

static const BadSnapshot bad_snapshots[] = {
  { "format-0", 0, 16, "snapshot format 0 is unknown to counter 1.1.0 (it reads formats 1 and 2)" },
  { "format-3", 3, 16, "snapshot format 3 is unknown to counter 1.1.0 (it reads formats 1 and 2)" },
  { "v2-short", 2, 8, "snapshot of format 2 has 8 bytes, expected 16" },
  { "v1-long", 1, 16, "snapshot of format 1 has 16 bytes, expected 8" },
  { "empty", 2, 0, "snapshot of format 2 has 0 bytes, expected 16" },
};

static void
test_counter_snapshot_refused (Hooks        *fixture,
                               gconstpointer user_data)
{
  const BadSnapshot *tc = user_data;
  const guint8 bytes[16] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                             0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff };
  g_autoptr(GBytes) snapshot = g_bytes_new (bytes, tc->n_bytes);
  g_autoptr(GBytes) after = NULL;
  g_autoptr(GError) error = NULL;
  const guint64 zeros[] = { 0, 0 };
  g_autoptr(GBytes) expected = snapshot_new (G_N_ELEMENTS (zeros), zeros);

  g_test_summary ("An unknown format or a snapshot of the wrong size is refused with the "
                  "reason, and the state is left as it was");

  g_assert_false (fixture->desc->state_restore (NULL, fixture->state, tc->format, snapshot, &error));
  g_assert_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED);
  g_assert_cmpstr (error->message, ==, tc->message);
  after = hooks_snapshot (fixture);
  g_assert_true (g_bytes_equal (after, expected));
}

/* ---- counting, in the harness ------------------------------------------- */

static void
assert_count (AhTestHost *host,
              const char *expected)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) reply = ah_test_host_request (host, "counter.get", "", 0, 5000, &error);
  gsize size;
  gconstpointer data;

  g_assert_no_error (error);
  data = g_bytes_get_data (reply, &size);
  g_assert_cmpmem (data, size, expected, strlen (expected));
}

static void
test_counter_manifest (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;
  g_autofree char *text = NULL;
  AhHostStats stats;

  g_test_summary ("counter.yaml: the seed [1, 2, 3] is counted at start; adds and an empty "
                  "add (1) follow; a bad add is refused and counts nothing; finalize prints");

  capture_begin ();
  host = ah_test_host_new_for_manifest (COUNTER_MANIFEST, &error);
  g_assert_no_error (error);
  /* The seed went out through the bus, as three adds. */
  g_assert_cmpuint (ah_test_host_count (host, AH_TEST_CAPTURE_PUBLISHED, "counter.add"), ==, 3);
  assert_count (host, "6");

  ah_test_host_publish_string (host, "counter.add", "10");
  ah_test_host_publish_string (host, "counter.add", "");
  ah_test_host_run_until_idle (host);
  assert_count (host, "17");

  ah_test_host_publish_string (host, "counter.add", "ten");
  ah_test_host_publish_string (host, "counter.add", "1000001");
  ah_test_host_publish (host, "counter.add", "5\0" "5", 3);
  ah_test_host_run_until_idle (host);
  assert_count (host, "17");
  ah_test_host_get_stats (host, &stats);
  /* However the bad adds were batched, each is failed. */
  g_assert_cmpuint (stats.failed, ==, 3);

  g_clear_pointer (&host, ah_test_host_free);
  text = capture_end ();
  g_assert_cmpstr (text, ==, "counter 0: 17 after 5 adds\n");
}

static void
test_counter_reload (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;
  g_autofree char *text = NULL;
  AhHostStats stats;

  g_test_summary ("A hot reload of counter.so carries the count through the plugin's own "
                  "snapshot and restore; the old version's finalize reports at the switch");

  capture_begin ();
  host = ah_test_host_new_for_manifest (COUNTER_MANIFEST, &error);
  g_assert_no_error (error);
  ah_test_host_publish_string (host, "counter.add", "4");
  ah_test_host_run_until_idle (host);
  assert_count (host, "10");

  /* Both versions have the hooks and do not declare the layout stable:
   * the state goes through state_snapshot and state_restore. */
  g_assert_true (ah_host_reload (ah_test_host_get_host (host), "counter", &error));
  g_assert_no_error (error);
  ah_test_host_run_until_idle (host);
  assert_count (host, "10");
  ah_test_host_publish_string (host, "counter.add", "");
  ah_test_host_run_until_idle (host);
  assert_count (host, "11");

  ah_test_host_get_stats (host, &stats);
  g_assert_cmpuint (stats.reloads, ==, 1);
  g_assert_cmpuint (stats.reload_failures, ==, 0);
  /* Nobody subscribes to the host's announcement of it: an event nobody
   * hears is not a dead letter. */
  g_assert_cmpuint (ah_test_host_count (host, AH_TEST_CAPTURE_DEAD_LETTERS, "$SYS.reload.done"), ==, 0);

  g_clear_pointer (&host, ah_test_host_free);
  text = capture_end ();
  g_assert_cmpstr (text, ==, "counter 0: 10 after 4 adds\n"
                             "counter 0: 11 after 5 adds\n");
}

static void
test_counter_config_invalid (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) host = NULL;

  g_test_summary ("A seed outside the schema's range is refused before any agent starts");

  host = ah_test_host_new ("name: bad-seed\n"
                           "agents:\n"
                           "  counter:\n"
                           "    plugin: counter\n"
                           "    config: {seed: [1, -2]}\n", EXAMPLE_BUILD_DIR, &error);
  g_assert_null (host);
  g_assert_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_OUT_OF_RANGE);
  g_assert_cmpstr (error->message, ==, "<test>:5:24: error: agent type 'counter': config "
                   "'seed.1' must be an integer between 0 and 1000000, got '-2'");
}

static void
test_counter_run (void)
{
  const char *agenthost = g_getenv ("AGENTHOST");
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) run = NULL;
  g_autofree char *out = NULL;
  g_autofree char *err = NULL;

  g_test_summary ("`agenthost run counter.yaml` counts the seed, prints 6 and exits 0 once idle");
  if (agenthost == NULL)
    {
      g_test_skip ("AGENTHOST is not set (meson test sets it)");
      return;
    }

  run = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE, &error,
                          agenthost, "run", COUNTER_MANIFEST, NULL);
  g_assert_no_error (error);
  g_assert_true (g_subprocess_communicate_utf8 (run, NULL, NULL, &out, &err, &error));
  g_assert_no_error (error);
  g_assert_true (g_subprocess_get_if_exited (run));
  g_assert_cmpint (g_subprocess_get_exit_status (run), ==, 0);
  g_assert_true (g_str_has_prefix (out, "counter 0: 6 after 3 adds\n"));
  g_assert_nonnull (strstr (out, "stopped by idle, exit code 0"));
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_set_print_handler (capture_print);

  g_test_add ("/example/counter/descriptor", Hooks, NULL,
              hooks_set_up, test_counter_descriptor, hooks_tear_down);
  g_test_add ("/example/counter/snapshot/round-trip", Hooks, NULL,
              hooks_set_up, test_counter_snapshot_round_trip, hooks_tear_down);
  g_test_add ("/example/counter/snapshot/migrate-v1", Hooks, NULL,
              hooks_set_up, test_counter_snapshot_migrate, hooks_tear_down);
  for (guint i = 0; i < G_N_ELEMENTS (bad_snapshots); i++)
    {
      g_autofree char *path = g_strdup_printf ("/example/counter/snapshot/refused/%s",
                                               bad_snapshots[i].name);

      g_test_add (path, Hooks, &bad_snapshots[i],
                  hooks_set_up, test_counter_snapshot_refused, hooks_tear_down);
    }
  g_test_add_func ("/example/counter/manifest", test_counter_manifest);
  g_test_add_func ("/example/counter/reload", test_counter_reload);
  g_test_add_func ("/example/counter/config/invalid", test_counter_config_invalid);
  g_test_add_func ("/example/counter/run", test_counter_run);

  return g_test_run ();
}
