/* Manifests: the YAML files that declare a system.
 *
 * A manifest is read in two passes. The first drives libyaml's event API
 * and builds a small tree of our own, enforcing every cap (size, depth,
 * scalar length, keys per mapping, events) as the events arrive, and
 * refusing anchors, aliases, tags and extra documents at the first one:
 * hostile input fails fast, in memory bounded by the file cap. The second
 * pass checks that tree against the schema (docs/manifest.md) and fills
 * the plain structs of ah-manifest-private.h.
 *
 * Nothing here loads plugins or looks at the file system beyond reading
 * the manifest: plugin names and plugin_path directories are kept as
 * written (the directories made absolute), and the host checks them.
 *
 * SPDX-License-Identifier: MIT
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>
#include <yaml.h>

#include "ah-manifest-private.h"
#include "ah-resources.h"

#define AH_MANIFEST_NAME_MAX       64
#define AH_SUBJECT_MAX_LEN         255
/* Quoted names and values are cut to this many bytes in messages. */
#define AH_MESSAGE_TEXT_MAX        80
#define AH_DEFAULT_RESOURCE        "/org/agenthost/default.yaml"
#define AH_DEFAULT_DISPLAY_NAME    "<built-in>/default.yaml"
#define AH_READ_CHUNK              16384
/* The longest duration a manifest may give in milliseconds: a day. */
#define AH_MANIFEST_MS_MAX         86400000
#define AH_MAILBOX_CAPACITY_MAX    16777216
/* `supervision: max_restarts:` beyond a million within one period is a
 * type that never stops, which the policy exists to prevent. */
#define AH_MANIFEST_MAX_RESTARTS_MAX 1000000

G_DEFINE_QUARK (ah-manifest-error-quark, ah_manifest_error)

/* Both are safe to clear when zeroed: libyaml's destructors free NULL
 * buffers and treat empty queues as empty. */
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (yaml_parser_t, yaml_parser_delete)
G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (yaml_event_t, yaml_event_delete)

/* ---- The tree ------------------------------------------------------- */

typedef enum {
  NODE_SCALAR,
  NODE_SEQUENCE,
  NODE_MAPPING,
} NodeKind;

typedef struct _Node Node;
struct _Node {
  NodeKind       kind;
  gboolean       plain;      /* a plain scalar: typed by the core schema */
  char          *text;       /* scalars only; in the loader's @texts */
  AhManifestPos  pos;
  GPtrArray     *children;   /* (element-type Node) mapping: key, value, key, value...;
                              * sequence: the items */
  GHashTable    *keys;       /* while a mapping is being built: key text -> key Node */
};

