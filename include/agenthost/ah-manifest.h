/* agenthost: manifests, the YAML files that declare a system.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#if !defined (AH_INSIDE) && !defined (AH_COMPILATION)
#error "Only <agenthost/agenthost.h> can be included directly."
#endif

#include <agenthost/ah-types.h>

G_BEGIN_DECLS

#define AH_MANIFEST_ERROR (ah_manifest_error_quark ())
/* Every message of this domain is one line "FILE:LINE:COL: error: WHAT",
 * positions 1-based. */
typedef enum {
  AH_MANIFEST_ERROR_FAILED,
  AH_MANIFEST_ERROR_IO,             /* cannot read the file, or it is too large */
  AH_MANIFEST_ERROR_SYNTAX,         /* not YAML */
  AH_MANIFEST_ERROR_UNSUPPORTED,    /* aliases, anchors, tags, several documents */
  AH_MANIFEST_ERROR_LIMIT,          /* nesting, scalar length or key count over the caps */
  AH_MANIFEST_ERROR_UNKNOWN_KEY,
  AH_MANIFEST_ERROR_DUPLICATE_KEY,
  AH_MANIFEST_ERROR_MISSING_KEY,
  AH_MANIFEST_ERROR_WRONG_TYPE,
  AH_MANIFEST_ERROR_OUT_OF_RANGE,
  AH_MANIFEST_ERROR_INVALID_VALUE,
  AH_MANIFEST_ERROR_PLUGIN,         /* a plugin the manifest names does not load */
} AhManifestError;

/* Caps on hostile input. Documented in docs/manifest.md. */
#define AH_MANIFEST_MAX_FILE_SIZE    (1024 * 1024)
#define AH_MANIFEST_MAX_DEPTH        16
#define AH_MANIFEST_MAX_SCALAR       4096
#define AH_MANIFEST_MAX_KEYS         256     /* keys in one mapping, items in one sequence */
#define AH_MANIFEST_MAX_TYPES        64
#define AH_MANIFEST_MAX_POOL_SIZE    10000000

typedef struct _AhManifest AhManifest;   /* opaque; see core/ah-manifest-private.h */

AH_API GQuark      ah_manifest_error_quark  (void);
/* Parses and checks a manifest file. Plugins are not loaded. */
AH_API AhManifest *ah_manifest_load         (const char *path, GError **error);
/* Same, from memory; @display_name is used in error messages. */
AH_API AhManifest *ah_manifest_load_data    (const char *data, gsize size,
                                             const char *display_name,
                                             const char *base_dir, GError **error);
/* The manifest built into the library: the default demo system. */
AH_API AhManifest *ah_manifest_load_default (GError **error);
/* Loads (and unloads) every plugin the manifest names and checks each
 * against its agent type: the error names the manifest position of the
 * agent type and the plugin's reason. No agent is started. */
AH_API gboolean    ah_manifest_check_plugins (AhManifest *self, GError **error);
AH_API const char *ah_manifest_get_name     (AhManifest *self);
AH_API const char *ah_manifest_get_path     (AhManifest *self);
AH_API guint       ah_manifest_get_n_types  (AhManifest *self);
/* The agents the system starts with: the pool sizes of the types that
 * pre-warm. */
AH_API guint64     ah_manifest_get_n_agents (AhManifest *self);
/* (0.2) The manifest's `watch:` (reload plugins when their files change;
 * default false); @ret_debounce_ms (nullable) gets its
 * `watch_debounce_ms:` (default 200), for `--watch` too. */
AH_API gboolean    ah_manifest_get_watch    (AhManifest *self, guint *ret_debounce_ms);
AH_API void        ah_manifest_free         (AhManifest *self);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AhManifest, ah_manifest_free)

G_END_DECLS
