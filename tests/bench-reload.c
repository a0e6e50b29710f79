/* SPDX-License-Identifier: MIT */
/* bench-reload: how long a hot reload takes under load, and whether any
 * message is lost, duplicated or reordered across it.
 *
 * Runs --agents "seqcheck" agents (tests/plugins-reload/seqcheck.c) while
 * one publisher thread sends each agent numbered messages as fast as the
 * bus takes them, and reloads the plugin --reloads times, v2 and v1
 * alternating (both read each other's snapshots). Each reload is timed
 * from the new file being complete - the ah_host_reload() call - to the
 * last agent switched - the call returning. At the end every agent
 * reports how many messages it counted and how many arrived out of
 * sequence; the counts must add up to what was sent, with no error.
 *
 * How long a bus worker stalls during a switch: the bus times every wait
 * of a worker for its own lock (held by a publisher queueing into its
 * mailboxes, or by a reload pausing one of its agents) and keeps the
 * longest, worker_stall_max_us; printed after the warm-up (no reload
 * yet) and over the whole run. The publish-to-handler latency is printed
 * too, its p99 and maximum at the same two points (the bus keeps one
 * histogram per run, so the second includes the first). Under a
 * saturating load (the default) latency is mostly time spent queueing
 * behind full mailboxes; --rate paces the publisher below saturation,
 * and then a higher maximum over the run is a message that waited
 * through a switch (its agent is paused for about the reload time).
 *
 * Built, not run by `meson test`: build/tests/bench-reload [--json].
 * Exit status 0 when every reload succeeded and no message went wrong.
 */
#include <agenthost/agenthost.h>

#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <glib/gstdio.h>

#define BENCH_TYPE "seqcheck"
#define BENCH_IDLE_TIMEOUT_US (60 * G_TIME_SPAN_SECOND)

typedef struct {
  guint64 count;
  guint64 errors;
  guint64 restores;
  gboolean answered;
} BenchAgent;

typedef struct {
  AhHost      *host;
  AhAgentId   *agents;
  guint        n_agents;

  atomic_int   stop;
  atomic_ulong sent;
  GError      *publish_error;   /* set by the publisher thread before it returns */

  /* Filled by host subscriptions on bus workers. */
  GMutex       lock;
  BenchAgent  *answers;
  guint        n_done;
  guint        n_done_wrong;    /* done events not naming every agent */
  guint        n_failed;
} Bench;

/* ---- options ----------------------------------------------------------------- */

static gint opt_reloads = 20;
static gint opt_agents = 100;
static gint opt_warmup_ms = 500;
static gint opt_interval_ms = 50;
static gint opt_rate = 0;
static gboolean opt_json = FALSE;
static char *opt_plugin_dir = NULL;

static const GOptionEntry bench_options[] = {
  { "reloads", 'n', 0, G_OPTION_ARG_INT, &opt_reloads, "Reloads to time (default 20)", "N" },
  { "agents", 'a', 0, G_OPTION_ARG_INT, &opt_agents, "Agents under load (default 100)", "N" },
  { "warmup-ms", 0, 0, G_OPTION_ARG_INT, &opt_warmup_ms,
    "Load before the first reload (default 500)", "MS" },
  { "interval-ms", 0, 0, G_OPTION_ARG_INT, &opt_interval_ms,
    "Load between two reloads (default 50)", "MS" },
  { "rate", 'r', 0, G_OPTION_ARG_INT, &opt_rate,
    "Messages per second to send (default 0: as fast as the bus takes them)", "N" },
  { "json", 0, 0, G_OPTION_ARG_NONE, &opt_json, "Print one JSON object", NULL },
  { "plugin-dir", 0, 0, G_OPTION_ARG_FILENAME, &opt_plugin_dir,
    "Where seqcheck-v1.so and seqcheck-v2.so are (default: the build tree's)", "DIR" },
  G_OPTION_ENTRY_NULL
};

/* ---- traffic ----------------------------------------------------------------- */

static gpointer
bench_publish (gpointer data)
{
  Bench *self = data;
  guint64 seq = 0;
  gint64 start = g_get_monotonic_time ();

  while (!atomic_load_explicit (&self->stop, memory_order_relaxed))
    {
      /* Paced: one message per agent per round, each round on its slot.
       * An unsaturated bus keeps mailboxes short, so the latency figures
       * show stalls rather than queueing. */
      if (opt_rate > 0)
        {
          gint64 due = start + (gint64) (seq * self->n_agents * (gdouble) G_USEC_PER_SEC / opt_rate);
          gint64 now = g_get_monotonic_time ();

          if (due > now)
            g_usleep ((gulong) (due - now));
        }
      seq++;
      for (guint k = 0; k < self->n_agents; k++)
        {
          char payload[48];
          int n = g_snprintf (payload, sizeof payload, "%u %" G_GUINT64_FORMAT, k, seq);

          if (!ah_host_send (self->host, self->agents[k], "seq.in", payload, (gsize) n,
                             &self->publish_error))
            return NULL;
          atomic_fetch_add_explicit (&self->sent, 1, memory_order_relaxed);
        }
    }
  return NULL;
}

