#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "aegis/formats/tf_graph.h"
#include "tensorflow_subset.pb.h"
#include "test_support.h"

namespace aegis::formats {
namespace {

using Bytes = std::vector<std::uint8_t>;
using core::Severity;

Bytes bytes_of(const google::protobuf::Message& message) {
  std::string text;
  message.SerializeToString(&text);
  return Bytes(text.begin(), text.end());
}

Bytes bytes_of(const std::string& text) { return Bytes(text.begin(), text.end()); }

std::vector<const FormatIssue*> with_rule(const TfInfo& info, const std::string& rule) {
  std::vector<const FormatIssue*> out;
  for (const auto& issue : info.issues)
    if (issue.rule == rule) out.push_back(&issue);
  return out;
}

const TfFunctionOps* function_named(const TfInfo& info, const std::string& name) {
  for (const auto& f : info.functions)
    if (f.function == name) return &f;
  return nullptr;
}

std::size_t count_of(const TfFunctionOps* f, const std::string& op) {
  if (!f) return 0;
  const auto it = f->op_counts.find(op);
  return it == f->op_counts.end() ? 0 : it->second;
}

// Builders over the generated messages.
tf::NodeDef* add_node(google::protobuf::RepeatedPtrField<tf::NodeDef>* nodes, const std::string& name, const std::string& op,
                      std::vector<std::string> inputs = {}) {
  tf::NodeDef* node = nodes->Add();
  node->set_name(name);
  node->set_op(op);
  for (auto& input : inputs) node->add_input(input);
  return node;
}

tf::NodeDef* add_const(google::protobuf::RepeatedPtrField<tf::NodeDef>* nodes, const std::string& name,
                       std::vector<std::string> values) {
  tf::NodeDef* node = add_node(nodes, name, "Const");
  tf::TensorProto* tensor = (*node->mutable_attr())["value"].mutable_tensor();
  tensor->set_dtype(tf::DT_STRING);
  for (auto& v : values) tensor->add_string_val(v);
  (*node->mutable_attr())["dtype"].set_type(tf::DT_STRING);
  return node;
}

void set_s(tf::NodeDef* node, const std::string& key, const std::string& value) {
  (*node->mutable_attr())[key].set_s(value);
}

tf::FunctionDef* add_function(tf::GraphDef& graph, const std::string& name) {
  tf::FunctionDef* f = graph.mutable_library()->add_function();
  f->mutable_signature()->set_name(name);
  return f;
}

TfInfo analyze_graph(const tf::GraphDef& graph) { return analyze_tf(bytes_of(graph), TfFileKind::GraphDef); }

// --- fixtures ---------------------------------------------------------------------------------

TEST(TfGraph, BenignSavedModelFixture) {
  const TfInfo info = analyze_tf(test::read_file(test::fixture("benign/tf_savedmodel_ok/saved_model.pb")), TfFileKind::SavedModel);
  ASSERT_TRUE(info.parsed);
  EXPECT_TRUE(info.issues.empty()) << info.issues.front().rule << ": " << info.issues.front().title;
  ASSERT_EQ(info.tags, std::vector<std::string>{"serve"});
  const TfFunctionOps* graph = function_named(info, "graph");
  ASSERT_NE(graph, nullptr);
  EXPECT_EQ(count_of(graph, "SaveV2"), 1u);
  EXPECT_EQ(count_of(graph, "RestoreV2"), 1u);
  EXPECT_EQ(count_of(graph, "MergeV2Checkpoints"), 1u);
  EXPECT_EQ(count_of(graph, "MatMul"), 1u);
  const TfFunctionOps* serve = function_named(info, "__inference_serve_123");
  ASSERT_NE(serve, nullptr);
  EXPECT_EQ(count_of(serve, "Relu"), 1u);
  EXPECT_NE(function_named(info, "__inference_signature_wrapper_456"), nullptr);
}

TEST(TfGraph, BenignKerasMetadataAndFingerprintFixtures) {
  const TfInfo keras =
      analyze_tf(test::read_file(test::fixture("benign/tf_savedmodel_ok/keras_metadata.pb")), TfFileKind::KerasMetadata);
  ASSERT_TRUE(keras.parsed);
  EXPECT_TRUE(keras.issues.empty());
  ASSERT_EQ(keras.keras_metadata_json.size(), 2u);
  EXPECT_NE(keras.keras_metadata_json[1].find("\"class_name\": \"Dense\""), std::string::npos);

  const TfInfo fp = analyze_tf(test::read_file(test::fixture("benign/tf_savedmodel_ok/fingerprint.pb")), TfFileKind::Fingerprint);
  ASSERT_TRUE(fp.parsed);
  EXPECT_TRUE(fp.issues.empty());
  EXPECT_NE(fp.fingerprint.find("saved_model_checksum=12204117239571233315"), std::string::npos) << fp.fingerprint;
  EXPECT_NE(fp.fingerprint.find("version=1"), std::string::npos);
}

TEST(TfGraph, BenignFrozenGraphFixture) {
  const Bytes bytes = test::read_file(test::fixture("benign/tf_frozen_ok.pb"));
  EXPECT_TRUE(looks_like_graphdef(bytes));
  const TfInfo info = analyze_tf(bytes, TfFileKind::GraphDef);
  ASSERT_TRUE(info.parsed);
  EXPECT_TRUE(info.issues.empty());
  ASSERT_EQ(info.functions.size(), 1u);
  EXPECT_EQ(count_of(&info.functions[0], "Softmax"), 1u);
}

TEST(TfGraph, ReadFileInFunctionFixture) {
  const TfInfo info =
      analyze_tf(test::read_file(test::fixture("malicious/tf_savedmodel_readfile/saved_model.pb")), TfFileKind::SavedModel);
  const auto found = with_rule(info, "tf.file-read");
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0]->severity, Severity::High);
  EXPECT_EQ(found[0]->kind, IssueClass::Code);
  EXPECT_NE(found[0]->title.find("ReadFile"), std::string::npos);
  EXPECT_NE(found[0]->evidence.find("\"/etc/passwd\""), std::string::npos) << found[0]->evidence;
  EXPECT_NE(found[0]->evidence.find("__inference_serve_77"), std::string::npos);
  EXPECT_EQ(found[0]->where, "meta_graphs[0]/library/function '__inference_serve_77'/node 'ReadFile'");
}

