// White-box evasion attacks (FGSM, PGD, APGD, C&W L2, DeepFool), checked against linear models,
// whose adversarial distances have closed forms, and a small ReLU network with exact gradients.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <span>
#include <vector>

#include "aegis/attacks/evasion.h"
#include "aegis/core/error.h"
#include "aegis/models/classifier.h"
#include "aegis/models/linear_classifier.h"

namespace {

using aegis::attacks::AttackInput;
using aegis::attacks::AttackOutcome;
using aegis::attacks::Bounds;
using aegis::attacks::Norm;
using aegis::models::Classifier;
using aegis::models::ClassifierInfo;
using aegis::models::LinearClassifier;
using aegis::models::ScoreGradientFn;
using aegis::models::ScoreKind;

std::vector<float> gaussian_vector(std::size_t size, std::uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(size);
  for (float& x : v) x = normal(rng);
  return v;
}

// Points near the centre of [0, 1]^d, where no budget used below reaches the edge of the range.
std::vector<float> central_points(std::size_t n, std::size_t d, std::uint64_t seed, float spread = 0.2f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> jitter(-spread, spread);
  std::vector<float> x(n * d);
  for (float& v : x) v = 0.5f + jitter(rng);
  return x;
}

std::span<const float> sample(const std::vector<float>& x, std::size_t i, std::size_t d) {
  return std::span<const float>(x).subspan(i * d, d);
}

double distance(Norm norm, std::span<const float> a, std::span<const float> b) {
  double top = 0, sum = 0;
  for (std::size_t j = 0; j < a.size(); ++j) {
    const double diff = static_cast<double>(a[j]) - b[j];
    top = std::max(top, std::fabs(diff));
    sum += diff * diff;
  }
  return norm == Norm::Linf ? top : std::sqrt(sum);
}

std::vector<int> predictions(Classifier& model, std::span<const float> x) {
  const std::size_t d = model.sample_size(), k = static_cast<std::size_t>(model.num_classes());
  std::vector<float> scores(x.size() / d * k);
  model.predict(x, scores);
  std::vector<int> out;
  for (std::size_t i = 0; i < x.size() / d; ++i)
    out.push_back(aegis::models::argmax(std::span<const float>(scores).subspan(i * k, k)));
  return out;
}

// A target per sample: the class `shift` places after its label, among `classes`.
std::vector<int> shifted_targets(const std::vector<int>& labels, int shift, int classes) {
  std::vector<int> targets;
  for (int y : labels) targets.push_back((y + shift) % classes);
  return targets;
}

// Two classes with score_1 - score_0 = w . x + b; the boundary passes through the cube's centre.
struct BinaryLinear {
  std::vector<float> w;
  double b = 0;
  LinearClassifier model;

  BinaryLinear(std::size_t d, std::uint64_t seed)
      : w(gaussian_vector(d, seed)), b(-0.5 * std::accumulate(w.begin(), w.end(), 0.0)), model(make(w, b)) {}

  static LinearClassifier make(const std::vector<float>& w, double b) {
    std::vector<float> weights(2 * w.size(), 0.0f);
    std::copy(w.begin(), w.end(), weights.begin() + static_cast<std::ptrdiff_t>(w.size()));
    return LinearClassifier({static_cast<std::int64_t>(w.size())}, 2, weights, {0.0f, static_cast<float>(b)});
  }
  double margin(std::span<const float> x) const {
    double m = b;
    for (std::size_t j = 0; j < w.size(); ++j) m += static_cast<double>(w[j]) * x[j];
    return m;
  }
  int label(std::span<const float> x) const { return margin(x) > 0 ? 1 : 0; }
  // Exact distance to the boundary: |margin| / ||w||_1 in Linf, |margin| / ||w||_2 in L2.
  double distance(Norm norm, std::span<const float> x) const {
    double s = 0;
    for (float v : w) s += norm == Norm::Linf ? std::fabs(v) : static_cast<double>(v) * v;
    return std::fabs(margin(x)) / (norm == Norm::Linf ? s : std::sqrt(s));
  }
};

// `count` central points whose L2 distance to the boundary of `lin` is at least `min_distance`.
std::vector<float> points_beyond(const BinaryLinear& lin, std::size_t count, double min_distance, std::uint64_t seed) {
  const std::size_t d = lin.w.size();
  const auto pool = central_points(count * 4, d, seed);
  std::vector<float> x;
  for (std::size_t i = 0; i < count * 4 && x.size() < count * d; ++i)
    if (lin.distance(Norm::L2, sample(pool, i, d)) >= min_distance)
      x.insert(x.end(), pool.begin() + static_cast<std::ptrdiff_t>(i * d), pool.begin() + static_cast<std::ptrdiff_t>((i + 1) * d));
  return x;
}

// K classes, random weights: distances to each pairwise boundary have closed forms.
struct MulticlassLinear {
  std::size_t d;
  int k;
  std::vector<float> w, bias;
  LinearClassifier model;

  MulticlassLinear(std::size_t features, int classes, std::uint64_t seed)
      : d(features),
        k(classes),
        w(gaussian_vector(features * static_cast<std::size_t>(classes), seed)),
        bias(centre_bias(w, features, classes, seed)),
        model({static_cast<std::int64_t>(features)}, classes, w, bias) {}

