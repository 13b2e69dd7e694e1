// `aegis pii` as a user runs it: the JSON report's findings (entity_type, file, row/line, column,
// score), exit codes, the table, entity filters and errors.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>

#include "test_support.h"

namespace aegis::test {
namespace {

void write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

class PiiCli : public ::testing::Test {
 protected:
  void SetUp() override {
    write(dir_.path / "people.csv",
          "name,email,ssn,zip,dob,sex\n"
          "Ann,ann.smith@example.com,536-22-8841,10001,1980-01-02,F\n"
          "Bob,bob@example.net,,10001,1980-01-02,F\n");
    write(dir_.path / "notes.txt", "nothing here\nmail carol@example.org please\n");
  }
  TempDir dir_;
};

TEST_F(PiiCli, JsonFindingsCarryEntityFileRowColumnAndScore) {
  const auto result = run_cli({"pii", dir_.path.string(), "--format", "json", "--quiet"});
  ASSERT_EQ(result.exit_code, 1) << result.err;  // an SSN is high severity, the default --fail-on
  const auto report = nlohmann::json::parse(result.out);
  EXPECT_EQ(report["aegis"]["command"], "pii");
  std::map<std::string, int> types;
  bool text_line = false;
  for (const auto& f : report["findings"]) {
    ASSERT_TRUE(f.contains("entity_type")) << f.dump();
    ASSERT_TRUE(f.contains("score"));
    ASSERT_TRUE(f.contains("file"));
    ASSERT_TRUE(f.contains("column"));
    if (f["rule_id"] == "pii.reidentification-risk") {
      EXPECT_EQ(f["entity_type"], "QUASI_IDENTIFIERS");
      EXPECT_EQ(f["k"], 2);
      continue;
    }
    ASSERT_TRUE(f.contains("row") || f.contains("line")) << f.dump();
    ++types[f["entity_type"].get<std::string>()];
    if (f["entity_type"] == "US_SSN") {
      EXPECT_EQ(f["row"], 1);
      EXPECT_EQ(f["column"], "ssn");
      EXPECT_EQ(f["severity"], "high");
      EXPECT_TRUE(f["file"].get<std::string>().ends_with("people.csv"));
      EXPECT_EQ(f["evidence"].get<std::string>().find("536-22"), std::string::npos) << "samples are masked";
    }
    if (f["file"].get<std::string>().ends_with("notes.txt")) {
      EXPECT_EQ(f["line"], 2);
      EXPECT_EQ(f["column"], "");
      text_line = true;
    }
  }
  EXPECT_EQ(types["EMAIL_ADDRESS"], 3);
  EXPECT_EQ(types["US_SSN"], 1);
  EXPECT_TRUE(text_line);
  // per-file and per-column results and the re-identification risk (zip, dob, sex recognised)
  bool people = false;
  for (const auto& file : report["files"])
    if (file["file"].get<std::string>().ends_with("people.csv")) {
      people = true;
      EXPECT_EQ(file["records"], 2);
      EXPECT_EQ(file["k_anonymity"]["k"], 2);
      EXPECT_EQ(file["k_anonymity"]["columns"].size(), 3u);
    }
  EXPECT_TRUE(people);
  EXPECT_EQ(report["entities"]["EMAIL_ADDRESS"], 3);
}

TEST_F(PiiCli, FiltersFailOnAndTable) {
  auto result = run_cli({"pii", (dir_.path / "people.csv").string(), "--entities", "EMAIL_ADDRESS", "--format", "json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;  // e-mail addresses are medium: below --fail-on high
  auto report = nlohmann::json::parse(result.out);
  std::size_t emails = 0;
  for (const auto& f : report["findings"]) {
    if (f["rule_id"] == "pii.reidentification-risk") continue;  // about the quasi-identifiers, not an entity
    EXPECT_EQ(f["entity_type"], "EMAIL_ADDRESS");
    ++emails;
  }
  EXPECT_EQ(emails, 2u);

  result = run_cli({"pii", (dir_.path / "people.csv").string(), "--format", "json", "--fail-on", "medium",
                    "--max-findings", "1"});
  EXPECT_EQ(result.exit_code, 1);
  report = nlohmann::json::parse(result.out);
  EXPECT_EQ(report["findings"].size(), 2u);  // one occurrence and the k-anonymity finding
  EXPECT_TRUE(report.contains("truncated"));

  result = run_cli({"pii", dir_.path.string(), "--format", "table"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.out.find("people.csv"), std::string::npos);
  EXPECT_NE(result.out.find("US_SSN"), std::string::npos);
  EXPECT_NE(result.out.find("k-anonymity"), std::string::npos);

  result = run_cli({"pii", dir_.path.string(), "--format", "sarif"});
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.out.find("\"entity_type\""), std::string::npos);
}

TEST_F(PiiCli, BadInputsAreUsageErrors) {
  auto result = run_cli({"pii", (dir_.path / "absent.csv").string()});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("absent.csv"), std::string::npos);
  result = run_cli({"pii", dir_.path.string(), "--input-format", "xml"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("--input-format"), std::string::npos);
  write(dir_.path / "bad.toml", "[[rules]]\nid = \"broken\"\nregex = \"(unclosed\"\n");
  result = run_cli({"pii", (dir_.path / "people.csv").string(), "--rules", (dir_.path / "bad.toml").string()});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("broken"), std::string::npos) << result.err;
}

TEST_F(PiiCli, RedactReplacesWholeEntitiesPerAction) {
  write(dir_.path / "log.txt", "user ann.smith@example.com paid with 4539 1488 0343 6467, ssn 536-22-8841\nok\n");
  auto result = run_cli({"redact", (dir_.path / "log.txt").string()});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(result.out, "user <EMAIL_ADDRESS> paid with <CREDIT_CARD>, ssn <US_SSN>\nok\n");

  ::setenv("AEGIS_REDACT_KEY", "per-deployment secret", 1);
  result = run_cli({"redact", (dir_.path / "log.txt").string(), "--entity-action", "EMAIL_ADDRESS=hash", "--entity-action",
                    "CREDIT_CARD=drop"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto again = run_cli({"redact", (dir_.path / "log.txt").string(), "--entity-action", "EMAIL_ADDRESS=hash",
                              "--entity-action", "CREDIT_CARD=drop"});
  EXPECT_EQ(result.out, again.out);  // keyed hashes are stable, so records still join
  EXPECT_EQ(result.out.find("ann.smith"), std::string::npos);
  EXPECT_EQ(result.out.find("4539"), std::string::npos);
  EXPECT_NE(result.out.find("<EMAIL_ADDRESS:"), std::string::npos);
  EXPECT_NE(result.out.find("paid with ,"), std::string::npos);
  ::setenv("AEGIS_REDACT_KEY", "another key", 1);
  const auto other_key = run_cli({"redact", (dir_.path / "log.txt").string(), "--entity-action", "EMAIL_ADDRESS=hash"});
  ::unsetenv("AEGIS_REDACT_KEY");
  EXPECT_NE(other_key.out.substr(0, 40), result.out.substr(0, 40));

  result = run_cli({"redact", (dir_.path / "log.txt").string(), "--action", "blur"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("mask, hash or drop"), std::string::npos);
}

}  // namespace
}  // namespace aegis::test
