#include "aegis/attacks/inference/membership_metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <string>

#include "aegis/core/error.h"

namespace aegis::attacks {
namespace {

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);
  return text;
}

void check_scores(std::span<const double> scores, const char* side) {
  if (scores.empty())
    throw core::Error(std::string("membership metrics: there are no ") + side + " scores",
                      "an attack is measured on both members and non-members; give at least one of each");
  for (std::size_t i = 0; i < scores.size(); ++i)
    if (!std::isfinite(scores[i]))
      throw core::Error(std::string("membership metrics: ") + side + " record " + std::to_string(i) + " has score " +
                            number(scores[i]),
                        "a non-finite score usually means the model's outputs overflowed; check that record");
}

void check_rate(double fpr) {
  if (!(fpr > 0.0 && fpr <= 1.0))
    throw core::Error("membership metrics: a false-positive rate of " + number(fpr) + " is not in (0, 1]",
                      "give rates as fractions, for example 0.01 for 1%");
}

// Every score replaced by the index of its value among the distinct values, highest first. All the
// metrics, and every bootstrap resample, are then counts per distinct value: one sort serves them all.
struct Ranking {
  std::vector<double> values;                     // distinct scores, descending
  std::vector<std::uint32_t> member, nonmember;   // each record's index into values
};

Ranking rank(std::span<const double> members, std::span<const double> nonmembers) {
  check_scores(members, "member");
  check_scores(nonmembers, "non-member");
  if (members.size() + nonmembers.size() > std::numeric_limits<std::uint32_t>::max())
    throw core::Error("membership metrics: more than 4 billion records", "evaluate a sample of the records");
  struct Entry {
    double score;
    std::uint32_t index;  // members first, then non-members
  };
  std::vector<Entry> entries;
  entries.reserve(members.size() + nonmembers.size());
  for (std::size_t i = 0; i < members.size(); ++i) entries.push_back({members[i], static_cast<std::uint32_t>(i)});
  for (std::size_t i = 0; i < nonmembers.size(); ++i)
    entries.push_back({nonmembers[i], static_cast<std::uint32_t>(members.size() + i)});
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.score > b.score; });

  Ranking r;
  r.member.resize(members.size());
  r.nonmember.resize(nonmembers.size());
  for (const Entry& e : entries) {
    if (r.values.empty() || e.score != r.values.back()) r.values.push_back(e.score);
    const auto k = static_cast<std::uint32_t>(r.values.size() - 1);
    if (e.index < members.size())
      r.member[e.index] = k;
    else
      r.nonmember[e.index - members.size()] = k;
  }
  return r;
}

// Records per distinct value, for one (possibly resampled) draw of members and non-members.
struct Counts {
  std::vector<std::uint32_t> member, nonmember;
  std::uint64_t members = 0, nonmembers = 0;
};

Counts count_all(const Ranking& r) {
  Counts c;
  c.member.assign(r.values.size(), 0);
  c.nonmember.assign(r.values.size(), 0);
  for (std::uint32_t k : r.member) ++c.member[k];
  for (std::uint32_t k : r.nonmember) ++c.nonmember[k];
  c.members = r.member.size();
  c.nonmembers = r.nonmember.size();
  return c;
}

double auc_of(const Counts& c) {
  // Twice the Mann-Whitney U in integers: a member beats every non-member below it (2) and ties
  // with those at its value (1). Exact up to 2^64 / 2 member-non-member pairs.
  std::uint64_t twice_u = 0, nonmembers_above = 0;
  for (std::size_t k = 0; k < c.member.size(); ++k) {
    const std::uint64_t below = c.nonmembers - nonmembers_above - c.nonmember[k];
    twice_u += c.member[k] * (2 * below + c.nonmember[k]);
    nonmembers_above += c.nonmember[k];
  }
  return static_cast<double>(twice_u) / (2.0 * static_cast<double>(c.members) * static_cast<double>(c.nonmembers));
}

