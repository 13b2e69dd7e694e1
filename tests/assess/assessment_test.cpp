// The engagement end to end with the real aegis binary running each check: plans follow the threat
// model and the inventory, results land in the store, unchanged inputs are reused, a changed model
// is retested, an interrupted assessment resumes, and the schedule reports what is due and why.
#include <gtest/gtest.h>

#include <fstream>

#include "aegis/assess/assess.h"
#include "aegis/core/error.h"
#include "test_support.h"

namespace aegis::assess {
namespace {

using nlohmann::json;

struct Workspace {
  test::TempDir dir;
  std::filesystem::path inventory;
  Workspace() {
    const auto src = test::source_dir() / "examples";
    std::filesystem::create_directories(dir.path / "models");
    std::filesystem::create_directories(dir.path / "data");
    std::filesystem::copy_file(src / "os_system_reduce.pkl", dir.path / "models/model.pt");  // a malicious pickle named .pt
    std::filesystem::copy_file(src / "assess/data/customer_feedback.csv", dir.path / "data/feedback.csv");
    std::filesystem::copy_file(src / "assess/gateway.yaml", dir.path / "gateway.yaml");
    inventory = dir.path / "inventory.yaml";
    std::ofstream(inventory) << "organisation: Test Co\npolicy: {every_days: 30}\nassets:\n"
                                "  - {id: model, kind: model, files: [models/model.pt], exposure: external, endpoint: api, criticality: high}\n"
                                "  - {id: api, kind: endpoint, url: 'http://127.0.0.1:9/v1/classify', api: classifier, gateway: gateway.yaml}\n"
                                "  - {id: feedback, kind: dataset, files: [data/feedback.csv], sensitivity: [pii], source: user-generated}\n";
  }
  std::string store() const { return (dir.path / "store.db").string(); }
  threat::Inventory load() const {
    auto load = threat::load_inventory(inventory);
    EXPECT_TRUE(load.ok());
    return load.inventory;
  }
  AssessOptions options() const {
    AssessOptions o;
    o.store = store();
    o.aegis_binary = AEGIS_CLI_PATH;
    o.only_checks = {"scan", "pii", "gateway-review", "verify", "robustness"};
    return o;
  }
};

const json& asset(const json& document, const std::string& id) {
  for (const auto& a : document["assets"])
    if (a["id"] == id) return a;
  static const json none;
  ADD_FAILURE() << "no asset " << id;
  return none;
}

std::string state(const json& document, const std::string& id, const std::string& check) {
  for (const auto& c : asset(document, id)["checks"])
    if (c["check"] == check) return c["state"];
  return "absent";
}

TEST(Assessment, PlanSaysWhyACheckCannotRunAndKeysFollowContent) {
  Workspace ws;
  const auto inventory = ws.load();
  const auto& catalog = threat::AtlasCatalog::shipped();
  const auto model = threat::build_threat_model(inventory, catalog, threat::shipped_threat_rules(catalog));
  const auto plan = plan_assessment(inventory, model, {});
  const auto& checks = plan.checks.at("model");
  auto find = [&](const std::string& name) {
    for (const auto& c : checks)
      if (c.check == name) return c;
    return PlannedCheck{};
  };
  EXPECT_EQ(find("verify").state, "not-possible");
  EXPECT_NE(find("verify").reason.find("signature"), std::string::npos);
  EXPECT_EQ(find("robustness").state, "not-possible") << "no tests.robustness in the inventory";
  EXPECT_EQ(find("scan").state, "planned");
  EXPECT_EQ(find("gateway-review").state, "planned") << "the model's endpoint has a gateway";
  // The model and its endpoint need the same gateway review: one job.
  std::size_t reviews = 0;
  for (const auto& job : plan.jobs) reviews += job.check == "gateway-review";
  EXPECT_EQ(reviews, 1u);
  const auto again = plan_assessment(inventory, model, {});
  EXPECT_EQ(again.checks.at("model")[0].job_key, checks[0].job_key) << "same inputs, same key";
  std::ofstream(ws.dir.path / "models/model.pt", std::ios::app) << "x";
  const auto changed = plan_assessment(inventory, model, {});
  for (const auto& c : changed.checks.at("model"))
    if (c.check == "scan") {
      EXPECT_NE(c.job_key, find("scan").job_key) << "a changed model file changes the scan's key";
    }
}

TEST(Assessment, RunsRecordsReusesAndRetestsWhatChanged) {
  Workspace ws;
  auto first = run_assessment(ws.load(), ws.options());
  EXPECT_EQ(first.failed, 0u);
  EXPECT_EQ(first.ran, 3u) << "scan, pii and one shared gateway review";
  const auto& doc = first.document;
  EXPECT_EQ(state(doc, "model", "scan"), "done");
  EXPECT_EQ(state(doc, "model", "verify"), "not-possible");
  EXPECT_EQ(state(doc, "feedback", "pii"), "done");
  // The scan found the os.system pickle; the gateway review found the missing rate limit.
  std::set<std::string> rules;
  for (const auto& f : asset(doc, "model")["findings"]) rules.insert(f["rule_id"]);
  EXPECT_TRUE(std::any_of(rules.begin(), rules.end(), [](const std::string& r) { return r.starts_with("pickle."); }));
  EXPECT_TRUE(rules.contains("gateway.route-without-rate-limit"));
  EXPECT_GT(asset(doc, "feedback")["findings"].size(), 10u);
  const auto& coverage = asset(doc, "model")["coverage"];
  EXPECT_GT(coverage["tested"].get<int>(), 0);
  EXPECT_LT(coverage["tested"].get<int>(), coverage["applicable"].get<int>()) << "robustness, membership, extraction were not configured";
  for (const auto& t : asset(doc, "model")["techniques"])
    if (t["id"] == "AML.T0015") {
      EXPECT_FALSE(t["tested"].get<bool>()) << "evasion needs the robustness check";
    }
  EXPECT_EQ(asset(doc, "model")["risk"]["level"], "critical") << asset(doc, "model")["risk"];

  auto second = run_assessment(ws.load(), ws.options());
  EXPECT_EQ(second.ran, 0u);
  EXPECT_EQ(second.reused, 3u);
  EXPECT_EQ(state(second.document, "model", "scan"), "reused");
  EXPECT_EQ(asset(second.document, "model")["findings"].size(), asset(doc, "model")["findings"].size());

  std::filesystem::copy_file(test::source_dir() / "examples/state_dict.pt", ws.dir.path / "models/model.pt",
                             std::filesystem::copy_options::overwrite_existing);
  auto third = run_assessment(ws.load(), ws.options());
  EXPECT_EQ(third.ran, 1u) << "only the scan of the changed model runs again";
  EXPECT_EQ(third.reused, 2u);
  EXPECT_EQ(state(third.document, "model", "scan"), "done");
  EXPECT_LT(asset(third.document, "model")["findings"].size(), asset(doc, "model")["findings"].size())
      << "the benign state dict has no code-execution findings";
}

TEST(Assessment, AnInterruptedAssessmentResumesWhereItStopped) {
  Workspace ws;
  auto options = ws.options();
  options.reuse = false;
  options.progress = [](std::size_t done, std::size_t, const std::string&) {
    if (done == 1) throw std::runtime_error("interrupted");
  };
  EXPECT_THROW(run_assessment(ws.load(), options), std::runtime_error);
  store::FindingStore store(ws.store());
  const auto listed = store.assessments(10);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].status, "running");
  const auto id = listed[0].id;
  EXPECT_EQ(store.jobs(id).size(), 1u);
  const auto partial = report_document(store, id, threat::AtlasCatalog::shipped());
  EXPECT_EQ(partial["assessment"]["status"], "running");
  options.progress = nullptr;
  options.resume = id;
  const auto resumed = run_assessment(ws.load(), options);
  EXPECT_EQ(resumed.assessment_id, id);
  EXPECT_EQ(resumed.resumed, 1u);
  EXPECT_EQ(resumed.ran, 2u);
  EXPECT_EQ(resumed.document["assessment"]["status"], "finished");
  EXPECT_EQ(store.jobs(id).size(), 3u);
}

