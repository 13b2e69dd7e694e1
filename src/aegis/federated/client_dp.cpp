// Client-level differential privacy for federated averaging (McMahan et al. 2018, "Learning
// Differentially Private Recurrent Language Models"): clip, sum, add Gaussian noise, divide by a fixed
// denominator, and account the rounds with the RDP accountant (see aggregation.h).
#include <openssl/rand.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numbers>
#include <random>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/federated/aggregation.h"

namespace aegis::federated {
namespace {

std::string num(double v) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.6g", v);
  return buffer;
}

double l2_norm(std::span<const float> values) {
  double sum = 0;
  for (const float v : values) sum += static_cast<double>(v) * static_cast<double>(v);
  return std::sqrt(sum);
}

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Values are noised in blocks so that the random words of a large model need little memory.
constexpr std::size_t kNoiseBlock = 8192;  // even: Box-Muller makes normals in pairs

// Box-Muller in double precision from two 64-bit words per pair of normals: the top 53 bits of each
// make a uniform, the first shifted into (0, 1] so that log() never sees 0.
void add_normals_from_words(std::span<float> values, std::span<const std::uint64_t> words, double stddev) {
  constexpr double kTwoPow53Inv = 1.0 / 9007199254740992.0;
  for (std::size_t i = 0; i < values.size(); i += 2) {
    const double u1 = (static_cast<double>(words[i] >> 11) + 1.0) * kTwoPow53Inv;
    const double u2 = static_cast<double>(words[i + 1] >> 11) * kTwoPow53Inv;
    const double r = stddev * std::sqrt(-2.0 * std::log(u1));
    const double angle = 2.0 * std::numbers::pi * u2;
    values[i] = static_cast<float>(static_cast<double>(values[i]) + r * std::cos(angle));
    if (i + 1 < values.size()) values[i + 1] = static_cast<float>(static_cast<double>(values[i + 1]) + r * std::sin(angle));
  }
}

}  // namespace

void check_client_dp_options(const ClientDpOptions& options) {
  if (!std::isfinite(options.clip_norm) || options.clip_norm <= 0)
    throw core::Error("client DP clip_norm " + num(options.clip_norm) + " is not a positive number",
                      "set clip_norm to about the median L2 norm of honest updates (for example 1.0)");
  if (!std::isfinite(options.noise_multiplier) || options.noise_multiplier < 0)
    throw core::Error("client DP noise_multiplier " + num(options.noise_multiplier) + " is not a non-negative number",
                      "set noise_multiplier (the noise's standard deviation in units of clip_norm), for example 1.0");
  if (!(options.delta > 0 && options.delta < 1))
    throw core::Error("client DP delta " + num(options.delta) + " is not in (0, 1)",
                      "set delta below 1 / population, for example 1e-5");
  if (options.per_round == 0)
    throw core::Error("client DP needs the expected number of participants per round (per_round), got 0",
                      "set participants_per_round to at least 1");
  if (options.population < options.per_round)
    throw core::Error("client DP population " + std::to_string(options.population) +
                          " is smaller than the participants per round " + std::to_string(options.per_round),
                      "set population to the number of participants that exist (at least participants_per_round)");
}

double clip_to_norm(std::span<float> values, double bound) {
  if (!std::isfinite(bound) || bound <= 0)
    throw core::Error("clip bound " + num(bound) + " is not a positive number", "give a positive L2 norm bound");
  const double norm = l2_norm(values);
  if (!std::isfinite(norm))
    throw core::Error("cannot clip an update with non-finite values",
                      "refuse updates with NaN or infinite values first (invalid_update_reason)");
  if (norm <= bound) return norm;
  for (float& v : values) v = static_cast<float>(static_cast<double>(v) * (bound / norm));
  // Rounding to float can leave the norm a hair above the bound, and the DP guarantee rests on the
  // bound holding exactly: step every value one float toward zero until it does (each step lowers the
  // norm by about 2^-24 of itself; the first almost always suffices).
  for (int step = 0; step < 16 && l2_norm(values) > bound; ++step)
    for (float& v : values) v = std::nextafter(v, 0.0f);
  if (l2_norm(values) > bound) std::fill(values.begin(), values.end(), 0.0f);  // unreachable; keeps the bound
  return norm;
}

