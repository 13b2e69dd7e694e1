#include "aegis/assess/report_text.h"

#include <cmath>
#include <cstdio>

#include "aegis/assess/report_writer.h"

namespace aegis::assess {
namespace report_text {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 sequence starting at text[i] (1-4), or 0 when it is not one. Rejects
// overlong forms, surrogates and code points above U+10FFFF, as RFC 3629 does.
std::size_t utf8_sequence_length(std::string_view text, std::size_t i) {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(text[k]); };
  const unsigned char lead = byte(i);
  if (lead < 0x80) return 1;
  std::size_t length = 0;
  unsigned char low = 0x80, high = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead == 0xE0) {
    length = 3, low = 0xA0;
  } else if ((lead >= 0xE1 && lead <= 0xEC) || lead == 0xEE || lead == 0xEF) {
    length = 3;
  } else if (lead == 0xED) {
    length = 3, high = 0x9F;
  } else if (lead == 0xF0) {
    length = 4, low = 0x90;
  } else if (lead >= 0xF1 && lead <= 0xF3) {
    length = 4;
  } else if (lead == 0xF4) {
    length = 4, high = 0x8F;
  } else {
    return 0;
  }
  if (i + length > text.size()) return 0;
  if (byte(i + 1) < low || byte(i + 1) > high) return 0;
  for (std::size_t k = 2; k < length; ++k)
    if ((byte(i + k) & 0xC0) != 0x80) return 0;
  return length;
}

}  // namespace

std::string clean_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t length = utf8_sequence_length(text, i);
    if (length == 0) {
      out += kReplacement;
      ++i;
      continue;
    }
    const auto c = static_cast<unsigned char>(text[i]);
    if (length == 1) {
      if ((c < 0x20 && c != '\t' && c != '\n' && c != '\r') || c == 0x7F) out += kReplacement;
      else out += static_cast<char>(c);
    } else {
      const std::string_view sequence = text.substr(i, length);
      const bool c1_control = length == 2 && c == 0xC2 && static_cast<unsigned char>(text[i + 1]) < 0xA0;
      const bool non_character = sequence == "\xEF\xBF\xBE" || sequence == "\xEF\xBF\xBF";
      if (c1_control || non_character) out += kReplacement;
      else out += sequence;
    }
    i += length;
  }
  return out;
}

std::string markdown_escape(std::string_view text) {
  const std::string clean = clean_utf8(text);
  std::string out;
  out.reserve(clean.size() + 16);
  for (std::size_t i = 0; i < clean.size(); ++i) {
    const char c = clean[i];
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '\r':
        if (i + 1 < clean.size() && clean[i + 1] == '\n') break;  // CRLF: one break
        out += "<br>";
        break;
      case '\n': out += "<br>"; break;
      case '\t': out += ' '; break;
      case '\\': case '`': case '*': case '_': case '[': case ']': case '(': case ')': case '#':
      case '!': case '|': case '~':
        out += '\\';
        out += c;
        break;
      default: out += c;
    }
  }
  return out;
}

std::string split_code_spans(std::string_view text, const std::function<std::string(std::string_view)>& prose,
                             const std::function<std::string(std::string_view)>& code) {
  std::string out;
  std::size_t position = 0;
  while (position < text.size()) {
    const std::size_t open = text.find('`', position);
    const std::size_t close = open == std::string_view::npos ? open : text.find('`', open + 1);
    if (close == std::string_view::npos) {
      out += prose(text.substr(position));
      break;
    }
    out += prose(text.substr(position, open - position));
    out += code(text.substr(open + 1, close - open - 1));
    position = close + 1;
  }
  return out;
}

std::string markdown_with_code_spans(std::string_view text) {
  return split_code_spans(text, markdown_escape, [](std::string_view inside) {
    const std::string code = clean_utf8(inside);
    const bool plain = !code.empty() && code.find_first_of("<>&\r\n") == std::string::npos;
    return plain ? "`" + code + "`" : markdown_escape(code);
  });
}

std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes, bool& cut) {
  cut = text.size() > max_bytes;
  if (!cut) return text;
  std::size_t end = max_bytes;
  while (end > 0 && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80) --end;
  return text.substr(0, end);
}

std::string fixed(double value, int decimals) {
  if (!std::isfinite(value)) return "-";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.*f", decimals, value);
  return buffer;
}

std::string percent(double fraction, int decimals) {
  if (!std::isfinite(fraction)) return "-";
  return fixed(fraction * 100.0, decimals) + "%";
}

std::string short_number(double value) {
  if (!std::isfinite(value)) return "-";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.4g", value);
  return buffer;
}

const std::string& AnchorRegistry::anchor(const std::string& key, std::string_view prefix, std::string_view name) {
  if (auto it = by_key_.find(key); it != by_key_.end()) return it->second;
  const std::string base = std::string(prefix) + anchor_slug(name);
  std::string id = base;
  for (int n = 2; taken_.count(id) != 0; ++n) id = base + "-" + std::to_string(n);
  taken_.insert(id);
  return by_key_.emplace(key, std::move(id)).first->second;
}

}  // namespace report_text

std::string html_escape(std::string_view text) {
  const std::string clean = report_text::clean_utf8(text);
  std::string out;
  out.reserve(clean.size() + 16);
  for (char c : clean) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string anchor_slug(std::string_view text) {
  std::string slug;
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    const bool keep = (u >= 'a' && u <= 'z') || (u >= 'A' && u <= 'Z') || (u >= '0' && u <= '9') || u == '_';
    if (keep) slug += c;
    else if (!slug.empty() && slug.back() != '-') slug += '-';
    if (slug.size() >= 80) break;  // ids stay readable; uniqueness is the registry's job
  }
  while (!slug.empty() && slug.back() == '-') slug.pop_back();
  return slug.empty() ? "x" : slug;
}

}  // namespace aegis::assess
