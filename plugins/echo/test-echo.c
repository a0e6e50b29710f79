/* SPDX-License-Identifier: MIT */
/* The echo plugin in a real host, through the public API only: replies,
 * republishing on reply_subject, the loop guard, its config checks and
 * manifests/echo.yaml (found from G_TEST_SRCDIR, which tests/meson.build
 * sets to the tests/ source directory). */
#include <agenthost/agenthost.h>

#include <string.h>

typedef struct {
  GMutex     lock;
  GPtrArray *payloads;   /* (element-type GBytes) in arrival order */
} Observed;

static void
observed_add (const AhMessage *message,
              gpointer         user_data)
{
  Observed *observed = user_data;
  gsize size;
  gconstpointer data = ah_message_get_data (message, &size);

  g_mutex_lock (&observed->lock);
  g_ptr_array_add (observed->payloads, g_bytes_new (data, size));
  g_mutex_unlock (&observed->lock);
}

static AhHost *
host_start_from_yaml (const char *yaml,
                      GError    **error)
{
  g_autofree char *base_dir = g_get_current_dir ();
  g_autoptr(AhHost) host = NULL;
  AhManifest *manifest;

  manifest = ah_manifest_load_data (yaml, strlen (yaml), "echo-test.yaml", base_dir, error);
  if (manifest == NULL)
    return NULL;
  host = ah_host_new (manifest, error);
  if (host == NULL || !ah_host_start (host, error))
    return NULL;
  return g_steal_pointer (&host);
}

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
  g_autoptr(AhHost) host = host_start_from_yaml (
    "name: echo-request\n"
    "agents:\n"
    "  echo: {plugin: echo, pool_size: 2, subscribe: [echo.in]}\n", &error);
  const char binary[] = { 'a', '\0', 'b', '\n', '\xff' };
  g_autoptr(GBytes) reply = NULL;
  g_autoptr(GBytes) empty = NULL;
  g_autoptr(GBytes) raw = NULL;

  g_test_summary ("A request is answered with its own payload, bytes as they are");
  g_assert_no_error (error);

  reply = ah_host_request (host, "echo.in", "ping", 4, 2000, &error);
  g_assert_no_error (error);
  assert_bytes_equal (reply, "ping", 4);
  empty = ah_host_request (host, "echo.in", "", 0, 2000, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (g_bytes_get_size (empty), ==, 0);
  raw = ah_host_request (host, "echo.in", binary, sizeof (binary), 2000, &error);
  g_assert_no_error (error);
  assert_bytes_equal (raw, binary, sizeof (binary));
}

static void
test_publish_reply_subject (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhHost) host = host_start_from_yaml (
    "name: echo-publish\n"
    "agents:\n"
    "  echo:\n"
    "    plugin: echo\n"
    "    subscribe: [echo.in, other.in]\n"
    "    config: {reply_subject: custom.out}\n", &error);
  Observed observed = { .payloads = g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref) };
  const char *texts[] = { "one", "two", "three" };

  g_test_summary ("Published messages come back on reply_subject, in order");
  g_assert_no_error (error);
  g_mutex_init (&observed.lock);
  g_assert_cmpuint (ah_host_subscribe (host, "custom.out", observed_add, &observed, &error), >, 0);
  g_assert_no_error (error);

  for (guint i = 0; i < G_N_ELEMENTS (texts); i++)
    g_assert_true (ah_host_publish (host, i == 1 ? "other.in" : "echo.in",
                                    texts[i], strlen (texts[i]), &error));
  g_assert_true (ah_host_wait_idle (host, 10 * G_USEC_PER_SEC));
  /* Stopped before the checks: no callback can run during them. */
  g_clear_pointer (&host, ah_host_free);

  g_assert_cmpuint (observed.payloads->len, ==, G_N_ELEMENTS (texts));
  for (guint i = 0; i < G_N_ELEMENTS (texts); i++)
    assert_bytes_equal (g_ptr_array_index (observed.payloads, i), texts[i], strlen (texts[i]));
  g_ptr_array_unref (observed.payloads);
  g_mutex_clear (&observed.lock);
}

