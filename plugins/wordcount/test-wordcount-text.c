/* SPDX-License-Identifier: MIT */
/* Unit tests of the word-count demo's text logic (wordcount-text.h):
 * tokenizing, the payload formats, the recount comparison, the chunk
 * split and the sharded top-N merge the reporters rely on. */
#include <agenthost/agenthost.h>

#include "wordcount-text.h"

static guint64
count_of (GHashTable *counts,
          const char *word)
{
  const WcWordCount *entry = wc_counts_lookup (counts, word);

  return entry != NULL ? entry->count : 0;
}

static void
test_tokenize_basic (void)
{
  g_autoptr(GHashTable) counts = wc_counts_new ();
  const char *text = "Hello, hello WORLD.\nThe world; the END";

  g_test_summary ("Words are ASCII letters, lowercased; punctuation separates");

  g_assert_cmpuint (wc_count_words (text, strlen (text), counts), ==, 7);
  g_assert_cmpuint (g_hash_table_size (counts), ==, 4);
  g_assert_cmpuint (count_of (counts, "hello"), ==, 2);
  g_assert_cmpuint (count_of (counts, "world"), ==, 2);
  g_assert_cmpuint (count_of (counts, "the"), ==, 2);
  g_assert_cmpuint (count_of (counts, "end"), ==, 1);
  g_assert_cmpuint (wc_counts_total (counts), ==, 7);
}

static void
test_tokenize_apostrophes (void)
{
  g_autoptr(GHashTable) counts = wc_counts_new ();
  const char *text = "'Tis the dogs' bone, don't 'quote' '' ' rock'n'roll";

  g_test_summary ("Apostrophes belong to a word only inside it");

  g_assert_cmpuint (wc_count_words (text, strlen (text), counts), ==, 7);
  g_assert_cmpuint (count_of (counts, "tis"), ==, 1);
  g_assert_cmpuint (count_of (counts, "dogs"), ==, 1);
  g_assert_cmpuint (count_of (counts, "don't"), ==, 1);
  g_assert_cmpuint (count_of (counts, "quote"), ==, 1);
  g_assert_cmpuint (count_of (counts, "rock'n'roll"), ==, 1);
  g_assert_cmpuint (count_of (counts, "'"), ==, 0);
  g_assert_cmpuint (count_of (counts, ""), ==, 0);
}

static void
test_tokenize_separators (void)
{
  g_autoptr(GHashTable) counts = wc_counts_new ();
  /* "caf\xc3\xa9" is "café" in UTF-8; a NUL byte in the middle too. */
  const char text[] = "well-known a1b caf\xc3\xa9 x\0y 42";

  g_test_summary ("Digits, hyphens, non-ASCII bytes and NULs separate words");

  g_assert_cmpuint (wc_count_words (text, sizeof (text) - 1, counts), ==, 7);
  g_assert_cmpuint (count_of (counts, "well"), ==, 1);
  g_assert_cmpuint (count_of (counts, "known"), ==, 1);
  g_assert_cmpuint (count_of (counts, "a"), ==, 1);
  g_assert_cmpuint (count_of (counts, "b"), ==, 1);
  g_assert_cmpuint (count_of (counts, "caf"), ==, 1);
  g_assert_cmpuint (count_of (counts, "x"), ==, 1);
  g_assert_cmpuint (count_of (counts, "y"), ==, 1);
}

