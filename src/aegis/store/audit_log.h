// The gateway's audit log in the Aegis store: an append-only, hash-chained record of every decision,
// written by one group-committing thread, with periodic (optionally Ed25519-signed) checkpoints, and
// the verifier that recomputes the chain and names every record that was changed, dropped or moved.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

struct sqlite3;

namespace aegis::store {

// The prev_hash of record 1: 64 zero digits, i.e. "nothing came before".
inline constexpr std::string_view kAuditGenesisHash = "0000000000000000000000000000000000000000000000000000000000000000";
// Bumped when the tables change; the log refuses a store written by a newer schema.
inline constexpr int kAuditSchemaVersion = 1;

struct AuditVerdict {
  std::string filter;
  std::string outcome;
  std::string detail;
};

// One gateway decision. seq, prev_hash and hash are assigned by the log, in commit order.
struct AuditRecord {
  std::int64_t seq = 0;
  std::int64_t time_ms = 0;  // UTC milliseconds since the epoch
  std::string request_id;
  std::string client_ip;
  std::string subject;
  std::string route;
  std::string method;
  std::string path;
  int status = 0;
  std::vector<AuditVerdict> verdicts;
  std::string request_sha256;   // hex SHA-256 of the request body
  std::string response_sha256;  // hex SHA-256 of the response body
  std::optional<std::string> request_body;   // kept only when the gateway is configured to record bodies
  std::optional<std::string> response_body;
  double latency_ms = 0;  // kept to the microsecond
  std::string prev_hash;
  std::string hash;
};

// The verdicts column as stored and hashed: a JSON array of {"filter","outcome","detail"}.
std::string audit_verdicts_json(const std::vector<AuditVerdict>& verdicts);

// hex SHA-256 over prev_hash and a length-prefixed encoding of every other field (seq included,
// verdicts as their stored JSON text, an absent body distinct from an empty one). See the .cpp.
std::string audit_record_hash(const AuditRecord& record, std::string_view verdicts_json);

struct AuditLogOptions {
  std::filesystem::path file = "aegis-store.db";
  // WAL mode. synchronous=NORMAL (false): a commit reaches the OS before on_durable(true), so a
  // killed process loses no acknowledged record; FULL (true) fsyncs each commit and also survives
  // an OS crash or power loss, at a cost in throughput.
  bool synchronous_full = false;
  std::size_t queue_capacity = 65'536;            // records waiting for the writer
  std::size_t queue_bytes = std::size_t{256} << 20;  // and their bodies, in bytes
  std::size_t max_batch = 8'192;                  // records per transaction
  // A checkpoint is written after every this many records, when the interval has passed since the
  // last one (and records came), and on close.
  std::uint64_t checkpoint_every = 10'000;        // records; 0: not by count
  std::chrono::milliseconds checkpoint_interval{std::chrono::seconds(60)};  // 0: not by time
  // Ed25519 private key (PEM) that signs each checkpoint's (seq, hash, time); empty: unsigned.
  // Make one with `openssl genpkey -algorithm ed25519 -out audit.key` and give verifiers
  // `openssl pkey -in audit.key -pubout -out audit.pub`.
  std::filesystem::path signing_key;
};

struct AuditLogCounters {
  std::uint64_t appended = 0;     // committed
  std::uint64_t rejected = 0;     // refused because the queue was full or the log closed
  std::uint64_t failed = 0;       // lost to a failed transaction (their callers got durable=false)
  std::uint64_t transactions = 0;
  std::uint64_t checkpoints = 0;
  std::int64_t last_seq = 0;
  std::size_t queued = 0;
};

class AuditLog {
 public:
  using Durable = std::function<void(bool durable)>;

  // Opens or creates the store, resumes the chain after its last record and starts the writer.
  // Throws core::Error when the file cannot be opened, the key cannot be read, or the log is damaged
  // in a way that appending would hide (it ends before a recorded checkpoint or high-water mark).
  explicit AuditLog(AuditLogOptions options);
  ~AuditLog();  // close()
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Never blocks on I/O. `on_durable(true)` runs on the writer thread once the record is committed;
  // `on_durable(false)` runs at once (in the caller) when the queue is full or the log is closed, and
  // on the writer thread when the transaction failed. The gateway answers 503 on false: a request
  // that cannot be audited is not served (fail closed).
  void append(AuditRecord record, Durable on_durable);
  // Blocks until every record appended before the call is committed or failed.
  void flush();
  // Writes what is queued, a final checkpoint, and stops the writer. Appends after it are refused.
  void close();

  AuditLogCounters counters() const;
  // False after a transaction failed, until one succeeds again (for /readyz).
  bool healthy() const { return healthy_.load(); }
  const std::filesystem::path& file() const { return options_.file; }

 private:
  struct Pending {
    AuditRecord record;
    Durable on_durable;
  };
  void run_writer();
  bool commit_batch(std::vector<Pending>& batch, bool force_checkpoint);
  void write_checkpoint();
  void exec(const char* sql);

  AuditLogOptions options_;
  sqlite3* db_ = nullptr;
  struct Statements;
  std::unique_ptr<Statements> statements_;
  struct Signer;
  std::unique_ptr<Signer> signer_;

  mutable std::mutex mutex_;
  std::condition_variable work_ready_;
  std::condition_variable work_done_;
  std::deque<Pending> queue_;
  std::size_t queued_bytes_ = 0;
  std::uint64_t enqueued_total_ = 0;   // records accepted into the queue, ever
  std::uint64_t finished_total_ = 0;   // of which committed or failed
  bool closing_ = false;
  AuditLogCounters counters_;
  std::atomic<bool> healthy_{true};

  // Writer-thread state: the chain's head and the last checkpoint.
  std::int64_t last_seq_ = 0;
  std::string last_hash_;
  std::int64_t checkpoint_seq_ = 0;
  std::uint64_t batch_checkpoints_ = 0;  // written in the transaction under way
  std::chrono::steady_clock::time_point checkpoint_time_;
  std::thread writer_;
};

enum class AuditIssueKind { RecordChanged, RecordDropped, RecordsReordered, CheckpointSignature, Truncated };
std::string_view to_string(AuditIssueKind kind);  // "record-changed", ...

struct AuditIssue {
  AuditIssueKind kind;
  std::int64_t seq = 0;  // the record (or checkpoint) it concerns
  std::string detail;    // what is wrong, in words
};

struct AuditVerifyReport {
  std::int64_t records = 0;
  std::int64_t first_seq = 0;
  std::int64_t last_seq = 0;
  std::string last_hash;
  std::int64_t checkpoints = 0;
  std::int64_t signed_checkpoints = 0;
  std::int64_t verified_signatures = 0;  // with the public key given
  bool signatures_checked = false;       // a public key was given
  std::vector<AuditIssue> issues;        // at most kMaxIssues, in seq order per kind
  std::int64_t issues_omitted = 0;
  bool intact() const { return issues.empty() && issues_omitted == 0; }
  static constexpr std::size_t kMaxIssues = 1000;
};

// Recomputes the chain of the store at `file`, opened read-only, and checks the checkpoints (their
// signatures too when `public_key` names an Ed25519 PEM public key). Throws core::Error when the
// file cannot be read or holds no audit log.
AuditVerifyReport verify_audit_log(const std::filesystem::path& file,
                                   const std::optional<std::filesystem::path>& public_key = std::nullopt);

// The last `count` records, oldest first (read-only).
std::vector<AuditRecord> read_audit_tail(const std::filesystem::path& file, std::size_t count);

}  // namespace aegis::store
