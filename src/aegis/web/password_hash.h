// Password hashing for the dashboard's users: argon2id (libargon2), memory-hard, in the PHC string
// format ($argon2id$v=19$m=...,t=...,p=...$salt$hash) so that the parameters travel with each hash
// and can be raised later without breaking stored ones.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace aegis::web {

struct Argon2Params {
  std::uint32_t memory_kib = 64 * 1024;  // 64 MiB
  std::uint32_t iterations = 3;
  std::uint32_t parallelism = 1;
};

// A fresh 16-byte random salt each call. Throws core::Error when argon2 fails (e.g. out of memory).
std::string hash_password(std::string_view password, const Argon2Params& params = {});
// Constant-time comparison inside argon2; false for a malformed hash string (never throws for it).
bool verify_password(std::string_view password, const std::string& encoded_hash);
// Whether `encoded_hash` was made with weaker parameters than `params` (re-hash at next login).
bool needs_rehash(const std::string& encoded_hash, const Argon2Params& params = {});

}  // namespace aegis::web
