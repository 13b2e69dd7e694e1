#include "aegis/store/finding_store.h"

#include <openssl/evp.h>
#include <sqlite3.h>

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>

#include "aegis/core/error.h"
#include "aegis/core/json_shape.h"

// Layout. finding_run holds one row per run; finding_run_input its inputs (a table, not a JSON array,
// because paths need not be UTF-8); finding one row per finding with the location split into
// columns, severity as its name and the ATLAS / NIST AI RMF references as JSON arrays. started_ms
// (milliseconds since the epoch, parsed from started_at) orders runs: RFC 3339 text written with
// different precisions or offsets does not sort as the instants do.
//
// Concurrency. WAL mode: readers never wait for a writer. A run is written in one BEGIN IMMEDIATE
// transaction, which takes the write lock before reading anything, so two processes recording at
// once queue on the busy timeout instead of failing with a lock upgrade deadlock; the findings of a
// run appear together or not at all.

namespace aegis::store {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr const char* kComponent = "findings";

constexpr std::array<std::string_view, 5> kStatuses = {kStatusOpen, kStatusAcknowledged, kStatusAcceptedRisk,
                                                       kStatusFalsePositive, kStatusFixed};

// Tables an Aegis store may hold before the findings arrive (lineage graph, audit log): a file with
// any of them is ours; a non-empty database with none of them belongs to someone else.
constexpr std::array<std::string_view, 9> kAegisTables = {"aegis_schema", "finding_run", "finding",
                                                          "artifact",     "step",        "step_artifact",
                                                          "audit_log",    "audit_meta",  "audit_checkpoints"};

const char* kStoreHint = "pass another file with --store (or set AEGIS_STORE)";

std::string why_sqlite(sqlite3* db) {
  std::string why = sqlite3_errmsg(db);
  if (int err = sqlite3_system_errno(db); err != 0) why += std::string(" (") + std::strerror(err) + ")";
  return why;
}

// Turns an SQLite result code into an error that names the store and says what to do.
[[noreturn]] void fail(sqlite3* db, int rc, const std::string& file, const std::string& doing) {
  const std::string where = "finding store " + file + ": " + doing + ": ";
  switch (rc & 0xff) {
    case SQLITE_NOTADB:
      throw core::Error(file + " is not an SQLite database, so it cannot be a finding store", kStoreHint);
    case SQLITE_CORRUPT:
      throw core::Error(where + why_sqlite(db), "the store is damaged: keep it for inspection and " + std::string(kStoreHint));
    case SQLITE_BUSY:
      throw core::Error(where + "another process kept the store locked past the busy timeout (" + why_sqlite(db) + ")",
                        "try again when the other Aegis run has finished, or use a separate store");
    case SQLITE_TOOBIG:
      throw core::Error(where + "a value is larger than SQLite accepts",
                        "this is a bug in the command that reported it: it should shorten its evidence");
    case SQLITE_FULL:
      throw core::Error(where + why_sqlite(db), "free disk space, or put the store on another disk");
    case SQLITE_READONLY:
    case SQLITE_CANTOPEN:
    case SQLITE_PERM:
    case SQLITE_IOERR:
      throw core::Error(where + why_sqlite(db),
                        "make the store and its folder writable (SQLite writes -wal and -shm files beside it), or " +
                            std::string(kStoreHint));
    default:
      throw core::Error(where + why_sqlite(db), "the store may be damaged or of another version; " + std::string(kStoreHint));
  }
}

// A prepared statement that finalises itself; errors name the store.
class Statement {
 public:
  Statement(sqlite3* db, const std::string& file, const std::string& sql) : db_(db), file_(&file) {
    if (int rc = sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt_, nullptr); rc != SQLITE_OK)
      fail(db, rc, file, "preparing a query");
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;

