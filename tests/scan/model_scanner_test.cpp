#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "../test_support.h"
#include "aegis/core/error.h"
#include "aegis/formats/pymarshal.h"
#include "aegis/scan/scan.h"

namespace aegis::scan {
namespace {

namespace fs = std::filesystem;
using core::Severity;

ModelScanner default_scanner() { return ModelScanner(CallablePolicy{}, ScanOptions{}); }

ScanResult scan_file(const fs::path& path, const ModelScanner& scanner = default_scanner()) {
  return scanner.scan({path.string()});
}

std::string describe(const ScanResult& result) {
  std::string text;
  for (const auto& f : result.findings)
    text += std::string(core::to_string(f.severity)) + " " + f.rule_id + " [" + f.location.member + "] " + f.title +
            " | " + f.evidence + "\n";
  return text;
}

Severity highest(const ScanResult& result) {
  Severity top = Severity::Info;
  for (const auto& f : result.findings) top = std::max(top, f.severity);
  return top;
}

bool has_rule(const ScanResult& result, std::string_view rule) {
  return std::any_of(result.findings.begin(), result.findings.end(), [&](const auto& f) { return f.rule_id == rule; });
}

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir))
    // A folder is one model too (a TensorFlow SavedModel): it is scanned as a whole.
    if ((entry.is_regular_file() || entry.is_directory()) && entry.path().filename() != "manifest.json")
      files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  return files;
}

TEST(ModelScanner, BenignFilesFromTheRealLibrariesGetNothingAboveInfo) {
  auto files = files_in(test::fixture("benign"));
  ASSERT_GE(files.size(), 20u) << "fixtures missing: run tests/fixtures/make_fixtures.py";
  auto scanner = default_scanner();
  for (const auto& path : files) {
    auto result = scan_file(path, scanner);
    EXPECT_LE(highest(result), Severity::Info) << path << "\n" << describe(result);
    ASSERT_GE(result.files.size(), 1u);
    if (fs::is_regular_file(path)) {
      EXPECT_NE(result.files[0].format, "unknown") << path;
    }
  }
}

TEST(ModelScanner, EveryMaliciousFixtureIsCaughtAndItsCallableNamed) {
  std::ifstream in(test::fixture("malicious/manifest.json"));
  ASSERT_TRUE(in) << "fixtures missing: run tests/fixtures/make_fixtures.py";
  auto manifest = nlohmann::json::parse(in);
  ASSERT_GE(manifest.size(), 30u);
  auto scanner = default_scanner();
  for (const auto& item : manifest) {
    auto path = test::fixture("malicious/" + item["file"].get<std::string>());
    auto result = scan_file(path, scanner);
    auto expected = core::parse_severity(item["expect_min_severity"].get<std::string>());
    ASSERT_TRUE(expected.has_value());
    EXPECT_GE(highest(result), *expected) << path << " (" << item["technique"] << ")\n" << describe(result);
    for (const auto& callable : item["expect_callables"]) {
      std::string name = callable.get<std::string>();
      bool named = std::any_of(result.findings.begin(), result.findings.end(), [&](const auto& f) {
        return f.title.find(name) != std::string::npos || f.evidence.find(name) != std::string::npos;
      });
      EXPECT_TRUE(named) << path << " should name " << name << "\n" << describe(result);
    }
    for (const auto& rule : item.value("expect_rules", nlohmann::json::array()))
      EXPECT_TRUE(has_rule(result, rule.get<std::string>())) << path << " should raise " << rule << "\n" << describe(result);
  }
}

TEST(ModelScanner, DamagedFilesAreFindingsNeverSilentPasses) {
  auto files = files_in(test::fixture("malformed"));
  ASSERT_GE(files.size(), 5u);
  auto scanner = default_scanner();
  for (const auto& path : files) {
    auto result = scan_file(path, scanner);
    EXPECT_FALSE(result.findings.empty()) << path;
  }
}

TEST(ModelScanner, ZipNameMismatchIsReportedAndThePickleStillAnalysedAsTorchReadsIt) {
  auto result = scan_file(test::fixture("malicious/pt_zip_name_mismatch.pt"));
  EXPECT_TRUE(has_rule(result, "zip.name-mismatch")) << describe(result);
  EXPECT_TRUE(has_rule(result, "pickle.denied-callable")) << describe(result);
}

TEST(ModelScanner, BrokenStreamReportsThePayloadBeforeTheDamage) {
  auto result = scan_file(test::fixture("malicious/nullifai_broken.pkl"));
  EXPECT_TRUE(has_rule(result, "pickle.malformed")) << describe(result);
  EXPECT_TRUE(has_rule(result, "pickle.denied-callable")) << describe(result);
}

