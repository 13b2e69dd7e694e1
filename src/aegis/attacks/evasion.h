// Evasion attacks, each written once against models::Classifier: a batch of correctly labelled
// inputs in, adversarial inputs out, never outside the value range (or, for budgeted attacks, the
// norm ball). The runner (attacks/evasion_runner.h) turns their output into accuracies and findings.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "aegis/models/classifier.h"

namespace aegis::attacks {

enum class Norm { Linf, L2 };
std::string_view to_string(Norm norm);

// The valid input range of the attack space (after the user's scaling, before normalisation).
struct Bounds {
  float lo = 0.0f;
  float hi = 1.0f;
};

// What every attack is given. `targets` empty = untargeted (move away from `labels`); otherwise
// one target class per sample (reach it).
struct AttackInput {
  std::span<const float> x;       // n * sample_size
  std::span<const int> labels;    // n
  std::span<const int> targets;   // n or empty
};

// Budgeted attacks (FGSM, PGD, APGD, Square) stay within `eps` in `norm`; minimal-norm attacks
// (C&W, DeepFool, HopSkipJump) look for the smallest perturbation and report per-eps results from
// the distances they reach.
enum class AttackKind { Budgeted, MinimalNorm };

struct AttackOutcome {
  std::vector<float> x_adv;                 // n * sample_size
  std::vector<std::uint64_t> queries;       // per sample, model queries the attack spent on it (0 if not tracked)
};

class EvasionAttack {
 public:
  virtual ~EvasionAttack() = default;
  virtual std::string name() const = 0;                 // "pgd", "apgd-ce", "square", …
  virtual AttackKind kind() const = 0;
  virtual Norm norm() const = 0;
  virtual bool needs_gradients() const = 0;
  virtual bool supports_targeted() const = 0;
  // Throws core::Error naming what the model or the settings cannot do, and what to use instead.
  virtual void validate(const models::ClassifierInfo& model, const Bounds& bounds) const;
  // eps is the budget for budgeted attacks and ignored by minimal-norm ones.
  virtual AttackOutcome run(models::Classifier& model, const AttackInput& input, float eps,
                            const Bounds& bounds) = 0;
};

// ---- settings of each attack (defaults follow the original papers and ART) ----

struct FgsmOptions {
  Norm norm = Norm::Linf;
};

struct PgdOptions {
  Norm norm = Norm::Linf;
  int steps = 40;
  std::optional<float> step_size;  // default 2.5 * eps / steps (Madry)
  bool random_start = false;
  int restarts = 1;                // restarts keep, per sample, the first adversarial found
  std::uint64_t seed = 0;
};

enum class ApgdLoss { CrossEntropy, Dlr };
struct ApgdOptions {
  Norm norm = Norm::Linf;
  ApgdLoss loss = ApgdLoss::CrossEntropy;
  int steps = 100;
  int restarts = 1;
  float rho = 0.75f;
  std::uint64_t seed = 0;
};

struct CarliniWagnerOptions {
  float confidence = 0.0f;
  float learning_rate = 0.01f;
  int binary_search_steps = 9;
  int max_iterations = 100;
  float initial_const = 1e-3f;
};

struct DeepFoolOptions {
  int max_iterations = 50;
  float overshoot = 0.02f;
  int candidate_classes = 10;  // the top classes considered at each step
};

struct SquareOptions {
  Norm norm = Norm::Linf;
  int max_queries = 5000;     // per sample
  float p_init = 0.8f;        // initial fraction of pixels changed (Linf); ART and the paper's default
  std::uint64_t seed = 0;
};

struct HopSkipJumpOptions {
  Norm norm = Norm::L2;
  int max_queries = 5000;          // per sample
  int max_iterations = 64;
  int initial_evals = 100;
  int max_evals = 10000;
  int init_size = 100;
  std::uint64_t seed = 0;
};

std::unique_ptr<EvasionAttack> make_fgsm(const FgsmOptions& options);
std::unique_ptr<EvasionAttack> make_pgd(const PgdOptions& options);
std::unique_ptr<EvasionAttack> make_apgd(const ApgdOptions& options);
std::unique_ptr<EvasionAttack> make_carlini_wagner_l2(const CarliniWagnerOptions& options);
std::unique_ptr<EvasionAttack> make_deepfool(const DeepFoolOptions& options);
std::unique_ptr<EvasionAttack> make_square(const SquareOptions& options);
std::unique_ptr<EvasionAttack> make_hop_skip_jump(const HopSkipJumpOptions& options);

}  // namespace aegis::attacks