static void
test_result_roundtrip (void)
{
  g_autoptr(GHashTable) counts = wc_counts_new ();
  g_autoptr(GHashTable) parsed = wc_counts_new ();
  g_autoptr(GString) result = NULL;
  g_autoptr(GError) error = NULL;
  const char *text = "b a c a b a";
  const char *body;
  gsize body_len;
  guint id = 0, total = 0;
  guint64 words = 0, listed = 0;
  g_autofree char *diff = NULL;

  g_test_summary ("A result formats sorted by word and parses back to the same counts");

  wc_count_words (text, strlen (text), counts);
  result = wc_format_result (3, 7, counts);
  g_assert_cmpstr (result->str, ==, "chunk 3 7 6\na 3\nb 2\nc 1\n");

  g_assert_true (wc_parse_chunk_header (result->str, result->len, "test", TRUE,
                                        &id, &total, &words, &body, &body_len, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (id, ==, 3);
  g_assert_cmpuint (total, ==, 7);
  g_assert_cmpuint (words, ==, 6);
  g_assert_true (wc_parse_counts (body, body_len, "test", parsed, &listed, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (listed, ==, 6);
  diff = wc_counts_diff (parsed, counts);
  g_assert_null (diff);
}

static void
test_result_empty (void)
{
  g_autoptr(GHashTable) counts = wc_counts_new ();
  g_autoptr(GHashTable) parsed = wc_counts_new ();
  g_autoptr(GString) result = NULL;
  g_autoptr(GError) error = NULL;
  const char *body;
  gsize body_len;
  guint id = 0, total = 0;
  guint64 words = 99, listed = 99;

  g_test_summary ("A chunk without words is a header line alone");

  wc_count_words (" ,. 123 ", 8, counts);
  result = wc_format_result (0, 1, counts);
  g_assert_cmpstr (result->str, ==, "chunk 0 1 0\n");
  g_assert_true (wc_parse_chunk_header (result->str, result->len, "test", TRUE,
                                        &id, &total, &words, &body, &body_len, &error));
  g_assert_true (wc_parse_counts (body, body_len, "test", parsed, &listed, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (words, ==, 0);
  g_assert_cmpuint (listed, ==, 0);
}

typedef struct {
  const char *name;
  const char *payload;
  const char *message;   /* the whole error message */
} InvalidPayload;

static const InvalidPayload invalid_payloads[] = {
  { "no-header", "chunk 1 2 3",
    "r: no header line 'chunk ID TOTAL WORDS' (got 'chunk 1 2 3')" },
  { "empty", "",
    "r: no header line 'chunk ID TOTAL WORDS' (got '')" },
  { "keyword", "chonk 1 2 3\n",
    "r: malformed header: expected 'chunk ID TOTAL WORDS', got 'chonk 1 2 3'" },
  { "few-fields", "chunk 1 2\n",
    "r: malformed header: expected 'chunk ID TOTAL WORDS', got 'chunk 1 2'" },
  { "negative", "chunk -1 2 3\n",
    "r: malformed header: expected 'chunk ID TOTAL WORDS', got 'chunk -1 2 3'" },
  { "double-space", "chunk 1  2 3\n",
    "r: malformed header: expected 'chunk ID TOTAL WORDS', got 'chunk 1  2 3'" },
  { "overflow", "chunk 1 99999999999999999999999 3\n",
    "r: malformed header: expected 'chunk ID TOTAL WORDS', got 'chunk 1 99999999999999999999999 3'" },
  { "total-zero", "chunk 0 0 0\n",
    "r: TOTAL must be between 1 and 100000, got 0" },
  { "total-huge", "chunk 0 100001 0\n",
    "r: TOTAL must be between 1 and 100000, got 100001" },
  { "id-too-big", "chunk 5 5 0\n",
    "r: chunk ID 5 is not below TOTAL 5" },
  { "words-huge", "chunk 0 1 1000000000001\n",
    "r: WORDS must be at most 1000000000000, got 1000000000001" },
  { "no-newline", "chunk 0 1 2\na 2",
    "r: line 2 does not end in a newline" },
  { "no-count", "chunk 0 1 2\na\n",
    "r: line 2: expected 'word count', got 'a'" },
  { "upper", "chunk 0 1 2\nA 2\n",
    "r: line 2: expected 'word count', got 'A 2'" },
  { "zero-count", "chunk 0 1 2\na 1\nb 0\n",
    "r: line 3: expected 'word count', got 'b 0'" },
  { "edge-apostrophe", "chunk 0 1 1\n'a 1\n",
    "r: line 2: expected 'word count', got ''a 1'" },
  { "control", "chunk 0 1 1\na\t1\n",
    "r: line 2: expected 'word count', got 'a\\t1'" },
  { "twice", "chunk 0 1 2\na 1\na 1\n",
    "r: line 3: word 'a' listed twice" },
};

static void
test_result_invalid (gconstpointer data)
{
  const InvalidPayload *tc = data;
  g_autoptr(GHashTable) counts = wc_counts_new ();
  g_autoptr(GError) error = NULL;
  const char *body;
  gsize body_len;
  guint id = 0, total = 0;
  guint64 words = 0, listed = 0;
  gboolean ok;

  g_test_summary ("A malformed result payload fails with INVALID_MESSAGE and says why");

  ok = wc_parse_chunk_header (tc->payload, strlen (tc->payload), "r", TRUE,
                              &id, &total, &words, &body, &body_len, &error)
       && wc_parse_counts (body, body_len, "r", counts, &listed, &error);
  g_assert_false (ok);
  g_assert_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE);
  g_assert_cmpstr (error->message, ==, tc->message);
}

static void
test_result_snippet_long (void)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GString) payload = g_string_new (NULL);
  const char *body;
  gsize body_len;
  guint64 fields[2];

  g_test_summary ("A long bad header is quoted cut short, and the header line is capped");

  for (guint i = 0; i < 200; i++)
    g_string_append_c (payload, 'x');
  g_string_append_c (payload, '\n');
  g_assert_false (wc_parse_header (payload->str, payload->len, "p", "chunk", "chunk ID TOTAL",
                                   2, G_MAXUINT64, fields, &body, &body_len, &error));
  g_assert_cmpstr (error->message, ==,
                   "p: no header line 'chunk ID TOTAL' (got "
                   "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx'...)");
}

static void
test_diff_cases (void)
{
  const char *source = "to be or not to be";
  g_autoptr(GHashTable) recount = wc_counts_new ();
  struct {
    const char *claimed;
    const char *reason;
  } cases[] = {
    { "be not or to to be", NULL },
    { "be or not be", "word 'to' missing (recount 2)" },
    { "to be or not to be be", "word 'be' counted 3, recount 2" },
    { "to be or not to be maybe", "word 'maybe' not in the chunk" },
    { "", "word 'be' missing (recount 2)" },
  };

  g_test_summary ("The recount comparison names the first difference in word order");

  wc_count_words (source, strlen (source), recount);
  for (guint i = 0; i < G_N_ELEMENTS (cases); i++)
    {
      g_autoptr(GHashTable) claimed = wc_counts_new ();
      g_autofree char *reason = NULL;

      wc_count_words (cases[i].claimed, strlen (cases[i].claimed), claimed);
      reason = wc_counts_diff (claimed, recount);
      g_assert_cmpstr (reason, ==, cases[i].reason);
    }
}

static void
assert_split_is_sound (const char *text,
                       guint       n_chunks)
{
  gsize len = strlen (text);
  g_autofree gsize *bounds = g_new (gsize, n_chunks + 1);
  g_autoptr(GHashTable) whole = wc_counts_new ();
  g_autoptr(GHashTable) pieces = wc_counts_new ();
  guint64 whole_total, pieces_total = 0;
  g_autofree char *diff = NULL;

  wc_split_chunks (text, len, n_chunks, bounds);
  g_assert_cmpuint (bounds[0], ==, 0);
  g_assert_cmpuint (bounds[n_chunks], ==, len);
  for (guint i = 0; i < n_chunks; i++)
    {
      g_assert_cmpuint (bounds[i], <=, bounds[i + 1]);
      if (i > 0 && bounds[i] < len)
        g_assert_true (g_ascii_isspace (text[bounds[i]]));
      pieces_total += wc_count_words (text + bounds[i], bounds[i + 1] - bounds[i], pieces);
    }
  whole_total = wc_count_words (text, len, whole);
  g_assert_cmpuint (pieces_total, ==, whole_total);
  diff = wc_counts_diff (pieces, whole);
  g_assert_null (diff);
}

static void
test_split_sound (void)
{
  g_test_summary ("Chunks cover the text, cut only at whitespace, and count like the whole");

  assert_split_is_sound ("The quick brown fox jumps over the lazy dog, twice: the quick "
                         "brown fox jumps over the lazy dog.\nDon't stop.", 1);
  assert_split_is_sound ("The quick brown fox jumps over the lazy dog, twice: the quick "
                         "brown fox jumps over the lazy dog.\nDon't stop.", 7);
  assert_split_is_sound ("one two three", 40);
  assert_split_is_sound ("abcdefghijklmnopqrstuvwxyz", 5);
  assert_split_is_sound ("", 3);
}

static void
test_split_even (void)
{
  const char *text = "aaa bbb ccc ddd eee fff ggg hhh";
  gsize bounds[4];

  g_test_summary ("Chunks are about equal and deterministic");

  /* Targets 10 and 20 fall inside "ccc" and on "fff": each moves on to
   * the next space. */
  wc_split_chunks (text, strlen (text), 3, bounds);
  g_assert_cmpuint (bounds[0], ==, 0);
  g_assert_cmpuint (bounds[1], ==, 11);
  g_assert_cmpuint (bounds[2], ==, 23);
  g_assert_cmpuint (bounds[3], ==, 31);
}

static void
test_top_ties (void)
{
  g_autoptr(GHashTable) counts = wc_counts_new ();
  g_autoptr(GString) lines = g_string_new (NULL);
  const char *text = "pear apple fig apple pear kiwi date";

  g_test_summary ("Top-N ranks by count, then alphabetically");

  wc_count_words (text, strlen (text), counts);
  wc_counts_append_lines (lines, counts, wc_compare_by_count, 4);
  g_assert_cmpstr (lines->str, ==, "apple 2\npear 2\ndate 1\nfig 1\n");
}

static void
test_top_sharded_merge (void)
{
  const char *text = "It is a truth that the sea takes what it wants and gives back what it "
                     "likes; the keeper keeps the light and the light keeps the keeper, and "
                     "a gull is a gull in any weather, whatever the harbour board may say "
                     "about the sea, the light, the gull or the keeper of the light.";
  const guint shards = 5, top = 4;
  g_autoptr(GHashTable) all = wc_counts_new ();
  g_autoptr(GHashTable) merged = wc_counts_new ();
  g_autoptr(GString) expected = g_string_new (NULL);
  g_autoptr(GString) got = g_string_new (NULL);

  g_test_summary ("Merging each shard's top N gives the corpus top N (the reporters' merge)");

  wc_count_words (text, strlen (text), all);
  for (guint shard = 0; shard < shards; shard++)
    {
      g_autoptr(GHashTable) mine = wc_counts_new ();
      g_autoptr(GPtrArray) ranked = NULL;
      GHashTableIter iter;
      gpointer value;

      g_hash_table_iter_init (&iter, all);
      while (g_hash_table_iter_next (&iter, NULL, &value))
        {
          const WcWordCount *entry = value;

          if (g_str_hash (entry->word) % shards == shard)
            wc_counts_add (mine, entry->word, entry->count);
        }
      ranked = wc_counts_sorted (mine, wc_compare_by_count);
      for (guint i = 0; i < MIN (top, ranked->len); i++)
        {
          const WcWordCount *entry = g_ptr_array_index (ranked, i);

          wc_counts_add (merged, entry->word, entry->count);
        }
    }

  wc_counts_append_lines (expected, all, wc_compare_by_count, top);
  wc_counts_append_lines (got, merged, wc_compare_by_count, top);
  g_assert_cmpstr (got->str, ==, expected->str);
  g_assert_cmpstr (expected->str, ==, "the 11\nlight 4\na 3\nand 3\n");
}

static void
test_decimal_limits (void)
{
  guint64 value = 0;

  g_test_summary ("Decimals are digits only, bounded, overflow-safe");

  g_assert_true (wc_parse_decimal ("0", 1, 10, &value));
  g_assert_cmpuint (value, ==, 0);
  g_assert_true (wc_parse_decimal ("18446744073709551615", 20, G_MAXUINT64, &value));
  g_assert_cmpuint (value, ==, G_MAXUINT64);
  g_assert_false (wc_parse_decimal ("18446744073709551616", 20, G_MAXUINT64, &value));
  g_assert_false (wc_parse_decimal ("11", 2, 10, &value));
  g_assert_true (wc_parse_decimal ("10", 2, 10, &value));
  g_assert_false (wc_parse_decimal ("", 0, 10, &value));
  g_assert_false (wc_parse_decimal ("+1", 2, 10, &value));
  g_assert_false (wc_parse_decimal ("1 ", 2, 10, &value));
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, NULL);

  g_test_add_func ("/wordcount/tokenize/basic", test_tokenize_basic);
  g_test_add_func ("/wordcount/tokenize/apostrophes", test_tokenize_apostrophes);
  g_test_add_func ("/wordcount/tokenize/separators", test_tokenize_separators);
  g_test_add_func ("/wordcount/result/roundtrip", test_result_roundtrip);
  g_test_add_func ("/wordcount/result/empty", test_result_empty);
  for (guint i = 0; i < G_N_ELEMENTS (invalid_payloads); i++)
    {
      g_autofree char *path = g_strdup_printf ("/wordcount/result/invalid/%s",
                                               invalid_payloads[i].name);

      g_test_add_data_func (path, &invalid_payloads[i], test_result_invalid);
    }
  g_test_add_func ("/wordcount/result/snippet-long", test_result_snippet_long);
  g_test_add_func ("/wordcount/diff/cases", test_diff_cases);
  g_test_add_func ("/wordcount/split/sound", test_split_sound);
  g_test_add_func ("/wordcount/split/even", test_split_even);
  g_test_add_func ("/wordcount/top/ties", test_top_ties);
  g_test_add_func ("/wordcount/top/sharded-merge", test_top_sharded_merge);
  g_test_add_func ("/wordcount/decimal/limits", test_decimal_limits);

  return g_test_run ();
}
