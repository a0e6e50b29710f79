/* agenthost: basic types shared by the plugin ABI and the embedding API.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#if !defined (AH_INSIDE) && !defined (AH_COMPILATION)
#error "Only <agenthost/agenthost.h> can be included directly."
#endif

#include <glib.h>
#include <gio/gio.h>   /* GCancellable, for offloaded work */

G_BEGIN_DECLS

#if defined (AH_COMPILATION)
#  define AH_API __attribute__ ((visibility ("default"))) extern
#else
#  define AH_API extern
#endif

/* Symbols a plugin exports: its one entry point. */
#define AH_PLUGIN_EXPORT __attribute__ ((visibility ("default")))

/* The release of the host library these headers belong to. */
#define AH_VERSION_MAJOR 0
#define AH_VERSION_MINOR 1
#define AH_VERSION_MICRO 0
#define AH_VERSION_STRING "0.1.0"

/* An agent's address on the bus. Ids are never reused within one run,
 * so a message sent to an agent that has stopped is dead-lettered rather
 * than delivered to a stranger. 0 is never a valid id. */
typedef guint64 AhAgentId;
/* A subject interned by the host (ah_subject_intern): a handle that
 * routes without a lookup and compares by pointer. */
typedef struct _AhSubject AhSubject;
#define AH_AGENT_ID_NONE ((AhAgentId) 0)

/* Priority lanes of a mailbox. System traffic (lifecycle, control, reload,
 * request timeouts) is always taken before normal traffic and is never
 * refused by an overflow policy. */
typedef enum {
  AH_PRIORITY_NORMAL = 0,
  AH_PRIORITY_SYSTEM = 1,
} AhPriority;

/* What a delivered message is. */
typedef enum {
  AH_MESSAGE_PUBLISH = 0,    /* published on a subject */
  AH_MESSAGE_DIRECT,         /* sent to one agent by id */
  AH_MESSAGE_REQUEST,        /* expects a reply: answer with ah_reply() */
  AH_MESSAGE_REPLY,          /* the answer to a request this agent made */
  AH_MESSAGE_TIMEOUT,        /* a request this agent made got no reply in time */
  AH_MESSAGE_NO_RESPONDERS,  /* a request this agent made had nobody to go to */
  AH_MESSAGE_OFFLOAD_DONE,   /* (ABI 1.1) an ah_offload() of this agent returned a result */
  AH_MESSAGE_OFFLOAD_FAILED, /* (ABI 1.1) an ah_offload() of this agent failed; the payload is the error message */
} AhMessageKind;

/* How the agents of one type share a subscription. */
typedef enum {
  AH_DELIVERY_QUEUE = 0,     /* one agent of the group gets each message */
  AH_DELIVERY_BROADCAST,     /* every agent of the group gets each message */
} AhDelivery;

/* What happens when a publish meets a full mailbox. */
typedef enum {
  AH_OVERFLOW_FAIL = 0,      /* the publish fails; the message is counted failed and dead-lettered */
  AH_OVERFLOW_BLOCK,         /* the publisher waits for room (see docs/manifest.md) */
} AhOverflow;

G_END_DECLS
