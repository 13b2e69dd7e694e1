// Splits of a labelled data set over federated participants (Dirichlet non-IID, shards, IID) and the
// backdoor trigger of the poisoning experiments.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <set>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/federated/aggregation.h"

namespace fl = aegis::federated;

namespace {

// 10 classes of `per_class` samples, interleaved as a shuffled data set would be.
std::vector<int> balanced_labels(std::size_t per_class) {
  std::vector<int> labels(10 * per_class);
  for (std::size_t i = 0; i < labels.size(); ++i) labels[i] = static_cast<int>((i * 7) % 10);
  return labels;
}

void expect_covers_each_index_once(const std::vector<std::vector<std::size_t>>& parts, std::size_t samples) {
  std::vector<int> seen(samples, 0);
  for (const auto& part : parts) {
    EXPECT_TRUE(std::is_sorted(part.begin(), part.end()));
    for (const std::size_t i : part) {
      ASSERT_LT(i, samples);
      ++seen[i];
    }
  }
  EXPECT_EQ(std::count(seen.begin(), seen.end(), 1), static_cast<std::ptrdiff_t>(samples));
}

// Mean over participants of the entropy (nats) of their label distribution: log(10) for a uniform
// share of 10 classes, 0 for a participant holding one class.
double mean_label_entropy(const std::vector<std::vector<std::size_t>>& parts, const std::vector<int>& labels) {
  double total = 0;
  for (const auto& part : parts) {
    std::map<int, double> counts;
    for (const std::size_t i : part) counts[labels[i]] += 1;
    double h = 0;
    for (const auto& [label, count] : counts) {
      const double p = count / static_cast<double>(part.size());
      h -= p * std::log(p);
    }
    total += h;
  }
  return total / static_cast<double>(parts.size());
}

std::size_t classes_in(const std::vector<std::size_t>& part, const std::vector<int>& labels) {
  std::set<int> classes;
  for (const std::size_t i : part) classes.insert(labels[i]);
  return classes.size();
}

}  // namespace

TEST(FederatedPartition, EverySchemeCoversEveryIndexExactlyOnce) {
  const auto labels = balanced_labels(600);
  for (const char* scheme : {"dirichlet", "shards", "iid"}) {
    SCOPED_TRACE(scheme);
    const auto parts = fl::partition_indices(labels, 10, scheme, 0.5, 1);
    ASSERT_EQ(parts.size(), 10u);
    expect_covers_each_index_once(parts, labels.size());
    for (const auto& part : parts) EXPECT_GE(part.size(), 10u);
  }
  // An uneven count of samples and classes of different sizes.
  std::vector<int> uneven;
  for (int c = 0; c < 7; ++c) uneven.insert(uneven.end(), static_cast<std::size_t>(50 + 37 * c), c);
  for (const char* scheme : {"dirichlet", "shards", "iid"}) {
    SCOPED_TRACE(scheme);
    const auto parts = fl::partition_indices(uneven, 9, scheme, 1.0, 3, 5);
    expect_covers_each_index_once(parts, uneven.size());
  }
}

TEST(FederatedPartition, TheSameSeedGivesTheSameSplitAnotherSeedAnother) {
  const auto labels = balanced_labels(300);
  for (const char* scheme : {"dirichlet", "shards", "iid"}) {
    SCOPED_TRACE(scheme);
    const auto a = fl::partition_indices(labels, 8, scheme, 0.3, 2024);
    const auto b = fl::partition_indices(labels, 8, scheme, 0.3, 2024);
    const auto c = fl::partition_indices(labels, 8, scheme, 0.3, 2025);
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
  }
}

TEST(FederatedPartition, SmallDirichletAlphaIsMoreSkewedThanLarge) {
  const auto labels = balanced_labels(600);
  const double uniform = std::log(10.0);
  for (std::uint64_t seed = 0; seed < 5; ++seed) {
    SCOPED_TRACE(seed);
    const auto skewed = fl::partition_indices(labels, 10, "dirichlet", 0.1, seed);
    const auto even = fl::partition_indices(labels, 10, "dirichlet", 100, seed);
    const double skewed_entropy = mean_label_entropy(skewed, labels);
    const double even_entropy = mean_label_entropy(even, labels);
    EXPECT_LT(skewed_entropy, 0.6 * uniform);
    EXPECT_GT(even_entropy, 0.97 * uniform);
    // Sizes follow the draws too: with alpha 100 every participant has close to a tenth.
    for (const auto& part : even) EXPECT_NEAR(static_cast<double>(part.size()), 600.0, 120.0);
  }
  const auto iid = fl::partition_indices(labels, 10, "iid", 0, 0);
  EXPECT_GT(mean_label_entropy(iid, labels), 0.97 * uniform);
  for (const auto& part : iid) EXPECT_EQ(part.size(), 600u);
}

TEST(FederatedPartition, ShardsGiveEachParticipantAtMostTwoClasses) {
  const auto labels = balanced_labels(500);
  for (std::uint64_t seed = 0; seed < 5; ++seed) {
    const auto parts = fl::partition_indices(labels, 10, "shards", 0, seed);
    std::size_t single = 0;
    for (const auto& part : parts) {
      EXPECT_EQ(part.size(), 500u);  // two shards of 250
      EXPECT_LE(classes_in(part, labels), 2u);
      single += classes_in(part, labels) == 1;
    }
    EXPECT_LT(single, parts.size());  // shards are dealt at random, not class by class
  }
}

