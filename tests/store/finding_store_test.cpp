// The findings store on both backends — real SQLite files and a real PostgreSQL server started by the
// suite: every field written and read back, runs listed and filtered as `aegis assess` asks for
// them, fingerprints that survive rewording but not moving, several writers (objects and processes)
// on one store, a writer killed mid-run, schema migrations, assessments and their jobs recorded
// exactly once however many processes race; then what is particular to each: the files a user may
// point --store at by mistake, and the URLs, servers and roles that PostgreSQL can refuse.
#include "aegis/store/finding_store.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <limits>
#include <memory>
#include <set>
#include <thread>

#include "../test_support.h"
#include "aegis/core/error.h"
#include "aegis/store/lineage_store.h"
#include "support/postgres_server.h"

namespace aegis::test {
namespace {

namespace fs = std::filesystem;
using core::Finding;
using core::Severity;
using store::AssessmentRecord;
using store::FindingStore;
using store::FindingStoreOptions;
using store::JobRecord;
using store::RunFilter;
using store::RunRecord;
using store::StoredFinding;

Finding make_finding(std::string rule, Severity severity, std::string file, std::uint64_t line, std::string evidence) {
  Finding finding;
  finding.rule_id = std::move(rule);
  finding.severity = severity;
  finding.title = "title of " + finding.rule_id;
  finding.location.file = std::move(file);
  finding.location.line = line;
  finding.evidence = std::move(evidence);
  finding.atlas = {"AML.T0049"};
  finding.remediation = "fix it";
  return finding;
}

RunRecord make_run(std::string command, std::string asset, std::string started_at) {
  RunRecord run;
  run.command = std::move(command);
  run.asset = std::move(asset);
  run.started_at = std::move(started_at);
  run.finished_at = run.started_at;
  run.aegis_version = "0.1.0";
  return run;
}

JobRecord make_job(std::int64_t assessment_id, std::string key, std::string state, std::string finished_at) {
  JobRecord job;
  job.assessment_id = assessment_id;
  job.job_key = std::move(key);
  job.asset = "llm-prod";
  job.check = "scan";
  job.state = std::move(state);
  job.worker = "worker-1";
  job.finished_at = std::move(finished_at);
  return job;
}

std::vector<std::int64_t> ids_of(const std::vector<RunRecord>& runs) {
  std::vector<std::int64_t> ids;
  for (const auto& run : runs) ids.push_back(run.id);
  return ids;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs SQL on the file directly, as another tool (or a newer Aegis) would.
void run_sql(const fs::path& file, const char* sql) {
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(file.c_str(), &db), SQLITE_OK);
  char* error = nullptr;
  const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &error);
  const std::string why = error ? error : "";
  sqlite3_free(error);
  sqlite3_close(db);
  ASSERT_EQ(rc, SQLITE_OK) << why;
}

// The first column of the first row, as text; "(none)" without a row.
std::string sql_value(const fs::path& file, const char* sql) {
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(file.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
    sqlite3_close(db);
    return "(cannot open)";
  }
  sqlite3_stmt* stmt = nullptr;
  std::string value = "(none)";
  if (sqlite3_prepare_v2(db, sql, -1, &stmt, nullptr) == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW) {
    const unsigned char* text = sqlite3_column_text(stmt, 0);
    value = text ? reinterpret_cast<const char*>(text) : "(null)";
  }
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  return value;
}

// Expects `action` to throw core::Error whose message contains every one of `parts` and none of
// `never` (in the message or the hint).
template <typename Action>
void expect_error(Action action, std::initializer_list<std::string> parts, std::initializer_list<std::string> never = {}) {
  try {
    action();
    ADD_FAILURE() << "no core::Error thrown";
  } catch (const core::Error& error) {
    const std::string what = error.what();
    for (const auto& part : parts) EXPECT_NE(what.find(part), std::string::npos) << "'" << part << "' not in: " << what;
    for (const auto& secret : never) {
      EXPECT_EQ(what.find(secret), std::string::npos) << "'" << secret << "' shown in: " << what;
      EXPECT_EQ(error.hint().find(secret), std::string::npos) << "'" << secret << "' shown in: " << error.hint();
    }
    EXPECT_FALSE(error.hint().empty()) << what;
  }
}

// Waits for forked children; each must exit 0.
void expect_children_succeed(const std::vector<pid_t>& children) {
  for (pid_t child : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a child failed: status " << status;
  }
}

// The PostgreSQL server of one test suite: started by the first test that needs it, stopped when
// the suite ends (TearDownTestSuite), so that a suite pays for one initdb.
class SuiteServer {
 public:
  // The password of the one role that the test cluster checks passwords for (see postgres_server.h).
  static constexpr const char* kPasswordUser = "aegis_password_user";
  static constexpr const char* kPassword = "Right-Horse-Battery-7";
  // A role that may log in but not create tables.
  static constexpr const char* kReader = "aegis_reader";

  // The server, or null with why() saying why not (a missing installation included).
  PostgresServerProcess* ensure() {
    if (!tried_) {
      tried_ = true;
      server_ = std::make_unique<PostgresServerProcess>();
      if (!server_->start()) {
        why_ = server_->why();
        server_.reset();
      } else {
        try {
          server_->execute(std::string("CREATE ROLE ") + kPasswordUser + " LOGIN PASSWORD '" + kPassword + "'");
          server_->execute(std::string("CREATE ROLE ") + kReader + " LOGIN");
        } catch (const std::exception& error) {
          why_ = std::string("cannot create the test roles: ") + error.what();
          server_.reset();
        }
      }
    }
    return server_.get();
  }
  const std::string& why() const { return why_; }
  void stop() {
    server_.reset();
    tried_ = false;
    why_.clear();
  }

 private:
  std::unique_ptr<PostgresServerProcess> server_;
  bool tried_ = false;
  std::string why_;
};

enum class Backend { Sqlite, Postgres };

// How test names and failures show the parameter.
void PrintTo(Backend backend, std::ostream* out) { *out << (backend == Backend::Sqlite ? "SQLite" : "PostgreSQL"); }

// Each test gets a store of its own: a file in a fresh folder, or a fresh database.
class FindingStoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  static void TearDownTestSuite() { postgres_.stop(); }

  void SetUp() override {
    if (GetParam() == Backend::Sqlite) {
      temp_ = std::make_unique<TempDir>("aegis_findings");
      location_ = (temp_->path / "store" / "aegis.db").string();  // the folder is created too
    } else {
      server_ = postgres_.ensure();
      ASSERT_NE(server_, nullptr) << "the PostgreSQL backend is tested on a real server: " << postgres_.why();
      location_ = server_->create_database();
      database_ = location_.substr(location_.rfind('/') + 1);
    }
  }

  const std::string& location() const { return location_; }
  bool on_postgres() const { return GetParam() == Backend::Postgres; }

