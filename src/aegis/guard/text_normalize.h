// Normalisation of untrusted text before any guard looks at it: what an attacker does to make
// "ignore previous instructions" look like something else to a filter but the same to a model.
// Unicode NFKC (fullwidth and mathematical letters, ligatures), confusables folded (Cyrillic and
// Greek look-alikes to Latin, as in Unicode TR39's skeletons), invisible characters removed
// (zero-width, soft hyphen, variation selectors, bidi controls, Unicode tag characters), case folded.
// ICU does the Unicode work. Any bytes are accepted: invalid UTF-8 becomes U+FFFD.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::guard {

struct NormalizeOptions {
  bool nfkc = true;
  bool fold_confusables = true;  // TR39 skeleton mapping, only for characters that are not ASCII
  bool lowercase = true;         // Unicode case folding
  bool strip_invisible = true;   // zero-width, bidi controls, tag characters, variation selectors
  bool collapse_whitespace = true;  // runs of whitespace (any Unicode space) become one ' '
  std::size_t max_input_bytes = 1u << 20;  // longer input is cut here (and NormalizedText::truncated set)
};

struct NormalizedText {
  std::string text;  // valid UTF-8
  // For each byte of `text`, the byte offset in the input it came from; one extra entry at the end
  // (the input length), so that a span [b, e) of text maps to [offsets[b], offsets[e]) of the input.
  std::vector<std::size_t> offsets;
  std::size_t invisible_removed = 0;    // characters dropped by strip_invisible
  std::size_t bidi_controls = 0;        // of which bidi controls (U+202A..202E, U+2066..2069, U+200E/F, U+061C)
  std::size_t confusables_folded = 0;   // characters replaced by their skeleton
  std::size_t compatibility_changed = 0;  // characters NFKC changed (fullwidth, math alphanumerics, ...)
  std::size_t invalid_utf8 = 0;         // ill-formed sequences replaced by U+FFFD
  // Unicode tag characters (U+E0020..U+E007E) mirror ASCII invisibly ("ASCII smuggling"); their
  // ASCII reading, in order, is kept here so that the guards can scan the hidden message too.
  std::string tag_payload;
  bool truncated = false;
  // True when anything an attacker would use for obfuscation was seen (invisible characters, bidi
  // controls, confusables, tag characters, compatibility forms outside ordinary typography).
  bool obfuscated() const {
    return invisible_removed > 0 || confusables_folded > 0 || !tag_payload.empty() || compatibility_changed > 0;
  }
};

// Thread-safe; allocation is linear in the input.
NormalizedText normalize_text(std::string_view input, const NormalizeOptions& options = {});

}  // namespace aegis::guard
