// NumPy's header is a Python dict literal that numpy reads with ast.literal_eval. We read it with a
// small literal parser of our own, bounded in size and depth, and never evaluate anything.
#include "aegis/formats/npy.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>

#include "aegis/core/error.h"
#include "aegis/core/mapped_file.h"

namespace aegis::formats {
namespace {

constexpr std::string_view kMagic = "\x93NUMPY";
constexpr std::size_t kMaxHeaderLength = 1 << 20;
constexpr int kMaxLiteralDepth = 32;
constexpr std::size_t kMaxDimensions = 64;  // numpy 2 allows 64 dimensions, numpy 1 only 32

// A Python literal as far as .npy headers need: strings, integers, booleans, None and containers.
struct Literal {
  enum class Kind { String, Integer, Boolean, None, Tuple, List, Dict } kind = Kind::None;
  std::string text;              // String: the decoded value
  std::uint64_t magnitude = 0;   // Integer: absolute value
  bool negative = false;         // Integer: sign
  bool boolean = false;
  std::vector<Literal> items;    // Tuple/List elements; Dict keys and values alternating
  std::size_t begin = 0, end = 0;  // source span, for error offsets and the raw descr text
};

class LiteralParser {
 public:
  LiteralParser(std::string_view source, std::uint64_t base_offset) : source_(source), base_(base_offset) {}

  Literal parse_document() {
    Literal value = parse_value(0);
    skip_space();
    if (pos_ != source_.size()) fail("unexpected text after the header dict");
    return value;
  }

 private:
  [[noreturn]] void fail(const std::string& message) const {
    throw core::FormatError("npy header: " + message, base_ + pos_);
  }

  void skip_space() {
    while (pos_ < source_.size() && (source_[pos_] == ' ' || source_[pos_] == '\t' || source_[pos_] == '\n' ||
                                     source_[pos_] == '\r' || source_[pos_] == '\f' || source_[pos_] == '\v')) {
      ++pos_;
    }
  }

  bool at(char c) const { return pos_ < source_.size() && source_[pos_] == c; }