  Statement& bind(int index, std::string_view text) {
    // A zero-length text must still bind as '' (not NULL): give SQLite a valid pointer.
    return check(sqlite3_bind_text64(stmt_, index, text.empty() ? "" : text.data(), text.size(), SQLITE_TRANSIENT,
                                     SQLITE_UTF8));
  }
  Statement& bind(int index, std::int64_t value) { return check(sqlite3_bind_int64(stmt_, index, value)); }
  // uint64 locations keep all their bits: SQLite's INTEGER is signed, so values above INT64_MAX are
  // stored as their two's-complement image and turned back on reading.
  Statement& bind(int index, const std::optional<std::uint64_t>& value) {
    return check(value ? sqlite3_bind_int64(stmt_, index, static_cast<std::int64_t>(*value)) : sqlite3_bind_null(stmt_, index));
  }
  bool step(const char* doing) {
    const int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    fail(db_, rc, *file_, doing);
  }
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  std::string text(int column) const {
    const void* p = sqlite3_column_blob(stmt_, column);
    const int size = sqlite3_column_bytes(stmt_, column);
    return p ? std::string(static_cast<const char*>(p), static_cast<std::size_t>(size)) : std::string();
  }
  std::int64_t integer(int column) const { return sqlite3_column_int64(stmt_, column); }
  std::optional<std::uint64_t> optional_u64(int column) const {
    if (sqlite3_column_type(stmt_, column) == SQLITE_NULL) return std::nullopt;
    return static_cast<std::uint64_t>(sqlite3_column_int64(stmt_, column));
  }

 private:
  Statement& check(int rc) {
    // SQLITE_TOOBIG: a text longer than SQLite's limit (1 GB by default).
    if (rc != SQLITE_OK) fail(db_, rc, *file_, "binding a value");
    return *this;
  }

  sqlite3* db_;
  const std::string* file_;
  sqlite3_stmt* stmt_ = nullptr;
};

void exec(sqlite3* db, const std::string& file, const char* sql, const char* doing) {
  if (int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr); rc != SQLITE_OK) fail(db, rc, file, doing);
}

