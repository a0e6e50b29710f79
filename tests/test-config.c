/* SPDX-License-Identifier: MIT */
/* Tests of config schemas through the public API: an agent type's
 * `config:` checked against its plugin's schema by
 * ah_manifest_check_plugins() and ah_host_new() alike, the values a
 * running agent reads (defaults applied, manifest values over them), and
 * the agenthost command's validate, run and inspect. The schema plugin
 * (tests/plugins/schema.c) answers a request with the value it reads
 * for the key in the payload. */
#include <agenthost/agenthost.h>
#include <gio/gio.h>

#include <string.h>

#define REQUEST_TIMEOUT_MS 5000

/* Every error case is this manifest with one line of config after
 * "greeting: hi": that line is line 8, its key at column 7. */
#define CONFIG_TEST_FORMAT          \
  "name: config-test\n"             \
  "agents:\n"                       \
  "  probe:\n"                      \
  "    plugin: schema\n"            \
  "    subscribe: [config.get]\n"   \
  "    config:\n"                   \
  "      greeting: hi\n"            \
  "      %s\n"

static AhManifest *
manifest_new (const char *yaml,
              GError    **error)
{
  g_autofree char *base_dir = g_get_current_dir ();

  return ah_manifest_load_data (yaml, strlen (yaml), "config-test.yaml", base_dir, error);
}

/* ---- errors: validate and run refuse the same config ------------------ */

typedef struct {
  const char      *name;
  const char      *line;      /* line 8 of CONFIG_TEST_FORMAT */
  AhManifestError  code;
  const char      *message;   /* the whole message */
} ConfigError;

#define SCHEMA_KEYS "greeting, count, offset, ratio, verbose, limits.max, words, tags, name"

static const ConfigError config_errors[] = {
  { "unknown-key", "colour: red", AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "config-test.yaml:8:15: error: agent type 'probe': unknown config key 'colour' "
    "(plugin 'schema' accepts " SCHEMA_KEYS ")" },
  { "unknown-key-escaped", "\"col\\tour\": 1", AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "config-test.yaml:8:19: error: agent type 'probe': unknown config key 'col\\tour' "
    "(plugin 'schema' accepts " SCHEMA_KEYS ")" },
  { "int-word", "count: many", AH_MANIFEST_ERROR_WRONG_TYPE,
    "config-test.yaml:8:14: error: agent type 'probe': config 'count' must be an integer "
    "between 1 and 10, got 'many'" },
  { "int-fraction", "count: 2.5", AH_MANIFEST_ERROR_WRONG_TYPE,
    "config-test.yaml:8:14: error: agent type 'probe': config 'count' must be an integer "
    "between 1 and 10, got '2.5'" },
  { "int-leading-zero", "count: 07", AH_MANIFEST_ERROR_WRONG_TYPE,
    "config-test.yaml:8:14: error: agent type 'probe': config 'count' must be an integer "
    "between 1 and 10, got '07'" },
  { "int-plus", "count: +5", AH_MANIFEST_ERROR_WRONG_TYPE,
    "config-test.yaml:8:14: error: agent type 'probe': config 'count' must be an integer "
    "between 1 and 10, got '+5'" },
  { "int-above", "count: 11", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "config-test.yaml:8:14: error: agent type 'probe': config 'count' must be an integer "
    "between 1 and 10, got '11'" },
  { "int-below", "count: 0", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "config-test.yaml:8:14: error: agent type 'probe': config 'count' must be an integer "
    "between 1 and 10, got '0'" },
  { "int-overflow", "offset: 99999999999999999999", AH_MANIFEST_ERROR_WRONG_TYPE,
    "config-test.yaml:8:15: error: agent type 'probe': config 'offset' must be an integer, "
    "got '99999999999999999999'" },
  { "int-long-value", "count: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
                      "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", AH_MANIFEST_ERROR_WRONG_TYPE,
    "config-test.yaml:8:14: error: agent type 'probe': config 'count' must be an integer "
    "between 1 and 10, got 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
    "xxxxxxxxxxxxxxxx...'" },
  { "double-word", "ratio: half", AH_MANIFEST_ERROR_WRONG_TYPE,
    "config-test.yaml:8:14: error: agent type 'probe': config 'ratio' must be a number "
    "between 0 and 1, got 'half'" },
  { "double-nan", "ratio: .nan", AH_MANIFEST_ERROR_WRONG_TYPE,
    "config-test.yaml:8:14: error: agent type 'probe': config 'ratio' must be a number "
    "between 0 and 1, got '.nan'" },
  { "double-above", "ratio: 1.5", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "config-test.yaml:8:14: error: agent type 'probe': config 'ratio' must be a number "
    "between 0 and 1, got '1.5'" },
  { "bool-yes", "verbose: yes", AH_MANIFEST_ERROR_WRONG_TYPE,
    "config-test.yaml:8:16: error: agent type 'probe': config 'verbose' must be true or "
    "false, got 'yes'" },
  { "bool-number", "verbose: 1", AH_MANIFEST_ERROR_WRONG_TYPE,
    "config-test.yaml:8:16: error: agent type 'probe': config 'verbose' must be true or "
    "false, got '1'" },
  { "sequence-item", "count: [1, 20]", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "config-test.yaml:8:18: error: agent type 'probe': config 'count.1' must be an integer "
    "between 1 and 10, got '20'" },
  { "sequence-unknown", "words: [a, b]\n      colours: [red]", AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "config-test.yaml:9:17: error: agent type 'probe': unknown config key 'colours.0' "
    "(plugin 'schema' accepts " SCHEMA_KEYS ")" },
  { "nested-range", "limits: {max: 3000}", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "config-test.yaml:8:21: error: agent type 'probe': config 'limits.max' must be an "
    "integer between 0 and 1000, got '3000'" },
  { "nested-dotted", "limits.max: -1", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "config-test.yaml:8:19: error: agent type 'probe': config 'limits.max' must be an "
    "integer between 0 and 1000, got '-1'" },
  { "nested-unknown", "limits: {min: 3}", AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "config-test.yaml:8:21: error: agent type 'probe': unknown config key 'limits.min' "
    "(plugin 'schema' accepts " SCHEMA_KEYS ")" },
  { "nested-as-scalar", "limits: 3", AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "config-test.yaml:8:15: error: agent type 'probe': unknown config key 'limits' "
    "(plugin 'schema' accepts " SCHEMA_KEYS ")" },
  { "missing-required", "count: 5", AH_MANIFEST_ERROR_MISSING_KEY,
    "config-test.yaml:3:3: error: agent type 'probe': missing required config key 'name' "
    "(string: Who the agent is)" },
  /* In file order: a bad value is reported before the missing key. */
  { "first-error", "count: 5\n      ratio: 2\n      verbose: no", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "config-test.yaml:9:14: error: agent type 'probe': config 'ratio' must be a number "
    "between 0 and 1, got '2'" },
};

