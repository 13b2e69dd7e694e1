// Black-box evasion attacks (Square, HopSkipJump) and randomized-smoothing certificates, checked
// against linear models whose distances to the decision boundary have closed forms.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <vector>

#include "aegis/attacks/evasion.h"
#include "aegis/attacks/smoothing.h"
#include "aegis/core/error.h"
#include "aegis/models/classifier.h"
#include "aegis/models/linear_classifier.h"

namespace aegis::attacks {
namespace {

using models::LinearClassifier;

std::vector<float> gaussian_vector(std::size_t size, std::uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  std::vector<float> v(size);
  for (float& x : v) x = normal(rng);
  return v;
}

// Two classes: score_1 - score_0 = w . x + b with b chosen so that the boundary passes through the
// centre of the cube (0.5, ..., 0.5).
struct BinaryLinear {
  std::vector<float> w;
  double b = 0;
  LinearClassifier model;

  BinaryLinear(std::vector<std::int64_t> shape, std::size_t d, std::uint64_t seed)
      : w(gaussian_vector(d, seed)), b(-0.5 * std::accumulate(w.begin(), w.end(), 0.0)), model(make(shape, w, b)) {}

  static LinearClassifier make(std::vector<std::int64_t> shape, const std::vector<float>& w, double b) {
    std::vector<float> weights(2 * w.size(), 0.0f);
    std::copy(w.begin(), w.end(), weights.begin() + static_cast<std::ptrdiff_t>(w.size()));
    return LinearClassifier(std::move(shape), 2, weights, {0.0f, static_cast<float>(b)});
  }

  double margin(std::span<const float> x) const {
    double m = b;
    for (std::size_t j = 0; j < w.size(); ++j) m += static_cast<double>(w[j]) * x[j];
    return m;
  }
  double dual_norm(Norm norm) const {  // ||w||_1 for Linf distances, ||w||_2 for L2
    double s = 0;
    for (float v : w) s += norm == Norm::Linf ? std::fabs(v) : static_cast<double>(v) * v;
    return norm == Norm::Linf ? s : std::sqrt(s);
  }
  // Exact distance in `norm` from x to the boundary (the box [0, 1] does not bind for our points).
  double distance(Norm norm, std::span<const float> x) const { return std::fabs(margin(x)) / dual_norm(norm); }
  int label(std::span<const float> x) const { return margin(x) > 0 ? 1 : 0; }

  // A point near the cube's centre whose distance to the boundary in `norm` is `dist`, on `side`.
  std::vector<float> point_at(Norm norm, double dist, int side, std::mt19937_64& rng) const {
    std::uniform_real_distribution<float> jitter(-0.1f, 0.1f);
    std::vector<float> x(w.size());
    for (float& v : x) v = 0.5f + jitter(rng);
    const double shift = ((side > 0 ? dist : -dist) * dual_norm(norm) - margin(x)) / dual_norm(norm);
    const double l2 = dual_norm(Norm::L2);
    for (std::size_t j = 0; j < x.size(); ++j) {
      const double direction = norm == Norm::Linf ? (w[j] > 0 ? 1.0 : -1.0) : w[j] / l2;
      x[j] = static_cast<float>(x[j] + shift * direction);
    }
    return x;
  }
};

// A black-box nonlinear model: a 2-layer ReLU network with fixed seeded weights, scores only.
class TinyMlp : public models::Classifier {
 public:
  TinyMlp(std::size_t features, int classes, std::uint64_t seed)
      : hidden_(16), w1_(gaussian_vector(hidden_ * features, seed, 3.0f / std::sqrt(static_cast<float>(features)))),
        b1_(gaussian_vector(hidden_, seed + 1, 0.5f)),
        w2_(gaussian_vector(static_cast<std::size_t>(classes) * hidden_, seed + 2, 1.0f)) {
    info_.input_shape = {static_cast<std::int64_t>(features)};
    info_.num_classes = classes;
    info_.backend = "test-mlp";
    info_.source = "seeded";
  }
  const models::ClassifierInfo& info() const override { return info_; }

