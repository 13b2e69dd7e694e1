// Robust aggregation of participants' updates (see aggregation.h) and the findings that name the
// participants whose updates look poisoned.
#include "aegis/federated/aggregation.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <nlohmann/json.hpp>
#include <numeric>
#include <utility>

#include "aegis/core/error.h"

namespace aegis::federated {
namespace {

std::string num(double v) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.4g", v);
  return buffer;
}

std::string percent(double share) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.0f%%", 100.0 * share);
  return buffer;
}

double l2_norm(std::span<const float> values) {
  double sum = 0;
  for (const float v : values) sum += static_cast<double>(v) * static_cast<double>(v);
  return std::sqrt(sum);
}

double median_of(std::vector<double> values) {
  const std::size_t n = values.size();
  const auto middle = values.begin() + static_cast<std::ptrdiff_t>(n / 2);
  std::nth_element(values.begin(), middle, values.end());
  if (n % 2 == 1) return *middle;
  const double upper = *middle;
  const double lower = *std::max_element(values.begin(), middle);
  return 0.5 * (lower + upper);
}

// How far above the median each value lies, in MADs scaled by 1.4826 (a robust standard deviation:
// with the raw MAD, a threshold of 3 would flag about 2% of honest updates, a false finding in every
// few rounds of ten participants). The scale is floored at `floor_share` of the median: updates of
// (nearly) equal size would otherwise make a rounding difference an outlier.
struct RobustScale {
  double median = 0;
  double deviation = 0;  // 1.4826 * MAD, floored
  double score(double value) const { return (value - median) / deviation; }
};

RobustScale robust_scale(const std::vector<double>& values, double floor_share) {
  constexpr double kMadToStddev = 1.4826;
  RobustScale scale;
  scale.median = median_of(values);
  std::vector<double> deviations;
  deviations.reserve(values.size());
  for (const double v : values) deviations.push_back(std::abs(v - scale.median));
  scale.deviation = std::max({kMadToStddev * median_of(std::move(deviations)), floor_share * scale.median, 1e-12});
  return scale;
}

// Honest norms differ by more than this share of the median before one is called an outlier. On
// non-IID data an honest participant with three times the samples takes three times the local steps
// and sends an update twice as long or more: with a threshold of 3 this floor reports only updates
// about 2.5x the median norm, while a boosted (model-replacement) update is 10x or more.
constexpr double kNormFloorShare = 0.5;
// Distances between honest updates are mostly their noise, which varies more from update to update
// than their norms do: a rejected update must lie this much farther out before it is reported.
constexpr double kKrumFloorShare = 0.1;

// Fewer updates than this give no meaningful median to stand out from.
constexpr std::size_t kMinUpdatesForOutliers = 3;

void check_options(const RobustOptions& options) {
  if (!std::isfinite(options.norm_bound) || options.norm_bound < 0)
    throw core::Error("norm_bound " + num(options.norm_bound) + " is not a non-negative number",
                      "set norm_bound to the largest L2 norm an honest update reaches, or 0 for no bound");
  if (options.rule == AggregationRule::TrimmedMean &&
      (!std::isfinite(options.trim_fraction) || options.trim_fraction < 0 || options.trim_fraction >= 0.5))
    throw core::Error("trim_fraction " + num(options.trim_fraction) +
                          " would remove every value of a coordinate (it trims that share from both ends)",
                      "set trim_fraction in [0, 0.5), for example 0.1 or the expected share of attackers");
  if (!std::isfinite(options.outlier_threshold) || options.outlier_threshold <= 0)
    throw core::Error("outlier_threshold " + num(options.outlier_threshold) + " is not a positive number",
                      "set outlier_threshold to a number of MADs, for example 3");
}

std::size_t check_updates(std::span<const ClientUpdate> updates) {
  if (updates.empty())
    throw core::Error("no updates to aggregate",
                      "wait for at least one participant's update (check min_participants and the round deadline)");
  const std::size_t length = updates.front().delta.size();
  if (length == 0)
    throw core::Error("participant '" + updates.front().participant + "' sent an empty update",
                      "refuse invalid updates before aggregating them (remove_invalid_updates)");
  for (const auto& update : updates)
    if (const auto reason = invalid_update_reason(update.delta, length))
      throw core::Error("the update of participant '" + update.participant + "' cannot be aggregated: " + *reason,
                        "refuse invalid updates before aggregating them (remove_invalid_updates)");
  return length;
}

