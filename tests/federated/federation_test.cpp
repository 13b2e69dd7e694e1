// The aggregator and its participants end to end, in one process over real mutual-TLS loopback
// connections: a small MLP written by PyTorch, real Fashion-MNIST, the protocol's promises checked
// against what actually crossed the wire.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <future>
#include <map>
#include <mutex>
#include <sstream>
#include <functional>
#include <thread>

#include "aegis/core/error.h"
#include "aegis/federated/federated.h"
#include "aegis/federated/pki.h"
#include "aegis/federated/secure_aggregation.h"
#include "aegis/federated/transport.h"
#include "aegis/federated/wire.h"
#include "aegis/models/dataset.h"
#include "aegis/models/torchscript_classifier.h"
#include "aegis/models/training.h"
#include "test_support.h"

namespace aegis::federated {
namespace {

using aegis::test::TempDir;

// One TorchScript MLP made once per test binary run (torch.jit.script of an nn.Sequential).
std::filesystem::path small_model(const std::filesystem::path& dir) {
  const auto path = dir / "mlp.pt";
  const std::string command = "/usr/bin/python3 -c \"import torch, torch.nn as nn; torch.manual_seed(0); "
                              "m = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10)); "
                              "torch.jit.script(m).save('" + path.string() + "')\"";
  if (std::system(command.c_str()) != 0) throw std::runtime_error("python3 with torch (python3-torch) must be installed");
  return path;
}

std::vector<float> read_floats(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  std::vector<float> values;
  EXPECT_TRUE(wire::bytes_to_floats(bytes.str(), values));
  return values;
}

class Federation : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("aegis_federation");
    model_ = small_model(dir_->path);
    PkiOptions options;
    for (int i = 0; i < 8; ++i) options.participants.push_back("participant-" + std::to_string(i));
    create_federation_pki(dir_->path / "pki", options);
    PkiOptions rogue;
    rogue.participants = {"participant-0"};
    create_federation_pki(dir_->path / "rogue", rogue);
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }

  void SetUp() override {
    AEGIS_SKIP_WITHOUT_FASHION_MNIST();
    state_ = std::make_unique<TempDir>("aegis_federation_state");
  }

  FederationConfig config(std::uint32_t participants, std::uint64_t rounds) const {
    FederationConfig c;
    c.pki_dir = dir_->path / "pki";
    c.listen_port = 0;
    c.state_dir = state_->path;
    c.model = model_;
    c.input_shape = {1, 28, 28};
    c.rounds = rounds;
    c.participants_per_round = participants;
    c.min_participants = participants;
    c.join_timeout_s = 120;
    c.round_deadline_s = 60;
    c.learning_rate = 0.05;
    c.optimizer = "sgd";
    c.batch = 32;
    c.evaluation_data = models_dir();
    c.evaluation_split = "test";
    c.evaluation_limit = 1000;
    c.population = participants;
    c.dp.population = participants;
    c.dp.per_round = participants;
    return c;
  }

  static std::string models_dir() { return "/usr/share/datasets/fashion-mnist"; }

  ParticipantOptions participant(int index, int of) const {
    ParticipantOptions p;
    FederationPki pki{dir_->path / "pki"};
    const auto id = "participant-" + std::to_string(index);
    p.ca_file = pki.ca_certificate();
    p.certificate_file = pki.participant_certificate(id);
    p.key_file = pki.participant_key(id);
    p.model = model_;
    p.data = models_dir();
    p.data_split = "train";
    p.data_limit = 600 * static_cast<std::size_t>(of);
    p.partition_index = static_cast<std::uint32_t>(index);
    p.partition_count = static_cast<std::uint32_t>(of);
    p.partition_scheme = "dirichlet";
    p.partition_alpha = 1.0;
    p.give_up_s = 30;
    return p;
  }

  struct Run {
    FederationResult result;
    std::vector<ParticipantResult> participants;
    std::vector<std::string> log;
    std::map<std::string, std::vector<std::string>> masked_bodies;  // participant -> every masked message received
    std::vector<std::string> bodies;                                 // every body the aggregator received
    std::map<std::pair<std::string, std::uint64_t>, std::vector<float>> updates;  // (participant, round) -> delta
  };

