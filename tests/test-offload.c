/* Offloading blocking work, through the public API and the offloader
 * test plugin (tests/plugins/offloader.c): results come back to the
 * agent that asked, with its id, after what was already queued; the
 * queue is bounded; the host is not idle while an offload is pending;
 * stopping cancels what runs and drops what waits; every destroy notify
 * runs exactly once (the plugin writes each one to a ledger file).
 *
 * The tests synchronise on pipes the offloaded functions read or write,
 * never on sleeps.
 *
 * SPDX-License-Identifier: MIT
 */
#include <agenthost/agenthost.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define WAIT_US (20 * G_USEC_PER_SEC)   /* generous: sanitizers are slow */

/* ---- What the agents publish, seen by a host subscription --------------- */

typedef struct {
  char      *subject;
  AhAgentId  sender;
  char      *text;
} Seen;

typedef struct {
  GMutex     lock;
  GCond      cond;
  GPtrArray *seen;     /* (element-type Seen) under @lock, in arrival order */
} Observed;

static void
seen_free (gpointer data)
{
  Seen *seen = data;

  g_free (seen->subject);
  g_free (seen->text);
  g_free (seen);
}

static void
observed_add (const AhMessage *message,
              gpointer         user_data)
{
  Observed *observed = user_data;
  Seen *seen = g_new0 (Seen, 1);
  gsize size;
  const char *data = ah_message_get_data (message, &size);

  seen->subject = g_strdup (ah_message_get_subject (message));
  seen->sender = ah_message_get_sender (message);
  seen->text = g_strndup (data, size);
  g_mutex_lock (&observed->lock);
  g_ptr_array_add (observed->seen, seen);
  g_cond_broadcast (&observed->cond);
  g_mutex_unlock (&observed->lock);
}

static guint
observed_count_unlocked (Observed   *observed,
                         const char *subject)
{
  guint n = 0;

  for (guint i = 0; i < observed->seen->len; i++)
    if (g_str_equal (((Seen *) g_ptr_array_index (observed->seen, i))->subject, subject))
      n++;
  return n;
}

/* Waits until @n messages on @subject have been seen; fails the test
 * after WAIT_US. */
static void
observed_wait (Observed   *observed,
               const char *subject,
               guint       n)
{
  gint64 deadline = g_get_monotonic_time () + WAIT_US;

  g_mutex_lock (&observed->lock);
  while (observed_count_unlocked (observed, subject) < n)
    if (!g_cond_wait_until (&observed->cond, &observed->lock, deadline))
      break;
  g_assert_cmpuint (observed_count_unlocked (observed, subject), >=, n);
  g_mutex_unlock (&observed->lock);
}

/* The message on @subject whose text starts with "@tag ", or NULL. Read
 * after idle. */
static Seen *
observed_find (Observed   *observed,
               const char *subject,
               const char *tag)
{
  g_autofree char *prefix = g_strconcat (tag, " ", NULL);

  for (guint i = 0; i < observed->seen->len; i++)
    {
      Seen *seen = g_ptr_array_index (observed->seen, i);

      if (g_str_equal (seen->subject, subject)
          && (g_str_has_prefix (seen->text, prefix) || g_str_equal (seen->text, tag)))
        return seen;
    }
  return NULL;
}

/* ---- A host running the offloader ------------------------------------------ */

typedef struct {
  AhHost   *host;
  Observed  observed;
  char     *ledger;
  int       ledger_fd;   /* the read end when the ledger is a FIFO, else -1 */
} Fixture;

typedef struct {
  guint    threads;
  guint    queue;
  guint    pool_size;
  guint    handler_batch;   /* 0: the default */
  gboolean fifo_ledger;     /* the test reads destroy notifies as they happen */
} Setup;

