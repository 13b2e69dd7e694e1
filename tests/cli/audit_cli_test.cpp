// `aegis audit verify` and `aegis audit show` on a real store written by the audit log: exit codes,
// rule ids and the seq each finding names, through the shared report writers.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>

#include "../test_support.h"
#include "aegis/store/audit_log.h"

namespace aegis::test {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

void write_log(const fs::path& file, int records, const fs::path& signing_key = {}) {
  store::AuditLogOptions options;
  options.file = file;
  options.checkpoint_every = 5;
  options.signing_key = signing_key;
  store::AuditLog log(options);
  for (int n = 1; n <= records; ++n) {
    store::AuditRecord record;
    record.time_ms = 1'760'000'000'000 + n;
    record.request_id = "req-" + std::to_string(n);
    record.client_ip = "198.51.100.7";
    record.subject = "svc-" + std::to_string(n % 2);
    record.route = "chat";
    record.method = "POST";
    record.path = "/v1/chat/completions";
    record.status = 200;
    record.verdicts = {{"jwt", "allow", ""}};
    record.request_sha256 = std::string(64, 'a');
    record.response_sha256 = std::string(64, 'b');
    record.request_body = "{\"n\": " + std::to_string(n) + "}";
    log.append(std::move(record), {});
  }
}

void run_sql(const fs::path& file, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr), SQLITE_OK);
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << sql;
}

TEST(AuditCli, VerifyPassesAnIntactLogAndNamesTamperedRecords) {
  TempDir temp("aegis_audit_cli");
  const std::string store = (temp.path / "aegis-store.db").string();
  write_log(store, 12);

  auto clean = run_cli({"audit", "verify", store, "--format", "json"});
  ASSERT_EQ(clean.exit_code, 0) << clean.err << clean.out;
  auto doc = json::parse(clean.out);
  EXPECT_TRUE(doc["findings"].empty());
  EXPECT_EQ(doc["audit"]["records"], 12);
  EXPECT_EQ(doc["audit"]["last_seq"], 12);
  EXPECT_EQ(doc["audit"]["intact"], true);
  // Unsigned checkpoints are not a finding, but the user is told what they do not prove.
  EXPECT_NE(clean.err.find("unsigned"), std::string::npos) << clean.err;

  run_sql(store, "UPDATE audit_log SET subject = 'someone-else' WHERE seq = 4; DELETE FROM audit_log WHERE seq = 9");
  auto tampered = run_cli({"audit", "verify", store, "--format", "json"});
  EXPECT_EQ(tampered.exit_code, 1) << tampered.err;
  doc = json::parse(tampered.out);
  ASSERT_EQ(doc["findings"].size(), 2u) << tampered.out;
  EXPECT_EQ(doc["findings"][0]["rule_id"], "audit.record-changed");
  EXPECT_EQ(doc["findings"][0]["location"]["row"], 4);
  EXPECT_EQ(doc["findings"][0]["seq"], 4);
  EXPECT_EQ(doc["findings"][1]["rule_id"], "audit.record-dropped");
  EXPECT_EQ(doc["findings"][1]["location"]["row"], 9);
  EXPECT_EQ(doc["findings"][1]["severity"], "high");
  EXPECT_FALSE(doc["findings"][0]["nist_ai_rmf"].empty());
  EXPECT_EQ(doc["audit"]["intact"], false);

  auto sarif = run_cli({"audit", "verify", store, "--format", "sarif"});
  EXPECT_EQ(sarif.exit_code, 1);
  EXPECT_NE(sarif.out.find("audit.record-dropped"), std::string::npos);

  run_sql(store, "DELETE FROM audit_log WHERE seq > 10");
  auto truncated = run_cli({"audit", "verify", store, "--format", "json"});
  EXPECT_EQ(truncated.exit_code, 1);
  EXPECT_NE(truncated.out.find("audit.truncated"), std::string::npos) << truncated.out;
}

TEST(AuditCli, VerifyChecksCheckpointSignaturesWithThePublicKey) {
  TempDir temp("aegis_audit_cli_sign");
  const fs::path key = temp.path / "audit.key", pub = temp.path / "audit.pub", other = temp.path / "other.key",
                 other_pub = temp.path / "other.pub";
  for (const auto& [priv, pub_path] : {std::pair{key, pub}, std::pair{other, other_pub}})
    ASSERT_EQ(std::system(("openssl genpkey -algorithm ed25519 -out '" + priv.string() + "' && openssl pkey -in '" +
                           priv.string() + "' -pubout -out '" + pub_path.string() + "'").c_str()), 0);
  const std::string store = (temp.path / "signed.db").string();
  write_log(store, 7, key);

  auto good = run_cli({"audit", "verify", store, "--public-key", pub.string(), "--format", "json"});
  ASSERT_EQ(good.exit_code, 0) << good.err << good.out;
  auto doc = json::parse(good.out);
  EXPECT_EQ(doc["audit"]["verified_signatures"], 2);  // at 5, and at 7 on close

  auto wrong = run_cli({"audit", "verify", store, "--public-key", other_pub.string(), "--format", "json"});
  EXPECT_EQ(wrong.exit_code, 1);
  doc = json::parse(wrong.out);
  ASSERT_EQ(doc["findings"].size(), 2u) << wrong.out;
  EXPECT_EQ(doc["findings"][0]["rule_id"], "audit.checkpoint-signature");
  EXPECT_EQ(doc["findings"][0]["location"]["row"], 5);
}

TEST(AuditCli, ShowPrintsTheNewestRecordsAsJsonLines) {
  TempDir temp("aegis_audit_cli_show");
  const std::string store = (temp.path / "aegis-store.db").string();
  write_log(store, 6);
  auto show = run_cli({"audit", "show", store, "--last", "3"});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  std::istringstream lines(show.out);
  std::string line;
  std::vector<json> records;
  while (std::getline(lines, line))
    if (!line.empty()) records.push_back(json::parse(line));
  ASSERT_EQ(records.size(), 3u) << show.out;
  EXPECT_EQ(records[0]["seq"], 4);
  EXPECT_EQ(records[2]["seq"], 6);
  EXPECT_EQ(records[2]["request_id"], "req-6");
  EXPECT_EQ(records[2]["prev_hash"], records[1]["hash"]);
  EXPECT_EQ(records[2]["verdicts"][0]["filter"], "jwt");
  EXPECT_TRUE(records[2].contains("request_body_base64"));
}

TEST(AuditCli, UnreadableStoreIsAnIoError) {
  TempDir temp("aegis_audit_cli_missing");
  auto missing = run_cli({"audit", "verify", (temp.path / "nope.db").string(), "--format", "json"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("nope.db"), std::string::npos) << missing.err;

  const fs::path other = temp.path / "other.db";
  run_sql(other, "CREATE TABLE unrelated (x)");
  auto wrong = run_cli({"audit", "verify", other.string()});
  EXPECT_EQ(wrong.exit_code, 2);
  EXPECT_NE(wrong.err.find("no audit log"), std::string::npos) << wrong.err;
}

}  // namespace
}  // namespace aegis::test
