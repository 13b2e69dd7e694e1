// The poisoning detectors on synthetic activations with known poison: class-conditional Gaussians,
// a planted backdoor cluster (records of other classes relabelled to class 0 with a trigger
// direction added to their features), randomly flipped labels, and a "model" whose probabilities
// follow the true class. Each test says what a detector must find and what it must leave alone.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "aegis/attacks/poisoning/poison_detection.h"
#include "aegis/core/error.h"

namespace {

using namespace aegis;

struct Data {
  std::size_t d = 0;
  int classes = 0;
  std::vector<float> features;        // n x d
  std::vector<int> labels;            // as the (possibly poisoned) dataset gives them
  std::vector<int> truth;             // the record's real class
  std::vector<std::uint8_t> poisoned; // ground truth
};

std::vector<double> random_direction(std::mt19937_64& rng, std::size_t d, double norm) {
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> v(d);
  double length = 0;
  for (double& x : v) {
    x = normal(rng);
    length += x * x;
  }
  for (double& x : v) x *= norm / std::sqrt(length);
  return v;
}

// Each class a Gaussian around a random mean at distance `separation` from the origin, with its
// own per-dimension spread in [0.5, 2] so that classes are not isotropic.
Data gaussian_classes(int classes, std::size_t per_class, std::size_t d, double separation, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  std::uniform_real_distribution<double> spread(0.5, 2.0);
  Data data;
  data.d = d;
  data.classes = classes;
  for (int c = 0; c < classes; ++c) {
    const auto mean = random_direction(rng, d, separation);
    std::vector<double> scale(d);
    for (double& s : scale) s = spread(rng);
    for (std::size_t i = 0; i < per_class; ++i) {
      for (std::size_t j = 0; j < d; ++j) data.features.push_back(static_cast<float>(mean[j] + scale[j] * normal(rng)));
      data.labels.push_back(c);
      data.truth.push_back(c);
    }
  }
  data.poisoned.assign(data.labels.size(), 0);
  return data;
}

// A backdoor: `fraction` of the records of every class but 0 get the trigger added to their
// activations and the label 0.
void plant_backdoor(Data& data, double fraction, double trigger_norm, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  const auto trigger = random_direction(rng, data.d, trigger_norm);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (std::size_t i = 0; i < data.labels.size(); ++i) {
    if (data.labels[i] == 0 || uniform(rng) >= fraction) continue;
    for (std::size_t j = 0; j < data.d; ++j) data.features[i * data.d + j] += static_cast<float>(trigger[j]);
    data.labels[i] = 0;
    data.poisoned[i] = 1;
  }
}

// Flips `fraction` of the labels to a different class chosen uniformly.
void flip_labels(Data& data, double fraction, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::uniform_int_distribution<int> other(1, data.classes - 1);
  for (std::size_t i = 0; i < data.labels.size(); ++i) {
    if (uniform(rng) >= fraction) continue;
    data.labels[i] = (data.labels[i] + other(rng)) % data.classes;
    data.poisoned[i] = 1;
  }
}

attacks::DetectionQuality quality_in_class(const attacks::PoisonScores& scores, const Data& data, int cls) {
  std::vector<std::uint8_t> flagged, truth;
  for (std::size_t i = 0; i < data.labels.size(); ++i)
    if (data.labels[i] == cls) {
      flagged.push_back(scores.flagged[i]);
      truth.push_back(data.poisoned[i]);
    }
  return attacks::detection_quality(flagged, truth);
}

std::string joined(const std::vector<std::string>& notes) {
  std::string all;
  for (const auto& note : notes) all += note + "\n";
  return all;
}

TEST(PoisonDetectionQuality, CountsByHand) {
  const std::vector<std::uint8_t> flagged{1, 1, 0, 0, 7};
  const std::vector<std::uint8_t> truth{1, 0, 1, 0, 1};
  const auto q = attacks::detection_quality(flagged, truth);
  EXPECT_EQ(q.flagged, 3u);
  EXPECT_EQ(q.true_positives, 2u);
  EXPECT_EQ(q.poisoned, 3u);
  EXPECT_DOUBLE_EQ(q.precision, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(q.recall, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(q.f1, 2.0 / 3.0);

  const auto high_precision = attacks::detection_quality(std::vector<std::uint8_t>{1, 0, 0, 0},
                                                         std::vector<std::uint8_t>{1, 1, 1, 1});
  EXPECT_DOUBLE_EQ(high_precision.precision, 1.0);
  EXPECT_DOUBLE_EQ(high_precision.recall, 0.25);
  EXPECT_DOUBLE_EQ(high_precision.f1, 0.4);

  const auto none = attacks::detection_quality(std::vector<std::uint8_t>(4, 0), std::vector<std::uint8_t>(4, 0));
  EXPECT_DOUBLE_EQ(none.precision, 1.0);
  EXPECT_DOUBLE_EQ(none.recall, 1.0);
  const auto missed = attacks::detection_quality(std::vector<std::uint8_t>(4, 0), std::vector<std::uint8_t>{0, 1, 0, 0});
  EXPECT_DOUBLE_EQ(missed.recall, 0.0);
  EXPECT_DOUBLE_EQ(missed.f1, 0.0);
  EXPECT_THROW(attacks::detection_quality(std::vector<std::uint8_t>(3, 0), std::vector<std::uint8_t>(4, 0)),
               core::Error);
}

TEST(PoisonDetectionActivationClustering, FindsAPlantedBackdoorCluster) {
  Data data = gaussian_classes(5, 1000, 32, 6.0, 1);
  plant_backdoor(data, 0.08, 10.0, 2);
  const auto scores = attacks::activation_clustering(data.features, data.d, data.labels, data.classes, {});
  ASSERT_EQ(scores.score.size(), data.labels.size());
  const auto q = attacks::detection_quality(scores.flagged, data.poisoned);
  EXPECT_GE(q.recall, 0.9) << joined(scores.notes);
  EXPECT_GE(q.precision, 0.8) << joined(scores.notes);
  // Only the target class splits off a small cluster; the note says so.
  ASSERT_EQ(scores.notes.size(), 5u);
  EXPECT_NE(scores.notes[0].find("flagged, silhouette"), std::string::npos) << scores.notes[0];
  for (std::size_t c = 1; c < 5; ++c) EXPECT_NE(scores.notes[c].find("not flagged"), std::string::npos) << scores.notes[c];
  // The score ranks every flagged record above every unflagged one.
  double lowest_flagged = std::numeric_limits<double>::infinity();
  double highest_unflagged = -std::numeric_limits<double>::infinity();
  for (std::size_t i = 0; i < scores.score.size(); ++i) {
    if (scores.flagged[i]) lowest_flagged = std::min(lowest_flagged, scores.score[i]);
    else highest_unflagged = std::max(highest_unflagged, scores.score[i]);
  }
  EXPECT_GT(lowest_flagged, highest_unflagged);
}

TEST(PoisonDetectionActivationClustering, FlagsNothingInMostCleanClasses) {
  const Data data = gaussian_classes(5, 1000, 32, 6.0, 3);
  const auto scores = attacks::activation_clustering(data.features, data.d, data.labels, data.classes, {});
  int classes_with_flags = 0;
  for (int c = 0; c < data.classes; ++c) {
    bool any = false;
    for (std::size_t i = 0; i < data.labels.size(); ++i) any |= data.labels[i] == c && scores.flagged[i];
    classes_with_flags += any;
  }
  EXPECT_LE(classes_with_flags, 1) << joined(scores.notes);
  // A unimodal class splits about in half, which the relative-size rule rejects.
  int rejected_by_size = 0;
  for (const auto& note : scores.notes) rejected_by_size += note.find("minority clusters hold more than 35.0%") != std::string::npos;
  EXPECT_GE(rejected_by_size, 4) << joined(scores.notes);
}

TEST(PoisonDetectionActivationClustering, WorksWithMoreDimensionsThanRecords) {
  // 150 records per class in 300 dimensions: the PCA goes through the Gram matrix.
  Data data = gaussian_classes(3, 150, 300, 6.0, 4);
  plant_backdoor(data, 0.15, 12.0, 5);
  // Isotropic noise in every other direction: whitening would scale nine pure-noise directions up
  // to the trigger's, so this case is clustered on the plain principal components.
  attacks::ActivationClusteringOptions options;
  options.whiten = false;
  const auto scores = attacks::activation_clustering(data.features, data.d, data.labels, data.classes, options);
  const auto q = attacks::detection_quality(scores.flagged, data.poisoned);
  EXPECT_GE(q.recall, 0.9) << joined(scores.notes);
  EXPECT_GE(q.precision, 0.8) << joined(scores.notes);
}

TEST(PoisonDetectionActivationClustering, SameSeedSameResult) {
  Data data = gaussian_classes(4, 600, 16, 5.0, 6);
  plant_backdoor(data, 0.08, 8.0, 7);
  attacks::ActivationClusteringOptions options;
  options.seed = 42;
  const auto a = attacks::activation_clustering(data.features, data.d, data.labels, data.classes, options);
  const auto b = attacks::activation_clustering(data.features, data.d, data.labels, data.classes, options);
  EXPECT_EQ(a.score, b.score);
  EXPECT_EQ(a.flagged, b.flagged);
  EXPECT_EQ(a.notes, b.notes);
}

TEST(PoisonDetectionActivationClustering, SkipsClassesTooSmallToCluster) {
  Data data = gaussian_classes(2, 200, 8, 5.0, 8);
  // A third class with a single record, and a fourth with none.
  data.features.insert(data.features.end(), data.d, 0.5f);
  data.labels.push_back(2);
  const auto scores = attacks::activation_clustering(data.features, data.d, data.labels, 4, {});
  ASSERT_EQ(scores.notes.size(), 3u);
  EXPECT_NE(scores.notes[2].find("class 2: 1 records, too few to cluster"), std::string::npos) << scores.notes[2];
  EXPECT_EQ(scores.flagged.back(), 0);
}

TEST(PoisonDetectionSpectralSignature, RanksThePlantedClusterFirst) {
  Data data = gaussian_classes(5, 1000, 32, 6.0, 1);
  plant_backdoor(data, 0.08, 10.0, 2);
  attacks::SpectralSignatureOptions options;
  options.expected_fraction = 0.18;  // the defender's bound: class 0 is about 24% poison, 1.5 x 0.18 = 27% removed
  const auto scores = attacks::spectral_signature(data.features, data.d, data.labels, data.classes, options);
  // Tran's rule removes 1.5 epsilon of every class, so judge it where the poison is...
  const auto q = quality_in_class(scores, data, 0);
  EXPECT_GE(q.recall, 0.9) << joined(scores.notes);
  EXPECT_GE(q.precision, 0.8) << joined(scores.notes);
  // ...and check that the normalised scores compare across classes: the highest scores of the
  // whole dataset, as many as there are poisoned records, are nearly all poison.
  const auto poisoned = static_cast<std::size_t>(std::count(data.poisoned.begin(), data.poisoned.end(), 1));
  std::vector<std::size_t> order(scores.score.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores.score[a] > scores.score[b]; });
  std::size_t hits = 0;
  for (std::size_t r = 0; r < poisoned; ++r) hits += data.poisoned[order[r]];
  EXPECT_GE(static_cast<double>(hits), 0.9 * static_cast<double>(poisoned));
  // Clean classes have no records far out along their top direction.
  for (std::size_t c = 1; c < 5; ++c)
    EXPECT_NE(scores.notes[c].find("; 0 more than 5 robust deviations"), std::string::npos) << scores.notes[c];
  EXPECT_EQ(scores.notes[0].find("; 0 more than 5 robust deviations"), std::string::npos) << scores.notes[0];
}

TEST(PoisonDetectionSpectralSignature, FlagsTheShareTranRemovesInEveryClass) {
  const Data data = gaussian_classes(3, 400, 12, 5.0, 9);
  const auto scores = attacks::spectral_signature(data.features, data.d, data.labels, data.classes, {});
  for (int c = 0; c < 3; ++c) {
    std::size_t flagged = 0;
    for (std::size_t i = 0; i < data.labels.size(); ++i) flagged += data.labels[i] == c ? scores.flagged[i] : 0;
    EXPECT_EQ(flagged, 60u);  // 1.5 * 0.10 * 400
  }
}

// Reference: exact neighbours in double precision, straight from the definition.
struct Reference {
  std::vector<double> score;
  std::vector<std::uint8_t> close_call;  // k-th and (k+1)-th neighbours nearly tied: either answer is right
};

Reference brute_force_knn(const Data& data, std::size_t k) {
  const std::size_t n = data.labels.size(), d = data.d;
  std::vector<double> z(n * d);
  for (std::size_t j = 0; j < d; ++j) {
    double mean = 0, squares = 0;
    for (std::size_t i = 0; i < n; ++i) mean += data.features[i * d + j];
    mean /= static_cast<double>(n);
    for (std::size_t i = 0; i < n; ++i) squares += (data.features[i * d + j] - mean) * (data.features[i * d + j] - mean);
    const double sd = std::sqrt(squares / static_cast<double>(n));
    for (std::size_t i = 0; i < n; ++i) z[i * d + j] = (data.features[i * d + j] - mean) / sd;
  }
  Reference ref;
  ref.score.resize(n);
  ref.close_call.resize(n);
  std::vector<std::pair<double, std::size_t>> distance;
  for (std::size_t i = 0; i < n; ++i) {
    distance.clear();
    for (std::size_t j = 0; j < n; ++j) {
      if (j == i) continue;
      double s = 0;
      for (std::size_t t = 0; t < d; ++t) s += (z[i * d + t] - z[j * d + t]) * (z[i * d + t] - z[j * d + t]);
      distance.emplace_back(s, j);
    }
    std::partial_sort(distance.begin(), distance.begin() + static_cast<std::ptrdiff_t>(k + 1), distance.end());
    std::size_t differ = 0;
    for (std::size_t r = 0; r < k; ++r) differ += data.labels[distance[r].second] != data.labels[i];
    ref.score[i] = static_cast<double>(differ) / static_cast<double>(k);
    ref.close_call[i] = distance[k].first - distance[k - 1].first < 1e-5 * (1.0 + distance[k].first);
  }
  return ref;
}

TEST(PoisonDetectionKnnLabelNoise, MatchesBruteForceAcrossBlocksAndThreads) {
  // 4500 records: a grid of 9 x 9 tiles of 512, the last row and column partial.
  Data data = gaussian_classes(5, 900, 6, 1.5, 10);
  const auto ref = brute_force_knn(data, 10);
  attacks::KnnLabelNoiseOptions one, two;
  one.threads = 1;
  two.threads = 2;
  const auto a = attacks::knn_label_noise(data.features, data.d, data.labels, data.classes, one);
  const auto b = attacks::knn_label_noise(data.features, data.d, data.labels, data.classes, two);
  EXPECT_EQ(a.score, b.score);
  EXPECT_EQ(a.flagged, b.flagged);
  std::size_t mismatches = 0, close_calls = 0;
  for (std::size_t i = 0; i < ref.score.size(); ++i) {
    close_calls += ref.close_call[i];
    if (!ref.close_call[i] && a.score[i] != ref.score[i]) ++mismatches;
  }
  EXPECT_EQ(mismatches, 0u);
  EXPECT_LT(close_calls, ref.score.size() / 50);  // the exemption must not hide the comparison
}

TEST(PoisonDetectionKnnLabelNoise, FindsFlippedLabelsInSeparatedClusters) {
  Data data = gaussian_classes(5, 1000, 32, 10.0, 11);
  flip_labels(data, 0.05, 12);
  const auto scores = attacks::knn_label_noise(data.features, data.d, data.labels, data.classes, {});
  const auto q = attacks::detection_quality(scores.flagged, data.poisoned);
  EXPECT_GE(q.recall, 0.9) << joined(scores.notes);
  EXPECT_GE(q.precision, 0.9) << joined(scores.notes);
  // A feature in a wildly different unit does not take over: scale one column by 1e4.
  for (std::size_t i = 0; i < data.labels.size(); ++i) data.features[i * data.d] *= 1e4f;
  const auto scaled = attacks::knn_label_noise(data.features, data.d, data.labels, data.classes, {});
  EXPECT_GE(attacks::detection_quality(scaled.flagged, data.poisoned).recall, 0.9);
}

TEST(PoisonDetectionKnnLabelNoise, CapsKAtTheRecordsThereAre) {
  const std::vector<float> features{0, 0, 1, 1, 10, 10};
  const std::vector<int> labels{0, 0, 1};
  attacks::KnnLabelNoiseOptions options;
  options.k = 5;
  const auto scores = attacks::knn_label_noise(features, 2, labels, 2, options);
  EXPECT_EQ(scores.score, (std::vector<double>{0.5, 0.5, 1.0}));
  EXPECT_NE(joined(scores.notes).find("k lowered from 5 to 2"), std::string::npos);
}

// A "model" that knows the true class: a confident softmax around it.
std::vector<float> model_probabilities(const Data& data, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  const auto m = static_cast<std::size_t>(data.classes);
  std::vector<float> p(data.truth.size() * m);
  for (std::size_t i = 0; i < data.truth.size(); ++i) {
    std::vector<double> logit(m);
    double total = 0;
    for (std::size_t j = 0; j < m; ++j) {
      logit[j] = (static_cast<int>(j) == data.truth[i] ? 5.0 : 0.0) + normal(rng);
      total += std::exp(logit[j]);
    }
    for (std::size_t j = 0; j < m; ++j) p[i * m + j] = static_cast<float>(std::exp(logit[j]) / total);
  }
  return p;
}

TEST(PoisonDetectionConfidentLearning, FindsFlippedLabels) {
  Data data = gaussian_classes(5, 1000, 2, 1.0, 13);
  flip_labels(data, 0.10, 14);
  const auto p = model_probabilities(data, 15);
  const auto scores = attacks::confident_learning(p, data.labels, data.classes, {});
  const auto q = attacks::detection_quality(scores.flagged, data.poisoned);
  EXPECT_GE(q.recall, 0.9) << joined(scores.notes);
  EXPECT_GE(q.precision, 0.9) << joined(scores.notes);
  // The margin score ranks a flipped record (the model disagrees) above a clean one.
  double flipped = 0, clean = 0;
  for (std::size_t i = 0; i < data.labels.size(); ++i) (data.poisoned[i] ? flipped : clean) += scores.score[i];
  const double poisoned = static_cast<double>(q.poisoned);
  EXPECT_GT(flipped / poisoned, 0.5);
  EXPECT_LT(clean / (static_cast<double>(data.labels.size()) - poisoned), -0.5);
}

TEST(PoisonDetectionConfidentLearning, FlagsNothingWhenLabelsAreClean) {
  const Data data = gaussian_classes(4, 500, 2, 1.0, 16);
  const auto p = model_probabilities(data, 17);
  const auto scores = attacks::confident_learning(p, data.labels, data.classes, {});
  EXPECT_EQ(std::count(scores.flagged.begin(), scores.flagged.end(), 1), 0) << joined(scores.notes);
}

template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const core::Error& e) {
    return e.what();
  }
  return "no core::Error";
}

