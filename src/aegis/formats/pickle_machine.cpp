// The pickle virtual machine: decodes every opcode of protocols 0-5 in one forward pass and
// simulates the loader's stack and memo with values, so that imports, calls and state writes are
// seen whatever indirection (memo, nesting, concatenation, joblib inline arrays) hides them.
#include "aegis/formats/pickle.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstring>
#include <exception>
#include <limits>
#include <memory>
#include <new>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <utility>

#include "aegis/core/python_repr.h"
#include "aegis/core/text.h"

namespace aegis::formats {
namespace {

// ---------------------------------------------------------------------------------------------
// Opcodes (names as in CPython's pickletools)

namespace op {
constexpr std::uint8_t kMark = '(';
constexpr std::uint8_t kStop = '.';
constexpr std::uint8_t kPop = '0';
constexpr std::uint8_t kPopMark = '1';
constexpr std::uint8_t kDup = '2';
constexpr std::uint8_t kFloat = 'F';
constexpr std::uint8_t kInt = 'I';
constexpr std::uint8_t kBinInt = 'J';
constexpr std::uint8_t kBinInt1 = 'K';
constexpr std::uint8_t kLong = 'L';
constexpr std::uint8_t kBinInt2 = 'M';
constexpr std::uint8_t kNone = 'N';
constexpr std::uint8_t kPersId = 'P';
constexpr std::uint8_t kBinPersId = 'Q';
constexpr std::uint8_t kReduce = 'R';
constexpr std::uint8_t kString = 'S';
constexpr std::uint8_t kBinString = 'T';
constexpr std::uint8_t kShortBinString = 'U';
constexpr std::uint8_t kUnicode = 'V';
constexpr std::uint8_t kBinUnicode = 'X';
constexpr std::uint8_t kAppend = 'a';
constexpr std::uint8_t kBuild = 'b';
constexpr std::uint8_t kGlobal = 'c';
constexpr std::uint8_t kDict = 'd';
constexpr std::uint8_t kEmptyDict = '}';
constexpr std::uint8_t kAppends = 'e';
constexpr std::uint8_t kGet = 'g';
constexpr std::uint8_t kBinGet = 'h';
constexpr std::uint8_t kInst = 'i';
constexpr std::uint8_t kLongBinGet = 'j';
constexpr std::uint8_t kList = 'l';
constexpr std::uint8_t kEmptyList = ']';
constexpr std::uint8_t kObj = 'o';
constexpr std::uint8_t kPut = 'p';
constexpr std::uint8_t kBinPut = 'q';
constexpr std::uint8_t kLongBinPut = 'r';
constexpr std::uint8_t kSetItem = 's';
constexpr std::uint8_t kTuple = 't';
constexpr std::uint8_t kEmptyTuple = ')';
constexpr std::uint8_t kSetItems = 'u';
constexpr std::uint8_t kBinFloat = 'G';
constexpr std::uint8_t kProto = 0x80;
constexpr std::uint8_t kNewObj = 0x81;
constexpr std::uint8_t kExt1 = 0x82;
constexpr std::uint8_t kExt2 = 0x83;
constexpr std::uint8_t kExt4 = 0x84;
constexpr std::uint8_t kTuple1 = 0x85;
constexpr std::uint8_t kTuple2 = 0x86;
constexpr std::uint8_t kTuple3 = 0x87;
constexpr std::uint8_t kNewTrue = 0x88;
constexpr std::uint8_t kNewFalse = 0x89;
constexpr std::uint8_t kLong1 = 0x8a;
constexpr std::uint8_t kLong4 = 0x8b;
constexpr std::uint8_t kBinBytes = 'B';
constexpr std::uint8_t kShortBinBytes = 'C';
constexpr std::uint8_t kShortBinUnicode = 0x8c;
constexpr std::uint8_t kBinUnicode8 = 0x8d;
constexpr std::uint8_t kBinBytes8 = 0x8e;
constexpr std::uint8_t kEmptySet = 0x8f;
constexpr std::uint8_t kAddItems = 0x90;
constexpr std::uint8_t kFrozenSet = 0x91;
constexpr std::uint8_t kNewObjEx = 0x92;
constexpr std::uint8_t kStackGlobal = 0x93;
constexpr std::uint8_t kMemoize = 0x94;
constexpr std::uint8_t kFrame = 0x95;
constexpr std::uint8_t kByteArray8 = 0x96;
constexpr std::uint8_t kNextBuffer = 0x97;
constexpr std::uint8_t kReadOnlyBuffer = 0x98;
}  // namespace op

constexpr std::array<const char*, 256> make_opcode_names() {
  std::array<const char*, 256> names{};
  names[op::kMark] = "MARK";
  names[op::kStop] = "STOP";
  names[op::kPop] = "POP";
  names[op::kPopMark] = "POP_MARK";
  names[op::kDup] = "DUP";
  names[op::kFloat] = "FLOAT";
  names[op::kInt] = "INT";
  names[op::kBinInt] = "BININT";
  names[op::kBinInt1] = "BININT1";
  names[op::kLong] = "LONG";
  names[op::kBinInt2] = "BININT2";
  names[op::kNone] = "NONE";
  names[op::kPersId] = "PERSID";
  names[op::kBinPersId] = "BINPERSID";
  names[op::kReduce] = "REDUCE";
  names[op::kString] = "STRING";
  names[op::kBinString] = "BINSTRING";
  names[op::kShortBinString] = "SHORT_BINSTRING";
  names[op::kUnicode] = "UNICODE";
  names[op::kBinUnicode] = "BINUNICODE";
  names[op::kAppend] = "APPEND";
  names[op::kBuild] = "BUILD";
  names[op::kGlobal] = "GLOBAL";
  names[op::kDict] = "DICT";
  names[op::kEmptyDict] = "EMPTY_DICT";
  names[op::kAppends] = "APPENDS";
  names[op::kGet] = "GET";
  names[op::kBinGet] = "BINGET";
  names[op::kInst] = "INST";
  names[op::kLongBinGet] = "LONG_BINGET";
  names[op::kList] = "LIST";
  names[op::kEmptyList] = "EMPTY_LIST";
  names[op::kObj] = "OBJ";
  names[op::kPut] = "PUT";
  names[op::kBinPut] = "BINPUT";
  names[op::kLongBinPut] = "LONG_BINPUT";
  names[op::kSetItem] = "SETITEM";
  names[op::kTuple] = "TUPLE";
  names[op::kEmptyTuple] = "EMPTY_TUPLE";
  names[op::kSetItems] = "SETITEMS";
  names[op::kBinFloat] = "BINFLOAT";
  names[op::kProto] = "PROTO";
  names[op::kNewObj] = "NEWOBJ";
  names[op::kExt1] = "EXT1";
  names[op::kExt2] = "EXT2";
  names[op::kExt4] = "EXT4";
  names[op::kTuple1] = "TUPLE1";
  names[op::kTuple2] = "TUPLE2";
  names[op::kTuple3] = "TUPLE3";
  names[op::kNewTrue] = "NEWTRUE";
  names[op::kNewFalse] = "NEWFALSE";
  names[op::kLong1] = "LONG1";
  names[op::kLong4] = "LONG4";
  names[op::kBinBytes] = "BINBYTES";
  names[op::kShortBinBytes] = "SHORT_BINBYTES";
  names[op::kShortBinUnicode] = "SHORT_BINUNICODE";
  names[op::kBinUnicode8] = "BINUNICODE8";
  names[op::kBinBytes8] = "BINBYTES8";
  names[op::kEmptySet] = "EMPTY_SET";
  names[op::kAddItems] = "ADDITEMS";
  names[op::kFrozenSet] = "FROZENSET";
  names[op::kNewObjEx] = "NEWOBJ_EX";
  names[op::kStackGlobal] = "STACK_GLOBAL";
  names[op::kMemoize] = "MEMOIZE";
  names[op::kFrame] = "FRAME";
  names[op::kByteArray8] = "BYTEARRAY8";
  names[op::kNextBuffer] = "NEXT_BUFFER";
  names[op::kReadOnlyBuffer] = "READONLY_BUFFER";
  return names;
}
constexpr std::array<const char*, 256> kOpcodeNames = make_opcode_names();

bool is_opcode(std::uint8_t code) { return kOpcodeNames[code] != nullptr; }

// ---------------------------------------------------------------------------------------------
// Limits of our own, beyond PickleLimits

constexpr std::size_t kNameKept = 4096;              // module/name bytes kept whole
constexpr std::size_t kReprLimit = 200;              // characters of evidence per argument repr
constexpr std::size_t kReprDepth = 4;                // container nesting shown in a repr
constexpr std::size_t kMinItemsKept = 8;             // a joblib array wrapper's state has 6 keys
constexpr std::uint64_t kMaxDecodedEmbedded = 64ull << 20;
constexpr std::size_t kNestedDepthCeiling = 16;      // whatever the caller asks, the C++ stack is finite
constexpr std::uint64_t kSniffOpcodes = 16;
constexpr std::size_t kMinEmbeddedRaw = 8;           // the smallest pickle that imports anything is longer
constexpr std::size_t kMinEmbeddedHex = 16;
constexpr std::size_t kMinEmbeddedBase64 = 12;

// ---------------------------------------------------------------------------------------------
// Values: 16-byte handles. Scalars and strings that are views into the input live in the handle;
// containers, globals, call results and decoded strings live in refcounted nodes from pools.

enum class Kind : std::uint8_t {
  kUnset,       // a memo slot never written (the zero Value)
  kNone,
  kBool,
  kInt,
  kBigInt,      // view of LONG1/LONG4 bytes, or of decimal text (kDecimalText)
  kFloat,
  kStr,
  kBytes,
  kByteArray,
  kPersistent,  // result of persistent_load; may carry a view of a storage key
  kBuffer,      // out-of-band buffer (protocol 5)
  kTuple,
  kList,
  kDict,
  kSet,
  kFrozenSet,
  kGlobal,
  kObject,      // what a call (REDUCE, NEWOBJ, OBJ, INST) returned
};

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::kUnset: return "nothing";
    case Kind::kNone: return "None";
    case Kind::kBool: return "bool";
    case Kind::kInt:
    case Kind::kBigInt: return "int";
    case Kind::kFloat: return "float";
    case Kind::kStr: return "str";
    case Kind::kBytes: return "bytes";
    case Kind::kByteArray: return "bytearray";
    case Kind::kPersistent: return "persistent object";
    case Kind::kBuffer: return "buffer";
    case Kind::kTuple: return "tuple";
    case Kind::kList: return "list";
    case Kind::kDict: return "dict";
    case Kind::kSet: return "set";
    case Kind::kFrozenSet: return "frozenset";
    case Kind::kGlobal: return "global";
    case Kind::kObject: return "call result";
  }
  return "value";
}

// Value flags
constexpr std::uint8_t kNodeBacked = 1;    // `node` is valid and counted
constexpr std::uint8_t kClipped = 2;       // a view longer than 4 GiB, shortened
constexpr std::uint8_t kDecimalText = 4;   // kBigInt: the view is decimal text

