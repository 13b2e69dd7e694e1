// `aegis report [RUN]`: an assessment from the store as HTML, JSON, SARIF, Markdown or a table.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_report_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
