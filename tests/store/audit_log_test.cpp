// The hash-chained audit log: records written by the real group-committing writer into a real
// SQLite file, tampered with through SQL the way an intruder with file access would, and verified;
// a writer process killed with SIGKILL under load; Ed25519 checkpoints made with keys from openssl.
#include "aegis/store/audit_log.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>
#include <thread>

#include "../test_support.h"
#include "aegis/core/error.h"
#include "aegis/provenance/manifest.h"

namespace aegis::test {
namespace {

namespace fs = std::filesystem;
using store::AuditIssueKind;
using store::AuditLog;
using store::AuditLogOptions;
using store::AuditRecord;

std::string sha256_hex(const std::string& text) { return provenance::to_hex(provenance::sha256(text.data(), text.size())); }

AuditRecord sample_record(std::int64_t n) {
  AuditRecord record;
  record.time_ms = 1'760'000'000'000 + n;
  record.request_id = "req-" + std::to_string(n);
  record.client_ip = "10.0.0." + std::to_string(n % 250);
  record.subject = n % 3 ? "key-analytics" : "";
  record.route = "classifier";
  record.method = "POST";
  record.path = "/v1/predict";
  record.status = n % 5 ? 200 : 429;
  record.verdicts = {{"api_key", "allow", ""}, {"rate_limit", n % 5 ? "allow" : "reject", n % 5 ? "" : "60/min exceeded"}};
  const std::string request = "{\"inputs\": [[" + std::to_string(n) + "]]}";
  const std::string response = "{\"probabilities\": [[0.25, 0.75]]}";
  record.request_sha256 = sha256_hex(request);
  record.response_sha256 = sha256_hex(response);
  if (n % 2) {
    record.request_body = request;
    record.response_body = response;
  }
  record.latency_ms = 1.25 + static_cast<double>(n) / 7.0;
  return record;
}

// Appends records first..last and waits until each is durable; fails the test otherwise.
void append_range(AuditLog& log, std::int64_t first, std::int64_t last) {
  std::atomic<int> durable{0}, refused{0};
  for (std::int64_t n = first; n <= last; ++n)
    log.append(sample_record(n), [&](bool ok) { (ok ? durable : refused).fetch_add(1); });
  log.flush();
  ASSERT_EQ(durable.load(), last - first + 1);
  ASSERT_EQ(refused.load(), 0);
}

void run_sql(const fs::path& file, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  char* error = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  const std::string why = error ? error : "";
  sqlite3_free(error);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << why << "\n" << sql;
}

fs::path copy_store(const fs::path& from, const fs::path& to) {
  fs::copy_file(from, to, fs::copy_options::overwrite_existing);
  for (const char* suffix : {"-wal", "-shm"})
    if (fs::exists(from.string() + suffix))
      fs::copy_file(from.string() + suffix, to.string() + suffix, fs::copy_options::overwrite_existing);
  return to;
}

std::string issues_text(const store::AuditVerifyReport& report) {
  std::string text;
  for (const auto& issue : report.issues)
    text += std::string(store::to_string(issue.kind)) + " @" + std::to_string(issue.seq) + ": " + issue.detail + "\n";
  return text;
}

// Swaps every column but seq between two rows, through a temporary copy so that each side reads
// the other's original values.
std::string swap_rows_sql(int a, int b) {
  const std::string columns =
      "time_ms, request_id, client_ip, subject, route, method, path, status, verdicts, request_sha256, response_sha256, "
      "request_body, response_body, latency_ms, prev_hash, hash";
  const std::string pair = std::to_string(a) + ", " + std::to_string(b);
  return "CREATE TEMP TABLE original AS SELECT * FROM audit_log WHERE seq IN (" + pair + ");"
         "UPDATE audit_log SET (" + columns + ") = (SELECT " + columns + " FROM original WHERE original.seq = CASE audit_log.seq "
         "WHEN " + std::to_string(a) + " THEN " + std::to_string(b) + " ELSE " + std::to_string(a) + " END) "
         "WHERE seq IN (" + pair + ");";
}

bool make_key_pair(const fs::path& private_pem, const fs::path& public_pem, const std::string& algorithm = "ed25519") {
  const std::string generate = algorithm == "ed25519"
                                   ? "openssl genpkey -algorithm ed25519 -out '" + private_pem.string() + "' 2>/dev/null"
                                   : "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out '" +
                                         private_pem.string() + "' 2>/dev/null";
  return std::system(generate.c_str()) == 0 &&
         std::system(("openssl pkey -in '" + private_pem.string() + "' -pubout -out '" + public_pem.string() + "' 2>/dev/null").c_str()) == 0;
}

TEST(AuditLog, ChainVerifiesAndResumesAfterRestart) {
  TempDir temp("aegis_audit");
  AuditLogOptions options;
  options.file = temp.path / "aegis-store.db";
  options.checkpoint_every = 16;
  {
    AuditLog log(options);
    append_range(log, 1, 40);
    EXPECT_EQ(log.counters().appended, 40u);
    EXPECT_EQ(log.counters().last_seq, 40);
    EXPECT_EQ(log.counters().checkpoints, 2u);  // at 16 and 32
    EXPECT_TRUE(log.healthy());
  }
  {
    AuditLog log(options);  // picks the chain up where it ended
    append_range(log, 41, 50);
  }
  auto report = store::verify_audit_log(options.file);
  EXPECT_TRUE(report.intact()) << issues_text(report);
  EXPECT_EQ(report.records, 50);
  EXPECT_EQ(report.first_seq, 1);
  EXPECT_EQ(report.last_seq, 50);
  EXPECT_GE(report.checkpoints, 3);  // at 16 and 32, and when each log closed
  EXPECT_EQ(report.signed_checkpoints, 0);

  auto tail = store::read_audit_tail(options.file, 50);
  ASSERT_EQ(tail.size(), 50u);
  EXPECT_EQ(tail[0].prev_hash, store::kAuditGenesisHash);
  for (std::size_t i = 0; i < tail.size(); ++i) {
    const AuditRecord expected = sample_record(static_cast<std::int64_t>(i) + 1);
    EXPECT_EQ(tail[i].seq, static_cast<std::int64_t>(i) + 1);
    EXPECT_EQ(tail[i].request_id, expected.request_id);
    EXPECT_EQ(tail[i].status, expected.status);
    EXPECT_EQ(tail[i].request_body, expected.request_body);
    ASSERT_EQ(tail[i].verdicts.size(), 2u);
    EXPECT_EQ(tail[i].verdicts[1].outcome, expected.verdicts[1].outcome);
    EXPECT_NEAR(tail[i].latency_ms, expected.latency_ms, 0.001);
    if (i > 0) {
      EXPECT_EQ(tail[i].prev_hash, tail[i - 1].hash);
    }
  }
  EXPECT_EQ(tail.back().hash, report.last_hash);
}

TEST(AuditLog, HashCoversEveryFieldUnambiguously) {
  AuditRecord base = sample_record(3);
  const std::string verdicts = store::audit_verdicts_json(base.verdicts);
  const std::string hash = store::audit_record_hash(base, verdicts);
  auto differs = [&](const AuditRecord& changed, const std::string& changed_verdicts) {
    return store::audit_record_hash(changed, changed_verdicts) != hash;
  };
  AuditRecord r = base;
  r.seq = base.seq + 1;
  EXPECT_TRUE(differs(r, verdicts));
  r = base;
  r.request_id += "x";
  EXPECT_TRUE(differs(r, verdicts));
  // Moving a character from one field to the next must not give the same hash.
  r = base;
  r.route = base.route + base.method.substr(0, 1);
  r.method = base.method.substr(1);
  EXPECT_TRUE(differs(r, verdicts));
  r = base;
  r.response_body = std::nullopt;  // absent differs from...
  AuditRecord empty = base;
  empty.response_body = std::string();  // ...empty
  EXPECT_NE(store::audit_record_hash(r, verdicts), store::audit_record_hash(empty, verdicts));
  r = base;
  r.prev_hash = std::string(store::kAuditGenesisHash);
  EXPECT_TRUE(differs(r, verdicts));
  EXPECT_TRUE(differs(base, store::audit_verdicts_json({{"api_key", "allow", ""}})));
}

class AuditTamper : public ::testing::Test {
 protected:
  static constexpr std::int64_t kRecords = 35;
  void SetUp() override {
    AuditLogOptions options;
    options.file = temp_.path / "reference.db";
    options.checkpoint_every = 10;  // checkpoints at 10, 20, 30 and 35 (on close)
    AuditLog log(options);
    append_range(log, 1, kRecords);
  }
  fs::path tampered(const std::string& name, const std::string& sql) {
    fs::path file = copy_store(temp_.path / "reference.db", temp_.path / (name + ".db"));
    run_sql(file, sql);
    return file;
  }
  TempDir temp_{"aegis_audit_tamper"};
};

TEST_F(AuditTamper, UntouchedLogIsIntact) {
  auto report = store::verify_audit_log(temp_.path / "reference.db");
  EXPECT_TRUE(report.intact()) << issues_text(report);
  EXPECT_EQ(report.records, kRecords);
  EXPECT_EQ(report.checkpoints, 4);
}

TEST_F(AuditTamper, ChangedFieldIsNamedBySeq) {
  auto report = store::verify_audit_log(tampered("update", "UPDATE audit_log SET status = 200 WHERE seq = 5"));
  ASSERT_EQ(report.issues.size(), 1u) << issues_text(report);
  EXPECT_EQ(report.issues[0].kind, AuditIssueKind::RecordChanged);
  EXPECT_EQ(report.issues[0].seq, 5);

  auto verdicts = store::verify_audit_log(
      tampered("verdicts", "UPDATE audit_log SET verdicts = replace(verdicts, 'reject', 'allow') WHERE seq = 25"));
  ASSERT_EQ(verdicts.issues.size(), 1u) << issues_text(verdicts);
  EXPECT_EQ(verdicts.issues[0].kind, AuditIssueKind::RecordChanged);
  EXPECT_EQ(verdicts.issues[0].seq, 25);
}

TEST_F(AuditTamper, ChangeWithRecomputedHashIsStillFound) {
  // An intruder who knows the hashing rule rewrites one record and its hash.
  auto records = store::read_audit_tail(temp_.path / "reference.db", kRecords);
  AuditRecord record = records[21];  // seq 22
  ASSERT_EQ(record.seq, 22);
  record.status = 200;
  record.client_ip = "192.0.2.1";
  const std::string hash = store::audit_record_hash(record, store::audit_verdicts_json(record.verdicts));
  auto report = store::verify_audit_log(tampered(
      "rehash", "UPDATE audit_log SET status = 200, client_ip = '192.0.2.1', hash = '" + hash + "' WHERE seq = 22"));
  ASSERT_EQ(report.issues.size(), 1u) << issues_text(report);
  EXPECT_EQ(report.issues[0].kind, AuditIssueKind::RecordChanged);
  EXPECT_EQ(report.issues[0].seq, 22);
}

TEST_F(AuditTamper, DeletedRecordIsNamedBySeq) {
  auto report = store::verify_audit_log(tampered("delete", "DELETE FROM audit_log WHERE seq = 12"));
  ASSERT_EQ(report.issues.size(), 1u) << issues_text(report);
  EXPECT_EQ(report.issues[0].kind, AuditIssueKind::RecordDropped);
  EXPECT_EQ(report.issues[0].seq, 12);
  EXPECT_EQ(report.records, kRecords - 1);

  auto first = store::verify_audit_log(tampered("delete_first", "DELETE FROM audit_log WHERE seq <= 2"));
  ASSERT_EQ(first.issues.size(), 1u) << issues_text(first);
  EXPECT_EQ(first.issues[0].kind, AuditIssueKind::RecordDropped);
  EXPECT_EQ(first.issues[0].seq, 1);
}

TEST_F(AuditTamper, SwappedRowsAreReportedAsReordered) {
  auto report = store::verify_audit_log(tampered("swap", swap_rows_sql(15, 16)));
  ASSERT_EQ(report.issues.size(), 2u) << issues_text(report);
  EXPECT_EQ(report.issues[0].kind, AuditIssueKind::RecordsReordered);
  EXPECT_EQ(report.issues[0].seq, 15);
  EXPECT_EQ(report.issues[1].kind, AuditIssueKind::RecordsReordered);
  EXPECT_EQ(report.issues[1].seq, 16);

  auto apart = store::verify_audit_log(tampered("swap_apart", swap_rows_sql(3, 8)));
  std::set<std::int64_t> seqs;
  for (const auto& issue : apart.issues) {
    EXPECT_EQ(issue.kind, AuditIssueKind::RecordsReordered) << issues_text(apart);
    seqs.insert(issue.seq);
  }
  EXPECT_TRUE(seqs.count(3) && seqs.count(8)) << issues_text(apart);
}

TEST_F(AuditTamper, TruncatedTailIsFound) {
  // The last checkpoint (35, written on close) vouches for records that are gone.
  auto report = store::verify_audit_log(tampered("tail", "DELETE FROM audit_log WHERE seq > 32"));
  ASSERT_EQ(report.issues.size(), 1u) << issues_text(report);
  EXPECT_EQ(report.issues[0].kind, AuditIssueKind::Truncated);
  EXPECT_EQ(report.issues[0].seq, 33);
  EXPECT_EQ(report.last_seq, 32);

  // With the checkpoints after the cut removed too, the writer's high-water mark still tells.
  auto deeper = store::verify_audit_log(tampered(
      "tail_and_checkpoints", "DELETE FROM audit_log WHERE seq > 30; DELETE FROM audit_checkpoints WHERE seq > 30"));
  ASSERT_EQ(deeper.issues.size(), 1u) << issues_text(deeper);
  EXPECT_EQ(deeper.issues[0].kind, AuditIssueKind::Truncated);
  EXPECT_EQ(deeper.issues[0].seq, 31);

  // And the writer refuses to carry on from a truncated log rather than bury the gap.
  AuditLogOptions options;
  options.file = temp_.path / "tail.db";
  try {
    AuditLog log(options);
    ADD_FAILURE() << "a truncated log was reopened for appending";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("removed"), std::string::npos) << error.what();
    EXPECT_NE(error.hint().find("aegis audit verify"), std::string::npos);
  }
}

TEST_F(AuditTamper, RewrittenCheckpointedChainIsFound) {
  // Rewriting a checkpointed record's hash without touching its checkpoint: the two disagree.
  auto report = store::verify_audit_log(tampered(
      "checkpoint_hash", "UPDATE audit_checkpoints SET hash = '" + std::string(64, 'a') + "' WHERE seq = 20"));
  ASSERT_EQ(report.issues.size(), 1u) << issues_text(report);
  EXPECT_EQ(report.issues[0].kind, AuditIssueKind::RecordChanged);
  EXPECT_EQ(report.issues[0].seq, 20);
}

TEST(AuditLog, CheckpointsAreSignedWithEd25519) {
  TempDir temp("aegis_audit_sign");
  const fs::path key = temp.path / "audit.key", pub = temp.path / "audit.pub";
  const fs::path other_key = temp.path / "other.key", other_pub = temp.path / "other.pub";
  ASSERT_TRUE(make_key_pair(key, pub) && make_key_pair(other_key, other_pub)) << "openssl genpkey failed";
  AuditLogOptions options;
  options.file = temp.path / "signed.db";
  options.checkpoint_every = 10;
  options.signing_key = key;
  {
    AuditLog log(options);
    append_range(log, 1, 25);
  }
  auto good = store::verify_audit_log(options.file, pub);
  EXPECT_TRUE(good.intact()) << issues_text(good);
  EXPECT_TRUE(good.signatures_checked);
  EXPECT_EQ(good.checkpoints, 3);  // 10, 20, and 25 on close
  EXPECT_EQ(good.signed_checkpoints, 3);
  EXPECT_EQ(good.verified_signatures, 3);

  auto unchecked = store::verify_audit_log(options.file);
  EXPECT_TRUE(unchecked.intact());
  EXPECT_FALSE(unchecked.signatures_checked);
  EXPECT_EQ(unchecked.signed_checkpoints, 3);

  auto wrong = store::verify_audit_log(options.file, other_pub);
  ASSERT_EQ(wrong.issues.size(), 3u) << issues_text(wrong);
  std::vector<std::int64_t> seqs;
  for (const auto& issue : wrong.issues) {
    EXPECT_EQ(issue.kind, AuditIssueKind::CheckpointSignature);
    seqs.push_back(issue.seq);
  }
  EXPECT_EQ(seqs, (std::vector<std::int64_t>{10, 20, 25}));

  const fs::path forged = copy_store(options.file, temp.path / "forged.db");
  run_sql(forged, "UPDATE audit_checkpoints SET time_ms = time_ms + 1 WHERE seq = 20");
  auto altered = store::verify_audit_log(forged, pub);
  ASSERT_EQ(altered.issues.size(), 1u) << issues_text(altered);
  EXPECT_EQ(altered.issues[0].kind, AuditIssueKind::CheckpointSignature);
  EXPECT_EQ(altered.issues[0].seq, 20);

  // A log whose checkpoints are not signed fails a check that expects signatures.
  AuditLogOptions unsigned_options;
  unsigned_options.file = temp.path / "unsigned.db";
  unsigned_options.checkpoint_every = 10;
  {
    AuditLog log(unsigned_options);
    append_range(log, 1, 10);
  }
  auto unsigned_report = store::verify_audit_log(unsigned_options.file, pub);
  ASSERT_EQ(unsigned_report.issues.size(), 1u) << issues_text(unsigned_report);
  EXPECT_EQ(unsigned_report.issues[0].kind, AuditIssueKind::CheckpointSignature);

  // Only Ed25519 keys are accepted, with a hint on how to make one.
  const fs::path ec_key = temp.path / "ec.key", ec_pub = temp.path / "ec.pub";
  ASSERT_TRUE(make_key_pair(ec_key, ec_pub, "ec"));
  AuditLogOptions ec_options = options;
  ec_options.file = temp.path / "ec.db";
  ec_options.signing_key = ec_key;
  try {
    AuditLog log(ec_options);
    ADD_FAILURE() << "an EC key was accepted for Ed25519 checkpoints";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("Ed25519"), std::string::npos) << error.what();
    EXPECT_NE(error.hint().find("openssl genpkey -algorithm ed25519"), std::string::npos);
  }
  EXPECT_THROW(store::verify_audit_log(options.file, ec_pub), core::Error);
}

