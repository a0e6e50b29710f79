/* SPDX-License-Identifier: MIT */
/* The test harness (<agenthost/ah-testing.h>) through the public API and
 * the shared library, as a plugin author uses it: the shipped echo
 * plugin found through AGENTHOST_PLUGIN_PATH, the test plugins (counter,
 * flaky) from G_TEST_BUILDDIR/plugins. */
#include <agenthost/agenthost.h>

#include <glib/gstdio.h>
#include <string.h>

#define REQUEST_TIMEOUT_MS 5000

static char *
test_plugin_path (const char *name)
{
  g_autofree char *file = g_strconcat (name, ".so", NULL);

  return g_test_build_filename (G_TEST_BUILT, "plugins", file, NULL);
}

static AhTestHost *
echo_host_new (const char * const *config)
{
  g_autoptr(GError) error = NULL;
  AhTestHost *t = ah_test_host_new_for_plugin ("echo", "echo.in", config, &error);

  g_assert_no_error (error);
  g_assert_nonnull (t);
  return t;
}

static AhAgentId
only_agent (AhTestHost *t,
            const char *type_name)
{
  g_autoptr(GArray) agents = ah_test_host_get_agents (t, type_name);

  g_assert_cmpuint (agents->len, ==, 1);
  return g_array_index (agents, AhAgentId, 0);
}

static void
assert_payload (const AhTestMessage *record,
                const char          *text)
{
  gsize size;
  gconstpointer data = g_bytes_get_data (record->data, &size);

  g_assert_cmpmem (data, size, text, strlen (text));
}

/* ---- new_for_plugin -------------------------------------------------------- */

static void
test_plugin_publish (void)
{
  g_autoptr(AhTestHost) t = echo_host_new (NULL);
  g_autoptr(GPtrArray) published = NULL;
  g_autoptr(GPtrArray) dead = NULL;
  g_autofree char *text = NULL;
  const AhTestMessage *record;
  AhAgentId echo = only_agent (t, "echo");

  g_test_summary ("One plugin, one agent: what it publishes is recorded with its sender; "
                  "the test's own publish is not");

  ah_test_host_publish_string (t, "echo.in", "hi");
  ah_test_host_publish_string (t, "echo.in", "there");
  ah_test_host_run_until_idle (t);

  published = ah_test_host_get_messages (t, AH_TEST_CAPTURE_PUBLISHED, NULL);
  g_assert_cmpuint (published->len, ==, 2);
  record = g_ptr_array_index (published, 0);
  g_assert_cmpstr (record->subject, ==, "echo.out");
  assert_payload (record, "hi");
  g_assert_cmpint (record->kind, ==, AH_MESSAGE_PUBLISH);
  g_assert_cmpuint (record->sender, ==, echo);
  g_assert_cmpuint (record->recipient, ==, AH_AGENT_ID_NONE);
  g_assert_cmpuint (record->correlation, ==, 0);
  g_assert_null (record->reason);
  assert_payload (g_ptr_array_index (published, 1), "there");

  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, "echo.out"), ==, 2);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, "echo.in"), ==, 0);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_REPLIES, NULL), ==, 0);
  /* Nobody subscribes to echo.out here: each echo is a dead letter, as
   * in a real system. "$SYS.host.started", which reached nobody either,
   * is an announcement and not recorded. */
  dead = ah_test_host_get_messages (t, AH_TEST_CAPTURE_DEAD_LETTERS, NULL);
  g_assert_cmpuint (dead->len, ==, 2);
  for (guint i = 0; i < dead->len; i++)
    {
      record = g_ptr_array_index (dead, i);
      g_assert_cmpstr (record->subject, ==, "echo.out");
      g_assert_cmpstr (record->reason, ==, "no-route");
      g_assert_cmpuint (record->sender, ==, echo);
    }
  text = ah_test_host_last_text (t, AH_TEST_CAPTURE_PUBLISHED, "echo.*");
  g_assert_cmpstr (text, ==, "there");
}

static void
test_plugin_send (void)
{
  g_autoptr(AhTestHost) t = echo_host_new (NULL);
  g_autofree char *text = NULL;

  g_test_summary ("A message sent to the agent's id reaches it like a publish");

  ah_test_host_send (t, only_agent (t, "echo"), "direct.in", "to you", 6);
  ah_test_host_run_until_idle (t);
  text = ah_test_host_last_text (t, AH_TEST_CAPTURE_PUBLISHED, "echo.out");
  g_assert_cmpstr (text, ==, "to you");
}

