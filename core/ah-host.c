/* The host: one manifest's system, running.
 *
 * Ties the parts together and owns their order: load every plugin (and
 * fail before anything starts if one is bad), make a pool per agent type
 * with its subscriptions, pre-warm all pools at once, start the bus
 * workers, announce "$SYS.host.started", then wait - on a condition
 * variable, never polling - for a stop request, the idle system or the
 * run timeout; then drain the bus and stop every agent.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-host-private.h"
#include "ah-loader-private.h"
#include "ah-config-private.h"
#include "ah-reload-private.h"
#include "ah-supervisor-private.h"
#include "ah-watch-private.h"

#include <string.h>

#define AH_SUBJECT_HOST_STARTED "$SYS.host.started"

G_DEFINE_QUARK (ah-host-error-quark, ah_host_error)

typedef enum {
  HOST_NEW,
  HOST_STARTED,     /* pools warm, bus running */
  HOST_STOPPING,    /* no longer accepting outside publishes; draining */
  HOST_STOPPED,
} HostState;

typedef enum {
  STOP_NONE,
  STOP_IDLE,        /* stop_when_idle and nothing left to do */
  STOP_AGENT,       /* an agent called ah_context_request_stop() */
  STOP_HOST,        /* ah_host_request_stop(): the embedding program, a signal */
  STOP_TIMEOUT,     /* the manifest's run_timeout_ms */
  STOP_SUPERVISION, /* a required agent type exhausted its restart budget */
} StopReason;

static const char * const stop_reason_names[] = {
  [STOP_NONE] = "not stopped",
  [STOP_IDLE] = "idle",
  [STOP_AGENT] = "agent request",
  [STOP_HOST] = "host request",
  [STOP_TIMEOUT] = "run timeout",
  [STOP_SUPERVISION] = "supervision",
};

typedef struct {
  AhHostMessageFunc func;
  gpointer          user_data;
} HostObserver;

struct _AhHost {
  AhManifest  *manifest;          /* (owned) */
  GHashTable  *plugins;           /* path -> AhPlugin (owned) */
  AhBus       *bus;
  AhOffloadPool *offload;         /* the agents' ah_offload() threads */
  AhPool     **pools;
  guint        n_pools;
  AhSupervisor *supervisor;       /* restarts, autoscale, the watchdog */
  GPtrArray   *observers;         /* (element-type HostObserver) (owned) */

  GMutex       reload_lock;       /* one reload at a time; stop waits for it */
  AhWatch     *watch;             /* NULL unless ah_host_watch() */
  guint        reloads;           /* under @lock */
  guint        reload_failures;   /* under @lock */

  GMutex       lock;
  GCond        cond;              /* stop requested, idle, or the run ended */
  HostState    state;
  StopReason   stop_reason;
  gint         running;           /* (atomic) host_is_running_locked(), for checks without @lock */
  char        *stop_detail;       /* why, beyond the reason; may be NULL */
  int          exit_code;
  gdouble      prewarm_ms;
  gint64       run_start_us;      /* the bus started */
  gint64       run_end_us;        /* the bus stopped; 0 while running */
};

/* ---- plugins -------------------------------------------------------------- */

/* Finds and opens the plugin of @type, once per file: two agent types on
 * one plugin share one loaded module. The error is one manifest line. */
static AhPlugin *
host_load_plugin (AhManifest                *manifest,
                  const AhManifestAgentType *type,
                  GHashTable                *cache,
                  gboolean                   private_copy,
                  GError                   **error)
{
  g_autoptr(GError) local_error = NULL;
  g_autofree char *path = NULL;
  g_autofree const char **dirs = NULL;
  guint n_dirs = manifest->plugin_dirs != NULL ? manifest->plugin_dirs->len : 0;
  AhPlugin *plugin;

  dirs = g_new0 (const char *, n_dirs + 1);
  for (guint i = 0; i < n_dirs; i++)
    dirs[i] = g_ptr_array_index (manifest->plugin_dirs, i);

  path = ah_plugin_find (type->plugin, manifest->base_dir, dirs, &local_error);
  if (path != NULL)
    {
      plugin = g_hash_table_lookup (cache, path);
      if (plugin == NULL)
        {
          /* A running host loads every version, the first included, from
           * a private copy: a plugin file overwritten in place (cp, not a
           * linker's new file) would otherwise pull the code from under
           * the running agents (SIGBUS). Checking a manifest needs no copy. */
          plugin = private_copy ? ah_plugin_open_copy (path, &local_error)
                                : ah_plugin_open (path, &local_error);
          if (plugin != NULL)
            g_hash_table_insert (cache, g_steal_pointer (&path), plugin);
        }
      /* The type's config is checked against the plugin's schema here, so
       * validate and run refuse the same manifests. */
      if (plugin != NULL)
        return ah_config_check (manifest, type, ah_plugin_get_desc (plugin), error) ? plugin : NULL;
    }

  g_set_error (error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_PLUGIN,
               "%s:%u:%u: error: agent type '%s': %s", manifest->path,
               type->plugin_pos.line, type->plugin_pos.column, type->name,
               local_error->message);
  return NULL;
}

static GHashTable *
host_plugin_cache_new (void)
{
  return g_hash_table_new_full (g_str_hash, g_str_equal, g_free,
                                (GDestroyNotify) ah_plugin_unref);
}

gboolean
ah_manifest_check_plugins (AhManifest *self,
                           GError    **error)
{
  g_autoptr(GHashTable) cache = NULL;

  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  cache = host_plugin_cache_new ();
  for (guint i = 0; i < self->types->len; i++)
    if (host_load_plugin (self, g_ptr_array_index (self->types, i), cache, FALSE, error) == NULL)
      return FALSE;

  return TRUE;
}

/* ---- lifecycle -------------------------------------------------------------- */

static void
host_on_idle (gpointer user_data)
{
  AhHost *self = user_data;

  g_mutex_lock (&self->lock);
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
}

/* Started and not asked to stop. Lock held. */
static gboolean
host_is_running_locked (AhHost *self)
{
  return self->state == HOST_STARTED && self->stop_reason == STOP_NONE;
}

/* After each change of the state or the stop reason, under the lock: the
 * calls from outside (spawn, publish) check it without taking the lock,
 * which was a lock and an unlock per ah_host_spawn(). */
static void
host_note_running_locked (AhHost *self)
{
  g_atomic_int_set (&self->running, host_is_running_locked (self));
}

/* Records the first stop request (@detail, taken over, says more than
 * the reason); later ones change nothing. */
