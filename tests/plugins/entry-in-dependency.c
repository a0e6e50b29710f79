/* SPDX-License-Identifier: MIT */
/* Broken on purpose: defines no entry point itself but links
 * entry-provider, which does. The host must not mistake the dependency's
 * entry point for this plugin's. */
#include <agenthost/agenthost.h>

/* Defined by entry-provider. */
extern const AhPluginDesc *ah_plugin_entry (void);

/* Uses the dependency so the linker keeps it as DT_NEEDED (--as-needed
 * would drop an unused one). Hidden: the plugin still exports nothing. */
G_GNUC_INTERNAL const AhPluginDesc *entry_in_dependency_forward (void);

const AhPluginDesc *
entry_in_dependency_forward (void)
{
  return ah_plugin_entry ();
}
