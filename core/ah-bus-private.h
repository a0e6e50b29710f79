/* The event bus: subjects, subscriptions, mailboxes, workers.
 *
 * Internal to libagenthost. The bus knows nothing of plugins, manifests
 * or dlopen: it moves AhMessages between endpoints (mailboxes with a
 * handler function). The pools make each agent an endpoint.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include <agenthost/agenthost.h>

G_BEGIN_DECLS

typedef struct _AhBus      AhBus;
typedef struct _AhEndpoint AhEndpoint;   /* one agent's mailbox + handler */
typedef struct _AhBusGroup AhBusGroup;   /* endpoints sharing subscriptions */
typedef struct _AhBusCall  AhBusCall;    /* one handler invocation, on a worker */

typedef struct {
  guint      n_workers;          /* 0: number of online CPUs */
  guint      publish_batch;      /* outbox size before a mid-call flush; 0: 256 */
  guint      handler_batch;      /* messages per handler call; 0: 32 */
  guint      mailbox_capacity;   /* normal-priority messages per mailbox; 0: 1024 */
  AhOverflow overflow;
  /* Each worker on a CPU of its own (the process's allowed CPUs, in
   * order); refused, with a message, when there are more workers than
   * CPUs. Unpinned, spinning workers yield now and then, as the
   * scheduler may put two of them on one CPU. */
  gboolean   pin_workers;
} AhBusConfig;

typedef struct {
  guint64 published, accepted, delivered, dead_lettered, failed, in_flight;
  guint64 batches, requests, request_timeouts;
  guint64 retried;                /* failed batches' messages delivered again */
  /* Times a spinning worker gave its CPU to another worker waiting for
   * it (unpinned workers the scheduler put on one CPU). */
  guint64 cpu_handoffs;
  /* Endpoints a worker out of work took from another's run queue. */
  guint64 steals;
  gdouble latency_p50_us, latency_p95_us, latency_p99_us, latency_p999_us, latency_max_us;
  /* The longest any worker waited for its own lock (held by a publisher,
   * a pause...): how long the bus held a worker up. */
  gdouble worker_stall_max_us;
  guint   n_workers;
  guint   n_pinned;               /* workers running on a CPU of their own */
} AhBusCounters;

typedef enum {
  AH_DEAD_LETTER_NO_ROUTE,        /* nobody subscribed to the subject */
  AH_DEAD_LETTER_NO_AGENT,        /* direct send to an id that does not exist */
  AH_DEAD_LETTER_AGENT_STOPPED,   /* still in a mailbox when its endpoint closed */
  AH_DEAD_LETTER_LATE_REPLY,      /* reply to a request that is complete or timed out */
  AH_DEAD_LETTER_OVERFLOW,        /* full mailbox under AH_OVERFLOW_FAIL (counted failed) */
  AH_DEAD_LETTER_HANDLER_FAILED,  /* the handler returned FALSE (counted failed) */
  AH_DEAD_LETTER_SHUTDOWN,        /* still queued when the bus stopped */
} AhDeadLetterReason;

/* Runs on a worker. The messages are borrowed for the call. */
typedef gboolean (*AhEndpointFunc)   (AhBusCall *call, const AhMessage * const *messages,
                                      guint n_messages, gpointer user_data, GError **error);
/* Every dead letter, on the thread that dead-lettered it. Must not block
 * or publish. */
typedef void     (*AhDeadLetterFunc) (const AhMessage *message, AhAgentId intended,
                                      AhDeadLetterReason reason, gpointer user_data);
/* Called each time the bus becomes idle (nothing in flight, no request
 * pending), from whichever thread made it so. Must not block. */
typedef void     (*AhBusIdleFunc)    (gpointer user_data);

const char *ah_dead_letter_reason_to_string (AhDeadLetterReason reason);

/* Subjects: dot-separated non-empty tokens of printable ASCII without
 * spaces, at most 255 bytes; '*' and '>' only in patterns, as whole
 * tokens, '>' last. */
gboolean    ah_subject_is_valid       (const char *subject);
gboolean    ah_pattern_is_valid       (const char *pattern);
gboolean    ah_pattern_matches        (const char *pattern, const char *subject);

AhBus      *ah_bus_new                (const AhBusConfig *config);
/* Starts the workers. Messages published before are queued and handled
 * once the workers run. */
void        ah_bus_start              (AhBus *self);
/* Waits up to @drain_timeout_us for the bus to go idle, stops the
 * workers, and dead-letters (AH_DEAD_LETTER_SHUTDOWN) what is left, so
 * the account stays exact. Pending requests are cancelled. Publishing
 * after this fails. */
void        ah_bus_stop               (AhBus *self, gint64 drain_timeout_us);
void        ah_bus_free               (AhBus *self);
const AhBusConfig *ah_bus_get_config  (AhBus *self);

