/* shell: runs commands without blocking the bus. Each PUBLISH on
 * shell.run carries a command line; the agent hands running it to the
 * host's I/O threads with ah_offload(), and when the outcome comes back
 * (as an ordinary message) publishes the command's output on
 * shell.output and its status on shell.status, and prints both. When the
 * system starts, the agent runs the commands of its config.
 *
 * The command line is split into words like a shell would
 * (g_shell_parse_argv: quotes and backslashes), but no shell runs it: no
 * pipes, redirections, variables or globs. Standard error is merged into
 * the output, standard input is empty.
 *
 *   shell.status    "COMMAND: exit N", "COMMAND: signal N",
 *                   "COMMAND: killed: ..." (timeout_ms, max_output),
 *                   "COMMAND: failed: ..." (did not start, or cancelled
 *                   because the host stopped) or "COMMAND: refused: ..."
 *                   (the offload queue was full)
 *   shell.output    what the command wrote, as is (not sent when it
 *                   failed, was refused, or wrote nothing)
 *
 * SPDX-License-Identifier: MIT
 */
#include <agenthost/agenthost.h>

#include <errno.h>
#include <fcntl.h>
#include <glib-unix.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  GHashTable *commands;      /* offload id (guint64 *) -> command line: outcomes to come */
  gint64      timeout_ms;
  gint64      max_output;
} Shell;

/* What an I/O thread needs: a copy, never the agent's state. */
typedef struct {
  char  **argv;
  gint64  timeout_ms;
  gsize   max_output;
} ShellJob;

static void
shell_job_free (gpointer data)
{
  ShellJob *job = data;

  g_strfreev (job->argv);
  g_free (job);
}

/* Reads the child's output from @fd until end of file, the deadline, too
 * much output, or cancellation. Returns the reason it stopped early, or
 * NULL at end of file; sets @error only when cancelled or on a read
 * error. */
static const char *
shell_read_output (int           fd,
                   gint64        deadline_us,
                   gsize         max_output,
                   GByteArray   *output,
                   GCancellable *cancellable,
                   GError      **error)
{
  for (;;)
    {
      GPollFD fds[2] = { { fd, G_IO_IN | G_IO_HUP | G_IO_ERR, 0 }, { 0 } };
      guint n_fds = 1;
      gint64 left_ms = (deadline_us - g_get_monotonic_time () + 999) / 1000;
      guint8 buffer[4096];
      gssize n;
      gint ready;

      if (left_ms <= 0)
        return "timed out";
      if (g_cancellable_make_pollfd (cancellable, &fds[1]))
        n_fds++;
      ready = g_poll (fds, n_fds, (gint) MIN (left_ms, G_MAXINT));
      g_cancellable_release_fd (cancellable);
      if (g_cancellable_set_error_if_cancelled (cancellable, error))
        return "cancelled";
      if (ready <= 0 || fds[0].revents == 0)
        continue;   /* EINTR, or the deadline: checked at the top */

      n = read (fd, buffer, sizeof buffer);
      if (n == 0)
        return NULL;
      if (n < 0)
        {
          int saved_errno = errno;

          if (saved_errno == EINTR || saved_errno == EAGAIN)
            continue;
          g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved_errno),
                       "cannot read the output: %s", g_strerror (saved_errno));
          return "read error";
        }
      if (output->len + (gsize) n > max_output)
        {
          g_byte_array_append (output, buffer, (guint) (max_output - output->len));
          return "too much output";
        }
      g_byte_array_append (output, buffer, (guint) n);
    }
}

/* Runs on an I/O thread: may block. The result is "STATUS\nOUTPUT". */
static GBytes *
shell_run (gpointer      data,
           GCancellable *cancellable,
           GError      **error)
{
  ShellJob *job = data;
  g_autoptr(GSubprocessLauncher) launcher = NULL;
  g_autoptr(GSubprocess) process = NULL;
  g_autoptr(GByteArray) output = g_byte_array_new ();
  g_autoptr(GString) status = g_string_new (NULL);
  const char *stopped;
  int fds[2];

  if (!g_unix_open_pipe (fds, FD_CLOEXEC, error))
    return NULL;
  launcher = g_subprocess_launcher_new (G_SUBPROCESS_FLAGS_STDERR_MERGE);
  /* The launcher owns the write end now, and closes it once the child
   * has it, so the read end sees end of file when the child exits. */
  g_subprocess_launcher_take_stdout_fd (launcher, fds[1]);
  process = g_subprocess_launcher_spawnv (launcher, (const char * const *) job->argv, error);
  g_clear_object (&launcher);
  if (process == NULL)
    {
      close (fds[0]);
      return NULL;
    }

  stopped = shell_read_output (fds[0], g_get_monotonic_time () + job->timeout_ms * 1000,
                               job->max_output, output, cancellable, error);
  close (fds[0]);
  if (stopped != NULL)
    g_subprocess_force_exit (process);
  /* Not cancellable: after the kill above this returns at once, and a
   * child must never be left unreaped. */
  g_subprocess_wait (process, NULL, NULL);

  if (error != NULL && *error != NULL)
    return NULL;
  if (g_strcmp0 (stopped, "timed out") == 0)
    g_string_printf (status, "killed: timed out after %" G_GINT64_FORMAT " ms", job->timeout_ms);
  else if (stopped != NULL)
    g_string_printf (status, "killed: output over %" G_GSIZE_FORMAT " bytes", job->max_output);
  else if (g_subprocess_get_if_exited (process))
    g_string_printf (status, "exit %d", g_subprocess_get_exit_status (process));
  else
    g_string_printf (status, "signal %d", g_subprocess_get_term_sig (process));

  g_string_append_c (status, '\n');
  g_byte_array_prepend (output, (const guint8 *) status->str, (guint) status->len);
  return g_byte_array_free_to_bytes (g_steal_pointer (&output));
}

