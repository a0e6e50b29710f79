/* agenthost: the embedding API. A program hosts a system of agents with
 * this, exactly as the `agenthost` command does.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#if !defined (AH_INSIDE) && !defined (AH_COMPILATION)
#error "Only <agenthost/agenthost.h> can be included directly."
#endif

#include <agenthost/ah-types.h>
#include <agenthost/ah-plugin.h>
#include <agenthost/ah-manifest.h>

G_BEGIN_DECLS

#define AH_HOST_ERROR (ah_host_error_quark ())
typedef enum {
  AH_HOST_ERROR_FAILED,
  AH_HOST_ERROR_PLUGIN,        /* a plugin did not load; the message names it */
  AH_HOST_ERROR_PREWARM,       /* an agent's init failed while pre-warming */
  AH_HOST_ERROR_UNKNOWN_TYPE,
  AH_HOST_ERROR_UNKNOWN_AGENT,
  AH_HOST_ERROR_STATE,         /* not allowed in the host's current state */
  AH_HOST_ERROR_SUBJECT,       /* not a valid subject or pattern */
  AH_HOST_ERROR_OVERFLOW,      /* a mailbox was full under the "fail" policy */
  AH_HOST_ERROR_TIMEOUT,       /* a request got no reply in time */
  AH_HOST_ERROR_NO_RESPONDERS, /* a request had nobody to go to */
  AH_HOST_ERROR_RELOAD,        /* a reload was refused or rolled back; the old version runs on */
  AH_HOST_ERROR_POOL_LIMIT,    /* the type's pool is at its `max` */
  AH_HOST_ERROR_TYPE_STOPPED,  /* the type exhausted its restart budget and was stopped */
} AhHostError;

/* Where one agent is in its life. An agent is SPAWNING while its init
 * runs, READY while alive with nothing to do, BUSY while its handler
 * runs, STOPPING while its finalize runs. IDLE is a slot back in its
 * pool: memory kept and reused by the next spawn, no agent alive. */
typedef enum {
  AH_AGENT_STATE_SPAWNING,
  AH_AGENT_STATE_READY,
  AH_AGENT_STATE_BUSY,
  AH_AGENT_STATE_IDLE,
  AH_AGENT_STATE_STOPPING,
} AhAgentState;

AH_API const char *ah_agent_state_to_string (AhAgentState state);

typedef struct {
  AhAgentId    id;
  const char  *type_name;      /* owned by the host */
  AhAgentState state;
  guint        index;          /* the agent's slot in its pool */
  gint64       spawn_time_us;  /* g_get_monotonic_time() when it was spawned */
  gint64       last_active_us; /* end of its last handler call, or its spawn */
  guint64      handled;        /* messages handled since its spawn */
  guint        restarts;       /* times it was restarted since its spawn */
  /*< private >*/
  guint64      reserved[4];
} AhAgentInfo;

/* One agent of a batch or wave spawn: its id, or why it did not start. */
typedef struct {
  AhAgentId  id;               /* AH_AGENT_ID_NONE when it failed */
  GError    *error;            /* (owned) (nullable) its failure */
} AhSpawnResult;

AH_API void ah_spawn_results_clear (AhSpawnResult *results, guint n_results);

typedef struct _AhHost AhHost;

/* Counters of a whole run. The four message counters always satisfy
 * accepted == delivered + dead_lettered + failed + in_flight. One
 * publish that reaches k agents is k accepted messages (one per
 * recipient); one that reaches nobody is one, dead-lettered. */
typedef struct {
  guint64 published;       /* publish, send, request and reply calls */
  guint64 accepted;
  guint64 delivered;       /* handed to a handler that returned TRUE */
  guint64 dead_lettered;   /* no recipient, recipient gone, late reply */
  guint64 failed;          /* refused (full mailbox) or handler failure */
  guint64 in_flight;
  guint64 batches;         /* handler calls */
  guint64 requests;
  guint64 request_timeouts;
  /* Time from publish to the start of the handler call, in microseconds. */
  gdouble latency_p50_us;
  gdouble latency_p95_us;
  gdouble latency_p99_us;
  gdouble latency_p999_us;
  gdouble latency_max_us;
  gdouble prewarm_ms;      /* all pools, wall clock */
  gdouble elapsed_s;       /* from the end of pre-warm to now, or to the stop */
  guint   n_agents;        /* alive now */
  guint   n_workers;
  guint   n_types;
  guint   reloads;         /* plugin versions switched to */
  guint   reload_failures; /* reloads refused or rolled back */
  /* The longest any bus worker waited for its own lock, held by another
   * thread (a publisher, a reload pausing an agent): how long the bus
   * held a worker up. */
  gdouble worker_stall_max_us;
  /* Agents a bus worker out of work took over from a busier one, to run
   * from then on. */
  guint64 steals;
  /*< private >*/
  guint64 reserved[5];
} AhHostStats;