 protected:
  void do_predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) override {
    const std::size_t d = sample_size(), k = static_cast<std::size_t>(num_classes());
    std::vector<float> h(hidden_);
    for (std::size_t i = 0; i < n; ++i) {
      for (std::size_t u = 0; u < hidden_; ++u) {
        double s = b1_[u];
        for (std::size_t j = 0; j < d; ++j) s += static_cast<double>(w1_[u * d + j]) * (inputs[i * d + j] - 0.5f);
        h[u] = static_cast<float>(std::max(s, 0.0));
      }
      for (std::size_t c = 0; c < k; ++c) {
        double s = 0;
        for (std::size_t u = 0; u < hidden_; ++u) s += static_cast<double>(w2_[c * hidden_ + u]) * h[u];
        scores[i * k + c] = static_cast<float>(s);
      }
    }
  }

 private:
  models::ClassifierInfo info_;
  std::size_t hidden_;
  std::vector<float> w1_, b1_, w2_;
};

// Any model seen through softmax: probabilities out, no gradients.
class ProbabilitiesOf : public models::Classifier {
 public:
  explicit ProbabilitiesOf(models::Classifier& inner) : inner_(inner), info_(inner.info()) {
    info_.scores = models::ScoreKind::Probabilities;
    info_.has_gradients = false;
  }
  const models::ClassifierInfo& info() const override { return info_; }

 protected:
  void do_predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) override {
    const std::size_t k = static_cast<std::size_t>(num_classes());
    std::vector<float> logits(n * k);
    inner_.predict(inputs, logits);
    for (std::size_t i = 0; i < n; ++i)
      models::to_probabilities(models::ScoreKind::Logits, std::span<const float>(logits).subspan(i * k, k),
                               scores.subspan(i * k, k));
  }

 private:
  models::Classifier& inner_;
  models::ClassifierInfo info_;
};

std::vector<int> predictions(models::Classifier& model, std::span<const float> x) {
  const std::size_t d = model.sample_size(), k = static_cast<std::size_t>(model.num_classes());
  std::vector<float> scores(x.size() / d * k);
  model.predict(x, scores);
  std::vector<int> out;
  for (std::size_t i = 0; i < x.size() / d; ++i)
    out.push_back(models::argmax(std::span<const float>(scores).subspan(i * k, k)));
  return out;
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

// Budget, value range, query accounting: what every run of a budgeted black-box attack must keep.
void expect_within_budget(const AttackOutcome& out, std::span<const float> x, std::size_t d, Norm norm, float eps,
                          const Bounds& bounds, int max_queries, std::uint64_t model_queries) {
  ASSERT_EQ(out.x_adv.size(), x.size());
  const std::size_t n = x.size() / d;
  ASSERT_EQ(out.queries.size(), n);
  for (std::size_t i = 0; i < n; ++i) {
    const auto xi = x.subspan(i * d, d);
    const auto ai = std::span<const float>(out.x_adv).subspan(i * d, d);
    EXPECT_LE(distance(norm, ai, xi), eps * (1 + 1e-5)) << "sample " << i;
    for (float v : ai) {
      EXPECT_GE(v, bounds.lo);
      EXPECT_LE(v, bounds.hi);
    }
    EXPECT_GE(out.queries[i], 1u);
    EXPECT_LE(out.queries[i], static_cast<std::uint64_t>(max_queries));
  }
  EXPECT_EQ(std::accumulate(out.queries.begin(), out.queries.end(), std::uint64_t{0}), model_queries)
      << "per-sample counts must add up to what the model was asked";
}

// Square against a linear model: points at half the budget's distance are broken, points at 1.5x
// the budget cannot be and are not.
void square_on_linear(Norm norm, float eps, double near_factor, std::vector<std::int64_t> shape = {1, 8, 8}) {
  const std::size_t d = static_cast<std::size_t>(
      std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<std::int64_t>()));
  BinaryLinear lin(shape, d, 7);
  std::mt19937_64 rng(11);
  std::vector<float> x;
  std::vector<int> labels;
  const int near = 12, far = 6;
  for (int i = 0; i < near + far; ++i) {
    const double dist = (i < near ? near_factor : 1.5) * eps;
    const auto p = lin.point_at(norm, dist, i % 2 ? 1 : -1, rng);
    ASSERT_NEAR(lin.distance(norm, p), dist, 1e-4 * dist);
    x.insert(x.end(), p.begin(), p.end());
    labels.push_back(lin.label(p));
  }
  SquareOptions options;
  options.norm = norm;
  options.max_queries = 1000;
  options.p_init = norm == Norm::Linf ? 0.8f : 0.1f;
  options.seed = 3;
  auto attack = make_square(options);
  EXPECT_EQ(attack->kind(), AttackKind::Budgeted);
  EXPECT_FALSE(attack->needs_gradients());
  const Bounds bounds{0.0f, 1.0f};
  lin.model.reset_queries();
  const AttackOutcome out = attack->run(lin.model, {x, labels, {}}, eps, bounds);
  expect_within_budget(out, x, d, norm, eps, bounds, options.max_queries, lin.model.queries());
  EXPECT_EQ(lin.model.gradient_queries(), 0u);

  const auto predicted = predictions(lin.model, out.x_adv);
  int fooled_near = 0;
  for (int i = 0; i < near + far; ++i) {
    if (i < near) {
      fooled_near += predicted[i] != labels[i];
      // A sample stops at its first success: the budget left over is not spent.
      if (predicted[i] != labels[i]) {
        EXPECT_LT(out.queries[i], static_cast<std::uint64_t>(options.max_queries));
      }
    } else {
      EXPECT_EQ(predicted[i], labels[i]) << "sample " << i << " is farther than eps from the boundary";
      EXPECT_EQ(out.queries[i], static_cast<std::uint64_t>(options.max_queries));
    }
  }
  EXPECT_GE(fooled_near, near - 1);
}

