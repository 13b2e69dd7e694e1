// The extraction detectors: Shapiro-Wilk against scipy, PRADA on a Jacobian-augmentation query
// stream built against the real Fashion-MNIST model, the similarity detector's calibration and
// bounds, and the gateway issue's acceptance check on the query logs of `aegis extract`.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aegis/core/error.h"
#include "aegis/formats/npy.h"
#include "aegis/models/dataset.h"
#include "aegis/models/torchscript_classifier.h"
#include "aegis/monitor/extraction_detector.h"
#include "aegis/monitor/shapiro_wilk.h"
#include "test_support.h"

namespace aegis::monitor {
namespace {

using nlohmann::json;

json run_python(const std::filesystem::path& folder, const std::string& script, const json& input) {
  const auto script_path = folder / "reference.py", input_path = folder / "input.json";
  std::ofstream(script_path) << script;
  std::ofstream(input_path) << input.dump();
  const std::string command = "/usr/bin/python3 " + script_path.string() + " " + input_path.string();
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("cannot run " + command);
  std::string out;
  char buffer[4096];
  while (std::size_t got = std::fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, got);
  const int status = pclose(pipe);
  if (status != 0) throw std::runtime_error("python failed (" + std::to_string(status) + "): " + out);
  return json::parse(out);
}

TEST(MonitorShapiroWilk, MatchesScipyShapiro) {
  std::mt19937_64 rng(11);
  std::normal_distribution<double> normal(3, 2);
  std::uniform_real_distribution<double> uniform(0, 1);
  std::exponential_distribution<double> exponential(1.5);
  json samples = json::array();
  for (std::size_t n : {3u, 4u, 5u, 6u, 7u, 11u, 12u, 20u, 50u, 137u, 500u, 2000u, 5000u}) {
    std::vector<double> a(n), b(n), c(n);
    for (std::size_t i = 0; i < n; ++i) {
      a[i] = normal(rng);
      b[i] = uniform(rng);
      c[i] = exponential(rng);
    }
    samples.push_back(a);
    samples.push_back(b);
    samples.push_back(c);
  }
  test::TempDir dir("aegis_shapiro");
  const json expected = run_python(dir.path, R"PY(
import json, sys
from scipy import stats
print(json.dumps([list(map(float, stats.shapiro(s))) for s in json.load(open(sys.argv[1]))]))
)PY",
                                   samples);
  ASSERT_EQ(expected.size(), samples.size());
  ShapiroWilk reused;
  for (std::size_t i = 0; i < samples.size(); ++i) {
    const auto values = samples[i].get<std::vector<double>>();
    SCOPED_TRACE("n = " + std::to_string(values.size()) + ", sample " + std::to_string(i));
    const auto got = shapiro_wilk(values);
    // scipy runs AS R94 in single precision (REAL data and coefficients), so W agrees to ~1e-5;
    // near W = 1 with n in the thousands the p-value is steep in W, hence 1% relative there.
    EXPECT_NEAR(got.w, expected[i][0].get<double>(), 2e-5);
    EXPECT_NEAR(got.p_value, expected[i][1].get<double>(), 2e-4 + 1e-2 * expected[i][1].get<double>());
    EXPECT_EQ(reused(values).w, got.w);
  }
  EXPECT_THROW(shapiro_wilk(std::vector<double>{1, 2}), core::Error);
  EXPECT_THROW(shapiro_wilk(std::vector<double>(5001, 1.0)), core::Error);
  EXPECT_EQ(shapiro_wilk(std::vector<double>(10, 4.0)).w, 1.0);
}

std::string example(const std::string& name) { return (test::source_dir() / "examples" / "fashion-mnist" / name).string(); }

std::unique_ptr<models::TrainableClassifier> load_target() {
  models::TorchScriptOptions options;
  options.threads = 1;
  options.input_shape = {1, 28, 28};
  return models::load_torchscript(example("model.pt"), options);
}

std::vector<std::int64_t> predicted_classes(models::Classifier& model, std::span<const float> inputs) {
  const std::size_t n = inputs.size() / 784;
  std::vector<float> scores(n * 10);
  model.predict(inputs, scores);
  std::vector<std::int64_t> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = std::max_element(scores.begin() + i * 10, scores.begin() + (i + 1) * 10) - (scores.begin() + i * 10);
  return out;
}

// Papernot et al.'s Jacobian-based augmentation, the synthetic queries PRADA was designed
// against: from a few seed images, each round adds x + lambda * sign(d logit_c / dx) for every
// sample so far, c the target's answer.
std::vector<float> jacobian_augmentation_queries(models::Classifier& target, std::span<const float> seeds, std::size_t total) {
  std::vector<float> queries(seeds.begin(), seeds.end());
  while (queries.size() / 784 < total) {
    const std::size_t n = queries.size() / 784;
    std::vector<float> grad(queries.size()), scores(n * 10);
    target.gradient(
        queries,
        [](std::span<const float> s, std::span<float> g) {
          std::fill(g.begin(), g.end(), 0.0f);
          for (std::size_t i = 0; i < s.size() / 10; ++i) g[i * 10 + (std::max_element(s.begin() + i * 10, s.begin() + (i + 1) * 10) - (s.begin() + i * 10))] = 1;
        },
        grad, scores);
    for (std::size_t i = 0; i < n * 784; ++i) {
      const float step = grad[i] > 0 ? 0.1f : (grad[i] < 0 ? -0.1f : 0.0f);
      queries.push_back(std::clamp(queries[i] + step, 0.0f, 1.0f));
    }
  }
  queries.resize(total * 784);
  return queries;
}

models::Dataset fashion(const std::string& split, std::size_t offset, std::size_t limit) {
  models::DataOptions options;
  options.split = split;
  options.offset = offset;
  options.limit = limit;
  return models::load_dataset(models::kFashionMnistDir, options);
}

TEST(MonitorPrada, FlagsJacobianAugmentationButNotBenignImages) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  auto target = load_target();
  const auto seeds = fashion("train", 59000, 10);
  const auto attack = jacobian_augmentation_queries(*target, seeds.x, 1000);
  const auto attack_classes = predicted_classes(*target, attack);
  const auto benign = fashion("test", 0, 1000);
  const auto benign_classes = predicted_classes(*target, benign.x);

