// Membership scores from a model's outputs (higher = more likely a training record): the metric
// attacks, LiRA (Carlini et al. 2022) and a Shokri-style shadow-model attack.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "aegis/models/classifier.h"

namespace aegis::attacks {

// Every metric score takes `scores` as rows of `classes` floats (logits or probabilities, as `kind`
// says) and one label per row, and throws core::Error when the sizes disagree, a label is out of
// range, there are fewer than 2 classes or a score is not finite (naming the record). Probabilities
// are used as given, not renormalised; they are clamped at 1e-30 before a logarithm.

// log p_y, the negated cross-entropy loss of the true label.
std::vector<double> loss_scores(std::span<const float> scores, std::span<const int> labels, std::size_t classes,
                                models::ScoreKind kind);
// max_j p_j.
std::vector<double> confidence_scores(std::span<const float> scores, std::span<const int> labels, std::size_t classes,
                                      models::ScoreKind kind);
// sum_j p_j log p_j, the negated Shannon entropy (nats).
std::vector<double> entropy_scores(std::span<const float> scores, std::span<const int> labels, std::size_t classes,
                                   models::ScoreKind kind);
// -Mentr of Song & Mittal 2021: (1 - p_y) log p_y + sum_{j != y} p_j log(1 - p_j).
std::vector<double> modified_entropy_scores(std::span<const float> scores, std::span<const int> labels,
                                            std::size_t classes, models::ScoreKind kind);
// LiRA's phi = log(p_y / (1 - p_y)): from logits z_y - logsumexp_{j != y} z_j, finite for any finite
// logits; from probabilities log p_y - log sum_{j != y} p_j.
std::vector<double> logit_scaled_confidence(std::span<const float> scores, std::span<const int> labels,
                                            std::size_t classes, models::ScoreKind kind);

struct LiraOptions {
  // One variance for IN and one for OUT, pooled over records (within-record deviations only), as the
  // paper advises below 64 reference models; otherwise each record and augmentation gets its own
  // (falling back to the pooled one where it has fewer than 2 values).
  bool fixed_variance = true;
};

// LiRA over reference ("shadow") models.
//   target_phi     records x augmentations: phi of each query to the target model, record-major
//   reference_phi  models x records x augmentations, row-major: the same queries to each reference model
//   in             models x records: 1 when record i was in reference model m's training set
// A Gaussian is fitted per record and augmentation; standard deviations are floored at 1e-6.
//
// Online: sum over augmentations of log N(phi; mu_in, s_in) - log N(phi; mu_out, s_out). A record
// that no reference model trained on gets its offline score instead (count them with
// records_without_reference to say so: those scores are on another scale). If no record has 2 IN
// values, the IN variance is taken from OUT (the paper finds the two close).
// Throws core::Error when sizes disagree, a value is not finite, or some record has no OUT model.
std::vector<double> lira_online(std::span<const double> target_phi, std::span<const double> reference_phi,
                                std::span<const std::uint8_t> in, std::size_t models, std::size_t records,
                                std::size_t augmentations, const LiraOptions& options = {});

// Offline (one-sided): sum over augmentations of (phi - mu_out) / s_out, using OUT models only.
std::vector<double> lira_offline(std::span<const double> target_phi, std::span<const double> reference_phi,
                                 std::span<const std::uint8_t> in, std::size_t models, std::size_t records,
                                 std::size_t augmentations, const LiraOptions& options = {});

// How many records have no reference model with in == member (member = true: records no model
// trained on, which lira_online scores offline; false: records every model trained on).
std::size_t records_without_reference(std::span<const std::uint8_t> in, std::size_t models, std::size_t records,
                                      bool member);

// The features the shadow attack sees for one prediction, in this order.
inline constexpr std::size_t kShadowFeatures = 6;  // top-1, top-2, top-3 probability, p_y, loss, correct
std::vector<double> shadow_features(std::span<const float> scores, std::span<const int> labels, std::size_t classes,
                                    models::ScoreKind kind);

// Shokri et al. 2017 in one model: logistic regression (standardised features, L2, Newton's method,
// so deterministic) trained on shadow models' predictions of records whose membership is known,
// then applied to the target's predictions. One model for all classes, with the label's
// probability and loss among the features, rather than one attack model per class.
class ShadowAttackModel {
 public:
  explicit ShadowAttackModel(double l2 = 1e-3) : l2_(l2) {}

  // Throws core::Error when is_member has the wrong size or holds only one kind of record.
  void fit(std::span<const float> scores, std::span<const int> labels, std::size_t classes, models::ScoreKind kind,
           std::span<const std::uint8_t> is_member);
  // Log-odds of membership per row (not squashed, so confident rows keep their order). Throws
  // core::Error before fit.
  std::vector<double> score(std::span<const float> scores, std::span<const int> labels, std::size_t classes,
                            models::ScoreKind kind) const;

  bool fitted() const { return !weights_.empty(); }
  const std::vector<double>& weights() const { return weights_; }  // bias, then one per standardised feature

 private:
  double l2_;
  std::vector<double> mean_, scale_, weights_;
};

}  // namespace aegis::attacks
