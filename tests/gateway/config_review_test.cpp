// `aegis gateway review`: each missing control on each route is one finding, and the hardened example
// config does not report what it has.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>

#include "aegis/core/finding_json.h"
#include "aegis/gateway/config.h"
#include "aegis/gateway/config_review.h"
#include "test_support.h"

namespace aegis::gateway {
namespace {

std::set<std::string> rules_for(const std::vector<core::Finding>& findings, const std::string& column) {
  std::set<std::string> out;
  for (const auto& f : findings)
    if (f.location.column == column) out.insert(f.rule_id);
  return out;
}

TEST(GatewayReview, WeakConfigReportsEachMissingControl) {
  const auto config = load_gateway_config((test::source_dir() / "examples/assess/gateway.yaml").string());
  const auto findings = review_gateway_config(config);
  const auto classify = rules_for(findings, "routes.classify");
  EXPECT_FALSE(classify.contains("gateway.route-without-auth")) << "it has an api_key filter";
  EXPECT_TRUE(classify.contains("gateway.route-without-rate-limit"));
  EXPECT_TRUE(classify.contains("gateway.classifier-raw-probabilities"));
  EXPECT_TRUE(classify.contains("gateway.classifier-without-extraction-monitor"));
  const auto chat = rules_for(findings, "routes.chat");
  EXPECT_TRUE(chat.contains("gateway.route-without-auth"));
  EXPECT_TRUE(chat.contains("gateway.llm-route-without-guard"));
  EXPECT_FALSE(chat.contains("gateway.route-without-rate-limit"));
  EXPECT_TRUE(rules_for(findings, "audit").contains("gateway.no-audit-log"));
  EXPECT_TRUE(rules_for(findings, "listen").contains("gateway.listen-without-tls"));
  for (const auto& f : findings) {
    EXPECT_FALSE(f.atlas.empty()) << f.rule_id;
    EXPECT_FALSE(f.remediation.empty()) << f.rule_id;
    if (f.rule_id == "gateway.route-without-auth") {
      EXPECT_EQ(f.severity, core::Severity::Critical) << "listening on 0.0.0.0";
    }
  }
}

TEST(GatewayReview, HardenedExampleKeepsItsControls) {
  const auto config = load_gateway_config((test::source_dir() / "examples/gateway/gateway.yaml").string());
  const auto findings = review_gateway_config(config);
  const auto classify = rules_for(findings, "routes.classify");
  EXPECT_TRUE(classify.empty()) << (classify.empty() ? "" : *classify.begin());
  EXPECT_FALSE(rules_for(findings, "routes.chat").contains("gateway.llm-route-without-guard"));
  EXPECT_TRUE(rules_for(findings, "audit").empty());
  EXPECT_TRUE(rules_for(findings, "listen").empty()) << "loopback";
}

TEST(FindingJson, RoundTripsEveryFieldAndRefusesMalformedFindings) {
  core::Finding f;
  f.rule_id = "x.y";
  f.severity = core::Severity::High;
  f.title = "t";
  f.location.file = "a.csv";
  f.location.row = 7;
  f.location.column = "email";
  f.evidence = "e";
  f.atlas = {"AML.T0057"};
  f.nist_ai_rmf = {"MEASURE 2.10"};
  f.remediation = "r";
  f.properties_json = R"({"entity_type":"EMAIL_ADDRESS","score":0.9})";
  const auto back = core::finding_from_json(nlohmann::json(core::finding_json(f)));
  ASSERT_TRUE(back.has_value());
  EXPECT_EQ(back->rule_id, f.rule_id);
  EXPECT_EQ(back->severity, f.severity);
  EXPECT_EQ(back->location.row, f.location.row);
  EXPECT_EQ(back->location.column, f.location.column);
  EXPECT_EQ(back->atlas, f.atlas);
  EXPECT_EQ(nlohmann::json::parse(back->properties_json), nlohmann::json::parse(f.properties_json));
  std::string why;
  EXPECT_FALSE(core::finding_from_json(nlohmann::json::array(), &why));
  EXPECT_FALSE(core::finding_from_json({{"rule_id", "x"}, {"severity", "apocalyptic"}}, &why));
  EXPECT_NE(why.find("severity"), std::string::npos);
  EXPECT_TRUE(core::finding_from_json({{"rule_id", "x"}, {"severity", "low"}, {"atlas", 5}, {"location", "nowhere"}}).has_value())
      << "fields of the wrong type are left empty";
}

}  // namespace
}  // namespace aegis::gateway