static void
host_request_stop_full (AhHost     *self,
                        StopReason  reason,
                        int         exit_code,
                        char       *detail)
{
  g_mutex_lock (&self->lock);
  if (self->stop_reason == STOP_NONE)
    {
      self->stop_reason = reason;
      self->exit_code = exit_code;
      self->stop_detail = g_steal_pointer (&detail);
      host_note_running_locked (self);
    }
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
  g_free (detail);
}

static void
host_request_stop (AhHost     *self,
                   StopReason  reason,
                   int         exit_code)
{
  host_request_stop_full (self, reason, exit_code, NULL);
}

/* A type exhausted its restart budget (the supervisor logged and
 * announced it): a required one ends the run, non-zero. */
static void
host_on_type_stopped (AhPool     *pool,
                      const char *reason,
                      gpointer    user_data)
{
  const AhManifestAgentType *type = ah_pool_get_type (pool);

  if (type->required)
    host_request_stop_full (user_data, STOP_SUPERVISION, 1,
                            g_strdup_printf ("required agent type '%s' stopped: %s",
                                             type->name, reason));
}

static void
host_on_agent_stop (int      exit_code,
                    gpointer user_data)
{
  host_request_stop (user_data, STOP_AGENT, exit_code);
}

void
ah_host_request_stop (AhHost *self,
                      int     exit_code)
{
  g_return_if_fail (self != NULL);

  host_request_stop (self, STOP_HOST, exit_code);
}

AhHost *
ah_host_new (AhManifest *manifest,
             GError    **error)
{
  g_autoptr(AhHost) self = NULL;
  AhBusConfig config = { 0 };

  g_return_val_if_fail (manifest != NULL, NULL);
  g_return_val_if_fail (error == NULL || *error == NULL, NULL);

  self = g_new0 (AhHost, 1);
  self->manifest = manifest;
  self->plugins = host_plugin_cache_new ();
  self->observers = g_ptr_array_new_with_free_func (g_free);
  g_mutex_init (&self->lock);
  g_mutex_init (&self->reload_lock);
  g_cond_init (&self->cond);

  /* Every plugin loads before anything else happens, so a bad one stops
   * the start with nothing to undo. */
  for (guint i = 0; i < manifest->types->len; i++)
    {
      g_autoptr(GError) local_error = NULL;

      if (host_load_plugin (manifest, g_ptr_array_index (manifest->types, i),
                            self->plugins, TRUE, &local_error) == NULL)
        {
          /* Only a plugin that did not load is the host's PLUGIN error; a
           * config its schema refuses is the manifest's fault and keeps
           * its code, so `run` and `validate` report it alike. */
          if (g_error_matches (local_error, AH_MANIFEST_ERROR, AH_MANIFEST_ERROR_PLUGIN))
            g_set_error_literal (error, AH_HOST_ERROR, AH_HOST_ERROR_PLUGIN, local_error->message);
          else
            g_propagate_error (error, g_steal_pointer (&local_error));
          return NULL;
        }
    }

  config.n_workers = manifest->bus.n_workers;
  config.publish_batch = manifest->bus.publish_batch;
  config.handler_batch = manifest->bus.handler_batch;
  config.mailbox_capacity = manifest->bus.mailbox_capacity;
  config.overflow = manifest->bus.overflow;
  config.pin_workers = manifest->bus.pin_workers;
  self->bus = ah_bus_new (&config);
  ah_bus_set_idle_func (self->bus, host_on_idle, self);
  self->offload = ah_offload_pool_new (self->bus, manifest->offload.n_threads,
                                       manifest->offload.queue_capacity);

  self->pools = g_new0 (AhPool *, manifest->types->len);
  for (guint i = 0; i < manifest->types->len; i++)
    {
      const AhManifestAgentType *type = g_ptr_array_index (manifest->types, i);
      AhPlugin *plugin = host_load_plugin (manifest, type, self->plugins, TRUE, error);

      g_assert (plugin != NULL);   /* loaded above, now from the cache */
      self->pools[i] = ah_pool_new (self->bus, type, plugin, host_on_agent_stop, self, error);
      if (self->pools[i] == NULL)
        return NULL;
      ah_pool_set_offload_pool (self->pools[i], self->offload);
      self->n_pools++;
    }
  self->supervisor = ah_supervisor_new (self->pools, self->n_pools, host_on_type_stopped, self);
  for (guint i = 0; i < self->n_pools; i++)
    ah_pool_set_supervisor (self->pools[i], self->supervisor);

  return g_steal_pointer (&self);
}

gboolean
ah_host_start (AhHost  *self,
               GError **error)
{
  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  if (self->state != HOST_NEW)
    {
      g_set_error_literal (error, AH_HOST_ERROR, AH_HOST_ERROR_STATE, "the host was already started");
      return FALSE;
    }

  if (!ah_pools_prewarm (self->pools, self->n_pools, &self->prewarm_ms, error))
    return FALSE;
  g_debug ("pre-warmed %u agent types in %.3f ms", self->n_pools, self->prewarm_ms);

  g_mutex_lock (&self->lock);
  self->state = HOST_STARTED;
  host_note_running_locked (self);
  self->run_start_us = g_get_monotonic_time ();
  g_mutex_unlock (&self->lock);
  ah_bus_start (self->bus);
  ah_supervisor_start (self->supervisor);

  /* An event, at system priority: it overtakes any data already queued,
   * and a system where nobody listens for it does not count it. */
  ah_bus_publish_event (self->bus, AH_SUBJECT_HOST_STARTED, "", 0);

  return TRUE;
}

/* Drains, stops the workers and every agent. Idempotent. */
static void
host_stop (AhHost *self)
{
  g_mutex_lock (&self->lock);
  if (self->state != HOST_STARTED)
    {
      g_mutex_unlock (&self->lock);
      return;
    }
  self->state = HOST_STOPPING;
  host_note_running_locked (self);
  g_mutex_unlock (&self->lock);

  /* No reload starts from here on (they check the state), and one under
   * way finishes before anything below is torn down. */
  g_clear_pointer (&self->watch, ah_watch_free);
  g_mutex_lock (&self->reload_lock);
  g_mutex_unlock (&self->reload_lock);

  /* Offloads first, while the bus still runs: the running ones are
   * cancelled and their outcomes still reach their agents, which the
   * drain below then handles. */
  ah_offload_pool_stop (self->offload);
  /* The type sizes hold still while the bus drains; failures during the
   * drain are still supervised, and the supervisor's threads end before
   * the agents are stopped for good. */
  ah_supervisor_stop_scaling (self->supervisor);
  ah_bus_stop (self->bus, (gint64) self->manifest->bus.drain_timeout_ms * 1000);
  ah_supervisor_stop (self->supervisor);
  for (guint i = 0; i < self->n_pools; i++)
    ah_pool_terminate_all (self->pools[i]);

  g_mutex_lock (&self->lock);
  self->run_end_us = g_get_monotonic_time ();
  self->state = HOST_STOPPED;
  host_note_running_locked (self);
  g_cond_broadcast (&self->cond);
  g_mutex_unlock (&self->lock);
}

