// NumPy .npy files: the header (magic, version, and the dict of descr, fortran_order, shape),
// numeric arrays read as floats, and writers that numpy.load reads.
#pragma once

#include <cstdint>
#include <cstdio>
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

// A numeric array converted to floats.
struct NpyArray {
  std::vector<std::uint64_t> shape;
  std::vector<float> values;  // C order, whatever order the file kept
  std::string descr;          // the file's dtype, e.g. "<f4", "|u1", ">i8"
};

// Reads an array of plain numbers: f2, f4, f8, i1, i2, i4, i8, u1, u2, u4, u8 and b1, little- or
// big-endian, C or Fortran order (transposed to C order). Throws core::FormatError for object
// arrays (their data is a pickle, which is never loaded), other dtypes (strings, structured,
// complex, dates), more than max_elements elements, or data shorter than the shape needs. Bytes
// after the data are ignored, as numpy.load ignores them.
NpyArray read_npy_array(std::span<const std::uint8_t> data, std::uint64_t max_elements);

// Like read_npy_array, but converts only the records [first, first + count) along the first axis
// (clamped to the array; shape[0] of the result counts the records returned), so that a slice of
// a large array costs only the slice's memory. max_elements bounds the elements returned; the
// whole array's data must still be present.
NpyArray read_npy_records(std::span<const std::uint8_t> data, std::uint64_t max_elements, std::uint64_t first,
                          std::uint64_t count);

// read_npy_array over a file; core::Error when it cannot be opened.
NpyArray read_npy_file(const std::string& path, std::uint64_t max_elements);

// The element types the writers produce, always little-endian.
enum class NpyDtype { Float32, Int32, Int64 };

// Writes an .npy file as numpy.save does (version 1.0, the header dict padded with spaces to a
// 64-byte boundary and ended with '\n'), with the header for the whole shape up front and the
// data appended batch by batch, so that large results need no buffer of their own. The data
// goes to PATH.partial, renamed to PATH by finish(); a writer destroyed before finish() removes
// it. I/O failures throw core::Error; appending the wrong type or too many elements throws
// std::logic_error.
class NpyWriter {
 public:
  NpyWriter(const std::string& path, NpyDtype dtype, std::span<const std::uint64_t> shape);
  ~NpyWriter();
  NpyWriter(const NpyWriter&) = delete;
  NpyWriter& operator=(const NpyWriter&) = delete;

  void append(std::span<const float> values);         // NpyDtype::Float32
  void append(std::span<const std::int32_t> values);  // NpyDtype::Int32
  void append(std::span<const std::int64_t> values);  // NpyDtype::Int64
  // Closes and renames the file; throws core::Error unless every element of the shape was written.
  void finish();

  std::uint64_t total_elements() const { return total_; }
  std::uint64_t written_elements() const { return written_; }

 private:
  void write_raw(const void* data, std::size_t count, std::size_t item_size, NpyDtype dtype);

  std::string path_, partial_path_;
  NpyDtype dtype_;
  std::uint64_t total_ = 1, written_ = 0;
  std::FILE* file_ = nullptr;
};

// The exact header bytes numpy.save writes for a C-order array of this dtype and shape.
std::string npy_header_bytes(NpyDtype dtype, std::span<const std::uint64_t> shape);

// Whole arrays at once; values.size() must equal the product of the shape (core::Error otherwise).
void write_npy_f32(const std::string& path, std::span<const std::uint64_t> shape, std::span<const float> values);
void write_npy_i32(const std::string& path, std::span<const std::uint64_t> shape, std::span<const std::int32_t> values);
void write_npy_i64(const std::string& path, std::span<const std::uint64_t> shape, std::span<const std::int64_t> values);

}  // namespace aegis::formats
