// The aggregator's YAML settings (federation.yaml): any bytes give a config or a core::Error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "aegis/core/error.h"
#include "aegis/federated/federated.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    aegis::federated::parse_federation_config(std::string(reinterpret_cast<const char*>(data), size), "/fuzz", "fuzz.yaml");
  } catch (const aegis::core::Error&) {
  }
  return 0;
}
