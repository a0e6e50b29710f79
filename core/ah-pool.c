/* Pools: the agents of one agent type.
 *
 * Memory: the first pool_size slots and their plugin state are one
 * allocation made when the pool is created and touched at start (by the
 * pre-warm inits, or zeroed when the type does not pre-warm); it is never
 * given back before the pool is freed. Slots past that (spawned beyond
 * the initial size) are allocated one by one. A terminated agent's slot
 * is zeroed and kept on the idle list, and the next spawn takes the most
 * recently freed one, whose memory is still warm in cache; beyond the
 * type's idle cap, a slot that is not part of the initial block is freed
 * instead, and its index is reused by the next new slot.
 *
 * Threads: agent_init runs on the pre-warm threads, on the spawning
 * thread (a batch: on a temporary thread pool), or on the agent's worker
 * when it restarts after a failure; handle_batch on the agent's bus
 * worker; agent_finalize on the terminating thread once the endpoint is
 * closed. The pool's lock guards slot bookkeeping only; it is never held
 * while plugin code runs. The handler path takes no lock: what it counts
 * goes to a block per bus worker that only that worker writes, summed
 * when read.
 *
 * Supervision: the handler path restarts a failed agent in place (same
 * slot, id and mailbox) and hands its messages back to the bus for a
 * retry; what reaches beyond that agent is the supervisor's
 * (core/ah-supervisor.c), which calls back into the functions of the
 * "supervisor" section below.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-pool-private.h"
#include "ah-clock-private.h"
#include "ah-config-private.h"
#include "ah-supervisor-private.h"

#include <string.h>

/* Pools up to this size are pre-warmed as one chunk; larger ones are cut
 * so that several threads share them. Batch spawns use the same rule. */
#define AH_PREWARM_MIN_CHUNK 64
#define AH_PREWARM_MAX_THREADS 64

/* Handler and restart durations: values below 8 ns get a bucket each;
 * above, each power of two is split in 8, so a bucket's middle is within
 * 1/16 of any value in it. 2^36 ns (about 69 s) and beyond share the
 * last bucket. 272 buckets: 2 KiB per worker and type. */
#define AH_HIST_SUB_BITS  3
#define AH_HIST_MAX_BITS  36
#define AH_HIST_N_BUCKETS ((AH_HIST_MAX_BITS - AH_HIST_SUB_BITS + 1) << AH_HIST_SUB_BITS)

/* What one bus worker counts for one pool. Only that worker writes it
 * (relaxed atomic stores, no read-modify-write), so no two threads share
 * a written cache line; readers sum the workers' blocks. */
typedef struct {
  guint64   handled;           /* messages handed to handle_batch */
  guint64   delivered;         /* messages of calls that returned TRUE */
  guint64   batch_failures;    /* calls that returned FALSE */
  guint64   retried;           /* messages of failed calls given to ah_bus_call_retry */
  guint64   failed_messages;   /* messages of failed calls left to be dead-lettered */
  /* The call running now, for the watchdog: a seqlock (odd while the
   * worker writes), so the watchdog reads values, never a slot that a
   * terminate may be freeing. */
  guint64   watch_seq;
  gint64    watch_start_us;    /* 0: no call of a type with a deadline runs */
  AhAgentId watch_id;
  guint     watch_index;
  /* The watchdog's own: the seq of the last call it reported. */
  guint64   watch_reported_seq;
  guint64   handler_ns[AH_HIST_N_BUCKETS];
} __attribute__ ((aligned (64))) PoolWorker;

/* Values of AhAgent.doomed. */
enum {
  AGENT_DOOM_NONE = 0,
  AGENT_DOOM_STOP,            /* initialised; stopped by the supervisor (temporary) */
  AGENT_DOOM_UNINITIALISED,   /* its restart's init failed: no finalize */
};

/* The lifecycle events a pool announces. */
typedef enum {
  AH_SUBJECT_AGENT_SPAWNED,
  AH_SUBJECT_AGENT_STOPPED,
  AH_SUBJECT_AGENT_FAILED,
  AH_SUBJECT_AGENT_RESTARTED,
  AH_POOL_N_EVENTS
} PoolEvent;

static const char * const pool_event_subjects[AH_POOL_N_EVENTS] = {
  "$SYS.agent.spawned",
  "$SYS.agent.stopped",
  "$SYS.agent.failed",
  "$SYS.agent.restarted",
};

struct _AhPool {
  const AhSubject           *events[AH_POOL_N_EVENTS];  /* interned: checked before formatting */
  AhBus                     *bus;
  const AhManifestAgentType *type;         /* borrowed from the host's manifest */
  AhPlugin                  *plugin;       /* (owned) */
  const AhPluginDesc        *desc;
  AhPoolStopFunc             stop_func;
  gpointer                   stop_data;
  AhSupervisor              *supervisor;   /* the host's; may be NULL */
  AhBusGroup                *queue_group;      /* NULL until a queue subscription */
  AhBusGroup                *broadcast_group;  /* NULL until a broadcast one */
  GHashTable                *config;       /* key -> value, see ah_config_table_new() */
  AhOffloadPool             *offload;      /* the host's; may be NULL */
  gsize                      state_stride;
  guint                      n_workers;
  PoolWorker                *workers;      /* n_workers of them */

  GMutex                     lifecycle_lock;   /* see ah_pool_lock_lifecycle() */
  GMutex                     lock;
  AhAgent                   *block;        /* the initial pool_size slots */
  guint8                    *state_block;  /* their states, state_stride apart */
  /* Slots past the initial block, index pool_size + i; NULL: freed. */
  GPtrArray                 *extra;        /* (element-type AhAgent) */
  GArray                    *idle;         /* (element-type guint) idle slot indices, LIFO */
  GArray                    *holes;        /* (element-type guint) indices of freed slots */
  guint                      n_active;     /* STARTING or READY: what pool_max bounds */
  guint64                    spawned;
  guint64                    terminated;
  guint64                    init_failures;
  gint64                     prewarm_start_us;
  gint64                     prewarm_end_us;

  /* Atomic: counted wherever they happen. */
  guint                      n_live;       /* READY */
  gint                       stopped;
  guint64                    failed;       /* agent failures: init or handler */
  guint64                    restarted;
  guint64                    restart_ns[AH_HIST_N_BUCKETS];

  /* Autoscale, atomic: the sum of the depths the agents last saw, since
   * when the mean has been deep (0: it is not), and a pending request. */
  gint64                     total_depth;
  gint64                     deep_since_us;
  gint                       scale_requested;
};

static gboolean pool_agent_handle (AhBusCall *call, const AhMessage * const *messages,
                                   guint n_messages, gpointer user_data, GError **error);

/* ---- small helpers --------------------------------------------------------- */

/* The host's stamping clock (ah-clock.c): CLOCK_MONOTONIC, the clock of
 * g_get_monotonic_time(), to within a microsecond or so, at less than
 * half the cost of a clock_gettime() where it reads the TSC. A spawn
 * read the clock once, and that read was a quarter of its time. */
static inline gint64
pool_now_ns (void)
{
  return ah__clock_ns ();
}

static inline gint64
pool_now_us (void)
{
  return ah__clock_ns () / 1000;
}

/* A counter only the calling thread writes: no locked instruction. */
static inline void
worker_add (guint64 *counter,
            guint64  value)
{
  __atomic_store_n (counter, __atomic_load_n (counter, __ATOMIC_RELAXED) + value, __ATOMIC_RELAXED);
}

static inline guint
hist_bucket (guint64 ns)
{
  guint msb;

  if (ns < (1u << AH_HIST_SUB_BITS))
    return (guint) ns;
  msb = 63 - (guint) __builtin_clzll (ns);
  if (msb >= AH_HIST_MAX_BITS)
    return AH_HIST_N_BUCKETS - 1;
  return ((msb - AH_HIST_SUB_BITS + 1) << AH_HIST_SUB_BITS)
         | (guint) ((ns >> (msb - AH_HIST_SUB_BITS)) & ((1u << AH_HIST_SUB_BITS) - 1));
}

/* The middle of @bucket, in microseconds. */
static gdouble
hist_bucket_us (guint bucket)
{
  guint group = bucket >> AH_HIST_SUB_BITS;
  guint sub = bucket & ((1u << AH_HIST_SUB_BITS) - 1);
  guint shift;
  gdouble low, width;

  if (group == 0)
    return (bucket + 0.5) / 1000.0;
  shift = group - 1;
  low = (gdouble) (((guint64) (1u << AH_HIST_SUB_BITS) + sub) << shift);
  width = (gdouble) ((guint64) 1 << shift);
  return (low + width / 2) / 1000.0;
}

/* The value under which a fraction @q of the counted values lie; 0 when
 * nothing was counted. */
static gdouble
hist_percentile_us (const guint64 *counts,
                    gdouble        q)
{
  guint64 total = 0, rank, seen = 0;

  for (guint i = 0; i < AH_HIST_N_BUCKETS; i++)
    total += counts[i];
  if (total == 0)
    return 0;
  rank = (guint64) (q * total + 0.999999);
  rank = CLAMP (rank, 1, total);
  for (guint i = 0; i < AH_HIST_N_BUCKETS; i++)
    {
      seen += counts[i];
      if (seen >= rank)
        return hist_bucket_us (i);
    }
  return hist_bucket_us (AH_HIST_N_BUCKETS - 1);
}

