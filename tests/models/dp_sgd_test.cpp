// DP-SGD on TorchScript models made by the real PyTorch (tests/fixtures/dp_models.py): per-layer
// per-sample gradients against one backward pass per sample (ours and PyTorch's), a noiseless
// unclipped step against torch.optim.SGD, clipping, the noise's calibration, Poisson sampling,
// determinism, the layers that must be refused, and training on real Fashion-MNIST.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <numeric>

#include "aegis/core/error.h"
#include "aegis/formats/npy.h"
#include "aegis/models/dataset.h"
#include "aegis/models/dp_sgd.h"
#include "aegis/models/training.h"
#include "test_support.h"

namespace {

using namespace aegis;
namespace fs = std::filesystem;

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const core::Error& e) {
    return std::string(e.what()) + " | " + e.hint();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

double max_abs(std::span<const float> v) {
  double m = 0;
  for (float x : v) m = std::max(m, static_cast<double>(std::abs(x)));
  return m;
}

double max_abs_diff(std::span<const float> a, std::span<const float> b) {
  double m = 0;
  for (std::size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(static_cast<double>(a[i]) - b[i]));
  return m;
}

double norm(std::span<const float> v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

std::vector<float> difference(const std::vector<float>& after, const std::vector<float>& before) {
  std::vector<float> d(after.size());
  for (std::size_t i = 0; i < d.size(); ++i) d[i] = after[i] - before[i];
  return d;
}

models::TorchScriptOptions model_options(std::vector<std::int64_t> shape) {
  models::TorchScriptOptions o;
  o.input_shape = std::move(shape);
  o.threads = 1;  // steady on a shared machine (OpenMP threads spin when others take the cores)
  return o;
}

// A test model with its batch of 8 samples.
struct Case {
  std::string name;
  std::vector<std::int64_t> shape;
  std::string batch;  // prefix of the _x.npy / _y.npy files
};

const std::vector<Case>& cases() {
  static const std::vector<Case> all = {{"mlp", {1, 28, 28}, "batch"},
                                        {"cnn", {1, 28, 28}, "batch"},
                                        {"embed", {6}, "tokens"},
                                        {"tokens", {6}, "tokens"},
                                        {"convmix", {2, 10, 10}, "mix"},
                                        {"inplace", {1, 28, 28}, "batch"}};
  return all;
}

class DpSgd : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (auto why = test::fashion_mnist_missing(); !why.empty()) {
      skip_reason_ = why;
      return;
    }
    dir_ = std::make_unique<test::TempDir>("aegis_dp_sgd");
    const std::string command = "/usr/bin/python3 '" + (test::source_dir() / "tests/fixtures/dp_models.py").string() +
                                "' '" + dir_->path.string() + "' '" + models::kFashionMnistDir + "'";
    python_status_ = std::system(command.c_str());
  }
  static void TearDownTestSuite() { dir_.reset(); }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    ASSERT_EQ(python_status_, 0) << "tests/fixtures/dp_models.py needs /usr/bin/python3 with torch and numpy";
  }

  static std::string file(const std::string& name) { return (dir_->path / name).string(); }
  static std::vector<float> floats(const std::string& name) { return formats::read_npy_file(file(name), 1 << 24).values; }
  static std::vector<int> ints(const std::string& name) {
    const auto values = floats(name);
    return {values.begin(), values.end()};
  }

  static std::unique_ptr<models::DpSgdTrainer> trainer(const Case& c, const models::DpSgdOptions& options = {},
                                                       std::size_t physical_batch = 128) {
    auto o = model_options(c.shape);
    o.batch = physical_batch;
    return std::make_unique<models::DpSgdTrainer>(file(c.name + ".pt"), o, options);
  }

  static const models::Dataset& train_split() {
    static const models::Dataset data = [] {
      models::DataOptions o;
      o.split = "train";
      o.limit = 2000;
      return models::load_dataset(models::kFashionMnistDir, o);
    }();
    return data;
  }

  static inline std::unique_ptr<test::TempDir> dir_;
  static inline std::string skip_reason_;
  static inline int python_status_ = -1;
};

// ------------------------------------------------------------------------------------------------
// Per-sample gradients

