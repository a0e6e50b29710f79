/* agenthost: the plugin ABI. Everything a plugin author needs.
 *
 * A plugin is a shared object that exports exactly one symbol,
 * AH_PLUGIN_ENTRY_SYMBOL, a function returning a pointer to a constant
 * AhPluginDesc. AH_PLUGIN_DEFINE() writes that function.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#if !defined (AH_INSIDE) && !defined (AH_COMPILATION)
#error "Only <agenthost/agenthost.h> can be included directly."
#endif

#include <agenthost/ah-types.h>

G_BEGIN_DECLS

/* ABI version: major << 16 | minor. The host refuses a plugin whose major
 * differs from its own. A plugin built against a newer minor is refused
 * too (it may rely on fields this host does not know); one built against
 * an older minor is accepted and the fields it lacks read as unset. */
#define AH_PLUGIN_ABI_MAJOR 1
#define AH_PLUGIN_ABI_MINOR 3
#define AH_PLUGIN_ABI_VERSION ((guint32) ((AH_PLUGIN_ABI_MAJOR << 16) | AH_PLUGIN_ABI_MINOR))
#define AH_PLUGIN_ABI_VERSION_MAJOR(v) ((guint32) (v) >> 16)
#define AH_PLUGIN_ABI_VERSION_MINOR(v) ((guint32) (v) & 0xffff)

/* The one symbol a plugin exports. */
#define AH_PLUGIN_ENTRY_SYMBOL "ah_plugin_entry"

typedef struct _AhContext AhContext;   /* opaque; valid only during the hook call it is passed to */
typedef struct _AhMessage AhMessage;   /* opaque, immutable; borrowed during a handler call */
typedef struct _AhPluginDesc AhPluginDesc;

/* ---- Configuration schema (ABI 1.1) ----------------------------------- */

typedef enum {
  AH_CONFIG_STRING = 1,
  AH_CONFIG_INT,            /* decimal, 64-bit */
  AH_CONFIG_DOUBLE,
  AH_CONFIG_BOOL,           /* true or false */
} AhConfigType;

typedef enum {
  AH_CONFIG_FLAG_NONE     = 0,
  AH_CONFIG_FLAG_REQUIRED = 1 << 0,   /* validate fails when the key is absent */
} AhConfigFlags;

/**
 * AhConfigKey:
 *
 * One key a plugin accepts in its agent type's `config:` block. A plugin
 * that declares a schema (AhPluginDesc.config_schema, a table ended by
 * AH_CONFIG_KEY_END) gets its config checked by `agenthost validate` and
 * `agenthost run` before any agent starts: unknown keys, wrong types and
 * out-of-range values are reported as FILE:LINE:COL errors. A plugin
 * without a schema accepts any config, as in ABI 1.0.
 */
typedef struct {
  /* The key, dotted for nested mappings ("limits.max"). NULL ends the table. */
  const char   *name;
  AhConfigType  type;
  guint32       flags;            /* AhConfigFlags */
  /* The value when the manifest has none, written as in YAML ("10",
   * "true", "echo.out"); ah_config_get_*() return it. NULL: no default. */
  const char   *default_value;
  /* AH_CONFIG_INT and AH_CONFIG_DOUBLE: the inclusive range. Both 0
   * means any value. */
  gdouble       min;
  gdouble       max;
  /* One line for `agenthost inspect` and the docs. */
  const char   *description;
  /*< private >*/
  gpointer      reserved[2];
} AhConfigKey;

#define AH_CONFIG_KEY_END { NULL, 0, 0, NULL, 0, 0, NULL, { NULL, NULL } }

/* Flags of AhPluginDesc.flags. */
typedef enum {
  AH_PLUGIN_FLAG_NONE = 0,
  /* The state layout is unchanged from the previous version of this
   * plugin: on hot reload, agent state is kept as is, without going
   * through snapshot/restore. */
  AH_PLUGIN_FLAG_STATE_LAYOUT_STABLE = 1 << 0,
} AhPluginFlags;

/**
 * AhPluginDesc:
 *
 * Describes one agent type. The descriptor is constant data owned by the
 * plugin; the host reads it and never writes it.
 *
 * Rules for evolving it (SQLite's rule for its extension table): fields
 * are only ever appended; @struct_size tells the host which fields a
 * plugin has. Optional hooks may be NULL.
 */
