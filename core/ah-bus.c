/* The event bus: routing, mailboxes, workers, request/reply, counters.
 *
 * Threads. n_workers worker threads; each endpoint belongs to one worker
 * at a time (round robin at creation), so one endpoint's handler never
 * runs on two threads at once. A worker's mutex guards its run queue and
 * the mailboxes of all its endpoints. A worker that runs out of work
 * takes a scheduled endpoint from the run queue of one that has several
 * waiting (ah_worker_steal), and a parked worker is woken to do so when
 * a run queue gets a second endpoint (ah_worker_push_locked). The
 * endpoint moves with its mailbox, under both workers' locks, so anyone
 * holding the lock of an endpoint's worker knows it stays there
 * (ah_endpoint_lock_worker). Locks are pthread ones, not GMutex:
 * ThreadSanitizer cannot see GLib's futex mutex (STYLE.md, section 8).
 *
 * Lock order. route_lock (subjects, trie, subscriptions, groups, the id
 * table) is never held while a worker lock is taken, and two worker
 * locks are held at once only by a stealing worker, lower index first;
 * requests_lock, idle_lock and dead_letter_lock are leaves. So the bus
 * cannot deadlock on its own locks. What it can do, like every system of
 * bounded mailboxes, is stall under AH_OVERFLOW_BLOCK when agents fill
 * each other's mailboxes in a cycle: A waits for room at B while B
 * waits for room at A, and neither handler runs again. The one cycle the
 * bus breaks itself is an endpoint sending to its own full mailbox (see
 * ah_endpoint_enqueue_locked).
 *
 * Endpoint life. An endpoint is refcounted: its creator holds one
 * reference (dropped by ah_bus_endpoint_close or ah_bus_free), a run
 * queue holds one while the endpoint is scheduled or running, a routed
 * but not yet queued message holds one for its recipient, a full
 * mailbox holds one for each sender blocked on it, and a pending request
 * holds one for its requester (the reply goes there without a lookup).
 *
 * Pause (hot reload). A paused endpoint keeps its mailbox, its groups
 * and its id; it only stops being given turns. Nothing puts it on a run
 * queue (new mail leaves it IDLE, a wake-up of its deferred queue leaves
 * it IDLE with the queue still there), ah_bus_endpoint_pause() unlinks it
 * if it was scheduled and waits out a running turn on state_cond, and
 * ah_bus_endpoint_resume() schedules it if it has anything to do. Its
 * mail stays accepted and unsettled, so the bus is not idle meanwhile.
 *
 * Accounting. Every message is accepted once per recipient and then
 * settled exactly once: delivered, dead-lettered or failed. Settling
 * happens after the dead-letter callback and after a batch's outbox is
 * flushed, and a worker's settlements reach in_flight only once it has
 * nothing left to run, so in_flight == 0 really means nothing is left
 * to do. The bus is idle when, besides, no request is pending and nobody
 * holds it (ah_bus_hold: work the bus cannot see, such as a running
 * offload).
 *
 * The hot path, batch by batch. A handler's publishes wait in its
 * worker's outbox (an array of the bus's own, appended inline),
 * unrouted (under AH_OVERFLOW_BLOCK; under _FAIL each is
 * routed when made, to know whether a mailbox refused it). At the flush
 * (the handler returned, or publish_batch calls were made) the outbox is
 * routed under one read lock: one subject lookup per run of messages on
 * one subject, one clock read to stamp them, one accept for all. A queue
 * group takes a run in chunks (up to handler_batch messages per member,
 * no more than an even share per worker), so bursts arrive as full
 * handler batches, each to the member whose turn it is unless its
 * worker has more to do than another (see AhWorkerLoads). Delivery cuts the envelopes into runs (one
 * endpoint each), sorts the runs by worker, takes each worker lock once
 * (spinning briefly for it before sleeping: see ah_worker_lock) and
 * signals each worker at most once, after unlocking, and queues a run to
 * one endpoint with one room check; a handler's one message to an agent
 * of its own worker (each hop of a round trip there) skips all that
 * (ah_bus_deliver_local). Reference counts move n at a
 * time, and a worker sums its releases of a message before applying
 * them, so a broadcast message's count does not bounce between cores
 * per recipient. Messages of up to 256 bytes come from per-thread
 * magazines of blocks (ah-message.c), not malloc. A worker records the
 * latency of a run of messages with one publish time in one step.
 *
 * Waking. A worker out of work spins on its run queue's length for
 * AH_WORKER_SPIN_NS, then parks on its condition variable; a publisher
 * signals a worker only when it made one of its endpoints runnable and
 * the worker is parked. Unpinned, a spinning worker gives its CPU to
 * another worker of the bus waiting for that CPU (see ah_worker_spin).
 * No thread polls on a timer: the request timer sleeps until its next
 * deadline.
 *
 * Memory per endpoint matters (one per agent, millions of them): flags
 * are bytes, the system lane exists only once used, the id table is
 * paged (ids are never reused), an endpoint keeps its position in its
 * first group itself, and endpoints come from the bus's own chunks
 * (huge pages for the big ones) in 128-byte slots that are reused.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE   /* pthread_setname_np, pthread_rwlockattr_setkind_np */

#include "ah-bus-private.h"
#include "ah-clock-private.h"
#include "ah-message-private.h"

#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sched.h>
#include <string.h>
#include <time.h>

#define AH_BUS_DEFAULT_PUBLISH_BATCH    256
#define AH_BUS_DEFAULT_HANDLER_BATCH    32
#define AH_BUS_DEFAULT_MAILBOX_CAPACITY 1024
#define AH_BUS_MAX_WORKERS              256
/* Past this many distinct subjects, new ones are routed without being
 * cached, so a publisher inventing subjects cannot grow the table
 * without bound. */
#define AH_BUS_SUBJECT_CACHE_MAX        65536
#define AH_BUS_MESSAGE_MAX_SIZE         ((gsize) 1 << 30)
/* A lane gives its memory back when it empties, above this size, so a
 * burst does not leave 100 000 idle agents holding big rings; up to it,
 * an agent that keeps getting full handler batches keeps its ring
 * instead of allocating it again for every batch. */
#define AH_LANE_KEEP_SLOTS              64
#define AH_LANE_FIRST_SLOTS             4

#define AH_NS_PER_SECOND G_GINT64_CONSTANT (1000000000)

/* ---- Counters ------------------------------------------------------------ */

typedef enum {
  AH_TALLY_PUBLISHED,
  AH_TALLY_ACCEPTED,
  AH_TALLY_DELIVERED,
  AH_TALLY_DEAD_LETTERED,
  AH_TALLY_FAILED,
  AH_TALLY_BATCHES,
  AH_TALLY_REQUESTS,
  AH_TALLY_REQUEST_TIMEOUTS,
  AH_TALLY_RETRIED,
  AH_TALLY_CPU_HANDOFFS,
  AH_TALLY_STEALS,
  AH_TALLY_N_FIELDS
} AhTallyField;

typedef struct {
  _Atomic guint64 values[AH_TALLY_N_FIELDS];
} AhTally;

/* Latency histogram: values below 16 ns get a bucket each; above, each
 * power of two is split in 16 linear sub-buckets, so a bucket's midpoint
 * is within 1/32 of any value in it. */
#define AH_LATENCY_SUB_BITS  4
#define AH_LATENCY_SUBS      (1u << AH_LATENCY_SUB_BITS)
#define AH_LATENCY_N_BUCKETS ((64 - AH_LATENCY_SUB_BITS + 1) * AH_LATENCY_SUBS)

typedef struct {
  _Atomic guint64 counts[AH_LATENCY_N_BUCKETS];
  _Atomic guint64 max_ns;
} AhLatency;

/* ---- Structures ------------------------------------------------------------ */

typedef struct _AhWorker AhWorker;

/* Releases of one message by one worker, not yet applied. A broadcast
 * message is released by each of its recipients, on every worker: done
 * one by one, its reference count would bounce between the cores for
 * each recipient. A worker sums its own releases of a message and
 * applies them in one step, when the slot is needed for another message
 * or before the worker runs out of work. */
#define AH_WORKER_UNREF_SLOTS 64
/* Correlation ids a worker takes from the bus at a time. */
#define AH_WORKER_CORRELATION_BLOCK 256

typedef struct {
  AhMessage *message;
  guint      count;
} AhPendingUnref;

typedef enum {
  AH_ENDPOINT_IDLE,        /* nothing queued, or closed */
  AH_ENDPOINT_SCHEDULED,   /* on its worker's run queue */
  AH_ENDPOINT_RUNNING,     /* its handler (or its deferred retry) runs */
  AH_ENDPOINT_BLOCKED,     /* its deferred messages wait for room elsewhere */
} AhEndpointState;

/* A ring of messages that grows by doubling. Its size is a power of
 * two, so positions wrap with a mask rather than a division. */
typedef struct {
  AhMessage **items;
  guint       allocated;
  guint       head;
  guint       length;
} AhLane;

/* A message routed to one recipient, holding a reference to each. */
typedef struct {
  AhMessage  *message;
  AhEndpoint *to;
} AhEnvelope;

/* A growable array of envelopes, for a worker's outbox: appended to
 * once per message published, where GArray's out-of-line append cost a
 * tenth of the publisher's time (perf). */
typedef struct {
  AhEnvelope *items;
  guint       len;
  guint       allocated;
} AhEnvelopes;

static G_NO_INLINE void
ah_envelopes_grow (AhEnvelopes *envelopes,
                   guint        n)
{
  guint allocated = MAX (envelopes->allocated, 64u);

  while (allocated < envelopes->len + n)
    allocated *= 2;
  envelopes->items = g_renew (AhEnvelope, envelopes->items, allocated);
  envelopes->allocated = allocated;
}

/* Room for @n more envelopes at the end, which the caller fills in. */
static inline AhEnvelope *
ah_envelopes_extend (AhEnvelopes *envelopes,
                     guint        n)
{
  AhEnvelope *out;

  if (G_UNLIKELY (envelopes->len + n > envelopes->allocated))
    ah_envelopes_grow (envelopes, n);
  out = envelopes->items + envelopes->len;
  envelopes->len += n;
  return out;
}

static inline void
ah_envelopes_push (AhEnvelopes *envelopes,
                   AhEnvelope   envelope)
{
  *ah_envelopes_extend (envelopes, 1) = envelope;
}

/* Endpoints by id. Ids are handed out in sequence and never reused, so
 * the table is an array of pages of consecutive ids: a lookup is two
 * index operations, an endpoint costs 8 bytes of table (a hash table
 * costs about 50), and a page is freed when its last endpoint leaves.
 * (The worst case, one long-lived endpoint per page, keeps 8 bytes per
 * id ever handed out in that page.) Under route_lock. */
#define AH_ID_PAGE_BITS 12
#define AH_ID_PAGE_SIZE (1u << AH_ID_PAGE_BITS)

typedef struct {
  guint       n_live;
  AhEndpoint *slots[AH_ID_PAGE_SIZE];
} AhIdPage;

typedef struct {
  AhIdPage **pages;
  gsize      n_pages;
} AhIdTable;

/* Endpoint memory: one per agent, made by the hundred thousand at
 * pre-warm. They come from chunks the bus maps itself, in 128-byte
 * slots (two cache lines of their own, so endpoints of different
 * workers never share one), and a closed endpoint's slot is kept for
 * the next: touched once, reused, given back when the bus is freed.
 * Chunks grow from 64 KiB to 2 MiB; the 2 MiB ones ask for a huge
 * page, so pre-warming a large pool costs one page fault per 2 MiB
 * rather than one per 4 KiB (about 11 us each on the CI machine).
 * Under AddressSanitizer every endpoint is its own allocation, so a use
 * after free is still caught. */
#define AH_ENDPOINT_SLOT          128
#define AH_ARENA_FIRST_CHUNK      (64 * 1024)
#define AH_ARENA_HUGE_CHUNK       (2 * 1024 * 1024)

#if defined(__SANITIZE_ADDRESS__)
#define AH_ENDPOINT_ARENA 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AH_ENDPOINT_ARENA 0
#endif
#endif
#ifndef AH_ENDPOINT_ARENA
#define AH_ENDPOINT_ARENA 1
#endif

typedef struct _AhFreeSlot AhFreeSlot;
struct _AhFreeSlot {
  AhFreeSlot *next;
};

typedef struct {
  pthread_mutex_t lock;
  GArray         *chunks;      /* (element-type AhArenaChunk) */
  guint8         *cursor;      /* where the newest chunk is carved from */
  guint8         *end;
  gsize           next_size;
  AhFreeSlot     *free_slots;  /* closed endpoints' slots */
} AhEndpointArena;

typedef struct {
  gpointer memory;
  gsize    size;
} AhArenaChunk;

/* One per agent, so it is kept small: flags are bytes, and an endpoint
 * does not list the groups it is in (see ah_bus_unregister_endpoint_unlocked). */
struct _AhEndpoint {
  AhAgentId       id;
  AhEndpointFunc  func;
  gpointer        user_data;
  /* Changed only with the locks of the old and the new worker held (a
   * steal); read without them to know which lock to take. */
  AhWorker *_Atomic worker;
  atomic_int      ref_count;
  /* Normal messages queued plus, under AH_OVERFLOW_FAIL, slots reserved
   * by routed messages not yet queued. Changed under the worker lock,
   * except for reservations, which are a compare-and-swap. */
  atomic_uint     normal_used;

  /* Under worker->lock: */
  AhLane         *system_lane;      /* made with its first system message: they are rare */
  AhLane          normal_lane;
  guint           room_waiters;     /* external publishers waiting for room */
  guint8          state;            /* AhEndpointState */
  guint8          closing;
  guint8          paused;           /* given no turn until resumed */
  guint8          retry_pending;    /* woken while running: retry the deferred queue */
  GPtrArray      *blocked_senders;  /* (element-type AhEndpoint) (owned) waiting for room */
  AhEndpoint     *run_next;         /* its run queue is singly linked (see ah_bus_endpoint_pause) */

  /* Only while RUNNING, by its worker; otherwise by whoever closes it. */
  GArray         *deferred;         /* (element-type AhEnvelope) in send order */
  guint8          close_requested;  /* closed from its own handler */

  /* Under bus->route_lock; also read without it, by a reply on its way
   * to it (an endpoint closed meanwhile dead-letters the reply anyway). */
  atomic_uchar    registered;       /* in the id table */
  guint           home_position;    /* in @home_group's members, plus one */
  AhBusGroup     *home_group;       /* its first group, which needs no table entry */
};

static inline gboolean
ah_endpoint_has_system_mail (const AhEndpoint *endpoint)
{
  return endpoint->system_lane != NULL && endpoint->system_lane->length > 0;
}

struct _AhBusGroup {
  AhBus       *bus;
  char        *name;
  AhDelivery   delivery;
  GPtrArray   *members;        /* (element-type AhEndpoint) under route_lock */
  /* Endpoint -> its index in @members plus one, so that adding and
   * removing stay O(1) in pools of 100 000 agents. */
  GHashTable  *positions;
  atomic_uint  next_member;    /* round robin for AH_DELIVERY_QUEUE */
};

typedef struct {
  guint       id;
  char       *pattern;
  AhBusGroup *group;
  AhEndpoint *observer;        /* subscribe_func: its endpoint, owning @group */
} AhSubscription;

/* The groups a subject resolves to, each once. */
typedef struct {
  guint       n_groups;
  AhBusGroup *groups[];
} AhTargets;

/* A cached subject. It is also the AhSubject handle plugins hold (see
 * ah-message-private.h), so @subject stays first: entries live as long
 * as the bus. */
typedef struct {
  char      *subject;          /* the interned subject; the table's key */
  guint      generation;       /* of the bus when @targets was resolved */
  AhTargets *targets;
  /* ((generation + 1) << 1) | (targets has a group), for lock-free
   * readers; 0 until resolved. */
  _Atomic guint64 subscribed_state;
} AhSubjectEntry;

G_STATIC_ASSERT (G_STRUCT_OFFSET (AhSubjectEntry, subject) == G_STRUCT_OFFSET (AhSubject, subject));

/* A pending request, in the bus's table of them: a request message
 * carries its place (AhMessage.request_slot), so the reply completes it
 * without a lookup, and the table needs no hash. A free slot has
 * correlation 0 and is on the free list. (A GHashTable keyed by the id,
 * with its insert and its removal, was a fifth of a round trip between
 * two agents of one worker.) */
typedef struct {
  guint64     correlation;       /* 0: free */
  /* A reference while pending: the reply goes to it without a lookup of
   * its id under route_lock (a fifth of a reply, callgrind). */
  AhEndpoint *requester;
  const char *subject;           /* interned (the bus's), or @subject_copy */
  char       *subject_copy;
  guint32     next_free;         /* the next free slot, plus one; 0 ends the list */
} AhPendingRequest;

typedef struct {
  gint64     deadline_ns;
  guint64    correlation;
  guint32    slot;            /* in the request table, plus one */
} AhDeadline;

/* A min-heap of deadlines. Its own array rather than a GArray: a round
 * trip pushes one deadline and, when it completes the last pending
 * request, empties the heap, and the GArray calls were a twentieth of
 * a round trip between two agents of one worker (callgrind). */
typedef struct {
  AhDeadline *items;
  guint       len;
  guint       allocated;
} AhDeadlineHeap;

struct _AhWorker {
  AhBus          *bus;
  guint           index;
  pthread_t       thread;
  gboolean        thread_running;
  pthread_mutex_t lock;
  pthread_cond_t  work_cond;    /* the run queue got work, or stop */
  pthread_cond_t  room_cond;    /* one of its endpoints took normal messages out */
  pthread_cond_t  state_cond;   /* a closing or paused endpoint stopped running */
  AhEndpoint     *run_head;     /* under @lock; each holds a reference */
  AhEndpoint     *run_tail;
  /* The run queue's length, written under @lock, read without it by the
   * worker spinning before it parks. */
  atomic_uint     n_scheduled;
  atomic_bool     spin_stop;    /* set with @stopping: cut a spin short */
  /* The CPU its thread last ran on while awake, -1 while parked: a
   * worker that finds another one's CPU equal to its own knows that one
   * is waiting for the CPU (see ah_worker_spin). */
  atomic_int      cpu_now;
  gboolean        stopping;     /* under @lock */
  gboolean        pinned;       /* its thread runs on one CPU of its own */
  /* Asleep on work_cond. Written under @lock; read under it, or without
   * it as a hint (ah_bus_wake_thief). */
  atomic_bool     parked;
  int             cpu;          /* which, when pinned */
  atomic_bool     pinned_now;   /* @pinned, once its thread knows: for readers */
  gboolean        drained;      /* under @lock: the bus stopped, nothing more is queued */
  /* Only the worker thread touches these: */
  AhEnvelopes     outbox;       /* of the running call */
  AhEnvelopes     routed;       /* the outbox, routed */
  AhMessage     **batch;        /* handler_batch slots */
  AhEndpoint    **retry_to;     /* handler_batch slots: ah_bus_call_retry's choices */
  AhPendingUnref  unrefs[AH_WORKER_UNREF_SLOTS];
  guint64         correlation_next;  /* the ids of its block not handed out yet */
  guint64         correlation_end;
  /* Written by the worker thread only, read by anyone. */
  AhTally         tally;
  /* Messages this worker settled and has not yet taken off the bus's
   * in_flight (see ah_bus_settle). */
  _Atomic gint64  settled_unfolded;
  AhLatency       latency;
  /* The longest the worker waited for its own lock: how long another
   * thread (a publisher, a pause for a reload) held it up. */
  _Atomic guint64 stall_max_ns;
};

struct _AhBusCall {
  AhBus      *bus;
  AhWorker   *worker;
  AhEndpoint *endpoint;
  guint       n_outbox_calls;   /* publish/send/request/reply calls in the outbox */
  guint       n_unrouted;       /* publishes in the outbox not routed yet */
  guint       n_unaccepted;     /* routed envelopes in the outbox not accepted yet */
  gint64      start_ns;         /* when the call started */
  gint64      end_ns;           /* ah_bus_call_read_end_ns(), or 0 */
  AhMessage **batch;            /* the messages of this call */
  guint       n_batch;
  guint       n_retries;        /* slots of worker->retry_to set */
};

struct _AhBus {
  AhBusConfig       config;      /* defaults filled in */
  AhWorker        **workers;
  guint64           serial;          /* unique in the process, never reused */
  _Atomic guint64   next_endpoint_id;
  _Atomic guint64   next_correlation;

  pthread_rwlock_t  route_lock;
  AhIdTable         endpoints;       /* id -> AhEndpoint (the creator's reference) */
  AhEndpointArena   arena;           /* the endpoints' memory */
  GHashTable       *subjects;        /* subject -> AhSubjectEntry */
  AhSubjectTrie    *trie;            /* values: AhSubscription */
  GHashTable       *subscriptions;   /* id -> AhSubscription */
  GPtrArray        *groups;          /* (element-type AhBusGroup) (owned) */
  guint             generation;      /* bumped on subscribe/unsubscribe */
  atomic_uint       generation_now;  /* the same, for readers without the lock */
  guint             last_subscription_id;

  pthread_mutex_t   requests_lock;
  pthread_cond_t    requests_cond;   /* an earlier deadline, or stop */
  GArray           *requests;        /* (element-type AhPendingRequest) pending and free slots */
  guint32           free_request;    /* the first free slot, plus one; 0: none */
  AhDeadlineHeap    deadlines;
  gboolean          timer_stopping;
  gint64            timer_armed_ns;  /* the timer sleeps until then; G_MAXINT64: no deadline */
  pthread_t         timer_thread;
  atomic_uint       n_pending;
  atomic_uint       n_held;          /* ah_bus_hold() calls not yet released */

  atomic_uint       n_parked;        /* workers asleep on their work_cond */
  _Atomic gint64    in_flight;
  /* Bumped by every steal before the endpoint changes worker, so that a
   * delivery that read several endpoints' workers can tell whether one
   * moved meanwhile (ah_bus_plan_runs). */
  atomic_uint       steal_epoch;
  pthread_mutex_t   idle_lock;
  pthread_cond_t    idle_cond;
  AhBusIdleFunc     idle_func;       /* under idle_lock */
  gpointer          idle_data;

  pthread_mutex_t   dead_letter_lock;
  AhDeadLetterFunc  dead_letter_func;  /* under dead_letter_lock */
  gpointer          dead_letter_data;

  /* Read-locked around each tap call, so that once ah_bus_set_tap_func()
   * returns the previous func is neither running nor called again.
   * @tap_set spares the lock when nobody taps. */
  pthread_rwlock_t  tap_lock;
  atomic_bool       tap_set;
  AhBusTapFunc      tap_func;          /* under tap_lock */
  gpointer          tap_data;

  AhTally           external;        /* counts of threads that are not our workers */
  atomic_bool       started;
  atomic_bool       stopping;        /* publishing refused from here on */
};

/* The worker running on this thread, and the handler call it is in. */
static _Atomic guint64 ah_bus_next_serial = 1;

static AH_THREAD_LOCAL AhWorker *ah_bus_current_worker;
static AH_THREAD_LOCAL AhBusCall *ah_bus_current_call;
/* This thread woke a parked worker since its own worker last ran dry:
 * that worker may be queued on this CPU (see ah_worker_spin). */
static AH_THREAD_LOCAL gboolean ah_bus_woke_parked;

static void ah_endpoint_unref (AhEndpoint *endpoint);
static void ah_subscription_free (gpointer data);

/* ---- The endpoint table ---------------------------------------------------------------------- */

static void
ah_id_table_insert (AhIdTable  *table,
                    AhEndpoint *endpoint)
{
  gsize page = (gsize) (endpoint->id >> AH_ID_PAGE_BITS);

  if (page >= table->n_pages)
    {
      gsize n_pages = MAX (MAX (table->n_pages * 2, page + 1), 16);

      table->pages = g_renew (AhIdPage *, table->pages, n_pages);
      memset (table->pages + table->n_pages, 0, (n_pages - table->n_pages) * sizeof (AhIdPage *));
      table->n_pages = n_pages;
    }
  if (table->pages[page] == NULL)
    table->pages[page] = g_new0 (AhIdPage, 1);
  table->pages[page]->slots[endpoint->id & (AH_ID_PAGE_SIZE - 1)] = endpoint;
  table->pages[page]->n_live++;
}

static AhEndpoint *
ah_id_table_lookup (const AhIdTable *table,
                    AhAgentId        id)
{
  gsize page = (gsize) (id >> AH_ID_PAGE_BITS);

  if (page >= table->n_pages || table->pages[page] == NULL)
    return NULL;
  return table->pages[page]->slots[id & (AH_ID_PAGE_SIZE - 1)];
}

static void
ah_id_table_remove (AhIdTable *table,
                    AhAgentId  id)
{
  gsize page = (gsize) (id >> AH_ID_PAGE_BITS);
  AhEndpoint **slot;

  if (page >= table->n_pages || table->pages[page] == NULL)
    return;
  slot = &table->pages[page]->slots[id & (AH_ID_PAGE_SIZE - 1)];
  if (*slot == NULL)
    return;
  *slot = NULL;
  if (--table->pages[page]->n_live == 0)
    g_clear_pointer (&table->pages[page], g_free);
}

