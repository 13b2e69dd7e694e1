// The TorchScript backend on the shipped Fashion-MNIST CNN and real test images: scores and input
// gradients against Debian's python3-torch on the same model and data, batching, query counts,
// score-kind detection, clear errors for what it cannot load, and training and saving.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/formats/npy.h"
#include "aegis/models/dataset.h"
#include "aegis/models/torchscript_classifier.h"
#include "test_support.h"

namespace aegis::models {
namespace {

namespace fs = std::filesystem;

const fs::path kFashion = kFashionMnistDir;
constexpr std::size_t kSamples = 64;    // images loaded per test
constexpr std::size_t kReference = 8;   // images torch scores in the subprocess
constexpr std::size_t kFeatures = 784;  // 1 x 28 x 28
constexpr std::size_t kClasses = 10;

fs::path example(const std::string& name) { return aegis::test::source_dir() / "examples" / "fashion-mnist" / name; }

// What torch computes for the first kReference test images: the scores, the input gradient of the
// summed cross-entropy, a state_dict saved with torch.save (not TorchScript), and the same model
// with a softmax at its end (scores that are probabilities).
const char* const kTorchReference = R"(
import gzip, sys
import numpy as np
import torch
import torch.nn.functional as F

out, model_path, data, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
with gzip.open(data + '/t10k-images-idx3-ubyte.gz') as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16)[:count * 784].reshape(count, 1, 28, 28)
with gzip.open(data + '/t10k-labels-idx1-ubyte.gz') as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)[:count]
torch.set_num_threads(1)
model = torch.jit.load(model_path).eval()
x = torch.from_numpy(images.astype(np.float32) / 255.0)
x.requires_grad_()
scores = model(x)
F.cross_entropy(scores, torch.from_numpy(labels.astype(np.int64)), reduction='sum').backward()
np.save(out + '/scores.npy', scores.detach().numpy())
np.save(out + '/grad.npy', x.grad.numpy())
torch.save(model.state_dict(), out + '/state_dict.pt')

class Softmax(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return torch.softmax(self.inner(x), dim=1)

torch.jit.script(Softmax(model)).save(out + '/softmax.pt')
)";

// The real test images and the model's shape, loaded once per test.
struct FashionBatch {
  Dataset data;
  FashionBatch() {
    DataOptions options;
    options.limit = kSamples;
    data = load_dataset(kFashion.string(), options);
  }
  std::span<const float> first(std::size_t n) const { return std::span<const float>(data.x).first(n * kFeatures); }
  std::span<const int> labels(std::size_t n) const { return std::span<const int>(data.y).first(n); }
};

TorchScriptOptions options_for(std::size_t batch = 128) {
  TorchScriptOptions options;
  options.input_shape = {1, 28, 28};
  options.batch = batch;
  return options;
}

std::vector<float> scores_of(Classifier& model, std::span<const float> x) {
  std::vector<float> scores(x.size() / model.sample_size() * static_cast<std::size_t>(model.num_classes()));
  model.predict(x, scores);
  return scores;
}

// d(sum of cross-entropy)/d(logits) = softmax - one-hot, row by row.
ScoreGradientFn cross_entropy_of(std::span<const int> labels) {
  return [labels](std::span<const float> scores, std::span<float> grad) {
    for (std::size_t i = 0; i < labels.size(); ++i) {
      const auto row = scores.subspan(i * kClasses, kClasses);
      const float top = *std::max_element(row.begin(), row.end());
      double sum = 0;
      for (float v : row) sum += std::exp(static_cast<double>(v) - top);
      for (std::size_t c = 0; c < kClasses; ++c)
        grad[i * kClasses + c] = static_cast<float>(std::exp(static_cast<double>(row[c]) - top) / sum) -
                                 (static_cast<int>(c) == labels[i] ? 1.0f : 0.0f);
    }
  };
}

// The mean cross-entropy of a batch, from its logits.
double mean_cross_entropy(std::span<const float> scores, std::span<const int> labels) {
  double total = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const auto row = scores.subspan(i * kClasses, kClasses);
    const float top = *std::max_element(row.begin(), row.end());
    double sum = 0;
    for (float v : row) sum += std::exp(static_cast<double>(v) - top);
    total += std::log(sum) - (static_cast<double>(row[static_cast<std::size_t>(labels[i])]) - top);
  }
  return total / static_cast<double>(labels.size());
}

