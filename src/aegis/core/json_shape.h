// A linear pass over JSON text that bounds what a recursive DOM parser (nlohmann) will be asked to
// build: nesting depth (one stack frame per level) and the number of values (tens of bytes each).
// Run it on any JSON from a file before parsing it.
#pragma once

#include <cstdint>
#include <string_view>

namespace aegis::core {

struct JsonShape {
  int depth = 0;              // deepest bracket nesting outside strings (counting stops past max_depth)
  std::uint64_t values = 0;   // separators and openers outside strings: about one per value
};

inline JsonShape measure_json(std::string_view text, int max_depth) {
  JsonShape shape;
  int depth = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '{' || c == '[') {
      ++shape.values;
      if (++depth > shape.depth) shape.depth = depth;
      if (shape.depth > max_depth) return shape;
    } else if (c == '}' || c == ']') {
      --depth;
    } else if (c == ',' || c == ':') {
      ++shape.values;
    }
  }
  return shape;
}

}  // namespace aegis::core