static gboolean
pool_slot_in_block (AhPool  *self,
                    AhAgent *agent)
{
  return agent >= self->block && agent < self->block + self->type->pool_size;
}

/* The initial block's slots are addressed directly, so a pre-warmed
 * agent costs no pointer in a table. NULL: a slot freed past the idle
 * cap. Lock held (or the slot is the caller's). */
static inline AhAgent *
pool_slot_at (AhPool *self,
              guint   index)
{
  if (index < self->type->pool_size)
    return &self->block[index];
  return g_ptr_array_index (self->extra, index - self->type->pool_size);
}

static inline guint
pool_n_slots (AhPool *self)
{
  return self->type->pool_size + self->extra->len;
}

/* Whether @agent's state is its own allocation rather than a slice of
 * the initial block's states. */
static gboolean
pool_agent_owns_state (AhAgent *agent)
{
  AhPool *self = agent->pool;
  const guint8 *state = agent->state_mem;

  return state != NULL
         && (self->state_block == NULL || state < self->state_block
             || state >= self->state_block + (gsize) self->type->pool_size * self->state_stride);
}

/* ---- finding live agents -------------------------------------------------------- */

static gpointer
pool_agent_if_in_pool (gpointer user_data,
                       gpointer data)
{
  AhAgent *agent = user_data;

  return agent->pool == data ? agent : NULL;
}

/* The live (READY) agent @id of this pool, or NULL. The bus's id table
 * is the index: every live agent has an endpoint registered under its
 * id, whose user data is its slot. (A table of the pool's own cost a
 * cache miss per agent going live: a third of a large pre-warm.) Lock
 * held: a slot found this way cannot be freed before the lock is let go,
 * as only pool_agent_release frees one, and it takes the lock first;
 * its pool is read while the bus keeps the endpoint registered, so
 * another pool's slot is never read after it is freed. */
static AhAgent *
pool_find_live_locked (AhPool    *self,
                       AhAgentId  id)
{
  AhAgent *agent;

  if (id == AH_AGENT_ID_NONE)
    return NULL;
  agent = ah_bus_endpoint_select (self->bus, id, pool_agent_handle, pool_agent_if_in_pool, self);
  if (agent == NULL || agent->id != id || agent->state != AH_SLOT_READY)
    return NULL;
  return agent;
}

/* ---- accessors -------------------------------------------------------------- */

const char *
ah_pool_get_name (AhPool *self)
{
  return self->type->name;
}

const AhManifestAgentType *
ah_pool_get_type (AhPool *self)
{
  return self->type;
}

const AhPluginDesc *
ah_pool_get_desc (AhPool *self)
{
  return self->desc;
}

AhBus *
ah_pool_get_bus (AhPool *self)
{
  return self->bus;
}

const char *
ah_pool_lookup_config (AhPool     *self,
                       const char *key)
{
  return g_hash_table_lookup (self->config, key);
}

void
ah_pool_set_offload_pool (AhPool        *self,
                          AhOffloadPool *offload)
{
  self->offload = offload;
}

AhOffloadPool *
ah_pool_get_offload_pool (AhPool *self)
{
  return self->offload;
}

void
ah_pool_set_supervisor (AhPool       *self,
                        AhSupervisor *supervisor)
{
  self->supervisor = supervisor;
}

void
ah_pool_request_stop (AhPool *self,
                      int     exit_code)
{
  if (self->stop_func != NULL)
    self->stop_func (exit_code, self->stop_data);
}

guint
ah_pool_get_n_live (AhPool *self)
{
  return __atomic_load_n (&self->n_live, __ATOMIC_RELAXED);
}

void
ah_pool_mark_stopped (AhPool *self)
{
  __atomic_store_n (&self->stopped, TRUE, __ATOMIC_RELEASE);
}

gboolean
ah_pool_is_stopped (AhPool *self)
{
  return __atomic_load_n (&self->stopped, __ATOMIC_ACQUIRE);
}

/* Writes @value in decimal at @out; returns the digits written. */
static gsize
format_uint (char    *out,
             guint64  value)
{
  char digits[20];
  gsize n = 0;

  do
    {
      digits[n++] = (char) ('0' + value % 10);
      value /= 10;
    }
  while (value != 0);
  for (gsize i = 0; i < n; i++)
    out[i] = digits[n - 1 - i];
  return n;
}

/* Lifecycle events, for whoever watches the system like any traffic:
 * "$SYS.agent.spawned", "$SYS.agent.stopped", "$SYS.agent.failed",
 * "$SYS.agent.restarted", with "type=T id=N index=I[ reason=R]". Not
 * counted when nobody subscribes (ah_bus_publish_event). Formatted by
 * hand: printf cost more than the rest of a spawn. Returns whether
 * someone got it. */
static gboolean
pool_publish_event (AhPool     *self,
                    PoolEvent   event,
                    AhAgentId   id,
                    guint       index,
                    const char *reason)
{
  /* Type names are at most 64 bytes: the rest fits whatever the numbers. */
  char text[160];
  g_autofree char *with_reason = NULL;
  const char *subject = pool_event_subjects[event];
  gsize length = 0, name_length;

  /* Nobody subscribed: not even formatted (a lock-free check). */
  if (self->events[event] != NULL && !ah_bus_subject_is_subscribed (self->bus, self->events[event]))
    return FALSE;
  name_length = strlen (self->type->name);

  if (G_UNLIKELY (name_length > 64))
    name_length = 64;
  memcpy (text, "type=", 5);
  length += 5;
  memcpy (text + length, self->type->name, name_length);
  length += name_length;
  memcpy (text + length, " id=", 4);
  length += 4;
  length += format_uint (text + length, id);
  memcpy (text + length, " index=", 7);
  length += 7;
  length += format_uint (text + length, index);
  if (reason == NULL)
    return ah_bus_publish_event (self->bus, subject, text, length);

  with_reason = g_strdup_printf ("%.*s reason=%s", (int) length, text, reason);
  return ah_bus_publish_event (self->bus, subject, with_reason, strlen (with_reason));
}


static AhBusGroup *
pool_get_group (AhPool     *self,
                AhDelivery  delivery)
{
  AhBusGroup **group = delivery == AH_DELIVERY_QUEUE ? &self->queue_group
                                                     : &self->broadcast_group;

  if (*group == NULL)
    *group = ah_bus_group_new (self->bus, self->type->name, delivery);

  return *group;
}

/* ---- creation ------------------------------------------------------------------ */

AhPool *
ah_pool_new (AhBus                     *bus,
             const AhManifestAgentType *type,
             AhPlugin                  *plugin,
             AhPoolStopFunc             stop_func,
             gpointer                   stop_data,
             GError                   **error)
{
  AhPool *self;

  g_return_val_if_fail (bus != NULL, NULL);
  g_return_val_if_fail (type != NULL && type->pool_size > 0, NULL);
  g_return_val_if_fail (plugin != NULL, NULL);

  self = g_new0 (AhPool, 1);
  self->bus = bus;
  for (guint i = 0; i < AH_POOL_N_EVENTS; i++)
    self->events[i] = ah_bus_intern_subject (bus, pool_event_subjects[i], NULL);
  self->type = type;
  self->plugin = ah_plugin_ref (plugin);
  self->desc = ah_plugin_get_desc (plugin);
  self->stop_func = stop_func;
  self->stop_data = stop_data;
  g_mutex_init (&self->lock);
  g_mutex_init (&self->lifecycle_lock);

  self->config = ah_config_table_new (type, self->desc);
  self->n_workers = MAX (ah_bus_get_config (bus)->n_workers, 1);
  self->workers = g_aligned_alloc0 (self->n_workers, sizeof (PoolWorker), 64);

  /* The states are not touched here: pre-warm writes each one from the
   * thread that initialises it (or zeroes it, for a type that does not
   * pre-warm), all pools and chunks at once. */
  self->state_stride = (self->desc->state_size + AH_STATE_ALIGN - 1) & ~(gsize) (AH_STATE_ALIGN - 1);
  self->block = g_new0 (AhAgent, type->pool_size);
  if (self->state_stride > 0)
    self->state_block = g_aligned_alloc0 (type->pool_size, self->state_stride, AH_STATE_ALIGN);
  self->extra = g_ptr_array_new ();
  /* A pre-warmed pool hands its block out at start: no idle list yet. */
  self->idle = g_array_sized_new (FALSE, FALSE, sizeof (guint), type->prewarm ? 0 : type->pool_size);
  self->holes = g_array_new (FALSE, FALSE, sizeof (guint));

  /* Idle list in reverse so that spawns take slots 0, 1, 2... in order. */
  for (guint i = 0; i < type->pool_size; i++)
    {
      AhAgent *agent = &self->block[i];

      agent->pool = self;
      agent->index = i;
      agent->state_mem = self->state_block != NULL ? self->state_block + (gsize) i * self->state_stride : NULL;
    }
  for (guint i = type->pool_size; i > 0 && !type->prewarm; i--)
    {
      guint index = i - 1;
      g_array_append_val (self->idle, index);
    }

  for (guint i = 0; i < type->subscriptions->len; i++)
    {
      const AhManifestSubscription *sub = g_ptr_array_index (type->subscriptions, i);
      g_autoptr(GError) local_error = NULL;

      if (ah_bus_subscribe (bus, sub->pattern, pool_get_group (self, sub->delivery),
                            &local_error) == 0)
        {
          g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT,
                       "agent type '%s': cannot subscribe to '%s': %s",
                       type->name, sub->pattern, local_error->message);
          ah_pool_free (self);
          return NULL;
        }
    }

  return self;
}

