/* SPDX-License-Identifier: MIT */
/* The word-count demo end to end: the four shipped plugins (coordinator,
 * wordcount, validator, reporter) in a real host, through the public API
 * only: whole runs through ah_host_run(), single agents on the test
 * harness (<agenthost/ah-testing.h>). Counts are checked against texts
 * small enough to count by hand, and bad configuration and bad payloads
 * against their exact errors. */
#include <agenthost/agenthost.h>

#include <glib/gstdio.h>
#include <stdio.h>
#include <string.h>

/* The report goes to g_print (on a bus worker) and to report.done. */
typedef struct {
  GMutex   lock;
  GString *printed;
  GString *done;
  guint    n_done;
} ReportCapture;

static ReportCapture capture;
static GPrintFunc   default_print;

/* GTest and GLib's debug logging print too (TAP lines, "# DEBUG"): only
 * the reporter's report, one g_print call, is taken; the rest goes on. */
static void
capture_print (const char *text)
{
  if (!g_str_has_prefix (text, "word count report\n"))
    {
      if (default_print != NULL)
        default_print (text);
      else
        fputs (text, stdout);
      return;
    }
  g_mutex_lock (&capture.lock);
  g_string_append (capture.printed, text);
  g_mutex_unlock (&capture.lock);
}

/* Copies what was captured; asserting with the lock held would deadlock
 * on the failure message, which is printed too. */
static void
capture_get (char  **ret_printed,
             char  **ret_done,
             guint  *ret_n_done)
{
  g_mutex_lock (&capture.lock);
  *ret_printed = g_strdup (capture.printed->str);
  *ret_done = g_strdup (capture.done->str);
  *ret_n_done = capture.n_done;
  g_mutex_unlock (&capture.lock);
}

static void
capture_done (const AhMessage *message,
              gpointer         user_data)
{
  gsize size;
  const char *data = ah_message_get_data (message, &size);

  g_mutex_lock (&capture.lock);
  g_string_append_len (capture.done, data, (gssize) size);
  capture.n_done++;
  g_mutex_unlock (&capture.lock);
}

static void
capture_reset (void)
{
  g_mutex_lock (&capture.lock);
  g_string_truncate (capture.printed, 0);
  g_string_truncate (capture.done, 0);
  capture.n_done = 0;
  g_mutex_unlock (&capture.lock);
}

/* Writes @text into the test's own data directory (isolated per test). */
static char *
write_corpus (const char *name,
              const char *text)
{
  g_autoptr(GError) error = NULL;
  char *path = g_build_filename (g_get_user_data_dir (), name, NULL);

  g_assert_cmpint (g_mkdir_with_parents (g_get_user_data_dir (), 0700), ==, 0);
  g_file_set_contents (path, text, -1, &error);
  g_assert_no_error (error);
  return path;
}

static AhHost *
host_new_from_yaml (const char *yaml,
                    GError    **error)
{
  g_autofree char *base_dir = g_get_current_dir ();
  AhManifest *manifest;

  manifest = ah_manifest_load_data (yaml, strlen (yaml), "test.yaml", base_dir, error);
  if (manifest == NULL)
    return NULL;
  return ah_host_new (manifest, error);
}

/* Runs a system to its end (stop_when_idle) and returns the report. */
static char *
run_to_report (AhHost      *host,
               AhHostStats *ret_stats)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *printed = NULL;
  char *report;
  guint n_done;

  capture_reset ();
  g_assert_cmpuint (ah_host_subscribe (host, "report.done", capture_done, NULL, &error), >, 0);
  g_assert_no_error (error);
  g_assert_true (ah_host_start (host, &error));
  g_assert_no_error (error);
  g_assert_cmpint (ah_host_run (host), ==, 0);
  ah_host_get_stats (host, ret_stats);
  g_assert_cmpuint (ret_stats->accepted, ==, ret_stats->delivered + ret_stats->dead_lettered
                                             + ret_stats->failed);

  capture_get (&printed, &report, &n_done);
  g_assert_cmpuint (n_done, ==, 1);
  g_assert_cmpstr (printed, ==, report);

  return report;
}

