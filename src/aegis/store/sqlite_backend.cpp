// The finding store in an SQLite file (the embedded default).
//
// Layout. finding_run holds one row per run; finding_run_input its inputs (a table, not a JSON array,
// because paths need not be UTF-8); finding one row per finding with the location split into
// columns, severity as its name and the ATLAS / NIST AI RMF references as JSON arrays. started_ms
// (milliseconds since the epoch, parsed from started_at) orders runs: RFC 3339 text written with
// different precisions or offsets does not sort as the instants do. assessment and assessment_job
// (schema version 2) hold the assessments and how each of their jobs ended.
//
// Concurrency. WAL mode: readers never wait for a writer. Every write is one BEGIN IMMEDIATE
// transaction, which takes the write lock before reading anything, so two processes writing at
// once queue on the busy timeout instead of failing with a lock upgrade deadlock; the findings of a
// run appear together or not at all, and record_job's "is this job done already?" is answered under
// the same lock that writes the answer, which makes it exactly-once across processes.
#include <sqlite3.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "aegis/core/error.h"
#include "aegis/store/sqlite_statement.h"
#include "aegis/store/store_backend.h"

namespace aegis::store::backend {

namespace {

namespace fs = std::filesystem;

// Tables an Aegis store may hold before the findings arrive (lineage graph, audit log): a file with
// any of them is ours; a non-empty database with none of them belongs to someone else.
constexpr std::array<std::string_view, 11> kAegisTables = {
    "aegis_schema", "finding_run", "finding",   "artifact",         "step",          "step_artifact",
    "audit_log",    "audit_meta",  "audit_checkpoints", "assessment", "assessment_job"};

using sqlite::kStoreHint;
using sqlite::Statement;
using sqlite::Transaction;
using sqlite::exec;
using sqlite::fail;

// The findings component's schema, one entry per version. Version 1 is the schema Aegis wrote
// before migrations existed: IF NOT EXISTS lets it run over such a store.
const std::vector<Migration>& migrations() {
  static const std::vector<Migration> kMigrations = {
      {1,
       {"CREATE TABLE IF NOT EXISTS finding_run (id INTEGER PRIMARY KEY, command TEXT NOT NULL, asset TEXT NOT NULL, "
        "started_at TEXT NOT NULL, started_ms INTEGER NOT NULL, finished_at TEXT NOT NULL, aegis_version TEXT NOT NULL, "
        "exit_code INTEGER NOT NULL, summary_json TEXT NOT NULL, info_count INTEGER NOT NULL, low_count INTEGER NOT NULL, "
        "medium_count INTEGER NOT NULL, high_count INTEGER NOT NULL, critical_count INTEGER NOT NULL)",
        "CREATE INDEX IF NOT EXISTS finding_run_by_asset ON finding_run(asset, command, started_ms)",
        "CREATE TABLE IF NOT EXISTS finding_run_input (run_id INTEGER NOT NULL REFERENCES finding_run(id) ON DELETE CASCADE, "
        "position INTEGER NOT NULL, input TEXT NOT NULL, PRIMARY KEY (run_id, position)) WITHOUT ROWID",
        "CREATE TABLE IF NOT EXISTS finding (id INTEGER PRIMARY KEY, "
        "run_id INTEGER NOT NULL REFERENCES finding_run(id) ON DELETE CASCADE, fingerprint TEXT NOT NULL, "
        "rule_id TEXT NOT NULL, severity TEXT NOT NULL CHECK (severity IN ('info', 'low', 'medium', 'high', 'critical')), "
        "title TEXT NOT NULL, file TEXT NOT NULL, member TEXT NOT NULL, byte_offset INTEGER, row_number INTEGER, "
        "line INTEGER, column_name TEXT NOT NULL, evidence TEXT NOT NULL, atlas TEXT NOT NULL, nist_ai_rmf TEXT NOT NULL, "
        "remediation TEXT NOT NULL, properties_json TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'open')",
        "CREATE INDEX IF NOT EXISTS finding_by_run ON finding(run_id)"}},
      {2,
       {"CREATE TABLE assessment (id INTEGER PRIMARY KEY, inventory TEXT NOT NULL, started_at TEXT NOT NULL, "
        "started_ms INTEGER NOT NULL, finished_at TEXT NOT NULL, "
        "status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'interrupted', 'failed')), summary_json TEXT NOT NULL)",
        "CREATE INDEX assessment_by_start ON assessment(started_ms)",
        // One row per (assessment, job key): the primary key is what makes a job's record unique.
        // recorded_order says in which order the rows' current contents were written.
        "CREATE TABLE assessment_job (assessment_id INTEGER NOT NULL REFERENCES assessment(id) ON DELETE CASCADE, "
        "job_key TEXT NOT NULL, asset TEXT NOT NULL, check_name TEXT NOT NULL, "
        "state TEXT NOT NULL CHECK (state IN ('done', 'failed')), run_id INTEGER REFERENCES finding_run(id), "
        "error TEXT NOT NULL, worker TEXT NOT NULL, finished_at TEXT NOT NULL, finished_ms INTEGER NOT NULL, "
        "recorded_order INTEGER NOT NULL, PRIMARY KEY (assessment_id, job_key))",
        "CREATE INDEX assessment_job_in_order ON assessment_job(assessment_id, recorded_order)",
        "CREATE INDEX assessment_job_done_by_key ON assessment_job(job_key, finished_ms) WHERE state = 'done'"}},
  };
  return kMigrations;
}

constexpr const char* kRunColumns =
    "r.id, r.command, r.asset, r.started_at, r.finished_at, r.aegis_version, r.exit_code, r.summary_json, "
    "r.info_count, r.low_count, r.medium_count, r.high_count, r.critical_count";

constexpr const char* kFindingColumns =
    "id, run_id, fingerprint, rule_id, severity, title, file, member, byte_offset, row_number, line, column_name, "
    "evidence, atlas, nist_ai_rmf, remediation, properties_json, status";

constexpr const char* kJobColumns =
    "assessment_id, job_key, asset, check_name, state, run_id, error, worker, finished_at";

RunRecord read_run(const Statement& row) {
  RunRecord run;
  run.id = row.integer(0);
  run.command = row.text(1);
  run.asset = row.text(2);
  run.started_at = row.text(3);
  run.finished_at = row.text(4);
  run.aegis_version = row.text(5);
  run.exit_code = static_cast<int>(row.integer(6));
  run.summary_json = row.text(7);
  for (int i = 0; i < 5; ++i)
    run.counts[static_cast<std::size_t>(i)] = static_cast<std::size_t>(std::max<std::int64_t>(0, row.integer(8 + i)));
  return run;
}

StoredFinding read_finding(const Statement& row, const std::string& file) {
  StoredFinding stored;
  stored.id = row.integer(0);
  stored.run_id = row.integer(1);
  stored.fingerprint = row.text(2);
  core::Finding& finding = stored.finding;
  finding.rule_id = row.text(3);
  const std::string severity = row.text(4);
  auto parsed = core::parse_severity(severity);
  if (!parsed)
    throw core::Error("finding store " + file + ": finding " + std::to_string(stored.id) + " has the unknown severity '" +
                          severity + "'",
                      "the store was edited by hand or is damaged; " + std::string(kStoreHint));
  finding.severity = *parsed;
  finding.title = row.text(5);
  finding.location.file = row.text(6);
  finding.location.member = row.text(7);
  finding.location.offset = row.optional_u64(8);
  finding.location.row = row.optional_u64(9);
  finding.location.line = row.optional_u64(10);
  finding.location.column = row.text(11);
  finding.evidence = row.text(12);
  finding.atlas = parse_list(row.text(13));
  finding.nist_ai_rmf = parse_list(row.text(14));
  finding.remediation = row.text(15);
  finding.properties_json = row.text(16);
  stored.status = row.text(17);
  return stored;
}

JobRecord read_job(const Statement& row) {
  JobRecord job;
  job.assessment_id = row.integer(0);
  job.job_key = row.text(1);
  job.asset = row.text(2);
  job.check = row.text(3);
  job.state = row.text(4);
  job.run_id = row.integer(5);  // NULL reads as 0
  job.error = row.text(6);
  job.worker = row.text(7);
  job.finished_at = row.text(8);
  return job;
}

class SqliteBackend final : public FindingBackend {
 public:
  SqliteBackend(const fs::path& path, const FindingStoreOptions& options)
      : path_(path), file_(path.string()), options_(options) {
    try {
      open();
    } catch (...) {
      sqlite3_close(db_);  // the destructor does not run for a constructor that throws
      throw;
    }
  }
  ~SqliteBackend() override { sqlite3_close(db_); }

