// FindingStore: checks and completes what callers pass, serialises calls, and hands the work to the
// backend that the location names (store_backend.h): SQLite for a file, PostgreSQL for a URL.
#include "aegis/store/finding_store.h"

#include <algorithm>
#include <mutex>

#include "aegis/core/error.h"
#include "aegis/store/store_backend.h"

namespace aegis::store {

namespace {

namespace fs = std::filesystem;

constexpr std::array<std::string_view, 5> kStatuses = {kStatusOpen, kStatusAcknowledged, kStatusAcceptedRisk,
                                                       kStatusFalsePositive, kStatusFixed};
constexpr std::array<std::string_view, 4> kAssessmentStatuses = {kAssessmentRunning, kAssessmentFinished,
                                                                 kAssessmentInterrupted, kAssessmentFailed};

std::int64_t checked_time(const std::string& text, const std::string& what) {
  auto millis = backend::parse_rfc3339(text);
  if (!millis)
    throw core::Error(what + " '" + text + "' is not an RFC 3339 time", "write it like 2025-06-01T12:00:00Z");
  return *millis;
}

// Fills in the run's missing times and checks it: what both record_run and record_job store.
std::int64_t complete_run(RunRecord& run) {
  if (run.command.empty()) throw core::Error("a run needs the command that made it", "set RunRecord::command");
  if (run.started_at.empty()) run.started_at = backend::now_utc();
  if (run.finished_at.empty()) run.finished_at = backend::now_utc();
  const std::int64_t started_ms = checked_time(run.started_at, "the run's started_at");
  checked_time(run.finished_at, "the run's finished_at");
  return started_ms;
}

void check_assessment_status(std::string_view status) {
  if (std::find(kAssessmentStatuses.begin(), kAssessmentStatuses.end(), status) == kAssessmentStatuses.end())
    throw core::Error("unknown assessment status '" + std::string(status) + "'",
                      "use running, finished, interrupted or failed");
}

// Keys are compared as bytes by both databases and printed in logs: keep them plain.
bool is_plain_key(std::string_view key) {
  return !key.empty() && key.size() <= 256 && std::all_of(key.begin(), key.end(), [](char c) { return c > ' ' && c < 0x7f; });
}

void check_job_key(std::string_view key) {
  if (!is_plain_key(key))
    throw core::Error("the job key '" + std::string(key.substr(0, 80)) + "' is empty, longer than 256 characters or not printable ASCII",
                      "name the job by the hex digest of its inputs");
}

void require_location(const std::string& location) {
  // SQLite would open "" as a private temporary database: a store that forgets everything.
  if (location.empty())
    throw core::Error("no finding store was given", "pass --store with an SQLite file or a postgresql:// URL");
}

}  // namespace

bool is_finding_status(std::string_view status) {
  return std::find(kStatuses.begin(), kStatuses.end(), status) != kStatuses.end();
}

struct FindingStore::Impl {
  fs::path path;         // the SQLite file; empty for PostgreSQL
  std::string location;  // for messages, without a password
  FindingStoreOptions options;
  std::unique_ptr<backend::FindingBackend> db;
  // Calls from several threads are serialised: a connection runs one transaction at a time.
  // Recursive so that a for_each_finding visitor that calls back anyway cannot deadlock.
  mutable std::recursive_mutex mutex;

  void require_writable(const char* to_do) const {
    if (options.read_only)
      throw core::Error("the finding store " + location + " was opened read-only", std::string("open it for writing to ") + to_do);
  }
};

FindingStore::FindingStore(const fs::path& file, FindingStoreOptions options) : impl_(std::make_unique<Impl>()) {
  require_location(file.string());
  impl_->path = file;
  impl_->location = file.string();
  impl_->options = options;
  impl_->db = backend::open_sqlite_store(file, options);
}

FindingStore::FindingStore(const std::string& location, FindingStoreOptions options) : impl_(std::make_unique<Impl>()) {
  require_location(location);
  impl_->options = options;
  if (backend::is_postgres_url(location)) {
    impl_->location = backend::redact_url(location);
    impl_->db = backend::open_postgres_store(location, options);
  } else {
    impl_->path = location;
    impl_->location = location;
    impl_->db = backend::open_sqlite_store(impl_->path, options);
  }
}

FindingStore::FindingStore(const char* location, FindingStoreOptions options)
    : FindingStore(std::string(location ? location : ""), options) {}

FindingStore::~FindingStore() = default;

const fs::path& FindingStore::file() const { return impl_->path; }

std::string FindingStore::location() const { return impl_->location; }

std::int64_t FindingStore::record_run(RunRecord run, const std::vector<core::Finding>& findings) {
  std::size_t next = 0;
  return record_run_streamed(std::move(run),
                             [&]() -> const core::Finding* { return next < findings.size() ? &findings[next++] : nullptr; });
}

std::int64_t FindingStore::record_run_streamed(RunRecord run, const std::function<const core::Finding*()>& next) {
  impl_->require_writable("record a run");
  const std::int64_t started_ms = complete_run(run);
  std::lock_guard lock(impl_->mutex);
  return impl_->db->record_run({run, started_ms, next});
}

std::vector<RunRecord> FindingStore::runs(const RunFilter& filter) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->db->runs(filter);
}