static void
node_free (Node *node)
{
  if (node == NULL)
    return;
  g_clear_pointer (&node->keys, g_hash_table_unref);
  g_clear_pointer (&node->children, g_ptr_array_unref);
  g_free (node);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (Node, node_free)

static Node *
node_new (NodeKind kind, AhManifestPos pos)
{
  Node *node = g_new0 (Node, 1);

  node->kind = kind;
  node->pos = pos;
  if (kind != NODE_SCALAR)
    node->children = g_ptr_array_new_with_free_func ((GDestroyNotify) node_free);
  if (kind == NODE_MAPPING)
    node->keys = g_hash_table_new (g_str_hash, g_str_equal);
  return node;
}

static guint
node_n_pairs (const Node *mapping)
{
  return mapping->children->len / 2;
}

static const Node *
node_child (const Node *node, guint index)
{
  return g_ptr_array_index (node->children, index);
}

/* ---- YAML 1.2 core schema for plain scalars ------------------------- */

typedef enum {
  CORE_NULL,
  CORE_BOOL,
  CORE_INT,
  CORE_FLOAT,
  CORE_STRING,
} CoreType;

static gboolean
text_is_one_of (const char *text, const char * const *words)
{
  for (guint i = 0; words[i] != NULL; i++)
    if (strcmp (text, words[i]) == 0)
      return TRUE;
  return FALSE;
}

static const char * const core_null_words[] = { "", "~", "null", "Null", "NULL", NULL };
static const char * const core_true_words[] = { "true", "True", "TRUE", NULL };
static const char * const core_false_words[] = { "false", "False", "FALSE", NULL };
/* YAML 1.1 booleans: strings under 1.2, and a classic trap (the Norway
 * problem), so a boolean field refuses them by name. */
static const char * const yaml11_bool_words[] = {
  "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO",
  "on", "On", "ON", "off", "Off", "OFF", NULL
};

static gsize
count_digits (const char *text, gboolean (*is_digit) (char c))
{
  gsize n = 0;

  while (text[n] != '\0' && is_digit (text[n]))
    n++;
  return n;
}

static gboolean
is_decimal_digit (char c)
{
  return c >= '0' && c <= '9';
}

static gboolean
is_octal_digit (char c)
{
  return c >= '0' && c <= '7';
}

static gboolean
is_hex_digit (char c)
{
  return g_ascii_isxdigit (c);
}

static gboolean
core_is_int (const char *text)
{
  gsize n;

  if (g_str_has_prefix (text, "0o"))
    return (n = count_digits (text + 2, is_octal_digit)) > 0 && text[2 + n] == '\0';
  if (g_str_has_prefix (text, "0x"))
    return (n = count_digits (text + 2, is_hex_digit)) > 0 && text[2 + n] == '\0';
  if (*text == '-' || *text == '+')
    text++;
  n = count_digits (text, is_decimal_digit);
  return n > 0 && text[n] == '\0';
}

static gboolean
core_is_float (const char *text)
{
  static const char * const specials[] = {
    ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF",
    ".nan", ".NaN", ".NAN", NULL
  };
  gsize int_digits, frac_digits = 0;

  if (text_is_one_of (text, specials))
    return TRUE;
  /* [-+]? ( \.[0-9]+ | [0-9]+ ( \.[0-9]* )? ) ( [eE] [-+]? [0-9]+ )? */
  if (*text == '-' || *text == '+')
    text++;
  int_digits = count_digits (text, is_decimal_digit);
  text += int_digits;
  if (*text == '.')
    {
      text++;
      frac_digits = count_digits (text, is_decimal_digit);
      text += frac_digits;
    }
  if (int_digits == 0 && frac_digits == 0)
    return FALSE;
  if (*text == 'e' || *text == 'E')
    {
      gsize exp_digits;

      text++;
      if (*text == '-' || *text == '+')
        text++;
      exp_digits = count_digits (text, is_decimal_digit);
      if (exp_digits == 0)
        return FALSE;
      text += exp_digits;
    }
  return *text == '\0';
}

static CoreType
core_type_of (const Node *scalar)
{
  if (!scalar->plain)
    return CORE_STRING;
  if (text_is_one_of (scalar->text, core_null_words))
    return CORE_NULL;
  if (text_is_one_of (scalar->text, core_true_words) || text_is_one_of (scalar->text, core_false_words))
    return CORE_BOOL;
  if (core_is_int (scalar->text))
    return CORE_INT;
  if (core_is_float (scalar->text))
    return CORE_FLOAT;
  return CORE_STRING;
}

/* The only integers we take: plain decimal, an optional '-', no leading
 * zero (YAML 1.1 read 010 as octal 8, 1.2 as 10: refuse the ambiguity). */
static gboolean
text_is_plain_decimal (const char *text)
{
  gsize n;

  if (*text == '-')
    text++;
  n = count_digits (text, is_decimal_digit);
  return n > 0 && text[n] == '\0' && (text[0] != '0' || n == 1);
}

static gboolean
text_has_leading_zero (const char *text)
{
  if (*text == '-' || *text == '+')
    text++;
  return text[0] == '0' && is_decimal_digit (text[1]) &&
         text[1 + count_digits (text + 1, is_decimal_digit)] == '\0';
}

/* ---- The loader: one parse, its messages ----------------------------- */

/* An autoscaled type's scale_up_depth, and where to point if it can never
 * be reached: its value, or the `autoscale` key when it is the default. */
typedef struct {
  const AhManifestAgentType *type;
  AhManifestPos              pos;
  gboolean                   is_default;
} DepthCheck;

typedef struct {
  char        *file;       /* FILE in messages: the path as given, escaped */
  const char  *data;       /* the whole input, to place reader errors */
  gsize        size;
  char        *base_dir;   /* absolute; plugin_path entries resolve against it */
  GPtrArray   *scratch;    /* strings made for messages, freed with the loader */
  /* Scalar texts. One allocation per scalar doubled the cost of a
   * 100 000-event input under ASan, whose malloc unwinds the stack. */
  GStringChunk *texts;
  /* (element-type DepthCheck) autoscaled types, checked against the
   * bus's mailbox_capacity once the whole file is read. */
  GArray      *depth_checks;
  GError     **error;
} ManifestLoader;

/* Names and values quoted in messages come from the input: control
 * characters are escaped so that a message stays one line whatever the
 * file holds, and very long text is cut on a character boundary. */
static char *
text_for_message (const char *text, gsize max_bytes)
{
  GString *out = g_string_new (NULL);

  for (gsize i = 0; text[i] != '\0'; i++)
    {
      guchar c = (guchar) text[i];

      if (i >= max_bytes && (c & 0xC0) != 0x80)
        {
          g_string_append (out, "...");
          break;
        }
      if (c == '\\')
        g_string_append (out, "\\\\");
      else if (c == '\n')
        g_string_append (out, "\\n");
      else if (c == '\t')
        g_string_append (out, "\\t");
      else if (c == '\r')
        g_string_append (out, "\\r");
      else if (c < 0x20 || c == 0x7F)
        g_string_append_printf (out, "\\x%02X", c);
      else
        g_string_append_c (out, (char) c);
    }
  return g_string_free (out, FALSE);
}

static const char *
loader_show (ManifestLoader *self, const char *text)
{
  char *shown = text_for_message (text, AH_MESSAGE_TEXT_MAX);

  g_ptr_array_add (self->scratch, shown);
  return shown;
}

static const char *loader_printf (ManifestLoader *self, const char *format, ...) G_GNUC_PRINTF (2, 3);

static const char *
loader_printf (ManifestLoader *self, const char *format, ...)
{
  va_list args;
  char *text;

  va_start (args, format);
  text = g_strdup_vprintf (format, args);
  va_end (args);
  g_ptr_array_add (self->scratch, text);
  return text;
}

static gboolean loader_error (ManifestLoader *self, AhManifestPos pos, AhManifestError code,
                              const char *format, ...) G_GNUC_PRINTF (4, 5);

/* Always returns FALSE, so a check can end with `return loader_error (...)`. */
static gboolean
loader_error (ManifestLoader *self, AhManifestPos pos, AhManifestError code,
              const char *format, ...)
{
  va_list args;
  g_autofree char *what = NULL;

  va_start (args, format);
  what = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (self->error, AH_MANIFEST_ERROR, code, "%s:%u:%u: error: %s",
               self->file, pos.line, pos.column, what);
  return FALSE;
}

static AhManifestPos
pos_from_mark (yaml_mark_t mark)
{
  /* libyaml marks are 0-based; editors count from 1. The file cap keeps
   * both far below G_MAXUINT. */
  AhManifestPos pos = { (guint) mark.line + 1, (guint) mark.column + 1 };

  return pos;
}

static const AhManifestPos pos_start = { 1, 1 };

/* libyaml's reader reports a byte offset rather than a mark: count lines
 * and characters up to it the way the scanner would have. */
static AhManifestPos
pos_from_offset (const char *data, gsize size, gsize offset)
{
  AhManifestPos pos = { 1, 1 };

  offset = MIN (offset, size);
  for (gsize i = 0; i < offset; i++)
    {
      guchar c = (guchar) data[i];

      if (c == '\n' || (c == '\r' && (i + 1 >= size || data[i + 1] != '\n')))
        {
          pos.line++;
          pos.column = 1;
        }
      else if (c != '\r' && (c & 0xC0) != 0x80)
        {
          pos.column++;
        }
    }
  return pos;
}

static gboolean
loader_syntax_error (ManifestLoader *self, const yaml_parser_t *parser)
{
  const char *problem = parser->problem != NULL ? parser->problem : "invalid YAML";

  switch (parser->error)
    {
    case YAML_READER_ERROR:
      if (parser->problem_value != -1)
        return loader_error (self, pos_from_offset (self->data, self->size, parser->problem_offset),
                             AH_MANIFEST_ERROR_SYNTAX, "%s (0x%02X)", problem,
                             (guint) parser->problem_value);
      return loader_error (self, pos_from_offset (self->data, self->size, parser->problem_offset),
                           AH_MANIFEST_ERROR_SYNTAX, "%s", problem);
    case YAML_SCANNER_ERROR:
    case YAML_PARSER_ERROR:
      if (parser->context != NULL)
        {
          AhManifestPos context_pos = pos_from_mark (parser->context_mark);

          return loader_error (self, pos_from_mark (parser->problem_mark), AH_MANIFEST_ERROR_SYNTAX,
                               "%s (%s started at %u:%u)", problem, parser->context,
                               context_pos.line, context_pos.column);
        }
      return loader_error (self, pos_from_mark (parser->problem_mark), AH_MANIFEST_ERROR_SYNTAX,
                           "%s", problem);
    case YAML_MEMORY_ERROR:
      return loader_error (self, pos_start, AH_MANIFEST_ERROR_FAILED, "out of memory while parsing");
    case YAML_NO_ERROR:
    case YAML_COMPOSER_ERROR:
    case YAML_WRITER_ERROR:
    case YAML_EMITTER_ERROR:
    default:
      return loader_error (self, pos_from_mark (parser->problem_mark), AH_MANIFEST_ERROR_SYNTAX,
                           "%s", problem);
    }
}

/* ---- Pass one: events to tree, caps enforced as they arrive ---------- */

/* Attaches @node (transfer full) under the innermost open collection,
 * checking the per-collection caps and duplicate keys. */
static gboolean
tree_attach (ManifestLoader *self, GPtrArray *stack, Node **root, Node *node)
{
  g_autoptr(Node) owned = node;
  Node *parent;

  if (stack->len == 0)
    {
      *root = g_steal_pointer (&owned);
      return TRUE;
    }

  parent = g_ptr_array_index (stack, stack->len - 1);
  if (parent->kind == NODE_MAPPING && parent->children->len % 2 == 0)
    {
      const Node *first;

      if (node->kind != NODE_SCALAR)
        return loader_error (self, node->pos, AH_MANIFEST_ERROR_WRONG_TYPE,
                             "a mapping key must be a string, got a %s",
                             node->kind == NODE_MAPPING ? "mapping" : "sequence");
      if (node_n_pairs (parent) >= AH_MANIFEST_MAX_KEYS)
        return loader_error (self, node->pos, AH_MANIFEST_ERROR_LIMIT,
                             "more than %d keys in one mapping", AH_MANIFEST_MAX_KEYS);
      first = g_hash_table_lookup (parent->keys, node->text);
      if (first != NULL)
        return loader_error (self, node->pos, AH_MANIFEST_ERROR_DUPLICATE_KEY,
                             "duplicate key '%s' (first at %u:%u)", loader_show (self, node->text),
                             first->pos.line, first->pos.column);
      g_hash_table_insert (parent->keys, node->text, node);
    }
  else if (parent->kind == NODE_SEQUENCE && parent->children->len >= AH_MANIFEST_MAX_KEYS)
    {
      return loader_error (self, node->pos, AH_MANIFEST_ERROR_LIMIT,
                           "more than %d items in one sequence", AH_MANIFEST_MAX_KEYS);
    }
  g_ptr_array_add (parent->children, g_steal_pointer (&owned));
  return TRUE;
}

static gboolean
check_node_properties (ManifestLoader *self, const char *anchor, const char *tag, AhManifestPos pos)
{
  if (anchor != NULL)
    return loader_error (self, pos, AH_MANIFEST_ERROR_UNSUPPORTED, "anchors are not allowed");
  if (tag != NULL)
    return loader_error (self, pos, AH_MANIFEST_ERROR_UNSUPPORTED, "tags are not allowed");
  return TRUE;
}

/* Builds the tree of the one document in @self->data. Sets *@ret_root to
 * NULL when the stream holds no document at all. */
static gboolean
tree_parse (ManifestLoader *self, Node **ret_root)
{
  g_auto(yaml_parser_t) parser = { 0 };
  g_autoptr(GPtrArray) stack = g_ptr_array_new ();   /* open collections, borrowed */
  g_autoptr(Node) root = NULL;
  guint n_events = 0;
  guint n_documents = 0;
  gboolean done = FALSE;

  if (!yaml_parser_initialize (&parser))
    return loader_error (self, pos_start, AH_MANIFEST_ERROR_FAILED, "out of memory while parsing");
  yaml_parser_set_input_string (&parser, (const unsigned char *) self->data, self->size);
  /* UTF-8 only: a UTF-16 file fails as invalid UTF-8 rather than being
   * decoded with marks that no longer match bytes. */
  yaml_parser_set_encoding (&parser, YAML_UTF8_ENCODING);

  while (!done)
    {
      g_auto(yaml_event_t) event = { 0 };
      AhManifestPos pos;
      Node *node;

      if (!yaml_parser_parse (&parser, &event))
        return loader_syntax_error (self, &parser);
      pos = pos_from_mark (event.start_mark);
      if (++n_events > AH_MANIFEST_MAX_EVENTS)
        return loader_error (self, pos, AH_MANIFEST_ERROR_LIMIT,
                             "manifest too complex: more than %d YAML events", AH_MANIFEST_MAX_EVENTS);

      switch (event.type)
        {
        case YAML_STREAM_END_EVENT:
          done = TRUE;
          break;

        case YAML_DOCUMENT_START_EVENT:
          if (++n_documents > 1)
            return loader_error (self, pos, AH_MANIFEST_ERROR_UNSUPPORTED, "more than one YAML document");
          /* %YAML 1.1 would change what plain scalars mean; %TAG only
           * serves tags, which are refused anyway. */
          if (event.data.document_start.version_directive != NULL ||
              event.data.document_start.tag_directives.start != event.data.document_start.tag_directives.end)
            return loader_error (self, pos, AH_MANIFEST_ERROR_UNSUPPORTED,
                                 "directives (%%YAML, %%TAG) are not allowed");
          break;

        case YAML_ALIAS_EVENT:
          return loader_error (self, pos, AH_MANIFEST_ERROR_UNSUPPORTED, "aliases are not allowed");

        case YAML_SCALAR_EVENT:
          if (!check_node_properties (self, (const char *) event.data.scalar.anchor,
                                      (const char *) event.data.scalar.tag, pos))
            return FALSE;
          if (event.data.scalar.length > AH_MANIFEST_MAX_SCALAR)
            return loader_error (self, pos, AH_MANIFEST_ERROR_LIMIT,
                                 "scalar longer than %d bytes", AH_MANIFEST_MAX_SCALAR);
          /* A "\0" escape would silently cut the C string short. */
          if (memchr (event.data.scalar.value, '\0', event.data.scalar.length) != NULL)
            return loader_error (self, pos, AH_MANIFEST_ERROR_INVALID_VALUE,
                                 "NUL characters are not allowed");
          node = node_new (NODE_SCALAR, pos);
          node->plain = event.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
          node->text = g_string_chunk_insert_len (self->texts, (const char *) event.data.scalar.value,
                                                  (gssize) event.data.scalar.length);
          if (!tree_attach (self, stack, &root, node))
            return FALSE;
          break;

        case YAML_SEQUENCE_START_EVENT:
        case YAML_MAPPING_START_EVENT:
          if (event.type == YAML_SEQUENCE_START_EVENT
              ? !check_node_properties (self, (const char *) event.data.sequence_start.anchor,
                                        (const char *) event.data.sequence_start.tag, pos)
              : !check_node_properties (self, (const char *) event.data.mapping_start.anchor,
                                        (const char *) event.data.mapping_start.tag, pos))
            return FALSE;
          if (stack->len >= AH_MANIFEST_MAX_DEPTH)
            return loader_error (self, pos, AH_MANIFEST_ERROR_LIMIT,
                                 "nesting deeper than %d levels", AH_MANIFEST_MAX_DEPTH);
          node = node_new (event.type == YAML_SEQUENCE_START_EVENT ? NODE_SEQUENCE : NODE_MAPPING, pos);
          if (!tree_attach (self, stack, &root, node))
            return FALSE;
          g_ptr_array_add (stack, node);
          break;

        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
          node = g_ptr_array_steal_index (stack, stack->len - 1);
          /* Only needed while keys arrive. */
          g_clear_pointer (&node->keys, g_hash_table_unref);
          break;

        case YAML_STREAM_START_EVENT:
        case YAML_DOCUMENT_END_EVENT:
        case YAML_NO_EVENT:
        default:
          break;
        }
    }

  *ret_root = g_steal_pointer (&root);
  return TRUE;
}

/* ---- Pass two: the schema -------------------------------------------- */

/* What a node is, for "got ..." in messages. */
static const char *
loader_describe (ManifestLoader *self, const Node *node)
{
  if (node->kind == NODE_MAPPING)
    return "a mapping";
  if (node->kind == NODE_SEQUENCE)
    return "a sequence";
  switch (core_type_of (node))
    {
    case CORE_NULL:
      return "null";
    case CORE_BOOL:
      return loader_printf (self, "the boolean %s", node->text);
    case CORE_INT:
      return loader_printf (self, "the integer %s", loader_show (self, node->text));
    case CORE_FLOAT:
      return loader_printf (self, "the number %s", loader_show (self, node->text));
    case CORE_STRING:
    default:
      if (node->plain)
        return loader_printf (self, "the string '%s'", loader_show (self, node->text));
      return loader_printf (self, "a quoted string \"%s\"", loader_show (self, node->text));
    }
}

static gboolean
expect_mapping (ManifestLoader *self, const char *what, const Node *node)
{
  if (node->kind != NODE_MAPPING)
    return loader_error (self, node->pos, AH_MANIFEST_ERROR_WRONG_TYPE,
                         "%s must be a mapping, got %s", what, loader_describe (self, node));
  return TRUE;
}

/* A string-typed value: a quoted scalar, or a plain one the core schema
 * reads as a string. Returns the text, or NULL with the error set. */
static const char *
get_string (ManifestLoader *self, const char *key, const Node *node)
{
  CoreType type;

  if (node->kind != NODE_SCALAR)
    {
      loader_error (self, node->pos, AH_MANIFEST_ERROR_WRONG_TYPE, "'%s' must be a string, got %s",
                    key, loader_describe (self, node));
      return NULL;
    }
  type = core_type_of (node);
  if (type == CORE_NULL)
    {
      loader_error (self, node->pos, AH_MANIFEST_ERROR_WRONG_TYPE, "'%s' must be a string, got null", key);
      return NULL;
    }
  if (type != CORE_STRING)
    {
      loader_error (self, node->pos, AH_MANIFEST_ERROR_WRONG_TYPE,
                    "'%s' must be a string, got %s (quote it to make it a string)",
                    key, loader_describe (self, node));
      return NULL;
    }
  return node->text;
}

static gboolean
get_uint (ManifestLoader *self, const char *key, const Node *node, guint min, guint max, guint *ret)
{
  gint64 value;

  if (node->kind != NODE_SCALAR || !node->plain || core_type_of (node) == CORE_NULL ||
      core_type_of (node) == CORE_BOOL)
    {
      gboolean quoted_number = node->kind == NODE_SCALAR && !node->plain &&
                               text_is_plain_decimal (node->text);

      return loader_error (self, node->pos, AH_MANIFEST_ERROR_WRONG_TYPE, "'%s' must be an integer, got %s%s",
                           key, loader_describe (self, node),
                           quoted_number ? " (remove the quotes)" : "");
    }
  if (!text_is_plain_decimal (node->text))
    return loader_error (self, node->pos, AH_MANIFEST_ERROR_WRONG_TYPE,
                         "'%s' must be a plain decimal integer%s, got '%s'", key,
                         text_has_leading_zero (node->text) ? " without leading zeros" : "",
                         loader_show (self, node->text));
  /* Digits only by now: failing here means too many of them. */
  if (!g_ascii_string_to_signed (node->text, 10, G_MININT64, G_MAXINT64, &value, NULL) ||
      value < (gint64) min || value > (gint64) max)
    return loader_error (self, node->pos, AH_MANIFEST_ERROR_OUT_OF_RANGE,
                         "'%s' must be an integer between %u and %u, got %s",
                         key, min, max, loader_show (self, node->text));
  *ret = (guint) value;
  return TRUE;
}

static gboolean
get_bool (ManifestLoader *self, const char *key, const Node *node, gboolean *ret)
{
  if (node->kind == NODE_SCALAR && node->plain)
    {
      if (text_is_one_of (node->text, core_true_words))
        {
          *ret = TRUE;
          return TRUE;
        }
      if (text_is_one_of (node->text, core_false_words))
        {
          *ret = FALSE;
          return TRUE;
        }
      if (text_is_one_of (node->text, yaml11_bool_words))
        return loader_error (self, node->pos, AH_MANIFEST_ERROR_WRONG_TYPE,
                             "'%s' must be true or false, got '%s' (YAML 1.1 booleans are not "
                             "accepted: use true or false)", key, node->text);
    }
  if (node->kind == NODE_SCALAR && !node->plain &&
      (text_is_one_of (node->text, core_true_words) || text_is_one_of (node->text, core_false_words)))
    return loader_error (self, node->pos, AH_MANIFEST_ERROR_WRONG_TYPE,
                         "'%s' must be true or false, got %s (remove the quotes)",
                         key, loader_describe (self, node));
  return loader_error (self, node->pos, AH_MANIFEST_ERROR_WRONG_TYPE, "'%s' must be true or false, got %s",
                       key, loader_describe (self, node));
}

static gboolean
unknown_key (ManifestLoader *self, const Node *key, const char *where, const char *expected)
{
  return loader_error (self, key->pos, AH_MANIFEST_ERROR_UNKNOWN_KEY, "unknown key '%s'%s (expected %s)",
                       loader_show (self, key->text), where, expected);
}

static gboolean
text_matches_charset (const char *text, const char *extra, gboolean allow_upper)
{
  for (const char *p = text; *p != '\0'; p++)
    {
      if (g_ascii_islower (*p) || g_ascii_isdigit (*p) || (allow_upper && g_ascii_isupper (*p)))
        continue;
      if (strchr (extra, *p) == NULL)
        return FALSE;
    }
  return TRUE;
}

/* The bus's subject rule, repeated so that a manifest is refused at load
 * time with a reason rather than later at subscribe time. It must agree
 * with ah_pattern_is_valid() (core/ah-subject.c). Returns NULL when
 * @pattern is valid, else what is wrong with it. */
static const char *
subject_pattern_problem (const char *pattern)
{
  const char *token = pattern;

  if (strlen (pattern) > AH_SUBJECT_MAX_LEN)
    return "longer than 255 bytes";
  for (;;)
    {
      const char *end = strchr (token, '.');
      gsize length;

      if (end == NULL)
        end = token + strlen (token);
      length = (gsize) (end - token);
      if (length == 0)
        return "empty token";
      for (gsize i = 0; i < length; i++)
        if ((guchar) token[i] < 0x21 || (guchar) token[i] > 0x7E)
          return "only printable ASCII without spaces is allowed";
      if (length > 1 && (memchr (token, '*', length) != NULL || memchr (token, '>', length) != NULL))
        return "'*' and '>' must be whole tokens";
      if (length == 1 && token[0] == '>' && *end != '\0')
        return "'>' must be the last token";
      if (*end == '\0')
        return NULL;
      token = end + 1;
    }
}

static void
subscription_free (AhManifestSubscription *subscription)
{
  g_free (subscription->pattern);
  g_free (subscription);
}

static void
config_entry_free (AhManifestConfigEntry *entry)
{
  g_free (entry->key);
  g_free (entry->value);
  g_free (entry);
}

static void
agent_type_free (AhManifestAgentType *type)
{
  g_free (type->name);
  g_free (type->plugin);
  g_clear_pointer (&type->subscriptions, g_ptr_array_unref);
  g_clear_pointer (&type->config, g_ptr_array_unref);
  g_free (type);
}

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AhManifestAgentType, agent_type_free)

