// Robust aggregation of federated updates (FedAvg, median, trimmed mean, Krum, Multi-Krum, norm
// bound), the outliers and findings it reports, refused updates, and client-level differential
// privacy: clipping, Gaussian noise, the fixed-denominator noised mean and its accountant.
#include "aegis/federated/aggregation.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/privacy/accountant.h"

namespace fl = aegis::federated;
using fl::AggregationRule;
using fl::ClientUpdate;
using fl::OutlierKind;
using fl::RobustOptions;

namespace {

double norm(const std::vector<float>& v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

double distance(const std::vector<float>& a, const std::vector<float>& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += (static_cast<double>(a[i]) - b[i]) * (static_cast<double>(a[i]) - b[i]);
  return std::sqrt(s);
}

std::vector<float> mean_of(const std::vector<ClientUpdate>& updates, std::size_t count) {
  std::vector<float> out(updates.front().delta.size(), 0.0f);
  for (std::size_t i = 0; i < count; ++i)
    for (std::size_t c = 0; c < out.size(); ++c) out[c] += updates[i].delta[c] / static_cast<float>(count);
  return out;
}

// `honest` updates scattered around one direction (what participants with similar data send), then
// `attackers` made by `attack` from an honest update.
struct Round {
  std::vector<ClientUpdate> updates;
  std::vector<float> honest_mean;
  std::vector<float> direction;
};

Round make_round(std::size_t honest, std::size_t dims, double noise, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(-1.0, 1.0);
  std::normal_distribution<double> gaussian(0.0, noise);
  Round round;
  for (std::size_t c = 0; c < dims; ++c) round.direction.push_back(static_cast<float>(uniform(rng)));
  for (std::size_t i = 0; i < honest; ++i) {
    ClientUpdate u{"honest-" + std::to_string(i), round.direction, 1.0};
    for (float& v : u.delta) v += static_cast<float>(gaussian(rng));
    round.updates.push_back(std::move(u));
  }
  round.honest_mean = mean_of(round.updates, honest);
  return round;
}

std::vector<std::string> names_of(const std::vector<fl::Outlier>& outliers, OutlierKind kind) {
  std::vector<std::string> names;
  for (const auto& o : outliers)
    if (o.kind == kind) names.push_back(o.participant);
  std::sort(names.begin(), names.end());
  return names;
}

RobustOptions rule(AggregationRule r) {
  RobustOptions options;
  options.rule = r;
  return options;
}

}  // namespace

TEST(FederatedAggregation, RuleNamesParseAndPrint) {
  EXPECT_EQ(fl::parse_aggregation_rule("fedavg"), AggregationRule::Mean);
  for (const auto r : {AggregationRule::Mean, AggregationRule::Median, AggregationRule::TrimmedMean,
                       AggregationRule::Krum, AggregationRule::MultiKrum})
    EXPECT_EQ(fl::parse_aggregation_rule(fl::to_string(r)), r);
  EXPECT_EQ(fl::to_string(AggregationRule::TrimmedMean), "trimmed-mean");
  EXPECT_EQ(fl::to_string(AggregationRule::MultiKrum), "multi-krum");
  EXPECT_FALSE(fl::parse_aggregation_rule("Mean"));
  EXPECT_FALSE(fl::parse_aggregation_rule("bulyan"));
  EXPECT_FALSE(fl::parse_aggregation_rule(""));
}

TEST(FederatedAggregation, MeanIsTheSampleWeightedAverage) {
  const std::vector<ClientUpdate> updates = {
      {"a", {1, 2, 3}, 1}, {"b", {3, 0, -1}, 3}, {"c", {-2, 4, 5}, 4}};
  const auto result = fl::aggregate(updates, rule(AggregationRule::Mean));
  // (1*1 + 3*3 + 4*-2) / 8, (1*2 + 3*0 + 4*4) / 8, (1*3 + 3*-1 + 4*5) / 8
  ASSERT_EQ(result.delta.size(), 3u);
  EXPECT_FLOAT_EQ(result.delta[0], 0.25f);
  EXPECT_FLOAT_EQ(result.delta[1], 2.25f);
  EXPECT_FLOAT_EQ(result.delta[2], 2.5f);
  EXPECT_EQ(result.used, (std::vector<std::string>{"a", "b", "c"}));

  // Equal weights: the plain average.
  std::vector<ClientUpdate> equal = updates;
  for (auto& u : equal) u.weight = 7;
  const auto plain = fl::aggregate(equal, rule(AggregationRule::Mean));
  EXPECT_FLOAT_EQ(plain.delta[0], 2.0f / 3.0f);
  EXPECT_FLOAT_EQ(plain.delta[1], 2.0f);
  EXPECT_FLOAT_EQ(plain.delta[2], 7.0f / 3.0f);

  std::vector<ClientUpdate> bad = updates;
  bad[1].weight = -1;
  EXPECT_THROW(fl::aggregate(bad, rule(AggregationRule::Mean)), aegis::core::Error);
  for (auto& u : bad) u.weight = 0;
  EXPECT_THROW(fl::aggregate(bad, rule(AggregationRule::Mean)), aegis::core::Error);
}

TEST(FederatedAggregation, MedianPerCoordinateIgnoresWeights) {
  std::vector<ClientUpdate> updates = {{"a", {1, 10, -1}, 1},   {"b", {2, 20, -2}, 100}, {"c", {3, 30, -3}, 1},
                                       {"d", {100, -100, 0}, 1}, {"e", {4, 0, 5}, 1}};
  auto result = fl::aggregate(updates, rule(AggregationRule::Median));
  EXPECT_EQ(result.delta, (std::vector<float>{3, 10, -1}));
  EXPECT_EQ(result.used.size(), 5u);

  updates.pop_back();  // an even count: the mean of the two middle values
  result = fl::aggregate(updates, rule(AggregationRule::Median));
  EXPECT_EQ(result.delta, (std::vector<float>{2.5f, 15, -1.5f}));
}

TEST(FederatedAggregation, TrimmedMeanPerCoordinate) {
  const std::vector<ClientUpdate> updates = {{"a", {1, 10, -1}, 1},   {"b", {2, 20, -2}, 100}, {"c", {3, 30, -3}, 1},
                                             {"d", {100, -100, 0}, 1}, {"e", {4, 0, 5}, 1}};
  auto options = rule(AggregationRule::TrimmedMean);
  options.trim_fraction = 0.2;  // one value cut at each end of five
  auto result = fl::aggregate(updates, options);
  EXPECT_FLOAT_EQ(result.delta[0], 3.0f);    // mean of 2, 3, 4
  EXPECT_FLOAT_EQ(result.delta[1], 10.0f);   // mean of 0, 10, 20
  EXPECT_FLOAT_EQ(result.delta[2], -1.0f);   // mean of -2, -1, 0

  options.trim_fraction = 0.1;  // floor(0.5) = 0 cut: the plain mean
  result = fl::aggregate(updates, options);
  EXPECT_FLOAT_EQ(result.delta[0], 22.0f);
  EXPECT_FLOAT_EQ(result.delta[1], -8.0f);
  EXPECT_FLOAT_EQ(result.delta[2], -0.2f);
  EXPECT_TRUE(names_of(result.outliers, OutlierKind::Trimmed).empty());

  options.trim_fraction = 0.5;
  try {
    fl::aggregate(updates, options);
    FAIL() << "a trim of half from each end must be refused";
  } catch (const aegis::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("trim_fraction"), std::string::npos) << e.what();
    EXPECT_FALSE(e.hint().empty());
  }
}