  // Biases that put the cube's centre near every boundary, plus a little noise.
  static std::vector<float> centre_bias(const std::vector<float>& w, std::size_t d, int k, std::uint64_t seed) {
    std::vector<float> b(static_cast<std::size_t>(k));
    const auto noise = gaussian_vector(b.size(), seed + 100, 0.3f);
    for (std::size_t c = 0; c < b.size(); ++c) {
      double s = 0;
      for (std::size_t j = 0; j < d; ++j) s += w[c * d + j] * 0.5;
      b[c] = static_cast<float>(-s + noise[c]);
    }
    return b;
  }
  double score(std::span<const float> x, int c) const {
    double s = bias[static_cast<std::size_t>(c)];
    for (std::size_t j = 0; j < d; ++j) s += static_cast<double>(w[static_cast<std::size_t>(c) * d + j]) * x[j];
    return s;
  }
  double weight_distance(int a, int c) const {
    double s = 0;
    for (std::size_t j = 0; j < d; ++j) {
      const double diff = static_cast<double>(w[static_cast<std::size_t>(a) * d + j]) - w[static_cast<std::size_t>(c) * d + j];
      s += diff * diff;
    }
    return std::sqrt(s);
  }
  // Minimal L2 distance from x (labelled y) to a point where some other class scores at least as high.
  double minimal_l2(std::span<const float> x, int y) const {
    double best = std::numeric_limits<double>::infinity();
    for (int c = 0; c < k; ++c)
      if (c != y) best = std::min(best, (score(x, y) - score(x, c)) / weight_distance(y, c));
    return best;
  }
};

// A 2-layer ReLU network, D -> H -> K, with fixed seeded weights and exact input gradients.
class TinyMlp : public Classifier {
 public:
  TinyMlp(std::size_t features, std::size_t hidden, int classes, std::uint64_t seed, float first_layer_scale = 3.0f,
          float output_scale = 1.0f)
      : d_(features),
        h_(hidden),
        k_(static_cast<std::size_t>(classes)),
        w1_(gaussian_vector(hidden * features, seed, first_layer_scale / std::sqrt(static_cast<float>(features)))),
        b1_(gaussian_vector(hidden, seed + 1, 0.5f)),
        w2_(gaussian_vector(k_ * hidden, seed + 2, output_scale)),
        b2_(gaussian_vector(k_, seed + 3, 0.1f * output_scale)) {
    info_.input_shape = {static_cast<std::int64_t>(features)};
    info_.num_classes = classes;
    info_.scores = ScoreKind::Logits;
    info_.has_gradients = true;
    info_.backend = "test-mlp";
    info_.source = "seeded";
  }
  const ClassifierInfo& info() const override { return info_; }

 protected:
  void do_predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) override {
    std::vector<float> pre(h_);
    for (std::size_t i = 0; i < n; ++i) forward(inputs.subspan(i * d_, d_), pre, scores.subspan(i * k_, k_));
  }

  void do_gradient(std::span<const float> inputs, std::size_t n, const ScoreGradientFn& fn, std::span<float> grad_inputs,
                   std::span<float> scores) override {
    std::vector<float> pre(n * h_), grad_scores(n * k_), grad_hidden(h_);
    for (std::size_t i = 0; i < n; ++i)
      forward(inputs.subspan(i * d_, d_), std::span(pre).subspan(i * h_, h_), scores.subspan(i * k_, k_));
    fn(scores.first(n * k_), grad_scores);
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t u = 0; u < h_; ++u) {
        double s = 0;
        if (pre[i * h_ + u] > 0)
          for (std::size_t c = 0; c < k_; ++c) s += static_cast<double>(w2_[c * h_ + u]) * grad_scores[i * k_ + c];
        grad_hidden[u] = static_cast<float>(s);
      }
      for (std::size_t j = 0; j < d_; ++j) {
        double s = 0;
        for (std::size_t u = 0; u < h_; ++u) s += static_cast<double>(w1_[u * d_ + j]) * grad_hidden[u];
        grad_inputs[i * d_ + j] = static_cast<float>(s);
      }
    }
  }

 private:
  void forward(std::span<const float> x, std::span<float> pre, std::span<float> scores) const {
    for (std::size_t u = 0; u < h_; ++u) {
      double s = b1_[u];
      for (std::size_t j = 0; j < d_; ++j) s += static_cast<double>(w1_[u * d_ + j]) * (x[j] - 0.5f);
      pre[u] = static_cast<float>(s);
    }
    for (std::size_t c = 0; c < k_; ++c) {
      double s = b2_[c];
      for (std::size_t u = 0; u < h_; ++u) s += static_cast<double>(w2_[c * h_ + u]) * std::max(pre[u], 0.0f);
      scores[c] = static_cast<float>(s);
    }
  }

  ClassifierInfo info_;
  std::size_t d_, h_, k_;
  std::vector<float> w1_, b1_, w2_, b2_;
};

// Scores only: what an ONNX or HTTP model gives.
class BlackBox : public Classifier {
 public:
  explicit BlackBox(Classifier& inner) : inner_(inner), info_(inner.info()) {
    info_.has_gradients = false;
    info_.backend = "http";
    info_.source = "http://model.test/predict";
  }
  const ClassifierInfo& info() const override { return info_; }

 protected:
  void do_predict(std::span<const float> inputs, std::size_t, std::span<float> scores) override {
    inner_.predict(inputs, scores);
  }

 private:
  Classifier& inner_;
  ClassifierInfo info_;
};

// A model that reports probabilities (softmax of another's logits), with gradients through the softmax.
class SoftmaxOf : public Classifier {
 public:
  explicit SoftmaxOf(Classifier& inner) : inner_(inner), info_(inner.info()) { info_.scores = ScoreKind::Probabilities; }
  const ClassifierInfo& info() const override { return info_; }

 protected:
  void do_predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) override {
    std::vector<float> logits(n * static_cast<std::size_t>(num_classes()));
    inner_.predict(inputs, logits);
    softmax_rows(logits, scores.first(logits.size()));
  }

  void do_gradient(std::span<const float> inputs, std::size_t n, const ScoreGradientFn& fn, std::span<float> grad_inputs,
                   std::span<float> scores) override {
    const std::size_t k = static_cast<std::size_t>(num_classes());
    std::vector<float> logits(n * k), grad_p(n * k);
    // dL/dz = p * (dL/dp - sum_c p_c dL/dp_c)
    const ScoreGradientFn through_softmax = [&](std::span<const float> z, std::span<float> grad_z) {
      softmax_rows(z, scores.first(n * k));
      fn(scores.first(n * k), grad_p);
      for (std::size_t i = 0; i < n; ++i) {
        double dot = 0;
        for (std::size_t c = 0; c < k; ++c) dot += static_cast<double>(scores[i * k + c]) * grad_p[i * k + c];
        for (std::size_t c = 0; c < k; ++c)
          grad_z[i * k + c] = static_cast<float>(scores[i * k + c] * (grad_p[i * k + c] - dot));
      }
    };
    inner_.gradient(inputs, through_softmax, grad_inputs, logits);
  }

 private:
  void softmax_rows(std::span<const float> logits, std::span<float> probabilities) const {
    const std::size_t k = static_cast<std::size_t>(num_classes());
    for (std::size_t i = 0; i < logits.size() / k; ++i)
      aegis::models::to_probabilities(ScoreKind::Logits, logits.subspan(i * k, k), probabilities.subspan(i * k, k));
  }

 private:
  Classifier& inner_;
  ClassifierInfo info_;
};