// BEGIN IMMEDIATE ... COMMIT, rolled back when left early.
class Transaction {
 public:
  Transaction(sqlite3* db, const std::string& file) : db_(db), file_(file) {
    exec(db_, file_, "BEGIN IMMEDIATE", "starting a transaction");
  }
  ~Transaction() {
    if (!done_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
  }
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  void commit() {
    exec(db_, file_, "COMMIT", "committing");
    done_ = true;
  }

 private:
  sqlite3* db_;
  const std::string& file_;
  bool done_ = false;
};

// ---------------------------------------------------------------------------------------------
// Time

// Days from 1970-01-01 to the given proleptic Gregorian date. Years are shifted to start in March
// so that the leap day falls at the end of the year.
std::int64_t days_from_civil(std::int64_t year, unsigned month, unsigned day) {
  year -= month <= 2;
  const std::int64_t era = (year >= 0 ? year : year - 399) / 400;
  const std::int64_t year_of_era = year - era * 400;                              // [0, 399]
  const std::int64_t day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;  // [0, 365]
  const std::int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + day_of_era - 719468;
}

bool is_leap(int year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

// Reads `count` decimal digits at `pos`.
std::optional<int> digits(std::string_view text, std::size_t& pos, std::size_t count) {
  if (pos + count > text.size()) return std::nullopt;
  int value = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const char c = text[pos + i];
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  pos += count;
  return value;
}

bool expect(std::string_view text, std::size_t& pos, std::string_view allowed) {
  if (pos >= text.size() || allowed.find(text[pos]) == std::string_view::npos) return false;
  ++pos;
  return true;
}

// RFC 3339 date-time (section 5.6; 'T' may be 't' or a space, as the RFC allows) -> milliseconds
// since the epoch, UTC. Fractions beyond milliseconds are dropped; a leap second counts as :59.
std::optional<std::int64_t> parse_rfc3339(std::string_view text) {
  std::size_t pos = 0;
  auto year = digits(text, pos, 4);
  if (!year || !expect(text, pos, "-")) return std::nullopt;
  auto month = digits(text, pos, 2);
  if (!month || *month < 1 || *month > 12 || !expect(text, pos, "-")) return std::nullopt;
  auto day = digits(text, pos, 2);
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (!day || *day < 1 || *day > kDays[*month - 1] + (*month == 2 && is_leap(*year) ? 1 : 0)) return std::nullopt;
  if (!expect(text, pos, "Tt ")) return std::nullopt;
  auto hour = digits(text, pos, 2);
  if (!hour || *hour > 23 || !expect(text, pos, ":")) return std::nullopt;
  auto minute = digits(text, pos, 2);
  if (!minute || *minute > 59 || !expect(text, pos, ":")) return std::nullopt;
  auto second = digits(text, pos, 2);
  if (!second || *second > 60) return std::nullopt;
  int millis = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    std::size_t count = 0;
    for (; pos < text.size() && text[pos] >= '0' && text[pos] <= '9'; ++pos, ++count)
      if (count < 3) millis = millis * 10 + (text[pos] - '0');
    if (count == 0) return std::nullopt;
    for (; count < 3; ++count) millis *= 10;
  }
  int offset_minutes = 0;
  if (expect(text, pos, "Zz")) {
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    const int sign = text[pos++] == '-' ? -1 : 1;
    auto offset_hours = digits(text, pos, 2);
    if (!offset_hours || *offset_hours > 23 || !expect(text, pos, ":")) return std::nullopt;
    auto offset_mins = digits(text, pos, 2);
    if (!offset_mins || *offset_mins > 59) return std::nullopt;
    offset_minutes = sign * (*offset_hours * 60 + *offset_mins);
  } else {
    return std::nullopt;
  }
  if (pos != text.size()) return std::nullopt;
  const std::int64_t days = days_from_civil(*year, static_cast<unsigned>(*month), static_cast<unsigned>(*day));
  const std::int64_t seconds =
      days * 86400 + *hour * 3600 + (*minute - offset_minutes) * 60 + std::min(*second, 59);
  return seconds * 1000 + millis;
}

std::string now_utc() {
  const auto now = std::chrono::system_clock::now();
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[40];
  const std::size_t length = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(text + length, sizeof text - length, ".%03dZ", static_cast<int>(millis));
  return text;
}

std::int64_t checked_time(const std::string& text, const char* field) {
  auto millis = parse_rfc3339(text);
  if (!millis)
    throw core::Error("the run's " + std::string(field) + " '" + text + "' is not an RFC 3339 time",
                      "write it like 2025-06-01T12:00:00Z");
  return *millis;
}

// ---------------------------------------------------------------------------------------------
// Fingerprints

template <typename T, void (*Free)(T*)>
struct OpenSslFree {
  void operator()(T* p) const { Free(p); }
};

// SHA-256 through EVP, with the algorithm fetched once and the context reused across findings.
class Sha256 {
 public:
  Sha256() : md_(EVP_MD_fetch(nullptr, "SHA256", nullptr)), ctx_(EVP_MD_CTX_new()) {
    if (!md_ || !ctx_) throw core::Error("OpenSSL offers no SHA-256", "check the OpenSSL installation (libssl3)");
  }
  std::string hex(std::string_view bytes, std::size_t digits) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (EVP_DigestInit_ex2(ctx_.get(), md_.get(), nullptr) != 1 ||
        EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size()) != 1 ||
        EVP_DigestFinal_ex(ctx_.get(), digest, &size) != 1)
      throw core::Error("SHA-256 failed in OpenSSL", "check the OpenSSL installation (libssl3)");
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(std::min<std::size_t>(digits, 2 * size));
    for (unsigned int i = 0; i < size && out.size() < digits; ++i) {
      out += kHex[digest[i] >> 4];
      if (out.size() < digits) out += kHex[digest[i] & 0xf];
    }
    return out;
  }

 private:
  std::unique_ptr<EVP_MD, OpenSslFree<EVP_MD, EVP_MD_free>> md_;
  std::unique_ptr<EVP_MD_CTX, OpenSslFree<EVP_MD_CTX, EVP_MD_CTX_free>> ctx_;
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// The encoding hashed for a fingerprint: the tag "aegis.finding.v1", then as netstrings ("LEN:BYTES,",
// so that no two field lists encode alike) rule_id, file, member, offset, row, line (decimal; an
// absent number is "~,", distinct from any number), column, and the evidence with leading and
// trailing whitespace removed and every inner run of it replaced by one space. Stored rows keep the
// fingerprint they were written with: a change here needs a new tag and a schema migration that
// recomputes the old rows, or every finding would look fixed and new at the next reassessment.
std::string fingerprint_input(const core::Finding& finding) {
  std::string encoded = "aegis.finding.v1";
  auto field = [&encoded](std::string_view value) {
    encoded += std::to_string(value.size());
    encoded += ':';
    encoded += value;
    encoded += ',';
  };
  auto number = [&](const std::optional<std::uint64_t>& value) {
    if (value) field(std::to_string(*value));
    else encoded += "~,";
  };
  field(finding.rule_id);
  field(finding.location.file);
  field(finding.location.member);
  number(finding.location.offset);
  number(finding.location.row);
  number(finding.location.line);
  field(finding.location.column);
  std::string evidence;
  evidence.reserve(finding.evidence.size());
  bool pending_space = false;
  for (char c : finding.evidence) {
    if (is_space(c)) {
      pending_space = !evidence.empty();
      continue;
    }
    if (pending_space) evidence += ' ';
    pending_space = false;
    evidence += c;
  }
  field(evidence);
  return encoded;
}

