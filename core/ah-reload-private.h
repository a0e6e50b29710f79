/* Hot reload: switching the agents of a plugin to a new version of it.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include "ah-pool-private.h"

G_BEGIN_DECLS

typedef struct {
  guint   n_agents;       /* agents switched */
  guint   n_migrated;     /* of which through state_snapshot/state_restore */
  guint   n_kept;         /* of which kept as is (stable layout) */
  guint   n_reinitialized;/* of which initialised afresh */
  gdouble paused_ms;      /* from the first pause to the last resume */
} AhReloadResult;

/* Switches every live agent of @pools (the pools whose plugin is the
 * file @new_plugin was loaded from) to @new_plugin, or to nothing at all:
 * on failure every agent runs on with the old version and its old state,
 * and @error (AH_HOST_ERROR_RELOAD) says why. Takes each pool's lifecycle
 * lock, pauses every agent between two batches, migrates, then commits
 * or rolls back, and resumes them all. Never called from a handler. */
gboolean ah_reload_switch (AhManifest *manifest, AhBus *bus, AhPool **pools, guint n_pools,
                           AhPlugin *new_plugin, AhReloadResult *ret_result, GError **error);

G_END_DECLS