TEST(FederatedAggregation, KrumPicksAnHonestUpdateAndReportsFarAttackers) {
  Round round = make_round(5, 20, 0.1, 11);
  std::vector<float> far(20, 50.0f), other(20, -40.0f);
  round.updates.push_back({"attacker-1", far, 1000});
  round.updates.push_back({"attacker-2", other, 1000});

  auto options = rule(AggregationRule::Krum);
  options.byzantine = 2;  // n = 7 > 2f + 2 = 6
  const auto result = fl::aggregate(round.updates, options);
  ASSERT_EQ(result.used.size(), 1u);
  EXPECT_EQ(result.used[0].rfind("honest-", 0), 0u) << result.used[0];
  // Krum's output is the selected update itself.
  const auto picked = std::find_if(round.updates.begin(), round.updates.end(),
                                   [&](const ClientUpdate& u) { return u.participant == result.used[0]; });
  EXPECT_EQ(result.delta, picked->delta);
  EXPECT_EQ(names_of(result.outliers, OutlierKind::KrumRejected),
            (std::vector<std::string>{"attacker-1", "attacker-2"}));
  for (const auto& o : result.outliers)
    EXPECT_EQ(o.participant.rfind("attacker-", 0), 0u) << o.participant << ": " << o.reason;

  // Six updates cannot tolerate two attackers.
  round.updates.pop_back();
  try {
    fl::aggregate(round.updates, options);
    FAIL() << "Krum with n <= 2f + 2 must be refused";
  } catch (const aegis::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("2f+2"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("byzantine"), std::string::npos) << e.hint();
  }
}