constexpr std::size_t kFingerprintDigits = 32;

// ---------------------------------------------------------------------------------------------
// Rows

std::string json_list(const std::vector<std::string>& items) {
  if (items.empty()) return "[]";  // most findings: skip building a JSON value
  json array = json::array();
  for (const auto& item : items) array.push_back(item);
  return array.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::vector<std::string> parse_list(const std::string& text) {
  std::vector<std::string> items;
  if (text == "[]") return items;
  // The store is a file anyone with access can edit: never hand deep nesting to a recursive parser.
  if (core::measure_json(text, 2).depth > 1) return items;
  json parsed = json::parse(text, nullptr, false);
  if (parsed.is_array())
    for (const auto& item : parsed)
      if (item.is_string()) items.push_back(item.get<std::string>());
  return items;
}

constexpr const char* kRunColumns =
    "r.id, r.command, r.asset, r.started_at, r.finished_at, r.aegis_version, r.exit_code, r.summary_json, "
    "r.info_count, r.low_count, r.medium_count, r.high_count, r.critical_count";

constexpr const char* kFindingColumns =
    "id, run_id, fingerprint, rule_id, severity, title, file, member, byte_offset, row_number, line, column_name, "
    "evidence, atlas, nist_ai_rmf, remediation, properties_json, status";

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
  for (int i = 0; i < 5; ++i) run.counts[static_cast<std::size_t>(i)] = static_cast<std::size_t>(std::max<std::int64_t>(0, row.integer(8 + i)));
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

}  // namespace

bool is_finding_status(std::string_view status) {
  return std::find(kStatuses.begin(), kStatuses.end(), status) != kStatuses.end();
}

std::string finding_fingerprint(const core::Finding& finding) {
  return Sha256().hex(fingerprint_input(finding), kFingerprintDigits);
}

// ---------------------------------------------------------------------------------------------
// The store

struct FindingStore::Impl {
  fs::path path;
  std::string file;  // path as text, for messages
  FindingStoreOptions options;
  sqlite3* db = nullptr;
  // Calls from several threads are serialised: a connection runs one transaction at a time.
  // Recursive so that a for_each_finding visitor that calls back anyway cannot deadlock.
  mutable std::recursive_mutex mutex;

  ~Impl() { sqlite3_close(db); }
  void open();
  struct SchemaState {
    bool current = false;  // the findings tables exist, at this version
  };
  SchemaState check_schema();
  void create_schema();
  std::vector<std::string> inputs_of(std::int64_t run_id) const;
  RunDiff diff(std::int64_t old_run, std::int64_t new_run) const;
};

FindingStore::FindingStore(const fs::path& file, FindingStoreOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->path = file;
  impl_->file = file.string();
  impl_->options = options;
  impl_->open();
}

FindingStore::~FindingStore() = default;

const fs::path& FindingStore::file() const { return impl_->path; }

