// DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, CVPR 2016): linearise the classifier around the
// current point and step to the nearest linearised decision boundary among the top candidate
// classes, until the label changes. On an affine classifier the first step is the exact minimal L2
// perturbation; the final one is stretched by (1 + overshoot) to land across the boundary.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <memory>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "aegis/attacks/evasion.h"
#include "aegis/attacks/evasion/vector_ops.h"
#include "aegis/core/error.h"

namespace aegis::attacks {
namespace {

constexpr double kStepTolerance = 1e-4;  // added to |f'_k| so that each step crosses its boundary

class DeepFool final : public EvasionAttack {
 public:
  explicit DeepFool(const DeepFoolOptions& options) : options_(options) {}

  std::string name() const override { return "deepfool"; }
  AttackKind kind() const override { return AttackKind::MinimalNorm; }
  Norm norm() const override { return Norm::L2; }
  bool needs_gradients() const override { return true; }
  bool supports_targeted() const override { return false; }

  void validate(const models::ClassifierInfo& model, const Bounds& bounds) const override {
    EvasionAttack::validate(model, bounds);
    if (options_.max_iterations < 1)
      throw core::Error("deepfool: max_iterations is " + std::to_string(options_.max_iterations) +
                            "; it needs at least 1",
                        "use the usual 50; DeepFool rarely needs more than a handful of steps");
    if (!(options_.overshoot >= 0.0f) || !std::isfinite(options_.overshoot))
      throw core::Error("deepfool: overshoot is " + std::to_string(options_.overshoot) +
                            "; it must be zero or a small positive number",
                        "use the paper's 0.02");
    if (options_.candidate_classes < 2)
      throw core::Error("deepfool: candidate_classes is " + std::to_string(options_.candidate_classes) +
                            "; the label and at least one other class are needed",
                        "use 10, or the number of classes of a smaller model");
  }

