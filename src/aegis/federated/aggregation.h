// Robust and differentially private aggregation of participants' model updates, the findings that
// report suspicious participants, and the data tools of the federated experiments (non-IID
// partitions, backdoor trigger). Plain float vectors: no LibTorch here.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "aegis/core/finding.h"
#include "aegis/privacy/accountant.h"

namespace aegis::federated {

struct ClientUpdate {
  std::string participant;
  std::vector<float> delta;  // local model - global model
  double weight = 1.0;       // local sample count (FedAvg weight)
};

// A participant's update is refused before aggregation when it has the wrong length or a
// non-finite value; returns the reason (for a log line and a finding), nullopt when valid.
std::optional<std::string> invalid_update_reason(std::span<const float> delta, std::size_t expected_length);
// The same, and the weight must be finite and > 0 (a weight is a claimed sample count: a
// participant that inflates it takes over FedAvg, so the caller should also cap it).
std::optional<std::string> invalid_update_reason(const ClientUpdate& update, std::size_t expected_length);

enum class AggregationRule { Mean, Median, TrimmedMean, Krum, MultiKrum };
// "mean" | "fedavg", "median", "trimmed-mean", "krum", "multi-krum"; nullopt otherwise.
std::optional<AggregationRule> parse_aggregation_rule(std::string_view name);
std::string_view to_string(AggregationRule rule);

struct RobustOptions {
  AggregationRule rule = AggregationRule::Mean;
  double norm_bound = 0;                // > 0: every update scaled down to at most this L2 norm before the rule (Sun et al. 2019)
  double trim_fraction = 0.1;           // TrimmedMean: drop this share of the largest and of the smallest values per coordinate
  std::uint32_t byzantine = 0;          // f for Krum / Multi-Krum (Blanchard et al. 2017): needs n > 2f + 2
  std::uint32_t multi_krum_select = 0;  // m for Multi-Krum, 0 = n - f
  double outlier_threshold = 3.0;       // norms more than this many MADs (scaled by 1.4826, a robust standard deviation)
                                        // above the median norm are reported; Krum rejections likewise by distance
};

// Why a participant is listed; decides the finding's rule id and severity.
enum class OutlierKind {
  NormOutlier,   // FL001: norm far above the round's median norm
  KrumRejected,  // FL001: left out by Krum / Multi-Krum and far from its nearest updates, compared with the others
  Trimmed,       // FL001: cut by TrimmedMean in far more coordinates than chance explains
  Clipped,       // FL002: scaled down by the norm bound
  Invalid,       // FL003: refused before aggregation (wrong length, non-finite value, bad weight)
};
std::string_view to_string(OutlierKind kind);

struct Outlier {
  std::string participant;
  std::string reason;  // one sentence with the numbers, for a log line
  double norm = 0;     // L2 norm of the update as received (before any norm bound)
  double score = 0;    // NormOutlier: robust deviations above the median norm; KrumRejected: robust deviations
                       // of its RMS distance to its nearest updates above the median; Trimmed: share of
                       // coordinates trimmed; Clipped: norm / bound
  OutlierKind kind = OutlierKind::NormOutlier;
};

struct AggregationResult {
  std::vector<float> delta;          // the aggregated update to add to the global model
  std::vector<std::string> used;     // participants whose updates entered the result (Krum: the selected ones)
  std::vector<Outlier> outliers;     // norm outliers, clipped updates, Krum rejections, most-trimmed participants
};

// Mean is FedAvg (weighted by ClientUpdate::weight); Median, TrimmedMean, Krum and Multi-Krum ignore
// weights. Throws core::Error with what to change when the rule cannot run: no updates, updates of
// different lengths or with non-finite values (filter them with remove_invalid_updates first), Krum
// with n <= 2f + 2, a trim that removes everything, options out of range.
AggregationResult aggregate(std::span<const ClientUpdate> updates, const RobustOptions& options);

// Removes the updates invalid_update_reason refuses, in place, and returns them as Invalid outliers.
std::vector<Outlier> remove_invalid_updates(std::vector<ClientUpdate>& updates, std::size_t expected_length);

// One finding per outlier: FL001 suspicious update (norm outlier, rejected by Krum, most trimmed),
// FL002 update clipped by the norm bound, FL003 invalid update refused. location.file = "round <r>".
std::vector<core::Finding> outlier_findings(std::uint64_t round, std::span<const Outlier> outliers);

// Client-level differential privacy (McMahan et al. 2018, DP-FedAvg): each update is clipped to
// clip_norm and the SUM gets Gaussian noise N(0, (noise_multiplier * clip_norm)^2) per coordinate; the
// noised sum is divided by per_round, the expected number of participants per round (a fixed
// denominator, not the actual count, so that the sensitivity is known).
struct ClientDpOptions {
  double clip_norm = 1.0;
  double noise_multiplier = 1.0;
  double delta = 1e-5;
  std::uint64_t population = 0;  // participants that exist
  std::uint64_t per_round = 0;   // participants sampled per round
  bool secure_noise = true;      // OpenSSL's CSPRNG; false only for reproducible experiments
  std::uint64_t seed = 0;        // when !secure_noise
  privacy::RdpConversion conversion = privacy::RdpConversion::Improved;
};

// Throws core::Error naming the setting when the options cannot give a privacy guarantee.
void check_client_dp_options(const ClientDpOptions& options);

// Scales `values` in place so that their L2 norm is at most `bound` (> 0); returns the norm before.
// Throws core::Error for a bound <= 0 or a non-finite value.
double clip_to_norm(std::span<float> values, double bound);

// Adds N(0, stddev^2) to every value. secure: OpenSSL RAND_bytes; otherwise std::mt19937_64(seed), the
// same numbers for the same seed. Both turn 53-bit uniforms into normals by Box-Muller.
void add_gaussian_noise(std::span<float> values, double stddev, bool secure, std::uint64_t seed);

// The aggregator's half of DP-FedAvg over a sum of already clipped updates (for example the sum that
// secure aggregation reveals): adds the noise and divides by per_round. `round` is mixed into the seed
// of non-secure noise so that rounds do not repeat their noise.
void privatize_update_sum(std::span<float> sum, const ClientDpOptions& options, std::uint64_t round);

// DP-FedAvg over individual updates: clips each to clip_norm, sums, privatize_update_sum. `used` lists
// every participant; clipping is the mechanism here, not a suspicion, so no outliers are reported.
// Throws core::Error like aggregate() for no, ragged or non-finite updates.
AggregationResult aggregate_client_dp(std::span<const ClientUpdate> updates, const ClientDpOptions& options,
                                      std::uint64_t round);

// Epsilon spent over rounds with the RDP accountant (privacy::RdpAccountant): sampling rate
// q = per_round / population, sigma = noise_multiplier, at options.delta. Fixed-size client sampling
// is accounted as Poisson sampling at the same rate, as McMahan et al. 2018 do.
class ClientDpAccountant {
 public:
  explicit ClientDpAccountant(ClientDpOptions options);  // throws core::Error via check_client_dp_options
  void record_round();
  // A restarted aggregator: forget what was recorded and account `rounds` rounds done.
  void restore(std::uint64_t rounds);
  double epsilon() const;  // 0 before the first round; infinity for noise_multiplier 0
  std::uint64_t rounds() const { return accountant_.steps(); }
  double sampling_rate() const { return q_; }
  const ClientDpOptions& options() const { return options_; }

