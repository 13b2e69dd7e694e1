// Membership inference, extraction and poisoning audits end to end on models that the real PyTorch
// trained on the real Fashion-MNIST (tests/fixtures/privacy_models.py): an overfit model leaks
// membership and LiRA sees more of it than the loss attack; a surrogate stolen with natural data
// agrees with its target more as the budget grows; a BadNets-poisoned set is found in its target
// class. And the training pieces underneath: re-initialisation, fitting, activations, recipes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <random>

#include "aegis/attacks/extraction/model_extraction.h"
#include "aegis/attacks/inference/membership_inference.h"
#include "aegis/attacks/poisoning/poisoning_audit.h"
#include "aegis/core/error.h"
#include "aegis/formats/npy.h"
#include "aegis/models/dataset.h"
#include "aegis/models/training.h"
#include "test_support.h"

namespace {

using namespace aegis;
namespace fs = std::filesystem;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const core::Error& e) {
    return std::string(e.what()) + " | " + e.hint();
  }
  return "";
}

std::vector<std::size_t> indices(const fs::path& path) {
  const auto array = formats::read_npy_file(path.string(), 1 << 20);
  return {array.values.begin(), array.values.end()};
}

models::Dataset subset(const models::Dataset& data, const std::vector<std::size_t>& rows) {
  models::Dataset out;
  out.sample_shape = data.sample_shape;
  for (auto r : rows) {
    const auto s = data.sample(r);
    out.x.insert(out.x.end(), s.begin(), s.end());
    out.y.push_back(data.y[r]);
  }
  return out;
}

models::TorchScriptOptions options() {
  models::TorchScriptOptions o;
  o.input_shape = {1, 28, 28};
  o.threads = 1;
  return o;
}

class PrivacyAudits : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (auto why = test::fashion_mnist_missing(); !why.empty()) {
      skip_reason_ = why;
      return;
    }
    dir_ = std::make_unique<test::TempDir>("aegis_privacy");
    const std::string command = "/usr/bin/python3 '" + (test::source_dir() / "tests/fixtures/privacy_models.py").string() +
                                "' '" + dir_->path.string() + "' '" + models::kFashionMnistDir + "'";
    python_status_ = std::system(command.c_str());
  }
  static void TearDownTestSuite() { dir_.reset(); }

  void SetUp() override {
    if (!skip_reason_.empty()) GTEST_SKIP() << skip_reason_;
    ASSERT_EQ(python_status_, 0) << "tests/fixtures/privacy_models.py needs /usr/bin/python3 with torch and numpy";
  }

  static fs::path file(const std::string& name) { return dir_->path / name; }

  static const models::Dataset& train_split() {
    static const models::Dataset data = [] {
      models::DataOptions o;
      o.split = "train";
      return models::load_dataset(models::kFashionMnistDir, o);
    }();
    return data;
  }
  static const models::Dataset& test_split() {
    static const models::Dataset data = models::load_dataset(models::kFashionMnistDir);
    return data;
  }

  // The 300 members followed by the 300 non-members of the fixture.
  static models::Dataset candidates() {
    auto records = subset(train_split(), indices(file("members.npy")));
    const auto out = subset(test_split(), indices(file("nonmembers.npy")));
    records.x.insert(records.x.end(), out.x.begin(), out.x.end());
    records.y.insert(records.y.end(), out.y.begin(), out.y.end());
    return records;
  }

  static inline std::unique_ptr<test::TempDir> dir_;
  static inline std::string skip_reason_;
  static inline int python_status_ = -1;
};

// ------------------------------------------------------------------------------------------------
// Training pieces

TEST_F(PrivacyAudits, ReinitializeForgetsTrainingAndIsDeterministicPerSeed) {
  const auto records = candidates();
  const auto members = std::span<const float>(records.x).first(300 * 784);
  const auto member_labels = std::span<const int>(records.y).first(300);
  auto trained = models::load_torchscript(file("overfit.pt").string(), options());
  EXPECT_GT(models::accuracy(*trained, members, member_labels), 0.9);

  auto a = models::load_torchscript(file("overfit.pt").string(), options());
  auto b = models::load_torchscript(file("overfit.pt").string(), options());
  auto c = models::load_torchscript(file("overfit.pt").string(), options());
  a->reinitialize(7);
  b->reinitialize(7);
  c->reinitialize(8);
  EXPECT_LT(models::accuracy(*a, members, member_labels), 0.3) << "fresh weights must not remember the members";
  std::vector<float> sa(300 * 10), sb(300 * 10), sc(300 * 10);
  a->predict(members, sa);
  b->predict(members, sb);
  c->predict(members, sc);
  EXPECT_EQ(sa, sb);
  EXPECT_NE(sa, sc);
}

