// Reads a GGUF file as ggml's gguf loader does (header, key/value metadata, tensor infos, aligned
// data section), bounding every declared count by the bytes left so that nothing is allocated
// from a number the file merely claims. Also reviews chat templates without rendering them.
#include "aegis/formats/gguf.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <set>
#include <utility>

#include "aegis/core/text.h"

namespace aegis::formats {
namespace {

constexpr std::size_t kMaxProblems = 100;
constexpr std::size_t kMaxRisks = 100;
constexpr std::uint32_t kMaxDims = 4;          // GGML_MAX_DIMS
constexpr int kMaxArrayDepth = 4;
constexpr std::uint64_t kMaxTensorName = 63;   // GGML_MAX_NAME less the terminator

// Smallest encodings, used to bound counts: key (8-byte length) + type (4) + a 1-byte value;
// tensor info: name length (8) + n_dims (4) + type (4) + offset (8).
constexpr std::uint64_t kMinKvBytes = 13;
constexpr std::uint64_t kMinTensorInfoBytes = 24;

enum ValueType : std::uint32_t {
  kUint8 = 0, kInt8 = 1, kUint16 = 2, kInt16 = 3, kUint32 = 4, kInt32 = 5, kFloat32 = 6, kBool = 7,
  kString = 8, kArray = 9, kUint64 = 10, kInt64 = 11, kFloat64 = 12,
};

// Bytes of a fixed-size value, 8 for a string (its length), 12 for an array (type + count);
// nullopt for an unknown type.
std::optional<std::uint64_t> min_value_bytes(std::uint32_t type) {
  switch (type) {
    case kUint8: case kInt8: case kBool: return 1;
    case kUint16: case kInt16: return 2;
    case kUint32: case kInt32: case kFloat32: return 4;
    case kUint64: case kInt64: case kFloat64: case kString: return 8;
    case kArray: return 12;
    default: return std::nullopt;
  }
}

bool is_fixed_size(std::uint32_t type) { return type != kString && type != kArray; }

struct GgmlType {
  std::uint64_t block = 0;       // elements per block; 0 for a retired or unknown id
  std::uint64_t block_bytes = 0;
};

// ggml_type ids 0..39; retired ids (Q4_2, Q4_3, the Q4_0_x_x and IQ4_NL_x_x repacks) have block 0,
// which ggml's loader rejects.
constexpr GgmlType kGgmlTypes[] = {
    {1, 4},     {1, 2},     {32, 18},   {32, 20},   {0, 0},     {0, 0},     {32, 22},   {32, 24},
    {32, 34},   {32, 36},   {256, 84},  {256, 110}, {256, 144}, {256, 176}, {256, 210}, {256, 292},
    {256, 66},  {256, 74},  {256, 98},  {256, 50},  {32, 18},   {256, 110}, {256, 82},  {256, 136},
    {1, 1},     {1, 2},     {1, 4},     {1, 8},     {1, 8},     {256, 56},  {1, 2},     {0, 0},
    {0, 0},     {0, 0},     {256, 54},  {256, 66},  {0, 0},     {0, 0},     {0, 0},     {32, 17},
};

std::optional<GgmlType> ggml_type(std::uint32_t id) {
  if (id >= std::size(kGgmlTypes) || kGgmlTypes[id].block == 0) return std::nullopt;
  return kGgmlTypes[id];
}

std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) {
  if (a != 0 && b > std::numeric_limits<std::uint64_t>::max() / a) return std::nullopt;
  return a * b;
}

std::optional<std::uint64_t> checked_add(std::uint64_t a, std::uint64_t b) {
  if (b > std::numeric_limits<std::uint64_t>::max() - a) return std::nullopt;
  return a + b;
}

std::optional<std::uint64_t> align_up(std::uint64_t value, std::uint64_t alignment) {
  const std::uint64_t rest = value % alignment;
  if (rest == 0) return value;
  return checked_add(value, alignment - rest);
}

class ProblemLog {
 public:
  explicit ProblemLog(std::vector<GgufProblem>& problems) : problems_(problems) {}
  void add(std::string kind, std::string detail, std::uint64_t offset) {
    if (problems_.size() < kMaxProblems) problems_.push_back({std::move(kind), std::move(detail), offset});
  }