/* Appends every endpoint of @table to @into. */
static void
ah_id_table_collect (const AhIdTable *table,
                     GPtrArray       *into)
{
  for (gsize page = 0; page < table->n_pages; page++)
    for (guint i = 0; table->pages[page] != NULL && i < AH_ID_PAGE_SIZE; i++)
      if (table->pages[page]->slots[i] != NULL)
        g_ptr_array_add (into, table->pages[page]->slots[i]);
}

/* ---- Endpoint memory ---------------------------------------------------------------------- */

static void
ah_arena_init (AhEndpointArena *arena)
{
  pthread_mutex_init (&arena->lock, NULL);
  arena->chunks = g_array_new (FALSE, FALSE, sizeof (AhArenaChunk));
  arena->next_size = AH_ARENA_FIRST_CHUNK;
}

static void
ah_arena_clear (AhEndpointArena *arena)
{
  for (guint i = 0; i < arena->chunks->len; i++)
    {
      AhArenaChunk *chunk = &g_array_index (arena->chunks, AhArenaChunk, i);

      munmap (chunk->memory, chunk->size);
    }
  g_array_unref (arena->chunks);
  pthread_mutex_destroy (&arena->lock);
}

/* Maps the next chunk, aligned to its size so a huge page can back it.
 * Lock held. */
static void
ah_arena_grow_locked (AhEndpointArena *arena)
{
  gsize size = arena->next_size;
  guint8 *mapped = mmap (NULL, 2 * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                         -1, 0);
  guint8 *aligned;
  AhArenaChunk chunk;

  if (mapped == MAP_FAILED)
    g_error ("bus: cannot map %" G_GSIZE_FORMAT " bytes for endpoints: %s", size,
             g_strerror (errno));
  aligned = (guint8 *) (((guintptr) mapped + size - 1) & ~(guintptr) (size - 1));
  if (aligned > mapped)
    munmap (mapped, (gsize) (aligned - mapped));
  if (aligned + size < mapped + 2 * size)
    munmap (aligned + size, (gsize) (mapped + 2 * size - (aligned + size)));
  if (size >= AH_ARENA_HUGE_CHUNK)
    madvise (aligned, size, MADV_HUGEPAGE);   /* advice: fine if refused */

  chunk.memory = aligned;
  chunk.size = size;
  g_array_append_val (arena->chunks, chunk);
  arena->cursor = aligned;
  arena->end = aligned + size;
  arena->next_size = MIN (size * 2, AH_ARENA_HUGE_CHUNK);
}

/* @n zeroed endpoint slots at once. */
static void
ah_arena_alloc_n (AhEndpointArena *arena,
                  guint            n,
                  gpointer        *ret_slots)
{
  if (!AH_ENDPOINT_ARENA)
    {
      for (guint i = 0; i < n; i++)
        ret_slots[i] = g_malloc0 (sizeof (AhEndpoint));
      return;
    }

  pthread_mutex_lock (&arena->lock);
  for (guint i = 0; i < n; i++)
    {
      if (arena->free_slots != NULL)
        {
          ret_slots[i] = arena->free_slots;
          arena->free_slots = arena->free_slots->next;
          memset (ret_slots[i], 0, sizeof (AhEndpoint));
          continue;
        }
      if (arena->cursor == NULL || arena->cursor + AH_ENDPOINT_SLOT > arena->end)
        ah_arena_grow_locked (arena);
      /* Fresh mapped memory is zero already. */
      ret_slots[i] = arena->cursor;
      arena->cursor += AH_ENDPOINT_SLOT;
    }
  pthread_mutex_unlock (&arena->lock);
}

static void
ah_arena_free (AhEndpointArena *arena,
               gpointer         slot)
{
  AhFreeSlot *free_slot = slot;

  if (!AH_ENDPOINT_ARENA)
    {
      g_free (slot);
      return;
    }
  pthread_mutex_lock (&arena->lock);
  free_slot->next = arena->free_slots;
  arena->free_slots = free_slot;
  pthread_mutex_unlock (&arena->lock);
}

G_STATIC_ASSERT (sizeof (AhEndpoint) <= AH_ENDPOINT_SLOT);

static void
ah_id_table_clear (AhIdTable *table)
{
  for (gsize page = 0; page < table->n_pages; page++)
    g_free (table->pages[page]);
  g_clear_pointer (&table->pages, g_free);
  table->n_pages = 0;
}

/* ---- Small helpers -------------------------------------------------------------- */

static void
ah_cond_init_monotonic (pthread_cond_t *cond)
{
  pthread_condattr_t attr;

  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  pthread_cond_init (cond, &attr);
  pthread_condattr_destroy (&attr);
}

static struct timespec
ah_timespec_from_ns (gint64 ns)
{
  struct timespec ts;

  ts.tv_sec = (time_t) (ns / AH_NS_PER_SECOND);
  ts.tv_nsec = (long) (ns % AH_NS_PER_SECOND);
  return ts;
}

const char *
ah_dead_letter_reason_to_string (AhDeadLetterReason reason)
{
  switch (reason)
    {
    case AH_DEAD_LETTER_NO_ROUTE:
      return "no-route";
    case AH_DEAD_LETTER_NO_AGENT:
      return "no-agent";
    case AH_DEAD_LETTER_AGENT_STOPPED:
      return "agent-stopped";
    case AH_DEAD_LETTER_LATE_REPLY:
      return "late-reply";
    case AH_DEAD_LETTER_OVERFLOW:
      return "overflow";
    case AH_DEAD_LETTER_HANDLER_FAILED:
      return "handler-failed";
    case AH_DEAD_LETTER_SHUTDOWN:
      return "shutdown";
    default:
      return "unknown";
    }
}

/* ---- Counters ------------------------------------------------------------------- */

static AhWorker *
ah_bus_worker_for_thread (AhBus *self)
{
  AhWorker *worker = ah_bus_current_worker;

  return worker != NULL && worker->bus == self ? worker : NULL;
}

/* Counts on @worker, from its own thread: a handler call's bus calls
 * know their worker, and skip the thread-local look-up. */
static inline void
ah_worker_tally_add (AhWorker     *worker,
                     AhTallyField  field,
                     guint64       n)
{
  /* Only this thread writes its worker's tally: no locked add needed,
   * just atomic accesses so readers see whole values. */
  _Atomic guint64 *value = &worker->tally.values[field];

  atomic_store_explicit (value, atomic_load_explicit (value, memory_order_relaxed) + n,
                         memory_order_relaxed);
}

static void
ah_bus_tally_add (AhBus        *self,
                  AhTallyField  field,
                  guint64       n)
{
  AhWorker *worker = ah_bus_worker_for_thread (self);

  if (worker != NULL)
    ah_worker_tally_add (worker, field, n);
  else
    atomic_fetch_add_explicit (&self->external.values[field], n, memory_order_relaxed);
}

static guint
ah_latency_bucket (guint64 ns)
{
  guint exponent;

  if (ns < AH_LATENCY_SUBS)
    return (guint) ns;
  exponent = 63 - (guint) __builtin_clzll (ns);
  return (exponent - AH_LATENCY_SUB_BITS + 1) * AH_LATENCY_SUBS
         + (guint) ((ns >> (exponent - AH_LATENCY_SUB_BITS)) & (AH_LATENCY_SUBS - 1));
}

/* The midpoint of @bucket, in nanoseconds. */
static gdouble
ah_latency_bucket_value (guint bucket)
{
  guint exponent, sub;
  gdouble width, low;

  if (bucket < AH_LATENCY_SUBS)
    return bucket;
  exponent = bucket / AH_LATENCY_SUBS + AH_LATENCY_SUB_BITS - 1;
  sub = bucket % AH_LATENCY_SUBS;
  width = (gdouble) (G_GUINT64_CONSTANT (1) << (exponent - AH_LATENCY_SUB_BITS));
  low = (AH_LATENCY_SUBS + sub) * width;
  return low + width / 2;
}

/* Called by the worker thread only. */
static void
ah_latency_record_n (AhLatency *latency,
                     gint64     ns,
                     guint      n)
{
  guint64 value = ns > 0 ? (guint64) ns : 0;
  _Atomic guint64 *count = &latency->counts[ah_latency_bucket (value)];

  atomic_store_explicit (count, atomic_load_explicit (count, memory_order_relaxed) + n,
                         memory_order_relaxed);
  if (value > atomic_load_explicit (&latency->max_ns, memory_order_relaxed))
    atomic_store_explicit (&latency->max_ns, value, memory_order_relaxed);
}

/* No request pending and no work held outside the bus (offloads). */
static gboolean
ah_bus_nothing_pending (AhBus *self)
{
  return atomic_load (&self->n_pending) == 0 && atomic_load (&self->n_held) == 0;
}

static gboolean
ah_bus_is_idle_now (AhBus *self)
{
  return atomic_load (&self->in_flight) == 0 && ah_bus_nothing_pending (self);
}

static void
ah_bus_notify_idle (AhBus *self)
{
  AhBusIdleFunc func;
  gpointer data;

  pthread_mutex_lock (&self->idle_lock);
  func = self->idle_func;
  data = self->idle_data;
  pthread_mutex_unlock (&self->idle_lock);

  /* The idle func first, so that a waiter woken below finds it has run. */
  if (func != NULL && ah_bus_is_idle_now (self))
    func (data);

  /* Taking the lock after the counters changed is what makes a waiter
   * that checked them under the lock miss no wake-up. */
  pthread_mutex_lock (&self->idle_lock);
  pthread_cond_broadcast (&self->idle_cond);
  pthread_mutex_unlock (&self->idle_lock);
}

static void
ah_bus_accept (AhBus *self,
               guint  n)
{
  ah_bus_tally_add (self, AH_TALLY_ACCEPTED, n);
  atomic_fetch_add (&self->in_flight, (gint64) n);
}

/* ah_bus_accept() from a handler call, on its worker. */
static inline void
ah_bus_call_accept (AhBusCall *call,
                    guint      n)
{
  ah_worker_tally_add (call->worker, AH_TALLY_ACCEPTED, n);
  atomic_fetch_add (&call->bus->in_flight, (gint64) n);
}

/* ah_bus_settle() on @worker, from its own thread. */
static inline void
ah_worker_settle (AhWorker     *worker,
                  AhTallyField  field,
                  guint         n)
{
  ah_worker_tally_add (worker, field, n);
  atomic_store_explicit (&worker->settled_unfolded,
                         atomic_load_explicit (&worker->settled_unfolded, memory_order_relaxed) + n,
                         memory_order_relaxed);
}

/* Settles @n accepted messages as @field (delivered, dead-lettered or
 * failed). The tally is written first, so whoever sees in_flight reach 0
 * also sees the counts that brought it there. */
static void
ah_bus_settle (AhBus        *self,
               AhTallyField  field,
               guint         n)
{
  AhWorker *worker = ah_bus_worker_for_thread (self);

  /* A worker keeps its settlements to itself until it runs out of work
   * (ah_worker_fold_settled): in_flight is one word all threads write,
   * and with two workers settling a batch each every few hundred
   * nanoseconds its cache line went back and forth between the cores at
   * every call. Accepting stays immediate, so in_flight is never below
   * the truth: it reaches 0 only once every worker has folded, that is
   * when none has anything left to run. */
  if (worker != NULL)
    {
      ah_worker_settle (worker, field, n);
      return;
    }
  ah_bus_tally_add (self, field, n);
  if (atomic_fetch_sub (&self->in_flight, (gint64) n) == (gint64) n
      && ah_bus_nothing_pending (self))
    ah_bus_notify_idle (self);
}

/* Takes what @worker settled off in_flight: called by the worker thread
 * when its run queue is empty, before it spins or parks, and when it
 * exits. */
static void
ah_worker_fold_settled (AhWorker *worker)
{
  AhBus *self = worker->bus;
  gint64 n = atomic_load_explicit (&worker->settled_unfolded, memory_order_relaxed);

  if (n == 0)
    return;
  atomic_store_explicit (&worker->settled_unfolded, 0, memory_order_relaxed);
  if (atomic_fetch_sub (&self->in_flight, n) == n && ah_bus_nothing_pending (self))
    ah_bus_notify_idle (self);
}

/* Hands @message (borrowed) to the dead-letter func and settles it. */
static void
ah_bus_dead_letter (AhBus              *self,
                    AhMessage          *message,
                    AhAgentId           intended,
                    AhDeadLetterReason  reason)
{
  AhDeadLetterFunc func;
  gpointer data;

  pthread_mutex_lock (&self->dead_letter_lock);
  func = self->dead_letter_func;
  data = self->dead_letter_data;
  pthread_mutex_unlock (&self->dead_letter_lock);

  if (func != NULL)
    func (message, intended, reason, data);

  ah_bus_settle (self,
                 reason == AH_DEAD_LETTER_OVERFLOW || reason == AH_DEAD_LETTER_HANDLER_FAILED
                 ? AH_TALLY_FAILED : AH_TALLY_DEAD_LETTERED,
                 1);
}

/* Shows @message to the tap, if one is set. Called once per publish,
 * send, request, reply or send_full that passed its checks, before the
 * message is queued or dead-lettered, so the tap sees a handler's
 * messages in the order it sent them. */
static void
ah_bus_tap (AhBus           *self,
            const AhMessage *message,
            AhAgentId        recipient)
{
  if (!atomic_load_explicit (&self->tap_set, memory_order_acquire))
    return;

  pthread_rwlock_rdlock (&self->tap_lock);
  if (self->tap_func != NULL)
    self->tap_func (message, recipient, self->tap_data);
  pthread_rwlock_unlock (&self->tap_lock);
}

/* ---- Lanes ------------------------------------------------------------------------ */

/* The mailbox capacity is enforced before a push (see
 * ah_endpoint_enqueue_locked), so the ring only ever needs the next
 * power of two above what it holds. */
/* Makes room for @n more messages. */
static G_NO_INLINE void
ah_lane_grow (AhLane *lane,
              guint   n)
{
  guint allocated = lane->allocated > 0 ? lane->allocated : AH_LANE_FIRST_SLOTS;
  AhMessage **items;

  while (allocated < lane->length + n)
    {
      g_assert (allocated * 2 > allocated);   /* 2^31 messages in one mailbox */
      allocated *= 2;
    }
  items = g_new (AhMessage *, allocated);
  for (guint i = 0; i < lane->length; i++)
    items[i] = lane->items[(lane->head + i) & (lane->allocated - 1)];
  g_free (lane->items);
  lane->items = items;
  lane->allocated = allocated;
  lane->head = 0;
}

static inline void
ah_lane_reserve (AhLane *lane,
                 guint   n)
{
  if (G_UNLIKELY (lane->length + n > lane->allocated))
    ah_lane_grow (lane, n);
}

/* Appends @message; room must have been reserved. */
static inline void
ah_lane_append (AhLane    *lane,
                AhMessage *message)
{
  lane->items[(lane->head + lane->length) & (lane->allocated - 1)] = message;
  lane->length++;
}

/* Appends the messages of @n envelopes, making room first. */
static inline void
ah_lane_append_run (AhLane           *lane,
                    const AhEnvelope *envelopes,
                    guint             n)
{
  AhMessage **items;
  guint mask, tail;

  ah_lane_reserve (lane, n);
  /* Locals: with -fno-strict-aliasing the compiler would otherwise
   * reload the lane's fields after every store into its ring. */
  items = lane->items;
  mask = lane->allocated - 1;
  tail = lane->head + lane->length;
  for (guint i = 0; i < n; i++)
    items[(tail + i) & mask] = envelopes[i].message;
  lane->length += n;
}

static inline void
ah_lane_push (AhLane    *lane,
              AhMessage *message)
{
  ah_lane_reserve (lane, 1);
  ah_lane_append (lane, message);
}

static inline AhMessage *
ah_lane_pop (AhLane *lane)
{
  AhMessage *message = lane->items[lane->head];

  lane->head = (lane->head + 1) & (lane->allocated - 1);
  lane->length--;
  if (lane->length == 0)
    {
      lane->head = 0;
      if (lane->allocated > AH_LANE_KEEP_SLOTS)
        {
          g_clear_pointer (&lane->items, g_free);
          lane->allocated = 0;
        }
    }
  return message;
}

/* Moves every message of @lane to the end of @into. Returns how many. */
static guint
ah_lane_steal (AhLane     *lane,
               GPtrArray **into)
{
  guint n = lane->length;

  if (n > 0 && *into == NULL)
    *into = g_ptr_array_new ();
  while (lane->length > 0)
    g_ptr_array_add (*into, ah_lane_pop (lane));
  g_clear_pointer (&lane->items, g_free);
  lane->allocated = 0;
  return n;
}

/* ---- Endpoints ------------------------------------------------------------------- */

static AhEndpoint *
ah_endpoint_ref (AhEndpoint *endpoint)
{
  atomic_fetch_add_explicit (&endpoint->ref_count, 1, memory_order_relaxed);
  return endpoint;
}

/* @n references at once: a chunk of messages for one endpoint costs one
 * atomic operation on its (often remote) cache line, not one each. */
static void
ah_endpoint_ref_n (AhEndpoint *endpoint,
                   guint       n)
{
  atomic_fetch_add_explicit (&endpoint->ref_count, (int) n, memory_order_relaxed);
}

/* The endpoints one message goes to, each with a reference. Most
 * messages have a handful, kept inline so routing does not allocate. */
#define AH_RECIPIENTS_INLINE 8

typedef struct {
  guint        len;
  guint        allocated;     /* of @heap_items; 0 while the inline slots do */
  AhEndpoint **heap_items;
  AhEndpoint  *inline_items[AH_RECIPIENTS_INLINE];
} AhRecipients;

static AhEndpoint **
ah_recipients_get (AhRecipients *recipients)
{
  return recipients->heap_items != NULL ? recipients->heap_items : recipients->inline_items;
}

/* Takes over the reference to @endpoint. */
static void
ah_recipients_add (AhRecipients *recipients,
                   AhEndpoint   *endpoint)
{
  if (recipients->heap_items == NULL && recipients->len == AH_RECIPIENTS_INLINE)
    {
      recipients->allocated = 4 * AH_RECIPIENTS_INLINE;
      recipients->heap_items = g_new (AhEndpoint *, recipients->allocated);
      memcpy (recipients->heap_items, recipients->inline_items, sizeof recipients->inline_items);
    }
  else if (recipients->heap_items != NULL && recipients->len == recipients->allocated)
    {
      recipients->allocated *= 2;
      recipients->heap_items = g_renew (AhEndpoint *, recipients->heap_items,
                                        recipients->allocated);
    }
  ah_recipients_get (recipients)[recipients->len++] = endpoint;
}

/* Drops the references still held and the storage. */
static void
ah_recipients_clear (AhRecipients *recipients)
{
  AhEndpoint **items = ah_recipients_get (recipients);

  for (guint i = 0; i < recipients->len; i++)
    ah_endpoint_unref (items[i]);
  recipients->len = 0;
  g_clear_pointer (&recipients->heap_items, g_free);
  recipients->allocated = 0;
}

G_DEFINE_AUTO_CLEANUP_CLEAR_FUNC (AhRecipients, ah_recipients_clear)

static void
ah_endpoint_unref_func (gpointer data,
                        gpointer user_data)
{
  ah_endpoint_unref (data);
}

static void
ah_envelope_clear (AhEnvelope *envelope)
{
  ah__message_unref (envelope->message);
  ah_endpoint_unref (envelope->to);
}

static void
ah_endpoint_unref_n (AhEndpoint *endpoint,
                     guint       n)
{
  if (atomic_fetch_sub_explicit (&endpoint->ref_count, (int) n, memory_order_acq_rel) != (int) n)
    return;

  /* Stop or close emptied the lanes and queues before the last
   * reference went; what is freed here is only their memory. */
  if (endpoint->system_lane != NULL)
    g_free (endpoint->system_lane->items);
  g_free (endpoint->system_lane);
  g_free (endpoint->normal_lane.items);
  if (endpoint->deferred != NULL)
    g_array_unref (endpoint->deferred);
  if (endpoint->blocked_senders != NULL)
    g_ptr_array_unref (endpoint->blocked_senders);
  ah_arena_free (&endpoint->worker->bus->arena, endpoint);
}

static void
ah_endpoint_unref (AhEndpoint *endpoint)
{
  ah_endpoint_unref_n (endpoint, 1);
}

AhAgentId
ah_endpoint_get_id (AhEndpoint *endpoint)
{
  g_return_val_if_fail (endpoint != NULL, AH_AGENT_ID_NONE);

  return endpoint->id;
}

guint
ah_bus_endpoint_get_depth (AhEndpoint *endpoint)
{
  g_return_val_if_fail (endpoint != NULL, 0);

  /* normal_used counts the normal lane (plus reservations under
   * AH_OVERFLOW_FAIL); system messages are few and do not make a
   * mailbox deep, so the lock-free figure is the useful one. */
  return atomic_load_explicit (&endpoint->normal_used, memory_order_relaxed);
}

gpointer
ah_endpoint_get_user_data (AhEndpoint *endpoint)
{
  g_return_val_if_fail (endpoint != NULL, NULL);

  return endpoint->user_data;
}

static void ah_bus_wake_thief (AhBus *self, AhWorker *busy);

static void
ah_worker_push_locked (AhWorker   *worker,
                       AhEndpoint *endpoint)
{
  endpoint->run_next = NULL;
  if (worker->run_tail != NULL)
    worker->run_tail->run_next = endpoint;
  else
    worker->run_head = endpoint;
  worker->run_tail = endpoint;
  /* A second endpoint waiting while another worker sleeps: wake that
   * one, so it can take one over (ah_worker_steal). Only when the queue
   * reaches two, so a worker with a long queue wakes nobody per push. A
   * worker that only spins finds such work by itself; one that parked
   * would otherwise never see it, and two busy agents given to one
   * worker would share one CPU while the other slept. */
  if (atomic_fetch_add_explicit (&worker->n_scheduled, 1, memory_order_release) == 1
      && atomic_load_explicit (&worker->bus->n_parked, memory_order_relaxed) > 0)
    ah_bus_wake_thief (worker->bus, worker);
}

static AhEndpoint *
ah_worker_pop_locked (AhWorker *worker)
{
  AhEndpoint *endpoint = worker->run_head;

  atomic_fetch_sub_explicit (&worker->n_scheduled, 1, memory_order_relaxed);
  worker->run_head = endpoint->run_next;
  if (worker->run_head == NULL)
    worker->run_tail = NULL;
  endpoint->run_next = NULL;
  return endpoint;
}

/* Reserves a normal-lane slot at routing time (AH_OVERFLOW_FAIL), so the
 * publish call itself can say whether the message was refused although
 * it is only queued when the outbox is flushed. */
static gboolean
ah_endpoint_reserve (AhEndpoint *endpoint,
                     guint       capacity)
{
  guint used = atomic_load_explicit (&endpoint->normal_used, memory_order_relaxed);

  do
    {
      if (used >= capacity)
        return FALSE;
    }
  while (!atomic_compare_exchange_weak_explicit (&endpoint->normal_used, &used, used + 1,
                                                 memory_order_relaxed, memory_order_relaxed));
  return TRUE;
}

typedef enum {
  AH_DELIVER_RESERVED,   /* AH_OVERFLOW_FAIL: the slot was reserved when routed */
  AH_DELIVER_WAIT,       /* AH_OVERFLOW_BLOCK, outside the workers: wait for room */
  AH_DELIVER_DEFER,      /* AH_OVERFLOW_BLOCK, a handler's outbox: defer, never wait */
  AH_DELIVER_REFUSE,     /* AH_OVERFLOW_BLOCK, a worker outside any outbox: refuse */
  AH_DELIVER_FORCE,      /* AH_OVERFLOW_BLOCK, ah_bus_send_full: past the capacity if need be */
} AhDeliverMode;

typedef enum {
  AH_ENQUEUE_QUEUED,
  AH_ENQUEUE_DEAD,       /* endpoint closing or bus stopped: see the reason */
  AH_ENQUEUE_FULL,       /* AH_DELIVER_DEFER: the sender is registered for a retry */
  AH_ENQUEUE_REFUSED,    /* AH_DELIVER_REFUSE: the mailbox is full */
} AhEnqueueResult;

/* Queues @message (the reference is taken over when queued) for
 * @endpoint. Must be called with the endpoint's worker lock held; in
 * AH_DELIVER_WAIT mode it may release it while it waits. Sets @ret_wake
 * when the endpoint was put on the run queue. */