  // Runs SQL on the store's database directly, as another tool (or a newer Aegis) would.
  void sql(const std::string& statement) {
    if (on_postgres()) server_->execute(statement, database_);
    else run_sql(location_, statement.c_str());
  }
  std::string value(const std::string& query) {
    return on_postgres() ? server_->query(query, database_) : sql_value(location_, query.c_str());
  }
  std::string schema_version() { return value("SELECT version FROM aegis_schema WHERE component = 'findings'"); }
  // Whether the store's database holds no table at all.
  bool untouched() {
    if (on_postgres()) return value("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0";
    return !fs::exists(location_);
  }

  static SuiteServer postgres_;
  PostgresServerProcess* server_ = nullptr;
  std::unique_ptr<TempDir> temp_;
  std::string location_;
  std::string database_;
};

SuiteServer FindingStoreTest::postgres_;

std::string backend_name(const ::testing::TestParamInfo<Backend>& info) {
  return info.param == Backend::Sqlite ? "SQLite" : "PostgreSQL";
}

INSTANTIATE_TEST_SUITE_P(, FindingStoreTest, ::testing::Values(Backend::Sqlite, Backend::Postgres), backend_name);

TEST_P(FindingStoreTest, RoundTripsEveryFieldIncludingOptionalAndUnicode) {
  Finding full;
  full.rule_id = "INFRA-K8S-PRIVILEGED";
  full.severity = Severity::Critical;
  full.title = "Pod läuft privilegiert — 特权容器";
  full.location.file = "deploy/k8s/serving.yaml";
  full.location.member = "chart.tgz!templates/deployment.yaml";
  full.location.offset = std::numeric_limits<std::uint64_t>::max();  // above INT64_MAX
  full.location.row = 7;
  full.location.line = 0;
  full.location.column = "spec.containers[0].securityContext.privileged";
  full.evidence = "privileged: true  # 🔑 ключ\n\tsecond line";
  full.atlas = {"AML.T0049", "AML.T0010"};
  full.nist_ai_rmf = {"MANAGE 2.4", "MEASURE 2.7"};
  full.remediation = "Set privileged: false.";
  full.properties_json = R"({"cve":"CVE-2023-48022","score":9.8})";

  Finding bare;  // every optional left out
  bare.rule_id = "INFRA-X";
  bare.severity = Severity::Info;

  Finding medium = make_finding("INFRA-Y", Severity::Medium, "Dockerfile", 3, "USER root");
  Finding medium2 = make_finding("INFRA-Y", Severity::Medium, "Dockerfile", 9, "USER root");

  RunRecord run = make_run("audit-infra", "модель-serving", "2025-06-01T14:00:00.250+02:00");
  run.finished_at = "2025-06-01T12:00:03Z";
  run.inputs = {"deploy/", "127.0.0.1:8888", std::string("bytes-\xff\xfe-not-utf8"), "путь/к/файлу"};
  run.exit_code = 1;
  run.summary_json = R"({"targets":2,"probes":14})";
  run.counts = {9, 9, 9, 9, 9};  // ignored: the store counts

  std::int64_t id = 0;
  {
    FindingStore store(location());
    id = store.record_run(run, {full, bare, medium, medium2});
    EXPECT_GT(id, 0);
  }
  FindingStore store(location());  // read back through a fresh connection
  auto loaded = store.run(id);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->id, id);
  EXPECT_EQ(loaded->command, run.command);
  EXPECT_EQ(loaded->asset, run.asset);
  EXPECT_EQ(loaded->inputs, run.inputs);
  EXPECT_EQ(loaded->started_at, run.started_at);
  EXPECT_EQ(loaded->finished_at, run.finished_at);
  EXPECT_EQ(loaded->aegis_version, run.aegis_version);
  EXPECT_EQ(loaded->exit_code, 1);
  EXPECT_EQ(loaded->summary_json, run.summary_json);
  EXPECT_EQ(loaded->counts, (std::array<std::size_t, 5>{1, 0, 2, 0, 1}));

  auto findings = store.findings(id);
  ASSERT_EQ(findings.size(), 4u);
  const std::vector<Finding> expected = {full, bare, medium, medium2};
  for (std::size_t i = 0; i < expected.size(); ++i) {
    const Finding& want = expected[i];
    const StoredFinding& got = findings[i];
    SCOPED_TRACE(want.rule_id + " #" + std::to_string(i));
    EXPECT_EQ(got.run_id, id);
    EXPECT_GT(got.id, 0);
    EXPECT_EQ(got.status, "open");
    EXPECT_EQ(got.fingerprint, store::finding_fingerprint(want));
    EXPECT_EQ(got.finding.rule_id, want.rule_id);
    EXPECT_EQ(got.finding.severity, want.severity);
    EXPECT_EQ(got.finding.title, want.title);
    EXPECT_EQ(got.finding.location.file, want.location.file);
    EXPECT_EQ(got.finding.location.member, want.location.member);
    EXPECT_EQ(got.finding.location.offset, want.location.offset);
    EXPECT_EQ(got.finding.location.row, want.location.row);
    EXPECT_EQ(got.finding.location.line, want.location.line);
    EXPECT_EQ(got.finding.location.column, want.location.column);
    EXPECT_EQ(got.finding.evidence, want.evidence);
    EXPECT_EQ(got.finding.atlas, want.atlas);
    EXPECT_EQ(got.finding.nist_ai_rmf, want.nist_ai_rmf);
    EXPECT_EQ(got.finding.remediation, want.remediation);
    EXPECT_EQ(got.finding.properties_json, want.properties_json);
  }
  // The same finding at two lines is two findings.
  EXPECT_NE(findings[2].fingerprint, findings[3].fingerprint);
  EXPECT_TRUE(store.findings(id + 1000).empty());
  EXPECT_FALSE(store.run(id + 1000).has_value());
}

// Bytes from a hostile artifact (NUL, invalid UTF-8, tabs and backslashes that a bulk loader could
// take for its own syntax) come back exactly, in every text field and in the filters.
TEST_P(FindingStoreTest, KeepsNulBytesInvalidUtf8AndControlCharactersInEveryTextField) {
  const std::string nasty = std::string("a\0b\xff\xfe\tc\\N\\\\x41\r\n'\";--", 20);
  Finding finding;
  finding.rule_id = "PICKLE-" + nasty;
  finding.severity = Severity::High;
  finding.title = nasty;
  finding.location.file = nasty;
  finding.location.member = nasty;
  finding.location.column = nasty;
  finding.evidence = nasty + nasty;
  finding.atlas = {nasty};
  finding.remediation = nasty;
  finding.properties_json = nasty;
  RunRecord run = make_run(nasty, nasty, "2025-06-01T00:00:00Z");
  run.inputs = {nasty, ""};
  run.aegis_version = nasty;
  run.summary_json = nasty;
  FindingStore store(location());
  const auto id = store.record_run(run, {finding});
  auto loaded = store.latest_run(nasty, nasty);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->id, id);
  EXPECT_EQ(loaded->command, nasty);
  EXPECT_EQ(loaded->asset, nasty);
  EXPECT_EQ(loaded->inputs, run.inputs);
  EXPECT_EQ(loaded->aegis_version, nasty);
  EXPECT_EQ(loaded->summary_json, nasty);
  auto findings = store.findings(id);
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].finding.rule_id, finding.rule_id);
  EXPECT_EQ(findings[0].finding.title, nasty);
  EXPECT_EQ(findings[0].finding.location.file, nasty);
  EXPECT_EQ(findings[0].finding.location.member, nasty);
  EXPECT_EQ(findings[0].finding.location.column, nasty);
  EXPECT_EQ(findings[0].finding.evidence, nasty + nasty);
  EXPECT_EQ(findings[0].finding.remediation, nasty);
  EXPECT_EQ(findings[0].finding.properties_json, nasty);
  EXPECT_EQ(findings[0].fingerprint, store::finding_fingerprint(finding));
  EXPECT_FALSE(store.latest_run(nasty, "a").has_value());  // a prefix up to the NUL is another asset
}

TEST_P(FindingStoreTest, FillsMissingTimesAndRejectsBadRunsWithoutStoringThem) {
  FindingStore store(location());
  RunRecord run;
  run.command = "scan";
  const std::int64_t id = store.record_run(run, {});
  auto loaded = store.run(id);
  ASSERT_TRUE(loaded.has_value());
  // An RFC 3339 UTC time was written for both.
  for (const std::string& time : {loaded->started_at, loaded->finished_at}) {
    ASSERT_GE(time.size(), 20u) << time;
    EXPECT_EQ(time[4], '-');
    EXPECT_EQ(time[10], 'T');
    EXPECT_EQ(time.back(), 'Z');
  }

  RunRecord no_command = make_run("", "a", "2025-06-01T12:00:00Z");
  expect_error([&] { store.record_run(no_command, {}); }, {"command"});
  for (const char* bad : {"2025-06-01 12:00", "yesterday", "2025-02-30T12:00:00Z", "2025-06-01T12:00:00", "2025-06-01T25:00:00Z",
                          "2025-06-01T12:00:00Z trailing"}) {
    RunRecord bad_time = make_run("scan", "a", bad);
    expect_error([&] { store.record_run(bad_time, {make_finding("R", Severity::High, "f", 1, "e")}); }, {bad, "RFC 3339"});
  }
  Finding broken = make_finding("R", Severity::High, "f", 1, "e");
  broken.severity = static_cast<Severity>(9);
  expect_error([&] { store.record_run(make_run("scan", "a", "2025-06-01T12:00:00Z"), {broken}); }, {"severity"});

  auto runs = store.runs();
  EXPECT_EQ(ids_of(runs), std::vector<std::int64_t>{id});
}

