/* SPDX-License-Identifier: MIT */
/* flaky: an agent type that fails on purpose, to show (and test) what
 * the host's supervision does about failing agents. Config `role`:
 *
 *   worker    (default) takes tasks: a request is answered with its own
 *             payload, any other message is published again, payload
 *             unchanged, on `result_subject` (default "flaky.result").
 *             Then, on purpose:
 *             - fail_every N: the handler call that reaches the agent's
 *               Nth, 2Nth... first delivery since it (re)started returns
 *               FALSE with an error, having done none of its batch;
 *             - init_fail_every N: every Nth worker init of this loaded
 *               plugin fails (pre-warm included: keep N above the pool
 *               size, or the start itself fails);
 *             - slow_every N, slow_ms T: the call that reaches the
 *               agent's Nth, 2Nth... first delivery sleeps T ms first,
 *               for the watchdog (handler_deadline_ms) to report.
 *   producer  on its first message that is not a result (subscribe it to
 *             $SYS.host.started) publishes `tasks` tasks "task 0",
 *             "task 1"... on `task_subject` (default "flaky.task"), then
 *             tallies the results that come back on `result_subject`:
 *             once every task is in, it prints one line and publishes
 *             the tally on `done_subject` (default "flaky.done").
 *
 * The failures are deterministic: they follow counts, never a clock or
 * a random number. The worker's own count lives in its state, which the
 * host zeroes when it restarts the agent, so a restarted worker starts
 * counting afresh. Init failures cannot be counted in the state (an init
 * that fails has no state to keep), hence one counter for the plugin.
 *
 * A call that fails does nothing of its batch before failing: the host
 * retries a failed batch's messages (supervision `failed_messages:
 * retry`), and a task done before the failure would then be done twice.
 * A batch holding a redelivered message (ah_message_is_redelivered())
 * never fails: the host retries a message only once, and this plugin
 * shows retries getting through, not messages lost on purpose.
 */
#include <agenthost/agenthost.h>

#include <stdlib.h>
#include <string.h>

#define FLAKY_DEFAULT_TASK_SUBJECT   "flaky.task"
#define FLAKY_DEFAULT_RESULT_SUBJECT "flaky.result"
#define FLAKY_DEFAULT_DONE_SUBJECT   "flaky.done"
#define FLAKY_MAX_SUBJECT_LEN        255
#define FLAKY_MAX_TASKS              1000000
#define FLAKY_MAX_SLOW_MS            10000
#define FLAKY_MAX_EVERY              1000000000

typedef enum {
  FLAKY_ROLE_WORKER,
  FLAKY_ROLE_PRODUCER,
} FlakyRole;

typedef struct {
  FlakyRole role;
  char     *result_subject;

  /* worker */
  guint     fail_every;
  guint     slow_every;
  guint     slow_ms;
  guint64   first_deliveries;   /* since this agent (re)started */

  /* producer */
  char     *task_subject;
  char     *done_subject;
  guint     n_tasks;
  guint8   *task_seen;          /* one bit per task */
  gboolean  started;
  gboolean  reported;
  guint     n_results;          /* distinct tasks whose result came back */
  guint     n_duplicates;
  guint     n_malformed;
} FlakyState;

/* Worker inits of this loaded copy of the plugin, for init_fail_every.
 * The host loads each plugin from a private copy, so every host counts
 * from zero. */
static gint flaky_worker_inits;

/* The bus's rule for a subject one publishes on (as the echo plugin
 * checks it): dot-separated non-empty tokens of printable ASCII without
 * spaces, no wildcard token, at most 255 bytes. A typo then fails at
 * start, not on every message. */
static gboolean
flaky_subject_is_valid (const char *subject)
{
  gsize len = strlen (subject);
  gsize token_start = 0;

  if (len == 0 || len > FLAKY_MAX_SUBJECT_LEN)
    return FALSE;
  for (gsize i = 0; i <= len; i++)
    {
      if (i == len || subject[i] == '.')
        {
          gsize token_len = i - token_start;

          if (token_len == 0)
            return FALSE;
          if (token_len == 1 && (subject[token_start] == '*' || subject[token_start] == '>'))
            return FALSE;
          token_start = i + 1;
        }
      else if (!g_ascii_isgraph (subject[i]))
        return FALSE;
    }
  return TRUE;
}

