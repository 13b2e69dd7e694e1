#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "aegis/formats/keras_config.h"
#include "test_support.h"

namespace aegis::formats {
namespace {

using core::Severity;

std::string part(const std::string& name) {
  const std::vector<std::uint8_t> bytes = test::read_file(test::fixture("keras_parts/" + name));
  return {bytes.begin(), bytes.end()};
}

// The base64 that Keras' func_dump writes for `lambda x: __import__("os").system("echo aegis-test")`.
std::string lambda_b64() {
  std::string text = part("lambda_code_311.b64");
  return text;
}

// JSON string literal body for `text` (quotes and control characters escaped).
std::string json_escape(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (c == '\n') {
      out += "\\n";
    } else if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else {
      out += c;
    }
  }
  return out;
}

std::vector<const FormatIssue*> issues_with(const KerasReview& review, const std::string& rule) {
  std::vector<const FormatIssue*> out;
  for (const FormatIssue& issue : review.issues)
    if (issue.rule == rule) out.push_back(&issue);
  return out;
}

bool mentions(const FormatIssue& issue, const std::string& text) {
  return issue.title.find(text) != std::string::npos || issue.evidence.find(text) != std::string::npos;
}

std::string dump(const KerasReview& review) {
  std::string out;
  for (const FormatIssue& issue : review.issues)
    out += "\n  " + issue.rule + " [" + std::to_string(static_cast<int>(issue.severity)) + "] " + issue.title +
           " | " + issue.where + " | " + issue.evidence;
  return out;
}

// ---- fixtures written by tests/fixtures/keras_fixtures.py ----

TEST(KerasConfig, BenignSequentialHasNoIssues) {
  const KerasReview review = review_keras_config(part("dense_config.json"), "model_config attribute");
  EXPECT_TRUE(review.issues.empty()) << dump(review);
  EXPECT_EQ(review.layers, 3u);
  EXPECT_NE(std::find(review.layer_classes.begin(), review.layer_classes.end(), "Dense"), review.layer_classes.end());
}

TEST(KerasConfig, BenignNestedFunctionalHasNoIssues) {
  const KerasReview review = review_keras_config(part("nested_config.json"), "model_config attribute");
  EXPECT_TRUE(review.issues.empty()) << dump(review);
  EXPECT_NE(std::find(review.layer_classes.begin(), review.layer_classes.end(), "Functional"),
            review.layer_classes.end());
  EXPECT_GE(review.layers, 6u);  // 4 outer layers and the 2 of the inner model
}

TEST(KerasConfig, BenignKeras3ConfigAndTrainingConfigHaveNoIssues) {
  EXPECT_TRUE(review_keras_config(part("keras3_dense_config.json"), "config.json").issues.empty());
  EXPECT_TRUE(review_keras_config(part("training_config.json"), "training_config attribute").issues.empty());
}

class KerasLambdaFixtures : public ::testing::TestWithParam<const char*> {};

TEST_P(KerasLambdaFixtures, LambdaBytecodeIsCriticalAndShowsWhatItCalls) {
  const KerasReview review = review_keras_config(part(GetParam()), "model_config attribute");
  const auto found = issues_with(review, "keras.lambda-layer");
  ASSERT_EQ(found.size(), 1u) << dump(review);
  const FormatIssue& issue = *found[0];
  EXPECT_EQ(issue.severity, Severity::Critical);
  EXPECT_EQ(issue.kind, IssueClass::Code);
  EXPECT_TRUE(mentions(issue, "system")) << issue.title << " | " << issue.evidence;
  EXPECT_TRUE(mentions(issue, "echo aegis-test")) << issue.evidence;
  EXPECT_TRUE(mentions(issue, "__import__")) << issue.evidence;
  EXPECT_NE(issue.where.find("'lambda"), std::string::npos) << issue.where;
  EXPECT_FALSE(issue.remediation.empty());
}

INSTANTIATE_TEST_SUITE_P(Fixtures, KerasLambdaFixtures,
                         ::testing::Values("k2_lambda_config.json", "k3_legacy_lambda_config.json",
                                           "keras3_lambda_config.json", "nested_lambda_config.json"));

TEST(KerasConfig, NestedLambdaIsLocatedThroughBothModels) {
  const KerasReview review = review_keras_config(part("nested_lambda_config.json"), "model_config attribute");
  const auto found = issues_with(review, "keras.lambda-layer");
  ASSERT_EQ(found.size(), 1u) << dump(review);
  const std::string& where = found[0]->where;
  const auto outer = where.find("'outer'");
  const auto inner = where.find("'inner'");
  const auto lambda = where.find("'lambda_1'");
  ASSERT_NE(outer, std::string::npos) << where;
  ASSERT_NE(inner, std::string::npos) << where;
  ASSERT_NE(lambda, std::string::npos) << where;
  EXPECT_LT(outer, inner);
  EXPECT_LT(inner, lambda);
}

TEST(KerasConfig, SavedModelMetadataNodeWithABenignLambdaIsStillCritical) {
  const KerasReview review = review_keras_config(part("metadata_lambda_node.json"), "keras_metadata.pb");
  const auto found = issues_with(review, "keras.lambda-layer");
  ASSERT_EQ(found.size(), 1u) << dump(review);
  EXPECT_EQ(found[0]->severity, Severity::Critical);
  EXPECT_TRUE(mentions(*found[0], "2.5")) << found[0]->evidence;  // the lambda's constant
  EXPECT_EQ(review.layers, 1u);
}

TEST(KerasConfig, ModulesOutsideKerasInH5Config) {
  const KerasReview review = review_keras_config(part("custom_module_config.json"), "model_config attribute");
  const auto found = issues_with(review, "keras.module-outside-keras");
  ASSERT_EQ(found.size(), 2u) << dump(review);
  // Most severe first: the activation that resolves to os.system.
  EXPECT_EQ(found[0]->severity, Severity::Critical);
  EXPECT_TRUE(mentions(*found[0], "os.system")) << found[0]->title;
  EXPECT_NE(found[0]->where.find("activation"), std::string::npos) << found[0]->where;
  EXPECT_EQ(found[1]->severity, Severity::High);
  EXPECT_TRUE(mentions(*found[1], "aegis_evil.layers"));
  EXPECT_TRUE(mentions(*found[1], "AegisEvil>Backdoor"));
}

TEST(KerasConfig, ModulesOutsideKerasInKeras3Config) {
  const KerasReview review = review_keras_config(part("keras3_module_os_config.json"), "config.json");
  const auto found = issues_with(review, "keras.module-outside-keras");
  ASSERT_EQ(found.size(), 2u) << dump(review);
  for (const FormatIssue* issue : found) EXPECT_EQ(issue->severity, Severity::Critical);
  const bool os = std::any_of(found.begin(), found.end(), [](const FormatIssue* i) { return mentions(*i, "'os'"); });
  const bool sub = std::any_of(found.begin(), found.end(),
                               [](const FormatIssue* i) { return mentions(*i, "subprocess.getoutput"); });
  EXPECT_TRUE(os) << dump(review);
  EXPECT_TRUE(sub) << dump(review);
}

TEST(KerasConfig, TfOpLambdaWritingAFileIsCriticalAndShowsItsArguments) {
  const KerasReview review = review_keras_config(part("tfoplambda_config.json"), "model_config attribute");
  const auto found = issues_with(review, "keras.tfoplambda");
  ASSERT_EQ(found.size(), 1u) << dump(review);  // tf.math.add is not reported
  EXPECT_EQ(found[0]->severity, Severity::Critical);
  EXPECT_TRUE(mentions(*found[0], "io.write_file"));
  EXPECT_TRUE(mentions(*found[0], "/tmp/aegis-test.txt")) << found[0]->evidence;
}

// ---- shapes written inline ----

std::string sequential(const std::string& layers) {
  return R"({"class_name": "Sequential", "config": {"name": "m", "layers": [)" + layers + "]}}";
}

TEST(KerasConfig, Keras2LambdaNamingAModuleFunction) {
  const KerasReview review = review_keras_config(
      sequential(R"({"class_name": "Lambda", "config": {"name": "l", "function": "system",
                    "function_type": "function", "module": "os", "output_shape": null,
                    "output_shape_type": "raw", "output_shape_module": null}})"),
      "model_config attribute");
  const auto found = issues_with(review, "keras.lambda-layer");
  ASSERT_EQ(found.size(), 1u) << dump(review);
  EXPECT_EQ(found[0]->severity, Severity::Critical);  // module os
  EXPECT_TRUE(mentions(*found[0], "os.system"));

  const KerasReview registered = review_keras_config(
      sequential(R"({"class_name": "Lambda", "config": {"name": "l", "function": "my_fn",
                    "function_type": "function", "module": "my_project.ops"}})"),
      "model_config attribute");
  const auto named = issues_with(registered, "keras.lambda-layer");
  ASSERT_EQ(named.size(), 1u) << dump(registered);
  EXPECT_EQ(named[0]->severity, Severity::High);
  EXPECT_TRUE(mentions(*named[0], "my_project.ops.my_fn"));
}

