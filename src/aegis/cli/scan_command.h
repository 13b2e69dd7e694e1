// `aegis scan PATH…`: flags for the model-artifact scanner.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

// Registers the subcommand; its callback stores the exit code in `exit_code`.
void register_scan_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
