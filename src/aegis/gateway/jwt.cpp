#include "aegis/gateway/jwt.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/decoder.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "aegis/core/error.h"
#include "aegis/gateway/filter.h"

namespace aegis::gateway {
namespace {

// Nesting deeper than this in a token's header or claims is hostile, not a real token.
constexpr int kMaxJsonDepth = 16;
// A token without "kid" is tried against at most this many keys, so that a large JWKS cannot turn
// one request into many public-key operations.
constexpr std::size_t kMaxKeysTried = 8;

struct EvpPkeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
struct EvpPkeyCtxFree {
  void operator()(EVP_PKEY_CTX* ctx) const { EVP_PKEY_CTX_free(ctx); }
};
struct EvpMdCtxFree {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
struct BignumFree {
  void operator()(BIGNUM* n) const { BN_free(n); }
};
struct ParamBuildFree {
  void operator()(OSSL_PARAM_BLD* b) const { OSSL_PARAM_BLD_free(b); }
};
struct ParamFree {
  void operator()(OSSL_PARAM* p) const { OSSL_PARAM_free(p); }
};
struct EcdsaSigFree {
  void operator()(ECDSA_SIG* s) const { ECDSA_SIG_free(s); }
};
struct DecoderCtxFree {
  void operator()(OSSL_DECODER_CTX* c) const { OSSL_DECODER_CTX_free(c); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};

// OpenSSL queues errors per thread; a failed verification must not leave them for the next caller.
struct ClearOpensslErrors {
  ~ClearOpensslErrors() { ERR_clear_error(); }
};

int base64url_digit(unsigned char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '-') return 62;
  if (c == '_') return 63;
  return -1;
}

const EVP_MD* digest_for(JwtAlgorithm algorithm) {
  switch (algorithm) {
    case JwtAlgorithm::HS256:
    case JwtAlgorithm::RS256:
    case JwtAlgorithm::PS256:
    case JwtAlgorithm::ES256:
      return EVP_sha256();
    case JwtAlgorithm::HS384:
    case JwtAlgorithm::RS384:
    case JwtAlgorithm::ES384:
      return EVP_sha384();
    case JwtAlgorithm::HS512:
    case JwtAlgorithm::RS512:
      return EVP_sha512();
  }
  return nullptr;
}

bool is_hmac(JwtAlgorithm a) { return a == JwtAlgorithm::HS256 || a == JwtAlgorithm::HS384 || a == JwtAlgorithm::HS512; }

JwtKey::Type key_type_for(JwtAlgorithm algorithm) {
  switch (algorithm) {
    case JwtAlgorithm::HS256:
    case JwtAlgorithm::HS384:
    case JwtAlgorithm::HS512:
      return JwtKey::Type::Hmac;
    case JwtAlgorithm::RS256:
    case JwtAlgorithm::RS384:
    case JwtAlgorithm::RS512:
    case JwtAlgorithm::PS256:
      return JwtKey::Type::Rsa;
    case JwtAlgorithm::ES256:
      return JwtKey::Type::EcP256;
    case JwtAlgorithm::ES384:
      return JwtKey::Type::EcP384;
  }
  return JwtKey::Type::Hmac;
}

// Checks the type of a decoded public key and wraps it; throws when it cannot serve JWTs.
std::shared_ptr<EVP_PKEY> accept_public_key(EVP_PKEY* raw, JwtKey::Type& type, const std::string& where) {
  std::shared_ptr<EVP_PKEY> key(raw, EvpPkeyFree{});
  if (EVP_PKEY_is_a(raw, "RSA")) {
    // RFC 7518 section 3.3: RSA keys of 2048 bits or more.
    if (EVP_PKEY_get_bits(raw) < 2048)
      throw core::Error(where + ": RSA key of " + std::to_string(EVP_PKEY_get_bits(raw)) + " bits is too short",
                        "use an RSA key of at least 2048 bits");
    type = JwtKey::Type::Rsa;
    return key;
  }
  if (EVP_PKEY_is_a(raw, "EC")) {
    char group[64] = {0};
    std::size_t length = 0;
    if (EVP_PKEY_get_group_name(raw, group, sizeof group, &length) != 1)
      throw core::Error(where + ": cannot tell the curve of the EC key", "use a P-256 or P-384 key");
    const std::string name(group, length);
    if (name == "prime256v1" || name == "P-256") {
      type = JwtKey::Type::EcP256;
    } else if (name == "secp384r1" || name == "P-384") {
      type = JwtKey::Type::EcP384;
    } else {
      throw core::Error(where + ": EC curve " + name + " is not supported", "use a P-256 (ES256) or P-384 (ES384) key");
    }
    return key;
  }
  throw core::Error(where + ": key type is not supported for JWT", "use an RSA (2048+ bits), P-256 or P-384 public key");
}

std::string required_b64_member(const nlohmann::json& jwk, const char* name, std::size_t index) {
  const auto it = jwk.find(name);
  if (it == jwk.end() || !it->is_string())
    throw core::Error("JWKS key " + std::to_string(index) + ": member \"" + name + "\" is missing or not a string",
                      "each RSA key needs n and e, each EC key crv, x and y, each oct key k (base64url)");
  auto bytes = decode_base64url(it->get<std::string>());
  if (!bytes || bytes->empty())
    throw core::Error("JWKS key " + std::to_string(index) + ": member \"" + name + "\" is not valid base64url",
                      "encode key material as unpadded base64url (RFC 7515)");
  return *bytes;
}

EVP_PKEY* pkey_from_params(const char* type, OSSL_PARAM* params) {
  std::unique_ptr<EVP_PKEY_CTX, EvpPkeyCtxFree> ctx(EVP_PKEY_CTX_new_from_name(nullptr, type, nullptr));
  EVP_PKEY* key = nullptr;
  if (!ctx || EVP_PKEY_fromdata_init(ctx.get()) != 1 ||
      EVP_PKEY_fromdata(ctx.get(), &key, EVP_PKEY_PUBLIC_KEY, params) != 1)
    return nullptr;
  return key;
}

EVP_PKEY* rsa_from_jwk(const nlohmann::json& jwk, std::size_t index) {
  const std::string n = required_b64_member(jwk, "n", index);
  const std::string e = required_b64_member(jwk, "e", index);
  std::unique_ptr<BIGNUM, BignumFree> bn_n(BN_bin2bn(reinterpret_cast<const unsigned char*>(n.data()),
                                                     static_cast<int>(n.size()), nullptr));
  std::unique_ptr<BIGNUM, BignumFree> bn_e(BN_bin2bn(reinterpret_cast<const unsigned char*>(e.data()),
                                                     static_cast<int>(e.size()), nullptr));
  std::unique_ptr<OSSL_PARAM_BLD, ParamBuildFree> build(OSSL_PARAM_BLD_new());
  if (!bn_n || !bn_e || !build || OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_N, bn_n.get()) != 1 ||
      OSSL_PARAM_BLD_push_BN(build.get(), OSSL_PKEY_PARAM_RSA_E, bn_e.get()) != 1)
    return nullptr;
  std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(build.get()));
  return params ? pkey_from_params("RSA", params.get()) : nullptr;
}

EVP_PKEY* ec_from_jwk(const nlohmann::json& jwk, std::size_t index) {
  const auto crv = jwk.find("crv");
  if (crv == jwk.end() || !crv->is_string())
    throw core::Error("JWKS key " + std::to_string(index) + ": EC key without \"crv\"", "set crv to P-256 or P-384");
  const std::string curve = crv->get<std::string>();
  std::size_t coordinate = 0;
  const char* group = nullptr;
  if (curve == "P-256") {
    coordinate = 32;
    group = "prime256v1";
  } else if (curve == "P-384") {
    coordinate = 48;
    group = "secp384r1";
  } else {
    throw core::Error("JWKS key " + std::to_string(index) + ": curve " + curve + " is not supported",
                      "use P-256 (ES256) or P-384 (ES384)");
  }
  const std::string x = required_b64_member(jwk, "x", index);
  const std::string y = required_b64_member(jwk, "y", index);
  if (x.size() != coordinate || y.size() != coordinate)
    throw core::Error("JWKS key " + std::to_string(index) + ": x and y must be " + std::to_string(coordinate) +
                          " bytes each for " + curve,
                      "export the coordinates at the curve's full width");
  // The uncompressed point encoding: 0x04 || x || y.
  std::string point(1, '\x04');
  point += x;
  point += y;
  std::unique_ptr<OSSL_PARAM_BLD, ParamBuildFree> build(OSSL_PARAM_BLD_new());
  if (!build || OSSL_PARAM_BLD_push_utf8_string(build.get(), OSSL_PKEY_PARAM_GROUP_NAME, group, 0) != 1 ||
      OSSL_PARAM_BLD_push_octet_string(build.get(), OSSL_PKEY_PARAM_PUB_KEY, point.data(), point.size()) != 1)
    return nullptr;
  std::unique_ptr<OSSL_PARAM, ParamFree> params(OSSL_PARAM_BLD_to_param(build.get()));
  EVP_PKEY* key = params ? pkey_from_params("EC", params.get()) : nullptr;
  if (!key) return nullptr;
  // A point off the curve would make every verification meaningless (invalid-curve attacks).
  std::unique_ptr<EVP_PKEY_CTX, EvpPkeyCtxFree> check(EVP_PKEY_CTX_new_from_pkey(nullptr, key, nullptr));
  if (!check || EVP_PKEY_public_check(check.get()) != 1) {
    EVP_PKEY_free(key);
    throw core::Error("JWKS key " + std::to_string(index) + ": the EC point is not on curve " + curve,
                      "check that x and y belong to the key and were not truncated");
  }
  return key;
}

// ES256/ES384 signatures are r || s at fixed width (RFC 7518 section 3.4); OpenSSL wants DER.
std::optional<std::string> ecdsa_raw_to_der(std::string_view raw, std::size_t coordinate) {
  if (raw.size() != 2 * coordinate) return std::nullopt;
  std::unique_ptr<ECDSA_SIG, EcdsaSigFree> sig(ECDSA_SIG_new());
  BIGNUM* r = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data()), static_cast<int>(coordinate), nullptr);
  BIGNUM* s = BN_bin2bn(reinterpret_cast<const unsigned char*>(raw.data() + coordinate), static_cast<int>(coordinate),
                        nullptr);
  if (!sig || !r || !s || ECDSA_SIG_set0(sig.get(), r, s) != 1) {
    BN_free(r);
    BN_free(s);
    return std::nullopt;
  }
  const int length = i2d_ECDSA_SIG(sig.get(), nullptr);
  if (length <= 0) return std::nullopt;
  std::string der(static_cast<std::size_t>(length), '\0');
  auto* out = reinterpret_cast<unsigned char*>(der.data());
  if (i2d_ECDSA_SIG(sig.get(), &out) != length) return std::nullopt;
  return der;
}

