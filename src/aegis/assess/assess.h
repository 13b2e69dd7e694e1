// The engagement end to end: an inventory's threat model decides which checks each asset needs, the
// inventory decides which of them can run, the checks run as jobs (here or on `aegis worker`s), every
// finding lands in the store, and the assessment document (coverage, residual risk, evidence) is
// what the reports render.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "aegis/assess/job.h"
#include "aegis/core/finding.h"
#include "aegis/store/finding_store.h"
#include "aegis/threat/threat.h"

namespace aegis::assess {

// What the assessment will do about one check on one asset.
struct PlannedCheck {
  std::string check;
  std::string state;   // "planned" or "not-possible"
  std::string reason;  // for not-possible: what the inventory lacks, and what to add
  std::string job_key; // for planned
};

struct Plan {
  std::map<std::string, std::string> digests;  // input path -> input_digest, for reassessment on change
  std::vector<Job> jobs;  // unique by key (two assets needing the same check on the same inputs share it)
  std::map<std::string, std::vector<PlannedCheck>> checks;  // by asset id, in threat::all_checks() order
  threat::ThreatModel model;
};

struct PlanOptions {
  std::vector<std::string> only_checks;  // empty: every check the threat model calls for
  std::int64_t assessment_id = 0;        // jobs on live services carry it in their key (never reused across assessments)
};

// Hex SHA-256 of a file's bytes, or over a folder's files (relative path and digest, sorted; at most
// 100,000 files, symlinks not followed); "missing:<path>" when it does not exist.
std::string input_digest(const std::string& path);

Plan plan_assessment(const threat::Inventory& inventory, const threat::ThreatModel& model, const PlanOptions& options);

// How one job went.
struct JobOutcome {
  bool ok = false;          // the check ran to the end (exit 0 or 1)
  int exit_code = -1;
  std::string error;        // why it did not run to the end (the check's own message where it gave one)
  std::vector<core::Finding> findings;
  nlohmann::json results = nlohmann::json::object();  // the check's JSON report without its findings
  std::map<std::string, std::string> artifacts;       // image name -> base64 bytes
  std::string started_at, finished_at;
};

// Runs `aegis <job.arguments> --format json` as a child process in `scratch` (created; removed
// afterwards unless `keep_scratch`), killed after job.timeout_seconds. Never throws for a failing
// check: that is an outcome.
JobOutcome execute_job(const Job& job, const std::filesystem::path& aegis_binary, const std::filesystem::path& scratch,
                       bool keep_scratch = false);

// Stores the outcome as the job's run (command "assess:<check>") exactly once per (assessment, key);
// returns the run id and whether this call stored it.
std::pair<std::int64_t, bool> record_outcome(store::FindingStore& store, const Job& job, const JobOutcome& outcome,
                                             const std::string& worker);

struct AssessOptions {
  std::string store = "aegis-store.db";  // file, or postgresql://...
  std::string workers;                   // redis://... : jobs go to `aegis worker`s; empty: run here
  unsigned parallel = 1;                 // jobs at once when running here
  std::optional<std::int64_t> resume;    // continue this assessment (its done jobs are kept)
  bool reuse = true;                     // reuse results of earlier assessments whose inputs did not change
  std::optional<std::chrono::hours> reuse_max_age;  // ... and that are younger than this
  bool only_due = false;                 // assess only the assets `aegis schedule` says are due
  std::vector<std::string> only_checks;
  std::filesystem::path aegis_binary;    // the aegis executable that runs the jobs
  std::filesystem::path scratch;         // where jobs run; default a temp folder
  std::chrono::seconds wait_timeout{24 * 3600};  // with workers: give up waiting after this
  const threat::AtlasCatalog* catalog = nullptr;  // default: the shipped one
  std::vector<threat::ThreatRule> rules;          // empty: the shipped ones
  // Progress: jobs finished (done, reused or failed) out of total, and what just happened.
  std::function<void(std::size_t done, std::size_t total, const std::string& event)> progress;
};

struct AssessResult {
  std::int64_t assessment_id = 0;
  nlohmann::json document;  // see report_document()
  std::size_t ran = 0, reused = 0, failed = 0, resumed = 0;
};

// Plans, runs (or resumes) and records an assessment; returns its document. Throws core::Error for
// an inventory with errors, an unreachable store or queue.
AssessResult run_assessment(const threat::Inventory& inventory, const AssessOptions& options);

// The assessment document of a stored assessment: its plan with every job's outcome, findings with
// their triage status, coverage and residual risk per asset, and the ATLAS matrix. Throws
// core::Error for an unknown id.
nlohmann::json report_document(const store::FindingStore& store, std::int64_t assessment_id,
                               const threat::AtlasCatalog& catalog);

// The residual risk of an asset from its open findings, untested techniques, criticality and exposure.
struct ResidualRisk {
  int score = 0;        // 0..100
  std::string level;    // low | medium | high | critical
  std::string rationale;
};
ResidualRisk residual_risk(const std::vector<core::Severity>& open_findings, std::size_t applicable, std::size_t tested,
                           const std::string& criticality, const std::string& exposure);

// Reassessment (`aegis schedule`): whether each asset is due under the inventory's policy, and why.
struct DueAsset {
  std::string asset;
  bool due = false;
  std::vector<std::string> reasons;      // "never assessed", "last assessed 41 days ago (policy: every 30)", ...
  std::int64_t last_assessment = 0;      // 0: never
  std::string last_assessed_at;
  std::string next_due_at;               // by the every_days policy; empty when due now
};
std::vector<DueAsset> due_assets(const threat::Inventory& inventory, const store::FindingStore& store,
                                 const threat::AtlasCatalog& catalog, std::chrono::system_clock::time_point now);

// RFC 3339 text (as the store writes it) to a time point; nullopt when unreadable.
std::optional<std::chrono::system_clock::time_point> parse_rfc3339(const std::string& text);

// `aegis worker`: takes jobs from the queue until `stop` returns true (checked between jobs and
// while waiting), runs them and records them in the store. Returns the number of jobs it ran.
struct WorkerOptions {
  std::string queue;     // redis://...
  std::string store;     // file or postgresql://... (shared with the coordinator)
  std::string name;      // consumer name; default host:pid
  std::filesystem::path aegis_binary;
  std::filesystem::path scratch;
  std::chrono::milliseconds claim_idle{60'000};
  std::size_t max_jobs = 0;  // 0: no limit
  std::function<bool()> stop;
  std::function<void(const std::string& line)> log;
};
std::size_t run_worker(const WorkerOptions& options);

}  // namespace aegis::assess
