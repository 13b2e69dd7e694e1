// `aegis lineage record|show|verify`: where data and models came from, kept in the Aegis store.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_lineage_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
