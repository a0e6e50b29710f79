/* agenthost: the one header to include, for plugins and host programs.
 *
 * SPDX-License-Identifier: MIT
 */
#pragma once

#define AH_INSIDE
#include <agenthost/ah-types.h>
#include <agenthost/ah-plugin.h>
#include <agenthost/ah-manifest.h>
#include <agenthost/ah-loader.h>
#include <agenthost/ah-host.h>
#include <agenthost/ah-testing.h>
#undef AH_INSIDE