// Budget and value range: what every output of a budgeted attack must keep.
void expect_within_budget(const AttackOutcome& out, const std::vector<float>& x, std::size_t d, Norm norm, float eps,
                          const Bounds& bounds) {
  ASSERT_EQ(out.x_adv.size(), x.size());
  ASSERT_EQ(out.queries.size(), x.size() / d);
  for (std::size_t i = 0; i < x.size() / d; ++i) {
    EXPECT_LE(distance(norm, sample(out.x_adv, i, d), sample(x, i, d)), eps * (1 + 1e-5) + 1e-7) << "sample " << i;
    for (float v : sample(out.x_adv, i, d)) {
      EXPECT_GE(v, bounds.lo);
      EXPECT_LE(v, bounds.hi);
    }
  }
}

std::size_t count_successes(Classifier& model, const AttackOutcome& out, const std::vector<int>& labels) {
  const auto pred = predictions(model, out.x_adv);
  std::size_t count = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) count += pred[i] != labels[i] ? 1 : 0;
  return count;
}

// Random points of the cube labelled by the MLP itself, so that every one starts correctly classified.
struct MlpData {
  static constexpr std::size_t kFeatures = 20;
  TinyMlp model{kFeatures, 32, 5, 42};
  std::vector<float> x = central_points(120, kFeatures, 9, 0.45f);
  std::vector<int> labels = predictions(model, x);
};

}  // namespace

// ---------------------------------------------------------------- FGSM

TEST(WhiteboxAttacks, FgsmLinfOnLinearStepsAlongTheSignOfTheWeightDifference) {
  const std::size_t d = 16;
  BinaryLinear lin(d, 1);
  const auto x = central_points(40, d, 2);
  std::vector<int> labels;
  for (std::size_t i = 0; i < 40; ++i) labels.push_back(lin.label(sample(x, i, d)));
  const float eps = 0.05f;
  const Bounds bounds{0.0f, 1.0f};
  auto fgsm = aegis::attacks::make_fgsm({Norm::Linf});
  const auto out = fgsm->run(lin.model, {x, labels, {}}, eps, bounds);
  expect_within_budget(out, x, d, Norm::Linf, eps, bounds);

  const auto pred = predictions(lin.model, out.x_adv);
  int flipped = 0, robust = 0;
  for (std::size_t i = 0; i < 40; ++i) {
    const auto xi = sample(x, i, d);
    // w_other - w_label is +w for label 0 and -w for label 1.
    const float towards = labels[i] == 0 ? 1.0f : -1.0f;
    for (std::size_t j = 0; j < d; ++j) {
      const float expected = std::clamp(xi[j] + eps * (lin.w[j] * towards > 0 ? 1.0f : -1.0f), 0.0f, 1.0f);
      EXPECT_NEAR(out.x_adv[i * d + j], expected, 1e-6f) << "sample " << i << " feature " << j;
    }
    const double dist = lin.distance(Norm::Linf, xi);
    if (std::fabs(dist - eps) < 1e-4) continue;
    EXPECT_EQ(pred[i] != labels[i], dist < eps) << "sample " << i << " at Linf distance " << dist;
    (dist < eps ? flipped : robust)++;
  }
  EXPECT_GT(flipped, 0);
  EXPECT_GT(robust, 0);
  EXPECT_EQ(lin.model.gradient_queries(), 40u) << "one gradient per sample";
}

TEST(WhiteboxAttacks, FgsmL2OnLinearFlipsExactlyWithinTheL2Margin) {
  const std::size_t d = 16;
  BinaryLinear lin(d, 3);
  const auto x = central_points(40, d, 4);
  std::vector<int> labels;
  for (std::size_t i = 0; i < 40; ++i) labels.push_back(lin.label(sample(x, i, d)));
  const float eps = 0.12f;
  auto fgsm = aegis::attacks::make_fgsm({Norm::L2});
  const auto out = fgsm->run(lin.model, {x, labels, {}}, eps, {0.0f, 1.0f});
  expect_within_budget(out, x, d, Norm::L2, eps, {0.0f, 1.0f});
  const auto pred = predictions(lin.model, out.x_adv);
  const double w_norm = std::sqrt(std::inner_product(lin.w.begin(), lin.w.end(), lin.w.begin(), 0.0));
  int flipped = 0, robust = 0;
  for (std::size_t i = 0; i < 40; ++i) {
    const auto xi = sample(x, i, d);
    const float towards = labels[i] == 0 ? 1.0f : -1.0f;
    for (std::size_t j = 0; j < d; ++j)
      EXPECT_NEAR(out.x_adv[i * d + j], xi[j] + eps * towards * lin.w[j] / w_norm, 1e-5);
    const double dist = lin.distance(Norm::L2, xi);
    if (std::fabs(dist - eps) < 1e-4) continue;
    EXPECT_EQ(pred[i] != labels[i], dist < eps) << "sample " << i << " at L2 distance " << dist;
    (dist < eps ? flipped : robust)++;
  }
  EXPECT_GT(flipped, 0);
  EXPECT_GT(robust, 0);
}

