// Wrappers read through libarchive: 7z, tar, gzip, bzip2, xz (and zlib streams as joblib writes them).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

namespace aegis::formats {

struct ArchiveLimits {
  std::size_t max_entries = 10000;
  std::uint64_t max_entry_size = 1ull << 30;   // bytes of one decompressed entry (held in memory)
  std::uint64_t max_total_size = 8ull << 30;   // bytes of all entries together
  std::uint64_t max_ratio = 200;               // decompressed / compressed input
};

struct ArchiveEntry {
  std::string name;
  std::span<const std::uint8_t> content;  // valid only during the callback
  bool truncated = false;                 // a limit cut it short; content holds what was read
  std::string limit_hit;                  // which limit, when truncated
};

// Calls `visit` for each regular-file entry of a multi-entry archive (7z, tar, also compressed tars).
// Returns a list of problems (limits hit, damage); throws core::FormatError when it cannot be opened.
std::vector<std::string> for_each_archive_entry(std::span<const std::uint8_t> data, const ArchiveLimits& limits,
                                                const std::function<void(const ArchiveEntry&)>& visit);

// Decompresses a single-stream wrapper (gzip, bzip2, xz, lzma, zlib) into `out`, within limits.
// Returns an empty string on success or the reason it stopped (the output holds what was read).
std::string decompress_stream(std::span<const std::uint8_t> data, const ArchiveLimits& limits,
                              std::vector<std::uint8_t>& out);

}  // namespace aegis::formats