static gboolean
load_subscription (ManifestLoader *self, AhManifestAgentType *type, const Node *item)
{
  const Node *subject = NULL;
  AhDelivery delivery = AH_DELIVERY_QUEUE;
  const char *pattern;
  const char *problem;
  AhManifestSubscription *subscription;

  if (item->kind == NODE_MAPPING)
    {
      for (guint i = 0; i < node_n_pairs (item); i++)
        {
          const Node *key = node_child (item, 2 * i);
          const Node *value = node_child (item, 2 * i + 1);

          if (strcmp (key->text, "subject") == 0)
            {
              subject = value;
            }
          else if (strcmp (key->text, "delivery") == 0)
            {
              const char *text = get_string (self, "delivery", value);

              if (text == NULL)
                return FALSE;
              if (strcmp (text, "queue") == 0)
                delivery = AH_DELIVERY_QUEUE;
              else if (strcmp (text, "broadcast") == 0)
                delivery = AH_DELIVERY_BROADCAST;
              else
                return loader_error (self, value->pos, AH_MANIFEST_ERROR_INVALID_VALUE,
                                     "'delivery' must be queue or broadcast, got '%s'",
                                     loader_show (self, text));
            }
          else
            {
              return unknown_key (self, key, " in subscription", "subject, delivery");
            }
        }
      if (subject == NULL)
        return loader_error (self, item->pos, AH_MANIFEST_ERROR_MISSING_KEY,
                             "missing required key 'subject' in subscription");
    }
  else if (item->kind == NODE_SCALAR)
    {
      subject = item;
    }
  else
    {
      return loader_error (self, item->pos, AH_MANIFEST_ERROR_WRONG_TYPE,
                           "a 'subscribe' item must be a subject or a mapping with 'subject', got %s",
                           loader_describe (self, item));
    }

  pattern = get_string (self, "subject", subject);
  if (pattern == NULL)
    return FALSE;
  problem = subject_pattern_problem (pattern);
  if (problem != NULL)
    return loader_error (self, subject->pos, AH_MANIFEST_ERROR_INVALID_VALUE,
                         "invalid subject pattern '%s': %s", loader_show (self, pattern), problem);
  /* The same pattern twice would deliver each message twice to the type. */
  for (guint i = 0; i < type->subscriptions->len; i++)
    {
      const AhManifestSubscription *earlier = g_ptr_array_index (type->subscriptions, i);

      if (strcmp (earlier->pattern, pattern) == 0)
        return loader_error (self, subject->pos, AH_MANIFEST_ERROR_INVALID_VALUE,
                             "duplicate subscription '%s' in agent type '%s' (first at %u:%u)",
                             loader_show (self, pattern), type->name, earlier->pos.line,
                             earlier->pos.column);
    }

  subscription = g_new0 (AhManifestSubscription, 1);
  subscription->pattern = g_strdup (pattern);
  subscription->delivery = delivery;
  subscription->pos = subject->pos;
  g_ptr_array_add (type->subscriptions, subscription);
  return TRUE;
}

