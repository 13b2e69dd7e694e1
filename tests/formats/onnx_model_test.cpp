#include <gtest/gtest.h>
#include <onnx/onnx_pb.h>
#include <sys/mman.h>
#include <unistd.h>

#include <climits>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "aegis/formats/onnx_model.h"
#include "test_support.h"

namespace aegis::formats {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

std::span<const std::uint8_t> as_span(const std::string& text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

const FormatIssue* find_issue(const OnnxInfo& info, const std::string& rule) {
  for (const auto& issue : info.issues) {
    if (issue.rule == rule) return &issue;
  }
  return nullptr;
}

std::size_t count_rule(const OnnxInfo& info, const std::string& rule) {
  std::size_t n = 0;
  for (const auto& issue : info.issues) n += issue.rule == rule;
  return n;
}

std::string rules_of(const OnnxInfo& info) {
  std::string out;
  for (const auto& issue : info.issues) out += issue.rule + " [" + issue.title + "] " + issue.evidence + "\n";
  return out;
}

OnnxInfo analyze_fixture(const std::string& name, bool with_dir = true) {
  const fs::path path = test::fixture(name);
  const Bytes bytes = test::read_file(path);
  return analyze_onnx(bytes, with_dir ? path.parent_path() : fs::path());
}

OnnxInfo analyze_model(const onnx::ModelProto& model, const fs::path& dir = {}, const OnnxOptions& options = {}) {
  const std::string bytes = model.SerializeAsString();
  return analyze_onnx(as_span(bytes), dir, options);
}

// A scratch folder removed when the test ends.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    static int serial = 0;
    path_ = fs::temp_directory_path() / ("aegis_onnx_" + std::string(info->name()) + "_" + std::to_string(::getpid()) +
                                         "_" + std::to_string(serial++));
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  void write(const std::string& name, std::size_t bytes) const {
    std::ofstream out(path_ / name, std::ios::binary);
    out << std::string(bytes, '\x01');
  }

 private:
  fs::path path_;
};

// ---- builders: each test breaks one thing in an otherwise valid model ------------------------

onnx::ModelProto base_model(std::int64_t opset = 13) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  model.set_producer_name("aegis-test");
  auto* import = model.add_opset_import();
  import->set_domain("");
  import->set_version(opset);
  auto* graph = model.mutable_graph();
  graph->set_name("main");
  graph->add_input()->set_name("x");
  graph->add_output()->set_name("y");
  return model;
}

onnx::NodeProto* add_node(onnx::GraphProto* graph, const std::string& op, std::vector<std::string> inputs,
                          std::vector<std::string> outputs, const std::string& name = "", const std::string& domain = "") {
  auto* node = graph->add_node();
  node->set_op_type(op);
  node->set_name(name);
  node->set_domain(domain);
  for (const auto& input : inputs) node->add_input(input);
  for (const auto& output : outputs) node->add_output(output);
  return node;
}

void add_external(onnx::TensorProto* tensor, const std::string& name, const std::string& location,
                  const std::string& offset = "0", const std::string& length = "16") {
  tensor->set_name(name);
  tensor->set_data_type(onnx::TensorProto::FLOAT);
  tensor->add_dims(4);
  tensor->set_data_location(onnx::TensorProto::EXTERNAL);
  auto* entry = tensor->add_external_data();
  entry->set_key("location");
  entry->set_value(location);
  if (!offset.empty()) {
    entry = tensor->add_external_data();
    entry->set_key("offset");
    entry->set_value(offset);
  }
  if (!length.empty()) {
    entry = tensor->add_external_data();
    entry->set_key("length");
    entry->set_value(length);
  }
}

// y = x + W, W's data in `location`.
onnx::ModelProto external_model(const std::string& location, const std::string& offset = "0",
                                const std::string& length = "16") {
  auto model = base_model();
  add_external(model.mutable_graph()->add_initializer(), "W", location, offset, length);
  add_node(model.mutable_graph(), "Add", {"x", "W"}, {"y"}, "add");
  return model;
}