TEST(WhiteboxAttacks, FgsmTargetedDescendsTheCrossEntropyOfTheTarget) {
  MulticlassLinear lin(12, 4, 5);
  const std::size_t d = 12;
  const auto x = central_points(20, d, 6, 0.1f);
  const auto labels = predictions(lin.model, x);
  const auto targets = shifted_targets(labels, 1, 4);
  const float eps = 0.04f;
  auto fgsm = aegis::attacks::make_fgsm({Norm::Linf});
  const auto out = fgsm->run(lin.model, {x, labels, targets}, eps, {0.0f, 1.0f});
  for (std::size_t i = 0; i < 20; ++i) {
    // -d CE(target)/dx = w_t - sum_c p_c w_c for a linear model.
    std::vector<double> p(4);
    double top = -1e300, sum = 0;
    for (int c = 0; c < 4; ++c) top = std::max(top, lin.score(sample(x, i, d), c));
    for (int c = 0; c < 4; ++c) sum += p[static_cast<std::size_t>(c)] = std::exp(lin.score(sample(x, i, d), c) - top);
    for (std::size_t j = 0; j < d; ++j) {
      double direction = lin.w[static_cast<std::size_t>(targets[i]) * d + j];
      for (std::size_t c = 0; c < 4; ++c) direction -= p[c] / sum * lin.w[c * d + j];
      EXPECT_NEAR(out.x_adv[i * d + j], x[i * d + j] + eps * (direction > 0 ? 1.0f : -1.0f), 1e-6f);
    }
  }
}

TEST(WhiteboxAttacks, FgsmLeavesSamplesWithZeroGradientUnchanged) {
  LinearClassifier flat({6}, 3, std::vector<float>(18, 0.0f), {1.0f, 0.0f, 0.0f});
  const auto x = central_points(3, 6, 7);
  const std::vector<int> labels{0, 0, 0};
  for (Norm norm : {Norm::Linf, Norm::L2}) {
    auto fgsm = aegis::attacks::make_fgsm({norm});
    const auto out = fgsm->run(flat, {x, labels, {}}, 0.1f, {0.0f, 1.0f});
    EXPECT_EQ(out.x_adv, x);
  }
}

// ---------------------------------------------------------------- PGD

TEST(WhiteboxAttacks, PgdLinfWithoutRandomStartIsThePlainArtLoop) {
  MlpData data;
  const std::size_t d = MlpData::kFeatures, k = 5, n = data.labels.size();
  aegis::attacks::PgdOptions options;
  options.steps = 10;
  options.step_size = 0.01f;
  const float eps = 0.05f;
  const Bounds bounds{0.0f, 1.0f};
  auto pgd = aegis::attacks::make_pgd(options);
  data.model.reset_queries();
  const auto first = pgd->run(data.model, {data.x, data.labels, {}}, eps, bounds);
  EXPECT_EQ(data.model.gradient_queries(), n * 10) << "one gradient per sample and step, no extra passes";
  EXPECT_EQ(data.model.queries(), n * 10);
  const auto second = aegis::attacks::make_pgd(options)->run(data.model, {data.x, data.labels, {}}, eps, bounds);
  EXPECT_EQ(first.x_adv, second.x_adv) << "deterministic without a random start";
  expect_within_budget(first, data.x, d, Norm::Linf, eps, bounds);
  for (auto q : first.queries) EXPECT_EQ(q, 10u);

  // The loop ART's ProjectedGradientDescent (num_random_init=0) runs, every sample every step:
  // x <- x0 + clamp(clip(x + a sign(grad CE), 0, 1) - x0, -eps, eps).
  std::vector<float> plain = data.x, grad(n * d), scores(n * k);
  const ScoreGradientFn ce = [&](std::span<const float> s, std::span<float> g) {
    for (std::size_t i = 0; i < n; ++i) {
      const auto row = s.subspan(i * k, k);
      const float top = *std::max_element(row.begin(), row.end());
      double sum = 0;
      for (float v : row) sum += std::exp(static_cast<double>(v) - top);
      for (std::size_t c = 0; c < k; ++c)
        g[i * k + c] = static_cast<float>(std::exp(static_cast<double>(row[c]) - top) / sum) -
                       (static_cast<int>(c) == data.labels[i] ? 1.0f : 0.0f);
    }
  };
  for (int step = 0; step < 10; ++step) {
    data.model.gradient(plain, ce, grad, scores);
    for (std::size_t j = 0; j < n * d; ++j) {
      const float sign = grad[j] > 0 ? 1.0f : (grad[j] < 0 ? -1.0f : 0.0f);
      const float clipped = std::clamp(plain[j] + 0.01f * sign, 0.0f, 1.0f);
      plain[j] = data.x[j] + std::clamp(clipped - data.x[j], -eps, eps);
    }
  }
  EXPECT_EQ(first.x_adv, plain);
  EXPECT_GT(count_successes(data.model, first, data.labels), 0u);
}

TEST(WhiteboxAttacks, PgdLinfOnLinearFlipsExactlyTheSamplesWithinEps) {
  const std::size_t d = 16;
  BinaryLinear lin(d, 11);
  const auto x = central_points(60, d, 12);
  std::vector<int> labels;
  for (std::size_t i = 0; i < 60; ++i) labels.push_back(lin.label(sample(x, i, d)));
  const float eps = 0.04f;
  aegis::attacks::PgdOptions options;
  options.steps = 20;
  auto out = aegis::attacks::make_pgd(options)->run(lin.model, {x, labels, {}}, eps, {0.0f, 1.0f});
  expect_within_budget(out, x, d, Norm::Linf, eps, {0.0f, 1.0f});
  const auto pred = predictions(lin.model, out.x_adv);
  int flipped = 0, robust = 0;
  for (std::size_t i = 0; i < 60; ++i) {
    const double dist = lin.distance(Norm::Linf, sample(x, i, d));
    if (std::fabs(dist - eps) < 1e-3 * eps) continue;
    EXPECT_EQ(pred[i] != labels[i], dist < eps) << "sample " << i << " at Linf distance " << dist;
    (dist < eps ? flipped : robust)++;
  }
  EXPECT_GT(flipped, 5);
  EXPECT_GT(robust, 5);
}