static void
fixture_set_up (Fixture       *fixture,
                gconstpointer  user_data)
{
  const Setup *setup = user_data;
  g_autofree char *base_dir = g_test_build_filename (G_TEST_BUILT, ".", NULL);
  g_autofree char *yaml = NULL;
  g_autoptr(GError) error = NULL;
  AhManifest *manifest;

  g_mutex_init (&fixture->observed.lock);
  g_cond_init (&fixture->observed.cond);
  fixture->observed.seen = g_ptr_array_new_with_free_func (seen_free);
  /* G_TEST_OPTION_ISOLATE_DIRS gives each test a fresh, empty one. */
  g_assert_cmpint (g_mkdir_with_parents (g_get_user_cache_dir (), 0700), ==, 0);
  fixture->ledger = g_build_filename (g_get_user_cache_dir (), "ledger", NULL);
  fixture->ledger_fd = -1;
  if (setup->fifo_ledger)
    {
      g_assert_cmpint (mkfifo (fixture->ledger, 0600), ==, 0);
      /* Non-blocking, so this open does not wait for a writer. */
      fixture->ledger_fd = open (fixture->ledger, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
      g_assert_cmpint (fixture->ledger_fd, >=, 0);
    }

  yaml = g_strdup_printf ("name: offload-test\n"
                          "plugin_path: [plugins]\n"
                          "bus: {workers: 2, handler_batch: %u}\n"
                          "offload: {threads: %u, queue: %u}\n"
                          "agents:\n"
                          "  offloader:\n"
                          "    plugin: offloader\n"
                          "    pool_size: %u\n"
                          "    subscribe: [offloader.>]\n"
                          "    config: {ledger: '%s'}\n",
                          setup->handler_batch > 0 ? setup->handler_batch : 32,
                          setup->threads, setup->queue, setup->pool_size, fixture->ledger);
  manifest = ah_manifest_load_data (yaml, strlen (yaml), "offload-test.yaml", base_dir, &error);
  g_assert_no_error (error);
  fixture->host = ah_host_new (manifest, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (ah_host_subscribe (fixture->host, "offload.>", observed_add,
                                       &fixture->observed, &error), >, 0);
  g_assert_no_error (error);
  g_assert_true (ah_host_start (fixture->host, &error));
  g_assert_no_error (error);
}

static void
fixture_tear_down (Fixture       *fixture,
                   gconstpointer  user_data)
{
  g_clear_pointer (&fixture->host, ah_host_free);
  if (fixture->ledger_fd >= 0)
    close (fixture->ledger_fd);
  g_ptr_array_unref (fixture->observed.seen);
  g_cond_clear (&fixture->observed.cond);
  g_mutex_clear (&fixture->observed.lock);
  g_free (fixture->ledger);
}

static void
publish (Fixture    *fixture,
         const char *subject,
         const char *text)
{
  g_autoptr(GError) error = NULL;

  g_assert_true (ah_host_publish (fixture->host, subject, text, strlen (text), &error));
  g_assert_no_error (error);
}

static void
wait_idle (Fixture *fixture)
{
  AhHostStats stats;

  g_assert_true (ah_host_wait_idle (fixture->host, WAIT_US));
  ah_host_get_stats (fixture->host, &stats);
  g_assert_cmpuint (stats.in_flight, ==, 0);
  g_assert_cmpuint (stats.accepted, ==, stats.delivered + stats.dead_lettered + stats.failed);
}

/* Asserts that each of @tags is in the ledger exactly once, and nothing
 * else is: each destroy notify ran once. */
static void
assert_ledger (Fixture            *fixture,
               const char * const *tags)
{
  g_autofree char *contents = NULL;
  g_autoptr(GError) error = NULL;
  g_auto(GStrv) lines = NULL;
  guint n_lines;

  g_file_get_contents (fixture->ledger, &contents, NULL, &error);
  g_assert_no_error (error);
  g_assert_true (g_str_has_suffix (contents, "\n"));
  contents[strlen (contents) - 1] = '\0';
  lines = g_strsplit (contents, "\n", -1);
  n_lines = g_strv_length (lines);
  g_assert_cmpuint (n_lines, ==, g_strv_length ((GStrv) tags));
  for (guint i = 0; tags[i] != NULL; i++)
    {
      guint n = 0;

      for (guint j = 0; j < n_lines; j++)
        if (g_str_equal (lines[j], tags[i]))
          n++;
      if (n != 1)
        g_test_fail_printf ("the destroy notify of '%s' ran %u times", tags[i], n);
    }
}

/* "TAG ID ..." -> ID */
static guint64
text_id (const char *text)
{
  g_auto(GStrv) words = g_strsplit (text, " ", 3);
  guint64 id = 0;

  g_assert_nonnull (words[0]);
  g_assert_nonnull (words[1]);
  g_assert_true (g_ascii_string_to_unsigned (words[1], 10, 1, G_MAXUINT64, &id, NULL));
  return id;
}

typedef struct {
  int read_fd;
  int write_fd;
} Pipe;

static void
fd_clear (int *fd)
{
  if (*fd >= 0)
    close (*fd);
  *fd = -1;
}

static void
pipe_open (Pipe *p)
{
  int fds[2];

  g_assert_cmpint (pipe (fds), ==, 0);
  p->read_fd = fds[0];
  p->write_fd = fds[1];
}

/* Ends what an offloaded read of @p returns. */
static void
pipe_finish (Pipe       *p,
             const char *text)
{
  g_assert_cmpint (write (p->write_fd, text, strlen (text)), ==, (gssize) strlen (text));
  fd_clear (&p->write_fd);
}

static void
pipe_close (Pipe *p)
{
  fd_clear (&p->read_fd);
  fd_clear (&p->write_fd);
}

/* Reads @n bytes from @fd (which may be non-blocking), waiting for them
 * as long as WAIT_US. */
static char *
read_exactly (int   fd,
              gsize n)
{
  gint64 deadline = g_get_monotonic_time () + WAIT_US;
  char *buffer = g_malloc0 (n + 1);
  gsize got = 0;

  while (got < n)
    {
      GPollFD pfd = { fd, G_IO_IN, 0 };
      gint64 left_ms = (deadline - g_get_monotonic_time ()) / 1000;
      gssize r;

      g_assert_cmpint (left_ms, >, 0);
      if (g_poll (&pfd, 1, (gint) left_ms) <= 0)
        continue;
      r = read (fd, buffer + got, n - got);
      if (r < 0 && (errno == EAGAIN || errno == EINTR))
        continue;
      /* 0: a FIFO whose writer came and went before writing all. */
      g_assert_cmpint (r, >, 0);
      got += (gsize) r;
    }
  return buffer;
}

static char *
expected_error_message (const char *path)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *contents = NULL;

  g_assert_false (g_file_get_contents (path, &contents, NULL, &error));
  return g_strdup (error->message);
}

static char *
cancelled_message (void)
{
  g_autoptr(GCancellable) cancellable = g_cancellable_new ();
  g_autoptr(GError) error = NULL;

  g_cancellable_cancel (cancellable);
  g_cancellable_set_error_if_cancelled (cancellable, &error);
  return g_strdup (error->message);
}

/* ---- Tests -------------------------------------------------------------------- */

static const Setup setup_three_agents = { .threads = 2, .queue = 64, .pool_size = 3 };
static const Setup setup_one_thread = { .threads = 1, .queue = 64, .pool_size = 1 };
static const Setup setup_held_agent = {
  .threads = 1, .queue = 64, .pool_size = 1, .handler_batch = 1, .fifo_ledger = TRUE };
static const Setup setup_queue_two = { .threads = 1, .queue = 2, .pool_size = 1 };
static const Setup setup_two_threads = { .threads = 2, .queue = 64, .pool_size = 1 };

static void
test_offload_result_done (Fixture       *fixture,
                          gconstpointer  user_data)
{
  static const char * const tags[] = { "t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", NULL };
  g_autoptr(GHashTable) ids = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL);
  g_autoptr(GHashTable) senders = g_hash_table_new (NULL, NULL);

  g_test_summary ("Each offload's result comes back as OFFLOAD_DONE to the agent that "
                  "asked, from the host on $SYS.offload, with the id ah_offload returned");

  for (guint i = 0; tags[i] != NULL; i++)
    {
      g_autofree char *text = g_strdup_printf ("%s %u", tags[i], i % 3);

      publish (fixture, "offloader.sleep", text);
    }
  wait_idle (fixture);

  g_assert_cmpuint (fixture->observed.seen->len, ==, 2 * 8);
  for (guint i = 0; tags[i] != NULL; i++)
    {
      Seen *started = observed_find (&fixture->observed, "offload.started", tags[i]);
      Seen *result = observed_find (&fixture->observed, "offload.result", tags[i]);
      g_autofree char *expected = NULL;
      guint64 id;

      g_assert_nonnull (started);
      g_assert_nonnull (result);
      id = text_id (started->text);
      /* The plugin found the tag from the correlation id, and checked
       * the envelope: the tag "?" would say otherwise. */
      expected = g_strdup_printf ("%s %" G_GUINT64_FORMAT " done slept %u ms", tags[i], id, i % 3);
      g_assert_cmpstr (result->text, ==, expected);
      g_assert_cmpuint (result->sender, ==, started->sender);
      g_assert_true (g_hash_table_add (ids, g_memdup2 (&id, sizeof id)));
      g_hash_table_add (senders, GSIZE_TO_POINTER ((gsize) started->sender));
    }
  /* Queue delivery spread the work: more than one agent took part. */
  g_assert_cmpuint (g_hash_table_size (senders), >, 1);
  assert_ledger (fixture, tags);
}

