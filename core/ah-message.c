/* Refcounted, immutable messages and the public read-only accessors.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-message-private.h"

#include <string.h>
#include <time.h>

gint64
ah__monotonic_ns (void)
{
  struct timespec now;

  clock_gettime (CLOCK_MONOTONIC, &now);
  return (gint64) now.tv_sec * G_GINT64_CONSTANT (1000000000) + now.tv_nsec;
}

AhMessage *
ah__message_new (AhMessageKind kind,
                 AhPriority    priority,
                 const char   *subject,
                 gboolean      subject_is_interned,
                 AhAgentId     sender,
                 AhAgentId     reply_to,
                 guint64       correlation,
                 gconstpointer data,
                 gsize         size)
{
  gsize subject_size = subject_is_interned ? 0 : strlen (subject) + 1;
  AhMessage *message;

  g_return_val_if_fail (data != NULL || size == 0, NULL);
  /* The bus refuses larger payloads before it gets here; this keeps the
   * sum below from wrapping whatever the caller does. */
  g_return_val_if_fail (size <= G_MAXSIZE / 2, NULL);

  message = g_malloc (sizeof (AhMessage) + size + 1 + subject_size);
  atomic_init (&message->ref_count, 1);
  message->kind = kind;
  message->redelivered = FALSE;
  message->priority = priority;
  message->sender = sender;
  message->reply_to = reply_to;
  message->correlation = correlation;
  message->size = size;
  if (size > 0)
    memcpy (message->data, data, size);
  message->data[size] = '\0';
  if (subject_is_interned)
    {
      message->subject = subject;
    }
  else
    {
      memcpy (message->data + size + 1, subject, subject_size);
      message->subject = message->data + size + 1;
    }
  /* Last, so the latency measured covers only the time on the bus. */
  message->publish_time_ns = ah__monotonic_ns ();

  return message;
}

AhMessage *
ah__message_ref (AhMessage *message)
{
  atomic_fetch_add_explicit (&message->ref_count, 1, memory_order_relaxed);
  return message;
}

void
ah__message_unref (AhMessage *message)
{
  /* acq_rel: every reader's last access happens before the free. */
  if (atomic_fetch_sub_explicit (&message->ref_count, 1, memory_order_acq_rel) == 1)
    g_free (message);
}

const char *
ah_message_get_subject (const AhMessage *message)
{
  g_return_val_if_fail (message != NULL, NULL);

  return message->subject;
}

gconstpointer
ah_message_get_data (const AhMessage *message,
                     gsize           *ret_size)
{
  g_return_val_if_fail (message != NULL, NULL);

  if (ret_size != NULL)
    *ret_size = message->size;
  return message->data;
}

AhMessageKind
ah_message_get_kind (const AhMessage *message)
{
  g_return_val_if_fail (message != NULL, AH_MESSAGE_PUBLISH);

  return message->kind;
}

AhPriority
ah_message_get_priority (const AhMessage *message)
{
  g_return_val_if_fail (message != NULL, AH_PRIORITY_NORMAL);

  return message->priority;
}

AhAgentId
ah_message_get_sender (const AhMessage *message)
{
  g_return_val_if_fail (message != NULL, AH_AGENT_ID_NONE);

  return message->sender;
}

guint64
ah_message_get_correlation (const AhMessage *message)
{
  g_return_val_if_fail (message != NULL, 0);

  return message->correlation;
}

gboolean
ah_message_is_redelivered (const AhMessage *message)
{
  g_return_val_if_fail (message != NULL, FALSE);

  return message->redelivered;
}

AhMessage *
ah__message_copy_redelivered (const AhMessage *message)
{
  /* A subject copied into the message lives right after the payload;
   * an interned one lives in the bus, which outlives every message. */
  gboolean interned = message->subject != message->data + message->size + 1;
  AhMessage *copy = ah__message_new (message->kind, message->priority, message->subject,
                                     interned, message->sender, message->reply_to,
                                     message->correlation, message->data, message->size);

  copy->publish_time_ns = message->publish_time_ns;
  copy->redelivered = TRUE;
  return copy;
}
