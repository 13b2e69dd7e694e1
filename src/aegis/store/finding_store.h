// The Aegis store's findings: every command run (what it examined, when, with which outcome) and the
// findings it reported, so that `aegis assess` can show an asset's latest state and reassessment can
// say which findings are new, still open or fixed; and the assessments that ran those commands as
// jobs, each job recorded exactly once. One interface over two backends: an SQLite file (embedded,
// the default) and a PostgreSQL server (a team's shared store, workers on several machines).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "aegis/core/finding.h"

namespace aegis::store {

// The findings tables' schema version: 1 runs and findings, 2 assessments and their jobs. A store at
// an older version is migrated when opened for writing; one written by a newer Aegis is refused,
// never rewritten. Kept per component in the table aegis_schema (not in SQLite's PRAGMA user_version,
// which is one number for the whole file, and the file is shared with the lineage graph and the
// gateway's audit log).
inline constexpr int kFindingSchemaVersion = 2;

// One run of one command.
struct RunRecord {
  std::int64_t id = 0;              // assigned by the store
  std::string command;              // "audit-infra", "scan", ... (required)
  std::string asset;                // the inventory asset this run examined; "" when none
  std::vector<std::string> inputs;  // paths or targets, in the order given
  // RFC 3339 (e.g. 2025-06-01T12:00:00Z or 2025-06-01T14:00:00.250+02:00), stored as given. Empty:
  // the store writes the current UTC time. Runs are ordered by the instant, not by the text.
  std::string started_at;
  std::string finished_at;
  std::string aegis_version;
  int exit_code = 0;
  std::string summary_json;          // the command's own results, serialized JSON; "" for none
  std::array<std::size_t, 5> counts{};  // findings per core::Severity (filled by the store)
};

// Triage states of a stored finding. A new finding is open.
inline constexpr std::string_view kStatusOpen = "open";
inline constexpr std::string_view kStatusAcknowledged = "acknowledged";
inline constexpr std::string_view kStatusAcceptedRisk = "accepted-risk";
inline constexpr std::string_view kStatusFalsePositive = "false-positive";
inline constexpr std::string_view kStatusFixed = "fixed";
bool is_finding_status(std::string_view status);

struct StoredFinding {
  std::int64_t id = 0;      // the store's own id (for set_status)
  std::int64_t run_id = 0;
  std::string fingerprint;  // finding_fingerprint(finding)
  core::Finding finding;
  std::string status{kStatusOpen};
};

struct RunFilter {
  std::optional<std::string> command;  // only runs of this command
  std::optional<std::string> asset;    // only runs of this asset ("" selects runs without one)
  // Only the newest run of each (asset, command) pair among those selected.
  bool latest_per_asset = false;
  std::size_t limit = 1000;  // at most this many runs, newest first; 0: no limit
};

// Fingerprints of two runs' findings, each list sorted and without repeats.
struct RunDiff {
  std::vector<std::string> added;       // in the new run only
  std::vector<std::string> persisting;  // in both
  std::vector<std::string> fixed;       // in the old run only
};

// Assessment states.
inline constexpr std::string_view kAssessmentRunning = "running";
inline constexpr std::string_view kAssessmentFinished = "finished";
inline constexpr std::string_view kAssessmentInterrupted = "interrupted";
inline constexpr std::string_view kAssessmentFailed = "failed";

// One `aegis assess` over an inventory.
struct AssessmentRecord {
  std::int64_t id = 0;                  // assigned by the store
  std::string inventory;                // the inventory file it assessed
  std::string started_at, finished_at;  // RFC 3339; an empty started_at: now; finished_at "" while running
  std::string status{kAssessmentRunning};  // running | finished | interrupted | failed
  std::string summary_json;             // the assessment document (serialized JSON); may be MBs
};

// Job states.
inline constexpr std::string_view kJobDone = "done";
inline constexpr std::string_view kJobFailed = "failed";

// One job of an assessment (one check on one asset) as it ended.
struct JobRecord {
  std::int64_t assessment_id = 0;
  std::string job_key;      // names the job's exact inputs (a hex digest); printable ASCII, no spaces
  std::string asset, check;
  std::string state;        // done | failed
  std::int64_t run_id = 0;  // the run that holds its findings (0 for a failed job)
  std::string error;        // why it failed
  std::string worker;       // who ran it
  std::string finished_at;  // RFC 3339; empty: now
};

struct FindingStoreOptions {
  // How long a write waits for another process's transaction (a large run takes seconds to commit):
  // SQLite's busy timeout, PostgreSQL's lock_timeout.
  std::chrono::milliseconds busy_timeout{30'000};
  // Opens an existing store without writing to it: no file or table is created, no migration runs,
  // and every call that writes throws.
  bool read_only = false;
};

class FindingStore {
 public:
  // Opens (creating when needed, with its folder) the SQLite store at `file`, migrated to this
  // Aegis's schema. Throws core::Error naming the file and what to do when it cannot be created or
  // written, is not an SQLite database, belongs to another application, or was written by a newer
  // schema.
  explicit FindingStore(const std::filesystem::path& file, FindingStoreOptions options = {});
  // `location` is a PostgreSQL URL (postgresql://user[:password]@host[:port]/database[?param=value],
  // also postgres://; any libpq parameter) or else an SQLite file. On PostgreSQL the tables live in
  // the connection's default schema and are created or migrated at open. Throws core::Error saying
  // what failed (server unreachable, authentication, missing database, missing privileges, newer
  // schema) and what to do; a password never appears in its text.
  explicit FindingStore(const std::string& location, FindingStoreOptions options = {});
  explicit FindingStore(const char* location, FindingStoreOptions options = {});
  ~FindingStore();
  FindingStore(const FindingStore&) = delete;
  FindingStore& operator=(const FindingStore&) = delete;

