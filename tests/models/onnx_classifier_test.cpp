// The ONNX backend (OpenCV DNN) on the shipped Fashion-MNIST CNN: the input shape read from the
// graph, the same scores as the TorchScript export of the same weights on real test images, no
// gradients (with a hint to the black-box attacks), and clear errors for files it cannot import.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/models/dataset.h"
#include "aegis/models/onnx_classifier.h"
#include "aegis/models/torchscript_classifier.h"
#include "test_support.h"

namespace aegis::models {
namespace {

namespace fs = std::filesystem;

const fs::path kFashion = kFashionMnistDir;
constexpr std::size_t kClasses = 10;

fs::path example(const std::string& name) { return aegis::test::source_dir() / "examples" / "fashion-mnist" / name; }

std::vector<float> scores_of(Classifier& model, std::span<const float> x) {
  std::vector<float> scores(x.size() / model.sample_size() * static_cast<std::size_t>(model.num_classes()));
  model.predict(x, scores);
  return scores;
}

// what() and hint() of the core::Error that loading throws, or "" when it loads.
std::string load_error(const fs::path& path, const OnnxOptions& options = {}) {
  try {
    load_onnx(path.string(), options);
  } catch (const core::Error& e) {
    return std::string(e.what()) + " | " + e.hint();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

void write_bytes(const fs::path& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

TEST(OnnxClassifier, ReadsTheInputShapeFromTheGraph) {
  auto model = load_onnx(example("model.onnx").string(), {});
  const ClassifierInfo& info = model->info();
  EXPECT_EQ(info.input_shape, (std::vector<std::int64_t>{1, 28, 28}));
  EXPECT_EQ(info.num_classes, 10);
  EXPECT_EQ(info.scores, ScoreKind::Logits);
  EXPECT_EQ(info.backend, "onnx");
  EXPECT_FALSE(info.has_gradients);
  EXPECT_EQ(model->queries(), 0u) << "the probe pass at load time is not a query";
}

TEST(OnnxClassifier, ScoresMatchTheTorchScriptExportOfTheSameWeights) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  DataOptions data_options;
  data_options.limit = 32;
  const Dataset data = load_dataset(kFashion.string(), data_options);
  ASSERT_EQ(data.size(), 32u);

  OnnxOptions onnx_options;
  onnx_options.batch = 7;  // several batches, the last one short
  auto onnx = load_onnx(example("model.onnx").string(), onnx_options);
  TorchScriptOptions torch_options;
  torch_options.input_shape = data.sample_shape;
  auto torch = load_torchscript(example("model.pt").string(), torch_options);

  const auto from_onnx = scores_of(*onnx, data.x);
  const auto from_torch = scores_of(*torch, data.x);
  ASSERT_EQ(from_onnx.size(), 32 * kClasses);
  for (std::size_t j = 0; j < from_onnx.size(); ++j)
    EXPECT_NEAR(from_onnx[j], from_torch[j], 1e-3) << "sample " << j / kClasses << " class " << j % kClasses;
  EXPECT_EQ(onnx->queries(), 32u);
  int correct = 0;
  for (std::size_t i = 0; i < data.size(); ++i)
    correct += argmax(std::span<const float>(from_onnx).subspan(i * kClasses, kClasses)) == data.y[i];
  EXPECT_GE(correct, 24) << "the demo model is about 88% accurate";
}

TEST(OnnxClassifier, GradientsAreRefusedWithAHintToTheBlackBoxAttacks) {
  auto model = load_onnx(example("model.onnx").string(), {});
  EXPECT_FALSE(model->has_gradients());
  std::vector<float> x(2 * 784, 0.5f), grad(2 * 784), scores(2 * kClasses);
  const ScoreGradientFn fn = [](std::span<const float>, std::span<float> g) { std::fill(g.begin(), g.end(), 1.0f); };
  try {
    model->gradient(x, fn, grad, scores);
    ADD_FAILURE() << "an ONNX model gave gradients";
  } catch (const core::Error& e) {
    EXPECT_TRUE(contains(e.what(), "black-box")) << e.what();
    EXPECT_TRUE(contains(e.hint(), "square")) << e.hint();
    EXPECT_TRUE(contains(e.hint(), "hopskipjump")) << e.hint();
  }
}

TEST(OnnxClassifier, CorruptOrTruncatedFilesAreClearErrors) {
  aegis::test::TempDir dir("aegis_onnx");
  std::uint32_t state = 7;
  const fs::path garbage = dir.path / "garbage.onnx";
  write_bytes(garbage, aegis::test::pseudo_random_bytes(4096, state));
  const auto whole = aegis::test::read_file(example("model.onnx"));
  ASSERT_GT(whole.size(), 1000u);
  const fs::path truncated = dir.path / "truncated.onnx";
  write_bytes(truncated, std::vector<std::uint8_t>(whole.begin(), whole.begin() + static_cast<std::ptrdiff_t>(whole.size() / 2)));
  const fs::path empty = dir.path / "empty.onnx";
  write_bytes(empty, {});

  OnnxOptions shaped;
  shaped.input_shape = {1, 28, 28};  // past the graph's shape, on to OpenCV's importer
  for (const fs::path& path : {garbage, truncated, empty}) {
    for (const OnnxOptions& options : {OnnxOptions{}, shaped}) {
      const std::string error = load_error(path, options);
      EXPECT_FALSE(error.empty()) << path << " loaded";
      EXPECT_TRUE(contains(error, path.string())) << "names the file: " << error;
    }
  }
  EXPECT_FALSE(load_error(dir.path / "absent.onnx").empty());
}

TEST(OnnxClassifier, AWrongInputShapeIsAClearError) {
  OnnxOptions wrong;
  wrong.input_shape = {3, 32, 32};
  const std::string error = load_error(example("model.onnx"), wrong);
  EXPECT_TRUE(contains(error, "--input-shape")) << error;
}

}  // namespace
}  // namespace aegis::models