/* Flattens @node into @type's config: mappings add ".key", sequences
 * ".index". "a.b: 1" and "a: {b: 2}" flatten alike, so @seen maps each
 * flattened key to where its last key was written (@key_pos), for the
 * duplicate message. */
static gboolean
load_config_node (ManifestLoader *self, AhManifestAgentType *type, GHashTable *seen,
                  GString *prefix, AhManifestPos key_pos, const Node *node)
{
  gsize prefix_len = prefix->len;

  if (node->kind == NODE_SCALAR)
    {
      AhManifestConfigEntry *entry;
      const AhManifestPos *first = g_hash_table_lookup (seen, prefix->str);

      if (first != NULL)
        return loader_error (self, key_pos, AH_MANIFEST_ERROR_DUPLICATE_KEY,
                             "duplicate config key '%s' (first at %u:%u)",
                             loader_show (self, prefix->str), first->line, first->column);
      entry = g_new0 (AhManifestConfigEntry, 1);
      entry->key = g_strdup (prefix->str);
      entry->value = g_strdup (node->text);
      entry->pos = node->pos;
      g_ptr_array_add (type->config, entry);
      g_hash_table_insert (seen, entry->key, g_memdup2 (&key_pos, sizeof key_pos));
      return TRUE;
    }

  for (guint i = 0; i < node->children->len; i += node->kind == NODE_MAPPING ? 2 : 1)
    {
      const Node *child = node_child (node, node->kind == NODE_MAPPING ? i + 1 : i);
      AhManifestPos child_key_pos = node_child (node, i)->pos;

      if (prefix->len > 0)
        g_string_append_c (prefix, '.');
      if (node->kind == NODE_MAPPING)
        {
          const Node *key = node_child (node, i);

          if (key->text[0] == '\0')
            return loader_error (self, key->pos, AH_MANIFEST_ERROR_INVALID_VALUE,
                                 "config keys must not be empty");
          g_string_append (prefix, key->text);
        }
      else
        {
          g_string_append_printf (prefix, "%u", i);
        }
      if (!load_config_node (self, type, seen, prefix, child_key_pos, child))
        return FALSE;
      g_string_truncate (prefix, prefix_len);
    }
  return TRUE;
}

static gboolean
load_config (ManifestLoader *self, AhManifestAgentType *type, const Node *node)
{
  g_autoptr(GHashTable) seen = NULL;
  g_autoptr(GString) prefix = NULL;

  if (!expect_mapping (self, "'config'", node))
    return FALSE;
  seen = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, g_free);
  prefix = g_string_new (NULL);
  return load_config_node (self, type, seen, prefix, node->pos, node);
}

/* Where an agent type's pool and autoscale values were written (NULL when
 * not given), for the checks that compare keys with each other: they run
 * once the whole type is read, since `pool_size` may follow `pool:`. */
typedef struct {
  const Node *pool_size;
  const Node *min;
  const Node *max;
  const Node *idle_cap;
  const Node *autoscale_key;
  const Node *scale_up_depth;
  const Node *step;
} TypeNodes;

