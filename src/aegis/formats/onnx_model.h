// Static review of ONNX models (ModelProto): external-data paths that reach outside the model's
// folder, operator domains that make runtimes load native kernels, unknown or shadowed operators,
// and tensors or graphs whose declared structure is inconsistent or over budget. Nothing is run.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "aegis/formats/issue.h"

namespace aegis::formats {

struct OnnxOptions {
  std::uint64_t max_tensor_bytes = 4ull << 30;  // a declared tensor bigger than this is "oversized"
  std::size_t max_graph_depth = 32;             // subgraph nesting (If/Loop/Scan bodies) below the main graph
};

struct OnnxInfo {
  std::int64_t ir_version = 0;
  std::string producer;  // producer_name, with producer_version after a space when present
  std::vector<std::pair<std::string, std::int64_t>> opsets;  // the model's opset_import, as written
  std::size_t nodes = 0;         // every node: main graph, subgraphs, functions, training graphs
  std::size_t initializers = 0;  // dense and sparse, in every graph
  std::size_t functions = 0;     // model-local FunctionProtos
  std::map<std::string, std::size_t> op_counts;  // "domain::op", or "op" for the standard domain
  std::vector<std::string> external_files;       // distinct external-data locations, control bytes escaped
  std::vector<FormatIssue> issues;               // capped at kMaxIssuesPerFile
  bool parsed = false;                           // the bytes parsed as a ModelProto
};

// Cheap sniff: the first protobuf fields are well-formed ModelProto fields (ir_version, graph,
// opset_import...). Reads at most a few dozen bytes of field headers.
bool looks_like_onnx(std::span<const std::uint8_t> data);

// Never throws. `model_dir` is the folder holding the .onnx file, used to check external-data
// files; leave it empty when the model came out of an archive (paths are then checked lexically).
OnnxInfo analyze_onnx(std::span<const std::uint8_t> data, const std::filesystem::path& model_dir,
                      const OnnxOptions& options = {});

}  // namespace aegis::formats
