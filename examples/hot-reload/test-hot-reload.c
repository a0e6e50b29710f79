/* SPDX-License-Identifier: MIT */
/* The hot-reload example: the walk-through of README.md, done by a
 * program. A copy of the example's plugins runs with a fast ticker; the
 * counter is replaced by the build of counter.c with COUNTER_STEP 10
 * (counter-step10.so) and reloaded, through the embedding API and
 * through `agenthost run --watch`; the counter goes on from its count,
 * 10 per tick, and no tick is missed or counted twice. The plugins are
 * in EXAMPLE_BUILD_DIR. */
#include <agenthost/agenthost.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <glib/gstdio.h>

#define TEST_TIMEOUT_S 20

static const char fast_manifest[] =
  "name: hot-reload\n"
  "agents:\n"
  "  ticker:\n"
  "    plugin: ./ticker.so\n"
  "    subscribe:\n"
  "      - subject: $SYS.host.started\n"
  "        delivery: broadcast\n"
  "      - tick\n"
  "    config:\n"
  "      interval_ms: 5\n"
  "  counter:\n"
  "    plugin: ./counter.so\n"
  "    subscribe:\n"
  "      - tick\n"
  "      - counter.get\n";

/* One "counter: tick T, count N (+S per tick)" line. */
typedef struct {
  guint64 count;
  guint64 ticks;
  guint   step;
} Report;

static gboolean
parse_report (const char *line,
              Report     *ret_report)
{
  guint64 ticks, count;
  guint step;

  if (sscanf (line, "counter: tick %" G_GUINT64_FORMAT ", count %" G_GUINT64_FORMAT
              " (+%u per tick)", &ticks, &count, &step) != 3)
    return FALSE;
  *ret_report = (Report) { count, ticks, step };
  return TRUE;
}

/* What the counter prints from the host's workers while a test of the
 * embedding API runs: recorded, and kept out of the TAP stream, which
 * GTest writes with g_print() too. */
static GMutex printed_lock;
static GCond printed_cond;
static GArray *printed;   /* (element-type Report) while recording */

static void
record_print (const char *text)
{
  Report report;

  if (parse_report (text, &report))
    {
      g_mutex_lock (&printed_lock);
      if (printed != NULL)
        g_array_append_val (printed, report);
      g_cond_broadcast (&printed_cond);
      g_mutex_unlock (&printed_lock);
      return;
    }
  fputs (text, stdout);
  fflush (stdout);
}

static void
copy_file (const char *from,
           const char *to)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *contents = NULL;
  gsize size;

  g_file_get_contents (from, &contents, &size, &error);
  g_assert_no_error (error);
  /* Written beside and renamed over, as a build replaces a plugin. */
  g_file_set_contents (to, contents, (gssize) size, &error);
  g_assert_no_error (error);
}

/* A private directory with the example's plugins and the fast manifest. */
static char *
make_example_dir (void)
{
  g_autofree char *manifest = NULL;
  g_autoptr(GError) error = NULL;
  char *dir = g_build_filename (g_get_user_cache_dir (), "hot-reload", NULL);

  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  for (guint i = 0; i < 2; i++)
    {
      const char *name = i == 0 ? "ticker.so" : "counter.so";
      g_autofree char *from = g_build_filename (EXAMPLE_BUILD_DIR, name, NULL);
      g_autofree char *to = g_build_filename (dir, name, NULL);

      copy_file (from, to);
    }
  manifest = g_build_filename (dir, "hot-reload.yaml", NULL);
  g_file_set_contents (manifest, fast_manifest, -1, &error);
  g_assert_no_error (error);
  return dir;
}

static void
remove_example_dir (const char *dir)
{
  const char *names[] = { "ticker.so", "counter.so", "hot-reload.yaml" };

  for (guint i = 0; i < G_N_ELEMENTS (names); i++)
    {
      g_autofree char *path = g_build_filename (dir, names[i], NULL);

      g_unlink (path);
    }
  g_rmdir (dir);
}

/* The reports, oldest first, must be ticks 1, 2, 3... each adding its
 * step to the count before it, with step 1 up to one point and 10 from
 * there on, at least @min_after of them after it. */
