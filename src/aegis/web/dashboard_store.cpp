// The dashboard's store over the SQLite file that aegis::store::FindingStore writes.
//
// Layout. The findings tables belong to store/ (FindingStore creates and migrates them); this file
// adds its own tables, all named web_*, under the component "web" in aegis_schema, and indexes over
// the findings tables that the dashboard's queries need (also named web_*). Passwords are argon2id
// PHC strings; a session row holds the SHA-256 of its cookie value, never the value, so that a copy
// of the store logs no one in. The audit log is a hash chain: each record's hash covers the previous
// hash and its own fields, so an edit, a deletion or a reordering shows in verify_audit_log().
//
// Concurrency. One connection behind one mutex: the HTTP server's threads take turns. Writes are
// BEGIN IMMEDIATE transactions (the CLI's `aegis users` and writing commands may use the same file
// at once); reads that take several statements run inside one read transaction, so that a count and
// its page see the same snapshot. The slow part of a login, argon2, runs outside the mutex.
//
// Speed. The "current" scope (the newest run of each asset and command) is one subquery over
// finding_run, which SQLite evaluates once per statement into an ephemeral table. Pages are picked by
// id over a covering index (run_id, severity, status, atlas) and only the page's rows are read whole;
// ATLAS counts group by the distinct atlas texts first and parse each distinct text once.
#include "aegis/web/dashboard_store.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sqlite3.h>

#include <algorithm>
#include <cctype>
#include <array>
#include <cstring>
#include <ctime>
#include <map>
#include <mutex>
#include <set>
#include <unordered_map>
#include <variant>

#include "aegis/core/error.h"
#include "aegis/core/json_shape.h"
#include "aegis/store/finding_store.h"
#include "aegis/store/sqlite_statement.h"

namespace aegis::web {

using nlohmann::json;
namespace fs = std::filesystem;

bool is_role(std::string_view role) { return role == kRoleViewer || role == kRoleAnalyst || role == kRoleAdmin; }

int role_rank(std::string_view role) {
  if (role == kRoleViewer) return 1;
  if (role == kRoleAnalyst) return 2;
  if (role == kRoleAdmin) return 3;
  return 0;
}

namespace {

constexpr std::string_view kWebComponent = "web";
using store::sqlite::kStoreHint;
using store::sqlite::BindValue;
using store::sqlite::Statement;
using store::sqlite::Transaction;
using store::sqlite::exec;
using store::sqlite::fail;
constexpr std::string_view kGenesisHash = "0000000000000000000000000000000000000000000000000000000000000000";
constexpr std::size_t kMaxComment = 4000;
constexpr std::size_t kMaxPageSize = 500;
// Stored JSON documents (run summaries, audit details) are parsed only within these bounds: a
// hand-edited store must not be able to exhaust the stack or the memory of the server.
constexpr int kMaxJsonDepth = 64;
constexpr std::size_t kMaxJsonBytes = 64u << 20;
constexpr std::uint64_t kMaxJsonValues = 4'000'000;

constexpr std::array<std::string_view, 5> kSeverityNames = {"info", "low", "medium", "high", "critical"};
constexpr std::array<std::string_view, 5> kStatusNames = {"open", "acknowledged", "accepted-risk", "false-positive", "fixed"};

// Highest first when sorted descending.
constexpr const char* kSeverityRank =
    "(CASE f.severity WHEN 'critical' THEN 4 WHEN 'high' THEN 3 WHEN 'medium' THEN 2 WHEN 'low' THEN 1 ELSE 0 END)";

// The newest run of each (asset, command): by started_ms, then id. The index finding_run_by_asset
// (asset, command, started_ms) answers each NOT EXISTS with one probe.
constexpr const char* kCurrentRuns =
    "SELECT c.id FROM finding_run c WHERE NOT EXISTS (SELECT 1 FROM finding_run n WHERE n.asset = c.asset AND "
    "n.command = c.command AND (n.started_ms > c.started_ms OR (n.started_ms = c.started_ms AND n.id > c.id)))";

int severity_index(std::string_view name) {
  for (std::size_t i = 0; i < kSeverityNames.size(); ++i)
    if (kSeverityNames[i] == name) return static_cast<int>(i);
  return -1;
}

std::string_view trimmed_name(std::string_view text) { return text.substr(0, 200); }


std::string hex(const unsigned char* bytes, std::size_t size) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (std::size_t i = 0; i < size; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return out;
}

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  if (EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr) != 1)
    throw core::Error("OpenSSL could not compute a SHA-256 digest", "check the OpenSSL installation");
  return hex(digest, size);
}

std::string base64url(const unsigned char* bytes, std::size_t size) {
  static constexpr char kDigits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  std::uint32_t buffer = 0;
  int bits = 0;
  for (std::size_t i = 0; i < size; ++i) {
    buffer = (buffer << 8) | bytes[i];
    bits += 8;
    while (bits >= 6) {
      bits -= 6;
      out += kDigits[(buffer >> bits) & 63];
    }
  }
  if (bits > 0) out += kDigits[(buffer << (6 - bits)) & 63];
  return out;
}

// 256 random bits as 43 characters of base64url without padding.
std::string random_token() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof bytes) != 1)
    throw core::Error("OpenSSL found no source of random numbers for a session token",
                      "check that the system's random device (/dev/urandom, getrandom) is available");
  return base64url(bytes, sizeof bytes);
}

bool looks_like_token(std::string_view token) {
  if (token.size() != 43) return false;
  return std::all_of(token.begin(), token.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

// Milliseconds since the epoch -> RFC 3339 UTC with milliseconds.
std::string rfc3339(std::int64_t ms) {
  std::int64_t seconds = ms / 1000, millis = ms % 1000;
  if (millis < 0) {
    millis += 1000;
    seconds -= 1;
  }
  std::time_t t = static_cast<std::time_t>(seconds);
  std::tm utc{};
  gmtime_r(&t, &utc);
  char text[48];
  const std::size_t length = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(text + length, sizeof text - length, ".%03dZ", static_cast<int>(millis));
  return text;
}

// Stored JSON parsed within the bounds above; null for empty, invalid or oversized text.
json parse_stored_json(std::string_view text) {
  if (text.empty() || text.size() > kMaxJsonBytes) return nullptr;
  const core::JsonShape shape = core::measure_json(text, kMaxJsonDepth);
  if (shape.depth > kMaxJsonDepth || shape.values > kMaxJsonValues) return nullptr;
  json parsed = json::parse(text, nullptr, false);
  if (parsed.is_discarded()) return nullptr;
  return parsed;
}

// A finding's atlas / nist_ai_rmf column (a flat JSON array of strings).
json parse_list(const std::string& text) {
  json out = json::array();
  if (text == "[]" || text.empty()) return out;
  if (core::measure_json(text, 2).depth > 1) return out;
  json parsed = json::parse(text, nullptr, false);
  if (parsed.is_array())
    for (const auto& item : parsed)
      if (item.is_string()) out.push_back(item);
  return out;
}

std::string dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string like_pattern(std::string_view text) {
  std::string out = "%";
  for (char c : text) {
    if (c == '%' || c == '_' || c == '\\') out += '\\';
    out += c;
  }
  out += '%';
  return out;
}

void check_name(std::string_view name) {
  const bool ok = !name.empty() && name.size() <= 64 && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == '@' || c == '-';
  });
  if (!ok)
    throw core::Error("invalid user name '" + std::string(trimmed_name(name)) + "'",
                      "use 1 to 64 characters of letters, digits and . _ @ -");
}