  std::int64_t record_run(const CheckedRun& run) override {
    Transaction tx(db_, file_);
    const std::int64_t run_id = insert_run(run);
    tx.commit();
    return run_id;
  }
  std::vector<RunRecord> runs(const RunFilter& filter) const override;
  std::optional<RunRecord> run(std::int64_t run_id) const override;
  void for_each_finding(std::int64_t run_id, const std::function<void(const StoredFinding&)>& visit) const override;
  RunDiff diff_runs(std::int64_t old_run, std::int64_t new_run) const override;
  bool set_status(std::int64_t finding_id, std::string_view status) override;

  std::int64_t begin_assessment(const AssessmentRecord& record, std::int64_t started_ms) override;
  bool update_assessment(std::int64_t id, std::string_view status, std::string_view summary_json,
                         const std::string& finished_at) override;
  std::optional<AssessmentRecord> assessment(std::int64_t id) const override;
  std::vector<AssessmentRecord> assessments(std::size_t limit) const override;
  std::pair<std::int64_t, bool> record_job(const CheckedJob& job, const CheckedRun* run) override;
  std::vector<JobRecord> jobs(std::int64_t assessment_id) const override;
  std::optional<JobRecord> latest_done_job(std::string_view job_key) const override;

 private:
  struct SchemaState {
    std::int64_t version = 0;  // 0: no findings tables yet
    bool has_run_table = false;
  };
  void open();
  void switch_to_wal();
  SchemaState check_schema();
  void migrate();
  std::int64_t insert_run(const CheckedRun& run);
  std::vector<std::string> inputs_of(std::int64_t run_id) const;
  // A store opened read-only at version 1 has no assessment tables: it has no assessments either.
  bool has_assessments() const { return schema_version_ >= 2; }

