/* Offloading blocking work: a bounded pool of I/O threads whose results
 * come back to the agent that asked as ordinary messages.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include "ah-bus-private.h"

G_BEGIN_DECLS

typedef struct _AhOffloadPool AhOffloadPool;

/* @n_threads I/O threads at most (started on demand), and at most
 * @queue_capacity offloads waiting or running at once. */
AhOffloadPool *ah_offload_pool_new    (AhBus *bus, guint n_threads, guint queue_capacity);
/* Runs @func (@data) on an I/O thread and sends its outcome to @agent
 * (AH_MESSAGE_OFFLOAD_DONE / _FAILED, correlation = the returned id).
 * Holds the bus (not idle) until the outcome is sent. Returns 0 when the
 * queue is full or the pool stopped; @destroy (@data) has then run.
 * @code is the plugin @func and @destroy belong to: the task keeps a
 * reference until both have returned, so a reload never closes a module
 * whose code an I/O thread may still run. */
guint64        ah_offload_pool_submit (AhOffloadPool *self, AhAgentId agent, AhPlugin *code,
                                       AhOffloadFunc func, gpointer data, GDestroyNotify destroy);
/* Refuses new work, cancels the running functions' cancellable, waits
 * for every thread, and drops what never ran (each hold released, each
 * @destroy run). Call before ah_bus_stop() so results still in flight
 * reach their agents. Idempotent. */
void           ah_offload_pool_stop   (AhOffloadPool *self);
void           ah_offload_pool_free   (AhOffloadPool *self);

G_END_DECLS
