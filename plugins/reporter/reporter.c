/* SPDX-License-Identifier: MIT */
/* reporter: tallies the validated counts in shards and prints the report.
 *
 * Every reporter sees every validated (and rejected) chunk: broadcast
 * delivery. Reporter i keeps only the words whose g_str_hash() % shards
 * is i, so the tally is split without any coordination. Once it has seen
 * every chunk of the corpus it publishes its shard's top words and totals
 * on report.shard (broadcast); reporter 0 merges the `shards` reports,
 * prints the report and publishes it on report.done.
 *
 * The merge is exact: the shards hold disjoint words, so the corpus top N
 * is within the union of the shards' top N (all ranked the same way).
 *
 * Config: `shards` (default 5; must equal the pool size), `top` (default
 * 10).
 */
#include <agenthost/agenthost.h>

#include "../wordcount/wordcount-text.h"

#define REPORTER_SUBJECT_VALIDATED "results.validated"
#define REPORTER_SUBJECT_REJECTED  "results.rejected"
#define REPORTER_SUBJECT_SHARD     "report.shard"
#define REPORTER_SUBJECT_DONE      "report.done"
/* Shard totals are sums of at most WC_MAX_CHUNKS chunk counts; this bound
 * keeps the sum of WC_MAX_SHARDS of them far from overflowing. */
#define REPORTER_MAX_SHARD_TOTAL   (G_GUINT64_CONSTANT (1) << 53)

typedef enum {
  REPORTER_CHUNK_UNSEEN = 0,
  REPORTER_CHUNK_VALIDATED,
  REPORTER_CHUNK_REJECTED,
} ReporterChunkState;

typedef struct {
  guint  chunk;
  char  *reason;     /* one line, escaped */
} ReporterRejection;

typedef struct {
  guint       index;
  guint       shards;
  guint       top;

  /* Known from the first result on; every later one must agree. */
  guint       total_chunks;
  guint8     *chunks;            /* ReporterChunkState per chunk */
  guint       n_validated;
  guint       n_rejected;
  GHashTable *tally;             /* this shard's words */
  gboolean    shard_published;

  /* Reporter 0 only: the merge. */
  GHashTable *merged;            /* the union of the shards' top words */
  guint64     corpus_words;
  guint64     corpus_distinct;
  guint8     *shard_merged;      /* per shard: its report is in */
  guint       n_shards_merged;
  GPtrArray  *rejections;        /* (element-type ReporterRejection) by arrival */
  gboolean    reported;
} ReporterState;

static void
reporter_rejection_free (gpointer data)
{
  ReporterRejection *rejection = data;

  g_free (rejection->reason);
  g_free (rejection);
}

static gboolean
reporter_agent_init (AhContext *ctx,
                     gpointer   state,
                     GError   **error)
{
  ReporterState *self = state;

  if (!wc_config_get_uint (ctx, "shards", 5, 1, WC_MAX_SHARDS, &self->shards, error)
      || !wc_config_get_uint (ctx, "top", 10, 1, WC_MAX_TOP, &self->top, error))
    return FALSE;

  self->index = ah_context_get_index (ctx);
  if (self->index >= self->shards)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_CONFIG,
                   "reporter %u has no shard: config 'shards' is %u and must equal "
                   "the pool size", self->index, self->shards);
      return FALSE;
    }

  self->tally = wc_counts_new ();
  if (self->index == 0)
    {
      self->merged = wc_counts_new ();
      self->shard_merged = g_new0 (guint8, self->shards);
      self->rejections = g_ptr_array_new_with_free_func (reporter_rejection_free);
    }

  return TRUE;
}

static void
reporter_agent_finalize (AhContext *ctx,
                         gpointer   state)
{
  ReporterState *self = state;

  g_clear_pointer (&self->chunks, g_free);
  g_clear_pointer (&self->tally, g_hash_table_unref);
  g_clear_pointer (&self->merged, g_hash_table_unref);
  g_clear_pointer (&self->shard_merged, g_free);
  g_clear_pointer (&self->rejections, g_ptr_array_unref);
}

static gboolean
reporter_publish (AhContext  *ctx,
                  const char *subject,
                  GString    *payload,
                  GError    **error)
{
  if (!ah_publish (ctx, subject, payload->str, payload->len))
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "the bus refused the message on %s", subject);
      return FALSE;
    }
  return TRUE;
}

