/* SPDX-License-Identifier: MIT */
/* seqcheck: the plugin the hot-reload tests switch between versions of.
 * One source, several builds (tests/plugins-reload/meson.build), all with
 * the descriptor name "seqcheck" so that each can replace another:
 *
 *   SEQCHECK_VERSION=1          state format 1, reads snapshots 1 and 2
 *   SEQCHECK_VERSION=2          state format 2, reads snapshots 1 and 2,
 *                               a state layout of its own
 *   + SEQCHECK_LAYOUT_STABLE    version 1's layout, declared stable, no hooks
 *   + SEQCHECK_REFUSE_FORMAT_1  restore refuses a format 1 snapshot
 *   + SEQCHECK_ABI_2            built for plugin ABI 2.0 (the descriptor by hand)
 *   + SEQCHECK_NO_HOOKS         no snapshot/restore, no stable flag: re-initialised
 *   + SEQCHECK_REQUIRE_CONFIG   a config schema with a required key the
 *                               tests' manifest does not give
 *
 * Each agent checks ordering. A message on "seq.in" (published or sent
 * directly) carries "SENDER SEQ" in decimal; SEQ starts at 1 and each
 * must be the one after the last this agent saw from SENDER. Anything
 * else - a gap (lost), a repeat (duplicated), a smaller one (reordered) or
 * a malformed payload - counts as an error. The tests route each sender's
 * traffic to one agent, so a correct host leaves errors at 0.
 *
 * A message on "seq.hold" carries the path of a FIFO: the agent offloads
 * a function of this version that opens the FIFO, reads one byte and
 * returns. A test holds it there to have the old version's code running
 * on an I/O thread while it reloads.
 *
 * A request on "seq.stats" is answered, and a message on "seq.report"
 * answered by a publish on "seq.stats.<pool index>", with
 * "version=V count=N errors=E restores=R": R counts the state_restore
 * calls this agent's state went through, so a test can tell kept,
 * restored and re-initialised state apart.
 *
 * The two snapshot formats are deliberately different encodings of the
 * same facts, so a restore that is not really reading the format would
 * show up as wrong counts:
 *
 *   format 1: big-endian u64 count, errors, restores, then
 *             SEQCHECK_MAX_SENDERS slots of (u64 sender + 1 or 0 when
 *             free, u64 last SEQ)
 *   format 2: "SQC2", big-endian u32 number of senders, u64 count,
 *             errors, restores, then per sender (u32 sender, u64 last)
 */
#include <agenthost/agenthost.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#ifndef SEQCHECK_VERSION
#error "SEQCHECK_VERSION must be defined (1 or 2)"
#endif

#define SEQCHECK_MAX_SENDERS 32
#define SEQCHECK_FORMAT_2_MAGIC "SQC2"

#if SEQCHECK_VERSION == 1
#  define SEQCHECK_VERSION_STRING "1.0.0"
#  define SEQCHECK_STATE_FORMAT   1
#elif defined (SEQCHECK_LAYOUT_STABLE)
#  define SEQCHECK_VERSION_STRING "2.0.0-stable"
#  define SEQCHECK_STATE_FORMAT   1
#elif defined (SEQCHECK_REFUSE_FORMAT_1)
#  define SEQCHECK_VERSION_STRING "2.0.0-refuses"
#  define SEQCHECK_STATE_FORMAT   2
#elif defined (SEQCHECK_ABI_2)
#  define SEQCHECK_VERSION_STRING "2.0.0-abi2"
#  define SEQCHECK_STATE_FORMAT   2
#elif defined (SEQCHECK_NO_HOOKS)
#  define SEQCHECK_VERSION_STRING "2.0.0-nohooks"
#  define SEQCHECK_STATE_FORMAT   2
#elif defined (SEQCHECK_REQUIRE_CONFIG)
#  define SEQCHECK_VERSION_STRING "2.0.0-config"
#  define SEQCHECK_STATE_FORMAT   2
#else
#  define SEQCHECK_VERSION_STRING "2.0.0"
#  define SEQCHECK_STATE_FORMAT   2
#endif

