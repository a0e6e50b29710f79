/* The supervisor: supervision, autoscaling and the watchdog of one host.
 *
 * The pools do the work on agents; this file decides when, on three
 * threads that each sleep on a condition until there is something to do
 * or a known deadline (never a periodic check):
 *
 * - the supervision thread runs what must not run on a bus worker: the
 *   one_for_all restarts (pausing agents waits out their running
 *   batches, which a worker must never do), stopping a failed agent of a
 *   temporary type or one whose restart failed, stopping a type that
 *   exhausted its restart budget. The decision itself is taken at once,
 *   on the failing agent's worker (ah_supervisor_agent_failed), so a
 *   one_for_one restart happens in place, in microseconds, before the
 *   worker takes another batch.
 *
 * - the scaler grows an autoscaled type when its handlers report deep
 *   mailboxes (the handler path measures; this thread only acts) and
 *   sleeps until the earliest moment an agent could have been idle for
 *   the type's scale_down_idle_ms, then stops those that were.
 *
 * - the watchdog sleeps until the earliest moment a running handler
 *   call of a type with a handler_deadline_ms could overrun, and reports
 *   each overrunning call once: a warning, a count and an event. It does
 *   not (cannot, in C) stop the handler: a call that never returns keeps
 *   its worker, and the agents sharing that worker wait. When no call of
 *   such a type runs, the watchdog is disarmed and sleeps until one
 *   starts.
 *
 * Lock order: the supervisor's lock is a leaf. It is never held while a
 * pool is called: the pools call in here from their handler path.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-supervisor-private.h"

#include <string.h>

#define AH_SUBJECT_POOL_SCALED   "$SYS.pool.scaled"
#define AH_SUBJECT_TYPE_STOPPED  "$SYS.type.stopped"
#define AH_SUBJECT_AGENT_OVERRUN "$SYS.agent.overrun"

typedef enum {
  WORK_STOP_AGENT,       /* temporary, or a restart that failed */
  WORK_RESTART_OTHERS,   /* one_for_all */
  WORK_STOP_TYPE,        /* the restart budget is exhausted */
} WorkKind;

typedef struct {
  WorkKind   kind;
  AhPool    *pool;
  AhAgentId  id;         /* the failed agent */
  char      *reason;     /* WORK_STOP_TYPE: why, for the log and the event */
} Work;

typedef struct {
  AhPool   *pool;
  /* Under the supervisor's lock: the times of the restarts within the
   * type's period, oldest first, in a ring that grows up to
   * max_restarts entries. */
  gint64   *restart_times;
  guint     ring_capacity;
  guint     ring_head;
  guint     ring_length;
  gboolean  stopped;
  gboolean  restart_others_queued;
  /* Atomic. */
  guint64   scaled_up;
  guint64   scaled_down;
  guint64   deadline_overruns;
} SupervisedType;

struct _AhSupervisor {
  SupervisedType *types;
  guint           n_types;
  AhSupervisorTypeStoppedFunc stopped_func;
  gpointer        stopped_data;

  GMutex          lock;
  gboolean        stopping;

  /* Supervision */
  GCond           work_cond;
  GQueue          work;                /* (element-type Work) */
  GThread        *thread;

  /* Autoscale */
  GCond           scale_cond;
  GThread        *scaler;
  gboolean        scaling_stopped;
  gboolean        scale_wake;          /* a grow request, or a type above its min */
  gint64          shrink_at_us;        /* the next idle check; 0: none */

  /* Watchdog */
  GCond           watch_cond;
  GThread        *watchdog;
  gboolean        watch_kicked;        /* a call started that may be due first */
  gint            watch_armed;         /* atomic: the watchdog knows a call runs */
  gint64          watch_next_us;       /* atomic: when it wakes; G_MAXINT64 while it scans */
};

/* Queued work keeps the bus from being idle (ah_bus_hold): a type about
 * to be stopped, or an agent about to be restarted, is still part of the
 * run, and a host that stops when idle must not stop before it is done
 * (a required type's escalation would be lost). */