TEST_F(PrivacyAudits, FitLearnsRealDataAndSoftTargetsDistilATeacher) {
  const auto& train = train_split();
  const auto& test = test_split();
  const std::size_t n = 2000;
  const auto x = std::span<const float>(train.x).first(n * 784);
  const auto y = std::span<const int>(train.y).first(n);
  const auto tx = std::span<const float>(test.x).first(1000 * 784);
  const auto ty = std::span<const int>(test.y).first(1000);
  models::TrainingRecipe recipe;
  recipe.epochs = 3;
  recipe.batch = 64;
  auto student = models::load_torchscript(file("mlp_init.pt").string(), options(), recipe.optimizer_options());
  student->reinitialize(1);
  const double before = models::accuracy(*student, tx, ty);
  std::size_t last = 0;
  const auto report = models::fit(*student, x, y, recipe, [&](std::size_t done) { last = done; });
  EXPECT_EQ(last, n * 3) << "progress counts every sample of every epoch";
  EXPECT_GT(report.final_loss, 0);
  const double after = models::accuracy(*student, tx, ty);
  EXPECT_LT(before, 0.3);
  EXPECT_GT(after, 0.7);

  // Distilling the teacher's probabilities: the copy agrees with the teacher on held-out data.
  auto teacher = models::load_torchscript((test::source_dir() / "examples/fashion-mnist/model.pt").string(), options());
  std::vector<float> soft(n * 10);
  teacher->predict(x, soft);
  for (std::size_t i = 0; i < n; ++i) {
    float* row = soft.data() + i * 10;
    const float top = *std::max_element(row, row + 10);
    float sum = 0;
    for (int c = 0; c < 10; ++c) sum += (row[c] = std::exp(row[c] - top));
    for (int c = 0; c < 10; ++c) row[c] /= sum;
  }
  auto copy = models::load_torchscript(file("mlp_init.pt").string(), options(), recipe.optimizer_options());
  copy->reinitialize(2);
  models::fit_soft(*copy, x, soft, recipe);
  std::vector<float> t(1000 * 10), s(1000 * 10);
  teacher->predict(tx, t);
  copy->predict(tx, s);
  std::size_t agree = 0;
  for (std::size_t i = 0; i < 1000; ++i)
    agree += std::max_element(t.begin() + i * 10, t.begin() + (i + 1) * 10) - (t.begin() + i * 10) ==
             std::max_element(s.begin() + i * 10, s.begin() + (i + 1) * 10) - (s.begin() + i * 10);
  EXPECT_GT(agree, 750u);
}

TEST_F(PrivacyAudits, RecipeIsReadAndItsErrorsNameTheLine) {
  const auto recipe = models::load_training_recipe(file("recipe.yaml").string());
  EXPECT_EQ(recipe.epochs, 60);
  EXPECT_EQ(recipe.batch, 64u);
  EXPECT_EQ(recipe.optimizer, "adam");
  EXPECT_DOUBLE_EQ(recipe.learning_rate, 0.001);
  EXPECT_EQ(recipe.seed, 1u);

  const auto bad = file("bad_recipe.yaml");
  std::ofstream(bad) << "epochs: 5\nbatch: 32\nlearnig_rate: 0.1\n";
  auto error = error_of([&] { models::load_training_recipe(bad.string()); });
  EXPECT_TRUE(contains(error, "line 3")) << error;
  EXPECT_TRUE(contains(error, "learnig_rate")) << error;
  std::ofstream(bad) << "epochs: -2\n";
  error = error_of([&] { models::load_training_recipe(bad.string()); });
  EXPECT_TRUE(contains(error, "line 1") && contains(error, "epochs")) << error;
  std::ofstream(bad) << "architecture: mlp_init.pt\naugment: flip\n";
  const auto relative = models::load_training_recipe(bad.string());
  EXPECT_EQ(fs::path(relative.architecture), file("mlp_init.pt"));
  EXPECT_TRUE(relative.flip_augment);
  error = error_of([&] { models::load_training_recipe(file("missing.yaml").string()); });
  EXPECT_TRUE(contains(error, "missing.yaml")) << error;
}

