// `aegis harden`: adversarial training (PGD/Madry, TRADES) or noise augmentation of a TorchScript model.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_harden_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
