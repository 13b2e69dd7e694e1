// Auto-PGD (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
// ensemble of diverse parameter-free attacks"): PGD with momentum whose step size starts at 2 eps
// and is halved at checkpoints when the loss stopped rising often enough or the best loss did not
// move, restarting from the best point. Losses: cross-entropy, or the Difference of Logits Ratio,
// which no rescaling of the logits can hide behind.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "aegis/attacks/evasion.h"
#include "aegis/attacks/evasion/vector_ops.h"
#include "aegis/core/error.h"

namespace aegis::attacks {
namespace {

constexpr float kMomentum = 0.75f;  // the paper's alpha: weight of the new step against the last one

// The iterations w_j = ceil(p_j * steps) at which the step size is reconsidered:
// p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06).
std::vector<int> checkpoints(int steps) {
  std::vector<int> result;
  double before = 0.0, p = 0.22;
  while (p <= 1.0) {
    const int w = static_cast<int>(std::ceil(p * steps - 1e-9));
    if (w >= 1 && w <= steps && (result.empty() || w > result.back())) result.push_back(w);
    const double next = p + std::max(p - before - 0.03, 0.06);
    before = p;
    p = next;
  }
  return result;
}

// What APGD keeps per sample still under attack. The samples are packed at the front of the arrays,
// so that each gradient call covers exactly the ones still robust; a sample found adversarial is
// dropped by moving the last one into its place.
struct SampleStates {
  std::size_t d = 0;
  std::vector<std::size_t> member;  // index of the sample within the block
  std::vector<int> label, target;
  std::vector<float> x0, cur, prev, grad, best, best_grad;  // d floats each
  std::vector<float> eta;                                    // step size
  std::vector<double> loss;       // of the current point, written by the gradient call
  std::vector<double> last_loss, best_loss, best_at_check;
  std::vector<int> increases;       // steps since the last checkpoint where the loss went up
  std::vector<char> reduced_at_check;

  SampleStates(std::size_t capacity, std::size_t features)
      : d(features),
        member(capacity),
        label(capacity),
        target(capacity),
        x0(capacity * features),
        cur(capacity * features),
        prev(capacity * features),
        grad(capacity * features),
        best(capacity * features),
        best_grad(capacity * features),
        eta(capacity),
        loss(capacity),
        last_loss(capacity),
        best_loss(capacity),
        best_at_check(capacity),
        increases(capacity),
        reduced_at_check(capacity) {}

  std::span<float> row(std::vector<float>& v, std::size_t s) { return std::span(v).subspan(s * d, d); }

  void move(std::size_t from, std::size_t to) {
    if (from == to) return;
    member[to] = member[from];
    label[to] = label[from];
    target[to] = target[from];
    for (auto* v : {&x0, &cur, &prev, &grad, &best, &best_grad})
      std::copy_n(v->begin() + static_cast<std::ptrdiff_t>(from * d), d, v->begin() + static_cast<std::ptrdiff_t>(to * d));
    eta[to] = eta[from];
    loss[to] = loss[from];
    last_loss[to] = last_loss[from];
    best_loss[to] = best_loss[from];
    best_at_check[to] = best_at_check[from];
    increases[to] = increases[from];
    reduced_at_check[to] = reduced_at_check[from];
  }
};

class AutoProjectedGradientDescent final : public EvasionAttack {
 public:
  explicit AutoProjectedGradientDescent(const ApgdOptions& options) : options_(options) {}

  std::string name() const override { return options_.loss == ApgdLoss::Dlr ? "apgd-dlr" : "apgd-ce"; }
  AttackKind kind() const override { return AttackKind::Budgeted; }
  Norm norm() const override { return options_.norm; }
  bool needs_gradients() const override { return true; }
  bool supports_targeted() const override { return true; }

