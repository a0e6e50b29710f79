/* The stamping clock (core/ah-clock.c): ah__clock_ns() keeps to
 * CLOCK_MONOTONIC across its anchors, from several threads at once, a
 * span across a suspend does not spoil the rate, and
 * AGENTHOST_CLOCK=monotonic turns the counter off.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-clock-private.h"
#include "ah-message-private.h"

/* How far the converted counter may be from CLOCK_MONOTONIC: generous
 * for a noisy VM whose thread can be preempted between the two reads. */
#define MAX_SKEW_NS (200 * G_GINT64_CONSTANT (1000))

/* How far behind an earlier read of the same thread a later one may be:
 * a new anchor corrects the error of the previous rate in one step. */
#define MAX_STEP_BACK_NS (20 * G_GINT64_CONSTANT (1000))

typedef struct {
  gint64 duration_ns;
  guint64 reads;
  guint64 out_of_skew;
  gint64 worst_skew_ns;
  gint64 worst_step_back_ns;
} ClockRun;

/* Reads both clocks in turn for @run->duration_ns: each ah__clock_ns()
 * is compared with the CLOCK_MONOTONIC reads just before and after it. */
static gpointer
clock_run (gpointer data)
{
  ClockRun *run = data;
  gint64 start = ah__monotonic_ns ();
  gint64 last = 0;

  for (;;)
    {
      gint64 before = ah__monotonic_ns ();
      gint64 stamp = ah__clock_ns ();
      gint64 after = ah__monotonic_ns ();
      gint64 skew = stamp < before ? before - stamp : stamp > after ? stamp - after : 0;

      run->reads++;
      run->worst_skew_ns = MAX (run->worst_skew_ns, skew);
      /* Preempted between the reads: the window says nothing. */
      if (skew > MAX_SKEW_NS && after - before < MAX_SKEW_NS)
        run->out_of_skew++;
      if (last != 0 && stamp < last)
        run->worst_step_back_ns = MAX (run->worst_step_back_ns, last - stamp);
      last = stamp;
      if (after - start >= run->duration_ns)
        break;
    }
  return NULL;
}

/* Long enough for the span to double from its first millisecond to
 * beyond 100 ms: eight anchors or so. */
static void
test_clock_tracks_monotonic (void)
{
  ClockRun run = { .duration_ns = 400 * G_GINT64_CONSTANT (1000000) };

  clock_run (&run);
  g_test_message ("source %d, %" G_GUINT64_FORMAT " reads, worst skew %" G_GINT64_FORMAT
                  " ns, worst step back %" G_GINT64_FORMAT " ns", ah__clock_get_source (),
                  run.reads, run.worst_skew_ns, run.worst_step_back_ns);
  g_assert_cmpuint (run.reads, >, 1000);
  g_assert_cmpuint (run.out_of_skew, ==, 0);
  g_assert_cmpint (run.worst_step_back_ns, <=, MAX_STEP_BACK_NS);
}

/* Threads that all go through the slow path at once (the first rate, new
 * anchors) each still get a time within the window of their own reads. */
static void
test_clock_threads (void)
{
  ClockRun runs[4] = { { 0 } };
  GThread *threads[G_N_ELEMENTS (runs)];

  for (guint i = 0; i < G_N_ELEMENTS (runs); i++)
    {
      runs[i].duration_ns = 100 * G_GINT64_CONSTANT (1000000);
      threads[i] = g_thread_new ("clock", clock_run, &runs[i]);
    }
  for (guint i = 0; i < G_N_ELEMENTS (runs); i++)
    {
      g_thread_join (threads[i]);
      g_assert_cmpuint (runs[i].reads, >, 100);
      g_assert_cmpuint (runs[i].out_of_skew, ==, 0);
      g_assert_cmpint (runs[i].worst_step_back_ns, <=, MAX_STEP_BACK_NS);
    }
}

/* The source follows the machine: the counter only where the kernel keeps
 * time with it, never when AGENTHOST_CLOCK=monotonic (the test suite
 * runs this program a second time so). */
static void
test_clock_source (void)
{
  g_autofree char *kernel_source = NULL;
  const char *forced = g_getenv ("AGENTHOST_CLOCK");
  AhClockSource source = ah__clock_get_source ();

  g_assert_true (source == AH_CLOCK_TSC || source == AH_CLOCK_MONOTONIC);
  if (forced != NULL && g_str_equal (forced, "monotonic"))
    g_assert_cmpint (source, ==, AH_CLOCK_MONOTONIC);
  if (source == AH_CLOCK_TSC)
    {
      g_assert_true (g_file_get_contents ("/sys/devices/system/clocksource/clocksource0/current_clocksource",
                                          &kernel_source, NULL, NULL));
      g_assert_cmpstr (g_strstrip (kernel_source), ==, "tsc");
    }
}

/* The rate decisions, on made-up spans: 0.4 ns per tick is 2.5 GHz. */
static void
test_clock_choose_rate (void)
{
  guint64 rate = (guint64) (0.4 * 4294967296.0);
  guint64 slower = rate / 2;    /* a span across a suspend */
  guint64 span;

  /* The first rate: taken, the span twice what it measured. */
  g_assert_cmpuint (ah__clock_choose_rate (0, 0, rate, AH_CLOCK_FIRST_SPAN, &span), ==, rate);
  g_assert_cmpuint (span, ==, 2 * AH_CLOCK_FIRST_SPAN);
  /* Agreeing (within 0.4%): taken, the span doubling up to the longest. */
  g_assert_cmpuint (ah__clock_choose_rate (rate, rate, rate + rate / 1000, 8 * AH_CLOCK_FIRST_SPAN,
                                           &span), ==, rate + rate / 1000);
  g_assert_cmpuint (span, ==, 16 * AH_CLOCK_FIRST_SPAN);
  g_assert_cmpuint (ah__clock_choose_rate (rate, rate, rate, AH_CLOCK_MAX_SPAN, &span), ==, rate);
  g_assert_cmpuint (span, ==, AH_CLOCK_MAX_SPAN);
  /* One span far off: the known rate goes on, over the shortest span. */
  g_assert_cmpuint (ah__clock_choose_rate (rate, rate, slower, AH_CLOCK_MAX_SPAN, &span), ==, rate);
  g_assert_cmpuint (span, ==, AH_CLOCK_FIRST_SPAN);
  /* The same new rate twice: taken, still over the shortest span. */
  g_assert_cmpuint (ah__clock_choose_rate (rate, slower, slower, AH_CLOCK_FIRST_SPAN, &span), ==,
                    slower);
  g_assert_cmpuint (span, ==, AH_CLOCK_FIRST_SPAN);
  /* ... and then agreeing with itself: the spans grow again. */
  g_assert_cmpuint (ah__clock_choose_rate (slower, slower, slower, AH_CLOCK_FIRST_SPAN, &span), ==,
                    slower);
  g_assert_cmpuint (span, ==, 2 * AH_CLOCK_FIRST_SPAN);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);

  /* Before any read: the threads race to decide the source and to take
   * the first rate. */
  g_test_add_func ("/clock/threads", test_clock_threads);
  g_test_add_func ("/clock/tracks-monotonic", test_clock_tracks_monotonic);
  g_test_add_func ("/clock/source", test_clock_source);
  g_test_add_func ("/clock/choose-rate", test_clock_choose_rate);

  return g_test_run ();
}
