/* SPDX-License-Identifier: MIT */
/* wordcount: counts the words of one chunk of the corpus.
 *
 * Takes "chunk ID TOTAL\n<text>" on tasks.count (queue delivery: each
 * chunk goes to one agent of the pool) and publishes
 * "chunk ID TOTAL WORDS\n" plus one "word count\n" line per distinct word,
 * sorted by word, on results.count. Stateless: any agent can take any
 * chunk, which is what lets the pool share the work.
 */
#include <agenthost/agenthost.h>

#include "wordcount-text.h"

#define WORDCOUNT_SUBJECT_TASKS   "tasks.count"
#define WORDCOUNT_SUBJECT_RESULTS "results.count"

static gboolean
wordcount_handle_task (AhContext       *ctx,
                       const AhMessage *message,
                       GError         **error)
{
  g_autoptr(GHashTable) counts = wc_counts_new ();
  g_autoptr(GString) result = NULL;
  const char *data, *text;
  gsize size, text_len;
  guint id, total;

  data = ah_message_get_data (message, &size);
  if (!wc_parse_chunk_header (data, size, WORDCOUNT_SUBJECT_TASKS " payload", FALSE,
                              &id, &total, NULL, &text, &text_len, error))
    return FALSE;

  wc_count_words (text, text_len, counts);
  result = wc_format_result (id, total, counts);
  if (!ah_publish (ctx, WORDCOUNT_SUBJECT_RESULTS, result->str, result->len))
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "chunk %u: the bus refused the result on %s", id, WORDCOUNT_SUBJECT_RESULTS);
      return FALSE;
    }

  return TRUE;
}

static gboolean
wordcount_handle_batch (AhContext              *ctx,
                        gpointer                state,
                        const AhMessage * const *messages,
                        guint                   n_messages,
                        GError                **error)
{
  GError *first_error = NULL;

  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      GError *local_error = NULL;

      AhMessageKind kind = ah_message_get_kind (message);

      if ((kind != AH_MESSAGE_PUBLISH && kind != AH_MESSAGE_DIRECT)
          || !g_str_equal (ah_message_get_subject (message), WORDCOUNT_SUBJECT_TASKS))
        {
          wc_keep_first_error (&first_error,
                               g_error_new (AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                                            "unexpected message on '%s' (wordcount takes "
                                            "published messages on " WORDCOUNT_SUBJECT_TASKS ")",
                                            ah_message_get_subject (message)));
          continue;
        }
      if (!wordcount_handle_task (ctx, message, &local_error))
        wc_keep_first_error (&first_error, local_error);
    }

  if (first_error != NULL)
    {
      g_propagate_error (error, first_error);
      return FALSE;
    }
  return TRUE;
}

/* No keys: a `config:` on a wordcount type is a mistake validate reports. */
static const AhConfigKey wordcount_config_schema[] = {
  AH_CONFIG_KEY_END
};

AH_PLUGIN_DEFINE (wordcount,
  .version       = "1.0.0",
  .description   = "Counts the words of corpus chunks (tasks.count -> results.count)",
  .handle_batch  = wordcount_handle_batch,
  .config_schema = wordcount_config_schema)