static void
test_offload_result_failed (Fixture       *fixture,
                            gconstpointer  user_data)
{
  static const char * const tags[] = { "missing", "nothing", "present", NULL };
  g_autofree char *missing = g_build_filename (g_get_user_cache_dir (), "no-such-file", NULL);
  g_autofree char *present = g_build_filename (g_get_user_cache_dir (), "present.txt", NULL);
  g_autofree char *read_missing = g_strconcat ("missing ", missing, NULL);
  g_autofree char *read_present = g_strconcat ("present ", present, NULL);
  g_autofree char *error_message = expected_error_message (missing);
  g_autofree char *expected = NULL;
  g_autoptr(GError) error = NULL;
  Seen *result;

  g_test_summary ("A function that fails comes back as OFFLOAD_FAILED with its error "
                  "message as payload; one returning neither result nor error fails too");

  g_file_set_contents (present, "file contents", -1, &error);
  g_assert_no_error (error);
  publish (fixture, "offloader.read", read_missing);
  publish (fixture, "offloader.nothing", "nothing -");
  publish (fixture, "offloader.read", read_present);
  wait_idle (fixture);

  result = observed_find (&fixture->observed, "offload.result", "missing");
  g_assert_nonnull (result);
  expected = g_strdup_printf ("missing %" G_GUINT64_FORMAT " failed %s",
                              text_id (result->text), error_message);
  g_assert_cmpstr (result->text, ==, expected);
  g_clear_pointer (&expected, g_free);

  result = observed_find (&fixture->observed, "offload.result", "nothing");
  g_assert_nonnull (result);
  expected = g_strdup_printf ("nothing %" G_GUINT64_FORMAT " failed the offloaded function "
                              "returned no result and no error", text_id (result->text));
  g_assert_cmpstr (result->text, ==, expected);
  g_clear_pointer (&expected, g_free);

  result = observed_find (&fixture->observed, "offload.result", "present");
  g_assert_nonnull (result);
  expected = g_strdup_printf ("present %" G_GUINT64_FORMAT " done file contents",
                              text_id (result->text));
  g_assert_cmpstr (result->text, ==, expected);
  assert_ledger (fixture, tags);
}