// A NumericDate (RFC 7519 section 2): seconds, possibly fractional. nullopt when not a number.
std::optional<double> numeric_date(const nlohmann::json& value) {
  if (value.is_number_integer() || value.is_number_unsigned() || value.is_number_float()) {
    const double seconds = value.get<double>();
    if (std::isfinite(seconds)) return seconds;
  }
  return std::nullopt;
}

}  // namespace

std::optional<JwtAlgorithm> parse_jwt_algorithm(std::string_view name) {
  static constexpr std::pair<std::string_view, JwtAlgorithm> kNames[] = {
      {"HS256", JwtAlgorithm::HS256}, {"HS384", JwtAlgorithm::HS384}, {"HS512", JwtAlgorithm::HS512},
      {"RS256", JwtAlgorithm::RS256}, {"RS384", JwtAlgorithm::RS384}, {"RS512", JwtAlgorithm::RS512},
      {"PS256", JwtAlgorithm::PS256}, {"ES256", JwtAlgorithm::ES256}, {"ES384", JwtAlgorithm::ES384}};
  for (const auto& [text, algorithm] : kNames)
    if (text == name) return algorithm;
  return std::nullopt;
}

std::string_view jwt_algorithm_name(JwtAlgorithm algorithm) {
  switch (algorithm) {
    case JwtAlgorithm::HS256: return "HS256";
    case JwtAlgorithm::HS384: return "HS384";
    case JwtAlgorithm::HS512: return "HS512";
    case JwtAlgorithm::RS256: return "RS256";
    case JwtAlgorithm::RS384: return "RS384";
    case JwtAlgorithm::RS512: return "RS512";
    case JwtAlgorithm::PS256: return "PS256";
    case JwtAlgorithm::ES256: return "ES256";
    case JwtAlgorithm::ES384: return "ES384";
  }
  return "?";
}