  AttackOutcome run(models::Classifier& model, const AttackInput& input, float /*eps*/, const Bounds& bounds) override {
    validate(model.info(), bounds);
    if (!input.targets.empty())
      throw core::Error("deepfool: the attack is untargeted; it moves to the nearest decision boundary, whatever class "
                        "lies beyond it",
                        "use cw-l2, pgd or apgd for a targeted attack");
    const std::size_t n = detail::check_attack_input(model, input, bounds, name());
    const std::size_t d = model.sample_size();
    const std::size_t k = static_cast<std::size_t>(model.num_classes());
    const std::size_t candidates = std::min<std::size_t>(static_cast<std::size_t>(options_.candidate_classes), k);
    const float stretch = 1.0f + options_.overshoot;

    AttackOutcome outcome;
    outcome.x_adv.assign(input.x.begin(), input.x.end());
    outcome.queries.assign(n, 0);

    const std::size_t batch = std::min(std::max<std::size_t>(model.preferred_batch(), 1), std::max<std::size_t>(n, 1));
    // Samples still being attacked are packed at the front of these arrays.
    std::vector<std::size_t> member(batch);
    std::vector<int> cls(batch * candidates);  // the label first, then the other candidates
    std::vector<float> cur(batch * d), total(batch * d), grad_label(batch * d), grad_other(batch * d),
        best_w(batch * d), scores(batch * k);
    std::vector<double> best_ratio(batch), best_f(batch);
    std::vector<std::size_t> order(k);
    std::vector<char> drop(batch);
    std::size_t count = 0;
    std::size_t column = 0;  // which candidate the next gradient call differentiates

    // One-hot score gradients: the gradient of one class score per sample.
    const models::ScoreGradientFn one_class = [&](std::span<const float>, std::span<float> g) {
      std::fill(g.begin(), g.end(), 0.0f);
      for (std::size_t s = 0; s < count; ++s) g[s * k + static_cast<std::size_t>(cls[s * candidates + column])] = 1.0f;
    };

    for (std::size_t start = 0; start < n; start += batch) {
      const std::size_t m = std::min(batch, n - start);
      count = m;
      for (std::size_t s = 0; s < m; ++s) {
        member[s] = s;
        cls[s * candidates] = input.labels[start + s];
      }
      std::copy_n(input.x.begin() + static_cast<std::ptrdiff_t>(start * d), m * d, cur.begin());
      std::fill_n(total.begin(), m * d, 0.0f);

      for (int iteration = 0; iteration <= options_.max_iterations && count > 0; ++iteration) {
        const std::span<const float> points = std::span<const float>(cur).first(count * d);
        const bool last = iteration == options_.max_iterations;
        // Score the current points: with the label's gradient while steps remain, plainly after the last one.
        if (last) {
          model.predict(points, std::span(scores).first(count * k));
        } else {
          column = 0;
          model.gradient(points, one_class, std::span(grad_label).first(count * d), std::span(scores).first(count * k));
        }
        for (std::size_t s = 0; s < count; ++s) {
          ++outcome.queries[start + member[s]];
          const int label = cls[s * candidates];
          const std::span<const float> row = std::span<const float>(scores).subspan(s * k, k);
          drop[s] = 0;
          if (detail::is_adversarial(row, label, -1)) {
            std::copy_n(cur.begin() + static_cast<std::ptrdiff_t>(s * d), d,
                        outcome.x_adv.begin() + static_cast<std::ptrdiff_t>((start + member[s]) * d));
            drop[s] = 1;
          } else if (iteration == 0) {
            // The candidates are the classes scored highest at x, fixed for the whole run.
            std::iota(order.begin(), order.end(), std::size_t{0});
            std::partial_sort(order.begin(), order.begin() + static_cast<std::ptrdiff_t>(candidates), order.end(),
                              [&](std::size_t a, std::size_t b) { return row[a] > row[b] || (row[a] == row[b] && a < b); });
            std::size_t filled = 1;
            for (std::size_t c = 0; c < k && filled < candidates; ++c)
              if (static_cast<int>(order[c]) != label) cls[s * candidates + filled++] = static_cast<int>(order[c]);
          }
        }
        pack(drop, count, d, member, cls, candidates, {&cur, &total, &grad_label});
        if (last || count == 0) break;

        std::fill_n(best_ratio.begin(), count, std::numeric_limits<double>::infinity());
        for (column = 1; column < candidates; ++column) {
          model.gradient(std::span<const float>(cur).first(count * d), one_class, std::span(grad_other).first(count * d),
                         std::span(scores).first(count * k));
          for (std::size_t s = 0; s < count; ++s) {
            ++outcome.queries[start + member[s]];
            const float* gl = grad_label.data() + s * d;
            const float* gk = grad_other.data() + s * d;
            const double norm_squared = detail::squared_distance({gk, d}, {gl, d});
            if (!(norm_squared > 0) || !std::isfinite(norm_squared)) continue;  // this boundary cannot be reached by a step
            const double f = static_cast<double>(scores[s * k + static_cast<std::size_t>(cls[s * candidates + column])]) -
                             scores[s * k + static_cast<std::size_t>(cls[s * candidates])];
            const double ratio = std::fabs(f) / std::sqrt(norm_squared);
            if (!(ratio < best_ratio[s])) continue;
            best_ratio[s] = ratio;
            best_f[s] = f;
            float* bw = best_w.data() + s * d;
            for (std::size_t j = 0; j < d; ++j) bw[j] = gk[j] - gl[j];
          }
        }

        // r = (|f'| + tol) / ||w'||^2 * w'; the iterate is x + (1 + overshoot) * (sum of r).
        for (std::size_t s = 0; s < count; ++s) {
          drop[s] = 0;
          if (!std::isfinite(best_ratio[s])) {
            drop[s] = 1;  // every candidate's gradient difference vanished: no direction to go; x is kept
            continue;
          }
          const float* bw = best_w.data() + s * d;
          const double norm_squared = detail::sum_of_squares({bw, d});
          const double scale = (std::fabs(best_f[s]) + kStepTolerance) / norm_squared;
          const float* x = input.x.data() + (start + member[s]) * d;
          float* tot = total.data() + s * d;
          float* point = cur.data() + s * d;
          for (std::size_t j = 0; j < d; ++j) {
            tot[j] = static_cast<float>(tot[j] + scale * bw[j]);
            point[j] = std::clamp(x[j] + stretch * tot[j], bounds.lo, bounds.hi);
          }
        }
        pack(drop, count, d, member, cls, candidates, {&cur, &total});
      }
    }
    return outcome;
  }

 private:
  // Drops the samples marked in `drop` and moves the rest to the front, keeping their order.
  static void pack(const std::vector<char>& drop, std::size_t& count, std::size_t d, std::vector<std::size_t>& member,
                   std::vector<int>& cls, std::size_t candidates, std::initializer_list<std::vector<float>*> rows) {
    std::size_t kept = 0;
    for (std::size_t s = 0; s < count; ++s) {
      if (drop[s]) continue;
      if (kept != s) {
        member[kept] = member[s];
        std::copy_n(cls.begin() + static_cast<std::ptrdiff_t>(s * candidates), candidates,
                    cls.begin() + static_cast<std::ptrdiff_t>(kept * candidates));
        for (auto* v : rows)
          std::copy_n(v->begin() + static_cast<std::ptrdiff_t>(s * d), d, v->begin() + static_cast<std::ptrdiff_t>(kept * d));
      }
      ++kept;
    }
    count = kept;
  }

  DeepFoolOptions options_;
};

}  // namespace

std::unique_ptr<EvasionAttack> make_deepfool(const DeepFoolOptions& options) {
  return std::make_unique<DeepFool>(options);
}

}  // namespace aegis::attacks
