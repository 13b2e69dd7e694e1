// Fuzzes the TensorFlow analyser over all four file kinds, the GraphDef sniff and the name mapping;
// each must report and never throw or crash.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include <google/protobuf/stubs/logging.h>

#include "aegis/formats/tf_graph.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // protobuf logs each invalid UTF-8 string it rejects
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using aegis::formats::TfFileKind;
  const std::span<const std::uint8_t> bytes(data, size);
  aegis::formats::looks_like_graphdef(bytes);
  aegis::formats::tf_kind_from_name(std::string_view(reinterpret_cast<const char*>(data), size));
  for (TfFileKind kind : {TfFileKind::SavedModel, TfFileKind::GraphDef, TfFileKind::KerasMetadata, TfFileKind::Fingerprint}) {
    const aegis::formats::TfInfo info = aegis::formats::analyze_tf(bytes, kind);
    if (info.issues.size() > aegis::formats::kMaxIssuesPerFile) __builtin_trap();
  }
  return 0;
}