TEST(FederatedAggregation, KrumReportsNobodyInAnHonestRound) {
  for (std::uint64_t seed = 1; seed <= 20; ++seed) {
    const Round round = make_round(7, 50, 0.2, seed);
    auto options = rule(AggregationRule::Krum);
    options.byzantine = 2;
    const auto result = fl::aggregate(round.updates, options);
    EXPECT_EQ(result.used.size(), 1u);
    EXPECT_TRUE(names_of(result.outliers, OutlierKind::KrumRejected).empty()) << "seed " << seed;
  }
}

TEST(FederatedAggregation, MultiKrumAveragesTheBestScoredUpdates) {
  Round round = make_round(5, 20, 0.1, 12);
  round.updates.push_back({"attacker-1", std::vector<float>(20, 50.0f), 1});
  round.updates.push_back({"attacker-2", std::vector<float>(20, -40.0f), 1});
  auto options = rule(AggregationRule::MultiKrum);
  options.byzantine = 2;
  auto result = fl::aggregate(round.updates, options);  // m = n - f = 5: exactly the honest ones
  EXPECT_EQ(result.used, (std::vector<std::string>{"honest-0", "honest-1", "honest-2", "honest-3", "honest-4"}));
  ASSERT_EQ(result.delta.size(), 20u);
  for (std::size_t c = 0; c < 20; ++c) EXPECT_NEAR(result.delta[c], round.honest_mean[c], 1e-5);
  EXPECT_EQ(names_of(result.outliers, OutlierKind::KrumRejected),
            (std::vector<std::string>{"attacker-1", "attacker-2"}));

  options.multi_krum_select = 3;
  result = fl::aggregate(round.updates, options);
  ASSERT_EQ(result.used.size(), 3u);
  for (const auto& name : result.used) EXPECT_EQ(name.rfind("honest-", 0), 0u) << name;

  options.multi_krum_select = 8;
  EXPECT_THROW(fl::aggregate(round.updates, options), aegis::core::Error);
}

