#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "aegis/formats/sniff.h"
#include "test_support.h"

namespace aegis::formats {
namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes bytes(std::string_view text) { return Bytes(text.begin(), text.end()); }

TEST(Sniff, NamesEveryKind) {
  EXPECT_EQ(to_string(FileKind::Zip), "zip");
  EXPECT_EQ(to_string(FileKind::LegacyTorch), "legacy-torch");
  EXPECT_EQ(to_string(FileKind::SevenZip), "7z");
  EXPECT_EQ(to_string(FileKind::Unknown), "unknown");
  for (int k = 0; k <= static_cast<int>(FileKind::Unknown); ++k) {
    EXPECT_FALSE(to_string(static_cast<FileKind>(k)).empty());
  }
}

TEST(Sniff, RecognisesRealFiles) {
  EXPECT_EQ(sniff(test::read_file(test::fixture("benign/state_dict.pt"))), FileKind::Zip);
  EXPECT_EQ(sniff(test::read_file(test::fixture("benign/torchscript_module.pt"))), FileKind::Zip);
  EXPECT_EQ(sniff(test::read_file(test::fixture("benign/arrays.npz"))), FileKind::Zip);
  EXPECT_EQ(sniff(test::read_file(test::fixture("benign/array_f32.npy"))), FileKind::Npy);
  EXPECT_EQ(sniff(test::read_file(test::fixture("benign/model.safetensors"))), FileKind::Safetensors);
  EXPECT_EQ(sniff(test::read_file(test::fixture("benign/legacy_state_dict.pt"))), FileKind::LegacyTorch);
}

TEST(Sniff, FindsZipBehindAPrefix) {
  Bytes polyglot = bytes("GIF89a fake image header and some junk......");
  const Bytes zip = test::read_file(test::fixture("benign/state_dict.pt"));
  polyglot.insert(polyglot.end(), zip.begin(), zip.end());
  EXPECT_EQ(sniff(polyglot), FileKind::Zip);
  // A pickle in front of a zip: zip readers see the zip, so we read it as one and the zip reader reports the prefix.
  Bytes pickle_then_zip = {0x80, 0x02, 'K', 0x01, '.'};
  pickle_then_zip.insert(pickle_then_zip.end(), zip.begin(), zip.end());
  EXPECT_EQ(sniff(pickle_then_zip), FileKind::Zip);
}

TEST(Sniff, RecognisesMagicNumbers) {
  EXPECT_EQ(sniff(Bytes{}), FileKind::Empty);
  EXPECT_EQ(sniff(Bytes{'7', 'z', 0xBC, 0xAF, 0x27, 0x1C, 0, 4}), FileKind::SevenZip);
  EXPECT_EQ(sniff(Bytes{0x1F, 0x8B, 8, 0}), FileKind::Gzip);
  EXPECT_EQ(sniff(bytes("BZh91AY&SY")), FileKind::Bzip2);
  EXPECT_EQ(sniff(Bytes{0xFD, '7', 'z', 'X', 'Z', 0, 0, 4}), FileKind::Xz);
  EXPECT_EQ(sniff(Bytes{0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0x76, 0}), FileKind::Npy);
  EXPECT_EQ(sniff(Bytes{0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e, 0x80}),
            FileKind::LegacyTorch);
  Bytes safetensors = {2, 0, 0, 0, 0, 0, 0, 0, '{', '}'};
  EXPECT_EQ(sniff(safetensors), FileKind::Safetensors);
}

TEST(Sniff, RecognisesPickles) {
  for (std::uint8_t protocol = 0; protocol <= 5; ++protocol) EXPECT_EQ(sniff(Bytes{0x80, protocol, 'N', '.'}), FileKind::Pickle);
  EXPECT_EQ(sniff(Bytes{0x80, 0x06, 'N', '.'}), FileKind::Unknown);
  // pickle.dumps(..., protocol=0) of os.system-style payloads and of plain data
  EXPECT_EQ(sniff(bytes("cos\nsystem\n(S'id'\ntR.")), FileKind::Pickle);
  EXPECT_EQ(sniff(bytes("(dp0\nVa\np1\nI1\ns.")), FileKind::Pickle);
  EXPECT_EQ(sniff(bytes("(lp0\nI1\naI2\na.")), FileKind::Pickle);
  EXPECT_EQ(sniff(bytes("I42\n.")), FileKind::Pickle);
  EXPECT_EQ(sniff(bytes("N.")), FileKind::Pickle);
  // protocol 1: }q\x00(X\x01\x00\x00\x00aq\x01K\x01u.
  EXPECT_EQ(sniff(Bytes{'}', 'q', 0, '(', 'X', 1, 0, 0, 0, 'a', 'q', 1, 'K', 1, 'u', '.'}), FileKind::Pickle);
}

TEST(Sniff, DoesNotMistakeTextForPickles) {
  EXPECT_EQ(sniff(bytes("I am a plain text file.")), FileKind::Unknown);
  EXPECT_EQ(sniff(bytes("(hello) world.")), FileKind::Unknown);
  EXPECT_EQ(sniff(bytes("hello world")), FileKind::Unknown);
  EXPECT_EQ(sniff(bytes("{\"json\": true}")), FileKind::Unknown);
}

TEST(Sniff, RecognisesWeakSignaturesOnlyWhenTheyDecode) {
  // zlib.compress(b"hello") and a stray 0x78 0x9c followed by junk
  EXPECT_EQ(sniff(Bytes{0x78, 0x9c, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00, 0x06, 0x2c, 0x02, 0x15}), FileKind::Zlib);
  EXPECT_EQ(sniff(Bytes{0x78, 0x9c, 0xff, 0xff, 0xff, 0xff, 0xff}), FileKind::Unknown);
  // lzma.compress(b"", format=FORMAT_ALONE) header: props 0x5d, 8 MiB dictionary, unknown size
  Bytes lzma = {0x5d, 0x00, 0x00, 0x80, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0x83, 0xff, 0xfb, 0xff, 0xff, 0xc0, 0x00, 0x00, 0x00};
  EXPECT_EQ(sniff(lzma), FileKind::Lzma);
  EXPECT_EQ(sniff(Bytes{0x5d, 0x00, 0x00, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x12, 0x34, 0x56}), FileKind::Unknown);
}

TEST(Sniff, RecognisesTarHeaders) {
  Bytes tar(1024, 0);
  const std::string name = "legacy/storages";
  std::copy(name.begin(), name.end(), tar.begin());
  const std::string mode = "0000644", size = "00000000000";
  std::copy(mode.begin(), mode.end(), tar.begin() + 100);
  std::copy(size.begin(), size.end(), tar.begin() + 124);
  tar[156] = '0';
  // v7 header: no magic, only the checksum
  unsigned sum = 0;
  for (std::size_t i = 0; i < 512; ++i) sum += (i >= 148 && i < 156) ? ' ' : tar[i];
  char checksum[8];
  std::snprintf(checksum, sizeof checksum, "%06o", sum);
  std::copy(checksum, checksum + 7, tar.begin() + 148);
  EXPECT_EQ(sniff(tar), FileKind::Tar);
  tar[148] = '7';  // wrong checksum
  EXPECT_EQ(sniff(tar), FileKind::Unknown);
  Bytes ustar(1024, 0);
  ustar[0] = 'x';
  std::string magic = "ustar";
  std::copy(magic.begin(), magic.end(), ustar.begin() + 257);
  EXPECT_EQ(sniff(ustar), FileKind::Tar);
}

}  // namespace
}  // namespace aegis::formats
