#include "aegis/monitor/drift.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <utility>

#include <boost/math/distributions/chi_squared.hpp>

#include "aegis/core/error.h"

namespace aegis::monitor {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
// Evidently switches from p-value tests to distances above this many reference values.
constexpr std::size_t kSmallReference = 1000;
// Beyond this many lattice cells the exact KS p-value costs more than a monitor should spend.
constexpr double kExactKsCells = 1e7;

struct CategoryCounts {
  std::vector<double> reference;  // count per category, categories in ascending key order
  std::vector<double> current;
  double reference_total = 0, current_total = 0;
};

template <class T>
CategoryCounts count_categories(std::span<const T> reference, std::span<const T> current) {
  std::map<T, std::pair<double, double>> counts;
  for (const T& v : reference) counts[v].first += 1;
  for (const T& v : current) counts[v].second += 1;
  CategoryCounts out;
  for (const auto& [key, c] : counts) {
    out.reference.push_back(c.first);
    out.current.push_back(c.second);
  }
  out.reference_total = static_cast<double>(reference.size());
  out.current_total = static_cast<double>(current.size());
  return out;
}

void require_samples(std::size_t reference, std::size_t current, const char* what) {
  if (reference == 0 || current == 0)
    throw core::Error(std::string(what) + ": the " + (reference == 0 ? "reference" : "current") + " sample is empty",
                      "collect values in both windows before testing for drift");
}

void require_finite(std::span<const double> values, const char* what) {
  for (double v : values)
    if (!std::isfinite(v)) throw core::Error(std::string(what) + ": a value is not finite", "drop NaN and infinite values first");
}

double upper_normal_tail(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }

double chi_squared_survival(double statistic, double df) {
  if (std::isinf(statistic)) return 0;
  boost::math::chi_squared distribution(df);
  return boost::math::cdf(boost::math::complement(distribution, statistic));
}

// Evidently's chisquare: current counts against the reference shares scaled to the current size.
TwoSampleStatistic chi_squared_of(const CategoryCounts& counts) {
  const std::size_t k = counts.reference.size();
  if (k < 2) return {0, 1};  // one category in both windows: nothing can have shifted
  const double scale = counts.current_total / counts.reference_total;
  double statistic = 0;
  for (std::size_t i = 0; i < k; ++i) {
    const double expected = counts.reference[i] * scale;
    const double observed = counts.current[i];
    if (expected == 0) {
      if (observed > 0) statistic = std::numeric_limits<double>::infinity();
      continue;
    }
    statistic += (observed - expected) * (observed - expected) / expected;
  }
  return {statistic, chi_squared_survival(statistic, static_cast<double>(k - 1))};
}

// Evidently's z-test: the share of everything but the smallest category, pooled two-proportion z.
TwoSampleStatistic z_test_of(const CategoryCounts& counts) {
  if (counts.reference.size() < 2) return {0, 1};
  const double n1 = counts.reference_total, n2 = counts.current_total;
  const double p1 = (n1 - counts.reference[0]) / n1;
  const double p2 = (n2 - counts.current[0]) / n2;
  const double pooled = (p1 * n1 + p2 * n2) / (n1 + n2);
  const double spread = std::sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2));
  if (spread == 0) return {0, 1};
  const double z = (p1 - p2) / spread;
  return {z, 2 * upper_normal_tail(std::abs(z))};
}

// Evidently's get_binned_data zero fill: empty shares become a tiny fraction of the smallest
// non-zero share, so ln(r / c) stays finite.
void fill_empty_shares(std::vector<double>& shares) {
  double smallest = std::numeric_limits<double>::infinity();
  for (double s : shares)
    if (s > 0) smallest = std::min(smallest, s);
  if (!std::isfinite(smallest)) return;
  const double fill = smallest <= 1e-4 ? smallest / 1e6 : 1e-4;
  for (double& s : shares)
    if (s == 0) s = fill;
}

