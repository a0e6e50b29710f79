/* SPDX-License-Identifier: MIT */
/* Tests of the plugin file watch (core/ah-watch.c): one callback per
 * burst of changes, after the file has been quiet for the debounce time,
 * whatever way the file was written. */
#include "ah-watch-private.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include <gio/gio.h>
#include <glib/gstdio.h>

/* Generous against a loaded machine (ASan, two shared cores): only a
 * failing test waits this long. */
#define WAIT_TIMEOUT_US (10 * G_TIME_SPAN_SECOND)

typedef struct {
  char   *path;
  gint64  time;     /* monotonic, when the callback ran */
  gint64  size;     /* of the file then; -1 when it did not exist */
} WatchCall;

typedef struct {
  GMutex     lock;
  GCond      cond;
  GPtrArray *calls;   /* (element-type WatchCall); under @lock */
  char      *dir;
} WatchFixture;

static void
watch_call_free (WatchCall *call)
{
  g_free (call->path);
  g_free (call);
}

/* The AhWatchFunc: runs on the watch thread. */
static void
watch_fixture_record (const char *path, gpointer user_data)
{
  WatchFixture *fixture = user_data;
  WatchCall *call = g_new0 (WatchCall, 1);
  GStatBuf st;

  call->path = g_strdup (path);
  call->time = g_get_monotonic_time ();
  call->size = g_stat (path, &st) == 0 ? (gint64) st.st_size : -1;

  g_mutex_lock (&fixture->lock);
  g_ptr_array_add (fixture->calls, call);
  g_cond_broadcast (&fixture->cond);
  g_mutex_unlock (&fixture->lock);
}

static void
watch_fixture_set_up (WatchFixture *fixture, gconstpointer user_data)
{
  g_mutex_init (&fixture->lock);
  g_cond_init (&fixture->cond);
  fixture->calls = g_ptr_array_new_with_free_func ((GDestroyNotify) watch_call_free);
  /* Under the per-test isolated directories, removed after each test. */
  fixture->dir = g_build_filename (g_get_user_cache_dir (), "watched", NULL);
  g_assert_cmpint (g_mkdir_with_parents (fixture->dir, 0700), ==, 0);
}

static void
watch_fixture_tear_down (WatchFixture *fixture, gconstpointer user_data)
{
  g_ptr_array_unref (fixture->calls);
  g_free (fixture->dir);
  g_cond_clear (&fixture->cond);
  g_mutex_clear (&fixture->lock);
}

/* Waits until at least @n_calls callbacks have been recorded, or until
 * @deadline (monotonic); returns how many there are. */
static guint
watch_fixture_wait (WatchFixture *fixture, guint n_calls, gint64 deadline)
{
  guint n;

  g_mutex_lock (&fixture->lock);
  while (fixture->calls->len < n_calls)
    {
      if (!g_cond_wait_until (&fixture->cond, &fixture->lock, deadline))
        break;
    }
  n = fixture->calls->len;
  g_mutex_unlock (&fixture->lock);
  return n;
}

/* The @index-th call; valid while no other call is recorded or the
 * fixture is torn down: each test reads calls after they have come. */
static const WatchCall *
watch_fixture_call (WatchFixture *fixture, guint index)
{
  const WatchCall *call;

  g_mutex_lock (&fixture->lock);
  g_assert_cmpuint (index, <, fixture->calls->len);
  call = g_ptr_array_index (fixture->calls, index);
  g_mutex_unlock (&fixture->lock);
  return call;
}

static guint
watch_fixture_count (WatchFixture *fixture, const char *path)
{
  guint n = 0;

  g_mutex_lock (&fixture->lock);
  for (guint i = 0; i < fixture->calls->len; i++)
    {
      const WatchCall *call = g_ptr_array_index (fixture->calls, i);

      if (g_str_equal (call->path, path))
        n++;
    }
  g_mutex_unlock (&fixture->lock);
  return n;
}

static void
write_all (int fd, const char *data, gsize size)
{
  gsize n_written = 0;

  while (n_written < size)
    {
      gssize n = write (fd, data + n_written, size - n_written);

      if (n < 0 && errno == EINTR)
        continue;
      g_assert_cmpint (n, >, 0);
      n_written += (gsize) n;
    }
}

