/* SPDX-License-Identifier: MIT */
/* bench: the agent type behind `agenthost bench`, one plugin whose
 * config picks a role:
 *
 *   publisher  publishes numbered messages on `subject`, `batch` per
 *              handler call. There are no timers: it starts on
 *              "bench.start" and, after each batch, sends itself
 *              "bench.go", so the load sustains itself through the bus
 *              and yields the worker between batches.
 *   sink       receives them on `subject` (tested first: the control
 *              subjects cost two more tests), checks the sequence
 *              numbers per stream (`expect: every` - each one, in
 *              order - or `share`, a queue group's strictly increasing
 *              share) and records the latency from the send timestamp
 *              in the payload.
 *   requester  makes `rounds` requests on `subject`, one at a time, and
 *              records each round trip; with `chain: false` it makes one
 *              per "bench.go" instead, so the command can leave it idle.
 *   responder  answers requests with their own payload.
 *   peer       stage3: sends the messages and tasks (requests) a
 *              "bench.s3.go" lists, answers tasks, checks what it gets.
 *   idle       does nothing: agents for the spawn and memory scenarios.
 *
 * Every role answers "bench.collect" by publishing its BenchReport on
 * "bench.report" (bench-wire.h).
 */
#include <agenthost/agenthost.h>

#include "bench-wire.h"

#include <string.h>
#include <pthread.h>

#define BENCH_TASK_TIMEOUT_MS 10000

typedef struct {
  guint64 received;
  guint64 next;
  guint64 seq_sum;
} BenchStream;

typedef struct {
  BenchRole    role;
  gboolean     expect_every;
  gboolean     chain;
  gboolean     stopped;
  char        *subject;
  /* Interned once: the bus routes them without a lookup and the handler
   * tells them apart by pointer. */
  const AhSubject *data_subject;
  const AhSubject *on_collect, *on_stop, *on_start, *on_go, *on_s3_go, *on_s3_msg;
  guint64      messages;      /* publisher: 0 means until "bench.stop" */
  guint64      rounds;
  guint        batch;
  guint        payload;
  guint8      *buffer;        /* one payload, rewritten per message */
  guint32     *hists;         /* BENCH_N_HISTS * BENCH_HIST_BUCKETS, on first use */
  /* A sink's latencies not yet in @hists: a run of messages with the
   * same latency (one publisher batch, one handler batch) */
  guint64      run_ns;
  guint32      run_count;
  guint32      moves;         /* batches run on another thread than the one before */
  BenchStream *streams;
  guint        n_streams;
  GHashTable  *senders;       /* peer: sender id -> one past its last seq */
  guint64      next_seq;
  guint64      pending_seq;
  guint64      thread_id;
  guint64      first_thread_id;
  guint64      handled;
  guint64      anomalies;
  guint64      gaps;
  guint64      failures;
  guint64      completed;
  guint64      sent;
  guint64      seq_sum;
  guint64      tasks_ok;
} BenchState;

static const AhConfigKey bench_config_schema[] = {
  { "role", AH_CONFIG_STRING, AH_CONFIG_FLAG_REQUIRED, NULL, 0, 0,
    "publisher, sink, requester, responder, peer or idle", { NULL, NULL } },
  { "subject", AH_CONFIG_STRING, 0, "bench.data", 0, 0,
    "Where a publisher publishes, a requester sends requests, a sink expects its data", { NULL, NULL } },
  { "messages", AH_CONFIG_INT, 0, "0", 0, 1e15,
    "Messages a publisher sends; 0: until bench.stop", { NULL, NULL } },
  { "rounds", AH_CONFIG_INT, 0, "0", 0, 1e15,
    "Round trips a chained requester makes", { NULL, NULL } },
  { "batch", AH_CONFIG_INT, 0, "256", 1, 65536,
    "Messages a publisher sends per handler call", { NULL, NULL } },
  { "payload", AH_CONFIG_INT, 0, "64", BENCH_MIN_PAYLOAD, 65536,
    "Bytes per message, the header included", { NULL, NULL } },
  { "streams", AH_CONFIG_INT, 0, "1", 1, 100000,
    "Sink: how many publishers (streams) it hears from", { NULL, NULL } },
  { "expect", AH_CONFIG_STRING, 0, "share", 0, 0,
    "Sink: every (all messages, in order) or share (a queue group's part)", { NULL, NULL } },
  { "chain", AH_CONFIG_BOOL, 0, "true", 0, 0,
    "Requester: start the next request on the reply (false: on bench.go)", { NULL, NULL } },
  AH_CONFIG_KEY_END
};