/* Records that chunk @id is settled; the first result fixes the number
 * of chunks. */
static gboolean
reporter_settle_chunk (ReporterState      *self,
                       guint               id,
                       guint               total,
                       ReporterChunkState  how,
                       const char         *what,
                       GError            **error)
{
  if (self->total_chunks == 0)
    {
      self->total_chunks = total;
      self->chunks = g_new0 (guint8, total);
    }
  else if (total != self->total_chunks)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "%s: chunk %u says the corpus has %u chunks, earlier results said %u",
                   what, id, total, self->total_chunks);
      return FALSE;
    }
  if (self->chunks[id] != REPORTER_CHUNK_UNSEEN)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "%s: chunk %u was already %s", what, id,
                   self->chunks[id] == REPORTER_CHUNK_VALIDATED ? "validated" : "rejected");
      return FALSE;
    }

  self->chunks[id] = (guint8) how;
  if (how == REPORTER_CHUNK_VALIDATED)
    self->n_validated++;
  else
    self->n_rejected++;

  return TRUE;
}

static void
reporter_merge_shard (ReporterState *self,
                      guint          shard,
                      guint64        words,
                      guint64        distinct,
                      GHashTable    *top_words)
{
  GHashTableIter iter;
  gpointer value;

  g_hash_table_iter_init (&iter, top_words);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      const WcWordCount *entry = value;

      wc_counts_add (self->merged, entry->word, entry->count);
    }
  self->corpus_words += words;
  self->corpus_distinct += distinct;
  self->shard_merged[shard] = TRUE;
  self->n_shards_merged++;
}

static gint
reporter_compare_rejections (gconstpointer a,
                             gconstpointer b)
{
  const ReporterRejection *x = *(const ReporterRejection * const *) a;
  const ReporterRejection *y = *(const ReporterRejection * const *) b;

  return x->chunk < y->chunk ? -1 : x->chunk > y->chunk;
}

static GString *
reporter_format_report (ReporterState *self)
{
  g_autoptr(GPtrArray) ranked = wc_counts_sorted (self->merged, wc_compare_by_count);
  GString *out = g_string_new (NULL);
  guint n_top = MIN (self->top, ranked->len);
  int width = 4;

  for (guint i = 0; i < n_top; i++)
    {
      const WcWordCount *entry = g_ptr_array_index (ranked, i);

      width = MAX (width, (int) strlen (entry->word));
    }

  g_string_append (out, "word count report\n");
  g_string_append_printf (out, "  corpus: %u chunks, %" G_GUINT64_FORMAT " words, %"
                          G_GUINT64_FORMAT " distinct words\n",
                          self->total_chunks, self->corpus_words, self->corpus_distinct);
  if (n_top == 0)
    g_string_append (out, "  top words: none\n");
  else
    g_string_append_printf (out, "  top %u words:\n", n_top);
  for (guint i = 0; i < n_top; i++)
    {
      const WcWordCount *entry = g_ptr_array_index (ranked, i);

      g_string_append_printf (out, "    %2u. %-*s %8" G_GUINT64_FORMAT "\n",
                              i + 1, width, entry->word, entry->count);
    }
  g_string_append_printf (out, "  validated: %u/%u chunks\n",
                          self->n_validated, self->total_chunks);
  /* By chunk, not by arrival, so the report stays deterministic. */
  g_ptr_array_sort (self->rejections, reporter_compare_rejections);
  for (guint i = 0; i < self->rejections->len; i++)
    {
      const ReporterRejection *rejection = g_ptr_array_index (self->rejections, i);

      g_string_append_printf (out, "  rejected: chunk %u: %s\n",
                              rejection->chunk, rejection->reason);
    }

  return out;
}

/* Reporter 0, once every shard is in: print, then tell whoever listens. */
static gboolean
reporter_maybe_report (AhContext     *ctx,
                       ReporterState *self,
                       GError       **error)
{
  g_autoptr(GString) report = NULL;

  if (self->reported || self->n_shards_merged < self->shards)
    return TRUE;
  self->reported = TRUE;

  report = reporter_format_report (self);
  g_print ("%s", report->str);

  return reporter_publish (ctx, REPORTER_SUBJECT_DONE, report, error);
}