TEST_P(FindingStoreTest, ListsRunsNewestFirstByInstantAndFilters) {
  FindingStore store(location());
  // Recorded out of order, with precisions and offsets whose text does not sort as their instants.
  const auto a = store.record_run(make_run("scan", "model-a", "2025-06-01T12:00:00Z"), {});
  const auto b = store.record_run(make_run("scan", "model-a", "2025-06-01T12:00:00.500Z"), {});  // 0.5 s after a
  const auto c = store.record_run(make_run("audit-infra", "cluster", "2025-06-01T13:30:00+02:00"), {});  // 11:30 UTC
  const auto d = store.record_run(make_run("audit-infra", "model-a", "2025-06-02T00:00:00Z"), {});
  const auto e = store.record_run(make_run("scan", "", "2025-05-31T23:00:00-03:00"), {});  // 02:00 UTC on 06-01
  const auto f = store.record_run(make_run("scan", "model-a", "2025-06-01T12:00:00.500Z"), {});  // same instant as b

  EXPECT_EQ(ids_of(store.runs()), (std::vector<std::int64_t>{d, f, b, a, c, e}));

  RunFilter by_asset;
  by_asset.asset = "model-a";
  EXPECT_EQ(ids_of(store.runs(by_asset)), (std::vector<std::int64_t>{d, f, b, a}));

  RunFilter by_command;
  by_command.command = "audit-infra";
  EXPECT_EQ(ids_of(store.runs(by_command)), (std::vector<std::int64_t>{d, c}));

  RunFilter both;
  both.command = "scan";
  both.asset = "model-a";
  EXPECT_EQ(ids_of(store.runs(both)), (std::vector<std::int64_t>{f, b, a}));

  RunFilter no_asset;
  no_asset.asset = "";
  EXPECT_EQ(ids_of(store.runs(no_asset)), (std::vector<std::int64_t>{e}));

  RunFilter limited;
  limited.limit = 2;
  EXPECT_EQ(ids_of(store.runs(limited)), (std::vector<std::int64_t>{d, f}));

  RunFilter nothing;
  nothing.command = "redteam";
  EXPECT_TRUE(store.runs(nothing).empty());
}

TEST_P(FindingStoreTest, LatestRunPerAssetAndItsFindings) {
  FindingStore store(location());
  const Finding old_finding = make_finding("INFRA-OLD", Severity::High, "a.yaml", 1, "old");
  const Finding new_finding = make_finding("INFRA-NEW", Severity::Low, "a.yaml", 2, "new");
  // Recorded newest first, so that insertion order cannot pass for time order.
  const auto a_new = store.record_run(make_run("audit-infra", "asset-a", "2025-06-03T00:00:00Z"), {new_finding});
  const auto a_old = store.record_run(make_run("audit-infra", "asset-a", "2025-06-01T00:00:00Z"), {old_finding});
  const auto b_only = store.record_run(make_run("audit-infra", "asset-b", "2025-06-02T00:00:00Z"), {old_finding});
  const auto a_scan = store.record_run(make_run("scan", "asset-a", "2025-06-04T00:00:00Z"), {});
  ASSERT_GT(a_old, a_new);

  RunFilter latest_audit;
  latest_audit.command = "audit-infra";
  latest_audit.latest_per_asset = true;
  EXPECT_EQ(ids_of(store.runs(latest_audit)), (std::vector<std::int64_t>{a_new, b_only}));

  RunFilter latest_all;  // newest per (asset, command)
  latest_all.latest_per_asset = true;
  EXPECT_EQ(ids_of(store.runs(latest_all)), (std::vector<std::int64_t>{a_scan, a_new, b_only}));

  auto latest = store.latest_run("audit-infra", "asset-a");
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->id, a_new);
  EXPECT_FALSE(store.latest_run("audit-infra", "asset-c").has_value());

  auto findings = store.latest_findings("audit-infra", "asset-a");
  ASSERT_EQ(findings.size(), 1u);
  EXPECT_EQ(findings[0].finding.rule_id, "INFRA-NEW");
  EXPECT_EQ(findings[0].run_id, a_new);
  EXPECT_TRUE(store.latest_findings("scan", "asset-a").empty());
  EXPECT_TRUE(store.latest_findings("audit-infra", "nobody").empty());
}

TEST(FindingStoreFingerprint, IsStableAcrossRewordingAndFollowsTheLocation) {
  Finding base = make_finding("INFRA-JUPYTER-001", Severity::High, "deploy/compose.yaml", 12,
                              "  jupyter   lab\n--NotebookApp.token=''  ");
  base.location.column = "services.jupyter.command";
  const std::string fingerprint = store::finding_fingerprint(base);
  ASSERT_EQ(fingerprint.size(), 32u);
  EXPECT_TRUE(std::all_of(fingerprint.begin(), fingerprint.end(),
                          [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }));
  // Pinned so that an upgrade cannot silently turn every stored finding into a "new" one. Computed
  // with Python's hashlib over the encoding documented in store_backend.cpp:
  //   sha256(b"aegis.finding.v1" b"17:INFRA-JUPYTER-001," b"19:deploy/compose.yaml," b"0:," b"~," b"~,"
  //          b"2:12," b"24:services.jupyter.command," b"34:jupyter lab --NotebookApp.token='',")[:32]
  EXPECT_EQ(fingerprint, "91fbeb36a720603c94d4d4d428562940");

  // Wording, severity, references and whitespace do not change the identity.
  Finding reworded = base;
  reworded.title = "Jupyter without a token";
  reworded.severity = Severity::Critical;
  reworded.atlas = {"AML.T0010"};
  reworded.nist_ai_rmf = {"MANAGE 2.4"};
  reworded.remediation = "set a token";
  reworded.properties_json = R"({"port":8888})";
  reworded.evidence = "jupyter lab --NotebookApp.token=''";
  EXPECT_EQ(store::finding_fingerprint(reworded), fingerprint);

  // Where it is, and what it shows, do.
  std::vector<Finding> moved(9, base);
  moved[0].rule_id = "INFRA-JUPYTER-002";
  moved[1].location.file = "deploy/compose.prod.yaml";
  moved[2].location.member = "bundle.tar!compose.yaml";
  moved[3].location.offset = 0;
  moved[4].location.row = 12;  // same number, another field
  moved[5].location.line = 13;
  moved[6].location.line.reset();
  moved[7].location.column = "services.jupyter.entrypoint";
  moved[8].evidence = "jupyter lab --NotebookApp.token='x'";
  std::set<std::string> distinct = {fingerprint};
  for (const auto& finding : moved) distinct.insert(store::finding_fingerprint(finding));
  EXPECT_EQ(distinct.size(), moved.size() + 1);
}

TEST_P(FindingStoreTest, StoresTheSameFingerprintInEveryRun) {
  Finding base = make_finding("INFRA-JUPYTER-001", Severity::High, "deploy/compose.yaml", 12, "jupyter lab");
  Finding reworded = base;
  reworded.title = "reworded";
  reworded.evidence = "  jupyter\tlab ";
  Finding elsewhere = base;
  elsewhere.location.line = 13;
  std::int64_t first = 0, second = 0;
  {
    FindingStore store(location());
    first = store.record_run(make_run("audit-infra", "a", "2025-06-01T00:00:00Z"), {base, elsewhere});
  }
  FindingStore store(location());
  second = store.record_run(make_run("audit-infra", "a", "2025-06-02T00:00:00Z"), {reworded, elsewhere});
  auto one = store.findings(first), two = store.findings(second);
  ASSERT_EQ(one.size(), 2u);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(one[0].fingerprint, store::finding_fingerprint(base));
  EXPECT_EQ(two[0].fingerprint, one[0].fingerprint);
  EXPECT_EQ(one[1].fingerprint, two[1].fingerprint);
  EXPECT_NE(one[0].fingerprint, one[1].fingerprint);
}

TEST_P(FindingStoreTest, DiffRunsSaysAddedPersistingAndFixed) {
  FindingStore store(location());
  const Finding root_user = make_finding("INFRA-DOCKER-ROOT", Severity::Medium, "Dockerfile", 1, "USER root");
  const Finding secret = make_finding("INFRA-DOCKER-SECRET", Severity::High, "Dockerfile", 4, "ENV HF_TOKEN=hf_xxx");
  const Finding port = make_finding("INFRA-DOCKER-PORT", Severity::Low, "Dockerfile", 9, "EXPOSE 8265");
  Finding port_reworded = port;
  port_reworded.title = "Ray dashboard port exposed";
  port_reworded.evidence = "EXPOSE   8265\n";
  const Finding hostpath = make_finding("INFRA-K8S-HOSTPATH", Severity::High, "k8s.yaml", 20, "hostPath: /");

  const auto before = store.record_run(make_run("audit-infra", "a", "2025-06-01T00:00:00Z"), {root_user, secret, port, port});
  const auto after = store.record_run(make_run("audit-infra", "a", "2025-06-08T00:00:00Z"), {root_user, port_reworded, hostpath});

  auto sorted = [](std::vector<std::string> v) {
    std::sort(v.begin(), v.end());
    return v;
  };
  const auto diff = store.diff_runs(before, after);
  EXPECT_EQ(diff.added, std::vector<std::string>{store::finding_fingerprint(hostpath)});
  EXPECT_EQ(diff.persisting, sorted({store::finding_fingerprint(root_user), store::finding_fingerprint(port)}));
  EXPECT_EQ(diff.fixed, std::vector<std::string>{store::finding_fingerprint(secret)});

  // Backwards, the roles swap.
  const auto back = store.diff_runs(after, before);
  EXPECT_EQ(back.added, diff.fixed);
  EXPECT_EQ(back.fixed, diff.added);
  EXPECT_EQ(back.persisting, diff.persisting);

  // An empty run fixes everything.
  const auto clean = store.record_run(make_run("audit-infra", "a", "2025-06-09T00:00:00Z"), {});
  const auto all_fixed = store.diff_runs(after, clean);
  EXPECT_TRUE(all_fixed.added.empty());
  EXPECT_TRUE(all_fixed.persisting.empty());
  EXPECT_EQ(all_fixed.fixed.size(), 3u);
  EXPECT_TRUE(std::is_sorted(all_fixed.fixed.begin(), all_fixed.fixed.end()));

  expect_error([&] { (void)store.diff_runs(before, after + 100); }, {std::to_string(after + 100)});
}

