// Standard base64 (RFC 4648, with padding): signature bundles, DSSE envelopes, Keras bytecode.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::core {

std::string encode_base64(std::span<const std::uint8_t> bytes);
inline std::string encode_base64(std::string_view text) {
  return encode_base64(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(text.data()), text.size()));
}

// Skips ASCII whitespace; anything else outside the alphabet, or misplaced padding, is nullopt.
std::optional<std::vector<std::uint8_t>> decode_base64(std::string_view text);

}  // namespace aegis::core
