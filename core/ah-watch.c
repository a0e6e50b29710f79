/* Watching plugin files for hot reload: one GFileMonitor per directory,
 * run by a thread of its own, and a debounce timer per watched file.
 *
 * SPDX-License-Identifier: MIT
 */
#include "ah-watch-private.h"

#include <gio/gio.h>

/* A watched file. Lives on the watch thread: only that thread touches
 * @debounce once the file is added. */
typedef struct {
  AhWatch *watch;
  char    *path;          /* as given to ah_watch_add_file(): what the callback gets */
  char    *canonical;     /* absolute, without "." and "..": the key */
  /* Ready time -1 while quiet; set to now + debounce by every event, so
   * the callback runs once the file has been left alone that long. */
  GSource *debounce;
} AhWatchFile;

/* A watched directory: the monitor sees files replaced by rename or
 * deleted and written again, which a monitor of the file itself loses. */
typedef struct {
  AhWatch      *watch;
  char         *canonical;
  GFileMonitor *monitor;
} AhWatchDir;

struct _AhWatch {
  guint         debounce_ms;
  AhWatchFunc   func;
  gpointer      user_data;

  GMainContext *context;
  GMainLoop    *loop;
  GThread      *thread;
  /* Set by ah_watch_free(): a debounce that falls due during the stop
   * must not start a callback (a reload) nobody waits for any more. */
  gint          stopping;

  /* Watch thread only (ah_watch_add_file() runs its work there). */
  GHashTable   *files;    /* canonical path -> AhWatchFile (owned) */
  GHashTable   *dirs;     /* canonical directory -> AhWatchDir (owned) */
};

static void
ah_watch_file_free (AhWatchFile *file)
{
  if (file->debounce != NULL)
    {
      g_source_destroy (file->debounce);
      g_source_unref (file->debounce);
    }
  g_free (file->canonical);
  g_free (file->path);
  g_free (file);
}

static void
ah_watch_dir_free (AhWatchDir *dir)
{
  if (dir->monitor != NULL)
    {
      g_signal_handlers_disconnect_by_data (dir->monitor, dir);
      g_file_monitor_cancel (dir->monitor);
      g_object_unref (dir->monitor);
    }
  g_free (dir->canonical);
  g_free (dir);
}

/* Only a ready time makes this source dispatch: no prepare, no check. */
static gboolean
ah_watch_debounce_dispatch (GSource    *source,
                            GSourceFunc callback,
                            gpointer    user_data)
{
  g_source_set_ready_time (source, -1);
  return callback (user_data);
}

static GSourceFuncs ah_watch_debounce_funcs = {
  .dispatch = ah_watch_debounce_dispatch,
};

static gboolean
ah_watch_file_quiet (gpointer user_data)
{
  AhWatchFile *file = user_data;
  AhWatch *watch = file->watch;

  if (!g_atomic_int_get (&watch->stopping))
    watch->func (file->path, watch->user_data);
  return G_SOURCE_CONTINUE;
}

static void
ah_watch_file_arm (AhWatchFile *file)
{
  g_source_set_ready_time (file->debounce,
                           g_get_monotonic_time ()
                           + (gint64) file->watch->debounce_ms * G_TIME_SPAN_MILLISECOND);
}

/* On the watch thread, from the directory's monitor. */
static void
ah_watch_dir_changed (GFileMonitor     *monitor,
                      GFile            *child,
                      GFile            *other,
                      GFileMonitorEvent event,
                      gpointer          user_data)
{
  AhWatchDir *dir = user_data;
  g_autofree char *changed = NULL;
  AhWatchFile *file;
  GFile *target;

  switch (event)
    {
    case G_FILE_MONITOR_EVENT_CHANGED:
    case G_FILE_MONITOR_EVENT_CHANGES_DONE_HINT:
    case G_FILE_MONITOR_EVENT_CREATED:
    case G_FILE_MONITOR_EVENT_MOVED_IN:
      target = child;
      break;
    case G_FILE_MONITOR_EVENT_RENAMED:
      /* @child is the old name: what matters is the name it now has. */
      target = other;
      break;
    case G_FILE_MONITOR_EVENT_DELETED:
    case G_FILE_MONITOR_EVENT_ATTRIBUTE_CHANGED:
    case G_FILE_MONITOR_EVENT_PRE_UNMOUNT:
    case G_FILE_MONITOR_EVENT_UNMOUNTED:
    case G_FILE_MONITOR_EVENT_MOVED:
    case G_FILE_MONITOR_EVENT_MOVED_OUT:
    default:
      /* A file gone or touched has no new version to load; the one that
       * replaces it arrives as one of the events above. */
      return;
    }
  if (target == NULL)
    return;

  /* The monitor's directory is canonical, so are the paths of its
   * children: they compare with the keys as they are. */
  changed = g_file_get_path (target);
  file = changed != NULL ? g_hash_table_lookup (dir->watch->files, changed) : NULL;
  if (file != NULL)
    ah_watch_file_arm (file);
}

