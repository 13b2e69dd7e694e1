// TorchScript models through LibTorch: the white-box backend (real autograd gradients) and the one
// that can be trained (adversarial training in `aegis harden`). LibTorch stays behind this header.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "aegis/models/classifier.h"

namespace aegis::models {

struct TorchScriptOptions {
  std::string device = "cpu";                        // "cpu", "cuda", "cuda:1"
  int threads = 0;                                   // LibTorch intra-op threads, 0 = all cores
  std::vector<std::int64_t> input_shape;             // one sample; required (TorchScript does not declare it)
  std::optional<ScoreKind> scores;                   // unset = detected from a probe forward pass
  std::size_t batch = 128;
};

// What adversarial training minimises per batch: cross-entropy on the given (adversarial) inputs
// (Madry et al.), or TRADES: CE on the clean inputs + beta * KL(p(clean) || p(adversarial)).
enum class TrainingObjective { CrossEntropy, Trades };

struct TrainingOptions {
  std::string optimizer = "adam";  // "adam" or "sgd" (momentum 0.9)
  double learning_rate = 1e-3;
  double weight_decay = 0.0;
};

class TrainableClassifier : public Classifier {
 public:
  // One optimiser step; returns the batch's mean loss. `x_adv` may equal `x_clean` (clean training).
  virtual double train_step(std::span<const float> x_clean, std::span<const float> x_adv, std::span<const int> labels,
                            TrainingObjective objective, double beta) = 0;
  // One optimiser step of cross-entropy against target probabilities (rows of num_classes summing
  // to one): distillation onto a victim's outputs when a surrogate is fitted in `aegis extract`.
  virtual double train_step_soft(std::span<const float> x, std::span<const float> target_probabilities) = 0;
  virtual void set_learning_rate(double learning_rate) = 0;
  // Fresh initial weights drawn as PyTorch's own layers draw them (weights and biases of Linear and
  // Conv layers U(-1/sqrt(fan_in), 1/sqrt(fan_in)); normalisation layers to identity, running
  // statistics reset), deterministic for a seed, and a fresh optimiser: the same architecture,
  // untrained, for LiRA's reference models and extraction surrogates.
  virtual void reinitialize(std::uint64_t seed) = 0;
  // Names of the model's top-level submodules, in registration order.
  virtual std::vector<std::string> layer_names() const = 0;
  // Activations of `inputs` at the output of the top-level submodule `layer` (or the input of the
  // last one when `layer` is empty), flattened per sample into `features`; returns their width.
  // A model with a `features` method (TorchScript @torch.jit.export) is asked through it instead
  // when `layer` is empty. Otherwise the submodules are run in order, which is only the model when
  // forward() is a plain sequence: that is checked on the first batch against forward(), and a
  // model that is not one is refused with what to do.
  virtual std::size_t activations(std::span<const float> inputs, const std::string& layer, std::vector<float>& features) = 0;
  virtual void save(const std::string& path) = 0;
  // The trainable parameters flattened in named_parameters() order: what federated averaging
  // ships between the aggregator and its participants.
  virtual std::vector<float> parameter_vector() const = 0;
  // Loads a vector of parameter_vector()'s layout; throws core::Error when its length differs.
  virtual void set_parameter_vector(std::span<const float> values) = 0;
  // FedProx (Li et al. 2020): while mu > 0, every train_step adds (mu / 2) * ||w - anchor||^2 to its
  // loss, which keeps local training near the global model on non-IID data; mu = 0 clears it.
  virtual void set_proximal_term(std::span<const float> anchor, double mu) = 0;
  // Drops the optimiser's state (Adam moments, momentum): each federated round starts afresh.
  virtual void reset_optimizer() = 0;
  // Seconds for `steps` plain LibTorch forward+backward passes (cross-entropy, input gradient) over
  // x in the same batches: the model's own cost of a white-box step, to weigh attack overhead against.
  virtual double time_forward_backward(std::span<const float> x, std::span<const int> labels, int steps) = 0;
};

// Loads a TorchScript archive (torch.jit.save). Throws core::Error with a hint when the file is not
// TorchScript, the device is unavailable, or a probe forward pass on `input_shape` fails.
std::unique_ptr<TrainableClassifier> load_torchscript(const std::string& path, const TorchScriptOptions& options,
                                                      const TrainingOptions& training = {});

// Whether this build's LibTorch can use CUDA, and how many devices it sees.
int cuda_device_count();

}  // namespace aegis::models
