/* SPDX-License-Identifier: MIT */
/* sink: the last stage of the pipeline. Adds up the word counts
 * published on "pipeline.counts", answers requests on "pipeline.totals"
 * with "lines=L words=W", and prints the totals when it stops.
 *
 * The counts arrive in no particular order (several transform agents
 * work at once), which is why the sink only keeps sums.
 */
#include <agenthost/agenthost.h>

#include <string.h>

typedef struct {
  guint64 n_lines;
  guint64 n_words;
} Sink;

static const AhConfigKey sink_config[] = {
  AH_CONFIG_KEY_END
};

static gboolean
sink_handle_message (AhContext       *ctx,
                     Sink            *self,
                     const AhMessage *message,
                     GError         **error)
{
  const char *subject = ah_message_get_subject (message);
  AhMessageKind kind = ah_message_get_kind (message);

  if (kind == AH_MESSAGE_REQUEST && g_str_equal (subject, "pipeline.totals"))
    {
      g_autofree char *totals = g_strdup_printf ("lines=%" G_GUINT64_FORMAT
                                                 " words=%" G_GUINT64_FORMAT,
                                                 self->n_lines, self->n_words);

      if (ah_reply (ctx, message, totals, strlen (totals)))
        return TRUE;
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "the bus refused the reply on pipeline.totals");
      return FALSE;
    }
  if (kind == AH_MESSAGE_PUBLISH && g_str_equal (subject, "pipeline.counts"))
    {
      gsize size;
      const char *data = ah_message_get_data (message, &size);
      g_autofree char *text = g_strndup (data, size);
      guint64 n_words;

      if (strlen (text) != size
          || !g_ascii_string_to_unsigned (text, 10, 0, G_MAXUINT32, &n_words, NULL))
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                       "pipeline.counts: '%.20s' is not a word count",
                       g_utf8_validate (text, -1, NULL) ? text : "(binary)");
          return FALSE;
        }
      self->n_lines++;
      self->n_words += n_words;
      return TRUE;
    }

  g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
               "the sink takes counts on pipeline.counts and requests on "
               "pipeline.totals, got a message on '%s'", subject);
  return FALSE;
}

static gboolean
sink_handle_batch (AhContext               *ctx,
                   gpointer                 state,
                   const AhMessage * const *messages,
                   guint                    n_messages,
                   GError                 **error)
{
  Sink *self = state;
  GError *first_error = NULL;

  for (guint i = 0; i < n_messages; i++)
    {
      GError *local_error = NULL;

      if (!sink_handle_message (ctx, self, messages[i], &local_error) && first_error == NULL)
        first_error = g_steal_pointer (&local_error);
      g_clear_error (&local_error);
    }

  if (first_error != NULL)
    {
      g_propagate_error (error, first_error);
      return FALSE;
    }
  return TRUE;
}

static void
sink_finalize (AhContext *ctx,
               gpointer   state)
{
  Sink *self = state;

  g_print ("sink %u: %" G_GUINT64_FORMAT " lines, %" G_GUINT64_FORMAT " words\n",
           ah_context_get_index (ctx), self->n_lines, self->n_words);
}

AH_PLUGIN_DEFINE (sink,
  .version        = "1.0.0",
  .description    = "Sums the word counts on pipeline.counts; answers pipeline.totals",
  .state_size     = sizeof (Sink),
  .agent_finalize = sink_finalize,
  .handle_batch   = sink_handle_batch,
  .config_schema  = sink_config)
