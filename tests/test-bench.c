/* SPDX-License-Identifier: MIT */
/* Tests of `agenthost bench`: every scenario runs at tiny counts, prints
 * one JSON object per case with the keys the issue asks for, and checks
 * its sequence numbers (lost == 0); bad options are usage errors.
 */
#include <agenthost/agenthost.h>
#include <gio/gio.h>

#include <string.h>

typedef struct {
  int   status;
  char *out;
  char *err;
} BenchRun;

static void
bench_run_clear (BenchRun *run)
{
  g_clear_pointer (&run->out, g_free);
  g_clear_pointer (&run->err, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (BenchRun, bench_run_clear)

/* Runs `agenthost bench ARGS...`; the plugin path comes from the test
 * environment (meson sets AGENTHOST_PLUGIN_PATH to the built plugins). */
static void
bench_run (const char * const *args,
           BenchRun           *run)
{
  g_autoptr(GPtrArray) argv = g_ptr_array_new ();
  g_autoptr(GSubprocess) process = NULL;
  g_autoptr(GError) error = NULL;
  const char *agenthost = g_getenv ("AGENTHOST");

  g_assert_nonnull (agenthost);
  g_ptr_array_add (argv, (gpointer) agenthost);
  g_ptr_array_add (argv, (gpointer) "bench");
  for (gsize i = 0; args[i] != NULL; i++)
    g_ptr_array_add (argv, (gpointer) args[i]);
  g_ptr_array_add (argv, NULL);

  process = g_subprocess_newv ((const char * const *) argv->pdata,
                               G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE,
                               &error);
  g_assert_no_error (error);
  g_subprocess_communicate_utf8 (process, NULL, NULL, &run->out, &run->err, &error);
  g_assert_no_error (error);
  g_assert_true (g_subprocess_get_if_exited (process));
  run->status = g_subprocess_get_exit_status (process);
}

/* The value of "key": NUMBER in one JSON object line, or -1 if absent. */
static gdouble
json_number (const char *line,
             const char *key)
{
  g_autofree char *needle = g_strdup_printf ("\"%s\": ", key);
  const char *at = strstr (line, needle);

  if (at == NULL)
    return -1;
  return g_ascii_strtod (at + strlen (needle), NULL);
}

/* The object lines of the JSON array, each checked for the common keys
 * and for no message lost. Returns their scenario names in order. */
static GPtrArray *
check_json_results (const char *out)
{
  g_auto(GStrv) lines = g_strsplit (out, "\n", -1);
  GPtrArray *names = g_ptr_array_new_with_free_func (g_free);
  static const char * const keys[] = {
    "messages", "seconds", "msgs_per_sec", "p50_us", "p99_us", "p999_us", "lost",
  };
  guint n_lines = g_strv_length (lines);

  g_assert_cmpuint (n_lines, >=, 3);
  g_assert_cmpstr (lines[0], ==, "[");
  g_assert_cmpstr (lines[n_lines - 2], ==, "]");
  for (guint i = 1; i + 2 < n_lines; i++)
    {
      const char *line = lines[i];
      const char *name = strstr (line, "{\"scenario\": \"");
      const char *end;

      g_assert_nonnull (name);
      name += strlen ("{\"scenario\": \"");
      end = strchr (name, '"');
      g_assert_nonnull (end);
      g_ptr_array_add (names, g_strndup (name, (gsize) (end - name)));
      for (gsize k = 0; k < G_N_ELEMENTS (keys); k++)
        g_assert_cmpfloat (json_number (line, keys[k]), >=, 0);
      g_assert_cmpfloat (json_number (line, "lost"), ==, 0);
      g_assert_cmpfloat (json_number (line, "messages"), >, 0);
      g_assert_true (g_str_has_suffix (line, i + 3 < n_lines ? "}," : "}"));
    }
  return names;
}

static void
assert_names (GPtrArray          *names,
              const char * const *expected)
{
  g_assert_cmpuint (names->len, ==, g_strv_length ((GStrv) expected));
  for (guint i = 0; i < names->len; i++)
    g_assert_cmpstr (names->pdata[i], ==, expected[i]);
}

typedef struct {
  const char *scenario;
  const char *expected[16];
  const char *check_key;      /* a scenario-specific key that must be there */
} ScenarioCase;

static const ScenarioCase scenario_cases[] = {
  { "throughput", { "throughput", NULL }, "published" },
  { "fanout", { "fanout", NULL }, "sinks" },
  { "fanin", { "fanin", NULL }, "publishers" },
  { "rtt", { "rtt-same-worker", "rtt-across-workers", "rtt-under-load", "rtt-from-idle", NULL },
    "round_trips" },
  { "spawn", { "spawn-warm", "prewarm-4x1000", "prewarm-4x2000", "spawn-batch-200",
                "spawn-batch-2000", "spawn-waves-10x200", "restart", "hold-20000", NULL }, "agents" },
  { "stage3", { "stage3-baseline", "stage3-high-concurrency", "stage3-peak-load",
                "stage3-ultra-high-load", "stage3-sustained-load",
                "stage3-communication-intensive", "stage3-task-execution-heavy",
                "stage3-baseline-burst", "stage3-high-concurrency-burst", "stage3-peak-load-burst",
                "stage3-ultra-high-load-burst", "stage3-sustained-load-burst",
                "stage3-communication-intensive-burst", "stage3-task-execution-heavy-burst",
                NULL },
    "success_percent" },
};

static void
test_bench_scenario (gconstpointer data)
{
  const ScenarioCase *scenario = data;
  const char *args[] = {
    "--json", "--messages", "2000", "--spawn-agents", "2000", "--sustained-seconds", "0",
    "--batch", "64", scenario->scenario, NULL
  };
  g_auto(BenchRun) run = { 0 };
  g_autoptr(GPtrArray) names = NULL;
  g_auto(GStrv) lines = NULL;

  g_test_summary ("A scenario at tiny counts exits 0 and prints one JSON object per case "
                  "with the issue's keys, its own keys, and lost == 0");
  bench_run (args, &run);
  g_assert_cmpstr (run.err, ==, "");
  g_assert_cmpint (run.status, ==, 0);
  names = check_json_results (run.out);
  assert_names (names, scenario->expected);
  lines = g_strsplit (run.out, "\n", -1);
  for (guint i = 1; i <= names->len; i++)
    g_assert_cmpfloat (json_number (lines[i], scenario->check_key), >=, 0);
  /* stage3: each case runs paced, then all at once, with the same counts
   * (one round each at --sustained-seconds 0), all of them arriving. */
  if (g_str_equal (scenario->scenario, "stage3"))
    for (guint i = 1; i <= names->len / 2; i++)
      {
        const char *paced = lines[i], *burst = lines[i + names->len / 2];

        g_assert_nonnull (strstr (paced, "\"arrival\": \"paced\""));
        g_assert_nonnull (strstr (burst, "\"arrival\": \"burst\""));
        g_assert_cmpfloat (json_number (paced, "wave_agents"), <=, json_number (paced, "agents"));
        g_assert_cmpfloat (json_number (burst, "wave_agents"), ==, json_number (burst, "agents"));
        g_assert_cmpfloat (json_number (paced, "agent_messages"), ==,
                           json_number (burst, "agent_messages"));
        g_assert_cmpfloat (json_number (paced, "tasks"), ==, json_number (burst, "tasks"));
        g_assert_cmpfloat (json_number (paced, "success_percent"), ==, 100);
        g_assert_cmpfloat (json_number (burst, "success_percent"), ==, 100);
      }
}

/* The flow scenarios move exactly what they were asked to: fanout's
 * count is handler deliveries, all 100 subscribers getting each one. */
static void
test_bench_counts (void)
{
  const char *args[] = { "--json", "--messages", "3000", "--payload", "100",
                         "throughput", "fanout", "fanin", NULL };
  g_auto(BenchRun) run = { 0 };
  g_autoptr(GPtrArray) names = NULL;
  g_auto(GStrv) lines = NULL;

  g_test_summary ("throughput, fanout and fanin deliver exactly --messages to handlers");
  bench_run (args, &run);
  g_assert_cmpint (run.status, ==, 0);
  names = check_json_results (run.out);
  g_assert_cmpuint (names->len, ==, 3);
  lines = g_strsplit (run.out, "\n", -1);
  g_assert_cmpfloat (json_number (lines[1], "messages"), ==, 3000);
  g_assert_cmpfloat (json_number (lines[1], "published"), ==, 3000);
  g_assert_cmpfloat (json_number (lines[2], "messages"), ==, 3000);
  g_assert_cmpfloat (json_number (lines[2], "published"), ==, 30);
  g_assert_cmpfloat (json_number (lines[3], "messages"), ==, 3000);
  g_assert_cmpfloat (json_number (lines[3], "publishers"), ==, 100);
}

static void
test_bench_table (void)
{
  const char *args[] = { "--messages", "1000", "--pin", "throughput", NULL };
  g_auto(BenchRun) run = { 0 };

  g_test_summary ("Without --json the result is a table; --pin pins the workers and says so");
  bench_run (args, &run);
  g_assert_cmpint (run.status, ==, 0);
  g_assert_true (g_str_has_prefix (run.out, "scenario "));
  g_assert_nonnull (strstr (run.out, "\nthroughput "));
  g_assert_nonnull (strstr (run.out, "CPU pinning: on\n"));
}

typedef struct {
  const char *args[4];
  const char *message;
} UsageCase;

static const UsageCase usage_cases[] = {
  { { "warp", NULL }, "agenthost bench: unknown scenario 'warp' (throughput, fanout, fanin, rtt, "
    "spawn, stage3)\n" },
  { { "--payload", "8", NULL }, "agenthost bench: --payload must be between 24 and 65536\n" },
  { { "--messages", "0", NULL }, "agenthost bench: --messages must be between 1 and "
    "1000000000000\n" },
  { { "--batch", "0", NULL }, "agenthost bench: --batch must be between 1 and 65536\n" },
  { { "--workers", "-1", NULL }, "agenthost bench: --workers must be between 0 and 256\n" },
  { { "--sustained-seconds", "-1", NULL }, "agenthost bench: --sustained-seconds must be "
    "between 0 and 86400\n" },
};

static void
test_bench_usage (gconstpointer data)
{
  const UsageCase *usage = data;
  g_auto(BenchRun) run = { 0 };
  g_autofree char *expected = g_strdup_printf ("%sTry 'agenthost bench --help' for more "
                                               "information.\n", usage->message);

  g_test_summary ("A bad scenario name or option value is a usage error (2) with an exact "
                  "message, and nothing runs");
  bench_run (usage->args, &run);
  g_assert_cmpint (run.status, ==, 2);
  g_assert_cmpstr (run.out, ==, "");
  g_assert_cmpstr (run.err, ==, expected);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);

  for (gsize i = 0; i < G_N_ELEMENTS (scenario_cases); i++)
    {
      g_autofree char *path = g_strdup_printf ("/bench/run/%s", scenario_cases[i].scenario);

      g_test_add_data_func (path, &scenario_cases[i], test_bench_scenario);
    }
  g_test_add_func ("/bench/run/counts", test_bench_counts);
  g_test_add_func ("/bench/print/table", test_bench_table);
  for (gsize i = 0; i < G_N_ELEMENTS (usage_cases); i++)
    {
      g_autofree char *path = g_strdup_printf ("/bench/usage/%s", usage_cases[i].args[0][0] == '-'
                                               ? usage_cases[i].args[0] + 2 : "unknown-scenario");

      g_test_add_data_func (path, &usage_cases[i], test_bench_usage);
    }

  return g_test_run ();
}