TEST(KerasConfig, UnreadableLambdaCodeIsStillCritical) {
  const std::string cases[] = {
      R"({"class_name": "Lambda", "config": {"name": "l", "function": ["!!!", null, null], "function_type": "lambda"}})",
      R"({"class_name": "Lambda", "config": {"name": "l", "function": {"class_name": "__lambda__",
          "config": {"code": "aGVsbG8gd29ybGQ=", "defaults": null, "closure": null}}}})",
      R"({"class_name": "Lambda", "config": {"name": "l", "function": {"class_name": "__lambda__", "config": {}}}})",
      R"({"class_name": "Lambda", "config": {"name": "l", "function": 42, "function_type": "lambda"}})",
  };
  for (const std::string& layer : cases) {
    const KerasReview review = review_keras_config(sequential(layer), "config.json");
    const auto found = issues_with(review, "keras.lambda-layer");
    ASSERT_EQ(found.size(), 1u) << layer << dump(review);
    EXPECT_EQ(found[0]->severity, Severity::Critical);
    EXPECT_FALSE(found[0]->evidence.empty());
  }
}

TEST(KerasConfig, LambdaCodeDecodedAsPythonWould) {
  // Python's base64 codec skips characters outside the alphabet ...
  std::string noisy = lambda_b64();
  for (std::size_t i = 10; i < noisy.size(); i += 17) noisy.insert(i, "!");
  KerasReview review = review_keras_config(
      sequential(R"({"class_name": "Lambda", "config": {"name": "l", "function": [")" + json_escape(noisy) +
                 R"(", null, null], "function_type": "lambda"}})"),
      "model_config attribute");
  auto found = issues_with(review, "keras.lambda-layer");
  ASSERT_EQ(found.size(), 1u) << dump(review);
  EXPECT_TRUE(mentions(*found[0], "echo aegis-test")) << found[0]->evidence;

  // ... and func_load falls back to raw_unicode_escape: marshal bytes as code points U+0000-U+00FF.
  const std::vector<std::uint8_t> raw = test::read_file(test::fixture("keras_parts/lambda_code_311.marshal"));
  std::string escaped;
  static constexpr char kHex[] = "0123456789abcdef";
  for (std::uint8_t b : raw) escaped += std::string("\\u00") + kHex[b >> 4] + kHex[b & 0xF];
  review = review_keras_config(
      sequential(R"({"class_name": "Lambda", "config": {"name": "l", "function": {"class_name": "__lambda__",
                    "config": {"code": ")" + escaped + R"(", "defaults": null, "closure": null}}}})"),
      "config.json");
  found = issues_with(review, "keras.lambda-layer");
  ASSERT_EQ(found.size(), 1u) << dump(review);
  EXPECT_TRUE(mentions(*found[0], "system")) << found[0]->evidence;
  EXPECT_TRUE(mentions(*found[0], "raw_unicode_escape")) << found[0]->evidence;
}

