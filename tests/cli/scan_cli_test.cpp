#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../test_support.h"

namespace aegis::test {
namespace {

TEST(ScanCli, CleanFileExitsZero) {
  auto result = run_cli({"scan", fixture("benign/state_dict.pt").string(), "--format", "json"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  auto doc = nlohmann::json::parse(result.out);
  EXPECT_EQ(doc["aegis"]["command"], "scan");
  EXPECT_TRUE(doc["findings"].empty());
  EXPECT_EQ(doc["summary"]["files"], 1);
  EXPECT_EQ(doc["files"][0]["format"], "pytorch-zip");
}

TEST(ScanCli, MaliciousFileExitsOneAndNamesTheCallable) {
  auto result = run_cli({"scan", fixture("malicious/os_system_reduce.pkl").string(), "--format", "json"});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  auto doc = nlohmann::json::parse(result.out);
  ASSERT_FALSE(doc["findings"].empty());
  const auto& finding = doc["findings"][0];
  EXPECT_EQ(finding["severity"], "critical");
  EXPECT_EQ(finding["rule_id"], "pickle.denied-callable");
  EXPECT_NE(finding["title"].get<std::string>().find("system"), std::string::npos);
  EXPECT_TRUE(finding["location"].contains("offset"));
  EXPECT_FALSE(finding["atlas"].empty());
  EXPECT_FALSE(finding["remediation"].get<std::string>().empty());
}

TEST(ScanCli, FailOnSetsTheThreshold) {
  auto path = fixture("malicious/unknown_callable.pkl").string();
  EXPECT_EQ(run_cli({"scan", path, "--format", "json"}).exit_code, 1);  // high >= default high
  EXPECT_EQ(run_cli({"scan", path, "--format", "json", "--fail-on", "critical"}).exit_code, 0);
  EXPECT_EQ(run_cli({"scan", path, "--format", "json", "--allow", "mylib.helpers.load_config"}).exit_code, 0);
  // the flag takes one value: paths after it are still paths
  EXPECT_EQ(run_cli({"scan", "--allow", "mylib.helpers.load_config", "--allow", "x.y", path, "--format", "json"}).exit_code, 0);
}

TEST(ScanCli, UsageAndIoErrorsExitTwoWithAReason) {
  auto missing = run_cli({"scan", "/nonexistent/model.pt"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("/nonexistent/model.pt"), std::string::npos) << missing.err;
  EXPECT_NE(missing.err.find("what to do"), std::string::npos) << missing.err;
  auto bad_flag = run_cli({"scan", "--format", "xml", fixture("benign/state_dict.pt").string()});
  EXPECT_EQ(bad_flag.exit_code, 2);
  EXPECT_EQ(run_cli({}).exit_code, 2);
  auto unwritable = run_cli({"scan", fixture("benign/state_dict.pt").string(), "--output", "/nonexistent/dir/out.json"});
  EXPECT_EQ(unwritable.exit_code, 2);
  EXPECT_NE(unwritable.err.find("cannot write"), std::string::npos) << unwritable.err;
}

TEST(ScanCli, SarifAndMarkdownAndOutputFile) {
  auto out = std::filesystem::path(::testing::TempDir()) / "aegis-report.sarif";
  auto result = run_cli({"scan", fixture("malicious/pt_zip_malicious.pt").string(), "--format", "sarif", "--output",
                         out.string()});
  EXPECT_EQ(result.exit_code, 1) << result.err;
  EXPECT_TRUE(result.out.empty());
  std::ifstream in(out);
  auto doc = nlohmann::json::parse(in);
  EXPECT_EQ(doc["version"], "2.1.0");
  EXPECT_FALSE(doc["runs"][0]["results"].empty());
  std::filesystem::remove(out);

  auto markdown = run_cli({"scan", fixture("malicious/pt_zip_malicious.pt").string(), "--format", "markdown"});
  EXPECT_NE(markdown.out.find("# Aegis scan report"), std::string::npos);
  EXPECT_NE(markdown.out.find("| critical |"), std::string::npos) << markdown.out;
}

TEST(ScanCli, TableFormatAndQuietProgressOffAPipe) {
  auto result = run_cli({"scan", fixture("benign").string(), "--format", "table"});
  EXPECT_EQ(result.exit_code, 0) << result.out;
  EXPECT_NE(result.out.find("no findings"), std::string::npos) << result.out;
  EXPECT_TRUE(result.err.empty()) << "progress goes to a terminal only: " << result.err;
}

TEST(ScanCli, ConfigFileSuppliesOptions) {
  auto config = std::filesystem::path(::testing::TempDir()) / "aegis.toml";
  {
    std::ofstream out(config);
    out << "[scan]\nfail-on = \"critical\"\nformat = \"json\"\n";
  }
  auto result = run_cli({"--config", config.string(), "scan", fixture("malicious/unknown_callable.pkl").string()});
  EXPECT_EQ(result.exit_code, 0) << result.err << result.out;
  std::filesystem::remove(config);
}

}  // namespace
}  // namespace aegis::test

namespace aegis::test {
namespace {

// keygen -> sign -> verify through the command line, with the passphrase from the environment.
TEST(SignCli, KeygenSignVerifyAndATamperedFileExitsOne) {
  TempDir temp("aegis_sign_cli");
  auto model = temp.path / "model";
  std::filesystem::create_directories(model);
  std::ofstream(model / "weights.bin") << "weights";
  std::ofstream(model / "config.json") << "{}";
  ::setenv("AEGIS_KEY_PASSPHRASE", "test passphrase", 1);
  auto keygen = run_cli({"keygen", "--out", (temp.path / "signer").string()});
  ASSERT_EQ(keygen.exit_code, 0) << keygen.err;
  auto sign = run_cli({"sign", model.string(), "--key", (temp.path / "signer.pem").string()});
  ASSERT_EQ(sign.exit_code, 0) << sign.err;
  ASSERT_TRUE(std::filesystem::exists(model / "model.sig"));
  auto verify = run_cli({"verify", model.string(), "--signature", (model / "model.sig").string(), "--key",
                         (temp.path / "signer.pub.pem").string(), "--format", "json"});
  EXPECT_EQ(verify.exit_code, 0) << verify.err;
  EXPECT_TRUE(nlohmann::json::parse(verify.out)["verification"]["verified"].get<bool>());
  std::ofstream(model / "weights.bin") << "swapped";
  verify = run_cli({"verify", model.string(), "--signature", (model / "model.sig").string(), "--key",
                    (temp.path / "signer.pub.pem").string(), "--format", "json"});
  EXPECT_EQ(verify.exit_code, 1);
  auto doc = nlohmann::json::parse(verify.out);
  ASSERT_EQ(doc["findings"].size(), 1u);
  EXPECT_EQ(doc["findings"][0]["rule_id"], "signature.file-changed");
  EXPECT_NE(doc["findings"][0]["location"]["file"].get<std::string>().find("weights.bin"), std::string::npos);
  // Neither or both of --key and --certificate-chain is a usage error.
  EXPECT_EQ(run_cli({"verify", model.string(), "--signature", (model / "model.sig").string()}).exit_code, 2);
  ::unsetenv("AEGIS_KEY_PASSPHRASE");
}

}  // namespace
}  // namespace aegis::test
