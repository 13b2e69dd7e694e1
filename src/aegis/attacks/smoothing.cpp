#include "aegis/attacks/smoothing.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include <boost/math/distributions/beta.hpp>
#include <boost/math/distributions/binomial.hpp>
#include <boost/math/distributions/normal.hpp>

#include "aegis/core/error.h"

namespace aegis::attacks {
namespace {

void check(const models::Classifier& model, std::span<const float> x, const SmoothingOptions& options) {
  if (!(options.sigma > 0.0f) || !std::isfinite(options.sigma))
    throw core::Error("smoothing: sigma is " + std::to_string(options.sigma) + "; the noise level must be positive",
                      "use the sigma the model was trained with, for example 0.25 on [0, 1] images");
  if (options.n0 < 1)
    throw core::Error("smoothing: n0 is " + std::to_string(options.n0) +
                          "; at least one noisy copy must choose the class",
                      "use Cohen et al.'s 100");
  if (options.n < 1)
    throw core::Error("smoothing: n is " + std::to_string(options.n) +
                          "; at least one noisy copy must estimate the vote",
                      "use Cohen et al.'s 100000, or 10000 for a quicker, looser certificate");
  if (!(options.alpha > 0.0 && options.alpha < 1.0))
    throw core::Error("smoothing: alpha is " + std::to_string(options.alpha) + "; it must lie strictly between 0 and 1",
                      "use 0.001: each certificate is then wrong with probability at most 0.1%");
  if (model.num_classes() < 2)
    throw core::Error("smoothing: the model reports " + std::to_string(model.num_classes()) +
                      " classes; a certificate needs at least 2");
  const std::size_t d = model.sample_size();
  if (d == 0 || x.size() % d != 0)
    throw core::Error("smoothing: the inputs hold " + std::to_string(x.size()) +
                      " values, not a whole number of samples of " + std::to_string(d));
}

// Draws Gaussian copies of one sample and counts the model's votes. Each sample has its own
// generator, seeded by (seed, index), so its draws do not depend on batching or on other samples.
class NoisyVoter {
 public:
  NoisyVoter(models::Classifier& model, const SmoothingOptions& options)
      : model_(model), sigma_(options.sigma),
        batch_(std::max<std::size_t>(options.batch ? options.batch : model.preferred_batch(), 1)),
        classes_(static_cast<std::size_t>(model.num_classes())), seed_(options.seed) {}

  void start(std::size_t index) {
    std::seed_seq seeds{static_cast<std::uint32_t>(seed_), static_cast<std::uint32_t>(seed_ >> 32),
                        static_cast<std::uint32_t>(index), static_cast<std::uint32_t>(std::uint64_t{index} >> 32)};
    rng_.seed(seeds);
    noise_.reset();
  }

  std::vector<std::uint64_t> votes(std::span<const float> x, std::uint64_t copies) {
    const std::size_t d = x.size();
    std::vector<std::uint64_t> counts(classes_, 0);
    for (std::uint64_t done = 0; done < copies;) {
      const auto m = static_cast<std::size_t>(std::min<std::uint64_t>(batch_, copies - done));
      inputs_.resize(m * d);
      scores_.resize(m * classes_);
      for (std::size_t i = 0; i < m; ++i)
        for (std::size_t j = 0; j < d; ++j) inputs_[i * d + j] = x[j] + sigma_ * noise_(rng_);
      model_.predict(inputs_, scores_);
      for (std::size_t i = 0; i < m; ++i) {
        const int top = models::argmax(std::span<const float>(scores_).subspan(i * classes_, classes_));
        ++counts[static_cast<std::size_t>(top)];
      }
      done += m;
    }
    return counts;
  }

 private:
  models::Classifier& model_;
  float sigma_;
  std::size_t batch_;
  std::size_t classes_;
  std::uint64_t seed_;
  std::mt19937_64 rng_;
  std::normal_distribution<float> noise_{0.0f, 1.0f};
  std::vector<float> inputs_, scores_;
};

std::size_t top_class(const std::vector<std::uint64_t>& counts) {
  return static_cast<std::size_t>(std::max_element(counts.begin(), counts.end()) - counts.begin());
}

}  // namespace

double clopper_pearson_lower(std::uint64_t k, std::uint64_t n, double alpha) {
  if (!(alpha > 0.0 && alpha < 1.0))
    throw core::Error("Clopper-Pearson bound: alpha is " + std::to_string(alpha) + "; it must lie in (0, 1)");
  if (k > n)
    throw core::Error("Clopper-Pearson bound: " + std::to_string(k) + " successes in " + std::to_string(n) + " trials");
  if (k == 0) return 0.0;
  // P(Binomial(n, p) >= k) = I_p(k, n - k + 1), the Beta(k, n - k + 1) distribution function.
  const boost::math::beta_distribution<double> beta(static_cast<double>(k), static_cast<double>(n - k + 1));
  return boost::math::quantile(beta, alpha);
}

std::vector<Certificate> certify(models::Classifier& model, std::span<const float> x, const SmoothingOptions& options,
                                 std::function<void(std::size_t done)> progress) {
  check(model, x, options);
  const std::size_t d = model.sample_size();
  const std::size_t samples = x.size() / d;
  const boost::math::normal_distribution<double> standard(0.0, 1.0);
  NoisyVoter voter(model, options);
  std::vector<Certificate> certificates(samples);
  for (std::size_t i = 0; i < samples; ++i) {
    const auto xi = x.subspan(i * d, d);
    voter.start(i);
    // Choosing the class and estimating its probability use separate draws, as the test requires.
    const std::size_t top = top_class(voter.votes(xi, static_cast<std::uint64_t>(options.n0)));
    const std::uint64_t count = voter.votes(xi, static_cast<std::uint64_t>(options.n))[top];
    Certificate& c = certificates[i];
    c.count_top = count;
    c.p_lower = clopper_pearson_lower(count, static_cast<std::uint64_t>(options.n), options.alpha);
    if (c.p_lower >= 0.5) {
      c.predicted = static_cast<int>(top);
      c.radius = options.sigma * boost::math::quantile(standard, c.p_lower);
    }
    if (progress) progress(i + 1);
  }
  return certificates;
}

std::vector<int> predict_smoothed(models::Classifier& model, std::span<const float> x, const SmoothingOptions& options,
                                  std::function<void(std::size_t done)> progress) {
  check(model, x, options);
  const std::size_t d = model.sample_size();
  const std::size_t samples = x.size() / d;
  NoisyVoter voter(model, options);
  std::vector<int> predictions(samples, -1);
  for (std::size_t i = 0; i < samples; ++i) {
    voter.start(i);
    std::vector<std::uint64_t> counts = voter.votes(x.subspan(i * d, d), static_cast<std::uint64_t>(options.n));
    const std::size_t top = top_class(counts);
    const std::uint64_t first = counts[top];
    counts[top] = 0;
    const std::uint64_t second = counts[top_class(counts)];
    // Two-sided binomial test of first against first + second at p = 1/2: by symmetry its p-value is
    // min(1, 2 P(X >= first)), with first >= second.
    const std::uint64_t trials = first + second;
    const boost::math::binomial_distribution<double> binomial(static_cast<double>(trials), 0.5);
    const double upper_tail =
        first == 0 ? 1.0 : boost::math::cdf(boost::math::complement(binomial, static_cast<double>(first - 1)));
    if (first > second && std::min(1.0, 2.0 * upper_tail) <= options.alpha) predictions[i] = static_cast<int>(top);
    if (progress) progress(i + 1);
  }
  return predictions;
}

}  // namespace aegis::attacks