TEST(BlackboxAttacks, SquareLinfBreaksWhatIsWithinEpsAndNothingElse) { square_on_linear(Norm::Linf, 0.1f, 0.5); }

TEST(BlackboxAttacks, SquareL2BreaksWhatIsWithinEpsAndNothingElse) { square_on_linear(Norm::L2, 1.0f, 0.5); }

TEST(BlackboxAttacks, SquareHandlesImageLayouts) {
  // Colour images channels-first and channels-last, flat vectors and a column: windows must stay
  // inside the sample whatever its shape.
  // (On random linear weights, which have no spatial structure, the L2 windows need more queries
  // than on images: the near points there sit at 0.3 eps.)
  for (const auto& shape : std::vector<std::vector<std::int64_t>>{{3, 8, 8}, {8, 8, 3}, {2, 96}, {48, 1}, {12}}) {
    SCOPED_TRACE(::testing::PrintToString(shape));
    const double d = static_cast<double>(
        std::accumulate(shape.begin(), shape.end(), std::int64_t{1}, std::multiplies<std::int64_t>()));
    square_on_linear(Norm::Linf, 0.1f, 0.5, shape);
    square_on_linear(Norm::L2, static_cast<float>(std::min(1.0, std::sqrt(d / 64))), 0.3, shape);
  }
}

TEST(BlackboxAttacks, SquareTargetedReachesTheTarget) {
  const std::size_t d = 64;
  const int classes = 4;
  LinearClassifier model({1, 8, 8}, classes, gaussian_vector(classes * d, 21), std::vector<float>(classes, 0.0f));
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<float> near_centre(0.4f, 0.6f);
  std::vector<float> x(8 * d);
  for (float& v : x) v = near_centre(rng);
  const auto labels = predictions(model, x);
  std::vector<int> targets;
  for (int label : labels) targets.push_back((label + 1 + static_cast<int>(targets.size()) % (classes - 1)) % classes);
  for (Norm norm : {Norm::Linf, Norm::L2}) {
    SquareOptions options;
    options.norm = norm;
    options.max_queries = 2000;
    options.p_init = norm == Norm::Linf ? 0.8f : 0.1f;
    const float eps = norm == Norm::Linf ? 0.3f : 2.5f;
    model.reset_queries();
    const AttackOutcome out = make_square(options)->run(model, {x, labels, targets}, eps, {0.0f, 1.0f});
    expect_within_budget(out, x, d, norm, eps, {0.0f, 1.0f}, options.max_queries, model.queries());
    EXPECT_EQ(predictions(model, out.x_adv), targets) << to_string(norm);
  }
}