int
ah_host_run (AhHost *self)
{
  gint64 deadline = G_MAXINT64;
  int exit_code;

  g_return_val_if_fail (self != NULL, 1);
  g_return_val_if_fail (self->state == HOST_STARTED, 1);

  if (self->manifest->run_timeout_ms > 0)
    deadline = self->run_start_us + (gint64) self->manifest->run_timeout_ms * 1000;

  g_mutex_lock (&self->lock);
  while (self->stop_reason == STOP_NONE)
    {
      /* Checked under the lock the idle func takes, so a transition to
       * idle cannot slip between the check and the wait. */
      if (self->manifest->stop_when_idle && ah_bus_is_idle (self->bus))
        self->stop_reason = STOP_IDLE;
      else if (deadline == G_MAXINT64)
        g_cond_wait (&self->cond, &self->lock);
      else if (!g_cond_wait_until (&self->cond, &self->lock, deadline)
               && self->stop_reason == STOP_NONE)
        self->stop_reason = STOP_TIMEOUT;
    }
  host_note_running_locked (self);
  g_mutex_unlock (&self->lock);

  g_debug ("stopping: %s", stop_reason_names[self->stop_reason]);
  host_stop (self);
  exit_code = self->exit_code;

  return exit_code;
}

gboolean
ah_host_wait_idle (AhHost *self,
                   gint64  timeout_us)
{
  g_return_val_if_fail (self != NULL, FALSE);

  return ah_bus_wait_idle (self->bus, timeout_us);
}

void
ah_host_free (AhHost *self)
{
  if (self == NULL)
    return;

  if (self->bus != NULL)
    {
      host_stop (self);
      /* A host that never started still has to close what it set up. */
      if (self->state == HOST_NEW)
        {
          ah_offload_pool_stop (self->offload);
          ah_bus_stop (self->bus, 0);
        }
    }
  if (self->supervisor != NULL)
    ah_supervisor_stop (self->supervisor);
  for (guint i = 0; i < self->n_pools; i++)
    ah_pool_terminate_all (self->pools[i]);
  ah_supervisor_free (self->supervisor);
  /* Stopped above: no thread of it runs, nothing of it holds the bus. */
  ah_offload_pool_free (self->offload);
  if (self->bus != NULL)
    ah_bus_free (self->bus);
  for (guint i = 0; i < self->n_pools; i++)
    ah_pool_free (self->pools[i]);
  g_free (self->pools);
  g_ptr_array_unref (self->observers);
  g_hash_table_unref (self->plugins);
  g_free (self->stop_detail);
  ah_manifest_free (self->manifest);
  g_mutex_clear (&self->lock);
  g_mutex_clear (&self->reload_lock);
  g_cond_clear (&self->cond);
  g_free (self);
}

/* ---- traffic from outside ------------------------------------------------ */

static gboolean
host_check_running (AhHost  *self,
                    GError **error)
{
  gboolean running = g_atomic_int_get (&self->running);

  if (!running)
    g_set_error_literal (error, AH_HOST_ERROR, AH_HOST_ERROR_STATE,
                         "the host is not running (not started yet, or stopping)");
  return running;
}

gboolean
ah_host_publish (AhHost       *self,
                 const char   *subject,
                 gconstpointer data,
                 gsize         size,
                 GError      **error)
{
  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (subject != NULL, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);

  if (!host_check_running (self, error))
    return FALSE;
  if (!ah_subject_is_valid (subject))
    {
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT, "'%s' is not a valid subject", subject);
      return FALSE;
    }

  return ah_bus_publish (self->bus, AH_AGENT_ID_NONE, subject, data, size,
                         AH_PRIORITY_NORMAL, error);
}

gboolean
ah_host_send (AhHost       *self,
              AhAgentId     to,
              const char   *subject,
              gconstpointer data,
              gsize         size,
              GError      **error)
{
  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (subject != NULL, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);

  if (!host_check_running (self, error))
    return FALSE;
  if (!ah_subject_is_valid (subject))
    {
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT, "'%s' is not a valid subject", subject);
      return FALSE;
    }

  return ah_bus_send (self->bus, AH_AGENT_ID_NONE, to, subject, data, size,
                      AH_PRIORITY_NORMAL, error);
}

static gboolean
host_observer_handle (AhBusCall               *call,
                      const AhMessage * const *messages,
                      guint                    n_messages,
                      gpointer                 user_data,
                      GError                 **error)
{
  HostObserver *observer = user_data;

  for (guint i = 0; i < n_messages; i++)
    observer->func (messages[i], observer->user_data);

  return TRUE;
}

guint
ah_host_subscribe (AhHost           *self,
                   const char       *pattern,
                   AhHostMessageFunc func,
                   gpointer          user_data,
                   GError          **error)
{
  HostObserver *observer;
  guint id;

  g_return_val_if_fail (self != NULL, 0);
  g_return_val_if_fail (pattern != NULL, 0);
  g_return_val_if_fail (func != NULL, 0);

  if (!ah_pattern_is_valid (pattern))
    {
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT, "'%s' is not a valid subject pattern", pattern);
      return 0;
    }

  observer = g_new0 (HostObserver, 1);
  observer->func = func;
  observer->user_data = user_data;
  id = ah_bus_subscribe_func (self->bus, pattern, AH_DELIVERY_BROADCAST,
                              host_observer_handle, observer, error);
  if (id == 0)
    {
      g_free (observer);
      return 0;
    }
  g_ptr_array_add (self->observers, observer);

  return id;
}

/* ---- agents ------------------------------------------------------------------ */

const char *
ah_agent_state_to_string (AhAgentState state)
{
  switch (state)
    {
    case AH_AGENT_STATE_SPAWNING:
      return "spawning";
    case AH_AGENT_STATE_READY:
      return "ready";
    case AH_AGENT_STATE_BUSY:
      return "busy";
    case AH_AGENT_STATE_IDLE:
      return "idle";
    case AH_AGENT_STATE_STOPPING:
      return "stopping";
    default:
      return "unknown";
    }
}

void
ah_spawn_results_clear (AhSpawnResult *results,
                        guint          n_results)
{
  g_return_if_fail (results != NULL || n_results == 0);

  for (guint i = 0; i < n_results; i++)
    {
      results[i].id = AH_AGENT_ID_NONE;
      g_clear_error (&results[i].error);
    }
}

