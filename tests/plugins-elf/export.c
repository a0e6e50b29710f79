/* SPDX-License-Identifier: MIT */
/* ELF lint fixture: a second exported function, which another object
 * could bind to. Built without the plugin version script, which would
 * have hidden it. */
#include <agenthost/agenthost.h>

AH_PLUGIN_EXPORT int helper (int value);

int
helper (int value)
{
  return value * 2;
}

static gboolean
export_handle_batch (AhContext *ctx, gpointer state,
                     const AhMessage * const *messages, guint n_messages,
                     GError **error)
{
  return helper ((int) n_messages) >= 0;
}

AH_PLUGIN_DEFINE (elf_export,
  .version      = "1.0.0",
  .handle_batch = export_handle_batch)
