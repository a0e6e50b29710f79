/* SPDX-License-Identifier: MIT */
/* Proves that pre-warm runs the agent_init of different agent types at
 * the same time. Two agent types, A and B, both use this file; the host
 * loads a plugin file once, so they share this module and its statics.
 * A's config says `partner: B`, B's says `partner: A`. Each agent_init
 * records its own type as entered, then waits until an agent of its
 * partner type has entered too. Run concurrently, both see each other and
 * store overlap=1; run one after the other, the first gives up after
 * SLOW_INIT_TIMEOUT and stores overlap=0, so the test fails instead of
 * hanging. Every REQUEST is answered with "overlap=1" or "overlap=0". */
#include <agenthost/agenthost.h>

#include <string.h>

#define SLOW_INIT_TIMEOUT (5 * G_TIME_SPAN_SECOND)
#define SLOW_INIT_MAX_TYPES 16
#define SLOW_INIT_TYPE_NAME_MAX 64

typedef struct {
  char  name[SLOW_INIT_TYPE_NAME_MAX + 1];
  /* Agents of this type that entered init and are not finalized yet: a
   * later run in the same process must not see this run's agents. */
  guint n_agents;
} SlowInitType;

typedef struct {
  gint overlap;
} SlowInitState;

static GMutex entered_lock;
static GCond entered_cond;
static SlowInitType entered_types[SLOW_INIT_MAX_TYPES];   /* under entered_lock */

/* Must be called with entered_lock held. */
static SlowInitType *
slow_init_lookup_unlocked (const char *type_name, gboolean create)
{
  SlowInitType *free_slot = NULL;

  for (guint i = 0; i < SLOW_INIT_MAX_TYPES; i++)
    {
      SlowInitType *type = &entered_types[i];

      if (type->n_agents > 0 && strcmp (type->name, type_name) == 0)
        return type;
      if (type->n_agents == 0 && free_slot == NULL)
        free_slot = type;
    }
  if (!create || free_slot == NULL)
    return NULL;

  g_strlcpy (free_slot->name, type_name, sizeof free_slot->name);
  return free_slot;
}

static gboolean
slow_init_agent_init (AhContext *ctx, gpointer state, GError **error)
{
  SlowInitState *self = state;
  const char *own_type = ah_context_get_type_name (ctx);
  const char *partner = ah_config_get_string (ctx, "partner", NULL);
  SlowInitType *own;
  gint64 deadline;

  if (partner == NULL)
    {
      g_set_error_literal (error, AH_AGENT_ERROR, AH_AGENT_ERROR_CONFIG,
                           "missing config key 'partner' (the agent type to wait for)");
      return FALSE;
    }
  if (strlen (own_type) > SLOW_INIT_TYPE_NAME_MAX)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_CONFIG,
                   "agent type name longer than %d bytes", SLOW_INIT_TYPE_NAME_MAX);
      return FALSE;
    }

  g_mutex_lock (&entered_lock);
  own = slow_init_lookup_unlocked (own_type, TRUE);
  if (own == NULL)
    {
      g_mutex_unlock (&entered_lock);
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "more than %d agent types in init at once", SLOW_INIT_MAX_TYPES);
      return FALSE;
    }
  own->n_agents++;
  g_cond_broadcast (&entered_cond);

  deadline = g_get_monotonic_time () + SLOW_INIT_TIMEOUT;
  while (slow_init_lookup_unlocked (partner, FALSE) == NULL)
    {
      if (!g_cond_wait_until (&entered_cond, &entered_lock, deadline))
        break;
    }
  self->overlap = slow_init_lookup_unlocked (partner, FALSE) != NULL ? 1 : 0;
  g_mutex_unlock (&entered_lock);

  return TRUE;
}

static void
slow_init_agent_finalize (AhContext *ctx, gpointer state)
{
  SlowInitType *own;

  g_mutex_lock (&entered_lock);
  own = slow_init_lookup_unlocked (ah_context_get_type_name (ctx), FALSE);
  if (own != NULL)
    own->n_agents--;
  g_mutex_unlock (&entered_lock);
}

static gboolean
slow_init_handle_batch (AhContext *ctx, gpointer state,
                        const AhMessage * const *messages, guint n_messages,
                        GError **error)
{
  const SlowInitState *self = state;
  const char *answer = self->overlap ? "overlap=1" : "overlap=0";

  for (guint i = 0; i < n_messages; i++)
    {
      /* A refused reply is counted failed by the host; the requester then
       * gets its timeout, which is the signal a test needs. */
      if (ah_message_get_kind (messages[i]) == AH_MESSAGE_REQUEST)
        ah_reply (ctx, messages[i], answer, strlen (answer));
    }
  return TRUE;
}

AH_PLUGIN_EXPORT const AhPluginDesc *ah_plugin_entry (void);

const AhPluginDesc *
ah_plugin_entry (void)
{
  static const AhPluginDesc desc = {
    .abi_version = AH_PLUGIN_ABI_VERSION,
    .struct_size = sizeof (AhPluginDesc),
    .name = "slow-init",
    .version = "1.0.0",
    .description = "Test plugin proving that pre-warm overlaps agent types",
    .state_size = sizeof (SlowInitState),
    .agent_init = slow_init_agent_init,
    .agent_finalize = slow_init_agent_finalize,
    .handle_batch = slow_init_handle_batch,
  };
  return &desc;
}
