#include "aegis/attacks/poisoning/poisoning_audit.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <numeric>
#include <sstream>

#include "aegis/core/error.h"
#include "aegis/core/name_list.h"

namespace aegis::attacks {
namespace {

constexpr core::NamedValue<PoisonMethod> kMethods[] = {
    {PoisonMethod::ActivationClustering, "activation-clustering"},
    {PoisonMethod::SpectralSignature, "spectral-signature"},
    {PoisonMethod::KnnLabelNoise, "knn"},
    {PoisonMethod::ConfidentLearning, "confident-learning"},
};

// Each record's rank within a method as a share (1 = that method's most suspicious record), so that
// scores on different scales can be put side by side.
std::vector<double> rank_shares(const std::vector<double>& score) {
  std::vector<std::size_t> order(score.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](auto a, auto b) { return score[a] > score[b]; });
  std::vector<double> share(score.size());
  const double n = static_cast<double>(score.size());
  for (std::size_t r = 0; r < order.size(); ++r) share[order[r]] = 1.0 - static_cast<double>(r) / n;
  return share;
}

std::size_t count_flagged(const PoisonScores& s) {
  return static_cast<std::size_t>(std::count(s.flagged.begin(), s.flagged.end(), 1));
}

std::string percent(double value) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(1) << 100 * value << "%";
  return text.str();
}

void add_findings(PoisonAuditReport& report, const PoisonAuditOptions& options) {
  const double n = static_cast<double>(report.records);
  for (std::size_t i = 0; i < report.detectors.size(); ++i) {
    const auto& d = report.detectors[i];
    const std::size_t flagged = count_flagged(d);
    core::Finding f;
    f.atlas = {"AML.T0020", "AML.T0018.000"};
    f.nist_ai_rmf = {"MEASURE 2.7", "MAP 4.1"};
    std::ostringstream evidence;
    if (d.method == "activation-clustering") {
      if (flagged == 0) continue;
      f.rule_id = "poison.activation-cluster";
      f.severity = core::Severity::High;
      f.title = "A class splits into a small separate activation cluster: the signature of a backdoor";
      for (const auto& note : d.notes)
        if (note.find("flagged") != std::string::npos) evidence << note << "; ";
      evidence << flagged << " records in minority clusters";
      f.remediation =
          "Inspect the flagged records (a shared patch or pattern is a trigger), remove them, retrain, and verify the "
          "provenance of the data source they came from (aegis sign/verify manifests).";
    } else if (d.method == "spectral-signature") {
      // Tran et al. flag a fixed share of every class; what is evidence is a class whose records
      // lie far out along its top singular direction.
      std::size_t far = 0;
      for (double s : d.score) far += s > 25.0;
      if (far < std::max<std::size_t>(10, static_cast<std::size_t>(0.005 * n))) continue;
      f.rule_id = "poison.spectral-outliers";
      f.severity = core::Severity::Medium;
      f.title = "Records lie far out along a class's top singular direction (spectral signature)";
      evidence << far << " records more than 5 robust deviations out; the top " << flagged
               << " by score are listed as suspects";
      f.remediation = "Inspect and remove the flagged records, retrain, and check the data's provenance.";
    } else {
      if (flagged == 0 || static_cast<double>(flagged) < 0.01 * n) continue;
      f.rule_id = d.method == "knn" ? "poison.label-noise-knn" : "poison.label-noise-confident";
      f.severity = static_cast<double>(flagged) >= 0.05 * n ? core::Severity::Medium : core::Severity::Low;
      f.title = "Records whose labels disagree with what the model and their neighbours say";
      evidence << flagged << " records (" << percent(static_cast<double>(flagged) / n) << ") flagged by " << d.method;
      f.remediation =
          "Review the flagged labels (mislabelling, label-flipping poison), relabel or drop them, and retrain.";
    }
    if (!report.quality.empty())
      evidence << "; against the given truth: precision " << percent(report.quality[i].precision) << ", recall "
               << percent(report.quality[i].recall);
    f.evidence = evidence.str();
    report.findings.push_back(std::move(f));
  }
  (void)options;
}

}  // namespace

std::string to_string(PoisonMethod method) { return core::name_of<PoisonMethod>(method, kMethods); }

std::vector<PoisonMethod> parse_poison_methods(const std::string& list) {
  std::string normalised = list;
  // The detector's long name is accepted too.
  for (std::size_t at = normalised.find("knn-label-noise"); at != std::string::npos; at = normalised.find("knn-label-noise"))
    normalised.replace(at, 15, "knn");
  return core::parse_name_list<PoisonMethod>(normalised, kMethods, "poisoning detector",
                                             "--methods activation-clustering,spectral-signature");
}

bool needs_activations(PoisonMethod method) { return method != PoisonMethod::ConfidentLearning; }