// Node flags
constexpr std::uint8_t kPlain = 1;         // container made by EMPTY_*/LIST/DICT/TUPLE/FROZENSET opcodes

struct Node {
  std::uint32_t refs = 1;
  Kind kind = Kind::kNone;
  std::uint8_t flags = 0;
  std::uint8_t opcode = 0;
  std::uint8_t spare = 0;
};

struct Value {  // trivial on purpose: copied freely, counted by hand
  Kind kind;
  std::uint8_t flags;
  std::uint32_t size;  // bytes in a view
  union {
    std::int64_t integer;
    double real;
    const std::uint8_t* view;
    Node* node;
  };
};
static_assert(std::is_trivially_copyable_v<Value> && sizeof(Value) == 16);

Value make_scalar(Kind kind, std::int64_t integer = 0) {
  Value v{};
  v.kind = kind;
  v.integer = integer;
  return v;
}
Value make_float(double real) {
  Value v{};
  v.kind = Kind::kFloat;
  v.real = real;
  return v;
}
Value make_view(Kind kind, const std::uint8_t* data, std::uint64_t size, std::uint8_t flags = 0) {
  Value v{};
  v.kind = kind;
  v.flags = flags;
  v.view = data;
  if (size > std::numeric_limits<std::uint32_t>::max()) {
    v.size = std::numeric_limits<std::uint32_t>::max();
    v.flags |= kClipped;
  } else {
    v.size = static_cast<std::uint32_t>(size);
  }
  return v;
}
Value make_node_value(Kind kind, Node* node) {
  Value v{};
  v.kind = kind;
  v.flags = kNodeBacked;
  v.node = node;
  return v;
}

// Items kept for evidence; most tuples hold one to three items, so two live inline.
class ItemList {
 public:
  ItemList() : inline_{} {}
  ~ItemList() {
    if (capacity_ > kInline) delete[] heap_;
  }
  ItemList(const ItemList&) = delete;
  ItemList& operator=(const ItemList&) = delete;

  std::uint32_t size() const { return size_; }
  Value* data() { return capacity_ > kInline ? heap_ : inline_; }
  const Value* data() const { return capacity_ > kInline ? heap_ : inline_; }
  const Value& operator[](std::size_t i) const { return data()[i]; }

  void push(Value v) {
    if (size_ == capacity_) grow();
    data()[size_++] = v;
  }

 private:
  static constexpr std::uint32_t kInline = 2;
  void grow() {
    const std::uint32_t capacity = capacity_ * 2;
    Value* bigger = new Value[capacity];
    std::copy(data(), data() + size_, bigger);
    if (capacity_ > kInline) delete[] heap_;
    heap_ = bigger;
    capacity_ = capacity;
  }
  std::uint32_t size_ = 0;
  std::uint32_t capacity_ = kInline;
  union {
    Value inline_[kInline];
    Value* heap_;
  };
};

struct ContainerNode : Node {
  std::uint64_t count = 0;  // exact number of items (pairs for dicts)
  ItemList items;           // dicts keep key, value, key, value...
};

struct TextNode : Node {  // a str/bytes decoded from protocol-0 escapes
  std::string text;
};

struct GlobalNode : Node {
  std::string module;
  std::string name;
  bool resolved = true;
  std::string label;  // what to show when unresolved, e.g. "<EXT2 code 300>"
};

struct ObjectNode : Node {
  Value callee;  // the callable or class
  Value args;
  Value kwargs;  // NEWOBJ_EX only
  Value state;   // from BUILD
  const GlobalNode* root = nullptr;  // import behind the callee chain; alive through `callee`
};

// Fixed-size slots with a free list, so that opcode-dense streams do not pay malloc per value
// and cycles made through the memo are reclaimed when the machine goes away.
template <class T>
class NodePool {
  struct FreeSlot : Node {
    FreeSlot* next = nullptr;
  };
  union Slot {
    Slot() : free{} {}
    ~Slot() {}
    FreeSlot free;
    T live;
  };
  static constexpr std::size_t kFirstChunk = 64;
  static constexpr std::size_t kLargestChunk = 16384;
  static_assert(sizeof(T) >= sizeof(FreeSlot));

 public:
  NodePool() = default;
  NodePool(const NodePool&) = delete;
  NodePool& operator=(const NodePool&) = delete;
  ~NodePool() {
    for (auto& [chunk, slots] : chunks_) {
      for (std::size_t i = 0; i < slots; ++i) {
        Node* head = std::launder(reinterpret_cast<Node*>(&chunk[i]));
        if (head->refs != 0) {
          chunk[i].live.~T();
        } else {
          chunk[i].free.~FreeSlot();
        }
      }
    }
  }

  T* make() {
    if (free_ == nullptr) add_chunk();
    FreeSlot* slot = free_;
    free_ = slot->next;
    Slot* raw = reinterpret_cast<Slot*>(slot);
    raw->free.~FreeSlot();
    T* node = new (&raw->live) T();
    return node;
  }

  void recycle(T* node) {
    Slot* raw = reinterpret_cast<Slot*>(node);
    node->~T();
    FreeSlot* slot = new (&raw->free) FreeSlot();
    slot->refs = 0;
    slot->next = free_;
    free_ = slot;
  }

 private:
  void add_chunk() {
    // small analyses stay small; big ones pay few allocations
    const std::size_t slots = chunks_.empty() ? kFirstChunk : std::min(chunks_.back().second * 2, kLargestChunk);
    chunks_.emplace_back(std::make_unique<Slot[]>(slots), slots);
    Slot* chunk = chunks_.back().first.get();
    for (std::size_t i = slots; i-- > 0;) {
      chunk[i].free.refs = 0;
      chunk[i].free.next = free_;
      free_ = &chunk[i].free;
    }
  }
  std::vector<std::pair<std::unique_ptr<Slot[]>, std::size_t>> chunks_;
  FreeSlot* free_ = nullptr;
};

const ContainerNode& as_container(const Value& v) { return *static_cast<const ContainerNode*>(v.node); }
ContainerNode& as_container(Value& v) { return *static_cast<ContainerNode*>(v.node); }
const GlobalNode& as_global(const Value& v) { return *static_cast<const GlobalNode*>(v.node); }
const ObjectNode& as_object(const Value& v) { return *static_cast<const ObjectNode*>(v.node); }
ObjectNode& as_object(Value& v) { return *static_cast<ObjectNode*>(v.node); }

bool is_container(Kind kind) { return kind >= Kind::kTuple && kind <= Kind::kFrozenSet; }

std::string_view text_of(const Value& v) {
  if (v.flags & kNodeBacked) return static_cast<const TextNode*>(v.node)->text;
  return {reinterpret_cast<const char*>(v.view), v.size};
}
bool is_str(const Value& v, std::string_view expected) { return v.kind == Kind::kStr && text_of(v) == expected; }

// ---------------------------------------------------------------------------------------------
// Text helpers: everything written into the report is valid UTF-8 whatever the input held.


std::string printable(std::string_view raw) {
  std::string out;
  core::append_python_escaped(out, raw, 0, false, std::numeric_limits<std::size_t>::max());
  return out;
}

// ---------------------------------------------------------------------------------------------
// Parsing protocol-0 text arguments, as leniently as CPython's loader (never stricter: a parse
// the loader accepts and we refuse would hide everything after it).

std::string_view trim(std::string_view s) {
  auto space = [](char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v'; };
  while (!s.empty() && space(s.front())) s.remove_prefix(1);
  while (!s.empty() && space(s.back())) s.remove_suffix(1);
  return s;
}

enum class ParsedInt { kSmall, kBig, kBad };

// Python int literal text: sign, optional 0x/0o/0b prefix, digits with single underscores.
ParsedInt parse_int_text(std::string_view text, std::int64_t& value) {
  std::string_view s = trim(text);
  bool negative = false;
  if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
    negative = s.front() == '-';
    s.remove_prefix(1);
  }
  unsigned base = 10;
  if (s.size() > 2 && s[0] == '0') {
    const char p = static_cast<char>(s[1] | 0x20);
    if (p == 'x') base = 16;
    if (p == 'o') base = 8;
    if (p == 'b') base = 2;
    if (base != 10) {
      s.remove_prefix(2);
      if (!s.empty() && s.front() == '_') s.remove_prefix(1);
    }
  }
  if (s.empty()) return ParsedInt::kBad;
  unsigned __int128 magnitude = 0;
  bool big = false;
  bool previous_underscore = true;  // no leading underscore
  for (char c : s) {
    if (c == '_') {
      if (previous_underscore) return ParsedInt::kBad;
      previous_underscore = true;
      continue;
    }
    previous_underscore = false;
    unsigned digit = 0;
    if (c >= '0' && c <= '9') {
      digit = static_cast<unsigned>(c - '0');
    } else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f') {
      digit = static_cast<unsigned>((c | 0x20) - 'a' + 10);
    } else {
      return ParsedInt::kBad;
    }
    if (digit >= base) return ParsedInt::kBad;
    if (!big) {
      magnitude = magnitude * base + digit;
      if (magnitude > (static_cast<unsigned __int128>(1) << 63)) big = true;
    }
  }
  if (previous_underscore) return ParsedInt::kBad;
  if (big) return ParsedInt::kBig;
  if (!negative && magnitude > static_cast<unsigned __int128>(std::numeric_limits<std::int64_t>::max())) {
    return ParsedInt::kBig;
  }
  value = negative ? static_cast<std::int64_t>(-static_cast<__int128>(magnitude)) : static_cast<std::int64_t>(magnitude);
  return ParsedInt::kSmall;
}

bool parse_float_text(std::string_view text, double& value) {
  std::string_view s = trim(text);
  if (!s.empty() && s.front() == '+') s.remove_prefix(1);
  if (s.empty()) return false;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), value);
  if (ec == std::errc::result_out_of_range) {
    value = 0.0;  // CPython raises; the loader would stop here too, but the value does not matter
    return end == s.data() + s.size();
  }
  return ec == std::errc() && end == s.data() + s.size();
}

// Python's bytes escape decoding (codecs.escape_decode), as used by the STRING opcode.
bool decode_string_escape(std::string_view in, std::string& out, std::string& error) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    const char c = in[i];
    if (c != '\\') {
      out += c;
      continue;
    }
    if (++i >= in.size()) {
      error = "trailing \\ in string";
      return false;
    }
    const char e = in[i];
    switch (e) {
      case '\n': break;
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 't': out += '\t'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 'v': out += '\v'; break;
      case 'a': out += '\a'; break;
      case 'x': {
        if (i + 2 >= in.size()) {
          error = "invalid \\x escape";
          return false;
        }
        const int hi = core::hex_digit_value(static_cast<std::uint8_t>(in[i + 1]));
        const int lo = core::hex_digit_value(static_cast<std::uint8_t>(in[i + 2]));
        if (hi < 0 || lo < 0) {
          error = "invalid \\x escape";
          return false;
        }
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        break;
      }
      default:
        if (e >= '0' && e <= '7') {
          int v = e - '0';
          for (int k = 0; k < 2 && i + 1 < in.size() && in[i + 1] >= '0' && in[i + 1] <= '7'; ++k) {
            v = v * 8 + (in[++i] - '0');
          }
          out += static_cast<char>(v & 0xFF);
        } else {
          out += '\\';  // unknown escapes stay as they are
          out += e;
        }
    }
  }
  return true;
}