TEST_F(PrivacyAudits, ActivationsComeFromTheLayerAskedForOrTheFeaturesMethod) {
  const auto x = std::span<const float>(test_split().x).first(10 * 784);
  auto sequential = models::load_torchscript(file("badnets.pt").string(), options());
  EXPECT_EQ(sequential->layer_names(), (std::vector<std::string>{"0", "1", "2", "3"}));
  std::vector<float> features;
  EXPECT_EQ(sequential->activations(x, "", features), 128u) << "the input of the last layer";
  EXPECT_EQ(features.size(), 10u * 128u);
  EXPECT_TRUE(std::all_of(features.begin(), features.end(), [](float v) { return v >= 0; })) << "after the ReLU";
  EXPECT_EQ(sequential->activations(x, "0", features), 784u) << "the flattened input";
  auto error = error_of([&] { sequential->activations(x, "fc9", features); });
  EXPECT_TRUE(contains(error, "no top-level layer 'fc9'") && contains(error, "0, 1, 2, 3")) << error;

  auto exported = models::load_torchscript(file("features_model.pt").string(), options());
  EXPECT_EQ(exported->activations(x, "", features), 32u);

  // The example CNN's forward() is not the chain of its children: refused, with what to do.
  auto cnn = models::load_torchscript((test::source_dir() / "examples/fashion-mnist/model.pt").string(), options());
  error = error_of([&] { cnn->activations(x, "", features); });
  EXPECT_TRUE(contains(error, "cannot read the activations") && contains(error, "features")) << error;
}

// ------------------------------------------------------------------------------------------------
// Membership inference

attacks::MembershipAuditOptions audit_options(const fs::path& recipe, int references) {
  attacks::MembershipAuditOptions o;
  o.attacks = attacks::parse_membership_attacks("all");
  o.references = references;
  o.recipe = models::load_training_recipe(recipe.string());
  o.fprs = {0.01};
  o.bootstrap = 50;
  return o;
}

TEST_F(PrivacyAudits, LiraSeesMoreMembershipThanTheLossAttackOnAnOverfitModel) {
  const auto records = candidates();
  auto target = models::load_torchscript(file("overfit.pt").string(), options());
  const auto o = audit_options(file("recipe.yaml"), 8);
  int made = 0;
  std::vector<std::string> stages;
  const auto report = attacks::run_membership_audit(
      *target, records.x, records.y, 300, o,
      [&](int index) {
        ++made;
        auto m = models::load_torchscript(file("mlp_init.pt").string(), options(), o.recipe.optimizer_options());
        m->reinitialize(100 + static_cast<std::uint64_t>(index));
        return m;
      },
      [&](const std::string& stage, std::size_t, std::size_t) {
        if (stages.empty() || stages.back() != stage) stages.push_back(stage);
      });
  EXPECT_EQ(made, 8);
  EXPECT_EQ(report.references, 8);
  EXPECT_TRUE(std::find(stages.begin(), stages.end(), "training 8 reference models") != stages.end());
  EXPECT_GT(report.member_accuracy, report.nonmember_accuracy + 0.15) << "the fixture is overfit";
  EXPECT_GT(report.reference_member_accuracy, report.reference_nonmember_accuracy + 0.1)
      << "reference models trained with the same recipe overfit alike";

  auto result = [&](attacks::MembershipAttack a) {
    return *std::find_if(report.results.begin(), report.results.end(), [&](const auto& r) { return r.attack == a; });
  };
  const auto loss = result(attacks::MembershipAttack::Loss);
  const auto online = result(attacks::MembershipAttack::LiraOnline);
  const auto offline = result(attacks::MembershipAttack::LiraOffline);
  ASSERT_EQ(report.results.size(), 7u);
  EXPECT_GT(loss.metrics.auc, 0.6);
  EXPECT_GT(online.metrics.auc, loss.metrics.auc + 0.03);
  EXPECT_GT(offline.metrics.auc, loss.metrics.auc);
  EXPECT_GT(online.metrics.tpr_at[0], loss.metrics.tpr_at[0]);
  EXPECT_LE(online.metrics.tpr_ci[0].low, online.metrics.tpr_at[0]);
  EXPECT_GE(online.metrics.tpr_ci[0].high, online.metrics.tpr_at[0]);
  EXPECT_EQ(online.scores.size(), 600u);
  ASSERT_FALSE(report.findings.empty());
  EXPECT_EQ(report.findings[0].rule_id, "mia.membership-leakage");
  EXPECT_GE(report.findings[0].severity, core::Severity::Medium);
  EXPECT_EQ(report.findings[0].atlas, std::vector<std::string>{"AML.T0024.000"});
}

