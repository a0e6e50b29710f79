/* Hot reload: switching the agents of a plugin to a new version of it.
 *
 * The protocol, for the agents of every pool using the reloaded file:
 *
 *   1. check: the new version must be the same plugin (same descriptor
 *      name) and accept each agent type's config;
 *   2. pause every agent (ah_bus_endpoint_pause): each stops exactly
 *      between two batches - never inside a handler - and its mailbox
 *      keeps filling in order. The workers never wait: they run every
 *      other agent meanwhile;
 *   3. prepare the new state of every agent, off the workers: kept as is
 *      (the new version declares the same layout), or snapshot with the
 *      old version and restore with the new, or initialised afresh;
 *   4. commit - swap every state and the pools' plugin, finalize the old
 *      states - or, if any step failed, roll back: finalize the prepared
 *      new states and leave everything as it was;
 *   5. resume every agent; their next batch runs the version in force.
 *
 * Nothing is lost or reordered because no message is touched: only the
 * code and the state behind the mailboxes change. The old module stays
 * loaded while an offload of its code runs (each task holds a reference)
 * and is closed with the last reference.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-reload-private.h"
#include "ah-config-private.h"

#include <string.h>

typedef enum {
  SWITCH_KEEP,        /* same layout, declared stable: the state stays */
  SWITCH_MIGRATE,     /* state_snapshot (old) then state_restore (new) */
  SWITCH_REINIT,      /* agent_init (new) on a zeroed state */
} SwitchMode;

typedef struct {
  AhAgent    *agent;
  AhPool     *pool;
  SwitchMode  mode;
  gpointer    new_state;   /* (owned) until committed; NULL for SWITCH_KEEP */
  gboolean    prepared;    /* new_state holds a state the new version built */
} AgentSwitch;

static SwitchMode
reload_switch_mode (const AhPluginDesc *old_desc,
                    const AhPluginDesc *new_desc)
{
  if ((new_desc->flags & AH_PLUGIN_FLAG_STATE_LAYOUT_STABLE) != 0
      && new_desc->state_size == old_desc->state_size)
    return SWITCH_KEEP;
  if (old_desc->state_snapshot != NULL && new_desc->state_restore != NULL)
    return SWITCH_MIGRATE;
  return SWITCH_REINIT;
}

/* Builds the new version's state of one paused agent. */
static gboolean
reload_prepare_agent (AgentSwitch        *sw,
                      const AhPluginDesc *old_desc,
                      const AhPluginDesc *new_desc,
                      GHashTable         *new_config,
                      GError            **error)
{
  AhContext old_ctx = { .agent = sw->agent, .call = NULL, .config = NULL };
  AhContext new_ctx = { .agent = sw->agent, .call = NULL, .config = new_config };
  g_autoptr(GBytes) snapshot = NULL;
  g_autoptr(GError) local_error = NULL;

  if (sw->mode == SWITCH_KEEP)
    return TRUE;

  sw->new_state = new_desc->state_size > 0
                  ? g_aligned_alloc0 (1, new_desc->state_size, AH_STATE_ALIGN) : NULL;

  if (sw->mode == SWITCH_MIGRATE)
    {
      snapshot = old_desc->state_snapshot (&old_ctx, sw->agent->state_mem, &local_error);
      if (snapshot == NULL)
        {
          g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_RELOAD,
                       "agent %" G_GUINT64_FORMAT ": the old version's state_snapshot failed: %s",
                       sw->agent->id, local_error != NULL ? local_error->message : "no message");
          return FALSE;
        }
      if (!new_desc->state_restore (&new_ctx, sw->new_state, old_desc->state_format,
                                    snapshot, &local_error))
        {
          g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_RELOAD,
                       "agent %" G_GUINT64_FORMAT ": the new version refused the snapshot "
                       "(format %u): %s", sw->agent->id, old_desc->state_format,
                       local_error != NULL ? local_error->message : "no message");
          return FALSE;
        }
    }
  else if (new_desc->agent_init != NULL
           && !new_desc->agent_init (&new_ctx, sw->new_state, &local_error))
    {
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_RELOAD,
                   "agent %" G_GUINT64_FORMAT ": the new version's init failed: %s",
                   sw->agent->id, local_error != NULL ? local_error->message : "no message");
      return FALSE;
    }

  sw->prepared = TRUE;
  return TRUE;
}

/* Rollback of one agent: its new state goes, the old one never moved. */
static void
reload_discard_agent (AgentSwitch        *sw,
                      const AhPluginDesc *new_desc,
                      GHashTable         *new_config)
{
  AhContext new_ctx = { .agent = sw->agent, .call = NULL, .config = new_config };

  if (sw->prepared && new_desc->agent_finalize != NULL)
    new_desc->agent_finalize (&new_ctx, sw->new_state);
  g_clear_pointer (&sw->new_state, g_aligned_free);
  sw->prepared = FALSE;
}

/* Commit of one agent: the old version releases what its state holds,
 * the new state takes its place. */