// what() and hint() of the core::Error that loading throws, or "" when it loads.
std::string load_error(const fs::path& path, const TorchScriptOptions& options) {
  try {
    load_torchscript(path.string(), options);
  } catch (const core::Error& e) {
    return std::string(e.what()) + " | " + e.hint();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

class TorchScriptClassifier : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(kFashion / "t10k-images-idx3-ubyte.gz")) {
      skip_reason_ = "install the Debian package dataset-fashion-mnist (" + kFashion.string() + ")";
      return;
    }
    dir_ = std::make_unique<aegis::test::TempDir>("aegis_torchscript");
    const fs::path script = dir_->path / "reference.py";
    std::ofstream(script) << kTorchReference;
    const std::string command = "/usr/bin/python3 '" + script.string() + "' '" + dir_->path.string() + "' '" +
                                example("model.pt").string() + "' '" + kFashion.string() + "' " +
                                std::to_string(kReference);
    python_status_ = std::system(command.c_str());
  }
  static void TearDownTestSuite() { dir_.reset(); }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
  }

  // Fails the test unless the torch subprocess made its files.
  static void need_reference() {
    ASSERT_EQ(python_status_, 0) << "/usr/bin/python3 with torch and numpy (python3-torch) must be installed";
  }

  static inline std::unique_ptr<aegis::test::TempDir> dir_;
  static inline std::string skip_reason_;
  static inline int python_status_ = -1;
};

TEST_F(TorchScriptClassifier, ScoresEqualPyTorchOnRealImages) {
  need_reference();
  FashionBatch batch;
  auto model = load_torchscript(example("model.pt").string(), options_for());
  const ClassifierInfo& info = model->info();
  EXPECT_EQ(info.input_shape, (std::vector<std::int64_t>{1, 28, 28}));
  EXPECT_EQ(info.num_classes, 10);
  EXPECT_EQ(info.backend, "torchscript");
  EXPECT_EQ(info.source, example("model.pt").string());
  EXPECT_TRUE(info.has_gradients);

  const auto reference = formats::read_npy_file((dir_->path / "scores.npy").string(), 1 << 20);
  ASSERT_EQ(reference.shape, (std::vector<std::uint64_t>{kReference, kClasses}));
  const auto scores = scores_of(*model, batch.first(kReference));
  ASSERT_EQ(scores.size(), reference.values.size());
  for (std::size_t j = 0; j < scores.size(); ++j)
    EXPECT_NEAR(scores[j], reference.values[j], 1e-4) << "sample " << j / kClasses << " class " << j % kClasses;
}

TEST_F(TorchScriptClassifier, CrossEntropyInputGradientEqualsPyTorch) {
  need_reference();
  FashionBatch batch;
  auto model = load_torchscript(example("model.pt").string(), options_for());
  const auto reference = formats::read_npy_file((dir_->path / "grad.npy").string(), 1 << 20);
  ASSERT_EQ(reference.shape, (std::vector<std::uint64_t>{kReference, 1, 28, 28}));
  std::vector<float> grad(kReference * kFeatures), scores(kReference * kClasses);
  model->gradient(batch.first(kReference), cross_entropy_of(batch.labels(kReference)), grad, scores);
  double largest = 0;
  for (std::size_t j = 0; j < grad.size(); ++j) {
    EXPECT_NEAR(grad[j], reference.values[j], 1e-4) << "sample " << j / kFeatures << " feature " << j % kFeatures;
    largest = std::max(largest, std::fabs(static_cast<double>(grad[j])));
  }
  EXPECT_GT(largest, 1e-3) << "a gradient of zeros would match nothing worth checking";
  // The scores of the gradient's own forward pass are the plain scores.
  const auto plain = scores_of(*model, batch.first(kReference));
  for (std::size_t j = 0; j < scores.size(); ++j) EXPECT_NEAR(scores[j], plain[j], 1e-5);
}

