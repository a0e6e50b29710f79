/* Tests of the event bus: subjects, routing, mailboxes, workers,
 * request/reply, overflow policies, close and stop, counters.
 *
 * Also the additions for offloading and the test harness: holds, fresh
 * correlation ids, send_full and the tap. And for hot reload: pausing
 * and resuming an endpoint.
 *
 * Every test gets a fresh bus; the tear-down stops it and checks that
 * accepted == delivered + dead_lettered + failed. Test threads use
 * pthread locks, like the bus, so ThreadSanitizer sees every edge.
 *
 * SPDX-License-Identifier: MIT
 */
#define _GNU_SOURCE   /* sched_setaffinity */
#include "ah-bus-private.h"
#include "ah-message-private.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define WAIT_US   (10 * G_USEC_PER_SEC)   /* generous: sanitizers are slow */

typedef struct _Fixture Fixture;
typedef struct _Agent   Agent;

/* Runs for each message an agent receives, after it is recorded.
 * Returns FALSE to fail the batch. */
typedef gboolean (*AgentStep) (Agent *agent, AhBusCall *call, const AhMessage *message);

struct _Agent {
  Fixture    *fixture;
  AhEndpoint *endpoint;
  AhAgentId   id;
  AgentStep   step;
  gpointer    data;            /* for the step */
  /* Under fixture->lock: */
  guint       n_calls;
  guint       max_batch;
  guint       n_received;
  guint64     last_sequence[4];  /* per sender slot, for order checks */
  gboolean    out_of_order;
};

typedef struct {
  AhAgentId      to;
  AhMessageKind  kind;
  AhPriority     priority;
  AhAgentId      sender;
  guint64        correlation;
  char          *subject;
  GBytes        *payload;
  gconstpointer  data;         /* the payload's address: shared by a broadcast */
  guint          call;         /* which handler call of its agent, from 1 */
  gboolean       redelivered;
} Received;

typedef struct {
  AhMessageKind       kind;
  char               *subject;
  AhAgentId           intended;
  AhDeadLetterReason  reason;
} DeadLetter;

struct _Fixture {
  AhBus          *bus;
  pthread_mutex_t lock;
  pthread_cond_t  cond;        /* anything recorded */
  GPtrArray      *agents;      /* (element-type Agent) (owned) */
  GPtrArray      *received;    /* (element-type Received) under @lock */
  GPtrArray      *dead;        /* (element-type DeadLetter) under @lock */
  guint           n_idle_calls;
  gboolean        gate_open;   /* for handlers that wait for the test */
};

/* ---- Fixture ---------------------------------------------------------------- */

static void
received_free (gpointer data)
{
  Received *received = data;

  g_free (received->subject);
  g_bytes_unref (received->payload);
  g_free (received);
}

static void
dead_letter_free (gpointer data)
{
  DeadLetter *dead = data;

  g_free (dead->subject);
  g_free (dead);
}

static void
fixture_on_dead_letter (const AhMessage    *message,
                        AhAgentId           intended,
                        AhDeadLetterReason  reason,
                        gpointer            user_data)
{
  Fixture *fixture = user_data;
  DeadLetter *dead = g_new0 (DeadLetter, 1);

  dead->kind = ah_message_get_kind (message);
  dead->subject = g_strdup (ah_message_get_subject (message));
  dead->intended = intended;
  dead->reason = reason;
  pthread_mutex_lock (&fixture->lock);
  g_ptr_array_add (fixture->dead, dead);
  pthread_cond_broadcast (&fixture->cond);
  pthread_mutex_unlock (&fixture->lock);
}

static void
fixture_on_idle (gpointer user_data)
{
  Fixture *fixture = user_data;

  pthread_mutex_lock (&fixture->lock);
  fixture->n_idle_calls++;
  pthread_cond_broadcast (&fixture->cond);
  pthread_mutex_unlock (&fixture->lock);
}

static void
fixture_set_up (Fixture       *fixture,
                gconstpointer  user_data)
{
  const AhBusConfig *config = user_data;

  pthread_mutex_init (&fixture->lock, NULL);
  pthread_cond_init (&fixture->cond, NULL);
  fixture->agents = g_ptr_array_new_with_free_func (g_free);
  fixture->received = g_ptr_array_new_with_free_func (received_free);
  fixture->dead = g_ptr_array_new_with_free_func (dead_letter_free);
  fixture->bus = ah_bus_new (config);
  ah_bus_set_dead_letter_func (fixture->bus, fixture_on_dead_letter, fixture);
  ah_bus_set_idle_func (fixture->bus, fixture_on_idle, fixture);
}

static void
assert_balanced (AhBus *bus)
{
  AhBusCounters counters;

  ah_bus_get_counters (bus, &counters);
  g_assert_cmpuint (counters.in_flight, ==, 0);
  g_assert_cmpuint (counters.accepted, ==,
                    counters.delivered + counters.dead_lettered + counters.failed);
}

static void
fixture_tear_down (Fixture       *fixture,
                   gconstpointer  user_data)
{
  /* Whatever a test left queued is dead-lettered by the stop, so the
   * account must balance in every test. */
  ah_bus_stop (fixture->bus, 0);
  assert_balanced (fixture->bus);
  g_assert_true (ah_bus_is_idle (fixture->bus));
  ah_bus_free (fixture->bus);

  g_ptr_array_unref (fixture->agents);
  g_ptr_array_unref (fixture->received);
  g_ptr_array_unref (fixture->dead);
  pthread_cond_destroy (&fixture->cond);
  pthread_mutex_destroy (&fixture->lock);
}

static gboolean
agent_handle (AhBusCall               *call,
              const AhMessage * const *messages,
              guint                    n_messages,
              gpointer                 user_data,
              GError                 **error)
{
  Agent *agent = user_data;
  Fixture *fixture = agent->fixture;
  gboolean ok = TRUE;
  guint call_index;

  pthread_mutex_lock (&fixture->lock);
  call_index = ++agent->n_calls;
  agent->max_batch = MAX (agent->max_batch, n_messages);
  pthread_mutex_unlock (&fixture->lock);

  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      Received *received = g_new0 (Received, 1);
      gsize size;
      gconstpointer data = ah_message_get_data (message, &size);

      received->to = agent->id;
      received->kind = ah_message_get_kind (message);
      received->priority = ah_message_get_priority (message);
      received->sender = ah_message_get_sender (message);
      received->correlation = ah_message_get_correlation (message);
      received->subject = g_strdup (ah_message_get_subject (message));
      received->payload = g_bytes_new (data, size);
      received->data = data;
      received->call = call_index;
      received->redelivered = ah_message_is_redelivered (message);

      pthread_mutex_lock (&fixture->lock);
      g_ptr_array_add (fixture->received, received);
      agent->n_received++;
      pthread_cond_broadcast (&fixture->cond);
      pthread_mutex_unlock (&fixture->lock);

      if (agent->step != NULL && !agent->step (agent, call, message))
        ok = FALSE;
    }

  if (!ok)
    g_set_error_literal (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED, "told to fail");
  return ok;
}

static Agent *
fixture_add_agent (Fixture   *fixture,
                   AgentStep  step,
                   gpointer   data)
{
  Agent *agent = g_new0 (Agent, 1);

  agent->fixture = fixture;
  agent->step = step;
  agent->data = data;
  agent->endpoint = ah_bus_endpoint_new (fixture->bus, agent_handle, agent);
  agent->id = ah_endpoint_get_id (agent->endpoint);
  g_ptr_array_add (fixture->agents, agent);
  return agent;
}

/* An agent in a fresh group of its own, subscribed to @pattern. */
static Agent *
fixture_add_subscriber (Fixture    *fixture,
                        const char *pattern,
                        AgentStep   step,
                        gpointer    data)
{
  g_autoptr(GError) error = NULL;
  Agent *agent = fixture_add_agent (fixture, step, data);
  AhBusGroup *group = ah_bus_group_new (fixture->bus, pattern, AH_DELIVERY_QUEUE);

  ah_bus_group_add (group, agent->endpoint);
  g_assert_cmpuint (ah_bus_subscribe (fixture->bus, pattern, group, &error), >, 0);
  g_assert_no_error (error);
  return agent;
}

static void
fixture_wait_idle (Fixture *fixture)
{
  g_assert_true (ah_bus_wait_idle (fixture->bus, WAIT_US));
  assert_balanced (fixture->bus);
}

static void
publish (Fixture    *fixture,
         const char *subject,
         const char *text)
{
  g_autoptr(GError) error = NULL;

  g_assert_true (ah_bus_publish (fixture->bus, AH_AGENT_ID_NONE, subject, text, strlen (text),
                                 AH_PRIORITY_NORMAL, &error));
  g_assert_no_error (error);
}

static void
send_to (Fixture    *fixture,
         AhAgentId   to,
         const char *subject,
         const char *text)
{
  g_autoptr(GError) error = NULL;

  g_assert_true (ah_bus_send (fixture->bus, AH_AGENT_ID_NONE, to, subject, text, strlen (text),
                              AH_PRIORITY_NORMAL, &error));
  g_assert_no_error (error);
}

static guint
count_received (Fixture       *fixture,
                AhAgentId      to,
                AhMessageKind  kind)
{
  guint n = 0;

  pthread_mutex_lock (&fixture->lock);
  for (guint i = 0; i < fixture->received->len; i++)
    {
      Received *received = g_ptr_array_index (fixture->received, i);

      if (received->to == to && received->kind == kind)
        n++;
    }
  pthread_mutex_unlock (&fixture->lock);
  return n;
}

/* The first message @to received of @kind; the test ends if there is
 * none. Read after idle. */
static Received *
get_received (Fixture       *fixture,
              AhAgentId      to,
              AhMessageKind  kind)
{
  for (guint i = 0; i < fixture->received->len; i++)
    {
      Received *received = g_ptr_array_index (fixture->received, i);

      if (received->to == to && received->kind == kind)
        return received;
    }
  g_error ("agent %" G_GUINT64_FORMAT " received no message of kind %d", to, kind);
}

static guint
count_dead (Fixture            *fixture,
            AhDeadLetterReason  reason)
{
  guint n = 0;

  pthread_mutex_lock (&fixture->lock);
  for (guint i = 0; i < fixture->dead->len; i++)
    if (((DeadLetter *) g_ptr_array_index (fixture->dead, i))->reason == reason)
      n++;
  pthread_mutex_unlock (&fixture->lock);
  return n;
}

static gint64
deadline_in_us (gint64 us)
{
  struct timespec now;

  clock_gettime (CLOCK_REALTIME, &now);
  return (gint64) now.tv_sec * G_USEC_PER_SEC + now.tv_nsec / 1000 + us;
}

/* Waits on the fixture's condition (lock held) until @deadline_us
 * (CLOCK_REALTIME). Returns FALSE on timeout. */
static gboolean
fixture_wait_until (Fixture *fixture,
                    gint64   deadline_us)
{
  struct timespec until;

  until.tv_sec = (time_t) (deadline_us / G_USEC_PER_SEC);
  until.tv_nsec = (long) (deadline_us % G_USEC_PER_SEC) * 1000;
  return pthread_cond_timedwait (&fixture->cond, &fixture->lock, &until) != ETIMEDOUT;
}

static void
fixture_open_gate (Fixture *fixture)
{
  pthread_mutex_lock (&fixture->lock);
  fixture->gate_open = TRUE;
  pthread_cond_broadcast (&fixture->cond);
  pthread_mutex_unlock (&fixture->lock);
}

/* Payloads of the order tests: which sender slot, and a sequence. */
typedef struct {
  guint   slot;
  guint64 sequence;
} Sequenced;

static void
agent_check_sequence (Agent           *agent,
                      const AhMessage *message)
{
  gsize size;
  const Sequenced *sequenced = ah_message_get_data (message, &size);

  g_assert_cmpuint (size, ==, sizeof (Sequenced));
  g_assert_cmpuint (sequenced->slot, <, G_N_ELEMENTS (agent->last_sequence));
  pthread_mutex_lock (&agent->fixture->lock);
  if (sequenced->sequence != agent->last_sequence[sequenced->slot] + 1)
    agent->out_of_order = TRUE;
  agent->last_sequence[sequenced->slot] = sequenced->sequence;
  pthread_mutex_unlock (&agent->fixture->lock);
}

static gboolean
step_check_sequence (Agent           *agent,
                     AhBusCall       *call,
                     const AhMessage *message)
{
  if (ah_message_get_kind (message) != AH_MESSAGE_DIRECT
      || strcmp (ah_message_get_subject (message), "seq") == 0)
    agent_check_sequence (agent, message);
  return TRUE;
}

/* ---- Subjects ----------------------------------------------------------------- */

typedef struct {
  const char *text;
  gboolean    subject_valid;
  gboolean    pattern_valid;
} SyntaxRow;

static const SyntaxRow syntax_rows[] = {
  { "a", TRUE, TRUE },
  { "orders.created", TRUE, TRUE },
  { "$SYS.host.started", TRUE, TRUE },
  { "a-b_c.D9.~!", TRUE, TRUE },
  { "", FALSE, FALSE },
  { ".", FALSE, FALSE },
  { "a.", FALSE, FALSE },
  { ".a", FALSE, FALSE },
  { "a..b", FALSE, FALSE },
  { "a b", FALSE, FALSE },
  { "a\tb", FALSE, FALSE },
  { "caf\xc3\xa9", FALSE, FALSE },
  { "a.\x7f", FALSE, FALSE },
  { "*", FALSE, TRUE },
  { ">", FALSE, TRUE },
  { "a.*", FALSE, TRUE },
  { "a.*.c", FALSE, TRUE },
  { "a.>", FALSE, TRUE },
  { "*.*.>", FALSE, TRUE },
  { "a.>.c", FALSE, FALSE },
  { ">.a", FALSE, FALSE },
  { "a*", FALSE, FALSE },
  { "a.b*", FALSE, FALSE },
  { "a.*b", FALSE, FALSE },
  { "a.>b", FALSE, FALSE },
  { "a.b>", FALSE, FALSE },
  { "**", FALSE, FALSE },
  { ">>", FALSE, FALSE },
};

static void
test_subject_syntax (void)
{
  g_autofree char *longest = g_strnfill (255, 'x');
  g_autofree char *too_long = g_strnfill (256, 'x');

  g_test_summary ("Subjects and patterns: non-empty dot-separated printable tokens, "
                  "wildcards only as whole pattern tokens, '>' last, at most 255 bytes");

  for (guint i = 0; i < G_N_ELEMENTS (syntax_rows); i++)
    {
      const SyntaxRow *row = &syntax_rows[i];

      if (ah_subject_is_valid (row->text) != row->subject_valid)
        g_test_fail_printf ("ah_subject_is_valid (\"%s\") should be %d", row->text,
                            row->subject_valid);
      if (ah_pattern_is_valid (row->text) != row->pattern_valid)
        g_test_fail_printf ("ah_pattern_is_valid (\"%s\") should be %d", row->text,
                            row->pattern_valid);
    }

  g_assert_false (ah_subject_is_valid (NULL));
  g_assert_false (ah_pattern_is_valid (NULL));
  g_assert_true (ah_subject_is_valid (longest));
  g_assert_false (ah_subject_is_valid (too_long));
  g_assert_false (ah_pattern_is_valid (too_long));
}

typedef struct {
  const char *pattern;
  const char *subject;
  gboolean    matches;
} MatchRow;

static const MatchRow match_rows[] = {
  { "a.b", "a.b", TRUE },
  { "a.b", "a.c", FALSE },
  { "a.b", "a.b.c", FALSE },
  { "a.b.c", "a.b", FALSE },
  { "a", "ab", FALSE },            /* tokens match whole, never a prefix */
  { "ab", "a", FALSE },
  { "a.*", "a.b", TRUE },
  { "a.*", "a", FALSE },
  { "a.*", "a.b.c", FALSE },
  { "*.b", "a.b", TRUE },
  { "*.b", "a.c", FALSE },
  { "*", "a", TRUE },
  { "*", "a.b", FALSE },
  { "a.*.c", "a.x.c", TRUE },
  { "a.*.c", "a.x.d", FALSE },
  { "a.>", "a.b", TRUE },
  { "a.>", "a.b.c.d", TRUE },
  { "a.>", "a", FALSE },           /* '>' needs at least one token */
  { "a.>", "b.c", FALSE },
  { ">", "a", TRUE },
  { ">", "a.b.c", TRUE },
  { "*.>", "a", FALSE },
  { "*.>", "a.b", TRUE },
  { "a.*.>", "a.b.c", TRUE },
  { "a.*.>", "a.b", FALSE },
  { "a.b", "a.*", FALSE },         /* a wildcard is not a subject */
  { "a..b", "a.b", FALSE },        /* invalid pattern */
};

static void
test_pattern_matching (void)
{
  g_test_summary ("Pattern matching: exact tokens, '*' one token, '>' one or more "
                  "trailing tokens (\"a.>\" does not match \"a\"), no partial tokens");

  for (guint i = 0; i < G_N_ELEMENTS (match_rows); i++)
    {
      const MatchRow *row = &match_rows[i];

      if (ah_pattern_matches (row->pattern, row->subject) != row->matches)
        g_test_fail_printf ("ah_pattern_matches (\"%s\", \"%s\") should be %d",
                            row->pattern, row->subject, row->matches);
    }
}

static void
test_subject_trie (void)
{
  AhSubjectTrie *trie = ah__subject_trie_new ();
  g_autoptr(GPtrArray) found = g_ptr_array_new ();
  static const char *patterns[] = { "a.b", "a.*", "a.>", "*.b", ">", "a.b.c", "a.*.c", "x.y" };

  g_test_summary ("The trie finds exactly the patterns ah_pattern_matches() accepts, "
                  "and forgets removed ones");

  for (guint i = 0; i < G_N_ELEMENTS (patterns); i++)
    ah__subject_trie_insert (trie, patterns[i], (gpointer) patterns[i]);

  for (guint r = 0; r < G_N_ELEMENTS (match_rows); r++)
    {
      const char *subject = match_rows[r].subject;

      if (!ah_subject_is_valid (subject))
        continue;
      g_ptr_array_set_size (found, 0);
      ah__subject_trie_match (trie, subject, found);
      for (guint i = 0; i < G_N_ELEMENTS (patterns); i++)
        {
          gboolean in_trie = g_ptr_array_find (found, patterns[i], NULL);

          if (in_trie != ah_pattern_matches (patterns[i], subject))
            g_test_fail_printf ("trie and ah_pattern_matches disagree on \"%s\" / \"%s\"",
                                patterns[i], subject);
        }
    }

  g_assert_true (ah__subject_trie_remove (trie, "a.>", (gpointer) patterns[2]));
  g_assert_false (ah__subject_trie_remove (trie, "a.>", (gpointer) patterns[2]));
  g_assert_false (ah__subject_trie_remove (trie, "q.r", (gpointer) patterns[2]));
  g_ptr_array_set_size (found, 0);
  ah__subject_trie_match (trie, "a.q.z", found);
  g_assert_cmpuint (found->len, ==, 1);   /* only ">" is left for it */
  g_assert_true (g_ptr_array_index (found, 0) == patterns[4]);

  ah__subject_trie_free (trie);
}

/* ---- Routing --------------------------------------------------------------------------- */

static const AhBusConfig config_one_worker = { .n_workers = 1 };
static const AhBusConfig config_two_workers = { .n_workers = 2 };

static void
test_route_wildcards (Fixture       *fixture,
                      gconstpointer  user_data)
{
  Agent *exact = fixture_add_subscriber (fixture, "orders.eu.created", NULL, NULL);
  Agent *star = fixture_add_subscriber (fixture, "orders.*.created", NULL, NULL);
  Agent *tail = fixture_add_subscriber (fixture, "orders.>", NULL, NULL);
  Agent *twice = fixture_add_agent (fixture, NULL, NULL);
  AhBusGroup *group = ah_bus_group_new (fixture->bus, "twice", AH_DELIVERY_QUEUE);
  g_autoptr(GError) error = NULL;
  guint subscription;

  g_test_summary ("Routing follows the patterns; a group reached by two of its patterns "
                  "gets one copy; unsubscribing takes effect on cached subjects");

  ah_bus_group_add (group, twice->endpoint);
  subscription = ah_bus_subscribe (fixture->bus, "orders.>", group, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ah_bus_subscribe (fixture->bus, "*.eu.*", group, &error), >, 0);
  g_assert_no_error (error);
  ah_bus_start (fixture->bus);

  publish (fixture, "orders.eu.created", "1");
  publish (fixture, "orders.us.created", "2");
  publish (fixture, "orders", "3");
  publish (fixture, "orders.eu.created.late", "4");
  fixture_wait_idle (fixture);

  g_assert_cmpuint (count_received (fixture, exact->id, AH_MESSAGE_PUBLISH), ==, 1);
  g_assert_cmpuint (count_received (fixture, star->id, AH_MESSAGE_PUBLISH), ==, 2);
  g_assert_cmpuint (count_received (fixture, tail->id, AH_MESSAGE_PUBLISH), ==, 3);
  g_assert_cmpuint (count_received (fixture, twice->id, AH_MESSAGE_PUBLISH), ==, 3);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_NO_ROUTE), ==, 1);   /* "orders" */

  /* "orders.eu.created" is cached by now; the change must still show. */
  ah_bus_unsubscribe (fixture->bus, subscription);
  publish (fixture, "orders.eu.created", "5");
  publish (fixture, "orders.us.created", "6");
  fixture_wait_idle (fixture);
  g_assert_cmpuint (count_received (fixture, twice->id, AH_MESSAGE_PUBLISH), ==, 4);
  g_assert_cmpuint (count_received (fixture, tail->id, AH_MESSAGE_PUBLISH), ==, 5);
}

static void
test_route_queue_spread (Fixture       *fixture,
                         gconstpointer  user_data)
{
  AhBusGroup *group = ah_bus_group_new (fixture->bus, "workers", AH_DELIVERY_QUEUE);
  g_autoptr(GError) error = NULL;
  Agent *members[4];

  g_test_summary ("A queue group gives each message to one member, round robin over all");

  for (guint i = 0; i < G_N_ELEMENTS (members); i++)
    {
      members[i] = fixture_add_agent (fixture, NULL, NULL);
      ah_bus_group_add (group, members[i]->endpoint);
    }
  ah_bus_group_add (group, members[0]->endpoint);   /* already in: no second share */
  g_assert_cmpuint (ah_bus_group_get_size (group), ==, 4);
  g_assert_cmpuint (ah_bus_subscribe (fixture->bus, "jobs.*", group, &error), >, 0);
  ah_bus_start (fixture->bus);

  for (guint i = 0; i < 400; i++)
    publish (fixture, "jobs.new", "job");
  fixture_wait_idle (fixture);

  for (guint i = 0; i < G_N_ELEMENTS (members); i++)
    g_assert_cmpuint (count_received (fixture, members[i]->id, AH_MESSAGE_PUBLISH), ==, 100);

  /* A member from the middle: the others must still all get their share. */
  ah_bus_group_remove (group, members[1]->endpoint);
  ah_bus_group_remove (group, members[1]->endpoint);   /* not a member any more: no-op */
  g_assert_cmpuint (ah_bus_group_get_size (group), ==, 3);
  for (guint i = 0; i < 30; i++)
    publish (fixture, "jobs.new", "job");
  fixture_wait_idle (fixture);
  for (guint i = 0; i < G_N_ELEMENTS (members); i++)
    g_assert_cmpuint (count_received (fixture, members[i]->id, AH_MESSAGE_PUBLISH), ==,
                      i == 1 ? 100 : 110);
}