TEST(BlackboxAttacks, SquareOnBlackBoxModelWithProbabilities) {
  // A nonlinear model with no gradients, returning probabilities, and inputs at the range's edges.
  TinyMlp mlp(20, 3, 31);
  ProbabilitiesOf model(mlp);
  std::mt19937_64 rng(8);
  std::bernoulli_distribution edge(0.3);
  std::uniform_real_distribution<float> inside(0.0f, 1.0f);
  std::vector<float> x(10 * 20);
  for (float& v : x) v = edge(rng) ? (inside(rng) < 0.5f ? 0.0f : 1.0f) : inside(rng);
  const auto labels = predictions(model, x);
  model.reset_queries();
  for (Norm norm : {Norm::Linf, Norm::L2}) {
    SquareOptions options;
    options.norm = norm;
    options.max_queries = 300;
    const float eps = norm == Norm::Linf ? 0.2f : 1.0f;
    auto attack = make_square(options);
    EXPECT_NO_THROW(attack->validate(model.info(), {0.0f, 1.0f}));
    model.reset_queries();
    const AttackOutcome out = attack->run(model, {x, labels, {}}, eps, {0.0f, 1.0f});
    expect_within_budget(out, x, 20, norm, eps, {0.0f, 1.0f}, options.max_queries, model.queries());
    // Same seed, same result.
    const AttackOutcome again = make_square(options)->run(model, {x, labels, {}}, eps, {0.0f, 1.0f});
    EXPECT_EQ(again.x_adv, out.x_adv);
    EXPECT_EQ(again.queries, out.queries);
  }
}

TEST(BlackboxAttacks, SquareRejectsWhatItCannotDo) {
  auto attack = make_square({});
  models::ClassifierInfo one_class;
  one_class.input_shape = {4};
  one_class.num_classes = 1;
  EXPECT_THROW(attack->validate(one_class, {0.0f, 1.0f}), core::Error);
  BinaryLinear lin({8}, 8, 1);
  EXPECT_THROW(attack->validate(lin.model.info(), {1.0f, 0.0f}), core::Error);
  std::vector<float> x(8, 0.5f);
  std::vector<int> labels{lin.label(x)};
  for (float eps : {0.0f, -0.1f, NAN, INFINITY})
    EXPECT_THROW(attack->run(lin.model, {x, labels, {}}, eps, {0.0f, 1.0f}), core::Error) << eps;
  SquareOptions no_queries;
  no_queries.max_queries = 0;
  EXPECT_THROW(make_square(no_queries)->validate(lin.model.info(), {0.0f, 1.0f}), core::Error);
  for (float p : {0.0f, 1.5f}) {
    SquareOptions bad_p;
    bad_p.p_init = p;
    EXPECT_THROW(make_square(bad_p)->validate(lin.model.info(), {0.0f, 1.0f}), core::Error);
  }
  std::vector<float> outside(8, 1.5f);
  EXPECT_THROW(attack->run(lin.model, {outside, labels, {}}, 0.1f, {0.0f, 1.0f}), core::Error);
  std::vector<int> wrong_label{2};
  EXPECT_THROW(attack->run(lin.model, {x, wrong_label, {}}, 0.1f, {0.0f, 1.0f}), core::Error);
  std::vector<int> own_target{labels[0]};
  EXPECT_THROW(attack->run(lin.model, {x, labels, own_target}, 0.1f, {0.0f, 1.0f}), core::Error);
  EXPECT_EQ(lin.model.queries(), 0u) << "rejected runs must not query the model";
}

