// Normalisation of untrusted text (see text_normalize.h). Two paths: pure ASCII text (most prompts)
// never touches ICU; anything else is decoded code point by code point, invisible characters are
// dropped, and the rest is cut into normalisation segments (a starter and its combining marks)
// that ICU normalises, case-folds and maps through TR39 skeletons one at a time, so that every
// output byte knows the input offset it came from. Single code points, the common case, are
// cached per thread.
#include "aegis/guard/text_normalize.h"

#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/uscript.h>
#include <unicode/unistr.h>
#include <unicode/uspoof.h>
#include <unicode/utf16.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <unordered_map>

#include "aegis/core/error.h"
#include "aegis/core/text.h"

namespace aegis::guard {
namespace {

constexpr char32_t kReplacement = 0xFFFD;
// Segments longer than this (Zalgo text: one letter under hundreds of marks) are cut, which bounds
// ICU's per-segment work; the cut only changes how such a pile of marks is ordered.
constexpr std::size_t kMaxSegment = 32;
constexpr std::size_t kMaxCacheEntries = 1u << 14;

bool is_ascii_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }
char ascii_lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + ('a' - 'A')) : c; }
bool is_ascii_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

// One code point from UTF-8; ill-formed input yields U+FFFD over its maximal subpart (Unicode
// chapter 3, "U+FFFD substitution of maximal subparts"), so that no valid byte is swallowed.
struct Decoded {
  char32_t cp;
  std::size_t length;
  bool valid;
};

Decoded decode_utf8(const unsigned char* p, std::size_t n) {
  const unsigned char b0 = p[0];
  if (b0 < 0x80) return {b0, 1, true};
  std::size_t need = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  char32_t cp = 0;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    need = 1;
    cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    need = 2;
    cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    need = 3;
    cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return {kReplacement, 1, false};
  }
  std::size_t i = 1;
  for (; i <= need; ++i) {
    if (i >= n) return {kReplacement, i, false};
    const unsigned char b = p[i];
    if (b < lo || b > hi) return {kReplacement, i, false};
    lo = 0x80;
    hi = 0xBF;
    cp = (cp << 6) | (b & 0x3F);
  }
  return {cp, i, true};
}

using core::append_utf8;

bool is_bidi_control(char32_t cp) {
  return (cp >= 0x202A && cp <= 0x202E) || (cp >= 0x2066 && cp <= 0x2069) || cp == 0x200E || cp == 0x200F ||
         cp == 0x061C;
}

// Default_Ignorable_Code_Point (Unicode DerivedCoreProperties), written out so that the hot loop
// needs no property lookup: zero-width characters, soft hyphen, bidi controls, variation
// selectors, tag characters, fillers.
bool is_invisible(char32_t cp) {
  if (cp < 0xAD) return false;
  if (cp == 0xAD || cp == 0x034F || cp == 0x061C || cp == 0x115F || cp == 0x1160 || cp == 0x17B4 || cp == 0x17B5 ||
      cp == 0x3164 || cp == 0xFEFF || cp == 0xFFA0)
    return true;
  if (cp >= 0x180B && cp <= 0x180F) return true;
  if (cp >= 0x200B && cp <= 0x200F) return true;
  if (cp >= 0x202A && cp <= 0x202E) return true;
  if (cp >= 0x2060 && cp <= 0x206F) return true;
  if (cp >= 0xFE00 && cp <= 0xFE0F) return true;
  if (cp >= 0xFFF0 && cp <= 0xFFF8) return true;
  if (cp >= 0x1BCA0 && cp <= 0x1BCA3) return true;
  if (cp >= 0x1D173 && cp <= 0x1D17A) return true;
  return cp >= 0xE0000 && cp <= 0xE0FFF;  // tags, variation selectors supplement, reserved
}

