/* SPDX-License-Identifier: MIT */
/* Text logic of the word-count demo, shared by its four plugins.
 *
 * Header-only on purpose: every plugin stays one self-contained shared
 * object, built like an out-of-tree plugin, and gets its own static copy
 * of these functions. They are pure (no context, no bus), so the unit
 * test exercises them directly.
 *
 * Payload formats (all ASCII, every line ends in '\n'):
 *   tasks.count        "chunk ID TOTAL\n" then the chunk's text
 *   results.count      "chunk ID TOTAL WORDS\n" then "word count\n" lines,
 *   results.validated  sorted by word, one per distinct word
 *   results.rejected   "chunk ID TOTAL\n" then one line: the reason
 *   report.shard       "shard INDEX SHARDS WORDS DISTINCT\n" then the
 *                      shard's top "word count\n" lines
 *   corpus.chunk       request "ID", reply the chunk's text
 */
#pragma once

#include <agenthost/agenthost.h>

#include <string.h>

/* Bounds on numbers read from payloads and configuration, so a hostile
 * message can make no plugin allocate or loop without limit. */
#define WC_MAX_CHUNKS        100000
#define WC_MAX_COUNT         G_GUINT64_CONSTANT (1000000000000)
#define WC_MAX_HEADER_LEN    128
#define WC_MAX_SHARDS        1024
#define WC_MAX_TOP           1000
/* A snippet of bad input quoted in an error message stays readable. */
#define WC_SNIPPET_LEN       40

/* One distinct word and its count. The word is stored inline so that a
 * counting table needs one allocation per distinct word and a count can
 * be bumped in place: the table's key is @word, its value the entry. */
typedef struct {
  guint64 count;
  char    word[];
} WcWordCount;

static inline GHashTable *
wc_counts_new (void)
{
  return g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_free);
}

static inline WcWordCount *
wc_counts_lookup (GHashTable *counts,
                  const char *word)
{
  return g_hash_table_lookup (counts, word);
}

/* Adds @n to @word's count, creating the entry on first sight. */
static inline void
wc_counts_add (GHashTable *counts,
               const char *word,
               guint64     n)
{
  WcWordCount *entry = g_hash_table_lookup (counts, word);
  gsize len;

  if (entry != NULL)
    {
      entry->count += n;
      return;
    }
  len = strlen (word);
  entry = g_malloc (sizeof (WcWordCount) + len + 1);
  entry->count = n;
  memcpy (entry->word, word, len + 1);
  g_hash_table_insert (counts, entry->word, entry);
}

static inline guint64
wc_counts_total (GHashTable *counts)
{
  GHashTableIter iter;
  gpointer value;
  guint64 total = 0;

  g_hash_table_iter_init (&iter, counts);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    total += ((WcWordCount *) value)->count;

  return total;
}

static inline gboolean
wc_is_word_byte (char c)
{
  return g_ascii_isalpha (c) || c == '\'';
}

/* Tokenizes @text: a word is a run of ASCII letters and apostrophes with
 * the apostrophes at either end trimmed ("'tis" counts as "tis", "dogs'"
 * as "dogs", "don't" stays whole), lowercased. Any other byte separates
 * words, so UTF-8 sequences and digits never join a word. Adds every
 * word to @counts and returns how many there were. */
static inline guint64
wc_count_words (const char *text,
                gsize       len,
                GHashTable *counts)
{
  g_autoptr(GString) word = g_string_sized_new (32);
  guint64 total = 0;
  gsize pos = 0;

  while (pos < len)
    {
      gsize start, end;

      if (!wc_is_word_byte (text[pos]))
        {
          pos++;
          continue;
        }
      start = pos;
      while (pos < len && wc_is_word_byte (text[pos]))
        pos++;
      end = pos;
      while (start < end && text[start] == '\'')
        start++;
      while (end > start && text[end - 1] == '\'')
        end--;
      if (start == end)
        continue;

      g_string_truncate (word, 0);
      for (gsize i = start; i < end; i++)
        g_string_append_c (word, g_ascii_tolower (text[i]));
      wc_counts_add (counts, word->str, 1);
      total++;
    }

  return total;
}

