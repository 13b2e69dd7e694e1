// `aegis audit-infra`: reviews deployment files (Dockerfiles, Compose, Kubernetes, serving configs,
// start scripts, CI workflows, notebooks) and probes named ML services read-only, then reports
// through the shared writers and, with --store, records the run for `aegis assess`.
#include "aegis/cli/audit_infra_command.h"

#include <unistd.h>

#include <chrono>
#include <ctime>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "aegis/cli/common_options.h"
#include "aegis/core/error.h"
#include "aegis/infra/infra.h"
#include "aegis/store/finding_store.h"

namespace aegis::cli {
namespace {

using nlohmann::json;

struct AuditInfraFlags {
  std::vector<std::string> paths;
  std::vector<std::string> targets;
  std::vector<std::string> rule_files;
  bool only_rule_files = false;
  bool allow_remote = false;
  bool list_rules = false;
  double rate = 5;
  int timeout_ms = 3000;
  std::string store;
  std::string asset;
  CommonOptions common;
};

std::string now_utc() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  std::ostringstream out;
  out << std::put_time(&tm, "%Y-%m-%dT%H:%M:%SZ");
  return out.str();
}

// One status line on stderr, redrawn at most every 100 ms, on a terminal only.
class StatusLine {
 public:
  explicit StatusLine(bool enabled) : enabled_(enabled) {}
  ~StatusLine() { clear(); }
  void show(const std::string& text, bool force = false) {
    if (!enabled_) return;
    const auto now = std::chrono::steady_clock::now();
    if (!force && now - last_ < std::chrono::milliseconds(100)) return;
    last_ = now;
    std::string line = text.size() > 100 ? text.substr(0, 97) + "..." : text;
    std::cerr << "\r\033[2K" << line << std::flush;
    shown_ = true;
  }
  void clear() {
    if (enabled_ && shown_) std::cerr << "\r\033[2K" << std::flush;
    shown_ = false;
  }

