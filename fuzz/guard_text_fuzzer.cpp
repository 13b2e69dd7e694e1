// libFuzzer target for the text normaliser and the smuggled-payload decoders: any bytes as an
// untrusted prompt (the first byte, when present, picks options: a small max_input_bytes, steps
// turned off, shallow or deep decoding), then the promises of text_normalize.h and decode.h are
// checked (offsets one per output byte plus the end, non-decreasing, inside the input; the output
// and every decoded segment valid UTF-8; segments inside the text, within the bounds, top-level
// ones in order). A broken promise aborts.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "aegis/guard/decode.h"
#include "aegis/guard/text_normalize.h"

namespace {

bool valid_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto b0 = static_cast<unsigned char>(s[i]);
    std::size_t n;
    char32_t cp;
    if (b0 < 0x80) {
      ++i;
      continue;
    }
    if (b0 >= 0xC2 && b0 <= 0xDF) {
      n = 2;
      cp = b0 & 0x1F;
    } else if (b0 >= 0xE0 && b0 <= 0xEF) {
      n = 3;
      cp = b0 & 0x0F;
    } else if (b0 >= 0xF0 && b0 <= 0xF4) {
      n = 4;
      cp = b0 & 0x07;
    } else {
      return false;
    }
    if (i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += n;
  }
  return true;
}

void check_normalized(std::string_view input, const aegis::guard::NormalizedText& n) {
  if (n.offsets.size() != n.text.size() + 1) std::abort();
  if (!valid_utf8(n.text)) std::abort();
  for (std::size_t i = 1; i < n.offsets.size(); ++i)
    if (n.offsets[i - 1] > n.offsets[i]) std::abort();
  if (n.offsets.back() > input.size()) std::abort();
  if (!n.truncated && n.offsets.back() != input.size()) std::abort();
  if (n.bidi_controls > n.invisible_removed) std::abort();
  if (n.tag_payload.size() > input.size() / 4) std::abort();
}

void check_segments(std::string_view text, const std::vector<aegis::guard::DecodedSegment>& segments,
                    const aegis::guard::DecodeOptions& options) {
  if (segments.size() > options.max_segments) std::abort();
  std::size_t total = 0;
  std::size_t last_begin = 0;
  for (const auto& s : segments) {
    if (s.chain.empty() || static_cast<int>(s.chain.size()) > options.max_depth) std::abort();
    if (s.begin >= s.end || s.end > text.size()) std::abort();
    if (!valid_utf8(s.text)) std::abort();
    if (s.chain.size() == 1) {
      if (s.begin < last_begin) std::abort();
      last_begin = s.begin;
    }
    total += s.text.size();
  }
  if (total > options.max_output_bytes) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  aegis::guard::NormalizeOptions normalize;
  aegis::guard::DecodeOptions decode;
  if (size > 0) {
    const std::uint8_t flags = data[0];
    if (flags & 0x01) normalize.max_input_bytes = 16 + (flags >> 4);
    if (flags & 0x02) normalize.nfkc = false;
    if (flags & 0x04) normalize.lowercase = false;
    if (flags & 0x08) {
      normalize.strip_invisible = false;
      normalize.collapse_whitespace = false;
    }
    decode.max_depth = 1 + (flags >> 6);
    if (flags & 0x10) {
      decode.min_base64_chars = 4;
      decode.min_hex_chars = 4;
      decode.max_segments = 8;
      decode.max_output_bytes = 256;
    }
    ++data;
    --size;
  }
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const auto normalized = aegis::guard::normalize_text(input, normalize);
  check_normalized(input, normalized);
  check_segments(input, aegis::guard::decode_smuggled(input, decode), decode);
  check_segments(normalized.text, aegis::guard::decode_smuggled(normalized.text, decode), decode);
  if (!normalized.tag_payload.empty())
    check_segments(normalized.tag_payload, aegis::guard::decode_smuggled(normalized.tag_payload, decode), decode);
  (void)aegis::guard::english_word_share(input);
  return 0;
}