std::vector<float> weighted_mean(std::span<const ClientUpdate> updates, const std::vector<std::span<const float>>& views) {
  double total = 0;
  for (const auto& update : updates) {
    if (!std::isfinite(update.weight) || update.weight < 0)
      throw core::Error("participant '" + update.participant + "' has weight " + num(update.weight) +
                            ", not a sample count",
                        "refuse updates whose weight is not a finite non-negative number");
    total += update.weight;
  }
  if (!(total > 0) || !std::isfinite(total))
    throw core::Error("the updates' weights sum to " + num(total) + ", so FedAvg has nothing to average",
                      "give every update its local sample count as weight");
  std::vector<double> sum(views.front().size(), 0.0);
  for (std::size_t i = 0; i < views.size(); ++i) {
    const double w = updates[i].weight / total;
    for (std::size_t c = 0; c < sum.size(); ++c) sum[c] += w * static_cast<double>(views[i][c]);
  }
  return {sum.begin(), sum.end()};
}

std::vector<float> plain_mean(const std::vector<std::span<const float>>& views, const std::vector<std::size_t>& chosen) {
  std::vector<double> sum(views.front().size(), 0.0);
  for (const std::size_t i : chosen)
    for (std::size_t c = 0; c < sum.size(); ++c) sum[c] += static_cast<double>(views[i][c]);
  std::vector<float> out(sum.size());
  for (std::size_t c = 0; c < sum.size(); ++c) out[c] = static_cast<float>(sum[c] / static_cast<double>(chosen.size()));
  return out;
}

std::vector<float> coordinate_median(const std::vector<std::span<const float>>& views) {
  const std::size_t n = views.size();
  std::vector<float> out(views.front().size());
  std::vector<double> column(n);
  for (std::size_t c = 0; c < out.size(); ++c) {
    for (std::size_t i = 0; i < n; ++i) column[i] = views[i][c];
    const auto middle = column.begin() + static_cast<std::ptrdiff_t>(n / 2);
    std::nth_element(column.begin(), middle, column.end());
    const double m = n % 2 == 1 ? *middle : 0.5 * (*middle + *std::max_element(column.begin(), middle));
    out[c] = static_cast<float>(m);
  }
  return out;
}

// Coordinate-wise trimmed mean (Yin et al. 2018). Also reports the participants cut in far more
// coordinates than chance: with k cut at each end of n, an update is cut in 2k/n of the coordinates on
// average; an extreme (scaled, sign-flipped) update is cut in nearly all of them.
std::vector<float> trimmed_mean(std::span<const ClientUpdate> updates, const std::vector<std::span<const float>>& views,
                                const std::vector<double>& norms, double trim_fraction, std::vector<Outlier>& outliers) {
  const std::size_t n = views.size();
  // The small epsilon keeps 0.3 * 10 from becoming 2 by rounding.
  const auto k = static_cast<std::size_t>(std::floor(trim_fraction * static_cast<double>(n) + 1e-9));
  if (2 * k >= n)
    throw core::Error("trim_fraction " + num(trim_fraction) + " removes all " + std::to_string(n) +
                          " updates of this round",
                      "lower trim_fraction or wait for more participants");
  const std::size_t dims = views.front().size();
  std::vector<float> out(dims);
  std::vector<std::uint64_t> cut(n, 0);
  std::vector<std::pair<float, std::size_t>> column(n);
  for (std::size_t c = 0; c < dims; ++c) {
    for (std::size_t i = 0; i < n; ++i) column[i] = {views[i][c], i};
    std::sort(column.begin(), column.end());
    double sum = 0;
    for (std::size_t j = k; j < n - k; ++j) sum += column[j].first;
    out[c] = static_cast<float>(sum / static_cast<double>(n - 2 * k));
    // A value equal to the kept boundary was cut by the tie order, not for being extreme.
    for (std::size_t j = 0; j < k; ++j) {
      if (column[j].first < column[k].first) ++cut[column[j].second];
      if (column[n - 1 - j].first > column[n - 1 - k].first) ++cut[column[n - 1 - j].second];
    }
  }
  if (k == 0) return out;
  const double chance = 2.0 * static_cast<double>(k) / static_cast<double>(n);
  const double threshold = std::min(1.0, std::max(0.5, 2.0 * chance));
  for (std::size_t i = 0; i < n; ++i) {
    const double share = static_cast<double>(cut[i]) / static_cast<double>(dims);
    if (share < threshold) continue;
    outliers.push_back({updates[i].participant,
                        "trimmed as one of the " + std::to_string(k) + " largest or smallest values in " +
                            std::to_string(cut[i]) + " of " + std::to_string(dims) + " coordinates (" + percent(share) +
                            "; chance explains about " + percent(chance) + ")",
                        norms[i], share, OutlierKind::Trimmed});
  }
  return out;
}

