#include "aegis/cli/model_loading.h"

#include <cmath>
#include <filesystem>
#include <sstream>

#include "aegis/core/error.h"
#include "aegis/formats/npy.h"
#include "aegis/models/http_classifier.h"
#include "aegis/models/normalized_classifier.h"
#include "aegis/models/onnx_classifier.h"
#include "aegis/scan/scan.h"

namespace aegis::cli {
namespace {

bool ends_with(const std::string& text, const std::string& suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::optional<models::ScoreKind> score_kind(const std::string& text) {
  if (text == "auto") return std::nullopt;
  if (text == "logits") return models::ScoreKind::Logits;
  if (text == "probabilities") return models::ScoreKind::Probabilities;
  throw core::Error("--scores '" + text + "' is not auto, logits or probabilities", "say what the model returns");
}

// A model is loaded (and TorchScript's constants unpickled by LibTorch) only after the same static
// scan `aegis scan` runs has found nothing at high or above in it.
void scan_before_loading(const std::string& path) {
  scan::ModelScanner scanner(scan::CallablePolicy{}, scan::ScanOptions{});
  auto result = scanner.scan({path});
  std::ostringstream worst;
  std::size_t serious = 0;
  for (const auto& finding : result.findings)
    if (finding.severity >= core::Severity::High) {
      if (serious++ == 0) worst << finding.rule_id << ": " << finding.title;
    }
  if (serious)
    throw core::Error("refusing to load '" + path + "': the pre-load scan found " + std::to_string(serious) +
                          " finding(s) at high or above, first " + worst.str(),
                      "review it with `aegis scan " + path + "`; load it anyway with --trust-model only if you trust its source");
}

}  // namespace

void add_model_flags(CLI::App& command, ModelFlags& flags, const std::string& name) {
  command.add_option(name, flags.model,
                     "TorchScript (.pt), ONNX (.onnx), an endpoint config (.json/.yaml) or an http(s):// URL")
      ->required();
  command.add_option("--input-shape", flags.input_shape, "one sample's shape, e.g. 1,28,28 (default: the data's)");
  command.add_option("--scores", flags.scores, "what the model returns: auto, logits or probabilities");
  command.add_option("--device", flags.device, "cpu, cuda or cuda:N (TorchScript)");
  command.add_option("--threads", flags.threads, "model threads (0 = all cores)");
  command.add_option("--batch", flags.batch, "samples per model call");
  command.add_option("--mean", flags.mean, "per-channel mean the model subtracts, e.g. 0.5 or 0.485,0.456,0.406");
  command.add_option("--std", flags.std, "per-channel standard deviation the model divides by");
  command.add_flag("--trust-model", flags.trust_model, "load the model even if the pre-load scan finds high or critical issues");
}

void add_data_flags(CLI::App& command, DataFlags& flags) {
  command.add_option("--data,-d", flags.data,
                     "Fashion-MNIST/MNIST IDX folder, IDX file, .npy/.npz, image folder or .csv (default: Fashion-MNIST "
                     "from the Debian package)");
  command.add_option("--split", flags.split, "test or train (IDX folders, image folders with splits)");
  command.add_option("--limit", flags.limit, "use the first N samples (0 = all)");
  command.add_option("--offset", flags.offset, "skip the first N samples");
  command.add_option("--labels", flags.labels, "labels for an IDX or .npy input");
  command.add_option("--label-column", flags.label_column, "CSV: the label column (name or index; default the last)");
  command.add_option("--scale", flags.scale, "multiply raw values by this (default 1/255 for 8-bit data, else 1)");
  command.add_option("--data-shape", flags.data_shape, "reshape each sample, e.g. 1,28,28 for flat rows");
  command.add_option("--range", flags.range, "valid value range of the inputs as attacked, LO,HI");
}

namespace {

// Splits "a,b,c" and converts each part with `parse`, which throws on a bad part.
template <typename T, typename Parse>
std::vector<T> parse_list(const std::string& text, const std::string& flag, const char* what, const char* example,
                          Parse parse) {
  std::vector<T> values;
  std::stringstream in(text);
  std::string part;
  while (std::getline(in, part, ',')) {
    try {
      std::size_t used = 0;
      T value = parse(part, used);
      if (used != part.size()) throw std::invalid_argument(part);
      values.push_back(value);
    } catch (const std::exception&) {
      throw core::Error(flag + " '" + text + "' is not a comma-separated list of " + what,
                        std::string("write it like ") + example);
    }
  }
  return values;
}

}  // namespace

std::vector<std::int64_t> parse_shape(const std::string& text, const std::string& flag) {
  return parse_list<std::int64_t>(text, flag, "positive sizes", "1,28,28", [](const std::string& part, std::size_t& used) {
    const long long value = std::stoll(part, &used);
    if (value <= 0 || value > (1 << 24)) throw std::out_of_range(part);
    return static_cast<std::int64_t>(value);
  });
}

std::vector<float> parse_floats(const std::string& text, const std::string& flag) {
  return parse_list<float>(text, flag, "numbers", "0.03,0.1", [](const std::string& part, std::size_t& used) {
    const float value = std::stof(part, &used);
    if (!std::isfinite(value)) throw std::out_of_range(part);
    return value;
  });
}

LoadedModel load_model(const ModelFlags& flags, const std::vector<std::int64_t>& sample_shape) {
  LoadedModel loaded;
  const std::string& path = flags.model;
  auto shape = flags.input_shape.empty() ? sample_shape : parse_shape(flags.input_shape, "--input-shape");
  const bool url = path.rfind("http://", 0) == 0 || path.rfind("https://", 0) == 0;
  if (url || ends_with(path, ".json") || ends_with(path, ".yaml") || ends_with(path, ".yml")) {
    auto config = url ? models::http_config_from_url(path, shape) : models::load_http_config(path);
    if (config.input_shape.empty()) config.input_shape = shape;
    if (auto kind = score_kind(flags.scores)) config.scores = *kind;
    loaded.backend = std::make_unique<models::HttpClassifier>(std::move(config));
  } else {
    if (!std::filesystem::exists(path))
      throw core::Error("no model at '" + path + "'", "give the path of a TorchScript (.pt) or ONNX (.onnx) file");
    if (!flags.trust_model) scan_before_loading(path);
    if (ends_with(path, ".onnx")) {
      models::OnnxOptions options;
      options.input_shape = flags.input_shape.empty() ? std::vector<std::int64_t>{} : shape;
      options.scores = score_kind(flags.scores);
      options.batch = flags.batch;
      options.threads = flags.threads;
      loaded.backend = models::load_onnx(path, options);
    } else {
      models::TorchScriptOptions options;
      options.input_shape = shape;
      options.scores = score_kind(flags.scores);
      options.device = flags.device;
      options.threads = flags.threads;
      options.batch = flags.batch;
      auto model = models::load_torchscript(path, options);
      loaded.trainable = model.get();
      loaded.backend = std::move(model);
    }
  }
  if (!flags.mean.empty() || !flags.std.empty())
    loaded.normalized = std::make_unique<models::NormalizedClassifier>(
        *loaded.backend, flags.mean.empty() ? std::vector<float>{} : parse_floats(flags.mean, "--mean"),
        flags.std.empty() ? std::vector<float>{} : parse_floats(flags.std, "--std"));
  return loaded;
}

models::Dataset load_data(const DataFlags& flags) {
  models::DataOptions options;
  options.split = flags.split;
  options.limit = flags.limit;
  options.offset = flags.offset;
  options.labels_path = flags.labels;
  options.label_column = flags.label_column;
  options.scale = flags.scale;
  if (!flags.data_shape.empty()) options.shape = parse_shape(flags.data_shape, "--data-shape");
  return models::load_dataset(flags.data.empty() ? models::kFashionMnistDir : flags.data, options);
}

std::vector<std::size_t> load_indices(const std::string& path, std::size_t limit, const std::string& flag) {
  formats::NpyArray array;
  try {
    array = formats::read_npy_file(path, 1ull << 26);
  } catch (const std::exception& error) {
    throw core::Error(flag + " " + path + ": " + error.what(), "give a 1-D .npy of record indices, e.g. numpy.save(path, idx)");
  }
  if (array.shape.size() != 1)
    throw core::Error(flag + " " + path + " holds an array of " + std::to_string(array.shape.size()) + " dimensions",
                      "give a 1-D array of record indices");
  std::vector<std::size_t> rows;
  rows.reserve(array.values.size());
  std::vector<bool> seen(limit, false);
  for (std::size_t i = 0; i < array.values.size(); ++i) {
    const float v = array.values[i];
    if (!(v >= 0) || v != std::floor(v) || v >= static_cast<float>(limit))
      throw core::Error(flag + " " + path + ": entry " + std::to_string(i) + " (" + std::to_string(v) +
                            ") is not a record index between 0 and " + std::to_string(limit - 1),
                        "the indices count records of the split they refer to");
    const auto row = static_cast<std::size_t>(v);
    if (seen[row])
      throw core::Error(flag + " " + path + ": record " + std::to_string(row) + " is listed twice (entry " +
                            std::to_string(i) + ")",
                        "list each record once");
    seen[row] = true;
    rows.push_back(row);
  }
  if (rows.empty()) throw core::Error(flag + " " + path + " lists no records", "give at least one record index");
  return rows;
}

models::Dataset select_records(const models::Dataset& data, const std::vector<std::size_t>& rows) {
  models::Dataset out;
  out.sample_shape = data.sample_shape;
  out.class_names = data.class_names;
  out.description = data.description;
  out.is_image = data.is_image;
  const std::size_t sample = data.sample_size();
  out.x.reserve(rows.size() * sample);
  out.y.reserve(rows.size());
  for (auto row : rows) {
    const auto s = data.sample(row);
    out.x.insert(out.x.end(), s.begin(), s.end());
    out.y.push_back(data.y[row]);
  }
  return out;
}

ArchitectureFactory::ArchitectureFactory(std::string path, const ModelFlags& flags, std::vector<std::int64_t> input_shape,
                                         models::TrainingOptions training)
    : path_(std::move(path)), training_(std::move(training)) {
  if (ends_with(path_, ".onnx") || ends_with(path_, ".json") || ends_with(path_, ".yaml") || path_.rfind("http", 0) == 0)
    throw core::Error("'" + path_ + "' cannot be trained by Aegis: only TorchScript architectures can",
                      "give a TorchScript file of the architecture (torch.jit.script(model).save('arch.pt'))");
  if (!std::filesystem::exists(path_)) throw core::Error("no architecture file at '" + path_ + "'", "check the path");
  if (!flags.trust_model) scan_before_loading(path_);
  options_.input_shape = std::move(input_shape);
  options_.scores = score_kind(flags.scores);
  options_.device = flags.device;
  options_.threads = flags.threads;
  options_.batch = flags.batch;
}

std::unique_ptr<models::TrainableClassifier> ArchitectureFactory::make(std::uint64_t seed) const {
  auto model = models::load_torchscript(path_, options_, training_);
  model->reinitialize(seed);
  return model;
}

}  // namespace aegis::cli