TEST(ModelScanner, PickleHiddenUnderAnotherNameInsideTheArchiveIsFound) {
  auto result = scan_file(test::fixture("malicious/pt_zip_hidden_member.pt"));
  EXPECT_EQ(highest(result), Severity::Critical) << describe(result);
}

TEST(ModelScanner, FormatIsSniffedFromBytesNotTheExtension) {
  auto png = scan_file(test::fixture("malicious/hidden_extension.png"));
  EXPECT_EQ(png.files.at(0).format, "pickle");
  EXPECT_EQ(highest(png), Severity::Critical);
  auto pt = scan_file(test::fixture("benign/state_dict.pt"));
  EXPECT_EQ(pt.files.at(0).format, "pytorch-zip");
  auto ts = scan_file(test::fixture("benign/torchscript_module.pt"));
  EXPECT_EQ(ts.files.at(0).format, "torchscript-zip");
}

TEST(ModelScanner, NestedWrappersAreOpenedAndTheMemberChainReported) {
  auto result = scan_file(test::fixture("malicious/nested_tar_gz_zip.tar.gz"));
  ASSERT_EQ(highest(result), Severity::Critical) << describe(result);
  bool chained = std::any_of(result.findings.begin(), result.findings.end(), [](const auto& f) {
    return f.severity == Severity::Critical && std::count(f.location.member.begin(), f.location.member.end(), '!') >= 2;
  });
  EXPECT_TRUE(chained) << describe(result);
}

TEST(ModelScanner, UserAllowListTurnsAnUnknownCallableIntoAPass) {
  auto path = test::fixture("malicious/unknown_callable.pkl");
  auto before = scan_file(path);
  EXPECT_TRUE(has_rule(before, "pickle.unknown-callable")) << describe(before);
  EXPECT_EQ(highest(before), Severity::High);
  CallablePolicy policy;
  policy.allow("mylib.helpers.load_config");
  auto after = scan_file(path, ModelScanner(std::move(policy), ScanOptions{}));
  EXPECT_LE(highest(after), Severity::Info) << describe(after);
}

TEST(ModelScanner, DirectoryWalkScansModelsAndSkipsOtherFiles) {
  auto dir = fs::path(::testing::TempDir()) / "aegis-walk";
  fs::remove_all(dir);
  fs::create_directories(dir / "sub" / ".git");
  fs::copy_file(test::fixture("benign/state_dict.pt"), dir / "sub" / "blob-without-extension");
  fs::copy_file(test::fixture("malicious/os_system_reduce.pkl"), dir / "evil.pkl");
  fs::copy_file(test::fixture("malicious/os_system_reduce.pkl"), dir / "sub" / ".git" / "ignored.pkl");
  { std::ofstream(dir / "README.md") << "# a model card\n"; }
  // a link to a file already in the tree is scanned once, not twice
  fs::create_symlink(dir / "evil.pkl", dir / "sub" / "link-to-evil.pkl");
  auto result = default_scanner().scan({dir.string()});
  EXPECT_EQ(result.files.size(), 3u);
  std::size_t skipped = 0;
  for (const auto& file : result.files) {
    if (file.skipped) ++skipped;
    if (file.path.ends_with("blob-without-extension")) {
      EXPECT_EQ(file.format, "pytorch-zip");
    }
  }
  EXPECT_EQ(skipped, 1u);
  std::size_t critical = 0;
  for (const auto& f : result.findings) {
    if (f.severity != Severity::Critical) continue;
    ++critical;
    EXPECT_TRUE(f.location.file.ends_with("evil.pkl")) << f.location.file;
  }
  EXPECT_EQ(critical, 1u) << describe(result);
  fs::remove_all(dir);
}

TEST(ModelScanner, SnapshotFolderOfLinksIntoBlobsIsScanned) {
  // The Hugging Face cache layout: snapshots/<rev>/<name> are symbolic links into blobs/<hash>.
  auto cache = fs::path(::testing::TempDir()) / "aegis-hf-cache";
  fs::remove_all(cache);
  fs::create_directories(cache / "blobs");
  fs::create_directories(cache / "snapshots" / "abc123");
  fs::copy_file(test::fixture("malicious/pt_zip_malicious.pt"), cache / "blobs" / "9f86d081884c7d65");
  fs::create_symlink(fs::path("../../blobs/9f86d081884c7d65"), cache / "snapshots" / "abc123" / "pytorch_model.bin");
  auto result = default_scanner().scan({(cache / "snapshots" / "abc123").string()});
  ASSERT_EQ(result.files.size(), 1u);
  EXPECT_EQ(result.files[0].format, "pytorch-zip");
  EXPECT_EQ(highest(result), Severity::Critical) << describe(result);
  fs::remove_all(cache);
}

