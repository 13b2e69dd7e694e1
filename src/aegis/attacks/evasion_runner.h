// Runs a plan of evasion attacks over a data set: one clean pass shared by every attack, then each
// attack at each budget in memory-bounded batches, with the metrics an assessment reports (clean
// and robust accuracy, success rate, perturbation norms, queries, time) and findings when a model's
// robustness falls below the threshold.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "aegis/attacks/evasion.h"
#include "aegis/core/finding.h"

namespace aegis::attacks {

// One attack of a plan with its budgets and settings. `name` is one of fgsm, pgd, apgd-ce,
// apgd-dlr, cw, deepfool, square, hopskipjump.
struct AttackSpec {
  std::string name;
  Norm norm = Norm::Linf;
  std::vector<float> eps;           // budgets (budgeted attacks) or thresholds (minimal-norm attacks)
  std::string targeted;             // "" untargeted, "random" (a random other class per sample), or a class index
  std::uint64_t seed = 0;
  PgdOptions pgd;                   // steps, step_size, random_start, restarts (also APGD's steps/restarts)
  ApgdOptions apgd;
  CarliniWagnerOptions cw;
  DeepFoolOptions deepfool;
  SquareOptions square;
  HopSkipJumpOptions hsj;
};

// The attack a spec names, configured (throws core::Error for an unknown name or a norm the
// method does not have).
std::unique_ptr<EvasionAttack> make_attack(const AttackSpec& spec);
std::vector<std::string> attack_names();

struct AttackResult {
  std::string attack;
  Norm norm = Norm::Linf;
  std::optional<float> eps;
  bool targeted = false;
  std::size_t samples = 0;              // evaluated
  std::size_t attacked = 0;             // clean-correct samples the attack ran on
  std::size_t successes = 0;
  double robust_accuracy = 0;           // fraction of all samples still classified correctly
  double success_rate = 0;              // successes / attacked
  std::uint64_t queries = 0;            // model queries the attack spent (samples scored)
  std::uint64_t gradient_queries = 0;   // of which with a backward pass
  double queries_per_success = 0;       // black-box: mean queries of the successful samples
  double mean_l2 = 0, median_l2 = 0, mean_linf = 0, median_linf = 0;  // over successful samples
  double seconds = 0;                   // the attack only (not the clean pass or the check)
  std::string adversarial_path, grid_path;  // written files, if any
};

struct EvasionReport {
  std::size_t samples = 0;
  double clean_accuracy = 0;
  double clean_seconds = 0;
  std::vector<AttackResult> results;
  std::vector<core::Finding> findings;
};

struct RunnerOptions {
  Bounds bounds;
  std::size_t batch = 0;                 // 0 = the model's preferred batch
  double min_robust_accuracy = 0.5;      // below this a result becomes a finding
  std::string output_dir;                // where adversarial .npy and PNG grids go; empty = not written
  bool write_images = false;             // PNG grids (image data only)
  std::vector<std::int64_t> sample_shape;
  std::string model_label;               // for findings and file names
  std::function<void(const std::string& label, std::size_t done, std::size_t total)> progress;
};

// x holds n samples (n * model.sample_size()), y their labels.
EvasionReport run_evasion_plan(models::Classifier& model, std::span<const float> x, std::span<const int> y,
                               const std::vector<AttackSpec>& plan, const RunnerOptions& options);

}  // namespace aegis::attacks