#if SEQCHECK_VERSION == 1 || defined (SEQCHECK_LAYOUT_STABLE)
/* Version 1's layout; the stable build promises exactly this one. */
typedef struct {
  guint64 count;
  guint64 errors;
  guint64 restores;
  guint64 n_senders;
  struct {
    guint64 sender;
    guint64 last;
  } senders[SEQCHECK_MAX_SENDERS];
} SeqCheck;
#  define SEQCHECK_SENDER(self, i) ((self)->senders[i].sender)
#  define SEQCHECK_LAST(self, i)   ((self)->senders[i].last)
#else
/* Version 2 keeps the same facts in another order and shape: if the host
 * kept version 1's bytes as they are, every count would read wrong. */
typedef struct {
  guint32 n_senders;
  guint32 sender[SEQCHECK_MAX_SENDERS];
  guint64 last[SEQCHECK_MAX_SENDERS];
  guint64 restores;
  guint64 errors;
  guint64 count;
} SeqCheck;
#  define SEQCHECK_SENDER(self, i) ((self)->sender[i])
#  define SEQCHECK_LAST(self, i)   ((self)->last[i])
#endif

/* Where the last SEQ of @sender lives: a new slot when it is new, NULL
 * when the table is full. */
static guint64 *
seqcheck_find_last (SeqCheck *self,
                    guint32   sender)
{
  guint n = (guint) self->n_senders;

  for (guint i = 0; i < n; i++)
    if (SEQCHECK_SENDER (self, i) == sender)
      return &SEQCHECK_LAST (self, i);
  if (n == SEQCHECK_MAX_SENDERS)
    return NULL;
  SEQCHECK_SENDER (self, n) = sender;
  SEQCHECK_LAST (self, n) = 0;
  self->n_senders = n + 1;
  return &SEQCHECK_LAST (self, n);
}

/* Parses "SENDER SEQ" without copying: the payload is not NUL-terminated
 * by contract. */
static gboolean
seqcheck_parse (const char *data,
                gsize       size,
                guint32    *ret_sender,
                guint64    *ret_seq)
{
  guint64 values[2] = { 0, 0 };
  guint field = 0;
  gboolean have_digit = FALSE;

  for (gsize i = 0; i < size; i++)
    {
      char c = data[i];

      if (c >= '0' && c <= '9')
        {
          guint digit = (guint) (c - '0');

          if (values[field] > (G_MAXUINT64 - digit) / 10)
            return FALSE;
          values[field] = values[field] * 10 + digit;
          have_digit = TRUE;
        }
      else if (c == ' ' && field == 0 && have_digit)
        {
          field = 1;
          have_digit = FALSE;
        }
      else
        return FALSE;
    }
  if (field != 1 || !have_digit || values[0] > G_MAXUINT32 || values[1] == 0)
    return FALSE;
  *ret_sender = (guint32) values[0];
  *ret_seq = values[1];
  return TRUE;
}

static void
seqcheck_take (SeqCheck        *self,
               const AhMessage *message)
{
  gsize size;
  const char *data = ah_message_get_data (message, &size);
  guint32 sender;
  guint64 seq;
  guint64 *last;

  if (!seqcheck_parse (data, size, &sender, &seq)
      || (last = seqcheck_find_last (self, sender)) == NULL)
    {
      self->errors++;
      return;
    }
  self->count++;
  if (seq != *last + 1)
    self->errors++;
  /* After a gap, carry on from what arrived; after a repeat or a step
   * back, keep the highest, so one fault is one error, not a cascade. */
  if (seq > *last)
    *last = seq;
}

/* On an I/O thread: blocks in open() until the test opens the FIFO for
 * writing - which tells the test this code is running - then until it
 * writes or closes. Not cancellable: the test always lets it go. */
static GBytes *
seqcheck_hold (gpointer      data,
               GCancellable *cancellable,
               GError      **error)
{
  const char *fifo = data;
  char byte;
  int fd = open (fifo, O_RDONLY | O_CLOEXEC);

  if (fd < 0)
    {
      int saved_errno = errno;

      g_set_error (error, G_IO_ERROR, g_io_error_from_errno (saved_errno),
                   "cannot open %s: %s", fifo, g_strerror (saved_errno));
      return NULL;
    }
  while (read (fd, &byte, 1) < 0 && errno == EINTR)
    ;
  close (fd);
  return g_bytes_new (NULL, 0);
}