static gboolean
load_pool (ManifestLoader *self, AhManifestAgentType *type, TypeNodes *nodes, const Node *node)
{
  if (!expect_mapping (self, "'pool'", node))
    return FALSE;

  for (guint i = 0; i < node_n_pairs (node); i++)
    {
      const Node *key = node_child (node, 2 * i);
      const Node *value = node_child (node, 2 * i + 1);
      gboolean ok;

      /* min >= 1: a type autoscaled down to no agent has no mailbox
       * whose depth could ever grow it again. */
      if (strcmp (key->text, "min") == 0)
        {
          ok = get_uint (self, "min", value, 1, AH_MANIFEST_MAX_POOL_SIZE, &type->pool_min);
          nodes->min = value;
        }
      else if (strcmp (key->text, "max") == 0)
        {
          ok = get_uint (self, "max", value, 1, AH_MANIFEST_MAX_POOL_SIZE, &type->pool_max);
          nodes->max = value;
        }
      else if (strcmp (key->text, "idle_cap") == 0)
        {
          ok = get_uint (self, "idle_cap", value, 0, AH_MANIFEST_MAX_POOL_SIZE, &type->idle_cap);
          nodes->idle_cap = value;
        }
      else
        {
          return unknown_key (self, key, loader_printf (self, " in pool of agent type '%s'", type->name),
                              "min, max, idle_cap");
        }
      if (!ok)
        return FALSE;
    }
  return TRUE;
}

static gboolean
load_autoscale (ManifestLoader *self, AhManifestAgentType *type, TypeNodes *nodes, const Node *node)
{
  if (!expect_mapping (self, "'autoscale'", node))
    return FALSE;

  /* The mapping's presence opts in; `enabled: false` keeps the settings
   * written down while turning them off. */
  type->autoscale = TRUE;
  for (guint i = 0; i < node_n_pairs (node); i++)
    {
      const Node *key = node_child (node, 2 * i);
      const Node *value = node_child (node, 2 * i + 1);
      gboolean ok;

      if (strcmp (key->text, "enabled") == 0)
        {
          ok = get_bool (self, "enabled", value, &type->autoscale);
        }
      else if (strcmp (key->text, "scale_up_depth") == 0)
        {
          ok = get_uint (self, "scale_up_depth", value, 1, AH_MAILBOX_CAPACITY_MAX, &type->scale_up_depth);
          nodes->scale_up_depth = value;
        }
      else if (strcmp (key->text, "scale_up_after_ms") == 0)
        {
          ok = get_uint (self, "scale_up_after_ms", value, 0, AH_MANIFEST_MS_MAX, &type->scale_up_after_ms);
        }
      else if (strcmp (key->text, "scale_down_idle_ms") == 0)
        {
          /* Not 0: every agent would be stopped the moment it finished a batch. */
          ok = get_uint (self, "scale_down_idle_ms", value, 1, AH_MANIFEST_MS_MAX,
                         &type->scale_down_idle_ms);
        }
      else if (strcmp (key->text, "step") == 0)
        {
          ok = get_uint (self, "step", value, 1, AH_MANIFEST_MAX_POOL_SIZE, &type->scale_step);
          nodes->step = value;
        }
      else
        {
          return unknown_key (self, key, loader_printf (self, " in autoscale of agent type '%s'", type->name),
                              "enabled, scale_up_depth, scale_up_after_ms, scale_down_idle_ms, step");
        }
      if (!ok)
        return FALSE;
    }
  return TRUE;
}

static gboolean
load_supervision (ManifestLoader *self, AhManifestAgentType *type, const Node *node)
{
  if (!expect_mapping (self, "'supervision'", node))
    return FALSE;

  for (guint i = 0; i < node_n_pairs (node); i++)
    {
      const Node *key = node_child (node, 2 * i);
      const Node *value = node_child (node, 2 * i + 1);
      gboolean ok = TRUE;

      if (strcmp (key->text, "policy") == 0)
        {
          const char *text = get_string (self, "policy", value);

          if (text == NULL)
            return FALSE;
          if (strcmp (text, "one_for_one") == 0)
            type->restart_policy = AH_RESTART_ONE_FOR_ONE;
          else if (strcmp (text, "one_for_all") == 0)
            type->restart_policy = AH_RESTART_ONE_FOR_ALL;
          else if (strcmp (text, "temporary") == 0)
            type->restart_policy = AH_RESTART_TEMPORARY;
          else
            return loader_error (self, value->pos, AH_MANIFEST_ERROR_INVALID_VALUE,
                                 "'policy' must be one_for_one, one_for_all or temporary, got '%s'",
                                 loader_show (self, text));
        }
      else if (strcmp (key->text, "max_restarts") == 0)
        {
          ok = get_uint (self, "max_restarts", value, 0, AH_MANIFEST_MAX_RESTARTS_MAX, &type->max_restarts);
        }
      else if (strcmp (key->text, "period_ms") == 0)
        {
          ok = get_uint (self, "period_ms", value, 1, AH_MANIFEST_MS_MAX, &type->restart_period_ms);
        }
      else if (strcmp (key->text, "failed_messages") == 0)
        {
          const char *text = get_string (self, "failed_messages", value);

          if (text == NULL)
            return FALSE;
          if (strcmp (text, "retry") == 0)
            type->failed_messages = AH_FAILED_MESSAGES_RETRY;
          else if (strcmp (text, "dead_letter") == 0)
            type->failed_messages = AH_FAILED_MESSAGES_DEAD_LETTER;
          else
            return loader_error (self, value->pos, AH_MANIFEST_ERROR_INVALID_VALUE,
                                 "'failed_messages' must be retry or dead_letter, got '%s'",
                                 loader_show (self, text));
        }
      else if (strcmp (key->text, "handler_deadline_ms") == 0)
        {
          ok = get_uint (self, "handler_deadline_ms", value, 0, AH_MANIFEST_MS_MAX,
                         &type->handler_deadline_ms);
        }
      else if (strcmp (key->text, "required") == 0)
        {
          ok = get_bool (self, "required", value, &type->required);
        }
      else
        {
          return unknown_key (self, key, loader_printf (self, " in supervision of agent type '%s'", type->name),
                              "policy, max_restarts, period_ms, failed_messages, handler_deadline_ms, "
                              "required");
        }
      if (!ok)
        return FALSE;
    }
  return TRUE;
}

/* The checks between keys of one type, made once it is read: each is
 * reported at the value that breaks it, the bound it breaks named. */
static gboolean
check_type_bounds (ManifestLoader *self, AhManifestAgentType *type, const TypeNodes *nodes)
{
  const char *size_default = nodes->pool_size == NULL ? ", the default" : "";

  if (nodes->min != NULL && type->pool_min > type->pool_size)
    return loader_error (self, nodes->min->pos, AH_MANIFEST_ERROR_OUT_OF_RANGE,
                         "'min' must be an integer between 1 and pool_size (%u%s), got %s",
                         type->pool_size, size_default, loader_show (self, nodes->min->text));
  if (nodes->max != NULL && type->pool_max < type->pool_size)
    return loader_error (self, nodes->max->pos, AH_MANIFEST_ERROR_OUT_OF_RANGE,
                         "'max' must be an integer between pool_size (%u%s) and %d, got %s",
                         type->pool_size, size_default, AH_MANIFEST_MAX_POOL_SIZE,
                         loader_show (self, nodes->max->text));
  if (nodes->idle_cap != NULL && nodes->max != NULL && type->idle_cap > type->pool_max)
    return loader_error (self, nodes->idle_cap->pos, AH_MANIFEST_ERROR_OUT_OF_RANGE,
                         "'idle_cap' must be an integer between 0 and max (%u), got %s",
                         type->pool_max, loader_show (self, nodes->idle_cap->text));
  if (type->autoscale && type->pool_max == AH_MANIFEST_POOL_UNBOUNDED)
    return loader_error (self, nodes->autoscale_key->pos, AH_MANIFEST_ERROR_MISSING_KEY,
                         "autoscale in agent type '%s' needs a ceiling: add 'max' to its 'pool' "
                         "mapping, or set 'enabled: false'", type->name);
  if (nodes->step != NULL && type->pool_max != AH_MANIFEST_POOL_UNBOUNDED &&
      type->scale_step > type->pool_max)
    return loader_error (self, nodes->step->pos, AH_MANIFEST_ERROR_OUT_OF_RANGE,
                         "'step' must be an integer between 1 and max (%u), got %s",
                         type->pool_max, loader_show (self, nodes->step->text));
  return TRUE;
}

/* A mailbox holds at most mailbox_capacity normal messages, so a mean
 * depth above it is never reached and the type would never grow. The bus
 * may be declared after the agents: this runs once the file is read. */
