#include "aegis/attacks/inference/membership_scores.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>

#include <Eigen/Dense>

#include "aegis/core/error.h"

namespace aegis::attacks {
namespace {

constexpr double kMinProbability = 1e-30;
constexpr double kMinStddev = 1e-6;

std::string number(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", value);
  return text;
}

std::size_t check_rows(std::span<const float> scores, std::span<const int> labels, std::size_t classes,
                       const char* who) {
  if (classes < 2)
    throw core::Error(std::string(who) + ": the model has " + std::to_string(classes) +
                      " classes; membership scores need at least 2");
  if (scores.size() != labels.size() * classes)
    throw core::Error(std::string(who) + ": " + std::to_string(scores.size()) + " scores for " +
                      std::to_string(labels.size()) + " labels of " + std::to_string(classes) + " classes");
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (labels[i] < 0 || static_cast<std::size_t>(labels[i]) >= classes)
      throw core::Error(std::string(who) + ": record " + std::to_string(i) + " has label " + std::to_string(labels[i]) +
                            ", outside the model's " + std::to_string(classes) + " classes",
                        "check that the labels match the model's class order");
    for (std::size_t j = 0; j < classes; ++j)
      if (!std::isfinite(scores[i * classes + j]))
        throw core::Error(std::string(who) + ": record " + std::to_string(i) + " has a non-finite output (class " +
                              std::to_string(j) + ")",
                          "the model overflowed on that record; check its input");
  }
  return labels.size();
}

// One prediction seen as a distribution, whatever form the model gave it in. Logits are handled in
// log space throughout, so a logit of 1000 gives exact log-probabilities instead of log(0).
class Prediction {
 public:
  Prediction(std::span<const float> row, models::ScoreKind kind) : row_(row), logits_(kind == models::ScoreKind::Logits) {
    if (logits_) log_total_ = log_sum_exp_except(row_.size());
  }

  double log_p(std::size_t j) const {
    if (logits_) return row_[j] - log_total_;
    return std::log(std::max<double>(row_[j], kMinProbability));
  }

  double p(std::size_t j) const { return logits_ ? std::exp(log_p(j)) : static_cast<double>(row_[j]); }

  // log sum_{k != j} p_k, summed directly rather than as 1 - p_j, which is 0 in floating point once p_j is
  // within an ulp of 1.
  double log_rest(std::size_t j) const {
    if (logits_) return log_sum_exp_except(j) - log_total_;
    double rest = 0;
    for (std::size_t k = 0; k < row_.size(); ++k)
      if (k != j) rest += row_[k];
    return std::log(std::max(rest, kMinProbability));
  }

  // log(1 - p_j): log1p is accurate while p_j is small; past 1/2 the direct sum is.
  double log_one_minus(std::size_t j) const {
    const double pj = p(j);
    return pj < 0.5 ? std::log1p(-pj) : log_rest(j);
  }

  // z_y - logsumexp_{j != y} z_j, without going through log_total_, so it keeps every digit.
  double phi(std::size_t y) const {
    if (logits_) return row_[y] - log_sum_exp_except(y);
    return log_p(y) - log_rest(y);
  }

 private:
  // logsumexp of the row without entry `skip` (pass size() to skip none).
  double log_sum_exp_except(std::size_t skip) const {
    double top = -std::numeric_limits<double>::infinity();
    for (std::size_t k = 0; k < row_.size(); ++k)
      if (k != skip) top = std::max<double>(top, row_[k]);
    double sum = 0;
    for (std::size_t k = 0; k < row_.size(); ++k)
      if (k != skip) sum += std::exp(row_[k] - top);
    return top + std::log(sum);
  }

