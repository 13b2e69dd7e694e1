// Projected Gradient Descent (Madry et al. 2018): repeated signed (Linf) or normalised (L2)
// gradient steps on the cross-entropy, each followed by a projection back onto the eps ball and
// the value range. Without a random start it is deterministic and takes the very steps ART's
// ProjectedGradientDescent takes (num_random_init=0), so results can be compared one to one.
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

class ProjectedGradientDescent final : public EvasionAttack {
 public:
  explicit ProjectedGradientDescent(const PgdOptions& options) : options_(options) {}

  std::string name() const override { return "pgd"; }
  AttackKind kind() const override { return AttackKind::Budgeted; }
  Norm norm() const override { return options_.norm; }
  bool needs_gradients() const override { return true; }
  bool supports_targeted() const override { return true; }

  void validate(const models::ClassifierInfo& model, const Bounds& bounds) const override {
    EvasionAttack::validate(model, bounds);
    if (options_.steps < 1)
      throw core::Error("pgd: steps is " + std::to_string(options_.steps) + "; it needs at least 1",
                        "give the number of gradient steps, for example 40 (Madry et al.) or 10 for a quick run");
    if (options_.step_size && (!(*options_.step_size > 0.0f) || !std::isfinite(*options_.step_size)))
      throw core::Error("pgd: the step size is " + std::to_string(*options_.step_size) +
                            "; it must be a positive finite number",
                        "leave the step size out to use 2.5 * eps / steps, or give one in input units");
    if (options_.restarts < 1)
      throw core::Error("pgd: restarts is " + std::to_string(options_.restarts) + "; it needs at least 1",
                        "use 1 for a single run; more restarts start from random points of the eps ball");
  }