#define DEMO_YAML_FORMAT                                              \
  "name: demo-test\n"                                                 \
  "stop_when_idle: true\n"                                            \
  "bus: {workers: 2, handler_batch: 4}\n"                             \
  "agents:\n"                                                         \
  "  coordinator:\n"                                                  \
  "    plugin: coordinator\n"                                         \
  "    pool_size: 2\n"                                                \
  "    subscribe: [$SYS.host.started, corpus.chunk]\n"                \
  "    config: {%s}\n"                                                \
  "  wordcount: {plugin: wordcount, pool_size: 3, subscribe: [tasks.count]}\n" \
  "  validator:\n"                                                    \
  "    plugin: validator\n"                                           \
  "    pool_size: 2\n"                                                \
  "    subscribe: [results.count]\n"                                  \
  "    config: {%s}\n"                                                \
  "  reporter:\n"                                                     \
  "    plugin: reporter\n"                                            \
  "    pool_size: 3\n"                                                \
  "    subscribe:\n"                                                  \
  "      - {subject: results.validated, delivery: broadcast}\n"       \
  "      - {subject: results.rejected, delivery: broadcast}\n"        \
  "      - {subject: report.shard, delivery: broadcast}\n"            \
  "    config: {%s}\n"

static void
test_report_exact (void)
{
  /* No final newline: the copies must not glue "didn't" to "The". */
  g_autofree char *corpus = write_corpus ("exact.txt",
                                          "The cat and the hat.\nThe cat sat; 'the hat didn't");
  g_autofree char *coordinator_config = g_strdup_printf ("corpus_file: '%s', repeat: 3, "
                                                         "chunks: 5", corpus);
  g_autofree char *yaml = g_strdup_printf (DEMO_YAML_FORMAT, coordinator_config, "",
                                           "shards: 3, top: 4");
  g_autoptr(GError) error = NULL;
  g_autoptr(AhHost) host = host_new_from_yaml (yaml, &error);
  g_autofree char *report = NULL;
  AhHostStats stats;

  g_test_summary ("A small corpus gives the exact report, on stdout and on report.done");
  g_assert_no_error (error);

  report = run_to_report (host, &stats);
  /* Per copy: the 4, cat 2, hat 2, and 1, sat 1, didn't 1 (11 words). */
  g_assert_cmpstr (report, ==,
                   "word count report\n"
                   "  corpus: 5 chunks, 33 words, 6 distinct words\n"
                   "  top 4 words:\n"
                   "     1. the        12\n"
                   "     2. cat         6\n"
                   "     3. hat         6\n"
                   "     4. and         3\n"
                   "  validated: 5/5 chunks\n");
  g_assert_cmpuint (stats.failed, ==, 0);
  g_assert_cmpuint (stats.requests, ==, 5);
  g_assert_cmpuint (stats.request_timeouts, ==, 0);
}

static void
test_report_default (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = ah_manifest_load_default (&error);
  g_autoptr(AhHost) host = NULL;
  g_autofree char *report = NULL;
  AhHostStats stats;
  AhTypeStats type_stats;

  g_test_summary ("The built-in system: 4 types x 5 agents, every chunk validated");
  g_assert_no_error (error);
  g_assert_cmpstr (ah_manifest_get_name (manifest), ==, "wordcount-demo");
  g_assert_cmpuint (ah_manifest_get_n_types (manifest), ==, 4);

  host = ah_host_new (g_steal_pointer (&manifest), &error);
  g_assert_no_error (error);
  report = run_to_report (host, &stats);

  /* The built-in text has 733 words, 301 distinct, 90 of them "the"
   * (counted independently of these plugins); the corpus is 20 copies. */
  g_assert_nonnull (strstr (report, "  corpus: 40 chunks, 14660 words, 301 distinct words\n"));
  g_assert_nonnull (strstr (report, "  top 10 words:\n     1. the      1800\n"
                                    "     2. and       800\n"));
  g_assert_true (g_str_has_suffix (report, "  validated: 40/40 chunks\n"));
  g_assert_cmpuint (stats.failed, ==, 0);
  g_assert_cmpuint (stats.requests, ==, 40);
  for (guint i = 0; i < ah_host_get_n_types (host); i++)
    {
      g_assert_true (ah_host_get_type_stats (host, i, &type_stats));
      g_assert_cmpuint (type_stats.spawned, ==, 5);
      g_assert_cmpuint (type_stats.handler_failures, ==, 0);
    }
}