TEST_F(DpSgd, FastPerSampleGradientsEqualOneSampleAtATime) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    auto t = trainer(c);
    const auto x = floats(c.batch + "_x.npy");
    const auto y = ints(c.batch + "_y.npy");
    ASSERT_EQ(y.size(), 8u);
    const auto fast = t->per_sample_gradients(x, y, /*slow=*/false);
    const auto slow = t->per_sample_gradients(x, y, /*slow=*/true);
    const auto torch_reference = floats(c.name + "_per_sample.npy");
    ASSERT_EQ(fast.size(), 8 * t->parameter_count());
    ASSERT_EQ(slow.size(), fast.size());
    ASSERT_EQ(torch_reference.size(), fast.size());
    const double scale = std::max(1.0, max_abs(slow));
    EXPECT_GT(max_abs(slow), 1e-3);
    EXPECT_LT(max_abs_diff(fast, slow), 1e-4 * scale);
    EXPECT_LT(max_abs_diff(slow, torch_reference), 1e-4 * scale);
    // The rows are each sample's own: the first two samples' gradients differ.
    const auto p = t->parameter_count();
    EXPECT_GT(max_abs_diff(std::span(fast).first(p), std::span(fast).subspan(p, p)), 1e-4);
  }
}

TEST_F(DpSgd, EmbeddingPaddingRowGetsNoGradient) {
  const Case& c = cases()[3];  // tokens: Embedding(50, 8, padding_idx=0) first
  auto t = trainer(c);
  const auto x = floats("tokens_x.npy");
  ASSERT_NE(std::find(x.begin(), x.end(), 0.0f), x.end()) << "the batch should hold padding tokens";
  const auto fast = t->per_sample_gradients(x, ints("tokens_y.npy"), false);
  const auto p = t->parameter_count();
  for (std::size_t i = 0; i < 8; ++i)
    for (std::size_t d = 0; d < 8; ++d) EXPECT_EQ(fast[i * p + d], 0.0f);  // row 0 of the embedding weight
}

// ------------------------------------------------------------------------------------------------
// Steps

TEST_F(DpSgd, NoiselessUnclippedFullBatchStepIsPlainSgd) {
  for (const auto* name : {"mlp", "cnn"}) {
    SCOPED_TRACE(name);
    const Case c{name, {1, 28, 28}, "batch"};
    models::DpSgdOptions o;
    o.noise_multiplier = 0;
    o.max_grad_norm = 1e6;
    o.sample_rate = 1;
    o.learning_rate = 0.1;
    auto t = trainer(c, o);
    const auto before = t->parameters();
    const auto stats = t->step(floats("batch_x.npy"), ints("batch_y.npy"));
    EXPECT_EQ(stats.batch_size, 8u);
    EXPECT_EQ(stats.clipped_fraction, 0.0);
    EXPECT_GT(stats.mean_loss, 0.5);
    const auto after = t->parameters();
    const auto expected = floats(std::string(name) + "_sgd.npy");
    ASSERT_EQ(expected.size(), after.size());
    EXPECT_GT(max_abs_diff(after, before), 1e-4);  // it moved
    EXPECT_LT(max_abs_diff(after, expected), 2e-6 * std::max(1.0, max_abs(expected)));
  }
}

// With clipping on, the step is -lr/N * sum_i min(1, C/(||g_i|| + 1e-6)) g_i: checked against the
// one-sample-at-a-time gradients for every model (so the norm shortcuts are checked too), with the
// 8 sampled records run in physical batches of 3.
TEST_F(DpSgd, ClippedStepWeighsEachSampleByItsClipFactor) {
  for (const auto& c : cases()) {
    SCOPED_TRACE(c.name);
    const auto x = floats(c.batch + "_x.npy");
    const auto y = ints(c.batch + "_y.npy");
    const auto slow = trainer(c)->per_sample_gradients(x, y, true);
    const std::size_t p = slow.size() / 8;
    std::vector<double> norms;
    for (std::size_t i = 0; i < 8; ++i) norms.push_back(norm(std::span(slow).subspan(i * p, p)));
    auto sorted = norms;
    std::sort(sorted.begin(), sorted.end());
    models::DpSgdOptions o;
    o.noise_multiplier = 0;
    o.max_grad_norm = (sorted[3] + sorted[4]) / 2;  // half the samples clipped
    o.sample_rate = 1;
    o.learning_rate = 1.0;
    auto t = trainer(c, o, /*physical_batch=*/3);
    const auto before = t->parameters();
    const auto stats = t->step(x, y);
    const auto change = difference(t->parameters(), before);
    std::vector<float> expected(p, 0.0f);
    for (std::size_t i = 0; i < 8; ++i) {
      const double factor = std::min(1.0, o.max_grad_norm / (norms[i] + 1e-6));
      for (std::size_t j = 0; j < p; ++j) expected[j] -= static_cast<float>(factor * slow[i * p + j] / 8.0);
    }
    EXPECT_DOUBLE_EQ(stats.clipped_fraction, 0.5);
    EXPECT_NEAR(stats.mean_grad_norm, std::accumulate(norms.begin(), norms.end(), 0.0) / 8, 1e-4 * sorted[7]);
    EXPECT_LT(max_abs_diff(change, expected), 1e-4 * std::max(1e-3, max_abs(expected)));
  }
}

