// argon2id password hashes in the PHC string format, over libargon2 and OpenSSL's random numbers.
#include "aegis/web/password_hash.h"

#include <argon2.h>
#include <openssl/rand.h>

#include <array>
#include <charconv>
#include <optional>
#include <vector>

#include "aegis/core/error.h"

namespace aegis::web {

namespace {

constexpr std::size_t kSaltBytes = 16;
constexpr std::size_t kHashBytes = 32;

// A stored hash names its own cost. One written by an attacker (a hand-edited store) could ask for
// terabytes of memory or hours of work on every login: refuse such hashes instead of obeying them.
constexpr std::uint32_t kMaxMemoryKib = 4u * 1024 * 1024;  // 4 GiB
constexpr std::uint32_t kMaxIterations = 1000;
constexpr std::uint32_t kMaxParallelism = 64;

struct PhcParams {
  std::uint32_t memory_kib = 0, iterations = 0, parallelism = 0;
};

bool read_number(std::string_view text, std::uint32_t& out) {
  if (text.empty() || text.size() > 10) return false;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), out);
  return ec == std::errc() && end == text.data() + text.size();
}

// "$argon2id$v=19$m=65536,t=3,p=1$salt$hash" -> its m, t, p; nullopt for anything else.
std::optional<PhcParams> parse_phc(std::string_view encoded) {
  constexpr std::string_view kPrefix = "$argon2id$v=19$";
  if (encoded.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  std::string_view rest = encoded.substr(kPrefix.size());
  const std::size_t end = rest.find('$');
  if (end == std::string_view::npos) return std::nullopt;
  std::string_view params = rest.substr(0, end);
  PhcParams parsed;
  std::array<std::pair<char, std::uint32_t*>, 3> fields = {
      {{'m', &parsed.memory_kib}, {'t', &parsed.iterations}, {'p', &parsed.parallelism}}};
  for (std::size_t i = 0; i < fields.size(); ++i) {
    const std::size_t comma = params.find(',');
    const std::string_view field = params.substr(0, comma);
    if (field.size() < 3 || field[0] != fields[i].first || field[1] != '=') return std::nullopt;
    if (!read_number(field.substr(2), *fields[i].second)) return std::nullopt;
    if ((i + 1 < fields.size()) != (comma != std::string_view::npos)) return std::nullopt;
    params = comma == std::string_view::npos ? std::string_view() : params.substr(comma + 1);
  }
  return parsed;
}

}  // namespace

std::string hash_password(std::string_view password, const Argon2Params& params) {
  std::array<unsigned char, kSaltBytes> salt{};
  if (RAND_bytes(salt.data(), static_cast<int>(salt.size())) != 1)
    throw core::Error("cannot hash the password: OpenSSL found no source of random numbers for its salt",
                      "check that the system's random device (/dev/urandom, getrandom) is available");
  const std::size_t length = argon2_encodedlen(params.iterations, params.memory_kib, params.parallelism,
                                               static_cast<std::uint32_t>(salt.size()), kHashBytes, Argon2_id);
  std::vector<char> encoded(length + 1, '\0');
  const int rc = argon2id_hash_encoded(params.iterations, params.memory_kib, params.parallelism, password.data(),
                                       password.size(), salt.data(), salt.size(), kHashBytes, encoded.data(),
                                       encoded.size());
  if (rc != ARGON2_OK)
    throw core::Error(std::string("cannot hash the password with argon2id: ") + argon2_error_message(rc),
                      rc == ARGON2_MEMORY_ALLOCATION_ERROR ? "free memory, or lower the argon2 memory cost"
                                                           : "check the argon2 parameters (memory, iterations, parallelism)");
  return std::string(encoded.data());
}

bool verify_password(std::string_view password, const std::string& encoded_hash) {
  const auto params = parse_phc(encoded_hash);
  if (!params || params->memory_kib > kMaxMemoryKib || params->iterations > kMaxIterations ||
      params->parallelism > kMaxParallelism || params->parallelism == 0)
    return false;
  // libargon2 reads the hash up to its first NUL: one inside the string would make it verify a prefix.
  if (encoded_hash.find('\0') != std::string::npos) return false;
  return argon2id_verify(encoded_hash.c_str(), password.data(), password.size()) == ARGON2_OK;
}

bool needs_rehash(const std::string& encoded_hash, const Argon2Params& params) {
  const auto stored = parse_phc(encoded_hash);
  if (!stored) return true;  // unreadable: replace it with one we can read at the next good login
  return stored->memory_kib < params.memory_kib || stored->iterations < params.iterations ||
         stored->parallelism < params.parallelism;
}

}  // namespace aegis::web