// A chain of If nodes, each then_branch holding the next; `levels` subgraphs below the main graph.
onnx::ModelProto nested_if_model(int levels) {
  auto model = base_model();
  onnx::GraphProto* graph = model.mutable_graph();
  for (int level = 0; level < levels; ++level) {
    auto* node = add_node(graph, "If", {"x"}, {level == 0 ? "y" : "out" + std::to_string(level)},
                          "if" + std::to_string(level));
    auto* attribute = node->add_attribute();
    attribute->set_name("then_branch");
    attribute->set_type(onnx::AttributeProto::GRAPH);
    graph = attribute->mutable_g();
    graph->set_name("level" + std::to_string(level + 1));
    graph->add_output()->set_name("out" + std::to_string(level + 1));
  }
  add_node(graph, "Identity", {"x"}, {"out" + std::to_string(levels)}, "leaf");
  return model;
}

// ---- fixtures made by the onnx package ----------------------------------------------------

TEST(OnnxModel, BenignMlpIsCleanAndDescribed) {
  const OnnxInfo info = analyze_fixture("benign/onnx_mlp.onnx");
  ASSERT_TRUE(info.parsed);
  EXPECT_TRUE(info.issues.empty()) << rules_of(info);
  EXPECT_EQ(info.ir_version, 8);
  EXPECT_EQ(info.producer, "aegis-fixtures");
  EXPECT_EQ(info.nodes, 6u);
  EXPECT_EQ(info.initializers, 4u);
  EXPECT_EQ(info.op_counts.at("MatMul"), 2u);
  EXPECT_EQ(info.op_counts.at("Softmax"), 1u);
  ASSERT_EQ(info.opsets.size(), 1u);
  EXPECT_EQ(info.opsets[0].first, "");
  EXPECT_EQ(info.opsets[0].second, 13);
  EXPECT_TRUE(info.external_files.empty());
}

TEST(OnnxModel, BenignIfReadsOuterScopeWithoutFindings) {
  const OnnxInfo info = analyze_fixture("benign/onnx_if.onnx");
  ASSERT_TRUE(info.parsed);
  EXPECT_TRUE(info.issues.empty()) << rules_of(info);
  EXPECT_EQ(info.nodes, 4u);  // If, and Constant + Add + Mul in its branches
  EXPECT_EQ(info.op_counts.at("If"), 1u);
}

TEST(OnnxModel, BenignExternalDataBesideTheModelIsClean) {
  const OnnxInfo on_disk = analyze_fixture("onnx_external_ok/model.onnx");
  ASSERT_TRUE(on_disk.parsed);
  EXPECT_TRUE(on_disk.issues.empty()) << rules_of(on_disk);
  EXPECT_EQ(on_disk.external_files, std::vector<std::string>{"weights.bin"});

  const OnnxInfo in_archive = analyze_fixture("onnx_external_ok/model.onnx", /*with_dir=*/false);
  EXPECT_TRUE(in_archive.issues.empty()) << rules_of(in_archive);
}

TEST(OnnxModel, TraversalInExternalDataIsCritical) {
  const OnnxInfo info = analyze_fixture("malicious/onnx_external_traversal.onnx");
  const FormatIssue* issue = find_issue(info, "onnx.external-data-escape");
  ASSERT_NE(issue, nullptr) << rules_of(info);
  EXPECT_EQ(issue->severity, core::Severity::Critical);
  EXPECT_EQ(issue->kind, IssueClass::Code);
  EXPECT_NE(issue->evidence.find("../../etc/passwd"), std::string::npos) << issue->evidence;
  EXPECT_NE(issue->where.find("initializer 'W'"), std::string::npos) << issue->where;
  EXPECT_FALSE(issue->remediation.empty());
  // Nothing outside the model folder is looked at, so no "missing" noise either.
  EXPECT_EQ(find_issue(info, "onnx.external-data-missing"), nullptr);
}

