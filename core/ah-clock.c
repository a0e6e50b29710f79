/* The stamping clock.
 *
 * The bus stamps every flush (publish times) and every handler call
 * (start for the latency histogram, end for the handler's duration and
 * its messages' publish time): two or three reads per batch, seven in a
 * round trip between two agents of one worker, where they were a
 * quarter of the profile. clock_gettime() through the vDSO costs about
 * 25 ns on this kind of machine: an ordered RDTSC, a seqlock, the
 * kernel's conversion. A plain RDTSC costs about 10.
 *
 * So where the counter is invariant (constant rate, counting through
 * idle states: CPUID 0x80000007 EDX bit 8) and the kernel itself keeps
 * time with it (its clocksource is "tsc", which it only picks once the
 * counters of all CPUs agree), ah__clock_ns() converts RDTSC with an
 * anchor of its own: a (counter, CLOCK_MONOTONIC) pair and a rate. The
 * rate is measured between consecutive anchors; the anchor is taken
 * again once its span is used up, the span doubling from about a
 * millisecond to about a tenth of a second. The error is then the error of the
 * rate over one span: tens of nanoseconds, plus whatever NTP changes in
 * CLOCK_MONOTONIC's rate within the span. A rate that moves by more
 * than 0.4% from one anchor to the next (a span across a suspend, a
 * migration to another host) is not taken until a second short span
 * measures it again, and the spans start over from the shortest. Until the first rate
 * is known, and everywhere else, it is clock_gettime().
 *
 * AGENTHOST_CLOCK=monotonic forces clock_gettime(), to rule the counter
 * out when something looks off.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-clock-private.h"
#include "ah-message-private.h"

#if AH_CLOCK_HAVE_TSC
#  include <cpuid.h>
#endif

AhClock ah__clock;

/* Within 0.4% of each other. */
static gboolean
ah_clock_rates_agree (guint64 a,
                      guint64 b)
{
  guint64 margin = b / 256;

  return a <= b + margin && a + margin >= b;
}

guint64
ah__clock_choose_rate (guint64  mult,
                       guint64  last_measured,
                       guint64  measured,
                       guint64  elapsed,
                       guint64 *ret_span)
{
  if (mult == 0 || ah_clock_rates_agree (measured, mult))
    {
      *ret_span = MIN (MAX (elapsed, AH_CLOCK_FIRST_SPAN) * 2, AH_CLOCK_MAX_SPAN);
      return measured;
    }
  /* A span that took in a suspend (the counter ran on, the clock did
   * not) measures nonsense once; a host whose counter really changed
   * rate measures the same new rate twice. Until then the known rate
   * goes on, over short spans. */
  *ret_span = AH_CLOCK_FIRST_SPAN;
  return ah_clock_rates_agree (measured, last_measured) ? measured : mult;
}

#if AH_CLOCK_HAVE_TSC
/* Held by the one thread taking a new anchor; others read the real clock
 * meanwhile rather than wait. */
static _Atomic int ah_clock_anchoring;

static gboolean
ah_clock_tsc_is_usable (void)
{
  const char *forced = g_getenv ("AGENTHOST_CLOCK");
  g_autofree char *source = NULL;
  unsigned int eax, ebx, ecx, edx;

  if (forced != NULL && g_str_equal (forced, "monotonic"))
    return FALSE;
  if (!__get_cpuid (0x80000007, &eax, &ebx, &ecx, &edx) || (edx & (1u << 8)) == 0)
    return FALSE;
  if (!g_file_get_contents ("/sys/devices/system/clocksource/clocksource0/current_clocksource",
                            &source, NULL, NULL))
    return FALSE;
  return g_str_equal (g_strstrip (source), "tsc");
}

/* A counter reading and CLOCK_MONOTONIC taken as close together as three
 * tries manage: the counter is the midpoint of the two around the
 * clock read with the shortest gap. */
static void
ah_clock_read_pair (guint64 *ret_tsc,
                    gint64  *ret_ns)
{
  guint64 best_gap = G_MAXUINT64;

  for (int i = 0; i < 3; i++)
    {
      guint64 before = __rdtsc ();
      gint64 ns = ah__monotonic_ns ();
      guint64 after = __rdtsc ();

      if (after >= before && after - before < best_gap)
        {
          best_gap = after - before;
          *ret_tsc = before + (after - before) / 2;
          *ret_ns = ns;
        }
    }
  if (best_gap == G_MAXUINT64)
    {
      *ret_tsc = __rdtsc ();
      *ret_ns = ah__monotonic_ns ();
    }
}