static AhEnqueueResult
ah_endpoint_enqueue_locked (AhEndpoint         *endpoint,
                            AhMessage          *message,
                            AhDeliverMode       mode,
                            AhEndpoint         *sender,
                            gboolean           *ret_wake,
                            AhDeadLetterReason *ret_reason)
{
  AhWorker *worker = endpoint->worker;
  AhBus *self = endpoint->worker->bus;
  guint capacity = self->config.mailbox_capacity;
  gboolean normal = message->priority != AH_PRIORITY_SYSTEM;

  if (!worker->drained && !endpoint->closing && normal)
    {
      switch (mode)
        {
        case AH_DELIVER_RESERVED:
          break;

        case AH_DELIVER_WAIT:
          while (atomic_load (&endpoint->normal_used) >= capacity
                 && !endpoint->closing && !worker->stopping && !worker->drained)
            {
              /* Hand over what this bucket already queued before
               * sleeping: the worker may be waiting for exactly that. */
              if (*ret_wake)
                {
                  pthread_cond_signal (&worker->work_cond);
                  *ret_wake = FALSE;
                }
              endpoint->room_waiters++;
              pthread_cond_wait (&worker->room_cond, &worker->lock);
              endpoint->room_waiters--;
            }
          if (worker->stopping)
            {
              *ret_reason = AH_DEAD_LETTER_SHUTDOWN;
              return AH_ENQUEUE_DEAD;
            }
          if (!endpoint->closing && !worker->drained)
            atomic_fetch_add (&endpoint->normal_used, 1);
          break;

        case AH_DELIVER_DEFER:
          /* An endpoint waiting for room in its own mailbox would never
           * run again to make that room, so its messages to itself go
           * past the capacity instead. */
          if (atomic_load (&endpoint->normal_used) >= capacity && endpoint != sender)
            {
              if (endpoint->blocked_senders == NULL)
                endpoint->blocked_senders = g_ptr_array_new ();
              g_ptr_array_add (endpoint->blocked_senders, ah_endpoint_ref (sender));
              return AH_ENQUEUE_FULL;
            }
          atomic_fetch_add (&endpoint->normal_used, 1);
          break;

        case AH_DELIVER_REFUSE:
          if (atomic_load (&endpoint->normal_used) >= capacity)
            return AH_ENQUEUE_REFUSED;
          atomic_fetch_add (&endpoint->normal_used, 1);
          break;

        case AH_DELIVER_FORCE:
          /* The agent asked for this message (an offload's result), so
           * it must not be lost, and the thread sending it must not wait
           * on an agent that may be slow for long. */
          atomic_fetch_add (&endpoint->normal_used, 1);
          break;

        default:
          g_assert_not_reached ();
        }
    }

  if (worker->drained || endpoint->closing)
    {
      if (normal && mode == AH_DELIVER_RESERVED)
        atomic_fetch_sub (&endpoint->normal_used, 1);
      *ret_reason = worker->drained ? AH_DEAD_LETTER_SHUTDOWN : AH_DEAD_LETTER_AGENT_STOPPED;
      return AH_ENQUEUE_DEAD;
    }

  if (!normal && endpoint->system_lane == NULL)
    endpoint->system_lane = g_new0 (AhLane, 1);
  ah_lane_push (normal ? &endpoint->normal_lane : endpoint->system_lane, message);

  /* A paused endpoint stays IDLE with mail: resume schedules it. */
  if (endpoint->state == AH_ENDPOINT_IDLE && !endpoint->paused)
    {
      endpoint->state = AH_ENDPOINT_SCHEDULED;
      ah_worker_push_locked (worker, ah_endpoint_ref (endpoint));
      *ret_wake = TRUE;
    }
  return AH_ENQUEUE_QUEUED;
}

static inline void
ah_cpu_relax (void)
{
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause ();
#elif defined(__aarch64__)
  __asm__ __volatile__ ("yield");
#endif
}

/* How long a thread spins for a worker lock before it sleeps on it. */
#define AH_WORKER_LOCK_SPIN_NS 10000

/* Takes @worker's lock, spinning for it first. Every hold of a worker
 * lock is short (a run queue step, a batch taken, a flush's share
 * queued), but the worker takes it between every two turns, so under
 * load a publisher and the worker meet on it at almost every flush. A
 * plain mutex then puts one of them to sleep and the other pays a
 * futex wake: measured, one pair of system calls per flush, a fifth
 * of the publisher's time. Spinning a few microseconds (bounded, so a
 * preempted holder costs no more than that) sees the lock freed
 * instead. Returns how long it waited, in ns, 0 if not at all. */
static guint64
ah_worker_lock (AhWorker *worker)
{
  gint64 start, now;

  if (pthread_mutex_trylock (&worker->lock) == 0)
    return 0;
  start = ah__monotonic_ns ();
  for (guint i = 1;; i++)
    {
      ah_cpu_relax ();
      if (pthread_mutex_trylock (&worker->lock) == 0)
        break;
      if ((i & 31) == 0 && (now = ah__monotonic_ns ()) - start >= AH_WORKER_LOCK_SPIN_NS)
        {
          pthread_mutex_lock (&worker->lock);
          break;
        }
    }
  now = ah__monotonic_ns ();
  return (guint64) MAX (now - start, 1);
}

/* Releases @worker's lock, then, if @wake (its run queue got work) and
 * it sleeps, signals it. The signal comes after the unlock: signalled
 * under the lock, a woken worker that the scheduler runs at once (CFS
 * favours a thread that slept) blocks straight away on the lock its
 * waker still holds, and costs two more context switches (seen with
 * perf sched on the round trip from idle). */
static void
ah_worker_unlock_and_wake (AhWorker *worker,
                           gboolean  wake)
{
  /* Not parked: it looks at its run queue before it parks. */
  gboolean signal = wake && atomic_load_explicit (&worker->parked, memory_order_relaxed);

  if (signal)
    ah_bus_woke_parked = TRUE;
  pthread_mutex_unlock (&worker->lock);
  if (signal)
    pthread_cond_signal (&worker->work_cond);
}

/* Locks the worker @endpoint belongs to, and returns it. An endpoint
 * changes worker only with both workers' locks held, so once the lock of
 * the worker it belongs to is held it stays there; a steal between
 * reading its worker and taking that lock shows as a changed worker,
 * and the lock is taken again. */
static AhWorker *
ah_endpoint_lock_worker (AhEndpoint *endpoint)
{
  AhWorker *worker = atomic_load_explicit (&endpoint->worker, memory_order_acquire);

  for (;;)
    {
      AhWorker *now;

      ah_worker_lock (worker);
      now = atomic_load_explicit (&endpoint->worker, memory_order_relaxed);
      if (now == worker)
        return worker;
      pthread_mutex_unlock (&worker->lock);
      worker = now;
    }
}

/* Consecutive envelopes to one endpoint: @n > 1 only when all of them
 * carry normal-priority messages, which can be queued in one step. */
typedef struct {
  guint start;
  guint n;
  /* The index of the worker its endpoint was on when planned, read once:
   * a steal may move the endpoint meanwhile, and the counting sort must
   * see the same worker in both its passes (a count that changed between
   * them delivered one run twice and another never). */
  guint worker;
} AhRun;

static inline gboolean
ah_envelope_is_normal (const AhEnvelope *envelope)
{
  return envelope->message->priority != AH_PRIORITY_SYSTEM;
}

#define AH_RUNS_INLINE 8

/* The runs of one delivery, in the order they are queued. */
typedef struct {
  AhRun    *runs;
  guint     n_runs;
  gboolean  runs_on_heap;
  AhRun     inline_runs[2 * AH_RUNS_INLINE];   /* a small delivery's, unsorted and sorted */
} AhRunPlan;

static void
ah_run_plan_clear (AhRunPlan *plan)
{
  if (plan->runs_on_heap)
    g_free (plan->runs);
}

/* Cuts @envelopes into runs, then orders the runs by worker (a stable
 * counting sort, so the order to any one endpoint holds), so that each
 * worker's lock is taken once. Sorting runs rather than envelopes keeps
 * a broadcast cheap: 256 messages to 100 members are 100 runs, where a
 * sort of the 25,600 envelopes took a third of the publisher's time. */
static void
ah_bus_plan_runs (AhBus            *self,
                  const AhEnvelope *envelopes,
                  guint             n_deliveries,
                  AhRunPlan        *plan)
{
  guint n_workers = self->config.n_workers;
  gboolean small = n_deliveries <= AH_RUNS_INLINE;
  AhRun *runs = small ? plan->inline_runs : g_new (AhRun, n_deliveries);
  AhRun *sorted;
  guint n_runs = 0;
  guint *starts;
  gboolean grouped = TRUE;
  guint last_worker = 0;
  guint epoch = atomic_load_explicit (&self->steal_epoch, memory_order_acquire);

  for (guint i = 0; i < n_deliveries;)
    {
      AhEndpoint *to = envelopes[i].to;
      guint n = 1;
      guint worker_index;

      if (ah_envelope_is_normal (&envelopes[i]))
        while (i + n < n_deliveries && envelopes[i + n].to == to
               && ah_envelope_is_normal (&envelopes[i + n]))
          n++;
      worker_index = atomic_load_explicit (&to->worker, memory_order_relaxed)->index;
      if (n_runs > 0 && worker_index < last_worker)
        grouped = FALSE;
      last_worker = worker_index;
      runs[n_runs].start = i;
      runs[n_runs].n = n;
      runs[n_runs].worker = worker_index;
      n_runs++;
      i += n;
    }
  plan->runs = runs;
  plan->n_runs = n_runs;
  plan->runs_on_heap = !small;
  if (grouped || n_workers == 1)
    return;
  /* An endpoint stolen while the runs were read may show on two workers,
   * and sorting its runs apart could reorder its messages. Such a plan
   * stays unsorted: the same deliveries, only more lock changes. */
  atomic_thread_fence (memory_order_acquire);
  if (atomic_load_explicit (&self->steal_epoch, memory_order_relaxed) != epoch)
    return;

  starts = g_new0 (guint, n_workers + 1);
  sorted = small ? plan->inline_runs + AH_RUNS_INLINE : g_new (AhRun, n_runs);
  for (guint r = 0; r < n_runs; r++)
    starts[runs[r].worker + 1]++;
  for (guint w = 0; w < n_workers; w++)
    starts[w + 1] += starts[w];
  for (guint r = 0; r < n_runs; r++)
    sorted[starts[runs[r].worker]++] = runs[r];
  g_free (starts);
  if (!small)
    g_free (runs);
  plan->runs = sorted;
}

/* How many of @n_run normal messages from @sender @endpoint takes now;
 * 0 when it is closing or the bus drained. Only for AH_DELIVER_DEFER
 * (room checked here; an endpoint's messages to itself always fit, see
 * ah_endpoint_enqueue_locked) and AH_DELIVER_RESERVED (room reserved
 * when routed). Worker lock held. */
static inline guint
ah_endpoint_room_locked (const AhEndpoint *endpoint,
                         guint             n_run,
                         AhDeliverMode     mode,
                         const AhEndpoint *sender)
{
  guint capacity = endpoint->worker->bus->config.mailbox_capacity;
  guint used;

  if (endpoint->worker->drained || endpoint->closing)
    return 0;
  if (mode != AH_DELIVER_DEFER || endpoint == sender)
    return n_run;
  used = atomic_load_explicit (&endpoint->normal_used, memory_order_relaxed);
  return used >= capacity ? 0 : MIN (n_run, capacity - used);
}

/* Queues as many of the @n_run normal messages of @envelopes for
 * @endpoint as it has room for (ah_endpoint_room_locked), in order, and
 * returns how many. Worker lock held. */
static guint
ah_endpoint_enqueue_run_locked (AhEndpoint       *endpoint,
                                const AhEnvelope *envelopes,
                                guint             n_run,
                                AhDeliverMode     mode,
                                AhEndpoint       *sender,
                                gboolean         *ret_wake)
{
  AhWorker *worker = endpoint->worker;
  guint n = ah_endpoint_room_locked (endpoint, n_run, mode, sender);

  if (n == 0)
    return 0;
  if (mode == AH_DELIVER_DEFER)
    atomic_fetch_add (&endpoint->normal_used, n);
  ah_lane_append_run (&endpoint->normal_lane, envelopes, n);

  if (endpoint->state == AH_ENDPOINT_IDLE && !endpoint->paused)
    {
      endpoint->state = AH_ENDPOINT_SCHEDULED;
      ah_worker_push_locked (worker, ah_endpoint_ref (endpoint));
      *ret_wake = TRUE;
    }
  return n;
}

typedef struct {
  AhMessage          *message;
  AhEndpoint         *to;
  AhDeadLetterReason  reason;
} AhDeadEnvelope;

typedef struct {
  guint     n_refused;
  AhAgentId first_refused;
  guint     n_shutdown;
} AhDeliverResult;

/* Queues @envelopes, taking over their references. They are visited
 * grouped by worker, in order within a worker, so each worker's lock is
 * taken once and its thread signalled at most once; the order of
 * messages to any one endpoint is the order of @envelopes.
 *
 * In AH_DELIVER_DEFER mode, from the first envelope that meets a full
 * mailbox on, every envelope is appended to @deferred instead: that
 * keeps the sender's order to every recipient, and the sender retries
 * when the full mailbox's consumer makes room.
 *
 * @keep_locked, if not NULL, is the calling worker: when the last lock
 * the delivery took is its own and nothing was dead-lettered, it is
 * kept, and TRUE returned (see ah_worker_call()). */
static gboolean
ah_bus_deliver_full (AhBus           *self,
                     AhEnvelope      *envelopes,
                     guint            n_deliveries,
                     AhDeliverMode    mode,
                     AhEndpoint      *sender,
                     GArray          *deferred,
                     AhDeliverResult *ret_result,
                     AhWorker        *keep_locked)
{
  AhRunPlan plan;
  g_autoptr(GArray) dead = NULL;
  AhWorker *locked = NULL;
  gboolean wake = FALSE;
  gboolean deferring = FALSE;
  AhDeliverResult result = { 0 };
  AhEndpoint *unref_to = NULL;
  guint n_unref = 0;

  if (n_deliveries == 0)
    {
      if (ret_result != NULL)
        *ret_result = result;
      return FALSE;
    }

  ah_bus_plan_runs (self, envelopes, n_deliveries, &plan);
  for (guint r = 0; r < plan.n_runs; r++)
    {
      AhEnvelope *run = &envelopes[plan.runs[r].start];
      guint n_run = plan.runs[r].n;
      AhEndpoint *to = run->to;
      guint j = 0;

      if (deferring)
        {
          g_array_append_vals (deferred, run, n_run);
          continue;
        }

      /* Checked again once locked: a worker stealing @to needs the lock
       * of the one it takes it from. */
      while (to->worker != locked)
        {
          if (locked != NULL)
            ah_worker_unlock_and_wake (locked, wake);
          locked = to->worker;
          wake = FALSE;
          ah_worker_lock (locked);
        }

      /* A run of normal messages to one endpoint (a chunk of a queue
       * group, a broadcast member's share): room checked and counted
       * once, pushed in one go. What does not fit takes the one-by-one
       * path below, which defers it. */
      if (n_run > 1 && (mode == AH_DELIVER_DEFER || mode == AH_DELIVER_RESERVED))
        {
          j = ah_endpoint_enqueue_run_locked (to, run, n_run, mode, sender, &wake);
          if (j > 0)
            {
              if (to != unref_to)
                {
                  if (unref_to != NULL)
                    ah_endpoint_unref_n (unref_to, n_unref);
                  unref_to = to;
                  n_unref = 0;
                }
              n_unref += j;
            }
        }

      for (; j < n_run; j++)
        {
          AhEnvelope *envelope = &run[j];
          AhDeadLetterReason reason = AH_DEAD_LETTER_SHUTDOWN;

          if (deferring)
            {
              g_array_append_val (deferred, *envelope);
              continue;
            }
          switch (ah_endpoint_enqueue_locked (to, envelope->message, mode, sender, &wake, &reason))
            {
            case AH_ENQUEUE_QUEUED:
              /* The lane holds the message reference now; the endpoint
               * references of a run to one endpoint go in one step. */
              if (to != unref_to)
                {
                  if (unref_to != NULL)
                    ah_endpoint_unref_n (unref_to, n_unref);
                  unref_to = to;
                  n_unref = 0;
                }
              n_unref++;
              break;

            case AH_ENQUEUE_FULL:
              deferring = TRUE;
              g_array_append_val (deferred, *envelope);
              break;

            case AH_ENQUEUE_REFUSED:
              if (result.n_refused++ == 0)
                result.first_refused = to->id;
              reason = AH_DEAD_LETTER_OVERFLOW;
              G_GNUC_FALLTHROUGH;
            case AH_ENQUEUE_DEAD:
              {
                AhDeadEnvelope dead_envelope = { envelope->message, to, reason };

                if (reason == AH_DEAD_LETTER_SHUTDOWN)
                  result.n_shutdown++;
                if (dead == NULL)
                  dead = g_array_new (FALSE, FALSE, sizeof (AhDeadEnvelope));
                g_array_append_val (dead, dead_envelope);
              }
              break;

            default:
              g_assert_not_reached ();
            }
        }
    }

  ah_run_plan_clear (&plan);
  if (unref_to != NULL)
    ah_endpoint_unref_n (unref_to, n_unref);
  /* The caller's own worker is awake: nothing to signal. */
  if (locked != NULL && locked == keep_locked && dead == NULL)
    {
      if (ret_result != NULL)
        *ret_result = result;
      return TRUE;
    }
  if (locked != NULL)
    ah_worker_unlock_and_wake (locked, wake);

  /* Dead letters go out with no lock held: the callback is user code. */
  for (guint i = 0; dead != NULL && i < dead->len; i++)
    {
      AhDeadEnvelope *dead_envelope = &g_array_index (dead, AhDeadEnvelope, i);

      ah_bus_dead_letter (self, dead_envelope->message, dead_envelope->to->id,
                          dead_envelope->reason);
      ah__message_unref (dead_envelope->message);
      ah_endpoint_unref (dead_envelope->to);
    }

  if (ret_result != NULL)
    *ret_result = result;
  return FALSE;
}

/* Queues one normal message for an endpoint of @own, the calling
 * worker, whose lock is then kept for its next turn: each hop of a round
 * trip between two agents of one worker, without the general delivery's
 * plan of runs (a third of a hop, callgrind). The envelope's endpoint
 * reference becomes the run queue's when it schedules the endpoint.
 * Returns FALSE, having done nothing, where the general delivery is
 * needed: another worker's endpoint, a system message, a closing
 * endpoint, a full mailbox. */
static gboolean
ah_bus_deliver_local (AhWorker      *own,
                      AhEnvelope    *envelope,
                      AhDeliverMode  mode,
                      AhEndpoint    *sender)
{
  AhEndpoint *to = envelope->to;

  if (atomic_load_explicit (&to->worker, memory_order_relaxed) != own
      || !ah_envelope_is_normal (envelope))
    return FALSE;
  ah_worker_lock (own);
  /* A steal needs this lock: with it held, the endpoint stays here.
   * What follows is ah_endpoint_enqueue_run_locked() for one message,
   * with the envelope's reference handed to the run queue rather than
   * a new one taken and this one dropped. */
  if (atomic_load_explicit (&to->worker, memory_order_relaxed) != own
      || ah_endpoint_room_locked (to, 1, mode, sender) == 0)
    {
      pthread_mutex_unlock (&own->lock);
      return FALSE;
    }
  if (mode == AH_DELIVER_DEFER)
    atomic_fetch_add (&to->normal_used, 1);
  ah_lane_push (&to->normal_lane, envelope->message);
  if (to->state == AH_ENDPOINT_IDLE && !to->paused)
    {
      to->state = AH_ENDPOINT_SCHEDULED;
      ah_worker_push_locked (own, to);
    }
  else
    {
      ah_endpoint_unref (to);
    }
  return TRUE;
}

static void
ah_bus_deliver (AhBus           *self,
                AhEnvelope      *envelopes,
                guint            n_deliveries,
                AhDeliverMode    mode,
                AhEndpoint      *sender,
                GArray          *deferred,
                AhDeliverResult *ret_result)
{
  ah_bus_deliver_full (self, envelopes, n_deliveries, mode, sender, deferred, ret_result, NULL);
}

/* A sender blocked on a full mailbox gets another chance: put it back on
 * its run queue, or, if it is running right now, make it retry when its
 * batch ends. Takes over the blocked list's reference. */
static void
ah_endpoint_wake_blocked (AhEndpoint *sender)
{
  AhWorker *worker = ah_endpoint_lock_worker (sender);
  gboolean reference_kept = FALSE;
  gboolean signal = FALSE;

  if (!sender->closing && !worker->drained)
    {
      if (sender->state == AH_ENDPOINT_BLOCKED && sender->paused)
        {
          /* No retry while paused. Its deferred queue is not empty, so
           * resume schedules it, and the retry happens then. */
          sender->state = AH_ENDPOINT_IDLE;
        }
      else if (sender->state == AH_ENDPOINT_BLOCKED)
        {
          sender->state = AH_ENDPOINT_SCHEDULED;
          ah_worker_push_locked (worker, sender);
          reference_kept = TRUE;
          signal = TRUE;
        }
      else if (sender->state == AH_ENDPOINT_RUNNING)
        {
          sender->retry_pending = TRUE;
        }
    }
  ah_worker_unlock_and_wake (worker, signal);

  if (!reference_kept)
    ah_endpoint_unref (sender);
}

static void
ah_endpoint_wake_all_blocked (GPtrArray *senders)
{
  if (senders == NULL)
    return;
  for (guint i = 0; i < senders->len; i++)
    ah_endpoint_wake_blocked (g_ptr_array_index (senders, i));
  g_ptr_array_unref (senders);
}

/* Empties @endpoint: its mailbox and its deferred messages are
 * dead-lettered with @reason, and the senders blocked on it are woken
 * (@wake_senders) or released. With @mark_closing, the endpoint is
 * closed first and a running batch is waited out. */
static void
ah_endpoint_drain (AhEndpoint         *endpoint,
                   gboolean            mark_closing,
                   AhDeadLetterReason  reason,
                   gboolean            wake_senders)
{
  AhBus *self = endpoint->worker->bus;
  /* Made only if there is anything to steal: most endpoints close empty. */
  g_autoptr(GPtrArray) queued = NULL;
  GArray *deferred;
  GPtrArray *blocked;
  AhWorker *worker = ah_endpoint_lock_worker (endpoint);

  if (mark_closing)
    {
      endpoint->closing = TRUE;
      while (endpoint->state == AH_ENDPOINT_RUNNING)
        pthread_cond_wait (&worker->state_cond, &worker->lock);
    }
  if (endpoint->system_lane != NULL)
    ah_lane_steal (endpoint->system_lane, &queued);
  /* Only what was queued: slots reserved by messages still on their way
   * are given back when those arrive and find the endpoint closed. */
  atomic_fetch_sub (&endpoint->normal_used, ah_lane_steal (&endpoint->normal_lane, &queued));
  deferred = g_steal_pointer (&endpoint->deferred);
  blocked = g_steal_pointer (&endpoint->blocked_senders);
  if (endpoint->state == AH_ENDPOINT_BLOCKED)
    endpoint->state = AH_ENDPOINT_IDLE;
  if (endpoint->room_waiters > 0)
    pthread_cond_broadcast (&worker->room_cond);
  pthread_mutex_unlock (&worker->lock);

  for (guint i = 0; queued != NULL && i < queued->len; i++)
    {
      AhMessage *message = g_ptr_array_index (queued, i);

      ah_bus_dead_letter (self, message, endpoint->id, reason);
      ah__message_unref (message);
    }
  /* Messages it had sent but not yet queued die with it: nobody is left
   * to retry them. */
  for (guint i = 0; deferred != NULL && i < deferred->len; i++)
    {
      AhEnvelope *envelope = &g_array_index (deferred, AhEnvelope, i);

      ah_bus_dead_letter (self, envelope->message, envelope->to->id, reason);
      ah_envelope_clear (envelope);
    }
  if (deferred != NULL)
    g_array_unref (deferred);

  if (wake_senders)
    {
      ah_endpoint_wake_all_blocked (blocked);
    }
  else if (blocked != NULL)
    {
      g_ptr_array_foreach (blocked, ah_endpoint_unref_func, NULL);
      g_ptr_array_unref (blocked);
    }
}

static void ah_bus_group_add_unlocked (AhBusGroup *group, AhEndpoint *endpoint);

/* Sets up @endpoint, a zeroed slot of the arena. */
static AhEndpoint *
ah_endpoint_init (AhBus          *self,
                  AhEndpoint     *endpoint,
                  AhAgentId       id,
                  AhEndpointFunc  func,
                  gpointer        user_data)
{
  endpoint->id = id;
  endpoint->func = func;
  endpoint->user_data = user_data;
  /* Round robin: ids are consecutive. */
  endpoint->worker = self->workers[(id - 1) % self->config.n_workers];
  atomic_init (&endpoint->ref_count, 1);
  atomic_init (&endpoint->normal_used, 0);
  endpoint->state = AH_ENDPOINT_IDLE;
  return endpoint;
}

AhEndpoint *
ah_bus_endpoint_new (AhBus         *self,
                     AhEndpointFunc func,
                     gpointer       user_data)
{
  AhEndpoint *endpoint;

  g_return_val_if_fail (self != NULL, NULL);
  g_return_val_if_fail (func != NULL, NULL);

  ah_bus_endpoints_new (self, func, &user_data, 1, NULL, 0, &endpoint);
  return endpoint;
}