static void
work_free (Work *work)
{
  ah_bus_release (ah_pool_get_bus (work->pool));
  g_free (work->reason);
  g_free (work);
}

static SupervisedType *
supervisor_find_type (AhSupervisor *self,
                      AhPool       *pool)
{
  for (guint i = 0; i < self->n_types; i++)
    if (self->types[i].pool == pool)
      return &self->types[i];
  g_return_val_if_reached (NULL);
}

/* Must be called with the lock held. */
static void
supervisor_queue_unlocked (AhSupervisor *self,
                           WorkKind      kind,
                           AhPool       *pool,
                           AhAgentId     id,
                           char         *reason)
{
  Work *work;

  if (self->stopping)
    {
      g_free (reason);
      return;
    }
  work = g_new0 (Work, 1);
  work->kind = kind;
  work->pool = pool;
  work->id = id;
  work->reason = reason;
  ah_bus_hold (ah_pool_get_bus (pool));
  g_queue_push_tail (&self->work, work);
  g_cond_signal (&self->work_cond);
}

AhSupervisor *
ah_supervisor_new (AhPool                    **pools,
                   guint                       n_pools,
                   AhSupervisorTypeStoppedFunc stopped_func,
                   gpointer                    user_data)
{
  AhSupervisor *self = g_new0 (AhSupervisor, 1);

  self->types = g_new0 (SupervisedType, n_pools);
  self->n_types = n_pools;
  for (guint i = 0; i < n_pools; i++)
    self->types[i].pool = pools[i];
  self->stopped_func = stopped_func;
  self->stopped_data = user_data;
  g_mutex_init (&self->lock);
  g_cond_init (&self->work_cond);
  g_cond_init (&self->scale_cond);
  g_cond_init (&self->watch_cond);
  g_queue_init (&self->work);
  self->watch_next_us = G_MAXINT64;

  return self;
}

void
ah_supervisor_free (AhSupervisor *self)
{
  if (self == NULL)
    return;

  ah_supervisor_stop (self);
  for (guint i = 0; i < self->n_types; i++)
    g_free (self->types[i].restart_times);
  g_free (self->types);
  g_mutex_clear (&self->lock);
  g_cond_clear (&self->work_cond);
  g_cond_clear (&self->scale_cond);
  g_cond_clear (&self->watch_cond);
  g_free (self);
}

void
ah_supervisor_add_type_stats (AhSupervisor *self,
                              AhPool       *pool,
                              AhTypeStats  *stats)
{
  SupervisedType *type = supervisor_find_type (self, pool);

  if (type == NULL)
    return;
  stats->scaled_up = __atomic_load_n (&type->scaled_up, __ATOMIC_RELAXED);
  stats->scaled_down = __atomic_load_n (&type->scaled_down, __ATOMIC_RELAXED);
  stats->deadline_overruns = __atomic_load_n (&type->deadline_overruns, __ATOMIC_RELAXED);
}

static void
supervisor_publish (AhPool     *pool,
                    const char *subject,
                    const char *text)
{
  /* An event: system priority, not counted when nobody listens. */
  ah_bus_publish_event (ah_pool_get_bus (pool), subject, text, strlen (text));
}

/* ---- supervision ---------------------------------------------------------- */

/* Records a restart at @now_us in @type's sliding window. FALSE, and
 * nothing recorded, when it would be one more than max_restarts within
 * the period: the budget is exhausted. Must be called with the lock held. */
static gboolean
supervised_type_record_restart (SupervisedType            *type,
                                const AhManifestAgentType *manifest_type,
                                gint64                     now_us)
{
  gint64 horizon = now_us - (gint64) manifest_type->restart_period_ms * 1000;

  while (type->ring_length > 0 && type->restart_times[type->ring_head] <= horizon)
    {
      type->ring_head = (type->ring_head + 1) % type->ring_capacity;
      type->ring_length--;
    }
  if (type->ring_length >= manifest_type->max_restarts)
    return FALSE;

  if (type->ring_length == type->ring_capacity)
    {
      /* Grown on demand: a budget of a million costs nothing until used. */
      guint capacity = MIN (MAX (type->ring_capacity * 2, 4), manifest_type->max_restarts);
      gint64 *times = g_new (gint64, capacity);

      for (guint i = 0; i < type->ring_length; i++)
        times[i] = type->restart_times[(type->ring_head + i) % type->ring_capacity];
      g_free (type->restart_times);
      type->restart_times = times;
      type->ring_capacity = capacity;
      type->ring_head = 0;
    }
  type->restart_times[(type->ring_head + type->ring_length) % type->ring_capacity] = now_us;
  type->ring_length++;
  return TRUE;
}

