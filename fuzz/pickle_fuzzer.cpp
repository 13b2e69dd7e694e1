// libFuzzer target for the pickle virtual machine: any bytes, analysed with tight limits so that
// the fuzzer explores opcodes rather than memory, and with the defaults on small inputs.
#include <cstddef>
#include <cstdint>
#include <span>

#include "aegis/formats/pickle.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  (void)aegis::formats::looks_like_pickle(bytes);

  aegis::formats::PickleLimits tight;
  tight.max_memo_entries = 1u << 12;
  tight.max_stack_depth = 1u << 12;
  tight.max_container_items_kept = 2;
  tight.max_string_kept = 16;
  tight.max_nested_depth = 2;
  tight.max_records = 64;
  const auto report = aegis::formats::analyze_pickle(bytes, tight);
  if (report.bytes_consumed > size) __builtin_trap();
  if (report.malformed && report.malformed_offset > size) __builtin_trap();

  if (size < 4096) (void)aegis::formats::analyze_pickle(bytes);
  return 0;
}