TEST(OnnxModel, AbsoluteExternalPathIsCritical) {
  const OnnxInfo info = analyze_fixture("malicious/onnx_external_absolute.onnx");
  const FormatIssue* issue = find_issue(info, "onnx.external-data-escape");
  ASSERT_NE(issue, nullptr) << rules_of(info);
  EXPECT_NE(issue->evidence.find("/etc/shadow"), std::string::npos);
  EXPECT_NE(issue->evidence.find("absolute"), std::string::npos);
}

TEST(OnnxModel, EscapeInsideIfBranchConstantIsFound) {
  const OnnxInfo info = analyze_fixture("malicious/onnx_external_in_subgraph.onnx");
  const FormatIssue* issue = find_issue(info, "onnx.external-data-escape");
  ASSERT_NE(issue, nullptr) << rules_of(info);
  EXPECT_NE(issue->evidence.find("root/.ssh/id_rsa"), std::string::npos);
  EXPECT_NE(issue->where.find("node 'gate' (If) > then_branch"), std::string::npos) << issue->where;
}

TEST(OnnxModel, CustomDomainOperatorIsHigh) {
  const OnnxInfo info = analyze_fixture("malicious/onnx_custom_domain.onnx");
  const FormatIssue* issue = find_issue(info, "onnx.custom-domain");
  ASSERT_NE(issue, nullptr) << rules_of(info);
  EXPECT_EQ(issue->severity, core::Severity::High);
  EXPECT_NE(issue->evidence.find("com.evil::Exec"), std::string::npos) << issue->evidence;
  EXPECT_EQ(info.op_counts.at("com.evil::Exec"), 1u);
  EXPECT_EQ(count_rule(info, "onnx.custom-domain"), 1u);  // the import and the use are one finding
}

TEST(OnnxModel, UnknownStandardOperatorIsHigh) {
  const OnnxInfo info = analyze_fixture("malicious/onnx_unknown_op.onnx");
  const FormatIssue* issue = find_issue(info, "onnx.unknown-operator");
  ASSERT_NE(issue, nullptr) << rules_of(info);
  EXPECT_EQ(issue->severity, core::Severity::High);
  EXPECT_NE(issue->title.find("RunShellCommand"), std::string::npos);
}

TEST(OnnxModel, FunctionShadowingStandardOperatorIsHigh) {
  const OnnxInfo info = analyze_fixture("malicious/onnx_function_shadow.onnx");
  const FormatIssue* issue = find_issue(info, "onnx.function-shadows-standard-op");
  ASSERT_NE(issue, nullptr) << rules_of(info);
  EXPECT_EQ(issue->severity, core::Severity::High);
  EXPECT_NE(issue->title.find("Relu"), std::string::npos);
  EXPECT_NE(issue->evidence.find("Neg"), std::string::npos);
  EXPECT_EQ(info.functions, 1u);
  EXPECT_EQ(find_issue(info, "onnx.unknown-operator"), nullptr);
}

TEST(OnnxModel, MalformedFixturesAreReported) {
  const OnnxInfo truncated = analyze_fixture("malformed/onnx_truncated.onnx");
  EXPECT_FALSE(truncated.parsed);
  EXPECT_NE(find_issue(truncated, "onnx.unreadable"), nullptr);

  const OnnxInfo garbage = analyze_fixture("malformed/onnx_garbage.onnx");
  ASSERT_NE(find_issue(garbage, "onnx.unreadable"), nullptr) << rules_of(garbage);
  EXPECT_EQ(find_issue(garbage, "onnx.unreadable")->severity, core::Severity::High);

  const OnnxInfo oversized = analyze_fixture("malformed/onnx_oversized.onnx");
  const FormatIssue* big = find_issue(oversized, "onnx.oversized-tensor");
  ASSERT_NE(big, nullptr) << rules_of(oversized);
  EXPECT_EQ(big->severity, core::Severity::High);
  EXPECT_NE(big->evidence.find("1048576, 1048576"), std::string::npos) << big->evidence;

  const OnnxInfo missing = analyze_fixture("malformed/onnx_missing_init.onnx");
  const FormatIssue* gap = find_issue(missing, "onnx.missing-initializer");
  ASSERT_NE(gap, nullptr) << rules_of(missing);
  EXPECT_NE(gap->evidence.find("'bias'"), std::string::npos);
  EXPECT_NE(gap->where.find("node 'add_bias' (Add)"), std::string::npos) << gap->where;
}

