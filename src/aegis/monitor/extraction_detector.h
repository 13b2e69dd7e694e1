// Stateful per-client detectors of model-extraction query patterns, fed by the gateway with each
// client's queries and the class the model predicted: PRADA (distance distribution normality)
// and a similarity detector (Chen, Carlini, Wagner: mean distance to the k nearest past queries).
#pragma once

#include <cstddef>
#include <cstdint>
#include <list>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "aegis/monitor/shapiro_wilk.h"

namespace aegis::monitor {

// Raised once per client (then not again until reset(client)).
struct ExtractionAlert {
  std::string client;
  std::string detector;           // "prada" or "similarity"
  std::uint64_t queries_seen = 0; // the client's queries so far, the flagged one included
  double statistic = 0;           // PRADA: Shapiro-Wilk W; similarity: mean k-NN distance
  double threshold = 0;           // PRADA: delta (flag when W < delta); similarity: flag when below
};

namespace detail {
// Per-client state with least-recently-used eviction, so that a flood of client ids costs a
// bounded amount of memory (an evicted client starts afresh when it returns).
template <class State>
class ClientTable {
 public:
  explicit ClientTable(std::size_t capacity) : capacity_(capacity) {}
  State& touch(std::string_view client) {
    auto found = index_.find(std::string(client));
    if (found != index_.end()) {
      order_.splice(order_.begin(), order_, found->second);
      return found->second->second;
    }
    if (order_.size() >= capacity_) {
      index_.erase(order_.back().first);
      order_.pop_back();
    }
    order_.emplace_front(std::string(client), State{});
    index_.emplace(order_.front().first, order_.begin());
    return order_.front().second;
  }
  // Without touching the recency order or creating an entry; nullptr when unknown.
  const State* find(std::string_view client) const {
    auto found = index_.find(std::string(client));
    return found == index_.end() ? nullptr : &found->second->second;
  }
  void erase(std::string_view client) {
    auto found = index_.find(std::string(client));
    if (found == index_.end()) return;
    order_.erase(found->second);
    index_.erase(found);
  }
  std::size_t size() const { return order_.size(); }

 private:
  using Entry = std::pair<std::string, State>;
  std::size_t capacity_;
  std::list<Entry> order_;  // most recently used first
  std::unordered_map<std::string, typename std::list<Entry>::iterator> index_;
};
}  // namespace detail

// A fixed Gaussian random projection (Johnson-Lindenstrauss) that bounds the cost of distances:
// input_size -> dims, entries N(0, 1 / dims) from a seeded generator, so every replica projects
// alike. dims 0 means no projection (the raw input).
class RandomProjection {
 public:
  RandomProjection(std::size_t input_size, std::size_t dims, std::uint64_t seed);
  std::size_t output_size() const { return dims_ == 0 ? input_size_ : dims_; }
  void apply(std::span<const float> input, std::vector<float>& output) const;

 private:
  std::size_t input_size_, dims_;
  std::vector<float> matrix_;  // dims x input_size, row-major
};

// PRADA (Juuti, Szyller, Marchal, Asokan, EuroS&P 2019), Algorithm 1, per client: for a query x
// of predicted class c, d = min L2 distance to the client's growing set G_c (the first query of a
// class only seeds G_c); d joins the client's distance set D; when d > T_c, x joins G_c, d joins
// D_Gc and T_c = max(T_c, mean(D_Gc) - std(D_Gc)) (D_Gc starts with a 0 for the seed, as in the
// authors' code). Once |D| >= min_distances the Shapiro-Wilk W of D is computed and the client is
// flagged when W < delta: natural queries give normally distributed distances, synthetic ones
// (small perturbations of a few seeds mixed with fresh seeds) do not.
struct PradaOptions {
  // The paper tunes delta per model (values between about 0.87 and 0.96). On Fashion-MNIST,
  // benign clients' W fell to 0.91 in their first hundreds of queries (0.94 with the outlier
  // rejection below), while Jacobian-augmentation streams sit near 0.5-0.7; 0.9 keeps benign
  // clients clear with room to spare.
  double delta = 0.9;
  std::size_t min_distances = 100;  // the paper's minimum |D| before testing
  std::size_t test_every = 1;       // the paper tests after every query; larger saves time
  // The authors' published code drops distances beyond outlier_sigma standard deviations from the
  // mean before the test; we follow it (3). 0 tests D exactly as the paper's algorithm states.
  double outlier_sigma = 3;
  // Bounds. D keeps the latest max_distances (the Shapiro-Wilk approximation is validated up to
  // 5000); each client keeps at most max_growing_set vectors over all its classes (then G_c stops
  // growing: later queries are still measured against it); at most max_clients clients, least
  // recently seen evicted. Worst-case memory: max_clients * (max_growing_set * input floats * 4
  // + max_distances * 8) bytes, e.g. 128 * (2048 * 784 * 4 + 40000) = 827 MB for 28x28 images.
  std::size_t max_distances = 5000;
  std::size_t max_growing_set = 2048;
  std::size_t max_clients = 128;
  std::size_t projection_dims = 0;  // 0: raw inputs, as the paper; else project to bound cost
  std::uint64_t projection_seed = 0x5eed;
};

class PradaDetector {
 public:
  explicit PradaDetector(PradaOptions options = {});

