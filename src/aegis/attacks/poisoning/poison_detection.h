// Detectors that look for poisoned or mislabelled training records in what a model made of them:
// its penultimate-layer activations (features) or its softmax outputs, next to the dataset's labels.
// They need no deep-learning runtime, so an assessment can run them on exported activations.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace aegis::attacks {

// Inputs shared by the feature-based detectors:
//   features: n x d floats, row-major, one row per training record;
//   labels:   n ints in [0, classes), the labels the dataset carries (possibly poisoned).
// Sizes that disagree, labels out of range and non-finite values throw core::Error naming the
// record; classes with too few records to analyse are skipped with a note, not an error.

struct PoisonScores {
  std::string method;
  std::vector<double> score;           // one per record; higher = more suspicious (see each method)
  std::vector<std::uint8_t> flagged;   // one per record; 1 = the method's rule flags it
  std::vector<std::string> notes;      // a line per class that holds records, saying what was found
  double seconds = 0;                  // wall-clock time the method took
};

struct ActivationClusteringOptions {
  int components = 10;                 // PCA dimensions per class (Chen et al. reduce to 10)
  int clusters = 2;                    // k-means clusters per class
  double max_poison_fraction = 0.35;   // a cluster at most this share of its class is suspect (relative-size rule)
  double min_silhouette = 0.10;        // ...and only when the split is real: mean silhouette at least this
  std::uint64_t seed = 0;              // k-means++ seeding and the silhouette sample depend on it
  int kmeans_restarts = 50;           // runs from greedy k-means++ seeds; the lowest within-cluster sum of squares is kept.
                                       // Real activations have many local optima: on a BadNets Fashion-MNIST class 5 or
                                       // 20 runs missed the poison/clean split that 50 find (each run costs ~1 ms per 1000 records)
  bool whiten = true;                  // scale the principal directions to unit variance (see activation_clustering)
  int max_iterations = 100;            // Lloyd iterations per run
};
// Chen et al. 2018, "Detecting Backdoor Attacks on Deep Neural Networks by Activation Clustering":
// a backdoor makes the poisoned records of the target class activate differently from its clean
// ones, so the class splits into two clusters, one of them small. Per class: centre, project onto
// the top `components` principal directions, whitened (each scaled to unit variance, as before
// the ICA Chen et al. use: k-means then weighs every direction alike), k-means; every cluster but the largest is a minority
// cluster, flagged when its share of the class is <= max_poison_fraction and the class's mean
// silhouette is >= min_silhouette. score = that silhouette (at least 0) for records in a minority
// cluster, 0 for the rest, so records of a class that splits cleanly rank above those of a class
// that splits arbitrarily. The silhouette is computed exactly on a stratified sample of at most
// 2000 records of the class (each cluster keeps at least 2000 / (4 * clusters) of its records and
// is weighted back to its true share), so that it costs O(2000^2) whatever the class size.
PoisonScores activation_clustering(std::span<const float> features, std::size_t d, std::span<const int> labels,
                                   int classes, const ActivationClusteringOptions& options);

struct SpectralSignatureOptions {
  double expected_fraction = 0.10;     // epsilon: the share of a class the defender assumes poisoned
  double removal_factor = 1.5;         // flag the top removal_factor * epsilon * n_class of each class
};
// Tran, Li, Madry 2018, "Spectral Signatures in Backdoor Attacks": poisoned records shift the
// class's mean along one direction, which becomes the top singular vector v of the centred class
// representations. Tran's score ((r_i - mean) . v)^2 ranks the records of a class; here it is divided
// by the square of a robust spread of the projections (1.4826 * their median absolute deviation),
// so that a clean, roughly Gaussian class scores like a chi-square with one degree of freedom
// (about 1 on average, above 25 with probability below 1e-6) and scores compare across classes,
// while a planted cluster, which inflates the variance but not the median spread, scores far
// above. Flagging follows Tran: the top removal_factor * expected_fraction of every class,
// poisoned or not; the notes count the records more than 5 robust deviations from the median.
PoisonScores spectral_signature(std::span<const float> features, std::size_t d, std::span<const int> labels,
                                int classes, const SpectralSignatureOptions& options);

struct KnnLabelNoiseOptions {
  int k = 10;                          // neighbours per record (capped at n - 1)
  double min_disagreement = 0.5;       // flag when at least this share of the neighbours carry another label
  int threads = 0;                     // 0 = one per hardware thread
};
// A record whose label disagrees with those of its nearest neighbours in feature space is likely
// mislabelled (flipped labels, clean-label poison; cf. Peri et al. 2020, "Deep k-NN Defense").
// Exact k nearest neighbours (Euclidean, the record itself excluded, ties to the lower index) on
// features standardised per dimension over the whole dataset: penultimate units differ in scale by
// orders of magnitude and a few loud units would otherwise decide every neighbourhood, whereas
// L2-normalising would throw away the activation norm, which carries the model's confidence.
// Dimensions that are constant are ignored. score = the share of the k neighbours whose label
// differs. Brute force over 512 x 512 tiles of Eigen products, each serving both its blocks since
// distances are symmetric: n^2 d / 2 multiply-adds, memory O(n d + n k) (n = 60000, d = 64: about
// 11 s on 2 cores, 45 MiB).
PoisonScores knn_label_noise(std::span<const float> features, std::size_t d, std::span<const int> labels,
                             int classes, const KnnLabelNoiseOptions& options);

struct ConfidentLearningOptions {};
// Northcutt, Jiang, Chuang 2021, "Confident Learning: Estimating Uncertainty in Dataset Labels".
// probabilities: n x classes, the model's out-of-sample softmax outputs (rows need not sum exactly
// to 1). Per-class threshold t_j = mean p_j over the records labelled j (a class with no records
// gets no threshold: nothing is confidently counted in it). A record labelled y confidently belongs
// to j when p_j >= t_j (the highest such p_j if several); the counts over (y, j) are the confident
// joint, summarised in the notes. A record is flagged when it lies off the diagonal of the confident
// joint (it confidently belongs to some j != y) and p_y < t_y: Northcutt's C_confusion rule with
// the extra demand that the given label be below its own threshold, which keeps records that
// are confidently both (ambiguous rather than mislabelled). Northcutt's "both" method would also
// keep, per cell of the joint, only as many records (largest margin first) as the calibrated joint
// estimates; that trims flags when the model is poorly calibrated, and is left out for simplicity.
// score = max_{j != y} p_j - p_y, in [-1, 1].
PoisonScores confident_learning(std::span<const float> probabilities, std::span<const int> labels, int classes,
                                const ConfidentLearningOptions& options);

struct DetectionQuality {
  std::size_t flagged = 0, true_positives = 0, poisoned = 0;
  double precision = 0, recall = 0, f1 = 0;
};
// How well `flagged` matches the ground truth (non-zero = yes). Precision is 1 when nothing is
// flagged (no false alarm) and recall is 1 when nothing was poisoned (nothing missed); f1 is their
// harmonic mean, 0 when both are 0. Throws core::Error when the sizes differ.
DetectionQuality detection_quality(std::span<const std::uint8_t> flagged, std::span<const std::uint8_t> truly_poisoned);

}  // namespace aegis::attacks
