#include "aegis/attacks/extraction/model_extraction.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <map>
#include <numeric>
#include <random>
#include <sstream>

#include "aegis/core/error.h"
#include "aegis/core/name_list.h"

namespace aegis::attacks {
namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

constexpr core::NamedValue<ExtractionStrategy> kStrategies[] = {
    {ExtractionStrategy::Random, "random"},
    {ExtractionStrategy::Natural, "natural"},
    {ExtractionStrategy::Adaptive, "adaptive"},
};

std::size_t argmax(const float* row, std::size_t classes) {
  return static_cast<std::size_t>(std::max_element(row, row + classes) - row);
}

// Running mean and variance (Welford), to put the three Knockoff rewards on one scale.
struct RunningStat {
  double count = 0, mean = 0, m2 = 0;
  void add(double v) {
    count += 1;
    const double d = v - mean;
    mean += d / count;
    m2 += d * (v - mean);
  }
  double z(double v) const {
    if (count < 2) return 0;
    const double sd = std::sqrt(m2 / (count - 1));
    return sd > 1e-12 ? (v - mean) / sd : 0;
  }
};

// Collects queries for one strategy until `total` have been answered.
class QueryCollector {
 public:
  QueryCollector(models::Classifier& target, ExtractionStrategy strategy, std::span<const std::size_t> budgets,
                 const ExtractionProgress& progress)
      : target_(target), budgets_(budgets), progress_(progress), sample_(target.sample_size()),
        classes_(static_cast<std::size_t>(target.num_classes())) {
    log_.strategy = strategy;
    stage_ = "querying (" + to_string(strategy) + ")";
  }

  // Sends the inputs, logs them, returns the rows of probabilities for them.
  std::span<const float> ask(std::span<const float> inputs, std::span<const std::int64_t> sources) {
    const std::size_t count = sources.size();
    const std::size_t before = log_.source.size();
    const auto start = Clock::now();
    std::vector<float> scores(count * classes_);
    target_.predict(inputs, scores);
    models::to_probabilities(scores, classes_, target_.info().scores);
    query_seconds_ += seconds_since(start);
    const double ms = 1000.0 * seconds_since(first_);
    log_.inputs.insert(log_.inputs.end(), inputs.begin(), inputs.end());
    log_.probabilities.insert(log_.probabilities.end(), scores.begin(), scores.end());
    log_.source.insert(log_.source.end(), sources.begin(), sources.end());
    log_.milliseconds.insert(log_.milliseconds.end(), count, ms);
    for (auto b : budgets_)
      if (before < b && log_.source.size() >= b) seconds_at_budget_[b] = query_seconds_;
    if (progress_) progress_(stage_, log_.source.size(), budgets_.back());
    return std::span<const float>(log_.probabilities).subspan(before * classes_, count * classes_);
  }

  std::size_t size() const { return log_.source.size(); }
  std::size_t remaining() const { return budgets_.back() - size(); }
  double seconds_at(std::size_t budget) const { return seconds_at_budget_.at(budget); }
  QueryLog& log() { return log_; }