static void
test_offload_order (Fixture       *fixture,
                    gconstpointer  user_data)
{
  g_autofree char *read_gate = NULL;
  g_autofree char *block = NULL;
  g_autofree char *destroyed = NULL;
  Pipe gate, hold;
  guint result_index = G_MAXUINT, first_tick_index = G_MAXUINT, n_ticks = 0;

  g_test_summary ("A result sent while messages wait in the agent's mailbox arrives "
                  "after them, in order, as an ordinary message (not overtaking them)");

  pipe_open (&gate);
  pipe_open (&hold);
  read_gate = g_strdup_printf ("gate %d", gate.read_fd);
  block = g_strdup_printf ("hold %d", hold.read_fd);
  publish (fixture, "offloader.read-fd", read_gate);
  observed_wait (&fixture->observed, "offload.started", 1);

  /* The agent is held in its handler (one message per batch), so the
   * ticks wait in its mailbox, and the result is queued behind them:
   * the destroy notify, which the ledger FIFO reports, runs after the
   * result is sent. */
  publish (fixture, "offloader.block", block);
  for (guint i = 1; i <= 5; i++)
    {
      g_autofree char *tick = g_strdup_printf ("tick %u", i);

      publish (fixture, "offloader.tick", tick);
    }
  pipe_finish (&gate, "opened");
  destroyed = read_exactly (fixture->ledger_fd, strlen ("gate\n"));
  g_assert_cmpstr (destroyed, ==, "gate\n");
  pipe_finish (&hold, "x");
  wait_idle (fixture);

  for (guint i = 0; i < fixture->observed.seen->len; i++)
    {
      Seen *seen = g_ptr_array_index (fixture->observed.seen, i);

      if (g_str_equal (seen->subject, "offload.seen"))
        {
          g_autofree char *expected = g_strdup_printf ("tick %u", ++n_ticks);

          g_assert_cmpstr (seen->text, ==, expected);
          first_tick_index = MIN (first_tick_index, i);
        }
      else if (g_str_equal (seen->subject, "offload.result"))
        {
          g_assert_true (g_str_has_suffix (seen->text, " done opened"));
          result_index = i;
        }
    }
  g_assert_cmpuint (n_ticks, ==, 5);
  g_assert_cmpuint (result_index, ==, fixture->observed.seen->len - 1);
  g_assert_cmpuint (first_tick_index, <, result_index);
  pipe_close (&gate);
  pipe_close (&hold);
}