TEST(FederatedAggregation, NormBoundClipsAScaledUpdateAndReportsIt) {
  Round round = make_round(5, 30, 0.1, 13);
  ClientUpdate boosted = round.updates[0];
  boosted.participant = "boosted";
  for (float& v : boosted.delta) v *= 10;
  round.updates.push_back(boosted);
  const double honest_norm = norm(round.updates[0].delta);

  auto options = rule(AggregationRule::Mean);
  options.norm_bound = 1.5 * honest_norm;  // above every honest update, far below the boosted one
  const auto result = fl::aggregate(round.updates, options);

  ASSERT_EQ(names_of(result.outliers, OutlierKind::Clipped), std::vector<std::string>{"boosted"});
  EXPECT_EQ(names_of(result.outliers, OutlierKind::NormOutlier), std::vector<std::string>{"boosted"});
  for (const auto& o : result.outliers) {
    EXPECT_NEAR(o.norm, 10 * honest_norm, 1e-3 * honest_norm);
    if (o.kind == OutlierKind::Clipped) {
      EXPECT_NEAR(o.score, 10.0 / 1.5, 1e-3);
      EXPECT_NE(o.reason.find("norm bound"), std::string::npos) << o.reason;
    }
  }
  // The boosted update entered the mean scaled to the bound: hand-computed mean.
  std::vector<float> expected(30, 0.0f);
  for (std::size_t i = 0; i < 6; ++i) {
    const double scale = i == 5 ? options.norm_bound / norm(round.updates[5].delta) : 1.0;
    for (std::size_t c = 0; c < 30; ++c) expected[c] += static_cast<float>(round.updates[i].delta[c] * scale / 6.0);
  }
  for (std::size_t c = 0; c < 30; ++c) EXPECT_NEAR(result.delta[c], expected[c], 1e-5);

  // Without the bound the boosted update dominates.
  const auto unbounded = fl::aggregate(round.updates, rule(AggregationRule::Mean));
  EXPECT_GT(distance(unbounded.delta, round.honest_mean), 3 * distance(result.delta, round.honest_mean));
  EXPECT_TRUE(names_of(unbounded.outliers, OutlierKind::Clipped).empty());
  EXPECT_EQ(names_of(unbounded.outliers, OutlierKind::NormOutlier), std::vector<std::string>{"boosted"});
}

TEST(FederatedAggregation, SignFlippedScaledAttackersDragTheMeanButNotTheRobustRules) {
  Round round = make_round(8, 50, 0.05, 14);
  for (int a = 0; a < 2; ++a) {
    ClientUpdate attacker = round.updates[static_cast<std::size_t>(a)];
    attacker.participant = "attacker-" + std::to_string(a);
    for (float& v : attacker.delta) v *= -10;
    round.updates.push_back(attacker);
  }
  const double scale = norm(round.honest_mean);

  const auto mean = fl::aggregate(round.updates, rule(AggregationRule::Mean));
  const double mean_distance = distance(mean.delta, round.honest_mean);
  EXPECT_GT(mean_distance, 1.5 * scale);  // about 2.2x: the mean points the other way

  auto median = fl::aggregate(round.updates, rule(AggregationRule::Median));
  auto trimmed_options = rule(AggregationRule::TrimmedMean);
  trimmed_options.trim_fraction = 0.2;
  auto trimmed = fl::aggregate(round.updates, trimmed_options);
  auto krum_options = rule(AggregationRule::Krum);
  krum_options.byzantine = 2;
  auto krum = fl::aggregate(round.updates, krum_options);
  for (const auto* robust : {&median, &trimmed, &krum})
    EXPECT_LT(distance(robust->delta, round.honest_mean), 0.1 * scale);

  // The trimmed mean cut the attackers in nearly every coordinate, the honest in few.
  EXPECT_EQ(names_of(trimmed.outliers, OutlierKind::Trimmed), (std::vector<std::string>{"attacker-0", "attacker-1"}));
  for (const auto& o : trimmed.outliers)
    if (o.kind == OutlierKind::Trimmed) {
      EXPECT_GT(o.score, 0.9) << o.reason;
    }
  // Their norms stand out too.
  EXPECT_EQ(names_of(mean.outliers, OutlierKind::NormOutlier), (std::vector<std::string>{"attacker-0", "attacker-1"}));
}