 private:
  std::vector<GgufProblem>& problems_;
};

class Reader {
 public:
  explicit Reader(std::span<const std::uint8_t> data) : data_(data) {}
  std::uint64_t pos() const { return pos_; }
  std::uint64_t remaining() const { return data_.size() - pos_; }

  bool u32(std::uint32_t& out) {
    std::uint64_t wide = 0;
    if (!little_endian(4, wide)) return false;
    out = static_cast<std::uint32_t>(wide);
    return true;
  }
  bool u64(std::uint64_t& out) { return little_endian(8, out); }
  bool skip(std::uint64_t n) {
    if (n > remaining()) return false;
    pos_ += n;
    return true;
  }
  // The bytes of `n` past the current position; the caller has checked that they exist.
  std::string_view view(std::uint64_t n) {
    std::string_view out(reinterpret_cast<const char*>(data_.data() + pos_), static_cast<std::size_t>(n));
    pos_ += n;
    return out;
  }

 private:
  bool little_endian(int bytes, std::uint64_t& out) {
    if (remaining() < static_cast<std::uint64_t>(bytes)) return false;
    out = 0;
    for (int i = bytes - 1; i >= 0; --i) out = (out << 8) | data_[static_cast<std::size_t>(pos_) + static_cast<std::size_t>(i)];
    pos_ += static_cast<std::uint64_t>(bytes);
    return true;
  }

  std::span<const std::uint8_t> data_;
  std::uint64_t pos_ = 0;
};

class GgufParser {
 public:
  GgufParser(std::span<const std::uint8_t> data, GgufInfo& info) : reader_(data), info_(info), log_(info.problems) {}

  void run() {
    if (!read_header()) return;
    if (!read_metadata()) return;
    if (!read_tensor_infos()) return;
    check_data_section();
  }

 private:
  bool truncated(std::string_view what) {
    log_.add("truncated", "file ends inside " + std::string(what), reader_.pos());
    return false;
  }

  bool read_header() {
    std::uint32_t magic = 0;
    if (!reader_.u32(magic)) return truncated("the magic");
    if (magic != 0x46554747u) {  // "GGUF" read little-endian
      log_.add("magic", "file does not start with \"GGUF\"", 0);
      return false;
    }
    if (!reader_.u32(info_.version)) return truncated("the version");
    if (info_.version != 2 && info_.version != 3) {
      std::string detail = "GGUF version " + std::to_string(info_.version) + " is not supported (only 2 and 3)";
      if ((info_.version & 0xFFFFu) == 0 && info_.version != 0) detail += "; the file may be big-endian";
      if (info_.version == 1) detail += "; version 1 used 32-bit counts and lengths and is rejected by current loaders";
      log_.add("version", detail, 4);
      return false;
    }
    if (!reader_.u64(info_.tensor_count)) return truncated("the tensor count");
    if (!reader_.u64(info_.metadata_count)) return truncated("the metadata count");
    bool fits = true;
    if (info_.metadata_count > reader_.remaining() / kMinKvBytes) {
      log_.add("count", "metadata count " + std::to_string(info_.metadata_count) + " cannot fit in the " +
                            std::to_string(reader_.remaining()) + " bytes left",
               16);
      fits = false;
    }
    if (info_.tensor_count > reader_.remaining() / kMinTensorInfoBytes) {
      log_.add("count", "tensor count " + std::to_string(info_.tensor_count) + " cannot fit in the " +
                            std::to_string(reader_.remaining()) + " bytes left",
               8);
      fits = false;
    }
    return fits;
  }

  bool read_string(std::string_view& out, std::string_view what) {
    const std::uint64_t at = reader_.pos();
    std::uint64_t length = 0;
    if (!reader_.u64(length)) return truncated(what);
    if (length > reader_.remaining()) {
      log_.add("string", std::string(what) + " length " + std::to_string(length) + " runs past the end of the file", at);
      return false;
    }
    out = reader_.view(length);
    return true;
  }