 private:
  models::Classifier& target_;
  std::span<const std::size_t> budgets_;
  const ExtractionProgress& progress_;
  std::size_t sample_, classes_;
  QueryLog log_;
  std::string stage_;
  Clock::time_point first_ = Clock::now();
  double query_seconds_ = 0;
  std::map<std::size_t, double> seconds_at_budget_;
};

void collect_random(QueryCollector& q, std::size_t sample, const ExtractionOptions& o, std::mt19937_64& rng) {
  std::uniform_real_distribution<float> uniform(o.bounds.lo, o.bounds.hi);
  std::vector<float> batch;
  std::vector<std::int64_t> sources;
  while (q.remaining() > 0) {
    const std::size_t count = std::min(o.query_batch, q.remaining());
    batch.resize(count * sample);
    for (auto& v : batch) v = uniform(rng);
    sources.assign(count, -1);
    q.ask(batch, sources);
  }
}

void gather(std::span<const float> pool_x, std::size_t sample, std::span<const std::size_t> rows, std::vector<float>& batch,
            std::vector<std::int64_t>& sources) {
  batch.resize(rows.size() * sample);
  sources.resize(rows.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    std::copy_n(pool_x.data() + rows[i] * sample, sample, batch.data() + i * sample);
    sources[i] = static_cast<std::int64_t>(rows[i]);
  }
}

void collect_natural(QueryCollector& q, std::span<const float> pool_x, std::size_t pool_n, std::size_t sample,
                     const ExtractionOptions& o, std::mt19937_64& rng) {
  std::vector<std::size_t> order(pool_n);
  std::iota(order.begin(), order.end(), 0);
  std::shuffle(order.begin(), order.end(), rng);
  std::vector<float> batch;
  std::vector<std::int64_t> sources;
  std::size_t next = 0;
  while (q.remaining() > 0) {
    const std::size_t count = std::min(o.query_batch, q.remaining());
    gather(pool_x, sample, std::span<const std::size_t>(order).subspan(next, count), batch, sources);
    next += count;
    q.ask(batch, sources);
  }
}

// Knockoff Nets' adaptive strategy: a gradient bandit over the thief data's classes. Each round
// draws an action from softmax(H), queries a few unused records of that class, and rewards it with
// the target's certainty (top-1 minus top-2), the diversity of its answer against the running mean
// answer, and the loss of an online surrogate on it — each standardised by its running statistics.
void collect_adaptive(QueryCollector& q, std::span<const float> pool_x, std::span<const int> pool_y, std::size_t sample,
                      std::size_t classes, const ExtractionOptions& o, const SurrogateFactory& make_surrogate,
                      std::mt19937_64& rng) {
  std::map<int, std::vector<std::size_t>> by_action;
  for (std::size_t i = 0; i < pool_y.size(); ++i) by_action[pool_y[i]].push_back(i);
  std::vector<std::vector<std::size_t>> actions;
  for (auto& [label, rows] : by_action) {
    std::shuffle(rows.begin(), rows.end(), rng);
    actions.push_back(std::move(rows));
  }
  std::vector<std::size_t> used(actions.size(), 0);
  std::vector<double> preference(actions.size(), 0.0), policy(actions.size());
  auto online = make_surrogate();
  RunningStat cert_stat, div_stat, loss_stat;
  double baseline = 0;
  std::size_t rounds = 0;
  std::vector<double> mean_answer(classes, 1.0 / static_cast<double>(classes));
  std::vector<float> batch, guess;
  std::vector<std::int64_t> sources;
  while (q.remaining() > 0) {
    double total = 0;
    const double top = *std::max_element(preference.begin(), preference.end());
    for (std::size_t a = 0; a < actions.size(); ++a)
      total += (policy[a] = used[a] < actions[a].size() ? std::exp(preference[a] - top) : 0.0);
    if (total <= 0) break;  // pool exhausted: checked against the budget before starting
    std::discrete_distribution<std::size_t> pick(policy.begin(), policy.end());
    const std::size_t a = pick(rng);
    for (auto& p : policy) p /= total;
    const std::size_t count = std::min({o.adaptive_round, q.remaining(), actions[a].size() - used[a]});
    gather(pool_x, sample, std::span<const std::size_t>(actions[a]).subspan(used[a], count), batch, sources);
    used[a] += count;
    guess.resize(count * classes);
    online->predict(batch, guess);
    models::to_probabilities(guess, classes, online->info().scores);
    const auto answers = q.ask(batch, sources);

    double cert = 0, div = 0, loss = 0;
    for (std::size_t i = 0; i < count; ++i) {
      const float* y = answers.data() + i * classes;
      std::vector<float> sorted(y, y + classes);
      std::partial_sort(sorted.begin(), sorted.begin() + std::min<std::size_t>(2, classes), sorted.end(), std::greater<>());
      cert += classes > 1 ? sorted[0] - sorted[1] : sorted[0];
      for (std::size_t c = 0; c < classes; ++c) {
        div += std::max(0.0, static_cast<double>(y[c]) - mean_answer[c]);
        loss -= static_cast<double>(y[c]) * std::log(std::max(guess[i * classes + c], 1e-12f));
      }
    }
    cert /= static_cast<double>(count);
    div /= static_cast<double>(count);
    loss /= static_cast<double>(count);
    cert_stat.add(cert);
    div_stat.add(div);
    loss_stat.add(loss);
    const double reward = cert_stat.z(cert) + div_stat.z(div) + loss_stat.z(loss);
    ++rounds;
    baseline += (reward - baseline) / static_cast<double>(rounds);
    for (std::size_t b = 0; b < actions.size(); ++b)
      preference[b] += o.adaptive_step * (reward - baseline) * ((b == a ? 1.0 : 0.0) - policy[b]);
    // The running mean answer the next round's diversity is measured against.
    const double seen = static_cast<double>(q.size());
    for (std::size_t c = 0; c < classes; ++c) {
      double sum = 0;
      for (std::size_t i = 0; i < count; ++i) sum += answers[i * classes + c];
      mean_answer[c] += (sum - static_cast<double>(count) * mean_answer[c]) / seen;
    }
    std::vector<float> targets(answers.begin(), answers.end());
    online->train_step_soft(batch, targets);
  }
}

core::Finding stealing_finding(const ExtractionReport& report) {
  const ExtractionResult* best = nullptr;
  for (const auto& r : report.results)
    if (!best || r.fidelity > best->fidelity || (r.fidelity == best->fidelity && r.queries < best->queries)) best = &r;
  core::Finding f;
  f.rule_id = "extract.model-stealing";
  f.severity = best->fidelity >= 0.9 ? core::Severity::High
               : best->fidelity >= 0.7 ? core::Severity::Medium
                                       : core::Severity::Low;
  f.title = "A copy of the model can be trained from its answers";
  std::ostringstream evidence;
  evidence << std::fixed << std::setprecision(1) << "a surrogate trained on " << best->queries << " queries ("
           << to_string(best->strategy) << ") agrees with the target on " << 100 * best->fidelity << "% of "
           << report.test_records << " held-out records and reaches " << 100 * best->surrogate_accuracy
           << "% accuracy (target " << 100 * report.target_accuracy << "%)";
  f.evidence = evidence.str();
  f.atlas = {"AML.T0024.002", "AML.T0005"};
  f.nist_ai_rmf = {"MEASURE 2.7"};
  f.remediation =
      "Authenticate and rate-limit the prediction API per client, watch per-client query patterns for extraction "
      "(aegis gateway's extraction monitor), and return top-1 labels or rounded top-k scores instead of full "
      "probabilities.";
  return f;
}

}  // namespace

