/* SPDX-License-Identifier: MIT */
/* transform: the middle stage of the pipeline, a stateless pool. Counts
 * the words of each line published on "pipeline.lines" and publishes the
 * count, as decimal text, on "pipeline.counts". A line that is not UTF-8
 * is refused: the failure is reported, the other lines of the batch are
 * still counted.
 */
#include <agenthost/agenthost.h>

#include <string.h>

/* No keys: an empty schema makes validate refuse any `config:` given to
 * this type, instead of silently ignoring a typo. */
static const AhConfigKey transform_config[] = {
  AH_CONFIG_KEY_END
};

static guint
transform_count_words (const char *text,
                       gsize       size)
{
  guint n_words = 0;
  gboolean in_word = FALSE;

  for (gsize i = 0; i < size; i++)
    {
      gboolean space = g_ascii_isspace (text[i]);

      if (!space && !in_word)
        n_words++;
      in_word = !space;
    }
  return n_words;
}

static gboolean
transform_handle_line (AhContext       *ctx,
                       const AhMessage *message,
                       GError         **error)
{
  gsize size;
  const char *text = ah_message_get_data (message, &size);
  char count[16];

  if (!g_utf8_validate_len (text, size, NULL))
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "a line of %" G_GSIZE_FORMAT " bytes on '%s' is not UTF-8", size,
                   ah_message_get_subject (message));
      return FALSE;
    }
  g_snprintf (count, sizeof count, "%u", transform_count_words (text, size));
  if (!ah_publish_string (ctx, "pipeline.counts", count))
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "the bus refused a count on pipeline.counts");
      return FALSE;
    }
  return TRUE;
}

static gboolean
transform_handle_batch (AhContext               *ctx,
                        gpointer                 state,
                        const AhMessage * const *messages,
                        guint                    n_messages,
                        GError                 **error)
{
  GError *first_error = NULL;

  for (guint i = 0; i < n_messages; i++)
    {
      GError *local_error = NULL;

      if (!transform_handle_line (ctx, messages[i], &local_error) && first_error == NULL)
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

AH_PLUGIN_DEFINE (transform,
  .version       = "1.0.0",
  .description   = "Counts the words of each line on pipeline.lines, publishes pipeline.counts",
  .handle_batch  = transform_handle_batch,
  .config_schema = transform_config)