TEST(AuditLog, FullQueueRefusesAtOnceAndRecovers) {
  TempDir temp("aegis_audit_queue");
  AuditLogOptions options;
  options.file = temp.path / "queue.db";
  options.queue_capacity = 3;
  AuditLog log(options);
  // Another connection holds the write lock, so the writer stalls inside its transaction.
  sqlite3* blocker = nullptr;
  ASSERT_EQ(sqlite3_open_v2(options.file.c_str(), &blocker, SQLITE_OPEN_READWRITE, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(blocker, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr), SQLITE_OK);

  std::atomic<int> durable{0}, failed{0};
  auto count = [&](bool ok) { (ok ? durable : failed).fetch_add(1); };
  log.append(sample_record(1), count);
  while (log.counters().queued != 0) std::this_thread::yield();  // the writer took it and waits for the lock
  for (int n = 2; n <= 4; ++n) log.append(sample_record(n), count);
  bool answered_in_call = false, answer = true;
  log.append(sample_record(5), [&](bool ok) {
    answered_in_call = true;
    answer = ok;
  });
  EXPECT_TRUE(answered_in_call);  // fail fast: no waiting for the disk
  EXPECT_FALSE(answer);
  EXPECT_EQ(log.counters().rejected, 1u);

  ASSERT_EQ(sqlite3_exec(blocker, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(blocker);
  log.flush();
  EXPECT_EQ(durable.load(), 4);
  EXPECT_EQ(failed.load(), 0);
  log.close();
  bool after_close = true;
  log.append(sample_record(6), [&](bool ok) { after_close = ok; });
  EXPECT_FALSE(after_close);
  auto report = store::verify_audit_log(options.file);
  EXPECT_TRUE(report.intact()) << issues_text(report);
  EXPECT_EQ(report.records, 4);
}

TEST(AuditLog, KillNineUnderLoadLosesNoAcknowledgedRecord) {
  TempDir temp("aegis_audit_kill");
  const fs::path file = temp.path / "aegis-store.db";
  int acks[2];
  ASSERT_EQ(::pipe(acks), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // The child appends from four threads as fast as it can and reports each request number
    // once the log says it is durable. It never returns into the test framework.
    ::close(acks[0]);
    try {
      AuditLogOptions options;
      options.file = file;
      options.checkpoint_every = 1000;
      options.queue_capacity = 4096;
      AuditLog log(options);
      std::atomic<std::int64_t> next{1};
      auto produce = [&] {
        std::atomic<bool> refused{false};
        for (;;) {
          const std::int64_t n = next.fetch_add(1);
          log.append(sample_record(n), [fd = acks[1], n, &refused](bool ok) {
            if (!ok) refused = true;
            else if (::write(fd, &n, sizeof n) != static_cast<ssize_t>(sizeof n)) ::_exit(4);
          });
          // As the gateway would answer 503 and take the next request: no busy loop on a full queue.
          if (refused.exchange(false)) std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
      };
      std::thread a(produce), b(produce), c(produce);
      a.join();
    } catch (...) {
    }
    ::_exit(3);
  }
  ::close(acks[1]);
  std::vector<std::int64_t> acknowledged;
  std::string carry;
  bool killed = false;
  char buffer[4096];
  for (;;) {
    const ssize_t n = ::read(acks[0], buffer, sizeof buffer);
    if (n <= 0) break;
    carry.append(buffer, static_cast<std::size_t>(n));
    while (carry.size() >= sizeof(std::int64_t)) {
      std::int64_t id = 0;
      std::memcpy(&id, carry.data(), sizeof id);
      acknowledged.push_back(id);
      carry.erase(0, sizeof id);
    }
    // Kill mid-stream, then keep reading: acknowledgements already in the pipe count too.
    if (!killed && acknowledged.size() >= 5'000) {
      ::kill(child, SIGKILL);
      killed = true;
    }
  }
  ::close(acks[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(killed) << "the child stopped before it was killed; exit status " << status;
  ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << status;

  auto report = store::verify_audit_log(file);
  EXPECT_TRUE(report.intact()) << issues_text(report);
  EXPECT_GE(report.records, static_cast<std::int64_t>(acknowledged.size()));
  std::set<std::string> stored;
  for (const auto& record : store::read_audit_tail(file, static_cast<std::size_t>(report.records)))
    stored.insert(record.request_id);
  std::size_t missing = 0;
  for (auto id : acknowledged) missing += stored.count("req-" + std::to_string(id)) ? 0 : 1;
  EXPECT_EQ(missing, 0u) << "of " << acknowledged.size() << " acknowledged records";

  // The log carries on after the crash, chained to what survived.
  {
    AuditLogOptions options;
    options.file = file;
    AuditLog log(options);
    append_range(log, 1'000'000, 1'000'009);
  }
  auto resumed = store::verify_audit_log(file);
  EXPECT_TRUE(resumed.intact()) << issues_text(resumed);
  EXPECT_EQ(resumed.records, report.records + 10);
}

}  // namespace
}  // namespace aegis::test
