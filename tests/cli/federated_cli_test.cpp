// `aegis federated` as an operator runs it: init makes the certificates, serve and three join
// processes train over mutual TLS, one leaves in round 3, the aggregator is killed with SIGKILL while
// it waits for that straggler and is restarted, and training finishes from its saved state with the
// remaining participants reconnecting on their own.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sys/stat.h>

#include "support/background_process.h"
#include "test_support.h"

namespace aegis {
namespace {

using nlohmann::json;
using test::Background;
using test::run_cli;
using test::slurp_file;

std::uint16_t free_port() {
  // Bind to port 0 and read the number back; closed again before the aggregator takes it.
  const auto out = run_cli({"--version"});  // warm the binary; also checks that it runs
  EXPECT_EQ(out.exit_code, 0);
  FILE* pipe = ::popen("/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); print(s.getsockname()[1])'", "r");
  char buffer[16] = {0};
  const bool ok = pipe && std::fgets(buffer, sizeof buffer, pipe) != nullptr;
  if (pipe) ::pclose(pipe);
  return ok ? static_cast<std::uint16_t>(std::atoi(buffer)) : 0;
}

TEST(FederatedCli, InitWritesPrivateKeysOnlyItsOwnerCanReadAndRefusesToOverwriteTheCa) {
  test::TempDir dir("aegis_fl_init");
  const auto pki = dir.path / "pki";
  auto init = run_cli({"federated", "init", "--dir", pki.string(), "--participants", "2"});
  ASSERT_EQ(init.exit_code, 0) << init.err;
  for (const auto* name : {"ca.pem", "ca.key", "aggregator.pem", "aggregator.key", "participants/participant-0.pem",
                           "participants/participant-1.key"})
    EXPECT_TRUE(std::filesystem::exists(pki / name)) << name;
  struct stat info {};
  ASSERT_EQ(::stat((pki / "participants/participant-1.key").c_str(), &info), 0);
  EXPECT_EQ(info.st_mode & 0777, 0600u);
  auto again = run_cli({"federated", "init", "--dir", pki.string(), "--participants", "2"});
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("what to do:"), std::string::npos) << again.err;
  auto add = run_cli({"federated", "init", "--dir", pki.string(), "--add", "hospital-7"});
  EXPECT_EQ(add.exit_code, 0) << add.err;
  EXPECT_TRUE(std::filesystem::exists(pki / "participants/hospital-7.pem"));
}

TEST(FederatedCli, TrainingSurvivesAnAggregatorKilledMidTrainingAndRestarted) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  test::TempDir dir("aegis_fl_cli");
  const auto model = dir.path / "mlp.pt";
  ASSERT_EQ(std::system(("/usr/bin/python3 -c \"import torch, torch.nn as nn; torch.manual_seed(1); "
                         "torch.jit.script(nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10)))"
                         ".save('" + model.string() + "')\"").c_str()),
            0)
      << "python3-torch must be installed";
  const auto pki = dir.path / "pki";
  ASSERT_EQ(run_cli({"federated", "init", "--dir", pki.string(), "--participants", "3"}).exit_code, 0);
  const auto port = free_port();
  ASSERT_NE(port, 0);
  {
    std::ofstream config(dir.path / "fl.yaml");
    config << "federation: {pki: pki, listen: 127.0.0.1:" << port << ", state: state}\n"
           << "model: {torchscript: mlp.pt, input_shape: [1, 28, 28]}\n"
           << "training: {rounds: 4, participants_per_round: 3, min_participants: 2, round_deadline_s: 120, learning_rate: 0.02}\n"
           << "evaluation: {data: /usr/share/datasets/fashion-mnist, limit: 1000}\n";
  }
  const std::vector<std::string> serve = {"federated", "serve", "--config", (dir.path / "fl.yaml").string(), "--format", "json",
                                          "--output", (dir.path / "report.json").string()};
  auto aggregator = std::make_unique<Background>(serve, dir.path / "aggregator-1.log");
  std::vector<std::unique_ptr<Background>> participants;
  for (int i = 0; i < 3; ++i)
    participants.push_back(std::make_unique<Background>(
        std::vector<std::string>{"federated", "join", "--aggregator", "127.0.0.1:" + std::to_string(port), "--pki", pki.string(), "--id",
                                 "participant-" + std::to_string(i), "--model", model.string(), "--limit", "1500", "--partition",
                                 std::to_string(i) + "/3", "--drop-at-round", i == 2 ? "3" : "0", "--drop-at-stage", "train"},
        dir.path / ("participant-" + std::to_string(i) + ".log")));
  // participant-2 leaves in round 3, which therefore waits for its deadline: the kill lands mid-round.
  ASSERT_TRUE(aggregator->wait_for_log("round 2 done", std::chrono::seconds(120))) << slurp_file(aggregator->log);
  ASSERT_EQ(participants[2]->wait(std::chrono::seconds(60)), 3) << slurp_file(participants[2]->log);
  aggregator.reset();  // SIGKILL: no goodbye, the round in flight is lost
  aggregator = std::make_unique<Background>(serve, dir.path / "aggregator-2.log");
  ASSERT_EQ(aggregator->wait(std::chrono::seconds(180)), 0) << slurp_file(aggregator->log);
  for (int i = 0; i < 2; ++i) EXPECT_EQ(participants[i]->wait(std::chrono::seconds(60)), 0) << slurp_file(participants[i]->log);

  const auto restarted = slurp_file(aggregator->log);
  EXPECT_NE(restarted.find("resumed from"), std::string::npos) << restarted;
  const auto report = json::parse(slurp_file(dir.path / "report.json"));
  EXPECT_EQ(report["resumed_from"].get<int>(), 2);
  ASSERT_EQ(report["rounds"].size(), 4u) << "the rounds before the kill are kept in the history";
  for (int r = 0; r < 4; ++r) EXPECT_EQ(report["rounds"][r]["round"].get<int>(), r + 1);
  EXPECT_GT(report["final_accuracy"].get<double>(), 0.3) << "three times chance: the model learned across the restart";
  EXPECT_TRUE(std::filesystem::exists(report["model"].get<std::string>()));
  // The participants noticed that the new aggregator did not know them and joined again by themselves.
  for (int i = 0; i < 2; ++i) {
    const auto log = slurp_file(dir.path / ("participant-" + std::to_string(i) + ".log"));
    std::size_t joins = 0;
    for (auto at = log.find("joined with"); at != std::string::npos; at = log.find("joined with", at + 1)) ++joins;
    EXPECT_EQ(joins, 2u) << log;
  }
}

}  // namespace
}  // namespace aegis
