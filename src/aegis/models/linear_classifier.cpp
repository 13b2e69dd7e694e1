#include "aegis/models/linear_classifier.h"

#include "aegis/core/error.h"

namespace aegis::models {

LinearClassifier::LinearClassifier(std::vector<std::int64_t> input_shape, int classes, std::vector<float> weights,
                                   std::vector<float> bias)
    : weights_(std::move(weights)), bias_(std::move(bias)) {
  info_.input_shape = std::move(input_shape);
  info_.num_classes = classes;
  info_.scores = ScoreKind::Logits;
  info_.has_gradients = true;
  info_.backend = "linear";
  info_.source = "weights";
  if (classes < 2 || weights_.size() != static_cast<std::size_t>(classes) * info_.sample_size() ||
      bias_.size() != static_cast<std::size_t>(classes))
    throw core::Error("linear model: weights must be classes x features and bias one per class");
}

void LinearClassifier::do_predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) {
  const std::size_t d = info_.sample_size();
  const std::size_t k = static_cast<std::size_t>(info_.num_classes);
  for (std::size_t i = 0; i < n; ++i) {
    const float* x = inputs.data() + i * d;
    for (std::size_t c = 0; c < k; ++c) {
      const float* w = weights_.data() + c * d;
      double sum = bias_[c];
      for (std::size_t j = 0; j < d; ++j) sum += static_cast<double>(w[j]) * x[j];
      scores[i * k + c] = static_cast<float>(sum);
    }
  }
}

void LinearClassifier::do_gradient(std::span<const float> inputs, std::size_t n, const ScoreGradientFn& fn,
                                   std::span<float> grad_inputs, std::span<float> scores) {
  const std::size_t d = info_.sample_size();
  const std::size_t k = static_cast<std::size_t>(info_.num_classes);
  do_predict(inputs, n, scores);
  std::vector<float> grad_scores(n * k, 0.0f);
  fn(scores.first(n * k), grad_scores);
  for (std::size_t i = 0; i < n; ++i) {
    float* g = grad_inputs.data() + i * d;
    for (std::size_t j = 0; j < d; ++j) g[j] = 0.0f;
    for (std::size_t c = 0; c < k; ++c) {
      const float upstream = grad_scores[i * k + c];
      if (upstream == 0.0f) continue;
      const float* w = weights_.data() + c * d;
      for (std::size_t j = 0; j < d; ++j) g[j] += upstream * w[j];
    }
  }
}

}  // namespace aegis::models
