/* Plugin configuration: checking an agent type's `config:` block against
 * the plugin's declared schema (AhConfigKey, ABI 1.1), and the table of
 * values the agents read through ah_config_get_*().
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include "ah-manifest-private.h"

G_BEGIN_DECLS

/* Checks the schema table a plugin declares (the loader calls it): every
 * name a dotted key of [A-Za-z0-9_-] tokens, no name twice, a known
 * type, known flags, finite bounds with min <= max, a range only on a
 * number (whole bounds for an integer), a default that parses as its
 * type and lies in its range, no default on a required key, bounded
 * UTF-8 texts, at most 256 keys before AH_CONFIG_KEY_END. Errors are
 * AH_PLUGIN_ERROR_INVALID_DESC, "PATH: invalid config schema: ...". */
gboolean    ah_config_schema_check    (const AhConfigKey *schema, const char *path,
                                       GError **error);

/* Checks @type's `config:` against @desc's schema, when it has one:
 * unknown keys, values of the wrong type, out of range, required keys
 * missing. One error, AH_MANIFEST_ERROR (UNKNOWN_KEY, WRONG_TYPE,
 * OUT_OF_RANGE, MISSING_KEY), one line
 * "FILE:LINE:COL: error: agent type 'T': WHAT", at the value (the agent
 * type's key for a missing one), WHAT one of
 * "unknown config key 'KEY' (plugin 'P' accepts K1, K2...)",
 * "config 'KEY' must be ..., got 'VALUE'",
 * "missing required config key 'KEY' (TYPE: DESCRIPTION)". */
gboolean    ah_config_check           (AhManifest *manifest, const AhManifestAgentType *type,
                                       const AhPluginDesc *desc, GError **error);

/* The values the agents of @type read: the manifest's, plus the schema's
 * defaults for keys the manifest leaves out. Keys and values are
 * borrowed from @type and @desc, which outlive the table. */
GHashTable *ah_config_table_new       (const AhManifestAgentType *type, const AhPluginDesc *desc);

/* The schema as `agenthost inspect` prints it: one key a line, with its
 * type, default, range, whether required, and description. */
void        ah_config_describe_schema (const AhConfigKey *schema, GString *out);

G_END_DECLS