struct _AhPluginDesc {
  /* Always first: AH_PLUGIN_ABI_VERSION when the plugin was built.
   * Checked before any other field is read. */
  guint32      abi_version;
  /* Always second: sizeof (AhPluginDesc) when the plugin was built. The
   * host accepts a smaller size and treats the missing fields as unset. */
  guint32      struct_size;

  /* Name of the agent type, [a-z0-9_-]+, at most 64 bytes. Required. */
  const char  *name;
  /* The plugin's own version, free-form ("1.2.0"). Required. */
  const char  *version;
  /* One line for `agenthost inspect`. May be NULL. */
  const char  *description;

  /* Bytes of state the host allocates, zeroed and 16-byte aligned, for
   * each agent. The host owns that memory; the plugin never frees it.
   * 0 means the agent keeps no state. */
  gsize        state_size;

  /* AhPluginFlags. */
  guint32      flags;
  /* Version of the snapshot format state_snapshot writes, so a newer
   * plugin can migrate an older snapshot or refuse it. */
  guint32      state_format;

  /* Called once per agent before it receives any message, on a host
   * thread (pre-warm runs several at once, for different agents). @state
   * is zeroed. Read configuration through ah_config_*(). Must not publish.
   * Return FALSE and set @error to refuse to start: the agent is not
   * created and the failure is reported as "init failed: <message>".
   * Optional. */
  gboolean   (*agent_init)     (AhContext *ctx, gpointer state, GError **error);

  /* Called once per agent when it stops, after its last batch. Releases
   * what agent_init acquired; the state memory itself belongs to the
   * host. Optional. */
  void       (*agent_finalize) (AhContext *ctx, gpointer state);

  /* Handles up to the configured handler batch of messages (32 by
   * default), oldest first, system messages before normal ones. Runs on
   * one bus worker at a time for a given agent, so @state needs no lock.
   * Must not block: offload blocking work. The messages are borrowed for
   * the call; copy what must outlive it. Messages published from here are
   * delivered after the call returns, in publish order.
   * Return FALSE and set @error to report a failure, which is logged
   * and counted. With AH_AGENT_ERROR_INVALID_MESSAGE the input was bad:
   * the batch's messages are dead-lettered and the agent goes on. With
   * any other error the agent itself failed: its type's supervision
   * restarts it and retries the batch's messages once, or dead-letters
   * them, as the manifest says (docs/supervision.md). Required. */
  gboolean   (*handle_batch)   (AhContext *ctx, gpointer state,
                                const AhMessage * const *messages, guint n_messages,
                                GError **error);

  /* Hot reload: serialize the agent's state into a buffer the next
   * version of the plugin will restore from, tagged with state_format.
   * Called between batches on the agent's worker. Optional. */
  GBytes    *(*state_snapshot) (AhContext *ctx, gconstpointer state, GError **error);

  /* Hot reload: rebuild @state (zeroed, of this version's state_size)
   * from a snapshot written by a version whose state_format was @format.
   * Return FALSE to refuse it (for example an unknown format): the reload
   * is rolled back and the agent keeps running the old version. Optional. */
  gboolean   (*state_restore)  (AhContext *ctx, gpointer state, guint32 format,
                                GBytes *snapshot, GError **error);

  /* (ABI 1.1) The keys this plugin accepts in `config:`, ended by
   * AH_CONFIG_KEY_END; NULL accepts anything. See AhConfigKey. */
  const AhConfigKey *config_schema;

  /*< private >*/
  /* Reserved for optional fields of later minor versions. Leave zeroed. */
  gpointer     reserved[7];
};

/**
 * AH_PLUGIN_DEFINE:
 * @id: the agent type's name, a C identifier
 * @...: designated initializers for the other fields
 *
 * Defines the plugin's entry point and its descriptor:
 *
 *   AH_PLUGIN_DEFINE (echo,
 *     .version      = "1.0.0",
 *     .state_size   = sizeof (EchoState),
 *     .handle_batch = echo_handle_batch)
 */
#define AH_PLUGIN_DEFINE(id, ...)                                          \
  AH_PLUGIN_EXPORT const AhPluginDesc *ah_plugin_entry (void);             \
  const AhPluginDesc *                                                     \
  ah_plugin_entry (void)                                                   \
  {                                                                        \
    static const AhPluginDesc desc = {                                     \
      .abi_version = AH_PLUGIN_ABI_VERSION,                                \
      .struct_size = sizeof (AhPluginDesc),                                \
      .name = #id,                                                         \
      __VA_ARGS__                                                          \
    };                                                                     \
    return &desc;                                                          \
  }

