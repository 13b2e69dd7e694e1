// The response filters as the gateway builds them from YAML: confidence/OOD flags (on crafted rows
// and on the real Fashion-MNIST CNN's outputs), output hardening (top-k, rounding that keeps the
// predicted class, labels only), and PII/secret redaction of JSON, text and server-sent events.
#include "aegis/gateway/output_filters.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>

#include "aegis/core/error.h"
#include "aegis/models/classifier.h"
#include "aegis/models/dataset.h"
#include "aegis/models/torchscript_classifier.h"
#include "test_support.h"

namespace aegis::gateway {
namespace {

using nlohmann::json;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

struct ConfigFile {
  test::TempDir dir{"aegis_output_config"};
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

template <class Factory>
std::string config_error(const std::string& yaml, const std::string& filter, Factory factory) {
  ConfigFile config(yaml);
  try {
    factory(config.options(filter), config.context());
  } catch (const core::Error& e) {
    return e.what();
  }
  return "";
}

template <class Factory>
std::unique_ptr<Filter> build(const std::string& yaml, const std::string& filter, Factory factory) {
  ConfigFile config(yaml);
  return factory(config.options(filter), config.context());
}

Exchange answered(const std::string& body, int status = 200, const std::string& content_type = "application/json") {
  Exchange exchange;
  exchange.request.method = "POST";
  exchange.request.target = exchange.request.path = "/v1/score";
  exchange.response.status = status;
  if (!content_type.empty()) exchange.response.set_header("content-type", content_type);
  exchange.response.body = body;
  return exchange;
}

Exchange scores(const json& probabilities) { return answered(json{{"probabilities", probabilities}}.dump()); }

// What the client receives: the server re-serialises the edited JSON after the response filters.
json delivered(Exchange& exchange) {
  exchange.commit_response_json();
  return json::parse(exchange.response.body);
}

std::string metrics_of(const Filter& filter) {
  MetricsWriter writer;
  filter.write_metrics(writer, {{"route", "score"}});
  return writer.text();
}

// ---- confidence ----

TEST(OutputFiltersConfidence, FlagsLowConfidenceRows) {
  auto filter = build("confidence: {min_confidence: 0.6}\n", "confidence", make_confidence_filter);
  auto confident = scores(json::array({json::array({0.05, 0.9, 0.05})}));
  EXPECT_FALSE(filter->on_response(confident).rejected);
  EXPECT_TRUE(confident.verdicts.empty());
  EXPECT_TRUE(confident.response.header("x-aegis-flags").empty());

  auto unsure = scores(json::array({json::array({0.05, 0.9, 0.05}), json::array({0.4, 0.35, 0.25})}));
  EXPECT_FALSE(filter->on_response(unsure).rejected);
  EXPECT_EQ(unsure.response.header("x-aegis-flags"), "low-confidence");
  ASSERT_EQ(unsure.verdicts.size(), 1u);
  EXPECT_EQ(unsure.verdicts[0].filter, "confidence");
  EXPECT_EQ(unsure.verdicts[0].outcome, "flag");
  EXPECT_EQ(unsure.verdicts[0].detail, "low-confidence: row 1 max p 0.400 < 0.600");
  // The answer itself is untouched.
  EXPECT_EQ(delivered(unsure)["probabilities"][1][0].get<double>(), 0.4);
  EXPECT_EQ(filter->stats().flagged.load(), 1u);
  EXPECT_TRUE(contains(metrics_of(*filter), "aegis_confidence_responses_total{route=\"score\",check=\"low-confidence\"} 1"));
}

TEST(OutputFiltersConfidence, RejectsWithoutRevealingScores) {
  auto filter = build("confidence: {min_confidence: 0.6, action: reject}\n", "confidence", make_confidence_filter);
  auto unsure = scores(json::array({0.41234, 0.35, 0.23766}));
  const auto result = filter->on_response(unsure);
  ASSERT_TRUE(result.rejected);
  EXPECT_EQ(result.status, 422);
  EXPECT_EQ(result.code, "low_confidence");
  EXPECT_FALSE(contains(result.message, "0.41")) << result.message;
  EXPECT_FALSE(contains(result.message, "0.35")) << result.message;
  auto sure = scores(json::array({0.9, 0.05, 0.05}));
  EXPECT_FALSE(filter->on_response(sure).rejected);
}

TEST(OutputFiltersConfidence, FlagsHighEntropyAsOutOfDistribution) {
  auto filter = build("confidence: {max_entropy: 0.8}\n", "confidence", make_confidence_filter);
  // A near-uniform row over 4 classes: normalised entropy close to 1.
  auto uniform = scores(json::array({0.26, 0.25, 0.25, 0.24}));
  EXPECT_FALSE(filter->on_response(uniform).rejected);
  EXPECT_EQ(uniform.response.header("x-aegis-flags"), "ood");
  ASSERT_EQ(uniform.verdicts.size(), 1u);
  EXPECT_TRUE(contains(uniform.verdicts[0].detail, "ood: row 0 entropy 1.000 > 0.800")) << uniform.verdicts[0].detail;
  auto peaked = scores(json::array({0.97, 0.01, 0.01, 0.01}));
  EXPECT_FALSE(filter->on_response(peaked).rejected);
  EXPECT_TRUE(peaked.verdicts.empty());

  EXPECT_NEAR(normalized_entropy({0.25, 0.25, 0.25, 0.25}), 1.0, 1e-12);
  EXPECT_NEAR(normalized_entropy({1, 0, 0}), 0.0, 1e-12);
  EXPECT_NEAR(normalized_entropy({0.5, 0.5, 0, 0}), 0.5, 1e-12);
}

TEST(OutputFiltersConfidence, BothFlagsMergeWithFlagsAlreadySet) {
  auto filter = build("confidence: {min_confidence: 0.6, max_entropy: 0.8}\n", "confidence", make_confidence_filter);
  auto uniform = scores(json::array({json::array({0.34, 0.33, 0.33})}));
  uniform.response.set_header("x-aegis-flags", "injection-suspect,ood");
  EXPECT_FALSE(filter->on_response(uniform).rejected);
  EXPECT_EQ(uniform.response.header("x-aegis-flags"), "injection-suspect,ood,low-confidence");
}

TEST(OutputFiltersConfidence, MalformedRowsAreFlaggedRejectedOrIgnored) {
  const std::vector<std::pair<json, std::string>> broken = {
      {json::array({0.7, -0.2, 0.5}), "negative score"},
      {json::array({0.7, 0.7, 0.7}), "sums to 2.1000"},
      {json::array({3.2, -1.1, 0.4}), "score above 1"},  // logits, not probabilities
      {json::array({json::array({0.5, 0.5}), json::array({0.5, "x"})}), "no 'probabilities' score rows"},
      {json::array(), "no 'probabilities' score rows"},
  };
  auto flagging = build("confidence: {min_confidence: 0.5}\n", "confidence", make_confidence_filter);
  for (const auto& [rows, reason] : broken) {
    auto exchange = scores(rows);
    EXPECT_FALSE(flagging->on_response(exchange).rejected);
    EXPECT_EQ(exchange.response.header("x-aegis-flags"), "malformed-scores") << rows.dump();
    ASSERT_EQ(exchange.verdicts.size(), 1u);
    EXPECT_TRUE(contains(exchange.verdicts[0].detail, reason)) << exchange.verdicts[0].detail;
  }
  auto not_json = answered("<html>oops</html>", 200, "text/html");
  EXPECT_FALSE(flagging->on_response(not_json).rejected);
  EXPECT_EQ(not_json.response.header("x-aegis-flags"), "malformed-scores");

  auto rejecting = build("confidence: {min_confidence: 0.5, malformed: reject}\n", "confidence", make_confidence_filter);
  auto negative = scores(json::array({0.7, -0.2, 0.5}));
  const auto result = rejecting->on_response(negative);
  EXPECT_EQ(result.status, 502);
  EXPECT_EQ(result.code, "malformed_scores");

  auto ignoring = build("confidence: {min_confidence: 0.5, malformed: ignore}\n", "confidence", make_confidence_filter);
  auto sum = scores(json::array({0.7, 0.7, 0.7}));
  EXPECT_FALSE(ignoring->on_response(sum).rejected);
  EXPECT_TRUE(sum.verdicts.empty());

  auto tolerant = build("confidence: {min_confidence: 0.5, sum_tolerance: 0.2}\n", "confidence", make_confidence_filter);
  auto close = scores(json::array({0.6, 0.3}));  // sums to 0.9
  EXPECT_FALSE(tolerant->on_response(close).rejected);
  EXPECT_TRUE(close.verdicts.empty());
}

TEST(OutputFiltersConfidence, LeavesErrorsAndOtherRoutesAlone) {
  auto filter = build("confidence: {min_confidence: 0.9, action: reject}\n", "confidence", make_confidence_filter);
  auto upstream_error = answered(R"({"error": "model overloaded"})", 503);
  EXPECT_FALSE(filter->on_response(upstream_error).rejected);
  EXPECT_TRUE(upstream_error.verdicts.empty());
  RouteInfo chat{"chat", "/v1/chat/completions", ApiStyle::OpenAiChat};
  auto completion = answered(R"({"choices": [{"message": {"content": "hi"}}]})");
  completion.route = &chat;
  EXPECT_FALSE(filter->on_response(completion).rejected);
  RouteInfo classifier{"score", "/v1/score", ApiStyle::Classifier};
  auto unsure = scores(json::array({0.5, 0.5}));
  unsure.route = &classifier;
  EXPECT_TRUE(filter->on_response(unsure).rejected);
}

TEST(OutputFiltersConfidence, LowConfidenceOnTheRealFashionMnistModelMarksLessAccurateAnswers) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  const auto model_path = test::source_dir() / "examples" / "fashion-mnist" / "model.pt";
  models::TorchScriptOptions options;
  options.input_shape = {1, 28, 28};
  options.threads = 1;
  auto model = models::load_torchscript(model_path.string(), options);
  models::DataOptions data;
  data.limit = 400;
  const auto images = models::load_dataset(models::kFashionMnistDir, data);
  const std::size_t classes = static_cast<std::size_t>(model->num_classes());
  std::vector<float> probabilities(images.size() * classes);
  model->predict(images.x, probabilities);
  models::to_probabilities(probabilities, classes, model->info().scores);

