// `aegis inventory validate|discover|list`: the asset inventory an engagement starts from.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_inventory_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
