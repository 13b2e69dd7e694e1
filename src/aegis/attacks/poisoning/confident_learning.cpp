// Confident learning (Northcutt et al. 2021) over a model's predicted probabilities. See
// poison_detection.h.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

#include "aegis/attacks/poisoning/class_records.h"
#include "aegis/attacks/poisoning/poison_detection.h"
#include "aegis/core/error.h"

namespace aegis::attacks {

PoisonScores confident_learning(std::span<const float> probabilities, std::span<const int> labels, int classes,
                                const ConfidentLearningOptions&) {
  const auto start = std::chrono::steady_clock::now();
  const std::string method = "confident learning";
  poisoning::check_labels(method, labels, classes);
  const auto m = static_cast<std::size_t>(classes);
  const std::size_t n = labels.size();
  if (probabilities.size() != n * m)
    throw core::Error(method + ": " + std::to_string(probabilities.size()) + " probabilities for " +
                          std::to_string(n) + " records of " + std::to_string(classes) + " classes (expected " +
                          std::to_string(n * m) + ")",
                      "probabilities must be n x classes, row-major, the model's softmax outputs");
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t j = 0; j < m; ++j) {
      const float p = probabilities[i * m + j];
      // Slightly above 1 is rounding in a softmax; a value far outside [0, 1] means logits were passed.
      if (!std::isfinite(p) || p < 0.0f || p > 1.0f + 1e-3f)
        throw core::Error(method + ": record " + std::to_string(i) + " has probability " + std::to_string(p) +
                              " for class " + std::to_string(j) + ", outside [0, 1]",
                          "pass softmax outputs, not logits; apply a softmax first");
    }

  // t_j: the model's average confidence in j on the records labelled j.
  std::vector<double> threshold(m, 0.0);
  std::vector<std::size_t> count(m, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const auto y = static_cast<std::size_t>(labels[i]);
    threshold[y] += probabilities[i * m + y];
    ++count[y];
  }
  for (std::size_t j = 0; j < m; ++j)
    threshold[j] = count[j] > 0 ? threshold[j] / static_cast<double>(count[j]) : std::numeric_limits<double>::infinity();

  auto out = poisoning::no_suspects("confident-learning", n);
  // The confident joint, row = given label, column = the class the record confidently belongs to.
  std::vector<std::size_t> joint(m * m, 0);
  std::vector<std::size_t> flagged(m, 0);
  for (std::size_t i = 0; i < n; ++i) {
    const float* p = probabilities.data() + i * m;
    const auto y = static_cast<std::size_t>(labels[i]);
    std::size_t confident = m;  // none yet
    double best_other = -1.0;
    for (std::size_t j = 0; j < m; ++j) {
      if (p[j] >= threshold[j] && (confident == m || p[j] > p[confident])) confident = j;
      if (j != y) best_other = std::max(best_other, double{p[j]});
    }
    out.score[i] = m > 1 ? best_other - double{p[y]} : 0.0;
    if (confident == m) continue;
    ++joint[y * m + confident];
    if (confident != y && p[y] < threshold[y]) {
      out.flagged[i] = 1;
      ++flagged[y];
    }
  }

  for (std::size_t y = 0; y < m; ++y) {
    if (count[y] == 0) continue;
    std::string line = "class " + std::to_string(y) + ": threshold " + poisoning::fixed(threshold[y], 3) + "; " +
                       std::to_string(flagged[y]) + " of " + std::to_string(count[y]) + " flagged";
    std::size_t top = m;
    for (std::size_t j = 0; j < m; ++j)
      if (j != y && joint[y * m + j] > 0 && (top == m || joint[y * m + j] > joint[y * m + top])) top = j;
    if (top != m)
      line += "; confidently another class: " + std::to_string(joint[y * m + top]) + " look like class " +
              std::to_string(top);
    out.notes.push_back(line);
  }
  out.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return out;
}

}  // namespace aegis::attacks