AhSupervisorVerdict
ah_supervisor_agent_failed (AhSupervisor *self,
                            AhPool       *pool,
                            AhAgentId     id,
                            const char   *reason)
{
  const AhManifestAgentType *manifest_type = ah_pool_get_type (pool);
  SupervisedType *type = supervisor_find_type (self, pool);
  AhSupervisorVerdict verdict = AH_SUPERVISOR_RESTART;

  g_return_val_if_fail (type != NULL, AH_SUPERVISOR_RESTART);

  g_mutex_lock (&self->lock);
  if (type->stopped)
    verdict = AH_SUPERVISOR_STOP_TYPE;
  else if (manifest_type->restart_policy == AH_RESTART_TEMPORARY)
    {
      /* Never restarted, so never counted against the budget (OTP's
       * temporary children do not count either). */
      verdict = AH_SUPERVISOR_STOP_AGENT;
      supervisor_queue_unlocked (self, WORK_STOP_AGENT, pool, id, NULL);
    }
  else if (!supervised_type_record_restart (type, manifest_type, g_get_monotonic_time ()))
    {
      verdict = AH_SUPERVISOR_STOP_TYPE;
      type->stopped = TRUE;
      ah_pool_mark_stopped (pool);
      supervisor_queue_unlocked (self, WORK_STOP_TYPE, pool, id,
                                 g_strdup_printf ("more than %u restart%s within %u ms (its budget); "
                                                  "last failure: agent %" G_GUINT64_FORMAT ": %s",
                                                  manifest_type->max_restarts,
                                                  manifest_type->max_restarts == 1 ? "" : "s",
                                                  manifest_type->restart_period_ms, id, reason));
    }
  else if (manifest_type->restart_policy == AH_RESTART_ONE_FOR_ALL && !type->restart_others_queued)
    {
      type->restart_others_queued = TRUE;
      supervisor_queue_unlocked (self, WORK_RESTART_OTHERS, pool, id, NULL);
    }
  g_mutex_unlock (&self->lock);

  return verdict;
}

void
ah_supervisor_stop_agent (AhSupervisor *self,
                          AhPool       *pool,
                          AhAgentId     id)
{
  g_mutex_lock (&self->lock);
  supervisor_queue_unlocked (self, WORK_STOP_AGENT, pool, id, NULL);
  g_mutex_unlock (&self->lock);
}

static void
supervisor_stop_type (AhSupervisor *self,
                      AhPool       *pool,
                      const char   *reason)
{
  const AhManifestAgentType *manifest_type = ah_pool_get_type (pool);
  g_autofree char *text = NULL;

  g_warning ("agent type '%s' stopped: %s%s", manifest_type->name, reason,
             manifest_type->required ? "; it is required, so the run ends" : "");
  ah_pool_terminate_all (pool);
  text = g_strdup_printf ("type=%s required=%s reason=%s", manifest_type->name,
                          manifest_type->required ? "true" : "false", reason);
  supervisor_publish (pool, AH_SUBJECT_TYPE_STOPPED, text);
  if (self->stopped_func != NULL)
    self->stopped_func (pool, reason, self->stopped_data);
}