static void
pool_slot_free (AhAgent *agent)
{
  if (pool_agent_owns_state (agent))
    g_aligned_free (agent->state_mem);
  g_free (agent);
}

void
ah_pool_free (AhPool *self)
{
  if (self == NULL)
    return;

  for (guint i = 0; i < self->type->pool_size; i++)
    if (pool_agent_owns_state (&self->block[i]))
      g_aligned_free (self->block[i].state_mem);
  for (guint i = 0; i < self->extra->len; i++)
    if (g_ptr_array_index (self->extra, i) != NULL)
      pool_slot_free (g_ptr_array_index (self->extra, i));
  g_ptr_array_unref (self->extra);
  g_array_unref (self->idle);
  g_array_unref (self->holes);
  g_hash_table_unref (self->config);
  g_aligned_free (self->state_block);
  g_aligned_free (self->workers);
  g_free (self->block);
  g_mutex_clear (&self->lock);
  g_mutex_clear (&self->lifecycle_lock);
  ah_plugin_unref (self->plugin);
  g_free (self);
}

/* ---- slots ------------------------------------------------------------------------ */

static gsize
pool_agent_state_capacity (AhPool  *self,
                           AhAgent *agent)
{
  return pool_agent_owns_state (agent) ? agent->state_capacity : self->state_stride;
}

void
ah_pool_agent_set_state (AhAgent *agent,
                         gpointer state_mem,
                         gsize    capacity)
{
  if (pool_agent_owns_state (agent))
    g_aligned_free (agent->state_mem);
  agent->state_mem = state_mem;
  agent->state_capacity = (guint32) capacity;
}

/* A new slot gets a state buffer, and one whose state was sized for an
 * earlier version of the plugin a bigger one. */
static void
pool_agent_fit_state (AhPool  *self,
                      AhAgent *agent)
{
  gsize size = self->desc->state_size;

  if (agent->state_mem == NULL ? size > 0 : pool_agent_state_capacity (self, agent) < size)
    ah_pool_agent_set_state (agent, size > 0 ? g_aligned_alloc0 (1, size, AH_STATE_ALIGN) : NULL,
                             size);
}

/* Takes up to @n slots for agents about to start - idle ones first, most
 * recently freed first, then new ones - marks them STARTING and returns
 * how many, or 0 with @error: the type is stopped, or at its pool max. */
static guint
pool_reserve_slots (AhPool   *self,
                    guint     n,
                    AhAgent **ret_agents,
                    GError  **error)
{
  guint available, taken = 0;

  g_mutex_lock (&self->lock);
  if (ah_pool_is_stopped (self))
    {
      g_mutex_unlock (&self->lock);
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_TYPE_STOPPED,
                   "agent type '%s' was stopped: it exhausted its restart budget",
                   self->type->name);
      return 0;
    }
  available = self->type->pool_max > self->n_active ? self->type->pool_max - self->n_active : 0;
  if (available == 0)
    {
      g_mutex_unlock (&self->lock);
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_POOL_LIMIT,
                   "agent type '%s' is at its pool max of %u agents",
                   self->type->name, self->type->pool_max);
      return 0;
    }

  for (; taken < n && taken < available; taken++)
    {
      AhAgent *agent;

      if (self->idle->len > 0)
        {
          guint index = g_array_index (self->idle, guint, self->idle->len - 1);

          g_array_set_size (self->idle, self->idle->len - 1);
          agent = pool_slot_at (self, index);
        }
      else
        {
          agent = g_new0 (AhAgent, 1);
          agent->pool = self;
          if (self->holes->len > 0)
            {
              agent->index = g_array_index (self->holes, guint, self->holes->len - 1);
              g_array_set_size (self->holes, self->holes->len - 1);
              g_ptr_array_index (self->extra, agent->index - self->type->pool_size) = agent;
            }
          else
            {
              agent->index = pool_n_slots (self);
              g_ptr_array_add (self->extra, agent);
            }
        }
      agent->state = AH_SLOT_STARTING;
      agent->id = AH_AGENT_ID_NONE;
      ret_agents[taken] = agent;
    }
  self->n_active += taken;
  g_mutex_unlock (&self->lock);

  return taken;
}

/* Puts a slot back on the idle list with its state zeroed, or frees it
 * when the idle list is at the type's cap (never a slot of the initial
 * block, which stays for the pool's life). @was_active: it still counts
 * towards the pool max. */
static void
pool_agent_release (AhPool   *self,
                    AhAgent  *agent,
                    gboolean  was_active)
{
  gboolean drop;

  if (agent->state_mem != NULL)
    memset (agent->state_mem, 0, MIN (self->desc->state_size, pool_agent_state_capacity (self, agent)));

  g_mutex_lock (&self->lock);
  agent->endpoint = NULL;
  agent->state = AH_SLOT_IDLE;
  if (was_active)
    self->n_active--;
  drop = !pool_slot_in_block (self, agent) && self->idle->len >= self->type->idle_cap;
  if (drop)
    {
      g_ptr_array_index (self->extra, agent->index - self->type->pool_size) = NULL;
      g_array_append_val (self->holes, agent->index);
    }
  else
    g_array_append_val (self->idle, agent->index);
  g_mutex_unlock (&self->lock);

  if (drop)
    pool_slot_free (agent);
}

static void
pool_agent_join_groups (AhPool  *self,
                        AhAgent *agent)
{
  if (self->queue_group != NULL)
    ah_bus_group_add (self->queue_group, agent->endpoint);
  if (self->broadcast_group != NULL)
    ah_bus_group_add (self->broadcast_group, agent->endpoint);
}

static void
pool_agent_leave_groups (AhPool  *self,
                         AhAgent *agent)
{
  if (self->queue_group != NULL)
    ah_bus_group_remove (self->queue_group, agent->endpoint);
  if (self->broadcast_group != NULL)
    ah_bus_group_remove (self->broadcast_group, agent->endpoint);
}

/* ---- starting agents ------------------------------------------------------------- */

/* Runs the plugin's agent_init on a slot the caller has marked STARTING.
 * Safe to call from several threads for different slots. */
static gboolean
pool_agent_init (AhPool   *self,
                 AhAgent  *agent,
                 gint64    now,
                 GError  **error)
{
  AhContext ctx = { .agent = agent, .call = NULL };
  g_autoptr(GError) local_error = NULL;

  agent->spawn_time_us = now;
  __atomic_store_n (&agent->last_active_us, now, __ATOMIC_RELAXED);
  __atomic_store_n (&agent->handled, 0, __ATOMIC_RELAXED);
  __atomic_store_n (&agent->restarts, 0, __ATOMIC_RELAXED);
  __atomic_store_n (&agent->activity, AH_AGENT_ACTIVITY_WAITING, __ATOMIC_RELAXED);
  __atomic_store_n (&agent->doomed, AGENT_DOOM_NONE, __ATOMIC_RELAXED);
  agent->reported_depth = 0;

  if (self->desc->agent_init == NULL)
    return TRUE;
  if (self->desc->agent_init (&ctx, agent->state_mem, &local_error))
    return TRUE;

  g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_PREWARM,
               "agent type '%s' (%s): agent %u: init failed: %s",
               self->type->name, ah_plugin_get_path (self->plugin), agent->index,
               local_error != NULL ? local_error->message : "agent_init returned FALSE without a message");
  return FALSE;
}

/* Makes initialised agents live: endpoints in the pool's groups, made
 * in one step of the bus and one of the pool's lock, however many. */
static void
pool_agents_go_live (AhPool   *self,
                     AhAgent **agents,
                     guint     n_agents)
{
  AhEndpoint *inline_endpoints[64];
  g_autofree AhEndpoint **heap_endpoints = NULL;
  AhEndpoint **endpoints = inline_endpoints;
  AhBusGroup *groups[2];
  guint n_groups = 0;

  if (n_agents == 0)
    return;
  if (n_agents > G_N_ELEMENTS (inline_endpoints))
    endpoints = heap_endpoints = g_new (AhEndpoint *, n_agents);
  if (self->queue_group != NULL)
    groups[n_groups++] = self->queue_group;
  if (self->broadcast_group != NULL)
    groups[n_groups++] = self->broadcast_group;
  ah_bus_endpoints_new (self->bus, pool_agent_handle, (gpointer const *) agents, n_agents,
                        groups, n_groups, endpoints);

  g_mutex_lock (&self->lock);
  for (guint i = 0; i < n_agents; i++)
    {
      agents[i]->endpoint = endpoints[i];
      agents[i]->id = ah_endpoint_get_id (endpoints[i]);
      agents[i]->state = AH_SLOT_READY;
    }
  self->spawned += n_agents;
  /* Under the lock, so that under it n_live counts the READY slots. */
  __atomic_add_fetch (&self->n_live, n_agents, __ATOMIC_RELAXED);
  g_mutex_unlock (&self->lock);
}

