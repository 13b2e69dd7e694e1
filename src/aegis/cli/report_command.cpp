#include "aegis/cli/report_command.h"

#include <iostream>

#include "aegis/assess/assess.h"
#include "aegis/cli/engagement_support.h"
#include "aegis/core/error.h"

namespace aegis::cli {
namespace {

struct ReportFlags {
  std::string run = "latest";
  std::string store = default_store();
  std::string atlas;
  bool list = false;
  std::vector<std::string> set_status;
  CommonOptions common;
};

int run_report(const ReportFlags& flags) {
  const bool writes = !flags.set_status.empty();
  store::FindingStore store(flags.store, {.read_only = !writes});
  if (flags.list) {
    std::printf("%-6s %-12s %-22s %-22s %s\n", "RUN", "STATUS", "STARTED", "FINISHED", "INVENTORY");
    for (const auto& a : store.assessments(100))
      std::printf("%-6lld %-12s %-22s %-22s %s\n", static_cast<long long>(a.id), a.status.c_str(), a.started_at.c_str(),
                  a.finished_at.c_str(), a.inventory.c_str());
    return 0;
  }
  for (const auto& change : flags.set_status) {
    const auto eq = change.find('=');
    if (eq == std::string::npos) throw core::Error("--set-status takes FINDING_ID=STATUS, not '" + change + "'", "for example --set-status 42=fixed");
    std::int64_t id = 0;
    try {
      id = std::stoll(change.substr(0, eq));
    } catch (const std::exception&) {
      throw core::Error("--set-status: '" + change.substr(0, eq) + "' is not a finding id", "finding ids are in the JSON report's finding_id");
    }
    store.set_status(id, change.substr(eq + 1));
    if (!flags.common.quiet) std::cerr << "aegis report: finding " << id << " is now " << change.substr(eq + 1) << "\n";
  }
  std::int64_t id = 0;
  if (flags.run == "latest") {
    const auto listed = store.assessments(1);
    if (listed.empty()) throw core::Error("there is no assessment in " + store.location(), "run `aegis assess INVENTORY --store " + flags.store + "` first");
    id = listed.front().id;
  } else {
    try {
      id = std::stoll(flags.run);
    } catch (const std::exception&) {
      throw core::Error("'" + flags.run + "' is not an assessment number", "give a number from `aegis report --list`, or latest");
    }
  }
  threat::AtlasCatalog holder;
  const auto document = assess::report_document(store, id, atlas_catalog(flags.atlas, holder));
  return write_assessment(flags.common, document, "report");
}

}  // namespace

void register_report_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ReportFlags>();
  auto* command = app.add_subcommand("report", "Write a stored assessment as a self-contained HTML report (--format html), JSON, SARIF, Markdown or a table");
  command->add_option("run", flags->run, "assessment number (default: latest)");
  command->add_option("--store", flags->store, "store file or postgresql:// URL (default aegis-store.db or $AEGIS_STORE)");
  command->add_option("--atlas", flags->atlas, "the ATLAS.yaml the matrix is drawn from (default: the shipped one)");
  command->add_flag("--list", flags->list, "list the stored assessments");
  command->add_option("--set-status", flags->set_status, "triage first: FINDING_ID=open|acknowledged|accepted-risk|false-positive|fixed (repeatable)");
  add_engagement_options(*command, flags->common);
  command->callback([flags, &exit_code] { exit_code = run_report(*flags); });
}

}  // namespace aegis::cli
