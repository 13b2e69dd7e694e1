// `aegis audit-infra`: static review of deployment files and read-only probes of ML services.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_audit_infra_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
