#include "aegis/cli/engagement_support.h"

#include <unistd.h>

#include <fstream>
#include <iostream>

#include "aegis/assess/report_writer.h"
#include "aegis/core/error.h"
#include "aegis/core/finding_json.h"
#include "aegis/core/report.h"

namespace aegis::cli {

std::string default_store() {
  if (const char* env = std::getenv("AEGIS_STORE"); env && *env) return env;
  return "aegis-store.db";
}

void print_inventory_issues(std::ostream& out, const std::string& file, const std::vector<threat::InventoryIssue>& issues) {
  for (const auto& issue : issues) {
    out << file;
    if (issue.mark.line) out << ":" << issue.mark.line << ":" << issue.mark.column;
    out << ": " << issue.severity << ": " << issue.message << "\n";
  }
}

threat::Inventory load_inventory_or_fail(const std::string& file, bool quiet) {
  auto load = threat::load_inventory(file);
  std::vector<threat::InventoryIssue> warnings, errors;
  for (auto& issue : load.issues) (issue.severity == "error" ? errors : warnings).push_back(issue);
  if (!quiet) print_inventory_issues(std::cerr, file, warnings);
  if (!errors.empty()) {
    print_inventory_issues(std::cerr, file, errors);
    throw core::Error("the inventory " + file + " has " + std::to_string(errors.size()) + " error(s), listed above by line",
                      "fix them (`aegis inventory validate " + file + "` checks the file alone)");
  }
  return std::move(load.inventory);
}

void add_engagement_options(CLI::App& command, CommonOptions& options) {
  command.add_option("--format", options.format, "table, json, sarif, markdown or html (default: table on a terminal, else json)")
      ->check(CLI::IsMember({"table", "json", "sarif", "markdown", "html"}));
  command.add_option("--output,-o", options.output, "write the report to FILE instead of stdout");
  command.add_option("--fail-on", options.fail_on, "exit 1 when an open finding is at or above this severity")
      ->check(CLI::IsMember({"critical", "high", "medium", "low", "info"}));
  command.add_flag("--quiet,-q", options.quiet, "no progress output");
  command.add_flag("--verbose,-v", options.verbose, "show evidence and remediation in full");
}

std::filesystem::path this_executable() {
  std::error_code ec;
  auto path = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) throw core::Error("cannot find the aegis executable (/proc/self/exe): " + ec.message(), "run aegis from a Linux system with /proc mounted");
  return path;
}

const threat::AtlasCatalog& atlas_catalog(const std::string& atlas_file, threat::AtlasCatalog& holder) {
  if (atlas_file.empty()) return threat::AtlasCatalog::shipped();
  holder = threat::AtlasCatalog::load(atlas_file);
  return holder;
}

int write_assessment(const CommonOptions& options, const nlohmann::json& document, const std::string& command) {
  std::vector<core::Finding> findings;
  if (document.contains("findings") && document["findings"].is_array())
    for (const auto& item : document["findings"])
      if (auto f = core::finding_from_json(item)) {
        // Only open findings decide the exit code: accepted risks and fixes were decided by people.
        const auto status = item.value("status", "open");
        if (status == "open" || status == "acknowledged") findings.push_back(std::move(*f));
      }
  const auto threshold = core::parse_severity(options.fail_on);
  if (!threshold) throw core::Error("--fail-on must be critical, high, medium, low or info", "use for example --fail-on high");
  const bool failing = std::any_of(findings.begin(), findings.end(), [&](const core::Finding& f) { return f.severity >= *threshold; });
  std::string format = options.format;
  if (format.empty()) format = table_wanted(options) ? "table" : "json";
  if (format == "json" || format == "html" || format == "markdown" || format == "md") {
    std::ofstream file;
    if (!options.output.empty()) {
      file.open(options.output, std::ios::binary);
      if (!file) throw core::Error("cannot write " + options.output, "check the folder exists and is writable");
    }
    std::ostream& out = options.output.empty() ? std::cout : file;
    if (format == "json") {
      // JSON readers get what the HTML shows: the RMF subcategories addressed and the filled-in playbooks.
      nlohmann::json full = document;
      full["nist_ai_rmf"] = assess::nist_ai_rmf_section(document);
      full["playbooks"] = assess::fill_playbooks(document);
      out << full.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    }
    else if (format == "html") assess::write_html_report(out, document);
    else assess::write_markdown_report(out, document);
    if (!options.output.empty() && !options.quiet) std::cerr << "aegis " << command << ": report written to " << options.output << "\n";
    return failing ? 1 : 0;
  }
  // table and sarif: the shared writers over the open findings, with the document beside them.
  CommonOptions shared = options;
  shared.format = format;
  nlohmann::json extra = {{"assessment", document.value("assessment", nlohmann::json::object())}};
  return finish_results(shared, command, {document["assessment"].value("inventory", "")}, findings, extra.dump());
}

}  // namespace aegis::cli
