#include "aegis/models/normalized_classifier.h"

#include <cmath>

#include "aegis/core/error.h"

namespace aegis::models {

NormalizedClassifier::NormalizedClassifier(Classifier& inner, std::vector<float> mean, std::vector<float> std)
    : inner_(inner), info_(inner.info()) {
  const std::size_t d = info_.sample_size();
  const std::size_t channels = info_.input_shape.empty() ? 1 : static_cast<std::size_t>(info_.input_shape[0]);
  auto expand = [&](const std::vector<float>& values, const char* what) {
    if (values.size() != 1 && values.size() != channels)
      throw core::Error(std::string("--") + what + " has " + std::to_string(values.size()) +
                            " values; the model's input has " + std::to_string(channels) + " channels",
                        "give one value, or one per channel (e.g. --mean 0.485,0.456,0.406)");
    std::vector<float> out(d);
    const std::size_t per_channel = d / (values.size() == 1 ? 1 : channels);
    for (std::size_t j = 0; j < d; ++j) out[j] = values.size() == 1 ? values[0] : values[j / per_channel];
    return out;
  };
  mean_ = expand(mean.empty() ? std::vector<float>{0.0f} : mean, "mean");
  auto stds = expand(std.empty() ? std::vector<float>{1.0f} : std, "std");
  inv_std_.resize(d);
  for (std::size_t j = 0; j < d; ++j) {
    if (!(stds[j] > 0) || !std::isfinite(stds[j]))
      throw core::Error("--std must be positive and finite", "give the standard deviations the model was trained with");
    inv_std_[j] = 1.0f / stds[j];
  }
}

void NormalizedClassifier::normalize(std::span<const float> inputs, std::size_t n) {
  const std::size_t d = mean_.size();
  buffer_.resize(n * d);
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j) buffer_[i * d + j] = (inputs[i * d + j] - mean_[j]) * inv_std_[j];
}

void NormalizedClassifier::do_predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) {
  normalize(inputs, n);
  inner_.predict(buffer_, scores);
}

void NormalizedClassifier::do_gradient(std::span<const float> inputs, std::size_t n, const ScoreGradientFn& fn,
                                       std::span<float> grad_inputs, std::span<float> scores) {
  normalize(inputs, n);
  inner_.gradient(buffer_, fn, grad_inputs, scores);
  const std::size_t d = mean_.size();
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < d; ++j) grad_inputs[i * d + j] *= inv_std_[j];
}

}  // namespace aegis::models
