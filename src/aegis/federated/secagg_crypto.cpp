// The primitives under secure aggregation: X25519, HKDF-SHA256, the ChaCha20 PRG, AES-256-GCM,
// Shamir sharing over GF(2^61 - 1) and the fixed-point encoding. OpenSSL 3 EVP interfaces only.
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <string>

#include "aegis/core/error.h"
#include "aegis/federated/openssl_handle.h"
#include "aegis/federated/secure_aggregation.h"

namespace aegis::federated {

namespace {

using PKey = OpenSslPtr<EVP_PKEY, EVP_PKEY_free>;
using PKeyCtx = OpenSslPtr<EVP_PKEY_CTX, EVP_PKEY_CTX_free>;
using CipherCtx = OpenSslPtr<EVP_CIPHER_CTX, EVP_CIPHER_CTX_free>;
using Kdf = OpenSslPtr<EVP_KDF, EVP_KDF_free>;
using KdfCtx = OpenSslPtr<EVP_KDF_CTX, EVP_KDF_CTX_free>;

// The first queued OpenSSL error as text (and the queue emptied, so it cannot leak into a later
// call's report).
std::string openssl_error() {
  unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no OpenSSL error queued";
  char text[256];
  ERR_error_string_n(code, text, sizeof text);
  return text;
}

[[noreturn]] void fail(const std::string& what) {
  throw core::Error(what + " (" + openssl_error() + ")",
                    "this is an OpenSSL failure, not bad input: check the OpenSSL 3 installation");
}

PKey raw_private_key(const Key32& private_key) {
  PKey key(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, private_key.data(), private_key.size()));
  if (!key) fail("X25519: cannot load a private key");
  return key;
}

Key32 raw_public_of(EVP_PKEY* key) {
  Key32 out{};
  std::size_t length = out.size();
  if (EVP_PKEY_get_raw_public_key(key, out.data(), &length) != 1 || length != out.size())
    fail("X25519: cannot read a public key");
  return out;
}

// ---- GF(2^61 - 1) ----

constexpr std::uint64_t kP = kShamirPrime;

// A Mersenne prime reduces with a shift and an add: 2^61 == 1 (mod p).
std::uint64_t reduce(unsigned __int128 v) {
  std::uint64_t r = static_cast<std::uint64_t>(v & kP) + static_cast<std::uint64_t>(v >> 61);  // < 2^62
  r = (r & kP) + (r >> 61);                                                                     // <= p + 1
  return r >= kP ? r - kP : r;
}
std::uint64_t add(std::uint64_t a, std::uint64_t b) {
  std::uint64_t r = a + b;
  return r >= kP ? r - kP : r;
}
std::uint64_t sub(std::uint64_t a, std::uint64_t b) { return a >= b ? a - b : a + kP - b; }
std::uint64_t mul(std::uint64_t a, std::uint64_t b) {
  return reduce(static_cast<unsigned __int128>(a) * b);
}
std::uint64_t inverse(std::uint64_t a) {  // Fermat: a^(p-2); a != 0
  std::uint64_t result = 1, base = a, exponent = kP - 2;
  while (exponent) {
    if (exponent & 1) result = mul(result, base);
    base = mul(base, base);
    exponent >>= 1;
  }
  return result;
}

// Uniform in [0, p): 61 random bits, rejecting the single value p itself.
std::uint64_t random_field_element() {
  for (;;) {
    std::uint64_t v = 0;
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&v), sizeof v) != 1) fail("Shamir: CSPRNG failed");
    v &= kP;
    if (v != kP) return v;
  }
}