TEST_F(DpSgd, ClippingBoundsOneSamplesContributionToC) {
  for (const auto* name : {"mlp", "cnn"}) {
    SCOPED_TRACE(name);
    const Case c{name, {1, 28, 28}, "batch"};
    models::DpSgdOptions o;
    o.noise_multiplier = 0;
    o.max_grad_norm = 1e-3;  // far below the sample's gradient norm
    o.sample_rate = 1;
    o.learning_rate = 0.5;
    auto t = trainer(c, o);
    const auto x = floats("batch_x.npy");
    const auto y = ints("batch_y.npy");
    const auto before = t->parameters();
    const auto stats = t->step(std::span(x).first(784), std::span(y).first(1));
    EXPECT_EQ(stats.batch_size, 1u);
    EXPECT_EQ(stats.clipped_fraction, 1.0);
    EXPECT_GT(stats.mean_grad_norm, 100 * o.max_grad_norm);
    const double moved = norm(difference(t->parameters(), before));
    const double expected = o.learning_rate * o.max_grad_norm / (o.sample_rate * 1.0);
    EXPECT_NEAR(moved, expected, 1e-3 * expected);
  }
}

TEST_F(DpSgd, NoiseHasStandardDeviationSigmaCOverExpectedBatch) {
  const Case& c = cases()[0];
  models::DpSgdOptions o;
  o.noise_multiplier = 2.0;
  o.max_grad_norm = 0.5;
  o.sample_rate = 1e-4;  // with 10 records every step is (almost surely) empty: the update is noise only
  o.learning_rate = 1e-3;
  o.seed = 3;
  auto t = trainer(c, o);
  const auto x = floats("batch_x.npy");
  const auto y = ints("batch_y.npy");
  std::vector<float> x10(x.begin(), x.end());
  x10.insert(x10.end(), x.begin(), x.begin() + 2 * 784);
  std::vector<int> y10(y.begin(), y.end());
  y10.push_back(y[0]);
  y10.push_back(y[1]);
  const auto before = t->parameters();
  const auto stats = t->step(x10, y10);
  ASSERT_EQ(stats.batch_size, 0u);
  const auto change = difference(t->parameters(), before);
  double mean = 0, square = 0;
  for (float d : change) mean += d;
  mean /= static_cast<double>(change.size());
  for (float d : change) square += (d - mean) * (d - mean);
  const double std_dev = std::sqrt(square / static_cast<double>(change.size() - 1));
  const double expected = o.learning_rate * o.noise_multiplier * o.max_grad_norm / (o.sample_rate * 10);
  EXPECT_NEAR(std_dev, expected, 0.02 * expected);                                         // 50890 coordinates
  EXPECT_NEAR(mean, 0.0, 4 * expected / std::sqrt(static_cast<double>(change.size())));  // centred
}

