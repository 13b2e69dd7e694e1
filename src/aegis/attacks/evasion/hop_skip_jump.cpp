// HopSkipJump (Chen, Jordan, Wainwright, IEEE S&P 2020): a decision-based attack that needs only
// the predicted class. It walks along the decision boundary toward the input: estimate the
// boundary's normal from random probes, step along it, and binary-search back to the boundary.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "aegis/attacks/evasion.h"
#include "aegis/attacks/evasion/vector_ops.h"
#include "aegis/core/error.h"

namespace aegis::attacks {
namespace {

// Answers "is this point adversarial?" for one sample, from the predicted class only, and keeps
// its query count within the sample's budget (callers ask remaining() before they spend).
class DecisionOracle {
 public:
  DecisionOracle(models::Classifier& model, int label, int target, std::uint64_t budget)
      : model_(model), label_(label), target_(target), budget_(budget),
        classes_(static_cast<std::size_t>(model.num_classes())) {}

  std::uint64_t used() const { return used_; }
  std::uint64_t remaining() const { return budget_ - used_; }

  // Decisions for the m points laid out in `points`; m must not exceed remaining().
  void decide(std::span<const float> points, std::vector<char>& adversarial) {
    const std::size_t m = points.size() / model_.sample_size();
    scores_.resize(m * classes_);
    detail::predict_in_batches(model_, points, scores_);
    adversarial.resize(m);
    for (std::size_t i = 0; i < m; ++i)
      adversarial[i] =
          detail::is_adversarial(std::span<const float>(scores_).subspan(i * classes_, classes_), label_, target_);
    used_ += m;
  }

  bool decide(std::span<const float> point) {
    decide(point, one_);
    return one_[0] != 0;
  }

 private:
  models::Classifier& model_;
  int label_, target_;
  std::uint64_t budget_, used_ = 0;
  std::size_t classes_;
  std::vector<float> scores_;
  std::vector<char> one_;
};

class HopSkipJump final : public EvasionAttack {
 public:
  explicit HopSkipJump(const HopSkipJumpOptions& options) : options_(options) {}

  std::string name() const override { return "hopskipjump"; }
  AttackKind kind() const override { return AttackKind::MinimalNorm; }
  Norm norm() const override { return options_.norm; }
  bool needs_gradients() const override { return false; }
  bool supports_targeted() const override { return true; }

  void validate(const models::ClassifierInfo& model, const Bounds& bounds) const override {
    EvasionAttack::validate(model, bounds);
    auto need = [](bool ok, const std::string& what, const std::string& hint) {
      if (!ok) throw core::Error("hopskipjump: " + what, hint);
    };
    need(options_.max_queries >= 1, "max_queries is " + std::to_string(options_.max_queries) + "; it needs at least 1",
         "give a query budget per sample, for example 5000");
    need(options_.max_iterations >= 0, "max_iterations is negative", "use the paper's 64, or 0 for the start only");
    need(options_.initial_evals >= 1,
         "initial_evals is " + std::to_string(options_.initial_evals) + "; it needs at least 1",
         "use the paper's 100");
    need(options_.max_evals >= options_.initial_evals,
         "max_evals (" + std::to_string(options_.max_evals) + ") is below initial_evals (" +
             std::to_string(options_.initial_evals) + ")",
         "use the paper's 10000 and 100");
    need(options_.init_size >= 1, "init_size is " + std::to_string(options_.init_size) + "; it needs at least 1",
         "use 100 random starts");
  }

  AttackOutcome run(models::Classifier& model, const AttackInput& input, float /*eps*/,
                    const Bounds& bounds) override {
    validate(model.info(), bounds);
    const std::size_t n = detail::check_attack_input(model, input, bounds, name());
    const std::size_t d = model.sample_size();
    AttackOutcome outcome;
    outcome.x_adv.assign(input.x.begin(), input.x.end());
    outcome.queries.assign(n, 0);
    for (std::size_t i = 0; i < n; ++i) {
      // One generator per sample, so a sample's result does not depend on the others in the batch.
      std::seed_seq seeds{static_cast<std::uint32_t>(options_.seed), static_cast<std::uint32_t>(options_.seed >> 32),
                          static_cast<std::uint32_t>(i), static_cast<std::uint32_t>(std::uint64_t{i} >> 32)};
      std::mt19937_64 rng(seeds);
      DecisionOracle oracle(model, input.labels[i], input.targets.empty() ? -1 : input.targets[i],
                            static_cast<std::uint64_t>(options_.max_queries));
      attack_one(model, oracle, input.x.subspan(i * d, d), std::span<float>(outcome.x_adv).subspan(i * d, d), bounds,
                 rng);
      outcome.queries[i] = oracle.used();
    }
    return outcome;
  }

