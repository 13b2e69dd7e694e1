#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <sstream>

#include "aegis/core/finding.h"
#include "aegis/core/report.h"

namespace aegis::core {
namespace {

std::vector<Finding> sample_findings() {
  Finding critical;
  critical.rule_id = "pickle.denied-callable";
  critical.severity = Severity::Critical;
  critical.title = "Pickle imports os.system";
  critical.location.file = "models/evil.pt";
  critical.location.member = "archive/data.pkl";
  critical.location.offset = 42;
  critical.evidence = "GLOBAL os.system at 0x2a; call os.system ('echo | pwned',)";
  critical.atlas = {"AML.T0010.003", "AML.T0011.000"};
  critical.nist_ai_rmf = {"MEASURE 2.7"};
  critical.remediation = "Do not load it.";
  Finding low;
  low.rule_id = "pickle.trailing-data";
  low.severity = Severity::Low;
  low.title = "Trailing bytes";
  low.location.file = "a b/x.pkl";
  return {critical, low};
}

ReportContext context_for(const std::vector<Finding>& findings) {
  ReportContext context;
  context.command = "scan";
  context.inputs = {"models"};
  context.summary = summarize(findings);
  context.summary.files_scanned = 2;
  context.summary.bytes_scanned = 1234;
  return context;
}

TEST(Severity, ParsesAndOrders) {
  EXPECT_EQ(parse_severity("critical"), Severity::Critical);
  EXPECT_EQ(parse_severity("info"), Severity::Info);
  EXPECT_FALSE(parse_severity("severe").has_value());
  EXPECT_GT(Severity::Critical, Severity::High);
  EXPECT_EQ(to_string(Severity::Medium), "medium");
}

TEST(Summary, CountsBySeverityAndHighest) {
  auto findings = sample_findings();
  auto summary = summarize(findings);
  EXPECT_EQ(summary.counts[static_cast<int>(Severity::Critical)], 1u);
  EXPECT_EQ(summary.counts[static_cast<int>(Severity::Low)], 1u);
  EXPECT_EQ(summary.highest, Severity::Critical);
  EXPECT_FALSE(summarize({}).highest.has_value());
}

TEST(JsonReport, HasTheDocumentShapeOfDesign) {
  auto findings = sample_findings();
  auto context = context_for(findings);
  context.extra_json = R"({"files": [{"path": "models/evil.pt"}]})";
  std::ostringstream out;
  write_report(out, ReportFormat::Json, findings, context);
  auto doc = nlohmann::json::parse(out.str());
  EXPECT_EQ(doc["aegis"]["command"], "scan");
  EXPECT_TRUE(doc["aegis"]["version"].is_string());
  ASSERT_EQ(doc["findings"].size(), 2u);
  const auto& first = doc["findings"][0];
  EXPECT_EQ(first["rule_id"], "pickle.denied-callable");
  EXPECT_EQ(first["severity"], "critical");
  EXPECT_EQ(first["location"]["file"], "models/evil.pt");
  EXPECT_EQ(first["location"]["member"], "archive/data.pkl");
  EXPECT_EQ(first["location"]["offset"], 42);
  EXPECT_EQ(first["atlas"][1], "AML.T0011.000");
  EXPECT_EQ(first["nist_ai_rmf"][0], "MEASURE 2.7");
  EXPECT_FALSE(doc["findings"][1]["location"].contains("offset"));
  EXPECT_EQ(doc["summary"]["by_severity"]["critical"], 1);
  EXPECT_EQ(doc["summary"]["highest"], "critical");
  EXPECT_EQ(doc["files"][0]["path"], "models/evil.pt");
}

TEST(SarifReport, IsSarif210WithRulesResultsAndSecuritySeverity) {
  auto findings = sample_findings();
  std::ostringstream out;
  write_report(out, ReportFormat::Sarif, findings, context_for(findings));
  auto doc = nlohmann::json::parse(out.str());
  EXPECT_EQ(doc["version"], "2.1.0");
  ASSERT_EQ(doc["runs"].size(), 1u);
  const auto& run = doc["runs"][0];
  EXPECT_EQ(run["tool"]["driver"]["name"], "Aegis");
  ASSERT_EQ(run["tool"]["driver"]["rules"].size(), 2u);
  EXPECT_EQ(run["tool"]["driver"]["rules"][0]["properties"]["security-severity"], "9.8");
  ASSERT_EQ(run["results"].size(), 2u);
  const auto& result = run["results"][0];
  EXPECT_EQ(result["ruleId"], "pickle.denied-callable");
  EXPECT_EQ(result["level"], "error");
  EXPECT_EQ(result["ruleIndex"], 0);
  EXPECT_EQ(result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "models/evil.pt");
  EXPECT_TRUE(result["partialFingerprints"].contains("aegisFinding/v1"));
  EXPECT_NE(result["message"]["text"].get<std::string>().find("archive/data.pkl"), std::string::npos);
  // spaces in paths are percent-encoded in URIs
  EXPECT_EQ(run["results"][1]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], "a%20b/x.pkl");
  EXPECT_EQ(run["results"][1]["level"], "note");
}

TEST(MarkdownReport, EscapesTableCells) {
  auto findings = sample_findings();
  std::ostringstream out;
  write_report(out, ReportFormat::Markdown, findings, context_for(findings));
  std::string text = out.str();
  EXPECT_NE(text.find("| critical | pickle.denied-callable |"), std::string::npos) << text;
  EXPECT_NE(text.find("echo \\| pwned"), std::string::npos) << text;
}

TEST(TableReport, ListsFindingsAndSummary) {
  auto findings = sample_findings();
  std::ostringstream out;
  write_report(out, ReportFormat::Table, findings, context_for(findings));
  std::string text = out.str();
  EXPECT_NE(text.find("CRITICAL"), std::string::npos);
  EXPECT_NE(text.find("models/evil.pt!archive/data.pkl @42"), std::string::npos);
  EXPECT_NE(text.find("2 finding(s), 1 critical, 1 low"), std::string::npos) << text;
  EXPECT_EQ(text.find("\033["), std::string::npos) << "no colour unless asked";
}

TEST(ReportFormat, Parses) {
  EXPECT_EQ(parse_report_format("sarif"), ReportFormat::Sarif);
  EXPECT_EQ(parse_report_format("md"), ReportFormat::Markdown);
  EXPECT_FALSE(parse_report_format("xml").has_value());
}

}  // namespace
}  // namespace aegis::core
