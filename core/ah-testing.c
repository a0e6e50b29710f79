/* The test harness: a host inside a GTest case, and a record of what
 * its agents did.
 *
 * Recording hooks the bus twice: its tap sees every publish, send,
 * request and reply once, on the thread that made it, before routing;
 * its dead-letter func sees every dead letter. Both run on bus workers
 * (or the test's thread), so the records live under one mutex. Both run
 * before the bus settles the message that caused them, so once the bus
 * reports idle every record of that traffic is in place: running until
 * idle and then reading the records needs no sleep.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-host-private.h"
#include "ah-loader-private.h"
#include "ah-manifest-private.h"

#include <string.h>

#define AH_TEST_DEFAULT_IDLE_TIMEOUT_MS 30000
#define AH_TEST_N_CAPTURES              (AH_TEST_CAPTURE_DEAD_LETTERS + 1)

struct _AhTestHost {
  AhHost     *host;
  AhBus      *bus;                 /* the host's */
  guint       idle_timeout_ms;

  GMutex      lock;
  /* (element-type AhTestMessage) (owned), oldest first; under @lock */
  GPtrArray  *captures[AH_TEST_N_CAPTURES];
  /* Ids of the endpoints the harness makes requests from: their
   * requests are the test's, not an agent's. Under @lock. */
  GHashTable *own_endpoints;
};

/* ---- failing the test ------------------------------------------------------ */

/* Fails the running test the way g_assert_*() does: aborts, or, under
 * g_test_set_nonfatal_assertions(), marks the test failed and returns. */
G_GNUC_PRINTF (2, 3)
static void
testing_fail (const char *func,
              const char *format,
              ...)
{
  g_autofree char *message = NULL;
  va_list args;

  va_start (args, format);
  message = g_strdup_vprintf (format, args);
  va_end (args);
  g_assertion_message (G_LOG_DOMAIN, __FILE__, __LINE__, func, message);
}

/* ---- records ---------------------------------------------------------------- */

static void
testing_message_free (gpointer data)
{
  AhTestMessage *record = data;

  g_free (record->subject);
  g_bytes_unref (record->data);
  g_free (record);
}

static AhTestMessage *
testing_message_new (const AhMessage *message,
                     AhAgentId        recipient,
                     const char      *reason)
{
  AhTestMessage *record = g_new0 (AhTestMessage, 1);
  gsize size;
  gconstpointer data = ah_message_get_data (message, &size);

  record->subject = g_strdup (ah_message_get_subject (message));
  record->data = g_bytes_new (data, size);
  record->kind = ah_message_get_kind (message);
  record->sender = ah_message_get_sender (message);
  record->recipient = recipient;
  record->correlation = ah_message_get_correlation (message);
  record->reason = reason;
  return record;
}

/* The bus tap: what agents published, sent, requested and replied. The
 * test's own injections have no sender; the harness's requests come
 * from its own endpoints. Timeouts, no-responders and offload results
 * are the host's answers, not something an agent said. */
static void
testing_on_tap (const AhMessage *message,
                AhAgentId        recipient,
                gpointer         user_data)
{
  AhTestHost *self = user_data;
  AhAgentId sender = ah_message_get_sender (message);
  AhTestCapture capture;
  AhTestMessage *record;
  gboolean own;

  if (sender == AH_AGENT_ID_NONE)
    return;
  switch (ah_message_get_kind (message))
    {
    case AH_MESSAGE_PUBLISH:
    case AH_MESSAGE_DIRECT:
    case AH_MESSAGE_REQUEST:
      capture = AH_TEST_CAPTURE_PUBLISHED;
      break;
    case AH_MESSAGE_REPLY:
      capture = AH_TEST_CAPTURE_REPLIES;
      break;
    case AH_MESSAGE_TIMEOUT:
    case AH_MESSAGE_NO_RESPONDERS:
    case AH_MESSAGE_OFFLOAD_DONE:
    case AH_MESSAGE_OFFLOAD_FAILED:
    default:
      return;
    }

  /* Copied before taking the lock: the tap runs on the publishing
   * thread, and every other publisher may be waiting on the same lock. */
  record = testing_message_new (message, recipient, NULL);
  g_mutex_lock (&self->lock);
  own = g_hash_table_contains (self->own_endpoints, &sender);
  if (!own)
    g_ptr_array_add (self->captures[capture], record);
  g_mutex_unlock (&self->lock);

  if (own)
    testing_message_free (record);
}