std::optional<std::string> decode_base64url(std::string_view text) {
  if (text.size() % 4 == 1) return std::nullopt;
  std::string out;
  out.reserve(text.size() / 4 * 3 + 2);
  std::uint32_t bits = 0;
  int bit_count = 0;
  for (char ch : text) {
    const int value = base64url_digit(static_cast<unsigned char>(ch));
    if (value < 0) return std::nullopt;
    bits = (bits << 6) | static_cast<std::uint32_t>(value);
    bit_count += 6;
    if (bit_count >= 8) {
      bit_count -= 8;
      out += static_cast<char>((bits >> bit_count) & 0xFF);
    }
  }
  // Leftover bits must be zero, or two spellings would decode to the same bytes.
  if (bit_count > 0 && (bits & ((1u << bit_count) - 1)) != 0) return std::nullopt;
  return out;
}

std::string encode_base64url(std::string_view bytes) {
  static constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::uint32_t bits = 0;
  int bit_count = 0;
  for (char ch : bytes) {
    bits = (bits << 8) | static_cast<unsigned char>(ch);
    bit_count += 8;
    while (bit_count >= 6) {
      bit_count -= 6;
      out += kAlphabet[(bits >> bit_count) & 63];
    }
  }
  if (bit_count > 0) out += kAlphabet[(bits << (6 - bit_count)) & 63];
  return out;
}