  // Reads (and discards) one value; strings are returned through `text` when asked.
  bool read_value(std::uint32_t type, int depth, std::string_view key, std::string_view* text) {
    const std::uint64_t at = reader_.pos();
    if (type == kString) {
      std::string_view value;
      if (!read_string(value, "a string value")) return false;
      if (text) *text = value;
      return true;
    }
    if (type == kArray) {
      std::uint32_t element_type = 0;
      std::uint64_t count = 0;
      if (!reader_.u32(element_type) || !reader_.u64(count)) return truncated("an array header");
      const auto element_bytes = min_value_bytes(element_type);
      if (!element_bytes) {
        log_.add("array-type", "array '" + std::string(key) + "' has unknown element type " + std::to_string(element_type), at);
        return false;
      }
      if (element_type == kArray && depth + 1 > kMaxArrayDepth) {
        log_.add("array-depth", "array '" + std::string(key) + "' nests arrays deeper than " + std::to_string(kMaxArrayDepth), at);
        return false;
      }
      if (count > reader_.remaining() / *element_bytes) {
        log_.add("array-length", "array '" + std::string(key) + "' of " + std::to_string(count) + " elements runs past the end of the file", at);
        return false;
      }
      if (is_fixed_size(element_type)) return reader_.skip(count * *element_bytes);
      for (std::uint64_t i = 0; i < count; ++i) {
        if (!read_value(element_type, depth + 1, key, nullptr)) return false;
      }
      return true;
    }
    const auto bytes = min_value_bytes(type);
    if (!bytes) {
      log_.add("value-type", "key '" + std::string(key) + "' has unknown value type " + std::to_string(type), at);
      return false;
    }
    if (!reader_.skip(*bytes)) return truncated("a value");
    return true;
  }

  bool read_metadata() {
    std::set<std::string_view> keys;
    for (std::uint64_t i = 0; i < info_.metadata_count; ++i) {
      const std::uint64_t at = reader_.pos();
      std::string_view key;
      if (!read_string(key, "a metadata key")) return false;
      if (!keys.insert(key).second) log_.add("duplicate-key", "metadata key '" + std::string(key) + "' appears twice", at);
      std::uint32_t type = 0;
      if (!reader_.u32(type)) return truncated("a value type");
      if (key == "general.alignment") {
        if (type != kUint32) {
          log_.add("alignment", "general.alignment has value type " + std::to_string(type) + ", not uint32", at);
          if (!read_value(type, 1, key, nullptr)) return false;
          continue;
        }
        std::uint32_t alignment = 0;
        if (!reader_.u32(alignment)) return truncated("general.alignment");
        if (alignment == 0 || (alignment & (alignment - 1)) != 0) {
          log_.add("alignment", "general.alignment " + std::to_string(alignment) + " is not a power of two", at);
        } else {
          info_.alignment = alignment;
        }
        continue;
      }
      std::string_view text;
      const bool is_template = type == kString && key.find("chat_template") != std::string_view::npos;
      if (!read_value(type, 1, key, is_template ? &text : nullptr)) return false;
      if (is_template) info_.templates.push_back({std::string(key), std::string(text)});
    }
    return true;
  }

