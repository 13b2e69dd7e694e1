#include "aegis/gateway/json_schema.h"

#include <re2/re2.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string_view>

#include "aegis/core/text.h"

namespace aegis::gateway {
namespace {

using nlohmann::json;

enum TypeBit : std::uint8_t {
  kNull = 1,
  kBoolean = 2,
  kObject = 4,
  kArray = 8,
  kNumber = 16,
  kInteger = 32,
  kString = 64,
};

constexpr std::size_t kMaxPatternBytes = 4096;
constexpr std::int64_t kRe2MaxMemory = 8 << 20;
// Schema documents are configuration, but a generated one could still nest absurdly.
constexpr int kMaxSchemaDepth = 128;
// Values quoted in messages are cut here: a client's 1 MB string must not come back in an error.
constexpr std::size_t kQuotedValueBytes = 48;

const std::vector<std::pair<std::string_view, std::uint8_t>>& type_names() {
  static const std::vector<std::pair<std::string_view, std::uint8_t>> names = {
      {"null", kNull},     {"boolean", kBoolean}, {"object", kObject}, {"array", kArray},
      {"number", kNumber}, {"integer", kInteger}, {"string", kString}};
  return names;
}

std::uint8_t instance_type(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return kNull;
    case json::value_t::boolean: return kBoolean;
    case json::value_t::object: return kObject;
    case json::value_t::array: return kArray;
    case json::value_t::string: return kString;
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return kNumber | kInteger;
    case json::value_t::number_float: {
      const double d = value.get<double>();
      return std::isfinite(d) && d == std::trunc(d) ? (kNumber | kInteger) : kNumber;
    }
    default: return 0;
  }
}

std::string_view kind_name(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "boolean";
    case json::value_t::object: return "object";
    case json::value_t::array: return "array";
    case json::value_t::string: return "string";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "integer";
    case json::value_t::number_float: return "number";
    default: return "value";
  }
}

std::string types_text(std::uint8_t mask) {
  std::string out;
  for (const auto& [name, bit] : type_names()) {
    if (!(mask & bit)) continue;
    if (!out.empty()) out += " or ";
    out += name;
  }
  return out;
}

// A scalar as JSON text, cut short; containers by their kind and size only.
std::string quoted(const json& value) {
  if (value.is_array()) return "array of " + std::to_string(value.size());
  if (value.is_object()) return "object of " + std::to_string(value.size()) + " members";
  if (value.is_string() && value.get_ref<const std::string&>().size() > kQuotedValueBytes * 2) {
    const auto& text = value.get_ref<const std::string&>();
    return "\"" + core::printable(std::string_view(text).substr(0, kQuotedValueBytes), kQuotedValueBytes) + "...\"";
  }
  return core::printable(value.dump(-1, ' ', false, json::error_handler_t::replace), kQuotedValueBytes);
}

void append_pointer_token(std::string& out, std::string_view token) {
  out += '/';
  for (char c : token) {
    if (c == '~') out += "~0";
    else if (c == '/') out += "~1";
    else out += c;
  }
}

std::size_t code_points(const std::string& text) {
  std::size_t count = 0;
  for (char c : text)
    if ((static_cast<unsigned char>(c) & 0xC0) != 0x80) ++count;
  return count;
}

// A number bound taken from the schema, with its text as written for messages.
struct Bound {
  bool set = false;
  double value = 0;
  std::string text;
};

struct Node {
  bool always_false = false;  // the schema `false`
  std::uint8_t types = 0;     // 0: any type
  std::vector<std::pair<std::string, int>> properties;  // sorted by name
  std::vector<std::string> required;
  int additional = -1;  // node for members not in `properties`; -1: anything
  int items = -1;       // node for elements after prefix_items; -1: anything
  std::vector<int> prefix_items;
  std::optional<std::size_t> min_items, max_items, min_length, max_length, min_properties, max_properties;
  Bound minimum, maximum, exclusive_minimum, exclusive_maximum, multiple_of;
  std::optional<json> enum_values;  // an array
  std::optional<json> const_value;
  std::unique_ptr<RE2> pattern;
  std::vector<int> any_of, one_of, all_of;
  int not_schema = -1;
  int ref = -1;
  // Only type (number/integer) and range keywords: elements checked in a tight loop, the common
  // shape of model inputs (784 pixels in [0, 1]).
  bool simple_number = false;
  bool only_range_keywords = true;
};