void
ah_bus_endpoints_new (AhBus              *self,
                      AhEndpointFunc      func,
                      gpointer const     *user_datas,
                      guint               n_endpoints,
                      AhBusGroup * const *groups,
                      guint               n_groups,
                      AhEndpoint        **ret_endpoints)
{
  AhAgentId first;

  g_return_if_fail (self != NULL);
  g_return_if_fail (func != NULL);
  g_return_if_fail (n_endpoints == 0 || (user_datas != NULL && ret_endpoints != NULL));
  g_return_if_fail (n_groups == 0 || groups != NULL);

  if (n_endpoints == 0)
    return;
  first = atomic_fetch_add (&self->next_endpoint_id, n_endpoints);
  ah_arena_alloc_n (&self->arena, n_endpoints, (gpointer *) ret_endpoints);
  for (guint i = 0; i < n_endpoints; i++)
    ah_endpoint_init (self, ret_endpoints[i], first + i, func, user_datas[i]);

  /* One write lock for the lot: pre-warming threads would otherwise
   * queue on it twice per agent. */
  pthread_rwlock_wrlock (&self->route_lock);
  for (guint i = 0; i < n_endpoints; i++)
    {
      ah_id_table_insert (&self->endpoints, ret_endpoints[i]);
      atomic_store_explicit (&ret_endpoints[i]->registered, TRUE, memory_order_relaxed);
      for (guint g = 0; g < n_groups; g++)
        ah_bus_group_add_unlocked (groups[g], ret_endpoints[i]);
    }
  pthread_rwlock_unlock (&self->route_lock);
}

/* Removes @endpoint from @group's members in O(1): the last member
 * takes its place (queue round robin does not depend on the order).
 * Returns FALSE if it was not a member. Must be called with route_lock
 * held for writing. */
/* An endpoint's position in @group's members, plus one; 0 if it is not
 * a member. Most endpoints are in one group, their home group, and keep
 * their position themselves; the group's table holds the others. */
static guint
ah_bus_group_get_position (AhBusGroup *group,
                           AhEndpoint *endpoint)
{
  if (endpoint->home_group == group)
    return endpoint->home_position;
  return GPOINTER_TO_UINT (g_hash_table_lookup (group->positions, endpoint));
}

static void
ah_bus_group_set_position (AhBusGroup *group,
                           AhEndpoint *endpoint,
                           guint       position)
{
  if (endpoint->home_group == group)
    endpoint->home_position = position;
  else
    g_hash_table_insert (group->positions, endpoint, GUINT_TO_POINTER (position));
}

static gboolean
ah_bus_group_take_member_unlocked (AhBusGroup *group,
                                   AhEndpoint *endpoint)
{
  guint position = ah_bus_group_get_position (group, endpoint);

  if (position == 0)
    return FALSE;
  if (endpoint->home_group == group)
    endpoint->home_group = NULL;
  else
    g_hash_table_remove (group->positions, endpoint);
  g_ptr_array_remove_index_fast (group->members, position - 1);
  if (position - 1 < group->members->len)
    ah_bus_group_set_position (group, g_ptr_array_index (group->members, position - 1), position);
  return TRUE;
}

/* Takes @endpoint out of the id table and its groups. Returns FALSE if
 * it was already out. Must be called with route_lock held for writing. */
static gboolean
ah_bus_unregister_endpoint_unlocked (AhBus      *self,
                                     AhEndpoint *endpoint)
{
  if (!endpoint->registered)
    return FALSE;

  ah_id_table_remove (&self->endpoints, endpoint->id);
  atomic_store_explicit (&endpoint->registered, FALSE, memory_order_relaxed);
  /* An endpoint does not list its groups (it would cost every agent a
   * list of its own): there are few groups, a couple per agent type,
   * and each finds its member in O(1). */
  for (guint i = 0; i < self->groups->len; i++)
    ah_bus_group_take_member_unlocked (g_ptr_array_index (self->groups, i), endpoint);
  return TRUE;
}

/* From a handler, closing another endpoint waits for that endpoint's
 * running batch like any other caller: two handlers closing each other's
 * endpoints at the same moment would wait for each other. */
void
ah_bus_endpoint_close (AhBus      *self,
                       AhEndpoint *endpoint)
{
  gboolean was_registered;

  g_return_if_fail (self != NULL);
  g_return_if_fail (endpoint != NULL);
  g_return_if_fail (endpoint->worker->bus == self);

  pthread_rwlock_wrlock (&self->route_lock);
  was_registered = ah_bus_unregister_endpoint_unlocked (self, endpoint);
  pthread_rwlock_unlock (&self->route_lock);
  g_return_if_fail (was_registered);

  /* From its own handler: waiting for the handler to return would wait
   * forever, so the worker finishes the close after the call. */
  if (ah_bus_current_call != NULL && ah_bus_current_call->endpoint == endpoint)
    {
      endpoint->close_requested = TRUE;
      return;
    }

  ah_endpoint_drain (endpoint, TRUE, AH_DEAD_LETTER_AGENT_STOPPED, TRUE);
  ah_endpoint_unref (endpoint);
}

gboolean
ah_bus_endpoint_close_if_idle (AhBus      *self,
                               AhEndpoint *endpoint)
{
  AhWorker *worker;
  gboolean idle;

  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (endpoint != NULL, FALSE);
  g_return_val_if_fail (endpoint->worker->bus == self, FALSE);
  g_return_val_if_fail (ah_bus_current_call == NULL || ah_bus_current_call->endpoint != endpoint,
                        FALSE);

  worker = ah_endpoint_lock_worker (endpoint);
  /* Every message routed to it and not yet queued holds a reference:
   * with only its creator's left, nothing is on its way. A scheduled or
   * running endpoint holds its run queue's. */
  idle = !endpoint->closing && endpoint->state == AH_ENDPOINT_IDLE
         && atomic_load (&endpoint->normal_used) == 0 && !ah_endpoint_has_system_mail (endpoint)
         && (endpoint->deferred == NULL || endpoint->deferred->len == 0)
         && atomic_load (&endpoint->ref_count) == 1;
  if (idle)
    endpoint->closing = TRUE;
  pthread_mutex_unlock (&worker->lock);
  if (!idle)
    return FALSE;

  pthread_rwlock_wrlock (&self->route_lock);
  ah_bus_unregister_endpoint_unlocked (self, endpoint);
  pthread_rwlock_unlock (&self->route_lock);
  /* A direct send that found it by id in the meantime is dead-lettered
   * by the drain or on arrival, as for any agent that stops. */
  ah_endpoint_drain (endpoint, FALSE, AH_DEAD_LETTER_AGENT_STOPPED, TRUE);
  ah_endpoint_unref (endpoint);
  return TRUE;
}

/* Blocks only the calling thread, and only while a turn of @endpoint
 * runs: other endpoints, on its worker too, keep running. From a worker
 * of this bus it is refused, not just from the endpoint's own handler
 * (which would wait for itself): a worker waiting here would stall
 * every endpoint it runs, and two handlers pausing each other's
 * endpoints would wait for each other for ever. */
void
ah_bus_endpoint_pause (AhBus      *self,
                       AhEndpoint *endpoint)
{
  AhWorker *worker;

  g_return_if_fail (self != NULL);
  g_return_if_fail (endpoint != NULL);
  g_return_if_fail (endpoint->worker->bus == self);
  g_return_if_fail (ah_bus_worker_for_thread (self) == NULL);

  /* A close from another thread may drop every other reference while
   * this waits. */
  ah_endpoint_ref (endpoint);
  worker = ah_endpoint_lock_worker (endpoint);
  /* A scheduled endpoint stays on its run queue (the queue is singly
   * linked: taking it out of the middle would cost a walk, under the
   * worker's lock, per endpoint of a type being reloaded); the worker
   * drops it when it comes up, unless a resume came first. */
  endpoint->paused = TRUE;
  /* A resume meanwhile ends the wait too: that pause is over. */
  while (endpoint->paused && endpoint->state == AH_ENDPOINT_RUNNING)
    pthread_cond_wait (&worker->state_cond, &worker->lock);
  pthread_mutex_unlock (&worker->lock);

  /* Ours: never the last one while the caller still holds the endpoint. */
  ah_endpoint_unref (endpoint);
}

/* Never blocks: from any thread, handlers included. */
void
ah_bus_endpoint_resume (AhBus      *self,
                        AhEndpoint *endpoint)
{
  AhWorker *worker;
  gboolean wake = FALSE;

  g_return_if_fail (self != NULL);
  g_return_if_fail (endpoint != NULL);
  g_return_if_fail (endpoint->worker->bus == self);

  worker = ah_endpoint_lock_worker (endpoint);
  if (endpoint->paused)
    {
      endpoint->paused = FALSE;
      if (endpoint->state == AH_ENDPOINT_RUNNING)
        {
          /* A pause still waiting for this turn returns; the turn's end
           * reschedules the endpoint as usual. */
          pthread_cond_broadcast (&worker->state_cond);
        }
      else if (endpoint->state == AH_ENDPOINT_SCHEDULED)
        {
          /* Still on its run queue: it takes its turn when it comes up. */
        }
      else if (endpoint->state == AH_ENDPOINT_IDLE && !endpoint->closing && !worker->drained
               && (ah_endpoint_has_system_mail (endpoint) || endpoint->normal_lane.length > 0
                   || (endpoint->deferred != NULL && endpoint->deferred->len > 0)))
        {
          /* Not running, so its worker does not touch @deferred now.
           * BLOCKED stays BLOCKED: the full mailbox's consumer wakes it. */
          endpoint->state = AH_ENDPOINT_SCHEDULED;
          ah_worker_push_locked (worker, ah_endpoint_ref (endpoint));
          wake = TRUE;
        }
    }
  ah_worker_unlock_and_wake (worker, wake);
}

/* ---- Groups and subscriptions ---------------------------------------------------------- */

static AhBusGroup *
ah_bus_group_new_unlocked (AhBus      *self,
                           const char *name,
                           AhDelivery  delivery)
{
  AhBusGroup *group = g_new0 (AhBusGroup, 1);

  group->bus = self;
  group->name = g_strdup (name);
  group->delivery = delivery;
  group->members = g_ptr_array_new ();
  group->positions = g_hash_table_new (NULL, NULL);
  atomic_init (&group->next_member, 0);
  g_ptr_array_add (self->groups, group);
  return group;
}

static void
ah_bus_group_free (AhBusGroup *group)
{
  /* Its members must not keep pointing at it: another group may be
   * allocated at the same address. */
  for (guint i = 0; i < group->members->len; i++)
    {
      AhEndpoint *member = g_ptr_array_index (group->members, i);

      if (member->home_group == group)
        member->home_group = NULL;
    }
  g_ptr_array_unref (group->members);
  g_hash_table_unref (group->positions);
  g_free (group->name);
  g_free (group);
}

AhBusGroup *
ah_bus_group_new (AhBus      *self,
                  const char *name,
                  AhDelivery  delivery)
{
  AhBusGroup *group;

  g_return_val_if_fail (self != NULL, NULL);
  g_return_val_if_fail (name != NULL, NULL);
  g_return_val_if_fail (delivery == AH_DELIVERY_QUEUE || delivery == AH_DELIVERY_BROADCAST, NULL);

  pthread_rwlock_wrlock (&self->route_lock);
  group = ah_bus_group_new_unlocked (self, name, delivery);
  pthread_rwlock_unlock (&self->route_lock);
  return group;
}

static void
ah_bus_group_add_unlocked (AhBusGroup *group,
                           AhEndpoint *endpoint)
{
  /* A closed endpoint must not come back through a group. */
  if (!endpoint->registered || ah_bus_group_get_position (group, endpoint) != 0)
    return;
  g_ptr_array_add (group->members, endpoint);
  if (endpoint->home_group == NULL)
    endpoint->home_group = group;
  ah_bus_group_set_position (group, endpoint, group->members->len);
}

void
ah_bus_group_add (AhBusGroup *group,
                  AhEndpoint *endpoint)
{
  AhBus *self;

  g_return_if_fail (group != NULL);
  g_return_if_fail (endpoint != NULL);
  g_return_if_fail (endpoint->worker->bus == group->bus);

  self = group->bus;
  pthread_rwlock_wrlock (&self->route_lock);
  ah_bus_group_add_unlocked (group, endpoint);
  pthread_rwlock_unlock (&self->route_lock);
}

void
ah_bus_group_remove (AhBusGroup *group,
                     AhEndpoint *endpoint)
{
  AhBus *self;

  g_return_if_fail (group != NULL);
  g_return_if_fail (endpoint != NULL);
  g_return_if_fail (endpoint->worker->bus == group->bus);

  self = group->bus;
  pthread_rwlock_wrlock (&self->route_lock);
  ah_bus_group_take_member_unlocked (group, endpoint);
  pthread_rwlock_unlock (&self->route_lock);
}

guint
ah_bus_group_get_size (AhBusGroup *group)
{
  guint size;

  g_return_val_if_fail (group != NULL, 0);

  pthread_rwlock_rdlock (&group->bus->route_lock);
  size = group->members->len;
  pthread_rwlock_unlock (&group->bus->route_lock);
  return size;
}

static gboolean
ah_bus_check_pattern (const char  *pattern,
                      GError     **error)
{
  if (ah_pattern_is_valid (pattern))
    return TRUE;
  g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT,
               "'%s' is not a valid subject pattern", pattern);
  return FALSE;
}

/* Must be called with route_lock held for writing. */
static guint
ah_bus_add_subscription_unlocked (AhBus      *self,
                                  const char *pattern,
                                  AhBusGroup *group,
                                  AhEndpoint *observer)
{
  AhSubscription *subscription = g_new0 (AhSubscription, 1);

  /* Ids are not reused: skip 0 and any id still taken after a wrap. */
  do
    self->last_subscription_id++;
  while (self->last_subscription_id == 0
         || g_hash_table_contains (self->subscriptions,
                                   GUINT_TO_POINTER (self->last_subscription_id)));

  subscription->id = self->last_subscription_id;
  subscription->pattern = g_strdup (pattern);
  subscription->group = group;
  subscription->observer = observer;
  g_hash_table_insert (self->subscriptions, GUINT_TO_POINTER (subscription->id), subscription);
  ah__subject_trie_insert (self->trie, pattern, subscription);
  /* Every cached subject resolution is stale from here on. */
  self->generation++;
  atomic_store (&self->generation_now, self->generation);
  return subscription->id;
}

guint
ah_bus_subscribe (AhBus       *self,
                  const char  *pattern,
                  AhBusGroup  *group,
                  GError     **error)
{
  guint id;

  g_return_val_if_fail (self != NULL, 0);
  g_return_val_if_fail (pattern != NULL, 0);
  g_return_val_if_fail (group != NULL && group->bus == self, 0);
  g_return_val_if_fail (error == NULL || *error == NULL, 0);

  if (!ah_bus_check_pattern (pattern, error))
    return 0;

  pthread_rwlock_wrlock (&self->route_lock);
  id = ah_bus_add_subscription_unlocked (self, pattern, group, NULL);
  pthread_rwlock_unlock (&self->route_lock);
  return id;
}

guint
ah_bus_subscribe_func (AhBus           *self,
                       const char      *pattern,
                       AhDelivery       delivery,
                       AhEndpointFunc   func,
                       gpointer         user_data,
                       GError         **error)
{
  AhEndpoint *observer;
  AhBusGroup *group;
  guint id;

  g_return_val_if_fail (self != NULL, 0);
  g_return_val_if_fail (pattern != NULL, 0);
  g_return_val_if_fail (delivery == AH_DELIVERY_QUEUE || delivery == AH_DELIVERY_BROADCAST, 0);
  g_return_val_if_fail (func != NULL, 0);
  g_return_val_if_fail (error == NULL || *error == NULL, 0);

  if (!ah_bus_check_pattern (pattern, error))
    return 0;

  observer = ah_bus_endpoint_new (self, func, user_data);
  pthread_rwlock_wrlock (&self->route_lock);
  group = ah_bus_group_new_unlocked (self, pattern, delivery);
  ah_bus_group_add_unlocked (group, observer);
  id = ah_bus_add_subscription_unlocked (self, pattern, group, observer);
  pthread_rwlock_unlock (&self->route_lock);
  return id;
}

void
ah_bus_unsubscribe (AhBus *self,
                    guint  subscription_id)
{
  AhSubscription *subscription;
  AhEndpoint *observer = NULL;

  g_return_if_fail (self != NULL);

  pthread_rwlock_wrlock (&self->route_lock);
  subscription = g_hash_table_lookup (self->subscriptions, GUINT_TO_POINTER (subscription_id));
  if (subscription != NULL)
    {
      g_hash_table_steal (self->subscriptions, GUINT_TO_POINTER (subscription_id));
      ah__subject_trie_remove (self->trie, subscription->pattern, subscription);
      self->generation++;
      atomic_store (&self->generation_now, self->generation);
      if (subscription->observer != NULL)
        {
          /* The observer's group is its own. Stale cached resolutions
           * may still point at it, but the generation bump above means
           * they are rebuilt before anyone reads them. */
          observer = subscription->observer;
          g_ptr_array_remove (self->groups, subscription->group);   /* frees it */
        }
    }
  pthread_rwlock_unlock (&self->route_lock);

  if (subscription == NULL)
    return;
  if (observer != NULL)
    ah_bus_endpoint_close (self, observer);
  ah_subscription_free (subscription);
}

/* ---- Routing ------------------------------------------------------------------------------ */

/* Must be called with route_lock held. */
static AhTargets *
ah_bus_resolve_targets_unlocked (AhBus      *self,
                                 const char *subject)
{
  g_autoptr(GPtrArray) matches = g_ptr_array_new ();
  g_autoptr(GHashTable) seen = NULL;
  AhTargets *targets;

  ah__subject_trie_match (self->trie, subject, matches);
  targets = g_malloc (sizeof (AhTargets) + matches->len * sizeof (AhBusGroup *));
  targets->n_groups = 0;
  /* A group reached through several of its patterns still gets the
   * message once. A linear scan is cheapest for the usual handful. */
  if (matches->len > 8)
    seen = g_hash_table_new (NULL, NULL);
  for (guint i = 0; i < matches->len; i++)
    {
      AhSubscription *subscription = g_ptr_array_index (matches, i);
      AhBusGroup *group = subscription->group;
      gboolean duplicate = FALSE;

      if (seen != NULL)
        duplicate = !g_hash_table_add (seen, group);
      else
        for (guint j = 0; j < targets->n_groups && !duplicate; j++)
          duplicate = targets->groups[j] == group;
      if (!duplicate)
        targets->groups[targets->n_groups++] = group;
    }
  return targets;
}

/* Chooses the recipients: one member of each queue group, every member
 * of each broadcast group; a group without members adds nobody. Must be
 * called with route_lock held. */
static void
ah_targets_pick_unlocked (const AhTargets *targets,
                          AhRecipients    *recipients)
{
  for (guint i = 0; i < targets->n_groups; i++)
    {
      AhBusGroup *group = targets->groups[i];
      guint n_members = group->members->len;

      if (n_members == 0)
        continue;
      /* A group of one (a pool of one responder, a direct subscription)
       * needs no turn: no shared counter to step, no division. */
      if (n_members == 1)
        {
          ah_recipients_add (recipients, ah_endpoint_ref (g_ptr_array_index (group->members, 0)));
        }
      else if (group->delivery == AH_DELIVERY_QUEUE)
        {
          guint turn = atomic_fetch_add_explicit (&group->next_member, 1, memory_order_relaxed);

          ah_recipients_add (recipients,
                             ah_endpoint_ref (g_ptr_array_index (group->members, turn % n_members)));
        }
      else
        {
          for (guint j = 0; j < n_members; j++)
            ah_recipients_add (recipients, ah_endpoint_ref (g_ptr_array_index (group->members, j)));
        }
    }
}

static AhSubjectEntry *ah_bus_cache_subject_unlocked (AhBus *self, const char *subject);
static AhSubjectEntry *ah_bus_cache_subject_capped (AhBus *self, const char *subject, guint max);

/* Adds a reference to each recipient of @subject (valid) to @recipients.
 * Returns the interned copy of @subject, or NULL when the subject cache
 * is full and the subject was routed uncached. */
static const char *
ah_bus_route_subject (AhBus        *self,
                      const char   *subject,
                      AhRecipients *recipients)
{
  AhSubjectEntry *entry;
  AhTargets *uncached = NULL;
  const char *interned = NULL;

  pthread_rwlock_rdlock (&self->route_lock);
  entry = g_hash_table_lookup (self->subjects, subject);
  if (entry != NULL && entry->generation == self->generation)
    {
      ah_targets_pick_unlocked (entry->targets, recipients);
      interned = entry->subject;
      pthread_rwlock_unlock (&self->route_lock);
      return interned;
    }
  if (entry == NULL && g_hash_table_size (self->subjects) >= AH_BUS_SUBJECT_CACHE_MAX)
    {
      /* Nothing to cache, so no need for the write lock. */
      uncached = ah_bus_resolve_targets_unlocked (self, subject);
      ah_targets_pick_unlocked (uncached, recipients);
      pthread_rwlock_unlock (&self->route_lock);
      g_free (uncached);
      return NULL;
    }
  pthread_rwlock_unlock (&self->route_lock);

  /* A new subject, or subscriptions changed since it was resolved. Rare,
   * so the write lock is fine; it is re-checked after the gap. */
  pthread_rwlock_wrlock (&self->route_lock);
  entry = ah_bus_cache_subject_unlocked (self, subject);
  if (entry != NULL)
    {
      ah_targets_pick_unlocked (entry->targets, recipients);
      interned = entry->subject;
    }
  else
    {
      uncached = ah_bus_resolve_targets_unlocked (self, subject);
      ah_targets_pick_unlocked (uncached, recipients);
    }
  pthread_rwlock_unlock (&self->route_lock);

  g_free (uncached);
  return interned;
}

/* ah_bus_route_subject() for an interned subject: its entry is at hand,
 * so no hash of the string and no lookup, unless subscriptions changed
 * since it was resolved. */
static const char *
ah_bus_route_entry (AhBus          *self,
                    AhSubjectEntry *entry,
                    AhRecipients   *recipients)
{
  pthread_rwlock_rdlock (&self->route_lock);
  if (G_LIKELY (entry->targets != NULL && entry->generation == self->generation))
    {
      ah_targets_pick_unlocked (entry->targets, recipients);
      pthread_rwlock_unlock (&self->route_lock);
      return entry->subject;
    }
  pthread_rwlock_unlock (&self->route_lock);
  return ah_bus_route_subject (self, entry->subject, recipients);
}

/* Resolves @subject into the subject cache, unless the cache is full.
 * Returns its up-to-date entry, or NULL. Must be called with route_lock
 * held for writing. */
static AhSubjectEntry *
ah_bus_cache_subject_unlocked (AhBus      *self,
                               const char *subject)
{
  return ah_bus_cache_subject_capped (self, subject, AH_BUS_SUBJECT_CACHE_MAX);
}

/* The same, with the cache allowed up to @max entries. */
static AhSubjectEntry *
ah_bus_cache_subject_capped (AhBus      *self,
                             const char *subject,
                             guint       max)
{
  AhSubjectEntry *entry = g_hash_table_lookup (self->subjects, subject);

  if (entry == NULL && g_hash_table_size (self->subjects) < max)
    {
      entry = g_new0 (AhSubjectEntry, 1);
      entry->subject = g_strdup (subject);
      g_hash_table_insert (self->subjects, entry->subject, entry);
    }
  if (entry != NULL && (entry->targets == NULL || entry->generation != self->generation))
    {
      g_free (entry->targets);
      entry->targets = ah_bus_resolve_targets_unlocked (self, subject);
      entry->generation = self->generation;
      atomic_store (&entry->subscribed_state,
                    (((guint64) entry->generation + 1) << 1)
                    | (entry->targets->n_groups > 0 ? 1 : 0));
    }
  return entry;
}

/* Returns a reference to the open endpoint @id, or NULL. */
static AhEndpoint *
ah_bus_lookup_endpoint (AhBus     *self,
                        AhAgentId  id)
{
  AhEndpoint *endpoint;

  pthread_rwlock_rdlock (&self->route_lock);
  endpoint = ah_id_table_lookup (&self->endpoints, id);
  if (endpoint != NULL)
    ah_endpoint_ref (endpoint);
  pthread_rwlock_unlock (&self->route_lock);
  return endpoint;
}

gpointer
ah_bus_endpoint_select (AhBus                *self,
                        AhAgentId             id,
                        AhEndpointFunc        handler,
                        AhEndpointSelectFunc  select,
                        gpointer              data)
{
  AhEndpoint *endpoint;
  gpointer selected = NULL;

  g_return_val_if_fail (self != NULL, NULL);
  g_return_val_if_fail (select != NULL, NULL);

  /* Read-locked: unregistering an endpoint takes the write lock. */
  pthread_rwlock_rdlock (&self->route_lock);
  endpoint = ah_id_table_lookup (&self->endpoints, id);
  if (endpoint != NULL && endpoint->func == handler)
    selected = select (endpoint->user_data, data);
  pthread_rwlock_unlock (&self->route_lock);
  return selected;
}

