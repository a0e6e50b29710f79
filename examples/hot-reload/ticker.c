/* SPDX-License-Identifier: MIT */
/* ticker: keeps traffic flowing so that a hot reload has something to
 * carry on. When the system starts, the agent publishes "tick" 1; each
 * tick it hears of its own is followed, interval_ms later, by the next
 * one. The loop sustains itself and nothing polls: the wait runs on the
 * host's I/O threads (ah_offload), and its end comes back as a message.
 */
#include <agenthost/agenthost.h>

#include <string.h>

typedef struct {
  guint64 next;          /* the number of the next tick */
  gint64  interval_ms;
} Ticker;

static const AhConfigKey ticker_config[] = {
  { "interval_ms", AH_CONFIG_INT, AH_CONFIG_FLAG_NONE, "500", 1, 60000,
    "time between two ticks, in milliseconds" },
  AH_CONFIG_KEY_END
};

static gboolean
ticker_init (AhContext *ctx,
             gpointer   state,
             GError   **error)
{
  Ticker *self = state;

  self->next = 1;
  self->interval_ms = ah_config_get_int (ctx, "interval_ms", 500);
  return TRUE;
}

/* On an I/O thread: waits @data (milliseconds, a gint64) or until the host
 * stops, whichever comes first; a stopping host is not kept waiting. */
static GBytes *
ticker_wait (gpointer      data,
             GCancellable *cancellable,
             GError      **error)
{
  gint64 deadline = g_get_monotonic_time () + *(gint64 *) data * 1000;
  GPollFD fd = { 0, };
  gboolean pollable = g_cancellable_make_pollfd (cancellable, &fd);

  for (gint64 now = g_get_monotonic_time ();
       now < deadline && !g_cancellable_is_cancelled (cancellable);
       now = g_get_monotonic_time ())
    {
      gint timeout_ms = (gint) MIN ((deadline - now + 999) / 1000, G_MAXINT);

      if (pollable)
        g_poll (&fd, 1, timeout_ms);
      else
        g_usleep ((gulong) (deadline - now));
    }
  if (pollable)
    g_cancellable_release_fd (cancellable);
  if (g_cancellable_set_error_if_cancelled (cancellable, error))
    return NULL;
  return g_bytes_new (NULL, 0);
}

static gboolean
ticker_publish_next (AhContext *ctx,
                     Ticker    *self,
                     GError   **error)
{
  char text[32];

  g_snprintf (text, sizeof text, "%" G_GUINT64_FORMAT, self->next);
  if (!ah_publish_string (ctx, "tick", text))
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "the bus refused tick %s", text);
      return FALSE;
    }
  self->next++;
  return TRUE;
}

static gboolean
ticker_handle_batch (AhContext               *ctx,
                     gpointer                 state,
                     const AhMessage * const *messages,
                     guint                    n_messages,
                     GError                 **error)
{
  Ticker *self = state;

  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      const char *subject = ah_message_get_subject (message);

      switch (ah_message_get_kind (message))
        {
        case AH_MESSAGE_PUBLISH:
          if (g_str_equal (subject, "$SYS.host.started"))
            {
              if (!ticker_publish_next (ctx, self, error))
                return FALSE;
            }
          else if (g_str_equal (subject, "tick")
                   && ah_message_get_sender (message) == ah_context_get_self (ctx))
            {
              gint64 *interval = g_new (gint64, 1);

              *interval = self->interval_ms;
              if (ah_offload (ctx, ticker_wait, interval, g_free) == 0)
                {
                  g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                               "the host refused the wait before tick %" G_GUINT64_FORMAT,
                               self->next);
                  return FALSE;
                }
            }
          break;

        case AH_MESSAGE_OFFLOAD_DONE:
          if (!ticker_publish_next (ctx, self, error))
            return FALSE;
          break;

        case AH_MESSAGE_OFFLOAD_FAILED:
          /* Cancelled: the host is stopping, and the loop ends here. */
          break;

        case AH_MESSAGE_DIRECT:
        case AH_MESSAGE_REQUEST:
        case AH_MESSAGE_REPLY:
        case AH_MESSAGE_TIMEOUT:
        case AH_MESSAGE_NO_RESPONDERS:
        default:
          break;
        }
    }
  return TRUE;
}

AH_PLUGIN_DEFINE (ticker,
  .version       = "1.0.0",
  .description   = "Publishes tick 1, 2, 3... every interval_ms, each tick leading to the next",
  .state_size    = sizeof (Ticker),
  .agent_init    = ticker_init,
  .handle_batch  = ticker_handle_batch,
  .config_schema = ticker_config)
