// `aegis extract`: model-extraction audit — how much of a model its prediction API gives away.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_extract_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
