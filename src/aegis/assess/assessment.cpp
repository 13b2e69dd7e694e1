// Running an assessment (here, in parallel, or through `aegis worker`s) and rebuilding its document
// from the store: the stored plan says what was called for and why, the stored jobs say what ran,
// and the findings' current triage status decides the residual risk.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <ctime>
#include <mutex>
#include <set>
#include <thread>

#include "aegis/assess/assess.h"
#include "aegis/assess/job_queue.h"
#include "aegis/core/error.h"
#include "aegis/core/finding_json.h"

namespace aegis::assess {

namespace {

using nlohmann::json;

json asset_json(const threat::Asset& a) {
  return {{"id", a.id},
          {"kind", std::string(threat::to_string(a.kind))},
          {"name", a.name},
          {"description", a.description},
          {"owner", a.owner},
          {"criticality", a.criticality},
          {"sector", a.sector},
          {"tags", a.tags},
          {"exposure", a.exposure},
          {"llm", a.llm},
          {"task", a.task},
          {"framework", a.framework},
          {"files", a.resolved_files},
          {"url", a.url},
          {"api", a.api},
          {"endpoint", a.endpoint},
          {"gateway", a.gateway},
          {"datasets", a.datasets},
          {"sensitivity", a.sensitivity},
          {"source", a.source},
          {"stage", a.stage},
          {"targets", a.targets},
          {"line", a.mark.line}};
}

// What is stored with the assessment: everything the document needs that the jobs do not hold.
json plan_json(const threat::Inventory& inventory, const Plan& plan, const threat::AtlasCatalog& catalog) {
  std::map<std::string, std::string> commands;
  for (const auto& job : plan.jobs) {
    std::string line = "aegis";
    for (const auto& a : job.arguments) line += " " + a;
    commands[job.key] = line;
  }
  json assets = json::array();
  for (const auto& asset_model : plan.model.assets) {
    const threat::Asset* asset = inventory.find(asset_model.asset);
    if (!asset) continue;
    json entry = asset_json(*asset);
    json techniques = json::array();
    for (const auto& t : asset_model.techniques) {
      json mitigations = json::array();
      for (const auto& id : t.mitigations) {
        std::string name;
        for (const auto& m : catalog.mitigations())
          if (m.id == id) name = m.name;
        mitigations.push_back({{"id", id}, {"name", name}});
      }
      json stride = json::array();
      for (auto s : t.stride) stride.push_back(std::string(threat::to_string(s)));
      techniques.push_back({{"id", t.id}, {"name", t.name}, {"tactics", t.tactics}, {"rationales", t.rationales},
                            {"checks", t.checks}, {"mitigations", mitigations}, {"stride", stride},
                            {"nist_ai_rmf", t.nist_ai_rmf}});
    }
    entry["techniques"] = techniques;
    json checks = json::array();
    if (auto it = plan.checks.find(asset->id); it != plan.checks.end())
      for (const auto& c : it->second)
        checks.push_back({{"check", c.check}, {"state", c.state}, {"reason", c.reason}, {"job_key", c.job_key},
                          {"command", c.job_key.empty() ? "" : commands[c.job_key]}});
    entry["checks"] = checks;
    json digests = json::object();
    for (const auto& file : asset->resolved_files)
      if (auto d = plan.digests.find(file); d != plan.digests.end()) digests[file] = d->second;
    entry["digests"] = digests;
    assets.push_back(std::move(entry));
  }
  return {{"plan_version", 1},
          {"inventory", inventory.file.string()},
          {"organisation", inventory.organisation},
          {"atlas_version", catalog.version()},
          {"policy", {{"every_days", inventory.policy.every_days}, {"on_model_change", inventory.policy.on_model_change},
                      {"on_atlas_release", inventory.policy.on_atlas_release}, {"after_fix", inventory.policy.after_fix}}},
          {"assets", assets}};
}

std::string text(const json& object, const char* key) {
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

const json& member(const json& object, const char* key) {
  static const json empty;
  if (!object.is_object()) return empty;
  const auto it = object.find(key);
  return it == object.end() ? empty : *it;
}

bool related(const std::string& technique, const std::string& tagged) {
  return technique == tagged || tagged.starts_with(technique + ".") || technique.starts_with(tagged + ".");
}

std::string hostname() {
  char name[256] = {};
  if (::gethostname(name, sizeof name - 1) != 0) return "localhost";
  return name;
}

}  // namespace

ResidualRisk residual_risk(const std::vector<core::Severity>& open_findings, std::size_t applicable, std::size_t tested,
                           const std::string& criticality, const std::string& exposure) {
  // Likelihood: the worst open finding, or, with none, the share of applicable techniques nobody
  // tested (an untested technique is an unknown, weighted below a confirmed high finding).
  double worst = 0;
  std::size_t counts[5] = {};
  for (auto s : open_findings) {
    ++counts[static_cast<int>(s)];
    static constexpr double kWeight[5] = {0.0, 0.2, 0.45, 0.75, 1.0};
    worst = std::max(worst, kWeight[static_cast<int>(s)]);
  }
  const double untested = applicable == 0 ? 0.0 : static_cast<double>(applicable - std::min(tested, applicable)) / static_cast<double>(applicable);
  const double likelihood = std::max(worst, 0.6 * untested);
  const double impact = criticality == "critical" ? 1.0 : criticality == "high" ? 0.85 : criticality == "low" ? 0.5 : 0.7;
  const double reach = exposure == "external" ? 1.0 : 0.8;
  ResidualRisk risk;
  risk.score = static_cast<int>(std::lround(100.0 * likelihood * impact * reach));
  risk.level = risk.score >= 70 ? "critical" : risk.score >= 45 ? "high" : risk.score >= 20 ? "medium" : "low";
  std::string open;
  for (int s = 4; s >= 1; --s)
    if (counts[s]) open += (open.empty() ? "" : ", ") + std::to_string(counts[s]) + " " + std::string(core::to_string(static_cast<core::Severity>(s)));
  risk.rationale = (open.empty() ? std::string("no open findings above info") : open + " finding(s) open") + "; " +
                   std::to_string(applicable - std::min(tested, applicable)) + " of " + std::to_string(applicable) +
                   " applicable techniques untested; criticality " + criticality + ", exposure " + exposure;
  return risk;
}

AssessResult run_assessment(const threat::Inventory& inventory, const AssessOptions& options) {
  const threat::AtlasCatalog& catalog = options.catalog ? *options.catalog : threat::AtlasCatalog::shipped();
  const auto rules = options.rules.empty() ? threat::shipped_threat_rules(catalog) : options.rules;
  auto model = threat::build_threat_model(inventory, catalog, rules);
  store::FindingStore store(options.store);
  if (options.only_due) {
    std::set<std::string> due;
    for (const auto& d : due_assets(inventory, store, catalog, std::chrono::system_clock::now()))
      if (d.due) due.insert(d.asset);
    std::erase_if(model.assets, [&](const threat::AssetThreatModel& a) { return !due.contains(a.asset); });
  }
  AssessResult result;
  if (options.resume) {
    const auto existing = store.assessment(*options.resume);
    if (!existing)
      throw core::Error("there is no assessment " + std::to_string(*options.resume) + " in " + store.location(),
                        "list the assessments with `aegis report --list --store " + store.location() + "`");
    result.assessment_id = existing->id;
  } else {
    store::AssessmentRecord record;
    record.inventory = inventory.file.string();
    record.status = "running";
    result.assessment_id = store.begin_assessment(record);
  }
  PlanOptions plan_options{options.only_checks, result.assessment_id};
  const Plan plan = plan_assessment(inventory, model, plan_options);
  const std::string stored_plan = plan_json(inventory, plan, catalog).dump(-1, ' ', false, json::error_handler_t::replace);
  store.update_assessment(result.assessment_id, "running", stored_plan, "");

  std::set<std::string> done;
  for (const auto& job : store.jobs(result.assessment_id))
    if (job.state == "done") done.insert(job.job_key);
  const std::size_t total = plan.jobs.size();
  std::size_t finished = 0;
  auto progress = [&](const std::string& event) {
    if (options.progress) options.progress(finished, total, event);
  };
  std::vector<const Job*> to_run;
  for (const auto& job : plan.jobs) {
    if (done.contains(job.key)) {
      ++result.resumed;
      ++finished;
      progress(job.asset + " " + job.check + ": already done in this assessment");
      continue;
    }
    if (options.reuse) {
      auto previous = store.latest_done_job(job.key);
      if (previous && options.reuse_max_age) {
        const auto at = parse_rfc3339(previous->finished_at);
        if (!at || std::chrono::system_clock::now() - *at > *options.reuse_max_age) previous.reset();
      }
      if (previous && previous->run_id != 0) {
        if (const auto run = store.run(previous->run_id)) {
          store::RunRecord copy = *run;
          copy.id = 0;
          std::vector<core::Finding> findings;
          for (const auto& f : store.findings(previous->run_id)) findings.push_back(f.finding);
          auto summary = json::parse(copy.summary_json.empty() ? "{}" : copy.summary_json, nullptr, false);
          if (summary.is_object()) {
            summary["reused_from_run"] = previous->run_id;
            copy.summary_json = summary.dump(-1, ' ', false, json::error_handler_t::replace);
          }
          store::JobRecord record{result.assessment_id, job.key, job.asset, job.check, "done", 0, "",
                                  "reused:" + std::to_string(previous->assessment_id), ""};
          store.record_job(record, std::move(copy), findings);
          ++result.reused;
          ++finished;
          progress(job.asset + " " + job.check + ": inputs unchanged since assessment " + std::to_string(previous->assessment_id) + ", result reused");
          continue;
        }
      }
    }
    to_run.push_back(&job);
  }

  const auto scratch = options.scratch.empty() ? std::filesystem::temp_directory_path() / ("aegis-assess-" + std::to_string(::getpid()))
                                               : options.scratch;
  const std::string worker = hostname() + ":" + std::to_string(::getpid());
  if (options.workers.empty()) {
    std::mutex mutex;  // the store and the counters
    std::atomic<std::size_t> next{0};
    auto work = [&] {
      for (std::size_t i = next++; i < to_run.size(); i = next++) {
        const Job& job = *to_run[i];
        {
          std::lock_guard lock(mutex);
          progress(job.asset + " " + job.check + ": running");
        }
        const auto outcome = execute_job(job, options.aegis_binary, scratch / job.key.substr(0, 16));
        std::lock_guard lock(mutex);
        record_outcome(store, job, outcome, worker);
        ++finished;
        (outcome.ok ? result.ran : result.failed) += 1;
        progress(job.asset + " " + job.check + (outcome.ok ? ": done" : ": failed: " + outcome.error));
      }
    };
    std::vector<std::thread> threads;
    for (unsigned t = 1; t < std::max(1u, options.parallel); ++t) threads.emplace_back(work);
    work();
    for (auto& t : threads) t.join();
  } else {
    RedisJobQueueOptions queue_options;
    // Workers refuse unsigned jobs when they share this key: set it wherever the queue is reachable by others.
    if (const char* key = std::getenv("AEGIS_QUEUE_KEY"); key && *key) queue_options.signing_key = key;
    RedisJobQueue queue(options.workers, queue_options);
    std::vector<Job> jobs;
    for (const auto* job : to_run) jobs.push_back(*job);
    queue.enqueue(jobs);
    progress(std::to_string(jobs.size()) + " job(s) queued on " + options.workers + "; waiting for `aegis worker`s");
    std::set<std::string> waiting;
    for (const auto* job : to_run) waiting.insert(job->key);
    const auto deadline = std::chrono::steady_clock::now() + options.wait_timeout;
    while (!waiting.empty()) {
      for (const auto& job : store.jobs(result.assessment_id)) {
        if (!waiting.erase(job.job_key)) continue;
        ++finished;
        (job.state == "done" ? result.ran : result.failed) += 1;
        progress(job.asset + " " + job.check + " on " + job.worker + (job.state == "done" ? ": done" : ": failed: " + job.error));
      }
      if (waiting.empty()) break;
      if (std::chrono::steady_clock::now() > deadline)
        throw core::Error(std::to_string(waiting.size()) + " job(s) of assessment " + std::to_string(result.assessment_id) + " did not finish in time",
                          "check that `aegis worker --queue " + options.workers + "` processes are running, then `aegis assess --resume " +
                              std::to_string(result.assessment_id) + "`");
      std::this_thread::sleep_for(std::chrono::milliseconds(250));
    }
  }
  std::error_code ec;
  if (options.scratch.empty()) std::filesystem::remove_all(scratch, ec);
  store.update_assessment(result.assessment_id, "finished", stored_plan, "");
  result.document = report_document(store, result.assessment_id, catalog);
  return result;
}

json report_document(const store::FindingStore& store, std::int64_t assessment_id, const threat::AtlasCatalog& catalog) {
  const auto record = store.assessment(assessment_id);
  if (!record)
    throw core::Error("there is no assessment " + std::to_string(assessment_id) + " in " + store.location(),
                      "list the assessments with `aegis report --list`");
  const json plan = json::parse(record->summary_json.empty() ? "{}" : record->summary_json, nullptr, false);
  std::map<std::string, store::JobRecord> jobs;
  for (auto& job : store.jobs(assessment_id)) {
    auto [it, fresh] = jobs.emplace(job.job_key, job);
    if (!fresh && job.state == "done") it->second = job;
  }
  std::map<std::int64_t, std::pair<json, std::vector<store::StoredFinding>>> runs;  // run id -> (summary, findings)
  auto run_of = [&](std::int64_t id) -> const std::pair<json, std::vector<store::StoredFinding>>& {
    auto it = runs.find(id);
    if (it == runs.end()) {
      const auto run = store.run(id);
      json summary = run ? json::parse(run->summary_json.empty() ? "{}" : run->summary_json, nullptr, false) : json::object();
      if (summary.is_discarded()) summary = json::object();
      if (run) summary["exit_code"] = run->exit_code;
      it = runs.emplace(id, std::make_pair(summary, store.findings(id))).first;
    }
    return it->second;
  };

  json assets = json::array();
  json all_findings = json::array();
  std::map<std::int64_t, std::size_t> listed;  // finding id -> index in all_findings (a shared job's findings are listed once)
  std::size_t counts[5] = {};
  std::size_t applicable_total = 0, tested_total = 0, checks_run = 0, checks_failed = 0;
  std::map<std::string, std::tuple<std::size_t, std::size_t, std::size_t>> matrix;  // technique -> (assets, tested, findings)
  std::map<std::string, json> stride;
  const json& plan_assets = member(plan, "assets");
  for (const auto& planned : plan_assets.is_array() ? plan_assets : json::array()) {
    if (!planned.is_object()) continue;
    json asset = planned;
    const std::string asset_id = text(planned, "id");
    json checks = json::array();
    json findings = json::array();
    std::set<std::string> evidence;  // checks that produced evidence for this asset
    std::vector<core::Severity> open;
    const json& planned_checks = member(planned, "checks");
    for (const auto& c : planned_checks.is_array() ? planned_checks : json::array()) {
      json check = {{"check", text(c, "check")}, {"state", text(c, "state")}, {"reason", text(c, "reason")},
                    {"command", text(c, "command")}, {"run_id", 0}, {"exit_code", nullptr}};
      if (text(c, "state") == "planned") {
        const auto job = jobs.find(text(c, "job_key"));
        if (job == jobs.end()) {
          check["state"] = record->status == "running" ? "pending" : "not-run";
          check["reason"] = "the assessment stopped before this job ran; `aegis assess --resume " + std::to_string(assessment_id) + "` runs it";
        } else if (job->second.state != "done") {
          check["state"] = "failed";
          check["reason"] = job->second.error;
          ++checks_failed;
        } else {
          const auto& [summary, stored] = run_of(job->second.run_id);
          check["state"] = job->second.worker.starts_with("reused:") ? "reused" : "done";
          check["run_id"] = job->second.run_id;
          check["exit_code"] = member(summary, "exit_code");
          check["results"] = member(summary, "results").is_object() ? member(summary, "results") : json::object();
          if (member(summary, "artifacts").is_object()) check["artifacts"] = member(summary, "artifacts");
          if (member(summary, "reused_from_run").is_number()) check["reused_from_run"] = member(summary, "reused_from_run");
          evidence.insert(text(c, "check"));
          ++checks_run;
          for (const auto& f : stored) {
            auto item = json(core::finding_json(f.finding));
            item["check"] = text(c, "check");
            item["status"] = f.status;
            item["fingerprint"] = f.fingerprint;
            item["finding_id"] = f.id;
            if (f.status == store::kStatusOpen || f.status == store::kStatusAcknowledged) open.push_back(f.finding.severity);
            findings.push_back(item);
            if (const auto seen = listed.find(f.id); seen != listed.end()) {
              all_findings[seen->second]["assets"].push_back(asset_id);
              continue;
            }
            ++counts[static_cast<int>(f.finding.severity)];
            item["asset"] = asset_id;
            item["assets"] = json::array({asset_id});
            listed.emplace(f.id, all_findings.size());
            all_findings.push_back(std::move(item));
          }
        }
      }
      checks.push_back(std::move(check));
    }
    std::size_t applicable = 0, tested = 0;
    json techniques = json::array();
    const json& planned_techniques = member(planned, "techniques");
    for (const auto& t : planned_techniques.is_array() ? planned_techniques : json::array()) {
      json technique = t;
      bool is_tested = false;
      const json& technique_checks = member(t, "checks");
      for (const auto& c : technique_checks.is_array() ? technique_checks : json::array())
        if (c.is_string() && evidence.contains(c.get<std::string>())) is_tested = true;
      std::size_t hits = 0;
      const std::string id = text(t, "id");
      for (const auto& f : findings)
        for (const auto& tagged : member(f, "atlas"))
          if (tagged.is_string() && related(id, tagged.get<std::string>())) {
            ++hits;
            break;
          }
      technique["tested"] = is_tested;
      technique["findings"] = hits;
      ++applicable;
      tested += is_tested;
      auto& [m_assets, m_tested, m_findings] = matrix[id];
      ++m_assets;
      m_tested += is_tested;
      m_findings += hits;
      for (const auto& s : member(t, "stride"))
        if (s.is_string()) stride[s.get<std::string>()].push_back({{"id", id}, {"name", text(t, "name")}, {"asset", asset_id}});
      techniques.push_back(std::move(technique));
    }
    applicable_total += applicable;
    tested_total += tested;
    const auto risk = residual_risk(open, applicable, tested, text(planned, "criticality"), text(planned, "exposure"));
    asset["techniques"] = techniques;
    asset["checks"] = checks;
    asset["findings"] = findings;
    asset["coverage"] = {{"applicable", applicable}, {"tested", tested}};
    asset["risk"] = {{"score", risk.score}, {"level", risk.level}, {"rationale", risk.rationale}};
    assets.push_back(std::move(asset));
  }

  json tactics = json::array();
  for (const auto& tactic : catalog.tactics()) {
    json techniques = json::array();
    std::size_t in_catalog = 0;
    for (const auto& technique : catalog.techniques()) {
      if (std::find(technique.tactics.begin(), technique.tactics.end(), tactic.id) == technique.tactics.end()) continue;
      ++in_catalog;
      const auto it = matrix.find(technique.id);
      if (it == matrix.end()) continue;
      const auto& [n_assets, n_tested, n_findings] = it->second;
      techniques.push_back({{"id", technique.id}, {"name", technique.name}, {"assets", n_assets}, {"tested", n_tested}, {"findings", n_findings}});
    }
    tactics.push_back({{"id", tactic.id}, {"name", tactic.name}, {"catalog_techniques", in_catalog}, {"techniques", techniques}});
  }
  json stride_view = json::array();
  for (std::string_view category : {"spoofing", "tampering", "repudiation", "information-disclosure", "denial-of-service", "elevation-of-privilege"}) {
    const auto it = stride.find(std::string(category));
    stride_view.push_back({{"category", category}, {"techniques", it == stride.end() ? json::array() : it->second}});
  }
  json by_severity = json::object();
  std::string highest;
  for (int s = 4; s >= 0; --s) {
    by_severity[std::string(core::to_string(static_cast<core::Severity>(s)))] = counts[s];
    if (highest.empty() && counts[s]) highest = core::to_string(static_cast<core::Severity>(s));
  }
  return {{"aegis", {{"version", AEGIS_VERSION}, {"command", "report"}}},
          {"assessment",
           {{"id", assessment_id}, {"inventory", record->inventory}, {"organisation", text(plan, "organisation")},
            {"started_at", record->started_at}, {"finished_at", record->finished_at}, {"status", record->status},
            {"atlas_version", text(plan, "atlas_version")}, {"store", store.location()}, {"policy", member(plan, "policy")}}},
          {"summary",
           {{"counts", by_severity}, {"highest", highest.empty() ? json(nullptr) : json(highest)}, {"assets", assets.size()},
            {"techniques_applicable", applicable_total}, {"techniques_tested", tested_total}, {"checks_run", checks_run},
            {"checks_failed", checks_failed}}},
          {"assets", assets},
          {"tactics", tactics},
          {"stride", stride_view},
          {"findings", all_findings}};
}

}  // namespace aegis::assess