TEST(TfGraph, PyFuncFixture) {
  const TfInfo info =
      analyze_tf(test::read_file(test::fixture("malicious/tf_savedmodel_pyfunc/saved_model.pb")), TfFileKind::SavedModel);
  const auto found = with_rule(info, "tf.python-callback");
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0]->severity, Severity::Critical);
  EXPECT_NE(found[0]->evidence.find("token \"pyfunc_0\""), std::string::npos);
}

TEST(TfGraph, WriteFileAndMatchingFilesFixtures) {
  const TfInfo write =
      analyze_tf(test::read_file(test::fixture("malicious/tf_savedmodel_writefile/saved_model.pb")), TfFileKind::SavedModel);
  const auto w = with_rule(write, "tf.file-write");
  ASSERT_EQ(w.size(), 1u);
  EXPECT_NE(w[0]->evidence.find("/tmp/aegis-test.txt"), std::string::npos);
  EXPECT_NE(w[0]->evidence.find("aegis-test"), std::string::npos);

  const TfInfo match = analyze_tf(test::read_file(test::fixture("malicious/tf_frozen_matchingfiles.pb")), TfFileKind::GraphDef);
  const auto m = with_rule(match, "tf.file-read");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_NE(m[0]->title.find("MatchingFiles"), std::string::npos);
  EXPECT_NE(m[0]->evidence.find("/home/*/.ssh/id_*"), std::string::npos);
}

