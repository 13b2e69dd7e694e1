// The dashboard's store over real SQLite files whose findings were recorded by the real FindingStore:
// argon2id hashes, users and the last-admin rule, logins with lockout, sessions that time out, every
// filter of the findings query, triage history with its hash-chained audit log (and a tampered row
// found), hostile summaries that must not crash the server, and the timings of the read queries over a
// store of 100,000 findings (printed, never asserted).
#include "aegis/web/dashboard_store.h"

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "../test_support.h"
#include "aegis/core/error.h"
#include "aegis/store/finding_store.h"
#include "aegis/web/password_hash.h"

namespace aegis::test {
namespace {

namespace fs = std::filesystem;
using core::Finding;
using core::Severity;
using nlohmann::json;
using store::FindingStore;
using store::RunRecord;
using web::DashboardStore;
using web::FindingQuery;
using web::LoginResult;
using web::SessionPolicy;

// Small argon2 costs keep the suite fast; the default cost is exercised once in PasswordHash.
constexpr web::Argon2Params kFastArgon2{256, 1, 1};
constexpr const char* kPassword = "correct horse battery";

// A clock the test moves by hand.
struct ManualClock {
  std::shared_ptr<std::chrono::system_clock::time_point> now =
      std::make_shared<std::chrono::system_clock::time_point>(std::chrono::sys_days{std::chrono::year{2025} / 6 / 1});
  void advance(std::chrono::seconds by) { *now += by; }
  std::function<std::chrono::system_clock::time_point()> function() const {
    return [now = now] { return *now; };
  }
};

SessionPolicy fast_policy(const ManualClock& clock) {
  SessionPolicy policy;
  policy.argon2 = kFastArgon2;
  policy.clock = clock.function();
  policy.max_failed_logins = 3;
  policy.lockout = std::chrono::seconds(60);
  policy.idle_timeout = std::chrono::minutes(1);
  policy.absolute_timeout = std::chrono::hours(1);
  return policy;
}

Finding make_finding(std::string rule, Severity severity, std::string title, std::vector<std::string> atlas,
                     std::string file = "model.pkl", std::string evidence = "evidence") {
  Finding finding;
  finding.rule_id = std::move(rule);
  finding.severity = severity;
  finding.title = std::move(title);
  finding.location.file = std::move(file);
  finding.evidence = std::move(evidence);
  finding.atlas = std::move(atlas);
  finding.nist_ai_rmf = {"MEASURE 2.7"};
  finding.remediation = "fix it";
  return finding;
}

RunRecord make_run(std::string command, std::string asset, std::string started_at, std::string summary_json = "") {
  RunRecord run;
  run.command = std::move(command);
  run.asset = std::move(asset);
  run.started_at = std::move(started_at);
  run.finished_at = run.started_at;
  run.aegis_version = "0.1.0";
  run.inputs = {"models/" + run.asset};
  run.summary_json = std::move(summary_json);
  return run;
}

std::vector<std::string> rules_of(const json& page) {
  std::vector<std::string> rules;
  for (const auto& item : page["items"]) rules.push_back(item["rule_id"].get<std::string>());
  return rules;
}

std::set<std::string> rule_set(const json& page) {
  auto rules = rules_of(page);
  return {rules.begin(), rules.end()};
}

void exec_sql(const fs::path& file, const std::string& sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(file.string().c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
  const std::string why = error ? error : "";
  sqlite3_free(error);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << why;
}

// ---- PasswordHash ----

TEST(PasswordHash, RoundTripWithFreshSalt) {
  const std::string hash = web::hash_password(kPassword, kFastArgon2);
  EXPECT_EQ(hash.rfind("$argon2id$v=19$m=256,t=1,p=1$", 0), 0u) << hash;
  EXPECT_TRUE(web::verify_password(kPassword, hash));
  EXPECT_FALSE(web::verify_password("correct horse battery!", hash));
  EXPECT_FALSE(web::verify_password("", hash));
  EXPECT_NE(web::hash_password(kPassword, kFastArgon2), hash);  // another salt
}

TEST(PasswordHash, DefaultCostRoundTrip) {
  const std::string hash = web::hash_password(kPassword);
  EXPECT_EQ(hash.rfind("$argon2id$v=19$m=65536,t=3,p=1$", 0), 0u) << hash;
  EXPECT_TRUE(web::verify_password(kPassword, hash));
  EXPECT_FALSE(web::needs_rehash(hash));
}

TEST(PasswordHash, MalformedHashesVerifyFalseWithoutThrowing) {
  const std::string good = web::hash_password(kPassword, kFastArgon2);
  const std::vector<std::string> bad = {
      "",
      "garbage",
      "$argon2id$",
      "$argon2i$v=19$m=256,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaA",
      "$argon2id$v=19$m=abc,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaA",
      "$argon2id$v=19$m=256,t=1$c2FsdHNhbHRzYWx0$aGFzaA",
      "$argon2id$v=19$m=256,t=1,p=0$c2FsdHNhbHRzYWx0$aGFzaA",
      // A cost no login should obey (a hand-edited store): refused before argon2 allocates.
      "$argon2id$v=19$m=4294967295,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaA",
      "$argon2id$v=19$m=256,t=4294967295,p=1$c2FsdHNhbHRzYWx0$aGFzaA",
      good.substr(0, good.size() - 5),
      good.substr(0, good.rfind('$')),
      good + "AAAA",
      std::string(good).insert(10, 1, '\0'),
  };
  for (const auto& hash : bad) {
    bool verified = true;
    EXPECT_NO_THROW(verified = web::verify_password(kPassword, hash)) << hash;
    EXPECT_FALSE(verified) << hash;
  }
}

TEST(PasswordHash, NeedsRehashComparesParameters) {
  const std::string weak = web::hash_password(kPassword, kFastArgon2);
  EXPECT_TRUE(web::needs_rehash(weak));  // default: 64 MiB, t=3
  EXPECT_FALSE(web::needs_rehash(weak, kFastArgon2));
  EXPECT_TRUE(web::needs_rehash(weak, {256, 2, 1}));
  EXPECT_TRUE(web::needs_rehash(weak, {512, 1, 1}));
  EXPECT_TRUE(web::needs_rehash(weak, {256, 1, 2}));
  EXPECT_FALSE(web::needs_rehash(weak, {128, 1, 1}));
  EXPECT_TRUE(web::needs_rehash("garbage"));
}

// ---- DashboardStore: users, logins, sessions ----

class DashboardStoreTest : public ::testing::Test {
 protected:
  TempDir dir{"aegis_webstore"};
  fs::path file = dir.path / "aegis.db";
  ManualClock clock;

  std::vector<std::string> audit_actions(const DashboardStore& store) {
    std::vector<std::string> actions;
    const json log = store.audit_log(500, 0);
    for (const auto& item : log["items"]) actions.push_back(item["action"].get<std::string>());
    std::reverse(actions.begin(), actions.end());  // oldest first
    return actions;
  }
};

TEST_F(DashboardStoreTest, UsersRolesAndTheLastAdmin) {
  DashboardStore store(file, fast_policy(clock));
  EXPECT_EQ(store.user_count(), 0u);
  store.add_user("alice", "admin", kPassword, "cli");
  store.add_user("bob.s@example-1", "viewer", kPassword, "alice");
  EXPECT_EQ(store.user_count(), 2u);

  EXPECT_THROW(store.add_user("alice", "viewer", kPassword, "cli"), core::Error);      // exists
  EXPECT_THROW(store.add_user("bad name", "viewer", kPassword, "cli"), core::Error);   // space
  EXPECT_THROW(store.add_user(std::string(65, 'a'), "viewer", kPassword, "cli"), core::Error);
  EXPECT_THROW(store.add_user("carol", "root", kPassword, "cli"), core::Error);        // role
  EXPECT_THROW(store.add_user("carol", "viewer", "short", "cli"), core::Error);        // password
  EXPECT_THROW(store.set_role("nobody", "viewer", "cli"), core::Error);

  const json users = store.users();
  ASSERT_EQ(users["items"].size(), 2u);
  EXPECT_EQ(users["items"][0]["name"], "alice");
  EXPECT_EQ(users["items"][0]["role"], "admin");
  EXPECT_EQ(users["items"][0]["disabled"], false);
  EXPECT_EQ(users["items"][0]["created_at"], "2025-06-01T00:00:00.000Z");
  EXPECT_TRUE(users["items"][0]["last_login_at"].is_null());

  // alice is the only enabled admin: she cannot be demoted, disabled or removed.
  EXPECT_THROW(store.set_role("alice", "analyst", "cli"), core::Error);
  EXPECT_THROW(store.set_disabled("alice", true, "cli"), core::Error);
  EXPECT_THROW(store.remove_user("alice", "cli"), core::Error);
  store.set_role("bob.s@example-1", "admin", "alice");
  store.set_role("alice", "analyst", "bob.s@example-1");  // now allowed
  EXPECT_THROW(store.remove_user("bob.s@example-1", "cli"), core::Error);
  store.set_disabled("alice", true, "cli");
  store.set_disabled("alice", false, "cli");
  store.set_password("alice", "another long password", "cli");
  store.remove_user("alice", "cli");
  EXPECT_EQ(store.user_count(), 1u);

  EXPECT_EQ(audit_actions(store), (std::vector<std::string>{"user.add", "user.add", "user.role", "user.role",
                                                             "user.disable", "user.enable", "user.password",
                                                             "user.remove"}));
  const json log = store.audit_log(1, 0);
  EXPECT_EQ(log["total"], 8);
  EXPECT_EQ(log["items"][0]["target"], "user:alice");
  EXPECT_EQ(log["items"][0]["user"], "cli");
  EXPECT_TRUE(store.verify_audit_log().empty());
}

TEST_F(DashboardStoreTest, LoginSucceedsFailsAndLocksOut) {
  DashboardStore store(file, fast_policy(clock));
  store.add_user("alice", "analyst", kPassword, "cli");

  LoginResult ok = store.login("alice", kPassword, "127.0.0.1");
  ASSERT_EQ(ok.outcome, LoginResult::Outcome::Ok);
  EXPECT_EQ(ok.token.size(), 43u);
  EXPECT_EQ(ok.session.csrf_token.size(), 43u);
  EXPECT_NE(ok.token, ok.session.csrf_token);
  EXPECT_EQ(ok.session.user, "alice");
  EXPECT_EQ(ok.session.role, "analyst");
  auto session = store.session(ok.token);
  ASSERT_TRUE(session);
  EXPECT_EQ(session->user, "alice");
  EXPECT_EQ(session->csrf_token, ok.session.csrf_token);
  EXPECT_FALSE(store.users()["items"][0]["last_login_at"].is_null());

  EXPECT_EQ(store.login("nobody", kPassword, "127.0.0.1").outcome, LoginResult::Outcome::InvalidCredentials);
  EXPECT_EQ(store.login("alice", "wrong password!", "127.0.0.1").outcome, LoginResult::Outcome::InvalidCredentials);
  EXPECT_EQ(store.login("alice", "wrong password!", "127.0.0.1").outcome, LoginResult::Outcome::InvalidCredentials);
  // The third failure in a row locks the name for a minute, even against the right password.
  const LoginResult locked = store.login("alice", "wrong password!", "127.0.0.1");
  EXPECT_EQ(locked.outcome, LoginResult::Outcome::LockedOut);
  EXPECT_EQ(locked.retry_after_s, 60);
  clock.advance(std::chrono::seconds(20));
  const LoginResult still = store.login("alice", kPassword, "127.0.0.1");
  EXPECT_EQ(still.outcome, LoginResult::Outcome::LockedOut);
  EXPECT_EQ(still.retry_after_s, 40);
  EXPECT_TRUE(still.token.empty());
  clock.advance(std::chrono::seconds(41));
  EXPECT_EQ(store.login("alice", kPassword, "127.0.0.1").outcome, LoginResult::Outcome::Ok);
  // A success resets the count: two more failures do not lock.
  EXPECT_EQ(store.login("alice", "wrong password!", "x").outcome, LoginResult::Outcome::InvalidCredentials);
  EXPECT_EQ(store.login("alice", "wrong password!", "x").outcome, LoginResult::Outcome::InvalidCredentials);
  EXPECT_EQ(store.login("alice", kPassword, "x").outcome, LoginResult::Outcome::Ok);

  EXPECT_EQ(audit_actions(store),
            (std::vector<std::string>{"user.add", "login", "login_failed", "login_failed", "login_failed",
                                      "login_failed", "locked_out", "login", "login_failed", "login_failed", "login"}));
  const json log = store.audit_log(500, 0);
  bool unknown_audited = false;
  for (const auto& item : log["items"])
    if (item["target"] == "user:nobody" && item["action"] == "login_failed") unknown_audited = true;
  EXPECT_TRUE(unknown_audited);
}

TEST_F(DashboardStoreTest, WeakHashIsReplacedAtLogin) {
  SessionPolicy policy = fast_policy(clock);
  {
    DashboardStore store(file, policy);
    store.add_user("alice", "viewer", kPassword, "cli");
  }
  policy.argon2 = {512, 1, 1};
  DashboardStore store(file, policy);
  ASSERT_EQ(store.login("alice", kPassword, "x").outcome, LoginResult::Outcome::Ok);
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(file.string().c_str(), &db), SQLITE_OK);
  sqlite3_stmt* stmt = nullptr;
  ASSERT_EQ(sqlite3_prepare_v2(db, "SELECT password_hash FROM web_user", -1, &stmt, nullptr), SQLITE_OK);
  ASSERT_EQ(sqlite3_step(stmt), SQLITE_ROW);
  const std::string hash = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 0));
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  EXPECT_EQ(hash.rfind("$argon2id$v=19$m=512,t=1,p=1$", 0), 0u) << hash;
  EXPECT_EQ(store.login("alice", kPassword, "x").outcome, LoginResult::Outcome::Ok);
}

