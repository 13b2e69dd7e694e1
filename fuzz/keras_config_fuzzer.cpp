// Fuzzes the Keras model-config review (JSON walk, Lambda decoding, module checks), which must
// report and never throw.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "aegis/formats/keras_config.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  aegis::formats::review_keras_config(text, "config.json");
  return 0;
}
