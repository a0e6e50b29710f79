/* Tests for the manifest parser: valid files land in the structs with
 * defaults applied, each broken fixture fails with its code and exact
 * one-line message, and hostile input fails fast.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <glib.h>
#include <glib/gstdio.h>

#include "ah-bus-private.h"
#include "ah-manifest-private.h"

/* Hostile inputs must be refused well under a second (about 40 ms for
 * the slowest here, on one core). Under ASan our test setup has
 * fast_unwind_on_malloc=0, so every malloc unwinds the stack: libyaml
 * alone then needs about 2 s for 100 000 events. Either bound still
 * catches anything quadratic. */
#if defined (__SANITIZE_ADDRESS__)
#define HOSTILE_MAX_USEC (15 * G_USEC_PER_SEC)
#else
#define HOSTILE_MAX_USEC (1 * G_USEC_PER_SEC)
#endif

#define AGENT_ECHO "name: demo\nagents:\n  echo:\n    plugin: echo\n"

static char *
fixture_path (const char *name)
{
  g_autofree char *file = g_strconcat (name, ".yaml", NULL);

  return g_test_build_filename (G_TEST_DIST, "manifests", file, NULL);
}

static char *
fixture_dir (void)
{
  g_autofree char *dir = g_test_build_filename (G_TEST_DIST, "manifests", NULL);

  return g_canonicalize_filename (dir, NULL);
}

/* Every error of the domain is one line starting with the file name. */
static void
assert_one_line_error (const GError *error, AhManifestError code, const char *file)
{
  g_assert_error (error, AH_MANIFEST_ERROR, (gint) code);
  g_assert_null (strchr (error->message, '\n'));
  g_assert_true (g_str_has_prefix (error->message, file));
}

static void
assert_pos (AhManifestPos pos, guint line, guint column)
{
  g_assert_cmpuint (pos.line, ==, line);
  g_assert_cmpuint (pos.column, ==, column);
}

/* An agent type's pool, autoscale and supervision fields, compared all at
 * once so that every test states each value, defaults included. */
typedef struct {
  guint            pool_size;
  guint            pool_min;
  guint            pool_max;
  guint            idle_cap;
  gboolean         autoscale;
  guint            scale_up_depth;
  guint            scale_up_after_ms;
  guint            scale_down_idle_ms;
  guint            scale_step;
  AhRestartPolicy  restart_policy;
  guint            max_restarts;
  guint            restart_period_ms;
  AhFailedMessages failed_messages;
  guint            handler_deadline_ms;
  gboolean         required;
} TypeFields;

#define UNBOUNDED AH_MANIFEST_POOL_UNBOUNDED
/* The documented defaults, written out rather than taken from the
 * header's macros, so that a changed default fails here. */
#define AUTOSCALE_DEFAULTS    64, 50, 2000, 1
#define SUPERVISION_DEFAULTS  AH_RESTART_ONE_FOR_ONE, 3, 5000, AH_FAILED_MESSAGES_RETRY, 0, FALSE

static void
assert_type_fields (const AhManifestAgentType *type, const TypeFields *expected)
{
  g_assert_cmpuint (type->pool_size, ==, expected->pool_size);
  g_assert_cmpuint (type->pool_min, ==, expected->pool_min);
  g_assert_cmpuint (type->pool_max, ==, expected->pool_max);
  g_assert_cmpuint (type->idle_cap, ==, expected->idle_cap);
  g_assert_cmpint (type->autoscale, ==, expected->autoscale);
  g_assert_cmpuint (type->scale_up_depth, ==, expected->scale_up_depth);
  g_assert_cmpuint (type->scale_up_after_ms, ==, expected->scale_up_after_ms);
  g_assert_cmpuint (type->scale_down_idle_ms, ==, expected->scale_down_idle_ms);
  g_assert_cmpuint (type->scale_step, ==, expected->scale_step);
  g_assert_cmpint (type->restart_policy, ==, expected->restart_policy);
  g_assert_cmpuint (type->max_restarts, ==, expected->max_restarts);
  g_assert_cmpuint (type->restart_period_ms, ==, expected->restart_period_ms);
  g_assert_cmpint (type->failed_messages, ==, expected->failed_messages);
  g_assert_cmpuint (type->handler_deadline_ms, ==, expected->handler_deadline_ms);
  g_assert_cmpint (type->required, ==, expected->required);
}

/* ---- Valid manifests ------------------------------------------------- */