TEST(BlackboxAttacks, HopSkipJumpFindsTheClosedFormDistance) {
  // For score_1 - score_0 = w . x + b the closest adversarial point is at |margin| / ||w||_2.
  const std::size_t d = 50;
  BinaryLinear lin({static_cast<std::int64_t>(d)}, d, 17);
  ProbabilitiesOf model(lin.model);  // decisions only: probabilities must work as well as logits
  std::mt19937_64 rng(2);
  std::vector<float> x;
  std::vector<int> labels;
  std::vector<double> closed_form;
  for (int i = 0; i < 4; ++i) {
    const auto p = lin.point_at(Norm::L2, 0.2 + 0.1 * i, i % 2 ? 1 : -1, rng);
    x.insert(x.end(), p.begin(), p.end());
    labels.push_back(lin.label(p));
    closed_form.push_back(lin.distance(Norm::L2, p));
  }
  HopSkipJumpOptions options;
  options.norm = Norm::L2;
  options.max_queries = 3000;
  options.seed = 4;
  auto attack = make_hop_skip_jump(options);
  EXPECT_EQ(attack->kind(), AttackKind::MinimalNorm);
  EXPECT_FALSE(attack->needs_gradients());
  model.reset_queries();
  lin.model.reset_queries();
  const AttackOutcome out = attack->run(model, {x, labels, {}}, 0.0f, {0.0f, 1.0f});
  EXPECT_EQ(lin.model.gradient_queries(), 0u);
  const auto predicted = predictions(lin.model, out.x_adv);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    EXPECT_NE(predicted[i], labels[i]) << "sample " << i;
    const double reached = distance(Norm::L2, std::span<const float>(out.x_adv).subspan(i * d, d),
                                    std::span<const float>(x).subspan(i * d, d));
    EXPECT_GE(reached, closed_form[i] * (1 - 1e-4)) << "no adversarial point is closer than the closed form";
    EXPECT_LE(reached, closed_form[i] * 1.10) << "sample " << i << " closed form " << closed_form[i];
    EXPECT_LE(out.queries[i], static_cast<std::uint64_t>(options.max_queries));
    EXPECT_GT(out.queries[i], static_cast<std::uint64_t>(options.max_queries) / 2) << "the budget is meant to be used";
  }
  EXPECT_EQ(std::accumulate(out.queries.begin(), out.queries.end(), std::uint64_t{0}), model.queries());
}

TEST(BlackboxAttacks, HopSkipJumpLinfApproachesTheClosedFormDistance) {
  // In Linf the closest adversarial point is at |margin| / ||w||_1.
  const std::size_t d = 20;
  BinaryLinear lin({static_cast<std::int64_t>(d)}, d, 23);
  std::mt19937_64 rng(3);
  std::vector<float> x;
  std::vector<int> labels;
  std::vector<double> closed_form;
  for (int i = 0; i < 3; ++i) {
    const auto p = lin.point_at(Norm::Linf, 0.1, i % 2 ? 1 : -1, rng);
    x.insert(x.end(), p.begin(), p.end());
    labels.push_back(lin.label(p));
    closed_form.push_back(lin.distance(Norm::Linf, p));
  }
  HopSkipJumpOptions options;
  options.norm = Norm::Linf;
  options.max_queries = 3000;
  lin.model.reset_queries();
  const AttackOutcome out = make_hop_skip_jump(options)->run(lin.model, {x, labels, {}}, 0.0f, {0.0f, 1.0f});
  const auto predicted = predictions(lin.model, out.x_adv);
  for (std::size_t i = 0; i < labels.size(); ++i) {
    EXPECT_NE(predicted[i], labels[i]);
    const double reached = distance(Norm::Linf, std::span<const float>(out.x_adv).subspan(i * d, d),
                                    std::span<const float>(x).subspan(i * d, d));
    EXPECT_GE(reached, closed_form[i] * (1 - 1e-4));
    EXPECT_LE(reached, closed_form[i] * 1.2) << "sample " << i << " closed form " << closed_form[i];
    EXPECT_LE(out.queries[i], static_cast<std::uint64_t>(options.max_queries));
  }
}