/* The pool of @type_name in a running host, or NULL with @error. */
static AhPool *
host_pool_for_spawn (AhHost     *self,
                     const char *type_name,
                     GError    **error)
{
  AhPool *pool;

  if (!host_check_running (self, error))
    return NULL;
  pool = ah_host_find_pool (self, type_name);
  if (pool == NULL)
    g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_TYPE,
                 "no agent type '%s' in manifest '%s'", type_name, self->manifest->name);
  return pool;
}

AhAgentId
ah_host_spawn (AhHost     *self,
               const char *type_name,
               GError    **error)
{
  AhPool *pool;

  g_return_val_if_fail (self != NULL, AH_AGENT_ID_NONE);
  g_return_val_if_fail (type_name != NULL, AH_AGENT_ID_NONE);

  pool = host_pool_for_spawn (self, type_name, error);
  if (pool == NULL)
    return AH_AGENT_ID_NONE;
  return ah_pool_spawn (pool, error);
}

guint
ah_host_spawn_batch (AhHost        *self,
                     const char    *type_name,
                     guint          n_agents,
                     AhSpawnResult *results,
                     GError       **error)
{
  AhPool *pool;

  g_return_val_if_fail (self != NULL, 0);
  g_return_val_if_fail (type_name != NULL, 0);
  g_return_val_if_fail (results != NULL || n_agents == 0, 0);
  g_return_val_if_fail (error == NULL || *error == NULL, 0);

  for (guint i = 0; i < n_agents; i++)
    results[i] = (AhSpawnResult) { AH_AGENT_ID_NONE, NULL };
  pool = host_pool_for_spawn (self, type_name, error);
  if (pool == NULL)
    return 0;
  return ah_pool_spawn_batch (pool, n_agents, results, error);
}

/* Waits @pause_ms, or less if the host is asked to stop meanwhile (the
 * stop request wakes the condition). Returns FALSE when it was. */
static gboolean
host_pause (AhHost *self,
            guint   pause_ms)
{
  gint64 deadline = g_get_monotonic_time () + (gint64) pause_ms * 1000;
  gboolean running;

  g_mutex_lock (&self->lock);
  while (host_is_running_locked (self))
    if (!g_cond_wait_until (&self->cond, &self->lock, deadline))
      break;
  running = host_is_running_locked (self);
  g_mutex_unlock (&self->lock);

  return running;
}

guint
ah_host_spawn_waves (AhHost        *self,
                     const char    *type_name,
                     guint          n_agents,
                     guint          wave_size,
                     guint          pause_ms,
                     AhSpawnResult *results,
                     GError       **error)
{
  g_autoptr(GError) refused = NULL;
  AhPool *pool;
  guint done = 0, n_started = 0, n_waves = 0;

  g_return_val_if_fail (self != NULL, 0);
  g_return_val_if_fail (type_name != NULL, 0);
  g_return_val_if_fail (wave_size > 0, 0);
  g_return_val_if_fail (results != NULL || n_agents == 0, 0);
  g_return_val_if_fail (error == NULL || *error == NULL, 0);

  for (guint i = 0; i < n_agents; i++)
    results[i] = (AhSpawnResult) { AH_AGENT_ID_NONE, NULL };
  pool = host_pool_for_spawn (self, type_name, error);
  if (pool == NULL)
    return 0;

  while (done < n_agents)
    {
      guint n = MIN (wave_size, n_agents - done);

      if (done > 0 && !host_pause (self, pause_ms))
        {
          g_set_error (&refused, AH_HOST_ERROR, AH_HOST_ERROR_STATE,
                       "the host was asked to stop before this agent's wave");
          break;
        }
      n_started += ah_pool_spawn_batch (pool, n, results + done, &refused);
      n_waves++;
      if (refused != NULL)
        {
          /* The whole wave was refused: so would the next ones be. */
          if (n_started == 0)
            {
              g_propagate_error (error, g_steal_pointer (&refused));
              return 0;
            }
          break;
        }
      done += n;
    }
  for (guint i = done; refused != NULL && i < n_agents; i++)
    results[i].error = g_error_copy (refused);

  g_debug ("spawned %u of %u agents of type '%s' in %u wave%s of up to %u", n_started, n_agents,
           type_name, n_waves, n_waves == 1 ? "" : "s", wave_size);
  return n_started;
}

gboolean
ah_host_terminate (AhHost   *self,
                   AhAgentId agent,
                   GError  **error)
{
  g_return_val_if_fail (self != NULL, FALSE);

  if (!host_check_running (self, error))
    return FALSE;

  /* A pool's terminate fails only when the agent is not one of its live
   * ones: try each, with no error to build for the others. */
  for (guint i = 0; i < self->n_pools; i++)
    if (ah_pool_terminate (self->pools[i], agent, NULL))
      return TRUE;

  g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_AGENT,
               "no live agent %" G_GUINT64_FORMAT, agent);
  return FALSE;
}

gboolean
ah_host_get_agent_info (AhHost      *self,
                        AhAgentId    agent,
                        AhAgentInfo *ret_info,
                        GError     **error)
{
  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (ret_info != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  for (guint i = 0; i < self->n_pools; i++)
    if (ah_pool_get_agent_info (self->pools[i], agent, ret_info))
      return TRUE;

  g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_AGENT,
               "no agent %" G_GUINT64_FORMAT " (never spawned, or its slot was reused or freed)",
               agent);
  return FALSE;
}

AhBus *
ah_host_get_bus (AhHost *self)
{
  return self->bus;
}

AhManifest *
ah_host_get_manifest (AhHost *self)
{
  return self->manifest;
}

AhPool *
ah_host_find_pool (AhHost     *self,
                   const char *name)
{
  for (guint i = 0; i < self->n_pools; i++)
    if (g_str_equal (ah_pool_get_name (self->pools[i]), name))
      return self->pools[i];
  return NULL;
}

/* ---- accounting ---------------------------------------------------------- */

/* What the pool counts and what the supervisor counts, together. */
static void
host_get_type_stats (AhHost      *self,
                     guint        index,
                     AhTypeStats *ret_stats)
{
  ah_pool_get_stats (self->pools[index], ret_stats);
  ah_supervisor_add_type_stats (self->supervisor, self->pools[index], ret_stats);
}

/* delivered / (delivered + failed): dead letters are routing, not
 * failures of the agents. 1 when nothing was settled either way. */
static gdouble
host_success_rate (const AhHostStats *stats)
{
  return stats->delivered + stats->failed == 0
         ? 1.0 : (gdouble) stats->delivered / (stats->delivered + stats->failed);
}