TEST_F(DashboardStoreTest, SessionsTimeOut) {
  DashboardStore store(file, fast_policy(clock));  // idle 1 min, absolute 1 h
  store.add_user("alice", "viewer", kPassword, "cli");
  const LoginResult login = store.login("alice", kPassword, "x");
  ASSERT_EQ(login.outcome, LoginResult::Outcome::Ok);
  // Each use refreshes the idle timer...
  for (int i = 0; i < 3; ++i) {
    clock.advance(std::chrono::seconds(50));
    EXPECT_TRUE(store.session(login.token)) << i;
  }
  // ...until a minute passes unused.
  clock.advance(std::chrono::seconds(61));
  EXPECT_FALSE(store.session(login.token));

  // The absolute timeout ends even a busy session.
  const LoginResult busy = store.login("alice", kPassword, "x");
  ASSERT_EQ(busy.outcome, LoginResult::Outcome::Ok);
  for (int i = 0; i < 75; ++i) {
    clock.advance(std::chrono::seconds(50));
    EXPECT_EQ(static_cast<bool>(store.session(busy.token)), 50 * (i + 1) < 3600) << i;
  }

  // An idle timeout of zero: a session is over as soon as it starts.
  SessionPolicy zero = fast_policy(clock);
  zero.idle_timeout = std::chrono::minutes(0);
  DashboardStore strict(file, zero);
  const LoginResult once = strict.login("alice", kPassword, "x");
  ASSERT_EQ(once.outcome, LoginResult::Outcome::Ok);
  EXPECT_FALSE(strict.session(once.token));
}

