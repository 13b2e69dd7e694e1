#include "aegis/gateway/validation_filters.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "aegis/core/error.h"
#include "aegis/core/text.h"
#include "aegis/gateway/json_schema.h"

namespace aegis::gateway {
namespace {

using nlohmann::json;

// The nesting bound Exchange::request_json() applies (parse_bounded_json's default).
constexpr int kGatewayJsonDepth = 64;
// Schema files are configuration: anything bigger is a wrong path, not a schema.
constexpr std::uintmax_t kMaxSchemaFileBytes = 4u << 20;

std::string lower_case(std::string_view text) {
  std::string out(text);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += separator;
    out += items[i];
  }
  return out;
}

std::uint64_t load(const std::atomic<std::uint64_t>& counter) { return counter.load(std::memory_order_relaxed); }

std::vector<Header> with_label(std::vector<Header> labels, std::string name, std::string value) {
  labels.emplace_back(std::move(name), std::move(value));
  return labels;
}

// YAML 1.2 core schema: which plain scalars are numbers.
std::optional<json> plain_number(const std::string& text) {
  if (text.empty()) return std::nullopt;
  std::size_t i = (text[0] == '-' || text[0] == '+') ? 1 : 0;
  if (i == text.size()) return std::nullopt;
  bool digits = false, dot = false, exponent = false;
  for (std::size_t j = i; j < text.size(); ++j) {
    const char c = text[j];
    if (c >= '0' && c <= '9') {
      digits = true;
    } else if (c == '.' && !dot && !exponent) {
      dot = true;
    } else if ((c == 'e' || c == 'E') && digits && !exponent) {
      exponent = true;
      if (j + 1 < text.size() && (text[j + 1] == '-' || text[j + 1] == '+')) ++j;
      if (j + 1 >= text.size()) return std::nullopt;
    } else {
      return std::nullopt;
    }
  }
  if (!digits) return std::nullopt;
  const char* begin = text.data() + (text[0] == '+' ? 1 : 0);
  const char* end = text.data() + text.size();
  if (!dot && !exponent) {
    std::int64_t signed_value = 0;
    if (auto r = std::from_chars(begin, end, signed_value); r.ec == std::errc() && r.ptr == end) return json(signed_value);
    std::uint64_t unsigned_value = 0;
    if (auto r = std::from_chars(begin, end, unsigned_value); r.ec == std::errc() && r.ptr == end) return json(unsigned_value);
  }
  char* stop = nullptr;
  const double value = std::strtod(text.c_str(), &stop);
  if (stop != text.c_str() + text.size() || !std::isfinite(value)) return std::nullopt;
  return json(value);
}

json scalar_to_json(const YAML::Node& node) {
  const std::string& text = node.Scalar();
  const std::string& tag = node.Tag();
  // "!" marks a quoted scalar in yaml-cpp; an explicit !!str keeps the text as well.
  if (tag == "!" || tag == "tag:yaml.org,2002:str") return json(text);
  if (text == "~" || text == "null" || text == "Null" || text == "NULL") return json(nullptr);
  if (text == "true" || text == "True" || text == "TRUE") return json(true);
  if (text == "false" || text == "False" || text == "FALSE") return json(false);
  if (auto number = plain_number(text)) return *number;
  return json(text);
}

json convert(const YAML::Node& node, const FilterBuildContext& context, int depth, int max_depth, std::size_t& budget) {
  if (depth > max_depth)
    throw_config_error(context, node, "nested deeper than " + std::to_string(max_depth) + " levels",
                       "flatten the document (JSON Schema: use $defs and $ref)");
  if (budget == 0) throw_config_error(context, node, "document is too large", "move it to a file and keep it small");
  --budget;
  switch (node.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: return json(nullptr);
    case YAML::NodeType::Scalar: return scalar_to_json(node);
    case YAML::NodeType::Sequence: {
      json out = json::array();
      for (const auto& item : node) out.push_back(convert(item, context, depth + 1, max_depth, budget));
      return out;
    }
    case YAML::NodeType::Map: {
      json out = json::object();
      for (auto it = node.begin(); it != node.end(); ++it) {
        if (!it->first.IsScalar()) throw_config_error(context, it->first, "map keys must be plain strings");
        out[it->first.Scalar()] = convert(it->second, context, depth + 1, max_depth, budget);
      }
      return out;
    }
  }
  return json(nullptr);
}

// The YAML node a JSON pointer into the converted document came from (the deepest one that exists).
// Handles are copy-constructed, never assigned: assigning a yaml-cpp node rewrites the tree.
YAML::Node node_at(const YAML::Node& node, std::string_view pointer) {
  if (pointer.empty() || pointer[0] != '/') return node;
  std::size_t end = pointer.find('/', 1);
  if (end == std::string_view::npos) end = pointer.size();
  std::string token;
  for (std::size_t i = 1; i < end; ++i) {
    if (pointer[i] == '~' && i + 1 < end && (pointer[i + 1] == '0' || pointer[i + 1] == '1')) {
      token += pointer[i + 1] == '0' ? '~' : '/';
      ++i;
    } else {
      token += pointer[i];
    }
  }
  if (node.IsMap()) {
    const YAML::Node child = node[token];
    return child.IsDefined() ? node_at(child, pointer.substr(end)) : node;
  }
  if (node.IsSequence()) {
    std::size_t index = 0;
    auto r = std::from_chars(token.data(), token.data() + token.size(), index);
    if (r.ec != std::errc() || index >= node.size()) return node;
    const YAML::Node child = node[index];
    return node_at(child, pointer.substr(end));
  }
  return node;
}

// How deep the brackets of `text` nest (outside strings), stopping once past `limit`.
int bracket_depth(std::string_view text, int limit) {
  int depth = 0, deepest = 0;
  bool in_string = false, escaped = false;
  for (char c : text) {
    if (in_string) {
      if (escaped) escaped = false;
      else if (c == '\\') escaped = true;
      else if (c == '"') in_string = false;
      continue;
    }
    if (c == '"') in_string = true;
    else if (c == '[' || c == '{') deepest = std::max(deepest, ++depth);
    else if (c == ']' || c == '}') --depth;
    if (deepest > limit) break;
  }
  return deepest;
}

// "application/JSON; charset=utf-8" -> "application/json".
std::string media_type(std::string_view content_type) {
  const auto semicolon = content_type.find(';');
  return lower_case(trim(content_type.substr(0, semicolon)));
}

bool media_type_matches(const std::string& accepted, const std::string& actual) {
  if (accepted == "*/*") return true;
  if (accepted.size() > 2 && accepted.compare(accepted.size() - 2, 2, "/*") == 0)
    return actual.size() > accepted.size() - 1 && actual.compare(0, accepted.size() - 1, accepted, 0, accepted.size() - 1) == 0;
  return accepted == actual;
}

class BodyLimitFilter final : public Filter {
 public:
  BodyLimitFilter(std::size_t max_bytes, std::vector<std::string> media_types)
      : Filter("body_limit"), max_bytes_(max_bytes), media_types_(std::move(media_types)) {}

