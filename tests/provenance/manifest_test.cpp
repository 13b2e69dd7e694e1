// Manifests as the OpenSSF Model Signing format defines them: per-file and per-shard SHA-256 under
// relative names, the subject digest over them, ignore lists, and failing closed on what cannot be
// hashed. Digests are checked against coreutils' sha256sum (an independent implementation) and, where
// the reference implementation's golden signatures are beside the project, against those.
#include "aegis/provenance/manifest.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "aegis/core/error.h"
#include "aegis/formats/pymarshal.h"
#include "test_support.h"

namespace aegis::provenance {
namespace {

namespace fs = std::filesystem;

using test::TempDir;

void write(const fs::path& path, const std::string& bytes) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string out(n, '\0');
  for (auto& c : out) c = static_cast<char>(rng());
  return out;
}

// The first word sha256sum prints for a shell pipeline's output.
std::string shell_sha256(const std::string& pipeline) {
  std::FILE* pipe = ::popen((pipeline + " | sha256sum").c_str(), "r");
  char buffer[128] = {};
  std::string out = pipe && std::fgets(buffer, sizeof buffer, pipe) ? std::string(buffer, 64) : "";
  if (pipe) ::pclose(pipe);
  return out;
}

std::string quoted(const fs::path& path) { return "'" + path.string() + "'"; }

TEST(Manifest, FileDigestsMatchSha256sumAndNamesAreRelative) {
  TempDir temp;
  auto root = temp.path / "model";
  write(root / "config.json", "{\"hidden\": 8}");
  write(root / "weights/part-1.bin", random_bytes(3 << 20, 1));
  write(root / "weights/part-2.bin", random_bytes(12345, 2));
  write(root / "empty", "");
  auto manifest = build_manifest(root, {});
  ASSERT_EQ(manifest.resources.size(), 4u);
  EXPECT_EQ(manifest.model_name, "model");
  std::vector<std::string> names;
  for (const auto& r : manifest.resources) names.push_back(r.name);
  EXPECT_EQ(names, (std::vector<std::string>{"config.json", "empty", "weights/part-1.bin", "weights/part-2.bin"}));
  for (const auto& r : manifest.resources)
    EXPECT_EQ(to_hex(r.digest), shell_sha256("cat " + quoted(root / r.name))) << r.name;
  EXPECT_EQ(manifest.bytes, (3u << 20) + 12345u + 13u);
}

TEST(Manifest, SubjectDigestIsTheHashOfTheRawDigestsInNameOrder) {
  TempDir temp;
  auto root = temp.path / "m";
  write(root / "b", "second");
  write(root / "a", "first");
  auto manifest = build_manifest(root, {});
  std::string hexes;
  for (const auto& r : manifest.resources) hexes += to_hex(r.digest);
  // printf turns the hex back into raw bytes; sha256sum hashes them: no Aegis code involved.
  std::string escaped;  // POSIX printf takes octal escapes
  for (std::size_t i = 0; i < hexes.size(); i += 2) {
    int byte = std::stoi(hexes.substr(i, 2), nullptr, 16);
    char octal[8];
    std::snprintf(octal, sizeof octal, "\\%03o", byte);
    escaped += octal;
  }
  EXPECT_EQ(to_hex(manifest.subject_digest()), shell_sha256("printf '" + escaped + "'"));
}

TEST(Manifest, ShardsAreNamedByRangeAndHashedIndependently) {
  TempDir temp;
  auto root = temp.path / "sharded";
  write(root / "big.bin", random_bytes(2500, 7));
  write(root / "small.bin", "tiny");
  write(root / "zero.bin", "");
  ManifestOptions options;
  options.method = HashMethod::Shards;
  options.shard_size = 1000;
  auto manifest = build_manifest(root, options);
  std::map<std::string, std::string> digests;
  for (const auto& r : manifest.resources) digests[r.name] = to_hex(r.digest);
  ASSERT_EQ(digests.size(), 5u) << testing::PrintToString(digests);
  for (auto [start, end] : {std::pair{0, 1000}, std::pair{1000, 2000}, std::pair{2000, 2500}}) {
    std::string name = "big.bin:" + std::to_string(start) + ":" + std::to_string(end);
    ASSERT_TRUE(digests.contains(name)) << name;
    EXPECT_EQ(digests[name], shell_sha256("tail -c +" + std::to_string(start + 1) + " " + quoted(root / "big.bin") +
                                          " | head -c " + std::to_string(end - start)));
  }
  EXPECT_TRUE(digests.contains("small.bin:0:4"));
  EXPECT_TRUE(digests.contains("zero.bin:0:0"));
}

TEST(Manifest, IgnoredPathsAndGitMetadataAreLeftOut) {
  TempDir temp;
  auto root = temp.path / "repo";
  write(root / "model.safetensors", "weights");
  write(root / ".git/HEAD", "ref: refs/heads/main");
  write(root / ".gitattributes", "*.bin filter=lfs");
  write(root / "notes/draft.txt", "not part of the model");
  write(root / "model.sig", "{}");
  ManifestOptions options;
  options.ignore_paths = {"notes", (root / "model.sig").string()};  // relative, and with the root in front
  auto manifest = build_manifest(root, options);
  ASSERT_EQ(manifest.resources.size(), 1u);
  EXPECT_EQ(manifest.resources[0].name, "model.safetensors");
}

TEST(Manifest, SingleFileModelIsOneResourceNamedDot) {
  TempDir temp;
  write(temp.path / "model.bin", "abc");
  auto manifest = build_manifest(temp.path / "model.bin", {});
  ASSERT_EQ(manifest.resources.size(), 1u);
  EXPECT_EQ(manifest.resources[0].name, ".");
  EXPECT_EQ(manifest.model_name, "model.bin");
  EXPECT_EQ(to_hex(manifest.resources[0].digest), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST(Manifest, WhatCannotBeHashedIsAnErrorNotAGap) {
  TempDir temp;
  auto root = temp.path / "m";
  write(root / "real.bin", "data");
  fs::create_symlink(root / "real.bin", root / "link.bin");
  EXPECT_THROW(build_manifest(root, {}), core::Error);
  ManifestOptions allow;
  allow.allow_symlinks = true;
  EXPECT_EQ(build_manifest(root, allow).resources.size(), 2u);
  fs::remove(root / "link.bin");
  ASSERT_EQ(::mkfifo((root / "pipe").c_str(), 0600), 0);
  EXPECT_THROW(build_manifest(root, {}), core::Error);
  EXPECT_THROW(build_manifest(temp.path / "missing", {}), core::Error);
}

#ifdef AEGIS_SIGNING_VECTORS
// The reference implementation's signatures list the digests it computed; the same folders must
// give the same resources and subject digest here (ignore lists as each signature records them).
TEST(Manifest, ReferenceGoldenSignaturesListTheDigestsWeCompute) {
  const fs::path vectors = AEGIS_SIGNING_VECTORS;
  std::size_t checked = 0;
  for (const char* name : {"v1.0.0-certificate", "v1.0.0-elliptic-key", "v1.0.1-certificate", "v1.0.1-elliptic-key",
                           "v1.1.0-certificate", "v1.1.0-elliptic-key", "v0.3.1-certificate", "v0.3.1-elliptic-key"}) {
    auto dir = vectors / name;
    if (!fs::exists(dir / "model.sig")) continue;
    std::ifstream in(dir / "model.sig");
    auto bundle = nlohmann::json::parse(in);
    auto payload_bytes = formats::decode_base64(bundle["dsseEnvelope"]["payload"].get<std::string>());
    ASSERT_TRUE(payload_bytes) << name;
    auto statement = nlohmann::json::parse(payload_bytes->begin(), payload_bytes->end());
    const auto& predicate = statement["predicate"];
    ManifestOptions options;
    // As the vectors' README verifies them: the signature, and ignore-me where the folder has one.
    options.ignore_paths = {"model.sig", "ignore-me"};
    if (predicate.contains("serialization") && predicate["serialization"].contains("ignore_paths"))
      for (const auto& p : predicate["serialization"]["ignore_paths"]) options.ignore_paths.push_back(p);
    // v0.3 recorded no ignore list; its folders hold only the model and the signature.
    auto resources = predicate.value("resources", nlohmann::json::array());
    fs::path root = dir;
    if (resources.size() == 1 && resources[0]["name"] == ".") root = dir / statement["subject"][0]["name"].get<std::string>();
    if (!predicate.contains("serialization") || predicate["serialization"].value("method", "") != "files") continue;
    auto manifest = build_manifest(root, options);
    ASSERT_EQ(manifest.resources.size(), resources.size()) << name;
    for (std::size_t i = 0; i < resources.size(); ++i) {
      EXPECT_EQ(manifest.resources[i].name, resources[i]["name"].get<std::string>()) << name;
      EXPECT_EQ(to_hex(manifest.resources[i].digest), resources[i]["digest"].get<std::string>()) << name;
    }
    EXPECT_EQ(to_hex(manifest.subject_digest()), statement["subject"][0]["digest"]["sha256"].get<std::string>()) << name;
    ++checked;
  }
  EXPECT_GE(checked, 4u);
}
#endif

}  // namespace
}  // namespace aegis::provenance