std::optional<RunRecord> FindingStore::run(std::int64_t run_id) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->db->run(run_id);
}

std::optional<RunRecord> FindingStore::latest_run(std::string_view command, std::string_view asset) const {
  RunFilter filter;
  filter.command = std::string(command);
  filter.asset = std::string(asset);
  filter.limit = 1;
  auto found = runs(filter);
  if (found.empty()) return std::nullopt;
  return std::move(found.front());
}

void FindingStore::for_each_finding(std::int64_t run_id, const std::function<void(const StoredFinding&)>& visit) const {
  std::lock_guard lock(impl_->mutex);
  impl_->db->for_each_finding(run_id, visit);
}

std::vector<StoredFinding> FindingStore::findings(std::int64_t run_id) const {
  std::vector<StoredFinding> out;
  for_each_finding(run_id, [&out](const StoredFinding& finding) { out.push_back(finding); });
  return out;
}

std::vector<StoredFinding> FindingStore::latest_findings(std::string_view command, std::string_view asset) const {
  // Runs are immutable once committed, so reading the run and then its findings needs no lock.
  auto latest = latest_run(command, asset);
  if (!latest) return {};
  return findings(latest->id);
}

RunDiff FindingStore::diff_runs(std::int64_t old_run, std::int64_t new_run) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->db->diff_runs(old_run, new_run);
}

void FindingStore::set_status(std::int64_t finding_id, std::string_view status) {
  impl_->require_writable("triage findings");
  if (!is_finding_status(status))
    throw core::Error("unknown finding status '" + std::string(status) + "'",
                      "use open, acknowledged, accepted-risk, false-positive or fixed");
  std::lock_guard lock(impl_->mutex);
  if (!impl_->db->set_status(finding_id, status))
    throw core::Error("finding store " + impl_->location + " has no finding " + std::to_string(finding_id),
                      "take the id from the run's findings");
}

std::int64_t FindingStore::begin_assessment(AssessmentRecord record) {
  impl_->require_writable("record an assessment");
  if (record.status.empty()) record.status = kAssessmentRunning;
  check_assessment_status(record.status);
  if (record.started_at.empty()) record.started_at = backend::now_utc();
  const std::int64_t started_ms = checked_time(record.started_at, "the assessment's started_at");
  if (!record.finished_at.empty()) checked_time(record.finished_at, "the assessment's finished_at");
  std::lock_guard lock(impl_->mutex);
  return impl_->db->begin_assessment(record, started_ms);
}

void FindingStore::update_assessment(std::int64_t id, std::string_view status, std::string_view summary_json,
                                     std::string_view finished_at) {
  impl_->require_writable("record an assessment");
  check_assessment_status(status);
  std::string finished = finished_at.empty() ? backend::now_utc() : std::string(finished_at);
  checked_time(finished, "the assessment's finished_at");
  std::lock_guard lock(impl_->mutex);
  if (!impl_->db->update_assessment(id, status, summary_json, finished))
    throw core::Error("finding store " + impl_->location + " has no assessment " + std::to_string(id),
                      "pass the id that begin_assessment returned");
}

std::optional<AssessmentRecord> FindingStore::assessment(std::int64_t id) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->db->assessment(id);
}

std::vector<AssessmentRecord> FindingStore::assessments(std::size_t limit) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->db->assessments(limit);
}

std::pair<std::int64_t, bool> FindingStore::record_job(const JobRecord& job, RunRecord run,
                                                       const std::vector<core::Finding>& findings) {
  impl_->require_writable("record a job");
  check_job_key(job.job_key);
  if (job.state != kJobDone && job.state != kJobFailed)
    throw core::Error("unknown job state '" + job.state + "'", "record a job as done or failed");
  JobRecord completed = job;
  if (completed.finished_at.empty()) completed.finished_at = backend::now_utc();
  const std::int64_t finished_ms = checked_time(completed.finished_at, "the job's finished_at");
  if (job.state == kJobFailed) completed.run_id = 0;
  std::lock_guard lock(impl_->mutex);
  if (job.state == kJobFailed) return impl_->db->record_job({completed, finished_ms}, nullptr);
  const std::int64_t started_ms = complete_run(run);
  std::size_t next_index = 0;
  const backend::FindingSource next = [&]() -> const core::Finding* {
    return next_index < findings.size() ? &findings[next_index++] : nullptr;
  };
  const backend::CheckedRun checked{run, started_ms, next};
  return impl_->db->record_job({completed, finished_ms}, &checked);
}

std::vector<JobRecord> FindingStore::jobs(std::int64_t assessment_id) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->db->jobs(assessment_id);
}

std::optional<JobRecord> FindingStore::latest_done_job(std::string_view job_key) const {
  if (!is_plain_key(job_key)) return std::nullopt;  // never recorded
  std::lock_guard lock(impl_->mutex);
  return impl_->db->latest_done_job(job_key);
}

}  // namespace aegis::store
