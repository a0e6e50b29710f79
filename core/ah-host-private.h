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

/* ah_host_request(), telling @endpoint_func (may be NULL) the id of the
 * temporary endpoint the request is made from before anything is sent:
 * the test harness keeps its own requests out of what agents published.
 * Does not check that the host runs. */
typedef void (*AhHostRequestEndpointFunc) (AhAgentId endpoint, gpointer user_data);
GBytes     *ah_host_request_full     (AhHost *self, const char *subject, gconstpointer data,
                                      gsize size, guint timeout_ms,
                                      AhHostRequestEndpointFunc endpoint_func,
                                      gpointer user_data, GError **error);

G_END_DECLS