 private:
  // Leaves `out` at the closest adversarial point found, or at x when no start was found.
  void attack_one(models::Classifier& model, DecisionOracle& oracle, std::span<const float> x, std::span<float> out,
                  const Bounds& bounds, std::mt19937_64& rng) const {
    const std::size_t d = x.size();
    std::vector<float> start(d);
    if (!find_start(model, oracle, start, bounds, rng)) return;

    const double dims = static_cast<double>(d);
    // The paper's binary-search threshold theta (gamma = 1): d^{-3/2} for L2, d^{-2} for Linf.
    const double theta = options_.norm == Norm::L2 ? 1.0 / (dims * std::sqrt(dims)) : 1.0 / (dims * dims);

    std::vector<float> boundary(d);
    blend_search(oracle, x, start, boundary, 0.001);  // coarse, as in the paper's initialisation
    std::vector<float> candidate = boundary;
    boundary_search(oracle, x, candidate, boundary, theta);
    double dist = detail::norm_of(options_.norm, difference(boundary, x));
    std::copy(boundary.begin(), boundary.end(), out.begin());
    double best = dist;

    std::vector<double> direction(d);
    for (int t = 1; t <= options_.max_iterations && dist > 0; ++t) {
      const double delta = t == 1 ? 0.1 * (static_cast<double>(bounds.hi) - bounds.lo)
                                  : (options_.norm == Norm::L2 ? std::sqrt(dims) : dims) * theta * dist;
      const auto wanted = static_cast<std::uint64_t>(
          std::min(static_cast<double>(options_.initial_evals) * std::sqrt(static_cast<double>(t)),
                   static_cast<double>(options_.max_evals)));
      // Keep enough for at least one step probe and a binary search; spend the rest on the
      // estimate, but stop once the estimate would be too thin to be worth the queries.
      const double search_range = options_.norm == Norm::L2 ? 1.0 : std::max(dist, 1.0);
      const auto reserve = static_cast<std::uint64_t>(std::ceil(std::log2(search_range / theta))) + 2;
      if (oracle.remaining() <= reserve) break;
      const std::uint64_t evals = std::min(wanted, oracle.remaining() - reserve);
      if (evals < std::min<std::uint64_t>(wanted, 10)) break;

      estimate_direction(model, oracle, boundary, delta, evals, bounds, direction, rng);
      if (options_.norm == Norm::Linf)
        for (double& v : direction) v = v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0);

      // Geometric step search: start at dist / sqrt(t) and halve until the step stays adversarial.
      double step = dist / std::sqrt(static_cast<double>(t));
      bool moved = false;
      while (oracle.remaining() > 1 && step > 0) {
        for (std::size_t j = 0; j < d; ++j)
          candidate[j] = std::clamp(static_cast<float>(boundary[j] + step * direction[j]), bounds.lo, bounds.hi);
        if (oracle.decide(candidate)) {
          moved = true;
          break;
        }
        step /= 2;
      }
      if (!moved) candidate = boundary;
      boundary_search(oracle, x, candidate, boundary, theta);
      dist = detail::norm_of(options_.norm, difference(boundary, x));
      if (dist < best) {
        best = dist;
        std::copy(boundary.begin(), boundary.end(), out.begin());
      }
      if (oracle.remaining() == 0) break;
    }
  }

  // A starting point on the adversarial side: uniform noise over the value range that the model
  // puts in the target class (targeted) or away from the label, tried up to init_size times in
  // doubling batches (most untargeted starts succeed at the first try).
  bool find_start(models::Classifier& model, DecisionOracle& oracle, std::span<float> start, const Bounds& bounds,
                  std::mt19937_64& rng) const {
    const std::size_t d = start.size();
    std::uniform_real_distribution<float> uniform(bounds.lo, bounds.hi);
    std::vector<float> noise;
    std::vector<char> adversarial;
    std::uint64_t tried = 0, batch = 1;
    const auto tries = static_cast<std::uint64_t>(options_.init_size);
    while (tried < tries && oracle.remaining() > 0) {
      const std::uint64_t m = std::min({batch, tries - tried, oracle.remaining(),
                                        static_cast<std::uint64_t>(std::max<std::size_t>(model.preferred_batch(), 1))});
      noise.resize(m * d);
      for (float& v : noise) v = std::min(uniform(rng), bounds.hi);
      oracle.decide(noise, adversarial);
      for (std::size_t i = 0; i < m; ++i)
        if (adversarial[i]) {
          std::copy_n(noise.begin() + static_cast<std::ptrdiff_t>(i * d), d, start.begin());
          return true;
        }
      tried += m;
      batch *= 2;
    }
    return false;
  }

  static std::vector<float> difference(std::span<const float> a, std::span<const float> b) {
    std::vector<float> diff(a.size());
    for (std::size_t j = 0; j < a.size(); ++j) diff[j] = a[j] - b[j];
    return diff;
  }

  // (1 - alpha) x + alpha y; the same arithmetic for probes and the result, so the result is a
  // point the model was actually asked about.
  static void blend(std::span<const float> x, std::span<const float> y, double alpha, std::span<float> out) {
    for (std::size_t j = 0; j < x.size(); ++j)
      out[j] = alpha >= 1.0 ? y[j] : static_cast<float>((1.0 - alpha) * x[j] + alpha * y[j]);
  }