// A compatibility character an attacker picks to dodge a filter (fullwidth and mathematical
// letters, circled and squared letters, modifier-letter "superscript" alphabets), as opposed to the
// compatibility characters of ordinary typography and scripts (no-break spaces, ellipsis,
// ligatures, fractions, Latin-1 superscripts, CJK and Arabic presentation forms, fullwidth
// punctuation in Chinese text), which NFKC also changes but which say nothing about intent.
bool is_obfuscating_compat(char32_t cp) {
  const auto type = static_cast<UDecompositionType>(u_getIntPropertyValue(static_cast<UChar32>(cp), UCHAR_DECOMPOSITION_TYPE));
  switch (type) {
    case U_DT_NONE:
    case U_DT_CANONICAL:
    case U_DT_NOBREAK:
    case U_DT_FRACTION:
    case U_DT_NARROW:
    case U_DT_INITIAL:
    case U_DT_MEDIAL:
    case U_DT_FINAL:
    case U_DT_ISOLATED:
      return false;
    default:
      break;
  }
  if (cp >= 0xFF00 && cp <= 0xFFEF) {
    return (cp >= 0xFF10 && cp <= 0xFF19) || (cp >= 0xFF21 && cp <= 0xFF3A) || (cp >= 0xFF41 && cp <= 0xFF5A);
  }
  if (cp < 0x0250) return false;
  if (cp >= 0x2000 && cp <= 0x206F) return false;
  if (cp >= 0x2100 && cp <= 0x214F) return type == U_DT_FONT;  // ℯ ℊ ℋ count; ™ ℃ № do not
  if (cp >= 0x2150 && cp <= 0x218F) return false;
  if (cp >= 0x3000 && cp <= 0x33FF) return false;
  if (cp >= 0xFB00 && cp <= 0xFDFF) return false;
  if (cp >= 0xFE70 && cp <= 0xFEFF) return false;
  return true;
}

// What one normalisation segment becomes.
struct SegmentResult {
  std::string out;                 // UTF-8; Unicode spaces already ' ' when collapsing
  std::uint32_t compat = 0;        // code points NFKC changed for obfuscation-looking reasons
  std::uint32_t confusables = 0;   // letters of another script folded to Latin
  bool word = false;               // the segment starts with a letter or mark
  bool latin = false;              // it yields an ASCII letter that was not folded from another script
};

// ICU objects are per thread: Normalizer2 instances are shared and immutable, but the spoof
// checker and the caches are not shared so that nothing needs a lock.
class IcuTools {
 public:
  IcuTools() {
    UErrorCode status = U_ZERO_ERROR;
    nfkc_ = icu::Normalizer2::getNFKCInstance(status);
    nfd_ = icu::Normalizer2::getNFDInstance(status);
    spoof_ = uspoof_open(&status);
    if (U_FAILURE(status) || nfkc_ == nullptr || nfd_ == nullptr || spoof_ == nullptr) {
      if (spoof_ != nullptr) uspoof_close(spoof_);
      throw core::Error(std::string("text normalisation: ICU could not be initialised (") + u_errorName(status) + ")",
                        "check that the ICU data library (libicu72) is installed and matches the ICU headers");
    }
  }
  ~IcuTools() { uspoof_close(spoof_); }
  IcuTools(const IcuTools&) = delete;
  IcuTools& operator=(const IcuTools&) = delete;

  const icu::Normalizer2& nfkc() const { return *nfkc_; }

  const SegmentResult& single(char32_t cp, unsigned option_bits, const NormalizeOptions& options) {
    const std::uint32_t key = static_cast<std::uint32_t>(cp) | (static_cast<std::uint32_t>(option_bits) << 21);
    auto it = cache_.find(key);
    if (it != cache_.end()) return it->second;
    if (cache_.size() >= kMaxCacheEntries) cache_.clear();
    return cache_.emplace(key, segment(&cp, 1, options)).first->second;
  }

