// `aegis assess INVENTORY`: the engagement end to end; `aegis worker`: runs its jobs on other machines.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_assess_command(CLI::App& app, int& exit_code);
void register_worker_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