TEST(ModelScanner, MissingPathIsAnErrorNotAPass) {
  EXPECT_THROW(default_scanner().scan({"/nonexistent/model.pt"}), core::Error);
}

TEST(ModelScanner, TooDeepNestingIsReported) {
  ScanOptions options;
  options.max_container_depth = 1;
  auto result = scan_file(test::fixture("malicious/nested_tar_gz_zip.tar.gz"), ModelScanner(CallablePolicy{}, options));
  EXPECT_TRUE(has_rule(result, "archive.too-deep")) << describe(result);
}

}  // namespace
}  // namespace aegis::scan

namespace aegis::scan {
namespace {

TEST(ModelScanner, JoblibArrayBytesAreAlsoReadAsPickleLoadReadsThem) {
  auto path = test::fixture("malicious/joblib_array_payload.joblib");
  auto result = scan_file(path);
  EXPECT_TRUE(has_rule(result, "pickle.joblib-array-payload")) << describe(result);
  // joblib's own reading of the same bytes sees only its array wrapper
  auto bytes = test::read_file(path);
  auto joblib_reading = formats::analyze_pickle(bytes);
  EXPECT_EQ(joblib_reading.joblib_arrays_skipped, 2u);
  for (const auto& import : joblib_reading.imports) EXPECT_NE(import.module, "posix");
  formats::PickleLimits plain;
  plain.skip_joblib_arrays = false;
  auto plain_reading = formats::analyze_pickle(bytes, plain);
  bool sees_system = std::any_of(plain_reading.imports.begin(), plain_reading.imports.end(),
                                 [](const auto& i) { return i.module == "posix" && i.name == "system"; });
  EXPECT_TRUE(sees_system);
}

}  // namespace
}  // namespace aegis::scan

namespace aegis::scan {
namespace {

// Found by the model_scanner fuzzer: a SavedModel whose strings are not UTF-8 once crashed the
// report's inventory. Names from a file are bytes; the scan must go on and still see the PyFunc.
std::vector<std::uint8_t> from_base64(const std::string& text) {
  auto bytes = formats::decode_base64(text);  // the decoder the Keras review uses
  return bytes ? *bytes : std::vector<std::uint8_t>{};
}

TEST(ModelScanner, NonUtf8NamesInAGraphDoNotStopTheScan) {
  const std::string base64 =
      "CAESzQEKGAoHdjIuMTUuMCIFc2VydmUqBjIuMTUuMBKwAQo7CgF4EgtQbGFjZWhvbGRlcioLCgVkdHlwZRICMAEqHAoFc2hhcGUSEzoREgsI"
      "////////////ARICCAQKRQoGUHlGdW5jEgZQeUZ1bmMaAXgqDAoDVGluEgUKAzIBASoNCgRUb3V0EgUKAzIBASoTCgV0b2tlbhIKEghweWZ1"
      "bmNfMAojCgZvdXRwdXQSCElkZW50aXR5GgZQeUZ1bmMqBwoBVBICMAEiBQjtDBAM";
  auto bytes = from_base64(base64);
  ScanResult result;
  ASSERT_NO_THROW(result = default_scanner().scan_bytes(bytes, "saved_model.pb"));
  EXPECT_EQ(result.files.at(0).format, "tf-savedmodel");
  EXPECT_TRUE(has_rule(result, "tf.python-callback")) << describe(result);
  EXPECT_FALSE(result.files.at(0).details.empty());
}

}  // namespace
}  // namespace aegis::scan

