// The engagement commands as a user runs them: inventory validate/discover, threat-model, assess,
// report, schedule — and assess with `aegis worker`s on Redis Streams and a shared PostgreSQL store,
// one worker killed mid-job.
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "aegis/store/finding_store.h"
#include "gateway/redis_server.h"
#include "support/background_process.h"
#include "support/postgres_server.h"
#include "support/scripted_chat_server.h"
#include "test_support.h"

extern char** environ;

namespace aegis {
namespace {

using nlohmann::json;
using test::Background;
using test::run_cli;

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}


TEST(AssessCli, InventoryValidateExplainsEachErrorByLine) {
  test::TempDir dir;
  const auto file = (dir.path / "inventory.yaml").string();
  std::ofstream(file) << "assets:\n  - id: a\n    kind: robot\n  - id: b\n    kind: model\n    exposure: public\n    datasets: [c]\n";
  const auto result = run_cli({"inventory", "validate", file});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_NE(result.out.find(file + ":3:"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("robot"), std::string::npos);
  EXPECT_NE(result.out.find(file + ":6:"), std::string::npos) << result.out;
  EXPECT_NE(result.out.find("dataset 'c'"), std::string::npos);
  const auto as_json = run_cli({"inventory", "validate", file, "--format", "json"});
  const auto doc = json::parse(as_json.out);
  EXPECT_FALSE(doc["valid"].get<bool>());
  EXPECT_GE(doc["issues"].size(), 3u);
  // assess refuses the same file with the errors listed and exit 2.
  const auto assess = run_cli({"assess", file, "--store", (dir.path / "s.db").string()});
  EXPECT_EQ(assess.exit_code, 2);
  EXPECT_NE(assess.err.find("inventory validate"), std::string::npos) << assess.err;
}

TEST(AssessCli, DiscoverThenThreatModel) {
  test::TempDir dir;
  std::filesystem::create_directories(dir.path / "repo/models");
  std::filesystem::copy_file(test::source_dir() / "examples/fashion-mnist/model.pt", dir.path / "repo/models/classifier.pt");
  std::filesystem::copy(test::source_dir() / "examples/infra", dir.path / "repo/deploy", std::filesystem::copy_options::recursive);
  const auto inventory = (dir.path / "repo/inventory.yaml").string();
  const auto discover = run_cli({"inventory", "discover", (dir.path / "repo").string(), "--output", inventory});
  ASSERT_EQ(discover.exit_code, 0) << discover.err;
  EXPECT_EQ(run_cli({"inventory", "validate", inventory}).exit_code, 0);
  const auto model = run_cli({"threat-model", inventory, "--format", "json", "--quiet"});
  ASSERT_EQ(model.exit_code, 0) << model.err;
  const auto doc = json::parse(model.out);
  EXPECT_EQ(doc["atlas_version"], "5.6.0");
  std::set<std::string> kinds;
  for (const auto& a : doc["assets"]) {
    kinds.insert(a["kind"]);
    EXPECT_FALSE(a["techniques"].empty()) << a["id"];
  }
  EXPECT_TRUE(kinds.contains("model"));
  EXPECT_TRUE(kinds.contains("pipeline"));
  EXPECT_EQ(doc["stride"].size(), 6u);
  const auto stride = run_cli({"threat-model", inventory, "--view", "stride", "--quiet"});
  EXPECT_NE(stride.out.find("tampering"), std::string::npos);
}

TEST(AssessCli, AssessReportAndSchedule) {
  test::TempDir dir;
  std::filesystem::create_directories(dir.path / "data");
  std::filesystem::copy_file(test::source_dir() / "examples/os_system_reduce.pkl", dir.path / "model.pt");
  std::filesystem::copy_file(test::source_dir() / "examples/assess/data/customer_feedback.csv", dir.path / "data/feedback.csv");
  std::filesystem::copy_file(test::source_dir() / "examples/assess/gateway.yaml", dir.path / "gateway.yaml");
  const auto inventory = (dir.path / "inventory.yaml").string();
  std::ofstream(inventory) << "assets:\n"
                              "  - {id: model, kind: model, files: [model.pt], exposure: external, endpoint: api}\n"
                              "  - {id: api, kind: endpoint, url: 'http://127.0.0.1:9/x', api: classifier, gateway: gateway.yaml}\n"
                              "  - {id: feedback, kind: dataset, files: [data/feedback.csv], sensitivity: [pii], source: internal}\n";
  const auto store = (dir.path / "store.db").string();
  const auto html = (dir.path / "report.html").string();
  const auto assess = run_cli({"assess", inventory, "--store", store, "--format", "json", "--html", html});
  EXPECT_EQ(assess.exit_code, 1) << "critical findings: " << assess.err;
  const auto doc = json::parse(assess.out);
  EXPECT_EQ(doc["assessment"]["status"], "finished");
  EXPECT_EQ(doc["summary"]["checks_failed"], 0);
  EXPECT_GT(doc["findings"].size(), 5u);
  EXPECT_NE(slurp(html).find("<!DOCTYPE html>"), std::string::npos);

  const auto sarif = run_cli({"report", "--store", store, "--format", "sarif"});
  EXPECT_EQ(sarif.exit_code, 1);
  const auto sarif_doc = json::parse(sarif.out);
  EXPECT_EQ(sarif_doc["version"], "2.1.0");
  EXPECT_EQ(sarif_doc["runs"][0]["results"].size(), doc["findings"].size());
  const auto markdown = run_cli({"report", "latest", "--store", store, "--format", "markdown"});
  EXPECT_NE(markdown.out.find("model"), std::string::npos);
  const auto list = run_cli({"report", "--list", "--store", store});
  EXPECT_NE(list.out.find("finished"), std::string::npos);
  EXPECT_EQ(run_cli({"report", "99", "--store", store}).exit_code, 2);

  const auto schedule = run_cli({"schedule", inventory, "--store", store, "--format", "json", "--quiet"});
  ASSERT_EQ(schedule.exit_code, 0) << schedule.err;
  EXPECT_EQ(json::parse(schedule.out)["due"], 0);
  // Marking a finding fixed makes its asset due for a retest.
  std::int64_t feedback_finding = 0;
  for (const auto& f : doc["findings"])
    if (f["asset"] == "feedback") feedback_finding = f["finding_id"];
  ASSERT_NE(feedback_finding, 0);
  EXPECT_EQ(run_cli({"report", "--store", store, "--set-status", std::to_string(feedback_finding) + "=fixed", "--format", "json"}).exit_code, 1);
  const auto due = json::parse(run_cli({"schedule", inventory, "--store", store, "--format", "json", "--quiet"}).out);
  EXPECT_EQ(due["due"], 1);
  const auto cron = run_cli({"schedule", inventory, "--store", store, "--cron", "--at", "02:30", "--quiet"});
  EXPECT_NE(cron.out.find("30 2 * * * "), std::string::npos) << cron.out;
  EXPECT_NE(cron.out.find(" assess "), std::string::npos);
  EXPECT_NE(cron.out.find("--only-due"), std::string::npos);
  const auto systemd = run_cli({"schedule", inventory, "--store", store, "--systemd", "--quiet"});
  EXPECT_NE(systemd.out.find("OnCalendar=*-*-* 03:17:00"), std::string::npos);
  // Only the due asset is assessed again.
  const auto only_due = json::parse(run_cli({"assess", inventory, "--store", store, "--only-due", "--format", "json"}).out);
  ASSERT_EQ(only_due["assets"].size(), 1u);
  EXPECT_EQ(only_due["assets"][0]["id"], "feedback");
}

TEST(AssessCli, WorkersOnRedisStreamsWithAKilledWorkerRecordEachJobOnceInPostgres) {
  test::PostgresServerProcess postgres;
  ASSERT_TRUE(postgres.start()) << postgres.why();
  test::RedisServerProcess redis;
  ASSERT_TRUE(redis.start()) << redis.why();
  test::ScriptedServerOptions chat_options;
  chat_options.latency_ms = 400;  // the red-team job runs for seconds: long enough to kill its worker
  test::ScriptedChatServer chat(chat_options);
  test::TempDir dir;
  std::filesystem::copy_file(test::source_dir() / "examples/state_dict.pt", dir.path / "model.pt");
  std::filesystem::copy_file(test::source_dir() / "examples/assess/gateway.yaml", dir.path / "gateway.yaml");
  const auto inventory = (dir.path / "inventory.yaml").string();
  std::ofstream(inventory) << "assets:\n"
                              "  - {id: model, kind: model, files: [model.pt]}\n"
                              "  - id: bot\n    kind: endpoint\n    api: openai-chat\n    gateway: gateway.yaml\n"
                              "    url: http://127.0.0.1:" << chat.port() << "/v1\n"
                              "    tests: {redteam: {model: scripted, probes: [direct-injection, system-prompt-extraction], transforms: [none]}}\n";
  const auto store = postgres.create_database();
  Background coordinator({"assess", inventory, "--store", store, "--workers", redis.url(), "--format", "json", "--output",
                          (dir.path / "doc.json").string()},
                         dir.path / "coordinator.log");
  ASSERT_TRUE(coordinator.wait_for_log("queued", std::chrono::seconds(60))) << slurp(coordinator.log);
  auto a = std::make_unique<Background>(std::vector<std::string>{"worker", "--queue", redis.url(), "--store", store, "--name", "worker-a",
                                                                 "--claim-idle-ms", "1500"},
                                        dir.path / "a.log");
  ASSERT_TRUE(a->wait_for_log("bot redteam", std::chrono::seconds(60))) << slurp(a->log);
  a.reset();  // SIGKILL mid-job: the red-team job stays pending under worker-a
  Background b({"worker", "--queue", redis.url(), "--store", store, "--name", "worker-b", "--claim-idle-ms", "1500"}, dir.path / "b.log");
  ASSERT_EQ(coordinator.wait(std::chrono::seconds(240)), 1) << slurp(coordinator.log) << slurp(b.log);
  EXPECT_NE(slurp(b.log).find("taken over from a silent worker"), std::string::npos) << slurp(b.log);
  const auto doc = json::parse(slurp(dir.path / "doc.json"));
  EXPECT_EQ(doc["assessment"]["status"], "finished");
  for (const auto& asset : doc["assets"])
    for (const auto& check : asset["checks"])
      if (check["state"] != "not-possible") {
        EXPECT_EQ(check["state"], "done") << asset["id"] << " " << check["check"] << ": " << check["reason"];
      }
  // Exactly once: one job row and one run per job key, however many workers touched it.
  store::FindingStore shared(store);
  const auto id = doc["assessment"]["id"].get<std::int64_t>();
  std::map<std::string, int> rows;
  for (const auto& job : shared.jobs(id)) ++rows[job.job_key];
  EXPECT_FALSE(rows.empty());
  for (const auto& [key, n] : rows) EXPECT_EQ(n, 1) << key;
  store::RunFilter filter;
  filter.command = "assess:redteam";
  EXPECT_EQ(shared.runs(filter).size(), 1u);
}

}  // namespace
}  // namespace aegis