static gpointer
ah_watch_thread_main (gpointer data)
{
  AhWatch *self = data;

  /* A GFileMonitor delivers its events to the thread-default context of
   * the thread that creates it: this one, since every monitor is made
   * here. */
  g_main_context_push_thread_default (self->context);
  g_main_loop_run (self->loop);

  /* Monitors and timers go on the thread they belong to: the monitors'
   * sources are attached to this context. */
  g_hash_table_remove_all (self->files);
  g_hash_table_remove_all (self->dirs);
  g_main_context_pop_thread_default (self->context);
  return NULL;
}

/**
 * ah_watch_new:
 * @debounce_ms: how long a file must stay quiet after a change before
 *   @func runs for it
 * @func: called on the watch thread
 * @user_data: for @func
 *
 * Starts the watch thread. Nothing is watched until ah_watch_add_file().
 *
 * Returns: (transfer full): the watch; free with ah_watch_free()
 */
AhWatch *
ah_watch_new (guint       debounce_ms,
              AhWatchFunc func,
              gpointer    user_data)
{
  AhWatch *self;

  g_return_val_if_fail (func != NULL, NULL);

  self = g_new0 (AhWatch, 1);
  self->debounce_ms = debounce_ms;
  self->func = func;
  self->user_data = user_data;
  self->context = g_main_context_new ();
  self->loop = g_main_loop_new (self->context, FALSE);
  self->files = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                       (GDestroyNotify) ah_watch_file_free);
  self->dirs = g_hash_table_new_full (g_str_hash, g_str_equal, NULL,
                                      (GDestroyNotify) ah_watch_dir_free);
  self->thread = g_thread_new ("ah-watch", ah_watch_thread_main, self);
  return self;
}

/* Work handed to the watch thread, and the caller waiting for it. */
typedef struct {
  AhWatch    *watch;
  const char *path;
  GError     *error;
  gboolean    ok;
  gboolean    done;
  GMutex      lock;
  GCond       cond;
} AhWatchAddRequest;

static gboolean
ah_watch_add_on_thread (AhWatch *self, const char *path, GError **error)
{
  g_autofree char *canonical = g_canonicalize_filename (path, NULL);
  g_autofree char *dir_path = g_path_get_dirname (canonical);
  AhWatchFile *file;
  AhWatchDir *dir;

  if (g_hash_table_contains (self->files, canonical))
    return TRUE;

  dir = g_hash_table_lookup (self->dirs, dir_path);
  if (dir == NULL)
    {
      g_autoptr(GFile) dir_file = NULL;
      g_autoptr(GError) local_error = NULL;
      GFileMonitor *monitor;

      /* GLib would accept a missing directory and poll until it appears;
       * a plugin's directory that does not exist is a mistake to report. */
      if (!g_file_test (dir_path, G_FILE_TEST_IS_DIR))
        {
          g_set_error (error, G_IO_ERROR, G_IO_ERROR_NOT_FOUND,
                       "%s: cannot watch: no directory %s", path, dir_path);
          return FALSE;
        }
      dir_file = g_file_new_for_path (dir_path);
      monitor = g_file_monitor_directory (dir_file, G_FILE_MONITOR_WATCH_MOVES, NULL,
                                          &local_error);
      if (monitor == NULL)
        {
          g_set_error (error, local_error->domain, local_error->code,
                       "%s: cannot watch: %s", path, local_error->message);
          return FALSE;
        }
      /* Without a rate limit: GLib holds back a CHANGED event that comes
       * within the limit (800 ms) of the previous one, and a debounce
       * shorter than that would run out while a build still writes. */
      g_file_monitor_set_rate_limit (monitor, 0);

      dir = g_new0 (AhWatchDir, 1);
      dir->watch = self;
      dir->canonical = g_steal_pointer (&dir_path);
      dir->monitor = monitor;
      g_signal_connect (monitor, "changed", G_CALLBACK (ah_watch_dir_changed), dir);
      g_hash_table_insert (self->dirs, dir->canonical, dir);
    }

  file = g_new0 (AhWatchFile, 1);
  file->watch = self;
  file->path = g_strdup (path);
  file->canonical = g_steal_pointer (&canonical);
  file->debounce = g_source_new (&ah_watch_debounce_funcs, sizeof (GSource));
  g_source_set_name (file->debounce, "ah-watch debounce");
  g_source_set_callback (file->debounce, ah_watch_file_quiet, file, NULL);
  g_source_attach (file->debounce, self->context);
  g_hash_table_insert (self->files, file->canonical, file);
  return TRUE;
}

