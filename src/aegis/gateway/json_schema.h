// A JSON Schema validator for request bodies: a documented subset of draft 2020-12 ("types, shapes,
// ranges"), compiled once at config time and run per request without per-element allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "aegis/core/error.h"

namespace aegis::gateway {

// Supported keywords (draft 2020-12 meaning unless noted):
//   type (a name or a list; "integer" is any number with no fractional part, 1.0 included),
//   properties, required, additionalProperties (true/false or a schema; it applies to members not
//   named in `properties`), items (a schema: elements after prefixItems), prefixItems,
//   minItems, maxItems, minimum, maximum, exclusiveMinimum, exclusiveMaximum (numbers),
//   multipleOf (> 0; relative tolerance 1e-9 for fractional values), enum, const (numbers compare by
//   value: 1 equals 1.0), minLength, maxLength (counted in Unicode code points),
//   pattern (RE2 syntax, unanchored search as in JSON Schema; RE2 has no backreferences or
//   lookaround, which keeps matching linear in time), minProperties, maxProperties,
//   anyOf, oneOf, allOf, not, $ref to a JSON pointer inside the same document ("#", "#/$defs/x"),
//   $defs, and the boolean schemas true and false.
// Annotations accepted and ignored: title, description, $schema, $id, $comment, default, examples.
// Any other keyword is a compile error, so that a misspelt constraint cannot silently vanish.
// Not supported: remote $ref, $anchor, $dynamicRef, patternProperties, dependentRequired/Schemas,
// if/then/else, contains, uniqueItems, unevaluated*, format (as an assertion).

// Why a schema did not compile: `schema_pointer` is where in the schema document the fault is.
class SchemaCompileError : public core::Error {
 public:
  SchemaCompileError(std::string schema_pointer, const std::string& message, std::string hint = {})
      : core::Error((schema_pointer.empty() ? std::string("(schema root)") : schema_pointer) + ": " + message,
                    std::move(hint)),
        schema_pointer_(std::move(schema_pointer)),
        message_(message) {}
  const std::string& schema_pointer() const { return schema_pointer_; }
  const std::string& message() const { return message_; }

 private:
  std::string schema_pointer_;
  std::string message_;
};

// One way an instance breaks the schema: the JSON pointer of the offending value ("" = the whole
// document) and the rule, e.g. {"/inputs/0/3", "1.7 is above maximum 1"}.
struct SchemaViolation {
  std::string pointer;
  std::string message;
  std::string to_string() const;  // "/inputs/0/3: 1.7 is above maximum 1"; the root reads "(root)"
};

// Budgets that keep validation of hostile input bounded whatever the schema.
struct SchemaLimits {
  int max_depth = 64;                  // longest JSON pointer (in steps) of a checked value; deeper is a violation
  std::size_t max_errors = 5;          // stop after this many violations
  std::uint64_t max_steps = 4'000'000; // schema-node visits (anyOf/oneOf/$ref fan-out); then stop
};

// Thread-safe after construction: validate() may run on any number of threads at once.
class JsonSchema {
 public:
  // Compiles `schema` (throws SchemaCompileError). $ref cycles that never descend into the instance
  // (a schema that refers to itself in place) are compile errors: they could never finish.
  explicit JsonSchema(const nlohmann::json& schema);
  ~JsonSchema();
  JsonSchema(JsonSchema&&) noexcept;
  JsonSchema& operator=(JsonSchema&&) noexcept;

  // The violations found, in document order, at most limits.max_errors; empty: the instance is
  // valid. A budget that runs out is itself a violation (fail closed).
  std::vector<SchemaViolation> validate(const nlohmann::json& instance, const SchemaLimits& limits = {}) const;
  bool is_valid(const nlohmann::json& instance, const SchemaLimits& limits = {}) const;

  // Compiled schema nodes (each subschema and each boolean schema is one node).
  std::size_t node_count() const;

 private:
  struct Compiled;
  std::unique_ptr<Compiled> compiled_;
};

// The keywords JsonSchema enforces and those it accepts as annotations (for error hints and docs).
const std::vector<std::string>& json_schema_assertion_keywords();
const std::vector<std::string>& json_schema_annotation_keywords();

}  // namespace aegis::gateway
