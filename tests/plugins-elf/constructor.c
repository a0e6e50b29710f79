/* SPDX-License-Identifier: MIT */
/* ELF lint fixture: a constructor, which runs again on every load. */
#include <agenthost/agenthost.h>

static gint64 cache_filled_at;

/* Not empty: gcc drops an empty constructor altogether. */
__attribute__ ((constructor)) static void
init_cache (void)
{
  cache_filled_at = g_get_monotonic_time ();
}

static gboolean
constructor_handle_batch (AhContext *ctx, gpointer state,
                          const AhMessage * const *messages, guint n_messages,
                          GError **error)
{
  return cache_filled_at != 0;
}

AH_PLUGIN_DEFINE (elf_constructor,
  .version      = "1.0.0",
  .handle_batch = constructor_handle_batch)
