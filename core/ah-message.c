/* Refcounted, immutable messages and the public read-only accessors.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-message-private.h"
#include "ah-clock-private.h"

#include <pthread.h>
#include <string.h>
#include <time.h>

gint64
ah__monotonic_ns (void)
{
  struct timespec now;

  clock_gettime (CLOCK_MONOTONIC, &now);
  return (gint64) now.tv_sec * G_GINT64_CONSTANT (1000000000) + now.tv_nsec;
}

gint64
ah__monotonic_coarse_ns (void)
{
  static _Atomic gint64 cached_resolution_ns = -1;
  gint64 resolution_ns = atomic_load_explicit (&cached_resolution_ns, memory_order_relaxed);
  struct timespec now;

  if (G_UNLIKELY (resolution_ns < 0))
    {
      struct timespec resolution;

      if (clock_getres (CLOCK_MONOTONIC_COARSE, &resolution) != 0)
        return ah__monotonic_ns ();
      /* Racing threads all store the same value. */
      resolution_ns = (gint64) resolution.tv_sec * G_GINT64_CONSTANT (1000000000)
                      + resolution.tv_nsec;
      atomic_store_explicit (&cached_resolution_ns, resolution_ns, memory_order_relaxed);
    }
  clock_gettime (CLOCK_MONOTONIC_COARSE, &now);
  return (gint64) now.tv_sec * G_GINT64_CONSTANT (1000000000) + now.tv_nsec + resolution_ns;
}

/* ---- The message cache -------------------------------------------------
 *
 * Most messages are small and short-lived, and on the hot path one
 * thread allocates them (the publisher's worker) while another frees
 * them (the recipient's). glibc's malloc makes that cross-thread free
 * slow, so small messages come from fixed-size blocks kept in per-thread
 * magazines, as in Bonwick's slab allocator: a magazine is an array of
 * up to AH_MAGAZINE_BLOCKS block pointers, a thread holds two (so it
 * does not go to the depot every time it crosses a magazine boundary
 * back and forth), and full and empty magazines are exchanged with a
 * shared depot, one lock per magazine, not per message. Blocks are
 * touched once and reused; the depot keeps at most
 * AH_DEPOT_MAX_MAGAZINES full magazines and frees the rest.
 *
 * Magazines are arrays, not chains threaded through the free blocks: a
 * block freed on another core is not read again until it is written as
 * a new message, so taking a magazine costs no walk of cache misses
 * (a chain cost one dependent miss per block, measured at 80% of the
 * publisher's allocation time), and the next block is prefetched.
 *
 * Under AddressSanitizer the cache is off, so that every message is its
 * own allocation and a use after free is still caught. */

#define AH_MESSAGE_BLOCK_SIZE   256
#define AH_MAGAZINE_BLOCKS      64
#define AH_DEPOT_MAX_MAGAZINES  1024
#define AH_PREFETCH_AHEAD       8

#if defined(__SANITIZE_ADDRESS__)
#define AH_MESSAGE_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define AH_MESSAGE_CACHE 0
#endif
#endif
#ifndef AH_MESSAGE_CACHE
#define AH_MESSAGE_CACHE 1
#endif

typedef struct {
  guint    n;
  gpointer blocks[AH_MAGAZINE_BLOCKS];
} AhMagazine;

/* Invariant, as Bonwick's: @loaded is where blocks come and go;
 * @previous is either full or empty (or NULL). */
typedef struct {
  AhMagazine *loaded;
  AhMagazine *previous;
} AhThreadCache;

static pthread_mutex_t ah_depot_lock = PTHREAD_MUTEX_INITIALIZER;
/* Under the lock: full magazines, and empty ones kept for reuse. */
static AhMagazine     *ah_depot_full[AH_DEPOT_MAX_MAGAZINES];
static guint           ah_depot_n_full;
static AhMagazine     *ah_depot_empty[AH_DEPOT_MAX_MAGAZINES];
static guint           ah_depot_n_empty;
static pthread_key_t   ah_cache_key;
static pthread_once_t  ah_cache_key_once = PTHREAD_ONCE_INIT;
static AH_THREAD_LOCAL AhThreadCache *ah_thread_cache;