static void
test_report_rejected (void)
{
  g_autofree char *corpus = write_corpus ("other.txt", "xylo quip zest");
  g_autofree char *yaml = g_strdup_printf (
    "name: mismatch\n"
    "stop_when_idle: true\n"
    "bus: {handler_batch: 1}\n"
    "agents:\n"
    "  source:\n"
    "    plugin: coordinator\n"
    "    subscribe: [$SYS.host.started]\n"
    "    config: {chunks: 3, repeat: 1}\n"
    "  liar:\n"
    "    plugin: coordinator\n"
    "    subscribe: [corpus.chunk]\n"
    "    config: {chunks: 2, corpus_file: '%s'}\n"
    "  wordcount: {plugin: wordcount, subscribe: [tasks.count]}\n"
    "  validator: {plugin: validator, subscribe: [results.count], config: {timeout_ms: 50}}\n"
    "  reporter:\n"
    "    plugin: reporter\n"
    "    subscribe:\n"
    "      - {subject: results.validated, delivery: broadcast}\n"
    "      - {subject: results.rejected, delivery: broadcast}\n"
    "      - {subject: report.shard, delivery: broadcast}\n"
    "    config: {shards: 1}\n", corpus);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhHost) host = host_new_from_yaml (yaml, &error);
  g_autofree char *report = NULL;
  AhHostStats stats;

  g_test_summary ("Counts that do not match the served text, and chunks nobody serves, "
                  "are rejected with their reason and listed by chunk");
  g_assert_no_error (error);

  report = run_to_report (host, &stats);
  /* The liar splits its text in 2: chunk 0 is "xylo quip", chunk 1
   * " zest", chunk 2 does not exist (the request times out). Words are
   * compared in alphabetical order. */
  g_assert_cmpstr (report, ==, "word count report\n"
                               "  corpus: 3 chunks, 0 words, 0 distinct words\n"
                                    "  top words: none\n"
                                    "  validated: 0/3 chunks\n"
                                    "  rejected: chunk 0: word 'quip' missing (recount 1)\n"
                                    "  rejected: chunk 1: word 'zest' missing (recount 1)\n"
                                    "  rejected: chunk 2: corpus.chunk request timed out "
                                    "after 50 ms\n");
  g_assert_cmpuint (stats.request_timeouts, ==, 1);
  /* The liar refused the request for chunk 2: one failed message (one
   * message per batch, so the count is exact). */
  g_assert_cmpuint (stats.failed, ==, 1);
}

typedef struct {
  const char *name;
  const char *coordinator;
  const char *validator;
  const char *reporter;
  /* -1: the plugins' schemas accept it and agent_init refuses it, so the
   * start fails; otherwise the AhManifestError the host refuses it with,
   * before any agent starts. */
  int         manifest_code;
  const char *message;   /* the whole message, or part of the start's */
} BadConfig;