static void
pool_agent_go_live (AhPool  *self,
                    AhAgent *agent)
{
  pool_agents_go_live (self, &agent, 1);
}

/* An init that failed at spawn: counted, announced, the slot given back. */
static void
pool_agent_init_failed (AhPool     *self,
                        AhAgent    *agent,
                        const char *reason,
                        gboolean    announce)
{
  guint index = agent->index;

  g_mutex_lock (&self->lock);
  self->init_failures++;
  g_mutex_unlock (&self->lock);
  __atomic_add_fetch (&self->failed, 1, __ATOMIC_RELAXED);
  pool_agent_release (self, agent, TRUE);
  if (announce)
    pool_publish_event (self, AH_SUBJECT_AGENT_FAILED, AH_AGENT_ID_NONE, index, reason);
}

typedef enum {
  START_PREWARM,    /* the initial block, all or nothing */
  START_TOUCH,      /* the initial block of a type that does not pre-warm: zeroed */
  START_BATCH,      /* reserved slots, each on its own */
} StartMode;

/* What the chunks of one pre-warm or batch share. */
typedef struct {
  GMutex   lock;
  GError  *error;        /* pre-warm: the first failure */
  gint     failed;       /* atomic: pre-warm's later chunks stop early */
} StartShared;

typedef struct {
  StartShared *shared;
  AhPool      *pool;
  StartMode    mode;
  AhAgent    **agents;   /* START_BATCH: the reserved slots; else the initial block's */
  GError     **errors;   /* START_BATCH: each agent's failure, by position */
  guint        first;
  guint        end;
} StartChunk;

#define AH_POOL_GO_LIVE_RUN 512

/* Makes the @n_ready agents live and, while someone listens, announces
 * them; empties the run. Returns whether to go on announcing. */
static gboolean
pool_agents_go_live_announced (AhPool    *self,
                               AhAgent  **ready,
                               guint     *n_ready,
                               gboolean   announce)
{
  pool_agents_go_live (self, ready, *n_ready);
  for (guint i = 0; i < *n_ready && announce; i++)
    announce = pool_publish_event (self, AH_SUBJECT_AGENT_SPAWNED, ready[i]->id, ready[i]->index,
                                   NULL);
  *n_ready = 0;
  return announce;
}

static void
start_chunk_run (StartChunk *chunk)
{
  StartShared *shared = chunk->shared;
  AhPool *self = chunk->pool;
  gint64 start = g_get_monotonic_time ();
  /* "$SYS.agent.spawned" per agent, but formatted only while someone
   * listens: the first one nobody hears ends the chunk's announcements. */
  gboolean announce = chunk->mode == START_BATCH;
  /* Initialised agents go live together, a run at a time. */
  AhAgent *ready[AH_POOL_GO_LIVE_RUN];
  guint n_ready = 0;
  gint64 now = 0;

  for (guint i = chunk->first; i < chunk->end; i++)
    {
      AhAgent *agent = chunk->agents != NULL ? chunk->agents[i] : &self->block[i];
      GError *local_error = NULL;

      if (chunk->mode == START_TOUCH)
        {
          if (agent->state_mem != NULL)
            memset (agent->state_mem, 0, self->state_stride);
          continue;
        }
      if (chunk->mode == START_PREWARM && g_atomic_int_get (&shared->failed))
        break;
      if (chunk->mode == START_BATCH)
        pool_agent_fit_state (self, agent);

      /* Pre-warm hands the slots of the initial block out by index, not
       * through the idle list: each chunk owns its range. */
      agent->state = AH_SLOT_STARTING;
      /* One clock read per run that goes live together: on this VM a
       * read costs as much as a tenth of an agent's pre-warm. */
      if (n_ready == 0)
        now = pool_now_us ();
      if (pool_agent_init (self, agent, now, &local_error))
        {
          ready[n_ready++] = agent;
          if (n_ready == G_N_ELEMENTS (ready))
            announce = pool_agents_go_live_announced (self, ready, &n_ready, announce);
          continue;
        }
      announce = pool_agents_go_live_announced (self, ready, &n_ready, announce);

      if (chunk->mode == START_BATCH)
        {
          pool_agent_init_failed (self, agent, local_error->message, TRUE);
          chunk->errors[i] = local_error;
          continue;
        }
      agent->state = AH_SLOT_IDLE;
      if (agent->state_mem != NULL)
        memset (agent->state_mem, 0, self->desc->state_size);
      g_mutex_lock (&self->lock);
      self->init_failures++;
      g_mutex_unlock (&self->lock);
      __atomic_add_fetch (&self->failed, 1, __ATOMIC_RELAXED);
      g_mutex_lock (&shared->lock);
      if (shared->error == NULL)
        shared->error = local_error;
      else
        g_error_free (local_error);
      g_mutex_unlock (&shared->lock);
      g_atomic_int_set (&shared->failed, TRUE);
      break;
    }

  pool_agents_go_live_announced (self, ready, &n_ready, announce);

  /* A type that does not pre-warm reports no pre-warm time. */
  if (chunk->mode != START_PREWARM)
    return;
  g_mutex_lock (&self->lock);
  if (self->prewarm_start_us == 0 || start < self->prewarm_start_us)
    self->prewarm_start_us = start;
  self->prewarm_end_us = MAX (self->prewarm_end_us, g_get_monotonic_time ());
  g_mutex_unlock (&self->lock);
}

/* g_get_num_processors() asks the kernel for the process's CPU set on
 * every call: in a pre-warm of a few thousand agents that was a third of
 * the time (perf). Read once per process: it only sizes the chunks and
 * their threads, so a CPU set changed later costs balance, not
 * correctness. */
static guint
pool_n_cpus (void)
{
  static guint n_cpus;
  guint n = g_atomic_int_get (&n_cpus);

  if (n == 0)
    {
      n = g_get_num_processors ();
      g_atomic_int_set (&n_cpus, n);
    }
  return n;
}

/* How many agents one chunk starts: big enough that a thread's start-up
 * pays off, small enough that every CPU gets a share. */
static guint
start_chunk_size (guint n_agents)
{
  guint n_cpus = pool_n_cpus ();

  return MAX (AH_PREWARM_MIN_CHUNK, (n_agents + 2 * n_cpus - 1) / (2 * n_cpus));
}

/* The chunks of one pre-warm or batch, taken in order by whichever
 * thread is free. */
typedef struct {
  GArray *chunks;
  gint    next;       /* atomic: the next chunk to take */
} StartQueue;

static gpointer
start_queue_drain (gpointer data)
{
  StartQueue *queue = data;

  for (;;)
    {
      guint i = (guint) g_atomic_int_add (&queue->next, 1);

      if (i >= queue->chunks->len)
        return NULL;
      start_chunk_run (&g_array_index (queue->chunks, StartChunk, i));
    }
}

/* Runs @chunks on the calling thread and on temporary threads, at least
 * @min_threads in all (plugin inits may wait on I/O, so pre-warm allows
 * a thread per pool even on few cores). The calling thread takes chunks
 * too rather than only waiting: one thread fewer to start and join, a
 * tenth of a small pre-warm. A thread that cannot be started leaves its
 * share to the others. */
static void
start_chunks_run (GArray *chunks,
                  guint   min_threads)
{
  StartQueue queue = { chunks, 0 };
  g_autofree GThread **threads = NULL;
  guint n_threads;

  if (chunks->len == 0)
    return;
  n_threads = MIN (chunks->len, MIN (AH_PREWARM_MAX_THREADS,
                                     MAX (min_threads, 2 * pool_n_cpus ())));
  threads = g_new0 (GThread *, n_threads);
  for (guint i = 1; i < n_threads; i++)
    threads[i] = g_thread_try_new ("ah-prewarm", start_queue_drain, &queue, NULL);
  start_queue_drain (&queue);
  for (guint i = 1; i < n_threads; i++)
    if (threads[i] != NULL)
      g_thread_join (threads[i]);
}