TEST(OnnxModel, SniffAcceptsModelsAndRejectsOtherFormats) {
  for (const char* name : {"benign/onnx_mlp.onnx", "benign/onnx_if.onnx", "malicious/onnx_custom_domain.onnx",
                           "malformed/onnx_truncated.onnx", "onnx_external_ok/model.onnx"}) {
    EXPECT_TRUE(looks_like_onnx(test::read_file(test::fixture(name)))) << name;
  }
  EXPECT_FALSE(looks_like_onnx(test::read_file(test::fixture("malformed/onnx_garbage.onnx"))));
  EXPECT_FALSE(looks_like_onnx({}));
  const std::string others[] = {std::string("PK\x03\x04", 4), std::string("\x80\x02}q\x00.", 6), "GGUF\x03",
                                std::string("\x08\x01\x00\x00\x00\x00\x00\x00{}", 10), "{\"a\": 1}"};
  for (const auto& other : others) EXPECT_FALSE(looks_like_onnx(as_span(other))) << other;
}

// ---- bad input built here ---------------------------------------------------------------------

TEST(OnnxModel, EveryPrefixOfAModelIsHandled) {
  const Bytes whole = test::read_file(test::fixture("benign/onnx_if.onnx"));
  for (std::size_t n = 0; n < whole.size(); ++n) {
    const OnnxInfo info = analyze_onnx(std::span(whole.data(), n), {});
    if (!info.parsed) {
      EXPECT_NE(find_issue(info, "onnx.unreadable"), nullptr);
    }
    EXPECT_LE(info.issues.size(), kMaxIssuesPerFile);
  }
}

TEST(OnnxModel, GarbageNeverThrows) {
  std::uint32_t state = 12345;
  for (int round = 0; round < 200; ++round) {
    const Bytes bytes = test::pseudo_random_bytes(static_cast<std::size_t>(round * 7 % 300), state);
    const OnnxInfo info = analyze_onnx(bytes, {});
    if (!info.parsed) {
      EXPECT_NE(find_issue(info, "onnx.unreadable"), nullptr);
    }
  }
}

TEST(OnnxModel, ParsedProtobufWithoutGraphIsUnreadable) {
  onnx::ModelProto model;
  model.set_ir_version(8);
  const OnnxInfo info = analyze_model(model);
  EXPECT_TRUE(info.parsed);
  EXPECT_NE(find_issue(info, "onnx.unreadable"), nullptr);
}

TEST(OnnxModel, OverTwoGibibytesIsRefusedWithoutReading) {
  const std::size_t size = static_cast<std::size_t>(INT_MAX) + 1;
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(map, MAP_FAILED);
  const OnnxInfo info = analyze_onnx(std::span(static_cast<const std::uint8_t*>(map), size), {});
  ::munmap(map, size);
  EXPECT_FALSE(info.parsed);
  ASSERT_NE(find_issue(info, "onnx.unreadable"), nullptr);
  EXPECT_NE(find_issue(info, "onnx.unreadable")->evidence.find("2 GiB"), std::string::npos);
}

TEST(OnnxModel, DeepSubgraphNestingIsCappedAndReportedOnce) {
  OnnxOptions options;
  options.max_graph_depth = 8;
  const OnnxInfo info = analyze_model(nested_if_model(20), {}, options);
  ASSERT_TRUE(info.parsed);
  EXPECT_EQ(count_rule(info, "onnx.graph-too-deep"), 1u) << rules_of(info);
  EXPECT_EQ(find_issue(info, "onnx.graph-too-deep")->severity, core::Severity::Medium);
  EXPECT_EQ(info.nodes, 9u);  // main graph and 8 levels of If

  const OnnxInfo within = analyze_model(nested_if_model(20));
  EXPECT_TRUE(within.issues.empty()) << rules_of(within);
  EXPECT_EQ(within.nodes, 21u);

  // Deeper than protobuf's recursion limit: refused by the parser, reported, not crashed.
  const OnnxInfo beyond = analyze_model(nested_if_model(60));
  EXPECT_FALSE(beyond.parsed);
  EXPECT_NE(find_issue(beyond, "onnx.unreadable"), nullptr);
}

