// Decoding of payloads smuggled past a filter in an encoding a model can read: base64 (standard
// and URL-safe), hex (plain runs and \x41 / 0x41 escapes), ROT13, leetspeak, URL percent escapes,
// HTML character references, reversed text. Each decoder only reports a segment when the decoded
// form reads better than the original (printable UTF-8, more dictionary words), so ordinary text
// yields nothing. Decoding nests (base64 of hex of ...) up to max_depth.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::guard {

enum class Encoding { Base64, Hex, Rot13, Leetspeak, Url, Html, Reversed, UnicodeTags };

// "base64", "hex", "rot13", "leetspeak", "url", "html", "reversed", "unicode-tags".
std::string_view encoding_name(Encoding encoding);

struct DecodedSegment {
  std::vector<Encoding> chain;  // outermost first: {Base64, Rot13} = base64 of rot13 text
  std::size_t begin = 0;        // span of the scanned text the segment was decoded from, [begin, end)
  std::size_t end = 0;
  std::string text;             // decoded, valid UTF-8
};

struct DecodeOptions {
  std::size_t min_base64_chars = 16;  // shorter runs are left alone (ids, hashes of that size are common)
  std::size_t min_hex_chars = 16;
  int max_depth = 3;                  // nested decodings followed
  std::size_t max_segments = 64;      // per call
  std::size_t max_output_bytes = 1u << 18;  // total decoded bytes per call; decoding stops beyond
};

// The decoded segments of `text` (usually NormalizedText::text), in order of `begin`, each
// segment's nested decodings after it. Never throws on any input; time and memory are linear in
// the input (bounded by max_output_bytes).
std::vector<DecodedSegment> decode_smuggled(std::string_view text, const DecodeOptions& options = {});

// How much a text reads like English: the share of its words (ASCII letters, 2+ long) that are in
// a built-in list of common English words and instruction verbs, 0..1. The decoders use it to
// decide whether a decoding is worth reporting.
double english_word_share(std::string_view text);

}  // namespace aegis::guard
