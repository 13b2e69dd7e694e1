// IDX, the container of MNIST and Fashion-MNIST: bytes 00 00 <dtype> <ndim>, ndim big-endian
// uint32 dimensions, then the elements in C order, big-endian. Files are often gzip'd; we inflate
// them with a cap that the header sets, so a gzip bomb stops one byte past what the header claims.
#pragma once

#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <vector>

namespace aegis::formats {

enum class IdxType : std::uint8_t { U8 = 0x08, I8 = 0x09, I16 = 0x0B, I32 = 0x0C, F32 = 0x0D, F64 = 0x0E };

// "u8", "i8", "i16", "i32", "f32", "f64".
const char* idx_type_name(IdxType type);
std::uint64_t idx_item_size(IdxType type);

struct IdxHeader {
  IdxType type = IdxType::U8;
  std::vector<std::uint32_t> dims;  // as the file states them
  std::uint64_t elements = 0;       // product of dims
  std::uint64_t data_offset = 0;    // 4 + 4 * ndim
  std::uint64_t data_bytes = 0;     // elements * item size
};

struct IdxArray {
  IdxType type = IdxType::U8;
  // The shape of `values`: the file's dims, except that dims[0] counts the records returned.
  std::vector<std::uint32_t> dims;
  std::vector<float> values;          // C order, converted from the file's type (no scaling)
  std::uint64_t total_records = 0;    // dims[0] as the file states it
  std::uint64_t first_record = 0;     // the file record that values start with
};

// Which records (slices along the first dimension) to convert to floats. The whole file is still
// read and checked; only the conversion (and the memory it takes) is limited to the range. A range
// that starts past the end yields no records.
struct IdxRecordRange {
  std::uint64_t first = 0;
  std::uint64_t count = std::numeric_limits<std::uint64_t>::max();
};

// True when the bytes start like an uncompressed IDX file.
bool looks_like_idx(std::span<const std::uint8_t> data);
// True when the bytes start with the gzip magic 1f 8b.
bool looks_like_gzip(std::span<const std::uint8_t> data);

// Reads the magic and dimensions; needs only the first 4 + 4 * ndim bytes. Throws
// core::FormatError (with the offset) on a bad magic, an unknown dtype, no dimensions, or an
// element count that overflows 64 bits or exceeds max_elements.
IdxHeader parse_idx_header(std::span<const std::uint8_t> data, std::uint64_t max_elements);

// Parses a whole IDX file, plain or gzip'd (chosen by the magic bytes). The data must be exactly
// what the header states: short or trailing data is a core::FormatError whose offset counts in
// the decompressed bytes. A gzip stream is inflated to at most the header's size plus one byte,
// its CRC and length are checked, and it must end there (further gzip members are followed,
// trailing zero padding is ignored, anything else after the stream is an error).
IdxArray parse_idx(std::span<const std::uint8_t> data, std::uint64_t max_elements, IdxRecordRange range = {});

// parse_idx over a file. Throws core::Error when the file cannot be opened, core::FormatError
// when its bytes are not a valid IDX file.
IdxArray read_idx_file(const std::string& path, std::uint64_t max_elements, IdxRecordRange range = {});

}  // namespace aegis::formats