void add_gaussian_noise(std::span<float> values, double stddev, bool secure, std::uint64_t seed) {
  if (!std::isfinite(stddev) || stddev < 0)
    throw core::Error("noise standard deviation " + num(stddev) + " is not a non-negative number",
                      "check noise_multiplier and clip_norm");
  if (stddev == 0 || values.empty()) return;
  std::mt19937_64 rng(seed);
  std::vector<std::uint64_t> words(kNoiseBlock);
  for (std::size_t start = 0; start < values.size(); start += kNoiseBlock) {
    const std::size_t count = std::min(kNoiseBlock, values.size() - start);
    const std::size_t needed = count + (count % 2);
    if (secure) {
      if (RAND_bytes(reinterpret_cast<unsigned char*>(words.data()), static_cast<int>(needed * sizeof(std::uint64_t))) != 1)
        throw core::Error("the system's random number generator (OpenSSL RAND_bytes) failed",
                          "check that /dev/urandom is readable");
    } else {
      for (std::size_t i = 0; i < needed; ++i) words[i] = rng();
    }
    add_normals_from_words(values.subspan(start, count), std::span<const std::uint64_t>(words.data(), needed), stddev);
  }
}

void privatize_update_sum(std::span<float> sum, const ClientDpOptions& options, std::uint64_t round) {
  check_client_dp_options(options);
  add_gaussian_noise(sum, options.noise_multiplier * options.clip_norm, options.secure_noise,
                     splitmix64(options.seed ^ splitmix64(round)));
  const double denominator = static_cast<double>(options.per_round);
  for (float& v : sum) v = static_cast<float>(static_cast<double>(v) / denominator);
}

AggregationResult aggregate_client_dp(std::span<const ClientUpdate> updates, const ClientDpOptions& options,
                                      std::uint64_t round) {
  check_client_dp_options(options);
  if (updates.empty())
    throw core::Error("no updates to aggregate",
                      "wait for at least one participant's update (check min_participants and the round deadline)");
  const std::size_t length = updates.front().delta.size();
  std::vector<double> sum(length, 0.0);
  std::vector<float> clipped;
  AggregationResult result;
  for (const auto& update : updates) {
    if (const auto reason = invalid_update_reason(update.delta, length))
      throw core::Error("the update of participant '" + update.participant + "' cannot be aggregated: " + *reason,
                        "refuse invalid updates before aggregating them (remove_invalid_updates)");
    clipped.assign(update.delta.begin(), update.delta.end());
    clip_to_norm(clipped, options.clip_norm);
    for (std::size_t c = 0; c < length; ++c) sum[c] += static_cast<double>(clipped[c]);
    result.used.push_back(update.participant);
  }
  result.delta.assign(sum.begin(), sum.end());
  privatize_update_sum(result.delta, options, round);
  return result;
}

ClientDpAccountant::ClientDpAccountant(ClientDpOptions options) : options_(options) {
  check_client_dp_options(options_);
  q_ = static_cast<double>(options_.per_round) / static_cast<double>(options_.population);
}

void ClientDpAccountant::record_round() { accountant_.step(q_, options_.noise_multiplier); }

void ClientDpAccountant::restore(std::uint64_t rounds) {
  accountant_ = privacy::RdpAccountant();
  if (rounds > 0) accountant_.step(q_, options_.noise_multiplier, rounds);
}

double ClientDpAccountant::epsilon() const {
  if (rounds() == 0) return 0;
  if (options_.noise_multiplier == 0) return std::numeric_limits<double>::infinity();
  return accountant_.spent(options_.delta, options_.conversion).epsilon;
}

}  // namespace aegis::federated