// Krum and Multi-Krum (Blanchard et al. 2017): an update's score is the sum of its squared distances to
// its n - f - 2 nearest others; Krum keeps the lowest score, Multi-Krum averages the m lowest.
std::vector<float> krum(std::span<const ClientUpdate> updates, const std::vector<std::span<const float>>& views,
                        const std::vector<double>& norms, const RobustOptions& options, std::vector<std::string>& used,
                        std::vector<Outlier>& outliers) {
  const std::size_t n = views.size();
  const std::size_t f = options.byzantine;
  const bool multi = options.rule == AggregationRule::MultiKrum;
  const std::string rule_name(to_string(options.rule));
  if (n <= 2 * f + 2)
    throw core::Error(rule_name + " with byzantine=" + std::to_string(f) + " needs more than 2f+2 = " +
                          std::to_string(2 * f + 2) + " updates, this round has " + std::to_string(n),
                      n >= 3 ? "lower byzantine to at most " + std::to_string((n - 3) / 2) +
                                   " or select more participants per round"
                             : "select at least 3 participants per round, or use median or trimmed-mean");
  std::size_t select = 1;
  if (multi) {
    select = options.multi_krum_select == 0 ? n - f : options.multi_krum_select;
    if (select > n)
      throw core::Error("multi_krum_select " + std::to_string(select) + " is more than the " + std::to_string(n) +
                            " updates of this round",
                        "set multi_krum_select to at most n - f, or 0 for n - f");
  }
  std::vector<double> distance(n * n, 0.0);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = i + 1; j < n; ++j) {
      double d = 0;
      for (std::size_t c = 0; c < views[i].size(); ++c) {
        const double diff = static_cast<double>(views[i][c]) - static_cast<double>(views[j][c]);
        d += diff * diff;
      }
      distance[i * n + j] = distance[j * n + i] = d;
    }
  const std::size_t neighbours = n - f - 2;
  std::vector<double> scores(n);
  std::vector<double> row;
  for (std::size_t i = 0; i < n; ++i) {
    row.clear();
    for (std::size_t j = 0; j < n; ++j)
      if (j != i) row.push_back(distance[i * n + j]);
    std::partial_sort(row.begin(), row.begin() + static_cast<std::ptrdiff_t>(neighbours), row.end());
    scores[i] = std::accumulate(row.begin(), row.begin() + static_cast<std::ptrdiff_t>(neighbours), 0.0);
  }
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] < scores[b]; });
  std::vector<std::size_t> chosen(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(select));
  std::sort(chosen.begin(), chosen.end());
  for (const std::size_t i : chosen) used.push_back(updates[i].participant);

  // Every update but Krum's pick is left out, honest ones too: only those that lie far out from the
  // others are reported, judged by the root-mean-square distance to their nearest updates (the
  // score's square root per neighbour, in the units of the updates).
  std::vector<double> spread(n);
  for (std::size_t i = 0; i < n; ++i) spread[i] = std::sqrt(scores[i] / static_cast<double>(neighbours));
  const RobustScale scale = robust_scale(spread, kKrumFloorShare);
  for (std::size_t i = 0; i < n; ++i) {
    if (std::binary_search(chosen.begin(), chosen.end(), i)) continue;
    const double score = scale.score(spread[i]);
    if (!(score > options.outlier_threshold)) continue;
    outliers.push_back({updates[i].participant,
                        "left out by " + rule_name + ": its RMS distance to its " + std::to_string(neighbours) +
                            " nearest updates, " + num(spread[i]) + ", is " + num(score) +
                            " robust deviations above the median " + num(scale.median) + " (threshold " +
                            num(options.outlier_threshold) + ")",
                        norms[i], score, OutlierKind::KrumRejected});
  }
  return plain_mean(views, chosen);
}

}  // namespace

