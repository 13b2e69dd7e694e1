// Checks a safetensors file the way the reference reader does (header bound, dtypes, shapes,
// offsets that tile the data buffer exactly), collecting every problem instead of stopping at one.
#include "aegis/formats/safetensors.h"

#include "aegis/core/json_shape.h"

#include <algorithm>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string_view>

#include <nlohmann/json.hpp>

namespace aegis::formats {
namespace {

constexpr std::uint64_t kMaxHeaderLength = 100'000'000;  // the reference reader's MAX_HEADER_SIZE
constexpr int kMaxJsonDepth = 64;                        // nlohmann's parser recurses once per level
constexpr std::size_t kMaxProblems = 1000;
// Far above any real model (about ten values per tensor), far below what would exhaust memory.
constexpr std::uint64_t kMaxJsonValues = 4'000'000;

// Bits per element of every dtype the format defines; sub-byte types pack tightly.
std::optional<std::uint64_t> dtype_bits(std::string_view dtype) {
  static const std::map<std::string_view, std::uint64_t> bits = {
      {"BOOL", 8},     {"U8", 8},          {"I8", 8},          {"F8_E5M2", 8},  {"F8_E4M3", 8},
      {"F8_E8M0", 8},  {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"I16", 16},     {"U16", 16},
      {"F16", 16},     {"BF16", 16},       {"I32", 32},        {"U32", 32},     {"F32", 32},
      {"I64", 64},     {"U64", 64},        {"F64", 64},        {"C64", 64},     {"F4", 4},
      {"F6_E2M3", 6},  {"F6_E3M2", 6},
  };
  auto it = bits.find(dtype);
  if (it == bits.end()) return std::nullopt;
  return it->second;
}

class ProblemLog {
 public:
  explicit ProblemLog(std::vector<SafetensorsProblem>& problems) : problems_(problems) {}
  void add(std::string kind, std::string tensor, std::string detail) {
    if (problems_.size() < kMaxProblems) problems_.push_back({std::move(kind), std::move(tensor), std::move(detail)});
  }