  // Runs the aggregator on this thread's behalf and each participant on its own thread.
  Run run(const FederationConfig& c, std::vector<ParticipantOptions> participants,
          const std::function<void(std::uint16_t port)>& alongside = {}) {
    Run run;
    std::mutex mutex;
    std::promise<std::uint16_t> listening;
    auto port = listening.get_future();
    AggregatorRunOptions options;
    options.log = [&](const std::string& line) {
      std::lock_guard lock(mutex);
      run.log.push_back(line);
    };
    options.on_listening = [&](std::uint16_t p) { listening.set_value(p); };
    options.on_receive = [&](const std::string& participant, const std::string& action, const std::string& body) {
      std::lock_guard lock(mutex);
      run.bodies.push_back(body);
      if (action == "masked") run.masked_bodies[participant].push_back(body);
    };
    std::exception_ptr aggregator_error;
    std::thread aggregator([&] {
      try {
        run.result = run_aggregator(c, options);
      } catch (...) {
        aggregator_error = std::current_exception();
        try {
          listening.set_value(0);
        } catch (...) {
        }
      }
    });
    const auto bound = port.get();
    if (alongside && bound != 0) alongside(bound);
    run.participants.resize(participants.size());
    std::vector<std::thread> threads;
    std::vector<std::exception_ptr> errors(participants.size());
    for (std::size_t i = 0; i < participants.size(); ++i) {
      auto& p = participants[i];
      p.aggregator_port = bound;
      const auto id = "participant-" + std::to_string(p.partition_index);
      p.log = [&](const std::string& line) {
        std::lock_guard lock(mutex);
        run.log.push_back(line);
      };
      p.on_update = [&run, &mutex, id](std::uint64_t round, std::span<const float> delta) {
        std::lock_guard lock(mutex);
        run.updates[{id, round}] = std::vector<float>(delta.begin(), delta.end());
      };
      threads.emplace_back([&, i] {
        try {
          run.participants[i] = run_participant(participants[i]);
        } catch (...) {
          errors[i] = std::current_exception();
        }
      });
    }
    for (auto& t : threads) t.join();
    aggregator.join();
    if (aggregator_error || std::any_of(errors.begin(), errors.end(), [](const auto& e) { return bool(e); })) {
      std::string lines;
      for (const auto& line : run.log) lines += line + "\n";
      ADD_FAILURE() << "the federation failed; its log:\n" << lines;
    }
    if (aggregator_error) std::rethrow_exception(aggregator_error);
    for (auto& e : errors)
      if (e) std::rethrow_exception(e);
    return run;
  }

  bool logged(const Run& run, const std::string& text) const {
    for (const auto& line : run.log)
      if (line.find(text) != std::string::npos) return true;
    return false;
  }

  // The initial parameters, as LibTorch reads them from the model file.
  std::vector<float> read_floats_of_model() const {
    models::TorchScriptOptions options;
    options.input_shape = {1, 28, 28};
    options.threads = 1;
    return models::load_torchscript(model_.string(), options)->parameter_vector();
  }

  static TempDir* dir_;
  static std::filesystem::path model_;
  std::unique_ptr<TempDir> state_;
};

TempDir* Federation::dir_ = nullptr;
std::filesystem::path Federation::model_;

double correlation(std::span<const std::uint32_t> a, std::span<const std::uint32_t> b) {
  double ma = 0, mb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) ma += a[i], mb += b[i];
  ma /= static_cast<double>(a.size());
  mb /= static_cast<double>(b.size());
  double sab = 0, saa = 0, sbb = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return sab / std::sqrt(saa * sbb);
}