static char *
seqcheck_format_stats (const SeqCheck *self)
{
  return g_strdup_printf ("version=%d count=%" G_GUINT64_FORMAT " errors=%" G_GUINT64_FORMAT
                          " restores=%" G_GUINT64_FORMAT,
                          SEQCHECK_VERSION, (guint64) self->count, (guint64) self->errors,
                          (guint64) self->restores);
}

static gboolean
seqcheck_handle_batch (AhContext               *ctx,
                       gpointer                 state,
                       const AhMessage * const *messages,
                       guint                    n_messages,
                       GError                 **error)
{
  SeqCheck *self = state;

  for (guint i = 0; i < n_messages; i++)
    {
      const AhMessage *message = messages[i];
      const char *subject = ah_message_get_subject (message);
      AhMessageKind kind = ah_message_get_kind (message);

      if (g_str_equal (subject, "seq.in")
          && (kind == AH_MESSAGE_PUBLISH || kind == AH_MESSAGE_DIRECT))
        seqcheck_take (self, message);
      else if (g_str_equal (subject, "seq.stats") && kind == AH_MESSAGE_REQUEST)
        {
          g_autofree char *stats = seqcheck_format_stats (self);

          ah_reply (ctx, message, stats, strlen (stats));
        }
      else if (g_str_equal (subject, "seq.hold"))
        {
          gsize size;
          const char *fifo = ah_message_get_data (message, &size);

          if (ah_offload (ctx, seqcheck_hold, g_strndup (fifo, size), g_free) == 0)
            self->errors++;
        }
      else if (g_str_equal (subject, "seq.report"))
        {
          g_autofree char *stats = seqcheck_format_stats (self);
          char reply_subject[32];

          g_snprintf (reply_subject, sizeof reply_subject, "seq.stats.%u",
                      ah_context_get_index (ctx));
          ah_publish (ctx, reply_subject, stats, strlen (stats));
        }
      /* Anything else ($SYS.host.started, ...) is not this test's business. */
    }
  return TRUE;
}

#if !defined (SEQCHECK_LAYOUT_STABLE) && !defined (SEQCHECK_NO_HOOKS)

/* ---- snapshots ------------------------------------------------------------ */

#define SEQCHECK_FORMAT_1_SIZE (3 * 8 + SEQCHECK_MAX_SENDERS * 16)
#define SEQCHECK_FORMAT_2_HEADER (4 + 4 + 3 * 8)
#define SEQCHECK_FORMAT_2_ENTRY (4 + 8)

static void
seqcheck_put_u64 (guint8 **cursor,
                  guint64  value)
{
  value = GUINT64_TO_BE (value);
  memcpy (*cursor, &value, sizeof value);
  *cursor += sizeof value;
}

#if SEQCHECK_STATE_FORMAT == 2
static void
seqcheck_put_u32 (guint8 **cursor,
                  guint32  value)
{
  value = GUINT32_TO_BE (value);
  memcpy (*cursor, &value, sizeof value);
  *cursor += sizeof value;
}
#endif

static guint64
seqcheck_get_u64 (const guint8 **cursor)
{
  guint64 value;

  memcpy (&value, *cursor, sizeof value);
  *cursor += sizeof value;
  return GUINT64_FROM_BE (value);
}

static guint32
seqcheck_get_u32 (const guint8 **cursor)
{
  guint32 value;

  memcpy (&value, *cursor, sizeof value);
  *cursor += sizeof value;
  return GUINT32_FROM_BE (value);
}

