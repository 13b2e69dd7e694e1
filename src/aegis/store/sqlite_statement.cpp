#include "aegis/store/sqlite_statement.h"

#include <cstring>

#include "aegis/core/error.h"

namespace aegis::store::sqlite {

std::string why(sqlite3* db) {
  if (!db) return "out of memory";
  std::string text = sqlite3_errmsg(db);
  if (int err = sqlite3_system_errno(db); err != 0) text += std::string(" (") + std::strerror(err) + ")";
  return text;
}

void fail(sqlite3* db, int rc, const std::string& file, const std::string& doing) {
  const std::string where = "store " + file + ": " + doing + ": ";
  switch (rc & 0xff) {
    case SQLITE_NOTADB:
      throw core::Error(file + " is not an SQLite database, so it cannot be an Aegis store", kStoreHint);
    case SQLITE_CORRUPT:
      throw core::Error(where + why(db), "the store is damaged: keep it for inspection and " + std::string(kStoreHint));
    case SQLITE_BUSY:
      throw core::Error(where + "another process kept the store locked past the busy timeout (" + why(db) + ")",
                        "try again when the other Aegis run has finished, or use a separate store");
    case SQLITE_TOOBIG:
      throw core::Error(where + "a value is larger than SQLite accepts",
                        "this is a bug in the command that reported it: it should shorten its evidence");
    case SQLITE_FULL:
      throw core::Error(where + why(db), "free disk space, or put the store on another disk");
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_IOERR:
      throw core::Error(where + why(db), "make the store and its folder writable (SQLite writes -wal and -shm files beside it), or " +
                                             std::string(kStoreHint));
    default:
      throw core::Error(where + why(db), "the store may be damaged or of another version; " + std::string(kStoreHint));
  }
}

void exec(sqlite3* db, const std::string& file, const char* sql, const char* doing) {
  if (int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr); rc != SQLITE_OK) fail(db, rc, file, doing);
}

Statement::Statement(sqlite3* db, const std::string& file, const std::string& sql) : db_(db), file_(&file) {
  if (int rc = sqlite3_prepare_v2(db, sql.c_str(), static_cast<int>(sql.size()), &stmt_, nullptr); rc != SQLITE_OK)
    fail(db, rc, file, "preparing a query");
}

Statement::~Statement() { sqlite3_finalize(stmt_); }

Statement& Statement::bind(int index, std::string_view text) {
  // A zero-length text must still bind as '' (not NULL): give SQLite a valid pointer.
  return check(sqlite3_bind_text64(stmt_, index, text.empty() ? "" : text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8));
}

Statement& Statement::bind(int index, std::int64_t value) { return check(sqlite3_bind_int64(stmt_, index, value)); }

Statement& Statement::bind(int index, const std::optional<std::uint64_t>& value) {
  return check(value ? sqlite3_bind_int64(stmt_, index, static_cast<std::int64_t>(*value)) : sqlite3_bind_null(stmt_, index));
}

Statement& Statement::bind_null(int index) { return check(sqlite3_bind_null(stmt_, index)); }

Statement& Statement::bind_all(const std::vector<BindValue>& values) {
  int index = 1;
  for (const auto& value : values) {
    if (const auto* number = std::get_if<std::int64_t>(&value)) bind(index++, *number);
    else bind(index++, std::get<std::string>(value));
  }
  return *this;
}

bool Statement::step(const char* doing) {
  const int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  fail(db_, rc, *file_, doing);
}

void Statement::reset() {
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
}

std::string Statement::text(int column) const {
  const void* p = sqlite3_column_blob(stmt_, column);
  const int size = sqlite3_column_bytes(stmt_, column);
  return p ? std::string(static_cast<const char*>(p), static_cast<std::size_t>(size)) : std::string();
}

std::int64_t Statement::integer(int column) const { return sqlite3_column_int64(stmt_, column); }

std::optional<std::uint64_t> Statement::optional_u64(int column) const {
  if (sqlite3_column_type(stmt_, column) == SQLITE_NULL) return std::nullopt;
  return static_cast<std::uint64_t>(sqlite3_column_int64(stmt_, column));
}

bool Statement::is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

Statement& Statement::check(int rc) {
  if (rc != SQLITE_OK) fail(db_, rc, *file_, "binding a value");
  return *this;
}

Transaction::Transaction(sqlite3* db, const std::string& file, bool write) : db_(db), file_(file) {
  exec(db_, file_, write ? "BEGIN IMMEDIATE" : "BEGIN", "starting a transaction");
}

Transaction::~Transaction() {
  if (!done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
}

void Transaction::commit() {
  exec(db_, file_, "COMMIT", "committing");
  done_ = true;
}

}  // namespace aegis::store::sqlite
