#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/formats/npy.h"
#include "aegis/formats/zip.h"
#include "test_support.h"

namespace aegis::formats {
namespace {

using Bytes = std::vector<std::uint8_t>;

// Frames a header dict the way numpy.lib.format does: magic, version, length, padded text.
Bytes npy_file(int major, std::string header, std::size_t data_bytes = 0) {
  const std::size_t prefix = major == 1 ? 10 : 12;
  header += '\n';
  while ((prefix + header.size()) % 64 != 0) header.insert(header.size() - 1, " ");
  Bytes out = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<std::uint8_t>(major), 0};
  const std::size_t length = header.size();
  out.push_back(static_cast<std::uint8_t>(length));
  out.push_back(static_cast<std::uint8_t>(length >> 8));
  if (major != 1) {
    out.push_back(static_cast<std::uint8_t>(length >> 16));
    out.push_back(static_cast<std::uint8_t>(length >> 24));
  }
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data_bytes, 0);
  return out;
}

// The header texts below are what numpy 1.24 (numpy.lib.format.write_array) wrote for each case.

TEST(Npy, ReadsVersion1) {
  const Bytes file = npy_file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", 24);
  ASSERT_TRUE(looks_like_npy(file));
  const NpyHeader h = parse_npy_header(file);
  EXPECT_EQ(h.major, 1);
  EXPECT_EQ(h.minor, 0);
  EXPECT_EQ(h.descr, "<f4");
  EXPECT_FALSE(h.fortran_order);
  EXPECT_EQ(h.shape, (std::vector<std::uint64_t>{2, 3}));
  EXPECT_FALSE(h.has_object);
  EXPECT_EQ(h.data_offset, 128u);
  EXPECT_EQ(h.item_size, 4u);
  EXPECT_EQ(h.expected_data_bytes, 24u);
}

TEST(Npy, ReadsVersion2) {
  const Bytes file = npy_file(2, "{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }", 24);
  const NpyHeader h = parse_npy_header(file);
  EXPECT_EQ(h.major, 2);
  EXPECT_EQ(h.shape, (std::vector<std::uint64_t>{3}));
  EXPECT_EQ(h.data_offset, 128u);
  EXPECT_EQ(h.expected_data_bytes, 24u);
}

TEST(Npy, ReadsVersion3WithUtf8FieldNames) {
  const Bytes file = npy_file(3, "{'descr': [('\xc3\xa9', '<f4'), ('b', '<i2')], 'fortran_order': False, 'shape': (2,), }", 12);
  const NpyHeader h = parse_npy_header(file);
  EXPECT_EQ(h.major, 3);
  EXPECT_FALSE(h.has_object);
  EXPECT_EQ(h.item_size, 6u);
  EXPECT_EQ(h.expected_data_bytes, 12u);
  EXPECT_EQ(h.descr, "[('\xc3\xa9', '<f4'), ('b', '<i2')]");
}

TEST(Npy, ReadsFortranOrderAndComplex) {
  const NpyHeader h = parse_npy_header(npy_file(1, "{'descr': '<c16', 'fortran_order': True, 'shape': (2, 2), }", 64));
  EXPECT_TRUE(h.fortran_order);
  EXPECT_EQ(h.item_size, 16u);
  EXPECT_EQ(h.expected_data_bytes, 64u);
}

TEST(Npy, DetectsObjectDtype) {
  const NpyHeader plain = parse_npy_header(npy_file(1, "{'descr': '|O', 'fortran_order': False, 'shape': (3,), }"));
  EXPECT_TRUE(plain.has_object);
  EXPECT_EQ(plain.item_size, 0u);
  EXPECT_EQ(plain.expected_data_bytes, 0u);
  const NpyHeader structured =
      parse_npy_header(npy_file(1, "{'descr': [('a', '<f4'), ('b', '|O')], 'fortran_order': False, 'shape': (1,), }"));
  EXPECT_TRUE(structured.has_object);
  const NpyHeader nested = parse_npy_header(
      npy_file(1, "{'descr': [('a', '<f4'), ('b', [('c', '<i2'), ('d', 'O')])], 'fortran_order': False, 'shape': (1,), }"));
  EXPECT_TRUE(nested.has_object);
  // np.dtype() spellings that also mean objects
  for (const std::string descr : {"'object'", "'f4,O'", "'(2,)O'", "'>O'", "'i4, O4'", "[('a', 'object')]"}) {
    SCOPED_TRACE(descr);
    EXPECT_TRUE(parse_npy_header(npy_file(1, "{'descr': " + descr + ", 'fortran_order': False, 'shape': (1,)}")).has_object);
  }
  const NpyHeader double_quoted = parse_npy_header(npy_file(1, "{\"descr\": \"|O\", \"fortran_order\": False, \"shape\": (3,)}"));
  EXPECT_TRUE(double_quoted.has_object);
}