  Literal parse_value(int depth) {
    if (depth > kMaxLiteralDepth) fail("nesting deeper than " + std::to_string(kMaxLiteralDepth));
    skip_space();
    if (pos_ >= source_.size()) fail("header ends inside a value");
    const std::size_t start = pos_;
    Literal value;
    const char c = source_[pos_];
    if (c == '{') {
      value = parse_dict(depth);
    } else if (c == '(') {
      value = parse_sequence(depth, ')', Literal::Kind::Tuple);
    } else if (c == '[') {
      value = parse_sequence(depth, ']', Literal::Kind::List);
    } else if (c == '\'' || c == '"') {
      value = parse_string();
    } else if ((c == 'u' || c == 'b' || c == 'U' || c == 'B') && pos_ + 1 < source_.size() &&
               (source_[pos_ + 1] == '\'' || source_[pos_ + 1] == '"')) {
      ++pos_;  // Python 2 era headers may say u'<f4'
      value = parse_string();
    } else if (c == '-' || c == '+' || (c >= '0' && c <= '9')) {
      value = parse_integer();
    } else if (source_.substr(pos_, 4) == "True") {
      pos_ += 4;
      value.kind = Literal::Kind::Boolean;
      value.boolean = true;
    } else if (source_.substr(pos_, 5) == "False") {
      pos_ += 5;
      value.kind = Literal::Kind::Boolean;
    } else if (source_.substr(pos_, 4) == "None") {
      pos_ += 4;
      value.kind = Literal::Kind::None;
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    value.begin = start;
    value.end = pos_;
    return value;
  }

  Literal parse_dict(int depth) {
    Literal dict;
    dict.kind = Literal::Kind::Dict;
    ++pos_;
    while (true) {
      skip_space();
      if (at('}')) {
        ++pos_;
        return dict;
      }
      dict.items.push_back(parse_value(depth + 1));
      skip_space();
      if (!at(':')) fail("expected ':' in dict");
      ++pos_;
      dict.items.push_back(parse_value(depth + 1));
      skip_space();
      if (at(',')) {
        ++pos_;
      } else if (!at('}')) {
        fail("expected ',' or '}' in dict");
      }
    }
  }

  // Python semantics: "(x)" is x itself, "(x,)" and "()" are tuples.
  Literal parse_sequence(int depth, char close, Literal::Kind kind) {
    ++pos_;
    Literal seq;
    seq.kind = kind;
    bool saw_comma = false;
    while (true) {
      skip_space();
      if (at(close)) {
        ++pos_;
        break;
      }
      seq.items.push_back(parse_value(depth + 1));
      skip_space();
      if (at(',')) {
        ++pos_;
        saw_comma = true;
      } else if (!at(close)) {
        fail(std::string("expected ',' or '") + close + "'");
      }
    }
    if (kind == Literal::Kind::Tuple && seq.items.size() == 1 && !saw_comma) {
      Literal inner = std::move(seq.items.front());
      return inner;
    }
    return seq;
  }

  Literal parse_string() {
    Literal value;
    value.kind = Literal::Kind::String;
    const char quote = source_[pos_++];
    while (true) {
      if (pos_ >= source_.size() || source_[pos_] == '\n') fail("unterminated string");
      const char c = source_[pos_++];
      if (c == quote) break;
      if (c != '\\') {
        value.text.push_back(c);
        continue;
      }
      if (pos_ >= source_.size()) fail("unterminated string");
      const char e = source_[pos_++];
      switch (e) {
        case 'n': value.text.push_back('\n'); break;
        case 't': value.text.push_back('\t'); break;
        case 'r': value.text.push_back('\r'); break;
        case '0': value.text.push_back('\0'); break;
        case 'x': {
          if (pos_ + 2 > source_.size()) fail("short \\x escape");
          int byte = 0;
          for (int i = 0; i < 2; ++i) {
            const char h = source_[pos_++];
            byte <<= 4;
            if (h >= '0' && h <= '9') byte |= h - '0';
            else if (h >= 'a' && h <= 'f') byte |= h - 'a' + 10;
            else if (h >= 'A' && h <= 'F') byte |= h - 'A' + 10;
            else fail("bad \\x escape");
          }
          value.text.push_back(static_cast<char>(byte));
          break;
        }
        default: value.text.push_back(e); break;  // \\, \', \" and anything else: the character itself
      }
    }
    return value;
  }

  Literal parse_integer() {
    Literal value;
    value.kind = Literal::Kind::Integer;
    if (at('-') || at('+')) value.negative = source_[pos_++] == '-';
    if (pos_ >= source_.size() || source_[pos_] < '0' || source_[pos_] > '9') fail("expected digits");
    while (pos_ < source_.size() && source_[pos_] >= '0' && source_[pos_] <= '9') {
      const std::uint64_t digit = static_cast<std::uint64_t>(source_[pos_] - '0');
      if (value.magnitude > (std::numeric_limits<std::uint64_t>::max() - digit) / 10) fail("integer too large");
      value.magnitude = value.magnitude * 10 + digit;
      ++pos_;
    }
    if (at('L') || at('l')) ++pos_;  // Python 2 long suffix, which numpy still filters out of old headers
    return value;
  }

  std::string_view source_;
  std::uint64_t base_;
  std::size_t pos_ = 0;
};

std::uint64_t checked_multiply(std::uint64_t a, std::uint64_t b, std::uint64_t offset, const char* what) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) {
    throw core::FormatError(std::string("npy header: ") + what + " overflows 64 bits", offset);
  }
  return a * b;
}

struct DtypeFacts {
  std::uint64_t item_size = 0;  // 0 when unknown
  bool has_object = false;
};

// A dtype string as numpy's dtype.str writes it: optional byte order, a type code, a count,
// and for datetimes a unit in brackets.
DtypeFacts plain_dtype_facts(std::string_view s) {
  DtypeFacts facts;
  // numpy resolves the string with np.dtype(), which also takes 'object', 'object_', comma lists
  // such as 'f4,O' and subarrays such as '(2,)O'. No other dtype spelling holds a capital O or the
  // word "object", so either one means objects: fail closed rather than parse every spelling.
  if (s.find('O') != std::string_view::npos || s.find("object") != std::string_view::npos) {
    facts.has_object = true;
    return facts;
  }
  if (!s.empty() && std::strchr("<>|=!", s.front()) != nullptr) s.remove_prefix(1);
  if (s.empty()) return facts;
  const char code = s.front();
  s.remove_prefix(1);
  if (const auto bracket = s.find('['); bracket != std::string_view::npos) s = s.substr(0, bracket);
  std::uint64_t count = 0;
  bool has_count = false;
  for (char c : s) {
    if (c < '0' || c > '9' || count > 1'000'000'000'000ull) return facts;
    count = count * 10 + static_cast<std::uint64_t>(c - '0');
    has_count = true;
  }
  switch (code) {
    case 'b':
      facts.item_size = has_count ? count : 1;  // '|b1' is bool; a bare 'b' is int8: one byte either way
      break;
    case '?': case 'B': facts.item_size = 1; break;
    case 'i': case 'u': case 'f': case 'c': case 'S': case 'a': case 'V': case 'M': case 'm':
      facts.item_size = has_count ? count : 0;
      break;
    case 'U':
      facts.item_size = has_count && count <= std::numeric_limits<std::uint64_t>::max() / 4 ? count * 4 : 0;
      break;
    // Single-character codes (np.dtype('d').char and friends) as a hand-written header might use them.
    case 'h': case 'H': case 'e': facts.item_size = 2; break;
    case 'l': case 'L': case 'q': case 'Q': case 'd': case 'F': facts.item_size = 8; break;
    case 'g': case 'D': facts.item_size = 16; break;
    case 'G': facts.item_size = 32; break;
    default: break;
  }
  return facts;
}

DtypeFacts dtype_facts(const Literal& descr, int depth);

// One field of a structured dtype: (name, dtype) or (name, dtype, shape); the name may be a (title, name) pair.
DtypeFacts field_facts(const Literal& field, int depth) {
  DtypeFacts facts;
  if ((field.kind != Literal::Kind::Tuple && field.kind != Literal::Kind::List) || field.items.size() < 2) {
    throw core::FormatError("npy header: a structured dtype field is not a (name, dtype) pair", field.begin);
  }
  facts = dtype_facts(field.items[1], depth + 1);
  if (field.items.size() >= 3) {
    const Literal& shape = field.items[2];
    std::uint64_t elements = 1;
    if (shape.kind == Literal::Kind::Integer) {
      elements = shape.negative ? 0 : shape.magnitude;
    } else if (shape.kind == Literal::Kind::Tuple || shape.kind == Literal::Kind::List) {
      for (const auto& dim : shape.items) {
        if (dim.kind != Literal::Kind::Integer || dim.negative) {
          throw core::FormatError("npy header: bad subarray shape in a structured dtype", dim.begin);
        }
        elements = checked_multiply(elements, dim.magnitude, dim.begin, "subarray shape");
      }
    }
    facts.item_size = checked_multiply(facts.item_size, elements, shape.begin, "subarray size");
  }
  return facts;
}

DtypeFacts dtype_facts(const Literal& descr, int depth) {
  if (depth > kMaxLiteralDepth) throw core::FormatError("npy header: dtype nested too deeply", descr.begin);
  if (descr.kind == Literal::Kind::String) return plain_dtype_facts(descr.text);
  if (descr.kind != Literal::Kind::List) {
    throw core::FormatError("npy header: 'descr' is neither a dtype string nor a list of fields", descr.begin);
  }
  DtypeFacts total;
  bool sizes_known = true;
  for (const auto& field : descr.items) {
    const DtypeFacts facts = field_facts(field, depth);
    total.has_object = total.has_object || facts.has_object;
    if (facts.item_size == 0 || facts.has_object) sizes_known = false;
    if (sizes_known) {
      if (total.item_size > std::numeric_limits<std::uint64_t>::max() - facts.item_size) {
        throw core::FormatError("npy header: structured dtype size overflows", field.begin);
      }
      total.item_size += facts.item_size;
    }
  }
  if (!sizes_known) total.item_size = 0;
  return total;
}

const Literal* find_key(const Literal& dict, std::string_view key) {
  for (std::size_t i = 0; i + 1 < dict.items.size(); i += 2) {
    if (dict.items[i].kind == Literal::Kind::String && dict.items[i].text == key) return &dict.items[i + 1];
  }
  return nullptr;
}

}  // namespace