static gpointer
supervisor_main (gpointer data)
{
  AhSupervisor *self = data;

  g_mutex_lock (&self->lock);
  for (;;)
    {
      Work *work;

      while (!self->stopping && g_queue_is_empty (&self->work))
        g_cond_wait (&self->work_cond, &self->lock);
      if (self->stopping)
        break;
      work = g_queue_pop_head (&self->work);
      if (work->kind == WORK_RESTART_OTHERS)
        supervisor_find_type (self, work->pool)->restart_others_queued = FALSE;
      g_mutex_unlock (&self->lock);

      switch (work->kind)
        {
        case WORK_STOP_AGENT:
          /* Gone already (its type stopped, the host terminated it): fine. */
          ah_pool_terminate (work->pool, work->id, NULL);
          break;
        case WORK_RESTART_OTHERS:
          ah_pool_restart_others (work->pool, work->id);
          break;
        case WORK_STOP_TYPE:
          supervisor_stop_type (self, work->pool, work->reason);
          break;
        default:
          g_assert_not_reached ();
        }
      work_free (work);

      g_mutex_lock (&self->lock);
    }
  g_mutex_unlock (&self->lock);

  return NULL;
}

/* ---- autoscale -------------------------------------------------------------- */

void
ah_supervisor_wake_scaler (AhSupervisor *self)
{
  g_mutex_lock (&self->lock);
  self->scale_wake = TRUE;
  g_cond_signal (&self->scale_cond);
  g_mutex_unlock (&self->lock);
}

void
ah_supervisor_note_above_min (AhSupervisor *self)
{
  g_mutex_lock (&self->lock);
  /* A scaler with an idle check coming will see the new agent then. */
  if (self->scaler != NULL && !self->scaling_stopped && self->shrink_at_us == 0 && !self->scale_wake)
    {
      self->scale_wake = TRUE;
      g_cond_signal (&self->scale_cond);
    }
  g_mutex_unlock (&self->lock);
}

static void
scaler_announce (SupervisedType *type,
                 guint           from,
                 guint           to,
                 const char     *why)
{
  const AhManifestAgentType *manifest_type = ah_pool_get_type (type->pool);
  g_autofree char *text = NULL;

  g_message ("autoscale: agent type '%s' from %u to %u agents: %s", manifest_type->name,
             from, to, why);
  text = g_strdup_printf ("type=%s from=%u to=%u reason=%s", manifest_type->name, from, to,
                          to > from ? "deep" : "idle");
  supervisor_publish (type->pool, AH_SUBJECT_POOL_SCALED, text);
}

static void
scaler_grow (SupervisedType *type,
             gdouble         mean_depth)
{
  const AhManifestAgentType *manifest_type = ah_pool_get_type (type->pool);
  g_autoptr(GError) error = NULL;
  g_autofree AhSpawnResult *results = NULL;
  g_autofree char *why = NULL;
  guint from = ah_pool_get_n_live (type->pool);
  guint room = manifest_type->pool_max > from ? manifest_type->pool_max - from : 0;
  guint step = MIN (manifest_type->scale_step, room);
  guint started;

  if (step == 0)
    return;
  results = g_new0 (AhSpawnResult, step);
  started = ah_pool_spawn_batch (type->pool, step, results, &error);
  if (started == 0)
    {
      const char *reason = error != NULL ? error->message
                                         : results[0].error != NULL ? results[0].error->message : "";

      g_message ("autoscale: agent type '%s' could not grow from %u agents: %s",
                 manifest_type->name, from, reason);
      ah_spawn_results_clear (results, step);
      return;
    }
  ah_spawn_results_clear (results, step);
  __atomic_add_fetch (&type->scaled_up, started, __ATOMIC_RELAXED);
  why = g_strdup_printf ("mean mailbox depth %.1f >= %u for %u ms", mean_depth,
                         manifest_type->scale_up_depth, manifest_type->scale_up_after_ms);
  scaler_announce (type, from, from + started, why);
}

/* One look at every autoscaled type. Returns when the next idle check
 * is due (G_MAXINT64: none). */
