#include "aegis/core/yaml_guard.h"

#include <algorithm>

#include "aegis/core/error.h"

namespace aegis::core {

bool yaml_too_deep(std::string_view text, int max_depth) {
  // A light tokenizer: brackets count only where YAML would open a flow collection (at the start of
  // a line or after ':', '-', ',', '?' or another opener), never inside quoted scalars or comments,
  // so that prose such as "see [1], [2]" in a description is not mistaken for structure.
  int depth = 0;
  int deepest = 0;
  bool closed_at_top = false;
  char previous = '\n';  // last non-blank character on the current line
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    const bool opener_context = previous == '\n' || previous == ':' || previous == '-' || previous == ',' || previous == '?' ||
                                previous == '[' || previous == '{';
    if (c == '#' && (i == 0 || text[i - 1] == ' ' || text[i - 1] == '\t' || text[i - 1] == '\n')) {
      while (i < text.size() && text[i] != '\n') ++i;
      previous = '\n';
      continue;
    }
    if ((c == '\'' || c == '"') && opener_context) {
      const char quote = c;
      for (++i; i < text.size(); ++i) {
        if (quote == '"' && text[i] == '\\') {
          ++i;
          continue;
        }
        if (text[i] != quote) continue;
        if (quote == '\'' && i + 1 < text.size() && text[i + 1] == '\'') {
          ++i;
          continue;
        }
        break;
      }
      previous = quote;
      closed_at_top = false;
      continue;
    }
    if (closed_at_top && c == ',') throw FormatError("a flow collection followed by ',' outside any collection: not YAML");
    if (c != ' ' && c != '\t' && c != '\r' && c != '\n') closed_at_top = false;
    if ((c == '[' || c == '{') && (opener_context || depth > 0)) deepest = std::max(deepest, ++depth);
    if ((c == ']' || c == '}') && depth > 0) {
      --depth;
      closed_at_top = depth == 0;
    }
    if (c == '\n') previous = '\n';
    else if (c != ' ' && c != '\t' && c != '\r') previous = c;
  }
  if (deepest > max_depth) return true;
  std::size_t indent_max = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t indent = 0;
    while (pos + indent < text.size() && (text[pos + indent] == ' ' || text[pos + indent] == '-')) ++indent;
    indent_max = std::max(indent_max, indent);
    const auto eol = text.find('\n', pos);
    if (eol == std::string_view::npos) break;
    pos = eol + 1;
  }
  // Block nesting shows as indentation; 400 columns is far beyond any configuration people write.
  return indent_max > 400;
}

}  // namespace aegis::core
