/* Messages and the subject trie: internals shared by the bus's own files
 * (ah-message.c, ah-subject.c, ah-bus.c). Nothing outside the bus needs
 * this header; everyone else goes through ah-bus-private.h and the
 * public ah_message_get_*() accessors.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include <stdatomic.h>

#include <agenthost/agenthost.h>

G_BEGIN_DECLS

/* The bus's thread-local variables: a few words, read on every message.
 * In a shared library the default model looks each access up through
 * __tls_get_addr(); initial-exec reads it at a fixed offset from the
 * thread pointer. The library is linked by the programs that use it, so
 * its TLS is allocated at start; a program that dlopen()s it still gets
 * these from glibc's reserve of static TLS (512 bytes by default; the
 * bus uses about 230), so keep them few and small. */
#define AH_THREAD_LOCAL __thread __attribute__ ((tls_model ("initial-exec")))

/* Longest subject or pattern, in bytes, without the NUL. */
#define AH_SUBJECT_MAX_LENGTH 255

/* One allocation holds the struct, the payload, a NUL after the payload
 * and, when the subject is not interned, a copy of the subject. A message
 * is immutable once published, so a broadcast to k endpoints shares one
 * message with k references. */
struct _AhMessage {
  atomic_int     ref_count;
  guint32        size;              /* the bus caps payloads at 1 GiB */
  guint8         kind;              /* AhMessageKind */
  guint8         priority;          /* AhPriority */
  guint8         redelivered;       /* a failed batch's message, delivered again */
  guint8         cached;            /* a block of the message cache, not g_malloc'd */
  /* REQUEST: its pending request's place in the bus's table, plus one
   * (0: none), so that a reply finds it without a lookup. Set by the
   * bus before anyone else sees the message. */
  guint32        request_slot;
  /* Interned (owned by the bus, outliving every message) or pointing
   * into @data after the payload. */
  const char    *subject;
  AhAgentId      sender;
  AhAgentId      reply_to;          /* REQUEST: the requester; else NONE */
  guint64        correlation;       /* 0 unless a request kind */
  gint64         publish_time_ns;   /* ah__clock_ns() */
  char           data[];
};

/* 56 bytes of header: with a 64-byte payload (and its NUL), a message
 * fills two cache lines, which is what crosses between cores per
 * message. */
G_STATIC_ASSERT (sizeof (AhMessage) == 56);

/* An interned subject, as plugins see it: the bus's routing cache entry
 * for the subject, whose first member is the interned string (the rest
 * is the bus's). It lives as long as the bus. */
struct _AhSubject {
  char *subject;
};

/* CLOCK_MONOTONIC in nanoseconds. */
gint64     ah__monotonic_ns       (void);
/* CLOCK_MONOTONIC_COARSE plus its resolution: never behind
 * ah__monotonic_ns(), ahead by at most the resolution (a few ms), and
 * several times cheaper. For deadlines counted in milliseconds. */
gint64     ah__monotonic_coarse_ns (void);

/* @subject must be valid. When @subject_is_interned, the message points at
 * it and the caller guarantees it outlives the message; otherwise the
 * message keeps a copy. The returned message holds one reference and
 * is stamped with the current time. */
AhMessage *ah__message_new        (AhMessageKind kind, AhPriority priority,
                                   const char *subject, gboolean subject_is_interned,
                                   AhAgentId sender, AhAgentId reply_to,
                                   guint64 correlation, gconstpointer data, gsize size);
/* The same, unstamped (publish_time_ns 0): a handler's messages are
 * stamped together when its outbox is flushed, one clock read for all. */
AhMessage *ah__message_new_unstamped (AhMessageKind kind, AhPriority priority,
                                      const char *subject, gboolean subject_is_interned,
                                      AhAgentId sender, AhAgentId reply_to,
                                      guint64 correlation, gconstpointer data, gsize size);
/* Whether @message's subject is an interned one (owned by the bus,
 * outliving every message) rather than its own copy. */
gboolean   ah__message_subject_is_interned (const AhMessage *message);
/* A new message with the same kind, subject, sender, payload and
 * publish time as @message, marked redelivered. */
AhMessage *ah__message_copy_redelivered (const AhMessage *message);
AhMessage *ah__message_ref        (AhMessage *message);
/* @n references at once: one atomic operation for a broadcast. */
void       ah__message_ref_n      (AhMessage *message, guint n);
void       ah__message_unref      (AhMessage *message);
/* Drops @n references at once. */
void       ah__message_unref_n    (AhMessage *message, guint n);

/* The subscription trie: patterns split into tokens, '*' and '>' as
 * special children, so matching a subject costs its number of tokens
 * (times the wildcard branches taken), not the number of patterns. The
 * trie stores opaque values and does no locking: the bus guards it. */
typedef struct _AhSubjectTrie AhSubjectTrie;

AhSubjectTrie *ah__subject_trie_new    (void);
void           ah__subject_trie_free   (AhSubjectTrie *trie);
/* @pattern must be valid. The same value may be inserted under several
 * patterns. */
void           ah__subject_trie_insert (AhSubjectTrie *trie, const char *pattern,
                                        gpointer value);
/* Returns FALSE when @value was not stored under @pattern. */
gboolean       ah__subject_trie_remove (AhSubjectTrie *trie, const char *pattern,
                                        gpointer value);
/* Appends to @values the value of every pattern matching @subject (a
 * valid subject), once per matching pattern. */
void           ah__subject_trie_match  (AhSubjectTrie *trie, const char *subject,
                                        GPtrArray *values);

G_END_DECLS
