/* SPDX-License-Identifier: MIT */
/* echo: the smallest useful agent, for tests and the README.
 *
 * A request is answered with its own payload. A published (or directly
 * sent) message is published again, payload unchanged, on the subject of
 * config `reply_subject` (default "echo.out").
 */
#include <agenthost/agenthost.h>

#include <string.h>

#define ECHO_DEFAULT_REPLY_SUBJECT "echo.out"
#define ECHO_MAX_SUBJECT_LEN       255

typedef struct {
  char *reply_subject;
} EchoState;

/* The bus's rule for a subject one publishes on: dot-separated non-empty
 * tokens of printable ASCII without spaces, no wildcard token, at most
 * 255 bytes. Checked here so that a typo fails at start, not on every
 * message. */
static gboolean
echo_subject_is_valid (const char *subject)
{
  gsize len = strlen (subject);
  gsize token_start = 0;

  if (len == 0 || len > ECHO_MAX_SUBJECT_LEN)
    return FALSE;
  for (gsize i = 0; i <= len; i++)
    {
      if (i == len || subject[i] == '.')
        {
          gsize token_len = i - token_start;

          if (token_len == 0)
            return FALSE;
          if (token_len == 1 && (subject[token_start] == '*' || subject[token_start] == '>'))
            return FALSE;
          token_start = i + 1;
        }
      else if (!g_ascii_isgraph (subject[i]))
        return FALSE;
    }

  return TRUE;
}

static gboolean
echo_agent_init (AhContext *ctx,
                 gpointer   state,
                 GError   **error)
{
  EchoState *self = state;
  const char *reply_subject = ah_config_get_string (ctx, "reply_subject",
                                                    ECHO_DEFAULT_REPLY_SUBJECT);

  if (!echo_subject_is_valid (reply_subject))
    {
      g_autofree char *escaped = g_strescape (reply_subject, NULL);

      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_CONFIG,
                   "config 'reply_subject': '%s' is not a subject (dot-separated "
                   "tokens, no wildcards, at most %d bytes)", escaped, ECHO_MAX_SUBJECT_LEN);
      return FALSE;
    }
  self->reply_subject = g_strdup (reply_subject);

  return TRUE;
}

static void
echo_agent_finalize (AhContext *ctx,
                     gpointer   state)
{
  EchoState *self = state;

  g_clear_pointer (&self->reply_subject, g_free);
}

static gboolean
echo_handle_message (AhContext       *ctx,
                     EchoState       *self,
                     const AhMessage *message,
                     GError         **error)
{
  const char *subject = ah_message_get_subject (message);
  gconstpointer data;
  gsize size;

  data = ah_message_get_data (message, &size);
  switch (ah_message_get_kind (message))
    {
    case AH_MESSAGE_REQUEST:
      if (!ah_reply (ctx, message, data, size))
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                       "the bus refused the reply to a request on '%s'", subject);
          return FALSE;
        }
      return TRUE;

    case AH_MESSAGE_PUBLISH:
    case AH_MESSAGE_DIRECT:
      /* Echoing a message into its own subject would feed it back to us
       * forever. */
      if (g_str_equal (subject, self->reply_subject))
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                       "message on '%s', the echo's own reply subject: not echoed, "
                       "it would loop", subject);
          return FALSE;
        }
      if (!ah_publish (ctx, self->reply_subject, data, size))
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                       "the bus refused the echo on '%s'", self->reply_subject);
          return FALSE;
        }
      return TRUE;

    case AH_MESSAGE_REPLY:
    case AH_MESSAGE_TIMEOUT:
    case AH_MESSAGE_NO_RESPONDERS:
    default:
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "unexpected answer on '%s': echo makes no requests", subject);
      return FALSE;
    }
}

static gboolean
echo_handle_batch (AhContext              *ctx,
                   gpointer                state,
                   const AhMessage * const *messages,
                   guint                   n_messages,
                   GError                **error)
{
  EchoState *self = state;
  GError *first_error = NULL;

  /* Every message is handled even after a bad one: they are independent,
   * and the first failure is the one reported. */
  for (guint i = 0; i < n_messages; i++)
    {
      GError *local_error = NULL;

      if (!echo_handle_message (ctx, self, messages[i], &local_error))
        {
          if (first_error == NULL)
            first_error = local_error;
          else
            g_error_free (local_error);
        }
    }

  if (first_error != NULL)
    {
      g_propagate_error (error, first_error);
      return FALSE;
    }
  return TRUE;
}

/* Checked by validate and run before any agent starts. The subject's
 * syntax is beyond a schema: agent_init still checks it. */
static const AhConfigKey echo_config_schema[] = {
  { .name = "reply_subject", .type = AH_CONFIG_STRING, .default_value = ECHO_DEFAULT_REPLY_SUBJECT,
    .description = "Subject that published messages are echoed on" },
  AH_CONFIG_KEY_END
};

AH_PLUGIN_DEFINE (echo,
  .version        = "1.0.0",
  .description    = "Answers requests with their payload, republishes messages on reply_subject",
  .state_size     = sizeof (EchoState),
  .agent_init     = echo_agent_init,
  .agent_finalize = echo_agent_finalize,
  .handle_batch   = echo_handle_batch,
  .config_schema  = echo_config_schema)
