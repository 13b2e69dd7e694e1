// `aegis schedule INVENTORY`: which assets are due for reassessment, and cron or systemd lines to run it.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_schedule_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