bool looks_like_npy(std::span<const std::uint8_t> data) {
  return data.size() >= 10 && std::memcmp(data.data(), kMagic.data(), kMagic.size()) == 0 && data[6] >= 1 && data[6] <= 3;
}

NpyHeader parse_npy_header(std::span<const std::uint8_t> data) {
  if (data.size() < 10 || std::memcmp(data.data(), kMagic.data(), kMagic.size()) != 0) {
    throw core::FormatError("not a .npy file: the \\x93NUMPY magic is missing", 0);
  }
  NpyHeader header;
  header.major = data[6];
  header.minor = data[7];
  std::uint64_t header_length = 0;
  std::uint64_t header_start = 0;
  if (header.major == 1) {
    header_length = static_cast<std::uint64_t>(data[8] | (data[9] << 8));
    header_start = 10;
  } else if (header.major == 2 || header.major == 3) {
    if (data.size() < 12) throw core::FormatError("npy header length cut off", 8);
    header_length = static_cast<std::uint64_t>(data[8]) | (static_cast<std::uint64_t>(data[9]) << 8) |
                    (static_cast<std::uint64_t>(data[10]) << 16) | (static_cast<std::uint64_t>(data[11]) << 24);
    header_start = 12;
  } else {
    throw core::FormatError("unsupported .npy version " + std::to_string(header.major) + "." + std::to_string(header.minor), 6);
  }
  if (header_length > kMaxHeaderLength) {
    throw core::FormatError("npy header of " + std::to_string(header_length) + " bytes is beyond the 1 MiB limit", 8);
  }
  if (header_length > data.size() - header_start) throw core::FormatError("npy header runs past the end of the file", 8);
  header.data_offset = header_start + header_length;

  std::string_view text(reinterpret_cast<const char*>(data.data() + header_start), static_cast<std::size_t>(header_length));
  // numpy pads with spaces and ends with a newline; some writers pad with NULs.
  while (!text.empty() && (text.back() == '\0' || text.back() == ' ' || text.back() == '\n')) text.remove_suffix(1);
  LiteralParser parser(text, header_start);
  const Literal dict = parser.parse_document();
  if (dict.kind != Literal::Kind::Dict) throw core::FormatError("npy header is not a dict", header_start);

  // numpy refuses a header whose keys are not exactly these three.
  const Literal* descr = find_key(dict, "descr");
  const Literal* fortran = find_key(dict, "fortran_order");
  const Literal* shape = find_key(dict, "shape");
  if (!descr || !fortran || !shape || dict.items.size() != 6) {
    throw core::FormatError("npy header must hold exactly 'descr', 'fortran_order' and 'shape'", header_start);
  }
  if (fortran->kind != Literal::Kind::Boolean) {
    throw core::FormatError("npy header: 'fortran_order' is not a boolean", header_start + fortran->begin);
  }
  header.fortran_order = fortran->boolean;
  if (shape->kind != Literal::Kind::Tuple) {
    throw core::FormatError("npy header: 'shape' is not a tuple", header_start + shape->begin);
  }
  if (shape->items.size() > kMaxDimensions) {
    throw core::FormatError("npy header: more than 64 dimensions", header_start + shape->begin);
  }
  std::uint64_t elements = 1;
  for (const auto& dim : shape->items) {
    if (dim.kind != Literal::Kind::Integer || dim.negative) {
      throw core::FormatError("npy header: shape holds something other than a non-negative integer", header_start + dim.begin);
    }
    header.shape.push_back(dim.magnitude);
    elements = checked_multiply(elements, dim.magnitude, header_start + dim.begin, "the element count");
  }

  const DtypeFacts facts = dtype_facts(*descr, 0);
  header.descr = descr->kind == Literal::Kind::String ? descr->text : std::string(text.substr(descr->begin, descr->end - descr->begin));
  header.has_object = facts.has_object;
  if (!facts.has_object) {
    header.item_size = facts.item_size;
    header.expected_data_bytes = checked_multiply(elements, facts.item_size, header_start + shape->begin, "the data size");
  }
  return header;
}

