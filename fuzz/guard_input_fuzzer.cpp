// libFuzzer target for the input guard: the bytes are scanned as a prompt (normalisation, decoders,
// signatures, the shipped model) and the promises scan() makes are checked (score in 0..1, evidence
// inside the input, a flag only at or above a tier's threshold); the same bytes are also read as a
// signature rule file and as a model file, which must either parse or throw core::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "aegis/core/error.h"
#include "aegis/guard/input_guard.h"

namespace {

const aegis::guard::InputGuard& guard() {
  static const aegis::guard::InputGuard instance{aegis::guard::InputGuardOptions{}};
  return instance;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto verdict = guard().scan(text);
  if (!(verdict.score >= 0 && verdict.score <= 1)) std::abort();
  for (const auto& e : verdict.evidence)
    if (e.begin > e.end || e.end > size) std::abort();
  if (verdict.flagged && verdict.score <= 0) std::abort();
  try {
    (void)aegis::guard::parse_signature_rules(text, "fuzz.toml");
  } catch (const aegis::core::Error&) {
  }
  try {
    (void)aegis::guard::LinearModel::deserialize(text, "fuzz.bin");
  } catch (const aegis::core::Error&) {
  }
  return 0;
}
