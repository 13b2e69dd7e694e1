// DP-SGD (Abadi et al. 2016) for TorchScript models through LibTorch: Poisson sampling,
// per-sample gradients computed per layer from the layer's input and output gradient of one
// batched backward pass (Linear, Conv2d, LayerNorm, Embedding; parameter-free layers pass
// through), clipping of each sample's whole gradient to max_grad_norm, Gaussian noise of standard
// deviation noise_multiplier * max_grad_norm on the sum, divided by the expected batch size
// (Opacus's convention). LibTorch stays behind this header.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aegis/models/torchscript_classifier.h"

namespace aegis::models {

struct DpSgdOptions {
  double noise_multiplier = 1.0;  // sigma
  double max_grad_norm = 1.0;     // C
  double sample_rate = 0.01;      // q: each record joins a step's batch with this probability
  std::string optimizer = "sgd";  // "sgd" (momentum 0 unless set) or "adam"
  double learning_rate = 0.1;
  double momentum = 0.0;
  std::uint64_t seed = 0;         // Poisson sampling and noise; with noise from a CSPRNG when secure_noise
  bool secure_noise = false;      // draw the noise from OpenSSL's CSPRNG (RAND_bytes) instead of the seed: not reproducible
};

struct DpStepStats {
  std::size_t batch_size = 0;      // the Poisson-sampled size of this step
  double mean_loss = 0;
  double clipped_fraction = 0;     // samples whose gradient norm exceeded max_grad_norm
  double mean_grad_norm = 0;       // before clipping
};

using DpProgress = std::function<void(std::uint64_t step, std::uint64_t steps, const DpStepStats&)>;

// Trains a TorchScript model (a plain sequence of top-level submodules, as nn.Sequential or a
// module whose forward() runs its children in order; checked on the first batch against forward())
// with DP-SGD. Parameterised layers other than Linear, Conv2d, LayerNorm and Embedding (BatchNorm
// in particular, which mixes samples) are refused with what to use instead.
class DpSgdTrainer {
 public:
  // Throws core::Error when the model is not supported.
  DpSgdTrainer(const std::string& torchscript_path, const TorchScriptOptions& model_options, DpSgdOptions options);
  ~DpSgdTrainer();

  // One DP-SGD step on the records selected by Poisson sampling from (x, labels).
  DpStepStats step(std::span<const float> x, std::span<const int> labels);
  // `steps` steps; progress after each.
  void train(std::span<const float> x, std::span<const int> labels, std::uint64_t steps, const DpProgress& progress = {});

  // Per-sample gradients of the cross-entropy loss of each of the n samples, flattened over every
  // trainable parameter in named_parameters() order: n rows of parameter_count() floats. `slow`
  // runs one backward pass per sample (the reference the fast per-layer path is tested against).
  std::vector<float> per_sample_gradients(std::span<const float> x, std::span<const int> labels, bool slow);
  std::size_t parameter_count() const;
  // The current parameters, flattened in the same order (named_parameters()).
  std::vector<float> parameters() const;

  // The model as it stands, for evaluation and attacks; and saving it as TorchScript.
  Classifier& classifier();
  void save(const std::string& path);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aegis::models