  FilterResult on_request(Exchange& exchange) override {
    const auto& request = exchange.request;
    if (request.body.size() > max_bytes_) {
      too_large_.fetch_add(1, std::memory_order_relaxed);
      exchange.verdicts.push_back(
          {name(), "reject", "body of " + std::to_string(request.body.size()) + " bytes > max_bytes " + std::to_string(max_bytes_)});
      return FilterResult::reject(413, "body_too_large",
                                  "the request body is " + std::to_string(request.body.size()) + " bytes; this route accepts at most " +
                                      std::to_string(max_bytes_) + " bytes: send a smaller request or split it");
    }
    if (media_types_.empty()) return FilterResult::pass();
    const std::string_view header = request.header("content-type");
    if (request.body.empty() && header.empty()) return FilterResult::pass();
    const std::string actual = media_type(header);
    const bool accepted = std::any_of(media_types_.begin(), media_types_.end(),
                                      [&](const std::string& type) { return media_type_matches(type, actual); });
    if (accepted) return FilterResult::pass();
    unsupported_.fetch_add(1, std::memory_order_relaxed);
    const std::string shown = actual.empty() ? std::string("no content-type") : "content-type '" + core::printable(actual, 80) + "'";
    exchange.verdicts.push_back({name(), "reject", shown});
    return FilterResult::reject(415, "unsupported_media_type",
                                "this route does not accept a body with " + shown + "; send one of: " + join(media_types_, ", "));
  }