static const BadConfig bad_configs[] = {
  { "chunks-word", "chunks: lots", "", "", AH_MANIFEST_ERROR_WRONG_TYPE,
    "test.yaml:9:22: error: agent type 'coordinator': config 'chunks' must be an integer "
    "between 1 and 100000, got 'lots'" },
  { "chunks-zero", "chunks: 0", "", "", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "test.yaml:9:22: error: agent type 'coordinator': config 'chunks' must be an integer "
    "between 1 and 100000, got '0'" },
  { "repeat-negative", "repeat: -3", "", "", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "test.yaml:9:22: error: agent type 'coordinator': config 'repeat' must be an integer "
    "between 1 and 100000, got '-3'" },
  { "repeat-huge", "repeat: 100000", "", "", -1,
    "-byte text exceed the 67108864-byte corpus limit" },
  { "corpus-missing", "corpus_file: /nonexistent/corpus.txt", "", "", -1,
    "init failed: config 'corpus_file': " },
  { "timeout-zero", "", "timeout_ms: 0", "", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "test.yaml:15:26: error: agent type 'validator': config 'timeout_ms' must be an integer "
    "between 1 and 600000, got '0'" },
  { "timeout-float", "", "timeout_ms: 1.5", "", AH_MANIFEST_ERROR_WRONG_TYPE,
    "test.yaml:15:26: error: agent type 'validator': config 'timeout_ms' must be an integer "
    "between 1 and 600000, got '1.5'" },
  { "top-zero", "", "", "top: 0", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "test.yaml:23:19: error: agent type 'reporter': config 'top' must be an integer "
    "between 1 and 1000, got '0'" },
  { "unknown-key", "", "", "tops: 3", AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "test.yaml:23:20: error: agent type 'reporter': unknown config key 'tops' "
    "(plugin 'reporter' accepts shards, top)" },
  { "shards-too-few", "", "", "shards: 2", -1,
    "init failed: reporter 2 has no shard: config 'shards' is 2 and must equal the pool size" },
};

static void
test_config_invalid (gconstpointer data)
{
  const BadConfig *tc = data;
  g_autofree char *yaml = g_strdup_printf (DEMO_YAML_FORMAT, tc->coordinator, tc->validator,
                                           tc->reporter);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhHost) host = host_new_from_yaml (yaml, &error);

  g_test_summary ("A bad config value stops the system before it starts, with its reason: "
                  "what the plugins' schemas can say with its manifest position, before "
                  "any agent starts; the rest when agent_init refuses it");
  if (tc->manifest_code >= 0)
    {
      g_assert_null (host);
      g_assert_error (error, AH_MANIFEST_ERROR, tc->manifest_code);
      g_assert_cmpstr (error->message, ==, tc->message);
      return;
    }
  g_assert_no_error (error);

  g_assert_false (ah_host_start (host, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_PREWARM);
  if (strstr (error->message, tc->message) == NULL)
    g_error ("expected a message with \"%s\", got \"%s\"", tc->message, error->message);
}

typedef struct {
  const char *subject;
  const char *payload;
} BadPayload;

static void
test_payload_invalid (void)
{
  static const BadPayload bad_payloads[] = {
    { "tasks.count", "" },
    { "tasks.count", "chunk 1\nhello" },
    { "tasks.count", "chunk 3 3\nhello" },
    { "results.count", "chunk 0 1 1\nhello\n" },
    { "results.count", "chunk 0 1 1\nHello 1\n" },
    { "results.validated", "chunk 0 1 1\nhello 1" },
    { "results.validated", "chunk 0 2 1\nhello 1\n" },   /* TOTAL differs from the first */
    { "results.rejected", "chunk 0 1\n" },               /* chunk 0 was validated already */
    { "report.shard", "shard 5 3 1 1\n" },
    { "report.shard", "shard 0 1\n" },
    { "report.other", "x" },
  };
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = NULL;
  g_autoptr(GPtrArray) done = NULL;
  const char *hostile_yaml =
    "name: hostile\n"
    "agents:\n"
    "  wordcount: {plugin: wordcount, subscribe: [tasks.count]}\n"
    "  validator: {plugin: validator, subscribe: [results.count]}\n"
    "  reporter:\n"
    "    plugin: reporter\n"
    "    subscribe: [results.validated, results.rejected, report.shard, report.other]\n"
    "    config: {shards: 1}\n";
  AhHostStats before, after;
  AhTypeStats type_stats;
  g_autofree char *printed = NULL;
  g_autofree char *captured_done = NULL;
  guint i, n_captured_done;

  g_test_summary ("Malformed payloads fail their handler, are counted failed, and "
                  "leave the agents working");
  capture_reset ();
  t = ah_test_host_new (hostile_yaml, NULL, &error);
  g_assert_no_error (error);

  /* A good chunk first, so the reporter has a corpus size to compare. */
  ah_test_host_publish_string (t, "results.validated", "chunk 0 1 1\nhello 1\n");
  ah_test_host_run_until_idle (t);
  ah_test_host_get_stats (t, &before);

  for (i = 0; i < G_N_ELEMENTS (bad_payloads); i++)
    ah_test_host_publish_string (t, bad_payloads[i].subject, bad_payloads[i].payload);
  ah_test_host_run_until_idle (t);
  ah_test_host_get_stats (t, &after);

  g_assert_cmpuint (after.failed - before.failed, ==, G_N_ELEMENTS (bad_payloads));
  /* The reporter (one shard, TOTAL 1) is done: it published its shard
   * report and, as reporter 0, merged it and printed. */
  for (i = 0; i < ah_host_get_n_types (ah_test_host_get_host (t)); i++)
    {
      g_assert_true (ah_host_get_type_stats (ah_test_host_get_host (t), i, &type_stats));
      g_assert_cmpuint (type_stats.n_agents, ==, 1);
    }
  capture_get (&printed, &captured_done, &n_captured_done);
  g_assert_true (g_str_has_suffix (printed, "  validated: 1/1 chunks\n"));
  /* Nobody subscribed to report.done here: the report, published once,
   * reached nobody. */
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, "report.done"), ==, 1);
  done = ah_test_host_get_messages (t, AH_TEST_CAPTURE_DEAD_LETTERS, "report.done");
  g_assert_cmpuint (done->len, ==, 1);
  g_assert_cmpstr (((AhTestMessage *) g_ptr_array_index (done, 0))->reason, ==, "no-route");
  g_assert_cmpuint (n_captured_done, ==, 0);
}

