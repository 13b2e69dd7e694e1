#include "aegis/cli/assess_command.h"

#include <csignal>
#include <fstream>
#include <iostream>

#include "aegis/assess/assess.h"
#include "aegis/assess/report_writer.h"
#include "aegis/cli/engagement_support.h"
#include "aegis/core/error.h"
#include "aegis/core/progress.h"

namespace aegis::cli {
namespace {

struct AssessFlags {
  std::string inventory;
  std::string store = default_store();
  std::string workers;
  unsigned parallel = 1;
  std::int64_t resume = 0;
  bool no_reuse = false;
  int max_age_days = 0;
  bool only_due = false;
  std::vector<std::string> checks;
  std::string atlas, rules, html, scratch;
  CommonOptions common;
};

void print_summary(std::ostream& out, const nlohmann::json& document) {
  char line[512];
  const auto& a = document["assessment"];
  const auto& s = document["summary"];
  out << "Assessment #" << a["id"].get<std::int64_t>() << " of " << a["inventory"].get<std::string>() << " (ATLAS "
      << a["atlas_version"].get<std::string>() << "): " << s["techniques_tested"] << " of " << s["techniques_applicable"]
      << " applicable techniques tested, " << s["checks_run"] << " check(s) run, " << s["checks_failed"] << " failed\n";
  std::snprintf(line, sizeof line, "%-26s %-9s %-12s %-10s %-20s %s\n", "ASSET", "KIND", "RISK", "COVERAGE", "FINDINGS C/H/M/L", "CHECKS");
  out << line;
  for (const auto& asset : document["assets"]) {
    std::size_t c[5] = {};
    for (const auto& f : asset["findings"]) {
      const auto sev = f.value("severity", "info");
      c[sev == "critical" ? 0 : sev == "high" ? 1 : sev == "medium" ? 2 : sev == "low" ? 3 : 4]++;
    }
    std::string checks;
    for (const auto& check : asset["checks"]) checks += (checks.empty() ? "" : " ") + check.value("check", "") + ":" + check.value("state", "");
    char coverage[32], findings[48];
    std::snprintf(coverage, sizeof coverage, "%zu/%zu", asset["coverage"]["tested"].get<std::size_t>(), asset["coverage"]["applicable"].get<std::size_t>());
    std::snprintf(findings, sizeof findings, "%zu/%zu/%zu/%zu", c[0], c[1], c[2], c[3]);
    std::snprintf(line, sizeof line, "%-26s %-9s %3d %-8s %-10s %-20s ", asset.value("id", "").c_str(), asset.value("kind", "").c_str(),
                  asset["risk"]["score"].get<int>(), asset["risk"]["level"].get<std::string>().c_str(), coverage, findings);
    out << line << checks << "\n";
  }
  out.flush();
}

int run_assess(const AssessFlags& flags) {
  const auto inventory = load_inventory_or_fail(flags.inventory, flags.common.quiet);
  threat::AtlasCatalog holder;
  assess::AssessOptions options;
  options.catalog = &atlas_catalog(flags.atlas, holder);
  if (!flags.rules.empty()) options.rules = threat::load_threat_rules(flags.rules, *options.catalog);
  options.store = flags.store;
  options.workers = flags.workers;
  options.parallel = std::max(1u, flags.parallel);
  if (flags.resume > 0) options.resume = flags.resume;
  options.reuse = !flags.no_reuse;
  if (flags.max_age_days > 0) options.reuse_max_age = std::chrono::hours(24 * flags.max_age_days);
  options.only_due = flags.only_due;
  options.only_checks = flags.checks;
  options.aegis_binary = this_executable();
  options.scratch = flags.scratch;
  const bool show = !flags.common.quiet;
  const bool terminal = core::Progress::stderr_is_terminal();
  options.progress = [&](std::size_t done, std::size_t total, const std::string& event) {
    if (!show) return;
    // One line per event: a check can run for minutes, and the log of what ran is worth keeping.
    std::cerr << (terminal ? "\r\033[K" : "") << "[" << done << "/" << total << "] " << event << "\n";
  };
  const auto result = assess::run_assessment(inventory, options);
  if (show)
    std::cerr << "aegis assess: assessment #" << result.assessment_id << " recorded in " << flags.store << " (" << result.ran << " ran, "
              << result.reused << " reused unchanged, " << result.resumed << " resumed, " << result.failed << " failed)\n";
  if (!flags.html.empty()) {
    std::ofstream html(flags.html, std::ios::binary);
    if (!html) throw core::Error("cannot write " + flags.html, "check the folder exists and is writable");
    assess::write_html_report(html, result.document);
    if (show) std::cerr << "aegis assess: HTML report written to " << flags.html << "\n";
  }
  // The per-asset summary heads the table; when the report goes to a file it goes to the terminal.
  if (table_wanted(flags.common)) print_summary(std::cout, result.document);
  else if (show && !flags.common.output.empty()) print_summary(std::cerr, result.document);
  return write_assessment(flags.common, result.document, "assess");
}

struct WorkerFlags {
  std::string queue;
  std::string store = default_store();
  std::string name;
  std::string scratch;
  int claim_idle_ms = 60'000;
  std::size_t max_jobs = 0;
  bool quiet = false;
};

volatile std::sig_atomic_t stop_requested = 0;

int run_worker_command(const WorkerFlags& flags) {
  if (flags.queue.empty()) throw core::Error("aegis worker needs --queue redis://HOST:PORT", "give the Redis URL that `aegis assess --workers` uses");
  std::signal(SIGINT, [](int) { stop_requested = 1; });
  std::signal(SIGTERM, [](int) { stop_requested = 1; });
  assess::WorkerOptions options;
  options.queue = flags.queue;
  options.store = flags.store;
  options.name = flags.name;
  options.aegis_binary = this_executable();
  options.scratch = flags.scratch;
  options.claim_idle = std::chrono::milliseconds(flags.claim_idle_ms);
  options.max_jobs = flags.max_jobs;
  options.stop = [] { return stop_requested != 0; };
  options.log = [&](const std::string& line) {
    if (!flags.quiet) std::cerr << line << std::endl;
  };
  const auto ran = assess::run_worker(options);
  if (!flags.quiet) std::cerr << "aegis worker: stopped after " << ran << " job(s)\n";
  return 0;
}

}  // namespace

void register_assess_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<AssessFlags>();
  auto* command = app.add_subcommand(
      "assess", "Assess an inventory end to end: threat model, the checks it calls for (scan, verify, pii, attack, mia, extract, "
                "redteam, gateway review, audit-infra), findings in the store, coverage and residual risk per asset");
  command->add_option("inventory", flags->inventory, "inventory YAML")->required();
  command->add_option("--store", flags->store, "store file or postgresql://user@host/db (default aegis-store.db or $AEGIS_STORE)");
  command->add_option("--workers", flags->workers, "redis://HOST:PORT: queue the jobs for `aegis worker` processes instead of running them here");
  command->add_option("--parallel,-j", flags->parallel, "jobs at once when running here (default 1: attacks use every core)");
  command->add_option("--resume", flags->resume, "continue assessment ID: jobs it finished are kept");
  command->add_flag("--no-reuse", flags->no_reuse, "rerun every check, even where no input changed since an earlier assessment");
  command->add_option("--max-age-days", flags->max_age_days, "reuse earlier results only when younger than this");
  command->add_flag("--only-due", flags->only_due, "assess only the assets `aegis schedule` reports as due");
  command->add_option("--checks", flags->checks, "only these checks (scan, verify, pii, robustness, membership, extraction, redteam, gateway-review, infra)")
      ->delimiter(',');
  command->add_option("--atlas", flags->atlas, "an ATLAS.yaml release to use instead of the shipped one");
  command->add_option("--rules", flags->rules, "threat-model rules file (default: the shipped rules)");
  command->add_option("--html", flags->html, "also write the self-contained HTML report here");
  command->add_option("--scratch", flags->scratch, "folder the checks run in (default a temporary folder, removed after)");
  add_engagement_options(*command, flags->common);
  command->callback([flags, &exit_code] { exit_code = run_assess(*flags); });
}

void register_worker_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<WorkerFlags>();
  auto* command = app.add_subcommand("worker", "Run assessment jobs from a Redis Streams queue (aegis assess --workers) and record them in the shared store");
  command->add_option("--queue", flags->queue, "redis://[:password@]HOST:PORT[/DB] (password also from $AEGIS_REDIS_PASSWORD)")->required();
  command->add_option("--store", flags->store, "the store the coordinator reads: postgresql://... (or a shared SQLite file on one machine)");
  command->add_option("--name", flags->name, "consumer name (default host:pid)");
  command->add_option("--claim-idle-ms", flags->claim_idle_ms, "a job silent this long is taken over from its worker (default 60000)");
  command->add_option("--max-jobs", flags->max_jobs, "stop after this many jobs (default: run until SIGINT/SIGTERM)");
  command->add_option("--scratch", flags->scratch, "folder jobs run in");
  command->add_flag("--quiet,-q", flags->quiet, "no log lines");
  command->callback([flags, &exit_code] { exit_code = run_worker_command(*flags); });
}

}  // namespace aegis::cli