static void
test_plugin_config (void)
{
  /* The characters YAML has to escape that a subject may hold. */
  const char *subject = "quo\"te.back\\slash.x";
  g_autofree char *entry = g_strconcat ("reply_subject=", subject, NULL);
  const char *config[] = { entry, NULL };
  g_autoptr(AhTestHost) t = echo_host_new (config);
  g_autoptr(GPtrArray) published = NULL;

  g_test_summary ("Config reaches the plugin as given, whatever characters it holds");

  ah_test_host_publish_string (t, "echo.in", "x");
  ah_test_host_run_until_idle (t);
  published = ah_test_host_get_messages (t, AH_TEST_CAPTURE_PUBLISHED, NULL);
  g_assert_cmpuint (published->len, ==, 1);
  g_assert_cmpstr (((AhTestMessage *) g_ptr_array_index (published, 0))->subject, ==, subject);
}

static void
test_plugin_config_refused (void)
{
  /* A tab, a newline and UTF-8: no subject, but they must reach the
   * plugin intact for it to say so. */
  const char *config[] = { "reply_subject=a\tb\nc\xc3\xa9", NULL };
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new_for_plugin ("echo", "echo.in", config, &error);

  g_test_summary ("A config the plugin's init refuses is the host's pre-warm error, "
                  "the value as given");

  g_assert_null (t);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_PREWARM);
  g_assert_nonnull (strstr (error->message, "init failed: config 'reply_subject': "
                                            "'a\\tb\\nc\\303\\251' is not a subject"));
}

typedef struct {
  const char *name;
  const char *plugin;
  const char *subscriptions;
  const char *config[3];
  gboolean    plugin_error;   /* AH_PLUGIN_ERROR, else AH_HOST_ERROR */
  gint        code;
  const char *message;        /* a g_pattern_match_simple() glob */
} BadPluginHost;

static void
test_plugin_invalid (gconstpointer data)
{
  const BadPluginHost *tc = data;
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new_for_plugin (tc->plugin, tc->subscriptions,
                                                         tc->config, &error);

  g_test_summary ("Bad arguments to ah_test_host_new_for_plugin() are exact errors");

  g_assert_null (t);
  g_assert_error (error, (tc->plugin_error ? AH_PLUGIN_ERROR : AH_HOST_ERROR), tc->code);
  if (!g_pattern_match_simple (tc->message, error->message))
    g_error ("expected a message matching \"%s\", got \"%s\"", tc->message, error->message);
}

static const BadPluginHost bad_plugin_hosts[] = {
  { "pattern", "echo", "echo.in, a..b", { NULL }, FALSE, AH_HOST_ERROR_SUBJECT,
    "subscriptions: 'a..b' is not a valid subject pattern" },
  { "pattern-space", "echo", "echo in", { NULL }, FALSE, AH_HOST_ERROR_SUBJECT,
    "subscriptions: 'echo in' is not a valid subject pattern" },
  { "config-no-equals", "echo", "echo.in", { "reply_subject", NULL }, FALSE, AH_HOST_ERROR_FAILED,
    "config entry 0 ('reply_subject') is not KEY=VALUE with a non-empty KEY" },
  { "config-empty-key", "echo", "echo.in", { "a=1", "=x", NULL }, FALSE, AH_HOST_ERROR_FAILED,
    "config entry 1 ('=x') is not KEY=VALUE with a non-empty KEY" },
  { "config-not-utf8", "echo", "echo.in", { "reply_subject=\xff", NULL }, FALSE,
    AH_HOST_ERROR_FAILED, "config entry 0 ('reply_subject=\\377') is not UTF-8" },
  { "plugin-missing", "no-such-plugin-anywhere", NULL, { NULL }, TRUE,
    AH_PLUGIN_ERROR_NOT_FOUND, "no-such-plugin-anywhere: plugin not found; tried *" },
  { "plugin-not-elf", "/dev/null", NULL, { NULL }, TRUE, AH_PLUGIN_ERROR_NOT_ELF,
    "/dev/null: not an ELF file (not a regular file)" },
};

/* ---- new, new_for_manifest ----------------------------------------------- */