  SegmentResult segment(const char32_t* cps, std::size_t n, const NormalizeOptions& options) {
    SegmentResult r;
    const auto first = static_cast<UChar32>(cps[0]);
    r.word = u_isalpha(first) || (U_GET_GC_MASK(first) & U_GC_M_MASK) != 0;
    icu::UnicodeString text;
    for (std::size_t i = 0; i < n; ++i) {
      text.append(static_cast<UChar32>(cps[i]));
      if (options.nfkc && is_obfuscating_compat(cps[i])) ++r.compat;
    }
    UErrorCode status = U_ZERO_ERROR;
    if (options.nfkc) {
      icu::UnicodeString normalized = nfkc_->normalize(text, status);
      if (U_SUCCESS(status)) text = std::move(normalized);
      status = U_ZERO_ERROR;
    }
    if (options.lowercase) text.foldCase(U_FOLD_CASE_DEFAULT);
    for (int32_t i = 0; i < text.length();) {
      const UChar32 cp = text.char32At(i);
      i += U16_LENGTH(cp);
      if (cp < 0x80) {
        char c = static_cast<char>(cp);
        if (options.collapse_whitespace && is_ascii_space(static_cast<unsigned char>(c))) c = ' ';
        if (is_ascii_letter(c)) r.latin = true;
        r.out.push_back(c);
        continue;
      }
      if (options.collapse_whitespace && u_isUWhiteSpace(cp)) {
        r.out.push_back(' ');
        continue;
      }
      if (options.fold_confusables) {
        const std::string* folded = fold(static_cast<char32_t>(cp), options.lowercase);
        if (folded != nullptr) {
          r.out += *folded;
          // Folding is what makes "іgnоrе" readable; only letters from another script count as a
          // sign of spoofing (a Turkish dotless i is folded but is no disguise).
          if (u_isalpha(cp)) {
            UErrorCode script_status = U_ZERO_ERROR;
            const UScriptCode script = uscript_getScript(cp, &script_status);
            if (U_SUCCESS(script_status) && script != USCRIPT_LATIN) ++r.confusables;
          }
          continue;
        }
      }
      append_utf8(r.out, static_cast<char32_t>(cp));
    }
    return r;
  }

 private:
  // The TR39 skeleton of one non-ASCII code point when it is a look-alike of ASCII (perhaps with
  // combining marks, which are dropped): Cyrillic "і" -> "i", Greek "ο" -> "o", "ħ" -> "h".
  // Skeletons that land outside ASCII (Cyrillic "м" -> "ʍ", an em dash -> a katakana mark) are
  // not folds we want, and Latin letters with diacritics keep them ("é" stays "é", not "e").
  // nullptr when nothing is folded.
  const std::string* fold(char32_t cp, bool lowercase) {
    const std::uint32_t key = static_cast<std::uint32_t>(cp) | (lowercase ? (1u << 21) : 0u);
    auto it = folds_.find(key);
    if (it != folds_.end()) return it->second.has_value ? &it->second.text : nullptr;
    if (folds_.size() >= kMaxCacheEntries) folds_.clear();
    Fold f = compute_fold(cp, lowercase);
    auto inserted = folds_.emplace(key, std::move(f)).first;
    return inserted->second.has_value ? &inserted->second.text : nullptr;
  }

  struct Fold {
    bool has_value = false;
    std::string text;
  };

  Fold compute_fold(char32_t cp, bool lowercase) {
    Fold none;
    UErrorCode status = U_ZERO_ERROR;
    const icu::UnicodeString single(static_cast<UChar32>(cp));
    const icu::UnicodeString decomposed = nfd_->normalize(single, status);
    if (U_FAILURE(status) || decomposed.isEmpty() || decomposed.char32At(0) < 0x80) return none;
    // Skeletons do not keep case (Cyrillic "І" has the skeleton "l"): when case is kept, fold the
    // small letter and raise the result again.
    const bool upper = !lowercase && u_isupper(static_cast<UChar32>(cp));
    const icu::UnicodeString source = upper ? icu::UnicodeString(u_tolower(static_cast<UChar32>(cp))) : single;
    Fold f = skeleton_fold(source, u_isalpha(static_cast<UChar32>(cp)), lowercase, upper);
    // Case folding runs first, so a capital look-alike arrives here as its small letter, which may
    // not look like ASCII at all (Greek "Ε" is an E, its small "ε" is not an e). Try the capital.
    if (!f.has_value && lowercase) {
      const UChar32 capital = u_toupper(static_cast<UChar32>(cp));
      if (capital != static_cast<UChar32>(cp)) f = skeleton_fold(icu::UnicodeString(capital), u_isalpha(capital), true, false);
    }
    return f;
  }