static gboolean
ah_bus_check_message (const char  *subject,
                      gsize        size,
                      GError     **error)
{
  if (!ah_subject_is_valid (subject))
    {
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT,
                   "'%s' is not a valid subject", subject);
      return FALSE;
    }
  if (size > AH_BUS_MESSAGE_MAX_SIZE)
    {
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_FAILED,
                   "a payload of %" G_GSIZE_FORMAT " bytes is over the limit of %"
                   G_GSIZE_FORMAT " bytes", size, AH_BUS_MESSAGE_MAX_SIZE);
      return FALSE;
    }
  return TRUE;
}

/* A message refused before routing (bad subject, payload too large)
 * still counts as one accepted and failed, as the plugin API promises,
 * so the account balances. */
static void
ah_bus_count_refused (AhBus *self)
{
  ah_bus_accept (self, 1);
  ah_bus_settle (self, AH_TALLY_FAILED, 1);
}

/* Accepts @message (transfer full) once for a single dead letter. */
static void
ah_bus_accept_dead (AhBus              *self,
                    AhMessage          *message,
                    AhAgentId           intended,
                    AhDeadLetterReason  reason)
{
  ah_bus_accept (self, 1);
  ah_bus_dead_letter (self, message, intended, reason);
  ah__message_unref (message);
}

/* ---- Publishing from outside the handlers ------------------------------------------------ */

/* Queues @message (transfer full) for @recipients (their references are
 * taken over), from a thread outside any handler call. With @never_wait,
 * AH_OVERFLOW_BLOCK queues past a full mailbox instead of waiting. */
static gboolean
ah_bus_deliver_external (AhBus         *self,
                         AhMessage     *message,
                         AhRecipients  *recipients,
                         gboolean       never_wait,
                         GError       **error)
{
  gboolean normal = message->priority != AH_PRIORITY_SYSTEM;
  gboolean reserve = self->config.overflow == AH_OVERFLOW_FAIL && normal;
  AhEndpoint **items = ah_recipients_get (recipients);
  AhEnvelope inline_envelopes[AH_RECIPIENTS_INLINE];
  g_autofree AhEnvelope *heap_envelopes = NULL;
  AhEnvelope *envelopes = inline_envelopes;
  guint n_envelopes = 0;
  AhDeliverMode mode;
  AhDeliverResult result;
  guint n_refused = 0;
  AhAgentId first_refused = AH_AGENT_ID_NONE;

  if (self->config.overflow == AH_OVERFLOW_FAIL)
    mode = AH_DELIVER_RESERVED;
  else if (never_wait)
    mode = AH_DELIVER_FORCE;
  else if (ah_bus_worker_for_thread (self) != NULL)
    mode = AH_DELIVER_REFUSE;   /* waiting on a worker could wait for itself */
  else
    mode = AH_DELIVER_WAIT;

  if (recipients->len > AH_RECIPIENTS_INLINE)
    envelopes = heap_envelopes = g_new (AhEnvelope, recipients->len);

  ah_bus_accept (self, recipients->len);
  for (guint i = 0; i < recipients->len; i++)
    {
      AhEndpoint *to = items[i];

      if (reserve && !ah_endpoint_reserve (to, self->config.mailbox_capacity))
        {
          if (n_refused++ == 0)
            first_refused = to->id;
          ah_bus_dead_letter (self, message, to->id, AH_DEAD_LETTER_OVERFLOW);
          ah_endpoint_unref (to);
          continue;
        }
      envelopes[n_envelopes].message = ah__message_ref (message);
      envelopes[n_envelopes].to = to;
      n_envelopes++;
    }
  recipients->len = 0;   /* the references moved to the envelopes */
  ah__message_unref (message);

  ah_bus_deliver (self, envelopes, n_envelopes, mode, NULL, NULL, &result);
  if (result.n_refused > 0 && n_refused == 0)
    first_refused = result.first_refused;
  n_refused += result.n_refused;

  if (n_refused > 0)
    {
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_OVERFLOW,
                   "the mailbox of agent %" G_GUINT64_FORMAT " is full", first_refused);
      return FALSE;
    }
  if (result.n_shutdown > 0)
    {
      g_set_error_literal (error, AH_HOST_ERROR, AH_HOST_ERROR_STATE, "the bus is stopped");
      return FALSE;
    }
  return TRUE;
}

static gboolean
ah_bus_check_open (AhBus   *self,
                   GError **error)
{
  if (!atomic_load (&self->stopping))
    return TRUE;
  g_set_error_literal (error, AH_HOST_ERROR, AH_HOST_ERROR_STATE, "the bus is stopped");
  return FALSE;
}

/* Under AH_OVERFLOW_BLOCK, a caller outside the workers waits for room;
 * one on a worker thread (an observer calling back into the host, say)
 * cannot, since the room may have to be made by that very worker, so a
 * full mailbox refuses it as under AH_OVERFLOW_FAIL. */
