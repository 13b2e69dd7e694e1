// Membership-inference metrics and ROC plots: hand-worked small cases (ties included), the
// statistical properties the bootstrap must have, and plots that open in a real image reader.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <vector>

#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include "aegis/attacks/inference/membership_metrics.h"
#include "aegis/attacks/inference/roc_plot.h"
#include "aegis/core/error.h"
#include "test_support.h"

namespace {

using namespace aegis;

// Members {0.9, 0.8, 0.5, 0.5}, non-members {0.7, 0.5, 0.3}: one member tie and one cross tie at 0.5.
const std::vector<double> kMembers{0.9, 0.8, 0.5, 0.5};
const std::vector<double> kNonmembers{0.7, 0.5, 0.3};

std::vector<double> gaussian(std::size_t n, double mean, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> noise(mean, 1.0);
  std::vector<double> out(n);
  for (double& v : out) v = noise(rng);
  return out;
}

double trapezoid(const attacks::RocCurve& roc) {
  double area = 0;
  for (std::size_t i = 1; i < roc.fpr.size(); ++i)
    area += (roc.fpr[i] - roc.fpr[i - 1]) * (roc.tpr[i] + roc.tpr[i - 1]) / 2;
  return area;
}

std::string read_text(const std::filesystem::path& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

TEST(MembershipMetrics, RocCurveMatchesTheHandWorkedExampleWithTies) {
  const auto roc = attacks::roc_curve(kMembers, kNonmembers);
  // Thresholds inf, 0.9, 0.8, 0.7, 0.5, 0.3: the tie at 0.5 moves both rates in one step.
  const std::vector<double> fpr{0, 0, 0, 1.0 / 3, 2.0 / 3, 1};
  const std::vector<double> tpr{0, 0.25, 0.5, 0.5, 1, 1};
  const std::vector<double> threshold{0.9, 0.8, 0.7, 0.5, 0.3};
  ASSERT_EQ(roc.fpr.size(), fpr.size());
  ASSERT_EQ(roc.tpr.size(), tpr.size());
  ASSERT_EQ(roc.threshold.size(), fpr.size());
  EXPECT_TRUE(std::isinf(roc.threshold[0]) && roc.threshold[0] > 0);
  for (std::size_t i = 0; i < fpr.size(); ++i) {
    EXPECT_DOUBLE_EQ(roc.fpr[i], fpr[i]) << i;
    EXPECT_DOUBLE_EQ(roc.tpr[i], tpr[i]) << i;
    if (i > 0) {
      EXPECT_DOUBLE_EQ(roc.threshold[i], threshold[i - 1]) << i;
    }
  }
}

TEST(MembershipMetrics, AucCountsTiesAsHalf) {
  // Pairs won: 3 + 3 + (1 + 1/2) + (1 + 1/2) = 9 of 12.
  EXPECT_DOUBLE_EQ(attacks::roc_auc(kMembers, kNonmembers), 0.75);
  EXPECT_DOUBLE_EQ(attacks::roc_auc(std::vector<double>{1, 1}, std::vector<double>{1, 1, 1}), 0.5);
  EXPECT_DOUBLE_EQ(attacks::roc_auc(std::vector<double>{0.0}, std::vector<double>{1.0}), 0.0);
}

TEST(MembershipMetrics, AucEqualsTheAreaUnderTheCurveOnHeavilyTiedScores) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> level(0, 9);
  std::vector<double> members(300), nonmembers(500);
  for (double& v : members) v = level(rng) + (level(rng) > 4 ? 1 : 0);
  for (double& v : nonmembers) v = level(rng);
  EXPECT_NEAR(attacks::roc_auc(members, nonmembers), trapezoid(attacks::roc_curve(members, nonmembers)), 1e-12);
}

TEST(MembershipMetrics, IdenticalDistributionsGiveChanceAndSeparatedOnesGiveOne) {
  const auto a = gaussian(5000, 0.0, 1), b = gaussian(5000, 0.0, 2);
  EXPECT_NEAR(attacks::roc_auc(a, b), 0.5, 0.03);

  std::vector<double> high(100), low(200);
  for (std::size_t i = 0; i < high.size(); ++i) high[i] = 10.0 + static_cast<double>(i);
  for (std::size_t i = 0; i < low.size(); ++i) low[i] = -static_cast<double>(i);
  EXPECT_DOUBLE_EQ(attacks::roc_auc(high, low), 1.0);
  const auto roc = attacks::roc_curve(high, low);
  EXPECT_DOUBLE_EQ(attacks::tpr_at_fpr(roc, 0.0), 1.0);
  EXPECT_DOUBLE_EQ(attacks::best_balanced_accuracy(roc), 1.0);
}

TEST(MembershipMetrics, TprAtFprTakesTheBestPointAtOrBelowTheRate) {
  const auto roc = attacks::roc_curve(kMembers, kNonmembers);
  EXPECT_DOUBLE_EQ(attacks::tpr_at_fpr(roc, 0.0), 0.5);
  EXPECT_DOUBLE_EQ(attacks::tpr_at_fpr(roc, 0.2), 0.5);
  EXPECT_DOUBLE_EQ(attacks::tpr_at_fpr(roc, 1.0 / 3), 0.5);  // the point at exactly the rate counts
  EXPECT_DOUBLE_EQ(attacks::tpr_at_fpr(roc, 0.66), 0.5);      // not interpolated towards (2/3, 1)
  EXPECT_DOUBLE_EQ(attacks::tpr_at_fpr(roc, 2.0 / 3), 1.0);
  // (0, 0.5) is the best trade-off: (0.5 + 1 - 0) / 2.
  EXPECT_DOUBLE_EQ(attacks::best_balanced_accuracy(roc), 0.75);
}

TEST(MembershipMetrics, RejectsEmptyAndNonFiniteScoresNamingTheRecord) {
  const std::vector<double> none;
  EXPECT_THROW(attacks::roc_curve(none, kNonmembers), core::Error);
  EXPECT_THROW(attacks::roc_auc(kMembers, none), core::Error);
  std::vector<double> bad = kNonmembers;
  bad[2] = std::nan("");
  try {
    attacks::roc_curve(kMembers, bad);
    FAIL() << "a NaN score was accepted";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-member record 2"), std::string::npos) << e.what();
  }
  bad = kMembers;
  bad[1] = INFINITY;
  EXPECT_THROW(attacks::evaluate_membership(bad, kNonmembers, std::vector<double>{0.1}), core::Error);
}

TEST(MembershipMetrics, EvaluateAgreesWithTheSeparateFunctions) {
  const auto members = gaussian(400, 1.0, 3), nonmembers = gaussian(600, 0.0, 4);
  const std::vector<double> fprs{0.1, 0.01};
  const auto m = attacks::evaluate_membership(members, nonmembers, fprs, 50, 1);
  EXPECT_EQ(m.members, 400u);
  EXPECT_EQ(m.nonmembers, 600u);
  EXPECT_DOUBLE_EQ(m.auc, attacks::roc_auc(members, nonmembers));
  EXPECT_DOUBLE_EQ(m.balanced_accuracy, attacks::best_balanced_accuracy(m.roc));
  ASSERT_EQ(m.tpr_at.size(), 2u);
  ASSERT_EQ(m.tpr_ci.size(), 2u);
  EXPECT_EQ(m.fprs, fprs);
  for (std::size_t k = 0; k < fprs.size(); ++k) EXPECT_DOUBLE_EQ(m.tpr_at[k], attacks::tpr_at_fpr(m.roc, fprs[k]));
  EXPECT_THROW(attacks::evaluate_membership(members, nonmembers, std::vector<double>{0.0}), core::Error);
  EXPECT_THROW(attacks::evaluate_membership(members, nonmembers, std::vector<double>{1.5}), core::Error);
  EXPECT_THROW(attacks::evaluate_membership(members, nonmembers, fprs, -1), core::Error);
}

TEST(MembershipMetrics, BootstrapIntervalsContainTheEstimateAndNarrowWithMoreData) {
  const std::vector<double> fprs{0.1};
  const auto small = attacks::evaluate_membership(gaussian(200, 1.0, 5), gaussian(200, 0.0, 6), fprs, 200, 9);
  const auto large = attacks::evaluate_membership(gaussian(5000, 1.0, 7), gaussian(5000, 0.0, 8), fprs, 200, 9);
  for (const auto* m : {&small, &large}) {
    EXPECT_LE(m->auc_ci.low, m->auc);
    EXPECT_GE(m->auc_ci.high, m->auc);
    EXPECT_LT(m->auc_ci.low, m->auc_ci.high);
    EXPECT_LE(m->tpr_ci[0].low, m->tpr_at[0]);
    EXPECT_GE(m->tpr_ci[0].high, m->tpr_at[0]);
  }
  // The interval's width goes as 1 / sqrt(n): 25 times the data, about a fifth of the width.
  const double small_width = small.auc_ci.high - small.auc_ci.low;
  const double large_width = large.auc_ci.high - large.auc_ci.low;
  EXPECT_LT(large_width, small_width / 3);
  EXPECT_LT(large.tpr_ci[0].high - large.tpr_ci[0].low, (small.tpr_ci[0].high - small.tpr_ci[0].low) / 3);
  // AUC of N(1, 1) against N(0, 1) is Phi(1 / sqrt 2) = 0.7602.
  EXPECT_LT(large.auc_ci.low, 0.7602 + 0.005);
  EXPECT_GT(large.auc_ci.high, 0.7602 - 0.005);
}

TEST(MembershipMetrics, BootstrapIsDeterministicPerSeed) {
  const auto members = gaussian(300, 0.5, 10), nonmembers = gaussian(300, 0.0, 11);
  const std::vector<double> fprs{0.05};
  const auto a = attacks::evaluate_membership(members, nonmembers, fprs, 100, 42);
  const auto b = attacks::evaluate_membership(members, nonmembers, fprs, 100, 42);
  const auto c = attacks::evaluate_membership(members, nonmembers, fprs, 100, 43);
  EXPECT_EQ(a.auc_ci.low, b.auc_ci.low);
  EXPECT_EQ(a.auc_ci.high, b.auc_ci.high);
  EXPECT_EQ(a.tpr_ci[0].low, b.tpr_ci[0].low);
  EXPECT_EQ(a.tpr_ci[0].high, b.tpr_ci[0].high);
  EXPECT_TRUE(a.auc_ci.low != c.auc_ci.low || a.auc_ci.high != c.auc_ci.high);
  EXPECT_EQ(a.auc, c.auc);  // the point estimate never depends on the seed

  const auto none = attacks::evaluate_membership(members, nonmembers, fprs, 0);
  EXPECT_TRUE(std::isnan(none.auc_ci.low) && std::isnan(none.auc_ci.high));
}

TEST(MembershipMetrics, MinimumNonmembersIsTheInverseRate) {
  EXPECT_EQ(attacks::min_nonmembers_for_fpr(0.001), 1000u);
  EXPECT_EQ(attacks::min_nonmembers_for_fpr(0.01), 100u);
  EXPECT_EQ(attacks::min_nonmembers_for_fpr(1e-4), 10000u);
  EXPECT_EQ(attacks::min_nonmembers_for_fpr(0.3), 4u);
  EXPECT_EQ(attacks::min_nonmembers_for_fpr(1.0), 1u);
  EXPECT_THROW(attacks::min_nonmembers_for_fpr(0.0), core::Error);
  EXPECT_THROW(attacks::min_nonmembers_for_fpr(-0.1), core::Error);
}

TEST(MembershipMetrics, UnresolvableRateNamesTheNumbersAndARateThatWorks) {
  const std::vector<double> fprs{0.01, 0.001};
  EXPECT_NO_THROW(attacks::check_fpr_resolvable(1000, fprs));
  try {
    attacks::check_fpr_resolvable(400, fprs);
    FAIL() << "400 non-members were accepted for a 0.1% FPR";
  } catch (const core::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("400 non-members"), std::string::npos) << what;
    EXPECT_NE(what.find("0.1% FPR"), std::string::npos) << what;
    EXPECT_NE(what.find("at least 1000"), std::string::npos) << what;
    EXPECT_NE(e.hint().find("--nonmembers"), std::string::npos) << e.hint();
    EXPECT_NE(e.hint().find("--fpr 0.01"), std::string::npos) << e.hint();
  }
}