// raw-unicode-escape, as used by the UNICODE opcode: latin-1 bytes plus \uXXXX and \UXXXXXXXX
// where the backslash run before the u is odd.
bool decode_raw_unicode_escape(std::string_view in, std::string& out, std::string& error) {
  out.clear();
  out.reserve(in.size());
  for (std::size_t i = 0; i < in.size();) {
    const auto c = static_cast<std::uint8_t>(in[i]);
    if (c != '\\') {
      core::append_utf8(out, c);
      ++i;
      continue;
    }
    std::size_t run = 0;
    while (i + run < in.size() && in[i + run] == '\\') ++run;
    const std::size_t after = i + run;
    const bool escape = (run % 2 == 1) && after < in.size() && (in[after] == 'u' || in[after] == 'U');
    const std::size_t literal = escape ? run - 1 : run;
    out.append(literal, '\\');
    i += literal;
    if (!escape) continue;
    const std::size_t digits = in[after] == 'u' ? 4 : 8;
    if (after + digits >= in.size()) {
      error = "truncated \\uXXXX escape";
      return false;
    }
    std::uint32_t cp = 0;
    for (std::size_t k = 1; k <= digits; ++k) {
      const int h = core::hex_digit_value(static_cast<std::uint8_t>(in[after + k]));
      if (h < 0) {
        error = "truncated \\uXXXX escape";
        return false;
      }
      cp = cp * 16 + static_cast<std::uint32_t>(h);
    }
    if (cp > 0x10FFFF) {
      error = "\\Uxxxxxxxx out of range";
      return false;
    }
    core::append_utf8(out, cp);  // lone surrogates pass through; the report escapes them
    i = after + 1 + digits;
  }
  return true;
}