 private:
  ClientDpOptions options_;
  double q_ = 0;
  privacy::RdpAccountant accountant_;
};

// Splits a labelled data set over participants, the same for the same seed on every machine (each
// participant computes its own part without talking to the others). Returns each participant's
// sample indices, ascending; every index appears exactly once.
//   "dirichlet": per class, proportions drawn from Dirichlet(alpha) (Hsu et al. 2019), the class's
//                samples dealt accordingly; re-drawn (bounded) until every participant has min_samples.
//   "shards":    sorted by label, cut into 2 * participants shards, 2 dealt to each (McMahan et al. 2017).
//   "iid":       shuffled and dealt evenly.
// Throws core::Error with what to change when the split cannot be made.
std::vector<std::vector<std::size_t>> partition_indices(std::span<const int> labels, std::uint32_t participants,
                                                        std::string_view scheme, double alpha, std::uint64_t seed,
                                                        std::size_t min_samples = 10);

// The backdoor trigger of the poisoning experiments: a bright 4x4 square (value 1.0, every channel) in
// the bottom-right corner of an image sample laid out {C, H, W} (or {H, W}). Throws core::Error when
// the shape does not match the sample or the image is smaller than 4x4.
void stamp_trigger(std::span<float> sample, std::span<const std::int64_t> sample_shape);

}  // namespace aegis::federated
