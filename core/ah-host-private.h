/* The host: what other parts of libagenthost (the test harness, the
 * offload pool) may reach inside it.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include "ah-bus-private.h"
#include "ah-pool-private.h"

G_BEGIN_DECLS

AhBus      *ah_host_get_bus          (AhHost *self);
AhManifest *ah_host_get_manifest     (AhHost *self);
/* The pool of agent type @name, or NULL. */
AhPool     *ah_host_find_pool        (AhHost *self, const char *name);

G_END_DECLS