/* The host's clock: the one it stamps messages with, and cheaper than
 * clock_gettime() where it reads the TSC. Senders read it to stamp what
 * they send; receivers take the time their batch started from the host
 * (ah_context_get_start_ns), which read it anyway. */
static guint64
bench_now_ns (void)
{
  return (guint64) ah_monotonic_ns ();
}

static void
bench_record_n (BenchState *self,
                guint       hist,
                guint64     ns,
                guint32     n)
{
  if (self->hists == NULL)
    self->hists = g_new0 (guint32, BENCH_N_HISTS * BENCH_HIST_BUCKETS);
  self->hists[hist * BENCH_HIST_BUCKETS + bench_hist_bucket (ns)] += n;
}

static void
bench_record (BenchState *self,
              guint       hist,
              guint64     ns)
{
  bench_record_n (self, hist, ns, 1);
}

/* A sink's messages mostly come in runs with one latency: a publisher
 * stamps a batch with one clock read, and a handler reads the clock once
 * per batch. Counting a run in one step, each message still at its own
 * latency, keeps the sink's per-message cost down (the histogram step
 * was a tenth of fanout's time). */
static void
bench_record_latency (BenchState *self,
                      guint64     ns)
{
  if (self->run_count > 0 && ns == self->run_ns)
    {
      self->run_count++;
      return;
    }
  if (self->run_count > 0)
    bench_record_n (self, BENCH_HIST_LATENCY, self->run_ns, self->run_count);
  self->run_ns = ns;
  self->run_count = 1;
}

static void
bench_record_latency_flush (BenchState *self)
{
  if (self->run_count > 0)
    bench_record_n (self, BENCH_HIST_LATENCY, self->run_ns, self->run_count);
  self->run_count = 0;
}

/* A cheap checksum a task's responder must compute over the payload, so
 * a task is answered by a handler that read it. */
static guint32
bench_checksum (const guint8 *data,
                gsize         size)
{
  guint32 hash = 2166136261u;

  for (gsize i = 0; i < size; i++)
    hash = (hash ^ data[i]) * 16777619u;
  return hash;
}

/* The subjects every role answers. */
static void
bench_intern_control (AhContext  *ctx,
                      BenchState *self)
{
  self->on_collect = ah_subject_intern (ctx, "bench.collect");
  self->on_stop = ah_subject_intern (ctx, "bench.stop");
}

static gboolean
bench_agent_init (AhContext *ctx,
                  gpointer   state,
                  GError   **error)
{
  BenchState *self = state;
  const char *role = ah_config_get_string (ctx, "role", "");
  const char *expect;
  static const char * const roles[] = {
    "sink", "publisher", "requester", "responder", "peer", "idle"
  };

  /* Idle agents (the spawn scenarios' hundreds of thousands, where an
   * agent's start is what is measured) read nothing else and intern
   * their two subjects when a first message comes, if one does: their
   * setup was a third of a spawn. */
  if (g_str_equal (role, "idle"))
    {
      self->role = BENCH_ROLE_IDLE;
      return TRUE;
    }
  for (guint i = 0; i < G_N_ELEMENTS (roles); i++)
    if (g_str_equal (role, roles[i]))
      self->role = (BenchRole) (BENCH_ROLE_SINK + i);
  if (self->role == 0)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_CONFIG,
                   "config 'role': unknown role '%s' (publisher, sink, requester, "
                   "responder, peer or idle)", role);
      return FALSE;
    }
  expect = ah_config_get_string (ctx, "expect", "share");
  if (!g_str_equal (expect, "every") && !g_str_equal (expect, "share"))
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_CONFIG,
                   "config 'expect': '%s' is neither 'every' nor 'share'", expect);
      return FALSE;
    }
  bench_intern_control (ctx, self);
  self->on_start = ah_subject_intern (ctx, "bench.start");
  self->on_go = ah_subject_intern (ctx, "bench.go");
  self->on_s3_go = ah_subject_intern (ctx, "bench.s3.go");
  self->on_s3_msg = ah_subject_intern (ctx, "bench.s3.msg");

  self->expect_every = g_str_equal (expect, "every");
  self->chain = ah_config_get_bool (ctx, "chain", TRUE);
  self->subject = g_strdup (ah_config_get_string (ctx, "subject", "bench.data"));
  self->data_subject = ah_subject_intern (ctx, self->subject);
  if (self->data_subject == NULL)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_CONFIG,
                   "config 'subject': '%s' is not a valid subject", self->subject);
      return FALSE;
    }
  self->messages = (guint64) ah_config_get_int (ctx, "messages", 0);
  self->rounds = (guint64) ah_config_get_int (ctx, "rounds", 0);
  self->batch = (guint) ah_config_get_int (ctx, "batch", 256);
  self->payload = (guint) ah_config_get_int (ctx, "payload", 64);
  self->n_streams = (guint) ah_config_get_int (ctx, "streams", 1);
  if (self->role == BENCH_ROLE_SINK)
    self->streams = g_new0 (BenchStream, self->n_streams);
  if (self->role == BENCH_ROLE_PEER)
    self->senders = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, g_free);
  if (self->role != BENCH_ROLE_SINK && self->role != BENCH_ROLE_RESPONDER)
    {
      /* The filler is a fixed pattern so a task's checksum is stable. */
      self->buffer = g_malloc (self->payload);
      for (guint i = 0; i < self->payload; i++)
        self->buffer[i] = (guint8) (i * 31u + 7u);
    }

  return TRUE;
}