static char *
flaky_config_subject (AhContext   *ctx,
                      const char  *key,
                      const char  *default_value,
                      GError     **error)
{
  const char *subject = ah_config_get_string (ctx, key, default_value);

  if (!flaky_subject_is_valid (subject))
    {
      g_autofree char *escaped = g_strescape (subject, NULL);

      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_CONFIG,
                   "config '%s': '%s' is not a subject (dot-separated tokens, no "
                   "wildcards, at most %d bytes)", key, escaped, FLAKY_MAX_SUBJECT_LEN);
      return NULL;
    }
  return g_strdup (subject);
}

static gboolean
flaky_worker_init (AhContext   *ctx,
                   FlakyState  *self,
                   GError     **error)
{
  guint init_fail_every = (guint) ah_config_get_int (ctx, "init_fail_every", 0);
  gint init_number = g_atomic_int_add (&flaky_worker_inits, 1) + 1;

  if (init_fail_every > 0 && (guint) init_number % init_fail_every == 0)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "failing on purpose: worker init %d (init_fail_every %u), agent index %u",
                   init_number, init_fail_every, ah_context_get_index (ctx));
      return FALSE;
    }
  self->fail_every = (guint) ah_config_get_int (ctx, "fail_every", 0);
  self->slow_every = (guint) ah_config_get_int (ctx, "slow_every", 0);
  self->slow_ms = (guint) ah_config_get_int (ctx, "slow_ms", 100);
  return TRUE;
}

static gboolean
flaky_producer_init (AhContext   *ctx,
                     FlakyState  *self,
                     GError     **error)
{
  self->task_subject = flaky_config_subject (ctx, "task_subject", FLAKY_DEFAULT_TASK_SUBJECT,
                                             error);
  if (self->task_subject == NULL)
    return FALSE;
  self->done_subject = flaky_config_subject (ctx, "done_subject", FLAKY_DEFAULT_DONE_SUBJECT,
                                             error);
  if (self->done_subject == NULL)
    return FALSE;
  /* Tasks published where results are expected would count as results. */
  if (g_str_equal (self->task_subject, self->result_subject))
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_CONFIG,
                   "config 'task_subject' and 'result_subject' are both '%s': tasks would "
                   "be counted as their own results", self->task_subject);
      return FALSE;
    }
  self->n_tasks = (guint) ah_config_get_int (ctx, "tasks", 100);
  self->task_seen = g_new0 (guint8, (self->n_tasks + 7) / 8);
  return TRUE;
}

static gboolean
flaky_agent_init_fields (AhContext   *ctx,
                         FlakyState  *self,
                         GError     **error)
{
  const char *role = ah_config_get_string (ctx, "role", "worker");

  if (g_str_equal (role, "worker"))
    self->role = FLAKY_ROLE_WORKER;
  else if (g_str_equal (role, "producer"))
    self->role = FLAKY_ROLE_PRODUCER;
  else
    {
      g_autofree char *escaped = g_strescape (role, NULL);

      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_CONFIG,
                   "config 'role': unknown role '%s' (worker or producer)", escaped);
      return FALSE;
    }

  self->result_subject = flaky_config_subject (ctx, "result_subject",
                                               FLAKY_DEFAULT_RESULT_SUBJECT, error);
  if (self->result_subject == NULL)
    return FALSE;
  if (self->role == FLAKY_ROLE_WORKER)
    return flaky_worker_init (ctx, self, error);
  return flaky_producer_init (ctx, self, error);
}

static void
flaky_state_clear (FlakyState *self)
{
  g_clear_pointer (&self->result_subject, g_free);
  g_clear_pointer (&self->task_subject, g_free);
  g_clear_pointer (&self->done_subject, g_free);
  g_clear_pointer (&self->task_seen, g_free);
}

static gboolean
flaky_agent_init (AhContext *ctx,
                  gpointer   state,
                  GError   **error)
{
  FlakyState *self = state;

  /* The host runs no finalize after a failed init: what was set up so
   * far is released here. */
  if (!flaky_agent_init_fields (ctx, self, error))
    {
      flaky_state_clear (self);
      return FALSE;
    }
  return TRUE;
}

static void
flaky_print_tally (FlakyState *self)
{
  g_print ("flaky: %u of %u tasks came back (%u duplicate%s, %u malformed)\n",
           self->n_results, self->n_tasks, self->n_duplicates,
           self->n_duplicates == 1 ? "" : "s", self->n_malformed);
}

static void
flaky_agent_finalize (AhContext *ctx,
                      gpointer   state)
{
  FlakyState *self = state;

  /* A run that ends with tasks missing still says how far it got. */
  if (self->role == FLAKY_ROLE_PRODUCER && self->started && !self->reported)
    flaky_print_tally (self);
  flaky_state_clear (self);
}

