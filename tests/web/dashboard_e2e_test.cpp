// The dashboard end to end: a store with an assessment's runs and findings, users added with
// `aegis users add`, `aegis serve` started as a user would, and web/e2e/dashboard.e2e.mjs driving a
// real headless Chromium (Debian's chromium, through playwright-core from npm) through logging in,
// opening a run, filtering findings and changing a finding's status. Screenshots at 1280x800 are
// kept under <build>/test-artifacts/web. Needs the front end built (`make web`).
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <thread>

#include "aegis/core/finding.h"
#include "aegis/store/finding_store.h"
#include "aegis/web/dashboard_store.h"
#include "support/background_process.h"
#include "test_support.h"

#ifndef AEGIS_ARTIFACT_DIR
#define AEGIS_ARTIFACT_DIR "test-artifacts"
#endif

namespace aegis::web {
namespace {

using json = nlohmann::json;

core::Finding finding(std::string rule, core::Severity severity, std::string title, std::vector<std::string> atlas,
                      std::string file, std::string evidence) {
  core::Finding f;
  f.rule_id = std::move(rule);
  f.severity = severity;
  f.title = std::move(title);
  f.location.file = std::move(file);
  f.evidence = std::move(evidence);
  f.atlas = std::move(atlas);
  f.nist_ai_rmf = {"MANAGE 2.2"};
  f.remediation = "Load the model only from a signed artifact; see the rule's documentation.";
  return f;
}

// An engagement as `aegis assess` records it: one assessment whose jobs each stored a run.
void seed(const std::filesystem::path& file) {
  store::FindingStore db(file);
  store::AssessmentRecord assessment;
  assessment.inventory = "examples/assess/inventory.yaml";
  assessment.started_at = "2026-11-20T09:00:00Z";
  const auto id = db.begin_assessment(assessment);
  const auto job = [&](const std::string& asset, const std::string& check, const std::string& key, std::string summary,
                       std::vector<core::Finding> findings) {
    store::JobRecord record;
    record.assessment_id = id;
    record.job_key = key;
    record.asset = asset;
    record.check = check;
    record.state = "done";
    record.worker = "e2e";
    store::RunRecord run;
    run.command = "assess:" + check;
    run.asset = asset;
    run.inputs = {asset};
    run.summary_json = std::move(summary);
    db.record_job(record, run, findings);
  };
  std::vector<core::Finding> scan;
  for (int i = 0; i < 12; ++i)
    scan.push_back(finding("pickle.global.os_system", core::Severity::Critical, "Pickle calls os.system on load",
                           {"AML.T0011.000", "AML.T0010"}, "models/fraud-v" + std::to_string(i) + ".pkl",
                           "GLOBAL os system; REDUCE at byte " + std::to_string(100 + i)));
  for (int i = 0; i < 20; ++i)
    scan.push_back(finding("zip.unexpected_member", core::Severity::Low, "Archive member outside the expected layout",
                           {"AML.T0010"}, "models/bundle.zip", "member extra/" + std::to_string(i) + ".bin"));
  job("fraud-model", "scan", "k-scan", R"({"results":{"files":3}})", scan);
  job("fraud-model", "robustness", "k-attack",
      R"({"results":{"clean_accuracy":0.91,"results":[{"attack":"fgsm","norm":"linf","eps":0.05,"robust_accuracy":0.52},
      {"attack":"fgsm","norm":"linf","eps":0.1,"robust_accuracy":0.31},{"attack":"pgd","norm":"linf","eps":0.05,"robust_accuracy":0.33},
      {"attack":"pgd","norm":"linf","eps":0.1,"robust_accuracy":0.08}]}})",
      {finding("attack.robust_accuracy", core::Severity::High, "Robust accuracy under PGD falls below 10% at eps 0.1",
               {"AML.T0043"}, "", "pgd linf eps=0.1 robust accuracy 0.08")});
  job("fraud-model", "membership", "k-mia",
      R"({"results":{"attacks":[{"attack":"loss","auc":0.61,"tpr_at_0_1pct_fpr":0.004},{"attack":"lira","auc":0.72,"tpr_at_0_1pct_fpr":0.05}]}})",
      {finding("mia.lira", core::Severity::Medium, "Membership of training records can be inferred", {"AML.T0024.000"}, "",
               "LiRA AUC 0.72")});
  job("support-llm", "redteam", "k-redteam", R"({"results":{"probes":40}})",
      {finding("redteam.direct_injection", core::Severity::High, "Direct prompt injection succeeded", {"AML.T0051.000"}, "",
               "ignore previous instructions -> system prompt leaked")});
  db.update_assessment(id, "finished", R"({"assets":2})", "");
}

