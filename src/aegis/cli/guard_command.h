// `aegis guard`: the prompt-injection and jailbreak guard as a command: scan texts, train the
// learned tier, evaluate it honestly on labelled data.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_guard_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
