// GGUF (v2, v3) validation the way ggml's loader reads a file, and a static review of the Jinja
// chat templates that GGUF files carry, since loaders render them (CVE-2024-34359).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::formats {

struct GgufTensor {
  std::string name;
  std::uint32_t n_dims = 0;
  std::vector<std::uint64_t> dims;
  std::uint32_t type = 0;    // ggml_type
  std::uint64_t offset = 0;  // relative to the start of the data section
};

// A string metadata value that a loader renders as a template (every key containing "chat_template").
struct GgufTemplate {
  std::string key;
  std::string text;
};

struct GgufProblem {
  // "magic", "version", "truncated", "count", "string", "value-type", "array-type", "array-depth",
  // "array-length", "duplicate-key", "alignment", "tensor-name", "duplicate-tensor", "n-dims",
  // "dims", "tensor-type", "tensor-offset", "layout", "tensor-bounds", "overlap"
  std::string kind;
  std::string detail;
  std::uint64_t offset = 0;  // byte offset in the file where the problem was seen
};

struct GgufInfo {
  std::uint32_t version = 0;
  std::uint64_t tensor_count = 0;
  std::uint64_t metadata_count = 0;
  std::uint32_t alignment = 32;      // general.alignment, or the default
  std::uint64_t data_offset = 0;     // start of the data section; 0 when the tensor infos were not all read
  std::vector<GgufTensor> tensors;
  std::vector<GgufTemplate> templates;
  std::vector<GgufProblem> problems;  // empty for a valid file; capped at 100
};

// Cheap sniff: the magic "GGUF".
bool looks_like_gguf(std::span<const std::uint8_t> data);

// Never throws on hostile input: everything wrong goes into `problems`.
GgufInfo validate_gguf(std::span<const std::uint8_t> data);

struct TemplateRisk {
  std::string kind;      // "dunder-attribute", "private-attribute", "dunder-string", "dunder-fragment",
                         // "import", "include", "gadget-chain", "dangerous-name", "request-config",
                         // "attr-filter", "dangerous-subscript"
  std::string excerpt;   // at most 120 bytes of the template around `offset`
  std::uint64_t offset = 0;
  std::string severity;  // "critical" or "high"
};

// Conservative static review of Jinja2 source: nothing is rendered or evaluated. A deny-list that
// grades and explains; an empty result means none of the known escape patterns, not "safe".
std::vector<TemplateRisk> review_jinja_template(std::string_view text);

}  // namespace aegis::formats