static void
ah_magazine_free (AhMagazine *magazine)
{
  if (magazine == NULL)
    return;
  for (guint i = 0; i < magazine->n; i++)
    g_aligned_free (magazine->blocks[i]);
  g_free (magazine);
}

/* Takes over @magazine, full or empty as it is. */
static void
ah_depot_put (AhMagazine *magazine)
{
  gboolean empty = magazine->n == 0;

  pthread_mutex_lock (&ah_depot_lock);
  if (empty && ah_depot_n_empty < AH_DEPOT_MAX_MAGAZINES)
    {
      ah_depot_empty[ah_depot_n_empty++] = g_steal_pointer (&magazine);
    }
  else if (!empty && ah_depot_n_full < AH_DEPOT_MAX_MAGAZINES)
    {
      ah_depot_full[ah_depot_n_full++] = g_steal_pointer (&magazine);
    }
  pthread_mutex_unlock (&ah_depot_lock);
  ah_magazine_free (magazine);
}

/* A full magazine from the depot, or NULL; an empty one is made if the
 * depot has none. */
static AhMagazine *
ah_depot_take (gboolean full)
{
  AhMagazine *magazine = NULL;

  pthread_mutex_lock (&ah_depot_lock);
  if (full && ah_depot_n_full > 0)
    magazine = ah_depot_full[--ah_depot_n_full];
  else if (!full && ah_depot_n_empty > 0)
    magazine = ah_depot_empty[--ah_depot_n_empty];
  pthread_mutex_unlock (&ah_depot_lock);
  if (magazine == NULL && !full)
    magazine = g_new0 (AhMagazine, 1);
  return magazine;
}

/* A thread's magazines go back to the depot when the thread ends. */
static void
ah_thread_cache_release (gpointer data)
{
  AhThreadCache *cache = data;

  /* A message freed later on this thread (by another key's destructor)
   * starts a fresh cache, which pthread releases in its next round. */
  ah_thread_cache = NULL;

  ah_depot_put (cache->loaded);
  if (cache->previous != NULL)
    ah_depot_put (cache->previous);
  g_free (cache);
}

static void
ah_cache_key_create (void)
{
  pthread_key_create (&ah_cache_key, ah_thread_cache_release);
}

static AhThreadCache *
ah_thread_cache_get (void)
{
  if (G_UNLIKELY (ah_thread_cache == NULL))
    {
      pthread_once (&ah_cache_key_once, ah_cache_key_create);
      ah_thread_cache = g_new0 (AhThreadCache, 1);
      ah_thread_cache->loaded = ah_depot_take (FALSE);
      pthread_setspecific (ah_cache_key, ah_thread_cache);
    }
  return ah_thread_cache;
}

/* A line about to be written: fetched for ownership, not shared, or
 * the write would still wait for the other core to let go of it. GCC's
 * __builtin_prefetch(p, 1) emits a read prefetch on plain x86-64;
 * PREFETCHW is in every x86-64 core of the last decade and a no-op in
 * older ones. */
static inline void
ah_prefetch_for_write (const void *address)
{
#if defined(__x86_64__)
  __asm__ __volatile__ ("prefetchw %0" : : "m" (*(const char *) address));
#else
  __builtin_prefetch (address, 1);
#endif
}