TEST_F(DashboardStoreTest, LogoutDisableAndPasswordChangeEndSessions) {
  DashboardStore store(file, fast_policy(clock));
  store.add_user("admin", "admin", kPassword, "cli");
  store.add_user("alice", "analyst", kPassword, "cli");

  const LoginResult first = store.login("alice", kPassword, "x");
  ASSERT_EQ(first.outcome, LoginResult::Outcome::Ok);
  store.logout(first.token);
  EXPECT_FALSE(store.session(first.token));
  store.logout(first.token);     // twice: nothing to do
  store.logout("not a token");   // garbage: nothing to do
  EXPECT_FALSE(store.session(""));
  EXPECT_FALSE(store.session(std::string(43, 'A')));
  EXPECT_FALSE(store.session(std::string(10000, '\xff')));

  const LoginResult second = store.login("alice", kPassword, "x");
  store.set_disabled("alice", true, "admin");
  EXPECT_FALSE(store.session(second.token));
  EXPECT_EQ(store.login("alice", kPassword, "x").outcome, LoginResult::Outcome::InvalidCredentials);
  store.set_disabled("alice", false, "admin");

  const LoginResult third = store.login("alice", kPassword, "x");
  ASSERT_TRUE(store.session(third.token));
  store.set_password("alice", "a brand new password", "admin");
  EXPECT_FALSE(store.session(third.token));
  EXPECT_EQ(store.login("alice", kPassword, "x").outcome, LoginResult::Outcome::InvalidCredentials);
  const LoginResult fourth = store.login("alice", "a brand new password", "x");
  ASSERT_EQ(fourth.outcome, LoginResult::Outcome::Ok);

  store.set_role("alice", "viewer", "admin");
  EXPECT_EQ(store.session(fourth.token)->role, "viewer");  // the role is read live
  store.remove_user("alice", "admin");
  EXPECT_FALSE(store.session(fourth.token));
}