TEST(KerasConfig, LambdaObjectsOutsideLambdaLayers) {
  // serialize_keras_object(lambda) -> {"class_name": "__lambda__", "config": {"value": [code, defaults, closure]}}
  const KerasReview review = review_keras_config(
      R"({"module": "keras", "class_name": "Sequential", "config": {"name": "m", "layers": [
           {"module": "keras.layers", "class_name": "Dense", "registered_name": null,
            "config": {"name": "d", "units": 2, "activation": {"class_name": "__lambda__",
                       "config": {"value": [")" + json_escape(lambda_b64()) + R"(", null, null]}}}}]}})",
      "config.json");
  const auto found = issues_with(review, "keras.lambda-layer");
  ASSERT_EQ(found.size(), 1u) << dump(review);
  EXPECT_EQ(found[0]->severity, Severity::Critical);
  EXPECT_NE(found[0]->where.find("activation"), std::string::npos) << found[0]->where;
  EXPECT_TRUE(mentions(*found[0], "Dense layer 'd'")) << found[0]->title;
}

TEST(KerasConfig, OldSequentialConfigIsALayerList) {
  const KerasReview review = review_keras_config(
      R"({"class_name": "Sequential", "config": [{"class_name": "Dense", "config": {"name": "d"}},
          {"class_name": "Lambda", "config": {"name": "l", "function": [")" +
          json_escape(lambda_b64()) + R"(", null, null], "function_type": "lambda"}}]})",
      "model_config attribute");
  EXPECT_EQ(review.layers, 2u);
  ASSERT_EQ(issues_with(review, "keras.lambda-layer").size(), 1u) << dump(review);
}