TEST_P(FindingStoreTest, StatusIsTriagedAndKept) {
  std::int64_t finding_id = 0, run_id = 0;
  {
    FindingStore store(location());
    run_id = store.record_run(make_run("scan", "a", "2025-06-01T00:00:00Z"),
                              {make_finding("R1", Severity::High, "m.pt", 1, "GLOBAL os system"),
                               make_finding("R2", Severity::Low, "m.pt", 2, "x")});
    finding_id = store.findings(run_id).at(0).id;
    store.set_status(finding_id, store::kStatusFalsePositive);
    expect_error([&] { store.set_status(finding_id, "ignored"); }, {"ignored"});
    expect_error([&] { store.set_status(finding_id + 100, store::kStatusOpen); }, {std::to_string(finding_id + 100)});
  }
  FindingStore store(location());
  auto findings = store.findings(run_id);
  ASSERT_EQ(findings.size(), 2u);
  EXPECT_EQ(findings[0].status, "false-positive");
  EXPECT_EQ(findings[1].status, "open");
}

TEST_P(FindingStoreTest, TwoStoreObjectsOnOneStoreWriteAlternately) {
  FindingStore first(location()), second(location());
  std::vector<std::int64_t> ids;
  for (int i = 0; i < 10; ++i) {
    FindingStore& writer = i % 2 ? second : first;
    const std::string day = "2025-06-" + std::string(i < 9 ? "0" : "") + std::to_string(i + 1) + "T00:00:00Z";
    std::vector<Finding> findings;
    for (int n = 0; n <= i; ++n) findings.push_back(make_finding("R", Severity::Medium, "f" + std::to_string(n), 1, "e"));
    ids.push_back(writer.record_run(make_run("scan", "shared", day), findings));
    // Each object sees what the other wrote, at once.
    FindingStore& reader = i % 2 ? first : second;
    auto latest = reader.latest_run("scan", "shared");
    ASSERT_TRUE(latest.has_value());
    EXPECT_EQ(latest->id, ids.back());
    EXPECT_EQ(reader.findings(ids.back()).size(), static_cast<std::size_t>(i + 1));
  }
  EXPECT_EQ(std::set<std::int64_t>(ids.begin(), ids.end()).size(), ids.size());
  std::vector<std::int64_t> newest_first(ids.rbegin(), ids.rend());
  EXPECT_EQ(ids_of(first.runs()), newest_first);
  EXPECT_EQ(ids_of(second.runs()), newest_first);
}

TEST_P(FindingStoreTest, SeveralProcessesWriteOneStoreAtOnce) {
  { FindingStore create(location()); }
  constexpr int kProcesses = 3, kRuns = 15, kFindings = 400;
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // Never returns into the test framework.
      int status = 0;
      try {
        FindingStore store(location());
        for (int r = 0; r < kRuns; ++r) {
          std::vector<Finding> findings;
          for (int n = 0; n < kFindings; ++n)
            findings.push_back(make_finding("R" + std::to_string(n % 7), static_cast<Severity>(n % 5),
                                            "p" + std::to_string(p), static_cast<std::uint64_t>(n), "e"));
          store.record_run(make_run("scan", "proc-" + std::to_string(p), "2025-06-01T00:00:00Z"), findings);
        }
      } catch (...) {
        status = 3;
      }
      ::_exit(status);
    }
    children.push_back(child);
  }
  expect_children_succeed(children);
  FindingStore store(location());
  RunFilter all;
  all.limit = 0;
  auto runs = store.runs(all);
  ASSERT_EQ(runs.size(), static_cast<std::size_t>(kProcesses * kRuns));
  for (const auto& run : runs) {
    EXPECT_EQ(run.counts, (std::array<std::size_t, 5>{80, 80, 80, 80, 80}));
    EXPECT_EQ(store.findings(run.id).size(), static_cast<std::size_t>(kFindings));
  }
}

TEST_P(FindingStoreTest, AWriterKilledMidRunLeavesWholeRunsOnly) {
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    try {
      FindingStore store(location());
      std::vector<Finding> findings;
      for (int n = 0; n < 200'000; ++n)
        findings.push_back(make_finding("R", Severity::High, "big.yaml", static_cast<std::uint64_t>(n), "evidence"));
      store.record_run(make_run("scan", "killed", "2025-06-01T00:00:00Z"), {findings.front()});
      const char byte = 1;
      if (::write(ready[1], &byte, 1) != 1) ::_exit(4);
      for (;;) store.record_run(make_run("scan", "killed", "2025-06-02T00:00:00Z"), findings);
    } catch (...) {
    }
    ::_exit(3);
  }
  ::close(ready[1]);
  char byte = 0;
  ASSERT_EQ(::read(ready[0], &byte, 1), 1);
  ::close(ready[0]);
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // into the large transaction, most likely
  ::kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);

  FindingStore store(location());
  RunFilter all;
  all.limit = 0;
  auto runs = store.runs(all);
  ASSERT_FALSE(runs.empty());
  for (const auto& run : runs) {
    std::size_t stored = 0;
    store.for_each_finding(run.id, [&stored](const StoredFinding&) { ++stored; });
    EXPECT_EQ(stored, run.counts[static_cast<int>(Severity::High)]) << "run " << run.id;
    EXPECT_TRUE(stored == 1 || stored == 200'000) << "run " << run.id << " holds " << stored;
  }
  // The store takes new runs after the crash.
  EXPECT_GT(store.record_run(make_run("scan", "after", "2025-06-03T00:00:00Z"), {}), 0);
}

TEST_P(FindingStoreTest, RefusesAStoreWrittenByANewerSchema) {
  std::int64_t run_id = 0;
  {
    FindingStore store(location());
    run_id = store.record_run(make_run("scan", "a", "2025-06-01T00:00:00Z"), {});
  }
  const std::string newer = std::to_string(store::kFindingSchemaVersion + 1);
  sql("UPDATE aegis_schema SET version = " + newer + " WHERE component = 'findings'");
  expect_error([&] { FindingStore store(location()); }, {location(), "newer", newer});
  FindingStoreOptions read_only;
  read_only.read_only = true;
  expect_error([&] { FindingStore store(location(), read_only); }, {location(), "newer"});
  // Not rewritten: the run is still there for the newer Aegis.
  EXPECT_EQ(schema_version(), newer);
  sql("UPDATE aegis_schema SET version = " + std::to_string(store::kFindingSchemaVersion) + " WHERE component = 'findings'");
  FindingStore store(location());
  EXPECT_TRUE(store.run(run_id).has_value());
}

TEST_P(FindingStoreTest, OpensReadOnlyWithoutWriting) {
  FindingStoreOptions read_only;
  read_only.read_only = true;
  expect_error([&] { FindingStore store(location(), read_only); }, {location()});
  EXPECT_TRUE(untouched());

  std::int64_t run_id = 0;
  {
    FindingStore store(location());
    run_id = store.record_run(make_run("scan", "a", "2025-06-01T00:00:00Z"), {make_finding("R", Severity::Low, "f", 1, "e")});
  }
  FindingStore store(location(), read_only);
  EXPECT_EQ(store.findings(run_id).size(), 1u);
  expect_error([&] { store.record_run(make_run("scan", "a", "2025-06-02T00:00:00Z"), {}); }, {"read-only"});
  expect_error([&] { store.set_status(store.findings(run_id)[0].id, store::kStatusFixed); }, {"read-only"});
  expect_error([&] { store.begin_assessment({}); }, {"read-only"});
  expect_error([&] { store.update_assessment(1, store::kAssessmentFinished, "{}", ""); }, {"read-only"});
  expect_error([&] { store.record_job(make_job(1, "k", "failed", ""), {}, {}); }, {"read-only"});
  EXPECT_EQ(store.findings(run_id)[0].status, "open");
}

