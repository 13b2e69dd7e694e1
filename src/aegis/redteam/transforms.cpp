// Transforms over a probe's payload: the encoders that guard/decode.h reads back, and the wrappers
// (split, many-shot, role-play, translation) that jailbreakers use. Chains compose left to right.
#include <algorithm>
#include <cstdint>

#include "aegis/core/base64.h"
#include "aegis/core/error.h"
#include "aegis/core/text.h"
#include "aegis/redteam/redteam.h"

namespace aegis::redteam {
namespace {

constexpr char kHexDigits[] = "0123456789abcdef";

// Decodes one UTF-8 code point at text[i] (advancing i); invalid bytes come out as themselves.
std::uint32_t next_code_point(std::string_view text, std::size_t& i) {
  const auto c = static_cast<unsigned char>(text[i]);
  std::size_t extra = 0;
  std::uint32_t cp = 0;
  if (c < 0x80) {
    ++i;
    return c;
  }
  if (c >= 0xF0 && c < 0xF8) extra = 3, cp = c & 0x07u;
  else if (c >= 0xE0 && c < 0xF0) extra = 2, cp = c & 0x0Fu;
  else if (c >= 0xC0 && c < 0xE0) extra = 1, cp = c & 0x1Fu;
  if (extra == 0 || i + extra >= text.size()) {
    ++i;
    return c;
  }
  for (std::size_t k = 1; k <= extra; ++k) {
    const auto d = static_cast<unsigned char>(text[i + k]);
    if ((d & 0xC0) != 0x80) {
      ++i;
      return c;
    }
    cp = (cp << 6) | (d & 0x3Fu);
  }
  i += extra + 1;
  return cp;
}

// Splits text into UTF-8 characters (each a string of 1-4 bytes).
std::vector<std::string_view> characters(std::string_view text) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t start = i;
    next_code_point(text, i);
    out.push_back(text.substr(start, i - start));
  }
  return out;
}

void replace_all(std::string& text, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  std::size_t pos = 0;
  while ((pos = text.find(from, pos)) != std::string::npos) {
    text.replace(pos, from.size(), to);
    pos += to.size();
  }
}

bool is_word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) != 0; }

// Split encoder: the payload cut at word boundaries into `parts` string variables a, b, c...
std::pair<std::string, std::string> split_payload(std::string_view payload, int parts) {
  std::vector<std::size_t> spaces;
  for (std::size_t i = 0; i < payload.size(); ++i)
    if (payload[i] == ' ') spaces.push_back(i);
  std::vector<std::size_t> cuts;
  const std::size_t n = static_cast<std::size_t>(std::max(parts, 2));
  for (std::size_t k = 1; k < n; ++k) {
    const std::size_t want = payload.size() * k / n;
    std::size_t best = want;
    if (!spaces.empty()) {
      best = spaces.front();
      for (auto s : spaces)
        if ((s > want ? s - want : want - s) < (best > want ? best - want : want - best)) best = s;
    }
    if (cuts.empty() || best > cuts.back()) cuts.push_back(best);
  }
  std::string assignments, vars;
  std::size_t begin = 0;
  for (std::size_t k = 0; k <= cuts.size(); ++k) {
    const std::size_t end = k < cuts.size() ? cuts[k] : payload.size();
    std::string piece(payload.substr(begin, end - begin));
    replace_all(piece, "\\", "\\\\");
    replace_all(piece, "\"", "\\\"");
    const char name = static_cast<char>('a' + k);
    assignments += std::string(1, name) + " = \"" + piece + "\"\n";
    vars += (k ? " + " : "") + std::string(1, name);
    begin = end;
  }
  if (!assignments.empty()) assignments.pop_back();
  return {assignments, vars};
}

}  // namespace

std::string encode_hex(std::string_view text) {
  std::string out;
  out.reserve(text.size() * 2);
  for (unsigned char c : text) {
    out += kHexDigits[c >> 4];
    out += kHexDigits[c & 0xF];
  }
  return out;
}