TEST(KerasConfig, BuiltinsAndKerasModules) {
  const auto review_object = [](const std::string& object) {
    return review_keras_config(sequential(R"({"class_name": "Dense", "config": {"name": "d", "activation": )" + object +
                                          "}}"),
                               "config.json");
  };
  // Keras writes its own functions under "builtins": not an issue.
  EXPECT_TRUE(review_object(R"({"module": "builtins", "class_name": "function", "config": "relu",
                               "registered_name": "function"})")
                  .issues.empty());
  // But eval, exec, getattr ... resolve to Python's builtins.
  const KerasReview eval = review_object(R"({"module": "builtins", "class_name": "function", "config": "eval",
                                             "registered_name": null})");
  ASSERT_EQ(eval.issues.size(), 1u) << dump(eval);
  EXPECT_EQ(eval.issues[0].severity, Severity::Critical);
  EXPECT_TRUE(mentions(eval.issues[0], "eval"));
  for (const char* module : {"keras", "keras.layers", "keras.src.models.functional", "keras_nlp.models", "keras_hub",
                             "keras_cv.layers", "tf_keras.layers", "tensorflow.keras.layers"}) {
    EXPECT_TRUE(review_object(std::string(R"({"module": ")") + module +
                              R"(", "class_name": "Relu", "config": {}, "registered_name": null})")
                    .issues.empty())
        << module;
  }
  // A module whose name merely starts with "keras" is not Keras.
  const KerasReview lookalike = review_object(R"({"module": "kerasx.evil", "class_name": "A", "config": {}})");
  ASSERT_EQ(lookalike.issues.size(), 1u);
  EXPECT_EQ(lookalike.issues[0].severity, Severity::High);
  // TensorFlow: TypeSpecs are fine, other objects are worth a look, py_function is critical.
  EXPECT_TRUE(review_object(R"({"class_name": "__typespec__", "spec_name": "TensorSpec",
                               "module": "tensorflow.python.framework.tensor_spec", "config": [], "registered_name": null})")
                  .issues.empty());
  const KerasReview tf = review_object(R"({"module": "tensorflow.python.ops.gen_nn_ops", "class_name": "function",
                                           "config": "relu", "registered_name": null})");
  ASSERT_EQ(tf.issues.size(), 1u);
  EXPECT_EQ(tf.issues[0].severity, Severity::Medium);
  const KerasReview py = review_object(R"({"module": "tensorflow.python.ops.script_ops", "class_name": "function",
                                           "config": "py_func", "registered_name": null})");
  ASSERT_EQ(py.issues.size(), 1u);
  EXPECT_EQ(py.issues[0].severity, Severity::Critical);
}