typedef struct {
  const char *name;        /* owned by the host */
  guint   n_agents;        /* alive now */
  guint   pool_size;
  guint64 spawned;         /* agents started, pre-warm included */
  guint64 terminated;
  guint64 init_failures;
  guint64 handled;         /* messages handed to this type's handlers */
  guint64 handler_failures;
  gdouble prewarm_ms;      /* this pool alone, wall clock */
  /* Pools (issue: pools, spawning, lifecycle and supervision) */
  guint   n_idle;          /* slots back in the pool, ready for reuse */
  guint   pool_min;
  guint   pool_max;        /* G_MAXUINT: unbounded */
  guint64 scaled_up;       /* agents added by the autoscaler */
  guint64 scaled_down;     /* agents stopped by the autoscaler */
  /* Supervision */
  guint64 restarted;       /* agent restarts, by any policy */
  guint64 failed;          /* agent failures: init, or handler returned FALSE with an
                            * error other than AH_AGENT_ERROR_INVALID_MESSAGE */
  guint64 retried;         /* messages of failed batches delivered once more */
  guint64 failed_messages; /* messages of failed batches dead-lettered */
  guint64 deadline_overruns; /* handler calls the watchdog reported */
  gboolean stopped;        /* the type exhausted its restart budget */
  /* Handler call durations, in microseconds (log-bucketed). */
  gdouble handler_p50_us;
  gdouble handler_p99_us;
  /* From a failure to the agent running again (one_for_one), p50. */
  gdouble restart_p50_us;
  /* delivered / (delivered + failed) of this type's messages, from exact
   * counts; 1.0 when it handled none. */
  gdouble success_rate;
  /*< private >*/
  guint64 reserved[8];
} AhTypeStats;

/* Called on a bus worker for each message matching a host subscription.
 * The message is borrowed for the call. Must not block. */
typedef void (*AhHostMessageFunc) (const AhMessage *message, gpointer user_data);

AH_API GQuark    ah_host_error_quark     (void);
/* Creates a host for @manifest (transfer full). Loads every plugin; no
 * agent starts yet. */
AH_API AhHost   *ah_host_new             (AhManifest *manifest, GError **error);
/* Pre-warms every pool (all pools in parallel), starts the bus workers,
 * then publishes "$SYS.host.started" (system priority). */
AH_API gboolean  ah_host_start           (AhHost *self, GError **error);
/* Blocks until the run ends: ah_host_request_stop(), an agent's
 * ah_context_request_stop(), or, when the manifest sets
 * `stop_when_idle: true`, the system going idle (no message in flight,
 * no request or offload pending). Then drains and stops. Returns the
 * exit code. */
AH_API int       ah_host_run             (AhHost *self);
/* Thread-safe, not async-signal-safe. */
AH_API void      ah_host_request_stop    (AhHost *self, int exit_code);
/* Waits until nothing is in flight and no request or offload is
 * pending, or until @timeout_us (-1: forever) passes. Returns TRUE when
 * idle. */
AH_API gboolean  ah_host_wait_idle       (AhHost *self, gint64 timeout_us);

/* Publishing from outside any agent. Under the "block" overflow policy
 * these wait for room in full mailboxes. */
AH_API gboolean  ah_host_publish         (AhHost *self, const char *subject,
                                          gconstpointer data, gsize size, GError **error);
AH_API gboolean  ah_host_send            (AhHost *self, AhAgentId to, const char *subject,
                                          gconstpointer data, gsize size, GError **error);
/* Makes a request from outside any agent and waits for its outcome:
 * the reply's payload, or NULL with AH_HOST_ERROR_TIMEOUT or
 * AH_HOST_ERROR_NO_RESPONDERS. Blocks the calling thread: never call it
 * from a handler. */
