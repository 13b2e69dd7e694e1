// ONNX models run forward by OpenCV's DNN module: a black-box backend (scores, no gradients).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aegis/models/classifier.h"

namespace aegis::models {

struct OnnxOptions {
  std::vector<std::int64_t> input_shape;  // one sample; empty = read from the graph's first input
  std::optional<ScoreKind> scores;        // unset = detected from a probe forward pass
  std::size_t batch = 128;
  int threads = 0;                        // OpenCV threads, 0 = its default
};

std::unique_ptr<Classifier> load_onnx(const std::string& path, const OnnxOptions& options);

}  // namespace aegis::models
