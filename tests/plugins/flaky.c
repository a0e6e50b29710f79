/* SPDX-License-Identifier: MIT */
/* A plugin whose handler fails on demand, for the failure accounting of
 * the pool tests: a message whose payload is exactly "fail" makes the
 * batch fail with "flaky failure"; requests before it in the batch are
 * answered "ok", as every request is otherwise. */
#include <agenthost/agenthost.h>

#include <string.h>

static gboolean
flaky_handle_batch (AhContext *ctx, gpointer state,
                    const AhMessage * const *messages, guint n_messages,
                    GError **error)
{
  for (guint i = 0; i < n_messages; i++)
    {
      gsize size = 0;
      gconstpointer data = ah_message_get_data (messages[i], &size);

      if (size == strlen ("fail") && memcmp (data, "fail", size) == 0)
        {
          g_set_error_literal (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED, "flaky failure");
          return FALSE;
        }
      if (ah_message_get_kind (messages[i]) == AH_MESSAGE_REQUEST)
        ah_reply (ctx, messages[i], "ok", strlen ("ok"));
    }
  return TRUE;
}

AH_PLUGIN_DEFINE (flaky,
  .version      = "1.0.0",
  .description  = "Test plugin failing on a \"fail\" payload",
  .handle_batch = flaky_handle_batch)