  PradaDetector prada;
  std::optional<ExtractionAlert> attack_alert, benign_alert;
  for (std::size_t i = 0; i < 1000; ++i) {
    auto a = prada.observe("thief", std::span<const float>(attack).subspan(i * 784, 784), attack_classes[i]);
    if (a && !attack_alert) attack_alert = a;
    auto b = prada.observe("benign", benign.sample(i), benign_classes[i]);
    if (b && !benign_alert) benign_alert = b;
  }
  ASSERT_TRUE(attack_alert.has_value()) << "W " << prada.last_statistic("thief");
  std::printf("[ prada ] Jacobian augmentation flagged at query %llu, W %.3f; benign W %.3f after 1000 queries\n",
              static_cast<unsigned long long>(attack_alert->queries_seen), attack_alert->statistic, prada.last_statistic("benign"));
  EXPECT_EQ(attack_alert->client, "thief");
  EXPECT_EQ(attack_alert->detector, "prada");
  EXPECT_LT(attack_alert->statistic, prada.options().delta);
  // The first 100 distances need at least 100 queries; a synthetic stream is plain by then.
  EXPECT_LE(attack_alert->queries_seen, 200u);
  EXPECT_FALSE(benign_alert.has_value()) << "benign flagged at query " << benign_alert->queries_seen << " with W "
                                          << benign_alert->statistic;
  EXPECT_GE(prada.last_statistic("benign"), prada.options().delta);
  // One alert per client until it is reset.
  EXPECT_FALSE(prada.observe("thief", std::span<const float>(attack).subspan(0, 784), attack_classes[0]).has_value());
  prada.reset("thief");
  EXPECT_TRUE(std::isnan(prada.last_statistic("thief")));
  EXPECT_THROW(prada.observe("thief", std::vector<float>(10, 0.0f), 0), core::Error);
}