static void
test_config_check_error (gconstpointer data)
{
  const ConfigError *tc = data;
  g_autofree char *yaml = g_strdup_printf (CONFIG_TEST_FORMAT, tc->line);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  g_autoptr(AhHost) host = NULL;

  g_test_summary ("A config the plugin's schema refuses is one manifest error with its "
                  "exact line, from ah_manifest_check_plugins() and from ah_host_new() alike");
  manifest = manifest_new (yaml, &error);
  g_assert_no_error (error);
  g_assert_false (ah_manifest_check_plugins (manifest, &error));
  g_assert_error (error, AH_MANIFEST_ERROR, (gint) tc->code);
  g_assert_cmpstr (error->message, ==, tc->message);
  g_clear_error (&error);

  /* The host takes the manifest: load a fresh one. */
  g_clear_pointer (&manifest, ah_manifest_free);
  manifest = manifest_new (yaml, &error);
  g_assert_no_error (error);
  host = ah_host_new (g_steal_pointer (&manifest), &error);
  g_assert_null (host);
  g_assert_error (error, AH_MANIFEST_ERROR, (gint) tc->code);
  g_assert_cmpstr (error->message, ==, tc->message);
}

typedef struct {
  const char *name;
  const char *line;
} ConfigOk;

static const ConfigOk config_oks[] = {
  { "every-type", "name: probe\n      count: 10\n      offset: -9000000000000\n"
                  "      ratio: 1e-1\n      verbose: TRUE\n      limits: {max: 0}" },
  { "range-bounds", "name: probe\n      count: 1\n      ratio: 1" },
  { "sequence", "name: probe\n      words: [a, b, c]\n      tags: []" },
  { "required-as-sequence", "name: [first, last]" },
  { "string-anything", "name: 12\n      words: ~" },
};

static void
test_config_check_ok (gconstpointer data)
{
  const ConfigOk *tc = data;
  g_autofree char *yaml = g_strdup_printf (CONFIG_TEST_FORMAT, tc->line);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  g_autoptr(AhHost) host = NULL;

  g_test_summary ("A config within the schema passes check_plugins and ah_host_new: "
                  "range bounds inclusive, sequences of a key's type, a required key "
                  "given as a sequence, any text for a string");
  manifest = manifest_new (yaml, &error);
  g_assert_no_error (error);
  g_assert_true (ah_manifest_check_plugins (manifest, &error));
  g_assert_no_error (error);

  host = ah_host_new (g_steal_pointer (&manifest), &error);
  g_assert_no_error (error);
  g_assert_nonnull (host);
}

