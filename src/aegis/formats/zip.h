// A zip reader that reads as PyTorch's loader (miniz) reads: the central directory decides the
// names, each local header decides where the data starts; every disagreement between the two,
// and everything a stricter reader (Python's zipfile) would reject, is recorded, not fatal.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace aegis::formats {

struct ZipLimits {
  std::size_t max_entries = 100000;
  std::uint64_t max_inflated_size = 1ull << 30;  // refuse to inflate one member beyond this (memory bound)
  std::uint64_t max_ratio = 200;                 // inflated/compressed beyond this is a zip bomb
};

struct ZipEntry {
  std::string name;             // from the central directory (what the loader looks up)
  std::string local_name;       // from the local header
  std::uint16_t method = 0;     // 0 stored, 8 deflate, others unsupported
  std::uint16_t flags = 0;      // central directory general-purpose flags
  std::uint16_t local_flags = 0;
  std::uint32_t crc32 = 0;      // from the central directory
  std::uint64_t compressed_size = 0;
  std::uint64_t uncompressed_size = 0;
  std::uint64_t local_header_offset = 0;  // absolute offset in the buffer
  std::uint64_t data_offset = 0;          // absolute offset of the member's data
  bool readable = true;                   // false when the local header or data lies outside the buffer
};

// One disagreement or oddity. kind is a stable identifier:
// "name-mismatch", "flags-mismatch", "method-mismatch", "size-mismatch", "crc-mismatch", "encrypted", "unsupported-method",
// "overlap", "prefix-data", "trailing-data", "duplicate-name", "bad-local-header", "out-of-bounds",
// "entry-count-mismatch", "multiple-eocd", "comment", "zip-bomb", "absolute-or-parent-path".
struct ZipAnomaly {
  std::string kind;
  std::string member;  // empty when it is about the archive as a whole
  std::uint64_t offset = 0;
  std::string detail;
};

struct ZipArchive {
  std::vector<ZipEntry> entries;
  std::vector<ZipAnomaly> anomalies;
  std::uint64_t archive_start = 0;  // offset of the first byte the archive accounts for
  bool zip64 = false;
};

// True when the bytes end in (or hold) an end-of-central-directory record, or start with a local header.
bool looks_like_zip(std::span<const std::uint8_t> data);

// Reads the central directory and every local header. Throws core::FormatError when there is no
// usable central directory (the loader could not open it either).
ZipArchive read_zip(std::span<const std::uint8_t> data, const ZipLimits& limits = {});

// The member's bytes: a view into `data` for stored members, inflated into `storage` for deflated ones.
// Verifies the CRC when `check_crc` is set and appends a "crc-mismatch" anomaly to `anomalies` on disagreement.
// Throws core::FormatError when the member cannot be read (unsupported method, bounds, bomb limits).
std::span<const std::uint8_t> read_zip_member(std::span<const std::uint8_t> data, const ZipEntry& entry,
                                              std::vector<std::uint8_t>& storage, const ZipLimits& limits,
                                              bool check_crc, std::vector<ZipAnomaly>* anomalies);

}  // namespace aegis::formats