// The bound the store promises: a large run is one transaction, written from a producer that holds
// one finding at a time, and read back one at a time. (200,000 here to keep the suite quick under
// AddressSanitizer; a million works the same way, only slower.)
TEST_P(FindingStoreTest, RecordsAndStreamsALargeRunInOneTransaction) {
  FindingStore store(location());
  constexpr std::uint64_t kCount = 200'000;
  Finding finding;
  finding.rule_id = "PII-EMAIL";
  finding.location.file = "data/users.csv";
  finding.location.column = "email";
  finding.evidence = "j***@example.com";
  std::uint64_t produced = 0;
  const auto id = store.record_run_streamed(make_run("pii", "dataset", "2025-06-01T00:00:00Z"), [&]() -> const Finding* {
    if (produced == kCount) return nullptr;
    finding.severity = static_cast<Severity>(produced % 5);
    finding.location.row = ++produced;
    return &finding;
  });
  auto run = store.run(id);
  ASSERT_TRUE(run.has_value());
  constexpr std::size_t kPerSeverity = kCount / 5;  // the producer cycles through the five severities
  EXPECT_EQ(run->counts, (std::array<std::size_t, 5>{kPerSeverity, kPerSeverity, kPerSeverity, kPerSeverity, kPerSeverity}));
  std::uint64_t seen = 0;
  bool in_order = true;
  store.for_each_finding(id, [&](const StoredFinding& stored) {
    ++seen;
    in_order = in_order && stored.finding.location.row == seen && stored.finding.severity == static_cast<Severity>((seen - 1) % 5);
  });
  EXPECT_EQ(seen, kCount);
  EXPECT_TRUE(in_order);
  const auto same = store.diff_runs(id, id);
  EXPECT_EQ(same.persisting.size(), kCount);
  EXPECT_TRUE(same.added.empty());
  EXPECT_TRUE(same.fixed.empty());
}

TEST_P(FindingStoreTest, AFailingProducerStoresNothingOfItsRun) {
  FindingStore store(location());
  const Finding good = make_finding("R", Severity::High, "f", 1, "e");
  Finding bad = good;
  bad.severity = static_cast<Severity>(-1);
  int calls = 0;
  expect_error(
      [&] {
        store.record_run_streamed(make_run("scan", "a", "2025-06-01T00:00:00Z"), [&]() -> const Finding* {
          ++calls;
          return calls < 500 ? &good : &bad;
        });
      },
      {"severity"});
  EXPECT_THROW(store.record_run_streamed(make_run("scan", "a", "2025-06-01T00:00:00Z"),
                                         [&]() -> const Finding* { throw std::runtime_error("producer failed"); }),
               std::runtime_error);
  EXPECT_TRUE(store.runs().empty());
  // And the store goes on: the next run is written whole.
  const auto id = store.record_run(make_run("scan", "a", "2025-06-02T00:00:00Z"), {good, good});
  EXPECT_EQ(store.findings(id).size(), 2u);
  EXPECT_EQ(ids_of(store.runs()), std::vector<std::int64_t>{id});
}

// A visitor that throws leaves the store usable (the read is closed behind it).
TEST_P(FindingStoreTest, AVisitorThatThrowsLeavesTheStoreUsable) {
  FindingStore store(location());
  std::vector<Finding> findings(5000, make_finding("R", Severity::Low, "f", 1, "e"));
  const auto id = store.record_run(make_run("scan", "a", "2025-06-01T00:00:00Z"), findings);
  int seen = 0;
  EXPECT_THROW(store.for_each_finding(id,
                                      [&](const StoredFinding&) {
                                        if (++seen == 2500) throw std::runtime_error("enough");
                                      }),
               std::runtime_error);
  EXPECT_EQ(store.findings(id).size(), 5000u);
  EXPECT_GT(store.record_run(make_run("scan", "a", "2025-06-02T00:00:00Z"), {}), id);
}

// ---------------------------------------------------------------------------------------------
// Migrations

TEST_P(FindingStoreTest, AFreshStoreReachesTheLatestSchemaVersion) {
  FindingStore store(location());
  EXPECT_EQ(schema_version(), std::to_string(store::kFindingSchemaVersion));
  EXPECT_TRUE(store.assessments().empty());
}

// A store from before assessments existed (schema 1: runs and findings only) is read as it is when
// opened read-only, and migrated, keeping its runs, when opened for writing.
TEST_P(FindingStoreTest, UpgradesAVersionOneStoreAndKeepsItsRuns) {
  std::int64_t run_id = 0;
  {
    FindingStore store(location());
    run_id = store.record_run(make_run("scan", "a", "2025-06-01T00:00:00Z"), {make_finding("R", Severity::High, "f", 1, "e")});
  }
  // What Aegis before schema 2 left behind: migration 2's tables were not there.
  sql("DROP TABLE assessment_job");
  sql("DROP TABLE assessment");
  if (on_postgres()) sql("DROP SEQUENCE assessment_job_order");
  sql("UPDATE aegis_schema SET version = 1 WHERE component = 'findings'");

  FindingStoreOptions read_only;
  read_only.read_only = true;
  {
    FindingStore store(location(), read_only);
    EXPECT_EQ(store.findings(run_id).size(), 1u);
    EXPECT_TRUE(store.assessments().empty());
    EXPECT_FALSE(store.assessment(1).has_value());
    EXPECT_TRUE(store.jobs(1).empty());
    EXPECT_FALSE(store.latest_done_job("k").has_value());
  }
  EXPECT_EQ(schema_version(), "1");  // read-only opens never migrate

  FindingStore store(location());
  EXPECT_EQ(schema_version(), std::to_string(store::kFindingSchemaVersion));
  EXPECT_EQ(store.findings(run_id).size(), 1u);
  const auto assessment = store.begin_assessment({});
  const auto [job_run, created] =
      store.record_job(make_job(assessment, "k", "done", ""), make_run("scan", "a", ""), {make_finding("R", Severity::Low, "f", 2, "e")});
  EXPECT_TRUE(created);
  EXPECT_GT(job_run, run_id);
}

// Several processes open the same fresh store at once: one creates the tables, the others wait for
// it and find them (without the lock, PostgreSQL's concurrent CREATE TABLE fails in all but one).
TEST_P(FindingStoreTest, ConcurrentOpenersOfAFreshStoreMigrateItOnce) {
  constexpr int kProcesses = 5;
  if (!on_postgres()) fs::create_directories(fs::path(location()).parent_path());
  int go[2];
  ASSERT_EQ(::pipe(go), 0);
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(go[1]);
      char byte = 0;
      const bool released = ::read(go[0], &byte, 1) == 0;  // EOF: the parent let everyone go
      int status = released ? 0 : 4;
      try {
        FindingStore store(location());
        store.record_run(make_run("scan", "opener-" + std::to_string(p), "2025-06-01T00:00:00Z"), {});
      } catch (const std::exception& error) {
        std::fprintf(stderr, "opener %d: %s\n", p, error.what());
        status = 3;
      }
      ::_exit(status);
    }
    children.push_back(child);
  }
  ::close(go[0]);
  ::close(go[1]);
  expect_children_succeed(children);
  EXPECT_EQ(schema_version(), std::to_string(store::kFindingSchemaVersion));
  FindingStore store(location());
  EXPECT_EQ(store.runs().size(), static_cast<std::size_t>(kProcesses));
}

// ---------------------------------------------------------------------------------------------
// Assessments and jobs

// What the store writes for "now": RFC 3339 in UTC.
bool looks_like_utc_now(const std::string& time) {
  return time.size() >= 20 && time[4] == '-' && time[10] == 'T' && time.back() == 'Z';
}

