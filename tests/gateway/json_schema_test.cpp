// The JSON Schema subset the gateway validates request bodies with: every keyword, the messages a
// client sees (JSON pointer + rule), compile errors with the schema pointer, and hostile instances
// and schemas that must stay bounded.
#include "aegis/gateway/json_schema.h"

#include <gtest/gtest.h>

#include <chrono>
#include <ctime>
#include <nlohmann/json.hpp>
#include <random>

namespace aegis::gateway {
namespace {

using nlohmann::json;

std::vector<std::string> problems(const JsonSchema& schema, const json& instance, const SchemaLimits& limits = {}) {
  std::vector<std::string> out;
  for (const auto& v : schema.validate(instance, limits)) out.push_back(v.to_string());
  return out;
}

// The compile error's schema pointer and message, or "" when it compiled.
std::string compile_error(const json& schema) {
  try {
    JsonSchema compiled(schema);
  } catch (const SchemaCompileError& e) {
    return e.schema_pointer() + " | " + e.message();
  }
  return "";
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

const json kClassifierSchema = json::parse(R"({
  "type": "object",
  "required": ["inputs"],
  "additionalProperties": false,
  "properties": {
    "inputs": {"type": "array", "minItems": 1, "maxItems": 64,
               "items": {"type": "array", "minItems": 4, "maxItems": 4,
                         "items": {"type": "number", "minimum": 0, "maximum": 1}}},
    "model": {"type": "string", "maxLength": 32}
  }
})");

TEST(JsonSchema, ValidClassifierRequestPasses) {
  JsonSchema schema(kClassifierSchema);
  EXPECT_TRUE(schema.is_valid(json::parse(R"({"inputs": [[0, 0.5, 1, 0.25]], "model": "cnn"})")));
  EXPECT_TRUE(schema.validate(json::parse(R"({"inputs": [[0, 0, 0, 0], [1, 1, 1, 1]]})")).empty());
}

TEST(JsonSchema, OutOfRangeValueNamesPointerAndRule) {
  JsonSchema schema(kClassifierSchema);
  const auto found = problems(schema, json::parse(R"({"inputs": [[0, 0.5, 1, 1.7]]})"));
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0], "/inputs/0/3: 1.7 is above maximum 1");
  const auto below = problems(schema, json::parse(R"({"inputs": [[0, 0.5, 1, 0], [0, -0.25, 0, 0]]})"));
  ASSERT_EQ(below.size(), 1u);
  EXPECT_EQ(below[0], "/inputs/1/1: -0.25 is below minimum 0");
}

TEST(JsonSchema, ShapeProblemsAreReportedTogether) {
  JsonSchema schema(kClassifierSchema);
  const auto found = problems(schema, json::parse(R"({"inputs": [[0, 0.5]], "extra": 1, "model": 7})"));
  ASSERT_EQ(found.size(), 3u);
  EXPECT_EQ(found[0], "/extra: property 'extra' is not allowed (additionalProperties is false)");
  EXPECT_EQ(found[1], "/inputs/0: array has 2 items; minItems is 4");
  EXPECT_EQ(found[2], "/model: expected string, got integer 7");
  const auto missing = problems(schema, json::parse(R"({"model": "cnn"})"));
  ASSERT_EQ(missing.size(), 1u);
  EXPECT_EQ(missing[0], "(root): missing required property 'inputs'");
  const auto not_object = problems(schema, json::parse(R"([1, 2])"));
  ASSERT_EQ(not_object.size(), 1u);
  EXPECT_EQ(not_object[0], "(root): expected object, got array");
}

TEST(JsonSchema, IntegerIsANumberWithoutFraction) {
  JsonSchema schema(json::parse(R"({"type": "integer"})"));
  EXPECT_TRUE(schema.is_valid(json(3)));
  EXPECT_TRUE(schema.is_valid(json(-3)));
  EXPECT_TRUE(schema.is_valid(json::parse("1.0")));  // draft 2020-12: 1.0 is an integer
  EXPECT_TRUE(schema.is_valid(json(18446744073709551615ull)));
  EXPECT_EQ(problems(schema, json(1.5)), std::vector<std::string>{"(root): expected integer, got number 1.5"});
  EXPECT_FALSE(schema.is_valid(json("3")));
  JsonSchema number(json::parse(R"({"type": "number"})"));
  EXPECT_TRUE(number.is_valid(json(3)));
  EXPECT_TRUE(number.is_valid(json(1.5)));
  EXPECT_FALSE(number.is_valid(json(true)));
}