static void
test_manifest_base_dir (void)
{
  g_autofree char *plugins = g_test_build_filename (G_TEST_BUILT, "plugins", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new (
    "name: pool\n"
    "agents:\n"
    "  counter:\n"
    "    plugin: counter\n"
    "    pool_size: 3\n"
    "    subscribe: [work, $SYS.host.started]\n", plugins, &error);
  g_autoptr(GArray) agents = NULL;
  g_autoptr(GPtrArray) started = NULL;
  g_autoptr(GPtrArray) counted = NULL;

  g_test_summary ("A manifest's bare plugin names are found in base_dir; the host is "
                  "returned started, $SYS.host.started already handled");
  g_assert_no_error (error);

  agents = ah_test_host_get_agents (t, "counter");
  g_assert_cmpuint (agents->len, ==, 3);
  for (guint i = 0; i < agents->len; i++)
    g_assert_cmpuint (g_array_index (agents, AhAgentId, i), !=, AH_AGENT_ID_NONE);

  /* One counter (a queue group) got the start signal and echoed it, with
   * no run_until_idle() here. */
  started = ah_test_host_get_messages (t, AH_TEST_CAPTURE_PUBLISHED, "counted.*");
  g_assert_cmpuint (started->len, ==, 1);

  ah_test_host_clear (t);
  for (guint i = 0; i < 30; i++)
    ah_test_host_publish_string (t, "work", "w");
  ah_test_host_run_until_idle (t);
  counted = ah_test_host_get_messages (t, AH_TEST_CAPTURE_PUBLISHED, "counted.>");
  g_assert_cmpuint (counted->len, ==, 30);
  for (guint i = 0; i < counted->len; i++)
    {
      const AhTestMessage *record = g_ptr_array_index (counted, i);
      g_autofree char *subject = NULL;
      gboolean from_pool = FALSE;

      /* counted.<index> comes from the agent at that index. */
      for (guint j = 0; j < agents->len; j++)
        if (record->sender == g_array_index (agents, AhAgentId, j))
          {
            subject = g_strdup_printf ("counted.%u", j);
            from_pool = TRUE;
          }
      g_assert_true (from_pool);
      g_assert_cmpstr (record->subject, ==, subject);
    }
}

static void
test_manifest_invalid (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) not_yaml = ah_test_host_new ("name: [", NULL, &error);
  g_autoptr(AhTestHost) no_plugin = NULL;

  g_test_summary ("A bad manifest or a missing plugin is the manifest's or host's error");

  g_assert_null (not_yaml);
  g_assert_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_SYNTAX);
  g_assert_true (g_str_has_prefix (error->message, "<test>:"));
  g_clear_error (&error);

  /* Not in base_dir, nor anywhere else. */
  no_plugin = ah_test_host_new ("name: t\nagents:\n  c: {plugin: counter-nowhere}\n",
                                g_get_user_data_dir (), &error);
  g_assert_null (no_plugin);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_PLUGIN);
  g_assert_true (g_str_has_prefix (error->message, "<test>:3:"));
}

static void
test_manifest_file (void)
{
  g_autofree char *dir = g_build_filename (g_get_user_data_dir (), "system", NULL);
  g_autofree char *path = g_build_filename (dir, "echo.yaml", NULL);
  g_autofree char *missing = g_build_filename (dir, "missing.yaml", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = NULL;
  g_autoptr(AhTestHost) none = NULL;
  g_autofree char *text = NULL;

  g_test_summary ("ah_test_host_new_for_manifest() runs a manifest file");

  g_assert_cmpint (g_mkdir_with_parents (dir, 0700), ==, 0);
  g_file_set_contents (path, "name: file\nagents:\n  e: {plugin: echo, subscribe: [in]}\n",
                       -1, &error);
  g_assert_no_error (error);

  t = ah_test_host_new_for_manifest (path, &error);
  g_assert_no_error (error);
  ah_test_host_publish_string (t, "in", "from a file");
  ah_test_host_run_until_idle (t);
  text = ah_test_host_last_text (t, AH_TEST_CAPTURE_PUBLISHED, "echo.out");
  g_assert_cmpstr (text, ==, "from a file");

  none = ah_test_host_new_for_manifest (missing, &error);
  g_assert_null (none);
  g_assert_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_IO);
}

/* ---- requests and replies ------------------------------------------------ */

