// Fuzzes the ONNX sniff and analyser, which must report and never throw or crash. The second
// call gives a model folder that does not exist, so the on-disk checks run without reading files.
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <span>

#include "aegis/formats/onnx_model.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  aegis::formats::looks_like_onnx(bytes);
  aegis::formats::analyze_onnx(bytes, {});
  aegis::formats::OnnxOptions tight;
  tight.max_tensor_bytes = 1024;
  tight.max_graph_depth = 2;
  aegis::formats::analyze_onnx(bytes, "/nonexistent/aegis-onnx-fuzz", tight);
  return 0;
}