static char *
request_chunk (AhTestHost *t,
               const char *id,
               guint       timeout_ms,
               GError    **error)
{
  g_autoptr(GBytes) reply = ah_test_host_request (t, "corpus.chunk", id, strlen (id),
                                                  timeout_ms, error);
  gsize size;
  const char *data;

  if (reply == NULL)
    return NULL;
  data = g_bytes_get_data (reply, &size);
  return g_strndup (data, size);
}

static void
test_chunk_request (void)
{
  g_autofree char *corpus = write_corpus ("chunks.txt", "alpha beta gamma delta");
  g_autofree char *yaml = g_strdup_printf (
    "name: chunks\n"
    "agents:\n"
    "  coordinator:\n"
    "    plugin: coordinator\n"
    "    pool_size: 2\n"
    "    subscribe: [corpus.chunk]\n"
    "    config: {corpus_file: '%s', chunks: 3}\n", corpus);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new (yaml, NULL, &error);
  g_autofree char *first = NULL;
  g_autofree char *second = NULL;
  g_autofree char *last = NULL;
  g_autofree char *missing = NULL;
  g_autofree char *garbage = NULL;

  g_test_summary ("Coordinators serve chunks by id; a bad id gets no reply");
  g_assert_no_error (error);

  /* 22 bytes in 3: targets 7 and 14, moved to the spaces at 10 and 16. */
  first = request_chunk (t, "0", 2000, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (first, ==, "alpha beta");
  second = request_chunk (t, "1", 2000, &error);
  g_assert_cmpstr (second, ==, " gamma");
  last = request_chunk (t, "2", 2000, &error);
  g_assert_cmpstr (last, ==, " delta");

  missing = request_chunk (t, "3", 50, &error);
  g_assert_null (missing);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_TIMEOUT);
  g_clear_error (&error);
  garbage = request_chunk (t, "-1", 50, &error);
  g_assert_null (garbage);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_TIMEOUT);
  /* Not a late reply either: the coordinators answered three times. */
  ah_test_host_run_until_idle (t);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_REPLIES, "corpus.chunk"), ==, 3);
}

/* The payloads agents published on @subject, as text, in publish order. */
static GPtrArray *
published_texts (AhTestHost *t,
                 const char *subject)
{
  g_autoptr(GPtrArray) records = ah_test_host_get_messages (t, AH_TEST_CAPTURE_PUBLISHED,
                                                            subject);
  GPtrArray *texts = g_ptr_array_new_with_free_func (g_free);

  for (guint i = 0; i < records->len; i++)
    {
      const AhTestMessage *record = g_ptr_array_index (records, i);
      gsize size;
      const char *data = g_bytes_get_data (record->data, &size);

      g_ptr_array_add (texts, g_strndup (data, size));
    }
  return texts;
}

