#include "aegis/store/audit_log.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "aegis/core/error.h"
#include "aegis/core/json_shape.h"
#include "aegis/provenance/manifest.h"

// Durability, in short. The store runs in WAL mode. A COMMIT appends the transaction's pages to the
// -wal file with write(2) before sqlite3_step returns; with synchronous=NORMAL it does not fsync
// each commit. A killed process (kill -9, a crash) cannot lose what write(2) handed to the kernel,
// so every record whose on_durable(true) ran survives it; only an OS crash or power loss can take
// the last commits, which synchronous=FULL (an fsync per commit) rules out at a cost in throughput.
//
// Hashing. hash = SHA-256 of "aegis.audit.v1" followed by every field as a netstring ("LEN:BYTES,"),
// in a fixed order: prev_hash, seq, time_ms, request_id, client_ip, subject, route, method, path,
// status, verdicts (their stored JSON text), request_sha256, response_sha256, request_body,
// response_body (an absent body is "~,", distinct from the empty "0:,"), latency in integer
// microseconds. Lengths make the encoding unambiguous; seq inside the hash makes a moved record
// visible; prev_hash chains each record to everything before it. Record 1's prev_hash is
// kAuditGenesisHash.

namespace aegis::store {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr std::string_view kCheckpointDomain = "aegis.audit.checkpoint.v1";
constexpr std::int64_t kMaxLatencyMicros = std::int64_t{1} << 50;  // keeps the REAL round trip exact

template <typename T, void (*Free)(T*)>
struct OpenSslFree {
  void operator()(T* p) const { Free(p); }
};
using PKey = std::unique_ptr<EVP_PKEY, OpenSslFree<EVP_PKEY, EVP_PKEY_free>>;
using Bio = std::unique_ptr<BIO, OpenSslFree<BIO, BIO_free_all>>;
using MdCtx = std::unique_ptr<EVP_MD_CTX, OpenSslFree<EVP_MD_CTX, EVP_MD_CTX_free>>;

std::string openssl_reason() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no detail from OpenSSL";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

std::string hex_sha256(std::string_view bytes) {
  return provenance::to_hex(provenance::sha256(bytes.data(), bytes.size()));
}

std::string read_key_file(const fs::path& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::Error("cannot read the " + what + " " + path.string(), "check the path and its permissions");
  std::string text(64 * 1024 + 1, '\0');
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  if (text.size() > 64 * 1024) throw core::Error("the " + what + " " + path.string() + " is larger than 64 KiB", "pass a PEM key file");
  return text;
}

const char* kEd25519Hint =
    "create one with `openssl genpkey -algorithm ed25519 -out audit.key` and its public half with "
    "`openssl pkey -in audit.key -pubout -out audit.pub`";

PKey load_ed25519(const fs::path& path, bool private_key) {
  std::string pem = read_key_file(path, private_key ? "audit signing key" : "audit public key");
  Bio bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  PKey key(private_key ? PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr)
                       : PEM_read_bio_PUBKEY(bio.get(), nullptr, nullptr, nullptr));
  if (!key) throw core::Error("cannot read the " + std::string(private_key ? "private" : "public") + " key " + path.string() + ": " +
                                  openssl_reason(), kEd25519Hint);
  if (EVP_PKEY_get_base_id(key.get()) != EVP_PKEY_ED25519)
    throw core::Error("the key " + path.string() + " is not an Ed25519 key", kEd25519Hint);
  return key;
}

// Hex SHA-256 of the key's DER SubjectPublicKeyInfo: names the signer without trusting it.
std::string key_id(EVP_PKEY* key) {
  unsigned char* der = nullptr;
  int size = i2d_PUBKEY(key, &der);
  if (size <= 0) return {};
  std::string id = hex_sha256(std::string_view(reinterpret_cast<const char*>(der), static_cast<std::size_t>(size)));
  OPENSSL_free(der);
  return id;
}

std::string checkpoint_message(std::int64_t seq, std::string_view hash, std::int64_t time_ms) {
  std::string message(kCheckpointDomain);
  message += "\n" + std::to_string(seq) + "\n";
  message += hash;
  message += "\n" + std::to_string(time_ms);
  return message;
}