  void validate(const models::ClassifierInfo& model, const Bounds& bounds) const override {
    EvasionAttack::validate(model, bounds);
    if (options_.steps < 1)
      throw core::Error(name() + ": steps is " + std::to_string(options_.steps) + "; it needs at least 1",
                        "give the number of iterations, for example 100 (the paper's setting)");
    if (options_.restarts < 1)
      throw core::Error(name() + ": restarts is " + std::to_string(options_.restarts) + "; it needs at least 1",
                        "use 1 for a single run from a random point; more restarts attack the still-robust samples again");
    if (!(options_.rho > 0.0f && options_.rho <= 1.0f))
      throw core::Error(name() + ": rho is " + std::to_string(options_.rho) +
                            "; it is the fraction of steps that must raise the loss and must lie in (0, 1]",
                        "use the paper's 0.75");
    if (options_.loss == ApgdLoss::Dlr) {
      if (model.num_classes < 3)
        throw core::Error("apgd-dlr: the DLR loss needs at least 3 classes (it divides by the gap between the largest "
                          "and the third-largest logit), and the model has " + std::to_string(model.num_classes),
                          "use the cross-entropy loss (apgd-ce) for models with fewer than 3 classes");
      if (model.scores != models::ScoreKind::Logits)
        throw core::Error("apgd-dlr: the DLR loss needs logits, and the " + model.backend + " model '" + model.source +
                              "' returns probabilities",
                          "export the model without its final softmax, or use the cross-entropy loss (apgd-ce)");
    }
  }