typedef const AhPluginDesc *(*AhPluginGetDescFunc) (void);

/* Error domain plugins use for their own failures. */
#define AH_AGENT_ERROR (ah_agent_error_quark ())
typedef enum {
  AH_AGENT_ERROR_FAILED,            /* the agent failed: supervision restarts it */
  AH_AGENT_ERROR_INVALID_MESSAGE,   /* bad input: dead-lettered, the agent goes on */
  AH_AGENT_ERROR_CONFIG,
} AhAgentError;
AH_API GQuark        ah_agent_error_quark        (void);

/* ---- Messages (borrowed, read-only) --------------------------------- */

AH_API const char   *ah_message_get_subject      (const AhMessage *message);
/* The payload: @ret_size receives its length. Never NULL (an empty
 * payload is a zero-length buffer). Not NUL-terminated by contract,
 * though the host does put a NUL after it for convenience. */
AH_API gconstpointer ah_message_get_data         (const AhMessage *message, gsize *ret_size);
AH_API AhMessageKind ah_message_get_kind         (const AhMessage *message);
AH_API AhPriority    ah_message_get_priority     (const AhMessage *message);
/* The agent that sent it, or AH_AGENT_ID_NONE for the host itself. */
AH_API AhAgentId     ah_message_get_sender       (const AhMessage *message);
/* For REQUEST, REPLY, TIMEOUT and NO_RESPONDERS: the correlation id
 * ah_request() returned. 0 for the other kinds. */
AH_API guint64       ah_message_get_correlation  (const AhMessage *message);
/* TRUE when this is a second delivery: the message was in the batch of
 * an agent whose handler failed, and its type's supervision retries
 * such messages once. A handler that must not act twice checks this. */
AH_API gboolean      ah_message_is_redelivered   (const AhMessage *message);
/* Whether @message's subject is @subject, an interned subject: usually
 * one pointer comparison, where comparing ah_message_get_subject() with
 * a string costs a strcmp() per message. */
AH_API gboolean      ah_message_has_subject      (const AhMessage *message,
                                                  const AhSubject *subject);

/* ---- Interned subjects ---------------------------------------------- */

/* Interns @subject (a valid subject, no wildcards) in the host and
 * returns its handle, or NULL (logged) if it is not valid. From
 * agent_init or a handler; intern once, in agent_init, and keep the
 * handle in the state: it stays valid for the life of the host, across
 * reloads, and is the same for every agent. */
AH_API const AhSubject *ah_subject_intern        (AhContext *ctx, const char *subject);
AH_API const char   *ah_subject_get_string       (const AhSubject *subject);
/* ah_publish() through a handle: no check, no copy and no lookup of the
 * subject on the way. */
AH_API gboolean      ah_publish_interned         (AhContext *ctx, const AhSubject *subject,
                                                  gconstpointer data, gsize size);
/* (ABI 1.2) ah_request() through a handle: no check of the subject and
 * no lookup of its string on the way. */
AH_API guint64       ah_request_interned         (AhContext *ctx, const AhSubject *subject,
                                                  gconstpointer data, gsize size,
                                                  guint timeout_ms);

/* ---- The context: what an agent can do ------------------------------ */

/* Messages from a handler are queued in the calling worker's batch and
 * routed when the handler returns. All return FALSE when the message
 * could not be accepted (invalid subject, full mailbox under the "fail"
 * overflow policy, called from agent_init); it is then counted failed. */
AH_API gboolean      ah_publish                  (AhContext *ctx, const char *subject,
                                                  gconstpointer data, gsize size);
AH_API gboolean      ah_publish_string           (AhContext *ctx, const char *subject,
                                                  const char *text);
/* Sends to one agent. An id of an agent that does not exist (or no longer
 * does) dead-letters the message; the call still returns TRUE because
 * the bus accepted it. */
AH_API gboolean      ah_send                     (AhContext *ctx, AhAgentId to, const char *subject,
                                                  gconstpointer data, gsize size);
/* Answers @request (a message of kind REQUEST) to the agent that made it.
 * Only the first reply to a request is delivered; later ones, and replies
 * after the requester's timeout, are dead-lettered. */
AH_API gboolean      ah_reply                    (AhContext *ctx, const AhMessage *request,
                                                  gconstpointer data, gsize size);