gboolean
ah_pools_prewarm (AhPool  **pools,
                  guint     n_pools,
                  gdouble  *ret_total_ms,
                  GError  **error)
{
  g_autoptr(GArray) chunks = g_array_new (FALSE, FALSE, sizeof (StartChunk));
  StartShared shared = { 0 };
  gint64 start = g_get_monotonic_time ();
  gboolean more = TRUE;

  g_mutex_init (&shared.lock);

  /* Chunks are queued round robin across pools - the first chunk of every
   * pool, then the second ones - so that every pool starts at once even
   * when there are more chunks than threads. */
  for (guint round = 0; more; round++)
    {
      more = FALSE;
      for (guint p = 0; p < n_pools; p++)
        {
          AhPool *self = pools[p];
          guint size = self->type->pool_size;
          guint chunk_size = start_chunk_size (size);
          StartChunk chunk = { &shared, self, self->type->prewarm ? START_PREWARM : START_TOUCH,
                               NULL, NULL, round * chunk_size, 0 };

          if (chunk.first >= size || (chunk.mode == START_TOUCH && self->state_block == NULL))
            continue;
          chunk.end = MIN (size, chunk.first + chunk_size);
          g_array_append_val (chunks, chunk);
          more = TRUE;
        }
    }

  for (guint p = 0; p < n_pools; p++)
    if (pools[p]->type->prewarm)
      {
        /* The whole initial block is handed out by the chunks. */
        g_mutex_lock (&pools[p]->lock);
        g_array_set_size (pools[p]->idle, 0);
        pools[p]->n_active += pools[p]->type->pool_size;
        g_mutex_unlock (&pools[p]->lock);
      }

  start_chunks_run (chunks, n_pools);

  if (ret_total_ms != NULL)
    *ret_total_ms = (g_get_monotonic_time () - start) / 1000.0;

  if (shared.error != NULL)
    {
      /* Undo: stop what started, and give every slot of the initial
       * blocks back to the idle lists. */
      for (guint p = 0; p < n_pools; p++)
        {
          AhPool *self = pools[p];

          if (!self->type->prewarm)
            continue;
          ah_pool_terminate_all (self);
          g_mutex_lock (&self->lock);
          g_array_set_size (self->idle, 0);
          for (guint i = self->type->pool_size; i > 0; i--)
            {
              guint index = i - 1;
              g_array_append_val (self->idle, index);
            }
          self->n_active = 0;
          g_mutex_unlock (&self->lock);
        }
      g_propagate_error (error, shared.error);
      g_mutex_clear (&shared.lock);
      return FALSE;
    }

  g_mutex_clear (&shared.lock);
  return TRUE;
}

/* Above its min, an autoscaled type has agents the scaler may stop. */
static void
pool_note_live_count (AhPool *self)
{
  if (self->type->autoscale && self->supervisor != NULL
      && ah_pool_get_n_live (self) > self->type->pool_min)
    ah_supervisor_note_above_min (self->supervisor);
}

AhAgentId
ah_pool_spawn (AhPool  *self,
               GError **error)
{
  g_autoptr(GError) local_error = NULL;
  AhAgent *agent;
  AhAgentId id;

  g_return_val_if_fail (self != NULL, AH_AGENT_ID_NONE);

  ah_pool_lock_lifecycle (self);
  if (pool_reserve_slots (self, 1, &agent, error) == 0)
    {
      ah_pool_unlock_lifecycle (self);
      return AH_AGENT_ID_NONE;
    }
  pool_agent_fit_state (self, agent);
  if (!pool_agent_init (self, agent, pool_now_us (), &local_error))
    {
      pool_agent_init_failed (self, agent, local_error->message, TRUE);
      ah_pool_unlock_lifecycle (self);
      g_propagate_error (error, g_steal_pointer (&local_error));
      return AH_AGENT_ID_NONE;
    }
  pool_agent_go_live (self, agent);
  id = agent->id;
  pool_publish_event (self, AH_SUBJECT_AGENT_SPAWNED, id, agent->index, NULL);
  ah_pool_unlock_lifecycle (self);
  pool_note_live_count (self);

  return id;
}

guint
ah_pool_spawn_batch (AhPool        *self,
                     guint          n_agents,
                     AhSpawnResult *results,
                     GError       **error)
{
  g_autoptr(GArray) chunks = g_array_new (FALSE, FALSE, sizeof (StartChunk));
  g_autofree AhAgent **agents = NULL;
  g_autofree GError **errors = NULL;
  StartShared shared = { 0 };
  guint n_reserved, n_started = 0, chunk_size;

  g_return_val_if_fail (self != NULL, 0);
  g_return_val_if_fail (results != NULL || n_agents == 0, 0);

  for (guint i = 0; i < n_agents; i++)
    results[i] = (AhSpawnResult) { AH_AGENT_ID_NONE, NULL };
  if (n_agents == 0)
    return 0;

  agents = g_new (AhAgent *, n_agents);
  ah_pool_lock_lifecycle (self);
  n_reserved = pool_reserve_slots (self, n_agents, agents, error);
  if (n_reserved == 0)
    {
      ah_pool_unlock_lifecycle (self);
      return 0;
    }

  errors = g_new0 (GError *, n_reserved);
  chunk_size = start_chunk_size (n_reserved);
  for (guint first = 0; first < n_reserved; first += chunk_size)
    {
      StartChunk chunk = { &shared, self, START_BATCH, agents, errors, first,
                           MIN (n_reserved, first + chunk_size) };

      g_array_append_val (chunks, chunk);
    }
  start_chunks_run (chunks, 1);
  ah_pool_unlock_lifecycle (self);

  for (guint i = 0; i < n_agents; i++)
    {
      if (i >= n_reserved)
        g_set_error (&results[i].error, AH_HOST_ERROR, AH_HOST_ERROR_POOL_LIMIT,
                     "agent type '%s' is at its pool max of %u agents",
                     self->type->name, self->type->pool_max);
      else if (errors[i] != NULL)
        results[i].error = errors[i];
      else
        {
          results[i].id = agents[i]->id;
          n_started++;
        }
    }
  pool_note_live_count (self);

  return n_started;
}

gboolean
ah_pool_owns (AhPool   *self,
              AhAgentId id)
{
  gboolean owns;

  g_mutex_lock (&self->lock);
  owns = pool_find_live_locked (self, id) != NULL;
  g_mutex_unlock (&self->lock);

  return owns;
}

/* ---- stopping agents -------------------------------------------------------------- */

/* Marks a live agent STOPPING: from then on it is not found by its id.
 * Must be called with the pool's lock held. */
static void
pool_agent_unlive_locked (AhPool  *self,
                          AhAgent *agent)
{
  agent->state = AH_SLOT_STOPPING;
  self->n_active--;
  __atomic_sub_fetch (&self->n_live, 1, __ATOMIC_RELAXED);
}

/* The rest of stopping an agent once its endpoint is closed: finalize,
 * the slot back to the pool, the event. Lifecycle lock held. */
static void
pool_agent_finish_stop (AhPool  *self,
                        AhAgent *agent)
{
  AhContext ctx = { .agent = agent, .call = NULL };
  AhAgentId id = agent->id;
  guint index = agent->index;

  if (agent->reported_depth > 0)
    __atomic_sub_fetch (&self->total_depth, (gint64) agent->reported_depth, __ATOMIC_RELAXED);

  /* An agent whose restart failed has nothing initialised to finalize. */
  if (self->desc->agent_finalize != NULL
      && __atomic_load_n (&agent->doomed, __ATOMIC_RELAXED) != AGENT_DOOM_UNINITIALISED)
    self->desc->agent_finalize (&ctx, agent->state_mem);

  g_mutex_lock (&self->lock);
  self->terminated++;
  g_mutex_unlock (&self->lock);
  pool_agent_release (self, agent, FALSE);
  pool_publish_event (self, AH_SUBJECT_AGENT_STOPPED, id, index, NULL);
}

/* Stops an agent the caller marked STOPPING. Lifecycle lock held. */
static void
pool_agent_stop (AhPool  *self,
                 AhAgent *agent)
{
  /* Out of the groups first, so no new message is routed to it; then the
   * close dead-letters what is still queued and waits out a running
   * batch. Only then may finalize touch the state. */
  pool_agent_leave_groups (self, agent);
  ah_bus_endpoint_close (self->bus, agent->endpoint);
  pool_agent_finish_stop (self, agent);
}

gboolean
ah_pool_terminate (AhPool   *self,
                   AhAgentId id,
                   GError  **error)
{
  AhAgent *agent;

  g_return_val_if_fail (self != NULL, FALSE);

  ah_pool_lock_lifecycle (self);
  g_mutex_lock (&self->lock);
  agent = pool_find_live_locked (self, id);
  if (agent != NULL)
    pool_agent_unlive_locked (self, agent);
  g_mutex_unlock (&self->lock);

  if (agent == NULL)
    {
      ah_pool_unlock_lifecycle (self);
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_AGENT,
                   "agent type '%s' has no live agent %" G_GUINT64_FORMAT,
                   self->type->name, id);
      return FALSE;
    }

  pool_agent_stop (self, agent);
  ah_pool_unlock_lifecycle (self);
  return TRUE;
}

void
ah_pool_terminate_all (AhPool *self)
{
  g_autoptr(GPtrArray) stopping = g_ptr_array_new ();

  ah_pool_lock_lifecycle (self);
  g_mutex_lock (&self->lock);
  /* By index, so finalize order is deterministic. */
  for (guint i = 0; i < pool_n_slots (self); i++)
    {
      AhAgent *agent = pool_slot_at (self, i);

      if (agent != NULL && agent->state == AH_SLOT_READY)
        {
          pool_agent_unlive_locked (self, agent);
          g_ptr_array_add (stopping, agent);
        }
    }
  g_mutex_unlock (&self->lock);

  for (guint i = 0; i < stopping->len; i++)
    pool_agent_stop (self, g_ptr_array_index (stopping, i));
  ah_pool_unlock_lifecycle (self);
}

/* ---- inspection --------------------------------------------------------------------- */