static void
test_request_reply (void)
{
  g_autofree char *counter = test_plugin_path ("counter");
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new_for_plugin (counter, "count, work", NULL, &error);
  g_autoptr(GBytes) before = NULL;
  g_autoptr(GBytes) after = NULL;
  g_autoptr(GPtrArray) replies = NULL;
  const AhTestMessage *reply;
  AhAgentId agent;

  g_test_summary ("A request gets the agent's reply; the reply is recorded, the test's "
                  "request is not");
  g_assert_no_error (error);
  agent = only_agent (t, "counter");

  before = ah_test_host_request (t, "count", "", 0, REQUEST_TIMEOUT_MS, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (g_bytes_get_data (before, NULL), g_bytes_get_size (before), "0", 1);
  ah_test_host_publish_string (t, "work", "a");
  ah_test_host_publish_string (t, "work", "b");
  ah_test_host_run_until_idle (t);
  after = ah_test_host_request (t, "count", "", 0, REQUEST_TIMEOUT_MS, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (g_bytes_get_data (after, NULL), g_bytes_get_size (after), "2", 1);
  ah_test_host_run_until_idle (t);

  replies = ah_test_host_get_messages (t, AH_TEST_CAPTURE_REPLIES, NULL);
  g_assert_cmpuint (replies->len, ==, 2);
  reply = g_ptr_array_index (replies, 1);
  g_assert_cmpstr (reply->subject, ==, "count");
  g_assert_cmpint (reply->kind, ==, AH_MESSAGE_REPLY);
  g_assert_cmpuint (reply->sender, ==, agent);
  g_assert_cmpuint (reply->recipient, !=, AH_AGENT_ID_NONE);
  g_assert_cmpuint (reply->correlation, !=, 0);
  assert_payload (reply, "2");
  /* Only the counter's two publishes, not the harness's requests. */
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, NULL), ==, 2);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, "count"), ==, 0);
}

static void
test_call_start (void)
{
  g_autofree char *counter = test_plugin_path ("counter");
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new_for_plugin (counter, "started", NULL, &error);
  g_autoptr(GBytes) answer = NULL;
  g_autofree char *text = NULL;
  gint64 before_ns, after_ns, start_ns = 0, handler_now_ns = 0;

  g_test_summary ("ah_context_get_start_ns() is the host's start of the handler call: after "
                  "the request was made, before the handler's own first clock read");
  g_assert_no_error (error);

  before_ns = ah_monotonic_ns ();
  answer = ah_test_host_request (t, "started", "", 0, REQUEST_TIMEOUT_MS, &error);
  after_ns = ah_monotonic_ns ();
  g_assert_no_error (error);
  text = g_strndup (g_bytes_get_data (answer, NULL), g_bytes_get_size (answer));
  g_assert_cmpint (sscanf (text, "%" G_GINT64_FORMAT " %" G_GINT64_FORMAT,
                           &start_ns, &handler_now_ns), ==, 2);
  g_assert_cmpint (start_ns, >, 0);
  g_assert_cmpint (before_ns, <=, start_ns);
  g_assert_cmpint (start_ns, <=, handler_now_ns);
  g_assert_cmpint (handler_now_ns, <=, after_ns);
}

static void
test_request_failures (void)
{
  g_autofree char *counter = test_plugin_path ("counter");
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new_for_plugin (counter, "silent", NULL, &error);
  g_autoptr(GBytes) timed_out = NULL;
  g_autoptr(GBytes) nobody = NULL;
  g_autoptr(GBytes) invalid = NULL;

  g_test_summary ("A request nobody answers times out, one nobody hears has no "
                  "responders, an invalid subject is refused: each its error");
  g_assert_no_error (error);

  /* The counter counts a request on a subject other than "count" and
   * does not answer it. */
  timed_out = ah_test_host_request (t, "silent", "?", 1, 50, &error);
  g_assert_null (timed_out);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_TIMEOUT);
  g_assert_cmpstr (error->message, ==, "request on 'silent' got no reply within 50 ms");
  g_clear_error (&error);

  nobody = ah_test_host_request (t, "nobody.here", "?", 1, REQUEST_TIMEOUT_MS, &error);
  g_assert_null (nobody);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_NO_RESPONDERS);
  g_assert_cmpstr (error->message, ==, "request on 'nobody.here' had no responders");
  g_clear_error (&error);

  invalid = ah_test_host_request (t, "a..b", "?", 1, REQUEST_TIMEOUT_MS, &error);
  g_assert_null (invalid);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT);
  g_assert_cmpstr (error->message, ==, "'a..b' is not a valid subject");

  ah_test_host_run_until_idle (t);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, NULL), ==, 0);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_REPLIES, NULL), ==, 0);
}

