// Carlini & Wagner's L2 attack (IEEE S&P 2017): minimise ||x' - x||_2^2 + c * f(x') over
// x' = lo + (hi - lo) * (tanh(w) + 1) / 2, which keeps x' in the value range without clipping, with
// Adam on w and a binary search over c per sample. f is the logit margin, floored at -kappa:
//   untargeted  f = max(Z_y - max_{i != y} Z_i, -kappa),  targeted  f = max(max_{i != t} Z_i - Z_t, -kappa).
// It reports, per sample, the closest adversarial it met.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aegis/attacks/evasion.h"
#include "aegis/attacks/evasion/vector_ops.h"
#include "aegis/core/error.h"

namespace aegis::attacks {
namespace {

constexpr double kAdamBeta1 = 0.9;
constexpr double kAdamBeta2 = 0.999;
constexpr double kAdamEpsilon = 1e-8;
constexpr double kNoUpperBound = 1e10;  // the paper's "not yet bounded" value of c's upper end
constexpr float kTanhLimit = 1.0f - 1e-6f;  // atanh of +-1 is infinite: inputs on the range's edge start just inside
constexpr double kSmallestProbability = 1e-30;

// tanh of an Adam step, which is about the learning rate: a few terms of its series where they are
// exact to float precision (|u| <= 0.1 leaves an error below 1e-10), the library call elsewhere.
inline float tanh_of_step(float u) {
  if (!(std::fabs(u) <= 0.1f)) return std::tanh(u);
  const float u2 = u * u;
  return u * (1.0f + u2 * (-1.0f / 3.0f + u2 * (2.0f / 15.0f + u2 * (-17.0f / 315.0f))));
}

class CarliniWagnerL2 final : public EvasionAttack {
 public:
  explicit CarliniWagnerL2(const CarliniWagnerOptions& options) : options_(options) {}

  std::string name() const override { return "cw-l2"; }
  AttackKind kind() const override { return AttackKind::MinimalNorm; }
  Norm norm() const override { return Norm::L2; }
  bool needs_gradients() const override { return true; }
  bool supports_targeted() const override { return true; }

  void validate(const models::ClassifierInfo& model, const Bounds& bounds) const override {
    EvasionAttack::validate(model, bounds);
    if (!(options_.confidence >= 0.0f) || !std::isfinite(options_.confidence))
      throw core::Error("cw-l2: confidence is " + std::to_string(options_.confidence) +
                            "; it is the logit margin kappa an adversarial must clear and must be zero or positive",
                        "use 0 for the closest adversarial, or a positive margin for ones that transfer");
    if (!(options_.learning_rate > 0.0f) || !std::isfinite(options_.learning_rate))
      throw core::Error("cw-l2: the learning rate is " + std::to_string(options_.learning_rate) +
                            "; it must be a positive finite number",
                        "use the paper's 0.01");
    if (options_.binary_search_steps < 1)
      throw core::Error("cw-l2: binary_search_steps is " + std::to_string(options_.binary_search_steps) +
                            "; it needs at least 1",
                        "use the paper's 9");
    if (options_.max_iterations < 1)
      throw core::Error("cw-l2: max_iterations is " + std::to_string(options_.max_iterations) +
                            "; it needs at least 1",
                        "give the Adam iterations per value of c, for example 100 (or 1000 as in the paper)");
    if (!(options_.initial_const > 0.0f) || !std::isfinite(options_.initial_const))
      throw core::Error("cw-l2: initial_const is " + std::to_string(options_.initial_const) +
                            "; it must be a positive finite number",
                        "use the paper's 1e-3; the binary search raises it where needed");
  }

