// Fuzzes the safetensors validator, which must report and never throw.
#include <cstddef>
#include <cstdint>
#include <span>

#include "aegis/formats/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  aegis::formats::looks_like_safetensors(bytes);
  aegis::formats::validate_safetensors(bytes);
  return 0;
}