  // One query. Inputs of another length than the first one seen are refused (core::Error), and
  // so are non-finite values. Returns the alert the first time the client is flagged.
  std::optional<ExtractionAlert> observe(std::string_view client, std::span<const float> input, std::int64_t predicted_class);
  void reset(std::string_view client) { clients_.erase(client); }
  std::size_t clients() const { return clients_.size(); }
  // The client's latest W, NaN before it has min_distances distances (or when unknown).
  double last_statistic(std::string_view client) const;
  const PradaOptions& options() const { return options_; }

 private:
  struct ClassSet {
    std::int64_t label = 0;
    std::vector<float> vectors;          // the growing set, back to back
    std::vector<double> growing_distances;
    double threshold = 0;
  };
  struct Client {
    std::vector<ClassSet> classes;
    std::vector<double> distances;       // D, a ring of max_distances once full
    std::size_t next_distance = 0;
    std::size_t stored_vectors = 0;
    std::uint64_t queries = 0;
    double last_w = -1;
    bool alerted = false;
  };

  PradaOptions options_;
  std::optional<RandomProjection> projection_;
  std::size_t input_size_ = 0;
  detail::ClientTable<Client> clients_;
  ShapiroWilk shapiro_;
  std::vector<float> projected_;
  std::vector<double> window_;
};

// Stateful detection after Chen, Carlini and Wagner ("Stateful Detection of Black-Box Adversarial
// Attacks", 2019): each client's recent queries are kept (as features: the input as the model
// takes it, through an optional fixed random projection); for a new query the mean distance to its k nearest
// predecessors is compared with a threshold calibrated on benign traffic, and a mean below it
// flags the client. Queries that crowd a small region of input space (an attack's probes, or a
// thief densely covering the space it copies) have closer neighbours than benign clients'.
struct SimilarityOptions {
  std::size_t k = 50;                 // the paper's k for CIFAR-10
  std::size_t history = 10000;        // queries kept per client (the oldest dropped first)
  std::size_t projection_dims = 64;   // 0 keeps the raw input
  std::uint64_t projection_seed = 0x5eed;
  double threshold = 0;               // flag when the k-NN mean is below this; 0 = uncalibrated (never flags)
  // Percent: calibrate() sets the threshold at this percentile of the benign k-NN means. The
  // paper's 0.1 flags one benign query in a thousand, and since a client is flagged by its first
  // such query, most benign clients of a few thousand queries would be (on Fashion-MNIST one was
  // at its 742nd query). So we take the benign minimum (0) unless told otherwise.
  double calibration_percentile = 0;
  std::size_t max_clients = 256;      // least recently seen evicted; memory <= max_clients * history * dims * 4 bytes
};

class SimilarityDetector {
 public:
  explicit SimilarityDetector(SimilarityOptions options = {});

  std::optional<ExtractionAlert> observe(std::string_view client, std::span<const float> input);
  void reset(std::string_view client) { clients_.erase(client); }
  std::size_t clients() const { return clients_.size(); }
  double threshold() const { return options_.threshold; }
  // The client's latest k-NN mean, NaN before it has k earlier queries (or when unknown).
  double last_statistic(std::string_view client) const;

  // Sets the threshold from benign queries (input_size floats each, back to back): they are
  // dealt round-robin to `clients` fresh benign clients, each replayed in order through a
  // detector with these options, and the threshold becomes calibration_percentile of all the
  // k-NN means seen. The statistic falls as a client's history grows, so calibrate with streams
  // as long as the benign clients the gateway expects: the result flags clients whose queries
  // crowd closer than a benign client of that volume ever did. Throws core::Error when the
  // streams are shorter than k + 1. Returns the threshold.
  double calibrate(std::span<const float> benign_inputs, std::size_t input_size, std::size_t clients = 1);

 private:
  struct Client {
    std::vector<float> features;  // ring of history vectors
    std::size_t stored = 0, next = 0;
    std::uint64_t queries = 0;
    double last_mean = -1;
    bool alerted = false;
  };
  double knn_mean(Client& client, std::span<const float> feature);
  void remember(Client& client, std::span<const float> feature);
  void prepare(std::span<const float> input);

  SimilarityOptions options_;
  std::optional<RandomProjection> projection_;
  std::size_t input_size_ = 0;
  detail::ClientTable<Client> clients_;
  std::vector<float> feature_;
  std::vector<double> distances_;
};

}  // namespace aegis::monitor