TEST(JsonSchema, TypeListAcceptsAnyNamedType) {
  JsonSchema schema(json::parse(R"({"type": ["string", "null"]})"));
  EXPECT_TRUE(schema.is_valid(json("x")));
  EXPECT_TRUE(schema.is_valid(json(nullptr)));
  EXPECT_EQ(problems(schema, json(false)), std::vector<std::string>{"(root): expected null or string, got boolean false"});
}

TEST(JsonSchema, AdditionalPropertiesSchemaAppliesToUnnamedMembersOnly) {
  JsonSchema schema(json::parse(R"({"properties": {"id": {"type": "string"}},
                                     "additionalProperties": {"type": "number"}})"));
  EXPECT_TRUE(schema.is_valid(json::parse(R"({"id": "a", "x": 1, "y": 2.5})")));
  EXPECT_EQ(problems(schema, json::parse(R"({"id": "a", "x": "no"})")),
            std::vector<std::string>{"/x: expected number, got string \"no\""});
  EXPECT_EQ(problems(schema, json::parse(R"({"id": 5})")), std::vector<std::string>{"/id: expected string, got integer 5"});
}

TEST(JsonSchema, PrefixItemsThenItems) {
  JsonSchema schema(json::parse(R"({"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}],
                                     "items": {"type": "boolean"}})"));
  EXPECT_TRUE(schema.is_valid(json::parse(R"(["a", 1, true, false])")));
  EXPECT_TRUE(schema.is_valid(json::parse(R"(["a"])")));
  EXPECT_EQ(problems(schema, json::parse(R"([1, "a", 3])")),
            (std::vector<std::string>{"/0: expected string, got integer 1", "/1: expected integer, got string \"a\"",
                                      "/2: expected boolean, got integer 3"}));
  JsonSchema closed(json::parse(R"({"prefixItems": [{"type": "string"}], "items": false})"));
  EXPECT_TRUE(closed.is_valid(json::parse(R"(["a"])")));
  EXPECT_EQ(problems(closed, json::parse(R"(["a", "b"])")),
            std::vector<std::string>{"(root): array has 2 items; at most 1 are allowed (items is false)"});
}

TEST(JsonSchema, NumericKeywords) {
  JsonSchema exclusive(json::parse(R"({"exclusiveMinimum": 0, "exclusiveMaximum": 10})"));
  EXPECT_TRUE(exclusive.is_valid(json(5)));
  EXPECT_EQ(problems(exclusive, json(0)), std::vector<std::string>{"(root): 0 is not above exclusiveMinimum 0"});
  EXPECT_EQ(problems(exclusive, json(10)), std::vector<std::string>{"(root): 10 is not below exclusiveMaximum 10"});
  // Non-numbers are not numeric keywords' business.
  EXPECT_TRUE(exclusive.is_valid(json("text")));

  JsonSchema cents(json::parse(R"({"multipleOf": 0.01})"));
  EXPECT_TRUE(cents.is_valid(json(0.07)));  // 0.07 / 0.01 is 7.000000000000001 in binary floating point
  EXPECT_TRUE(cents.is_valid(json(12)));
  EXPECT_EQ(problems(cents, json(0.075)), std::vector<std::string>{"(root): 0.075 is not a multiple of 0.01"});
  JsonSchema even(json::parse(R"({"multipleOf": 2})"));
  EXPECT_TRUE(even.is_valid(json(1024)));
  EXPECT_FALSE(even.is_valid(json(7)));
}

TEST(JsonSchema, EnumAndConstCompareNumbersByValue) {
  JsonSchema color(json::parse(R"({"enum": ["red", "green", 3, null]})"));
  EXPECT_TRUE(color.is_valid(json("green")));
  EXPECT_TRUE(color.is_valid(json(3.0)));
  EXPECT_TRUE(color.is_valid(json(nullptr)));
  EXPECT_EQ(problems(color, json("blue")), std::vector<std::string>{"(root): \"blue\" is not one of [\"red\", \"green\", 3, null]"});
  JsonSchema version(json::parse(R"({"const": {"v": 1}})"));
  EXPECT_TRUE(version.is_valid(json::parse(R"({"v": 1.0})")));
  EXPECT_FALSE(version.is_valid(json::parse(R"({"v": "1"})")));
}