static void
bench_agent_finalize (AhContext *ctx,
                      gpointer   state)
{
  BenchState *self = state;

  g_clear_pointer (&self->subject, g_free);
  g_clear_pointer (&self->buffer, g_free);
  g_clear_pointer (&self->hists, g_free);
  g_clear_pointer (&self->streams, g_free);
  g_clear_pointer (&self->senders, g_hash_table_unref);
}

/* Fills in the header of the shared payload buffer for the next message. */
static void
bench_stamp_at (BenchState *self,
                guint32     stream,
                guint64     seq,
                guint64     sent_ns)
{
  BenchHeader header = {
    .seq = seq,
    .stream = stream,
    .check = 0,
    .sent_ns = sent_ns,
  };

  memcpy (self->buffer, &header, sizeof header);
}

static void
bench_stamp (BenchState *self,
             guint32     stream,
             guint64     seq)
{
  bench_stamp_at (self, stream, seq, bench_now_ns ());
}

static gboolean
bench_read_header (const AhMessage *message,
                   BenchHeader     *ret_header,
                   gsize           *ret_size)
{
  gsize size;
  gconstpointer data = ah_message_get_data (message, &size);

  if (size < sizeof (BenchHeader))
    return FALSE;
  memcpy (ret_header, data, sizeof *ret_header);
  if (ret_size != NULL)
    *ret_size = size;
  return TRUE;
}

static void
bench_sink_handle (BenchState      *self,
                   const AhMessage *message,
                   guint64          now_ns)
{
  BenchHeader header;
  BenchStream *stream;

  if (!bench_read_header (message, &header, NULL) || header.stream >= self->n_streams)
    {
      self->anomalies++;
      return;
    }
  self->handled++;
  bench_record_latency (self, now_ns - MIN (now_ns, header.sent_ns));
  stream = &self->streams[header.stream];
  /* Below what was already seen: a duplicate or a reordering. */
  if (header.seq < stream->next)
    {
      self->anomalies++;
      return;
    }
  if (self->expect_every && header.seq > stream->next)
    self->gaps += header.seq - stream->next;
  stream->next = header.seq + 1;
  stream->received++;
  stream->seq_sum += header.seq;
}

static gboolean
bench_publish_batch (AhContext  *ctx,
                     BenchState *self)
{
  guint32 stream = ah_context_get_index (ctx);
  guint n = self->batch;
  /* One clock read for the batch: every message's latency then counts
   * from the start of the batch (the time the publisher spends on the
   * rest of the batch included, so it errs long), and a clock read per
   * message would cost the publisher as much as the bus does. */
  guint64 sent_ns = bench_now_ns ();

  if (self->stopped)
    return TRUE;
  if (self->messages != 0)
    n = (guint) MIN ((guint64) n, self->messages - self->next_seq);
  for (guint i = 0; i < n; i++)
    {
      bench_stamp_at (self, stream, self->next_seq, sent_ns);
      if (!ah_publish_interned (ctx, self->data_subject, self->buffer, self->payload))
        return FALSE;
      self->next_seq++;
      self->sent++;
    }
  if (self->messages == 0 || self->next_seq < self->messages)
    return ah_send (ctx, ah_context_get_self (ctx), "bench.go", NULL, 0);
  return TRUE;
}