static gpointer
ah_block_alloc (void)
{
  AhThreadCache *cache = ah_thread_cache_get ();
  AhMagazine *loaded = cache->loaded;

  if (G_UNLIKELY (loaded->n == 0))
    {
      AhMagazine *full;

      if (cache->previous != NULL && cache->previous->n > 0)
        {
          cache->loaded = cache->previous;
          cache->previous = loaded;
        }
      else if ((full = ah_depot_take (TRUE)) != NULL)
        {
          if (cache->previous != NULL)
            ah_depot_put (cache->previous);
          cache->previous = loaded;
          cache->loaded = full;
        }
      else
        {
          /* Aligned to cache lines, so a small message spans as few as
           * it can: they are what travels between cores. */
          return g_aligned_alloc (1, AH_MESSAGE_BLOCK_SIZE, 64);
        }
      loaded = cache->loaded;
    }
  /* The blocks about to be written were most likely last written on
   * another core: start fetching the lines of the one a few messages
   * ahead (its header and a small payload), so the copy into it does
   * not wait for them. */
  if (loaded->n > AH_PREFETCH_AHEAD)
    {
      guint8 *ahead = loaded->blocks[loaded->n - 1 - AH_PREFETCH_AHEAD];

      ah_prefetch_for_write (ahead);
      ah_prefetch_for_write (ahead + 64);
    }
  return loaded->blocks[--loaded->n];
}

static void
ah_block_free (gpointer memory)
{
  AhThreadCache *cache = ah_thread_cache_get ();
  AhMagazine *loaded = cache->loaded;

  if (G_UNLIKELY (loaded->n == AH_MAGAZINE_BLOCKS))
    {
      if (cache->previous != NULL && cache->previous->n == 0)
        {
          cache->loaded = cache->previous;
          cache->previous = loaded;
        }
      else
        {
          if (cache->previous != NULL)
            ah_depot_put (cache->previous);
          cache->previous = loaded;
          cache->loaded = ah_depot_take (FALSE);
        }
      loaded = cache->loaded;
    }
  loaded->blocks[loaded->n++] = memory;
}

/* ---- Messages --------------------------------------------------------------- */

AhMessage *
ah__message_new_unstamped (AhMessageKind kind,
                           AhPriority    priority,
                           const char   *subject,
                           gboolean      subject_is_interned,
                           AhAgentId     sender,
                           AhAgentId     reply_to,
                           guint64       correlation,
                           gconstpointer data,
                           gsize         size)
{
  gsize subject_size = subject_is_interned ? 0 : strlen (subject) + 1;
  gsize total;
  AhMessage *message;

  g_return_val_if_fail (data != NULL || size == 0, NULL);
  /* The bus refuses payloads over 1 GiB before it gets here; the size
   * field is 32 bits, and this keeps the sum below from wrapping. */
  g_return_val_if_fail (size <= G_MAXUINT32 - 1, NULL);

  total = sizeof (AhMessage) + size + 1 + subject_size;
  if (AH_MESSAGE_CACHE && total <= AH_MESSAGE_BLOCK_SIZE)
    {
      message = ah_block_alloc ();
      message->cached = TRUE;
    }
  else
    {
      message = g_malloc (total);
      message->cached = FALSE;
    }
  atomic_init (&message->ref_count, 1);
  message->kind = (guint8) kind;
  message->redelivered = FALSE;
  message->request_slot = 0;
  message->priority = (guint8) priority;
  message->sender = sender;
  message->reply_to = reply_to;
  message->correlation = correlation;
  message->publish_time_ns = 0;
  message->size = (guint32) size;
  if (size > 0)
    memcpy (message->data, data, size);
  message->data[size] = '\0';
  if (subject_is_interned)
    {
      message->subject = subject;
    }
  else
    {
      memcpy (message->data + size + 1, subject, subject_size);
      message->subject = message->data + size + 1;
    }
  return message;
}

gboolean
ah__message_subject_is_interned (const AhMessage *message)
{
  /* A subject copied into the message lives right after the payload. */
  return message->subject != message->data + message->size + 1;
}

