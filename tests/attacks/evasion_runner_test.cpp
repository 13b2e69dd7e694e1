// The plan runner's bookkeeping on a model whose answers are known: a linear classifier, where every
// sample's minimal L2 distance to a wrong class has a closed form.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>

#include "aegis/attacks/evasion_runner.h"
#include "aegis/core/error.h"
#include "aegis/models/linear_classifier.h"

namespace {

using namespace aegis;

struct LinearProblem {
  std::unique_ptr<models::LinearClassifier> owned;
  models::LinearClassifier& model;
  std::vector<float> x;
  std::vector<int> y;
  std::vector<double> distance;  // closed-form minimal L2 distance to another class's region
};

LinearProblem make_problem(std::size_t n) {
  const std::size_t d = 16, k = 3;
  std::mt19937 rng(7);
  std::normal_distribution<float> gauss(0.0f, 1.0f);
  std::vector<float> w(k * d), b(k, 0.0f);
  for (auto& v : w) v = gauss(rng);
  // biases put every class boundary through the centre of the box, so points near it are near boundaries
  for (std::size_t c = 0; c < k; ++c)
    for (std::size_t j = 0; j < d; ++j) b[c] -= 0.5f * w[c * d + j];
  auto owned = std::make_unique<models::LinearClassifier>(std::vector<std::int64_t>{static_cast<std::int64_t>(d)},
                                                          static_cast<int>(k), w, b);
  auto& model = *owned;
  LinearProblem p{std::move(owned), model, {}, {}, {}};
  std::uniform_real_distribution<float> uniform(0.35f, 0.65f);
  for (int tries = 0; p.y.size() < n && tries < 100000; ++tries) {
    std::vector<float> x(d);
    for (auto& v : x) v = uniform(rng);
    std::vector<double> scores(b.begin(), b.end());
    for (std::size_t c = 0; c < k; ++c)
      for (std::size_t j = 0; j < d; ++j) scores[c] += w[c * d + j] * x[j];
    const int label = static_cast<int>(std::max_element(scores.begin(), scores.end()) - scores.begin());
    double best = 1e9;
    for (std::size_t c = 0; c < k; ++c) {
      if (static_cast<int>(c) == label) continue;
      double norm = 0;
      for (std::size_t j = 0; j < d; ++j) norm += std::pow(w[c * d + j] - w[label * d + j], 2);
      best = std::min(best, (scores[label] - scores[c]) / std::sqrt(norm));
    }
    // keep points whose closest boundary is reachable inside [0,1] without clipping
    if (best > 0.12) continue;
    p.x.insert(p.x.end(), x.begin(), x.end());
    p.y.push_back(label);
    p.distance.push_back(best);
  }
  EXPECT_EQ(p.y.size(), n) << "could not draw enough points near the boundaries";
  return p;
}

TEST(EvasionRunner, MinimalNormAttackIsScoredAtEachThresholdFromItsDistances) {
  auto p = make_problem(40);
  attacks::AttackSpec spec;
  spec.name = "deepfool";
  spec.norm = attacks::Norm::L2;
  spec.deepfool.overshoot = 0.0f;
  spec.eps = {0.02f, 0.05f, 0.08f, 0.2f};
  attacks::RunnerOptions options;
  auto report = attacks::run_evasion_plan(p.model, p.x, p.y, {spec}, options);
  EXPECT_DOUBLE_EQ(report.clean_accuracy, 1.0);
  ASSERT_EQ(report.results.size(), spec.eps.size());
  for (std::size_t e = 0; e < spec.eps.size(); ++e) {
    // DeepFool finds the exact distance on a linear model (plus its 1e-4 step margin), so a sample
    // is broken at eps exactly when its closed-form distance is below eps.
    std::size_t robust = 0, borderline = 0;
    for (double dist : p.distance) {
      robust += dist > spec.eps[e];
      borderline += std::fabs(dist - spec.eps[e]) < 1e-3;  // DeepFool's 1e-4 step margin may tip these
    }
    EXPECT_NEAR(report.results[e].robust_accuracy, static_cast<double>(robust) / 40.0,
                static_cast<double>(borderline) / 40.0 + 1e-9)
        << "eps " << spec.eps[e];
    EXPECT_EQ(report.results[e].attacked, 40u);
  }
  EXPECT_DOUBLE_EQ(report.results.back().robust_accuracy, 0.0);  // all distances are below 0.12
  EXPECT_GT(report.results.back().median_l2, 0.0);
}

TEST(EvasionRunner, SharesOneCleanPassAndReportsFindingsBelowTheThreshold) {
  auto p = make_problem(30);
  attacks::AttackSpec fgsm;
  fgsm.name = "fgsm";
  fgsm.norm = attacks::Norm::L2;
  fgsm.eps = {0.01f, 0.2f};
  attacks::AttackSpec pgd = fgsm;
  pgd.name = "pgd";
  pgd.pgd.steps = 10;
  attacks::RunnerOptions options;
  options.min_robust_accuracy = 0.5;
  p.model.reset_queries();
  auto report = attacks::run_evasion_plan(p.model, p.x, p.y, {fgsm, pgd}, options);
  ASSERT_EQ(report.results.size(), 4u);
  // At 0.2 every sample is within reach: robust accuracy 0, success 100%, and one finding per attack
  // (at the smallest failing budget), mapped to ATLAS.
  EXPECT_DOUBLE_EQ(report.results[1].robust_accuracy, 0.0);
  EXPECT_DOUBLE_EQ(report.results[3].success_rate, 1.0);
  EXPECT_LE(report.results[3].robust_accuracy, report.results[2].robust_accuracy);
  ASSERT_EQ(report.findings.size(), 2u);
  EXPECT_EQ(report.findings[0].rule_id, "evasion.white-box");
  EXPECT_EQ(report.findings[0].severity, core::Severity::High);
  EXPECT_NE(std::find(report.findings[0].atlas.begin(), report.findings[0].atlas.end(), "AML.T0043.000"),
            report.findings[0].atlas.end());
  // Queries: one clean pass (30) + FGSM 2 x (30 gradient + 30 check) + PGD 2 x (300 + 30).
  EXPECT_EQ(p.model.queries(), 30u + 2 * 60u + 2 * 330u);
  EXPECT_EQ(report.results[2].gradient_queries, 300u);
}

TEST(EvasionRunner, RefusesAPlanItCannotRunBeforeAnyWork) {
  auto p = make_problem(5);
  attacks::AttackSpec spec;
  spec.name = "pgd";
  attacks::RunnerOptions options;
  p.model.reset_queries();
  EXPECT_THROW(attacks::run_evasion_plan(p.model, p.x, p.y, {spec}, options), core::Error);  // no eps
  spec.name = "nosuch";
  spec.eps = {0.1f};
  EXPECT_THROW(attacks::run_evasion_plan(p.model, p.x, p.y, {spec}, options), core::Error);
  spec.name = "deepfool";
  spec.targeted = "random";
  EXPECT_THROW(attacks::run_evasion_plan(p.model, p.x, p.y, {spec}, options), core::Error);
  spec = {};
  spec.name = "fgsm";
  spec.eps = {0.1f};
  auto shifted = p.x;
  shifted[0] = 2.0f;  // outside the stated range
  EXPECT_THROW(attacks::run_evasion_plan(p.model, shifted, p.y, {spec}, options), core::Error);
  EXPECT_EQ(p.model.queries(), 0u);
}

}  // namespace
