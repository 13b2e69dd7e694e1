// `aegis audit-infra` as a user runs it: a deployment folder and a live service in one run, the four
// report formats, exit codes, the store, the rule listing and the errors.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "aegis/store/finding_store.h"
#include "support/replay_http_server.h"
#include "test_support.h"

namespace aegis::test {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

fs::path cases() { return source_dir() / "tests" / "infra" / "cases"; }

// Ollama as its API documentation shows it: no authentication, /api/version and /api/tags.
ReplayHttpServer::Routes ollama_routes(const std::string& version) {
  ReplayHttpServer::Routes routes;
  routes[{"GET", "/"}] = {200, {{"Content-Type", "text/plain; charset=utf-8"}}, "Ollama is running"};
  routes[{"GET", "/api/version"}] = {200, {{"Content-Type", "application/json; charset=utf-8"}}, "{\"version\":\"" + version + "\"}"};
  routes[{"GET", "/api/tags"}] = {200, {{"Content-Type", "application/json; charset=utf-8"}},
                                  R"({"models":[{"name":"llama3:8b","model":"llama3:8b","size":4661224676,"digest":"365c0bd3c000a25d28ddbf732fe1c6add414de7275464c4e4d1c3b5fcb5d8ad1"}]})"};
  return routes;
}

TEST(AuditInfraCli, FolderAndLiveServiceInOneJsonReport) {
  ReplayHttpServer ollama(ollama_routes("0.1.30"));
  const std::string target = "127.0.0.1:" + std::to_string(ollama.port());
  const auto result = run_cli({"audit-infra", (cases() / "torchserve-open").string(), "--target", target, "--format", "json",
                               "--quiet", "--rate", "50"});
  ASSERT_EQ(result.exit_code, 1) << result.err;  // critical findings, default --fail-on high
  const auto report = json::parse(result.out);
  EXPECT_EQ(report["aegis"]["command"], "audit-infra");
  std::set<std::string> ids;
  for (const auto& f : report["findings"]) {
    ids.insert(f["rule_id"].get<std::string>());
    EXPECT_FALSE(f["atlas"].empty()) << f.dump();
    EXPECT_FALSE(f["remediation"].get<std::string>().empty());
  }
  EXPECT_TRUE(ids.count("infra.torchserve.management-api-exposed"));
  EXPECT_TRUE(ids.count("infra.ollama.detected"));
  EXPECT_TRUE(ids.count("infra.ollama.cve-2024-37032")) << "0.1.30 is below the fixed 0.1.34";
  EXPECT_EQ(report["static"]["files_reviewed"], 2);
  ASSERT_EQ(report["live"]["services"].size(), 1u);
  EXPECT_EQ(report["live"]["services"][0]["service"], "ollama");
  EXPECT_EQ(report["live"]["services"][0]["version"], "0.1.30");
  const std::set<std::string> read_only = {"GET", "HEAD", "OPTIONS"};
  for (const auto& request : ollama.requests()) EXPECT_TRUE(read_only.count(request.method)) << request.method << " " << request.target;
}

TEST(AuditInfraCli, SarifMarkdownTableAndFailOn) {
  const std::string folder = (cases() / "dockerfile-risky").string();
  const auto sarif = run_cli({"audit-infra", folder, "--format", "sarif", "--quiet"});
  ASSERT_EQ(sarif.exit_code, 1) << sarif.err;
  const auto doc = json::parse(sarif.out);
  EXPECT_EQ(doc["version"], "2.1.0");
  std::set<std::string> rules;
  for (const auto& r : doc["runs"][0]["tool"]["driver"]["rules"]) rules.insert(r["id"].get<std::string>());
  EXPECT_TRUE(rules.count("infra.docker.secret-in-env"));
  EXPECT_FALSE(doc["runs"][0]["results"].empty());

  const auto markdown = run_cli({"audit-infra", folder, "--format", "markdown", "--quiet"});
  EXPECT_NE(markdown.out.find("infra.docker.model-download-plain-http"), std::string::npos);

  const auto table = run_cli({"audit-infra", folder, "--format", "table", "--quiet"});
  EXPECT_NE(table.out.find("infra.docker.user-root"), std::string::npos);

  // Only medium and below in the careful folder's neighbour: --fail-on decides the exit code.
  const auto careful = run_cli({"audit-infra", (cases() / "dockerfile-careful").string(), "--format", "json", "--quiet"});
  EXPECT_EQ(careful.exit_code, 0) << careful.out;
  const auto gradio = run_cli({"audit-infra", (cases() / "gradio-open").string(), "--format", "json", "--quiet"});
  EXPECT_EQ(gradio.exit_code, 0) << "a medium finding is below the default --fail-on high";
  const auto strict = run_cli({"audit-infra", (cases() / "gradio-open").string(), "--format", "json", "--quiet", "--fail-on", "medium"});
  EXPECT_EQ(strict.exit_code, 1);
}

TEST(AuditInfraCli, RunsAreRecordedInTheStorePerAsset) {
  TempDir dir;
  const auto db = dir.path / "aegis.db";
  const auto first = run_cli({"audit-infra", (cases() / "k8s-risky").string(), "--store", db.string(), "--asset",
                              "llm-prod", "--format", "json", "--quiet"});
  ASSERT_EQ(first.exit_code, 1) << first.err;
  const auto second = run_cli({"audit-infra", (cases() / "k8s-hardened").string(), "--store", db.string(), "--asset",
                               "llm-prod", "--format", "json", "--quiet"});
  ASSERT_EQ(second.exit_code, 0) << second.err;
  const auto printed = json::parse(first.out)["findings"].size();

  store::FindingStore store(db);
  const auto latest = store.latest_run("audit-infra", "llm-prod");
  ASSERT_TRUE(latest.has_value());
  store::RunFilter filter;
  filter.command = "audit-infra";
  filter.asset = "llm-prod";
  const auto runs = store.runs(filter);
  ASSERT_EQ(runs.size(), 2u);
  const auto older = runs.back();
  EXPECT_EQ(store.findings(older.id).size(), printed) << "the store holds what the report showed";
  EXPECT_EQ(older.exit_code, 1);
  const auto diff = store.diff_runs(older.id, runs.front().id);
  EXPECT_EQ(diff.fixed.size(), printed) << "the hardened manifest fixes every finding of the risky one";
}

TEST(AuditInfraCli, ListsRulesWithTheirReferences) {
  const auto listing = run_cli({"audit-infra", "--list-rules", "--format", "json"});
  ASSERT_EQ(listing.exit_code, 0) << listing.err;
  const auto rules = json::parse(listing.out);
  ASSERT_GT(rules.size(), 60u);
  bool shadowray = false;
  std::set<std::string> kinds;
  for (const auto& r : rules) {
    kinds.insert(r["kind"].get<std::string>());
    if (r["id"] == "infra.ray.dashboard-exposed") shadowray = r["cve"][0] == "CVE-2023-48022";
  }
  EXPECT_TRUE(shadowray);
  for (const char* kind : {"command", "properties", "dockerfile", "compose", "kubernetes", "workflow", "notebook", "probe"})
    EXPECT_TRUE(kinds.count(kind)) << kind;
}

TEST(AuditInfraCli, UsageErrorsExitTwoWithWhatToDo) {
  const auto nothing = run_cli({"audit-infra"});
  EXPECT_EQ(nothing.exit_code, 2);
  EXPECT_NE(nothing.err.find("--target"), std::string::npos) << nothing.err;

  const auto range = run_cli({"audit-infra", "--target", "10.0.0.0/24"});
  EXPECT_EQ(range.exit_code, 2);
  EXPECT_FALSE(range.err.empty());

  const auto remote = run_cli({"audit-infra", "--target", "192.0.2.10:8888", "--quiet"});
  EXPECT_EQ(remote.exit_code, 2);
  EXPECT_NE(remote.err.find("--allow-remote"), std::string::npos) << remote.err;

  const auto missing = run_cli({"audit-infra", "/no/such/folder"});
  EXPECT_EQ(missing.exit_code, 2);

  TempDir dir;
  const auto bad = dir.path / "bad.yaml";
  std::ofstream(bad) << "service: x\nrules:\n  - id: infra.x.y\n    severity: high\n    title: t\n    atlas: [AML.T0049]\n"
                        "    remediation: r\n    command: {program: '(oops'}\n";
  const auto rules = run_cli({"audit-infra", (cases() / "ray-head").string(), "--rules", bad.string()});
  EXPECT_EQ(rules.exit_code, 2);
  EXPECT_NE(rules.err.find("bad.yaml:"), std::string::npos) << rules.err;

  const auto asset = run_cli({"audit-infra", (cases() / "ray-head").string(), "--asset", "x"});
  EXPECT_EQ(asset.exit_code, 2);
}

}  // namespace
}  // namespace aegis::test