static gboolean
bench_request_next (AhContext  *ctx,
                    BenchState *self)
{
  if (self->stopped || self->pending_seq != 0)
    return TRUE;
  if (self->chain && self->sent >= self->rounds)
    return TRUE;
  bench_stamp (self, 0, self->sent + 1);
  self->pending_seq = self->sent + 1;
  self->sent++;
  return ah_request_interned (ctx, self->data_subject, self->buffer, self->payload,
                     BENCH_TASK_TIMEOUT_MS) != 0;
}

static void
bench_requester_handle (AhContext       *ctx,
                        BenchState      *self,
                        const AhMessage *message,
                        guint64          now_ns)
{
  BenchHeader header;

  self->handled++;
  if (ah_message_get_kind (message) == AH_MESSAGE_REPLY
      && bench_read_header (message, &header, NULL) && header.seq == self->pending_seq)
    {
      self->completed++;
      bench_record (self, BENCH_HIST_LATENCY, now_ns - MIN (now_ns, header.sent_ns));
    }
  else if (ah_message_get_kind (message) == AH_MESSAGE_REPLY)
    self->anomalies++;
  else
    self->failures++;
  self->pending_seq = 0;
  if (!self->chain)
    return;
  /* The command waits for this rather than for an idle bus, which a
   * load running beside the round trips never reaches. */
  if (self->sent >= self->rounds)
    ah_publish (ctx, "bench.done", NULL, 0);
  else
    bench_request_next (ctx, self);
}

static gboolean
bench_peer_go (AhContext       *ctx,
               BenchState      *self,
               const AhMessage *message)
{
  gsize size;
  const guint8 *data = ah_message_get_data (message, &size);
  BenchPeerGo go;
  guint payload;

  if (size < sizeof go)
    {
      self->anomalies++;
      return TRUE;
    }
  memcpy (&go, data, sizeof go);
  if (size != sizeof go + (gsize) go.n_messages * sizeof (AhAgentId))
    {
      self->anomalies++;
      return TRUE;
    }
  payload = CLAMP (go.payload, (guint) BENCH_MIN_PAYLOAD, self->payload);
  for (guint32 i = 0; i < go.n_messages; i++)
    {
      AhAgentId to;

      memcpy (&to, data + sizeof go + i * sizeof to, sizeof to);
      bench_stamp (self, 0, self->next_seq);
      if (!ah_send (ctx, to, "bench.s3.msg", self->buffer, payload))
        return FALSE;
      self->next_seq++;
      self->sent++;
    }
  for (guint32 i = 0; i < go.n_tasks; i++)
    {
      BenchHeader header = { 0 };

      bench_stamp (self, 0, i);
      header.check = bench_checksum (self->buffer + sizeof header, payload - sizeof header);
      memcpy (&header, self->buffer, G_STRUCT_OFFSET (BenchHeader, check));
      memcpy (self->buffer, &header, sizeof header);
      if (ah_request (ctx, "bench.s3.task", self->buffer, payload, BENCH_TASK_TIMEOUT_MS) == 0)
        return FALSE;
    }
  return TRUE;
}

static void
bench_peer_message (BenchState      *self,
                    const AhMessage *message,
                    guint64          now_ns)
{
  BenchHeader header;
  AhAgentId sender = ah_message_get_sender (message);
  guint64 *next;

  if (!bench_read_header (message, &header, NULL))
    {
      self->anomalies++;
      return;
    }
  self->handled++;
  bench_record (self, BENCH_HIST_LATENCY, now_ns - MIN (now_ns, header.sent_ns));
  next = g_hash_table_lookup (self->senders, &sender);
  if (next == NULL)
    {
      gint64 *key = g_new (gint64, 1);

      *key = (gint64) sender;
      next = g_new0 (guint64, 1);
      g_hash_table_insert (self->senders, key, next);
    }
  /* One sender's messages to one agent arrive in order: they are a
   * strictly increasing part of its numbering. */
  if (header.seq < *next)
    {
      self->anomalies++;
      return;
    }
  *next = header.seq + 1;
  self->completed++;
  self->seq_sum += header.seq;
}

