// The sandboxed HDF5 reader: Keras attributes come back from real h5py files, damaged files come
// back as errors (never as a crash of the scanner), and the walk stops at its limits.
#include "aegis/formats/hdf5.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <string>

#include "test_support.h"

namespace aegis::formats {
namespace {

const Hdf5Attribute* find_attribute(const Hdf5Extract& extract, std::string_view object, std::string_view name) {
  auto it = std::find_if(extract.attributes.begin(), extract.attributes.end(),
                         [&](const Hdf5Attribute& a) { return a.object == object && a.name == name; });
  return it == extract.attributes.end() ? nullptr : &*it;
}

TEST(Hdf5, KerasAttributesWrittenByH5pyComeBack) {
  auto bytes = test::read_file(test::fixture("benign/keras_dense.h5"));
  ASSERT_TRUE(looks_like_hdf5(bytes));
  auto extract = extract_hdf5(bytes);
  ASSERT_TRUE(extract.opened) << extract.error;
  EXPECT_FALSE(extract.child_died);
  EXPECT_TRUE(extract.error.empty()) << extract.error;
  const auto* config = find_attribute(extract, "/", "model_config");
  ASSERT_NE(config, nullptr);
  EXPECT_NE(config->value.find("\"class_name\""), std::string::npos) << config->value;
  EXPECT_NE(config->value.find("Dense"), std::string::npos) << config->value;
  const auto* version = find_attribute(extract, "/", "keras_version");
  ASSERT_NE(version, nullptr);
  EXPECT_FALSE(version->value.empty());
  // Arrays of fixed-length names keep every byte of every name.
  const auto* layers = find_attribute(extract, "/model_weights", "layer_names");
  ASSERT_NE(layers, nullptr);
  EXPECT_NE(layers->value.find("dense"), std::string::npos);
  EXPECT_GE(extract.objects, 2u);
}

// The reader runs under a system-call filter, so that a file which took over libhdf5 could still
// not open files, sockets or programs. Kernels without seccomp get the resource limits alone.
TEST(Hdf5, ReaderRunsUnderItsSystemCallFilter) {
  std::ifstream status("/proc/self/status");
  std::string line;
  bool kernel_has_seccomp = false;
  while (std::getline(status, line)) kernel_has_seccomp = kernel_has_seccomp || line.rfind("Seccomp:", 0) == 0;
  auto extract = extract_hdf5(test::read_file(test::fixture("benign/keras_dense.h5")));
  ASSERT_TRUE(extract.opened) << extract.error;
  // The reader says which it got; where the kernel has seccomp, it must be the filter.
  EXPECT_EQ(extract.confined, kernel_has_seccomp);
}

TEST(Hdf5, ExternalLinksAreListedWithTheirTarget) {
  auto bytes = test::read_file(test::fixture("malicious/h5_external_link.h5"));
  auto extract = extract_hdf5(bytes);
  ASSERT_TRUE(extract.opened) << extract.error;
  auto it = std::find_if(extract.links.begin(), extract.links.end(), [](const Hdf5Link& l) { return l.kind == "external"; });
  ASSERT_NE(it, extract.links.end());
  EXPECT_NE(it->target.find("/etc/passwd"), std::string::npos) << it->target;
}

TEST(Hdf5, UserBlockInFrontOfTheSuperblockIsFound) {
  auto bytes = test::read_file(test::fixture("benign/h5_userblock.h5"));
  ASSERT_GE(bytes.size(), 1024u);
  EXPECT_NE(std::memcmp(bytes.data(), "\x89HDF", 4), 0);
  EXPECT_TRUE(looks_like_hdf5(bytes));
  auto extract = extract_hdf5(bytes);
  EXPECT_TRUE(extract.opened) << extract.error;
}

TEST(Hdf5, TruncatedFileIsAnErrorNotACrash) {
  auto bytes = test::read_file(test::fixture("benign/keras_dense.h5"));
  for (std::size_t keep : {std::size_t{8}, std::size_t{96}, std::size_t{800}, bytes.size() / 2}) {
    std::vector<std::uint8_t> cut(bytes.begin(), bytes.begin() + static_cast<long>(keep));
    auto extract = extract_hdf5(cut);
    // libhdf5 refuses a file that ends before the end address its superblock declares.
    EXPECT_FALSE(extract.opened) << keep;
    EXPECT_FALSE(extract.error.empty()) << keep;
  }
}

TEST(Hdf5, GarbageBehindTheSignatureIsReportedAsUnreadable) {
  std::vector<std::uint8_t> bytes(4096, 0xA5);
  std::memcpy(bytes.data(), "\x89HDF\r\n\x1a\n", 8);
  auto extract = extract_hdf5(bytes);
  EXPECT_FALSE(extract.opened);
  EXPECT_FALSE(extract.error.empty());
  EXPECT_TRUE(extract.attributes.empty());
}

TEST(Hdf5, EveryByteFlippedInTheHeaderNeverTakesTheScannerDown) {
  auto bytes = test::read_file(test::fixture("benign/keras_dense.h5"));
  std::size_t died = 0, opened = 0;
  Hdf5Limits limits;
  limits.cpu_seconds = 5;
  limits.wall_seconds = 10;
  for (std::size_t at = 0; at < std::min<std::size_t>(bytes.size(), 2048); at += 13) {
    auto copy = bytes;
    copy[at] ^= 0xFF;
    auto extract = extract_hdf5(copy, limits);
    died += extract.child_died;
    opened += extract.opened;
    if (extract.child_died) {
      EXPECT_FALSE(extract.error.empty());
    }
  }
  EXPECT_GT(opened, 0u);  // most single flips leave a readable file
  RecordProperty("children_died", static_cast<int>(died));
}

TEST(Hdf5, ObjectLimitStopsTheWalk) {
  auto bytes = test::read_file(test::fixture("benign/keras_dense.h5"));
  Hdf5Limits limits;
  limits.max_objects = 1;
  auto extract = extract_hdf5(bytes, limits);
  ASSERT_TRUE(extract.opened) << extract.error;
  EXPECT_TRUE(extract.limit_hit);
}

}  // namespace
}  // namespace aegis::formats
