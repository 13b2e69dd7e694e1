#include "aegis/cli/common_options.h"

#include <unistd.h>

#include <fstream>
#include <iostream>

#include "aegis/core/error.h"
#include "aegis/core/progress.h"

namespace aegis::cli {

void add_common_options(CLI::App& command, CommonOptions& options) {
  command.add_option("--format", options.format, "table, json, sarif or markdown (default: table on a terminal, else json)")
      ->check(CLI::IsMember({"table", "json", "sarif", "markdown"}));
  command.add_option("--output,-o", options.output, "write the report to FILE instead of stdout");
  command.add_option("--fail-on", options.fail_on, "exit 1 when a finding is at or above this severity")
      ->check(CLI::IsMember({"critical", "high", "medium", "low", "info"}));
  command.add_flag("--quiet,-q", options.quiet, "no progress output");
  command.add_flag("--verbose,-v", options.verbose, "show evidence and remediation in full");
}

bool progress_wanted(const CommonOptions& options) { return !options.quiet && core::Progress::stderr_is_terminal(); }

bool table_wanted(const CommonOptions& options) {
  if (!options.format.empty()) return options.format == "table";
  return options.output.empty() && ::isatty(STDOUT_FILENO) == 1;
}

int finish_results(const CommonOptions& options, const std::string& command, std::vector<std::string> inputs,
                   const std::vector<core::Finding>& findings, std::string extra_json) {
  core::ReportContext context;
  context.command = command;
  context.inputs = std::move(inputs);
  context.summary = core::summarize(findings);
  context.extra_json = std::move(extra_json);
  return finish_command(options, findings, context);
}

int finish_command(const CommonOptions& options, const std::vector<core::Finding>& findings,
                   core::ReportContext context) {
  bool to_terminal = options.output.empty() && ::isatty(STDOUT_FILENO) == 1;
  std::string format_name = options.format.empty() ? (to_terminal ? "table" : "json") : options.format;
  auto format = core::parse_report_format(format_name);
  if (!format) throw core::Error("unknown --format " + format_name, "use table, json, sarif or markdown");
  auto threshold = core::parse_severity(options.fail_on);
  if (!threshold) throw core::Error("unknown --fail-on " + options.fail_on, "use critical, high, medium, low or info");
  context.color = to_terminal && *format == core::ReportFormat::Table && std::getenv("NO_COLOR") == nullptr;
  context.verbose = options.verbose;

  if (options.output.empty()) {
    core::write_report(std::cout, *format, findings, context);
    std::cout.flush();
  } else {
    std::ofstream out(options.output, std::ios::binary | std::ios::trunc);
    if (!out) throw core::Error("cannot write " + options.output, "check that its folder exists and is writable");
    core::write_report(out, *format, findings, context);
    if (!out.flush()) throw core::Error("cannot write " + options.output, "check free disk space");
  }
  for (const auto& finding : findings)
    if (finding.severity >= *threshold) return 1;
  return 0;
}

}  // namespace aegis::cli
