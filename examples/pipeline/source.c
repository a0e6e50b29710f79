/* SPDX-License-Identifier: MIT */
/* source: the first stage of the pipeline. When the system starts, it
 * publishes each line of its config `lines` on "pipeline.lines", the
 * whole list `repeat` times, then has nothing more to do.
 */
#include <agenthost/agenthost.h>

#include <string.h>

static const AhConfigKey source_config[] = {
  { "lines", AH_CONFIG_STRING, AH_CONFIG_FLAG_REQUIRED, NULL, 0, 0,
    "the text to send down the pipeline, one item per line (a sequence)" },
  { "repeat", AH_CONFIG_INT, AH_CONFIG_FLAG_NONE, "1", 1, 10000,
    "how many times the whole text is sent" },
  AH_CONFIG_KEY_END
};

static gboolean
source_publish_lines (AhContext *ctx,
                      GError   **error)
{
  gint64 repeat = ah_config_get_int (ctx, "repeat", 1);

  for (gint64 round = 0; round < repeat; round++)
    {
      /* A sequence arrives as "lines.0", "lines.1"...: read until the
       * first gap. */
      for (guint i = 0;; i++)
        {
          char key[32];
          const char *line;

          g_snprintf (key, sizeof key, "lines.%u", i);
          line = ah_config_get_string (ctx, key, NULL);
          if (line == NULL)
            break;
          /* Handing many messages to the bus from one call is fine: they
           * are routed in batches, and under the "block" overflow policy
           * a full mailbox pauses this agent rather than the worker. */
          if (!ah_publish_string (ctx, "pipeline.lines", line))
            {
              g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                           "the bus refused line %u of round %" G_GINT64_FORMAT, i, round);
              return FALSE;
            }
        }
    }
  return TRUE;
}

static gboolean
source_handle_batch (AhContext               *ctx,
                     gpointer                 state,
                     const AhMessage * const *messages,
                     guint                    n_messages,
                     GError                 **error)
{
  for (guint i = 0; i < n_messages; i++)
    {
      const char *subject = ah_message_get_subject (messages[i]);

      if (!g_str_equal (subject, "$SYS.host.started"))
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                       "the source only starts on $SYS.host.started, got a message on '%s'",
                       subject);
          return FALSE;
        }
      if (!source_publish_lines (ctx, error))
        return FALSE;
    }
  return TRUE;
}

AH_PLUGIN_DEFINE (source,
  .version       = "1.0.0",
  .description   = "Publishes the lines of its config on pipeline.lines at start",
  .handle_batch  = source_handle_batch,
  .config_schema = source_config)