namespace {

// One plain numeric element type as read_npy_array converts it.
struct NumericType {
  enum class Kind { Float, Signed, Unsigned, Bool } kind = Kind::Float;
  unsigned size = 4;
  bool big_endian = false;
};

std::optional<NumericType> numeric_type(std::string_view descr) {
  NumericType type;
  type.big_endian = std::endian::native == std::endian::big;
  if (!descr.empty() && std::strchr("<>|=!", descr.front()) != nullptr) {
    if (descr.front() == '<') type.big_endian = false;
    if (descr.front() == '>' || descr.front() == '!') type.big_endian = true;
    descr.remove_prefix(1);
  }
  if (descr == "?") descr = "b1";
  if (descr.size() != 2) return std::nullopt;
  const char code = descr[0];
  const unsigned size = static_cast<unsigned>(descr[1] - '0');
  type.size = size;
  switch (code) {
    case 'f':
      if (size != 2 && size != 4 && size != 8) return std::nullopt;
      type.kind = NumericType::Kind::Float;
      break;
    case 'i': case 'u':
      if (size != 1 && size != 2 && size != 4 && size != 8) return std::nullopt;
      type.kind = code == 'i' ? NumericType::Kind::Signed : NumericType::Kind::Unsigned;
      break;
    case 'b':
      if (size != 1) return std::nullopt;
      type.kind = NumericType::Kind::Bool;
      break;
    default:
      return std::nullopt;
  }
  return type;
}

float half_to_float(std::uint32_t bits) {
  const bool negative = (bits >> 15) & 1;
  const int exponent = static_cast<int>((bits >> 10) & 0x1f);
  const int mantissa = static_cast<int>(bits & 0x3ff);
  float value = 0;
  if (exponent == 0) {
    value = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 31) {
    value = mantissa == 0 ? std::numeric_limits<float>::infinity() : std::numeric_limits<float>::quiet_NaN();
  } else {
    value = std::ldexp(static_cast<float>(mantissa + 1024), exponent - 25);
  }
  return negative ? -value : value;
}

float load_element(const std::uint8_t* p, const NumericType& type) {
  std::uint64_t bits = 0;
  if (type.big_endian) {
    for (unsigned k = 0; k < type.size; ++k) bits = (bits << 8) | p[k];
  } else {
    for (unsigned k = 0; k < type.size; ++k) bits |= static_cast<std::uint64_t>(p[k]) << (8 * k);
  }
  switch (type.kind) {
    case NumericType::Kind::Float:
      if (type.size == 2) return half_to_float(static_cast<std::uint32_t>(bits));
      if (type.size == 4) return std::bit_cast<float>(static_cast<std::uint32_t>(bits));
      return static_cast<float>(std::bit_cast<double>(bits));
    case NumericType::Kind::Signed: {
      const unsigned shift = 64 - 8 * type.size;
      return static_cast<float>(static_cast<std::int64_t>(bits << shift) >> shift);
    }
    case NumericType::Kind::Unsigned:
      return static_cast<float>(bits);
    case NumericType::Kind::Bool:
      return bits != 0 ? 1.0f : 0.0f;
  }
  return 0;
}

std::string shape_text(std::span<const std::uint64_t> shape) {
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) text += ", ";
    text += std::to_string(shape[i]);
  }
  if (shape.size() == 1) text += ',';
  return text + ")";
}

