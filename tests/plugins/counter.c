/* SPDX-License-Identifier: MIT */
/* A stateful plugin for the pool tests. Each agent counts the messages it
 * handles. A REQUEST on `count` (or on any subject ending in `.count`) is
 * a question, not counted: it is answered with the count so far as
 * decimal text. Each PUBLISH message's payload is published back on
 * `counted.<agent index>`, which shows which agent of the pool got it.
 * A REQUEST on `started` is answered with "START NOW": the host's start
 * of the handler call (ah_context_get_start_ns) and the clock as the
 * handler began, both in ns. */
#include <agenthost/agenthost.h>

#include <string.h>

typedef struct {
  guint64 n_messages;
} CounterState;

static gboolean
counter_is_count_subject (const char *subject)
{
  return g_str_equal (subject, "count") || g_str_has_suffix (subject, ".count");
}

static gboolean
counter_handle_batch (AhContext *ctx, gpointer state,
                      const AhMessage * const *messages, guint n_messages,
                      GError **error)
{
  CounterState *self = state;
  gint64 handler_now_ns = ah_monotonic_ns ();
  char subject[64];

  g_snprintf (subject, sizeof subject, "counted.%u", ah_context_get_index (ctx));

  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      AhMessageKind kind = ah_message_get_kind (message);

      if (kind == AH_MESSAGE_REQUEST && g_str_equal (ah_message_get_subject (message), "started"))
        {
          char answer[64];

          g_snprintf (answer, sizeof answer, "%" G_GINT64_FORMAT " %" G_GINT64_FORMAT,
                      ah_context_get_start_ns (ctx), handler_now_ns);
          ah_reply (ctx, message, answer, strlen (answer));
          continue;
        }
      if (kind == AH_MESSAGE_REQUEST
          && counter_is_count_subject (ah_message_get_subject (message)))
        {
          char answer[32];

          g_snprintf (answer, sizeof answer, "%" G_GUINT64_FORMAT, self->n_messages);
          ah_reply (ctx, message, answer, strlen (answer));
          continue;
        }

      self->n_messages++;
      if (kind == AH_MESSAGE_PUBLISH)
        {
          gsize size = 0;
          gconstpointer data = ah_message_get_data (message, &size);

          /* A refused publish is counted failed by the host itself; the
           * count above still records that this message was handled. */
          ah_publish (ctx, subject, data, size);
        }
    }
  return TRUE;
}

AH_PLUGIN_DEFINE (counter,
  .version      = "1.0.0",
  .description  = "Test plugin counting the messages each agent handles",
  .state_size   = sizeof (CounterState),
  .handle_batch = counter_handle_batch)