static void
test_offload_queue_bound (Fixture       *fixture,
                          gconstpointer  user_data)
{
  static const char * const tags[] = { "first", "second", "third", "later", NULL };
  g_autofree char *read_first = NULL;
  g_autofree char *read_second = NULL;
  Pipe first, second;

  g_test_summary ("With queue: 2, a third offload while two are pending is refused "
                  "(ah_offload returns 0, its function never runs, its data is freed); "
                  "once they are done the queue takes new work again");

  pipe_open (&first);
  pipe_open (&second);
  read_first = g_strdup_printf ("first %d", first.read_fd);
  read_second = g_strdup_printf ("second %d", second.read_fd);
  publish (fixture, "offloader.read-fd", read_first);
  publish (fixture, "offloader.read-fd", read_second);
  publish (fixture, "offloader.sleep", "third 0");
  observed_wait (&fixture->observed, "offload.refused", 1);

  g_mutex_lock (&fixture->observed.lock);
  g_assert_nonnull (observed_find (&fixture->observed, "offload.refused", "third"));
  g_assert_null (observed_find (&fixture->observed, "offload.started", "third"));
  g_assert_nonnull (observed_find (&fixture->observed, "offload.started", "first"));
  g_assert_nonnull (observed_find (&fixture->observed, "offload.started", "second"));
  g_mutex_unlock (&fixture->observed.lock);

  pipe_finish (&first, "");
  pipe_finish (&second, "");
  wait_idle (fixture);
  publish (fixture, "offloader.sleep", "later 0");
  wait_idle (fixture);

  g_assert_nonnull (observed_find (&fixture->observed, "offload.result", "first"));
  g_assert_nonnull (observed_find (&fixture->observed, "offload.result", "second"));
  g_assert_null (observed_find (&fixture->observed, "offload.result", "third"));
  g_assert_nonnull (observed_find (&fixture->observed, "offload.result", "later"));
  assert_ledger (fixture, tags);
  pipe_close (&first);
  pipe_close (&second);
}

static void
test_offload_not_idle (Fixture       *fixture,
                       gconstpointer  user_data)
{
  static const char * const tags[] = { "pending", NULL };
  g_autofree char *read_gate = NULL;
  AhHostStats stats;
  Pipe gate;

  g_test_summary ("While an offload is pending the system is not idle, although no "
                  "message is in flight; ah_host_wait_idle returns once its result is "
                  "handled");

  pipe_open (&gate);
  read_gate = g_strdup_printf ("pending %d", gate.read_fd);
  publish (fixture, "offloader.read-fd", read_gate);
  observed_wait (&fixture->observed, "offload.started", 1);
  g_assert_false (ah_host_wait_idle (fixture->host, 50 * 1000));
  ah_host_get_stats (fixture->host, &stats);
  g_assert_cmpuint (stats.in_flight, ==, 0);

  pipe_finish (&gate, "");
  g_assert_true (ah_host_wait_idle (fixture->host, WAIT_US));
  /* Idle means handled: the agent's publish of the result is recorded. */
  g_mutex_lock (&fixture->observed.lock);
  g_assert_nonnull (observed_find (&fixture->observed, "offload.result", "pending"));
  g_mutex_unlock (&fixture->observed.lock);
  assert_ledger (fixture, tags);
  pipe_close (&gate);
}