// Checks what shamir_combine and shamir_consistent both need; returns the common chunk count.
std::size_t check_shares(std::span<const ShamirShare> shares, std::uint32_t threshold, const char* call) {
  if (threshold == 0) throw core::Error(std::string(call) + ": threshold must be at least 1");
  if (shares.size() < threshold)
    throw core::Error(std::string(call) + ": " + std::to_string(shares.size()) + " shares given, the threshold is " +
                          std::to_string(threshold),
                      "collect at least threshold shares");
  if (shares.empty()) throw core::Error(std::string(call) + ": no shares given");
  const std::size_t chunks = shares.front().y.size();
  if (chunks == 0 || chunks > kMaxShamirChunks)
    throw core::Error(std::string(call) + ": a share has " + std::to_string(chunks) + " chunks (1.." +
                      std::to_string(kMaxShamirChunks) + " allowed)");
  std::set<std::uint32_t> xs;
  for (const auto& share : shares) {
    if (share.x == 0) throw core::Error(std::string(call) + ": a share has x = 0, which would be the secret itself");
    if (!xs.insert(share.x).second)
      throw core::Error(std::string(call) + ": two shares have the same x = " + std::to_string(share.x));
    if (share.y.size() != chunks)
      throw core::Error(std::string(call) + ": the share at x = " + std::to_string(share.x) + " has " +
                        std::to_string(share.y.size()) + " chunks, the others " + std::to_string(chunks));
    for (auto y : share.y)
      if (y >= kP)
        throw core::Error(std::string(call) + ": the share at x = " + std::to_string(share.x) +
                          " has a value outside the field GF(2^61 - 1)");
  }
  return chunks;
}

}  // namespace

// ---- X25519 ----

X25519KeyPair x25519_generate() {
  PKey key(EVP_PKEY_Q_keygen(nullptr, nullptr, "X25519"));
  if (!key) fail("X25519: key generation failed");
  X25519KeyPair pair;
  std::size_t length = pair.private_key.size();
  if (EVP_PKEY_get_raw_private_key(key.get(), pair.private_key.data(), &length) != 1 ||
      length != pair.private_key.size())
    fail("X25519: cannot read the generated private key");
  pair.public_key = raw_public_of(key.get());
  return pair;
}

Key32 x25519_public_key(const Key32& private_key) { return raw_public_of(raw_private_key(private_key).get()); }

Key32 x25519_agree(const Key32& private_key, const Key32& peer_public) {
  PKey own = raw_private_key(private_key);
  PKey peer(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer_public.data(), peer_public.size()));
  if (!peer) fail("X25519: cannot load the peer's public key");
  PKeyCtx ctx(EVP_PKEY_CTX_new_from_pkey(nullptr, own.get(), nullptr));
  if (!ctx || EVP_PKEY_derive_init(ctx.get()) != 1) fail("X25519: cannot start a key agreement");
  Key32 secret{};
  std::size_t length = secret.size();
  // OpenSSL refuses an all-zero result itself; the explicit check below keeps the guarantee (RFC
  // 7748 section 6.1) independent of that, because a low-order peer key would give a mask or an
  // encryption key that everyone can compute.
  const bool derived = EVP_PKEY_derive_set_peer(ctx.get(), peer.get()) == 1 &&
                       EVP_PKEY_derive(ctx.get(), secret.data(), &length) == 1 && length == secret.size();
  ERR_clear_error();
  if (!derived || std::all_of(secret.begin(), secret.end(), [](std::uint8_t b) { return b == 0; })) {
    OPENSSL_cleanse(secret.data(), secret.size());
    throw core::Error("X25519 key agreement failed: the peer's public key is a low-order point (all-zero shared secret)",
                      "the peer's key is invalid or malicious; leave it out of the round");
  }
  return secret;
}

// ---- HKDF ----