void FindingStore::Impl::open() {
  std::error_code ec;
  if (options.read_only) {
    if (!fs::is_regular_file(path, ec))
      throw core::Error("no finding store at " + file, "pass the file that an earlier run wrote with --store");
  } else if (path.has_parent_path() && !fs::is_directory(path.parent_path(), ec)) {
    fs::create_directories(path.parent_path(), ec);
    if (ec)
      throw core::Error("cannot create the folder " + path.parent_path().string() + " for the finding store " + file + ": " +
                            ec.message(),
                        "make the folder writable, or " + std::string(kStoreHint));
  }
  const int flags = (options.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE) |
                    SQLITE_OPEN_FULLMUTEX;
  if (int rc = sqlite3_open_v2(file.c_str(), &db, flags, nullptr); rc != SQLITE_OK) {
    if (!db) throw core::Error("cannot open the finding store " + file + ": out of memory");
    const bool exists = fs::exists(path, ec);
    const std::string folder = fs::absolute(path, ec).parent_path().string();
    std::string why = why_sqlite(db);
    if (!exists) {
      // SQLite's errno is that of its last attempt (a read-only retry), not of the create: ask the folder.
      why = sqlite3_errmsg(db);
      if (::access(folder.c_str(), W_OK) != 0) why = "the folder " + folder + " is not writable (" + std::strerror(errno) + ")";
    }
    throw core::Error(std::string(exists ? "cannot open the finding store " : "cannot create the finding store ") + file + ": " +
                          why,
                      exists ? "make the file and its folder writable, or " + std::string(kStoreHint)
                             : "make the folder " + folder + " writable, or " + std::string(kStoreHint));
  }
  sqlite3_extended_result_codes(db, 1);
  sqlite3_busy_timeout(db, static_cast<int>(std::clamp<std::int64_t>(options.busy_timeout.count(), 0, 1 << 30)));
  // The first statement that reads the file: a file that is not SQLite fails here with NOTADB.
  {
    Statement probe(db, file, "SELECT count(*) FROM sqlite_master");
    probe.step("reading its tables");
  }
  // Before anything is written (even the switch to WAL): another application's database is left as
  // it was found.
  const SchemaState state = check_schema();
  if (options.read_only) {
    if (!state.current)
      throw core::Error(file + " holds no findings yet", "run a command with --store " + file + " first");
  } else {
    if (sqlite3_db_readonly(db, "main") == 1)
      throw core::Error("the finding store " + file + " is read-only", "make it writable, or " + std::string(kStoreHint));
    {
      Statement mode(db, file, "PRAGMA journal_mode = WAL");
      if (!mode.step("switching to write-ahead logging") || mode.text(0) != "wal")
        throw core::Error("the finding store " + file + " cannot use write-ahead logging",
                          "put the store on a local file system, or " + std::string(kStoreHint));
    }
    // With WAL, NORMAL loses no committed run when a process dies; only an OS crash can take the
    // last ones. A million-finding run grows the -wal file past 100 MB: give that space back after.
    exec(db, file, "PRAGMA synchronous = NORMAL", "setting synchronous mode");
    exec(db, file, "PRAGMA journal_size_limit = 67108864", "limiting the write-ahead log");
    // Created (or upgraded) under the write lock; an up-to-date store is opened without taking it,
    // so that opening never waits for another process's large run.
    if (!state.current) create_schema();
  }
  exec(db, file, "PRAGMA foreign_keys = ON", "enabling foreign keys");
}

// Refuses a newer schema, and a database that belongs to another application.
FindingStore::Impl::SchemaState FindingStore::Impl::check_schema() {
  bool has_schema_table = false, has_run_table = false, any_aegis = false;
  std::string foreign;
  {
    Statement tables(db, file, "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name");
    while (tables.step("reading its tables")) {
      const std::string name = tables.text(0);
      const bool ours = std::find(kAegisTables.begin(), kAegisTables.end(), name) != kAegisTables.end();
      any_aegis = any_aegis || ours;
      if (!ours && foreign.empty()) foreign = name;
      if (name == "aegis_schema") has_schema_table = true;
      if (name == "finding_run") has_run_table = true;
    }
  }
  if (!any_aegis && !foreign.empty())
    throw core::Error(file + " is an SQLite database of another application (it holds a table '" + foreign +
                          "'), not an Aegis store",
                      kStoreHint);
  std::optional<std::int64_t> version;
  if (has_schema_table) {
    Statement query(db, file, "SELECT version FROM aegis_schema WHERE component = ?");
    query.bind(1, std::string_view(kComponent));
    if (query.step("reading the schema version")) version = query.integer(0);
  }
  if (version && *version > kFindingSchemaVersion)
    throw core::Error("the finding store " + file + " was written by a newer Aegis (findings schema " +
                          std::to_string(*version) + ", this Aegis reads " + std::to_string(kFindingSchemaVersion) + ")",
                      "upgrade Aegis, or " + std::string(kStoreHint));
  return {version && *version == kFindingSchemaVersion && has_run_table};
}

