/* Pools: the agents of one agent type, their memory and their lifecycle.
 *
 * A pool owns a contiguous block of agent slots and plugin state,
 * allocated when the pool is created and reused until the pool is freed:
 * a terminated agent goes back to the pool and the next spawn takes it.
 * Each live agent is one endpoint on the bus.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include <agenthost/agenthost.h>
#include "ah-bus-private.h"
#include "ah-manifest-private.h"
#include "ah-offload-private.h"

G_BEGIN_DECLS

typedef struct _AhPool  AhPool;
typedef struct _AhAgent AhAgent;

typedef enum {
  AH_SLOT_IDLE = 0,    /* in the pool, no endpoint, state zeroed */
  AH_SLOT_STARTING,    /* agent_init running */
  AH_SLOT_READY,       /* live: an endpoint on the bus */
  AH_SLOT_STOPPING,    /* closing its endpoint, finalize running */
} AhSlotState;

struct _AhAgent {
  AhPool       *pool;
  AhEndpoint   *endpoint;     /* NULL unless READY */
  AhAgentId     id;           /* the endpoint's id while READY, else 0 */
  guint         index;        /* slot in the pool, stable for the slot's life */
  AhSlotState  state;        /* under the pool's lock */
  gpointer      state_mem;    /* the plugin's state_size bytes */
  /* The state's own allocation, when it is not a slice of the pool's
   * initial block (slots added by spawns, states rebuilt by a reload):
   * then state_mem is it, sized state_capacity. */
  gpointer      state_owned;
  gsize         state_capacity;
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
 * thread pool. On failure every agent started here is stopped again and
 * the error names the type, the plugin and the agent's reason. */
gboolean    ah_pools_prewarm       (AhPool **pools, guint n_pools, gdouble *ret_total_ms,
                                    GError **error);

/* Starts one agent: an idle slot when there is one, a new slot otherwise. */
AhAgentId   ah_pool_spawn          (AhPool *self, GError **error);
/* Stops one live agent of this pool and returns its slot to the pool. */
gboolean    ah_pool_terminate      (AhPool *self, AhAgentId id, GError **error);
gboolean    ah_pool_owns           (AhPool *self, AhAgentId id);
/* Stops every live agent (at host shutdown, after the bus stopped). */
void        ah_pool_terminate_all  (AhPool *self);
void        ah_pool_get_stats      (AhPool *self, AhTypeStats *ret_stats);
/* The ids of the live agents, by slot index. (element-type AhAgentId) */
GArray     *ah_pool_get_live_ids   (AhPool *self);

/* The host's offload pool, which the agents' ah_offload() use. */
void        ah_pool_set_offload_pool (AhPool *self, AhOffloadPool *offload);
AhOffloadPool *ah_pool_get_offload_pool (AhPool *self);

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
