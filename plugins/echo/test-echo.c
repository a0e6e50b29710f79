/* SPDX-License-Identifier: MIT */
/* The echo plugin in a real host, on the test harness plugin authors use
 * (<agenthost/ah-testing.h>): replies, republishing on reply_subject, the
 * loop guard, its config checks and manifests/echo.yaml (found from
 * G_TEST_SRCDIR, which tests/meson.build sets to the tests/ source
 * directory). The plugin is found through AGENTHOST_PLUGIN_PATH. */
#include <agenthost/agenthost.h>

#include <string.h>

#define REQUEST_TIMEOUT_MS 2000

static void
assert_bytes_equal (GBytes       *bytes,
                    gconstpointer data,
                    gsize         size)
{
  gsize got_size;
  gconstpointer got = g_bytes_get_data (bytes, &got_size);

  g_assert_cmpmem (got, got_size, data, size);
}

static void
test_request_reply (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new (
    "name: echo-request\n"
    "agents:\n"
    "  echo: {plugin: echo, pool_size: 2, subscribe: [echo.in]}\n", NULL, &error);
  const char binary[] = { 'a', '\0', 'b', '\n', '\xff' };
  g_autoptr(GBytes) reply = NULL;
  g_autoptr(GBytes) empty = NULL;
  g_autoptr(GBytes) raw = NULL;
  g_autoptr(GPtrArray) replies = NULL;

  g_test_summary ("A request is answered with its own payload, bytes as they are");
  g_assert_no_error (error);

  reply = ah_test_host_request (t, "echo.in", "ping", 4, REQUEST_TIMEOUT_MS, &error);
  g_assert_no_error (error);
  assert_bytes_equal (reply, "ping", 4);
  empty = ah_test_host_request (t, "echo.in", "", 0, REQUEST_TIMEOUT_MS, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (g_bytes_get_size (empty), ==, 0);
  raw = ah_test_host_request (t, "echo.in", binary, sizeof (binary), REQUEST_TIMEOUT_MS, &error);
  g_assert_no_error (error);
  assert_bytes_equal (raw, binary, sizeof (binary));

  /* Replies only: a request is never echoed on the reply subject. */
  ah_test_host_run_until_idle (t);
  replies = ah_test_host_get_messages (t, AH_TEST_CAPTURE_REPLIES, "echo.in");
  g_assert_cmpuint (replies->len, ==, 3);
  assert_bytes_equal (((AhTestMessage *) g_ptr_array_index (replies, 2))->data,
                      binary, sizeof (binary));
  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, NULL), ==, 0);
}

static void
test_publish_reply_subject (void)
{
  const char *config[] = { "reply_subject=custom.out", NULL };
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new_for_plugin ("echo", "echo.in, other.in", config,
                                                         &error);
  g_autoptr(GPtrArray) published = NULL;
  const char *texts[] = { "one", "two", "three" };

  g_test_summary ("Published messages come back on reply_subject, in order");
  g_assert_no_error (error);

  for (guint i = 0; i < G_N_ELEMENTS (texts); i++)
    ah_test_host_publish_string (t, i == 1 ? "other.in" : "echo.in", texts[i]);
  ah_test_host_run_until_idle (t);

  published = ah_test_host_get_messages (t, AH_TEST_CAPTURE_PUBLISHED, NULL);
  g_assert_cmpuint (published->len, ==, G_N_ELEMENTS (texts));
  for (guint i = 0; i < G_N_ELEMENTS (texts); i++)
    {
      const AhTestMessage *echoed = g_ptr_array_index (published, i);

      g_assert_cmpstr (echoed->subject, ==, "custom.out");
      assert_bytes_equal (echoed->data, texts[i], strlen (texts[i]));
    }
}

static void
test_publish_loop_guard (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new_for_plugin ("echo", "echo.>", NULL, &error);
  g_autoptr(GPtrArray) dead = NULL;
  const AhTestMessage *refused;
  AhHostStats before, after;

  g_test_summary ("An echo that hears its own reply subject refuses the message, "
                  "instead of echoing it forever");
  g_assert_no_error (error);
  ah_test_host_get_stats (t, &before);

  /* echo.in -> echo.out (delivered back to the echo, which refuses it). */
  ah_test_host_publish_string (t, "echo.in", "x");
  ah_test_host_run_until_idle (t);
  ah_test_host_get_stats (t, &after);
  g_assert_cmpuint (after.delivered - before.delivered, ==, 1);
  g_assert_cmpuint (after.failed - before.failed, ==, 1);

  g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, "echo.out"), ==, 1);
  dead = ah_test_host_get_messages (t, AH_TEST_CAPTURE_DEAD_LETTERS, NULL);
  g_assert_cmpuint (dead->len, ==, 1);
  refused = g_ptr_array_index (dead, 0);
  g_assert_cmpstr (refused->subject, ==, "echo.out");
  g_assert_cmpstr (refused->reason, ==, "handler-failed");
}