  Fold skeleton_fold(const icu::UnicodeString& source, bool letter, bool lowercase, bool upper) {
    Fold none;
    UErrorCode status = U_ZERO_ERROR;
    icu::UnicodeString skeleton;
    uspoof_getSkeletonUnicodeString(spoof_, 0, source, skeleton, &status);
    if (U_FAILURE(status) || skeleton.isEmpty()) return none;
    Fold f;
    bool has_ascii = false;
    for (int32_t i = 0; i < skeleton.length();) {
      const UChar32 c = skeleton.char32At(i);
      i += U16_LENGTH(c);
      if (c < 0x80) {
        // Letters fold to letters only: Cyrillic "б" has the skeleton "6", which no reader takes
        // for a b, and a digit inside a word would only break it.
        if (letter && !is_ascii_letter(static_cast<char>(c))) return none;
        has_ascii = true;
        char ascii = static_cast<char>(c);
        if (lowercase) ascii = ascii_lower(ascii);
        if (upper && ascii >= 'a' && ascii <= 'z') ascii = static_cast<char>(ascii - ('a' - 'A'));
        f.text.push_back(ascii);
      } else if ((U_GET_GC_MASK(c) & U_GC_MN_MASK) != 0) {
        // Marks in a skeleton are part of the prototype ("ħ" is h with a stroke overlay, "ё" is e
        // with a diaeresis); the letter they sit on is what the look-alike is read as.
        continue;
      } else {
        return none;
      }
    }
    if (!has_ascii) return none;
    f.has_value = true;
    return f;
  }

  const icu::Normalizer2* nfkc_ = nullptr;
  const icu::Normalizer2* nfd_ = nullptr;
  USpoofChecker* spoof_ = nullptr;
  std::unordered_map<std::uint32_t, SegmentResult> cache_;
  std::unordered_map<std::uint32_t, Fold> folds_;
};

IcuTools& icu_tools() {
  thread_local IcuTools tools;
  return tools;
}

// Appends output bytes with their input offsets, collapsing runs of spaces, and keeps the
// per-word state that decides whether folded confusables count as spoofing: a word that mixes
// Latin letters with look-alikes from another script ("іgnоrе" with Cyrillic і, о, е) counts;
// Russian or Greek prose, folded all the same, does not.
class Emitter {
 public:
  Emitter(NormalizedText& out, bool collapse) : out_(out), collapse_(collapse) {}

  void byte(char c, std::size_t offset) {
    if (collapse_ && is_ascii_space(static_cast<unsigned char>(c))) {
      if (last_space_) return;
      c = ' ';
      last_space_ = true;
    } else {
      last_space_ = false;
    }
    out_.text.push_back(c);
    out_.offsets.push_back(offset);
  }

  void segment(const SegmentResult& r, std::size_t offset) {
    for (const char c : r.out) byte(c, offset);
    out_.compatibility_changed += r.compat;
    if (r.word) {
      pending_confusables_ += r.confusables;
      word_latin_ = word_latin_ || r.latin;
    } else {
      end_word();
    }
  }

  void ascii(char c, std::size_t offset) {
    byte(c, offset);
    if (is_ascii_letter(c)) {
      word_latin_ = true;
    } else {
      end_word();
    }
  }

  void end_word() {
    if (word_latin_) out_.confusables_folded += pending_confusables_;
    pending_confusables_ = 0;
    word_latin_ = false;
  }

 private:
  NormalizedText& out_;
  bool collapse_;
  bool last_space_ = false;
  std::size_t pending_confusables_ = 0;
  bool word_latin_ = false;
};

bool all_ascii(std::string_view s) {
  const char* p = s.data();
  std::size_t n = s.size();
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    if (w & 0x8080808080808080ull) return false;
  }
  for (; i < n; ++i)
    if (static_cast<unsigned char>(p[i]) >= 0x80) return false;
  return true;
}

