// `aegis federated init|serve|join`: the federation's certificates, the aggregator and a participant.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_federated_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
