// Adversarial training and randomized smoothing on the real example CNN and real Fashion-MNIST:
// what an assessment checks is that the hardened model resists the attack it was hardened against
// better than the standard model does, at a measured cost in clean accuracy.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "aegis/attacks/adversarial_training.h"
#include "aegis/attacks/evasion_runner.h"
#include "aegis/attacks/smoothing.h"
#include "aegis/core/error.h"
#include "aegis/models/dataset.h"
#include "aegis/models/torchscript_classifier.h"
#include "test_support.h"

namespace {

using namespace aegis;

std::string example(const std::string& name) { return (aegis::test::source_dir() / "examples/fashion-mnist" / name).string(); }

double pgd_robust_accuracy(models::Classifier& model, const models::Dataset& test, float eps) {
  attacks::AttackSpec spec;
  spec.name = "pgd";
  spec.eps = {eps};
  spec.pgd.steps = 10;
  attacks::RunnerOptions options;
  options.min_robust_accuracy = 0;
  return attacks::run_evasion_plan(model, test.x, test.y, {spec}, options).results.at(0).robust_accuracy;
}

TEST(Hardening, PgdAdversarialTrainingBeatsTheStandardModelUnderPgd) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  models::DataOptions train_options;
  train_options.split = "train";
  train_options.limit = 2000;
  auto train = models::load_dataset(models::kFashionMnistDir, train_options);
  models::DataOptions test_options;
  test_options.limit = 200;
  auto test = models::load_dataset(models::kFashionMnistDir, test_options);

  models::TorchScriptOptions options;
  options.input_shape = {1, 28, 28};
  auto standard = models::load_torchscript(example("model.pt"), options);
  auto hardened = models::load_torchscript(example("model_init.pt"), options);

  attacks::HardeningOptions harden;
  harden.method = attacks::HardeningMethod::Pgd;
  harden.eps = 0.1f;
  harden.steps = 3;
  harden.epochs = 2;
  harden.batch = 64;
  std::size_t last_progress = 0;
  auto epochs = attacks::harden(*hardened, train.x, train.y, harden,
                                [&](std::size_t done, std::size_t total) {
                                  EXPECT_GE(done, last_progress);
                                  EXPECT_LE(done, total);
                                  last_progress = done;
                                });
  ASSERT_EQ(epochs.size(), 2u);
  EXPECT_EQ(last_progress, 2 * train.size());
  EXPECT_LT(epochs[1].mean_loss, epochs[0].mean_loss);

  const double standard_robust = pgd_robust_accuracy(*standard, test, 0.1f);
  const double hardened_robust = pgd_robust_accuracy(*hardened, test, 0.1f);
  EXPECT_GT(hardened_robust, standard_robust + 0.1) << "standard " << standard_robust << ", hardened " << hardened_robust;

  // The hardened model survives a save and load with the same answers.
  aegis::test::TempDir dir;
  const std::string saved = (dir.path / "hardened.pt").string();
  hardened->save(saved);
  auto reloaded = models::load_torchscript(saved, options);
  std::vector<float> a(10 * 10), b(10 * 10);
  hardened->predict(std::span<const float>(test.x).first(10 * 784), a);
  reloaded->predict(std::span<const float>(test.x).first(10 * 784), b);
  for (std::size_t i = 0; i < a.size(); ++i) EXPECT_NEAR(a[i], b[i], 1e-5);
}

TEST(Hardening, TradesAndGaussianTrainAndRejectBadSettings) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  models::DataOptions train_options;
  train_options.split = "train";
  train_options.limit = 256;
  auto train = models::load_dataset(models::kFashionMnistDir, train_options);
  models::TorchScriptOptions options;
  options.input_shape = {1, 28, 28};
  auto model = models::load_torchscript(example("model_init.pt"), options);
  attacks::HardeningOptions harden;
  harden.method = attacks::HardeningMethod::Trades;
  harden.steps = 2;
  harden.batch = 64;
  auto trades = attacks::harden(*model, train.x, train.y, harden);
  ASSERT_EQ(trades.size(), 1u);
  EXPECT_TRUE(std::isfinite(trades[0].mean_loss));
  harden.method = attacks::HardeningMethod::Gaussian;
  auto gaussian = attacks::harden(*model, train.x, train.y, harden);
  EXPECT_TRUE(std::isfinite(gaussian[0].mean_loss));

  harden.sigma = 0;
  EXPECT_THROW(attacks::harden(*model, train.x, train.y, harden), core::Error);
  harden.method = attacks::HardeningMethod::Pgd;
  harden.eps = 0;
  EXPECT_THROW(attacks::harden(*model, train.x, train.y, harden), core::Error);
  EXPECT_THROW(attacks::parse_hardening_method("fgsm-magic"), core::Error);
}

TEST(Hardening, SmoothedStandardModelCertifiesMostCorrectSamplesAtSmallRadii) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  models::DataOptions test_options;
  test_options.limit = 20;
  auto test = models::load_dataset(models::kFashionMnistDir, test_options);
  models::TorchScriptOptions options;
  options.input_shape = {1, 28, 28};
  auto model = models::load_torchscript(example("model.pt"), options);
  attacks::SmoothingOptions smoothing;
  smoothing.sigma = 0.12f;
  smoothing.n0 = 50;
  smoothing.n = 500;
  auto certificates = attacks::certify(*model, test.x, smoothing);
  ASSERT_EQ(certificates.size(), 20u);
  std::size_t certified_correct = 0;
  for (std::size_t i = 0; i < certificates.size(); ++i) {
    const auto& c = certificates[i];
    if (c.predicted < 0) {
      EXPECT_EQ(c.radius, 0.0);
      continue;
    }
    // Cohen's radius: sigma * Phi^-1(p_lower), capped by what n samples can show.
    EXPECT_GE(c.p_lower, 0.5);
    EXPECT_LE(c.radius, smoothing.sigma * 3.1);
    certified_correct += c.predicted == test.y[i];
  }
  EXPECT_GE(certified_correct, 10u);
  EXPECT_EQ(model->queries(), 20u * (50 + 500));
}

}  // namespace
