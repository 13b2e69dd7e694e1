// Python's repr() escaping, shared by the pickle machine, the marshal reader and the model_signing
// v0.2 compatibility check: what a Python program would print for a str or bytes value.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace aegis::core {

inline std::size_t utf8_sequence_length(const std::uint8_t* p, std::size_t n) {
  const std::uint8_t b = p[0];
  std::size_t len = 0;
  std::uint32_t min = 0;
  if (b >= 0xC2 && b <= 0xDF) {
    len = 2, min = 0x80;
  } else if (b >= 0xE0 && b <= 0xEF) {
    len = 3, min = 0x800;
  } else if (b >= 0xF0 && b <= 0xF4) {
    len = 4, min = 0x10000;
  } else {
    return 0;
  }
  if (n < len) return 0;
  std::uint32_t cp = b & (0x7F >> len);
  for (std::size_t i = 1; i < len; ++i) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return len;
}

inline void append_hex_byte(std::string& out, std::uint8_t b) {
  static constexpr char kDigits[] = "0123456789abcdef";
  out += "\\x";
  out += kDigits[b >> 4];
  out += kDigits[b & 0xF];
}

// Appends `text` escaped like a Python repr body (without quotes) until `limit` characters of
// `out` are used; returns false when it had to stop early.
// `named_escapes`: \n, \r and \t as Python writes them (else \xNN like other control bytes).
inline bool append_python_escaped(std::string& out, std::string_view text, char quote, bool bytes, std::size_t limit,
                                  bool named_escapes = true) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(text.data());
  const std::size_t n = text.size();
  for (std::size_t i = 0; i < n;) {
    if (out.size() >= limit) return false;
    const std::uint8_t b = p[i];
    if (b == '\\' || (quote != 0 && b == static_cast<std::uint8_t>(quote))) {
      out += '\\';
      out += static_cast<char>(b);
    } else if (named_escapes && b == '\n') {
      out += "\\n";
    } else if (named_escapes && b == '\r') {
      out += "\\r";
    } else if (named_escapes && b == '\t') {
      out += "\\t";
    } else if (b >= 0x20 && b < 0x7F) {
      out += static_cast<char>(b);
    } else if (b >= 0x80 && !bytes) {
      const std::size_t len = utf8_sequence_length(p + i, n - i);
      if (len == 0) {
        append_hex_byte(out, b);
      } else {
        out.append(text.substr(i, len));
        i += len;
        continue;
      }
    } else {
      append_hex_byte(out, b);
    }
    ++i;
  }
  return true;
}

}  // namespace aegis::core
