// Fuzzes the libarchive wrappers and the sniffer with small limits.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/formats/archive.h"
#include "aegis/formats/sniff.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  aegis::formats::sniff(bytes);
  aegis::formats::ArchiveLimits limits;
  limits.max_entries = 100;
  limits.max_entry_size = 1 << 20;
  limits.max_total_size = 4 << 20;
  limits.max_ratio = 50;
  std::vector<std::uint8_t> out;
  aegis::formats::decompress_stream(bytes, limits, out);
  try {
    aegis::formats::for_each_archive_entry(bytes, limits, [](const aegis::formats::ArchiveEntry&) {});
  } catch (const aegis::core::FormatError&) {
  }
  return 0;
}