TEST(TfGraph, KerasLambdaFixtureHandsJsonOver) {
  const TfInfo info = analyze_tf(test::read_file(test::fixture("malicious/tf_savedmodel_keras_lambda/keras_metadata.pb")),
                                 TfFileKind::KerasMetadata);
  ASSERT_TRUE(info.parsed);
  const bool lambda = std::any_of(info.keras_metadata_json.begin(), info.keras_metadata_json.end(),
                                  [](const std::string& j) { return j.find("\"class_name\": \"Lambda\"") != std::string::npos; });
  EXPECT_TRUE(lambda);
}

TEST(TfGraph, MalformedFixtures) {
  const TfInfo truncated =
      analyze_tf(test::read_file(test::fixture("malformed/tf_truncated/saved_model.pb")), TfFileKind::SavedModel);
  EXPECT_FALSE(truncated.parsed);
  ASSERT_EQ(with_rule(truncated, "tf.unreadable").size(), 1u);
  EXPECT_EQ(truncated.issues[0].severity, Severity::High);
  EXPECT_EQ(truncated.issues[0].kind, IssueClass::Container);

  const Bytes garbage = test::read_file(test::fixture("malformed/tf_garbage.pb"));
  EXPECT_FALSE(looks_like_graphdef(garbage));
  const TfInfo info = analyze_tf(garbage, TfFileKind::GraphDef);
  EXPECT_FALSE(info.parsed);
  EXPECT_EQ(with_rule(info, "tf.unreadable").size(), 1u);
}

// --- ops and constants ------------------------------------------------------------------------

TEST(TfGraph, CountsOpsOfGraphAndFunctions) {
  tf::GraphDef graph;
  add_node(graph.mutable_node(), "x", "Placeholder");
  add_node(graph.mutable_node(), "a", "Relu", {"x"});
  add_node(graph.mutable_node(), "b", "Relu", {"a"});
  tf::FunctionDef* f = add_function(graph, "__inference_f_1");
  add_node(f->mutable_node_def(), "m", "MatMul", {"x", "x"});
  const TfInfo info = analyze_graph(graph);
  ASSERT_TRUE(info.parsed);
  EXPECT_TRUE(info.issues.empty());
  ASSERT_EQ(info.functions.size(), 2u);
  EXPECT_EQ(count_of(function_named(info, "graph"), "Relu"), 2u);
  EXPECT_EQ(count_of(function_named(info, "__inference_f_1"), "MatMul"), 1u);
}

TEST(TfGraph, ConstantFollowedThroughIdentityAndFunctionInputSyntax) {
  tf::GraphDef graph;
  tf::FunctionDef* f = add_function(graph, "fn");
  add_const(f->mutable_node_def(), "path", {"/root/.aws/credentials"});
  add_node(f->mutable_node_def(), "id", "Identity", {"path:output:0"});
  add_node(f->mutable_node_def(), "read", "ReadFile", {"id:output:0", "^path"});
  const TfInfo info = analyze_graph(graph);
  const auto found = with_rule(info, "tf.file-read");
  ASSERT_EQ(found.size(), 1u);
  EXPECT_NE(found[0]->evidence.find("Const 'path' = \"/root/.aws/credentials\""), std::string::npos) << found[0]->evidence;
}

TEST(TfGraph, PythonCallbacks) {
  for (const char* op : {"PyFunc", "PyFuncStateless", "EagerPyFunc"}) {
    tf::GraphDef graph;
    set_s(add_node(graph.mutable_node(), "cb", op), "token", "pyfunc_7");
    const TfInfo info = analyze_graph(graph);
    const auto found = with_rule(info, "tf.python-callback");
    ASSERT_EQ(found.size(), 1u) << op;
    EXPECT_EQ(found[0]->severity, Severity::Critical);
    EXPECT_NE(found[0]->evidence.find("pyfunc_7"), std::string::npos);
  }
}

