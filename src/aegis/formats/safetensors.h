// Safetensors validation: header length, JSON header, dtypes, shapes, offsets, no overlaps, no gaps.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace aegis::formats {

struct SafetensorsTensor {
  std::string name;
  std::string dtype;
  std::vector<std::uint64_t> shape;
  std::uint64_t begin = 0, end = 0;  // relative to the start of the data buffer
};

struct SafetensorsProblem {
  std::string kind;    // "header-length", "json", "dtype", "shape", "offsets", "overlap", "gap", "size", "metadata", "depth"
  std::string tensor;  // empty when about the file as a whole
  std::string detail;
};

struct SafetensorsInfo {
  std::uint64_t header_length = 0;
  std::vector<SafetensorsTensor> tensors;
  std::vector<SafetensorsProblem> problems;  // empty for a valid file
  std::size_t metadata_entries = 0;
};

// Cheap sniff: 8-byte little-endian length followed by '{'.
bool looks_like_safetensors(std::span<const std::uint8_t> data);

// Never throws on hostile input: everything wrong goes into `problems`.
SafetensorsInfo validate_safetensors(std::span<const std::uint8_t> data);

}  // namespace aegis::formats
