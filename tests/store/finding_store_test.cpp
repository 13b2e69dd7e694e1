// The findings store on real SQLite files: every field written and read back, runs listed and
// filtered as `aegis assess` asks for them, fingerprints that survive rewording but not moving,
// several writers (objects and processes) on one file, a writer killed mid-run, and the files a
// user may point --store at by mistake.
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
#include <set>
#include <thread>

#include "../test_support.h"
#include "aegis/core/error.h"
#include "aegis/store/lineage_store.h"

namespace aegis::test {
namespace {

namespace fs = std::filesystem;
using core::Finding;
using core::Severity;
using store::FindingStore;
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

// Expects `action` to throw core::Error whose message contains every one of `parts`.
template <typename Action>
void expect_error(Action action, std::initializer_list<std::string> parts) {
  try {
    action();
    ADD_FAILURE() << "no core::Error thrown";
  } catch (const core::Error& error) {
    const std::string what = error.what();
    for (const auto& part : parts) EXPECT_NE(what.find(part), std::string::npos) << "'" << part << "' not in: " << what;
    EXPECT_FALSE(error.hint().empty()) << what;
  }
}

TEST(FindingStore, RoundTripsEveryFieldIncludingOptionalAndUnicode) {
  TempDir temp("aegis_findings");
  const fs::path file = temp.path / "store" / "aegis.db";  // the folder is created too

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
    FindingStore store(file);
    id = store.record_run(run, {full, bare, medium, medium2});
    EXPECT_GT(id, 0);
  }
  FindingStore store(file);  // read back through a fresh connection
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

TEST(FindingStore, FillsMissingTimesAndRejectsBadRunsWithoutStoringThem) {
  TempDir temp("aegis_findings");
  FindingStore store(temp.path / "aegis.db");
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

TEST(FindingStore, ListsRunsNewestFirstByInstantAndFilters) {
  TempDir temp("aegis_findings");
  FindingStore store(temp.path / "aegis.db");
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

TEST(FindingStore, LatestRunPerAssetAndItsFindings) {
  TempDir temp("aegis_findings");
  FindingStore store(temp.path / "aegis.db");
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

TEST(FindingStore, FingerprintsAreStableAcrossRunsAndFollowTheLocation) {
  Finding base = make_finding("INFRA-JUPYTER-001", Severity::High, "deploy/compose.yaml", 12,
                              "  jupyter   lab\n--NotebookApp.token=''  ");
  base.location.column = "services.jupyter.command";
  const std::string fingerprint = store::finding_fingerprint(base);
  ASSERT_EQ(fingerprint.size(), 32u);
  EXPECT_TRUE(std::all_of(fingerprint.begin(), fingerprint.end(),
                          [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }));
  // Pinned so that an upgrade cannot silently turn every stored finding into a "new" one. Computed
  // with Python's hashlib over the encoding documented in finding_store.cpp:
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

  // Stored in two runs of two store objects: the same fingerprint each time.
  TempDir temp("aegis_findings");
  std::int64_t first = 0, second = 0;
  {
    FindingStore store(temp.path / "aegis.db");
    first = store.record_run(make_run("audit-infra", "a", "2025-06-01T00:00:00Z"), {base, moved[5]});
  }
  FindingStore store(temp.path / "aegis.db");
  second = store.record_run(make_run("audit-infra", "a", "2025-06-02T00:00:00Z"), {reworded, moved[5]});
  auto one = store.findings(first), two = store.findings(second);
  ASSERT_EQ(one.size(), 2u);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(one[0].fingerprint, fingerprint);
  EXPECT_EQ(two[0].fingerprint, fingerprint);
  EXPECT_EQ(one[1].fingerprint, two[1].fingerprint);
  EXPECT_NE(one[0].fingerprint, one[1].fingerprint);
}

TEST(FindingStore, DiffRunsSaysAddedPersistingAndFixed) {
  TempDir temp("aegis_findings");
  FindingStore store(temp.path / "aegis.db");
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

  expect_error([&] { (void)store.diff_runs(before, after + 100); }, {std::to_string(after + 100)});
}

TEST(FindingStore, StatusIsTriagedAndKept) {
  TempDir temp("aegis_findings");
  const fs::path file = temp.path / "aegis.db";
  std::int64_t finding_id = 0, run_id = 0;
  {
    FindingStore store(file);
    run_id = store.record_run(make_run("scan", "a", "2025-06-01T00:00:00Z"),
                              {make_finding("R1", Severity::High, "m.pt", 1, "GLOBAL os system"),
                               make_finding("R2", Severity::Low, "m.pt", 2, "x")});
    finding_id = store.findings(run_id).at(0).id;
    store.set_status(finding_id, store::kStatusFalsePositive);
    expect_error([&] { store.set_status(finding_id, "ignored"); }, {"ignored"});
    expect_error([&] { store.set_status(finding_id + 100, store::kStatusOpen); }, {std::to_string(finding_id + 100)});
  }
  FindingStore store(file);
  auto findings = store.findings(run_id);
  ASSERT_EQ(findings.size(), 2u);
  EXPECT_EQ(findings[0].status, "false-positive");
  EXPECT_EQ(findings[1].status, "open");
}

TEST(FindingStore, TwoStoreObjectsOnOneFileWriteAlternately) {
  TempDir temp("aegis_findings");
  const fs::path file = temp.path / "aegis.db";
  FindingStore first(file), second(file);
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

TEST(FindingStore, SeveralProcessesWriteOneStoreAtOnce) {
  TempDir temp("aegis_findings");
  const fs::path file = temp.path / "aegis.db";
  { FindingStore create(file); }
  constexpr int kProcesses = 3, kRuns = 15, kFindings = 400;
  std::vector<pid_t> children;
  for (int p = 0; p < kProcesses; ++p) {
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      // Never returns into the test framework.
      int status = 0;
      try {
        FindingStore store(file);
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
  for (pid_t child : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "a writer failed: status " << status;
  }
  FindingStore store(file);
  RunFilter all;
  all.limit = 0;
  auto runs = store.runs(all);
  ASSERT_EQ(runs.size(), static_cast<std::size_t>(kProcesses * kRuns));
  for (const auto& run : runs) {
    EXPECT_EQ(run.counts, (std::array<std::size_t, 5>{80, 80, 80, 80, 80}));
    EXPECT_EQ(store.findings(run.id).size(), static_cast<std::size_t>(kFindings));
  }
}

TEST(FindingStore, AWriterKilledMidRunLeavesWholeRunsOnly) {
  TempDir temp("aegis_findings");
  const fs::path file = temp.path / "aegis.db";
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::close(ready[0]);
    try {
      FindingStore store(file);
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

  FindingStore store(file);
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

TEST(FindingStore, ShareTheFileWithTheLineageStore) {
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

TEST(FindingStore, RefusesAFileThatIsNotSqliteAndLeavesItAlone) {
  TempDir temp("aegis_findings");
  const fs::path file = temp.path / "notes.txt";
  std::string content;
  for (int i = 0; i < 200; ++i) content += "these are my notes, line " + std::to_string(i) + "\n";
  std::ofstream(file, std::ios::binary) << content;
  expect_error([&] { FindingStore store(file); }, {file.string(), "not an SQLite database"});
  expect_error(
      [&] {
        store::FindingStoreOptions read_only;
        read_only.read_only = true;
        FindingStore store(file, read_only);
      },
      {file.string()});
  EXPECT_EQ(read_text(file), content);
}

TEST(FindingStore, RefusesAnotherApplicationsDatabase) {
  TempDir temp("aegis_findings");
  const fs::path file = temp.path / "places.sqlite";
  run_sql(file, "CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT); INSERT INTO moz_places (url) VALUES ('x')");
  const std::string before = read_text(file);
  expect_error([&] { FindingStore store(file); }, {file.string(), "another application", "moz_places"});
  EXPECT_EQ(read_text(file), before);  // not even switched to WAL
  EXPECT_FALSE(fs::exists(file.string() + "-wal"));
}

TEST(FindingStore, RefusesAStoreWrittenByANewerSchema) {
  TempDir temp("aegis_findings");
  const fs::path file = temp.path / "aegis.db";
  std::int64_t run_id = 0;
  {
    FindingStore store(file);
    run_id = store.record_run(make_run("scan", "a", "2025-06-01T00:00:00Z"), {});
  }
  const std::string newer = std::to_string(store::kFindingSchemaVersion + 1);
  run_sql(file, ("UPDATE aegis_schema SET version = " + newer + " WHERE component = 'findings'").c_str());
  expect_error([&] { FindingStore store(file); }, {file.string(), "newer", newer});
  store::FindingStoreOptions read_only;
  read_only.read_only = true;
  expect_error([&] { FindingStore store(file, read_only); }, {file.string(), "newer"});
  // Not rewritten: the run is still there for the newer Aegis.
  run_sql(file, ("UPDATE aegis_schema SET version = " + std::to_string(store::kFindingSchemaVersion) +
                 " WHERE component = 'findings'").c_str());
  FindingStore store(file);
  EXPECT_TRUE(store.run(run_id).has_value());
}

TEST(FindingStore, RefusesAnUnwritableFolderClearly) {
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

TEST(FindingStore, OpensReadOnlyWithoutWriting) {
  TempDir temp("aegis_findings");
  const fs::path file = temp.path / "aegis.db";
  store::FindingStoreOptions read_only;
  read_only.read_only = true;
  expect_error([&] { FindingStore store(file, read_only); }, {file.string()});
  EXPECT_FALSE(fs::exists(file));

  std::int64_t run_id = 0;
  {
    FindingStore store(file);
    run_id = store.record_run(make_run("scan", "a", "2025-06-01T00:00:00Z"), {make_finding("R", Severity::Low, "f", 1, "e")});
  }
  FindingStore store(file, read_only);
  EXPECT_EQ(store.findings(run_id).size(), 1u);
  expect_error([&] { store.record_run(make_run("scan", "a", "2025-06-02T00:00:00Z"), {}); }, {"read-only"});
  expect_error([&] { store.set_status(store.findings(run_id)[0].id, store::kStatusFixed); }, {"read-only"});
}

// The bound the store promises: a large run is one transaction, written from a producer that holds
// one finding at a time, and read back one at a time. (200,000 here to keep the suite quick under
// AddressSanitizer; a million works the same way, only slower.)
TEST(FindingStore, RecordsAndStreamsALargeRunInOneTransaction) {
  TempDir temp("aegis_findings");
  FindingStore store(temp.path / "aegis.db");
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

TEST(FindingStore, AFailingProducerStoresNothingOfItsRun) {
  TempDir temp("aegis_findings");
  FindingStore store(temp.path / "aegis.db");
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

}  // namespace
}  // namespace aegis::test