static void
assert_reports (const GArray *reports,
                guint         min_after)
{
  guint switched_at = 0;

  g_assert_cmpuint (reports->len, >, 0);
  for (guint i = 0; i < reports->len; i++)
    {
      const Report *report = &g_array_index (reports, Report, i);
      guint64 count_before = i == 0 ? 0 : g_array_index (reports, Report, i - 1).count;

      g_assert_cmpuint (report->ticks, ==, i + 1);
      g_assert_cmpuint (report->count, ==, count_before + report->step);
      if (report->step == 10 && switched_at == 0)
        switched_at = i;
      g_assert_cmpuint (report->step, ==, switched_at == 0 ? 1 : 10);
    }
  g_assert_cmpuint (switched_at, >, 0);
  g_assert_cmpuint (reports->len - switched_at, >=, min_after);
}

/* ---- through the embedding API --------------------------------------------- */

/* The first index of @reports with @step, or its length. */
static guint
find_step (const GArray *reports,
           guint         step)
{
  for (guint i = 0; i < reports->len; i++)
    if (g_array_index (reports, Report, i).step == step)
      return i;
  return reports->len;
}

/* Waits until the counter has printed @more lines after its first of
 * @step. */
static void
wait_for_step (guint step,
               guint more)
{
  gint64 deadline = g_get_monotonic_time () + TEST_TIMEOUT_S * G_TIME_SPAN_SECOND;
  gboolean in_time = TRUE;

  g_mutex_lock (&printed_lock);
  while (find_step (printed, step) + more >= printed->len && in_time)
    in_time = g_cond_wait_until (&printed_cond, &printed_lock, deadline);
  g_mutex_unlock (&printed_lock);
  g_assert_true (in_time);
}

static void
test_hot_reload_api (void)
{
  g_autofree char *dir = make_example_dir ();
  g_autofree char *manifest_path = g_build_filename (dir, "hot-reload.yaml", NULL);
  g_autofree char *counter = g_build_filename (dir, "counter.so", NULL);
  g_autofree char *step10 = g_build_filename (EXAMPLE_BUILD_DIR, "counter-step10.so", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GArray) reports = NULL;
  AhManifest *manifest;
  AhHostStats stats;

  g_test_summary ("The counter, reloaded with COUNTER_STEP 10 while ticks flow, goes on "
                  "from its count at 10 per tick; no tick missed or counted twice");

  g_mutex_lock (&printed_lock);
  printed = g_array_new (FALSE, FALSE, sizeof (Report));
  g_mutex_unlock (&printed_lock);

  manifest = ah_manifest_load (manifest_path, &error);
  g_assert_no_error (error);
  host = ah_host_new (manifest, &error);
  g_assert_no_error (error);
  g_assert_true (ah_host_start (host, &error));
  g_assert_no_error (error);

  wait_for_step (1, 3);
  copy_file (step10, counter);
  g_assert_true (ah_host_reload (host, "counter", &error));
  g_assert_no_error (error);
  wait_for_step (10, 3);

  ah_host_get_stats (host, &stats);
  g_assert_cmpuint (stats.reloads, ==, 1);
  g_assert_cmpuint (stats.reload_failures, ==, 0);
  g_clear_pointer (&host, ah_host_free);

  g_mutex_lock (&printed_lock);
  reports = g_steal_pointer (&printed);
  g_mutex_unlock (&printed_lock);
  assert_reports (reports, 3);
  remove_example_dir (dir);
}

/* ---- through `agenthost run --watch` ---------------------------------------- */

typedef struct {
  GMainLoop        *loop;
  GDataInputStream *output;
  GString          *log;        /* everything read, for the failure message */
  GArray           *ticks;      /* (element-type Report) */
  gboolean          reloaded;   /* the host logged the reload */
  guint             want_step;
  guint             want_more;
  gboolean          timed_out;
  gboolean          ended;      /* end of output */
} Watching;

static gboolean
watching_satisfied (Watching *self)
{
  return find_step (self->ticks, self->want_step) + self->want_more < self->ticks->len;
}

static void watching_read_next (Watching *self);