  AttackOutcome run(models::Classifier& model, const AttackInput& input, float /*eps*/, const Bounds& bounds) override {
    validate(model.info(), bounds);
    const std::size_t n = detail::check_attack_input(model, input, bounds, name());
    const std::size_t d = model.sample_size();
    const std::size_t k = static_cast<std::size_t>(model.num_classes());
    const bool targeted = !input.targets.empty();
    const bool probabilities = model.info().scores == models::ScoreKind::Probabilities;
    const double kappa = options_.confidence;
    const double lo = bounds.lo;
    const double half_range = 0.5 * (static_cast<double>(bounds.hi) - bounds.lo);

    AttackOutcome outcome;
    outcome.x_adv.assign(input.x.begin(), input.x.end());
    outcome.queries.assign(n, 0);

    const std::size_t batch = std::min(std::max<std::size_t>(model.preferred_batch(), 1), std::max<std::size_t>(n, 1));
    // The optimiser works on w, but only t = tanh(w) is kept: an Adam step u moves it by the addition
    // formula tanh(w + u) = (t + tanh u) / (1 + t tanh u), which costs a few multiplications where
    // calling tanh for every feature would cost more than the model's own gradient.
    std::vector<float> t0(batch * d), t(batch * d), adam_m(batch * d), adam_v(batch * d), x_adv(batch * d),
        grad(batch * d), scores(batch * k), logits(k);
    std::vector<double> c(batch), lower(batch), upper(batch), best_l2(batch), margin(batch);
    std::vector<char> success(batch), succeeded_this_round(batch);
    std::size_t m = 0;
    std::size_t start = 0;

    // c_i * df/dZ for each row; also notes f and whether the row already counts as adversarial.
    const models::ScoreGradientFn objective = [&](std::span<const float> s, std::span<float> g) {
      for (std::size_t i = 0; i < m; ++i) {
        const auto row = s.subspan(i * k, k);
        const auto row_grad = g.subspan(i * k, k);
        for (std::size_t j = 0; j < k; ++j)
          logits[j] = probabilities ? static_cast<float>(std::log(std::max<double>(row[j], kSmallestProbability)))
                                    : row[j];
        const int label = input.labels[start + i];
        const int target = targeted ? input.targets[start + i] : -1;
        const int keep = targeted ? target : label;  // the class whose logit is compared with the best other
        int other = -1;
        for (int j = 0; j < static_cast<int>(k); ++j)
          if (j != keep && (other < 0 || logits[j] > logits[other])) other = j;
        // gap > 0 means not yet adversarial; f = max(gap, -kappa)
        const double gap = targeted ? static_cast<double>(logits[other]) - logits[target]
                                    : static_cast<double>(logits[label]) - logits[other];
        margin[i] = std::max(gap, -kappa);
        success[i] = detail::is_adversarial(row, label, target) && gap <= -kappa;
        std::fill(row_grad.begin(), row_grad.end(), 0.0f);
        if (gap > -kappa) {
          const int up = targeted ? other : label;     // f rises with this logit
          const int down = targeted ? target : other;  // and falls with this one
          // For probabilities Z = log p, so dZ/dp = 1/p.
          auto by_score = [&](int cls) { return probabilities ? std::max<double>(row[cls], kSmallestProbability) : 1.0; };
          row_grad[up] = static_cast<float>(c[i] / by_score(up));
          row_grad[down] = static_cast<float>(-c[i] / by_score(down));
        }
      }
    };

    for (start = 0; start < n; start += batch) {
      m = std::min(batch, n - start);
      const std::span<const float> x = input.x.subspan(start * d, m * d);
      for (std::size_t j = 0; j < m * d; ++j) {
        const double unit = (x[j] - lo) / half_range - 1.0;  // in [-1, 1]
        t0[j] = static_cast<float>(std::clamp(unit, -static_cast<double>(kTanhLimit), static_cast<double>(kTanhLimit)));
      }
      std::fill_n(c.begin(), m, static_cast<double>(options_.initial_const));
      std::fill_n(lower.begin(), m, 0.0);
      std::fill_n(upper.begin(), m, kNoUpperBound);
      std::fill_n(best_l2.begin(), m, std::numeric_limits<double>::infinity());

      for (int round = 0; round < options_.binary_search_steps; ++round) {
        // Each value of c starts afresh from x, with a fresh optimiser (as in the paper's code).
        std::copy_n(t0.begin(), m * d, t.begin());
        std::fill_n(adam_m.begin(), m * d, 0.0f);
        std::fill_n(adam_v.begin(), m * d, 0.0f);
        std::fill_n(succeeded_this_round.begin(), m, 0);
        double previous_total = std::numeric_limits<double>::infinity();
        const int check_every = options_.max_iterations / 10;

        for (int iteration = 0; iteration < options_.max_iterations; ++iteration) {
          const auto lo_f = static_cast<float>(lo), half_f = static_cast<float>(half_range);
          for (std::size_t j = 0; j < m * d; ++j)
            x_adv[j] = std::min(std::max(lo_f + half_f * (t[j] + 1.0f), bounds.lo), bounds.hi);
          model.gradient(std::span<const float>(x_adv).first(m * d), objective, std::span(grad).first(m * d),
                         std::span(scores).first(m * k));

          const double bias1 = 1.0 - std::pow(kAdamBeta1, iteration + 1);
          const double bias2 = 1.0 - std::pow(kAdamBeta2, iteration + 1);
          const auto step = static_cast<float>(options_.learning_rate * std::sqrt(bias2) / bias1);
          constexpr auto beta1 = static_cast<float>(kAdamBeta1), beta2 = static_cast<float>(kAdamBeta2);
          constexpr auto adam_epsilon = static_cast<float>(kAdamEpsilon);
          double total = 0;
          for (std::size_t i = 0; i < m; ++i) {
            ++outcome.queries[start + i];
            const std::size_t base = i * d;
            const double l2_squared = detail::squared_distance(std::span<const float>(x_adv).subspan(base, d),
                                                               x.subspan(base, d));
            total += l2_squared + c[i] * margin[i];
            if (success[i]) {
              succeeded_this_round[i] = 1;
              if (l2_squared < best_l2[i]) {
                best_l2[i] = l2_squared;
                std::copy_n(x_adv.begin() + static_cast<std::ptrdiff_t>(base), d,
                            outcome.x_adv.begin() + static_cast<std::ptrdiff_t>((start + i) * d));
              }
            }
            for (std::size_t j = base; j < base + d; ++j) {
              // d/dx of the distance term plus the model's c * df/dx, through x = lo + h (tanh w + 1).
              const float dx = grad[j] + 2.0f * (x_adv[j] - x[j]);
              const float dw = dx * half_f * (1.0f - t[j] * t[j]);
              const float mj = beta1 * adam_m[j] + (1.0f - beta1) * dw;
              const float vj = beta2 * adam_v[j] + (1.0f - beta2) * dw * dw;
              adam_m[j] = mj;
              adam_v[j] = vj;
              const float th = tanh_of_step(-step * mj / (std::sqrt(vj) + adam_epsilon));
              const float moved = (t[j] + th) / (1.0f + t[j] * th);
              t[j] = std::min(std::max(moved, -kTanhLimit), kTanhLimit);
            }
          }
          // The paper's early abort: stop this round once the total loss stalls.
          if (check_every > 0 && iteration % check_every == 0) {
            if (total > previous_total * 0.9999) break;
            previous_total = total;
          }
        }

        for (std::size_t i = 0; i < m; ++i) {
          if (succeeded_this_round[i]) {
            upper[i] = std::min(upper[i], c[i]);
            if (upper[i] < kNoUpperBound * 0.1) c[i] = 0.5 * (lower[i] + upper[i]);
          } else {
            lower[i] = std::max(lower[i], c[i]);
            c[i] = upper[i] < kNoUpperBound * 0.1 ? 0.5 * (lower[i] + upper[i]) : c[i] * 10.0;
          }
        }
      }
    }
    return outcome;
  }

 private:
  CarliniWagnerOptions options_;
};

}  // namespace

std::unique_ptr<EvasionAttack> make_carlini_wagner_l2(const CarliniWagnerOptions& options) {
  return std::make_unique<CarliniWagnerL2>(options);
}

}  // namespace aegis::attacks