void FindingStore::Impl::create_schema() {
  Transaction tx(db, file);
  check_schema();  // again under the write lock: another process may have got here first
  exec(db, file, "CREATE TABLE IF NOT EXISTS aegis_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)",
       "creating tables");
  exec(db, file,
       "CREATE TABLE IF NOT EXISTS finding_run (id INTEGER PRIMARY KEY, command TEXT NOT NULL, asset TEXT NOT NULL, "
       "started_at TEXT NOT NULL, started_ms INTEGER NOT NULL, finished_at TEXT NOT NULL, aegis_version TEXT NOT NULL, "
       "exit_code INTEGER NOT NULL, summary_json TEXT NOT NULL, info_count INTEGER NOT NULL, low_count INTEGER NOT NULL, "
       "medium_count INTEGER NOT NULL, high_count INTEGER NOT NULL, critical_count INTEGER NOT NULL)",
       "creating tables");
  exec(db, file, "CREATE INDEX IF NOT EXISTS finding_run_by_asset ON finding_run(asset, command, started_ms)",
       "creating indexes");
  exec(db, file,
       "CREATE TABLE IF NOT EXISTS finding_run_input (run_id INTEGER NOT NULL REFERENCES finding_run(id) ON DELETE CASCADE, "
       "position INTEGER NOT NULL, input TEXT NOT NULL, PRIMARY KEY (run_id, position)) WITHOUT ROWID",
       "creating tables");
  exec(db, file,
       "CREATE TABLE IF NOT EXISTS finding (id INTEGER PRIMARY KEY, "
       "run_id INTEGER NOT NULL REFERENCES finding_run(id) ON DELETE CASCADE, fingerprint TEXT NOT NULL, "
       "rule_id TEXT NOT NULL, severity TEXT NOT NULL CHECK (severity IN ('info', 'low', 'medium', 'high', 'critical')), "
       "title TEXT NOT NULL, file TEXT NOT NULL, member TEXT NOT NULL, byte_offset INTEGER, row_number INTEGER, "
       "line INTEGER, column_name TEXT NOT NULL, evidence TEXT NOT NULL, atlas TEXT NOT NULL, nist_ai_rmf TEXT NOT NULL, "
       "remediation TEXT NOT NULL, properties_json TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'open')",
       "creating tables");
  // (run_id, fingerprint): a run's findings, and both runs' fingerprints in order for diff_runs.
  exec(db, file, "CREATE INDEX IF NOT EXISTS finding_by_run ON finding(run_id)", "creating indexes");
  {
    Statement set(db, file, "INSERT OR IGNORE INTO aegis_schema (component, version) VALUES (?, ?)");
    set.bind(1, std::string_view(kComponent)).bind(2, std::int64_t{kFindingSchemaVersion});
    set.step("writing the schema version");
  }
  tx.commit();
}

std::int64_t FindingStore::record_run(RunRecord run, const std::vector<core::Finding>& findings) {
  std::size_t next = 0;
  return record_run_streamed(std::move(run),
                             [&]() -> const core::Finding* { return next < findings.size() ? &findings[next++] : nullptr; });
}

