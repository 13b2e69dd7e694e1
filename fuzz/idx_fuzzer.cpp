// Fuzzes the IDX reader on the bytes as given (plain, or gzip when they start with 1f 8b) and on
// the same bytes gzip'd, so that the inflate path sees meaningful IDX content too.
#include <zlib.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/formats/idx.h"

namespace {

std::vector<std::uint8_t> gzip(std::span<const std::uint8_t> data) {
  z_stream stream{};
  if (deflateInit2(&stream, 1, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY) != Z_OK) return {};
  std::vector<std::uint8_t> out(deflateBound(&stream, static_cast<uLong>(data.size())) + 32);
  stream.next_in = const_cast<Bytef*>(data.data());
  stream.avail_in = static_cast<uInt>(data.size());
  stream.next_out = out.data();
  stream.avail_out = static_cast<uInt>(out.size());
  const int status = deflate(&stream, Z_FINISH);
  deflateEnd(&stream);
  if (status != Z_STREAM_END) return {};
  out.resize(stream.total_out);
  return out;
}

void parse(std::span<const std::uint8_t> bytes, aegis::formats::IdxRecordRange range) {
  try {
    const auto array = aegis::formats::parse_idx(bytes, 1 << 16, range);
    std::uint64_t expected = 1;
    for (auto dim : array.dims) expected *= dim;
    if (expected != array.values.size()) __builtin_trap();  // the values must fill the shape returned
  } catch (const aegis::core::FormatError&) {
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  aegis::formats::looks_like_idx(bytes);
  const aegis::formats::IdxRecordRange range{size > 0 ? data[size - 1] % 4u : 0u, size > 1 ? data[size - 2] % 8u : ~0ull};
  parse(bytes, range);
  if (size <= 1 << 14) {
    const auto packed = gzip(bytes);
    if (!packed.empty()) parse(packed, {});
  }
  return 0;
}
