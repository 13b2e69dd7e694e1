// Model extraction (stealing) audit: how much of a model an attacker rebuilds from its prediction
// API within a query budget. Queries are chosen by uniform random inputs, by natural data drawn at
// random (Knockoff Nets' "random", Orekondy et al. 2019), or adaptively (Knockoff Nets' gradient
// bandit over the thief data's classes, rewarded for certainty, diversity and surrogate loss); a
// surrogate of the attacker's chosen architecture is trained on the answers (soft labels when the
// API returns scores, top-1 labels otherwise) and compared to the target on held-out data.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "aegis/attacks/evasion.h"
#include "aegis/core/finding.h"
#include "aegis/models/training.h"

namespace aegis::attacks {

enum class ExtractionStrategy { Random, Natural, Adaptive };
std::string to_string(ExtractionStrategy strategy);
// "random,natural,adaptive" (or "all"); throws core::Error naming an unknown one.
std::vector<ExtractionStrategy> parse_extraction_strategies(const std::string& list);

struct ExtractionOptions {
  std::vector<ExtractionStrategy> strategies{ExtractionStrategy::Natural};
  std::vector<std::size_t> budgets{1000};  // query budgets, ascending; a surrogate is trained at each
  models::TrainingRecipe recipe;            // surrogate training (architecture = the attacker's choice)
  bool soft_labels = true;                  // distil the target's probabilities; false: its top-1 labels
  Bounds bounds;                            // input range (random queries are drawn uniformly in it)
  std::size_t query_batch = 128;            // queries sent together
  std::size_t adaptive_round = 16;          // adaptive: queries per bandit round (one action each)
  double adaptive_step = 0.1;               // adaptive: the bandit's learning rate
  std::uint64_t seed = 0;
  std::size_t max_logged_values = std::size_t{1} << 28;  // bound on the queries kept (inputs and answers, floats)
};

// A fresh, untrained surrogate for each budget.
using SurrogateFactory = std::function<std::unique_ptr<models::TrainableClassifier>()>;
using ExtractionProgress = std::function<void(const std::string& stage, std::size_t done, std::size_t total)>;

struct ExtractionResult {
  ExtractionStrategy strategy;
  std::size_t budget = 0;
  std::size_t queries = 0;          // target queries spent to reach this budget
  double fidelity = 0;              // share of test records where surrogate and target agree (top-1)
  double surrogate_accuracy = 0;    // surrogate's accuracy on the test labels
  double query_seconds = 0;         // time spent querying the target, up to this budget
  double train_seconds = 0;         // time to train this budget's surrogate
};

// Everything sent to the target and what came back, in order: the material a query-pattern
// detector (the gateway's extraction monitor) is tested on.
struct QueryLog {
  ExtractionStrategy strategy;
  std::vector<float> inputs;           // queries * sample_size
  std::vector<float> probabilities;    // queries * classes, softmax of what the target returned
  std::vector<std::int64_t> source;    // index in the thief data, -1 for synthesised inputs
  std::vector<double> milliseconds;    // since the strategy's first query
};

struct ExtractionReport {
  std::vector<ExtractionResult> results;
  std::vector<QueryLog> logs;
  double target_accuracy = 0;
  std::size_t test_records = 0;
  std::vector<core::Finding> findings;
};

// pool: the attacker's natural data (labels used only as the adaptive strategy's actions);
// test: held-out data for fidelity and accuracy. Checks shapes, labels, and that the pool holds
// enough records for the largest budget.
ExtractionReport run_extraction(models::Classifier& target, std::span<const float> pool_x, std::span<const int> pool_y,
                                std::span<const float> test_x, std::span<const int> test_y,
                                const ExtractionOptions& options, const SurrogateFactory& make_surrogate,
                                const ExtractionProgress& progress = {});

}  // namespace aegis::attacks