// Whether `value` passes a simple_number node; false sends it through the full check (and its messages).
bool passes_simple_number(const Node& n, const json& value) {
  double v;
  switch (value.type()) {
    case json::value_t::number_float:
      v = value.get_ref<const json::number_float_t&>();
      if (!(n.types & kNumber) && v != std::trunc(v)) return false;
      break;
    case json::value_t::number_integer: v = static_cast<double>(value.get_ref<const json::number_integer_t&>()); break;
    case json::value_t::number_unsigned: v = static_cast<double>(value.get_ref<const json::number_unsigned_t&>()); break;
    default: return false;
  }
  return (!n.minimum.set || v >= n.minimum.value) && (!n.maximum.set || v <= n.maximum.value) &&
         (!n.exclusive_minimum.set || v > n.exclusive_minimum.value) &&
         (!n.exclusive_maximum.set || v < n.exclusive_maximum.value);
}

const std::vector<std::string>& assertion_keywords() {
  static const std::vector<std::string> keywords = {
      "type",    "properties", "required",  "additionalProperties", "items",    "prefixItems",   "minItems",
      "maxItems", "minimum",   "maximum",   "exclusiveMinimum",     "exclusiveMaximum", "multipleOf", "enum",
      "const",   "minLength",  "maxLength", "pattern",              "minProperties",    "maxProperties", "anyOf",
      "oneOf",   "allOf",      "not",       "$ref",                 "$defs"};
  return keywords;
}

const std::vector<std::string>& annotation_keywords() {
  static const std::vector<std::string> keywords = {"title",   "description", "$schema", "$id",
                                                    "$comment", "default",    "examples"};
  return keywords;
}

std::string join(const std::vector<std::string>& items) {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += ", ";
    out += item;
  }
  return out;
}

}  // namespace

struct JsonSchema::Compiled {
  std::vector<Node> nodes;
  int root = 0;
};

namespace {

class SchemaCompiler {
 public:
  explicit SchemaCompiler(const json& document, std::vector<Node>& nodes) : document_(document), nodes_(nodes) {}

  int compile_document() {
    const int root = compile(document_, "", 0);
    // $refs may point at parts of the document not compiled yet (or at each other): resolve until
    // none is left; each target is compiled once.
    while (!pending_refs_.empty()) {
      auto [node, target, where] = pending_refs_.back();
      pending_refs_.pop_back();
      nodes_[static_cast<std::size_t>(node)].ref = resolve(target, where);
    }
    check_in_place_cycles();
    for (auto& n : nodes_)
      n.simple_number = n.only_range_keywords && !n.always_false && n.types != 0 && !(n.types & ~(kNumber | kInteger));
    return root;
  }

 private:
  struct PendingRef {
    int node;
    std::string target;  // JSON pointer inside the document
    std::string where;   // the $ref keyword's own pointer, for errors
  };

  [[noreturn]] static void fail(const std::string& pointer, const std::string& message, const std::string& hint = {}) {
    throw SchemaCompileError(pointer, message, hint);
  }

  int new_node(const std::string& pointer) {
    nodes_.emplace_back();
    pointers_.push_back(pointer);
    const int index = static_cast<int>(nodes_.size() - 1);
    compiled_at_.emplace(pointer, index);
    return index;
  }