TEST(Assessment, ACheckThatFailsIsReportedNotFatal) {
  Workspace ws;
  std::ofstream(ws.dir.path / "gateway.yaml") << "listen: [this is not, a gateway config\n";
  const auto result = run_assessment(ws.load(), ws.options());
  EXPECT_EQ(result.failed, 1u);
  EXPECT_EQ(state(result.document, "api", "gateway-review"), "failed");
  for (const auto& c : asset(result.document, "api")["checks"])
    if (c["check"] == "gateway-review") {
      EXPECT_NE(c["reason"].get<std::string>().find("gateway"), std::string::npos) << c["reason"];
    }
  EXPECT_EQ(result.document["summary"]["checks_failed"], 2) << "both assets that need the review see it fail";
}

TEST(Assessment, ResidualRiskFollowsFindingsCoverageAndCriticality) {
  using core::Severity;
  const auto none = residual_risk({}, 10, 10, "medium", "internal");
  EXPECT_EQ(none.level, "low");
  const auto untested = residual_risk({}, 10, 0, "medium", "internal");
  EXPECT_GT(untested.score, none.score) << "untested techniques are unknowns, not safety";
  const auto critical = residual_risk({Severity::Critical}, 10, 10, "critical", "external");
  EXPECT_EQ(critical.score, 100);
  EXPECT_EQ(critical.level, "critical");
  EXPECT_LT(residual_risk({Severity::Critical}, 10, 10, "low", "internal").score, critical.score);
  EXPECT_GT(residual_risk({Severity::High}, 10, 10, "high", "external").score, residual_risk({Severity::Low}, 10, 10, "high", "external").score);
  EXPECT_NE(critical.rationale.find("1 critical"), std::string::npos);
}