TEST_F(DpSgd, PoissonBatchesAverageQTimesN) {
  const Case& c = cases()[2];  // embed: cheap steps
  models::DpSgdOptions o;
  o.sample_rate = 0.02;
  o.learning_rate = 1e-3;
  o.seed = 11;
  auto t = trainer(c, o);
  // 2000 records of 6 token ids.
  std::vector<float> x(2000 * 6);
  std::vector<int> y(2000);
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>((i * 37 + 5) % 50);
  for (std::size_t i = 0; i < y.size(); ++i) y[i] = static_cast<int>(i % 4);
  const int steps = 300;
  std::vector<double> sizes;
  t->train(x, y, steps, [&](std::uint64_t, std::uint64_t, const models::DpStepStats& s) {
    sizes.push_back(static_cast<double>(s.batch_size));
  });
  ASSERT_EQ(sizes.size(), static_cast<std::size_t>(steps));
  const double mean = std::accumulate(sizes.begin(), sizes.end(), 0.0) / steps;
  double var = 0;
  for (double s : sizes) var += (s - mean) * (s - mean);
  var /= steps - 1;
  const double expected_mean = 2000 * o.sample_rate, expected_var = expected_mean * (1 - o.sample_rate);
  EXPECT_NEAR(mean, expected_mean, 5 * std::sqrt(expected_var / steps));  // binomial(2000, q) per step
  EXPECT_NEAR(var, expected_var, 0.35 * expected_var);                     // not a fixed batch size
}

TEST_F(DpSgd, DeterministicPerSeedAndSecureNoiseIsNot) {
  const Case& c = cases()[1];
  const auto x = floats("batch_x.npy");
  const auto y = ints("batch_y.npy");
  auto run = [&](std::uint64_t seed, bool secure) {
    models::DpSgdOptions o;
    o.sample_rate = 0.5;
    o.seed = seed;
    o.secure_noise = secure;
    o.optimizer = "adam";
    o.learning_rate = 1e-3;
    auto t = trainer(c, o);
    std::vector<std::size_t> sizes;
    t->train(x, y, 4, [&](std::uint64_t, std::uint64_t, const models::DpStepStats& s) { sizes.push_back(s.batch_size); });
    return std::make_pair(t->parameters(), sizes);
  };
  const auto a = run(7, false), b = run(7, false), other = run(8, false), secure = run(7, true), secure2 = run(7, true);
  EXPECT_EQ(a.first, b.first);
  EXPECT_EQ(a.second, b.second);
  EXPECT_NE(a.first, other.first);
  EXPECT_EQ(secure.second, a.second);  // sampling still follows the seed
  EXPECT_NE(secure.first, a.first);    // the noise does not
  EXPECT_NE(secure.first, secure2.first);
}

// ------------------------------------------------------------------------------------------------
// Refusals

TEST_F(DpSgd, RefusesLayersWithoutPerSampleGradients) {
  const auto batchnorm = error_of([] { models::DpSgdTrainer(file("batchnorm.pt"), model_options({1, 28, 28}), {}); });
  EXPECT_TRUE(contains(batchnorm, "BatchNorm2d")) << batchnorm;
  EXPECT_TRUE(contains(batchnorm, "LayerNorm")) << batchnorm;  // what to use instead
  const auto prelu = error_of([] { models::DpSgdTrainer(file("prelu.pt"), model_options({1, 28, 28}), {}); });
  EXPECT_TRUE(contains(prelu, "PReLU")) << prelu;
  EXPECT_TRUE(contains(prelu, "Linear, Conv2d, LayerNorm and Embedding")) << prelu;
}

TEST_F(DpSgd, RefusesModelsThatAreNotASequence) {
  const auto skip = error_of([] { models::DpSgdTrainer(file("skip.pt"), model_options({1, 28, 28}), {}); });
  EXPECT_TRUE(contains(skip, "forward()")) << skip;
  EXPECT_TRUE(contains(skip, "nn.Sequential")) << skip;
}

TEST_F(DpSgd, RefusesBadOptionsAndInputs) {
  models::DpSgdOptions o;
  o.sample_rate = 0;
  EXPECT_TRUE(contains(error_of([&] { models::DpSgdTrainer(file("mlp.pt"), model_options({1, 28, 28}), o); }), "sample rate"));
  o = {};
  o.optimizer = "lbfgs";
  EXPECT_TRUE(contains(error_of([&] { models::DpSgdTrainer(file("mlp.pt"), model_options({1, 28, 28}), o); }), "lbfgs"));
  auto t = trainer(cases()[2]);
  std::vector<float> x(6, 60.0f);  // beyond the 50-token vocabulary
  std::vector<int> y{0};
  EXPECT_TRUE(contains(error_of([&] { t->per_sample_gradients(x, y, false); }), "token ids"));
  auto m = trainer(cases()[0]);
  std::vector<float> image(784, 0.5f);
  std::vector<int> bad_label{10};
  EXPECT_TRUE(contains(error_of([&] { m->per_sample_gradients(image, bad_label, false); }), "label 10"));
}

