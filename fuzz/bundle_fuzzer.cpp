// Fuzzes the signature-bundle and statement parsers: hostile bundles must end in core::Error (a
// failed verification), never in a crash, a hang or an unbounded allocation.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "aegis/core/error.h"
#include "aegis/provenance/signature.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    auto bundle = aegis::provenance::parse_bundle(text);
    aegis::provenance::parse_statement(bundle.payload);
  } catch (const aegis::core::Error&) {
  }
  try {
    aegis::provenance::parse_statement(text);
  } catch (const aegis::core::Error&) {
  }
  return 0;
}