bool ed25519_verify(EVP_PKEY* key, std::string_view message, std::string_view signature) {
  MdCtx ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, key) != 1) {
    ERR_clear_error();
    return false;
  }
  int status = EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                                reinterpret_cast<const unsigned char*>(message.data()), message.size());
  ERR_clear_error();
  return status == 1;
}

std::int64_t latency_micros(double latency_ms) {
  if (!std::isfinite(latency_ms) || latency_ms <= 0) return 0;
  double micros = std::round(latency_ms * 1000.0);
  return micros >= static_cast<double>(kMaxLatencyMicros) ? kMaxLatencyMicros : static_cast<std::int64_t>(micros);
}

// A prepared statement that finalises itself and reports errors with the store's message.
class Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK)
      throw core::Error(std::string("audit log: ") + sqlite3_errmsg(db), "the store may be damaged or of another version");
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  void bind(int index, std::string_view text) {
    sqlite3_bind_text(stmt_, index, text.data(), static_cast<int>(text.size()), SQLITE_TRANSIENT);
  }
  void bind(int index, std::int64_t value) { sqlite3_bind_int64(stmt_, index, value); }
  void bind_real(int index, double value) { sqlite3_bind_double(stmt_, index, value); }
  void bind_blob(int index, const std::optional<std::string>& blob) {
    if (!blob) sqlite3_bind_null(stmt_, index);
    else sqlite3_bind_blob(stmt_, index, blob->data(), static_cast<int>(blob->size()), SQLITE_TRANSIENT);
  }
  bool step() {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    throw core::Error(std::string("audit log: ") + sqlite3_errmsg(db_), "check that the store file is writable and its disk has room");
  }
  void reset() {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
  }
  bool is_null(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }
  std::string text(int column) const {
    const void* p = sqlite3_column_blob(stmt_, column);
    int size = sqlite3_column_bytes(stmt_, column);
    return p ? std::string(static_cast<const char*>(p), static_cast<std::size_t>(size)) : std::string();
  }
  std::optional<std::string> blob(int column) const {
    if (is_null(column)) return std::nullopt;
    return text(column);
  }
  std::int64_t integer(int column) const { return sqlite3_column_int64(stmt_, column); }
  double real(int column) const { return sqlite3_column_double(stmt_, column); }

 private:
  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
};

void exec_sql(sqlite3* db, const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string why = error ? error : sqlite3_errmsg(db);
    sqlite3_free(error);
    throw core::Error(std::string("audit log: ") + why, "check that the store file is writable and intact");
  }
}