double psi_of_shares(std::vector<double> reference, std::vector<double> current) {
  fill_empty_shares(reference);
  fill_empty_shares(current);
  double psi = 0;
  for (std::size_t i = 0; i < reference.size(); ++i)
    psi += (reference[i] - current[i]) * std::log(reference[i] / current[i]);
  return psi;
}

std::vector<double> shares(const std::vector<double>& counts, double total) {
  std::vector<double> out(counts.size());
  for (std::size_t i = 0; i < counts.size(); ++i) out[i] = counts[i] / total;
  return out;
}

// numpy.quantile with the default linear interpolation, on sorted values.
double linear_quantile(const std::vector<double>& sorted, double q) {
  const double position = q * static_cast<double>(sorted.size() - 1);
  const auto below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(below + 1, sorted.size() - 1);
  const double fraction = position - static_cast<double>(below);
  return sorted[below] + (sorted[above] - sorted[below]) * fraction;
}

// Counts per bin; bin i holds edges[i - 1] <= x < edges[i] with open ends (numpy's
// searchsorted(edges, x, side="right")).
std::vector<double> count_in_bins(std::span<const double> values, const std::vector<double>& edges) {
  std::vector<double> counts(edges.size() + 1, 0);
  for (double v : values) counts[static_cast<std::size_t>(std::upper_bound(edges.begin(), edges.end(), v) - edges.begin())] += 1;
  return counts;
}

// numpy.histogram(values, histogram_bin_edges(both, "sturges")): equal-width bins over both
// samples' range, each [lo, hi) except the last, which also holds its upper edge.
std::pair<std::vector<double>, std::vector<double>> sturges_histograms(std::span<const double> reference,
                                                                      std::span<const double> current) {
  double lo = std::numeric_limits<double>::infinity(), hi = -lo;
  for (auto sample : {reference, current})
    for (double v : sample) {
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  const double n = static_cast<double>(reference.size() + current.size());
  std::size_t bins = 1;
  if (hi > lo && !std::isfinite(hi - lo)) {
    // A range wider than a double holds (hostile values): same bin count, computed on halves.
    bins = static_cast<std::size_t>(std::ceil(std::log2(n) + 1.0));
  } else if (hi > lo) {
    const double width = (hi - lo) / (std::log2(n) + 1.0);
    bins = static_cast<std::size_t>(std::ceil((hi - lo) / width));
  } else {
    lo -= 0.5;
    hi += 0.5;
  }
  std::vector<double> edges(bins + 1);
  const double span = hi - lo;
  const double step = std::isfinite(span) ? span / static_cast<double>(bins)  // numpy.linspace's step
                                          : hi / static_cast<double>(bins) - lo / static_cast<double>(bins);
  for (std::size_t i = 0; i < bins; ++i) edges[i] = lo + static_cast<double>(i) * step;
  edges[bins] = hi;
  auto histogram = [&](std::span<const double> values) {
    std::vector<double> counts(bins, 0);
    for (double v : values) {
      auto at = static_cast<std::size_t>(std::upper_bound(edges.begin(), edges.end(), v) - edges.begin());
      counts[std::min(at == 0 ? 0 : at - 1, bins - 1)] += 1;
    }
    return counts;
  };
  return {histogram(reference), histogram(current)};
}

std::size_t distinct_count(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return static_cast<std::size_t>(std::unique(values.begin(), values.end()) - values.begin());
}

// Probability that a random lattice path from (0, 0) to (n, m) stays strictly inside
// |i / n - j / m| < d, where d * lcm(n, m) = h. Works on the path share reaching each point
// (count / C(i + j, i)) so nothing overflows.
double ks_inside_probability(std::size_t n, std::size_t m, std::int64_t h) {
  const std::int64_t lcm = std::lcm(static_cast<std::int64_t>(n), static_cast<std::int64_t>(m));
  const std::int64_t step_i = lcm / static_cast<std::int64_t>(n), step_j = lcm / static_cast<std::int64_t>(m);
  auto inside = [&](std::size_t i, std::size_t j) {
    return std::abs(static_cast<std::int64_t>(i) * step_i - static_cast<std::int64_t>(j) * step_j) < h;
  };
  std::vector<double> row(m + 1, 0);
  for (std::size_t j = 0; j <= m; ++j) row[j] = inside(0, j) ? (j == 0 ? 1.0 : row[j - 1]) : 0.0;
  for (std::size_t i = 1; i <= n; ++i) {
    for (std::size_t j = 0; j <= m; ++j) {
      if (!inside(i, j)) {
        row[j] = 0;
        continue;
      }
      const double total = static_cast<double>(i + j);
      const double from_left = row[j] * static_cast<double>(i) / total;
      const double from_below = j == 0 ? 0.0 : row[j - 1] * static_cast<double>(j) / total;
      row[j] = from_left + from_below;
    }
  }
  return row[m];
}

// Kolmogorov's limit distribution, P(K > lambda).
double kolmogorov_survival(double lambda) {
  if (lambda < 0.2) return 1;
  double sum = 0;
  for (int k = 1; k <= 100; ++k) {
    const double term = std::exp(-2.0 * k * k * lambda * lambda);
    sum += (k % 2 == 1 ? term : -term);
    if (term < 1e-17) break;
  }
  return std::clamp(2 * sum, 0.0, 1.0);
}

std::vector<double> finite_values(std::span<const double> values) {
  std::vector<double> out;
  out.reserve(values.size());
  for (double v : values)
    if (std::isfinite(v)) out.push_back(v);
  return out;
}

double population_std(std::span<const double> values) {
  const double mean = std::accumulate(values.begin(), values.end(), 0.0) / static_cast<double>(values.size());
  double sum = 0;
  for (double v : values) sum += (v - mean) * (v - mean);
  return std::sqrt(sum / static_cast<double>(values.size()));
}

DriftResult verdict(DriftResult result, std::optional<double> threshold) {
  result.threshold = threshold.value_or(default_drift_threshold(result.test));
  result.drifted = uses_p_value(result.test) ? result.p_value < result.threshold : result.statistic >= result.threshold;
  return result;
}

TwoSampleStatistic categorical_statistic(DriftTest test, const CategoryCounts& counts) {
  switch (test) {
    case DriftTest::ChiSquared:
      return chi_squared_of(counts);
    case DriftTest::ZTest:
      return z_test_of(counts);
    case DriftTest::Psi:
      return {psi_of_shares(shares(counts.reference, counts.reference_total), shares(counts.current, counts.current_total)),
              kNaN};
    case DriftTest::JensenShannon:
      return {jensen_shannon_distance(counts.reference, counts.current), kNaN};
    default:
      throw core::Error("the " + std::string(to_string(test)) + " test needs numeric values, not categories",
                        "use chisquare, z, psi or jensenshannon for a categorical feature");
  }
}

}  // namespace

