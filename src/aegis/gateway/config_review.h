// A security review of a gateway config: the controls an inference endpoint should have in front of
// it (authentication, rate limits, output hardening, input validation, LLM guards, audit log, TLS),
// reported as findings for each route that lacks them. `aegis gateway review` and `aegis assess`.
#pragma once

#include <vector>

#include "aegis/core/finding.h"
#include "aegis/gateway/config.h"

namespace aegis::gateway {

std::vector<core::Finding> review_gateway_config(const GatewayConfig& config);

}  // namespace aegis::gateway