TEST_F(Federation, ParameterVectorsRoundTripAndTheFedProxTermHoldsLocalTrainingNearTheGlobalModel) {
  models::TorchScriptOptions options;
  options.input_shape = {1, 28, 28};
  options.threads = 1;
  auto model = models::load_torchscript(model_.string(), options, {"sgd", 0.05, 0.0});
  const auto global = model->parameter_vector();
  ASSERT_EQ(global.size(), 784u * 32 + 32 + 32 * 10 + 10);
  EXPECT_THROW(model->set_parameter_vector(std::vector<float>(global.size() - 1)), core::Error);
  EXPECT_THROW(model->set_proximal_term(std::vector<float>(3), 0.1), core::Error);

  models::DataOptions data;
  data.split = "train";
  data.limit = 512;
  const auto images = models::load_dataset(models_dir(), data);
  auto distance_after_training = [&](double mu) {
    model->set_parameter_vector(global);
    model->reset_optimizer();
    model->set_proximal_term(global, mu);
    models::TrainingRecipe recipe;
    recipe.epochs = 2;
    recipe.batch = 32;
    recipe.optimizer = "sgd";
    recipe.learning_rate = 0.05;
    models::fit(*model, images.x, images.y, recipe);
    model->set_proximal_term({}, 0);
    const auto local = model->parameter_vector();
    double d = 0;
    for (std::size_t i = 0; i < local.size(); ++i) d += (local[i] - global[i]) * (local[i] - global[i]);
    return std::sqrt(d);
  };
  const double free = distance_after_training(0);
  const double held = distance_after_training(10);
  EXPECT_GT(free, 0.1) << "training must move the model for the comparison to mean anything";
  EXPECT_LT(held, free / 3) << "(mu/2)||w - w_global||^2 pulls local training back to the global model";
  model->set_parameter_vector(global);
  EXPECT_EQ(model->parameter_vector(), global);
}

TEST_F(Federation, SecureAggregationNeverShowsTheAggregatorAnIndividualUpdateYetRecoversTheirMean) {
  auto c = config(5, 1);
  c.secure_aggregation = true;
  c.secure_threshold = 0.6;
  c.secure_clip = 4.0;
  std::vector<ParticipantOptions> participants;
  for (int i = 0; i < 5; ++i) participants.push_back(participant(i, 5));
  const auto initial = read_floats_of_model();
  const auto run = this->run(c, participants);
  ASSERT_EQ(run.result.rounds.size(), 1u);
  EXPECT_EQ(run.result.rounds[0].aggregated.size(), 5u);
  ASSERT_EQ(run.updates.size(), 5u);

  const FixedPoint fixed_point{c.secure_clip, 5};
  std::vector<float> mean(initial.size(), 0.0f);
  for (const auto& [key, delta] : run.updates) {
    for (float v : delta) ASSERT_LT(std::abs(v), c.secure_clip) << "the comparison below needs updates inside the fixed-point range";
    for (std::size_t i = 0; i < delta.size(); ++i) mean[i] += delta[i] / 5.0f;
    std::vector<std::uint32_t> encoded(delta.size());
    encode_fixed_point(delta, fixed_point, encoded);
    // Neither the floats nor their fixed-point words appear in anything the aggregator received.
    const auto raw = wire::floats_to_bytes(std::span<const float>(delta).subspan(0, 16));
    const std::string words(reinterpret_cast<const char*>(encoded.data()), 64);
    for (const auto& body : run.bodies) {
      EXPECT_EQ(body.find(raw), std::string::npos) << key.first << "'s update crossed the wire in the clear";
      EXPECT_EQ(body.find(words), std::string::npos) << key.first << "'s encoded update crossed the wire unmasked";
    }
    // What it sent in its place is indistinguishable from noise: no correlation with the update.
    const auto& masked_bodies = run.masked_bodies.at(key.first);
    ASSERT_EQ(masked_bodies.size(), 1u);
    const auto masked = MaskedInput::decode(wire::as_bytes(masked_bodies[0]));
    ASSERT_EQ(masked.masked.size(), encoded.size());
    EXPECT_LT(std::abs(correlation(masked.masked, encoded)), 0.05) << key.first;
  }
  // Yet the global model moved by exactly their mean (to the fixed-point resolution).
  const auto global = read_floats(state_->path / "global-1.f32");
  ASSERT_EQ(global.size(), initial.size());
  double worst = 0;
  for (std::size_t i = 0; i < global.size(); ++i) worst = std::max(worst, std::abs(double(global[i]) - (initial[i] + mean[i])));
  EXPECT_LT(worst, 1e-5);
}