std::string_view to_string(DriftTest test) {
  switch (test) {
    case DriftTest::Auto: return "auto";
    case DriftTest::Ks: return "ks";
    case DriftTest::ChiSquared: return "chisquare";
    case DriftTest::ZTest: return "z";
    case DriftTest::Psi: return "psi";
    case DriftTest::JensenShannon: return "jensenshannon";
    case DriftTest::Wasserstein: return "wasserstein";
  }
  return "auto";
}

DriftTest parse_drift_test(std::string_view name) {
  for (DriftTest test : {DriftTest::Auto, DriftTest::Ks, DriftTest::ChiSquared, DriftTest::ZTest, DriftTest::Psi,
                         DriftTest::JensenShannon, DriftTest::Wasserstein})
    if (name == to_string(test)) return test;
  throw core::Error("unknown drift test '" + std::string(name) + "'",
                    "use one of auto, ks, chisquare, z, psi, jensenshannon, wasserstein");
}

DriftTest default_drift_test(FeatureKind kind, std::size_t reference_size, std::size_t distinct_values) {
  if (reference_size <= kSmallReference) {
    if (kind == FeatureKind::Numeric && distinct_values > 5) return DriftTest::Ks;
    return distinct_values > 2 ? DriftTest::ChiSquared : DriftTest::ZTest;
  }
  if (kind == FeatureKind::Numeric && distinct_values > 5) return DriftTest::Wasserstein;
  return DriftTest::JensenShannon;
}