TEST(TfGraph, CheckpointOpsOnlyWithEscapingConstantPath) {
  {
    tf::GraphDef graph;
    add_node(graph.mutable_node(), "prefix", "Placeholder");
    add_node(graph.mutable_node(), "save", "SaveV2", {"prefix", "names", "slices"});
    add_node(graph.mutable_node(), "restore", "RestoreV2", {"prefix", "names", "slices"});
    add_const(graph.mutable_node(), "part", {"_temp/part"});
    add_node(graph.mutable_node(), "join", "StringJoin", {"prefix", "part"});
    EXPECT_TRUE(analyze_graph(graph).issues.empty());
  }
  for (const std::string path : {"/etc/cron.d/job", "../../outside/ckpt", "C:\\Users\\x\\ckpt", "gs://bucket/ckpt"}) {
    tf::GraphDef graph;
    add_const(graph.mutable_node(), "prefix", {path});
    add_node(graph.mutable_node(), "save", "SaveV2", {"prefix:0"});
    const TfInfo info = analyze_graph(graph);
    const auto found = with_rule(info, "tf.checkpoint-path");
    ASSERT_EQ(found.size(), 1u) << path;
    EXPECT_EQ(found[0]->severity, Severity::High);
  }
  {
    tf::GraphDef graph;  // destination prefix of MergeV2Checkpoints is input 1
    add_node(graph.mutable_node(), "prefixes", "Placeholder");
    add_const(graph.mutable_node(), "dest", {"/var/tmp/../../etc/x"});
    add_node(graph.mutable_node(), "merge", "MergeV2Checkpoints", {"prefixes", "dest"});
    EXPECT_EQ(with_rule(analyze_graph(graph), "tf.checkpoint-path").size(), 1u);
  }
  {
    tf::GraphDef graph;  // '..' inside a name is not a path component
    add_const(graph.mutable_node(), "prefix", {"model..v2/variables"});
    add_node(graph.mutable_node(), "save", "SaveV2", {"prefix"});
    EXPECT_TRUE(analyze_graph(graph).issues.empty());
  }
}

TEST(TfGraph, ConditionalOps) {
  {
    tf::GraphDef graph;
    set_s(add_node(graph.mutable_node(), "p", "PrintV2"), "output_stream", "stderr");
    EXPECT_TRUE(analyze_graph(graph).issues.empty());
    set_s(add_node(graph.mutable_node(), "q", "PrintV2"), "output_stream", "file:///tmp/log");
    const TfInfo info = analyze_graph(graph);
    const auto found = with_rule(info, "tf.file-write");
    ASSERT_EQ(found.size(), 1u);
    EXPECT_NE(found[0]->evidence.find("file:///tmp/log"), std::string::npos);
  }
  {
    tf::GraphDef graph;
    tf::NodeDef* debug = add_node(graph.mutable_node(), "d", "DebugIdentity");
    auto* urls = (*debug->mutable_attr())["debug_urls"].mutable_list();
    urls->add_s("grpc://attacker.example:6064");
    urls->add_s("file:///tmp/dump");
    const TfInfo info = analyze_graph(graph);
    EXPECT_EQ(with_rule(info, "tf.network").size(), 1u);
    EXPECT_EQ(with_rule(info, "tf.file-write").size(), 1u);
    tf::GraphDef quiet;
    add_node(quiet.mutable_node(), "d", "DebugIdentity");
    EXPECT_TRUE(analyze_graph(quiet).issues.empty());
  }
  {
    tf::GraphDef graph;
    add_const(graph.mutable_node(), "empty", {""});
    add_node(graph.mutable_node(), "c", "CacheDatasetV2", {"ds", "empty", "cache"});
    EXPECT_TRUE(analyze_graph(graph).issues.empty());
    add_const(graph.mutable_node(), "file", {"/tmp/cache"});
    add_node(graph.mutable_node(), "c2", "CacheDatasetV2", {"ds", "file", "cache"});
    EXPECT_EQ(with_rule(analyze_graph(graph), "tf.file-write").size(), 1u);
  }
  {
    tf::GraphDef graph;
    set_s(add_node(graph.mutable_node(), "a", "DecodeProtoV2"), "descriptor_source", "local://");
    EXPECT_TRUE(analyze_graph(graph).issues.empty());
    set_s(add_node(graph.mutable_node(), "b", "DecodeProtoV2"), "descriptor_source", "/etc/descriptors.bin");
    EXPECT_EQ(with_rule(analyze_graph(graph), "tf.file-read").size(), 1u);
  }
}