TEST_F(PrivacyAudits, ReferenceModelsTrainedSideBySideGiveTheSameScores) {
  const auto records = candidates();
  auto target = models::load_torchscript(file("overfit.pt").string(), options());
  auto o = audit_options(file("recipe.yaml"), 4);
  o.recipe.epochs = 5;
  o.attacks = {attacks::MembershipAttack::LiraOnline, attacks::MembershipAttack::Shadow};
  const auto make = [&](int index) {
    auto m = models::load_torchscript(file("mlp_init.pt").string(), options(), o.recipe.optimizer_options());
    m->reinitialize(100 + static_cast<std::uint64_t>(index));
    return m;
  };
  std::size_t last_done = 0, last_total = 0;
  const auto serial = attacks::run_membership_audit(*target, records.x, records.y, 300, o, make);
  o.parallel_references = 3;
  const auto side_by_side = attacks::run_membership_audit(
      *target, records.x, records.y, 300, o, make, [&](const std::string& stage, std::size_t done, std::size_t total) {
        if (stage != "training 4 reference models") return;
        EXPECT_GE(done, last_done) << "progress never goes back";
        last_done = done;
        last_total = total;
      });
  EXPECT_EQ(last_done, last_total);
  ASSERT_EQ(serial.results.size(), side_by_side.results.size());
  for (std::size_t a = 0; a < serial.results.size(); ++a)
    EXPECT_EQ(serial.results[a].scores, side_by_side.results[a].scores) << attacks::to_string(serial.results[a].attack);
  EXPECT_DOUBLE_EQ(serial.reference_member_accuracy, side_by_side.reference_member_accuracy);
}

TEST_F(PrivacyAudits, NonMembersAgainstNonMembersShowNoLeakage) {
  // Two halves of the test split, neither trained on: whatever an attack scores, it is chance.
  std::vector<std::size_t> rows(600);
  std::iota(rows.begin(), rows.end(), 5000);
  const auto records = subset(test_split(), rows);
  auto target = models::load_torchscript(file("overfit.pt").string(), options());
  attacks::MembershipAuditOptions o;
  o.fprs = {0.01};
  o.bootstrap = 100;
  const auto report = attacks::run_membership_audit(*target, records.x, records.y, 300, o, {});
  for (const auto& r : report.results) {
    EXPECT_LT(r.metrics.auc_ci.low, 0.5) << attacks::to_string(r.attack);
    EXPECT_GT(r.metrics.auc_ci.high, 0.5) << attacks::to_string(r.attack);
  }
  EXPECT_EQ(report.findings.at(0).severity, core::Severity::Info);
}