TEST(FederatedPartition, MinSamplesIsHonouredOrRefused) {
  const auto labels = balanced_labels(200);  // 2000 samples
  for (std::uint64_t seed = 0; seed < 5; ++seed) {
    // Without the floor, the first Dirichlet(0.1) draw leaves someone below 100 (half the average).
    const auto unbounded = fl::partition_indices(labels, 10, "dirichlet", 0.1, seed, 0);
    const auto parts = fl::partition_indices(labels, 10, "dirichlet", 0.1, seed, 100);
    const auto smallest = std::min_element(unbounded.begin(), unbounded.end(),
                                           [](const auto& a, const auto& b) { return a.size() < b.size(); });
    EXPECT_LT(smallest->size(), 100u) << "seed " << seed;  // else the floor below proves nothing
    for (const auto& part : parts) EXPECT_GE(part.size(), 100u) << "seed " << seed;
    expect_covers_each_index_once(parts, labels.size());
  }
  // 20 participants cannot each get 101 of 2000.
  try {
    fl::partition_indices(labels, 20, "dirichlet", 0.5, 0, 101);
    FAIL() << "an impossible min_samples must be refused";
  } catch (const aegis::core::Error& e) {
    EXPECT_NE(e.hint().find("min_samples"), std::string::npos) << e.hint();
  }
  // Possible in principle, but a very skewed Dirichlet split practically never gives everyone 95.
  try {
    fl::partition_indices(labels, 20, "dirichlet", 0.01, 0, 95);
    FAIL() << "a split that keeps starving a participant must give up";
  } catch (const aegis::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("draws"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("alpha"), std::string::npos) << e.hint();
  }
}

TEST(FederatedPartition, BadArgumentsAreRefused) {
  const auto labels = balanced_labels(10);
  EXPECT_THROW(fl::partition_indices(labels, 0, "iid", 0, 0), aegis::core::Error);
  EXPECT_THROW(fl::partition_indices(labels, 101, "iid", 0, 0, 0), aegis::core::Error);
  EXPECT_THROW(fl::partition_indices(labels, 2, "pathological", 0, 0), aegis::core::Error);
  EXPECT_THROW(fl::partition_indices(labels, 2, "dirichlet", 0, 0), aegis::core::Error);
  EXPECT_THROW(fl::partition_indices(labels, 2, "dirichlet", -1, 0), aegis::core::Error);
  EXPECT_THROW(fl::partition_indices(labels, 2, "dirichlet", std::nan(""), 0), aegis::core::Error);
  EXPECT_THROW(fl::partition_indices({}, 1, "iid", 0, 0, 0), aegis::core::Error);
}

TEST(FederatedTrigger, StampsOnlyTheBottomRightFourByFourSquare) {
  std::vector<float> image(28 * 28, 0.0f);
  const std::vector<std::int64_t> shape = {1, 28, 28};
  fl::stamp_trigger(image, shape);
  for (std::size_t y = 0; y < 28; ++y)
    for (std::size_t x = 0; x < 28; ++x)
      EXPECT_EQ(image[y * 28 + x], (y >= 24 && x >= 24) ? 1.0f : 0.0f) << y << "," << x;

  // Three channels of a non-square image with content: every channel stamped, nothing else changed.
  std::vector<float> rgb(3 * 6 * 9);
  std::iota(rgb.begin(), rgb.end(), 2.0f);
  auto stamped = rgb;
  const std::vector<std::int64_t> rgb_shape = {3, 6, 9};
  fl::stamp_trigger(stamped, rgb_shape);
  std::size_t changed = 0;
  for (std::size_t c = 0; c < 3; ++c)
    for (std::size_t y = 0; y < 6; ++y)
      for (std::size_t x = 0; x < 9; ++x) {
        const std::size_t i = (c * 6 + y) * 9 + x;
        const bool corner = y >= 2 && x >= 5;
        EXPECT_EQ(stamped[i], corner ? 1.0f : rgb[i]) << c << "," << y << "," << x;
        changed += stamped[i] != rgb[i];
      }
  EXPECT_EQ(changed, 3u * 16u);

  std::vector<float> plain(5 * 4, 0.0f);
  const std::vector<std::int64_t> hw = {5, 4};
  fl::stamp_trigger(plain, hw);
  EXPECT_EQ(std::count(plain.begin(), plain.end(), 1.0f), 16);
  EXPECT_EQ(plain[0 * 4 + 0], 0.0f);
  EXPECT_EQ(plain[1 * 4 + 0], 1.0f);
}

TEST(FederatedTrigger, RefusesShapesThatDoNotFit) {
  std::vector<float> image(28 * 28, 0.0f);
  const std::vector<std::vector<std::int64_t>> bad = {
      {1, 28, 27}, {2, 28, 28}, {28 * 28}, {1, 1, 28, 28}, {-1, 28, 28}, {1, 0, 28}};
  for (const auto& shape : bad) EXPECT_THROW(fl::stamp_trigger(image, shape), aegis::core::Error) << shape.size();
  std::vector<float> tiny(3 * 3, 0.0f);
  const std::vector<std::int64_t> tiny_shape = {1, 3, 3};
  EXPECT_THROW(fl::stamp_trigger(tiny, tiny_shape), aegis::core::Error);
  // A hostile shape with dimensions far beyond the sample.
  const std::vector<std::int64_t> overflow = {std::int64_t{1} << 40, std::int64_t{1} << 40, 784};
  EXPECT_THROW(fl::stamp_trigger(image, overflow), aegis::core::Error);
}
