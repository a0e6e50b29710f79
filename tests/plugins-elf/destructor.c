/* SPDX-License-Identifier: MIT */
/* ELF lint fixture: a destructor, which runs on every unload. */
#include <agenthost/agenthost.h>

static GPtrArray *cached_lines;

/* Not empty: gcc drops an empty destructor altogether. */
__attribute__ ((destructor)) static void
flush_cache (void)
{
  g_clear_pointer (&cached_lines, g_ptr_array_unref);
}

static gboolean
destructor_handle_batch (AhContext *ctx, gpointer state,
                         const AhMessage * const *messages, guint n_messages,
                         GError **error)
{
  return TRUE;
}

AH_PLUGIN_DEFINE (elf_destructor,
  .version      = "1.0.0",
  .handle_batch = destructor_handle_batch)