  int compile(const json& schema, const std::string& pointer, int depth) {
    if (depth > kMaxSchemaDepth)
      fail(pointer, "schema nests deeper than " + std::to_string(kMaxSchemaDepth) + " levels", "flatten it with $defs and $ref");
    if (auto known = compiled_at_.find(pointer); known != compiled_at_.end()) return known->second;
    if (schema.is_boolean()) {
      const int index = new_node(pointer);
      nodes_[static_cast<std::size_t>(index)].always_false = !schema.get<bool>();
      return index;
    }
    if (!schema.is_object()) fail(pointer, "a schema must be an object or true/false, not " + std::string(kind_name(schema)));
    const int index = new_node(pointer);
    for (auto it = schema.begin(); it != schema.end(); ++it) {
      std::string at = pointer;
      append_pointer_token(at, it.key());
      // Node references are re-taken after each sub-compile: nodes_ may reallocate.
      keyword(index, it.key(), it.value(), at, pointer, depth);
    }
    return index;
  }

  Node& node(int index) { return nodes_[static_cast<std::size_t>(index)]; }

  static std::size_t count_of(const json& value, const std::string& at, const std::string& keyword) {
    if (value.is_number_unsigned()) return value.get<std::size_t>();
    if (value.is_number_integer() && value.get<std::int64_t>() >= 0) return static_cast<std::size_t>(value.get<std::int64_t>());
    if (value.is_number_float()) {
      const double d = value.get<double>();
      if (d >= 0 && d == std::trunc(d) && d < 9e15) return static_cast<std::size_t>(d);
    }
    fail(at, keyword + " must be a non-negative integer, not " + quoted(value));
  }

  static Bound bound_of(const json& value, const std::string& at, const std::string& keyword) {
    if (!value.is_number())
      fail(at, keyword + " must be a number, not " + quoted(value),
           keyword.rfind("exclusive", 0) == 0 ? "draft 2020-12 writes exclusiveMinimum/exclusiveMaximum as numbers" : "");
    Bound bound;
    bound.set = true;
    bound.value = value.get<double>();
    bound.text = value.dump();
    return bound;
  }

  std::vector<int> schema_list(const json& value, const std::string& at, const std::string& keyword, int depth) {
    if (!value.is_array() || value.empty()) fail(at, keyword + " must be a non-empty array of schemas");
    std::vector<int> out;
    for (std::size_t i = 0; i < value.size(); ++i) out.push_back(compile(value[i], at + "/" + std::to_string(i), depth + 1));
    return out;
  }

