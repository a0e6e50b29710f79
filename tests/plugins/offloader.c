/* SPDX-License-Identifier: MIT */
/* A plugin that offloads blocking work, for the offload tests. Each
 * PUBLISH on offloader.<verb> carries "TAG ARGUMENT":
 *
 *   offloader.sleep     ARGUMENT is "MS" or "MS FD": waits MS ms on an I/O
 *                       thread (cancellable), after writing one byte to FD
 *                       if given, so a test knows the function is running
 *   offloader.read      reads the file ARGUMENT
 *   offloader.read-fd   reads file descriptor ARGUMENT until end of file
 *                       (cancellable), so a test decides when it ends
 *   offloader.nothing   a function returning neither result nor error
 *   offloader.tick      offloads nothing: publishes ARGUMENT on offload.seen
 *   offloader.block     offloads nothing: the handler itself reads one byte
 *                       from file descriptor ARGUMENT. Handlers must never
 *                       block; this one does on purpose, so that a test can
 *                       hold the agent while messages queue up for it
 *
 * An accepted offload is announced on offload.started as "TAG ID", a
 * refused one on offload.refused as "TAG". Its outcome comes back as a
 * message and is published on offload.result as "TAG ID done PAYLOAD" or
 * "TAG ID failed MESSAGE", the tag found from the correlation id; an
 * outcome whose id this agent never got, or whose envelope is wrong,
 * has the tag "?". With the config key `ledger`, each offload's destroy
 * notify appends "TAG" as a line to that file, so a test can count that
 * it ran exactly once whatever happened to the offload. */
#include <agenthost/agenthost.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

typedef struct {
  GHashTable *tags;   /* offload id (guint64 *) -> tag; the outcomes to come */
  char       *ledger;
} OffloaderState;

typedef struct {
  char   *tag;
  char   *argument;
  char   *ledger;     /* may be NULL */
} OffloadJob;

static void
offload_job_free (gpointer data)
{
  OffloadJob *job = data;

  if (job->ledger != NULL)
    {
      g_autofree char *line = g_strconcat (job->tag, "\n", NULL);
      int fd = open (job->ledger, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);

      /* One short write with O_APPEND: lines from several threads never
       * mix. A failure shows as a missing line, which the test reports. */
      if (fd >= 0)
        {
          if (write (fd, line, strlen (line)) < 0)
            g_warning ("offloader: cannot write the ledger: %s", g_strerror (errno));
          close (fd);
        }
    }
  g_free (job->tag);
  g_free (job->argument);
  g_free (job->ledger);
  g_free (job);
}

/* Waits until @fd is readable, or @cancellable is cancelled. */
static gboolean
offloader_wait (int           fd,
                gint          timeout_ms,
                GCancellable *cancellable,
                gboolean     *ret_ready,
                GError      **error)
{
  GPollFD fds[2] = { { 0 } };
  guint n_fds = 0;
  gint result;

  if (fd >= 0)
    {
      fds[n_fds].fd = fd;
      fds[n_fds].events = G_IO_IN | G_IO_HUP | G_IO_ERR;
      n_fds++;
    }
  if (g_cancellable_make_pollfd (cancellable, &fds[n_fds]))
    n_fds++;

  do
    result = g_poll (fds, n_fds, timeout_ms);
  while (result < 0 && errno == EINTR);
  g_cancellable_release_fd (cancellable);

  if (g_cancellable_set_error_if_cancelled (cancellable, error))
    return FALSE;
  if (result < 0)
    {
      int saved_errno = errno;

      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved_errno), "poll: %s",
                   g_strerror (saved_errno));
      return FALSE;
    }
  *ret_ready = fd >= 0 && fds[0].revents != 0;
  return TRUE;
}