TEST(BlackboxAttacks, HopSkipJumpTargeted) {
  const std::size_t d = 30;
  const int classes = 3;
  const std::vector<float> weights = gaussian_vector(classes * d, 41);
  // Classes 0 and 1 split the cube through its centre; class 2 never wins, so no start of it exists.
  double centre_gap = 0;
  for (std::size_t j = 0; j < d; ++j) centre_gap += 0.5 * (weights[d + j] - weights[j]);
  std::vector<float> bias{0.0f, static_cast<float>(-centre_gap), -1000.0f};
  LinearClassifier model({static_cast<std::int64_t>(d)}, classes, weights, bias);
  std::mt19937_64 rng(6);
  std::uniform_real_distribution<float> uniform(0.3f, 0.7f);
  std::vector<float> x(4 * d);
  for (float& v : x) v = uniform(rng);
  const auto labels = predictions(model, x);
  std::vector<int> reachable, unreachable;
  for (int label : labels) {
    reachable.push_back(label == 0 ? 1 : 0);
    unreachable.push_back(2);
  }
  HopSkipJumpOptions options;
  options.max_queries = 1500;
  options.init_size = 50;
  auto attack = make_hop_skip_jump(options);

  model.reset_queries();
  const AttackOutcome out = attack->run(model, {x, labels, reachable}, 0.0f, {0.0f, 1.0f});
  EXPECT_EQ(std::accumulate(out.queries.begin(), out.queries.end(), std::uint64_t{0}), model.queries());
  for (auto q : out.queries) EXPECT_LE(q, static_cast<std::uint64_t>(options.max_queries));
  EXPECT_EQ(predictions(model, out.x_adv), reachable);

  // No start of the target class within init_size tries: the sample is returned unchanged, and
  // only the tries were spent.
  const AttackOutcome failed = attack->run(model, {x, labels, unreachable}, 0.0f, {0.0f, 1.0f});
  EXPECT_EQ(failed.x_adv, x);
  for (auto q : failed.queries) EXPECT_EQ(q, static_cast<std::uint64_t>(options.init_size));
}

TEST(BlackboxAttacks, HopSkipJumpOnNonlinearModelAndTinyBudgets) {
  TinyMlp model(16, 3, 5);
  std::mt19937_64 rng(9);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> x(6 * 16);
  for (float& v : x) v = uniform(rng);
  const auto labels = predictions(model, x);
  for (int budget : {1, 7, 40, 600}) {
    for (Norm norm : {Norm::L2, Norm::Linf}) {
      HopSkipJumpOptions options;
      options.norm = norm;
      options.max_queries = budget;
      options.initial_evals = 20;
      model.reset_queries();
      const AttackOutcome out = make_hop_skip_jump(options)->run(model, {x, labels, {}}, 0.0f, {0.0f, 1.0f});
      EXPECT_EQ(std::accumulate(out.queries.begin(), out.queries.end(), std::uint64_t{0}), model.queries());
      const auto predicted = predictions(model, out.x_adv);
      for (std::size_t i = 0; i < labels.size(); ++i) {
        EXPECT_LE(out.queries[i], static_cast<std::uint64_t>(budget));
        const auto ai = std::span<const float>(out.x_adv).subspan(i * 16, 16);
        for (float v : ai) {
          EXPECT_GE(v, 0.0f);
          EXPECT_LE(v, 1.0f);
        }
        // Either the sample came back unchanged (nothing found) or what came back is adversarial.
        if (!std::equal(ai.begin(), ai.end(), x.begin() + static_cast<std::ptrdiff_t>(i * 16))) {
          EXPECT_NE(predicted[i], labels[i]) << "budget " << budget << " sample " << i;
        }
      }
    }
  }
}

TEST(BlackboxAttacks, HopSkipJumpRejectsBadSettings) {
  BinaryLinear lin({8}, 8, 1);
  const Bounds bounds{0.0f, 1.0f};
  auto expect_rejected = [&](HopSkipJumpOptions options) {
    EXPECT_THROW(make_hop_skip_jump(options)->validate(lin.model.info(), bounds), core::Error);
  };
  HopSkipJumpOptions o;
  o.max_queries = 0;
  expect_rejected(o);
  o = {};
  o.initial_evals = 0;
  expect_rejected(o);
  o = {};
  o.max_evals = 10;  // below initial_evals = 100
  expect_rejected(o);
  o = {};
  o.init_size = 0;
  expect_rejected(o);
  o = {};
  o.max_iterations = -1;
  expect_rejected(o);
  std::vector<float> x(16, 0.5f);
  std::vector<int> labels{0, 1};
  std::vector<int> one_target{1};
  std::vector<int> own_targets{0, 1};
  auto attack = make_hop_skip_jump({});
  EXPECT_THROW(attack->run(lin.model, {x, labels, one_target}, 0.0f, bounds), core::Error);
  EXPECT_THROW(attack->run(lin.model, {x, labels, own_targets}, 0.0f, bounds), core::Error);
  std::vector<float> short_x(15, 0.5f);
  EXPECT_THROW(attack->run(lin.model, {short_x, labels, {}}, 0.0f, bounds), core::Error);
}