namespace aegis::scan {
namespace {

// An ONNX model with its weights in a file beside it: the weights file is recognised as the
// model's external data, not reported as a file of unknown format.
TEST(ModelScanner, OnnxExternalDataBesideTheModelIsRecognised) {
  auto result = default_scanner().scan({test::fixture("onnx_external_ok").string()});
  EXPECT_LE(highest(result), Severity::Info) << describe(result);
  std::map<std::string, std::string> formats;
  for (const auto& file : result.files) formats[fs::path(file.path).filename().string()] = file.format;
  EXPECT_EQ(formats["model.onnx"], "onnx") << testing::PrintToString(formats);
  EXPECT_EQ(formats["weights.bin"], "onnx-external-data") << testing::PrintToString(formats);
  ASSERT_EQ(result.models.size(), 1u);
}

// A checkpoint whose tensors are stored (not deflated) members over the inflate limit is normal
// for large models and must not be called a zip bomb; the pickle is still analysed.
TEST(ModelScanner, StoredTensorsLargerThanTheInflateLimitAreNotABomb) {
  ScanOptions options;
  options.zip_limits.max_inflated_size = 64;  // every tensor of the fixture is bigger than this
  ModelScanner scanner(CallablePolicy{}, options);
  auto clean = scanner.scan({test::fixture("benign/state_dict.pt").string()});
  EXPECT_FALSE(has_rule(clean, "zip.zip-bomb")) << describe(clean);
  auto evil = scanner.scan({test::fixture("malicious/pt_zip_malicious.pt").string()});
  EXPECT_TRUE(has_rule(evil, "pickle.denied-callable")) << describe(evil);
}

}  // namespace
}  // namespace aegis::scan

namespace aegis::scan {
namespace {

// Found by the model_scanner fuzzer: a .keras archive whose configuration names no Keras version
// once threw from the report's inventory. It must scan, and be reported as a damaged .keras.
TEST(ModelScanner, KerasArchiveWithoutVersionsScans) {
  const std::string base64 =
      "UEsDBBQAAAAIAAAAblfz3kbUOwAAAD8AAAANAAAAbWV0YWRhdGEuanNvbqtWyk4tSiyOL0stKs7Mz1OyUlAy1jPQM1TSUVBKSSxJ"
      "jS9OLEtNAQkbGRgZ6xoa6hqgkr3Bfv4ujAzMcPsUmFHtQU/HsNJfgx3NPVB+ASfUHKj4B15UdRJ8ENoCtRoZ8gBXOYAeLoTqsRU8"
      "EBoWH6NgZAH0cgCWTSZwoqpDr688KLQXV/oVgLT8GAyg6XK0HhsF+ACueiyAB1UdbeoxRrh9LzhR7UFPx6MAO8BVDqDX26PlwJo4"
      "GBhYgZFSLQBQSwMEFAAAAAgAAABuVyEkgQUjAAAAIwAAAAsAAABjb25maWcuanNvbqtWys1PKc1JVbJSUMpOLUosVtJRUErOSSwu"
      "js9LzAUJRwMAUEsDBBQAAAAIAAAAbldLJte0JQEAALAQAAAQAAAAbW9kZWwud2VpZ2h0cy5oNev0cHHj5ZLiYgABDg4GFgYBBmTw"
      "Hwo2CKDyYfIJUJoRSndA6RVMMHFGsJwEVFwQaj66upAgV1eQ6v9oAGbPA1YIrcAwCkYi8HB1DADREVC+BpQ+wYSqLiexMrWomIEh"
      "v6AkMzezKrUIKl6WCBJFpFMDIu3FlX49mCH8DGi6hKRfBpzpdxSMbICefjmgdAcrqjpY+gygkr3Bfv4ujAzMcPsUmFHtQU/HsNJf"
      "gx3NPVB+ASfUHKj4B15UdRJ8ENoCtRoZ8gBXOYAeLoTqsRU8EBoWH6NgZAH0cgCWTSZwoqpDr688KLQXV/oVgLT8GAyg6XK0HhsF"
      "+ACueiyAB1UdbeoxRrh9LzhR7UFPx6MAO8BVDqDX26PlwCjAB3CVAxFo7T5qlwMAUEsBAhQDFAAAAAgAAABuV/PeRtQ7AAAAPwAA"
      "AA0AAAAAAAAAAAAAAIABAAAAAG1ldGFkYXRhLmpzb25QSwECFAMUAAAACAAAAG5XISSBBSMAAAAjAAAACwAAAAAAAAAAAAAAgAFm"
      "AAAAY29uZmlnLmpzb25QSwECFAMUAAAACAAAAG5XSybXtCUBAACwEAAAEAAAAAAAAAAAAAAAgAGyAAAAbW9kZWwud2VpZ2h0cy5o"
      "NVBLBQYAAAAAAwADALIAAAAFAgAAAAA=";
  auto bytes = from_base64(base64);
  ScanResult result;
  ASSERT_NO_THROW(result = default_scanner().scan_bytes(bytes, "model.keras"));
  EXPECT_EQ(result.files.at(0).format, "keras-v3");
}

}  // namespace
}  // namespace aegis::scan
