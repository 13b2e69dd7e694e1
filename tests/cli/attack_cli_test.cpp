// `aegis attack` run as a user runs it: the shipped Fashion-MNIST CNN (TorchScript and ONNX) on
// real test images, its JSON report, plans, written adversarial examples, findings and exit codes,
// and the pre-load scan that keeps a malicious file from being loaded.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "aegis/models/dataset.h"
#include "test_support.h"

namespace aegis::test {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kFashion = models::kFashionMnistDir;

std::string example(const std::string& name) {
  return (source_dir() / "examples" / "fashion-mnist" / name).string();
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// `aegis attack --model MODEL --data FASHION --format json ARGS...`.
CommandResult attack(const std::string& model, std::vector<std::string> args) {
  std::vector<std::string> all{"attack", "--model", model, "--data", kFashion.string(), "--format", "json"};
  all.insert(all.end(), args.begin(), args.end());
  return run_cli(all);
}

// The report of a run that must succeed with `exit_code`.
json report_of(const CommandResult& result, int exit_code = 0) {
  EXPECT_EQ(result.exit_code, exit_code) << result.err;
  try {
    return json::parse(result.out);
  } catch (const json::exception& e) {
    ADD_FAILURE() << "not JSON (" << e.what() << "): " << result.out << result.err;
    return json::object();
  }
}

// The result of one attack at one budget.
const json* result_for(const json& report, const std::string& attack, double eps) {
  for (const auto& r : report["results"])
    if (r["attack"] == attack && !r["eps"].is_null() && std::abs(r["eps"].get<double>() - eps) < 1e-9) return &r;
  return nullptr;
}

TEST(AttackCli, FgsmAndPgdReportRobustAccuracyThatFallsWithTheBudget) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  const std::vector<double> budgets{0.02, 0.05, 0.1};
  const json report = report_of(attack(example("model.pt"), {"--limit", "100", "--attack", "fgsm,pgd", "--eps",
                                                             "0.02,0.05,0.1", "--steps", "10",
                                                             "--min-robust-accuracy", "0"}));
  const double clean = report.value("clean_accuracy", -1.0);
  EXPECT_GE(clean, 0.8);
  EXPECT_LE(clean, 1.0);
  EXPECT_EQ(report["data"]["samples"], 100);
  EXPECT_EQ(report["model"]["backend"], "torchscript");
  EXPECT_EQ(report["model"]["classes"], 10);
  EXPECT_EQ(report["model"]["input_shape"], json::array({1, 28, 28}));
  EXPECT_TRUE(report["findings"].empty()) << "--min-robust-accuracy 0 makes no result a finding";
  ASSERT_EQ(report["results"].size(), 6u) << report["results"].dump();
  for (const auto& r : report["results"]) {
    for (const char* field : {"attack", "eps", "robust_accuracy", "success_rate", "queries", "seconds"})
      EXPECT_TRUE(r.contains(field)) << field << " missing in " << r.dump();
    EXPECT_GE(r["robust_accuracy"].get<double>(), 0.0);
    EXPECT_LE(r["robust_accuracy"].get<double>(), clean + 1e-9) << "an attack cannot raise accuracy";
    EXPECT_GE(r["success_rate"].get<double>(), 0.0);
    EXPECT_LE(r["success_rate"].get<double>(), 1.0);
    EXPECT_GT(r["queries"].get<double>(), 0.0);
    EXPECT_GE(r["seconds"].get<double>(), 0.0);
    EXPECT_EQ(r["norm"], "linf");
  }
  for (const std::string name : {"fgsm", "pgd"}) {
    double previous = 2.0;
    for (double eps : budgets) {
      const json* r = result_for(report, name, eps);
      ASSERT_NE(r, nullptr) << name << " eps " << eps;
      const double robust = (*r)["robust_accuracy"].get<double>();
      EXPECT_LE(robust, previous) << name << ": robust accuracy rose at eps " << eps;
      previous = robust;
    }
  }
  for (double eps : budgets) {
    const double fgsm = (*result_for(report, "fgsm", eps))["robust_accuracy"].get<double>();
    const double pgd = (*result_for(report, "pgd", eps))["robust_accuracy"].get<double>();
    EXPECT_LE(pgd, fgsm) << "PGD (10 steps) is at least as strong as FGSM at eps " << eps;
  }
  EXPECT_LT((*result_for(report, "pgd", 0.1))["robust_accuracy"].get<double>(), clean / 2)
      << "an eps of 0.1 breaks most of this undefended model";
  // FGSM spends one gradient per correctly classified sample, PGD one per step.
  const json& fgsm = *result_for(report, "fgsm", 0.05);
  const json& pgd = *result_for(report, "pgd", 0.05);
  EXPECT_EQ(pgd["queries"].get<double>(), 10 * fgsm["queries"].get<double>());
}

TEST(AttackCli, ResultsBelowTheThresholdAreFindingsAndFailOnSetsTheExitCode) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  // FGSM at eps 0.05 leaves this model about 39% accurate on these images: below 0.5 (a finding),
  // but above 0.25 (medium, not high).
  const std::vector<std::string> args{"--limit", "100", "--attack", "fgsm", "--eps", "0.05",
                                      "--min-robust-accuracy", "0.5"};
  const json report = report_of(attack(example("model.pt"), args), 0);
  ASSERT_EQ(report["findings"].size(), 1u) << report.dump();
  const json& finding = report["findings"][0];
  EXPECT_EQ(finding["rule_id"], "evasion.white-box");
  EXPECT_EQ(finding["severity"], "medium");
  EXPECT_TRUE(contains(finding["title"].get<std::string>(), "fgsm")) << finding.dump();
  EXPECT_FALSE(finding["remediation"].get<std::string>().empty());
  EXPECT_LT((*result_for(report, "fgsm", 0.05))["robust_accuracy"].get<double>(), 0.5);

