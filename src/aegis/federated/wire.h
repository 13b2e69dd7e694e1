// The aggregator-participant conversation over HTTPS (internal to federated/): the endpoints, the
// headers that carry a round's identity, and float vectors as raw little-endian bytes.
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/provenance/manifest.h"

namespace aegis::federated::wire {

static_assert(std::endian::native == std::endian::little, "the wire format is little-endian; add byte swapping for this host");

inline constexpr const char* kHello = "/v1/hello";   // POST JSON {samples, model_sha256}: join the federation
inline constexpr const char* kTask = "/v1/task";     // GET, long-poll: what the aggregator wants from this participant now
inline constexpr const char* kSubmit = "/v1/submit"; // POST: the answer to a task

inline constexpr const char* kAction = "x-aegis-action";        // wait | train | share | masked | unmask | done
inline constexpr const char* kRound = "x-aegis-round";
inline constexpr const char* kRoundId = "x-aegis-round-id";     // fresh random per round: binds every message to it
inline constexpr const char* kThreshold = "x-aegis-threshold";  // secure aggregation: t of the round's n
inline constexpr const char* kSelected = "x-aegis-selected";    // participants selected in the round (fixed-point range)
inline constexpr const char* kSamples = "x-aegis-samples";      // local samples behind an update (FedAvg weight)

inline std::string floats_to_bytes(std::span<const float> values) {
  std::string bytes(values.size() * sizeof(float), '\0');
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  return bytes;
}

// False when the size is not a whole number of floats.
inline bool bytes_to_floats(std::string_view bytes, std::vector<float>& values) {
  if (bytes.size() % sizeof(float) != 0) return false;
  values.resize(bytes.size() / sizeof(float));
  if (!bytes.empty()) std::memcpy(values.data(), bytes.data(), bytes.size());
  return true;
}

inline std::string to_string_view_bytes(const std::vector<std::uint8_t>& bytes) {
  return std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size());
}

inline std::span<const std::uint8_t> as_bytes(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

// The sha256 of the model file, hex: aggregator and participants must train the same architecture.
inline std::string model_sha256(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::Error("cannot read the model '" + path.string() + "'", "check the path of the federation's TorchScript file");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  const auto text = bytes.str();
  return provenance::to_hex(provenance::sha256(text.data(), text.size()));
}

}  // namespace aegis::federated::wire
