/* SPDX-License-Identifier: MIT */
/* ELF lint fixture: a thread-local variable (the general-dynamic model
 * gcc uses in shared objects), kept by every thread that touched it. */
#include <agenthost/agenthost.h>

static __thread guint64 batches_on_this_thread;

static gboolean
tls_handle_batch (AhContext *ctx, gpointer state,
                  const AhMessage * const *messages, guint n_messages,
                  GError **error)
{
  batches_on_this_thread++;
  return TRUE;
}

AH_PLUGIN_DEFINE (elf_tls,
  .version      = "1.0.0",
  .handle_batch = tls_handle_batch)