TEST(FederatedAggregation, InvalidUpdatesAreRefusedWithTheReason) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  const std::vector<float> good = {1, 2, 3, 4, 5};
  EXPECT_FALSE(fl::invalid_update_reason(good, 5));

  const auto short_reason = fl::invalid_update_reason(std::vector<float>{1, 2, 3, 4}, 5);
  ASSERT_TRUE(short_reason);
  EXPECT_NE(short_reason->find("wrong length"), std::string::npos) << *short_reason;
  EXPECT_NE(short_reason->find("4 values"), std::string::npos) << *short_reason;
  EXPECT_NE(short_reason->find("has 5"), std::string::npos) << *short_reason;

  const auto nan_reason = fl::invalid_update_reason(std::vector<float>{1, 2, 3, nan, 5}, 5);
  ASSERT_TRUE(nan_reason);
  EXPECT_NE(nan_reason->find("NaN"), std::string::npos) << *nan_reason;
  EXPECT_NE(nan_reason->find("index 3"), std::string::npos) << *nan_reason;

  const auto inf_reason = fl::invalid_update_reason(std::vector<float>{-inf, 2, inf, 4, 5}, 5);
  ASSERT_TRUE(inf_reason);
  EXPECT_NE(inf_reason->find("2 of 5"), std::string::npos) << *inf_reason;
  EXPECT_NE(inf_reason->find("-infinity"), std::string::npos) << *inf_reason;

  EXPECT_FALSE(fl::invalid_update_reason(ClientUpdate{"p", good, 12}, 5));
  const auto weight_reason = fl::invalid_update_reason(ClientUpdate{"p", good, 0}, 5);
  ASSERT_TRUE(weight_reason);
  EXPECT_NE(weight_reason->find("weight"), std::string::npos) << *weight_reason;

  std::vector<ClientUpdate> updates = {{"ok-1", good, 1},
                                       {"nan", {1, nan, 3, 4, 5}, 1},
                                       {"ok-2", good, 2},
                                       {"long", {1, 2, 3, 4, 5, 6}, 1},
                                       {"weightless", good, std::numeric_limits<double>::infinity()}};
  // aggregate() refuses to run on them, naming the participant.
  try {
    fl::aggregate(updates, rule(AggregationRule::Median));
    FAIL() << "a NaN update must not be aggregated";
  } catch (const aegis::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'nan'"), std::string::npos) << e.what();
  }
  const auto refused = fl::remove_invalid_updates(updates, 5);
  ASSERT_EQ(updates.size(), 2u);
  EXPECT_EQ(updates[0].participant, "ok-1");
  EXPECT_EQ(updates[1].participant, "ok-2");
  ASSERT_EQ(refused.size(), 3u);
  EXPECT_EQ(names_of(refused, OutlierKind::Invalid), (std::vector<std::string>{"long", "nan", "weightless"}));
  EXPECT_NE(refused[1].reason.find("wrong length"), std::string::npos) << refused[1].reason;
  EXPECT_EQ(fl::aggregate(updates, rule(AggregationRule::Mean)).delta, good);
}

TEST(FederatedAggregation, RefusesWhatCannotBeAggregated) {
  EXPECT_THROW(fl::aggregate({}, rule(AggregationRule::Mean)), aegis::core::Error);
  const std::vector<ClientUpdate> ragged = {{"a", {1, 2}, 1}, {"b", {1, 2, 3}, 1}};
  EXPECT_THROW(fl::aggregate(ragged, rule(AggregationRule::Median)), aegis::core::Error);
  const std::vector<ClientUpdate> empty = {{"a", {}, 1}, {"b", {}, 1}};
  EXPECT_THROW(fl::aggregate(empty, rule(AggregationRule::Mean)), aegis::core::Error);
  const std::vector<ClientUpdate> fine = {{"a", {1, 2}, 1}, {"b", {3, 4}, 1}};
  auto options = rule(AggregationRule::Mean);
  options.norm_bound = -1;
  EXPECT_THROW(fl::aggregate(fine, options), aegis::core::Error);
  options.norm_bound = std::numeric_limits<double>::quiet_NaN();
  EXPECT_THROW(fl::aggregate(fine, options), aegis::core::Error);
  options = rule(AggregationRule::Krum);  // f = 0 still needs n > 2
  EXPECT_THROW(fl::aggregate(fine, options), aegis::core::Error);
}