std::vector<std::uint8_t> hkdf_sha256(std::span<const std::uint8_t> ikm, std::span<const std::uint8_t> salt,
                                      std::string_view info, std::size_t length) {
  if (length == 0 || length > 255 * 32)
    throw core::Error("HKDF-SHA256: output length " + std::to_string(length) + " outside 1..8160");
  if (ikm.empty()) throw core::Error("HKDF-SHA256: empty input key material");
  Kdf kdf(EVP_KDF_fetch(nullptr, "HKDF", nullptr));
  if (!kdf) fail("HKDF: not available");
  KdfCtx ctx(EVP_KDF_CTX_new(kdf.get()));
  if (!ctx) fail("HKDF: cannot create a context");
  char digest[] = "SHA256";
  OSSL_PARAM params[5];
  std::size_t n = 0;
  params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0);
  params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<std::uint8_t*>(ikm.data()), ikm.size());
  // An absent salt and an empty one are the same to HKDF (HMAC pads the key with zeros); leaving it
  // out avoids handing OpenSSL a null pointer.
  if (!salt.empty())
    params[n++] =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<std::uint8_t*>(salt.data()), salt.size());
  if (!info.empty())
    params[n++] = OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<char*>(info.data()), info.size());
  params[n] = OSSL_PARAM_construct_end();
  std::vector<std::uint8_t> out(length);
  if (EVP_KDF_derive(ctx.get(), out.data(), out.size(), params) != 1) fail("HKDF: derivation failed");
  return out;
}

// ---- ChaCha20 and the PRG ----

namespace {

class ChaCha20Stream {
 public:
  ChaCha20Stream(const Key32& key, std::uint32_t counter, const std::array<std::uint8_t, 12>& nonce)
      : ctx_(EVP_CIPHER_CTX_new()) {
    // OpenSSL's 16-byte IV for ChaCha20 is the RFC 8439 block counter (4 bytes, little-endian)
    // followed by the 12-byte nonce.
    std::array<std::uint8_t, 16> iv{};
    for (int i = 0; i < 4; ++i) iv[i] = static_cast<std::uint8_t>(counter >> (8 * i));
    std::copy(nonce.begin(), nonce.end(), iv.begin() + 4);
    if (!ctx_ || EVP_EncryptInit_ex2(ctx_.get(), EVP_chacha20(), key.data(), iv.data(), nullptr) != 1)
      fail("ChaCha20: cannot start the cipher");
  }
  void xor_into(std::span<std::uint8_t> data) {
    constexpr std::size_t kStep = 1 << 20;  // EVP takes int lengths
    for (std::size_t offset = 0; offset < data.size(); offset += kStep) {
      const int n = static_cast<int>(std::min(kStep, data.size() - offset));
      int written = 0;
      if (EVP_EncryptUpdate(ctx_.get(), data.data() + offset, &written, data.data() + offset, n) != 1 || written != n)
        fail("ChaCha20: encryption failed");
    }
  }

 private:
  CipherCtx ctx_;
};

}  // namespace

void chacha20_xor(const Key32& key, std::uint32_t counter, const std::array<std::uint8_t, 12>& nonce,
                  std::span<std::uint8_t> data) {
  ChaCha20Stream(key, counter, nonce).xor_into(data);
}

void prg_add(const Key32& seed, std::span<std::uint32_t> words, bool subtract) {
  ChaCha20Stream stream(seed, 0, {});
  constexpr std::size_t kWordsPerStep = 4096;
  std::array<std::uint8_t, kWordsPerStep * 4> keystream;
  for (std::size_t offset = 0; offset < words.size(); offset += kWordsPerStep) {
    const std::size_t n = std::min(kWordsPerStep, words.size() - offset);
    std::fill_n(keystream.begin(), n * 4, 0);
    stream.xor_into(std::span(keystream.data(), n * 4));
    for (std::size_t i = 0; i < n; ++i) {
      // Little-endian regardless of the host, so that every participant and the server expand a
      // seed into the same words.
      const std::uint8_t* b = keystream.data() + 4 * i;
      const std::uint32_t mask = std::uint32_t(b[0]) | std::uint32_t(b[1]) << 8 | std::uint32_t(b[2]) << 16 |
                                 std::uint32_t(b[3]) << 24;
      words[offset + i] = subtract ? words[offset + i] - mask : words[offset + i] + mask;
    }
  }
  OPENSSL_cleanse(keystream.data(), keystream.size());
}

// ---- AES-256-GCM ----

