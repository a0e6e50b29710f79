/* SPDX-License-Identifier: MIT */
/* counter: the agent type the hot-reload walk-through edits while it
 * runs (README.md). Each tick it hears of adds COUNTER_STEP to its count
 * and prints "counter: tick T, count N (+S per tick)"; a request on
 * counter.get is answered with the count.
 *
 * Its state survives a reload because the plugin provides the two hooks:
 * state_snapshot writes the count and the ticks in a documented format
 * (COUNTER_STATE_FORMAT, big-endian), and the next version's
 * state_restore reads it. A version that changes the format bumps the
 * number and keeps reading the older ones, or refuses them: then the
 * reload is rolled back and this version runs on.
 */
#include <agenthost/agenthost.h>

#include <string.h>

/* The walk-through's edit: make this 10, rebuild, and the running counter
 * goes on from where it was, 10 per tick. */
#define COUNTER_STEP 1

/* The example's test builds a second version without editing the file. */
#ifdef COUNTER_STEP_OVERRIDE
#undef COUNTER_STEP
#define COUNTER_STEP COUNTER_STEP_OVERRIDE
#endif

#define COUNTER_STATE_FORMAT 1

typedef struct {
  guint64 count;
  guint64 ticks;
} Counter;

/* Format 1: the count, then the ticks, each a big-endian u64. */
typedef struct {
  guint64 count_be;
  guint64 ticks_be;
} CounterSnapshot;

static gboolean
counter_handle_batch (AhContext               *ctx,
                      gpointer                 state,
                      const AhMessage * const *messages,
                      guint                    n_messages,
                      GError                 **error)
{
  Counter *self = state;

  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      const char *subject = ah_message_get_subject (message);

      if (ah_message_get_kind (message) == AH_MESSAGE_REQUEST
          && g_str_equal (subject, "counter.get"))
        {
          char answer[32];

          g_snprintf (answer, sizeof answer, "%" G_GUINT64_FORMAT, self->count);
          ah_reply (ctx, message, answer, strlen (answer));
        }
      else if (g_str_equal (subject, "tick"))
        {
          self->count += COUNTER_STEP;
          self->ticks++;
          g_print ("counter: tick %" G_GUINT64_FORMAT ", count %" G_GUINT64_FORMAT
                   " (+%d per tick)\n", self->ticks, self->count, COUNTER_STEP);
        }
    }
  return TRUE;
}

static GBytes *
counter_state_snapshot (AhContext    *ctx,
                        gconstpointer state,
                        GError      **error)
{
  const Counter *self = state;
  CounterSnapshot snapshot = {
    .count_be = GUINT64_TO_BE (self->count),
    .ticks_be = GUINT64_TO_BE (self->ticks),
  };

  return g_bytes_new (&snapshot, sizeof snapshot);
}

static gboolean
counter_state_restore (AhContext *ctx,
                       gpointer   state,
                       guint32    format,
                       GBytes    *snapshot,
                       GError   **error)
{
  Counter *self = state;
  CounterSnapshot read;
  gsize size;
  gconstpointer data = g_bytes_get_data (snapshot, &size);

  /* Never guess at bytes of a format this version does not know. */
  if (format != COUNTER_STATE_FORMAT || size != sizeof read)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "counter reads snapshot format %d of %" G_GSIZE_FORMAT " bytes, "
                   "not format %u of %" G_GSIZE_FORMAT " bytes",
                   COUNTER_STATE_FORMAT, sizeof read, format, size);
      return FALSE;
    }
  memcpy (&read, data, sizeof read);
  self->count = GUINT64_FROM_BE (read.count_be);
  self->ticks = GUINT64_FROM_BE (read.ticks_be);
  return TRUE;
}

AH_PLUGIN_DEFINE (counter,
  .version        = "1.0." G_STRINGIFY (COUNTER_STEP),
  .description    = "Adds COUNTER_STEP per tick; its count survives hot reloads",
  .state_size     = sizeof (Counter),
  .state_format   = COUNTER_STATE_FORMAT,
  .handle_batch   = counter_handle_batch,
  .state_snapshot = counter_state_snapshot,
  .state_restore  = counter_state_restore)