void check_role(std::string_view role) {
  if (!is_role(role))
    throw core::Error("unknown role '" + std::string(trimmed_name(role)) + "'", "use viewer, analyst or admin");
}

void check_password(std::string_view password) {
  if (password.size() < 12 || password.size() > 1024)
    throw core::Error("the password has " + std::to_string(password.size()) + " bytes; it needs 12 to 1024",
                      "choose a longer password (a passphrase of several words is easy to remember)");
}

constexpr const char* kFindingColumns =
    "f.id, f.run_id, r.asset, r.command, f.rule_id, f.severity, f.title, f.file, f.member, f.byte_offset, "
    "f.row_number, f.line, f.column_name, f.evidence, f.atlas, f.nist_ai_rmf, f.remediation, f.status, "
    "f.fingerprint, r.started_at FROM finding f JOIN finding_run r ON r.id = f.run_id";

json optional_u64(const Statement& row, int column) {
  if (row.is_null(column)) return nullptr;
  return static_cast<std::uint64_t>(row.integer(column));
}

json read_finding(const Statement& row) {
  return json{{"id", row.integer(0)},
              {"run_id", row.integer(1)},
              {"asset", row.text(2)},
              {"command", row.text(3)},
              {"rule_id", row.text(4)},
              {"severity", row.text(5)},
              {"title", row.text(6)},
              {"location",
               {{"file", row.text(7)},
                {"member", row.text(8)},
                {"byte_offset", optional_u64(row, 9)},
                {"row", optional_u64(row, 10)},
                {"line", optional_u64(row, 11)},
                {"column", row.text(12)}}},
              {"evidence", row.text(13)},
              {"atlas", parse_list(row.text(14))},
              {"nist_ai_rmf", parse_list(row.text(15))},
              {"remediation", row.text(16)},
              {"status", row.text(17)},
              {"fingerprint", row.text(18)},
              {"started_at", row.text(19)}};
}

constexpr const char* kRunColumns =
    "r.id, r.command, r.asset, r.started_at, r.finished_at, r.exit_code, r.aegis_version, r.info_count, r.low_count, "
    "r.medium_count, r.high_count, r.critical_count";

json severity_counts() {
  json counts = json::object();
  for (auto name : kSeverityNames) counts[std::string(name)] = 0;
  return counts;
}

bool is_postgres_location(std::string_view text) {
  auto starts = [text](std::string_view prefix) {
    if (text.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i)
      if (std::tolower(static_cast<unsigned char>(text[i])) != prefix[i]) return false;
    return true;
  };
  return starts("postgres://") || starts("postgresql://");
}

}  // namespace

struct DashboardStore::Impl {
  fs::path path;
  std::string file;
  SessionPolicy policy;
  sqlite3* db = nullptr;
  mutable std::mutex mutex;
  std::string dummy_hash;  // made on the first login of an unknown name, with policy.argon2

  ~Impl() { sqlite3_close(db); }

  std::int64_t now_ms() const {
    const auto now = policy.clock ? policy.clock() : std::chrono::system_clock::now();
    return std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  }

  void open();
  void migrate();

  // Inside the caller's write transaction.
  void append_audit(std::string_view user, std::string_view action, std::string_view target, const json& detail);
  void end_sessions(std::string_view user);
  struct UserRow {
    std::string role, password_hash;
    bool disabled = false;
    std::int64_t failed = 0, locked_until_ms = 0;
  };
  std::optional<UserRow> user_row(std::string_view name) const;
  void refuse_losing_last_admin(std::string_view name, const UserRow& row, const char* doing) const;

  std::optional<json> finding_with_history(std::int64_t id) const;
  json run_json(const Statement& row) const;
};

// Hashes the fields of one audit record with its predecessor's hash: each field length-prefixed, so
// that no two different records encode alike.
static std::string audit_hash(std::string_view prev_hash, std::int64_t seq, std::int64_t time_ms, std::string_view user,
                              std::string_view action, std::string_view target, std::string_view detail_json) {
  std::string encoded = "aegis.web.audit.v1";
  auto field = [&encoded](std::string_view value) {
    encoded += std::to_string(value.size());
    encoded += ':';
    encoded += value;
    encoded += ',';
  };
  field(prev_hash);
  field(std::to_string(seq));
  field(std::to_string(time_ms));
  field(user);
  field(action);
  field(target);
  field(detail_json);
  return sha256_hex(encoded);
}

void DashboardStore::Impl::open() {
  if (is_postgres_location(file))
    throw core::Error("the dashboard cannot open " + std::string(trimmed_name(file)) +
                          ": it reads SQLite stores for now, not PostgreSQL",
                      "pass an SQLite store file with --store");
  // The findings tables are store/'s: let it create or migrate them (and refuse a file that is not
  // an Aegis store, or one written by a newer Aegis) before this side adds its own.
  { store::FindingStore findings(path); }

  if (int rc = sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX, nullptr); rc != SQLITE_OK)
    throw core::Error("cannot open the dashboard store " + file + ": " + store::sqlite::why(db),
                      "make the file and its folder writable, or " + std::string(kStoreHint));
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, 30'000);
  exec(db, file, "PRAGMA journal_mode = WAL", "switching to write-ahead logging");
  exec(db, file, "PRAGMA synchronous = NORMAL", "setting synchronous mode");
  exec(db, file, "PRAGMA foreign_keys = ON", "enabling foreign keys");
  exec(db, file, "PRAGMA temp_store = MEMORY", "keeping temporary tables in memory");
  migrate();
}

