// How well a membership-inference attack tells training records from others: ROC, AUC, TPR at a
// low FPR (the measure Carlini et al. 2022 argue for), with bootstrap intervals.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace aegis::attacks {

// Scores are "higher = more likely a member"; a record is called a member when score >= threshold.
// Points run from (0, 0), whose threshold is +infinity, to (1, 1), with one point per distinct
// score, so thresholds strictly descend and tied scores move FPR and TPR together.
struct RocCurve {
  std::vector<double> fpr, tpr, threshold;
};

// Throws core::Error when either side is empty or a score is not finite (naming the record).
RocCurve roc_curve(std::span<const double> member_scores, std::span<const double> nonmember_scores);

// Area under the ROC curve as the Mann-Whitney statistic: P(member score > non-member score), ties
// counting 1/2. Same checks as roc_curve.
double roc_auc(std::span<const double> member_scores, std::span<const double> nonmember_scores);

// The largest TPR among points whose FPR <= fpr (the LiRA paper's reading; 0 only at the origin).
double tpr_at_fpr(const RocCurve& roc, double fpr);

// max over thresholds of (TPR + 1 - FPR) / 2; 0.5 means the attack does no better than a coin.
double best_balanced_accuracy(const RocCurve& roc);

struct Interval {
  double low = 0, high = 0;
};

struct MembershipMetrics {
  double auc = 0;
  Interval auc_ci;                 // 95% percentile bootstrap; NaN bounds when no resamples were asked for
  double balanced_accuracy = 0;
  std::vector<double> fprs;        // the rates asked for, in the order given
  std::vector<double> tpr_at;      // tpr_at[k] = tpr_at_fpr(roc, fprs[k])
  std::vector<Interval> tpr_ci;    // bootstrap interval of tpr_at[k]
  std::size_t members = 0, nonmembers = 0;
  RocCurve roc;
};

// Point estimates and 95% percentile bootstrap intervals, members and non-members resampled
// separately with replacement. The same inputs and seed give the same intervals on any platform.
// Throws core::Error on the inputs roc_curve rejects, a rate outside (0, 1] or negative resamples;
// it does not call check_fpr_resolvable (callers decide whether an unresolvable rate is an error).
MembershipMetrics evaluate_membership(std::span<const double> member_scores, std::span<const double> nonmember_scores,
                                      std::span<const double> fprs, int bootstrap_resamples = 200,
                                      std::uint64_t seed = 0);

// ceil(1 / fpr): with fewer non-members the smallest non-zero FPR, 1 / n, is already above fpr.
// Throws core::Error when fpr is not in (0, 1].
std::size_t min_nonmembers_for_fpr(double fpr);

// Throws core::Error, with the numbers and what to change, when some rate needs more non-members.
void check_fpr_resolvable(std::size_t nonmembers, std::span<const double> fprs);

}  // namespace aegis::attacks