TEST(JsonSchema, StringLengthCountsCharactersNotBytes) {
  JsonSchema schema(json::parse(R"({"minLength": 2, "maxLength": 5})"));
  EXPECT_TRUE(schema.is_valid(json("h\xC3\xA9llo")));  // 5 characters, 6 bytes
  EXPECT_EQ(problems(schema, json("a")), std::vector<std::string>{"(root): string has 1 characters; minLength is 2"});
  EXPECT_EQ(problems(schema, json("\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E\xE3\x81\xA7\xE3\x81\x99")),
            std::vector<std::string>{});  // five CJK characters
  EXPECT_FALSE(schema.is_valid(json("abcdef")));
}

TEST(JsonSchema, PatternIsAnUnanchoredRe2Search) {
  JsonSchema schema(json::parse(R"({"pattern": "[0-9]{3}"})"));
  EXPECT_TRUE(schema.is_valid(json("abc123def")));
  EXPECT_EQ(problems(schema, json("ab12")), std::vector<std::string>{"(root): \"ab12\" does not match pattern \"[0-9]{3}\""});
  JsonSchema anchored(json::parse(R"({"pattern": "^[a-z]+$"})"));
  EXPECT_TRUE(anchored.is_valid(json("model")));
  EXPECT_FALSE(anchored.is_valid(json("model-1")));
  // A pattern that is catastrophic for backtracking engines is linear in RE2.
  JsonSchema nested(json::parse(R"({"pattern": "^(a+)+$"})"));
  EXPECT_FALSE(nested.is_valid(json(std::string(20000, 'a') + "!")));
}

TEST(JsonSchema, PropertyCounts) {
  JsonSchema schema(json::parse(R"({"minProperties": 1, "maxProperties": 2})"));
  EXPECT_TRUE(schema.is_valid(json::parse(R"({"a": 1})")));
  EXPECT_EQ(problems(schema, json::object()), std::vector<std::string>{"(root): object has 0 properties; minProperties is 1"});
  EXPECT_EQ(problems(schema, json::parse(R"({"a": 1, "b": 2, "c": 3})")),
            std::vector<std::string>{"(root): object has 3 properties; maxProperties is 2"});
}

TEST(JsonSchema, Combinators) {
  JsonSchema any(json::parse(R"({"anyOf": [{"type": "string"}, {"type": "integer", "minimum": 10}]})"));
  EXPECT_TRUE(any.is_valid(json("s")));
  EXPECT_TRUE(any.is_valid(json(11)));
  EXPECT_EQ(problems(any, json(3)), std::vector<std::string>{"(root): matches none of the 2 anyOf schemas"});

  JsonSchema one(json::parse(R"({"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 5}]})"));
  EXPECT_TRUE(one.is_valid(json(2)));    // integer only
  EXPECT_TRUE(one.is_valid(json(5.5)));  // number >= 5 only
  EXPECT_EQ(problems(one, json(7)),
            std::vector<std::string>{"(root): matches oneOf schemas #0 and #1; exactly one must match"});
  EXPECT_EQ(problems(one, json(1.5)), std::vector<std::string>{"(root): matches none of the 2 oneOf schemas"});

  JsonSchema all(json::parse(R"({"allOf": [{"minimum": 0}, {"maximum": 1}]})"));
  EXPECT_TRUE(all.is_valid(json(0.5)));
  EXPECT_EQ(problems(all, json(2)), std::vector<std::string>{"(root): 2 is above maximum 1"});

  JsonSchema negated(json::parse(R"({"not": {"type": "null"}})"));
  EXPECT_TRUE(negated.is_valid(json(0)));
  EXPECT_EQ(problems(negated, json(nullptr)), std::vector<std::string>{"(root): matches the schema under 'not'"});
}

TEST(JsonSchema, BooleanSchemas) {
  EXPECT_TRUE(JsonSchema(json(true)).is_valid(json::parse(R"({"anything": [1, 2]})")));
  EXPECT_EQ(problems(JsonSchema(json(false)), json(1)), std::vector<std::string>{"(root): no value is allowed here (schema is false)"});
}