  bool read_tensor_infos() {
    if (info_.tensor_count > reader_.remaining() / kMinTensorInfoBytes) {
      log_.add("count", "tensor count " + std::to_string(info_.tensor_count) + " cannot fit in the " +
                            std::to_string(reader_.remaining()) + " bytes left after the metadata",
               reader_.pos());
      return false;
    }
    // Each GgufTensor is several times its smallest encoding: reserve a little, grow as read.
    const auto reserve = static_cast<std::size_t>(std::min<std::uint64_t>(info_.tensor_count, 4096));
    info_.tensors.reserve(reserve);
    sizes_.reserve(reserve);
    std::set<std::string_view> names;
    for (std::uint64_t i = 0; i < info_.tensor_count; ++i) {
      const std::uint64_t at = reader_.pos();
      std::string_view name;
      if (!read_string(name, "a tensor name")) return false;
      GgufTensor tensor;
      tensor.name = std::string(name);
      if (name.size() > kMaxTensorName) log_.add("tensor-name", "tensor name is longer than ggml's 63 bytes", at);
      if (!names.insert(name).second) log_.add("duplicate-tensor", "tensor '" + tensor.name + "' appears twice", at);
      if (!reader_.u32(tensor.n_dims)) return truncated("a tensor's n_dims");
      if (tensor.n_dims > kMaxDims) {
        log_.add("n-dims", "tensor '" + tensor.name + "' has " + std::to_string(tensor.n_dims) + " dimensions, more than " +
                               std::to_string(kMaxDims),
                 at);
        if (tensor.n_dims > reader_.remaining() / 8) return truncated("a tensor's dimensions");
      }
      std::optional<std::uint64_t> elements = 1;
      bool dims_ok = true;
      for (std::uint32_t d = 0; d < tensor.n_dims; ++d) {
        std::uint64_t dim = 0;
        if (!reader_.u64(dim)) return truncated("a tensor's dimensions");
        if (tensor.dims.size() < kMaxDims) tensor.dims.push_back(dim);
        // ggml holds dimensions and their product as int64.
        if (dim > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) dims_ok = false;
        if (elements) elements = checked_mul(*elements, dim);
        if (!elements || *elements > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) dims_ok = false;
      }
      if (!dims_ok) log_.add("dims", "tensor '" + tensor.name + "' has dimensions whose product overflows int64", at);
      if (!reader_.u32(tensor.type)) return truncated("a tensor's type");
      if (!reader_.u64(tensor.offset)) return truncated("a tensor's offset");

      std::optional<std::uint64_t> size;
      const auto type = ggml_type(tensor.type);
      if (!type) {
        log_.add("tensor-type", "tensor '" + tensor.name + "' has unknown ggml type " + std::to_string(tensor.type), at);
      } else if (dims_ok && tensor.n_dims <= kMaxDims) {
        const std::uint64_t row = tensor.dims.empty() ? 1 : tensor.dims[0];
        if (row % type->block != 0) {
          log_.add("dims", "tensor '" + tensor.name + "' has a first dimension of " + std::to_string(row) +
                               ", not a multiple of its type's block of " + std::to_string(type->block),
                   at);
        } else if (row != 0) {
          // bytes = elements / block * block_bytes, dividing first so the product stays exact.
          size = checked_mul(*elements / type->block, type->block_bytes);
          if (!size) log_.add("dims", "tensor '" + tensor.name + "' byte size overflows 64 bits", at);
        } else {
          size = 0;
        }
      }
      info_.tensors.push_back(std::move(tensor));
      sizes_.push_back(size);
    }
    return true;
  }

