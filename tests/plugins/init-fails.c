/* SPDX-License-Identifier: MIT */
/* A valid plugin whose agents refuse to start: the pool tests check that
 * the failure reaches the caller as "init failed: refusing to start
 * (test)" and that nothing of the pool is left running. */
#include <agenthost/agenthost.h>

static gboolean
init_fails_agent_init (AhContext *ctx, gpointer state, GError **error)
{
  g_set_error_literal (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                       "refusing to start (test)");
  return FALSE;
}

static gboolean
init_fails_handle_batch (AhContext *ctx, gpointer state,
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
    .name = "init-fails",
    .version = "1.0.0",
    .description = "Test plugin whose agents refuse to start",
    .agent_init = init_fails_agent_init,
    .handle_batch = init_fails_handle_batch,
  };
  return &desc;
}