void        ah_bus_set_dead_letter_func (AhBus *self, AhDeadLetterFunc func, gpointer user_data);
void        ah_bus_set_idle_func      (AhBus *self, AhBusIdleFunc func, gpointer user_data);
gboolean    ah_bus_wait_idle          (AhBus *self, gint64 timeout_us);
gboolean    ah_bus_is_idle            (AhBus *self);
void        ah_bus_get_counters       (AhBus *self, AhBusCounters *ret_counters);

/* Endpoints. Ids come from one counter per bus and are never reused. */
AhEndpoint *ah_bus_endpoint_new       (AhBus *self, AhEndpointFunc func, gpointer user_data);
/* @n_endpoints endpoints at once (consecutive ids), each with its
 * @user_datas entry, registered and added to each of @groups under one
 * lock: how pools pre-warm and spawn batches. */
void        ah_bus_endpoints_new      (AhBus *self, AhEndpointFunc func,
                                       gpointer const *user_datas, guint n_endpoints,
                                       AhBusGroup * const *groups, guint n_groups,
                                       AhEndpoint **ret_endpoints);
AhAgentId   ah_endpoint_get_id        (AhEndpoint *endpoint);
gpointer    ah_endpoint_get_user_data (AhEndpoint *endpoint);
/* Finds the endpoint registered as @id and, if its handler is @handler,
 * returns @select (its user data, @data), called while the endpoint
 * cannot be unregistered; NULL otherwise. The bus's id table is an
 * index for whoever made the endpoints: pools find their agents by id
 * through it. @select must not call into the bus. */
typedef gpointer (*AhEndpointSelectFunc) (gpointer user_data, gpointer data);
gpointer    ah_bus_endpoint_select    (AhBus *self, AhAgentId id, AhEndpointFunc handler,
                                       AhEndpointSelectFunc select, gpointer data);
/* Removes the endpoint from its groups, waits until its handler is not
 * running (unless called from that very handler: then the close
 * completes when the handler returns), dead-letters what is left in its
 * mailbox and frees it. Further sends to its id are dead-lettered. */
void        ah_bus_endpoint_close     (AhBus *self, AhEndpoint *endpoint);
/* Closes @endpoint only if nothing waits in its mailbox, no message
 * routed to it is still on its way, and its handler is neither running
 * nor scheduled: then no message is dead-lettered by the close (short of
 * a direct send racing it). Returns whether it closed it. For scaling
 * down: take the endpoint out of its groups first. Not from its own
 * handler. */
gboolean    ah_bus_endpoint_close_if_idle (AhBus *self, AhEndpoint *endpoint);

/* Groups: the subscriptions of one agent type, in one delivery mode. */
AhBusGroup *ah_bus_group_new          (AhBus *self, const char *name, AhDelivery delivery);
void        ah_bus_group_add          (AhBusGroup *group, AhEndpoint *endpoint);
void        ah_bus_group_remove       (AhBusGroup *group, AhEndpoint *endpoint);
guint       ah_bus_group_get_size     (AhBusGroup *group);
guint       ah_bus_subscribe          (AhBus *self, const char *pattern, AhBusGroup *group,
                                       GError **error);
/* Observers: @func runs on a worker for each matching message (host
 * subscriptions, the test harness). Counted like an endpoint. */
guint       ah_bus_subscribe_func     (AhBus *self, const char *pattern, AhDelivery delivery,
                                       AhEndpointFunc func, gpointer user_data, GError **error);
void        ah_bus_unsubscribe        (AhBus *self, guint subscription_id);

/* Publishing from any thread outside a handler. @sender may be
 * AH_AGENT_ID_NONE. Under AH_OVERFLOW_BLOCK these wait for room. */
gboolean    ah_bus_publish            (AhBus *self, AhAgentId sender, const char *subject,
                                       gconstpointer data, gsize size, AhPriority priority,
                                       GError **error);
gboolean    ah_bus_send               (AhBus *self, AhAgentId sender, AhAgentId to,
                                       const char *subject, gconstpointer data, gsize size,
                                       AhPriority priority, GError **error);

/* An advisory event from the host itself (lifecycle, reload), at system
 * priority, delivered only if someone subscribes to @subject: an event
 * nobody hears is not counted at all, so events never show up as dead
 * letters in the account. From any thread, handlers' included; never
 * waits. Returns TRUE when someone got it. */
gboolean    ah_bus_publish_event      (AhBus *self, const char *subject,
                                       gconstpointer data, gsize size);

/* Publishing from inside a handler: queued in the call's outbox and
 * routed in order when the handler returns (or when the outbox holds
 * publish_batch messages). Return FALSE when refused (counted failed). */
gboolean    ah_bus_call_publish       (AhBusCall *call, const char *subject,
                                       gconstpointer data, gsize size);
/* Interned subjects: the handles plugins hold (ah_subject_intern). The
 * subject is checked once, here; the handle lives as long as the bus.
 * Publishing through it skips the check and the copy of the subject, and
 * its recipients can compare subjects by pointer. */