  void keyword(int index, const std::string& key, const json& value, const std::string& at, const std::string& self,
               int depth) {
    static const std::vector<std::string> range_keywords = {"type", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"};
    if (std::find(range_keywords.begin(), range_keywords.end(), key) == range_keywords.end() &&
        std::find(annotation_keywords().begin(), annotation_keywords().end(), key) == annotation_keywords().end())
      node(index).only_range_keywords = false;
    if (key == "type") {
      std::uint8_t mask = 0;
      auto add = [&](const json& name, const std::string& where) {
        if (!name.is_string()) fail(where, "type names must be strings");
        const auto& text = name.get_ref<const std::string&>();
        auto found = std::find_if(type_names().begin(), type_names().end(), [&](const auto& p) { return p.first == text; });
        if (found == type_names().end())
          fail(where, "unknown type '" + core::printable(text, 40) + "'",
               "use null, boolean, object, array, number, integer or string");
        mask |= found->second;
      };
      if (value.is_array()) {
        if (value.empty()) fail(at, "type must name at least one type");
        for (std::size_t i = 0; i < value.size(); ++i) add(value[i], at + "/" + std::to_string(i));
      } else {
        add(value, at);
      }
      node(index).types = mask;
    } else if (key == "properties") {
      if (!value.is_object()) fail(at, "properties must be an object of schemas");
      std::vector<std::pair<std::string, int>> properties;
      for (auto it = value.begin(); it != value.end(); ++it) {
        std::string where = at;
        append_pointer_token(where, it.key());
        properties.emplace_back(it.key(), compile(it.value(), where, depth + 1));
      }
      std::sort(properties.begin(), properties.end());
      node(index).properties = std::move(properties);
    } else if (key == "required") {
      if (!value.is_array()) fail(at, "required must be an array of property names");
      std::vector<std::string> names;
      for (std::size_t i = 0; i < value.size(); ++i) {
        if (!value[i].is_string()) fail(at + "/" + std::to_string(i), "required entries must be strings");
        names.push_back(value[i].get<std::string>());
      }
      node(index).required = std::move(names);
    } else if (key == "additionalProperties") {
      const int target = compile(value, at, depth + 1);
      node(index).additional = target;
    } else if (key == "items") {
      if (value.is_array())
        fail(at, "items must be a single schema", "draft 2020-12 writes per-position schemas as prefixItems");
      const int target = compile(value, at, depth + 1);
      node(index).items = target;
    } else if (key == "prefixItems") {
      auto list = schema_list(value, at, key, depth);
      node(index).prefix_items = std::move(list);
    } else if (key == "minItems") {
      node(index).min_items = count_of(value, at, key);
    } else if (key == "maxItems") {
      node(index).max_items = count_of(value, at, key);
    } else if (key == "minLength") {
      node(index).min_length = count_of(value, at, key);
    } else if (key == "maxLength") {
      node(index).max_length = count_of(value, at, key);
    } else if (key == "minProperties") {
      node(index).min_properties = count_of(value, at, key);
    } else if (key == "maxProperties") {
      node(index).max_properties = count_of(value, at, key);
    } else if (key == "minimum") {
      node(index).minimum = bound_of(value, at, key);
    } else if (key == "maximum") {
      node(index).maximum = bound_of(value, at, key);
    } else if (key == "exclusiveMinimum") {
      node(index).exclusive_minimum = bound_of(value, at, key);
    } else if (key == "exclusiveMaximum") {
      node(index).exclusive_maximum = bound_of(value, at, key);
    } else if (key == "multipleOf") {
      Bound bound = bound_of(value, at, key);
      if (!(bound.value > 0)) fail(at, "multipleOf must be greater than 0");
      node(index).multiple_of = std::move(bound);
    } else if (key == "enum") {
      if (!value.is_array() || value.empty()) fail(at, "enum must be a non-empty array of values");
      node(index).enum_values = value;
    } else if (key == "const") {
      node(index).const_value = value;
    } else if (key == "pattern") {
      if (!value.is_string()) fail(at, "pattern must be a string (an RE2 regular expression)");
      const auto& text = value.get_ref<const std::string&>();
      if (text.size() > kMaxPatternBytes) fail(at, "pattern is longer than " + std::to_string(kMaxPatternBytes) + " bytes");
      RE2::Options options;
      options.set_log_errors(false);
      options.set_max_mem(kRe2MaxMemory);
      auto compiled = std::make_unique<RE2>(text, options);
      if (!compiled->ok())
        fail(at, "pattern does not compile: " + compiled->error(),
             "patterns use RE2 syntax (no backreferences or lookaround)");
      node(index).pattern = std::move(compiled);
    } else if (key == "anyOf" || key == "oneOf" || key == "allOf") {
      auto list = schema_list(value, at, key, depth);
      if (key == "anyOf") node(index).any_of = std::move(list);
      else if (key == "oneOf") node(index).one_of = std::move(list);
      else node(index).all_of = std::move(list);
    } else if (key == "not") {
      const int target = compile(value, at, depth + 1);
      node(index).not_schema = target;
    } else if (key == "$ref") {
      if (!value.is_string()) fail(at, "$ref must be a string");
      const auto& text = value.get_ref<const std::string&>();
      if (text.empty() || text[0] != '#')
        fail(at, "only references inside this schema are supported, not '" + core::printable(text, 80) + "'",
             "move the referenced schema under $defs and write \"$ref\": \"#/$defs/NAME\"");
      pending_refs_.push_back({index, text.substr(1), at});
    } else if (key == "$defs") {
      if (!value.is_object()) fail(at, "$defs must be an object of schemas");
      // Compiled even when unused, so that a broken definition is reported now, not when first used.
      for (auto it = value.begin(); it != value.end(); ++it) {
        std::string where = at;
        append_pointer_token(where, it.key());
        compile(it.value(), where, depth + 1);
      }
    } else if (std::find(annotation_keywords().begin(), annotation_keywords().end(), key) != annotation_keywords().end()) {
      // annotations change nothing about validity
    } else {
      std::string hint = "supported keywords: " + join(assertion_keywords()) + "; annotations: " + join(annotation_keywords());
      if (key == "definitions") hint = "draft 2020-12 names this $defs";
      if (key == "format") hint = "format is not checked here; use pattern";
      fail(at, "unsupported keyword '" + core::printable(key, 60) + "' (in the schema at '" + (self.empty() ? "#" : self) + "')",
           hint);
    }
  }

  int resolve(const std::string& target, const std::string& where) {
    if (auto known = compiled_at_.find(target); known != compiled_at_.end()) return known->second;
    const json* found = nullptr;
    try {
      const json::json_pointer pointer(target);
      if (document_.contains(pointer)) found = &document_.at(pointer);
    } catch (const json::exception&) {
      found = nullptr;
    }
    if (!found) fail(where, "$ref '#" + core::printable(target, 80) + "' points at nothing in this schema");
    // A target reached only through $ref: its depth restarts, the compile-depth bound still holds
    // per chain because each target compiles once.
    return compile(*found, target, 0);
  }

  // A $ref/allOf/anyOf/oneOf/not path that returns to its start without descending into the
  // instance would recurse forever on any input.
  void check_in_place_cycles() {
    std::vector<std::uint8_t> state(nodes_.size(), 0);  // 0 new, 1 on the stack, 2 done
    for (std::size_t start = 0; start < nodes_.size(); ++start) {
      if (state[start]) continue;
      // Iterative DFS: the edge lists are small, but a long chain of $defs must not use the C stack.
      std::vector<std::pair<int, std::size_t>> stack{{static_cast<int>(start), 0}};
      state[start] = 1;
      while (!stack.empty()) {
        auto& [current, next_edge] = stack.back();
        const auto edges = in_place_edges(current);
        if (next_edge >= edges.size()) {
          state[static_cast<std::size_t>(current)] = 2;
          stack.pop_back();
          continue;
        }
        const int target = edges[next_edge++];
        auto& target_state = state[static_cast<std::size_t>(target)];
        if (target_state == 1)
          fail(pointers_[static_cast<std::size_t>(current)],
               "schema refers back to '" + (pointers_[static_cast<std::size_t>(target)].empty() ? std::string("#") : "#" + pointers_[static_cast<std::size_t>(target)]) +
                   "' without descending into the value: validation would never end",
               "a recursive schema must recurse through properties, items or prefixItems");
        if (target_state == 0) {
          target_state = 1;
          stack.emplace_back(target, 0);
        }
      }
    }
  }

  std::vector<int> in_place_edges(int index) const {
    const Node& n = nodes_[static_cast<std::size_t>(index)];
    std::vector<int> edges(n.all_of);
    edges.insert(edges.end(), n.any_of.begin(), n.any_of.end());
    edges.insert(edges.end(), n.one_of.begin(), n.one_of.end());
    if (n.not_schema >= 0) edges.push_back(n.not_schema);
    if (n.ref >= 0) edges.push_back(n.ref);
    return edges;
  }

  const json& document_;
  std::vector<Node>& nodes_;
  std::vector<std::string> pointers_;
  std::map<std::string, int> compiled_at_;
  std::vector<PendingRef> pending_refs_;
};

// One path step into the instance: a member name or an element index.
struct PathStep {
  const std::string* key = nullptr;
  std::size_t index = 0;
};

class Validation {
 public:
  Validation(const std::vector<Node>& nodes, const SchemaLimits& limits, std::vector<SchemaViolation>& out)
      : nodes_(nodes), limits_(limits), out_(out) {
    path_.reserve(static_cast<std::size_t>(std::max(limits.max_depth, 0)) + 1);
  }

