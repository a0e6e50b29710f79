/* SPDX-License-Identifier: MIT */
/* Broken on purpose: a well-formed descriptor behind the wrong symbol
 * name (GStreamer's per-plugin naming scheme, an easy mistake to make).
 * Built without the plugin version script so that this other symbol is
 * what it exports. */
#include <agenthost/agenthost.h>

static gboolean
no_entry_handle_batch (AhContext *ctx, gpointer state,
                       const AhMessage * const *messages, guint n_messages,
                       GError **error)
{
  return TRUE;
}

AH_PLUGIN_EXPORT const AhPluginDesc *ah_plugin_no_entry_get_desc (void);

const AhPluginDesc *
ah_plugin_no_entry_get_desc (void)
{
  static const AhPluginDesc desc = {
    .abi_version = AH_PLUGIN_ABI_VERSION,
    .struct_size = sizeof (AhPluginDesc),
    .name = "no-entry",
    .version = "1.0.0",
    .handle_batch = no_entry_handle_batch,
  };
  return &desc;
}
