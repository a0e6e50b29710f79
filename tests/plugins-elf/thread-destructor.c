/* SPDX-License-Identifier: MIT */
/* ELF lint fixture: a thread-local destructor, registered the way g++
 * does for a C++ thread_local object with a destructor, but from C:
 * through glibc's __cxa_thread_atexit_impl, which no header declares. */
#include <agenthost/agenthost.h>

extern int __cxa_thread_atexit_impl (void (*func) (void *), void *object, void *dso_symbol);
/* crtbeginS.o defines it in every shared object: it tells glibc which
 * object the destructor belongs to. */
extern void *__dso_handle;

static void
forget_thread_buffer (void *buffer)
{
  g_free (buffer);
}

static gboolean
thread_destructor_handle_batch (AhContext *ctx, gpointer state,
                                const AhMessage * const *messages, guint n_messages,
                                GError **error)
{
  return __cxa_thread_atexit_impl (forget_thread_buffer, g_malloc (16), &__dso_handle) == 0;
}

AH_PLUGIN_DEFINE (elf_thread_destructor,
  .version      = "1.0.0",
  .handle_batch = thread_destructor_handle_batch)