 private:
  bool enabled_;
  bool shown_ = false;
  std::chrono::steady_clock::time_point last_{};
};

infra::RuleSet load_rules(const AuditInfraFlags& flags) {
  infra::RuleSet rules = flags.only_rule_files ? infra::RuleSet{} : infra::builtin_rules();
  for (const auto& file : flags.rule_files) infra::load_rule_file(rules, file);
  if (flags.only_rule_files && flags.rule_files.empty())
    throw core::Error("--only-rules needs at least one --rules FILE", "add --rules my_rules.yaml, or drop --only-rules");
  return rules;
}

std::string kind_of(const infra::StaticRule& rule) {
  switch (rule.kind) {
    case infra::StaticRule::Kind::Command: return "command";
    case infra::StaticRule::Kind::Properties: return "properties";
    case infra::StaticRule::Kind::Structural: return rule.structural.kind;
  }
  return "?";
}

int list_rules(const AuditInfraFlags& flags) {
  const infra::RuleSet rules = load_rules(flags);
  json out = json::array();
  const auto add = [&](const infra::RuleInfo& info, const std::string& kind) {
    out.push_back({{"id", info.id}, {"service", info.service}, {"severity", std::string(core::to_string(info.severity))},
                   {"kind", kind}, {"title", info.title}, {"cve", info.cves}, {"advisory", info.advisory},
                   {"atlas", info.atlas}, {"nist_ai_rmf", info.nist_ai_rmf}, {"remediation", info.remediation},
                   {"source", info.source_file}});
  };
  for (const auto& rule : rules.static_rules) add(rule.info, kind_of(rule));
  for (const auto& service : rules.services)
    for (const auto& probe : service.probes) add(probe.info, "probe");
  if (flags.common.format == "json") {
    std::cout << out.dump(2) << "\n";
    return 0;
  }
  std::cout << std::left << std::setw(52) << "RULE" << std::setw(10) << "SEVERITY" << std::setw(12) << "KIND" << "TITLE\n";
  for (const auto& r : out) {
    std::string title = r["title"].get<std::string>();
    if (!r["cve"].empty()) title += " [" + r["cve"][0].get<std::string>() + "]";
    std::cout << std::left << std::setw(52) << r["id"].get<std::string>() << std::setw(10) << r["severity"].get<std::string>()
              << std::setw(12) << r["kind"].get<std::string>() << title << "\n";
  }
  std::cout << out.size() << " rules (" << rules.static_rules.size() << " static, " << out.size() - rules.static_rules.size()
            << " live probes over " << rules.services.size() << " services)\n";
  return 0;
}

int run_audit_infra(const AuditInfraFlags& flags) {
  if (flags.list_rules) return list_rules(flags);
  if (flags.paths.empty() && flags.targets.empty())
    throw core::Error("audit-infra needs something to review: folders or files, or --target HOST:PORT",
                      "e.g. `aegis audit-infra deploy/` or `aegis audit-infra --target 127.0.0.1:8888`");
  if (flags.rate <= 0 || flags.rate > 1000) throw core::Error("--rate must be between 0 and 1000 requests per second", "e.g. --rate 5");
  if (flags.timeout_ms < 10 || flags.timeout_ms > 600000) throw core::Error("--timeout-ms must be between 10 and 600000", "e.g. --timeout-ms 3000");
  if (!flags.asset.empty() && flags.store.empty())
    throw core::Error("--asset names the inventory asset of a stored run, but no --store was given", "add --store aegis-store.db");

  // Parse targets before any work so that a bad one fails fast.
  std::vector<infra::Target> targets;
  for (const auto& text : flags.targets) targets.push_back(infra::parse_target(text));
  const infra::RuleSet rules = load_rules(flags);
  const std::string started = now_utc();

  StatusLine status(progress_wanted(flags.common));
  std::vector<core::Finding> findings;
  core::ReportContext context;
  context.command = "audit-infra";
  json extra = json::object();

  if (!flags.paths.empty()) {
    infra::StaticOptions options;
    options.progress = [&](std::size_t done, const std::string& current) {
      status.show("reviewing " + std::to_string(done + 1) + ": " + current);
    };
    std::vector<std::filesystem::path> paths(flags.paths.begin(), flags.paths.end());
    const infra::StaticReport report = infra::review_paths(paths, rules, options);
    status.clear();
    findings.insert(findings.end(), report.findings.begin(), report.findings.end());
    std::map<std::string, std::size_t> kinds;
    for (const auto& file : report.files) {
      ++kinds[file.kind];
      context.artifacts.push_back({file.path, file.bytes, file.kind, {}});
    }
    context.summary.files_scanned = report.files.size();
    for (const auto& file : report.files) context.summary.bytes_scanned += file.bytes;
    extra["static"] = {{"files_reviewed", report.files.size()}, {"files_skipped", report.skipped}, {"kinds", kinds}};
    for (const auto& p : flags.paths) context.inputs.push_back(p);
  }

  if (!targets.empty()) {
    infra::ProbeOptions options;
    options.rate = flags.rate;
    options.timeout = std::chrono::milliseconds(flags.timeout_ms);
    options.allow_remote = flags.allow_remote;
    options.progress = [&](const std::string& what) { status.show(what, true); };
    const infra::ProbeReport report = infra::probe_targets(targets, rules, options);
    status.clear();
    findings.insert(findings.end(), report.findings.begin(), report.findings.end());
    json services = json::array();
    for (const auto& o : report.observations)
      services.push_back({{"target", o.target}, {"reachable", o.reachable}, {"service", o.service}, {"name", o.name},
                          {"version", o.version}, {"requests", o.requests}, {"error", o.error}});
    extra["live"] = {{"requests", report.requests}, {"services", services}};
    for (const auto& t : flags.targets) context.inputs.push_back(t);
    if (table_wanted(flags.common)) {
      std::cout << "Services probed (" << report.requests << " read-only requests):\n";
      for (const auto& o : report.observations) {
        std::cout << "  " << std::left << std::setw(28) << o.target;
        if (!o.reachable)
          std::cout << "closed or unreachable" << (o.error.empty() ? "" : " (" + o.error + ")");
        else if (o.service.empty())
          std::cout << "open, no known ML service recognised";
        else
          std::cout << o.name << (o.version.empty() ? "" : " " + o.version);
        std::cout << "\n";
      }
      std::cout << "\n";
    }
  }

  context.summary = [&] {
    core::Summary s = core::summarize(findings);
    s.files_scanned = context.summary.files_scanned;
    s.bytes_scanned = context.summary.bytes_scanned;
    return s;
  }();
  context.extra_json = extra.dump();
  const int exit_code = finish_command(flags.common, findings, context);

  if (!flags.store.empty()) {
    store::FindingStore db(flags.store);
    store::RunRecord run;
    run.command = "audit-infra";
    run.asset = flags.asset;
    run.inputs = context.inputs;
    run.started_at = started;
    run.finished_at = now_utc();
    run.aegis_version = AEGIS_VERSION;
    run.exit_code = exit_code;
    run.summary_json = extra.dump();
    const auto id = db.record_run(run, findings);
    if (!flags.common.quiet)
      std::cerr << "recorded run " << id << " (" << findings.size() << " findings) in " << flags.store
                << (flags.asset.empty() ? "" : " for asset '" + flags.asset + "'") << "\n";
  }
  return exit_code;
}

}  // namespace

void register_audit_infra_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<AuditInfraFlags>();
  auto* command = app.add_subcommand(
      "audit-infra",
      "ML infrastructure review: deployment files (Docker, Compose, Kubernetes, serving configs, CI, notebooks) and "
      "read-only probes of Jupyter, MLflow, Ray, TorchServe, Triton, vLLM, Ollama, TGI and Gradio");
  command->add_option("paths", flags->paths, "repository or deployment folders, or files in them");
  command->add_option("--target,-t", flags->targets,
                      "a service to probe: HOST:PORT, HOST (every known ML port), [::1]:PORT or https://HOST:PORT; repeatable. "
                      "Loopback only unless --allow-remote");
  command->add_flag("--allow-remote", flags->allow_remote,
                    "probe targets that are not loopback addresses (only hosts you are authorised to test)");
  command->add_option("--rate", flags->rate, "probe requests per second across the run (default 5)");
  command->add_option("--timeout-ms", flags->timeout_ms, "per-request deadline: connect, send, answer (default 3000)");
  command->add_option("--rules", flags->rule_files, "extra rule file (YAML, one service per file; see data/infra/README.md); repeatable")
      ->check(CLI::ExistingFile);
  command->add_flag("--only-rules", flags->only_rule_files, "use only the --rules files, not the built-in rules");
  command->add_flag("--list-rules", flags->list_rules, "list the rules (with --format json: as JSON) and exit");
  command->add_option("--store", flags->store, "record the run and its findings in this store (SQLite file or postgresql:// URL) for `aegis assess`");
  command->add_option("--asset", flags->asset, "the inventory asset this run examined (recorded with --store)");
  add_common_options(*command, flags->common);
  command->callback([flags, &exit_code] { exit_code = run_audit_infra(*flags); });
}

}  // namespace aegis::cli