static void
test_route_broadcast_shared (Fixture       *fixture,
                             gconstpointer  user_data)
{
  AhBusGroup *group = ah_bus_group_new (fixture->bus, "all", AH_DELIVERY_BROADCAST);
  g_autoptr(GError) error = NULL;
  AhBusCounters counters;
  Received *first = NULL;

  g_test_summary ("A broadcast group gives every member the message, all sharing one "
                  "payload; one publish to k members is k accepted messages");

  for (guint i = 0; i < 12; i++)
    ah_bus_group_add (group, fixture_add_agent (fixture, NULL, NULL)->endpoint);
  g_assert_cmpuint (ah_bus_subscribe (fixture->bus, "news", group, &error), >, 0);

  /* Before start, so all twelve hold the message at once. */
  publish (fixture, "news", "extra");
  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);

  g_assert_cmpuint (fixture->received->len, ==, 12);
  for (guint i = 0; i < 12; i++)
    {
      Received *received = g_ptr_array_index (fixture->received, i);

      g_assert_cmpmem (g_bytes_get_data (received->payload, NULL),
                       g_bytes_get_size (received->payload), "extra", 5);
      g_assert_cmpint (received->kind, ==, AH_MESSAGE_PUBLISH);
      g_assert_cmpstr (received->subject, ==, "news");
      if (first == NULL)
        first = received;
      else
        g_assert_true (received->data == first->data);   /* not copied per recipient */
    }

  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.published, ==, 1);
  g_assert_cmpuint (counters.accepted, ==, 12);
  g_assert_cmpuint (counters.delivered, ==, 12);
}

static void
test_route_event (Fixture       *fixture,
                  gconstpointer  user_data)
{
  AhBusCounters counters;
  Received *received;

  g_test_summary ("A host event reaches its subscribers at system priority; one nobody "
                  "hears is not a message at all: not accepted, not dead-lettered");

  ah_bus_start (fixture->bus);
  g_assert_false (ah_bus_publish_event (fixture->bus, "$SYS.nobody", "x", 1));
  fixture_wait_idle (fixture);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.published, ==, 0);
  g_assert_cmpuint (counters.accepted, ==, 0);
  g_assert_cmpuint (counters.dead_lettered, ==, 0);
  g_assert_cmpuint (fixture->dead->len, ==, 0);

  fixture_add_subscriber (fixture, "$SYS.agent.>", NULL, NULL);
  g_assert_true (ah_bus_publish_event (fixture->bus, "$SYS.agent.spawned", "id=7", 4));
  fixture_wait_idle (fixture);
  g_assert_cmpuint (fixture->received->len, ==, 1);
  received = g_ptr_array_index (fixture->received, 0);
  g_assert_cmpstr (received->subject, ==, "$SYS.agent.spawned");
  g_assert_cmpint (received->priority, ==, AH_PRIORITY_SYSTEM);
  g_assert_cmpuint (received->sender, ==, AH_AGENT_ID_NONE);
  g_assert_cmpmem (g_bytes_get_data (received->payload, NULL),
                   g_bytes_get_size (received->payload), "id=7", 4);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.accepted, ==, 1);
  g_assert_cmpuint (counters.delivered, ==, 1);

  ah_bus_stop (fixture->bus, WAIT_US);
  g_assert_false (ah_bus_publish_event (fixture->bus, "$SYS.agent.spawned", "", 0));
}

static void
test_route_no_route (Fixture       *fixture,
                     gconstpointer  user_data)
{
  AhBusGroup *empty = ah_bus_group_new (fixture->bus, "empty", AH_DELIVERY_BROADCAST);
  g_autoptr(GError) error = NULL;
  AhBusCounters counters;
  DeadLetter *dead;

  g_test_summary ("A publish that reaches nobody (no subscription, or only empty groups) "
                  "is one accepted message, dead-lettered as no-route");

  g_assert_cmpuint (ah_bus_subscribe (fixture->bus, "void.>", empty, &error), >, 0);
  ah_bus_start (fixture->bus);
  publish (fixture, "nowhere", "x");
  publish (fixture, "void.deep", "y");
  fixture_wait_idle (fixture);

  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.accepted, ==, 2);
  g_assert_cmpuint (counters.dead_lettered, ==, 2);
  g_assert_cmpuint (fixture->dead->len, ==, 2);
  dead = g_ptr_array_index (fixture->dead, 1);
  g_assert_cmpint (dead->reason, ==, AH_DEAD_LETTER_NO_ROUTE);
  g_assert_cmpuint (dead->intended, ==, AH_AGENT_ID_NONE);
  g_assert_cmpstr (dead->subject, ==, "void.deep");
  g_assert_cmpstr (ah_dead_letter_reason_to_string (AH_DEAD_LETTER_NO_ROUTE), ==, "no-route");
}

static void
test_route_invalid (Fixture       *fixture,
                    gconstpointer  user_data)
{
  AhBusGroup *group = ah_bus_group_new (fixture->bus, "g", AH_DELIVERY_QUEUE);
  g_autoptr(GError) error = NULL;
  AhBusCounters counters;

  g_test_summary ("Invalid subjects and patterns are refused with a precise error and "
                  "counted as failed messages");

  g_assert_cmpuint (ah_bus_subscribe (fixture->bus, "a.>.b", group, &error), ==, 0);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT);
  g_assert_cmpstr (error->message, ==, "'a.>.b' is not a valid subject pattern");
  g_clear_error (&error);

  g_assert_cmpuint (ah_bus_subscribe_func (fixture->bus, "", AH_DELIVERY_QUEUE, agent_handle,
                                           NULL, &error), ==, 0);
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT);
  g_clear_error (&error);

  g_assert_false (ah_bus_publish (fixture->bus, AH_AGENT_ID_NONE, "a.*", "x", 1,
                                  AH_PRIORITY_NORMAL, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT);
  g_assert_cmpstr (error->message, ==, "'a.*' is not a valid subject");
  g_clear_error (&error);

  g_assert_false (ah_bus_send (fixture->bus, AH_AGENT_ID_NONE, 1, "bad subject", "x", 1,
                               AH_PRIORITY_NORMAL, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT);
  g_clear_error (&error);

  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.published, ==, 2);
  g_assert_cmpuint (counters.accepted, ==, 2);
  g_assert_cmpuint (counters.failed, ==, 2);
  g_assert_cmpuint (fixture->dead->len, ==, 0);
}

static void
test_route_observer (Fixture       *fixture,
                     gconstpointer  user_data)
{
  Agent *watcher = g_new0 (Agent, 1);
  g_autoptr(GError) error = NULL;
  guint subscription;

  g_test_summary ("An observer function gets matching messages on a worker, like an "
                  "endpoint, until unsubscribed");

  watcher->fixture = fixture;
  g_ptr_array_add (fixture->agents, watcher);
  subscription = ah_bus_subscribe_func (fixture->bus, "log.>", AH_DELIVERY_BROADCAST,
                                        agent_handle, watcher, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (subscription, >, 0);
  ah_bus_start (fixture->bus);

  publish (fixture, "log.info", "a");
  publish (fixture, "log.warn.disk", "b");
  publish (fixture, "metrics", "c");
  fixture_wait_idle (fixture);
  g_assert_cmpuint (watcher->n_received, ==, 2);

  ah_bus_unsubscribe (fixture->bus, subscription);
  ah_bus_unsubscribe (fixture->bus, subscription);   /* unknown now: ignored */
  publish (fixture, "log.info", "d");
  fixture_wait_idle (fixture);
  g_assert_cmpuint (watcher->n_received, ==, 2);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_NO_ROUTE), ==, 2);
}

static const AhBusConfig config_roomy = { .n_workers = 1, .mailbox_capacity = 100000 };
static const AhBusConfig config_roomy_two = { .n_workers = 2, .mailbox_capacity = 100000 };

typedef struct {
  guint n_received;
  char  last_subject[AH_SUBJECT_MAX_LENGTH + 1];
} Tally;

/* Counts without recording: for tests with very many messages. */
static gboolean
tally_handle (AhBusCall               *call,
              const AhMessage * const *messages,
              guint                    n_messages,
              gpointer                 user_data,
              GError                 **error)
{
  Tally *tally = user_data;   /* one endpoint: its handler runs on one thread at a time */

  tally->n_received += n_messages;
  g_strlcpy (tally->last_subject, ah_message_get_subject (messages[n_messages - 1]),
             sizeof tally->last_subject);
  return TRUE;
}

static void
test_route_uncached (Fixture       *fixture,
                     gconstpointer  user_data)
{
  const guint n_subjects = 65536 + 10;   /* past the subject cache's bound */
  Tally tally = { 0 };
  g_autoptr(GError) error = NULL;

  g_test_summary ("Past the subject cache's bound, new subjects are still routed, each "
                  "message keeping its own copy of the subject");

  g_assert_cmpuint (ah_bus_subscribe_func (fixture->bus, "flood.>", AH_DELIVERY_QUEUE,
                                           tally_handle, &tally, &error), >, 0);
  for (guint i = 0; i < n_subjects; i++)
    {
      char subject[32];

      g_snprintf (subject, sizeof subject, "flood.%u", i);
      g_assert_true (ah_bus_publish (fixture->bus, AH_AGENT_ID_NONE, subject, "x", 1,
                                     AH_PRIORITY_NORMAL, NULL));
    }
  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);

  g_assert_cmpuint (tally.n_received, ==, n_subjects);
  g_assert_cmpstr (tally.last_subject, ==, "flood.65545");
}

/* ---- Direct sends ------------------------------------------------------------------------- */

static gboolean
step_forward_direct (Agent           *agent,
                     AhBusCall       *call,
                     const AhMessage *message)
{
  Agent *target = agent->data;

  g_assert_true (ah_bus_call_get_endpoint (call) == agent->endpoint);
  g_assert_true (ah_bus_call_get_bus (call) == agent->fixture->bus);
  g_assert_cmpuint (ah_bus_call_get_worker (call), <, ah_bus_get_config (agent->fixture->bus)->n_workers);
  if (ah_message_get_kind (message) == AH_MESSAGE_DIRECT && target != NULL)
    g_assert_true (ah_bus_call_send (call, target->id, "fwd", "hop", 3));
  return TRUE;
}

static void
test_send_direct (Fixture       *fixture,
                  gconstpointer  user_data)
{
  Agent *last = fixture_add_agent (fixture, NULL, NULL);
  Agent *first = fixture_add_agent (fixture, step_forward_direct, last);
  g_autoptr(GError) error = NULL;
  Received *received;

  g_test_summary ("Direct sends reach the endpoint by id, from outside and from a handler, "
                  "with kind DIRECT and the sender's id");

  g_assert_cmpuint (first->id, !=, AH_AGENT_ID_NONE);
  g_assert_cmpuint (last->id, !=, first->id);
  g_assert_true (ah_endpoint_get_user_data (first->endpoint) == first);
  ah_bus_start (fixture->bus);
  g_assert_true (ah_bus_send (fixture->bus, 77, first->id, "hello", "hi", 2,
                              AH_PRIORITY_NORMAL, &error));
  g_assert_no_error (error);
  fixture_wait_idle (fixture);

  received = get_received (fixture, first->id, AH_MESSAGE_DIRECT);
  g_assert_cmpuint (received->sender, ==, 77);
  g_assert_cmpstr (received->subject, ==, "hello");
  g_assert_cmpint (received->priority, ==, AH_PRIORITY_NORMAL);
  g_assert_cmpuint (received->correlation, ==, 0);
  received = get_received (fixture, last->id, AH_MESSAGE_DIRECT);
  g_assert_cmpuint (received->sender, ==, first->id);
  g_assert_cmpstr (received->subject, ==, "fwd");
  g_assert_cmpmem (g_bytes_get_data (received->payload, NULL),
                   g_bytes_get_size (received->payload), "hop", 3);
}

static void
test_send_unknown (Fixture       *fixture,
                   gconstpointer  user_data)
{
  Agent *gone = fixture_add_agent (fixture, NULL, NULL);
  AhAgentId gone_id = gone->id;
  g_autoptr(GError) error = NULL;
  AhBusCounters counters;
  DeadLetter *dead;

  g_test_summary ("A send to an id that does not exist, or no longer does, is accepted "
                  "and dead-lettered as no-agent, naming the id");

  ah_bus_endpoint_close (fixture->bus, gone->endpoint);
  ah_bus_start (fixture->bus);
  send_to (fixture, 9999, "ping", "?");
  g_assert_true (ah_bus_send (fixture->bus, AH_AGENT_ID_NONE, gone_id, "ping", "", 0,
                              AH_PRIORITY_SYSTEM, &error));
  fixture_wait_idle (fixture);

  g_assert_cmpuint (fixture->dead->len, ==, 2);
  dead = g_ptr_array_index (fixture->dead, 0);
  g_assert_cmpint (dead->reason, ==, AH_DEAD_LETTER_NO_AGENT);
  g_assert_cmpuint (dead->intended, ==, 9999);
  g_assert_cmpint (dead->kind, ==, AH_MESSAGE_DIRECT);
  dead = g_ptr_array_index (fixture->dead, 1);
  g_assert_cmpint (dead->reason, ==, AH_DEAD_LETTER_NO_AGENT);
  g_assert_cmpuint (dead->intended, ==, gone_id);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.accepted, ==, 2);
  g_assert_cmpuint (counters.dead_lettered, ==, 2);
}

/* ---- Request / reply ---------------------------------------------------------------------- */

typedef struct {
  guint    timeout_ms;
  guint    n_replies;      /* how many times the responder answers */
  guint64  correlation;    /* what ah_bus_call_request returned; under the fixture lock */
  guint    n_requests;
  AhMessage *kept;         /* a request the responder holds on to */
  const AhSubject *interned;  /* requests go to it, if set, instead of svc.echo */
} RequestPlan;

static gboolean
step_requester (Agent           *agent,
                AhBusCall       *call,
                const AhMessage *message)
{
  RequestPlan *plan = agent->data;

  if (ah_message_get_kind (message) == AH_MESSAGE_DIRECT
      && strcmp (ah_message_get_subject (message), "go") == 0)
    {
      guint64 correlation = plan->interned != NULL
          ? ah_bus_call_request_interned (call, plan->interned, "question", 8, plan->timeout_ms)
          : ah_bus_call_request (call, "svc.echo", "question", 8, plan->timeout_ms);

      g_assert_cmpuint (correlation, !=, 0);
      pthread_mutex_lock (&agent->fixture->lock);
      plan->correlation = correlation;
      plan->n_requests++;
      pthread_mutex_unlock (&agent->fixture->lock);
    }
  return TRUE;
}

static gboolean
step_responder (Agent           *agent,
                AhBusCall       *call,
                const AhMessage *message)
{
  RequestPlan *plan = agent->data;

  if (ah_message_get_kind (message) == AH_MESSAGE_REQUEST)
    {
      for (guint i = 0; i < plan->n_replies; i++)
        g_assert_true (ah_bus_call_reply (call, message, "answer", 6));
      if (plan->n_replies == 0 && plan->kept == NULL)
        plan->kept = ah__message_ref ((AhMessage *) message);
    }
  else if (ah_message_get_kind (message) == AH_MESSAGE_DIRECT && plan->kept != NULL)
    {
      /* Told to answer now that the requester timed out. */
      g_assert_true (ah_bus_call_reply (call, plan->kept, "too late", 8));
      g_clear_pointer (&plan->kept, ah__message_unref);
    }
  else
    {
      /* A reply to something that is not a request is refused. */
      g_assert_false (ah_bus_call_reply (call, message, "", 0));
    }
  return TRUE;
}

static void
test_request_reply (Fixture       *fixture,
                    gconstpointer  user_data)
{
  RequestPlan plan = { .timeout_ms = 60000, .n_replies = 1 };
  Agent *requester = fixture_add_agent (fixture, step_requester, &plan);
  Agent *responder = fixture_add_subscriber (fixture, "svc.*", step_responder, &plan);
  AhBusCounters counters;
  Received *request, *reply;

  g_test_summary ("A request reaches the responder as REQUEST; its reply comes back to "
                  "the requester as REPLY with the same correlation id");

  ah_bus_start (fixture->bus);
  send_to (fixture, requester->id, "go", "");
  send_to (fixture, responder->id, "noise", "");   /* not a request: no reply possible */
  fixture_wait_idle (fixture);

  request = get_received (fixture, responder->id, AH_MESSAGE_REQUEST);
  g_assert_cmpuint (request->sender, ==, requester->id);
  g_assert_cmpuint (request->correlation, ==, plan.correlation);
  g_assert_cmpstr (request->subject, ==, "svc.echo");
  reply = get_received (fixture, requester->id, AH_MESSAGE_REPLY);
  g_assert_cmpuint (reply->correlation, ==, plan.correlation);
  g_assert_cmpuint (reply->sender, ==, responder->id);
  g_assert_cmpint (reply->priority, ==, AH_PRIORITY_NORMAL);
  g_assert_cmpstr (reply->subject, ==, "svc.echo");
  g_assert_cmpmem (g_bytes_get_data (reply->payload, NULL), g_bytes_get_size (reply->payload),
                   "answer", 6);
  g_assert_cmpuint (count_received (fixture, requester->id, AH_MESSAGE_TIMEOUT), ==, 0);

  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.requests, ==, 1);
  g_assert_cmpuint (counters.request_timeouts, ==, 0);
  g_assert_cmpuint (counters.failed, ==, 1);       /* the reply to "noise" */
  g_assert_true (ah_bus_is_idle (fixture->bus));   /* the request is complete */
}

static void
test_request_timeout (Fixture       *fixture,
                      gconstpointer  user_data)
{
  RequestPlan plan = { .timeout_ms = 30, .n_replies = 0 };
  Agent *requester = fixture_add_agent (fixture, step_requester, &plan);
  AhBusCounters counters;
  Received *timeout;

  g_test_summary ("A request nobody answers brings the requester exactly one TIMEOUT, at "
                  "system priority, with its correlation id; the bus is busy until then");

  fixture_add_subscriber (fixture, "svc.echo", step_responder, &plan);
  ah_bus_start (fixture->bus);
  send_to (fixture, requester->id, "go", "");
  fixture_wait_idle (fixture);

  g_assert_cmpuint (count_received (fixture, requester->id, AH_MESSAGE_TIMEOUT), ==, 1);
  timeout = get_received (fixture, requester->id, AH_MESSAGE_TIMEOUT);
  g_assert_cmpuint (timeout->correlation, ==, plan.correlation);
  g_assert_cmpint (timeout->priority, ==, AH_PRIORITY_SYSTEM);
  g_assert_cmpstr (timeout->subject, ==, "svc.echo");
  g_assert_cmpuint (g_bytes_get_size (timeout->payload), ==, 0);
  g_assert_cmpuint (count_received (fixture, requester->id, AH_MESSAGE_REPLY), ==, 0);

  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.requests, ==, 1);
  g_assert_cmpuint (counters.request_timeouts, ==, 1);
  g_clear_pointer (&plan.kept, ah__message_unref);
}

static void wait_received (Fixture *fixture, Agent *agent, guint n);

/* @late: the timeout comes first, no reply is ever made. */
static void
check_request_requester_closed (Fixture  *fixture,
                                gboolean  late)
{
  /* The close comes microseconds after the request arrives: half a
   * second leaves room for a loaded machine (CI runs the tests under
   * ASan on both CPUs). */
  RequestPlan plan = { .timeout_ms = late ? 500 : 60000, .n_replies = 0 };
  Agent *requester = fixture_add_agent (fixture, step_requester, &plan);
  Agent *responder = fixture_add_subscriber (fixture, "svc.*", step_responder, &plan);
  AhAgentId requester_id = requester->id;
  AhBusCounters counters;
  DeadLetter *dead;

  g_test_summary ("The reply, or the timeout, of a request whose requester closed meanwhile "
                  "is dead-lettered as no-agent, and the request ends");

  ah_bus_start (fixture->bus);
  send_to (fixture, requester_id, "go", "");
  wait_received (fixture, responder, 1);
  ah_bus_endpoint_close (fixture->bus, requester->endpoint);
  if (!late)
    send_to (fixture, responder->id, "answer-now", "");   /* replies with the kept request */
  fixture_wait_idle (fixture);

  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_NO_AGENT), ==, 1);
  dead = g_ptr_array_index (fixture->dead, 0);
  g_assert_cmpint (dead->kind, ==, late ? AH_MESSAGE_TIMEOUT : AH_MESSAGE_REPLY);
  g_assert_cmpuint (dead->intended, ==, requester_id);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.request_timeouts, ==, late ? 1 : 0);
  g_clear_pointer (&plan.kept, ah__message_unref);
}

static void
test_request_requester_closed (Fixture       *fixture,
                               gconstpointer  user_data)
{
  check_request_requester_closed (fixture, FALSE);
}

/* The reply's path differs: under AH_OVERFLOW_FAIL it reserves room at
 * the requester before the request ends, under _BLOCK it does not. */
static const AhBusConfig config_request_block = {
  .n_workers = 2, .overflow = AH_OVERFLOW_BLOCK };

static void
test_request_requester_closed_timeout (Fixture       *fixture,
                                       gconstpointer  user_data)
{
  check_request_requester_closed (fixture, TRUE);
}

static void
test_request_pending_blocks_idle (Fixture       *fixture,
                                  gconstpointer  user_data)
{
  RequestPlan plan = { .timeout_ms = 60000, .n_replies = 0 };
  Agent *requester = fixture_add_agent (fixture, step_requester, &plan);

  g_test_summary ("A pending request keeps the bus from being idle; stopping cancels it");

  fixture_add_subscriber (fixture, "svc.echo", step_responder, &plan);
  ah_bus_start (fixture->bus);
  send_to (fixture, requester->id, "go", "");
  g_assert_false (ah_bus_wait_idle (fixture->bus, 50 * 1000));
  g_assert_false (ah_bus_is_idle (fixture->bus));

  ah_bus_stop (fixture->bus, 0);
  g_assert_true (ah_bus_is_idle (fixture->bus));
  g_assert_cmpuint (count_received (fixture, requester->id, AH_MESSAGE_TIMEOUT), ==, 0);
  g_clear_pointer (&plan.kept, ah__message_unref);
}

static void
test_request_no_responders (Fixture       *fixture,
                            gconstpointer  user_data)
{
  RequestPlan plan = { .timeout_ms = 60000 };
  Agent *requester = fixture_add_agent (fixture, step_requester, &plan);
  Received *outcome;
  DeadLetter *dead;

  g_test_summary ("A request routed to nobody is dead-lettered (no-route) and the requester "
                  "gets NO_RESPONDERS at once, not after the timeout");

  ah_bus_start (fixture->bus);
  send_to (fixture, requester->id, "go", "");
  fixture_wait_idle (fixture);   /* would take 60 s if the request stayed pending */

  outcome = get_received (fixture, requester->id, AH_MESSAGE_NO_RESPONDERS);
  g_assert_cmpuint (outcome->correlation, ==, plan.correlation);
  g_assert_cmpint (outcome->priority, ==, AH_PRIORITY_SYSTEM);
  g_assert_cmpstr (outcome->subject, ==, "svc.echo");
  g_assert_cmpuint (fixture->dead->len, ==, 1);
  dead = g_ptr_array_index (fixture->dead, 0);
  g_assert_cmpint (dead->reason, ==, AH_DEAD_LETTER_NO_ROUTE);
  g_assert_cmpint (dead->kind, ==, AH_MESSAGE_REQUEST);
}

/* Through a handle interned before anyone subscribed: the entry's
 * routes are out of date by the time of the request, and the request
 * must still find the responder that subscribed since. */
