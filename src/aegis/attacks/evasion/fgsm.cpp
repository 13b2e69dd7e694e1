// Fast Gradient (Sign) Method (Goodfellow, Shlens, Szegedy 2015): one step of size eps along the
// sign of the loss gradient (Linf) or along the gradient scaled to unit length (L2). It is the
// cheapest white-box attack, one gradient per sample, and the first number of any robustness report.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aegis/attacks/evasion.h"
#include "aegis/attacks/evasion/vector_ops.h"
#include "aegis/core/error.h"

namespace aegis::attacks {
namespace {

class FastGradientSignMethod final : public EvasionAttack {
 public:
  explicit FastGradientSignMethod(const FgsmOptions& options) : options_(options) {}

  std::string name() const override { return "fgsm"; }
  AttackKind kind() const override { return AttackKind::Budgeted; }
  Norm norm() const override { return options_.norm; }
  bool needs_gradients() const override { return true; }
  bool supports_targeted() const override { return true; }

  AttackOutcome run(models::Classifier& model, const AttackInput& input, float eps, const Bounds& bounds) override {
    const std::size_t n = detail::check_budgeted_run(*this, model, input, eps, bounds);
    const std::size_t d = model.sample_size();
    const std::size_t k = static_cast<std::size_t>(model.num_classes());
    const models::ScoreKind score_kind = model.info().scores;
    const bool targeted = !input.targets.empty();

    AttackOutcome outcome;
    outcome.x_adv.assign(input.x.begin(), input.x.end());
    outcome.queries.assign(n, 1);
    const std::size_t batch = std::max<std::size_t>(model.preferred_batch(), 1);
    std::vector<float> grad(std::min(batch, n) * d), scores(std::min(batch, n) * k);

    for (std::size_t start = 0; start < n; start += batch) {
      const std::size_t m = std::min(batch, n - start);
      const models::ScoreGradientFn objective = [&](std::span<const float> s, std::span<float> g) {
        for (std::size_t i = 0; i < m; ++i)
          detail::cross_entropy_objective(score_kind, s.subspan(i * k, k), input.labels[start + i],
                                          targeted ? input.targets[start + i] : -1, g.subspan(i * k, k));
      };
      model.gradient(input.x.subspan(start * d, m * d), objective, std::span(grad).first(m * d),
                     std::span(scores).first(m * k));

      for (std::size_t i = 0; i < m; ++i) {
        const std::span<const float> x = input.x.subspan((start + i) * d, d);
        const std::span<float> adv = std::span(outcome.x_adv).subspan((start + i) * d, d);
        const float* g = grad.data() + i * d;
        if (options_.norm == Norm::Linf) {
          for (std::size_t j = 0; j < d; ++j) adv[j] = x[j] + eps * detail::sign_of(g[j]);
        } else {
          const double length = detail::direction_length(std::span<const float>(g, d));
          if (length == 0) continue;  // no direction: the sample stays as it is
          const auto length_f = static_cast<float>(length);
          if (length_f > 0.0f && std::isfinite(length_f)) {
            for (std::size_t j = 0; j < d; ++j) adv[j] = x[j] + eps * (g[j] / length_f);
          } else {  // a norm that does not fit a float: divide in double
            for (std::size_t j = 0; j < d; ++j) adv[j] = static_cast<float>(x[j] + eps * (g[j] / length));
          }
        }
        detail::clip_then_project(options_.norm, eps, bounds, x, adv);
      }
    }
    return outcome;
  }

 private:
  FgsmOptions options_;
};

}  // namespace

std::unique_ptr<EvasionAttack> make_fgsm(const FgsmOptions& options) {
  return std::make_unique<FastGradientSignMethod>(options);
}

}  // namespace aegis::attacks
