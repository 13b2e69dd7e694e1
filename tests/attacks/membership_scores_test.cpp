// Membership scores: the metric attacks against values worked out by hand, logits and probabilities
// agreeing, LiRA on synthetic reference statistics with a known membership effect, and the shadow
// attack on synthetic predictions where members are fitted more confidently.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "aegis/attacks/inference/membership_metrics.h"
#include "aegis/attacks/inference/membership_scores.h"
#include "aegis/core/error.h"

namespace {

using namespace aegis;
using models::ScoreKind;

// Logits (2, 1, 0); softmax (0.665241, 0.244728, 0.090031), values from the formulas in double.
const std::vector<float> kLogits{2, 1, 0, 2, 1, 0};
const std::vector<int> kLabels{0, 2};

std::vector<float> softmax_rows(const std::vector<float>& logits, std::size_t classes) {
  std::vector<float> out(logits.size());
  for (std::size_t r = 0; r < logits.size() / classes; ++r) {
    double top = *std::max_element(logits.begin() + static_cast<std::ptrdiff_t>(r * classes),
                                   logits.begin() + static_cast<std::ptrdiff_t>((r + 1) * classes));
    double sum = 0;
    for (std::size_t j = 0; j < classes; ++j) sum += std::exp(logits[r * classes + j] - top);
    for (std::size_t j = 0; j < classes; ++j)
      out[r * classes + j] = static_cast<float>(std::exp(logits[r * classes + j] - top) / sum);
  }
  return out;
}

TEST(MembershipScores, LogitScoresMatchHandComputedValues) {
  const auto loss = attacks::loss_scores(kLogits, kLabels, 3, ScoreKind::Logits);
  const auto confidence = attacks::confidence_scores(kLogits, kLabels, 3, ScoreKind::Logits);
  const auto entropy = attacks::entropy_scores(kLogits, kLabels, 3, ScoreKind::Logits);
  const auto mentr = attacks::modified_entropy_scores(kLogits, kLabels, 3, ScoreKind::Logits);
  const auto phi = attacks::logit_scaled_confidence(kLogits, kLabels, 3, ScoreKind::Logits);
  ASSERT_EQ(loss.size(), 2u);
  EXPECT_NEAR(loss[0], -0.40760596444438013, 1e-12);
  EXPECT_NEAR(loss[1], -2.40760596444438, 1e-12);
  EXPECT_NEAR(confidence[0], 0.665240955774822, 1e-12);
  EXPECT_NEAR(confidence[1], 0.665240955774822, 1e-12);  // confidence ignores the label
  EXPECT_NEAR(entropy[0], -0.8323955818399389, 1e-12);
  EXPECT_NEAR(entropy[1], -0.8323955818399389, 1e-12);
  EXPECT_NEAR(mentr[0], -0.21363353879960595, 1e-12);
  EXPECT_NEAR(mentr[1], -2.987540338620806, 1e-12);
  EXPECT_NEAR(phi[0], 0.6867383124817777, 1e-12);  // 2 - log(e + 1)
  EXPECT_NEAR(phi[1], -2.3132616875182226, 1e-12);
}

TEST(MembershipScores, ProbabilityScoresMatchHandComputedValues) {
  const std::vector<float> p{0.5f, 0.3f, 0.2f};
  const std::vector<int> y{1};
  EXPECT_NEAR(attacks::loss_scores(p, y, 3, ScoreKind::Probabilities)[0], std::log(0.3), 1e-6);
  EXPECT_NEAR(attacks::confidence_scores(p, y, 3, ScoreKind::Probabilities)[0], 0.5, 1e-6);
  EXPECT_NEAR(attacks::entropy_scores(p, y, 3, ScoreKind::Probabilities)[0],
              0.5 * std::log(0.5) + 0.3 * std::log(0.3) + 0.2 * std::log(0.2), 1e-6);
  EXPECT_NEAR(attacks::modified_entropy_scores(p, y, 3, ScoreKind::Probabilities)[0],
              0.7 * std::log(0.3) + 0.5 * std::log(0.5) + 0.2 * std::log(0.8), 1e-6);
  EXPECT_NEAR(attacks::logit_scaled_confidence(p, y, 3, ScoreKind::Probabilities)[0], std::log(0.3 / 0.7), 1e-6);
}

TEST(MembershipScores, LogitsAndTheirProbabilitiesAgree) {
  std::mt19937 rng(1);
  std::normal_distribution<float> noise(0.0f, 3.0f);
  const std::size_t classes = 10, rows = 50;
  std::vector<float> logits(rows * classes);
  std::vector<int> labels(rows);
  for (float& v : logits) v = noise(rng);
  for (std::size_t i = 0; i < rows; ++i) labels[i] = static_cast<int>(i % classes);
  const auto probabilities = softmax_rows(logits, classes);
  using Score = std::vector<double> (*)(std::span<const float>, std::span<const int>, std::size_t, ScoreKind);
  for (Score score : {Score{attacks::loss_scores}, Score{attacks::confidence_scores}, Score{attacks::entropy_scores},
                      Score{attacks::modified_entropy_scores}, Score{attacks::logit_scaled_confidence}}) {
    const auto a = score(logits, labels, classes, ScoreKind::Logits);
    const auto b = score(probabilities, labels, classes, ScoreKind::Probabilities);
    ASSERT_EQ(a.size(), rows);
    // Float probabilities carry about 7 digits; log p of a tiny p keeps them in relative terms.
    for (std::size_t i = 0; i < rows; ++i) EXPECT_NEAR(a[i], b[i], 1e-4 * std::max(1.0, std::abs(a[i]))) << i;
  }
}

TEST(MembershipScores, ExtremeLogitsStayFinite) {
  const std::vector<float> logits{1000, -1000, -1000, 1000, -1000, -1000};
  const std::vector<int> labels{0, 1};
  const auto phi = attacks::logit_scaled_confidence(logits, labels, 3, ScoreKind::Logits);
  EXPECT_NEAR(phi[0], 2000 - std::log(2.0), 1e-9);
  EXPECT_NEAR(phi[1], -2000.0, 1e-9);
  EXPECT_NEAR(attacks::loss_scores(logits, labels, 3, ScoreKind::Logits)[1], -2000.0, 1e-9);
  for (auto scores : {attacks::entropy_scores(logits, labels, 3, ScoreKind::Logits),
                      attacks::modified_entropy_scores(logits, labels, 3, ScoreKind::Logits),
                      attacks::confidence_scores(logits, labels, 3, ScoreKind::Logits)})
    for (double s : scores) EXPECT_TRUE(std::isfinite(s));

  // A probability of exactly 1: phi is capped by the 1e-30 clamp, not infinite.
  const std::vector<float> certain{1.0f, 0.0f};
  const auto capped = attacks::logit_scaled_confidence(certain, std::vector<int>{0}, 2, ScoreKind::Probabilities);
  EXPECT_NEAR(capped[0], -std::log(1e-30), 1e-6);
  EXPECT_TRUE(std::isfinite(attacks::loss_scores(certain, std::vector<int>{1}, 2, ScoreKind::Probabilities)[0]));
}

TEST(MembershipScores, RejectsMismatchedInputs) {
  EXPECT_THROW(attacks::loss_scores(kLogits, std::vector<int>{0}, 3, ScoreKind::Logits), core::Error);
  EXPECT_THROW(attacks::loss_scores(kLogits, std::vector<int>{0, 3}, 3, ScoreKind::Logits), core::Error);
  EXPECT_THROW(attacks::loss_scores(std::vector<float>{1}, std::vector<int>{0}, 1, ScoreKind::Logits), core::Error);
  EXPECT_THROW(attacks::loss_scores(std::vector<float>{1, NAN}, std::vector<int>{0}, 2, ScoreKind::Logits),
               core::Error);
}

// ---- LiRA ----

// Records whose phi rises by a record-specific amount when a model trains on them, as LiRA assumes.
struct LiraWorld {
  std::size_t models = 16, records = 400, augmentations = 2;
  std::vector<double> target, reference;
  std::vector<std::uint8_t> in;
};

LiraWorld make_world(std::uint32_t seed) {
  LiraWorld w;
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(0.0, 1.0), base(0.0, 2.0);
  std::uniform_real_distribution<double> effect(1.0, 5.0);
  std::vector<double> mean(w.records), shift(w.records);
  for (std::size_t i = 0; i < w.records; ++i) {
    mean[i] = base(rng);
    shift[i] = effect(rng);
  }
  // Each record is IN for exactly half the reference models, as in the paper.
  w.in.assign(w.models * w.records, 0);
  std::vector<std::size_t> order(w.models);
  for (std::size_t i = 0; i < w.records; ++i) {
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), rng);
    for (std::size_t k = 0; k < w.models / 2; ++k) w.in[order[k] * w.records + i] = 1;
  }
  w.reference.resize(w.models * w.records * w.augmentations);
  for (std::size_t m = 0; m < w.models; ++m)
    for (std::size_t i = 0; i < w.records; ++i)
      for (std::size_t a = 0; a < w.augmentations; ++a)
        w.reference[(m * w.records + i) * w.augmentations + a] =
            mean[i] + 0.5 * static_cast<double>(a) + (w.in[m * w.records + i] ? shift[i] : 0.0) + noise(rng);
  // The target trained on the first half of the records.
  w.target.resize(w.records * w.augmentations);
  for (std::size_t i = 0; i < w.records; ++i)
    for (std::size_t a = 0; a < w.augmentations; ++a)
      w.target[i * w.augmentations + a] =
          mean[i] + 0.5 * static_cast<double>(a) + (i < w.records / 2 ? shift[i] : 0.0) + noise(rng);
  return w;
}