  bool validate(int index, const json& value) {
    if (stopped_) return false;
    if (++steps_ > limits_.max_steps) {
      stopped_ = true;
      out_.push_back({pointer(), "validation stopped after " + std::to_string(limits_.max_steps) +
                                     " schema steps: the schema is too costly for this input"});
      return false;
    }
    const Node& n = nodes_[static_cast<std::size_t>(index)];
    if (n.always_false) return fail([] { return std::string("no value is allowed here (schema is false)"); });
    const std::uint8_t type = instance_type(value);
    if (n.types && !(n.types & type)) {
      // The remaining keywords would only pile up noise about a value of the wrong type.
      return fail([&] {
        std::string got(kind_name(value));
        if (!value.is_array() && !value.is_object()) got += " " + quoted(value);
        return "expected " + types_text(n.types) + ", got " + got;
      });
    }
    bool valid = true;
    auto check = [&](bool ok, auto&& message) {
      if (ok) return true;
      valid = false;
      fail(message);
      return !quiet() && !stopped_;
    };
    if (type & kNumber) {
      if (!numeric(n, value, check)) return false;
    } else if (type & kString) {
      if (!string_checks(n, value.get_ref<const std::string&>(), check)) return false;
    } else if (type & kArray) {
      if (!array(n, value, valid)) return false;
    } else if (type & kObject) {
      if (!object(n, value, valid)) return false;
    }
    if (n.enum_values) {
      const auto& options = *n.enum_values;
      const bool found = std::any_of(options.begin(), options.end(), [&](const json& option) { return option == value; });
      if (!check(found, [&] { return quoted(value) + " is not one of " + quoted_list(options); })) return false;
    }
    if (n.const_value && !check(*n.const_value == value, [&] { return quoted(value) + " is not " + quoted(*n.const_value) + " (const)"; }))
      return false;
    if (n.ref >= 0 && !validate(n.ref, value)) {
      valid = false;
      if (quiet() || stopped_) return false;
    }
    for (int branch : n.all_of) {
      if (!validate(branch, value)) {
        valid = false;
        if (quiet() || stopped_) return false;
      }
    }
    if (!n.any_of.empty()) {
      bool any = false;
      ++quiet_;
      for (int branch : n.any_of) {
        if (validate(branch, value)) {
          any = true;
          break;
        }
        if (stopped_) break;
      }
      --quiet_;
      if (stopped_) return false;
      if (!check(any, [&] { return "matches none of the " + std::to_string(n.any_of.size()) + " anyOf schemas"; })) return false;
    }
    if (!n.one_of.empty()) {
      std::vector<std::size_t> matched;
      ++quiet_;
      for (std::size_t i = 0; i < n.one_of.size() && matched.size() < 2 && !stopped_; ++i)
        if (validate(n.one_of[i], value)) matched.push_back(i);
      --quiet_;
      if (stopped_) return false;
      if (!check(matched.size() == 1, [&] {
            if (matched.empty()) return "matches none of the " + std::to_string(n.one_of.size()) + " oneOf schemas";
            return "matches oneOf schemas #" + std::to_string(matched[0]) + " and #" + std::to_string(matched[1]) +
                   "; exactly one must match";
          }))
        return false;
    }
    if (n.not_schema >= 0) {
      ++quiet_;
      const bool matched = validate(n.not_schema, value);
      --quiet_;
      if (stopped_) return false;
      if (!check(!matched, [] { return std::string("matches the schema under 'not'"); })) return false;
    }
    return valid;
  }