AhMessage *
ah__message_new (AhMessageKind kind,
                 AhPriority    priority,
                 const char   *subject,
                 gboolean      subject_is_interned,
                 AhAgentId     sender,
                 AhAgentId     reply_to,
                 guint64       correlation,
                 gconstpointer data,
                 gsize         size)
{
  AhMessage *message = ah__message_new_unstamped (kind, priority, subject, subject_is_interned,
                                                  sender, reply_to, correlation, data, size);

  /* Last, so the latency measured covers only the time on the bus. */
  if (message != NULL)
    message->publish_time_ns = ah__clock_ns ();
  return message;
}

void
ah__message_ref_n (AhMessage *message,
                   guint      n)
{
  atomic_fetch_add_explicit (&message->ref_count, (int) n, memory_order_relaxed);
}

AhMessage *
ah__message_ref (AhMessage *message)
{
  atomic_fetch_add_explicit (&message->ref_count, 1, memory_order_relaxed);
  return message;
}

void
ah__message_unref_n (AhMessage *message,
                     guint      n)
{
  if (atomic_fetch_sub_explicit (&message->ref_count, (int) n, memory_order_acq_rel) != (int) n)
    return;
  if (message->cached)
    ah_block_free (message);
  else
    g_free (message);
}

void
ah__message_unref (AhMessage *message)
{
  /* acq_rel: every reader's last access happens before the free. */
  if (atomic_fetch_sub_explicit (&message->ref_count, 1, memory_order_acq_rel) != 1)
    return;
  if (message->cached)
    ah_block_free (message);
  else
    g_free (message);
}

const char *
ah_message_get_subject (const AhMessage *message)
{
  g_return_val_if_fail (message != NULL, NULL);

  return message->subject;
}

gconstpointer
ah_message_get_data (const AhMessage *message,
                     gsize           *ret_size)
{
  g_return_val_if_fail (message != NULL, NULL);

  if (ret_size != NULL)
    *ret_size = message->size;
  return message->data;
}

AhMessageKind
ah_message_get_kind (const AhMessage *message)
{
  g_return_val_if_fail (message != NULL, AH_MESSAGE_PUBLISH);

  return (AhMessageKind) message->kind;
}

AhPriority
ah_message_get_priority (const AhMessage *message)
{
  g_return_val_if_fail (message != NULL, AH_PRIORITY_NORMAL);

  return (AhPriority) message->priority;
}

AhAgentId
ah_message_get_sender (const AhMessage *message)
{
  g_return_val_if_fail (message != NULL, AH_AGENT_ID_NONE);

  return message->sender;
}

guint64
ah_message_get_correlation (const AhMessage *message)
{
  g_return_val_if_fail (message != NULL, 0);

  return message->correlation;
}

gboolean
ah_message_is_redelivered (const AhMessage *message)
{
  g_return_val_if_fail (message != NULL, FALSE);

  return message->redelivered;
}

AhMessage *
ah__message_copy_redelivered (const AhMessage *message)
{
  AhMessage *copy = ah__message_new ((AhMessageKind) message->kind,
                                     (AhPriority) message->priority, message->subject,
                                     ah__message_subject_is_interned (message),
                                     message->sender, message->reply_to,
                                     message->correlation, message->data, message->size);

  copy->publish_time_ns = message->publish_time_ns;
  copy->request_slot = message->request_slot;
  copy->redelivered = TRUE;
  return copy;
}

gboolean
ah_message_has_subject (const AhMessage *message,
                        const AhSubject *subject)
{
  g_return_val_if_fail (message != NULL, FALSE);
  g_return_val_if_fail (subject != NULL, FALSE);

  /* Routed messages name their subject by the interned string; a direct
   * message keeps its own copy. */
  if (message->subject == subject->subject)
    return TRUE;
  /* Interned strings are unique per bus: two different ones differ. */
  if (message->subject != message->data + message->size + 1)
    return FALSE;
  return strcmp (message->subject, subject->subject) == 0;
}

const char *
ah_subject_get_string (const AhSubject *subject)
{
  g_return_val_if_fail (subject != NULL, NULL);

  return subject->subject;
}