static gint64
scaler_pass (AhSupervisor *self)
{
  gint64 next = G_MAXINT64;

  for (guint i = 0; i < self->n_types; i++)
    {
      SupervisedType *type = &self->types[i];
      const AhManifestAgentType *manifest_type = ah_pool_get_type (type->pool);
      gint64 idle_us = (gint64) manifest_type->scale_down_idle_ms * 1000;
      gint64 pool_next, now;
      gdouble mean_depth;
      guint from, n_stopped;

      if (!manifest_type->autoscale || ah_pool_is_stopped (type->pool))
        continue;
      if (ah_pool_take_scale_request (type->pool, &mean_depth))
        scaler_grow (type, mean_depth);

      from = ah_pool_get_n_live (type->pool);
      now = g_get_monotonic_time ();
      n_stopped = ah_pool_shrink (type->pool, now - idle_us, idle_us, &pool_next);
      if (n_stopped > 0)
        {
          g_autofree char *why = g_strdup_printf ("%u agent%s idle for %u ms", n_stopped,
                                                  n_stopped == 1 ? "" : "s",
                                                  manifest_type->scale_down_idle_ms);

          __atomic_add_fetch (&type->scaled_down, n_stopped, __ATOMIC_RELAXED);
          scaler_announce (type, from, from - n_stopped, why);
        }
      next = MIN (next, pool_next);
    }
  return next;
}

static gpointer
scaler_main (gpointer data)
{
  AhSupervisor *self = data;

  g_mutex_lock (&self->lock);
  while (!self->scaling_stopped)
    {
      gint64 next;

      if (!self->scale_wake
          && (self->shrink_at_us == 0 || g_get_monotonic_time () < self->shrink_at_us))
        {
          if (self->shrink_at_us == 0)
            g_cond_wait (&self->scale_cond, &self->lock);
          else
            g_cond_wait_until (&self->scale_cond, &self->lock, self->shrink_at_us);
          continue;
        }
      self->scale_wake = FALSE;
      self->shrink_at_us = 0;
      g_mutex_unlock (&self->lock);

      next = scaler_pass (self);

      g_mutex_lock (&self->lock);
      if (next != G_MAXINT64 && (self->shrink_at_us == 0 || next < self->shrink_at_us))
        self->shrink_at_us = next;
    }
  g_mutex_unlock (&self->lock);

  return NULL;
}

/* ---- the watchdog ------------------------------------------------------------ */

void
ah_supervisor_watch_arm (AhSupervisor *self,
                         gint64        due_us)
{
  /* The common case, a call due after the watchdog's next wake, costs
   * two loads: the watchdog will see this call then. */
  if (__atomic_load_n (&self->watch_armed, __ATOMIC_SEQ_CST)
      && due_us >= __atomic_load_n (&self->watch_next_us, __ATOMIC_RELAXED))
    return;

  g_mutex_lock (&self->lock);
  __atomic_store_n (&self->watch_armed, TRUE, __ATOMIC_SEQ_CST);
  self->watch_kicked = TRUE;
  g_cond_signal (&self->watch_cond);
  g_mutex_unlock (&self->lock);
}

static void
watchdog_report (AhPool   *pool,
                 AhAgentId id,
                 guint     index,
                 gint64    running_us,
                 gpointer  user_data)
{
  AhSupervisor *self = user_data;
  const AhManifestAgentType *manifest_type = ah_pool_get_type (pool);
  SupervisedType *type = supervisor_find_type (self, pool);
  g_autofree char *text = NULL;

  if (type != NULL)
    __atomic_add_fetch (&type->deadline_overruns, 1, __ATOMIC_RELAXED);
  g_warning ("watchdog: %s agent %" G_GUINT64_FORMAT " handler running for %" G_GINT64_FORMAT
             " ms (deadline %u ms)", manifest_type->name, id, running_us / 1000,
             manifest_type->handler_deadline_ms);
  text = g_strdup_printf ("type=%s id=%" G_GUINT64_FORMAT " index=%u running_ms=%" G_GINT64_FORMAT
                          " deadline_ms=%u", manifest_type->name, id, index, running_us / 1000,
                          manifest_type->handler_deadline_ms);
  supervisor_publish (pool, AH_SUBJECT_AGENT_OVERRUN, text);
}

/* Reports what overran; returns the earliest deadline still to come. */
static gint64
watchdog_scan (AhSupervisor *self)
{
  gint64 now = g_get_monotonic_time ();
  gint64 next = G_MAXINT64;

  for (guint i = 0; i < self->n_types; i++)
    if (ah_pool_get_type (self->types[i].pool)->handler_deadline_ms > 0)
      next = MIN (next, ah_pool_watch_scan (self->types[i].pool, now, watchdog_report, self));
  return next;
}