TEST_F(DashboardStoreTest, RefusesNewerSchemaPostgresAndForeignFiles) {
  { DashboardStore store(file); }
  exec_sql(file, "UPDATE aegis_schema SET version = 99 WHERE component = 'web'");
  try {
    DashboardStore store(file);
    FAIL() << "opened a newer schema";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("newer"), std::string::npos) << error.what();
  }
  try {
    DashboardStore store(fs::path("postgresql://aegis@localhost/aegis"));
    FAIL() << "opened a PostgreSQL URL";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("SQLite"), std::string::npos) << error.what();
  }
  EXPECT_THROW(DashboardStore(fs::path("POSTGRES://host/db")), core::Error);
  const fs::path foreign = dir.path / "foreign.db";
  exec_sql(foreign, "CREATE TABLE customers (id INTEGER)");
  EXPECT_THROW(DashboardStore{foreign}, core::Error);
}

// ---- DashboardStore: the findings and the other read queries ----

// Five runs: llm/scan twice (the older one leaves the current scope), llm/audit-infra, cv/scan, and
// one run recorded as a done job of an assessment (cv/pii).
class DashboardStoreFindings : public DashboardStoreTest {
 protected:
  std::int64_t old_scan = 0, new_scan = 0, infra = 0, cv_scan = 0, job_run = 0, assessment_id = 0;

  void SetUp() override {
    FindingStore findings(file);
    old_scan = findings.record_run(make_run("scan", "llm", "2025-01-01T00:00:00Z"),
                                   {make_finding("OLD-1", Severity::Critical, "old critical", {"AML.T0010"})});
    Finding with_offset = make_finding("PKL-GLOBAL", Severity::Critical, "Dangerous pickle global",
                                       {"AML.T0011.000", "AML.T0010"}, "weights/Model.PKL", "os.system call");
    with_offset.location.offset = 1234;
    with_offset.location.member = "archive/data.pkl";
    new_scan = findings.record_run(
        make_run("scan", "llm", "2025-02-01T00:00:00Z", R"({"files_scanned": 3})"),
        {with_offset,
         make_finding("PKL-IMPORT", Severity::High, "Unusual import", {"AML.T0011"}, "b.pkl", "import of 50% module"),
         make_finding("GGUF-META", Severity::Low, "Odd metadata", {}, "c.gguf", "key x_y"),
         make_finding("INFO-1", Severity::Info, "Just so you know", {"AML.T00110"}, "d.bin", "nothing")});
    infra = findings.record_run(make_run("audit-infra", "llm", "2025-01-15T00:00:00Z"),
                                {make_finding("INFRA-JUPYTER", Severity::Medium, "Jupyter without token", {"AML.T0049"},
                                              "deploy.yaml", "token=''")});
    cv_scan = findings.record_run(make_run("scan", "cv", "2025-01-20T00:00:00Z", "{not json"),
                                  {make_finding("PKL-GLOBAL", Severity::High, "Dangerous pickle global", {"AML.T0010"},
                                                "cv.pkl", "eval")});
    store::AssessmentRecord assessment;
    assessment.inventory = "inventory.yaml";
    assessment.started_at = "2025-03-01T00:00:00Z";
    assessment_id = findings.begin_assessment(assessment);
    store::JobRecord done;
    done.assessment_id = assessment_id;
    done.job_key = "k1";
    done.asset = "cv";
    done.check = "pii";
    done.state = "done";
    done.worker = "w1";
    done.finished_at = "2025-03-01T00:10:00Z";
    job_run = findings
                  .record_job(done, make_run("pii", "cv", "2025-03-01T00:05:00Z", R"({"mia": {"auc": 0.61}})"),
                              {make_finding("PII-EMAIL", Severity::Medium, "E-mail addresses", {"AML.T0057"},
                                            "train.csv", "alice@example.com")})
                  .first;
    store::JobRecord failed = done;
    failed.job_key = "k2";
    failed.check = "scan";
    failed.state = "failed";
    failed.error = "model not found";
    findings.record_job(failed, {}, {});
  }

  json query(FindingQuery q) {
    DashboardStore store(file, fast_policy(clock));
    return store.findings(q);
  }
};

TEST_F(DashboardStoreFindings, ScopeRunAndAssessment) {
  DashboardStore store(file, fast_policy(clock));
  FindingQuery q;
  json page = store.findings(q);
  EXPECT_EQ(page["total"], 7);  // all but the old scan's
  EXPECT_EQ(page["limit"], 50);
  EXPECT_EQ(page["offset"], 0);
  EXPECT_EQ(rule_set(page).count("OLD-1"), 0u);

  q.scope = "all";
  EXPECT_EQ(store.findings(q)["total"], 8);
  EXPECT_EQ(rule_set(store.findings(q)).count("OLD-1"), 1u);

  q.scope = "current";
  q.run = old_scan;  // overrides the scope
  EXPECT_EQ(rules_of(store.findings(q)), std::vector<std::string>{"OLD-1"});
  q.run.reset();
  q.assessment = assessment_id;
  EXPECT_EQ(rules_of(store.findings(q)), std::vector<std::string>{"PII-EMAIL"});
  q.assessment = 9999;
  EXPECT_EQ(store.findings(q)["total"], 0);

  q = {};
  q.scope = "everything";
  EXPECT_THROW(store.findings(q), core::Error);
}