std::int64_t FindingStore::record_run_streamed(RunRecord run, const std::function<const core::Finding*()>& next) {
  if (impl_->options.read_only)
    throw core::Error("the finding store " + impl_->file + " was opened read-only", "open it for writing to record a run");
  if (run.command.empty()) throw core::Error("a run needs the command that made it", "set RunRecord::command");
  if (run.started_at.empty()) run.started_at = now_utc();
  if (run.finished_at.empty()) run.finished_at = now_utc();
  const std::int64_t started_ms = checked_time(run.started_at, "started_at");
  checked_time(run.finished_at, "finished_at");

  std::lock_guard lock(impl_->mutex);
  sqlite3* db = impl_->db;
  const std::string& file = impl_->file;
  Transaction tx(db, file);
  Statement insert_run(db, file,
                       "INSERT INTO finding_run (command, asset, started_at, started_ms, finished_at, aegis_version, "
                       "exit_code, summary_json, info_count, low_count, medium_count, high_count, critical_count) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, 0, 0, 0, 0)");
  insert_run.bind(1, run.command).bind(2, run.asset).bind(3, run.started_at).bind(4, started_ms)
      .bind(5, run.finished_at).bind(6, run.aegis_version).bind(7, std::int64_t{run.exit_code}).bind(8, run.summary_json);
  insert_run.step("recording the run");
  const std::int64_t run_id = sqlite3_last_insert_rowid(db);

  Statement insert_input(db, file, "INSERT INTO finding_run_input (run_id, position, input) VALUES (?, ?, ?)");
  for (std::size_t i = 0; i < run.inputs.size(); ++i) {
    insert_input.reset();
    insert_input.bind(1, run_id).bind(2, static_cast<std::int64_t>(i)).bind(3, run.inputs[i]);
    insert_input.step("recording the run's inputs");
  }

  // One statement, reset per row, inside the one transaction: a million findings cost a million
  // steps of a compiled statement and a single commit.
  Statement insert_finding(db, file,
                           "INSERT INTO finding (run_id, fingerprint, rule_id, severity, title, file, member, byte_offset, "
                           "row_number, line, column_name, evidence, atlas, nist_ai_rmf, remediation, properties_json) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  Sha256 sha;
  std::array<std::int64_t, 5> counts{};
  while (const core::Finding* finding = next()) {
    const auto index = static_cast<std::size_t>(finding->severity);
    if (index >= counts.size())  // rolls the whole run back
      throw core::Error("finding '" + finding->rule_id + "' has no valid severity (" +
                            std::to_string(static_cast<int>(finding->severity)) + ")",
                        "this is a bug in the command that reported it");
    ++counts[index];
    insert_finding.reset();
    insert_finding.bind(1, run_id)
        .bind(2, sha.hex(fingerprint_input(*finding), kFingerprintDigits))
        .bind(3, finding->rule_id)
        .bind(4, core::to_string(finding->severity))
        .bind(5, finding->title)
        .bind(6, finding->location.file)
        .bind(7, finding->location.member)
        .bind(8, finding->location.offset)
        .bind(9, finding->location.row)
        .bind(10, finding->location.line)
        .bind(11, finding->location.column)
        .bind(12, finding->evidence)
        .bind(13, json_list(finding->atlas))
        .bind(14, json_list(finding->nist_ai_rmf))
        .bind(15, finding->remediation)
        .bind(16, finding->properties_json);
    insert_finding.step("recording a finding");
  }
  Statement set_counts(db, file,
                       "UPDATE finding_run SET info_count = ?, low_count = ?, medium_count = ?, high_count = ?, "
                       "critical_count = ? WHERE id = ?");
  for (std::size_t i = 0; i < counts.size(); ++i) set_counts.bind(static_cast<int>(i) + 1, counts[i]);
  set_counts.bind(6, run_id);
  set_counts.step("recording the run's counts");
  tx.commit();
  return run_id;
}

std::vector<std::string> FindingStore::Impl::inputs_of(std::int64_t run_id) const {
  std::vector<std::string> inputs;
  Statement query(db, file, "SELECT input FROM finding_run_input WHERE run_id = ? ORDER BY position");
  query.bind(1, run_id);
  while (query.step("reading a run's inputs")) inputs.push_back(query.text(0));
  return inputs;
}

std::vector<RunRecord> FindingStore::runs(const RunFilter& filter) const {
  std::string sql = std::string("SELECT ") + kRunColumns + " FROM finding_run r WHERE 1";
  if (filter.command) sql += " AND r.command = :command";
  if (filter.asset) sql += " AND r.asset = :asset";
  if (filter.latest_per_asset)
    sql += " AND NOT EXISTS (SELECT 1 FROM finding_run n WHERE n.asset = r.asset AND n.command = r.command AND "
           "(n.started_ms > r.started_ms OR (n.started_ms = r.started_ms AND n.id > r.id)))";
  sql += " ORDER BY r.started_ms DESC, r.id DESC LIMIT :limit";

  std::lock_guard lock(impl_->mutex);
  Statement query(impl_->db, impl_->file, sql);
  // Named parameters keep their numbers in order of first appearance.
  int index = 1;
  if (filter.command) query.bind(index++, *filter.command);
  if (filter.asset) query.bind(index++, *filter.asset);
  query.bind(index, filter.limit == 0 ? std::int64_t{-1} : static_cast<std::int64_t>(std::min<std::size_t>(filter.limit, INT64_MAX)));
  std::vector<RunRecord> runs;
  while (query.step("listing runs")) runs.push_back(read_run(query));
  for (auto& run : runs) run.inputs = impl_->inputs_of(run.id);
  return runs;
}

std::optional<RunRecord> FindingStore::run(std::int64_t run_id) const {
  std::lock_guard lock(impl_->mutex);
  Statement query(impl_->db, impl_->file, std::string("SELECT ") + kRunColumns + " FROM finding_run r WHERE r.id = ?");
  query.bind(1, run_id);
  if (!query.step("reading a run")) return std::nullopt;
  RunRecord run = read_run(query);
  run.inputs = impl_->inputs_of(run.id);
  return run;
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
  Statement query(impl_->db, impl_->file,
                  std::string("SELECT ") + kFindingColumns + " FROM finding WHERE run_id = ? ORDER BY id");
  query.bind(1, run_id);
  while (query.step("reading findings")) visit(read_finding(query, impl_->file));
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

// Both runs' fingerprints come sorted from the (run_id, fingerprint) index: one merge pass, no sort,
// and memory for the answer only.
RunDiff FindingStore::Impl::diff(std::int64_t old_run, std::int64_t new_run) const {
  // One read transaction: both cursors see the same snapshot even while other processes write.
  exec(db, file, "SAVEPOINT finding_diff", "starting a read");
  struct Release {
    sqlite3* db;
    ~Release() { sqlite3_exec(db, "RELEASE finding_diff", nullptr, nullptr, nullptr); }
  } release{db};
  for (std::int64_t id : {old_run, new_run}) {
    Statement exists(db, file, "SELECT 1 FROM finding_run WHERE id = ?");
    exists.bind(1, id);
    if (!exists.step("reading a run"))
      throw core::Error("finding store " + file + " has no run " + std::to_string(id), "list the runs to pick existing ids");
  }
  const std::string sql = "SELECT DISTINCT fingerprint FROM finding WHERE run_id = ? ORDER BY fingerprint";
  Statement old_rows(db, file, sql), new_rows(db, file, sql);
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

RunDiff FindingStore::diff_runs(std::int64_t old_run, std::int64_t new_run) const {
  std::lock_guard lock(impl_->mutex);
  return impl_->diff(old_run, new_run);
}

void FindingStore::set_status(std::int64_t finding_id, std::string_view status) {
  if (impl_->options.read_only)
    throw core::Error("the finding store " + impl_->file + " was opened read-only", "open it for writing to triage findings");
  if (!is_finding_status(status))
    throw core::Error("unknown finding status '" + std::string(status) + "'",
                      "use open, acknowledged, accepted-risk, false-positive or fixed");
  std::lock_guard lock(impl_->mutex);
  Statement update(impl_->db, impl_->file, "UPDATE finding SET status = ? WHERE id = ?");
  update.bind(1, status).bind(2, finding_id);
  update.step("setting a finding's status");
  if (sqlite3_changes(impl_->db) == 0)
    throw core::Error("finding store " + impl_->file + " has no finding " + std::to_string(finding_id),
                      "take the id from the run's findings");
}

}  // namespace aegis::store