// ---- plots ----

std::vector<attacks::RocSeries> two_series() {
  const auto strong_m = gaussian(2000, 2.0, 20), strong_n = gaussian(2000, 0.0, 21);
  const auto weak_m = gaussian(2000, 0.3, 22), weak_n = gaussian(2000, 0.0, 23);
  return {{"LiRA <online> & co", attacks::roc_curve(strong_m, strong_n), attacks::roc_auc(strong_m, strong_n)},
          {"loss", attacks::roc_curve(weak_m, weak_n), attacks::roc_auc(weak_m, weak_n)}};
}

TEST(RocPlot, PngOpensAt800By800AndShowsTheCurves) {
  test::TempDir dir;
  const auto series = two_series();
  for (bool log_scale : {true, false}) {
    const auto path = (dir.path / (log_scale ? "log.png" : "linear.png")).string();
    attacks::write_roc_png(path, series, log_scale);
    const cv::Mat image = cv::imread(path, cv::IMREAD_COLOR);
    ASSERT_FALSE(image.empty()) << path;
    EXPECT_EQ(image.cols, 800);
    EXPECT_EQ(image.rows, 800);
    // The first series' colour (tab10 blue, BGR 180 119 31) is on the page.
    cv::Mat blue;
    cv::inRange(image, cv::Scalar(170, 109, 21), cv::Scalar(190, 129, 41), blue);
    EXPECT_GT(cv::countNonZero(blue), 200) << path;
  }
}