TEST_P(FindingStoreTest, AssessmentsRoundTripNewestFirst) {
  FindingStore store(location());
  AssessmentRecord first;
  first.inventory = "inventories/прод.yaml";
  first.started_at = "2025-06-01T12:00:00+02:00";  // 10:00 UTC
  AssessmentRecord second;
  second.inventory = std::string("inv-\xff.yaml");
  second.started_at = "2025-06-01T11:00:00Z";
  AssessmentRecord third;  // started now
  third.inventory = "inventory.yaml";
  const auto a = store.begin_assessment(first);
  const auto b = store.begin_assessment(second);
  const auto c = store.begin_assessment(third);

  // A document of a few MB, with every byte value a JSON text can hold.
  std::string document = "{\"assets\":[";
  while (document.size() < 3'000'000) document += "{\"id\":\"asset-\\u00e9\",\"findings\":[1,2,3]},";
  document += "{}]}";
  store.update_assessment(b, store::kAssessmentFinished, document, "2025-06-01T11:30:00Z");
  store.update_assessment(a, store::kAssessmentInterrupted, "{}", "");

  auto loaded = store.assessment(b);
  ASSERT_TRUE(loaded.has_value());
  EXPECT_EQ(loaded->id, b);
  EXPECT_EQ(loaded->inventory, second.inventory);
  EXPECT_EQ(loaded->started_at, "2025-06-01T11:00:00Z");
  EXPECT_EQ(loaded->finished_at, "2025-06-01T11:30:00Z");
  EXPECT_EQ(loaded->status, "finished");
  EXPECT_EQ(loaded->summary_json, document);

  auto interrupted = store.assessment(a);
  ASSERT_TRUE(interrupted.has_value());
  EXPECT_EQ(interrupted->status, "interrupted");
  EXPECT_EQ(interrupted->inventory, first.inventory);
  EXPECT_TRUE(looks_like_utc_now(interrupted->finished_at)) << interrupted->finished_at;

  auto running = store.assessment(c);
  ASSERT_TRUE(running.has_value());
  EXPECT_EQ(running->status, "running");
  EXPECT_TRUE(running->finished_at.empty());
  EXPECT_FALSE(running->started_at.empty());
  EXPECT_FALSE(store.assessment(c + 100).has_value());

  const auto listed = store.assessments();
  ASSERT_EQ(listed.size(), 3u);
  EXPECT_EQ(listed[0].id, c);  // now, then 11:00 UTC, then 10:00 UTC
  EXPECT_EQ(listed[1].id, b);
  EXPECT_EQ(listed[2].id, a);
  for (const auto& record : listed) EXPECT_TRUE(record.summary_json.empty()) << record.id;
  EXPECT_EQ(listed[1].status, "finished");
  EXPECT_EQ(store.assessments(1).size(), 1u);
  EXPECT_EQ(store.assessments(0).size(), 3u);

  expect_error([&] { store.update_assessment(c + 100, store::kAssessmentFinished, "{}", ""); }, {std::to_string(c + 100)});
  expect_error([&] { store.update_assessment(c, "done", "{}", ""); }, {"done"});
  expect_error([&] { store.update_assessment(c, store::kAssessmentFailed, "{}", "soon"); }, {"soon", "RFC 3339"});
  AssessmentRecord bad_status;
  bad_status.status = "paused";
  expect_error([&] { store.begin_assessment(bad_status); }, {"paused"});
  AssessmentRecord bad_time;
  bad_time.started_at = "June";
  expect_error([&] { store.begin_assessment(bad_time); }, {"June"});
  EXPECT_EQ(store.assessments().size(), 3u);
}

TEST_P(FindingStoreTest, RecordJobStoresTheSameJobOnce) {
  FindingStore store(location());
  const auto assessment = store.begin_assessment({});
  const std::vector<Finding> findings = {make_finding("R1", Severity::High, "m.pt", 1, "a"),
                                         make_finding("R2", Severity::Low, "m.pt", 2, "b")};
  JobRecord job = make_job(assessment, std::string(64, 'a'), "done", "2025-06-01T12:00:00Z");
  RunRecord run = make_run("scan", "llm-prod", "2025-06-01T11:59:00Z");
  run.inputs = {"models/llm.pt"};
  const auto [run_id, created] = store.record_job(job, run, findings);
  EXPECT_TRUE(created);
  EXPECT_GT(run_id, 0);

  // Again, by a retrying worker with other findings: nothing is written.
  JobRecord again = job;
  again.worker = "worker-2";
  const auto [same_id, created_again] = store.record_job(again, run, {make_finding("R3", Severity::Critical, "x", 1, "c")});
  EXPECT_FALSE(created_again);
  EXPECT_EQ(same_id, run_id);

  RunFilter all;
  all.limit = 0;
  EXPECT_EQ(ids_of(store.runs(all)), std::vector<std::int64_t>{run_id});
  const auto stored = store.findings(run_id);
  ASSERT_EQ(stored.size(), 2u);
  EXPECT_EQ(stored[0].finding.rule_id, "R1");
  auto recorded_run = store.run(run_id);
  ASSERT_TRUE(recorded_run.has_value());
  EXPECT_EQ(recorded_run->inputs, run.inputs);
  EXPECT_EQ(recorded_run->counts, (std::array<std::size_t, 5>{0, 1, 0, 1, 0}));

  const auto jobs = store.jobs(assessment);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].assessment_id, assessment);
  EXPECT_EQ(jobs[0].job_key, job.job_key);
  EXPECT_EQ(jobs[0].asset, "llm-prod");
  EXPECT_EQ(jobs[0].check, "scan");
  EXPECT_EQ(jobs[0].state, "done");
  EXPECT_EQ(jobs[0].run_id, run_id);
  EXPECT_EQ(jobs[0].worker, "worker-1");  // the first record stands
  EXPECT_EQ(jobs[0].finished_at, "2025-06-01T12:00:00Z");
  EXPECT_TRUE(jobs[0].error.empty());

  // The same key in another assessment is another job.
  const auto next_assessment = store.begin_assessment({});
  const auto [other_run, other_created] = store.record_job(make_job(next_assessment, job.job_key, "done", ""), run, findings);
  EXPECT_TRUE(other_created);
  EXPECT_NE(other_run, run_id);
  EXPECT_EQ(store.runs(all).size(), 2u);
}

// Workers on several processes (machines, on PostgreSQL) finish the same job at the same moment:
// one run is stored, and every worker is told its id.
TEST_P(FindingStoreTest, RacingWorkersRecordAJobExactlyOnce) {
  constexpr int kWorkers = 6;
  constexpr int kFindings = 300;
  std::int64_t assessment = 0;
  {
    FindingStore store(location());
    assessment = store.begin_assessment({});
  }
  int go[2], results[2];
  ASSERT_EQ(::pipe(go), 0);
  ASSERT_EQ(::pipe(results), 0);
  std::vector<pid_t> children;
  for (int w = 0; w < kWorkers; ++w) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::close(go[1]);
      ::close(results[0]);
      int status = 0;
      try {
        FindingStore store(location());  // connected before the start, so that the writes race
        char byte = 0;
        if (::read(go[0], &byte, 1) != 0) ::_exit(4);
        std::vector<Finding> findings;
        for (int n = 0; n < kFindings; ++n)
          findings.push_back(make_finding("R", Severity::Medium, "w" + std::to_string(w), static_cast<std::uint64_t>(n), "e"));
        JobRecord job = make_job(assessment, "race-key", "done", "");
        job.worker = "worker-" + std::to_string(w);
        const auto [run_id, created] = store.record_job(job, make_run("scan", "llm-prod", ""), findings);
        const std::int64_t answer[2] = {run_id, created ? 1 : 0};
        if (::write(results[1], answer, sizeof answer) != static_cast<ssize_t>(sizeof answer)) status = 5;
      } catch (const std::exception& error) {
        std::fprintf(stderr, "worker %d: %s\n", w, error.what());
        status = 3;
      }
      ::_exit(status);
    }
    children.push_back(child);
  }
  ::close(go[0]);
  ::close(results[1]);
  ::close(go[1]);  // all start
  std::vector<std::pair<std::int64_t, bool>> answers;
  std::int64_t answer[2];
  while (::read(results[0], answer, sizeof answer) == static_cast<ssize_t>(sizeof answer))
    answers.emplace_back(answer[0], answer[1] == 1);
  ::close(results[0]);
  expect_children_succeed(children);

  ASSERT_EQ(answers.size(), static_cast<std::size_t>(kWorkers));
  const std::int64_t run_id = answers[0].first;
  EXPECT_GT(run_id, 0);
  int created = 0;
  for (const auto& [id, was_created] : answers) {
    EXPECT_EQ(id, run_id);
    created += was_created ? 1 : 0;
  }
  EXPECT_EQ(created, 1);
  FindingStore store(location());
  RunFilter all;
  all.limit = 0;
  EXPECT_EQ(ids_of(store.runs(all)), std::vector<std::int64_t>{run_id});
  EXPECT_EQ(store.findings(run_id).size(), static_cast<std::size_t>(kFindings));
  const auto jobs = store.jobs(assessment);
  ASSERT_EQ(jobs.size(), 1u);
  EXPECT_EQ(jobs[0].run_id, run_id);
}

