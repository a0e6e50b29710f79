/* Offloading blocking work: a bounded pool of I/O threads whose results
 * come back to the agent that asked, as ordinary messages.
 *
 * Threads. A non-exclusive GThreadPool of at most n_threads threads,
 * started on demand, runs the functions. The tasks themselves wait in
 * our own FIFO, not in the GThreadPool's queue: each push hands the
 * thread pool a token, and a thread that gets a token takes the oldest
 * task, if any is left. That way stopping can take back the tasks that
 * never started, run their destroy notify and release their holds, and
 * nothing depends on what GLib does with queued items when a pool is
 * freed.
 *
 * Accounting. Every accepted task holds the bus (ah_bus_hold) from
 * submit until its outcome is sent, or until it is dropped at stop, so
 * the host is not idle while an offload is pending. The hold is released
 * last, after the destroy notify and after the task left the queue
 * count: whoever sees the bus idle sees the offload completely done.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-offload-private.h"
#include "ah-pool-private.h"

#include <pthread.h>
#include <string.h>

#define AH_OFFLOAD_SUBJECT "$SYS.offload"

typedef struct {
  AhAgentId       agent;
  AhPlugin       *code;          /* (owned) the module of func and destroy */
  guint64         id;
  AhOffloadFunc   func;
  gpointer        data;
  GDestroyNotify  destroy;
} AhOffloadTask;

struct _AhOffloadPool {
  AhBus        *bus;
  GThreadPool  *threads;       /* NULL once stopped */
  GCancellable *cancellable;   /* cancelled at stop */
  guint         capacity;

  /* A pthread mutex, as in the bus: ThreadSanitizer sees through it
   * (STYLE.md, section 8), so the hand-off of tasks between threads is
   * checked. */
  pthread_mutex_t lock;
  GQueue        waiting;       /* (element-type AhOffloadTask) under @lock, oldest first */
  guint         n_pending;     /* waiting or running, under @lock */
  gboolean      stopping;      /* under @lock */
};

static void
ah_offload_task_free (AhOffloadTask *task)
{
  if (task->destroy != NULL)
    task->destroy (task->data);
  /* Last: this may close the module destroy lives in (after a reload). */
  g_clear_pointer (&task->code, ah_plugin_unref);
  g_free (task);
}

/* The end of every accepted task, run or not. */
static void
ah_offload_pool_finish (AhOffloadPool *self,
                        AhOffloadTask *task)
{
  ah_offload_task_free (task);

  pthread_mutex_lock (&self->lock);
  self->n_pending--;
  pthread_mutex_unlock (&self->lock);

  ah_bus_release (self->bus);
}

static void
ah_offload_pool_run (AhOffloadPool *self,
                     AhOffloadTask *task)
{
  g_autoptr(GError) error = NULL;
  g_autoptr(GBytes) result = NULL;
  AhMessageKind kind;
  gconstpointer data;
  gsize size;

  result = task->func (task->data, self->cancellable, &error);
  if (result != NULL)
    {
      /* A function that returned a result and also set an error broke
       * its contract; the result wins, as with GTask. */
      kind = AH_MESSAGE_OFFLOAD_DONE;
      data = g_bytes_get_data (result, &size);
    }
  else
    {
      const char *message = error != NULL
                            ? error->message
                            : "the offloaded function returned no result and no error";

      kind = AH_MESSAGE_OFFLOAD_FAILED;
      data = message;
      size = strlen (message);
    }

  /* Refusals (a full mailbox under the fail policy, a stopped bus) are
   * counted and dead-lettered by the bus itself: nobody else is left to
   * tell. The result may point into @data, so it goes before destroy. */
  ah_bus_send_full (self->bus, AH_AGENT_ID_NONE, task->agent, AH_OFFLOAD_SUBJECT,
                    size > 0 ? data : "", size, AH_PRIORITY_NORMAL, kind, task->id, NULL);
  g_clear_pointer (&result, g_bytes_unref);
  ah_offload_pool_finish (self, task);
}

/* GFunc of the thread pool: @token only says that a task was queued. */
static void
ah_offload_pool_thread_func (gpointer token,
                             gpointer user_data)
{
  AhOffloadPool *self = user_data;
  AhOffloadTask *task;

  pthread_mutex_lock (&self->lock);
  task = g_queue_pop_head (&self->waiting);
  pthread_mutex_unlock (&self->lock);

  /* Stop took the task back before any thread got to it. */
  if (task != NULL)
    ah_offload_pool_run (self, task);
}