std::string to_string(ExtractionStrategy strategy) { return core::name_of<ExtractionStrategy>(strategy, kStrategies); }

std::vector<ExtractionStrategy> parse_extraction_strategies(const std::string& list) {
  return core::parse_name_list<ExtractionStrategy>(list, kStrategies, "extraction strategy", "--strategy natural,adaptive");
}

ExtractionReport run_extraction(models::Classifier& target, std::span<const float> pool_x, std::span<const int> pool_y,
                                std::span<const float> test_x, std::span<const int> test_y,
                                const ExtractionOptions& options, const SurrogateFactory& make_surrogate,
                                const ExtractionProgress& progress) {
  const std::size_t sample = target.sample_size();
  const auto classes = static_cast<std::size_t>(target.num_classes());
  const std::size_t pool_n = pool_y.size();
  if (options.budgets.empty()) throw core::Error("no query budget given", "e.g. --budget 1000,5000");
  if (!std::is_sorted(options.budgets.begin(), options.budgets.end()) || options.budgets.front() == 0 ||
      std::adjacent_find(options.budgets.begin(), options.budgets.end()) != options.budgets.end())
    throw core::Error("query budgets must be positive and ascending", "e.g. --budget 500,1000,5000");
  if (options.strategies.empty()) throw core::Error("no extraction strategy given");
  if (pool_x.size() != pool_n * sample)
    throw core::Error("the thief data's records hold " + std::to_string(pool_n ? pool_x.size() / pool_n : 0) +
                          " values each, the target takes " + std::to_string(sample),
                      "the data's sample shape must match the model's input shape (--input-shape)");
  if (test_y.empty() || test_x.size() != test_y.size() * sample)
    throw core::Error("the held-out data is empty or of another shape than the target's input",
                      "give test records of the model's input shape (--test-data, --test-limit)");
  for (std::size_t i = 0; i < test_y.size(); ++i)
    if (test_y[i] < 0 || static_cast<std::size_t>(test_y[i]) >= classes)
      throw core::Error("held-out record " + std::to_string(i) + " has label " + std::to_string(test_y[i]) +
                            ", but the target has " + std::to_string(classes) + " classes",
                        "use test data labelled with the target's classes");
  const std::size_t max_budget = options.budgets.back();
  const bool uses_pool = std::any_of(options.strategies.begin(), options.strategies.end(),
                                     [](auto s) { return s != ExtractionStrategy::Random; });
  if (uses_pool && max_budget > pool_n)
    throw core::Error("a budget of " + std::to_string(max_budget) + " queries needs as many thief records, the data has " +
                          std::to_string(pool_n),
                      "lower --budget, or give more natural data (--data, --limit)");
  if (options.query_batch == 0 || options.adaptive_round == 0) throw core::Error("query batches must hold at least one query");
  if (max_budget > options.max_logged_values / (sample + classes))
    throw core::Error("a budget of " + std::to_string(max_budget) + " queries of " + std::to_string(sample) +
                          " values would keep more than " + std::to_string(options.max_logged_values) +
                          " values of queries and answers in memory",
                      "lower --budget");

  ExtractionReport report;
  report.test_records = test_y.size();
  std::vector<float> target_test(test_y.size() * classes);
  target.predict(test_x, target_test);
  std::vector<std::size_t> target_labels(test_y.size());
  std::size_t target_correct = 0;
  for (std::size_t i = 0; i < test_y.size(); ++i) {
    target_labels[i] = argmax(target_test.data() + i * classes, classes);
    target_correct += target_labels[i] == static_cast<std::size_t>(test_y[i]);
  }
  report.target_accuracy = static_cast<double>(target_correct) / static_cast<double>(test_y.size());

  for (std::size_t s = 0; s < options.strategies.size(); ++s) {
    const auto strategy = options.strategies[s];
    std::mt19937_64 rng(options.seed + 7919 * (s + 1));
    QueryCollector collector(target, strategy, options.budgets, progress);
    switch (strategy) {
      case ExtractionStrategy::Random:
        collect_random(collector, sample, options, rng);
        break;
      case ExtractionStrategy::Natural:
        collect_natural(collector, pool_x, pool_n, sample, options, rng);
        break;
      case ExtractionStrategy::Adaptive:
        collect_adaptive(collector, pool_x, pool_y, sample, classes, options, make_surrogate, rng);
        break;
    }
    auto& log = collector.log();
    for (const auto budget : options.budgets) {
      const std::string stage = "training surrogate (" + to_string(strategy) + ", " + std::to_string(budget) + " queries)";
      auto surrogate = make_surrogate();
      if (surrogate->num_classes() != target.num_classes() || surrogate->sample_size() != sample)
        throw core::Error("the surrogate takes " + std::to_string(surrogate->sample_size()) + " values and has " +
                              std::to_string(surrogate->num_classes()) + " classes; the target takes " +
                              std::to_string(sample) + " and has " + std::to_string(classes),
                          "give a surrogate architecture with the target's input shape and classes (--surrogate)");
      const auto x = std::span<const float>(log.inputs).first(budget * sample);
      const auto answers = std::span<const float>(log.probabilities).first(budget * classes);
      const std::size_t total = budget * static_cast<std::size_t>(options.recipe.epochs);
      const auto on_progress = [&](std::size_t done) {
        if (progress) progress(stage, done, total);
      };
      models::FitReport fitted;
      if (options.soft_labels) {
        fitted = models::fit_soft(*surrogate, x, answers, options.recipe, on_progress);
      } else {
        std::vector<int> labels(budget);
        for (std::size_t i = 0; i < budget; ++i) labels[i] = static_cast<int>(argmax(answers.data() + i * classes, classes));
        fitted = models::fit(*surrogate, x, labels, options.recipe, on_progress);
      }
      std::vector<float> guess(test_y.size() * classes);
      surrogate->predict(test_x, guess);
      std::size_t agree = 0, correct = 0;
      for (std::size_t i = 0; i < test_y.size(); ++i) {
        const auto label = argmax(guess.data() + i * classes, classes);
        agree += label == target_labels[i];
        correct += label == static_cast<std::size_t>(test_y[i]);
      }
      ExtractionResult result;
      result.strategy = strategy;
      result.budget = budget;
      result.queries = budget;
      result.fidelity = static_cast<double>(agree) / static_cast<double>(test_y.size());
      result.surrogate_accuracy = static_cast<double>(correct) / static_cast<double>(test_y.size());
      result.query_seconds = collector.seconds_at(budget);
      result.train_seconds = fitted.seconds;
      report.results.push_back(result);
    }
    report.logs.push_back(std::move(log));
  }
  report.findings.push_back(stealing_finding(report));
  return report;
}

}  // namespace aegis::attacks