  std::span<const float> row_;
  bool logits_;
  double log_total_ = 0;
};

template <typename PerRow>
std::vector<double> per_row(std::span<const float> scores, std::span<const int> labels, std::size_t classes,
                            models::ScoreKind kind, const char* who, PerRow score) {
  const std::size_t rows = check_rows(scores, labels, classes, who);
  std::vector<double> out(rows);
  for (std::size_t i = 0; i < rows; ++i) {
    const Prediction prediction(scores.subspan(i * classes, classes), kind);
    out[i] = score(prediction, static_cast<std::size_t>(labels[i]), classes);
  }
  return out;
}

// ---- LiRA ----

void check_lira(std::span<const double> target_phi, std::span<const double> reference_phi,
                std::span<const std::uint8_t> in, std::size_t models, std::size_t records, std::size_t augmentations) {
  if (models == 0 || augmentations == 0)
    throw core::Error("LiRA: " + std::to_string(models) + " reference models and " + std::to_string(augmentations) +
                          " augmentations; both must be at least 1",
                      "train reference models on random halves of the data (the paper uses 16 to 256)");
  const std::size_t per_model = records * augmentations;
  if (target_phi.size() != per_model)
    throw core::Error("LiRA: " + std::to_string(target_phi.size()) + " target values for " + std::to_string(records) +
                      " records x " + std::to_string(augmentations) + " augmentations");
  if (reference_phi.size() != models * per_model)
    throw core::Error("LiRA: " + std::to_string(reference_phi.size()) + " reference values for " +
                      std::to_string(models) + " models x " + std::to_string(records) + " records x " +
                      std::to_string(augmentations) + " augmentations");
  if (in.size() != models * records)
    throw core::Error("LiRA: " + std::to_string(in.size()) + " membership flags for " + std::to_string(models) +
                      " models x " + std::to_string(records) + " records");
  for (std::size_t k = 0; k < target_phi.size(); ++k)
    if (!std::isfinite(target_phi[k]))
      throw core::Error("LiRA: the target's value for record " + std::to_string(k / augmentations) +
                        " (augmentation " + std::to_string(k % augmentations) + ") is " + number(target_phi[k]));
  for (std::size_t k = 0; k < reference_phi.size(); ++k)
    if (!std::isfinite(reference_phi[k]))
      throw core::Error("LiRA: reference model " + std::to_string(k / per_model) + "'s value for record " +
                        std::to_string(k % per_model / augmentations) + " is " + number(reference_phi[k]));
}

// Means and spreads of the reference values on one side (IN or OUT) for every record and augmentation.
struct GaussianFit {
  std::vector<std::size_t> count;  // models on this side, per record
  std::vector<double> mean, squares;  // per record x augmentation; squares = sum of squared deviations
  double pooled_variance = 0;
  bool pooled = false;  // some record has 2 or more values, so pooled_variance means something