  AttackOutcome run(models::Classifier& model, const AttackInput& input, float eps, const Bounds& bounds) override {
    const std::size_t n = detail::check_budgeted_run(*this, model, input, eps, bounds);
    const bool targeted = !input.targets.empty();
    if (targeted && options_.loss == ApgdLoss::Dlr && model.num_classes() < 4)
      throw core::Error("apgd-dlr: the targeted DLR loss uses the four largest logits, and the model has only " +
                            std::to_string(model.num_classes()) + " classes",
                        "use the cross-entropy loss (apgd-ce) for a targeted attack on this model");
    const std::size_t d = model.sample_size();
    const std::size_t k = static_cast<std::size_t>(model.num_classes());
    const models::ScoreKind score_kind = model.info().scores;
    const std::vector<int> checks = checkpoints(options_.steps);
    std::mt19937_64 rng(options_.seed);

    AttackOutcome outcome;
    outcome.x_adv.assign(input.x.begin(), input.x.end());
    outcome.queries.assign(n, 0);

    const std::size_t batch = std::min(std::max<std::size_t>(model.preferred_batch(), 1), std::max<std::size_t>(n, 1));
    SampleStates st(batch, d);
    std::vector<float> scores(batch * k), scratch(d);
    std::vector<double> kept_loss(batch);
    std::vector<char> fooled(batch), drop(batch);
    std::size_t count = 0;

    // The loss of each sample comes out of the gradient call itself: no extra forward pass.
    const models::ScoreGradientFn objective = [&](std::span<const float> s, std::span<float> g) {
      for (std::size_t r = 0; r < count; ++r) {
        const auto row = s.subspan(r * k, k);
        const auto row_grad = g.subspan(r * k, k);
        if (options_.loss == ApgdLoss::CrossEntropy)
          st.loss[r] = detail::cross_entropy_objective(score_kind, row, st.label[r], st.target[r], row_grad);
        else if (st.target[r] < 0)
          st.loss[r] = detail::dlr_loss(row, st.label[r], row_grad);
        else
          st.loss[r] = detail::targeted_dlr_loss(row, st.label[r], st.target[r], row_grad);
      }
    };

    for (std::size_t start = 0; start < n; start += batch) {
      const std::size_t m = std::min(batch, n - start);
      std::fill(kept_loss.begin(), kept_loss.end(), -std::numeric_limits<double>::infinity());
      std::fill(fooled.begin(), fooled.end(), 0);

      for (int restart = 0; restart < options_.restarts; ++restart) {
        // Every restart starts from a random point of the ball, for the samples still robust.
        count = 0;
        for (std::size_t i = 0; i < m; ++i) {
          if (fooled[i]) continue;
          const std::size_t s = count++;
          const std::size_t idx = start + i;
          st.member[s] = i;
          st.label[s] = input.labels[idx];
          st.target[s] = targeted ? input.targets[idx] : -1;
          const std::span<const float> x = input.x.subspan(idx * d, d);
          std::copy(x.begin(), x.end(), st.row(st.x0, s).begin());
          const std::span<float> cur = st.row(st.cur, s);
          detail::random_in_ball(options_.norm, eps, rng, cur);
          for (std::size_t j = 0; j < d; ++j) cur[j] += x[j];
          detail::project(options_.norm, eps, bounds, x, cur);
          std::copy(cur.begin(), cur.end(), st.row(st.prev, s).begin());
          st.eta[s] = 2.0f * eps;
          st.increases[s] = 0;
          st.reduced_at_check[s] = 0;
        }
        if (count == 0) break;

        std::size_t next_check = 0;
        int last_check = 0;
        // Iteration t scores x_t (and takes the gradient for the next step) in one call.
        for (int t = 0; t <= options_.steps && count > 0; ++t) {
          if (t > 0)
            for (std::size_t s = 0; s < count; ++s) take_step(st, s, eps, bounds, t == 1, scratch);
          model.gradient(std::span<const float>(st.cur).first(count * d), objective,
                         std::span(st.grad).first(count * d), std::span(scores).first(count * k));

          for (std::size_t s = 0; s < count; ++s) {
            const std::size_t i = st.member[s];
            ++outcome.queries[start + i];
            drop[s] = 0;
            if (detail::is_adversarial(std::span<const float>(scores).subspan(s * k, k), st.label[s], st.target[s])) {
              const auto cur = st.row(st.cur, s);
              std::copy(cur.begin(), cur.end(), outcome.x_adv.begin() + static_cast<std::ptrdiff_t>((start + i) * d));
              fooled[i] = 1;
              drop[s] = 1;
              continue;
            }
            const double loss = st.loss[s];
            if (t == 0) {
              st.best_at_check[s] = loss;
            } else if (loss > st.last_loss[s]) {
              ++st.increases[s];
            }
            st.last_loss[s] = loss;
            if (t == 0 || loss > st.best_loss[s]) {
              st.best_loss[s] = loss;
              const auto cur = st.row(st.cur, s);
              const auto grad = st.row(st.grad, s);
              std::copy(cur.begin(), cur.end(), st.row(st.best, s).begin());
              std::copy(grad.begin(), grad.end(), st.row(st.best_grad, s).begin());
            }
          }

          if (next_check < checks.size() && t == checks[next_check]) {
            // Halve the step and go back to the best point when, since the last checkpoint, the
            // loss rose in fewer than rho of the steps, or neither the step nor the best loss moved.
            const double interval = t - last_check;
            for (std::size_t s = 0; s < count; ++s) {
              if (drop[s]) continue;
              const bool few_increases = st.increases[s] < options_.rho * interval;
              const bool stalled = !st.reduced_at_check[s] && st.best_loss[s] <= st.best_at_check[s];
              const bool reduce = few_increases || stalled;
              st.reduced_at_check[s] = reduce ? 1 : 0;
              st.best_at_check[s] = st.best_loss[s];
              st.increases[s] = 0;
              if (reduce) {
                st.eta[s] *= 0.5f;
                const auto best = st.row(st.best, s);
                const auto best_grad = st.row(st.best_grad, s);
                std::copy(best.begin(), best.end(), st.row(st.cur, s).begin());
                std::copy(best_grad.begin(), best_grad.end(), st.row(st.grad, s).begin());
                st.last_loss[s] = st.best_loss[s];
              }
            }
            last_check = t;
            ++next_check;
          }

          std::size_t kept = 0;
          for (std::size_t s = 0; s < count; ++s)
            if (!drop[s]) st.move(s, kept++);
          count = kept;
        }

        // Still robust: keep the point of highest loss over all restarts.
        for (std::size_t s = 0; s < count; ++s) {
          const std::size_t i = st.member[s];
          if (!(st.best_loss[s] > kept_loss[i])) continue;
          kept_loss[i] = st.best_loss[s];
          const auto best = st.row(st.best, s);
          std::copy(best.begin(), best.end(), outcome.x_adv.begin() + static_cast<std::ptrdiff_t>((start + i) * d));
        }
      }
    }
    return outcome;
  }