TEST(FederatedAggregation, OutlierFindingsCarryRuleSeverityAndReferences) {
  const std::vector<fl::Outlier> outliers = {
      {"p-norm", "update norm 40 is 12 MADs above the median norm 2", 40, 12, OutlierKind::NormOutlier},
      {"p-krum", "left out by krum: its score 900 is 30 MADs above", 31, 900, OutlierKind::KrumRejected},
      {"p-trim", "trimmed in 98 of 100 coordinates", 20, 0.98, OutlierKind::Trimmed},
      {"p-clip", "update norm 40 above the norm bound 4: scaled down 10x", 40, 10, OutlierKind::Clipped},
      {"p-nan", "update refused: non-finite values", 0, 0, OutlierKind::Invalid},
  };
  const auto findings = fl::outlier_findings(7, outliers);
  ASSERT_EQ(findings.size(), outliers.size());
  const char* rule_ids[] = {"FL001", "FL001", "FL001", "FL002", "FL003"};
  const aegis::core::Severity severities[] = {aegis::core::Severity::High, aegis::core::Severity::High,
                                              aegis::core::Severity::Medium, aegis::core::Severity::Medium,
                                              aegis::core::Severity::Medium};
  for (std::size_t i = 0; i < findings.size(); ++i) {
    const auto& f = findings[i];
    SCOPED_TRACE(outliers[i].participant);
    EXPECT_EQ(f.rule_id, rule_ids[i]);
    EXPECT_EQ(f.severity, severities[i]);
    EXPECT_EQ(f.location.file, "round 7");
    EXPECT_FALSE(f.title.empty());
    EXPECT_NE(f.evidence.find("'" + outliers[i].participant + "'"), std::string::npos) << f.evidence;
    EXPECT_NE(f.evidence.find(outliers[i].reason), std::string::npos) << f.evidence;
    EXPECT_EQ(f.atlas, (std::vector<std::string>{"AML.T0020", "AML.T0018"}));
    EXPECT_EQ(f.nist_ai_rmf, std::vector<std::string>{"MEASURE 2.7"});
    EXPECT_GT(f.remediation.size(), 40u);
    const auto properties = nlohmann::json::parse(f.properties_json);
    EXPECT_EQ(properties.at("participant"), outliers[i].participant);
    EXPECT_EQ(properties.at("round"), 7);
    EXPECT_DOUBLE_EQ(properties.at("update_norm").get<double>(), outliers[i].norm);
    EXPECT_EQ(properties.at("outlier"), std::string(fl::to_string(outliers[i].kind)));
  }
  EXPECT_TRUE(fl::outlier_findings(1, {}).empty());
}

// ---- client-level differential privacy ----

TEST(FederatedClientDp, ClipToNormScalesDownOnlyAboveTheBound) {
  std::vector<float> v = {3, 4};
  EXPECT_DOUBLE_EQ(fl::clip_to_norm(v, 10), 5.0);
  EXPECT_EQ(v, (std::vector<float>{3, 4}));
  EXPECT_DOUBLE_EQ(fl::clip_to_norm(v, 1), 5.0);
  EXPECT_FLOAT_EQ(v[0], 0.6f);
  EXPECT_FLOAT_EQ(v[1], 0.8f);

  // The bound holds exactly after rounding to float, for any vector and bound: the DP sensitivity
  // rests on it.
  std::mt19937_64 rng(5);
  std::normal_distribution<float> gaussian(0.0f, 3.0f);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<float> w(1 + static_cast<std::size_t>(trial) * 37);
    for (float& x : w) x = gaussian(rng);
    const double before = norm(w);
    const double bound = 0.1 + 0.013 * trial;
    EXPECT_DOUBLE_EQ(fl::clip_to_norm(w, bound), before);
    EXPECT_LE(norm(w), bound);
    if (before > bound) {
      EXPECT_NEAR(norm(w), bound, 1e-5 * bound);
    }
  }

  EXPECT_THROW(fl::clip_to_norm(v, 0), aegis::core::Error);
  EXPECT_THROW(fl::clip_to_norm(v, -1), aegis::core::Error);
  std::vector<float> bad = {1, std::numeric_limits<float>::quiet_NaN()};
  EXPECT_THROW(fl::clip_to_norm(bad, 1), aegis::core::Error);
}