static void
test_request_interned (Fixture       *fixture,
                       gconstpointer  user_data)
{
  RequestPlan plan = { .timeout_ms = 60000, .n_replies = 1 };
  RequestPlan nobody = { .timeout_ms = 60000 };
  g_autoptr(GError) error = NULL;
  Agent *requester, *responder, *lonely;
  AhBusCounters counters;
  Received *request, *reply, *outcome;

  g_test_summary ("ah_bus_call_request_interned routes as ah_bus_call_request does: a reply "
                  "through a handle interned before the subscription, NO_RESPONDERS "
                  "through one nobody subscribes to");

  plan.interned = ah_bus_intern_subject (fixture->bus, "svc.echo", &error);
  g_assert_no_error (error);
  nobody.interned = ah_bus_intern_subject (fixture->bus, "svc.nobody", &error);
  g_assert_no_error (error);
  requester = fixture_add_agent (fixture, step_requester, &plan);
  responder = fixture_add_subscriber (fixture, "svc.echo", step_responder, &plan);
  lonely = fixture_add_agent (fixture, step_requester, &nobody);

  ah_bus_start (fixture->bus);
  send_to (fixture, requester->id, "go", "");
  send_to (fixture, lonely->id, "go", "");
  fixture_wait_idle (fixture);

  request = get_received (fixture, responder->id, AH_MESSAGE_REQUEST);
  g_assert_cmpuint (request->sender, ==, requester->id);
  g_assert_cmpuint (request->correlation, ==, plan.correlation);
  g_assert_cmpstr (request->subject, ==, "svc.echo");
  reply = get_received (fixture, requester->id, AH_MESSAGE_REPLY);
  g_assert_cmpuint (reply->correlation, ==, plan.correlation);
  g_assert_cmpmem (g_bytes_get_data (reply->payload, NULL), g_bytes_get_size (reply->payload),
                   "answer", 6);
  outcome = get_received (fixture, lonely->id, AH_MESSAGE_NO_RESPONDERS);
  g_assert_cmpuint (outcome->correlation, ==, nobody.correlation);
  g_assert_cmpstr (outcome->subject, ==, "svc.nobody");

  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.requests, ==, 2);
  g_assert_cmpuint (counters.request_timeouts, ==, 0);
  g_assert_cmpuint (counters.dead_lettered, ==, 1);   /* the request to nobody */
  g_assert_true (ah_bus_is_idle (fixture->bus));
}

static gboolean
step_requester_then_poke (Agent           *agent,
                          AhBusCall       *call,
                          const AhMessage *message)
{
  Agent *responder = g_ptr_array_index (agent->fixture->agents, 1);

  step_requester (agent, call, message);
  /* Once timed out, tell the responder to answer after all. */
  if (ah_message_get_kind (message) == AH_MESSAGE_TIMEOUT)
    g_assert_true (ah_bus_call_send (call, responder->id, "answer-now", "", 0));
  return TRUE;
}

static void
test_request_late_reply (Fixture       *fixture,
                         gconstpointer  user_data)
{
  RequestPlan twice = { .timeout_ms = 60000, .n_replies = 2 };
  RequestPlan after = { .timeout_ms = 20, .n_replies = 0 };
  Agent *requester = fixture_add_agent (fixture, step_requester, &twice);
  Agent *responder = fixture_add_subscriber (fixture, "svc.echo", step_responder, &twice);

  g_test_summary ("Only the first reply is delivered; a second one, and one after the "
                  "timeout, are dead-lettered as late replies");

  ah_bus_start (fixture->bus);
  send_to (fixture, requester->id, "go", "");
  fixture_wait_idle (fixture);
  g_assert_cmpuint (count_received (fixture, requester->id, AH_MESSAGE_REPLY), ==, 1);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_LATE_REPLY), ==, 1);

  /* Same agents, new plan: no answer until the TIMEOUT has arrived. */
  requester->step = step_requester_then_poke;
  requester->data = &after;
  responder->data = &after;
  send_to (fixture, requester->id, "go", "");
  fixture_wait_idle (fixture);
  g_assert_cmpuint (count_received (fixture, requester->id, AH_MESSAGE_TIMEOUT), ==, 1);
  g_assert_cmpuint (count_received (fixture, requester->id, AH_MESSAGE_REPLY), ==, 1);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_LATE_REPLY), ==, 2);
  g_assert_null (after.kept);
}

/* The requester of /bus/request/slot-reused: a first request that
 * times out, then a second one, which takes the first one's place in the
 * bus's table of pending requests. */
typedef struct {
  guint64    first;
  guint64    second;
  AhMessage *kept;     /* the first request, held by the responder */
} SlotPlan;

static gboolean
step_slot_requester (Agent           *agent,
                     AhBusCall       *call,
                     const AhMessage *message)
{
  SlotPlan *plan = agent->data;
  AhMessageKind kind = ah_message_get_kind (message);

  if (kind == AH_MESSAGE_DIRECT)
    plan->first = ah_bus_call_request (call, "svc.slot", "first", 5, 20);
  else if (kind == AH_MESSAGE_TIMEOUT)
    plan->second = ah_bus_call_request (call, "svc.slot", "second", 6, 60000);
  return TRUE;
}

static gboolean
step_slot_responder (Agent           *agent,
                     AhBusCall       *call,
                     const AhMessage *message)
{
  SlotPlan *plan = agent->data;
  gsize size;
  const char *data = ah_message_get_data (message, &size);

  if (ah_message_get_kind (message) != AH_MESSAGE_REQUEST)
    return TRUE;
  if (size == 5)
    {
      plan->kept = ah__message_ref ((AhMessage *) message);
      return TRUE;
    }
  g_assert_cmpmem (data, size, "second", 6);
  /* The first request's reply, late, while the second one holds its
   * place: it must not complete the second. */
  g_assert_true (ah_bus_call_reply (call, plan->kept, "late", 4));
  g_clear_pointer (&plan->kept, ah__message_unref);
  g_assert_true (ah_bus_call_reply (call, message, "answer", 6));
  return TRUE;
}

static void
test_request_slot_reused (Fixture       *fixture,
                          gconstpointer  user_data)
{
  SlotPlan plan = { 0 };
  Agent *requester = fixture_add_agent (fixture, step_slot_requester, &plan);
  AhBusCounters counters;
  Received *reply;

  g_test_summary ("A late reply to a request whose place a newer request took is "
                  "dead-lettered as late and leaves the newer one pending");

  fixture_add_subscriber (fixture, "svc.slot", step_slot_responder, &plan);
  ah_bus_start (fixture->bus);
  send_to (fixture, requester->id, "go", "");
  fixture_wait_idle (fixture);

  g_assert_cmpuint (plan.first, !=, 0);
  g_assert_cmpuint (plan.second, !=, 0);
  g_assert_cmpuint (count_received (fixture, requester->id, AH_MESSAGE_TIMEOUT), ==, 1);
  g_assert_cmpuint (get_received (fixture, requester->id, AH_MESSAGE_TIMEOUT)->correlation, ==,
                    plan.first);
  g_assert_cmpuint (count_received (fixture, requester->id, AH_MESSAGE_REPLY), ==, 1);
  reply = get_received (fixture, requester->id, AH_MESSAGE_REPLY);
  g_assert_cmpuint (reply->correlation, ==, plan.second);
  g_assert_cmpmem (g_bytes_get_data (reply->payload, NULL), g_bytes_get_size (reply->payload),
                   "answer", 6);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_LATE_REPLY), ==, 1);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.requests, ==, 2);
  g_assert_cmpuint (counters.request_timeouts, ==, 1);
  g_assert_null (plan.kept);
}

static gboolean
step_fill_then_reply (Agent           *agent,
                      AhBusCall       *call,
                      const AhMessage *message)
{
  if (ah_message_get_kind (message) != AH_MESSAGE_REQUEST)
    return TRUE;
  /* Takes the requester's only slot, so the reply finds no room. */
  g_assert_true (ah_bus_call_send (call, ah_message_get_sender (message), "fill", "", 0));
  g_assert_false (ah_bus_call_reply (call, message, "answer", 6));
  return TRUE;
}

static const AhBusConfig config_fail_tiny = {
  .n_workers = 1, .mailbox_capacity = 1, .overflow = AH_OVERFLOW_FAIL };

static void
test_request_reply_refused (Fixture       *fixture,
                            gconstpointer  user_data)
{
  RequestPlan plan = { .timeout_ms = 30 };
  Agent *requester = fixture_add_agent (fixture, step_requester, &plan);
  DeadLetter *dead;

  g_test_summary ("A reply refused by a full mailbox leaves the request pending, so the "
                  "requester still gets exactly one outcome: its TIMEOUT");

  fixture_add_subscriber (fixture, "svc.echo", step_fill_then_reply, NULL);
  ah_bus_start (fixture->bus);
  send_to (fixture, requester->id, "go", "");
  fixture_wait_idle (fixture);

  g_assert_cmpuint (count_received (fixture, requester->id, AH_MESSAGE_REPLY), ==, 0);
  g_assert_cmpuint (count_received (fixture, requester->id, AH_MESSAGE_TIMEOUT), ==, 1);
  g_assert_cmpuint (get_received (fixture, requester->id, AH_MESSAGE_TIMEOUT)->correlation, ==,
                    plan.correlation);
  g_assert_cmpuint (fixture->dead->len, ==, 1);
  dead = g_ptr_array_index (fixture->dead, 0);
  g_assert_cmpint (dead->reason, ==, AH_DEAD_LETTER_OVERFLOW);
  g_assert_cmpint (dead->kind, ==, AH_MESSAGE_REPLY);
  g_assert_cmpuint (dead->intended, ==, requester->id);
}

/* ---- Order, priority, batches ---------------------------------------------------------------- */

typedef struct {
  Agent  *target;
  guint   n_messages;
  guint   slot;
} Burst;

static gboolean
step_send_burst (Agent           *agent,
                 AhBusCall       *call,
                 const AhMessage *message)
{
  Burst *burst = agent->data;

  if (ah_message_get_kind (message) != AH_MESSAGE_DIRECT
      || strcmp (ah_message_get_subject (message), "go") != 0)
    return TRUE;
  for (guint i = 1; i <= burst->n_messages; i++)
    {
      Sequenced sequenced = { burst->slot, i };

      g_assert_true (ah_bus_call_send (call, burst->target->id, "seq", &sequenced,
                                       sizeof sequenced));
    }
  return TRUE;
}

typedef struct {
  Fixture *fixture;
  Agent   *target;
  guint    slot;
  guint    n_messages;
} ExternalSender;

static gpointer
external_sender_main (gpointer data)
{
  ExternalSender *sender = data;

  for (guint i = 1; i <= sender->n_messages; i++)
    {
      Sequenced sequenced = { sender->slot, i };
      g_autoptr(GError) error = NULL;

      g_assert_true (ah_bus_send (sender->fixture->bus, 1000 + sender->slot, sender->target->id,
                                  "seq", &sequenced, sizeof sequenced, AH_PRIORITY_NORMAL,
                                  &error));
      g_assert_no_error (error);
    }
  return NULL;
}

static const AhBusConfig config_order_fail = {
  .n_workers = 2, .publish_batch = 16, .handler_batch = 7, .mailbox_capacity = 100000,
  .overflow = AH_OVERFLOW_FAIL };
static const AhBusConfig config_order_block = {
  .n_workers = 2, .publish_batch = 16, .handler_batch = 7, .mailbox_capacity = 8,
  .overflow = AH_OVERFLOW_BLOCK };

static void
test_order_per_sender (Fixture       *fixture,
                       gconstpointer  user_data)
{
  const guint n_messages = 3000;
  Agent *consumer = fixture_add_agent (fixture, step_check_sequence, NULL);
  Burst burst_a, burst_b;
  Agent *producer_a = fixture_add_agent (fixture, step_send_burst, &burst_a);
  Agent *producer_b = fixture_add_agent (fixture, step_send_burst, &burst_b);
  ExternalSender external = { fixture, consumer, 2, n_messages };
  pthread_t thread;

  g_test_summary ("Messages from one sender to one endpoint arrive in order, across "
                  "outbox flushes, workers and backpressure, with other senders interleaved");

  burst_a = (Burst) { consumer, n_messages, 0 };
  burst_b = (Burst) { consumer, n_messages, 1 };
  ah_bus_start (fixture->bus);
  send_to (fixture, producer_a->id, "go", "");
  send_to (fixture, producer_b->id, "go", "");
  g_assert_cmpint (pthread_create (&thread, NULL, external_sender_main, &external), ==, 0);
  pthread_join (thread, NULL);
  fixture_wait_idle (fixture);

  g_assert_cmpuint (consumer->n_received, ==, 3 * n_messages);
  g_assert_false (consumer->out_of_order);
  for (guint slot = 0; slot < 3; slot++)
    g_assert_cmpuint (consumer->last_sequence[slot], ==, n_messages);
  g_assert_cmpuint (consumer->max_batch, <=, 7);
}

static void
test_priority_system_first (Fixture       *fixture,
                            gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, NULL, NULL);
  g_autoptr(GError) error = NULL;

  g_test_summary ("System messages overtake a backlog of normal ones; each lane stays FIFO");

  for (guint i = 0; i < 10; i++)
    {
      g_autofree char *text = g_strdup_printf ("n%u", i);

      send_to (fixture, agent->id, "work", text);
    }
  g_assert_true (ah_bus_send (fixture->bus, AH_AGENT_ID_NONE, agent->id, "ctl", "s0", 2,
                              AH_PRIORITY_SYSTEM, &error));
  g_assert_true (ah_bus_send (fixture->bus, AH_AGENT_ID_NONE, agent->id, "ctl", "s1", 2,
                              AH_PRIORITY_SYSTEM, &error));
  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);

  g_assert_cmpuint (fixture->received->len, ==, 12);
  for (guint i = 0; i < 12; i++)
    {
      Received *received = g_ptr_array_index (fixture->received, i);
      g_autofree char *expected = i < 2 ? g_strdup_printf ("s%u", i)
                                        : g_strdup_printf ("n%u", i - 2);

      g_assert_cmpmem (g_bytes_get_data (received->payload, NULL),
                       g_bytes_get_size (received->payload), expected, strlen (expected));
      g_assert_cmpint (received->priority, ==, i < 2 ? AH_PRIORITY_SYSTEM : AH_PRIORITY_NORMAL);
    }
}

static const AhBusConfig config_small_batches = { .n_workers = 1, .handler_batch = 8 };

static void
test_batch_limit (Fixture       *fixture,
                  gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, NULL, NULL);
  AhBusCounters counters;

  g_test_summary ("A handler never gets more than handler_batch messages; a backlog is "
                  "split into full batches");

  for (guint i = 0; i < 100; i++)
    send_to (fixture, agent->id, "work", "x");
  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);

  g_assert_cmpuint (agent->n_received, ==, 100);
  g_assert_cmpuint (agent->max_batch, ==, 8);
  g_assert_cmpuint (agent->n_calls, ==, 13);   /* 12 full batches and the last 4 */
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.batches, ==, 13);
  g_assert_cmpuint (counters.delivered, ==, 100);
  g_assert_cmpuint (counters.n_workers, ==, 1);
  g_assert_cmpfloat (counters.latency_p50_us, >, 0);
  g_assert_cmpfloat (counters.latency_p50_us, <=, counters.latency_p95_us);
  g_assert_cmpfloat (counters.latency_p95_us, <=, counters.latency_p99_us);
  g_assert_cmpfloat (counters.latency_p99_us, <=, counters.latency_max_us);
}

typedef struct {
  Agent   *consumer;
  gboolean seen_mid_call;   /* under the fixture lock */
} FlushPlan;

static gboolean
step_publish_and_watch (Agent           *agent,
                        AhBusCall       *call,
                        const AhMessage *message)
{
  FlushPlan *plan = agent->data;
  Fixture *fixture = agent->fixture;
  gint64 deadline = deadline_in_us (WAIT_US);

  if (ah_message_get_kind (message) != AH_MESSAGE_DIRECT)
    return TRUE;

  for (guint i = 0; i < 4; i++)
    g_assert_true (ah_bus_call_publish (call, "out", "x", 1));

  /* publish_batch is 4: those four must reach the consumer, on the
   * other worker, while this handler is still running. */
  pthread_mutex_lock (&fixture->lock);
  while (plan->consumer->n_received < 4)
    if (!fixture_wait_until (fixture, deadline))
      break;
  plan->seen_mid_call = plan->consumer->n_received == 4;
  pthread_mutex_unlock (&fixture->lock);

  for (guint i = 0; i < 3; i++)
    g_assert_true (ah_bus_call_publish (call, "out", "y", 1));
  return TRUE;
}

static const AhBusConfig config_flush = { .n_workers = 2, .publish_batch = 4 };

static void
test_outbox_flush_mid_call (Fixture       *fixture,
                            gconstpointer  user_data)
{
  FlushPlan plan = { 0 };
  Agent *producer = fixture_add_agent (fixture, step_publish_and_watch, &plan);

  g_test_summary ("The outbox is flushed during the call when it holds publish_batch "
                  "messages, and the rest when the handler returns");

  plan.consumer = fixture_add_subscriber (fixture, "out", NULL, NULL);
  /* Round robin over two workers: consecutive ids are on different ones. */
  g_assert_cmpuint (producer->id % 2, !=, plan.consumer->id % 2);
  ah_bus_start (fixture->bus);
  send_to (fixture, producer->id, "go", "");
  fixture_wait_idle (fixture);

  g_assert_true (plan.seen_mid_call);
  g_assert_cmpuint (plan.consumer->n_received, ==, 7);
}

/* ---- Overflow ----------------------------------------------------------------------------------- */

static const AhBusConfig config_fail_small = {
  .n_workers = 1, .mailbox_capacity = 4, .overflow = AH_OVERFLOW_FAIL };

static gboolean
step_send_over_capacity (Agent           *agent,
                         AhBusCall       *call,
                         const AhMessage *message)
{
  Agent *target = agent->data;

  if (strcmp (ah_message_get_subject (message), "go") != 0)
    return TRUE;
  for (guint i = 0; i < 4; i++)
    g_assert_true (ah_bus_call_send (call, target->id, "fill", "", 0));
  /* The four are only reserved, not queued yet, and still count. */
  g_assert_false (ah_bus_call_send (call, target->id, "fill", "", 0));
  g_assert_cmpuint (ah_bus_call_request (call, "full.one", "", 0, 1000), ==, 0);
  return TRUE;
}

static void
test_overflow_fail (Fixture       *fixture,
                    gconstpointer  user_data)
{
  AhBusGroup *group = ah_bus_group_new (fixture->bus, "pair", AH_DELIVERY_BROADCAST);
  Agent *full = fixture_add_agent (fixture, NULL, NULL);
  Agent *roomy = fixture_add_agent (fixture, NULL, NULL);
  Agent *target = fixture_add_subscriber (fixture, "full.one", NULL, NULL);
  Agent *sender = fixture_add_agent (fixture, step_send_over_capacity, target);
  g_autoptr(GError) error = NULL;
  g_autofree char *expected = NULL;
  AhBusCounters counters;

  g_test_summary ("Under the fail policy a full mailbox refuses the message: the publish "
                  "returns FALSE, the message is failed and dead-lettered as overflow, and "
                  "broadcast recipients with room still get it");

  ah_bus_group_add (group, full->endpoint);
  ah_bus_group_add (group, roomy->endpoint);
  g_assert_cmpuint (ah_bus_subscribe (fixture->bus, "pair", group, &error), >, 0);
  for (guint i = 0; i < 4; i++)
    send_to (fixture, full->id, "fill", "");

  g_assert_false (ah_bus_publish (fixture->bus, AH_AGENT_ID_NONE, "pair", "p", 1,
                                  AH_PRIORITY_NORMAL, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_OVERFLOW);
  expected = g_strdup_printf ("the mailbox of agent %" G_GUINT64_FORMAT " is full", full->id);
  g_assert_cmpstr (error->message, ==, expected);
  g_clear_error (&error);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_OVERFLOW), ==, 1);
  g_assert_cmpuint (((DeadLetter *) g_ptr_array_index (fixture->dead, 0))->intended, ==, full->id);

  /* System messages are never refused. */
  g_assert_true (ah_bus_send (fixture->bus, AH_AGENT_ID_NONE, full->id, "ctl", "", 0,
                              AH_PRIORITY_SYSTEM, &error));

  ah_bus_start (fixture->bus);
  send_to (fixture, sender->id, "go", "");
  fixture_wait_idle (fixture);

  g_assert_cmpuint (count_received (fixture, full->id, AH_MESSAGE_DIRECT), ==, 5);
  g_assert_cmpuint (count_received (fixture, roomy->id, AH_MESSAGE_PUBLISH), ==, 1);
  g_assert_cmpuint (count_received (fixture, target->id, AH_MESSAGE_DIRECT), ==, 4);
  g_assert_cmpuint (count_received (fixture, target->id, AH_MESSAGE_REQUEST), ==, 0);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_OVERFLOW), ==, 3);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.failed, ==, 3);
  g_assert_cmpuint (counters.requests, ==, 0);
}

static const AhBusConfig config_block_small = {
  .n_workers = 2, .mailbox_capacity = 4, .publish_batch = 8, .overflow = AH_OVERFLOW_BLOCK };

typedef struct {
  Fixture *fixture;
  Agent   *target;
  guint    n_messages;
  gboolean done;    /* under the fixture lock */
  GError  *error;
} BlockedPublisher;

static gpointer
blocked_publisher_main (gpointer data)
{
  BlockedPublisher *publisher = data;
  Fixture *fixture = publisher->fixture;

  for (guint i = 1; i <= publisher->n_messages; i++)
    {
      Sequenced sequenced = { 0, i };
      g_autoptr(GError) error = NULL;

      g_assert_true (ah_bus_send (fixture->bus, 5, publisher->target->id, "seq", &sequenced,
                                  sizeof sequenced, AH_PRIORITY_NORMAL, &error));
      g_assert_no_error (error);
    }
  pthread_mutex_lock (&fixture->lock);
  publisher->done = TRUE;
  pthread_cond_broadcast (&fixture->cond);
  pthread_mutex_unlock (&fixture->lock);
  return NULL;
}

/* Sends until a send fails, keeping the error. */
static gpointer
blocked_stop_publisher_main (gpointer data)
{
  BlockedPublisher *publisher = data;
  Fixture *fixture = publisher->fixture;
  GError *error = NULL;

  for (guint i = 1; i <= publisher->n_messages && error == NULL; i++)
    {
      Sequenced sequenced = { 0, i };

      ah_bus_send (fixture->bus, 5, publisher->target->id, "seq", &sequenced,
                   sizeof sequenced, AH_PRIORITY_NORMAL, &error);
    }
  pthread_mutex_lock (&fixture->lock);
  publisher->error = error;
  publisher->done = TRUE;
  pthread_cond_broadcast (&fixture->cond);
  pthread_mutex_unlock (&fixture->lock);
  return NULL;
}

