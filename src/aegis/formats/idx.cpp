#include "aegis/formats/idx.h"

#include <zlib.h>

#include <algorithm>
#include <bit>
#include <climits>
#include <cstdio>
#include <cstring>

#include "aegis/core/error.h"
#include "aegis/core/mapped_file.h"

namespace aegis::formats {
namespace {

bool known_type(std::uint8_t code) {
  return code == 0x08 || code == 0x09 || code == 0x0B || code == 0x0C || code == 0x0D || code == 0x0E;
}

std::uint32_t load_be32(const std::uint8_t* p) {
  return (static_cast<std::uint32_t>(p[0]) << 24) | (static_cast<std::uint32_t>(p[1]) << 16) |
         (static_cast<std::uint32_t>(p[2]) << 8) | static_cast<std::uint32_t>(p[3]);
}

std::uint64_t load_be64(const std::uint8_t* p) {
  return (static_cast<std::uint64_t>(load_be32(p)) << 32) | load_be32(p + 4);
}

std::string dims_text(const std::vector<std::uint32_t>& dims) {
  std::string text;
  for (std::size_t i = 0; i < dims.size(); ++i) {
    if (i) text += 'x';
    text += std::to_string(dims[i]);
  }
  return text;
}

// Inflates a gzip stream on demand, so that the caller decides how much output it will accept.
class GzipStream {
 public:
  explicit GzipStream(std::span<const std::uint8_t> data) : data_(data) {
    if (inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK) throw core::FormatError("cannot start zlib's inflate", 0);
  }
  ~GzipStream() { inflateEnd(&z_); }
  GzipStream(const GzipStream&) = delete;
  GzipStream& operator=(const GzipStream&) = delete;

  // Fills `out` with up to n bytes and returns how many it wrote; fewer than n only at the end of
  // the data.
  std::size_t read(std::uint8_t* out, std::size_t n) {
    std::size_t got = 0;
    while (got < n && !finished_) {
      if (z_.avail_in == 0 && fed_ < data_.size()) {
        const std::size_t chunk = std::min<std::size_t>(data_.size() - fed_, 1u << 30);
        z_.next_in = const_cast<Bytef*>(data_.data() + fed_);
        z_.avail_in = static_cast<uInt>(chunk);
        fed_ += chunk;
      }
      const std::size_t want = std::min<std::size_t>(n - got, 1u << 30);
      z_.next_out = out + got;
      z_.avail_out = static_cast<uInt>(want);
      const int status = inflate(&z_, Z_NO_FLUSH);
      got += want - z_.avail_out;
      produced_ += want - z_.avail_out;
      if (status == Z_STREAM_END) {
        next_member();
      } else if (status == Z_BUF_ERROR) {
        if (z_.avail_in == 0 && fed_ >= data_.size()) {
          throw core::FormatError("gzip data is cut off before the end of its stream", data_.size());
        }
      } else if (status != Z_OK) {
        throw core::FormatError(std::string("gzip data is corrupt: ") + (z_.msg ? z_.msg : "inflate failed"), input_position());
      }
    }
    return got;
  }

  std::uint64_t produced() const { return produced_; }

 private:
  std::uint64_t input_position() const { return fed_ - z_.avail_in; }

  // gzip allows several members back to back (gzip and Python read them all); tools also pad
  // files with zeros. Anything else after a member is not gzip data.
  void next_member() {
    const std::size_t at = static_cast<std::size_t>(input_position());
    const auto rest = data_.subspan(at);
    if (rest.size() >= 2 && rest[0] == 0x1f && rest[1] == 0x8b) {
      if (inflateReset(&z_) != Z_OK) throw core::FormatError("cannot restart zlib's inflate", at);
      return;
    }
    if (std::any_of(rest.begin(), rest.end(), [](std::uint8_t b) { return b != 0; })) {
      throw core::FormatError("bytes that are not gzip data follow the end of the gzip stream", at);
    }
    finished_ = true;
  }