static void
test_manifest_load_minimal (void)
{
  g_autofree char *path = fixture_path ("minimal");
  g_autofree char *dir = fixture_dir ();
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  const AhManifestAgentType *type;
  static const TypeFields defaults = {
    1, 1, UNBOUNDED, UNBOUNDED, FALSE, AUTOSCALE_DEFAULTS, SUPERVISION_DEFAULTS
  };

  g_test_summary ("A manifest with only the required keys gets every default");

  manifest = ah_manifest_load (path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (manifest);

  g_assert_cmpstr (ah_manifest_get_name (manifest), ==, "minimal");
  g_assert_cmpstr (ah_manifest_get_path (manifest), ==, path);
  g_assert_cmpstr (manifest->base_dir, ==, dir);
  g_assert_null (manifest->description);
  g_assert_cmpuint (manifest->plugin_dirs->len, ==, 0);
  g_assert_false (manifest->stop_when_idle);
  g_assert_cmpuint (manifest->run_timeout_ms, ==, 0);
  g_assert_false (manifest->watch);
  g_assert_cmpuint (manifest->watch_debounce_ms, ==, 200);
  g_assert_cmpuint (manifest->offload.n_threads, ==, 4);
  g_assert_cmpuint (manifest->offload.queue_capacity, ==, 1024);

  g_assert_cmpuint (manifest->bus.n_workers, ==, 0);
  g_assert_cmpuint (manifest->bus.publish_batch, ==, 256);
  g_assert_cmpuint (manifest->bus.handler_batch, ==, 32);
  g_assert_cmpuint (manifest->bus.mailbox_capacity, ==, 1024);
  g_assert_cmpint (manifest->bus.overflow, ==, AH_OVERFLOW_BLOCK);
  g_assert_cmpuint (manifest->bus.drain_timeout_ms, ==, 5000);
  g_assert_false (manifest->bus.pin_workers);

  g_assert_cmpuint (ah_manifest_get_n_types (manifest), ==, 1);
  type = ah_manifest_get_type (manifest, 0);
  g_assert_cmpstr (type->name, ==, "echo");
  g_assert_cmpstr (type->plugin, ==, "echo");
  g_assert_cmpuint (type->pool_size, ==, 1);
  g_assert_true (type->prewarm);
  g_assert_nonnull (type->subscriptions);
  g_assert_cmpuint (type->subscriptions->len, ==, 0);
  g_assert_nonnull (type->config);
  g_assert_cmpuint (type->config->len, ==, 0);
  assert_pos (type->pos, 4, 3);
  assert_pos (type->plugin_pos, 5, 13);
  assert_type_fields (type, &defaults);
}

static void
test_manifest_load_complete (void)
{
  g_autofree char *path = fixture_path ("complete");
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  const AhManifestAgentType *type;
  const AhManifestSubscription *subscription;
  static const TypeFields wordcount_fields = {
    5, 2, 50, 20, TRUE, 32, 75, 1500, 3,
    AH_RESTART_ONE_FOR_ALL, 7, 10000, AH_FAILED_MESSAGES_DEAD_LETTER, 250, TRUE
  };
  static const TypeFields reporter_fields = {
    1, 1, UNBOUNDED, UNBOUNDED, FALSE, 64, 50, 2000, 2,
    AH_RESTART_TEMPORARY, 3, 5000, AH_FAILED_MESSAGES_RETRY, 0, FALSE
  };

  g_test_summary ("Every field of a complete manifest lands in the structs");

  manifest = ah_manifest_load (path, &error);
  g_assert_no_error (error);
  g_assert_nonnull (manifest);

  g_assert_cmpstr (manifest->name, ==, "complete-demo.v1");
  g_assert_cmpstr (manifest->description, ==, "Counts words, then reports");
  g_assert_true (manifest->stop_when_idle);
  g_assert_cmpuint (manifest->run_timeout_ms, ==, 60000);
  g_assert_true (manifest->watch);
  g_assert_cmpuint (manifest->watch_debounce_ms, ==, 500);

  g_assert_cmpuint (manifest->bus.n_workers, ==, 4);
  g_assert_cmpuint (manifest->bus.publish_batch, ==, 128);
  g_assert_cmpuint (manifest->bus.handler_batch, ==, 16);
  g_assert_cmpuint (manifest->bus.mailbox_capacity, ==, 2048);
  g_assert_cmpint (manifest->bus.overflow, ==, AH_OVERFLOW_FAIL);
  g_assert_cmpuint (manifest->bus.drain_timeout_ms, ==, 250);
  g_assert_true (manifest->bus.pin_workers);

  g_assert_cmpuint (manifest->offload.n_threads, ==, 8);
  g_assert_cmpuint (manifest->offload.queue_capacity, ==, 64);

  g_assert_cmpuint (ah_manifest_get_n_types (manifest), ==, 2);

  type = ah_manifest_get_type (manifest, 0);
  g_assert_cmpstr (type->name, ==, "wordcount");
  g_assert_cmpstr (type->plugin, ==, "wordcount");
  g_assert_cmpuint (type->pool_size, ==, 5);
  g_assert_false (type->prewarm);
  assert_pos (type->pos, 16, 3);
  assert_pos (type->plugin_pos, 17, 13);

  g_assert_cmpuint (type->subscriptions->len, ==, 3);
  subscription = g_ptr_array_index (type->subscriptions, 0);
  g_assert_cmpstr (subscription->pattern, ==, "tasks.count");
  g_assert_cmpint (subscription->delivery, ==, AH_DELIVERY_QUEUE);
  assert_pos (subscription->pos, 21, 9);
  subscription = g_ptr_array_index (type->subscriptions, 1);
  g_assert_cmpstr (subscription->pattern, ==, "control.>");
  g_assert_cmpint (subscription->delivery, ==, AH_DELIVERY_BROADCAST);
  assert_pos (subscription->pos, 22, 18);
  subscription = g_ptr_array_index (type->subscriptions, 2);
  g_assert_cmpstr (subscription->pattern, ==, "$SYS.host.*");
  g_assert_cmpint (subscription->delivery, ==, AH_DELIVERY_QUEUE);
  assert_type_fields (type, &wordcount_fields);

  type = ah_manifest_get_type (manifest, 1);
  g_assert_cmpstr (type->name, ==, "reporter");
  g_assert_cmpstr (type->plugin, ==, "./build/reporter.so");
  g_assert_cmpuint (type->pool_size, ==, 1);
  g_assert_true (type->prewarm);
  g_assert_cmpuint (type->subscriptions->len, ==, 0);
  g_assert_cmpuint (type->config->len, ==, 0);
  assert_type_fields (type, &reporter_fields);
}

static void
test_manifest_load_config (void)
{
  static const struct {
    const char *key;
    const char *value;
    guint line, column;
  } expected[] = {
    { "top", "10", 27, 12 },
    { "limits.max", "3", 28, 21 },
    { "limits.min", "-1", 28, 29 },
    { "words.0", "a", 29, 15 },
    { "words.1", "b", 29, 18 },
    { "label", "quoted: yes", 30, 14 },
    { "empty", "", 31, 13 },
  };
  g_autofree char *path = fixture_path ("complete");
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  const AhManifestAgentType *type;

  g_test_summary ("Nested config flattens to dotted keys in file order, values as written");

  manifest = ah_manifest_load (path, &error);
  g_assert_no_error (error);
  type = ah_manifest_find_type (manifest, "wordcount");
  g_assert_nonnull (type);

  g_assert_cmpuint (type->config->len, ==, G_N_ELEMENTS (expected));
  for (guint i = 0; i < G_N_ELEMENTS (expected); i++)
    {
      const AhManifestConfigEntry *entry = g_ptr_array_index (type->config, i);

      g_assert_cmpstr (entry->key, ==, expected[i].key);
      g_assert_cmpstr (entry->value, ==, expected[i].value);
      assert_pos (entry->pos, expected[i].line, expected[i].column);
      g_assert_true (ah_manifest_type_find_config (type, expected[i].key) == entry);
    }
  g_assert_null (ah_manifest_type_find_config (type, "limits"));
  g_assert_null (ah_manifest_type_find_config (type, "words"));
  g_assert_null (ah_manifest_type_find_config (type, "missing"));
}

static void
test_manifest_load_config_raw (void)
{
  static const char yaml[] =
    AGENT_ECHO
    "    config:\n"
    "      null_value: ~\n"
    "      hex: 0x10\n"
    "      quoted: \"a: b\"\n"
    "      real: 1.5e3\n"
    "      flag: yes\n"
    "      deep: {a: [x, {b: y}]}\n"
    "      dotted.key: z\n"
    "      empty_map: {}\n";
  static const char * const expected[][2] = {
    { "null_value", "~" }, { "hex", "0x10" }, { "quoted", "a: b" }, { "real", "1.5e3" },
    { "flag", "yes" }, { "deep.a.0", "x" }, { "deep.a.1.b", "y" }, { "dotted.key", "z" },
  };
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  const AhManifestAgentType *type;

  g_test_summary ("Config scalars of any type are kept as written, not typed");

  manifest = ah_manifest_load_data (yaml, strlen (yaml), "inline.yaml", NULL, &error);
  g_assert_no_error (error);
  type = ah_manifest_get_type (manifest, 0);
  g_assert_cmpuint (type->config->len, ==, G_N_ELEMENTS (expected));
  for (guint i = 0; i < G_N_ELEMENTS (expected); i++)
    {
      const AhManifestConfigEntry *entry = g_ptr_array_index (type->config, i);

      g_assert_cmpstr (entry->key, ==, expected[i][0]);
      g_assert_cmpstr (entry->value, ==, expected[i][1]);
    }
}

static void
test_manifest_load_plugin_path (void)
{
  g_autofree char *path = fixture_path ("complete");
  g_autofree char *dir = fixture_dir ();
  g_autofree char *tests_dir = g_path_get_dirname (dir);
  g_autofree char *expected_first = g_build_filename (dir, "plugins", NULL);
  g_autofree char *expected_third = g_build_filename (tests_dir, "shared", "plugins", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;

  g_test_summary ("Relative plugin_path entries resolve against the manifest's directory");

  manifest = ah_manifest_load (path, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (manifest->plugin_dirs->len, ==, 3);
  g_assert_cmpstr (g_ptr_array_index (manifest->plugin_dirs, 0), ==, expected_first);
  g_assert_cmpstr (g_ptr_array_index (manifest->plugin_dirs, 1), ==, "/opt/agenthost/plugins");
  g_assert_cmpstr (g_ptr_array_index (manifest->plugin_dirs, 2), ==, expected_third);
}

static void
test_manifest_load_plugin_path_string (void)
{
  static const char yaml[] = "name: demo\nplugin_path: lib/../plugins\nagents: {echo: {plugin: echo}}\n";
  g_autofree char *cwd = g_get_current_dir ();
  g_autofree char *expected_cwd = g_build_filename (cwd, "plugins", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  g_autoptr(AhManifest) relative = NULL;

  g_test_summary ("A single plugin_path string is one directory; load_data resolves it "
                  "against base_dir, or the current directory without one");

  manifest = ah_manifest_load_data (yaml, strlen (yaml), "inline.yaml", "/srv/agents", &error);
  g_assert_no_error (error);
  g_assert_cmpstr (manifest->base_dir, ==, "/srv/agents");
  g_assert_cmpuint (manifest->plugin_dirs->len, ==, 1);
  g_assert_cmpstr (g_ptr_array_index (manifest->plugin_dirs, 0), ==, "/srv/agents/plugins");

  relative = ah_manifest_load_data (yaml, strlen (yaml), "inline.yaml", NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (relative->base_dir, ==, cwd);
  g_assert_cmpstr (g_ptr_array_index (relative->plugin_dirs, 0), ==, expected_cwd);
}

typedef struct {
  const char *name;
  const char *yaml;
  TypeFields  expected;
} TypeFieldsCase;

static const TypeFieldsCase type_fields_cases[] = {
  { "pool-equal-bounds", AGENT_ECHO "    pool_size: 3\n    pool: {min: 3, max: 3, idle_cap: 0}\n",
    { 3, 3, 3, 0, FALSE, AUTOSCALE_DEFAULTS, SUPERVISION_DEFAULTS } },
  { "pool-idle-cap-unbounded-max", AGENT_ECHO "    pool: {idle_cap: 7}\n",
    { 1, 1, UNBOUNDED, 7, FALSE, AUTOSCALE_DEFAULTS, SUPERVISION_DEFAULTS } },
  { "pool-size-after-pool", AGENT_ECHO "    pool: {min: 4, max: 6, idle_cap: 6}\n    pool_size: 5\n",
    { 5, 4, 6, 6, FALSE, AUTOSCALE_DEFAULTS, SUPERVISION_DEFAULTS } },
  { "pool-empty", AGENT_ECHO "    pool_size: 9\n    pool: {}\n",
    { 9, 9, UNBOUNDED, UNBOUNDED, FALSE, AUTOSCALE_DEFAULTS, SUPERVISION_DEFAULTS } },
  { "pool-largest", AGENT_ECHO "    pool_size: 10000000\n    pool: {min: 1, max: 10000000, idle_cap: 10000000}\n",
    { 10000000, 1, 10000000, 10000000, FALSE, AUTOSCALE_DEFAULTS, SUPERVISION_DEFAULTS } },
  { "autoscale-empty", AGENT_ECHO "    pool: {max: 4}\n    autoscale: {}\n",
    { 1, 1, 4, UNBOUNDED, TRUE, AUTOSCALE_DEFAULTS, SUPERVISION_DEFAULTS } },
  { "autoscale-enabled", AGENT_ECHO "    autoscale: {enabled: true}\n    pool: {max: 4}\n",
    { 1, 1, 4, UNBOUNDED, TRUE, AUTOSCALE_DEFAULTS, SUPERVISION_DEFAULTS } },
  { "autoscale-disabled-unbounded", AGENT_ECHO "    autoscale: {enabled: false, step: 20}\n",
    { 1, 1, UNBOUNDED, UNBOUNDED, FALSE, 64, 50, 2000, 20, SUPERVISION_DEFAULTS } },
  { "autoscale-disabled-deep", "bus: {mailbox_capacity: 16}\n" AGENT_ECHO
    "    autoscale: {enabled: false, scale_up_depth: 100}\n",
    { 1, 1, UNBOUNDED, UNBOUNDED, FALSE, 100, 50, 2000, 1, SUPERVISION_DEFAULTS } },
  { "autoscale-lowest", AGENT_ECHO "    pool: {max: 5}\n"
    "    autoscale: {scale_up_depth: 1, scale_up_after_ms: 0, scale_down_idle_ms: 1, step: 1}\n",
    { 1, 1, 5, UNBOUNDED, TRUE, 1, 0, 1, 1, SUPERVISION_DEFAULTS } },
  { "autoscale-highest", AGENT_ECHO "    pool: {max: 10000000}\n"
    "    autoscale: {scale_up_depth: 16777216, scale_up_after_ms: 86400000, "
    "scale_down_idle_ms: 86400000, step: 10000000}\nbus: {mailbox_capacity: 16777216}\n",
    { 1, 1, 10000000, UNBOUNDED, TRUE, 16777216, 86400000, 86400000, 10000000, SUPERVISION_DEFAULTS } },
  { "autoscale-depth-at-capacity", AGENT_ECHO "    pool: {max: 2}\n    autoscale: {}\n"
    "bus: {mailbox_capacity: 64}\n",
    { 1, 1, 2, UNBOUNDED, TRUE, AUTOSCALE_DEFAULTS, SUPERVISION_DEFAULTS } },
  { "autoscale-step-at-max", AGENT_ECHO "    pool: {max: 6}\n    autoscale: {step: 6}\n",
    { 1, 1, 6, UNBOUNDED, TRUE, 64, 50, 2000, 6, SUPERVISION_DEFAULTS } },
  { "supervision-empty", AGENT_ECHO "    supervision: {}\n",
    { 1, 1, UNBOUNDED, UNBOUNDED, FALSE, AUTOSCALE_DEFAULTS, SUPERVISION_DEFAULTS } },
  { "supervision-one-for-one", AGENT_ECHO "    supervision: {policy: one_for_one, failed_messages: retry}\n",
    { 1, 1, UNBOUNDED, UNBOUNDED, FALSE, AUTOSCALE_DEFAULTS, SUPERVISION_DEFAULTS } },
  { "supervision-one-for-all-lowest", AGENT_ECHO "    supervision: {policy: one_for_all, max_restarts: 0, "
    "period_ms: 1, handler_deadline_ms: 0, required: false}\n",
    { 1, 1, UNBOUNDED, UNBOUNDED, FALSE, AUTOSCALE_DEFAULTS,
      AH_RESTART_ONE_FOR_ALL, 0, 1, AH_FAILED_MESSAGES_RETRY, 0, FALSE } },
  { "supervision-temporary-highest", AGENT_ECHO "    supervision: {policy: \"temporary\", max_restarts: 1000000, "
    "period_ms: 86400000, failed_messages: 'dead_letter', handler_deadline_ms: 86400000, required: true}\n",
    { 1, 1, UNBOUNDED, UNBOUNDED, FALSE, AUTOSCALE_DEFAULTS,
      AH_RESTART_TEMPORARY, 1000000, 86400000, AH_FAILED_MESSAGES_DEAD_LETTER, 86400000, TRUE } },
};

static void
test_manifest_load_type_fields (gconstpointer data)
{
  const TypeFieldsCase *tc = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;

  g_test_summary ("pool, autoscale and supervision set exactly the fields they name, at their "
                  "bounds and in any key order; the rest keep their defaults");

  manifest = ah_manifest_load_data (tc->yaml, strlen (tc->yaml), "inline.yaml", NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (manifest);
  assert_type_fields (ah_manifest_get_type (manifest, 0), &tc->expected);
}

static void
test_manifest_load_type_fields_per_type (void)
{
  static const char yaml[] =
    "name: two\n"
    "agents:\n"
    "  web:\n"
    "    plugin: echo\n"
    "    pool_size: 2\n"
    "    pool: {max: 8}\n"
    "    autoscale: {step: 2}\n"
    "    supervision: {policy: temporary, required: true}\n"
    "  db:\n"
    "    plugin: echo\n"
    "    pool_size: 3\n";
  static const TypeFields web = {
    2, 2, 8, UNBOUNDED, TRUE, 64, 50, 2000, 2,
    AH_RESTART_TEMPORARY, 3, 5000, AH_FAILED_MESSAGES_RETRY, 0, TRUE
  };
  static const TypeFields db = {
    3, 3, UNBOUNDED, UNBOUNDED, FALSE, AUTOSCALE_DEFAULTS, SUPERVISION_DEFAULTS
  };
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;

  g_test_summary ("One type's pool, autoscale and supervision leave the next type's defaults alone");

  manifest = ah_manifest_load_data (yaml, strlen (yaml), "inline.yaml", NULL, &error);
  g_assert_no_error (error);
  assert_type_fields (ah_manifest_find_type (manifest, "web"), &web);
  assert_type_fields (ah_manifest_find_type (manifest, "db"), &db);
}

static void
test_manifest_load_booleans (void)
{
  static const struct {
    const char *word;
    gboolean value;
  } cases[] = {
    { "true", TRUE }, { "True", TRUE }, { "TRUE", TRUE },
    { "false", FALSE }, { "False", FALSE }, { "FALSE", FALSE },
  };

  g_test_summary ("The YAML 1.2 core booleans are accepted in all three spellings");

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *yaml = g_strdup_printf (AGENT_ECHO "    prewarm: %s\nstop_when_idle: %s\n",
                                               cases[i].word, cases[i].word);
      g_autoptr(GError) error = NULL;
      g_autoptr(AhManifest) manifest = ah_manifest_load_data (yaml, strlen (yaml), "inline.yaml",
                                                              NULL, &error);

      g_assert_no_error (error);
      g_assert_cmpint (ah_manifest_get_type (manifest, 0)->prewarm, ==, cases[i].value);
      g_assert_cmpint (manifest->stop_when_idle, ==, cases[i].value);
    }
}

static void
test_manifest_load_limits_exact (void)
{
  g_autoptr(GString) yaml = g_string_new (AGENT_ECHO "    config:\n");
  g_autoptr(GString) deep_key = g_string_new ("deep");
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  g_autofree char *long_text = g_strnfill (AH_MANIFEST_MAX_SCALAR, 'x');
  const AhManifestAgentType *type;
  const AhManifestConfigEntry *entry;

  g_test_summary ("Input exactly at the caps loads: depth 16, 256 keys, a 4096-byte scalar");

  /* Root, agents, echo and config are four levels: twelve more reach 16. */
  g_string_append (yaml, "      deep: ");
  for (guint i = 0; i < AH_MANIFEST_MAX_DEPTH - 4; i++)
    {
      g_string_append (yaml, "{a: ");
      g_string_append (deep_key, ".a");
    }
  g_string_append (yaml, "leaf");
  for (guint i = 0; i < AH_MANIFEST_MAX_DEPTH - 4; i++)
    g_string_append (yaml, "}");
  g_string_append_printf (yaml, "\n      long: %s\n", long_text);
  for (guint i = 0; i < AH_MANIFEST_MAX_KEYS - 2; i++)
    g_string_append_printf (yaml, "      k%u: %u\n", i, i);

  manifest = ah_manifest_load_data (yaml->str, yaml->len, "inline.yaml", NULL, &error);
  g_assert_no_error (error);
  type = ah_manifest_get_type (manifest, 0);
  g_assert_cmpuint (type->config->len, ==, AH_MANIFEST_MAX_KEYS);
  entry = ah_manifest_type_find_config (type, deep_key->str);
  g_assert_nonnull (entry);
  g_assert_cmpstr (entry->value, ==, "leaf");
  entry = ah_manifest_type_find_config (type, "long");
  g_assert_cmpuint (strlen (entry->value), ==, AH_MANIFEST_MAX_SCALAR);
}

static void
test_manifest_load_max_types (void)
{
  g_autoptr(GString) yaml = g_string_new ("name: many\nagents:\n");
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  g_autoptr(AhManifest) too_many = NULL;

  g_test_summary ("64 agent types load; a 65th is refused at its key");

  for (guint i = 0; i < AH_MANIFEST_MAX_TYPES; i++)
    g_string_append_printf (yaml, "  t%u: {plugin: echo}\n", i);
  manifest = ah_manifest_load_data (yaml->str, yaml->len, "inline.yaml", NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ah_manifest_get_n_types (manifest), ==, AH_MANIFEST_MAX_TYPES);

  g_string_append (yaml, "  one-more: {plugin: echo}\n");
  too_many = ah_manifest_load_data (yaml->str, yaml->len, "inline.yaml", NULL, &error);
  g_assert_null (too_many);
  g_assert_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_LIMIT);
  g_assert_cmpstr (error->message, ==, "inline.yaml:67:3: error: more than 64 agent types");
}

static void
test_manifest_find (void)
{
  g_autofree char *path = fixture_path ("complete");
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;

  g_test_summary ("Types are found by index and by name; unknown names give NULL");

  manifest = ah_manifest_load (path, &error);
  g_assert_no_error (error);
  g_assert_true (ah_manifest_find_type (manifest, "reporter") == ah_manifest_get_type (manifest, 1));
  g_assert_true (ah_manifest_find_type (manifest, "wordcount") == ah_manifest_get_type (manifest, 0));
  g_assert_null (ah_manifest_find_type (manifest, "echo"));
  g_assert_null (ah_manifest_find_type (manifest, ""));
}

static void
test_manifest_get_type_out_of_range (void)
{
  g_autofree char *path = fixture_path ("minimal");
  g_autoptr(AhManifest) manifest = ah_manifest_load (path, NULL);

  g_test_summary ("An index past the last type is a programming error, not a crash");

  g_assert_nonnull (manifest);
  g_test_expect_message ("agenthost", G_LOG_LEVEL_CRITICAL, "*index < self->types->len*");
  g_assert_null (ah_manifest_get_type (manifest, 1));
  g_test_assert_expected_messages ();
}

static void
test_manifest_load_default (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  g_autofree char *cwd = g_get_current_dir ();

  g_test_summary ("The built-in manifest is a normal manifest and loads");

  manifest = ah_manifest_load_default (&error);
  g_assert_no_error (error);
  g_assert_nonnull (manifest);
  g_assert_cmpstr (ah_manifest_get_path (manifest), ==, "<built-in>/default.yaml");
  g_assert_cmpstr (manifest->base_dir, ==, cwd);
  g_assert_nonnull (ah_manifest_get_name (manifest));
  g_assert_cmpuint (ah_manifest_get_n_types (manifest), >=, 1);
}

static void
test_manifest_load_docs_example (void)
{
  g_autofree char *doc_path = g_test_build_filename (G_TEST_DIST, "..", "docs", "manifest.md", NULL);
  g_autofree char *doc = NULL;
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  const char *start;
  const char *end;

  g_test_summary ("The first ```yaml block of docs/manifest.md loads, so the docs cannot rot");

  g_file_get_contents (doc_path, &doc, NULL, &error);
  g_assert_no_error (error);
  start = strstr (doc, "```yaml\n");
  g_assert_nonnull (start);
  start += strlen ("```yaml\n");
  end = strstr (start, "\n```");
  g_assert_nonnull (end);

  manifest = ah_manifest_load_data (start, (gsize) (end - start) + 1, "docs/manifest.md", NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (manifest);
  g_assert_cmpuint (ah_manifest_get_n_types (manifest), >=, 2);
  g_assert_cmpuint (ah_manifest_get_type (manifest, 0)->subscriptions->len, >=, 1);
  /* It shows the pool, autoscale and supervision mappings. */
  g_assert_nonnull (ah_manifest_find_type (manifest, "wordcount"));
  g_assert_true (ah_manifest_find_type (manifest, "wordcount")->autoscale);
  g_assert_cmpuint (ah_manifest_find_type (manifest, "wordcount")->pool_max, !=, AH_MANIFEST_POOL_UNBOUNDED);
  g_assert_true (ah_manifest_find_type (manifest, "coordinator")->required);
}

static void
test_manifest_load_watch (void)
{
  static const struct {
    const char *yaml;
    gboolean    watch;
    guint       debounce_ms;
  } cases[] = {
    { "", FALSE, 200 },
    { "watch: true\n", TRUE, 200 },
    { "watch: false\nwatch_debounce_ms: 0\n", FALSE, 0 },
    { "watch_debounce_ms: 60000\nwatch: TRUE\n", TRUE, 60000 },
  };

  g_test_summary ("watch and watch_debounce_ms reach ah_manifest_get_watch(), at their "
                  "defaults and at the ends of the debounce range");

  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autofree char *yaml = g_strconcat (cases[i].yaml, AGENT_ECHO, NULL);
      g_autoptr(GError) error = NULL;
      g_autoptr(AhManifest) manifest = ah_manifest_load_data (yaml, strlen (yaml), "inline.yaml",
                                                              NULL, &error);
      guint debounce_ms = G_MAXUINT;

      g_assert_no_error (error);
      g_assert_cmpint (ah_manifest_get_watch (manifest, &debounce_ms), ==, cases[i].watch);
      g_assert_cmpuint (debounce_ms, ==, cases[i].debounce_ms);
      g_assert_cmpint (ah_manifest_get_watch (manifest, NULL), ==, cases[i].watch);
    }
}

/* ---- Files that cannot be read --------------------------------------- */

static void
test_manifest_load_missing_file (void)
{
  g_autofree char *path = g_build_filename (g_get_user_cache_dir (), "no-such.yaml", NULL);
  g_autofree char *expected = g_strdup_printf ("%s: error: cannot open: %s", path, g_strerror (ENOENT));
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;

  g_test_summary ("A file that does not exist is an IO error without a position");

  manifest = ah_manifest_load (path, &error);
  g_assert_null (manifest);
  assert_one_line_error (error, AH_MANIFEST_ERROR_IO, path);
  g_assert_cmpstr (error->message, ==, expected);
}

static void
test_manifest_load_not_regular (void)
{
  g_autofree char *dir = g_build_filename (g_get_user_cache_dir (), "a-directory.yaml", NULL);
  g_autofree char *fifo = g_build_filename (g_get_user_cache_dir (), "a-fifo.yaml", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  g_autofree char *expected = NULL;

  g_test_summary ("A directory or a FIFO is refused, without waiting for a writer");

  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  manifest = ah_manifest_load (dir, &error);
  g_assert_null (manifest);
  expected = g_strdup_printf ("%s: error: not a regular file", dir);
  assert_one_line_error (error, AH_MANIFEST_ERROR_IO, dir);
  g_assert_cmpstr (error->message, ==, expected);
  g_clear_error (&error);

  g_assert_cmpint (mkfifo (fifo, 0600), ==, 0);
  manifest = ah_manifest_load (fifo, &error);
  g_assert_null (manifest);
  g_free (expected);
  expected = g_strdup_printf ("%s: error: not a regular file", fifo);
  g_assert_cmpstr (error->message, ==, expected);
}

/* ---- Broken fixtures, one defect each -------------------------------- */

typedef struct {
  const char      *name;
  AhManifestError  code;
  const char      *message;   /* after "PATH/NAME.yaml:" */
} InvalidManifest;

static const InvalidManifest invalid_manifests[] = {
  { "syntax-error", AH_MANIFEST_ERROR_SYNTAX,
    "5:4: error: did not find expected key (while parsing a block mapping started at 3:3)" },
  { "not-mapping", AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:1: error: the manifest must be a mapping with 'name' and 'agents', got a sequence" },
  { "empty", AH_MANIFEST_ERROR_MISSING_KEY,
    "1:1: error: empty manifest: expected a mapping with 'name' and 'agents'" },
  { "watch-debounce-huge", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "2:20: error: 'watch_debounce_ms' must be an integer between 0 and 60000, got 60001" },
  { "unknown-top-key", AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "2:1: error: unknown key 'agent' (expected name, description, plugin_path, stop_when_idle, "
    "run_timeout_ms, watch, watch_debounce_ms, bus, offload, agents)" },
  { "unknown-type-key", AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "5:5: error: unknown key 'replicas' in agent type 'wordcount' (expected plugin, pool_size, prewarm, "
    "pool, autoscale, supervision, subscribe, config)" },
  { "unknown-bus-key", AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "3:3: error: unknown key 'worker' in bus (expected workers, publish_batch, handler_batch, "
    "mailbox_capacity, overflow, drain_timeout_ms, pin_workers)" },
  { "unknown-offload-key", AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "3:3: error: unknown key 'thread' in offload (expected threads, queue)" },
  { "offload-threads-huge", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "3:12: error: 'threads' must be an integer between 1 and 256, got 257" },
  { "duplicate-top-key", AH_MANIFEST_ERROR_DUPLICATE_KEY,
    "2:1: error: duplicate key 'name' (first at 1:1)" },
  { "duplicate-type-key", AH_MANIFEST_ERROR_DUPLICATE_KEY,
    "6:5: error: duplicate key 'plugin' (first at 4:5)" },
  { "missing-name", AH_MANIFEST_ERROR_MISSING_KEY,
    "1:1: error: missing required key 'name'" },
  { "missing-agents", AH_MANIFEST_ERROR_MISSING_KEY,
    "1:1: error: missing required key 'agents'" },
  { "missing-plugin", AH_MANIFEST_ERROR_MISSING_KEY,
    "4:5: error: missing required key 'plugin' in agent type 'wordcount'" },
  { "pool-size-string", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:16: error: 'pool_size' must be a plain decimal integer, got 'five'" },
  { "pool-size-quoted", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:16: error: 'pool_size' must be an integer, got a quoted string \"5\" (remove the quotes)" },
  { "pool-size-float", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:16: error: 'pool_size' must be a plain decimal integer, got '1e3'" },
  { "plugin-mapping", AH_MANIFEST_ERROR_WRONG_TYPE,
    "4:13: error: 'plugin' must be a string, got a mapping" },
  { "name-null", AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:6: error: 'name' must be a string, got null" },
  { "prewarm-yes", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:14: error: 'prewarm' must be true or false, got 'yes' (YAML 1.1 booleans are not accepted: "
    "use true or false)" },
  { "pool-size-zero", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "5:16: error: 'pool_size' must be an integer between 1 and 10000000, got 0" },
  { "pool-size-huge", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "5:16: error: 'pool_size' must be an integer between 1 and 10000000, got 10000001" },
  { "workers-range", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "3:12: error: 'workers' must be an integer between 0 and 256, got 1000" },
  { "handler-batch-zero", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "3:18: error: 'handler_batch' must be an integer between 1 and 4096, got 0" },
  { "bad-overflow", AH_MANIFEST_ERROR_INVALID_VALUE,
    "3:13: error: 'overflow' must be block or fail, got 'drop'" },
  { "bad-delivery", AH_MANIFEST_ERROR_INVALID_VALUE,
    "7:19: error: 'delivery' must be queue or broadcast, got 'all'" },
  { "subject-empty-token", AH_MANIFEST_ERROR_INVALID_VALUE,
    "5:17: error: invalid subject pattern 'a..b': empty token" },
  { "subject-wildcard-middle", AH_MANIFEST_ERROR_INVALID_VALUE,
    "6:9: error: invalid subject pattern 'a.>.b': '>' must be the last token" },
  { "subject-partial-wildcard", AH_MANIFEST_ERROR_INVALID_VALUE,
    "6:18: error: invalid subject pattern 'foo*': '*' and '>' must be whole tokens" },
  { "alias", AH_MANIFEST_ERROR_UNSUPPORTED,
    "4:13: error: aliases are not allowed" },
  { "anchor", AH_MANIFEST_ERROR_UNSUPPORTED,
    "3:9: error: anchors are not allowed" },
  { "tag", AH_MANIFEST_ERROR_UNSUPPORTED,
    "4:13: error: tags are not allowed" },
  { "two-documents", AH_MANIFEST_ERROR_UNSUPPORTED,
    "5:1: error: more than one YAML document" },
  { "directive", AH_MANIFEST_ERROR_UNSUPPORTED,
    "1:1: error: directives (%YAML, %TAG) are not allowed" },
  { "bad-type-name", AH_MANIFEST_ERROR_INVALID_VALUE,
    "3:3: error: invalid agent type name 'WordCount': use 1 to 64 characters of a-z 0-9 _ -" },
  { "bad-name", AH_MANIFEST_ERROR_INVALID_VALUE,
    "1:7: error: invalid name 'my demo': use 1 to 64 characters of A-Z a-z 0-9 _ . -" },
  { "bad-plugin-name", AH_MANIFEST_ERROR_INVALID_VALUE,
    "4:13: error: invalid plugin name 'echo.so': a bare name uses A-Z a-z 0-9 _ - "
    "(a file path must contain a '/')" },
  { "agents-empty", AH_MANIFEST_ERROR_INVALID_VALUE,
    "2:9: error: 'agents' must declare at least one agent type" },
  { "config-duplicate", AH_MANIFEST_ERROR_DUPLICATE_KEY,
    "8:9: error: duplicate config key 'limits.max' (first at 6:7)" },
  { "pool-scalar", AH_MANIFEST_ERROR_WRONG_TYPE,
    "6:11: error: 'pool' must be a mapping, got the integer 3" },
  { "pool-unknown-key", AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "7:7: error: unknown key 'maximum' in pool of agent type 'web' (expected min, max, idle_cap)" },
  { "pool-max-huge", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "7:12: error: 'max' must be an integer between 1 and 10000000, got 10000001" },
  { "pool-min-over-size", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "8:12: error: 'min' must be an integer between 1 and pool_size (5), got 6" },
  { "pool-max-under-size", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "7:12: error: 'max' must be an integer between pool_size (10) and 10000000, got 4" },
  { "pool-idle-cap-over-max", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "8:17: error: 'idle_cap' must be an integer between 0 and max (8), got 9" },
  { "autoscale-unbounded", AH_MANIFEST_ERROR_MISSING_KEY,
    "7:5: error: autoscale in agent type 'web' needs a ceiling: add 'max' to its 'pool' mapping, "
    "or set 'enabled: false'" },
  { "autoscale-step-over-max", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "9:13: error: 'step' must be an integer between 1 and max (4), got 5" },
  { "autoscale-depth-over-mailbox", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "9:23: error: 'scale_up_depth' must be an integer between 1 and the bus's mailbox_capacity (64), "
    "got 100" },
  { "autoscale-unknown-key", AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "9:7: error: unknown key 'scale_down_after_ms' in autoscale of agent type 'web' (expected enabled, "
    "scale_up_depth, scale_up_after_ms, scale_down_idle_ms, step)" },
  { "supervision-bad-policy", AH_MANIFEST_ERROR_INVALID_VALUE,
    "7:15: error: 'policy' must be one_for_one, one_for_all or temporary, got 'rest_for_one'" },
  { "supervision-bad-failed-messages", AH_MANIFEST_ERROR_INVALID_VALUE,
    "7:24: error: 'failed_messages' must be retry or dead_letter, got 'drop'" },
  { "supervision-unknown-key", AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "7:7: error: unknown key 'restarts' in supervision of agent type 'web' (expected policy, "
    "max_restarts, period_ms, failed_messages, handler_deadline_ms, required)" },
  { "supervision-period-zero", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "7:18: error: 'period_ms' must be an integer between 1 and 86400000, got 0" },
  { "supervision-max-restarts-huge", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "7:21: error: 'max_restarts' must be an integer between 0 and 1000000, got 1000001" },
};

static void
test_manifest_load_invalid (gconstpointer data)
{
  const InvalidManifest *tc = data;
  g_autofree char *path = fixture_path (tc->name);
  g_autofree char *expected = g_strdup_printf ("%s:%s", path, tc->message);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;

  g_test_summary ("A manifest with one defect fails with its code and exact message");

  manifest = ah_manifest_load (path, &error);
  g_assert_null (manifest);
  assert_one_line_error (error, tc->code, path);
  g_assert_cmpstr (error->message, ==, expected);
}

/* ---- Small defects, inline ------------------------------------------- */

typedef struct {
  const char      *name;
  const char      *yaml;
  AhManifestError  code;
  const char      *message;   /* after "inline.yaml:" */
} InlineCase;

static const InlineCase inline_cases[] = {
  { "int-hex", AGENT_ECHO "    pool_size: 0x10\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:16: error: 'pool_size' must be a plain decimal integer, got '0x10'" },
  { "int-underscore", AGENT_ECHO "    pool_size: 1_000\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:16: error: 'pool_size' must be a plain decimal integer, got '1_000'" },
  { "int-leading-zero", AGENT_ECHO "    pool_size: 010\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:16: error: 'pool_size' must be a plain decimal integer without leading zeros, got '010'" },
  { "int-plus", AGENT_ECHO "    pool_size: +5\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:16: error: 'pool_size' must be a plain decimal integer, got '+5'" },
  { "int-negative", AGENT_ECHO "    pool_size: -1\n", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "5:16: error: 'pool_size' must be an integer between 1 and 10000000, got -1" },
  { "int-overflow", AGENT_ECHO "    pool_size: 99999999999999999999999\n", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "5:16: error: 'pool_size' must be an integer between 1 and 10000000, got 99999999999999999999999" },
  { "int-null", AGENT_ECHO "    pool_size: ~\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:16: error: 'pool_size' must be an integer, got null" },
  { "int-empty", AGENT_ECHO "    pool_size:\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:15: error: 'pool_size' must be an integer, got null" },
  { "int-bool", AGENT_ECHO "    pool_size: true\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:16: error: 'pool_size' must be an integer, got the boolean true" },
  { "int-sequence", AGENT_ECHO "    pool_size: [1]\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:16: error: 'pool_size' must be an integer, got a sequence" },
  { "watch-yes", "watch: yes\n" AGENT_ECHO, AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:8: error: 'watch' must be true or false, got 'yes' (YAML 1.1 booleans are not "
    "accepted: use true or false)" },
  { "watch-quoted", "watch: \"true\"\n" AGENT_ECHO, AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:8: error: 'watch' must be true or false, got a quoted string \"true\" (remove the quotes)" },
  { "watch-debounce-negative", "watch_debounce_ms: -1\n" AGENT_ECHO, AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "1:20: error: 'watch_debounce_ms' must be an integer between 0 and 60000, got -1" },
  { "watch-debounce-float", "watch_debounce_ms: 0.5\n" AGENT_ECHO, AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:20: error: 'watch_debounce_ms' must be a plain decimal integer, got '0.5'" },
  { "timeout-range", "run_timeout_ms: 86400001\n" AGENT_ECHO, AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "1:17: error: 'run_timeout_ms' must be an integer between 0 and 86400000, got 86400001" },
  { "publish-batch-range", "bus: {publish_batch: 65537}\n" AGENT_ECHO, AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "1:22: error: 'publish_batch' must be an integer between 1 and 65536, got 65537" },
  { "mailbox-range", "bus: {mailbox_capacity: 16777217}\n" AGENT_ECHO, AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "1:25: error: 'mailbox_capacity' must be an integer between 1 and 16777216, got 16777217" },
  { "drain-range", "bus: {drain_timeout_ms: 3600001}\n" AGENT_ECHO, AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "1:25: error: 'drain_timeout_ms' must be an integer between 0 and 3600000, got 3600001" },
  { "bool-no", AGENT_ECHO "    prewarm: no\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:14: error: 'prewarm' must be true or false, got 'no' (YAML 1.1 booleans are not accepted: "
    "use true or false)" },
  { "bool-on", "stop_when_idle: On\n" AGENT_ECHO, AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:17: error: 'stop_when_idle' must be true or false, got 'On' (YAML 1.1 booleans are not "
    "accepted: use true or false)" },
  { "bool-quoted", AGENT_ECHO "    prewarm: 'true'\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:14: error: 'prewarm' must be true or false, got a quoted string \"true\" (remove the quotes)" },
  { "bool-int", AGENT_ECHO "    prewarm: 1\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:14: error: 'prewarm' must be true or false, got the integer 1" },
  { "bool-null", AGENT_ECHO "    prewarm: null\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:14: error: 'prewarm' must be true or false, got null" },
  { "string-int", "name: 123\nagents: {echo: {plugin: echo}}\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:7: error: 'name' must be a string, got the integer 123 (quote it to make it a string)" },
  { "string-bool", "description: true\n" AGENT_ECHO, AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:14: error: 'description' must be a string, got the boolean true (quote it to make it a string)" },
  { "string-sequence", "name: [demo]\nagents: {echo: {plugin: echo}}\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:7: error: 'name' must be a string, got a sequence" },
  { "name-too-long", "name: " "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n"
    "agents: {echo: {plugin: echo}}\n", AH_MANIFEST_ERROR_INVALID_VALUE,
    "1:7: error: invalid name 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa': "
    "use 1 to 64 characters of A-Z a-z 0-9 _ . -" },
  { "plugin-empty", "name: demo\nagents:\n  echo:\n    plugin: ''\n", AH_MANIFEST_ERROR_INVALID_VALUE,
    "4:13: error: invalid plugin name '': a bare name uses A-Z a-z 0-9 _ - "
    "(a file path must contain a '/')" },
  { "type-null", "name: demo\nagents:\n  echo:\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "3:8: error: agent type 'echo' must be a mapping, got null" },
  { "type-name-empty", "name: demo\nagents:\n  '': {plugin: echo}\n", AH_MANIFEST_ERROR_INVALID_VALUE,
    "3:3: error: invalid agent type name '': use 1 to 64 characters of a-z 0-9 _ -" },
  { "agents-sequence", "name: demo\nagents: [echo]\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "2:9: error: 'agents' must be a mapping, got a sequence" },
  { "bus-null", "bus:\n" AGENT_ECHO, AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:5: error: 'bus' must be a mapping, got null" },
  { "offload-null", "offload:\n" AGENT_ECHO, AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:9: error: 'offload' must be a mapping, got null" },
  { "offload-threads-zero", "offload: {threads: 0}\n" AGENT_ECHO, AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "1:20: error: 'threads' must be an integer between 1 and 256, got 0" },
  { "offload-queue-zero", "offload: {queue: 0}\n" AGENT_ECHO, AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "1:18: error: 'queue' must be an integer between 1 and 1000000, got 0" },
  { "offload-queue-huge", "offload: {queue: 1000001}\n" AGENT_ECHO, AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "1:18: error: 'queue' must be an integer between 1 and 1000000, got 1000001" },
  { "offload-queue-string", "offload: {queue: many}\n" AGENT_ECHO, AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:18: error: 'queue' must be a plain decimal integer, got 'many'" },
  { "offload-duplicate", "offload: {threads: 1, threads: 2}\n" AGENT_ECHO,
    AH_MANIFEST_ERROR_DUPLICATE_KEY, "1:23: error: duplicate key 'threads' (first at 1:11)" },
  { "overflow-int", "bus: {overflow: 1}\n" AGENT_ECHO, AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:17: error: 'overflow' must be a string, got the integer 1 (quote it to make it a string)" },
  { "subscribe-string", AGENT_ECHO "    subscribe: tasks.count\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:16: error: 'subscribe' must be a sequence, got the string 'tasks.count'" },
  { "subscribe-item-sequence", AGENT_ECHO "    subscribe: [[a]]\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:17: error: a 'subscribe' item must be a subject or a mapping with 'subject', got a sequence" },
  { "subscribe-missing-subject", AGENT_ECHO "    subscribe:\n      - delivery: queue\n",
    AH_MANIFEST_ERROR_MISSING_KEY, "6:9: error: missing required key 'subject' in subscription" },
  { "subscribe-unknown-key", AGENT_ECHO "    subscribe:\n      - {subject: a, mode: queue}\n",
    AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "6:22: error: unknown key 'mode' in subscription (expected subject, delivery)" },
  { "subscribe-duplicate", AGENT_ECHO "    subscribe: [a.b, {subject: a.b, delivery: broadcast}]\n",
    AH_MANIFEST_ERROR_INVALID_VALUE,
    "5:32: error: duplicate subscription 'a.b' in agent type 'echo' (first at 5:17)" },
  { "subject-null", AGENT_ECHO "    subscribe: [{subject: ~}]\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:27: error: 'subject' must be a string, got null" },
  { "subject-empty", AGENT_ECHO "    subscribe: ['']\n", AH_MANIFEST_ERROR_INVALID_VALUE,
    "5:17: error: invalid subject pattern '': empty token" },
  { "subject-trailing-dot", AGENT_ECHO "    subscribe: [a.]\n", AH_MANIFEST_ERROR_INVALID_VALUE,
    "5:17: error: invalid subject pattern 'a.': empty token" },
  { "subject-space", AGENT_ECHO "    subscribe: ['a b']\n", AH_MANIFEST_ERROR_INVALID_VALUE,
    "5:17: error: invalid subject pattern 'a b': only printable ASCII without spaces is allowed" },
  { "subject-non-ascii", AGENT_ECHO "    subscribe: [caf\xc3\xa9]\n", AH_MANIFEST_ERROR_INVALID_VALUE,
    "5:17: error: invalid subject pattern 'caf\xc3\xa9': only printable ASCII without spaces is allowed" },
  { "plugin-path-mapping", "plugin_path: {a: b}\n" AGENT_ECHO, AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:14: error: 'plugin_path' must be a directory or a sequence of directories, got a mapping" },
  { "plugin-path-empty", "plugin_path: [lib, '']\n" AGENT_ECHO, AH_MANIFEST_ERROR_INVALID_VALUE,
    "1:20: error: 'plugin_path' entries must not be empty" },
  { "plugin-path-null", "plugin_path: [lib, ~]\n" AGENT_ECHO, AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:20: error: 'plugin_path' must be a string, got null" },
  { "config-sequence", AGENT_ECHO "    config: [a]\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:13: error: 'config' must be a mapping, got a sequence" },
  { "config-empty-key", AGENT_ECHO "    config: {a: {'': 1}}\n", AH_MANIFEST_ERROR_INVALID_VALUE,
    "5:18: error: config keys must not be empty" },
  { "config-duplicate-nested", AGENT_ECHO "    config: {a: {b: 1, b: 2}}\n", AH_MANIFEST_ERROR_DUPLICATE_KEY,
    "5:24: error: duplicate key 'b' (first at 5:18)" },
  { "key-sequence", "? [a]\n: b\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:3: error: a mapping key must be a string, got a sequence" },
  { "root-scalar", "hello\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "1:1: error: the manifest must be a mapping with 'name' and 'agents', got the string 'hello'" },
  { "root-null", "---\n...\n", AH_MANIFEST_ERROR_MISSING_KEY,
    "2:1: error: empty manifest: expected a mapping with 'name' and 'agents'" },
  { "no-input", "", AH_MANIFEST_ERROR_MISSING_KEY,
    "1:1: error: empty manifest: expected a mapping with 'name' and 'agents'" },
  { "tag-non-specific", "name: ! demo\n", AH_MANIFEST_ERROR_UNSUPPORTED,
    "1:7: error: tags are not allowed" },
  { "tag-directive", "%TAG !e! tag:example.com,2000:\n---\nname: demo\n", AH_MANIFEST_ERROR_UNSUPPORTED,
    "1:1: error: directives (%YAML, %TAG) are not allowed" },
  { "nul-escape", "name: \"de\\0mo\"\n", AH_MANIFEST_ERROR_INVALID_VALUE,
    "1:7: error: NUL characters are not allowed" },
  { "invalid-utf8", "name: de\xffmo\n", AH_MANIFEST_ERROR_SYNTAX,
    "1:9: error: invalid leading UTF-8 octet (0xFF)" },
  { "control-character", "description: \xc3\xa9\xc3\xa9\x01\n", AH_MANIFEST_ERROR_SYNTAX,
    "1:16: error: control characters are not allowed (0x01)" },
  { "flow-unclosed", "name: demo\nagents: [echo\n", AH_MANIFEST_ERROR_SYNTAX,
    "3:1: error: did not find expected ',' or ']' (while parsing a flow sequence started at 2:9)" },
  { "pool-null", AGENT_ECHO "    pool:\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:10: error: 'pool' must be a mapping, got null" },
  { "pool-min-zero", AGENT_ECHO "    pool: {min: 0}\n", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "5:17: error: 'min' must be an integer between 1 and 10000000, got 0" },
  { "pool-min-over-default-size", AGENT_ECHO "    pool: {min: 2}\n", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "5:17: error: 'min' must be an integer between 1 and pool_size (1, the default), got 2" },
  { "pool-min-and-max-conflict", AGENT_ECHO "    pool_size: 5\n    pool: {max: 4, min: 6}\n",
    AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "6:25: error: 'min' must be an integer between 1 and pool_size (5), got 6" },
  { "pool-max-zero", AGENT_ECHO "    pool: {max: 0}\n", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "5:17: error: 'max' must be an integer between 1 and 10000000, got 0" },
  { "pool-max-word", AGENT_ECHO "    pool: {max: unbounded}\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:17: error: 'max' must be a plain decimal integer, got 'unbounded'" },
  { "pool-idle-cap-negative", AGENT_ECHO "    pool: {idle_cap: -1}\n", AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "5:22: error: 'idle_cap' must be an integer between 0 and 10000000, got -1" },
  { "pool-duplicate", AGENT_ECHO "    pool: {max: 4, max: 5}\n", AH_MANIFEST_ERROR_DUPLICATE_KEY,
    "5:20: error: duplicate key 'max' (first at 5:12)" },
  { "autoscale-bool", AGENT_ECHO "    autoscale: true\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:16: error: 'autoscale' must be a mapping, got the boolean true" },
  { "autoscale-empty-unbounded", AGENT_ECHO "    autoscale: {}\n", AH_MANIFEST_ERROR_MISSING_KEY,
    "5:5: error: autoscale in agent type 'echo' needs a ceiling: add 'max' to its 'pool' mapping, "
    "or set 'enabled: false'" },
  { "autoscale-enabled-yes", AGENT_ECHO "    pool: {max: 4}\n    autoscale: {enabled: yes}\n",
    AH_MANIFEST_ERROR_WRONG_TYPE,
    "6:26: error: 'enabled' must be true or false, got 'yes' (YAML 1.1 booleans are not accepted: "
    "use true or false)" },
  { "autoscale-depth-zero", AGENT_ECHO "    pool: {max: 4}\n    autoscale: {scale_up_depth: 0}\n",
    AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "6:33: error: 'scale_up_depth' must be an integer between 1 and 16777216, got 0" },
  { "autoscale-default-depth-over-mailbox",
    "bus: {mailbox_capacity: 16}\n" AGENT_ECHO "    pool: {max: 4}\n    autoscale: {step: 2}\n",
    AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "7:5: error: autoscale in agent type 'echo' would never grow: the default scale_up_depth (64) "
    "is more than the bus's mailbox_capacity (16); set 'scale_up_depth'" },
  { "autoscale-after-huge", AGENT_ECHO "    pool: {max: 4}\n    autoscale: {scale_up_after_ms: 86400001}\n",
    AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "6:36: error: 'scale_up_after_ms' must be an integer between 0 and 86400000, got 86400001" },
  { "autoscale-idle-zero", AGENT_ECHO "    pool: {max: 4}\n    autoscale: {scale_down_idle_ms: 0}\n",
    AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "6:37: error: 'scale_down_idle_ms' must be an integer between 1 and 86400000, got 0" },
  { "autoscale-step-zero", AGENT_ECHO "    pool: {max: 4}\n    autoscale: {step: 0}\n",
    AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "6:23: error: 'step' must be an integer between 1 and 10000000, got 0" },
  { "autoscale-step-over-max-disabled", AGENT_ECHO "    pool: {max: 4}\n    autoscale: {enabled: false, step: 5}\n",
    AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "6:39: error: 'step' must be an integer between 1 and max (4), got 5" },
  { "supervision-sequence", AGENT_ECHO "    supervision: [one_for_one]\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:18: error: 'supervision' must be a mapping, got a sequence" },
  { "supervision-policy-int", AGENT_ECHO "    supervision: {policy: 1}\n", AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:27: error: 'policy' must be a string, got the integer 1 (quote it to make it a string)" },
  { "supervision-policy-case", AGENT_ECHO "    supervision: {policy: One_For_One}\n",
    AH_MANIFEST_ERROR_INVALID_VALUE,
    "5:27: error: 'policy' must be one_for_one, one_for_all or temporary, got 'One_For_One'" },
  { "supervision-max-restarts-negative", AGENT_ECHO "    supervision: {max_restarts: -1}\n",
    AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "5:33: error: 'max_restarts' must be an integer between 0 and 1000000, got -1" },
  { "supervision-period-huge", AGENT_ECHO "    supervision: {period_ms: 86400001}\n",
    AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "5:30: error: 'period_ms' must be an integer between 1 and 86400000, got 86400001" },
  { "supervision-deadline-huge", AGENT_ECHO "    supervision: {handler_deadline_ms: 86400001}\n",
    AH_MANIFEST_ERROR_OUT_OF_RANGE,
    "5:40: error: 'handler_deadline_ms' must be an integer between 0 and 86400000, got 86400001" },
  { "supervision-deadline-float", AGENT_ECHO "    supervision: {handler_deadline_ms: 0.5}\n",
    AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:40: error: 'handler_deadline_ms' must be a plain decimal integer, got '0.5'" },
  { "supervision-failed-messages-null", AGENT_ECHO "    supervision: {failed_messages: ~}\n",
    AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:36: error: 'failed_messages' must be a string, got null" },
  { "supervision-required-quoted", AGENT_ECHO "    supervision: {required: \"true\"}\n",
    AH_MANIFEST_ERROR_WRONG_TYPE,
    "5:29: error: 'required' must be true or false, got a quoted string \"true\" (remove the quotes)" },
  { "supervision-duplicate", AGENT_ECHO "    supervision: {policy: temporary, policy: one_for_all}\n",
    AH_MANIFEST_ERROR_DUPLICATE_KEY,
    "5:38: error: duplicate key 'policy' (first at 5:19)" },
  { "escaped-key", "\"a\\nb\\\\\": 1\n", AH_MANIFEST_ERROR_UNKNOWN_KEY,
    "1:1: error: unknown key 'a\\nb\\\\' (expected name, description, plugin_path, stop_when_idle, "
    "run_timeout_ms, watch, watch_debounce_ms, bus, offload, agents)" },
};

static void
test_manifest_load_inline (gconstpointer data)
{
  const InlineCase *tc = data;
  g_autofree char *expected = g_strconcat ("inline.yaml:", tc->message, NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;

  g_test_summary ("One small defect fails with its code and exact message");

  manifest = ah_manifest_load_data (tc->yaml, strlen (tc->yaml), "inline.yaml", NULL, &error);
  g_assert_null (manifest);
  assert_one_line_error (error, tc->code, "inline.yaml:");
  g_assert_cmpstr (error->message, ==, expected);
}

static void
test_manifest_load_data_display_name (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  g_autoptr(AhManifest) good = NULL;

  g_test_summary ("load_data names the input <data> in messages when given no display name, "
                  "and does not need NUL-terminated input");

  manifest = ah_manifest_load_data ("name: demo\n", strlen ("name: demo\n"), NULL, NULL, &error);
  g_assert_null (manifest);
  g_assert_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_MISSING_KEY);
  g_assert_cmpstr (error->message, ==, "<data>:1:1: error: missing required key 'agents'");
  g_clear_error (&error);

  /* Only the first line of this string is the input. */
  good = ah_manifest_load_data (AGENT_ECHO "name: twice\n", strlen (AGENT_ECHO), "x.yaml", NULL, &error);
  g_assert_no_error (error);
  g_assert_cmpstr (ah_manifest_get_name (good), ==, "demo");
  g_assert_cmpstr (ah_manifest_get_path (good), ==, "x.yaml");
}

static void
test_manifest_load_long_text_in_message (void)
{
  g_autofree char *key = g_strnfill (1000, 'k');
  g_autofree char *yaml = g_strdup_printf ("%s: 1\n", key);
  g_autofree char *shown = g_strnfill (80, 'k');
  g_autofree char *expected = g_strdup_printf ("inline.yaml:1:1: error: unknown key '%s...' (expected name, "
                                               "description, plugin_path, stop_when_idle, "
                                               "run_timeout_ms, watch, watch_debounce_ms, bus, "
                                               "offload, agents)", shown);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;

  g_test_summary ("Long names from the input are cut in messages");

  manifest = ah_manifest_load_data (yaml, strlen (yaml), "inline.yaml", NULL, &error);
  g_assert_null (manifest);
  g_assert_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_UNKNOWN_KEY);
  g_assert_cmpstr (error->message, ==, expected);
}

static void
test_manifest_load_long_subject (void)
{
  g_autofree char *subject = g_strnfill (256, 's');
  g_autofree char *yaml = g_strdup_printf (AGENT_ECHO "    subscribe: [%s]\n", subject);
  g_autofree char *ok_yaml = g_strdup_printf (AGENT_ECHO "    subscribe: [%.255s]\n", subject);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  g_autoptr(AhManifest) ok = NULL;

  g_test_summary ("A 255-byte subject pattern is valid, a 256-byte one is not");

  ok = ah_manifest_load_data (ok_yaml, strlen (ok_yaml), "inline.yaml", NULL, &error);
  g_assert_no_error (error);
  g_assert_nonnull (ok);

  manifest = ah_manifest_load_data (yaml, strlen (yaml), "inline.yaml", NULL, &error);
  g_assert_null (manifest);
  g_assert_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_INVALID_VALUE);
  g_assert_true (g_str_has_suffix (error->message, "...': longer than 255 bytes"));
}

static void
test_manifest_subject_agrees_with_bus (void)
{
  static const char * const patterns[] = {
    "a", "a.b", "*", ">", "a.*", "a.>", "*.*.>", "$SYS.host.started", "~!@#%^&()[]{}",
    "a..b", ".a", "a.", "", "a.>.b", ">.a", "foo*", "*a", "a.b>", "a.**", "a b", "a\tb",
    "a\x7f", "caf\xc3\xa9",
  };
  g_autofree char *longest = g_strnfill (255, 'x');
  g_autofree char *too_long = g_strnfill (256, 'x');
  g_autoptr(GPtrArray) all = g_ptr_array_new ();

  g_test_summary ("The manifest accepts exactly the subject patterns the bus accepts");

  for (guint i = 0; i < G_N_ELEMENTS (patterns); i++)
    g_ptr_array_add (all, (gpointer) patterns[i]);
  g_ptr_array_add (all, longest);
  g_ptr_array_add (all, too_long);

  for (guint i = 0; i < all->len; i++)
    {
      const char *pattern = g_ptr_array_index (all, i);
      g_autoptr(GString) yaml = g_string_new (AGENT_ECHO "    subscribe: [{subject: \"");
      g_autoptr(GError) error = NULL;
      g_autoptr(AhManifest) manifest = NULL;

      /* Double-quoted with \x escapes, so any byte reaches the parser. */
      for (const char *p = pattern; *p != '\0'; p++)
        {
          if (*p == '"' || *p == '\\' || (guchar) *p < 0x20 || (guchar) *p == 0x7F)
            g_string_append_printf (yaml, "\\x%02X", (guchar) *p);
          else
            g_string_append_c (yaml, *p);
        }
      g_string_append (yaml, "\"}]\n");

      manifest = ah_manifest_load_data (yaml->str, yaml->len, "inline.yaml", NULL, &error);
      g_test_message ("pattern \"%s\": bus %d, manifest %d", pattern,
                      ah_pattern_is_valid (pattern), manifest != NULL);
      g_assert_cmpint (manifest != NULL, ==, ah_pattern_is_valid (pattern));
      if (manifest == NULL)
        g_assert_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_INVALID_VALUE);
      else
        g_assert_cmpstr (((AhManifestSubscription *)
                          g_ptr_array_index (ah_manifest_get_type (manifest, 0)->subscriptions, 0))->pattern,
                         ==, pattern);
    }
}

/* ---- Hostile input --------------------------------------------------- */

typedef struct {
  const char       *name;
  char *          (*generate) (gsize *ret_size);
  AhManifestError   code;
  const char       *pattern;   /* g_pattern_match_simple() on the message */
} HostileCase;

static char *
generate_billion_laughs (gsize *ret_size)
{
  GString *yaml = g_string_new ("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");

  for (char level = 'b'; level <= 'i'; level++)
    {
      g_string_append_printf (yaml, "%c: &%c [", level, level);
      for (guint i = 0; i < 9; i++)
        g_string_append_printf (yaml, "%s*%c", i > 0 ? "," : "", level - 1);
      g_string_append (yaml, "]\n");
    }
  *ret_size = yaml->len;
  return g_string_free (yaml, FALSE);
}

static char *
generate_aliases_only (gsize *ret_size)
{
  GString *yaml = g_string_new ("name: [");

  for (guint i = 0; i < 100000; i++)
    g_string_append (yaml, "*a,");
  g_string_append (yaml, "]\n");
  *ret_size = yaml->len;
  return g_string_free (yaml, FALSE);
}

static char *
generate_nested_flow (gsize *ret_size)
{
  *ret_size = 100000;
  return g_strnfill (100000, '[');
}

static char *
generate_nested_block (gsize *ret_size)
{
  GString *yaml = g_string_new (NULL);

  for (guint i = 0; i < 100000; i++)
    g_string_append (yaml, "- ");
  g_string_append (yaml, "x\n");
  *ret_size = yaml->len;
  return g_string_free (yaml, FALSE);
}

static char *
generate_long_scalar (gsize *ret_size)
{
  GString *yaml = g_string_new ("name: demo\ndescription: ");

  for (guint i = 0; i < 100 * 1024; i++)
    g_string_append_c (yaml, 'x');
  g_string_append (yaml, "\nagents: {echo: {plugin: echo}}\n");
  *ret_size = yaml->len;
  return g_string_free (yaml, FALSE);
}

static char *
generate_many_keys (gsize *ret_size)
{
  GString *yaml = g_string_new (NULL);

  for (guint i = 0; i < 10000; i++)
    g_string_append_printf (yaml, "k%u: %u\n", i, i);
  *ret_size = yaml->len;
  return g_string_free (yaml, FALSE);
}

static char *
generate_many_items (gsize *ret_size)
{
  GString *yaml = g_string_new ("name: [");

  for (guint i = 0; i < 10000; i++)
    g_string_append (yaml, "x,");
  g_string_append (yaml, "]\n");
  *ret_size = yaml->len;
  return g_string_free (yaml, FALSE);
}

/* Within every other cap (256 x 256 items, depth 3), but over the
 * event cap. */
static char *
generate_many_events (gsize *ret_size)
{
  GString *yaml = g_string_new (AGENT_ECHO "    config:\n");

  for (guint key = 0; key < 2; key++)
    {
      g_string_append_printf (yaml, "      k%u: [", key);
      for (guint i = 0; i < 256; i++)
        {
          g_string_append (yaml, "[");
          for (guint j = 0; j < 256; j++)
            g_string_append (yaml, "1,");
          g_string_append (yaml, "],");
        }
      g_string_append (yaml, "]\n");
    }
  *ret_size = yaml->len;
  return g_string_free (yaml, FALSE);
}

static char *
generate_garbage (gsize *ret_size)
{
  g_autoptr(GRand) rand = g_rand_new_with_seed (20261127);
  char *data = g_malloc (AH_MANIFEST_MAX_FILE_SIZE);

  for (gsize i = 0; i < AH_MANIFEST_MAX_FILE_SIZE; i++)
    data[i] = (char) g_rand_int_range (rand, 0, 256);
  *ret_size = AH_MANIFEST_MAX_FILE_SIZE;
  return data;
}

/* Printable garbage gets past the UTF-8 reader into the scanner. */
static char *
generate_printable_garbage (gsize *ret_size)
{
  static const char alphabet[] = "abc:-[]{},&*!|>'\"#%@` \n\t?";
  g_autoptr(GRand) rand = g_rand_new_with_seed (42);
  char *data = g_malloc (AH_MANIFEST_MAX_FILE_SIZE);

  for (gsize i = 0; i < AH_MANIFEST_MAX_FILE_SIZE; i++)
    data[i] = alphabet[g_rand_int_range (rand, 0, sizeof alphabet - 1)];
  *ret_size = AH_MANIFEST_MAX_FILE_SIZE;
  return data;
}

/* One long line of flow nesting right at the depth cap, repeated: the
 * scanner's simple-key lookahead must stay bounded. */
static char *
generate_wide_flow (gsize *ret_size)
{
  GString *yaml = g_string_new ("name: [");

  while (yaml->len < AH_MANIFEST_MAX_FILE_SIZE - 64)
    g_string_append (yaml, "{a: b}, ");
  g_string_append (yaml, "]\n");
  *ret_size = yaml->len;
  return g_string_free (yaml, FALSE);
}

static const HostileCase hostile_cases[] = {
  { "billion-laughs", generate_billion_laughs, AH_MANIFEST_ERROR_UNSUPPORTED,
    "inline.yaml:1:4: error: anchors are not allowed" },
  { "aliases", generate_aliases_only, AH_MANIFEST_ERROR_UNSUPPORTED,
    "inline.yaml:1:8: error: aliases are not allowed" },
  { "nested-flow", generate_nested_flow, AH_MANIFEST_ERROR_LIMIT,
    "inline.yaml:1:17: error: nesting deeper than 16 levels" },
  { "nested-block", generate_nested_block, AH_MANIFEST_ERROR_LIMIT,
    "inline.yaml:1:33: error: nesting deeper than 16 levels" },
  { "long-scalar", generate_long_scalar, AH_MANIFEST_ERROR_LIMIT,
    "inline.yaml:2:14: error: scalar longer than 4096 bytes" },
  { "many-keys", generate_many_keys, AH_MANIFEST_ERROR_LIMIT,
    "inline.yaml:257:1: error: more than 256 keys in one mapping" },
  { "many-items", generate_many_items, AH_MANIFEST_ERROR_LIMIT,
    "inline.yaml:1:520: error: more than 256 items in one sequence" },
  { "many-events", generate_many_events, AH_MANIFEST_ERROR_LIMIT,
    "inline.yaml:*:*: error: manifest too complex: more than 100000 YAML events" },
  { "garbage", generate_garbage, AH_MANIFEST_ERROR_SYNTAX,
    "inline.yaml:*:*: error: *" },
  { "printable-garbage", generate_printable_garbage, AH_MANIFEST_ERROR_SYNTAX,
    "inline.yaml:*:*: error: *" },
  { "wide-flow", generate_wide_flow, AH_MANIFEST_ERROR_LIMIT,
    "inline.yaml:1:*: error: more than 256 items in one sequence" },
};

static void
test_manifest_hostile (gconstpointer data)
{
  const HostileCase *tc = data;
  gsize size = 0;
  g_autofree char *yaml = tc->generate (&size);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  gint64 start, elapsed;

  g_test_summary ("Hostile input fails with the right code, quickly and without leaking");

  start = g_get_monotonic_time ();
  manifest = ah_manifest_load_data (yaml, size, "inline.yaml", NULL, &error);
  elapsed = g_get_monotonic_time () - start;

  g_assert_null (manifest);
  assert_one_line_error (error, tc->code, "inline.yaml:");
  if (!g_pattern_match_simple (tc->pattern, error->message))
    g_error ("message \"%s\" does not match \"%s\"", error->message, tc->pattern);
  g_test_message ("refused in %" G_GINT64_FORMAT " us", elapsed);
  g_assert_cmpint (elapsed, <, HOSTILE_MAX_USEC);
}

static void
test_manifest_hostile_big_file (void)
{
  g_autofree char *dir = g_build_filename (g_get_user_cache_dir (), "manifests", NULL);
  g_autofree char *path = g_build_filename (dir, "big.yaml", NULL);
  g_autofree char *expected = g_strdup_printf ("%s:1:1: error: file larger than 1048576 bytes", path);
  g_autoptr(GString) yaml = g_string_new ("name: demo\nagents: {echo: {plugin: echo}}\n");
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = NULL;
  g_autoptr(AhManifest) from_data = NULL;
  gint64 start;

  g_test_summary ("A 2 MiB file is refused by size before parsing, from a file or from memory");

  while (yaml->len < 2 * 1024 * 1024)
    g_string_append (yaml, "# padding padding padding padding padding padding padding\n");
  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  g_file_set_contents (path, yaml->str, (gssize) yaml->len, &error);
  g_assert_no_error (error);

  start = g_get_monotonic_time ();
  manifest = ah_manifest_load (path, &error);
  g_assert_cmpint (g_get_monotonic_time () - start, <, HOSTILE_MAX_USEC);
  g_assert_null (manifest);
  assert_one_line_error (error, AH_MANIFEST_ERROR_IO, path);
  g_assert_cmpstr (error->message, ==, expected);
  g_clear_error (&error);

  from_data = ah_manifest_load_data (yaml->str, yaml->len, "inline.yaml", NULL, &error);
  g_assert_null (from_data);
  g_assert_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_IO);
  g_assert_cmpstr (error->message, ==, "inline.yaml:1:1: error: file larger than 1048576 bytes");
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);

  g_test_add_func ("/manifest/load/minimal", test_manifest_load_minimal);
  g_test_add_func ("/manifest/load/complete", test_manifest_load_complete);
  g_test_add_func ("/manifest/load/config", test_manifest_load_config);
  g_test_add_func ("/manifest/load/config-raw", test_manifest_load_config_raw);
  g_test_add_func ("/manifest/load/plugin-path", test_manifest_load_plugin_path);
  g_test_add_func ("/manifest/load/plugin-path-string", test_manifest_load_plugin_path_string);
  g_test_add_func ("/manifest/load/booleans", test_manifest_load_booleans);
  g_test_add_func ("/manifest/load/type-fields/per-type", test_manifest_load_type_fields_per_type);
  for (guint i = 0; i < G_N_ELEMENTS (type_fields_cases); i++)
    {
      g_autofree char *test_path = g_strconcat ("/manifest/load/type-fields/", type_fields_cases[i].name, NULL);

      g_test_add_data_func (test_path, &type_fields_cases[i], test_manifest_load_type_fields);
    }
  g_test_add_func ("/manifest/load/watch", test_manifest_load_watch);
  g_test_add_func ("/manifest/load/limits-exact", test_manifest_load_limits_exact);
  g_test_add_func ("/manifest/load/max-types", test_manifest_load_max_types);
  g_test_add_func ("/manifest/load/default", test_manifest_load_default);
  g_test_add_func ("/manifest/load/docs-example", test_manifest_load_docs_example);
  g_test_add_func ("/manifest/load/missing-file", test_manifest_load_missing_file);
  g_test_add_func ("/manifest/load/not-regular", test_manifest_load_not_regular);
  g_test_add_func ("/manifest/load/data-display-name", test_manifest_load_data_display_name);
  g_test_add_func ("/manifest/load/long-text-in-message", test_manifest_load_long_text_in_message);
  g_test_add_func ("/manifest/load/long-subject", test_manifest_load_long_subject);
  g_test_add_func ("/manifest/subject/agrees-with-bus", test_manifest_subject_agrees_with_bus);
  g_test_add_func ("/manifest/find/type", test_manifest_find);
  g_test_add_func ("/manifest/find/out-of-range", test_manifest_get_type_out_of_range);

  for (guint i = 0; i < G_N_ELEMENTS (invalid_manifests); i++)
    {
      g_autofree char *test_path = g_strconcat ("/manifest/load/invalid/", invalid_manifests[i].name, NULL);

      g_test_add_data_func (test_path, &invalid_manifests[i], test_manifest_load_invalid);
    }
  for (guint i = 0; i < G_N_ELEMENTS (inline_cases); i++)
    {
      g_autofree char *test_path = g_strconcat ("/manifest/load/inline/", inline_cases[i].name, NULL);

      g_test_add_data_func (test_path, &inline_cases[i], test_manifest_load_inline);
    }
  for (guint i = 0; i < G_N_ELEMENTS (hostile_cases); i++)
    {
      g_autofree char *test_path = g_strconcat ("/manifest/hostile/", hostile_cases[i].name, NULL);

      g_test_add_data_func (test_path, &hostile_cases[i], test_manifest_hostile);
    }
  g_test_add_func ("/manifest/hostile/big-file", test_manifest_hostile_big_file);

  return g_test_run ();
}