static void
test_overflow_block_external (Fixture       *fixture,
                              gconstpointer  user_data)
{
  Agent *consumer = fixture_add_agent (fixture, step_check_sequence, NULL);
  BlockedPublisher publisher = { fixture, consumer, 200, FALSE, NULL };
  gint64 deadline = deadline_in_us (100 * 1000);
  pthread_t thread;
  gboolean done_early;

  g_test_summary ("Under the block policy an outside publisher waits for room in a full "
                  "mailbox, then completes; nothing is lost and the order holds");

  /* Workers not started: the mailbox fills after 4 and the thread waits. */
  g_assert_cmpint (pthread_create (&thread, NULL, blocked_publisher_main, &publisher), ==, 0);
  pthread_mutex_lock (&fixture->lock);
  while (!publisher.done)
    if (!fixture_wait_until (fixture, deadline))
      break;
  done_early = publisher.done;
  pthread_mutex_unlock (&fixture->lock);
  g_assert_false (done_early);

  ah_bus_start (fixture->bus);
  pthread_join (thread, NULL);
  fixture_wait_idle (fixture);

  g_assert_true (publisher.done);
  g_assert_cmpuint (consumer->n_received, ==, 200);
  g_assert_false (consumer->out_of_order);
  g_assert_cmpuint (consumer->last_sequence[0], ==, 200);
  g_assert_cmpuint (fixture->dead->len, ==, 0);
}

static gboolean
step_send_to_self (Agent           *agent,
                   AhBusCall       *call,
                   const AhMessage *message)
{
  if (strcmp (ah_message_get_subject (message), "go") == 0)
    for (guint i = 0; i < 20; i++)
      g_assert_true (ah_bus_call_send (call, agent->id, "self", "", 0));
  return TRUE;
}

typedef struct {
  Agent   *target;
  gboolean refused;
  GError  *error;
} OutsideSend;

static gboolean
step_send_outside_call (Agent           *agent,
                        AhBusCall       *call,
                        const AhMessage *message)
{
  OutsideSend *plan = agent->data;

  /* The host API from a worker thread, into a full mailbox: it must not
   * wait, since this very worker is the one to make room. */
  plan->refused = !ah_bus_send (agent->fixture->bus, agent->id, plan->target->id, "x", "", 0,
                                AH_PRIORITY_NORMAL, &plan->error);
  return TRUE;
}

static const AhBusConfig config_block_one_worker = {
  .n_workers = 1, .mailbox_capacity = 4, .overflow = AH_OVERFLOW_BLOCK };

static void
test_overflow_block_on_worker (Fixture       *fixture,
                               gconstpointer  user_data)
{
  OutsideSend plan = { 0 };
  Agent *sender = fixture_add_agent (fixture, step_send_outside_call, &plan);

  g_test_summary ("Under the block policy, ah_bus_send() called on a worker thread refuses "
                  "a full mailbox instead of waiting for itself");

  plan.target = fixture_add_agent (fixture, NULL, NULL);
  send_to (fixture, sender->id, "go", "");   /* runs first: its turn comes first */
  for (guint i = 0; i < 4; i++)
    send_to (fixture, plan.target->id, "fill", "");
  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);

  g_assert_true (plan.refused);
  g_assert_error (plan.error, AH_HOST_ERROR, AH_HOST_ERROR_OVERFLOW);
  g_clear_error (&plan.error);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_OVERFLOW), ==, 1);
  g_assert_cmpuint (count_received (fixture, plan.target->id, AH_MESSAGE_DIRECT), ==, 4);
}

static void
test_overflow_block_handler (Fixture       *fixture,
                             gconstpointer  user_data)
{
  const guint n_messages = 500;
  Agent *consumer = fixture_add_agent (fixture, step_check_sequence, NULL);
  Burst burst = { consumer, n_messages, 0 };
  Agent *producer = fixture_add_agent (fixture, step_send_burst, &burst);
  Agent *local_consumer = fixture_add_agent (fixture, step_check_sequence, NULL);
  Agent *loner = fixture_add_agent (fixture, step_send_to_self, NULL);
  Burst local_burst = { local_consumer, n_messages, 1 };
  Agent *local_producer = fixture_add_agent (fixture, step_send_burst, &local_burst);

  g_test_summary ("Under the block policy a handler is never blocked: what meets a full "
                  "mailbox waits in order and is retried as room appears; nothing is lost, "
                  "also for an endpoint filling its own mailbox");

  /* Round robin over 2 workers: consumer 0, producer 1, local_consumer 0,
   * loner 1, local_producer 0: one pair across workers, one on the same. */
  g_assert_cmpuint (consumer->id % 2, !=, producer->id % 2);
  g_assert_cmpuint (local_consumer->id % 2, ==, local_producer->id % 2);
  ah_bus_start (fixture->bus);
  send_to (fixture, producer->id, "go", "");
  send_to (fixture, local_producer->id, "go", "");
  send_to (fixture, loner->id, "go", "");
  fixture_wait_idle (fixture);

  g_assert_cmpuint (consumer->n_received, ==, n_messages);
  g_assert_false (consumer->out_of_order);
  g_assert_cmpuint (local_consumer->n_received, ==, n_messages);
  g_assert_false (local_consumer->out_of_order);
  g_assert_cmpuint (loner->n_received, ==, 21);
  g_assert_cmpuint (fixture->dead->len, ==, 0);
}

/* ---- Failure, close, stop, idle ------------------------------------------------------------- */

static gboolean
step_fail_on_bad (Agent           *agent,
                  AhBusCall       *call,
                  const AhMessage *message)
{
  gsize size;
  const char *data = ah_message_get_data (message, &size);

  g_assert_cmpint (data[size], ==, '\0');   /* the convenience NUL */
  if (strcmp (data, "bad") != 0)
    return TRUE;
  /* Published before failing: accepted, so still delivered. */
  g_assert_true (ah_bus_call_publish (call, "aftermath", "x", 1));
  return FALSE;
}

static void
test_handler_failure (Fixture       *fixture,
                      gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, step_fail_on_bad, NULL);
  Agent *observer = fixture_add_subscriber (fixture, "aftermath", NULL, NULL);
  AhBusCounters counters;

  g_test_summary ("A handler returning FALSE fails its whole batch (each message dead-"
                  "lettered as handler-failed); what it published is still delivered");

  send_to (fixture, agent->id, "work", "ok");
  send_to (fixture, agent->id, "work", "bad");
  send_to (fixture, agent->id, "work", "ok");
  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);

  g_assert_cmpuint (agent->n_calls, ==, 1);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_HANDLER_FAILED), ==, 3);
  g_assert_cmpuint (count_received (fixture, observer->id, AH_MESSAGE_PUBLISH), ==, 1);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.failed, ==, 3);
  g_assert_cmpuint (counters.delivered, ==, 1);
}

/* Fails every message it gets the first time, asking the bus to
 * deliver it once more (through the group in agent->data, if any). */
static gboolean
step_fail_and_retry (Agent           *agent,
                     AhBusCall       *call,
                     const AhMessage *message)
{
  if (ah_message_is_redelivered (message))
    return TRUE;
  g_assert_true (ah_bus_call_retry (call, message, agent->data));
  return FALSE;
}

/* Fails every message, first and second delivery alike. */
static gboolean
step_always_fail (Agent           *agent,
                  AhBusCall       *call,
                  const AhMessage *message)
{
  /* The bus refuses a third delivery: the message is dead-lettered. */
  g_assert_true (ah_bus_call_retry (call, message, NULL) == !ah_message_is_redelivered (message));
  return FALSE;
}

static guint
count_redelivered (Fixture   *fixture,
                   AhAgentId  to)
{
  guint n = 0;

  pthread_mutex_lock (&fixture->lock);
  for (guint i = 0; i < fixture->received->len; i++)
    {
      Received *received = g_ptr_array_index (fixture->received, i);

      n += received->to == to && received->redelivered;
    }
  pthread_mutex_unlock (&fixture->lock);
  return n;
}

static void
test_retry_other_member (Fixture       *fixture,
                         gconstpointer  user_data)
{
  AhBusGroup *group = ah_bus_group_new (fixture->bus, "workers", AH_DELIVERY_QUEUE);
  Agent *failing = fixture_add_agent (fixture, step_fail_and_retry, group);
  Agent *healthy = fixture_add_agent (fixture, NULL, NULL);
  AhBusCounters counters;

  g_test_summary ("A failed batch's messages retried through a group go to another member, "
                  "flagged redelivered, accepted once and delivered once");

  ah_bus_group_add (group, failing->endpoint);
  ah_bus_group_add (group, healthy->endpoint);
  send_to (fixture, failing->id, "work", "one");
  send_to (fixture, failing->id, "work", "two");
  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);

  g_assert_cmpuint (count_received (fixture, failing->id, AH_MESSAGE_DIRECT), ==, 2);
  g_assert_cmpuint (count_received (fixture, healthy->id, AH_MESSAGE_DIRECT), ==, 2);
  g_assert_cmpuint (count_redelivered (fixture, healthy->id), ==, 2);
  g_assert_cmpuint (count_redelivered (fixture, failing->id), ==, 0);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.accepted, ==, 2);
  g_assert_cmpuint (counters.delivered, ==, 2);
  g_assert_cmpuint (counters.failed, ==, 0);
  g_assert_cmpuint (counters.retried, ==, 2);
}

static void
test_retry_same_endpoint (Fixture       *fixture,
                          gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, step_fail_and_retry, NULL);
  AhBusCounters counters;

  g_test_summary ("Without a group, a retried message comes back to the same endpoint, "
                  "in its order");

  send_to (fixture, agent->id, "work", "one");
  send_to (fixture, agent->id, "work", "two");
  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);

  g_assert_cmpuint (count_received (fixture, agent->id, AH_MESSAGE_DIRECT), ==, 4);
  g_assert_cmpuint (count_redelivered (fixture, agent->id), ==, 2);
  g_assert_cmpmem (g_bytes_get_data (((Received *) fixture->received->pdata[2])->payload, NULL),
                   3, "one", 3);
  g_assert_cmpmem (g_bytes_get_data (((Received *) fixture->received->pdata[3])->payload, NULL),
                   3, "two", 3);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.accepted, ==, 2);
  g_assert_cmpuint (counters.delivered, ==, 2);
  g_assert_cmpuint (counters.retried, ==, 2);
}

static void
test_retry_once_only (Fixture       *fixture,
                      gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, step_always_fail, NULL);
  AhBusCounters counters;

  g_test_summary ("A message is retried once: failing again, it is dead-lettered as "
                  "handler-failed and counted failed, once");

  send_to (fixture, agent->id, "work", "doomed");
  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);

  g_assert_cmpuint (count_received (fixture, agent->id, AH_MESSAGE_DIRECT), ==, 2);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_HANDLER_FAILED), ==, 1);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.accepted, ==, 1);
  g_assert_cmpuint (counters.failed, ==, 1);
  g_assert_cmpuint (counters.delivered, ==, 0);
  g_assert_cmpuint (counters.retried, ==, 1);
}

static gboolean
step_close_self (Agent           *agent,
                 AhBusCall       *call,
                 const AhMessage *message)
{
  ah_bus_endpoint_close (ah_bus_call_get_bus (call), agent->endpoint);
  return TRUE;
}

static const AhBusConfig config_batch_of_one = { .n_workers = 1, .handler_batch = 1 };

static void
test_close_dead_letters (Fixture       *fixture,
                         gconstpointer  user_data)
{
  Agent *idle = fixture_add_agent (fixture, NULL, NULL);
  Agent *quitter = fixture_add_agent (fixture, step_close_self, NULL);
  AhAgentId idle_id = idle->id;

  g_test_summary ("Closing an endpoint dead-letters what is queued for it (agent-stopped); "
                  "closing from its own handler completes when the handler returns");

  for (guint i = 0; i < 5; i++)
    send_to (fixture, idle->id, "work", "x");
  ah_bus_endpoint_close (fixture->bus, idle->endpoint);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_AGENT_STOPPED), ==, 5);
  g_assert_cmpuint (((DeadLetter *) g_ptr_array_index (fixture->dead, 0))->intended, ==, idle_id);
  send_to (fixture, idle_id, "work", "x");
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_NO_AGENT), ==, 1);

  for (guint i = 0; i < 4; i++)
    send_to (fixture, quitter->id, "work", "x");
  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);
  g_assert_cmpuint (quitter->n_calls, ==, 1);   /* handler_batch 1: one message handled */
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_AGENT_STOPPED), ==, 8);
}

/* A call that must wait out a running batch (close, pause), made from
 * another thread while the handler is held at the fixture's gate. */
typedef struct {
  Fixture  *fixture;
  Agent    *agent;
  void    (*call) (AhBus *bus, AhEndpoint *endpoint);
  gboolean  handler_running;   /* under the fixture lock */
  gboolean  handler_finished;
  gboolean  finished_before_call_returned;
  gboolean  call_returned;
} GateRace;

static gboolean
step_hold_at_gate (Agent           *agent,
                   AhBusCall       *call,
                   const AhMessage *message)
{
  GateRace *race = agent->data;
  Fixture *fixture = agent->fixture;
  gint64 deadline = deadline_in_us (WAIT_US);

  pthread_mutex_lock (&fixture->lock);
  race->handler_running = TRUE;
  pthread_cond_broadcast (&fixture->cond);
  while (!fixture->gate_open)
    if (!fixture_wait_until (fixture, deadline))
      break;
  race->handler_finished = TRUE;
  pthread_mutex_unlock (&fixture->lock);
  return TRUE;
}

static gpointer
gate_race_caller_main (gpointer data)
{
  GateRace *race = data;

  race->call (race->fixture->bus, race->agent->endpoint);
  pthread_mutex_lock (&race->fixture->lock);
  race->finished_before_call_returned = race->handler_finished;
  race->call_returned = TRUE;
  pthread_cond_broadcast (&race->fixture->cond);
  pthread_mutex_unlock (&race->fixture->lock);
  return NULL;
}

/* Waits until the agent's handler is held at the gate, makes the call
 * from another thread, checks it does not return while the handler is
 * held, then opens the gate and joins. */
static void
gate_race_run (GateRace *race)
{
  Fixture *fixture = race->fixture;
  gint64 deadline = deadline_in_us (WAIT_US);
  pthread_t thread;

  pthread_mutex_lock (&fixture->lock);
  while (!race->handler_running)
    if (!fixture_wait_until (fixture, deadline))
      break;
  pthread_mutex_unlock (&fixture->lock);
  g_assert_true (race->handler_running);

  g_assert_cmpint (pthread_create (&thread, NULL, gate_race_caller_main, race), ==, 0);
  deadline = deadline_in_us (100 * 1000);
  pthread_mutex_lock (&fixture->lock);
  while (!race->call_returned)
    if (!fixture_wait_until (fixture, deadline))
      break;
  g_assert_false (race->call_returned);
  pthread_mutex_unlock (&fixture->lock);
  fixture_open_gate (fixture);
  pthread_join (thread, NULL);
}

static void
test_close_waits_for_handler (Fixture       *fixture,
                              gconstpointer  user_data)
{
  GateRace race = { fixture, .call = ah_bus_endpoint_close };

  g_test_summary ("Closing an endpoint from another thread waits for its running batch");

  race.agent = fixture_add_agent (fixture, step_hold_at_gate, &race);
  ah_bus_start (fixture->bus);
  send_to (fixture, race.agent->id, "work", "1");
  send_to (fixture, race.agent->id, "work", "2");

  /* The close must not return while the handler is held at the gate. */
  gate_race_run (&race);
  fixture_wait_idle (fixture);

  g_assert_true (race.finished_before_call_returned);
  g_assert_cmpuint (race.agent->n_received + count_dead (fixture, AH_DEAD_LETTER_AGENT_STOPPED),
                    ==, 2);
}

static void
test_stop_leftovers (Fixture       *fixture,
                     gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, NULL, NULL);
  g_autoptr(GError) error = NULL;
  AhBusCounters counters;

  g_test_summary ("Stopping dead-letters what is still queued (shutdown); publishing "
                  "afterwards fails with an error");

  for (guint i = 0; i < 3; i++)
    send_to (fixture, agent->id, "work", "x");
  g_assert_false (ah_bus_is_idle (fixture->bus));
  ah_bus_stop (fixture->bus, 0);

  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_SHUTDOWN), ==, 3);
  g_assert_true (ah_bus_is_idle (fixture->bus));
  g_assert_false (ah_bus_publish (fixture->bus, AH_AGENT_ID_NONE, "late", "x", 1,
                                  AH_PRIORITY_NORMAL, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_STATE);
  g_assert_cmpstr (error->message, ==, "the bus is stopped");
  g_clear_error (&error);
  g_assert_false (ah_bus_send (fixture->bus, AH_AGENT_ID_NONE, agent->id, "late", "x", 1,
                               AH_PRIORITY_NORMAL, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_STATE);

  /* Closing after the stop is allowed: the pools do it at shutdown. */
  ah_bus_endpoint_close (fixture->bus, agent->endpoint);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.accepted, ==, 3);
  g_assert_cmpuint (counters.dead_lettered, ==, 3);
}

static void
test_stop_drains (Fixture       *fixture,
                  gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, NULL, NULL);

  g_test_summary ("Stopping with a drain timeout lets the workers finish queued work first");

  for (guint i = 0; i < 50; i++)
    send_to (fixture, agent->id, "work", "x");
  ah_bus_start (fixture->bus);
  ah_bus_stop (fixture->bus, WAIT_US);
  g_assert_cmpuint (agent->n_received, ==, 50);
  g_assert_cmpuint (fixture->dead->len, ==, 0);
}

static void
test_idle_func_and_wait (Fixture       *fixture,
                         gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, NULL, NULL);
  guint n_idle_calls;

  g_test_summary ("wait_idle returns once nothing is in flight, the idle func runs when "
                  "the bus becomes idle, and a bus with queued work is not idle");

  g_assert_true (ah_bus_is_idle (fixture->bus));
  g_assert_true (ah_bus_wait_idle (fixture->bus, 0));
  send_to (fixture, agent->id, "work", "x");
  g_assert_false (ah_bus_is_idle (fixture->bus));
  g_assert_false (ah_bus_wait_idle (fixture->bus, 0));
  g_assert_false (ah_bus_wait_idle (fixture->bus, 20 * 1000));   /* no workers yet */

  ah_bus_start (fixture->bus);
  g_assert_true (ah_bus_wait_idle (fixture->bus, -1));
  pthread_mutex_lock (&fixture->lock);
  n_idle_calls = fixture->n_idle_calls;
  pthread_mutex_unlock (&fixture->lock);
  g_assert_cmpuint (n_idle_calls, >=, 1);
  g_assert_cmpuint (agent->n_received, ==, 1);
}

static void
test_stop_blocked_publisher (Fixture       *fixture,
                             gconstpointer  user_data)
{
  Agent *consumer = fixture_add_agent (fixture, NULL, NULL);
  BlockedPublisher publisher = { fixture, consumer, 5, FALSE, NULL };
  gint64 deadline = deadline_in_us (100 * 1000);
  g_autoptr(GError) error = NULL;
  Sequenced sequenced = { 0, 6 };
  pthread_t thread;

  g_test_summary ("Stopping releases a publisher waiting for room: its message is "
                  "dead-lettered and the publish fails");

  for (guint i = 0; i < 4; i++)
    send_to (fixture, consumer->id, "fill", "");
  g_assert_cmpint (pthread_create (&thread, NULL, blocked_stop_publisher_main, &publisher), ==, 0);
  pthread_mutex_lock (&fixture->lock);
  while (!publisher.done)
    if (!fixture_wait_until (fixture, deadline))
      break;
  g_assert_false (publisher.done);
  pthread_mutex_unlock (&fixture->lock);

  ah_bus_stop (fixture->bus, 0);
  pthread_join (thread, NULL);
  g_assert_true (publisher.done);
  g_assert_error (publisher.error, AH_HOST_ERROR, AH_HOST_ERROR_STATE);
  g_assert_cmpstr (publisher.error->message, ==, "the bus is stopped");
  g_clear_error (&publisher.error);
  /* Normally it was waiting and its message is the fifth dead letter;
   * a thread slow to start meets the stopped bus before it is accepted. */
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_SHUTDOWN), >=, 4);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_SHUTDOWN), <=, 5);

  g_assert_false (ah_bus_send (fixture->bus, AH_AGENT_ID_NONE, consumer->id, "seq", &sequenced,
                               sizeof sequenced, AH_PRIORITY_NORMAL, &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_STATE);
}

static void
test_publish_misuse (Fixture       *fixture,
                     gconstpointer  user_data)
{
  g_test_summary ("Programming errors are reported as criticals, not crashes");

  g_test_expect_message ("agenthost", G_LOG_LEVEL_CRITICAL, "*subject != NULL*");
  g_assert_false (ah_bus_publish (fixture->bus, AH_AGENT_ID_NONE, NULL, "", 0,
                                  AH_PRIORITY_NORMAL, NULL));
  g_test_assert_expected_messages ();

  g_test_expect_message ("agenthost", G_LOG_LEVEL_CRITICAL, "*data != NULL || size == 0*");
  g_assert_false (ah_bus_send (fixture->bus, AH_AGENT_ID_NONE, 1, "a", NULL, 3,
                               AH_PRIORITY_NORMAL, NULL));
  g_test_assert_expected_messages ();
}

static void
test_config_defaults (Fixture       *fixture,
                      gconstpointer  user_data)
{
  const AhBusConfig *config = ah_bus_get_config (fixture->bus);

  g_test_summary ("Zero config fields take the documented defaults");

  g_assert_cmpuint (config->n_workers, ==, g_get_num_processors ());
  g_assert_cmpuint (config->publish_batch, ==, 256);
  g_assert_cmpuint (config->handler_batch, ==, 32);
  g_assert_cmpuint (config->mailbox_capacity, ==, 1024);
  g_assert_cmpint (config->overflow, ==, AH_OVERFLOW_FAIL);
}

/* ---- Hold, correlation, send_full, tap ------------------------------------------------- */

static void
test_hold_keeps_busy (Fixture       *fixture,
                      gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, NULL, NULL);
  guint n_idle_calls;

  g_test_summary ("A hold keeps the bus from being idle even with nothing in flight; the "
                  "last release makes it idle and runs the idle func; an unbalanced "
                  "release is a critical that leaves the count at 0");

  ah_bus_start (fixture->bus);
  ah_bus_hold (fixture->bus);
  ah_bus_hold (fixture->bus);
  send_to (fixture, agent->id, "work", "x");
  /* Once the message is handled only the holds keep the bus busy. */
  pthread_mutex_lock (&fixture->lock);
  while (agent->n_received < 1)
    g_assert_true (fixture_wait_until (fixture, deadline_in_us (WAIT_US)));
  pthread_mutex_unlock (&fixture->lock);
  g_assert_false (ah_bus_wait_idle (fixture->bus, 50 * 1000));
  g_assert_false (ah_bus_is_idle (fixture->bus));

  ah_bus_release (fixture->bus);
  g_assert_false (ah_bus_is_idle (fixture->bus));
  pthread_mutex_lock (&fixture->lock);
  n_idle_calls = fixture->n_idle_calls;
  pthread_mutex_unlock (&fixture->lock);

  ah_bus_release (fixture->bus);
  g_assert_true (ah_bus_is_idle (fixture->bus));
  g_assert_true (ah_bus_wait_idle (fixture->bus, 0));
  pthread_mutex_lock (&fixture->lock);
  g_assert_cmpuint (fixture->n_idle_calls, ==, n_idle_calls + 1);
  pthread_mutex_unlock (&fixture->lock);

  g_test_expect_message ("agenthost", G_LOG_LEVEL_CRITICAL, "*released more often than held*");
  ah_bus_release (fixture->bus);
  g_test_assert_expected_messages ();
  g_assert_true (ah_bus_is_idle (fixture->bus));
}

typedef struct {
  Fixture  *fixture;
  gboolean  released;   /* under the fixture lock */
} DelayedRelease;

