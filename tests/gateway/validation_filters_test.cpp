// The body_limit and json_schema filters as the gateway builds them from YAML: the answers a client
// gets (413, 415, 400 with the JSON pointer), configuration errors that name the line, hostile
// bodies (depth bombs, garbage), and the per-request cost of validating a 1x784 input.
#include "aegis/gateway/validation_filters.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <ctime>
#include <fstream>
#include <random>

#include "aegis/core/error.h"
#include "test_support.h"

namespace aegis::gateway {
namespace {

using nlohmann::json;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// A config file on disk, so that errors can be checked for "FILE:LINE".
struct ConfigFile {
  test::TempDir dir{"aegis_validation_config"};
  std::filesystem::path path;
  YAML::Node root;
  explicit ConfigFile(const std::string& text) : path(dir.path / "gateway.yaml") {
    std::ofstream(path) << text;
    root = YAML::LoadFile(path.string());
  }
  FilterBuildContext context() const {
    FilterBuildContext c;
    c.config_file = path.string();
    c.route_name = "score";
    c.config_dir = dir.path.string();
    return c;
  }
  YAML::Node options(const std::string& filter) const { return root[filter]; }
};

// The message of the config error a factory throws, or "" when it built the filter.
template <class Factory>
std::string config_error(const ConfigFile& config, const std::string& filter, Factory factory) {
  try {
    factory(config.options(filter), config.context());
  } catch (const core::Error& e) {
    return e.what();
  }
  return "";
}

Exchange post(std::string body, std::string content_type = "application/json") {
  Exchange exchange;
  exchange.request.method = "POST";
  exchange.request.target = exchange.request.path = "/v1/score";
  if (!content_type.empty()) exchange.request.headers.emplace_back("content-type", std::move(content_type));
  exchange.request.body = std::move(body);
  exchange.request.client_ip = "127.0.0.1";
  return exchange;
}

std::string metrics_of(const Filter& filter) {
  MetricsWriter writer;
  filter.write_metrics(writer, {{"route", "score"}});
  return writer.text();
}

// ---- body_limit ----

TEST(ValidationFiltersBodyLimit, RefusesBodiesOverMaxBytesWith413) {
  ConfigFile config("body_limit: {max_bytes: 100}\n");
  auto filter = make_body_limit_filter(config.options("body_limit"), config.context());
  auto at_limit = post(std::string(100, 'x'));
  EXPECT_FALSE(filter->on_request(at_limit).rejected);
  auto over = post(std::string(101, 'x'));
  const auto result = filter->on_request(over);
  ASSERT_TRUE(result.rejected);
  EXPECT_EQ(result.status, 413);
  EXPECT_EQ(result.code, "body_too_large");
  EXPECT_TRUE(contains(result.message, "101 bytes")) << result.message;
  EXPECT_TRUE(contains(result.message, "at most 100 bytes")) << result.message;
  ASSERT_EQ(over.verdicts.size(), 1u);
  EXPECT_EQ(over.verdicts[0].filter, "body_limit");
  EXPECT_EQ(over.verdicts[0].outcome, "reject");
  EXPECT_TRUE(contains(metrics_of(*filter), "aegis_body_limit_rejections_total{route=\"score\",reason=\"too_large\"} 1"))
      << metrics_of(*filter);
}

TEST(ValidationFiltersBodyLimit, DefaultIsOneMebibyte) {
  ConfigFile config("body_limit: {}\n");
  auto filter = make_body_limit_filter(config.options("body_limit"), config.context());
  auto fits = post(std::string(1 << 20, 'x'));
  EXPECT_FALSE(filter->on_request(fits).rejected);
  auto too_big = post(std::string((1 << 20) + 1, 'x'));
  EXPECT_EQ(filter->on_request(too_big).status, 413);
}

TEST(ValidationFiltersBodyLimit, ChecksMediaTypes) {
  ConfigFile config("body_limit:\n  max_bytes: 1000\n  content_types: [application/json, \"text/*\"]\n");
  auto filter = make_body_limit_filter(config.options("body_limit"), config.context());
  for (const std::string type : {"application/json", "Application/JSON; charset=utf-8", "text/plain", "text/csv"}) {
    auto exchange = post("{}", type);
    EXPECT_FALSE(filter->on_request(exchange).rejected) << type;
  }
  for (const std::string type : {"application/xml", "application/jsonx", "text", "multipart/form-data; boundary=x"}) {
    auto exchange = post("{}", type);
    const auto result = filter->on_request(exchange);
    EXPECT_EQ(result.status, 415) << type;
    EXPECT_EQ(result.code, "unsupported_media_type");
    EXPECT_TRUE(contains(result.message, "application/json, text/*")) << result.message;
  }
  auto untyped = post("{}", "");
  const auto result = filter->on_request(untyped);
  EXPECT_EQ(result.status, 415);
  EXPECT_TRUE(contains(result.message, "no content-type")) << result.message;
  // A GET without a body has nothing to type.
  auto get = post("", "");
  get.request.method = "GET";
  EXPECT_FALSE(filter->on_request(get).rejected);
}

TEST(ValidationFiltersBodyLimit, ConfigErrorsNameTheLine) {
  ConfigFile typo("route: x\nbody_limit:\n  max_byte: 10\n");
  const auto unknown = config_error(typo, "body_limit", make_body_limit_filter);
  EXPECT_TRUE(contains(unknown, "gateway.yaml:3:3: unknown option 'max_byte' for body_limit")) << unknown;
  ConfigFile zero("body_limit:\n  max_bytes: 0\n");
  EXPECT_TRUE(contains(config_error(zero, "body_limit", make_body_limit_filter), "gateway.yaml:2:14: max_bytes must be between 1"));
  ConfigFile words("body_limit:\n  max_bytes: lots\n");
  EXPECT_TRUE(contains(config_error(words, "body_limit", make_body_limit_filter), "gateway.yaml:2:14: max_bytes must be an integer"));
  ConfigFile bad_type("body_limit:\n  content_types: [json]\n");
  EXPECT_TRUE(contains(config_error(bad_type, "body_limit", make_body_limit_filter), "content_types entry 'json' is not a media type"));
  ConfigFile empty("body_limit:\n  content_types: []\n");
  EXPECT_TRUE(contains(config_error(empty, "body_limit", make_body_limit_filter), "gateway.yaml:2:18: content_types is empty"));
}

// ---- json_schema ----

constexpr const char* kInlineSchema = R"(json_schema:
  schema:
    type: object
    required: [inputs]
    additionalProperties: false
    properties:
      inputs:
        type: array
        minItems: 1
        items:
          type: array
          minItems: 4
          maxItems: 4
          items: {type: number, minimum: 0, maximum: 1}
      model: {enum: ["cnn", "1", 2]}
)";

TEST(ValidationFiltersJsonSchema, PassesValidRequests) {
  ConfigFile config(kInlineSchema);
  auto filter = make_json_schema_filter(config.options("json_schema"), config.context());
  auto exchange = post(R"({"inputs": [[0, 0.5, 1, 0.25]], "model": "cnn"})");
  EXPECT_FALSE(filter->on_request(exchange).rejected);
  EXPECT_TRUE(exchange.verdicts.empty());
}

TEST(ValidationFiltersJsonSchema, RejectsWithPointerAndRule) {
  ConfigFile config(kInlineSchema);
  auto filter = make_json_schema_filter(config.options("json_schema"), config.context());
  auto exchange = post(R"({"inputs": [[0, 0.5, 1, 1.7]]})");
  const auto result = filter->on_request(exchange);
  ASSERT_TRUE(result.rejected);
  EXPECT_EQ(result.status, 400);
  EXPECT_EQ(result.code, "invalid_request");
  EXPECT_TRUE(contains(result.message, "/inputs/0/3: 1.7 is above maximum 1")) << result.message;
  ASSERT_EQ(exchange.verdicts.size(), 1u);
  EXPECT_EQ(exchange.verdicts[0].outcome, "reject");
  EXPECT_EQ(exchange.verdicts[0].detail, "/inputs/0/3: 1.7 is above maximum 1");
  EXPECT_TRUE(contains(metrics_of(*filter), "reason=\"schema\"} 1")) << metrics_of(*filter);
}

TEST(ValidationFiltersJsonSchema, InlineYamlKeepsQuotedScalarsAsStrings) {
  ConfigFile config(kInlineSchema);
  auto filter = make_json_schema_filter(config.options("json_schema"), config.context());
  // "1" was quoted in YAML: the string matches, the number does not; 2 was plain: the number matches.
  for (const std::string body : {R"({"inputs": [[0,0,0,0]], "model": "1"})", R"({"inputs": [[0,0,0,0]], "model": 2})"}) {
    auto exchange = post(body);
    EXPECT_FALSE(filter->on_request(exchange).rejected) << body;
  }
  for (const std::string body : {R"({"inputs": [[0,0,0,0]], "model": 1})", R"({"inputs": [[0,0,0,0]], "model": "2"})"}) {
    auto exchange = post(body);
    EXPECT_TRUE(filter->on_request(exchange).rejected) << body;
  }
}

TEST(ValidationFiltersJsonSchema, ReportsSeveralProblemsUpToMaxErrors) {
  ConfigFile config(std::string(kInlineSchema) + "  max_errors: 2\n");
  auto filter = make_json_schema_filter(config.options("json_schema"), config.context());
  auto exchange = post(R"({"inputs": [[2, 3, 4, 5]], "extra": true})");
  const auto result = filter->on_request(exchange);
  ASSERT_TRUE(result.rejected);
  EXPECT_TRUE(contains(result.message, "/extra: property 'extra' is not allowed")) << result.message;
  EXPECT_TRUE(contains(result.message, "/inputs/0/0: 2 is above maximum 1")) << result.message;
  EXPECT_FALSE(contains(result.message, "/inputs/0/1")) << result.message;
  EXPECT_TRUE(contains(result.message, "first 2 problems shown")) << result.message;
}

TEST(ValidationFiltersJsonSchema, NonJsonEmptyAndDeepBodiesGet400) {
  ConfigFile config(kInlineSchema);
  auto filter = make_json_schema_filter(config.options("json_schema"), config.context());

  auto garbage = post("inputs=1&x=2", "application/x-www-form-urlencoded");
  auto result = filter->on_request(garbage);
  EXPECT_EQ(result.status, 400);
  EXPECT_TRUE(contains(result.message, "not valid JSON (syntax error at byte 1)")) << result.message;

  auto empty = post("");
  result = filter->on_request(empty);
  EXPECT_EQ(result.status, 400);
  EXPECT_TRUE(contains(result.message, "empty")) << result.message;

  // A depth bomb: half a mebibyte of '[' then as many ']'.
  auto bomb = post(std::string(500000, '[') + std::string(500000, ']'));
  result = filter->on_request(bomb);
  EXPECT_EQ(result.status, 400);
  EXPECT_TRUE(contains(result.message, "nests deeper than 64 levels")) << result.message;
  // Brackets inside strings are not nesting.
  auto quoted = post(R"({"inputs": [[0,0,0,0]], "model": ")" + std::string(100, '[') + "\"}");
  result = filter->on_request(quoted);
  EXPECT_TRUE(contains(result.message, "/model")) << result.message;

