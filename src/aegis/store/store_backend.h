// Inside the finding store: the interface each database backend (SQLite, PostgreSQL) implements, and
// what both share — time parsing, fingerprints and the per-finding columns, schema migrations as
// data. FindingStore checks its arguments and serialises calls; a backend only reads and writes.
#pragma once

#include <array>
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
#include "aegis/store/finding_store.h"

namespace aegis::store::backend {

// The findings component's name in aegis_schema.
inline constexpr std::string_view kFindingComponent = "findings";

// One schema step: the statements that take a component from version - 1 to version, run in one
// transaction together with the version update. A component's migrations are listed in order,
// starting at version 1; a shipped migration is never edited (stores in the field already ran it).
struct Migration {
  int version;
  std::vector<std::string_view> statements;
};

// Pulls a run's findings one at a time; nullptr ends the run.
using FindingSource = std::function<const core::Finding*()>;

// A run whose fields FindingStore has checked and completed (times filled in and parsed).
struct CheckedRun {
  const RunRecord& run;
  std::int64_t started_ms;
  const FindingSource& next;
};

// A job whose fields FindingStore has checked (state, key, time).
struct CheckedJob {
  const JobRecord& job;
  std::int64_t finished_ms;
};

// The columns a finding adds besides its own text: the fingerprint, the severity's name, the
// references as JSON arrays. Throws core::Error for a severity outside the scale (a bug in the
// command that reported it), which rolls its whole run back. Counts the findings per severity.
class FindingEncoder {
 public:
  FindingEncoder();
  ~FindingEncoder();
  FindingEncoder(const FindingEncoder&) = delete;
  FindingEncoder& operator=(const FindingEncoder&) = delete;

  struct Columns {
    std::string fingerprint;
    std::string_view severity;
    std::string atlas;
    std::string nist_ai_rmf;
  };
  const Columns& encode(const core::Finding& finding);
  const std::array<std::int64_t, 5>& counts() const { return counts_; }

 private:
  struct Hasher;
  std::unique_ptr<Hasher> hasher_;
  Columns columns_;
  std::array<std::int64_t, 5> counts_{};
};

// RFC 3339 date-time -> milliseconds since the epoch (UTC); nullopt when the text is not one.
std::optional<std::int64_t> parse_rfc3339(std::string_view text);
// The current UTC time as RFC 3339 with milliseconds.
std::string now_utc();
// Reference lists as stored: a JSON array of strings, and back (anything else reads as empty: a
// store can be edited by anyone with access, so deep nesting is never handed to the parser).
std::string json_list(const std::vector<std::string>& items);
std::vector<std::string> parse_list(const std::string& text);

// What FindingStore asks of a database. Every call may throw core::Error saying what failed and
// what to do. Calls come one at a time (FindingStore holds a lock).
class FindingBackend {
 public:
  virtual ~FindingBackend() = default;

  virtual std::int64_t record_run(const CheckedRun& run) = 0;
  virtual std::vector<RunRecord> runs(const RunFilter& filter) const = 0;
  virtual std::optional<RunRecord> run(std::int64_t run_id) const = 0;
  virtual void for_each_finding(std::int64_t run_id, const std::function<void(const StoredFinding&)>& visit) const = 0;
  virtual RunDiff diff_runs(std::int64_t old_run, std::int64_t new_run) const = 0;
  // False when there is no such finding.
  virtual bool set_status(std::int64_t finding_id, std::string_view status) = 0;

  virtual std::int64_t begin_assessment(const AssessmentRecord& record, std::int64_t started_ms) = 0;
  // False when there is no such assessment.
  virtual bool update_assessment(std::int64_t id, std::string_view status, std::string_view summary_json,
                                 const std::string& finished_at) = 0;
  virtual std::optional<AssessmentRecord> assessment(std::int64_t id) const = 0;
  virtual std::vector<AssessmentRecord> assessments(std::size_t limit) const = 0;
  // `run` is set for a done job, null for a failed one. See FindingStore::record_job.
  virtual std::pair<std::int64_t, bool> record_job(const CheckedJob& job, const CheckedRun* run) = 0;
  virtual std::vector<JobRecord> jobs(std::int64_t assessment_id) const = 0;
  virtual std::optional<JobRecord> latest_done_job(std::string_view job_key) const = 0;
};

// Opens (creating and migrating unless read-only) an SQLite store.
std::unique_ptr<FindingBackend> open_sqlite_store(const std::filesystem::path& file, const FindingStoreOptions& options);
// Connects to a PostgreSQL store (creating and migrating its tables unless read-only).
std::unique_ptr<FindingBackend> open_postgres_store(const std::string& url, const FindingStoreOptions& options);

// Whether `location` names a PostgreSQL server rather than an SQLite file.
bool is_postgres_url(std::string_view location);
// The URL with the password (in the user part or a password= parameter) replaced by ***.
std::string redact_url(std::string_view url);
// Those passwords, as written and percent-decoded: what no message may repeat.
std::vector<std::string> url_secrets(std::string_view url);

}  // namespace aegis::store::backend