const AhSubject *ah_bus_intern_subject (AhBus *self, const char *subject, GError **error);
gboolean    ah_bus_call_publish_interned (AhBusCall *call, const AhSubject *subject,
                                          gconstpointer data, gsize size);
/* Whether any subscription matches @subject (its group may still have no
 * member): when not, an event on it is not worth formatting. Lock-free
 * unless subscriptions changed since it was last asked. */
gboolean    ah_bus_subject_is_subscribed (AhBus *self, const AhSubject *subject);
gboolean    ah_bus_call_send          (AhBusCall *call, AhAgentId to, const char *subject,
                                       gconstpointer data, gsize size);
gboolean    ah_bus_call_reply         (AhBusCall *call, const AhMessage *request,
                                       gconstpointer data, gsize size);
guint64     ah_bus_call_request       (AhBusCall *call, const char *subject,
                                       gconstpointer data, gsize size, guint timeout_ms);
/* ah_bus_call_request() through an interned subject: no check of the
 * subject and no lookup of its string. */
guint64     ah_bus_call_request_interned (AhBusCall *call, const AhSubject *subject,
                                          gconstpointer data, gsize size, guint timeout_ms);
/* For a supervisor, from an endpoint func about to return FALSE: asks
 * the bus to deliver @message (one of the failing batch's messages)
 * once more instead of dead-lettering it with the batch. It goes to
 * another member of @group when @group (nullable) has one, else back to
 * this endpoint, behind what its mailbox holds. A message is redelivered
 * at most once: for a message that already was
 * (ah_message_is_redelivered()) this returns FALSE and it is
 * dead-lettered with the batch. The message stays accepted once and is
 * settled once, by its second handler. */
gboolean    ah_bus_call_retry         (AhBusCall *call, const AhMessage *message,
                                       AhBusGroup *group);
AhEndpoint *ah_bus_call_get_endpoint  (AhBusCall *call);
/* CLOCK_MONOTONIC ns when the bus started this call: an endpoint func
 * timing its handler needs no clock read of its own for the start. */
gint64      ah_bus_call_get_start_ns  (AhBusCall *call);
/* Reads the clock once the handler is done; the bus then stamps the
 * call's messages with that reading instead of reading the clock again
 * when it flushes them (every one was made before it). */
gint64      ah_bus_call_read_end_ns   (AhBusCall *call);
AhBus      *ah_bus_call_get_bus       (AhBusCall *call);
guint       ah_bus_call_get_worker    (AhBusCall *call);

/* Normal-priority messages waiting in @endpoint's mailbox, read without a
 * lock: a snapshot for autoscaling and inspection, not an exact count. */
guint       ah_bus_endpoint_get_depth (AhEndpoint *endpoint);

/* ---- For hot reload ------------------------------------------------- */

/* Stops giving @endpoint batches: returns once its handler is not
 * running (waiting out a running batch) and will not run until
 * ah_bus_endpoint_resume(). Messages keep arriving in its mailbox, in
 * order, under the usual capacity rules; nothing is dropped. Pause is a
 * flag (pausing twice is pausing once); resume clears it and schedules
 * the endpoint if it has mail. Never from the
 * endpoint's own handler (it would wait for itself). The bus is not idle
 * while a paused endpoint holds mail, as those messages are in flight. */
void        ah_bus_endpoint_pause     (AhBus *self, AhEndpoint *endpoint);
void        ah_bus_endpoint_resume    (AhBus *self, AhEndpoint *endpoint);

/* ---- For the offload pool and the test harness ----------------------- */

/* Work the bus cannot see (an offloaded function running) keeps it from
 * being idle: one hold per pending piece of work, released when its
 * result has been sent (or dropped). */
void        ah_bus_hold               (AhBus *self);
void        ah_bus_release            (AhBus *self);
/* A fresh id from the bus's correlation counter (never 0): offload ids
 * and request correlation ids never collide. */
guint64     ah_bus_new_correlation    (AhBus *self);
/* ah_bus_send with the kind and correlation id given: offload results
 * (AH_MESSAGE_OFFLOAD_DONE / _FAILED). From any thread outside a
 * handler; never blocks (a full mailbox under AH_OVERFLOW_BLOCK still
 * takes it: the agent asked for it). */
gboolean    ah_bus_send_full          (AhBus *self, AhAgentId sender, AhAgentId to,
                                       const char *subject, gconstpointer data, gsize size,
                                       AhPriority priority, AhMessageKind kind,
                                       guint64 correlation, GError **error);

/* Sees every message the bus accepts, once per publish/send/request/reply
 * (not once per recipient), on the accepting thread, before routing.
 * @recipient is the addressee of direct sends and replies, else
 * AH_AGENT_ID_NONE. Must not block or publish. For the test harness. */
typedef void (*AhBusTapFunc) (const AhMessage *message, AhAgentId recipient, gpointer user_data);
void        ah_bus_set_tap_func       (AhBus *self, AhBusTapFunc func, gpointer user_data);

G_END_DECLS
