/* SPDX-License-Identifier: MIT */
/* A plugin with nothing for the ELF lint to say: no constructor, no
 * thread-local anything, one exported symbol. The nodelete fixture is
 * this same code linked with -z nodelete. */
#include <agenthost/agenthost.h>

static gboolean
clean_handle_batch (AhContext *ctx, gpointer state,
                    const AhMessage * const *messages, guint n_messages,
                    GError **error)
{
  return TRUE;
}

AH_PLUGIN_DEFINE (elf_clean,
  .version      = "1.0.0",
  .description  = "ELF lint fixture: nothing to report",
  .handle_batch = clean_handle_batch)