  void check_data_section() {
    const auto data_offset = align_up(reader_.pos(), info_.alignment);
    info_.data_offset = data_offset.value_or(0);
    const std::uint64_t file_size = reader_.pos() + reader_.remaining();
    const std::uint64_t data_size = data_offset && *data_offset <= file_size ? file_size - *data_offset : 0;

    struct Extent {
      std::uint64_t begin, end;
      std::size_t index;
    };
    std::vector<Extent> extents;
    extents.reserve(info_.tensors.size());
    std::uint64_t expected = 0;  // ggml places each tensor at the aligned end of the one before
    bool layout_known = true;
    for (std::size_t i = 0; i < info_.tensors.size(); ++i) {
      const GgufTensor& tensor = info_.tensors[i];
      if (tensor.offset % info_.alignment != 0) {
        log_.add("tensor-offset", "tensor '" + tensor.name + "' offset " + std::to_string(tensor.offset) +
                                      " is not a multiple of the alignment " + std::to_string(info_.alignment),
                 info_.data_offset);
      }
      if (!sizes_[i]) {
        layout_known = false;
        continue;
      }
      const auto end = checked_add(tensor.offset, *sizes_[i]);
      if (!end || *end > data_size) {
        log_.add("tensor-bounds", "tensor '" + tensor.name + "' data runs past the end of the file (" +
                                      std::to_string(data_size) + "-byte data section)",
                 info_.data_offset);
      }
      if (end) extents.push_back({tensor.offset, *end, i});
      if (layout_known && tensor.offset != expected) {
        log_.add("layout", "tensor '" + tensor.name + "' is at offset " + std::to_string(tensor.offset) +
                               "; ggml's loader expects " + std::to_string(expected),
                 info_.data_offset);
      }
      const auto next = end ? align_up(*end, info_.alignment) : std::nullopt;
      if (next) expected = *next;
      else layout_known = false;
    }
    std::sort(extents.begin(), extents.end(),
              [](const Extent& a, const Extent& b) { return a.begin != b.begin ? a.begin < b.begin : a.end < b.end; });
    std::uint64_t reach = 0;
    std::size_t reach_index = 0;
    bool any = false;
    for (const Extent& extent : extents) {
      if (extent.begin == extent.end) continue;
      if (any && extent.begin < reach) {
        log_.add("overlap", "tensor '" + info_.tensors[extent.index].name + "' overlaps tensor '" +
                                info_.tensors[reach_index].name + "'",
                 info_.data_offset);
      }
      if (!any || extent.end > reach) {
        reach = extent.end;
        reach_index = extent.index;
      }
      any = true;
    }
  }

  Reader reader_;
  GgufInfo& info_;
  ProblemLog log_;
  std::vector<std::optional<std::uint64_t>> sizes_;  // bytes of each tensor, when computable
};

// ---- Jinja review --------------------------------------------------------------------------

enum class TokenKind { kName, kString, kNumber, kOperator };

struct Token {
  TokenKind kind;
  std::string text;  // strings: the decoded value
  std::size_t offset;
};

bool is_name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool is_name_char(char c) { return is_name_start(c) || (c >= '0' && c <= '9'); }

// Reads a quoted literal starting at text[i] (the quote), decoding Python escapes as Jinja does,
// so that '\x5f\x5fclass\x5f\x5f' is seen as '__class__'. Returns the index past the closing quote.
std::size_t read_string_literal(std::string_view text, std::size_t i, std::string& out) {
  const char quote = text[i++];
  while (i < text.size() && text[i] != quote) {
    if (text[i] != '\\' || i + 1 >= text.size()) {
      out += text[i++];
      continue;
    }
    const char e = text[i + 1];
    i += 2;
    std::size_t digits = 0;
    if (e == 'x') digits = 2;
    else if (e == 'u') digits = 4;
    else if (e == 'U') digits = 8;
    if (digits) {
      std::uint32_t cp = 0;
      std::size_t n = 0;
      while (n < digits && i < text.size() && core::hex_digit_value(static_cast<unsigned char>(text[i])) >= 0) {
        cp = (cp << 4) | static_cast<std::uint32_t>(core::hex_digit_value(static_cast<unsigned char>(text[i++])));
        ++n;
      }
      core::append_utf8(out, std::min<std::uint32_t>(cp, 0x10FFFF));
    } else if (e >= '0' && e <= '7') {
      std::uint32_t cp = static_cast<std::uint32_t>(e - '0');
      for (int n = 0; n < 2 && i < text.size() && text[i] >= '0' && text[i] <= '7'; ++n) cp = cp * 8 + static_cast<std::uint32_t>(text[i++] - '0');
      core::append_utf8(out, cp);
    } else if (e == 'n') {
      out += '\n';
    } else if (e == 't') {
      out += '\t';
    } else if (e == 'r') {
      out += '\r';
    } else {
      out += e;
    }
  }
  return i < text.size() ? i + 1 : i;
}

struct Tag {
  bool statement = false;
  std::vector<Token> tokens;
};

// Tokenizes one {{ }} or {% %} block from `i` (past the opener) up to its closer, which, as in
// Jinja's lexer, only counts outside strings and outside open brackets.
std::size_t read_tag(std::string_view text, std::size_t i, bool statement, Tag& tag) {
  tag.statement = statement;
  const char closer = statement ? '%' : '}';
  int depth = 0;
  while (i < text.size()) {
    const char c = text[i];
    if (depth == 0 && c == closer && i + 1 < text.size() && text[i + 1] == '}') return i + 2;
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      ++i;
    } else if (c == '\'' || c == '"') {
      Token token{TokenKind::kString, {}, i};
      i = read_string_literal(text, i, token.text);
      tag.tokens.push_back(std::move(token));
    } else if (is_name_start(c)) {
      const std::size_t start = i;
      while (i < text.size() && is_name_char(text[i])) ++i;
      tag.tokens.push_back({TokenKind::kName, std::string(text.substr(start, i - start)), start});
    } else if (c >= '0' && c <= '9') {
      const std::size_t start = i;
      while (i < text.size() && (is_name_char(text[i]) || text[i] == '.')) ++i;
      tag.tokens.push_back({TokenKind::kNumber, std::string(text.substr(start, i - start)), start});
    } else {
      if (c == '(' || c == '[' || c == '{') ++depth;
      if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
      tag.tokens.push_back({TokenKind::kOperator, std::string(1, c), i});
      ++i;
    }
  }
  return i;
}