 private:
  bool quiet() const { return quiet_ > 0; }

  template <class MakeMessage>
  bool fail(MakeMessage&& make) {
    if (quiet() || stopped_) return false;
    out_.push_back({pointer(), make()});
    if (out_.size() >= limits_.max_errors) stopped_ = true;
    return false;
  }

  template <class Check>
  bool numeric(const Node& n, const json& value, Check& check) {
    const double v = value.get<double>();
    auto text = [&] { return value.dump(); };
    if (n.minimum.set && !check(v >= n.minimum.value, [&] { return text() + " is below minimum " + n.minimum.text; }))
      return false;
    if (n.maximum.set && !check(v <= n.maximum.value, [&] { return text() + " is above maximum " + n.maximum.text; }))
      return false;
    if (n.exclusive_minimum.set &&
        !check(v > n.exclusive_minimum.value, [&] { return text() + " is not above exclusiveMinimum " + n.exclusive_minimum.text; }))
      return false;
    if (n.exclusive_maximum.set &&
        !check(v < n.exclusive_maximum.value, [&] { return text() + " is not below exclusiveMaximum " + n.exclusive_maximum.text; }))
      return false;
    if (n.multiple_of.set) {
      const double quotient = v / n.multiple_of.value;
      const bool ok = std::isfinite(quotient) &&
                      std::fabs(quotient - std::nearbyint(quotient)) <= 1e-9 * std::max(1.0, std::fabs(quotient));
      if (!check(ok, [&] { return text() + " is not a multiple of " + n.multiple_of.text; })) return false;
    }
    return true;
  }

