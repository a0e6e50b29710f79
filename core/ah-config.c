/* Plugin configuration: schemas, checks and the values agents read.
 *
 * A plugin may declare the keys of its `config:` block (AhConfigKey, ABI
 * 1.1). The loader checks the table itself; validate and run check every
 * agent type's config against it before any agent starts; the agents
 * then read values with the schema's defaults filled in.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-config-private.h"

#include <errno.h>
#include <math.h>
#include <string.h>

#define AH_CONFIG_SCHEMA_MAX_KEYS      256
#define AH_CONFIG_KEY_MAX_LEN          128
/* A default stands for a value the manifest could hold: same cap. */
#define AH_CONFIG_DEFAULT_MAX_LEN      AH_MANIFEST_MAX_SCALAR
#define AH_CONFIG_DESCRIPTION_MAX_LEN  1024
/* As the manifest's own messages: input quoted in a message is cut here. */
#define AH_CONFIG_MESSAGE_TEXT_MAX     80
/* Keys an unknown-key message lists before "and N more". */
#define AH_CONFIG_MESSAGE_MAX_KEYS     16

static const char *
config_type_name (AhConfigType type)
{
  switch (type)
    {
    case AH_CONFIG_STRING: return "string";
    case AH_CONFIG_INT:    return "integer";
    case AH_CONFIG_DOUBLE: return "number";
    case AH_CONFIG_BOOL:   return "boolean";
    default:               return "unknown";
    }
}

/* Text from the manifest or the plugin, quoted in a message or in
 * `inspect` output: control characters are escaped so that it stays one
 * line, and long text is cut on a character boundary (the manifest's
 * rule, so that every line of validate reads alike). */
static char *
config_text_for_message (const char *text,
                         gsize       max_bytes)
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

/* Plain decimal, as the manifest takes its own integers: an optional
 * '-', no '+', no leading zero (YAML 1.1 read 010 as 8), no hex. */
static gboolean
config_parse_int (const char *text,
                  gint64     *ret_value)
{
  const char *digits = text[0] == '-' ? text + 1 : text;
  gsize n_digits = strspn (digits, "0123456789");

  if (n_digits == 0 || digits[n_digits] != '\0' || (digits[0] == '0' && n_digits > 1))
    return FALSE;
  return g_ascii_string_to_signed (text, 10, G_MININT64, G_MAXINT64, ret_value, NULL);
}

static gboolean
config_parse_double (const char *text,
                     gdouble    *ret_value)
{
  char *end = NULL;

  /* Decimal notation only: strtod() alone would also take leading
   * spaces, hex floats, "inf" and "nan". */
  if (*text == '\0' || text[strspn (text, "0123456789+-.eE")] != '\0')
    return FALSE;
  errno = 0;
  *ret_value = g_ascii_strtod (text, &end);
  return errno == 0 && end != NULL && *end == '\0' && isfinite (*ret_value);
}

static gboolean
config_parse_bool (const char *text,
                   gboolean   *ret_value)
{
  /* The spellings the manifest itself takes (YAML 1.2 core schema). */
  if (g_str_equal (text, "true") || g_str_equal (text, "True") || g_str_equal (text, "TRUE"))
    *ret_value = TRUE;
  else if (g_str_equal (text, "false") || g_str_equal (text, "False") || g_str_equal (text, "FALSE"))
    *ret_value = FALSE;
  else
    return FALSE;
  return TRUE;
}

static gboolean
config_key_has_range (const AhConfigKey *key)
{
  return (key->type == AH_CONFIG_INT || key->type == AH_CONFIG_DOUBLE)
         && !(key->min == 0 && key->max == 0);
}

static char *
config_expected_value (const AhConfigKey *key)
{
  if (key->type == AH_CONFIG_INT)
    return config_key_has_range (key)
           ? g_strdup_printf ("must be an integer between %.0f and %.0f", key->min, key->max)
           : g_strdup ("must be an integer");
  return config_key_has_range (key)
         ? g_strdup_printf ("must be a number between %g and %g", key->min, key->max)
         : g_strdup ("must be a number");
}

/* Checks @text against @key. On failure returns a description of what
 * was expected, for the error message, and whether the value was of the
 * wrong type or out of range in @ret_code. */