std::uint64_t element_count(std::span<const std::uint64_t> shape) {
  std::uint64_t count = 1;
  for (auto dim : shape) {
    if (dim != 0 && count > std::numeric_limits<std::uint64_t>::max() / dim) {
      throw core::Error("the array shape " + shape_text(shape) + " overflows 64 bits");
    }
    count *= dim;
  }
  return count;
}

const char* dtype_descr(NpyDtype dtype) {
  switch (dtype) {
    case NpyDtype::Float32: return "<f4";
    case NpyDtype::Int32: return "<i4";
    case NpyDtype::Int64: return "<i8";
  }
  return "<f4";
}

}  // namespace

NpyArray read_npy_records(std::span<const std::uint8_t> data, std::uint64_t max_elements, std::uint64_t first,
                          std::uint64_t count) {
  const NpyHeader header = parse_npy_header(data);
  if (header.has_object) {
    throw core::FormatError("the .npy array holds Python objects (dtype " + header.descr +
                                "): its data is a pickle, which Aegis never loads; save it with a numeric dtype "
                                "instead, e.g. numpy.save(path, x.astype('float32'))",
                            8);
  }
  const auto type = numeric_type(header.descr);
  if (!type) {
    throw core::FormatError("the .npy dtype " + header.descr +
                                " is not a plain number type (f2, f4, f8, i1, i2, i4, i8, u1, u2, u4, u8, b1); convert "
                                "it with x.astype('float32')",
                            8);
  }
  std::uint64_t elements = 1;
  for (auto dim : header.shape) elements *= dim;  // parse_npy_header checked the product for overflow
  if (elements > std::numeric_limits<std::uint64_t>::max() / type->size) {
    throw core::FormatError("the .npy data size overflows 64 bits", 8);
  }
  const std::uint64_t available = data.size() - header.data_offset;
  const std::uint64_t needed = elements * type->size;
  if (available < needed) {
    throw core::FormatError("the .npy data is cut off: shape " + shape_text(header.shape) + " of " + header.descr + " needs " +
                                std::to_string(needed) + " bytes after the header, the file has " + std::to_string(available),
                            data.size());
  }

  // The output: records [first, first + count) of axis 0, or the single element of a 0-d array.
  NpyArray array;
  array.shape = header.shape;
  array.descr = header.descr;
  const std::size_t rank = header.shape.size();
  std::uint64_t out_elements = elements;
  if (rank > 0) {
    first = std::min(first, header.shape[0]);
    count = std::min(count, header.shape[0] - first);
    array.shape[0] = count;
    out_elements = header.shape[0] == 0 ? 0 : elements / header.shape[0] * count;
  }
  if (out_elements > max_elements) {
    throw core::FormatError("the .npy array " + shape_text(array.shape) + " holds " + std::to_string(out_elements) +
                                " elements, more than the limit of " + std::to_string(max_elements),
                            8);
  }
  array.values.resize(static_cast<std::size_t>(out_elements));
  if (out_elements == 0) return array;
  const std::uint8_t* base = data.data() + header.data_offset;
  const std::size_t n = array.values.size();
  if (!header.fortran_order || rank < 2) {
    const std::uint64_t start = rank == 0 ? 0 : first * (elements / header.shape[0]);
    for (std::size_t i = 0; i < n; ++i) array.values[i] = load_element(base + (start + i) * type->size, *type);
    return array;
  }
  // Fortran order keeps the first index fastest. Walk the C-order output with an odometer (last
  // index fastest) and move the source position by the Fortran stride of the index that ticks.
  std::vector<std::uint64_t> stride(rank), index(rank, 0), end(rank);
  stride[0] = 1;
  for (std::size_t k = 1; k < rank; ++k) stride[k] = stride[k - 1] * header.shape[k - 1];
  for (std::size_t k = 0; k < rank; ++k) end[k] = header.shape[k];
  index[0] = first;
  end[0] = first + count;
  std::uint64_t source = first;
  for (std::size_t i = 0; i < n; ++i) {
    array.values[i] = load_element(base + source * type->size, *type);
    for (std::size_t k = rank; k-- > 0;) {
      const std::uint64_t start = k == 0 ? first : 0;
      if (++index[k] < end[k]) {
        source += stride[k];
        break;
      }
      source -= stride[k] * (end[k] - 1 - start);
      index[k] = start;
    }
  }
  return array;
}

