/* Subject syntax, wildcard matching and the subscription trie.
 *
 * Subjects are NATS-style: dot-separated tokens. In patterns, '*'
 * matches exactly one token and '>' (last only) matches one or more
 * trailing tokens, so "a.>" matches "a.b" and "a.b.c" but not "a".
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-bus-private.h"
#include "ah-message-private.h"

#include <string.h>

/* A valid subject of 255 bytes has at most 128 one-byte tokens. */
#define AH_SUBJECT_MAX_TOKENS ((AH_SUBJECT_MAX_LENGTH + 1) / 2)

typedef struct {
  char        buffer[AH_SUBJECT_MAX_LENGTH + 1];   /* the subject, dots replaced by NULs */
  const char *tokens[AH_SUBJECT_MAX_TOKENS];
  guint       n_tokens;
} AhTokens;

static gboolean
ah_subject_char_is_valid (char c)
{
  /* Printable ASCII without the space; '.' separates tokens. */
  return c > ' ' && c <= '~' && c != '.';
}

static gboolean
ah_subject_check (const char *text,
                  gboolean    allow_wildcards)
{
  const char *token_start = text;
  const char *p;

  if (text == NULL || *text == '\0')
    return FALSE;

  for (p = text; ; p++)
    {
      if (p - text > AH_SUBJECT_MAX_LENGTH)
        return FALSE;

      if (*p == '.' || *p == '\0')
        {
          gsize token_length = (gsize) (p - token_start);

          if (token_length == 0)
            return FALSE;
          if (token_length == 1 && (*token_start == '*' || *token_start == '>'))
            {
              if (!allow_wildcards)
                return FALSE;
              /* '>' swallows the rest of the subject, so nothing may follow it. */
              if (*token_start == '>' && *p != '\0')
                return FALSE;
            }
          if (*p == '\0')
            return TRUE;
          token_start = p + 1;
          continue;
        }

      if (!ah_subject_char_is_valid (*p))
        return FALSE;
      /* A wildcard is a whole token: "a*" or "b>" are neither literal
       * tokens nor wildcards, so they are refused rather than guessed at. */
      if ((*p == '*' || *p == '>') && (p != token_start || (p[1] != '.' && p[1] != '\0')))
        return FALSE;
    }
}

gboolean
ah_subject_is_valid (const char *subject)
{
  return ah_subject_check (subject, FALSE);
}

gboolean
ah_pattern_is_valid (const char *pattern)
{
  return ah_subject_check (pattern, TRUE);
}

/* @text must be valid. */
static void
ah_tokens_split (AhTokens   *tokens,
                 const char *text)
{
  gsize length = strlen (text);

  memcpy (tokens->buffer, text, length + 1);
  tokens->n_tokens = 0;
  tokens->tokens[tokens->n_tokens++] = tokens->buffer;
  for (gsize i = 0; i < length; i++)
    if (tokens->buffer[i] == '.')
      {
        tokens->buffer[i] = '\0';
        tokens->tokens[tokens->n_tokens++] = tokens->buffer + i + 1;
      }
}

gboolean
ah_pattern_matches (const char *pattern,
                    const char *subject)
{
  AhTokens pattern_tokens, subject_tokens;

  if (!ah_pattern_is_valid (pattern) || !ah_subject_is_valid (subject))
    return FALSE;

  ah_tokens_split (&pattern_tokens, pattern);
  ah_tokens_split (&subject_tokens, subject);

  for (guint i = 0; i < pattern_tokens.n_tokens; i++)
    {
      const char *token = pattern_tokens.tokens[i];

      if (strcmp (token, ">") == 0)
        return subject_tokens.n_tokens > i;   /* one or more tokens left */
      if (i >= subject_tokens.n_tokens)
        return FALSE;
      if (strcmp (token, "*") != 0 && strcmp (token, subject_tokens.tokens[i]) != 0)
        return FALSE;
    }

  return pattern_tokens.n_tokens == subject_tokens.n_tokens;
}

/* ---- The trie ------------------------------------------------------------ */

typedef struct _AhTrieNode AhTrieNode;

struct _AhTrieNode {
  GHashTable *children;      /* (owned) literal token -> AhTrieNode; NULL when none */
  AhTrieNode *any_token;     /* the '*' child, or NULL */
  GPtrArray  *values;        /* patterns ending here; NULL when none */
  GPtrArray  *tail_values;   /* patterns ending here with ".>"; NULL when none */
};

struct _AhSubjectTrie {
  AhTrieNode root;
};

static void ah_trie_node_free (gpointer data);

static void
ah_trie_node_clear (AhTrieNode *node)
{
  g_clear_pointer (&node->children, g_hash_table_unref);
  g_clear_pointer (&node->any_token, ah_trie_node_free);
  g_clear_pointer (&node->values, g_ptr_array_unref);
  g_clear_pointer (&node->tail_values, g_ptr_array_unref);
}

static void
ah_trie_node_free (gpointer data)
{
  AhTrieNode *node = data;

  ah_trie_node_clear (node);
  g_free (node);
}

static gboolean
ah_trie_node_is_empty (const AhTrieNode *node)
{
  return node->children == NULL && node->any_token == NULL
         && node->values == NULL && node->tail_values == NULL;
}

