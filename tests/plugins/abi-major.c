/* SPDX-License-Identifier: MIT */
/* Broken on purpose: built for plugin ABI 2.0, a major this host does not
 * speak. Otherwise valid, so the ABI is the only reason to refuse it. The
 * descriptor is written by hand because AH_PLUGIN_DEFINE always stamps
 * the current ABI (and overriding it trips -Woverride-init). */
#include <agenthost/agenthost.h>

static gboolean
abi_major_handle_batch (AhContext *ctx, gpointer state,
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
    .abi_version = (2u << 16) | 0u,
    .struct_size = sizeof (AhPluginDesc),
    .name = "abi-major",
    .version = "1.0.0",
    .handle_batch = abi_major_handle_batch,
  };
  return &desc;
}