/* Once every chunk is settled: this shard's totals and top words. */
static gboolean
reporter_maybe_publish_shard (AhContext     *ctx,
                              ReporterState *self,
                              GError       **error)
{
  g_autoptr(GString) payload = NULL;
  guint64 words;
  guint distinct;

  if (self->shard_published || self->total_chunks == 0
      || self->n_validated + self->n_rejected < self->total_chunks)
    return TRUE;
  self->shard_published = TRUE;

  words = wc_counts_total (self->tally);
  distinct = g_hash_table_size (self->tally);
  payload = g_string_new (NULL);
  g_string_printf (payload, "shard %u %u %" G_GUINT64_FORMAT " %u\n",
                   self->index, self->shards, words, distinct);
  wc_counts_append_lines (payload, self->tally, wc_compare_by_count, self->top);

  /* Reporter 0 takes its own shard directly, whether or not the bus
   * hands its own broadcast back to it. */
  if (self->index == 0)
    {
      g_autoptr(GHashTable) top_words = wc_counts_new ();
      g_autoptr(GPtrArray) ranked = wc_counts_sorted (self->tally, wc_compare_by_count);

      for (guint i = 0; i < MIN (self->top, ranked->len); i++)
        {
          const WcWordCount *entry = g_ptr_array_index (ranked, i);

          wc_counts_add (top_words, entry->word, entry->count);
        }
      reporter_merge_shard (self, 0, words, distinct, top_words);
      if (!reporter_maybe_report (ctx, self, error))
        return FALSE;
    }

  return reporter_publish (ctx, REPORTER_SUBJECT_SHARD, payload, error);
}

static gboolean
reporter_handle_validated (AhContext       *ctx,
                           ReporterState   *self,
                           const AhMessage *message,
                           GError         **error)
{
  g_autoptr(GHashTable) counts = wc_counts_new ();
  const char *what = REPORTER_SUBJECT_VALIDATED " payload";
  const char *data, *body;
  gsize size, body_len;
  guint id, total;
  guint64 header_words, listed_words;
  GHashTableIter iter;
  gpointer value;

  data = ah_message_get_data (message, &size);
  if (!wc_parse_chunk_header (data, size, what, TRUE, &id, &total, &header_words,
                              &body, &body_len, error)
      || !wc_parse_counts (body, body_len, what, counts, &listed_words, error))
    return FALSE;
  if (header_words != listed_words)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "%s: chunk %u: header says %" G_GUINT64_FORMAT " words, the lines "
                   "add up to %" G_GUINT64_FORMAT, what, id, header_words, listed_words);
      return FALSE;
    }
  if (!reporter_settle_chunk (self, id, total, REPORTER_CHUNK_VALIDATED, what, error))
    return FALSE;

  g_hash_table_iter_init (&iter, counts);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      const WcWordCount *entry = value;

      if (g_str_hash (entry->word) % self->shards == self->index)
        wc_counts_add (self->tally, entry->word, entry->count);
    }

  return reporter_maybe_publish_shard (ctx, self, error);
}

static gboolean
reporter_handle_rejected (AhContext       *ctx,
                          ReporterState   *self,
                          const AhMessage *message,
                          GError         **error)
{
  const char *what = REPORTER_SUBJECT_REJECTED " payload";
  const char *data, *reason;
  gsize size, reason_len;
  guint id, total;

  data = ah_message_get_data (message, &size);
  if (!wc_parse_chunk_header (data, size, what, FALSE, &id, &total, NULL,
                              &reason, &reason_len, error)
      || !reporter_settle_chunk (self, id, total, REPORTER_CHUNK_REJECTED, what, error))
    return FALSE;

  if (self->index == 0)
    {
      g_autofree char *line = NULL;
      ReporterRejection *rejection = g_new0 (ReporterRejection, 1);

      while (reason_len > 0 && reason[reason_len - 1] == '\n')
        reason_len--;
      /* Escaped: a reason is one line of the report, whatever it holds. */
      line = g_strndup (reason, MIN (reason_len, 200));
      rejection->chunk = id;
      rejection->reason = g_strescape (line, NULL);
      g_ptr_array_add (self->rejections, rejection);
    }

  return reporter_maybe_publish_shard (ctx, self, error);
}

