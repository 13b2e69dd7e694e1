// The SQLite vocabulary of everything that keeps its tables in the store's SQLite file (the findings
// backend, the dashboard's users, sessions and audit log): prepared statements and transactions that
// clean up after themselves, and SQLite result codes turned into errors that name the store and say
// what to do.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace aegis::store::sqlite {

// What every store error ends with.
inline constexpr const char* kStoreHint = "pass another file with --store (or set AEGIS_STORE)";

// sqlite3_errmsg with the system error behind it, if any.
std::string why(sqlite3* db);
// Throws core::Error for an SQLite result code: "store FILE: DOING: reason" and what to do.
[[noreturn]] void fail(sqlite3* db, int rc, const std::string& file, const std::string& doing);
void exec(sqlite3* db, const std::string& file, const char* sql, const char* doing);

using BindValue = std::variant<std::int64_t, std::string>;

// A prepared statement that finalises itself; errors name the store.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& file, const std::string& sql);
  ~Statement();
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, std::string_view text);
  Statement& bind(int index, std::int64_t value);
  // uint64 values keep all their bits: SQLite's INTEGER is signed, so values above INT64_MAX are
  // stored as their two's-complement image and turned back by optional_u64.
  Statement& bind(int index, const std::optional<std::uint64_t>& value);
  Statement& bind_null(int index);
  // Binds the values to ?1, ?2, ... in order.
  Statement& bind_all(const std::vector<BindValue>& values);
  // True while there is a row; false when done. Throws on an error.
  bool step(const char* doing);
  void reset();

  std::string text(int column) const;
  std::int64_t integer(int column) const;
  std::optional<std::uint64_t> optional_u64(int column) const;
  bool is_null(int column) const;

 private:
  Statement& check(int rc);
  sqlite3* db_;
  const std::string* file_;
  sqlite3_stmt* stmt_ = nullptr;
};

// BEGIN IMMEDIATE (a write) or BEGIN (a read: one consistent snapshot) ... COMMIT, rolled back when
// left without commit().
class Transaction {
 public:
  Transaction(sqlite3* db, const std::string& file, bool write = true);
  ~Transaction();
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit();

 private:
  sqlite3* db_;
  const std::string& file_;
  bool done_ = false;
};

}  // namespace aegis::store::sqlite
