// The inventory: every problem reported by line, relations checked, hostile files refused cleanly,
// discovery from real model and data files.
#include <gtest/gtest.h>

#include <fstream>

#include "aegis/threat/threat.h"
#include "test_support.h"

namespace aegis::threat {
namespace {

using test::TempDir;

void write(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

const InventoryIssue* issue_at(const InventoryLoad& load, std::uint64_t line, const std::string& needle) {
  for (const auto& i : load.issues)
    if (i.mark.line == line && i.message.find(needle) != std::string::npos) return &i;
  return nullptr;
}

TEST(Inventory, ShippedExampleIsValidAndResolvesPaths) {
  const auto load = load_inventory(test::source_dir() / "examples/assess/inventory.yaml");
  for (const auto& i : load.issues) ADD_FAILURE() << i.mark.line << ": " << i.severity << ": " << i.message;
  ASSERT_TRUE(load.ok());
  const auto* model = load.inventory.find("fashion-classifier");
  ASSERT_NE(model, nullptr);
  EXPECT_EQ(model->kind, AssetKind::Model);
  EXPECT_EQ(model->exposure, "external");
  ASSERT_EQ(model->resolved_files.size(), 1u);
  EXPECT_TRUE(std::filesystem::path(model->resolved_files[0]).is_absolute());
  EXPECT_TRUE(std::filesystem::exists(model->resolved_files[0]));
  ASSERT_TRUE(model->robustness.has_value());
  EXPECT_EQ(model->robustness->eps, (std::vector<double>{0.05, 0.1, 0.2}));
  const auto* chat = load.inventory.find("support-chat");
  ASSERT_NE(chat, nullptr);
  EXPECT_TRUE(chat->llm) << "api openai-chat implies an LLM";
  EXPECT_EQ(load.inventory.policy.every_days, 30);
}

TEST(Inventory, ReportsEveryErrorByLineNotJustTheFirst) {
  const std::string text =
      "assets:\n"                                   // 1
      "  - id: model-a\n"                           // 2
      "    kind: modle\n"                           // 3  bad kind
      "    criticality: severe\n"                   // 4  bad choice
      "    exposure: external\n"                    // 5
      "    datasets: [nowhere]\n"                   // 6  unknown reference (reported on the asset)
      "    flies: [x.pt]\n"                         // 7  unknown key
      "  - id: model-a\n"                           // 8  duplicate id
      "    kind: dataset\n"                         // 9
      "    llm: perhaps\n"                          // 10 bad boolean
      "  - kind: endpoint\n"                        // 11 missing id
      "    tests: {robustness: {limit: -3}}\n";     // 12 bad number
  const auto load = parse_inventory(text, "/tmp/inventory.yaml");
  EXPECT_FALSE(load.ok());
  EXPECT_NE(issue_at(load, 3, "modle"), nullptr);
  EXPECT_NE(issue_at(load, 4, "severe"), nullptr);
  EXPECT_NE(issue_at(load, 7, "unknown key 'flies'"), nullptr);
  EXPECT_NE(issue_at(load, 8, "used twice"), nullptr);
  EXPECT_NE(issue_at(load, 10, "true or false"), nullptr);
  EXPECT_NE(issue_at(load, 11, "needs an 'id'"), nullptr);
  EXPECT_NE(issue_at(load, 12, "limit"), nullptr);
  EXPECT_NE(issue_at(load, 2, "dataset 'nowhere'"), nullptr);
  for (const auto& i : load.issues) EXPECT_GT(i.mark.line, 0u) << i.message;
}

TEST(Inventory, MissingFilesAreWarningsAndRelativePathsStartAtTheFile) {
  TempDir dir;
  write(dir.path / "models/m.pt", "x");
  write(dir.path / "inv.yaml", "assets:\n  - {id: m, kind: model, files: [models/m.pt, models/gone.pt]}\n");
  const auto load = load_inventory(dir.path / "inv.yaml");
  EXPECT_TRUE(load.ok());
  ASSERT_EQ(load.issues.size(), 1u);
  EXPECT_EQ(load.issues[0].severity, "warning");
  EXPECT_NE(load.issues[0].message.find("gone.pt"), std::string::npos);
  EXPECT_EQ(load.inventory.assets[0].resolved_files[0], (dir.path / "models/m.pt").string());
}

TEST(Inventory, HostileFilesGiveAnErrorNotACrash) {
  for (const std::string& text : {std::string(100000, '['), std::string(" {a: 1},\n {b: 2}\n"), std::string("assets: *nowhere\n"),
                                  std::string("a: &a [*a, *a]\n"), std::string("\xff\xfe\x00garbage", 10), std::string("assets: 7\n"),
                                  std::string("- just\n- a list\n"), std::string()}) {
    const auto load = parse_inventory(text, "hostile.yaml");
    EXPECT_FALSE(load.ok()) << text.substr(0, 40);
  }
  std::string many = "assets:\n";
  for (int i = 0; i < 100001; ++i) many += "- {id: a" + std::to_string(i) + ", kind: model}\n";
  const auto load = parse_inventory(many, "many.yaml");
  ASSERT_FALSE(load.ok());
  EXPECT_NE(load.issues.back().message.find("more than"), std::string::npos);
}

TEST(Inventory, DiscoverProposesModelsDatasetsAndDeploymentFromRealFiles) {
  TempDir dir;
  std::filesystem::create_directories(dir.path / "models");
  std::filesystem::create_directories(dir.path / "data");
  std::filesystem::copy_file(test::source_dir() / "examples/fashion-mnist/model.pt", dir.path / "models/classifier.pt",
                             std::filesystem::copy_options::overwrite_existing);
  std::filesystem::copy_file(test::source_dir() / "examples/onnx_mlp.onnx", dir.path / "models/mlp.onnx");
  std::filesystem::copy_file(test::source_dir() / "examples/assess/data/customer_feedback.csv", dir.path / "data/feedback.csv");
  write(dir.path / "deploy/Dockerfile", "FROM python:3.11\n");
  write(dir.path / "notes/readme.txt", "not an asset\n");
  write(dir.path / "models/fake.pt", "this is text, not a model");
  const auto inventory = discover_inventory(dir.path);
  std::map<std::string, const Asset*> by_file;
  for (const auto& a : inventory.assets)
    for (const auto& f : a.files) by_file[f] = &a;
  ASSERT_TRUE(by_file.contains("models/classifier.pt"));
  EXPECT_EQ(by_file["models/classifier.pt"]->framework, "pytorch");
  ASSERT_TRUE(by_file.contains("models/mlp.onnx"));
  EXPECT_EQ(by_file["models/mlp.onnx"]->framework, "onnx");
  ASSERT_TRUE(by_file.contains("data/feedback.csv"));
  EXPECT_EQ(by_file["data/feedback.csv"]->kind, AssetKind::Dataset);
  ASSERT_TRUE(by_file.contains("deploy/Dockerfile"));
  EXPECT_EQ(by_file["deploy/Dockerfile"]->kind, AssetKind::Pipeline);
  EXPECT_FALSE(by_file.contains("notes/readme.txt"));
  EXPECT_FALSE(by_file.contains("models/fake.pt")) << "a .pt name with text inside is not a model";
  // What discover writes is an inventory that validates.
  write(dir.path / "inventory.yaml", to_yaml(inventory));
  const auto reloaded = load_inventory(dir.path / "inventory.yaml");
  for (const auto& i : reloaded.issues) EXPECT_NE(i.severity, "error") << i.message;
  EXPECT_EQ(reloaded.inventory.assets.size(), inventory.assets.size());
}

}  // namespace
}  // namespace aegis::threat