void DashboardStore::Impl::migrate() {
  Transaction tx(db, file, true);
  std::int64_t version = 0;
  {
    Statement query(db, file, "SELECT version FROM aegis_schema WHERE component = ?");
    query.bind(1, kWebComponent);
    if (query.step("reading the schema version")) version = query.integer(0);
  }
  if (version > kWebSchemaVersion)
    throw core::Error("the store " + file + " was written by a newer Aegis dashboard (web schema " +
                          std::to_string(version) + ", this Aegis reads " + std::to_string(kWebSchemaVersion) + ")",
                      "upgrade Aegis, or " + std::string(kStoreHint));
  if (version == kWebSchemaVersion) return;  // rolled back: nothing written
  static constexpr const char* kVersion1[] = {
      "CREATE TABLE IF NOT EXISTS web_user (name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL, "
      "disabled INTEGER NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL, last_login_ms INTEGER, "
      "failed_logins INTEGER NOT NULL DEFAULT 0, locked_until_ms INTEGER NOT NULL DEFAULT 0)",
      "CREATE TABLE IF NOT EXISTS web_session (token_sha256 TEXT PRIMARY KEY, user TEXT NOT NULL "
      "REFERENCES web_user(name) ON DELETE CASCADE, csrf_token TEXT NOT NULL, created_ms INTEGER NOT NULL, "
      "last_seen_ms INTEGER NOT NULL, client TEXT NOT NULL)",
      "CREATE INDEX IF NOT EXISTS web_session_by_user ON web_session(user)",
      "CREATE TABLE IF NOT EXISTS web_finding_event (id INTEGER PRIMARY KEY, finding_id INTEGER NOT NULL, "
      "time_ms INTEGER NOT NULL, user TEXT NOT NULL, from_status TEXT NOT NULL, to_status TEXT NOT NULL, "
      "comment TEXT NOT NULL)",
      "CREATE INDEX IF NOT EXISTS web_finding_event_by_finding ON web_finding_event(finding_id, id)",
      "CREATE TABLE IF NOT EXISTS web_audit (seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, user TEXT NOT NULL, "
      "action TEXT NOT NULL, target TEXT NOT NULL, detail_json TEXT NOT NULL, prev_hash TEXT NOT NULL, "
      "hash TEXT NOT NULL)",
      // Over the findings tables: a covering index for the current-scope counts and pages, and the
      // filters of scope=all.
      "CREATE INDEX IF NOT EXISTS web_finding_by_run ON finding(run_id, severity, status, atlas)",
      "CREATE INDEX IF NOT EXISTS web_finding_by_severity ON finding(severity)",
      "CREATE INDEX IF NOT EXISTS web_finding_by_status ON finding(status)",
      "CREATE INDEX IF NOT EXISTS web_finding_run_by_command ON finding_run(command, asset, started_ms)",
      "CREATE INDEX IF NOT EXISTS web_finding_run_by_start ON finding_run(started_ms, id)",
      "CREATE INDEX IF NOT EXISTS web_assessment_job_by_run ON assessment_job(assessment_id, state, run_id)",
  };
  for (const char* sql : kVersion1) exec(db, file, sql, "creating the dashboard's tables");
  Statement set(db, file, "INSERT OR REPLACE INTO aegis_schema (component, version) VALUES (?, ?)");
  set.bind(1, kWebComponent).bind(2, std::int64_t{kWebSchemaVersion});
  set.step("writing the schema version");
  tx.commit();
}

