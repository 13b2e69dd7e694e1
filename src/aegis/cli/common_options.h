// The options every subcommand shares (format, output, fail-on, quiet, verbose) and the one way
// each command writes its report and picks its exit code.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "aegis/core/finding.h"
#include "aegis/core/report.h"

namespace aegis::cli {

struct CommonOptions {
  std::string format;          // empty: table on a terminal, json otherwise
  std::string output;          // empty: stdout
  std::string fail_on = "high";
  bool quiet = false;
  bool verbose = false;
};

void add_common_options(CLI::App& command, CommonOptions& options);

// Shows progress only when stderr is a terminal and --quiet was not given.
bool progress_wanted(const CommonOptions& options);

// Whether the report will be a table (--format table, or no --format and no --output on a terminal):
// then a command prints its own results table above the findings.
bool table_wanted(const CommonOptions& options);

// Writes the report and returns the exit code: 0 clean, 1 findings at or above --fail-on.
// Throws core::Error on a bad option value or an unwritable --output.
int finish_command(const CommonOptions& options, const std::vector<core::Finding>& findings,
                   core::ReportContext context);

// finish_command for the commands that scan no files (attack, mia, extract, ...): their own results
// go beside the findings as `extra_json`, an object whose keys join the JSON report's.
int finish_results(const CommonOptions& options, const std::string& command, std::vector<std::string> inputs,
                   const std::vector<core::Finding>& findings, std::string extra_json);

}  // namespace aegis::cli
