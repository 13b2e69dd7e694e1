// `aegis redact`: text in, the same text out with personal data and secrets replaced.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_redact_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
