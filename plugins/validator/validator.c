/* SPDX-License-Identifier: MIT */
/* validator: cross-checks every word count against the corpus.
 *
 * For each results.count message it asks the coordinators for the chunk's
 * text (request/reply on corpus.chunk), recounts it independently and
 * compares word by word. An exact match is published unchanged on
 * results.validated; anything else (a difference, a TIMEOUT, nobody to
 * answer) on results.rejected as "chunk ID TOTAL\n<reason>\n".
 *
 * Config: `timeout_ms` for the request (default 2000).
 */
#include <agenthost/agenthost.h>

#include "../wordcount/wordcount-text.h"

#define VALIDATOR_SUBJECT_RESULTS   "results.count"
#define VALIDATOR_SUBJECT_CHUNK     "corpus.chunk"
#define VALIDATOR_SUBJECT_VALIDATED "results.validated"
#define VALIDATOR_SUBJECT_REJECTED  "results.rejected"
#define VALIDATOR_MAX_TIMEOUT_MS    600000

/* A result waiting for its chunk's text. */
typedef struct {
  guint       id;
  guint       total;
  GBytes     *payload;   /* the result as received: republished as is */
  GHashTable *claimed;   /* (element-type utf8 WcWordCount) its counts */
} ValidatorPending;

typedef struct {
  guint       timeout_ms;
  /* correlation id (gint64 *) -> ValidatorPending *; requests in flight */
  GHashTable *pending;
} ValidatorState;

static void
validator_pending_free (gpointer data)
{
  ValidatorPending *pending = data;

  g_bytes_unref (pending->payload);
  g_hash_table_unref (pending->claimed);
  g_free (pending);
}

static gboolean
validator_agent_init (AhContext *ctx,
                      gpointer   state,
                      GError   **error)
{
  ValidatorState *self = state;

  if (!wc_config_get_uint (ctx, "timeout_ms", 2000, 1, VALIDATOR_MAX_TIMEOUT_MS,
                           &self->timeout_ms, error))
    return FALSE;
  self->pending = g_hash_table_new_full (g_int64_hash, g_int64_equal,
                                         g_free, validator_pending_free);

  return TRUE;
}

static void
validator_agent_finalize (AhContext *ctx,
                          gpointer   state)
{
  ValidatorState *self = state;

  /* Requests still pending were cancelled with the run: drop them. */
  g_clear_pointer (&self->pending, g_hash_table_unref);
}

static gboolean
validator_publish (AhContext  *ctx,
                   const char *subject,
                   const char *data,
                   gsize       size,
                   guint       id,
                   GError    **error)
{
  if (!ah_publish (ctx, subject, data, size))
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "chunk %u: the bus refused the message on %s", id, subject);
      return FALSE;
    }
  return TRUE;
}

static gboolean
validator_reject (AhContext  *ctx,
                  guint       id,
                  guint       total,
                  const char *reason,
                  GError    **error)
{
  g_autofree char *payload = g_strdup_printf ("chunk %u %u\n%s\n", id, total, reason);

  return validator_publish (ctx, VALIDATOR_SUBJECT_REJECTED, payload, strlen (payload),
                            id, error);
}

/* A new result: checks its form, then asks for the chunk's text. */
static gboolean
validator_handle_result (AhContext       *ctx,
                         ValidatorState  *self,
                         const AhMessage *message,
                         GError         **error)
{
  g_autoptr(GHashTable) claimed = wc_counts_new ();
  g_autofree char *request = NULL;
  g_autofree char *reason = NULL;
  ValidatorPending *pending;
  const char *data, *body;
  gsize size, body_len;
  guint id, total;
  guint64 header_words, listed_words, correlation;
  gint64 *key;

  data = ah_message_get_data (message, &size);
  if (!wc_parse_chunk_header (data, size, VALIDATOR_SUBJECT_RESULTS " payload", TRUE,
                              &id, &total, &header_words, &body, &body_len, error)
      || !wc_parse_counts (body, body_len, VALIDATOR_SUBJECT_RESULTS " payload",
                           claimed, &listed_words, error))
    return FALSE;

  /* Well-formed but self-contradictory: a wrong result, not a bad message. */
  if (header_words != listed_words)
    {
      reason = g_strdup_printf ("header says %" G_GUINT64_FORMAT " words, the lines add up "
                                "to %" G_GUINT64_FORMAT, header_words, listed_words);
      return validator_reject (ctx, id, total, reason, error);
    }

  request = g_strdup_printf ("%u", id);
  correlation = ah_request (ctx, VALIDATOR_SUBJECT_CHUNK, request, strlen (request),
                            self->timeout_ms);
  if (correlation == 0)
    return validator_reject (ctx, id, total,
                             "the bus refused the " VALIDATOR_SUBJECT_CHUNK " request", error);

  /* Replies come after this handler returns, so the entry is in place. */
  pending = g_new0 (ValidatorPending, 1);
  pending->id = id;
  pending->total = total;
  pending->payload = g_bytes_new (data, size);
  pending->claimed = g_steal_pointer (&claimed);
  key = g_new (gint64, 1);
  *key = (gint64) correlation;
  g_hash_table_insert (self->pending, key, pending);

  return TRUE;
}