TEST(TfGraph, NetworkAndCustomOps) {
  tf::GraphDef graph;
  add_const(graph.mutable_node(), "address", {"attacker.example:5050"});
  add_node(graph.mutable_node(), "ds", "DataServiceDatasetV4", {"id", "mode", "address"});
  add_node(graph.mutable_node(), "custom", "Addons>ImageProjectiveTransformV2");
  const TfInfo info = analyze_graph(graph);
  const auto net = with_rule(info, "tf.network");
  ASSERT_EQ(net.size(), 1u);
  EXPECT_NE(net[0]->evidence.find("attacker.example:5050"), std::string::npos);
  const auto custom = with_rule(info, "tf.custom-op");
  ASSERT_EQ(custom.size(), 1u);
  EXPECT_EQ(custom[0]->severity, Severity::Medium);
}

TEST(TfGraph, OpNamedByFunctionAttribute) {
  tf::GraphDef graph;
  tf::NodeDef* call = add_node(graph.mutable_node(), "call", "StatefulPartitionedCall", {"x"});
  (*call->mutable_attr())["f"].mutable_func()->set_name("ReadFile");
  tf::NodeDef* ok = add_node(graph.mutable_node(), "call2", "StatefulPartitionedCall", {"x"});
  (*ok->mutable_attr())["f"].mutable_func()->set_name("lib_fn");
  add_function(graph, "lib_fn");
  const TfInfo info = analyze_graph(graph);
  const auto found = with_rule(info, "tf.file-read");
  ASSERT_EQ(found.size(), 1u);
  EXPECT_NE(found[0]->title.find("ReadFile"), std::string::npos);
  EXPECT_NE(found[0]->evidence.find("function attr 'f'"), std::string::npos);
}

TEST(TfGraph, SavedModelMetaGraphsAssetsAndObjectGraph) {
  tf::SavedModel model;
  for (const char* tag : {"serve", "gpu"}) {
    tf::MetaGraphDef* meta = model.add_meta_graphs();
    meta->mutable_meta_info_def()->add_tags("serve");
    if (std::string(tag) == "gpu") meta->mutable_meta_info_def()->add_tags("gpu");
    add_node(meta->mutable_graph_def()->mutable_node(), "x", "Placeholder");
  }
  model.mutable_meta_graphs(1)->add_asset_file_def()->set_filename("../../../etc/shadow");
  model.mutable_meta_graphs(0)->add_asset_file_def()->set_filename("vocab.txt");
  auto* object = model.mutable_meta_graphs(0)->mutable_object_graph_def()->add_nodes()->mutable_user_object();
  object->set_identifier("_tf_keras_layer");
  object->set_metadata(R"({"class_name": "Lambda"})");
  const TfInfo info = analyze_tf(bytes_of(model), TfFileKind::SavedModel);
  ASSERT_TRUE(info.parsed);
  EXPECT_EQ(info.tags, (std::vector<std::string>{"serve", "serve,gpu"}));
  EXPECT_NE(function_named(info, "serve/graph"), nullptr);
  EXPECT_NE(function_named(info, "serve,gpu/graph"), nullptr);
  const auto assets = with_rule(info, "tf.asset-path");
  ASSERT_EQ(assets.size(), 1u);
  EXPECT_EQ(assets[0]->where, "meta_graphs[1]/asset_file_def[0]");
  ASSERT_EQ(info.keras_metadata_json.size(), 1u);
}

// --- hostile input ----------------------------------------------------------------------------