TEST(PoisonDetectionInput, BadInputsNameTheRecord) {
  Data data = gaussian_classes(3, 20, 4, 3.0, 18);
  data.labels[7] = 9;
  for (const auto& message :
       {error_of([&] { attacks::activation_clustering(data.features, data.d, data.labels, 3, {}); }),
        error_of([&] { attacks::spectral_signature(data.features, data.d, data.labels, 3, {}); }),
        error_of([&] { attacks::knn_label_noise(data.features, data.d, data.labels, 3, {}); })}) {
    EXPECT_NE(message.find("record 7 has label 9"), std::string::npos) << message;
  }
  data.labels[7] = -1;
  EXPECT_NE(error_of([&] { attacks::knn_label_noise(data.features, data.d, data.labels, 3, {}); }).find("record 7"),
            std::string::npos);
  data.labels[7] = 1;

  data.features[3 * data.d + 2] = std::numeric_limits<float>::quiet_NaN();
  const std::string nan = error_of([&] { attacks::spectral_signature(data.features, data.d, data.labels, 3, {}); });
  EXPECT_NE(nan.find("record 3"), std::string::npos) << nan;
  EXPECT_NE(nan.find("column 2"), std::string::npos) << nan;
  data.features[3 * data.d + 2] = std::numeric_limits<float>::infinity();
  EXPECT_NE(error_of([&] { attacks::activation_clustering(data.features, data.d, data.labels, 3, {}); }).find("record 3"),
            std::string::npos);
  data.features[3 * data.d + 2] = 0;

  const std::vector<float> ragged(data.features.begin(), data.features.end() - 1);
  EXPECT_NE(error_of([&] { attacks::knn_label_noise(ragged, data.d, data.labels, 3, {}); }).find("not whole rows"),
            std::string::npos);
  const std::vector<int> short_labels(data.labels.begin(), data.labels.end() - 1);
  EXPECT_NE(error_of([&] { attacks::activation_clustering(data.features, data.d, short_labels, 3, {}); })
                .find("60 feature rows but 59 labels"),
            std::string::npos);
  EXPECT_NE(error_of([&] { attacks::spectral_signature(data.features, 0, data.labels, 3, {}); }).find("dimension is 0"),
            std::string::npos);

  const std::vector<float> p(60 * 3, 1.0f / 3.0f);
  EXPECT_NE(error_of([&] { attacks::confident_learning(std::span(p).first(100), data.labels, 3, {}); })
                .find("expected 180"),
            std::string::npos);
  std::vector<float> logits = p;
  logits[5 * 3 + 1] = 4.2f;
  const std::string logit_error = error_of([&] { attacks::confident_learning(logits, data.labels, 3, {}); });
  EXPECT_NE(logit_error.find("record 5"), std::string::npos) << logit_error;
  EXPECT_NE(error_of([&] { attacks::confident_learning(p, data.labels, 0, {}); }).find("0 classes"), std::string::npos);

  attacks::ActivationClusteringOptions bad_clusters;
  bad_clusters.clusters = 1;
  EXPECT_THROW(attacks::activation_clustering(data.features, data.d, data.labels, 3, bad_clusters), core::Error);
  attacks::KnnLabelNoiseOptions bad_k;
  bad_k.k = 0;
  EXPECT_THROW(attacks::knn_label_noise(data.features, data.d, data.labels, 3, bad_k), core::Error);
  attacks::SpectralSignatureOptions bad_fraction;
  bad_fraction.expected_fraction = 0;
  EXPECT_THROW(attacks::spectral_signature(data.features, data.d, data.labels, 3, bad_fraction), core::Error);
}

}  // namespace