static void
test_publish_loop_guard (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhHost) host = host_start_from_yaml (
    "name: echo-loop\n"
    "agents:\n"
    "  echo: {plugin: echo, subscribe: [echo.>]}\n", &error);
  AhHostStats before, after;

  g_test_summary ("An echo that hears its own reply subject refuses the message, "
                  "instead of echoing it forever");
  g_assert_no_error (error);
  ah_host_get_stats (host, &before);

  /* echo.in -> echo.out (delivered back to the echo, which refuses it). */
  g_assert_true (ah_host_publish (host, "echo.in", "x", 1, &error));
  g_assert_true (ah_host_wait_idle (host, 10 * G_USEC_PER_SEC));
  ah_host_get_stats (host, &after);
  g_assert_cmpuint (after.delivered - before.delivered, ==, 1);
  g_assert_cmpuint (after.failed - before.failed, ==, 1);
}

typedef struct {
  const char *name;
  const char *value;   /* YAML, as written after "reply_subject: " */
} BadSubject;

static const BadSubject bad_subjects[] = {
  { "empty-token", "a..b" },
  { "leading-dot", ".a" },
  { "trailing-dot", "a." },
  { "star", "a.*" },
  { "tail", "a.>" },
  { "space", "'a b'" },
  { "empty", "''" },
};

static void
test_config_invalid (gconstpointer data)
{
  const BadSubject *tc = data;
  g_autofree char *yaml = g_strdup_printf ("name: echo-bad\n"
                                           "agents:\n"
                                           "  echo:\n"
                                           "    plugin: echo\n"
                                           "    config: {reply_subject: %s}\n", tc->value);
  g_autoptr(GError) error = NULL;
  g_autoptr(AhHost) host = host_start_from_yaml (yaml, &error);

  g_test_summary ("A reply_subject that is not a publishable subject stops the start");

  g_assert_null (host);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_PREWARM);
  g_assert_nonnull (strstr (error->message, "init failed: config 'reply_subject': '"));
  g_assert_true (g_str_has_suffix (error->message, "' is not a subject (dot-separated "
                                   "tokens, no wildcards, at most 255 bytes)"));
}

static AhHost *
host_start_with_subject_length (gsize    length,
                                GError **error)
{
  g_autoptr(GString) yaml = g_string_new ("name: echo-long\nagents:\n  echo:\n    plugin: echo\n"
                                          "    config: {reply_subject: ");

  /* "a.a.a...": as many tokens as fit. */
  for (gsize i = 0; i < length; i++)
    g_string_append_c (yaml, i % 2 == 0 ? 'a' : '.');
  g_string_append (yaml, "}\n");
  return host_start_from_yaml (yaml->str, error);
}

static void
test_config_length (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(AhHost) longest = NULL;
  g_autoptr(AhHost) too_long = NULL;

  g_test_summary ("A reply_subject of 255 bytes is accepted, one of 257 refused");

  longest = host_start_with_subject_length (255, &error);
  g_assert_no_error (error);
  g_assert_nonnull (longest);
  too_long = host_start_with_subject_length (257, &error);
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
  g_autoptr(AhHost) host = NULL;
  g_autoptr(GBytes) reply = NULL;
  Observed observed = { .payloads = g_ptr_array_new_with_free_func ((GDestroyNotify) g_bytes_unref) };

  g_test_summary ("manifests/echo.yaml loads, checks and echoes echo.in to echo.out");
  g_assert_no_error (error);
  g_assert_cmpstr (ah_manifest_get_name (manifest), ==, "echo");
  g_assert_true (ah_manifest_check_plugins (manifest, &error));
  g_assert_no_error (error);

  g_mutex_init (&observed.lock);
  host = ah_host_new (g_steal_pointer (&manifest), &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ah_host_subscribe (host, "echo.out", observed_add, &observed, &error), >, 0);
  g_assert_true (ah_host_start (host, &error));
  g_assert_no_error (error);

  reply = ah_host_request (host, "echo.in", "hi", 2, 2000, &error);
  g_assert_no_error (error);
  assert_bytes_equal (reply, "hi", 2);
  g_assert_true (ah_host_publish (host, "echo.in", "there", 5, &error));
  g_assert_true (ah_host_wait_idle (host, 10 * G_USEC_PER_SEC));
  g_clear_pointer (&host, ah_host_free);

  g_assert_cmpuint (observed.payloads->len, ==, 1);
  assert_bytes_equal (g_ptr_array_index (observed.payloads, 0), "there", 5);
  g_ptr_array_unref (observed.payloads);
  g_mutex_clear (&observed.lock);
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