static gpointer
watchdog_main (gpointer data)
{
  AhSupervisor *self = data;

  g_mutex_lock (&self->lock);
  while (!self->stopping)
    {
      gint64 next;

      if (!self->watch_kicked)
        {
          if (!__atomic_load_n (&self->watch_armed, __ATOMIC_SEQ_CST))
            {
              g_cond_wait (&self->watch_cond, &self->lock);
              continue;
            }
          next = __atomic_load_n (&self->watch_next_us, __ATOMIC_RELAXED);
          if (g_get_monotonic_time () < next)
            {
              g_cond_wait_until (&self->watch_cond, &self->lock, next);
              continue;
            }
        }
      self->watch_kicked = FALSE;
      /* While it scans, every call that starts kicks it. */
      __atomic_store_n (&self->watch_next_us, G_MAXINT64, __ATOMIC_RELAXED);
      g_mutex_unlock (&self->lock);

      next = watchdog_scan (self);
      if (next == G_MAXINT64)
        {
          /* Nothing runs: disarm, then look once more. A call starting
           * meanwhile either saw the watchdog disarmed and kicks it, or
           * started before the disarm and is seen by this second look. */
          __atomic_store_n (&self->watch_armed, FALSE, __ATOMIC_SEQ_CST);
          next = watchdog_scan (self);
          if (next != G_MAXINT64)
            __atomic_store_n (&self->watch_armed, TRUE, __ATOMIC_SEQ_CST);
        }

      g_mutex_lock (&self->lock);
      __atomic_store_n (&self->watch_next_us, next, __ATOMIC_RELAXED);
    }
  g_mutex_unlock (&self->lock);

  return NULL;
}

/* ---- threads ---------------------------------------------------------------- */

void
ah_supervisor_start (AhSupervisor *self)
{
  gboolean autoscale = FALSE, deadlines = FALSE;

  g_return_if_fail (self->thread == NULL);

  for (guint i = 0; i < self->n_types; i++)
    {
      const AhManifestAgentType *manifest_type = ah_pool_get_type (self->types[i].pool);

      autoscale |= manifest_type->autoscale;
      deadlines |= manifest_type->handler_deadline_ms > 0;
    }

  /* Under the lock: the pools may already call in (the bus runs). */
  g_mutex_lock (&self->lock);
  self->thread = g_thread_new ("ah-supervisor", supervisor_main, self);
  if (autoscale)
    {
      /* A type that pre-warmed above its min has agents to watch. */
      self->scale_wake = TRUE;
      self->scaler = g_thread_new ("ah-scaler", scaler_main, self);
    }
  if (deadlines)
    self->watchdog = g_thread_new ("ah-watchdog", watchdog_main, self);
  g_mutex_unlock (&self->lock);
}

void
ah_supervisor_stop_scaling (AhSupervisor *self)
{
  GThread *scaler;

  g_mutex_lock (&self->lock);
  self->scaling_stopped = TRUE;
  scaler = g_steal_pointer (&self->scaler);
  g_cond_broadcast (&self->scale_cond);
  g_mutex_unlock (&self->lock);
  if (scaler != NULL)
    g_thread_join (scaler);
}

void
ah_supervisor_stop (AhSupervisor *self)
{
  GThread *thread, *watchdog;

  ah_supervisor_stop_scaling (self);

  g_mutex_lock (&self->lock);
  self->stopping = TRUE;
  thread = g_steal_pointer (&self->thread);
  watchdog = g_steal_pointer (&self->watchdog);
  g_cond_broadcast (&self->work_cond);
  g_cond_broadcast (&self->watch_cond);
  g_mutex_unlock (&self->lock);
  if (thread != NULL)
    g_thread_join (thread);
  if (watchdog != NULL)
    g_thread_join (watchdog);

  g_queue_clear_full (&self->work, (GDestroyNotify) work_free);
}