TEST_P(FindingStoreTest, AFailedJobIsReplacedByADoneOneNeverTheReverse) {
  FindingStore store(location());
  const auto assessment = store.begin_assessment({});
  const auto first = store.record_job(make_job(assessment, "other", "done", "2025-06-01T10:00:00Z"),
                                      make_run("scan", "a", ""), {});
  JobRecord failed = make_job(assessment, "flaky", "failed", "2025-06-01T11:00:00Z");
  failed.error = "timed out after 3600 s";
  const auto [failed_run, failed_created] = store.record_job(failed, make_run("scan", "a", ""), {make_finding("R", Severity::High, "f", 1, "e")});
  EXPECT_EQ(failed_run, 0);
  EXPECT_TRUE(failed_created);
  RunFilter all;
  all.limit = 0;
  EXPECT_EQ(store.runs(all).size(), 1u);  // a failed job's run is not stored

  // Failed twice: the newest failure is kept.
  failed.error = "killed by signal 9";
  EXPECT_EQ(store.record_job(failed, {}, {}), std::make_pair(std::int64_t{0}, true));
  auto jobs = store.jobs(assessment);
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[1].job_key, "flaky");
  EXPECT_EQ(jobs[1].state, "failed");
  EXPECT_EQ(jobs[1].run_id, 0);
  EXPECT_EQ(jobs[1].error, "killed by signal 9");

  // The retry succeeds: it replaces the failure.
  const auto [done_run, done_created] =
      store.record_job(make_job(assessment, "flaky", "done", "2025-06-01T12:00:00Z"), make_run("scan", "a", ""),
                       {make_finding("R", Severity::High, "f", 1, "e")});
  EXPECT_TRUE(done_created);
  EXPECT_GT(done_run, first.first);
  jobs = store.jobs(assessment);
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[0].job_key, "other");
  EXPECT_EQ(jobs[1].job_key, "flaky");
  EXPECT_EQ(jobs[1].state, "done");
  EXPECT_EQ(jobs[1].run_id, done_run);
  EXPECT_TRUE(jobs[1].error.empty());

  // A late failure report of the same job changes nothing.
  EXPECT_EQ(store.record_job(failed, {}, {}), std::make_pair(done_run, false));
  jobs = store.jobs(assessment);
  ASSERT_EQ(jobs.size(), 2u);
  EXPECT_EQ(jobs[1].state, "done");
  EXPECT_EQ(store.runs(all).size(), 2u);
}

TEST_P(FindingStoreTest, JobsAreListedInTheOrderRecorded) {
  FindingStore store(location());
  const auto assessment = store.begin_assessment({});
  const auto other = store.begin_assessment({});
  std::vector<std::string> keys = {"k3", "k1", "k2", "k0"};
  for (const auto& key : keys) store.record_job(make_job(assessment, key, "failed", ""), {}, {});
  store.record_job(make_job(other, "k9", "failed", ""), {}, {});
  std::vector<std::string> listed;
  for (const auto& job : store.jobs(assessment)) listed.push_back(job.job_key);
  EXPECT_EQ(listed, keys);
  EXPECT_EQ(store.jobs(other).size(), 1u);
  EXPECT_TRUE(store.jobs(other + 100).empty());
}

TEST_P(FindingStoreTest, LatestDoneJobIsTheNewestAcrossAssessments) {
  FindingStore store(location());
  const auto monday = store.begin_assessment({});
  const auto tuesday = store.begin_assessment({});
  const auto wednesday = store.begin_assessment({});
  const std::string key = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
  // Recorded out of time order, so that insertion order cannot pass for time order.
  const auto [tuesday_run, c1] =
      store.record_job(make_job(tuesday, key, "done", "2025-06-03T09:00:00Z"), make_run("scan", "a", ""), {});
  const auto [monday_run, c2] =
      store.record_job(make_job(monday, key, "done", "2025-06-02T09:00:00+02:00"), make_run("scan", "a", ""), {});
  store.record_job(make_job(wednesday, key, "failed", "2025-06-04T09:00:00Z"), {}, {});  // failed: never reused
  store.record_job(make_job(wednesday, "another-key", "done", "2025-06-05T09:00:00Z"), make_run("scan", "a", ""), {});
  ASSERT_TRUE(c1 && c2);

  auto latest = store.latest_done_job(key);
  ASSERT_TRUE(latest.has_value());
  EXPECT_EQ(latest->assessment_id, tuesday);
  EXPECT_EQ(latest->run_id, tuesday_run);
  EXPECT_EQ(latest->state, "done");
  EXPECT_EQ(latest->finished_at, "2025-06-03T09:00:00Z");
  EXPECT_NE(monday_run, tuesday_run);
  EXPECT_FALSE(store.latest_done_job("never-run").has_value());
  EXPECT_FALSE(store.latest_done_job("").has_value());
  EXPECT_FALSE(store.latest_done_job(std::string("bad\0key", 7)).has_value());
}

TEST_P(FindingStoreTest, RecordJobRefusesBadInputAndStoresNothing) {
  FindingStore store(location());
  const auto assessment = store.begin_assessment({});
  const RunRecord run = make_run("scan", "a", "2025-06-01T00:00:00Z");
  expect_error([&] { store.record_job(make_job(assessment + 100, "k", "done", ""), run, {}); }, {std::to_string(assessment + 100)});
  expect_error([&] { store.record_job(make_job(assessment, "k", "finished", ""), run, {}); }, {"finished"});
  for (const std::string& key : {std::string(), std::string("has space"), std::string("tab\tkey"), std::string(300, 'a'),
                                 std::string("\xff")})
    expect_error([&] { store.record_job(make_job(assessment, key, "done", ""), run, {}); }, {"key"});
  expect_error([&] { store.record_job(make_job(assessment, "k", "done", "later"), run, {}); }, {"later"});
  expect_error([&] { store.record_job(make_job(assessment, "k", "done", ""), make_run("", "a", ""), {}); }, {"command"});
  Finding broken = make_finding("R", Severity::High, "f", 1, "e");
  broken.severity = static_cast<Severity>(7);
  expect_error([&] { store.record_job(make_job(assessment, "k", "done", ""), run, {make_finding("R", Severity::Low, "f", 1, "e"), broken}); },
               {"severity"});
  RunFilter all;
  all.limit = 0;
  EXPECT_TRUE(store.runs(all).empty());
  EXPECT_TRUE(store.jobs(assessment).empty());
  // The job can still be recorded once its run is valid.
  EXPECT_TRUE(store.record_job(make_job(assessment, "k", "done", ""), run, {}).second);
}

// ---------------------------------------------------------------------------------------------
// SQLite only: the file

TEST(FindingStoreSqlite, AnyLocationThatIsNotAPostgresUrlIsAFile) {
  TempDir temp("aegis_findings");
  const std::string file = (temp.path / "postgresql-notes.db").string();
  {
    FindingStore store(file);  // std::string
    EXPECT_EQ(store.file(), fs::path(file));
    EXPECT_EQ(store.location(), file);
    store.record_run(make_run("scan", "a", "2025-06-01T00:00:00Z"), {});
  }
  FindingStore again(file.c_str());  // const char*
  EXPECT_EQ(again.runs().size(), 1u);
  EXPECT_TRUE(fs::is_regular_file(file));
  // Never SQLite's private temporary database.
  expect_error([] { FindingStore store{std::string()}; }, {"no finding store"});
  expect_error([] { FindingStore store{fs::path()}; }, {"no finding store"});
}

TEST(FindingStoreSqlite, ShareTheFileWithTheLineageStore) {
  TempDir temp("aegis_findings");
  const fs::path file = temp.path / "aegis.db";
  std::int64_t artifact_id = 0;
  {
    store::LineageStore lineage(file);
    store::ArtifactRecord artifact;
    artifact.path = "/models/m";
    artifact.subject_digest = std::string(64, 'a');
    artifact_id = lineage.add_artifact(artifact);
  }
  std::int64_t run_id = 0;
  {
    FindingStore findings(file);
    run_id = findings.record_run(make_run("scan", "m", "2025-06-01T00:00:00Z"), {make_finding("R", Severity::Low, "m", 1, "e")});
  }
  store::LineageStore lineage(file);
  EXPECT_EQ(lineage.artifact(artifact_id).path, "/models/m");
  FindingStore findings(file);
  EXPECT_EQ(findings.findings(run_id).size(), 1u);
}