static gboolean
check_scale_up_depths (ManifestLoader *self, const AhManifest *manifest)
{
  guint capacity = manifest->bus.mailbox_capacity;

  for (guint i = 0; i < self->depth_checks->len; i++)
    {
      const DepthCheck *check = &g_array_index (self->depth_checks, DepthCheck, i);

      if (check->type->scale_up_depth <= capacity)
        continue;
      if (check->is_default)
        return loader_error (self, check->pos, AH_MANIFEST_ERROR_OUT_OF_RANGE,
                             "autoscale in agent type '%s' would never grow: the default "
                             "scale_up_depth (%u) is more than the bus's mailbox_capacity (%u); "
                             "set 'scale_up_depth'", check->type->name, check->type->scale_up_depth,
                             capacity);
      return loader_error (self, check->pos, AH_MANIFEST_ERROR_OUT_OF_RANGE,
                           "'scale_up_depth' must be an integer between 1 and the bus's "
                           "mailbox_capacity (%u), got %u", capacity, check->type->scale_up_depth);
    }
  return TRUE;
}

static AhManifestAgentType *
load_agent_type (ManifestLoader *self, const Node *key, const Node *body)
{
  g_autoptr(AhManifestAgentType) type = g_new0 (AhManifestAgentType, 1);
  TypeNodes nodes = { NULL };
  const char *what;

  type->name = g_strdup (key->text);
  type->pos = key->pos;
  type->pool_size = 1;
  type->prewarm = TRUE;
  type->pool_max = AH_MANIFEST_POOL_UNBOUNDED;
  type->idle_cap = AH_MANIFEST_POOL_UNBOUNDED;
  type->scale_up_depth = AH_MANIFEST_SCALE_UP_DEPTH_DEFAULT;
  type->scale_up_after_ms = AH_MANIFEST_SCALE_UP_AFTER_MS_DEFAULT;
  type->scale_down_idle_ms = AH_MANIFEST_SCALE_DOWN_IDLE_MS_DEFAULT;
  type->scale_step = AH_MANIFEST_SCALE_STEP_DEFAULT;
  type->restart_policy = AH_RESTART_ONE_FOR_ONE;
  type->max_restarts = AH_MANIFEST_MAX_RESTARTS_DEFAULT;
  type->restart_period_ms = AH_MANIFEST_RESTART_PERIOD_MS_DEFAULT;
  type->failed_messages = AH_FAILED_MESSAGES_RETRY;
  type->subscriptions = g_ptr_array_new_with_free_func ((GDestroyNotify) subscription_free);
  type->config = g_ptr_array_new_with_free_func ((GDestroyNotify) config_entry_free);

  what = loader_printf (self, "agent type '%s'", type->name);
  if (!expect_mapping (self, what, body))
    return NULL;

  for (guint i = 0; i < node_n_pairs (body); i++)
    {
      const Node *name = node_child (body, 2 * i);
      const Node *value = node_child (body, 2 * i + 1);

      if (strcmp (name->text, "plugin") == 0)
        {
          const char *plugin = get_string (self, "plugin", value);

          if (plugin == NULL)
            return NULL;
          /* A '/' makes it a path, kept as written for the loader; a bare
           * name is looked up as NAME/NAME.so in the plugin directories. */
          if (strchr (plugin, '/') == NULL &&
              (plugin[0] == '\0' || !text_matches_charset (plugin, "_-", TRUE)))
            {
              loader_error (self, value->pos, AH_MANIFEST_ERROR_INVALID_VALUE,
                            "invalid plugin name '%s': a bare name uses A-Z a-z 0-9 _ - "
                            "(a file path must contain a '/')", loader_show (self, plugin));
              return NULL;
            }
          type->plugin = g_strdup (plugin);
          type->plugin_pos = value->pos;
        }
      else if (strcmp (name->text, "pool_size") == 0)
        {
          if (!get_uint (self, "pool_size", value, 1, AH_MANIFEST_MAX_POOL_SIZE, &type->pool_size))
            return NULL;
          nodes.pool_size = value;
        }
      else if (strcmp (name->text, "prewarm") == 0)
        {
          if (!get_bool (self, "prewarm", value, &type->prewarm))
            return NULL;
        }
      else if (strcmp (name->text, "pool") == 0)
        {
          if (!load_pool (self, type, &nodes, value))
            return NULL;
        }
      else if (strcmp (name->text, "autoscale") == 0)
        {
          nodes.autoscale_key = name;
          if (!load_autoscale (self, type, &nodes, value))
            return NULL;
        }
      else if (strcmp (name->text, "supervision") == 0)
        {
          if (!load_supervision (self, type, value))
            return NULL;
        }
      else if (strcmp (name->text, "subscribe") == 0)
        {
          if (value->kind != NODE_SEQUENCE)
            {
              loader_error (self, value->pos, AH_MANIFEST_ERROR_WRONG_TYPE,
                            "'subscribe' must be a sequence, got %s", loader_describe (self, value));
              return NULL;
            }
          for (guint j = 0; j < value->children->len; j++)
            if (!load_subscription (self, type, node_child (value, j)))
              return NULL;
        }
      else if (strcmp (name->text, "config") == 0)
        {
          if (!load_config (self, type, value))
            return NULL;
        }
      else
        {
          unknown_key (self, name, loader_printf (self, " in agent type '%s'", type->name),
                       "plugin, pool_size, prewarm, pool, autoscale, supervision, subscribe, config");
          return NULL;
        }
    }

  if (type->plugin == NULL)
    {
      loader_error (self, body->pos, AH_MANIFEST_ERROR_MISSING_KEY,
                    "missing required key 'plugin' in agent type '%s'", type->name);
      return NULL;
    }
  /* `pool: min` defaults to the initial size: no autoscaling below what
   * the type starts with unless the manifest says so. */
  if (nodes.min == NULL)
    type->pool_min = type->pool_size;
  if (!check_type_bounds (self, type, &nodes))
    return NULL;
  if (type->autoscale)
    {
      DepthCheck check = {
        .type = type,
        .pos = nodes.scale_up_depth != NULL ? nodes.scale_up_depth->pos : nodes.autoscale_key->pos,
        .is_default = nodes.scale_up_depth == NULL,
      };

      g_array_append_val (self->depth_checks, check);
    }
  return g_steal_pointer (&type);
}

static gboolean
load_agents (ManifestLoader *self, AhManifest *manifest, const Node *agents)
{
  if (!expect_mapping (self, "'agents'", agents))
    return FALSE;
  if (node_n_pairs (agents) == 0)
    return loader_error (self, agents->pos, AH_MANIFEST_ERROR_INVALID_VALUE,
                         "'agents' must declare at least one agent type");

  for (guint i = 0; i < node_n_pairs (agents); i++)
    {
      const Node *key = node_child (agents, 2 * i);
      AhManifestAgentType *type;

      if (i >= AH_MANIFEST_MAX_TYPES)
        return loader_error (self, key->pos, AH_MANIFEST_ERROR_LIMIT,
                             "more than %d agent types", AH_MANIFEST_MAX_TYPES);
      if (key->text[0] == '\0' || strlen (key->text) > AH_MANIFEST_NAME_MAX ||
          !text_matches_charset (key->text, "_-", FALSE))
        return loader_error (self, key->pos, AH_MANIFEST_ERROR_INVALID_VALUE,
                             "invalid agent type name '%s': use 1 to %d characters of a-z 0-9 _ -",
                             loader_show (self, key->text), AH_MANIFEST_NAME_MAX);
      type = load_agent_type (self, key, node_child (agents, 2 * i + 1));
      if (type == NULL)
        return FALSE;
      g_ptr_array_add (manifest->types, type);
    }
  return TRUE;
}

static gboolean
load_bus (ManifestLoader *self, AhManifestBus *bus, const Node *node)
{
  if (!expect_mapping (self, "'bus'", node))
    return FALSE;

  for (guint i = 0; i < node_n_pairs (node); i++)
    {
      const Node *key = node_child (node, 2 * i);
      const Node *value = node_child (node, 2 * i + 1);
      gboolean ok;

      if (strcmp (key->text, "workers") == 0)
        ok = get_uint (self, "workers", value, 0, 256, &bus->n_workers);
      else if (strcmp (key->text, "publish_batch") == 0)
        ok = get_uint (self, "publish_batch", value, 1, 65536, &bus->publish_batch);
      else if (strcmp (key->text, "handler_batch") == 0)
        ok = get_uint (self, "handler_batch", value, 1, 4096, &bus->handler_batch);
      else if (strcmp (key->text, "mailbox_capacity") == 0)
        ok = get_uint (self, "mailbox_capacity", value, 1, AH_MAILBOX_CAPACITY_MAX,
                       &bus->mailbox_capacity);
      else if (strcmp (key->text, "drain_timeout_ms") == 0)
        ok = get_uint (self, "drain_timeout_ms", value, 0, 3600000, &bus->drain_timeout_ms);
      else if (strcmp (key->text, "pin_workers") == 0)
        ok = get_bool (self, "pin_workers", value, &bus->pin_workers);
      else if (strcmp (key->text, "overflow") == 0)
        {
          const char *text = get_string (self, "overflow", value);

          if (text == NULL)
            return FALSE;
          if (strcmp (text, "block") == 0)
            bus->overflow = AH_OVERFLOW_BLOCK;
          else if (strcmp (text, "fail") == 0)
            bus->overflow = AH_OVERFLOW_FAIL;
          else
            return loader_error (self, value->pos, AH_MANIFEST_ERROR_INVALID_VALUE,
                                 "'overflow' must be block or fail, got '%s'", loader_show (self, text));
          ok = TRUE;
        }
      else
        return unknown_key (self, key, " in bus",
                            "workers, publish_batch, handler_batch, mailbox_capacity, overflow, "
                            "drain_timeout_ms, pin_workers");
      if (!ok)
        return FALSE;
    }
  return TRUE;
}