  void write_metrics(MetricsWriter& out, const std::vector<Header>& labels) const override {
    constexpr const char* kFamily = "aegis_body_limit_rejections_total";
    constexpr const char* kHelp = "requests refused by body_limit, by reason";
    out.counter(kFamily, kHelp, with_label(labels, "reason", "too_large"), static_cast<double>(load(too_large_)));
    out.counter(kFamily, kHelp, with_label(labels, "reason", "unsupported_media_type"), static_cast<double>(load(unsupported_)));
  }

 private:
  std::size_t max_bytes_;
  std::vector<std::string> media_types_;
  std::atomic<std::uint64_t> too_large_{0}, unsupported_{0};
};

class JsonSchemaFilter final : public Filter {
 public:
  JsonSchemaFilter(JsonSchema schema, SchemaLimits limits)
      : Filter("json_schema"), schema_(std::move(schema)), limits_(limits) {}

  FilterResult on_request(Exchange& exchange) override {
    const std::string& body = exchange.request.body;
    if (body.empty())
      return refuse(exchange, empty_, "empty body",
                    "the request body is empty; this route expects a JSON document that matches its schema");
    const json* document = exchange.request_json();
    if (!document) {
      if (bracket_depth(body, kGatewayJsonDepth) > kGatewayJsonDepth)
        return refuse(exchange, too_deep_, "JSON nested too deep",
                      "the request body nests deeper than " + std::to_string(kGatewayJsonDepth) +
                          " levels; send a flatter JSON document");
      return refuse(exchange, not_json_, "not JSON", "the request body is not valid JSON (" + parse_problem(body) +
                                                         "); send a JSON document that matches this route's schema");
    }
    const auto violations = schema_.validate(*document, limits_);
    if (violations.empty()) return FilterResult::pass();
    std::string message = "the request body does not match this route's schema: ";
    for (std::size_t i = 0; i < violations.size(); ++i) {
      if (i) message += "; ";
      message += violations[i].to_string();
    }
    if (violations.size() >= limits_.max_errors) message += " (first " + std::to_string(violations.size()) + " problems shown)";
    return refuse(exchange, schema_mismatch_, violations.front().to_string(), message);
  }

  void write_metrics(MetricsWriter& out, const std::vector<Header>& labels) const override {
    constexpr const char* kFamily = "aegis_json_schema_rejections_total";
    constexpr const char* kHelp = "requests refused by json_schema, by reason";
    out.counter(kFamily, kHelp, with_label(labels, "reason", "empty"), static_cast<double>(load(empty_)));
    out.counter(kFamily, kHelp, with_label(labels, "reason", "not_json"), static_cast<double>(load(not_json_)));
    out.counter(kFamily, kHelp, with_label(labels, "reason", "too_deep"), static_cast<double>(load(too_deep_)));
    out.counter(kFamily, kHelp, with_label(labels, "reason", "schema"), static_cast<double>(load(schema_mismatch_)));
  }

 private:
  FilterResult refuse(Exchange& exchange, std::atomic<std::uint64_t>& counter, const std::string& detail,
                      const std::string& message) {
    counter.fetch_add(1, std::memory_order_relaxed);
    exchange.verdicts.push_back({name(), "reject", detail});
    return FilterResult::reject(400, "invalid_request", message);
  }

  // Where the parser gave up, for the client; only reached for bodies within the depth bound.
  static std::string parse_problem(const std::string& body) {
    try {
      [[maybe_unused]] const json ignored = json::parse(body);
    } catch (const json::parse_error& e) {
      return "syntax error at byte " + std::to_string(e.byte);
    } catch (const json::exception&) {
    }
    return "unreadable";
  }

