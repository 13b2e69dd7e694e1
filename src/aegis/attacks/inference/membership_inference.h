// Membership-inference audit: how well can an attacker tell the records a model was trained on
// from others of the same distribution? Threshold attacks on one prediction (loss, Yeom et al.
// 2018; confidence; entropy and Song & Mittal's modified entropy), Shokri et al.'s shadow-model
// attack, and LiRA (Carlini et al. 2022) offline and online over reference models trained with
// the audited model's recipe. Measured as TPR at low FPR, not only as average accuracy.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aegis/attacks/inference/membership_metrics.h"
#include "aegis/core/finding.h"
#include "aegis/models/training.h"

namespace aegis::attacks {

enum class MembershipAttack { Loss, Confidence, Entropy, ModifiedEntropy, Shadow, LiraOffline, LiraOnline };

std::string to_string(MembershipAttack attack);
// "loss,confidence,entropy,modified-entropy,shadow,lira-offline,lira-online" or "all"; throws
// core::Error naming the unknown one.
std::vector<MembershipAttack> parse_membership_attacks(const std::string& list);
// Whether an attack needs reference (shadow) models trained.
bool needs_reference_models(MembershipAttack attack);

struct MembershipAuditOptions {
  std::vector<MembershipAttack> attacks{MembershipAttack::Loss, MembershipAttack::Confidence,
                                        MembershipAttack::Entropy, MembershipAttack::ModifiedEntropy};
  int references = 16;           // LiRA/shadow reference models; each record is IN for exactly half
  int parallel_references = 1;   // reference models trained at once (make_reference must then give
                                 // independent models; give each a share of the cores)
  models::TrainingRecipe recipe;  // how every reference model is trained
  std::vector<double> fprs{0.01, 0.001};
  int bootstrap = 200;            // resamples for the confidence intervals
  bool fixed_variance = true;     // LiRA: one variance over all records (the paper's advice under 64 models)
  std::uint64_t seed = 0;
  std::size_t max_score_values = std::size_t{1} << 27;  // bound on references * records * classes kept
};

// Makes reference model number `index`: the audited architecture with fresh weights.
using ReferenceFactory = std::function<std::unique_ptr<models::TrainableClassifier>(int index)>;
// stage ("scoring", "training reference 3/16"), units done, units total.
using MembershipProgress = std::function<void(const std::string& stage, std::size_t done, std::size_t total)>;

struct MembershipAttackResult {
  MembershipAttack attack;
  MembershipMetrics metrics;
  std::vector<double> scores;  // one per record, members first; higher = more likely a member
  double seconds = 0;          // scoring time (reference training counted once, separately)
};

struct MembershipAuditReport {
  std::vector<MembershipAttackResult> results;
  std::size_t members = 0, nonmembers = 0;
  double member_accuracy = 0, nonmember_accuracy = 0;  // the target's accuracy on each group: the generalisation gap
  int references = 0;
  double reference_training_seconds = 0;
  double reference_member_accuracy = 0, reference_nonmember_accuracy = 0;  // means over reference models
  std::vector<core::Finding> findings;
};

// x, y: the candidate records, the first `members` of them members of the target's training set.
// Checks its inputs first: labels within the model's classes, enough non-members to resolve every
// requested FPR, at least 2 reference models where an attack needs them, the memory bound.
MembershipAuditReport run_membership_audit(models::Classifier& target, std::span<const float> x, std::span<const int> y,
                                           std::size_t members, const MembershipAuditOptions& options,
                                           const ReferenceFactory& make_reference, const MembershipProgress& progress = {});

}  // namespace aegis::attacks