  double stddev(std::size_t record, std::size_t cell, bool fixed) const {
    double variance = pooled_variance;
    if (!fixed && count[record] >= 2) variance = squares[cell] / static_cast<double>(count[record] - 1);
    return std::max(std::sqrt(variance), kMinStddev);
  }
};

GaussianFit fit_side(std::span<const double> reference_phi, std::span<const std::uint8_t> in, std::size_t models,
                     std::size_t records, std::size_t augmentations, bool member) {
  GaussianFit fit;
  fit.count.assign(records, 0);
  fit.mean.assign(records * augmentations, 0.0);
  fit.squares.assign(records * augmentations, 0.0);
  auto on_side = [&](std::size_t m, std::size_t i) { return (in[m * records + i] != 0) == member; };
  for (std::size_t m = 0; m < models; ++m)
    for (std::size_t i = 0; i < records; ++i) {
      if (!on_side(m, i)) continue;
      ++fit.count[i];
      for (std::size_t a = 0; a < augmentations; ++a)
        fit.mean[i * augmentations + a] += reference_phi[(m * records + i) * augmentations + a];
    }
  for (std::size_t i = 0; i < records; ++i)
    for (std::size_t a = 0; a < augmentations; ++a)
      if (fit.count[i] > 0) fit.mean[i * augmentations + a] /= static_cast<double>(fit.count[i]);
  for (std::size_t m = 0; m < models; ++m)
    for (std::size_t i = 0; i < records; ++i) {
      if (!on_side(m, i)) continue;
      for (std::size_t a = 0; a < augmentations; ++a) {
        const std::size_t cell = i * augmentations + a;
        const double deviation = reference_phi[(m * records + i) * augmentations + a] - fit.mean[cell];
        fit.squares[cell] += deviation * deviation;
      }
    }
  // Pooling within-record deviations keeps the spread of the records' means out of the variance: it is
  // the noise of retraining that LiRA models, not how records differ from each other.
  double squares = 0, freedom = 0;
  for (std::size_t i = 0; i < records; ++i) {
    if (fit.count[i] < 2) continue;
    for (std::size_t a = 0; a < augmentations; ++a) squares += fit.squares[i * augmentations + a];
    freedom += static_cast<double>((fit.count[i] - 1) * augmentations);
  }
  fit.pooled = freedom > 0;
  if (fit.pooled) fit.pooled_variance = squares / freedom;
  return fit;
}

GaussianFit fit_out(std::span<const double> reference_phi, std::span<const std::uint8_t> in, std::size_t models,
                    std::size_t records, std::size_t augmentations) {
  GaussianFit out = fit_side(reference_phi, in, models, records, augmentations, false);
  const std::size_t lacking = static_cast<std::size_t>(std::count(out.count.begin(), out.count.end(), 0));
  if (lacking > 0)
    throw core::Error("LiRA: " + std::to_string(lacking) + " of " + std::to_string(records) +
                          " records have no reference model trained without them",
                      "train more reference models, each on a random half of the data, so every record is left "
                      "out of several");
  if (!out.pooled)
    throw core::Error("LiRA: no record is left out of 2 or more reference models, so the spread of their outputs "
                      "cannot be estimated",
                      "train more reference models (the paper uses 16 or more)");
  return out;
}

double offline_score(std::span<const double> target_phi, const GaussianFit& out, std::size_t record,
                     std::size_t augmentations, bool fixed) {
  double score = 0;
  for (std::size_t a = 0; a < augmentations; ++a) {
    const std::size_t cell = record * augmentations + a;
    score += (target_phi[cell] - out.mean[cell]) / out.stddev(record, cell, fixed);
  }
  return score;
}

// log N(x; mean, stddev) without the constant, which cancels in the ratio.
double log_normal(double x, double mean, double stddev) {
  const double z = (x - mean) / stddev;
  return -0.5 * z * z - std::log(stddev);
}

// ---- shadow attack ----

void shadow_row(const Prediction& prediction, std::size_t label, std::size_t classes, std::span<const float> row,
                std::vector<double>& top, double* features) {
  top.resize(classes);
  for (std::size_t j = 0; j < classes; ++j) top[j] = prediction.p(j);
  const std::size_t kept = std::min<std::size_t>(3, classes);
  std::partial_sort(top.begin(), top.begin() + static_cast<std::ptrdiff_t>(kept), top.end(), std::greater<>());
  for (std::size_t k = 0; k < 3; ++k) features[k] = k < kept ? top[k] : 0.0;
  features[3] = prediction.p(label);
  // Capped where a probability's would be, so that the attack sees the same feature whether the model
  // gives logits or probabilities.
  features[4] = std::min(-prediction.log_p(label), -std::log(kMinProbability));
  features[5] = static_cast<std::size_t>(models::argmax(row)) == label ? 1.0 : 0.0;
}

Eigen::MatrixXd design(const std::vector<double>& features, std::size_t rows, const std::vector<double>& mean,
                       const std::vector<double>& scale) {
  Eigen::MatrixXd x(static_cast<Eigen::Index>(rows), static_cast<Eigen::Index>(kShadowFeatures + 1));
  for (std::size_t i = 0; i < rows; ++i) {
    const auto r = static_cast<Eigen::Index>(i);
    x(r, 0) = 1.0;
    for (std::size_t f = 0; f < kShadowFeatures; ++f)
      x(r, static_cast<Eigen::Index>(f + 1)) = (features[i * kShadowFeatures + f] - mean[f]) / scale[f];
  }
  return x;
}

// log(1 + exp(t)) without overflow.
double softplus(double t) { return std::max(t, 0.0) + std::log1p(std::exp(-std::abs(t))); }

}  // namespace

std::vector<double> loss_scores(std::span<const float> scores, std::span<const int> labels, std::size_t classes,
                                models::ScoreKind kind) {
  return per_row(scores, labels, classes, kind, "loss score",
                 [](const Prediction& p, std::size_t y, std::size_t) { return p.log_p(y); });
}

std::vector<double> confidence_scores(std::span<const float> scores, std::span<const int> labels, std::size_t classes,
                                      models::ScoreKind kind) {
  return per_row(scores, labels, classes, kind, "confidence score", [](const Prediction& p, std::size_t, std::size_t c) {
    double top = 0;
    for (std::size_t j = 0; j < c; ++j) top = std::max(top, p.p(j));
    return top;
  });
}

std::vector<double> entropy_scores(std::span<const float> scores, std::span<const int> labels, std::size_t classes,
                                   models::ScoreKind kind) {
  return per_row(scores, labels, classes, kind, "entropy score", [](const Prediction& p, std::size_t, std::size_t c) {
    double sum = 0;
    for (std::size_t j = 0; j < c; ++j) {
      const double pj = p.p(j);
      if (pj > 0) sum += pj * p.log_p(j);
    }
    return sum;
  });
}