  auto filter = build("confidence: {min_confidence: 0.7, max_entropy: 0.5}\n", "confidence", make_confidence_filter);
  std::size_t flagged = 0, flagged_right = 0, passed = 0, passed_right = 0;
  json all_rows = json::array();
  for (std::size_t i = 0; i < images.size(); ++i) {
    json row = json::array();
    for (std::size_t c = 0; c < classes; ++c) row.push_back(probabilities[i * classes + c]);
    all_rows.push_back(row);
    auto exchange = scores(json::array({row}));
    ASSERT_FALSE(filter->on_response(exchange).rejected);
    const bool right = static_cast<int>(argmax(row.get<std::vector<double>>())) == images.y[i];
    const std::string flags(exchange.response.header("x-aegis-flags"));
    EXPECT_FALSE(contains(flags, "malformed-scores")) << "softmax rows are probability vectors: " << row.dump();
    if (flags.empty()) {
      ++passed;
      passed_right += right;
    } else {
      ++flagged;
      flagged_right += right;
    }
  }
  ASSERT_GT(flagged, 0u);
  ASSERT_GT(passed, 0u);
  const double flagged_accuracy = static_cast<double>(flagged_right) / static_cast<double>(flagged);
  const double passed_accuracy = static_cast<double>(passed_right) / static_cast<double>(passed);
  std::printf("[ measure  ] Fashion-MNIST CNN, %zu test images: %zu flagged (accuracy %.3f), %zu passed (accuracy %.3f)\n",
              images.size(), flagged, flagged_accuracy, passed, passed_accuracy);
  EXPECT_GT(passed_accuracy, flagged_accuracy + 0.2);