static void
test_watch_debounce_pieces (WatchFixture *fixture, gconstpointer user_data)
{
  const guint debounce_ms = 300;
  const guint n_pieces = 5;
  g_autoptr(GError) error = NULL;
  g_autofree char *path = g_build_filename (fixture->dir, "plugin.so", NULL);
  AhWatch *watch;
  const WatchCall *call;
  gint64 last_write;
  int fd;

  g_test_summary ("A file written in several pieces, with pauses shorter than the "
                  "debounce, gives exactly one callback, once the last piece has been "
                  "quiet for the debounce time, and it then sees the whole file");
  watch = ah_watch_new (debounce_ms, watch_fixture_record, fixture);
  g_assert_true (ah_watch_add_file (watch, path, &error));
  g_assert_no_error (error);

  /* One descriptor held open across the pieces, like a linker's: no
   * close (no CHANGES_DONE_HINT) until the end. */
  fd = g_open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  g_assert_cmpint (fd, >=, 0);
  for (guint i = 0; i < n_pieces; i++)
    {
      char piece[1000];

      memset (piece, 'a' + (int) i, sizeof piece);
      if (i > 0)
        g_usleep (debounce_ms * G_TIME_SPAN_MILLISECOND / 4);   /* a slow writer */
      write_all (fd, piece, sizeof piece);
    }
  last_write = g_get_monotonic_time ();
  g_assert_true (g_close (fd, NULL));

  g_assert_cmpuint (watch_fixture_wait (fixture, 1, g_get_monotonic_time () + WAIT_TIMEOUT_US),
                    ==, 1);
  call = watch_fixture_call (fixture, 0);
  g_assert_cmpstr (call->path, ==, path);
  g_assert_cmpint (call->size, ==, n_pieces * 1000);
  g_assert_cmpint (call->time - last_write, >=, (gint64) debounce_ms * G_TIME_SPAN_MILLISECOND);

  /* Nothing more: a second callback would come within a debounce. */
  g_assert_cmpuint (watch_fixture_wait (fixture, 2, g_get_monotonic_time ()
                                        + 3 * debounce_ms * G_TIME_SPAN_MILLISECOND), ==, 1);
  ah_watch_free (watch);
}

static void
test_watch_debounce_rename (WatchFixture *fixture, gconstpointer user_data)
{
  const guint debounce_ms = 150;
  g_autoptr(GError) error = NULL;
  g_autofree char *path = g_build_filename (fixture->dir, "plugin.so", NULL);
  g_autofree char *temp = g_build_filename (fixture->dir, "plugin.so.tmp", NULL);
  AhWatch *watch;

  g_test_summary ("A file replaced by rename (written beside it, then moved over it) "
                  "gives one callback for its own name, none for the temporary one; "
                  "so does a second replacement");
  g_file_set_contents (path, "old", -1, &error);
  g_assert_no_error (error);
  watch = ah_watch_new (debounce_ms, watch_fixture_record, fixture);
  g_assert_true (ah_watch_add_file (watch, path, &error));
  g_assert_no_error (error);

  for (guint round = 1; round <= 2; round++)
    {
      const WatchCall *call;

      /* g_file_set_contents() would rename too, under a name of its
       * choosing; this one is ours, so the test says what it does. */
      g_file_set_contents (temp, "the new version", -1, &error);
      g_assert_no_error (error);
      g_assert_cmpint (g_rename (temp, path), ==, 0);

      g_assert_cmpuint (watch_fixture_wait (fixture, round,
                                            g_get_monotonic_time () + WAIT_TIMEOUT_US), ==, round);
      call = watch_fixture_call (fixture, round - 1);
      g_assert_cmpstr (call->path, ==, path);
      g_assert_cmpint (call->size, ==, strlen ("the new version"));
      g_assert_cmpuint (watch_fixture_wait (fixture, round + 1, g_get_monotonic_time ()
                                            + 3 * debounce_ms * G_TIME_SPAN_MILLISECOND),
                        ==, round);
    }
  ah_watch_free (watch);
}