// tpr_at_fpr without building the curve; the FPR is computed exactly as roc_curve computes it so the
// two agree at the boundary.
void tprs_at(const Counts& c, std::span<const double> fprs, std::vector<double>& out) {
  out.assign(fprs.size(), 0.0);
  const auto m = static_cast<double>(c.members), n = static_cast<double>(c.nonmembers);
  std::uint64_t tp = 0, fp = 0;
  for (std::size_t k = 0; k < c.member.size(); ++k) {
    tp += c.member[k];
    fp += c.nonmember[k];
    const double fpr = static_cast<double>(fp) / n;
    const double tpr = static_cast<double>(tp) / m;
    for (std::size_t j = 0; j < fprs.size(); ++j)
      if (fpr <= fprs[j]) out[j] = tpr;
  }
}

RocCurve curve_of(const Ranking& r, const Counts& c) {
  RocCurve roc;
  const std::size_t points = r.values.size() + 1;
  roc.fpr.reserve(points);
  roc.tpr.reserve(points);
  roc.threshold.reserve(points);
  roc.fpr.push_back(0.0);
  roc.tpr.push_back(0.0);
  roc.threshold.push_back(std::numeric_limits<double>::infinity());
  const auto m = static_cast<double>(c.members), n = static_cast<double>(c.nonmembers);
  std::uint64_t tp = 0, fp = 0;
  for (std::size_t k = 0; k < r.values.size(); ++k) {
    tp += c.member[k];
    fp += c.nonmember[k];
    roc.fpr.push_back(static_cast<double>(fp) / n);
    roc.tpr.push_back(static_cast<double>(tp) / m);
    roc.threshold.push_back(r.values[k]);
  }
  return roc;
}

// A uniform integer in [0, bound) from 32-bit words by Lemire's multiply-and-reject. Unlike
// std::uniform_int_distribution its output is fixed by the standard-specified mt19937 alone, so an
// interval is reproducible across standard libraries.
std::uint32_t uniform_below(std::mt19937& rng, std::uint32_t bound) {
  std::uint64_t product = std::uint64_t{static_cast<std::uint32_t>(rng())} * bound;
  auto low = static_cast<std::uint32_t>(product);
  if (low < bound) {
    const std::uint32_t reject_below = static_cast<std::uint32_t>(-bound) % bound;
    while (low < reject_below) {
      product = std::uint64_t{static_cast<std::uint32_t>(rng())} * bound;
      low = static_cast<std::uint32_t>(product);
    }
  }
  return static_cast<std::uint32_t>(product >> 32);
}

void resample(std::mt19937& rng, const std::vector<std::uint32_t>& ranks, std::vector<std::uint32_t>& counts) {
  std::fill(counts.begin(), counts.end(), 0);
  const auto size = static_cast<std::uint32_t>(ranks.size());
  for (std::uint32_t i = 0; i < size; ++i) ++counts[ranks[uniform_below(rng, size)]];
}

// Percentile with linear interpolation between order statistics (Hyndman-Fan type 7, numpy's default).
double percentile(std::vector<double>& sorted, double q) {
  const double position = q * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(below + 1, sorted.size() - 1);
  const double fraction = position - static_cast<double>(below);
  return sorted[below] + fraction * (sorted[above] - sorted[below]);
}

Interval interval95(std::vector<double>& samples) {
  if (samples.empty()) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    return {nan, nan};
  }
  std::sort(samples.begin(), samples.end());
  return {percentile(samples, 0.025), percentile(samples, 0.975)};
}

}  // namespace

RocCurve roc_curve(std::span<const double> member_scores, std::span<const double> nonmember_scores) {
  const Ranking r = rank(member_scores, nonmember_scores);
  return curve_of(r, count_all(r));
}

double roc_auc(std::span<const double> member_scores, std::span<const double> nonmember_scores) {
  return auc_of(count_all(rank(member_scores, nonmember_scores)));
}

double tpr_at_fpr(const RocCurve& roc, double fpr) {
  double best = 0.0;
  for (std::size_t i = 0; i < roc.fpr.size() && i < roc.tpr.size(); ++i)
    if (roc.fpr[i] <= fpr) best = std::max(best, roc.tpr[i]);
  return best;
}