TEST_F(PrivacyAudits, MembershipAuditChecksItsInputs) {
  const auto records = candidates();
  auto target = models::load_torchscript(file("overfit.pt").string(), options());
  attacks::MembershipAuditOptions o;
  o.fprs = {0.01, 0.001};
  auto error = error_of([&] { attacks::run_membership_audit(*target, records.x, records.y, 300, o, {}); });
  EXPECT_TRUE(contains(error, "1000")) << "300 non-members cannot resolve 0.1% FPR: " << error;

  o.fprs = {0.01};
  auto labels = records.y;
  labels[17] = 12;
  error = error_of([&] { attacks::run_membership_audit(*target, records.x, labels, 300, o, {}); });
  EXPECT_TRUE(contains(error, "record 17") && contains(error, "12")) << error;

  o.attacks = {attacks::MembershipAttack::LiraOnline};
  o.references = 1;
  error = error_of([&] { attacks::run_membership_audit(*target, records.x, records.y, 300, o, {}); });
  EXPECT_TRUE(contains(error, "at least 2 reference models")) << error;

  error = error_of([&] { attacks::run_membership_audit(*target, records.x, records.y, 600, o, {}); });
  EXPECT_TRUE(contains(error, "both members and non-members")) << error;
  error = error_of([&] { attacks::parse_membership_attacks("loss,lira"); });
  EXPECT_TRUE(contains(error, "'lira'")) << error;
}

// ------------------------------------------------------------------------------------------------
// Extraction

TEST_F(PrivacyAudits, NaturalQueriesStealMoreThanRandomOnesAndMoreWithMoreQueries) {
  auto target = models::load_torchscript((test::source_dir() / "examples/fashion-mnist/model.pt").string(), options());
  const auto& pool = train_split();
  const auto pool_x = std::span<const float>(pool.x).first(5000 * 784);
  const auto pool_y = std::span<const int>(pool.y).first(5000);
  const auto tx = std::span<const float>(test_split().x).first(1000 * 784);
  const auto ty = std::span<const int>(test_split().y).first(1000);
  attacks::ExtractionOptions o;
  o.strategies = attacks::parse_extraction_strategies("random,natural,adaptive");
  o.budgets = {200, 1500};
  o.recipe.epochs = 4;
  o.recipe.batch = 64;
  std::uint64_t seed = 0;
  const auto report = attacks::run_extraction(*target, pool_x, pool_y, tx, ty, o, [&] {
    auto m = models::load_torchscript(file("mlp_init.pt").string(), options(), o.recipe.optimizer_options());
    m->reinitialize(++seed);
    return m;
  });
  ASSERT_EQ(report.results.size(), 6u);
  auto at = [&](attacks::ExtractionStrategy s, std::size_t budget) {
    return *std::find_if(report.results.begin(), report.results.end(),
                         [&](const auto& r) { return r.strategy == s && r.budget == budget; });
  };
  using S = attacks::ExtractionStrategy;
  EXPECT_GT(report.target_accuracy, 0.85);
  EXPECT_GT(at(S::Natural, 1500).fidelity, at(S::Natural, 200).fidelity + 0.05);
  EXPECT_GT(at(S::Natural, 1500).fidelity, 0.75);
  EXPECT_GT(at(S::Natural, 1500).fidelity, at(S::Random, 1500).fidelity + 0.2) << "noise is a poor thief's data set";
  EXPECT_GT(at(S::Adaptive, 1500).fidelity, 0.6);
  ASSERT_EQ(report.logs.size(), 3u);
  for (const auto& log : report.logs) {
    EXPECT_EQ(log.source.size(), 1500u);
    EXPECT_EQ(log.inputs.size(), 1500u * 784u);
    EXPECT_EQ(log.probabilities.size(), 1500u * 10u);
    EXPECT_TRUE(std::is_sorted(log.milliseconds.begin(), log.milliseconds.end()));
  }
  // Natural queries are distinct records of the pool; random ones are synthesised (-1).
  auto natural = report.logs[1].source;
  std::sort(natural.begin(), natural.end());
  EXPECT_EQ(std::adjacent_find(natural.begin(), natural.end()), natural.end());
  EXPECT_GE(natural.front(), 0);
  EXPECT_TRUE(std::all_of(report.logs[0].source.begin(), report.logs[0].source.end(), [](auto s) { return s == -1; }));
  EXPECT_EQ(report.findings.at(0).rule_id, "extract.model-stealing");
  EXPECT_EQ(report.findings.at(0).atlas.at(0), "AML.T0024.002");
}