TEST_F(DashboardStoreFindings, FieldFilters) {
  DashboardStore store(file, fast_policy(clock));
  FindingQuery q;
  q.asset = "cv";
  EXPECT_EQ(rule_set(store.findings(q)), (std::set<std::string>{"PKL-GLOBAL", "PII-EMAIL"}));
  q.command = "scan";
  const json cv = store.findings(q);
  ASSERT_EQ(cv["total"], 1);
  EXPECT_EQ(cv["items"][0]["run_id"], cv_scan);
  q = {};
  q.command = "audit-infra";
  EXPECT_EQ(rules_of(store.findings(q)), std::vector<std::string>{"INFRA-JUPYTER"});
  q.scope = "all";
  q.command = "scan";
  q.asset = "llm";
  EXPECT_EQ(store.findings(q)["total"], 5);

  q = {};
  q.severities = {"high", "critical"};
  EXPECT_EQ(rules_of(store.findings(q)), (std::vector<std::string>{"PKL-GLOBAL", "PKL-IMPORT", "PKL-GLOBAL"}));
  q.severities = {"severe"};
  EXPECT_THROW(store.findings(q), core::Error);

  // ATLAS: a technique matches itself and its sub-techniques, never a longer id that merely starts alike.
  q = {};
  q.atlas = "AML.T0011";
  EXPECT_EQ(rule_set(store.findings(q)), (std::set<std::string>{"PKL-GLOBAL", "PKL-IMPORT"}));
  q.atlas = "AML.T0011.000";
  EXPECT_EQ(rules_of(store.findings(q)), std::vector<std::string>{"PKL-GLOBAL"});
  q.atlas = "AML.T001";
  EXPECT_EQ(store.findings(q)["total"], 0);
  q.atlas = "AML.T0010";
  EXPECT_EQ(store.findings(q)["total"], 2);  // the llm and cv pickle globals; the old scan is out of scope

  // q: case-insensitive substring of the rule id, title, evidence or file; wildcards are literal.
  q = {};
  q.q = "model.pkl";
  EXPECT_EQ(rules_of(store.findings(q)), std::vector<std::string>{"PKL-GLOBAL"});  // file, other case
  q.q = "UNUSUAL";
  EXPECT_EQ(rules_of(store.findings(q)), std::vector<std::string>{"PKL-IMPORT"});  // title
  q.q = "ALICE@";
  EXPECT_EQ(rules_of(store.findings(q)), std::vector<std::string>{"PII-EMAIL"});  // evidence
  q.q = "gguf-m";
  EXPECT_EQ(rules_of(store.findings(q)), std::vector<std::string>{"GGUF-META"});  // rule id
  q.q = "50%";
  EXPECT_EQ(rules_of(store.findings(q)), std::vector<std::string>{"PKL-IMPORT"});
  q.q = "x_y";
  EXPECT_EQ(rules_of(store.findings(q)), std::vector<std::string>{"GGUF-META"});
  q.q = "x%y";
  EXPECT_EQ(store.findings(q)["total"], 0);

  // Status, after triage.
  const json page = store.findings({});
  std::int64_t import_id = 0;
  for (const auto& item : page["items"])
    if (item["rule_id"] == "PKL-IMPORT") import_id = item["id"];
  store.set_finding_status(import_id, "acknowledged", "looking into it", "alice");
  q = {};
  q.statuses = {"acknowledged"};
  EXPECT_EQ(rules_of(store.findings(q)), std::vector<std::string>{"PKL-IMPORT"});
  q.statuses = {"open", "fixed"};
  EXPECT_EQ(store.findings(q)["total"], 6);
  q.statuses = {"closed"};
  EXPECT_THROW(store.findings(q), core::Error);
}

TEST_F(DashboardStoreFindings, FindingDocument) {
  DashboardStore store(file, fast_policy(clock));
  FindingQuery q;
  q.run = new_scan;
  q.sort = "id";
  const json page = store.findings(q);
  ASSERT_EQ(page["items"].size(), 4u);
  const json& first = page["items"][0];
  EXPECT_EQ(first["rule_id"], "PKL-GLOBAL");
  EXPECT_EQ(first["run_id"], new_scan);
  EXPECT_EQ(first["asset"], "llm");
  EXPECT_EQ(first["command"], "scan");
  EXPECT_EQ(first["severity"], "critical");
  EXPECT_EQ(first["title"], "Dangerous pickle global");
  EXPECT_EQ(first["location"]["file"], "weights/Model.PKL");
  EXPECT_EQ(first["location"]["member"], "archive/data.pkl");
  EXPECT_EQ(first["location"]["byte_offset"], 1234);
  EXPECT_TRUE(first["location"]["row"].is_null());
  EXPECT_TRUE(first["location"]["line"].is_null());
  EXPECT_EQ(first["location"]["column"], "");
  EXPECT_EQ(first["evidence"], "os.system call");
  EXPECT_EQ(first["atlas"], (json{"AML.T0011.000", "AML.T0010"}));
  EXPECT_EQ(first["nist_ai_rmf"], (json{"MEASURE 2.7"}));
  EXPECT_EQ(first["remediation"], "fix it");
  EXPECT_EQ(first["status"], "open");
  EXPECT_EQ(first["fingerprint"].get<std::string>().size(), 32u);
  EXPECT_EQ(first["started_at"], "2025-02-01T00:00:00Z");
  EXPECT_TRUE(page["items"][2]["location"]["byte_offset"].is_null());

  const auto one = store.finding(first["id"]);
  ASSERT_TRUE(one);
  EXPECT_EQ((*one)["history"], json::array());
  EXPECT_EQ((*one)["title"], first["title"]);
  EXPECT_FALSE(store.finding(999999));
}