static GBytes *
offloader_sleep (gpointer      data,
                 GCancellable *cancellable,
                 GError      **error)
{
  OffloadJob *job = data;
  g_auto(GStrv) numbers = g_strsplit (job->argument, " ", 2);
  guint64 ms = 0;
  guint64 notify_fd = 0;
  gboolean ready;
  char *text;

  if (!g_ascii_string_to_unsigned (numbers[0], 10, 0, G_MAXINT, &ms, error))
    return NULL;
  if (numbers[1] != NULL)
    {
      if (!g_ascii_string_to_unsigned (numbers[1], 10, 0, G_MAXINT, &notify_fd, error))
        return NULL;
      if (write ((int) notify_fd, "r", 1) != 1)
        {
          int saved_errno = errno;

          g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved_errno), "write: %s",
                       g_strerror (saved_errno));
          return NULL;
        }
    }
  if (!offloader_wait (-1, (gint) ms, cancellable, &ready, error))
    return NULL;
  text = g_strdup_printf ("slept %" G_GUINT64_FORMAT " ms", ms);
  return g_bytes_new_take (text, strlen (text));
}

static GBytes *
offloader_read (gpointer      data,
                GCancellable *cancellable,
                GError      **error)
{
  OffloadJob *job = data;
  char *contents = NULL;
  gsize length = 0;

  if (!g_file_get_contents (job->argument, &contents, &length, error))
    return NULL;
  return g_bytes_new_take (contents, length);
}

static GBytes *
offloader_read_fd (gpointer      data,
                   GCancellable *cancellable,
                   GError      **error)
{
  OffloadJob *job = data;
  g_autoptr(GByteArray) contents = g_byte_array_new ();
  guint64 fd = 0;

  if (!g_ascii_string_to_unsigned (job->argument, 10, 0, G_MAXINT, &fd, error))
    return NULL;
  for (;;)
    {
      guint8 buffer[256];
      gboolean ready = FALSE;
      gssize n;

      if (!offloader_wait ((int) fd, -1, cancellable, &ready, error))
        return NULL;
      if (!ready)
        continue;
      n = read ((int) fd, buffer, sizeof buffer);
      if (n == 0)
        break;
      if (n < 0)
        {
          int saved_errno = errno;

          if (saved_errno == EINTR || saved_errno == EAGAIN)
            continue;
          g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved_errno), "read: %s",
                       g_strerror (saved_errno));
          return NULL;
        }
      g_byte_array_append (contents, buffer, (guint) n);
    }
  return g_byte_array_free_to_bytes (g_steal_pointer (&contents));
}

static GBytes *
offloader_nothing (gpointer      data,
                   GCancellable *cancellable,
                   GError      **error)
{
  return NULL;
}

static void
offloader_block (const char *argument)
{
  guint64 fd = 0;
  char byte;

  if (!g_ascii_string_to_unsigned (argument, 10, 0, G_MAXINT, &fd, NULL))
    return;
  while (read ((int) fd, &byte, 1) < 0 && errno == EINTR)
    ;
}

static gboolean
offloader_agent_init (AhContext *ctx,
                      gpointer   state,
                      GError   **error)
{
  OffloaderState *self = state;
  const char *ledger = ah_config_get_string (ctx, "ledger", NULL);

  self->tags = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, g_free);
  self->ledger = g_strdup (ledger);
  return TRUE;
}

static void
offloader_agent_finalize (AhContext *ctx,
                          gpointer   state)
{
  OffloaderState *self = state;

  g_clear_pointer (&self->tags, g_hash_table_unref);
  g_clear_pointer (&self->ledger, g_free);
}

static void
offloader_start (AhContext      *ctx,
                 OffloaderState *self,
                 AhOffloadFunc   func,
                 const char     *tag,
                 const char     *argument)
{
  OffloadJob *job = g_new0 (OffloadJob, 1);
  g_autofree char *text = NULL;
  guint64 id;

  job->tag = g_strdup (tag);
  job->argument = g_strdup (argument);
  job->ledger = g_strdup (self->ledger);
  id = ah_offload (ctx, func, job, offload_job_free);
  if (id == 0)
    {
      ah_publish_string (ctx, "offload.refused", tag);
      return;
    }
  g_hash_table_insert (self->tags, g_memdup2 (&id, sizeof id), g_strdup (tag));
  text = g_strdup_printf ("%s %" G_GUINT64_FORMAT, tag, id);
  ah_publish_string (ctx, "offload.started", text);
}