static gboolean
load_offload (ManifestLoader *self, AhManifestOffload *offload, const Node *node)
{
  if (!expect_mapping (self, "'offload'", node))
    return FALSE;

  for (guint i = 0; i < node_n_pairs (node); i++)
    {
      const Node *key = node_child (node, 2 * i);
      const Node *value = node_child (node, 2 * i + 1);
      gboolean ok;

      if (strcmp (key->text, "threads") == 0)
        ok = get_uint (self, "threads", value, 1, AH_MANIFEST_OFFLOAD_THREADS_MAX,
                       &offload->n_threads);
      else if (strcmp (key->text, "queue") == 0)
        ok = get_uint (self, "queue", value, 1, AH_MANIFEST_OFFLOAD_QUEUE_MAX,
                       &offload->queue_capacity);
      else
        return unknown_key (self, key, " in offload", "threads, queue");
      if (!ok)
        return FALSE;
    }
  return TRUE;
}

static gboolean
load_plugin_dir (ManifestLoader *self, AhManifest *manifest, const Node *node)
{
  const char *dir = get_string (self, "plugin_path", node);

  if (dir == NULL)
    return FALSE;
  if (dir[0] == '\0')
    return loader_error (self, node->pos, AH_MANIFEST_ERROR_INVALID_VALUE,
                         "'plugin_path' entries must not be empty");
  /* Lexical only (no symlink resolution): the directory need not exist
   * yet, and the manifest code does not look. */
  g_ptr_array_add (manifest->plugin_dirs, g_canonicalize_filename (dir, self->base_dir));
  return TRUE;
}

static gboolean
load_plugin_path (ManifestLoader *self, AhManifest *manifest, const Node *node)
{
  if (node->kind == NODE_MAPPING)
    return loader_error (self, node->pos, AH_MANIFEST_ERROR_WRONG_TYPE,
                         "'plugin_path' must be a directory or a sequence of directories, got a mapping");
  if (node->kind == NODE_SCALAR)
    return load_plugin_dir (self, manifest, node);
  for (guint i = 0; i < node->children->len; i++)
    if (!load_plugin_dir (self, manifest, node_child (node, i)))
      return FALSE;
  return TRUE;
}

static gboolean
load_root (ManifestLoader *self, AhManifest *manifest, const Node *root)
{
  gboolean have_agents = FALSE;

  if (root == NULL || (root->kind == NODE_SCALAR && core_type_of (root) == CORE_NULL))
    return loader_error (self, root != NULL ? root->pos : pos_start, AH_MANIFEST_ERROR_MISSING_KEY,
                         "empty manifest: expected a mapping with 'name' and 'agents'");
  if (root->kind != NODE_MAPPING)
    return loader_error (self, root->pos, AH_MANIFEST_ERROR_WRONG_TYPE,
                         "the manifest must be a mapping with 'name' and 'agents', got %s",
                         loader_describe (self, root));

  for (guint i = 0; i < node_n_pairs (root); i++)
    {
      const Node *key = node_child (root, 2 * i);
      const Node *value = node_child (root, 2 * i + 1);

      if (strcmp (key->text, "name") == 0)
        {
          const char *name = get_string (self, "name", value);

          if (name == NULL)
            return FALSE;
          if (name[0] == '\0' || strlen (name) > AH_MANIFEST_NAME_MAX ||
              !text_matches_charset (name, "_.-", TRUE))
            return loader_error (self, value->pos, AH_MANIFEST_ERROR_INVALID_VALUE,
                                 "invalid name '%s': use 1 to %d characters of A-Z a-z 0-9 _ . -",
                                 loader_show (self, name), AH_MANIFEST_NAME_MAX);
          manifest->name = g_strdup (name);
        }
      else if (strcmp (key->text, "description") == 0)
        {
          const char *description = get_string (self, "description", value);

          if (description == NULL)
            return FALSE;
          manifest->description = g_strdup (description);
        }
      else if (strcmp (key->text, "plugin_path") == 0)
        {
          if (!load_plugin_path (self, manifest, value))
            return FALSE;
        }
      else if (strcmp (key->text, "stop_when_idle") == 0)
        {
          if (!get_bool (self, "stop_when_idle", value, &manifest->stop_when_idle))
            return FALSE;
        }
      else if (strcmp (key->text, "run_timeout_ms") == 0)
        {
          if (!get_uint (self, "run_timeout_ms", value, 0, AH_MANIFEST_MS_MAX, &manifest->run_timeout_ms))
            return FALSE;
        }
      else if (strcmp (key->text, "watch") == 0)
        {
          if (!get_bool (self, "watch", value, &manifest->watch))
            return FALSE;
        }
      else if (strcmp (key->text, "watch_debounce_ms") == 0)
        {
          if (!get_uint (self, "watch_debounce_ms", value, 0, AH_MANIFEST_WATCH_DEBOUNCE_MAX,
                         &manifest->watch_debounce_ms))
            return FALSE;
        }
      else if (strcmp (key->text, "bus") == 0)
        {
          if (!load_bus (self, &manifest->bus, value))
            return FALSE;
        }
      else if (strcmp (key->text, "offload") == 0)
        {
          if (!load_offload (self, &manifest->offload, value))
            return FALSE;
        }
      else if (strcmp (key->text, "agents") == 0)
        {
          if (!load_agents (self, manifest, value))
            return FALSE;
          have_agents = TRUE;
        }
      else
        {
          return unknown_key (self, key, "",
                              "name, description, plugin_path, stop_when_idle, run_timeout_ms, watch, "
                              "watch_debounce_ms, bus, offload, agents");
        }
    }

  if (manifest->name == NULL)
    return loader_error (self, root->pos, AH_MANIFEST_ERROR_MISSING_KEY, "missing required key 'name'");
  if (!have_agents)
    return loader_error (self, root->pos, AH_MANIFEST_ERROR_MISSING_KEY, "missing required key 'agents'");
  return check_scale_up_depths (self, manifest);
}

/* ---- Entry points ---------------------------------------------------- */

static AhManifest *
manifest_new (const char *path, char *base_dir)
{
  AhManifest *manifest = g_new0 (AhManifest, 1);

  manifest->path = g_strdup (path);
  manifest->base_dir = base_dir;
  manifest->plugin_dirs = g_ptr_array_new_with_free_func (g_free);
  manifest->types = g_ptr_array_new_with_free_func ((GDestroyNotify) agent_type_free);
  manifest->bus.n_workers = 0;
  manifest->bus.publish_batch = 256;
  manifest->bus.handler_batch = 32;
  manifest->bus.mailbox_capacity = 1024;
  manifest->bus.overflow = AH_OVERFLOW_BLOCK;
  manifest->bus.drain_timeout_ms = 5000;
  manifest->offload.n_threads = 4;
  manifest->offload.queue_capacity = 1024;
  manifest->stop_when_idle = FALSE;
  manifest->run_timeout_ms = 0;
  manifest->watch = FALSE;
  manifest->watch_debounce_ms = AH_MANIFEST_WATCH_DEBOUNCE_DEFAULT;
  return manifest;
}

/* @base_dir: (transfer full) absolute. */
static AhManifest *
manifest_parse (const char *data, gsize size, const char *file, char *base_dir, GError **error)
{
  g_autoptr(AhManifest) manifest = manifest_new (file, base_dir);
  g_autoptr(Node) root = NULL;
  g_autoptr(GPtrArray) scratch = g_ptr_array_new_with_free_func (g_free);
  g_autoptr(GStringChunk) texts = g_string_chunk_new (AH_MANIFEST_MAX_SCALAR);
  g_autoptr(GArray) depth_checks = g_array_new (FALSE, FALSE, sizeof (DepthCheck));
  g_autofree char *file_shown = text_for_message (file, G_MAXSIZE);
  ManifestLoader loader = {
    .file = file_shown,
    .data = data,
    .size = size,
    .base_dir = base_dir,
    .scratch = scratch,
    .texts = texts,
    .depth_checks = depth_checks,
    .error = error,
  };

  if (size > AH_MANIFEST_MAX_FILE_SIZE)
    {
      loader_error (&loader, pos_start, AH_MANIFEST_ERROR_IO, "file larger than %d bytes",
                    AH_MANIFEST_MAX_FILE_SIZE);
      return NULL;
    }
  if (!tree_parse (&loader, &root) || !load_root (&loader, manifest, root))
    return NULL;
  return g_steal_pointer (&manifest);
}

