// Text primitives the report writers share: UTF-8 clean-up, Markdown escaping, truncation and number
// formatting. Internal to the report writers (html_escape and anchor_slug are public, in
// report_writer.h).
#pragma once

#include <cstddef>
#include <map>
#include <set>
#include <functional>
#include <string>
#include <string_view>

namespace aegis::assess::report_text {

// Valid UTF-8 with control characters (except tab, LF, CR), C1 controls, DEL and U+FFFE/U+FFFF
// replaced by U+FFFD: text that every HTML, XML and Markdown reader accepts as it is.
std::string clean_utf8(std::string_view text);

// Inline Markdown text (a paragraph, a list item, a table cell; never at the start of a line):
// clean_utf8, then & < > as entities, inline Markdown punctuation backslash-escaped, line breaks as <br> so that a table row stays one line.
std::string markdown_escape(std::string_view text);

// Inline Markdown with `backtick` spans kept as code spans where their content is plain (no < > &
// or line breaks, which a code span would show raw); everything else through markdown_escape.
std::string markdown_with_code_spans(std::string_view text);
// Text split at `backtick` pairs: prose goes to `prose`, the inside of each pair to `code` (an
// unpaired backtick stays prose). Both writers render command names this way.
std::string split_code_spans(std::string_view text, const std::function<std::string(std::string_view)>& prose,
                             const std::function<std::string(std::string_view)>& code);

// At most `max_bytes` of `text`, cut at a UTF-8 character boundary; `cut` says whether it was cut.
std::string_view utf8_prefix(std::string_view text, std::size_t max_bytes, bool& cut);

// 0.8765 -> "87.7%"; fixed decimals; a short general form for axis ticks and table values.
std::string percent(double fraction, int decimals = 1);
std::string fixed(double value, int decimals);
std::string short_number(double value);

// Makes fragment identifiers unique within one report: the first request for a name gets the slug,
// later different names with the same slug get "-2", "-3", ... The same key always gets the same id.
class AnchorRegistry {
 public:
  // `key` says what is anchored (e.g. "asset\n" + id); `prefix` is prepended to the slug of `name`.
  const std::string& anchor(const std::string& key, std::string_view prefix, std::string_view name);
  bool has(const std::string& key) const { return by_key_.count(key) != 0; }
  const std::string& get(const std::string& key) const { return by_key_.at(key); }

 private:
  std::map<std::string, std::string> by_key_;
  std::set<std::string> taken_;
};

}  // namespace aegis::assess::report_text
