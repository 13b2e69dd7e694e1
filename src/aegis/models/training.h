// Plain supervised training of a TrainableClassifier: the recipe that LiRA's reference models and
// extraction surrogates are trained with (a YAML file, so that the recipe of the audited model can
// be written down once and repeated exactly), and the epoch loop.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "aegis/models/torchscript_classifier.h"

namespace aegis::models {

struct TrainingRecipe {
  std::string architecture;  // TorchScript file whose architecture is re-initialised; empty = the audited model's
  int epochs = 10;
  std::size_t batch = 128;
  std::string optimizer = "adam";  // adam or sgd (momentum 0.9)
  double learning_rate = 1e-3;
  double weight_decay = 0.0;
  std::uint64_t seed = 0;
  bool flip_augment = false;  // random horizontal flips of image samples {C, H, W} while training

  TrainingOptions optimizer_options() const { return {optimizer, learning_rate, weight_decay}; }
};

// Reads a recipe: a YAML mapping with any of architecture, epochs, batch, optimizer, learning_rate,
// weight_decay, seed, augment (none|flip). Unknown keys and values out of range are refused with
// the line they are on. A relative architecture path is taken relative to the recipe's folder.
TrainingRecipe load_training_recipe(const std::string& path);

struct FitReport {
  double final_loss = 0;  // mean loss of the last epoch
  double seconds = 0;
};

using FitProgress = std::function<void(std::size_t samples_done)>;

// Trains in place for recipe.epochs passes over (x, labels) in shuffled batches (deterministic for
// recipe.seed). `progress` is called after every batch with the samples done in this call.
FitReport fit(TrainableClassifier& model, std::span<const float> x, std::span<const int> labels,
              const TrainingRecipe& recipe, const FitProgress& progress = {});

// The same against soft targets: rows of num_classes probabilities (distillation).
FitReport fit_soft(TrainableClassifier& model, std::span<const float> x, std::span<const float> targets,
                   const TrainingRecipe& recipe, const FitProgress& progress = {});

// Share of samples whose arg-max score is their label.
double accuracy(Classifier& model, std::span<const float> x, std::span<const int> labels);

}  // namespace aegis::models