/* Whether counting from @before to @after passes a multiple of @every. */
static gboolean
flaky_reaches_multiple (guint64 before,
                        guint64 after,
                        guint   every)
{
  return every > 0 && after / every > before / every;
}

static gboolean
flaky_worker_handle_batch (AhContext              *ctx,
                           FlakyState             *self,
                           const AhMessage * const *messages,
                           guint                   n_messages,
                           GError                **error)
{
  guint64 before = self->first_deliveries;
  gboolean has_redelivered = FALSE;

  for (guint i = 0; i < n_messages; i++)
    {
      if (ah_message_is_redelivered (messages[i]))
        has_redelivered = TRUE;
      else
        self->first_deliveries++;
    }

  /* Decided before any message is acted upon: see the top comment. */
  if (!has_redelivered
      && flaky_reaches_multiple (before, self->first_deliveries, self->fail_every))
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "failing on purpose: agent index %u reached its message %" G_GUINT64_FORMAT
                   " (fail_every %u)", ah_context_get_index (ctx),
                   self->first_deliveries / self->fail_every * self->fail_every,
                   self->fail_every);
      return FALSE;
    }

  /* Blocking a bus worker is forbidden in a real plugin (ah-plugin.h:
   * "Must not block", offload such work with ah_offload()): this one
   * does it on purpose, so the watchdog has a handler to report. */
  if (flaky_reaches_multiple (before, self->first_deliveries, self->slow_every))
    g_usleep ((gulong) self->slow_ms * 1000);

  for (guint i = 0; i < n_messages; i++)
    {
      const char *subject = ah_message_get_subject (messages[i]);
      gconstpointer data;
      gsize size;

      data = ah_message_get_data (messages[i], &size);
      switch (ah_message_get_kind (messages[i]))
        {
        case AH_MESSAGE_REQUEST:
          if (!ah_reply (ctx, messages[i], data, size))
            {
              g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                           "the bus refused the reply to a task on '%s'", subject);
              return FALSE;
            }
          break;

        case AH_MESSAGE_PUBLISH:
        case AH_MESSAGE_DIRECT:
          /* A result republished into its own subject would come back
           * here forever. */
          if (g_str_equal (subject, self->result_subject))
            {
              g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                           "message on '%s', the worker's own result subject: not "
                           "republished, it would loop", subject);
              return FALSE;
            }
          if (!ah_publish (ctx, self->result_subject, data, size))
            {
              g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                           "the bus refused the result on '%s'", self->result_subject);
              return FALSE;
            }
          break;

        case AH_MESSAGE_REPLY:
        case AH_MESSAGE_TIMEOUT:
        case AH_MESSAGE_NO_RESPONDERS:
        case AH_MESSAGE_OFFLOAD_DONE:
        case AH_MESSAGE_OFFLOAD_FAILED:
        default:
          /* A worker makes no requests and offloads nothing: no such
           * message is meant for it, and failing on it would be a
           * failure not asked for. */
          break;
        }
    }
  return TRUE;
}

/* "task N" with N a decimal below @n_tasks, exactly. */
static gboolean
flaky_parse_task (gconstpointer data,
                  gsize         size,
                  guint         n_tasks,
                  guint        *ret_task)
{
  char text[32];
  char *end = NULL;
  guint64 task;

  if (size <= strlen ("task ") || size >= sizeof text
      || memcmp (data, "task ", strlen ("task ")) != 0)
    return FALSE;
  memcpy (text, data, size);
  text[size] = '\0';
  if (!g_ascii_isdigit (text[strlen ("task ")]))
    return FALSE;
  task = g_ascii_strtoull (text + strlen ("task "), &end, 10);
  if (*end != '\0' || task >= n_tasks)
    return FALSE;
  *ret_task = (guint) task;
  return TRUE;
}

static gboolean
flaky_producer_publish_tasks (AhContext   *ctx,
                              FlakyState  *self,
                              GError     **error)
{
  self->started = TRUE;
  for (guint i = 0; i < self->n_tasks; i++)
    {
      char payload[32];
      gint length = g_snprintf (payload, sizeof payload, "task %u", i);

      if (!ah_publish (ctx, self->task_subject, payload, (gsize) length))
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                       "the bus refused task %u of %u on '%s'", i, self->n_tasks,
                       self->task_subject);
          return FALSE;
        }
    }
  return TRUE;
}