std::vector<Tag> read_tags(std::string_view text) {
  std::vector<Tag> tags;
  std::size_t i = 0;
  while (i + 1 < text.size()) {
    if (text[i] != '{') {
      ++i;
      continue;
    }
    const char next = text[i + 1];
    if (next == '#') {
      const std::size_t end = text.find("#}", i + 2);
      if (end == std::string_view::npos) break;
      i = end + 2;
    } else if (next == '{' || next == '%') {
      Tag tag;
      i = read_tag(text, i + 2, next == '%', tag);
      tags.push_back(std::move(tag));
    } else {
      ++i;
    }
  }
  return tags;
}

bool is_dunder(std::string_view s) {
  return s.size() > 4 && s.substr(0, 2) == "__" && s.substr(s.size() - 2) == "__";
}

// Whether `s` holds a __name__ anywhere, e.g. '.__class__' or 'a __globals__ b'.
bool contains_dunder(std::string_view s) {
  for (std::size_t p = s.find("__"); p != std::string_view::npos; p = s.find("__", p + 1)) {
    std::size_t q = p + 2;
    while (q < s.size() && is_name_char(s[q]) && s.compare(q, 2, "__") != 0) ++q;
    if (q > p + 2 && s.compare(q, 2, "__") == 0) return true;
  }
  return false;
}

bool is_one_of(std::string_view name, std::initializer_list<std::string_view> names) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

class TemplateReviewer {
 public:
  explicit TemplateReviewer(std::string_view text) : text_(text) {}

  std::vector<TemplateRisk> run() {
    for (const Tag& tag : read_tags(text_)) review(tag);
    return std::move(risks_);
  }

 private:
  void add(std::string kind, std::size_t offset, bool critical) {
    if (risks_.size() >= kMaxRisks) return;
    for (const TemplateRisk& risk : risks_) {
      if (risk.offset == offset && risk.kind == kind) return;
    }
    const std::size_t start = offset > 40 ? offset - 40 : 0;
    risks_.push_back({std::move(kind), std::string(text_.substr(start, 120)), offset, critical ? "critical" : "high"});
  }

  static bool is_op(const std::vector<Token>& t, std::size_t i, char c) {
    return i < t.size() && t[i].kind == TokenKind::kOperator && t[i].text[0] == c;
  }