double auc_of_halves(const std::vector<double>& scores) {
  const std::span<const double> all(scores);
  return attacks::roc_auc(all.first(scores.size() / 2), all.subspan(scores.size() / 2));
}

TEST(MembershipScores, LiraSeparatesMembersAndOnlineIsAtLeastAsGoodAsOffline) {
  const LiraWorld w = make_world(3);
  for (bool fixed : {true, false}) {
    attacks::LiraOptions options;
    options.fixed_variance = fixed;
    const auto online =
        attacks::lira_online(w.target, w.reference, w.in, w.models, w.records, w.augmentations, options);
    const auto offline =
        attacks::lira_offline(w.target, w.reference, w.in, w.models, w.records, w.augmentations, options);
    ASSERT_EQ(online.size(), w.records);
    const double online_auc = auc_of_halves(online), offline_auc = auc_of_halves(offline);
    EXPECT_GT(online_auc, 0.9) << "fixed variance " << fixed;
    EXPECT_GT(offline_auc, 0.9) << "fixed variance " << fixed;
    EXPECT_GE(online_auc, offline_auc) << "fixed variance " << fixed;
  }
}

TEST(MembershipScores, LiraMatchesAHandWorkedRecord) {
  // One record, four models: IN values 3 and 5 (mean 4), OUT values 0 and 2 (mean 1); variance 2 each.
  const std::vector<double> reference{3, 0, 5, 2};
  const std::vector<std::uint8_t> in{1, 0, 1, 0};
  const std::vector<double> target{4};
  const auto online = attacks::lira_online(target, reference, in, 4, 1, 1);
  const auto offline = attacks::lira_offline(target, reference, in, 4, 1, 1);
  // log N(4; 4, 2) - log N(4; 1, 2) = 0 + 9 / (2 * 2); z = (4 - 1) / sqrt 2.
  EXPECT_NEAR(online[0], 2.25, 1e-12);
  EXPECT_NEAR(offline[0], 3 / std::sqrt(2.0), 1e-12);
}