  std::span<const std::uint8_t> data_;
  z_stream z_{};
  std::size_t fed_ = 0;
  std::uint64_t produced_ = 0;
  bool finished_ = false;
};

IdxArray convert(std::span<const std::uint8_t> file, const IdxHeader& header, IdxRecordRange range) {
  IdxArray array;
  array.type = header.type;
  array.dims = header.dims;
  array.total_records = header.dims[0];
  std::uint64_t record_elements = 1;
  for (std::size_t i = 1; i < header.dims.size(); ++i) record_elements *= header.dims[i];
  const std::uint64_t first = std::min<std::uint64_t>(range.first, array.total_records);
  const std::uint64_t count = std::min<std::uint64_t>(range.count, array.total_records - first);
  array.first_record = first;
  array.dims[0] = static_cast<std::uint32_t>(count);
  const std::uint64_t item = idx_item_size(header.type);
  const std::size_t n = static_cast<std::size_t>(count * record_elements);
  const std::uint8_t* p = file.data() + header.data_offset + first * record_elements * item;
  array.values.resize(n);
  float* out = array.values.data();
  switch (header.type) {
    case IdxType::U8:
      for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(p[i]);
      break;
    case IdxType::I8:
      for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<std::int8_t>(p[i]));
      break;
    case IdxType::I16:
      for (std::size_t i = 0; i < n; ++i) {
        out[i] = static_cast<float>(static_cast<std::int16_t>(static_cast<std::uint16_t>((p[2 * i] << 8) | p[2 * i + 1])));
      }
      break;
    case IdxType::I32:
      for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<std::int32_t>(load_be32(p + 4 * i)));
      break;
    case IdxType::F32:
      for (std::size_t i = 0; i < n; ++i) out[i] = std::bit_cast<float>(load_be32(p + 4 * i));
      break;
    case IdxType::F64:
      for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(std::bit_cast<double>(load_be64(p + 8 * i)));
      break;
  }
  return array;
}

IdxArray parse_plain(std::span<const std::uint8_t> data, std::uint64_t max_elements, IdxRecordRange range) {
  const IdxHeader header = parse_idx_header(data, max_elements);
  const std::uint64_t expected = header.data_offset + header.data_bytes;
  if (data.size() < expected) {
    throw core::FormatError("IDX file is cut off: its dims " + dims_text(header.dims) + " (" + idx_type_name(header.type) +
                                ") need " + std::to_string(expected) + " bytes, the file has " + std::to_string(data.size()),
                            data.size());
  }
  if (data.size() > expected) {
    throw core::FormatError("IDX file has " + std::to_string(data.size() - expected) + " bytes of trailing data after the " +
                                std::to_string(expected) + " bytes its dims " + dims_text(header.dims) + " account for",
                            expected);
  }
  return convert(data, header, range);
}

IdxArray parse_gzip(std::span<const std::uint8_t> data, std::uint64_t max_elements, IdxRecordRange range) {
  GzipStream stream(data);
  std::vector<std::uint8_t> file(4);
  if (stream.read(file.data(), 4) < 4) throw core::FormatError("gzip'd IDX file ends inside its 4-byte magic", stream.produced());
  if (file[0] != 0 || file[1] != 0 || !known_type(file[2])) parse_idx_header(file, max_elements);  // throws the precise error
  const std::size_t dims_bytes = 4u * file[3];
  file.resize(4 + dims_bytes);
  if (stream.read(file.data() + 4, dims_bytes) < dims_bytes) {
    throw core::FormatError("gzip'd IDX file ends inside its dimensions (offset in the decompressed data)", stream.produced());
  }
  const IdxHeader header = parse_idx_header(file, max_elements);
  const std::uint64_t expected = header.data_offset + header.data_bytes;
  // Grow with the data actually inflated, not with what the header claims, so that a short
  // stream behind a large claim costs no more memory than it holds.
  while (file.size() < expected) {
    const std::size_t have = file.size();
    const std::size_t step = std::max<std::size_t>(have, 1u << 20);
    const std::size_t next = static_cast<std::size_t>(std::min<std::uint64_t>(expected, have + step));
    file.resize(next);
    const std::size_t got = stream.read(file.data() + have, next - have);
    if (got < next - have) {
      throw core::FormatError("gzip'd IDX file is cut off: its dims " + dims_text(header.dims) + " (" +
                                  idx_type_name(header.type) + ") need " + std::to_string(expected) +
                                  " bytes, the stream inflates to " + std::to_string(have + got) +
                                  " (offset in the decompressed data)",
                              have + got);
    }
  }
  std::uint8_t extra = 0;
  if (stream.read(&extra, 1) != 0) {
    throw core::FormatError("gzip'd IDX file inflates past the " + std::to_string(expected) + " bytes its dims " +
                                dims_text(header.dims) + " account for (trailing data, or a gzip bomb; offset in the "
                                "decompressed data)",
                            expected);
  }
  return convert(file, header, range);
}

}  // namespace

