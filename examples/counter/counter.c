/* SPDX-License-Identifier: MIT */
/* counter: an agent with state that outlives one version of its plugin.
 *
 * Each agent keeps a count of its own. A message published on
 * "counter.add" adds the decimal number in its payload (1 when the
 * payload is empty); a request on "counter.get" is answered with the
 * count. When the system starts, each agent publishes one "counter.add"
 * per item of its `seed` config, so a plain `agenthost run` has
 * something to count. agent_finalize prints the count: when the agent
 * stops, and when a hot reload retires this version's state.
 *
 * state_snapshot and state_restore are the hot-reload contract: the next
 * version of the plugin rebuilds its state from what this one wrote. The
 * snapshot is tagged with COUNTER_STATE_FORMAT. Format 1 held the count
 * only; format 2 (this version) adds the number of adds. Restore migrates
 * format 1, reads format 2 and refuses anything else: an upgrade must
 * never guess at bytes it does not know.
 */
#include <agenthost/agenthost.h>

#include <string.h>

#define COUNTER_VERSION      "1.1.0"
#define COUNTER_STATE_FORMAT 2
#define COUNTER_MAX_ADD      1000000

typedef struct {
  guint64 count;
  guint64 n_adds;
} Counter;

/* Snapshot layouts, big-endian so a snapshot means the same on any
 * machine it is read on. */
typedef struct {
  guint64 count_be;
} CounterSnapshotV1;

typedef struct {
  guint64 count_be;
  guint64 n_adds_be;
} CounterSnapshotV2;

static const AhConfigKey counter_config[] = {
  { "seed", AH_CONFIG_INT, AH_CONFIG_FLAG_NONE, NULL, 0, COUNTER_MAX_ADD,
    "amounts published on counter.add when the system starts (a sequence)" },
  AH_CONFIG_KEY_END
};

static gboolean
counter_parse_amount (const AhMessage *message,
                      guint64         *ret_amount,
                      GError         **error)
{
  gsize size;
  const char *data = ah_message_get_data (message, &size);
  g_autofree char *text = NULL;

  if (size == 0)
    {
      *ret_amount = 1;
      return TRUE;
    }
  /* The payload is not NUL-terminated by contract: copy before parsing,
   * and refuse a NUL inside, which would cut the text short. */
  text = g_strndup (data, size);
  if (strlen (text) != size
      || !g_ascii_string_to_unsigned (text, 10, 0, COUNTER_MAX_ADD, ret_amount, NULL))
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                   "counter.add: '%.32s' is not a number from 0 to %d",
                   g_utf8_validate (text, -1, NULL) ? text : "(binary)", COUNTER_MAX_ADD);
      return FALSE;
    }
  return TRUE;
}

static gboolean
counter_publish_seed (AhContext *ctx,
                      GError   **error)
{
  /* A sequence arrives as "seed.0", "seed.1"...: read until the first gap. */
  for (guint i = 0;; i++)
    {
      char key[32];
      const char *amount;

      g_snprintf (key, sizeof key, "seed.%u", i);
      amount = ah_config_get_string (ctx, key, NULL);
      if (amount == NULL)
        return TRUE;
      if (!ah_publish_string (ctx, "counter.add", amount))
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                       "the bus refused the seed add '%s'", amount);
          return FALSE;
        }
    }
}

static gboolean
counter_handle_message (AhContext       *ctx,
                        Counter         *self,
                        const AhMessage *message,
                        GError         **error)
{
  const char *subject = ah_message_get_subject (message);
  guint64 amount;

  switch (ah_message_get_kind (message))
    {
    case AH_MESSAGE_REQUEST:
      if (g_str_equal (subject, "counter.get"))
        {
          char answer[32];

          g_snprintf (answer, sizeof answer, "%" G_GUINT64_FORMAT, self->count);
          if (ah_reply (ctx, message, answer, strlen (answer)))
            return TRUE;
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                       "the bus refused the reply to counter.get");
          return FALSE;
        }
      break;

    case AH_MESSAGE_PUBLISH:
    case AH_MESSAGE_DIRECT:
      if (g_str_equal (subject, "$SYS.host.started"))
        return counter_publish_seed (ctx, error);
      if (!g_str_equal (subject, "counter.add"))
        break;
      if (!counter_parse_amount (message, &amount, error))
        return FALSE;
      if (amount > G_MAXUINT64 - self->count)
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                       "counter.add: adding %" G_GUINT64_FORMAT " would overflow the count",
                       amount);
          return FALSE;
        }
      self->count += amount;
      self->n_adds++;
      return TRUE;

    case AH_MESSAGE_REPLY:
    case AH_MESSAGE_TIMEOUT:
    case AH_MESSAGE_NO_RESPONDERS:
    case AH_MESSAGE_OFFLOAD_DONE:
    case AH_MESSAGE_OFFLOAD_FAILED:
    default:
      break;
    }

  g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
               "unexpected message on '%s' (the counter takes adds on counter.add "
               "and requests on counter.get)", subject);
  return FALSE;
}

