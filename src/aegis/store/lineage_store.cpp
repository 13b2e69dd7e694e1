#include "aegis/store/lineage_store.h"

#include <sqlite3.h>

#include <chrono>
#include <ctime>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "aegis/core/error.h"

namespace aegis::store {

namespace {

// A prepared statement that finalises itself.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK)
      throw core::Error(std::string("lineage store: ") + sqlite3_errmsg(db));
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement& bind(int index, const std::string& text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Statement& bind(int index, std::int64_t value) {
    sqlite3_bind_int64(stmt_, index, value);
    return *this;
  }
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw core::Error(std::string("lineage store: ") + sqlite3_errmsg(db_), "check that the store file is writable and intact");
  }
  std::string text(int column) const {
    const auto* p = sqlite3_column_text(stmt_, column);
    return p ? std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(sqlite3_column_bytes(stmt_, column))) : "";
  }
  std::int64_t integer(int column) const { return sqlite3_column_int64(stmt_, column); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

std::string now_utc() {
  std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

}  // namespace

std::filesystem::path LineageStore::default_path() {
  if (const char* env = std::getenv("AEGIS_STORE"); env && *env) return env;
  if (const char* xdg = std::getenv("XDG_DATA_HOME"); xdg && *xdg) return std::filesystem::path(xdg) / "aegis/aegis.db";
  const char* home = std::getenv("HOME");
  return std::filesystem::path(home && *home ? home : ".") / ".local/share/aegis/aegis.db";
}

LineageStore::LineageStore(const std::filesystem::path& file) {
  std::error_code ec;
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path(), ec);
  if (sqlite3_open_v2(file.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, nullptr) !=
      SQLITE_OK) {
    std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw core::Error("cannot open the lineage store " + file.string() + ": " + why,
                      "pass a writable file with --store, or set AEGIS_STORE");
  }
  sqlite3_busy_timeout(db_, 5000);
  exec("PRAGMA foreign_keys = ON");
  exec("CREATE TABLE IF NOT EXISTS artifact (id INTEGER PRIMARY KEY, path TEXT NOT NULL, subject_digest TEXT NOT NULL, "
       "resources TEXT NOT NULL, recorded_at TEXT NOT NULL)");
  exec("CREATE INDEX IF NOT EXISTS artifact_path ON artifact(path)");
  exec("CREATE TABLE IF NOT EXISTS step (id INTEGER PRIMARY KEY, name TEXT NOT NULL, actor TEXT NOT NULL, "
       "recorded_at TEXT NOT NULL)");
  exec("CREATE TABLE IF NOT EXISTS step_artifact (step_id INTEGER NOT NULL REFERENCES step(id), "
       "artifact_id INTEGER NOT NULL REFERENCES artifact(id), role TEXT NOT NULL CHECK (role IN ('input', 'output')))");
  exec("CREATE INDEX IF NOT EXISTS step_artifact_by_artifact ON step_artifact(artifact_id, role)");
}

LineageStore::~LineageStore() { sqlite3_close(db_); }

void LineageStore::exec(const std::string& sql) const {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql.c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
    std::string why = error ? error : "unknown error";
    sqlite3_free(error);
    throw core::Error("lineage store: " + why, "check that the store file is writable and intact");
  }
}

std::int64_t LineageStore::add_artifact(const ArtifactRecord& artifact) {
  nlohmann::json resources = nlohmann::json::array();
  for (const auto& [name, digest] : artifact.resources) resources.push_back({name, digest});
  Statement insert(db_, "INSERT INTO artifact (path, subject_digest, resources, recorded_at) VALUES (?, ?, ?, ?)");
  insert.bind(1, artifact.path).bind(2, artifact.subject_digest)
      .bind(3, resources.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace))
      .bind(4, artifact.recorded_at.empty() ? now_utc() : artifact.recorded_at);
  insert.step();
  return sqlite3_last_insert_rowid(db_);
}

std::int64_t LineageStore::add_step(const std::string& step, const std::string& actor,
                                    const std::vector<std::int64_t>& inputs, const std::vector<std::int64_t>& outputs) {
  exec("BEGIN IMMEDIATE");
  try {
    Statement insert(db_, "INSERT INTO step (name, actor, recorded_at) VALUES (?, ?, ?)");
    insert.bind(1, step).bind(2, actor).bind(3, now_utc());
    insert.step();
    std::int64_t id = sqlite3_last_insert_rowid(db_);
    for (auto [list, role] : {std::pair{&inputs, "input"}, std::pair{&outputs, "output"}})
      for (std::int64_t artifact : *list) {
        Statement link(db_, "INSERT INTO step_artifact (step_id, artifact_id, role) VALUES (?, ?, ?)");
        link.bind(1, id).bind(2, artifact).bind(3, std::string(role));
        link.step();
      }
    exec("COMMIT");
    return id;
  } catch (...) {
    exec("ROLLBACK");
    throw;
  }
}

namespace {
ArtifactRecord read_artifact(Statement& row) {
  ArtifactRecord record;
  record.id = row.integer(0);
  record.path = row.text(1);
  record.subject_digest = row.text(2);
  auto resources = nlohmann::json::parse(row.text(3), nullptr, false);
  if (resources.is_array())
    for (const auto& pair : resources)
      if (pair.is_array() && pair.size() == 2 && pair[0].is_string() && pair[1].is_string())
        record.resources.emplace_back(pair[0].get<std::string>(), pair[1].get<std::string>());
  record.recorded_at = row.text(4);
  return record;
}
}  // namespace

std::optional<ArtifactRecord> LineageStore::latest_artifact(const std::string& path) const {
  Statement query(db_, "SELECT id, path, subject_digest, resources, recorded_at FROM artifact WHERE path = ? "
                       "ORDER BY id DESC LIMIT 1");
  query.bind(1, path);
  if (!query.step()) return std::nullopt;
  return read_artifact(query);
}

ArtifactRecord LineageStore::artifact(std::int64_t id) const {
  Statement query(db_, "SELECT id, path, subject_digest, resources, recorded_at FROM artifact WHERE id = ?");
  query.bind(1, id);
  if (!query.step()) throw core::Error("lineage store: artifact " + std::to_string(id) + " is missing", "the store is damaged");
  return read_artifact(query);
}

std::vector<StepRecord> LineageStore::steps_producing(std::int64_t artifact_id) const {
  std::vector<StepRecord> steps;
  Statement query(db_, "SELECT s.id, s.name, s.actor, s.recorded_at FROM step s JOIN step_artifact a ON a.step_id = s.id "
                       "WHERE a.artifact_id = ? AND a.role = 'output' ORDER BY s.id DESC");
  query.bind(1, artifact_id);
  while (query.step()) steps.push_back({query.integer(0), query.text(1), query.text(2), query.text(3), {}, {}});
  for (auto& step : steps) {
    Statement links(db_, "SELECT artifact_id, role FROM step_artifact WHERE step_id = ? ORDER BY artifact_id");
    links.bind(1, step.id);
    while (links.step()) (links.text(1) == "input" ? step.inputs : step.outputs).push_back(links.integer(0));
  }
  return steps;
}

}  // namespace aegis::store