PoisonAuditReport run_poison_audit(models::Classifier& model, models::TrainableClassifier* white_box,
                                   std::span<const float> x, std::span<const int> y, const PoisonAuditOptions& options,
                                   const PoisonProgress& progress) {
  const std::size_t n = y.size();
  const auto classes = static_cast<std::size_t>(model.num_classes());
  if (n < 2) throw core::Error("a poisoning audit needs at least 2 records", "give the training data set");
  if (x.size() != n * model.sample_size())
    throw core::Error("the records hold " + std::to_string(x.size() / n) + " values each, but the model takes " +
                          std::to_string(model.sample_size()),
                      "the data's sample shape must match the model's input shape (--input-shape)");
  for (std::size_t i = 0; i < n; ++i)
    if (y[i] < 0 || static_cast<std::size_t>(y[i]) >= classes)
      throw core::Error("record " + std::to_string(i) + " has label " + std::to_string(y[i]) + ", but the model has " +
                            std::to_string(classes) + " classes",
                        "use the labels of the data set the model was trained on");
  if (!options.truly_poisoned.empty() && options.truly_poisoned.size() != n)
    throw core::Error("the ground truth covers " + std::to_string(options.truly_poisoned.size()) + " records, the data " +
                      std::to_string(n));
  const bool need_features = std::any_of(options.methods.begin(), options.methods.end(), needs_activations);
  if (need_features && !white_box)
    throw core::Error("activation clustering, spectral signatures and k-NN read the model's activations, which only a "
                          "TorchScript model gives",
                      "give the TorchScript model, or use --methods confident-learning for ONNX and HTTP models");

  if (n > options.max_knn_records &&
      std::find(options.methods.begin(), options.methods.end(), PoisonMethod::KnnLabelNoise) != options.methods.end())
    throw core::Error("exact k-NN over " + std::to_string(n) + " records would take hours (it compares every pair)",
                      "audit a sample (--limit) or leave knn out of --methods");
  PoisonAuditReport report;
  report.records = n;
  if (progress) progress("reading the model's predictions", 0, n);
  std::vector<float> scores(n * classes);
  model.predict(x, scores);
  models::to_probabilities(scores, classes, model.info().scores);
  const auto& probabilities = scores;
  std::vector<int> predicted(n);
  std::size_t agree = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const float* row = probabilities.data() + i * classes;
    predicted[i] = static_cast<int>(std::max_element(row, row + classes) - row);
    agree += predicted[i] == y[i];
  }
  report.agreement_with_labels = static_cast<double>(agree) / static_cast<double>(n);
  report.predicted = predicted;
  if (progress) progress("reading the model's predictions", n, n);
  std::vector<float> features;
  if (need_features) {
    if (progress) progress("reading the model's activations", 0, n);
    const auto start = std::chrono::steady_clock::now();
    report.feature_width = white_box->activations(x, options.layer, features);
    report.activation_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    if (progress) progress("reading the model's activations", n, n);
  }
  const int k = static_cast<int>(classes);
  for (std::size_t m = 0; m < options.methods.size(); ++m) {
    const auto method = options.methods[m];
    if (progress) progress("detector " + to_string(method), m, options.methods.size());
    PoisonScores result;
    switch (method) {
      case PoisonMethod::ActivationClustering:
        result = activation_clustering(features, report.feature_width, y, k, options.clustering);
        break;
      case PoisonMethod::SpectralSignature:
        result = spectral_signature(features, report.feature_width, y, k, options.spectral);
        break;
      case PoisonMethod::KnnLabelNoise:
        result = knn_label_noise(features, report.feature_width, y, k, options.knn);
        break;
      case PoisonMethod::ConfidentLearning:
        result = confident_learning(probabilities, y, k, {});
        break;
    }
    result.method = to_string(method);
    if (!options.truly_poisoned.empty()) report.quality.push_back(detection_quality(result.flagged, options.truly_poisoned));
    report.detectors.push_back(std::move(result));
  }
  if (!options.truly_poisoned.empty()) {
    std::vector<std::uint8_t> any(n, 0);
    for (const auto& d : report.detectors)
      for (std::size_t i = 0; i < n; ++i) any[i] |= d.flagged[i];
    report.combined_quality = detection_quality(any, options.truly_poisoned);
  }

  std::vector<std::vector<double>> shares;
  for (const auto& d : report.detectors) shares.push_back(rank_shares(d.score));
  for (std::size_t i = 0; i < n; ++i) {
    Suspect s;
    for (std::size_t m = 0; m < report.detectors.size(); ++m) {
      if (!report.detectors[m].flagged[i]) continue;
      s.methods.push_back(report.detectors[m].method);
      s.score = std::max(s.score, shares[m][i]);
    }
    if (s.methods.empty()) continue;
    s.index = i;
    s.label = y[i];
    s.predicted = predicted[i];
    report.suspects.push_back(std::move(s));
  }
  std::stable_sort(report.suspects.begin(), report.suspects.end(), [](const Suspect& a, const Suspect& b) {
    if (a.methods.size() != b.methods.size()) return a.methods.size() > b.methods.size();
    return a.score > b.score;
  });
  add_findings(report, options);
  if (progress) progress("done", options.methods.size(), options.methods.size());
  return report;
}

}  // namespace aegis::attacks
