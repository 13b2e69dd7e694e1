// The gateway's request-validation filters: per-route body size and media-type limits (body_limit)
// and JSON Schema checks of request bodies (json_schema); plus the option reader they share with
// the output filters.
#pragma once

#include <cstdint>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include "aegis/gateway/filter.h"

namespace aegis::gateway {

// body_limit: {max_bytes: 1048576, content_types: [application/json, "text/*"]}
// 413 "body_too_large" when the body is longer than max_bytes (default 1 MiB; the server's global
// limit still applies first). With content_types, 415 "unsupported_media_type" when a request with
// a body (or a Content-Type) names another media type; parameters (";charset=...") and case are
// ignored, "type/*" and "*/*" match as in Accept headers, and a body without Content-Type is refused.
std::unique_ptr<Filter> make_body_limit_filter(const YAML::Node& options, const FilterBuildContext& context);

// json_schema: {schema: {...inline YAML...} | file: schema.json, max_errors: 5, max_depth: 64,
//               max_steps: 4000000}
// The schema (the subset of draft 2020-12 that json_schema.h documents) is compiled when the
// config loads; its errors name the config line (inline) or the file and the schema pointer.
// A request whose body is empty, not JSON, nested deeper than the gateway's JSON bound (64) or
// outside the schema gets 400 "invalid_request" whose message names the JSON pointer and the rule:
// "/inputs/0/3: 1.7 is above maximum 1". Inline YAML reads as YAML 1.2's core schema: plain
// true/false/null/numbers are typed, anything quoted is a string.
std::unique_ptr<Filter> make_json_schema_filter(const YAML::Node& options, const FilterBuildContext& context);

// YAML as written in a gateway config, as JSON: plain scalars that read as null, true/false or a
// number (YAML 1.2 core schema) become those, quoted or tagged !!str scalars stay strings. Errors
// (non-scalar keys, more than max_nodes nodes, deeper than max_depth) name the config line.
nlohmann::json yaml_to_json(const YAML::Node& node, const FilterBuildContext& context, int max_depth = 64,
                            std::size_t max_nodes = 100000);

// Reads and type-checks one filter's option map; every error names the file and line. Options not
// in the known list are errors, so that a typo cannot silently switch a check off.
class FilterOptions {
 public:
  FilterOptions(const YAML::Node& options, const FilterBuildContext& context, std::string filter,
                std::initializer_list<std::string_view> known);

  [[noreturn]] void fail(const YAML::Node& node, const std::string& message, const std::string& hint = {}) const;
  const YAML::Node& node() const { return options_; }
  const FilterBuildContext& context() const { return context_; }

  // The option's node; Undefined when it is absent.
  YAML::Node get(const std::string& name) const;
  bool has(const std::string& name) const;
  std::string string(const std::string& name, std::string fallback) const;
  bool boolean(const std::string& name, bool fallback) const;
  std::int64_t integer(const std::string& name, std::int64_t fallback, std::int64_t low, std::int64_t high) const;
  double number(const std::string& name, double fallback, double low, double high) const;
  // One of `choices` (e.g. flag | reject).
  std::string choice(const std::string& name, std::string fallback, std::initializer_list<std::string_view> choices) const;
  // A string or a list of strings.
  std::vector<std::string> strings(const std::string& name) const;
  // A path option resolved against the config's folder.
  std::filesystem::path path(const std::string& name) const;

 private:
  std::string scalar_string(const YAML::Node& node, const std::string& what) const;

  YAML::Node options_;
  FilterBuildContext context_;
  std::string filter_;
};

}  // namespace aegis::gateway