static void
shell_status (AhContext  *ctx,
              const char *command,
              const char *status)
{
  g_autofree char *text = g_strdup_printf ("%s: %s", command, status);

  g_print ("[%s]\n", text);
  ah_publish_string (ctx, "shell.status", text);
}

static void
shell_start (AhContext  *ctx,
             Shell      *self,
             const char *command)
{
  g_autoptr(GError) error = NULL;
  ShellJob *job;
  guint64 id;
  char **argv = NULL;

  if (!g_shell_parse_argv (command, NULL, &argv, &error))
    {
      g_autofree char *status = g_strconcat ("failed: ", error->message, NULL);

      shell_status (ctx, command, status);
      return;
    }

  job = g_new0 (ShellJob, 1);
  job->argv = argv;
  job->timeout_ms = self->timeout_ms;
  job->max_output = (gsize) self->max_output;
  /* The job is ah_offload's from here: freed once run, or right away
   * when refused. */
  id = ah_offload (ctx, shell_run, job, shell_job_free);
  if (id == 0)
    {
      shell_status (ctx, command, "refused: the offload queue is full");
      return;
    }
  g_hash_table_insert (self->commands, g_memdup2 (&id, sizeof id), g_strdup (command));
}

static void
shell_outcome (AhContext       *ctx,
               Shell           *self,
               const AhMessage *message)
{
  guint64 id = ah_message_get_correlation (message);
  g_autofree guint64 *key = NULL;
  g_autofree char *command = NULL;
  g_autofree char *text = NULL;
  const char *newline;
  const char *output;
  gsize output_size;
  gsize size;
  const char *data = ah_message_get_data (message, &size);

  if (!g_hash_table_steal_extended (self->commands, &id, (gpointer *) &key, (gpointer *) &command))
    return;   /* not one of ours: nothing to report it against */

  text = g_strndup (data, size);
  if (ah_message_get_kind (message) == AH_MESSAGE_OFFLOAD_FAILED)
    {
      g_autofree char *status = g_strconcat ("failed: ", text, NULL);

      shell_status (ctx, command, status);
      return;
    }

  /* "STATUS\nOUTPUT", as shell_run made it. */
  newline = memchr (data, '\n', size);
  g_return_if_fail (newline != NULL);
  text[newline - data] = '\0';
  output = newline + 1;
  output_size = size - (gsize) (output - data);
  if (output_size > 0)
    {
      g_print ("$ %s\n%.*s%s", command, (int) output_size, output,
               output[output_size - 1] == '\n' ? "" : "\n");
      ah_publish (ctx, "shell.output", output, output_size);
    }
  shell_status (ctx, command, text);
}

static gboolean
shell_init (AhContext *ctx,
            gpointer   state,
            GError   **error)
{
  Shell *self = state;

  self->commands = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, g_free);
  /* The schema's defaults and ranges apply: validate refuses others. */
  self->timeout_ms = ah_config_get_int (ctx, "timeout_ms", 10000);
  self->max_output = ah_config_get_int (ctx, "max_output", 65536);
  return TRUE;
}

static void
shell_finalize (AhContext *ctx,
                gpointer   state)
{
  Shell *self = state;

  /* Outcomes still to come are dead-lettered: the agent is gone. */
  g_clear_pointer (&self->commands, g_hash_table_unref);
}

static gboolean
shell_handle_batch (AhContext               *ctx,
                    gpointer                 state,
                    const AhMessage * const *messages,
                    guint                    n_messages,
                    GError                 **error)
{
  Shell *self = state;

  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      const char *subject = ah_message_get_subject (message);

      switch (ah_message_get_kind (message))
        {
        case AH_MESSAGE_OFFLOAD_DONE:
        case AH_MESSAGE_OFFLOAD_FAILED:
          shell_outcome (ctx, self, message);
          break;

        case AH_MESSAGE_PUBLISH:
          if (g_str_equal (subject, "$SYS.host.started"))
            {
              for (guint n = 0;; n++)
                {
                  g_autofree char *key = g_strdup_printf ("commands.%u", n);
                  const char *command = ah_config_get_string (ctx, key, NULL);

                  if (command == NULL)
                    break;
                  shell_start (ctx, self, command);
                }
            }
          else
            {
              gsize size;
              const char *data = ah_message_get_data (message, &size);
              g_autofree char *command = g_strndup (data, size);

              shell_start (ctx, self, command);
            }
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

static const AhConfigKey shell_config[] = {
  { "commands", AH_CONFIG_STRING, AH_CONFIG_FLAG_NONE, NULL, 0, 0,
    "Command lines run when the system starts (a sequence)", { NULL, NULL } },
  { "timeout_ms", AH_CONFIG_INT, AH_CONFIG_FLAG_NONE, "10000", 1, 3600000,
    "A command still running after this long is killed", { NULL, NULL } },
  { "max_output", AH_CONFIG_INT, AH_CONFIG_FLAG_NONE, "65536", 1, 16777216,
    "Bytes of output kept; a command writing more is killed", { NULL, NULL } },
  AH_CONFIG_KEY_END
};

AH_PLUGIN_DEFINE (shell,
  .version       = "1.0.0",
  .description   = "Runs command lines on the host's I/O threads and publishes their output",
  .state_size    = sizeof (Shell),
  .agent_init    = shell_init,
  .agent_finalize = shell_finalize,
  .handle_batch  = shell_handle_batch,
  .config_schema = shell_config)
