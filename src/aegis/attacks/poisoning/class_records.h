// The checked inputs of the poisoning detectors: which records belong to which class, and a random
// generator per class. Internal to src/aegis/attacks/poisoning.
#pragma once

#include <cstddef>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "aegis/attacks/poisoning/poison_detection.h"

namespace aegis::attacks::poisoning {

// Checks that features hold whole rows of d finite values, one per label, and that every label lies
// in [0, classes); returns the record indices of each class in increasing order. `method` prefixes
// the error messages. Throws core::Error naming the offending record.
std::vector<std::vector<std::size_t>> records_by_class(const std::string& method, std::span<const float> features,
                                                       std::size_t d, std::span<const int> labels, int classes);

// Checks classes and every label; throws core::Error naming the first label out of range.
void check_labels(const std::string& method, std::span<const int> labels, int classes);

// A generator that depends only on the seed and the class, so that what one class draws does not
// depend on the size or order of the others.
std::mt19937_64 class_generator(std::uint64_t seed, int cls);

// Uniform in [0, 1) from the top 53 bits: unlike std::uniform_real_distribution, the same on every
// standard library, so results repeat across platforms for a seed.
inline double uniform01(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Uniform in [0, n), n > 0; the modulo bias is below n / 2^64.
inline std::size_t uniform_index(std::mt19937_64& rng, std::size_t n) { return static_cast<std::size_t>(rng() % n); }

// A detector's result before it looks at anything: n records, none scored or flagged.
inline PoisonScores no_suspects(std::string method, std::size_t n) {
  PoisonScores out;
  out.method = std::move(method);
  out.score.assign(n, 0.0);
  out.flagged.assign(n, 0);
  return out;
}

// printf-style "%.*f" of value, for the notes.
std::string fixed(double value, int decimals);

}  // namespace aegis::attacks::poisoning
