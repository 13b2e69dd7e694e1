// Comma-separated lists of names that stand for the values of an enum ("loss,lira-online",
// "natural,adaptive", "all"), as the audit commands take them: one parser, one error message.
#pragma once

#include <algorithm>
#include <span>
#include <sstream>
#include <string>
#include <vector>

#include "aegis/core/error.h"

namespace aegis::core {

template <typename T>
struct NamedValue {
  T value;
  const char* name;
};

// The name of `value` in `table`, or "unknown".
template <typename T>
std::string name_of(T value, std::span<const NamedValue<T>> table) {
  for (const auto& entry : table)
    if (entry.value == value) return entry.name;
  return "unknown";
}

// Splits `list` at commas (blanks around names ignored) into the values `table` names, each once
// and in the order first given; "all" stands for the whole table. Throws core::Error naming an
// unknown entry (`what` says what the names are, e.g. "extraction strategy") and listing the
// valid ones, or when the list is empty (`example` shows a valid list).
template <typename T>
std::vector<T> parse_name_list(const std::string& list, std::span<const NamedValue<T>> table, const std::string& what,
                               const std::string& example) {
  std::string valid;
  for (const auto& entry : table) valid += std::string(entry.name) + ", ";
  valid += "all";
  std::vector<T> out;
  auto add = [&](T value) {
    if (std::find(out.begin(), out.end(), value) == out.end()) out.push_back(value);
  };
  std::stringstream stream(list);
  std::string item;
  while (std::getline(stream, item, ',')) {
    item.erase(0, item.find_first_not_of(" \t"));
    item.erase(item.find_last_not_of(" \t") + 1);
    if (item.empty()) continue;
    if (item == "all") {
      for (const auto& entry : table) add(entry.value);
      continue;
    }
    const auto found = std::find_if(table.begin(), table.end(), [&](const auto& entry) { return item == entry.name; });
    if (found == table.end()) throw Error("unknown " + what + " '" + item + "'", "choose from " + valid);
    add(found->value);
  }
  if (out.empty()) throw Error("no " + what + " given", "e.g. " + example);
  return out;
}

}  // namespace aegis::core