/* Reads at most one byte past the cap, so an oversized file (or one that
 * grows while read) costs no more than the cap to refuse. */
static char *
manifest_read_file (const char *path, gsize *ret_size, GError **error)
{
  g_autofree char *file_shown = text_for_message (path, G_MAXSIZE);
  g_autoptr(GString) contents = NULL;
  struct stat st;
  int fd;
  int saved_errno;

  /* O_NONBLOCK: opening a FIFO must not wait for a writer; it is then
   * refused as not a regular file. */
  fd = g_open (path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK, 0);
  if (fd < 0)
    {
      saved_errno = errno;
      g_set_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_IO, "%s: error: cannot open: %s",
                   file_shown, g_strerror (saved_errno));
      return NULL;
    }
  if (fstat (fd, &st) != 0)
    {
      saved_errno = errno;
      g_close (fd, NULL);
      g_set_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_IO, "%s: error: cannot read: %s",
                   file_shown, g_strerror (saved_errno));
      return NULL;
    }
  if (!S_ISREG (st.st_mode))
    {
      g_close (fd, NULL);
      g_set_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_IO, "%s: error: not a regular file",
                   file_shown);
      return NULL;
    }
  if (st.st_size > AH_MANIFEST_MAX_FILE_SIZE)
    {
      g_close (fd, NULL);
      g_set_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_IO, "%s:1:1: error: file larger than %d bytes",
                   file_shown, AH_MANIFEST_MAX_FILE_SIZE);
      return NULL;
    }

  contents = g_string_sized_new ((gsize) st.st_size + 1);
  while (contents->len <= AH_MANIFEST_MAX_FILE_SIZE)
    {
      char buffer[AH_READ_CHUNK];
      gssize n = read (fd, buffer, sizeof buffer);

      if (n < 0 && errno == EINTR)
        continue;
      if (n < 0)
        {
          saved_errno = errno;
          g_close (fd, NULL);
          g_set_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_IO, "%s: error: cannot read: %s",
                       file_shown, g_strerror (saved_errno));
          return NULL;
        }
      if (n == 0)
        break;
      g_string_append_len (contents, buffer, n);
    }
  g_close (fd, NULL);

  *ret_size = contents->len;
  return g_string_free (g_steal_pointer (&contents), FALSE);
}

/**
 * ah_manifest_load:
 * @path: the manifest file; kept as given for messages
 * @error: return location for an AH_MANIFEST_ERROR
 *
 * Reads, parses and checks a manifest. Relative plugin_path entries are
 * resolved against the manifest's directory. Plugins are not loaded.
 *
 * Returns: (transfer full) (nullable): the manifest, or NULL with @error set
 */
AhManifest *
ah_manifest_load (const char *path, GError **error)
{
  g_autofree char *data = NULL;
  g_autofree char *dir = NULL;
  gsize size = 0;

  g_return_val_if_fail (path != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  data = manifest_read_file (path, &size, error);
  if (data == NULL)
    return NULL;
  dir = g_path_get_dirname (path);
  return manifest_parse (data, size, path, g_canonicalize_filename (dir, NULL), error);
}

/**
 * ah_manifest_load_data:
 * @data: (array length=size): the manifest text, need not be NUL-terminated
 * @size: its length in bytes
 * @display_name: (nullable): FILE in messages, "<data>" when NULL
 * @base_dir: (nullable): what relative plugin_path entries resolve
 *   against; the current directory when NULL
 * @error: return location for an AH_MANIFEST_ERROR
 *
 * Returns: (transfer full) (nullable): the manifest, or NULL with @error set
 */
AhManifest *
ah_manifest_load_data (const char *data, gsize size, const char *display_name,
                       const char *base_dir, GError **error)
{
  g_return_val_if_fail (data != NULL || size == 0, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  return manifest_parse (data != NULL ? data : "", size,
                         display_name != NULL ? display_name : "<data>",
                         base_dir != NULL ? g_canonicalize_filename (base_dir, NULL) : g_get_current_dir (),
                         error);
}

/**
 * ah_manifest_load_default:
 * @error: return location for an AH_MANIFEST_ERROR
 *
 * Loads the manifest built into the library (manifests/default.yaml),
 * named "<built-in>/default.yaml" in messages; relative plugin_path
 * entries resolve against the current directory.
 *
 * Returns: (transfer full) (nullable): the manifest, or NULL with @error set
 */
AhManifest *
ah_manifest_load_default (GError **error)
{
  g_autoptr(GBytes) bytes = NULL;
  g_autoptr(GError) local_error = NULL;
  gconstpointer data;
  gsize size;

  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  /* Referencing the resource pulls its object file out of the static
   * archive, and with it the constructor that registers it. */
  if (ah_resources_get_resource () == NULL)
    {
      g_set_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_IO,
                   "%s: error: the built-in resources are missing", AH_DEFAULT_DISPLAY_NAME);
      return NULL;
    }
  bytes = g_resources_lookup_data (AH_DEFAULT_RESOURCE, G_RESOURCE_LOOKUP_FLAGS_NONE, &local_error);
  if (bytes == NULL)
    {
      g_set_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_IO, "%s: error: cannot open: %s",
                   AH_DEFAULT_DISPLAY_NAME, local_error->message);
      return NULL;
    }
  data = g_bytes_get_data (bytes, &size);
  return manifest_parse (data != NULL ? data : "", size, AH_DEFAULT_DISPLAY_NAME, g_get_current_dir (),
                         error);
}

const char *
ah_manifest_get_name (AhManifest *self)
{
  g_return_val_if_fail (self != NULL, NULL);
  return self->name;
}

const char *
ah_manifest_get_path (AhManifest *self)
{
  g_return_val_if_fail (self != NULL, NULL);
  return self->path;
}

guint
ah_manifest_get_n_types (AhManifest *self)
{
  g_return_val_if_fail (self != NULL, 0);
  return self->types->len;
}

const AhManifestAgentType *
ah_manifest_get_type (AhManifest *self, guint index)
{
  g_return_val_if_fail (self != NULL, NULL);
  g_return_val_if_fail (index < self->types->len, NULL);
  return g_ptr_array_index (self->types, index);
}

const AhManifestAgentType *
ah_manifest_find_type (AhManifest *self, const char *name)
{
  g_return_val_if_fail (self != NULL, NULL);
  g_return_val_if_fail (name != NULL, NULL);

  for (guint i = 0; i < self->types->len; i++)
    {
      const AhManifestAgentType *type = g_ptr_array_index (self->types, i);

      if (strcmp (type->name, name) == 0)
        return type;
    }
  return NULL;
}

const AhManifestConfigEntry *
ah_manifest_type_find_config (const AhManifestAgentType *type, const char *key)
{
  g_return_val_if_fail (type != NULL, NULL);
  g_return_val_if_fail (key != NULL, NULL);

  for (guint i = 0; i < type->config->len; i++)
    {
      const AhManifestConfigEntry *entry = g_ptr_array_index (type->config, i);

      if (strcmp (entry->key, key) == 0)
        return entry;
    }
  return NULL;
}

void
ah_manifest_free (AhManifest *self)
{
  if (self == NULL)
    return;
  g_free (self->path);
  g_free (self->base_dir);
  g_free (self->name);
  g_free (self->description);
  g_clear_pointer (&self->plugin_dirs, g_ptr_array_unref);
  g_clear_pointer (&self->types, g_ptr_array_unref);
  g_free (self);
}

/**
 * ah_manifest_get_watch:
 * @self: a manifest
 * @ret_debounce_ms: (out) (optional): the manifest's `watch_debounce_ms`
 *
 * What the manifest says about watching plugin files: whether to (the
 * `watch` key), and the debounce to use, which applies to `--watch` too.
 *
 * Returns: the manifest's `watch` (default %FALSE)
 */
gboolean
ah_manifest_get_watch (AhManifest *self, guint *ret_debounce_ms)
{
  g_return_val_if_fail (self != NULL, FALSE);

  if (ret_debounce_ms != NULL)
    *ret_debounce_ms = self->watch_debounce_ms;
  return self->watch;
}

guint64
ah_manifest_get_n_agents (AhManifest *self)
{
  guint64 n_agents = 0;

  g_return_val_if_fail (self != NULL, 0);

  for (guint i = 0; i < self->types->len; i++)
    {
      const AhManifestAgentType *type = g_ptr_array_index (self->types, i);

      if (type->prewarm)
        n_agents += type->pool_size;
    }
  return n_agents;
}