  AttackOutcome run(models::Classifier& model, const AttackInput& input, float eps, const Bounds& bounds) override {
    const std::size_t n = detail::check_budgeted_run(*this, model, input, eps, bounds);
    const std::size_t d = model.sample_size();
    const std::size_t k = static_cast<std::size_t>(model.num_classes());
    const float alpha = options_.step_size.value_or(2.5f * eps / static_cast<float>(options_.steps));
    const bool targeted = !input.targets.empty();
    const models::ScoreKind score_kind = model.info().scores;
    std::mt19937_64 rng(options_.seed);

    AttackOutcome outcome;
    outcome.x_adv.assign(input.x.begin(), input.x.end());
    outcome.queries.assign(n, 0);

    const std::size_t batch = std::min(std::max<std::size_t>(model.preferred_batch(), 1), std::max<std::size_t>(n, 1));
    // Per restart, the samples still to attack are gathered into these contiguous buffers so that
    // every gradient call covers them all at once.
    std::vector<std::size_t> members(batch);
    std::vector<int> labels(batch), targets(batch);
    std::vector<float> x0(batch * d), current(batch * d), grad(batch * d), scores(batch * k), row_grad(k);
    std::vector<double> best_loss(batch);
    std::vector<char> fooled(batch);

    for (std::size_t start = 0; start < n; start += batch) {
      const std::size_t m = std::min(batch, n - start);
      std::fill(best_loss.begin(), best_loss.end(), -std::numeric_limits<double>::infinity());
      std::fill(fooled.begin(), fooled.end(), 0);

      for (int restart = 0; restart < options_.restarts; ++restart) {
        std::size_t count = 0;
        for (std::size_t i = 0; i < m; ++i)
          if (!fooled[i]) members[count++] = i;
        if (count == 0) break;

        // Later restarts always start at random: from x they would repeat the first run exactly.
        const bool random_start = options_.random_start || restart > 0;
        for (std::size_t s = 0; s < count; ++s) {
          const std::size_t i = start + members[s];
          labels[s] = input.labels[i];
          targets[s] = targeted ? input.targets[i] : -1;
          const std::span<const float> x = input.x.subspan(i * d, d);
          std::copy(x.begin(), x.end(), x0.begin() + static_cast<std::ptrdiff_t>(s * d));
          const std::span<float> cur = std::span(current).subspan(s * d, d);
          if (random_start) {
            detail::random_in_ball(options_.norm, eps, rng, cur);
            for (std::size_t j = 0; j < d; ++j) cur[j] = std::clamp(x[j] + cur[j], bounds.lo, bounds.hi);
          } else {
            std::copy(x.begin(), x.end(), cur.begin());
          }
        }

        const std::span<const float> batch_x = std::span<const float>(current).first(count * d);
        const models::ScoreGradientFn objective = [&](std::span<const float> s, std::span<float> g) {
          for (std::size_t r = 0; r < count; ++r)
            detail::cross_entropy_objective(score_kind, s.subspan(r * k, k), labels[r], targets[r],
                                            g.subspan(r * k, k));
        };
        // As ART does, every sample takes every step: no early stop, so the last iterate is
        // the same point ART returns.
        for (int step = 0; step < options_.steps; ++step) {
          model.gradient(batch_x, objective, std::span(grad).first(count * d), std::span(scores).first(count * k));
          for (std::size_t s = 0; s < count; ++s) {
            ++outcome.queries[start + members[s]];
            take_step(alpha, eps, bounds, std::span<const float>(x0).subspan(s * d, d),
                      std::span<const float>(grad).subspan(s * d, d), std::span(current).subspan(s * d, d));
          }
        }

        if (options_.restarts == 1) {
          for (std::size_t s = 0; s < count; ++s)
            std::copy_n(current.begin() + static_cast<std::ptrdiff_t>(s * d), d,
                        outcome.x_adv.begin() + static_cast<std::ptrdiff_t>((start + members[s]) * d));
          break;
        }
        // With several restarts the last iterates are scored once, to keep the first adversarial
        // and otherwise the iterate of highest loss.
        model.predict(batch_x, std::span(scores).first(count * k));
        for (std::size_t s = 0; s < count; ++s) {
          const std::size_t i = members[s];
          ++outcome.queries[start + i];
          const std::span<const float> row = std::span<const float>(scores).subspan(s * k, k);
          const bool adversarial = detail::is_adversarial(row, labels[s], targets[s]);
          const double loss = detail::cross_entropy_objective(score_kind, row, labels[s], targets[s], row_grad);
          if (adversarial || loss > best_loss[i]) {
            best_loss[i] = loss;
            fooled[i] = adversarial ? 1 : 0;
            std::copy_n(current.begin() + static_cast<std::ptrdiff_t>(s * d), d,
                        outcome.x_adv.begin() + static_cast<std::ptrdiff_t>((start + i) * d));
          }
        }
      }
    }
    return outcome;
  }

 private:
  // One step from `cur` along the gradient's sign (Linf) or unit direction (L2), then ART's
  // clip-and-project. A zero gradient leaves the point where it is.
  void take_step(float alpha, float eps, const Bounds& bounds, std::span<const float> x, std::span<const float> g,
                 std::span<float> cur) const {
    const std::size_t d = x.size();
    if (options_.norm == Norm::Linf) {
      for (std::size_t j = 0; j < d; ++j) cur[j] = cur[j] + alpha * detail::sign_of(g[j]);
    } else {
      const double length = detail::direction_length(g);
      if (length > 0) {
        // ART's float32 g * (1 / ||g||); in double where the reciprocal does not fit a float: it
        // overflows for a tiny gradient, and is 0 for a length beyond the float range.
        const float inverse = 1.0f / static_cast<float>(length);
        if (std::isfinite(inverse) && inverse > 0.0f) {
          for (std::size_t j = 0; j < d; ++j) cur[j] = cur[j] + alpha * (g[j] * inverse);
        } else {
          for (std::size_t j = 0; j < d; ++j) cur[j] = static_cast<float>(cur[j] + alpha * (g[j] / length));
        }
      }
    }
    detail::clip_then_project(options_.norm, eps, bounds, x, cur);
  }

  PgdOptions options_;
};

}  // namespace

std::unique_ptr<EvasionAttack> make_pgd(const PgdOptions& options) {
  return std::make_unique<ProjectedGradientDescent>(options);
}

}  // namespace aegis::attacks
