// `aegis poison`: poisoning and backdoor audit of a training set through a model trained on it.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_poison_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