static char *
config_value_problem (const AhConfigKey *key,
                      const char        *text,
                      AhManifestError   *ret_code)
{
  gint64 int_value;
  gdouble double_value;
  gboolean bool_value;

  *ret_code = AH_MANIFEST_ERROR_WRONG_TYPE;
  switch (key->type)
    {
    case AH_CONFIG_STRING:
      return NULL;
    case AH_CONFIG_BOOL:
      return config_parse_bool (text, &bool_value) ? NULL : g_strdup ("must be true or false");
    case AH_CONFIG_INT:
      if (!config_parse_int (text, &int_value))
        return config_expected_value (key);
      double_value = (gdouble) int_value;
      break;
    case AH_CONFIG_DOUBLE:
      if (!config_parse_double (text, &double_value))
        return config_expected_value (key);
      break;
    default:
      return g_strdup ("has an unknown type in the plugin's schema");
    }

  *ret_code = AH_MANIFEST_ERROR_OUT_OF_RANGE;
  if (config_key_has_range (key) && (double_value < key->min || double_value > key->max))
    return config_expected_value (key);

  return NULL;
}

static gboolean
config_key_name_is_valid (const char *name)
{
  gsize len = strnlen (name, AH_CONFIG_KEY_MAX_LEN + 1);
  gboolean token_start = TRUE;

  if (len == 0 || len > AH_CONFIG_KEY_MAX_LEN)
    return FALSE;
  for (const char *p = name; *p != '\0'; p++)
    {
      if (*p == '.')
        {
          if (token_start)
            return FALSE;
          token_start = TRUE;
          continue;
        }
      if (!g_ascii_isalnum (*p) && *p != '_' && *p != '-')
        return FALSE;
      token_start = FALSE;
    }
  return !token_start;
}

/* A text the host prints (a default, a description): bounded, read no
 * further than the bound plus one, and UTF-8. Returns what is wrong. */
static char *
config_text_problem (const char *text,
                     gsize       max_len)
{
  gsize len = strnlen (text, max_len + 1);

  if (len > max_len)
    return g_strdup_printf ("is longer than %" G_GSIZE_FORMAT " bytes", max_len);
  if (!g_utf8_validate (text, (gssize) len, NULL))
    return g_strdup ("is not valid UTF-8");
  return NULL;
}

static gboolean config_schema_error (GError **error, const char *path, const char *format, ...)
  G_GNUC_PRINTF (3, 4);

/* Always returns FALSE, so a check can end with `return config_schema_error (...)`. */
static gboolean
config_schema_error (GError    **error,
                     const char *path,
                     const char *format,
                     ...)
{
  va_list args;
  g_autofree char *what = NULL;

  va_start (args, format);
  what = g_strdup_vprintf (format, args);
  va_end (args);
  g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
               "%s: invalid config schema: %s", path, what);
  return FALSE;
}

static gboolean
config_schema_key_check (const AhConfigKey *key,
                         guint              index,
                         GHashTable        *seen,
                         const char        *path,
                         GError           **error)
{
  g_autofree char *problem = NULL;
  AhManifestError code;

  if (!config_key_name_is_valid (key->name))
    {
      g_autofree char *shown = config_text_for_message (key->name, AH_CONFIG_MESSAGE_TEXT_MAX);

      return config_schema_error (error, path, "key %u: '%s' is not a key name (at most "
                                  "%d bytes of dot-separated tokens of letters, digits, "
                                  "'_' and '-')", index, shown, AH_CONFIG_KEY_MAX_LEN);
    }
  if (!g_hash_table_add (seen, (gpointer) key->name))
    return config_schema_error (error, path, "key '%s' declared twice", key->name);
  if (key->type < AH_CONFIG_STRING || key->type > AH_CONFIG_BOOL)
    return config_schema_error (error, path, "key '%s' has unknown type %d",
                                key->name, (int) key->type);
  if ((key->flags & ~(guint32) AH_CONFIG_FLAG_REQUIRED) != 0)
    return config_schema_error (error, path, "key '%s' has unknown flags 0x%x",
                                key->name, key->flags);

  if (!isfinite (key->min) || !isfinite (key->max))
    return config_schema_error (error, path, "key '%s' has a range bound that is not a "
                                "finite number", key->name);
  /* min and max mean nothing to these types: a plugin that sets them
   * expects a check the host would never make. */
  if ((key->type == AH_CONFIG_STRING || key->type == AH_CONFIG_BOOL)
      && (key->min != 0 || key->max != 0))
    return config_schema_error (error, path, "key '%s' is a %s and cannot have a range",
                                key->name, config_type_name (key->type));
  if (key->min > key->max)
    return config_schema_error (error, path, "key '%s' has min %g above max %g",
                                key->name, key->min, key->max);
  if (key->type == AH_CONFIG_INT && (key->min != floor (key->min) || key->max != floor (key->max)))
    return config_schema_error (error, path, "key '%s' is an integer but its range %g..%g "
                                "is not", key->name, key->min, key->max);

  if (key->description != NULL
      && (problem = config_text_problem (key->description, AH_CONFIG_DESCRIPTION_MAX_LEN)) != NULL)
    return config_schema_error (error, path, "the description of key '%s' %s",
                                key->name, problem);

  if (key->default_value == NULL)
    return TRUE;
  /* The default would never be used: the plugin author meant one of the two. */
  if ((key->flags & AH_CONFIG_FLAG_REQUIRED) != 0)
    return config_schema_error (error, path, "key '%s' is required and has a default",
                                key->name);
  if ((problem = config_text_problem (key->default_value, AH_CONFIG_DEFAULT_MAX_LEN)) != NULL)
    return config_schema_error (error, path, "the default of key '%s' %s",
                                key->name, problem);
  if ((problem = config_value_problem (key, key->default_value, &code)) != NULL)
    {
      g_autofree char *shown = config_text_for_message (key->default_value,
                                                        AH_CONFIG_MESSAGE_TEXT_MAX);

      return config_schema_error (error, path, "the default of key '%s' %s, got '%s'",
                                  key->name, problem, shown);
    }

  return TRUE;
}