  std::uint32_t seed = 42;
  for (int i = 0; i < 200; ++i) {
    const auto bytes = test::pseudo_random_bytes(64 + static_cast<std::size_t>(i) * 7, seed);
    auto noise = post(std::string(bytes.begin(), bytes.end()));
    EXPECT_EQ(filter->on_request(noise).status, 400);
  }
  const auto metrics = metrics_of(*filter);
  EXPECT_TRUE(contains(metrics, "reason=\"too_deep\"} 1")) << metrics;
  EXPECT_TRUE(contains(metrics, "reason=\"empty\"} 1")) << metrics;
}

TEST(ValidationFiltersJsonSchema, LoadsTheSchemaFromAFile) {
  ConfigFile config("json_schema: {file: schemas/score.json}\n");
  std::filesystem::create_directories(config.dir.path / "schemas");
  std::ofstream(config.dir.path / "schemas" / "score.json")
      << R"({"type": "object", "required": ["input"], "properties": {"input": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}}}})";
  auto filter = make_json_schema_filter(config.options("json_schema"), config.context());
  auto good = post(R"({"input": [0, 12, 255]})");
  EXPECT_FALSE(filter->on_request(good).rejected);
  auto bad = post(R"({"input": [0, 12.5, 256]})");
  const auto result = filter->on_request(bad);
  EXPECT_TRUE(contains(result.message, "/input/1: expected integer, got number 12.5")) << result.message;
  EXPECT_TRUE(contains(result.message, "/input/2: 256 is above maximum 255")) << result.message;
}