void DashboardStore::Impl::append_audit(std::string_view user, std::string_view action, std::string_view target,
                                        const json& detail) {
  std::int64_t seq = 1;
  std::string prev_hash(kGenesisHash);
  {
    Statement last(db, file, "SELECT seq, hash FROM web_audit ORDER BY seq DESC LIMIT 1");
    if (last.step("reading the audit log")) {
      seq = last.integer(0) + 1;
      prev_hash = last.text(1);
    }
  }
  const std::int64_t time_ms = now_ms();
  const std::string detail_json = dump(detail);
  const std::string hash = audit_hash(prev_hash, seq, time_ms, user, action, target, detail_json);
  Statement insert(db, file,
                   "INSERT INTO web_audit (seq, time_ms, user, action, target, detail_json, prev_hash, hash) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
  insert.bind(1, seq).bind(2, time_ms).bind(3, user).bind(4, action).bind(5, target).bind(6, detail_json)
      .bind(7, prev_hash).bind(8, hash);
  insert.step("appending to the audit log");
}

void DashboardStore::Impl::end_sessions(std::string_view user) {
  Statement erase(db, file, "DELETE FROM web_session WHERE user = ?");
  erase.bind(1, user);
  erase.step("ending sessions");
}

std::optional<DashboardStore::Impl::UserRow> DashboardStore::Impl::user_row(std::string_view name) const {
  Statement query(db, file,
                  "SELECT role, password_hash, disabled, failed_logins, locked_until_ms FROM web_user WHERE name = ?");
  query.bind(1, name);
  if (!query.step("reading a user")) return std::nullopt;
  UserRow row;
  row.role = query.text(0);
  row.password_hash = query.text(1);
  row.disabled = query.integer(2) != 0;
  row.failed = query.integer(3);
  row.locked_until_ms = query.integer(4);
  return row;
}

void DashboardStore::Impl::refuse_losing_last_admin(std::string_view name, const UserRow& row, const char* doing) const {
  if (row.role != kRoleAdmin || row.disabled) return;
  Statement count(db, file, "SELECT count(*) FROM web_user WHERE role = 'admin' AND disabled = 0");
  count.step("counting admins");
  if (count.integer(0) <= 1)
    throw core::Error("cannot " + std::string(doing) + " '" + std::string(name) + "': it is the last enabled admin",
                      "make another user admin first (aegis users add NAME --role admin)");
}

json DashboardStore::Impl::run_json(const Statement& row) const {
  json counts = json::object();
  for (std::size_t i = 0; i < kSeverityNames.size(); ++i)
    counts[std::string(kSeverityNames[i])] = row.integer(7 + static_cast<int>(i));
  json run{{"id", row.integer(0)},
           {"command", row.text(1)},
           {"asset", row.text(2)},
           {"inputs", json::array()},
           {"started_at", row.text(3)},
           {"finished_at", row.text(4)},
           {"exit_code", row.integer(5)},
           {"aegis_version", row.text(6)},
           {"counts", std::move(counts)}};
  Statement inputs(db, file, "SELECT input FROM finding_run_input WHERE run_id = ? ORDER BY position");
  inputs.bind(1, row.integer(0));
  while (inputs.step("reading a run's inputs")) run["inputs"].push_back(inputs.text(0));
  return run;
}

std::optional<json> DashboardStore::Impl::finding_with_history(std::int64_t id) const {
  Statement query(db, file, std::string("SELECT ") + kFindingColumns + " WHERE f.id = ?");
  query.bind(1, id);
  if (!query.step("reading a finding")) return std::nullopt;
  json finding = read_finding(query);
  json history = json::array();
  Statement events(db, file,
                   "SELECT time_ms, user, from_status, to_status, comment FROM web_finding_event WHERE finding_id = ? "
                   "ORDER BY id");
  events.bind(1, id);
  while (events.step("reading a finding's history"))
    history.push_back({{"time", rfc3339(events.integer(0))},
                       {"user", events.text(1)},
                       {"from", events.text(2)},
                       {"to", events.text(3)},
                       {"comment", events.text(4)}});
  finding["history"] = std::move(history);
  return finding;
}

DashboardStore::DashboardStore(const fs::path& file, SessionPolicy policy) : impl_(std::make_unique<Impl>()) {
  impl_->path = file;
  impl_->file = file.string();
  impl_->policy = std::move(policy);
  impl_->open();
}

DashboardStore::~DashboardStore() = default;

const fs::path& DashboardStore::file() const { return impl_->path; }

// ---- users ----

void DashboardStore::add_user(std::string_view name, std::string_view role, std::string_view password,
                              std::string_view actor) {
  check_name(name);
  check_role(role);
  check_password(password);
  const std::string hash = hash_password(password, impl_->policy.argon2);  // slow: outside the lock
  std::lock_guard lock(impl_->mutex);
  Transaction tx(impl_->db, impl_->file, true);
  if (impl_->user_row(name))
    throw core::Error("a user named '" + std::string(name) + "' exists already",
                      "pick another name, or change this user with set-role / passwd");
  Statement insert(impl_->db, impl_->file,
                   "INSERT INTO web_user (name, role, password_hash, created_ms) VALUES (?, ?, ?, ?)");
  insert.bind(1, name).bind(2, role).bind(3, hash).bind(4, impl_->now_ms());
  insert.step("adding a user");
  impl_->append_audit(actor, "user.add", "user:" + std::string(name), {{"role", role}});
  tx.commit();
}

void DashboardStore::set_role(std::string_view name, std::string_view role, std::string_view actor) {
  check_role(role);
  std::lock_guard lock(impl_->mutex);
  Transaction tx(impl_->db, impl_->file, true);
  auto row = impl_->user_row(name);
  if (!row) throw core::Error("no user named '" + std::string(trimmed_name(name)) + "'", "list the users with: aegis users list");
  if (role != kRoleAdmin) impl_->refuse_losing_last_admin(name, *row, "demote");
  Statement update(impl_->db, impl_->file, "UPDATE web_user SET role = ? WHERE name = ?");
  update.bind(1, role).bind(2, name);
  update.step("changing a user's role");
  impl_->append_audit(actor, "user.role", "user:" + std::string(name), {{"from", row->role}, {"to", role}});
  tx.commit();
}

void DashboardStore::set_password(std::string_view name, std::string_view password, std::string_view actor) {
  check_password(password);
  const std::string hash = hash_password(password, impl_->policy.argon2);
  std::lock_guard lock(impl_->mutex);
  Transaction tx(impl_->db, impl_->file, true);
  if (!impl_->user_row(name))
    throw core::Error("no user named '" + std::string(trimmed_name(name)) + "'", "list the users with: aegis users list");
  Statement update(impl_->db, impl_->file,
                   "UPDATE web_user SET password_hash = ?, failed_logins = 0, locked_until_ms = 0 WHERE name = ?");
  update.bind(1, hash).bind(2, name);
  update.step("changing a password");
  impl_->end_sessions(name);
  impl_->append_audit(actor, "user.password", "user:" + std::string(name), json::object());
  tx.commit();
}

void DashboardStore::set_disabled(std::string_view name, bool disabled, std::string_view actor) {
  std::lock_guard lock(impl_->mutex);
  Transaction tx(impl_->db, impl_->file, true);
  auto row = impl_->user_row(name);
  if (!row) throw core::Error("no user named '" + std::string(trimmed_name(name)) + "'", "list the users with: aegis users list");
  if (disabled) impl_->refuse_losing_last_admin(name, *row, "disable");
  Statement update(impl_->db, impl_->file, "UPDATE web_user SET disabled = ? WHERE name = ?");
  update.bind(1, std::int64_t{disabled ? 1 : 0}).bind(2, name);
  update.step("disabling a user");
  impl_->end_sessions(name);
  impl_->append_audit(actor, disabled ? "user.disable" : "user.enable", "user:" + std::string(name), json::object());
  tx.commit();
}

void DashboardStore::remove_user(std::string_view name, std::string_view actor) {
  std::lock_guard lock(impl_->mutex);
  Transaction tx(impl_->db, impl_->file, true);
  auto row = impl_->user_row(name);
  if (!row) throw core::Error("no user named '" + std::string(trimmed_name(name)) + "'", "list the users with: aegis users list");
  impl_->refuse_losing_last_admin(name, *row, "remove");
  impl_->end_sessions(name);
  Statement erase(impl_->db, impl_->file, "DELETE FROM web_user WHERE name = ?");
  erase.bind(1, name);
  erase.step("removing a user");
  impl_->append_audit(actor, "user.remove", "user:" + std::string(name), {{"role", row->role}});
  tx.commit();
}

json DashboardStore::users() const {
  std::lock_guard lock(impl_->mutex);
  json items = json::array();
  Statement query(impl_->db, impl_->file,
                  "SELECT name, role, disabled, created_ms, last_login_ms FROM web_user ORDER BY name");
  while (query.step("listing users"))
    items.push_back({{"name", query.text(0)},
                     {"role", query.text(1)},
                     {"disabled", query.integer(2) != 0},
                     {"created_at", rfc3339(query.integer(3))},
                     {"last_login_at", query.is_null(4) ? json(nullptr) : json(rfc3339(query.integer(4)))}});
  return {{"items", std::move(items)}};
}

std::size_t DashboardStore::user_count() const {
  std::lock_guard lock(impl_->mutex);
  Statement query(impl_->db, impl_->file, "SELECT count(*) FROM web_user");
  query.step("counting users");
  return static_cast<std::size_t>(query.integer(0));
}

// ---- sessions ----

LoginResult DashboardStore::login(std::string_view name, std::string_view password, std::string_view client) {
  Impl& s = *impl_;
  const std::string target = "user:" + std::string(trimmed_name(name));
  const json detail{{"client", std::string(trimmed_name(client))}};
  std::optional<Impl::UserRow> row;
  std::string dummy;
  {
    std::lock_guard lock(s.mutex);
    row = s.user_row(name);
    if (row && row->locked_until_ms > s.now_ms()) {
      LoginResult result;
      result.outcome = LoginResult::Outcome::LockedOut;
      result.retry_after_s = (row->locked_until_ms - s.now_ms() + 999) / 1000;
      return result;
    }
    dummy = s.dummy_hash;
  }
  if (!row && dummy.empty()) {
    // Made once, on the first unknown name, with the same cost as real hashes.
    dummy = hash_password(random_token(), s.policy.argon2);
    std::lock_guard lock(s.mutex);
    if (s.dummy_hash.empty()) s.dummy_hash = dummy;
  }
  // The argon2 work, outside the lock: as much of it for an unknown name as for a known one.
  const bool password_ok = verify_password(password, row ? row->password_hash : dummy) && row.has_value();

  LoginResult result;
  {
    std::lock_guard lock(s.mutex);
    Transaction tx(s.db, s.file, true);
    const std::int64_t now = s.now_ms();
    // The user may have been changed while argon2 ran: the login stands only for the row as verified.
    const auto current = row ? s.user_row(name) : std::nullopt;
    if (current && current->locked_until_ms > now) {  // locked by failures that ended meanwhile
      result.outcome = LoginResult::Outcome::LockedOut;
      result.retry_after_s = (current->locked_until_ms - now + 999) / 1000;
      return result;
    }
    const bool ok = password_ok && current && !current->disabled && current->password_hash == row->password_hash;
    if (!ok) {
      s.append_audit(std::string(trimmed_name(name)), "login_failed", target, detail);
      if (current) {
        // Counted in SQL: concurrent failures of one name all count.
        Statement count(s.db, s.file,
                        "UPDATE web_user SET failed_logins = failed_logins + 1 WHERE name = ? RETURNING failed_logins");
        count.bind(1, name);
        const std::int64_t failed = count.step("counting a failed login") ? count.integer(0) : 0;
        count.reset();
        if (s.policy.max_failed_logins > 0 && failed >= s.policy.max_failed_logins) {
          const std::int64_t lockout_ms =
              std::chrono::duration_cast<std::chrono::milliseconds>(s.policy.lockout).count();
          Statement lock_user(s.db, s.file, "UPDATE web_user SET failed_logins = 0, locked_until_ms = ? WHERE name = ?");
          lock_user.bind(1, now + lockout_ms).bind(2, name);
          lock_user.step("locking a user out");
          json why = detail;
          why["failed_logins"] = failed;
          why["lockout_s"] = lockout_ms / 1000;
          s.append_audit(std::string(trimmed_name(name)), "locked_out", target, why);
          result.outcome = LoginResult::Outcome::LockedOut;
          result.retry_after_s = (lockout_ms + 999) / 1000;
        }
      }
      tx.commit();
      return result;
    }
    // Sessions that expired are removed here, lazily, rather than by a timer.
    {
      const std::int64_t idle_ms = std::chrono::duration_cast<std::chrono::milliseconds>(s.policy.idle_timeout).count();
      const std::int64_t absolute_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(s.policy.absolute_timeout).count();
      Statement sweep(s.db, s.file, "DELETE FROM web_session WHERE last_seen_ms <= ? OR created_ms <= ?");
      sweep.bind(1, now - idle_ms).bind(2, now - absolute_ms);
      sweep.step("removing expired sessions");
    }
    result.outcome = LoginResult::Outcome::Ok;
    result.token = random_token();
    result.session = Session{std::string(name), current->role, random_token()};
    Statement insert(s.db, s.file,
                     "INSERT INTO web_session (token_sha256, user, csrf_token, created_ms, last_seen_ms, client) "
                     "VALUES (?, ?, ?, ?, ?, ?)");
    insert.bind(1, sha256_hex(result.token)).bind(2, name).bind(3, result.session.csrf_token).bind(4, now).bind(5, now)
        .bind(6, trimmed_name(client));
    insert.step("creating a session");
    Statement update(s.db, s.file, "UPDATE web_user SET failed_logins = 0, locked_until_ms = 0, last_login_ms = ? WHERE name = ?");
    update.bind(1, now).bind(2, name);
    update.step("recording a login");
    s.append_audit(std::string(name), "login", target, detail);
    tx.commit();
  }

  // A hash made with weaker parameters than today's is replaced while the password is at hand.
  if (needs_rehash(row->password_hash, s.policy.argon2)) {
    try {
      const std::string stronger = hash_password(password, s.policy.argon2);
      std::lock_guard again(s.mutex);
      Statement rehash(s.db, s.file, "UPDATE web_user SET password_hash = ? WHERE name = ? AND password_hash = ?");
      rehash.bind(1, stronger).bind(2, name).bind(3, row->password_hash);
      rehash.step("re-hashing a password");
    } catch (const core::Error&) {
      // The login stands; the old hash stays until a later login manages the re-hash.
    }
  }
  return result;
}

std::optional<Session> DashboardStore::session(std::string_view token) {
  if (!looks_like_token(token)) return std::nullopt;
  Impl& s = *impl_;
  const std::string key = sha256_hex(token);
  std::lock_guard lock(s.mutex);
  Statement query(s.db, s.file,
                  "SELECT s.user, u.role, s.csrf_token, s.created_ms, s.last_seen_ms, u.disabled FROM web_session s "
                  "JOIN web_user u ON u.name = s.user WHERE s.token_sha256 = ?");
  query.bind(1, key);
  if (!query.step("reading a session")) return std::nullopt;
  Session session{query.text(0), query.text(1), query.text(2)};
  const std::int64_t created = query.integer(3), last_seen = query.integer(4);
  const bool disabled = query.integer(5) != 0;
  query.reset();
  const std::int64_t now = s.now_ms();
  const std::int64_t idle_ms = std::chrono::duration_cast<std::chrono::milliseconds>(s.policy.idle_timeout).count();
  const std::int64_t absolute_ms = std::chrono::duration_cast<std::chrono::milliseconds>(s.policy.absolute_timeout).count();
  if (disabled || now - last_seen >= idle_ms || now - created >= absolute_ms) {
    Statement erase(s.db, s.file, "DELETE FROM web_session WHERE token_sha256 = ?");
    erase.bind(1, key);
    erase.step("ending an expired session");
    return std::nullopt;
  }
  Statement touch(s.db, s.file, "UPDATE web_session SET last_seen_ms = ? WHERE token_sha256 = ?");
  touch.bind(1, now).bind(2, key);
  touch.step("refreshing a session");
  return session;
}

void DashboardStore::logout(std::string_view token) {
  if (!looks_like_token(token)) return;
  Impl& s = *impl_;
  std::lock_guard lock(s.mutex);
  Transaction tx(s.db, s.file, true);
  Statement erase(s.db, s.file, "DELETE FROM web_session WHERE token_sha256 = ? RETURNING user");
  erase.bind(1, sha256_hex(token));
  if (erase.step("ending a session")) {
    const std::string user = erase.text(0);
    erase.reset();
    s.append_audit(user, "logout", "user:" + user, json::object());
  }
  tx.commit();
}

// ---- findings triage and the audit log ----

json DashboardStore::set_finding_status(std::int64_t finding_id, std::string_view status, std::string_view comment,
                                        std::string_view user) {
  if (!store::is_finding_status(status))
    throw core::Error("unknown finding status '" + std::string(trimmed_name(status)) + "'",
                      "use open, acknowledged, accepted-risk, false-positive or fixed");
  if (comment.empty() || comment.size() > kMaxComment)
    throw core::Error("a status change needs a comment of 1 to 4000 bytes (this one has " +
                          std::to_string(comment.size()) + ")",
                      "say why the status changes, briefly");
  Impl& s = *impl_;
  std::lock_guard lock(s.mutex);
  Transaction tx(s.db, s.file, true);
  std::string from;
  {
    Statement current(s.db, s.file, "SELECT status FROM finding WHERE id = ?");
    current.bind(1, finding_id);
    if (!current.step("reading a finding"))
      throw core::Error("no finding " + std::to_string(finding_id) + " in " + s.file, "list the findings to pick an existing id");
    from = current.text(0);
  }
  Statement update(s.db, s.file, "UPDATE finding SET status = ? WHERE id = ?");
  update.bind(1, status).bind(2, finding_id);
  update.step("setting a finding's status");
  Statement event(s.db, s.file,
                  "INSERT INTO web_finding_event (finding_id, time_ms, user, from_status, to_status, comment) "
                  "VALUES (?, ?, ?, ?, ?, ?)");
  event.bind(1, finding_id).bind(2, s.now_ms()).bind(3, user).bind(4, from).bind(5, status).bind(6, comment);
  event.step("recording a finding's history");
  s.append_audit(user, "finding.status", "finding:" + std::to_string(finding_id),
                 {{"from", from}, {"to", status}, {"comment", comment}});
  tx.commit();
  return *s.finding_with_history(finding_id);
}

void DashboardStore::audit(std::string_view user, std::string_view action, std::string_view target, const json& detail) {
  std::lock_guard lock(impl_->mutex);
  Transaction tx(impl_->db, impl_->file, true);
  impl_->append_audit(user, action, target, detail);
  tx.commit();
}

json DashboardStore::audit_log(std::size_t limit, std::size_t offset) const {
  Impl& s = *impl_;
  std::lock_guard lock(s.mutex);
  Transaction tx(s.db, s.file, false);
  Statement count(s.db, s.file, "SELECT count(*) FROM web_audit");
  count.step("counting audit records");
  json items = json::array();
  Statement query(s.db, s.file,
                  "SELECT seq, time_ms, user, action, target, detail_json, hash FROM web_audit ORDER BY seq DESC "
                  "LIMIT ? OFFSET ?");
  query.bind(1, static_cast<std::int64_t>(std::min(limit, kMaxPageSize)))
      .bind(2, static_cast<std::int64_t>(std::min<std::size_t>(offset, INT64_MAX)));
  while (query.step("reading the audit log"))
    items.push_back({{"seq", query.integer(0)},
                     {"time", rfc3339(query.integer(1))},
                     {"user", query.text(2)},
                     {"action", query.text(3)},
                     {"target", query.text(4)},
                     {"detail", parse_stored_json(query.text(5))},
                     {"hash", query.text(6)}});
  return {{"total", count.integer(0)}, {"items", std::move(items)}};
}

std::vector<std::int64_t> DashboardStore::verify_audit_log() const {
  Impl& s = *impl_;
  std::lock_guard lock(s.mutex);
  std::vector<std::int64_t> broken;
  Statement query(s.db, s.file,
                  "SELECT seq, time_ms, user, action, target, detail_json, prev_hash, hash FROM web_audit ORDER BY seq");
  std::string expected_prev(kGenesisHash);
  while (query.step("reading the audit log")) {
    const std::int64_t seq = query.integer(0);
    const std::string prev_hash = query.text(6), hash = query.text(7);
    const std::string computed = audit_hash(prev_hash, seq, query.integer(1), query.text(2), query.text(3),
                                            query.text(4), query.text(5));
    // A record is broken when its own fields do not give its hash, or when it does not follow the
    // record before it (one was removed, inserted or re-hashed in between).
    if (computed != hash || prev_hash != expected_prev) broken.push_back(seq);
    expected_prev = hash;
  }
  return broken;
}

// ---- read queries ----

json DashboardStore::summary() const {
  Impl& s = *impl_;
  std::lock_guard lock(s.mutex);
  Transaction tx(s.db, s.file, false);
  json severity = severity_counts(), status = json::object();
  for (auto name : kStatusNames) status[std::string(name)] = 0;
  std::int64_t findings = 0;
  Statement groups(s.db, s.file,
                   std::string("SELECT f.severity, f.status, count(*) FROM finding f WHERE f.run_id IN (") + kCurrentRuns +
                       ") GROUP BY f.severity, f.status");
  while (groups.step("counting findings")) {
    const std::int64_t n = groups.integer(2);
    findings += n;
    const std::string sev = groups.text(0), st = groups.text(1);
    if (severity.contains(sev)) severity[sev] = severity[sev].get<std::int64_t>() + n;
    // A status this Aegis does not know (a newer one, or a hand edit) is still counted under its name.
    status[st] = (status.contains(st) ? status[st].get<std::int64_t>() : 0) + n;
  }
  auto count = [&](const char* sql) {
    Statement query(s.db, s.file, sql);
    query.step("counting");
    return query.integer(0);
  };
  return {{"severity", std::move(severity)},
          {"status", std::move(status)},
          {"assets", count("SELECT count(DISTINCT asset) FROM finding_run WHERE asset <> ''")},
          {"runs", count("SELECT count(*) FROM finding_run")},
          {"assessments", count("SELECT count(*) FROM assessment")},
          {"findings", findings}};
}

json DashboardStore::inventory() const {
  Impl& s = *impl_;
  std::lock_guard lock(s.mutex);
  Transaction tx(s.db, s.file, false);
  struct Asset {
    std::int64_t runs = 0, last_ms = INT64_MIN;
    std::set<std::string> commands;
    std::string last_run_at;
    json open = severity_counts();
  };
  std::map<std::string, Asset> assets;
  {
    Statement query(s.db, s.file,
                    "SELECT asset, command, count(*), max(started_ms) FROM finding_run WHERE asset <> '' "
                    "GROUP BY asset, command");
    while (query.step("listing assets")) {
      Asset& asset = assets[query.text(0)];
      asset.commands.insert(query.text(1));
      asset.runs += query.integer(2);
    }
  }
  {
    // The newest run of each asset (across its commands) gives last_run_at.
    Statement query(s.db, s.file,
                    std::string("SELECT c.asset, c.started_at, c.started_ms FROM finding_run c WHERE c.id IN (") +
                        kCurrentRuns + ") AND c.asset <> ''");
    while (query.step("listing assets")) {
      auto it = assets.find(query.text(0));
      if (it == assets.end()) continue;
      if (query.integer(2) > it->second.last_ms) {
        it->second.last_ms = query.integer(2);
        it->second.last_run_at = query.text(1);
      }
    }
  }
  {
    Statement query(s.db, s.file,
                    std::string("SELECT r.asset, f.severity, count(*) FROM finding_run r JOIN finding f ON f.run_id = r.id "
                                "WHERE r.id IN (") +
                        kCurrentRuns + ") AND r.asset <> '' AND +f.status = 'open' GROUP BY r.asset, f.severity");
    while (query.step("counting open findings")) {
      auto it = assets.find(query.text(0));
      const std::string sev = query.text(1);
      if (it != assets.end() && it->second.open.contains(sev)) it->second.open[sev] = query.integer(2);
    }
  }
  json items = json::array();
  for (auto& [name, asset] : assets)
    items.push_back({{"name", name},
                     {"runs", asset.runs},
                     {"commands", asset.commands},
                     {"last_run_at", asset.last_run_at.empty() ? json(nullptr) : json(asset.last_run_at)},
                     {"open", std::move(asset.open)}});
  return {{"assets", std::move(items)}};
}

json DashboardStore::assessments(std::size_t limit, std::size_t offset) const {
  Impl& s = *impl_;
  std::lock_guard lock(s.mutex);
  Transaction tx(s.db, s.file, false);
  Statement count(s.db, s.file, "SELECT count(*) FROM assessment");
  count.step("counting assessments");
  json items = json::array();
  Statement query(s.db, s.file,
                  "SELECT a.id, a.inventory, a.started_at, a.finished_at, a.status, "
                  "(SELECT count(*) FROM assessment_job j WHERE j.assessment_id = a.id), "
                  "(SELECT count(*) FROM assessment_job j WHERE j.assessment_id = a.id AND j.state = 'failed') "
                  "FROM assessment a ORDER BY a.started_ms DESC, a.id DESC LIMIT ? OFFSET ?");
  query.bind(1, static_cast<std::int64_t>(std::min(limit, kMaxPageSize)))
      .bind(2, static_cast<std::int64_t>(std::min<std::size_t>(offset, INT64_MAX)));
  while (query.step("listing assessments"))
    items.push_back({{"id", query.integer(0)},
                     {"inventory", query.text(1)},
                     {"started_at", query.text(2)},
                     {"finished_at", query.text(3)},
                     {"status", query.text(4)},
                     {"jobs", query.integer(5)},
                     {"failed_jobs", query.integer(6)}});
  return {{"total", count.integer(0)}, {"items", std::move(items)}};
}

std::optional<json> DashboardStore::assessment(std::int64_t id) const {
  Impl& s = *impl_;
  std::lock_guard lock(s.mutex);
  Transaction tx(s.db, s.file, false);
  Statement query(s.db, s.file, "SELECT id, inventory, started_at, finished_at, status FROM assessment WHERE id = ?");
  query.bind(1, id);
  if (!query.step("reading an assessment")) return std::nullopt;
  json out{{"id", query.integer(0)},
           {"inventory", query.text(1)},
           {"started_at", query.text(2)},
           {"finished_at", query.text(3)},
           {"status", query.text(4)},
           {"jobs", json::array()}};
  Statement jobs(s.db, s.file,
                 "SELECT asset, check_name, state, run_id, error, worker, finished_at FROM assessment_job "
                 "WHERE assessment_id = ? ORDER BY recorded_order");
  jobs.bind(1, id);
  while (jobs.step("listing an assessment's jobs"))
    out["jobs"].push_back({{"asset", jobs.text(0)},
                           {"check", jobs.text(1)},
                           {"state", jobs.text(2)},
                           {"run_id", jobs.is_null(3) ? json(nullptr) : json(jobs.integer(3))},
                           {"error", jobs.text(4)},
                           {"worker", jobs.text(5)},
                           {"finished_at", jobs.text(6)}});
  return out;
}

json DashboardStore::runs(const std::optional<std::string>& asset, const std::optional<std::string>& command,
                          std::optional<std::int64_t> assessment, std::size_t limit, std::size_t offset) const {
  Impl& s = *impl_;
  std::string where = " WHERE 1";
  std::vector<BindValue> binds;
  if (asset) {
    where += " AND r.asset = ?";
    binds.emplace_back(*asset);
  }
  if (command) {
    where += " AND r.command = ?";
    binds.emplace_back(*command);
  }
  if (assessment) {
    where += " AND r.id IN (SELECT run_id FROM assessment_job WHERE assessment_id = ? AND state = 'done')";
    binds.emplace_back(*assessment);
  }
  std::lock_guard lock(s.mutex);
  Transaction tx(s.db, s.file, false);
  Statement count(s.db, s.file, "SELECT count(*) FROM finding_run r" + where);
  count.bind_all(binds);
  count.step("counting runs");
  json items = json::array();
  Statement query(s.db, s.file,
                  std::string("SELECT ") + kRunColumns + " FROM finding_run r" + where +
                      " ORDER BY r.started_ms DESC, r.id DESC LIMIT ? OFFSET ?");
  binds.emplace_back(static_cast<std::int64_t>(std::min(limit, kMaxPageSize)));
  binds.emplace_back(static_cast<std::int64_t>(std::min<std::size_t>(offset, INT64_MAX)));
  query.bind_all(binds);
  while (query.step("listing runs")) items.push_back(s.run_json(query));
  return {{"total", count.integer(0)}, {"items", std::move(items)}};
}

std::optional<json> DashboardStore::run(std::int64_t id) const {
  Impl& s = *impl_;
  std::lock_guard lock(s.mutex);
  Transaction tx(s.db, s.file, false);
  Statement query(s.db, s.file, std::string("SELECT ") + kRunColumns + ", r.summary_json FROM finding_run r WHERE r.id = ?");
  query.bind(1, id);
  if (!query.step("reading a run")) return std::nullopt;
  json run = s.run_json(query);
  run["summary"] = parse_stored_json(query.text(12));
  return run;
}

json DashboardStore::findings(const FindingQuery& q) const {
  Impl& s = *impl_;
  if (q.scope != "current" && q.scope != "all")
    throw core::Error("unknown findings scope '" + std::string(trimmed_name(q.scope)) + "'", "use scope=current or scope=all");
  for (const auto& severity : q.severities)
    if (severity_index(severity) < 0)
      throw core::Error("unknown severity '" + std::string(trimmed_name(severity)) + "'",
                        "use critical, high, medium, low or info");
  for (const auto& status : q.statuses)
    if (!store::is_finding_status(status))
      throw core::Error("unknown finding status '" + std::string(trimmed_name(status)) + "'",
                        "use open, acknowledged, accepted-risk, false-positive or fixed");
  std::string order;
  const std::string rank = kSeverityRank;
  if (q.sort == "-severity") order = rank + " DESC, f.id";
  else if (q.sort == "severity") order = rank + ", f.id";
  else if (q.sort == "id") order = "f.id";
  else if (q.sort == "-id") order = "f.id DESC";
  else if (q.sort == "asset") order = "r.asset, " + rank + " DESC, f.id";
  else if (q.sort == "rule") order = "f.rule_id, " + rank + " DESC, f.id";
  else
    throw core::Error("unknown sort '" + std::string(trimmed_name(q.sort)) + "'",
                      "use severity, -severity, id, -id, asset or rule");

  // Which runs: one run, an assessment's, the current ones, or all. asset and command narrow the
  // run set itself, so that the findings are reached through the run index.
  std::string where = " WHERE 1";
  std::vector<BindValue> binds;
  std::string runs_sql;
  std::vector<BindValue> run_binds;
  if (q.run) {
    runs_sql = "SELECT r2.id FROM finding_run r2 WHERE r2.id = ?";
    run_binds.emplace_back(*q.run);
  } else if (q.assessment) {
    runs_sql =
        "SELECT r2.id FROM finding_run r2 WHERE r2.id IN (SELECT run_id FROM assessment_job WHERE assessment_id = ? "
        "AND state = 'done' AND run_id IS NOT NULL)";
    run_binds.emplace_back(*q.assessment);
  } else if (q.scope == "current") {
    runs_sql = std::string("SELECT r2.id FROM finding_run r2 WHERE r2.id IN (") + kCurrentRuns + ")";
  } else if (q.asset || q.command) {
    runs_sql = "SELECT r2.id FROM finding_run r2 WHERE 1";
  }
  if (!runs_sql.empty()) {
    if (q.asset) {
      runs_sql += " AND r2.asset = ?";
      run_binds.emplace_back(*q.asset);
    }
    if (q.command) {
      runs_sql += " AND r2.command = ?";
      run_binds.emplace_back(*q.command);
    }
    where += " AND f.run_id IN (" + runs_sql + ")";
    binds.insert(binds.end(), run_binds.begin(), run_binds.end());
  }
  auto in_list = [&](const char* column, const std::vector<std::string>& values) {
    if (values.empty()) return;
    where += std::string(" AND ") + column + " IN (";
    for (std::size_t i = 0; i < values.size(); ++i) {
      where += i ? ", ?" : "?";
      binds.emplace_back(values[i]);
    }
    where += ")";
  };
  // With a run set, the run index leads (a unary + keeps SQLite from preferring the severity or status
  // index, which would visit those findings of every run); without one, those indexes are the way in.
  in_list(runs_sql.empty() ? "f.severity" : "+f.severity", q.severities);
  in_list(runs_sql.empty() ? "f.status" : "+f.status", q.statuses);
  if (q.atlas) {
    // The column is a JSON array of ids: match the quoted id, or the id followed by a sub-technique.
    where += " AND (instr(f.atlas, ?) > 0 OR instr(f.atlas, ?) > 0)";
    binds.emplace_back("\"" + *q.atlas + "\"");
    binds.emplace_back("\"" + *q.atlas + ".");
  }
  if (q.q && !q.q->empty()) {
    // LIKE ignores ASCII case; the user's %, _ and backslash are escaped to match themselves.
    where += " AND (f.rule_id LIKE ? ESCAPE '\\' OR f.title LIKE ? ESCAPE '\\' OR f.evidence LIKE ? ESCAPE '\\' "
             "OR f.file LIKE ? ESCAPE '\\')";
    const std::string pattern = like_pattern(*q.q);
    for (int i = 0; i < 4; ++i) binds.emplace_back(pattern);
  }
  const bool needs_run = q.sort == "asset";
  const std::size_t limit = std::min(q.limit, kMaxPageSize);
  const std::string from = needs_run ? " FROM finding f JOIN finding_run r ON r.id = f.run_id" : " FROM finding f";

  std::lock_guard lock(s.mutex);
  Transaction tx(s.db, s.file, false);
  Statement count(s.db, s.file, "SELECT count(*) FROM finding f" + where);
  count.bind_all(binds);
  count.step("counting findings");
  const std::int64_t total = count.integer(0);

  // The page's ids first (over the covering index), then those rows whole.
  std::vector<std::int64_t> ids;
  {
    std::vector<BindValue> page_binds = binds;
    page_binds.emplace_back(static_cast<std::int64_t>(limit));
    page_binds.emplace_back(static_cast<std::int64_t>(std::min<std::size_t>(q.offset, INT64_MAX)));
    Statement page(s.db, s.file, "SELECT f.id" + from + where + " ORDER BY " + order + " LIMIT ? OFFSET ?");
    page.bind_all(page_binds);
    while (page.step("listing findings")) ids.push_back(page.integer(0));
  }
  json items = json::array();
  if (!ids.empty()) {
    std::string sql = std::string("SELECT ") + kFindingColumns + " WHERE f.id IN (";
    for (std::size_t i = 0; i < ids.size(); ++i) sql += i ? ", ?" : "?";
    sql += ")";
    Statement rows(s.db, s.file, sql);
    for (std::size_t i = 0; i < ids.size(); ++i) rows.bind(static_cast<int>(i) + 1, ids[i]);
    std::unordered_map<std::int64_t, json> by_id;
    while (rows.step("reading findings")) by_id.emplace(rows.integer(0), read_finding(rows));
    for (std::int64_t id : ids)
      if (auto it = by_id.find(id); it != by_id.end()) items.push_back(std::move(it->second));
  }
  return {{"total", total}, {"limit", limit}, {"offset", q.offset}, {"items", std::move(items)}};
}

std::optional<json> DashboardStore::finding(std::int64_t id) const {
  std::lock_guard lock(impl_->mutex);
  Transaction tx(impl_->db, impl_->file, false);
  return impl_->finding_with_history(id);
}

std::vector<DashboardStore::TechniqueCount> DashboardStore::atlas_counts() const {
  Impl& s = *impl_;
  struct Tally {
    std::size_t findings = 0, open = 0;
    int highest = -1;
  };
  std::map<std::string, Tally> tallies;
  {
    std::lock_guard lock(s.mutex);
    // Few distinct atlas texts: group by them and parse each once.
    Statement query(s.db, s.file,
                    std::string("SELECT f.atlas, f.severity, f.status = 'open', count(*) FROM finding f WHERE f.run_id IN (") +
                        kCurrentRuns + ") AND f.atlas <> '[]' GROUP BY f.atlas, f.severity, f.status = 'open'");
    while (query.step("counting findings per ATLAS technique")) {
      const json ids = parse_list(query.text(0));
      const int severity = severity_index(query.text(1));
      const bool open = query.integer(2) != 0;
      const auto n = static_cast<std::size_t>(query.integer(3));
      std::set<std::string> seen;  // an id listed twice in one finding counts once
      for (const auto& id : ids) {
        const std::string text = id.get<std::string>();
        if (!seen.insert(text).second) continue;
        Tally& tally = tallies[text];
        tally.findings += n;
        if (open) tally.open += n;
        tally.highest = std::max(tally.highest, severity);
      }
    }
  }
  std::vector<TechniqueCount> out;
  out.reserve(tallies.size());
  for (const auto& [id, tally] : tallies)
    out.push_back({id, tally.findings, tally.open,
                   tally.highest < 0 ? std::string() : std::string(kSeverityNames[static_cast<std::size_t>(tally.highest)])});
  return out;
}

std::vector<json> DashboardStore::latest_summaries(std::string_view command) const {
  Impl& s = *impl_;
  std::lock_guard lock(s.mutex);
  std::vector<json> out;
  Statement query(s.db, s.file,
                  std::string("SELECT c.id, c.asset, c.started_at, c.summary_json FROM finding_run c WHERE c.command = ? "
                              "AND c.id IN (") +
                      kCurrentRuns + ") ORDER BY c.asset, c.id");
  query.bind(1, command);
  while (query.step("reading run summaries")) {
    json summary = parse_stored_json(query.text(3));
    if (summary.is_null()) continue;
    out.push_back({{"run_id", query.integer(0)},
                   {"asset", query.text(1)},
                   {"started_at", query.text(2)},
                   {"summary", std::move(summary)}});
  }
  return out;
}

}  // namespace aegis::web