static GBytes *
seqcheck_state_snapshot (AhContext    *ctx,
                         gconstpointer state,
                         GError      **error)
{
  const SeqCheck *self = state;
  guint n = (guint) self->n_senders;
  gsize size;
  guint8 *buffer;
  guint8 *cursor;

#if SEQCHECK_STATE_FORMAT == 1
  size = SEQCHECK_FORMAT_1_SIZE;
  cursor = buffer = g_malloc0 (size);
  seqcheck_put_u64 (&cursor, self->count);
  seqcheck_put_u64 (&cursor, self->errors);
  seqcheck_put_u64 (&cursor, self->restores);
  for (guint i = 0; i < n; i++)
    {
      seqcheck_put_u64 (&cursor, (guint64) SEQCHECK_SENDER (self, i) + 1);
      seqcheck_put_u64 (&cursor, SEQCHECK_LAST (self, i));
    }
#else
  size = SEQCHECK_FORMAT_2_HEADER + (gsize) n * SEQCHECK_FORMAT_2_ENTRY;
  cursor = buffer = g_malloc0 (size);
  memcpy (cursor, SEQCHECK_FORMAT_2_MAGIC, 4);
  cursor += 4;
  seqcheck_put_u32 (&cursor, n);
  seqcheck_put_u64 (&cursor, self->count);
  seqcheck_put_u64 (&cursor, self->errors);
  seqcheck_put_u64 (&cursor, self->restores);
  for (guint i = 0; i < n; i++)
    {
      seqcheck_put_u32 (&cursor, (guint32) SEQCHECK_SENDER (self, i));
      seqcheck_put_u64 (&cursor, SEQCHECK_LAST (self, i));
    }
#endif
  return g_bytes_new_take (buffer, size);
}

#if !defined (SEQCHECK_REFUSE_FORMAT_1)
static gboolean
seqcheck_restore_format_1 (SeqCheck     *self,
                           const guint8 *data,
                           gsize         size,
                           GError      **error)
{
  const guint8 *cursor = data;

  if (size != SEQCHECK_FORMAT_1_SIZE)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "seqcheck " SEQCHECK_VERSION_STRING ": a format 1 snapshot has %d bytes, "
                   "not %" G_GSIZE_FORMAT, SEQCHECK_FORMAT_1_SIZE, size);
      return FALSE;
    }
  self->count = seqcheck_get_u64 (&cursor);
  self->errors = seqcheck_get_u64 (&cursor);
  self->restores = seqcheck_get_u64 (&cursor);
  self->n_senders = 0;
  for (guint i = 0; i < SEQCHECK_MAX_SENDERS; i++)
    {
      guint64 sender_plus_one = seqcheck_get_u64 (&cursor);
      guint64 last = seqcheck_get_u64 (&cursor);

      /* Slots are filled in order: the first free one ends the table. */
      if (sender_plus_one == 0)
        break;
      if (sender_plus_one - 1 > G_MAXUINT32)
        {
          g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                       "seqcheck " SEQCHECK_VERSION_STRING ": a format 1 snapshot names "
                       "sender %" G_GUINT64_FORMAT ", more than 32 bits", sender_plus_one - 1);
          return FALSE;
        }
      SEQCHECK_SENDER (self, i) = (guint32) (sender_plus_one - 1);
      SEQCHECK_LAST (self, i) = last;
      self->n_senders = i + 1;
    }
  return TRUE;
}
#endif

static gboolean
seqcheck_restore_format_2 (SeqCheck     *self,
                           const guint8 *data,
                           gsize         size,
                           GError      **error)
{
  const guint8 *cursor = data;
  guint32 n;

  if (size < SEQCHECK_FORMAT_2_HEADER || memcmp (data, SEQCHECK_FORMAT_2_MAGIC, 4) != 0)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "seqcheck " SEQCHECK_VERSION_STRING ": not a format 2 snapshot "
                   "(no " SEQCHECK_FORMAT_2_MAGIC " header)");
      return FALSE;
    }
  cursor += 4;
  n = seqcheck_get_u32 (&cursor);
  if (n > SEQCHECK_MAX_SENDERS
      || size != SEQCHECK_FORMAT_2_HEADER + (gsize) n * SEQCHECK_FORMAT_2_ENTRY)
    {
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "seqcheck " SEQCHECK_VERSION_STRING ": a format 2 snapshot of %u senders "
                   "cannot have %" G_GSIZE_FORMAT " bytes", n, size);
      return FALSE;
    }
  self->count = seqcheck_get_u64 (&cursor);
  self->errors = seqcheck_get_u64 (&cursor);
  self->restores = seqcheck_get_u64 (&cursor);
  for (guint i = 0; i < n; i++)
    {
      SEQCHECK_SENDER (self, i) = seqcheck_get_u32 (&cursor);
      SEQCHECK_LAST (self, i) = seqcheck_get_u64 (&cursor);
    }
  self->n_senders = n;
  return TRUE;
}