static AhAgentState
pool_agent_public_state (AhAgent *agent)
{
  switch ((AhSlotState) agent->state)
    {
    case AH_SLOT_STARTING:
      return AH_AGENT_STATE_SPAWNING;
    case AH_SLOT_STOPPING:
      return AH_AGENT_STATE_STOPPING;
    case AH_SLOT_READY:
      switch ((AhAgentActivity) __atomic_load_n (&agent->activity, __ATOMIC_RELAXED))
        {
        case AH_AGENT_ACTIVITY_HANDLING:
          return AH_AGENT_STATE_BUSY;
        case AH_AGENT_ACTIVITY_RESTARTING:
          return AH_AGENT_STATE_SPAWNING;
        case AH_AGENT_ACTIVITY_WAITING:
        default:
          return AH_AGENT_STATE_READY;
        }
    case AH_SLOT_IDLE:
    default:
      return AH_AGENT_STATE_IDLE;
    }
}

gboolean
ah_pool_get_agent_info (AhPool      *self,
                        AhAgentId    id,
                        AhAgentInfo *ret_info)
{
  AhAgent *agent;

  if (id == AH_AGENT_ID_NONE)
    return FALSE;

  g_mutex_lock (&self->lock);
  agent = pool_find_live_locked (self, id);
  /* Not live: maybe the last agent of a slot now idle. Slow, but only
   * for an id that is gone. */
  for (guint i = 0; agent == NULL && i < pool_n_slots (self); i++)
    {
      AhAgent *slot = pool_slot_at (self, i);

      if (slot != NULL && slot->id == id && slot->state != AH_SLOT_READY)
        agent = slot;
    }
  if (agent != NULL)
    {
      memset (ret_info, 0, sizeof *ret_info);
      ret_info->id = id;
      ret_info->type_name = self->type->name;
      ret_info->state = pool_agent_public_state (agent);
      ret_info->index = agent->index;
      ret_info->spawn_time_us = agent->spawn_time_us;
      ret_info->last_active_us = __atomic_load_n (&agent->last_active_us, __ATOMIC_RELAXED);
      ret_info->handled = __atomic_load_n (&agent->handled, __ATOMIC_RELAXED);
      ret_info->restarts = __atomic_load_n (&agent->restarts, __ATOMIC_RELAXED);
    }
  g_mutex_unlock (&self->lock);

  return agent != NULL;
}

void
ah_pool_get_stats (AhPool      *self,
                   AhTypeStats *ret_stats)
{
  g_autofree guint64 *handler_ns = g_new0 (guint64, AH_HIST_N_BUCKETS);
  g_autofree guint64 *restart_ns = g_new0 (guint64, AH_HIST_N_BUCKETS);
  guint64 delivered = 0;

  memset (ret_stats, 0, sizeof *ret_stats);
  ret_stats->name = self->type->name;
  ret_stats->pool_size = self->type->pool_size;
  ret_stats->pool_min = self->type->pool_min;
  ret_stats->pool_max = self->type->pool_max;

  g_mutex_lock (&self->lock);
  ret_stats->n_agents = __atomic_load_n (&self->n_live, __ATOMIC_RELAXED);
  ret_stats->n_idle = self->idle->len;
  ret_stats->spawned = self->spawned;
  ret_stats->terminated = self->terminated;
  ret_stats->init_failures = self->init_failures;
  if (self->prewarm_end_us > 0)
    ret_stats->prewarm_ms = (self->prewarm_end_us - self->prewarm_start_us) / 1000.0;
  g_mutex_unlock (&self->lock);

  for (guint w = 0; w < self->n_workers; w++)
    {
      PoolWorker *worker = &self->workers[w];

      ret_stats->handled += __atomic_load_n (&worker->handled, __ATOMIC_RELAXED);
      ret_stats->handler_failures += __atomic_load_n (&worker->batch_failures, __ATOMIC_RELAXED);
      ret_stats->retried += __atomic_load_n (&worker->retried, __ATOMIC_RELAXED);
      ret_stats->failed_messages += __atomic_load_n (&worker->failed_messages, __ATOMIC_RELAXED);
      delivered += __atomic_load_n (&worker->delivered, __ATOMIC_RELAXED);
      for (guint b = 0; b < AH_HIST_N_BUCKETS; b++)
        handler_ns[b] += __atomic_load_n (&worker->handler_ns[b], __ATOMIC_RELAXED);
    }
  for (guint b = 0; b < AH_HIST_N_BUCKETS; b++)
    restart_ns[b] = __atomic_load_n (&self->restart_ns[b], __ATOMIC_RELAXED);

  ret_stats->failed = __atomic_load_n (&self->failed, __ATOMIC_RELAXED);
  ret_stats->restarted = __atomic_load_n (&self->restarted, __ATOMIC_RELAXED);
  ret_stats->stopped = ah_pool_is_stopped (self);
  ret_stats->handler_p50_us = hist_percentile_us (handler_ns, 0.50);
  ret_stats->handler_p99_us = hist_percentile_us (handler_ns, 0.99);
  ret_stats->restart_p50_us = hist_percentile_us (restart_ns, 0.50);
  /* Messages of a failed call that were retried are settled by their
   * second call; only those dead-lettered count against the type. */
  ret_stats->success_rate = delivered + ret_stats->failed_messages == 0
                            ? 1.0 : (gdouble) delivered / (delivered + ret_stats->failed_messages);
}

AhPlugin *
ah_pool_get_plugin (AhPool *self)
{
  return self->plugin;
}

void
ah_pool_lock_lifecycle (AhPool *self)
{
  g_mutex_lock (&self->lifecycle_lock);
}

void
ah_pool_unlock_lifecycle (AhPool *self)
{
  g_mutex_unlock (&self->lifecycle_lock);
}

GPtrArray *
ah_pool_get_live_agents (AhPool *self)
{
  GPtrArray *agents = g_ptr_array_new ();

  g_mutex_lock (&self->lock);
  for (guint i = 0; i < pool_n_slots (self); i++)
    {
      AhAgent *agent = pool_slot_at (self, i);

      if (agent != NULL && agent->state == AH_SLOT_READY)
        g_ptr_array_add (agents, agent);
    }
  g_mutex_unlock (&self->lock);

  return agents;
}

void
ah_pool_replace_plugin (AhPool     *self,
                        AhPlugin   *plugin,
                        GHashTable *config)
{
  AhPlugin *old = self->plugin;

  self->plugin = ah_plugin_ref (plugin);
  self->desc = ah_plugin_get_desc (plugin);
  g_hash_table_unref (self->config);
  self->config = config;
  ah_plugin_unref (old);
}

GArray *
ah_pool_get_live_ids (AhPool *self)
{
  GArray *ids = g_array_new (FALSE, FALSE, sizeof (AhAgentId));

  g_mutex_lock (&self->lock);
  for (guint i = 0; i < pool_n_slots (self); i++)
    {
      AhAgent *agent = pool_slot_at (self, i);

      if (agent != NULL && agent->state == AH_SLOT_READY)
        g_array_append_val (ids, agent->id);
    }
  g_mutex_unlock (&self->lock);

  return ids;
}

/* ---- restarts ------------------------------------------------------------------------- */

/* Restarts @agent in place: finalize, zero the state, init again. Same
 * slot, same id, same mailbox (what is queued stays queued). On the
 * thread that owns the agent now: its worker, inside the failed call,
 * or the supervisor while the agent is paused. A failed init leaves the
 * agent uninitialised and doomed: the supervisor stops it. */
static gboolean
pool_agent_restart (AhPool  *self,
                    AhAgent *agent)
{
  AhContext ctx = { .agent = agent, .call = NULL };
  gint64 start = pool_now_ns ();

  __atomic_store_n (&agent->activity, AH_AGENT_ACTIVITY_RESTARTING, __ATOMIC_RELAXED);
  if (self->desc->agent_finalize != NULL)
    self->desc->agent_finalize (&ctx, agent->state_mem);

  /* As an OTP supervisor does, a restart whose init fails counts as one
   * more failure against the budget and is tried again while the budget
   * allows; past it the supervisor stops the type. */
  for (;;)
    {
      g_autoptr(GError) local_error = NULL;
      g_autofree char *reason = NULL;
      gboolean ok;

      if (agent->state_mem != NULL)
        memset (agent->state_mem, 0, self->desc->state_size);
      ok = self->desc->agent_init == NULL
           || self->desc->agent_init (&ctx, agent->state_mem, &local_error);
      if (ok)
        {
          __atomic_store_n (&agent->activity, AH_AGENT_ACTIVITY_WAITING, __ATOMIC_RELAXED);
          __atomic_add_fetch (&self->restart_ns[hist_bucket ((guint64) (pool_now_ns () - start))],
                              1, __ATOMIC_RELAXED);
          __atomic_add_fetch (&self->restarted, 1, __ATOMIC_RELAXED);
          __atomic_add_fetch (&agent->restarts, 1, __ATOMIC_RELAXED);
          pool_publish_event (self, AH_SUBJECT_AGENT_RESTARTED, agent->id, agent->index, NULL);
          return TRUE;
        }

      reason = g_strdup_printf ("restart failed: init failed: %s",
                                local_error != NULL ? local_error->message
                                                    : "agent_init returned FALSE without a message");
      g_mutex_lock (&self->lock);
      self->init_failures++;
      g_mutex_unlock (&self->lock);
      __atomic_add_fetch (&self->failed, 1, __ATOMIC_RELAXED);
      pool_publish_event (self, AH_SUBJECT_AGENT_FAILED, agent->id, agent->index, reason);
      if (self->supervisor != NULL
          && ah_supervisor_agent_failed (self->supervisor, self, agent->id, reason)
             == AH_SUPERVISOR_RESTART)
        {
          g_message ("agent type '%s' agent %" G_GUINT64_FORMAT " %s; trying again",
                     self->type->name, agent->id, reason);
          continue;
        }

      __atomic_store_n (&agent->activity, AH_AGENT_ACTIVITY_WAITING, __ATOMIC_RELAXED);
      __atomic_store_n (&agent->doomed, AGENT_DOOM_UNINITIALISED, __ATOMIC_RELAXED);
      pool_agent_leave_groups (self, agent);
      g_message ("agent type '%s' agent %" G_GUINT64_FORMAT " %s; it is stopped",
                 self->type->name, agent->id, reason);
      if (self->supervisor != NULL)
        ah_supervisor_stop_agent (self->supervisor, self, agent->id);
      return FALSE;
    }
}