  fs::path path_;
  std::string file_;  // path as text, for messages
  FindingStoreOptions options_;
  sqlite3* db_ = nullptr;
  std::int64_t schema_version_ = 0;
};

static_assert(kFindingSchemaVersion == 2, "add the new version's migration to both backends");

void SqliteBackend::open() {
  std::error_code ec;
  if (options_.read_only) {
    if (!fs::is_regular_file(path_, ec))
      throw core::Error("no finding store at " + file_, "pass the file that an earlier run wrote with --store");
  } else if (path_.has_parent_path() && !fs::is_directory(path_.parent_path(), ec)) {
    fs::create_directories(path_.parent_path(), ec);
    if (ec)
      throw core::Error("cannot create the folder " + path_.parent_path().string() + " for the finding store " + file_ + ": " +
                            ec.message(),
                        "make the folder writable, or " + std::string(kStoreHint));
  }
  const int flags = (options_.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                    SQLITE_OPEN_FULLMUTEX;
  if (int rc = sqlite3_open_v2(file_.c_str(), &db_, flags, nullptr); rc != SQLITE_OK) {
    if (!db_) throw core::Error("cannot open the finding store " + file_ + ": out of memory");
    const bool exists = fs::exists(path_, ec);
    const std::string folder = fs::absolute(path_, ec).parent_path().string();
    std::string why = sqlite::why(db_);
    if (!exists) {
      // SQLite's errno is that of its last attempt (a read-only retry), not of the create: ask the folder.
      why = sqlite3_errmsg(db_);
      if (::access(folder.c_str(), W_OK) != 0) why = "the folder " + folder + " is not writable (" + std::strerror(errno) + ")";
    }
    throw core::Error(std::string(exists ? "cannot open the finding store " : "cannot create the finding store ") + file_ + ": " +
                          why,
                      exists ? "make the file and its folder writable, or " + std::string(kStoreHint)
                             : "make the folder " + folder + " writable, or " + std::string(kStoreHint));
  }
  sqlite3_extended_result_codes(db_, 1);
  sqlite3_busy_timeout(db_, static_cast<int>(std::clamp<std::int64_t>(options_.busy_timeout.count(), 0, 1 << 30)));
  // The first statement that reads the file: a file that is not SQLite fails here with NOTADB.
  {
    Statement probe(db_, file_, "SELECT count(*) FROM sqlite_master");
    probe.step("reading its tables");
  }
  // Before anything is written (even the switch to WAL): another application's database is left as
  // it was found.
  const SchemaState state = check_schema();
  schema_version_ = state.version;
  if (options_.read_only) {
    if (state.version == 0 || !state.has_run_table)
      throw core::Error(file_ + " holds no findings yet", "run a command with --store " + file_ + " first");
  } else {
    if (sqlite3_db_readonly(db_, "main") == 1)
      throw core::Error("the finding store " + file_ + " is read-only", "make it writable, or " + std::string(kStoreHint));
    switch_to_wal();
    // With WAL, NORMAL loses no committed run when a process dies; only an OS crash can take the
    // last ones. A million-finding run grows the -wal file past 100 MB: give that space back after.
    exec(db_, file_, "PRAGMA synchronous = NORMAL", "setting synchronous mode");
    exec(db_, file_, "PRAGMA journal_size_limit = 67108864", "limiting the write-ahead log");
    // Migrated under the write lock; an up-to-date store is opened without taking it, so that
    // opening never waits for another process's large run.
    if (state.version < kFindingSchemaVersion) migrate();
  }
  exec(db_, file_, "PRAGMA foreign_keys = ON", "enabling foreign keys");
}

// Switching a new file to WAL needs an exclusive lock. When several processes open a new store at
// once, SQLite answers BUSY at once, without calling the busy handler, to the ones whose wait could
// deadlock: they try again until the busy timeout.
void SqliteBackend::switch_to_wal() {
  const auto deadline = std::chrono::steady_clock::now() + options_.busy_timeout;
  for (;;) {
    int rc = SQLITE_OK;
    std::string mode;
    {
      sqlite3_stmt* stmt = nullptr;
      rc = sqlite3_prepare_v2(db_, "PRAGMA journal_mode = WAL", -1, &stmt, nullptr);
      if (rc == SQLITE_OK) {
        rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
          const unsigned char* text = sqlite3_column_text(stmt, 0);
          mode = text ? reinterpret_cast<const char*>(text) : "";
        }
      }
      sqlite3_finalize(stmt);
    }
    if (rc == SQLITE_ROW) {
      if (mode != "wal")
        throw core::Error("the finding store " + file_ + " cannot use write-ahead logging",
                          "put the store on a local file system, or " + std::string(kStoreHint));
      return;
    }
    if ((rc & 0xff) != SQLITE_BUSY || std::chrono::steady_clock::now() >= deadline)
      fail(db_, rc, file_, "switching to write-ahead logging");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

// Refuses a newer schema, and a database that belongs to another application.
SqliteBackend::SchemaState SqliteBackend::check_schema() {
  bool has_schema_table = false, any_aegis = false;
  SchemaState state;
  std::string foreign;
  {
    Statement tables(db_, file_, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name");
    while (tables.step("reading its tables")) {
      const std::string name = tables.text(0);
      const bool ours = std::find(kAegisTables.begin(), kAegisTables.end(), name) != kAegisTables.end();
      any_aegis = any_aegis || ours;
      if (!ours && foreign.empty()) foreign = name;
      if (name == "aegis_schema") has_schema_table = true;
      if (name == "finding_run") state.has_run_table = true;
    }
  }
  if (!any_aegis && !foreign.empty())
    throw core::Error(file_ + " is an SQLite database of another application (it holds a table '" + foreign +
                          "'), not an Aegis store",
                      kStoreHint);
  if (has_schema_table) {
    Statement query(db_, file_, "SELECT version FROM aegis_schema WHERE component = ?");
    query.bind(1, kFindingComponent);
    if (query.step("reading the schema version")) state.version = query.integer(0);
  }
  if (state.version > kFindingSchemaVersion)
    throw core::Error("the finding store " + file_ + " was written by a newer Aegis (findings schema " +
                          std::to_string(state.version) + ", this Aegis reads " + std::to_string(kFindingSchemaVersion) + ")",
                      "upgrade Aegis, or " + std::string(kStoreHint));
  return state;
}

// One transaction per migration, each under the write lock (BEGIN IMMEDIATE), the version read again
// inside it: of several processes opening an old store at once, one migrates and the others find
// the work done.
void SqliteBackend::migrate() {
  for (;;) {
    Transaction tx(db_, file_);
    const std::int64_t version = check_schema().version;
    if (version >= kFindingSchemaVersion) {
      schema_version_ = version;
      return;  // rolled back: nothing was written
    }
    const Migration& step = migrations().at(static_cast<std::size_t>(version));
    exec(db_, file_, "CREATE TABLE IF NOT EXISTS aegis_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)",
         "creating tables");
    for (std::string_view sql : step.statements) exec(db_, file_, std::string(sql).c_str(), "migrating the schema");
    Statement set(db_, file_, "INSERT OR REPLACE INTO aegis_schema (component, version) VALUES (?, ?)");
    set.bind(1, kFindingComponent).bind(2, std::int64_t{step.version});
    set.step("writing the schema version");
    tx.commit();
    schema_version_ = step.version;
  }
}

// Inside the caller's transaction.
std::int64_t SqliteBackend::insert_run(const CheckedRun& checked) {
  const RunRecord& run = checked.run;
  Statement insert_run(db_, file_,
                       "INSERT INTO finding_run (command, asset, started_at, started_ms, finished_at, aegis_version, "
                       "exit_code, summary_json, info_count, low_count, medium_count, high_count, critical_count) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, 0)");
  insert_run.bind(1, run.command).bind(2, run.asset).bind(3, run.started_at).bind(4, checked.started_ms)
      .bind(5, run.finished_at).bind(6, run.aegis_version).bind(7, std::int64_t{run.exit_code}).bind(8, run.summary_json);
  insert_run.step("recording the run");
  const std::int64_t run_id = sqlite3_last_insert_rowid(db_);

  Statement insert_input(db_, file_, "INSERT INTO finding_run_input (run_id, position, input) VALUES (?, ?, ?)");
  for (std::size_t i = 0; i < run.inputs.size(); ++i) {
    insert_input.reset();
    insert_input.bind(1, run_id).bind(2, static_cast<std::int64_t>(i)).bind(3, run.inputs[i]);
    insert_input.step("recording the run's inputs");
  }

  // One statement, reset per row, inside the one transaction: a million findings cost a million
  // steps of a compiled statement and a single commit.
  Statement insert_finding(db_, file_,
                           "INSERT INTO finding (run_id, fingerprint, rule_id, severity, title, file, member, byte_offset, "
                           "row_number, line, column_name, evidence, atlas, nist_ai_rmf, remediation, properties_json) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  FindingEncoder encoder;
  while (const core::Finding* finding = checked.next()) {
    const FindingEncoder::Columns& columns = encoder.encode(*finding);  // a bad severity rolls the run back
    insert_finding.reset();
    insert_finding.bind(1, run_id)
        .bind(2, columns.fingerprint)
        .bind(3, finding->rule_id)
        .bind(4, columns.severity)
        .bind(5, finding->title)
        .bind(6, finding->location.file)
        .bind(7, finding->location.member)
        .bind(8, finding->location.offset)
        .bind(9, finding->location.row)
        .bind(10, finding->location.line)
        .bind(11, finding->location.column)
        .bind(12, finding->evidence)
        .bind(13, columns.atlas)
        .bind(14, columns.nist_ai_rmf)
        .bind(15, finding->remediation)
        .bind(16, finding->properties_json);
    insert_finding.step("recording a finding");
  }
  Statement set_counts(db_, file_,
                       "UPDATE finding_run SET info_count = ?, low_count = ?, medium_count = ?, high_count = ?, "
                       "critical_count = ? WHERE id = ?");
  for (std::size_t i = 0; i < encoder.counts().size(); ++i) set_counts.bind(static_cast<int>(i) + 1, encoder.counts()[i]);
  set_counts.bind(6, run_id);
  set_counts.step("recording the run's counts");
  return run_id;
}

std::vector<std::string> SqliteBackend::inputs_of(std::int64_t run_id) const {
  std::vector<std::string> inputs;
  Statement query(db_, file_, "SELECT input FROM finding_run_input WHERE run_id = ? ORDER BY position");
  query.bind(1, run_id);
  while (query.step("reading a run's inputs")) inputs.push_back(query.text(0));
  return inputs;
}

std::vector<RunRecord> SqliteBackend::runs(const RunFilter& filter) const {
  std::string sql = std::string("SELECT ") + kRunColumns + " FROM finding_run r WHERE 1";
  if (filter.command) sql += " AND r.command = :command";
  if (filter.asset) sql += " AND r.asset = :asset";
  if (filter.latest_per_asset)
    sql += " AND NOT EXISTS (SELECT 1 FROM finding_run n WHERE n.asset = r.asset AND n.command = r.command AND "
           "(n.started_ms > r.started_ms OR (n.started_ms = r.started_ms AND n.id > r.id)))";
  sql += " ORDER BY r.started_ms DESC, r.id DESC LIMIT :limit";

  Statement query(db_, file_, sql);
  // Named parameters keep their numbers in order of first appearance.
  int index = 1;
  if (filter.command) query.bind(index++, *filter.command);
  if (filter.asset) query.bind(index++, *filter.asset);
  query.bind(index, filter.limit == 0 ? std::int64_t{-1}
                                      : static_cast<std::int64_t>(std::min<std::size_t>(filter.limit, INT64_MAX)));
  std::vector<RunRecord> runs;
  while (query.step("listing runs")) runs.push_back(read_run(query));
  for (auto& run : runs) run.inputs = inputs_of(run.id);
  return runs;
}

std::optional<RunRecord> SqliteBackend::run(std::int64_t run_id) const {
  Statement query(db_, file_, std::string("SELECT ") + kRunColumns + " FROM finding_run r WHERE r.id = ?");
  query.bind(1, run_id);
  if (!query.step("reading a run")) return std::nullopt;
  RunRecord run = read_run(query);
  run.inputs = inputs_of(run.id);
  return run;
}

void SqliteBackend::for_each_finding(std::int64_t run_id, const std::function<void(const StoredFinding&)>& visit) const {
  Statement query(db_, file_, std::string("SELECT ") + kFindingColumns + " FROM finding WHERE run_id = ? ORDER BY id");
  query.bind(1, run_id);
  while (query.step("reading findings")) visit(read_finding(query, file_));
}

// Both runs' fingerprints come sorted: one merge pass, and memory for the answer only.
RunDiff SqliteBackend::diff_runs(std::int64_t old_run, std::int64_t new_run) const {
  // One read transaction: both cursors see the same snapshot even while other processes write.
  exec(db_, file_, "SAVEPOINT finding_diff", "starting a read");
  struct Release {
    sqlite3* db;
    ~Release() { sqlite3_exec(db, "RELEASE finding_diff", nullptr, nullptr, nullptr); }
  } release{db_};
  for (std::int64_t id : {old_run, new_run}) {
    Statement exists(db_, file_, "SELECT 1 FROM finding_run WHERE id = ?");
    exists.bind(1, id);
    if (!exists.step("reading a run"))
      throw core::Error("finding store " + file_ + " has no run " + std::to_string(id), "list the runs to pick existing ids");
  }
  const std::string sql = "SELECT DISTINCT fingerprint FROM finding WHERE run_id = ? ORDER BY fingerprint";
  Statement old_rows(db_, file_, sql), new_rows(db_, file_, sql);
  old_rows.bind(1, old_run);
  new_rows.bind(1, new_run);
  auto next = [](Statement& rows, std::string& value) {
    if (!rows.step("reading fingerprints")) return false;
    value = rows.text(0);
    return true;
  };
  RunDiff diff;
  std::string old_fp, new_fp;
  bool has_old = next(old_rows, old_fp), has_new = next(new_rows, new_fp);
  while (has_old || has_new) {
    if (has_old && (!has_new || old_fp < new_fp)) {
      diff.fixed.push_back(old_fp);
      has_old = next(old_rows, old_fp);
    } else if (has_new && (!has_old || new_fp < old_fp)) {
      diff.added.push_back(new_fp);
      has_new = next(new_rows, new_fp);
    } else {
      diff.persisting.push_back(new_fp);
      has_old = next(old_rows, old_fp);
      has_new = next(new_rows, new_fp);
    }
  }
  return diff;
}

bool SqliteBackend::set_status(std::int64_t finding_id, std::string_view status) {
  Statement update(db_, file_, "UPDATE finding SET status = ? WHERE id = ?");
  update.bind(1, status).bind(2, finding_id);
  update.step("setting a finding's status");
  return sqlite3_changes(db_) > 0;
}

std::int64_t SqliteBackend::begin_assessment(const AssessmentRecord& record, std::int64_t started_ms) {
  Statement insert(db_, file_,
                   "INSERT INTO assessment (inventory, started_at, started_ms, finished_at, status, summary_json) "
                   "VALUES (?, ?, ?, ?, ?, ?)");
  insert.bind(1, record.inventory).bind(2, record.started_at).bind(3, started_ms).bind(4, record.finished_at)
      .bind(5, record.status).bind(6, record.summary_json);
  insert.step("recording an assessment");
  return sqlite3_last_insert_rowid(db_);
}

bool SqliteBackend::update_assessment(std::int64_t id, std::string_view status, std::string_view summary_json,
                                      const std::string& finished_at) {
  Statement update(db_, file_, "UPDATE assessment SET status = ?, summary_json = ?, finished_at = ? WHERE id = ?");
  update.bind(1, status).bind(2, summary_json).bind(3, finished_at).bind(4, id);
  update.step("updating an assessment");
  return sqlite3_changes(db_) > 0;
}

std::optional<AssessmentRecord> SqliteBackend::assessment(std::int64_t id) const {
  if (!has_assessments()) return std::nullopt;
  Statement query(db_, file_,
                  "SELECT id, inventory, started_at, finished_at, status, summary_json FROM assessment WHERE id = ?");
  query.bind(1, id);
  if (!query.step("reading an assessment")) return std::nullopt;
  AssessmentRecord record;
  record.id = query.integer(0);
  record.inventory = query.text(1);
  record.started_at = query.text(2);
  record.finished_at = query.text(3);
  record.status = query.text(4);
  record.summary_json = query.text(5);
  return record;
}

std::vector<AssessmentRecord> SqliteBackend::assessments(std::size_t limit) const {
  std::vector<AssessmentRecord> out;
  if (!has_assessments()) return out;
  Statement query(db_, file_,
                  "SELECT id, inventory, started_at, finished_at, status FROM assessment "
                  "ORDER BY started_ms DESC, id DESC LIMIT ?");
  query.bind(1, limit == 0 ? std::int64_t{-1} : static_cast<std::int64_t>(std::min<std::size_t>(limit, INT64_MAX)));
  while (query.step("listing assessments")) {
    AssessmentRecord record;
    record.id = query.integer(0);
    record.inventory = query.text(1);
    record.started_at = query.text(2);
    record.finished_at = query.text(3);
    record.status = query.text(4);
    out.push_back(std::move(record));
  }
  return out;
}

std::pair<std::int64_t, bool> SqliteBackend::record_job(const CheckedJob& checked, const CheckedRun* run) {
  const JobRecord& job = checked.job;
  // The write lock is taken before the question is asked: no other process can record this job
  // between the answer and the write.
  Transaction tx(db_, file_);
  {
    Statement exists(db_, file_, "SELECT 1 FROM assessment WHERE id = ?");
    exists.bind(1, job.assessment_id);
    if (!exists.step("reading an assessment"))
      throw core::Error("finding store " + file_ + " has no assessment " + std::to_string(job.assessment_id),
                        "begin the assessment before recording its jobs");
  }
  {
    Statement existing(db_, file_, "SELECT run_id FROM assessment_job WHERE assessment_id = ? AND job_key = ? AND state = 'done'");
    existing.bind(1, job.assessment_id).bind(2, job.job_key);
    if (existing.step("reading a job")) return {existing.integer(0), false};  // rolled back: nothing written
  }
  const std::int64_t run_id = run ? insert_run(*run) : 0;
  Statement upsert(db_, file_,
                   "INSERT OR REPLACE INTO assessment_job (assessment_id, job_key, asset, check_name, state, run_id, error, "
                   "worker, finished_at, finished_ms, recorded_order) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, "
                   "(SELECT COALESCE(MAX(recorded_order), 0) + 1 FROM assessment_job))");
  upsert.bind(1, job.assessment_id).bind(2, job.job_key).bind(3, job.asset).bind(4, job.check).bind(5, job.state);
  if (run) upsert.bind(6, run_id);
  else upsert.bind_null(6);
  upsert.bind(7, job.error).bind(8, job.worker).bind(9, job.finished_at).bind(10, checked.finished_ms);
  upsert.step("recording a job");
  tx.commit();
  return {run_id, true};
}

std::vector<JobRecord> SqliteBackend::jobs(std::int64_t assessment_id) const {
  std::vector<JobRecord> out;
  if (!has_assessments()) return out;
  Statement query(db_, file_,
                  std::string("SELECT ") + kJobColumns + " FROM assessment_job WHERE assessment_id = ? ORDER BY recorded_order");
  query.bind(1, assessment_id);
  while (query.step("listing jobs")) out.push_back(read_job(query));
  return out;
}

std::optional<JobRecord> SqliteBackend::latest_done_job(std::string_view job_key) const {
  if (!has_assessments()) return std::nullopt;
  Statement query(db_, file_,
                  std::string("SELECT ") + kJobColumns +
                      " FROM assessment_job WHERE job_key = ? AND state = 'done' "
                      "ORDER BY finished_ms DESC, recorded_order DESC LIMIT 1");
  query.bind(1, job_key);
  if (!query.step("reading a job")) return std::nullopt;
  return read_job(query);
}

}  // namespace

std::unique_ptr<FindingBackend> open_sqlite_store(const fs::path& file, const FindingStoreOptions& options) {
  return std::make_unique<SqliteBackend>(file, options);
}

}  // namespace aegis::store::backend
