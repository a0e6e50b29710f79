/* SPDX-License-Identifier: MIT */
/* client: makes requests and handles every way they can end.
 *
 * When the system starts, each agent asks the questions of its config
 * `questions`, each "SUBJECT PAYLOAD" (the payload may be empty), as
 * requests with a timeout of `timeout_ms`. Exactly one outcome comes
 * back for each, with the correlation id ah_request() returned:
 * - REPLY: the answer;
 * - TIMEOUT: nobody answered in time (the responder was slow, dropped
 *   the request or failed on it);
 * - NO_RESPONDERS: no agent subscribes to the subject.
 * The client prints one line per outcome and, when it stops, a tally.
 */
#include <agenthost/agenthost.h>

#include <string.h>

typedef struct {
  guint       timeout_ms;
  /* The question behind each pending request. Requests are answered in
   * any order, so the correlation id is the only way back to the
   * question. (element-type guint64 utf8) (owned) */
  GHashTable *pending;
  guint       n_replies;
  guint       n_timeouts;
  guint       n_no_responders;
} Client;

static const AhConfigKey client_config[] = {
  { "questions", AH_CONFIG_STRING, AH_CONFIG_FLAG_REQUIRED, NULL, 0, 0,
    "requests to make at start, each \"SUBJECT PAYLOAD\" (a sequence)" },
  { "timeout_ms", AH_CONFIG_INT, AH_CONFIG_FLAG_NONE, "500", 1, 60000,
    "how long each request waits for its reply" },
  AH_CONFIG_KEY_END
};

static gboolean
client_init (AhContext *ctx,
             gpointer   state,
             GError   **error)
{
  Client *self = state;

  self->timeout_ms = (guint) ah_config_get_int (ctx, "timeout_ms", 500);
  /* The correlation id is a guint64: keyed by pointer to a copy. */
  self->pending = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, g_free);
  return TRUE;
}

static void
client_finalize (AhContext *ctx,
                 gpointer   state)
{
  Client *self = state;

  g_print ("client %u: %u repl%s, %u timed out, %u without responders, %u pending\n",
           ah_context_get_index (ctx), self->n_replies, self->n_replies == 1 ? "y" : "ies",
           self->n_timeouts, self->n_no_responders, g_hash_table_size (self->pending));
  g_clear_pointer (&self->pending, g_hash_table_unref);
}

static gboolean
client_ask (AhContext  *ctx,
            Client     *self,
            const char *question,
            GError    **error)
{
  const char *space = strchr (question, ' ');
  g_autofree char *subject = g_strndup (question, space != NULL ? (gsize) (space - question)
                                                                : strlen (question));
  const char *payload = space != NULL ? space + 1 : "";
  guint64 correlation;

  correlation = ah_request (ctx, subject, payload, strlen (payload), self->timeout_ms);
  if (correlation == 0)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "the bus refused the request '%s'", question);
      return FALSE;
    }
  g_hash_table_insert (self->pending, g_memdup2 (&correlation, sizeof correlation),
                       g_strdup (question));
  return TRUE;
}

static gboolean
client_ask_all (AhContext *ctx,
                Client    *self,
                GError   **error)
{
  /* A sequence arrives as "questions.0", "questions.1"...: read until the
   * first gap. */
  for (guint i = 0;; i++)
    {
      char key[32];
      const char *question;

      g_snprintf (key, sizeof key, "questions.%u", i);
      question = ah_config_get_string (ctx, key, NULL);
      if (question == NULL)
        return TRUE;
      if (!client_ask (ctx, self, question, error))
        return FALSE;
    }
}

static gboolean
client_handle_outcome (Client          *self,
                       const AhMessage *message,
                       GError         **error)
{
  guint64 correlation = ah_message_get_correlation (message);
  const char *question = g_hash_table_lookup (self->pending, &correlation);
  gsize size;
  const char *data;

  if (question == NULL)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "an outcome for request %" G_GUINT64_FORMAT ", which this agent "
                   "is not waiting for", correlation);
      return FALSE;
    }

  switch (ah_message_get_kind (message))
    {
    case AH_MESSAGE_REPLY:
      data = ah_message_get_data (message, &size);
      g_print ("%s -> %.*s\n", question, (int) size, data);
      self->n_replies++;
      break;
    case AH_MESSAGE_TIMEOUT:
      g_print ("%s -> no reply within %u ms\n", question, self->timeout_ms);
      self->n_timeouts++;
      break;
    case AH_MESSAGE_NO_RESPONDERS:
      g_print ("%s -> nobody serves '%s'\n", question, ah_message_get_subject (message));
      self->n_no_responders++;
      break;
    case AH_MESSAGE_PUBLISH:
    case AH_MESSAGE_DIRECT:
    case AH_MESSAGE_REQUEST:
    case AH_MESSAGE_OFFLOAD_DONE:
    case AH_MESSAGE_OFFLOAD_FAILED:
    default:
      g_assert_not_reached ();
    }

  /* Exactly one outcome per request: this one is done. */
  g_hash_table_remove (self->pending, &correlation);
  return TRUE;
}

static gboolean
client_handle_batch (AhContext               *ctx,
                     gpointer                 state,
                     const AhMessage * const *messages,
                     guint                    n_messages,
                     GError                 **error)
{
  Client *self = state;
  GError *first_error = NULL;

  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      GError *local_error = NULL;

      switch (ah_message_get_kind (message))
        {
        case AH_MESSAGE_REPLY:
        case AH_MESSAGE_TIMEOUT:
        case AH_MESSAGE_NO_RESPONDERS:
          client_handle_outcome (self, message, &local_error);
          break;
        case AH_MESSAGE_PUBLISH:
          if (g_str_equal (ah_message_get_subject (message), "$SYS.host.started"))
            {
              client_ask_all (ctx, self, &local_error);
              break;
            }
          G_GNUC_FALLTHROUGH;
        case AH_MESSAGE_DIRECT:
        case AH_MESSAGE_REQUEST:
        case AH_MESSAGE_OFFLOAD_DONE:
        case AH_MESSAGE_OFFLOAD_FAILED:
        default:
          g_set_error (&local_error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                       "the client only starts on $SYS.host.started, got a message on '%s'",
                       ah_message_get_subject (message));
          break;
        }

      if (local_error != NULL && first_error == NULL)
        first_error = local_error;
      else
        g_clear_error (&local_error);
    }

  if (first_error != NULL)
    {
      g_propagate_error (error, first_error);
      return FALSE;
    }
  return TRUE;
}

AH_PLUGIN_DEFINE (client,
  .version        = "1.0.0",
  .description    = "Asks its configured questions as requests; prints every outcome",
  .state_size     = sizeof (Client),
  .agent_init     = client_init,
  .agent_finalize = client_finalize,
  .handle_batch   = client_handle_batch,
  .config_schema  = client_config)