/* TRUE when @word is something wc_count_words() can produce. */
static inline gboolean
wc_word_is_valid (const char *word,
                  gsize       len)
{
  if (len == 0 || word[0] == '\'' || word[len - 1] == '\'')
    return FALSE;
  for (gsize i = 0; i < len; i++)
    if (!(g_ascii_islower (word[i]) || word[i] == '\''))
      return FALSE;

  return TRUE;
}

/* Quotes at most WC_SNIPPET_LEN bytes of untrusted input for an error
 * message, escaped so that it stays on one line. */
static inline char *
wc_snippet (const char *data,
            gsize       len)
{
  g_autofree char *raw = g_strndup (data, MIN (len, WC_SNIPPET_LEN));
  g_autofree char *escaped = g_strescape (raw, NULL);

  return g_strdup_printf ("'%s'%s", escaped, len > WC_SNIPPET_LEN ? "..." : "");
}

/* Parses a non-negative decimal of 1 to 20 digits, at most @max. */
static inline gboolean
wc_parse_decimal (const char *text,
                  gsize       len,
                  guint64     max,
                  guint64    *ret_value)
{
  guint64 value = 0;

  if (len == 0 || len > 20)
    return FALSE;
  for (gsize i = 0; i < len; i++)
    {
      guint digit;

      if (!g_ascii_isdigit (text[i]))
        return FALSE;
      digit = (guint) (text[i] - '0');
      if (digit > max || value > (max - digit) / 10)
        return FALSE;
      value = value * 10 + digit;
    }
  *ret_value = value;

  return TRUE;
}

/* Splits off the first line of a payload: "@keyword F1 F2 ... Fn\n" with
 * exactly @n_fields decimal fields, each at most @max. @what names the
 * payload in messages ("tasks.count payload"), @form the expected line
 * ("chunk ID TOTAL"). On success @ret_body points just past the line. */
static inline gboolean
wc_parse_header (const char  *data,
                 gsize        size,
                 const char  *what,
                 const char  *keyword,
                 const char  *form,
                 guint        n_fields,
                 guint64      max,
                 guint64     *ret_fields,
                 const char **ret_body,
                 gsize       *ret_body_len,
                 GError     **error)
{
  const char *newline = memchr (data, '\n', MIN (size, WC_MAX_HEADER_LEN));
  g_autofree char *line = NULL;
  g_auto(GStrv) tokens = NULL;

  if (newline == NULL)
    {
      g_autofree char *snippet = wc_snippet (data, size);

      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "%s: no header line '%s' (got %s)", what, form, snippet);
      return FALSE;
    }

  line = g_strndup (data, (gsize) (newline - data));
  tokens = g_strsplit (line, " ", -1);
  if (g_strv_length (tokens) != n_fields + 1 || !g_str_equal (tokens[0], keyword))
    goto malformed;
  for (guint i = 0; i < n_fields; i++)
    if (!wc_parse_decimal (tokens[i + 1], strlen (tokens[i + 1]), max, &ret_fields[i]))
      goto malformed;

  *ret_body = newline + 1;
  *ret_body_len = size - (gsize) (newline + 1 - data);
  return TRUE;

malformed:
  {
    g_autofree char *snippet = wc_snippet (line, strlen (line));

    g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                 "%s: malformed header: expected '%s', got %s", what, form, snippet);
    return FALSE;
  }
}

/* The header of tasks.count, results.* payloads: "chunk ID TOTAL" and, with
 * @with_words, a fourth field WORDS. Checks 1 <= TOTAL <= WC_MAX_CHUNKS
 * and ID < TOTAL. */
