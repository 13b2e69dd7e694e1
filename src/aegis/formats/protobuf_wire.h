// The protobuf wire format's varint, for the cheap sniffing that runs before a full parse (ONNX and
// TensorFlow files have no magic bytes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace aegis::formats {

// Reads one varint at `pos` and moves past it; false when it runs past the end or beyond ten bytes.
inline bool read_varint(std::span<const std::uint8_t> data, std::size_t& pos, std::uint64_t& out) {
  out = 0;
  for (int shift = 0; shift < 70; shift += 7) {
    if (pos >= data.size()) return false;
    const std::uint8_t byte = data[pos++];
    out |= static_cast<std::uint64_t>(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) return true;
  }
  return false;
}

}  // namespace aegis::formats
