/* hello: the smallest useful agent type. Each agent greets the world
 * when the system starts, and answers requests on "hello" with a
 * greeting for the name in the payload.
 *
 * SPDX-License-Identifier: MIT
 */
#include <agenthost/agenthost.h>
#include <string.h>

typedef struct {
  char    greeting[64];   /* from the manifest's config: block */
  guint64 greeted;
} Hello;

static gboolean
hello_init (AhContext *ctx, gpointer state, GError **error)
{
  Hello *self = state;

  g_strlcpy (self->greeting, ah_config_get_string (ctx, "greeting", "Hello"),
             sizeof self->greeting);
  return TRUE;
}

static gboolean
hello_handle_batch (AhContext *ctx, gpointer state,
                    const AhMessage * const *messages, guint n_messages,
                    GError **error)
{
  Hello *self = state;

  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      gsize size;
      const char *name = ah_message_get_data (message, &size);

      if (ah_message_get_kind (message) == AH_MESSAGE_REQUEST)
        {
          g_autofree char *text = g_strdup_printf ("%s, %.*s!", self->greeting, (int) size, name);
          ah_reply (ctx, message, text, strlen (text));
        }
      else
        g_print ("%s from agent %u of type '%s'\n", self->greeting,
                 ah_context_get_index (ctx), ah_context_get_type_name (ctx));
      self->greeted++;
    }
  return TRUE;
}

AH_PLUGIN_DEFINE (hello,
  .version      = "1.0.0",
  .description  = "Greets the world at start and answers requests on 'hello'",
  .state_size   = sizeof (Hello),
  .agent_init   = hello_init,
  .handle_batch = hello_handle_batch)