static void
bench_on_stats (const AhMessage *message,
                gpointer         user_data)
{
  Bench *self = user_data;
  const char *subject = ah_message_get_subject (message);
  gsize size;
  const char *data = ah_message_get_data (message, &size);
  g_autofree char *text = g_strndup (data, size);
  guint64 index;
  guint version;
  uint64_t count, errors, restores;

  if (!g_ascii_string_to_unsigned (subject + strlen ("seq.stats."), 10, 0,
                                   self->n_agents - 1, &index, NULL)
      || sscanf (text, "version=%u count=%" SCNu64 " errors=%" SCNu64 " restores=%" SCNu64,
                 &version, &count, &errors, &restores) != 4)
    {
      g_printerr ("bench-reload: unexpected answer on %s: %s\n", subject, text);
      return;
    }
  g_mutex_lock (&self->lock);
  self->answers[index] = (BenchAgent) { count, errors, restores, TRUE };
  g_mutex_unlock (&self->lock);
}

static void
bench_on_reload (const AhMessage *message,
                 gpointer         user_data)
{
  Bench *self = user_data;
  gsize size;
  const char *data = ah_message_get_data (message, &size);
  g_autofree char *text = g_strndup (data, size);
  g_autofree char *agents = g_strdup_printf (" agents=%u ", self->n_agents);

  g_mutex_lock (&self->lock);
  if (g_str_equal (ah_message_get_subject (message), "$SYS.reload.done"))
    {
      self->n_done++;
      if (strstr (text, agents) == NULL)
        self->n_done_wrong++;
    }
  else
    {
      self->n_failed++;
      g_printerr ("bench-reload: %s\n", text);
    }
  g_mutex_unlock (&self->lock);
}

/* ---- numbers ----------------------------------------------------------------- */

static int
compare_doubles (gconstpointer a,
                 gconstpointer b)
{
  gdouble x = *(const gdouble *) a;
  gdouble y = *(const gdouble *) b;

  return (x > y) - (x < y);
}

/* Nearest rank on sorted @values. */
static gdouble
percentile (const gdouble *values,
            guint          n,
            gdouble        fraction)
{
  guint rank;

  if (n == 0)
    return 0.0;
  rank = (guint) (fraction * n + 0.999999);
  return values[CLAMP (rank, 1u, n) - 1];
}

static gdouble
median (const gdouble *values,
        guint          n)
{
  if (n == 0)
    return 0.0;
  return n % 2 == 1 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2.0;
}

/* ---- setup ------------------------------------------------------------------- */

static gboolean
bench_install (const char *dir,
               const char *file,
               const char *target,
               GError    **error)
{
  g_autofree char *source = g_build_filename (dir, file, NULL);
  g_autofree char *contents = NULL;
  gsize size;

  /* A new file renamed over the running one, as a build finishes. */
  return g_file_get_contents (source, &contents, &size, error)
         && g_file_set_contents (target, contents, (gssize) size, error);
}

static AhHost *
bench_host_new (const char *dir,
                guint       n_agents,
                GError    **error)
{
  g_autofree char *yaml = g_strdup_printf (
    "name: bench-reload\n"
    "agents:\n"
    "  seqcheck:\n"
    "    plugin: ./seqcheck.so\n"
    "    pool_size: %u\n"
    /* Started one by one below: ah_host_spawn() gives each agent's id. */
    "    prewarm: false\n"
    "    subscribe:\n"
    "      - subject: seq.report\n"
    "        delivery: broadcast\n", n_agents);
  AhManifest *manifest = ah_manifest_load_data (yaml, strlen (yaml), "<bench>", dir, error);

  return manifest != NULL ? ah_host_new (manifest, error) : NULL;
}

