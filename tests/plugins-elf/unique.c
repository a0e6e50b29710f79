/* SPDX-License-Identifier: MIT */
/* ELF lint fixture: an STB_GNU_UNIQUE symbol, as g++ makes of a static
 * member of a class template or a static local of an inline function.
 * Made here without C++: the assembler directive retypes a plain
 * variable. It must be exported to stay unique (a version script's
 * "local: *" would demote it), so this is built without one. */
#include <agenthost/agenthost.h>

AH_PLUGIN_EXPORT int unique_counter;
int unique_counter;
__asm__ (".type unique_counter, @gnu_unique_object");

static gboolean
unique_handle_batch (AhContext *ctx, gpointer state,
                     const AhMessage * const *messages, guint n_messages,
                     GError **error)
{
  unique_counter += (int) n_messages;
  return TRUE;
}

AH_PLUGIN_DEFINE (elf_unique,
  .version      = "1.0.0",
  .handle_batch = unique_handle_batch)
