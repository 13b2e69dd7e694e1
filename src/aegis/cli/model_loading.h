// What `attack`, `harden` and `certify` share: loading a model by what its name says (a URL or an
// endpoint config, .onnx, else TorchScript), after scanning the file as `aegis scan` would, and
// loading the data set with the user's scaling.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "aegis/models/classifier.h"
#include "aegis/models/dataset.h"
#include "aegis/models/torchscript_classifier.h"

namespace aegis::cli {

struct ModelFlags {
  std::string model;
  std::string input_shape;   // "1,28,28"
  std::string scores = "auto";
  std::string device = "cpu";
  int threads = 0;
  std::size_t batch = 128;
  std::string mean, std;     // per-channel normalisation the model expects
  bool trust_model = false;  // skip the pre-load scan
};

struct DataFlags {
  std::string data;
  std::string split = "test";
  std::size_t limit = 0, offset = 0;
  std::string labels, label_column;
  float scale = 0;
  std::string data_shape;
  std::string range = "0,1";
};

// `name` is the model option's name, e.g. "--target" for `aegis extract`.
void add_model_flags(CLI::App& command, ModelFlags& flags, const std::string& name = "--model,-m");
void add_data_flags(CLI::App& command, DataFlags& flags);

std::vector<std::int64_t> parse_shape(const std::string& text, const std::string& flag);
std::vector<float> parse_floats(const std::string& text, const std::string& flag);

// A loaded model: the backend, and the view attacks use (with normalisation in front when asked).
struct LoadedModel {
  std::unique_ptr<models::Classifier> backend;
  models::TrainableClassifier* trainable = nullptr;  // set for TorchScript
  std::unique_ptr<models::Classifier> normalized;
  models::Classifier& view() { return normalized ? *normalized : *backend; }
};

// Scans a model file first (refusing one with findings at high or above unless trust_model),
// then loads it. `sample_shape` is the data's, used when --input-shape is not given.
LoadedModel load_model(const ModelFlags& flags, const std::vector<std::int64_t>& sample_shape);

models::Dataset load_data(const DataFlags& flags);

// Row indices from a 1-D .npy of integers (any integer or float dtype holding whole numbers): each
// must be below `limit` and appear once. Throws core::Error naming the file, position and value.
std::vector<std::size_t> load_indices(const std::string& path, std::size_t limit, const std::string& flag);

// The records of `data` at `rows`, in that order (shape, classes and names kept).
models::Dataset select_records(const models::Dataset& data, const std::vector<std::size_t>& rows);

// A TorchScript architecture trained from scratch again and again (LiRA's reference models,
// extraction surrogates): scanned once like any model, then loaded and re-initialised per call.
class ArchitectureFactory {
 public:
  ArchitectureFactory(std::string path, const ModelFlags& flags, std::vector<std::int64_t> input_shape,
                      models::TrainingOptions training);
  std::unique_ptr<models::TrainableClassifier> make(std::uint64_t seed) const;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  models::TorchScriptOptions options_;
  models::TrainingOptions training_;
};

}  // namespace aegis::cli