TEST(KerasConfig, RegisteredPackagesOutsideKeras) {
  const KerasReview custom = review_keras_config(
      sequential(R"({"class_name": "MyPackage>MyLayer", "config": {"name": "mine"}})"), "model_config attribute");
  const auto found = issues_with(custom, "keras.module-outside-keras");
  ASSERT_EQ(found.size(), 1u) << dump(custom);
  EXPECT_EQ(found[0]->severity, Severity::High);
  EXPECT_TRUE(mentions(*found[0], "MyPackage"));
  EXPECT_TRUE(review_keras_config(
                  sequential(R"({"class_name": "keras_nlp>TransformerEncoder", "config": {"name": "t"}})"),
                  "model_config attribute")
                  .issues.empty());
}

TEST(KerasConfig, TfOpLambdaGrades) {
  const auto grade = [](const std::string& function) -> std::optional<Severity> {
    const KerasReview review = review_keras_config(
        sequential(R"({"class_name": "TFOpLambda", "config": {"name": "op", "function": ")" + function + R"("}})"),
        "keras_metadata.pb");
    const auto found = issues_with(review, "keras.tfoplambda");
    if (found.empty()) return std::nullopt;
    return found[0]->severity;
  };
  EXPECT_EQ(grade("py_function"), Severity::Critical);
  EXPECT_EQ(grade("numpy_function"), Severity::Critical);
  EXPECT_EQ(grade("compat.v1.py_func"), Severity::Critical);
  EXPECT_EQ(grade("io.gfile.rmtree"), Severity::Critical);
  EXPECT_EQ(grade("load_op_library"), Severity::Critical);
  EXPECT_EQ(grade("io.read_file"), Severity::High);
  EXPECT_EQ(grade("io.gfile.listdir"), Severity::High);
  EXPECT_EQ(grade("print"), Severity::High);
  EXPECT_EQ(grade("math.add"), std::nullopt);
  EXPECT_EQ(grade("strings.format"), std::nullopt);
  EXPECT_EQ(grade("debugging.check_numerics"), std::nullopt);
}

TEST(KerasConfig, VersionAndEmbeddedModelConfig) {
  const KerasReview metadata =
      review_keras_config(R"({"keras_version": "3.0.1", "date_saved": "2023-11-14@00:00:00"})", "metadata.json");
  EXPECT_EQ(metadata.keras_version, "3.0.1");
  EXPECT_TRUE(metadata.issues.empty());
  // A keras_metadata.pb model node carrying the model config as a JSON string.
  const std::string inner = sequential(R"({"class_name": "Lambda", "config": {"name": "l", "function": [")" +
                                       json_escape(lambda_b64()) + R"(", null, null], "function_type": "lambda"}})");
  const KerasReview node = review_keras_config(R"({"class_name": "Sequential", "name": "m", "keras_version": "2.15.0",
      "backend": "tensorflow", "model_config": ")" + json_escape(inner) + R"("})",
                                               "keras_metadata.pb");
  EXPECT_EQ(node.keras_version, "2.15.0");
  EXPECT_EQ(node.backend, "tensorflow");
  ASSERT_EQ(issues_with(node, "keras.lambda-layer").size(), 1u) << dump(node);
}

TEST(KerasConfig, PythonJsonConstantsAreAccepted) {
  const KerasReview review = review_keras_config(
      R"({"class_name": "Masking", "config": {"name": "NaN in a string", "mask_value": NaN, "max": Infinity, "min": -Infinity}})",
      "model_config attribute");
  EXPECT_TRUE(review.issues.empty()) << dump(review);
  EXPECT_EQ(review.layers, 1u);
}

// ---- bad input ----

TEST(KerasConfigBadInput, MalformedJson) {
  for (const char* text : {"", "{", "{\"class_name\": \"Sequential\", \"config\": {\"layers\": [", "not json", "\xff\xfe",
                           "{\"a\": \"\xc3\x28\"}"}) {
    const KerasReview review = review_keras_config(text, "model_config attribute");
    const auto found = issues_with(review, "keras.config-unreadable");
    ASSERT_EQ(found.size(), 1u) << text;
    EXPECT_EQ(found[0]->severity, Severity::Medium);
    EXPECT_EQ(found[0]->kind, IssueClass::Container);
    EXPECT_FALSE(found[0]->evidence.empty());
    EXPECT_NE(found[0]->title.find("model_config attribute"), std::string::npos);
  }
}