void
ah_host_get_stats (AhHost      *self,
                   AhHostStats *ret_stats)
{
  AhBusCounters counters;
  gint64 end;

  g_return_if_fail (self != NULL);
  g_return_if_fail (ret_stats != NULL);

  memset (ret_stats, 0, sizeof *ret_stats);
  ah_bus_get_counters (self->bus, &counters);
  ret_stats->published = counters.published;
  ret_stats->accepted = counters.accepted;
  ret_stats->delivered = counters.delivered;
  ret_stats->dead_lettered = counters.dead_lettered;
  ret_stats->failed = counters.failed;
  ret_stats->in_flight = counters.in_flight;
  ret_stats->batches = counters.batches;
  ret_stats->requests = counters.requests;
  ret_stats->request_timeouts = counters.request_timeouts;
  ret_stats->latency_p50_us = counters.latency_p50_us;
  ret_stats->latency_p95_us = counters.latency_p95_us;
  ret_stats->latency_p99_us = counters.latency_p99_us;
  ret_stats->latency_max_us = counters.latency_max_us;
  ret_stats->latency_p999_us = counters.latency_p999_us;
  ret_stats->worker_stall_max_us = counters.worker_stall_max_us;
  ret_stats->steals = counters.steals;
  ret_stats->n_workers = counters.n_workers;
  ret_stats->n_types = self->n_pools;
  ret_stats->prewarm_ms = self->prewarm_ms;

  g_mutex_lock (&self->lock);
  ret_stats->reloads = self->reloads;
  ret_stats->reload_failures = self->reload_failures;
  end = self->run_end_us != 0 ? self->run_end_us : g_get_monotonic_time ();
  if (self->run_start_us != 0)
    ret_stats->elapsed_s = (end - self->run_start_us) / 1e6;
  g_mutex_unlock (&self->lock);

  for (guint i = 0; i < self->n_pools; i++)
    ret_stats->n_agents += ah_pool_get_n_live (self->pools[i]);
}

guint
ah_host_get_n_types (AhHost *self)
{
  g_return_val_if_fail (self != NULL, 0);

  return self->n_pools;
}

gboolean
ah_host_get_type_stats (AhHost      *self,
                        guint        index,
                        AhTypeStats *ret_stats)
{
  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (ret_stats != NULL, FALSE);

  if (index >= self->n_pools)
    return FALSE;
  host_get_type_stats (self, index, ret_stats);
  return TRUE;
}

static gdouble
host_throughput (const AhHostStats *stats)
{
  return stats->elapsed_s > 0 ? stats->delivered / stats->elapsed_s : 0;
}

char *
ah_host_format_summary (AhHost *self)
{
  GString *out = g_string_new (NULL);
  AhHostStats stats;
  guint64 agents_started = 0;

  g_return_val_if_fail (self != NULL, NULL);

  ah_host_get_stats (self, &stats);
  for (guint i = 0; i < self->n_pools; i++)
    {
      AhTypeStats type_stats;

      host_get_type_stats (self, i, &type_stats);
      agents_started += type_stats.spawned;
    }

  g_string_append_printf (out, "agenthost: '%s' ran %.3f s, stopped by %s, exit code %d\n",
                          self->manifest->name, stats.elapsed_s,
                          stop_reason_names[self->stop_reason], self->exit_code);
  if (self->stop_detail != NULL)
    g_string_append_printf (out, "  why         %s\n", self->stop_detail);
  g_string_append_printf (out, "  agents      %" G_GUINT64_FORMAT " started (%u type%s, %u alive), %u workers, pre-warmed in %.3f ms\n",
                          agents_started, stats.n_types, stats.n_types == 1 ? "" : "s",
                          stats.n_agents, stats.n_workers, stats.prewarm_ms);
  g_string_append_printf (out, "  messages    %" G_GUINT64_FORMAT " published, %" G_GUINT64_FORMAT " accepted = %"
                          G_GUINT64_FORMAT " delivered + %" G_GUINT64_FORMAT " dead-lettered + %"
                          G_GUINT64_FORMAT " failed + %" G_GUINT64_FORMAT " in flight\n",
                          stats.published, stats.accepted, stats.delivered, stats.dead_lettered,
                          stats.failed, stats.in_flight);
  g_string_append_printf (out, "  success     %.2f%% (delivered / (delivered + failed), exact counts)\n",
                          100.0 * host_success_rate (&stats));
  g_string_append_printf (out, "  throughput  %.0f msgs/s delivered in %" G_GUINT64_FORMAT " handler batches\n",
                          host_throughput (&stats), stats.batches);
  g_string_append_printf (out, "  latency     p50 %.1f us, p95 %.1f us, p99 %.1f us, p99.9 %.1f us, max %.1f us "
                          "(publish to handler)\n",
                          stats.latency_p50_us, stats.latency_p95_us, stats.latency_p99_us,
                          stats.latency_p999_us, stats.latency_max_us);
  g_string_append_printf (out, "  requests    %" G_GUINT64_FORMAT " (%" G_GUINT64_FORMAT " timed out)\n",
                          stats.requests, stats.request_timeouts);
  g_string_append (out, "  type                 agents  spawned  handled  failed      pre-warm"
                        "  restarted  retried  handler p50/p99 us  success\n");
  for (guint i = 0; i < self->n_pools; i++)
    {
      AhTypeStats type_stats;
      g_autofree char *handler_us = NULL;

      host_get_type_stats (self, i, &type_stats);
      handler_us = g_strdup_printf ("%.1f/%.1f", type_stats.handler_p50_us, type_stats.handler_p99_us);
      g_string_append_printf (out, "  %-20s %6u  %7" G_GUINT64_FORMAT "  %7" G_GUINT64_FORMAT
                              "  %6" G_GUINT64_FORMAT "  %9.3f ms  %9" G_GUINT64_FORMAT
                              "  %7" G_GUINT64_FORMAT "  %18s  %6.2f%%%s\n",
                              type_stats.name, type_stats.n_agents, type_stats.spawned,
                              type_stats.handled, type_stats.failed, type_stats.prewarm_ms,
                              type_stats.restarted, type_stats.retried, handler_us,
                              100.0 * type_stats.success_rate,
                              type_stats.stopped ? "  STOPPED" : "");
    }

  return g_string_free (out, FALSE);
}

/* JSON strings: our names are validated ASCII, but a manifest name or a
 * description may hold anything, so escape properly. */