  void review(const Tag& tag) {
    const std::vector<Token>& t = tag.tokens;
    // The first name of a statement is its keyword; skip whitespace control ('-', '+').
    std::size_t first = 0;
    while (first < t.size() && (is_op(t, first, '-') || is_op(t, first, '+'))) ++first;
    if (tag.statement && first < t.size() && t[first].kind == TokenKind::kName) {
      const std::string& keyword = t[first].text;
      if (keyword == "import" || keyword == "from") add("import", t[first].offset, true);
      if (keyword == "include" || keyword == "extends") add("include", t[first].offset, false);
    }
    review_strings(t);
    for (std::size_t i = 0; i < t.size(); ++i) {
      if (t[i].kind != TokenKind::kName) continue;
      const std::string& name = t[i].text;
      const bool after_dot = is_op(t, i - 1, '.') && i > 0;
      const bool chained = is_op(t, i + 1, '.') || is_op(t, i + 1, '[');
      if (is_dunder(name)) {
        add("dunder-attribute", t[i].offset, true);
      } else if (name.find("__") != std::string::npos) {
        add("private-attribute", t[i].offset, true);  // name-mangled, e.g. _TemplateReference__context
      } else if (after_dot && name[0] == '_') {
        add("private-attribute", t[i].offset, false);
      }
      if (!after_dot && chained && is_one_of(name, {"cycler", "joiner", "lipsum", "namespace", "self"})) {
        add("gadget-chain", t[i].offset, true);
      }
      if (!after_dot && is_one_of(name, {"request", "config"})) add("request-config", t[i].offset, false);
      // `ns.system` is a benign attribute; `.system(...)`, `os.x` and `.os` are not.
      const bool called = is_op(t, i + 1, '(');
      const bool risky_use = after_dot ? called || is_one_of(name, {"os", "subprocess", "builtins", "globals", "popen"})
                                       : called || chained;
      if (risky_use &&
          is_one_of(name, {"os", "subprocess", "eval", "exec", "popen", "system", "builtins", "globals", "getattr"})) {
        add("dangerous-name", t[i].offset, name == "globals" || name == "builtins");
      }
      if (name == "attr" && is_op(t, i - 1, '|') && i > 0) add("attr-filter", t[i].offset, false);
    }
  }

  // Joins literals concatenated with '~' or '+' (or adjacent, or in parentheses), so that
  // '__cla' ~ 'ss__' reads as '__class__', then grades the joined text.
  void review_strings(const std::vector<Token>& t) {
    std::size_t i = 0;
    while (i < t.size()) {
      if (t[i].kind != TokenKind::kString) {
        ++i;
        continue;
      }
      std::string joined = t[i].text;
      const std::size_t offset = t[i].offset;
      const bool in_subscript = is_op(t, i - 1, '[') && i > 0;
      std::size_t j = i + 1;
      while (true) {
        std::size_t k = j;
        while (is_op(t, k, ')')) ++k;
        if (is_op(t, k, '~') || is_op(t, k, '+')) ++k;
        while (is_op(t, k, '(')) ++k;
        if (k < t.size() && t[k].kind == TokenKind::kString) {
          joined += t[k].text;
          j = k + 1;
        } else {
          break;
        }
      }
      if (contains_dunder(joined)) add("dunder-string", offset, true);
      else if (joined.find("__") != std::string::npos) add("dunder-fragment", offset, false);
      if (in_subscript && is_one_of(joined, {"os", "subprocess", "eval", "exec", "popen", "system", "builtins",
                                             "globals", "getattr", "import"})) {
        add("dangerous-subscript", offset, joined == "globals" || joined == "builtins");
      }
      i = j;
    }
  }

  std::string_view text_;
  std::vector<TemplateRisk> risks_;
};

}  // namespace

bool looks_like_gguf(std::span<const std::uint8_t> data) {
  return data.size() >= 4 && data[0] == 'G' && data[1] == 'G' && data[2] == 'U' && data[3] == 'F';
}

GgufInfo validate_gguf(std::span<const std::uint8_t> data) {
  GgufInfo info;
  GgufParser(data, info).run();
  return info;
}

std::vector<TemplateRisk> review_jinja_template(std::string_view text) { return TemplateReviewer(text).run(); }

}  // namespace aegis::formats