TEST_F(DashboardStoreFindings, SortOrdersAndPages) {
  DashboardStore store(file, fast_policy(clock));
  FindingQuery q;  // -severity, then id
  // The llm critical; the highs (llm import, then cv global by id); the mediums (infra, then pii).
  EXPECT_EQ(rules_of(store.findings(q)), (std::vector<std::string>{"PKL-GLOBAL", "PKL-IMPORT", "PKL-GLOBAL", "INFRA-JUPYTER",
                                                                   "PII-EMAIL", "GGUF-META", "INFO-1"}));
  q.sort = "severity";
  const auto ascending = rules_of(store.findings(q));
  EXPECT_EQ(ascending.front(), "INFO-1");
  EXPECT_EQ(ascending.back(), "PKL-GLOBAL");
  q.sort = "id";
  std::vector<std::int64_t> ids;
  const json by_id = store.findings(q);
  for (const auto& item : by_id["items"]) ids.push_back(item["id"]);
  EXPECT_TRUE(std::is_sorted(ids.begin(), ids.end()));
  q.sort = "-id";
  std::vector<std::int64_t> down;
  const json by_id_down = store.findings(q);
  for (const auto& item : by_id_down["items"]) down.push_back(item["id"]);
  EXPECT_TRUE(std::is_sorted(down.rbegin(), down.rend()));
  q.sort = "asset";
  const json by_asset = store.findings(q);
  EXPECT_EQ(by_asset["items"][0]["asset"], "cv");
  EXPECT_EQ(by_asset["items"][6]["asset"], "llm");
  EXPECT_EQ(by_asset["items"][2]["rule_id"], "PKL-GLOBAL");  // llm's critical first
  q.sort = "rule";
  EXPECT_EQ(rules_of(store.findings(q)).front(), "GGUF-META");
  q.sort = "name";
  EXPECT_THROW(store.findings(q), core::Error);

  q = {};
  q.sort = "id";
  q.limit = 3;
  q.offset = 2;
  const json page = store.findings(q);
  EXPECT_EQ(page["total"], 7);
  EXPECT_EQ(page["items"].size(), 3u);
  EXPECT_EQ(page["items"][0]["id"], ids[2]);
  q.offset = 6;
  EXPECT_EQ(store.findings(q)["items"].size(), 1u);
  q.offset = 100;
  EXPECT_EQ(store.findings(q)["items"].size(), 0u);
  EXPECT_EQ(store.findings(q)["total"], 7);
  q.limit = 100000;
  q.offset = 0;
  EXPECT_EQ(store.findings(q)["limit"], 500);
}

TEST_F(DashboardStoreFindings, StatusChangesKeepHistoryAndAChainedAudit) {
  DashboardStore store(file, fast_policy(clock));
  FindingQuery q;
  q.run = new_scan;
  q.sort = "id";
  const std::int64_t id = store.findings(q)["items"][0]["id"];

  EXPECT_THROW(store.set_finding_status(id, "closed", "why", "alice"), core::Error);
  EXPECT_THROW(store.set_finding_status(id, "fixed", "", "alice"), core::Error);
  EXPECT_THROW(store.set_finding_status(id, "fixed", std::string(4001, 'x'), "alice"), core::Error);
  EXPECT_THROW(store.set_finding_status(999999, "fixed", "why", "alice"), core::Error);
  EXPECT_EQ((*store.finding(id))["history"].size(), 0u);

  json after = store.set_finding_status(id, "accepted-risk", "vendor model, sandboxed", "alice");
  EXPECT_EQ(after["status"], "accepted-risk");
  ASSERT_EQ(after["history"].size(), 1u);
  clock.advance(std::chrono::seconds(90));
  after = store.set_finding_status(id, "fixed", std::string(4000, 'y'), "bob");
  ASSERT_EQ(after["history"].size(), 2u);
  EXPECT_EQ(after["history"][0]["from"], "open");
  EXPECT_EQ(after["history"][0]["to"], "accepted-risk");
  EXPECT_EQ(after["history"][0]["user"], "alice");
  EXPECT_EQ(after["history"][0]["comment"], "vendor model, sandboxed");
  EXPECT_EQ(after["history"][0]["time"], "2025-06-01T00:00:00.000Z");
  EXPECT_EQ(after["history"][1]["from"], "accepted-risk");
  EXPECT_EQ(after["history"][1]["time"], "2025-06-01T00:01:30.000Z");
  // The findings store sees the new status too.
  EXPECT_EQ(FindingStore(file).findings(new_scan)[0].status, "fixed");

  store.audit("alice", "export", "report:1", {{"format", "html"}});
  const json log = store.audit_log(10, 0);
  ASSERT_EQ(log["total"], 3);
  EXPECT_EQ(log["items"][2]["action"], "finding.status");  // newest first
  EXPECT_EQ(log["items"][2]["target"], "finding:" + std::to_string(id));
  EXPECT_EQ(log["items"][2]["detail"], (json{{"from", "open"}, {"to", "accepted-risk"}, {"comment", "vendor model, sandboxed"}}));
  EXPECT_EQ(log["items"][0]["detail"]["format"], "html");
  EXPECT_EQ(log["items"][0]["hash"].get<std::string>().size(), 64u);
  EXPECT_TRUE(store.verify_audit_log().empty());

  // An edit with raw SQL breaks that record's hash; a deletion breaks the link of the next one.
  exec_sql(file, "UPDATE web_audit SET detail_json = '{\"from\":\"open\",\"to\":\"open\"}' WHERE seq = 1");
  EXPECT_EQ(store.verify_audit_log(), std::vector<std::int64_t>{1});
  exec_sql(file, "DELETE FROM web_audit WHERE seq = 2");
  EXPECT_EQ(store.verify_audit_log(), (std::vector<std::int64_t>{1, 3}));
}