TEST(OnnxModel, EscapingLocationsInEveryForm) {
  const std::string escaping[] = {
      "../weights.bin", "a/../../weights.bin", "..\\..\\Windows\\win.ini", "C:\\secrets\\key.bin", "c:key.bin",
      "\\\\server\\share\\w.bin", "//server/share/w.bin", "/proc/self/environ", "sub/.. /../w.bin",
      std::string("..\0x/w.bin", 10)};
  for (const auto& location : escaping) {
    const OnnxInfo info = analyze_model(external_model(location));
    EXPECT_NE(find_issue(info, "onnx.external-data-escape"), nullptr) << location;
  }
  for (const std::string location : {"w.bin", "sub/../w.bin", "./data/w.bin", "..data/w.bin"}) {
    const OnnxInfo info = analyze_model(external_model(location));
    EXPECT_EQ(find_issue(info, "onnx.external-data-escape"), nullptr) << location;
  }
}

TEST(OnnxModel, EveryLocationEntryIsJudged) {
  auto model = external_model("w.bin");
  auto* entry = model.mutable_graph()->mutable_initializer(0)->add_external_data();
  entry->set_key("location");
  entry->set_value("../../etc/passwd");
  auto info = analyze_model(model);
  EXPECT_NE(find_issue(info, "onnx.external-data-escape"), nullptr);
}

TEST(OnnxModel, SymlinkOutOfTheModelFolderIsAnEscape) {
  TempDir outside;
  outside.write("secret.bin", 16);
  TempDir dir;
  fs::create_symlink(outside.path() / "secret.bin", dir.path() / "weights.bin");
  const OnnxInfo info = analyze_model(external_model("weights.bin"), dir.path());
  const FormatIssue* issue = find_issue(info, "onnx.external-data-escape");
  ASSERT_NE(issue, nullptr) << rules_of(info);
  EXPECT_NE(issue->evidence.find("symbolic link"), std::string::npos);

  // A link whose target is absent still points out of the folder.
  fs::create_symlink("/nonexistent/aegis/secret", dir.path() / "dangling.bin");
  EXPECT_NE(find_issue(analyze_model(external_model("dangling.bin"), dir.path()), "onnx.external-data-escape"),
            nullptr);

  // Lexically the same model is fine when nothing on disk says otherwise.
  EXPECT_EQ(find_issue(analyze_model(external_model("weights.bin")), "onnx.external-data-escape"), nullptr);
}

TEST(OnnxModel, MissingFileAndBadRangesAreReported) {
  TempDir dir;
  dir.write("w.bin", 16);
  EXPECT_TRUE(analyze_model(external_model("w.bin"), dir.path()).issues.empty());

  const OnnxInfo missing = analyze_model(external_model("absent.bin"), dir.path());
  const FormatIssue* gone = find_issue(missing, "onnx.external-data-missing");
  ASSERT_NE(gone, nullptr) << rules_of(missing);
  EXPECT_NE(gone->title.find("absent.bin"), std::string::npos);
  EXPECT_NE(gone->evidence.find("'W'"), std::string::npos);

  EXPECT_NE(find_issue(analyze_model(external_model("w.bin", "8"), dir.path()), "onnx.external-data-bounds"), nullptr);
  EXPECT_NE(find_issue(analyze_model(external_model("w.bin", "32", ""), dir.path()), "onnx.external-data-bounds"),
            nullptr);
  EXPECT_NE(find_issue(analyze_model(external_model("w.bin", "0x10"), dir.path()), "onnx.external-data-bounds"),
            nullptr);
  EXPECT_NE(find_issue(analyze_model(external_model("w.bin", "-4"), dir.path()), "onnx.external-data-bounds"),
            nullptr);
  EXPECT_NE(find_issue(analyze_model(external_model("w.bin", "0", "99999999999999999999"), dir.path()),
                       "onnx.external-data-bounds"),
            nullptr);
  // A range inside the file but of the wrong size for the tensor.
  EXPECT_NE(find_issue(analyze_model(external_model("w.bin", "0", "8"), dir.path()), "onnx.tensor-size-mismatch"),
            nullptr);
  EXPECT_NE(find_issue(analyze_model(external_model(""), dir.path()), "onnx.external-data-missing"), nullptr);
}

