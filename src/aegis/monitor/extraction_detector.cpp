#include "aegis/monitor/extraction_detector.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <numbers>
#include <random>

#include "aegis/core/error.h"

namespace aegis::monitor {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// Box-Muller over mt19937_64's bits: unlike std::normal_distribution, the same on every standard
// library, so replicas built differently still project alike.
class SeededGaussian {
 public:
  explicit SeededGaussian(std::uint64_t seed) : bits_(seed) {}
  double next() {
    if (spare_) {
      spare_ = false;
      return second_;
    }
    const double u1 = (static_cast<double>(bits_() >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
    const double u2 = static_cast<double>(bits_() >> 11) * 0x1.0p-53;
    const double radius = std::sqrt(-2.0 * std::log(u1));
    second_ = radius * std::sin(2 * std::numbers::pi * u2);
    spare_ = true;
    return radius * std::cos(2 * std::numbers::pi * u2);
  }

 private:
  std::mt19937_64 bits_;
  bool spare_ = false;
  double second_ = 0;
};

double squared_distance(const float* a, const float* b, std::size_t n) {
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double d = static_cast<double>(a[i]) - static_cast<double>(b[i]);
    sum += d * d;
  }
  return sum;
}

void check_input(std::span<const float> input, std::size_t& expected, const char* detector) {
  if (input.empty()) throw core::Error(std::string(detector) + ": empty query input", "send the model input as a flat vector");
  if (expected == 0) expected = input.size();
  if (input.size() != expected)
    throw core::Error(std::string(detector) + ": a query of " + std::to_string(input.size()) + " values, but this detector measures " +
                          std::to_string(expected) + "-value inputs",
                      "use one detector per model input shape");
  for (float v : input)
    if (!std::isfinite(v)) throw core::Error(std::string(detector) + ": a query value is not finite", "validate inputs before the monitor");
}

// numpy.percentile (linear) of unsorted values, percent in [0, 100].
double percentile(std::vector<double> values, double percent) {
  std::sort(values.begin(), values.end());
  const double position = percent / 100 * static_cast<double>(values.size() - 1);
  const auto below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(below + 1, values.size() - 1);
  return values[below] + (values[above] - values[below]) * (position - static_cast<double>(below));
}

}  // namespace

RandomProjection::RandomProjection(std::size_t input_size, std::size_t dims, std::uint64_t seed)
    : input_size_(input_size), dims_(dims) {
  if (dims_ == 0) return;
  matrix_.resize(dims_ * input_size_);
  SeededGaussian gaussian(seed);
  const double scale = 1 / std::sqrt(static_cast<double>(dims_));
  for (float& entry : matrix_) entry = static_cast<float>(gaussian.next() * scale);
}

void RandomProjection::apply(std::span<const float> input, std::vector<float>& output) const {
  if (dims_ == 0) {
    output.assign(input.begin(), input.end());
    return;
  }
  output.assign(dims_, 0.0f);
  for (std::size_t r = 0; r < dims_; ++r) {
    const float* row = matrix_.data() + r * input_size_;
    double sum = 0;
    for (std::size_t i = 0; i < input_size_; ++i) sum += static_cast<double>(row[i]) * input[i];
    // Huge (hostile) inputs must not overflow the float conversion, which is undefined behaviour.
    constexpr double kLargest = std::numeric_limits<float>::max();
    output[r] = static_cast<float>(std::clamp(sum, -kLargest, kLargest));
  }
}

PradaDetector::PradaDetector(PradaOptions options) : options_(std::move(options)), clients_(options_.max_clients) {
  if (!(options_.delta > 0 && options_.delta < 1))
    throw core::Error("PRADA: delta must be in (0, 1)", "the paper's values lie between 0.87 and 0.96");
  if (options_.min_distances < 3 || options_.max_distances > 5000 || options_.min_distances > options_.max_distances)
    throw core::Error("PRADA: need 3 <= min_distances <= max_distances <= 5000",
                      "the paper tests from 100 distances; Shapiro-Wilk is validated up to 5000");
  if (options_.test_every == 0 || options_.max_growing_set == 0 || options_.max_clients == 0)
    throw core::Error("PRADA: test_every, max_growing_set and max_clients must be at least 1", "e.g. 1, 2048 and 128");
  if (!(options_.outlier_sigma >= 0)) throw core::Error("PRADA: outlier_sigma must be >= 0", "0 keeps every distance; 3 as the authors' code");
}

std::optional<ExtractionAlert> PradaDetector::observe(std::string_view client_id, std::span<const float> input,
                                                      std::int64_t predicted_class) {
  check_input(input, input_size_, "PRADA");
  if (options_.projection_dims > 0 && !projection_) projection_.emplace(input_size_, options_.projection_dims, options_.projection_seed);
  std::span<const float> feature = input;
  if (projection_) {
    projection_->apply(input, projected_);
    feature = projected_;
  }
  const std::size_t dims = feature.size();
  Client& client = clients_.touch(client_id);
  ++client.queries;

  auto set = std::find_if(client.classes.begin(), client.classes.end(), [&](const ClassSet& s) { return s.label == predicted_class; });
  if (set == client.classes.end()) {
    // The class's first query seeds its growing set; it has no distance yet.
    if (client.stored_vectors < options_.max_growing_set) {
      ClassSet seeded;
      seeded.label = predicted_class;
      seeded.vectors.assign(feature.begin(), feature.end());
      seeded.growing_distances.push_back(0);
      client.classes.push_back(std::move(seeded));
      ++client.stored_vectors;
    }
    return std::nullopt;
  }
  double nearest = std::numeric_limits<double>::infinity();
  const std::size_t members = set->vectors.size() / dims;
  for (std::size_t i = 0; i < members; ++i)
    nearest = std::min(nearest, squared_distance(set->vectors.data() + i * dims, feature.data(), dims));
  nearest = std::sqrt(nearest);

  if (client.distances.size() < options_.max_distances) {
    client.distances.push_back(nearest);
  } else {
    client.distances[client.next_distance] = nearest;
    client.next_distance = (client.next_distance + 1) % options_.max_distances;
  }
  if (nearest > set->threshold && client.stored_vectors < options_.max_growing_set) {
    set->vectors.insert(set->vectors.end(), feature.begin(), feature.end());
    ++client.stored_vectors;
    set->growing_distances.push_back(nearest);
    const auto& g = set->growing_distances;
    const double mean = std::accumulate(g.begin(), g.end(), 0.0) / static_cast<double>(g.size());
    double variance = 0;
    for (double d : g) variance += (d - mean) * (d - mean);
    const double spread = std::sqrt(variance / static_cast<double>(g.size()));
    set->threshold = std::max(set->threshold, mean - spread);
  }

  if (client.distances.size() < options_.min_distances || client.queries % options_.test_every != 0) return std::nullopt;
  window_.assign(client.distances.begin(), client.distances.end());
  if (options_.outlier_sigma > 0) {
    const double mean = std::accumulate(window_.begin(), window_.end(), 0.0) / static_cast<double>(window_.size());
    double variance = 0;
    for (double d : window_) variance += (d - mean) * (d - mean);
    const double limit = options_.outlier_sigma * std::sqrt(variance / static_cast<double>(window_.size()));
    std::erase_if(window_, [&](double d) { return !(std::abs(d - mean) < limit); });
    if (window_.size() < 3) return std::nullopt;
  }
  client.last_w = shapiro_(window_).w;
  if (client.last_w >= options_.delta || client.alerted) return std::nullopt;
  client.alerted = true;
  return ExtractionAlert{std::string(client_id), "prada", client.queries, client.last_w, options_.delta};
}

double PradaDetector::last_statistic(std::string_view client_id) const {
  const Client* client = clients_.find(client_id);
  return client == nullptr || client->last_w < 0 ? kNaN : client->last_w;
}

SimilarityDetector::SimilarityDetector(SimilarityOptions options) : options_(std::move(options)), clients_(options_.max_clients) {
  if (options_.k == 0 || options_.history < options_.k)
    throw core::Error("similarity detector: need 1 <= k <= history", "the paper uses k = 50 with a history of thousands");
  if (options_.max_clients == 0) throw core::Error("similarity detector: max_clients must be at least 1", "e.g. 256");
  if (!(options_.threshold >= 0)) throw core::Error("similarity detector: threshold must be >= 0", "or 0 and calibrate()");
  if (!(options_.calibration_percentile >= 0 && options_.calibration_percentile <= 100))
    throw core::Error("similarity detector: calibration_percentile is a percentage in [0, 100]", "the paper uses 0.1");
}

void SimilarityDetector::prepare(std::span<const float> input) {
  check_input(input, input_size_, "similarity detector");
  if (!projection_) projection_.emplace(input_size_, options_.projection_dims, options_.projection_seed);
  projection_->apply(input, feature_);
}

double SimilarityDetector::knn_mean(Client& client, std::span<const float> feature) {
  const std::size_t dims = feature.size();
  distances_.resize(client.stored);
  for (std::size_t i = 0; i < client.stored; ++i)
    distances_[i] = squared_distance(client.features.data() + i * dims, feature.data(), dims);
  const std::size_t k = options_.k;
  std::nth_element(distances_.begin(), distances_.begin() + static_cast<std::ptrdiff_t>(k - 1), distances_.end());
  double sum = 0;
  for (std::size_t i = 0; i < k; ++i) sum += std::sqrt(distances_[i]);
  return sum / static_cast<double>(k);
}

void SimilarityDetector::remember(Client& client, std::span<const float> feature) {
  const std::size_t dims = feature.size();
  if (client.stored < options_.history) {
    client.features.insert(client.features.end(), feature.begin(), feature.end());
    ++client.stored;
    return;
  }
  std::copy(feature.begin(), feature.end(), client.features.begin() + static_cast<std::ptrdiff_t>(client.next * dims));
  client.next = (client.next + 1) % options_.history;
}

std::optional<ExtractionAlert> SimilarityDetector::observe(std::string_view client_id, std::span<const float> input) {
  prepare(input);
  Client& client = clients_.touch(client_id);
  ++client.queries;
  std::optional<ExtractionAlert> alert;
  if (client.stored >= options_.k) {
    client.last_mean = knn_mean(client, feature_);
    if (options_.threshold > 0 && client.last_mean < options_.threshold && !client.alerted) {
      client.alerted = true;
      alert = ExtractionAlert{std::string(client_id), "similarity", client.queries, client.last_mean, options_.threshold};
    }
  }
  remember(client, feature_);
  return alert;
}

double SimilarityDetector::last_statistic(std::string_view client_id) const {
  const Client* client = clients_.find(client_id);
  return client == nullptr || client->last_mean < 0 ? kNaN : client->last_mean;
}

double SimilarityDetector::calibrate(std::span<const float> benign_inputs, std::size_t input_size, std::size_t clients) {
  if (input_size == 0 || clients == 0 || benign_inputs.size() % input_size != 0)
    throw core::Error("similarity calibration: the benign inputs are not a whole number of " + std::to_string(input_size) +
                          "-value queries, or no clients",
                      "pass the queries back to back and at least one client");
  const std::size_t queries = benign_inputs.size() / input_size;
  if (queries / clients < options_.k + 1)
    throw core::Error("similarity calibration: " + std::to_string(queries) + " benign queries over " + std::to_string(clients) +
                          " clients leave fewer than k + 1 = " + std::to_string(options_.k + 1) + " per client",
                      "give more benign queries or fewer clients");
  SimilarityOptions replay_options = options_;
  replay_options.threshold = 0;
  replay_options.max_clients = clients;
  SimilarityDetector replay(replay_options);
  std::vector<double> values;
  for (std::size_t q = 0; q < queries; ++q) {
    const std::string name = std::to_string(q % clients);
    replay.observe(name, benign_inputs.subspan(q * input_size, input_size));
    const double value = replay.last_statistic(name);
    if (!std::isnan(value) && replay.clients_.find(name)->stored > options_.k) values.push_back(value);
  }
  // The first k queries of a stream have no statistic; only values computed on this query count.
  options_.threshold = percentile(std::move(values), options_.calibration_percentile);
  return options_.threshold;
}

}  // namespace aegis::monitor
