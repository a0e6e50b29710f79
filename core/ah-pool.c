/* Pools: the agents of one agent type.
 *
 * Memory: the first pool_size slots and their plugin state are one
 * allocation made when the pool is created; slots past that (spawned
 * beyond the initial size) are allocated one by one. A terminated agent's
 * slot is zeroed and kept on the idle list, and the next spawn takes the
 * most recently freed one, whose memory is still warm in cache.
 *
 * Threads: agent_init runs on the pre-warm threads or on the spawning
 * thread, handle_batch on the agent's bus worker, agent_finalize on the
 * terminating thread once the endpoint is closed. The pool's lock guards
 * slot bookkeeping only; it is never held while plugin code runs.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-pool-private.h"
#include "ah-config-private.h"

#include <string.h>

/* Pools up to this size are pre-warmed as one chunk; larger ones are cut
 * so that several threads share them. */
#define AH_PREWARM_MIN_CHUNK 64
#define AH_PREWARM_MAX_THREADS 64

struct _AhPool {
  AhBus                     *bus;
  const AhManifestAgentType *type;         /* borrowed from the host's manifest */
  AhPlugin                  *plugin;       /* (owned) */
  const AhPluginDesc        *desc;
  AhPoolStopFunc             stop_func;
  gpointer                   stop_data;
  AhBusGroup                *queue_group;      /* NULL until a queue subscription */
  AhBusGroup                *broadcast_group;  /* NULL until a broadcast one */
  GHashTable                *config;       /* key -> value, see ah_config_table_new() */
  AhOffloadPool             *offload;      /* the host's; may be NULL */
  gsize                      state_stride;

  GMutex                     lifecycle_lock;   /* see ah_pool_lock_lifecycle() */
  GMutex                     lock;
  AhAgent                   *block;        /* the initial pool_size slots */
  guint8                    *state_block;  /* their states, state_stride apart */
  GPtrArray                 *slots;        /* (element-type AhAgent) every slot, by index */
  GArray                    *idle;         /* (element-type guint) idle slot indices, LIFO */
  GHashTable                *live;         /* AhAgentId -> AhAgent* */
  guint64                    spawned;
  guint64                    terminated;
  guint64                    init_failures;
  gint64                     prewarm_start_us;
  gint64                     prewarm_end_us;

  /* Counted by workers, outside the lock. */
  guint64                    handled;          /* atomic */
  guint64                    handler_failures; /* atomic */
};

static gboolean pool_agent_handle (AhBusCall *call, const AhMessage * const *messages,
                                   guint n_messages, gpointer user_data, GError **error);

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
ah_pool_request_stop (AhPool *self,
                      int     exit_code)
{
  if (self->stop_func != NULL)
    self->stop_func (exit_code, self->stop_data);
}

/* Lifecycle events, for whoever watches the system like any traffic:
 * "$SYS.agent.spawned", "$SYS.agent.stopped", "$SYS.agent.failed". Not
 * counted when nobody subscribes (ah_bus_publish_event). */
