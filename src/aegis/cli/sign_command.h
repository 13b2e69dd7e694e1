// `aegis keygen`, `aegis sign` and `aegis verify`: OpenSSF model signatures of models and datasets.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_sign_commands(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