TEST(MonitorExtractionDetectors, BoundClientsAndHistory) {
  PradaOptions prada_options;
  prada_options.max_clients = 3;
  PradaDetector prada(prada_options);
  SimilarityOptions similarity_options;
  similarity_options.max_clients = 3;
  similarity_options.k = 2;
  similarity_options.history = 4;
  similarity_options.projection_dims = 0;
  similarity_options.threshold = 0.5;
  SimilarityDetector similarity(similarity_options);
  std::vector<float> x(8, 0.0f);
  for (int c = 0; c < 10; ++c) {
    prada.observe("client-" + std::to_string(c), x, 0);
    similarity.observe("client-" + std::to_string(c), x);
  }
  EXPECT_EQ(prada.clients(), 3u);
  EXPECT_EQ(similarity.clients(), 3u);
  // Far-apart queries never flag; repeating one query flags once its k neighbours are copies.
  for (int i = 0; i < 6; ++i) {
    std::vector<float> far(8, 0.0f);
    far[static_cast<std::size_t>(i) % 8] = 10.0f * static_cast<float>(i + 1);
    EXPECT_FALSE(similarity.observe("spread", far).has_value());
  }
  std::optional<ExtractionAlert> alert;
  for (int i = 0; i < 3 && !alert; ++i) alert = similarity.observe("repeat", x);
  ASSERT_TRUE(alert.has_value());
  EXPECT_EQ(alert->queries_seen, 3u);  // k = 2 earlier copies at distance 0
  EXPECT_EQ(alert->statistic, 0.0);
  EXPECT_THROW(similarity.observe("repeat", std::vector<float>{1.0f, NAN, 0, 0, 0, 0, 0, 0}), core::Error);
  SimilarityOptions bad;
  bad.k = 10;
  bad.history = 5;
  EXPECT_THROW(SimilarityDetector{bad}, core::Error);
  EXPECT_THROW(similarity.calibrate(std::vector<float>(16, 0.0f), 8, 1), core::Error);  // 2 queries < k + 1
}

// First query index (0-based) at which each detector flags one client's stream; -1 when never.
struct Detection {
  long prada = -1, similarity = -1;
  long first() const {
    if (prada < 0) return similarity;
    if (similarity < 0) return prada;
    return std::min(prada, similarity);
  }
};