static void
reload_commit_agent (AgentSwitch        *sw,
                     const AhPluginDesc *old_desc,
                     const AhPluginDesc *new_desc)
{
  AhContext old_ctx = { .agent = sw->agent, .call = NULL, .config = NULL };

  if (sw->mode == SWITCH_KEEP)
    return;
  if (old_desc->agent_finalize != NULL)
    old_desc->agent_finalize (&old_ctx, sw->agent->state_mem);
  ah_pool_agent_set_state (sw->agent, g_steal_pointer (&sw->new_state), new_desc->state_size);
}

gboolean
ah_reload_switch (AhManifest     *manifest,
                  AhBus          *bus,
                  AhPool        **pools,
                  guint           n_pools,
                  AhPlugin       *new_plugin,
                  AhReloadResult *ret_result,
                  GError        **error)
{
  const AhPluginDesc *new_desc = ah_plugin_get_desc (new_plugin);
  g_autoptr(GArray) switches = g_array_new (FALSE, TRUE, sizeof (AgentSwitch));
  g_autofree GHashTable **new_configs = g_new0 (GHashTable *, n_pools);
  g_autoptr(GError) local_error = NULL;
  AhReloadResult result = { 0 };
  gint64 paused_at;
  gboolean ok = TRUE;

  g_return_val_if_fail (n_pools > 0, FALSE);

  /* 1. Checks that touch no agent. */
  for (guint p = 0; p < n_pools; p++)
    {
      const AhPluginDesc *old_desc = ah_pool_get_desc (pools[p]);

      if (!g_str_equal (old_desc->name, new_desc->name))
        {
          g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_RELOAD,
                       "%s: the new file is plugin '%s', not '%s'",
                       ah_plugin_get_path (new_plugin), new_desc->name, old_desc->name);
          return FALSE;
        }
      if (!ah_config_check (manifest, ah_pool_get_type (pools[p]), new_desc, &local_error))
        {
          g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_RELOAD,
                       "%s: the new version refuses the config: %s",
                       ah_plugin_get_path (new_plugin), local_error->message);
          return FALSE;
        }
    }

  /* 2. Every agent stops between two batches. */
  for (guint p = 0; p < n_pools; p++)
    {
      g_autoptr(GPtrArray) agents = NULL;
      SwitchMode mode = reload_switch_mode (ah_pool_get_desc (pools[p]), new_desc);

      ah_pool_lock_lifecycle (pools[p]);
      new_configs[p] = ah_config_table_new (ah_pool_get_type (pools[p]), new_desc);
      agents = ah_pool_get_live_agents (pools[p]);
      for (guint i = 0; i < agents->len; i++)
        {
          AgentSwitch sw = { g_ptr_array_index (agents, i), pools[p], mode, NULL, FALSE };

          g_array_append_val (switches, sw);
        }
    }
  paused_at = g_get_monotonic_time ();
  for (guint i = 0; i < switches->len; i++)
    ah_bus_endpoint_pause (bus, g_array_index (switches, AgentSwitch, i).agent->endpoint);

  /* 3. The new states, built while the agents are still. */
  for (guint p = 0, i = 0; p < n_pools && ok; p++)
    {
      const AhPluginDesc *old_desc = ah_pool_get_desc (pools[p]);

      for (; i < switches->len && g_array_index (switches, AgentSwitch, i).pool == pools[p]; i++)
        if (!reload_prepare_agent (&g_array_index (switches, AgentSwitch, i), old_desc, new_desc,
                                   new_configs[p], error))
          {
            ok = FALSE;
            break;
          }
    }

  /* 4. All or nothing. */
  for (guint p = 0, i = 0; p < n_pools; p++)
    {
      const AhPluginDesc *old_desc = ah_pool_get_desc (pools[p]);

      for (; i < switches->len && g_array_index (switches, AgentSwitch, i).pool == pools[p]; i++)
        {
          AgentSwitch *sw = &g_array_index (switches, AgentSwitch, i);

          if (!ok)
            {
              reload_discard_agent (sw, new_desc, new_configs[p]);
              continue;
            }
          reload_commit_agent (sw, old_desc, new_desc);
          result.n_agents++;
          if (sw->mode == SWITCH_KEEP)
            result.n_kept++;
          else if (sw->mode == SWITCH_MIGRATE)
            result.n_migrated++;
          else
            result.n_reinitialized++;
        }
      if (ok)
        ah_pool_replace_plugin (pools[p], new_plugin, g_steal_pointer (&new_configs[p]));
      else
        g_clear_pointer (&new_configs[p], g_hash_table_unref);
    }

  /* 5. Back to work, on whichever version is now in force. */
  for (guint i = 0; i < switches->len; i++)
    ah_bus_endpoint_resume (bus, g_array_index (switches, AgentSwitch, i).agent->endpoint);
  result.paused_ms = (g_get_monotonic_time () - paused_at) / 1000.0;
  for (guint p = 0; p < n_pools; p++)
    ah_pool_unlock_lifecycle (pools[p]);

  if (ok && result.n_reinitialized > 0)
    g_message ("reload of '%s': %u agent%s initialised afresh: the plugin has no "
               "state_snapshot/state_restore and does not declare its state layout stable",
               new_desc->name, result.n_reinitialized, result.n_reinitialized == 1 ? "" : "s");

  if (ret_result != NULL)
    *ret_result = result;
  return ok;
}