static gboolean
ah_watch_add_dispatch (gpointer data)
{
  AhWatchAddRequest *request = data;
  gboolean ok = ah_watch_add_on_thread (request->watch, request->path, &request->error);

  g_mutex_lock (&request->lock);
  request->ok = ok;
  request->done = TRUE;
  g_cond_signal (&request->cond);
  g_mutex_unlock (&request->lock);
  return G_SOURCE_REMOVE;
}

/**
 * ah_watch_add_file:
 * @self: a watch
 * @path: a file; its directory must exist, the file need not
 * @error: return location for a #G_IO_ERROR
 *
 * Watches @path from now on. Callable from any thread, the callback
 * included; waits until the monitor is in place, so a change made after
 * this returns is seen.
 *
 * Returns: %TRUE, or %FALSE with @error set
 */
gboolean
ah_watch_add_file (AhWatch    *self,
                   const char *path,
                   GError    **error)
{
  AhWatchAddRequest request = { .watch = self, .path = path };

  g_return_val_if_fail (self != NULL, FALSE);
  g_return_val_if_fail (path != NULL, FALSE);
  g_return_val_if_fail (error == NULL || *error == NULL, FALSE);

  g_mutex_init (&request.lock);
  g_cond_init (&request.cond);
  /* Runs at once when called on the watch thread (it owns the context),
   * else as a source of the watch thread's loop. */
  g_main_context_invoke (self->context, ah_watch_add_dispatch, &request);

  g_mutex_lock (&request.lock);
  while (!request.done)
    g_cond_wait (&request.cond, &request.lock);
  g_mutex_unlock (&request.lock);
  g_mutex_clear (&request.lock);
  g_cond_clear (&request.cond);

  if (!request.ok)
    g_propagate_error (error, request.error);
  return request.ok;
}

static gboolean
ah_watch_quit_dispatch (gpointer data)
{
  AhWatch *self = data;

  g_main_loop_quit (self->loop);
  return G_SOURCE_REMOVE;
}

/**
 * ah_watch_free:
 * @self: (nullable): a watch
 *
 * Stops the watch thread, waiting for a callback that is running, and
 * frees everything. No callback starts once this is called, not even for
 * a debounce that is due. Must not be called from the callback.
 */
void
ah_watch_free (AhWatch *self)
{
  if (self == NULL)
    return;
  g_return_if_fail (g_thread_self () != self->thread);

  g_atomic_int_set (&self->stopping, TRUE);
  /* Quit from inside the loop: a g_main_loop_quit() that came before
   * the thread reached g_main_loop_run() would be lost, and the join
   * below would never return. */
  g_main_context_invoke (self->context, ah_watch_quit_dispatch, self);
  g_thread_join (self->thread);

  g_hash_table_unref (self->files);
  g_hash_table_unref (self->dirs);
  g_main_loop_unref (self->loop);
  g_main_context_unref (self->context);
  g_free (self);
}
