// Randomized smoothing (Cohen, Rosenfeld, Kolter, ICML 2019): the classifier that votes over
// Gaussian-noised copies of an input, with certified L2 radii within which its vote cannot change.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "aegis/models/classifier.h"

namespace aegis::attacks {

struct SmoothingOptions {
  float sigma = 0.25f;      // standard deviation of the noise, in input units
  int n0 = 100;             // noisy copies that choose the top class
  int n = 10000;            // noisy copies that estimate its probability
  double alpha = 0.001;     // the certificate is wrong with probability at most alpha
  std::size_t batch = 0;    // noisy copies per predict call; 0 = the model's preferred batch
  std::uint64_t seed = 0;   // results depend on the seed and the sample's index, not on batching
};
// Noise is added without clipping to the value range, as in the paper: the guarantee is about the
// smoothed classifier of the model as given, over all of R^d.

struct Certificate {
  int predicted = -1;            // the smoothed classifier's class; -1 = abstain
  double radius = 0;             // certified L2 radius (0 when abstaining)
  std::uint64_t count_top = 0;   // votes for the top class among the n estimation copies
  double p_lower = 0;            // one-sided lower confidence bound on the top class's probability
};

// One-sided Clopper-Pearson lower bound at level alpha for k successes in n trials: the p with
// P(Binomial(n, p) >= k) = alpha (0 when k = 0). Throws core::Error when k > n or alpha is not in (0, 1).
double clopper_pearson_lower(std::uint64_t k, std::uint64_t n, double alpha);

// Cohen's CERTIFY for each sample of x (n * sample_size): the top class of n0 noisy copies, its
// vote count among n fresh copies, and radius sigma * Phi^{-1}(p_lower), abstaining when
// p_lower < 1/2. `progress` is called with the number of samples done.
std::vector<Certificate> certify(models::Classifier& model, std::span<const float> x, const SmoothingOptions& options,
                                 std::function<void(std::size_t done)> progress = {});

// Cohen's PREDICT: the top class of n noisy copies when a two-sided binomial test says it beats the
// runner-up at level alpha, else -1 (abstain). n0 is not used.
std::vector<int> predict_smoothed(models::Classifier& model, std::span<const float> x, const SmoothingOptions& options,
                                  std::function<void(std::size_t done)> progress = {});

}  // namespace aegis::attacks
