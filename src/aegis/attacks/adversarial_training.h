// Defences that change the model: adversarial training (Madry et al. 2018: train on PGD examples),
// TRADES (Zhang et al. 2019: clean cross-entropy + beta * KL to the adversarial prediction), and
// Gaussian data augmentation (Cohen et al. 2019: the base classifier of randomized smoothing).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "aegis/attacks/evasion.h"
#include "aegis/models/torchscript_classifier.h"

namespace aegis::attacks {

enum class HardeningMethod { Pgd, Trades, Gaussian };
HardeningMethod parse_hardening_method(const std::string& text);

struct HardeningOptions {
  HardeningMethod method = HardeningMethod::Pgd;
  float eps = 0.1f;            // L-inf budget of the training attack
  int steps = 7;               // inner attack steps
  float step_size = 0;         // 0 = 2.5 * eps / steps
  double beta = 6.0;           // TRADES trade-off
  float sigma = 0.25f;         // Gaussian augmentation noise
  int epochs = 1;
  std::size_t batch = 128;
  double learning_rate = 1e-3;
  Bounds bounds;
  std::uint64_t seed = 0;
};

struct EpochReport {
  int epoch = 0;
  double mean_loss = 0;
  double seconds = 0;
};

// Trains `model` in place over (x, y), shuffled each epoch. `progress` gets samples done / total.
std::vector<EpochReport> harden(models::TrainableClassifier& model, std::span<const float> x, std::span<const int> y,
                                const HardeningOptions& options,
                                const std::function<void(std::size_t done, std::size_t total)>& progress = {});

}  // namespace aegis::attacks
