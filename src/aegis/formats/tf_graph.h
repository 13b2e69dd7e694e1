// TensorFlow model files: SavedModel (saved_model.pb), frozen graphs (GraphDef *.pb), Keras'
// keras_metadata.pb and fingerprint.pb. Parsed with protobuf into Aegis' own subset of
// TensorFlow's messages (proto/tensorflow_subset.proto); nothing is loaded into TensorFlow or run.
// Every op of the top-level graph and of every library function is counted, and ops that run
// Python, touch files or reach the network when the graph runs are reported as FormatIssues
// (rule ids "tf.*"), with the string constants that feed them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "aegis/formats/issue.h"

namespace aegis::formats {

enum class TfFileKind { SavedModel, GraphDef, KerasMetadata, Fingerprint };

struct TfFunctionOps {
  // "graph" for a top-level graph, else the FunctionDef's signature name. When a SavedModel has
  // several meta graphs, prefixed with the meta graph's tags and a slash: "serve,gpu/graph".
  std::string function;
  std::map<std::string, std::size_t> op_counts;  // op name -> number of nodes
};

struct TfInfo {
  bool parsed = false;  // the protobuf message parsed (false also when it was not tried: too large)
  TfFileKind kind = TfFileKind::GraphDef;
  // SavedModel: one entry per MetaGraphDef, its tags joined with ',' (for example "serve").
  std::vector<std::string> tags;
  std::vector<TfFunctionOps> functions;
  // KerasMetadata: each node's non-empty metadata JSON. SavedModel: the metadata JSON of the
  // object graph's user objects, where Keras before keras_metadata.pb kept its layer configs.
  // For the Keras reviewer; bounded in count and bytes.
  std::vector<std::string> keras_metadata_json;
  std::string fingerprint;  // Fingerprint: one line, "saved_model_checksum=... version=N"
  std::vector<FormatIssue> issues;  // at most kMaxIssuesPerFile, the most severe kept
};

// Never throws: unreadable, over-limit or hostile input is reported in `issues`.
TfInfo analyze_tf(std::span<const std::uint8_t> data, TfFileKind kind);

// By base name: saved_model.pb, keras_metadata.pb, fingerprint.pb; any other *.pb is taken for a
// frozen GraphDef. nullopt for other names (saved_model.pbtxt, text format, is not handled).
std::optional<TfFileKind> tf_kind_from_name(std::string_view file_name);

// Cheap check for a *.pb of unknown name: the first top-level fields are those of a GraphDef
// and the first node starts with a name or an op. Reads at most the first 64 KiB.
bool looks_like_graphdef(std::span<const std::uint8_t> data);

// The dangerous-op table, data/scan/tf_ops.txt ("OpName category severity" lines, '#' comments).
std::string_view tf_op_table();

}  // namespace aegis::formats

namespace aegis::formats {
// protobuf logs one line per invalid UTF-8 string it rejects in a hostile file; the scanner reports
// those files itself, so it switches the library's logging off (process-wide) once.
void silence_protobuf_logging();
}  // namespace aegis::formats