TEST(RocPlot, SvgEscapesNamesAndLabelsTheAuc) {
  test::TempDir dir;
  const auto series = two_series();
  const auto path = dir.path / "roc.svg";
  attacks::write_roc_svg(path.string(), series);
  const std::string svg = read_text(path);
  char auc[16];
  std::snprintf(auc, sizeof auc, "%.3f", series[0].auc);
  EXPECT_NE(svg.find("LiRA &lt;online&gt; &amp; co (AUC " + std::string(auc) + ")"), std::string::npos);
  EXPECT_EQ(svg.find("<online>"), std::string::npos);
  EXPECT_NE(svg.find("loss (AUC "), std::string::npos);
  EXPECT_NE(svg.find("stroke-dasharray"), std::string::npos);  // the chance diagonal
  EXPECT_EQ(svg.rfind("</svg>"), svg.size() - 7);
  // 2000 non-members: the log axes reach down to 10^-4.
  EXPECT_NE(svg.find(">10<tspan dy=\"-7\" font-size=\"11\">-4</tspan>"), std::string::npos);

  const std::vector<attacks::RocSeries> hostile{{std::string("bad\x01name\xff"), series[1].roc, series[1].auc}};
  attacks::write_roc_svg(path.string(), hostile);
  const std::string cleaned = read_text(path);
  EXPECT_NE(cleaned.find("bad?name? (AUC"), std::string::npos);
}

TEST(RocPlot, UnwritablePathThrowsNamingIt) {
  const auto series = two_series();
  const std::string path = "/nonexistent-aegis-folder/roc.png";
  for (bool svg : {true, false}) {
    try {
      if (svg)
        attacks::write_roc_svg(path, series);
      else
        attacks::write_roc_png(path, series);
      FAIL() << "wrote into a missing folder";
    } catch (const core::Error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(e.hint().find("folder"), std::string::npos) << e.hint();
    }
  }
  EXPECT_THROW(attacks::write_roc_svg("/tmp/unused.svg", std::span<const attacks::RocSeries>{}), core::Error);
}

}  // namespace
