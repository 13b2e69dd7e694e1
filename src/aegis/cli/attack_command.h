// `aegis attack`: evasion robustness testing of a TorchScript, ONNX or remote model on a data set.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_attack_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
