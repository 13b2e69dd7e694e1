// The data side of the federated experiments (see aggregation.h): non-IID splits of a labelled data
// set that every participant computes alike from a shared seed, and the backdoor trigger.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/federated/aggregation.h"

namespace aegis::federated {
namespace {

// Each participant process must derive the same split, so only std::mt19937_64 (fully specified by
// the standard) and our own integer draws decide it; the gamma draws come from libstdc++, the one
// standard library Aegis builds with.
std::uint64_t uniform_below(std::mt19937_64& rng, std::uint64_t bound) {
  const std::uint64_t reject_below = (0 - bound) % bound;  // 2^64 mod bound: drawing above it is unbiased
  for (;;) {
    const std::uint64_t r = rng();
    if (r >= reject_below) return r % bound;
  }
}

void shuffle(std::vector<std::size_t>& values, std::mt19937_64& rng) {
  for (std::size_t i = values.size(); i > 1; --i) std::swap(values[i - 1], values[uniform_below(rng, i)]);
}

// The `part`-th of `parts` near-equal consecutive blocks of `total` items: [begin, end).
std::pair<std::size_t, std::size_t> block(std::size_t total, std::size_t parts, std::size_t part) {
  const std::size_t size = total / parts, extra = total % parts;
  const std::size_t begin = part * size + std::min(part, extra);
  return {begin, begin + size + (part < extra ? 1 : 0)};
}

std::size_t smallest(const std::vector<std::vector<std::size_t>>& parts) {
  std::size_t least = parts.front().size();
  for (const auto& p : parts) least = std::min(least, p.size());
  return least;
}

// Re-drawn this many times before a Dirichlet split that starves a participant is given up.
constexpr int kMaxDirichletTries = 1000;

std::vector<std::vector<std::size_t>> dirichlet_split(std::span<const int> labels, std::uint32_t participants,
                                                      double alpha, std::mt19937_64& rng, std::size_t min_samples) {
  std::map<int, std::vector<std::size_t>> by_class;
  for (std::size_t i = 0; i < labels.size(); ++i) by_class[labels[i]].push_back(i);
  std::gamma_distribution<double> gamma(alpha, 1.0);
  std::vector<double> proportions(participants);
  for (int attempt = 0; attempt < kMaxDirichletTries; ++attempt) {
    std::vector<std::vector<std::size_t>> parts(participants);
    for (auto [label, members] : by_class) {
      shuffle(members, rng);
      double total = 0;
      for (double& p : proportions) total += p = gamma(rng);
      // A tiny alpha can underflow every draw to 0: the limit of Dirichlet(alpha -> 0) is one
      // participant taking the whole class.
      if (!(total > 0) || !std::isfinite(total)) {
        std::fill(proportions.begin(), proportions.end(), 0.0);
        proportions[uniform_below(rng, participants)] = total = 1.0;
      }
      const double count = static_cast<double>(members.size());
      double cumulative = 0;
      std::size_t begin = 0;
      for (std::uint32_t j = 0; j < participants; ++j) {
        cumulative += proportions[j];
        std::size_t end = j + 1 == participants
                              ? members.size()
                              : static_cast<std::size_t>(std::llround(std::min(1.0, cumulative / total) * count));
        end = std::clamp(end, begin, members.size());
        parts[j].insert(parts[j].end(), members.begin() + static_cast<std::ptrdiff_t>(begin),
                        members.begin() + static_cast<std::ptrdiff_t>(end));
        begin = end;
      }
    }
    if (smallest(parts) >= min_samples) return parts;
  }
  char alpha_text[32];
  std::snprintf(alpha_text, sizeof alpha_text, "%g", alpha);
  throw core::Error("no Dirichlet(" + std::string(alpha_text) + ") split of " + std::to_string(labels.size()) +
                        " samples over " + std::to_string(participants) + " participants gave each at least " +
                        std::to_string(min_samples) + " samples in " + std::to_string(kMaxDirichletTries) + " draws",
                    "raise the partition alpha, lower min_samples, or use fewer participants");
}

std::vector<std::vector<std::size_t>> shard_split(std::span<const int> labels, std::uint32_t participants,
                                                  std::mt19937_64& rng) {
  const std::size_t shards = 2 * static_cast<std::size_t>(participants);
  if (labels.size() < shards)
    throw core::Error("the shards partition needs at least 2 samples per participant (" + std::to_string(shards) +
                          "), the data set has " + std::to_string(labels.size()),
                      "use fewer participants or more data");
  std::vector<std::size_t> sorted(labels.size());
  for (std::size_t i = 0; i < sorted.size(); ++i) sorted[i] = i;
  std::stable_sort(sorted.begin(), sorted.end(), [&](std::size_t a, std::size_t b) { return labels[a] < labels[b]; });
  std::vector<std::size_t> order(shards);
  for (std::size_t s = 0; s < shards; ++s) order[s] = s;
  shuffle(order, rng);
  std::vector<std::vector<std::size_t>> parts(participants);
  for (std::size_t s = 0; s < shards; ++s) {
    const auto [begin, end] = block(sorted.size(), shards, order[s]);
    auto& part = parts[s / 2];
    part.insert(part.end(), sorted.begin() + static_cast<std::ptrdiff_t>(begin),
                sorted.begin() + static_cast<std::ptrdiff_t>(end));
  }
  return parts;
}

std::vector<std::vector<std::size_t>> iid_split(std::size_t samples, std::uint32_t participants, std::mt19937_64& rng) {
  std::vector<std::size_t> all(samples);
  for (std::size_t i = 0; i < samples; ++i) all[i] = i;
  shuffle(all, rng);
  std::vector<std::vector<std::size_t>> parts(participants);
  for (std::uint32_t p = 0; p < participants; ++p) {
    const auto [begin, end] = block(samples, participants, p);
    parts[p].assign(all.begin() + static_cast<std::ptrdiff_t>(begin), all.begin() + static_cast<std::ptrdiff_t>(end));
  }
  return parts;
}

}  // namespace

std::vector<std::vector<std::size_t>> partition_indices(std::span<const int> labels, std::uint32_t participants,
                                                        std::string_view scheme, double alpha, std::uint64_t seed,
                                                        std::size_t min_samples) {
  if (participants == 0)
    throw core::Error("cannot partition data over 0 participants", "give a partition count of at least 1");
  if (participants > labels.size())
    throw core::Error("cannot partition " + std::to_string(labels.size()) + " samples over " +
                          std::to_string(participants) + " participants",
                      "use fewer participants or more data");
  if (min_samples > labels.size() / participants)
    throw core::Error("cannot give each of " + std::to_string(participants) + " participants " +
                          std::to_string(min_samples) + " samples out of " + std::to_string(labels.size()),
                      "lower min_samples to at most " + std::to_string(labels.size() / participants) +
                          ", use fewer participants, or more data");
  std::mt19937_64 rng(seed);
  std::vector<std::vector<std::size_t>> parts;
  if (scheme == "dirichlet") {
    if (!std::isfinite(alpha) || alpha <= 0)
      throw core::Error("the Dirichlet partition's alpha must be a positive number",
                        "set alpha, for example 0.1 (very skewed), 0.5, or 100 (nearly IID)");
    parts = dirichlet_split(labels, participants, alpha, rng, min_samples);
  } else if (scheme == "shards") {
    parts = shard_split(labels, participants, rng);
  } else if (scheme == "iid") {
    parts = iid_split(labels.size(), participants, rng);
  } else {
    throw core::Error("unknown partition scheme '" + std::string(scheme) + "'", "use dirichlet, shards or iid");
  }
  // Shards and IID deal near-equal parts, so the up-front check above already guarantees this; it
  // stays as the one place every scheme's promise is kept.
  if (smallest(parts) < min_samples)
    throw core::Error("the " + std::string(scheme) + " partition left a participant with fewer than " +
                          std::to_string(min_samples) + " samples",
                      "lower min_samples or use fewer participants");
  for (auto& part : parts) std::sort(part.begin(), part.end());
  return parts;
}

void stamp_trigger(std::span<float> sample, std::span<const std::int64_t> sample_shape) {
  if (sample_shape.size() != 2 && sample_shape.size() != 3)
    throw core::Error("the backdoor trigger needs an image shape {C, H, W} or {H, W}, got " +
                          std::to_string(sample_shape.size()) + " dimensions",
                      "give the input shape of one image sample");
  std::size_t dims[3] = {1, 0, 0};
  const std::size_t offset = 3 - sample_shape.size();
  for (std::size_t i = 0; i < sample_shape.size(); ++i) {
    if (sample_shape[i] <= 0 || static_cast<std::uint64_t>(sample_shape[i]) > sample.size())
      throw core::Error("image dimension " + std::to_string(sample_shape[i]) + " does not fit a sample of " +
                            std::to_string(sample.size()) + " values",
                        "give the input shape of one image sample");
    dims[offset + i] = static_cast<std::size_t>(sample_shape[i]);
  }
  const auto [channels, height, width] = dims;
  // Each dimension fits the sample, so dividing (not multiplying) keeps a hostile shape from overflowing.
  if (height > sample.size() / channels || width > sample.size() / (channels * height) ||
      channels * height * width != sample.size())
    throw core::Error("image shape " + std::to_string(channels) + "x" + std::to_string(height) + "x" +
                          std::to_string(width) + " does not match a sample of " + std::to_string(sample.size()) +
                          " values",
                      "give the input shape of one image sample");
  constexpr std::size_t kTrigger = 4;
  if (height < kTrigger || width < kTrigger)
    throw core::Error("a " + std::to_string(height) + "x" + std::to_string(width) +
                          " image is smaller than the 4x4 backdoor trigger",
                      "use images of at least 4x4 pixels");
  for (std::size_t c = 0; c < channels; ++c)
    for (std::size_t y = height - kTrigger; y < height; ++y)
      for (std::size_t x = width - kTrigger; x < width; ++x) sample[(c * height + y) * width + x] = 1.0f;
}

}  // namespace aegis::federated
