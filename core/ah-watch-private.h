/* Watching plugin files for hot reload: inotify through GFileMonitor, on
 * a thread of its own running a GMainContext, with a debounce per file
 * (a build writes a file in several steps). No polling: the thread
 * sleeps in poll() on the inotify descriptor and a one-shot timer.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

typedef struct _AhWatch AhWatch;

/* Called on the watch thread once @path has been quiet for the debounce
 * time after a change (written, replaced, moved in). May block (the
 * reload runs here). */
typedef void (*AhWatchFunc) (const char *path, gpointer user_data);

AhWatch  *ah_watch_new      (guint debounce_ms, AhWatchFunc func, gpointer user_data);
/* Watches @path (its directory, so that a file replaced by rename or
 * deleted and written again is still seen). Adding a path twice is
 * adding it once. */
gboolean  ah_watch_add_file (AhWatch *self, const char *path, GError **error);
/* Stops the thread (waits for a running callback) and frees. */
void      ah_watch_free     (AhWatch *self);

G_END_DECLS