typedef struct {
  const char *name;
  const char *value;   /* the config value, as the plugin reads it */
} BadSubject;

static const BadSubject bad_subjects[] = {
  { "empty-token", "a..b" },
  { "leading-dot", ".a" },
  { "trailing-dot", "a." },
  { "star", "a.*" },
  { "tail", "a.>" },
  { "space", "a b" },
  { "empty", "" },
};

static void
test_config_invalid (gconstpointer data)
{
  const BadSubject *tc = data;
  g_autofree char *entry = g_strconcat ("reply_subject=", tc->value, NULL);
  const char *config[] = { entry, NULL };
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) t = ah_test_host_new_for_plugin ("echo", NULL, config, &error);

  g_test_summary ("A reply_subject that is not a publishable subject stops the start");

  g_assert_null (t);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_PREWARM);
  g_assert_nonnull (strstr (error->message, "init failed: config 'reply_subject': '"));
  g_assert_true (g_str_has_suffix (error->message, "' is not a subject (dot-separated "
                                   "tokens, no wildcards, at most 255 bytes)"));
}

static AhTestHost *
echo_new_with_subject_length (gsize    length,
                              GError **error)
{
  g_autoptr(GString) entry = g_string_new ("reply_subject=");
  const char *config[] = { NULL, NULL };

  /* "a.a.a...": as many tokens as fit. */
  for (gsize i = 0; i < length; i++)
    g_string_append_c (entry, i % 2 == 0 ? 'a' : '.');
  config[0] = entry->str;
  return ah_test_host_new_for_plugin ("echo", NULL, config, error);
}

static void
test_config_length (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhTestHost) longest = NULL;
  g_autoptr(AhTestHost) too_long = NULL;

  g_test_summary ("A reply_subject of 255 bytes is accepted, one of 257 refused");

  longest = echo_new_with_subject_length (255, &error);
  g_assert_no_error (error);
  g_assert_nonnull (longest);
  too_long = echo_new_with_subject_length (257, &error);
  g_assert_null (too_long);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_PREWARM);
  g_assert_true (g_str_has_suffix (error->message, "at most 255 bytes)"));
}

static void
test_manifest_shipped (void)
{
  g_autofree char *path = g_test_build_filename (G_TEST_DIST, "..", "manifests", "echo.yaml",
                                                NULL);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhManifest) manifest = ah_manifest_load (path, &error);
  g_autoptr(AhTestHost) t = NULL;
  g_autoptr(GBytes) reply = NULL;
  g_autoptr(GPtrArray) echoed = NULL;

  g_test_summary ("manifests/echo.yaml loads, checks and echoes echo.in to echo.out");
  g_assert_no_error (error);
  g_assert_cmpstr (ah_manifest_get_name (manifest), ==, "echo");
  g_assert_true (ah_manifest_check_plugins (manifest, &error));
  g_assert_no_error (error);

  t = ah_test_host_new_for_manifest (path, &error);
  g_assert_no_error (error);
  reply = ah_test_host_request (t, "echo.in", "hi", 2, REQUEST_TIMEOUT_MS, &error);
  g_assert_no_error (error);
  assert_bytes_equal (reply, "hi", 2);
  ah_test_host_publish_string (t, "echo.in", "there");
  ah_test_host_run_until_idle (t);

  echoed = ah_test_host_get_messages (t, AH_TEST_CAPTURE_PUBLISHED, "echo.out");
  g_assert_cmpuint (echoed->len, ==, 1);
  assert_bytes_equal (((AhTestMessage *) g_ptr_array_index (echoed, 0))->data, "there", 5);
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/echo/request/reply", test_request_reply);
  g_test_add_func ("/echo/publish/reply-subject", test_publish_reply_subject);
  g_test_add_func ("/echo/publish/loop-guard", test_publish_loop_guard);
  for (guint i = 0; i < G_N_ELEMENTS (bad_subjects); i++)
    {
      g_autofree char *path = g_strdup_printf ("/echo/config/invalid/%s", bad_subjects[i].name);

      g_test_add_data_func (path, &bad_subjects[i], test_config_invalid);
    }
  g_test_add_func ("/echo/config/length", test_config_length);
  g_test_add_func ("/echo/manifest/shipped", test_manifest_shipped);

  return g_test_run ();
}
