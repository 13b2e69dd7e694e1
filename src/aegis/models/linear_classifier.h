// A multinomial linear model, scores = W x + b, with exact gradients. It is the model whose
// adversarial distances have a closed form, so the attacks are tested against it; it also serves
// tabular models exported as weight matrices.
#pragma once

#include <vector>

#include "aegis/models/classifier.h"

namespace aegis::models {

class LinearClassifier : public Classifier {
 public:
  // weights: classes x features (row-major); bias: classes.
  LinearClassifier(std::vector<std::int64_t> input_shape, int classes, std::vector<float> weights,
                   std::vector<float> bias);

  const ClassifierInfo& info() const override { return info_; }
  const std::vector<float>& weights() const { return weights_; }
  const std::vector<float>& bias() const { return bias_; }

 protected:
  void do_predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) override;
  void do_gradient(std::span<const float> inputs, std::size_t n, const ScoreGradientFn& fn,
                   std::span<float> grad_inputs, std::span<float> scores) override;

 private:
  ClassifierInfo info_;
  std::vector<float> weights_, bias_;
};

}  // namespace aegis::models