static void
test_config_check_no_schema (void)
{
  static const char yaml[] =
    "name: no-schema\n"
    "agents:\n"
    "  counter:\n"
    "    plugin: counter\n"
    "    config:\n"
    "      anything: [1, {deep: ~}]\n"
    "      count: many\n"
    "      verbose: yes\n";
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  g_autoptr(AhHost) host = NULL;

  g_test_summary ("A plugin without a schema accepts any config, as in ABI 1.0, and its "
                  "agents start");
  manifest = manifest_new (yaml, &error);
  g_assert_no_error (error);
  g_assert_true (ah_manifest_check_plugins (manifest, &error));
  g_assert_no_error (error);

  host = ah_host_new (g_steal_pointer (&manifest), &error);
  g_assert_no_error (error);
  g_assert_true (ah_host_start (host, &error));
  g_assert_no_error (error);
}

/* The first ```yaml block of docs/manifest.md, the "complete example". */
static char *
doc_complete_example (void)
{
  g_autofree char *path = g_test_build_filename (G_TEST_DIST, "..", "docs", "manifest.md", NULL);
  g_autofree char *text = NULL;
  g_autoptr(GError) error = NULL;
  const char *start, *end;

  g_file_get_contents (path, &text, NULL, &error);
  g_assert_no_error (error);
  start = strstr (text, "```yaml\n");
  g_assert_nonnull (start);
  start += strlen ("```yaml\n");
  end = strstr (start, "\n```");
  g_assert_nonnull (end);
  return g_strndup (start, end - start + 1);
}

static void
test_config_check_doc_example (void)
{
  g_autofree char *yaml = doc_complete_example ();
  g_autofree char *build_root = g_test_build_filename (G_TEST_BUILT, "..", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;

  g_test_summary ("docs/manifest.md's complete example passes the shipped plugins' checks, "
                  "config included, read from the build tree as if it sat there");
  manifest = ah_manifest_load_data (yaml, strlen (yaml), "manifest.md", build_root, &error);
  g_assert_no_error (error);
  g_assert_true (ah_manifest_check_plugins (manifest, &error));
  g_assert_no_error (error);
}

static void
test_config_check_shipped (void)
{
  static const char yaml[] =
    "name: shipped\n"
    "agents:\n"
    "  wordcount:\n"
    "    plugin: wordcount\n"
    "    config: {top: 3}\n";
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;

  g_test_summary ("The default system passes its plugins' schemas; a config on wordcount, "
                  "which reads none, is refused");
  manifest = ah_manifest_load_default (&error);
  g_assert_no_error (error);
  g_assert_true (ah_manifest_check_plugins (manifest, &error));
  g_assert_no_error (error);
  g_clear_pointer (&manifest, ah_manifest_free);

  manifest = manifest_new (yaml, &error);
  g_assert_no_error (error);
  g_assert_false (ah_manifest_check_plugins (manifest, &error));
  g_assert_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_UNKNOWN_KEY);
  g_assert_cmpstr (error->message, ==, "config-test.yaml:5:19: error: agent type 'wordcount': "
                                       "unknown config key 'top' (plugin 'wordcount' accepts "
                                       "no keys)");
}

/* ---- the values a running agent reads ---------------------------------- */

typedef struct {
  const char *key;
  const char *value;   /* what ah_config_get_string() gives the agent */
} ConfigValue;

typedef struct {
  const char        *name;
  const char        *config;    /* the lines of `config:` */
  const ConfigValue *values;    /* ended by a NULL key */
} ConfigRun;

static const ConfigValue defaults_values[] = {
  { "greeting", "hello" },
  { "count", "3" },
  { "offset", "-7" },
  { "ratio", "0.5" },
  { "verbose", "false" },
  { "limits.max", "100" },
  { "words", "<unset>" },
  { "tags", "none" },
  { "name", "probe" },
  { "nothing", "<unset>" },
  { NULL, NULL }
};

static const ConfigValue override_values[] = {
  { "greeting", "good day" },
  { "count", "7" },
  { "offset", "-7" },
  { "ratio", "0.25" },
  { "verbose", "True" },
  { "limits.max", "5" },
  { "words", "<unset>" },
  { "words.0", "a" },
  { "words.1", "b" },
  /* The sequence replaces the default: the agent never reads both. */
  { "tags", "<unset>" },
  { "tags.0", "x" },
  { "name", "probe" },
  { NULL, NULL }
};