/* ---- dead letters ------------------------------------------------------------ */

static const AhTestMessage *
only_dead_letter (AhTestHost *t,
                  const char *subject)
{
  g_autoptr(GPtrArray) dead = ah_test_host_get_messages (t, AH_TEST_CAPTURE_DEAD_LETTERS,
                                                         subject);

  g_assert_cmpuint (dead->len, ==, 1);
  /* Owned by the harness, valid past the array. */
  return g_ptr_array_index (dead, 0);
}

static void
test_dead_letters (void)
{
  g_autofree char *flaky = test_plugin_path ("flaky");
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new_for_plugin (flaky, "work", NULL, &error);
  const AhTestMessage *record;
  AhAgentId agent;
  AhHostStats stats;

  g_test_summary ("Dead letters are recorded with their reason, intended recipient "
                  "and payload");
  g_assert_no_error (error);
  agent = only_agent (t, "flaky");

  ah_test_host_publish_string (t, "nobody.listens", "lost");
  ah_test_host_send (t, 987654321, "direct", "nobody home", 11);
  /* Idle in between, so "fine" and "fail" are not one batch (which would
   * fail as a whole). */
  ah_test_host_publish_string (t, "work", "fine");
  ah_test_host_run_until_idle (t);
  ah_test_host_publish_string (t, "work", "fail");
  ah_test_host_run_until_idle (t);

  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_DEAD_LETTERS, NULL), ==, 3);
  record = only_dead_letter (t, "nobody.listens");
  g_assert_cmpstr (record->reason, ==, "no-route");
  g_assert_cmpuint (record->sender, ==, AH_AGENT_ID_NONE);
  g_assert_cmpuint (record->recipient, ==, AH_AGENT_ID_NONE);
  assert_payload (record, "lost");

  record = only_dead_letter (t, "direct");
  g_assert_cmpstr (record->reason, ==, "no-agent");
  g_assert_cmpint (record->kind, ==, AH_MESSAGE_DIRECT);
  g_assert_cmpuint (record->recipient, ==, 987654321);

  /* "fine" was delivered; "fail" made the handler fail. */
  record = only_dead_letter (t, "work");
  g_assert_cmpstr (record->reason, ==, "handler-failed");
  g_assert_cmpuint (record->recipient, ==, agent);
  assert_payload (record, "fail");

  /* "$SYS.host.started", which nobody heard, is an event: not counted. */
  ah_test_host_get_stats (t, &stats);
  g_assert_cmpuint (stats.dead_lettered, ==, 2);
  g_assert_cmpuint (stats.failed, ==, 1);
}

static void
test_dead_letters_late_reply (void)
{
  g_autofree char *plugins = g_test_build_filename (G_TEST_BUILT, "plugins", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = NULL;
  g_autoptr(GBytes) reply = NULL;

  g_test_summary ("A second reply to one request is dead-lettered as late-reply");

  /* Two flaky agents in broadcast both answer one request: the bus
   * delivers the first reply and dead-letters the second. */
  t = ah_test_host_new ("name: twice\n"
                        "agents:\n"
                        "  flaky:\n"
                        "    plugin: flaky\n"
                        "    pool_size: 2\n"
                        "    subscribe: [{subject: ask, delivery: broadcast}]\n",
                        plugins, &error);
  g_assert_no_error (error);

  reply = ah_test_host_request (t, "ask", "?", 1, REQUEST_TIMEOUT_MS, &error);
  g_assert_no_error (error);
  g_assert_cmpmem (g_bytes_get_data (reply, NULL), g_bytes_get_size (reply), "ok", 2);
  ah_test_host_run_until_idle (t);

  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_REPLIES, "ask"), ==, 2);
  g_assert_cmpstr (only_dead_letter (t, "ask")->reason, ==, "late-reply");
  g_assert_cmpint (only_dead_letter (t, "ask")->kind, ==, AH_MESSAGE_REPLY);
}

/* ---- inspecting ------------------------------------------------------------------ */