AH_API GBytes   *ah_host_request         (AhHost *self, const char *subject,
                                          gconstpointer data, gsize size,
                                          guint timeout_ms, GError **error);
/* Observes traffic: @func runs for every message on subjects matching
 * @pattern, in addition to the agents subscribed. Returns an id > 0. */
AH_API guint     ah_host_subscribe       (AhHost *self, const char *pattern,
                                          AhHostMessageFunc func, gpointer user_data,
                                          GError **error);

/* ---- Hot reload -------------------------------------------------------
 *
 * A reload loads the plugin file of @type_name again - from a private
 * copy, so the build may overwrite the file at once - beside the running
 * version, checks it (ABI, name, the type's config against its schema),
 * then switches every agent of every type using that file between two of
 * its batches: its state goes through state_snapshot/state_restore, or
 * is kept as is when the new version declares
 * AH_PLUGIN_FLAG_STATE_LAYOUT_STABLE with the same state size, or is
 * initialised afresh (logged). Mailboxes are untouched: no message is
 * lost or reordered. If anything fails, every agent stays on the old
 * version with its old state, "$SYS.reload.failed" is published and
 * FALSE returned with AH_HOST_ERROR_RELOAD; on success
 * "$SYS.reload.done" is published. The old module is closed once no
 * agent, offload or message can run its code. Thread-safe; reloads are
 * serialised; blocks the calling thread (never call it from a handler). */
AH_API gboolean  ah_host_reload          (AhHost *self, const char *type_name, GError **error);
/* Reloads every plugin whose file content differs from the version
 * running (SIGHUP does this). Returns how many plugin files were
 * reloaded; @error gets the first failure (the others are still tried). */
AH_API guint     ah_host_reload_changed  (AhHost *self, GError **error);
/* Watches every plugin file and reloads a plugin once its file has been
 * quiet for @debounce_ms after a change. A file that is incomplete or not
 * a valid plugin is logged and skipped: the old version runs on. */
AH_API gboolean  ah_host_watch           (AhHost *self, guint debounce_ms, GError **error);

/* Starts one more agent of @type_name: an idle pooled one if there is
 * one, a new one otherwise. */
AH_API AhAgentId ah_host_spawn           (AhHost *self, const char *type_name, GError **error);
/* Stops an agent: messages still in its mailbox are dead-lettered, its
 * finalize hook runs, and it goes back to its pool. */
AH_API gboolean  ah_host_terminate       (AhHost *self, AhAgentId agent, GError **error);
/* Starts @n_agents agents of @type_name at once (in parallel for large
 * batches). Each agent's outcome goes to @results (@n_agents of them,
 * caller-allocated; clear with ah_spawn_results_clear()): one agent
 * failing does not undo the others. Returns how many started; FALSE-like
 * 0 with @error only when the whole call is refused (unknown type,
 * host not running, the pool's max reached before the first agent). */
AH_API guint     ah_host_spawn_batch     (AhHost *self, const char *type_name, guint n_agents,
                                          AhSpawnResult *results, GError **error);
/* The same in waves of @wave_size agents, waiting @pause_ms between
 * two waves (controlled ramp-up). Blocks the calling thread for the
 * pauses: never call it from a handler. */
AH_API guint     ah_host_spawn_waves     (AhHost *self, const char *type_name, guint n_agents,
                                          guint wave_size, guint pause_ms,
                                          AhSpawnResult *results, GError **error);
/* What the host knows of one live agent (or of an idle slot's last
 * agent: then state is IDLE). */
AH_API gboolean  ah_host_get_agent_info  (AhHost *self, AhAgentId agent, AhAgentInfo *ret_info,
                                          GError **error);

AH_API void      ah_host_get_stats       (AhHost *self, AhHostStats *ret_stats);
AH_API guint     ah_host_get_n_types     (AhHost *self);
AH_API gboolean  ah_host_get_type_stats  (AhHost *self, guint index, AhTypeStats *ret_stats);
/* The end-of-run summary, as text for a terminal or as a JSON object. */
AH_API char     *ah_host_format_summary  (AhHost *self);
AH_API char     *ah_host_format_summary_json (AhHost *self);
/* Stops the run if it is running and frees everything. */
AH_API void      ah_host_free            (AhHost *self);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AhHost, ah_host_free)

G_END_DECLS