namespace {

// Checks mean, standard deviation and the share within one standard deviation of 200,001 draws
// (odd: the last value comes from half a Box-Muller pair) against N(0, stddev^2), each to within five
// standard errors: a correct generator fails one of them with probability below 1e-5.
void expect_gaussian(const std::vector<float>& draws, double stddev) {
  const double n = static_cast<double>(draws.size());
  double sum = 0, squares = 0, within = 0;
  for (float x : draws) {
    sum += x;
    squares += static_cast<double>(x) * x;
    within += std::abs(x) <= stddev;
  }
  const double mean = sum / n;
  const double sd = std::sqrt(squares / n - mean * mean);
  EXPECT_LT(std::abs(mean), 5 * stddev / std::sqrt(n));
  EXPECT_LT(std::abs(sd - stddev), 5 * stddev / std::sqrt(2 * n));
  const double p = 0.682689492137;  // P(|Z| <= 1)
  EXPECT_LT(std::abs(within / n - p), 5 * std::sqrt(p * (1 - p) / n));
}

}  // namespace

TEST(FederatedClientDp, GaussianNoiseHasTheRequestedStandardDeviation) {
  for (const bool secure : {false, true}) {
    SCOPED_TRACE(secure ? "secure" : "seeded");
    std::vector<float> draws(200001, 0.0f);
    fl::add_gaussian_noise(draws, 2.5, secure, 42);
    expect_gaussian(draws, 2.5);
    // The noise adds to what is there.
    std::vector<float> shifted(200001, 100.0f);
    fl::add_gaussian_noise(shifted, 0.5, secure, 43);
    for (float& x : shifted) x -= 100.0f;
    expect_gaussian(shifted, 0.5);
  }
}