guint
ah_pool_restart_others (AhPool   *self,
                        AhAgentId except)
{
  g_autoptr(GPtrArray) agents = NULL;
  guint n_restarted = 0;

  ah_pool_lock_lifecycle (self);
  agents = ah_pool_get_live_agents (self);
  for (guint i = agents->len; i > 0; i--)
    {
      AhAgent *agent = g_ptr_array_index (agents, i - 1);

      if (agent->id == except || __atomic_load_n (&agent->doomed, __ATOMIC_RELAXED))
        g_ptr_array_remove_index (agents, i - 1);
    }
  /* All still at once, as a reload does: no agent of the type runs on
   * old state while another already restarted. */
  for (guint i = 0; i < agents->len; i++)
    ah_bus_endpoint_pause (self->bus, ((AhAgent *) g_ptr_array_index (agents, i))->endpoint);
  for (guint i = 0; i < agents->len; i++)
    if (pool_agent_restart (self, g_ptr_array_index (agents, i)))
      n_restarted++;
  for (guint i = 0; i < agents->len; i++)
    ah_bus_endpoint_resume (self->bus, ((AhAgent *) g_ptr_array_index (agents, i))->endpoint);
  ah_pool_unlock_lifecycle (self);

  return n_restarted;
}

/* ---- the handler path ------------------------------------------------------------------ */

/* Where a message of a failed call is retried: another agent of the
 * type's queue group when it came through a queue subscription, else
 * (direct sends, replies, broadcasts) back to the same agent. */
static AhBusGroup *
pool_retry_group (AhPool          *self,
                  const AhMessage *message)
{
  AhMessageKind kind = ah_message_get_kind (message);
  const char *subject;

  if (self->queue_group == NULL || (kind != AH_MESSAGE_PUBLISH && kind != AH_MESSAGE_REQUEST))
    return NULL;
  subject = ah_message_get_subject (message);
  for (guint i = 0; i < self->type->subscriptions->len; i++)
    {
      const AhManifestSubscription *sub = g_ptr_array_index (self->type->subscriptions, i);

      if (sub->delivery == AH_DELIVERY_QUEUE && ah_pattern_matches (sub->pattern, subject))
        return self->queue_group;
    }
  return NULL;
}

/* The messages of a failed call: each retried once (when the type says
 * so and may), or left to the bus, which dead-letters them with the
 * call. Counted either way. */
static void
pool_settle_failed_messages (AhPool                  *self,
                             PoolWorker              *worker,
                             AhBusCall               *call,
                             const AhMessage * const *messages,
                             guint                    n_messages,
                             gboolean                 may_retry)
{
  guint n_retried = 0;

  if (may_retry && self->type->failed_messages == AH_FAILED_MESSAGES_RETRY)
    for (guint i = 0; i < n_messages; i++)
      if (ah_bus_call_retry (call, messages[i], pool_retry_group (self, messages[i])))
        n_retried++;
  worker_add (&worker->retried, n_retried);
  worker_add (&worker->failed_messages, n_messages - n_retried);
}

static gboolean
pool_agent_failed (AhPool                  *self,
                   AhAgent                 *agent,
                   PoolWorker              *worker,
                   AhBusCall               *call,
                   const AhMessage * const *messages,
                   guint                    n_messages,
                   GError                  *failure,
                   GError                 **error)
{
  const char *reason = failure != NULL ? failure->message
                                       : "handle_batch returned FALSE without a message";
  AhSupervisorVerdict verdict = AH_SUPERVISOR_RESTART;

  worker_add (&worker->batch_failures, 1);
  pool_publish_event (self, AH_SUBJECT_AGENT_FAILED, agent->id, agent->index, reason);
  /* An agent failing is an event of the run, not a bug of the host:
   * logged as a message (shown by default), counted, and the run goes on. */
  g_message ("agent type '%s' agent %" G_GUINT64_FORMAT " failed a batch of %u: %s",
             self->type->name, agent->id, n_messages, reason);

  /* A message the plugin calls invalid is the message's fault, not the
   * agent's: the agent keeps running with its state, and the batch is
   * dead-lettered, not retried (it would fail again anywhere). Only the
   * agent's own failures go to its supervisor. */
  if (failure != NULL && g_error_matches (failure, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE))
    {
      pool_settle_failed_messages (self, worker, call, messages, n_messages, FALSE);
      g_propagate_error (error, failure);
      return FALSE;
    }

  __atomic_add_fetch (&self->failed, 1, __ATOMIC_RELAXED);
  if (self->supervisor != NULL)
    verdict = ah_supervisor_agent_failed (self->supervisor, self, agent->id, reason);
  if (verdict != AH_SUPERVISOR_RESTART)
    {
      /* No new message reaches it while it waits to be stopped (alone,
       * or with its whole type). */
      __atomic_store_n (&agent->doomed, AGENT_DOOM_STOP, __ATOMIC_RELAXED);
      pool_agent_leave_groups (self, agent);
    }
  pool_settle_failed_messages (self, worker, call, messages, n_messages,
                               verdict != AH_SUPERVISOR_STOP_TYPE);
  if (verdict == AH_SUPERVISOR_RESTART)
    pool_agent_restart (self, agent);

  if (failure != NULL)
    g_propagate_error (error, failure);
  else
    g_set_error_literal (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED, reason);
  return FALSE;
}

/* An agent waiting to be stopped after a failure does not run the plugin
 * again: what still reaches it is retried elsewhere when the type
 * retries, else dead-lettered. */
static gboolean
pool_agent_pass_on (AhPool                  *self,
                    AhAgent                 *agent,
                    PoolWorker              *worker,
                    AhBusCall               *call,
                    const AhMessage * const *messages,
                    guint                    n_messages,
                    GError                 **error)
{
  pool_settle_failed_messages (self, worker, call, messages, n_messages,
                               !ah_pool_is_stopped (self));
  g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
               "agent %" G_GUINT64_FORMAT " is being stopped after a failure", agent->id);
  return FALSE;
}

/* Autoscale: the handler reads its own mailbox's depth; the pool keeps
 * the sum of what its agents last saw, so its mean needs no scan. */
static void
pool_observe_depth (AhPool  *self,
                    AhAgent *agent,
                    gint64   now_us)
{
  guint depth = ah_bus_endpoint_get_depth (agent->endpoint);
  guint n_live = ah_pool_get_n_live (self);
  gint64 total, since;

  if (depth != agent->reported_depth)
    {
      total = __atomic_add_fetch (&self->total_depth,
                                  (gint64) depth - (gint64) agent->reported_depth, __ATOMIC_RELAXED);
      agent->reported_depth = depth;
    }
  else
    total = __atomic_load_n (&self->total_depth, __ATOMIC_RELAXED);

  if (n_live == 0 || n_live >= self->type->pool_max
      || total < (gint64) self->type->scale_up_depth * n_live)
    {
      if (__atomic_load_n (&self->deep_since_us, __ATOMIC_RELAXED) != 0)
        __atomic_store_n (&self->deep_since_us, 0, __ATOMIC_RELAXED);
      return;
    }

  since = __atomic_load_n (&self->deep_since_us, __ATOMIC_RELAXED);
  if (since == 0 && !__atomic_compare_exchange_n (&self->deep_since_us, &since, now_us, FALSE,
                                                  __ATOMIC_RELAXED, __ATOMIC_RELAXED))
    return;   /* another worker started the observation */
  if (since == 0)
    since = now_us;
  if (now_us - since >= (gint64) self->type->scale_up_after_ms * 1000
      && __atomic_load_n (&self->scale_requested, __ATOMIC_RELAXED) == 0
      && __atomic_exchange_n (&self->scale_requested, 1, __ATOMIC_ACQ_REL) == 0
      && self->supervisor != NULL)
    ah_supervisor_wake_scaler (self->supervisor);
}

gboolean
ah_pool_take_scale_request (AhPool  *self,
                            gdouble *ret_mean_depth)
{
  guint n_live = ah_pool_get_n_live (self);

  if (__atomic_exchange_n (&self->scale_requested, 0, __ATOMIC_ACQ_REL) == 0)
    return FALSE;
  __atomic_store_n (&self->deep_since_us, 0, __ATOMIC_RELAXED);
  if (ret_mean_depth != NULL)
    *ret_mean_depth = n_live > 0
                      ? (gdouble) __atomic_load_n (&self->total_depth, __ATOMIC_RELAXED) / n_live : 0;
  return TRUE;
}

