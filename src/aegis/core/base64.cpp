#include "aegis/core/base64.h"

namespace aegis::core {

std::string encode_base64(std::span<const std::uint8_t> bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    std::uint32_t v = (std::uint32_t{bytes[i]} << 16) | (std::uint32_t{bytes[i + 1]} << 8) | bytes[i + 2];
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += kAlphabet[v & 63];
  }
  if (bytes.size() - i == 1) {
    std::uint32_t v = std::uint32_t{bytes[i]} << 16;
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += "==";
  } else if (bytes.size() - i == 2) {
    std::uint32_t v = (std::uint32_t{bytes[i]} << 16) | (std::uint32_t{bytes[i + 1]} << 8);
    out += kAlphabet[v >> 18];
    out += kAlphabet[(v >> 12) & 63];
    out += kAlphabet[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

std::optional<std::vector<std::uint8_t>> decode_base64(std::string_view text) {
  std::vector<std::uint8_t> out;
  out.reserve(text.size() / 4 * 3 + 3);
  std::uint32_t quad = 0;
  int quad_pos = 0;
  int pads = 0;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') continue;
    int value = base64_digit_value(c);
    if (c == '=') {
      // Padding completes the current group of four: "xx==" or "xxx=".
      if (quad_pos + pads < 2) return std::nullopt;
      ++pads;
      if (quad_pos + pads > 4) return std::nullopt;
      continue;
    }
    if (value < 0 || pads > 0) return std::nullopt;
    quad = (quad << 6) | static_cast<std::uint32_t>(value);
    if (++quad_pos == 4) {
      out.push_back(static_cast<std::uint8_t>(quad >> 16));
      out.push_back(static_cast<std::uint8_t>(quad >> 8));
      out.push_back(static_cast<std::uint8_t>(quad));
      quad = 0;
      quad_pos = 0;
    }
  }
  if (pads > 0) {
    if (quad_pos + pads != 4) return std::nullopt;
    if (quad_pos == 2) {
      out.push_back(static_cast<std::uint8_t>(quad >> 4));
    } else {
      out.push_back(static_cast<std::uint8_t>(quad >> 10));
      out.push_back(static_cast<std::uint8_t>(quad >> 2));
    }
    return out;
  }
  if (quad_pos != 0) return std::nullopt;
  return out;
}

}  // namespace aegis::core
