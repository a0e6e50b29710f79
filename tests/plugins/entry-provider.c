/* SPDX-License-Identifier: MIT */
/* Not a test case of its own: the library entry-in-dependency links. It
 * defines the entry point that plugin lacks, so a dlsym() on that plugin's
 * handle, which also searches its dependencies, would find this one. */
#include <agenthost/agenthost.h>

static gboolean
entry_provider_handle_batch (AhContext *ctx, gpointer state,
                             const AhMessage * const *messages, guint n_messages,
                             GError **error)
{
  return TRUE;
}

AH_PLUGIN_DEFINE (entry_provider,
  .version      = "1.0.0",
  .handle_batch = entry_provider_handle_batch)
