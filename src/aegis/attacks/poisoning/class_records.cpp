#include "aegis/attacks/poisoning/class_records.h"

#include <cmath>
#include <cstdio>

#include "aegis/core/error.h"

namespace aegis::attacks::poisoning {
namespace {

// Larger label spaces than this are far beyond any classifier and would only make per-class
// bookkeeping allocate what a hostile header asks for.
constexpr int kMaxClasses = 1'000'000;

}  // namespace

void check_labels(const std::string& method, std::span<const int> labels, int classes) {
  if (classes < 1 || classes > kMaxClasses)
    throw core::Error(method + ": " + std::to_string(classes) + " classes; expected between 1 and " +
                          std::to_string(kMaxClasses),
                      "pass the number of classes the model was trained on");
  for (std::size_t i = 0; i < labels.size(); ++i)
    if (labels[i] < 0 || labels[i] >= classes)
      throw core::Error(method + ": record " + std::to_string(i) + " has label " + std::to_string(labels[i]) +
                            ", outside [0, " + std::to_string(classes) + ")",
                        "labels must be class indices 0 .. classes-1; check the label file and --classes");
}

std::vector<std::vector<std::size_t>> records_by_class(const std::string& method, std::span<const float> features,
                                                       std::size_t d, std::span<const int> labels, int classes) {
  if (d == 0)
    throw core::Error(method + ": feature dimension is 0", "pass the width of the feature rows (d)");
  if (features.size() % d != 0)
    throw core::Error(method + ": " + std::to_string(features.size()) + " feature values are not whole rows of " +
                          std::to_string(d),
                      "features must be n x d, row-major");
  const std::size_t n = features.size() / d;
  if (n != labels.size())
    throw core::Error(method + ": " + std::to_string(n) + " feature rows but " + std::to_string(labels.size()) +
                          " labels",
                      "features and labels must describe the same records in the same order");
  check_labels(method, labels, classes);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j)
      if (!std::isfinite(features[i * d + j]))
        throw core::Error(method + ": record " + std::to_string(i) + " has a non-finite feature (" +
                              std::to_string(features[i * d + j]) + ") in column " + std::to_string(j),
                          "the activations were exported from a diverged model or a damaged file");
  std::vector<std::vector<std::size_t>> rows(static_cast<std::size_t>(classes));
  for (std::size_t i = 0; i < n; ++i) rows[static_cast<std::size_t>(labels[i])].push_back(i);
  return rows;
}

std::mt19937_64 class_generator(std::uint64_t seed, int cls) {
  std::seed_seq seeds{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32),
                      static_cast<std::uint32_t>(cls)};
  return std::mt19937_64(seeds);
}

std::string fixed(double value, int decimals) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

}  // namespace aegis::attacks::poisoning
