// `aegis train-dp` as a user runs it on the real Fashion-MNIST with a model written by PyTorch
// (tests/fixtures/dp_models.py): the calibrated noise spends at most the target epsilon (checked
// with the accountant independently of the command), the model is written and learns, and a run
// without noise is a finding.
#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "aegis/privacy/accountant.h"
#include "test_support.h"

namespace aegis::test {
namespace {

class TrainDpCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir("aegis_train_dp_cli");
    const std::string command = "/usr/bin/python3 '" + (source_dir() / "tests/fixtures/dp_models.py").string() + "' '" +
                                dir_->path.string() + "' > /dev/null 2>&1";
    status_ = std::system(command.c_str());
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    AEGIS_SKIP_WITHOUT_FASHION_MNIST();
    ASSERT_EQ(status_, 0) << "tests/fixtures/dp_models.py needs /usr/bin/python3 with torch and numpy";
  }
  static std::string file(const std::string& name) { return (dir_->path / name).string(); }

  static TempDir* dir_;
  static int status_;
};
TempDir* TrainDpCli::dir_ = nullptr;
int TrainDpCli::status_ = -1;

TEST_F(TrainDpCli, TargetEpsilonIsMetAndTheModelLearns) {
  const auto result = run_cli({"train-dp", "--model", file("mlp.pt"), "--limit", "2000", "--target-epsilon", "4",
                               "--delta", "1e-5", "--epochs", "8", "--expected-batch", "100", "--lr", "0.5",
                               "--threads", "1", "--test-limit", "1000", "--save", file("dp.pt"), "--format", "json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  const auto report = nlohmann::json::parse(result.out);
  const auto& privacy = report["privacy"];
  EXPECT_EQ(privacy["conversion"], "improved");
  const double q = privacy["sample_rate"];
  const double sigma = privacy["noise_multiplier"];
  const std::uint64_t steps = privacy["steps"];
  EXPECT_DOUBLE_EQ(q, 100.0 / 2000.0);
  EXPECT_EQ(steps, 160u);  // 8 epochs of 1/q steps
  EXPECT_TRUE(privacy["noise_calibrated"].get<bool>());
  // the accountant, asked directly, agrees that this noise spends at most the target, and that a
  // little less noise would not
  const double spent = privacy::epsilon_spent(q, sigma, steps, 1e-5, privacy::RdpConversion::Improved).epsilon;
  EXPECT_LE(spent, 4.0);
  EXPECT_GT(privacy::epsilon_spent(q, sigma * 0.97, steps, 1e-5, privacy::RdpConversion::Improved).epsilon, 4.0 - 0.02);
  EXPECT_NEAR(privacy["epsilon"].get<double>(), spent, 1e-9);
  EXPECT_GT(privacy["epsilon_classic"].get<double>(), privacy["epsilon_improved"].get<double>());
  EXPECT_LE(privacy["epsilon_pld"].get<double>(), privacy["epsilon_improved"].get<double>());
  // it learns well above chance (10 classes), and what it learnt was saved
  EXPECT_GT(report["test_accuracy"].get<double>(), 0.5);
  EXPECT_TRUE(report["findings"].empty());
  EXPECT_TRUE(std::filesystem::exists(file("dp.pt")));
  const auto attack = run_cli({"attack", "--model", file("dp.pt"), "--limit", "50", "--attack", "fgsm", "--eps", "0.01",
                               "--format", "json", "--fail-on", "critical"});
  ASSERT_EQ(attack.exit_code, 0) << attack.err;
}

TEST_F(TrainDpCli, NoNoiseIsAFindingAndBadOptionsAreRefused) {
  auto result = run_cli({"train-dp", "--model", file("mlp.pt"), "--limit", "300", "--noise-multiplier", "0", "--epochs",
                         "1", "--threads", "1", "--test-limit", "100", "--save", file("plain.pt"), "--format", "json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;  // the finding is medium, below --fail-on high
  auto report = nlohmann::json::parse(result.out);
  EXPECT_EQ(report["privacy"]["epsilon"], "inf");
  ASSERT_EQ(report["findings"].size(), 1u);
  EXPECT_EQ(report["findings"][0]["rule_id"], "dp.weak-guarantee");

  result = run_cli({"train-dp", "--model", file("mlp.pt"), "--limit", "300", "--save", file("x.pt")});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("--target-epsilon"), std::string::npos);
  result = run_cli({"train-dp", "--model", file("mlp.pt"), "--limit", "300", "--target-epsilon", "0.01", "--save", file("x.pt")});
  EXPECT_EQ(result.exit_code, 2);  // unreachable with any noise: says so
  EXPECT_NE(result.err.find("epsilon"), std::string::npos);
  result = run_cli({"train-dp", "--model", file("batchnorm.pt"), "--limit", "300", "--target-epsilon", "3", "--save", file("x.pt")});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("BatchNorm"), std::string::npos) << result.err;
}

}  // namespace
}  // namespace aegis::test
