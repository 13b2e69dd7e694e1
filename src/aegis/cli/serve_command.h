// `aegis serve`: the dashboard (REST API + single-page app) over an Aegis store; `aegis users`: its
// users and roles.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_serve_command(CLI::App& app, int& exit_code);
void register_users_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
