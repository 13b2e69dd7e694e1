// `aegis threat-model INVENTORY`: the MITRE ATLAS techniques that apply to each asset, with
// mitigations, the Aegis checks that produce evidence, and a STRIDE view.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_threat_model_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