TEST(FederatedClientDp, SeededNoiseIsReproducibleAndSecureNoiseIsNot) {
  std::vector<float> a(1001, 1.0f), b(1001, 1.0f), c(1001, 1.0f);
  fl::add_gaussian_noise(a, 1.0, false, 7);
  fl::add_gaussian_noise(b, 1.0, false, 7);
  fl::add_gaussian_noise(c, 1.0, false, 8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::vector<float> s1(1001, 1.0f), s2(1001, 1.0f);
  fl::add_gaussian_noise(s1, 1.0, true, 7);
  fl::add_gaussian_noise(s2, 1.0, true, 7);
  EXPECT_NE(s1, s2);

  std::vector<float> untouched = {1, 2, 3};
  fl::add_gaussian_noise(untouched, 0.0, true, 0);
  EXPECT_EQ(untouched, (std::vector<float>{1, 2, 3}));
  EXPECT_THROW(fl::add_gaussian_noise(untouched, -1.0, false, 0), aegis::core::Error);
  EXPECT_THROW(fl::add_gaussian_noise(untouched, std::numeric_limits<double>::infinity(), false, 0),
               aegis::core::Error);
}

TEST(FederatedClientDp, NoisedMeanDividesTheClippedSumByTheExpectedCount) {
  fl::ClientDpOptions options;
  options.clip_norm = 1.0;
  options.noise_multiplier = 0;  // first without noise: the arithmetic alone
  options.population = 100;
  options.per_round = 10;
  const std::vector<ClientUpdate> updates = {{"a", {3, 4}, 1}, {"b", {0.3f, 0.4f}, 1}, {"c", {0, -2}, 1}};
  auto result = fl::aggregate_client_dp(updates, options, 1);
  // Clipped: (0.6, 0.8), (0.3, 0.4), (0, -1); sum (0.9, 0.2); divided by 10, not by the 3 that came.
  ASSERT_EQ(result.delta.size(), 2u);
  EXPECT_NEAR(result.delta[0], 0.09f, 1e-6);
  EXPECT_NEAR(result.delta[1], 0.02f, 1e-6);
  EXPECT_EQ(result.used, (std::vector<std::string>{"a", "b", "c"}));
  EXPECT_TRUE(result.outliers.empty());

  // With seeded noise: reproducible for a round, different for another, std dev sigma * C / per_round.
  options.noise_multiplier = 2.0;
  options.secure_noise = false;
  options.seed = 99;
  const std::vector<ClientUpdate> wide = {{"a", std::vector<float>(100001, 0.0f), 1}};
  const auto r1 = fl::aggregate_client_dp(wide, options, 1);
  const auto r1_again = fl::aggregate_client_dp(wide, options, 1);
  const auto r2 = fl::aggregate_client_dp(wide, options, 2);
  EXPECT_EQ(r1.delta, r1_again.delta);
  EXPECT_NE(r1.delta, r2.delta);
  double squares = 0;
  for (float x : r1.delta) squares += static_cast<double>(x) * x;
  const double sd = std::sqrt(squares / 100001.0);
  EXPECT_NEAR(sd, 2.0 * 1.0 / 10.0, 5 * 0.2 / std::sqrt(2 * 100001.0));

  options.per_round = 0;
  EXPECT_THROW(fl::aggregate_client_dp(updates, options, 1), aegis::core::Error);
}

TEST(FederatedClientDp, AccountantMatchesTheRdpAccountant) {
  fl::ClientDpOptions options;
  options.noise_multiplier = 1.1;
  options.population = 1000;
  options.per_round = 10;
  options.delta = 1e-5;
  fl::ClientDpAccountant accountant(options);
  EXPECT_DOUBLE_EQ(accountant.sampling_rate(), 0.01);
  EXPECT_EQ(accountant.rounds(), 0u);
  EXPECT_EQ(accountant.epsilon(), 0.0);
  double previous = 0;
  for (std::uint64_t r = 1; r <= 50; ++r) {
    accountant.record_round();
    EXPECT_EQ(accountant.rounds(), r);
    const double eps = accountant.epsilon();
    EXPECT_GT(eps, previous) << "round " << r;
    previous = eps;
    if (r == 1 || r == 10 || r == 50) {
      EXPECT_DOUBLE_EQ(eps, aegis::privacy::epsilon_spent(0.01, 1.1, r, 1e-5, aegis::privacy::RdpConversion::Improved)
                                .epsilon);
    }
  }
  // A restarted aggregator picks up where it was.
  fl::ClientDpAccountant restarted(options);
  restarted.restore(50);
  EXPECT_EQ(restarted.rounds(), 50u);
  EXPECT_DOUBLE_EQ(restarted.epsilon(), accountant.epsilon());
  restarted.restore(0);
  EXPECT_EQ(restarted.epsilon(), 0.0);

  options.conversion = aegis::privacy::RdpConversion::Classic;
  fl::ClientDpAccountant classic(options);
  classic.restore(20);
  EXPECT_DOUBLE_EQ(classic.epsilon(),
                   aegis::privacy::epsilon_spent(0.01, 1.1, 20, 1e-5, aegis::privacy::RdpConversion::Classic).epsilon);

  options.noise_multiplier = 0;
  fl::ClientDpAccountant noiseless(options);
  noiseless.record_round();
  EXPECT_TRUE(std::isinf(noiseless.epsilon()));
}

TEST(FederatedClientDp, OptionsThatGiveNoGuaranteeAreRefused) {
  fl::ClientDpOptions options;
  options.population = 100;
  options.per_round = 10;
  EXPECT_NO_THROW(fl::check_client_dp_options(options));
  auto bad = options;
  bad.population = 5;
  EXPECT_THROW(fl::ClientDpAccountant{bad}, aegis::core::Error);
  bad = options;
  bad.per_round = 0;
  EXPECT_THROW(fl::ClientDpAccountant{bad}, aegis::core::Error);
  bad = options;
  bad.clip_norm = 0;
  EXPECT_THROW(fl::check_client_dp_options(bad), aegis::core::Error);
  bad = options;
  bad.delta = 1;
  EXPECT_THROW(fl::check_client_dp_options(bad), aegis::core::Error);
  bad = options;
  bad.noise_multiplier = -0.5;
  EXPECT_THROW(fl::check_client_dp_options(bad), aegis::core::Error);
}