/* The end of a request: the chunk's text, or why there is none. */
static gboolean
validator_handle_answer (AhContext       *ctx,
                         ValidatorState  *self,
                         const AhMessage *message,
                         GError         **error)
{
  gint64 correlation = (gint64) ah_message_get_correlation (message);
  ValidatorPending *pending = g_hash_table_lookup (self->pending, &correlation);
  g_autoptr(GHashTable) recount = NULL;
  g_autofree char *reason = NULL;
  gboolean ok;

  if (pending == NULL)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "answer with unknown correlation id %" G_GINT64_FORMAT, correlation);
      return FALSE;
    }

  switch (ah_message_get_kind (message))
    {
    case AH_MESSAGE_REPLY:
      {
        const char *text;
        gsize text_len;

        text = ah_message_get_data (message, &text_len);
        recount = wc_counts_new ();
        wc_count_words (text, text_len, recount);
        reason = wc_counts_diff (pending->claimed, recount);
      }
      break;
    case AH_MESSAGE_TIMEOUT:
      reason = g_strdup_printf (VALIDATOR_SUBJECT_CHUNK " request timed out after %u ms",
                                self->timeout_ms);
      break;
    case AH_MESSAGE_NO_RESPONDERS:
      reason = g_strdup ("no agent answers " VALIDATOR_SUBJECT_CHUNK);
      break;
    case AH_MESSAGE_PUBLISH:
    case AH_MESSAGE_DIRECT:
    case AH_MESSAGE_REQUEST:
    default:
      g_assert_not_reached ();
    }

  if (reason == NULL)
    {
      gsize size;
      const char *data = g_bytes_get_data (pending->payload, &size);

      ok = validator_publish (ctx, VALIDATOR_SUBJECT_VALIDATED, data, size, pending->id, error);
    }
  else
    ok = validator_reject (ctx, pending->id, pending->total, reason, error);

  g_hash_table_remove (self->pending, &correlation);
  return ok;
}

static gboolean
validator_handle_batch (AhContext              *ctx,
                        gpointer                state,
                        const AhMessage * const *messages,
                        guint                   n_messages,
                        GError                **error)
{
  ValidatorState *self = state;
  GError *first_error = NULL;

  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      AhMessageKind kind = ah_message_get_kind (message);
      GError *local_error = NULL;
      gboolean ok;

      if (kind == AH_MESSAGE_REPLY || kind == AH_MESSAGE_TIMEOUT
          || kind == AH_MESSAGE_NO_RESPONDERS)
        ok = validator_handle_answer (ctx, self, message, &local_error);
      else if ((kind == AH_MESSAGE_PUBLISH || kind == AH_MESSAGE_DIRECT)
               && g_str_equal (ah_message_get_subject (message), VALIDATOR_SUBJECT_RESULTS))
        ok = validator_handle_result (ctx, self, message, &local_error);
      else
        {
          ok = FALSE;
          g_set_error (&local_error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                       "unexpected message on '%s' (validator takes "
                       VALIDATOR_SUBJECT_RESULTS " and the answers to its requests)",
                       ah_message_get_subject (message));
        }
      if (!ok)
        wc_keep_first_error (&first_error, local_error);
    }

  if (first_error != NULL)
    {
      g_propagate_error (error, first_error);
      return FALSE;
    }
  return TRUE;
}

/* The default and range agent_init applies, so that validate reports a
 * bad value before any agent starts. */
static const AhConfigKey validator_config_schema[] = {
  { .name = "timeout_ms", .type = AH_CONFIG_INT, .default_value = "2000",
    .min = 1, .max = VALIDATOR_MAX_TIMEOUT_MS,
    .description = "How long to wait for the chunk's text, in milliseconds" },
  AH_CONFIG_KEY_END
};

AH_PLUGIN_DEFINE (validator,
  .version        = "1.0.0",
  .description    = "Recounts each chunk and validates or rejects its word count",
  .state_size     = sizeof (ValidatorState),
  .agent_init     = validator_agent_init,
  .agent_finalize = validator_agent_finalize,
  .handle_batch   = validator_handle_batch,
  .config_schema  = validator_config_schema)