static void
test_watch_files_independent (WatchFixture *fixture, gconstpointer user_data)
{
  const guint debounce_ms = 150;
  g_autoptr(GError) error = NULL;
  g_autofree char *first = g_build_filename (fixture->dir, "first.so", NULL);
  g_autofree char *second = g_build_filename (fixture->dir, "second.so", NULL);
  g_autofree char *other_dir = g_build_filename (fixture->dir, "elsewhere", NULL);
  g_autofree char *third = g_build_filename (other_dir, "third.so", NULL);
  g_autofree char *unwatched = g_build_filename (fixture->dir, "unwatched.so", NULL);
  AhWatch *watch;

  g_test_summary ("Files are debounced independently: a change to one gives a callback "
                  "for that one only, also in the same directory; a file not watched "
                  "gives none");
  g_assert_cmpint (g_mkdir (other_dir, 0700), ==, 0);
  watch = ah_watch_new (debounce_ms, watch_fixture_record, fixture);
  g_assert_true (ah_watch_add_file (watch, first, &error));
  g_assert_true (ah_watch_add_file (watch, second, &error));
  g_assert_true (ah_watch_add_file (watch, third, &error));
  g_assert_no_error (error);

  g_file_set_contents (unwatched, "x", -1, &error);
  g_assert_no_error (error);
  g_file_set_contents (second, "2", -1, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (watch_fixture_wait (fixture, 1, g_get_monotonic_time () + WAIT_TIMEOUT_US),
                    ==, 1);
  g_assert_cmpstr (watch_fixture_call (fixture, 0)->path, ==, second);

  /* Two files changed together: one callback each. */
  g_file_set_contents (first, "1", -1, &error);
  g_assert_no_error (error);
  g_file_set_contents (third, "3", -1, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (watch_fixture_wait (fixture, 3, g_get_monotonic_time () + WAIT_TIMEOUT_US),
                    ==, 3);
  g_assert_cmpuint (watch_fixture_wait (fixture, 4, g_get_monotonic_time ()
                                        + 3 * debounce_ms * G_TIME_SPAN_MILLISECOND), ==, 3);
  g_assert_cmpuint (watch_fixture_count (fixture, first), ==, 1);
  g_assert_cmpuint (watch_fixture_count (fixture, second), ==, 1);
  g_assert_cmpuint (watch_fixture_count (fixture, third), ==, 1);
  g_assert_cmpuint (watch_fixture_count (fixture, unwatched), ==, 0);
  ah_watch_free (watch);
}

static void
test_watch_add_twice (WatchFixture *fixture, gconstpointer user_data)
{
  const guint debounce_ms = 100;
  g_autoptr(GError) error = NULL;
  g_autofree char *path = g_build_filename (fixture->dir, "plugin.so", NULL);
  g_autofree char *same = g_build_filename (fixture->dir, ".", "sub", "..", "plugin.so", NULL);
  AhWatch *watch;

  g_test_summary ("A file added twice, under two spellings of its path, is watched "
                  "once: one callback, with the path as first given");
  watch = ah_watch_new (debounce_ms, watch_fixture_record, fixture);
  g_assert_true (ah_watch_add_file (watch, path, &error));
  g_assert_true (ah_watch_add_file (watch, same, &error));
  g_assert_no_error (error);

  g_file_set_contents (path, "v2", -1, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (watch_fixture_wait (fixture, 1, g_get_monotonic_time () + WAIT_TIMEOUT_US),
                    ==, 1);
  g_assert_cmpuint (watch_fixture_wait (fixture, 2, g_get_monotonic_time ()
                                        + 3 * debounce_ms * G_TIME_SPAN_MILLISECOND), ==, 1);
  g_assert_cmpstr (watch_fixture_call (fixture, 0)->path, ==, path);
  ah_watch_free (watch);
}

static void
test_watch_add_missing_dir (WatchFixture *fixture, gconstpointer user_data)
{
  g_autoptr(GError) error = NULL;
  g_autofree char *missing = g_build_filename (fixture->dir, "absent", NULL);
  g_autofree char *path = g_build_filename (missing, "plugin.so", NULL);
  g_autofree char *expected = g_strdup_printf ("%s: cannot watch: no directory %s", path, missing);
  AhWatch *watch;

  g_test_summary ("A file whose directory does not exist cannot be watched: the error "
                  "names both");
  watch = ah_watch_new (100, watch_fixture_record, fixture);
  g_assert_false (ah_watch_add_file (watch, path, &error));
  g_assert_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND);
  g_assert_cmpstr (error->message, ==, expected);
  ah_watch_free (watch);
}

static void
test_watch_free_armed (WatchFixture *fixture, gconstpointer user_data)
{
  const guint short_ms = 50;
  const guint long_ms = 600;
  g_autoptr(GError) error = NULL;
  g_autofree char *path = g_build_filename (fixture->dir, "plugin.so", NULL);
  WatchFixture late = { 0 };
  AhWatch *fast;
  AhWatch *slow;
  gint64 freed;

  g_test_summary ("Freeing a watch whose debounce is armed returns without waiting "
                  "for it, and its callback never runs");
  watch_fixture_set_up (&late, NULL);
  /* The fast watch sees the same change: once it has called back, the
   * slow one has its timer armed, well before it is due. */
  fast = ah_watch_new (short_ms, watch_fixture_record, fixture);
  slow = ah_watch_new (long_ms, watch_fixture_record, &late);
  g_assert_true (ah_watch_add_file (fast, path, &error));
  g_assert_true (ah_watch_add_file (slow, path, &error));
  g_assert_no_error (error);

  g_file_set_contents (path, "new", -1, &error);
  g_assert_no_error (error);
  g_assert_cmpuint (watch_fixture_wait (fixture, 1, g_get_monotonic_time () + WAIT_TIMEOUT_US),
                    ==, 1);

  freed = g_get_monotonic_time ();
  ah_watch_free (slow);
  g_assert_cmpint (g_get_monotonic_time () - freed, <, long_ms * G_TIME_SPAN_MILLISECOND / 2);
  g_assert_cmpuint (watch_fixture_wait (&late, 1, g_get_monotonic_time ()
                                        + 2 * long_ms * G_TIME_SPAN_MILLISECOND), ==, 0);
  ah_watch_free (fast);
  watch_fixture_tear_down (&late, NULL);
}

static void
test_watch_free_idle (void)
{
  g_test_summary ("A watch freed at once, with nothing added, stops its thread");
  for (guint i = 0; i < 20; i++)
    ah_watch_free (ah_watch_new (10, watch_fixture_record, NULL));
}

/* A callback that blocks, like a reload, until the test opens the gate. */
typedef struct {
  WatchFixture *fixture;
  gboolean      entered;   /* under fixture->lock */
  gboolean      open;      /* under fixture->lock */
} WatchGate;

static void
watch_gate_record (const char *path, gpointer user_data)
{
  WatchGate *gate = user_data;
  WatchFixture *fixture = gate->fixture;

  g_mutex_lock (&fixture->lock);
  gate->entered = TRUE;
  g_cond_broadcast (&fixture->cond);
  while (!gate->open)
    g_cond_wait (&fixture->cond, &fixture->lock);
  g_mutex_unlock (&fixture->lock);
  watch_fixture_record (path, fixture);
}

static void
test_watch_callback_blocks (WatchFixture *fixture, gconstpointer user_data)
{
  const guint debounce_ms = 50;
  g_autoptr(GError) error = NULL;
  g_autofree char *path = g_build_filename (fixture->dir, "plugin.so", NULL);
  WatchGate gate = { .fixture = fixture };
  gint64 deadline = g_get_monotonic_time () + WAIT_TIMEOUT_US;
  AhWatch *watch;

  g_test_summary ("A change made while the callback runs (a reload takes time) is not "
                  "lost: it gives one more callback after the running one returns");
  watch = ah_watch_new (debounce_ms, watch_gate_record, &gate);
  g_assert_true (ah_watch_add_file (watch, path, &error));
  g_assert_no_error (error);

  g_file_set_contents (path, "v1", -1, &error);
  g_assert_no_error (error);
  g_mutex_lock (&fixture->lock);
  while (!gate.entered)
    g_assert_true (g_cond_wait_until (&fixture->cond, &fixture->lock, deadline));
  g_mutex_unlock (&fixture->lock);

  /* The first callback is blocked: the watch thread sees nothing now. */
  g_file_set_contents (path, "v2 longer", -1, &error);
  g_assert_no_error (error);
  g_mutex_lock (&fixture->lock);
  gate.open = TRUE;
  g_cond_broadcast (&fixture->cond);
  g_mutex_unlock (&fixture->lock);

  g_assert_cmpuint (watch_fixture_wait (fixture, 2, deadline), ==, 2);
  g_assert_cmpint (watch_fixture_call (fixture, 1)->size, ==, strlen ("v2 longer"));
  g_assert_cmpuint (watch_fixture_wait (fixture, 3, g_get_monotonic_time ()
                                        + 3 * debounce_ms * G_TIME_SPAN_MILLISECOND), ==, 2);
  ah_watch_free (watch);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, G_TEST_OPTION_ISOLATE_DIRS, NULL);

  g_test_add ("/watch/debounce/pieces", WatchFixture, NULL,
              watch_fixture_set_up, test_watch_debounce_pieces, watch_fixture_tear_down);
  g_test_add ("/watch/debounce/rename", WatchFixture, NULL,
              watch_fixture_set_up, test_watch_debounce_rename, watch_fixture_tear_down);
  g_test_add ("/watch/files/independent", WatchFixture, NULL,
              watch_fixture_set_up, test_watch_files_independent, watch_fixture_tear_down);
  g_test_add ("/watch/add/twice", WatchFixture, NULL,
              watch_fixture_set_up, test_watch_add_twice, watch_fixture_tear_down);
  g_test_add ("/watch/add/missing-dir", WatchFixture, NULL,
              watch_fixture_set_up, test_watch_add_missing_dir, watch_fixture_tear_down);
  g_test_add ("/watch/free/armed", WatchFixture, NULL,
              watch_fixture_set_up, test_watch_free_armed, watch_fixture_tear_down);
  g_test_add_func ("/watch/free/idle", test_watch_free_idle);
  g_test_add ("/watch/callback/blocks", WatchFixture, NULL,
              watch_fixture_set_up, test_watch_callback_blocks, watch_fixture_tear_down);

  return g_test_run ();
}