static gboolean
bench_peer_task (AhContext       *ctx,
                 BenchState      *self,
                 const AhMessage *message)
{
  gsize size;
  const guint8 *data = ah_message_get_data (message, &size);
  BenchHeader header;

  if (!bench_read_header (message, &header, NULL))
    {
      self->anomalies++;
      return TRUE;
    }
  header.check = bench_checksum (data + sizeof header, size - sizeof header);
  return ah_reply (ctx, message, &header, sizeof header);
}

static void
bench_peer_reply (BenchState      *self,
                  const AhMessage *message,
                  guint64          now_ns)
{
  BenchHeader header;

  if (ah_message_get_kind (message) != AH_MESSAGE_REPLY)
    {
      self->failures++;
      return;
    }
  if (!bench_read_header (message, &header, NULL)
      || header.check != bench_checksum (self->buffer + sizeof header,
                                         self->payload - sizeof header))
    {
      self->failures++;
      return;
    }
  bench_record (self, BENCH_HIST_TASK, now_ns - MIN (now_ns, header.sent_ns));
  self->tasks_ok++;
}

/* Which thread runs the caller: pthread_self() reads the thread pointer,
 * no system call. (Not a cached gettid() in thread-local storage: a
 * plugin using TLS cannot be unloaded cleanly, and `agenthost inspect`
 * warns about it.) */
static inline guint64
bench_thread_id (void)
{
  return (guint64) pthread_self ();
}

static gboolean
bench_report (AhContext  *ctx,
              BenchState *self)
{
  /* An agent that recorded nothing sends no histogram: a report per
   * agent of a large pool stays small. */
  gsize hists_size = self->hists != NULL ? BENCH_N_HISTS * BENCH_HIST_BUCKETS * sizeof (guint32) : 0;
  gsize size = sizeof (BenchReport) + hists_size + self->n_streams * sizeof (BenchStreamReport);
  g_autofree guint8 *buffer = g_malloc0 (size);
  BenchReport report = {
    .magic = BENCH_REPORT_MAGIC,
    .role = self->role,
    .thread_id = self->thread_id,
    .first_thread_id = self->first_thread_id,
    .moves = self->moves,
    .handled = self->handled,
    .anomalies = self->anomalies,
    .gaps = self->gaps,
    .failures = self->failures,
    .completed = self->completed,
    .sent = self->sent,
    .seq_sum = self->seq_sum,
    .tasks_ok = self->tasks_ok,
    .n_streams = self->streams != NULL ? self->n_streams : 0,
    .state_size = sizeof (BenchState),
    .n_hists = self->hists != NULL ? BENCH_N_HISTS : 0,
  };

  size = sizeof (BenchReport) + hists_size + report.n_streams * sizeof (BenchStreamReport);
  memcpy (buffer, &report, sizeof report);
  if (self->hists != NULL)
    memcpy (buffer + sizeof report, self->hists, hists_size);
  for (guint i = 0; i < report.n_streams; i++)
    {
      BenchStreamReport stream = {
        .received = self->streams[i].received,
        .next = self->streams[i].next,
        .seq_sum = self->streams[i].seq_sum,
      };

      memcpy (buffer + sizeof report + hists_size + i * sizeof stream, &stream, sizeof stream);
    }
  return ah_publish (ctx, "bench.report", buffer, size);
}

/* A responder answers a request with its own payload. */
static gboolean
bench_respond (AhContext       *ctx,
               BenchState      *self,
               const AhMessage *request)
{
  gsize size;
  gconstpointer data = ah_message_get_data (request, &size);

  self->handled++;
  return ah_reply (ctx, request, data, size);
}