static gboolean
reporter_handle_shard (AhContext       *ctx,
                       ReporterState   *self,
                       const AhMessage *message,
                       GError         **error)
{
  g_autoptr(GHashTable) top_words = NULL;
  const char *what = REPORTER_SUBJECT_SHARD " payload";
  const char *data, *body;
  gsize size, body_len;
  guint64 fields[4];
  guint64 listed_words;

  /* Only reporter 0 merges; the others get the broadcast and drop it. */
  if (self->index != 0)
    return TRUE;

  data = ah_message_get_data (message, &size);
  if (!wc_parse_header (data, size, what, "shard", "shard INDEX SHARDS WORDS DISTINCT", 4,
                        REPORTER_MAX_SHARD_TOTAL, fields, &body, &body_len, error))
    return FALSE;
  if (fields[1] != self->shards || fields[0] >= fields[1])
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "%s: shard %" G_GUINT64_FORMAT " of %" G_GUINT64_FORMAT
                   " does not fit this reporter's %u shards",
                   what, fields[0], fields[1], self->shards);
      return FALSE;
    }
  /* Its own report comes back too when the bus delivers broadcasts to the
   * publisher; it was merged already. */
  if (self->shard_merged[fields[0]])
    return TRUE;

  top_words = wc_counts_new ();
  if (!wc_parse_counts (body, body_len, what, top_words, &listed_words, error))
    return FALSE;
  if (g_hash_table_size (top_words) > self->top || listed_words > fields[2])
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "%s: shard %" G_GUINT64_FORMAT " lists more than its top %u words "
                   "or more words than its total", what, fields[0], self->top);
      return FALSE;
    }

  reporter_merge_shard (self, (guint) fields[0], fields[2], fields[3], top_words);

  return reporter_maybe_report (ctx, self, error);
}

static gboolean
reporter_handle_batch (AhContext              *ctx,
                       gpointer                state,
                       const AhMessage * const *messages,
                       guint                   n_messages,
                       GError                **error)
{
  ReporterState *self = state;
  GError *first_error = NULL;

  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      const char *subject = ah_message_get_subject (message);
      AhMessageKind kind = ah_message_get_kind (message);
      GError *local_error = NULL;
      gboolean ok;

      if (kind != AH_MESSAGE_PUBLISH && kind != AH_MESSAGE_DIRECT)
        {
          ok = FALSE;
          g_set_error (&local_error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                       "unexpected message kind on '%s' (reporter takes published messages)",
                       subject);
        }
      else if (g_str_equal (subject, REPORTER_SUBJECT_VALIDATED))
        ok = reporter_handle_validated (ctx, self, message, &local_error);
      else if (g_str_equal (subject, REPORTER_SUBJECT_REJECTED))
        ok = reporter_handle_rejected (ctx, self, message, &local_error);
      else if (g_str_equal (subject, REPORTER_SUBJECT_SHARD))
        ok = reporter_handle_shard (ctx, self, message, &local_error);
      else
        {
          ok = FALSE;
          g_set_error (&local_error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                       "unexpected subject '%s' (reporter takes " REPORTER_SUBJECT_VALIDATED
                       ", " REPORTER_SUBJECT_REJECTED " and " REPORTER_SUBJECT_SHARD ")",
                       subject);
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

/* The defaults and ranges agent_init applies, so that validate reports a
 * bad value before any agent starts. That shards must equal the pool
 * size is beyond a schema: agent_init still checks it. */
static const AhConfigKey reporter_config_schema[] = {
  { .name = "shards", .type = AH_CONFIG_INT, .default_value = "5", .min = 1, .max = WC_MAX_SHARDS,
    .description = "Shards of the tally, one per reporter: must equal pool_size" },
  { .name = "top", .type = AH_CONFIG_INT, .default_value = "10", .min = 1, .max = WC_MAX_TOP,
    .description = "Most frequent words in the report" },
  AH_CONFIG_KEY_END
};

AH_PLUGIN_DEFINE (reporter,
  .version        = "1.0.0",
  .description    = "Tallies validated word counts in shards and prints the report",
  .state_size     = sizeof (ReporterState),
  .agent_init     = reporter_agent_init,
  .agent_finalize = reporter_agent_finalize,
  .handle_batch   = reporter_handle_batch,
  .config_schema  = reporter_config_schema)
