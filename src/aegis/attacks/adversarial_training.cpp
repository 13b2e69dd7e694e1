#include "aegis/attacks/adversarial_training.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>
#include <random>

#include "aegis/attacks/evasion/vector_ops.h"
#include "aegis/core/error.h"

namespace aegis::attacks {

HardeningMethod parse_hardening_method(const std::string& text) {
  if (text == "pgd" || text == "madry") return HardeningMethod::Pgd;
  if (text == "trades") return HardeningMethod::Trades;
  if (text == "gaussian" || text == "noise") return HardeningMethod::Gaussian;
  throw core::Error("unknown hardening method '" + text + "'",
                    "use pgd (Madry adversarial training), trades, or gaussian (noise augmentation for aegis certify)");
}

namespace {

// TRADES' inner maximisation: L-inf steps that increase KL(p(x) || p(x')) from a small random start.
void trades_examples(models::Classifier& model, std::span<const float> x, std::size_t n, const HardeningOptions& options,
                     float step, std::mt19937_64& rng, std::vector<float>& x_adv) {
  const std::size_t d = model.sample_size();
  const std::size_t k = static_cast<std::size_t>(model.num_classes());
  std::vector<float> clean_scores(n * k), clean_p(n * k), grad(n * d), scores(n * k);
  model.predict(x, clean_scores);
  for (std::size_t i = 0; i < n; ++i)
    models::to_probabilities(model.info().scores, std::span<const float>(clean_scores).subspan(i * k, k),
                             std::span<float>(clean_p).subspan(i * k, k));
  std::normal_distribution<float> noise(0.0f, 0.001f);
  x_adv.assign(x.begin(), x.end());
  for (auto& v : x_adv) v = std::clamp(v + noise(rng), options.bounds.lo, options.bounds.hi);
  // d KL(p || softmax(z)) / dz = softmax(z) - p
  auto kl_gradient = [&](std::span<const float> s, std::span<float> g) {
    std::vector<float> q(k);
    for (std::size_t i = 0; i < n; ++i) {
      models::to_probabilities(model.info().scores, s.subspan(i * k, k), q);
      for (std::size_t c = 0; c < k; ++c) g[i * k + c] = q[c] - clean_p[i * k + c];
    }
  };
  for (int t = 0; t < options.steps; ++t) {
    model.gradient(x_adv, kl_gradient, grad, scores);
    for (std::size_t j = 0; j < n * d; ++j) x_adv[j] += step * (grad[j] > 0 ? 1.0f : grad[j] < 0 ? -1.0f : 0.0f);
    for (std::size_t i = 0; i < n; ++i)
      detail::project(Norm::Linf, options.eps, options.bounds, x.subspan(i * d, d),
                      std::span<float>(x_adv).subspan(i * d, d));
  }
}

}  // namespace

std::vector<EpochReport> harden(models::TrainableClassifier& model, std::span<const float> x, std::span<const int> y,
                                const HardeningOptions& options,
                                const std::function<void(std::size_t done, std::size_t total)>& progress) {
  const std::size_t d = model.sample_size();
  const std::size_t n = y.size();
  if (x.size() != n * d) throw core::Error("the training data does not match the model's input size", "check --input-shape");
  if (n == 0) throw core::Error("no training data", "check --data and --split");
  if (options.epochs < 1) throw core::Error("--epochs must be at least 1", "give --epochs 1 or more");
  if (options.method != HardeningMethod::Gaussian && (!(options.eps > 0) || options.steps < 1))
    throw core::Error("adversarial training needs --eps > 0 and --steps >= 1", "e.g. --eps 0.1 --steps 7");
  if (options.method == HardeningMethod::Gaussian && !(options.sigma > 0))
    throw core::Error("gaussian augmentation needs --sigma > 0", "use the sigma you will certify with, e.g. 0.25");
  model.set_learning_rate(options.learning_rate);
  const float step = options.step_size > 0 ? options.step_size : 2.5f * options.eps / static_cast<float>(options.steps);
  PgdOptions pgd_options;
  pgd_options.norm = Norm::Linf;
  pgd_options.steps = options.steps;
  pgd_options.step_size = step;
  pgd_options.random_start = true;
  pgd_options.seed = options.seed;
  auto pgd = make_pgd(pgd_options);

  std::mt19937_64 rng(options.seed);
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::vector<EpochReport> reports;
  std::vector<float> bx, x_adv;
  std::vector<int> by;
  std::normal_distribution<float> gaussian(0.0f, options.sigma);
  for (int epoch = 1; epoch <= options.epochs; ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    std::shuffle(order.begin(), order.end(), rng);
    double loss_sum = 0;
    std::size_t batches = 0;
    for (std::size_t begin = 0; begin < n; begin += options.batch) {
      const std::size_t count = std::min(options.batch, n - begin);
      bx.resize(count * d);
      by.resize(count);
      for (std::size_t j = 0; j < count; ++j) {
        std::copy_n(x.data() + order[begin + j] * d, d, bx.data() + j * d);
        by[j] = y[order[begin + j]];
      }
      models::TrainingObjective objective = models::TrainingObjective::CrossEntropy;
      switch (options.method) {
        case HardeningMethod::Pgd:
          x_adv = pgd->run(model, AttackInput{bx, by, {}}, options.eps, options.bounds).x_adv;
          break;
        case HardeningMethod::Trades:
          trades_examples(model, bx, count, options, step, rng, x_adv);
          objective = models::TrainingObjective::Trades;
          break;
        case HardeningMethod::Gaussian:
          x_adv = bx;
          for (auto& v : x_adv) v += gaussian(rng);
          break;
      }
      loss_sum += model.train_step(bx, x_adv, by, objective, options.beta);
      ++batches;
      if (progress) progress((static_cast<std::size_t>(epoch - 1) * n) + begin + count, n * static_cast<std::size_t>(options.epochs));
    }
    reports.push_back({epoch, loss_sum / static_cast<double>(batches),
                       std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count()});
  }
  return reports;
}

}  // namespace aegis::attacks
