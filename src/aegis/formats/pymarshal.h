// A bounded reader of CPython's `marshal` format, for the code objects that Keras Lambda layers
// store (base64 of `marshal.dumps(func.__code__)`). It only describes what it reads: nothing is
// loaded into an interpreter, and no count, length or reference from the input is trusted.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "aegis/core/base64.h"

namespace aegis::formats {

// What one code object names and holds. Strings keep their first kMarshalKeepBytes bytes (as text:
// control characters and bytes that are not UTF-8 escaped as \xNN), lists their first
// kMarshalMaxListed entries.
struct MarshalCode {
  std::string name;      // co_name, "<lambda>" for a lambda
  std::string qualname;  // co_qualname (3.11+); co_name for older layouts
  std::string filename;  // co_filename
  std::uint32_t first_line = 0;
  std::uint32_t arg_count = 0;
  std::vector<std::string> names;             // co_names: globals, attributes and imports it uses
  std::vector<std::string> varnames;          // arguments and locals
  std::vector<std::string> freevars;          // names taken from the enclosing scope (closure)
  std::vector<std::string> constants;         // co_consts in order, rendered as Python literals
  std::vector<std::string> string_constants;  // every str (and bytes) in co_consts, tuples included
  std::vector<std::string> other_constants;   // the non-str constants of co_consts, rendered
  std::vector<MarshalCode> nested;            // code objects among the constants (inner functions)
};

struct MarshalResult {
  bool ok = false;            // the buffer held one well-formed marshal object
  std::string error;          // why not, with the byte offset; empty when ok
  std::string python_family;  // "3.11+", "3.8-3.10", "3.0-3.7", "2.7"; empty when no code object was read
  std::optional<MarshalCode> code;  // empty when the object is not a code object (see `top_level`)
  std::string top_level;            // the object's type: "code", "tuple", "str", ...
  std::size_t trailing_bytes = 0;   // bytes after the object; marshal.loads ignores them
};

inline constexpr std::size_t kMarshalKeepBytes = 256;  // bytes kept of each string
inline constexpr int kMarshalMaxDepth = 64;            // nesting of containers and code objects
inline constexpr std::size_t kMarshalMaxObjects = 100000;
inline constexpr std::size_t kMarshalMaxListed = 1000;  // entries kept in each list of a MarshalCode

// Reads one marshalled object. When it is a code object, tries the code layouts of each Python
// family and keeps the first that reads cleanly (the whole buffer, with well-typed fields). Never
// throws and never reads past `bytes`.
MarshalResult read_marshalled_code(std::span<const std::uint8_t> bytes);

// Base64 as Keras writes it; the decoder lives in core (signatures use it too).
using core::decode_base64;

// One evidence line, nested code objects included, at most `max_chars` characters, e.g.
// "code <lambda> (file x.py): names [__import__, system]; constants [None, 'os', 'echo hi']".
std::string summarize_code(const MarshalCode& code, std::size_t max_chars = 1000);

}  // namespace aegis::formats
