/* Helpers of the tests that run whole hosts through the public embedding
 * API (test-pool, test-supervision): a host from an inline manifest, the
 * exact account, a type's stats by name, and the gate the supervised test
 * plugin waits at.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#include <agenthost/agenthost.h>

#include "plugins/supervised.h"

G_BEGIN_DECLS

/* How long a test waits for anything that should happen (generous:
 * sanitizers are slow). */
#define TEST_EVENT_TIMEOUT_US (10 * G_USEC_PER_SEC)

/* A host for an inline manifest. Shipped plugins are found through
 * AGENTHOST_PLUGIN_PATH (set by the test setup), the test plugins through
 * `plugin_path:` relative to the build directory of the tests. */
AhHost  *test_host_new_from_yaml   (const char *yaml, GError **error);
/* The same, started; the test fails if either step does. */
AhHost  *test_host_start_from_yaml (const char *yaml);
/* Waits until @host is idle, then checks accepted == delivered +
 * dead_lettered + failed with nothing in flight. */
void     test_assert_account_exact (AhHost *host);
/* The stats of the type called @name; FALSE if there is none. */
gboolean test_get_type_stats       (AhHost *host, const char *name, AhTypeStats *ret_stats);

void     test_gate_init            (SupervisedGate *gate);
/* Waits until @n handler calls reached the gate; fails after the timeout. */
void     test_gate_wait_entered    (SupervisedGate *gate, guint n);
void     test_gate_open            (SupervisedGate *gate);
void     test_gate_clear           (SupervisedGate *gate);

G_END_DECLS
