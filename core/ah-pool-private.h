/* Pools: the agents of one agent type, their memory and their lifecycle.
 *
 * A pool owns a contiguous block of agent slots and plugin state,
 * allocated when the pool is created and reused until the pool is freed:
 * a terminated agent goes back to the pool and the next spawn takes it.
 * Each live agent is one endpoint on the bus.
 *
 * The pool does what happens to agents; the supervisor
 * (core/ah-supervisor.c) decides when: restarts beyond the failed agent,
 * stopping a type, autoscaling, the watchdog.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include <agenthost/agenthost.h>
#include "ah-bus-private.h"
#include "ah-manifest-private.h"
#include "ah-offload-private.h"

G_BEGIN_DECLS

typedef struct _AhPool       AhPool;
typedef struct _AhAgent      AhAgent;
typedef struct _AhSupervisor AhSupervisor;

typedef enum {
  AH_SLOT_IDLE = 0,    /* in the pool, no endpoint, state zeroed */
  AH_SLOT_STARTING,    /* agent_init running */
  AH_SLOT_READY,       /* live: an endpoint on the bus */
  AH_SLOT_STOPPING,    /* closing its endpoint, finalize running */
} AhSlotState;

/* What a live agent is doing; written only by the thread that runs its
 * hooks (its worker, or the supervisor while the agent is paused). */
typedef enum {
  AH_AGENT_ACTIVITY_WAITING = 0,   /* between two batches */
  AH_AGENT_ACTIVITY_HANDLING,      /* in handle_batch */
  AH_AGENT_ACTIVITY_RESTARTING,    /* finalize and init of a restart */
} AhAgentActivity;

/* One slot. Kept small: a million idle agents are a million of these.
 * Fields marked (atomic) are written by one thread at a time and read
 * by anyone with relaxed atomic loads: no lock on the handler path. */
struct _AhAgent {
  AhPool       *pool;
  AhEndpoint   *endpoint;     /* NULL unless READY */
  /* The endpoint's id while live; once the slot is IDLE, the id its last
   * agent had (for ah_host_get_agent_info), until the slot is reused. */
  AhAgentId     id;
  /* The plugin's state_size bytes: a slice of the pool's initial block,
   * or (slots added by spawns, states rebuilt by a reload) an allocation
   * of its own of state_capacity bytes, which the pool frees. */
  gpointer      state_mem;
  gint64        spawn_time_us;   /* g_get_monotonic_time() */
  gint64        last_active_us;  /* (atomic) end of its last handler call, or its spawn */
  guint64       handled;         /* (atomic) messages handed to it since its spawn */
  guint         index;        /* slot in the pool, stable for the slot's life */
  guint         restarts;        /* (atomic) since its spawn */
  guint         reported_depth;  /* autoscale: its share of the pool's depth; its worker only */
  guint32       state_capacity;  /* plugin states are at most 64 MiB */
  guint8        state;           /* AhSlotState, under the pool's lock */
  guint8        activity;        /* (atomic) AhAgentActivity */
  /* (atomic) TRUE once it is to be stopped after a failure (temporary
   * policy, or a restart whose init failed): its handler then passes its
   * messages on instead of running the plugin. */
  guint8        doomed;
};

/* Called when an agent asks the host to stop (ah_context_request_stop). */
typedef void (*AhPoolStopFunc) (int exit_code, gpointer user_data);

struct _AhContext {
  AhAgent     *agent;
  AhBusCall   *call;          /* NULL outside handle_batch */
  /* A reload runs the new version's hooks before the switch: they read
   * the new version's config (its schema's defaults). NULL: the pool's. */
  GHashTable  *config;
};

AhPool     *ah_pool_new            (AhBus *bus, const AhManifestAgentType *type,
                                    AhPlugin *plugin, AhPoolStopFunc stop_func,
                                    gpointer stop_data, GError **error);
void        ah_pool_free           (AhPool *self);
const char *ah_pool_get_name       (AhPool *self);
const AhManifestAgentType *ah_pool_get_type (AhPool *self);
const AhPluginDesc *ah_pool_get_desc (AhPool *self);

/* Starts the pool_size agents of every pool that pre-warms, all pools at
 * once and each large pool in several chunks at once, on a temporary
 * thread pool; the initial block of a pool that does not pre-warm is
 * touched the same way. On failure every agent started here is stopped
 * again and the error names the type, the plugin and the agent's reason. */
gboolean    ah_pools_prewarm       (AhPool **pools, guint n_pools, gdouble *ret_total_ms,
                                    GError **error);

/* Starts one agent: an idle slot when there is one, a new slot otherwise.
 * Refused with AH_HOST_ERROR_POOL_LIMIT at the type's pool max, with
 * AH_HOST_ERROR_TYPE_STOPPED once the type was stopped. */
AhAgentId   ah_pool_spawn          (AhPool *self, GError **error);
/* Starts @n_agents at once, in parallel chunks when there are many. Each
 * outcome goes to @results; one failing does not undo the others. Agents
 * past the pool max get AH_HOST_ERROR_POOL_LIMIT in their result. Returns
 * how many started; 0 with @error when not one slot could be had (stopped
 * type, pool max). */