TEST(JsonSchema, LocalRefsIncludingRecursion) {
  JsonSchema tree(json::parse(R"({
    "$defs": {
      "node": {"type": "object", "required": ["value"],
               "properties": {"value": {"$ref": "#/$defs/probability"},
                              "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}},
      "probability": {"type": "number", "minimum": 0, "maximum": 1}
    },
    "$ref": "#/$defs/node"
  })"));
  EXPECT_TRUE(tree.is_valid(json::parse(R"({"value": 0.5, "children": [{"value": 1}, {"value": 0, "children": []}]})")));
  EXPECT_EQ(problems(tree, json::parse(R"({"value": 0.5, "children": [{"value": 1}, {"value": 0, "children": [{"value": 2}]}]})")),
            std::vector<std::string>{"/children/1/children/0/value: 2 is above maximum 1"});
  EXPECT_EQ(problems(tree, json::parse(R"({"children": []})")),
            std::vector<std::string>{"(root): missing required property 'value'"});
}

TEST(JsonSchema, PointersEscapeSlashAndTilde) {
  JsonSchema schema(json::parse(R"({"additionalProperties": {"type": "integer"}})"));
  EXPECT_EQ(problems(schema, json::parse(R"({"a/b~c": "x"})")),
            std::vector<std::string>{"/a~1b~0c: expected integer, got string \"x\""});
}

TEST(JsonSchema, StopsAfterMaxErrors) {
  JsonSchema schema(json::parse(R"({"items": {"type": "number", "maximum": 1}})"));
  json many = json::array();
  for (int i = 0; i < 1000; ++i) many.push_back(2);
  EXPECT_EQ(schema.validate(many).size(), 5u);
  SchemaLimits two;
  two.max_errors = 2;
  const auto found = schema.validate(many, two);
  ASSERT_EQ(found.size(), 2u);
  EXPECT_EQ(found[1].pointer, "/1");
}

TEST(JsonSchema, DeepInstanceIsAViolationNotACrash) {
  JsonSchema schema(json::parse(R"({"$defs": {"nested": {"type": "array", "items": {"$ref": "#/$defs/nested"}}},
                                     "$ref": "#/$defs/nested"})"));
  json deep = json::array();
  for (int i = 0; i < 200; ++i) deep = json::array({std::move(deep)});
  const auto found = schema.validate(deep);
  ASSERT_EQ(found.size(), 1u);
  EXPECT_TRUE(contains(found[0].message, "nests deeper than 64 levels")) << found[0].to_string();
  SchemaLimits shallow;
  shallow.max_depth = 3;
  // max_depth bounds the length of a value's JSON pointer: /0/0/0 is the deepest allowed here.
  EXPECT_TRUE(schema.is_valid(json::parse("[[[[]]]]"), shallow));
  EXPECT_FALSE(schema.is_valid(json::parse("[[[[[]]]]]"), shallow));
}

TEST(JsonSchema, ExponentialSchemaRunsOutOfStepsInsteadOfHanging) {
  // Each level is tried twice by anyOf before failing: 2^40 visits without a budget.
  json defs = json::object();
  const int levels = 40;
  for (int i = 0; i < levels; ++i) {
    const std::string next = i + 1 < levels ? "#/$defs/l" + std::to_string(i + 1) : "#/$defs/leaf";
    defs["l" + std::to_string(i)] = {{"anyOf", json::array({{{"$ref", next}}, {{"$ref", next}}})}};
  }
  defs["leaf"] = {{"type", "string"}};
  JsonSchema schema(json{{"$defs", defs}, {"$ref", "#/$defs/l0"}});
  SchemaLimits limits;
  limits.max_steps = 100000;
  const auto found = schema.validate(json(1), limits);
  ASSERT_FALSE(found.empty());
  EXPECT_TRUE(contains(found[0].message, "validation stopped after 100000 schema steps")) << found[0].to_string();
  EXPECT_TRUE(schema.is_valid(json("ok"), limits));
}

TEST(JsonSchema, CompileErrorsNameTheSchemaPointer) {
  EXPECT_EQ(compile_error(json::parse(R"({"properties": {"x": {"maximun": 1}}})")),
            "/properties/x/maximun | unsupported keyword 'maximun' (in the schema at '/properties/x')");
  EXPECT_EQ(compile_error(json::parse(R"({"type": "float"})")), "/type | unknown type 'float'");
  EXPECT_EQ(compile_error(json::parse(R"({"items": [{"type": "string"}]})")), "/items | items must be a single schema");
  EXPECT_EQ(compile_error(json::parse(R"({"exclusiveMaximum": true})")), "/exclusiveMaximum | exclusiveMaximum must be a number, not true");
  EXPECT_EQ(compile_error(json::parse(R"({"minItems": -1})")), "/minItems | minItems must be a non-negative integer, not -1");
  EXPECT_EQ(compile_error(json::parse(R"({"multipleOf": 0})")), "/multipleOf | multipleOf must be greater than 0");
  EXPECT_EQ(compile_error(json::parse(R"({"$ref": "https://example.com/s.json"})")).substr(0, 7), "/$ref |");
  EXPECT_EQ(compile_error(json::parse(R"({"$ref": "#/$defs/missing"})")),
            "/$ref | $ref '#/$defs/missing' points at nothing in this schema");
  EXPECT_TRUE(contains(compile_error(json::parse(R"({"pattern": "(unclosed"})")), "/pattern | pattern does not compile"));
  EXPECT_TRUE(contains(compile_error(json::parse(R"({"$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"allOf": [{"$ref": "#/$defs/a"}]}}})")),
                       "without descending into the value"));
  EXPECT_EQ(compile_error(json(3)), " | a schema must be an object or true/false, not integer");
  // Annotations are accepted, and an unused definition is still checked.
  EXPECT_EQ(compile_error(json::parse(R"({"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "x",
                                          "title": "t", "description": "d", "default": 1, "examples": [1], "$comment": "c"})")),
            "");
  EXPECT_EQ(compile_error(json::parse(R"({"$defs": {"unused": {"minimum": "0"}}})")),
            "/$defs/unused/minimum | minimum must be a number, not \"0\"");
}

TEST(JsonSchema, HugeStringsAreQuotedShort) {
  JsonSchema schema(json::parse(R"({"type": "integer"})"));
  const auto found = schema.validate(json(std::string(100000, 'x')));
  ASSERT_EQ(found.size(), 1u);
  EXPECT_LT(found[0].message.size(), 200u);
}

TEST(JsonSchema, ValidatesA784FloatInputWithoutPerElementCost) {
  JsonSchema schema(json::parse(R"({"type": "object", "required": ["inputs"], "properties": {"inputs": {
      "type": "array", "minItems": 1, "maxItems": 1,
      "items": {"type": "array", "minItems": 784, "maxItems": 784,
                "items": {"type": "number", "minimum": 0, "maximum": 1}}}}})"));
  std::mt19937 random(7);
  std::uniform_real_distribution<double> pixel(0, 1);
  json row = json::array();
  for (int i = 0; i < 784; ++i) row.push_back(pixel(random));
  const json request{{"inputs", json::array({row})}};
  ASSERT_TRUE(schema.is_valid(request));
  json broken = request;
  broken["inputs"][0][500] = 1.5;
  EXPECT_EQ(problems(schema, broken), std::vector<std::string>{"/inputs/0/500: 1.5 is above maximum 1"});

  // Thread CPU time as well as wall time: on a shared machine the wall clock mostly measures waiting.
  auto cpu_now = [] {
    timespec now{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return static_cast<double>(now.tv_sec) * 1e6 + static_cast<double>(now.tv_nsec) / 1e3;
  };
  const int rounds = 2000;
  const auto started = std::chrono::steady_clock::now();
  const double cpu_started = cpu_now();
  std::size_t failures = 0;
  for (int i = 0; i < rounds; ++i) failures += schema.validate(request).size();
  const double cpu = (cpu_now() - cpu_started) / rounds;
  const double wall = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - started).count() / rounds;
  EXPECT_EQ(failures, 0u);
  std::printf("[ measure  ] json_schema validate 1x784 floats: %.2f us CPU, %.2f us wall per request (%d rounds)\n", cpu,
              wall, rounds);
}

}  // namespace
}  // namespace aegis::gateway