TEST(ValidationFiltersJsonSchema, ConfigErrorsNameTheLine) {
  ConfigFile misspelt(R"(json_schema:
  schema:
    type: object
    properties:
      inputs:
        type: array
        maxItem: 4
)");
  const auto keyword = config_error(misspelt, "json_schema", make_json_schema_filter);
  EXPECT_TRUE(contains(keyword, "gateway.yaml:7:18: json_schema: schema at /properties/inputs/maxItem: unsupported keyword 'maxItem'"))
      << keyword;

  ConfigFile pattern("json_schema:\n  schema:\n    properties:\n      name: {pattern: \"(a\"}\n");
  const auto bad_pattern = config_error(pattern, "json_schema", make_json_schema_filter);
  EXPECT_TRUE(contains(bad_pattern, "gateway.yaml:4:23: json_schema: schema at /properties/name/pattern: pattern does not compile"))
      << bad_pattern;

  ConfigFile both("json_schema:\n  schema: {type: object}\n  file: s.json\n");
  EXPECT_TRUE(contains(config_error(both, "json_schema", make_json_schema_filter), "gateway.yaml:2:3: json_schema takes schema or file, not both"));
  ConfigFile neither("json_schema:\n  max_errors: 3\n");
  EXPECT_TRUE(contains(config_error(neither, "json_schema", make_json_schema_filter), "json_schema needs a schema"));
  ConfigFile missing("json_schema:\n  file: nowhere.json\n");
  EXPECT_TRUE(contains(config_error(missing, "json_schema", make_json_schema_filter), "gateway.yaml:2:9: cannot read the schema file"));

  ConfigFile from_file("json_schema:\n  file: s.json\n");
  std::ofstream(from_file.dir.path / "s.json") << R"({"properties": {"a": {"type": "decimal"}}})";
  const auto in_file = config_error(from_file, "json_schema", make_json_schema_filter);
  EXPECT_TRUE(contains(in_file, "gateway.yaml:2:9: json_schema: ")) << in_file;
  EXPECT_TRUE(contains(in_file, "s.json: /properties/a/type: unknown type 'decimal'")) << in_file;

  ConfigFile not_json("json_schema:\n  file: s.json\n");
  std::ofstream(not_json.dir.path / "s.json") << "{\"type\": ";
  EXPECT_TRUE(contains(config_error(not_json, "json_schema", make_json_schema_filter), "is not JSON"));
}