TEST(TfGraph, GarbageAndEmptyInputNeverThrow) {
  std::uint32_t state = 12345;
  for (int round = 0; round < 200; ++round) {
    const Bytes data = test::pseudo_random_bytes(static_cast<std::size_t>(round * 7 % 300), state);
    for (TfFileKind kind : {TfFileKind::SavedModel, TfFileKind::GraphDef, TfFileKind::KerasMetadata, TfFileKind::Fingerprint}) {
      const TfInfo info = analyze_tf(data, kind);
      EXPECT_LE(info.issues.size(), kMaxIssuesPerFile);
    }
    looks_like_graphdef(data);
  }
  const TfInfo empty = analyze_tf({}, TfFileKind::GraphDef);
  EXPECT_TRUE(empty.parsed);
  EXPECT_TRUE(empty.issues.empty());
  EXPECT_FALSE(looks_like_graphdef({}));
}

TEST(TfGraph, TruncatedAtEveryLength) {
  tf::GraphDef graph;
  add_const(graph.mutable_node(), "path", {"/etc/passwd"});
  add_node(graph.mutable_node(), "read", "ReadFile", {"path"});
  const Bytes full = bytes_of(graph);
  for (std::size_t n = 1; n < full.size(); ++n) {
    const TfInfo info = analyze_tf(std::span(full.data(), n), TfFileKind::GraphDef);
    EXPECT_TRUE(!info.parsed == !with_rule(info, "tf.unreadable").empty()) << n;
  }
  EXPECT_EQ(with_rule(analyze_tf(full, TfFileKind::GraphDef), "tf.file-read").size(), 1u);
}

TEST(TfGraph, DeepNestingIsRejectedNotOverflowed) {
  // NameAttrList -> attr -> AttrValue -> func -> ... 200 levels: over protobuf's recursion limit.
  tf::GraphDef graph;
  tf::NodeDef* node = add_node(graph.mutable_node(), "n", "PartitionedCall");
  tf::AttrValue* value = &(*node->mutable_attr())["f"];
  for (int i = 0; i < 200; ++i) {
    tf::NameAttrList* func = value->mutable_func();
    func->set_name("f" + std::to_string(i));
    value = &(*func->mutable_attr())["a"];
  }
  const TfInfo deep = analyze_graph(graph);
  EXPECT_FALSE(deep.parsed);
  EXPECT_EQ(with_rule(deep, "tf.unreadable").size(), 1u);

  // 100,000 nested unknown groups (start-group tags of field 9) inside a GraphDef.
  std::string groups;
  for (int i = 0; i < 100000; ++i) groups += static_cast<char>(0x4B);
  for (int i = 0; i < 100000; ++i) groups += static_cast<char>(0x4C);
  const TfInfo unknown = analyze_tf(bytes_of(groups), TfFileKind::GraphDef);
  EXPECT_FALSE(unknown.parsed);
  EXPECT_EQ(with_rule(unknown, "tf.unreadable").size(), 1u);
}

TEST(TfGraph, InvalidUtf8InStringFieldIsUnreadable) {
  tf::GraphDef graph;
  add_node(graph.mutable_node(), "ok", "Relu");
  Bytes data = bytes_of(graph);
  const auto it = std::search(data.begin(), data.end(), std::begin("Relu"), std::begin("Relu") + 4);
  ASSERT_NE(it, data.end());
  *it = 0xFF;
  const TfInfo info = analyze_tf(data, TfFileKind::GraphDef);
  EXPECT_FALSE(info.parsed);
  EXPECT_EQ(with_rule(info, "tf.unreadable").size(), 1u);
}

TEST(TfGraph, TinyMessagesOverTheMemoryBudgetAreNotParsed) {
  // 6 million empty NodeDefs: 12 MB on disk, over 1 GiB once parsed.
  std::string data;
  data.reserve(12'000'000);
  for (int i = 0; i < 6'000'000; ++i) data += std::string_view("\x0a\x00", 2);
  const TfInfo info = analyze_tf(bytes_of(data), TfFileKind::GraphDef);
  EXPECT_FALSE(info.parsed);
  const auto found = with_rule(info, "tf.graph-limit");
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0]->severity, Severity::Medium);
}

