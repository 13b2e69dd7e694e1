// `aegis train-dp`: DP-SGD training of a TorchScript model with a Rényi-DP accountant.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_train_dp_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