  JsonSchema schema_;
  SchemaLimits limits_;
  std::atomic<std::uint64_t> empty_{0}, not_json_{0}, too_deep_{0}, schema_mismatch_{0};
};

json read_schema_file(const FilterOptions& options, const YAML::Node& node, const std::filesystem::path& path) {
  std::error_code error;
  const auto size = std::filesystem::file_size(path, error);
  if (error) options.fail(node, "cannot read the schema file '" + path.string() + "': " + error.message(), "check the path (relative paths start at the config's folder)");
  if (size > kMaxSchemaFileBytes)
    options.fail(node, "schema file '" + path.string() + "' is " + std::to_string(size) + " bytes; the limit is " +
                           std::to_string(kMaxSchemaFileBytes));
  std::ifstream in(path, std::ios::binary);
  std::string text{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (!in && !in.eof()) options.fail(node, "cannot read the schema file '" + path.string() + "'");
  auto parsed = parse_bounded_json(text, 128);
  if (!parsed) {
    std::string why = "nests deeper than 128 levels";
    try {
      [[maybe_unused]] const json ignored = json::parse(text);
    } catch (const json::parse_error& e) {
      why = "syntax error at byte " + std::to_string(e.byte);
    }
    options.fail(node, "schema file '" + path.string() + "' is not JSON: " + why, "write the schema as a JSON document");
  }
  return std::move(*parsed);
}

}  // namespace

// ---- FilterOptions ----

FilterOptions::FilterOptions(const YAML::Node& options, const FilterBuildContext& context, std::string filter,
                             std::initializer_list<std::string_view> known)
    : options_(options), context_(context), filter_(std::move(filter)) {
  if (!options_.IsDefined() || options_.IsNull()) return;
  if (!options_.IsMap()) fail(options_, filter_ + " options must be a map", "write `" + filter_ + ": {key: value, ...}`");
  std::vector<std::string> names(known.begin(), known.end());
  for (auto it = options_.begin(); it != options_.end(); ++it) {
    const std::string name = it->first.IsScalar() ? it->first.Scalar() : std::string("?");
    if (std::find(names.begin(), names.end(), name) == names.end())
      fail(it->first, "unknown option '" + name + "' for " + filter_, "known options: " + join(names, ", "));
  }
}

void FilterOptions::fail(const YAML::Node& node, const std::string& message, const std::string& hint) const {
  throw_config_error(context_, node, message, hint);
}

YAML::Node FilterOptions::get(const std::string& name) const {
  if (!options_.IsDefined() || !options_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
  const YAML::Node& map = options_;
  return map[name];
}

bool FilterOptions::has(const std::string& name) const { return get(name).IsDefined(); }

std::string FilterOptions::scalar_string(const YAML::Node& node, const std::string& what) const {
  if (!node.IsScalar() || node.Scalar().empty()) fail(node, what + " must be a non-empty string");
  return node.Scalar();
}

std::string FilterOptions::string(const std::string& name, std::string fallback) const {
  const YAML::Node node = get(name);
  if (!node.IsDefined() || node.IsNull()) return fallback;
  return scalar_string(node, name);
}

bool FilterOptions::boolean(const std::string& name, bool fallback) const {
  const YAML::Node node = get(name);
  if (!node.IsDefined()) return fallback;
  bool value = false;
  if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) fail(node, name + " must be true or false");
  return value;
}

std::int64_t FilterOptions::integer(const std::string& name, std::int64_t fallback, std::int64_t low,
                                    std::int64_t high) const {
  const YAML::Node node = get(name);
  if (!node.IsDefined()) return fallback;
  long long value = 0;
  if (!node.IsScalar() || !YAML::convert<long long>::decode(node, value)) fail(node, name + " must be an integer");
  if (value < low || value > high)
    fail(node, name + " must be between " + std::to_string(low) + " and " + std::to_string(high));
  return value;
}

double FilterOptions::number(const std::string& name, double fallback, double low, double high) const {
  const YAML::Node node = get(name);
  if (!node.IsDefined()) return fallback;
  double value = 0;
  if (!node.IsScalar() || !YAML::convert<double>::decode(node, value) || !std::isfinite(value))
    fail(node, name + " must be a number");
  if (value < low || value > high) {
    auto text = [](double v) {
      char buffer[32];
      std::snprintf(buffer, sizeof buffer, "%g", v);
      return std::string(buffer);
    };
    fail(node, name + " must be between " + text(low) + " and " + text(high));
  }
  return value;
}

std::string FilterOptions::choice(const std::string& name, std::string fallback,
                                  std::initializer_list<std::string_view> choices) const {
  const YAML::Node node = get(name);
  if (!node.IsDefined()) return fallback;
  const std::string value = scalar_string(node, name);
  std::vector<std::string> names(choices.begin(), choices.end());
  if (std::find(names.begin(), names.end(), value) == names.end())
    fail(node, name + " must be one of " + join(names, ", ") + ", not '" + value + "'");
  return value;
}

std::vector<std::string> FilterOptions::strings(const std::string& name) const {
  const YAML::Node node = get(name);
  std::vector<std::string> out;
  if (!node.IsDefined() || node.IsNull()) return out;
  if (node.IsScalar()) {
    out.push_back(scalar_string(node, name));
  } else if (node.IsSequence()) {
    for (const auto& item : node) out.push_back(scalar_string(item, "each entry of " + name));
  } else {
    fail(node, name + " must be a string or a list of strings");
  }
  return out;
}

std::filesystem::path FilterOptions::path(const std::string& name) const {
  std::filesystem::path p(string(name, ""));
  if (p.is_relative() && !context_.config_dir.empty()) p = std::filesystem::path(context_.config_dir) / p;
  return p;
}

nlohmann::json yaml_to_json(const YAML::Node& node, const FilterBuildContext& context, int max_depth, std::size_t max_nodes) {
  std::size_t budget = max_nodes;
  return convert(node, context, 0, max_depth, budget);
}

// ---- factories ----

std::unique_ptr<Filter> make_body_limit_filter(const YAML::Node& options, const FilterBuildContext& context) {
  FilterOptions reader(options, context, "body_limit", {"max_bytes", "content_types"});
  const auto max_bytes = reader.integer("max_bytes", 1 << 20, 1, std::int64_t{1} << 40);
  std::vector<std::string> types;
  for (const auto& type : reader.strings("content_types")) {
    const std::string normal = media_type(type);
    const auto slash = normal.find('/');
    if (slash == std::string::npos || slash == 0 || slash + 1 == normal.size() ||
        (normal.find('*') != std::string::npos && normal != "*/*" && normal.compare(slash, 2, "/*") != 0) ||
        normal.find(' ') != std::string::npos)
      reader.fail(reader.get("content_types"), "content_types entry '" + type + "' is not a media type",
                  "write type/subtype, e.g. application/json, or type/* for a family");
    types.push_back(normal);
  }
  if (reader.has("content_types") && types.empty())
    reader.fail(reader.get("content_types"), "content_types is empty: no request with a body could pass",
                "list the accepted media types, or leave content_types out to accept any");
  return std::make_unique<BodyLimitFilter>(static_cast<std::size_t>(max_bytes), std::move(types));
}

std::unique_ptr<Filter> make_json_schema_filter(const YAML::Node& options, const FilterBuildContext& context) {
  FilterOptions reader(options, context, "json_schema", {"schema", "file", "max_errors", "max_depth", "max_steps"});
  SchemaLimits limits;
  limits.max_errors = static_cast<std::size_t>(reader.integer("max_errors", 5, 1, 100));
  limits.max_depth = static_cast<int>(reader.integer("max_depth", kGatewayJsonDepth, 1, kGatewayJsonDepth));
  limits.max_steps = static_cast<std::uint64_t>(reader.integer("max_steps", 4'000'000, 1000, 1'000'000'000));
  const bool inline_schema = reader.has("schema"), from_file = reader.has("file");
  if (inline_schema == from_file)
    reader.fail(options, inline_schema ? "json_schema takes schema or file, not both" : "json_schema needs a schema",
                "write `schema: {type: object, ...}` inline, or `file: schema.json`");
  if (inline_schema) {
    const YAML::Node node = reader.get("schema");
    if (!node.IsMap() && !(node.IsScalar() && (node.Scalar() == "true" || node.Scalar() == "false")))
      reader.fail(node, "schema must be a map (a JSON Schema written in YAML)");
    const json document = yaml_to_json(node, context, 128);
    try {
      return std::make_unique<JsonSchemaFilter>(JsonSchema(document), limits);
    } catch (const SchemaCompileError& e) {
      throw_config_error(context, node_at(node, e.schema_pointer()),
                         "json_schema: " + (e.schema_pointer().empty() ? std::string("schema") : "schema at " + e.schema_pointer()) +
                             ": " + e.message(),
                         e.hint());
    }
  }
  const YAML::Node node = reader.get("file");
  const auto path = reader.path("file");
  const json document = read_schema_file(reader, node, path);
  try {
    return std::make_unique<JsonSchemaFilter>(JsonSchema(document), limits);
  } catch (const SchemaCompileError& e) {
    reader.fail(node, "json_schema: " + path.string() + ": " + e.what(), e.hint());
  }
}

}  // namespace aegis::gateway
