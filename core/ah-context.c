/* The context API: what a plugin's agent can do from its hooks.
 *
 * An AhContext lives on the stack of the call into the plugin and is
 * valid only during that call. Inside handle_batch it carries the bus
 * call, so publishes join the worker's outbox; in agent_init and
 * agent_finalize there is no bus call and publishing is a misuse.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-clock-private.h"
#include "ah-pool-private.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

G_DEFINE_QUARK (ah-agent-error-quark, ah_agent_error)

gboolean
ah_publish (AhContext    *ctx,
            const char   *subject,
            gconstpointer data,
            gsize         size)
{
  g_return_val_if_fail (ctx != NULL, FALSE);
  g_return_val_if_fail (ctx->call != NULL, FALSE);   /* not from agent_init/finalize */
  g_return_val_if_fail (subject != NULL, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);

  return ah_bus_call_publish (ctx->call, subject, data, size);
}

gboolean
ah_publish_string (AhContext  *ctx,
                   const char *subject,
                   const char *text)
{
  g_return_val_if_fail (text != NULL, FALSE);

  return ah_publish (ctx, subject, text, strlen (text));
}

gboolean
ah_send (AhContext    *ctx,
         AhAgentId     to,
         const char   *subject,
         gconstpointer data,
         gsize         size)
{
  g_return_val_if_fail (ctx != NULL, FALSE);
  g_return_val_if_fail (ctx->call != NULL, FALSE);
  g_return_val_if_fail (subject != NULL, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);

  return ah_bus_call_send (ctx->call, to, subject, data, size);
}

gboolean
ah_reply (AhContext       *ctx,
          const AhMessage *request,
          gconstpointer    data,
          gsize            size)
{
  g_return_val_if_fail (ctx != NULL, FALSE);
  g_return_val_if_fail (ctx->call != NULL, FALSE);
  g_return_val_if_fail (request != NULL, FALSE);
  g_return_val_if_fail (ah_message_get_kind (request) == AH_MESSAGE_REQUEST, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);

  return ah_bus_call_reply (ctx->call, request, data, size);
}

guint64
ah_request (AhContext    *ctx,
            const char   *subject,
            gconstpointer data,
            gsize         size,
            guint         timeout_ms)
{
  g_return_val_if_fail (ctx != NULL, 0);
  g_return_val_if_fail (ctx->call != NULL, 0);
  g_return_val_if_fail (subject != NULL, 0);
  g_return_val_if_fail (data != NULL || size == 0, 0);
  g_return_val_if_fail (timeout_ms > 0, 0);

  return ah_bus_call_request (ctx->call, subject, data, size, timeout_ms);
}

const AhSubject *
ah_subject_intern (AhContext  *ctx,
                   const char *subject)
{
  g_autoptr(GError) error = NULL;
  const AhSubject *handle;

  g_return_val_if_fail (ctx != NULL, NULL);
  g_return_val_if_fail (subject != NULL, NULL);

  handle = ah_bus_intern_subject (ah_pool_get_bus (ctx->agent->pool), subject, &error);
  if (handle == NULL)
    g_message ("%s: %s", ah_pool_get_name (ctx->agent->pool), error->message);
  return handle;
}

gboolean
ah_publish_interned (AhContext       *ctx,
                     const AhSubject *subject,
                     gconstpointer    data,
                     gsize            size)
{
  g_return_val_if_fail (ctx != NULL, FALSE);
  g_return_val_if_fail (ctx->call != NULL, FALSE);   /* not from agent_init/finalize */
  g_return_val_if_fail (subject != NULL, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);

  return ah_bus_call_publish_interned (ctx->call, subject, data, size);
}

guint64
ah_request_interned (AhContext       *ctx,
                     const AhSubject *subject,
                     gconstpointer    data,
                     gsize            size,
                     guint            timeout_ms)
{
  g_return_val_if_fail (ctx != NULL, 0);
  g_return_val_if_fail (ctx->call != NULL, 0);
  g_return_val_if_fail (subject != NULL, 0);
  g_return_val_if_fail (data != NULL || size == 0, 0);
  g_return_val_if_fail (timeout_ms > 0, 0);

  return ah_bus_call_request_interned (ctx->call, subject, data, size, timeout_ms);
}

gint64
ah_monotonic_ns (void)
{
  return ah__clock_ns ();
}

gint64
ah_context_get_start_ns (AhContext *ctx)
{
  g_return_val_if_fail (ctx != NULL, 0);
  g_return_val_if_fail (ctx->call != NULL, 0);

  return ah_bus_call_get_start_ns (ctx->call);
}

AhAgentId
ah_context_get_self (AhContext *ctx)
{
  g_return_val_if_fail (ctx != NULL, AH_AGENT_ID_NONE);

  return ctx->agent->id;
}

const char *
ah_context_get_type_name (AhContext *ctx)
{
  g_return_val_if_fail (ctx != NULL, NULL);

  return ah_pool_get_name (ctx->agent->pool);
}

guint
ah_context_get_index (AhContext *ctx)
{
  g_return_val_if_fail (ctx != NULL, 0);

  return ctx->agent->index;
}

guint
ah_context_get_pool_size (AhContext *ctx)
{
  g_return_val_if_fail (ctx != NULL, 0);

  return ah_pool_get_type (ctx->agent->pool)->pool_size;
}

void
ah_context_request_stop (AhContext *ctx,
                         int        exit_code)
{
  g_return_if_fail (ctx != NULL);

  ah_pool_request_stop (ctx->agent->pool, exit_code);
}

/* ---- configuration ---------------------------------------------------- */

static const char *
lookup_config (AhContext  *ctx,
               const char *key)
{
  g_return_val_if_fail (ctx != NULL, NULL);
  g_return_val_if_fail (key != NULL, NULL);

  if (ctx->config != NULL)
    return g_hash_table_lookup (ctx->config, key);
  return ah_pool_lookup_config (ctx->agent->pool, key);
}

const char *
ah_config_get_string (AhContext  *ctx,
                      const char *key,
                      const char *default_value)
{
  const char *value = lookup_config (ctx, key);

  return value != NULL ? value : default_value;
}

gint64
ah_config_get_int (AhContext  *ctx,
                   const char *key,
                   gint64      default_value)
{
  const char *value = lookup_config (ctx, key);
  gint64 parsed;

  if (value == NULL || !g_ascii_string_to_signed (value, 10, G_MININT64, G_MAXINT64,
                                                   &parsed, NULL))
    return default_value;

  return parsed;
}

gdouble
ah_config_get_double (AhContext  *ctx,
                      const char *key,
                      gdouble     default_value)
{
  const char *value = lookup_config (ctx, key);
  char *end = NULL;
  gdouble parsed;

  if (value == NULL || *value == '\0')
    return default_value;

  errno = 0;
  parsed = g_ascii_strtod (value, &end);
  if (errno != 0 || end == NULL || *end != '\0')
    return default_value;

  return parsed;
}

gboolean
ah_config_get_bool (AhContext  *ctx,
                    const char *key,
                    gboolean    default_value)
{
  const char *value = lookup_config (ctx, key);

  if (value == NULL)
    return default_value;
  /* The same spellings the manifest accepts for booleans (YAML 1.2 core). */
  if (g_str_equal (value, "true") || g_str_equal (value, "True") || g_str_equal (value, "TRUE"))
    return TRUE;
  if (g_str_equal (value, "false") || g_str_equal (value, "False") || g_str_equal (value, "FALSE"))
    return FALSE;

  return default_value;
}