TEST_F(TorchScriptClassifier, BatchesOfFiveGiveTheScoresOfOneBatchAndQueriesAreCounted) {
  FashionBatch batch;
  auto small = load_torchscript(example("model.pt").string(), options_for(5));
  auto whole = load_torchscript(example("model.pt").string(), options_for(64));
  EXPECT_EQ(small->preferred_batch(), 5u);
  EXPECT_EQ(small->queries(), 0u) << "the probe pass at load time is not a query";
  const auto in_fives = scores_of(*small, batch.first(kSamples));
  const auto at_once = scores_of(*whole, batch.first(kSamples));
  ASSERT_EQ(in_fives.size(), kSamples * kClasses);
  for (std::size_t j = 0; j < in_fives.size(); ++j) EXPECT_NEAR(in_fives[j], at_once[j], 1e-5) << j;
  EXPECT_EQ(small->queries(), kSamples);
  EXPECT_EQ(small->gradient_queries(), 0u);

  std::vector<float> grad(5 * kFeatures), scores(5 * kClasses);
  small->gradient(batch.first(5), cross_entropy_of(batch.labels(5)), grad, scores);
  EXPECT_EQ(small->queries(), kSamples + 5);
  EXPECT_EQ(small->gradient_queries(), 5u);
  small->reset_queries();
  EXPECT_EQ(small->queries(), 0u);
  EXPECT_EQ(small->gradient_queries(), 0u);
}

// classifier.h gives the callback "the scores of a batch (n * num_classes)", and callers index
// their per-sample state (labels, clean probabilities) by row. do_gradient calls it once per
// internal batch with that batch's rows only, so a call larger than preferred_batch() pairs rows
// with the wrong labels, and a callback that fills all n rows writes past the backend's buffer
// (`aegis harden --method trades --train-batch 64 --batch 16` aborts on a corrupted heap).
// Disabled until do_gradient hands the callback all n rows at once.
TEST_F(TorchScriptClassifier, AGradientCallLargerThanOneBatchGivesTheCallbackEveryRow) {
  FashionBatch batch;
  constexpr std::size_t n = 12;
  auto small = load_torchscript(example("model.pt").string(), options_for(5));
  auto whole = load_torchscript(example("model.pt").string(), options_for(64));
  const ScoreGradientFn cross_entropy = cross_entropy_of(batch.labels(n));
  std::vector<std::size_t> rows_seen;
  const ScoreGradientFn guarded = [&](std::span<const float> s, std::span<float> g) {
    rows_seen.push_back(s.size() / kClasses);
    if (s.size() == n * kClasses && g.size() == s.size()) cross_entropy(s, g);  // never past g
  };
  std::vector<float> grad(n * kFeatures), expected(n * kFeatures), scores(n * kClasses);
  small->gradient(batch.first(n), guarded, grad, scores);
  whole->gradient(batch.first(n), cross_entropy, expected, scores);
  EXPECT_EQ(rows_seen, std::vector<std::size_t>{n});
  for (std::size_t j = 0; j < grad.size(); ++j) ASSERT_NEAR(grad[j], expected[j], 1e-5) << j;
}

TEST_F(TorchScriptClassifier, ProbeTellsLogitsFromProbabilitiesAndScoresOverridesIt) {
  need_reference();
  EXPECT_EQ(load_torchscript(example("model.pt").string(), options_for())->info().scores, ScoreKind::Logits);
  EXPECT_EQ(load_torchscript((dir_->path / "softmax.pt").string(), options_for())->info().scores,
            ScoreKind::Probabilities);
  TorchScriptOptions told = options_for();
  told.scores = ScoreKind::Probabilities;
  EXPECT_EQ(load_torchscript(example("model.pt").string(), told)->info().scores, ScoreKind::Probabilities);
  told.scores = ScoreKind::Logits;
  EXPECT_EQ(load_torchscript((dir_->path / "softmax.pt").string(), told)->info().scores, ScoreKind::Logits);
}

