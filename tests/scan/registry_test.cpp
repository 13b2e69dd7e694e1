// Scanning a model registry: a Hugging Face cache with its symbolic links into blobs/, model folders,
// and the per-model view in the reports.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../test_support.h"
#include "aegis/scan/scan.h"

namespace aegis::scan {
namespace {

namespace fs = std::filesystem;

using test::TempDir;

void copy_blob(const fs::path& from, const fs::path& blob, const fs::path& link) {
  fs::create_directories(blob.parent_path());
  fs::create_directories(link.parent_path());
  if (!fs::exists(blob)) fs::copy_file(from, blob);
  fs::create_symlink(fs::relative(blob, link.parent_path()), link);
}

// models--org--name/{blobs,refs,snapshots/REV} as huggingface_hub writes it: two revisions share a blob.
fs::path make_cache(const fs::path& hub) {
  auto good = hub / "models--acme--tiny-bert";
  std::string rev1 = "0123456789abcdef0123456789abcdef01234567", rev2 = "fedcba9876543210fedcba9876543210fedcba98";
  copy_blob(test::fixture("benign/state_dict.pt"), good / "blobs/aaaa1111", good / "snapshots" / rev1 / "pytorch_model.bin");
  copy_blob(test::fixture("benign/state_dict.pt"), good / "blobs/aaaa1111", good / "snapshots" / rev2 / "pytorch_model.bin");
  copy_blob(test::fixture("benign/model.safetensors"), good / "blobs/bbbb2222", good / "snapshots" / rev2 / "model.safetensors");
  fs::create_directories(good / "refs");
  std::ofstream(good / "refs/main") << rev2;
  auto bad = hub / "models--mallory--helpful-model";
  copy_blob(test::fixture("malicious/os_system_reduce.pkl"), bad / "blobs/cccc3333",
            bad / "snapshots" / rev1 / "training_args.bin");
  copy_blob(test::fixture("benign/model.safetensors"), bad / "blobs/dddd4444", bad / "snapshots" / rev1 / "model.safetensors");
  // A blob no snapshot names any more is still scanned, under its blob name.
  fs::copy_file(test::fixture("malicious/os_system_reduce.pkl"), bad / "blobs/eeee5555");
  return hub;
}

TEST(Registry, ModelOfNamesCacheEntriesFoldersAndFiles) {
  auto never = [](const fs::path&) { return false; };
  auto key = model_of("/data/hub/models--acme--tiny-bert/snapshots/0123456789abcdef0123/pytorch_model.bin", "/data/hub", never);
  EXPECT_EQ(key.name, "acme/tiny-bert@0123456789ab");
  EXPECT_EQ(key.kind, "hf-cache");
  EXPECT_EQ(key.path, "/data/hub/models--acme--tiny-bert/snapshots/0123456789abcdef0123");
  EXPECT_EQ(model_of("/h/models--gpt2/snapshots/abc/sub/x.bin", "/h", never).name, "gpt2@abc");
  EXPECT_EQ(model_of("/h/datasets--org--set/snapshots/abc/x.parquet", "/h", never).name, "datasets/org/set@abc");
  EXPECT_EQ(model_of("/h/models--org--m/blobs/ffff", "/h", never).name, "org/m (blobs)");

  auto marked = [](const fs::path& dir) { return dir == "/zoo/bert" || dir == "/zoo/bert/onnx"; };
  auto folder = model_of("/zoo/bert/onnx/model.onnx", "/zoo", marked);
  EXPECT_EQ(folder.kind, "model-folder");
  EXPECT_EQ(folder.name, "/zoo/bert");  // the outermost marked folder: a pipeline's parts are one model
  auto loose = model_of("/zoo/loose.pkl", "/zoo", marked);
  EXPECT_EQ(loose.kind, "file");
  EXPECT_EQ(loose.name, "/zoo/loose.pkl");
}

TEST(Registry, CacheBlobsAreScannedOnceUnderTheirSnapshotNames) {
  TempDir temp;
  auto hub = make_cache(temp.path / "hub");
  ModelScanner scanner(CallablePolicy{}, ScanOptions{});
  auto result = scanner.scan({hub.string()});
  // Five blobs, six snapshot links: each blob once.
  std::vector<std::string> paths;
  for (const auto& file : result.files)
    if (!file.skipped) paths.push_back(file.path);
  EXPECT_EQ(paths.size(), 5u) << testing::PrintToString(paths);
  for (const auto& file : result.files) {
    if (file.skipped) continue;  // refs/main: a revision name, not a model file
    bool orphan = file.path.ends_with("eeee5555");
    EXPECT_TRUE(orphan || file.path.find("/snapshots/") != std::string::npos) << file.path;
  }
  // Models: the good entry's revisions and the bad entry's snapshot and its orphan blob.
  std::map<std::string, std::size_t> models;
  for (const auto& model : result.models) models[model.name] = model.files.size();
  EXPECT_TRUE(models.contains("mallory/helpful-model@0123456789ab")) << testing::PrintToString(models);
  EXPECT_TRUE(models.contains("mallory/helpful-model (blobs)")) << testing::PrintToString(models);
  std::size_t in_models = 0;
  for (const auto& [name, count] : models) in_models += count;
  EXPECT_EQ(in_models, result.files.size());
  // The payload is reported at the name a user would load.
  auto payload = std::find_if(result.findings.begin(), result.findings.end(), [](const core::Finding& f) {
    return f.severity == core::Severity::Critical && f.location.file.ends_with("training_args.bin");
  });
  EXPECT_NE(payload, result.findings.end());
}

TEST(Registry, ReportsGroupFindingsPerModelAndSarifListsEveryFile) {
  TempDir temp;
  auto hub = make_cache(temp.path / "hub");
  auto json = test::run_cli({"scan", hub.string(), "--format", "json"});
  ASSERT_EQ(json.exit_code, 1) << json.err;
  auto doc = nlohmann::json::parse(json.out);
  ASSERT_TRUE(doc.contains("models"));
  std::map<std::string, nlohmann::json> models;
  for (const auto& model : doc["models"]) models[model["name"].get<std::string>()] = model;
  ASSERT_TRUE(models.contains("mallory/helpful-model@0123456789ab"));
  EXPECT_EQ(models["mallory/helpful-model@0123456789ab"]["highest"], "critical");
  EXPECT_EQ(models["mallory/helpful-model@0123456789ab"]["files"], 2);
  for (const auto& [name, model] : models) {
    if (name.starts_with("acme/")) {
      EXPECT_TRUE(model["highest"].is_null()) << name;
    }
  }
  for (const auto& file : doc["files"]) EXPECT_FALSE(file["model"].get<std::string>().empty());

  auto sarif = test::run_cli({"scan", hub.string(), "--format", "sarif"});
  ASSERT_EQ(sarif.exit_code, 1) << sarif.err;
  auto log = nlohmann::json::parse(sarif.out);
  const auto& run = log["runs"][0];
  EXPECT_EQ(run["artifacts"].size(), 5u);
  for (const auto& result : run["results"]) {
    const auto& location = result["locations"][0]["physicalLocation"]["artifactLocation"];
    ASSERT_TRUE(location.contains("index"));
    std::size_t index = location["index"];
    ASSERT_LT(index, run["artifacts"].size());
    EXPECT_EQ(run["artifacts"][index]["location"]["uri"], location["uri"]);
    EXPECT_TRUE(result["properties"].contains("model"));
  }

  auto table = test::run_cli({"scan", hub.string(), "--format", "table"});
  EXPECT_NE(table.out.find("per model:"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("mallory/helpful-model@0123456789ab"), std::string::npos) << table.out;
}

TEST(Registry, ModelFolderGroupsASavedModelsFiles) {
  TempDir temp;
  auto zoo = temp.path / "zoo";
  fs::create_directories(zoo / "bert" / "onnx");
  std::ofstream(zoo / "bert" / "config.json") << "{\"architectures\": [\"BertModel\"]}";
  fs::copy_file(test::fixture("benign/state_dict.pt"), zoo / "bert" / "pytorch_model.bin");
  fs::copy_file(test::fixture("benign/model.safetensors"), zoo / "bert" / "onnx" / "model.safetensors");
  fs::copy_file(test::fixture("malicious/os_system_reduce.pkl"), zoo / "loose.pkl");
  ModelScanner scanner(CallablePolicy{}, ScanOptions{});
  auto result = scanner.scan({zoo.string()});
  std::map<std::string, std::string> kinds;
  for (const auto& model : result.models) kinds[model.name] = model.kind;
  EXPECT_EQ(kinds[(zoo / "bert").string()], "model-folder") << testing::PrintToString(kinds);
  EXPECT_EQ(kinds[(zoo / "loose.pkl").string()], "file") << testing::PrintToString(kinds);
}

}  // namespace
}  // namespace aegis::scan
