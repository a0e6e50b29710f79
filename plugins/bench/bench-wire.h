/* SPDX-License-Identifier: MIT */
/* bench: what the bench plugin and `agenthost bench` both read.
 *
 * The plugin is built against the public headers only and the command
 * talks to it through messages only, so the message layouts and the
 * histogram's bucket rule must be one definition, here, or the command
 * would read the plugin's reports with a different ruler.
 */
#pragma once

#include <glib.h>

/* Every data message starts with this; the rest of the payload is
 * filler up to the configured size. */
typedef struct {
  guint64 seq;        /* per sending stream, from 0 */
  guint64 sent_ns;    /* CLOCK_MONOTONIC when it was published */
  guint32 stream;     /* the sender's stream number (publisher index) */
  guint32 check;      /* stage3 tasks: a checksum the responder returns */
} BenchHeader;

#define BENCH_MIN_PAYLOAD ((gint64) sizeof (BenchHeader))

/* Latency histogram: 8 buckets per power of two of nanoseconds, so a
 * bucket's midpoint is within about 6% of any value in it; the first 8
 * buckets are single nanoseconds. 43 octaves reach past an hour. */
#define BENCH_HIST_SUB_BITS 3
#define BENCH_HIST_SUB      (1u << BENCH_HIST_SUB_BITS)
#define BENCH_HIST_BUCKETS  (BENCH_HIST_SUB * 43u)

static inline guint
bench_hist_bucket (guint64 ns)
{
  guint msb, shift, bucket;

  if (ns < BENCH_HIST_SUB)
    return (guint) ns;
  msb = 63u - (guint) __builtin_clzll (ns);
  shift = msb - BENCH_HIST_SUB_BITS;
  bucket = (shift + 1u) * BENCH_HIST_SUB + (guint) ((ns >> shift) & (BENCH_HIST_SUB - 1u));
  return MIN (bucket, BENCH_HIST_BUCKETS - 1u);
}

/* The middle of a bucket's range, in nanoseconds. */
static inline gdouble
bench_hist_bucket_mid_ns (guint bucket)
{
  guint shift, sub;

  if (bucket < BENCH_HIST_SUB)
    return bucket;
  shift = bucket / BENCH_HIST_SUB - 1u;
  sub = bucket % BENCH_HIST_SUB;
  return ((gdouble) (BENCH_HIST_SUB + sub) + 0.5) * (gdouble) (G_GUINT64_CONSTANT (1) << shift);
}

#define BENCH_REPORT_MAGIC 0x62656e63u   /* "benc" */

/* Histograms a report carries, in this order (absent ones are zeros). */
enum {
  BENCH_HIST_LATENCY = 0,   /* message: send to handler; rtt: round trip */
  BENCH_HIST_TASK,          /* stage3: task request to reply */
  BENCH_N_HISTS
};

/* One stream as a sink saw it. */
typedef struct {
  guint64 received;
  guint64 next;       /* one past the highest sequence number seen */
  guint64 seq_sum;    /* of every sequence number received, mod 2^64 */
} BenchStreamReport;

/* The payload an agent publishes on "bench.report" when it gets
 * "bench.collect": this, then n_hists * BENCH_HIST_BUCKETS guint32
 * counts, then n_streams BenchStreamReport. */
typedef struct {
  guint32 magic;
  guint32 role;
  guint64 thread_id;  /* the worker thread of its last handler call */
  guint64 first_thread_id;  /* ... and of its first */
  guint64 handled;    /* data messages, replies or requests it handled */
  guint64 anomalies;  /* duplicated or reordered sequence numbers, short payloads */
  guint64 gaps;       /* sequence numbers skipped ("every" sinks) */
  guint64 failures;   /* timeouts, no responders, wrong replies */
  guint64 completed;  /* round trips or tasks answered correctly */
  guint64 sent;       /* messages or requests it sent */
  guint64 seq_sum;    /* stage3: sequence numbers received, mod 2^64 */
  guint64 tasks_ok;   /* stage3: tasks answered with the right checksum */
  guint32 n_streams;
  guint32 state_size; /* sizeof the plugin's agent state */
  guint32 n_hists;    /* 0 (nothing recorded) or BENCH_N_HISTS */
  guint32 moves;      /* handler calls on another thread than the call before */
} BenchReport;

typedef enum {
  BENCH_ROLE_SINK = 1,
  BENCH_ROLE_PUBLISHER,
  BENCH_ROLE_REQUESTER,
  BENCH_ROLE_RESPONDER,
  BENCH_ROLE_PEER,
  BENCH_ROLE_IDLE,
} BenchRole;

/* stage3: what the command sends a peer ("bench.s3.go", direct): then
 * n_messages agent ids to send one message each to. */
typedef struct {
  guint32 n_messages;
  guint32 n_tasks;
  guint32 payload;
  guint32 reserved;
} BenchPeerGo;