  std::vector<std::string> strict = args;
  strict.insert(strict.end(), {"--fail-on", "medium"});
  const json failed = report_of(attack(example("model.pt"), strict), 1);
  EXPECT_EQ(failed["findings"].size(), 1u);

  const std::vector<std::string> lenient{"--limit", "100", "--attack", "fgsm", "--eps", "0.05",
                                         "--min-robust-accuracy", "0", "--fail-on", "medium"};
  EXPECT_TRUE(report_of(attack(example("model.pt"), lenient), 0)["findings"].empty());
}

TEST(AttackCli, SquareAttacksTheOnnxModelWithQueriesOnly) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  const CommandResult result = attack(example("model.onnx"), {"--limit", "50", "--attack", "square", "--eps", "0.1",
                                                              "--max-queries", "200", "--min-robust-accuracy", "0"});
  const json report = report_of(result, 0);
  EXPECT_EQ(report["model"]["backend"], "onnx");
  EXPECT_GE(report.value("clean_accuracy", -1.0), 0.8);
  const json* r = result_for(report, "square", 0.1);
  ASSERT_NE(r, nullptr) << report.dump();
  EXPECT_GT((*r)["queries"].get<double>(), 0.0);
  EXPECT_EQ((*r)["gradient_queries"].get<double>(), 0.0);
  EXPECT_LE((*r)["queries"].get<double>(), 50.0 * 200.0) << "at most --max-queries per sample";
  ASSERT_GT((*r)["successes"].get<double>(), 0.0) << "eps 0.1 breaks some of this undefended model";
  EXPECT_GE((*r)["queries_per_success"].get<double>(), 1.0);
  EXPECT_LE((*r)["queries_per_success"].get<double>(), 200.0);
  EXPECT_LT((*r)["robust_accuracy"].get<double>(), report["clean_accuracy"].get<double>());
}

TEST(AttackCli, GradientAttacksOnTheOnnxModelExitTwoAndNameTheBlackBoxAttacks) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  const CommandResult result = attack(example("model.onnx"), {"--limit", "10", "--attack", "pgd", "--eps", "0.1"});
  EXPECT_EQ(result.exit_code, 2) << result.out;
  EXPECT_TRUE(contains(result.err, "gradients")) << result.err;
  EXPECT_TRUE(contains(result.err, "square")) << result.err;
  EXPECT_TRUE(contains(result.err, "hopskipjump")) << result.err;
}