NpyArray read_npy_array(std::span<const std::uint8_t> data, std::uint64_t max_elements) {
  return read_npy_records(data, max_elements, 0, std::numeric_limits<std::uint64_t>::max());
}

NpyArray read_npy_file(const std::string& path, std::uint64_t max_elements) {
  const core::MappedFile file(path);
  return read_npy_array(file.bytes(), max_elements);
}

std::string npy_header_bytes(NpyDtype dtype, std::span<const std::uint64_t> shape) {
  std::string dict = std::string("{'descr': '") + dtype_descr(dtype) + "', 'fortran_order': False, 'shape': " + shape_text(shape) + ", }";
  // numpy leaves room to grow the first axis in place: 21 digits in all.
  if (!shape.empty()) dict.append(21 - std::min<std::size_t>(21, std::to_string(shape[0]).size()), ' ');
  const std::size_t text_length = dict.size() + 1;  // with the final '\n'
  bool version1 = true;
  std::size_t prefix = 10;
  std::size_t pad = 64 - (prefix + text_length) % 64;
  if (text_length + pad > 0xFFFF) {
    version1 = false;
    prefix = 12;
    pad = 64 - (prefix + text_length) % 64;
  }
  const std::size_t length = text_length + pad;
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(version1 ? 1 : 2));
  out.push_back('\0');
  const int length_bytes = version1 ? 2 : 4;
  for (int k = 0; k < length_bytes; ++k) out.push_back(static_cast<char>((length >> (8 * k)) & 0xFF));
  out += dict;
  out.append(pad, ' ');
  out.push_back('\n');
  return out;
}