// ---- randomized smoothing ----

TEST(RandomizedSmoothing, ClopperPearsonLowerBound) {
  // k = n: the bound solves p^n = alpha.
  EXPECT_NEAR(clopper_pearson_lower(100, 100, 0.001), std::pow(0.001, 1.0 / 100), 1e-12);
  EXPECT_NEAR(clopper_pearson_lower(100, 100, 0.001), 0.93325430079699104, 1e-12);
  // References computed independently with mpmath 1.3.0 at 40 digits, by bisection on the binomial
  // tail P(Binomial(n, p) >= k) = alpha summed term by term (not through the beta function).
  EXPECT_NEAR(clopper_pearson_lower(50, 100, 0.001), 0.34479800642531776, 1e-10);
  EXPECT_NEAR(clopper_pearson_lower(990, 1000, 0.001), 0.97603618715531137, 1e-10);
  EXPECT_NEAR(clopper_pearson_lower(1, 10, 0.05), 0.0051161968918237014, 1e-10);
  EXPECT_NEAR(clopper_pearson_lower(7, 20, 0.01), 0.12917878429650656, 1e-10);
  EXPECT_EQ(clopper_pearson_lower(0, 100, 0.001), 0.0);
  EXPECT_THROW(clopper_pearson_lower(5, 3, 0.01), core::Error);
  EXPECT_THROW(clopper_pearson_lower(1, 3, 0.0), core::Error);
  EXPECT_THROW(clopper_pearson_lower(1, 3, 1.0), core::Error);
}

TEST(RandomizedSmoothing, LinearModelRadiiMatchTheExactDistance) {
  // For a linear f the smoothed classifier equals f and its exact certified radius is the distance
  // to the boundary, |margin| / ||w||_2. Cohen's certificate must not exceed it and, with n = 10000,
  // come within 20% of it at moderate distances.
  const std::size_t d = 10;
  BinaryLinear lin({static_cast<std::int64_t>(d)}, d, 13);
  std::mt19937_64 rng(1);
  SmoothingOptions options;
  options.sigma = 0.25f;
  options.n = 10000;
  options.seed = 99;
  const double sigma = options.sigma;
  const std::vector<double> factors{0.5, 1.0, 2.0};  // distances in units of sigma
  std::vector<float> x;
  std::vector<int> labels;
  std::vector<double> exact;
  for (std::size_t i = 0; i < factors.size(); ++i) {
    const auto p = lin.point_at(Norm::L2, factors[i] * sigma, i % 2 ? 1 : -1, rng);
    x.insert(x.end(), p.begin(), p.end());
    labels.push_back(lin.label(p));
    exact.push_back(lin.distance(Norm::L2, p));
  }
  std::vector<std::size_t> progress;
  lin.model.reset_queries();
  const auto certificates = certify(lin.model, x, options, [&](std::size_t done) { progress.push_back(done); });
  ASSERT_EQ(certificates.size(), factors.size());
  EXPECT_EQ(progress, (std::vector<std::size_t>{1, 2, 3}));
  EXPECT_EQ(lin.model.queries(), factors.size() * static_cast<std::uint64_t>(options.n0 + options.n));
  for (std::size_t i = 0; i < certificates.size(); ++i) {
    const Certificate& c = certificates[i];
    EXPECT_EQ(c.predicted, labels[i]);
    EXPECT_LE(c.radius, exact[i]) << "sample " << i;
    EXPECT_GE(c.radius, 0.8 * exact[i]) << "sample " << i;
    EXPECT_NEAR(c.p_lower, clopper_pearson_lower(c.count_top, options.n, options.alpha), 1e-15);
  }
}

