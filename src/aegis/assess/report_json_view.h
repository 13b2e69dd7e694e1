// Read-only access to the assessment document that treats a missing key or a value of the wrong
// type as empty, so that the report writers render a partial or malformed document instead of
// throwing half-way through a file. Internal to the report writers.
#pragma once

#include <cmath>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace aegis::assess::report_view {

using nlohmann::json;

inline const json& null_value() {
  static const json kNull;
  return kNull;
}
inline const json& empty_array() {
  static const json kEmpty = json::array();
  return kEmpty;
}

// object[key], or null when `object` is not an object or has no such key.
inline const json& member(const json& object, std::string_view key) {
  if (!object.is_object()) return null_value();
  const auto it = object.find(std::string(key));
  return it == object.end() ? null_value() : *it;
}

// object[key] when it is an array; an empty array otherwise.
inline const json& list(const json& object, std::string_view key) {
  const json& value = member(object, key);
  return value.is_array() ? value : empty_array();
}

// A scalar as text: strings as they are, numbers and booleans as JSON writes them; "" for null,
// objects and arrays.
inline std::string text_of(const json& value) {
  if (value.is_string()) return value.get_ref<const std::string&>();
  if (value.is_boolean()) return value.get<bool>() ? "true" : "false";
  if (value.is_number_integer() || value.is_number_unsigned()) return value.dump();
  if (value.is_number_float()) {
    const double number = value.get<double>();
    return std::isfinite(number) ? value.dump() : std::string();
  }
  return {};
}
inline std::string text(const json& object, std::string_view key) { return text_of(member(object, key)); }

// A finite number, or nullopt (missing, not a number, NaN or infinite).
inline std::optional<double> number_of(const json& value) {
  if (!value.is_number()) return std::nullopt;
  const double number = value.get<double>();
  if (!std::isfinite(number)) return std::nullopt;
  return number;
}
inline std::optional<double> number(const json& object, std::string_view key) {
  return number_of(member(object, key));
}
inline double number_or(const json& object, std::string_view key, double fallback) {
  return number(object, key).value_or(fallback);
}

inline bool flag(const json& object, std::string_view key) {
  const json& value = member(object, key);
  return value.is_boolean() && value.get<bool>();
}

// An array's scalar items as text (empty ones left out); a single scalar as a list of one.
inline std::vector<std::string> strings(const json& object, std::string_view key) {
  std::vector<std::string> items;
  const json& value = member(object, key);
  if (value.is_array()) {
    for (const auto& item : value)
      if (auto item_text = text_of(item); !item_text.empty()) items.push_back(std::move(item_text));
  } else if (auto single = text_of(value); !single.empty()) {
    items.push_back(std::move(single));
  }
  return items;
}

// Any JSON value as compact text, invalid UTF-8 replaced (dump() would throw on it).
inline std::string dump_of(const json& value) {
  if (value.is_string()) return value.get_ref<const std::string&>();
  return value.dump(-1, ' ', false, json::error_handler_t::replace);
}

}  // namespace aegis::assess::report_view