/**
 * ah_config_schema_check:
 * @schema: (nullable): a plugin's schema table
 * @path: the plugin file, for messages
 * @error: return location for an %AH_PLUGIN_ERROR_INVALID_DESC
 *
 * Checks the table as the plugin author wrote it, so that a mistake in
 * it is reported when the plugin loads, not as a puzzling refusal of a
 * correct manifest later. A NULL @schema is no schema, and passes.
 *
 * Returns: %TRUE when the schema is well-formed
 */
gboolean
ah_config_schema_check (const AhConfigKey *schema,
                        const char        *path,
                        GError           **error)
{
  g_autoptr(GHashTable) seen = NULL;

  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (schema == NULL)
    return TRUE;

  seen = g_hash_table_new (g_str_hash, g_str_equal);
  for (guint i = 0; schema[i].name != NULL; i++)
    {
      /* The bound also stops the walk of a table that lacks its end
       * marker before it wanders far into the plugin's data. */
      if (i == AH_CONFIG_SCHEMA_MAX_KEYS)
        return config_schema_error (error, path, "more than %d keys, or no AH_CONFIG_KEY_END",
                                    AH_CONFIG_SCHEMA_MAX_KEYS);
      if (!config_schema_key_check (&schema[i], i, seen, path, error))
        return FALSE;
    }

  return TRUE;
}

static const AhConfigKey *
config_schema_find (const AhConfigKey *schema,
                    const char        *name)
{
  for (guint i = 0; schema[i].name != NULL; i++)
    if (g_str_equal (schema[i].name, name))
      return &schema[i];
  return NULL;
}

/* Whether @name is an item of the sequence @parent: "PARENT.N". */
static gboolean
config_name_is_item_of (const char *name,
                        const char *parent)
{
  gsize parent_len = strlen (parent);
  const char *index;

  if (strncmp (name, parent, parent_len) != 0 || name[parent_len] != '.')
    return FALSE;
  index = name + parent_len + 1;
  return *index != '\0' && index[strspn (index, "0123456789")] == '\0';
}

/* The schema key that a flattened config key belongs to: the key itself,
 * or, for the items of a sequence ("words.0"), the sequence's key. */
static const AhConfigKey *
config_schema_find_for_entry (const AhConfigKey *schema,
                              const char        *name)
{
  const AhConfigKey *key = config_schema_find (schema, name);
  const char *last_dot;
  g_autofree char *parent = NULL;

  if (key != NULL)
    return key;
  last_dot = strrchr (name, '.');
  if (last_dot == NULL)
    return NULL;
  parent = g_strndup (name, (gsize) (last_dot - name));
  if (!config_name_is_item_of (name, parent))
    return NULL;
  return config_schema_find (schema, parent);
}

/* Whether the manifest gives @name, as a scalar or as a sequence. */
static gboolean
config_type_has_key (const AhManifestAgentType *type,
                     const char                *name)
{
  for (guint i = 0; i < type->config->len; i++)
    {
      const AhManifestConfigEntry *entry = g_ptr_array_index (type->config, i);

      if (g_str_equal (entry->key, name) || config_name_is_item_of (entry->key, name))
        return TRUE;
    }
  return FALSE;
}