TEST_F(Federation, SecureAggregationRecoversTheSurvivorsSumWhenParticipantsDropOutMidRound) {
  auto c = config(5, 1);
  c.secure_aggregation = true;
  c.secure_threshold = 0.6;  // t = 3 of 5
  c.round_deadline_s = 5;
  std::vector<ParticipantOptions> participants;
  for (int i = 0; i < 5; ++i) participants.push_back(participant(i, 5));
  participants[3].drop_at_round = 1;
  participants[3].drop_at_stage = "train";   // never advertises keys
  participants[4].drop_at_round = 1;
  participants[4].drop_at_stage = "masked";  // shared its keys, then vanished: its masks must be cancelled
  const auto initial = read_floats_of_model();
  const auto run = this->run(c, participants);
  ASSERT_EQ(run.result.rounds.size(), 1u);
  const auto& record = run.result.rounds[0];
  EXPECT_EQ(record.aggregated, (std::vector<std::string>{"participant-0", "participant-1", "participant-2"}));
  EXPECT_EQ(record.dropped, (std::vector<std::string>{"participant-3", "participant-4"}));
  EXPECT_TRUE(run.participants[4].dropped);
  const auto global = read_floats(state_->path / "global-1.f32");
  double worst = 0;
  for (std::size_t i = 0; i < global.size(); ++i) {
    double mean = 0;
    for (int p = 0; p < 3; ++p) mean += run.updates.at({"participant-" + std::to_string(p), 1})[i] / 3.0;
    worst = std::max(worst, std::abs(double(global[i]) - (initial[i] + mean)));
  }
  EXPECT_LT(worst, 1e-5);
  EXPECT_TRUE(logged(run, "without participant-4")) << "the deadline closes the stage without the dropout";
}

TEST_F(Federation, RobustAggregationKeepsAccuracyWhenTwoOfEightParticipantsSendScaledUpdates) {
  auto accuracy_with = [&](AggregationRule rule, std::vector<core::Finding>* findings) {
    state_ = std::make_unique<TempDir>("aegis_federation_state");
    auto c = config(8, 4);
    c.robust.rule = rule;
    c.robust.byzantine = 2;
    c.robust.trim_fraction = 0.25;
    std::vector<ParticipantOptions> participants;
    for (int i = 0; i < 8; ++i) participants.push_back(participant(i, 8));
    for (int i : {6, 7}) {
      participants[i].poison.kind = "sign-flip";
      participants[i].poison.boost = 4;
    }
    const auto run = this->run(c, participants);
    if (findings) *findings = run.result.findings;
    return run.result.rounds.back().accuracy.value_or(0);
  };
  std::vector<core::Finding> findings;
  const double poisoned_mean = accuracy_with(AggregationRule::Mean, nullptr);
  const double trimmed = accuracy_with(AggregationRule::TrimmedMean, nullptr);
  const double krum = accuracy_with(AggregationRule::MultiKrum, &findings);
  EXPECT_LT(poisoned_mean, 0.4) << "the attack must work against plain FedAvg for the comparison to mean anything";
  EXPECT_GT(trimmed, poisoned_mean + 0.2);
  EXPECT_GT(krum, poisoned_mean + 0.2);
  EXPECT_GT(krum, 0.6);
  for (const char* attacker : {"participant-6", "participant-7"}) {
    bool flagged = false;
    for (const auto& f : findings) flagged |= f.rule_id == "FL001" && f.evidence.find(attacker) != std::string::npos;
    EXPECT_TRUE(flagged) << attacker << ": Multi-Krum's rejected attackers become findings";
  }
}