bool table_exists(sqlite3* db, const char* name) {
  Statement query(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?");
  query.bind(1, name);
  return query.step();
}

std::optional<std::int64_t> meta_integer(sqlite3* db, const char* key) {
  if (!table_exists(db, "audit_meta")) return std::nullopt;
  Statement query(db, "SELECT value FROM audit_meta WHERE key = ?");
  query.bind(1, key);
  if (!query.step()) return std::nullopt;
  try {
    return std::stoll(query.text(0));
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

constexpr const char* kRecordColumns =
    "seq, time_ms, request_id, client_ip, subject, route, method, path, status, verdicts, request_sha256, "
    "response_sha256, request_body, response_body, latency_ms, prev_hash, hash";

// Reads a row selected with kRecordColumns; `verdicts_text` gets the column exactly as stored.
AuditRecord read_record(const Statement& row, std::string& verdicts_text) {
  AuditRecord record;
  record.seq = row.integer(0);
  record.time_ms = row.integer(1);
  record.request_id = row.text(2);
  record.client_ip = row.text(3);
  record.subject = row.text(4);
  record.route = row.text(5);
  record.method = row.text(6);
  record.path = row.text(7);
  record.status = static_cast<int>(row.integer(8));
  verdicts_text = row.text(9);
  record.request_sha256 = row.text(10);
  record.response_sha256 = row.text(11);
  record.request_body = row.blob(12);
  record.response_body = row.blob(13);
  record.latency_ms = row.real(14);
  record.prev_hash = row.text(15);
  record.hash = row.text(16);
  // Verdicts are parsed for display only; the hash covers the stored text, which a tampered store
  // may have made deeply nested: such text is not parsed at all.
  if (core::measure_json(verdicts_text, 8).depth > 8) return record;
  json parsed = json::parse(verdicts_text, nullptr, false);
  if (parsed.is_array())
    for (const auto& item : parsed)
      if (item.is_object()) {
        AuditVerdict verdict;
        if (item.contains("filter") && item["filter"].is_string()) verdict.filter = item["filter"].get<std::string>();
        if (item.contains("outcome") && item["outcome"].is_string()) verdict.outcome = item["outcome"].get<std::string>();
        if (item.contains("detail") && item["detail"].is_string()) verdict.detail = item["detail"].get<std::string>();
        record.verdicts.push_back(std::move(verdict));
      }
  return record;
}

sqlite3* open_read_only(const fs::path& file) {
  std::error_code ec;
  if (!fs::is_regular_file(file, ec))
    throw core::Error("no audit store at " + file.string(), "pass the gateway's store file (audit.store in its config)");
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    std::string why = db ? sqlite3_errmsg(db) : "out of memory";
    sqlite3_close(db);
    throw core::Error("cannot open the audit store " + file.string() + ": " + why, "check the path and its permissions");
  }
  sqlite3_busy_timeout(db, 5000);
  try {
    if (!table_exists(db, "audit_log"))
      throw core::Error(file.string() + " holds no audit log", "pass the store that the gateway's audit.store names");
  } catch (...) {
    sqlite3_close(db);
    throw;
  }
  return db;
}

struct DbCloser {
  sqlite3* db;
  ~DbCloser() { sqlite3_close(db); }
};

}  // namespace

std::string audit_verdicts_json(const std::vector<AuditVerdict>& verdicts) {
  json array = json::array();
  for (const auto& verdict : verdicts)
    array.push_back({{"filter", verdict.filter}, {"outcome", verdict.outcome}, {"detail", verdict.detail}});
  // Bytes that are not UTF-8 (a hostile detail) are replaced rather than failing the record.
  return array.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::string audit_record_hash(const AuditRecord& record, std::string_view verdicts_json) {
  std::string encoded = "aegis.audit.v1";
  auto field = [&encoded](std::string_view value) {
    encoded += std::to_string(value.size());
    encoded += ':';
    encoded += value;
    encoded += ',';
  };
  auto optional_field = [&](const std::optional<std::string>& value) {
    if (value) field(*value);
    else encoded += "~,";
  };
  field(record.prev_hash);
  field(std::to_string(record.seq));
  field(std::to_string(record.time_ms));
  field(record.request_id);
  field(record.client_ip);
  field(record.subject);
  field(record.route);
  field(record.method);
  field(record.path);
  field(std::to_string(record.status));
  field(verdicts_json);
  field(record.request_sha256);
  field(record.response_sha256);
  optional_field(record.request_body);
  optional_field(record.response_body);
  field(std::to_string(latency_micros(record.latency_ms)));
  return hex_sha256(encoded);
}

std::string_view to_string(AuditIssueKind kind) {
  switch (kind) {
    case AuditIssueKind::RecordChanged: return "record-changed";
    case AuditIssueKind::RecordDropped: return "record-dropped";
    case AuditIssueKind::RecordsReordered: return "records-reordered";
    case AuditIssueKind::CheckpointSignature: return "checkpoint-signature";
    case AuditIssueKind::Truncated: return "truncated";
  }
  return "unknown";
}

// ---------------------------------------------------------------------------------------------
// Writer

struct AuditLog::Statements {
  Statement insert_record;
  Statement insert_checkpoint;
  Statement set_high_water;
  explicit Statements(sqlite3* db)
      : insert_record(db, "INSERT INTO audit_log (seq, time_ms, request_id, client_ip, subject, route, method, path, status, "
                          "verdicts, request_sha256, response_sha256, request_body, response_body, latency_ms, prev_hash, "
                          "hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"),
        insert_checkpoint(db, "INSERT OR REPLACE INTO audit_checkpoints (seq, hash, time_ms, algorithm, key_id, signature) "
                              "VALUES (?,?,?,?,?,?)"),
        set_high_water(db, "INSERT OR REPLACE INTO audit_meta (key, value) VALUES ('last_seq', ?)") {}
};

struct AuditLog::Signer {
  PKey key;
  std::string id;
  std::string sign(std::string_view message) const {
    MdCtx ctx(EVP_MD_CTX_new());
    std::size_t size = 0;
    if (!ctx || EVP_DigestSignInit(ctx.get(), nullptr, nullptr, nullptr, key.get()) != 1 ||
        EVP_DigestSign(ctx.get(), nullptr, &size, reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1)
      throw core::Error("cannot sign an audit checkpoint: " + openssl_reason());
    std::string signature(size, '\0');
    if (EVP_DigestSign(ctx.get(), reinterpret_cast<unsigned char*>(signature.data()), &size,
                       reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1)
      throw core::Error("cannot sign an audit checkpoint: " + openssl_reason());
    signature.resize(size);
    return signature;
  }
};

AuditLog::AuditLog(AuditLogOptions options) : options_(std::move(options)) {
  if (options_.queue_capacity == 0) options_.queue_capacity = 1;
  if (options_.max_batch == 0) options_.max_batch = 1;
  if (!options_.signing_key.empty()) {
    signer_ = std::make_unique<Signer>();
    signer_->key = load_ed25519(options_.signing_key, true);
    signer_->id = key_id(signer_->key.get());
  }
  std::error_code ec;
  if (options_.file.has_parent_path()) fs::create_directories(options_.file.parent_path(), ec);
  if (sqlite3_open_v2(options_.file.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr) !=
      SQLITE_OK) {
    std::string why = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    db_ = nullptr;
    throw core::Error("cannot open the audit store " + options_.file.string() + ": " + why,
                      "set audit.store to a writable file");
  }
  try {
    sqlite3_busy_timeout(db_, 5000);
    {
      Statement mode(db_, "PRAGMA journal_mode = WAL");
      if (!mode.step() || mode.text(0) != "wal")
        throw core::Error("the audit store " + options_.file.string() + " cannot use write-ahead logging",
                          "put the store on a local file system");
    }
    exec(options_.synchronous_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
    exec("BEGIN IMMEDIATE");
    try {
      exec("CREATE TABLE IF NOT EXISTS audit_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)");
      auto version = meta_integer(db_, "schema_version");
      if (version && *version > kAuditSchemaVersion)
        throw core::Error("the audit store " + options_.file.string() + " was written by a newer Aegis (schema " +
                              std::to_string(*version) + ")",
                          "upgrade Aegis, or point audit.store at a new file");
      exec("CREATE TABLE IF NOT EXISTS audit_log (seq INTEGER PRIMARY KEY, time_ms INTEGER NOT NULL, "
           "request_id TEXT NOT NULL, client_ip TEXT NOT NULL, subject TEXT NOT NULL, route TEXT NOT NULL, "
           "method TEXT NOT NULL, path TEXT NOT NULL, status INTEGER NOT NULL, verdicts TEXT NOT NULL, "
           "request_sha256 TEXT NOT NULL, response_sha256 TEXT NOT NULL, request_body BLOB, response_body BLOB, "
           "latency_ms REAL NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)");
      exec("CREATE TABLE IF NOT EXISTS audit_checkpoints (seq INTEGER PRIMARY KEY, hash TEXT NOT NULL, "
           "time_ms INTEGER NOT NULL, algorithm TEXT NOT NULL, key_id TEXT, signature BLOB)");
      if (!version) {
        Statement set(db_, "INSERT INTO audit_meta (key, value) VALUES ('schema_version', ?)");
        set.bind(1, std::to_string(kAuditSchemaVersion));
        set.step();
      }
      exec("COMMIT");
    } catch (...) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }

    last_hash_ = std::string(kAuditGenesisHash);
    {
      Statement head(db_, "SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1");
      if (head.step()) {
        last_seq_ = head.integer(0);
        last_hash_ = head.text(1);
      }
    }
    {
      Statement checkpoint(db_, "SELECT COALESCE(MAX(seq), 0) FROM audit_checkpoints");
      checkpoint.step();
      checkpoint_seq_ = checkpoint.integer(0);
    }
    // Appending after a truncated tail would re-use sequence numbers that a checkpoint (or the
    // high-water mark) already vouched for, and bury the evidence: refuse.
    std::int64_t vouched = std::max(checkpoint_seq_, meta_integer(db_, "last_seq").value_or(0));
    if (vouched > last_seq_)
      throw core::Error("the audit log in " + options_.file.string() + " ends at seq " + std::to_string(last_seq_) +
                            " but seq " + std::to_string(vouched) + " was written: records were removed",
                        "run `aegis audit verify " + options_.file.string() +
                            "`, keep the store as evidence, and point audit.store at a new file");
    checkpoint_seq_ = std::min(checkpoint_seq_, last_seq_);
    statements_ = std::make_unique<Statements>(db_);
  } catch (...) {
    statements_.reset();
    sqlite3_close(db_);
    db_ = nullptr;
    throw;
  }
  counters_.last_seq = last_seq_;
  checkpoint_time_ = std::chrono::steady_clock::now();
  writer_ = std::thread([this] { run_writer(); });
}

AuditLog::~AuditLog() {
  close();
  statements_.reset();
  sqlite3_close(db_);
}

void AuditLog::exec(const char* sql) { exec_sql(db_, sql); }

void AuditLog::append(AuditRecord record, Durable on_durable) {
  const std::size_t bytes = (record.request_body ? record.request_body->size() : 0) +
                            (record.response_body ? record.response_body->size() : 0);
  {
    std::lock_guard lock(mutex_);
    if (!closing_ && queue_.size() < options_.queue_capacity &&
        (queue_.empty() || queued_bytes_ + bytes <= options_.queue_bytes)) {
      queue_.push_back({std::move(record), std::move(on_durable)});
      queued_bytes_ += bytes;
      ++enqueued_total_;
      work_ready_.notify_one();
      return;
    }
    ++counters_.rejected;
  }
  // Backpressure: the caller learns at once, without waiting for the disk.
  if (on_durable) on_durable(false);
}

void AuditLog::flush() {
  std::unique_lock lock(mutex_);
  const std::uint64_t target = enqueued_total_;
  work_ready_.notify_one();
  work_done_.wait(lock, [&] { return finished_total_ >= target; });
}

void AuditLog::close() {
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
    work_ready_.notify_one();
  }
  if (writer_.joinable() && writer_.get_id() != std::this_thread::get_id()) writer_.join();
  work_done_.notify_all();
}

AuditLogCounters AuditLog::counters() const {
  std::lock_guard lock(mutex_);
  AuditLogCounters copy = counters_;
  copy.queued = queue_.size();
  return copy;
}

void AuditLog::run_writer() {
  std::vector<Pending> batch;
  for (;;) {
    bool stopping = false;
    {
      std::unique_lock lock(mutex_);
      auto has_work = [&] { return !queue_.empty() || closing_; };
      if (options_.checkpoint_interval.count() > 0)
        work_ready_.wait_until(lock, checkpoint_time_ + options_.checkpoint_interval, has_work);
      else
        work_ready_.wait(lock, has_work);
      const std::size_t take = std::min(queue_.size(), options_.max_batch);
      for (std::size_t i = 0; i < take; ++i) {
        Pending& front = queue_.front();
        queued_bytes_ -= (front.record.request_body ? front.record.request_body->size() : 0) +
                         (front.record.response_body ? front.record.response_body->size() : 0);
        batch.push_back(std::move(front));
        queue_.pop_front();
      }
      stopping = closing_ && queue_.empty();
    }
    const bool time_due = options_.checkpoint_interval.count() > 0 &&
                          std::chrono::steady_clock::now() >= checkpoint_time_ + options_.checkpoint_interval;
    if (time_due) checkpoint_time_ = std::chrono::steady_clock::now();
    const bool head_unvouched = last_seq_ > checkpoint_seq_;
    if (!batch.empty() || ((time_due || stopping) && head_unvouched)) commit_batch(batch, time_due || stopping);
    {
      std::lock_guard lock(mutex_);
      finished_total_ += batch.size();
    }
    work_done_.notify_all();
    batch.clear();
    if (stopping) return;
  }
}

bool AuditLog::commit_batch(std::vector<Pending>& batch, bool force_checkpoint) {
  const std::int64_t saved_seq = last_seq_;
  const std::string saved_hash = last_hash_;
  const std::int64_t saved_checkpoint = checkpoint_seq_;
  batch_checkpoints_ = 0;
  bool ok = true;
  std::string failure;
  try {
    exec("BEGIN IMMEDIATE");
    try {
      auto& insert = statements_->insert_record;
      for (auto& pending : batch) {
        AuditRecord& record = pending.record;
        record.seq = last_seq_ + 1;
        record.prev_hash = last_hash_;
        // Stored and hashed at the precision the hash encodes, so the REAL column reads back equal.
        record.latency_ms = static_cast<double>(latency_micros(record.latency_ms)) / 1000.0;
        const std::string verdicts = audit_verdicts_json(record.verdicts);
        record.hash = audit_record_hash(record, verdicts);
        insert.reset();
        insert.bind(1, record.seq);
        insert.bind(2, record.time_ms);
        insert.bind(3, record.request_id);
        insert.bind(4, record.client_ip);
        insert.bind(5, record.subject);
        insert.bind(6, record.route);
        insert.bind(7, record.method);
        insert.bind(8, record.path);
        insert.bind(9, std::int64_t{record.status});
        insert.bind(10, verdicts);
        insert.bind(11, record.request_sha256);
        insert.bind(12, record.response_sha256);
        insert.bind_blob(13, record.request_body);
        insert.bind_blob(14, record.response_body);
        insert.bind_real(15, record.latency_ms);
        insert.bind(16, record.prev_hash);
        insert.bind(17, record.hash);
        insert.step();
        last_seq_ = record.seq;
        last_hash_ = record.hash;
        // Checkpoints fall on exact multiples of checkpoint_every, however the records were batched.
        if (options_.checkpoint_every > 0 &&
            static_cast<std::uint64_t>(last_seq_ - checkpoint_seq_) >= options_.checkpoint_every)
          write_checkpoint();
      }
      insert.reset();
      if (force_checkpoint && last_seq_ > checkpoint_seq_) write_checkpoint();
      auto& high_water = statements_->set_high_water;
      high_water.reset();
      high_water.bind(1, std::to_string(last_seq_));
      high_water.step();
      high_water.reset();
      exec("COMMIT");
    } catch (...) {
      sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
      throw;
    }
  } catch (const std::exception& error) {
    ok = false;
    failure = error.what();
    last_seq_ = saved_seq;
    last_hash_ = saved_hash;
    checkpoint_seq_ = saved_checkpoint;
  }
  healthy_.store(ok);
  {
    std::lock_guard lock(mutex_);
    if (ok) {
      counters_.appended += batch.size();
      ++counters_.transactions;
      counters_.checkpoints += batch_checkpoints_;
      counters_.last_seq = last_seq_;
    } else {
      counters_.failed += batch.size();
    }
  }
  for (auto& pending : batch) {
    if (!pending.on_durable) continue;
    try {
      pending.on_durable(ok);
    } catch (...) {
      // A caller's callback must not take the writer down with it.
    }
  }
  return ok;
}

void AuditLog::write_checkpoint() {
  const auto time_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch()).count();
  auto& insert = statements_->insert_checkpoint;
  insert.reset();
  insert.bind(1, last_seq_);
  insert.bind(2, last_hash_);
  insert.bind(3, static_cast<std::int64_t>(time_ms));
  if (signer_) {
    insert.bind(4, std::string_view("ed25519"));
    insert.bind(5, signer_->id);
    insert.bind_blob(6, signer_->sign(checkpoint_message(last_seq_, last_hash_, time_ms)));
  } else {
    insert.bind(4, std::string_view("none"));
    insert.bind_blob(5, std::nullopt);
    insert.bind_blob(6, std::nullopt);
  }
  insert.step();
  insert.reset();
  checkpoint_seq_ = last_seq_;
  ++batch_checkpoints_;
}

// ---------------------------------------------------------------------------------------------
// Verification

namespace {

// Rows are remembered by a 64-bit digest of their hash strings: 32 bytes a record for both lookups,
// and every match they suggest is confirmed by recomputing a hash before it is reported.
using HashIndex = std::vector<std::pair<std::uint64_t, std::int64_t>>;

std::uint64_t short_key(std::string_view hash) { return std::hash<std::string_view>{}(hash); }

std::optional<std::int64_t> find_seq(const HashIndex& index, std::string_view hash) {
  const std::uint64_t key = short_key(hash);
  auto it = std::lower_bound(index.begin(), index.end(), std::make_pair(key, std::numeric_limits<std::int64_t>::min()));
  if (it == index.end() || it->first != key) return std::nullopt;
  return it->second;
}

struct Suspect {
  AuditRecord record;
  std::string verdicts;
};

std::string seq_range(std::int64_t from, std::int64_t to) {
  return from == to ? "seq " + std::to_string(from) : "seqs " + std::to_string(from) + ".." + std::to_string(to);
}

}  // namespace

AuditVerifyReport verify_audit_log(const fs::path& file, const std::optional<fs::path>& public_key) {
  PKey key;
  std::string expected_key_id;
  if (public_key) {
    key = load_ed25519(*public_key, false);
    expected_key_id = key_id(key.get());
  }
  sqlite3* db = open_read_only(file);
  DbCloser closer{db};

  AuditVerifyReport report;
  report.signatures_checked = public_key.has_value();
  std::vector<AuditIssue> issues;
  auto issue = [&issues](AuditIssueKind kind, std::int64_t seq, std::string detail) {
    issues.push_back({kind, seq, std::move(detail)});
  };

  HashIndex by_hash, by_prev;
  std::vector<Suspect> suspects;        // content does not match the stored hash
  std::set<std::int64_t> suspect_seqs;
  struct LinkBreak {
    std::int64_t seq, previous_seq;
    std::string prev_hash;
  };
  std::vector<LinkBreak> breaks;        // content fine, but it does not follow the row before it

  {
    Statement rows(db, (std::string("SELECT ") + kRecordColumns + " FROM audit_log ORDER BY seq").c_str());
    std::optional<std::pair<std::int64_t, std::string>> previous;  // seq, stored hash
    while (rows.step()) {
      std::string verdicts;
      AuditRecord record = read_record(rows, verdicts);
      ++report.records;
      if (report.records == 1) report.first_seq = record.seq;
      by_hash.emplace_back(short_key(record.hash), record.seq);
      by_prev.emplace_back(short_key(record.prev_hash), record.seq);
      const bool content_ok = audit_record_hash(record, verdicts) == record.hash;
      const std::int64_t expected_seq = previous ? previous->first + 1 : 1;
      const std::string_view expected_prev = previous ? std::string_view(previous->second) : kAuditGenesisHash;
      if (record.seq > expected_seq) {
        issue(AuditIssueKind::RecordDropped, expected_seq,
              seq_range(expected_seq, record.seq - 1) + " missing: the log jumps from " +
                  (previous ? "seq " + std::to_string(previous->first) : std::string("its start")) + " to seq " +
                  std::to_string(record.seq));
      } else if (content_ok && record.prev_hash != expected_prev && !(previous && suspect_seqs.count(previous->first))) {
        breaks.push_back({record.seq, previous ? previous->first : 0, record.prev_hash});
      }
      if (!content_ok && suspects.size() < AuditVerifyReport::kMaxIssues) {
        suspect_seqs.insert(record.seq);
        suspects.push_back({record, std::move(verdicts)});
      } else if (!content_ok) {
        ++report.issues_omitted;
      }
      previous.emplace(record.seq, record.hash);
    }
    if (previous) {
      report.last_seq = previous->first;
      report.last_hash = previous->second;
    }
  }
  std::sort(by_hash.begin(), by_hash.end());
  std::sort(by_prev.begin(), by_prev.end());

  for (auto& suspect : suspects) {
    AuditRecord& record = suspect.record;
    const std::int64_t stored_at = record.seq;
    std::vector<std::int64_t> candidates{stored_at - 1, stored_at + 1};
    if (auto before = find_seq(by_hash, record.prev_hash)) candidates.push_back(*before + 1);
    if (auto after = find_seq(by_prev, record.hash)) candidates.push_back(*after - 1);
    std::optional<std::int64_t> written_as;
    for (std::int64_t candidate : candidates) {
      if (candidate <= 0 || candidate == stored_at) continue;
      record.seq = candidate;
      if (audit_record_hash(record, suspect.verdicts) == record.hash) {
        written_as = candidate;
        break;
      }
    }
    record.seq = stored_at;
    if (written_as)
      issue(AuditIssueKind::RecordsReordered, stored_at,
            "the record stored at seq " + std::to_string(stored_at) + " was written as seq " + std::to_string(*written_as));
    else
      issue(AuditIssueKind::RecordChanged, stored_at,
            "record seq " + std::to_string(stored_at) + " does not match its hash: a field was changed after it was written");
  }
  for (const auto& link : breaks) {
    auto linked = find_seq(by_hash, link.prev_hash);
    if (linked && *linked != link.previous_seq)
      issue(AuditIssueKind::RecordsReordered, link.seq,
            "record seq " + std::to_string(link.seq) + " follows seq " + std::to_string(*linked) +
                " in the chain but is stored after seq " + std::to_string(link.previous_seq));
    else if (link.previous_seq == 0)
      issue(AuditIssueKind::RecordDropped, link.seq,
            "the first record (seq " + std::to_string(link.seq) + ") does not start from the genesis hash: earlier records were removed");
    else
      issue(AuditIssueKind::RecordChanged, link.previous_seq,
            "record seq " + std::to_string(link.previous_seq) + " was rewritten with a recomputed hash: seq " +
                std::to_string(link.seq) + " still names the original");
  }

  // Checkpoints: each vouches for the chain's head at its seq.
  std::int64_t highest_vouched = 0;
  {
    Statement checkpoints(db, "SELECT seq, hash, time_ms, algorithm, key_id, signature FROM audit_checkpoints ORDER BY seq");
    Statement hash_at(db, "SELECT hash FROM audit_log WHERE seq = ?");
    while (checkpoints.step()) {
      ++report.checkpoints;
      const std::int64_t seq = checkpoints.integer(0);
      const std::string hash = checkpoints.text(1);
      const std::int64_t time_ms = checkpoints.integer(2);
      const std::string algorithm = checkpoints.text(3);
      const std::optional<std::string> signature = checkpoints.blob(5);
      const bool is_signed = algorithm == "ed25519" && signature;
      if (is_signed) ++report.signed_checkpoints;
      highest_vouched = std::max(highest_vouched, seq);
      if (key) {
        if (!is_signed)
          issue(AuditIssueKind::CheckpointSignature, seq,
                "checkpoint at seq " + std::to_string(seq) + " is not signed (algorithm \"" + algorithm + "\")");
        else if (!ed25519_verify(key.get(), checkpoint_message(seq, hash, time_ms), *signature))
          issue(AuditIssueKind::CheckpointSignature, seq,
                "checkpoint at seq " + std::to_string(seq) + " has a signature that does not verify with the given public key" +
                    (checkpoints.text(4) != expected_key_id ? " (it names another signing key)" : ""));
        else
          ++report.verified_signatures;
      }
      if (seq > report.last_seq) {
        issue(AuditIssueKind::Truncated, report.last_seq + 1,
              "a checkpoint vouches for seq " + std::to_string(seq) + " but the log ends at seq " +
                  std::to_string(report.last_seq) + ": " + seq_range(report.last_seq + 1, seq) + " were removed");
        continue;
      }
      hash_at.reset();
      hash_at.bind(1, seq);
      if (hash_at.step() && hash_at.text(0) != hash && !suspect_seqs.count(seq))
        issue(AuditIssueKind::RecordChanged, seq,
              "the chain up to seq " + std::to_string(seq) + " differs from what its checkpoint recorded: it was rewritten");
    }
  }
  // The writer's high-water mark is not signed, but a plain DELETE of the tail leaves it behind.
  if (auto high_water = meta_integer(db, "last_seq"); high_water && *high_water > std::max(report.last_seq, highest_vouched))
    issue(AuditIssueKind::Truncated, std::max(report.last_seq, highest_vouched) + 1,
          "the log recorded seq " + std::to_string(*high_water) + " as written but ends at seq " + std::to_string(report.last_seq) +
              ": " + seq_range(std::max(report.last_seq, highest_vouched) + 1, *high_water) + " were removed");

  std::stable_sort(issues.begin(), issues.end(), [](const AuditIssue& a, const AuditIssue& b) { return a.seq < b.seq; });
  if (issues.size() > AuditVerifyReport::kMaxIssues) {
    report.issues_omitted += static_cast<std::int64_t>(issues.size() - AuditVerifyReport::kMaxIssues);
    issues.resize(AuditVerifyReport::kMaxIssues);
  }
  report.issues = std::move(issues);
  return report;
}

std::vector<AuditRecord> read_audit_tail(const fs::path& file, std::size_t count) {
  sqlite3* db = open_read_only(file);
  DbCloser closer{db};
  std::vector<AuditRecord> records;
  Statement rows(db, (std::string("SELECT ") + kRecordColumns + " FROM audit_log ORDER BY seq DESC LIMIT ?").c_str());
  rows.bind(1, static_cast<std::int64_t>(std::min<std::size_t>(count, std::size_t{1} << 40)));
  while (rows.step()) {
    std::string verdicts;
    records.push_back(read_record(rows, verdicts));
  }
  std::reverse(records.begin(), records.end());
  return records;
}

}  // namespace aegis::store