double default_drift_threshold(DriftTest test) { return uses_p_value(test) ? 0.05 : 0.1; }

bool uses_p_value(DriftTest test) {
  return test == DriftTest::Ks || test == DriftTest::ChiSquared || test == DriftTest::ZTest;
}

TwoSampleStatistic ks_two_sample(std::span<const double> reference, std::span<const double> current) {
  require_samples(reference.size(), current.size(), "Kolmogorov-Smirnov test");
  require_finite(reference, "Kolmogorov-Smirnov test");
  require_finite(current, "Kolmogorov-Smirnov test");
  std::vector<double> a(reference.begin(), reference.end()), b(current.begin(), current.end());
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  const std::size_t n = a.size(), m = b.size();
  // D is reached right after some value: step through the merged values, ties together.
  std::size_t i = 0, j = 0;
  std::int64_t largest_gap = 0;  // in units of 1 / lcm(n, m), so that the exact p-value compares integers
  const std::int64_t lcm = std::lcm(static_cast<std::int64_t>(n), static_cast<std::int64_t>(m));
  const std::int64_t step_i = lcm / static_cast<std::int64_t>(n), step_j = lcm / static_cast<std::int64_t>(m);
  while (i < n || j < m) {
    const double v = (j >= m || (i < n && a[i] <= b[j])) ? a[i] : b[j];
    while (i < n && a[i] == v) ++i;
    while (j < m && b[j] == v) ++j;
    largest_gap = std::max(largest_gap, std::abs(static_cast<std::int64_t>(i) * step_i - static_cast<std::int64_t>(j) * step_j));
  }
  const double d = static_cast<double>(largest_gap) / static_cast<double>(lcm);
  if (largest_gap == 0) return {0, 1};
  double p;
  if (static_cast<double>(n) * static_cast<double>(m) <= kExactKsCells) {
    p = 1 - ks_inside_probability(n, m, largest_gap);
  } else {
    const double e = static_cast<double>(n) * static_cast<double>(m) / static_cast<double>(n + m);
    p = kolmogorov_survival((std::sqrt(e) + 0.12 + 0.11 / std::sqrt(e)) * d);
  }
  return {d, std::clamp(p, 0.0, 1.0)};
}

double wasserstein_distance(std::span<const double> reference, std::span<const double> current) {
  require_samples(reference.size(), current.size(), "Wasserstein distance");
  require_finite(reference, "Wasserstein distance");
  require_finite(current, "Wasserstein distance");
  std::vector<double> a(reference.begin(), reference.end()), b(current.begin(), current.end());
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  const double n = static_cast<double>(a.size()), m = static_cast<double>(b.size());
  // The integral of |F_a - F_b| over the merged values, one constant piece at a time.
  std::size_t i = 0, j = 0;
  double distance = 0;
  double previous = std::min(a.front(), b.front());
  while (i < a.size() || j < b.size()) {
    const double v = (j >= b.size() || (i < a.size() && a[i] <= b[j])) ? a[i] : b[j];
    distance += std::abs(static_cast<double>(i) / n - static_cast<double>(j) / m) * (v - previous);
    previous = v;
    while (i < a.size() && a[i] == v) ++i;
    while (j < b.size() && b[j] == v) ++j;
  }
  return distance;
}

double jensen_shannon_distance(std::span<const double> p, std::span<const double> q) {
  if (p.size() != q.size() || p.empty())
    throw core::Error("Jensen-Shannon distance: the histograms differ in length or are empty", "bin both samples alike");
  const double p_total = std::accumulate(p.begin(), p.end(), 0.0), q_total = std::accumulate(q.begin(), q.end(), 0.0);
  if (!(p_total > 0) || !(q_total > 0))
    throw core::Error("Jensen-Shannon distance: a histogram holds nothing", "collect values in both windows first");
  double divergence = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double a = p[i] / p_total, b = q[i] / q_total, mid = (a + b) / 2;
    if (a > 0) divergence += a * std::log(a / mid);
    if (b > 0) divergence += b * std::log(b / mid);
  }
  return std::sqrt(std::max(0.0, divergence / 2 / std::log(2.0)));
}