TEST_F(DashboardStoreFindings, SummaryInventoryRunsAndAssessments) {
  DashboardStore store(file, fast_policy(clock));
  const json summary = store.summary();
  EXPECT_EQ(summary["severity"],
            (json{{"critical", 1}, {"high", 2}, {"medium", 2}, {"low", 1}, {"info", 1}}));
  EXPECT_EQ(summary["status"]["open"], 7);
  EXPECT_EQ(summary["status"]["fixed"], 0);
  EXPECT_EQ(summary["assets"], 2);
  EXPECT_EQ(summary["runs"], 5);
  EXPECT_EQ(summary["assessments"], 1);
  EXPECT_EQ(summary["findings"], 7);

  const json inventory = store.inventory();
  ASSERT_EQ(inventory["assets"].size(), 2u);
  const json& cv = inventory["assets"][0];
  EXPECT_EQ(cv["name"], "cv");
  EXPECT_EQ(cv["runs"], 2);
  EXPECT_EQ(cv["commands"], (json{"pii", "scan"}));
  EXPECT_EQ(cv["last_run_at"], "2025-03-01T00:05:00Z");
  EXPECT_EQ(cv["open"], (json{{"critical", 0}, {"high", 1}, {"medium", 1}, {"low", 0}, {"info", 0}}));
  const json& llm = inventory["assets"][1];
  EXPECT_EQ(llm["runs"], 3);
  EXPECT_EQ(llm["last_run_at"], "2025-02-01T00:00:00Z");
  EXPECT_EQ(llm["open"]["critical"], 1);  // the old scan's critical is not current

  json runs = store.runs(std::nullopt, std::nullopt, std::nullopt, 50, 0);
  EXPECT_EQ(runs["total"], 5);
  EXPECT_EQ(runs["items"][0]["id"], job_run);  // newest first
  EXPECT_EQ(runs["items"][4]["id"], old_scan);
  const json& run = runs["items"][1];
  EXPECT_EQ(run["command"], "scan");
  EXPECT_EQ(run["asset"], "llm");
  EXPECT_EQ(run["inputs"], (json{"models/llm"}));
  EXPECT_EQ(run["exit_code"], 0);
  EXPECT_EQ(run["aegis_version"], "0.1.0");
  EXPECT_EQ(run["counts"], (json{{"critical", 1}, {"high", 1}, {"medium", 0}, {"low", 1}, {"info", 1}}));
  EXPECT_FALSE(run.contains("summary"));
  EXPECT_EQ(store.runs("llm", "scan", std::nullopt, 50, 0)["total"], 2);
  EXPECT_EQ(store.runs("llm", "scan", std::nullopt, 1, 1)["items"][0]["id"], old_scan);
  EXPECT_EQ(store.runs(std::nullopt, std::nullopt, assessment_id, 50, 0)["items"][0]["id"], job_run);

  EXPECT_EQ((*store.run(new_scan))["summary"], (json{{"files_scanned", 3}}));
  EXPECT_TRUE((*store.run(cv_scan))["summary"].is_null());  // invalid JSON
  EXPECT_TRUE((*store.run(old_scan))["summary"].is_null());  // none
  EXPECT_FALSE(store.run(999));

  const json assessments = store.assessments(50, 0);
  EXPECT_EQ(assessments["total"], 1);
  EXPECT_EQ(assessments["items"][0]["inventory"], "inventory.yaml");
  EXPECT_EQ(assessments["items"][0]["status"], "running");
  EXPECT_EQ(assessments["items"][0]["jobs"], 2);
  EXPECT_EQ(assessments["items"][0]["failed_jobs"], 1);
  const auto one = store.assessment(assessment_id);
  ASSERT_TRUE(one);
  ASSERT_EQ((*one)["jobs"].size(), 2u);
  EXPECT_EQ((*one)["jobs"][0], (json{{"asset", "cv"}, {"check", "pii"}, {"state", "done"}, {"run_id", job_run},
                                     {"error", ""}, {"worker", "w1"}, {"finished_at", "2025-03-01T00:10:00Z"}}));
  EXPECT_TRUE((*one)["jobs"][1]["run_id"].is_null());
  EXPECT_EQ((*one)["jobs"][1]["error"], "model not found");
  EXPECT_FALSE(store.assessment(999));

  std::map<std::string, DashboardStore::TechniqueCount> counts;
  for (const auto& count : store.atlas_counts()) counts[count.id] = count;
  EXPECT_EQ(counts.size(), 6u);
  EXPECT_EQ(counts["AML.T0010"].findings, 2u);
  EXPECT_EQ(counts["AML.T0010"].open, 2u);
  EXPECT_EQ(counts["AML.T0010"].highest, "critical");
  EXPECT_EQ(counts["AML.T0011"].highest, "high");
  EXPECT_EQ(counts["AML.T0057"].highest, "medium");

  const auto summaries = store.latest_summaries("pii");
  ASSERT_EQ(summaries.size(), 1u);
  EXPECT_EQ(summaries[0]["run_id"], job_run);
  EXPECT_EQ(summaries[0]["asset"], "cv");
  EXPECT_EQ(summaries[0]["summary"]["mia"]["auc"], 0.61);
  EXPECT_EQ(store.latest_summaries("scan").size(), 1u);  // cv's scan summary is not JSON
}

// The HTTP server calls one store from several threads: reads, triage and logins interleave.
TEST_F(DashboardStoreFindings, ServesSeveralThreadsAtOnce) {
  DashboardStore store(file, fast_policy(clock));
  store.add_user("alice", "analyst", kPassword, "cli");
  const std::int64_t id = store.findings({})["items"][0]["id"];
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        const LoginResult login = store.login("alice", kPassword, "thread");
        if (login.outcome != LoginResult::Outcome::Ok || !store.session(login.token)) ++failures;
        if (store.findings({})["total"] != 7 || store.summary()["findings"] != 7) ++failures;
        store.set_finding_status(id, i % 2 ? "open" : "acknowledged", "thread " + std::to_string(t), "alice");
      }
    });
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ((*store.finding(id))["history"].size(), 40u);
  EXPECT_EQ(store.audit_log(1, 0)["total"], 1 + 40 + 40);
  EXPECT_TRUE(store.verify_audit_log().empty());
}