 private:
  // z = P(x_t + eta * direction), x_{t+1} = P(x_t + a (z - x_t) + (1 - a)(x_t - x_{t-1})), with
  // a = 1 on the first step (no history yet) and the momentum constant afterwards. P is project():
  // Linf clamps to the box where the eps ball meets the value range; L2 rescales into the ball and
  // then clips, as AutoAttack does. Written as few passes over the sample as the norm allows.
  void take_step(SampleStates& st, std::size_t s, float eps, const Bounds& bounds, bool first,
                 std::vector<float>& z) const {
    const std::span<const float> x = st.row(st.x0, s);
    const std::span<float> cur = st.row(st.cur, s);
    const std::span<float> prev = st.row(st.prev, s);
    const std::span<const float> g = st.row(st.grad, s);
    const std::size_t d = x.size();
    const float eta = st.eta[s];
    const float a = first ? 1.0f : kMomentum;
    const float b = 1.0f - a;
    const float lo = bounds.lo, hi = bounds.hi;
    if (options_.norm == Norm::Linf) {
      for (std::size_t j = 0; j < d; ++j) {
        const float low = std::max(x[j] - eps, lo), high = std::min(x[j] + eps, hi);
        const float c = cur[j];
        const float step = std::min(std::max(c + eta * detail::sign_of(g[j]), low), high);
        const float next = std::min(std::max(c + a * (step - c) + b * (c - prev[j]), low), high);
        prev[j] = c;
        cur[j] = next;
      }
      return;
    }
    // g / ||g|| without AutoAttack's + 1e-12: with saturated softmax outputs the gradient can be
    // that small, and the step would vanish with it.
    const double length = detail::direction_length(g);
    const double unit = length > 0 ? eta / length : 0.0;
    if (unit < std::numeric_limits<float>::max()) {
      const auto unit_f = static_cast<float>(unit);
      for (std::size_t j = 0; j < d; ++j) z[j] = cur[j] + unit_f * g[j] - x[j];
    } else {  // 1 / ||g|| does not fit a float
      for (std::size_t j = 0; j < d; ++j) z[j] = static_cast<float>(cur[j] + eta * (g[j] / length)) - x[j];
    }
    const double first_length = std::sqrt(detail::sum_of_squares(z));
    const float first_scale = first_length > eps ? static_cast<float>(eps / first_length) : 1.0f;
    for (std::size_t j = 0; j < d; ++j) {
      const float c = cur[j];
      const float step = std::min(std::max(x[j] + z[j] * first_scale, lo), hi);
      z[j] = c + a * (step - c) + b * (c - prev[j]) - x[j];
    }
    const double second_length = std::sqrt(detail::sum_of_squares(z));
    const float second_scale = second_length > eps ? static_cast<float>(eps / second_length) : 1.0f;
    for (std::size_t j = 0; j < d; ++j) {
      prev[j] = cur[j];
      cur[j] = std::min(std::max(x[j] + z[j] * second_scale, lo), hi);
    }
  }

  ApgdOptions options_;
};

}  // namespace

std::unique_ptr<EvasionAttack> make_apgd(const ApgdOptions& options) {
  return std::make_unique<AutoProjectedGradientDescent>(options);
}

}  // namespace aegis::attacks