TEST(AttackCli, UnknownAttackExitsTwoWithTheList) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  const CommandResult result =
      attack(example("model.pt"), {"--limit", "10", "--attack", "fgsm,teleport", "--eps", "0.1"});
  EXPECT_EQ(result.exit_code, 2) << result.out;
  EXPECT_TRUE(contains(result.err, "teleport")) << result.err;
  for (const char* name : {"fgsm", "pgd", "apgd-ce", "cw", "deepfool", "square", "hopskipjump"})
    EXPECT_TRUE(contains(result.err, name)) << name << " not listed: " << result.err;
  EXPECT_TRUE(result.out.empty()) << "no report for a run that did not start: " << result.out;
}

TEST(AttackCli, APlanRunsEveryEntryOnOneCleanPass) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  TempDir dir("aegis_attack_plan");
  const fs::path plan = dir.path / "plan.yaml";
  std::ofstream(plan) << "model: " << example("model.pt") << "\n"
                      << "data: " << kFashion.string() << "\n"
                      << "split: test\n"
                      << "limit: 50\n"
                      << "range: [0, 1]\n"
                      << "min_robust_accuracy: 0\n"
                      << "attacks:\n"
                      << "  - attack: fgsm\n"
                      << "    eps: [0.05, 0.1]\n"
                      << "  - attack: pgd\n"
                      << "    norm: linf\n"
                      << "    eps: 0.05\n"
                      << "    steps: 5\n"
                      << "    step_size: 0.02\n"
                      << "  - attack: square\n"
                      << "    eps: [0.1]\n"
                      << "    max_queries: 30\n";
  const json report = report_of(run_cli({"attack", "--plan", plan.string(), "--format", "json"}), 0);
  EXPECT_EQ(report["data"]["samples"], 50);
  EXPECT_EQ(report["min_robust_accuracy"], 0.0);
  ASSERT_EQ(report["results"].size(), 4u) << report["results"].dump();
  for (const auto& [name, eps] : std::vector<std::pair<std::string, double>>{
           {"fgsm", 0.05}, {"fgsm", 0.1}, {"pgd", 0.05}, {"square", 0.1}}) {
    const json* r = result_for(report, name, eps);
    ASSERT_NE(r, nullptr) << name << " eps " << eps << " missing: " << report["results"].dump();
    EXPECT_EQ((*r)["samples"], 50);
  }
  const json& pgd = *result_for(report, "pgd", 0.05);
  EXPECT_EQ(pgd["queries"].get<double>(), 5 * pgd["attacked"].get<double>()) << "the plan's steps: 5";
  const json& square = *result_for(report, "square", 0.1);
  EXPECT_LE(square["queries"].get<double>(), 30 * square["attacked"].get<double>()) << "the plan's max_queries: 30";
}

// A flag given on the command line should win over the plan's default, as --model and --data do.
// load_plan writes the plan's split, limit, range and min_robust_accuracy over the flags, so
// `--plan attack_plan.yaml --limit 50` still attacks the plan's 1000 images. Disabled until
// load_plan reads those keys only for flags the command line did not give.
TEST(AttackCli, CommandLineFlagsOverrideThePlansDefaults) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  TempDir dir("aegis_attack_plan_flags");
  const fs::path plan = dir.path / "plan.yaml";
  std::ofstream(plan) << "model: " << example("model.pt") << "\n"
                      << "limit: 50\n"
                      << "min_robust_accuracy: 0.9\n"
                      << "attacks:\n"
                      << "  - attack: fgsm\n"
                      << "    eps: 0.05\n";
  const json report = report_of(run_cli({"attack", "--plan", plan.string(), "--limit", "10", "--min-robust-accuracy",
                                         "0", "--format", "json"}),
                                0);
  EXPECT_EQ(report["data"]["samples"], 10);
  EXPECT_EQ(report["min_robust_accuracy"], 0.0);
  EXPECT_TRUE(report["findings"].empty());
}

// Checks an adversarial-examples file with numpy itself: its shape and range, the largest change
// from the first n test images, and how many images changed (by more than the rounding of scaling
// by 1/255), written as JSON to `out`.
const char* const kCheckAdversarials = R"(
import gzip, json, sys
import numpy as np

path, data, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
adv = np.load(path)
with gzip.open(data + '/t10k-images-idx3-ubyte.gz') as f:
    x = np.frombuffer(f.read(), np.uint8, offset=16)[:n * 784].reshape(n, 1, 28, 28).astype(np.float32) / 255.0