static void
testing_on_dead_letter (const AhMessage   *message,
                        AhAgentId          intended,
                        AhDeadLetterReason reason,
                        gpointer           user_data)
{
  AhTestHost *self = user_data;
  AhTestMessage *record;

  record = testing_message_new (message, intended, ah_dead_letter_reason_to_string (reason));
  g_mutex_lock (&self->lock);
  g_ptr_array_add (self->captures[AH_TEST_CAPTURE_DEAD_LETTERS], record);
  g_mutex_unlock (&self->lock);
}

/* ---- lifecycle ---------------------------------------------------------------- */

static void
testing_wait_idle (AhTestHost *self,
                   const char *func)
{
  AhHostStats stats;

  if (ah_host_wait_idle (self->host, (gint64) self->idle_timeout_ms * 1000))
    return;

  ah_host_get_stats (self->host, &stats);
  testing_fail (func, "the system did not go idle within %u ms: %" G_GUINT64_FORMAT
                " messages in flight after %" G_GUINT64_FORMAT " delivered (an agent "
                "loop, a blocked handler or a request that never ends?)",
                self->idle_timeout_ms, stats.in_flight, stats.delivered);
}

/* Takes @manifest (transfer full), builds, hooks and starts its host,
 * then runs until "$SYS.host.started" and what it caused are handled. */
static AhTestHost *
testing_host_new (AhManifest *manifest,
                  GError    **error)
{
  AhTestHost *self;
  AhHost *host;

  host = ah_host_new (manifest, error);
  if (host == NULL)
    return NULL;

  self = g_new0 (AhTestHost, 1);
  self->host = host;
  self->bus = ah_host_get_bus (host);
  self->idle_timeout_ms = AH_TEST_DEFAULT_IDLE_TIMEOUT_MS;
  g_mutex_init (&self->lock);
  for (guint i = 0; i < AH_TEST_N_CAPTURES; i++)
    self->captures[i] = g_ptr_array_new_with_free_func (testing_message_free);
  self->own_endpoints = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL);

  /* Before the start, so nothing an agent does at start is missed. */
  ah_bus_set_tap_func (self->bus, testing_on_tap, self);
  ah_bus_set_dead_letter_func (self->bus, testing_on_dead_letter, self);

  if (!ah_host_start (host, error))
    {
      ah_test_host_free (self);
      return NULL;
    }
  testing_wait_idle (self, "ah_test_host_new");

  return self;
}