static const ConfigRun config_runs[] = {
  { "defaults", "      name: probe\n", defaults_values },
  { "overrides",
    "      name: probe\n"
    "      greeting: good day\n"
    "      count: 7\n"
    "      ratio: 0.25\n"
    "      verbose: True\n"
    "      limits: {max: 5}\n"
    "      words: [a, b]\n"
    "      tags: [x]\n", override_values },
};

static void
test_config_run_values (gconstpointer data)
{
  const ConfigRun *tc = data;
  g_autofree char *yaml = g_strconcat ("name: config-run\n"
                                       "agents:\n"
                                       "  probe:\n"
                                       "    plugin: schema\n"
                                       "    subscribe: [config.get]\n"
                                       "    config:\n", tc->config, NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  g_autoptr(AhHost) host = NULL;

  g_test_summary ("A running agent reads the schema's defaults for the keys the manifest "
                  "leaves out and the manifest's values for the others");
  manifest = manifest_new (yaml, &error);
  g_assert_no_error (error);
  host = ah_host_new (g_steal_pointer (&manifest), &error);
  g_assert_no_error (error);
  g_assert_true (ah_host_start (host, &error));
  g_assert_no_error (error);

  for (const ConfigValue *value = tc->values; value->key != NULL; value++)
    {
      g_autoptr(GBytes) reply = ah_host_request (host, "config.get", value->key,
                                                 strlen (value->key), REQUEST_TIMEOUT_MS, &error);
      gsize size = 0;
      const char *text;

      g_assert_no_error (error);
      text = g_bytes_get_data (reply, &size);
      g_assert_cmpmem (text, size, value->value, strlen (value->value));
    }
}

/* ---- the agenthost command -------------------------------------------- */

typedef struct {
  int   status;
  char *out;
  char *err;
} CliResult;

static void
cli_result_clear (CliResult *result)
{
  g_clear_pointer (&result->out, g_free);
  g_clear_pointer (&result->err, g_free);
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (CliResult, cli_result_clear)

/* Runs $AGENTHOST with @argv (after the program) to its end. The child
 * inherits AGENTHOST_PLUGIN_PATH, which main() extended with the test
 * plugins. */
static void
cli_run (CliResult          *result,
         const char * const *args)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GPtrArray) argv = g_ptr_array_new ();
  g_autoptr(GSubprocess) process = NULL;
  const char *agenthost = g_getenv ("AGENTHOST");

  g_assert_nonnull (agenthost);
  g_ptr_array_add (argv, (gpointer) agenthost);
  for (guint i = 0; args[i] != NULL; i++)
    g_ptr_array_add (argv, (gpointer) args[i]);
  g_ptr_array_add (argv, NULL);

  process = g_subprocess_newv ((const char * const *) argv->pdata,
                               G_SUBPROCESS_FLAGS_STDOUT_PIPE | G_SUBPROCESS_FLAGS_STDERR_PIPE,
                               &error);
  g_assert_no_error (error);
  g_subprocess_communicate_utf8 (process, NULL, NULL, &result->out, &result->err, &error);
  g_assert_no_error (error);
  if (!g_subprocess_get_if_exited (process))
    g_error ("agenthost was killed by signal %d", g_subprocess_get_term_sig (process));
  result->status = g_subprocess_get_exit_status (process);
}

static char *
write_manifest (const char *name,
                const char *yaml)
{
  g_autoptr(GError) error = NULL;
  char *path = g_build_filename (g_get_user_cache_dir (), name, NULL);

  g_assert_cmpint (g_mkdir_with_parents (g_get_user_cache_dir (), 0700), ==, 0);
  g_file_set_contents (path, yaml, -1, &error);
  g_assert_no_error (error);
  return path;
}

typedef struct {
  const char *name;
  const char *command;
} CliCommand;

static const CliCommand cli_refusing_commands[] = {
  { "validate", "validate" },
  { "run", "run" },
};

static void
test_config_cli_error (gconstpointer data)
{
  const CliCommand *tc = data;
  g_autofree char *yaml = g_strdup_printf (CONFIG_TEST_FORMAT, "count: 11");
  g_autofree char *path = write_manifest ("bad-config.yaml", yaml);
  g_autofree char *expected = g_strdup_printf ("%s:8:14: error: agent type 'probe': config "
                                               "'count' must be an integer between 1 and 10, "
                                               "got '11'\n", path);
  g_auto(CliResult) result = { 0 };

  g_test_summary ("validate and run print the config error as one FILE:LINE:COL line and "
                  "exit 3, the status of an invalid manifest; nothing runs");
  cli_run (&result, (const char * const []) { tc->command, path, NULL });
  g_assert_cmpstr (result.err, ==, expected);
  g_assert_cmpstr (result.out, ==, "");
  g_assert_cmpint (result.status, ==, 3);
}

