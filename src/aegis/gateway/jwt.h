// JSON Web Token verification (RFC 7519/7515/7518) for the gateway's jwt filter: typed keys from an
// HMAC secret, a PEM public key or a local JWKS, an algorithm allow-list, and the registered claims.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

typedef struct evp_pkey_st EVP_PKEY;

namespace aegis::gateway {

// The algorithms the verifier knows; "none" is deliberately not one of them.
enum class JwtAlgorithm { HS256, HS384, HS512, RS256, RS384, RS512, PS256, ES256, ES384 };

std::optional<JwtAlgorithm> parse_jwt_algorithm(std::string_view name);
std::string_view jwt_algorithm_name(JwtAlgorithm algorithm);

// Base64url without padding (RFC 7515 section 2). Decoding is strict: no padding, no whitespace, no
// characters outside the alphabet, and the unused low bits of the last digit must be zero, so that
// every byte string has exactly one accepted spelling.
std::optional<std::string> decode_base64url(std::string_view text);
std::string encode_base64url(std::string_view bytes);

// A verification key. Its type fixes which algorithms it can verify, which is what defeats
// algorithm confusion (an RSA public key is never used as an HMAC secret).
class JwtKey {
 public:
  enum class Type { Hmac, Rsa, EcP256, EcP384 };

  static JwtKey hmac(std::string secret, std::string kid = {});
  // A PEM public key ("PUBLIC KEY", "RSA PUBLIC KEY") or certificate; throws core::Error when it
  // cannot be read, is not RSA/P-256/P-384, or is an RSA key shorter than 2048 bits.
  static JwtKey from_pem(std::string_view pem, std::string kid = {});
  // Every signature key of a JWKS document ({"keys": [...]}: RSA n/e, EC P-256/P-384 x/y, oct k).
  // Keys marked "use": "enc" and key types it does not know are skipped; throws core::Error when the
  // document is malformed or holds no usable key.
  static std::vector<JwtKey> from_jwks(std::string_view json);

  Type type() const { return type_; }
  const std::string& kid() const { return kid_; }
  // The JWK "alg" member when the key was pinned to one algorithm, else nullopt.
  std::optional<JwtAlgorithm> pinned_algorithm() const { return pinned_; }
  // Whether this key may verify `algorithm`: type and pin both agree.
  bool suits(JwtAlgorithm algorithm) const;
  // Verifies `signature` over `signing_input` with `algorithm` (which must suit the key).
  bool verify(JwtAlgorithm algorithm, std::string_view signing_input, std::string_view signature) const;

 private:
  Type type_ = Type::Hmac;
  std::string kid_;
  std::optional<JwtAlgorithm> pinned_;
  std::string secret_;
  std::shared_ptr<EVP_PKEY> public_key_;
};

// What a token must satisfy besides its signature.
struct JwtPolicy {
  std::vector<JwtAlgorithm> algorithms;  // the allow-list
  std::string issuer;                    // empty: "iss" not checked
  std::vector<std::string> audiences;    // empty: "aud" not checked; else one must appear in "aud"
  std::int64_t leeway_seconds = 30;
  bool require_expiry = true;
  std::size_t max_token_bytes = 8 * 1024;
};

// The outcome of one verification. `reason` is short and safe to show a client ("expired",
// "bad signature", "wrong audience", "algorithm not allowed", ...).
struct JwtVerification {
  bool valid = false;
  std::string reason;
  nlohmann::json header;
  nlohmann::json claims;
  static JwtVerification failure(std::string reason) {
    JwtVerification v;
    v.reason = std::move(reason);
    return v;
  }
};

class JwtVerifier {
 public:
  // Throws core::Error when an allowed algorithm has no key that suits it.
  JwtVerifier(std::vector<JwtKey> keys, JwtPolicy policy);
  // `now` is Unix time in seconds (a parameter so that tests and caches can pin the clock).
  JwtVerification verify(std::string_view token, std::int64_t now) const;
  // The time-dependent checks alone (exp, nbf, iat), for claims verified earlier.
  std::string check_times(const nlohmann::json& claims, std::int64_t now) const;
  const JwtPolicy& policy() const { return policy_; }

 private:
  std::vector<JwtKey> keys_;
  JwtPolicy policy_;
};

}  // namespace aegis::gateway