// ------------------------------------------------------------------------------------------------
// Training

TEST_F(DpSgd, TrainsFashionMnistWellAboveChance) {
  const auto& data = train_split();
  ASSERT_EQ(data.size(), 2000u);
  models::DataOptions test_options;
  test_options.limit = 1000;
  const auto test = models::load_dataset(models::kFashionMnistDir, test_options);
  models::DpSgdOptions o;
  o.noise_multiplier = 1.0;
  o.max_grad_norm = 1.0;
  o.sample_rate = 0.05;
  o.learning_rate = 0.5;
  o.momentum = 0.5;
  o.seed = 1;
  auto t = trainer(cases()[0], o);
  const double before = models::accuracy(t->classifier(), test.x, test.y);
  const auto start = std::chrono::steady_clock::now();
  double clipped = 0;
  t->train(data.x, data.y, 300, [&](std::uint64_t, std::uint64_t, const models::DpStepStats& s) { clipped += s.clipped_fraction; });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const double after = models::accuracy(t->classifier(), test.x, test.y);
  std::printf("[ DP-SGD   ] MLP on 2000 Fashion-MNIST records, 300 steps (q=0.05, sigma=1, C=1): %.1f s; "
              "test accuracy %.3f -> %.3f; mean clipped fraction %.2f\n",
              seconds, before, after, clipped / 300);
  EXPECT_GT(after, 0.6);
  EXPECT_GT(after, before + 0.3);
  // The saved model is the trained one.
  const std::string saved = file("trained.pt");
  t->save(saved);
  auto loaded = models::load_torchscript(saved, model_options({1, 28, 28}));
  EXPECT_DOUBLE_EQ(models::accuracy(*loaded, test.x, test.y), after);
}

TEST_F(DpSgd, ClassifierViewHasInputGradientsForImageModels) {
  auto t = trainer(cases()[0]);
  EXPECT_TRUE(t->classifier().has_gradients());
  EXPECT_EQ(t->classifier().num_classes(), 10);
  const auto x = floats("batch_x.npy");
  std::vector<float> grad(x.size()), scores(80);
  t->classifier().gradient(
      x, [](std::span<const float>, std::span<float> g) { std::fill(g.begin(), g.end(), 1.0f); }, grad, scores);
  EXPECT_GT(max_abs(grad), 0.0);
  EXPECT_FALSE(trainer(cases()[2])->classifier().has_gradients());
  EXPECT_EQ(trainer(cases()[4])->classifier().info().scores, models::ScoreKind::Probabilities);
}

// Not a check: the cost of the per-layer path against one backward pass per sample, at batch 256,
// on one LibTorch thread (steady when other work shares the machine) and on all cores.
TEST_F(DpSgd, TimingFastVsSlowAtBatch256) {
  const auto& data = train_split();
  const std::size_t n = 256;
  const auto x = std::span<const float>(data.x).first(n * 784);
  const auto y = std::span<const int>(data.y).first(n);
  auto seconds = [](const std::function<void()>& fn, int repeats) {
    fn();  // warm up
    double best = 1e9;
    for (int i = 0; i < repeats; ++i) {
      const auto start = std::chrono::steady_clock::now();
      fn();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return best;
  };
  for (int threads : {1, 0}) {
    for (const auto* name : {"mlp", "cnn"}) {
      models::DpSgdOptions o;
      o.sample_rate = 1.0;  // a step over all 256
      auto mo = model_options({1, 28, 28});
      mo.threads = threads;
      models::DpSgdTrainer t(file(std::string(name) + ".pt"), mo, o);
      const double step = seconds([&] { t.step(x, y); }, 10);
      const double fast = seconds([&] { t.per_sample_gradients(x, y, false); }, 5);
      const double slow = seconds([&] { t.per_sample_gradients(x, y, true); }, 3);
      std::printf("[ DP-SGD   ] %s, batch 256, %s: DP step %.1f ms; per-sample gradients materialised: per-layer %.1f ms, "
                  "one backward per sample %.1f ms (best of runs)\n",
                  name, threads == 1 ? "1 thread" : "all cores", step * 1e3, fast * 1e3, slow * 1e3);
    }
  }
}

}  // namespace