with open(out, 'w') as f:
    json.dump({'shape': list(adv.shape), 'dtype': str(adv.dtype), 'min': float(adv.min()), 'max': float(adv.max()),
               'change': float(np.abs(adv.astype(np.float64) - x).max()),
               'changed': int((np.abs(adv - x).reshape(n, -1).max(axis=1) > 1e-6).sum())}, f)
)";

TEST(AttackCli, OutputDirHoldsAdversarialExamplesNumpyLoadsAndImageGrids) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  TempDir dir("aegis_attack_output");
  const fs::path out = dir.path / "adversarial";
  const json report = report_of(attack(example("model.pt"), {"--limit", "100", "--attack", "fgsm,pgd", "--eps", "0.1",
                                                             "--steps", "3", "--min-robust-accuracy", "0",
                                                             "--output-dir", out.string()}));
  ASSERT_EQ(report["results"].size(), 2u);
  const fs::path script = dir.path / "check.py";
  std::ofstream(script) << kCheckAdversarials;
  for (const auto& r : report["results"]) {
    ASSERT_TRUE(r.contains("adversarial_examples")) << r.dump();
    ASSERT_TRUE(r.contains("image_grid")) << r.dump();
    const fs::path npy = r["adversarial_examples"].get<std::string>();
    const fs::path png = r["image_grid"].get<std::string>();
    EXPECT_EQ(npy.parent_path(), out);
    EXPECT_EQ(npy.extension(), ".npy");
    EXPECT_EQ(png.extension(), ".png");
    ASSERT_TRUE(fs::exists(npy)) << npy;
    ASSERT_TRUE(fs::exists(png)) << png;
    const auto png_bytes = read_file(png);
    ASSERT_GT(png_bytes.size(), 8u);
    EXPECT_EQ(std::string(png_bytes.begin() + 1, png_bytes.begin() + 4), "PNG");

    const fs::path summary = dir.path / (npy.stem().string() + ".json");
    const std::string command = "/usr/bin/python3 '" + script.string() + "' '" + npy.string() + "' '" +
                                kFashion.string() + "' 100 '" + summary.string() + "'";
    ASSERT_EQ(std::system(command.c_str()), 0) << "/usr/bin/python3 with numpy (python3-numpy) must be installed";
    std::ifstream in(summary);
    const json checked = json::parse(in);
    EXPECT_EQ(checked["shape"], json::array({100, 1, 28, 28})) << checked.dump();
    EXPECT_EQ(checked["dtype"], "float32");
    EXPECT_GE(checked["min"].get<double>(), 0.0);
    EXPECT_LE(checked["max"].get<double>(), 1.0);
    EXPECT_LE(checked["change"].get<double>(), 0.1 + 1e-6) << r["attack"] << " left the eps ball";
    EXPECT_GT(checked["change"].get<double>(), 0.05) << r["attack"] << " changed nothing";
    EXPECT_LE(checked["changed"].get<int>(), r["attacked"].get<int>()) << "misclassified samples stay as they are";
  }
}

TEST(AttackCli, AMaliciousModelIsRefusedBeforeLoadingUnlessTrusted) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  TempDir dir("aegis_attack_malicious");
  const fs::path model = dir.path / "model.pt";
  fs::copy_file(fixture("malicious/os_system_reduce.pkl"), model);

  const CommandResult refused = attack(model.string(), {"--limit", "10", "--attack", "fgsm"});
  EXPECT_EQ(refused.exit_code, 2) << refused.out;
  EXPECT_TRUE(contains(refused.err, "refusing to load")) << refused.err;
  EXPECT_TRUE(contains(refused.err, "pickle.denied-callable")) << refused.err;
  EXPECT_TRUE(contains(refused.err, "--trust-model")) << refused.err;
  EXPECT_TRUE(refused.out.empty()) << refused.out;

  // Trusted, it gets past the scan to LibTorch, which does not read a bare pickle as TorchScript.
  const CommandResult trusted = attack(model.string(), {"--limit", "10", "--attack", "fgsm", "--trust-model"});
  EXPECT_EQ(trusted.exit_code, 2) << trusted.out;
  EXPECT_FALSE(contains(trusted.err, "refusing to load")) << trusted.err;
  EXPECT_TRUE(contains(trusted.err, "as TorchScript")) << trusted.err;
}

}  // namespace
}  // namespace aegis::test