std::optional<std::string> invalid_update_reason(std::span<const float> delta, std::size_t expected_length) {
  if (delta.size() != expected_length)
    return "wrong length: the update has " + std::to_string(delta.size()) + " values, the global model has " +
           std::to_string(expected_length);
  std::size_t bad = 0, first = 0;
  for (std::size_t i = 0; i < delta.size(); ++i)
    if (!std::isfinite(delta[i]) && bad++ == 0) first = i;
  if (bad == 0) return std::nullopt;
  const float v = delta[first];
  const std::string what = std::isnan(v) ? "NaN" : (v > 0 ? "+infinity" : "-infinity");
  return "non-finite values: " + std::to_string(bad) + " of " + std::to_string(delta.size()) +
         " values are NaN or infinite (the first, at index " + std::to_string(first) + ", is " + what + ")";
}

std::optional<std::string> invalid_update_reason(const ClientUpdate& update, std::size_t expected_length) {
  if (auto reason = invalid_update_reason(update.delta, expected_length)) return reason;
  if (!std::isfinite(update.weight) || update.weight <= 0)
    return "invalid weight: " + num(update.weight) + " is not a positive sample count";
  return std::nullopt;
}

std::optional<AggregationRule> parse_aggregation_rule(std::string_view name) {
  if (name == "mean" || name == "fedavg") return AggregationRule::Mean;
  if (name == "median") return AggregationRule::Median;
  if (name == "trimmed-mean") return AggregationRule::TrimmedMean;
  if (name == "krum") return AggregationRule::Krum;
  if (name == "multi-krum") return AggregationRule::MultiKrum;
  return std::nullopt;
}

std::string_view to_string(AggregationRule rule) {
  switch (rule) {
    case AggregationRule::Mean: return "mean";
    case AggregationRule::Median: return "median";
    case AggregationRule::TrimmedMean: return "trimmed-mean";
    case AggregationRule::Krum: return "krum";
    case AggregationRule::MultiKrum: return "multi-krum";
  }
  return "unknown";
}

std::string_view to_string(OutlierKind kind) {
  switch (kind) {
    case OutlierKind::NormOutlier: return "norm-outlier";
    case OutlierKind::KrumRejected: return "krum-rejected";
    case OutlierKind::Trimmed: return "trimmed";
    case OutlierKind::Clipped: return "clipped";
    case OutlierKind::Invalid: return "invalid";
  }
  return "unknown";
}

AggregationResult aggregate(std::span<const ClientUpdate> updates, const RobustOptions& options) {
  check_options(options);
  check_updates(updates);
  const std::size_t n = updates.size();
  AggregationResult result;

  std::vector<double> norms(n);
  for (std::size_t i = 0; i < n; ++i) norms[i] = l2_norm(updates[i].delta);

  // Norm outliers are judged on the updates as sent: the bound hides the magnitude it removes.
  if (n >= kMinUpdatesForOutliers) {
    const RobustScale scale = robust_scale(norms, kNormFloorShare);
    for (std::size_t i = 0; i < n; ++i) {
      const double score = scale.score(norms[i]);
      if (!(score > options.outlier_threshold)) continue;
      result.outliers.push_back({updates[i].participant,
                                 "update norm " + num(norms[i]) + " is " + num(score) +
                                     " robust deviations (1.4826 MAD) above the median norm " +
                                     num(scale.median) + " of " + std::to_string(n) + " updates (threshold " +
                                     num(options.outlier_threshold) + ")",
                                 norms[i], score, OutlierKind::NormOutlier});
    }
  }

  std::vector<std::vector<float>> bounded;  // scaled copies, only of the updates the bound changes
  bounded.reserve(n);
  std::vector<std::span<const float>> views(n);
  for (std::size_t i = 0; i < n; ++i) {
    views[i] = updates[i].delta;
    if (options.norm_bound <= 0 || norms[i] <= options.norm_bound) continue;
    auto& copy = bounded.emplace_back(updates[i].delta);
    const double factor = options.norm_bound / norms[i];
    for (float& v : copy) v = static_cast<float>(static_cast<double>(v) * factor);
    views[i] = copy;
    result.outliers.push_back({updates[i].participant,
                               "update norm " + num(norms[i]) + " above the norm bound " + num(options.norm_bound) +
                                   ": scaled down " + num(norms[i] / options.norm_bound) + "x",
                               norms[i], norms[i] / options.norm_bound, OutlierKind::Clipped});
  }

  switch (options.rule) {
    case AggregationRule::Mean:
      result.delta = weighted_mean(updates, views);
      break;
    case AggregationRule::Median:
      result.delta = coordinate_median(views);
      break;
    case AggregationRule::TrimmedMean:
      result.delta = trimmed_mean(updates, views, norms, options.trim_fraction, result.outliers);
      break;
    case AggregationRule::Krum:
    case AggregationRule::MultiKrum:
      result.delta = krum(updates, views, norms, options, result.used, result.outliers);
      return result;
  }
  for (const auto& update : updates) result.used.push_back(update.participant);
  return result;
}

