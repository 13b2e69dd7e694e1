// Standard base64 (RFC 4648, with padding): signature bundles, DSSE envelopes, Keras bytecode.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::core {

// Value of one base64 digit (A-Z a-z 0-9 + /), or -1.
inline int base64_digit_value(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

std::string encode_base64(std::span<const std::uint8_t> bytes);
inline std::string encode_base64(std::string_view text) {
  return encode_base64(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

// Skips ASCII whitespace; anything else outside the alphabet, or misplaced padding, is nullopt.
std::optional<std::vector<std::uint8_t>> decode_base64(std::string_view text);

}  // namespace aegis::core