static void
pool_publish_event (AhPool     *self,
                    const char *what,
                    AhAgent    *agent,
                    const char *reason)
{
  g_autofree char *subject = g_strconcat ("$SYS.agent.", what, NULL);
  g_autofree char *text = NULL;

  text = g_strdup_printf ("type=%s id=%" G_GUINT64_FORMAT " index=%u%s%s", self->type->name,
                          agent->id, agent->index, reason != NULL ? " reason=" : "",
                          reason != NULL ? reason : "");
  ah_bus_publish_event (self->bus, subject, text, strlen (text));
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
  self->type = type;
  self->plugin = ah_plugin_ref (plugin);
  self->desc = ah_plugin_get_desc (plugin);
  self->stop_func = stop_func;
  self->stop_data = stop_data;
  g_mutex_init (&self->lock);
  g_mutex_init (&self->lifecycle_lock);

  self->config = ah_config_table_new (type, self->desc);

  /* Touch nothing yet: calloc'd pages are mapped lazily, and pre-warm
   * writes each slot from the thread that initialises it. */
  self->state_stride = (self->desc->state_size + AH_STATE_ALIGN - 1) & ~(gsize) (AH_STATE_ALIGN - 1);
  self->block = g_new0 (AhAgent, type->pool_size);
  if (self->state_stride > 0)
    self->state_block = g_aligned_alloc0 (type->pool_size, self->state_stride, AH_STATE_ALIGN);
  self->slots = g_ptr_array_sized_new (type->pool_size);
  self->idle = g_array_sized_new (FALSE, FALSE, sizeof (guint), type->pool_size);
  self->live = g_hash_table_new (g_int64_hash, g_int64_equal);

  /* Idle list in reverse so that spawns take slots 0, 1, 2... in order. */
  for (guint i = 0; i < type->pool_size; i++)
    {
      AhAgent *agent = &self->block[i];

      agent->pool = self;
      agent->index = i;
      agent->state_mem = self->state_block != NULL ? self->state_block + (gsize) i * self->state_stride : NULL;
      g_ptr_array_add (self->slots, agent);
    }
  for (guint i = type->pool_size; i > 0; i--)
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

void
ah_pool_free (AhPool *self)
{
  if (self == NULL)
    return;

  for (guint i = 0; i < self->slots->len; i++)
    {
      AhAgent *agent = g_ptr_array_index (self->slots, i);

      g_aligned_free (agent->state_owned);
      if (i >= self->type->pool_size)
        g_free (agent);
    }
  g_ptr_array_unref (self->slots);
  g_array_unref (self->idle);
  g_hash_table_unref (self->live);
  g_hash_table_unref (self->config);
  g_aligned_free (self->state_block);
  g_free (self->block);
  g_mutex_clear (&self->lock);
  g_mutex_clear (&self->lifecycle_lock);
  ah_plugin_unref (self->plugin);
  g_free (self);
}

/* Runs the plugin's agent_init on a slot the caller has marked STARTING.
 * Safe to call from several threads for different slots. */
static gboolean
pool_agent_init (AhPool   *self,
                 AhAgent  *agent,
                 GError  **error)
{
  AhContext ctx = { .agent = agent, .call = NULL };
  g_autoptr(GError) local_error = NULL;

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

/* Makes an initialised agent live: an endpoint in the pool's groups. */
static void
pool_agent_go_live (AhPool  *self,
                    AhAgent *agent)
{
  AhEndpoint *endpoint = ah_bus_endpoint_new (self->bus, pool_agent_handle, agent);

  g_mutex_lock (&self->lock);
  agent->endpoint = endpoint;
  agent->id = ah_endpoint_get_id (endpoint);
  agent->state = AH_SLOT_READY;
  g_hash_table_insert (self->live, &agent->id, agent);
  self->spawned++;
  g_mutex_unlock (&self->lock);

  if (self->queue_group != NULL)
    ah_bus_group_add (self->queue_group, endpoint);
  if (self->broadcast_group != NULL)
    ah_bus_group_add (self->broadcast_group, endpoint);
}

/* Puts a slot back on the idle list with its state zeroed. */
static void
pool_agent_release (AhPool  *self,
                    AhAgent *agent)
{
  if (agent->state_mem != NULL)
    memset (agent->state_mem, 0, self->desc->state_size);

  g_mutex_lock (&self->lock);
  agent->endpoint = NULL;
  agent->id = AH_AGENT_ID_NONE;
  agent->state = AH_SLOT_IDLE;
  g_array_append_val (self->idle, agent->index);
  g_mutex_unlock (&self->lock);
}

static gsize
pool_agent_state_capacity (AhPool  *self,
                           AhAgent *agent)
{
  return agent->state_owned != NULL ? agent->state_capacity : self->state_stride;
}

void
ah_pool_agent_set_state (AhAgent *agent,
                         gpointer state_mem,
                         gsize    capacity)
{
  g_aligned_free (agent->state_owned);
  agent->state_owned = state_mem;
  agent->state_mem = state_mem;
  agent->state_capacity = capacity;
}

/* Takes a slot off the idle list (or makes a new one) and marks it
 * STARTING. */
static AhAgent *
pool_take_slot (AhPool *self)
{
  AhAgent *agent;

  g_mutex_lock (&self->lock);
  if (self->idle->len > 0)
    {
      guint index = g_array_index (self->idle, guint, self->idle->len - 1);

      g_array_set_size (self->idle, self->idle->len - 1);
      agent = g_ptr_array_index (self->slots, index);
    }
  else
    {
      agent = g_new0 (AhAgent, 1);
      agent->pool = self;
      agent->index = self->slots->len;
      g_ptr_array_add (self->slots, agent);
    }
  agent->state = AH_SLOT_STARTING;
  g_mutex_unlock (&self->lock);

  /* A new slot, or one whose state was sized for an earlier version of
   * the plugin, gets a buffer of the running version's size. */
  if (agent->state_mem == NULL ? self->desc->state_size > 0
                               : pool_agent_state_capacity (self, agent) < self->desc->state_size)
    ah_pool_agent_set_state (agent,
                             self->desc->state_size > 0
                             ? g_aligned_alloc0 (1, self->desc->state_size, AH_STATE_ALIGN) : NULL,
                             self->desc->state_size);

  return agent;
}

AhAgentId
ah_pool_spawn (AhPool  *self,
               GError **error)
{
  AhAgent *agent;
  AhAgentId id;

  g_return_val_if_fail (self != NULL, AH_AGENT_ID_NONE);

  ah_pool_lock_lifecycle (self);
  agent = pool_take_slot (self);
  if (!pool_agent_init (self, agent, error))
    {
      g_mutex_lock (&self->lock);
      self->init_failures++;
      g_mutex_unlock (&self->lock);
      pool_agent_release (self, agent);
      ah_pool_unlock_lifecycle (self);
      return AH_AGENT_ID_NONE;
    }
  pool_agent_go_live (self, agent);
  id = agent->id;
  pool_publish_event (self, "spawned", agent, NULL);
  ah_pool_unlock_lifecycle (self);

  return id;
}

gboolean
ah_pool_owns (AhPool   *self,
              AhAgentId id)
{
  gboolean owns;

  g_mutex_lock (&self->lock);
  owns = g_hash_table_contains (self->live, &id);
  g_mutex_unlock (&self->lock);

  return owns;
}

static void
pool_agent_stop (AhPool  *self,
                 AhAgent *agent)
{
  AhContext ctx = { .agent = agent, .call = NULL };

  /* Out of the groups first, so no new message is routed to it; then the
   * close dead-letters what is still queued and waits out a running
   * batch. Only then may finalize touch the state. */
  if (self->queue_group != NULL)
    ah_bus_group_remove (self->queue_group, agent->endpoint);
  if (self->broadcast_group != NULL)
    ah_bus_group_remove (self->broadcast_group, agent->endpoint);
  ah_bus_endpoint_close (self->bus, agent->endpoint);

  if (self->desc->agent_finalize != NULL)
    self->desc->agent_finalize (&ctx, agent->state_mem);

  g_mutex_lock (&self->lock);
  self->terminated++;
  g_mutex_unlock (&self->lock);
  pool_publish_event (self, "stopped", agent, NULL);
  pool_agent_release (self, agent);
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
  agent = g_hash_table_lookup (self->live, &id);
  if (agent != NULL)
    {
      g_hash_table_remove (self->live, &id);
      agent->state = AH_SLOT_STOPPING;
    }
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
  GHashTableIter iter;
  gpointer value;

  ah_pool_lock_lifecycle (self);
  g_mutex_lock (&self->lock);
  g_hash_table_iter_init (&iter, self->live);
  while (g_hash_table_iter_next (&iter, NULL, &value))
    {
      AhAgent *agent = value;

      agent->state = AH_SLOT_STOPPING;
      g_ptr_array_add (stopping, agent);
    }
  g_hash_table_remove_all (self->live);
  g_mutex_unlock (&self->lock);

  /* By index, so finalize order is deterministic. */
  for (guint i = 0; i < self->slots->len; i++)
    {
      AhAgent *agent = g_ptr_array_index (self->slots, i);

      if (agent->state == AH_SLOT_STOPPING)
        pool_agent_stop (self, agent);
    }
  ah_pool_unlock_lifecycle (self);
}

void
ah_pool_get_stats (AhPool      *self,
                   AhTypeStats *ret_stats)
{
  memset (ret_stats, 0, sizeof *ret_stats);
  ret_stats->name = self->type->name;
  ret_stats->pool_size = self->type->pool_size;

  g_mutex_lock (&self->lock);
  ret_stats->n_agents = g_hash_table_size (self->live);
  ret_stats->spawned = self->spawned;
  ret_stats->terminated = self->terminated;
  ret_stats->init_failures = self->init_failures;
  if (self->prewarm_end_us > 0)
    ret_stats->prewarm_ms = (self->prewarm_end_us - self->prewarm_start_us) / 1000.0;
  g_mutex_unlock (&self->lock);

  ret_stats->handled = __atomic_load_n (&self->handled, __ATOMIC_RELAXED);
  ret_stats->handler_failures = __atomic_load_n (&self->handler_failures, __ATOMIC_RELAXED);
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
  for (guint i = 0; i < self->slots->len; i++)
    {
      AhAgent *agent = g_ptr_array_index (self->slots, i);

      if (agent->state == AH_SLOT_READY)
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
  for (guint i = 0; i < self->slots->len; i++)
    {
      AhAgent *agent = g_ptr_array_index (self->slots, i);

      if (agent->state == AH_SLOT_READY)
        g_array_append_val (ids, agent->id);
    }
  g_mutex_unlock (&self->lock);

  return ids;
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
  AhContext ctx = { .agent = agent, .call = call };
  g_autoptr(GError) local_error = NULL;

  __atomic_add_fetch (&self->handled, n_messages, __ATOMIC_RELAXED);
  if (self->desc->handle_batch (&ctx, agent->state_mem, messages, n_messages, &local_error))
    return TRUE;

  __atomic_add_fetch (&self->handler_failures, 1, __ATOMIC_RELAXED);
  pool_publish_event (self, "failed", agent,
                      local_error != NULL ? local_error->message : "handle_batch returned FALSE");
  /* An agent failing is an event of the run, not a bug of the host:
   * logged as a message (shown by default), counted, and the run goes on. */
  g_message ("agent type '%s' agent %" G_GUINT64_FORMAT " failed a batch of %u: %s",
             self->type->name, agent->id, n_messages,
             local_error != NULL ? local_error->message : "handle_batch returned FALSE without a message");
  if (local_error != NULL)
    g_propagate_error (error, g_steal_pointer (&local_error));
  else
    g_set_error_literal (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                         "handle_batch returned FALSE without a message");
  return FALSE;
}

/* ---- parallel pre-warm -------------------------------------------------- */

typedef struct {
  GMutex   lock;
  GError  *error;        /* the first failure */
  gint     failed;       /* atomic: later chunks stop early */
} Prewarm;

typedef struct {
  Prewarm *prewarm;
  AhPool  *pool;
  guint    first;
  guint    end;
} PrewarmChunk;

static void
prewarm_chunk_run (gpointer data,
                   gpointer user_data)
{
  PrewarmChunk *chunk = data;
  Prewarm *prewarm = chunk->prewarm;
  AhPool *self = chunk->pool;
  gint64 start = g_get_monotonic_time ();

  for (guint i = chunk->first; i < chunk->end; i++)
    {
      AhAgent *agent = &self->block[i];
      GError *local_error = NULL;

      if (g_atomic_int_get (&prewarm->failed))
        break;

      /* The slots of the initial block are handed out by index here, not
       * through the idle list: each chunk owns its range. */
      agent->state = AH_SLOT_STARTING;
      if (!pool_agent_init (self, agent, &local_error))
        {
          agent->state = AH_SLOT_IDLE;
          if (agent->state_mem != NULL)
            memset (agent->state_mem, 0, self->desc->state_size);
          g_mutex_lock (&self->lock);
          self->init_failures++;
          g_mutex_unlock (&self->lock);
          g_mutex_lock (&prewarm->lock);
          if (prewarm->error == NULL)
            prewarm->error = local_error;
          else
            g_error_free (local_error);
          g_mutex_unlock (&prewarm->lock);
          g_atomic_int_set (&prewarm->failed, TRUE);
          break;
        }
      pool_agent_go_live (self, agent);
    }

  g_mutex_lock (&self->lock);
  if (self->prewarm_start_us == 0 || start < self->prewarm_start_us)
    self->prewarm_start_us = start;
  self->prewarm_end_us = MAX (self->prewarm_end_us, g_get_monotonic_time ());
  g_mutex_unlock (&self->lock);
}

gboolean
ah_pools_prewarm (AhPool  **pools,
                  guint     n_pools,
                  gdouble  *ret_total_ms,
                  GError  **error)
{
  g_autoptr(GArray) chunks = g_array_new (FALSE, FALSE, sizeof (PrewarmChunk));
  Prewarm prewarm = { 0 };
  GThreadPool *threads;
  guint n_threads, n_cpus = g_get_num_processors ();
  gint64 start = g_get_monotonic_time ();
  gboolean more = TRUE;

  g_mutex_init (&prewarm.lock);

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
          guint chunk_size = MAX (AH_PREWARM_MIN_CHUNK, (size + 2 * n_cpus - 1) / (2 * n_cpus));
          PrewarmChunk chunk = { &prewarm, self, round * chunk_size, 0 };

          if (!self->type->prewarm || chunk.first >= size)
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
        g_mutex_unlock (&pools[p]->lock);
      }

  if (chunks->len > 0)
    {
      /* Plugin inits may wait on I/O, so allow a thread per pool even on
       * few cores. */
      n_threads = MIN (chunks->len, MIN (AH_PREWARM_MAX_THREADS, MAX (n_pools, 2 * n_cpus)));
      threads = g_thread_pool_new (prewarm_chunk_run, NULL, (gint) n_threads, TRUE, NULL);
      for (guint i = 0; i < chunks->len; i++)
        g_thread_pool_push (threads, &g_array_index (chunks, PrewarmChunk, i), NULL);
      g_thread_pool_free (threads, FALSE, TRUE);
    }

  if (ret_total_ms != NULL)
    *ret_total_ms = (g_get_monotonic_time () - start) / 1000.0;

  if (prewarm.error != NULL)
    {
      /* Undo: stop what started, and give every untouched slot of the
       * initial blocks back to the idle lists. */
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
          g_mutex_unlock (&self->lock);
        }
      g_propagate_error (error, prewarm.error);
      g_mutex_clear (&prewarm.lock);
      return FALSE;
    }

  g_mutex_clear (&prewarm.lock);
  return TRUE;
}
