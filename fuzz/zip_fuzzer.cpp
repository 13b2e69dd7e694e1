// Fuzzes the zip reader the way the scanner drives it: the directory, then every member with CRC checks.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/formats/zip.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  aegis::formats::looks_like_zip(bytes);
  aegis::formats::ZipLimits limits;
  limits.max_entries = 1000;
  limits.max_inflated_size = 1 << 20;
  limits.max_ratio = 50;
  try {
    auto archive = aegis::formats::read_zip(bytes, limits);
    std::vector<std::uint8_t> storage;
    for (const auto& entry : archive.entries) {
      try {
        aegis::formats::read_zip_member(bytes, entry, storage, limits, true, &archive.anomalies);
      } catch (const aegis::core::FormatError&) {
      }
    }
  } catch (const aegis::core::FormatError&) {
  }
  return 0;
}