static gboolean
flaky_producer_handle_batch (AhContext              *ctx,
                             FlakyState             *self,
                             const AhMessage * const *messages,
                             guint                   n_messages,
                             GError                **error)
{
  for (guint i = 0; i < n_messages; i++)
    {
      AhMessageKind kind = ah_message_get_kind (messages[i]);
      gconstpointer data;
      gsize size;
      guint task;

      if (kind != AH_MESSAGE_PUBLISH && kind != AH_MESSAGE_DIRECT)
        continue;
      if (!g_str_equal (ah_message_get_subject (messages[i]), self->result_subject))
        {
          /* One round of tasks per producer: a second trigger would
           * make every result a duplicate. */
          if (!self->started && !flaky_producer_publish_tasks (ctx, self, error))
            return FALSE;
          continue;
        }

      data = ah_message_get_data (messages[i], &size);
      if (!flaky_parse_task (data, size, self->n_tasks, &task))
        self->n_malformed++;
      else if (self->task_seen[task / 8] & (1u << (task % 8)))
        self->n_duplicates++;
      else
        {
          self->task_seen[task / 8] |= (guint8) (1u << (task % 8));
          self->n_results++;
        }
    }

  if (self->started && !self->reported && self->n_results == self->n_tasks)
    {
      g_autofree char *tally = g_strdup_printf ("tasks=%u results=%u duplicates=%u malformed=%u",
                                                self->n_tasks, self->n_results,
                                                self->n_duplicates, self->n_malformed);

      self->reported = TRUE;
      flaky_print_tally (self);
      if (!ah_publish_string (ctx, self->done_subject, tally))
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                       "the bus refused the tally on '%s'", self->done_subject);
          return FALSE;
        }
    }
  return TRUE;
}

static gboolean
flaky_handle_batch (AhContext              *ctx,
                    gpointer                state,
                    const AhMessage * const *messages,
                    guint                   n_messages,
                    GError                **error)
{
  FlakyState *self = state;

  if (self->role == FLAKY_ROLE_PRODUCER)
    return flaky_producer_handle_batch (ctx, self, messages, n_messages, error);
  return flaky_worker_handle_batch (ctx, self, messages, n_messages, error);
}

static const AhConfigKey flaky_config_schema[] = {
  { .name = "role", .type = AH_CONFIG_STRING, .default_value = "worker",
    .description = "worker (takes tasks, fails on purpose) or producer (publishes tasks, "
                   "tallies results)" },
  { .name = "result_subject", .type = AH_CONFIG_STRING,
    .default_value = FLAKY_DEFAULT_RESULT_SUBJECT,
    .description = "Where workers publish results and the producer expects them" },
  { .name = "fail_every", .type = AH_CONFIG_INT, .default_value = "0",
    .min = 0, .max = FLAKY_MAX_EVERY,
    .description = "Worker: the call reaching every Nth first delivery since the agent "
                   "started fails; 0 never" },
  { .name = "init_fail_every", .type = AH_CONFIG_INT, .default_value = "0",
    .min = 0, .max = FLAKY_MAX_EVERY,
    .description = "Worker: every Nth worker init of the plugin fails, pre-warm "
                   "included; 0 never" },
  { .name = "slow_every", .type = AH_CONFIG_INT, .default_value = "0",
    .min = 0, .max = FLAKY_MAX_EVERY,
    .description = "Worker: the call reaching every Nth first delivery sleeps slow_ms "
                   "first; 0 never" },
  { .name = "slow_ms", .type = AH_CONFIG_INT, .default_value = "100",
    .min = 0, .max = FLAKY_MAX_SLOW_MS,
    .description = "Worker: how long a slow call sleeps, in milliseconds" },
  { .name = "tasks", .type = AH_CONFIG_INT, .default_value = "100",
    .min = 1, .max = FLAKY_MAX_TASKS,
    .description = "Producer: how many tasks it publishes" },
  { .name = "task_subject", .type = AH_CONFIG_STRING,
    .default_value = FLAKY_DEFAULT_TASK_SUBJECT,
    .description = "Producer: where it publishes the tasks" },
  { .name = "done_subject", .type = AH_CONFIG_STRING,
    .default_value = FLAKY_DEFAULT_DONE_SUBJECT,
    .description = "Producer: where it publishes its tally once every task is back" },
  AH_CONFIG_KEY_END
};

AH_PLUGIN_DEFINE (flaky,
  .version        = "1.0.0",
  .description    = "Fails on purpose (handler, init, slow calls) to show supervision",
  .state_size     = sizeof (FlakyState),
  .agent_init     = flaky_agent_init,
  .agent_finalize = flaky_agent_finalize,
  .handle_batch   = flaky_handle_batch,
  .config_schema  = flaky_config_schema)