TEST(OnnxModel, EscapesInFunctionsAndTrainingGraphsAreFound) {
  auto model = base_model();
  add_node(model.mutable_graph(), "Twice", {"x"}, {"y"}, "call", "local.fn");
  auto* import = model.add_opset_import();
  import->set_domain("local.fn");
  import->set_version(1);
  auto* function = model.add_functions();
  function->set_name("Twice");
  function->set_domain("local.fn");
  function->add_input("X");
  function->add_output("Y");
  auto* function_import = function->add_opset_import();
  function_import->set_domain("");
  function_import->set_version(13);
  auto* constant = function->add_node();
  constant->set_op_type("Constant");
  constant->add_output("K");
  auto* value = constant->add_attribute();
  value->set_name("value");
  value->set_type(onnx::AttributeProto::TENSOR);
  add_external(value->mutable_t(), "K", "../fn_secret");
  auto* add = function->add_node();
  add->set_op_type("Add");
  add->add_input("X");
  add->add_input("K");
  add->add_output("Y");

  auto* training = model.add_training_info();
  auto* init_graph = training->mutable_initialization();
  init_graph->set_name("init");
  add_external(init_graph->add_initializer(), "T", "/train_secret");
  init_graph->add_output()->set_name("T");
  auto* algorithm = training->mutable_algorithm();
  algorithm->set_name("step");
  add_node(algorithm, "Add", {"x", "y"}, {"z"}, "uses_main_values");  // outer scope: the main graph
  algorithm->add_output()->set_name("z");

  const OnnxInfo info = analyze_model(model);
  ASSERT_TRUE(info.parsed);
  std::string where;
  for (const auto& issue : info.issues) {
    if (issue.rule == "onnx.external-data-escape") where += issue.where + "\n";
  }
  EXPECT_NE(where.find("function 'local.fn::Twice'"), std::string::npos) << where;
  EXPECT_NE(where.find("training_info[0] > initialization"), std::string::npos) << where;
  EXPECT_EQ(find_issue(info, "onnx.missing-initializer"), nullptr) << rules_of(info);
  // The domain is defined by the model's own function: low, not custom native code.
  const FormatIssue* local = find_issue(info, "onnx.local-function");
  ASSERT_NE(local, nullptr) << rules_of(info);
  EXPECT_EQ(local->severity, core::Severity::Low);
  EXPECT_NE(local->evidence.find("local.fn::Twice"), std::string::npos);
  EXPECT_EQ(find_issue(info, "onnx.custom-domain"), nullptr) << rules_of(info);
  EXPECT_EQ(info.functions, 1u);
  EXPECT_EQ(info.nodes, 4u);
}