static void
config_append_key_list (GString           *out,
                        const AhConfigKey *schema)
{
  guint n_keys = 0;

  while (schema[n_keys].name != NULL)
    n_keys++;
  if (n_keys == 0)
    {
      g_string_append (out, "no keys");
      return;
    }
  for (guint i = 0; i < n_keys && i < AH_CONFIG_MESSAGE_MAX_KEYS; i++)
    g_string_append_printf (out, "%s%s", i == 0 ? "" : ", ", schema[i].name);
  if (n_keys > AH_CONFIG_MESSAGE_MAX_KEYS)
    g_string_append_printf (out, " and %u more", n_keys - AH_CONFIG_MESSAGE_MAX_KEYS);
}

/**
 * ah_config_check:
 * @manifest: the manifest @type belongs to, for FILE in messages
 * @type: an agent type of @manifest
 * @desc: the descriptor of @type's plugin, its schema checked by the loader
 * @error: return location for an %AH_MANIFEST_ERROR
 *
 * Checks @type's `config:` against @desc's schema: in file order, each
 * entry must belong to a key of the schema and parse as its type within
 * its range; then each required key must be there. A plugin without a
 * schema accepts any config.
 *
 * Returns: %TRUE when the config is acceptable
 */
gboolean
ah_config_check (AhManifest                *manifest,
                 const AhManifestAgentType *type,
                 const AhPluginDesc        *desc,
                 GError                   **error)
{
  const AhConfigKey *schema;

  g_return_val_if_fail (manifest != NULL, FALSE);
  g_return_val_if_fail (type != NULL, FALSE);
  g_return_val_if_fail (desc != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  schema = desc->config_schema;
  if (schema == NULL)
    return TRUE;

  for (guint i = 0; i < type->config->len; i++)
    {
      const AhManifestConfigEntry *entry = g_ptr_array_index (type->config, i);
      const AhConfigKey *key = config_schema_find_for_entry (schema, entry->key);
      g_autofree char *problem = NULL;
      AhManifestError code;

      if (key == NULL)
        {
          g_autofree char *shown_key = config_text_for_message (entry->key,
                                                                AH_CONFIG_MESSAGE_TEXT_MAX);
          g_autoptr(GString) expected = g_string_new (NULL);

          config_append_key_list (expected, schema);
          g_set_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_UNKNOWN_KEY,
                       "%s:%u:%u: error: agent type '%s': unknown config key '%s' "
                       "(plugin '%s' accepts %s)",
                       manifest->path, entry->pos.line, entry->pos.column, type->name,
                       shown_key, desc->name, expected->str);
          return FALSE;
        }
      problem = config_value_problem (key, entry->value, &code);
      if (problem != NULL)
        {
          g_autofree char *shown_key = config_text_for_message (entry->key,
                                                                AH_CONFIG_MESSAGE_TEXT_MAX);
          g_autofree char *shown_value = config_text_for_message (entry->value,
                                                                  AH_CONFIG_MESSAGE_TEXT_MAX);

          g_set_error (error, AH_MANIFEST_ERROR, code,
                       "%s:%u:%u: error: agent type '%s': config '%s' %s, got '%s'",
                       manifest->path, entry->pos.line, entry->pos.column, type->name,
                       shown_key, problem, shown_value);
          return FALSE;
        }
    }

  for (guint i = 0; schema[i].name != NULL; i++)
    {
      if ((schema[i].flags & AH_CONFIG_FLAG_REQUIRED) == 0)
        continue;
      if (!config_type_has_key (type, schema[i].name))
        {
          g_autofree char *shown_description = schema[i].description != NULL
            ? config_text_for_message (schema[i].description, AH_CONFIG_MESSAGE_TEXT_MAX)
            : NULL;

          g_set_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_MISSING_KEY,
                       "%s:%u:%u: error: agent type '%s': missing required config key '%s' (%s%s%s)",
                       manifest->path, type->pos.line, type->pos.column, type->name,
                       schema[i].name, config_type_name (schema[i].type),
                       shown_description != NULL ? ": " : "",
                       shown_description != NULL ? shown_description : "");
          return FALSE;
        }
    }

  return TRUE;
}

/**
 * ah_config_table_new:
 * @type: an agent type
 * @desc: its plugin's descriptor
 *
 * Returns: (transfer full): key -> value, both borrowed from @type and
 * @desc: the schema's defaults overridden by the manifest's values
 */