std::vector<std::uint8_t> seal(const Key32& key, std::span<const std::uint8_t> plaintext,
                               std::span<const std::uint8_t> associated_data) {
  if (plaintext.size() > (1u << 30)) throw core::Error("seal: plaintext larger than 1 GiB");
  std::vector<std::uint8_t> out(kSealOverheadBytes + plaintext.size());
  // A random nonce: the same pair key seals in both directions, so a counter would need
  // coordination; 2^-96 collision odds for a handful of messages per key are negligible.
  if (RAND_bytes(out.data(), 12) != 1) fail("seal: CSPRNG failed");
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx || EVP_EncryptInit_ex2(ctx.get(), EVP_aes_256_gcm(), key.data(), out.data(), nullptr) != 1)
    fail("seal: cannot start AES-256-GCM");
  int written = 0;
  if (!associated_data.empty() &&
      EVP_EncryptUpdate(ctx.get(), nullptr, &written, associated_data.data(), static_cast<int>(associated_data.size())) != 1)
    fail("seal: associated data rejected");
  int total = 0;
  if (!plaintext.empty()) {
    if (EVP_EncryptUpdate(ctx.get(), out.data() + 12, &written, plaintext.data(), static_cast<int>(plaintext.size())) != 1)
      fail("seal: encryption failed");
    total = written;
  }
  if (EVP_EncryptFinal_ex(ctx.get(), out.data() + 12 + total, &written) != 1) fail("seal: encryption failed");
  total += written;
  OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, out.data() + 12 + total, 16),
      OSSL_PARAM_construct_end()};
  if (EVP_CIPHER_CTX_get_params(ctx.get(), params) != 1) fail("seal: cannot read the GCM tag");
  return out;
}

std::vector<std::uint8_t> open(const Key32& key, std::span<const std::uint8_t> sealed,
                               std::span<const std::uint8_t> associated_data) {
  if (sealed.size() < kSealOverheadBytes)
    throw core::Error("open: sealed message of " + std::to_string(sealed.size()) +
                          " bytes is shorter than nonce and tag (28 bytes)",
                      "the ciphertext was truncated or forged");
  if (sealed.size() > (1u << 30)) throw core::Error("open: sealed message larger than 1 GiB");
  const std::size_t body = sealed.size() - kSealOverheadBytes;
  std::vector<std::uint8_t> plaintext(body);
  CipherCtx ctx(EVP_CIPHER_CTX_new());
  if (!ctx || EVP_DecryptInit_ex2(ctx.get(), EVP_aes_256_gcm(), key.data(), sealed.data(), nullptr) != 1)
    fail("open: cannot start AES-256-GCM");
  int written = 0;
  if (!associated_data.empty() &&
      EVP_DecryptUpdate(ctx.get(), nullptr, &written, associated_data.data(), static_cast<int>(associated_data.size())) != 1)
    fail("open: associated data rejected");
  int total = 0;
  if (body > 0) {
    if (EVP_DecryptUpdate(ctx.get(), plaintext.data(), &written, sealed.data() + 12, static_cast<int>(body)) != 1)
      fail("open: decryption failed");
    total = written;
  }
  std::array<std::uint8_t, 16> tag;
  std::copy_n(sealed.data() + 12 + body, 16, tag.begin());
  OSSL_PARAM params[] = {OSSL_PARAM_construct_octet_string(OSSL_CIPHER_PARAM_AEAD_TAG, tag.data(), tag.size()),
                         OSSL_PARAM_construct_end()};
  if (EVP_CIPHER_CTX_set_params(ctx.get(), params) != 1) fail("open: cannot set the GCM tag");
  const bool authentic = EVP_DecryptFinal_ex(ctx.get(), plaintext.data() + total, &written) == 1;
  ERR_clear_error();
  if (!authentic) {
    // Unauthenticated plaintext must not outlive the failure.
    OPENSSL_cleanse(plaintext.data(), plaintext.size());
    throw core::Error("sealed message failed authentication: forged, corrupted, or sealed for another sender, "
                      "recipient or round",
                      "drop this message; a peer or the relay tampered with it");
  }
  return plaintext;
}

// ---- Shamir ----