TEST(ValidationFiltersJsonSchema, MeasuresA1x784Request) {
  ConfigFile config(R"(json_schema:
  schema:
    type: object
    required: [inputs]
    properties:
      inputs:
        type: array
        maxItems: 1
        items: {type: array, minItems: 784, maxItems: 784, items: {type: number, minimum: 0, maximum: 1}}
)");
  auto filter = make_json_schema_filter(config.options("json_schema"), config.context());
  std::mt19937 random(3);
  std::uniform_int_distribution<int> pixel(0, 255);
  std::string body = "{\"inputs\": [[";
  for (int i = 0; i < 784; ++i) body += (i ? "," : "") + json(pixel(random) / 255.0).dump();
  body += "]]}";
  // Thread CPU time as well as wall time: on a shared machine the wall clock mostly measures waiting.
  auto cpu_now = [] {
    timespec now{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
    return static_cast<double>(now.tv_sec) * 1e6 + static_cast<double>(now.tv_nsec) / 1e3;
  };
  const int rounds = 300;
  double wall = 0, cpu = 0;
  for (int i = 0; i < rounds; ++i) {
    auto exchange = post(body);
    const auto started = std::chrono::steady_clock::now();
    const double cpu_started = cpu_now();
    const auto result = filter->on_request(exchange);
    cpu += cpu_now() - cpu_started;
    wall += std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - started).count();
    ASSERT_FALSE(result.rejected) << result.message;
  }
  std::printf("[ measure  ] json_schema filter, 1x784 body (%zu bytes), JSON parse included: %.1f us CPU, %.1f us wall per "
              "request (%d rounds)\n",
              body.size(), cpu / rounds, wall / rounds, rounds);
}

}  // namespace
}  // namespace aegis::gateway
