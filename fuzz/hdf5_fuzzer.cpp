// Fuzzes the sandboxed HDF5 reader end to end: whatever libhdf5 does with the bytes in its child,
// the parent must come back with a result (the records it decodes are bounded and length-checked).
#include <cstddef>
#include <cstdint>
#include <span>

#include "aegis/formats/hdf5.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  aegis::formats::looks_like_hdf5(bytes);
  aegis::formats::Hdf5Limits limits;
  limits.wall_seconds = 5;
  limits.cpu_seconds = 4;
  aegis::formats::extract_hdf5(bytes, limits);
  return 0;
}