static gint
compare_strings (gconstpointer a,
                 gconstpointer b)
{
  return strcmp (*(const char * const *) a, *(const char * const *) b);
}

static void
test_validator_verdicts (void)
{
  g_autofree char *corpus = write_corpus ("verdicts.txt", "hello world hello");
  g_autofree char *yaml = g_strdup_printf (
    "name: verdicts\n"
    "agents:\n"
    "  coordinator:\n"
    "    plugin: coordinator\n"
    "    subscribe: [corpus.chunk]\n"
    "    config: {corpus_file: '%s', chunks: 1}\n"
    "  validator: {plugin: validator, pool_size: 2, subscribe: [results.count]}\n", corpus);
  static const char *results[] = {
    "chunk 0 1 3\nhello 2\nworld 1\n",
    "chunk 0 1 2\nhello 1\n",
    "chunk 0 1 2\nhello 2\n",
    "chunk 0 1 4\nhello 3\nworld 1\n",
    "chunk 0 1 4\nhello 2\nwide 1\nworld 1\n",
  };
  g_autoptr(GPtrArray) validated = NULL;
  g_autoptr(GPtrArray) rejected = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new (yaml, NULL, &error);
  const AhTestMessage *republished;

  g_test_summary ("A result equal to the recount is republished byte for byte on "
                  "results.validated; any difference is rejected with its reason");
  g_assert_no_error (error);

  for (guint i = 0; i < G_N_ELEMENTS (results); i++)
    ah_test_host_publish_string (t, "results.count", results[i]);
  ah_test_host_run_until_idle (t);

  validated = ah_test_host_get_messages (t, AH_TEST_CAPTURE_PUBLISHED, "results.validated");
  g_assert_cmpuint (validated->len, ==, 1);
  republished = g_ptr_array_index (validated, 0);
  g_assert_cmpmem (g_bytes_get_data (republished->data, NULL),
                   g_bytes_get_size (republished->data), results[0], strlen (results[0]));
  rejected = published_texts (t, "results.rejected");
  /* Two validators: sorted, the order they finished in does not matter. */
  g_ptr_array_sort (rejected, compare_strings);
  g_assert_cmpuint (rejected->len, ==, 4);
  g_assert_cmpstr (g_ptr_array_index (rejected, 0), ==,
                   "chunk 0 1\nheader says 2 words, the lines add up to 1\n");
  g_assert_cmpstr (g_ptr_array_index (rejected, 1), ==,
                   "chunk 0 1\nword 'hello' counted 3, recount 2\n");
  g_assert_cmpstr (g_ptr_array_index (rejected, 2), ==,
                   "chunk 0 1\nword 'wide' not in the chunk\n");
  g_assert_cmpstr (g_ptr_array_index (rejected, 3), ==,
                   "chunk 0 1\nword 'world' missing (recount 1)\n");
}

int
main (int    argc,
      char **argv)
{
  int result;

  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);
  g_mutex_init (&capture.lock);
  capture.printed = g_string_new (NULL);
  capture.done = g_string_new (NULL);
  default_print = g_set_print_handler (capture_print);

  g_test_add_func ("/demo/report/exact", test_report_exact);
  g_test_add_func ("/demo/report/default", test_report_default);
  g_test_add_func ("/demo/report/rejected", test_report_rejected);
  for (guint i = 0; i < G_N_ELEMENTS (bad_configs); i++)
    {
      g_autofree char *path = g_strdup_printf ("/demo/config/invalid/%s", bad_configs[i].name);

      g_test_add_data_func (path, &bad_configs[i], test_config_invalid);
    }
  g_test_add_func ("/demo/payload/invalid", test_payload_invalid);
  g_test_add_func ("/demo/chunk/request", test_chunk_request);
  g_test_add_func ("/demo/validator/verdicts", test_validator_verdicts);

  result = g_test_run ();

  g_string_free (capture.printed, TRUE);
  g_string_free (capture.done, TRUE);
  g_mutex_clear (&capture.lock);
  return result;
}
