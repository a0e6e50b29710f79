/* Manifests as plain structs: what ah_manifest_load() produces.
 *
 * The manifest code only parses and validates; it never touches plugins
 * or the bus. Positions are 1-based, for FILE:LINE:COL messages.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include <agenthost/agenthost.h>

G_BEGIN_DECLS

typedef struct {
  guint line;
  guint column;
} AhManifestPos;

/* One scalar of an agent type's `config:` mapping. Nested mappings are
 * flattened to dotted keys ("limits.max"), sequences to indices
 * ("words.0", "words.1"). */
typedef struct {
  char          *key;
  char          *value;
  AhManifestPos  pos;          /* of the value */
} AhManifestConfigEntry;

typedef struct {
  char          *pattern;      /* a valid subject pattern */
  AhDelivery     delivery;
  AhManifestPos  pos;
} AhManifestSubscription;

/* `supervision: policy:` - what happens to a type's agents when one of
 * them fails (its agent_init or handle_batch returns FALSE), after
 * Erlang/OTP's supervisor strategies. */
typedef enum {
  AH_RESTART_ONE_FOR_ONE,   /* restart the failed agent only (default) */
  AH_RESTART_ONE_FOR_ALL,   /* restart every agent of the type */
  AH_RESTART_TEMPORARY,     /* no restart: the failed agent is stopped */
} AhRestartPolicy;

/* `supervision: failed_messages:` - the messages of a failed batch. */
typedef enum {
  AH_FAILED_MESSAGES_RETRY,        /* once more, on another agent when there is one (default) */
  AH_FAILED_MESSAGES_DEAD_LETTER,  /* dead-lettered, counted failed */
} AhFailedMessages;

/* A type's pool bounds: `pool: {min, max, idle_cap}`. */
#define AH_MANIFEST_POOL_UNBOUNDED G_MAXUINT
/* A type's `autoscale:` defaults. */
#define AH_MANIFEST_SCALE_UP_DEPTH_DEFAULT      64
#define AH_MANIFEST_SCALE_UP_AFTER_MS_DEFAULT   50
#define AH_MANIFEST_SCALE_DOWN_IDLE_MS_DEFAULT  2000
#define AH_MANIFEST_SCALE_STEP_DEFAULT          1
/* A type's `supervision:` defaults: OTP's intensity and period, in ms. */
#define AH_MANIFEST_MAX_RESTARTS_DEFAULT        3
#define AH_MANIFEST_RESTART_PERIOD_MS_DEFAULT   5000

typedef struct {
  char          *name;         /* the type's name: the key under `agents:` */
  char          *plugin;       /* as written: a path (has a '/') or a bare plugin name */
  guint          pool_size;    /* agents started with the system, >= 1 */
  gboolean       prewarm;      /* create them before traffic starts (default TRUE) */
  GPtrArray     *subscriptions;  /* (element-type AhManifestSubscription) */
  GPtrArray     *config;       /* (element-type AhManifestConfigEntry) in file order */

  /* `pool:` - min <= pool_size <= max, idle_cap <= max. */
  guint          pool_min;     /* autoscaling never goes below; default pool_size */
  guint          pool_max;     /* spawns beyond are refused; default AH_MANIFEST_POOL_UNBOUNDED */
  guint          idle_cap;     /* stopped agents kept for reuse; default AH_MANIFEST_POOL_UNBOUNDED */

  /* `autoscale:` - off unless the mapping is present (and not `enabled: false`). */
  gboolean       autoscale;
  guint          scale_up_depth;      /* mean queued messages per agent that is "deep" */
  guint          scale_up_after_ms;   /* deep for this long: grow by scale_step */
  guint          scale_down_idle_ms;  /* an agent idle this long is stopped, down to pool_min */
  guint          scale_step;          /* agents added per decision, >= 1 */

  /* `supervision:` */
  AhRestartPolicy  restart_policy;
  guint            max_restarts;      /* within restart_period_ms; then the type stops */
  guint            restart_period_ms;
  AhFailedMessages failed_messages;
  guint            handler_deadline_ms; /* watchdog; 0: off */
  gboolean         required;          /* the type stopping ends the run, non-zero */
  AhManifestPos  pos;          /* of the type's key */
  AhManifestPos  plugin_pos;   /* of the plugin value */
} AhManifestAgentType;

typedef struct {
  guint          n_workers;          /* 0: one per CPU */
  guint          publish_batch;      /* default 256 */
  guint          handler_batch;      /* default 32 */
  guint          mailbox_capacity;   /* default 1024 */
  AhOverflow     overflow;           /* default AH_OVERFLOW_BLOCK */
  guint          drain_timeout_ms;   /* default 5000 */
  gboolean       pin_workers;        /* each worker on a CPU of its own; default FALSE */
} AhManifestBus;

/* The manifest's `offload:` mapping: the I/O threads of ah_offload(). */
typedef struct {
  guint          n_threads;          /* default 4 */
  guint          queue_capacity;     /* offloads waiting or running at once; default 1024 */
} AhManifestOffload;

#define AH_MANIFEST_OFFLOAD_THREADS_MAX 256
#define AH_MANIFEST_OFFLOAD_QUEUE_MAX   1000000

/* `watch_debounce_ms`: how long a plugin file stays quiet before a
 * watched reload; a minute is beyond any build's pause between writes. */
#define AH_MANIFEST_WATCH_DEBOUNCE_DEFAULT 200
#define AH_MANIFEST_WATCH_DEBOUNCE_MAX     60000

struct _AhManifest {
  char          *path;               /* as given, for messages */
  char          *base_dir;           /* absolute directory of the manifest */
  char          *name;
  char          *description;        /* may be NULL */
  GPtrArray     *plugin_dirs;        /* (element-type utf8) absolute, from `plugin_path:` */
  GPtrArray     *types;              /* (element-type AhManifestAgentType) in file order */
  AhManifestBus  bus;
  gboolean       stop_when_idle;     /* end the run when the system goes idle */
  guint          run_timeout_ms;     /* 0: none; the run stops after this long */
  AhManifestOffload offload;
  gboolean       watch;              /* reload plugins when their files change */
  guint          watch_debounce_ms;  /* default AH_MANIFEST_WATCH_DEBOUNCE_DEFAULT */
};

/* Cap on YAML events per manifest (nodes, collection ends, documents), so
 * no input within the other caps can make parsing slow. */
#define AH_MANIFEST_MAX_EVENTS 100000

const AhManifestAgentType *ah_manifest_get_type        (AhManifest *self, guint index);
const AhManifestAgentType *ah_manifest_find_type       (AhManifest *self, const char *name);
/* The raw value of a config key of @type, or NULL. */
const AhManifestConfigEntry *ah_manifest_type_find_config (const AhManifestAgentType *type,
                                                           const char *key);

G_END_DECLS