std::string encode_rot13(std::string_view text) {
  std::string out(text);
  for (auto& c : out) {
    if (c >= 'a' && c <= 'z') c = static_cast<char>('a' + (c - 'a' + 13) % 26);
    else if (c >= 'A' && c <= 'Z') c = static_cast<char>('A' + (c - 'A' + 13) % 26);
  }
  return out;
}

std::string encode_leetspeak(std::string_view text) {
  std::string out(text);
  for (auto& c : out) {
    switch (c) {
      case 'a': case 'A': c = '4'; break;
      case 'e': case 'E': c = '3'; break;
      case 'i': case 'I': c = '1'; break;
      case 'o': case 'O': c = '0'; break;
      case 's': case 'S': c = '5'; break;
      case 't': case 'T': c = '7'; break;
      default: break;
    }
  }
  return out;
}

std::string encode_url(std::string_view text) {
  std::string out;
  out.reserve(text.size() * 3);
  for (unsigned char c : text) {
    if (std::isalnum(c)) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += static_cast<char>(std::toupper(kHexDigits[c >> 4]));
      out += static_cast<char>(std::toupper(kHexDigits[c & 0xF]));
    }
  }
  return out;
}

std::string encode_html(std::string_view text) {
  std::string out;
  std::size_t i = 0;
  while (i < text.size()) {
    const std::uint32_t cp = next_code_point(text, i);
    char buffer[16];
    std::snprintf(buffer, sizeof buffer, "&#x%X;", cp);
    out += buffer;
  }
  return out;
}

std::string reverse_text(std::string_view text) {
  auto chars = characters(text);
  std::string out;
  out.reserve(text.size());
  for (auto it = chars.rbegin(); it != chars.rend(); ++it) out += *it;
  return out;
}

std::string encode_unicode_tags(std::string_view text) {
  std::string out;
  out.reserve(text.size() * 4);
  for (unsigned char c : text)
    if (c >= 0x20 && c < 0x7F) core::append_utf8(out, 0xE0000u + c);
    else if (c == '\n') core::append_utf8(out, 0xE0020u);  // tags have no newline: a tag space
  return out;
}

std::string insert_zero_width(std::string_view text, std::mt19937_64& rng) {
  // Inside every word of 3+ letters, a zero-width space or joiner after one or two letters.
  static constexpr std::string_view marks[] = {"\u200B", "\u200C", "\u200D", "\u2060"};
  std::string out;
  std::size_t run = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    out += text[i];
    if (is_word_char(text[i])) {
      ++run;
      const bool next_word = i + 1 < text.size() && is_word_char(text[i + 1]);
      if (next_word && (run == 1 || (rng() % 3 == 0))) out += marks[rng() % 4];
    } else {
      run = 0;
    }
  }
  return out;
}

std::string apply_homoglyphs(std::string_view text, std::mt19937_64& rng) {
  // Latin letters and look-alikes that render the same in common fonts (Cyrillic, Greek).
  struct Glyph {
    char latin;
    const char* other;
  };
  static constexpr Glyph glyphs[] = {{'a', "\u0430"}, {'c', "\u0441"}, {'e', "\u0435"}, {'i', "\u0456"}, {'j', "\u0458"},
                                     {'o', "\u043E"}, {'p', "\u0440"}, {'s', "\u0455"}, {'x', "\u0445"}, {'y', "\u0443"},
                                     {'A', "\u0391"}, {'B', "\u0392"}, {'E', "\u0395"}, {'H', "\u0397"}, {'I', "\u0399"},
                                     {'K', "\u039A"}, {'M', "\u039C"}, {'N', "\u039D"}, {'O', "\u039F"}, {'P', "\u03A1"},
                                     {'T', "\u03A4"}, {'X', "\u03A7"}};
  std::string out;
  out.reserve(text.size() * 2);
  for (char c : text) {
    const Glyph* g = nullptr;
    for (const auto& candidate : glyphs)
      if (candidate.latin == c) g = &candidate;
    if (g && rng() % 2 == 0) out += g->other;
    else out += c;
  }
  return out;
}