 private:
  std::vector<SafetensorsProblem>& problems_;
};

std::optional<std::uint64_t> as_u64(const nlohmann::json& value) {
  if (value.is_number_unsigned()) return value.get<std::uint64_t>();
  if (value.is_number_integer() && value.get<std::int64_t>() >= 0) return static_cast<std::uint64_t>(value.get<std::int64_t>());
  return std::nullopt;
}

// Reads one tensor entry; returns whether its offsets place it inside the buffer, so that the
// tiling check can still account for a tensor whose dtype or shape is wrong.
bool read_tensor(const std::string& name, const nlohmann::json& entry, std::uint64_t buffer_size, ProblemLog& log,
                 SafetensorsTensor& tensor) {
  tensor.name = name;
  if (!entry.is_object()) {
    log.add("json", name, "tensor entry is not an object");
    return false;
  }
  std::optional<std::uint64_t> bits;
  auto dtype = entry.find("dtype");
  if (dtype == entry.end() || !dtype->is_string()) {
    log.add("dtype", name, "missing or non-string dtype");
  } else {
    tensor.dtype = dtype->get<std::string>();
    bits = dtype_bits(tensor.dtype);
    if (!bits) {
      log.add("dtype", name, "unknown dtype '" + tensor.dtype + "'");
    }
  }

  std::uint64_t elements = 1;
  bool elements_known = true;
  auto shape = entry.find("shape");
  if (shape == entry.end() || !shape->is_array()) {
    log.add("shape", name, "missing shape, or shape is not a list");
    elements_known = false;
  } else {
    for (const auto& dim : *shape) {
      auto size = as_u64(dim);
      if (!size) {
        log.add("shape", name, "shape holds something other than a non-negative integer");
        elements_known = false;
        break;
      }
      tensor.shape.push_back(*size);
      if (elements != 0 && *size > std::numeric_limits<std::uint64_t>::max() / elements) {
        log.add("shape", name, "element count overflows 64 bits");
        elements_known = false;
        break;
      }
      elements *= *size;
    }
  }

  auto offsets = entry.find("data_offsets");
  std::optional<std::uint64_t> begin, end;
  if (offsets != entry.end() && offsets->is_array() && offsets->size() == 2) {
    begin = as_u64((*offsets)[0]);
    end = as_u64((*offsets)[1]);
  }
  if (!begin || !end) {
    log.add("offsets", name, "data_offsets is not a pair of non-negative integers");
    return false;
  }
  tensor.begin = *begin;
  tensor.end = *end;
  if (tensor.end < tensor.begin) {
    log.add("offsets", name, "data_offsets end before they begin");
    return false;
  }
  if (tensor.end > buffer_size) {
    log.add("offsets", name, "data_offsets reach " + std::to_string(tensor.end) + ", past the " +
                                 std::to_string(buffer_size) + "-byte data buffer");
    return false;
  }
  if (bits && elements_known) {
    if (elements > std::numeric_limits<std::uint64_t>::max() / *bits) {
      log.add("shape", name, "byte size overflows 64 bits");
    } else {
      const std::uint64_t total_bits = elements * *bits;
      if (total_bits % 8 != 0) {
        log.add("size", name, "sub-byte tensor does not fill a whole number of bytes");
      } else if (total_bits / 8 != tensor.end - tensor.begin) {
        log.add("size", name, "shape and dtype need " + std::to_string(total_bits / 8) + " bytes, data_offsets span " +
                                  std::to_string(tensor.end - tensor.begin));
      }
    }
  }
  return true;
}

}  // namespace

bool looks_like_safetensors(std::span<const std::uint8_t> data) {
  if (data.size() < 10) return false;
  std::uint64_t length = 0;
  for (int i = 7; i >= 0; --i) length = (length << 8) | data[static_cast<std::size_t>(i)];
  if (length < 2 || data[8] != '{') return false;
  // A header length past the limit still means safetensors when a JSON key follows, so that the
  // validator (not "unknown format") explains what is wrong with it.
  return length <= kMaxHeaderLength || data[9] == '"';
}

SafetensorsInfo validate_safetensors(std::span<const std::uint8_t> data) {
  SafetensorsInfo info;
  ProblemLog log(info.problems);
  if (data.size() < 8) {
    log.add("header-length", "", "file is shorter than the 8-byte header length");
    return info;
  }
  for (int i = 7; i >= 0; --i) info.header_length = (info.header_length << 8) | data[static_cast<std::size_t>(i)];
  if (info.header_length > kMaxHeaderLength) {
    log.add("header-length", "", "header length " + std::to_string(info.header_length) + " is beyond the 100 MB limit");
    return info;
  }
  if (info.header_length > data.size() - 8) {
    log.add("header-length", "", "header length " + std::to_string(info.header_length) + " runs past the end of the file");
    return info;
  }
  const std::uint64_t buffer_size = data.size() - 8 - info.header_length;
  std::string_view header(reinterpret_cast<const char*>(data.data() + 8), static_cast<std::size_t>(info.header_length));
  if (header.empty() || header.front() != '{') {
    log.add("json", "", "header does not start with '{'");
    return info;
  }
  const core::JsonShape shape = core::measure_json(header, kMaxJsonDepth);
  if (shape.depth > kMaxJsonDepth) {
    log.add("depth", "", "JSON header nests deeper than " + std::to_string(kMaxJsonDepth) + " levels");
    return info;
  }
  if (shape.values > kMaxJsonValues) {
    log.add("json", "", "JSON header holds more than " + std::to_string(kMaxJsonValues) + " values; not checked");
    return info;
  }

  // Readers disagree on which of two equal keys wins, so a repeated top-level key is a problem in itself.
  std::set<std::string> top_keys;
  std::vector<std::string> repeated;
  nlohmann::json::parser_callback_t watch_keys = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      if (!top_keys.insert(parsed.get<std::string>()).second && repeated.size() < 100) repeated.push_back(parsed.get<std::string>());
    }
    return true;
  };
  const nlohmann::json document = nlohmann::json::parse(header.begin(), header.end(), watch_keys, false);
  if (document.is_discarded()) {
    log.add("json", "", "header is not valid JSON (or not UTF-8)");
    return info;
  }
  if (!document.is_object()) {
    log.add("json", "", "header is not a JSON object");
    return info;
  }
  for (const auto& key : repeated) log.add("json", key, "key appears more than once");

  std::vector<SafetensorsTensor> placed;
  for (const auto& [name, value] : document.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) {
        log.add("metadata", "", "__metadata__ is not an object");
        continue;
      }
      info.metadata_entries = value.size();
      for (const auto& [key, item] : value.items()) {
        if (!item.is_string()) log.add("metadata", "", "metadata value for '" + key + "' is not a string");
      }
      continue;
    }
    SafetensorsTensor tensor;
    const bool placeable = read_tensor(name, value, buffer_size, log, tensor);
    info.tensors.push_back(tensor);
    if (placeable) placed.push_back(tensor);
  }

  // Sorted by offset, the tensors must tile the buffer: each starts where the previous ended.
  std::sort(placed.begin(), placed.end(), [](const SafetensorsTensor& a, const SafetensorsTensor& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  std::uint64_t reach = 0;
  std::string reach_owner;
  for (const auto& tensor : placed) {
    if (tensor.begin < reach) {
      log.add("overlap", tensor.name, "shares bytes with '" + reach_owner + "'");
    } else if (tensor.begin > reach) {
      log.add("gap", tensor.name, std::to_string(tensor.begin - reach) + " unaccounted bytes before it");
    }
    if (tensor.end > reach) {
      reach = tensor.end;
      reach_owner = tensor.name;
    }
  }
  if (reach < buffer_size) {
    log.add("gap", "", std::to_string(buffer_size - reach) + " unaccounted bytes at the end of the data buffer");
  }
  return info;
}

}  // namespace aegis::formats