TEST_F(TorchScriptClassifier, AWrongOrMissingInputShapeIsAClearError) {
  TorchScriptOptions wrong = options_for();
  wrong.input_shape = {3, 32, 32};
  const std::string error = load_error(example("model.pt"), wrong);
  EXPECT_TRUE(contains(error, "--input-shape")) << error;
  EXPECT_TRUE(contains(error, "(2, 3, 32, 32)")) << "names the shape it tried: " << error;

  TorchScriptOptions none = options_for();
  none.input_shape.clear();
  const std::string missing = load_error(example("model.pt"), none);
  EXPECT_TRUE(contains(missing, "--input-shape")) << missing;
}

TEST_F(TorchScriptClassifier, FilesThatAreNotTorchScriptAreRefusedWithAHint) {
  need_reference();
  aegis::test::TempDir dir("aegis_not_torchscript");
  const fs::path text = dir.path / "notes.pt";
  std::ofstream(text) << "this is a text file, not a model\n";
  const fs::path state_dict = dir_->path / "state_dict.pt";
  for (const fs::path& path : {text, state_dict}) {
    const std::string error = load_error(path, options_for());
    EXPECT_TRUE(contains(error, "could not load")) << path << ": " << error;
    EXPECT_TRUE(contains(error, path.string())) << "names the file: " << error;
    EXPECT_TRUE(contains(error, "torch.jit")) << "says how to export TorchScript: " << error;
  }
  EXPECT_TRUE(contains(load_error(dir.path / "absent.pt", options_for()), "could not load"));
}

TEST_F(TorchScriptClassifier, AnUnknownOrMissingDeviceIsAClearError) {
  TorchScriptOptions unknown = options_for();
  unknown.device = "abacus";
  EXPECT_TRUE(contains(load_error(example("model.pt"), unknown), "unknown device"));
  if (cuda_device_count() > 0) GTEST_SKIP() << "this machine has a CUDA device";
  TorchScriptOptions cuda = options_for();
  cuda.device = "cuda";
  const std::string error = load_error(example("model.pt"), cuda);
  EXPECT_TRUE(contains(error, "CUDA")) << error;
  EXPECT_TRUE(contains(error, "--device cpu")) << error;
}

TEST_F(TorchScriptClassifier, TrainingLowersTheLossAndTheSavedModelGivesTheSameScores) {
  FashionBatch batch;
  constexpr std::size_t n = 32;
  TrainingOptions training;
  training.learning_rate = 1e-3;
  auto model = load_torchscript(example("model_init.pt").string(), options_for(), training);
  const auto x = batch.first(n);
  const auto labels = batch.labels(n);
  const double before = mean_cross_entropy(scores_of(*model, x), labels);
  std::vector<double> losses;
  for (int step = 0; step < 20; ++step)
    losses.push_back(model->train_step(x, x, labels, TrainingObjective::CrossEntropy, 0.0));
  EXPECT_NEAR(losses.front(), before, 1e-4) << "the first step reports the loss of the untrained weights";
  EXPECT_LT(losses.back(), losses.front() * 0.8) << "20 Adam steps on one fixed batch fit it";
  const auto trained = scores_of(*model, x);
  EXPECT_LT(mean_cross_entropy(trained, labels), losses.back() + 1e-6);

  aegis::test::TempDir dir("aegis_trained");
  const fs::path saved = dir.path / "trained.pt";
  model->save(saved.string());
  ASSERT_TRUE(fs::exists(saved));
  auto reloaded = load_torchscript(saved.string(), options_for());
  const auto again = scores_of(*reloaded, x);
  for (std::size_t j = 0; j < again.size(); ++j) EXPECT_NEAR(again[j], trained[j], 1e-5) << j;

  EXPECT_THROW(model->save((dir.path / "no" / "such" / "folder" / "m.pt").string()), core::Error);
}

TEST_F(TorchScriptClassifier, ForwardBackwardTimingIsPositive) {
  FashionBatch batch;
  auto model = load_torchscript(example("model.pt").string(), options_for(16));
  EXPECT_GT(model->time_forward_backward(batch.first(kSamples), batch.labels(kSamples), 1), 0.0);
  EXPECT_EQ(model->queries(), 0u) << "timing is the model's own cost, not attack queries";
}

}  // namespace
}  // namespace aegis::models