TEST(OnnxModel, DomainsAreGraded) {
  auto contrib = base_model();
  add_node(contrib.mutable_graph(), "FusedGemm", {"x"}, {"y"}, "fused", "com.microsoft");
  const OnnxInfo ms = analyze_model(contrib);
  ASSERT_NE(find_issue(ms, "onnx.custom-domain"), nullptr) << rules_of(ms);
  EXPECT_EQ(find_issue(ms, "onnx.custom-domain")->severity, core::Severity::Medium);

  auto imported_only = base_model();
  add_node(imported_only.mutable_graph(), "Identity", {"x"}, {"y"});
  auto* import = imported_only.add_opset_import();
  import->set_domain("org.plugin");
  import->set_version(1);
  const OnnxInfo unused = analyze_model(imported_only);
  ASSERT_NE(find_issue(unused, "onnx.custom-domain"), nullptr) << rules_of(unused);
  EXPECT_NE(find_issue(unused, "onnx.custom-domain")->evidence.find("no node uses it"), std::string::npos);

  // "ai.onnx" spells the default domain; ai.onnx.ml operators are standard.
  auto aliases = base_model();
  add_node(aliases.mutable_graph(), "Relu", {"x"}, {"r"}, "relu", "ai.onnx");
  add_node(aliases.mutable_graph(), "Normalizer", {"r"}, {"y"}, "norm", "ai.onnx.ml");
  const OnnxInfo standard = analyze_model(aliases);
  EXPECT_TRUE(standard.issues.empty()) << rules_of(standard);
  EXPECT_EQ(standard.op_counts.at("Relu"), 1u);
  EXPECT_EQ(standard.op_counts.at("ai.onnx.ml::Normalizer"), 1u);
}

TEST(OnnxModel, OperatorsAreJudgedAgainstTheImportedOpset) {
  auto too_early = base_model(13);
  add_node(too_early.mutable_graph(), "LayerNormalization", {"x"}, {"y"}, "ln");  // opset 17 and later
  const OnnxInfo early = analyze_model(too_early);
  ASSERT_NE(find_issue(early, "onnx.unknown-operator"), nullptr) << rules_of(early);
  EXPECT_EQ(find_issue(early, "onnx.unknown-operator")->severity, core::Severity::Medium);

  auto newer = base_model(18);
  add_node(newer.mutable_graph(), "Col2Im", {"x"}, {"y"}, "col2im");  // newer than this build's registry
  EXPECT_TRUE(analyze_model(newer).issues.empty());

  auto unknown = base_model(18);
  add_node(unknown.mutable_graph(), "Col2Img", {"x"}, {"y"}, "typo");
  const OnnxInfo typo = analyze_model(unknown);
  ASSERT_NE(find_issue(typo, "onnx.unknown-operator"), nullptr);
  EXPECT_EQ(find_issue(typo, "onnx.unknown-operator")->severity, core::Severity::High);
  EXPECT_EQ(find_issue(typo, "onnx.unknown-operator")->kind, IssueClass::Code);
}