static void
test_clear (void)
{
  g_autoptr(AhTestHost) t = echo_host_new (NULL);
  AhHostStats before, after;
  g_autofree char *text = NULL;

  g_test_summary ("clear() forgets the records but not the counters");

  ah_test_host_publish_string (t, "echo.in", "one");
  ah_test_host_publish_string (t, "nowhere", "two");
  ah_test_host_run_until_idle (t);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, NULL), ==, 1);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_DEAD_LETTERS, NULL), ==, 2);
  ah_test_host_get_stats (t, &before);

  ah_test_host_clear (t);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, NULL), ==, 0);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_DEAD_LETTERS, NULL), ==, 0);
  g_assert_null (ah_test_host_last_text (t, AH_TEST_CAPTURE_PUBLISHED, NULL));
  ah_test_host_get_stats (t, &after);
  g_assert_cmpuint (after.published, ==, before.published);
  g_assert_cmpuint (after.delivered, ==, before.delivered);
  g_assert_cmpuint (after.dead_lettered, ==, before.dead_lettered);

  /* Recording goes on. */
  ah_test_host_publish_string (t, "echo.in", "three");
  ah_test_host_run_until_idle (t);
  text = ah_test_host_last_text (t, AH_TEST_CAPTURE_PUBLISHED, NULL);
  g_assert_cmpstr (text, ==, "three");
}

static void
test_patterns (void)
{
  g_autoptr(AhTestHost) t = echo_host_new (NULL);
  const char binary[] = { 'a', '\0', 'b' };
  g_autofree char *text = NULL;

  g_test_summary ("Records are matched with subscription wildcards; last_text keeps "
                  "every byte of a payload");

  ah_test_host_publish_string (t, "deep.er.subject", "1");
  ah_test_host_publish_string (t, "deep.other", "2");
  ah_test_host_publish (t, "echo.in", binary, sizeof binary);
  ah_test_host_run_until_idle (t);

  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_DEAD_LETTERS, "deep.*"), ==, 1);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_DEAD_LETTERS, "deep.>"), ==, 2);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_DEAD_LETTERS, "*.*.subject"), ==, 1);
  /* With the echo, which nobody hears. */
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_DEAD_LETTERS, ">"), ==, 3);
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_DEAD_LETTERS, "deep"), ==, 0);

  text = ah_test_host_last_text (t, AH_TEST_CAPTURE_PUBLISHED, "echo.out");
  g_assert_cmpmem (text, sizeof binary + 1, "a\0b", sizeof binary + 1);
}

