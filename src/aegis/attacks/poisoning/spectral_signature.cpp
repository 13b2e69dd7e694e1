// Spectral signatures (Tran, Li, Madry 2018): per class, the squared projection on the top singular
// vector of the centred representations. See poison_detection.h.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "aegis/attacks/poisoning/class_records.h"
#include "aegis/attacks/poisoning/poison_detection.h"
#include "aegis/attacks/poisoning/principal_components.h"
#include "aegis/core/error.h"

namespace aegis::attacks {
namespace {

void check(const SpectralSignatureOptions& o) {
  const std::string what = "spectral signature: ";
  if (!(o.expected_fraction > 0.0 && o.expected_fraction <= 1.0))
    throw core::Error(what + "expected_fraction is " + std::to_string(o.expected_fraction) + "; it must lie in (0, 1]",
                      "use an upper bound on the share of a class an attacker could poison, for example 0.10");
  if (!(o.removal_factor > 0.0) || !std::isfinite(o.removal_factor))
    throw core::Error(what + "removal_factor is " + std::to_string(o.removal_factor) + "; it must be positive",
                      "use Tran et al.'s 1.5");
}

double median(std::vector<double> values) {
  const auto middle = values.begin() + static_cast<std::ptrdiff_t>(values.size() / 2);
  std::nth_element(values.begin(), middle, values.end());
  if (values.size() % 2 == 1) return *middle;
  return 0.5 * (*middle + *std::max_element(values.begin(), middle));
}

struct Spread {
  double centre = 0;  // median
  double scale = 0;   // 1.4826 * median absolute deviation
};

// 1.4826 * MAD estimates the standard deviation of a Gaussian, and a minority of outliers barely
// moves it. When more than half the projections coincide the MAD is 0; the plain standard
// deviation then stands in, and 0 is returned only when every projection is the same.
Spread robust_spread(const std::vector<double>& projection) {
  Spread spread;
  spread.centre = median(projection);
  std::vector<double> deviation(projection.size());
  for (std::size_t i = 0; i < projection.size(); ++i) deviation[i] = std::abs(projection[i] - spread.centre);
  spread.scale = 1.4826 * median(deviation);
  if (spread.scale > 0) return spread;
  double squares = 0;
  for (double p : projection) squares += p * p;
  spread.scale = std::sqrt(squares / static_cast<double>(projection.size()));
  return spread;
}

}  // namespace

PoisonScores spectral_signature(std::span<const float> features, std::size_t d, std::span<const int> labels,
                                int classes, const SpectralSignatureOptions& options) {
  const auto start = std::chrono::steady_clock::now();
  check(options);
  const auto by_class = poisoning::records_by_class("spectral signature", features, d, labels, classes);
  auto out = poisoning::no_suspects("spectral-signature", labels.size());

  for (int cls = 0; cls < classes; ++cls) {
    const auto& rows = by_class[static_cast<std::size_t>(cls)];
    const std::string name = "class " + std::to_string(cls) + ": ";
    if (rows.empty()) continue;
    if (rows.size() < 2) {
      out.notes.push_back(name + "1 record, too few for a spectral signature; skipped");
      continue;
    }
    const auto pca = poisoning::principal_components(features, d, rows, 1);
    if (pca.projections.cols() == 0) {
      out.notes.push_back(name + "all " + std::to_string(rows.size()) + " records have the same features; skipped");
      continue;
    }
    std::vector<double> projection(rows.size());
    for (std::size_t r = 0; r < rows.size(); ++r) projection[r] = pca.projections(static_cast<Eigen::Index>(r), 0);
    const Spread spread = robust_spread(projection);
    std::vector<double> score(rows.size(), 0.0);
    std::size_t beyond = 0;
    for (std::size_t r = 0; r < rows.size(); ++r) {
      const double z = spread.scale > 0 ? projection[r] / spread.scale : 0.0;
      score[r] = z * z;
      out.score[rows[r]] = score[r];
      // A Gaussian class lies beyond 5 robust deviations of its median with probability below 1e-6
      // per record, so a count here points at a planted cluster.
      if (spread.scale > 0 && std::abs(projection[r] - spread.centre) > 5.0 * spread.scale) ++beyond;
    }

    const double wanted = options.removal_factor * options.expected_fraction * static_cast<double>(rows.size());
    const auto remove = std::min(rows.size(), static_cast<std::size_t>(std::llround(wanted)));
    // Highest scores first; equal scores by record order, so the flags are reproducible.
    std::vector<std::size_t> order(rows.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return score[a] > score[b]; });
    for (std::size_t r = 0; r < remove; ++r) out.flagged[rows[order[r]]] = 1;

    out.notes.push_back(name + "flagged the top " + std::to_string(remove) + " of " + std::to_string(rows.size()) +
                        " (score >= " + poisoning::fixed(remove > 0 ? score[order[remove - 1]] : 0.0, 1) + "); " +
                        std::to_string(beyond) + " more than 5 robust deviations from the median; the top direction holds " +
                        poisoning::fixed(100.0 * pca.variance[0] / pca.total_variance, 1) + "% of the variance");
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace aegis::attacks
