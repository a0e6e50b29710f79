/* SPDX-License-Identifier: MIT */
/* calc: a service. Answers requests on "calc.square" with the square of
 * the decimal integer in the payload.
 *
 * What a requester gets back:
 * - the square, as decimal text;
 * - "error: N is outside -LIMIT..LIMIT" when the number is too large
 *   (config `limit`): a refusal is still an answer the caller can act on;
 * - nothing when the payload is not an integer at all. That is a broken
 *   caller, so the service reports a failure (the host logs and counts
 *   it) and does not reply: the requester sees its request time out.
 *   Answering every request in-band is the other sane design; this one
 *   shows what a requester sees when a responder fails.
 */
#include <agenthost/agenthost.h>

#include <string.h>

/* The largest value whose square still fits in a gint64. */
#define CALC_LIMIT_MAX 3037000499

typedef struct {
  gint64 limit;
} Calc;

static const AhConfigKey calc_config[] = {
  { "limit", AH_CONFIG_INT, AH_CONFIG_FLAG_NONE, "3037000499", 0, CALC_LIMIT_MAX,
    "largest absolute value squared; larger ones are answered with an error" },
  AH_CONFIG_KEY_END
};

static gboolean
calc_init (AhContext *ctx,
           gpointer   state,
           GError   **error)
{
  Calc *self = state;

  /* The schema has checked the range before any agent starts. */
  self->limit = ah_config_get_int (ctx, "limit", CALC_LIMIT_MAX);
  return TRUE;
}

static gboolean
calc_reply_text (AhContext       *ctx,
                 const AhMessage *request,
                 const char      *text,
                 GError         **error)
{
  if (ah_reply (ctx, request, text, strlen (text)))
    return TRUE;
  g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
               "the bus refused a reply on '%s'", ah_message_get_subject (request));
  return FALSE;
}

static gboolean
calc_handle_request (AhContext       *ctx,
                     Calc            *self,
                     const AhMessage *request,
                     GError         **error)
{
  gsize size;
  const char *data = ah_message_get_data (request, &size);
  g_autofree char *text = g_strndup (data, size);
  char answer[64];
  gint64 value;

  /* A NUL inside the payload would cut the text short: not a number. */
  if (strlen (text) != size
      || !g_ascii_string_to_signed (text, 10, G_MININT64, G_MAXINT64, &value, NULL))
    {
      g_autofree char *escaped = g_strescape (text, NULL);

      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "calc.square: '%.40s' is not an integer; not answered", escaped);
      return FALSE;
    }
  if (value > self->limit || value < -self->limit)
    g_snprintf (answer, sizeof answer, "error: %" G_GINT64_FORMAT " is outside -%"
                G_GINT64_FORMAT "..%" G_GINT64_FORMAT, value, self->limit, self->limit);
  else
    g_snprintf (answer, sizeof answer, "%" G_GINT64_FORMAT, value * value);

  return calc_reply_text (ctx, request, answer, error);
}

static gboolean
calc_handle_batch (AhContext               *ctx,
                   gpointer                 state,
                   const AhMessage * const *messages,
                   guint                    n_messages,
                   GError                 **error)
{
  Calc *self = state;
  GError *first_error = NULL;

  /* Requests are independent: one bad request must not leave the others
   * of its batch unanswered. The first failure is the one reported. */
  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      GError *local_error = NULL;

      if (ah_message_get_kind (message) != AH_MESSAGE_REQUEST
          || !g_str_equal (ah_message_get_subject (message), "calc.square"))
        g_set_error (&local_error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                     "calc answers requests on calc.square, got a message of kind %d on '%s'",
                     (int) ah_message_get_kind (message), ah_message_get_subject (message));
      else
        calc_handle_request (ctx, self, message, &local_error);

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

AH_PLUGIN_DEFINE (calc,
  .version       = "1.0.0",
  .description   = "Answers requests on calc.square with the square of an integer",
  .state_size    = sizeof (Calc),
  .agent_init    = calc_init,
  .handle_batch  = calc_handle_batch,
  .config_schema = calc_config)
