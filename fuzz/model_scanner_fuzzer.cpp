// Fuzzes the whole scan path: sniffing, containers opened inside containers, and the pickle
// machine behind them, with small limits so that each input stays fast.
#include <cstddef>
#include <cstdint>
#include <span>

#include "aegis/scan/scan.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const aegis::scan::ModelScanner scanner = [] {
    aegis::scan::ScanOptions options;
    options.threads = 1;
    options.max_container_depth = 3;
    options.zip_limits.max_inflated_size = 1 << 22;
    options.archive_limits.max_entry_size = 1 << 22;
    options.archive_limits.max_total_size = 1 << 24;
    options.archive_limits.max_entries = 64;
    options.pickle_limits.max_memo_entries = 1 << 16;
    options.pickle_limits.max_stack_depth = 1 << 16;
    options.hdf5_limits.cpu_seconds = 2;   // libFuzzer's -timeout is 10 s
    options.hdf5_limits.wall_seconds = 4;
    return aegis::scan::ModelScanner(aegis::scan::CallablePolicy{}, options);
  }();
  // The protobuf formats are told by name: vary the name so that every reader gets inputs.
  static constexpr const char* kNames[] = {"fuzz-input", "saved_model.pb", "model.onnx", "keras_metadata.pb",
                                           "fingerprint.pb", "frozen_graph.pb"};
  auto result = scanner.scan_bytes(std::span<const std::uint8_t>(data, size), kNames[size % 6]);
  return result.files.size() == 1 ? 0 : -1;
}
