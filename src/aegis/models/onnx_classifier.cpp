#include "aegis/models/onnx_classifier.h"

#include <cmath>
#include <cstring>
#include <fstream>
#include <mutex>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-enum-enum-conversion"
#include <opencv2/core.hpp>
#include <opencv2/dnn.hpp>
#pragma GCC diagnostic pop
#include <onnx/onnx_pb.h>

#include "aegis/core/error.h"

namespace aegis::models {
namespace {

// The graph's first real input (not an initializer), without its batch dimension.
std::vector<std::int64_t> declared_input_shape(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  onnx::ModelProto model;
  if (!in || !model.ParseFromIstream(&in)) return {};
  std::vector<std::string> initializers;
  for (const auto& init : model.graph().initializer()) initializers.push_back(init.name());
  for (const auto& input : model.graph().input()) {
    if (std::find(initializers.begin(), initializers.end(), input.name()) != initializers.end()) continue;
    const auto& shape = input.type().tensor_type().shape();
    std::vector<std::int64_t> dims;
    for (int i = 1; i < shape.dim_size(); ++i) {
      if (!shape.dim(i).has_dim_value() || shape.dim(i).dim_value() <= 0) return {};
      dims.push_back(shape.dim(i).dim_value());
    }
    return dims;
  }
  return {};
}

class OnnxClassifier : public Classifier {
 public:
  OnnxClassifier(const std::string& path, const OnnxOptions& options) : batch_(options.batch ? options.batch : 128) {
    info_.backend = "onnx";
    info_.source = path;
    info_.has_gradients = false;
    info_.input_shape = options.input_shape.empty() ? declared_input_shape(path) : options.input_shape;
    if (info_.input_shape.empty())
      throw core::Error("could not read the input shape of the ONNX model '" + path + "'",
                        "give it with --input-shape, e.g. --input-shape 1,28,28");
    if (options.threads > 0) cv::setNumThreads(options.threads);
    try {
      net_ = cv::dnn::readNetFromONNX(path);
    } catch (const cv::Exception& error) {
      throw core::Error("OpenCV could not import the ONNX model '" + path + "': " + error.err,
                        "OpenCV's DNN importer supports common opsets (<= 13) and standard operators; re-export with "
                        "torch.onnx.export(..., opset_version=11), or attack the TorchScript export instead");
    }
    if (net_.empty()) throw core::Error("the ONNX model '" + path + "' has no layers", "check the file");
    net_.setPreferableBackend(cv::dnn::DNN_BACKEND_OPENCV);
    net_.setPreferableTarget(cv::dnn::DNN_TARGET_CPU);
    std::vector<float> probe(info_.sample_size() * 2, 0.5f);
    cv::Mat out = run(probe, 2);
    info_.num_classes = out.size[1];
    if (options.scores) {
      info_.scores = *options.scores;
    } else {
      bool probabilities = true;
      for (int i = 0; i < 2; ++i) {
        double sum = 0;
        for (int c = 0; c < info_.num_classes; ++c) {
          const float v = out.ptr<float>(i)[c];
          if (v < 0) probabilities = false;
          sum += v;
        }
        if (std::fabs(sum - 1.0) > 1e-4) probabilities = false;
      }
      info_.scores = probabilities ? ScoreKind::Probabilities : ScoreKind::Logits;
    }
  }

  const ClassifierInfo& info() const override { return info_; }
  std::size_t preferred_batch() const override { return batch_; }

 protected:
  void do_predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) override {
    const std::size_t d = sample_size();
    const std::size_t k = static_cast<std::size_t>(info_.num_classes);
    for (std::size_t start = 0; start < n; start += batch_) {
      const std::size_t count = std::min(batch_, n - start);
      cv::Mat out = run(inputs.subspan(start * d, count * d), count);
      if (static_cast<std::size_t>(out.size[1]) != k)
        throw core::Error("the ONNX model changed its number of outputs between batches", "check the model");
      for (std::size_t i = 0; i < count; ++i)
        std::memcpy(scores.data() + (start + i) * k, out.ptr<float>(static_cast<int>(i)), k * sizeof(float));
    }
  }

 private:
  cv::Mat run(std::span<const float> values, std::size_t n) {
    std::vector<int> shape{static_cast<int>(n)};
    for (auto dim : info_.input_shape) shape.push_back(static_cast<int>(dim));
    cv::Mat blob(static_cast<int>(shape.size()), shape.data(), CV_32F, const_cast<float*>(values.data()));
    std::lock_guard lock(mutex_);  // a cv::dnn::Net runs one forward pass at a time
    try {
      net_.setInput(blob);
      cv::Mat out = net_.forward().clone();
      if (out.dims > 2) out = out.reshape(1, static_cast<int>(n));
      if (out.dims != 2 || out.size[0] != static_cast<int>(n) || out.type() != CV_32F)
        throw core::Error("the ONNX model '" + info_.source + "' did not return (batch, classes) float scores",
                          "attack a model whose output is one score per class");
      return out;
    } catch (const cv::Exception& error) {
      throw core::Error("OpenCV failed to run the ONNX model '" + info_.source + "': " + error.err,
                        "check --input-shape (one sample, without the batch dimension) and that the model's batch "
                        "dimension is dynamic");
    }
  }

  ClassifierInfo info_;
  cv::dnn::Net net_;
  std::size_t batch_;
  std::mutex mutex_;
};

}  // namespace

std::unique_ptr<Classifier> load_onnx(const std::string& path, const OnnxOptions& options) {
  return std::make_unique<OnnxClassifier>(path, options);
}

}  // namespace aegis::models