AhOffloadPool *
ah_offload_pool_new (AhBus *bus,
                     guint  n_threads,
                     guint  queue_capacity)
{
  AhOffloadPool *self;

  g_return_val_if_fail (bus != NULL, NULL);
  g_return_val_if_fail (n_threads > 0, NULL);
  g_return_val_if_fail (queue_capacity > 0, NULL);

  self = g_new0 (AhOffloadPool, 1);
  self->bus = bus;
  self->capacity = queue_capacity;
  self->cancellable = g_cancellable_new ();
  pthread_mutex_init (&self->lock, NULL);
  g_queue_init (&self->waiting);
  /* Non-exclusive: threads start when work comes, and a host that never
   * offloads starts none. Cannot fail when not exclusive. */
  self->threads = g_thread_pool_new (ah_offload_pool_thread_func, self,
                                     (gint) MIN (n_threads, (guint) G_MAXINT), FALSE, NULL);
  return self;
}

guint64
ah_offload_pool_submit (AhOffloadPool  *self,
                        AhAgentId       agent,
                        AhPlugin       *code,
                        AhOffloadFunc   func,
                        gpointer        data,
                        GDestroyNotify  destroy)
{
  AhOffloadTask *task;
  guint64 id;

  g_return_val_if_fail (self != NULL, 0);
  g_return_val_if_fail (func != NULL, 0);

  task = g_new0 (AhOffloadTask, 1);
  task->agent = agent;
  task->code = code != NULL ? ah_plugin_ref (code) : NULL;
  task->id = id = ah_bus_new_correlation (self->bus);
  task->func = func;
  task->data = data;
  task->destroy = destroy;

  /* Queued and handed to the threads under the lock, so a concurrent
   * stop either refuses the task or finds it queued: it never frees the
   * thread pool between the two. */
  pthread_mutex_lock (&self->lock);
  if (self->stopping || self->n_pending >= self->capacity)
    {
      pthread_mutex_unlock (&self->lock);
      ah_offload_task_free (task);
      return 0;
    }
  self->n_pending++;
  /* Held before the task can possibly finish and release it. */
  ah_bus_hold (self->bus);
  g_queue_push_tail (&self->waiting, task);
  /* Fails only when no new thread could be started; the token is queued
   * all the same and a running thread takes it, and if none runs, stop
   * takes the task back. */
  g_thread_pool_push (self->threads, self, NULL);
  pthread_mutex_unlock (&self->lock);

  return id;
}

void
ah_offload_pool_stop (AhOffloadPool *self)
{
  GQueue never_ran = G_QUEUE_INIT;
  GThreadPool *threads;

  g_return_if_fail (self != NULL);

  pthread_mutex_lock (&self->lock);
  if (self->stopping)
    {
      pthread_mutex_unlock (&self->lock);
      return;
    }
  self->stopping = TRUE;
  never_ran = self->waiting;
  g_queue_init (&self->waiting);
  pthread_mutex_unlock (&self->lock);

  /* The running functions give up (if they honour it) and their FAILED
   * results still reach the agents: the bus is still running. */
  g_cancellable_cancel (self->cancellable);
  for (GList *l = never_ran.head; l != NULL; l = l->next)
    ah_offload_pool_finish (self, l->data);
  g_queue_clear (&never_ran);

  /* Immediate: the tokens left in the queue have no task any more.
   * Waits for the functions still running. */
  threads = g_steal_pointer (&self->threads);
  g_thread_pool_free (threads, TRUE, TRUE);
}

void
ah_offload_pool_free (AhOffloadPool *self)
{
  if (self == NULL)
    return;

  ah_offload_pool_stop (self);
  g_object_unref (self->cancellable);
  pthread_mutex_destroy (&self->lock);
  g_free (self);
}

/* ---- The public entry point ------------------------------------------ */

/* Only from handle_batch: in agent_init the agent has no id yet for the
 * result to come back to, and after agent_finalize it has none any more. */
guint64
ah_offload (AhContext      *ctx,
            AhOffloadFunc   func,
            gpointer        data,
            GDestroyNotify  destroy)
{
  AhOffloadPool *pool;

  g_return_val_if_fail (ctx != NULL, 0);
  g_return_val_if_fail (func != NULL, 0);

  pool = ah_pool_get_offload_pool (ctx->agent->pool);
  if (ctx->call == NULL || pool == NULL)
    {
      if (ctx->call == NULL)
        g_critical ("%s: called outside handle_batch", G_STRFUNC);
      if (destroy != NULL)
        destroy (data);
      return 0;
    }

  return ah_offload_pool_submit (pool, ctx->agent->id, ah_pool_get_plugin (ctx->agent->pool),
                                 func, data, destroy);
}