static void
json_append_string (GString    *out,
                    const char *text)
{
  g_string_append_c (out, '"');
  for (const guchar *p = (const guchar *) text; *p != '\0'; p++)
    {
      switch (*p)
        {
        case '"':  g_string_append (out, "\\\""); break;
        case '\\': g_string_append (out, "\\\\"); break;
        case '\n': g_string_append (out, "\\n"); break;
        case '\r': g_string_append (out, "\\r"); break;
        case '\t': g_string_append (out, "\\t"); break;
        default:
          if (*p < 0x20)
            g_string_append_printf (out, "\\u%04x", *p);
          else
            g_string_append_c (out, (char) *p);
        }
    }
  g_string_append_c (out, '"');
}

static void
json_append_double (GString *out,
                    gdouble  value)
{
  char buffer[G_ASCII_DTOSTR_BUF_SIZE];

  /* Locale-independent: a comma decimal separator is not JSON. */
  g_string_append (out, g_ascii_formatd (buffer, sizeof buffer, "%.3f", value));
}

char *
ah_host_format_summary_json (AhHost *self)
{
  GString *out = g_string_new (NULL);
  AhHostStats stats;

  g_return_val_if_fail (self != NULL, NULL);

  ah_host_get_stats (self, &stats);
  g_string_append (out, "{\n  \"manifest\": ");
  json_append_string (out, self->manifest->name);
  g_string_append (out, ",\n  \"stopped_by\": ");
  json_append_string (out, stop_reason_names[self->stop_reason]);
  g_string_append (out, ",\n  \"stop_detail\": ");
  if (self->stop_detail != NULL)
    json_append_string (out, self->stop_detail);
  else
    g_string_append (out, "null");
  g_string_append_printf (out, ",\n  \"exit_code\": %d,\n  \"elapsed_s\": ", self->exit_code);
  json_append_double (out, stats.elapsed_s);
  g_string_append_printf (out, ",\n  \"agents\": %u,\n  \"types\": %u,\n  \"workers\": %u,\n  \"prewarm_ms\": ",
                          stats.n_agents, stats.n_types, stats.n_workers);
  json_append_double (out, stats.prewarm_ms);
  g_string_append_printf (out, ",\n  \"messages\": {\"published\": %" G_GUINT64_FORMAT
                          ", \"accepted\": %" G_GUINT64_FORMAT ", \"delivered\": %" G_GUINT64_FORMAT
                          ", \"dead_lettered\": %" G_GUINT64_FORMAT ", \"failed\": %" G_GUINT64_FORMAT
                          ", \"in_flight\": %" G_GUINT64_FORMAT ", \"batches\": %" G_GUINT64_FORMAT "}",
                          stats.published, stats.accepted, stats.delivered, stats.dead_lettered,
                          stats.failed, stats.in_flight, stats.batches);
  g_string_append (out, ",\n  \"success_rate\": ");
  json_append_double (out, host_success_rate (&stats));
  g_string_append (out, ",\n  \"throughput_msgs_per_s\": ");
  json_append_double (out, host_throughput (&stats));
  g_string_append (out, ",\n  \"latency_us\": {\"p50\": ");
  json_append_double (out, stats.latency_p50_us);
  g_string_append (out, ", \"p95\": ");
  json_append_double (out, stats.latency_p95_us);
  g_string_append (out, ", \"p99\": ");
  json_append_double (out, stats.latency_p99_us);
  g_string_append (out, ", \"p999\": ");
  json_append_double (out, stats.latency_p999_us);
  g_string_append (out, ", \"max\": ");
  json_append_double (out, stats.latency_max_us);
  g_string_append (out, "},\n  \"worker_stall_max_us\": ");
  json_append_double (out, stats.worker_stall_max_us);
  g_string_append_printf (out, ",\n  \"steals\": %" G_GUINT64_FORMAT, stats.steals);
  g_string_append (out, ",\n  \"reloads\": {\"done\": ");
  g_string_append_printf (out, "%u, \"failed\": %u", stats.reloads, stats.reload_failures);
  g_string_append_printf (out, "},\n  \"requests\": {\"total\": %" G_GUINT64_FORMAT
                          ", \"timeouts\": %" G_GUINT64_FORMAT "},\n  \"per_type\": [",
                          stats.requests, stats.request_timeouts);
  for (guint i = 0; i < self->n_pools; i++)
    {
      AhTypeStats type_stats;

      host_get_type_stats (self, i, &type_stats);
      g_string_append (out, i == 0 ? "\n    {\"name\": " : ",\n    {\"name\": ");
      json_append_string (out, type_stats.name);
      g_string_append_printf (out, ", \"agents\": %u, \"pool_size\": %u, \"spawned\": %" G_GUINT64_FORMAT
                              ", \"terminated\": %" G_GUINT64_FORMAT ", \"init_failures\": %" G_GUINT64_FORMAT
                              ", \"handled\": %" G_GUINT64_FORMAT ", \"handler_failures\": %" G_GUINT64_FORMAT
                              ", \"prewarm_ms\": ",
                              type_stats.n_agents, type_stats.pool_size, type_stats.spawned,
                              type_stats.terminated, type_stats.init_failures, type_stats.handled,
                              type_stats.handler_failures);
      json_append_double (out, type_stats.prewarm_ms);
      g_string_append_printf (out, ", \"idle\": %u, \"pool_min\": %u, \"pool_max\": ",
                              type_stats.n_idle, type_stats.pool_min);
      if (type_stats.pool_max == AH_MANIFEST_POOL_UNBOUNDED)
        g_string_append (out, "null");
      else
        g_string_append_printf (out, "%u", type_stats.pool_max);
      g_string_append_printf (out, ", \"scaled_up\": %" G_GUINT64_FORMAT ", \"scaled_down\": %"
                              G_GUINT64_FORMAT ", \"restarted\": %" G_GUINT64_FORMAT
                              ", \"failed\": %" G_GUINT64_FORMAT ", \"retried\": %" G_GUINT64_FORMAT
                              ", \"failed_messages\": %" G_GUINT64_FORMAT
                              ", \"deadline_overruns\": %" G_GUINT64_FORMAT ", \"stopped\": %s"
                              ", \"handler_us\": {\"p50\": ",
                              type_stats.scaled_up, type_stats.scaled_down, type_stats.restarted,
                              type_stats.failed, type_stats.retried, type_stats.failed_messages,
                              type_stats.deadline_overruns, type_stats.stopped ? "true" : "false");
      json_append_double (out, type_stats.handler_p50_us);
      g_string_append (out, ", \"p99\": ");
      json_append_double (out, type_stats.handler_p99_us);
      g_string_append (out, "}, \"restart_p50_us\": ");
      json_append_double (out, type_stats.restart_p50_us);
      g_string_append (out, ", \"success_rate\": ");
      json_append_double (out, type_stats.success_rate);
      g_string_append_c (out, '}');
    }
  g_string_append (out, "\n  ]\n}\n");

  return g_string_free (out, FALSE);
}