static void
test_config_cli_validate_ok (void)
{
  g_autofree char *yaml = g_strdup_printf (CONFIG_TEST_FORMAT, "name: probe");
  g_autofree char *path = write_manifest ("good-config.yaml", yaml);
  g_autofree char *expected = g_strdup_printf ("%s: ok (1 agent type, 1 agent)\n", path);
  g_auto(CliResult) result = { 0 };

  g_test_summary ("validate accepts a config within the schema");
  cli_run (&result, (const char * const []) { "validate", path, NULL });
  g_assert_cmpstr (result.err, ==, "");
  g_assert_cmpstr (result.out, ==, expected);
  g_assert_cmpint (result.status, ==, 0);
}

static void
test_config_cli_inspect (void)
{
  g_autofree char *plugin = g_test_build_filename (G_TEST_BUILT, "plugins", "schema.so", NULL);
  g_auto(CliResult) result = { 0 };
  const char *config;

  g_test_summary ("inspect ends with the plugin's schema, one aligned line per key");
  cli_run (&result, (const char * const []) { "inspect", plugin, NULL });
  g_assert_cmpstr (result.err, ==, "");
  g_assert_cmpint (result.status, ==, 0);
  config = strstr (result.out, "\nconfig:\n");
  g_assert_nonnull (config);
  g_assert_cmpstr (config, ==,
                   "\nconfig:\n"
                   "  greeting    string   default \"hello\"             What the agent says\n"
                   "  count       integer  default 3, range 1..10      How many times\n"
                   "  offset      integer  default -7                  Any integer\n"
                   "  ratio       number   default 0.5, range 0..1     A fraction\n"
                   "  verbose     boolean  default false               Say more\n"
                   "  limits.max  integer  default 100, range 0..1000  A nested key\n"
                   "  words       string                               A sequence of words\n"
                   "  tags        string   default \"none\"              A sequence with a default\n"
                   "  name        string   required                    Who the agent is\n");
}

int
main (int argc, char **argv)
{
  g_autofree char *test_plugins = NULL;
  g_autofree char *search_path = NULL;
  const char *shipped;

  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);

  /* Bare names find the test plugins too, here and in the agenthost
   * children; set before any thread exists. */
  test_plugins = g_test_build_filename (G_TEST_BUILT, "plugins", NULL);
  shipped = g_getenv ("AGENTHOST_PLUGIN_PATH");
  search_path = shipped != NULL ? g_strconcat (test_plugins, ":", shipped, NULL)
                                : g_strdup (test_plugins);
  g_setenv ("AGENTHOST_PLUGIN_PATH", search_path, TRUE);

  for (gsize i = 0; i < G_N_ELEMENTS (config_errors); i++)
    {
      g_autofree char *path = g_strconcat ("/config/check/error/", config_errors[i].name, NULL);

      g_test_add_data_func (path, &config_errors[i], test_config_check_error);
    }
  for (gsize i = 0; i < G_N_ELEMENTS (config_oks); i++)
    {
      g_autofree char *path = g_strconcat ("/config/check/ok/", config_oks[i].name, NULL);

      g_test_add_data_func (path, &config_oks[i], test_config_check_ok);
    }
  g_test_add_func ("/config/check/no-schema", test_config_check_no_schema);
  g_test_add_func ("/config/check/shipped", test_config_check_shipped);
  g_test_add_func ("/config/check/doc-example", test_config_check_doc_example);
  for (gsize i = 0; i < G_N_ELEMENTS (config_runs); i++)
    {
      g_autofree char *path = g_strconcat ("/config/run/", config_runs[i].name, NULL);

      g_test_add_data_func (path, &config_runs[i], test_config_run_values);
    }
  for (gsize i = 0; i < G_N_ELEMENTS (cli_refusing_commands); i++)
    {
      g_autofree char *path = g_strconcat ("/config/cli/error/", cli_refusing_commands[i].name, NULL);

      g_test_add_data_func (path, &cli_refusing_commands[i], test_config_cli_error);
    }
  g_test_add_func ("/config/cli/validate-ok", test_config_cli_validate_ok);
  g_test_add_func ("/config/cli/inspect", test_config_cli_inspect);

  return g_test_run ();
}
