// `aegis mia`, `aegis extract` and `aegis poison` run as a user runs them, on models that the real
// PyTorch trained on the real Fashion-MNIST (tests/fixtures/privacy_models.py): the JSON a script
// reads, the files written beside it, the exit codes, and the errors for bad inputs.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <sstream>

#include "aegis/models/dataset.h"
#include "test_support.h"

namespace aegis::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

json parse(const CommandResult& result) {
  try {
    return json::parse(result.out);
  } catch (const json::exception& e) {
    ADD_FAILURE() << "not JSON (" << e.what() << "): " << result.out << result.err;
    return json::object();
  }
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class PrivacyCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (auto why = fashion_mnist_missing(); !why.empty()) {
      skip_reason_ = why;
      return;
    }
    dir_ = std::make_unique<TempDir>("aegis_privacy_cli");
    const std::string command = "/usr/bin/python3 '" + (source_dir() / "tests/fixtures/privacy_models.py").string() + "' '" +
                                dir_->path.string() + "' '" + models::kFashionMnistDir + "'";
    python_status_ = std::system(command.c_str());
  }
  static void TearDownTestSuite() { dir_.reset(); }
  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    ASSERT_EQ(python_status_, 0) << "tests/fixtures/privacy_models.py needs /usr/bin/python3 with torch and numpy";
  }
  static std::string file(const std::string& name) { return (dir_->path / name).string(); }

  static inline std::unique_ptr<TempDir> dir_;
  static inline std::string skip_reason_;
  static inline int python_status_ = -1;
};

