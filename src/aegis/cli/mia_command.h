// `aegis mia`: membership-inference audit of a model against the records it was trained on.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_mia_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