AhTestHost *
ah_test_host_new (const char *manifest_yaml,
                  const char *base_dir,
                  GError    **error)
{
  AhManifest *manifest;

  g_return_val_if_fail (manifest_yaml != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  manifest = ah_manifest_load_data (manifest_yaml, strlen (manifest_yaml), "<test>",
                                    base_dir, error);
  if (manifest == NULL)
    return NULL;
  /* Searched before the manifest's own plugin_path: the test's plugins
   * are the ones under test. */
  if (base_dir != NULL)
    g_ptr_array_insert (manifest->plugin_dirs, 0, g_strdup (manifest->base_dir));

  return testing_host_new (manifest, error);
}

AhTestHost *
ah_test_host_new_for_manifest (const char *path,
                               GError    **error)
{
  AhManifest *manifest;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  manifest = ah_manifest_load (path, error);
  if (manifest == NULL)
    return NULL;
  return testing_host_new (manifest, error);
}

/* Appends @text as a YAML double-quoted scalar. Escaped: the quote and
 * the backslash, and every character YAML does not allow unescaped in a
 * stream (C0 and C1 controls, DEL, U+FFFE and U+FFFF). @text is valid
 * UTF-8. */
static void
testing_append_yaml_string (GString    *out,
                            const char *text)
{
  g_string_append_c (out, '"');
  for (const char *p = text; *p != '\0'; p = g_utf8_next_char (p))
    {
      gunichar c = g_utf8_get_char (p);

      if (c == '"' || c == '\\')
        {
          g_string_append_c (out, '\\');
          g_string_append_c (out, (char) c);
        }
      else if (c < 0x20 || c == 0x7f || (c >= 0x80 && c <= 0x9f) || c == 0xfffe || c == 0xffff)
        g_string_append_printf (out, "\\u%04x", c);
      else
        g_string_append_len (out, p, g_utf8_next_char (p) - p);
    }
  g_string_append_c (out, '"');
}

/* Empty items are skipped, so "a, b," and "" read naturally. */
static gboolean
testing_append_subscriptions (GString    *yaml,
                              const char *subscriptions,
                              GError    **error)
{
  g_auto(GStrv) patterns = g_strsplit (subscriptions, ",", -1);
  guint n_written = 0;

  for (guint i = 0; patterns[i] != NULL; i++)
    {
      const char *pattern = g_strstrip (patterns[i]);

      if (*pattern == '\0')
        continue;
      if (!ah_pattern_is_valid (pattern))
        {
          g_autofree char *escaped = g_strescape (pattern, NULL);

          g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT,
                       "subscriptions: '%s' is not a valid subject pattern", escaped);
          return FALSE;
        }
      g_string_append (yaml, n_written == 0 ? "    subscribe: [" : ", ");
      testing_append_yaml_string (yaml, pattern);
      n_written++;
    }
  if (n_written > 0)
    g_string_append (yaml, "]\n");
  return TRUE;
}

static gboolean
testing_append_config (GString            *yaml,
                       const char * const *config,
                       GError            **error)
{
  g_string_append (yaml, "    config:\n");
  for (guint i = 0; config[i] != NULL; i++)
    {
      const char *equals = strchr (config[i], '=');
      g_autofree char *key = NULL;

      if (!g_utf8_validate (config[i], -1, NULL))
        {
          g_autofree char *escaped = g_strescape (config[i], NULL);

          g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_FAILED,
                       "config entry %u ('%s') is not UTF-8", i, escaped);
          return FALSE;
        }
      if (equals == NULL || equals == config[i])
        {
          g_autofree char *escaped = g_strescape (config[i], NULL);

          g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_FAILED,
                       "config entry %u ('%s') is not KEY=VALUE with a non-empty KEY",
                       i, escaped);
          return FALSE;
        }
      key = g_strndup (config[i], equals - config[i]);
      g_string_append (yaml, "      ");
      testing_append_yaml_string (yaml, key);
      g_string_append (yaml, ": ");
      testing_append_yaml_string (yaml, equals + 1);
      g_string_append_c (yaml, '\n');
    }
  return TRUE;
}

AhTestHost *
ah_test_host_new_for_plugin (const char         *plugin_path,
                             const char         *subscriptions,
                             const char * const *config,
                             GError            **error)
{
  g_autofree char *found = NULL;
  g_autofree char *path = NULL;
  g_autofree char *type_name = NULL;
  g_autoptr(AhPlugin) plugin = NULL;
  g_autoptr(GString) yaml = NULL;
  AhManifest *manifest;

  g_return_val_if_fail (plugin_path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  /* Opened once here for its name: the agent type is called what the
   * plugin calls itself, so ah_context_get_type_name() and the stats
   * read as in the plugin's own manifests. */
  found = ah_plugin_find (plugin_path, NULL, NULL, error);
  if (found == NULL)
    return NULL;
  path = g_canonicalize_filename (found, NULL);
  if (!g_utf8_validate (path, -1, NULL))
    {
      g_autofree char *escaped = g_strescape (path, NULL);

      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_FAILED,
                   "%s: a plugin path that is not UTF-8 cannot go in a manifest", escaped);
      return NULL;
    }
  plugin = ah_plugin_open (path, error);
  if (plugin == NULL)
    return NULL;
  type_name = g_ascii_strdown (ah_plugin_get_desc (plugin)->name, -1);

  yaml = g_string_new ("name: plugin-test\nagents:\n  ");
  testing_append_yaml_string (yaml, type_name);
  g_string_append (yaml, ":\n    plugin: ");
  testing_append_yaml_string (yaml, path);
  g_string_append (yaml, "\n    pool_size: 1\n");
  if (subscriptions != NULL && !testing_append_subscriptions (yaml, subscriptions, error))
    return NULL;
  if (config != NULL && config[0] != NULL && !testing_append_config (yaml, config, error))
    return NULL;

  manifest = ah_manifest_load_data (yaml->str, yaml->len, "<test>", NULL, error);
  if (manifest == NULL)
    return NULL;
  return testing_host_new (manifest, error);
}