  // Stores the run and all its findings in one transaction (waiting for other writers up to the
  // busy timeout) and returns the run's id. `run.id` and `run.counts` are ignored. Throws
  // core::Error when `run.command` is empty, a timestamp is not RFC 3339, or the write fails (in
  // which case nothing of the run is stored).
  std::int64_t record_run(RunRecord run, const std::vector<core::Finding>& findings);
  // The same, with the findings pulled one at a time from `next` until it returns nullptr (each
  // pointer need only stay valid until the following call), for producers with more findings than
  // they want to hold at once. `next` may not call this store; what it throws rolls the run back.
  std::int64_t record_run_streamed(RunRecord run, const std::function<const core::Finding*()>& next);

  // Runs matching the filter, newest first (by started_at, then by id).
  std::vector<RunRecord> runs(const RunFilter& filter = {}) const;
  std::optional<RunRecord> run(std::int64_t run_id) const;
  // The newest run of `command` on `asset`.
  std::optional<RunRecord> latest_run(std::string_view command, std::string_view asset) const;

  // The run's findings in the order they were recorded; empty for an unknown run.
  std::vector<StoredFinding> findings(std::int64_t run_id) const;
  // The same, one at a time, for runs too large to hold at once. `visit` may not call this store.
  void for_each_finding(std::int64_t run_id, const std::function<void(const StoredFinding&)>& visit) const;
  // The findings of the newest run of (command, asset): what `aegis assess` shows per asset. Empty
  // when there is no such run.
  std::vector<StoredFinding> latest_findings(std::string_view command, std::string_view asset) const;

  // What changed from `old_run` to `new_run`, by fingerprint. Throws core::Error for an unknown run.
  RunDiff diff_runs(std::int64_t old_run, std::int64_t new_run) const;

  // Sets the triage status of one stored finding. Throws core::Error for an unknown id or status.
  void set_status(std::int64_t finding_id, std::string_view status);

  // Assessments. begin_assessment stores the record (its id ignored) and returns its id.
  std::int64_t begin_assessment(AssessmentRecord record);
  // Sets an assessment's status, document and end time ("" = now). Throws core::Error for an unknown
  // id, status or time.
  void update_assessment(std::int64_t id, std::string_view status, std::string_view summary_json,
                         std::string_view finished_at);
  std::optional<AssessmentRecord> assessment(std::int64_t id) const;
  // Newest first (by started_at, then id), at most `limit` (0: all); summary_json left empty.
  std::vector<AssessmentRecord> assessments(std::size_t limit = 100) const;

  // Records a job's end exactly once, also across processes and machines. For state "done", stores
  // the run, its findings and the job in ONE transaction and returns {run id, true} — unless a done
  // job with the same (assessment_id, job_key) exists already: then nothing is written and
  // {its run id, false} comes back, however many workers race. For state "failed" the run is
  // ignored and not stored: {0, true}, or {run id, false} when the job is done already. A failed
  // job is replaced by a later record of the same key (a retry), a done one never. Throws
  // core::Error for an unknown assessment, a bad state, key or time, or an invalid run (nothing is
  // stored then).
  std::pair<std::int64_t, bool> record_job(const JobRecord& job, RunRecord run, const std::vector<core::Finding>& findings);
  // The assessment's jobs in the order their current records were written.
  std::vector<JobRecord> jobs(std::int64_t assessment_id) const;
  // The newest (by finished_at) done job with this key in any assessment: a re-run may reuse its
  // results, since its inputs did not change.
  std::optional<JobRecord> latest_done_job(std::string_view job_key) const;

  // The SQLite file; empty for a PostgreSQL store.
  const std::filesystem::path& file() const;
  // The SQLite file, or the PostgreSQL URL with any password replaced by ***: for messages.
  std::string location() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A finding's identity across runs: hex SHA-256 (first 32 digits) over the rule id, every location
// field and the evidence with its whitespace runs collapsed. Severity, title, references and
// remediation are left out, so that rewording a rule does not make its findings look new.
std::string finding_fingerprint(const core::Finding& finding);

}  // namespace aegis::store
