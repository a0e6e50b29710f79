/* SPDX-License-Identifier: MIT */
/* A plugin that fails, blocks and reports on demand, for the pool and
 * supervision tests.
 *
 * Config:
 *   fail_init_index N   the agent at pool index N refuses to start
 *   init_fail_after N   every init after the Nth of this loaded copy of
 *                       the plugin fails (restarts included)
 *   gate ADDRESS        a SupervisedGate of the test (supervised.h)
 *
 * Payloads: "fail" fails the call, "fail-once" fails it unless the
 * message is a redelivery, "block" waits at the gate. Any other message
 * is counted and reported on `supervised.seen` as
 * "id=ID index=I redelivered=0|1 payload=TEXT", so a test sees which
 * agent got what; a request is answered "handled=N" (its own count). An
 * init checks that the host zeroed the state, as it must on a restart. */
#include <agenthost/agenthost.h>

#include "supervised.h"

#include <string.h>

typedef struct {
  guint64 handled;
  guint32 initialised;   /* set by init: a restart must find it zeroed */
} SupervisedState;

static gint n_inits;   /* atomic; per loaded copy: each host loads its own */

static gboolean
payload_is (const AhMessage *message,
            const char      *text)
{
  gsize size = 0;
  gconstpointer data = ah_message_get_data (message, &size);

  return size == strlen (text) && memcmp (data, text, size) == 0;
}

static SupervisedGate *
supervised_get_gate (AhContext *ctx)
{
  const char *address = ah_config_get_string (ctx, "gate", NULL);

  return address != NULL ? (SupervisedGate *) (gsize) g_ascii_strtoull (address, NULL, 10) : NULL;
}

static gboolean
supervised_agent_init (AhContext *ctx, gpointer state, GError **error)
{
  SupervisedState *self = state;
  gint64 fail_index = ah_config_get_int (ctx, "fail_init_index", -1);
  gint64 fail_after = ah_config_get_int (ctx, "init_fail_after", -1);
  gint count = g_atomic_int_add (&n_inits, 1) + 1;

  if (self->handled != 0 || self->initialised != 0)
    {
      g_set_error_literal (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                           "the state was not zeroed before init");
      return FALSE;
    }
  if (fail_index == (gint64) ah_context_get_index (ctx))
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "refusing to start at index %u (test)", ah_context_get_index (ctx));
      return FALSE;
    }
  if (fail_after >= 0 && count > fail_after)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "init %d refused, after %" G_GINT64_FORMAT " (test)", count, fail_after);
      return FALSE;
    }
  self->initialised = 1;
  return TRUE;
}

static void
supervised_wait_at_gate (SupervisedGate *gate)
{
  g_mutex_lock (&gate->lock);
  gate->entered++;
  g_cond_broadcast (&gate->cond);
  while (!gate->open)
    g_cond_wait (&gate->cond, &gate->lock);
  g_mutex_unlock (&gate->lock);
}

static gboolean
supervised_handle_batch (AhContext *ctx, gpointer state,
                         const AhMessage * const *messages, guint n_messages,
                         GError **error)
{
  SupervisedState *self = state;

  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      g_autofree char *report = NULL;
      gsize size = 0;
      const char *data = ah_message_get_data (message, &size);

      if (payload_is (message, "invalid"))
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                       "refusing '%.*s' (test)", (int) size, data);
          return FALSE;
        }
      if (payload_is (message, "fail")
          || (payload_is (message, "fail-once") && !ah_message_is_redelivered (message)))
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                       "failing on '%.*s' (test)", (int) size, data);
          return FALSE;
        }
      if (payload_is (message, "block"))
        {
          SupervisedGate *gate = supervised_get_gate (ctx);

          if (gate != NULL)
            supervised_wait_at_gate (gate);
          continue;
        }

      self->handled++;
      if (ah_message_get_kind (message) == AH_MESSAGE_REQUEST)
        {
          g_autofree char *answer = g_strdup_printf ("handled=%" G_GUINT64_FORMAT, self->handled);

          ah_reply (ctx, message, answer, strlen (answer));
          continue;
        }
      report = g_strdup_printf ("id=%" G_GUINT64_FORMAT " index=%u redelivered=%d payload=%.*s",
                                ah_context_get_self (ctx), ah_context_get_index (ctx),
                                ah_message_is_redelivered (message) ? 1 : 0, (int) size, data);
      ah_publish_string (ctx, "supervised.seen", report);
    }
  return TRUE;
}

AH_PLUGIN_DEFINE (supervised,
  .version      = "1.0.0",
  .description  = "Test plugin failing, blocking and reporting on demand",
  .state_size   = sizeof (SupervisedState),
  .agent_init   = supervised_agent_init,
  .handle_batch = supervised_handle_batch)