TEST(MembershipScores, LiraScoresRecordsWithoutInModelsOffline) {
  LiraWorld w = make_world(4);
  for (std::size_t m = 0; m < w.models; ++m) w.in[m * w.records + 7] = 0;  // nobody trained on record 7
  EXPECT_EQ(attacks::records_without_reference(w.in, w.models, w.records, true), 1u);
  EXPECT_EQ(attacks::records_without_reference(w.in, w.models, w.records, false), 0u);
  const auto online = attacks::lira_online(w.target, w.reference, w.in, w.models, w.records, w.augmentations);
  const auto offline = attacks::lira_offline(w.target, w.reference, w.in, w.models, w.records, w.augmentations);
  EXPECT_DOUBLE_EQ(online[7], offline[7]);
  EXPECT_NE(online[8], offline[8]);
}

TEST(MembershipScores, LiraRefusesRecordsWithoutOutModels) {
  LiraWorld w = make_world(5);
  for (std::size_t m = 0; m < w.models; ++m) w.in[m * w.records + 3] = w.in[m * w.records + 9] = 1;
  for (bool online : {true, false}) {
    try {
      if (online)
        attacks::lira_online(w.target, w.reference, w.in, w.models, w.records, w.augmentations);
      else
        attacks::lira_offline(w.target, w.reference, w.in, w.models, w.records, w.augmentations);
      FAIL() << "records without OUT models were scored";
    } catch (const core::Error& e) {
      EXPECT_NE(std::string(e.what()).find("2 of 400 records"), std::string::npos) << e.what();
      EXPECT_NE(e.hint().find("reference models"), std::string::npos) << e.hint();
    }
  }
  // Sizes that disagree are refused too.
  EXPECT_THROW(attacks::lira_offline(w.target, w.reference, w.in, w.models, w.records, 3), core::Error);
}