static gboolean
counter_handle_batch (AhContext               *ctx,
                      gpointer                 state,
                      const AhMessage * const *messages,
                      guint                    n_messages,
                      GError                 **error)
{
  Counter *self = state;
  GError *first_error = NULL;

  /* One bad add must not lose the good ones after it: every message is
   * handled, and the first failure is the one reported. */
  for (guint i = 0; i < n_messages; i++)
    {
      GError *local_error = NULL;

      if (!counter_handle_message (ctx, self, messages[i], &local_error))
        {
          if (first_error == NULL)
            first_error = local_error;
          else
            g_error_free (local_error);
        }
    }

  if (first_error != NULL)
    {
      g_propagate_error (error, first_error);
      return FALSE;
    }
  return TRUE;
}

static void
counter_finalize (AhContext *ctx,
                  gpointer   state)
{
  Counter *self = state;

  g_print ("counter %u: %" G_GUINT64_FORMAT " after %" G_GUINT64_FORMAT " add%s\n",
           ah_context_get_index (ctx), self->count, self->n_adds,
           self->n_adds == 1 ? "" : "s");
}

/* Neither hook touches @ctx: a snapshot is a function of the state alone,
 * which also lets a test call them through the descriptor directly. */
static GBytes *
counter_state_snapshot (AhContext    *ctx,
                        gconstpointer state,
                        GError      **error)
{
  const Counter *self = state;
  CounterSnapshotV2 snapshot = {
    .count_be = GUINT64_TO_BE (self->count),
    .n_adds_be = GUINT64_TO_BE (self->n_adds),
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
  gsize size;
  gconstpointer data = g_bytes_get_data (snapshot, &size);
  gsize expected_size;

  switch (format)
    {
    case 1:
      expected_size = sizeof (CounterSnapshotV1);
      break;
    case 2:
      expected_size = sizeof (CounterSnapshotV2);
      break;
    default:
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "snapshot format %u is unknown to counter " COUNTER_VERSION
                   " (it reads formats 1 and 2)", format);
      return FALSE;
    }
  if (size != expected_size)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "snapshot of format %u has %" G_GSIZE_FORMAT " bytes, expected %"
                   G_GSIZE_FORMAT, format, size, expected_size);
      return FALSE;
    }

  if (format == 1)
    {
      CounterSnapshotV1 v1;

      memcpy (&v1, data, sizeof v1);
      self->count = GUINT64_FROM_BE (v1.count_be);
      /* Format 1 did not record adds; 0 is honest, a guess would not be. */
      self->n_adds = 0;
    }
  else
    {
      CounterSnapshotV2 v2;

      memcpy (&v2, data, sizeof v2);
      self->count = GUINT64_FROM_BE (v2.count_be);
      self->n_adds = GUINT64_FROM_BE (v2.n_adds_be);
    }
  return TRUE;
}

AH_PLUGIN_DEFINE (counter,
  .version        = COUNTER_VERSION,
  .description    = "Counts what is published on counter.add; answers counter.get",
  .state_size     = sizeof (Counter),
  .state_format   = COUNTER_STATE_FORMAT,
  .agent_finalize = counter_finalize,
  .handle_batch   = counter_handle_batch,
  .state_snapshot = counter_state_snapshot,
  .state_restore  = counter_state_restore,
  .config_schema  = counter_config)