TEST(WhiteboxAttacks, PgdL2OnLinearFlipsExactlyTheSamplesWithinEps) {
  const std::size_t d = 16;
  BinaryLinear lin(d, 13);
  const auto x = central_points(60, d, 14);
  std::vector<int> labels;
  for (std::size_t i = 0; i < 60; ++i) labels.push_back(lin.label(sample(x, i, d)));
  const float eps = 0.1f;
  for (bool random_start : {false, true}) {
    aegis::attacks::PgdOptions options;
    options.norm = Norm::L2;
    options.steps = 20;
    options.random_start = random_start;
    options.restarts = random_start ? 2 : 1;
    options.seed = 5;
    const auto out = aegis::attacks::make_pgd(options)->run(lin.model, {x, labels, {}}, eps, {0.0f, 1.0f});
    expect_within_budget(out, x, d, Norm::L2, eps, {0.0f, 1.0f});
    const auto pred = predictions(lin.model, out.x_adv);
    int flipped = 0, robust = 0;
    for (std::size_t i = 0; i < 60; ++i) {
      const double dist = lin.distance(Norm::L2, sample(x, i, d));
      // A random start converges to the boundary point only up to a small remainder.
      if (std::fabs(dist - eps) < (random_start ? 2e-2 : 1e-3) * eps) continue;
      EXPECT_EQ(pred[i] != labels[i], dist < eps)
          << "sample " << i << " at L2 distance " << dist << (random_start ? " (random start)" : "");
      (dist < eps ? flipped : robust)++;
    }
    EXPECT_GT(flipped, 5);
    EXPECT_GT(robust, 5);
  }
}

TEST(WhiteboxAttacks, PgdRandomRestartsAreSeededAndKeepTheBudget) {
  MlpData data;
  aegis::attacks::PgdOptions options;
  options.steps = 8;
  options.random_start = true;
  options.restarts = 3;
  options.seed = 17;
  const float eps = 0.04f;
  const Bounds bounds{0.0f, 1.0f};
  const auto a = aegis::attacks::make_pgd(options)->run(data.model, {data.x, data.labels, {}}, eps, bounds);
  const auto b = aegis::attacks::make_pgd(options)->run(data.model, {data.x, data.labels, {}}, eps, bounds);
  EXPECT_EQ(a.x_adv, b.x_adv) << "same seed, same result";
  expect_within_budget(a, data.x, MlpData::kFeatures, Norm::Linf, eps, bounds);
  // Restarts only attack samples still robust: a sample broken in the first round costs one round.
  const auto pred = predictions(data.model, a.x_adv);
  for (std::size_t i = 0; i < data.labels.size(); ++i) {
    EXPECT_GE(a.queries[i], 9u);
    EXPECT_LE(a.queries[i], 27u);
    if (pred[i] == data.labels[i]) {
      EXPECT_EQ(a.queries[i], 27u) << "a robust sample goes through every restart";
    }
  }
  aegis::attacks::PgdOptions single = options;
  single.restarts = 1;
  const auto one = aegis::attacks::make_pgd(single)->run(data.model, {data.x, data.labels, {}}, eps, bounds);
  EXPECT_GE(count_successes(data.model, a, data.labels), count_successes(data.model, one, data.labels));
}

// ---------------------------------------------------------------- APGD

TEST(WhiteboxAttacks, ApgdIsAtLeastAsStrongAsPgdOnAnOverconfidentMlp) {
  // Large logits saturate the softmax: the cross-entropy gradient underflows for confident samples
  // and PGD stalls there, the failure APGD's random start and the scale-free DLR loss were made for.
  const std::size_t d = 20;
  TinyMlp model(d, 32, 5, 42, 10.0f, 20.0f);
  const auto x = central_points(120, d, 9, 0.45f);
  const auto labels = predictions(model, x);
  const std::size_t n = labels.size();
  const Bounds bounds{0.0f, 1.0f};
  for (Norm norm : {Norm::Linf, Norm::L2}) {
    const float eps = norm == Norm::Linf ? 0.03f : 0.2f;
    aegis::attacks::PgdOptions pgd_options;
    pgd_options.norm = norm;
    pgd_options.steps = 20;
    const auto pgd = aegis::attacks::make_pgd(pgd_options)->run(model, {x, labels, {}}, eps, bounds);
    const std::size_t pgd_successes = count_successes(model, pgd, labels);
    EXPECT_GT(pgd_successes, n / 10) << "the budget should break some samples";
    EXPECT_LT(pgd_successes, n / 2) << "and leave many robust, or the comparison says nothing";

    for (auto loss : {aegis::attacks::ApgdLoss::CrossEntropy, aegis::attacks::ApgdLoss::Dlr}) {
      aegis::attacks::ApgdOptions options;
      options.norm = norm;
      options.loss = loss;
      options.steps = 20;
      options.restarts = 2;
      options.seed = 1;
      model.reset_queries();
      const auto apgd = aegis::attacks::make_apgd(options)->run(model, {x, labels, {}}, eps, bounds);
      EXPECT_LE(model.gradient_queries(), n * 21 * 2) << "one gradient call per iteration (plus the start)";
      EXPECT_EQ(model.queries(), model.gradient_queries()) << "no forward passes besides the gradient calls";
      expect_within_budget(apgd, x, d, norm, eps, bounds);
      const std::size_t successes = count_successes(model, apgd, labels);
      const bool dlr = loss == aegis::attacks::ApgdLoss::Dlr;
      EXPECT_GE(successes, pgd_successes) << aegis::attacks::to_string(norm) << (dlr ? " dlr" : " ce");
      if (dlr) {
        EXPECT_GE(successes, pgd_successes + n / 20) << aegis::attacks::to_string(norm) << ": DLR ignores the scale";
      }
    }
  }
}

TEST(WhiteboxAttacks, ApgdWithRestartsIsSeededAndStopsOnAdversarials) {
  MlpData data;
  aegis::attacks::ApgdOptions options;
  options.steps = 20;
  options.restarts = 2;
  options.seed = 4;
  const float eps = 0.03f;
  const auto a = aegis::attacks::make_apgd(options)->run(data.model, {data.x, data.labels, {}}, eps, {0.0f, 1.0f});
  const auto b = aegis::attacks::make_apgd(options)->run(data.model, {data.x, data.labels, {}}, eps, {0.0f, 1.0f});
  EXPECT_EQ(a.x_adv, b.x_adv);
  const auto pred = predictions(data.model, a.x_adv);
  for (std::size_t i = 0; i < data.labels.size(); ++i) {
    EXPECT_GE(a.queries[i], 1u);
    EXPECT_LE(a.queries[i], 42u);
    if (pred[i] == data.labels[i]) {
      EXPECT_EQ(a.queries[i], 42u);
    } else {
      EXPECT_LT(a.queries[i], 42u) << "an adversarial ends the attack on its sample";
    }
  }
}