void
ah_test_host_free (AhTestHost *self)
{
  if (self == NULL)
    return;

  /* The host first: draining still dead-letters and taps into the
   * records. */
  ah_host_free (self->host);
  for (guint i = 0; i < AH_TEST_N_CAPTURES; i++)
    g_ptr_array_unref (self->captures[i]);
  g_hash_table_unref (self->own_endpoints);
  g_mutex_clear (&self->lock);
  g_free (self);
}

AhHost *
ah_test_host_get_host (AhTestHost *self)
{
  g_return_val_if_fail (self != NULL, NULL);

  return self->host;
}

void
ah_test_host_set_idle_timeout (AhTestHost *self,
                               guint       timeout_ms)
{
  g_return_if_fail (self != NULL);
  g_return_if_fail (timeout_ms > 0);

  self->idle_timeout_ms = timeout_ms;
}

void
ah_test_host_run_until_idle (AhTestHost *self)
{
  g_return_if_fail (self != NULL);

  testing_wait_idle (self, G_STRFUNC);
}

/* ---- injecting -------------------------------------------------------------- */

void
ah_test_host_publish (AhTestHost   *self,
                      const char   *subject,
                      gconstpointer data,
                      gsize         size)
{
  g_autoptr(GError) error = NULL;

  g_return_if_fail (self != NULL);
  g_return_if_fail (subject != NULL);

  if (!ah_host_publish (self->host, subject, data, size, &error))
    testing_fail (G_STRFUNC, "publish on '%s' failed: %s", subject, error->message);
}

void
ah_test_host_publish_string (AhTestHost *self,
                             const char *subject,
                             const char *text)
{
  g_return_if_fail (text != NULL);

  ah_test_host_publish (self, subject, text, strlen (text));
}

void
ah_test_host_send (AhTestHost   *self,
                   AhAgentId     to,
                   const char   *subject,
                   gconstpointer data,
                   gsize         size)
{
  g_autoptr(GError) error = NULL;

  g_return_if_fail (self != NULL);
  g_return_if_fail (subject != NULL);

  if (!ah_host_send (self->host, to, subject, data, size, &error))
    testing_fail (G_STRFUNC, "send on '%s' to agent %" G_GUINT64_FORMAT " failed: %s",
                  subject, to, error->message);
}

/* A request from outside any agent, made as ah_host_request() makes it
 * (only a handler can request: a temporary endpoint is kicked and
 * requests from its handler), but from an endpoint the harness knows, so
 * its request is not recorded as an agent's. */
/* The harness's own requests come from a temporary endpoint; its id is
 * remembered so that the request is not recorded as an agent's. */
static void
testing_request_remember_endpoint (AhAgentId endpoint_id,
                                   gpointer  user_data)
{
  AhTestHost *self = user_data;

  g_mutex_lock (&self->lock);
  g_hash_table_add (self->own_endpoints, g_memdup2 (&endpoint_id, sizeof endpoint_id));
  g_mutex_unlock (&self->lock);
}

