// Data drift off the gateway's request path: two-sample tests of a current window of inputs and
// predictions against a reference window, per feature, and a dataset verdict over all features.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::monitor {

// Which two-sample test compares a feature's reference and current values. The statistic and the
// drift rule of each (thresholds are Evidently's defaults, used when none is given):
//   Ks             two-sided Kolmogorov-Smirnov D; p-value exact (the lattice-path count scipy's
//                  ks_2samp uses) when n * m <= 10^7, which bounds its time to some milliseconds,
//                  otherwise the Kolmogorov limit distribution at (sqrt(e) + 0.12 + 0.11 / sqrt(e))
//                  D with e = nm / (n + m) (Stephens' correction); drift when p < 0.05.
//   ChiSquared     Pearson's chi-squared of the current counts against the reference shares scaled
//                  to the current size (Evidently's use of scipy.stats.chisquare), categories the
//                  union of both windows, df = categories - 1; drift when p < 0.05. A category absent
//                  from the reference but present now gives an infinite statistic and p = 0.
//   ZTest          two-proportion z statistic of the first (smallest) category's share; drift when
//                  the two-sided p < 0.05. For features with at most two values.
//   Psi            population stability index sum (r - c) ln(r / c) over bins; numeric features are
//                  cut at the reference's quantiles (numpy's linear quantiles at i/bins, duplicates
//                  merged; a value equal to an edge goes to the bin above it), categorical ones per
//                  value. Empty bins get Evidently's epsilon: the smallest non-zero share / 10^6 when
//                  that is <= 10^-4, else 10^-4. Drift when PSI >= 0.1.
//   JensenShannon  Jensen-Shannon distance, base 2 (in [0, 1]; Evidently calls scipy's
//                  jensenshannon with base=2), over Evidently's binning: a numeric feature whose
//                  reference holds more than 20 distinct values is cut into numpy's Sturges
//                  histogram bins over both windows together, anything else per value; no
//                  epsilon. Drift when distance >= 0.1.
//   Wasserstein    first Wasserstein distance divided by max(reference std (ddof 0), 0.001), as
//                  Evidently's "wasserstein" test; drift when >= 0.1.
// Auto picks as Evidently's _get_default_stattest (src/evidently/calculations/stattests/registry.py):
//   reference of <= 1000 values: numeric with > 5 distinct values (both windows together): Ks;
//     numeric with 3..5 distinct, or categorical with > 2: ChiSquared; otherwise ZTest;
//   reference of > 1000 values: numeric with > 5 distinct values: Wasserstein; otherwise
//     JensenShannon.
enum class DriftTest { Auto, Ks, ChiSquared, ZTest, Psi, JensenShannon, Wasserstein };

enum class FeatureKind { Numeric, Categorical };

// "auto", "ks", "chisquare", "z", "psi", "jensenshannon", "wasserstein" (Evidently's names).
std::string_view to_string(DriftTest test);
// The inverse of to_string; throws core::Error naming the valid names.
DriftTest parse_drift_test(std::string_view name);

// Evidently's default test for a feature (see DriftTest).
DriftTest default_drift_test(FeatureKind kind, std::size_t reference_size, std::size_t distinct_values);
// The default threshold of a test: 0.05 for the p-value tests, 0.1 for the distances.
double default_drift_threshold(DriftTest test);
// True for the tests whose drift rule is p < threshold (Ks, ChiSquared, ZTest).
bool uses_p_value(DriftTest test);

struct DriftResult {
  std::string feature;
  FeatureKind kind = FeatureKind::Numeric;
  DriftTest test = DriftTest::Ks;  // the test that ran, never Auto
  double statistic = 0;            // D, chi-squared, z, PSI, JS distance or normed Wasserstein
  double p_value = 0;              // NaN for the distance tests
  double threshold = 0;
  bool drifted = false;            // p_value < threshold, or statistic >= threshold for distances
  std::size_t reference_size = 0;
  std::size_t current_size = 0;
};

// Non-finite values are dropped first (as Evidently drops NaN). Throws core::Error when either
// sample is then empty, or when the test does not apply (Ks/Wasserstein on categorical values).
DriftResult numeric_drift(std::span<const double> reference, std::span<const double> current,
                          DriftTest test = DriftTest::Auto, std::optional<double> threshold = {});
