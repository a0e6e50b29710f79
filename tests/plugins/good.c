/* SPDX-License-Identifier: MIT */
/* A plugin with every hook and field set, built the way a plugin author
 * would build it: the loader tests check each field arrives intact. It
 * counts what it handles and carries that count across a hot reload. */
#include <agenthost/agenthost.h>

#include <string.h>

#define GOOD_STATE_FORMAT 1

typedef struct {
  guint64 n_messages;
  guint64 n_batches;
} GoodState;

static gboolean
good_agent_init (AhContext *ctx, gpointer state, GError **error)
{
  GoodState *self = state;

  /* The host hands over zeroed state; nothing else to set up. */
  self->n_messages = 0;
  self->n_batches = 0;
  return TRUE;
}

static void
good_agent_finalize (AhContext *ctx, gpointer state)
{
  /* Nothing acquired in init: the state memory is the host's. */
}

static gboolean
good_handle_batch (AhContext *ctx, gpointer state,
                   const AhMessage * const *messages, guint n_messages,
                   GError **error)
{
  GoodState *self = state;

  self->n_messages += n_messages;
  self->n_batches++;
  return TRUE;
}

static GBytes *
good_state_snapshot (AhContext *ctx, gconstpointer state, GError **error)
{
  return g_bytes_new (state, sizeof (GoodState));
}

static gboolean
good_state_restore (AhContext *ctx, gpointer state, guint32 format,
                    GBytes *snapshot, GError **error)
{
  gsize size = 0;
  gconstpointer data = g_bytes_get_data (snapshot, &size);

  if (format != GOOD_STATE_FORMAT || size != sizeof (GoodState))
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "cannot restore snapshot format %u of %" G_GSIZE_FORMAT " bytes",
                   format, size);
      return FALSE;
    }
  memcpy (state, data, sizeof (GoodState));
  return TRUE;
}

AH_PLUGIN_DEFINE (good,
  .version        = "1.2.3",
  .description    = "Test plugin with every hook",
  .state_size     = sizeof (GoodState),
  .flags          = AH_PLUGIN_FLAG_STATE_LAYOUT_STABLE,
  .state_format   = GOOD_STATE_FORMAT,
  .agent_init     = good_agent_init,
  .agent_finalize = good_agent_finalize,
  .handle_batch   = good_handle_batch,
  .state_snapshot = good_state_snapshot,
  .state_restore  = good_state_restore)
