/* SPDX-License-Identifier: MIT */
/* A plugin as an older 1.0 header would have built it: its descriptor
 * ended right after handle_batch, so struct_size says so. It is valid and
 * must load, with every field past its struct reading as unset.
 *
 * The hooks past struct_size are deliberately set here: they stand for
 * whatever bytes happen to follow an old plugin's shorter descriptor in
 * its data section. A host that copied more than struct_size bytes would
 * see them and call code the plugin never offered. */
#include <agenthost/agenthost.h>

static gboolean
old_struct_handle_batch (AhContext *ctx, gpointer state,
                         const AhMessage * const *messages, guint n_messages,
                         GError **error)
{
  return TRUE;
}

static GBytes *
old_struct_state_snapshot (AhContext *ctx, gconstpointer state, GError **error)
{
  return g_bytes_new (NULL, 0);
}

static gboolean
old_struct_state_restore (AhContext *ctx, gpointer state, guint32 format,
                          GBytes *snapshot, GError **error)
{
  return TRUE;
}

AH_PLUGIN_EXPORT const AhPluginDesc *ah_plugin_entry (void);

const AhPluginDesc *
ah_plugin_entry (void)
{
  static const AhPluginDesc desc = {
    .abi_version = AH_PLUGIN_ABI_VERSION,
    .struct_size = G_STRUCT_OFFSET (AhPluginDesc, state_snapshot),
    .name = "old-struct",
    .version = "0.9.0",
    .handle_batch = old_struct_handle_batch,
    /* Past struct_size: must never be seen by the host (see above). */
    .state_snapshot = old_struct_state_snapshot,
    .state_restore = old_struct_state_restore,
  };
  return &desc;
}
