// Puts the user's normalisation in front of a model, so that attacks work in the stated value range
// (e.g. pixels in [0,1]) while the model sees (x - mean) / std per channel.
#pragma once

#include <memory>
#include <vector>

#include "aegis/models/classifier.h"

namespace aegis::models {

class NormalizedClassifier : public Classifier {
 public:
  // mean and std hold one value per channel (the first input dimension) or a single value.
  NormalizedClassifier(Classifier& inner, std::vector<float> mean, std::vector<float> std);

  const ClassifierInfo& info() const override { return info_; }
  std::size_t preferred_batch() const override { return inner_.preferred_batch(); }

 protected:
  void do_predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) override;
  void do_gradient(std::span<const float> inputs, std::size_t n, const ScoreGradientFn& fn,
                   std::span<float> grad_inputs, std::span<float> scores) override;

 private:
  void normalize(std::span<const float> inputs, std::size_t n);
  Classifier& inner_;
  ClassifierInfo info_;
  std::vector<float> mean_, inv_std_;  // per element of one sample
  std::vector<float> buffer_;
};

}  // namespace aegis::models