  template <class Check>
  bool string_checks(const Node& n, const std::string& text, Check& check) {
    if (n.min_length || n.max_length) {
      const std::size_t length = code_points(text);
      if (n.min_length && !check(length >= *n.min_length, [&] {
            return "string has " + std::to_string(length) + " characters; minLength is " + std::to_string(*n.min_length);
          }))
        return false;
      if (n.max_length && !check(length <= *n.max_length, [&] {
            return "string has " + std::to_string(length) + " characters; maxLength is " + std::to_string(*n.max_length);
          }))
        return false;
    }
    if (n.pattern && !check(RE2::PartialMatch(re2::StringPiece(text.data(), text.size()), *n.pattern), [&] {
          return quoted(json(text)) + " does not match pattern " + quoted(json(n.pattern->pattern()));
        }))
      return false;
    return true;
  }

  // Descends one level; false when that would exceed the depth budget (reported once per place).
  bool can_descend() {
    if (static_cast<int>(path_.size()) < limits_.max_depth) return true;
    fail([&] { return "value nests deeper than " + std::to_string(limits_.max_depth) + " levels"; });
    return false;
  }

  bool array(const Node& n, const json& value, bool& valid) {
    const auto& elements = value.get_ref<const json::array_t&>();
    const std::size_t size = elements.size();
    auto note = [&](bool ok, auto&& message) {
      if (ok) return true;
      valid = false;
      fail(message);
      return !quiet() && !stopped_;
    };
    if (n.min_items && !note(size >= *n.min_items, [&] {
          return "array has " + std::to_string(size) + " items; minItems is " + std::to_string(*n.min_items);
        }))
      return false;
    if (n.max_items && !note(size <= *n.max_items, [&] {
          return "array has " + std::to_string(size) + " items; maxItems is " + std::to_string(*n.max_items);
        }))
      return false;
    const std::size_t prefix = std::min(size, n.prefix_items.size());
    if ((prefix > 0 || (n.items >= 0 && size > n.prefix_items.size())) && !can_descend()) {
      valid = false;
      return false;
    }
    const bool simple_items = n.items >= 0 && nodes_[static_cast<std::size_t>(n.items)].simple_number;
    for (std::size_t i = 0; i < size; ++i) {
      int schema = -1;
      if (i < n.prefix_items.size()) schema = n.prefix_items[i];
      else if (n.items >= 0) schema = n.items;
      else break;
      if (simple_items && schema == n.items && passes_simple_number(nodes_[static_cast<std::size_t>(schema)], elements[i])) {
        ++steps_;
        continue;
      }
      if (nodes_[static_cast<std::size_t>(schema)].always_false && !quiet() && i == n.prefix_items.size()) {
        valid = false;
        fail([&] {
          return "array has " + std::to_string(size) + " items; at most " + std::to_string(n.prefix_items.size()) +
                 " are allowed (items is false)";
        });
        return false;
      }
      path_.push_back({nullptr, i});
      const bool ok = validate(schema, elements[i]);
      path_.pop_back();
      if (!ok) {
        valid = false;
        if (quiet() || stopped_) return false;
      }
    }
    return true;
  }

