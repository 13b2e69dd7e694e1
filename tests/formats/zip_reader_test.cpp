#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/formats/zip.h"
#include "test_support.h"

namespace aegis::formats {
namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes to_bytes(std::string_view text) { return Bytes(text.begin(), text.end()); }

// --- Small builders for malformed archives (the only hand-made bytes these tests use) ---

void put16(Bytes& out, std::uint16_t v) {
  out.push_back(static_cast<std::uint8_t>(v));
  out.push_back(static_cast<std::uint8_t>(v >> 8));
}
void put32(Bytes& out, std::uint32_t v) {
  put16(out, static_cast<std::uint16_t>(v));
  put16(out, static_cast<std::uint16_t>(v >> 16));
}
void put64(Bytes& out, std::uint64_t v) {
  put32(out, static_cast<std::uint32_t>(v));
  put32(out, static_cast<std::uint32_t>(v >> 32));
}
void append(Bytes& out, const Bytes& more) { out.insert(out.end(), more.begin(), more.end()); }
void append(Bytes& out, std::string_view more) { out.insert(out.end(), more.begin(), more.end()); }

std::uint32_t crc_of(const Bytes& data) {
  return static_cast<std::uint32_t>(crc32(0L, data.data(), static_cast<uInt>(data.size())));
}

Bytes raw_deflate(const Bytes& data) { return aegis::test::deflate_bytes(data, -MAX_WBITS); }

struct Member {
  std::string name{};
  Bytes content{};          // what the member inflates to
  std::uint16_t method = 0;
  std::uint16_t flags = 0;
  // Local-header disagreements; empty/unset means "same as central".
  std::string local_name{};
  int local_flags = -1;
  std::int64_t local_crc = -1;
  std::int64_t central_crc = -1;
  std::int64_t offset_override = -1;  // central directory's local header offset, relative to the archive
  bool write_local = true;            // false: the central entry points at another member's local header
};

struct ZipOptions {
  Bytes prefix{};             // bytes before the archive
  bool fix_offsets = true;    // true: offsets are absolute (like `zip -A`); false: like `cat prefix a.zip`
  Bytes trailing{};
  std::string comment{};
  std::int64_t eocd_entries = -1;  // override the entry count in the end record
  bool zip64 = false;              // write zip64 end records and saturated central fields
};

Bytes build_zip(const std::vector<Member>& members, const ZipOptions& options = {}) {
  Bytes out = options.prefix;
  const std::uint64_t shift = options.fix_offsets ? options.prefix.size() : 0;
  std::vector<std::uint64_t> offsets;
  std::vector<Bytes> stored;
  for (const auto& m : members) {
    Bytes data = m.method == 8 ? raw_deflate(m.content) : m.content;
    stored.push_back(data);
    offsets.push_back(out.size() - options.prefix.size() + shift);
    if (!m.write_local) continue;
    const std::string local_name = m.local_name.empty() ? m.name : m.local_name;
    put32(out, 0x04034b50);
    put16(out, 20);
    put16(out, m.local_flags >= 0 ? static_cast<std::uint16_t>(m.local_flags) : m.flags);
    put16(out, m.method);
    put32(out, 0);
    put32(out, m.local_crc >= 0 ? static_cast<std::uint32_t>(m.local_crc)
                                : (m.central_crc >= 0 ? static_cast<std::uint32_t>(m.central_crc) : crc_of(m.content)));
    put32(out, static_cast<std::uint32_t>(data.size()));
    put32(out, static_cast<std::uint32_t>(m.content.size()));
    put16(out, static_cast<std::uint16_t>(local_name.size()));
    put16(out, 0);
    append(out, local_name);
    append(out, data);
  }
  const std::uint64_t cd_offset = out.size() - options.prefix.size() + shift;
  for (std::size_t i = 0; i < members.size(); ++i) {
    const auto& m = members[i];
    const std::uint64_t offset = m.offset_override >= 0 ? static_cast<std::uint64_t>(m.offset_override) + shift : offsets[i];
    Bytes extra;
    if (options.zip64) {
      put16(extra, 0x0001);
      put16(extra, 24);
      put64(extra, m.content.size());
      put64(extra, stored[i].size());
      put64(extra, offset);
    }
    put32(out, 0x02014b50);
    put16(out, 45);
    put16(out, 45);
    put16(out, m.flags);
    put16(out, m.method);
    put32(out, 0);
    put32(out, m.central_crc >= 0 ? static_cast<std::uint32_t>(m.central_crc) : crc_of(m.content));
    put32(out, options.zip64 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(stored[i].size()));
    put32(out, options.zip64 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(m.content.size()));
    put16(out, static_cast<std::uint16_t>(m.name.size()));
    put16(out, static_cast<std::uint16_t>(extra.size()));
    put16(out, 0);
    put16(out, 0);
    put16(out, 0);
    put32(out, 0);
    put32(out, options.zip64 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(offset));
    append(out, m.name);
    append(out, extra);
  }
  const std::uint64_t cd_size = out.size() - options.prefix.size() + shift - cd_offset;
  const std::uint64_t entries = options.eocd_entries >= 0 ? static_cast<std::uint64_t>(options.eocd_entries) : members.size();
  if (options.zip64) {
    const std::uint64_t record = out.size() - options.prefix.size() + shift;
    put32(out, 0x06064b50);
    put64(out, 44);
    put16(out, 45);
    put16(out, 45);
    put32(out, 0);
    put32(out, 0);
    put64(out, entries);
    put64(out, entries);
    put64(out, cd_size);
    put64(out, cd_offset);
    put32(out, 0x07064b50);
    put32(out, 0);
    put64(out, record);
    put32(out, 1);
  }
  put32(out, 0x06054b50);
  put16(out, 0);
  put16(out, 0);
  put16(out, options.zip64 ? 0xFFFF : static_cast<std::uint16_t>(entries));
  put16(out, options.zip64 ? 0xFFFF : static_cast<std::uint16_t>(entries));
  put32(out, options.zip64 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(cd_size));
  put32(out, options.zip64 ? 0xFFFFFFFFu : static_cast<std::uint32_t>(cd_offset));
  put16(out, static_cast<std::uint16_t>(options.comment.size()));
  append(out, options.comment);
  append(out, options.trailing);
  return out;
}

std::size_t count_kind(const ZipArchive& archive, std::string_view kind) {
  return static_cast<std::size_t>(std::count_if(archive.anomalies.begin(), archive.anomalies.end(),
                                                [&](const ZipAnomaly& a) { return a.kind == kind; }));
}

std::string describe(const ZipArchive& archive) {
  std::string text;
  for (const auto& a : archive.anomalies) text += a.kind + "(" + a.member + ": " + a.detail + ") ";
  return text;
}

// --- Archives written by the real tools ---

// zipfile.ZipFile(buf, 'w'): archive/data.pkl stored, archive/notes.txt deflated
// ("hello " * 6 minus the last space), made with /usr/bin/python3.
const Bytes kPythonZip = {
    0x50, 0x4b, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0xf2, 0x91, 0x02, 0xc5, 0x06, 0x00,
    0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0x61, 0x72, 0x63, 0x68, 0x69, 0x76, 0x65, 0x2f, 0x64, 0x61,
    0x74, 0x61, 0x2e, 0x70, 0x6b, 0x6c, 0x80, 0x02, 0x7d, 0x71, 0x00, 0x2e, 0x50, 0x4b, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00,
    0x08, 0x00, 0x95, 0x76, 0x7a, 0x5d, 0x57, 0x37, 0x62, 0x85, 0x0b, 0x00, 0x00, 0x00, 0x23, 0x00, 0x00, 0x00, 0x11, 0x00,
    0x00, 0x00, 0x61, 0x72, 0x63, 0x68, 0x69, 0x76, 0x65, 0x2f, 0x6e, 0x6f, 0x74, 0x65, 0x73, 0x2e, 0x74, 0x78, 0x74, 0xcb,
    0x48, 0xcd, 0xc9, 0xc9, 0x57, 0xc8, 0xc0, 0x47, 0x02, 0x00, 0x50, 0x4b, 0x01, 0x02, 0x14, 0x03, 0x14, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0xf2, 0x91, 0x02, 0xc5, 0x06, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00, 0x10, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x01, 0x00, 0x00, 0x00, 0x00, 0x61, 0x72, 0x63, 0x68,
    0x69, 0x76, 0x65, 0x2f, 0x64, 0x61, 0x74, 0x61, 0x2e, 0x70, 0x6b, 0x6c, 0x50, 0x4b, 0x01, 0x02, 0x14, 0x03, 0x14, 0x00,
    0x00, 0x00, 0x08, 0x00, 0x95, 0x76, 0x7a, 0x5d, 0x57, 0x37, 0x62, 0x85, 0x0b, 0x00, 0x00, 0x00, 0x23, 0x00, 0x00, 0x00,
    0x11, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x01, 0x34, 0x00, 0x00, 0x00, 0x61, 0x72,
    0x63, 0x68, 0x69, 0x76, 0x65, 0x2f, 0x6e, 0x6f, 0x74, 0x65, 0x73, 0x2e, 0x74, 0x78, 0x74, 0x50, 0x4b, 0x05, 0x06, 0x00,
    0x00, 0x00, 0x00, 0x02, 0x00, 0x02, 0x00, 0x7d, 0x00, 0x00, 0x00, 0x6e, 0x00, 0x00, 0x00, 0x00, 0x00};

// zipfile: z.open('big.bin', 'w', force_zip64=True) — a zip64 extra field in the local header.
const Bytes kPythonForcedZip64 = {
    0x50, 0x4b, 0x03, 0x04, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x21, 0x00, 0x47, 0x04, 0x4f, 0x3a, 0x0c, 0x00,
    0x00, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x07, 0x00, 0x14, 0x00, 0x62, 0x69, 0x67, 0x2e, 0x62, 0x69, 0x6e, 0x01, 0x00, 0x10,
    0x00, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7a, 0x69, 0x70,
    0x36, 0x34, 0x20, 0x6d, 0x65, 0x6d, 0x62, 0x65, 0x72, 0x50, 0x4b, 0x01, 0x02, 0x14, 0x03, 0x14, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x21, 0x00, 0x47, 0x04, 0x4f, 0x3a, 0x0c, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x80, 0x01, 0x00, 0x00, 0x00, 0x00, 0x62, 0x69, 0x67, 0x2e, 0x62,
    0x69, 0x6e, 0x50, 0x4b, 0x05, 0x06, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x35, 0x00, 0x00, 0x00, 0x45, 0x00,
    0x00, 0x00, 0x00, 0x00};

TEST(ZipReader, ReadsPythonZipfileArchive) {
  const ZipArchive archive = read_zip(kPythonZip);
  EXPECT_TRUE(archive.anomalies.empty()) << describe(archive);
  ASSERT_EQ(archive.entries.size(), 2u);
  EXPECT_EQ(archive.entries[0].name, "archive/data.pkl");
  EXPECT_EQ(archive.entries[0].method, 0);
  EXPECT_EQ(archive.entries[1].name, "archive/notes.txt");
  EXPECT_EQ(archive.entries[1].method, 8);
  EXPECT_EQ(archive.archive_start, 0u);
  EXPECT_FALSE(archive.zip64);

  std::vector<std::uint8_t> storage;
  std::vector<ZipAnomaly> anomalies;
  auto pickle = read_zip_member(kPythonZip, archive.entries[0], storage, {}, true, &anomalies);
  EXPECT_EQ(pickle.data(), kPythonZip.data() + archive.entries[0].data_offset) << "stored members are views, not copies";
  EXPECT_EQ(Bytes(pickle.begin(), pickle.end()), (Bytes{0x80, 0x02, 0x7d, 0x71, 0x00, 0x2e}));
  auto notes = read_zip_member(kPythonZip, archive.entries[1], storage, {}, true, &anomalies);
  EXPECT_EQ(std::string(notes.begin(), notes.end()), "hello hello hello hello hello hello");
  EXPECT_TRUE(anomalies.empty());
}

TEST(ZipReader, ReadsLocalZip64ExtraField) {
  const ZipArchive archive = read_zip(kPythonForcedZip64);
  EXPECT_TRUE(archive.anomalies.empty()) << describe(archive);
  ASSERT_EQ(archive.entries.size(), 1u);
  std::vector<std::uint8_t> storage;
  std::vector<ZipAnomaly> anomalies;
  auto content = read_zip_member(kPythonForcedZip64, archive.entries[0], storage, {}, true, &anomalies);
  EXPECT_EQ(std::string(content.begin(), content.end()), "zip64 member");
  EXPECT_TRUE(anomalies.empty());
}

TEST(ZipReader, ReadsZip64EndRecordsAndCentralExtras) {
  const Bytes zip = build_zip({{.name = "a/data.pkl", .content = to_bytes("pickle bytes")},
                               {.name = "a/data/0", .content = Bytes(300, 7), .method = 8}},
                              {.zip64 = true});
  const ZipArchive archive = read_zip(zip);
  EXPECT_TRUE(archive.zip64);
  EXPECT_TRUE(archive.anomalies.empty()) << describe(archive);
  ASSERT_EQ(archive.entries.size(), 2u);
  EXPECT_EQ(archive.entries[1].uncompressed_size, 300u);
  std::vector<std::uint8_t> storage;
  std::vector<ZipAnomaly> anomalies;
  auto content = read_zip_member(zip, archive.entries[1], storage, {}, true, &anomalies);
  EXPECT_EQ(Bytes(content.begin(), content.end()), Bytes(300, 7));
  EXPECT_TRUE(anomalies.empty());
}

void expect_clean_real_archive(const std::string& name, bool expect_zip64) {
  SCOPED_TRACE(name);
  const Bytes data = test::read_file(test::fixture(name));
  const ZipArchive archive = read_zip(data);
  EXPECT_EQ(archive.zip64, expect_zip64);
  EXPECT_TRUE(archive.anomalies.empty()) << describe(archive);
  ASSERT_FALSE(archive.entries.empty());
  std::vector<std::uint8_t> storage;
  for (const auto& entry : archive.entries) {
    std::vector<ZipAnomaly> anomalies;
    auto content = read_zip_member(data, entry, storage, {}, true, &anomalies);
    EXPECT_EQ(content.size(), entry.uncompressed_size) << entry.name;
    EXPECT_TRUE(anomalies.empty()) << entry.name;
  }
}

TEST(ZipReader, ReadsTorchSaveArchives) {
  expect_clean_real_archive("benign/state_dict.pt", true);
  expect_clean_real_archive("benign/checkpoint_optim.pt", true);
  expect_clean_real_archive("benign/torchscript_module.pt", true);
  const Bytes data = test::read_file(test::fixture("benign/state_dict.pt"));
  const ZipArchive archive = read_zip(data);
  const auto pickle = std::find_if(archive.entries.begin(), archive.entries.end(),
                                   [](const ZipEntry& e) { return e.name.ends_with("/data.pkl"); });
  ASSERT_NE(pickle, archive.entries.end());
  std::vector<std::uint8_t> storage;
  auto content = read_zip_member(data, *pickle, storage, {}, false, nullptr);
  ASSERT_GE(content.size(), 2u);
  EXPECT_EQ(content[0], 0x80);
}

TEST(ZipReader, ReadsNumpyArchives) {
  expect_clean_real_archive("benign/arrays.npz", false);
  expect_clean_real_archive("benign/arrays_compressed.npz", false);
}

// --- Disagreements the loader tolerates and we must report ---

TEST(ZipReader, ReportsNameMismatchButKeepsCentralName) {
  const Bytes zip = build_zip({{.name = "archive/data.pkl", .content = to_bytes("x"), .local_name = "other"}});
  const ZipArchive archive = read_zip(zip);
  ASSERT_EQ(archive.entries.size(), 1u);
  EXPECT_EQ(archive.entries[0].name, "archive/data.pkl");
  EXPECT_EQ(archive.entries[0].local_name, "other");
  EXPECT_EQ(count_kind(archive, "name-mismatch"), 1u) << describe(archive);
  // data_offset follows the local name's length, as miniz computes it
  EXPECT_EQ(archive.entries[0].data_offset, 30u + 5u);
}

TEST(ZipReader, ReportsFlagsMismatch) {
  const Bytes encrypted_locally = build_zip({{.name = "a", .content = to_bytes("x"), .local_flags = 0x0001}});
  EXPECT_EQ(count_kind(read_zip(encrypted_locally), "flags-mismatch"), 1u);
  const Bytes descriptor_centrally = build_zip({{.name = "a", .content = to_bytes("x"), .flags = 0x0008, .local_flags = 0}});
  EXPECT_EQ(count_kind(read_zip(descriptor_centrally), "flags-mismatch"), 1u);
}

TEST(ZipReader, ReportsEncryptedMemberAndRefusesToReadIt) {
  const Bytes zip = build_zip({{.name = "a", .content = to_bytes("x"), .flags = 0x0001}});
  const ZipArchive archive = read_zip(zip);
  EXPECT_EQ(count_kind(archive, "encrypted"), 1u);
  std::vector<std::uint8_t> storage;
  EXPECT_THROW(read_zip_member(zip, archive.entries[0], storage, {}, false, nullptr), core::FormatError);
}

TEST(ZipReader, DetectsBadCrcOnlyWhenAsked) {
  const Bytes zip = build_zip({{.name = "a", .content = to_bytes("payload"), .central_crc = 0x12345678}});
  const ZipArchive archive = read_zip(zip);
  EXPECT_TRUE(archive.anomalies.empty()) << describe(archive);
  std::vector<std::uint8_t> storage;
  std::vector<ZipAnomaly> anomalies;
  read_zip_member(zip, archive.entries[0], storage, {}, false, &anomalies);
  EXPECT_TRUE(anomalies.empty());
  read_zip_member(zip, archive.entries[0], storage, {}, true, &anomalies);
  ASSERT_EQ(anomalies.size(), 1u);
  EXPECT_EQ(anomalies[0].kind, "crc-mismatch");
}

TEST(ZipReader, ReportsLocalCentralCrcDisagreement) {
  const Bytes zip = build_zip({{.name = "a", .content = to_bytes("payload"), .local_crc = 1}});
  EXPECT_EQ(count_kind(read_zip(zip), "crc-mismatch"), 1u);
}

TEST(ZipReader, ReportsPrefixDataWithAbsoluteOffsets) {
  const Bytes zip = build_zip({{.name = "a", .content = to_bytes("x")}},
                              {.prefix = Bytes(100, '#'), .fix_offsets = true});
  const ZipArchive archive = read_zip(zip);
  EXPECT_EQ(archive.archive_start, 100u);
  EXPECT_EQ(count_kind(archive, "prefix-data"), 1u) << describe(archive);
  EXPECT_EQ(archive.entries[0].local_header_offset, 100u);
  EXPECT_TRUE(looks_like_zip(zip));
}

TEST(ZipReader, ReadsPrefixedArchiveWhoseOffsetsIgnoreThePrefix) {
  // `cat stub.sh model.zip`: Python's zipfile shifts every offset by the prefix; so do we.
  const Bytes zip = build_zip({{.name = "a", .content = to_bytes("hidden")}},
                              {.prefix = to_bytes("#!/bin/sh\necho hi\n"), .fix_offsets = false});
  const ZipArchive archive = read_zip(zip);
  ASSERT_EQ(archive.entries.size(), 1u);
  EXPECT_EQ(archive.archive_start, 18u);
  EXPECT_EQ(count_kind(archive, "prefix-data"), 1u) << describe(archive);
  std::vector<std::uint8_t> storage;
  auto content = read_zip_member(zip, archive.entries[0], storage, {}, true, nullptr);
  EXPECT_EQ(std::string(content.begin(), content.end()), "hidden");
  EXPECT_TRUE(looks_like_zip(zip));
}

TEST(ZipReader, ReportsTrailingDataAndComment) {
  const Bytes trailing = build_zip({{.name = "a", .content = to_bytes("x")}}, {.trailing = to_bytes("appended payload")});
  const ZipArchive archive = read_zip(trailing);
  EXPECT_EQ(count_kind(archive, "trailing-data"), 1u) << describe(archive);
  const Bytes commented = build_zip({{.name = "a", .content = to_bytes("x")}}, {.comment = "hello"});
  const ZipArchive with_comment = read_zip(commented);
  EXPECT_EQ(count_kind(with_comment, "comment"), 1u);
  EXPECT_EQ(count_kind(with_comment, "trailing-data"), 0u);
}

TEST(ZipReader, ReportsOverlappingMembers) {
  // Two central entries share one local header: the overlapping-file bomb shape.
  const Bytes zip = build_zip({{.name = "a", .content = to_bytes("shared")},
                               {.name = "b", .content = to_bytes("shared"), .offset_override = 0, .write_local = false}});
  const ZipArchive archive = read_zip(zip);
  ASSERT_EQ(archive.entries.size(), 2u);
  EXPECT_EQ(count_kind(archive, "overlap"), 1u) << describe(archive);
  EXPECT_EQ(count_kind(archive, "name-mismatch"), 1u);
}

TEST(ZipReader, ReportsDuplicateNames) {
  const Bytes zip = build_zip({{.name = "archive/data.pkl", .content = to_bytes("benign")},
                               {.name = "archive/data.pkl", .content = to_bytes("evil")}});
  const ZipArchive archive = read_zip(zip);
  EXPECT_EQ(archive.entries.size(), 2u);
  EXPECT_EQ(count_kind(archive, "duplicate-name"), 1u);
}

TEST(ZipReader, ReportsPathTraversalNames) {
  const Bytes zip = build_zip({{.name = "../../etc/cron.d/x", .content = to_bytes("x")},
                               {.name = "/abs", .content = to_bytes("x")},
                               {.name = "ok/..hidden", .content = to_bytes("x")}});
  EXPECT_EQ(count_kind(read_zip(zip), "absolute-or-parent-path"), 2u);
}

TEST(ZipReader, ReportsUnsupportedMethod) {
  Member m{.name = "a", .content = to_bytes("x")};
  m.method = 12;  // bzip2: miniz refuses it
  const Bytes zip = build_zip({m});
  const ZipArchive archive = read_zip(zip);
  EXPECT_EQ(count_kind(archive, "unsupported-method"), 1u);
  std::vector<std::uint8_t> storage;
  EXPECT_THROW(read_zip_member(zip, archive.entries[0], storage, {}, false, nullptr), core::FormatError);
}

TEST(ZipReader, ReportsEntryCountMismatchAndReadsHiddenEntries) {
  const Bytes zip = build_zip({{.name = "visible", .content = to_bytes("x")}, {.name = "hidden", .content = to_bytes("y")}},
                              {.eocd_entries = 1});
  const ZipArchive archive = read_zip(zip);
  EXPECT_EQ(archive.entries.size(), 2u);
  EXPECT_GE(count_kind(archive, "entry-count-mismatch"), 1u);
}

TEST(ZipReader, ReadsTruncatedCentralDirectoryAsFarAsItGoes) {
  // The end record promises two entries; only the first central record survives.
  Bytes zip = build_zip({{.name = "first", .content = to_bytes("x")}, {.name = "second", .content = to_bytes("y")}});
  const ZipArchive whole = read_zip(zip);
  const std::size_t second_record = zip.size() - 22 - (46 + 6);
  zip.erase(zip.begin() + static_cast<std::ptrdiff_t>(second_record), zip.end() - 22);
  const ZipArchive archive = read_zip(zip);
  ASSERT_EQ(archive.entries.size(), 1u);
  EXPECT_EQ(archive.entries[0].name, "first");
  EXPECT_GE(count_kind(archive, "entry-count-mismatch"), 1u) << describe(archive);
  EXPECT_EQ(whole.entries.size(), 2u);
}

TEST(ZipReader, ThrowsWithoutUsableCentralDirectory) {
  EXPECT_THROW(read_zip(Bytes{}), core::FormatError);
  EXPECT_THROW(read_zip(to_bytes("just some text, not an archive")), core::FormatError);
  Bytes cut = kPythonZip;
  cut.resize(120);  // the end record is gone
  EXPECT_THROW(read_zip(cut), core::FormatError);
  Bytes pointing_nowhere = kPythonZip;
  pointing_nowhere[pointing_nowhere.size() - 5] = 0x7F;  // central directory offset -> far past the end
  EXPECT_THROW(read_zip(pointing_nowhere), core::FormatError);
}

TEST(ZipReader, ReportsBadLocalHeaderAndOutOfBounds) {
  const Bytes bad_signature = build_zip({{.name = "a", .content = to_bytes("x")},
                                         {.name = "b", .content = to_bytes("y"), .offset_override = 3, .write_local = false}});
  const ZipArchive a = read_zip(bad_signature);
  EXPECT_EQ(count_kind(a, "bad-local-header"), 1u) << describe(a);
  EXPECT_FALSE(a.entries[1].readable);
  const Bytes beyond = build_zip({{.name = "a", .content = to_bytes("x"), .offset_override = 1 << 30, .write_local = false}});
  const ZipArchive b = read_zip(beyond);
  EXPECT_EQ(count_kind(b, "out-of-bounds"), 1u) << describe(b);
  std::vector<std::uint8_t> storage;
  EXPECT_THROW(read_zip_member(beyond, b.entries[0], storage, {}, false, nullptr), core::FormatError);
}

TEST(ZipReader, ReportsSizeMismatchBetweenHeaders) {
  Bytes zip = build_zip({{.name = "a", .content = to_bytes("payload")}});
  zip[22] = 0x01;  // local uncompressed size 7 -> 1
  EXPECT_EQ(count_kind(read_zip(zip), "size-mismatch"), 1u);
}

TEST(ZipReader, ReportsSeveralEndRecordsInTheTail) {
  // A comment that holds a second end record: readers that search forwards and backwards disagree.
  std::string fake_end = std::string("PK\x05\x06", 4) + std::string(18, '\0');
  const Bytes zip = build_zip({{.name = "a", .content = to_bytes("x")}}, {.comment = "c" + fake_end});
  // The last signature is inside the comment, so the reader lands on the fake (empty) directory.
  const ZipArchive archive = read_zip(zip);
  EXPECT_EQ(count_kind(archive, "multiple-eocd"), 1u) << describe(archive);
}

TEST(ZipReader, InflatesDeflatedMember) {
  Bytes content;
  for (int i = 0; i < 100000; ++i) content.push_back(static_cast<std::uint8_t>((i * 7919) % 251));
  const Bytes zip = build_zip({{.name = "data/0", .content = content, .method = 8}});
  const ZipArchive archive = read_zip(zip);
  EXPECT_TRUE(archive.anomalies.empty()) << describe(archive);
  std::vector<std::uint8_t> storage;
  std::vector<ZipAnomaly> anomalies;
  auto out = read_zip_member(zip, archive.entries[0], storage, {}, true, &anomalies);
  EXPECT_EQ(Bytes(out.begin(), out.end()), content);
  EXPECT_TRUE(anomalies.empty());
}

TEST(ZipReader, RefusesZipBombs) {
  const Bytes zeros(16u << 20, 0);  // 16 MiB of zeros deflate to ~16 KiB: ratio ~1000
  const Bytes zip = build_zip({{.name = "bomb", .content = zeros, .method = 8}});
  const ZipArchive archive = read_zip(zip);
  EXPECT_EQ(count_kind(archive, "zip-bomb"), 1u) << describe(archive);
  std::vector<std::uint8_t> storage;
  EXPECT_THROW(read_zip_member(zip, archive.entries[0], storage, {}, false, nullptr), core::FormatError);
  EXPECT_LE(storage.capacity(), 16u << 20);

  // A member that lies about its size is stopped by what it inflates to, not what it declares.
  ZipLimits small;
  small.max_inflated_size = 4096;
  Bytes liar = build_zip({{.name = "liar", .content = Bytes(100000, 'a'), .method = 8}});
  ZipArchive liar_archive = read_zip(liar, small);
  EXPECT_EQ(count_kind(liar_archive, "zip-bomb"), 1u);
  ZipEntry lying = liar_archive.entries[0];
  lying.uncompressed_size = 10;
  EXPECT_THROW(read_zip_member(liar, lying, storage, small, false, nullptr), core::FormatError);

  // Small members of constant data are not bombs.
  const Bytes small_zeros = build_zip({{.name = "zeros", .content = Bytes(50000, 0), .method = 8}});
  EXPECT_EQ(count_kind(read_zip(small_zeros), "zip-bomb"), 0u);
  EXPECT_NO_THROW(read_zip_member(small_zeros, read_zip(small_zeros).entries[0], storage, {}, true, nullptr));
}

TEST(ZipReader, LimitsEntryCount) {
  std::vector<Member> members;
  for (int i = 0; i < 20; ++i) members.push_back({.name = "m" + std::to_string(i), .content = to_bytes("x")});
  ZipLimits limits;
  limits.max_entries = 5;
  const ZipArchive archive = read_zip(build_zip(members), limits);
  EXPECT_EQ(archive.entries.size(), 5u);
  EXPECT_EQ(count_kind(archive, "zip-bomb"), 1u);
}

TEST(ZipReader, ReportsTruncatedDeflateStream) {
  const Bytes content(5000, 'q');
  Bytes zip = build_zip({{.name = "a", .content = content, .method = 8}});
  ZipArchive archive = read_zip(zip);
  ZipEntry cut = archive.entries[0];
  cut.compressed_size = cut.compressed_size / 2;
  std::vector<std::uint8_t> storage;
  EXPECT_THROW(read_zip_member(zip, cut, storage, {}, false, nullptr), core::FormatError);
}

// The tampered torch archives that tests/fixtures/make_fixtures.py builds: each oddity is reported
// and the member the loader would read is still readable.
TEST(ZipReader, ReportsTamperedTorchArchives) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"malicious/pt_zip_name_mismatch.pt", "name-mismatch"}, {"malicious/pt_zip_flag_bits.pt", "flags-mismatch"},
      {"malicious/pt_zip_duplicate_name.pt", "duplicate-name"}, {"malicious/pt_zip_prefix.pt", "prefix-data"},
      {"malicious/pt_zip_trailing_junk.pt", "trailing-data"},   {"malicious/pt_zip_bad_crc.pt", "crc-mismatch"}};
  for (const auto& [name, kind] : cases) {
    SCOPED_TRACE(name);
    const Bytes data = test::read_file(test::fixture(name));
    ZipArchive archive = read_zip(data);
    std::vector<std::uint8_t> storage;
    bool read_pickle = false;
    for (const auto& entry : archive.entries) {
      auto content = read_zip_member(data, entry, storage, {}, true, &archive.anomalies);
      if (entry.name.ends_with("data.pkl") && !content.empty() && content[0] == 0x80) read_pickle = true;
    }
    EXPECT_TRUE(read_pickle);
    EXPECT_GE(count_kind(archive, kind), 1u) << describe(archive);
  }
}

TEST(ZipReader, LooksLikeZip) {
  EXPECT_TRUE(looks_like_zip(kPythonZip));
  EXPECT_FALSE(looks_like_zip(to_bytes("hello world")));
  EXPECT_FALSE(looks_like_zip(Bytes{}));
  // A bare end-record signature that points at nothing is not enough.
  Bytes stray = to_bytes("some file with a stray signature PK");
  stray.push_back(5);
  stray.push_back(6);
  stray.insert(stray.end(), 18, 0x41);
  EXPECT_FALSE(looks_like_zip(stray));
}

}  // namespace
}  // namespace aegis::formats