TEST(WhiteboxAttacks, ApgdOnLinearFlipsExactlyTheSamplesWithinEps) {
  const std::size_t d = 16;
  BinaryLinear lin(d, 21);
  const auto x = central_points(60, d, 22);
  std::vector<int> labels;
  for (std::size_t i = 0; i < 60; ++i) labels.push_back(lin.label(sample(x, i, d)));
  const float eps = 0.04f;
  aegis::attacks::ApgdOptions options;
  options.steps = 30;
  const auto out = aegis::attacks::make_apgd(options)->run(lin.model, {x, labels, {}}, eps, {0.0f, 1.0f});
  expect_within_budget(out, x, d, Norm::Linf, eps, {0.0f, 1.0f});
  const auto pred = predictions(lin.model, out.x_adv);
  for (std::size_t i = 0; i < 60; ++i) {
    const double dist = lin.distance(Norm::Linf, sample(x, i, d));
    if (std::fabs(dist - eps) < 1e-2 * eps) continue;
    EXPECT_EQ(pred[i] != labels[i], dist < eps) << "sample " << i << " at Linf distance " << dist;
  }
}

// ---------------------------------------------------------------- C&W

TEST(WhiteboxAttacks, CarliniWagnerFindsTheClosestPointOnALinearBoundary) {
  const std::size_t d = 16;
  BinaryLinear lin(d, 31);
  // Adam moves every coordinate by about the learning rate per step, which sets the attack's
  // resolution (about 0.005 per coordinate here): the points lie at least 0.05 from the boundary.
  const auto x = points_beyond(lin, 24, 0.05, 32);
  ASSERT_EQ(x.size(), 24 * d);
  std::vector<int> labels;
  for (std::size_t i = 0; i < 24; ++i) labels.push_back(lin.label(sample(x, i, d)));
  aegis::attacks::CarliniWagnerOptions options;
  auto cw = aegis::attacks::make_carlini_wagner_l2(options);
  EXPECT_EQ(cw->kind(), aegis::attacks::AttackKind::MinimalNorm);
  const auto out = cw->run(lin.model, {x, labels, {}}, 0.0f, {0.0f, 1.0f});
  const auto pred = predictions(lin.model, out.x_adv);
  for (std::size_t i = 0; i < 24; ++i) {
    const double exact = lin.distance(Norm::L2, sample(x, i, d));
    const double found = distance(Norm::L2, sample(out.x_adv, i, d), sample(x, i, d));
    EXPECT_NE(pred[i], labels[i]) << "sample " << i;
    EXPECT_GE(found, exact * (1 - 1e-3)) << "sample " << i << ": no adversarial is closer than the boundary";
    EXPECT_LE(found, exact * 1.03 + 1e-3) << "sample " << i;
    for (float v : sample(out.x_adv, i, d)) {
      EXPECT_GE(v, 0.0f);
      EXPECT_LE(v, 1.0f);
    }
  }
}

TEST(WhiteboxAttacks, CarliniWagnerTargetedReachesTheTarget) {
  MulticlassLinear lin(12, 4, 33);
  const auto x = central_points(12, 12, 34, 0.1f);
  const auto labels = predictions(lin.model, x);
  const auto targets = shifted_targets(labels, 2, 4);
  aegis::attacks::CarliniWagnerOptions options;
  options.max_iterations = 200;
  const auto out = aegis::attacks::make_carlini_wagner_l2(options)->run(lin.model, {x, labels, targets}, 0.0f,
                                                                       {0.0f, 1.0f});
  const auto pred = predictions(lin.model, out.x_adv);
  for (std::size_t i = 0; i < 12; ++i) {
    EXPECT_EQ(pred[i], targets[i]) << "sample " << i;
    // The target must beat every class, so the distance is at least that to each pairwise boundary.
    double lower = 0;
    for (int c = 0; c < 4; ++c)
      if (c != targets[i])
        lower = std::max(lower, (lin.score(sample(x, i, 12), c) - lin.score(sample(x, i, 12), targets[i])) /
                                    lin.weight_distance(c, targets[i]));
    EXPECT_GE(distance(Norm::L2, sample(out.x_adv, i, 12), sample(x, i, 12)), lower * (1 - 1e-3));
  }
}

TEST(WhiteboxAttacks, CarliniWagnerUsesLogProbabilitiesOfProbabilityModels) {
  const std::size_t d = 16;
  BinaryLinear lin(d, 35);
  SoftmaxOf probabilities(lin.model);
  const auto x = points_beyond(lin, 8, 0.05, 36);
  ASSERT_EQ(x.size(), 8 * d);
  std::vector<int> labels;
  for (std::size_t i = 0; i < 8; ++i) labels.push_back(lin.label(sample(x, i, d)));
  // log softmax differs from the logits by one constant per row: the same margins, the same answer.
  aegis::attacks::CarliniWagnerOptions options;
  const auto out = aegis::attacks::make_carlini_wagner_l2(options)->run(probabilities, {x, labels, {}}, 0.0f,
                                                                       {0.0f, 1.0f});
  const auto pred = predictions(lin.model, out.x_adv);
  for (std::size_t i = 0; i < 8; ++i) {
    const double exact = lin.distance(Norm::L2, sample(x, i, d));
    const double found = distance(Norm::L2, sample(out.x_adv, i, d), sample(x, i, d));
    EXPECT_NE(pred[i], labels[i]) << "sample " << i;
    EXPECT_GE(found, exact * (1 - 1e-3)) << "sample " << i;
    EXPECT_LE(found, exact * 1.03 + 1e-3) << "sample " << i;
  }
}

// ---------------------------------------------------------------- DeepFool