double best_balanced_accuracy(const RocCurve& roc) {
  double best = 0.5;  // the origin: call nobody a member
  for (std::size_t i = 0; i < roc.fpr.size() && i < roc.tpr.size(); ++i)
    best = std::max(best, (roc.tpr[i] + 1.0 - roc.fpr[i]) / 2.0);
  return best;
}

MembershipMetrics evaluate_membership(std::span<const double> member_scores, std::span<const double> nonmember_scores,
                                      std::span<const double> fprs, int bootstrap_resamples, std::uint64_t seed) {
  for (double fpr : fprs) check_rate(fpr);
  if (bootstrap_resamples < 0)
    throw core::Error("membership metrics: " + std::to_string(bootstrap_resamples) + " bootstrap resamples",
                      "use 200 or more for 95% intervals, or 0 to skip them");
  const Ranking r = rank(member_scores, nonmember_scores);
  const Counts all = count_all(r);

  MembershipMetrics result;
  result.members = member_scores.size();
  result.nonmembers = nonmember_scores.size();
  result.roc = curve_of(r, all);
  result.auc = auc_of(all);
  result.balanced_accuracy = best_balanced_accuracy(result.roc);
  result.fprs.assign(fprs.begin(), fprs.end());
  for (double fpr : fprs) result.tpr_at.push_back(tpr_at_fpr(result.roc, fpr));

  std::seed_seq seeds{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32)};
  std::mt19937 rng(seeds);
  Counts draw = all;
  std::vector<double> auc_samples;
  std::vector<std::vector<double>> tpr_samples(fprs.size());
  std::vector<double> tprs;
  const auto resamples = static_cast<std::size_t>(bootstrap_resamples);
  auc_samples.reserve(resamples);
  for (auto& samples : tpr_samples) samples.reserve(resamples);
  for (std::size_t b = 0; b < resamples; ++b) {
    resample(rng, r.member, draw.member);
    resample(rng, r.nonmember, draw.nonmember);
    auc_samples.push_back(auc_of(draw));
    tprs_at(draw, fprs, tprs);
    for (std::size_t j = 0; j < fprs.size(); ++j) tpr_samples[j].push_back(tprs[j]);
  }
  result.auc_ci = interval95(auc_samples);
  for (auto& samples : tpr_samples) result.tpr_ci.push_back(interval95(samples));
  return result;
}

std::size_t min_nonmembers_for_fpr(double fpr) {
  check_rate(fpr);
  const double inverse = 1.0 / fpr;
  if (inverse > 1e15)
    throw core::Error("membership metrics: a false-positive rate of " + number(fpr) + " is too small to measure",
                      "use a rate of 1e-6 or more");
  // 1 / 0.001 may come out a hair above 1000; a rate meant as 1/k should need k non-members, not k + 1.
  const double nearest = std::round(inverse);
  if (std::abs(inverse - nearest) <= 1e-9 * inverse) return static_cast<std::size_t>(nearest);
  return static_cast<std::size_t>(std::ceil(inverse));
}

void check_fpr_resolvable(std::size_t nonmembers, std::span<const double> fprs) {
  const double* strictest = nullptr;
  for (const double& fpr : fprs)
    if (min_nonmembers_for_fpr(fpr) > nonmembers && (!strictest || fpr < *strictest)) strictest = &fpr;
  if (!strictest) return;

  // The smallest decade rate these non-members can resolve, as something to offer instead.
  std::string hint = "add non-members (--nonmembers)";
  double offer = 1.0;
  while (offer > 1e-9 && min_nonmembers_for_fpr(offer / 10.0) <= nonmembers) offer /= 10.0;
  if (nonmembers > 0 && offer < 1.0) hint += " or drop that rate (--fpr " + number(offer) + ")";
  throw core::Error("membership metrics: " + std::to_string(nonmembers) + " non-members cannot measure a TPR at " +
                        number(*strictest * 100.0) + "% FPR: that needs at least " +
                        std::to_string(min_nonmembers_for_fpr(*strictest)),
                    hint);
}

}  // namespace aegis::attacks
