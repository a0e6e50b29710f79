/* agenthost: a harness for unit-testing plugins from GTest.
 *
 * Starts a host in-process - one plugin, or a whole manifest - lets a
 * test inject messages, run until the system is idle (deterministically:
 * it waits for the bus to have nothing in flight and no request or
 * offload pending, never sleeps), and inspect what the agents published,
 * replied and dead-lettered, and their counters.
 *
 *   g_autoptr(AhTestHost) t = ah_test_host_new_for_plugin (PLUGIN, "echo.in", NULL, &error);
 *   ah_test_host_publish_string (t, "echo.in", "hi");
 *   ah_test_host_run_until_idle (t);
 *   g_assert_cmpuint (ah_test_host_count (t, AH_TEST_CAPTURE_PUBLISHED, "echo.out"), ==, 1);
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#if !defined (AH_INSIDE) && !defined (AH_COMPILATION)
#error "Only <agenthost/agenthost.h> can be included directly."
#endif

#include <agenthost/ah-types.h>
#include <agenthost/ah-host.h>

G_BEGIN_DECLS

typedef struct _AhTestHost AhTestHost;

/* What the harness records. */
typedef enum {
  AH_TEST_CAPTURE_PUBLISHED,     /* every message agents published, sent or requested */
  AH_TEST_CAPTURE_REPLIES,       /* every reply agents made */
  AH_TEST_CAPTURE_DEAD_LETTERS,  /* every dead letter, from anyone */
} AhTestCapture;

/* One recorded message. Owned by the harness; valid until
 * ah_test_host_clear() or ah_test_host_free(). */
typedef struct {
  char          *subject;
  GBytes        *data;
  AhMessageKind  kind;
  AhAgentId      sender;       /* AH_AGENT_ID_NONE: the test itself */
  AhAgentId      recipient;    /* direct sends, replies and dead letters; else NONE */
  guint64        correlation;
  /* Dead letters: why, as the bus names it ("no-route", "no-agent",
   * "agent-stopped", "late-reply", "overflow", "handler-failed",
   * "shutdown"); NULL for the other captures. */
  const char    *reason;
} AhTestMessage;

/* A host running @manifest_yaml, started: pools pre-warmed,
 * "$SYS.host.started" sent and handled (the system ran until idle).
 * Bare plugin names are looked up in @base_dir first, then as usual
 * (plugin_path, $AGENTHOST_PLUGIN_PATH, the built-in directories);
 * relative plugin paths and plugin_path entries resolve against
 * @base_dir. NULL @base_dir: the current directory, not searched.
 * NULL with the manifest's, loader's or host's error. The host's own
 * "$SYS.host.started" finding no subscriber is not recorded as a dead
 * letter: it is an announcement, not a lost message. */
AH_API AhTestHost *ah_test_host_new                (const char *manifest_yaml, const char *base_dir,
                                                    GError **error);
AH_API AhTestHost *ah_test_host_new_for_manifest   (const char *path, GError **error);
/* A host running one agent type of the plugin at @plugin_path (a path,
 * or a bare name looked up as for a manifest), pool size 1,
 * queue-subscribed to the comma-separated patterns of @subscriptions
 * (may be NULL), with config from @config: NULL or a NULL-terminated
 * list of "key=value" strings (the value is a string, as if quoted in
 * YAML; the plugin's schema types it). The agent type is named after the
 * plugin's descriptor, lowercased. A plugin that does not load is its
 * AH_PLUGIN_ERROR; bad input is an AH_HOST_ERROR: _SUBJECT for a
 * pattern, _FAILED for a config entry (or a plugin path) that is not
 * UTF-8 or, for config, not "key=value" with a non-empty key. */
AH_API AhTestHost *ah_test_host_new_for_plugin     (const char *plugin_path, const char *subscriptions,
                                                    const char * const *config, GError **error);

AH_API AhHost     *ah_test_host_get_host           (AhTestHost *self);

/* Injecting. Failures fail the test (g_assert), as a harness should. */
AH_API void        ah_test_host_publish            (AhTestHost *self, const char *subject,
                                                    gconstpointer data, gsize size);
AH_API void        ah_test_host_publish_string     (AhTestHost *self, const char *subject,
                                                    const char *text);
AH_API void        ah_test_host_send               (AhTestHost *self, AhAgentId to, const char *subject,
                                                    gconstpointer data, gsize size);
/* Makes a request and waits for its outcome, like ah_host_request(). */
AH_API GBytes     *ah_test_host_request            (AhTestHost *self, const char *subject,
                                                    gconstpointer data, gsize size,
                                                    guint timeout_ms, GError **error);

/* Returns once nothing is in flight and no request or offload is pending.
 * Fails the test after 30 s: a system that never goes idle is a bug the
 * test should report, not hang on. */
AH_API void        ah_test_host_run_until_idle     (AhTestHost *self);
/* Sets that watchdog, in milliseconds (30000 by default): a test of a
 * system expected to be quick can fail sooner. */
AH_API void        ah_test_host_set_idle_timeout   (AhTestHost *self, guint timeout_ms);

/* What was recorded, oldest first, matching the subject @pattern (NULL:
 * all; wildcards as in subscriptions; an invalid pattern fails the
 * test). (element-type AhTestMessage) (transfer container). */
AH_API GPtrArray  *ah_test_host_get_messages       (AhTestHost *self, AhTestCapture capture,
                                                    const char *pattern);
AH_API guint       ah_test_host_count              (AhTestHost *self, AhTestCapture capture,
                                                    const char *pattern);
/* The payload of the last recorded message matching, as a new string, or
 * NULL when there is none. */
AH_API char       *ah_test_host_last_text          (AhTestHost *self, AhTestCapture capture,
                                                    const char *pattern);
/* Forgets what was recorded (counters are not reset). */
AH_API void        ah_test_host_clear              (AhTestHost *self);
AH_API void        ah_test_host_get_stats          (AhTestHost *self, AhHostStats *ret_stats);
/* The ids of the live agents of @type_name, by pool index.
 * (element-type AhAgentId) (transfer full). An unknown type fails the
 * test (and gives an empty array if assertions are non-fatal). */
AH_API GArray     *ah_test_host_get_agents         (AhTestHost *self, const char *type_name);
/* Stops the host (drains) and frees everything. */
AH_API void        ah_test_host_free               (AhTestHost *self);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (AhTestHost, ah_test_host_free)

G_END_DECLS
