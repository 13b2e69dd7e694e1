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

void add_model_flags(CLI::App& command, ModelFlags& flags);
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

}  // namespace aegis::cli