GBytes *
ah_test_host_request (AhTestHost   *self,
                      const char   *subject,
                      gconstpointer data,
                      gsize         size,
                      guint         timeout_ms,
                      GError      **error)
{
  g_return_val_if_fail (self != NULL, NULL);
  g_return_val_if_fail (subject != NULL, NULL);
  g_return_val_if_fail (data != NULL || size == 0, NULL);
  g_return_val_if_fail (timeout_ms > 0, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  return ah_host_request_full (self->host, subject, data, size, timeout_ms,
                               testing_request_remember_endpoint, self, error);
}

/* ---- inspecting ---------------------------------------------------------- */

/* Checks @pattern; NULL matches everything. */
static gboolean
testing_check_pattern (const char *func,
                       const char *pattern)
{
  if (pattern == NULL || ah_pattern_is_valid (pattern))
    return TRUE;
  testing_fail (func, "'%s' is not a valid subject pattern", pattern);
  return FALSE;
}

static gboolean
testing_record_matches (const AhTestMessage *record,
                        const char          *pattern)
{
  return pattern == NULL || ah_pattern_matches (pattern, record->subject);
}

GPtrArray *
ah_test_host_get_messages (AhTestHost   *self,
                           AhTestCapture capture,
                           const char   *pattern)
{
  GPtrArray *matching = g_ptr_array_new ();
  GPtrArray *records;

  g_return_val_if_fail (self != NULL, matching);
  g_return_val_if_fail (capture < AH_TEST_N_CAPTURES, matching);

  if (!testing_check_pattern (G_STRFUNC, pattern))
    return matching;

  g_mutex_lock (&self->lock);
  records = self->captures[capture];
  for (guint i = 0; i < records->len; i++)
    if (testing_record_matches (g_ptr_array_index (records, i), pattern))
      g_ptr_array_add (matching, g_ptr_array_index (records, i));
  g_mutex_unlock (&self->lock);

  return matching;
}

guint
ah_test_host_count (AhTestHost   *self,
                    AhTestCapture capture,
                    const char   *pattern)
{
  g_autoptr(GPtrArray) matching = ah_test_host_get_messages (self, capture, pattern);

  return matching->len;
}

char *
ah_test_host_last_text (AhTestHost   *self,
                        AhTestCapture capture,
                        const char   *pattern)
{
  g_autoptr(GPtrArray) matching = ah_test_host_get_messages (self, capture, pattern);
  const AhTestMessage *last;
  gconstpointer data;
  gsize size;
  char *text;

  if (matching->len == 0)
    return NULL;
  last = g_ptr_array_index (matching, matching->len - 1);
  data = g_bytes_get_data (last->data, &size);
  /* The whole payload, even past a NUL: a test comparing with
   * g_assert_cmpmem (text, size, ...) sees every byte. */
  text = g_malloc (size + 1);
  if (size > 0)
    memcpy (text, data, size);
  text[size] = '\0';
  return text;
}

void
ah_test_host_clear (AhTestHost *self)
{
  g_return_if_fail (self != NULL);

  g_mutex_lock (&self->lock);
  for (guint i = 0; i < AH_TEST_N_CAPTURES; i++)
    g_ptr_array_set_size (self->captures[i], 0);
  g_mutex_unlock (&self->lock);
}

void
ah_test_host_get_stats (AhTestHost  *self,
                        AhHostStats *ret_stats)
{
  g_return_if_fail (self != NULL);
  g_return_if_fail (ret_stats != NULL);

  ah_host_get_stats (self->host, ret_stats);
}

GArray *
ah_test_host_get_agents (AhTestHost *self,
                         const char *type_name)
{
  AhPool *pool;

  g_return_val_if_fail (self != NULL, NULL);
  g_return_val_if_fail (type_name != NULL, NULL);

  pool = ah_host_find_pool (self->host, type_name);
  if (pool == NULL)
    {
      testing_fail (G_STRFUNC, "no agent type '%s' in this host", type_name);
      return g_array_new (FALSE, FALSE, sizeof (AhAgentId));
    }
  return ah_pool_get_live_ids (pool);
}
