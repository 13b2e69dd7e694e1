// Fuzzes the GGUF validator and the chat-template review, which must report and never throw.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "aegis/formats/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> bytes(data, size);
  aegis::formats::looks_like_gguf(bytes);
  const aegis::formats::GgufInfo info = aegis::formats::validate_gguf(bytes);
  for (const auto& chat_template : info.templates) aegis::formats::review_jinja_template(chat_template.text);
  aegis::formats::review_jinja_template(std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