static void
ah_clock_publish (guint64 base_tsc,
                  gint64  base_ns,
                  guint64 mult,
                  guint64 span)
{
  guint64 seq = atomic_load_explicit (&ah__clock.seq, memory_order_relaxed);

  atomic_store_explicit (&ah__clock.seq, seq + 1, memory_order_relaxed);
  atomic_thread_fence (memory_order_release);
  atomic_store_explicit (&ah__clock.base_tsc, base_tsc, memory_order_relaxed);
  atomic_store_explicit (&ah__clock.base_ns, base_ns, memory_order_relaxed);
  atomic_store_explicit (&ah__clock.mult, mult, memory_order_relaxed);
  atomic_store_explicit (&ah__clock.span, span, memory_order_relaxed);
  atomic_store_explicit (&ah__clock.seq, seq + 2, memory_order_release);
}

/* The rate of the last span, known only to the thread holding
 * ah_clock_anchoring. */
static guint64 ah_clock_last_measured;

/* Whether the counter reading @tsc is past the current anchor's span (or,
 * before the first rate, the first span), and not behind the anchor (a
 * CPU whose counter lags a little: the difference wraps). The anchor's
 * counter goes to @ret_base_tsc. */
static gboolean
ah_clock_anchor_is_due (guint64  tsc,
                        guint64 *ret_base_tsc)
{
  guint64 base_tsc = atomic_load_explicit (&ah__clock.base_tsc, memory_order_relaxed);
  guint64 span = atomic_load_explicit (&ah__clock.span, memory_order_relaxed);
  guint64 elapsed = tsc - base_tsc;

  if (ret_base_tsc != NULL)
    *ret_base_tsc = base_tsc;
  return elapsed >= MAX (span, AH_CLOCK_FIRST_SPAN) && elapsed <= G_MAXINT64;
}

/* Takes a new anchor if the current one's span (or, before the first
 * rate, the first span) has passed, and returns CLOCK_MONOTONIC. */
static gint64
ah_clock_reanchor (void)
{
  guint64 base_tsc, mult, tsc, elapsed, measured;
  gint64 base_ns, ns;

  if (!ah_clock_anchor_is_due (__rdtsc (), NULL)
      || atomic_exchange_explicit (&ah_clock_anchoring, 1, memory_order_acquire) != 0)
    return ah__monotonic_ns ();

  /* Again, now that no other thread can write them: another one may have
   * taken an anchor since they were read (then none is due: a rate over
   * a short time is a poor one), and a pair of them read across its
   * writes would give a wrong rate. */
  base_ns = atomic_load_explicit (&ah__clock.base_ns, memory_order_relaxed);
  mult = atomic_load_explicit (&ah__clock.mult, memory_order_relaxed);
  ah_clock_read_pair (&tsc, &ns);
  if (!ah_clock_anchor_is_due (tsc, &base_tsc))
    {
      atomic_store_explicit (&ah_clock_anchoring, 0, memory_order_release);
      return ns;
    }
  elapsed = tsc - base_tsc;
  if (ns <= base_ns)
    {
      /* Cannot happen while both run; start over. */
      ah_clock_publish (tsc, ns, 0, 0);
    }
  else
    {
      guint64 new_span;
      guint64 new_mult;

      measured = (guint64) (((unsigned __int128) (ns - base_ns) << 32) / elapsed);
      new_mult = ah__clock_choose_rate (mult, ah_clock_last_measured, measured, elapsed,
                                        &new_span);
      ah_clock_publish (tsc, ns, new_mult, new_span);
      ah_clock_last_measured = measured;
    }
  atomic_store_explicit (&ah_clock_anchoring, 0, memory_order_release);
  return ns;
}
#endif

AhClockSource
ah__clock_get_source (void)
{
  static gsize decided = 0;

  if (g_once_init_enter (&decided))
    {
      AhClockSource source = AH_CLOCK_MONOTONIC;

#if AH_CLOCK_HAVE_TSC
      if (ah_clock_tsc_is_usable ())
        {
          guint64 tsc;
          gint64 ns;

          /* No rate yet (span 0): every read goes to the slow path until
           * the first span has passed and the first rate is taken. */
          ah_clock_read_pair (&tsc, &ns);
          ah_clock_publish (tsc, ns, 0, 0);
          source = AH_CLOCK_TSC;
        }
#endif
      atomic_store_explicit (&ah__clock.source, source, memory_order_release);
      g_once_init_leave (&decided, 1);
    }
  return atomic_load_explicit (&ah__clock.source, memory_order_acquire);
}

gint64
ah__clock_ns_slow (void)
{
#if AH_CLOCK_HAVE_TSC
  if (ah__clock_get_source () == AH_CLOCK_TSC)
    return ah_clock_reanchor ();
#endif
  return ah__monotonic_ns ();
}