/* Publishes a request on @subject. Returns its correlation id (never 0),
 * or 0 on failure. Exactly one of REPLY, TIMEOUT (after @timeout_ms) or
 * NO_RESPONDERS then comes back to this agent with that correlation id. */
AH_API guint64       ah_request                  (AhContext *ctx, const char *subject,
                                                  gconstpointer data, gsize size,
                                                  guint timeout_ms);

AH_API AhAgentId     ah_context_get_self         (AhContext *ctx);
/* The agent type's name (the manifest's name for it). */
AH_API const char   *ah_context_get_type_name    (AhContext *ctx);
/* 0-based index of this agent within its pool, stable for its life. */
AH_API guint         ah_context_get_index        (AhContext *ctx);
/* (ABI 1.1) How many agents of this type the manifest's pool_size asks for. */
AH_API guint         ah_context_get_pool_size    (AhContext *ctx);
/* Asks the host to stop the run with @exit_code once the messages now in
 * flight are handled. */
AH_API void          ah_context_request_stop     (AhContext *ctx, int exit_code);

/* ---- Time (ABI 1.2) ------------------------------------------------- */

/* CLOCK_MONOTONIC in nanoseconds, read the way the host reads it to stamp
 * messages and time handlers: where the CPU's time-stamp counter is
 * invariant and the kernel keeps time with it, the counter converted by
 * the host (about 10 ns here, where clock_gettime() costs about 25),
 * else clock_gettime() itself. It keeps within tens of nanoseconds of
 * clock_gettime (CLOCK_MONOTONIC) (a change of rate that NTP makes shows
 * as an error of up to a few microseconds for a tenth of a second), so
 * two reads on different threads can come out of order by that much:
 * clamp a difference at 0. Any thread, any hook. */
AH_API gint64        ah_monotonic_ns             (void);
/* (ABI 1.3) When the host started this handler call, on the
 * ah_monotonic_ns() clock. The host reads it anyway (its latency
 * histograms measure each message from its publish time to this), so a
 * handler that measures how long its messages took to reach it can take
 * it from here instead of reading the clock again. handle_batch only. */
AH_API gint64        ah_context_get_start_ns     (AhContext *ctx);

/* ---- Blocking work: offload to the host's I/O threads (ABI 1.1) ----- */

/* Runs on one of the host's I/O threads, never on a bus worker, so it may
 * block: read files, run subprocesses, talk to the network. It must not
 * call the context API (it has no context) and must not touch the
 * agent's state: whatever it needs is in @data. It should give up when
 * @cancellable is cancelled (the host is stopping). Return the result
 * (may be an empty GBytes), or NULL with @error set. */
typedef GBytes *(*AhOffloadFunc) (gpointer data, GCancellable *cancellable, GError **error);

/* Hands @func (@data) to the host's bounded pool of I/O threads. Returns
 * an id (never 0); the outcome comes back to this agent as an ordinary
 * message, after the messages already in its mailbox: kind
 * AH_MESSAGE_OFFLOAD_DONE with the result as payload, or
 * AH_MESSAGE_OFFLOAD_FAILED with the error message as payload, its
 * correlation id the returned id and its subject "$SYS.offload".
 * Returns 0 when the offload queue is full (the manifest's
 * offload.queue) or the host is stopping: @func never runs then.
 * @destroy (may be NULL) frees @data once @func has returned, or when it
 * will never run, on whichever thread that is. */
AH_API guint64       ah_offload                  (AhContext *ctx, AhOffloadFunc func,
                                                  gpointer data, GDestroyNotify destroy);

/* ---- Configuration: the agent type's `config:` mapping -------------- */

/* Scalars of the manifest's `config:` block, by key. Nested mappings are
 * addressed with dots ("limits.max"), sequence items with their index
 * ("words.0"). When the key is absent: the default of the plugin's
 * config schema if it declares one, else @default_value. A value that
 * does not parse as the asked type gives @default_value (a plugin with a
 * schema never sees one: validate refuses it). */
AH_API const char   *ah_config_get_string        (AhContext *ctx, const char *key, const char *default_value);
AH_API gint64        ah_config_get_int           (AhContext *ctx, const char *key, gint64 default_value);
AH_API gdouble       ah_config_get_double        (AhContext *ctx, const char *key, gdouble default_value);
AH_API gboolean      ah_config_get_bool          (AhContext *ctx, const char *key, gboolean default_value);

G_END_DECLS