// The gateway issue's acceptance check: the detectors flag the query log of `aegis extract` before
// the surrogate reaches 80% fidelity, and flag none of as many benign test-set queries spread over
// five other clients.
TEST(MonitorExtractionDetectors, FlagExtractQueryLogBeforeEightyPercentFidelityButNoBenignClient) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  test::TempDir dir("aegis_extract_log");
  const std::vector<std::size_t> budgets{500, 1000, 2000, 4000};
  const auto run = test::run_cli({"extract", "--target", example("model.pt"), "--surrogate", example("model_init.pt"),
                                  "--budget", "500,1000,2000,4000", "--strategy", "random,natural,adaptive", "--epochs", "3",
                                  "--test-limit", "1000", "--threads", "1", "--seed", "1", "--query-log",
                                  (dir.path / "log").string(), "--format", "json", "--quiet"});
  ASSERT_TRUE(run.exit_code == 0 || run.exit_code == 1) << run.err;
  const json report = json::parse(run.out);

  // The detectors as the gateway would run them: PRADA with its defaults, and the similarity
  // detector calibrated on benign training images replayed as 3 clients of 1000 queries each (the
  // volume a benign client is expected to send). The threshold is the lowest k-NN mean those
  // benign clients ever reached: at the paper's 0.1th percentile one benign query in a thousand
  // is over the line, and thousands of benign queries would then flag some benign client.
  auto target = load_target();
  const auto calibration = fashion("train", 55000, 3000);
  SimilarityOptions similarity_options;
  similarity_options.calibration_percentile = 0;
  SimilarityDetector calibrated(similarity_options);
  const double threshold = calibrated.calibrate(calibration.x, 784, 3);
  similarity_options.threshold = threshold;

  std::map<std::string, std::size_t> budget_at_80;  // strategies whose surrogate reached 80%
  std::map<std::string, Detection> detections;
  for (const std::string strategy : {"random", "natural", "adaptive"}) {
    for (const auto& r : report["results"])
      if (r["strategy"] == strategy && r["fidelity"].get<double>() >= 0.8 && !budget_at_80.count(strategy))
        budget_at_80[strategy] = r["budget"].get<std::size_t>();
    const auto base = dir.path / "log" / ("queries-" + strategy);
    const auto inputs = formats::read_npy_file(base.string() + ".npy", 1ull << 26);
    std::vector<std::int64_t> labels;
    std::ifstream lines(base.string() + ".jsonl");
    for (std::string line; std::getline(lines, line);) labels.push_back(json::parse(line)["label"].get<std::int64_t>());
    ASSERT_EQ(inputs.shape.at(0), budgets.back());
    ASSERT_EQ(labels.size(), budgets.back());
    PradaDetector prada;
    SimilarityDetector similarity(similarity_options);
    Detection& found = detections[strategy];
    for (std::size_t i = 0; i < labels.size(); ++i) {
      const auto query = std::span<const float>(inputs.values).subspan(i * 784, 784);
      if (prada.observe(strategy, query, labels[i]) && found.prada < 0) found.prada = static_cast<long>(i);
      if (similarity.observe(strategy, query) && found.similarity < 0) found.similarity = static_cast<long>(i);
    }
    std::printf("[ extract ] %-8s fidelity>=0.8 at budget %s; PRADA flags at query %ld, similarity at %ld (threshold %.3f)\n",
                strategy.c_str(), budget_at_80.count(strategy) ? std::to_string(budget_at_80[strategy]).c_str() : "never",
                found.prada, found.similarity, threshold);
  }
  ASSERT_FALSE(budget_at_80.empty()) << "no strategy reached 80% fidelity: the check would say nothing";
  for (const auto& [strategy, budget] : budget_at_80) {
    const long first = detections[strategy].first();
    EXPECT_GE(first, 0) << strategy << " was never flagged";
    EXPECT_LT(first, static_cast<long>(budget)) << strategy << " flagged only after its surrogate reached 80% fidelity";
  }

  // As many benign queries: shuffled test images dealt to five clients.
  const auto benign = fashion("test", 0, 10000);
  std::vector<std::size_t> order(benign.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937_64(5));
  order.resize(budgets.back());
  std::vector<float> queries;
  for (std::size_t i : order) queries.insert(queries.end(), benign.sample(i).begin(), benign.sample(i).end());
  const auto classes = predicted_classes(*target, queries);
  PradaDetector prada;
  SimilarityDetector similarity(similarity_options);
  for (std::size_t i = 0; i < order.size(); ++i) {
    const std::string client = "benign-" + std::to_string(i % 5);
    const auto query = std::span<const float>(queries).subspan(i * 784, 784);
    const auto p = prada.observe(client, query, classes[i]);
    EXPECT_FALSE(p.has_value()) << client << " flagged by PRADA at its query " << p->queries_seen << ", W " << p->statistic;
    const auto s = similarity.observe(client, query);
    EXPECT_FALSE(s.has_value()) << client << " flagged by similarity at its query " << s->queries_seen << ", mean "
                                << s->statistic;
  }
}

}  // namespace
}  // namespace aegis::monitor