bool needs_raw_unicode_decoding(std::string_view in) {
  for (char c : in) {
    if (c == '\\' || static_cast<std::uint8_t>(c) >= 0x80) return true;
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Embedded encodings

int base64_value(std::uint8_t c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

// Decodes as Python's b64decode does by default: characters outside the alphabet are skipped,
// '=' ends the data. Stops after `cap` output bytes.
template <class Output>
void decode_base64(std::string_view in, std::uint64_t cap, Output& out) {
  std::uint32_t acc = 0;
  int bits = 0;
  for (char ch : in) {
    const auto c = static_cast<std::uint8_t>(ch);
    if (c == '=') break;
    const int v = base64_value(c);
    if (v < 0) continue;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<std::uint8_t>(acc >> bits));
      acc &= (1u << bits) - 1;
      if (out.size() >= cap) break;
    }
  }
}

// A few decoded bytes on the stack, for the checks made before decoding a whole string.
struct SmallBuffer {
  std::array<std::uint8_t, 256> bytes{};
  std::size_t count = 0;
  void push_back(std::uint8_t b) { bytes[count++] = b; }
  std::size_t size() const { return count; }
  std::span<const std::uint8_t> view() const { return {bytes.data(), count}; }
};

// First bytes that can open a pickle; the gate before any decoding work is spent.
bool plausible_first_byte(std::uint8_t b) {
  switch (b) {
    case op::kProto:
    case op::kMark:
    case op::kGlobal:
    case op::kEmptyDict:
    case op::kEmptyList:
    case op::kEmptyTuple:
    case op::kNone:
    case op::kInt:
    case op::kLong:
    case op::kFloat:
    case op::kString:
    case op::kUnicode:
    case op::kBinInt:
    case op::kBinInt1:
    case op::kBinInt2:
    case op::kBinFloat:
    case op::kBinUnicode:
    case op::kShortBinString:
    case op::kBinString:
    case op::kPersId:
      return true;
    default:
      return false;
  }
}

bool name_byte(std::uint8_t c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
         c >= 0x80;
}

// "module\nname\n" made of identifier characters, as GLOBAL writes it.
bool global_shape(std::span<const std::uint8_t> rest) {
  std::size_t i = 0;
  for (int line = 0; line < 2; ++line) {
    const std::size_t start = i;
    while (i < rest.size() && i - start <= 256 && name_byte(rest[i])) ++i;
    if (i == start || i >= rest.size() || rest[i] != '\n') return false;
    ++i;
  }
  return true;
}

bool hex_decoded_prefix_plausible(std::string_view s) {
  const int a = core::hex_digit_value(static_cast<std::uint8_t>(s[0]));
  const int b = core::hex_digit_value(static_cast<std::uint8_t>(s[1]));
  const int c = core::hex_digit_value(static_cast<std::uint8_t>(s[2]));
  const int d = core::hex_digit_value(static_cast<std::uint8_t>(s[3]));
  if (a < 0 || b < 0 || c < 0 || d < 0) return false;
  const auto first = static_cast<std::uint8_t>(a * 16 + b);
  const auto second = static_cast<std::uint8_t>(c * 16 + d);
  if (first == op::kProto) return second <= 5;
  return plausible_first_byte(first);
}

// ---------------------------------------------------------------------------------------------
// numpy dtype as pickled: REDUCE numpy.dtype ('f8', False, True) + BUILD (3, '<', None, None, None,
// elsize, alignment, flags). joblib needs the item size and whether the dtype holds objects.

struct DtypeFacts {
  std::uint64_t itemsize = 0;
  bool has_object = false;
  bool known = false;
};

bool is_numpy_dtype_class(const GlobalNode* g) {
  if (g == nullptr || !g->resolved || g->name != "dtype") return false;
  return g->module == "numpy" || g->module.starts_with("numpy.");
}

// ---------------------------------------------------------------------------------------------
// The machine

class PickleMachine {
 public:
  struct Settings {
    std::size_t nested_depth = 0;
    std::uint64_t base_offset = 0;
    std::size_t max_pickles = 0;
    bool sniff_only = false;         // no records, no embedded analysis: looks_like_pickle's dry run
    bool joblib_arrays = true;       // skip joblib's inline array bytes after a wrapper's BUILD
    std::uint64_t opcode_budget = 0; // 0: unlimited
  };
  enum class Failure : std::uint8_t { kNone, kTruncated, kInvalid, kBudget };

  PickleMachine(std::span<const std::uint8_t> data, const PickleLimits& limits, PickleReport& report,
                Settings settings)
      : data_(data.data()),
        size_(data.size()),
        limits_(limits),
        report_(report),
        settings_(settings),
        items_kept_(std::max(limits.max_container_items_kept, kMinItemsKept)),
        stack_limit_(limits.max_stack_depth) {}

  PickleMachine(const PickleMachine&) = delete;
  PickleMachine& operator=(const PickleMachine&) = delete;

  void run();

  Failure failure() const { return failure_; }
  std::uint64_t opcodes_completed() const { return completed_; }
  bool reached_stop() const { return report_.pickles > 0; }

 private:
  enum class Outcome { kStop, kHalt };

  Outcome run_one_pickle();
  bool step(std::uint8_t code);

  // --- failure
  bool fail(Failure kind, std::string message) {
    failure_ = kind;
    if (!report_.malformed) {
      report_.malformed = std::move(message);
      report_.malformed_offset = settings_.base_offset + op_offset_;
    }
    return false;
  }
  bool truncated(const std::string& what) {
    return fail(Failure::kTruncated, std::string("truncated ") + opname() + ": " + what);
  }
  bool invalid(const std::string& what) { return fail(Failure::kInvalid, std::string(opname()) + ": " + what); }
  const char* opname() const { return kOpcodeNames[code_] ? kOpcodeNames[code_] : "opcode"; }

  // --- reading arguments
  std::uint64_t remaining() const { return size_ - pos_; }
  bool read_fixed(std::size_t n, const std::uint8_t*& p) {
    if (remaining() < n) {
      return truncated("needs " + std::to_string(n) + " argument bytes, " + std::to_string(remaining()) + " left");
    }
    p = data_ + pos_;
    pos_ += n;
    return true;
  }
  bool read_u8(std::uint64_t& v) {
    const std::uint8_t* p;
    if (!read_fixed(1, p)) return false;
    v = p[0];
    return true;
  }
  template <std::size_t N>
  bool read_le(std::uint64_t& v) {
    const std::uint8_t* p;
    if (!read_fixed(N, p)) return false;
    v = 0;
    for (std::size_t i = N; i-- > 0;) v = (v << 8) | p[i];
    return true;
  }
  bool read_line(std::string_view& line) {
    // A dry run must stay cheap on a gigabyte of text without a newline.
    const std::uint64_t window = settings_.sniff_only ? std::min<std::uint64_t>(remaining(), 4096) : remaining();
    const void* nl = std::memchr(data_ + pos_, '\n', window);
    if (nl == nullptr && window < remaining()) return invalid("text argument longer than 4096 bytes");
    if (nl == nullptr) return truncated("text argument has no end of line");
    const auto* end = static_cast<const std::uint8_t*>(nl);
    line = {reinterpret_cast<const char*>(data_ + pos_), static_cast<std::size_t>(end - (data_ + pos_))};
    pos_ = static_cast<std::uint64_t>(end - data_) + 1;
    return true;
  }
  bool read_payload(std::uint64_t length, const std::uint8_t*& p) {
    if (length > remaining()) {
      return truncated("declares " + std::to_string(length) + " bytes, " + std::to_string(remaining()) + " left");
    }
    p = data_ + pos_;
    pos_ += length;  // big payloads are skipped, never copied
    return true;
  }

  // --- values and their lifetime
  void retain(const Value& v) {
    if (v.flags & kNodeBacked) ++v.node->refs;
  }
  void release(const Value& v) {
    if (!(v.flags & kNodeBacked) || --v.node->refs != 0) return;
    doomed_.push_back(v.node);
    while (!doomed_.empty()) {  // a worklist, so that a million nested lists do not recurse
      Node* node = doomed_.back();
      doomed_.pop_back();
      destroy(node);
    }
  }
  void drop_child(const Value& v) {
    if ((v.flags & kNodeBacked) && --v.node->refs == 0) doomed_.push_back(v.node);
  }
  void destroy(Node* node) {
    switch (node->kind) {
      case Kind::kTuple:
      case Kind::kList:
      case Kind::kDict:
      case Kind::kSet:
      case Kind::kFrozenSet: {
        auto* c = static_cast<ContainerNode*>(node);
        for (std::uint32_t i = 0; i < c->items.size(); ++i) drop_child(c->items[i]);
        containers_.recycle(c);
        break;
      }
      case Kind::kObject: {
        auto* o = static_cast<ObjectNode*>(node);
        drop_child(o->callee);
        drop_child(o->args);
        drop_child(o->kwargs);
        drop_child(o->state);
        objects_.recycle(o);
        break;
      }
      case Kind::kGlobal:
        globals_.recycle(static_cast<GlobalNode*>(node));
        break;
      default:
        texts_.recycle(static_cast<TextNode*>(node));
        break;
    }
  }

  bool push(Value v) {
    if (stack_.size() + marks_.size() >= stack_limit_) {
      release(v);
      return invalid("stack depth limit of " + std::to_string(limits_.max_stack_depth) + " exceeded");
    }
    stack_.push_back(v);
    return true;
  }
  std::size_t fence() const { return marks_.empty() ? 0 : marks_.back(); }
  bool pop(Value& v) {
    if (stack_.size() <= fence()) {
      return invalid(stack_.empty() ? "stack underflow" : "stack underflow (would pop below a MARK)");
    }
    v = stack_.back();
    stack_.pop_back();
    return true;
  }
  bool top(Value*& v) {
    if (stack_.size() <= fence()) return invalid("stack underflow");
    v = &stack_.back();
    return true;
  }
  bool take_mark(std::size_t& start) {
    if (marks_.empty()) return invalid("could not find MARK");
    start = marks_.back();
    marks_.pop_back();
    return true;
  }
  void clear_stack_from(std::size_t start) {
    for (std::size_t i = start; i < stack_.size(); ++i) release(stack_[i]);
    stack_.resize(start);
  }

  Value new_container(Kind kind, std::uint8_t flags) {
    ContainerNode* c = containers_.make();
    c->kind = kind;
    c->flags = flags;
    return make_node_value(kind, c);
  }
  // Adds an owned value to a container, keeping it for evidence or letting it go.
  void container_add(ContainerNode& c, Value v) {
    const std::size_t keep = c.kind == Kind::kDict ? items_kept_ * 2 : items_kept_;
    if (c.items.size() < keep) {
      c.items.push(v);
    } else {
      release(v);
    }
  }
  // Builds a container from the stack items [start, end) and truncates the stack to start.
  Value container_from_stack(Kind kind, std::size_t start) {
    Value v = new_container(kind, kPlain);
    ContainerNode& c = as_container(v);
    const std::size_t n = stack_.size() - start;
    c.count = kind == Kind::kDict ? n / 2 : n;
    for (std::size_t i = start; i < stack_.size(); ++i) container_add(c, stack_[i]);
    stack_.resize(start);
    return v;
  }
  Value make_text(Kind kind, std::string text) {
    TextNode* t = texts_.make();
    t->kind = kind;
    t->text = std::move(text);
    return make_node_value(kind, t);
  }
  Value make_global(std::string module, std::string name) {
    GlobalNode* g = globals_.make();
    g->kind = Kind::kGlobal;
    g->module = std::move(module);
    g->name = std::move(name);
    return make_node_value(Kind::kGlobal, g);
  }
  Value make_unresolved(std::string label) {
    GlobalNode* g = globals_.make();
    g->kind = Kind::kGlobal;
    g->resolved = false;
    g->label = std::move(label);
    return make_node_value(Kind::kGlobal, g);
  }
  // Owns callee/args/kwargs.
  Value make_object(Value callee, Value args, Value kwargs) {
    ObjectNode* o = objects_.make();
    o->kind = Kind::kObject;
    o->opcode = code_;
    o->callee = callee;
    o->args = args;
    o->kwargs = kwargs;
    o->root = root_of(callee);
    return make_node_value(Kind::kObject, o);
  }
  static const GlobalNode* root_of(const Value& v) {
    if (v.kind == Kind::kGlobal) return &as_global(v);
    if (v.kind == Kind::kObject) return as_object(v).root;
    return nullptr;
  }
  // The class behind an instance: NEWOBJ/OBJ/INST name it directly, copyreg reconstructors
  // carry it as their first argument.
  static const GlobalNode* class_of(const ObjectNode& o) {
    if (o.callee.kind != Kind::kGlobal) return nullptr;
    const GlobalNode& callee = as_global(o.callee);
    if (o.opcode == op::kReduce && callee.resolved &&
        (callee.module == "copyreg" || callee.module == "copy_reg") &&
        (callee.name == "_reconstructor" || callee.name == "__newobj__" || callee.name == "__newobj_ex__")) {
      if (o.args.kind != Kind::kTuple) return nullptr;
      const ContainerNode& args = as_container(o.args);
      if (args.items.size() == 0 || args.items[0].kind != Kind::kGlobal) return nullptr;
      return &as_global(args.items[0]);
    }
    return &callee;
  }

  // --- memo
  // The memo is dense in practice (MEMOIZE numbers entries in order): fixed-size blocks grow it
  // without copying; indices far beyond what is filled go to a hash map.
  static constexpr std::size_t kMemoBlockBits = 10;
  static constexpr std::size_t kMemoBlock = std::size_t{1} << kMemoBlockBits;
  Value* dense_memo_slot(std::uint64_t index) {
    const std::size_t block = static_cast<std::size_t>(index >> kMemoBlockBits);
    if (block >= memo_blocks_.size()) return nullptr;
    return &memo_blocks_[block][index & (kMemoBlock - 1)];
  }
  bool memo_put(std::uint64_t index, const Value& v) {
    if (index >= limits_.max_memo_entries) {
      return invalid("memo index " + std::to_string(index) + " beyond the limit of " +
                     std::to_string(limits_.max_memo_entries));
    }
    Value* slot = dense_memo_slot(index);
    if (slot == nullptr && index <= memo_count_ * 2 + kMemoBlock) {
      while (memo_blocks_.size() <= (index >> kMemoBlockBits)) {
        memo_blocks_.push_back(std::make_unique<Value[]>(kMemoBlock));  // value-initialized: kUnset
      }
      slot = dense_memo_slot(index);
    }
    if (slot == nullptr) slot = &sparse_memo_[index];
    retain(v);
    if (slot->kind != Kind::kUnset) {
      release(*slot);
    } else {
      ++memo_count_;
    }
    *slot = v;
    return true;
  }
  bool memo_get(std::uint64_t index) {
    const Value* slot = dense_memo_slot(index);
    if (slot == nullptr && !sparse_memo_.empty()) {
      auto it = sparse_memo_.find(index);
      if (it != sparse_memo_.end()) slot = &it->second;
    }
    if (slot == nullptr || slot->kind == Kind::kUnset) {
      return invalid("memo value not found at index " + std::to_string(index));
    }
    retain(*slot);
    return push(*slot);
  }
  void reset_memo() {
    if (memo_count_ == 0) return;
    for (auto& block : memo_blocks_) {
      for (std::size_t i = 0; i < kMemoBlock; ++i) release(block[i]);
    }
    for (const auto& [index, v] : sparse_memo_) release(v);
    memo_blocks_.clear();
    sparse_memo_.clear();
    memo_count_ = 0;
  }

  // --- handlers
  bool push_text(Kind kind, const std::uint8_t* p, std::uint64_t n);
  bool push_decoded_text(Kind kind, std::string decoded);
  bool op_int_text();
  bool op_long_text();
  bool op_float_text();
  bool op_string_text();
  bool op_unicode_text();
  bool op_long_binary(std::uint64_t n);
  bool op_global();
  bool op_stack_global();
  bool op_ext(std::uint64_t code);
  bool op_inst();
  bool op_obj();
  bool op_reduce();
  bool op_newobj(bool with_kwargs);
  bool op_build();
  bool op_setitem();
  bool op_setitems();
  bool op_append();
  bool op_appends();
  bool op_additems();
  bool op_persid(bool binary);
  bool op_tuple_n(std::size_t n);
  bool op_pop();
  bool read_name_line(std::string& out, bool& clipped);

  // --- joblib
  bool after_build(ObjectNode& o);
  bool read_joblib_array(const ObjectNode& wrapper);
  DtypeFacts dtype_facts(const Value& dtype) const;
  bool analyse_inline_pickle();

  // --- embedded pickles
  void look_for_embedded(std::string_view text);
  void analyse_embedded(std::span<const std::uint8_t> bytes, const char* encoding);

  // --- records
  bool may_record() {
    if (settings_.sniff_only) return false;
    if (report_.imports.size() + report_.calls.size() < limits_.max_records) return true;
    ++report_.records_dropped;
    return false;
  }
  void record_import(std::string module, std::string name, bool resolved, std::string detail) {
    if (!may_record()) return;
    PickleImport imp;
    imp.module = printable(module);
    imp.name = printable(name);
    imp.resolved = resolved;
    imp.opcode = opname();
    imp.offset = settings_.base_offset + op_offset_;
    imp.detail = std::move(detail);
    report_.imports.push_back(std::move(imp));
  }
  template <class MakeArguments>
  void record_call(const char* kind, const Value& target, MakeArguments&& make_arguments);
  std::string repr_range(std::size_t start, std::size_t end, bool pairs) const;
  std::size_t nested_depth_limit() const { return std::min(limits_.max_nested_depth, kNestedDepthCeiling); }
  std::string describe(const Value& v) const;
  void write_repr(std::string& out, const Value& v, std::size_t depth, std::size_t limit) const;
  std::string repr(const Value& v) const {
    std::string out;
    write_repr(out, v, 0, kReprLimit);
    if (out.size() > kReprLimit) {
      out.resize(kReprLimit);
      while (!out.empty() && (static_cast<std::uint8_t>(out.back()) & 0xC0) == 0x80) out.pop_back();
      if (!out.empty() && static_cast<std::uint8_t>(out.back()) >= 0xC0) out.pop_back();
      out += "...";
    }
    return out;
  }

  const std::uint8_t* data_;
  std::uint64_t size_;
  const PickleLimits& limits_;
  PickleReport& report_;
  Settings settings_;
  std::size_t items_kept_;
  std::size_t stack_limit_;

  std::uint64_t pos_ = 0;
  std::uint64_t op_offset_ = 0;
  std::uint8_t code_ = 0;
  std::uint64_t completed_ = 0;
  Failure failure_ = Failure::kNone;

  NodePool<ContainerNode> containers_;
  NodePool<TextNode> texts_;
  NodePool<GlobalNode> globals_;
  NodePool<ObjectNode> objects_;
  std::vector<Node*> doomed_;

  std::vector<Value> stack_;
  std::vector<std::size_t> marks_;
  std::vector<std::unique_ptr<Value[]>> memo_blocks_;
  std::unordered_map<std::uint64_t, Value> sparse_memo_;
  std::uint64_t memo_count_ = 0;
};

// ---------------------------------------------------------------------------------------------
// Driving the machine

void PickleMachine::run() {
  if (size_ == 0) {
    fail(Failure::kTruncated, "empty input: no pickle opcodes");
    return;
  }
  while (true) {
    const Outcome outcome = run_one_pickle();
    // A new Unpickler.load starts from an empty stack and memo; nothing of this pickle survives.
    clear_stack_from(0);
    marks_.clear();
    reset_memo();
    if (outcome == Outcome::kHalt) {
      report_.bytes_consumed = failure_ == Failure::kBudget ? pos_ : op_offset_;
      return;
    }
    ++report_.pickles;
    report_.bytes_consumed = pos_;
    if (settings_.max_pickles != 0 && report_.pickles >= settings_.max_pickles) return;
    if (pos_ >= size_ || settings_.sniff_only) return;
    if (!looks_like_pickle(std::span<const std::uint8_t>(data_ + pos_, size_ - pos_))) {
      report_.trailing_bytes = size_ - pos_;
      return;
    }
  }
}

PickleMachine::Outcome PickleMachine::run_one_pickle() {
  while (true) {
    if (pos_ >= size_) {
      op_offset_ = pos_;
      fail(Failure::kTruncated, "truncated: no STOP opcode before the end of the data");
      return Outcome::kHalt;
    }
    if (settings_.opcode_budget != 0 && completed_ >= settings_.opcode_budget) {
      failure_ = Failure::kBudget;
      return Outcome::kHalt;
    }
    op_offset_ = pos_;
    code_ = data_[pos_++];
    ++report_.opcodes;
    if (code_ == op::kStop) {
      Value result;
      if (!pop(result)) return Outcome::kHalt;
      release(result);
      ++completed_;
      return Outcome::kStop;
    }
    if (!step(code_)) return Outcome::kHalt;
    ++completed_;
  }
}

bool PickleMachine::step(std::uint8_t code) {
  std::uint64_t n = 0;
  const std::uint8_t* p = nullptr;
  std::size_t start = 0;
  switch (code) {
    case op::kMark:
      if (stack_.size() + marks_.size() >= limits_.max_stack_depth) {
        return invalid("stack depth limit of " + std::to_string(limits_.max_stack_depth) + " exceeded");
      }
      marks_.push_back(stack_.size());
      return true;
    case op::kPop:
      return op_pop();
    case op::kPopMark:
      if (!take_mark(start)) return false;
      clear_stack_from(start);
      return true;
    case op::kDup: {
      Value* t = nullptr;
      if (!top(t)) return false;
      const Value v = *t;
      retain(v);
      return push(v);
    }
    case op::kFloat:
      return op_float_text();
    case op::kInt:
      return op_int_text();
    case op::kBinInt:
      if (!read_le<4>(n)) return false;
      return push(make_scalar(Kind::kInt, static_cast<std::int32_t>(static_cast<std::uint32_t>(n))));
    case op::kBinInt1:
      if (!read_u8(n)) return false;
      return push(make_scalar(Kind::kInt, static_cast<std::int64_t>(n)));
    case op::kBinInt2:
      if (!read_le<2>(n)) return false;
      return push(make_scalar(Kind::kInt, static_cast<std::int64_t>(n)));
    case op::kLong:
      return op_long_text();
    case op::kNone:
      return push(make_scalar(Kind::kNone));
    case op::kPersId:
      return op_persid(false);
    case op::kBinPersId:
      return op_persid(true);
    case op::kReduce:
      return op_reduce();
    case op::kString:
      return op_string_text();
    case op::kBinString:
      if (!read_le<4>(n)) return false;
      if (static_cast<std::int32_t>(static_cast<std::uint32_t>(n)) < 0) return invalid("negative byte count");
      if (!read_payload(n, p)) return false;
      return push_text(Kind::kStr, p, n);
    case op::kShortBinString:
      if (!read_u8(n) || !read_payload(n, p)) return false;
      return push_text(Kind::kStr, p, n);
    case op::kUnicode:
      return op_unicode_text();
    case op::kBinUnicode:
      if (!read_le<4>(n) || !read_payload(n, p)) return false;
      return push_text(Kind::kStr, p, n);
    case op::kAppend:
      return op_append();
    case op::kBuild:
      return op_build();
    case op::kGlobal:
      return op_global();
    case op::kDict:
      if (!take_mark(start)) return false;
      if ((stack_.size() - start) % 2 != 0) return invalid("odd number of items for DICT");
      return push(container_from_stack(Kind::kDict, start));
    case op::kEmptyDict:
      return push(new_container(Kind::kDict, kPlain));
    case op::kAppends:
      return op_appends();
    case op::kGet: {
      std::string_view line;
      std::int64_t index = 0;
      if (!read_line(line)) return false;
      if (parse_int_text(line, index) != ParsedInt::kSmall || index < 0) {
        return invalid("bad memo index '" + printable(line.substr(0, 40)) + "'");
      }
      return memo_get(static_cast<std::uint64_t>(index));
    }
    case op::kBinGet:
      if (!read_u8(n)) return false;
      return memo_get(n);
    case op::kLongBinGet:
      if (!read_le<4>(n)) return false;
      return memo_get(n);
    case op::kInst:
      return op_inst();
    case op::kList:
      if (!take_mark(start)) return false;
      return push(container_from_stack(Kind::kList, start));
    case op::kEmptyList:
      return push(new_container(Kind::kList, kPlain));
    case op::kObj:
      return op_obj();
    case op::kPut: {
      std::string_view line;
      std::int64_t index = 0;
      if (!read_line(line)) return false;
      if (parse_int_text(line, index) != ParsedInt::kSmall) {
        return invalid("bad memo index '" + printable(line.substr(0, 40)) + "'");
      }
      if (index < 0) return invalid("negative PUT argument");
      Value* t = nullptr;
      if (!top(t)) return false;
      return memo_put(static_cast<std::uint64_t>(index), *t);
    }
    case op::kBinPut:
    case op::kLongBinPut: {
      if (code == op::kBinPut ? !read_u8(n) : !read_le<4>(n)) return false;
      Value* t = nullptr;
      if (!top(t)) return false;
      return memo_put(n, *t);
    }
    case op::kSetItem:
      return op_setitem();
    case op::kTuple:
      if (!take_mark(start)) return false;
      return push(container_from_stack(Kind::kTuple, start));
    case op::kEmptyTuple:
      return push(new_container(Kind::kTuple, kPlain));
    case op::kSetItems:
      return op_setitems();
    case op::kBinFloat: {
      if (!read_fixed(8, p)) return false;
      std::uint64_t bits = 0;
      for (int i = 0; i < 8; ++i) bits = (bits << 8) | p[i];  // big-endian
      double real = 0;
      std::memcpy(&real, &bits, sizeof real);
      return push(make_float(real));
    }
    case op::kProto:
      if (!read_u8(n)) return false;
      if (n > 5) return invalid("unsupported pickle protocol: " + std::to_string(n));
      report_.highest_protocol = std::max(report_.highest_protocol, static_cast<int>(n));
      return true;
    case op::kNewObj:
      return op_newobj(false);
    case op::kExt1:
      if (!read_u8(n)) return false;
      return op_ext(n);
    case op::kExt2:
      if (!read_le<2>(n)) return false;
      return op_ext(n);
    case op::kExt4:
      if (!read_le<4>(n)) return false;
      if (static_cast<std::int32_t>(static_cast<std::uint32_t>(n)) < 0) return invalid("EXT specifies code <= 0");
      return op_ext(n);
    case op::kTuple1:
      return op_tuple_n(1);
    case op::kTuple2:
      return op_tuple_n(2);
    case op::kTuple3:
      return op_tuple_n(3);
    case op::kNewTrue:
      return push(make_scalar(Kind::kBool, 1));
    case op::kNewFalse:
      return push(make_scalar(Kind::kBool, 0));
    case op::kLong1:
      if (!read_u8(n)) return false;
      return op_long_binary(n);
    case op::kLong4:
      if (!read_le<4>(n)) return false;
      if (static_cast<std::int32_t>(static_cast<std::uint32_t>(n)) < 0) return invalid("negative byte count");
      return op_long_binary(n);
    case op::kBinBytes:
      if (!read_le<4>(n) || !read_payload(n, p)) return false;
      return push_text(Kind::kBytes, p, n);
    case op::kShortBinBytes:
      if (!read_u8(n) || !read_payload(n, p)) return false;
      return push_text(Kind::kBytes, p, n);
    case op::kShortBinUnicode:
      if (!read_u8(n) || !read_payload(n, p)) return false;
      return push_text(Kind::kStr, p, n);
    case op::kBinUnicode8:
      if (!read_le<8>(n) || !read_payload(n, p)) return false;
      return push_text(Kind::kStr, p, n);
    case op::kBinBytes8:
      if (!read_le<8>(n) || !read_payload(n, p)) return false;
      return push_text(Kind::kBytes, p, n);
    case op::kEmptySet:
      return push(new_container(Kind::kSet, kPlain));
    case op::kAddItems:
      return op_additems();
    case op::kFrozenSet:
      if (!take_mark(start)) return false;
      return push(container_from_stack(Kind::kFrozenSet, start));
    case op::kNewObjEx:
      return op_newobj(true);
    case op::kStackGlobal:
      return op_stack_global();
    case op::kMemoize: {
      Value* t = nullptr;
      if (!top(t)) return false;
      return memo_put(memo_count_, *t);
    }
    case op::kFrame:
      // A prefetch hint to the loader; CPython's C loader does not hold opcodes to frame bounds.
      return read_le<8>(n);
    case op::kByteArray8:
      if (!read_le<8>(n) || !read_payload(n, p)) return false;
      return push_text(Kind::kByteArray, p, n);
    case op::kNextBuffer:
      return push(make_scalar(Kind::kBuffer));
    case op::kReadOnlyBuffer: {
      Value* t = nullptr;
      return top(t);
    }
    default: {
      std::string message = "unknown opcode 0x";
      static constexpr char kDigits[] = "0123456789abcdef";
      message += kDigits[code >> 4];
      message += kDigits[code & 0xF];
      if (code >= 0x20 && code < 0x7F) message += std::string(" ('") + static_cast<char>(code) + "')";
      return fail(Failure::kInvalid, message);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Scalars and strings

bool PickleMachine::push_text(Kind kind, const std::uint8_t* p, std::uint64_t n) {
  if (!settings_.sniff_only && n >= kMinEmbeddedRaw && settings_.nested_depth < nested_depth_limit()) {
    look_for_embedded({reinterpret_cast<const char*>(p), static_cast<std::size_t>(n)});
  }
  return push(make_view(kind, p, n));
}

bool PickleMachine::push_decoded_text(Kind kind, std::string decoded) {
  if (!settings_.sniff_only && decoded.size() >= kMinEmbeddedRaw && settings_.nested_depth < nested_depth_limit()) {
    look_for_embedded(decoded);
  }
  const std::size_t keep = std::max(kNameKept, limits_.max_string_kept);
  if (decoded.size() > keep) {
    decoded.resize(keep);
    decoded.shrink_to_fit();
  }
  return push(make_text(kind, std::move(decoded)));
}

bool PickleMachine::read_name_line(std::string& out, bool& clipped) {
  std::string_view line;
  if (!read_line(line)) return false;
  clipped = line.size() > kNameKept;
  out.assign(line.substr(0, kNameKept));
  return true;
}

bool PickleMachine::op_int_text() {
  std::string_view line;
  if (!read_line(line)) return false;
  if (line == "00") return push(make_scalar(Kind::kBool, 0));  // protocol 0 spells booleans this way
  if (line == "01") return push(make_scalar(Kind::kBool, 1));
  std::int64_t value = 0;
  switch (parse_int_text(line, value)) {
    case ParsedInt::kSmall:
      return push(make_scalar(Kind::kInt, value));
    case ParsedInt::kBig:
      return push(make_view(Kind::kBigInt, reinterpret_cast<const std::uint8_t*>(line.data()), line.size(), kDecimalText));
    case ParsedInt::kBad:
      break;
  }
  return invalid("invalid literal for int: '" + printable(line.substr(0, 40)) + "'");
}

bool PickleMachine::op_long_text() {
  std::string_view line;
  if (!read_line(line)) return false;
  std::string_view digits = line;
  if (!digits.empty() && digits.back() == 'L') digits.remove_suffix(1);
  std::int64_t value = 0;
  switch (parse_int_text(digits, value)) {
    case ParsedInt::kSmall:
      return push(make_scalar(Kind::kInt, value));
    case ParsedInt::kBig:
      return push(
          make_view(Kind::kBigInt, reinterpret_cast<const std::uint8_t*>(digits.data()), digits.size(), kDecimalText));
    case ParsedInt::kBad:
      break;
  }
  return invalid("invalid literal for int: '" + printable(line.substr(0, 40)) + "'");
}

bool PickleMachine::op_float_text() {
  std::string_view line;
  if (!read_line(line)) return false;
  double value = 0;
  if (!parse_float_text(line, value)) {
    return invalid("could not convert string to float: '" + printable(line.substr(0, 40)) + "'");
  }
  return push(make_float(value));
}

bool PickleMachine::op_string_text() {
  std::string_view line;
  if (!read_line(line)) return false;
  if (line.size() < 2 || line.front() != line.back() || (line.front() != '\'' && line.front() != '"')) {
    return invalid("the STRING opcode argument must be quoted");
  }
  const std::string_view inner = line.substr(1, line.size() - 2);
  if (inner.find('\\') == std::string_view::npos) {
    return push_text(Kind::kStr, reinterpret_cast<const std::uint8_t*>(inner.data()), inner.size());
  }
  std::string decoded;
  std::string error;
  if (!decode_string_escape(inner, decoded, error)) return invalid(error);
  return push_decoded_text(Kind::kStr, std::move(decoded));
}

bool PickleMachine::op_unicode_text() {
  std::string_view line;
  if (!read_line(line)) return false;
  if (!needs_raw_unicode_decoding(line)) {
    return push_text(Kind::kStr, reinterpret_cast<const std::uint8_t*>(line.data()), line.size());
  }
  std::string decoded;
  std::string error;
  if (!decode_raw_unicode_escape(line, decoded, error)) return invalid(error);
  return push_decoded_text(Kind::kStr, std::move(decoded));
}

bool PickleMachine::op_long_binary(std::uint64_t n) {
  const std::uint8_t* p = nullptr;
  if (!read_payload(n, p)) return false;
  if (n > 8) return push(make_view(Kind::kBigInt, p, n));  // kept as a view: its size, not its digits
  std::uint64_t bits = 0;
  for (std::uint64_t i = n; i-- > 0;) bits = (bits << 8) | p[i];
  if (n > 0 && n < 8 && (p[n - 1] & 0x80)) bits |= ~std::uint64_t{0} << (8 * n);  // sign-extend
  return push(make_scalar(Kind::kInt, static_cast<std::int64_t>(bits)));
}

bool PickleMachine::op_persid(bool binary) {
  Value pid{};
  if (binary) {
    if (!pop(pid)) return false;
  } else {
    std::string_view line;
    if (!read_line(line)) return false;
    pid = make_view(Kind::kStr, reinterpret_cast<const std::uint8_t*>(line.data()), line.size());
  }
  Value result = make_scalar(Kind::kPersistent);
  // PyTorch's zip format: ('storage', storage_type, key, location, numel)
  if (pid.kind == Kind::kTuple) {
    const ContainerNode& t = as_container(pid);
    if (t.items.size() >= 3 && is_str(t.items[0], "storage") && t.items[2].kind == Kind::kStr) {
      const Value& key = t.items[2];
      if (report_.storage_keys.size() < limits_.max_records) {
        report_.storage_keys.push_back(printable(text_of(key).substr(0, kNameKept)));
      }
      if (!(key.flags & kNodeBacked)) {
        result.view = key.view;
        result.size = key.size;
      }
    }
  }
  release(pid);
  return push(result);
}

// ---------------------------------------------------------------------------------------------
// Imports and calls

bool PickleMachine::op_global() {
  std::string module;
  std::string name;
  bool module_clipped = false;
  bool name_clipped = false;
  if (!read_name_line(module, module_clipped) || !read_name_line(name, name_clipped)) return false;
  std::string detail = "text arguments of GLOBAL";
  if (module_clipped || name_clipped) detail += " (longer than 4096 bytes, clipped)";
  record_import(module, name, true, std::move(detail));
  return push(make_global(std::move(module), std::move(name)));
}

bool PickleMachine::op_stack_global() {
  Value name{};
  Value module{};
  if (!pop(name)) return false;
  if (!pop(module)) {
    release(name);
    return false;
  }
  Value result{};
  if (module.kind == Kind::kStr && name.kind == Kind::kStr) {
    std::string m(text_of(module).substr(0, kNameKept));
    std::string n(text_of(name).substr(0, kNameKept));
    record_import(m, n, true, "str operands popped from the stack");
    result = make_global(std::move(m), std::move(n));
  } else {
    const std::string operands = repr(module) + ", " + repr(name);
    record_import({}, {}, false,
                  std::string("STACK_GLOBAL operands are ") + kind_name(module.kind) + " and " + kind_name(name.kind) +
                      ", not two str (" + operands + "); the standard loader refuses them, a custom one may not");
    result = make_unresolved("<unresolved STACK_GLOBAL " + operands + ">");
  }
  release(module);
  release(name);
  return push(result);
}

bool PickleMachine::op_ext(std::uint64_t code) {
  if (code == 0) return invalid("EXT specifies code <= 0");
  const std::string number = std::to_string(code);
  record_import({}, {}, false,
                "copyreg extension code " + number +
                    ": the loader looks it up in its extension registry at load time; it cannot be resolved statically");
  return push(make_unresolved(std::string("<") + opname() + " code " + number + ">"));
}

bool PickleMachine::op_inst() {
  if (marks_.empty()) return invalid("could not find MARK");
  std::string module;
  std::string name;
  bool module_clipped = false;
  bool name_clipped = false;
  if (!read_name_line(module, module_clipped) || !read_name_line(name, name_clipped)) return false;
  std::string detail = "text arguments of INST";
  if (module_clipped || name_clipped) detail += " (longer than 4096 bytes, clipped)";
  record_import(module, name, true, std::move(detail));
  std::size_t start = 0;
  if (!take_mark(start)) return false;
  Value args = container_from_stack(Kind::kTuple, start);
  Value cls = make_global(std::move(module), std::move(name));
  record_call("call", cls, [&] { return repr(args); });
  return push(make_object(cls, args, Value{}));
}

bool PickleMachine::op_obj() {
  std::size_t start = 0;
  if (!take_mark(start)) return false;
  if (stack_.size() - start < 1) return invalid("stack underflow: no class after the MARK");
  Value cls = stack_[start];
  Value args = container_from_stack(Kind::kTuple, start + 1);
  stack_.pop_back();  // cls, now owned here
  record_call("call", cls, [&] { return repr(args); });
  return push(make_object(cls, args, Value{}));
}

bool PickleMachine::op_reduce() {
  Value args{};
  Value callee{};
  if (!pop(args)) return false;
  if (!pop(callee)) {
    release(args);
    return false;
  }
  record_call("call", callee, [&] { return repr(args); });
  return push(make_object(callee, args, Value{}));
}

bool PickleMachine::op_newobj(bool with_kwargs) {
  Value kwargs{};
  Value args{};
  Value cls{};
  if (with_kwargs && !pop(kwargs)) return false;
  if (!pop(args)) {
    release(kwargs);
    return false;
  }
  if (!pop(cls)) {
    release(kwargs);
    release(args);
    return false;
  }
  record_call("call", cls, [&] {
    std::string out = repr(args);
    if (with_kwargs) out += ", " + repr(kwargs);
    return out;
  });
  return push(make_object(cls, args, kwargs));
}

bool PickleMachine::op_tuple_n(std::size_t n) {
  if (stack_.size() - fence() < n) return invalid("stack underflow");
  return push(container_from_stack(Kind::kTuple, stack_.size() - n));
}

bool PickleMachine::op_pop() {
  if (!marks_.empty() && marks_.back() == stack_.size()) {  // as CPython: POP drops a MARK on top
    marks_.pop_back();
    return true;
  }
  Value v{};
  if (!pop(v)) return false;
  release(v);
  return true;
}

// ---------------------------------------------------------------------------------------------
// State writes: normal data on plain containers, attribute/item writes on anything else

bool PickleMachine::op_build() {
  Value state{};
  if (!pop(state)) return false;
  Value* target = nullptr;
  if (!top(target)) {
    release(state);
    return false;
  }
  if (is_container(target->kind) && (target->node->flags & kPlain)) {
    release(state);
    return true;
  }
  record_call("build", *target, [&] { return repr(state); });
  if (target->kind != Kind::kObject) {
    release(state);
    return true;
  }
  ObjectNode& object = as_object(*target);
  release(object.state);
  object.state = state;
  return after_build(object);
}

bool PickleMachine::op_setitem() {
  Value value{};
  Value key{};
  if (!pop(value)) return false;
  if (!pop(key)) {
    release(value);
    return false;
  }
  Value* target = nullptr;
  if (!top(target)) {
    release(key);
    release(value);
    return false;
  }
  if (target->kind == Kind::kDict && (target->node->flags & kPlain)) {
    ContainerNode& d = as_container(*target);
    ++d.count;
    container_add(d, key);
    container_add(d, value);
    return true;
  }
  record_call("setitem", *target, [&] { return "[" + repr(key) + "] = " + repr(value); });
  release(key);
  release(value);
  return true;
}

bool PickleMachine::op_setitems() {
  std::size_t start = 0;
  if (!take_mark(start)) return false;
  if (start == 0) return invalid("stack underflow: nothing below the MARK to set items on");
  if ((stack_.size() - start) % 2 != 0) return invalid("odd number of items for SETITEMS");
  Value& target = stack_[start - 1];
  if (target.kind == Kind::kDict && (target.node->flags & kPlain)) {
    ContainerNode& d = as_container(target);
    d.count += (stack_.size() - start) / 2;
    for (std::size_t i = start; i < stack_.size(); ++i) container_add(d, stack_[i]);
    stack_.resize(start);
    return true;
  }
  record_call("setitem", target, [&] { return repr_range(start, stack_.size(), true); });
  clear_stack_from(start);
  return true;
}

bool PickleMachine::op_append() {
  Value value{};
  if (!pop(value)) return false;
  Value* target = nullptr;
  if (!top(target)) {
    release(value);
    return false;
  }
  if (target->kind == Kind::kList && (target->node->flags & kPlain)) {
    ContainerNode& list = as_container(*target);
    ++list.count;
    container_add(list, value);
    return true;
  }
  record_call("append", *target, [&] { return repr(value); });
  release(value);
  return true;
}

bool PickleMachine::op_appends() {
  std::size_t start = 0;
  if (!take_mark(start)) return false;
  if (start == 0) return invalid("stack underflow: nothing below the MARK to append to");
  Value& target = stack_[start - 1];
  if (target.kind == Kind::kList && (target.node->flags & kPlain)) {
    ContainerNode& list = as_container(target);
    list.count += stack_.size() - start;
    for (std::size_t i = start; i < stack_.size(); ++i) container_add(list, stack_[i]);
    stack_.resize(start);
    return true;
  }
  record_call("append", target, [&] { return repr_range(start, stack_.size(), false); });
  clear_stack_from(start);
  return true;
}

bool PickleMachine::op_additems() {
  std::size_t start = 0;
  if (!take_mark(start)) return false;
  if (start == 0) return invalid("stack underflow: nothing below the MARK to add items to");
  Value& target = stack_[start - 1];
  if (target.kind == Kind::kSet && (target.node->flags & kPlain)) {
    ContainerNode& set = as_container(target);
    set.count += stack_.size() - start;
    for (std::size_t i = start; i < stack_.size(); ++i) container_add(set, stack_[i]);
    stack_.resize(start);
    return true;
  }
  record_call("append", target, [&] { return repr_range(start, stack_.size(), false); });
  clear_stack_from(start);
  return true;
}

// ---------------------------------------------------------------------------------------------
// joblib: NumpyUnpickler.load_build reads the array bytes that joblib.dump wrote inline right
// after the wrapper's BUILD; without skipping them the rest of the stream reads as garbage.

bool PickleMachine::after_build(ObjectNode& object) {
  if (!settings_.joblib_arrays) return true;
  const GlobalNode* cls = class_of(object);
  if (cls == nullptr || !cls->resolved || cls->name != "NumpyArrayWrapper") return true;
  if (cls->module != "joblib.numpy_pickle" && !cls->module.ends_with(".joblib.numpy_pickle")) return true;
  return read_joblib_array(object);
}

DtypeFacts PickleMachine::dtype_facts(const Value& dtype) const {
  DtypeFacts facts;
  if (dtype.kind != Kind::kObject) return facts;
  const ObjectNode& o = as_object(dtype);
  if (o.callee.kind != Kind::kGlobal || !is_numpy_dtype_class(&as_global(o.callee))) return facts;
  if (o.args.kind != Kind::kTuple) return facts;
  const ContainerNode& args = as_container(o.args);
  if (args.items.size() == 0 || args.items[0].kind != Kind::kStr) return facts;
  const std::string_view spec = text_of(args.items[0]);
  std::int64_t elsize = -1;
  std::int64_t flags = 0;
  if (o.state.kind == Kind::kTuple) {  // (version, byteorder, subarray, names, fields, elsize, alignment, flags[, metadata])
    const ContainerNode& state = as_container(o.state);
    if (state.items.size() >= 8) {
      if (state.items[5].kind == Kind::kInt) elsize = state.items[5].integer;
      if (state.items[7].kind == Kind::kInt) flags = state.items[7].integer;
    }
  }
  facts.has_object = (!spec.empty() && spec.front() == 'O') || (flags & 1) != 0;  // NPY_ITEM_HASOBJECT
  if (elsize > 0) {
    facts.itemsize = static_cast<std::uint64_t>(elsize);
    facts.known = true;
    return facts;
  }
  std::size_t digits_at = spec.size();
  while (digits_at > 0 && spec[digits_at - 1] >= '0' && spec[digits_at - 1] <= '9') --digits_at;
  const std::string_view kind = spec.substr(0, digits_at);
  const std::string_view digits = spec.substr(digits_at);
  if (digits.empty() || digits.size() > 9 || kind.empty()) return facts;
  std::uint64_t size = 0;
  std::from_chars(digits.data(), digits.data() + digits.size(), size);
  if (kind.back() == 'U') size *= 4;  // UCS4 characters
  facts.itemsize = size;
  facts.known = size > 0 || facts.has_object;
  return facts;
}

bool PickleMachine::read_joblib_array(const ObjectNode& wrapper) {
  if (wrapper.state.kind != Kind::kDict) {
    return invalid(std::string("joblib NumpyArrayWrapper state is a ") + kind_name(wrapper.state.kind) +
                   ", not a dict: cannot tell the size of the array bytes that follow");
  }
  const ContainerNode& state = as_container(wrapper.state);
  const Value* shape = nullptr;
  const Value* dtype = nullptr;
  const Value* alignment = nullptr;
  for (std::uint32_t i = 0; i + 1 < state.items.size(); i += 2) {
    const Value& key = state.items[i];
    if (is_str(key, "shape")) shape = &state.items[i + 1];
    if (is_str(key, "dtype")) dtype = &state.items[i + 1];
    if (is_str(key, "numpy_array_alignment_bytes")) alignment = &state.items[i + 1];
  }
  if (dtype == nullptr) return invalid("joblib NumpyArrayWrapper state has no dtype: cannot tell the array size");
  const DtypeFacts facts = dtype_facts(*dtype);
  if (!facts.known) {
    return invalid("cannot tell the item size of the joblib array's dtype " + repr(*dtype));
  }
  if (facts.has_object) return analyse_inline_pickle();
  if (shape == nullptr || shape->kind != Kind::kTuple) {
    return invalid("joblib NumpyArrayWrapper state has no shape tuple: cannot tell the array size");
  }
  const ContainerNode& dims = as_container(*shape);
  if (dims.items.size() < dims.count) return invalid("joblib array has more dimensions than this analysis keeps");
  std::uint64_t count = 1;
  bool zero = false;
  bool overflow = false;
  for (std::uint32_t i = 0; i < dims.items.size(); ++i) {
    const Value& dim = dims.items[i];
    if (dim.kind != Kind::kInt || dim.integer < 0) return invalid("joblib array shape holds " + repr(dim));
    const auto d = static_cast<std::uint64_t>(dim.integer);
    if (d == 0) {
      zero = true;
    } else if (count > std::numeric_limits<std::uint64_t>::max() / d) {
      overflow = true;
    } else {
      count *= d;
    }
  }
  if (zero) count = 0;
  if (!zero && (overflow || count > std::numeric_limits<std::uint64_t>::max() / facts.itemsize)) {
    return truncated("joblib array of shape " + repr(*shape) + " is larger than any file");
  }
  const std::uint64_t nbytes = count * facts.itemsize;
  if (alignment != nullptr && alignment->kind != Kind::kNone) {
    // joblib >= 1.2: one byte giving the padding length, then the padding
    if (remaining() < 1) return truncated("joblib array: the alignment padding byte is missing");
    const std::uint64_t padding = data_[pos_];
    ++pos_;
    if (padding > remaining()) return truncated("joblib array: alignment padding runs past the end");
    pos_ += padding;
  }
  if (nbytes > remaining()) {
    return truncated("joblib array data declares " + std::to_string(nbytes) + " bytes, " +
                     std::to_string(remaining()) + " left");
  }
  pos_ += nbytes;
  ++report_.joblib_arrays_skipped;
  return true;
}

bool PickleMachine::analyse_inline_pickle() {
  // joblib pickles an object array with a plain pickle.dump into the same stream: a fresh
  // Unpickler (fresh memo) whose imports and calls run in the same load.
  if (settings_.nested_depth >= nested_depth_limit()) {
    return invalid("joblib object array holds a nested pickle beyond the nesting limit");
  }
  PickleReport inner;
  PickleLimits inner_limits = limits_;
  const std::size_t used = report_.imports.size() + report_.calls.size();
  inner_limits.max_records = used < limits_.max_records ? limits_.max_records - used : 0;
  inner_limits.max_pickles = 1;
  Settings inner_settings;
  inner_settings.nested_depth = settings_.nested_depth + 1;
  inner_settings.base_offset = settings_.base_offset + pos_;
  inner_settings.max_pickles = 1;
  inner_settings.joblib_arrays = false;
  {
    PickleMachine machine(std::span<const std::uint8_t>(data_ + pos_, size_ - pos_), inner_limits, inner,
                          inner_settings);
    machine.run();
  }
  for (auto& imp : inner.imports) report_.imports.push_back(std::move(imp));
  for (auto& call : inner.calls) report_.calls.push_back(std::move(call));
  for (auto& e : inner.embedded) report_.embedded.push_back(std::move(e));
  for (auto& key : inner.storage_keys) report_.storage_keys.push_back(std::move(key));
  report_.records_dropped += inner.records_dropped;
  report_.opcodes += inner.opcodes;
  if (inner.malformed) {
    failure_ = Failure::kInvalid;
    report_.malformed = "in the pickle of a joblib object array: " + *inner.malformed;
    report_.malformed_offset = inner.malformed_offset;
    return false;
  }
  pos_ += inner.bytes_consumed;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Pickles inside the data

void PickleMachine::look_for_embedded(std::string_view text) {
  const std::size_t n = text.size();
  const auto* bytes = reinterpret_cast<const std::uint8_t*>(text.data());
  if (looks_like_pickle({bytes, n})) {
    analyse_embedded({bytes, n}, "raw");
    return;
  }
  if (n >= kMinEmbeddedHex && n % 2 == 0 && hex_decoded_prefix_plausible(text)) {
    // decode a prefix first: most hex text is not a pickle and need not be decoded whole
    std::vector<std::uint8_t> decoded;
    const std::uint64_t cap = std::min<std::uint64_t>(n / 2, kMaxDecodedEmbedded);
    decoded.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(cap, 256)));
    bool all_hex = true;
    for (std::size_t i = 0; i + 1 < n; i += 2) {
      const int hi = core::hex_digit_value(bytes[i]);
      const int lo = core::hex_digit_value(bytes[i + 1]);
      if (hi < 0 || lo < 0) {
        all_hex = false;
        break;
      }
      if (decoded.size() < cap) decoded.push_back(static_cast<std::uint8_t>(hi * 16 + lo));
      if (decoded.size() == 256 && !looks_like_pickle(decoded)) return;
    }
    if (all_hex && looks_like_pickle(decoded)) analyse_embedded(decoded, "hex");
    return;
  }
  if (n >= kMinEmbeddedBase64) {
    for (std::size_t i = 0; i < 8; ++i) {
      if (base64_value(bytes[i]) < 0) return;
    }
    SmallBuffer head;
    decode_base64(text.substr(0, 8), 6, head);
    const auto& h = head.bytes;
    if (!(h[0] == op::kProto ? h[1] <= 5 : plausible_first_byte(h[0]))) return;
    SmallBuffer prefix;
    decode_base64(text.substr(0, std::min<std::size_t>(n, 344)), prefix.bytes.size(), prefix);
    if (!looks_like_pickle(prefix.view())) return;
    std::vector<std::uint8_t> decoded;
    decoded.reserve(static_cast<std::size_t>(std::min<std::uint64_t>(n / 4 * 3 + 3, kMaxDecodedEmbedded)));
    decode_base64(text, kMaxDecodedEmbedded, decoded);
    if (looks_like_pickle(decoded)) analyse_embedded(decoded, "base64");
  }
}

void PickleMachine::analyse_embedded(std::span<const std::uint8_t> bytes, const char* encoding) {
  if (report_.imports.size() + report_.calls.size() + report_.embedded.size() >= limits_.max_records) {
    ++report_.records_dropped;
    return;
  }
  auto inner = std::make_shared<PickleReport>();
  Settings inner_settings;
  inner_settings.nested_depth = settings_.nested_depth + 1;
  inner_settings.max_pickles = limits_.max_pickles;
  {
    PickleMachine machine(bytes, limits_, *inner, inner_settings);
    machine.run();
  }
  // Bytes that merely start like a pickle (tensor data does, now and then) decode to nothing.
  if (inner->pickles == 0 && inner->imports.empty() && inner->calls.empty()) return;
  EmbeddedPickle embedded;
  embedded.offset = settings_.base_offset + op_offset_;
  embedded.encoding = encoding;
  embedded.report = std::move(inner);
  report_.embedded.push_back(std::move(embedded));
}

// ---------------------------------------------------------------------------------------------
// Evidence

template <class MakeArguments>
void PickleMachine::record_call(const char* kind, const Value& target, MakeArguments&& make_arguments) {
  if (!may_record()) return;
  PickleCall call;
  call.kind = kind;
  call.opcode = opname();
  call.callee = describe(target);
  if (const GlobalNode* root = root_of(target); root != nullptr && root->resolved) {
    call.module = printable(root->module);
    call.name = printable(root->name);
  }
  call.arguments = make_arguments();
  call.offset = settings_.base_offset + op_offset_;
  report_.calls.push_back(std::move(call));
}

std::string PickleMachine::describe(const Value& v) const {
  if (v.kind == Kind::kGlobal) {
    const GlobalNode& g = as_global(v);
    if (!g.resolved) return g.label;
    return printable(g.module) + "." + printable(g.name);
  }
  return repr(v);
}

std::string PickleMachine::repr_range(std::size_t start, std::size_t end, bool pairs) const {
  std::string out = pairs ? "{" : "[";
  for (std::size_t i = start; i < end; ++i) {
    if (out.size() >= kReprLimit) {
      out += "...";
      break;
    }
    if (i > start) out += (pairs && (i - start) % 2 == 1) ? ": " : ", ";
    write_repr(out, stack_[i], 1, kReprLimit);
  }
  out += pairs ? "}" : "]";
  if (out.size() > kReprLimit + 8) {
    out.resize(kReprLimit);
    while (!out.empty() && (static_cast<std::uint8_t>(out.back()) & 0xC0) == 0x80) out.pop_back();
    if (!out.empty() && static_cast<std::uint8_t>(out.back()) >= 0xC0) out.pop_back();
    out += "...";
  }
  return out;
}

void PickleMachine::write_repr(std::string& out, const Value& v, std::size_t depth, std::size_t limit) const {
  if (out.size() >= limit) return;
  char number[64];
  switch (v.kind) {
    case Kind::kUnset:
      out += "<unset>";
      return;
    case Kind::kNone:
      out += "None";
      return;
    case Kind::kBool:
      out += v.integer ? "True" : "False";
      return;
    case Kind::kInt: {
      const auto r = std::to_chars(number, number + sizeof number, v.integer);
      out.append(number, r.ptr);
      return;
    }
    case Kind::kBigInt:
      if (v.flags & kDecimalText) {
        core::append_python_escaped(out, std::string_view(reinterpret_cast<const char*>(v.view), std::min<std::size_t>(v.size, 40)),
                       0, true, limit);
        if (v.size > 40) out += "...";
      } else {
        out += "<int of " + std::to_string(v.size) + " bytes>";
      }
      return;
    case Kind::kFloat: {
      // Python's repr: shortest round-trip digits, positional between 1e-4 and 1e16
      const double magnitude = v.real < 0 ? -v.real : v.real;
      const bool positional = magnitude == 0 || (magnitude >= 1e-4 && magnitude < 1e16);
      const auto r = positional ? std::to_chars(number, number + sizeof number, v.real, std::chars_format::fixed)
                                : std::to_chars(number, number + sizeof number, v.real);
      const std::string_view text(number, static_cast<std::size_t>(r.ptr - number));
      out += text;
      if (text.find_first_of(".eninf") == std::string_view::npos) out += ".0";
      return;
    }
    case Kind::kStr:
    case Kind::kBytes:
    case Kind::kByteArray: {
      const std::string_view text = text_of(v);
      const std::size_t shown = std::min(text.size(), limits_.max_string_kept);
      if (v.kind == Kind::kByteArray) out += "bytearray(";
      if (v.kind != Kind::kStr) out += 'b';
      out += '\'';
      const bool whole = core::append_python_escaped(out, text.substr(0, shown), '\'', v.kind != Kind::kStr, limit);
      if (!whole || shown < text.size() || (v.flags & kClipped)) out += "...";
      out += '\'';
      if (v.kind == Kind::kByteArray) out += ')';
      return;
    }
    case Kind::kPersistent:
      out += "persistent_load(";
      if (v.size > 0 && v.view != nullptr) {
        out += "storage '";
        core::append_python_escaped(out, std::string_view(reinterpret_cast<const char*>(v.view), std::min<std::size_t>(v.size, 64)),
                       '\'', false, limit);
        out += "'";
      } else {
        out += "...";
      }
      out += ')';
      return;
    case Kind::kBuffer:
      out += "<out-of-band buffer>";
      return;
    case Kind::kGlobal:
      out += describe(v);
      return;
    case Kind::kObject: {
      const ObjectNode& o = as_object(v);
      if (depth >= kReprDepth) {
        out += "...(...)";
        return;
      }
      write_repr(out, o.callee, depth + 1, limit);
      out += '(';
      if (o.args.kind == Kind::kTuple) {
        const ContainerNode& args = as_container(o.args);
        for (std::uint32_t i = 0; i < args.items.size(); ++i) {
          if (i > 0) out += ", ";
          if (out.size() >= limit) break;
          write_repr(out, args.items[i], depth + 1, limit);
        }
        if (args.count > args.items.size()) out += ", ...";
      } else if (o.args.kind != Kind::kUnset) {
        out += '*';
        write_repr(out, o.args, depth + 1, limit);
      }
      if (o.kwargs.kind != Kind::kUnset) {
        out += ", **";
        write_repr(out, o.kwargs, depth + 1, limit);
      }
      out += ')';
      return;
    }
    case Kind::kTuple:
    case Kind::kList:
    case Kind::kDict:
    case Kind::kSet:
    case Kind::kFrozenSet: {
      const ContainerNode& c = as_container(v);
      const char* open = "(";
      const char* close = ")";
      if (v.kind == Kind::kList) open = "[", close = "]";
      if (v.kind == Kind::kDict || v.kind == Kind::kSet) open = "{", close = "}";
      if (v.kind == Kind::kFrozenSet) open = "frozenset({", close = "})";
      if (v.kind == Kind::kSet && c.count == 0) {
        out += "set()";
        return;
      }
      out += open;
      if (depth >= kReprDepth && c.count > 0) {
        out += "...";
        out += close;
        return;
      }
      const bool dict = v.kind == Kind::kDict;
      for (std::uint32_t i = 0; i < c.items.size(); ++i) {
        if (i > 0) out += (dict && i % 2 == 1) ? ": " : ", ";
        if (out.size() >= limit) break;
        write_repr(out, c.items[i], depth + 1, limit);
      }
      const std::uint64_t shown = dict ? c.items.size() / 2 : c.items.size();
      if (c.count > shown) out += ", ... (" + std::to_string(c.count) + " items)";
      if (v.kind == Kind::kTuple && c.count == 1) out += ',';
      out += close;
      return;
    }
  }
}

// Dry run over the first opcodes: does this decode as a pickle at all?
bool sniff_decodes(std::span<const std::uint8_t> data, bool opens_with_global) {
  PickleReport scratch;
  const PickleLimits limits;
  PickleMachine::Settings settings;
  settings.sniff_only = true;
  settings.opcode_budget = kSniffOpcodes;
  settings.max_pickles = 1;
  settings.joblib_arrays = false;
  PickleMachine machine(data, limits, scratch, settings);
  machine.run();
  switch (machine.failure()) {
    case PickleMachine::Failure::kNone:
      return machine.reached_stop();
    case PickleMachine::Failure::kBudget:
      return true;
    case PickleMachine::Failure::kTruncated:
      return machine.opcodes_completed() >= 2 || (opens_with_global && machine.opcodes_completed() >= 1);
    case PickleMachine::Failure::kInvalid:
      return false;
  }
  return false;
}

}  // namespace

PickleReport analyze_pickle(std::span<const std::uint8_t> data, const PickleLimits& limits) {
  PickleReport report;
  try {
    PickleMachine::Settings settings;
    settings.max_pickles = limits.max_pickles;
    settings.joblib_arrays = limits.skip_joblib_arrays;
    PickleMachine machine(data, limits, report, settings);
    machine.run();
  } catch (const std::bad_alloc&) {
    if (!report.malformed) report.malformed = "out of memory while analysing the pickle";
  } catch (const std::exception& e) {
    if (!report.malformed) report.malformed = std::string("analysis failed: ") + e.what();
  }
  return report;
}

bool looks_like_pickle(std::span<const std::uint8_t> data) {
  if (data.size() < 2) return false;
  const std::uint8_t first = data[0];
  if (first == op::kProto) {
    if (data[1] > 5) return false;
    if (data[1] >= 2) return data.size() >= 3 && is_opcode(data[2]);
    // PROTO 0/1 is never written by Python; accept it only when what follows decodes
  } else if (!plausible_first_byte(first)) {
    return false;
  } else if (first == op::kGlobal && !global_shape(data.subspan(1))) {
    return false;
  }
  try {
    return sniff_decodes(data, first == op::kGlobal);
  } catch (const std::exception&) {
    return false;
  }
}

}  // namespace aegis::formats