GHashTable *
ah_config_table_new (const AhManifestAgentType *type,
                     const AhPluginDesc        *desc)
{
  const AhConfigKey *schema = desc->config_schema;
  GHashTable *table = g_hash_table_new (g_str_hash, g_str_equal);

  if (schema != NULL)
    for (guint i = 0; schema[i].name != NULL; i++)
      if (schema[i].default_value != NULL)
        g_hash_table_insert (table, (gpointer) schema[i].name, (gpointer) schema[i].default_value);

  /* The manifest's values override the defaults. */
  for (guint i = 0; i < type->config->len; i++)
    {
      const AhManifestConfigEntry *entry = g_ptr_array_index (type->config, i);
      const AhConfigKey *key = schema != NULL ? config_schema_find_for_entry (schema, entry->key) : NULL;

      /* A sequence given for a key replaces its default too: the plugin
       * must not read both the manifest's items and the default. */
      if (key != NULL && key->default_value != NULL && !g_str_equal (key->name, entry->key)
          && g_hash_table_lookup (table, key->name) == key->default_value)
        g_hash_table_remove (table, key->name);
      g_hash_table_insert (table, entry->key, entry->value);
    }

  return table;
}

/* The middle column of `inspect`: "required", the default (quoted for a
 * string), the range, those that apply. */
static char *
config_describe_details (const AhConfigKey *key)
{
  GString *details = g_string_new (NULL);

  if ((key->flags & AH_CONFIG_FLAG_REQUIRED) != 0)
    g_string_append (details, "required");
  if (key->default_value != NULL)
    {
      g_autofree char *shown = config_text_for_message (key->default_value,
                                                        AH_CONFIG_MESSAGE_TEXT_MAX);

      g_string_append_printf (details, key->type == AH_CONFIG_STRING ? "%sdefault \"%s\"" : "%sdefault %s",
                              details->len > 0 ? ", " : "", shown);
    }
  if (config_key_has_range (key))
    g_string_append_printf (details, key->type == AH_CONFIG_INT ? "%srange %.0f..%.0f" : "%srange %g..%g",
                            details->len > 0 ? ", " : "", key->min, key->max);
  return g_string_free (details, FALSE);
}

/**
 * ah_config_describe_schema:
 * @schema: (nullable): a schema the loader has checked
 * @out: where the lines are appended
 *
 * One line per key, indented two spaces, in aligned columns: name, type,
 * the details that apply ("required", the default, the range), and the
 * description.
 */
void
ah_config_describe_schema (const AhConfigKey *schema,
                           GString           *out)
{
  g_autoptr(GPtrArray) details = NULL;
  int name_width = 0;
  int details_width = 0;

  g_return_if_fail (out != NULL);

  if (schema == NULL)
    {
      g_string_append (out, "  (no schema: any key is accepted)\n");
      return;
    }
  if (schema[0].name == NULL)
    {
      g_string_append (out, "  (no keys)\n");
      return;
    }

  details = g_ptr_array_new_with_free_func (g_free);
  for (guint i = 0; schema[i].name != NULL; i++)
    {
      char *key_details = config_describe_details (&schema[i]);

      /* Both bounded: names by the schema check, details by the cut of
       * the default. */
      name_width = MAX (name_width, (int) strlen (schema[i].name));
      details_width = MAX (details_width, (int) g_utf8_strlen (key_details, -1));
      g_ptr_array_add (details, key_details);
    }

  for (guint i = 0; schema[i].name != NULL; i++)
    {
      const AhConfigKey *key = &schema[i];
      const char *key_details = g_ptr_array_index (details, i);
      GString *line = g_string_new (NULL);

      g_string_append_printf (line, "  %-*s  %-7s", name_width, key->name,
                              config_type_name (key->type));
      if (details_width > 0)
        {
          g_string_append_printf (line, "  %s", key_details);
          /* Padded by characters, not bytes: a default may be UTF-8. */
          for (int pad = (int) g_utf8_strlen (key_details, -1); pad < details_width; pad++)
            g_string_append_c (line, ' ');
        }
      if (key->description != NULL)
        {
          g_autofree char *shown = config_text_for_message (key->description,
                                                            AH_CONFIG_DESCRIPTION_MAX_LEN);

          g_string_append_printf (line, "  %s", shown);
        }
      /* No trailing blanks when the last columns are empty. */
      while (line->len > 0 && line->str[line->len - 1] == ' ')
        g_string_truncate (line, line->len - 1);
      g_string_append_len (out, line->str, (gssize) line->len);
      g_string_append_c (out, '\n');
      g_string_free (line, TRUE);
    }
}