int
main (int    argc,
      char **argv)
{
  g_autoptr(GOptionContext) context = g_option_context_new ("- time hot reloads under load");
  g_autoptr(GError) error = NULL;
  g_autofree char *dir = NULL;
  g_autofree char *target = NULL;
  g_autofree gdouble *reload_ms = NULL;
  g_autoptr(AhHost) host = NULL;
  Bench bench = { 0, };
  GThread *publisher;
  AhHostStats before, after;
  gint64 load_start, load_end;
  guint64 sent, counted = 0, errors = 0;
  guint n_reloaded = 0, n_unanswered = 0, n_wrong_restores = 0;
  gdouble rate;
  gboolean ok;

  g_option_context_add_main_entries (context, bench_options, NULL);
  if (!g_option_context_parse (context, &argc, &argv, &error))
    {
      g_printerr ("bench-reload: %s\n", error->message);
      return 2;
    }
  if (opt_reloads < 1 || opt_reloads > 100000 || opt_agents < 1 || opt_agents > 100000
      || opt_warmup_ms < 0 || opt_interval_ms < 0 || opt_rate < 0)
    {
      g_printerr ("bench-reload: --reloads and --agents must be 1 to 100000, "
                  "times and --rate >= 0\n");
      return 2;
    }
  if (opt_plugin_dir == NULL)
    opt_plugin_dir = g_strdup (BENCH_PLUGIN_DIR);

  dir = g_dir_make_tmp ("bench-reload-XXXXXX", &error);
  if (dir == NULL)
    {
      g_printerr ("bench-reload: %s\n", error->message);
      return 1;
    }
  target = g_build_filename (dir, "seqcheck.so", NULL);
  if (!bench_install (opt_plugin_dir, "seqcheck-v1.so", target, &error)
      || (host = bench_host_new (dir, (guint) opt_agents, &error)) == NULL
      || !ah_host_start (host, &error))
    goto failed;

  bench.host = host;
  bench.n_agents = (guint) opt_agents;
  bench.agents = g_new0 (AhAgentId, bench.n_agents);
  bench.answers = g_new0 (BenchAgent, bench.n_agents);
  g_mutex_init (&bench.lock);
  for (guint k = 0; k < bench.n_agents; k++)
    if ((bench.agents[k] = ah_host_spawn (host, BENCH_TYPE, &error)) == AH_AGENT_ID_NONE)
      goto failed;
  if (ah_host_subscribe (host, "seq.stats.*", bench_on_stats, &bench, &error) == 0
      || ah_host_subscribe (host, "$SYS.reload.*", bench_on_reload, &bench, &error) == 0)
    goto failed;

  load_start = g_get_monotonic_time ();
  publisher = g_thread_new ("publisher", bench_publish, &bench);
  /* A benchmark, not a test: the load runs for a while before measuring. */
  g_usleep ((gulong) opt_warmup_ms * 1000);
  ah_host_get_stats (host, &before);

  reload_ms = g_new0 (gdouble, opt_reloads);
  for (gint r = 0; r < opt_reloads; r++)
    {
      g_autoptr(GError) reload_error = NULL;
      gint64 start;

      if (!bench_install (opt_plugin_dir, r % 2 == 0 ? "seqcheck-v2.so" : "seqcheck-v1.so",
                          target, &reload_error))
        {
          g_printerr ("bench-reload: %s\n", reload_error->message);
          break;
        }
      start = g_get_monotonic_time ();
      if (!ah_host_reload (host, BENCH_TYPE, &reload_error))
        {
          g_printerr ("bench-reload: reload %d: %s\n", r + 1, reload_error->message);
          break;
        }
      reload_ms[n_reloaded++] = (g_get_monotonic_time () - start) / 1000.0;
      g_usleep ((gulong) opt_interval_ms * 1000);
    }

  atomic_store (&bench.stop, 1);
  g_thread_join (publisher);
  load_end = g_get_monotonic_time ();
  sent = atomic_load (&bench.sent);
  if (bench.publish_error != NULL)
    g_printerr ("bench-reload: publishing: %s\n", bench.publish_error->message);

  if (!ah_host_wait_idle (host, BENCH_IDLE_TIMEOUT_US)
      || !ah_host_publish (host, "seq.report", "", 0, &error)
      || !ah_host_wait_idle (host, BENCH_IDLE_TIMEOUT_US))
    {
      if (error == NULL)
        g_set_error (&error, AH_HOST_ERROR, AH_HOST_ERROR_TIMEOUT,
                     "the system did not go idle within %d s",
                     (int) (BENCH_IDLE_TIMEOUT_US / G_TIME_SPAN_SECOND));
      goto failed;
    }
  ah_host_get_stats (host, &after);

  g_mutex_lock (&bench.lock);
  for (guint k = 0; k < bench.n_agents; k++)
    {
      if (!bench.answers[k].answered)
        n_unanswered++;
      if (bench.answers[k].restores != n_reloaded)
        n_wrong_restores++;
      counted += bench.answers[k].count;
      errors += bench.answers[k].errors;
    }
  ok = n_reloaded == (guint) opt_reloads && bench.publish_error == NULL
       && n_unanswered == 0 && n_wrong_restores == 0 && errors == 0 && counted == sent
       && bench.n_done == n_reloaded && bench.n_done_wrong == 0 && bench.n_failed == 0;
  g_mutex_unlock (&bench.lock);

  qsort (reload_ms, n_reloaded, sizeof *reload_ms, compare_doubles);
  rate = sent / ((load_end - load_start) / (gdouble) G_TIME_SPAN_SECOND);

  if (opt_json)
    {
      g_print ("{\"agents\": %u, \"reloads\": %u, \"reloads_asked\": %d, "
               "\"messages_sent\": %" G_GUINT64_FORMAT ", \"messages_counted\": %"
               G_GUINT64_FORMAT ", \"rate_msgs_per_s\": %.0f, "
               "\"reload_ms\": {\"median\": %.3f, \"p90\": %.3f, \"max\": %.3f}, "
               "\"latency_us\": {\"p99_warmup\": %.1f, \"p99_run\": %.1f, "
               "\"max_warmup\": %.1f, \"max_run\": %.1f}, "
               "\"worker_stall_max_us\": {\"warmup\": %.1f, \"run\": %.1f}, "
               "\"sequence_errors\": %" G_GUINT64_FORMAT ", \"agents_unanswered\": %u, "
               "\"agents_wrong_restores\": %u, \"reload_failures\": %u, \"ok\": %s}\n",
               bench.n_agents, n_reloaded, opt_reloads, sent, counted, rate,
               median (reload_ms, n_reloaded), percentile (reload_ms, n_reloaded, 0.90),
               n_reloaded > 0 ? reload_ms[n_reloaded - 1] : 0.0,
               before.latency_p99_us, after.latency_p99_us,
               before.latency_max_us, after.latency_max_us,
               before.worker_stall_max_us, after.worker_stall_max_us,
               errors, n_unanswered, n_wrong_restores, bench.n_failed,
               ok ? "true" : "false");
    }
  else
    {
      g_print ("hot reload of %u agents under load, %u of %d reloads\n\n",
               bench.n_agents, n_reloaded, opt_reloads);
      g_print ("  load                     %" G_GUINT64_FORMAT " messages, %.0f msgs/s "
               "(one publisher thread, %s)\n", sent, rate,
               opt_rate > 0 ? "paced" : "as fast as it goes");
      g_print ("  reload, call to return   median %.3f ms   p90 %.3f ms   max %.3f ms\n",
               median (reload_ms, n_reloaded), percentile (reload_ms, n_reloaded, 0.90),
               n_reloaded > 0 ? reload_ms[n_reloaded - 1] : 0.0);
      g_print ("  latency p99              after warm-up %.1f us   whole run %.1f us\n",
               before.latency_p99_us, after.latency_p99_us);
      g_print ("  latency max              after warm-up %.1f us   whole run %.1f us "
               "(publish to handler)\n",
               before.latency_max_us, after.latency_max_us);
      g_print ("  worker stall max         after warm-up %.1f us   whole run %.1f us "
               "(a worker waiting for its own lock)\n",
               before.worker_stall_max_us, after.worker_stall_max_us);
      g_print ("  messages                 %" G_GUINT64_FORMAT " counted of %" G_GUINT64_FORMAT
               " sent, %" G_GUINT64_FORMAT " out of sequence\n", counted, sent, errors);
      g_print ("  agents                   %u unanswered, %u with restores != %u\n",
               n_unanswered, n_wrong_restores, n_reloaded);
      g_print ("\n%s: %s\n", ok ? "OK" : "FAILED",
               ok ? "no message lost, duplicated or reordered"
                  : "see the counts above");
    }

  g_clear_pointer (&host, ah_host_free);
  g_mutex_clear (&bench.lock);
  g_free (bench.agents);
  g_free (bench.answers);
  g_unlink (target);
  g_rmdir (dir);
  g_free (opt_plugin_dir);
  return ok ? 0 : 1;

failed:
  g_printerr ("bench-reload: %s\n", error->message);
  g_clear_pointer (&host, ah_host_free);
  if (bench.agents != NULL)
    g_mutex_clear (&bench.lock);
  g_free (bench.agents);
  g_free (bench.answers);
  g_unlink (target);
  g_rmdir (dir);
  g_free (opt_plugin_dir);
  return 1;
}
