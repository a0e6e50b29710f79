/* SPDX-License-Identifier: MIT */
/* Broken on purpose: built for plugin ABI 1.99. The major matches, but a
 * newer minor may rely on fields this host does not know, so the host
 * refuses it. Otherwise valid. */
#include <agenthost/agenthost.h>

static gboolean
abi_minor_newer_handle_batch (AhContext *ctx, gpointer state,
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
    .abi_version = ((guint32) AH_PLUGIN_ABI_MAJOR << 16) | 99u,
    .struct_size = sizeof (AhPluginDesc),
    .name = "abi-minor-newer",
    .version = "1.0.0",
    .handle_batch = abi_minor_newer_handle_batch,
  };
  return &desc;
}