double population_stability_index(std::span<const double> reference, std::span<const double> current, std::size_t bins) {
  require_samples(reference.size(), current.size(), "population stability index");
  require_finite(reference, "population stability index");
  require_finite(current, "population stability index");
  if (bins < 2 || bins > 1000) throw core::Error("population stability index: bins must be 2..1000", "10 is the usual choice");
  std::vector<double> sorted(reference.begin(), reference.end());
  std::sort(sorted.begin(), sorted.end());
  std::vector<double> edges;
  for (std::size_t i = 1; i < bins; ++i) edges.push_back(linear_quantile(sorted, static_cast<double>(i) / static_cast<double>(bins)));
  edges.erase(std::unique(edges.begin(), edges.end()), edges.end());
  const auto r = count_in_bins(reference, edges), c = count_in_bins(current, edges);
  return psi_of_shares(shares(r, static_cast<double>(reference.size())), shares(c, static_cast<double>(current.size())));
}

DriftResult numeric_drift(std::span<const double> reference_values, std::span<const double> current_values, DriftTest test,
                          std::optional<double> threshold) {
  const auto reference = finite_values(reference_values), current = finite_values(current_values);
  require_samples(reference.size(), current.size(), "numeric drift");
  DriftResult result;
  result.kind = FeatureKind::Numeric;
  result.reference_size = reference.size();
  result.current_size = current.size();
  if (test == DriftTest::Auto) {
    std::vector<double> both = reference;
    both.insert(both.end(), current.begin(), current.end());
    test = default_drift_test(FeatureKind::Numeric, reference.size(), distinct_count(std::move(both)));
  }
  result.test = test;
  switch (test) {
    case DriftTest::Ks: {
      const auto ks = ks_two_sample(reference, current);
      result.statistic = ks.statistic;
      result.p_value = ks.p_value;
      break;
    }
    case DriftTest::Wasserstein:
      result.statistic = wasserstein_distance(reference, current) / std::max(population_std(reference), 0.001);
      result.p_value = kNaN;
      break;
    case DriftTest::Psi:
      result.statistic = population_stability_index(reference, current);
      result.p_value = kNaN;
      break;
    case DriftTest::JensenShannon:
      if (distinct_count(reference) > 20) {
        const auto [r, c] = sturges_histograms(reference, current);
        result.statistic = jensen_shannon_distance(r, c);
        result.p_value = kNaN;
        break;
      }
      [[fallthrough]];
    default: {
      const auto counts = count_categories<double>(reference, current);
      const auto s = categorical_statistic(test, counts);
      result.statistic = s.statistic;
      result.p_value = s.p_value;
    }
  }
  return verdict(std::move(result), threshold);
}

DriftResult categorical_drift(std::span<const std::int64_t> reference, std::span<const std::int64_t> current, DriftTest test,
                              std::optional<double> threshold) {
  require_samples(reference.size(), current.size(), "categorical drift");
  const auto counts = count_categories<std::int64_t>(reference, current);
  DriftResult result;
  result.kind = FeatureKind::Categorical;
  result.reference_size = reference.size();
  result.current_size = current.size();
  if (test == DriftTest::Auto) test = default_drift_test(FeatureKind::Categorical, reference.size(), counts.reference.size());
  result.test = test;
  const auto s = categorical_statistic(test, counts);
  result.statistic = s.statistic;
  result.p_value = s.p_value;
  return verdict(std::move(result), threshold);
}

DriftMonitor::DriftMonitor(DriftMonitorOptions options) : options_(std::move(options)) {
  if (options_.feature_names.empty() && !options_.monitor_confidence && !options_.monitor_predicted_class)
    throw core::Error("drift monitor: nothing to monitor", "name at least one feature, or monitor confidence or the predicted class");
  if (options_.reference_size == 0 || options_.window_size == 0)
    throw core::Error("drift monitor: reference_size and window_size must be at least 1", "e.g. 1000 each");
  if (options_.min_current == 0 || options_.min_current > options_.window_size)
    throw core::Error("drift monitor: min_current must be between 1 and window_size",
                      "e.g. min_current 100 with window_size 1000");
  if (!(options_.drift_share > 0 && options_.drift_share <= 1))
    throw core::Error("drift monitor: drift_share must be in (0, 1]", "Evidently's default is 0.5");
  reference_.reserve(std::min<std::size_t>(options_.reference_size, 1 << 16));
}