AhSubjectTrie *
ah__subject_trie_new (void)
{
  return g_new0 (AhSubjectTrie, 1);
}

void
ah__subject_trie_free (AhSubjectTrie *trie)
{
  if (trie == NULL)
    return;

  ah_trie_node_clear (&trie->root);
  g_free (trie);
}

void
ah__subject_trie_insert (AhSubjectTrie *trie,
                         const char    *pattern,
                         gpointer       value)
{
  AhTokens tokens;
  AhTrieNode *node = &trie->root;

  g_return_if_fail (trie != NULL);
  g_return_if_fail (ah_pattern_is_valid (pattern));

  ah_tokens_split (&tokens, pattern);
  for (guint i = 0; i < tokens.n_tokens; i++)
    {
      const char *token = tokens.tokens[i];
      AhTrieNode *child;

      if (strcmp (token, ">") == 0)
        {
          if (node->tail_values == NULL)
            node->tail_values = g_ptr_array_new ();
          g_ptr_array_add (node->tail_values, value);
          return;
        }

      if (strcmp (token, "*") == 0)
        {
          if (node->any_token == NULL)
            node->any_token = g_new0 (AhTrieNode, 1);
          node = node->any_token;
          continue;
        }

      if (node->children == NULL)
        node->children = g_hash_table_new_full (g_str_hash, g_str_equal,
                                                g_free, ah_trie_node_free);
      child = g_hash_table_lookup (node->children, token);
      if (child == NULL)
        {
          child = g_new0 (AhTrieNode, 1);
          g_hash_table_insert (node->children, g_strdup (token), child);
        }
      node = child;
    }

  if (node->values == NULL)
    node->values = g_ptr_array_new ();
  g_ptr_array_add (node->values, value);
}

static gboolean
ah_trie_take_value (GPtrArray **values,
                    gpointer    value)
{
  if (*values == NULL || !g_ptr_array_remove (*values, value))
    return FALSE;
  if ((*values)->len == 0)
    g_clear_pointer (values, g_ptr_array_unref);
  return TRUE;
}

/* Removes @value below @node and prunes the nodes it leaves empty, so a
 * bus that sees many short-lived subscriptions does not keep their paths. */
static gboolean
ah_trie_node_remove (AhTrieNode     *node,
                     const AhTokens *tokens,
                     guint           index,
                     gpointer        value)
{
  const char *token;
  AhTrieNode *child;
  gboolean removed;

  if (index == tokens->n_tokens)
    return ah_trie_take_value (&node->values, value);

  token = tokens->tokens[index];
  if (strcmp (token, ">") == 0)
    return ah_trie_take_value (&node->tail_values, value);

  if (strcmp (token, "*") == 0)
    {
      if (node->any_token == NULL)
        return FALSE;
      removed = ah_trie_node_remove (node->any_token, tokens, index + 1, value);
      if (ah_trie_node_is_empty (node->any_token))
        g_clear_pointer (&node->any_token, ah_trie_node_free);
      return removed;
    }

  child = node->children != NULL ? g_hash_table_lookup (node->children, token) : NULL;
  if (child == NULL)
    return FALSE;
  removed = ah_trie_node_remove (child, tokens, index + 1, value);
  if (ah_trie_node_is_empty (child))
    {
      g_hash_table_remove (node->children, token);
      if (g_hash_table_size (node->children) == 0)
        g_clear_pointer (&node->children, g_hash_table_unref);
    }
  return removed;
}

gboolean
ah__subject_trie_remove (AhSubjectTrie *trie,
                         const char    *pattern,
                         gpointer       value)
{
  AhTokens tokens;

  g_return_val_if_fail (trie != NULL, FALSE);
  g_return_val_if_fail (ah_pattern_is_valid (pattern), FALSE);

  ah_tokens_split (&tokens, pattern);
  return ah_trie_node_remove (&trie->root, &tokens, 0, value);
}

static void
ah_trie_values_append (GPtrArray *into,
                       GPtrArray *values)
{
  if (values != NULL)
    g_ptr_array_extend (into, values, NULL, NULL);
}

static void
ah_trie_node_match (const AhTrieNode *node,
                    const AhTokens   *tokens,
                    guint             index,
                    GPtrArray        *values)
{
  AhTrieNode *child;

  if (index == tokens->n_tokens)
    {
      ah_trie_values_append (values, node->values);
      return;
    }

  /* At least one token is left here, which is what '>' needs. */
  ah_trie_values_append (values, node->tail_values);
  if (node->children != NULL
      && (child = g_hash_table_lookup (node->children, tokens->tokens[index])) != NULL)
    ah_trie_node_match (child, tokens, index + 1, values);
  if (node->any_token != NULL)
    ah_trie_node_match (node->any_token, tokens, index + 1, values);
}

void
ah__subject_trie_match (AhSubjectTrie *trie,
                        const char    *subject,
                        GPtrArray     *values)
{
  AhTokens tokens;

  g_return_if_fail (trie != NULL);
  g_return_if_fail (ah_subject_is_valid (subject));
  g_return_if_fail (values != NULL);

  ah_tokens_split (&tokens, subject);
  ah_trie_node_match (&trie->root, &tokens, 0, values);
}