TEST(Schedule, DueByPolicyForTheRightReasons) {
  Workspace ws;
  const auto& catalog = threat::AtlasCatalog::shipped();
  {
    store::FindingStore store(ws.store());
    for (const auto& d : due_assets(ws.load(), store, catalog, std::chrono::system_clock::now())) {
      EXPECT_TRUE(d.due);
      EXPECT_EQ(d.reasons, std::vector<std::string>{"never assessed"});
    }
  }
  const auto first = run_assessment(ws.load(), ws.options());
  store::FindingStore store(ws.store());
  const auto now = std::chrono::system_clock::now();
  for (const auto& d : due_assets(ws.load(), store, catalog, now)) {
    EXPECT_FALSE(d.due) << d.asset << ": " << (d.reasons.empty() ? "" : d.reasons[0]);
    EXPECT_EQ(d.last_assessment, first.assessment_id);
    EXPECT_FALSE(d.next_due_at.empty());
  }
  // 31 days later the monthly policy makes everything due.
  for (const auto& d : due_assets(ws.load(), store, catalog, now + std::chrono::hours(24 * 31))) {
    EXPECT_TRUE(d.due);
    EXPECT_NE(d.reasons.at(0).find("every 30 days"), std::string::npos);
  }
  // A changed model file makes only the model due.
  std::ofstream(ws.dir.path / "models/model.pt", std::ios::app) << "tampered";
  for (const auto& d : due_assets(ws.load(), store, catalog, now)) {
    EXPECT_EQ(d.due, d.asset == "model") << d.asset;
    if (d.asset == "model") {
      EXPECT_NE(d.reasons.at(0).find("changed since the last assessment"), std::string::npos);
    }
  }
  // A fix claimed on the dataset's findings makes it due for a retest.
  const auto doc = report_document(store, first.assessment_id, catalog);
  store.set_status(asset(doc, "feedback")["findings"][0]["finding_id"].get<std::int64_t>(), store::kStatusFixed);
  bool feedback_due = false;
  for (const auto& d : due_assets(ws.load(), store, catalog, now))
    if (d.asset == "feedback") feedback_due = d.due && d.reasons.at(0).find("marked fixed") != std::string::npos;
  EXPECT_TRUE(feedback_due);
  // A new ATLAS release makes everything due.
  const auto newer = threat::AtlasCatalog::parse(
      "version: 9.0.0\nmatrices:\n- id: ATLAS\n  tactics: [{id: AML.TA0001, name: S}]\n  techniques: [{id: AML.T0015, name: E, tactics: [AML.TA0001]}]\n",
      "newer.yaml");
  for (const auto& d : due_assets(ws.load(), store, newer, now)) {
    EXPECT_TRUE(d.due);
    EXPECT_TRUE(std::any_of(d.reasons.begin(), d.reasons.end(), [](const std::string& r) { return r.find("ATLAS 9.0.0") != std::string::npos; }));
  }
}

}  // namespace
}  // namespace aegis::assess

namespace aegis::assess {
namespace {

// The verify check: a signed model folder verifies, a swapped file is a finding and a new job.
TEST(Assessment, VerifyCheckFollowsTheSignature) {
  test::TempDir dir;
  std::filesystem::create_directories(dir.path / "model");
  std::filesystem::copy_file(test::source_dir() / "examples/state_dict.pt", dir.path / "model/weights.pt");
  std::ofstream(dir.path / "model/config.json") << "{}";
  ::setenv("AEGIS_KEY_PASSPHRASE", "assessment test", 1);
  ASSERT_EQ(test::run_cli({"keygen", "--out", (dir.path / "signer").string()}).exit_code, 0);
  ASSERT_EQ(test::run_cli({"sign", (dir.path / "model").string(), "--key", (dir.path / "signer.pem").string(), "--signature",
                           (dir.path / "model.sig").string()}).exit_code, 0);
  std::ofstream(dir.path / "inventory.yaml") << "assets:\n  - {id: m, kind: model, files: [model/weights.pt, model/config.json], "
                                                "signature: model.sig, signature_key: signer.pub.pem}\n";
  auto load = threat::load_inventory(dir.path / "inventory.yaml");
  ASSERT_TRUE(load.ok());
  AssessOptions options;
  options.store = (dir.path / "store.db").string();
  options.aegis_binary = AEGIS_CLI_PATH;
  options.only_checks = {"verify"};
  const auto signed_ok = run_assessment(load.inventory, options);
  EXPECT_EQ(state(signed_ok.document, "m", "verify"), "done");
  EXPECT_TRUE(asset(signed_ok.document, "m")["findings"].empty()) << asset(signed_ok.document, "m")["findings"].dump();
  bool tested = false;
  for (const auto& t : asset(signed_ok.document, "m")["techniques"])
    if (t["id"] == "AML.T0010.003") tested = t["tested"];
  EXPECT_TRUE(tested) << "the signature is evidence about model supply-chain compromise";
  std::ofstream(dir.path / "model/config.json") << "{\"swapped\": true}";
  const auto swapped = run_assessment(load.inventory, options);
  EXPECT_EQ(swapped.ran, 1u) << "a changed file is a new verify job";
  EXPECT_FALSE(asset(swapped.document, "m")["findings"].empty());
}

}  // namespace
}  // namespace aegis::assess