NpyWriter::NpyWriter(const std::string& path, NpyDtype dtype, std::span<const std::uint64_t> shape)
    : path_(path), partial_path_(path + ".partial"), dtype_(dtype) {
  total_ = element_count(shape);
  file_ = std::fopen(partial_path_.c_str(), "wb");
  if (!file_) {
    throw core::Error("cannot create " + partial_path_ + ": " + std::strerror(errno), "check that the folder exists and is writable");
  }
  const std::string header = npy_header_bytes(dtype, shape);
  if (std::fwrite(header.data(), 1, header.size(), file_) != header.size()) {
    const int err = errno;
    std::fclose(file_);
    file_ = nullptr;
    std::remove(partial_path_.c_str());
    throw core::Error("cannot write " + partial_path_ + ": " + std::strerror(err), "check the free disk space");
  }
}

NpyWriter::~NpyWriter() {
  if (file_) {
    std::fclose(file_);
    std::remove(partial_path_.c_str());
  }
}

void NpyWriter::write_raw(const void* data, std::size_t count, std::size_t item_size, NpyDtype dtype) {
  if (!file_) throw std::logic_error("NpyWriter: append after finish");
  if (dtype != dtype_) throw std::logic_error(std::string("NpyWriter: appending another type to a ") + dtype_descr(dtype_) + " array");
  if (count > total_ - written_) {
    throw std::logic_error("NpyWriter: " + std::to_string(written_ + count) + " elements for a shape of " + std::to_string(total_));
  }
  const auto* bytes = static_cast<const std::uint8_t*>(data);
  std::size_t done = 0;
  if constexpr (std::endian::native == std::endian::little) {
    done = std::fwrite(bytes, item_size, count, file_);
  } else {
    std::vector<std::uint8_t> swapped(item_size);
    for (std::size_t i = 0; i < count; ++i) {
      std::reverse_copy(bytes + i * item_size, bytes + (i + 1) * item_size, swapped.begin());
      if (std::fwrite(swapped.data(), item_size, 1, file_) != 1) break;
      ++done;
    }
  }
  if (done != count) {
    throw core::Error("cannot write " + partial_path_ + ": " + std::strerror(errno), "check the free disk space");
  }
  written_ += count;
}

void NpyWriter::append(std::span<const float> values) { write_raw(values.data(), values.size(), 4, NpyDtype::Float32); }
void NpyWriter::append(std::span<const std::int32_t> values) { write_raw(values.data(), values.size(), 4, NpyDtype::Int32); }
void NpyWriter::append(std::span<const std::int64_t> values) { write_raw(values.data(), values.size(), 8, NpyDtype::Int64); }

void NpyWriter::finish() {
  if (!file_) throw std::logic_error("NpyWriter: finish called twice");
  if (written_ != total_) {
    throw core::Error("the .npy writer for " + path_ + " got " + std::to_string(written_) + " of the " + std::to_string(total_) +
                      " elements its shape needs");
  }
  const bool closed = std::fclose(file_) == 0;
  const int err = errno;
  file_ = nullptr;
  if (!closed) {
    std::remove(partial_path_.c_str());
    throw core::Error("cannot write " + partial_path_ + ": " + std::strerror(err), "check the free disk space");
  }
  if (std::rename(partial_path_.c_str(), path_.c_str()) != 0) {
    const int rename_err = errno;
    std::remove(partial_path_.c_str());
    throw core::Error("cannot rename " + partial_path_ + " to " + path_ + ": " + std::strerror(rename_err));
  }
}

namespace {

template <typename T>
void write_whole(const std::string& path, NpyDtype dtype, std::span<const std::uint64_t> shape, std::span<const T> values) {
  const std::uint64_t count = element_count(shape);
  if (count != values.size()) {
    throw core::Error("cannot write " + path + ": the shape " + shape_text(shape) + " needs " + std::to_string(count) +
                      " values, there are " + std::to_string(values.size()));
  }
  NpyWriter writer(path, dtype, shape);
  writer.append(values);
  writer.finish();
}

}  // namespace

void write_npy_f32(const std::string& path, std::span<const std::uint64_t> shape, std::span<const float> values) {
  write_whole(path, NpyDtype::Float32, shape, values);
}
void write_npy_i32(const std::string& path, std::span<const std::uint64_t> shape, std::span<const std::int32_t> values) {
  write_whole(path, NpyDtype::Int32, shape, values);
}
void write_npy_i64(const std::string& path, std::span<const std::uint64_t> shape, std::span<const std::int64_t> values) {
  write_whole(path, NpyDtype::Int64, shape, values);
}

}  // namespace aegis::formats