TEST(WhiteboxAttacks, DeepFoolFindsTheMinimalL2DistanceOnALinearModel) {
  MulticlassLinear lin(10, 5, 41);
  const std::size_t d = 10;
  const auto x = central_points(30, d, 42, 0.1f);
  const auto labels = predictions(lin.model, x);
  aegis::attacks::DeepFoolOptions options;  // 10 candidates: all 5 classes
  auto deepfool = aegis::attacks::make_deepfool(options);
  EXPECT_FALSE(deepfool->supports_targeted());
  lin.model.reset_queries();
  const auto out = deepfool->run(lin.model, {x, labels, {}}, 0.0f, {0.0f, 1.0f});
  const auto pred = predictions(lin.model, out.x_adv);
  for (std::size_t i = 0; i < 30; ++i) {
    const double exact = lin.minimal_l2(sample(x, i, d), labels[i]);
    const double found = distance(Norm::L2, sample(out.x_adv, i, d), sample(x, i, d)) / (1.0 + options.overshoot);
    EXPECT_NE(pred[i], labels[i]) << "sample " << i;
    EXPECT_NEAR(found, exact, 1e-3 * exact + 1e-4) << "sample " << i;
    // One step: 5 class gradients at x, then one more call that sees the label changed.
    EXPECT_EQ(out.queries[i], 6u) << "sample " << i;
  }
}

TEST(WhiteboxAttacks, DeepFoolOnABinaryLinearModelStepsStraightToTheBoundary) {
  const std::size_t d = 16;
  BinaryLinear lin(d, 43);
  const auto x = central_points(20, d, 44);
  std::vector<int> labels;
  for (std::size_t i = 0; i < 20; ++i) labels.push_back(lin.label(sample(x, i, d)));
  aegis::attacks::DeepFoolOptions options;
  options.overshoot = 0.0f;
  const auto out = aegis::attacks::make_deepfool(options)->run(lin.model, {x, labels, {}}, 0.0f, {0.0f, 1.0f});
  const auto pred = predictions(lin.model, out.x_adv);
  const double w_norm = std::sqrt(std::inner_product(lin.w.begin(), lin.w.end(), lin.w.begin(), 0.0));
  for (std::size_t i = 0; i < 20; ++i) {
    // The step is (|f'| + 1e-4) / ||w'||: the 1e-4 carries it just across the boundary.
    const double exact = lin.distance(Norm::L2, sample(x, i, d));
    EXPECT_NE(pred[i], labels[i]);
    EXPECT_NEAR(distance(Norm::L2, sample(out.x_adv, i, d), sample(x, i, d)), exact + 1e-4 / w_norm, 1e-4 * exact + 1e-6);
  }
}

TEST(WhiteboxAttacks, DeepFoolBreaksTheMlpWithSmallPerturbations) {
  MlpData data;
  aegis::attacks::DeepFoolOptions options;
  options.candidate_classes = 3;
  const auto out = aegis::attacks::make_deepfool(options)->run(data.model, {data.x, data.labels, {}}, 0.0f, {0.0f, 1.0f});
  const std::size_t broken = count_successes(data.model, out, data.labels);
  EXPECT_GE(broken, data.labels.size() * 9 / 10);
  const auto pred = predictions(data.model, out.x_adv);
  for (std::size_t i = 0; i < data.labels.size(); ++i) {
    const double dist = distance(Norm::L2, sample(out.x_adv, i, MlpData::kFeatures), sample(data.x, i, MlpData::kFeatures));
    if (pred[i] == data.labels[i]) {
      EXPECT_EQ(dist, 0.0) << "a failure returns x itself";
    }
    for (float v : sample(out.x_adv, i, MlpData::kFeatures)) {
      EXPECT_GE(v, 0.0f);
      EXPECT_LE(v, 1.0f);
    }
  }
}

// ---------------------------------------------------------------- targeted

TEST(WhiteboxAttacks, TargetedGradientAttacksReachTheTarget) {
  MulticlassLinear lin(12, 5, 51);
  const std::size_t d = 12;
  const auto x = central_points(20, d, 52, 0.05f);
  const auto labels = predictions(lin.model, x);
  const auto targets = shifted_targets(labels, 1, 5);
  const float eps = 0.25f;
  const Bounds bounds{0.0f, 1.0f};

  aegis::attacks::PgdOptions pgd;
  pgd.steps = 30;
  aegis::attacks::ApgdOptions apgd_ce;
  apgd_ce.steps = 30;
  aegis::attacks::ApgdOptions apgd_dlr = apgd_ce;
  apgd_dlr.loss = aegis::attacks::ApgdLoss::Dlr;
  std::vector<std::unique_ptr<aegis::attacks::EvasionAttack>> attacks;
  attacks.push_back(aegis::attacks::make_pgd(pgd));
  attacks.push_back(aegis::attacks::make_apgd(apgd_ce));
  attacks.push_back(aegis::attacks::make_apgd(apgd_dlr));
  for (auto& attack : attacks) {
    ASSERT_TRUE(attack->supports_targeted());
    const auto out = attack->run(lin.model, {x, labels, targets}, eps, bounds);
    expect_within_budget(out, x, d, Norm::Linf, eps, bounds);
    const auto pred = predictions(lin.model, out.x_adv);
    for (std::size_t i = 0; i < 20; ++i) EXPECT_EQ(pred[i], targets[i]) << attack->name() << " sample " << i;
  }
}

// ---------------------------------------------------------------- validation

TEST(WhiteboxAttacks, BadBudgetsAreRefusedWithAHint) {
  BinaryLinear lin(8, 61);
  const auto x = central_points(2, 8, 62);
  const std::vector<int> labels{lin.label(sample(x, 0, 8)), lin.label(sample(x, 1, 8))};
  std::vector<std::unique_ptr<aegis::attacks::EvasionAttack>> attacks;
  attacks.push_back(aegis::attacks::make_fgsm({}));
  attacks.push_back(aegis::attacks::make_pgd({}));
  attacks.push_back(aegis::attacks::make_apgd({}));
  for (auto& attack : attacks) {
    for (float eps : {0.0f, -0.1f, std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity()})
      EXPECT_THROW(attack->run(lin.model, {x, labels, {}}, eps, {0.0f, 1.0f}), aegis::core::Error)
          << attack->name() << " eps " << eps;
    try {
      attack->run(lin.model, {x, labels, {}}, 8.0f, {0.0f, 1.0f});
      ADD_FAILURE() << attack->name() << " accepted an Linf eps wider than the value range";
    } catch (const aegis::core::Error& e) {
      EXPECT_NE(std::string(e.what()).find("wider than"), std::string::npos) << e.what();
      EXPECT_FALSE(e.hint().empty());
    }
  }
  // An L2 budget of 8 on [0, 1] is legitimate (the diagonal of a large input is longer).
  aegis::attacks::PgdOptions l2;
  l2.norm = Norm::L2;
  l2.steps = 2;
  EXPECT_NO_THROW(aegis::attacks::make_pgd(l2)->run(lin.model, {x, labels, {}}, 8.0f, {0.0f, 1.0f}));
}

