/* SPDX-License-Identifier: MIT */
#include "host-helpers.h"

#include <string.h>

AhHost *
test_host_new_from_yaml (const char  *yaml,
                         GError     **error)
{
  g_autofree char *base_dir = g_test_build_filename (G_TEST_BUILT, ".", NULL);
  AhManifest *manifest;

  manifest = ah_manifest_load_data (yaml, strlen (yaml), "test.yaml", base_dir, error);
  if (manifest == NULL)
    return NULL;
  return ah_host_new (manifest, error);
}

AhHost *
test_host_start_from_yaml (const char *yaml)
{
  g_autoptr(GError) error = NULL;
  AhHost *host = test_host_new_from_yaml (yaml, &error);

  g_assert_no_error (error);
  g_assert_nonnull (host);
  ah_host_start (host, &error);
  g_assert_no_error (error);
  return host;
}

void
test_assert_account_exact (AhHost *host)
{
  AhHostStats stats;

  g_assert_true (ah_host_wait_idle (host, TEST_EVENT_TIMEOUT_US));
  ah_host_get_stats (host, &stats);
  g_assert_cmpuint (stats.in_flight, ==, 0);
  g_assert_cmpuint (stats.accepted, ==, stats.delivered + stats.dead_lettered + stats.failed);
}

gboolean
test_get_type_stats (AhHost      *host,
                     const char  *name,
                     AhTypeStats *ret_stats)
{
  for (guint i = 0; i < ah_host_get_n_types (host); i++)
    if (ah_host_get_type_stats (host, i, ret_stats) && g_str_equal (ret_stats->name, name))
      return TRUE;
  return FALSE;
}

void
test_gate_init (SupervisedGate *gate)
{
  g_mutex_init (&gate->lock);
  g_cond_init (&gate->cond);
  gate->entered = 0;
  gate->open = FALSE;
}

void
test_gate_wait_entered (SupervisedGate *gate,
                        guint           n)
{
  gint64 deadline = g_get_monotonic_time () + TEST_EVENT_TIMEOUT_US;

  g_mutex_lock (&gate->lock);
  while (gate->entered < n)
    if (!g_cond_wait_until (&gate->cond, &gate->lock, deadline))
      break;
  g_assert_cmpuint (gate->entered, >=, n);
  g_mutex_unlock (&gate->lock);
}

void
test_gate_open (SupervisedGate *gate)
{
  g_mutex_lock (&gate->lock);
  gate->open = TRUE;
  g_cond_broadcast (&gate->cond);
  g_mutex_unlock (&gate->lock);
}

void
test_gate_clear (SupervisedGate *gate)
{
  g_mutex_clear (&gate->lock);
  g_cond_clear (&gate->cond);
}