std::vector<ShamirShare> shamir_split(std::span<const std::uint8_t> secret, std::uint32_t threshold,
                                      std::uint32_t shares) {
  if (secret.empty()) throw core::Error("shamir_split: empty secret");
  const std::size_t chunks = shamir_chunk_count(secret.size());
  if (chunks > kMaxShamirChunks)
    throw core::Error("shamir_split: secret of " + std::to_string(secret.size()) + " bytes exceeds " +
                      std::to_string(kMaxShamirChunks * kShamirChunkBytes));
  if (threshold == 0 || threshold > shares || shares > kMaxParticipants)
    throw core::Error("shamir_split: need 1 <= threshold (" + std::to_string(threshold) + ") <= shares (" +
                      std::to_string(shares) + ") <= " + std::to_string(kMaxParticipants));
  std::vector<ShamirShare> out(shares);
  for (std::uint32_t i = 0; i < shares; ++i) {
    out[i].x = i + 1;
    out[i].y.resize(chunks);
  }
  std::vector<std::uint64_t> coefficients(threshold);
  for (std::size_t c = 0; c < chunks; ++c) {
    std::uint64_t chunk = 0;
    for (std::size_t b = 0; b < kShamirChunkBytes && c * kShamirChunkBytes + b < secret.size(); ++b)
      chunk |= std::uint64_t(secret[c * kShamirChunkBytes + b]) << (8 * b);
    coefficients[0] = chunk;
    for (std::uint32_t k = 1; k < threshold; ++k) coefficients[k] = random_field_element();
    for (auto& share : out) {  // Horner
      std::uint64_t y = 0;
      for (std::uint32_t k = threshold; k-- > 0;) y = add(mul(y, share.x), coefficients[k]);
      share.y[c] = y;
    }
  }
  OPENSSL_cleanse(coefficients.data(), coefficients.size() * sizeof(std::uint64_t));
  return out;
}

std::vector<std::uint8_t> shamir_combine(std::span<const ShamirShare> shares, std::uint32_t threshold,
                                         std::size_t secret_size) {
  if (secret_size == 0 || shamir_chunk_count(secret_size) > kMaxShamirChunks)
    throw core::Error("shamir_combine: secret size " + std::to_string(secret_size) + " outside 1.." +
                      std::to_string(kMaxShamirChunks * kShamirChunkBytes));
  const std::size_t chunks = check_shares(shares, threshold, "shamir_combine");
  if (chunks != shamir_chunk_count(secret_size))
    throw core::Error("shamir_combine: shares have " + std::to_string(chunks) + " chunks, a " +
                      std::to_string(secret_size) + "-byte secret needs " +
                      std::to_string(shamir_chunk_count(secret_size)));
  // Lagrange basis at 0: lambda_i = prod_{j != i} x_j / (x_j - x_i).
  std::vector<std::uint64_t> lambda(shares.size());
  for (std::size_t i = 0; i < shares.size(); ++i) {
    std::uint64_t numerator = 1, denominator = 1;
    for (std::size_t j = 0; j < shares.size(); ++j) {
      if (j == i) continue;
      numerator = mul(numerator, shares[j].x);
      denominator = mul(denominator, sub(shares[j].x, shares[i].x));
    }
    lambda[i] = mul(numerator, inverse(denominator));
  }
  std::vector<std::uint8_t> secret(secret_size);
  for (std::size_t c = 0; c < chunks; ++c) {
    std::uint64_t value = 0;
    for (std::size_t i = 0; i < shares.size(); ++i) value = add(value, mul(lambda[i], shares[i].y[c]));
    const std::size_t bytes = std::min(kShamirChunkBytes, secret_size - c * kShamirChunkBytes);
    // A chunk holds `bytes` bytes; anything larger means the shares do not belong together (or
    // too few were honest), which a random field element shows with probability 1 - 2^-5 or better.
    if (value >> (8 * bytes)) {
      OPENSSL_cleanse(secret.data(), secret.size());
      throw core::Error("shamir_combine: the shares do not reconstruct a valid secret (they are inconsistent: "
                            "tampered, from different secrets, or fewer independent shares than the threshold)",
                        "check where the shares came from");
    }
    for (std::size_t b = 0; b < bytes; ++b) secret[c * kShamirChunkBytes + b] = static_cast<std::uint8_t>(value >> (8 * b));
  }
  return secret;
}