static void
test_offload_agent_gone (Fixture       *fixture,
                         gconstpointer  user_data)
{
  static const char * const tags[] = { "orphan", NULL };
  g_autofree char *read_gate = NULL;
  g_autoptr(GError) error = NULL;
  AhHostStats before, after;
  AhAgentId agent;
  Pipe gate;

  g_test_summary ("The result of an agent that stopped meanwhile is dead-lettered, not "
                  "handed to another agent; its data is still freed once");

  pipe_open (&gate);
  read_gate = g_strdup_printf ("orphan %d", gate.read_fd);
  publish (fixture, "offloader.read-fd", read_gate);
  observed_wait (&fixture->observed, "offload.started", 1);
  g_mutex_lock (&fixture->observed.lock);
  agent = observed_find (&fixture->observed, "offload.started", "orphan")->sender;
  g_mutex_unlock (&fixture->observed.lock);
  g_assert_true (ah_host_terminate (fixture->host, agent, &error));
  g_assert_no_error (error);
  g_assert_cmpuint (ah_host_spawn (fixture->host, "offloader", &error), !=, AH_AGENT_ID_NONE);
  g_assert_no_error (error);
  g_assert_false (ah_host_wait_idle (fixture->host, 50 * 1000));
  ah_host_get_stats (fixture->host, &before);

  pipe_finish (&gate, "late");
  wait_idle (fixture);
  ah_host_get_stats (fixture->host, &after);
  g_assert_cmpuint (after.dead_lettered, ==, before.dead_lettered + 1);
  g_assert_null (observed_find (&fixture->observed, "offload.result", "orphan"));
  g_assert_null (observed_find (&fixture->observed, "offload.result", "?"));
  assert_ledger (fixture, tags);
  pipe_close (&gate);
}

static void
test_offload_stop_cancels (Fixture       *fixture,
                           gconstpointer  user_data)
{
  static const char * const tags[] = { "run1", "run2", "waits", NULL };
  g_autofree char *cancelled = cancelled_message ();
  g_autofree char *run1 = NULL;
  g_autofree char *run2 = NULL;
  gint64 start;
  Pipe notes;

  g_test_summary ("Stopping the host cancels the running functions, whose FAILED results "
                  "still reach their agent; what never ran is dropped; every destroy "
                  "notify runs once and nothing leaks");

  pipe_open (&notes);
  run1 = g_strdup_printf ("run1 600000 %d", notes.write_fd);
  run2 = g_strdup_printf ("run2 600000 %d", notes.write_fd);
  publish (fixture, "offloader.sleep", run1);
  publish (fixture, "offloader.sleep", run2);
  publish (fixture, "offloader.sleep", "waits 600000");
  /* Both threads are inside their functions; the third waits for one. */
  g_free (read_exactly (notes.read_fd, 2));
  observed_wait (&fixture->observed, "offload.started", 3);

  start = g_get_monotonic_time ();
  g_clear_pointer (&fixture->host, ah_host_free);
  g_assert_cmpint (g_get_monotonic_time () - start, <, WAIT_US);

  for (guint i = 0; i < 2; i++)
    {
      Seen *result = observed_find (&fixture->observed, "offload.result", tags[i]);
      g_autofree char *expected = NULL;

      g_assert_nonnull (result);
      expected = g_strdup_printf ("%s %" G_GUINT64_FORMAT " failed %s", tags[i],
                                  text_id (result->text), cancelled);
      g_assert_cmpstr (result->text, ==, expected);
    }
  g_assert_null (observed_find (&fixture->observed, "offload.result", "waits"));
  assert_ledger (fixture, tags);
  pipe_close (&notes);
}

static void
test_offload_misuse (void)
{
  g_test_summary ("ah_offload without a context or a function is a critical, not a crash");

  g_test_expect_message ("agenthost", G_LOG_LEVEL_CRITICAL, "*ctx != NULL*");
  g_assert_cmpuint (ah_offload (NULL, NULL, NULL, NULL), ==, 0);
  g_test_assert_expected_messages ();
}

int
main (int    argc,
      char **argv)
{
  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);

  g_test_add_func ("/offload/misuse/null", test_offload_misuse);

#define OFFLOAD_TEST(path, setup, func) \
  g_test_add (path, Fixture, setup, fixture_set_up, func, fixture_tear_down)

  OFFLOAD_TEST ("/offload/result/done", &setup_three_agents, test_offload_result_done);
  OFFLOAD_TEST ("/offload/result/failed", &setup_two_threads, test_offload_result_failed);
  OFFLOAD_TEST ("/offload/result/agent-gone", &setup_one_thread, test_offload_agent_gone);
  OFFLOAD_TEST ("/offload/order/after-queued", &setup_held_agent, test_offload_order);
  OFFLOAD_TEST ("/offload/queue/bound", &setup_queue_two, test_offload_queue_bound);
  OFFLOAD_TEST ("/offload/idle/pending", &setup_one_thread, test_offload_not_idle);
  OFFLOAD_TEST ("/offload/stop/cancels", &setup_two_threads, test_offload_stop_cancels);

#undef OFFLOAD_TEST

  return g_test_run ();
}