static gboolean
bench_handle_one (AhContext       *ctx,
                  BenchState      *self,
                  const AhMessage *message,
                  guint64          now_ns)
{
  AhMessageKind kind;

  /* A sink's data first: one subject test per message, where testing
   * for the control subjects first took two and a kind (a sixth of a
   * fanout delivery, perf). */
  if (self->role == BENCH_ROLE_SINK && ah_message_has_subject (message, self->data_subject))
    {
      bench_sink_handle (self, message, now_ns);
      return TRUE;
    }
  kind = ah_message_get_kind (message);
  /* Likewise a round trip's messages: the control subjects come as
   * plain publishes, never as requests or replies. */
  if (self->role == BENCH_ROLE_REQUESTER && kind == AH_MESSAGE_REPLY)
    {
      bench_requester_handle (ctx, self, message, now_ns);
      return TRUE;
    }
  if (self->role == BENCH_ROLE_RESPONDER && kind == AH_MESSAGE_REQUEST)
    return bench_respond (ctx, self, message);
  if (ah_message_has_subject (message, self->on_collect))
    {
      bench_record_latency_flush (self);
      return bench_report (ctx, self);
    }
  if (ah_message_has_subject (message, self->on_stop))
    {
      self->stopped = TRUE;
      return TRUE;
    }

  switch (self->role)
    {
    case BENCH_ROLE_PUBLISHER:
      if (ah_message_has_subject (message, self->on_start)
          || ah_message_has_subject (message, self->on_go))
        return bench_publish_batch (ctx, self);
      return TRUE;
    case BENCH_ROLE_SINK:
      bench_sink_handle (self, message, now_ns);
      return TRUE;
    case BENCH_ROLE_REQUESTER:
      /* Replies were handled above. */
      if (kind == AH_MESSAGE_TIMEOUT || kind == AH_MESSAGE_NO_RESPONDERS)
        bench_requester_handle (ctx, self, message, now_ns);
      else if (ah_message_has_subject (message, self->on_start)
          || ah_message_has_subject (message, self->on_go))
        return bench_request_next (ctx, self);
      return TRUE;
    case BENCH_ROLE_RESPONDER:
      /* Requests were answered above. */
      return TRUE;
    case BENCH_ROLE_PEER:
      if (kind == AH_MESSAGE_REQUEST)
        return bench_peer_task (ctx, self, message);
      if (kind == AH_MESSAGE_REPLY || kind == AH_MESSAGE_TIMEOUT
          || kind == AH_MESSAGE_NO_RESPONDERS)
        bench_peer_reply (self, message, now_ns);
      else if (ah_message_has_subject (message, self->on_s3_go))
        return bench_peer_go (ctx, self, message);
      else if (ah_message_has_subject (message, self->on_s3_msg))
        bench_peer_message (self, message, now_ns);
      return TRUE;
    case BENCH_ROLE_IDLE:
    default:
      return TRUE;
    }
}

static gboolean
bench_handle_batch (AhContext               *ctx,
                    gpointer                 state,
                    const AhMessage * const *messages,
                    guint                    n_messages,
                    GError                 **error)
{
  BenchState *self = state;
  /* Latencies measure to the start of the handler call, as the host's
   * own histograms do: the host read the clock then, so the roles that
   * measure need not read it again (a read per message would cost more
   * than the message itself). */
  guint64 now_ns = self->role == BENCH_ROLE_SINK || self->role == BENCH_ROLE_REQUESTER
                   || self->role == BENCH_ROLE_PEER ? (guint64) ah_context_get_start_ns (ctx) : 0;

  guint64 thread_id = bench_thread_id ();

  /* Workers share out agents (work stealing): each batch says where it
   * ran, so the rtt cases can tell whether their two agents stayed apart. */
  if (G_UNLIKELY (self->thread_id != thread_id))
    {
      if (self->thread_id != 0)
        self->moves++;
      else
        self->first_thread_id = thread_id;
      self->thread_id = thread_id;
    }
  if (G_UNLIKELY (self->on_collect == NULL))
    bench_intern_control (ctx, self);
  for (guint i = 0; i < n_messages; i++)
    if (!bench_handle_one (ctx, self, messages[i], now_ns))
      {
        g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                     "bench %s: the bus refused a message", self->subject);
        return FALSE;
      }
  bench_record_latency_flush (self);

  return TRUE;
}

AH_PLUGIN_DEFINE (bench,
  .version = "1.0.0",
  .description = "Load and latency roles for agenthost bench",
  .state_size = sizeof (BenchState),
  .agent_init = bench_agent_init,
  .agent_finalize = bench_agent_finalize,
  .handle_batch = bench_handle_batch,
  .config_schema = bench_config_schema)
