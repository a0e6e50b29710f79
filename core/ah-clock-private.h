/* The stamping clock: CLOCK_MONOTONIC, read through the CPU's
 * time-stamp counter where that is safe. See ah-clock.c.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include <glib.h>
#include <stdatomic.h>

#if defined(__x86_64__)
#  include <x86intrin.h>
#  define AH_CLOCK_HAVE_TSC 1
#else
#  define AH_CLOCK_HAVE_TSC 0
#endif

G_BEGIN_DECLS

typedef enum {
  AH_CLOCK_UNKNOWN,     /* not decided yet: the first read decides */
  AH_CLOCK_MONOTONIC,   /* clock_gettime() every time */
  AH_CLOCK_TSC,         /* the counter, converted with the anchor below */
} AhClockSource;

/* The conversion, published as a seqlock: a reader takes the fields
 * between two equal even values of @seq. All atomics, so that TSan sees
 * no race in the retry. */
typedef struct {
  _Atomic int     source;      /* AhClockSource */
  _Atomic guint64 seq;
  _Atomic guint64 base_tsc;    /* the counter at the anchor */
  _Atomic gint64  base_ns;     /* CLOCK_MONOTONIC at the anchor */
  _Atomic guint64 mult;        /* nanoseconds per tick, 32.32 fixed point */
  _Atomic guint64 span;        /* ticks past base_tsc the conversion is trusted for; 0 before the first rate */
} AhClock;

extern AhClock ah__clock;

gint64 ah__clock_ns_slow    (void);
/* After a span of @elapsed ticks that measured the rate @measured (32.32
 * ns per tick), with @mult the rate in use (0 before the first) and
 * @last_measured the previous span's: the rate to go on with, and in
 * @ret_span for how many ticks. Exposed for the tests. */
guint64 ah__clock_choose_rate (guint64 mult, guint64 last_measured, guint64 measured,
                               guint64 elapsed, guint64 *ret_span);
/* Ticks: about a millisecond and about a tenth of a second at 2-4 GHz.
 * The longest span bounds what a change of CLOCK_MONOTONIC's rate (NTP
 * slews it by up to 500 ppm) costs before the next anchor sees it. */
#define AH_CLOCK_FIRST_SPAN (G_GUINT64_CONSTANT (1) << 22)
#define AH_CLOCK_MAX_SPAN   (G_GUINT64_CONSTANT (1) << 28)
/* Which source ah__clock_ns() reads, deciding it on the first call. */
AhClockSource ah__clock_get_source (void);

/* Monotonic nanoseconds for stamps (publish times, handler start and
 * end): within tens of nanoseconds of CLOCK_MONOTONIC, and about 2.5
 * times cheaper to read where the counter can be used. Two reads on
 * different threads can come out of order by about that much, so a
 * difference of two stamps is clamped at 0 where it is used. Deadlines
 * and waits keep ah__monotonic_ns(). */
static inline gint64
ah__clock_ns (void)
{
#if AH_CLOCK_HAVE_TSC
  guint64 seq, base_tsc, mult, span, tsc;
  gint64 base_ns;

  if (G_LIKELY (atomic_load_explicit (&ah__clock.source, memory_order_relaxed) == AH_CLOCK_TSC))
    {
      seq = atomic_load_explicit (&ah__clock.seq, memory_order_acquire);
      base_tsc = atomic_load_explicit (&ah__clock.base_tsc, memory_order_relaxed);
      base_ns = atomic_load_explicit (&ah__clock.base_ns, memory_order_relaxed);
      mult = atomic_load_explicit (&ah__clock.mult, memory_order_relaxed);
      span = atomic_load_explicit (&ah__clock.span, memory_order_relaxed);
      atomic_thread_fence (memory_order_acquire);
      tsc = __rdtsc ();
      /* Out of the anchor's span, before it (another CPU's counter a
       * little behind: the difference wraps) or torn: the slow path
       * reads the real clock, and takes a new anchor if it is due. */
      if (G_LIKELY ((seq & 1) == 0
                    && seq == atomic_load_explicit (&ah__clock.seq, memory_order_relaxed)
                    && tsc - base_tsc < span))
        return base_ns + (gint64) (((unsigned __int128) (tsc - base_tsc) * mult) >> 32);
    }
#endif
  return ah__clock_ns_slow ();
}

G_END_DECLS
