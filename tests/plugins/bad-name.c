/* SPDX-License-Identifier: MIT */
/* Broken on purpose: a name with a path separator and a space in it,
 * which would end up in log lines, file names and subjects. */
#include <agenthost/agenthost.h>

static gboolean
bad_name_handle_batch (AhContext *ctx, gpointer state,
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
    .struct_size = sizeof (AhPluginDesc),
    .name = "../bad name",
    .version = "1.0.0",
    .handle_batch = bad_name_handle_batch,
  };
  return &desc;
}