bool DriftMonitor::valid(const DriftObservation& observation) const {
  if (observation.features.size() != options_.feature_names.size()) return false;
  for (double v : observation.features)
    if (!std::isfinite(v)) return false;
  return std::isfinite(observation.confidence);
}

void DriftMonitor::set_reference(std::span<const DriftObservation> reference) {
  if (reference.empty()) throw core::Error("drift monitor: the supplied reference is empty", "give at least one observation");
  for (std::size_t i = 0; i < reference.size(); ++i)
    if (!valid(reference[i]))
      throw core::Error("drift monitor: reference observation " + std::to_string(i) + " has " +
                            std::to_string(reference[i].features.size()) + " features or a non-finite value; expected " +
                            std::to_string(options_.feature_names.size()) + " finite values",
                        "give every observation one finite value per feature name");
  reference_.assign(reference.begin(), reference.end());
  reference_frozen_ = true;
  current_.clear();
}

bool DriftMonitor::observe(const DriftObservation& observation) {
  if (!valid(observation)) {
    ++rejected_;
    return false;
  }
  if (!reference_ready()) {
    reference_.push_back(observation);
    return true;
  }
  current_.push_back(observation);
  while (current_.size() > options_.window_size) current_.pop_front();
  return true;
}

DriftReport DriftMonitor::evaluate() const {
  if (!reference_ready())
    throw core::Error("drift monitor: the reference holds " + std::to_string(reference_.size()) + " of " +
                          std::to_string(options_.reference_size) + " observations",
                      "wait for more traffic, or supply a reference");
  if (current_.size() < options_.min_current)
    throw core::Error("drift monitor: the current window holds " + std::to_string(current_.size()) + " observations, " +
                          std::to_string(options_.min_current - current_.size()) + " short of min_current",
                      "wait for more traffic, or lower min_current");
  DriftReport report;
  report.drift_share = options_.drift_share;
  report.reference_size = reference_.size();
  report.current_size = current_.size();
  std::vector<double> r(reference_.size()), c(current_.size());
  auto numeric = [&](const std::string& name, auto&& value) {
    for (std::size_t i = 0; i < reference_.size(); ++i) r[i] = value(reference_[i]);
    for (std::size_t i = 0; i < current_.size(); ++i) c[i] = value(current_[i]);
    auto result = numeric_drift(r, c, options_.numeric_test, options_.numeric_threshold);
    result.feature = name;
    report.features.push_back(std::move(result));
  };
  for (std::size_t f = 0; f < options_.feature_names.size(); ++f)
    numeric(options_.feature_names[f], [f](const DriftObservation& o) { return o.features[f]; });
  if (options_.monitor_confidence) numeric("confidence", [](const DriftObservation& o) { return o.confidence; });
  if (options_.monitor_predicted_class) {
    std::vector<std::int64_t> rc(reference_.size()), cc(current_.size());
    for (std::size_t i = 0; i < reference_.size(); ++i) rc[i] = reference_[i].predicted_class;
    for (std::size_t i = 0; i < current_.size(); ++i) cc[i] = current_[i].predicted_class;
    auto result = categorical_drift(rc, cc, options_.categorical_test, options_.categorical_threshold);
    result.feature = "predicted_class";
    report.features.push_back(std::move(result));
  }
  for (const auto& f : report.features) report.drifted_features += f.drifted ? 1 : 0;
  report.drifted_share = static_cast<double>(report.drifted_features) / static_cast<double>(report.features.size());
  report.dataset_drift = report.drifted_share >= options_.drift_share;
  return report;
}

}  // namespace aegis::monitor