/* The watchdog's view of a worker: which call of this type runs there
 * since when. A seqlock written by the worker alone. */
static void
pool_watch_begin (AhPool     *self,
                  PoolWorker *worker,
                  AhAgent    *agent,
                  gint64      start_us)
{
  guint64 seq = __atomic_load_n (&worker->watch_seq, __ATOMIC_RELAXED);

  __atomic_store_n (&worker->watch_seq, seq + 1, __ATOMIC_RELAXED);
  __atomic_thread_fence (__ATOMIC_RELEASE);
  __atomic_store_n (&worker->watch_id, agent->id, __ATOMIC_RELAXED);
  __atomic_store_n (&worker->watch_index, agent->index, __ATOMIC_RELAXED);
  __atomic_store_n (&worker->watch_start_us, start_us, __ATOMIC_RELAXED);
  __atomic_store_n (&worker->watch_seq, seq + 2, __ATOMIC_RELEASE);
  /* Ordered before the watchdog's armed flag is read (see
   * ah_supervisor_watch_arm): either it sees this call or we see it idle. */
  __atomic_thread_fence (__ATOMIC_SEQ_CST);
  ah_supervisor_watch_arm (self->supervisor,
                           start_us + (gint64) self->type->handler_deadline_ms * 1000);
}

static void
pool_watch_end (PoolWorker *worker)
{
  guint64 seq = __atomic_load_n (&worker->watch_seq, __ATOMIC_RELAXED);

  __atomic_store_n (&worker->watch_seq, seq + 1, __ATOMIC_RELAXED);
  __atomic_thread_fence (__ATOMIC_RELEASE);
  __atomic_store_n (&worker->watch_start_us, 0, __ATOMIC_RELAXED);
  __atomic_store_n (&worker->watch_seq, seq + 2, __ATOMIC_RELEASE);
}

gint64
ah_pool_watch_scan (AhPool           *self,
                    gint64            now_us,
                    AhPoolOverrunFunc func,
                    gpointer          user_data)
{
  gint64 deadline_us = (gint64) self->type->handler_deadline_ms * 1000;
  gint64 next = G_MAXINT64;

  for (guint w = 0; w < self->n_workers; w++)
    {
      PoolWorker *worker = &self->workers[w];
      guint64 seq = __atomic_load_n (&worker->watch_seq, __ATOMIC_ACQUIRE);
      gint64 start;
      AhAgentId id;
      guint index;

      if (seq & 1)
        {
          /* Being written: a call is starting or ending right now. */
          next = MIN (next, now_us + deadline_us);
          continue;
        }
      start = __atomic_load_n (&worker->watch_start_us, __ATOMIC_RELAXED);
      id = __atomic_load_n (&worker->watch_id, __ATOMIC_RELAXED);
      index = __atomic_load_n (&worker->watch_index, __ATOMIC_RELAXED);
      __atomic_thread_fence (__ATOMIC_ACQUIRE);
      if (__atomic_load_n (&worker->watch_seq, __ATOMIC_RELAXED) != seq)
        {
          next = MIN (next, now_us + deadline_us);
          continue;
        }
      if (start == 0 || worker->watch_reported_seq == seq)
        continue;
      if (now_us - start >= deadline_us)
        {
          worker->watch_reported_seq = seq;
          func (self, id, index, now_us - start, user_data);
        }
      else
        next = MIN (next, start + deadline_us);
    }
  return next;
}

static gboolean
pool_agent_handle (AhBusCall               *call,
                   const AhMessage * const *messages,
                   guint                    n_messages,
                   gpointer                 user_data,
                   GError                 **error)
{
  AhAgent *agent = user_data;
  AhPool *self = agent->pool;
  guint worker_index = ah_bus_call_get_worker (call);
  /* The pool has one PoolWorker per bus worker; a bounds check rather
   * than a modulo, which cost a division per handler call. */
  PoolWorker *worker = &self->workers[G_LIKELY (worker_index < self->n_workers) ? worker_index : 0];
  AhContext ctx = { .agent = agent, .call = call };
  GError *local_error = NULL;
  gboolean watched = self->type->handler_deadline_ms > 0 && self->supervisor != NULL;
  gint64 start, end;
  gboolean ok;

  if (G_UNLIKELY (__atomic_load_n (&agent->doomed, __ATOMIC_RELAXED) != AGENT_DOOM_NONE))
    return pool_agent_pass_on (self, agent, worker, call, messages, n_messages, error);

  start = ah_bus_call_get_start_ns (call);
  if (self->type->autoscale)
    pool_observe_depth (self, agent, start / 1000);
  if (watched)
    pool_watch_begin (self, worker, agent, start / 1000);
  __atomic_store_n (&agent->activity, AH_AGENT_ACTIVITY_HANDLING, __ATOMIC_RELAXED);

  ok = self->desc->handle_batch (&ctx, agent->state_mem, messages, n_messages, &local_error);

  end = ah_bus_call_read_end_ns (call);
  __atomic_store_n (&agent->activity, AH_AGENT_ACTIVITY_WAITING, __ATOMIC_RELAXED);
  if (watched)
    pool_watch_end (worker);
  __atomic_store_n (&agent->last_active_us, end / 1000, __ATOMIC_RELAXED);
  __atomic_store_n (&agent->handled, __atomic_load_n (&agent->handled, __ATOMIC_RELAXED) + n_messages,
                    __ATOMIC_RELAXED);
  worker_add (&worker->handled, n_messages);
  worker_add (&worker->handler_ns[hist_bucket ((guint64) MAX (end - start, 0))], 1);

  if (G_LIKELY (ok))
    {
      /* A plugin that set an error and still returned TRUE succeeded. */
      if (G_UNLIKELY (local_error != NULL))
        g_error_free (local_error);
      worker_add (&worker->delivered, n_messages);
      return TRUE;
    }
  return pool_agent_failed (self, agent, worker, call, messages, n_messages, local_error, error);
}

/* ---- autoscale: shrinking ---------------------------------------------------------------- */

/* Stops @agent if, once it has left its groups, nothing waits in its
 * mailbox and nothing routed is on its way to it (the bus checks both at
 * once, so scaling down never dead-letters a message); else it rejoins
 * them. Lifecycle lock held. */
static gboolean
pool_agent_try_stop_idle (AhPool  *self,
                          AhAgent *agent)
{
  g_mutex_lock (&self->lock);
  if (agent->state != AH_SLOT_READY)
    {
      g_mutex_unlock (&self->lock);
      return FALSE;
    }
  g_mutex_unlock (&self->lock);

  pool_agent_leave_groups (self, agent);
  if (!ah_bus_endpoint_close_if_idle (self->bus, agent->endpoint))
    {
      pool_agent_join_groups (self, agent);
      return FALSE;
    }

  g_mutex_lock (&self->lock);
  pool_agent_unlive_locked (self, agent);
  g_mutex_unlock (&self->lock);
  pool_agent_finish_stop (self, agent);
  return TRUE;
}

guint
ah_pool_shrink (AhPool *self,
                gint64  idle_since_us,
                gint64  idle_us,
                gint64 *ret_next_us)
{
  g_autoptr(GPtrArray) candidates = g_ptr_array_new ();
  gint64 next = G_MAXINT64;
  guint n_stopped = 0, n_live, excess;

  ah_pool_lock_lifecycle (self);
  g_mutex_lock (&self->lock);
  n_live = __atomic_load_n (&self->n_live, __ATOMIC_RELAXED);
  excess = n_live > self->type->pool_min ? n_live - self->type->pool_min : 0;
  /* Newest slots first: the initial block's stay, warm. */
  for (guint i = pool_n_slots (self); i > 0 && excess > 0; i--)
    {
      AhAgent *agent = pool_slot_at (self, i - 1);
      gint64 last_active;

      if (agent == NULL || agent->state != AH_SLOT_READY
          || __atomic_load_n (&agent->doomed, __ATOMIC_RELAXED) != AGENT_DOOM_NONE)
        continue;
      last_active = __atomic_load_n (&agent->last_active_us, __ATOMIC_RELAXED);
      if (last_active > idle_since_us)
        next = MIN (next, last_active + idle_us);
      else if (__atomic_load_n (&agent->activity, __ATOMIC_RELAXED) != AH_AGENT_ACTIVITY_WAITING)
        next = MIN (next, idle_since_us + 2 * idle_us);   /* a long call: look again later */
      else if (candidates->len < excess)
        g_ptr_array_add (candidates, agent);
    }
  g_mutex_unlock (&self->lock);

  for (guint i = 0; i < candidates->len; i++)
    {
      AhAgent *agent = g_ptr_array_index (candidates, i);

      if (pool_agent_try_stop_idle (self, agent))
        n_stopped++;
      else
        next = MIN (next, idle_since_us + 2 * idle_us);   /* it has mail: it runs first */
    }
  if (n_live - n_stopped <= self->type->pool_min)
    next = G_MAXINT64;
  ah_pool_unlock_lifecycle (self);

  if (ret_next_us != NULL)
    *ret_next_us = next;
  return n_stopped;
}