static inline gboolean
wc_parse_chunk_header (const char  *data,
                       gsize        size,
                       const char  *what,
                       gboolean     with_words,
                       guint       *ret_id,
                       guint       *ret_total,
                       guint64     *ret_words,
                       const char **ret_body,
                       gsize       *ret_body_len,
                       GError     **error)
{
  guint64 fields[3] = { 0, 0, 0 };

  if (!wc_parse_header (data, size, what, "chunk",
                        with_words ? "chunk ID TOTAL WORDS" : "chunk ID TOTAL",
                        with_words ? 3 : 2, G_MAXUINT64, fields,
                        ret_body, ret_body_len, error))
    return FALSE;
  if (fields[1] < 1 || fields[1] > WC_MAX_CHUNKS)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "%s: TOTAL must be between 1 and %u, got %" G_GUINT64_FORMAT,
                   what, WC_MAX_CHUNKS, fields[1]);
      return FALSE;
    }
  if (fields[0] >= fields[1])
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "%s: chunk ID %" G_GUINT64_FORMAT " is not below TOTAL %" G_GUINT64_FORMAT,
                   what, fields[0], fields[1]);
      return FALSE;
    }
  if (with_words && fields[2] > WC_MAX_COUNT)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "%s: WORDS must be at most %" G_GUINT64_FORMAT ", got %" G_GUINT64_FORMAT,
                   what, WC_MAX_COUNT, fields[2]);
      return FALSE;
    }

  *ret_id = (guint) fields[0];
  *ret_total = (guint) fields[1];
  if (ret_words != NULL)
    *ret_words = fields[2];
  return TRUE;
}

/* Parses "word count\n" lines into @counts (which should be empty). Each
 * word must be valid, appear once, and have a count of 1..WC_MAX_COUNT.
 * @ret_total receives the sum of the counts. */
static inline gboolean
wc_parse_counts (const char *body,
                 gsize       len,
                 const char *what,
                 GHashTable *counts,
                 guint64    *ret_total,
                 GError    **error)
{
  guint64 total = 0;
  gsize pos = 0;
  guint line_number = 1;

  while (pos < len)
    {
      const char *line = body + pos;
      const char *newline = memchr (line, '\n', len - pos);
      const char *space;
      gsize line_len;
      g_autofree char *word = NULL;
      guint64 count;

      line_number++;   /* the header was line 1 */
      if (newline == NULL)
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                       "%s: line %u does not end in a newline", what, line_number);
          return FALSE;
        }
      line_len = (gsize) (newline - line);
      space = memchr (line, ' ', line_len);
      if (space == NULL
          || !wc_word_is_valid (line, (gsize) (space - line))
          || !wc_parse_decimal (space + 1, (gsize) (newline - space - 1), WC_MAX_COUNT, &count)
          || count == 0)
        {
          g_autofree char *snippet = wc_snippet (line, line_len);

          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                       "%s: line %u: expected 'word count', got %s", what, line_number, snippet);
          return FALSE;
        }
      word = g_strndup (line, (gsize) (space - line));
      if (wc_counts_lookup (counts, word) != NULL)
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                       "%s: line %u: word '%s' listed twice", what, line_number, word);
          return FALSE;
        }
      wc_counts_add (counts, word, count);
      total += count;
      pos += line_len + 1;
    }

  *ret_total = total;
  return TRUE;
}

static inline gint
wc_compare_by_word (gconstpointer a,
                    gconstpointer b)
{
  const WcWordCount *x = *(const WcWordCount * const *) a;
  const WcWordCount *y = *(const WcWordCount * const *) b;

  return strcmp (x->word, y->word);
}

/* Higher counts first; equal counts in alphabetical order, so a top-N
 * list never depends on hash table order. */
static inline gint
wc_compare_by_count (gconstpointer a,
                     gconstpointer b)
{
  const WcWordCount *x = *(const WcWordCount * const *) a;
  const WcWordCount *y = *(const WcWordCount * const *) b;

  if (x->count != y->count)
    return x->count > y->count ? -1 : 1;
  return strcmp (x->word, y->word);
}

/* The entries of @counts (borrowed: valid while @counts is unchanged),
 * sorted with @compare. */
static inline GPtrArray *
wc_counts_sorted (GHashTable   *counts,
                  GCompareFunc  compare)
{
  GPtrArray *entries = g_ptr_array_sized_new (g_hash_table_size (counts));
  GHashTableIter iter;
  gpointer value;

  g_hash_table_iter_init (&iter, counts);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    g_ptr_array_add (entries, value);
  g_ptr_array_sort (entries, compare);

  return entries;
}

/* Appends "word count\n" lines for the first @limit entries of @counts in
 * @compare order (all of them when @limit is 0). */