TEST_F(PrivacyAudits, ExtractionChecksBudgetsAgainstThePool) {
  auto target = models::load_torchscript(file("overfit.pt").string(), options());
  const auto x = std::span<const float>(test_split().x).first(100 * 784);
  const auto y = std::span<const int>(test_split().y).first(100);
  attacks::ExtractionOptions o;
  o.budgets = {500};
  auto make = [&] { return models::load_torchscript(file("mlp_init.pt").string(), options()); };
  auto error = error_of([&] { attacks::run_extraction(*target, x, y, x, y, o, make); });
  EXPECT_TRUE(contains(error, "500") && contains(error, "100")) << error;
  o.budgets = {50, 20};
  error = error_of([&] { attacks::run_extraction(*target, x, y, x, y, o, make); });
  EXPECT_TRUE(contains(error, "ascending")) << error;
  error = error_of([&] { attacks::parse_extraction_strategies("natural,jacobian"); });
  EXPECT_TRUE(contains(error, "'jacobian'")) << error;
}

// ------------------------------------------------------------------------------------------------
// Poisoning

TEST_F(PrivacyAudits, BadNetsRecordsAreFoundInTheTargetClass) {
  const auto data = models::load_dataset(file("poisoned.npz").string());
  ASSERT_EQ(data.size(), 2000u);
  std::vector<std::uint8_t> truth(data.size(), 0);
  for (auto i : indices(file("truth.npy"))) truth[i] = 1;
  auto model = models::load_torchscript(file("badnets.pt").string(), options());
  attacks::PoisonAuditOptions o;
  o.truly_poisoned = truth;
  const auto report = attacks::run_poison_audit(*model, model.get(), data.x, data.y, o);
  ASSERT_EQ(report.detectors.size(), 4u);
  EXPECT_EQ(report.feature_width, 128u);
  EXPECT_EQ(report.detectors[0].method, "activation-clustering");
  // What a user checks: the backdoor's target class (0) is found, and the cluster flagged in it is
  // the poison. (Minority clusters of clean classes may be flagged too; the silhouette does not
  // tell them apart on so small a model.)
  std::size_t flagged_in_target = 0, poisoned_flagged = 0, poisoned = 0;
  for (std::size_t i = 0; i < data.size(); ++i) {
    poisoned += truth[i];
    if (data.y[i] != 0 || !report.detectors[0].flagged[i]) continue;
    ++flagged_in_target;
    poisoned_flagged += truth[i];
  }
  ASSERT_GT(flagged_in_target, 0u) << "the target class's poison cluster must be flagged";
  EXPECT_GE(static_cast<double>(poisoned_flagged) / static_cast<double>(flagged_in_target), 0.8);
  EXPECT_GE(static_cast<double>(poisoned_flagged) / static_cast<double>(poisoned), 0.6);
  EXPECT_GE(report.quality[0].recall, 0.6);
  // Suspects come most-flagged first, and every flagged record is listed once.
  for (std::size_t i = 1; i < report.suspects.size(); ++i)
    EXPECT_GE(report.suspects[i - 1].methods.size(), report.suspects[i].methods.size());
  ASSERT_TRUE(report.combined_quality.has_value());
  EXPECT_EQ(report.combined_quality->flagged, report.suspects.size());
  EXPECT_TRUE(std::any_of(report.findings.begin(), report.findings.end(),
                          [](const auto& f) { return f.rule_id == "poison.activation-cluster"; }));
}

TEST_F(PrivacyAudits, PoisonAuditChecksItsInputs) {
  const auto data = models::load_dataset(file("poisoned.npz").string());
  auto model = models::load_torchscript(file("badnets.pt").string(), options());
  attacks::PoisonAuditOptions o;
  auto error = error_of([&] { attacks::run_poison_audit(*model, nullptr, data.x, data.y, o); });
  EXPECT_TRUE(contains(error, "TorchScript") && contains(error, "confident-learning")) << error;
  auto labels = data.y;
  labels[5] = -1;
  error = error_of([&] { attacks::run_poison_audit(*model, model.get(), data.x, labels, o); });
  EXPECT_TRUE(contains(error, "record 5")) << error;
  o.truly_poisoned.assign(10, 0);
  error = error_of([&] { attacks::run_poison_audit(*model, model.get(), data.x, data.y, o); });
  EXPECT_TRUE(contains(error, "ground truth")) << error;
  error = error_of([&] { attacks::parse_poison_methods("spectral,knn"); });
  EXPECT_TRUE(contains(error, "'spectral'")) << error;
}

}  // namespace