std::vector<double> modified_entropy_scores(std::span<const float> scores, std::span<const int> labels,
                                            std::size_t classes, models::ScoreKind kind) {
  return per_row(scores, labels, classes, kind, "modified entropy score",
                 [](const Prediction& p, std::size_t y, std::size_t c) {
                   double sum = std::exp(p.log_one_minus(y)) * p.log_p(y);
                   for (std::size_t j = 0; j < c; ++j) {
                     if (j == y) continue;
                     const double pj = p.p(j);
                     if (pj > 0) sum += pj * p.log_one_minus(j);
                   }
                   return sum;
                 });
}

std::vector<double> logit_scaled_confidence(std::span<const float> scores, std::span<const int> labels,
                                            std::size_t classes, models::ScoreKind kind) {
  return per_row(scores, labels, classes, kind, "LiRA phi",
                 [](const Prediction& p, std::size_t y, std::size_t) { return p.phi(y); });
}

std::size_t records_without_reference(std::span<const std::uint8_t> in, std::size_t models, std::size_t records,
                                      bool member) {
  if (in.size() != models * records)
    throw core::Error("LiRA: " + std::to_string(in.size()) + " membership flags for " + std::to_string(models) +
                      " models x " + std::to_string(records) + " records");
  std::size_t lacking = 0;
  for (std::size_t i = 0; i < records; ++i) {
    bool found = false;
    for (std::size_t m = 0; m < models && !found; ++m) found = (in[m * records + i] != 0) == member;
    if (!found) ++lacking;
  }
  return lacking;
}

std::vector<double> lira_online(std::span<const double> target_phi, std::span<const double> reference_phi,
                                std::span<const std::uint8_t> in, std::size_t models, std::size_t records,
                                std::size_t augmentations, const LiraOptions& options) {
  check_lira(target_phi, reference_phi, in, models, records, augmentations);
  const GaussianFit out = fit_out(reference_phi, in, models, records, augmentations);
  GaussianFit inside = fit_side(reference_phi, in, models, records, augmentations, true);
  if (!inside.pooled) {
    inside.pooled_variance = out.pooled_variance;
    inside.pooled = true;
  }
  std::vector<double> scores(records);
  for (std::size_t i = 0; i < records; ++i) {
    if (inside.count[i] == 0) {
      scores[i] = offline_score(target_phi, out, i, augmentations, options.fixed_variance);
      continue;
    }
    double score = 0;
    for (std::size_t a = 0; a < augmentations; ++a) {
      const std::size_t cell = i * augmentations + a;
      score += log_normal(target_phi[cell], inside.mean[cell], inside.stddev(i, cell, options.fixed_variance)) -
               log_normal(target_phi[cell], out.mean[cell], out.stddev(i, cell, options.fixed_variance));
    }
    scores[i] = score;
  }
  return scores;
}

std::vector<double> lira_offline(std::span<const double> target_phi, std::span<const double> reference_phi,
                                 std::span<const std::uint8_t> in, std::size_t models, std::size_t records,
                                 std::size_t augmentations, const LiraOptions& options) {
  check_lira(target_phi, reference_phi, in, models, records, augmentations);
  const GaussianFit out = fit_out(reference_phi, in, models, records, augmentations);
  std::vector<double> scores(records);
  for (std::size_t i = 0; i < records; ++i)
    scores[i] = offline_score(target_phi, out, i, augmentations, options.fixed_variance);
  return scores;
}

std::vector<double> shadow_features(std::span<const float> scores, std::span<const int> labels, std::size_t classes,
                                    models::ScoreKind kind) {
  const std::size_t rows = check_rows(scores, labels, classes, "shadow attack");
  std::vector<double> features(rows * kShadowFeatures), sorted;
  for (std::size_t i = 0; i < rows; ++i) {
    const auto row = scores.subspan(i * classes, classes);
    shadow_row(Prediction(row, kind), static_cast<std::size_t>(labels[i]), classes, row, sorted,
               features.data() + i * kShadowFeatures);
  }
  return features;
}