TEST(OnnxModel, TensorShapesAndDataMustAgree) {
  const auto with_initializer = [](const std::function<void(onnx::TensorProto*)>& fill) {
    auto model = base_model();
    auto* tensor = model.mutable_graph()->add_initializer();
    tensor->set_name("W");
    fill(tensor);
    add_node(model.mutable_graph(), "Add", {"x", "W"}, {"y"}, "add");
    return analyze_model(model);
  };
  EXPECT_TRUE(with_initializer([](onnx::TensorProto* t) {
                t->set_data_type(onnx::TensorProto::FLOAT);
                t->add_dims(2);
                t->set_raw_data(std::string(8, '\0'));
              }).issues.empty());
  EXPECT_NE(find_issue(with_initializer([](onnx::TensorProto* t) {
                         t->set_data_type(onnx::TensorProto::FLOAT);
                         t->add_dims(2);
                         t->set_raw_data(std::string(3, '\0'));
                       }),
                       "onnx.tensor-size-mismatch"),
            nullptr);
  EXPECT_NE(find_issue(with_initializer([](onnx::TensorProto* t) {
                         t->set_data_type(onnx::TensorProto::INT64);
                         t->add_dims(2);
                         t->add_int64_data(1);
                         t->add_int64_data(2);
                         t->add_int64_data(3);
                       }),
                       "onnx.tensor-size-mismatch"),
            nullptr);
  EXPECT_NE(find_issue(with_initializer([](onnx::TensorProto* t) {
                         t->set_data_type(onnx::TensorProto::FLOAT);
                         t->add_dims(-3);
                       }),
                       "onnx.oversized-tensor"),
            nullptr);
  EXPECT_NE(find_issue(with_initializer([](onnx::TensorProto* t) {
                         t->set_data_type(onnx::TensorProto::FLOAT);
                         t->add_dims(std::int64_t{1} << 62);
                         t->add_dims(std::int64_t{1} << 62);
                       }),
                       "onnx.oversized-tensor"),
            nullptr);

  OnnxOptions tight;
  tight.max_tensor_bytes = 4;
  auto model = base_model();
  auto* tensor = model.mutable_graph()->add_initializer();
  tensor->set_name("W");
  tensor->set_data_type(onnx::TensorProto::FLOAT);
  tensor->add_dims(2);
  tensor->set_raw_data(std::string(8, '\0'));
  add_node(model.mutable_graph(), "Add", {"x", "W"}, {"y"}, "add");
  EXPECT_NE(find_issue(analyze_model(model, {}, tight), "onnx.oversized-tensor"), nullptr);

  // A sparse initializer is densified by runtimes: its dense shape is what counts.
  auto sparse_model = base_model();
  auto* sparse = sparse_model.mutable_graph()->add_sparse_initializer();
  sparse->add_dims(std::int64_t{1} << 40);
  sparse->mutable_values()->set_name("S");
  sparse->mutable_values()->set_data_type(onnx::TensorProto::FLOAT);
  sparse->mutable_values()->add_dims(0);
  sparse->mutable_indices()->set_data_type(onnx::TensorProto::INT64);
  sparse->mutable_indices()->add_dims(0);
  add_node(sparse_model.mutable_graph(), "Add", {"x", "S"}, {"y"}, "add");
  const OnnxInfo sparse_info = analyze_model(sparse_model);
  ASSERT_NE(find_issue(sparse_info, "onnx.oversized-tensor"), nullptr) << rules_of(sparse_info);
  EXPECT_EQ(find_issue(sparse_info, "onnx.missing-initializer"), nullptr);
}

TEST(OnnxModel, ValuesMustBeDefinedInTheGraphOrAround) {
  auto model = base_model();
  auto* node = add_node(model.mutable_graph(), "If", {"x"}, {"y"}, "branch");
  auto* attribute = node->add_attribute();
  attribute->set_name("else_branch");
  attribute->set_type(onnx::AttributeProto::GRAPH);
  auto* sub = attribute->mutable_g();
  add_node(sub, "Add", {"x", "ghost"}, {"out"}, "sub_add");  // x from outside is fine, ghost is not
  add_node(sub, "Mul", {"ghost", "out"}, {"out2"}, "sub_mul");
  sub->add_output()->set_name("out2");
  sub->add_output()->set_name("never");
  const OnnxInfo info = analyze_model(model);
  ASSERT_EQ(count_rule(info, "onnx.missing-initializer"), 2u) << rules_of(info);
  EXPECT_NE(info.issues[0].evidence.find("'ghost'"), std::string::npos);
  EXPECT_NE(info.issues[0].where.find("node 'branch' (If) > else_branch > node 'sub_add' (Add)"), std::string::npos)
      << info.issues[0].where;
  EXPECT_NE(info.issues[1].title.find("'never'"), std::string::npos);
}

TEST(OnnxModel, IssuesAreCappedWithTheWorstKept) {
  auto model = base_model();
  for (int i = 0; i < 1000; ++i) {
    add_node(model.mutable_graph(), "Relu", {"undefined" + std::to_string(i)}, {"o" + std::to_string(i)});
  }
  add_external(model.mutable_graph()->add_initializer(), "W", "../../etc/passwd");
  const OnnxInfo info = analyze_model(model);
  ASSERT_EQ(info.issues.size(), kMaxIssuesPerFile);
  EXPECT_EQ(info.issues.front().rule, "onnx.external-data-escape");
  EXPECT_EQ(info.nodes, 1000u);
}

}  // namespace
}  // namespace aegis::formats