static void
offloader_outcome (AhContext       *ctx,
                   OffloaderState  *self,
                   const AhMessage *message)
{
  guint64 id = ah_message_get_correlation (message);
  gboolean done = ah_message_get_kind (message) == AH_MESSAGE_OFFLOAD_DONE;
  g_autofree guint64 *key = NULL;
  g_autofree char *tag = NULL;
  g_autofree char *text = NULL;
  gsize size;
  const char *data = ah_message_get_data (message, &size);

  if (!g_hash_table_steal_extended (self->tags, &id, (gpointer *) &key, (gpointer *) &tag)
      || g_strcmp0 (ah_message_get_subject (message), "$SYS.offload") != 0
      || ah_message_get_sender (message) != AH_AGENT_ID_NONE)
    {
      g_free (tag);
      tag = g_strdup ("?");
    }
  text = g_strdup_printf ("%s %" G_GUINT64_FORMAT " %s %.*s", tag, id, done ? "done" : "failed",
                          (int) size, data);
  ah_publish_string (ctx, "offload.result", text);
}

static gboolean
offloader_handle_batch (AhContext               *ctx,
                        gpointer                 state,
                        const AhMessage * const *messages,
                        guint                    n_messages,
                        GError                 **error)
{
  OffloaderState *self = state;

  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      const char *subject = ah_message_get_subject (message);
      g_autofree char *payload = NULL;
      g_auto(GStrv) words = NULL;
      gsize size;
      const char *data;

      switch (ah_message_get_kind (message))
        {
        case AH_MESSAGE_OFFLOAD_DONE:
        case AH_MESSAGE_OFFLOAD_FAILED:
          offloader_outcome (ctx, self, message);
          continue;
        case AH_MESSAGE_PUBLISH:
          break;
        case AH_MESSAGE_DIRECT:
        case AH_MESSAGE_REQUEST:
        case AH_MESSAGE_REPLY:
        case AH_MESSAGE_TIMEOUT:
        case AH_MESSAGE_NO_RESPONDERS:
        default:
          continue;
        }

      data = ah_message_get_data (message, &size);
      payload = g_strndup (data, size);
      words = g_strsplit (payload, " ", 2);
      if (words[0] == NULL || words[1] == NULL)
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_INVALID_MESSAGE,
                       "expected \"TAG ARGUMENT\" on %s, got \"%s\"", subject, payload);
          return FALSE;
        }

      if (g_str_equal (subject, "offloader.sleep"))
        offloader_start (ctx, self, offloader_sleep, words[0], words[1]);
      else if (g_str_equal (subject, "offloader.read"))
        offloader_start (ctx, self, offloader_read, words[0], words[1]);
      else if (g_str_equal (subject, "offloader.read-fd"))
        offloader_start (ctx, self, offloader_read_fd, words[0], words[1]);
      else if (g_str_equal (subject, "offloader.nothing"))
        offloader_start (ctx, self, offloader_nothing, words[0], words[1]);
      else if (g_str_equal (subject, "offloader.tick"))
        ah_publish_string (ctx, "offload.seen", payload);
      else if (g_str_equal (subject, "offloader.block"))
        offloader_block (words[1]);
    }
  return TRUE;
}

AH_PLUGIN_DEFINE (offloader,
  .version        = "1.0.0",
  .description    = "Test plugin offloading blocking work and publishing the outcomes",
  .state_size     = sizeof (OffloaderState),
  .agent_init     = offloader_agent_init,
  .agent_finalize = offloader_agent_finalize,
  .handle_batch   = offloader_handle_batch)