static gpointer
delayed_release_main (gpointer data)
{
  DelayedRelease *release = data;
  Fixture *fixture = release->fixture;

  /* Released only once the test has seen the bus busy. */
  pthread_mutex_lock (&fixture->lock);
  while (!fixture->gate_open)
    pthread_cond_wait (&fixture->cond, &fixture->lock);
  release->released = TRUE;
  pthread_mutex_unlock (&fixture->lock);
  ah_bus_release (fixture->bus);
  return NULL;
}

static void
test_hold_wait_idle (Fixture       *fixture,
                     gconstpointer  user_data)
{
  DelayedRelease release = { fixture, FALSE };
  pthread_t thread;

  g_test_summary ("wait_idle returns when another thread releases the last hold, "
                  "not before");

  ah_bus_start (fixture->bus);
  ah_bus_hold (fixture->bus);
  g_assert_cmpint (pthread_create (&thread, NULL, delayed_release_main, &release), ==, 0);
  g_assert_false (ah_bus_wait_idle (fixture->bus, 20 * 1000));
  fixture_open_gate (fixture);
  g_assert_true (ah_bus_wait_idle (fixture->bus, WAIT_US));
  pthread_mutex_lock (&fixture->lock);
  g_assert_true (release.released);
  pthread_mutex_unlock (&fixture->lock);
  pthread_join (thread, NULL);
}

static void
test_correlation_unique (Fixture       *fixture,
                         gconstpointer  user_data)
{
  RequestPlan plan = { .timeout_ms = 60000, .n_replies = 1 };
  Agent *requester = fixture_add_agent (fixture, step_requester, &plan);
  g_autoptr(GHashTable) seen = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL);
  guint64 before, after;

  g_test_summary ("ah_bus_new_correlation never returns 0 and shares its counter with "
                  "requests, so offload ids and request ids never collide");

  fixture_add_subscriber (fixture, "svc.echo", step_responder, &plan);
  for (guint i = 0; i < 100; i++)
    {
      guint64 correlation = ah_bus_new_correlation (fixture->bus);

      g_assert_cmpuint (correlation, !=, 0);
      g_assert_true (g_hash_table_add (seen, g_memdup2 (&correlation, sizeof correlation)));
    }
  before = ah_bus_new_correlation (fixture->bus);
  ah_bus_start (fixture->bus);
  send_to (fixture, requester->id, "go", "");
  fixture_wait_idle (fixture);
  after = ah_bus_new_correlation (fixture->bus);

  g_assert_cmpuint (plan.correlation, >, before);
  g_assert_cmpuint (plan.correlation, <, after);
  g_assert_false (g_hash_table_contains (seen, &plan.correlation));
}

/* Correlation ids seen by the test and its requesters: under the
 * fixture lock. */
typedef struct {
  GHashTable *seen;
  gboolean    duplicate;
  gboolean    zero;
} CorrelationLog;

static void
correlation_log_add (Fixture        *fixture,
                     CorrelationLog *log,
                     guint64         correlation)
{
  pthread_mutex_lock (&fixture->lock);
  if (correlation == 0)
    log->zero = TRUE;
  else if (!g_hash_table_add (log->seen, g_memdup2 (&correlation, sizeof correlation)))
    log->duplicate = TRUE;
  pthread_mutex_unlock (&fixture->lock);
}

static gboolean
step_request_logged (Agent           *agent,
                     AhBusCall       *call,
                     const AhMessage *message)
{
  if (ah_message_get_kind (message) == AH_MESSAGE_DIRECT)
    correlation_log_add (agent->fixture, agent->data,
                         ah_bus_call_request (call, "svc.echo", "question", 8, 60000));
  return TRUE;
}

static void
test_request_correlation_unique (Fixture       *fixture,
                                 gconstpointer  user_data)
{
  const guint n_requesters = 4, n_each = 600;
  RequestPlan plan = { .timeout_ms = 60000, .n_replies = 1 };
  CorrelationLog log = { g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL) };
  guint n_external = 0;

  g_test_summary ("Correlation ids stay unique and non-zero when workers take them in "
                  "blocks while other threads take them one by one");

  for (guint i = 0; i < n_requesters; i++)
    fixture_add_agent (fixture, step_request_logged, &log);
  fixture_add_subscriber (fixture, "svc.echo", step_responder, &plan);
  ah_bus_start (fixture->bus);
  for (guint n = 0; n < n_each; n++)
    {
      for (guint i = 0; i < n_requesters; i++)
        send_to (fixture, ((Agent *) g_ptr_array_index (fixture->agents, i))->id, "go", "");
      correlation_log_add (fixture, &log, ah_bus_new_correlation (fixture->bus));
      n_external++;
    }
  fixture_wait_idle (fixture);

  g_assert_false (log.zero);
  g_assert_false (log.duplicate);
  g_assert_cmpuint (g_hash_table_size (log.seen), ==, n_requesters * n_each + n_external);
  g_assert_cmpuint (count_received (fixture, ((Agent *) g_ptr_array_index (fixture->agents, 0))->id,
                                    AH_MESSAGE_REPLY), ==, n_each);
  g_hash_table_unref (log.seen);
}

static void
test_send_full_kind (Fixture       *fixture,
                     gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, NULL, NULL);
  g_autoptr(GError) error = NULL;
  Received *done, *failed;
  DeadLetter *dead;

  g_test_summary ("send_full delivers the kind, correlation, sender, subject and payload "
                  "given; to an unknown id it is accepted and dead-lettered as no-agent");

  ah_bus_start (fixture->bus);
  g_assert_true (ah_bus_send_full (fixture->bus, 77, agent->id, "$SYS.offload", "result", 6,
                                   AH_PRIORITY_NORMAL, AH_MESSAGE_OFFLOAD_DONE, 41, &error));
  g_assert_no_error (error);
  g_assert_true (ah_bus_send_full (fixture->bus, AH_AGENT_ID_NONE, agent->id, "$SYS.offload",
                                   "boom", 4, AH_PRIORITY_NORMAL, AH_MESSAGE_OFFLOAD_FAILED, 42,
                                   &error));
  g_assert_true (ah_bus_send_full (fixture->bus, AH_AGENT_ID_NONE, 9999, "$SYS.offload", "", 0,
                                   AH_PRIORITY_NORMAL, AH_MESSAGE_OFFLOAD_DONE, 43, &error));
  g_assert_no_error (error);
  fixture_wait_idle (fixture);

  done = get_received (fixture, agent->id, AH_MESSAGE_OFFLOAD_DONE);
  g_assert_cmpuint (done->correlation, ==, 41);
  g_assert_cmpuint (done->sender, ==, 77);
  g_assert_cmpint (done->priority, ==, AH_PRIORITY_NORMAL);
  g_assert_cmpstr (done->subject, ==, "$SYS.offload");
  g_assert_cmpmem (g_bytes_get_data (done->payload, NULL), g_bytes_get_size (done->payload),
                   "result", 6);
  failed = get_received (fixture, agent->id, AH_MESSAGE_OFFLOAD_FAILED);
  g_assert_cmpuint (failed->correlation, ==, 42);
  g_assert_cmpuint (failed->sender, ==, AH_AGENT_ID_NONE);
  g_assert_cmpuint (fixture->dead->len, ==, 1);
  dead = g_ptr_array_index (fixture->dead, 0);
  g_assert_cmpint (dead->reason, ==, AH_DEAD_LETTER_NO_AGENT);
  g_assert_cmpint (dead->kind, ==, AH_MESSAGE_OFFLOAD_DONE);
  g_assert_cmpuint (dead->intended, ==, 9999);
}

static void
test_send_full_block_never_waits (Fixture       *fixture,
                                  gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, step_check_sequence, NULL);
  g_autoptr(GError) error = NULL;
  Sequenced sequenced = { 0, 0 };
  Received *last;

  g_test_summary ("Under the block policy send_full does not wait for a full mailbox: the "
                  "message goes past the capacity and arrives after what was queued");

  /* No workers yet: nothing makes room, so a wait would never end. */
  for (guint i = 1; i <= 4; i++)
    {
      sequenced.sequence = i;
      g_assert_true (ah_bus_send (fixture->bus, AH_AGENT_ID_NONE, agent->id, "seq", &sequenced,
                                  sizeof sequenced, AH_PRIORITY_NORMAL, &error));
    }
  sequenced.sequence = 5;
  g_assert_true (ah_bus_send_full (fixture->bus, AH_AGENT_ID_NONE, agent->id, "seq", &sequenced,
                                   sizeof sequenced, AH_PRIORITY_NORMAL,
                                   AH_MESSAGE_OFFLOAD_DONE, 5, &error));
  g_assert_no_error (error);

  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);
  g_assert_cmpuint (agent->n_received, ==, 5);
  g_assert_false (agent->out_of_order);
  last = g_ptr_array_index (fixture->received, 4);
  g_assert_cmpint (last->kind, ==, AH_MESSAGE_OFFLOAD_DONE);
  g_assert_cmpuint (fixture->dead->len, ==, 0);
}

static void
test_send_full_fail_refused (Fixture       *fixture,
                             gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, NULL, NULL);
  g_autoptr(GError) error = NULL;
  g_autofree char *expected = NULL;
  AhBusCounters counters;
  DeadLetter *dead;

  g_test_summary ("Under the fail policy send_full to a full mailbox is refused like any "
                  "send: FALSE, an overflow error, counted failed and dead-lettered");

  for (guint i = 0; i < 4; i++)
    send_to (fixture, agent->id, "fill", "");
  g_assert_false (ah_bus_send_full (fixture->bus, AH_AGENT_ID_NONE, agent->id, "$SYS.offload",
                                    "r", 1, AH_PRIORITY_NORMAL, AH_MESSAGE_OFFLOAD_DONE, 9,
                                    &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_OVERFLOW);
  expected = g_strdup_printf ("the mailbox of agent %" G_GUINT64_FORMAT " is full", agent->id);
  g_assert_cmpstr (error->message, ==, expected);
  g_assert_cmpuint (fixture->dead->len, ==, 1);
  dead = g_ptr_array_index (fixture->dead, 0);
  g_assert_cmpint (dead->reason, ==, AH_DEAD_LETTER_OVERFLOW);
  g_assert_cmpint (dead->kind, ==, AH_MESSAGE_OFFLOAD_DONE);

  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);
  g_assert_cmpuint (count_received (fixture, agent->id, AH_MESSAGE_DIRECT), ==, 4);
  g_assert_cmpuint (count_received (fixture, agent->id, AH_MESSAGE_OFFLOAD_DONE), ==, 0);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.failed, ==, 1);
}

static void
test_send_full_refusals (Fixture       *fixture,
                         gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, NULL, NULL);
  g_autoptr(GError) error = NULL;
  AhBusCounters counters;

  g_test_summary ("send_full refuses an invalid subject (counted failed) and a stopped bus, "
                  "with the same errors as ah_bus_send");

  g_assert_false (ah_bus_send_full (fixture->bus, AH_AGENT_ID_NONE, agent->id, "bad..subject",
                                    "", 0, AH_PRIORITY_NORMAL, AH_MESSAGE_OFFLOAD_DONE, 1,
                                    &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT);
  g_assert_cmpstr (error->message, ==, "'bad..subject' is not a valid subject");
  g_clear_error (&error);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.failed, ==, 1);

  ah_bus_stop (fixture->bus, 0);
  g_assert_false (ah_bus_send_full (fixture->bus, AH_AGENT_ID_NONE, agent->id, "$SYS.offload",
                                    "", 0, AH_PRIORITY_NORMAL, AH_MESSAGE_OFFLOAD_DONE, 2,
                                    &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_STATE);
  g_assert_cmpstr (error->message, ==, "the bus is stopped");
}

typedef struct {
  gboolean refused;   /* what send_full returned from the handler */
  gboolean tried;
} HandlerSendFull;

static gboolean
step_send_full_in_handler (Agent           *agent,
                           AhBusCall       *call,
                           const AhMessage *message)
{
  HandlerSendFull *plan = agent->data;

  g_test_expect_message ("agenthost", G_LOG_LEVEL_CRITICAL, "*ah_bus_current_call == NULL*");
  plan->refused = !ah_bus_send_full (ah_bus_call_get_bus (call), agent->id, agent->id, "x",
                                     "", 0, AH_PRIORITY_NORMAL, AH_MESSAGE_OFFLOAD_DONE, 1, NULL);
  g_test_assert_expected_messages ();
  plan->tried = TRUE;
  return TRUE;
}

static void
test_send_full_from_handler (Fixture       *fixture,
                             gconstpointer  user_data)
{
  HandlerSendFull plan = { FALSE, FALSE };
  Agent *agent = fixture_add_agent (fixture, step_send_full_in_handler, &plan);

  g_test_summary ("send_full from a handler is a programming error (it would overtake the "
                  "handler's outbox): a critical, and nothing is sent");

  send_to (fixture, agent->id, "go", "");
  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);
  g_assert_true (plan.tried);
  g_assert_true (plan.refused);
  g_assert_cmpuint (agent->n_received, ==, 1);
}

typedef struct {
  AhMessageKind  kind;
  char          *subject;
  AhAgentId      sender;
  AhAgentId      recipient;
  guint64        correlation;
  char          *text;
} Tapped;

typedef struct {
  pthread_mutex_t lock;
  GPtrArray      *tapped;   /* (element-type Tapped) under @lock */
} TapLog;

static void
tapped_free (gpointer data)
{
  Tapped *tapped = data;

  g_free (tapped->subject);
  g_free (tapped->text);
  g_free (tapped);
}

static void
tap_log_record (const AhMessage *message,
                AhAgentId        recipient,
                gpointer         user_data)
{
  TapLog *log = user_data;
  Tapped *tapped = g_new0 (Tapped, 1);
  gsize size;
  const char *data = ah_message_get_data (message, &size);

  tapped->kind = ah_message_get_kind (message);
  tapped->subject = g_strdup (ah_message_get_subject (message));
  tapped->sender = ah_message_get_sender (message);
  tapped->recipient = recipient;
  tapped->correlation = ah_message_get_correlation (message);
  tapped->text = g_strndup (data, size);
  pthread_mutex_lock (&log->lock);
  g_ptr_array_add (log->tapped, tapped);
  pthread_mutex_unlock (&log->lock);
}

static void
tap_log_init (TapLog *log)
{
  pthread_mutex_init (&log->lock, NULL);
  log->tapped = g_ptr_array_new_with_free_func (tapped_free);
}

static void
tap_log_clear (TapLog *log)
{
  g_ptr_array_unref (log->tapped);
  pthread_mutex_destroy (&log->lock);
}

static void
assert_tapped (TapLog        *log,
               guint          index,
               AhMessageKind  kind,
               const char    *subject,
               AhAgentId      sender,
               AhAgentId      recipient,
               const char    *text)
{
  Tapped *tapped;

  g_assert_cmpuint (index, <, log->tapped->len);
  tapped = g_ptr_array_index (log->tapped, index);
  g_assert_cmpint (tapped->kind, ==, kind);
  g_assert_cmpstr (tapped->subject, ==, subject);
  g_assert_cmpuint (tapped->sender, ==, sender);
  g_assert_cmpuint (tapped->recipient, ==, recipient);
  g_assert_cmpstr (tapped->text, ==, text);
}

static void
test_tap_external (Fixture       *fixture,
                   gconstpointer  user_data)
{
  AhBusGroup *group = ah_bus_group_new (fixture->bus, "all", AH_DELIVERY_BROADCAST);
  Agent *a = fixture_add_agent (fixture, NULL, NULL);
  Agent *b = fixture_add_agent (fixture, NULL, NULL);
  g_autoptr(GError) error = NULL;
  TapLog log;

  g_test_summary ("The tap sees each external publish, send and send_full once (not once "
                  "per recipient), with the addressee of direct sends, even when nobody "
                  "gets the message; refused input and a cleared tap see nothing");

  tap_log_init (&log);
  ah_bus_group_add (group, a->endpoint);
  ah_bus_group_add (group, b->endpoint);
  g_assert_cmpuint (ah_bus_subscribe (fixture->bus, "all.>", group, &error), >, 0);
  ah_bus_set_tap_func (fixture->bus, tap_log_record, &log);
  ah_bus_start (fixture->bus);

  publish (fixture, "all.hello", "to both");
  publish (fixture, "nobody.listens", "lost");
  send_to (fixture, b->id, "direct", "to b");
  send_to (fixture, 9999, "direct", "to nobody");
  g_assert_true (ah_bus_send_full (fixture->bus, 3, a->id, "$SYS.offload", "done", 4,
                                   AH_PRIORITY_NORMAL, AH_MESSAGE_OFFLOAD_DONE, 12, &error));
  g_assert_false (ah_bus_publish (fixture->bus, AH_AGENT_ID_NONE, "bad..subject", "", 0,
                                  AH_PRIORITY_NORMAL, &error));
  g_clear_error (&error);
  fixture_wait_idle (fixture);

  pthread_mutex_lock (&log.lock);
  g_assert_cmpuint (log.tapped->len, ==, 5);
  assert_tapped (&log, 0, AH_MESSAGE_PUBLISH, "all.hello", AH_AGENT_ID_NONE, AH_AGENT_ID_NONE,
                 "to both");
  assert_tapped (&log, 1, AH_MESSAGE_PUBLISH, "nobody.listens", AH_AGENT_ID_NONE,
                 AH_AGENT_ID_NONE, "lost");
  assert_tapped (&log, 2, AH_MESSAGE_DIRECT, "direct", AH_AGENT_ID_NONE, b->id, "to b");
  assert_tapped (&log, 3, AH_MESSAGE_DIRECT, "direct", AH_AGENT_ID_NONE, 9999, "to nobody");
  assert_tapped (&log, 4, AH_MESSAGE_OFFLOAD_DONE, "$SYS.offload", 3, a->id, "done");
  g_assert_cmpuint (((Tapped *) g_ptr_array_index (log.tapped, 4))->correlation, ==, 12);
  pthread_mutex_unlock (&log.lock);
  g_assert_cmpuint (a->n_received, ==, 2);   /* the broadcast and the send_full */

  ah_bus_set_tap_func (fixture->bus, NULL, NULL);
  publish (fixture, "all.again", "untapped");
  fixture_wait_idle (fixture);
  pthread_mutex_lock (&log.lock);
  g_assert_cmpuint (log.tapped->len, ==, 5);
  pthread_mutex_unlock (&log.lock);

  tap_log_clear (&log);
}

/* Publishes, sends to the responder (the plan's first agent), requests
 * and, as the responder, replies: everything a handler can send. */
static gboolean
step_tap_everything (Agent           *agent,
                     AhBusCall       *call,
                     const AhMessage *message)
{
  Agent *responder = agent->data;

  switch (ah_message_get_kind (message))
    {
    case AH_MESSAGE_DIRECT:
      if (strcmp (ah_message_get_subject (message), "go") == 0)
        {
          g_assert_true (ah_bus_call_publish (call, "out.note", "n", 1));
          g_assert_true (ah_bus_call_send (call, responder->id, "hint", "h", 1));
          g_assert_cmpuint (ah_bus_call_request (call, "svc.ask", "q", 1, 60000), !=, 0);
          g_assert_cmpuint (ah_bus_call_request (call, "svc.none", "q2", 2, 60000), !=, 0);
        }
      break;

    case AH_MESSAGE_REQUEST:
      g_assert_true (ah_bus_call_reply (call, message, "a", 1));
      break;

    case AH_MESSAGE_PUBLISH:
    case AH_MESSAGE_REPLY:
    case AH_MESSAGE_TIMEOUT:
    case AH_MESSAGE_NO_RESPONDERS:
    case AH_MESSAGE_OFFLOAD_DONE:
    case AH_MESSAGE_OFFLOAD_FAILED:
    default:
      break;
    }
  return TRUE;
}

static void
test_tap_handlers (Fixture       *fixture,
                   gconstpointer  user_data)
{
  Agent *responder = fixture_add_subscriber (fixture, "svc.ask", step_tap_everything, NULL);
  Agent *agent = fixture_add_agent (fixture, step_tap_everything, responder);
  TapLog log;
  guint64 correlation;

  g_test_summary ("The tap sees what handlers publish, send, request and reply, in the "
                  "order they did it, the reply with its requester as recipient; the "
                  "NO_RESPONDERS the bus makes itself is not tapped");

  responder->data = responder;
  tap_log_init (&log);
  ah_bus_set_tap_func (fixture->bus, tap_log_record, &log);
  ah_bus_start (fixture->bus);
  send_to (fixture, agent->id, "go", "");
  fixture_wait_idle (fixture);
  ah_bus_set_tap_func (fixture->bus, NULL, NULL);

  g_assert_cmpuint (count_received (fixture, agent->id, AH_MESSAGE_REPLY), ==, 1);
  g_assert_cmpuint (count_received (fixture, agent->id, AH_MESSAGE_NO_RESPONDERS), ==, 1);
  g_assert_cmpuint (count_received (fixture, responder->id, AH_MESSAGE_DIRECT), ==, 1);
  g_assert_cmpuint (log.tapped->len, ==, 6);
  assert_tapped (&log, 0, AH_MESSAGE_DIRECT, "go", AH_AGENT_ID_NONE, agent->id, "");
  assert_tapped (&log, 1, AH_MESSAGE_PUBLISH, "out.note", agent->id, AH_AGENT_ID_NONE, "n");
  assert_tapped (&log, 2, AH_MESSAGE_DIRECT, "hint", agent->id, responder->id, "h");
  assert_tapped (&log, 3, AH_MESSAGE_REQUEST, "svc.ask", agent->id, AH_AGENT_ID_NONE, "q");
  assert_tapped (&log, 4, AH_MESSAGE_REQUEST, "svc.none", agent->id, AH_AGENT_ID_NONE, "q2");
  assert_tapped (&log, 5, AH_MESSAGE_REPLY, "svc.ask", responder->id, agent->id, "a");
  correlation = ((Tapped *) g_ptr_array_index (log.tapped, 3))->correlation;
  g_assert_cmpuint (correlation, !=, 0);
  g_assert_cmpuint (((Tapped *) g_ptr_array_index (log.tapped, 5))->correlation, ==, correlation);

  tap_log_clear (&log);
}

/* ---- Pause and resume ------------------------------------------------------------------ */

static guint
agent_get_n_received (Agent *agent)
{
  guint n;

  pthread_mutex_lock (&agent->fixture->lock);
  n = agent->n_received;
  pthread_mutex_unlock (&agent->fixture->lock);
  return n;
}

static guint
agent_get_n_calls (Agent *agent)
{
  guint n;

  pthread_mutex_lock (&agent->fixture->lock);
  n = agent->n_calls;
  pthread_mutex_unlock (&agent->fixture->lock);
  return n;
}

/* Waits until @agent has received at least @n messages. */
static void
wait_received (Fixture *fixture,
               Agent   *agent,
               guint    n)
{
  gint64 deadline = deadline_in_us (WAIT_US);
  guint n_received;

  pthread_mutex_lock (&fixture->lock);
  while (agent->n_received < n)
    if (!fixture_wait_until (fixture, deadline))
      break;
  n_received = agent->n_received;
  pthread_mutex_unlock (&fixture->lock);
  g_assert_cmpuint (n_received, >=, n);
}

/* Sends @marker one message and waits until it has it, @n_times in a
 * row. A worker's run queue is first in, first out, so an endpoint of
 * the marker's worker that was scheduled before a marker was sent has
 * had its turn once that marker arrives. Each pass also covers what the
 * turns of the previous one scheduled. */
