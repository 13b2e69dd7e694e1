// The Aegis store's findings: every command run (what it examined, when, with which outcome) and the
// findings it reported, so that `aegis assess` can show an asset's latest state and reassessment can
// say which findings are new, still open or fixed. SQLite (embedded) today; the interface holds no
// SQLite types so that a PostgreSQL backend can sit behind it later.
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
#include <vector>

#include "aegis/core/finding.h"

namespace aegis::store {

// The findings tables' schema version. A store written by a newer Aegis is refused, never rewritten.
// Kept per component in the table aegis_schema (not in PRAGMA user_version, which is one number for
// the whole file, and the file is shared with the lineage graph and the gateway's audit log).
inline constexpr int kFindingSchemaVersion = 1;

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

struct FindingStoreOptions {
  // How long a write waits for another process's transaction (a large run takes seconds to commit).
  std::chrono::milliseconds busy_timeout{30'000};
  // Opens an existing store without writing to it: no file or table is created, and record_run
  // and set_status throw.
  bool read_only = false;
};

class FindingStore {
 public:
  // Opens (creating when needed, with its folder) the store at `file`. Throws core::Error naming the
  // file and what to do when it cannot be created or written, is not an SQLite database, belongs to
  // another application, or was written by a newer schema.
  explicit FindingStore(const std::filesystem::path& file, FindingStoreOptions options = {});
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

  const std::filesystem::path& file() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// A finding's identity across runs: hex SHA-256 (first 32 digits) over the rule id, every location
// field and the evidence with its whitespace runs collapsed. Severity, title, references and
// remediation are left out, so that rewording a rule does not make its findings look new.
std::string finding_fingerprint(const core::Finding& finding);

}  // namespace aegis::store
