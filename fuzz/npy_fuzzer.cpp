// Fuzzes the .npy header reader (magic, lengths and the Python-literal dict) and the array reader
// (dtypes, byte orders, Fortran order, record slices) with a small element budget.
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
  try {
    aegis::formats::read_npy_array(bytes, 1 << 12);
  } catch (const aegis::core::FormatError&) {
  }
  try {
    const std::uint64_t first = size > 0 ? data[size - 1] % 4u : 0u;
    aegis::formats::read_npy_records(bytes, 1 << 12, first, 2);
  } catch (const aegis::core::FormatError&) {
  }
  return 0;
}