static void
pass_markers (Fixture *fixture,
              Agent   *marker,
              guint    n_times)
{
  for (guint i = 0; i < n_times; i++)
    {
      guint n = agent_get_n_received (marker);

      send_to (fixture, marker->id, "marker", "m");
      wait_received (fixture, marker, n + 1);
    }
}

static void
send_sequenced (Fixture   *fixture,
                AhAgentId  to,
                guint      slot,
                guint64    sequence)
{
  Sequenced sequenced = { slot, sequence };
  g_autoptr(GError) error = NULL;

  g_assert_true (ah_bus_send (fixture->bus, AH_AGENT_ID_NONE, to, "seq", &sequenced,
                              sizeof sequenced, AH_PRIORITY_NORMAL, &error));
  g_assert_no_error (error);
}

/* ---- One message to an agent of the same worker ------------------------------------------ */

/* Two agents pass a sequence back and forth, one message per handler
 * call: each call's outbox is that one message, to an agent of its own
 * worker (ah_bus_deliver_local). */
typedef struct {
  Agent   *peer;
  guint64  last;          /* the rally stops at this sequence */
  guint64  last_in;       /* the last sequence received */
  guint    depth_seen;    /* the peer's mailbox depth, read by a 'look' */
  gboolean sent_one;
} Rally;

static gboolean
step_rally (Agent           *agent,
            AhBusCall       *call,
            const AhMessage *message)
{
  Rally *rally = agent->data;
  const char *subject = ah_message_get_subject (message);

  if (strcmp (subject, "look") == 0)
    {
      rally->depth_seen = ah_bus_endpoint_get_depth (rally->peer->endpoint);
      return TRUE;
    }
  if (strcmp (subject, "go") == 0)
    {
      Sequenced first = { 0, 1 };

      rally->sent_one = TRUE;
      return ah_bus_call_send (call, rally->peer->id, "seq", &first, sizeof first);
    }
  if (strcmp (subject, "seq") == 0)
    {
      gsize size;
      const Sequenced *in = ah_message_get_data (message, &size);
      Sequenced out = { 0, in->sequence + 1 };

      /* The peer answers each hop with the next: this agent sees every
       * other one. */
      if (in->sequence != rally->last_in + 2 && !(rally->last_in == 0 && in->sequence <= 2))
        agent->out_of_order = TRUE;
      rally->last_in = in->sequence;
      if (in->sequence < rally->last)
        return ah_bus_call_send (call, rally->peer->id, "seq", &out, sizeof out);
    }
  return TRUE;
}

static void
test_deliver_local_rally (Fixture       *fixture,
                          gconstpointer  user_data)
{
  Rally rally_a = { 0 }, rally_b = { 0 };
  Agent *a = fixture_add_agent (fixture, step_rally, &rally_a);
  Agent *b = fixture_add_agent (fixture, step_rally, &rally_b);

  g_test_summary ("One message per call between two agents of one worker: every hop "
                  "arrives, in order, and the account balances");

  rally_a = (Rally) { .peer = b, .last = 1000 };
  rally_b = (Rally) { .peer = a, .last = 1000 };
  ah_bus_start (fixture->bus);
  send_to (fixture, a->id, "go", "");
  fixture_wait_idle (fixture);

  /* a sent the odd sequences, b the even ones, each its own slot 0. */
  g_assert_cmpuint (b->n_received, ==, 500);
  g_assert_cmpuint (a->n_received, ==, 501);   /* its "go" too */
  g_assert_false (a->out_of_order);
  g_assert_false (b->out_of_order);
  g_assert_cmpuint (fixture->dead->len, ==, 0);
}

static const AhBusConfig config_local_block = {
  .n_workers = 1, .mailbox_capacity = 4, .overflow = AH_OVERFLOW_BLOCK };

static void
test_deliver_local_full (Fixture       *fixture,
                         gconstpointer  user_data)
{
  Rally rally_a = { 0 }, rally_c = { 0 };
  Agent *a = fixture_add_agent (fixture, step_rally, &rally_a);
  Agent *b = fixture_add_agent (fixture, step_check_sequence, NULL);
  Agent *c = fixture_add_agent (fixture, step_rally, &rally_c);

  g_test_summary ("One message to a full mailbox of the same worker waits for room (the "
                  "mailbox never holds more than its capacity) and then arrives after "
                  "what was there, nothing lost");

  rally_a = (Rally) { .peer = b, .last = 1 };
  rally_c = (Rally) { .peer = b };
  /* Run queue order on the one worker: a (go), c (look), then b. */
  send_to (fixture, a->id, "go", "");
  send_to (fixture, c->id, "look", "");
  for (guint i = 1; i <= 4; i++)
    send_sequenced (fixture, b->id, 1, i);
  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);

  g_assert_true (rally_a.sent_one);
  /* a's message met 4 of 4 and waited with a, not in b's mailbox. */
  g_assert_cmpuint (rally_c.depth_seen, ==, 4);
  g_assert_cmpuint (b->n_received, ==, 5);
  g_assert_cmpuint (b->last_sequence[0], ==, 1);
  g_assert_cmpuint (b->last_sequence[1], ==, 4);
  g_assert_false (b->out_of_order);
  g_assert_cmpuint (fixture->dead->len, ==, 0);
}

static void
test_deliver_local_paused (Fixture       *fixture,
                           gconstpointer  user_data)
{
  Rally rally_a = { 0 };
  Agent *a = fixture_add_agent (fixture, step_rally, &rally_a);
  Agent *b = fixture_add_agent (fixture, step_check_sequence, NULL);
  Agent *marker = fixture_add_agent (fixture, NULL, NULL);

  g_test_summary ("One message to a paused agent of the same worker waits in its mailbox "
                  "and is handled once it is resumed");

  rally_a = (Rally) { .peer = b, .last = 1 };
  ah_bus_start (fixture->bus);
  ah_bus_endpoint_pause (fixture->bus, b->endpoint);
  send_to (fixture, a->id, "go", "");
  pass_markers (fixture, marker, 2);
  g_assert_true (rally_a.sent_one);
  g_assert_cmpuint (agent_get_n_received (b), ==, 0);
  g_assert_cmpuint (ah_bus_endpoint_get_depth (b->endpoint), ==, 1);

  ah_bus_endpoint_resume (fixture->bus, b->endpoint);
  fixture_wait_idle (fixture);
  g_assert_cmpuint (b->n_received, ==, 1);
  g_assert_cmpuint (fixture->dead->len, ==, 0);
}

/* ---- Batching inside the bus -------------------------------------------- */

typedef struct {
  const char *subjects[4];     /* published in turn, NULL-terminated */
  guint       n_messages;
} PublishRun;

/* On "go": publishes run->n_messages sequenced messages from the
 * handler, cycling through run->subjects. */
static gboolean
step_publish_run (Agent           *agent,
                  AhBusCall       *call,
                  const AhMessage *message)
{
  const PublishRun *run = agent->data;
  guint n_subjects = 0;

  if (strcmp (ah_message_get_subject (message), "go") != 0)
    return TRUE;
  while (n_subjects < G_N_ELEMENTS (run->subjects) && run->subjects[n_subjects] != NULL)
    n_subjects++;
  for (guint i = 1; i <= run->n_messages; i++)
    {
      Sequenced sequenced = { 0, i };

      g_assert_true (ah_bus_call_publish (call, run->subjects[(i - 1) % n_subjects],
                                          &sequenced, sizeof sequenced));
    }
  return TRUE;
}

/* The sequence numbers @to received, in the order it got them. */
static GArray *
received_sequences (Fixture   *fixture,
                    AhAgentId  to)
{
  GArray *sequences = g_array_new (FALSE, FALSE, sizeof (guint64));

  pthread_mutex_lock (&fixture->lock);
  for (guint i = 0; i < fixture->received->len; i++)
    {
      Received *received = g_ptr_array_index (fixture->received, i);

      if (received->to == to && received->kind == AH_MESSAGE_PUBLISH)
        {
          const Sequenced *sequenced = g_bytes_get_data (received->payload, NULL);

          g_array_append_val (sequences, sequenced->sequence);
        }
    }
  pthread_mutex_unlock (&fixture->lock);
  return sequences;
}

/* Publishes from handlers are routed at the outbox's flush under the
 * block policy (under fail, each is routed when made, to know its fate). */
static const AhBusConfig config_block_two_workers = { .n_workers = 2,
                                                      .overflow = AH_OVERFLOW_BLOCK };

/* A queue group "workers" of @n_members new agents, on "jobs.*". */
static void
add_queue_members (Fixture  *fixture,
                   Agent   **members,
                   guint     n_members)
{
  AhBusGroup *group = ah_bus_group_new (fixture->bus, "workers", AH_DELIVERY_QUEUE);
  g_autoptr(GError) error = NULL;

  for (guint i = 0; i < n_members; i++)
    {
      members[i] = fixture_add_agent (fixture, NULL, NULL);
      ah_bus_group_add (group, members[i]->endpoint);
    }
  g_assert_cmpuint (ah_bus_subscribe (fixture->bus, "jobs.*", group, &error), >, 0);
  g_assert_no_error (error);
}

static void
test_route_queue_chunks (Fixture       *fixture,
                         gconstpointer  user_data)
{
  PublishRun run = { { "jobs.x", NULL }, 64 };
  Agent *producer = fixture_add_agent (fixture, step_publish_run, &run);
  Agent *members[4];
  guint expected[4] = { 32, 32, 2, 1 };

  g_test_summary ("A handler's run of messages to a queue group goes out in chunks: a "
                  "burst fills whole handler batches, spread over the workers; a short "
                  "run is spread too; each member gets a contiguous, ordered share");

  add_queue_members (fixture, members, G_N_ELEMENTS (members));
  ah_bus_start (fixture->bus);

  /* 64 messages, 2 workers, handler batches of 32: two chunks of 32. */
  send_to (fixture, producer->id, "go", "");
  fixture_wait_idle (fixture);
  /* 3 messages: an even share per worker is 2, so chunks of 2 and 1. */
  run.n_messages = 3;
  send_to (fixture, producer->id, "go", "");
  fixture_wait_idle (fixture);

  for (guint i = 0; i < G_N_ELEMENTS (members); i++)
    {
      g_autoptr(GArray) sequences = received_sequences (fixture, members[i]->id);

      g_assert_cmpuint (sequences->len, ==, expected[i]);
      for (guint k = 1; k < sequences->len; k++)
        g_assert_cmpuint (g_array_index (sequences, guint64, k), ==,
                          g_array_index (sequences, guint64, k - 1) + 1);
    }
  /* Each chunk arrived as one batch: one handler call for 32 messages. */
  g_assert_cmpuint (members[0]->n_calls, ==, 1);
  g_assert_cmpuint (members[0]->max_batch, ==, 32);
  g_assert_cmpuint (members[1]->n_calls, ==, 1);
  /* Members alternate workers, so the burst used both. */
  g_assert_cmpuint (members[0]->id % 2, !=, members[1]->id % 2);
}

static const AhBusConfig config_publish_64 = {
  .n_workers = 2, .publish_batch = 64, .handler_batch = 32, .overflow = AH_OVERFLOW_BLOCK };

static void
test_route_queue_off_publisher (Fixture       *fixture,
                                gconstpointer  user_data)
{
  /* Exactly a publish batch: the outbox fills and is flushed from inside
   * the handler, which is then still running. */
  PublishRun run = { { "jobs.x", NULL }, 64 };
  Agent *producer = fixture_add_agent (fixture, step_publish_run, &run);
  Agent *members[4];
  guint on_producer_worker = 0, elsewhere = 0;

  g_test_summary ("A flush from inside a publishing handler gives a queue group's chunks "
                  "to workers other than the publisher's while they have less to do");

  add_queue_members (fixture, members, G_N_ELEMENTS (members));
  ah_bus_start (fixture->bus);
  send_to (fixture, producer->id, "go", "");
  fixture_wait_idle (fixture);

  /* Ids go round robin over the workers: the producer's worker is the
   * one of the members with the other parity. Its load counts the
   * running publisher (64 / 32 = 2 handler batches), the other worker's
   * is 0 and then 1 after the first chunk: both chunks go there. */
  for (guint i = 0; i < G_N_ELEMENTS (members); i++)
    {
      g_autoptr(GArray) sequences = received_sequences (fixture, members[i]->id);

      if (members[i]->id % 2 == producer->id % 2)
        on_producer_worker += sequences->len;
      else
        elsewhere += sequences->len;
    }
  g_assert_cmpuint (on_producer_worker, ==, 0);
  g_assert_cmpuint (elsewhere, ==, 64);
}

static void
test_route_outbox_no_route (Fixture       *fixture,
                            gconstpointer  user_data)
{
  PublishRun run = { { "jobs.x", "nowhere", NULL }, 6 };
  Agent *producer = fixture_add_agent (fixture, step_publish_run, &run);
  Agent *subscriber = fixture_add_subscriber (fixture, "jobs.x", NULL, NULL);
  g_autoptr(GArray) sequences = NULL;
  AhBusCounters counters;

  g_test_summary ("Publishes routed at the outbox's flush keep their order around the ones "
                  "nobody hears, which are accepted once and dead-lettered");

  ah_bus_start (fixture->bus);
  send_to (fixture, producer->id, "go", "");
  fixture_wait_idle (fixture);

  sequences = received_sequences (fixture, subscriber->id);
  g_assert_cmpuint (sequences->len, ==, 3);
  g_assert_cmpuint (g_array_index (sequences, guint64, 0), ==, 1);
  g_assert_cmpuint (g_array_index (sequences, guint64, 1), ==, 3);
  g_assert_cmpuint (g_array_index (sequences, guint64, 2), ==, 5);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_NO_ROUTE), ==, 3);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.accepted, ==, 1 + 6);
  g_assert_cmpuint (counters.dead_lettered, ==, 3);
}

/* Records and checks the order; the call holding message 1 waits at the
 * fixture's gate. */
static gboolean
step_sequence_hold_first (Agent           *agent,
                          AhBusCall       *call,
                          const AhMessage *message)
{
  Fixture *fixture = agent->fixture;
  const Sequenced *sequenced = ah_message_get_data (message, NULL);
  gint64 deadline = deadline_in_us (WAIT_US);

  agent_check_sequence (agent, message);
  if (sequenced->sequence != 1)
    return TRUE;
  pthread_mutex_lock (&fixture->lock);
  while (!fixture->gate_open)
    if (!fixture_wait_until (fixture, deadline))
      break;
  pthread_mutex_unlock (&fixture->lock);
  return TRUE;
}

static const AhBusConfig config_batch_of_four = { .n_workers = 1, .handler_batch = 4 };

static void
test_lane_wraparound (Fixture       *fixture,
                      gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, step_sequence_hold_first, NULL);

  g_test_summary ("A mailbox ring that wraps around, and grows while wrapped, keeps every "
                  "message in order");

  /* 6 queued (a ring of 8); the first batch takes 4 and holds: the ring
   * keeps 2 from position 4 on. */
  for (guint i = 1; i <= 6; i++)
    send_sequenced (fixture, agent->id, 0, i);
  ah_bus_start (fixture->bus);
  wait_received (fixture, agent, 1);
  /* 6 more wrap around to the ring's start; the 7th makes it grow while
   * wrapped. */
  for (guint i = 7; i <= 14; i++)
    send_sequenced (fixture, agent->id, 0, i);
  fixture_open_gate (fixture);
  fixture_wait_idle (fixture);

  g_assert_cmpuint (agent->n_received, ==, 14);
  g_assert_false (agent->out_of_order);
  g_assert_cmpuint (agent->max_batch, ==, 4);
}

static const AhBusConfig config_two_batch_of_four = { .n_workers = 2, .handler_batch = 4 };

static void
test_lane_grow_by_run (Fixture       *fixture,
                       gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, step_sequence_hold_first, NULL);
  Burst burst = { agent, 100, 1 };
  Agent *producer = fixture_add_agent (fixture, step_send_burst, &burst);
  g_autoptr(GError) error = NULL;

  g_test_summary ("A handler's run of messages to one mailbox whose ring is wrapped "
                  "makes room for the whole run at once, and keeps every message in order");

  g_assert_true (agent->endpoint != producer->endpoint);
  /* As in /bus/lane/wraparound: the ring of 8 keeps 2 from position 4
   * on, then 3 more wrap around to its start. */
  for (guint i = 1; i <= 6; i++)
    send_sequenced (fixture, agent->id, 0, i);
  ah_bus_start (fixture->bus);
  wait_received (fixture, agent, 1);
  for (guint i = 7; i <= 9; i++)
    send_sequenced (fixture, agent->id, 0, i);
  /* One flush of 100 to it, from the other worker: the ring grows from
   * 8 to 128 slots in one step, while wrapped. */
  g_assert_true (ah_bus_send (fixture->bus, AH_AGENT_ID_NONE, producer->id, "go", "", 0,
                              AH_PRIORITY_NORMAL, &error));
  g_assert_no_error (error);
  wait_received (fixture, producer, 1);
  fixture_open_gate (fixture);
  fixture_wait_idle (fixture);

  g_assert_cmpuint (agent->n_received, ==, 9 + 100);
  g_assert_false (agent->out_of_order);
  g_assert_cmpuint (agent->max_batch, ==, 4);
}

/* Messages made on one thread and freed on another, many times over:
 * the message cache hands blocks between threads through its depot. The
 * hand-off uses pthread primitives, which ThreadSanitizer sees. */
typedef struct {
  pthread_mutex_t lock;
  pthread_cond_t  cond;
  GQueue          queue;       /* (element-type AhMessage) under @lock */
  guint           n_messages;
  guint           n_bad;
} CacheHandoff;

static gpointer
cache_consumer_main (gpointer data)
{
  CacheHandoff *handoff = data;

  for (guint i = 0; i < handoff->n_messages; i++)
    {
      AhMessage *message;
      gsize size;
      const guint32 *value;

      pthread_mutex_lock (&handoff->lock);
      while (g_queue_is_empty (&handoff->queue))
        pthread_cond_wait (&handoff->cond, &handoff->lock);
      message = g_queue_pop_head (&handoff->queue);
      pthread_mutex_unlock (&handoff->lock);

      value = ah_message_get_data (message, &size);
      if (size != sizeof (guint32) * 8 || value[0] != i || value[7] != i
          || strcmp (ah_message_get_subject (message), "cache.test") != 0)
        handoff->n_bad++;
      ah__message_unref (message);
    }
  return NULL;
}

static void
test_message_cache_threads (void)
{
  CacheHandoff handoff = { .n_messages = 100000 };
  GThread *consumer;

  g_test_summary ("Small messages made on one thread and freed on another keep their "
                  "content: blocks travel back through the cache's depot intact");

  pthread_mutex_init (&handoff.lock, NULL);
  pthread_cond_init (&handoff.cond, NULL);
  g_queue_init (&handoff.queue);
  consumer = g_thread_new ("cache-consumer", cache_consumer_main, &handoff);
  for (guint i = 0; i < handoff.n_messages; i++)
    {
      guint32 value[8];
      AhMessage *message;

      for (guint k = 0; k < G_N_ELEMENTS (value); k++)
        value[k] = i;
      message = ah__message_new (AH_MESSAGE_PUBLISH, AH_PRIORITY_NORMAL, "cache.test", FALSE,
                                 AH_AGENT_ID_NONE, AH_AGENT_ID_NONE, 0, value, sizeof value);
      pthread_mutex_lock (&handoff.lock);
      g_queue_push_tail (&handoff.queue, message);
      pthread_cond_signal (&handoff.cond);
      pthread_mutex_unlock (&handoff.lock);
    }
  g_thread_join (consumer);
  g_assert_cmpuint (handoff.n_bad, ==, 0);
  pthread_cond_destroy (&handoff.cond);
  pthread_mutex_destroy (&handoff.lock);
}

/* Allocations and frees in a random order, crossing the cache's
 * magazine boundaries back and forth: a block is never handed out twice
 * while live, and a live message keeps its content. */
static void
test_message_cache_reuse (void)
{
  g_autoptr(GHashTable) live = g_hash_table_new (NULL, NULL);
  g_autoptr(GPtrArray) messages = g_ptr_array_new ();
  guint n_made = 0;

  g_test_summary ("The message cache never hands out a block that is still in use, "
                  "whatever the order of allocations and frees");

  for (guint step = 0; step < 200000; step++)
    {
      /* Drift between a few and a few hundred live messages. */
      gboolean make = messages->len == 0
                      || (messages->len < 400 && g_test_rand_int_range (0, 100) < 52);

      if (make)
        {
          guint32 value = n_made++;
          AhMessage *message = ah__message_new (AH_MESSAGE_PUBLISH, AH_PRIORITY_NORMAL,
                                                "cache.reuse", FALSE, AH_AGENT_ID_NONE,
                                                AH_AGENT_ID_NONE, value, &value, sizeof value);

          g_assert_false (g_hash_table_contains (live, message));
          g_hash_table_add (live, message);
          g_ptr_array_add (messages, message);
        }
      else
        {
          guint i = (guint) g_test_rand_int_range (0, (gint32) messages->len);
          AhMessage *message = g_ptr_array_steal_index_fast (messages, i);
          const guint32 *value = ah_message_get_data (message, NULL);

          g_assert_cmpuint (*value, ==, (guint32) ah_message_get_correlation (message));
          g_hash_table_remove (live, message);
          ah__message_unref (message);
        }
    }
  for (guint i = 0; i < messages->len; i++)
    ah__message_unref (g_ptr_array_index (messages, i));
}

/* The interning thread's cache must tell buses apart, and subjects that
 * share a cache slot. */
static void
test_subject_intern_cache (void)
{
  AhBus *first = ah_bus_new (NULL);
  AhBus *second = ah_bus_new (NULL);
  const AhSubject *handles[2][40];

  g_test_summary ("Interning the same subjects on two buses, over and over, gives each "
                  "bus its own handles, and always the same ones");

  /* Each subject on one bus then at once on the other (a slot holding
   * the first bus's entry), then all of them again (slots shared by
   * several subjects). */
  for (guint round = 0; round < 3; round++)
    for (guint i = 0; i < G_N_ELEMENTS (handles[0]); i++)
      for (guint b = 0; b < 2; b++)
        {
          g_autofree char *subject = g_strdup_printf ("cache.subject%u", i);
          AhBus *bus = b == 0 ? first : second;
          const AhSubject *handle = ah_bus_intern_subject (bus, subject, NULL);

          g_assert_nonnull (handle);
          g_assert_cmpstr (ah_subject_get_string (handle), ==, subject);
          g_assert_true (ah_bus_intern_subject (bus, subject, NULL) == handle);
          if (round == 0)
            handles[b][i] = handle;
          else
            g_assert_true (handle == handles[b][i]);
          if (b == 1)
            g_assert_true (handle != handles[0][i]);
        }
  ah_bus_free (first);
  ah_bus_free (second);

  /* A new bus, maybe at a freed one's address, gets handles of its own. */
  first = ah_bus_new (NULL);
  for (guint i = 0; i < G_N_ELEMENTS (handles[0]); i++)
    {
      g_autofree char *subject = g_strdup_printf ("cache.subject%u", i);
      const AhSubject *handle = ah_bus_intern_subject (first, subject, NULL);

      g_assert_cmpstr (ah_subject_get_string (handle), ==, subject);
      g_assert_true (ah_bus_intern_subject (first, subject, NULL) == handle);
    }
  ah_bus_free (first);
}

static gpointer
select_if_data (gpointer user_data,
                gpointer data)
{
  Agent *agent = user_data;

  return agent->data == data ? agent : NULL;
}

static gboolean
other_handle (AhBusCall               *call,
              const AhMessage * const *messages,
              guint                    n_messages,
              gpointer                 user_data,
              GError                 **error)
{
  return TRUE;
}