void ShadowAttackModel::fit(std::span<const float> scores, std::span<const int> labels, std::size_t classes,
                            models::ScoreKind kind, std::span<const std::uint8_t> is_member) {
  const std::vector<double> features = shadow_features(scores, labels, classes, kind);
  const std::size_t rows = labels.size();
  if (is_member.size() != rows)
    throw core::Error("shadow attack: " + std::to_string(is_member.size()) + " membership flags for " +
                      std::to_string(rows) + " predictions");
  const auto members = static_cast<std::size_t>(std::count_if(is_member.begin(), is_member.end(),
                                                              [](std::uint8_t v) { return v != 0; }));
  if (members == 0 || members == rows)
    throw core::Error("shadow attack: the shadow predictions are all " +
                          std::string(members == 0 ? "non-members" : "members") +
                          "; the attack model learns from both",
                      "query the shadow models on records from inside and outside their training sets");
  if (!(l2_ >= 0) || !std::isfinite(l2_))
    throw core::Error("shadow attack: L2 penalty " + number(l2_) + " is not a non-negative number");

  mean_.assign(kShadowFeatures, 0.0);
  scale_.assign(kShadowFeatures, 0.0);
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t f = 0; f < kShadowFeatures; ++f) mean_[f] += features[i * kShadowFeatures + f];
  for (double& m : mean_) m /= static_cast<double>(rows);
  for (std::size_t i = 0; i < rows; ++i)
    for (std::size_t f = 0; f < kShadowFeatures; ++f) {
      const double d = features[i * kShadowFeatures + f] - mean_[f];
      scale_[f] += d * d;
    }
  // A feature that never varies (the top-3 probability of a 2-class model) gets scale 1 and, with
  // the penalty, weight 0.
  for (double& s : scale_) {
    s = std::sqrt(s / static_cast<double>(rows));
    if (!(s > 1e-12)) s = 1.0;
  }

  const Eigen::MatrixXd x = design(features, rows, mean_, scale_);
  Eigen::VectorXd target(static_cast<Eigen::Index>(rows));
  for (std::size_t i = 0; i < rows; ++i) target(static_cast<Eigen::Index>(i)) = is_member[i] ? 1.0 : 0.0;
  const auto dims = x.cols();
  const double n = static_cast<double>(rows);
  // The bias is not penalised, but gets a tiny ridge so the Hessian stays invertible on separable data.
  Eigen::VectorXd penalty = Eigen::VectorXd::Constant(dims, l2_);
  penalty(0) = 1e-12;

  auto objective = [&](const Eigen::VectorXd& w) {
    const Eigen::VectorXd margin = x * w;
    double sum = 0;
    for (Eigen::Index i = 0; i < margin.size(); ++i) sum += softplus(target(i) > 0.5 ? -margin(i) : margin(i));
    return sum / n + 0.5 * w.cwiseProduct(penalty).dot(w);
  };

  // Newton's method with a backtracking line search: a handful of steps to machine precision, and no
  // learning rate or random initialisation to make results depend on.
  Eigen::VectorXd w = Eigen::VectorXd::Zero(dims);
  double current = objective(w);
  for (int iteration = 0; iteration < 100; ++iteration) {
    const Eigen::VectorXd margin = x * w;
    Eigen::VectorXd p(margin.size()), curvature(margin.size());
    for (Eigen::Index i = 0; i < margin.size(); ++i) {
      p(i) = 1.0 / (1.0 + std::exp(-margin(i)));
      curvature(i) = p(i) * (1.0 - p(i));
    }
    const Eigen::VectorXd gradient = x.transpose() * (p - target) / n + penalty.cwiseProduct(w);
    Eigen::MatrixXd hessian = x.transpose() * curvature.asDiagonal() * x / n;
    hessian.diagonal() += penalty;
    const Eigen::VectorXd step = hessian.ldlt().solve(gradient);
    double t = 1.0, next = current;
    Eigen::VectorXd candidate = w;
    for (int halving = 0; halving < 40; ++halving, t /= 2) {
      candidate = w - t * step;
      next = objective(candidate);
      if (next <= current) break;
    }
    if (!(next <= current)) break;  // no step lowers the objective: at the optimum to rounding
    w = candidate;
    const bool converged = current - next <= 1e-14 * std::max(1.0, std::abs(current)) ||
                           (t * step).lpNorm<Eigen::Infinity>() < 1e-10;
    current = next;
    if (converged) break;
  }
  weights_.assign(w.data(), w.data() + w.size());
}

std::vector<double> ShadowAttackModel::score(std::span<const float> scores, std::span<const int> labels,
                                             std::size_t classes, models::ScoreKind kind) const {
  if (!fitted())
    throw core::Error("shadow attack: the attack model has not been trained",
                      "fit it on shadow models' predictions first");
  const std::vector<double> features = shadow_features(scores, labels, classes, kind);
  const std::size_t rows = labels.size();
  std::vector<double> out(rows);
  for (std::size_t i = 0; i < rows; ++i) {
    double logit = weights_[0];
    for (std::size_t f = 0; f < kShadowFeatures; ++f)
      logit += weights_[f + 1] * (features[i * kShadowFeatures + f] - mean_[f]) / scale_[f];
    out[i] = logit;
  }
  return out;
}

}  // namespace aegis::attacks