std::vector<Outlier> remove_invalid_updates(std::vector<ClientUpdate>& updates, std::size_t expected_length) {
  std::vector<Outlier> refused;
  std::erase_if(updates, [&](const ClientUpdate& update) {
    auto reason = invalid_update_reason(update, expected_length);
    if (!reason) return false;
    refused.push_back({update.participant, "update refused: " + *reason, 0, 0, OutlierKind::Invalid});
    return true;
  });
  return refused;
}

std::vector<core::Finding> outlier_findings(std::uint64_t round, std::span<const Outlier> outliers) {
  std::vector<core::Finding> findings;
  findings.reserve(outliers.size());
  for (const auto& outlier : outliers) {
    core::Finding f;
    f.location.file = "round " + std::to_string(round);
    f.atlas = {"AML.T0020", "AML.T0018"};  // Poison Training Data; Manipulate AI Model (backdoor)
    f.nist_ai_rmf = {"MEASURE 2.7"};
    f.evidence = "participant '" + outlier.participant + "' in round " + std::to_string(round) + ": " + outlier.reason;
    switch (outlier.kind) {
      case OutlierKind::NormOutlier:
        f.rule_id = "FL001";
        f.severity = core::Severity::High;
        f.title = "Suspicious federated update: its norm is far above the other participants'";
        f.remediation =
            "A large update is the signature of model replacement and boosted backdoors (Bagdasaryan et al. 2020). "
            "Aggregate with a robust rule (krum, multi-krum, median, trimmed-mean) or a norm_bound, inspect this "
            "participant's data and software, and revoke its certificate if it keeps sending outlying updates.";
        break;
      case OutlierKind::KrumRejected:
        f.rule_id = "FL001";
        f.severity = core::Severity::High;
        f.title = "Suspicious federated update: Krum rejected it as far from every other update";
        f.remediation =
            "The update did not enter the global model. Inspect this participant's data and software, and revoke its "
            "certificate if it is rejected round after round; keep byzantine at least the number of participants "
            "you cannot vouch for.";
        break;
      case OutlierKind::Trimmed:
        f.rule_id = "FL001";
        f.severity = core::Severity::Medium;
        f.title = "Suspicious federated update: the trimmed mean cut it in most coordinates";
        f.remediation =
            "Its extreme values did not enter the global model. Inspect this participant's data and software; a "
            "sign-flipped or scaled update is a poisoning attempt. Keep trim_fraction above the share of "
            "participants you cannot vouch for.";
        break;
      case OutlierKind::Clipped:
        f.rule_id = "FL002";
        f.severity = core::Severity::Medium;
        f.title = "Federated update clipped by the norm bound";
        f.remediation =
            "The norm bound limited this update's influence. If honest participants are clipped too, raise "
            "norm_bound; if only this one is, inspect it: a scaled update is the signature of model replacement.";
        break;
      case OutlierKind::Invalid:
        f.rule_id = "FL003";
        f.severity = core::Severity::Medium;
        f.title = "Invalid federated update refused";
        f.remediation =
            "The update was not aggregated. Check the participant's training (a diverging run gives NaN) and that it "
            "runs the same model; revoke its certificate if it keeps sending malformed updates.";
        break;
    }
    nlohmann::json properties = {{"participant", outlier.participant},
                                 {"round", round},
                                 {"outlier", std::string(to_string(outlier.kind))},
                                 {"update_norm", outlier.norm},
                                 {"score", outlier.score}};
    f.properties_json = properties.dump();
    findings.push_back(std::move(f));
  }
  return findings;
}

}  // namespace aegis::federated