TEST_F(Federation, InvalidReplayedAndUnauthenticatedMessagesAreRefusedWithALogLine) {
  auto c = config(3, 2);
  c.min_participants = 2;  // the NaN sender's update never counts
  std::vector<ParticipantOptions> participants;
  for (int i = 0; i < 3; ++i) participants.push_back(participant(i, 3));
  participants[2].poison.kind = "nan";
  std::string stranger_error;
  Response replay, wrong_model;
  const auto run = this->run(c, participants, [&](std::uint16_t port) {
    // A stranger with a certificate from another CA (the same participant name) cannot even connect.
    FederationPki rogue{dir_->path / "rogue"}, pki{dir_->path / "pki"};
    try {
      MtlsClient stranger({rogue.ca_certificate().string(), rogue.participant_certificate("participant-0").string(),
                           rogue.participant_key("participant-0").string()},
                          "127.0.0.1", port, ClientOptions{5000, 0, 10});
      stranger.request("POST", wire::kHello, "{}", "application/json");
    } catch (const core::Error& error) {
      stranger_error = error.what();
    }
    // A genuine member replaying an answer from another round, and one with another model.
    MtlsClient member({pki.ca_certificate().string(), pki.participant_certificate("participant-5").string(),
                       pki.participant_key("participant-5").string()},
                      "127.0.0.1", port);
    replay = member.request("POST", wire::kSubmit, std::string(64, 'x'), "application/octet-stream",
                            {{wire::kAction, "train"}, {wire::kRoundId, "00112233445566778899aabbccddeeff"}});
    wrong_model = member.request("POST", wire::kHello, R"({"samples": 10, "model_sha256": "00"})", "application/json");
  });
  EXPECT_FALSE(stranger_error.empty()) << "a certificate from another CA must be refused";
  EXPECT_TRUE(logged(run, "rejected TLS")) << "the aggregator logs the refused handshake";
  EXPECT_EQ(replay.status, 409);
  EXPECT_NE(replay.body.find("replayed or late"), std::string::npos) << replay.body;
  EXPECT_TRUE(logged(run, "rejected a 'train' message from participant-5"));
  EXPECT_EQ(wrong_model.status, 409);
  EXPECT_TRUE(logged(run, "refused participant-5"));
  ASSERT_EQ(run.result.rounds.size(), 2u);
  for (const auto& r : run.result.rounds) {
    EXPECT_EQ(r.rejected, std::vector<std::string>{"participant-2"});
    EXPECT_EQ(r.aggregated.size(), 2u);
  }
  bool nan_finding = false;
  for (const auto& f : run.result.findings) nan_finding |= f.rule_id == "FL003" && f.evidence.find("NaN") != std::string::npos;
  EXPECT_TRUE(nan_finding);
  EXPECT_TRUE(logged(run, "rejected a 'train' message from participant-2"));
  EXPECT_GT(run.result.rounds.back().accuracy.value_or(0), 0.5);
}

TEST_F(Federation, ClientLevelDifferentialPrivacyReportsEpsilonEveryRound) {
  auto c = config(3, 3);
  c.differential_privacy = true;
  c.dp.clip_norm = 2.0;
  c.dp.noise_multiplier = 0.5;
  c.dp.delta = 1e-3;
  c.population = 30;
  c.dp.population = 30;
  c.dp.per_round = 3;
  std::vector<ParticipantOptions> participants;
  for (int i = 0; i < 3; ++i) participants.push_back(participant(i, 3));
  participants[2].poison.kind = "scale";
  participants[2].poison.boost = 1000;  // clipping bounds whatever it sends
  const auto run = this->run(c, participants);
  ASSERT_EQ(run.result.rounds.size(), 3u);
  ClientDpAccountant reference(c.dp);
  double previous = 0;
  for (const auto& r : run.result.rounds) {
    reference.record_round();
    ASSERT_TRUE(r.epsilon.has_value());
    EXPECT_GT(*r.epsilon, previous);
    EXPECT_NEAR(*r.epsilon, reference.epsilon(), 1e-9) << "round " << r.round;
    previous = *r.epsilon;
    // One clipped update of norm 2 / 3 participants, plus noise of 0.5 * 2 / 3 per coordinate: the
    // boosted update did not get through.
    EXPECT_LT(r.update_norm, 2.0 / 3 * 3 + 0.5 * 2.0 / 3 * std::sqrt(25450.0) * 1.2);
  }
  EXPECT_TRUE(logged(run, "epsilon"));
}