static void
watching_on_line (GObject      *source,
                  GAsyncResult *result,
                  gpointer      user_data)
{
  Watching *self = user_data;
  g_autoptr(GError) error = NULL;
  g_autofree char *line = g_data_input_stream_read_line_finish (self->output, result, NULL,
                                                                &error);
  Report report;

  if (line == NULL)
    {
      self->ended = TRUE;
      g_main_loop_quit (self->loop);
      return;
    }
  g_string_append_printf (self->log, "%s\n", line);
  if (parse_report (line, &report))
    g_array_append_val (self->ticks, report);
  else if (strstr (line, "reloaded") != NULL && strstr (line, "counter.so") != NULL)
    self->reloaded = TRUE;

  if (watching_satisfied (self))
    g_main_loop_quit (self->loop);
  else
    watching_read_next (self);
}

static void
watching_read_next (Watching *self)
{
  g_data_input_stream_read_line_async (self->output, G_PRIORITY_DEFAULT, NULL,
                                       watching_on_line, self);
}

static gboolean
watching_on_timeout (gpointer user_data)
{
  Watching *self = user_data;

  self->timed_out = TRUE;
  g_main_loop_quit (self->loop);
  return G_SOURCE_REMOVE;
}

/* Reads the run's output until the counter has printed @more lines after
 * its first of @step; fails the test after TEST_TIMEOUT_S. */
static void
watching_run_until (Watching *self,
                    guint     step,
                    guint     more)
{
  guint timeout;

  self->want_step = step;
  self->want_more = more;
  if (watching_satisfied (self))
    return;
  timeout = g_timeout_add_seconds (TEST_TIMEOUT_S, watching_on_timeout, self);
  watching_read_next (self);
  g_main_loop_run (self->loop);
  if (!self->timed_out)
    g_source_remove (timeout);
  if (self->timed_out || self->ended)
    g_error ("agenthost run --watch: no tick of step %u (%s); its output:\n%s", step,
             self->timed_out ? "timed out" : "it ended", self->log->str);
}

static void
test_hot_reload_run_watch (void)
{
  const char *agenthost = g_getenv ("AGENTHOST");
  g_autofree char *dir = NULL;
  g_autofree char *manifest = NULL;
  g_autofree char *counter = NULL;
  g_autofree char *step10 = g_build_filename (EXAMPLE_BUILD_DIR, "counter-step10.so", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(GSubprocess) run = NULL;
  g_autoptr(GMainLoop) loop = NULL;
  g_autoptr(GDataInputStream) output = NULL;
  g_autofree char *rest = NULL;
  Watching watching = { 0, };

  g_test_summary ("The README's steps: `agenthost run --watch`, the counter rebuilt with "
                  "COUNTER_STEP 10, the log shows the reload and the counter goes on at "
                  "10 per tick from where it was; SIGINT then stops the run, status 0");
  if (agenthost == NULL)
    {
      g_test_skip ("AGENTHOST is not set (meson test sets it)");
      return;
    }

  dir = make_example_dir ();
  manifest = g_build_filename (dir, "hot-reload.yaml", NULL);
  counter = g_build_filename (dir, "counter.so", NULL);
  run = g_subprocess_new (G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_MERGE,
                          &error, agenthost, "run", "--watch", manifest, NULL);
  g_assert_no_error (error);

  loop = g_main_loop_new (NULL, FALSE);
  output = g_data_input_stream_new (g_subprocess_get_stdout_pipe (run));
  watching = (Watching) {
    .loop = loop, .output = output, .log = g_string_new (NULL),
    .ticks = g_array_new (FALSE, FALSE, sizeof (Report)),
  };

  watching_run_until (&watching, 1, 3);
  copy_file (step10, counter);
  watching_run_until (&watching, 10, 3);
  g_assert_true (watching.reloaded);
  assert_reports (watching.ticks, 3);

  g_subprocess_send_signal (run, SIGINT);
  g_assert_true (g_subprocess_communicate_utf8 (run, NULL, NULL, &rest, NULL, &error));
  g_assert_no_error (error);
  g_assert_true (g_subprocess_get_if_exited (run));
  g_assert_cmpint (g_subprocess_get_exit_status (run), ==, 0);

  g_string_free (watching.log, TRUE);
  g_array_unref (watching.ticks);
  remove_example_dir (dir);
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);
  g_set_print_handler (record_print);

  g_test_add_func ("/example/hot-reload/api", test_hot_reload_api);
  g_test_add_func ("/example/hot-reload/run-watch", test_hot_reload_run_watch);

  return g_test_run ();
}
