/* SPDX-License-Identifier: MIT */
/* ELF lint fixture: initial-exec thread-local storage, which makes the
 * linker mark the object DF_STATIC_TLS. */
#include <agenthost/agenthost.h>

static __thread guint64 batches_on_this_thread __attribute__ ((tls_model ("initial-exec")));

static gboolean
static_tls_handle_batch (AhContext *ctx, gpointer state,
                         const AhMessage * const *messages, guint n_messages,
                         GError **error)
{
  batches_on_this_thread++;
  return TRUE;
}

AH_PLUGIN_DEFINE (elf_static_tls,
  .version      = "1.0.0",
  .handle_batch = static_tls_handle_batch)