  // The whole batch in one response: one verdict that names a few rows and counts the rest.
  auto batch = scores(all_rows);
  ASSERT_FALSE(filter->on_response(batch).rejected);
  ASSERT_EQ(batch.verdicts.size(), 1u);
  EXPECT_TRUE(contains(batch.verdicts[0].detail, " more")) << batch.verdicts[0].detail;
}

TEST(OutputFiltersConfidence, ConfigErrorsNameTheLine) {
  EXPECT_TRUE(contains(config_error("confidence:\n  min_confidence: 1.5\n", "confidence", make_confidence_filter),
                       "gateway.yaml:2:19: min_confidence must be between 0 and 1"));
  EXPECT_TRUE(contains(config_error("confidence:\n  min_confidence: 0.5\n  action: block\n", "confidence", make_confidence_filter),
                       "gateway.yaml:3:11: action must be one of flag, reject, not 'block'"));
  EXPECT_TRUE(contains(config_error("confidence:\n  malformed: ignore\n", "confidence", make_confidence_filter),
                       "gateway.yaml:2:3: confidence checks nothing"));
  EXPECT_TRUE(contains(config_error("confidence:\n  min_confidense: 0.5\n", "confidence", make_confidence_filter),
                       "gateway.yaml:2:3: unknown option 'min_confidense'"));
}

// ---- output hardening ----

TEST(OutputFiltersHardening, TopKKeepsTheLargestAndTheShape) {
  auto filter = build("output_hardening: {top_k: 2}\n", "output_hardening", make_output_hardening_filter);
  auto exchange = scores(json::array({json::array({0.1, 0.5, 0.15, 0.25}), json::array({0.7, 0.1, 0.1, 0.1})}));
  EXPECT_FALSE(filter->on_response(exchange).rejected);
  const json out = delivered(exchange);
  EXPECT_EQ(out["probabilities"], json::parse("[[0, 0.5, 0, 0.25], [0.7, 0.1, 0, 0]]"));
  ASSERT_EQ(exchange.verdicts.size(), 1u);
  EXPECT_EQ(exchange.verdicts[0].outcome, "modify");
  EXPECT_EQ(exchange.verdicts[0].detail, "top_k=2");
  EXPECT_EQ(filter->stats().modified.load(), 1u);
}

TEST(OutputFiltersHardening, TopKTiesKeepTheLowerClassIndex) {
  EXPECT_EQ(harden_row({0.2, 0.3, 0.3, 0.2}, 1, std::nullopt), (std::vector<double>{0, 0.3, 0, 0}));
  EXPECT_EQ(harden_row({0.2, 0.2, 0.2, 0.4}, 2, std::nullopt), (std::vector<double>{0.2, 0, 0, 0.4}));
  EXPECT_EQ(harden_row({0.25, 0.25, 0.25, 0.25}, 3, std::nullopt), (std::vector<double>{0.25, 0.25, 0.25, 0}));
  EXPECT_EQ(harden_row({0.6, 0.4}, 5, std::nullopt), (std::vector<double>{0.6, 0.4}));
}

TEST(OutputFiltersHardening, RoundingNeverChangesThePredictedClass) {
  // 0.504 and 0.496 both round to 0.5 at one decimal: the predicted class goes up one step.
  EXPECT_EQ(harden_row({0.496, 0.504}, std::nullopt, 1), (std::vector<double>{0.5, 0.6}));
  // At zero decimals everything rounds to 0 here; class 0 stays the answer.
  EXPECT_EQ(harden_row({0.4, 0.35, 0.25}, std::nullopt, 0), (std::vector<double>{1, 0, 0}));
  // A tie the model itself produced is left as it was (the first of the tied classes is the argmax).
  EXPECT_EQ(harden_row({0.5, 0.5}, std::nullopt, 1), (std::vector<double>{0.5, 0.5}));

  std::mt19937 random(11);
  std::gamma_distribution<double> gamma(0.3, 1.0);
  for (int trial = 0; trial < 5000; ++trial) {
    const std::size_t classes = 2 + static_cast<std::size_t>(trial % 9);
    std::vector<double> row(classes);
    double sum = 0;
    for (auto& p : row) sum += (p = gamma(random) + 1e-12);
    for (auto& p : row) p /= sum;
    const int decimals = trial % 4;
    const std::optional<std::size_t> top_k = trial % 3 ? std::optional<std::size_t>(1 + trial % 4) : std::nullopt;
    const auto hardened = harden_row(row, top_k, decimals);
    ASSERT_EQ(hardened.size(), row.size());
    const std::size_t predicted = argmax(row);
    for (std::size_t i = 0; i < classes; ++i) {
      if (i != predicted) {
        ASSERT_LT(hardened[i], hardened[predicted]) << "trial " << trial << " class " << i;
      }
      const double scaled = hardened[i] * std::pow(10.0, decimals);
      ASSERT_NEAR(scaled, std::round(scaled), 1e-6) << "not rounded to " << decimals << " decimals";
      ASSERT_GE(hardened[i], 0.0);
    }
  }
}

TEST(OutputFiltersHardening, TopKAndDecimalsTogetherOnAFlatRow) {
  auto filter = build("output_hardening: {top_k: 3, decimals: 2}\n", "output_hardening", make_output_hardening_filter);
  auto exchange = answered(R"({"model": "cnn", "probabilities": [0.011, 0.3333, 0.0057, 0.45, 0.2]})");
  EXPECT_FALSE(filter->on_response(exchange).rejected);
  const json out = delivered(exchange);
  EXPECT_EQ(out["probabilities"], json::parse("[0, 0.33, 0, 0.45, 0.2]"));
  EXPECT_EQ(out["model"], "cnn");
  EXPECT_EQ(exchange.verdicts[0].detail, "top_k=3 decimals=2");
}

TEST(OutputFiltersHardening, LabelsOnlyReplacesTheScores) {
  auto filter = build("output_hardening: {labels_only: true}\n", "output_hardening", make_output_hardening_filter);
  auto batch = scores(json::array({json::array({0.1, 0.9}), json::array({0.6, 0.1, 0.3})}));
  EXPECT_FALSE(filter->on_response(batch).rejected);
  const json out = delivered(batch);
  EXPECT_FALSE(out.contains("probabilities"));
  EXPECT_EQ(out["labels"], json::parse("[1, 0]"));
  auto flat = scores(json::array({0.2, 0.3, 0.5}));
  EXPECT_FALSE(filter->on_response(flat).rejected);
  EXPECT_EQ(delivered(flat)["labels"], json::parse("[2]"));
}

TEST(OutputFiltersHardening, CustomFieldAndFailClosed) {
  auto filter = build("output_hardening: {decimals: 1, field: scores}\n", "output_hardening", make_output_hardening_filter);
  auto good = answered(R"({"scores": [[0.123, 0.877]]})");
  EXPECT_FALSE(filter->on_response(good).rejected);
  EXPECT_EQ(delivered(good)["scores"], json::parse("[[0.1, 0.9]]"));
  for (const std::string body : {R"({"probabilities": [[0.1, 0.9]]})", R"({"scores": [[0.1, "a"]]})", R"({"scores": []})",
                                 R"({"scores": [[]]})", "not json"}) {
    auto exchange = answered(body);
    const auto result = filter->on_response(exchange);
    EXPECT_EQ(result.status, 502) << body;
    EXPECT_EQ(result.code, "malformed_scores") << body;
  }
  auto upstream_error = answered(R"({"error": "busy"})", 503);
  EXPECT_FALSE(filter->on_response(upstream_error).rejected);
}

TEST(OutputFiltersHardening, ConfigErrorsNameTheLine) {
  EXPECT_TRUE(contains(config_error("output_hardening:\n  top_k: 0\n", "output_hardening", make_output_hardening_filter),
                       "gateway.yaml:2:10: top_k must be between 1"));
  EXPECT_TRUE(contains(config_error("output_hardening:\n  decimals: 20\n", "output_hardening", make_output_hardening_filter),
                       "gateway.yaml:2:13: decimals must be between 0 and 12"));
  EXPECT_TRUE(contains(config_error("output_hardening:\n  labels_only: true\n  top_k: 3\n", "output_hardening",
                                    make_output_hardening_filter),
                       "gateway.yaml:2:3: labels_only removes the scores"));
  EXPECT_TRUE(contains(config_error("output_hardening: {}\n", "output_hardening", make_output_hardening_filter),
                       "output_hardening changes nothing"));
  EXPECT_TRUE(contains(config_error("output_hardening:\n  labels_only: maybe\n", "output_hardening", make_output_hardening_filter),
                       "gateway.yaml:2:16: labels_only must be true or false"));
}

// ---- redaction ----

constexpr const char* kEmail = "jane.doe@example.com";
constexpr const char* kCard = "4111 1111 1111 1111";
constexpr const char* kAwsKey = "AKIA2OGYBAH6QTHKJXVW";

std::string leaky_text() {
  return std::string("Contact ") + kEmail + ", card " + kCard + ", key " + kAwsKey + " thanks";
}

class OutputFiltersRedact : public ::testing::Test {
 protected:
  // The detector compiles every rule: build the default filter once for the suite.
  static void SetUpTestSuite() { mask_ = build("redact: {}\n", "redact", make_redact_filter).release(); }
  static void TearDownTestSuite() {
    delete mask_;
    mask_ = nullptr;
  }
  static Filter* mask_;
};
Filter* OutputFiltersRedact::mask_ = nullptr;

TEST_F(OutputFiltersRedact, RedactsEveryStringOfAJsonResponse) {
  json chat = {{"id", "chatcmpl-1"},
               {"choices", json::array({{{"index", 0}, {"message", {{"role", "assistant"}, {"content", leaky_text()}}}}})},
               {"user", kEmail}};
  auto exchange = answered(chat.dump());
  EXPECT_FALSE(mask_->on_response(exchange).rejected);
  const json out = delivered(exchange);
  const std::string content = out["choices"][0]["message"]["content"];
  EXPECT_EQ(content, "Contact <EMAIL_ADDRESS>, card <CREDIT_CARD>, key <SECRET> thanks");
  EXPECT_EQ(out["user"], "<EMAIL_ADDRESS>");
  EXPECT_EQ(out["id"], "chatcmpl-1");
  ASSERT_EQ(exchange.verdicts.size(), 1u);
  EXPECT_EQ(exchange.verdicts[0].filter, "redact");
  EXPECT_EQ(exchange.verdicts[0].outcome, "modify");
  EXPECT_EQ(exchange.verdicts[0].detail, "CREDIT_CARD=1 EMAIL_ADDRESS=2 SECRET=1");
  const auto metrics = metrics_of(*mask_);
  EXPECT_TRUE(std::regex_search(metrics, std::regex(R"(aegis_redact_entities_total\{route="score",entity="EMAIL_ADDRESS"\} [1-9])")))
      << metrics;
  EXPECT_TRUE(std::regex_search(metrics, std::regex(R"(entity="SECRET"\} [1-9])"))) << metrics;
}

TEST_F(OutputFiltersRedact, CleanResponsesAreLeftAlone) {
  auto exchange = answered(R"({"choices": [{"message": {"content": "The capital of France is Paris."}}]})");
  EXPECT_FALSE(mask_->on_response(exchange).rejected);
  EXPECT_TRUE(exchange.verdicts.empty());
  EXPECT_EQ(delivered(exchange)["choices"][0]["message"]["content"], "The capital of France is Paris.");
  auto picture = answered(std::string("\x89PNG\r\n") + kEmail, 200, "image/png");
  EXPECT_FALSE(mask_->on_response(picture).rejected);
  EXPECT_TRUE(contains(picture.response.body, kEmail)) << "binary bodies pass untouched";
}

TEST_F(OutputFiltersRedact, RedactsTextBodies) {
  auto plain = answered(leaky_text() + "\n", 200, "text/plain; charset=utf-8");
  EXPECT_FALSE(mask_->on_response(plain).rejected);
  EXPECT_EQ(plain.response.body, "Contact <EMAIL_ADDRESS>, card <CREDIT_CARD>, key <SECRET> thanks\n");
  // A body that says JSON but is not: redacted as text all the same (an error page, a truncated answer).
  auto broken = answered("{\"content\": \"" + leaky_text(), 500);
  EXPECT_FALSE(mask_->on_response(broken).rejected);
  EXPECT_FALSE(contains(broken.response.body, kEmail));
  EXPECT_FALSE(contains(broken.response.body, kAwsKey));
}

TEST_F(OutputFiltersRedact, RedactsEachServerSentEvent) {
  Exchange exchange = answered("", 200, "text/event-stream");
  auto delta = [](const std::string& content) {
    return "data: " + json{{"id", "c1"}, {"choices", json::array({{{"index", 0}, {"delta", {{"content", content}}}}})}}.dump() + "\n\n";
  };
  std::string first = delta(std::string("Write to ") + kEmail);
  mask_->on_response_event(exchange, first);
  ASSERT_EQ(first.substr(0, 6), "data: ");
  ASSERT_EQ(first.substr(first.size() - 2), "\n\n");
  const json event = json::parse(first.substr(6));
  EXPECT_EQ(event["choices"][0]["delta"]["content"], "Write to <EMAIL_ADDRESS>");

  const std::string clean_original = delta("nothing to see");
  std::string clean = clean_original;
  mask_->on_response_event(exchange, clean);
  EXPECT_EQ(clean, clean_original);

  std::string card = "event: message\r\nid: 7\r\ndata: " +
                     json{{"choices", json::array({{{"delta", {{"content", std::string("card ") + kCard}}}}})}}.dump() +
                     "\r\n\r\n";
  mask_->on_response_event(exchange, card);
  EXPECT_TRUE(card.rfind("event: message\r\nid: 7\r\ndata: {", 0) == 0) << card;
  EXPECT_TRUE(contains(card, "card <CREDIT_CARD>")) << card;
  EXPECT_EQ(card.substr(card.size() - 4), "\r\n\r\n");

  std::string text_event = std::string("data: key ") + kAwsKey + "\n\n";
  mask_->on_response_event(exchange, text_event);
  EXPECT_EQ(text_event, "data: key <SECRET>\n\n");

  std::string done = "data: [DONE]\n\n";
  mask_->on_response_event(exchange, done);
  EXPECT_EQ(done, "data: [DONE]\n\n");

  // One verdict per exchange, adding up the events.
  ASSERT_EQ(exchange.verdicts.size(), 1u);
  EXPECT_EQ(exchange.verdicts[0].detail, "CREDIT_CARD=1 EMAIL_ADDRESS=1 SECRET=1");
}

TEST_F(OutputFiltersRedact, RedactsAWholeEventStreamBody) {
  const std::string body = "data: {\"choices\":[{\"delta\":{\"content\":\"mail " + std::string(kEmail) +
                           "\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\" ok\"}}]}\n\ndata: [DONE]\n\n";
  auto exchange = answered(body, 200, "text/event-stream");
  EXPECT_FALSE(mask_->on_response(exchange).rejected);
  EXPECT_FALSE(contains(exchange.response.body, kEmail));
  EXPECT_TRUE(contains(exchange.response.body, "mail <EMAIL_ADDRESS>"));
  EXPECT_TRUE(contains(exchange.response.body, "\n\ndata: {\"choices\":[{\"delta\":{\"content\":\" ok\"}}]}\n\ndata: [DONE]\n\n"));

  // The same with CRLF line ends: events stay separate and keep their terminators.
  auto crlf = answered("data: mail " + std::string(kEmail) + "\r\n\r\ndata: {\"n\": 1}\r\n\r\ndata: [DONE]\r\n\r\n", 200,
                       "text/event-stream");
  EXPECT_FALSE(mask_->on_response(crlf).rejected);
  EXPECT_EQ(crlf.response.body, "data: mail <EMAIL_ADDRESS>\r\n\r\ndata: {\"n\": 1}\r\n\r\ndata: [DONE]\r\n\r\n");
}

TEST(OutputFiltersRedactOptions, FieldsLimitWhatIsRedacted) {
  auto filter = build("redact:\n  entities: [EMAIL_ADDRESS]\n  secrets: false\n  fields: [choices.*.message.content]\n", "redact",
                      make_redact_filter);
  json chat = {{"choices", json::array({{{"message", {{"content", leaky_text()}}}}})}, {"user", kEmail}};
  auto exchange = answered(chat.dump());
  EXPECT_FALSE(filter->on_response(exchange).rejected);
  const json out = delivered(exchange);
  // Only e-mail addresses, only in the content.
  EXPECT_EQ(out["choices"][0]["message"]["content"],
            std::string("Contact <EMAIL_ADDRESS>, card ") + kCard + ", key " + kAwsKey + " thanks");
  EXPECT_EQ(out["user"], kEmail);
  EXPECT_EQ(exchange.verdicts[0].detail, "EMAIL_ADDRESS=1");
}

TEST(OutputFiltersRedactOptions, HashAndDropActions) {
  ASSERT_EQ(setenv("AEGIS_TEST_REDACT_KEY", "a-deployment-secret", 1), 0);
  auto filter = build(
      "redact:\n  entities: [EMAIL_ADDRESS, CREDIT_CARD]\n  secrets: false\n  action: drop\n"
      "  entity_actions: {EMAIL_ADDRESS: hash}\n  hash_key_env: AEGIS_TEST_REDACT_KEY\n",
      "redact", make_redact_filter);
  auto once = answered(json{{"text", leaky_text()}}.dump());
  auto twice = answered(json{{"text", std::string("again ") + kEmail}}.dump());
  EXPECT_FALSE(filter->on_response(once).rejected);
  EXPECT_FALSE(filter->on_response(twice).rejected);
  const std::string first = delivered(once)["text"];
  const std::string second = delivered(twice)["text"];
  std::smatch hashed;
  ASSERT_TRUE(std::regex_search(first, hashed, std::regex("<EMAIL_ADDRESS:([0-9a-f]{12})>"))) << first;
  EXPECT_TRUE(contains(second, hashed[0].str())) << "the same address hashes the same: " << second;
  EXPECT_FALSE(contains(first, kCard));
  EXPECT_FALSE(contains(first, "CREDIT_CARD")) << "dropped entirely: " << first;
  EXPECT_TRUE(contains(first, kAwsKey)) << "secrets were switched off";
  unsetenv("AEGIS_TEST_REDACT_KEY");
}

TEST(OutputFiltersRedactOptions, ConfigErrorsNameTheLine) {
  EXPECT_TRUE(contains(config_error("redact:\n  entities: [EMAIL, PHONE_NUMBER]\n", "redact", make_redact_filter),
                       "gateway.yaml:2:13: redact: "));
  EXPECT_TRUE(contains(config_error("redact:\n  action: blur\n", "redact", make_redact_filter),
                       "gateway.yaml:2:11: unknown redaction action 'blur'"));
  EXPECT_TRUE(contains(config_error("redact:\n  entities: [EMAIL_ADDRESS]\n  secrets: false\n  entity_actions: {US_SSN: hash}\n",
                                    "redact", make_redact_filter),
                       "gateway.yaml:4:20: entity_actions names 'US_SSN', which this filter does not detect"));
  unsetenv("AEGIS_TEST_MISSING_KEY");
  EXPECT_TRUE(contains(config_error("redact:\n  entities: [EMAIL_ADDRESS]\n  secrets: false\n  action: hash\n"
                                    "  hash_key_env: AEGIS_TEST_MISSING_KEY\n",
                                    "redact", make_redact_filter),
                       "gateway.yaml:5:17: hash_key_env names AEGIS_TEST_MISSING_KEY, which is not set"));
  EXPECT_TRUE(contains(config_error("redact:\n  fields: [choices..content]\n", "redact", make_redact_filter),
                       "field path 'choices..content' has an empty step"));
  EXPECT_TRUE(contains(config_error("redact:\n  min_score: 2\n", "redact", make_redact_filter), "gateway.yaml:2:14: min_score"));
}

}  // namespace
}  // namespace aegis::gateway
