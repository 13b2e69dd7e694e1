// `aegis certify`: randomized-smoothing certified L2 radii (Cohen et al. 2019) for a model on a data set.
#pragma once

#include <CLI/CLI.hpp>

namespace aegis::cli {

void register_certify_command(CLI::App& app, int& exit_code);

}  // namespace aegis::cli