JwtKey JwtKey::hmac(std::string secret, std::string kid) {
  if (secret.empty()) throw core::Error("the HMAC secret is empty", "set a secret of at least 32 random bytes");
  JwtKey key;
  key.type_ = Type::Hmac;
  key.secret_ = std::move(secret);
  key.kid_ = std::move(kid);
  return key;
}

JwtKey JwtKey::from_pem(std::string_view pem, std::string kid) {
  ClearOpensslErrors clear;
  if (pem.find("PRIVATE KEY-----") != std::string_view::npos)
    throw core::Error("the PEM holds a private key", "give the gateway only the public key (openssl pkey -pubout)");
  std::unique_ptr<BIO, BioFree> bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
  if (!bio) throw core::Error("out of memory reading a PEM key");
  EVP_PKEY* raw = nullptr;
  if (pem.find("-----BEGIN CERTIFICATE-----") != std::string_view::npos) {
    std::unique_ptr<X509, X509Free> certificate(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (certificate) raw = X509_get_pubkey(certificate.get());
  } else {
    std::unique_ptr<OSSL_DECODER_CTX, DecoderCtxFree> decoder(
        OSSL_DECODER_CTX_new_for_pkey(&raw, "PEM", nullptr, nullptr, EVP_PKEY_PUBLIC_KEY, nullptr, nullptr));
    if (decoder) {
      auto* data = reinterpret_cast<const unsigned char*>(pem.data());
      std::size_t length = pem.size();
      if (OSSL_DECODER_from_data(decoder.get(), &data, &length) != 1) raw = nullptr;
    }
  }
  if (!raw)
    throw core::Error("cannot read a public key from the PEM text",
                      "give a PEM \"PUBLIC KEY\", \"RSA PUBLIC KEY\" or \"CERTIFICATE\" block");
  JwtKey key;
  key.public_key_ = accept_public_key(raw, key.type_, "PEM key");
  key.kid_ = std::move(kid);
  return key;
}

std::vector<JwtKey> JwtKey::from_jwks(std::string_view json) {
  ClearOpensslErrors clear;
  auto document = parse_bounded_json(json, kMaxJsonDepth);
  if (!document || !document->is_object())
    throw core::Error("the JWKS is not a JSON object", "give a JSON Web Key Set: {\"keys\": [...]}");
  const auto keys = document->find("keys");
  if (keys == document->end() || !keys->is_array())
    throw core::Error("the JWKS has no \"keys\" array", "give a JSON Web Key Set: {\"keys\": [...]}");
  std::vector<JwtKey> result;
  std::size_t index = 0;
  for (const auto& jwk : *keys) {
    ++index;
    if (!jwk.is_object()) throw core::Error("JWKS key " + std::to_string(index) + " is not an object");
    if (const auto use = jwk.find("use"); use != jwk.end() && (!use->is_string() || *use != "sig")) continue;
    const auto kty = jwk.find("kty");
    if (kty == jwk.end() || !kty->is_string())
      throw core::Error("JWKS key " + std::to_string(index) + " has no \"kty\"", "set kty to RSA, EC or oct");
    JwtKey key;
    if (const auto kid = jwk.find("kid"); kid != jwk.end()) {
      if (!kid->is_string()) throw core::Error("JWKS key " + std::to_string(index) + ": \"kid\" is not a string");
      key.kid_ = kid->get<std::string>();
    }
    if (const auto alg = jwk.find("alg"); alg != jwk.end()) {
      // A key pinned to an algorithm we do not verify (RSA-OAEP, EdDSA...) is not ours to use.
      if (!alg->is_string()) throw core::Error("JWKS key " + std::to_string(index) + ": \"alg\" is not a string");
      key.pinned_ = parse_jwt_algorithm(alg->get<std::string>());
      if (!key.pinned_) continue;
    }
    const std::string type = kty->get<std::string>();
    const std::string where = "JWKS key " + std::to_string(index);
    if (type == "RSA") {
      EVP_PKEY* raw = rsa_from_jwk(jwk, index);
      if (!raw) throw core::Error(where + ": OpenSSL rejected the RSA key", "check n and e");
      key.public_key_ = accept_public_key(raw, key.type_, where);
    } else if (type == "EC") {
      EVP_PKEY* raw = ec_from_jwk(jwk, index);
      if (!raw) throw core::Error(where + ": OpenSSL rejected the EC key", "check crv, x and y");
      key.public_key_ = accept_public_key(raw, key.type_, where);
    } else if (type == "oct") {
      key.type_ = Type::Hmac;
      key.secret_ = required_b64_member(jwk, "k", index);
    } else {
      continue;  // OKP and future key types: not verifiable here, and not an error in a shared JWKS
    }
    if (key.pinned_ && !key.suits(*key.pinned_))
      throw core::Error(where + ": \"alg\" " + std::string(jwt_algorithm_name(*key.pinned_)) +
                            " does not fit the key type",
                        "fix the key's alg member");
    result.push_back(std::move(key));
  }
  if (result.empty())
    throw core::Error("the JWKS holds no signature key this gateway can use",
                      "add an RSA, EC P-256/P-384 or oct key with use \"sig\"");
  return result;
}

bool JwtKey::suits(JwtAlgorithm algorithm) const {
  if (pinned_ && *pinned_ != algorithm) return false;
  return key_type_for(algorithm) == type_;
}

bool JwtKey::verify(JwtAlgorithm algorithm, std::string_view signing_input, std::string_view signature) const {
  if (!suits(algorithm)) return false;
  ClearOpensslErrors clear;
  const EVP_MD* md = digest_for(algorithm);
  if (is_hmac(algorithm)) {
    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int mac_length = 0;
    if (!HMAC(md, secret_.data(), static_cast<int>(secret_.size()),
              reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size(), mac, &mac_length))
      return false;
    return signature.size() == mac_length && CRYPTO_memcmp(mac, signature.data(), mac_length) == 0;
  }
  std::string der;
  if (type_ == Type::EcP256 || type_ == Type::EcP384) {
    auto converted = ecdsa_raw_to_der(signature, type_ == Type::EcP256 ? 32 : 48);
    if (!converted) return false;
    der = std::move(*converted);
    signature = der;
  }
  std::unique_ptr<EVP_MD_CTX, EvpMdCtxFree> ctx(EVP_MD_CTX_new());
  EVP_PKEY_CTX* key_ctx = nullptr;  // owned by ctx
  if (!ctx || EVP_DigestVerifyInit(ctx.get(), &key_ctx, md, nullptr, public_key_.get()) != 1) return false;
  if (algorithm == JwtAlgorithm::PS256) {
    // RFC 7518 section 3.5: MGF1 with the same hash, salt as long as the hash.
    if (EVP_PKEY_CTX_set_rsa_padding(key_ctx, RSA_PKCS1_PSS_PADDING) != 1 ||
        EVP_PKEY_CTX_set_rsa_mgf1_md(key_ctx, md) != 1 ||
        EVP_PKEY_CTX_set_rsa_pss_saltlen(key_ctx, RSA_PSS_SALTLEN_DIGEST) != 1)
      return false;
  } else if (type_ == Type::Rsa) {
    if (EVP_PKEY_CTX_set_rsa_padding(key_ctx, RSA_PKCS1_PADDING) != 1) return false;
  }
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                          reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size()) == 1;
}

