// Fuzzes the .npy header reader: magic, lengths and the Python-literal dict.
#include <cstddef>
#include <cstdint>
#include <span>

#include "aegis/core/error.h"
#include "aegis/formats/npy.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  aegis::formats::looks_like_npy(bytes);
  try {
    aegis::formats::parse_npy_header(bytes);
  } catch (const aegis::core::FormatError&) {
  }
  return 0;
}