TEST_F(DashboardStoreTest, HostileSummaryJsonDoesNotCrash) {
  std::int64_t deep = 0, deep_object = 0, invalid = 0, huge_string = 0;
  {
    FindingStore findings(file);
    deep = findings.record_run(make_run("attack", "a", "2025-01-01T00:00:00Z", std::string(200000, '[') +
                                                                                   std::string(200000, ']')),
                               {});
    std::string nested;
    for (int i = 0; i < 50000; ++i) nested += "{\"a\":";
    nested += "1" + std::string(50000, '}');
    deep_object = findings.record_run(make_run("attack", "b", "2025-01-01T00:00:00Z", nested), {});
    invalid = findings.record_run(make_run("attack", "c", "2025-01-01T00:00:00Z", "{\"a\": [1, 2,"), {});
    huge_string = findings.record_run(
        make_run("attack", "d", "2025-01-01T00:00:00Z", "{\"a\": \"" + std::string(1 << 20, 'x') + "\"}"), {});
  }
  DashboardStore store(file, fast_policy(clock));
  EXPECT_TRUE((*store.run(deep))["summary"].is_null());
  EXPECT_TRUE((*store.run(deep_object))["summary"].is_null());
  EXPECT_TRUE((*store.run(invalid))["summary"].is_null());
  EXPECT_EQ((*store.run(huge_string))["summary"]["a"].get<std::string>().size(), 1u << 20);
  EXPECT_EQ(store.latest_summaries("attack").size(), 1u);
}

// Prints how long the read queries take over 100,000 findings in 2,000 runs (400 asset/command pairs,
// five runs each). Timing is reported, not asserted.
TEST_F(DashboardStoreTest, HundredThousandFindingsTimings) {
  using Clock = std::chrono::steady_clock;
  const auto build_start = Clock::now();
  {
    FindingStore findings(file);
    const char* commands[] = {"scan", "pii"};
    const Severity severities[] = {Severity::Info, Severity::Low, Severity::Medium, Severity::High, Severity::Critical};
    const char* techniques[] = {"AML.T0010", "AML.T0011.000", "AML.T0049", "AML.T0057", "AML.T0024.000"};
    for (int round = 0; round < 5; ++round)
      for (int asset = 0; asset < 200; ++asset)
        for (const char* command : commands) {
          char started[40];
          std::snprintf(started, sizeof started, "2025-0%d-%02dT%02d:00:00Z", round + 1, 1 + asset % 28, asset % 24);
          std::vector<Finding> batch;
          for (int i = 0; i < 50; ++i)
            batch.push_back(make_finding("RULE-" + std::to_string(i % 40), severities[(i + asset) % 5],
                                         "Finding number " + std::to_string(i), {techniques[i % 5]},
                                         "asset" + std::to_string(asset) + "/file" + std::to_string(i) + ".pkl",
                                         "evidence text " + std::to_string(round * 1000 + i)));
          findings.record_run(make_run(command, "asset-" + std::to_string(asset), started, R"({"ok": true})"), batch);
        }
  }
  const double build_s = std::chrono::duration<double>(Clock::now() - build_start).count();
  const auto open_start = Clock::now();
  DashboardStore store(file, fast_policy(clock));
  const double open_ms = std::chrono::duration<double, std::milli>(Clock::now() - open_start).count();

  auto time_ms = [](auto&& work) {
    const auto start = Clock::now();
    work();
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  };
  json page;
  FindingQuery current;
  const double findings_ms = time_ms([&] { page = store.findings(current); });
  EXPECT_EQ(page["total"], 20000);
  FindingQuery all;
  all.scope = "all";
  all.offset = 50000;
  const double all_ms = time_ms([&] { page = store.findings(all); });
  EXPECT_EQ(page["total"], 100000);
  FindingQuery filtered;
  filtered.severities = {"critical", "high"};
  filtered.statuses = {"open"};
  filtered.atlas = "AML.T0011";
  filtered.q = "file1";
  filtered.sort = "asset";
  const double filtered_ms = time_ms([&] { page = store.findings(filtered); });
  EXPECT_GT(page["total"].get<int>(), 0);
  FindingQuery by_asset;
  by_asset.asset = "asset-7";
  by_asset.scope = "all";
  const double asset_ms = time_ms([&] { page = store.findings(by_asset); });
  EXPECT_EQ(page["total"], 500);
  json summary, inventory;
  const double summary_ms = time_ms([&] { summary = store.summary(); });
  EXPECT_EQ(summary["findings"], 20000);
  const double inventory_ms = time_ms([&] { inventory = store.inventory(); });
  EXPECT_EQ(inventory["assets"].size(), 200u);
  std::vector<DashboardStore::TechniqueCount> counts;
  const double atlas_ms = time_ms([&] { counts = store.atlas_counts(); });
  EXPECT_EQ(counts.size(), 5u);
  const double runs_ms = time_ms([&] { page = store.runs(std::nullopt, std::nullopt, std::nullopt, 50, 0); });
  EXPECT_EQ(page["total"], 2000);
  const double summaries_ms = time_ms([&] { EXPECT_EQ(store.latest_summaries("scan").size(), 200u); });

  std::printf("[ timing ] 100k findings, 2000 runs: built in %.1f s, dashboard opened (its indexes built) in %.0f ms\n"
              "[ timing ] findings current %.1f ms, all offset 50000 %.1f ms, filtered+asset sort %.1f ms, "
              "one asset %.1f ms\n"
              "[ timing ] summary %.1f ms, inventory %.1f ms, atlas_counts %.1f ms, runs %.1f ms, "
              "latest_summaries %.1f ms\n",
              build_s, open_ms, findings_ms, all_ms, filtered_ms, asset_ms, summary_ms, inventory_ms, atlas_ms, runs_ms,
              summaries_ms);
}

}  // namespace
}  // namespace aegis::test