static void
test_endpoint_select (Fixture       *fixture,
                      gconstpointer  user_data)
{
  static int mark;
  Agent *agent = fixture_add_agent (fixture, NULL, &mark);
  Agent *unmarked = fixture_add_agent (fixture, NULL, NULL);
  AhEndpoint *other = ah_bus_endpoint_new (fixture->bus, other_handle, agent);

  g_test_summary ("ah_bus_endpoint_select finds an endpoint by id, with its handler and "
                  "the caller's test on its user data, and nothing once it is closed");

  g_assert_true (ah_bus_endpoint_select (fixture->bus, agent->id, agent_handle,
                                         select_if_data, &mark) == agent);
  /* The caller's test says no. */
  g_assert_null (ah_bus_endpoint_select (fixture->bus, unmarked->id, agent_handle,
                                         select_if_data, &mark));
  /* Another handler: its user data is not looked at. */
  g_assert_null (ah_bus_endpoint_select (fixture->bus, ah_endpoint_get_id (other), agent_handle,
                                         select_if_data, &mark));
  /* No such id. */
  g_assert_null (ah_bus_endpoint_select (fixture->bus, 999999, agent_handle,
                                         select_if_data, &mark));
  ah_bus_endpoint_close (fixture->bus, agent->endpoint);
  g_assert_null (ah_bus_endpoint_select (fixture->bus, agent->id, agent_handle,
                                         select_if_data, &mark));
  ah_bus_endpoint_close (fixture->bus, other);
}

/* ---- Workers sharing a CPU ------------------------------------------------ */

typedef struct {
  Agent *peer;
  guint  remaining;    /* round trips still to start (the pinger's) */
  guint  completed;
} PingPong;

static gboolean
step_ping_pong (Agent           *agent,
                AhBusCall       *call,
                const AhMessage *message)
{
  PingPong *state = agent->data;
  const char *subject = ah_message_get_subject (message);

  if (strcmp (subject, "ping") == 0)
    return ah_bus_call_send (call, state->peer->id, "pong", "", 0);
  if (strcmp (subject, "pong") == 0)
    state->completed++;
  if (state->remaining > 0)
    {
      state->remaining--;
      return ah_bus_call_send (call, state->peer->id, "ping", "", 0);
    }
  return TRUE;
}

static void
test_workers_share_cpu (Fixture       *fixture,
                        gconstpointer  user_data)
{
  const guint n_round_trips = 2000;
  PingPong ping = { NULL, n_round_trips, 0 }, pong = { NULL, 0, 0 };
  Agent *pinger = fixture_add_agent (fixture, step_ping_pong, &ping);
  Agent *ponger = fixture_add_agent (fixture, step_ping_pong, &pong);
  cpu_set_t allowed, one;
  AhBusCounters counters;
  int cpu = -1;

  g_test_summary ("Two workers the scheduler keeps on one CPU still make progress, and a "
                  "spinning worker hands its CPU to the other when that one waits for it");

  ping.peer = ponger;
  pong.peer = pinger;
  /* The workers inherit the starting thread's CPUs: give them one. */
  g_assert_cmpint (sched_getaffinity (0, sizeof allowed, &allowed), ==, 0);
  for (int i = 0; i < CPU_SETSIZE && cpu < 0; i++)
    if (CPU_ISSET (i, &allowed))
      cpu = i;
  CPU_ZERO (&one);
  CPU_SET (cpu, &one);
  g_assert_cmpint (sched_setaffinity (0, sizeof one, &one), ==, 0);
  ah_bus_start (fixture->bus);
  g_assert_cmpint (sched_setaffinity (0, sizeof allowed, &allowed), ==, 0);

  send_to (fixture, pinger->id, "go", "");
  fixture_wait_idle (fixture);

  g_assert_cmpuint (ping.completed, ==, n_round_trips);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.delivered, ==, 1 + 2 * n_round_trips);
  g_assert_cmpuint (counters.cpu_handoffs, >, 0);
}

/* ---- Work stealing ------------------------------------------------------- */

#define STEAL_N_BUSY 8

/* An endpoint whose handler takes a while, so its worker's run queue
 * stays long. Its fields are touched only by its handler, one call at a
 * time (in_handler checks that), whichever worker runs it. */
typedef struct {
  AhEndpoint  *endpoint;
  AhAgentId    tick_to;
  atomic_int  *held_once;       /* shared: set by the first call, which holds its worker */
  atomic_int   in_handler;
  atomic_uint  workers_seen;    /* a bit per worker its handler ran on */
  guint64      next_sequence;
  guint        n_received;
  gboolean     overlapped;
  gboolean     out_of_order;
} Busy;

static gboolean
busy_handle (AhBusCall               *call,
             const AhMessage * const *messages,
             guint                    n_messages,
             gpointer                 user_data,
             GError                 **error)
{
  Busy *busy = user_data;
  gint64 until = g_get_monotonic_time () + 20;

  if (atomic_exchange (&busy->in_handler, 1) != 0)
    busy->overlapped = TRUE;
  atomic_fetch_or (&busy->workers_seen, 1u << ah_bus_call_get_worker (call));
  /* The first call holds its worker, with the other busy endpoints
   * waiting on its run queue, until the other worker has taken one,
   * ticking it every 200 us: a worker looks for work to take when it
   * runs out of its own, so the test does not depend on how the threads
   * happen to be scheduled (ASan, a loaded machine). Bounded: after 5 s
   * the steal count fails the test. */
  if (atomic_exchange (busy->held_once, 1) == 0)
    {
      AhBusCounters counters = { 0 };

      for (guint i = 0; i < 25000 && counters.steals == 0; i++)
        {
          g_assert_true (ah_bus_call_send (call, busy->tick_to, "tick", NULL, 0));
          g_usleep (200);
          ah_bus_get_counters (ah_bus_call_get_bus (call), &counters);
        }
    }
  for (guint i = 0; i < n_messages; i++)
    {
      gsize size;
      const guint64 *sequence = ah_message_get_data (messages[i], &size);

      g_assert_cmpuint (size, ==, sizeof *sequence);
      if (*sequence != busy->next_sequence)
        busy->out_of_order = TRUE;
      busy->next_sequence = *sequence + 1;
      busy->n_received++;
    }
  while (g_get_monotonic_time () < until)
    ;
  /* Keeps the other worker coming back to spin, which is when it looks
   * for work to take. */
  g_assert_true (ah_bus_call_send (call, busy->tick_to, "tick", NULL, 0));
  atomic_store (&busy->in_handler, 0);
  return TRUE;
}

static gboolean
tick_handle (AhBusCall               *call,
             const AhMessage * const *messages,
             guint                    n_messages,
             gpointer                 user_data,
             GError                 **error)
{
  return TRUE;
}

/* Each of the @n_busy endpoints got @n_messages, in order, and never ran
 * twice at once. Returns how many of them ran on worker 1 at some point:
 * the steal tests start them all on worker 0. */
static guint
check_busy (Busy    *busy,
            guint    n_busy,
            guint64  n_messages)
{
  guint n_moved = 0;

  for (guint i = 0; i < n_busy; i++)
    {
      g_assert_cmpuint (busy[i].n_received, ==, n_messages);
      g_assert_false (busy[i].out_of_order);
      g_assert_false (busy[i].overlapped);
      if ((atomic_load (&busy[i].workers_seen) & 0x2) != 0)
        n_moved++;
    }
  return n_moved;
}

/* publish_batch 1: a handler's tick goes out at once, not at the end
 * of its call. */
static const AhBusConfig config_steal_roomy = {
  .n_workers = 2, .publish_batch = 1, .mailbox_capacity = 100000, .overflow = AH_OVERFLOW_FAIL };
static const AhBusConfig config_steal_block = {
  .n_workers = 2, .publish_batch = 1, .mailbox_capacity = 8, .handler_batch = 4,
  .overflow = AH_OVERFLOW_BLOCK };

static void
test_steal_under_load (Fixture       *fixture,
                       gconstpointer  user_data)
{
  const guint64 n_messages = 3000;
  Busy busy[STEAL_N_BUSY] = { 0 };
  AhBusGroup *group = ah_bus_group_new (fixture->bus, "load", AH_DELIVERY_BROADCAST);
  g_autoptr(GPtrArray) ticks = g_ptr_array_new ();
  g_autoptr(GError) error = NULL;
  AhBusCounters counters;
  atomic_int held_once = 0;
  guint n_moved;

  g_test_summary ("A worker out of work takes endpoints waiting on the other's run queue: "
                  "each still runs on one worker at a time, gets every message, in order, "
                  "and the account balances");

  /* Endpoints go to workers round robin: every busy endpoint starts on
   * worker 0, every tick endpoint on worker 1. */
  for (guint i = 0; i < STEAL_N_BUSY; i++)
    {
      busy[i].endpoint = ah_bus_endpoint_new (fixture->bus, busy_handle, &busy[i]);
      g_ptr_array_add (ticks, ah_bus_endpoint_new (fixture->bus, tick_handle, NULL));
      busy[i].tick_to = ah_endpoint_get_id (g_ptr_array_index (ticks, 0));
      busy[i].held_once = &held_once;
      ah_bus_group_add (group, busy[i].endpoint);
    }
  g_assert_cmpuint (ah_bus_subscribe (fixture->bus, "load", group, &error), >, 0);
  g_assert_no_error (error);
  ah_bus_start (fixture->bus);

  for (guint64 sequence = 0; sequence < n_messages; sequence++)
    {
      g_assert_true (ah_bus_publish (fixture->bus, AH_AGENT_ID_NONE, "load", &sequence,
                                     sizeof sequence, AH_PRIORITY_NORMAL, &error));
      g_assert_no_error (error);
    }
  fixture_wait_idle (fixture);

  n_moved = check_busy (busy, STEAL_N_BUSY, n_messages);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.steals, >, 0);
  g_assert_cmpuint (n_moved, >, 0);
  g_assert_cmpuint (counters.delivered, >=, STEAL_N_BUSY * n_messages);

  for (guint i = 0; i < STEAL_N_BUSY; i++)
    {
      ah_bus_endpoint_close (fixture->bus, busy[i].endpoint);
      ah_bus_endpoint_close (fixture->bus, g_ptr_array_index (ticks, i));
    }
}

/* A worker that parked is woken to take work: two busy endpoints given
 * to one worker, nothing for the other. Without the wake-up the other
 * would sleep through it all. */
static void
test_steal_wakes_parked (Fixture       *fixture,
                         gconstpointer  user_data)
{
  Busy busy[2] = { 0 };
  AhEndpoint *idle, *idle_too, *tick;
  AhBusCounters counters = { 0 };
  atomic_int held_once = 1;   /* no call holds its worker here */
  guint64 sequence = 0;
  guint n_moved;

  g_test_summary ("A worker asleep with nothing to do is woken when another worker gets a "
                  "second endpoint waiting, and takes one over");

  /* Round robin: the busy endpoints and @tick on worker 0, the idle
   * ones on worker 1, which never gets a message: the busy ones tick an
   * endpoint of their own worker. */
  busy[0].endpoint = ah_bus_endpoint_new (fixture->bus, busy_handle, &busy[0]);
  idle = ah_bus_endpoint_new (fixture->bus, tick_handle, NULL);
  busy[1].endpoint = ah_bus_endpoint_new (fixture->bus, busy_handle, &busy[1]);
  idle_too = ah_bus_endpoint_new (fixture->bus, tick_handle, NULL);
  tick = ah_bus_endpoint_new (fixture->bus, tick_handle, NULL);
  for (guint i = 0; i < 2; i++)
    {
      busy[i].held_once = &held_once;
      busy[i].tick_to = ah_endpoint_get_id (tick);
    }
  ah_bus_start (fixture->bus);

  /* Bounded at 5 s of sending; the steal count then fails the test. */
  for (guint round = 0; round < 50000 && counters.steals == 0; round++)
    {
      for (guint i = 0; i < 2; i++)
        {
          g_autoptr(GError) error = NULL;

          g_assert_true (ah_bus_send (fixture->bus, AH_AGENT_ID_NONE,
                                      ah_endpoint_get_id (busy[i].endpoint), "load", &sequence,
                                      sizeof sequence, AH_PRIORITY_NORMAL, &error));
          g_assert_no_error (error);
        }
      sequence++;
      g_usleep (100);
      ah_bus_get_counters (fixture->bus, &counters);
    }
  fixture_wait_idle (fixture);

  n_moved = check_busy (busy, 2, sequence);
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.steals, >, 0);
  g_assert_cmpuint (n_moved, >, 0);

  ah_bus_endpoint_close (fixture->bus, busy[0].endpoint);
  ah_bus_endpoint_close (fixture->bus, busy[1].endpoint);
  ah_bus_endpoint_close (fixture->bus, idle);
  ah_bus_endpoint_close (fixture->bus, idle_too);
  ah_bus_endpoint_close (fixture->bus, tick);
}

/* ---- Pinning -------------------------------------------------------------- */

static void
test_pin_workers (void)
{
  AhBusConfig one = { .n_workers = 1, .pin_workers = TRUE };
  AhBusConfig too_many = { .n_workers = g_get_num_processors () + 1, .pin_workers = TRUE };
  AhBusConfig *configs[] = { &one, &too_many };

  g_test_summary ("pin_workers puts each worker on a CPU of its own, and pins nothing "
                  "when the workers would have to share CPUs");

  for (guint i = 0; i < G_N_ELEMENTS (configs); i++)
    {
      Fixture fixture;
      AhBusCounters counters;
      Agent *agent;

      fixture_set_up (&fixture, configs[i]);
      if (i == 1)
        g_test_expect_message ("agenthost", G_LOG_LEVEL_MESSAGE, "*would share CPUs*");
      agent = fixture_add_agent (&fixture, NULL, NULL);
      send_to (&fixture, agent->id, "work", "x");
      ah_bus_start (fixture.bus);
      /* Once its message is handled, the worker has set itself up. */
      fixture_wait_idle (&fixture);
      if (i == 1)
        g_test_assert_expected_messages ();
      ah_bus_get_counters (fixture.bus, &counters);
      g_assert_cmpuint (counters.n_pinned, ==, i == 0 ? 1 : 0);
      fixture_tear_down (&fixture, configs[i]);
    }
}

/* ---- Interned subjects ------------------------------------------------ */

typedef struct {
  const AhSubject *subject;
  guint            n_messages;
} InternedRun;

static gboolean
step_publish_interned (Agent           *agent,
                       AhBusCall       *call,
                       const AhMessage *message)
{
  const InternedRun *run = agent->data;

  if (strcmp (ah_message_get_subject (message), "go") != 0)
    return TRUE;
  for (guint i = 1; i <= run->n_messages; i++)
    {
      Sequenced sequenced = { 0, i };

      g_assert_true (ah_bus_call_publish_interned (call, run->subject, &sequenced,
                                                   sizeof sequenced));
    }
  return TRUE;
}

/* Checks every message against the handle in agent->data. */
static gboolean
step_expect_subject (Agent           *agent,
                     AhBusCall       *call,
                     const AhMessage *message)
{
  const AhSubject *subject = agent->data;

  g_assert_true (ah_message_has_subject (message, subject));
  /* Routed by subject, it names it by the interned string itself. */
  g_assert_true (ah_message_get_subject (message) == ah_subject_get_string (subject));
  agent_check_sequence (agent, message);
  return TRUE;
}

static void
test_subject_interned (Fixture       *fixture,
                       gconstpointer  user_data)
{
  g_autoptr(GError) error = NULL;
  const AhSubject *jobs = ah_bus_intern_subject (fixture->bus, "jobs.new", &error);
  const AhSubject *other = ah_bus_intern_subject (fixture->bus, "jobs.old", NULL);
  InternedRun run = { jobs, 50 };
  Agent *producer;
  Agent *consumer;
  AhBusGroup *group;

  g_test_summary ("An interned subject is one handle per subject and bus; publishing "
                  "through it reaches the subscribers in order, and they recognise it by "
                  "pointer; an invalid subject is refused");

  g_assert_no_error (error);
  g_assert_nonnull (jobs);
  g_assert_true (ah_bus_intern_subject (fixture->bus, "jobs.new", NULL) == jobs);
  g_assert_cmpstr (ah_subject_get_string (jobs), ==, "jobs.new");
  g_assert_null (ah_bus_intern_subject (fixture->bus, "jobs.*", &error));
  g_assert_error (error, AH_HOST_ERROR, AH_HOST_ERROR_SUBJECT);

  producer = fixture_add_agent (fixture, step_publish_interned, &run);
  consumer = fixture_add_agent (fixture, step_expect_subject, (gpointer) jobs);
  group = ah_bus_group_new (fixture->bus, "consumers", AH_DELIVERY_QUEUE);
  ah_bus_group_add (group, consumer->endpoint);
  g_assert_cmpuint (ah_bus_subscribe (fixture->bus, "jobs.*", group, NULL), >, 0);
  ah_bus_start (fixture->bus);
  send_to (fixture, producer->id, "go", "");
  fixture_wait_idle (fixture);

  g_assert_cmpuint (consumer->n_received, ==, 50);
  g_assert_false (consumer->out_of_order);
  /* A direct message keeps its own copy of its subject: compared by
   * content, equal subjects still match and others do not. */
  {
    AhMessage *direct = ah__message_new (AH_MESSAGE_DIRECT, AH_PRIORITY_NORMAL, "jobs.new", FALSE,
                                         AH_AGENT_ID_NONE, AH_AGENT_ID_NONE, 0, NULL, 0);

    g_assert_true (ah_message_has_subject (direct, jobs));
    g_assert_false (ah_message_has_subject (direct, other));
    ah__message_unref (direct);
  }
}

static void
test_subject_subscribed (Fixture       *fixture,
                         gconstpointer  user_data)
{
  const AhSubject *event = ah_bus_intern_subject (fixture->bus, "$SYS.agent.spawned", NULL);
  Agent *agent = fixture_add_agent (fixture, NULL, NULL);
  AhBusGroup *group = ah_bus_group_new (fixture->bus, "watchers", AH_DELIVERY_BROADCAST);
  guint id;

  g_test_summary ("Whether an interned subject has a subscription follows subscribes and "
                  "unsubscribes, asked again and again");

  g_assert_false (ah_bus_subject_is_subscribed (fixture->bus, event));
  g_assert_false (ah_bus_subject_is_subscribed (fixture->bus, event));
  ah_bus_group_add (group, agent->endpoint);
  id = ah_bus_subscribe (fixture->bus, "$SYS.agent.*", group, NULL);
  g_assert_cmpuint (id, >, 0);
  g_assert_true (ah_bus_subject_is_subscribed (fixture->bus, event));
  g_assert_true (ah_bus_subject_is_subscribed (fixture->bus, event));
  ah_bus_unsubscribe (fixture->bus, id);
  g_assert_false (ah_bus_subject_is_subscribed (fixture->bus, event));
}

static void
test_close_if_idle (Fixture       *fixture,
                    gconstpointer  user_data)
{
  Agent *busy = fixture_add_agent (fixture, NULL, NULL);
  Agent *idle = fixture_add_agent (fixture, NULL, NULL);

  g_test_summary ("close_if_idle refuses an endpoint with mail and closes one without, "
                  "dead-lettering nothing");

  /* Not started: its message waits in its mailbox. */
  send_to (fixture, busy->id, "work", "x");
  g_assert_false (ah_bus_endpoint_close_if_idle (fixture->bus, busy->endpoint));
  g_assert_true (ah_bus_endpoint_close_if_idle (fixture->bus, idle->endpoint));
  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);
  g_assert_cmpuint (busy->n_received, ==, 1);
  g_assert_cmpuint (fixture->dead->len, ==, 0);

  /* Once handled, it closes; then its id is gone. */
  g_assert_true (ah_bus_endpoint_close_if_idle (fixture->bus, busy->endpoint));
  send_to (fixture, busy->id, "work", "late");
  fixture_wait_idle (fixture);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_NO_AGENT), ==, 1);
}

static void
test_pause_holds_mail (Fixture       *fixture,
                       gconstpointer  user_data)
{
  Agent *paused = fixture_add_agent (fixture, step_check_sequence, NULL);
  Agent *marker = fixture_add_agent (fixture, NULL, NULL);
  AhBusCounters counters;

  g_test_summary ("A paused endpoint is taken off its run queue and gets no batch while "
                  "its mail piles up; after resume it gets all of it, in order, in full "
                  "batches");

  /* Queued before the workers start: it is on the run queue when paused. */
  for (guint64 i = 1; i <= 10; i++)
    send_sequenced (fixture, paused->id, 0, i);
  ah_bus_endpoint_pause (fixture->bus, paused->endpoint);
  for (guint64 i = 11; i <= 100; i++)
    send_sequenced (fixture, paused->id, 0, i);
  ah_bus_start (fixture->bus);

  pass_markers (fixture, marker, 1);
  g_assert_cmpuint (agent_get_n_calls (paused), ==, 0);
  ah_bus_get_counters (fixture->bus, &counters);
  /* The marker's batch may not have settled yet. */
  g_assert_cmpuint (counters.in_flight, >=, 100);
  g_assert_false (ah_bus_is_idle (fixture->bus));

  ah_bus_endpoint_resume (fixture->bus, paused->endpoint);
  fixture_wait_idle (fixture);
  g_assert_cmpuint (paused->n_received, ==, 100);
  g_assert_false (paused->out_of_order);
  g_assert_cmpuint (paused->last_sequence[0], ==, 100);
  /* handler_batch 32: everything was waiting, so 32 + 32 + 32 + 4. */
  g_assert_cmpuint (paused->n_calls, ==, 4);
  g_assert_cmpuint (paused->max_batch, ==, 32);
}

static void
test_pause_waits_for_batch (Fixture       *fixture,
                            gconstpointer  user_data)
{
  GateRace race = { fixture, .call = ah_bus_endpoint_pause };
  Agent *marker;

  g_test_summary ("Pausing waits for the endpoint's running batch to return, and the "
                  "next batch waits for resume");

  race.agent = fixture_add_agent (fixture, step_hold_at_gate, &race);
  marker = fixture_add_agent (fixture, NULL, NULL);
  ah_bus_start (fixture->bus);
  send_to (fixture, race.agent->id, "work", "1");
  send_to (fixture, race.agent->id, "work", "2");

  /* The pause must not return while the handler is held at the gate. */
  gate_race_run (&race);
  g_assert_true (race.finished_before_call_returned);

  /* handler_batch 1: "2" is still queued, and stays so. */
  pass_markers (fixture, marker, 2);
  g_assert_cmpuint (agent_get_n_calls (race.agent), ==, 1);
  g_assert_cmpuint (agent_get_n_received (race.agent), ==, 1);

  ah_bus_endpoint_resume (fixture->bus, race.agent->endpoint);
  fixture_wait_idle (fixture);
  g_assert_cmpuint (race.agent->n_received, ==, 2);
  g_assert_cmpstr (((Received *) g_ptr_array_index (fixture->received, 0))->subject, ==, "work");
}