JwtVerifier::JwtVerifier(std::vector<JwtKey> keys, JwtPolicy policy) : keys_(std::move(keys)), policy_(std::move(policy)) {
  if (policy_.algorithms.empty())
    throw core::Error("no JWT algorithm is allowed", "list the algorithms your issuer signs with, e.g. [RS256]");
  for (JwtAlgorithm algorithm : policy_.algorithms) {
    const bool has_key = std::any_of(keys_.begin(), keys_.end(), [&](const JwtKey& k) { return k.suits(algorithm); });
    if (!has_key)
      throw core::Error("algorithm " + std::string(jwt_algorithm_name(algorithm)) + " is allowed but no key suits it",
                        is_hmac(algorithm) ? "give an HMAC secret (secret_env) or remove the algorithm"
                                           : "give a matching public key (public_key_file or jwks_file) or remove "
                                             "the algorithm");
  }
}

std::string JwtVerifier::check_times(const nlohmann::json& claims, std::int64_t now_seconds) const {
  const double now = static_cast<double>(now_seconds);
  const double leeway = static_cast<double>(policy_.leeway_seconds);
  if (const auto exp = claims.find("exp"); exp != claims.end()) {
    const auto when = numeric_date(*exp);
    if (!when) return "malformed exp claim";
    if (now - leeway >= *when) return "expired";
  } else if (policy_.require_expiry) {
    return "no expiry (exp)";
  }
  if (const auto nbf = claims.find("nbf"); nbf != claims.end()) {
    const auto when = numeric_date(*nbf);
    if (!when) return "malformed nbf claim";
    if (now + leeway < *when) return "not yet valid";
  }
  if (const auto iat = claims.find("iat"); iat != claims.end()) {
    const auto when = numeric_date(*iat);
    if (!when) return "malformed iat claim";
    if (now + leeway < *when) return "issued in the future";
  }
  return {};
}

