/* The plugin loader: internal part.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include <agenthost/agenthost.h>

G_BEGIN_DECLS

struct _AhPlugin {
  gint          ref_count;
  char         *path;
  void         *handle;        /* from dlopen */
  /* The plugin's descriptor copied into this host's layout: fields past
   * the plugin's struct_size are zero. */
  AhPluginDesc  desc;
  guint32       plugin_struct_size;
  /* The memfd a private copy was loaded from (ah_plugin_open_copy), kept
   * open while the module is; -1 for a plugin opened in place. */
  int           copy_fd;
  char         *checksum;      /* SHA-256 of the bytes loaded, hex */
};

/* Finds the file of plugin @name (a path with a '/' is taken as is,
 * relative to @base_dir). A bare name is looked up as NAME.so and
 * NAME/NAME.so in @dirs, then in $AGENTHOST_PLUGIN_PATH (colon-separated),
 * then in the built-in directories (the build tree's plugins/ when the
 * running program is uninstalled, then the installed plugin directory).
 * Returns a newly allocated path, or NULL with AH_PLUGIN_ERROR_NOT_FOUND
 * naming every place looked in. */
char     *ah_plugin_find             (const char *name, const char *base_dir,
                                      const char * const *dirs, GError **error);

/* Checks the descriptor an entry function returned (@raw may be NULL, or
 * shorter than AhPluginDesc: it is read only up to its own struct_size,
 * and abi_version first) and copies it into @ret_desc in this host's
 * layout, zero past the plugin's struct_size. Errors are
 * AH_PLUGIN_ERROR_ABI or AH_PLUGIN_ERROR_INVALID_DESC, prefixed by @path.
 * ah_plugin_open() uses it; the tests feed it descriptors no compiler
 * would produce. */
gboolean  ah__plugin_desc_check      (const AhPluginDesc *raw, const char *path,
                                      AhPluginDesc *ret_desc, guint32 *ret_struct_size,
                                      GError **error);

/* Hot reload: opens a private copy of @path - its bytes read once into a
 * memfd, dlopen()ed through /proc/self/fd/N - so the dynamic loader never
 * hands back an already loaded mapping of the same file, and the build
 * may overwrite @path at once. Same checks and errors as
 * ah_plugin_open(); ah_plugin_get_path() still says @path. */
AhPlugin *ah_plugin_open_copy        (const char *path, GError **error);
/* SHA-256 of the file's bytes as loaded (hex), for both kinds of open:
 * tells a changed file from a touched one. */
const char *ah_plugin_get_checksum   (AhPlugin *self);
/* SHA-256 of the file at @path now, or NULL with an error. */
char     *ah_plugin_file_checksum    (const char *path, GError **error);

G_END_DECLS