TEST(FindingStoreSqlite, RefusesAFileThatIsNotSqliteAndLeavesItAlone) {
  TempDir temp("aegis_findings");
  const fs::path file = temp.path / "notes.txt";
  std::string content;
  for (int i = 0; i < 200; ++i) content += "these are my notes, line " + std::to_string(i) + "\n";
  std::ofstream(file, std::ios::binary) << content;
  expect_error([&] { FindingStore store(file); }, {file.string(), "not an SQLite database"});
  expect_error(
      [&] {
        FindingStoreOptions read_only;
        read_only.read_only = true;
        FindingStore store(file, read_only);
      },
      {file.string()});
  EXPECT_EQ(read_text(file), content);
}

TEST(FindingStoreSqlite, RefusesAnotherApplicationsDatabase) {
  TempDir temp("aegis_findings");
  const fs::path file = temp.path / "places.sqlite";
  run_sql(file, "CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT); INSERT INTO moz_places (url) VALUES ('x')");
  const std::string before = read_text(file);
  expect_error([&] { FindingStore store(file); }, {file.string(), "another application", "moz_places"});
  EXPECT_EQ(read_text(file), before);  // not even switched to WAL
  EXPECT_FALSE(fs::exists(file.string() + "-wal"));
}

TEST(FindingStoreSqlite, RefusesAnUnwritableFolderClearly) {
  TempDir temp("aegis_findings");
  fs::path folder;
  if (::geteuid() != 0) {
    folder = temp.path / "locked";
    fs::create_directory(folder);
    fs::permissions(folder, fs::perms::owner_read | fs::perms::owner_exec);
  } else {
    // root writes through permission bits; sysfs refuses new files even to root.
    folder = "/sys";
    const fs::path probe = folder / "aegis-write-probe";
    if (std::ofstream(probe)) {
      std::error_code ec;
      fs::remove(probe, ec);
      GTEST_SKIP() << "no folder here is unwritable to root";
    }
  }
  const fs::path file = folder / "aegis.db";
  expect_error([&] { FindingStore store(file); }, {file.string(), "cannot create"});
  expect_error([&] { FindingStore store(folder / "sub" / "aegis.db"); }, {(folder / "sub").string()});
  EXPECT_FALSE(fs::exists(file));
  std::error_code ec;
  fs::permissions(temp.path / "locked", fs::perms::owner_all, ec);
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: URLs, servers, roles

class FindingStorePostgres : public ::testing::Test {
 protected:
  static void TearDownTestSuite() { postgres_.stop(); }
  void SetUp() override {
    server_ = postgres_.ensure();
    ASSERT_NE(server_, nullptr) << "the PostgreSQL backend is tested on a real server: " << postgres_.why();
  }
  // A fresh database owned by `owner` (its public schema then lets the owner create tables).
  std::string database_for(const std::string& owner) {
    const std::string url = server_->create_database();
    const std::string name = url.substr(url.rfind('/') + 1);
    server_->execute("ALTER DATABASE " + name + " OWNER TO " + owner);
    return name;
  }

  static SuiteServer postgres_;
  PostgresServerProcess* server_ = nullptr;
};

SuiteServer FindingStorePostgres::postgres_;

TEST_F(FindingStorePostgres, AMalformedUrlIsRefusedWithoutShowingThePassword) {
  const std::string secret = "Hunter2-Secret-Pw";
  expect_error([&] { FindingStore store("postgresql://aegis:" + secret + "@127.0.0.1:notaport/db"); },
               {"cannot connect", "postgresql://aegis:***@127.0.0.1:notaport/db", "notaport"}, {secret});
  // libpq repeats a token it cannot decode: the password is still hidden.
  expect_error([&] { FindingStore store("postgresql://aegis:" + secret + "%zz@127.0.0.1:" + std::to_string(server_->port()) + "/db"); },
               {"cannot connect", "***"}, {secret});
  expect_error([&] { FindingStore store("postgres://127.0.0.1:1/db?password=" + secret + "&sslmode=bogus"); },
               {"cannot connect", "password=***", "sslmode"}, {secret});
}

TEST_F(FindingStorePostgres, SaysWhenTheServerIsDown) {
  const int port = test::PostgresServerProcess::free_port();
  ASSERT_NE(port, 0);
  const std::string url = "postgresql://aegis:Pa55-Not-Shown@127.0.0.1:" + std::to_string(port) + "/aegis";
  try {
    FindingStore store(url);
    ADD_FAILURE() << "connected where no server listens";
  } catch (const core::Error& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("cannot connect to the PostgreSQL store postgresql://aegis:***@127.0.0.1:" + std::to_string(port)),
              std::string::npos)
        << what;
    EXPECT_EQ(what.find("Pa55-Not-Shown"), std::string::npos) << what;
    EXPECT_NE(error.hint().find("start the PostgreSQL server"), std::string::npos) << error.hint();
  }
}

TEST_F(FindingStorePostgres, AWrongPasswordIsRefusedAndNeverPrinted) {
  const std::string database = database_for(SuiteServer::kPasswordUser);
  const std::string wrong = "Wrong-Horse-Battery-1";
  expect_error([&] { FindingStore store(server_->url(database, SuiteServer::kPasswordUser, wrong)); },
               {"password authentication failed", SuiteServer::kPasswordUser}, {wrong});
  try {
    FindingStore store(server_->url(database, SuiteServer::kPasswordUser, wrong));
  } catch (const core::Error& error) {
    EXPECT_NE(error.hint().find("password"), std::string::npos) << error.hint();
  }
  // The right one: connected, and the store never says it either.
  FindingStore store(server_->url(database, SuiteServer::kPasswordUser, SuiteServer::kPassword));
  EXPECT_EQ(store.location(), server_->url(database, SuiteServer::kPasswordUser, "***"));
  EXPECT_TRUE(store.file().empty());
  EXPECT_GT(store.record_run(make_run("scan", "a", "2025-06-01T00:00:00Z"), {}), 0);
  // As a parameter too.
  FindingStore by_parameter(server_->url(database, SuiteServer::kPasswordUser) + "?password=" + SuiteServer::kPassword +
                            "&application_name=aegis-test");
  EXPECT_EQ(by_parameter.location(),
            server_->url(database, SuiteServer::kPasswordUser) + "?password=***&application_name=aegis-test");
  EXPECT_EQ(by_parameter.runs().size(), 1u);
}

TEST_F(FindingStorePostgres, TakesEitherSchemeInAnyCase) {
  const std::string url = server_->create_database();
  const std::string rest = url.substr(url.find("://"));
  std::int64_t run_id = 0;
  {
    FindingStore store("POSTGRESQL" + rest);
    run_id = store.record_run(make_run("scan", "a", "2025-06-01T00:00:00Z"), {});
  }
  FindingStore store("postgres" + rest);
  EXPECT_TRUE(store.run(run_id).has_value());
  EXPECT_TRUE(store.file().empty());
}

TEST_F(FindingStorePostgres, SaysWhenTheDatabaseIsMissing) {
  try {
    FindingStore store(server_->url("no_such_database"));
    ADD_FAILURE() << "opened a missing database";
  } catch (const core::Error& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("no_such_database"), std::string::npos) << what;
    EXPECT_NE(what.find("does not exist"), std::string::npos) << what;
    EXPECT_NE(error.hint().find("createdb"), std::string::npos) << error.hint();
  }
}

TEST_F(FindingStorePostgres, SaysWhenTheUserMayNotCreateTheTables) {
  const std::string database = database_for(PostgresServerProcess::kSuperuser);
  try {
    FindingStore store(server_->url(database, SuiteServer::kReader));
    ADD_FAILURE() << "a role without CREATE made the tables";
  } catch (const core::Error& error) {
    const std::string what = error.what();
    EXPECT_NE(what.find("permission denied"), std::string::npos) << what;
    EXPECT_NE(what.find("migrating the schema"), std::string::npos) << what;
    EXPECT_NE(error.hint().find("grant"), std::string::npos) << error.hint();
  }
  // Once the owner has made them, the reader may read what it was granted.
  {
    FindingStore owner(server_->url(database));
    owner.record_run(make_run("scan", "a", "2025-06-01T00:00:00Z"), {make_finding("R", Severity::High, "f", 1, "e")});
  }
  server_->execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO " + std::string(SuiteServer::kReader), database);
  FindingStoreOptions read_only;
  read_only.read_only = true;
  FindingStore reader(server_->url(database, SuiteServer::kReader), read_only);
  ASSERT_EQ(reader.runs().size(), 1u);
  EXPECT_EQ(reader.findings(reader.runs()[0].id).size(), 1u);
}

}  // namespace
}  // namespace aegis::test
