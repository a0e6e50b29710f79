/* SPDX-License-Identifier: MIT */
/* Broken on purpose: calls a function no library defines. Linked without
 * -z defs, which would have caught it at build time; RTLD_NOW must catch
 * it at load time, before any agent runs. */
#include <agenthost/agenthost.h>

/* Defined nowhere. */
extern gboolean ah_test_symbol_nobody_defines (guint n_messages);

static gboolean
undefined_symbol_handle_batch (AhContext *ctx, gpointer state,
                               const AhMessage * const *messages, guint n_messages,
                               GError **error)
{
  return ah_test_symbol_nobody_defines (n_messages);
}

AH_PLUGIN_DEFINE (undefined_symbol,
  .version      = "1.0.0",
  .handle_batch = undefined_symbol_handle_batch)
