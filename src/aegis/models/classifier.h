// One interface for every model Aegis attacks: a batch of inputs in, class scores out, and input
// gradients where the backend has them. Attacks are written once against it (IBM ART's idea).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace aegis::models {

// What a backend returns per class: raw logits, or probabilities that sum to one.
enum class ScoreKind { Logits, Probabilities };

struct ClassifierInfo {
  std::vector<std::int64_t> input_shape;  // one sample, without the batch dimension, e.g. {1, 28, 28}
  int num_classes = 0;
  ScoreKind scores = ScoreKind::Logits;
  bool has_gradients = false;
  std::string backend;  // "torchscript", "onnx", "http", "linear"
  std::string source;   // file or URL it was loaded from

  std::size_t sample_size() const {
    std::size_t size = 1;
    for (auto dim : input_shape) size *= static_cast<std::size_t>(dim);
    return size;
  }
};

// Given the scores of a batch (n * num_classes), fills dLoss/dScores (same layout); the backend
// back-propagates that into the inputs. One callback covers cross-entropy, DLR, C&W margins and
// the per-class gradients DeepFool needs.
using ScoreGradientFn = std::function<void(std::span<const float> scores, std::span<float> grad_scores)>;

class Classifier {
 public:
  virtual ~Classifier() = default;

  virtual const ClassifierInfo& info() const = 0;
  std::size_t sample_size() const { return info().sample_size(); }
  int num_classes() const { return info().num_classes; }
  bool has_gradients() const { return info().has_gradients; }

  // inputs: n samples laid out contiguously (n * sample_size floats); scores: n * num_classes.
  void predict(std::span<const float> inputs, std::span<float> scores) {
    const std::size_t n = inputs.size() / sample_size();
    queries_ += n;
    do_predict(inputs, n, scores);
  }

  // Gradient of sum over the batch of the loss whose score gradient `fn` supplies, with respect to
  // the inputs. Also returns the scores of the forward pass it used. Throws core::Error when the
  // backend is black-box.
  void gradient(std::span<const float> inputs, const ScoreGradientFn& fn, std::span<float> grad_inputs,
                std::span<float> scores) {
    const std::size_t n = inputs.size() / sample_size();
    queries_ += n;
    gradient_calls_ += n;
    do_gradient(inputs, n, fn, grad_inputs, scores);
  }

  // Samples scored so far (every predict and every gradient pass counts each sample once).
  std::uint64_t queries() const { return queries_.load(); }
  std::uint64_t gradient_queries() const { return gradient_calls_.load(); }
  void reset_queries() {
    queries_ = 0;
    gradient_calls_ = 0;
  }

  // A batch size that keeps the backend efficient and memory bounded.
  virtual std::size_t preferred_batch() const { return 128; }

 protected:
  virtual void do_predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) = 0;
  // Default: black-box. Backends with autograd override it.
  virtual void do_gradient(std::span<const float> inputs, std::size_t n, const ScoreGradientFn& fn,
                           std::span<float> grad_inputs, std::span<float> scores);

 private:
  std::atomic<std::uint64_t> queries_{0};
  std::atomic<std::uint64_t> gradient_calls_{0};
};

// Converts a row of scores to probabilities (softmax of logits; probabilities are returned as given,
// clamped to be non-negative and renormalised).
void to_probabilities(ScoreKind kind, std::span<const float> scores, std::span<float> probabilities);

// Index of the largest score in a row.
int argmax(std::span<const float> row);

// Rows of `classes` scores turned into probabilities in place: the softmax of logits; probabilities
// clipped at 0 and renormalised (a row of zeros stays zeros).
void to_probabilities(std::span<float> scores, std::size_t classes, ScoreKind kind);

}  // namespace aegis::models