TEST(WhiteboxAttacks, BlackBoxModelsAreRefused) {
  BinaryLinear lin(8, 63);
  BlackBox remote(lin.model);
  const Bounds bounds{0.0f, 1.0f};
  std::vector<std::unique_ptr<aegis::attacks::EvasionAttack>> attacks;
  attacks.push_back(aegis::attacks::make_fgsm({}));
  attacks.push_back(aegis::attacks::make_pgd({}));
  attacks.push_back(aegis::attacks::make_apgd({}));
  attacks.push_back(aegis::attacks::make_carlini_wagner_l2({}));
  attacks.push_back(aegis::attacks::make_deepfool({}));
  for (auto& attack : attacks) {
    EXPECT_TRUE(attack->needs_gradients());
    try {
      attack->validate(remote.info(), bounds);
      ADD_FAILURE() << attack->name() << " accepted a black-box model";
    } catch (const aegis::core::Error& e) {
      EXPECT_NE(std::string(e.what()).find("black-box"), std::string::npos) << e.what();
      EXPECT_NE(e.hint().find("square"), std::string::npos) << e.hint();
    }
    EXPECT_NO_THROW(attack->validate(lin.model.info(), bounds)) << attack->name();
  }
}

TEST(WhiteboxAttacks, DlrNeedsLogitsAndThreeClasses) {
  BinaryLinear two(8, 64);
  aegis::attacks::ApgdOptions dlr;
  dlr.loss = aegis::attacks::ApgdLoss::Dlr;
  auto attack = aegis::attacks::make_apgd(dlr);
  EXPECT_EQ(attack->name(), "apgd-dlr");
  try {
    attack->validate(two.model.info(), {0.0f, 1.0f});
    ADD_FAILURE() << "DLR accepted a 2-class model";
  } catch (const aegis::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("3"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("apgd-ce"), std::string::npos) << e.hint();
  }
  MulticlassLinear three(8, 3, 65);
  EXPECT_NO_THROW(attack->validate(three.model.info(), {0.0f, 1.0f}));
  ClassifierInfo softmax = three.model.info();
  softmax.scores = ScoreKind::Probabilities;
  EXPECT_THROW(attack->validate(softmax, {0.0f, 1.0f}), aegis::core::Error);
  // The targeted DLR loss uses the four largest logits.
  const auto x = central_points(2, 8, 66, 0.1f);
  const auto labels = predictions(three.model, x);
  std::vector<int> targets{(labels[0] + 1) % 3, (labels[1] + 1) % 3};
  EXPECT_THROW(attack->run(three.model, {x, labels, targets}, 0.1f, {0.0f, 1.0f}), aegis::core::Error);
  EXPECT_NO_THROW(attack->run(three.model, {x, labels, {}}, 0.1f, {0.0f, 1.0f}));
}

TEST(WhiteboxAttacks, BadSettingsAndInputsAreRefused) {
  MulticlassLinear lin(8, 3, 67);
  const auto info = lin.model.info();
  const Bounds bounds{0.0f, 1.0f};
  aegis::attacks::PgdOptions pgd;
  pgd.steps = 0;
  EXPECT_THROW(aegis::attacks::make_pgd(pgd)->validate(info, bounds), aegis::core::Error);
  pgd = {};
  pgd.restarts = 0;
  EXPECT_THROW(aegis::attacks::make_pgd(pgd)->validate(info, bounds), aegis::core::Error);
  pgd = {};
  pgd.step_size = -0.01f;
  EXPECT_THROW(aegis::attacks::make_pgd(pgd)->validate(info, bounds), aegis::core::Error);
  aegis::attacks::ApgdOptions apgd;
  apgd.steps = 0;
  EXPECT_THROW(aegis::attacks::make_apgd(apgd)->validate(info, bounds), aegis::core::Error);
  apgd = {};
  apgd.rho = 1.5f;
  EXPECT_THROW(aegis::attacks::make_apgd(apgd)->validate(info, bounds), aegis::core::Error);
  aegis::attacks::CarliniWagnerOptions cw;
  cw.learning_rate = 0.0f;
  EXPECT_THROW(aegis::attacks::make_carlini_wagner_l2(cw)->validate(info, bounds), aegis::core::Error);
  cw = {};
  cw.confidence = -1.0f;
  EXPECT_THROW(aegis::attacks::make_carlini_wagner_l2(cw)->validate(info, bounds), aegis::core::Error);
  aegis::attacks::DeepFoolOptions deepfool;
  deepfool.candidate_classes = 1;
  EXPECT_THROW(aegis::attacks::make_deepfool(deepfool)->validate(info, bounds), aegis::core::Error);
  EXPECT_THROW(aegis::attacks::make_fgsm({})->validate(info, {1.0f, 0.0f}), aegis::core::Error);

  const auto x = central_points(2, 8, 68, 0.1f);
  const auto labels = predictions(lin.model, x);
  const std::vector<int> wrong_count{labels[0]};
  EXPECT_THROW(aegis::attacks::make_fgsm({})->run(lin.model, {x, wrong_count, {}}, 0.1f, bounds), aegis::core::Error);
  const std::vector<int> own_label_as_target = labels;
  EXPECT_THROW(aegis::attacks::make_pgd({})->run(lin.model, {x, labels, own_label_as_target}, 0.1f, bounds),
               aegis::core::Error);
  std::vector<float> outside = x;
  outside[3] = 1.5f;
  EXPECT_THROW(aegis::attacks::make_pgd({})->run(lin.model, {outside, labels, {}}, 0.1f, bounds), aegis::core::Error);
  const std::vector<int> targets{(labels[0] + 1) % 3, (labels[1] + 1) % 3};
  EXPECT_THROW(aegis::attacks::make_deepfool({})->run(lin.model, {x, labels, targets}, 0.0f, bounds),
               aegis::core::Error);
}