/* ---- requests from outside ----------------------------------------------- */

/* Only a handler can make a request on the bus, so an outside request
 * borrows one: a temporary endpoint is kicked with a direct message, makes
 * the request from its handler, and receives the outcome there. */
#define AH_SUBJECT_HOST_REQUEST "$SYS.host.request"

typedef struct {
  const char   *subject;
  gconstpointer data;
  gsize         size;
  guint         timeout_ms;
  guint64       correlation;  /* the endpoint's worker only */
  GMutex        lock;
  GCond         cond;
  gboolean      done;
  AhMessageKind outcome;
  GBytes       *reply;
} HostRequest;

/* The first outcome counts; a late second one (a reply racing the
 * timeout is settled by the bus, but be strict) is dropped. */
static void
host_request_finish (HostRequest  *request,
                     AhMessageKind outcome,
                     GBytes       *reply)
{
  g_mutex_lock (&request->lock);
  if (!request->done)
    {
      request->outcome = outcome;
      request->reply = g_steal_pointer (&reply);
      request->done = TRUE;
    }
  g_cond_signal (&request->cond);
  g_mutex_unlock (&request->lock);
  g_clear_pointer (&reply, g_bytes_unref);
}

static gboolean
host_request_handle (AhBusCall               *call,
                     const AhMessage * const *messages,
                     guint                    n_messages,
                     gpointer                 user_data,
                     GError                 **error)
{
  HostRequest *request = user_data;

  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      AhMessageKind kind = ah_message_get_kind (message);

      if (kind == AH_MESSAGE_DIRECT && request->correlation == 0)
        {
          request->correlation = ah_bus_call_request (call, request->subject, request->data,
                                                      request->size, request->timeout_ms);
          if (request->correlation == 0)
            host_request_finish (request, AH_MESSAGE_NO_RESPONDERS, NULL);
        }
      else if (request->correlation != 0
               && ah_message_get_correlation (message) == request->correlation)
        {
          gsize size;
          gconstpointer data = ah_message_get_data (message, &size);

          host_request_finish (request, kind,
                               kind == AH_MESSAGE_REPLY ? g_bytes_new (data, size) : NULL);
        }
    }

  return TRUE;
}

GBytes *
ah_host_request_full (AhHost                   *self,
                      const char               *subject,
                      gconstpointer             data,
                      gsize                     size,
                      guint                     timeout_ms,
                      AhHostRequestEndpointFunc endpoint_func,
                      gpointer                  user_data,
                      GError                  **error)
{
  HostRequest request = { subject, data, size, timeout_ms, 0 };
  AhEndpoint *endpoint;
  gint64 deadline;

  if (!ah_subject_is_valid (subject))
    {
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT, "'%s' is not a valid subject", subject);
      return NULL;
    }

  g_mutex_init (&request.lock);
  g_cond_init (&request.cond);
  endpoint = ah_bus_endpoint_new (self->bus, host_request_handle, &request);
  if (endpoint_func != NULL)
    endpoint_func (ah_endpoint_get_id (endpoint), user_data);
  if (!ah_bus_send (self->bus, AH_AGENT_ID_NONE, ah_endpoint_get_id (endpoint),
                    AH_SUBJECT_HOST_REQUEST, "", 0, AH_PRIORITY_SYSTEM, error))
    {
      ah_bus_endpoint_close (self->bus, endpoint);
      g_mutex_clear (&request.lock);
      g_cond_clear (&request.cond);
      return NULL;
    }

  /* The bus guarantees an outcome - a reply, a TIMEOUT or NO_RESPONDERS -
   * unless it stops meanwhile and cancels the request; the deadline
   * covers that case. Closing the endpoint waits out a running handler,
   * so nothing touches @request after it. */
  deadline = g_get_monotonic_time () + (gint64) timeout_ms * 1000 + G_USEC_PER_SEC;
  g_mutex_lock (&request.lock);
  while (!request.done)
    if (!g_cond_wait_until (&request.cond, &request.lock, deadline))
      break;
  g_mutex_unlock (&request.lock);

  ah_bus_endpoint_close (self->bus, endpoint);
  if (!request.done)
    request.outcome = AH_MESSAGE_TIMEOUT;
  g_mutex_clear (&request.lock);
  g_cond_clear (&request.cond);

  switch (request.outcome)
    {
    case AH_MESSAGE_REPLY:
      return request.reply;
    case AH_MESSAGE_TIMEOUT:
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_TIMEOUT,
                   "request on '%s' got no reply within %u ms", subject, timeout_ms);
      return NULL;
    case AH_MESSAGE_PUBLISH:
    case AH_MESSAGE_DIRECT:
    case AH_MESSAGE_REQUEST:
    case AH_MESSAGE_NO_RESPONDERS:
    case AH_MESSAGE_OFFLOAD_DONE:
    case AH_MESSAGE_OFFLOAD_FAILED:
    default:
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_NO_RESPONDERS,
                   "request on '%s' had no responders", subject);
      return NULL;
    }
}

GBytes *
ah_host_request (AhHost       *self,
                 const char   *subject,
                 gconstpointer data,
                 gsize         size,
                 guint         timeout_ms,
                 GError      **error)
{
  g_return_val_if_fail (self != NULL, NULL);
  g_return_val_if_fail (subject != NULL, NULL);
  g_return_val_if_fail (data != NULL || size == 0, NULL);
  g_return_val_if_fail (timeout_ms > 0, NULL);

  if (!host_check_running (self, error))
    return NULL;
  return ah_host_request_full (self, subject, data, size, timeout_ms, NULL, NULL, error);
}

/* ---- hot reload ---------------------------------------------------------- */

#define AH_SUBJECT_RELOAD_DONE   "$SYS.reload.done"
#define AH_SUBJECT_RELOAD_FAILED "$SYS.reload.failed"

static void
host_publish_event (AhHost     *self,
                    const char *subject,
                    const char *text)
{
  /* An event: system priority, and not counted when nobody listens. */
  ah_bus_publish_event (self->bus, subject, text, strlen (text));
}

static void
host_reload_failed (AhHost     *self,
                    const char *path,
                    GError     *error)
{
  g_autofree char *text = g_strdup_printf ("file=%s reason=%s", path, error->message);

  g_mutex_lock (&self->lock);
  self->reload_failures++;
  g_mutex_unlock (&self->lock);
  g_message ("reload of %s refused, the running version stays: %s", path, error->message);
  host_publish_event (self, AH_SUBJECT_RELOAD_FAILED, text);
}