  // y clipped into the Linf ball of radius r around x.
  static void shrink(std::span<const float> x, std::span<const float> y, double r, std::span<float> out) {
    for (std::size_t j = 0; j < x.size(); ++j) {
      const double lo = x[j] - r, hi = x[j] + r;
      out[j] = static_cast<float>(std::clamp(static_cast<double>(y[j]), lo, hi));
    }
  }

  // Binary search on the segment from x (not adversarial) to y (adversarial) down to `threshold`
  // in blend units; `out` is the adversarial end.
  static void blend_search(DecisionOracle& oracle, std::span<const float> x, std::span<const float> y,
                           std::span<float> out, double threshold) {
    std::vector<float> probe(x.size());
    double low = 0.0, high = 1.0;
    while (high - low > threshold && oracle.remaining() > 0) {
      const double mid = (low + high) / 2;
      blend(x, y, mid, probe);
      (oracle.decide(probe) ? high : low) = mid;
    }
    blend(x, y, high, out);
  }

  // The paper's projection-based binary search: blends for L2 (threshold theta), shrinking Linf
  // balls for Linf (from y's own distance, threshold min(dist * theta, theta)).
  void boundary_search(DecisionOracle& oracle, std::span<const float> x, std::span<const float> y,
                       std::span<float> out, double theta) const {
    if (options_.norm == Norm::L2) {
      blend_search(oracle, x, y, out, theta);
      return;
    }
    std::vector<float> probe(x.size());
    double low = 0.0, high = 0.0;  // in double, so that shrinking by y's own distance leaves y as it is
    for (std::size_t j = 0; j < x.size(); ++j)
      high = std::max(high, std::fabs(static_cast<double>(y[j]) - static_cast<double>(x[j])));
    const double threshold = std::min(high * theta, theta);
    while (high - low > threshold && oracle.remaining() > 0) {
      const double mid = (low + high) / 2;
      shrink(x, y, mid, probe);
      (oracle.decide(probe) ? high : low) = mid;
    }
    shrink(x, y, high, out);
  }

  // Monte Carlo estimate of the boundary's normal at `point` (pointing to the adversarial side):
  // probes point + delta * u for random unit u, weighted by +1/-1 decisions with their mean
  // subtracted as a baseline. Probes go to the model in chunks; only running sums are kept.
  void estimate_direction(models::Classifier& model, DecisionOracle& oracle, std::span<const float> point,
                          double delta, std::uint64_t evals, const Bounds& bounds, std::vector<double>& direction,
                          std::mt19937_64& rng) const {
    const std::size_t d = point.size();
    const std::size_t chunk = std::max<std::size_t>(model.preferred_batch(), 1);
    std::normal_distribution<float> gaussian(0.0f, 1.0f);
    std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
    std::vector<double> weighted(d, 0.0), plain(d, 0.0);
    std::vector<float> probes, offsets;
    std::vector<char> adversarial;
    double decision_sum = 0;
    for (std::uint64_t done = 0; done < evals;) {
      const auto m = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, evals - done));
      probes.resize(m * d);
      offsets.resize(m * d);
      for (std::size_t i = 0; i < m; ++i) {
        float* u = offsets.data() + i * d;
        double sum = 0;
        for (std::size_t j = 0; j < d; ++j) {
          u[j] = options_.norm == Norm::L2 ? gaussian(rng) : uniform(rng);
          sum += static_cast<double>(u[j]) * u[j];
        }
        const double scale = sum > 0 ? 1.0 / std::sqrt(sum) : 0.0;
        for (std::size_t j = 0; j < d; ++j) {
          const float probe = std::clamp(static_cast<float>(point[j] + delta * u[j] * scale), bounds.lo, bounds.hi);
          probes[i * d + j] = probe;
          u[j] = static_cast<float>((static_cast<double>(probe) - point[j]) / delta);  // the offset clipping left
        }
      }
      oracle.decide(probes, adversarial);
      for (std::size_t i = 0; i < m; ++i) {
        const double f = adversarial[i] ? 1.0 : -1.0;
        decision_sum += f;
        const float* u = offsets.data() + i * d;
        for (std::size_t j = 0; j < d; ++j) {
          weighted[j] += f * u[j];
          plain[j] += u[j];
        }
      }
      done += m;
    }
    const double count = static_cast<double>(evals);
    const double mean = decision_sum / count;
    // All probes on one side: the baseline would cancel everything; follow (or flee) their mean.
    const bool one_sided = std::fabs(mean) == 1.0;
    for (std::size_t j = 0; j < d; ++j)
      direction[j] = one_sided ? mean * plain[j] / count : (weighted[j] - mean * plain[j]) / count;
    detail::normalise(direction);
  }

  HopSkipJumpOptions options_;
};

}  // namespace

std::unique_ptr<EvasionAttack> make_hop_skip_jump(const HopSkipJumpOptions& options) {
  return std::make_unique<HopSkipJump>(options);
}

}  // namespace aegis::attacks