gboolean
ah_bus_publish (AhBus        *self,
                AhAgentId     sender,
                const char   *subject,
                gconstpointer data,
                gsize         size,
                AhPriority    priority,
                GError      **error)
{
  g_auto(AhRecipients) recipients = { 0 };
  const char *interned;
  AhMessage *message;

  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (subject != NULL, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);
  g_return_val_if_fail (priority == AH_PRIORITY_NORMAL || priority == AH_PRIORITY_SYSTEM, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  ah_bus_tally_add (self, AH_TALLY_PUBLISHED, 1);
  if (!ah_bus_check_open (self, error))
    return FALSE;
  if (!ah_bus_check_message (subject, size, error))
    {
      ah_bus_count_refused (self);
      return FALSE;
    }

  interned = ah_bus_route_subject (self, subject, &recipients);
  message = ah__message_new (AH_MESSAGE_PUBLISH, priority, interned != NULL ? interned : subject,
                             interned != NULL, sender, AH_AGENT_ID_NONE, 0, data, size);
  ah_bus_tap (self, message, AH_AGENT_ID_NONE);
  if (recipients.len == 0)
    {
      ah_bus_accept_dead (self, message, AH_AGENT_ID_NONE, AH_DEAD_LETTER_NO_ROUTE);
      return TRUE;
    }
  return ah_bus_deliver_external (self, message, &recipients, FALSE, error);
}

gboolean
ah_bus_publish_event (AhBus        *self,
                      const char   *subject,
                      gconstpointer data,
                      gsize         size)
{
  g_auto(AhRecipients) recipients = { 0 };
  const char *interned;
  AhMessage *message;

  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (subject != NULL, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);

  if (atomic_load (&self->stopping) || !ah_bus_check_message (subject, size, NULL))
    return FALSE;

  /* Nobody listens: the event never becomes a message, so it is neither
   * accepted nor dead-lettered and the account stays about traffic. */
  interned = ah_bus_route_subject (self, subject, &recipients);
  if (recipients.len == 0)
    return FALSE;

  ah_bus_tally_add (self, AH_TALLY_PUBLISHED, 1);
  message = ah__message_new (AH_MESSAGE_PUBLISH, AH_PRIORITY_SYSTEM,
                             interned != NULL ? interned : subject, interned != NULL,
                             AH_AGENT_ID_NONE, AH_AGENT_ID_NONE, 0, data, size);
  ah_bus_tap (self, message, AH_AGENT_ID_NONE);
  /* System priority: never refused for room, never waits. */
  return ah_bus_deliver_external (self, message, &recipients, TRUE, NULL);
}

gboolean
ah_bus_send (AhBus        *self,
             AhAgentId     sender,
             AhAgentId     to,
             const char   *subject,
             gconstpointer data,
             gsize         size,
             AhPriority    priority,
             GError      **error)
{
  g_auto(AhRecipients) recipients = { 0 };
  AhEndpoint *endpoint;
  AhMessage *message;

  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (subject != NULL, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);
  g_return_val_if_fail (priority == AH_PRIORITY_NORMAL || priority == AH_PRIORITY_SYSTEM, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  ah_bus_tally_add (self, AH_TALLY_PUBLISHED, 1);
  if (!ah_bus_check_open (self, error))
    return FALSE;
  if (!ah_bus_check_message (subject, size, error))
    {
      ah_bus_count_refused (self);
      return FALSE;
    }

  message = ah__message_new (AH_MESSAGE_DIRECT, priority, subject, FALSE, sender,
                             AH_AGENT_ID_NONE, 0, data, size);
  ah_bus_tap (self, message, to);
  endpoint = ah_bus_lookup_endpoint (self, to);
  if (endpoint == NULL)
    {
      ah_bus_accept_dead (self, message, to, AH_DEAD_LETTER_NO_AGENT);
      return TRUE;
    }
  ah_recipients_add (&recipients, endpoint);
  return ah_bus_deliver_external (self, message, &recipients, FALSE, error);
}

/* Never waits, even under AH_OVERFLOW_BLOCK: the sender is typically an
 * offload thread delivering a result the agent asked for, and the agent
 * must not be able to stall the host's I/O threads by being slow. Under
 * AH_OVERFLOW_FAIL a full mailbox refuses it like any send. */
gboolean
ah_bus_send_full (AhBus         *self,
                  AhAgentId      sender,
                  AhAgentId      to,
                  const char    *subject,
                  gconstpointer  data,
                  gsize          size,
                  AhPriority     priority,
                  AhMessageKind  kind,
                  guint64        correlation,
                  GError       **error)
{
  g_auto(AhRecipients) recipients = { 0 };
  AhEndpoint *endpoint;
  AhMessage *message;

  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (subject != NULL, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);
  g_return_val_if_fail (priority == AH_PRIORITY_NORMAL || priority == AH_PRIORITY_SYSTEM, FALSE);
  g_return_val_if_fail (kind >= AH_MESSAGE_PUBLISH && kind <= AH_MESSAGE_OFFLOAD_FAILED, FALSE);
  /* From a handler it would overtake the handler's own outbox. */
  g_return_val_if_fail (ah_bus_current_call == NULL || ah_bus_current_call->bus != self, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  ah_bus_tally_add (self, AH_TALLY_PUBLISHED, 1);
  if (!ah_bus_check_open (self, error))
    return FALSE;
  if (!ah_bus_check_message (subject, size, error))
    {
      ah_bus_count_refused (self);
      return FALSE;
    }

  message = ah__message_new (kind, priority, subject, FALSE, sender, AH_AGENT_ID_NONE,
                             correlation, data, size);
  ah_bus_tap (self, message, to);
  endpoint = ah_bus_lookup_endpoint (self, to);
  if (endpoint == NULL)
    {
      ah_bus_accept_dead (self, message, to, AH_DEAD_LETTER_NO_AGENT);
      return TRUE;
    }
  ah_recipients_add (&recipients, endpoint);
  return ah_bus_deliver_external (self, message, &recipients, TRUE, error);
}

/* ---- Request bookkeeping ------------------------------------------------------------------ */

/* Frees @slot (plus one) for the next request, and hands back its
 * subject copy and its requester reference for the caller to release
 * once the lock is released. requests_lock held. */
static char *
ah_bus_request_free_slot_locked (AhBus       *self,
                                 guint32      slot,
                                 AhEndpoint **ret_requester)
{
  AhPendingRequest *request = &g_array_index (self->requests, AhPendingRequest, slot - 1);
  char *subject_copy = g_steal_pointer (&request->subject_copy);

  *ret_requester = g_steal_pointer (&request->requester);
  request->correlation = 0;
  request->subject = NULL;
  request->next_free = self->free_request;
  self->free_request = slot;
  return subject_copy;
}

/* The pending request @correlation in @slot (plus one), or NULL if it is
 * not pending any more (completed, timed out, or never registered).
 * requests_lock held. */
static AhPendingRequest *
ah_bus_request_find_locked (AhBus   *self,
                            guint64  correlation,
                            guint32  slot)
{
  AhPendingRequest *request;

  if (slot == 0 || slot > self->requests->len)
    return NULL;
  request = &g_array_index (self->requests, AhPendingRequest, slot - 1);
  return request->correlation == correlation ? request : NULL;
}

static void
ah_deadline_heap_push (AhDeadlineHeap *heap,
                       AhDeadline      deadline)
{
  AhDeadline *items;
  guint i;

  if (heap->len == heap->allocated)
    {
      heap->allocated = MAX (16, 2 * heap->allocated);
      heap->items = g_renew (AhDeadline, heap->items, heap->allocated);
    }
  items = heap->items;
  items[heap->len++] = deadline;
  for (i = heap->len - 1; i > 0; )
    {
      guint parent = (i - 1) / 2;

      if (items[parent].deadline_ns <= items[i].deadline_ns)
        break;
      deadline = items[parent];
      items[parent] = items[i];
      items[i] = deadline;
      i = parent;
    }
}

static void
ah_deadline_heap_pop (AhDeadlineHeap *heap)
{
  AhDeadline *items = heap->items;
  guint i = 0;

  items[0] = items[heap->len - 1];
  heap->len--;
  for (;;)
    {
      guint smallest = i, left = 2 * i + 1, right = 2 * i + 2;
      AhDeadline swap;

      if (left < heap->len && items[left].deadline_ns < items[smallest].deadline_ns)
        smallest = left;
      if (right < heap->len && items[right].deadline_ns < items[smallest].deadline_ns)
        smallest = right;
      if (smallest == i)
        break;
      swap = items[i];
      items[i] = items[smallest];
      items[smallest] = swap;
      i = smallest;
    }
}

/* Registers the request @correlation and returns its slot, plus one. */
static guint32
ah_bus_request_register (AhBus      *self,
                         guint64     correlation,
                         AhEndpoint *requester,
                         const char *subject,
                         gboolean    subject_is_interned,
                         guint       timeout_ms)
{
  char *subject_copy = subject_is_interned ? NULL : g_strdup (subject);
  AhPendingRequest *request;
  AhDeadline deadline;
  guint32 slot;

  deadline.correlation = correlation;
  /* Timeouts are milliseconds: the coarse clock (a few ms of resolution,
   * a fraction of the fine clock's cost) places them, rounded up by its
   * resolution so that none fires early; late by at most that. */
  deadline.deadline_ns = ah__monotonic_coarse_ns ()
                         + (gint64) timeout_ms * G_GINT64_CONSTANT (1000000);

  pthread_mutex_lock (&self->requests_lock);
  /* Free slots are reused last freed first: request after request, the
   * same warm slot and no malloc. */
  slot = self->free_request;
  if (slot != 0)
    {
      self->free_request = g_array_index (self->requests, AhPendingRequest, slot - 1).next_free;
    }
  else
    {
      g_array_set_size (self->requests, self->requests->len + 1);
      slot = self->requests->len;
    }
  request = &g_array_index (self->requests, AhPendingRequest, slot - 1);
  request->correlation = correlation;
  request->requester = ah_endpoint_ref (requester);
  request->subject_copy = subject_copy;
  request->subject = subject_is_interned ? subject : subject_copy;
  request->next_free = 0;
  deadline.slot = slot;
  atomic_fetch_add (&self->n_pending, 1);
  ah_deadline_heap_push (&self->deadlines, deadline);
  /* The timer sleeps until the time it is armed for: wake it only if
   * this deadline comes first. Request after request with the same
   * timeout, that is once, not once per request. */
  if (deadline.deadline_ns < self->timer_armed_ns)
    pthread_cond_signal (&self->requests_cond);
  pthread_mutex_unlock (&self->requests_lock);
  return slot;
}

/* Completes the request @correlation in @slot (plus one): TRUE if it was
 * still pending, and then, if @ret_requester is not NULL, the requester's
 * reference is handed over in it. */
static gboolean
ah_bus_request_take (AhBus       *self,
                     guint64      correlation,
                     guint32      slot,
                     AhEndpoint **ret_requester)
{
  char *subject_copy = NULL;
  AhEndpoint *requester = NULL;
  gboolean found;

  pthread_mutex_lock (&self->requests_lock);
  found = ah_bus_request_find_locked (self, correlation, slot) != NULL;
  if (found)
    {
      subject_copy = ah_bus_request_free_slot_locked (self, slot, &requester);
      /* Completed requests leave their deadlines in the heap, skipped when
       * they come up; with nothing pending they can all go at once. */
      if (atomic_fetch_sub (&self->n_pending, 1) == 1)
        self->deadlines.len = 0;
    }
  pthread_mutex_unlock (&self->requests_lock);
  g_free (subject_copy);
  if (ret_requester != NULL)
    *ret_requester = requester;
  else if (requester != NULL)
    ah_endpoint_unref (requester);

  if (found && ah_bus_is_idle_now (self))
    ah_bus_notify_idle (self);
  return found;
}

static gboolean
ah_bus_request_complete (AhBus   *self,
                         guint64  correlation,
                         guint32  slot)
{
  return ah_bus_request_take (self, correlation, slot, NULL);
}

/* A reference to the requester of the pending request @correlation in
 * @slot (plus one), or NULL if it is not pending. */
static AhEndpoint *
ah_bus_request_peek_requester (AhBus   *self,
                               guint64  correlation,
                               guint32  slot)
{
  AhPendingRequest *request;
  AhEndpoint *requester = NULL;

  pthread_mutex_lock (&self->requests_lock);
  request = ah_bus_request_find_locked (self, correlation, slot);
  if (request != NULL)
    requester = ah_endpoint_ref (request->requester);
  pthread_mutex_unlock (&self->requests_lock);
  return requester;
}

/* Sends the TIMEOUT of request @correlation to @requester (its reference
 * taken over). */
static void
ah_bus_send_timeout (AhBus      *self,
                     guint64     correlation,
                     AhEndpoint *requester,
                     const char *subject)
{
  AhMessage *message = ah__message_new (AH_MESSAGE_TIMEOUT, AH_PRIORITY_SYSTEM, subject,
                                        FALSE, AH_AGENT_ID_NONE, AH_AGENT_ID_NONE,
                                        correlation, NULL, 0);
  AhEnvelope envelope;

  envelope.message = message;
  envelope.to = requester;
  if (!atomic_load_explicit (&requester->registered, memory_order_relaxed))
    {
      ah_bus_dead_letter (self, message, requester->id, AH_DEAD_LETTER_NO_AGENT);
      ah__message_unref (message);
      ah_endpoint_unref (requester);
      return;
    }
  /* System lane: never refused, never waits. */
  ah_bus_deliver (self, &envelope, 1, AH_DELIVER_RESERVED, NULL, NULL, NULL);
}

/* The timer thread: sleeps until the earliest deadline (re-armed when an
 * earlier one is registered) and turns expired requests into TIMEOUT
 * messages. */
static gpointer
ah_bus_timer_main (gpointer data)
{
  AhBus *self = data;

  pthread_mutex_lock (&self->requests_lock);
  while (!self->timer_stopping)
    {
      AhDeadline earliest;
      AhPendingRequest *request;
      AhEndpoint *requester;
      const char *subject;
      char *subject_copy;

      if (self->deadlines.len == 0)
        {
          /* Armed for a deadline whose request has completed: it keeps
           * the time it was armed for (one wake-up for nothing, later),
           * so the next request with a later deadline need not wake it. */
          if (self->timer_armed_ns == G_MAXINT64)
            {
              pthread_cond_wait (&self->requests_cond, &self->requests_lock);
            }
          else if (self->timer_armed_ns > ah__monotonic_ns ())
            {
              struct timespec until = ah_timespec_from_ns (self->timer_armed_ns);

              pthread_cond_timedwait (&self->requests_cond, &self->requests_lock, &until);
            }
          else
            {
              self->timer_armed_ns = G_MAXINT64;
            }
          continue;
        }
      earliest = self->deadlines.items[0];
      if (earliest.deadline_ns > ah__monotonic_ns ())
        {
          struct timespec until = ah_timespec_from_ns (earliest.deadline_ns);

          self->timer_armed_ns = earliest.deadline_ns;
          pthread_cond_timedwait (&self->requests_cond, &self->requests_lock, &until);
          continue;
        }

      ah_deadline_heap_pop (&self->deadlines);
      request = ah_bus_request_find_locked (self, earliest.correlation, earliest.slot);
      if (request == NULL)
        continue;   /* replied to in time */
      /* The slot may be reused as soon as the lock is released: its
       * subject copy is taken over, and an interned subject lives as
       * long as the bus. */
      subject = request->subject;
      subject_copy = ah_bus_request_free_slot_locked (self, earliest.slot, &requester);
      /* The TIMEOUT is accepted before the request stops pending, so the
       * bus never looks idle in between. */
      ah_bus_accept (self, 1);
      atomic_fetch_sub (&self->n_pending, 1);
      ah_bus_tally_add (self, AH_TALLY_REQUEST_TIMEOUTS, 1);
      pthread_mutex_unlock (&self->requests_lock);

      ah_bus_send_timeout (self, earliest.correlation, requester, subject);
      g_free (subject_copy);

      pthread_mutex_lock (&self->requests_lock);
    }
  pthread_mutex_unlock (&self->requests_lock);
  return NULL;
}

/* ---- Interned subjects -------------------------------------------------------------------- */

/* Plugins may intern more subjects than the routing cache keeps for
 * subjects met in passing, but not without bound. */
#define AH_BUS_INTERNED_MAX (2 * AH_BUS_SUBJECT_CACHE_MAX)

/* Subjects this thread interned lately. Every agent of a type interns
 * the same few subjects when it starts, and pre-warm starts them from
 * several threads at once: under route_lock, even read-locked, they
 * queued on the lock's cache line and its futex (a third of pre-warm's
 * time, perf). A hit is a hash and a string compare. A slot names its
 * bus by serial, not by address, so a freed bus's entries are never
 * taken for a new one's; an entry lives as long as its bus. */
#define AH_INTERN_CACHE_BITS  3
#define AH_INTERN_CACHE_SLOTS (1u << AH_INTERN_CACHE_BITS)

typedef struct {
  guint64         bus_serial;
  guint           hash;
  AhSubjectEntry *entry;
} AhInternCacheSlot;

static AH_THREAD_LOCAL AhInternCacheSlot ah_intern_cache[AH_INTERN_CACHE_SLOTS];

const AhSubject *
ah_bus_intern_subject (AhBus       *self,
                       const char  *subject,
                       GError     **error)
{
  AhSubjectEntry *entry;
  AhInternCacheSlot *slot;
  guint hash;

  g_return_val_if_fail (self != NULL, NULL);
  g_return_val_if_fail (subject != NULL, NULL);

  hash = g_str_hash (subject);
  /* The slot from the hash's top bits, mixed (Fibonacci hashing): the
   * low bits of g_str_hash() follow the last characters, and subjects
   * that share a tail ("bench.collect", "bench.stop") shared a slot and
   * evicted each other at every agent's init. */
  slot = &ah_intern_cache[(hash * 2654435769u) >> (32 - AH_INTERN_CACHE_BITS)];
  if (slot->bus_serial == self->serial && slot->hash == hash
      && strcmp (slot->entry->subject, subject) == 0)
    return (const AhSubject *) slot->entry;

  if (!ah_bus_check_message (subject, 0, error))
    return NULL;
  /* After the first agent of a type, a read lock finds them. */
  pthread_rwlock_rdlock (&self->route_lock);
  entry = g_hash_table_lookup (self->subjects, subject);
  pthread_rwlock_unlock (&self->route_lock);
  if (entry == NULL)
    {
      pthread_rwlock_wrlock (&self->route_lock);
      entry = ah_bus_cache_subject_capped (self, subject, AH_BUS_INTERNED_MAX);
      pthread_rwlock_unlock (&self->route_lock);
    }
  if (entry == NULL)
    {
      g_set_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT,
                   "cannot intern '%s': %u subjects are interned already", subject,
                   AH_BUS_INTERNED_MAX);
      return NULL;
    }
  slot->bus_serial = self->serial;
  slot->hash = hash;
  slot->entry = entry;
  return (const AhSubject *) entry;
}

gboolean
ah_bus_subject_is_subscribed (AhBus           *self,
                              const AhSubject *subject)
{
  AhSubjectEntry *entry = (AhSubjectEntry *) subject;
  guint64 state;
  gboolean subscribed;

  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (subject != NULL, FALSE);

  state = atomic_load (&entry->subscribed_state);
  if ((state >> 1) == (guint64) atomic_load (&self->generation_now) + 1)
    return (state & 1) != 0;

  /* Subscriptions changed since it was resolved: resolve it again. */
  pthread_rwlock_wrlock (&self->route_lock);
  entry = ah_bus_cache_subject_capped (self, entry->subject, AH_BUS_INTERNED_MAX);
  subscribed = entry != NULL && entry->targets->n_groups > 0;
  pthread_rwlock_unlock (&self->route_lock);
  return subscribed;
}

/* ---- Publishing from a handler ------------------------------------------------------------ */

/* The time a flush stamps the call's messages with: the handler's end
 * when its endpoint func has read it (every message of the call was
 * made before that), else the clock now. */
static gint64
ah_bus_call_stamp_ns (AhBusCall *call)
{
  return call->end_ns != 0 ? call->end_ns : ah__clock_ns ();
}

gint64
ah_bus_call_get_start_ns (AhBusCall *call)
{
  g_return_val_if_fail (call != NULL, 0);

  return call->start_ns;
}

gint64
ah_bus_call_read_end_ns (AhBusCall *call)
{
  g_return_val_if_fail (call != NULL, 0);

  call->end_ns = ah__clock_ns ();
  return call->end_ns;
}

/* The queue-group picks for one run of messages on one subject. */
typedef struct {
  guint base;     /* the group's turn for the run's first chunk */
  guint chunk;    /* consecutive messages given to one member */
} AhQueuePick;

#define AH_ROUTE_INLINE_GROUPS 16

/* How much work each worker has, as a flush routes chunks of a queue
 * group: endpoints on its run queue (each up to a handler batch), plus
 * the chunks this flush gave it; a chunk goes to the member whose turn
 * it is unless its worker has more to do than the least busy one. A
 * flush from inside a handler (its outbox filled up) counts the
 * publisher on its own worker too: it goes on publishing, as much work
 * as publish_batch / handler_batch handler batches, so the chunks go to
 * the other workers first rather than queue where the burst is made.
 * (Plain round robin gave each worker an even share; with 1 publisher
 * and 2 workers the publisher's worker was saturated while the other
 * idled a third of the time: 25 -> 31 M msgs/s in bench throughput.) A
 * flush after the handler returned leaves the worker free, and counts
 * only run queues. Up to AH_LOADS_MAX workers; beyond, round robin. */
#define AH_LOADS_MAX 64

typedef struct {
  guint n_workers;
  guint min;
  guint load[AH_LOADS_MAX];
} AhWorkerLoads;

static void
ah_worker_loads_init (AhWorkerLoads *loads,
                      AhBus         *self)
{
  guint own = self->config.publish_batch / MAX (self->config.handler_batch, 1u);

  loads->n_workers = self->config.n_workers <= AH_LOADS_MAX ? self->config.n_workers : 1;
  loads->min = G_MAXUINT;
  for (guint w = 0; w < loads->n_workers; w++)
    {
      AhWorker *worker = self->workers[w];

      loads->load[w] = atomic_load_explicit (&worker->n_scheduled, memory_order_relaxed)
                       + (worker == ah_bus_current_worker && ah_bus_current_call != NULL
                          ? MAX (own, 1u) : 0);
      loads->min = MIN (loads->min, loads->load[w]);
    }
}

/* Whether @member's worker has more to do than the least busy one. */
static inline gboolean
ah_worker_loads_skip (const AhWorkerLoads *loads,
                      AhEndpoint          *member)
{
  return loads->load[member->worker->index] > loads->min;
}

static void
ah_worker_loads_add (AhWorkerLoads *loads,
                     AhEndpoint    *member)
{
  if (loads->n_workers <= 1)
    return;
  loads->load[member->worker->index]++;
  loads->min = G_MAXUINT;
  for (guint w = 0; w < loads->n_workers; w++)
    loads->min = MIN (loads->min, loads->load[w]);
}

/* Routes the run @items[0..n_run) of messages on one subject to the
 * recipients of @targets, appending one envelope per recipient to
 * @routed, message after message. Returns how many envelopes; 0 means
 * nobody subscribes. Must be called with route_lock held.
 *
 * A queue group gives a run of messages to its members in chunks: up to
 * handler_batch consecutive messages to one member, and no more than an
 * even share per worker, so a burst fills whole handler batches (one
 * call for 32 messages instead of 32 calls) and a short run still
 * spreads over the workers. Members take turns chunk by chunk, with one
 * atomic step of the group's turn per run; a single queue group skips a
 * member whose worker is busier than the least busy one. */
static guint
ah_bus_route_run_locked (AhBus            *self,
                         const AhTargets  *targets,
                         const AhEnvelope *items,
                         guint             n_run,
                         AhEnvelopes      *routed)
{
  AhQueuePick inline_picks[AH_ROUTE_INLINE_GROUPS];
  g_autofree AhQueuePick *heap_picks = NULL;
  AhQueuePick *picks = inline_picks;
  guint per_worker = (n_run + self->config.n_workers - 1) / self->config.n_workers;
  guint chunk = CLAMP (per_worker, 1, self->config.handler_batch);
  guint n_per_message = 0;

  if (targets->n_groups > AH_ROUTE_INLINE_GROUPS)
    picks = heap_picks = g_new (AhQueuePick, targets->n_groups);
  for (guint g = 0; g < targets->n_groups; g++)
    {
      AhBusGroup *group = targets->groups[g];

      if (group->delivery != AH_DELIVERY_QUEUE || group->members->len == 0)
        continue;
      picks[g].chunk = chunk;
      picks[g].base = atomic_fetch_add_explicit (&group->next_member,
                                                 (n_run + chunk - 1) / chunk,
                                                 memory_order_relaxed);
    }

  for (guint g = 0; g < targets->n_groups; g++)
    {
      AhBusGroup *group = targets->groups[g];

      if (group->delivery == AH_DELIVERY_QUEUE)
        n_per_message += group->members->len > 0 ? 1 : 0;
      else
        n_per_message += group->members->len;
    }
  if (n_per_message == 0)
    return 0;

  /* Each message already holds the outbox's reference, which becomes its
   * first envelope's: a message with one recipient costs no atomic
   * operation at all. */
  if (n_per_message > 1)
    for (guint k = 0; k < n_run; k++)
      ah__message_ref_n (items[k].message, n_per_message - 1);

  /* One broadcast group: the envelopes go member by member, so each
   * member's messages are one run (one reference step, one stretch of
   * its ring); the per-member order is the same either way. With
   * several groups an agent may be in two of them, so the messages stay
   * in publish order. */
  if (targets->n_groups == 1 && targets->groups[0]->delivery == AH_DELIVERY_BROADCAST)
    {
      GPtrArray *members = targets->groups[0]->members;

      AhEnvelope *out = ah_envelopes_extend (routed, members->len * n_run);

      for (guint j = 0; j < members->len; j++)
        {
          AhEndpoint *member = g_ptr_array_index (members, j);

          ah_endpoint_ref_n (member, n_run);
          for (guint k = 0; k < n_run; k++, out++)
            {
              out->message = items[k].message;
              out->to = member;
            }
        }
      return n_per_message * n_run;
    }

  /* One queue group, the common case of a pool: chunk by chunk, each
   * chunk's endpoint references in one step, the envelopes written in
   * place. */
  if (targets->n_groups == 1 && targets->groups[0]->delivery == AH_DELIVERY_QUEUE)
    {
      GPtrArray *members = targets->groups[0]->members;
      AhEnvelope *out = ah_envelopes_extend (routed, n_run);
      AhWorkerLoads loads;

      ah_worker_loads_init (&loads, self);
      for (guint k = 0, turn = picks[0].base; k < n_run; turn++)
        {
          AhEndpoint *member = g_ptr_array_index (members, turn % members->len);
          guint n_chunk = MIN (chunk, n_run - k);

          /* The member whose turn it is, or the next one on a worker
           * with less to do. */
          for (guint tries = 1; tries < loads.n_workers && ah_worker_loads_skip (&loads, member);
               tries++)
            member = g_ptr_array_index (members, ++turn % members->len);
          ah_worker_loads_add (&loads, member);
          ah_endpoint_ref_n (member, n_chunk);
          for (guint end = k + n_chunk; k < end; k++, out++)
            {
              out->message = items[k].message;
              out->to = member;
            }
        }
      return n_run;
    }

  for (guint k = 0; k < n_run; k++)
    {
      AhMessage *message = items[k].message;

      for (guint g = 0; g < targets->n_groups; g++)
        {
          AhBusGroup *group = targets->groups[g];
          guint n_members = group->members->len;
          AhEnvelope envelope;

          if (n_members == 0)
            continue;
          envelope.message = message;
          if (group->delivery == AH_DELIVERY_QUEUE)
            {
              guint turn = picks[g].base + k / picks[g].chunk;

              envelope.to = g_ptr_array_index (group->members, turn % n_members);
              /* The whole chunk's references on its first message. */
              if (k % picks[g].chunk == 0)
                ah_endpoint_ref_n (envelope.to, MIN (picks[g].chunk, n_run - k));
              ah_envelopes_push (routed, envelope);
              continue;
            }
          for (guint j = 0; j < n_members; j++)
            {
              envelope.to = ah_endpoint_ref (g_ptr_array_index (group->members, j));
              ah_envelopes_push (routed, envelope);
            }
        }
    }
  return n_per_message * n_run;
}

/* Routes the publishes a handler left in its outbox, all under one read
 * lock of the routing tables, and stamps every message of the outbox
 * with one clock read. Publishes are accepted here, once per recipient;
 * one nobody subscribes to is accepted once and dead-lettered. */
static void
ah_bus_call_route (AhBusCall *call)
{
  AhBus *self = call->bus;
  AhWorker *worker = call->worker;
  AhEnvelopes *routed = &worker->routed;
  AhEnvelopes routed_outbox;
  const AhEnvelope *items = worker->outbox.items;
  guint n_items = worker->outbox.len;
  g_autoptr(GPtrArray) no_route = NULL;
  gint64 now = ah_bus_call_stamp_ns (call);
  guint64 n_accepted = 0;
  guint i = 0;

  routed->len = 0;
  pthread_rwlock_rdlock (&self->route_lock);
  while (i < n_items)
    {
      AhMessage *message = items[i].message;
      AhSubjectEntry *entry;
      AhTargets *uncached = NULL;
      const AhTargets *targets;
      guint n_run = 1;
      guint n_routed;

      if (message->publish_time_ns == 0)
        message->publish_time_ns = now;
      if (items[i].to != NULL)
        {
          /* Sends, replies, requests: routed and accepted when made. */
          ah_envelopes_push (routed, items[i]);
          i++;
          continue;
        }

      entry = g_hash_table_lookup (self->subjects, message->subject);
      if (entry != NULL && entry->targets != NULL && entry->generation == self->generation)
        {
          targets = entry->targets;
        }
      else if (entry == NULL && g_hash_table_size (self->subjects) >= AH_BUS_SUBJECT_CACHE_MAX)
        {
          targets = uncached = ah_bus_resolve_targets_unlocked (self, message->subject);
        }
      else
        {
          /* New or stale: resolve it under the write lock, then look
           * again (subscriptions may change in the gap). */
          pthread_rwlock_unlock (&self->route_lock);
          pthread_rwlock_wrlock (&self->route_lock);
          ah_bus_cache_subject_unlocked (self, message->subject);
          pthread_rwlock_unlock (&self->route_lock);
          pthread_rwlock_rdlock (&self->route_lock);
          continue;
        }

      /* From here on the message names its subject by the interned
       * string: a handler comparing it with a handle (ah_message_has_subject)
       * compares two pointers. Nobody but the tap has seen it yet. */
      message->subject = entry != NULL ? entry->subject : message->subject;
      while (i + n_run < n_items && items[i + n_run].to == NULL
             && (items[i + n_run].message->subject == message->subject
                 || strcmp (items[i + n_run].message->subject, message->subject) == 0))
        {
          if (entry != NULL)
            items[i + n_run].message->subject = entry->subject;
          if (items[i + n_run].message->publish_time_ns == 0)
            items[i + n_run].message->publish_time_ns = now;
          n_run++;
        }

      n_routed = ah_bus_route_run_locked (self, targets, items + i, n_run, routed);
      g_free (uncached);
      if (n_routed > 0)
        {
          /* The outbox's references went to the envelopes. */
          n_accepted += n_routed;
        }
      else
        {
          /* The outbox's references go to the dead letters. */
          if (no_route == NULL)
            no_route = g_ptr_array_new ();
          for (guint k = 0; k < n_run; k++)
            g_ptr_array_add (no_route, items[i + k].message);
          n_accepted += n_run;
        }
      i += n_run;
    }
  pthread_rwlock_unlock (&self->route_lock);

  /* The routed envelopes become the outbox. */
  routed_outbox = worker->routed;
  worker->routed = worker->outbox;
  worker->routed.len = 0;
  worker->outbox = routed_outbox;
  call->n_unrouted = 0;

  if (n_accepted > 0)
    ah_bus_call_accept (call, (guint) n_accepted);
  for (guint k = 0; no_route != NULL && k < no_route->len; k++)
    {
      AhMessage *message = g_ptr_array_index (no_route, k);

      ah_bus_dead_letter (self, message, AH_AGENT_ID_NONE, AH_DEAD_LETTER_NO_ROUTE);
      ah__message_unref (message);
    }
}

static void ah_worker_release_message (AhWorker *worker, AhMessage *message);

/* A handler call's batch is done with: counted, settled, released. */
static void
ah_bus_call_settle_batch (AhBusCall *call)
{
  ah_worker_tally_add (call->worker, AH_TALLY_BATCHES, 1);
  ah_worker_settle (call->worker, AH_TALLY_DELIVERED, call->n_batch);
  for (guint i = 0; i < call->n_batch; i++)
    ah_worker_release_message (call->worker, call->batch[i]);
}

/* Delivers what the call's outbox holds. With @ending (the end of a
 * handler call that succeeded, on its worker), also settles the call's
 * batch between routing and delivery, and returns TRUE if the worker's
 * own lock was the last one the delivery took and is still held. */
static gboolean
ah_bus_call_flush_full (AhBusCall *call,
                        gboolean   ending)
{
  AhBus *self = call->bus;
  AhEndpoint *endpoint = call->endpoint;
  AhEnvelopes *outbox = &call->worker->outbox;
  AhWorker *own = ending ? call->worker : NULL;
  AhDeliverMode mode = AH_DELIVER_RESERVED;
  GArray *deferred = NULL;
  gboolean locked = FALSE;

  call->n_outbox_calls = 0;
  if (outbox->len == 0)
    {
      if (ending)
        ah_bus_call_settle_batch (call);
      return FALSE;
    }
  if (call->n_unaccepted > 0)
    {
      ah_bus_call_accept (call, call->n_unaccepted);
      call->n_unaccepted = 0;
    }

  if (call->n_unrouted > 0)
    {
      ah_bus_call_route (call);
    }
  else
    {
      gint64 now = ah_bus_call_stamp_ns (call);

      for (guint i = 0; i < outbox->len; i++)
        {
          AhMessage *message = outbox->items[i].message;

          if (message->publish_time_ns == 0)
            message->publish_time_ns = now;
        }
    }
  if (ending)
    ah_bus_call_settle_batch (call);
  /* Routing swapped the outbox for its routed envelopes. */
  if (outbox->len == 0)
    return FALSE;

  /* Under AH_OVERFLOW_FAIL the room was reserved when routed; otherwise
   * what meets a full mailbox waits in the sender's deferred queue. */
  if (self->config.overflow != AH_OVERFLOW_FAIL)
    {
      mode = AH_DELIVER_DEFER;
      if (endpoint->deferred == NULL)
        endpoint->deferred = g_array_new (FALSE, FALSE, sizeof (AhEnvelope));
      deferred = endpoint->deferred;
    }
  /* Behind what already waits, or the order to some recipient breaks. */
  if (deferred != NULL && deferred->len > 0)
    g_array_append_vals (deferred, outbox->items, outbox->len);
  else if (own != NULL && outbox->len == 1
           && ah_bus_deliver_local (own, &outbox->items[0], mode, endpoint))
    locked = TRUE;
  else
    locked = ah_bus_deliver_full (self, outbox->items, outbox->len, mode, endpoint, deferred,
                                  NULL, own);
  outbox->len = 0;
  return locked;
}

static void
ah_bus_call_flush (AhBusCall *call)
{
  ah_bus_call_flush_full (call, FALSE);
}

/* Counts one publish/send/request/reply call in the outbox and flushes
 * it when it is full. */
static void
ah_bus_call_count (AhBusCall *call)
{
  if (++call->n_outbox_calls >= call->bus->config.publish_batch)
    ah_bus_call_flush (call);
}

/* Puts @message (transfer full) in the outbox for each of @recipients
 * (references taken over), reserving room first under
 * AH_OVERFLOW_FAIL. Returns how many recipients took it. */
static guint
ah_bus_call_queue (AhBusCall    *call,
                   AhMessage    *message,
                   AhRecipients *recipients)
{
  AhEndpoint **items = ah_recipients_get (recipients);
  AhBus *self = call->bus;
  gboolean reserve = self->config.overflow == AH_OVERFLOW_FAIL
                     && message->priority != AH_PRIORITY_SYSTEM;
  guint n_queued = 0;

  if (recipients->len == 0)
    {
      ah__message_unref (message);
      return 0;
    }
  /* One reference per recipient, the caller's being the first's. */
  if (recipients->len > 1)
    ah__message_ref_n (message, recipients->len - 1);
  for (guint i = 0; i < recipients->len; i++)
    {
      AhEndpoint *to = items[i];
      AhEnvelope envelope;

      if (reserve && !ah_endpoint_reserve (to, self->config.mailbox_capacity))
        {
          /* Accepted now, so that its dead letter settles it. */
          ah_bus_call_accept (call, 1);
          ah_bus_dead_letter (self, message, to->id, AH_DEAD_LETTER_OVERFLOW);
          ah__message_unref (message);
          ah_endpoint_unref (to);
          continue;
        }
      envelope.message = message;
      envelope.to = to;
      ah_envelopes_push (&call->worker->outbox, envelope);
      n_queued++;
    }
  recipients->len = 0;   /* the references moved to the outbox */
  /* Accepted when the outbox is flushed, all in one step. */
  call->n_unaccepted += n_queued;
  return n_queued;
}

/* Puts a publish in the outbox, unrouted: under AH_OVERFLOW_BLOCK nothing
 * can refuse it, so it is routed with the rest of the outbox when that
 * is flushed (see ah_bus_call_route). */
static void
ah_bus_call_queue_unrouted (AhBusCall    *call,
                            const char   *subject,
                            gboolean      subject_is_interned,
                            gconstpointer data,
                            gsize         size)
{
  AhEnvelope envelope;

  envelope.message = ah__message_new_unstamped (AH_MESSAGE_PUBLISH, AH_PRIORITY_NORMAL, subject,
                                                subject_is_interned, call->endpoint->id,
                                                AH_AGENT_ID_NONE, 0, data, size);
  envelope.to = NULL;
  ah_bus_tap (call->bus, envelope.message, AH_AGENT_ID_NONE);
  ah_envelopes_push (&call->worker->outbox, envelope);
  call->n_unrouted++;
  ah_bus_call_count (call);
}

gboolean
ah_bus_call_publish (AhBusCall    *call,
                     const char   *subject,
                     gconstpointer data,
                     gsize         size)
{
  g_auto(AhRecipients) recipients = { 0 };
  AhBus *self;
  const char *interned;
  AhMessage *message;
  guint n_recipients;
  guint n_queued;

  g_return_val_if_fail (call != NULL, FALSE);
  g_return_val_if_fail (subject != NULL, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);

  self = call->bus;
  ah_worker_tally_add (call->worker, AH_TALLY_PUBLISHED, 1);
  if (!ah_bus_check_message (subject, size, NULL))
    {
      ah_bus_count_refused (self);
      return FALSE;
    }

  if (self->config.overflow != AH_OVERFLOW_FAIL)
    {
      ah_bus_call_queue_unrouted (call, subject, FALSE, data, size);
      return TRUE;
    }

  /* Under AH_OVERFLOW_FAIL the answer depends on the recipients' room,
   * so it is routed now and its slots reserved. */
  interned = ah_bus_route_subject (self, subject, &recipients);
  message = ah__message_new_unstamped (AH_MESSAGE_PUBLISH, AH_PRIORITY_NORMAL,
                                       interned != NULL ? interned : subject, interned != NULL,
                                       call->endpoint->id, AH_AGENT_ID_NONE, 0, data, size);
  ah_bus_tap (self, message, AH_AGENT_ID_NONE);
  if (recipients.len == 0)
    {
      ah_bus_accept_dead (self, message, AH_AGENT_ID_NONE, AH_DEAD_LETTER_NO_ROUTE);
      return TRUE;
    }

  n_recipients = recipients.len;
  n_queued = ah_bus_call_queue (call, message, &recipients);
  ah_bus_call_count (call);
  return n_queued == n_recipients;
}

gboolean
ah_bus_call_publish_interned (AhBusCall       *call,
                              const AhSubject *subject,
                              gconstpointer    data,
                              gsize            size)
{
  AhBus *self;

  g_return_val_if_fail (call != NULL, FALSE);
  g_return_val_if_fail (subject != NULL, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);

  self = call->bus;
  if (self->config.overflow == AH_OVERFLOW_FAIL || size > AH_BUS_MESSAGE_MAX_SIZE)
    return ah_bus_call_publish (call, subject->subject, data, size);

  /* Checked when interned: no validation, no copy of the subject. */
  ah_worker_tally_add (call->worker, AH_TALLY_PUBLISHED, 1);
  ah_bus_call_queue_unrouted (call, subject->subject, TRUE, data, size);
  return TRUE;
}

gboolean
ah_bus_call_send (AhBusCall    *call,
                  AhAgentId     to,
                  const char   *subject,
                  gconstpointer data,
                  gsize         size)
{
  g_auto(AhRecipients) recipients = { 0 };
  AhBus *self;
  AhEndpoint *endpoint;
  AhMessage *message;
  guint n_queued;

  g_return_val_if_fail (call != NULL, FALSE);
  g_return_val_if_fail (subject != NULL, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);

  self = call->bus;
  ah_worker_tally_add (call->worker, AH_TALLY_PUBLISHED, 1);
  if (!ah_bus_check_message (subject, size, NULL))
    {
      ah_bus_count_refused (self);
      return FALSE;
    }

  message = ah__message_new_unstamped (AH_MESSAGE_DIRECT, AH_PRIORITY_NORMAL, subject, FALSE,
                             call->endpoint->id, AH_AGENT_ID_NONE, 0, data, size);
  ah_bus_tap (self, message, to);
  endpoint = ah_bus_lookup_endpoint (self, to);
  if (endpoint == NULL)
    {
      ah_bus_accept_dead (self, message, to, AH_DEAD_LETTER_NO_AGENT);
      return TRUE;
    }

  ah_recipients_add (&recipients, endpoint);
  n_queued = ah_bus_call_queue (call, message, &recipients);
  ah_bus_call_count (call);
  return n_queued == 1;
}

gboolean
ah_bus_call_reply (AhBusCall       *call,
                   const AhMessage *request,
                   gconstpointer    data,
                   gsize            size)
{
  AhBus *self;
  AhMessage *reply;
  AhEndpoint *requester;
  AhEnvelope envelope;

  g_return_val_if_fail (call != NULL, FALSE);
  g_return_val_if_fail (request != NULL, FALSE);
  g_return_val_if_fail (data != NULL || size == 0, FALSE);

  self = call->bus;
  ah_worker_tally_add (call->worker, AH_TALLY_PUBLISHED, 1);
  /* The request's subject was checked when the request was made. */
  if (request->kind != AH_MESSAGE_REQUEST || request->reply_to == AH_AGENT_ID_NONE
      || size > AH_BUS_MESSAGE_MAX_SIZE)
    {
      ah_bus_count_refused (self);
      return FALSE;
    }

  /* An interned subject is shared, not copied. */
  reply = ah__message_new_unstamped (AH_MESSAGE_REPLY, AH_PRIORITY_NORMAL, request->subject,
                                     ah__message_subject_is_interned (request),
                                     call->endpoint->id, AH_AGENT_ID_NONE, request->correlation,
                                     data, size);
  ah_bus_tap (self, reply, request->reply_to);

  if (self->config.overflow != AH_OVERFLOW_FAIL)
    {
      /* The request ends here; its table slot hands over the requester. */
      if (!ah_bus_request_take (self, request->correlation, request->request_slot, &requester))
        {
          /* Late: the timeout came first. */
          ah_bus_accept_dead (self, reply, request->reply_to, AH_DEAD_LETTER_LATE_REPLY);
          return TRUE;
        }
      if (!atomic_load_explicit (&requester->registered, memory_order_relaxed))
        {
          /* Nobody is left to wait for it. */
          ah_bus_accept_dead (self, reply, request->reply_to, AH_DEAD_LETTER_NO_AGENT);
          ah_endpoint_unref (requester);
          return TRUE;
        }
      ah_bus_call_accept (call, 1);
    }
  else
    {
      /* Room first, completion second: a refused reply leaves the request
       * pending, so the requester still gets its TIMEOUT. */
      requester = ah_bus_request_peek_requester (self, request->correlation,
                                                 request->request_slot);
      if (requester == NULL)
        {
          ah_bus_accept_dead (self, reply, request->reply_to, AH_DEAD_LETTER_LATE_REPLY);
          return TRUE;
        }
      if (!atomic_load_explicit (&requester->registered, memory_order_relaxed))
        {
          gboolean was_pending = ah_bus_request_complete (self, request->correlation,
                                                          request->request_slot);

          ah_bus_accept_dead (self, reply, request->reply_to,
                              was_pending ? AH_DEAD_LETTER_NO_AGENT : AH_DEAD_LETTER_LATE_REPLY);
          ah_endpoint_unref (requester);
          return TRUE;
        }
      ah_bus_call_accept (call, 1);
      if (!ah_endpoint_reserve (requester, self->config.mailbox_capacity))
        {
          ah_bus_dead_letter (self, reply, requester->id, AH_DEAD_LETTER_OVERFLOW);
          ah__message_unref (reply);
          ah_endpoint_unref (requester);
          return FALSE;
        }
      if (!ah_bus_request_complete (self, request->correlation, request->request_slot))
        {
          /* Late: the timeout came first. */
          atomic_fetch_sub (&requester->normal_used, 1);
          ah_bus_dead_letter (self, reply, requester->id, AH_DEAD_LETTER_LATE_REPLY);
          ah__message_unref (reply);
          ah_endpoint_unref (requester);
          return TRUE;
        }
    }

  envelope.message = reply;
  envelope.to = requester;
  ah_envelopes_push (&call->worker->outbox, envelope);
  ah_bus_call_count (call);
  return TRUE;
}

/* A request on @subject (valid), through its interned @entry if the
 * caller has it. */
static guint64
ah_bus_call_request_routed (AhBusCall      *call,
                            const char     *subject,
                            AhSubjectEntry *entry,
                            gconstpointer   data,
                            gsize           size,
                            guint           timeout_ms)
{
  g_auto(AhRecipients) recipients = { 0 };
  AhBus *self = call->bus;
  AhAgentId requester;
  const char *interned;
  AhMessage *message;
  guint64 correlation;
  guint32 slot = 0;

  correlation = ah_bus_new_correlation (self);
  requester = call->endpoint->id;
  interned = entry != NULL ? ah_bus_route_entry (self, entry, &recipients)
                           : ah_bus_route_subject (self, subject, &recipients);
  /* Registered before the message is made, so that it carries its slot
   * from the start, and before the outbox can flush, so that no reply
   * can beat it. */
  if (recipients.len > 0)
    slot = ah_bus_request_register (self, correlation, call->endpoint,
                                    interned != NULL ? interned : subject, interned != NULL,
                                    timeout_ms);
  message = ah__message_new_unstamped (AH_MESSAGE_REQUEST, AH_PRIORITY_NORMAL,
                                       interned != NULL ? interned : subject, interned != NULL,
                                       requester, requester, correlation, data, size);
  message->request_slot = slot;
  ah_bus_tap (self, message, AH_AGENT_ID_NONE);

  if (recipients.len == 0)
    {
      AhMessage *no_responders;

      ah_bus_accept_dead (self, message, AH_AGENT_ID_NONE, AH_DEAD_LETTER_NO_ROUTE);
      no_responders = ah__message_new (AH_MESSAGE_NO_RESPONDERS, AH_PRIORITY_SYSTEM, subject,
                                       FALSE, AH_AGENT_ID_NONE, AH_AGENT_ID_NONE, correlation,
                                       NULL, 0);
      ah_recipients_add (&recipients, ah_endpoint_ref (call->endpoint));
      ah_bus_call_queue (call, no_responders, &recipients);
      ah_worker_tally_add (call->worker, AH_TALLY_REQUESTS, 1);
      ah_bus_call_count (call);
      return correlation;
    }

  /* Refused by every recipient (full mailboxes under AH_OVERFLOW_FAIL):
   * no request exists, so nothing may ever come back for it. */
  if (ah_bus_call_queue (call, message, &recipients) == 0)
    {
      ah_bus_request_complete (self, correlation, slot);
      return 0;
    }

  ah_worker_tally_add (call->worker, AH_TALLY_REQUESTS, 1);
  ah_bus_call_count (call);
  return correlation;
}

guint64
ah_bus_call_request (AhBusCall    *call,
                     const char   *subject,
                     gconstpointer data,
                     gsize         size,
                     guint         timeout_ms)
{
  g_return_val_if_fail (call != NULL, 0);
  g_return_val_if_fail (subject != NULL, 0);
  g_return_val_if_fail (data != NULL || size == 0, 0);

  ah_worker_tally_add (call->worker, AH_TALLY_PUBLISHED, 1);
  if (!ah_bus_check_message (subject, size, NULL))
    {
      ah_bus_count_refused (call->bus);
      return 0;
    }
  return ah_bus_call_request_routed (call, subject, NULL, data, size, timeout_ms);
}

guint64
ah_bus_call_request_interned (AhBusCall       *call,
                              const AhSubject *subject,
                              gconstpointer    data,
                              gsize            size,
                              guint            timeout_ms)
{
  g_return_val_if_fail (call != NULL, 0);
  g_return_val_if_fail (subject != NULL, 0);
  g_return_val_if_fail (data != NULL || size == 0, 0);

  if (size > AH_BUS_MESSAGE_MAX_SIZE)
    return ah_bus_call_request (call, subject->subject, data, size, timeout_ms);
  /* Checked when interned. */
  ah_worker_tally_add (call->worker, AH_TALLY_PUBLISHED, 1);
  return ah_bus_call_request_routed (call, subject->subject, (AhSubjectEntry *) subject,
                                     data, size, timeout_ms);
}

AhEndpoint *
ah_bus_call_get_endpoint (AhBusCall *call)
{
  g_return_val_if_fail (call != NULL, NULL);

  return call->endpoint;
}

AhBus *
ah_bus_call_get_bus (AhBusCall *call)
{
  g_return_val_if_fail (call != NULL, NULL);

  return call->bus;
}

guint
ah_bus_call_get_worker (AhBusCall *call)
{
  g_return_val_if_fail (call != NULL, 0);

  return call->worker->index;
}

/* ---- Redelivery of a failed batch -------------------------------------------------------------- */

gboolean
ah_bus_call_retry (AhBusCall       *call,
                   const AhMessage *message,
                   AhBusGroup      *group)
{
  AhBus *self;
  AhEndpoint *to = NULL;
  guint index;

  g_return_val_if_fail (call != NULL, FALSE);
  g_return_val_if_fail (message != NULL, FALSE);

  self = call->bus;
  for (index = 0; index < call->n_batch; index++)
    if (call->batch[index] == message)
      break;
  g_return_val_if_fail (index < call->n_batch, FALSE);
  if (message->redelivered || call->worker->retry_to[index] != NULL)
    return message->redelivered ? FALSE : TRUE;

  if (group != NULL)
    {
      pthread_rwlock_rdlock (&self->route_lock);
      /* Round robin over the others: a retry goes where the group's
       * next message would, skipping the endpoint that failed. */
      for (guint tries = 0; tries < group->members->len && to == NULL; tries++)
        {
          guint turn = atomic_fetch_add_explicit (&group->next_member, 1, memory_order_relaxed);
          AhEndpoint *member = g_ptr_array_index (group->members, turn % group->members->len);

          if (member != call->endpoint)
            to = ah_endpoint_ref (member);
        }
      pthread_rwlock_unlock (&self->route_lock);
    }
  if (to == NULL)
    to = ah_endpoint_ref (call->endpoint);

  call->worker->retry_to[index] = to;
  call->n_retries++;
  return TRUE;
}

/* Puts the retried messages of a failed batch in the outbox, as copies
 * marked redelivered. They were accepted when first routed and are not
 * settled yet: their second delivery settles them. */
static void
ah_bus_call_queue_retries (AhBusCall *call)
{
  AhBus *self = call->bus;
  AhWorker *worker = call->worker;
  gboolean reserve = self->config.overflow == AH_OVERFLOW_FAIL;

  for (guint i = 0; i < call->n_batch; i++)
    {
      AhEndpoint *to = worker->retry_to[i];
      AhEnvelope envelope;

      if (to == NULL)
        continue;
      ah_worker_tally_add (call->worker, AH_TALLY_RETRIED, 1);
      if (reserve && call->batch[i]->priority != AH_PRIORITY_SYSTEM
          && !ah_endpoint_reserve (to, self->config.mailbox_capacity))
        {
          /* Counted failed, like any message a full mailbox refuses. */
          ah_bus_dead_letter (self, call->batch[i], to->id, AH_DEAD_LETTER_OVERFLOW);
          continue;
        }
      envelope.message = ah__message_copy_redelivered (call->batch[i]);
      envelope.to = ah_endpoint_ref (to);
      ah_envelopes_push (&worker->outbox, envelope);
    }
}

/* ---- Workers ---------------------------------------------------------------------------------- */

/* Takes up to @max messages, system lane first, each lane oldest first.
 * Must be called with the worker lock held. */
static guint
ah_endpoint_take_batch_locked (AhEndpoint  *endpoint,
                               AhMessage  **batch,
                               guint        max,
                               guint       *ret_n_normal)
{
  guint n = 0, n_normal = 0;

  while (n < max && ah_endpoint_has_system_mail (endpoint))
    batch[n++] = ah_lane_pop (endpoint->system_lane);
  while (n < max && endpoint->normal_lane.length > 0)
    {
      batch[n++] = ah_lane_pop (&endpoint->normal_lane);
      n_normal++;
    }
  if (n_normal > 0)
    atomic_fetch_sub (&endpoint->normal_used, n_normal);
  *ret_n_normal = n_normal;
  return n;
}

/* After a run: back to the tail of the run queue if it has more to do
 * (fairness), parked if it waits for room elsewhere, else idle; idle
 * too when paused, whatever it has to do (resume looks again). Returns
 * TRUE if the run queue keeps the reference. Must be called with the
 * worker lock held. */
static gboolean
ah_endpoint_reschedule_locked (AhWorker   *worker,
                               AhEndpoint *endpoint)
{
  gboolean has_deferred = endpoint->deferred != NULL && endpoint->deferred->len > 0;

  if (has_deferred && !endpoint->retry_pending)
    {
      /* The full mailbox's consumer holds a reference and wakes it. */
      endpoint->state = AH_ENDPOINT_BLOCKED;
      return FALSE;
    }
  endpoint->retry_pending = FALSE;
  if (!endpoint->paused
      && (has_deferred || ah_endpoint_has_system_mail (endpoint) || endpoint->normal_lane.length > 0))
    {
      endpoint->state = AH_ENDPOINT_SCHEDULED;
      ah_worker_push_locked (worker, endpoint);
      return TRUE;
    }
  endpoint->state = AH_ENDPOINT_IDLE;
  return FALSE;
}

static void
ah_endpoint_retry_deferred (AhWorker   *worker,
                            AhEndpoint *endpoint)
{
  GArray *retry = endpoint->deferred;

  endpoint->deferred = g_array_new (FALSE, FALSE, sizeof (AhEnvelope));
  ah_bus_deliver (worker->bus, (AhEnvelope *) (gpointer) retry->data, retry->len,
                  AH_DELIVER_DEFER, endpoint, endpoint->deferred, NULL);
  g_array_unref (retry);
}

static void
ah_worker_release_message (AhWorker  *worker,
                           AhMessage *message)
{
  guintptr key = (guintptr) message;
  AhPendingUnref *slot = &worker->unrefs[((key >> 4) ^ (key >> 10)) & (AH_WORKER_UNREF_SLOTS - 1)];

  if (slot->message == message)
    {
      slot->count++;
      return;
    }
  if (slot->message != NULL)
    ah__message_unref_n (slot->message, slot->count);
  slot->message = message;
  slot->count = 1;
}

static void
ah_worker_flush_releases (AhWorker *worker)
{
  for (guint i = 0; i < AH_WORKER_UNREF_SLOTS; i++)
    if (worker->unrefs[i].message != NULL)
      {
        ah__message_unref_n (worker->unrefs[i].message, worker->unrefs[i].count);
        worker->unrefs[i].message = NULL;
      }
}

static gboolean
ah_worker_call (AhWorker    *worker,
                AhEndpoint  *endpoint,
                AhMessage  **batch,
                guint        n)
{
  AhBus *self = worker->bus;
  gint64 start = ah__clock_ns ();
  AhBusCall call = { self, worker, endpoint, 0, 0, 0, start, 0, batch, n, 0 };
  g_autoptr(GError) error = NULL;
  gboolean handled;

  /* A flush stamps all its messages with one clock read, so a batch is
   * mostly a few runs of equal publish times: one histogram step per
   * run, each message still counted at its own latency. */
  for (guint i = 0; i < n;)
    {
      gint64 published = batch[i]->publish_time_ns;
      guint n_same = 1;

      while (i + n_same < n && batch[i + n_same]->publish_time_ns == published)
        n_same++;
      ah_latency_record_n (&worker->latency, start - published, n_same);
      i += n_same;
    }

  ah_bus_current_call = &call;
  handled = endpoint->func (&call, (const AhMessage * const *) batch, n,
                            endpoint->user_data, &error);
  ah_bus_current_call = NULL;

  if (G_LIKELY (handled && call.n_retries == 0))
    {
      /* The flush settles the batch once what the handler published is
       * routed and accepted (so in_flight cannot touch 0 while its
       * consequences are still on their way), and delivers last: when
       * its last message went to an agent of this worker (one agent
       * answering another), it keeps the worker's lock for the next
       * turn, a lock and an unlock fewer. */
      return ah_bus_call_flush_full (&call, TRUE);
    }

  /* What the handler published was accepted, even if it then failed.
   * The flush comes before the batch settles, so in_flight cannot touch
   * 0 while its consequences are still on their way. */
  if (!handled && call.n_retries > 0)
    ah_bus_call_queue_retries (&call);
  ah_bus_call_flush (&call);
  ah_worker_tally_add (worker, AH_TALLY_BATCHES, 1);
  if (handled)
    ah_bus_settle (self, AH_TALLY_DELIVERED, n);
  else
    for (guint i = 0; i < n; i++)
      if (worker->retry_to[i] == NULL)
        ah_bus_dead_letter (self, batch[i], endpoint->id, AH_DEAD_LETTER_HANDLER_FAILED);
  if (call.n_retries > 0)
    for (guint i = 0; i < n; i++)
      g_clear_pointer (&worker->retry_to[i], ah_endpoint_unref);

  for (guint i = 0; i < n; i++)
    ah_worker_release_message (worker, batch[i]);
  return FALSE;
}

/* The worker thread takes its own lock through this, and keeps the
 * longest wait. */
static void
ah_worker_lock_self (AhWorker *worker)
{
  guint64 waited = ah_worker_lock (worker);

  if (waited > atomic_load_explicit (&worker->stall_max_ns, memory_order_relaxed))
    atomic_store_explicit (&worker->stall_max_ns, waited, memory_order_relaxed);
}

/* One turn of @endpoint (state RUNNING, its run-queue reference handed
 * over): retry what it could not send, else handle a batch. Called and
 * returns with the worker lock held (one lock round trip per turn fewer
 * than taking it afresh on each side); the handler runs without it. */
static void
ah_worker_run (AhWorker   *worker,
               AhEndpoint *endpoint)
{
  AhBus *self = worker->bus;
  GPtrArray *woken = NULL;
  guint n = 0, n_normal = 0;
  gboolean keep_reference = FALSE;
  gboolean closes_itself = FALSE;
  gboolean locked = FALSE;
  /* The caller found it neither closing nor paused, under the lock held
   * since. (Reading the two flags again right after the state byte
   * beside them was written made the compiler load the word all three
   * share, which a byte store cannot forward to: a stall that perf put
   * at a fifth of the worker loop in a round trip.) */
  gboolean stopped = FALSE;

  if (endpoint->deferred != NULL && endpoint->deferred->len > 0)
    {
      pthread_mutex_unlock (&worker->lock);
      ah_endpoint_retry_deferred (worker, endpoint);
      ah_worker_lock_self (worker);
      stopped = endpoint->closing || endpoint->paused;
    }

  /* No new batch before everything it already sent is queued, and none
   * once a pause has been asked for: the pause is waiting for this turn
   * to end. */
  if (!stopped && (endpoint->deferred == NULL || endpoint->deferred->len == 0))
    n = ah_endpoint_take_batch_locked (endpoint, worker->batch, self->config.handler_batch,
                                       &n_normal);
  /* Senders waiting for room are woken once the mailbox is down to half
   * its capacity, not at every batch taken: a hundred publishers on one
   * full mailbox would otherwise all retry for each 32 messages freed,
   * and almost all find it full again. The mailbox keeps draining while
   * it holds anything, so the low-water mark is always reached. */
  if (n_normal > 0
      && atomic_load_explicit (&endpoint->normal_used, memory_order_relaxed)
         <= self->config.mailbox_capacity / 2)
    {
      if (endpoint->room_waiters > 0)
        pthread_cond_broadcast (&worker->room_cond);
      woken = g_steal_pointer (&endpoint->blocked_senders);
    }
  pthread_mutex_unlock (&worker->lock);

  ah_endpoint_wake_all_blocked (woken);
  if (n > 0)
    locked = ah_worker_call (worker, endpoint, worker->batch, n);

  if (!locked)
    ah_worker_lock_self (worker);
  /* Both read before the state byte is written (see above). */
  stopped = endpoint->closing || endpoint->paused;
  if (endpoint->closing)
    {
      /* Closed from another thread meanwhile. */
      endpoint->state = AH_ENDPOINT_IDLE;
    }
  else if (endpoint->close_requested)
    {
      endpoint->closing = TRUE;
      endpoint->state = AH_ENDPOINT_IDLE;
      closes_itself = TRUE;
      stopped = TRUE;
    }
  else
    {
      keep_reference = ah_endpoint_reschedule_locked (worker, endpoint);
    }
  /* A closer or a pauser on another thread waits for this turn to end. */
  if (stopped)
    pthread_cond_broadcast (&worker->state_cond);

  if (closes_itself)
    {
      pthread_mutex_unlock (&worker->lock);
      ah_endpoint_drain (endpoint, FALSE, AH_DEAD_LETTER_AGENT_STOPPED, TRUE);
      /* The creator's reference, which ah_bus_endpoint_close left to us. */
      ah_endpoint_unref (endpoint);
      ah_endpoint_unref (endpoint);
      ah_worker_lock_self (worker);
    }
  else if (!keep_reference)
    {
      /* The run queue's reference. Under the lock is fine: freeing an
       * endpoint takes no lock but the arena's, a leaf. */
      ah_endpoint_unref (endpoint);
    }
}

/* Wakes one parked worker other than @busy: it then spins, and takes
 * work from @busy's run queue if there still is some to take. A hint:
 * the parked flag is read without that worker's lock, and a wake-up it
 * misses costs a steal that does not happen, nothing else. Called with
 * @busy's lock held; the other worker's lock is not taken. */
static void
ah_bus_wake_thief (AhBus    *self,
                   AhWorker *busy)
{
  for (guint k = 1; k < self->config.n_workers; k++)
    {
      AhWorker *other = self->workers[(busy->index + k) % self->config.n_workers];

      if (atomic_load_explicit (&other->parked, memory_order_relaxed))
        {
          pthread_cond_signal (&other->work_cond);
          return;
        }
    }
}

/* Whether @endpoint, scheduled on its worker's run queue, may move to
 * another worker: nobody waits on its worker's conditions for it (a
 * closer, a pauser, a publisher waiting for room, senders blocked on its
 * mailbox) and it has nothing of its own waiting to be queued. Both
 * workers' locks held. */
static gboolean
ah_endpoint_can_move (const AhEndpoint *endpoint)
{
  return endpoint->state == AH_ENDPOINT_SCHEDULED && !endpoint->closing && !endpoint->paused
         && endpoint->room_waiters == 0 && endpoint->blocked_senders == NULL
         && (endpoint->deferred == NULL || endpoint->deferred->len == 0);
}

/* A worker out of work takes the second endpoint of another worker's run
 * queue (the first is that worker's next turn), mailbox and all, and
 * runs it itself from then on. Endpoints are given to workers round
 * robin when they are made, and one worker can end up with the heavy
 * ones: in bench fanout the publisher's worker was busy all the time
 * while the other idled a fifth of it. Taking work only when idle, and
 * only from a queue that holds more than the victim's next turn, moves
 * an endpoint towards the worker with time to spare, and never back and
 * forth between busy ones. Only the second entry is looked at, so a
 * steal costs the same with ten thousand endpoints queued. Called
 * without locks; TRUE if the thief's run queue got an endpoint. */
static gboolean
ah_worker_steal (AhWorker *thief)
{
  AhBus *self = thief->bus;
  guint n_workers = self->config.n_workers;

  for (guint k = 1; k < n_workers; k++)
    {
      AhWorker *victim = self->workers[(thief->index + k) % n_workers];
      AhWorker *first = thief->index < victim->index ? thief : victim;
      AhWorker *second = first == thief ? victim : thief;
      AhEndpoint *taken = NULL;

      if (atomic_load_explicit (&victim->n_scheduled, memory_order_relaxed) < 2)
        continue;
      ah_worker_lock (first);
      ah_worker_lock (second);
      if (!thief->stopping && !thief->drained && !victim->stopping && !victim->drained
          && thief->run_head == NULL && victim->run_head != NULL
          && victim->run_head->run_next != NULL
          && ah_endpoint_can_move (victim->run_head->run_next))
        {
          taken = victim->run_head->run_next;
          victim->run_head->run_next = taken->run_next;
          if (victim->run_tail == taken)
            victim->run_tail = victim->run_head;
          atomic_fetch_sub_explicit (&victim->n_scheduled, 1, memory_order_relaxed);
          /* Its run queue reference moves with it. The epoch goes first:
           * whoever reads the new worker then reads the new epoch. */
          atomic_fetch_add_explicit (&self->steal_epoch, 1, memory_order_seq_cst);
          atomic_store_explicit (&taken->worker, thief, memory_order_release);
          ah_worker_push_locked (thief, taken);
        }
      pthread_mutex_unlock (&second->lock);
      pthread_mutex_unlock (&first->lock);
      if (taken != NULL)
        {
          ah_worker_tally_add (thief, AH_TALLY_STEALS, 1);
          return TRUE;
        }
    }
  return FALSE;
}

/* Before parking, a worker out of work watches its run queue for a
 * short while: under steady load the next message comes within
 * microseconds, and seeing it here costs a cache miss where a sleep
 * would cost two context switches (about 10 us each way on this kind of
 * machine). The watch is bounded, so an idle bus is a sleeping bus.
 *
 * Unpinned, the scheduler tends to queue a worker it wakes on the
 * waker's CPU, where the waker then spins: from idle, a round trip would
 * pay for the whole spin on top of the wake-ups. So a worker that woke
 * a parked one yields once before it spins. Only then: a yield in every
 * spin hands the CPU to any other process under load, which costs far
 * more where latency matters most. And the scheduler lets a woken
 * worker preempt its waker on the waker's CPU, so a worker's spin can
 * hold up another worker in the middle of a handler: perf sched showed
 * the requester of a round trip from idle preempted by the responder,
 * whose 20 us spin then came on top of the round trip. So each awake
 * worker notes the CPU it runs on (cpu_now), and a spinning worker that
 * finds another one noted on its own CPU, which can only mean that one
 * is waiting for it, parks at once. Pinned workers (pin_workers) never
 * share a CPU and never yield. */
#define AH_WORKER_SPIN_NS 20000

/* Whether another worker of the bus last ran on this thread's CPU and
 * is not parked: it is then preempted or queued behind this thread. */
static gboolean
ah_worker_cpu_is_wanted (AhWorker *worker,
                         int       cpu)
{
  AhBus *self = worker->bus;

  for (guint i = 0; i < self->config.n_workers; i++)
    if (self->workers[i] != worker
        && atomic_load_explicit (&self->workers[i]->cpu_now, memory_order_relaxed) == cpu)
      return TRUE;
  return FALSE;
}

static void
ah_worker_spin (AhWorker *worker)
{
  gint64 until = ah__monotonic_ns () + AH_WORKER_SPIN_NS;
  int cpu = worker->pinned ? -1 : sched_getcpu ();

  for (guint i = 1;; i++)
    {
      if (atomic_load_explicit (&worker->n_scheduled, memory_order_acquire) > 0
          || atomic_load_explicit (&worker->spin_stop, memory_order_relaxed))
        return;
      ah_cpu_relax ();
      if ((i & 63) == 1 && cpu >= 0 && ah_worker_cpu_is_wanted (worker, cpu))
        {
          /* A yield, not a park: the scheduler still sees two runnable
           * threads on this CPU, and moves one to an idle CPU. */
          ah_bus_tally_add (worker->bus, AH_TALLY_CPU_HANDOFFS, 1);
          sched_yield ();
          cpu = sched_getcpu ();
        }
      if ((i & 63) == 0 && ah__monotonic_ns () >= until)
        return;
      /* Work waiting on another worker's run queue behind its next turn
       * is taken over (ah_worker_steal) rather than waited out. */
      if ((i & 15) == 1 && ah_worker_steal (worker))
        return;
      /* See above: a worker this one woke from its sleep may be queued
       * on this CPU. One yield hands it the CPU if so, and returns at
       * once if not; the spin goes on either way, so a reply still
       * finds this worker awake. */
      if (i == 1 && ah_bus_woke_parked)
        {
          ah_bus_woke_parked = FALSE;
          if (!worker->pinned)
            sched_yield ();
        }
    }
}

static gpointer
ah_worker_main (gpointer data)
{
  AhWorker *worker = data;

  ah_bus_current_worker = worker;
  if (worker->pinned)
    {
      cpu_set_t set;
      int error;

      CPU_ZERO (&set);
      CPU_SET (worker->cpu, &set);
      error = pthread_setaffinity_np (pthread_self (), sizeof set, &set);
      if (error != 0)
        {
          worker->pinned = FALSE;
          g_message ("bus: cannot pin worker %u to CPU %d: %s", worker->index, worker->cpu,
                     g_strerror (error));
        }
    }
  atomic_store (&worker->pinned_now, worker->pinned);
  ah_worker_lock_self (worker);
  for (guint turn = 0;;)
    {
      AhEndpoint *endpoint;

      if (worker->run_head == NULL && !worker->stopping)
        {
          turn = 0;
          pthread_mutex_unlock (&worker->lock);
          /* Out of work: nothing stays held or unsettled while it waits. */
          ah_worker_flush_releases (worker);
          ah_worker_fold_settled (worker);
          ah_worker_spin (worker);
          ah_worker_lock_self (worker);
        }
      if (worker->run_head == NULL && !worker->stopping)
        {
          atomic_store_explicit (&worker->parked, TRUE, memory_order_relaxed);
          atomic_store_explicit (&worker->cpu_now, -1, memory_order_relaxed);
          atomic_fetch_add (&worker->bus->n_parked, 1);
          pthread_cond_wait (&worker->work_cond, &worker->lock);
          atomic_fetch_sub (&worker->bus->n_parked, 1);
          atomic_store_explicit (&worker->parked, FALSE, memory_order_relaxed);
          /* Woken with nothing of its own to run: another worker has
           * more waiting than it can run (ah_worker_push_locked), or a
           * spurious wake-up. Either way it spins again, which is when
           * it looks for work to take, before it parks. */
          continue;
        }
      if (worker->stopping)
        break;
      /* The CPU is noted at the first turn after a spin or a sleep, and
       * then every 16 turns: a thread that keeps running seldom moves,
       * and sched_getcpu() at every turn was a tenth of a turn between
       * two agents of one worker (callgrind). */
      if (!worker->pinned && (turn++ & 15) == 0)
        atomic_store_explicit (&worker->cpu_now, sched_getcpu (), memory_order_relaxed);

      endpoint = ah_worker_pop_locked (worker);
      if (endpoint->closing || endpoint->paused)
        {
          /* Closed, or paused while it waited its turn: no turn; a
           * resume schedules it again if it has mail. */
          endpoint->state = AH_ENDPOINT_IDLE;
          pthread_mutex_unlock (&worker->lock);
          ah_endpoint_unref (endpoint);
          ah_worker_lock_self (worker);
          continue;
        }
      endpoint->state = AH_ENDPOINT_RUNNING;
      ah_worker_run (worker, endpoint);
    }
  pthread_mutex_unlock (&worker->lock);
  ah_worker_flush_releases (worker);
  ah_worker_fold_settled (worker);
  ah_bus_current_worker = NULL;
  return NULL;
}

/* ---- Life cycle ------------------------------------------------------------------------------- */

static void
ah_subject_entry_free (gpointer data)
{
  AhSubjectEntry *entry = data;

  g_free (entry->targets);
  g_free (entry->subject);
  g_free (entry);
}

static void
ah_subscription_free (gpointer data)
{
  AhSubscription *subscription = data;

  g_free (subscription->pattern);
  g_free (subscription);
}

AhBus *
ah_bus_new (const AhBusConfig *config)
{
  AhBus *self;
  pthread_rwlockattr_t rwlock_attr;

  g_return_val_if_fail (config == NULL || config->overflow == AH_OVERFLOW_FAIL
                        || config->overflow == AH_OVERFLOW_BLOCK, NULL);

  /* G_DEFINE_QUARK's lazy init is a plain store: do it here, before any
   * bus thread exists, so publishers never race on it. */
  (void) AH_HOST_ERROR;

  self = g_new0 (AhBus, 1);
  self->serial = atomic_fetch_add (&ah_bus_next_serial, 1);
  if (config != NULL)
    self->config = *config;
  if (self->config.n_workers == 0)
    self->config.n_workers = g_get_num_processors ();
  self->config.n_workers = MIN (self->config.n_workers, AH_BUS_MAX_WORKERS);
  if (self->config.publish_batch == 0)
    self->config.publish_batch = AH_BUS_DEFAULT_PUBLISH_BATCH;
  if (self->config.handler_batch == 0)
    self->config.handler_batch = AH_BUS_DEFAULT_HANDLER_BATCH;
  /* Each worker allocates handler_batch slots up front. */
  self->config.handler_batch = MIN (self->config.handler_batch, 65536u);
  if (self->config.mailbox_capacity == 0)
    self->config.mailbox_capacity = AH_BUS_DEFAULT_MAILBOX_CAPACITY;

  atomic_init (&self->next_endpoint_id, 1);
  atomic_init (&self->next_correlation, 1);
  atomic_init (&self->n_pending, 0);
  atomic_init (&self->n_held, 0);
  atomic_init (&self->tap_set, FALSE);
  atomic_init (&self->in_flight, 0);
  ah_arena_init (&self->arena);
  atomic_init (&self->started, FALSE);
  atomic_init (&self->stopping, FALSE);

  /* Writers (subscribe, endpoint creation) must not starve under a
   * steady stream of publishers holding the read lock. Nothing takes the
   * read lock twice, which this kind would deadlock on. */
  pthread_rwlockattr_init (&rwlock_attr);
  pthread_rwlockattr_setkind_np (&rwlock_attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init (&self->route_lock, &rwlock_attr);
  pthread_rwlockattr_destroy (&rwlock_attr);
  self->subjects = g_hash_table_new_full (g_str_hash, g_str_equal, NULL, ah_subject_entry_free);
  self->trie = ah__subject_trie_new ();
  self->subscriptions = g_hash_table_new_full (NULL, NULL, NULL, ah_subscription_free);
  self->groups = g_ptr_array_new_with_free_func ((GDestroyNotify) ah_bus_group_free);

  pthread_mutex_init (&self->requests_lock, NULL);
  ah_cond_init_monotonic (&self->requests_cond);
  self->timer_armed_ns = G_MAXINT64;
  self->requests = g_array_new (FALSE, TRUE, sizeof (AhPendingRequest));

  pthread_mutex_init (&self->idle_lock, NULL);
  ah_cond_init_monotonic (&self->idle_cond);
  pthread_mutex_init (&self->dead_letter_lock, NULL);
  /* Writer-preferring, as route_lock, so setting the tap does not starve
   * behind a stream of publishers. */
  pthread_rwlockattr_init (&rwlock_attr);
  pthread_rwlockattr_setkind_np (&rwlock_attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init (&self->tap_lock, &rwlock_attr);
  pthread_rwlockattr_destroy (&rwlock_attr);

  self->workers = g_new0 (AhWorker *, self->config.n_workers);
  for (guint i = 0; i < self->config.n_workers; i++)
    {
      AhWorker *worker = g_new0 (AhWorker, 1);

      worker->bus = self;
      worker->index = i;
      atomic_init (&worker->cpu_now, -1);
      pthread_mutex_init (&worker->lock, NULL);
      ah_cond_init_monotonic (&worker->work_cond);
      ah_cond_init_monotonic (&worker->room_cond);
      ah_cond_init_monotonic (&worker->state_cond);
      worker->batch = g_new (AhMessage *, self->config.handler_batch);
      worker->retry_to = g_new0 (AhEndpoint *, self->config.handler_batch);
      self->workers[i] = worker;
    }

  return self;
}

static void
ah_bus_thread_create (pthread_t   *thread,
                      gpointer   (*func) (gpointer),
                      gpointer     data,
                      const char  *name)
{
  int error = pthread_create (thread, NULL, func, data);

  /* As g_thread_new() does: a host that cannot start its threads cannot
   * run at all. */
  if (error != 0)
    g_error ("cannot create the bus thread %s: %s", name, g_strerror (error));
  pthread_setname_np (*thread, name);
}

/* Gives worker i the i-th CPU this process may run on. With more
 * workers than CPUs, pinning would make two workers share one CPU for
 * good, so nothing is pinned and the bus says why. */
static void
ah_bus_plan_pinning (AhBus *self)
{
  cpu_set_t allowed;
  guint n_allowed = 0;
  guint n = 0;

  if (sched_getaffinity (0, sizeof allowed, &allowed) != 0)
    {
      g_message ("bus: cannot pin the workers: %s", g_strerror (errno));
      return;
    }
  n_allowed = (guint) CPU_COUNT (&allowed);
  if (self->config.n_workers > n_allowed)
    {
      g_message ("bus: not pinning %u workers to %u CPUs: they would share CPUs",
                 self->config.n_workers, n_allowed);
      return;
    }
  for (guint cpu = 0; cpu < CPU_SETSIZE && n < self->config.n_workers; cpu++)
    if (CPU_ISSET (cpu, &allowed))
      {
        self->workers[n]->cpu = (int) cpu;
        self->workers[n]->pinned = TRUE;
        n++;
      }
}

void
ah_bus_start (AhBus *self)
{
  g_return_if_fail (self != NULL);
  g_return_if_fail (!atomic_load (&self->stopping));

  if (atomic_exchange (&self->started, TRUE))
    {
      g_return_if_reached ();
    }

  if (self->config.pin_workers)
    ah_bus_plan_pinning (self);
  for (guint i = 0; i < self->config.n_workers; i++)
    {
      AhWorker *worker = self->workers[i];
      char name[16];

      g_snprintf (name, sizeof name, "ah-worker-%u", i);
      ah_bus_thread_create (&worker->thread, ah_worker_main, worker, name);
      worker->thread_running = TRUE;
    }
  ah_bus_thread_create (&self->timer_thread, ah_bus_timer_main, self, "ah-bus-timer");
}

void
ah_bus_stop (AhBus  *self,
             gint64  drain_timeout_us)
{
  g_autoptr(GPtrArray) endpoints = g_ptr_array_new ();
  g_autoptr(GPtrArray) cancelled = NULL;
  gboolean started;

  g_return_if_fail (self != NULL);
  /* A worker would wait for itself to drain and to be joined. */
  g_return_if_fail (ah_bus_worker_for_thread (self) == NULL);

  if (atomic_load (&self->stopping))
    return;
  started = atomic_load (&self->started);
  if (started && drain_timeout_us != 0)
    ah_bus_wait_idle (self, drain_timeout_us);
  if (atomic_exchange (&self->stopping, TRUE))
    return;

  for (guint i = 0; i < self->config.n_workers; i++)
    {
      AhWorker *worker = self->workers[i];

      pthread_mutex_lock (&worker->lock);
      worker->stopping = TRUE;
      atomic_store (&worker->spin_stop, TRUE);
      pthread_cond_broadcast (&worker->work_cond);
      pthread_cond_broadcast (&worker->room_cond);
      pthread_mutex_unlock (&worker->lock);
    }
  for (guint i = 0; i < self->config.n_workers; i++)
    if (self->workers[i]->thread_running)
      {
        pthread_join (self->workers[i]->thread, NULL);
        self->workers[i]->thread_running = FALSE;
      }

  pthread_mutex_lock (&self->requests_lock);
  self->timer_stopping = TRUE;
  pthread_cond_signal (&self->requests_cond);
  pthread_mutex_unlock (&self->requests_lock);
  if (started)
    pthread_join (self->timer_thread, NULL);

  /* Pending requests are cancelled: no outcome will come for them. */
  cancelled = g_ptr_array_new ();
  pthread_mutex_lock (&self->requests_lock);
  for (guint i = 0; i < self->requests->len; i++)
    if (g_array_index (self->requests, AhPendingRequest, i).correlation != 0)
      {
        AhEndpoint *requester;

        g_free (ah_bus_request_free_slot_locked (self, i + 1, &requester));
        g_ptr_array_add (cancelled, requester);
      }
  self->deadlines.len = 0;
  atomic_store (&self->n_pending, 0);
  pthread_mutex_unlock (&self->requests_lock);
  g_ptr_array_foreach (cancelled, ah_endpoint_unref_func, NULL);

  /* No worker runs any more. From here on anything queued is dead on
   * arrival (drained), and what is queued now is dead-lettered. */
  for (guint i = 0; i < self->config.n_workers; i++)
    {
      AhWorker *worker = self->workers[i];
      g_autoptr(GPtrArray) scheduled = g_ptr_array_new ();

      pthread_mutex_lock (&worker->lock);
      worker->drained = TRUE;
      while (worker->run_head != NULL)
        {
          AhEndpoint *endpoint = ah_worker_pop_locked (worker);

          endpoint->state = AH_ENDPOINT_IDLE;
          g_ptr_array_add (scheduled, endpoint);
        }
      pthread_mutex_unlock (&worker->lock);
      g_ptr_array_foreach (scheduled, ah_endpoint_unref_func, NULL);
    }

  pthread_rwlock_rdlock (&self->route_lock);
  ah_id_table_collect (&self->endpoints, endpoints);
  for (guint i = 0; i < endpoints->len; i++)
    ah_endpoint_ref (g_ptr_array_index (endpoints, i));
  pthread_rwlock_unlock (&self->route_lock);
  for (guint i = 0; i < endpoints->len; i++)
    {
      AhEndpoint *endpoint = g_ptr_array_index (endpoints, i);

      ah_endpoint_drain (endpoint, FALSE, AH_DEAD_LETTER_SHUTDOWN, FALSE);
      ah_endpoint_unref (endpoint);
    }

  if (ah_bus_is_idle_now (self))
    ah_bus_notify_idle (self);
}

void
ah_bus_free (AhBus *self)
{
  g_autoptr(GPtrArray) endpoints = g_ptr_array_new ();

  if (self == NULL)
    return;

  ah_bus_stop (self, 0);

  /* The creators' references of the endpoints nobody closed. */
  pthread_rwlock_wrlock (&self->route_lock);
  ah_id_table_collect (&self->endpoints, endpoints);
  for (guint i = 0; i < endpoints->len; i++)
    ah_bus_unregister_endpoint_unlocked (self, g_ptr_array_index (endpoints, i));
  pthread_rwlock_unlock (&self->route_lock);
  g_ptr_array_foreach (endpoints, ah_endpoint_unref_func, NULL);

  g_hash_table_unref (self->subscriptions);
  ah__subject_trie_free (self->trie);
  g_hash_table_unref (self->subjects);
  g_ptr_array_unref (self->groups);
  ah_id_table_clear (&self->endpoints);
  /* Every endpoint is gone: the creators' references went above, and
   * nothing else outlives the stopped workers. */
  ah_arena_clear (&self->arena);
  pthread_rwlock_destroy (&self->route_lock);

  for (guint i = 0; i < self->requests->len; i++)
    g_free (g_array_index (self->requests, AhPendingRequest, i).subject_copy);
  g_array_unref (self->requests);
  g_free (self->deadlines.items);
  pthread_mutex_destroy (&self->requests_lock);
  pthread_cond_destroy (&self->requests_cond);
  pthread_mutex_destroy (&self->idle_lock);
  pthread_cond_destroy (&self->idle_cond);
  pthread_mutex_destroy (&self->dead_letter_lock);
  pthread_rwlock_destroy (&self->tap_lock);

  for (guint i = 0; i < self->config.n_workers; i++)
    {
      AhWorker *worker = self->workers[i];

      pthread_mutex_destroy (&worker->lock);
      pthread_cond_destroy (&worker->work_cond);
      pthread_cond_destroy (&worker->room_cond);
      pthread_cond_destroy (&worker->state_cond);
      g_free (worker->outbox.items);
      g_free (worker->routed.items);
      g_free (worker->batch);
      g_free (worker->retry_to);
      g_free (worker);
    }
  g_free (self->workers);
  g_free (self);
}

const AhBusConfig *
ah_bus_get_config (AhBus *self)
{
  g_return_val_if_fail (self != NULL, NULL);

  return &self->config;
}

void
ah_bus_set_dead_letter_func (AhBus            *self,
                             AhDeadLetterFunc  func,
                             gpointer          user_data)
{
  g_return_if_fail (self != NULL);

  pthread_mutex_lock (&self->dead_letter_lock);
  self->dead_letter_func = func;
  self->dead_letter_data = user_data;
  pthread_mutex_unlock (&self->dead_letter_lock);
}

void
ah_bus_set_idle_func (AhBus         *self,
                      AhBusIdleFunc  func,
                      gpointer       user_data)
{
  g_return_if_fail (self != NULL);

  pthread_mutex_lock (&self->idle_lock);
  self->idle_func = func;
  self->idle_data = user_data;
  pthread_mutex_unlock (&self->idle_lock);
}

gboolean
ah_bus_is_idle (AhBus *self)
{
  g_return_val_if_fail (self != NULL, FALSE);

  return ah_bus_is_idle_now (self);
}

/* @timeout_us: negative waits for ever, 0 only checks. */
gboolean
ah_bus_wait_idle (AhBus  *self,
                  gint64  timeout_us)
{
  gint64 deadline_ns = -1;
  gboolean idle;

  g_return_val_if_fail (self != NULL, FALSE);
  /* The batch of the calling handler is in flight until it returns. */
  g_return_val_if_fail (ah_bus_worker_for_thread (self) == NULL, FALSE);

  if (timeout_us >= 0)
    {
      gint64 now = ah__monotonic_ns ();

      deadline_ns = timeout_us < (G_MAXINT64 - now) / 1000 ? now + timeout_us * 1000 : -1;
    }

  pthread_mutex_lock (&self->idle_lock);
  while (!(idle = ah_bus_is_idle_now (self)))
    {
      if (deadline_ns < 0)
        {
          pthread_cond_wait (&self->idle_cond, &self->idle_lock);
        }
      else
        {
          struct timespec until = ah_timespec_from_ns (deadline_ns);

          if (pthread_cond_timedwait (&self->idle_cond, &self->idle_lock, &until) == ETIMEDOUT)
            {
              idle = ah_bus_is_idle_now (self);
              break;
            }
        }
    }
  pthread_mutex_unlock (&self->idle_lock);
  return idle;
}

static gdouble
ah_latency_percentile_us (const guint64 *counts,
                          guint64        total,
                          guint64        max_ns,
                          gdouble        fraction)
{
  guint64 rank, seen = 0;

  if (total == 0)
    return 0;
  rank = (guint64) (fraction * (gdouble) total + 0.999999);
  rank = CLAMP (rank, 1, total);
  for (guint i = 0; i < AH_LATENCY_N_BUCKETS; i++)
    {
      seen += counts[i];
      if (seen >= rank)
        return MIN (ah_latency_bucket_value (i), (gdouble) max_ns) / 1000.0;
    }
  return (gdouble) max_ns / 1000.0;
}

void
ah_bus_get_counters (AhBus         *self,
                     AhBusCounters *ret_counters)
{
  guint64 sums[AH_TALLY_N_FIELDS];
  g_autofree guint64 *counts = g_new0 (guint64, AH_LATENCY_N_BUCKETS);
  guint64 total = 0, max_ns = 0, stall_max_ns = 0;
  gint64 in_flight;

  g_return_if_fail (self != NULL);
  g_return_if_fail (ret_counters != NULL);

  /* in_flight first: a reader that sees it at 0 sees every count that
   * brought it there (see ah_bus_settle). */
  in_flight = atomic_load (&self->in_flight);
  for (guint f = 0; f < AH_TALLY_N_FIELDS; f++)
    sums[f] = atomic_load_explicit (&self->external.values[f], memory_order_relaxed);
  for (guint w = 0; w < self->config.n_workers; w++)
    {
      AhWorker *worker = self->workers[w];
      guint64 worker_max;

      /* Read after in_flight: a fold in between makes the figure too
       * high for a moment, never too low. */
      in_flight -= atomic_load_explicit (&worker->settled_unfolded, memory_order_relaxed);

      for (guint f = 0; f < AH_TALLY_N_FIELDS; f++)
        sums[f] += atomic_load_explicit (&worker->tally.values[f], memory_order_relaxed);
      for (guint i = 0; i < AH_LATENCY_N_BUCKETS; i++)
        {
          guint64 count = atomic_load_explicit (&worker->latency.counts[i], memory_order_relaxed);

          counts[i] += count;
          total += count;
        }
      worker_max = atomic_load_explicit (&worker->latency.max_ns, memory_order_relaxed);
      max_ns = MAX (max_ns, worker_max);
      stall_max_ns = MAX (stall_max_ns,
                          atomic_load_explicit (&worker->stall_max_ns, memory_order_relaxed));
    }

  memset (ret_counters, 0, sizeof *ret_counters);
  ret_counters->published = sums[AH_TALLY_PUBLISHED];
  ret_counters->accepted = sums[AH_TALLY_ACCEPTED];
  ret_counters->delivered = sums[AH_TALLY_DELIVERED];
  ret_counters->dead_lettered = sums[AH_TALLY_DEAD_LETTERED];
  ret_counters->failed = sums[AH_TALLY_FAILED];
  ret_counters->in_flight = in_flight > 0 ? (guint64) in_flight : 0;
  ret_counters->batches = sums[AH_TALLY_BATCHES];
  ret_counters->requests = sums[AH_TALLY_REQUESTS];
  ret_counters->request_timeouts = sums[AH_TALLY_REQUEST_TIMEOUTS];
  ret_counters->retried = sums[AH_TALLY_RETRIED];
  ret_counters->cpu_handoffs = sums[AH_TALLY_CPU_HANDOFFS];
  ret_counters->steals = sums[AH_TALLY_STEALS];
  ret_counters->n_pinned = 0;
  for (guint w = 0; w < self->config.n_workers; w++)
    ret_counters->n_pinned += atomic_load (&self->workers[w]->pinned_now) ? 1 : 0;
  ret_counters->worker_stall_max_us = stall_max_ns / 1000.0;
  ret_counters->latency_p50_us = ah_latency_percentile_us (counts, total, max_ns, 0.50);
  ret_counters->latency_p95_us = ah_latency_percentile_us (counts, total, max_ns, 0.95);
  ret_counters->latency_p99_us = ah_latency_percentile_us (counts, total, max_ns, 0.99);
  ret_counters->latency_p999_us = ah_latency_percentile_us (counts, total, max_ns, 0.999);
  ret_counters->latency_max_us = (gdouble) max_ns / 1000.0;
  ret_counters->n_workers = self->config.n_workers;
}

/* ---- For the offload pool and the test harness ------------------------------------------ */

void
ah_bus_hold (AhBus *self)
{
  g_return_if_fail (self != NULL);

  atomic_fetch_add (&self->n_held, 1);
}

void
ah_bus_release (AhBus *self)
{
  guint held;

  g_return_if_fail (self != NULL);

  /* A compare-and-swap rather than a plain decrement: an unbalanced
   * release must not wrap the count round and keep the bus busy for ever. */
  held = atomic_load (&self->n_held);
  do
    {
      if (held == 0)
        {
          g_critical ("%s: released more often than held", G_STRFUNC);
          return;
        }
    }
  while (!atomic_compare_exchange_weak (&self->n_held, &held, held - 1));

  if (held == 1 && ah_bus_is_idle_now (self))
    ah_bus_notify_idle (self);
}

guint64
ah_bus_new_correlation (AhBus *self)
{
  AhWorker *worker;
  guint64 correlation;

  g_return_val_if_fail (self != NULL, 0);

  worker = ah_bus_worker_for_thread (self);
  if (worker != NULL)
    {
      /* A worker takes ids in blocks: the bus's counter is a word every
       * requester writes, and between workers on two cores each step
       * moved its cache line. Ids stay unique, not in order across
       * workers. */
      if (worker->correlation_next == worker->correlation_end)
        {
          worker->correlation_next = atomic_fetch_add (&self->next_correlation,
                                                       AH_WORKER_CORRELATION_BLOCK);
          worker->correlation_end = worker->correlation_next + AH_WORKER_CORRELATION_BLOCK;
        }
      correlation = worker->correlation_next++;
      if (G_LIKELY (correlation != 0))
        return correlation;
    }
  /* 0 means "no correlation"; skipping it matters only after 2^64 ids. */
  do
    correlation = atomic_fetch_add (&self->next_correlation, 1);
  while (correlation == 0);
  return correlation;
}

/* Must not be called from the tap func itself: it waits for running
 * tap calls to end. */
void
ah_bus_set_tap_func (AhBus        *self,
                     AhBusTapFunc  func,
                     gpointer      user_data)
{
  g_return_if_fail (self != NULL);

  pthread_rwlock_wrlock (&self->tap_lock);
  self->tap_func = func;
  self->tap_data = func != NULL ? user_data : NULL;
  atomic_store_explicit (&self->tap_set, func != NULL, memory_order_release);
  pthread_rwlock_unlock (&self->tap_lock);
}
