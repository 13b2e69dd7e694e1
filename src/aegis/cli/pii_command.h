// `aegis pii`: personal data, health data and secrets in datasets, with re-identification risk.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_pii_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
