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

#define AH_CONFIG_SCHEMA_MAX_KEYS 256
#define AH_CONFIG_KEY_MAX_LEN     128

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

static gboolean
config_parse_int (const char *text,
                  gint64     *ret_value)
{
  return g_ascii_string_to_signed (text, 10, G_MININT64, G_MAXINT64, ret_value, NULL);
}

static gboolean
config_parse_double (const char *text,
                     gdouble    *ret_value)
{
  char *end = NULL;

  if (*text == '\0' || g_ascii_isspace (*text))
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
        return config_key_has_range (key)
               ? g_strdup_printf ("must be an integer between %.0f and %.0f", key->min, key->max)
               : g_strdup ("must be an integer");
      double_value = (gdouble) int_value;
      break;
    case AH_CONFIG_DOUBLE:
      if (!config_parse_double (text, &double_value))
        return config_key_has_range (key)
               ? g_strdup_printf ("must be a number between %g and %g", key->min, key->max)
               : g_strdup ("must be a number");
      break;
    default:
      return g_strdup ("has an unknown type in the plugin's schema");
    }

  *ret_code = AH_MANIFEST_ERROR_OUT_OF_RANGE;
  if (config_key_has_range (key) && (double_value < key->min || double_value > key->max))
    return key->type == AH_CONFIG_INT
           ? g_strdup_printf ("must be an integer between %.0f and %.0f", key->min, key->max)
           : g_strdup_printf ("must be a number between %g and %g", key->min, key->max);

  return NULL;
}

static gboolean
config_key_name_is_valid (const char *name)
{
  gsize len = strlen (name);
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

gboolean
ah_config_schema_check (const AhConfigKey *schema,
                        const char        *path,
                        GError           **error)
{
  g_autoptr(GHashTable) seen = NULL;
  guint i;

  if (schema == NULL)
    return TRUE;

  seen = g_hash_table_new (g_str_hash, g_str_equal);
  for (i = 0; i < AH_CONFIG_SCHEMA_MAX_KEYS && schema[i].name != NULL; i++)
    {
      const AhConfigKey *key = &schema[i];
      g_autofree char *problem = NULL;
      AhManifestError code;

      if (!config_key_name_is_valid (key->name))
        {
          g_autofree char *escaped = g_strescape (key->name, NULL);

          g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                       "%s: invalid config schema: key %u: '%.*s' is not a key "
                       "(dot-separated tokens of letters, digits, '_' and '-')",
                       path, i, 80, escaped);
          return FALSE;
        }
      if (!g_hash_table_add (seen, (gpointer) key->name))
        {
          g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                       "%s: invalid config schema: key '%s' declared twice", path, key->name);
          return FALSE;
        }
      if (key->type < AH_CONFIG_STRING || key->type > AH_CONFIG_BOOL)
        {
          g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                       "%s: invalid config schema: key '%s' has unknown type %d",
                       path, key->name, (int) key->type);
          return FALSE;
        }
      if ((key->flags & ~(guint32) AH_CONFIG_FLAG_REQUIRED) != 0)
        {
          g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                       "%s: invalid config schema: key '%s' has unknown flags 0x%x",
                       path, key->name, key->flags);
          return FALSE;
        }
      if (isnan (key->min) || isnan (key->max) || key->min > key->max)
        {
          g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                       "%s: invalid config schema: key '%s' has min %g above max %g",
                       path, key->name, key->min, key->max);
          return FALSE;
        }
      if (key->default_value != NULL
          && (problem = config_value_problem (key, key->default_value, &code)) != NULL)
        {
          g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                       "%s: invalid config schema: the default of key '%s' %s",
                       path, key->name, problem);
          return FALSE;
        }
    }

  if (i == AH_CONFIG_SCHEMA_MAX_KEYS)
    {
      g_set_error (error, AH_PLUGIN_ERROR, AH_PLUGIN_ERROR_INVALID_DESC,
                   "%s: invalid config schema: more than %d keys, or no AH_CONFIG_KEY_END",
                   path, AH_CONFIG_SCHEMA_MAX_KEYS - 1);
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
  if (last_dot == NULL || !g_ascii_isdigit (last_dot[1]))
    return NULL;
  for (const char *p = last_dot + 1; *p != '\0'; p++)
    if (!g_ascii_isdigit (*p))
      return NULL;
  parent = g_strndup (name, last_dot - name);
  return config_schema_find (schema, parent);
}

