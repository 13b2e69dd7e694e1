#include "aegis/models/training.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <numeric>
#include <random>
#include <vector>

#include "aegis/core/error.h"

namespace aegis::models {
namespace {

[[noreturn]] void recipe_error(const std::string& path, const YAML::Node& node, const std::string& problem) {
  throw core::Error("training recipe " + path + ", line " + std::to_string(node.Mark().line + 1) + ": " + problem,
                    "a recipe is YAML with epochs, batch, optimizer (adam|sgd), learning_rate, weight_decay, seed, "
                    "augment (none|flip) and optionally architecture (a TorchScript file)");
}

template <typename T>
T scalar(const std::string& path, const YAML::Node& node, const std::string& key) {
  try {
    return node.as<T>();
  } catch (const YAML::Exception&) {
    recipe_error(path, node, "`" + key + "` is not a valid value");
  }
}

// Flips each image sample left-right with probability 1/2 (samples {C, H, W} or {H, W}).
void flip_some(std::vector<float>& batch, std::size_t count, std::span<const std::int64_t> shape, std::mt19937_64& rng) {
  if (shape.size() < 2) return;
  const auto width = static_cast<std::size_t>(shape.back());
  const std::size_t sample = batch.size() / count;
  for (std::size_t i = 0; i < count; ++i) {
    if ((rng() & 1u) == 0) continue;
    for (std::size_t row = 0; row < sample / width; ++row) {
      auto* begin = batch.data() + i * sample + row * width;
      std::reverse(begin, begin + width);
    }
  }
}

template <typename Step>
FitReport run_epochs(TrainableClassifier& model, std::size_t n, std::span<const float> x, const TrainingRecipe& recipe,
                     const FitProgress& progress, Step step) {
  if (n == 0) throw core::Error("nothing to train on", "give at least one training record");
  if (recipe.epochs < 1 || recipe.batch < 1) throw core::Error("the training recipe needs epochs >= 1 and batch >= 1");
  const std::size_t sample = model.sample_size();
  if (x.size() != n * sample)
    throw core::Error("training data holds " + std::to_string(x.size()) + " values for " + std::to_string(n) +
                          " records of " + std::to_string(sample) + " values",
                      "the data's sample shape must match the model's input shape");
  const auto start = std::chrono::steady_clock::now();
  std::mt19937_64 rng(recipe.seed);
  std::vector<std::size_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::vector<float> bx;
  std::vector<std::size_t> rows;
  FitReport report;
  std::size_t done = 0;
  for (int epoch = 0; epoch < recipe.epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    double loss_sum = 0;
    std::size_t batches = 0;
    for (std::size_t begin = 0; begin < n; begin += recipe.batch) {
      const std::size_t count = std::min(recipe.batch, n - begin);
      rows.assign(order.begin() + static_cast<std::ptrdiff_t>(begin),
                  order.begin() + static_cast<std::ptrdiff_t>(begin + count));
      bx.resize(count * sample);
      for (std::size_t i = 0; i < count; ++i)
        std::copy_n(x.data() + rows[i] * sample, sample, bx.data() + i * sample);
      if (recipe.flip_augment) flip_some(bx, count, model.info().input_shape, rng);
      loss_sum += step(bx, rows);
      ++batches;
      done += count;
      if (progress) progress(done);
    }
    report.final_loss = loss_sum / static_cast<double>(batches);
  }
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace

TrainingRecipe load_training_recipe(const std::string& path) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw core::Error("cannot read the training recipe " + path, "check the path");
  } catch (const YAML::ParserException& error) {
    throw core::Error("training recipe " + path + " is malformed at line " + std::to_string(error.mark.line + 1) + ": " +
                          error.msg,
                      "write it as YAML key: value lines");
  }
  TrainingRecipe recipe;
  if (root.IsNull()) return recipe;
  if (!root.IsMap()) recipe_error(path, root, "the recipe must be a mapping of key: value");
  for (const auto& item : root) {
    const auto key = item.first.as<std::string>();
    const auto& value = item.second;
    if (key == "architecture") {
      std::filesystem::path arch = scalar<std::string>(path, value, key);
      if (arch.is_relative()) arch = std::filesystem::path(path).parent_path() / arch;
      recipe.architecture = arch.string();
    } else if (key == "epochs") {
      recipe.epochs = scalar<int>(path, value, key);
      if (recipe.epochs < 1 || recipe.epochs > 10000) recipe_error(path, value, "epochs must be between 1 and 10000");
    } else if (key == "batch" || key == "batch_size") {
      const auto batch = scalar<long long>(path, value, key);
      if (batch < 1 || batch > 65536) recipe_error(path, value, "batch must be between 1 and 65536");
      recipe.batch = static_cast<std::size_t>(batch);
    } else if (key == "optimizer") {
      recipe.optimizer = scalar<std::string>(path, value, key);
      if (recipe.optimizer != "adam" && recipe.optimizer != "sgd") recipe_error(path, value, "optimizer must be adam or sgd");
    } else if (key == "learning_rate" || key == "lr") {
      recipe.learning_rate = scalar<double>(path, value, key);
      if (!(recipe.learning_rate > 0 && recipe.learning_rate < 10)) recipe_error(path, value, "learning_rate must be in (0, 10)");
    } else if (key == "weight_decay") {
      recipe.weight_decay = scalar<double>(path, value, key);
      if (!(recipe.weight_decay >= 0 && recipe.weight_decay < 1)) recipe_error(path, value, "weight_decay must be in [0, 1)");
    } else if (key == "seed") {
      recipe.seed = scalar<std::uint64_t>(path, value, key);
    } else if (key == "augment") {
      const auto augment = scalar<std::string>(path, value, key);
      if (augment == "flip") recipe.flip_augment = true;
      else if (augment != "none") recipe_error(path, value, "augment must be none or flip");
    } else {
      recipe_error(path, item.first, "unknown key `" + key + "`");
    }
  }
  return recipe;
}

FitReport fit(TrainableClassifier& model, std::span<const float> x, std::span<const int> labels,
              const TrainingRecipe& recipe, const FitProgress& progress) {
  const int classes = model.num_classes();
  for (std::size_t i = 0; i < labels.size(); ++i)
    if (labels[i] < 0 || labels[i] >= classes)
      throw core::Error("training label " + std::to_string(labels[i]) + " of record " + std::to_string(i) +
                            " is not a class of the model (0.." + std::to_string(classes - 1) + ")",
                        "the data's labels must be the model's class indices");
  model.set_learning_rate(recipe.learning_rate);
  std::vector<int> by;
  return run_epochs(model, labels.size(), x, recipe, progress, [&](const std::vector<float>& bx, const std::vector<std::size_t>& rows) {
    by.resize(rows.size());
    for (std::size_t i = 0; i < rows.size(); ++i) by[i] = labels[rows[i]];
    return model.train_step(bx, bx, by, TrainingObjective::CrossEntropy, 0.0);
  });
}

FitReport fit_soft(TrainableClassifier& model, std::span<const float> x, std::span<const float> targets,
                   const TrainingRecipe& recipe, const FitProgress& progress) {
  const auto classes = static_cast<std::size_t>(model.num_classes());
  if (targets.size() % classes != 0)
    throw core::Error("soft targets are not rows of " + std::to_string(classes) + " class probabilities");
  model.set_learning_rate(recipe.learning_rate);
  std::vector<float> bt;
  return run_epochs(model, targets.size() / classes, x, recipe, progress,
                    [&](const std::vector<float>& bx, const std::vector<std::size_t>& rows) {
                      bt.resize(rows.size() * classes);
                      for (std::size_t i = 0; i < rows.size(); ++i)
                        std::copy_n(targets.data() + rows[i] * classes, classes, bt.data() + i * classes);
                      return model.train_step_soft(bx, bt);
                    });
}

double accuracy(Classifier& model, std::span<const float> x, std::span<const int> labels) {
  if (labels.empty()) return 0;
  const auto classes = static_cast<std::size_t>(model.num_classes());
  std::vector<float> scores(labels.size() * classes);
  model.predict(x, scores);
  std::size_t correct = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    const auto* row = scores.data() + i * classes;
    if (std::max_element(row, row + classes) - row == labels[i]) ++correct;
  }
  return static_cast<double>(correct) / static_cast<double>(labels.size());
}

}  // namespace aegis::models