/* Reloads the plugin file @path for every agent type using it. */
static gboolean
host_reload_path (AhHost     *self,
                  const char *path,
                  GError    **error)
{
  g_autoptr(GError) local_error = NULL;
  g_autoptr(AhPlugin) plugin = NULL;
  g_autofree AhPool **pools = g_new0 (AhPool *, self->n_pools);
  g_autofree char *text = NULL;
  AhReloadResult result;
  guint n_pools = 0;
  gint64 start = g_get_monotonic_time ();
  gdouble ms;

  g_mutex_lock (&self->reload_lock);
  if (!host_check_running (self, error))
    {
      g_mutex_unlock (&self->reload_lock);
      return FALSE;
    }

  for (guint i = 0; i < self->n_pools; i++)
    if (g_str_equal (ah_plugin_get_path (ah_pool_get_plugin (self->pools[i])), path))
      pools[n_pools++] = self->pools[i];

  /* A private copy: the loader never hands back the running mapping, and
   * the build may overwrite the file right away. The ABI and descriptor
   * are checked here, before any agent is touched. */
  plugin = ah_plugin_open_copy (path, &local_error);
  if (plugin == NULL
      || !ah_reload_switch (self->manifest, self->bus, pools, n_pools, plugin, &result,
                            &local_error))
    {
      host_reload_failed (self, path, local_error);
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_RELOAD, "%s", local_error->message);
      g_mutex_unlock (&self->reload_lock);
      return FALSE;
    }

  /* The pools hold the new version; the cache follows, and the old
   * version goes with its last reference (an offload may hold one). */
  g_hash_table_replace (self->plugins, g_strdup (path), ah_plugin_ref (plugin));
  ms = (g_get_monotonic_time () - start) / 1000.0;
  g_mutex_lock (&self->lock);
  self->reloads++;
  g_mutex_unlock (&self->lock);

  text = g_strdup_printf ("plugin=%s version=%s file=%s agents=%u migrated=%u kept=%u "
                          "reinitialized=%u ms=%.3f",
                          ah_plugin_get_desc (plugin)->name, ah_plugin_get_desc (plugin)->version,
                          path, result.n_agents, result.n_migrated, result.n_kept,
                          result.n_reinitialized, ms);
  g_message ("reloaded %s: version %s, %u agent%s switched in %.3f ms",
             path, ah_plugin_get_desc (plugin)->version, result.n_agents,
             result.n_agents == 1 ? "" : "s", ms);
  host_publish_event (self, AH_SUBJECT_RELOAD_DONE, text);
  g_mutex_unlock (&self->reload_lock);
  return TRUE;
}

gboolean
ah_host_reload (AhHost     *self,
                const char *type_name,
                GError    **error)
{
  AhPool *pool;
  g_autofree char *path = NULL;

  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (type_name != NULL, FALSE);

  pool = ah_host_find_pool (self, type_name);
  if (pool == NULL)
    {
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_UNKNOWN_TYPE,
                   "no agent type '%s' in manifest '%s'", type_name, self->manifest->name);
      return FALSE;
    }
  /* Copied: a concurrent reload replaces the plugin the path lives in. */
  g_mutex_lock (&self->reload_lock);
  path = g_strdup (ah_plugin_get_path (ah_pool_get_plugin (pool)));
  g_mutex_unlock (&self->reload_lock);

  return host_reload_path (self, path, error);
}

/* The distinct plugin files of the running pools, with their checksum. */
static GHashTable *
host_running_files (AhHost *self)
{
  GHashTable *files = g_hash_table_new_full (g_str_hash, g_str_equal, g_free, g_free);

  g_mutex_lock (&self->reload_lock);
  for (guint i = 0; i < self->n_pools; i++)
    {
      AhPlugin *plugin = ah_pool_get_plugin (self->pools[i]);

      g_hash_table_replace (files, g_strdup (ah_plugin_get_path (plugin)),
                            g_strdup (ah_plugin_get_checksum (plugin)));
    }
  g_mutex_unlock (&self->reload_lock);
  return files;
}

guint
ah_host_reload_changed (AhHost  *self,
                        GError **error)
{
  g_autoptr(GHashTable) files = NULL;
  GHashTableIter iter;
  gpointer path, checksum;
  guint n_reloaded = 0;

  g_return_val_if_fail (self != NULL, 0);

  files = host_running_files (self);
  g_hash_table_iter_init (&iter, files);
  while (g_hash_table_iter_next (&iter, &path, &checksum))
    {
      g_autoptr(GError) local_error = NULL;
      g_autofree char *now = ah_plugin_file_checksum (path, &local_error);

      /* Touched but not changed: nothing to do. */
      if (now != NULL && g_strcmp0 (now, checksum) == 0)
        continue;
      if (now != NULL && host_reload_path (self, path, &local_error))
        {
          n_reloaded++;
          continue;
        }
      if (now == NULL)
        host_reload_failed (self, path, local_error);
      if (error != NULL && *error == NULL)
        g_propagate_error (error, g_steal_pointer (&local_error));
    }
  return n_reloaded;
}

static void
host_on_file_changed (const char *path,
                      gpointer    user_data)
{
  AhHost *self = user_data;
  g_autoptr(GError) error = NULL;
  g_autoptr(GHashTable) files = host_running_files (self);
  const char *checksum = g_hash_table_lookup (files, path);
  g_autofree char *now = ah_plugin_file_checksum (path, NULL);

  /* Written again with the same bytes (a no-op rebuild): not a reload. */
  if (checksum != NULL && g_strcmp0 (now, checksum) == 0)
    return;
  /* The failure is logged and published by host_reload_path(); the old
   * version runs on, which is all a watcher can do. */
  host_reload_path (self, path, &error);
}

gboolean
ah_host_watch (AhHost  *self,
               guint    debounce_ms,
               GError **error)
{
  g_autoptr(GHashTable) files = NULL;
  GHashTableIter iter;
  gpointer path;

  g_return_val_if_fail (self != NULL, FALSE);

  if (!host_check_running (self, error))
    return FALSE;
  if (self->watch != NULL)
    return TRUE;

  self->watch = ah_watch_new (debounce_ms, host_on_file_changed, self);
  files = host_running_files (self);
  g_hash_table_iter_init (&iter, files);
  while (g_hash_table_iter_next (&iter, &path, NULL))
    if (!ah_watch_add_file (self->watch, path, error))
      {
        g_clear_pointer (&self->watch, ah_watch_free);
        return FALSE;
      }
  return TRUE;
}
