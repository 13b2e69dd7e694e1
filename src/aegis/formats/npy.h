// NumPy .npy header parsing: magic, version, and the header dict (descr, fortran_order, shape).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace aegis::formats {

struct NpyHeader {
  int major = 0, minor = 0;
  std::string descr;               // e.g. "<f4", "|O", or a structured dtype repr
  bool fortran_order = false;
  std::vector<std::uint64_t> shape;
  bool has_object = false;         // the dtype holds Python objects: the data is a pickle
  std::uint64_t data_offset = 0;   // where the array data (or the pickle) starts
  std::uint64_t item_size = 0;     // bytes per element for plain dtypes, 0 when unknown/object
  std::uint64_t expected_data_bytes = 0;  // product(shape) * item_size, 0 when unknown
};

bool looks_like_npy(std::span<const std::uint8_t> data);

// Throws core::FormatError with the offset of the problem on a malformed header.
NpyHeader parse_npy_header(std::span<const std::uint8_t> data);

}  // namespace aegis::formats