TEST(KerasConfigBadInput, DeepNestingIsRefusedWithoutRecursion) {
  const std::string arrays = std::string(200000, '[') + std::string(200000, ']');
  KerasReview review = review_keras_config(arrays, "config.json");
  ASSERT_EQ(issues_with(review, "keras.config-unreadable").size(), 1u);
  EXPECT_TRUE(mentions(review.issues[0], "deeper"));

  std::string objects;
  for (int i = 0; i < 50000; ++i) objects += R"({"class_name": "Sequential", "config": {"layers": [)";
  review = review_keras_config(objects, "config.json");
  ASSERT_EQ(issues_with(review, "keras.config-unreadable").size(), 1u);

  // Within the limit: read, walked and reported.
  std::string nested;
  std::string closing;
  for (int i = 0; i < 40; ++i) {
    nested += R"({"class_name": "Functional", "config": {"name": "m)" + std::to_string(i) + R"(", "layers": [)";
    closing += "]}}";
  }
  nested += R"({"class_name": "Lambda", "config": {"name": "deep", "function": [")" + json_escape(lambda_b64()) +
            R"(", null, null], "function_type": "lambda"}})" + closing;
  review = review_keras_config(nested, "config.json");
  const auto found = issues_with(review, "keras.lambda-layer");
  ASSERT_EQ(found.size(), 1u) << dump(review);
  EXPECT_NE(found[0]->where.find("'m39'"), std::string::npos);
}

TEST(KerasConfigBadInput, LayerCountIsBounded) {
  std::string layers;
  for (int i = 0; i < 100005; ++i) layers += std::string(i ? "," : "") + R"({"class_name": "Dense", "config": {}})";
  const KerasReview review = review_keras_config(sequential(layers), "config.json");
  EXPECT_LE(review.layers, 100001u);
  const auto found = issues_with(review, "keras.config-limit");
  ASSERT_EQ(found.size(), 1u) << dump(review);
  EXPECT_EQ(found[0]->kind, IssueClass::Container);
}

TEST(KerasConfigBadInput, IssuesAreCapped) {
  std::string layers;
  const std::string lambda = R"({"class_name": "Lambda", "config": {"name": "l)";
  for (int i = 0; i < 300; ++i)
    layers += std::string(i ? "," : "") + lambda + std::to_string(i) + R"(", "function": [")" +
              json_escape(lambda_b64()) + R"(", null, null], "function_type": "lambda"}})";
  const KerasReview review = review_keras_config(sequential(layers), "config.json");
  EXPECT_LE(review.issues.size(), kMaxIssuesPerFile);
  EXPECT_GE(issues_with(review, "keras.lambda-layer").size(), kMaxIssuesPerFile / 2);
  EXPECT_EQ(issues_with(review, "keras.config-limit").size(), 1u);
  EXPECT_EQ(review.issues.front().severity, Severity::Critical);
}

TEST(KerasConfigBadInput, OddValuesInKnownPlaces) {
  for (const char* layer : {
           R"({"class_name": "Lambda", "config": null})",
           R"({"class_name": "Lambda", "config": {"function": null, "function_type": 7}})",
           R"({"class_name": "Lambda", "config": {"function": [], "function_type": "lambda"}})",
           R"({"class_name": "TFOpLambda", "config": {"function": ["io.read_file"]}})",
           R"({"class_name": "__lambda__", "config": {"value": []}})",
           R"({"class_name": "__lambda__", "config": "text"})",
           R"({"class_name": 5, "module": ["os"], "registered_name": {}})",
           R"({"class_name": "Functional", "config": {"layers": {"not": "a list"}}})",
           R"([1, "two", null])",
       }) {
    const KerasReview review = review_keras_config(sequential(layer), "config.json");
    for (const FormatIssue& issue : review.issues) EXPECT_FALSE(issue.rule.empty());
  }
  EXPECT_TRUE(review_keras_config("[]", "config.json").issues.empty());
  EXPECT_TRUE(review_keras_config("42", "config.json").issues.empty());
}

}  // namespace
}  // namespace aegis::formats