static void
config_append_key_list (GString           *out,
                        const AhConfigKey *schema)
{
  for (guint i = 0; schema[i].name != NULL; i++)
    g_string_append_printf (out, "%s%s", i == 0 ? "" : ", ", schema[i].name);
}

gboolean
ah_config_check (AhManifest                *manifest,
                 const AhManifestAgentType *type,
                 const AhPluginDesc        *desc,
                 GError                   **error)
{
  const AhConfigKey *schema = desc->config_schema;

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
          g_autoptr(GString) expected = g_string_new (NULL);

          config_append_key_list (expected, schema);
          g_set_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_UNKNOWN_KEY,
                       "%s:%u:%u: error: agent type '%s': unknown config key '%s' "
                       "(plugin '%s' accepts %s)",
                       manifest->path, entry->pos.line, entry->pos.column, type->name,
                       entry->key, desc->name, expected->len > 0 ? expected->str : "no keys");
          return FALSE;
        }
      problem = config_value_problem (key, entry->value, &code);
      if (problem != NULL)
        {
          g_autofree char *escaped = g_strescape (entry->value, NULL);

          g_set_error (error, AH_MANIFEST_ERROR, code,
                       "%s:%u:%u: error: agent type '%s': config '%s' %s, got '%.80s'",
                       manifest->path, entry->pos.line, entry->pos.column, type->name,
                       entry->key, problem, escaped);
          return FALSE;
        }
    }

  for (guint i = 0; schema[i].name != NULL; i++)
    {
      if ((schema[i].flags & AH_CONFIG_FLAG_REQUIRED) == 0)
        continue;
      if (ah_manifest_type_find_config (type, schema[i].name) == NULL)
        {
          g_set_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_MISSING_KEY,
                       "%s:%u:%u: error: agent type '%s': missing required config key '%s' (%s%s%s)",
                       manifest->path, type->pos.line, type->pos.column, type->name,
                       schema[i].name, config_type_name (schema[i].type),
                       schema[i].description != NULL ? ": " : "",
                       schema[i].description != NULL ? schema[i].description : "");
          return FALSE;
        }
    }

  return TRUE;
}

GHashTable *
ah_config_table_new (const AhManifestAgentType *type,
                     const AhPluginDesc        *desc)
{
  GHashTable *table = g_hash_table_new (g_str_hash, g_str_equal);

  if (desc->config_schema != NULL)
    for (guint i = 0; desc->config_schema[i].name != NULL; i++)
      if (desc->config_schema[i].default_value != NULL)
        g_hash_table_insert (table, (gpointer) desc->config_schema[i].name,
                             (gpointer) desc->config_schema[i].default_value);

  /* The manifest's values override the defaults. */
  for (guint i = 0; i < type->config->len; i++)
    {
      const AhManifestConfigEntry *entry = g_ptr_array_index (type->config, i);

      g_hash_table_insert (table, entry->key, entry->value);
    }

  return table;
}

void
ah_config_describe_schema (const AhConfigKey *schema,
                           GString           *out)
{
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

  for (guint i = 0; schema[i].name != NULL; i++)
    {
      const AhConfigKey *key = &schema[i];

      g_string_append_printf (out, "  %-20s %-8s", key->name, config_type_name (key->type));
      if ((key->flags & AH_CONFIG_FLAG_REQUIRED) != 0)
        g_string_append (out, " required");
      if (key->default_value != NULL)
        g_string_append_printf (out, " default %s", key->default_value);
      if (config_key_has_range (key))
        g_string_append_printf (out, key->type == AH_CONFIG_INT ? " range %.0f..%.0f" : " range %g..%g",
                                key->min, key->max);
      if (key->description != NULL)
        g_string_append_printf (out, "  %s", key->description);
      g_string_append_c (out, '\n');
    }
}