TEST(RandomizedSmoothing, FarPointsGetTheLargestRadiusAndNearOnesAbstain) {
  const std::size_t d = 10;
  BinaryLinear lin({static_cast<std::int64_t>(d)}, d, 13);
  std::mt19937_64 rng(2);
  SmoothingOptions options;
  options.sigma = 0.25f;
  options.n = 10000;
  const auto far = lin.point_at(Norm::L2, 8 * options.sigma, 1, rng);
  const auto near = lin.point_at(Norm::L2, 0.01 * options.sigma, -1, rng);
  std::vector<float> x(far);
  x.insert(x.end(), near.begin(), near.end());
  const auto certificates = certify(lin.model, x, options);
  // Every vote for the label: p_lower = alpha^(1/n) and the radius is sigma * Phi^{-1}(alpha^(1/n)),
  // Phi^{-1}(0.001^(1/10000)) = 3.19857751473833 (mpmath, 30 digits).
  EXPECT_EQ(certificates[0].predicted, lin.label(far));
  EXPECT_EQ(certificates[0].count_top, 10000u);
  EXPECT_NEAR(certificates[0].p_lower, std::pow(0.001, 1.0 / 10000), 1e-12);
  EXPECT_NEAR(certificates[0].radius, 0.25 * 3.19857751473833, 1e-9);
  const Certificate& close = certificates[1];
  EXPECT_TRUE(close.predicted == -1 || close.radius < 0.05 * options.sigma)
      << "predicted " << close.predicted << " radius " << close.radius;
  if (close.predicted == -1) {
    EXPECT_EQ(close.radius, 0.0);
  }

  const auto votes = predict_smoothed(lin.model, x, options);
  EXPECT_EQ(votes[0], lin.label(far));
  const auto on_boundary = lin.point_at(Norm::L2, 0.0, 1, rng);
  EXPECT_EQ(predict_smoothed(lin.model, on_boundary, options)[0], -1) << "a coin flip must abstain";
}

TEST(RandomizedSmoothing, DeterministicGivenTheSeedWhateverTheBatch) {
  TinyMlp model(12, 3, 77);
  std::mt19937_64 rng(4);
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  std::vector<float> x(5 * 12);
  for (float& v : x) v = uniform(rng);
  SmoothingOptions options;
  options.n = 500;
  options.seed = 12;
  const auto first = certify(model, x, options);
  options.batch = 7;
  const auto second = certify(model, x, options);
  // The first sample alone: its result depends on its index, not on its neighbours.
  const auto alone = certify(model, std::span<const float>(x).first(12), options);
  ASSERT_EQ(first.size(), second.size());
  for (std::size_t i = 0; i < first.size(); ++i) {
    EXPECT_EQ(first[i].predicted, second[i].predicted);
    EXPECT_EQ(first[i].count_top, second[i].count_top);
    EXPECT_EQ(first[i].radius, second[i].radius);
  }
  EXPECT_EQ(alone[0].count_top, first[0].count_top);
  EXPECT_EQ(alone[0].predicted, first[0].predicted);
}

TEST(RandomizedSmoothing, RejectsBadOptions) {
  BinaryLinear lin({4}, 4, 1);
  std::vector<float> x(4, 0.5f);
  auto rejected = [&](SmoothingOptions o) { EXPECT_THROW(certify(lin.model, x, o), core::Error); };
  SmoothingOptions o;
  o.sigma = 0.0f;
  rejected(o);
  o = {};
  o.sigma = NAN;
  rejected(o);
  o = {};
  o.n0 = 0;
  rejected(o);
  o = {};
  o.n = 0;
  rejected(o);
  for (double alpha : {0.0, 1.0, -0.5}) {
    o = {};
    o.alpha = alpha;
    rejected(o);
  }
  std::vector<float> ragged(5, 0.5f);
  EXPECT_THROW(certify(lin.model, ragged, {}), core::Error);
  EXPECT_EQ(lin.model.queries(), 0u);
}

}  // namespace
}  // namespace aegis::attacks