bool shamir_consistent(std::span<const ShamirShare> shares, std::uint32_t threshold) {
  const std::size_t chunks = check_shares(shares, threshold, "shamir_consistent");
  if (shares.size() <= threshold) return true;
  // Interpolate through the first `threshold` shares and evaluate at every other x.
  const std::size_t t = threshold;
  std::vector<std::uint64_t> inverse_denominator(t);  // 1 / prod_{m != i} (x_i - x_m)
  for (std::size_t i = 0; i < t; ++i) {
    std::uint64_t d = 1;
    for (std::size_t m = 0; m < t; ++m)
      if (m != i) d = mul(d, sub(shares[i].x, shares[m].x));
    inverse_denominator[i] = inverse(d);
  }
  std::vector<std::uint64_t> prefix(t + 1), suffix(t + 1);
  for (std::size_t j = t; j < shares.size(); ++j) {
    const std::uint64_t x = shares[j].x;
    prefix[0] = 1;
    for (std::size_t m = 0; m < t; ++m) prefix[m + 1] = mul(prefix[m], sub(x, shares[m].x));
    suffix[t] = 1;
    for (std::size_t m = t; m-- > 0;) suffix[m] = mul(suffix[m + 1], sub(x, shares[m].x));
    for (std::size_t c = 0; c < chunks; ++c) {
      std::uint64_t value = 0;
      for (std::size_t i = 0; i < t; ++i)
        value = add(value, mul(shares[i].y[c], mul(inverse_denominator[i], mul(prefix[i], suffix[i + 1]))));
      if (value != shares[j].y[c]) return false;
    }
  }
  return true;
}

// ---- fixed point ----

double FixedPoint::scale() const {
  if (!std::isfinite(clip) || !(clip > 0))
    throw core::Error("fixed-point encoding: clip must be a positive finite number, got " + std::to_string(clip));
  if (max_participants == 0) throw core::Error("fixed-point encoding: max_participants must be at least 1");
  const double s = std::floor(2147483647.0 / (clip * max_participants));
  if (!std::isfinite(s) || s < 1)
    throw core::Error("fixed-point encoding: clip (" + std::to_string(clip) + ") times max_participants (" +
                          std::to_string(max_participants) + ") leaves no room in 31 bits",
                      "lower the clip or the number of participants");
  return s;
}

void encode_fixed_point(std::span<const float> values, const FixedPoint& fp, std::span<std::uint32_t> out) {
  if (out.size() != values.size())
    throw core::Error("encode_fixed_point: output has " + std::to_string(out.size()) + " words for " +
                      std::to_string(values.size()) + " values");
  const double scale = fp.scale();
  const double limit = std::floor(2147483647.0 / fp.max_participants);
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i]))
      throw core::Error("encode_fixed_point: value " + std::to_string(i) + " is NaN or infinite",
                        "a diverged update cannot be aggregated; fix the local training");
    const double clipped = std::clamp(static_cast<double>(values[i]), -fp.clip, fp.clip);
    const double scaled = std::clamp(clipped * scale, -limit, limit);
    out[i] = static_cast<std::uint32_t>(static_cast<std::int32_t>(std::llround(scaled)));
  }
}

void decode_fixed_point(std::span<const std::uint32_t> sum, const FixedPoint& fp, std::span<float> out) {
  if (out.size() != sum.size())
    throw core::Error("decode_fixed_point: output has " + std::to_string(out.size()) + " values for " +
                      std::to_string(sum.size()) + " words");
  const double scale = fp.scale();
  for (std::size_t i = 0; i < sum.size(); ++i)
    out[i] = static_cast<float>(static_cast<double>(static_cast<std::int32_t>(sum[i])) / scale);
}

}  // namespace aegis::federated