TEST(TfGraph, IssuesAreCappedKeepingTheMostSevere) {
  tf::GraphDef graph;
  for (int i = 0; i < 400; ++i) add_node(graph.mutable_node(), "custom" + std::to_string(i), "Ns>Op");
  set_s(add_node(graph.mutable_node(), "cb", "PyFunc"), "token", "pyfunc_0");
  const TfInfo info = analyze_graph(graph);
  ASSERT_EQ(info.issues.size(), kMaxIssuesPerFile);
  EXPECT_EQ(with_rule(info, "tf.python-callback").size(), 1u);
  EXPECT_EQ(info.issues.back().rule, "tf.graph-limit");
  EXPECT_NE(info.issues.back().evidence.find("202 further"), std::string::npos) << info.issues.back().evidence;
  EXPECT_EQ(count_of(function_named(info, "graph"), "Ns>Op"), 400u);
}

TEST(TfGraph, EscapesControlBytesInEvidence) {
  tf::GraphDef graph;
  add_const(graph.mutable_node(), "p", {std::string("/tmp/a\nb\x01", 9)});
  add_node(graph.mutable_node(), "w", "WriteFile", {"p", "p"});
  const TfInfo info = analyze_graph(graph);
  const auto found = with_rule(info, "tf.file-write");
  ASSERT_EQ(found.size(), 1u);
  EXPECT_NE(found[0]->evidence.find("/tmp/a\\x0ab\\x01"), std::string::npos) << found[0]->evidence;
  EXPECT_EQ(found[0]->evidence.find('\n'), std::string::npos);
}

// --- names, sniffing, table -------------------------------------------------------------------

TEST(TfGraph, KindFromName) {
  EXPECT_EQ(tf_kind_from_name("model/saved_model.pb"), TfFileKind::SavedModel);
  EXPECT_EQ(tf_kind_from_name("keras_metadata.pb"), TfFileKind::KerasMetadata);
  EXPECT_EQ(tf_kind_from_name("x\\fingerprint.pb"), TfFileKind::Fingerprint);
  EXPECT_EQ(tf_kind_from_name("frozen_inference_graph.PB"), TfFileKind::GraphDef);
  EXPECT_EQ(tf_kind_from_name("saved_model.pbtxt"), std::nullopt);
  EXPECT_EQ(tf_kind_from_name(".pb"), std::nullopt);
  EXPECT_EQ(tf_kind_from_name("model.onnx"), std::nullopt);
}

TEST(TfGraph, LooksLikeGraphDef) {
  tf::GraphDef graph;
  add_node(graph.mutable_node(), "input", "Placeholder");
  EXPECT_TRUE(looks_like_graphdef(bytes_of(graph)));
  tf::SavedModel model;
  model.set_saved_model_schema_version(1);
  *model.add_meta_graphs()->mutable_graph_def() = graph;
  EXPECT_FALSE(looks_like_graphdef(bytes_of(model)));
  EXPECT_FALSE(looks_like_graphdef(bytes_of(std::string("PK\x03\x04 zip", 8))));
  EXPECT_FALSE(looks_like_graphdef(bytes_of(std::string("\x0a\x05\x0a\x03\x01\x02\x03", 7))));
}

TEST(TfGraph, OpTableMatchesDataFile) {
  std::ifstream in(test::source_dir() / "data/scan/tf_ops.txt", std::ios::binary);
  ASSERT_TRUE(in) << "data/scan/tf_ops.txt";
  const std::string file((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string_view table = tf_op_table();
  if (!table.empty() && table.front() == '\n') table.remove_prefix(1);
  EXPECT_EQ(table, file);
}

}  // namespace
}  // namespace aegis::formats
