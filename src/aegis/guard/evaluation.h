// Measuring the input guard honestly: labelled JSON Lines in, precision / recall / F1 / false-positive
// rate per source out, on a held-out split, by k-fold cross-validation (every row scored by a model
// that never saw it) and leave-one-source-out (a whole source held back: does the guard generalise
// to an attack family or a benign population it was not trained on?).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "aegis/guard/input_guard.h"

namespace aegis::guard {

// Reads JSON Lines with at least `text` and `label` (0/1, or "injection"/"benign", or true/false);
// `source`, `subset` and `id` are used when present. Throws core::Error with the line number on a
// malformed line. At most max_rows rows.
std::vector<LabelledText> load_labelled_jsonl(const std::string& path, std::size_t max_rows = 10'000'000);

// The group a row is reported under: the over-defence sets by name ("NotInject", "WildGuard-benign",
// "XSTest-safe") wherever they came from, otherwise the source.
std::string eval_group(const std::string& source, const std::string& subset);

// The deterministic split: a row is held out when SHA-256(id) mod folds == fold (fold 0 of 5 = 20%).
std::size_t fold_of(const std::string& id, std::size_t folds);

struct Counts {
  std::size_t tp = 0, fp = 0, tn = 0, fn = 0;
  double precision() const { return tp + fp == 0 ? 0 : double(tp) / double(tp + fp); }
  double recall() const { return tp + fn == 0 ? 0 : double(tp) / double(tp + fn); }
  double f1() const {
    const double p = precision(), r = recall();
    return p + r == 0 ? 0 : 2 * p * r / (p + r);
  }
  double fpr() const { return fp + tn == 0 ? 0 : double(fp) / double(fp + tn); }
  double balanced_accuracy() const { return (recall() + (1 - fpr())) / 2; }
  std::size_t total() const { return tp + fp + tn + fn; }
  void add(int label, bool flagged);
};

struct EvalReport {
  std::string name;  // "held-out", "5-fold", "leave-one-source-out", ...
  Counts overall;
  std::map<std::string, Counts> groups;
  double threshold = 0.5;
  nlohmann::json to_json() const;
  std::string to_text() const;  // an aligned table
};

// Scores rows with a guard built from `options` (model replaced by `model` when non-null) and counts
// flags against labels.
EvalReport evaluate_guard(const std::vector<LabelledText>& rows, const InputGuardOptions& options, const LinearModel* model,
                          const std::string& name);

struct EvalPlan {
  TrainOptions train;
  std::size_t folds = 5;
  double target_fpr = 0.005;  // the model's threshold: this false-positive rate on the training
                             // negatives' out-of-fold scores (<= 0: keep 0.5)
  InputGuardOptions guard;   // signatures etc. as the user will run them
};

// Chooses the threshold for `train_rows` by inner cross-validation (target_fpr), then trains on all
// of them. progress(step, steps) when set.
LinearModel train_with_threshold(const std::vector<LabelledText>& train_rows, const EvalPlan& plan,
                                 const std::function<void(const std::string&)>& progress = {});

// Train on folds != 0, report on fold 0.
EvalReport holdout_evaluation(const std::vector<LabelledText>& rows, const EvalPlan& plan,
                              const std::function<void(const std::string&)>& progress = {});
// Every row scored by a model trained on the other folds.
EvalReport cross_validation(const std::vector<LabelledText>& rows, const EvalPlan& plan,
                            const std::function<void(const std::string&)>& progress = {});
// For each group: train on every other group, report that group.
EvalReport leave_one_source_out(const std::vector<LabelledText>& rows, const EvalPlan& plan,
                                const std::function<void(const std::string&)>& progress = {});

}  // namespace aegis::guard