// Most prompts are ASCII: no ICU, no per-byte branches beyond the space test, no reallocation.
void normalize_ascii(std::string_view input, const NormalizeOptions& options, NormalizedText& r) {
  r.text.resize(input.size());
  r.offsets.resize(input.size());
  char* out = r.text.data();
  std::size_t* offsets = r.offsets.data();
  std::size_t n = 0;
  bool last_space = false;
  for (std::size_t i = 0; i < input.size(); ++i) {
    char c = input[i];
    if (options.collapse_whitespace && is_ascii_space(static_cast<unsigned char>(c))) {
      if (last_space) continue;
      c = ' ';
      last_space = true;
    } else {
      last_space = false;
      if (options.lowercase) c = ascii_lower(c);
    }
    out[n] = c;
    offsets[n] = i;
    ++n;
  }
  r.text.resize(n);
  r.offsets.resize(n);
}

void normalize_unicode(std::string_view input, const NormalizeOptions& options, NormalizedText& r) {
  IcuTools& tools = icu_tools();
  const icu::Normalizer2& nfkc = tools.nfkc();
  const unsigned option_bits = (options.nfkc ? 1u : 0u) | (options.fold_confusables ? 2u : 0u) |
                               (options.lowercase ? 4u : 0u) | (options.collapse_whitespace ? 8u : 0u);
  Emitter emit(r, options.collapse_whitespace);
  std::array<char32_t, kMaxSegment> segment{};
  std::size_t segment_size = 0;
  std::size_t segment_offset = 0;

  const auto flush = [&]() {
    if (segment_size == 0) return;
    if (segment_size == 1 && segment[0] < 0x80) {
      const char c = static_cast<char>(segment[0]);
      emit.ascii(options.lowercase ? ascii_lower(c) : c, segment_offset);
    } else if (segment_size == 1) {
      emit.segment(tools.single(segment[0], option_bits, options), segment_offset);
    } else {
      emit.segment(tools.segment(segment.data(), segment_size, options), segment_offset);
    }
    segment_size = 0;
  };

  const auto* bytes = reinterpret_cast<const unsigned char*>(input.data());
  std::size_t pos = 0;
  while (pos < input.size()) {
    const std::size_t offset = pos;
    char32_t cp;
    if (bytes[pos] < 0x80) {
      cp = bytes[pos];
      ++pos;
    } else {
      const Decoded d = decode_utf8(bytes + pos, input.size() - pos);
      cp = d.cp;
      pos += d.length;
      if (!d.valid) ++r.invalid_utf8;
      if (cp >= 0xE0000 && cp <= 0xE007F) {
        if (cp >= 0xE0020 && cp <= 0xE007E) r.tag_payload.push_back(static_cast<char>(cp - 0xE0000));
      }
      if (options.strip_invisible && is_invisible(cp)) {
        ++r.invisible_removed;
        if (is_bidi_control(cp)) ++r.bidi_controls;
        continue;
      }
    }
    const bool boundary = cp < 0x80 || !options.nfkc || nfkc.hasBoundaryBefore(static_cast<UChar32>(cp));
    if (segment_size > 0 && (boundary || segment_size == kMaxSegment)) flush();
    if (segment_size == 0) segment_offset = offset;
    segment[segment_size++] = cp;
  }
  flush();
  emit.end_word();
}

}  // namespace

NormalizedText normalize_text(std::string_view input, const NormalizeOptions& options) {
  NormalizedText r;
  if (input.size() > options.max_input_bytes) {
    std::size_t cut = options.max_input_bytes;
    // Cut before a character, not inside one, so that the cut alone adds no U+FFFD.
    for (int back = 0; back < 3 && cut > 0 && (static_cast<unsigned char>(input[cut]) & 0xC0) == 0x80; ++back) --cut;
    input = input.substr(0, cut);
    r.truncated = true;
  }
  r.text.reserve(input.size() + 8);
  r.offsets.reserve(input.size() + 9);
  if (all_ascii(input)) {
    normalize_ascii(input, options, r);
  } else {
    normalize_unicode(input, options, r);
  }
  r.offsets.push_back(input.size());
  return r;
}

}  // namespace aegis::guard
