// `aegis redteam`: see the .cpp.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_redteam_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
