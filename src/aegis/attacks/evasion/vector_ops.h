// What the evasion attacks share: the checks of their inputs and budgets, norms, projections onto
// the budget ball and the value range, and the score gradients of the losses they maximise.
// Internal to attacks/.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <random>
#include <span>
#include <string>

#include "aegis/attacks/evasion.h"
#include "aegis/core/error.h"
#include "aegis/models/classifier.h"

namespace aegis::attacks::detail {

inline double l2_norm(std::span<const float> v) {
  double sum = 0;
  for (float x : v) sum += static_cast<double>(x) * x;
  return std::sqrt(sum);
}

inline double linf_norm(std::span<const float> v) {
  double top = 0;
  for (float x : v) top = std::max(top, static_cast<double>(std::fabs(x)));
  return top;
}

inline double norm_of(Norm norm, std::span<const float> v) { return norm == Norm::Linf ? linf_norm(v) : l2_norm(v); }

// Divides v by its L2 length; a vector of length zero becomes all zeros.
inline void normalise(std::span<double> v) {
  double sum = 0;
  for (double x : v) sum += x * x;
  const double length = std::sqrt(sum);
  for (double& x : v) x = length > 0 ? x / length : 0.0;
}

// Projects x_adv (one sample) into {x + d : |d|_norm <= eps} ∩ [lo, hi]^D.
// For L2 the ball projection comes first and the range clip second (as ART and AutoAttack do).
inline void project(Norm norm, float eps, const Bounds& bounds, std::span<const float> x, std::span<float> x_adv) {
  const std::size_t d = x.size();
  if (norm == Norm::Linf) {
    for (std::size_t j = 0; j < d; ++j) {
      const float v = std::clamp(x_adv[j], x[j] - eps, x[j] + eps);
      x_adv[j] = std::clamp(v, bounds.lo, bounds.hi);
    }
    return;
  }
  double sum = 0;
  for (std::size_t j = 0; j < d; ++j) {
    const double delta = static_cast<double>(x_adv[j]) - x[j];
    sum += delta * delta;
  }
  const double length = std::sqrt(sum);
  const double scale = length > eps && length > 0 ? eps / length : 1.0;
  for (std::size_t j = 0; j < d; ++j) {
    const float v = static_cast<float>(x[j] + (static_cast<double>(x_adv[j]) - x[j]) * scale);
    x_adv[j] = std::clamp(v, bounds.lo, bounds.hi);
  }
}

// log-softmax based cross-entropy of one row and its score gradient (softmax - onehot) for logits,
// or -log p and its gradient for probabilities. Returns the loss.
inline double cross_entropy(models::ScoreKind kind, std::span<const float> scores, int label, std::span<float> grad) {
  const std::size_t k = scores.size();
  if (kind == models::ScoreKind::Probabilities) {
    const double p = std::max(static_cast<double>(scores[label]), 1e-12);
    for (std::size_t c = 0; c < k; ++c) grad[c] = 0.0f;
    grad[label] = static_cast<float>(-1.0 / p);
    return -std::log(p);
  }
  const float top = *std::max_element(scores.begin(), scores.end());
  double sum = 0;
  for (std::size_t c = 0; c < k; ++c) sum += std::exp(static_cast<double>(scores[c]) - top);
  for (std::size_t c = 0; c < k; ++c)
    grad[c] = static_cast<float>(std::exp(static_cast<double>(scores[c]) - top) / sum);
  grad[label] -= 1.0f;
  return -(static_cast<double>(scores[label]) - top - std::log(sum));
}

// The checks every attack run shares: whole samples, one label (and at most one target) per
// sample, classes the model has, and inputs inside the value range (outside it, clipping to the
// range could move a sample further than eps). Returns the number of samples.
inline std::size_t check_attack_input(const models::Classifier& model, const AttackInput& input, const Bounds& bounds,
                                      const std::string& attack) {
  const std::size_t d = model.sample_size();
  const int k = model.num_classes();
  if (d == 0 || input.x.size() % d != 0)
    throw core::Error(attack + ": the inputs hold " + std::to_string(input.x.size()) +
                          " values, not a whole number of samples of " + std::to_string(d) + " features",
                      "give inputs of the model's input shape");
  const std::size_t n = input.x.size() / d;
  if (input.labels.size() != n)
    throw core::Error(attack + ": " + std::to_string(input.labels.size()) + " labels for " + std::to_string(n) +
                          " samples",
                      "give one label per sample");
  if (!input.targets.empty() && input.targets.size() != n)
    throw core::Error(attack + ": " + std::to_string(input.targets.size()) + " targets for " + std::to_string(n) +
                          " samples",
                      "give one target class per sample, or none for an untargeted attack");
  for (std::size_t i = 0; i < n; ++i) {
    if (input.labels[i] < 0 || input.labels[i] >= k)
      throw core::Error(attack + ": label " + std::to_string(input.labels[i]) + " of sample " + std::to_string(i) +
                            " is not one of the model's " + std::to_string(k) + " classes",
                        "labels are class indices from 0 to " + std::to_string(k - 1));
    if (!input.targets.empty()) {
      if (input.targets[i] < 0 || input.targets[i] >= k)
        throw core::Error(attack + ": target " + std::to_string(input.targets[i]) + " of sample " +
                              std::to_string(i) + " is not one of the model's " + std::to_string(k) + " classes",
                          "targets are class indices from 0 to " + std::to_string(k - 1));
      if (input.targets[i] == input.labels[i])
        throw core::Error(attack + ": sample " + std::to_string(i) + " has its own label as target",
                          "choose a target class other than the true label");
    }
  }
  for (std::size_t j = 0; j < input.x.size(); ++j)
    if (!(input.x[j] >= bounds.lo && input.x[j] <= bounds.hi))
      throw core::Error(attack + ": input value " + std::to_string(input.x[j]) + " of sample " +
                            std::to_string(j / d) + " lies outside the range [" + std::to_string(bounds.lo) + ", " +
                            std::to_string(bounds.hi) + "]",
                        "state the range the inputs were scaled to with --range LO,HI");
  return n;
}

// A budget must be a positive finite number.
inline void check_positive_budget(const std::string& attack, float eps) {
  if (!(eps > 0.0f) || !std::isfinite(eps))
    throw core::Error(attack + ": eps is " + std::to_string(eps) + "; the budget must be a positive finite number",
                      "give the perturbation budget with --eps, for example 8/255 for Linf on [0, 1] images");
}

// A positive finite budget, and not an Linf budget wider than the value range, which makes every
// input reachable (almost always eps given in pixel units for inputs scaled to [0, 1]).
inline void check_budget(const std::string& attack, Norm norm, float eps, const Bounds& bounds) {
  check_positive_budget(attack, eps);
  if (norm == Norm::Linf && static_cast<double>(eps) > static_cast<double>(bounds.hi) - bounds.lo)
    throw core::Error(attack + ": the Linf budget eps = " + std::to_string(eps) + " is wider than the whole value range [" +
                          std::to_string(bounds.lo) + ", " + std::to_string(bounds.hi) +
                          "], so every input would be reachable",
                      "give eps in the units of the inputs: for images scaled to [0, 1], 8/255 = 0.031 rather than 8");
}

// What a budgeted gradient attack checks before its first query: its own options and the model
// (validate), the budget and the inputs. Returns the number of samples.
inline std::size_t check_budgeted_run(const EvasionAttack& attack, const models::Classifier& model,
                                      const AttackInput& input, float eps, const Bounds& bounds) {
  attack.validate(model.info(), bounds);
  check_budget(attack.name(), attack.norm(), eps, bounds);
  return check_attack_input(model, input, bounds, attack.name());
}

// Scores for all the samples laid out in `inputs`, asked of the model in its preferred batch size.
inline void predict_in_batches(models::Classifier& model, std::span<const float> inputs, std::span<float> scores) {
  const std::size_t d = model.sample_size();
  const std::size_t k = static_cast<std::size_t>(model.num_classes());
  const std::size_t n = inputs.size() / d;
  const std::size_t batch = std::max<std::size_t>(model.preferred_batch(), 1);
  for (std::size_t start = 0; start < n; start += batch) {
    const std::size_t m = std::min(batch, n - start);
    model.predict(inputs.subspan(start * d, m * d), scores.subspan(start * k, m * k));
  }
}

// Whether a row of scores is a success: any class but `label` on top (untargeted, target < 0), or
// `target` on top (targeted).
inline bool is_adversarial(std::span<const float> scores, int label, int target) {
  const int top = models::argmax(scores);
  return target >= 0 ? top == target : top != label;
}

// The cross-entropy objective the gradient attacks ascend: CE of the label (untargeted, target < 0)
// or minus CE of the target (targeted). Fills its score gradient and returns its value.
inline double cross_entropy_objective(models::ScoreKind kind, std::span<const float> scores, int label, int target,
                                      std::span<float> grad) {
  if (target < 0) return cross_entropy(kind, scores, label, grad);
  const double loss = cross_entropy(kind, scores, target, grad);
  for (float& g : grad) g = -g;
  return -loss;
}

// Indices of the `count` (at most 4) largest entries of a row, largest first, in one pass and
// without allocating (rows can be long: 1000 classes).
inline std::array<int, 4> top_indices(std::span<const float> row, int count) {
  std::array<int, 4> top{-1, -1, -1, -1};
  for (int c = 0; c < static_cast<int>(row.size()); ++c) {
    int place = count;
    while (place > 0 && (top[place - 1] < 0 || row[c] > row[top[place - 1]])) --place;
    if (place >= count) continue;
    for (int m = count - 1; m > place; --m) top[m] = top[m - 1];
    top[place] = c;
  }
  return top;
}

// Difference of Logits Ratio (Croce & Hein 2020), untargeted:
//   -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12),  pi = classes sorted by logit, descending.
// It is invariant to shifting and scaling the logits, so it needs logits and at least 3 classes.
// Fills its score gradient and returns its value.
inline double dlr_loss(std::span<const float> z, int label, std::span<float> grad) {
  const auto top = top_indices(z, 3);
  const int other = top[0] != label ? top[0] : top[1];
  const double margin = static_cast<double>(z[label]) - z[other];
  const double scale = static_cast<double>(z[top[0]]) - z[top[2]] + 1e-12;
  std::fill(grad.begin(), grad.end(), 0.0f);
  grad[label] += static_cast<float>(-1.0 / scale);
  grad[other] += static_cast<float>(1.0 / scale);
  const double by_scale = margin / (scale * scale);
  grad[top[0]] += static_cast<float>(by_scale);
  grad[top[2]] -= static_cast<float>(by_scale);
  return -margin / scale;
}

// The targeted DLR loss of the same paper, ascended to reach `target` (needs 4 classes):
//   -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12).
inline double targeted_dlr_loss(std::span<const float> z, int label, int target, std::span<float> grad) {
  const auto top = top_indices(z, 4);
  const double margin = static_cast<double>(z[label]) - z[target];
  const double scale = static_cast<double>(z[top[0]]) - 0.5 * (static_cast<double>(z[top[2]]) + z[top[3]]) + 1e-12;
  std::fill(grad.begin(), grad.end(), 0.0f);
  grad[label] += static_cast<float>(-1.0 / scale);
  grad[target] += static_cast<float>(1.0 / scale);
  const double by_scale = margin / (scale * scale);
  grad[top[0]] += static_cast<float>(by_scale);
  grad[top[2]] -= static_cast<float>(0.5 * by_scale);
  grad[top[3]] -= static_cast<float>(0.5 * by_scale);
  return -margin / scale;
}

// A random point of the eps ball: uniform in the Linf cube, or uniform in the L2 ball (Gaussian
// direction, radius eps * u^(1/D)). Random starts of PGD and APGD draw from it.
inline void random_in_ball(Norm norm, float eps, std::mt19937_64& rng, std::span<float> delta) {
  if (norm == Norm::Linf) {
    std::uniform_real_distribution<float> uniform(-eps, eps);
    for (float& v : delta) v = uniform(rng);
    return;
  }
  std::normal_distribution<double> normal(0.0, 1.0);
  double sum = 0;
  for (float& v : delta) {
    const double g = normal(rng);
    v = static_cast<float>(g);
    sum += g * g;
  }
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  const double radius = eps * std::pow(uniform(rng), 1.0 / static_cast<double>(std::max<std::size_t>(delta.size(), 1)));
  const double scale = sum > 0 ? radius / std::sqrt(sum) : 0.0;
  for (float& v : delta) v = static_cast<float>(v * scale);
}

// Sum of squares with eight partial sums, so that the additions do not wait on each other: the
// compiler may not reorder one running sum, and on long inputs the chain of dependent additions
// would cost more than the rest of an attack step.
inline double sum_of_squares(std::span<const float> v) {
  double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const std::size_t size = v.size(), whole = size - size % 8;
  for (std::size_t j = 0; j < whole; j += 8)
    for (std::size_t lane = 0; lane < 8; ++lane) {
      const double value = v[j + lane];
      part[lane] += value * value;
    }
  for (std::size_t j = whole; j < size; ++j) part[j - whole] += static_cast<double>(v[j]) * v[j];
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// ||a - b||^2, summed the same way.
inline double squared_distance(std::span<const float> a, std::span<const float> b) {
  double part[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const std::size_t size = a.size(), whole = size - size % 8;
  for (std::size_t j = 0; j < whole; j += 8)
    for (std::size_t lane = 0; lane < 8; ++lane) {
      const double diff = static_cast<double>(a[j + lane]) - b[j + lane];
      part[lane] += diff * diff;
    }
  for (std::size_t j = whole; j < size; ++j) {
    const double diff = static_cast<double>(a[j]) - b[j];
    part[j - whole] += diff * diff;
  }
  return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

// ART's order for a PGD or FGSM step: clip the stepped point to the value range, then pull its
// difference from x back into the eps ball (Linf: clamp each coordinate, L2: rescale). For Linf it
// is the same point as project(); it is written in ART's float32 arithmetic so that the iterates
// agree with ART's bit for bit. The last clamp only guards against rounding.
inline void clip_then_project(Norm norm, float eps, const Bounds& bounds, std::span<const float> x,
                              std::span<float> x_adv) {
  const std::size_t d = x.size();
  const float lo = bounds.lo, hi = bounds.hi;
  if (norm == Norm::Linf) {
    for (std::size_t j = 0; j < d; ++j) {
      const float clipped = std::min(std::max(x_adv[j], lo), hi);
      const float delta = std::min(std::max(clipped - x[j], -eps), eps);
      x_adv[j] = std::min(std::max(x[j] + delta, lo), hi);
    }
    return;
  }
  for (std::size_t j = 0; j < d; ++j) x_adv[j] = std::min(std::max(x_adv[j], lo), hi) - x[j];
  const double length = std::sqrt(sum_of_squares(x_adv));
  const float scale = length > 0 ? static_cast<float>(std::min(1.0, eps / length)) : 0.0f;
  for (std::size_t j = 0; j < d; ++j) x_adv[j] = std::min(std::max(x[j] + x_adv[j] * scale, lo), hi);
}

// The L2 length of a gradient, or 0 where it gives no direction to follow (all zeros, or a length
// that is not finite).
inline double direction_length(std::span<const float> g) {
  const double length = std::sqrt(sum_of_squares(g));
  return length > 0 && std::isfinite(length) ? length : 0.0;
}

// The sign of each gradient entry as -1, 0 or 1 (0 also for NaN, which ART replaces by 0).
inline float sign_of(float g) { return static_cast<float>((g > 0.0f) - (g < 0.0f)); }

}  // namespace aegis::attacks::detail