DriftResult categorical_drift(std::span<const std::int64_t> reference, std::span<const std::int64_t> current,
                              DriftTest test = DriftTest::Auto, std::optional<double> threshold = {});

// The statistics themselves, for callers that want them without a verdict. Inputs must be finite
// and non-empty (core::Error otherwise).
struct TwoSampleStatistic {
  double statistic = 0;
  double p_value = 0;
};
TwoSampleStatistic ks_two_sample(std::span<const double> reference, std::span<const double> current);
// Distance between the empirical distributions, not normed.
double wasserstein_distance(std::span<const double> reference, std::span<const double> current);
// Base-2 Jensen-Shannon distance of two histograms (each normalised to sum 1 first, as scipy does).
double jensen_shannon_distance(std::span<const double> p, std::span<const double> q);
// PSI of a numeric feature with `bins` reference-quantile bins (see DriftTest::Psi).
double population_stability_index(std::span<const double> reference, std::span<const double> current,
                                  std::size_t bins = 10);

// One request as the drift monitor sees it: the numeric features the gateway extracted from the
// input (e.g. the mean pixel, per-feature values of a tabular row), and what the model answered.
struct DriftObservation {
  std::vector<double> features;
  std::int64_t predicted_class = 0;
  double confidence = 0;  // the predicted class's probability
};

struct DriftMonitorOptions {
  std::vector<std::string> feature_names;  // one per numeric feature; required, sets the feature count
  std::size_t reference_size = 1000;       // the first this many observations become the reference
  std::size_t window_size = 1000;          // the current window: the latest this many observations
  std::size_t min_current = 100;           // evaluate() wants at least this many in the window
  DriftTest numeric_test = DriftTest::Auto;
  DriftTest categorical_test = DriftTest::Auto;
  std::optional<double> numeric_threshold;
  std::optional<double> categorical_threshold;
  double drift_share = 0.5;  // Evidently's DatasetDriftMetric: dataset drift when share >= this
  bool monitor_confidence = true;        // test the predicted class's confidence as a numeric feature
  bool monitor_predicted_class = true;   // test the predicted class as a categorical feature
};

struct DriftReport {
  std::vector<DriftResult> features;  // the numeric features in order, then "confidence", then "predicted_class"
  std::size_t drifted_features = 0;
  double drifted_share = 0;
  double drift_share = 0.5;
  bool dataset_drift = false;         // drifted_share >= drift_share
  std::size_t reference_size = 0;
  std::size_t current_size = 0;
};

// Keeps a frozen reference (the first reference_size observations, or one supplied) and a
// sliding window of the latest window_size observations after it; evaluate() tests each feature
// of the window against the reference. Memory is bounded by (reference_size + window_size) *
// (features + 2) doubles. Not thread-safe: the gateway feeds and evaluates it from one worker
// thread (the filter hands observations to that worker), and so must any other caller.
class DriftMonitor {
 public:
  // Throws core::Error on no feature names, a zero size, min_current > window_size, or a
  // drift_share outside (0, 1].
  explicit DriftMonitor(DriftMonitorOptions options);

  // Freezes these as the reference (replacing any), and empties the current window. Throws
  // core::Error when one has the wrong number of features or there are none.
  void set_reference(std::span<const DriftObservation> reference);
  // Adds one observation: to the reference until it is full, then to the window. Returns false
  // (and counts it in rejected()) for one whose feature count differs from feature_names, or
  // whose values are not all finite: a malformed request must not poison the statistics.
  bool observe(const DriftObservation& observation);

  bool reference_ready() const { return reference_.size() >= options_.reference_size || reference_frozen_; }
  std::size_t reference_count() const { return reference_.size(); }
  std::size_t current_count() const { return current_.size(); }
  std::uint64_t rejected() const { return rejected_; }
  const DriftMonitorOptions& options() const { return options_; }

  // Throws core::Error when the reference is not complete or the window holds fewer than
  // min_current observations (saying how many more are needed).
  DriftReport evaluate() const;

 private:
  bool valid(const DriftObservation& observation) const;

  DriftMonitorOptions options_;
  std::vector<DriftObservation> reference_;
  bool reference_frozen_ = false;
  std::deque<DriftObservation> current_;
  std::uint64_t rejected_ = 0;
};

}  // namespace aegis::monitor