TEST_F(Federation, ARestartedAggregatorResumesFromItsState) {
  auto c = config(3, 2);
  std::vector<ParticipantOptions> participants;
  for (int i = 0; i < 3; ++i) participants.push_back(participant(i, 3));
  const auto first = run(c, participants);
  ASSERT_EQ(first.result.rounds.size(), 2u);
  c.rounds = 3;
  const auto second = run(c, participants);
  EXPECT_EQ(second.result.resumed_from, 2u);
  ASSERT_EQ(second.result.rounds.size(), 3u);
  EXPECT_EQ(second.result.rounds[2].round, 3u);
  EXPECT_EQ(second.participants[0].rounds_trained, 1u) << "only the missing round was trained";
  EXPECT_TRUE(logged(second, "resumed from"));
}

}  // namespace
}  // namespace aegis::federated

namespace aegis::federated {
namespace {

std::string config_error(const std::string& yaml) {
  try {
    parse_federation_config(yaml, "/srv/fl", "fl.yaml");
  } catch (const core::Error& error) {
    return error.what();
  }
  return {};
}

TEST(FederationConfig, ReadsTheExampleAndResolvesPathsFromTheFilesFolder) {
  const auto c = load_federation_config(test::source_dir() / "examples/federated/fl.yaml");
  EXPECT_EQ(c.rounds, 20u);
  EXPECT_EQ(c.participants_per_round, 10u);
  EXPECT_EQ(c.min_participants, 8u);
  EXPECT_EQ(c.listen_port, 8443);
  EXPECT_EQ(c.model.lexically_normal(), (test::source_dir() / "examples/fashion-mnist/model_init.pt").lexically_normal());
  EXPECT_FALSE(c.secure_aggregation);
  EXPECT_EQ(c.robust.rule, AggregationRule::Mean);
  EXPECT_EQ(c.dp.population, 10u);
  EXPECT_EQ(c.backdoor_target, 0);
}

TEST(FederationConfig, RefusesTyposBadValuesAndCombinationsThatCannotWorkWithTheirLine) {
  const std::string model = "model: {torchscript: m.pt}\n";
  EXPECT_NE(config_error(model + "training: {roundz: 3}\n").find("line 2: unknown key 'roundz' in training"), std::string::npos);
  EXPECT_NE(config_error(model + "training: {rounds: -1}\n").find("'rounds' must be a whole number"), std::string::npos);
  EXPECT_NE(config_error(model + "training: {participants_per_round: 3, min_participants: 5}\n").find("exceeds"), std::string::npos);
  EXPECT_NE(config_error(model + "federation: {listen: localhost}\n").find("ADDRESS:PORT"), std::string::npos);
  EXPECT_NE(config_error(model + "secure_aggregation: {enabled: true}\nrobust: {rule: median}\n").find("secure aggregation hides"),
            std::string::npos);
  EXPECT_NE(config_error(model + "differential_privacy: {enabled: true}\nrobust: {rule: krum}\ntraining: {participants_per_round: 9}\n")
                .find("voids the guarantee"),
            std::string::npos);
  EXPECT_NE(config_error(model + "robust: {rule: krum, byzantine: 3}\ntraining: {participants_per_round: 8}\n").find("Krum"),
            std::string::npos);
  EXPECT_NE(config_error("training: {rounds: 3}\n").find("no 'model:'"), std::string::npos);
  EXPECT_NE(config_error(model + "robust: {rule: average}\n").find("use mean, median"), std::string::npos);
  EXPECT_NE(config_error(std::string(100, '[')).find("deeper"), std::string::npos);
  EXPECT_NE(config_error(model + "{a: 1}, {b: 2}\n").find("not YAML"), std::string::npos) << "found by the fuzz target";
  EXPECT_EQ(config_error(model), "");
}

}  // namespace
}  // namespace aegis::federated
