#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/formats/idx.h"
#include "test_support.h"

namespace aegis::formats {
namespace {

using Bytes = std::vector<std::uint8_t>;
namespace fs = std::filesystem;

const fs::path kFashion = "/usr/share/datasets/fashion-mnist";
constexpr std::uint64_t kLimit = 1ull << 28;

// Reads the first n decompressed bytes with zlib's own gz reader: an independent view of the file.
Bytes gz_head(const fs::path& path, std::size_t n) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (!file) return {};
  Bytes out(n);
  const int got = gzread(file, out.data(), static_cast<unsigned>(n));
  gzclose(file);
  out.resize(got < 0 ? 0 : static_cast<std::size_t>(got));
  return out;
}

std::uint32_t be32(const Bytes& b, std::size_t at) {
  return static_cast<std::uint32_t>(b[at]) << 24 | static_cast<std::uint32_t>(b[at + 1]) << 16 |
         static_cast<std::uint32_t>(b[at + 2]) << 8 | b[at + 3];
}

// --- Hand-made IDX bytes: the format is four header bytes and big-endian numbers. ---

void put_be(Bytes& out, std::uint64_t value, int bytes) {
  for (int k = bytes - 1; k >= 0; --k) out.push_back(static_cast<std::uint8_t>(value >> (8 * k)));
}

Bytes idx_header(std::uint8_t type, const std::vector<std::uint32_t>& dims) {
  Bytes out = {0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (auto d : dims) put_be(out, d, 4);
  return out;
}

Bytes gzip(const Bytes& data) { return test::deflate_bytes(data, 31); }

Bytes u8_file(const std::vector<std::uint32_t>& dims) {
  Bytes out = idx_header(0x08, dims);
  std::size_t n = 1;
  for (auto d : dims) n *= d;
  for (std::size_t i = 0; i < n; ++i) out.push_back(static_cast<std::uint8_t>(i * 7 % 256));
  return out;
}

TEST(Idx, ReadsFashionMnistTestImages) {
  const fs::path path = kFashion / "t10k-images-idx3-ubyte.gz";
  if (!fs::exists(path)) GTEST_SKIP() << "install the Debian package dataset-fashion-mnist for " << path;
  const Bytes head = gz_head(path, 16 + 784);
  ASSERT_EQ(head.size(), 16u + 784u);
  ASSERT_EQ(be32(head, 0), 0x00000803u);  // u8, three dimensions

  const IdxArray images = read_idx_file(path, kLimit);
  EXPECT_EQ(images.type, IdxType::U8);
  EXPECT_EQ(images.dims, (std::vector<std::uint32_t>{be32(head, 4), be32(head, 8), be32(head, 12)}));
  EXPECT_EQ(images.dims, (std::vector<std::uint32_t>{10000, 28, 28}));
  EXPECT_EQ(images.total_records, 10000u);
  ASSERT_EQ(images.values.size(), 10000u * 784u);
  for (std::size_t i = 0; i < 784; ++i) ASSERT_EQ(images.values[i], static_cast<float>(head[16 + i])) << i;
  EXPECT_TRUE(std::all_of(images.values.begin(), images.values.end(),
                          [](float v) { return v >= 0 && v <= 255 && v == static_cast<float>(static_cast<int>(v)); }));
  EXPECT_GT(*std::max_element(images.values.begin(), images.values.end()), 250.0f);
}

TEST(Idx, ReadsFashionMnistLabels) {
  for (const auto& [name, count] : {std::pair<const char*, std::uint32_t>{"t10k-labels-idx1-ubyte.gz", 10000},
                                    {"train-labels-idx1-ubyte.gz", 60000}}) {
    const fs::path path = kFashion / name;
    if (!fs::exists(path)) GTEST_SKIP() << "install the Debian package dataset-fashion-mnist for " << path;
    const IdxArray labels = read_idx_file(path, kLimit);
    EXPECT_EQ(labels.dims, std::vector<std::uint32_t>{count});
    std::array<std::size_t, 10> histogram{};
    for (float v : labels.values) {
      ASSERT_TRUE(v >= 0 && v <= 9) << v;
      ++histogram[static_cast<std::size_t>(v)];
    }
    for (auto n : histogram) EXPECT_EQ(n, count / 10) << name;  // Fashion-MNIST is balanced
  }
}

TEST(Idx, RecordRangeConvertsOnlyTheSlice) {
  const fs::path path = kFashion / "train-images-idx3-ubyte.gz";
  if (!fs::exists(path)) GTEST_SKIP() << "install the Debian package dataset-fashion-mnist for " << path;
  const IdxArray slice = read_idx_file(path, kLimit, {100, 3});
  EXPECT_EQ(slice.total_records, 60000u);
  EXPECT_EQ(slice.first_record, 100u);
  EXPECT_EQ(slice.dims, (std::vector<std::uint32_t>{3, 28, 28}));
  const Bytes head = gz_head(path, 16 + 103 * 784);
  ASSERT_EQ(slice.values.size(), 3u * 784u);
  for (std::size_t i = 0; i < slice.values.size(); ++i) ASSERT_EQ(slice.values[i], head[16 + 100 * 784 + i]) << i;

  const IdxArray past = read_idx_file(path, kLimit, {70000, 5});
  EXPECT_EQ(past.dims[0], 0u);
  EXPECT_TRUE(past.values.empty());
}

TEST(Idx, DecodesEveryElementType) {
  struct Case {
    std::uint8_t type;
    int bytes;
    std::uint64_t raw;
    float expected;
  };
  const Case cases[] = {
      {0x08, 1, 200, 200.0f},
      {0x09, 1, 0xFF, -1.0f},
      {0x0B, 2, 0xFED4, -300.0f},
      {0x0C, 4, 0xFFFEEE90, -70000.0f},
      {0x0D, 4, std::bit_cast<std::uint32_t>(1.5f), 1.5f},
      {0x0E, 8, std::bit_cast<std::uint64_t>(-2.25), -2.25f},
  };
  for (const auto& c : cases) {
    Bytes file = idx_header(c.type, {2, 1});
    put_be(file, c.raw, c.bytes);
    put_be(file, 0, c.bytes);
    for (const Bytes& bytes : {file, gzip(file)}) {
      const IdxArray array = parse_idx(bytes, 100);
      EXPECT_EQ(static_cast<int>(array.type), c.type);
      EXPECT_EQ(array.dims, (std::vector<std::uint32_t>{2, 1}));
      ASSERT_EQ(array.values.size(), 2u);
      EXPECT_EQ(array.values[0], c.expected) << idx_type_name(array.type);
      EXPECT_EQ(array.values[1], 0.0f);
    }
  }
}

TEST(Idx, PlainAndGzipReadTheSame) {
  const Bytes file = u8_file({5, 3, 4});
  const IdxArray plain = parse_idx(file, 1000);
  const IdxArray packed = parse_idx(gzip(file), 1000);
  EXPECT_EQ(plain.values, packed.values);
  EXPECT_EQ(plain.dims, packed.dims);
  ASSERT_TRUE(looks_like_idx(file));
  EXPECT_TRUE(looks_like_gzip(gzip(file)));
  const IdxArray range = parse_idx(gzip(file), 1000, {1, 2});
  EXPECT_EQ(range.dims, (std::vector<std::uint32_t>{2, 3, 4}));
  EXPECT_EQ(range.values, std::vector<float>(plain.values.begin() + 12, plain.values.begin() + 36));
}

TEST(Idx, FollowsGzipMembersAndIgnoresZeroPadding) {
  const Bytes file = u8_file({4, 4});
  const Bytes head(file.begin(), file.begin() + 6), tail(file.begin() + 6, file.end());
  Bytes members = gzip(head);
  const Bytes second = gzip(tail);
  members.insert(members.end(), second.begin(), second.end());
  EXPECT_EQ(parse_idx(members, 100).values, parse_idx(file, 100).values);

  Bytes padded = gzip(file);
  padded.insert(padded.end(), 512, 0);
  EXPECT_EQ(parse_idx(padded, 100).values.size(), 16u);

  Bytes garbage = gzip(file);
  const std::size_t end = garbage.size();
  garbage.push_back('x');
  try {
    parse_idx(garbage, 100);
    FAIL() << "garbage after the gzip stream was accepted";
  } catch (const core::FormatError& e) {
    EXPECT_EQ(e.offset(), end);
  }
}

TEST(Idx, TruncatedFilesAreFormatErrors) {
  const Bytes file = u8_file({10, 28, 28});
  for (std::size_t cut : {0ul, 2ul, 3ul, 7ul, 15ul, 16ul, 100ul, file.size() - 1}) {
    const Bytes part(file.begin(), file.begin() + static_cast<std::ptrdiff_t>(cut));
    try {
      parse_idx(part, kLimit);
      FAIL() << "a file cut at " << cut << " was accepted";
    } catch (const core::FormatError& e) {
      EXPECT_LE(e.offset(), cut);
      if (cut >= 16) {
        EXPECT_EQ(e.offset(), cut);
        EXPECT_NE(std::string(e.what()).find("cut off"), std::string::npos) << e.what();
      }
    }
  }
  // A gzip stream cut short, and one whose inflated data is short of what the header states.
  const Bytes packed = gzip(file);
  EXPECT_THROW(parse_idx(Bytes(packed.begin(), packed.end() - 20), kLimit), core::FormatError);
  const Bytes short_data(file.begin(), file.end() - 1);
  try {
    parse_idx(gzip(short_data), kLimit);
    FAIL();
  } catch (const core::FormatError& e) {
    EXPECT_EQ(e.offset(), short_data.size());
    EXPECT_NE(std::string(e.what()).find("decompressed"), std::string::npos) << e.what();
  }
}

TEST(Idx, TrailingDataIsAFormatErrorAtItsOffset) {
  Bytes file = u8_file({2, 2});
  const std::size_t expected = file.size();
  file.push_back(0);
  for (const Bytes& bytes : {file, gzip(file)}) {
    try {
      parse_idx(bytes, 100);
      FAIL() << "trailing data was accepted";
    } catch (const core::FormatError& e) {
      EXPECT_EQ(e.offset(), expected);
    }
  }
}

TEST(Idx, RefusesBadHeaders) {
  auto offset_of = [](const Bytes& bytes) -> std::int64_t {
    try {
      parse_idx(bytes, 1000);
    } catch (const core::FormatError& e) {
      return static_cast<std::int64_t>(e.offset());
    }
    return -1;
  };
  EXPECT_EQ(offset_of({1, 0, 8, 1, 0, 0, 0, 0}), 0);        // magic
  EXPECT_EQ(offset_of({0, 0, 0x0A, 1, 0, 0, 0, 0}), 2);     // unknown type
  EXPECT_EQ(offset_of({0, 0, 0x08, 0}), 3);                 // no dimensions
  EXPECT_EQ(offset_of({0, 0, 0x08, 3, 0, 0, 0, 1}), 8);     // dims cut off
  // 0xFFFFFFFF^3 overflows 64 bits; the error points at the dimension that overflows.
  EXPECT_EQ(offset_of(idx_header(0x08, {0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF})), 12);
  // ... even when another dimension is zero.
  EXPECT_EQ(offset_of(idx_header(0x08, {0, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF})), 16);
  // Beyond the caller's element limit, before any data is read.
  EXPECT_EQ(offset_of(idx_header(0x0E, {1000, 1000})), 4);
  try {
    parse_idx(idx_header(0x08, {70000, 28, 28}), 1000);
  } catch (const core::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("70000x28x28"), std::string::npos) << e.what();
  }
  // Zero records are a valid, empty file.
  const IdxArray empty = parse_idx(idx_header(0x08, {0, 28, 28}), 1000);
  EXPECT_TRUE(empty.values.empty());
}

TEST(Idx, GzipBombStopsAtTheHeaderCap) {
  // 100 MB of zeros behind a header that claims 10 images of 28x28: inflating must stop one byte
  // past the 7,856 bytes the header accounts for.
  Bytes bomb = idx_header(0x08, {10, 28, 28});
  const std::size_t expected = bomb.size() + 10 * 784;
  bomb.resize(100'000'000, 0);
  const Bytes packed = gzip(bomb);
  ASSERT_LT(packed.size(), 200'000u);
  try {
    parse_idx(packed, kLimit);
    FAIL() << "the gzip bomb was accepted";
  } catch (const core::FormatError& e) {
    EXPECT_EQ(e.offset(), expected);
    EXPECT_NE(std::string(e.what()).find("bomb"), std::string::npos) << e.what();
  }
  // A bomb whose header claims more than the limit is refused before inflating any data.
  Bytes big_claim = idx_header(0x08, {100000, 1000, 1000});
  big_claim.resize(1'000'000, 0);
  EXPECT_THROW(parse_idx(gzip(big_claim), kLimit), core::FormatError);
}

TEST(Idx, CorruptGzipIsAFormatError) {
  Bytes packed = gzip(u8_file({50, 10, 10}));
  packed[packed.size() / 2] ^= 0x55;
  EXPECT_THROW(parse_idx(packed, kLimit), core::FormatError);
  Bytes bad_crc = gzip(u8_file({5, 5}));
  bad_crc[bad_crc.size() - 8] ^= 1;  // the CRC-32 in the gzip trailer
  EXPECT_THROW(parse_idx(bad_crc, kLimit), core::FormatError);
}

TEST(Idx, ReadFileReportsMissingFilesAsErrors) {
  EXPECT_THROW(read_idx_file("/nonexistent/t10k-images-idx3-ubyte.gz", kLimit), core::Error);
}

TEST(Idx, GarbageNeverCrashes) {
  std::uint32_t state = 7;
  for (int round = 0; round < 3000; ++round) {
    Bytes bytes = test::pseudo_random_bytes(static_cast<std::size_t>(round % 64), state);
    if (bytes.size() >= 4 && round % 3 == 0) {
      bytes[0] = 0;
      bytes[1] = 0;
      bytes[2] = 0x08;
      bytes[3] = static_cast<std::uint8_t>(1 + round % 4);
    }
    if (round % 5 == 0) bytes = gzip(bytes);
    try {
      parse_idx(bytes, 4096);
    } catch (const core::FormatError&) {
    }
  }
}

}  // namespace
}  // namespace aegis::formats