namespace {

const TransformSpec* find_transform(const Catalog& catalog, std::string_view name) {
  for (const auto& t : catalog.transforms)
    if (t.name == name) return &t;
  return nullptr;
}

std::vector<std::string> chain_names(std::string_view chain) {
  std::vector<std::string> names;
  std::size_t start = 0;
  while (start <= chain.size()) {
    const auto plus = chain.find('+', start);
    const auto name = chain.substr(start, plus == std::string_view::npos ? std::string_view::npos : plus - start);
    if (!name.empty() && name != "none") names.emplace_back(name);
    if (plus == std::string_view::npos) break;
    start = plus + 1;
  }
  return names;
}

[[noreturn]] void unknown_transform(const Catalog& catalog, std::string_view name) {
  std::string known = "none";
  for (const auto& t : catalog.transforms) known += ", " + t.name;
  throw core::Error("unknown transform '" + std::string(name) + "'",
                    "use one of: " + known + " (chain them with '+', e.g. rot13+base64)");
}

}  // namespace

std::string apply_transform_chain(const Catalog& catalog, std::string_view chain, std::string payload,
                                  std::mt19937_64& rng) {
  for (const auto& name : chain_names(chain)) {
    const auto* t = find_transform(catalog, name);
    if (!t) unknown_transform(catalog, name);
    std::string encoded, vars;
    const auto& e = t->encoder;
    if (e == "identity") encoded = payload;
    else if (e == "base64") encoded = core::encode_base64(payload);
    else if (e == "hex") encoded = encode_hex(payload);
    else if (e == "rot13") encoded = encode_rot13(payload);
    else if (e == "leetspeak") encoded = encode_leetspeak(payload);
    else if (e == "url") encoded = encode_url(payload);
    else if (e == "html") encoded = encode_html(payload);
    else if (e == "reversed") encoded = reverse_text(payload);
    else if (e == "unicode-tags") encoded = encode_unicode_tags(payload);
    else if (e == "zero-width") encoded = insert_zero_width(payload, rng);
    else if (e == "homoglyph") encoded = apply_homoglyphs(payload, rng);
    else if (e == "split") std::tie(encoded, vars) = split_payload(payload, t->parts);
    else if (e == "many-shot") {
      if (catalog.many_shot_examples.empty())
        throw core::Error("transform " + t->name + " needs many_shot_examples", "add a many_shot_examples section to a catalog file");
      // Shots drawn in a seeded order (repeating when N exceeds the examples), then the real question.
      std::vector<std::size_t> order(catalog.many_shot_examples.size());
      for (std::size_t k = 0; k < order.size(); ++k) order[k] = k;
      std::shuffle(order.begin(), order.end(), rng);
      for (int k = 0; k < t->shots; ++k) {
        const auto& [q, a] = catalog.many_shot_examples[order[static_cast<std::size_t>(k) % order.size()]];
        encoded += "User: " + q + "\nAssistant: " + a + "\n\n";
      }
      encoded += "User: " + payload + "\nAssistant:";
    } else {
      unknown_transform(catalog, name);
    }
    std::string wrapped = t->wrapper;
    // {vars} first: the payload may itself contain the text "{vars}".
    replace_all(wrapped, "{vars}", vars);
    const auto at = wrapped.find("{payload}");
    if (at != std::string::npos) wrapped.replace(at, 9, encoded);
    payload = std::move(wrapped);
  }
  return payload;
}

std::vector<std::string> chain_techniques(const Catalog& catalog, std::string_view chain) {
  std::vector<std::string> out;
  for (const auto& name : chain_names(chain)) {
    const auto* t = find_transform(catalog, name);
    if (!t) unknown_transform(catalog, name);
    if (!t->atlas.empty() && std::find(out.begin(), out.end(), t->atlas) == out.end()) out.push_back(t->atlas);
  }
  return out;
}

}  // namespace aegis::redteam