static void
test_pause_others_run (Fixture       *fixture,
                       gconstpointer  user_data)
{
  Agent *paused = fixture_add_agent (fixture, step_check_sequence, NULL);
  Agent *first = fixture_add_agent (fixture, step_check_sequence, NULL);
  Agent *second = fixture_add_agent (fixture, step_check_sequence, NULL);

  g_test_summary ("While one endpoint is paused, the other endpoints of its worker keep "
                  "getting their batches");

  ah_bus_start (fixture->bus);
  ah_bus_endpoint_pause (fixture->bus, paused->endpoint);
  for (guint64 i = 1; i <= 200; i++)
    {
      send_sequenced (fixture, first->id, 0, i);
      send_sequenced (fixture, paused->id, 0, i);
      send_sequenced (fixture, second->id, 0, i);
    }
  wait_received (fixture, first, 200);
  wait_received (fixture, second, 200);
  g_assert_cmpuint (agent_get_n_received (paused), ==, 0);
  g_assert_false (first->out_of_order);
  g_assert_false (second->out_of_order);

  ah_bus_endpoint_resume (fixture->bus, paused->endpoint);
  fixture_wait_idle (fixture);
  g_assert_cmpuint (paused->n_received, ==, 200);
  g_assert_false (paused->out_of_order);
}

static const AhBusConfig config_pause_block = {
  .n_workers = 1, .publish_batch = 16, .handler_batch = 7, .mailbox_capacity = 16,
  .overflow = AH_OVERFLOW_BLOCK };

/* The concurrent test: per consumer, two sending threads. */
#define PAUSE_N_MESSAGES 5000

static void
test_pause_concurrent (Fixture       *fixture,
                       gconstpointer  user_data)
{
  const guint total = 2 * PAUSE_N_MESSAGES;
  Agent *consumers[2];
  ExternalSender senders[4];
  pthread_t threads[4];
  guint n_pauses = 0;
  gboolean one_done = FALSE;

  g_test_summary ("Pausing and resuming consumers over and over while several threads "
                  "send to them loses, duplicates and reorders nothing, and a paused "
                  "consumer handles nothing");

  for (guint i = 0; i < 2; i++)
    consumers[i] = fixture_add_agent (fixture, step_check_sequence, NULL);
  ah_bus_start (fixture->bus);
  for (guint slot = 0; slot < 4; slot++)
    {
      senders[slot] = (ExternalSender) { fixture, consumers[slot / 2], slot, PAUSE_N_MESSAGES };
      g_assert_cmpint (pthread_create (&threads[slot], NULL, external_sender_main,
                                       &senders[slot]), ==, 0);
    }

  /* Stops when either consumer has everything: pausing the other one
   * over and over could then keep it from ever getting a turn. */
  for (guint round = 0; !one_done; round++)
    {
      Agent *paused = consumers[round % 2];
      Agent *running = consumers[(round + 1) % 2];
      gint64 deadline = deadline_in_us (WAIT_US);
      guint paused_before, paused_after, running_before;

      ah_bus_endpoint_pause (fixture->bus, paused->endpoint);
      pthread_mutex_lock (&fixture->lock);
      paused_before = paused->n_received;
      running_before = running->n_received;
      /* Long enough for a paused consumer that still ran to show it: the
       * other one gets some batches meanwhile (or everything). */
      while (running->n_received < MIN (running_before + 16, total))
        if (!fixture_wait_until (fixture, deadline))
          break;
      paused_after = paused->n_received;
      one_done = running->n_received == total || paused->n_received == total;
      pthread_mutex_unlock (&fixture->lock);
      g_assert_cmpuint (paused_after, ==, paused_before);
      ah_bus_endpoint_resume (fixture->bus, paused->endpoint);
      n_pauses++;
    }

  for (guint slot = 0; slot < 4; slot++)
    pthread_join (threads[slot], NULL);
  fixture_wait_idle (fixture);
  g_test_message ("%u pauses while sending", n_pauses);
  g_assert_cmpuint (n_pauses, >=, 1);
  for (guint i = 0; i < 2; i++)
    {
      g_assert_cmpuint (consumers[i]->n_received, ==, total);
      g_assert_false (consumers[i]->out_of_order);
      g_assert_cmpuint (consumers[i]->last_sequence[2 * i], ==, PAUSE_N_MESSAGES);
      g_assert_cmpuint (consumers[i]->last_sequence[2 * i + 1], ==, PAUSE_N_MESSAGES);
    }
  g_assert_cmpuint (fixture->dead->len, ==, 0);
}

static void
test_pause_resume_unpaused (Fixture       *fixture,
                            gconstpointer  user_data)
{
  Agent *agent = fixture_add_agent (fixture, NULL, NULL);

  g_test_summary ("Resuming an endpoint that is not paused changes nothing, idle or "
                  "scheduled; pausing twice is pausing once");

  ah_bus_endpoint_resume (fixture->bus, agent->endpoint);
  g_assert_true (ah_bus_is_idle (fixture->bus));

  /* Scheduled already: a second place on the run queue would corrupt it. */
  for (guint i = 0; i < 3; i++)
    send_to (fixture, agent->id, "work", "x");
  ah_bus_endpoint_resume (fixture->bus, agent->endpoint);
  ah_bus_endpoint_resume (fixture->bus, agent->endpoint);
  ah_bus_start (fixture->bus);
  fixture_wait_idle (fixture);
  g_assert_cmpuint (agent->n_received, ==, 3);
  g_assert_cmpuint (agent->n_calls, ==, 1);

  ah_bus_endpoint_pause (fixture->bus, agent->endpoint);
  ah_bus_endpoint_pause (fixture->bus, agent->endpoint);
  send_to (fixture, agent->id, "work", "x");
  ah_bus_endpoint_resume (fixture->bus, agent->endpoint);
  fixture_wait_idle (fixture);
  g_assert_cmpuint (agent->n_received, ==, 4);
  ah_bus_endpoint_resume (fixture->bus, agent->endpoint);
  g_assert_true (ah_bus_is_idle (fixture->bus));
}

static void
test_pause_close (Fixture       *fixture,
                  gconstpointer  user_data)
{
  Agent *paused = fixture_add_agent (fixture, NULL, NULL);
  Agent *marker = fixture_add_agent (fixture, NULL, NULL);
  AhAgentId paused_id = paused->id;

  g_test_summary ("Closing a paused endpoint dead-letters its mail (agent-stopped) and "
                  "leaves the bus idle");

  ah_bus_start (fixture->bus);
  ah_bus_endpoint_pause (fixture->bus, paused->endpoint);
  for (guint i = 0; i < 5; i++)
    send_to (fixture, paused->id, "work", "x");
  pass_markers (fixture, marker, 1);
  g_assert_false (ah_bus_is_idle (fixture->bus));

  ah_bus_endpoint_close (fixture->bus, paused->endpoint);
  fixture_wait_idle (fixture);
  g_assert_cmpuint (paused->n_received, ==, 0);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_AGENT_STOPPED), ==, 5);
  g_assert_cmpuint (((DeadLetter *) g_ptr_array_index (fixture->dead, 0))->intended, ==,
                    paused_id);
  send_to (fixture, paused_id, "work", "x");
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_NO_AGENT), ==, 1);
}

static void
test_pause_wait_idle (Fixture       *fixture,
                      gconstpointer  user_data)
{
  Agent *paused = fixture_add_agent (fixture, NULL, NULL);
  Agent *marker = fixture_add_agent (fixture, NULL, NULL);
  AhBusCounters counters;
  guint n_idle_calls;
  gint64 deadline;

  g_test_summary ("The bus is not idle while a paused endpoint holds mail: wait_idle "
                  "times out and the idle func is not called until it is resumed");

  ah_bus_endpoint_pause (fixture->bus, paused->endpoint);
  ah_bus_start (fixture->bus);
  for (guint i = 0; i < 3; i++)
    send_to (fixture, paused->id, "work", "x");
  pass_markers (fixture, marker, 1);

  g_assert_false (ah_bus_is_idle (fixture->bus));
  g_assert_false (ah_bus_wait_idle (fixture->bus, 50 * 1000));
  ah_bus_get_counters (fixture->bus, &counters);
  g_assert_cmpuint (counters.in_flight, >=, 3);
  pthread_mutex_lock (&fixture->lock);
  n_idle_calls = fixture->n_idle_calls;
  pthread_mutex_unlock (&fixture->lock);
  g_assert_cmpuint (n_idle_calls, ==, 0);

  ah_bus_endpoint_resume (fixture->bus, paused->endpoint);
  fixture_wait_idle (fixture);
  g_assert_cmpuint (paused->n_received, ==, 3);
  /* The idle func runs just after wait_idle's waiters are woken. */
  deadline = deadline_in_us (WAIT_US);
  pthread_mutex_lock (&fixture->lock);
  while (fixture->n_idle_calls == 0)
    if (!fixture_wait_until (fixture, deadline))
      break;
  n_idle_calls = fixture->n_idle_calls;
  pthread_mutex_unlock (&fixture->lock);
  g_assert_cmpuint (n_idle_calls, >=, 1);
}

static const AhBusConfig config_pause_deferred = {
  .n_workers = 1, .handler_batch = 8, .mailbox_capacity = 8, .overflow = AH_OVERFLOW_BLOCK };

static void
test_pause_deferred (Fixture       *fixture,
                     gconstpointer  user_data)
{
  Agent *consumer = fixture_add_agent (fixture, step_check_sequence, NULL);
  Burst burst;
  Agent *sender = fixture_add_agent (fixture, step_send_burst, &burst);
  Agent *marker = fixture_add_agent (fixture, NULL, NULL);

  g_test_summary ("A paused endpoint whose messages wait for room elsewhere does not "
                  "retry them when room is made; after resume it does, in order");

  burst = (Burst) { consumer, 100, 0 };
  ah_bus_endpoint_pause (fixture->bus, consumer->endpoint);
  ah_bus_start (fixture->bus);

  /* The consumer's mailbox takes 8; the sender keeps the other 92 and
   * waits for room. */
  send_to (fixture, sender->id, "go", "");
  pass_markers (fixture, marker, 1);
  g_assert_cmpuint (agent_get_n_received (consumer), ==, 0);

  ah_bus_endpoint_pause (fixture->bus, sender->endpoint);
  ah_bus_endpoint_resume (fixture->bus, consumer->endpoint);
  /* The consumer takes its 8 and so wakes the sender, which must not
   * retry: had it, the consumer would get more within these passes. */
  pass_markers (fixture, marker, 3);
  g_assert_cmpuint (agent_get_n_received (consumer), ==, 8);
  g_assert_false (ah_bus_is_idle (fixture->bus));

  ah_bus_endpoint_resume (fixture->bus, sender->endpoint);
  fixture_wait_idle (fixture);
  g_assert_cmpuint (consumer->n_received, ==, 100);
  g_assert_false (consumer->out_of_order);
  g_assert_cmpuint (consumer->last_sequence[0], ==, 100);
  g_assert_cmpuint (sender->n_received, ==, 1);
}

static void
test_pause_group (Fixture       *fixture,
                  gconstpointer  user_data)
{
  AhBusGroup *group = ah_bus_group_new (fixture->bus, "workers", AH_DELIVERY_QUEUE);
  Agent *paused = fixture_add_agent (fixture, NULL, NULL);
  Agent *running = fixture_add_agent (fixture, NULL, NULL);
  Agent *marker = fixture_add_agent (fixture, NULL, NULL);   /* the paused one's worker */
  g_autoptr(GError) error = NULL;

  g_test_summary ("A paused endpoint stays in its queue group and keeps its share, which "
                  "waits in its mailbox until resume");

  ah_bus_group_add (group, paused->endpoint);
  ah_bus_group_add (group, running->endpoint);
  g_assert_cmpuint (ah_bus_subscribe (fixture->bus, "jobs.*", group, &error), >, 0);
  g_assert_no_error (error);
  ah_bus_start (fixture->bus);
  ah_bus_endpoint_pause (fixture->bus, paused->endpoint);
  g_assert_cmpuint (ah_bus_group_get_size (group), ==, 2);

  for (guint i = 0; i < 20; i++)
    publish (fixture, "jobs.new", "job");
  wait_received (fixture, running, 10);
  pass_markers (fixture, marker, 1);
  g_assert_cmpuint (agent_get_n_received (paused), ==, 0);
  g_assert_cmpuint (agent_get_n_received (running), ==, 10);

  ah_bus_endpoint_resume (fixture->bus, paused->endpoint);
  fixture_wait_idle (fixture);
  g_assert_cmpuint (paused->n_received, ==, 10);
  g_assert_cmpuint (count_dead (fixture, AH_DEAD_LETTER_NO_ROUTE), ==, 0);
}

static gboolean
step_pause_target (Agent           *agent,
                   AhBusCall       *call,
                   const AhMessage *message)
{
  Agent *target = agent->data;

  ah_bus_endpoint_pause (ah_bus_call_get_bus (call), target->endpoint);
  return TRUE;
}

/* In a subprocess: the critical aborts it. */
static void
check_pause_from_handler_refused (Fixture  *fixture,
                                  gboolean  own)
{
  if (g_test_subprocess ())
    {
      Agent *target = fixture_add_agent (fixture, NULL, NULL);
      Agent *pauser = fixture_add_agent (fixture, step_pause_target, target);

      if (own)
        pauser->data = pauser;
      ah_bus_start (fixture->bus);
      send_to (fixture, pauser->id, "go", "");
      fixture_wait_idle (fixture);
      return;
    }
  g_test_trap_subprocess (NULL, 0, G_TEST_SUBPROCESS_DEFAULT);
  g_test_trap_assert_failed ();
  g_test_trap_assert_stderr ("*CRITICAL*ah_bus_endpoint_pause*ah_bus_worker_for_thread*");
}

static void
test_pause_from_own_handler (Fixture       *fixture,
                             gconstpointer  user_data)
{
  g_test_summary ("Pausing an endpoint from its own handler is refused with a critical "
                  "(it would wait for itself)");

  check_pause_from_handler_refused (fixture, TRUE);
}

static void
test_pause_from_other_handler (Fixture       *fixture,
                               gconstpointer  user_data)
{
  g_test_summary ("Pausing from any handler is refused with a critical: the worker "
                  "would stall every endpoint it runs");

  check_pause_from_handler_refused (fixture, FALSE);
}

#if defined (__SANITIZE_THREAD__)
#  define TEST_UNDER_TSAN 1
#elif defined (__has_feature)
#  if __has_feature (thread_sanitizer)
#    define TEST_UNDER_TSAN 1
#  endif
#endif

int
main (int    argc,
      char **argv)
{
#ifdef TEST_UNDER_TSAN
  /* GLib before 2.76 recycles GSlice memory between threads under a
   * futex ThreadSanitizer cannot see, and reports follow in whatever code
   * uses that memory next. GSlice reads G_SLICE when GLib loads, so the
   * setting takes a fresh start of the program. */
  if (g_strcmp0 (g_getenv ("G_SLICE"), "always-malloc") != 0)
    {
      g_setenv ("G_SLICE", "always-malloc", TRUE);
      execv ("/proc/self/exe", argv);
      g_error ("cannot run the test again with G_SLICE=always-malloc: %s", g_strerror (errno));
    }
#endif

  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);

  g_test_add_func ("/bus/subject/syntax", test_subject_syntax);
  g_test_add_func ("/bus/pattern/match", test_pattern_matching);
  g_test_add_func ("/bus/pattern/trie", test_subject_trie);
  g_test_add_func ("/bus/message/cache-threads", test_message_cache_threads);
  g_test_add_func ("/bus/message/cache-reuse", test_message_cache_reuse);
  g_test_add_func ("/bus/worker/pin", test_pin_workers);

#define BUS_TEST(path, config, func) \
  g_test_add (path, Fixture, config, fixture_set_up, func, fixture_tear_down)

  BUS_TEST ("/bus/config/defaults", NULL, test_config_defaults);
  BUS_TEST ("/bus/route/wildcards", &config_two_workers, test_route_wildcards);
  BUS_TEST ("/bus/route/queue-spread", &config_two_workers, test_route_queue_spread);
  BUS_TEST ("/bus/route/queue-chunks", &config_block_two_workers, test_route_queue_chunks);
  BUS_TEST ("/bus/route/outbox-no-route", &config_block_one_worker, test_route_outbox_no_route);
  BUS_TEST ("/bus/lane/wraparound", &config_batch_of_four, test_lane_wraparound);
  BUS_TEST ("/bus/lane/grow-by-run", &config_two_batch_of_four, test_lane_grow_by_run);
  BUS_TEST ("/bus/route/queue-off-publisher", &config_publish_64, test_route_queue_off_publisher);
  BUS_TEST ("/bus/worker/share-cpu", &config_two_workers, test_workers_share_cpu);
  BUS_TEST ("/bus/worker/steal", &config_steal_roomy, test_steal_under_load);
  BUS_TEST ("/bus/worker/steal-backpressure", &config_steal_block, test_steal_under_load);
  BUS_TEST ("/bus/worker/steal-wakes-parked", &config_two_workers, test_steal_wakes_parked);
  BUS_TEST ("/bus/endpoint/select", &config_two_workers, test_endpoint_select);
  BUS_TEST ("/bus/subject/interned", &config_block_two_workers, test_subject_interned);
  g_test_add_func ("/bus/subject/intern-cache", test_subject_intern_cache);
  BUS_TEST ("/bus/subject/subscribed", &config_one_worker, test_subject_subscribed);
  BUS_TEST ("/bus/close/if-idle", &config_one_worker, test_close_if_idle);
  BUS_TEST ("/bus/route/broadcast-shared", &config_two_workers, test_route_broadcast_shared);
  BUS_TEST ("/bus/route/no-route", &config_one_worker, test_route_no_route);
  BUS_TEST ("/bus/route/invalid", &config_one_worker, test_route_invalid);
  BUS_TEST ("/bus/route/observer", &config_two_workers, test_route_observer);
  BUS_TEST ("/bus/route/uncached", &config_roomy, test_route_uncached);
  BUS_TEST ("/bus/publish/misuse", &config_one_worker, test_publish_misuse);
  BUS_TEST ("/bus/send/direct", &config_two_workers, test_send_direct);
  BUS_TEST ("/bus/send/unknown", &config_one_worker, test_send_unknown);
  BUS_TEST ("/bus/request/reply", &config_two_workers, test_request_reply);
  BUS_TEST ("/bus/request/requester-closed", &config_two_workers, test_request_requester_closed);
  BUS_TEST ("/bus/request/requester-closed-block", &config_request_block,
            test_request_requester_closed);
  BUS_TEST ("/bus/request/requester-closed-timeout", &config_two_workers,
            test_request_requester_closed_timeout);
  BUS_TEST ("/bus/request/timeout", &config_two_workers, test_request_timeout);
  BUS_TEST ("/bus/request/pending", &config_two_workers, test_request_pending_blocks_idle);
  BUS_TEST ("/bus/request/no-responders", &config_one_worker, test_request_no_responders);
  BUS_TEST ("/bus/request/correlation-unique", &config_roomy_two, test_request_correlation_unique);
  BUS_TEST ("/bus/request/interned", &config_one_worker, test_request_interned);
  BUS_TEST ("/bus/request/slot-reused", &config_one_worker, test_request_slot_reused);
  BUS_TEST ("/bus/request/late-reply", &config_two_workers, test_request_late_reply);
  BUS_TEST ("/bus/request/reply-refused", &config_fail_tiny, test_request_reply_refused);
  BUS_TEST ("/bus/order/per-sender", &config_order_fail, test_order_per_sender);
  BUS_TEST ("/bus/order/per-sender-backpressure", &config_order_block, test_order_per_sender);
  BUS_TEST ("/bus/priority/system-first", &config_one_worker, test_priority_system_first);
  BUS_TEST ("/bus/batch/limit", &config_small_batches, test_batch_limit);
  BUS_TEST ("/bus/outbox/flush-mid-call", &config_flush, test_outbox_flush_mid_call);
  BUS_TEST ("/bus/overflow/fail", &config_fail_small, test_overflow_fail);
  BUS_TEST ("/bus/overflow/block-external", &config_block_small, test_overflow_block_external);
  BUS_TEST ("/bus/overflow/block-handler", &config_block_small, test_overflow_block_handler);
  BUS_TEST ("/bus/deliver-local/rally", &config_one_worker, test_deliver_local_rally);
  BUS_TEST ("/bus/deliver-local/full", &config_local_block, test_deliver_local_full);
  BUS_TEST ("/bus/deliver-local/paused", &config_one_worker, test_deliver_local_paused);
  BUS_TEST ("/bus/overflow/block-on-worker", &config_block_one_worker,
            test_overflow_block_on_worker);
  BUS_TEST ("/bus/handler/failure", &config_one_worker, test_handler_failure);
  BUS_TEST ("/bus/retry/other-member", &config_two_workers, test_retry_other_member);
  BUS_TEST ("/bus/retry/same-endpoint", &config_one_worker, test_retry_same_endpoint);
  BUS_TEST ("/bus/retry/once-only", &config_one_worker, test_retry_once_only);
  BUS_TEST ("/bus/close/dead-letters", &config_batch_of_one, test_close_dead_letters);
  BUS_TEST ("/bus/close/waits-for-handler", &config_one_worker, test_close_waits_for_handler);
  BUS_TEST ("/bus/stop/leftovers", &config_one_worker, test_stop_leftovers);
  BUS_TEST ("/bus/stop/drains", &config_two_workers, test_stop_drains);
  BUS_TEST ("/bus/stop/blocked-publisher", &config_block_small, test_stop_blocked_publisher);
  BUS_TEST ("/bus/idle/func-and-wait", &config_two_workers, test_idle_func_and_wait);
  BUS_TEST ("/bus/route/event", &config_two_workers, test_route_event);
  BUS_TEST ("/bus/hold/keeps-busy", &config_two_workers, test_hold_keeps_busy);
  BUS_TEST ("/bus/hold/wait-idle", &config_two_workers, test_hold_wait_idle);
  BUS_TEST ("/bus/correlation/unique", &config_two_workers, test_correlation_unique);
  BUS_TEST ("/bus/send-full/kind", &config_two_workers, test_send_full_kind);
  BUS_TEST ("/bus/send-full/block-never-waits", &config_block_one_worker,
            test_send_full_block_never_waits);
  BUS_TEST ("/bus/send-full/fail-refused", &config_fail_small, test_send_full_fail_refused);
  BUS_TEST ("/bus/send-full/refusals", &config_one_worker, test_send_full_refusals);
  BUS_TEST ("/bus/send-full/from-handler", &config_one_worker, test_send_full_from_handler);
  BUS_TEST ("/bus/tap/external", &config_two_workers, test_tap_external);
  BUS_TEST ("/bus/tap/handlers", &config_two_workers, test_tap_handlers);
  BUS_TEST ("/bus/pause/holds-mail", &config_one_worker, test_pause_holds_mail);
  BUS_TEST ("/bus/pause/waits-for-batch", &config_batch_of_one, test_pause_waits_for_batch);
  BUS_TEST ("/bus/pause/others-run", &config_one_worker, test_pause_others_run);
  BUS_TEST ("/bus/pause/concurrent", &config_order_fail, test_pause_concurrent);
  BUS_TEST ("/bus/pause/concurrent-backpressure", &config_pause_block, test_pause_concurrent);
  BUS_TEST ("/bus/pause/resume-unpaused", &config_one_worker, test_pause_resume_unpaused);
  BUS_TEST ("/bus/pause/close", &config_one_worker, test_pause_close);
  BUS_TEST ("/bus/pause/wait-idle", &config_one_worker, test_pause_wait_idle);
  BUS_TEST ("/bus/pause/deferred", &config_pause_deferred, test_pause_deferred);
  BUS_TEST ("/bus/pause/group", &config_two_workers, test_pause_group);
  BUS_TEST ("/bus/pause/from-own-handler", &config_one_worker, test_pause_from_own_handler);
  BUS_TEST ("/bus/pause/from-other-handler", &config_two_workers,
            test_pause_from_other_handler);

#undef BUS_TEST

  return g_test_run ();
}