static inline void
wc_counts_append_lines (GString      *out,
                        GHashTable   *counts,
                        GCompareFunc  compare,
                        guint         limit)
{
  g_autoptr(GPtrArray) entries = wc_counts_sorted (counts, compare);
  guint n = limit == 0 ? entries->len : MIN (limit, entries->len);

  for (guint i = 0; i < n; i++)
    {
      const WcWordCount *entry = g_ptr_array_index (entries, i);

      g_string_append_printf (out, "%s %" G_GUINT64_FORMAT "\n", entry->word, entry->count);
    }
}

/* The results.count payload for one chunk. */
static inline GString *
wc_format_result (guint       id,
                  guint       total,
                  GHashTable *counts)
{
  GString *out = g_string_sized_new (64 + 16 * g_hash_table_size (counts));

  g_string_append_printf (out, "chunk %u %u %" G_GUINT64_FORMAT "\n",
                          id, total, wc_counts_total (counts));
  wc_counts_append_lines (out, counts, wc_compare_by_word, 0);

  return out;
}

/* Compares a claimed count with a recount. Returns NULL when they agree
 * word for word, else the first difference in alphabetical order, as one
 * line. */
static inline char *
wc_counts_diff (GHashTable *claimed,
                GHashTable *recount)
{
  g_autoptr(GPtrArray) expected = wc_counts_sorted (recount, wc_compare_by_word);
  g_autoptr(GPtrArray) got = wc_counts_sorted (claimed, wc_compare_by_word);

  for (guint i = 0; i < expected->len; i++)
    {
      const WcWordCount *want = g_ptr_array_index (expected, i);
      const WcWordCount *have = wc_counts_lookup (claimed, want->word);

      if (have == NULL)
        return g_strdup_printf ("word '%s' missing (recount %" G_GUINT64_FORMAT ")",
                                want->word, want->count);
      if (have->count != want->count)
        return g_strdup_printf ("word '%s' counted %" G_GUINT64_FORMAT
                                ", recount %" G_GUINT64_FORMAT,
                                want->word, have->count, want->count);
    }
  for (guint i = 0; i < got->len; i++)
    {
      const WcWordCount *have = g_ptr_array_index (got, i);

      if (wc_counts_lookup (recount, have->word) == NULL)
        return g_strdup_printf ("word '%s' not in the chunk", have->word);
    }

  return NULL;
}

/* Splits @len bytes of @text into @n_chunks pieces of about equal size.
 * Fills @bounds (n_chunks + 1 offsets): piece i is [bounds[i], bounds[i+1]).
 * Every inner boundary sits on an ASCII whitespace byte (or at the end),
 * so no word is ever cut in two; a piece may be empty when the text has
 * fewer words than pieces. */
static inline void
wc_split_chunks (const char *text,
                 gsize       len,
                 guint       n_chunks,
                 gsize      *bounds)
{
  bounds[0] = 0;
  for (guint i = 1; i < n_chunks; i++)
    {
      gsize pos = (gsize) ((guint64) len * i / n_chunks);

      pos = MAX (pos, bounds[i - 1]);
      while (pos < len && !g_ascii_isspace (text[pos]))
        pos++;
      bounds[i] = pos;
    }
  bounds[n_chunks] = len;
}

/* Reads an integer configuration value strictly: the context API falls
 * back to the default on a value that does not parse, and a demo that
 * silently ignores "chunks: lots" would be confusing. */
static inline gboolean
wc_config_get_uint (AhContext  *ctx,
                    const char *key,
                    guint       default_value,
                    guint       min,
                    guint       max,
                    guint      *ret_value,
                    GError    **error)
{
  const char *text = ah_config_get_string (ctx, key, NULL);
  guint64 value;

  if (text == NULL)
    {
      *ret_value = default_value;
      return TRUE;
    }
  if (!wc_parse_decimal (text, strlen (text), G_MAXUINT, &value) || value < min || value > max)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_CONFIG,
                   "config '%s' must be an integer between %u and %u, got '%s'",
                   key, min, max, text);
      return FALSE;
    }
  *ret_value = (guint) value;

  return TRUE;
}

/* Keeps the first error of a batch: the handler goes on with the other
 * messages, which are independent, and reports that first failure. */
static inline void
wc_keep_first_error (GError **first,
                     GError  *error)
{
  if (*first == NULL)
    *first = error;
  else
    g_error_free (error);
}
