/* The supervisor: what the host does about its agents from outside the
 * bus. One per host. It decides, the pools act (core/ah-pool.c):
 *
 * - supervision: a failed agent's type policy (one_for_one,
 *   one_for_all, temporary), the restart budget, stopping a type that
 *   exhausts it and escalating when the type is required;
 * - autoscaling: growing a type whose mailboxes stay deep, shrinking
 *   one whose agents stay idle;
 * - the watchdog: handler calls running past their type's deadline.
 *
 * Each job has its own thread, asleep on a condition until there is
 * work or a known deadline: a quiet system wakes none of them.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include "ah-pool-private.h"

G_BEGIN_DECLS

typedef struct _AhSupervisor AhSupervisor;

/* A type exhausted its restart budget and was stopped; @reason says
 * which budget and the last failure. Called on the supervisor thread;
 * must not block. */
typedef void (*AhSupervisorTypeStoppedFunc) (AhPool *pool, const char *reason,
                                             gpointer user_data);

/* What happens to an agent whose init or handler just failed. */
typedef enum {
  AH_SUPERVISOR_RESTART,       /* restart it in place now (one_for_one, one_for_all) */
  AH_SUPERVISOR_STOP_AGENT,    /* stop it: temporary, or its restart failed */
  AH_SUPERVISOR_STOP_TYPE,     /* the type is being stopped: leave it */
} AhSupervisorVerdict;

AhSupervisor *ah_supervisor_new   (AhPool **pools, guint n_pools,
                                   AhSupervisorTypeStoppedFunc stopped_func, gpointer user_data);
/* Starts the threads the manifest needs: supervision always, the scaler
 * if a type autoscales, the watchdog if a type has a handler deadline. */
void          ah_supervisor_start (AhSupervisor *self);
/* No more scaling: called before the bus drains at shutdown. */
void          ah_supervisor_stop_scaling (AhSupervisor *self);
/* Joins every thread; work not done yet is dropped (the pools are
 * terminated next). Idempotent. */
void          ah_supervisor_stop  (AhSupervisor *self);
void          ah_supervisor_free  (AhSupervisor *self);
/* Fills what the supervisor counts into @stats (scaled_up, scaled_down,
 * deadline_overruns). */
void          ah_supervisor_add_type_stats (AhSupervisor *self, AhPool *pool, AhTypeStats *stats);

/* ---- Called by the pools ----------------------------------------------- */

/* Agent @id of @pool failed (@reason: the plugin's message). Applies the
 * type's policy and budget, queues what must happen beyond the failed
 * agent (one_for_all, stopping it or the type), and says what the caller
 * does with the agent itself. From any thread, bus workers included;
 * never blocks beyond a short lock. */
AhSupervisorVerdict ah_supervisor_agent_failed (AhSupervisor *self, AhPool *pool, AhAgentId id,
                                                const char *reason);
/* Agent @id must be stopped (its restart failed, or temporary): done on
 * the supervisor thread. */
void          ah_supervisor_stop_agent   (AhSupervisor *self, AhPool *pool, AhAgentId id);
/* The handlers of @pool found its mailboxes deep for long enough. */
void          ah_supervisor_wake_scaler  (AhSupervisor *self);
/* @pool of an autoscaled type has more agents than its min: the scaler
 * watches for idle ones. Cheap when it already does. */
void          ah_supervisor_note_above_min (AhSupervisor *self);
/* A handler call of a type with a deadline started; it is due at
 * @due_us. Cheap when the watchdog is already due earlier. */
void          ah_supervisor_watch_arm    (AhSupervisor *self, gint64 due_us);

G_END_DECLS