TEST(Npy, ComputesItemSizes) {
  const std::vector<std::pair<std::string, std::uint64_t>> cases = {
      {"'<f4'", 4}, {"'|b1'", 1}, {"'<c16'", 16}, {"'<U10'", 40}, {"'|S5'", 5}, {"'|V8'", 8}, {"'<M8[ns]'", 8},
      {"[('a', '<f4', (2, 3)), ('b', [('c', '<i2'), ('d', '|u1')])]", 27}};
  for (const auto& [descr, size] : cases) {
    SCOPED_TRACE(descr);
    const NpyHeader h = parse_npy_header(npy_file(1, "{'descr': " + descr + ", 'fortran_order': False, 'shape': (5,), }"));
    EXPECT_EQ(h.item_size, size);
    EXPECT_EQ(h.expected_data_bytes, size * 5);
  }
}

TEST(Npy, ReadsRealFiles) {
  const Bytes file = test::read_file(test::fixture("benign/array_f32.npy"));
  const NpyHeader h = parse_npy_header(file);
  EXPECT_EQ(h.descr, "<f4");
  EXPECT_FALSE(h.has_object);
  EXPECT_EQ(h.data_offset + h.expected_data_bytes, file.size());

  const Bytes npz = test::read_file(test::fixture("benign/arrays_compressed.npz"));
  const ZipArchive archive = read_zip(npz);
  ASSERT_FALSE(archive.entries.empty());
  std::vector<std::uint8_t> storage;
  for (const auto& entry : archive.entries) {
    auto member = read_zip_member(npz, entry, storage, {}, true, nullptr);
    const NpyHeader member_header = parse_npy_header(member);
    EXPECT_EQ(member_header.data_offset + member_header.expected_data_bytes, member.size()) << entry.name;
  }
}

TEST(Npy, RejectsMalformedHeaders) {
  const std::vector<std::string> bad = {
      "{'descr': '<f4', 'fortran_order': False}",                                  // missing shape
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'extra': 1}",       // numpy wants exactly three keys
      "{'descr': '<f4', 'fortran_order': 0, 'shape': (2,)}",                       // not a bool
      "{'descr': '<f4', 'fortran_order': False, 'shape': [2]}",                    // not a tuple
      "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}",                  // negative
      "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)",                    // unterminated
      "{'descr': '<f4, 'fortran_order': False, 'shape': (2,)}",                    // broken quote
      "{'descr': __import__('os').system('id'), 'fortran_order': False, 'shape': (2,)}",  // code, not a literal
      "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999,)}",
      "[1, 2, 3]",
      "",
  };
  for (const auto& header : bad) {
    SCOPED_TRACE(header);
    EXPECT_THROW(parse_npy_header(npy_file(1, header)), core::FormatError);
  }
  EXPECT_THROW(parse_npy_header(Bytes{0x93, 'N', 'U', 'M'}), core::FormatError);
  Bytes bad_version = npy_file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}");
  bad_version[6] = 9;
  EXPECT_THROW(parse_npy_header(bad_version), core::FormatError);
  Bytes too_long = npy_file(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,)}");
  too_long[8] = 0xFF;
  too_long[9] = 0xFF;  // header length past the end of the file
  EXPECT_THROW(parse_npy_header(too_long), core::FormatError);
}

TEST(Npy, RefusesShapeOverflow) {
  const std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296, 16), }";
  try {
    parse_npy_header(npy_file(1, header));
    FAIL() << "expected a FormatError";
  } catch (const core::FormatError& e) {
    EXPECT_GT(e.offset(), 10u);
  }
  // The element count fits but the byte count does not.
  EXPECT_THROW(parse_npy_header(npy_file(1, "{'descr': '<f8', 'fortran_order': False, 'shape': (4611686018427387904,), }")),
               core::FormatError);
}

TEST(Npy, BoundsDepthAndLength) {
  const std::string deep = "{'descr': " + std::string(5000, '[') + std::string(5000, ']') + ", 'fortran_order': False, 'shape': (1,)}";
  EXPECT_THROW(parse_npy_header(npy_file(2, deep)), core::FormatError);
  Bytes huge = {0x93, 'N', 'U', 'M', 'P', 'Y', 2, 0, 0, 0, 0, 0x10};  // 256 MiB header
  huge.resize(4096, ' ');
  EXPECT_THROW(parse_npy_header(huge), core::FormatError);
}

TEST(Npy, AcceptsPythonLiteralVariants) {
  // Python 2 era headers: u'' strings and long suffixes; single-element parentheses are not tuples.
  const NpyHeader h = parse_npy_header(npy_file(1, "{u'descr': u'<i4', u'fortran_order': False, u'shape': (3L, 2L)}"));
  EXPECT_EQ(h.shape, (std::vector<std::uint64_t>{3, 2}));
  EXPECT_THROW(parse_npy_header(npy_file(1, "{'descr': '<i4', 'fortran_order': False, 'shape': (3)}")), core::FormatError);
  const NpyHeader scalar = parse_npy_header(npy_file(1, "{'descr': '<i4', 'fortran_order': False, 'shape': ()}", 4));
  EXPECT_TRUE(scalar.shape.empty());
  EXPECT_EQ(scalar.expected_data_bytes, 4u);
}

TEST(Npy, LooksLikeNpy) {
  EXPECT_FALSE(looks_like_npy(Bytes{}));
  EXPECT_FALSE(looks_like_npy(Bytes{'P', 'K', 3, 4, 0, 0, 0, 0, 0, 0}));
  EXPECT_TRUE(looks_like_npy(npy_file(3, "{}")));
}

}  // namespace
}  // namespace aegis::formats
