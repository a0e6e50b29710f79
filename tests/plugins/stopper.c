/* SPDX-License-Identifier: MIT */
/* A plugin that ends the run: on any message it asks the host to stop
 * with the exit code of its config key `exit_code` (default 0), so the
 * tests can check that an agent's stop request and its code reach the
 * end of ah_host_run() and the command's exit status. */
#include <agenthost/agenthost.h>

static gboolean
stopper_handle_batch (AhContext *ctx, gpointer state,
                      const AhMessage * const *messages, guint n_messages,
                      GError **error)
{
  ah_context_request_stop (ctx, (int) ah_config_get_int (ctx, "exit_code", 0));
  return TRUE;
}

AH_PLUGIN_DEFINE (stopper,
  .version      = "1.0.0",
  .description  = "Test plugin asking the host to stop with a configured exit code",
  .handle_batch = stopper_handle_batch)
