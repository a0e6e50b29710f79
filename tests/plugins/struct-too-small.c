/* SPDX-License-Identifier: MIT */
/* Broken on purpose: claims a descriptor that ends before handle_batch,
 * shorter than any ABI 1.x plugin can be. handle_batch is set, so only
 * the size is wrong. */
#include <agenthost/agenthost.h>

static gboolean
struct_too_small_handle_batch (AhContext *ctx, gpointer state,
                               const AhMessage * const *messages, guint n_messages,
                               GError **error)
{
  return TRUE;
}

AH_PLUGIN_EXPORT const AhPluginDesc *ah_plugin_entry (void);

const AhPluginDesc *
ah_plugin_entry (void)
{
  static const AhPluginDesc desc = {
    .abi_version = AH_PLUGIN_ABI_VERSION,
    .struct_size = G_STRUCT_OFFSET (AhPluginDesc, handle_batch),
    .name = "struct-too-small",
    .version = "1.0.0",
    .handle_batch = struct_too_small_handle_batch,
  };
  return &desc;
}
