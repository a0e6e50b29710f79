/* SPDX-License-Identifier: MIT */
/* The gate a test shares with the supervised test plugin (supervised.c),
 * in the same process: the test puts the gate's address in the agent
 * type's config (`gate: "<address in decimal>"`), and a handler that
 * meets a "block" message waits on it until the test opens it. No
 * sleep either way: the test waits for @entered, the handler for @open. */
#pragma once

#include <glib.h>

typedef struct {
  GMutex   lock;
  GCond    cond;
  guint    entered;   /* handler calls that reached a "block" message */
  gboolean open;      /* set by the test: every waiting handler goes on */
} SupervisedGate;
