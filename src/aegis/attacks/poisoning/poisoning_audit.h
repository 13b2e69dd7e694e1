// Poisoning and backdoor audit of a training set through a model trained on it: reads the model's
// penultimate activations and predictions for every record and runs the detectors of
// poison_detection.h over them, then gathers the suspects and, when the poisoned records are known
// (an experiment, a red-team exercise), the detectors' precision and recall.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "aegis/attacks/poisoning/poison_detection.h"
#include "aegis/core/finding.h"
#include "aegis/models/torchscript_classifier.h"

namespace aegis::attacks {

enum class PoisonMethod { ActivationClustering, SpectralSignature, KnnLabelNoise, ConfidentLearning };
std::string to_string(PoisonMethod method);
// "activation-clustering,spectral-signature,knn,confident-learning" or "all"; throws core::Error
// naming an unknown one.
std::vector<PoisonMethod> parse_poison_methods(const std::string& list);
// Whether a method reads activations (white-box models only) rather than predictions.
bool needs_activations(PoisonMethod method);

struct PoisonAuditOptions {
  std::vector<PoisonMethod> methods{PoisonMethod::ActivationClustering, PoisonMethod::SpectralSignature,
                                    PoisonMethod::KnnLabelNoise, PoisonMethod::ConfidentLearning};
  std::string layer;  // activations at this top-level layer; empty = the input of the last one
  ActivationClusteringOptions clustering;
  SpectralSignatureOptions spectral;
  KnnLabelNoiseOptions knn;
  std::vector<std::uint8_t> truly_poisoned;  // optional ground truth, one per record
  std::size_t max_knn_records = 200000;      // k-NN is exact, O(n^2 d): above this it is refused, not run for hours
};

struct Suspect {
  std::size_t index = 0;
  int label = 0;       // the label the data set gives it
  int predicted = 0;   // the model's prediction
  std::vector<std::string> methods;  // the detectors that flag it
  double score = 0;    // the highest of its per-method ranks, as a share: 1 = most suspicious record of some method
};

struct PoisonAuditReport {
  std::vector<PoisonScores> detectors;
  std::vector<DetectionQuality> quality;  // per detector, when truly_poisoned was given
  std::optional<DetectionQuality> combined_quality;  // any detector flags
  std::size_t records = 0;
  std::size_t feature_width = 0;
  double activation_seconds = 0;
  double agreement_with_labels = 0;  // share of records the model predicts as labelled
  std::vector<int> predicted;        // the model's prediction for every record
  std::vector<Suspect> suspects;     // flagged by at least one detector, most flagged and highest ranked first
  std::vector<core::Finding> findings;
};

using PoisonProgress = std::function<void(const std::string& stage, std::size_t done, std::size_t total)>;

// `white_box` (the same model as `model`, or null for black-box backends) supplies activations.
PoisonAuditReport run_poison_audit(models::Classifier& model, models::TrainableClassifier* white_box,
                                   std::span<const float> x, std::span<const int> y, const PoisonAuditOptions& options,
                                   const PoisonProgress& progress = {});

}  // namespace aegis::attacks
