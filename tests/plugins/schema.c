/* SPDX-License-Identifier: MIT */
/* Declares a config schema with a key of every type, defaults, ranges, a
 * nested key, sequence keys and a required key, for the config tests.
 * Its agents answer a REQUEST whose payload is a key name with the value
 * they read for it (ah_config_get_string, "<unset>" when there is none),
 * so a test sees the effective config: defaults applied, manifest values
 * over them. */
#include <agenthost/agenthost.h>

#include <string.h>

static const AhConfigKey schema_config_keys[] = {
  { .name = "greeting", .type = AH_CONFIG_STRING, .default_value = "hello",
    .description = "What the agent says" },
  { .name = "count", .type = AH_CONFIG_INT, .default_value = "3", .min = 1, .max = 10,
    .description = "How many times" },
  { .name = "offset", .type = AH_CONFIG_INT, .default_value = "-7",
    .description = "Any integer" },
  { .name = "ratio", .type = AH_CONFIG_DOUBLE, .default_value = "0.5", .min = 0, .max = 1,
    .description = "A fraction" },
  { .name = "verbose", .type = AH_CONFIG_BOOL, .default_value = "false",
    .description = "Say more" },
  { .name = "limits.max", .type = AH_CONFIG_INT, .default_value = "100", .min = 0, .max = 1000,
    .description = "A nested key" },
  { .name = "words", .type = AH_CONFIG_STRING,
    .description = "A sequence of words" },
  { .name = "tags", .type = AH_CONFIG_STRING, .default_value = "none",
    .description = "A sequence with a default" },
  { .name = "name", .type = AH_CONFIG_STRING, .flags = AH_CONFIG_FLAG_REQUIRED,
    .description = "Who the agent is" },
  AH_CONFIG_KEY_END
};

static gboolean
schema_handle_batch (AhContext *ctx, gpointer state,
                     const AhMessage * const *messages, guint n_messages,
                     GError **error)
{
  for (guint i = 0; i < n_messages; i++)
    {
      gsize size = 0;
      gconstpointer data;
      g_autofree char *key = NULL;
      const char *value;

      if (ah_message_get_kind (messages[i]) != AH_MESSAGE_REQUEST)
        continue;
      /* The payload is not NUL-terminated by contract. */
      data = ah_message_get_data (messages[i], &size);
      key = g_strndup (data, size);
      value = ah_config_get_string (ctx, key, "<unset>");
      ah_reply (ctx, messages[i], value, strlen (value));
    }
  return TRUE;
}

AH_PLUGIN_DEFINE (schema,
  .version       = "1.0.0",
  .description   = "Test plugin declaring a config schema of every type",
  .config_schema = schema_config_keys,
  .handle_batch  = schema_handle_batch)