// ---- shadow attack ----

// Members: the true class's logit well above the rest. Non-members: a weaker, noisier margin, so
// some are misclassified.
void synthetic_predictions(std::uint32_t seed, std::size_t per_group, std::vector<float>& logits,
                           std::vector<int>& labels, std::vector<std::uint8_t>& member) {
  constexpr std::size_t classes = 10;
  std::mt19937 rng(seed);
  std::normal_distribution<float> other(0.0f, 1.0f), in_margin(6.0f, 1.0f), out_margin(2.0f, 1.5f);
  std::uniform_int_distribution<int> label(0, classes - 1);
  for (std::size_t i = 0; i < 2 * per_group; ++i) {
    const bool is_member = i % 2 == 0;
    const int y = label(rng);
    for (std::size_t j = 0; j < classes; ++j)
      logits.push_back(static_cast<int>(j) == y ? (is_member ? in_margin(rng) : out_margin(rng)) : other(rng));
    labels.push_back(y);
    member.push_back(is_member ? 1 : 0);
  }
}

TEST(MembershipScores, ShadowAttackSeparatesHeldOutPredictions) {
  std::vector<float> shadow, target;
  std::vector<int> shadow_labels, target_labels;
  std::vector<std::uint8_t> shadow_member, target_member;
  synthetic_predictions(11, 1000, shadow, shadow_labels, shadow_member);
  synthetic_predictions(12, 500, target, target_labels, target_member);

  attacks::ShadowAttackModel attack;
  EXPECT_THROW(attack.score(target, target_labels, 10, ScoreKind::Logits), core::Error);
  attack.fit(shadow, shadow_labels, 10, ScoreKind::Logits, shadow_member);
  ASSERT_TRUE(attack.fitted());
  const auto scores = attack.score(target, target_labels, 10, ScoreKind::Logits);
  std::vector<double> members, nonmembers;
  for (std::size_t i = 0; i < scores.size(); ++i) (target_member[i] ? members : nonmembers).push_back(scores[i]);
  EXPECT_GT(attacks::roc_auc(members, nonmembers), 0.8);

  // Fitting on the same data again gives the same model: no randomness in training.
  attacks::ShadowAttackModel again;
  again.fit(shadow, shadow_labels, 10, ScoreKind::Logits, shadow_member);
  EXPECT_EQ(again.weights(), attack.weights());

  // The same predictions as probabilities give nearly the same scores.
  attacks::ShadowAttackModel from_probabilities;
  from_probabilities.fit(softmax_rows(shadow, 10), shadow_labels, 10, ScoreKind::Probabilities, shadow_member);
  const auto p_scores = from_probabilities.score(softmax_rows(target, 10), target_labels, 10, ScoreKind::Probabilities);
  for (std::size_t i = 0; i < scores.size(); i += 97) EXPECT_NEAR(p_scores[i], scores[i], 1e-2 * (1 + std::abs(scores[i])));
}

TEST(MembershipScores, ShadowAttackNeedsBothKindsOfRecord) {
  std::vector<float> shadow;
  std::vector<int> labels;
  std::vector<std::uint8_t> member;
  synthetic_predictions(13, 20, shadow, labels, member);
  attacks::ShadowAttackModel attack;
  const std::vector<std::uint8_t> all_members(member.size(), 1), none(member.size(), 0);
  EXPECT_THROW(attack.fit(shadow, labels, 10, ScoreKind::Logits, all_members), core::Error);
  EXPECT_THROW(attack.fit(shadow, labels, 10, ScoreKind::Logits, none), core::Error);
  EXPECT_THROW(attack.fit(shadow, labels, 10, ScoreKind::Logits, std::span(member).first(5)), core::Error);
  EXPECT_FALSE(attack.fitted());
}

}  // namespace
