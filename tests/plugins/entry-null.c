/* SPDX-License-Identifier: MIT */
/* Broken on purpose: the entry point exists but returns no descriptor. */
#include <agenthost/agenthost.h>

AH_PLUGIN_EXPORT const AhPluginDesc *ah_plugin_entry (void);

const AhPluginDesc *
ah_plugin_entry (void)
{
  return NULL;
}