TEST_F(PrivacyCli, MiaReportsEveryAttackWithItsRatesAndWritesScoresAndPlots) {
  const auto out = dir_->path / "mia";
  const auto result = run_cli({"mia", "--model", file("overfit.pt"), "--members", file("members.npy"), "--nonmembers",
                               file("nonmembers.npy"), "--recipe", file("recipe.yaml"), "--references", "4", "--fpr",
                               "0.01", "--bootstrap", "50", "--output-dir", out.string(), "--format", "json",
                               "--fail-on", "critical"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto report = parse(result);
  EXPECT_EQ(report["aegis"]["command"], "mia");
  EXPECT_EQ(report["members"], 300);
  EXPECT_EQ(report["nonmembers"], 300);
  EXPECT_EQ(report["reference_models"], 4);
  EXPECT_GT(report["member_accuracy"].get<double>(), report["nonmember_accuracy"].get<double>());
  std::vector<std::string> names;
  for (const auto& a : report["attacks"]) {
    names.push_back(a["attack"]);
    EXPECT_GE(a["auc"].get<double>(), 0.0);
    EXPECT_LE(a["auc"].get<double>(), 1.0);
    EXPECT_TRUE(a.contains("tpr_at_1pct_fpr")) << a.dump();
    EXPECT_LE(a["tpr_at_1pct_fpr_ci"][0].get<double>(), a["tpr_at_1pct_fpr"].get<double>());
    EXPECT_TRUE(a.contains("balanced_accuracy"));
  }
  EXPECT_EQ(names, (std::vector<std::string>{"loss", "confidence", "entropy", "modified-entropy", "shadow",
                                             "lira-offline", "lira-online"}))
      << "a recipe turns on every attack";
  ASSERT_EQ(report["findings"].size(), 1u);
  EXPECT_EQ(report["findings"][0]["atlas"][0], "AML.T0024.000");

  // scores.csv: one row per record, members first, each attack's score in its column.
  const std::string csv = read_text(out / "scores.csv");
  EXPECT_EQ(csv.rfind("record,member,split,index,loss,confidence,entropy,modified-entropy,shadow,lira-offline,lira-online\n", 0), 0u);
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 601);
  EXPECT_TRUE(contains(csv, "\n300,0,test,"));
  const cv::Mat png = cv::imread((out / "roc.png").string());
  EXPECT_EQ(png.cols, 800);
  EXPECT_EQ(png.rows, 800);
  EXPECT_TRUE(contains(read_text(out / "roc.svg"), "lira-online (AUC"));
}

TEST_F(PrivacyCli, MiaGivesBothLowRatesByDefaultAndRefusesTooFewNonMembersForThem) {
  // 300 non-members resolve 1% but not 0.1%: the error says how many are needed.
  auto result = run_cli({"mia", "--model", file("overfit.pt"), "--members", file("members.npy"), "--nonmembers",
                         file("nonmembers.npy"), "--format", "json"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_TRUE(contains(result.err, "1000")) << result.err;
  EXPECT_TRUE(contains(result.err, "--fpr")) << result.err;

  // Members from the train split against the 1,200 default non-members of the test split.
  const fs::path many = dir_->path / "many_members.npy";
  {
    // A .npy of 1200 int64 indices written by hand: the header numpy writes, then the values.
    std::string header = "{'descr': '<i8', 'fortran_order': False, 'shape': (1200,), }";
    header.append(64 - (10 + header.size() + 1) % 64, ' ');
    header += '\n';
    std::ofstream f(many, std::ios::binary);
    f << "\x93NUMPY" << '\x01' << '\x00';
    const auto length = static_cast<std::uint16_t>(header.size());
    f.write(reinterpret_cast<const char*>(&length), 2);
    f << header;
    for (std::int64_t i = 0; i < 1200; ++i) f.write(reinterpret_cast<const char*>(&i), 8);
  }
  result = run_cli({"mia", "--model", file("overfit.pt"), "--members", many.string(), "--bootstrap", "20",
                    "--format", "json", "--fail-on", "critical"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto report = parse(result);
  EXPECT_EQ(report["nonmembers"], 1200);
  EXPECT_EQ(report["nonmember_source"], "test");
  for (const auto& a : report["attacks"]) {
    EXPECT_TRUE(a.contains("tpr_at_1pct_fpr") && a.contains("tpr_at_0_1pct_fpr")) << a.dump();
  }
  EXPECT_EQ(report["attacks"].size(), 4u) << "without a recipe only the threshold attacks run";
}

TEST_F(PrivacyCli, MiaExplainsBadIndexFiles) {
  const fs::path bad = dir_->path / "bad_members.npy";
  std::ofstream(bad) << "not numpy";
  auto result = run_cli({"mia", "--model", file("overfit.pt"), "--members", bad.string(), "--fpr", "0.01"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_TRUE(contains(result.err, "--members") && contains(result.err, "bad_members.npy")) << result.err;
  // Test-split indices passed as members of the 60,000-record train split are fine; an index past
  // the test split's 10,000 records as a non-member is not.
  result = run_cli({"mia", "--model", file("overfit.pt"), "--members", file("nonmembers.npy"), "--nonmembers",
                    file("members.npy"), "--fpr", "0.01"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_TRUE(contains(result.err, "--nonmembers") && contains(result.err, "between 0 and 9999")) << result.err;
  result = run_cli({"mia", "--model", file("overfit.pt"), "--members", file("members.npy"), "--nonmembers",
                    file("nonmembers.npy"), "--fpr", "0.01", "--attacks", "lira-online", "--references", "1"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_TRUE(contains(result.err, "at least 2 reference models")) << result.err;
}

TEST_F(PrivacyCli, ExtractReportsFidelityPerBudgetAndKeepsTheQueryLog) {
  const auto log = dir_->path / "queries";
  const auto result = run_cli({"extract", "--target", (source_dir() / "examples/fashion-mnist/model.pt").string(),
                               "--surrogate", file("mlp_init.pt"), "--limit", "3000", "--budget", "300,1500",
                               "--strategy", "natural,random", "--epochs", "3", "--test-limit", "500", "--query-log",
                               log.string(), "--format", "json", "--fail-on", "critical"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto report = parse(result);
  ASSERT_EQ(report["results"].size(), 4u);
  double natural_small = 0, natural_large = 0, random_large = 0;
  for (const auto& r : report["results"]) {
    EXPECT_TRUE(r.contains("fidelity") && r.contains("surrogate_accuracy")) << r.dump();
    EXPECT_EQ(r["queries"], r["budget"]);
    if (r["strategy"] == "natural" && r["budget"] == 300) natural_small = r["fidelity"];
    if (r["strategy"] == "natural" && r["budget"] == 1500) natural_large = r["fidelity"];
    if (r["strategy"] == "random" && r["budget"] == 1500) random_large = r["fidelity"];
  }
  EXPECT_GT(natural_large, natural_small);
  EXPECT_GT(natural_large, random_large);
  EXPECT_EQ(report["findings"][0]["rule_id"], "extract.model-stealing");
  // The log: one JSON line per query and the inputs as .npy, for the gateway's extraction monitor.
  const std::string lines = read_text(log / "queries-natural.jsonl");
  EXPECT_EQ(std::count(lines.begin(), lines.end(), '\n'), 1500);
  const auto first = json::parse(lines.substr(0, lines.find('\n')));
  EXPECT_EQ(first["seq"], 0);
  EXPECT_EQ(first["client"], "aegis-extract/natural");
  EXPECT_GE(first["source_index"].get<int>(), 0);
  EXPECT_TRUE(fs::exists(log / "queries-natural.npy"));
  EXPECT_EQ(fs::file_size(log / "queries-random.npy"), 128u + 1500u * 784u * 4u);
}

TEST_F(PrivacyCli, ExtractExplainsWhatIsMissing) {
  auto result = run_cli({"extract", "--target", file("overfit.pt"), "--surrogate", file("mlp_init.pt"), "--limit",
                         "100", "--budget", "500"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_TRUE(contains(result.err, "500") && contains(result.err, "--budget")) << result.err;
  result = run_cli({"extract", "--target", file("overfit.pt"), "--surrogate", file("absent.pt"), "--budget", "10"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_TRUE(contains(result.err, "absent.pt")) << result.err;
  result = run_cli({"extract", "--target", file("overfit.pt"), "--budget", "10", "--answers", "logits"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_TRUE(contains(result.err, "--answers")) << result.err;
}

TEST_F(PrivacyCli, PoisonFindsTheBackdoorAndFailsOnIt) {
  const auto out = dir_->path / "poison";
  const auto result = run_cli({"poison", "--model", file("badnets.pt"), "--data", file("poisoned.npz"), "--truth",
                               file("truth.npy"), "--output-dir", out.string(), "--format", "json"});
  EXPECT_EQ(result.exit_code, 1) << "a backdoor cluster is a high finding: " << result.err;
  const auto report = parse(result);
  EXPECT_EQ(report["records"], 2000);
  EXPECT_EQ(report["poisoned"], 100);
  ASSERT_EQ(report["detectors"].size(), 4u);
  EXPECT_EQ(report["detectors"][0]["method"], "activation-clustering");
  EXPECT_GE(report["detectors"][0]["recall"].get<double>(), 0.6);
  bool backdoor = false;
  for (const auto& f : report["findings"]) backdoor |= f["rule_id"] == "poison.activation-cluster" && f["severity"] == "high";
  EXPECT_TRUE(backdoor) << report["findings"].dump();
  ASSERT_FALSE(report["suspects"].empty());
  EXPECT_TRUE(report["suspects"][0].contains("methods"));
  const std::string csv = read_text(out / "suspects.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 2001);
}

TEST_F(PrivacyCli, PoisonNeedsActivationsOrSaysSo) {
  auto result = run_cli({"poison", "--model", (source_dir() / "examples/fashion-mnist/model.pt").string(), "--data",
                         file("poisoned.npz"), "--methods", "activation-clustering"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_TRUE(contains(result.err, "features") && contains(result.err, "nn.Sequential")) << result.err;
  // Confident learning reads only predictions, so the same model works for it.
  result = run_cli({"poison", "--model", (source_dir() / "examples/fashion-mnist/model.pt").string(), "--data",
                    file("poisoned.npz"), "--methods", "confident-learning", "--format", "json", "--fail-on", "critical"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_EQ(parse(result)["detectors"][0]["method"], "confident-learning");
}

}  // namespace
}  // namespace aegis::test
