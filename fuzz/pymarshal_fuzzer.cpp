// Fuzzes the marshal reader, the base64 decoder and the code summary, which must report and never throw.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "aegis/formats/pymarshal.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  const aegis::formats::MarshalResult result = aegis::formats::read_marshalled_code(bytes);
  if (result.code) aegis::formats::summarize_code(*result.code, 2000);
  const auto decoded = aegis::formats::decode_base64(std::string_view(reinterpret_cast<const char*>(data), size));
  if (decoded) aegis::formats::read_marshalled_code(*decoded);
  return 0;
}