const char* idx_type_name(IdxType type) {
  switch (type) {
    case IdxType::U8: return "u8";
    case IdxType::I8: return "i8";
    case IdxType::I16: return "i16";
    case IdxType::I32: return "i32";
    case IdxType::F32: return "f32";
    case IdxType::F64: return "f64";
  }
  return "?";
}

std::uint64_t idx_item_size(IdxType type) {
  switch (type) {
    case IdxType::U8: case IdxType::I8: return 1;
    case IdxType::I16: return 2;
    case IdxType::I32: case IdxType::F32: return 4;
    case IdxType::F64: return 8;
  }
  return 1;
}

bool looks_like_idx(std::span<const std::uint8_t> data) {
  return data.size() >= 4 && data[0] == 0 && data[1] == 0 && known_type(data[2]) && data[3] >= 1;
}

bool looks_like_gzip(std::span<const std::uint8_t> data) {
  return data.size() >= 2 && data[0] == 0x1f && data[1] == 0x8b;
}

IdxHeader parse_idx_header(std::span<const std::uint8_t> data, std::uint64_t max_elements) {
  if (data.size() < 4) throw core::FormatError("IDX file is shorter than its 4-byte magic", data.size());
  if (data[0] != 0 || data[1] != 0) {
    throw core::FormatError("not an IDX file: the first two bytes must be zero", data[0] != 0 ? 0 : 1);
  }
  if (!known_type(data[2])) {
    char code[8];
    std::snprintf(code, sizeof code, "0x%02X", data[2]);
    throw core::FormatError(std::string("IDX file has an unknown element type ") + code +
                                " (known: 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64)",
                            2);
  }
  IdxHeader header;
  header.type = static_cast<IdxType>(data[2]);
  const std::size_t ndim = data[3];
  if (ndim == 0) throw core::FormatError("IDX file declares no dimensions", 3);
  header.data_offset = 4 + 4 * static_cast<std::uint64_t>(ndim);
  if (data.size() < header.data_offset) {
    throw core::FormatError("IDX file ends inside its " + std::to_string(ndim) + " dimensions", data.size());
  }
  // A zero dimension makes the product zero, but the other dims must still multiply without
  // overflow: a reader that skips the zero would overflow.
  std::uint64_t product = 1;
  bool has_zero = false;
  for (std::size_t i = 0; i < ndim; ++i) {
    const std::uint32_t dim = load_be32(data.data() + 4 + 4 * i);
    header.dims.push_back(dim);
    if (dim == 0) {
      has_zero = true;
      continue;
    }
    if (product > std::numeric_limits<std::uint64_t>::max() / dim) {
      throw core::FormatError("IDX dimensions overflow 64 bits when multiplied", 4 + 4 * i);
    }
    product *= dim;
  }
  const std::uint64_t elements = has_zero ? 0 : product;
  if (elements > max_elements) {
    throw core::FormatError("IDX dims " + dims_text(header.dims) + " hold " + std::to_string(elements) +
                                " elements, more than the limit of " + std::to_string(max_elements),
                            4);
  }
  const std::uint64_t item = idx_item_size(header.type);
  if (elements > (std::numeric_limits<std::uint64_t>::max() - header.data_offset) / item) {
    throw core::FormatError("IDX data size overflows 64 bits", 4);
  }
  header.elements = elements;
  header.data_bytes = elements * item;
  return header;
}

IdxArray parse_idx(std::span<const std::uint8_t> data, std::uint64_t max_elements, IdxRecordRange range) {
  if (looks_like_gzip(data)) return parse_gzip(data, max_elements, range);
  return parse_plain(data, max_elements, range);
}

IdxArray read_idx_file(const std::string& path, std::uint64_t max_elements, IdxRecordRange range) {
  const core::MappedFile file(path);
  return parse_idx(file.bytes(), max_elements, range);
}

}  // namespace aegis::formats