  bool object(const Node& n, const json& value, bool& valid) {
    const std::size_t size = value.size();
    auto note = [&](bool ok, auto&& message) {
      if (ok) return true;
      valid = false;
      fail(message);
      return !quiet() && !stopped_;
    };
    if (n.min_properties && !note(size >= *n.min_properties, [&] {
          return "object has " + std::to_string(size) + " properties; minProperties is " + std::to_string(*n.min_properties);
        }))
      return false;
    if (n.max_properties && !note(size <= *n.max_properties, [&] {
          return "object has " + std::to_string(size) + " properties; maxProperties is " + std::to_string(*n.max_properties);
        }))
      return false;
    for (const auto& name : n.required)
      if (!note(value.contains(name), [&] { return "missing required property '" + core::printable(name, 80) + "'"; }))
        return false;
    if (n.properties.empty() && n.additional < 0) return true;
    if (!can_descend()) {
      valid = false;
      return false;
    }
    for (auto it = value.begin(); it != value.end(); ++it) {
      const std::string& key = it.key();
      auto found = std::lower_bound(n.properties.begin(), n.properties.end(), key,
                                    [](const std::pair<std::string, int>& p, const std::string& k) { return p.first < k; });
      const bool named = found != n.properties.end() && found->first == key;
      const int schema = named ? found->second : n.additional;
      if (schema < 0) continue;
      path_.push_back({&key, 0});
      bool ok;
      if (!named && nodes_[static_cast<std::size_t>(schema)].always_false) {
        ok = fail([&] {
          return "property '" + core::printable(key, 80) + "' is not allowed (additionalProperties is false)";
        });
      } else {
        ok = validate(schema, it.value());
      }
      path_.pop_back();
      if (!ok) {
        valid = false;
        if (quiet() || stopped_) return false;
      }
    }
    return true;
  }

  std::string quoted_list(const json& options) const {
    std::string out = "[";
    std::size_t shown = 0;
    for (const auto& option : options) {
      if (shown == 8) {
        out += ", ...";
        break;
      }
      if (shown++) out += ", ";
      out += quoted(option);
    }
    return out + "]";
  }

  std::string pointer() const {
    std::string out;
    for (const auto& step : path_) {
      if (step.key) append_pointer_token(out, core::printable(*step.key, 80));
      else out += "/" + std::to_string(step.index);
    }
    return out;
  }

  const std::vector<Node>& nodes_;
  const SchemaLimits& limits_;
  std::vector<SchemaViolation>& out_;
  std::vector<PathStep> path_;
  std::uint64_t steps_ = 0;
  int quiet_ = 0;
  bool stopped_ = false;
};

}  // namespace

std::string SchemaViolation::to_string() const { return (pointer.empty() ? std::string("(root)") : pointer) + ": " + message; }

JsonSchema::JsonSchema(const nlohmann::json& schema) : compiled_(std::make_unique<Compiled>()) {
  SchemaCompiler compiler(schema, compiled_->nodes);
  compiled_->root = compiler.compile_document();
}

JsonSchema::~JsonSchema() = default;
JsonSchema::JsonSchema(JsonSchema&&) noexcept = default;
JsonSchema& JsonSchema::operator=(JsonSchema&&) noexcept = default;

std::vector<SchemaViolation> JsonSchema::validate(const nlohmann::json& instance, const SchemaLimits& limits) const {
  std::vector<SchemaViolation> violations;
  SchemaLimits bounded = limits;
  if (bounded.max_errors == 0) bounded.max_errors = 1;
  Validation run(compiled_->nodes, bounded, violations);
  const bool valid = run.validate(compiled_->root, instance);
  // Fail closed: an invalid verdict always carries a reason, even if only quiet branches failed.
  if (!valid && violations.empty()) violations.push_back({"", "does not match the schema"});
  return violations;
}

bool JsonSchema::is_valid(const nlohmann::json& instance, const SchemaLimits& limits) const {
  SchemaLimits one = limits;
  one.max_errors = 1;
  return validate(instance, one).empty();
}

std::size_t JsonSchema::node_count() const { return compiled_->nodes.size(); }

const std::vector<std::string>& json_schema_assertion_keywords() { return assertion_keywords(); }
const std::vector<std::string>& json_schema_annotation_keywords() { return annotation_keywords(); }

}  // namespace aegis::gateway
