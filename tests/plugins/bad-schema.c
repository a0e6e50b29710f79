/* SPDX-License-Identifier: MIT */
/* Broken on purpose: its config schema gives a key a default outside the
 * key's own range, so the loader refuses the plugin. Otherwise valid. */
#include <agenthost/agenthost.h>

static const AhConfigKey bad_schema_config_keys[] = {
  { .name = "count", .type = AH_CONFIG_INT, .default_value = "20", .min = 1, .max = 10,
    .description = "How many times" },
  AH_CONFIG_KEY_END
};

static gboolean
bad_schema_handle_batch (AhContext *ctx, gpointer state,
                         const AhMessage * const *messages, guint n_messages,
                         GError **error)
{
  return TRUE;
}

AH_PLUGIN_DEFINE (bad_schema,
  .version       = "1.0.0",
  .config_schema = bad_schema_config_keys,
  .handle_batch  = bad_schema_handle_batch)
