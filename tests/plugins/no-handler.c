/* SPDX-License-Identifier: MIT */
/* Broken on purpose: every optional hook but no handle_batch, the one
 * hook an agent cannot do without. */
#include <agenthost/agenthost.h>

static gboolean
no_handler_agent_init (AhContext *ctx, gpointer state, GError **error)
{
  return TRUE;
}

AH_PLUGIN_DEFINE (no_handler,
  .version    = "1.0.0",
  .agent_init = no_handler_agent_init)