static void
test_get_agents (void)
{
  g_autofree char *plugins = g_test_build_filename (G_TEST_BUILT, "plugins", NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new ("name: agents\n"
                                              "agents:\n"
                                              "  counter: {plugin: counter, pool_size: 3}\n"
                                              "  lazy: {plugin: counter, prewarm: false}\n",
                                              plugins, &error);
  g_autoptr(GArray) three = NULL;
  g_autoptr(GArray) two = NULL;
  g_autoptr(GArray) lazy = NULL;
  AhAgentId spawned;

  g_test_summary ("get_agents() lists the live agents of a type, as spawns and "
                  "terminations change them");
  g_assert_no_error (error);

  three = ah_test_host_get_agents (t, "counter");
  g_assert_cmpuint (three->len, ==, 3);
  g_assert_cmpuint (g_array_index (three, AhAgentId, 0), !=, g_array_index (three, AhAgentId, 1));
  g_assert_cmpuint (g_array_index (three, AhAgentId, 1), !=, g_array_index (three, AhAgentId, 2));
  lazy = ah_test_host_get_agents (t, "lazy");
  g_assert_cmpuint (lazy->len, ==, 0);

  g_assert_true (ah_host_terminate (ah_test_host_get_host (t),
                                    g_array_index (three, AhAgentId, 1), &error));
  g_assert_no_error (error);
  two = ah_test_host_get_agents (t, "counter");
  g_assert_cmpuint (two->len, ==, 2);
  g_assert_cmpuint (g_array_index (two, AhAgentId, 0), ==, g_array_index (three, AhAgentId, 0));
  g_assert_cmpuint (g_array_index (two, AhAgentId, 1), ==, g_array_index (three, AhAgentId, 2));

  spawned = ah_host_spawn (ah_test_host_get_host (t), "lazy", &error);
  g_assert_no_error (error);
  g_assert_cmpuint (only_agent (t, "lazy"), ==, spawned);
}

/* ---- failing the test ---------------------------------------------------------- */

/* Two echoes answering each other forever: never idle. */
static void
test_idle_watchdog (void)
{
  if (g_test_subprocess ())
    {
      g_autoptr(GError) error = NULL;
      g_autoptr(AhTestHost) t = ah_test_host_new (
        "name: ping-pong\n"
        "agents:\n"
        "  ping: {plugin: echo, subscribe: [a.x], config: {reply_subject: b.x}}\n"
        "  pong: {plugin: echo, subscribe: [b.x], config: {reply_subject: a.x}}\n",
        NULL, &error);

      g_assert_no_error (error);
      ah_test_host_set_idle_timeout (t, 200);
      ah_test_host_publish_string (t, "a.x", "ball");
      ah_test_host_run_until_idle (t);
      return;
    }

  g_test_summary ("A system that never goes idle fails the test after the watchdog, "
                  "with a message saying so");
  g_test_trap_subprocess (NULL, 20 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_failed ();
  g_test_trap_assert_stderr ("*ah_test_host_run_until_idle*the system did not go idle "
                             "within 200 ms: * messages in flight after * delivered*");
}

static void
test_fail_publish (void)
{
  if (g_test_subprocess ())
    {
      g_autoptr(AhTestHost) t = echo_host_new (NULL);

      ah_test_host_publish_string (t, "a..b", "x");
      return;
    }

  g_test_summary ("A publish the host refuses fails the test");
  g_test_trap_subprocess (NULL, 20 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_failed ();
  g_test_trap_assert_stderr ("*ah_test_host_publish*publish on 'a..b' failed: "
                             "'a..b' is not a valid subject*");
}

static void
test_fail_pattern (void)
{
  if (g_test_subprocess ())
    {
      g_autoptr(AhTestHost) t = echo_host_new (NULL);

      ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, "echo.>.x");
      return;
    }

  g_test_summary ("Inspecting with an invalid pattern fails the test");
  g_test_trap_subprocess (NULL, 20 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_failed ();
  g_test_trap_assert_stderr ("*'echo.>.x' is not a valid subject pattern*");
}

static void
test_fail_unknown_type (void)
{
  if (g_test_subprocess ())
    {
      g_autoptr(AhTestHost) t = echo_host_new (NULL);
      g_autoptr(GArray) agents = NULL;

      g_test_set_nonfatal_assertions ();
      agents = ah_test_host_get_agents (t, "ghost");
      g_assert_cmpuint (agents->len, ==, 0);
      return;
    }

  g_test_summary ("Asking for the agents of a type the host lacks fails the test; with "
                  "non-fatal assertions the test is marked failed and gets an empty array");
  g_test_trap_subprocess (NULL, 20 * G_USEC_PER_SEC, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_failed ();
  g_test_trap_assert_stderr ("*no agent type 'ghost' in this host*");
  g_test_trap_assert_stderr_unmatched ("*agents->len*");
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);

  g_test_add_func ("/testing/plugin/publish", test_plugin_publish);
  g_test_add_func ("/testing/plugin/send", test_plugin_send);
  g_test_add_func ("/testing/plugin/config", test_plugin_config);
  g_test_add_func ("/testing/plugin/config-refused", test_plugin_config_refused);
  for (guint i = 0; i < G_N_ELEMENTS (bad_plugin_hosts); i++)
    {
      g_autofree char *path = g_strdup_printf ("/testing/plugin/invalid/%s",
                                               bad_plugin_hosts[i].name);

      g_test_add_data_func (path, &bad_plugin_hosts[i], test_plugin_invalid);
    }
  g_test_add_func ("/testing/manifest/base-dir", test_manifest_base_dir);
  g_test_add_func ("/testing/manifest/invalid", test_manifest_invalid);
  g_test_add_func ("/testing/manifest/file", test_manifest_file);
  g_test_add_func ("/testing/request/call-start", test_call_start);
  g_test_add_func ("/testing/request/reply", test_request_reply);
  g_test_add_func ("/testing/request/failures", test_request_failures);
  g_test_add_func ("/testing/dead-letters/reasons", test_dead_letters);
  g_test_add_func ("/testing/dead-letters/late-reply", test_dead_letters_late_reply);
  g_test_add_func ("/testing/inspect/clear", test_clear);
  g_test_add_func ("/testing/inspect/patterns", test_patterns);
  g_test_add_func ("/testing/inspect/agents", test_get_agents);
  g_test_add_func ("/testing/fail/idle-watchdog", test_idle_watchdog);
  g_test_add_func ("/testing/fail/publish", test_fail_publish);
  g_test_add_func ("/testing/fail/pattern", test_fail_pattern);
  g_test_add_func ("/testing/fail/unknown-type", test_fail_unknown_type);

  return g_test_run ();
}