guint       ah_pool_spawn_batch    (AhPool *self, guint n_agents, AhSpawnResult *results,
                                    GError **error);
/* Stops one live agent of this pool and returns its slot to the pool (or
 * frees it, beyond the idle cap). */
gboolean    ah_pool_terminate      (AhPool *self, AhAgentId id, GError **error);
gboolean    ah_pool_owns           (AhPool *self, AhAgentId id);
/* Stops every live agent (at host shutdown, after the bus stopped). */
void        ah_pool_terminate_all  (AhPool *self);
void        ah_pool_get_stats      (AhPool *self, AhTypeStats *ret_stats);
/* What the pool knows of agent @id, live or the last one of an idle
 * slot. FALSE if none of its slots had that id. */
gboolean    ah_pool_get_agent_info (AhPool *self, AhAgentId id, AhAgentInfo *ret_info);
/* The ids of the live agents, by slot index. (element-type AhAgentId) */
GArray     *ah_pool_get_live_ids   (AhPool *self);
guint       ah_pool_get_n_live     (AhPool *self);

/* The host's offload pool, which the agents' ah_offload() use. */
void        ah_pool_set_offload_pool (AhPool *self, AhOffloadPool *offload);
AhOffloadPool *ah_pool_get_offload_pool (AhPool *self);

/* ---- For the supervisor (core/ah-supervisor.c) ----------------------- */

/* The supervisor this pool reports failures, depth and watched calls to.
 * Set once, before the pool's first agent runs a batch. */
void        ah_pool_set_supervisor (AhPool *self, AhSupervisor *supervisor);
AhBus      *ah_pool_get_bus        (AhPool *self);
/* one_for_all: pauses every live agent but @except (the failed one,
 * restarted already), restarts each in place and resumes them. Never
 * from a bus worker. Returns how many were restarted. */
guint       ah_pool_restart_others (AhPool *self, AhAgentId except);
/* The type exhausted its restart budget: no spawn from now on. Cheap,
 * from any thread; ah_pool_terminate_all() then stops the agents. */
void        ah_pool_mark_stopped   (AhPool *self);
gboolean    ah_pool_is_stopped     (AhPool *self);
/* Autoscale: TRUE once if the handlers found the pool's mailboxes deep
 * for long enough since the last call; the mean depth then is stored in
 * @ret_mean_depth. Starts a new observation. */
gboolean    ah_pool_take_scale_request (AhPool *self, gdouble *ret_mean_depth);
/* Autoscale: stops live agents that did not handle anything since
 * @idle_since_us, most recent slots first, never below the type's min.
 * Lossless: an agent leaves its groups first and is stopped only if its
 * mailbox is then empty, else it rejoins. Returns how many stopped;
 * @ret_next_us gets the earliest moment another agent could be idle long
 * enough (G_MAXINT64: none, the pool is at its min). Never from a bus
 * worker. */
guint       ah_pool_shrink         (AhPool *self, gint64 idle_since_us, gint64 idle_us,
                                    gint64 *ret_next_us);
/* Watchdog: reports every handler call of this pool running past its
 * deadline at @now_us and not reported yet to @func, and returns the
 * earliest deadline of the calls still running and not reported
 * (G_MAXINT64: none). */
typedef void (*AhPoolOverrunFunc) (AhPool *pool, AhAgentId id, guint index,
                                   gint64 running_us, gpointer user_data);
gint64      ah_pool_watch_scan     (AhPool *self, gint64 now_us, AhPoolOverrunFunc func,
                                    gpointer user_data);

/* ---- For the reload code (core/ah-reload.c) only ------------------- */

AhPlugin   *ah_pool_get_plugin       (AhPool *self);
/* Held while agents are spawned, terminated or switched: a reload never
 * races a spawn. Never held while a handler runs. */
void        ah_pool_lock_lifecycle   (AhPool *self);
void        ah_pool_unlock_lifecycle (AhPool *self);
/* The live agents, by slot index. Call with the lifecycle lock held: the
 * set cannot change until it is released. (element-type AhAgent) */
GPtrArray  *ah_pool_get_live_agents  (AhPool *self);
/* Gives @agent the state buffer @state_mem (allocated with
 * g_aligned_alloc0, AH_STATE_ALIGN, of @capacity bytes; taken over),
 * freeing the one it had if it owned it. */
void        ah_pool_agent_set_state  (AhAgent *agent, gpointer state_mem, gsize capacity);
/* Switches the pool to @plugin (a reference is taken, the old one
 * dropped) and @config (taken over). Lifecycle lock held, every live
 * agent paused. */
void        ah_pool_replace_plugin   (AhPool *self, AhPlugin *plugin, GHashTable *config);
#define AH_STATE_ALIGN 16

/* The config value of @key for the agents of @pool, or NULL. */
const char *ah_pool_lookup_config  (AhPool *self, const char *key);
void        ah_pool_request_stop   (AhPool *self, int exit_code);

G_END_DECLS
