// Reads CPython's marshal format (versions 0 to 5 of marshal, Python 2.7 to 3.14) into a small
// arena of values, then describes the code object it holds. Every length and count is checked
// against the bytes left, nesting and the number of objects are capped, strings keep only their
// first bytes, and back-references are checked against the objects already read.
#include "aegis/formats/pymarshal.h"

#include "aegis/core/python_repr.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

namespace aegis::formats {
namespace {

enum class Family { Py311, Py38, Py30, Py27 };

std::string_view family_name(Family family) {
  switch (family) {
    case Family::Py311: return "3.11+";
    case Family::Py38: return "3.8-3.10";
    case Family::Py30: return "3.0-3.7";
    case Family::Py27: return "2.7";
  }
  return "";
}

enum class Kind : std::uint8_t {
  None, True, False, StopIteration, Ellipsis, Int, Float, Complex, Bytes, Str, Tuple, List, Dict, Set,
  FrozenSet, Code, Slice,
};

std::string_view kind_name(Kind kind) {
  switch (kind) {
    case Kind::None: return "None";
    case Kind::True: case Kind::False: return "bool";
    case Kind::StopIteration: return "StopIteration";
    case Kind::Ellipsis: return "Ellipsis";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::Complex: return "complex";
    case Kind::Bytes: return "bytes";
    case Kind::Str: return "str";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Set: return "set";
    case Kind::FrozenSet: return "frozenset";
    case Kind::Code: return "code";
    case Kind::Slice: return "slice";
  }
  return "object";
}

constexpr std::uint32_t kNoIndex = std::numeric_limits<std::uint32_t>::max();
constexpr std::uint32_t kReserved = kNoIndex - 1;  // a reference slot whose object is still being read
constexpr std::uint8_t kFlagRef = 0x80;

struct Value {
  Kind kind = Kind::None;
  std::string text;                  // str and bytes: the first kMarshalKeepBytes bytes; numbers: rendered
  std::uint64_t size = 0;            // str and bytes: the full length
  std::vector<std::uint32_t> items;  // containers (a dict alternates key, value); slice: start, stop, step
  std::uint32_t code = kNoIndex;     // Kind::Code: index into the code arena
};

struct CodeFields {
  std::int32_t argcount = 0;
  std::int32_t firstlineno = 0;
  std::uint32_t consts = kNoIndex;
  std::uint32_t names = kNoIndex;
  std::uint32_t varnames = kNoIndex;  // co_varnames, or co_localsplusnames (3.11+)
  std::uint32_t freevars = kNoIndex;  // before 3.11
  std::uint32_t kinds = kNoIndex;     // co_localspluskinds (3.11+)
  std::uint32_t filename = kNoIndex;
  std::uint32_t name = kNoIndex;
  std::uint32_t qualname = kNoIndex;  // 3.11+
};

// Type codes (Python/marshal.c).
constexpr char kNull = '0', kNone = 'N', kFalse = 'F', kTrue = 'T', kStopIter = 'S', kEllipsis = '.';
constexpr char kInt = 'i', kInt64 = 'I', kFloat = 'f', kBinaryFloat = 'g', kComplex = 'x', kBinaryComplex = 'y';
constexpr char kLong = 'l', kString = 's', kInterned = 't', kStringRef = 'R', kRef = 'r', kTuple = '(';
constexpr char kSmallTuple = ')', kList = '[', kDict = '{', kCode = 'c', kUnicode = 'u', kSet = '<';
constexpr char kFrozenSet = '>', kAscii = 'a', kAsciiInterned = 'A', kShortAscii = 'z';
constexpr char kShortAsciiInterned = 'Z', kSlice = ':';




std::string render_double(double value) {
  if (std::isnan(value)) return "nan";
  if (std::isinf(value)) return value > 0 ? "inf" : "-inf";
  std::array<char, 64> buffer{};
  const auto result = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  std::string out(buffer.data(), result.ptr);
  if (out.find_first_of(".en") == std::string::npos) out += ".0";
  return out;
}

double double_from_le(const std::uint8_t* p) {
  std::uint64_t bits = 0;
  for (int i = 7; i >= 0; --i) bits = (bits << 8) | p[i];
  double value = 0;
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

class Reader {
 public:
  Reader(std::span<const std::uint8_t> data, Family family) : data_(data), family_(family) {}

  bool read_top(std::uint32_t& out) { return read_object(out, 0); }
  std::size_t pos() const { return pos_; }
  const std::string& error() const { return error_; }
  const std::vector<Value>& values() const { return values_; }
  const std::vector<CodeFields>& codes() const { return codes_; }

 private:
  bool py2() const { return family_ == Family::Py27; }

  bool fail(const std::string& why, std::size_t at) {
    if (error_.empty()) error_ = why + " at byte " + std::to_string(at);
    return false;
  }
  bool truncated(std::string_view what) { return fail("data ends inside " + std::string(what), pos_); }

  std::size_t remaining() const { return data_.size() - pos_; }

  bool u8(std::uint8_t& out, std::string_view what) {
    if (remaining() < 1) return truncated(what);
    out = data_[pos_++];
    return true;
  }
  bool i32(std::int32_t& out, std::string_view what) {
    if (remaining() < 4) return truncated(what);
    std::uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | data_[pos_ + static_cast<std::size_t>(i)];
    pos_ += 4;
    out = static_cast<std::int32_t>(v);
    return true;
  }
  bool take(std::size_t n, std::string_view& out, std::string_view what) {
    if (n > remaining()) return truncated(what);
    out = std::string_view(reinterpret_cast<const char*>(data_.data() + pos_), n);
    pos_ += n;
    return true;
  }

  std::uint32_t add(Value value) {
    values_.push_back(std::move(value));
    return static_cast<std::uint32_t>(values_.size() - 1);
  }

  // A 32-bit count or length that must fit in the bytes left, each element taking `min_bytes`.
  bool count(std::size_t& out, std::string_view what, std::size_t min_bytes) {
    const std::size_t at = pos_;
    std::int32_t n = 0;
    if (!i32(n, what)) return false;
    if (n < 0) return fail("negative " + std::string(what) + " " + std::to_string(n), at);
    if (static_cast<std::size_t>(n) > remaining() / min_bytes)
      return fail(std::string(what) + " " + std::to_string(n) + " runs past the end of the data", at);
    out = static_cast<std::size_t>(n);
    return true;
  }

  bool read_string(Kind kind, std::size_t length, std::string_view what, std::uint32_t& out) {
    std::string_view bytes;
    if (!take(length, bytes, what)) return false;
    Value v;
    v.kind = kind;
    v.size = length;
    v.text.assign(bytes.substr(0, kMarshalKeepBytes));
    out = add(std::move(v));
    return true;
  }

  bool read_text_float(std::string& out) {
    std::uint8_t n = 0;
    std::string_view text;
    if (!u8(n, "a float") || !take(n, text, "a float")) return false;
    out.clear();
    core::append_python_escaped(out, text, 0, true, std::string::npos, false);
    return true;
  }

  // Ints of up to this many 15-bit digits (about 300 decimal digits) are rendered exactly.
  static constexpr std::uint64_t kMaxDecimalDigits = 64;

  // Decimal text of a magnitude given as 15-bit digits, least significant first (schoolbook
  // division by 10^4, quadratic but bounded by kMaxDecimalDigits).
  static std::string to_decimal(std::vector<std::uint16_t> digits) {
    std::string out;
    while (!digits.empty()) {
      std::uint32_t rest = 0;
      for (std::size_t i = digits.size(); i-- > 0;) {
        const std::uint32_t cur = (rest << 15) | digits[i];
        digits[i] = static_cast<std::uint16_t>(cur / 10000);
        rest = cur % 10000;
      }
      while (!digits.empty() && digits.back() == 0) digits.pop_back();
      for (int k = 0; k < 4; ++k) {
        out += static_cast<char>('0' + rest % 10);
        rest /= 10;
        if (digits.empty() && rest == 0) break;
      }
    }
    if (out.empty()) out = "0";
    return {out.rbegin(), out.rend()};
  }

  bool read_long(Value& v) {
    const std::size_t at = pos_;
    std::int32_t n = 0;
    if (!i32(n, "an int")) return false;
    const bool negative = n < 0;
    const std::uint64_t digits = negative ? static_cast<std::uint64_t>(-static_cast<std::int64_t>(n)) : static_cast<std::uint64_t>(n);
    if (digits > remaining() / 2) return fail("int of " + std::to_string(digits) + " digits runs past the end of the data", at);
    std::uint64_t small = 0;
    std::vector<std::uint16_t> all;
    all.reserve(static_cast<std::size_t>(digits));
    for (std::uint64_t i = 0; i < digits; ++i) {
      const std::uint16_t d = static_cast<std::uint16_t>(data_[pos_] | (data_[pos_ + 1] << 8));
      if (d >= 0x8000) return fail("int digit out of range", pos_);
      pos_ += 2;
      all.push_back(d);
    }
    if (digits > 0 && all.back() == 0) return fail("unnormalized int", at);
    if (digits <= 4) {
      for (std::uint64_t i = digits; i-- > 0;) small = (small << 15) | all[static_cast<std::size_t>(i)];
      v.text = (negative ? "-" : "") + std::to_string(small);
    } else if (digits <= kMaxDecimalDigits) {
      v.text = (negative ? "-" : "") + to_decimal(all);
    } else {
      v.text = std::string(negative ? "-" : "") + "<int of " + std::to_string(digits * 15) + " bits>";
    }
    return true;
  }

  bool is_text(Kind kind) const { return kind == Kind::Str; }
  bool is_bytes(Kind kind) const { return py2() ? kind == Kind::Str : kind == Kind::Bytes; }

  bool check_field(std::uint32_t index, bool (Reader::*ok)(Kind) const, std::string_view field, std::size_t at) {
    if (!(this->*ok)(values_[index].kind))
      return fail(std::string(field) + " of a code object is a " + std::string(kind_name(values_[index].kind)), at);
    return true;
  }
  bool is_tuple(Kind kind) const { return kind == Kind::Tuple; }
  bool check_name_tuple(std::uint32_t index, std::string_view field, std::size_t at) {
    if (!check_field(index, &Reader::is_tuple, field, at)) return false;
    for (std::uint32_t item : values_[index].items)
      if (!is_text(values_[item].kind)) return fail(std::string(field) + " of a code object holds a non-string", at);
    return true;
  }

  bool read_code(std::uint32_t& out, int depth, bool flag) {
    const std::size_t at = pos_ - 1;
    std::size_t slot = 0;
    if (flag) {
      slot = refs_.size();
      refs_.push_back(kReserved);
    }
    CodeFields f;
    std::int32_t posonly = 0, kwonly = 0, nlocals = 0, scratch = 0;
    if (!i32(f.argcount, "a code object")) return false;
    if (family_ == Family::Py311 || family_ == Family::Py38) {
      if (!i32(posonly, "a code object")) return false;
    }
    if (family_ != Family::Py27) {
      if (!i32(kwonly, "a code object")) return false;
    }
    if (family_ != Family::Py311) {
      if (!i32(nlocals, "a code object")) return false;
    }
    if (!i32(scratch, "a code object") || !i32(scratch, "a code object")) return false;  // stacksize, flags
    if (f.argcount < 0 || posonly < 0 || kwonly < 0 || nlocals < 0 || f.argcount < posonly)
      return fail("code object with negative or inconsistent argument counts", at);

    std::uint32_t bytecode = 0, linetable = 0;
    if (!read_object(bytecode, depth + 1) || !check_field(bytecode, &Reader::is_bytes, "co_code", at)) return false;
    if (!read_object(f.consts, depth + 1) || !check_field(f.consts, &Reader::is_tuple, "co_consts", at)) return false;
    if (!read_object(f.names, depth + 1) || !check_name_tuple(f.names, "co_names", at)) return false;
    if (family_ == Family::Py311) {
      if (!read_object(f.varnames, depth + 1) || !check_name_tuple(f.varnames, "co_localsplusnames", at)) return false;
      if (!read_object(f.kinds, depth + 1) || !check_field(f.kinds, &Reader::is_bytes, "co_localspluskinds", at))
        return false;
      if (values_[f.kinds].size != values_[f.varnames].items.size())
        return fail("co_localspluskinds and co_localsplusnames differ in length", at);
    } else {
      std::uint32_t cellvars = 0;
      if (!read_object(f.varnames, depth + 1) || !check_name_tuple(f.varnames, "co_varnames", at)) return false;
      if (!read_object(f.freevars, depth + 1) || !check_name_tuple(f.freevars, "co_freevars", at)) return false;
      if (!read_object(cellvars, depth + 1) || !check_name_tuple(cellvars, "co_cellvars", at)) return false;
    }
    if (!read_object(f.filename, depth + 1) || !check_field(f.filename, &Reader::is_text, "co_filename", at)) return false;
    if (!read_object(f.name, depth + 1) || !check_field(f.name, &Reader::is_text, "co_name", at)) return false;
    if (family_ == Family::Py311) {
      if (!read_object(f.qualname, depth + 1) || !check_field(f.qualname, &Reader::is_text, "co_qualname", at))
        return false;
    }
    if (!i32(f.firstlineno, "a code object")) return false;
    if (!read_object(linetable, depth + 1) || !check_field(linetable, &Reader::is_bytes, "co_linetable", at)) return false;
    if (family_ == Family::Py311) {
      std::uint32_t exceptions = 0;
      if (!read_object(exceptions, depth + 1) || !check_field(exceptions, &Reader::is_bytes, "co_exceptiontable", at))
        return false;
    }
    codes_.push_back(f);
    Value v;
    v.kind = Kind::Code;
    v.code = static_cast<std::uint32_t>(codes_.size() - 1);
    out = add(std::move(v));
    if (flag) refs_[slot] = out;
    return true;
  }

  // Reads `n` objects into values_[index].items; a NULL object is an error.
  bool read_items(std::uint32_t index, std::size_t n, int depth) {
    for (std::size_t i = 0; i < n; ++i) {
      std::uint32_t item = 0;
      if (!read_object(item, depth + 1)) return false;
      values_[index].items.push_back(item);
    }
    return true;
  }

  bool read_object(std::uint32_t& out, int depth, bool* null_seen = nullptr) {
    const std::size_t at = pos_;
    if (depth > kMarshalMaxDepth) return fail("objects nested deeper than " + std::to_string(kMarshalMaxDepth), at);
    if (++objects_ > kMarshalMaxObjects)
      return fail("more than " + std::to_string(kMarshalMaxObjects) + " objects", at);
    std::uint8_t byte = 0;
    if (!u8(byte, "a type code")) return false;
    const bool flag = (byte & kFlagRef) != 0;
    const char type = static_cast<char>(byte & ~kFlagRef);
    if (flag && py2()) return fail("unknown type code 0x" + hex_byte(byte), at);

    // Objects without children are entered into the reference table once read.
    auto leaf = [&](Value v) {
      out = add(std::move(v));
      if (flag) refs_.push_back(out);
      return true;
    };
    auto simple = [&](Kind kind) {
      Value v;
      v.kind = kind;
      return leaf(std::move(v));
    };

    switch (type) {
      case kNull:
        if (null_seen != nullptr) {
          *null_seen = true;
          out = kNoIndex;
          return true;
        }
        return fail("NULL object in marshal data", at);
      case kNone: return simple(Kind::None);
      case kFalse: return simple(Kind::False);
      case kTrue: return simple(Kind::True);
      case kStopIter: return simple(Kind::StopIteration);
      case kEllipsis: return simple(Kind::Ellipsis);
      case kInt: {
        std::int32_t n = 0;
        if (!i32(n, "an int")) return false;
        Value v;
        v.kind = Kind::Int;
        v.text = std::to_string(n);
        return leaf(std::move(v));
      }
      case kInt64: {
        std::string_view raw;
        if (!take(8, raw, "an int")) return false;
        std::uint64_t bits = 0;
        for (int i = 7; i >= 0; --i) bits = (bits << 8) | static_cast<unsigned char>(raw[static_cast<std::size_t>(i)]);
        Value v;
        v.kind = Kind::Int;
        v.text = std::to_string(static_cast<std::int64_t>(bits));
        return leaf(std::move(v));
      }
      case kLong: {
        Value v;
        v.kind = Kind::Int;
        if (!read_long(v)) return false;
        return leaf(std::move(v));
      }
      case kFloat: {
        Value v;
        v.kind = Kind::Float;
        if (!read_text_float(v.text)) return false;
        return leaf(std::move(v));
      }
      case kBinaryFloat: {
        std::string_view raw;
        if (!take(8, raw, "a float")) return false;
        Value v;
        v.kind = Kind::Float;
        v.text = render_double(double_from_le(reinterpret_cast<const std::uint8_t*>(raw.data())));
        return leaf(std::move(v));
      }
      case kComplex: {
        std::string re, im;
        if (!read_text_float(re) || !read_text_float(im)) return false;
        Value v;
        v.kind = Kind::Complex;
        v.text = "complex(" + re + ", " + im + ")";
        return leaf(std::move(v));
      }
      case kBinaryComplex: {
        std::string_view raw;
        if (!take(16, raw, "a complex")) return false;
        const auto* p = reinterpret_cast<const std::uint8_t*>(raw.data());
        Value v;
        v.kind = Kind::Complex;
        v.text = "complex(" + render_double(double_from_le(p)) + ", " + render_double(double_from_le(p + 8)) + ")";
        return leaf(std::move(v));
      }
      case kString: case kInterned: case kUnicode: case kAscii: case kAsciiInterned: {
        if (py2() && (type == kAscii || type == kAsciiInterned)) break;  // marshal version 4+
        std::size_t length = 0;
        if (!count(length, "string length", 1)) return false;
        const Kind kind = (type == kString && !py2()) ? Kind::Bytes : Kind::Str;
        std::uint32_t index = 0;
        if (!read_string(kind, length, "a string", index)) return false;
        out = index;
        if (flag) refs_.push_back(out);
        if (py2() && type == kInterned) interned_.push_back(out);
        return true;
      }
      case kShortAscii: case kShortAsciiInterned: {
        if (py2()) break;
        std::uint8_t length = 0;
        if (!u8(length, "a string")) return false;
        std::uint32_t index = 0;
        if (!read_string(Kind::Str, length, "a string", index)) return false;
        out = index;
        if (flag) refs_.push_back(out);
        return true;
      }
      case kStringRef: {
        if (!py2()) break;
        std::int32_t n = 0;
        if (!i32(n, "a string reference")) return false;
        if (n < 0 || static_cast<std::size_t>(n) >= interned_.size()) return fail("string reference out of range", at);
        out = interned_[static_cast<std::size_t>(n)];
        return true;
      }
      case kRef: {
        if (py2()) break;
        std::int32_t n = 0;
        if (!i32(n, "a reference")) return false;
        if (n < 0 || static_cast<std::size_t>(n) >= refs_.size() || refs_[static_cast<std::size_t>(n)] == kReserved)
          return fail("invalid reference " + std::to_string(n), at);
        out = refs_[static_cast<std::size_t>(n)];
        return true;
      }
      case kTuple: case kSmallTuple: case kList: case kSet: case kFrozenSet: {
        if (py2() && type == kSmallTuple) break;
        std::size_t n = 0;
        if (type == kSmallTuple) {
          std::uint8_t small = 0;
          if (!u8(small, "a tuple")) return false;
          n = small;
          if (n > remaining()) return fail("tuple of " + std::to_string(n) + " items runs past the end of the data", at);
        } else if (!count(n, "container size", 1)) {
          return false;
        }
        Value v;
        v.kind = type == kList ? Kind::List : type == kSet ? Kind::Set : type == kFrozenSet ? Kind::FrozenSet : Kind::Tuple;
        v.items.reserve(std::min<std::size_t>(n, 1024));  // grows with what is actually read
        const std::uint32_t index = add(std::move(v));
        std::size_t slot = 0;
        if (flag) {
          // A frozenset (like a code object) may not be referred to before it is complete.
          slot = refs_.size();
          refs_.push_back(type == kFrozenSet ? kReserved : index);
        }
        if (!read_items(index, n, depth)) return false;
        if (flag) refs_[slot] = index;
        out = index;
        return true;
      }
      case kDict: {
        Value v;
        v.kind = Kind::Dict;
        const std::uint32_t index = add(std::move(v));
        if (flag) refs_.push_back(index);
        for (;;) {
          bool end = false;
          std::uint32_t key = 0, value = 0;
          if (!read_object(key, depth + 1, &end)) return false;
          if (end) break;
          if (!read_object(value, depth + 1)) return false;
          values_[index].items.push_back(key);
          values_[index].items.push_back(value);
        }
        out = index;
        return true;
      }
      case kSlice: {
        if (py2()) break;
        Value v;
        v.kind = Kind::Slice;
        const std::uint32_t index = add(std::move(v));
        std::size_t slot = 0;
        if (flag) {
          slot = refs_.size();
          refs_.push_back(kReserved);
        }
        if (!read_items(index, 3, depth)) return false;
        if (flag) refs_[slot] = index;
        out = index;
        return true;
      }
      case kCode: return read_code(out, depth, flag);
      default: break;
    }
    return fail("unknown type code 0x" + hex_byte(byte), at);
  }

  static std::string hex_byte(std::uint8_t byte) {
    static constexpr char kHex[] = "0123456789abcdef";
    return {kHex[byte >> 4], kHex[byte & 0x0F]};
  }

  std::span<const std::uint8_t> data_;
  Family family_;
  std::size_t pos_ = 0;
  std::size_t objects_ = 0;
  std::string error_;
  std::vector<Value> values_;
  std::vector<CodeFields> codes_;
  std::vector<std::uint32_t> refs_;      // FLAG_REF table (marshal version 3+)
  std::vector<std::uint32_t> interned_;  // 'R' table (Python 2)
};

// Turns the arena into MarshalCode descriptions, with a shared work budget so that objects
// reached many times through references cannot multiply the work.
class Describer {
 public:
  Describer(const Reader& reader, Family family) : values_(reader.values()), codes_(reader.codes()), family_(family) {}

  MarshalCode describe(std::uint32_t code_value, int depth) {
    MarshalCode out;
    const CodeFields& f = codes_[values_[code_value].code];
    out.name = text(f.name);
    out.qualname = f.qualname != kNoIndex ? text(f.qualname) : out.name;
    out.filename = text(f.filename);
    out.first_line = f.firstlineno > 0 ? static_cast<std::uint32_t>(f.firstlineno) : 0;
    out.arg_count = static_cast<std::uint32_t>(f.argcount);
    for (std::uint32_t item : values_[f.names].items)
      if (out.names.size() < kMarshalMaxListed) out.names.push_back(text(item));
    if (f.kinds != kNoIndex) {
      const std::string& kinds = values_[f.kinds].text;
      const auto& all = values_[f.varnames].items;
      for (std::size_t i = 0; i < all.size(); ++i) {
        const unsigned char kind = i < kinds.size() ? static_cast<unsigned char>(kinds[i]) : 0x20;
        std::vector<std::string>& list = (kind & 0x80) != 0 ? out.freevars : out.varnames;
        if (list.size() < kMarshalMaxListed) list.push_back(text(all[i]));
      }
    } else {
      for (std::uint32_t item : values_[f.varnames].items)
        if (out.varnames.size() < kMarshalMaxListed) out.varnames.push_back(text(item));
      for (std::uint32_t item : values_[f.freevars].items)
        if (out.freevars.size() < kMarshalMaxListed) out.freevars.push_back(text(item));
    }
    for (std::uint32_t item : values_[f.consts].items) {
      if (budget_ == 0 || out.constants.size() >= kMarshalMaxListed) break;
      --budget_;
      const Value& v = values_[item];
      std::string rendered;
      render(item, 0, rendered);
      out.constants.push_back(rendered);
      collect_strings(item, 0, out.string_constants);
      if (v.kind == Kind::Code) {
        if (depth < kMarshalMaxDepth && described_ < kMaxDescribed) {
          ++described_;
          out.nested.push_back(describe(item, depth + 1));
        }
      } else if (v.kind != Kind::Str && v.kind != Kind::Bytes) {
        out.other_constants.push_back(std::move(rendered));
      }
    }
    return out;
  }

 private:
  static constexpr std::size_t kMaxRendered = 300;     // characters of one rendered constant
  static constexpr int kMaxRenderDepth = 6;
  static constexpr std::size_t kMaxDescribed = 1000;   // code objects described

  std::string text(std::uint32_t index) const {
    std::string out;
    core::append_python_escaped(out, values_[index].text, 0, false, std::string::npos, false);
    if (values_[index].size > values_[index].text.size()) out += "...";
    return out;
  }

  void collect_strings(std::uint32_t index, int depth, std::vector<std::string>& out) {
    if (budget_ == 0 || out.size() >= kMarshalMaxListed || depth > kMaxRenderDepth) return;
    --budget_;
    const Value& v = values_[index];
    if (v.kind == Kind::Str || v.kind == Kind::Bytes) {
      out.push_back(text(index));
    } else if (v.kind == Kind::Tuple || v.kind == Kind::FrozenSet || v.kind == Kind::Set || v.kind == Kind::List ||
               v.kind == Kind::Dict) {
      for (std::uint32_t item : v.items) collect_strings(item, depth + 1, out);
    }
  }

  void render(std::uint32_t index, int depth, std::string& out) {
    if (out.size() >= kMaxRendered) return;
    if (budget_ > 0) --budget_;
    const Value& v = values_[index];
    switch (v.kind) {
      case Kind::None: out += "None"; return;
      case Kind::True: out += "True"; return;
      case Kind::False: out += "False"; return;
      case Kind::StopIteration: out += "StopIteration"; return;
      case Kind::Ellipsis: out += "Ellipsis"; return;
      case Kind::Int: case Kind::Float: case Kind::Complex: out += v.text; return;
      case Kind::Str: case Kind::Bytes: {
        if (v.kind == Kind::Bytes) out += 'b';
        out += '\'';
        core::append_python_escaped(out, v.text, '\'', v.kind == Kind::Bytes || family_ == Family::Py27, std::string::npos);
        if (v.size > v.text.size()) out += "...";
        out += '\'';
        return;
      }
      case Kind::Code: out += "<code " + text(codes_[v.code].name) + ">"; return;
      default: break;
    }
    if (depth >= kMaxRenderDepth || budget_ == 0) {
      out += "...";
      return;
    }
    const char* open = "(";
    const char* close = ")";
    if (v.kind == Kind::List) open = "[", close = "]";
    if (v.kind == Kind::Dict || v.kind == Kind::Set) open = "{", close = "}";
    if (v.kind == Kind::FrozenSet) open = "frozenset({", close = "})";
    if (v.kind == Kind::Slice) open = "slice(";
    if ((v.kind == Kind::Set || v.kind == Kind::FrozenSet) && v.items.empty()) {
      out += v.kind == Kind::Set ? "set()" : "frozenset()";
      return;
    }
    out += open;
    for (std::size_t i = 0; i < v.items.size(); ++i) {
      if (out.size() >= kMaxRendered) {
        out += "...";
        break;
      }
      if (i > 0) out += (v.kind == Kind::Dict && i % 2 == 1) ? ": " : ", ";
      render(v.items[i], depth + 1, out);
    }
    if (v.kind == Kind::Tuple && v.items.size() == 1) out += ',';
    out += close;
  }

  const std::vector<Value>& values_;
  const std::vector<CodeFields>& codes_;
  Family family_;
  std::size_t budget_ = 200000;
  std::size_t described_ = 0;
};

struct Attempt {
  Family family = Family::Py311;
  bool ok = false;
  std::size_t end = 0;  // where reading stopped
  std::string error;
};

void join_names(std::string& out, const std::vector<std::string>& items, bool quote, std::size_t max_chars) {
  out += '[';
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (out.size() >= max_chars) break;  // the caller cuts the line to max_chars
    if (i > 0) out += ", ";
    if (quote) out += '\'';
    out += items[i];
    if (quote) out += '\'';
  }
  out += ']';
}

void summarize_into(const MarshalCode& code, std::string& out, std::size_t max_chars, int depth) {
  if (out.size() >= max_chars) return;
  out += "code " + (code.qualname.empty() ? code.name : code.qualname);
  if (!code.filename.empty()) out += " (file " + code.filename + ")";
  out += ": names ";
  join_names(out, code.names, false, max_chars);
  out += "; constants ";
  join_names(out, code.constants, false, max_chars);
  if (!code.freevars.empty()) {
    out += "; closure ";
    join_names(out, code.freevars, false, max_chars);
  }
  if (depth >= 8) return;
  for (const MarshalCode& inner : code.nested) {
    if (out.size() >= max_chars) return;
    out += "; nested ";
    summarize_into(inner, out, max_chars, depth + 1);
  }
}

}  // namespace


MarshalResult read_marshalled_code(std::span<const std::uint8_t> bytes) {
  MarshalResult result;
  try {
    if (bytes.empty()) {
      result.error = "empty marshal data";
      return result;
    }
    const bool code_at_top = static_cast<char>(bytes[0] & ~kFlagRef) == kCode;
    const std::vector<Family> families = code_at_top
                                             ? std::vector<Family>{Family::Py311, Family::Py38, Family::Py30, Family::Py27}
                                             : std::vector<Family>{Family::Py311, Family::Py27};
    std::vector<Attempt> attempts;
    std::optional<std::size_t> chosen;
    for (Family family : families) {
      Reader reader(bytes, family);
      std::uint32_t top = 0;
      Attempt attempt;
      attempt.family = family;
      attempt.ok = reader.read_top(top);
      attempt.end = reader.pos();
      attempt.error = reader.error();
      attempts.push_back(attempt);
      if (!attempt.ok || attempt.end != bytes.size()) continue;
      chosen = attempts.size() - 1;
      break;
    }
    if (!chosen) {
      for (std::size_t i = 0; i < attempts.size(); ++i)
        if (attempts[i].ok) {
          chosen = i;
          break;
        }
    }
    if (!chosen) {
      // Report the layout that read furthest: the likeliest to be the writer's.
      std::size_t best = 0;
      for (std::size_t i = 1; i < attempts.size(); ++i)
        if (attempts[i].end > attempts[best].end) best = i;
      result.error = attempts[best].error;
      if (code_at_top) result.error = "not a code object of any known Python layout (read as " +
                                      std::string(family_name(attempts[best].family)) + ": " + attempts[best].error + ")";
      return result;
    }
    // Read again with the chosen layout to keep its arena.
    const Family family = attempts[*chosen].family;
    Reader reader(bytes, family);
    std::uint32_t top = 0;
    reader.read_top(top);
    result.ok = true;
    result.trailing_bytes = bytes.size() - reader.pos();
    const Value& value = reader.values()[top];
    result.top_level = std::string(kind_name(value.kind));
    if (value.kind == Kind::Code) {
      result.python_family = std::string(family_name(family));
      Describer describer(reader, family);
      result.code = describer.describe(top, 0);
    }
  } catch (const std::exception& e) {  // allocation failure: report, never throw
    result = MarshalResult{};
    result.error = std::string("marshal reader failed: ") + e.what();
  }
  return result;
}

std::string summarize_code(const MarshalCode& code, std::size_t max_chars) {
  std::string out;
  summarize_into(code, out, max_chars, 0);
  if (out.size() > max_chars) {
    std::size_t cut = max_chars >= 3 ? max_chars - 3 : 0;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;  // keep UTF-8 whole
    out.resize(cut);
    out += "...";
  }
  return out;
}

}  // namespace aegis::formats