// Width and height from a PNG's IHDR chunk; (0, 0) when the file is not a PNG.
std::pair<std::uint32_t, std::uint32_t> png_size(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  std::array<unsigned char, 24> head{};
  in.read(reinterpret_cast<char*>(head.data()), head.size());
  if (in.gcount() != 24 || head[0] != 0x89 || head[1] != 'P' || head[12] != 'I' || head[13] != 'H') return {0, 0};
  const auto be = [&](int at) {
    return (std::uint32_t{head[at]} << 24) | (std::uint32_t{head[at + 1]} << 16) | (std::uint32_t{head[at + 2]} << 8) | head[at + 3];
  };
  return {be(16), be(20)};
}

int add_user(const std::filesystem::path& store, const std::filesystem::path& dir, const std::string& name,
             const std::string& role, const std::string& password) {
  const auto input = dir / (name + ".password");
  std::ofstream(input) << password << "\n";
  test::Background command({"users", "add", name, "--role", role, "--store", store.string()}, dir / (name + ".log"),
                           dir / (name + ".out"), input);
  return command.wait(std::chrono::seconds(60));
}

TEST(WebDashboardE2E, AnalystLogsInOpensARunFiltersFindingsAndTriagesOneInChromium) {
  const std::filesystem::path web = std::filesystem::path(AEGIS_SOURCE_DIR) / "web";
  ASSERT_TRUE(std::filesystem::exists(web / "dist" / "index.html"))
      << "the front end is not built in " << web / "dist" << ": run `make web` (npm ci && npm run build in web/)";
  ASSERT_TRUE(std::filesystem::exists(web / "node_modules" / "playwright-core"))
      << "playwright-core is not installed in " << web << ": run `make web`";
  ASSERT_TRUE(std::filesystem::exists("/usr/bin/chromium")) << "Debian's chromium is missing: apt-get install chromium";

  test::TempDir dir("aegis_web_e2e");
  const auto store = dir.path / "store.db";
  seed(store);
  ASSERT_EQ(add_user(store, dir.path, "ana", "analyst", "ana-analyst-password"), 0) << test::slurp_file(dir.path / "ana.log");
  ASSERT_EQ(add_user(store, dir.path, "vic", "viewer", "vic-viewer-password"), 0) << test::slurp_file(dir.path / "vic.log");

  test::Background server({"serve", "--store", store.string(), "--listen", "127.0.0.1:0", "--web-root", (web / "dist").string()},
                          dir.path / "serve.log", dir.path / "serve.out");
  std::string url;
  for (int i = 0; i < 300 && url.empty(); ++i) {
    const std::string out = test::slurp_file(dir.path / "serve.out");
    const auto at = out.find("listening on ");
    if (at != std::string::npos && out.find('\n', at) != std::string::npos)
      url = out.substr(at + 13, out.find('\n', at) - at - 13);
    else
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(url.empty()) << "aegis serve did not start: " << test::slurp_file(dir.path / "serve.log");

  const std::filesystem::path artifacts = std::filesystem::path(AEGIS_ARTIFACT_DIR) / "web";
  std::filesystem::remove_all(artifacts);
  std::filesystem::create_directories(artifacts);
  const auto log = dir.path / "e2e.log";
  const std::string command = "cd '" + web.string() + "' && AEGIS_URL='" + url + "' AEGIS_ANALYST_USER=ana AEGIS_ANALYST_PASSWORD=ana-analyst-password " +
                              "AEGIS_VIEWER_USER=vic AEGIS_VIEWER_PASSWORD=vic-viewer-password ARTIFACT_DIR='" + artifacts.string() +
                              "' timeout 300 node e2e/dashboard.e2e.mjs > '" + log.string() + "' 2>&1";
  const int status = std::system(command.c_str());
  const std::string output = test::slurp_file(log);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the browser test failed (screenshots in " << artifacts << "):\n" << output << "\nserver log:\n"
      << test::slurp_file(dir.path / "serve.log");

  // The screenshots a reviewer looks at, each at the 1280x800 viewport.
  for (const char* name : {"login", "run-detail", "findings-filtered", "finding-updated", "atlas", "charts", "viewer-finding"}) {
    const auto [width, height] = png_size(artifacts / (std::string(name) + ".png"));
    EXPECT_EQ(width, 1280u) << name;
    EXPECT_EQ(height, 800u) << name;
  }

  // What the browser did is in the store itself: one finding triaged by the analyst, audited.
  DashboardStore db(store);
  FindingQuery accepted;
  accepted.scope = "all";
  accepted.statuses = {"accepted-risk"};
  const auto changed = db.findings(accepted);
  ASSERT_EQ(changed["total"], 1) << output;
  const auto detail = db.finding(changed["items"][0]["id"].get<std::int64_t>());
  ASSERT_TRUE(detail.has_value());
  ASSERT_FALSE((*detail)["history"].empty());
  EXPECT_EQ((*detail)["history"].back()["user"], "ana");
  bool audited = false;
  const json audit = db.audit_log(200, 0);
  for (const auto& item : audit["items"])
    if (item.value("action", "") == "finding.status" && item.value("user", "") == "ana") audited = true;
  EXPECT_TRUE(audited);
  EXPECT_TRUE(db.verify_audit_log().empty());
}

}  // namespace
}  // namespace aegis::web