JwtVerification JwtVerifier::verify(std::string_view token, std::int64_t now) const {
  if (token.size() > policy_.max_token_bytes) return JwtVerification::failure("token too long");
  const auto first_dot = token.find('.');
  const auto second_dot = first_dot == std::string_view::npos ? first_dot : token.find('.', first_dot + 1);
  if (second_dot == std::string_view::npos || token.find('.', second_dot + 1) != std::string_view::npos)
    return JwtVerification::failure("malformed token");
  const std::string_view header_part = token.substr(0, first_dot);
  const std::string_view payload_part = token.substr(first_dot + 1, second_dot - first_dot - 1);
  const std::string_view signature_part = token.substr(second_dot + 1);

  const auto header_text = decode_base64url(header_part);
  if (!header_text) return JwtVerification::failure("malformed token header");
  auto header = parse_bounded_json(*header_text, kMaxJsonDepth);
  if (!header || !header->is_object()) return JwtVerification::failure("malformed token header");
  const auto alg = header->find("alg");
  if (alg == header->end() || !alg->is_string()) return JwtVerification::failure("malformed token header");
  // RFC 7515 section 4.1.11: extensions we do not understand must not be ignored.
  if (header->contains("crit")) return JwtVerification::failure("unsupported critical header");
  const auto algorithm = parse_jwt_algorithm(alg->get<std::string>());
  if (!algorithm || std::find(policy_.algorithms.begin(), policy_.algorithms.end(), *algorithm) ==
                        policy_.algorithms.end())
    return JwtVerification::failure("algorithm not allowed");

  std::optional<std::string> kid;
  if (const auto it = header->find("kid"); it != header->end()) {
    if (!it->is_string()) return JwtVerification::failure("malformed token header");
    kid = it->get<std::string>();
  }
  // Keys come only from the configuration: jwk, jku and x5u header members are never followed.
  std::vector<const JwtKey*> candidates;
  bool kid_known = false;
  for (const auto& key : keys_) {
    if (kid && !key.kid().empty() && key.kid() != *kid) continue;
    kid_known = true;
    if (key.suits(*algorithm) && candidates.size() < kMaxKeysTried) candidates.push_back(&key);
  }
  if (!kid_known) return JwtVerification::failure("unknown key id");
  if (candidates.empty()) return JwtVerification::failure("algorithm does not match key");

  const auto signature = decode_base64url(signature_part);
  if (!signature || signature->empty()) return JwtVerification::failure("malformed signature");
  const std::string_view signing_input = token.substr(0, second_dot);
  const bool verified = std::any_of(candidates.begin(), candidates.end(),
                                    [&](const JwtKey* key) { return key->verify(*algorithm, signing_input, *signature); });
  if (!verified) return JwtVerification::failure("bad signature");

  // Only a signed payload is parsed, so an attacker cannot probe the claim checks.
  const auto payload_text = decode_base64url(payload_part);
  if (!payload_text) return JwtVerification::failure("malformed claims");
  auto claims = parse_bounded_json(*payload_text, kMaxJsonDepth);
  if (!claims || !claims->is_object()) return JwtVerification::failure("malformed claims");
  if (auto problem = check_times(*claims, now); !problem.empty()) return JwtVerification::failure(std::move(problem));
  if (!policy_.issuer.empty()) {
    const auto iss = claims->find("iss");
    if (iss == claims->end() || !iss->is_string() || *iss != policy_.issuer)
      return JwtVerification::failure("wrong issuer");
  }
  if (!policy_.audiences.empty()) {
    const auto aud = claims->find("aud");
    bool matched = false;
    auto accepts = [&](const nlohmann::json& value) {
      return value.is_string() && std::find(policy_.audiences.begin(), policy_.audiences.end(),
                                            value.get<std::string>()) != policy_.audiences.end();
    };
    if (aud != claims->end()) {
      if (aud->is_array())
        matched = std::any_of(aud->begin(), aud->end(), accepts);
      else
        matched = accepts(*aud);
    }
    if (!matched) return JwtVerification::failure("wrong audience");
  }
  JwtVerification result;
  result.valid = true;
  result.header = std::move(*header);
  result.claims = std::move(*claims);
  return result;
}

}  // namespace aegis::gateway