static gboolean
seqcheck_state_restore (AhContext *ctx,
                        gpointer   state,
                        guint32    format,
                        GBytes    *snapshot,
                        GError   **error)
{
  SeqCheck *self = state;
  gsize size;
  const guint8 *data = g_bytes_get_data (snapshot, &size);
  gboolean restored;

  switch (format)
    {
    case 1:
#if defined (SEQCHECK_REFUSE_FORMAT_1)
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "seqcheck " SEQCHECK_VERSION_STRING ": snapshot format 1 is too old "
                   "(this version reads format 2 only)");
      return FALSE;
#else
      restored = seqcheck_restore_format_1 (self, data, size, error);
      break;
#endif
    case 2:
      restored = seqcheck_restore_format_2 (self, data, size, error);
      break;
    default:
      g_set_error (error, AH_AGENT_ERROR, AH_AGENT_ERROR_FAILED,
                   "seqcheck " SEQCHECK_VERSION_STRING ": snapshot format %u is unknown "
                   "(this version reads formats 1 and 2)", format);
      return FALSE;
    }
  if (restored)
    self->restores++;
  return restored;
}

#endif /* hooks */

#if defined (SEQCHECK_REQUIRE_CONFIG)
static const AhConfigKey seqcheck_config[] = {
  { "window", AH_CONFIG_INT, AH_CONFIG_FLAG_REQUIRED, NULL, 1, 1000,
    "a setting this version cannot do without" },
  AH_CONFIG_KEY_END
};
#endif

#if defined (SEQCHECK_ABI_2)

/* AH_PLUGIN_DEFINE stamps the ABI these headers speak, and overriding a
 * designated initializer trips -Woverride-init: the descriptor of another
 * ABI is written by hand. Everything else is valid, so the ABI is the
 * only reason to refuse it. */
AH_PLUGIN_EXPORT const AhPluginDesc *ah_plugin_entry (void);

const AhPluginDesc *
ah_plugin_entry (void)
{
  static const AhPluginDesc desc = {
    .abi_version    = (2u << 16) | 0u,
    .struct_size    = sizeof (AhPluginDesc),
    .name           = "seqcheck",
    .version        = SEQCHECK_VERSION_STRING,
    .description    = "Checks per-sender sequence numbers (built for plugin ABI 2.0)",
    .state_size     = sizeof (SeqCheck),
    .state_format   = SEQCHECK_STATE_FORMAT,
    .handle_batch   = seqcheck_handle_batch,
    .state_snapshot = seqcheck_state_snapshot,
    .state_restore  = seqcheck_state_restore,
  };
  return &desc;
}

#else

AH_PLUGIN_DEFINE (seqcheck,
  .version        = SEQCHECK_VERSION_STRING,
  .description    = "Checks per-sender sequence numbers across hot reloads",
  .state_size     = sizeof (SeqCheck),
  .state_format   = SEQCHECK_STATE_FORMAT,
#if defined (SEQCHECK_LAYOUT_STABLE)
  .flags          = AH_PLUGIN_FLAG_STATE_LAYOUT_STABLE,
#endif
#if !defined (SEQCHECK_LAYOUT_STABLE) && !defined (SEQCHECK_NO_HOOKS)
  .state_snapshot = seqcheck_state_snapshot,
  .state_restore  = seqcheck_state_restore,
#endif
#if defined (SEQCHECK_REQUIRE_CONFIG)
  .config_schema  = seqcheck_config,
#endif
  .handle_batch   = seqcheck_handle_batch)

#endif
