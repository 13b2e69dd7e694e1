#include "aegis/models/classifier.h"

#include <algorithm>
#include <cmath>

#include "aegis/core/error.h"

namespace aegis::models {

void Classifier::do_gradient(std::span<const float>, std::size_t, const ScoreGradientFn&, std::span<float>,
                             std::span<float>) {
  throw core::Error("the " + info().backend + " model '" + info().source +
                        "' is black-box: it gives scores but no gradients",
                    "use a black-box attack (square for scores, hopskipjump for decisions only), or load "
                    "the model as TorchScript for white-box attacks");
}

void to_probabilities(ScoreKind kind, std::span<const float> scores, std::span<float> probabilities) {
  if (scores.empty()) return;
  if (kind == ScoreKind::Logits) {
    const float top = *std::max_element(scores.begin(), scores.end());
    double sum = 0;
    for (std::size_t i = 0; i < scores.size(); ++i) {
      probabilities[i] = std::exp(scores[i] - top);
      sum += probabilities[i];
    }
    for (std::size_t i = 0; i < scores.size(); ++i) probabilities[i] = static_cast<float>(probabilities[i] / sum);
    return;
  }
  double sum = 0;
  for (std::size_t i = 0; i < scores.size(); ++i) {
    probabilities[i] = std::isfinite(scores[i]) ? std::max(scores[i], 0.0f) : 0.0f;
    sum += probabilities[i];
  }
  for (std::size_t i = 0; i < scores.size(); ++i)
    probabilities[i] = sum > 0 ? static_cast<float>(probabilities[i] / sum) : 1.0f / static_cast<float>(scores.size());
}

int argmax(std::span<const float> row) {
  return static_cast<int>(std::max_element(row.begin(), row.end()) - row.begin());
}

void to_probabilities(std::span<float> scores, std::size_t classes, ScoreKind kind) {
  for (std::size_t r = 0; r < scores.size() / classes; ++r) {
    float* row = scores.data() + r * classes;
    double sum = 0;
    if (kind == ScoreKind::Logits) {
      const float top = *std::max_element(row, row + classes);
      for (std::size_t c = 0; c < classes; ++c) sum += (row[c] = std::exp(row[c] - top));
    } else {
      for (std::size_t c = 0; c < classes; ++c) sum += (row[c] = std::max(row[c], 0.0f));
    }
    if (sum > 0)
      for (std::size_t c = 0; c < classes; ++c) row[c] = static_cast<float>(row[c] / sum);
  }
}

}  // namespace aegis::models
