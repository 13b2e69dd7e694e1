// The secure-aggregation primitives against published known answers (RFC 7748, RFC 5869, RFC 8439),
// Shamir sharing against a vector computed independently, and the fixed-point encoding's no-wrap
// guarantee.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/federated/secure_aggregation.h"

namespace aegis::federated {
namespace {

std::vector<std::uint8_t> hex(std::string_view text) {
  std::vector<std::uint8_t> out;
  for (std::size_t i = 0; i + 1 < text.size(); i += 2) out.push_back(static_cast<std::uint8_t>(std::stoul(std::string(text.substr(i, 2)), nullptr, 16)));
  return out;
}

Key32 key32(std::string_view text) {
  auto bytes = hex(text);
  Key32 k{};
  EXPECT_EQ(bytes.size(), 32u);
  std::copy_n(bytes.begin(), std::min<std::size_t>(32, bytes.size()), k.begin());
  return k;
}

std::string hex_of(std::span<const std::uint8_t> bytes) {
  std::string out;
  for (auto b : bytes) {
    out += "0123456789abcdef"[b >> 4];
    out += "0123456789abcdef"[b & 15];
  }
  return out;
}

// Runs f and returns the core::Error's message; fails the test when nothing (or something else) is thrown.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const core::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected core::Error, got another exception: " << e.what();
    return {};
  }
  ADD_FAILURE() << "expected core::Error, nothing was thrown";
  return {};
}

// ---- X25519: RFC 7748 ----

TEST(SecAggCrypto, X25519Rfc7748Section52ScalarMultiplication) {
  // The two single-multiplication vectors. The second u-coordinate has its top bit set, which
  // X25519 must ignore.
  EXPECT_EQ(hex_of(x25519_agree(key32("a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4"),
                                key32("e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c"))),
            "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
  EXPECT_EQ(hex_of(x25519_agree(key32("4b66e9d4d1b4673c5ad22691957d6af5c11b6421e0ea01d42ca4169e7918ba0d"),
                                key32("e5210f12786811d3f4b7959d0538ae2c31dbe7106fc03c3efc4cd549c715a493"))),
            "95cbde9476e8907d7aade45cb4b873f88b595a68799fa152e6f8f7647aac7957");
}

TEST(SecAggCrypto, X25519Rfc7748Section61DiffieHellman) {
  const Key32 alice = key32("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  const Key32 bob = key32("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
  const Key32 alice_public = x25519_public_key(alice);
  const Key32 bob_public = x25519_public_key(bob);
  EXPECT_EQ(hex_of(alice_public), "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  EXPECT_EQ(hex_of(bob_public), "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  const std::string shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
  EXPECT_EQ(hex_of(x25519_agree(alice, bob_public)), shared);
  EXPECT_EQ(hex_of(x25519_agree(bob, alice_public)), shared);
}

TEST(SecAggCrypto, X25519GeneratesFreshConsistentPairs) {
  const auto a = x25519_generate();
  const auto b = x25519_generate();
  EXPECT_NE(a.private_key, b.private_key);
  EXPECT_EQ(x25519_public_key(a.private_key), a.public_key);
  EXPECT_EQ(x25519_agree(a.private_key, b.public_key), x25519_agree(b.private_key, a.public_key));
}

TEST(SecAggCrypto, X25519RefusesLowOrderPoints) {
  const auto a = x25519_generate();
  Key32 zero{};
  Key32 one{};
  one[0] = 1;
  // u = 0 and u = 1 are points of small order: every private key gives the all-zero secret.
  EXPECT_NE(error_of([&] { x25519_agree(a.private_key, zero); }).find("low-order"), std::string::npos);
  EXPECT_NE(error_of([&] { x25519_agree(a.private_key, one); }).find("low-order"), std::string::npos);
}

// ---- HKDF: RFC 5869 appendix A ----

TEST(SecAggCrypto, HkdfRfc5869TestCase1) {
  const std::vector<std::uint8_t> ikm(22, 0x0b);
  const auto salt = hex("000102030405060708090a0b0c");
  const auto info = hex("f0f1f2f3f4f5f6f7f8f9");
  EXPECT_EQ(hex_of(hkdf_sha256(ikm, salt, std::string_view(reinterpret_cast<const char*>(info.data()), info.size()), 42)),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865");
}

TEST(SecAggCrypto, HkdfRfc5869TestCase3EmptySaltAndInfo) {
  const std::vector<std::uint8_t> ikm(22, 0x0b);
  EXPECT_EQ(hex_of(hkdf_sha256(ikm, {}, "", 42)),
            "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8");
}

TEST(SecAggCrypto, HkdfRefusesImpossibleLengths) {
  const std::vector<std::uint8_t> ikm(32, 1);
  EXPECT_FALSE(error_of([&] { hkdf_sha256(ikm, {}, "x", 0); }).empty());
  EXPECT_FALSE(error_of([&] { hkdf_sha256(ikm, {}, "x", 255 * 32 + 1); }).empty());
  EXPECT_EQ(hkdf_sha256(ikm, {}, "x", 255 * 32).size(), 255u * 32);
}

// ---- ChaCha20 and the PRG: RFC 8439 ----

TEST(SecAggCrypto, ChaCha20Rfc8439Section242Encryption) {
  // Key 00..1f, nonce 00 00 00 00 00 00 00 4a 00 00 00 00, initial counter 1.
  Key32 key{};
  for (int i = 0; i < 32; ++i) key[i] = static_cast<std::uint8_t>(i);
  const std::array<std::uint8_t, 12> nonce{0, 0, 0, 0, 0, 0, 0, 0x4a, 0, 0, 0, 0};
  const std::string text =
      "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
  std::vector<std::uint8_t> data(text.begin(), text.end());
  chacha20_xor(key, 1, nonce, data);
  EXPECT_EQ(hex_of(data),
            "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0bf91b65c5524733ab8f593dabcd62b357"
            "1639d624e65152ab8f530c359f0861d807ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736"
            "5af90bbf74a35be6b40b8eedf2785e42874d");
}

TEST(SecAggCrypto, PrgIsTheChaCha20KeystreamRfc8439AppendixA1) {
  // Appendix A.1 test vectors #1 and #2: all-zero key and nonce, block counters 0 and 1, i.e. the
  // first 32 keystream words of the all-zero seed, read little-endian.
  const std::string keystream =
      "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
      "9f07e7be5551387a98ba977c732d080dcb0f29a048e3656912c6533e32ee7aed29b721769ce64e43d57133b074d839d531ed1f28510afb45ace10a1f4b794d6f";
  const auto bytes = hex(keystream);
  std::vector<std::uint32_t> words(32, 0);
  prg_add(Key32{}, words, false);
  for (std::size_t i = 0; i < words.size(); ++i) {
    const std::uint32_t expected = bytes[4 * i] | bytes[4 * i + 1] << 8 | bytes[4 * i + 2] << 16 |
                                   std::uint32_t(bytes[4 * i + 3]) << 24;
    EXPECT_EQ(words[i], expected) << "word " << i;
  }
  EXPECT_EQ(words[0], 0xade0b876u);
}

TEST(SecAggCrypto, PrgAddsAndSubtractsModulo2To32) {
  const auto seed = x25519_generate().private_key;  // any 32 random bytes
  std::vector<std::uint32_t> start(10000);
  for (std::size_t i = 0; i < start.size(); ++i) start[i] = static_cast<std::uint32_t>(i * 2654435761u);
  auto words = start;
  prg_add(seed, words, false);
  EXPECT_NE(words, start);
  std::vector<std::uint32_t> mask(start.size(), 0);
  prg_add(seed, mask, false);
  for (std::size_t i = 0; i < start.size(); ++i) ASSERT_EQ(words[i], start[i] + mask[i]);
  prg_add(seed, words, true);
  EXPECT_EQ(words, start);
  // The expansion does not depend on how it is chunked internally: a prefix matches.
  std::vector<std::uint32_t> prefix(5000, 0);
  prg_add(seed, prefix, false);
  EXPECT_TRUE(std::equal(prefix.begin(), prefix.end(), mask.begin()));
}

// ---- AES-256-GCM ----

TEST(SecAggCrypto, SealOpensOnlyWithTheSameKeyAndAssociatedData) {
  const Key32 key = x25519_generate().private_key;
  const std::vector<std::uint8_t> plaintext{1, 2, 3, 4, 5, 6, 7, 8, 9};
  const std::vector<std::uint8_t> ad{'r', 'o', 'u', 'n', 'd'};
  auto sealed = seal(key, plaintext, ad);
  EXPECT_EQ(sealed.size(), plaintext.size() + kSealOverheadBytes);
  EXPECT_EQ(open(key, sealed, ad), plaintext);
  EXPECT_NE(seal(key, plaintext, ad), sealed) << "nonces must be fresh";

  Key32 other = key;
  other[0] ^= 1;
  EXPECT_NE(error_of([&] { open(other, sealed, ad); }).find("authentication"), std::string::npos);
  const std::vector<std::uint8_t> other_ad{'r', 'o', 'u', 'n', 'e'};
  EXPECT_NE(error_of([&] { open(key, sealed, other_ad); }).find("authentication"), std::string::npos);
  for (std::size_t i = 0; i < sealed.size(); ++i) {
    auto forged = sealed;
    forged[i] ^= 0x80;
    EXPECT_NE(error_of([&] { open(key, forged, ad); }).find("authentication"), std::string::npos) << "byte " << i;
  }
  for (std::size_t n = 0; n < sealed.size(); ++n)
    EXPECT_FALSE(error_of([&] { open(key, std::span(sealed).first(n), ad); }).empty()) << "truncated to " << n;
}

// ---- Shamir over GF(2^61 - 1) ----

// An independent vector, computed with Python's big integers (not with this code):
//   p = 2**61 - 1; secret = b"Aegis-2017" (two chunks: 7 bytes, 3 bytes, little-endian)
//   c0 = int.from_bytes(secret[0:7], 'little') = 0x322d7369676541
//   c1 = int.from_bytes(secret[7:10], 'little') = 0x373130
//   f0(x) = c0 + (p - 2) x + 1234567890123456789 x^2;  f1(x) = c1 + 987654321987654321 x + (p - 1) x^2
//   y = [sum(a * x**k for k, a in enumerate(poly)) % p for poly in (f0, f1)] for x in 1..5
const std::vector<ShamirShare> kShamirVector = {
    {1, {1248691612671862356ull, 987654321991271392ull}},
    {2, {340709264614844819ull, 1975308643978925710ull}},
    {3, {1901862696804740860ull, 657119956752886075ull}},
    {4, {1320465890814162577ull, 1644774278740540389ull}},
    {5, {902361855856803921ull, 326585591514500750ull}},
};
const std::string kShamirSecret = "Aegis-2017";

TEST(SecAggCrypto, ShamirCombinesTheIndependentVectorFromEvery3Subset) {
  int subsets = 0;
  for (int a = 0; a < 5; ++a)
    for (int b = a + 1; b < 5; ++b)
      for (int c = b + 1; c < 5; ++c) {
        const std::vector<ShamirShare> three{kShamirVector[a], kShamirVector[b], kShamirVector[c]};
        auto secret = shamir_combine(three, 3, kShamirSecret.size());
        EXPECT_EQ(std::string(secret.begin(), secret.end()), kShamirSecret) << a << b << c;
        EXPECT_TRUE(shamir_consistent(three, 3));
        ++subsets;
      }
  EXPECT_EQ(subsets, 10);
  auto all = shamir_combine(kShamirVector, 3, kShamirSecret.size());
  EXPECT_EQ(std::string(all.begin(), all.end()), kShamirSecret);
  EXPECT_TRUE(shamir_consistent(kShamirVector, 3));
}

TEST(SecAggCrypto, ShamirBelowThresholdThrowsOrGivesAnotherSecret) {
  const std::vector<ShamirShare> two{kShamirVector[0], kShamirVector[3]};
  EXPECT_NE(error_of([&] { shamir_combine(two, 3, kShamirSecret.size()); }).find("threshold"), std::string::npos);
  // Lying about the threshold: two points define a line, not the quadratic.
  try {
    auto wrong = shamir_combine(two, 2, kShamirSecret.size());
    EXPECT_NE(std::string(wrong.begin(), wrong.end()), kShamirSecret);
  } catch (const core::Error&) {
  }
  // Four points of a quadratic do not lie on every line through two of them.
  EXPECT_FALSE(shamir_consistent(kShamirVector, 2));
}

TEST(SecAggCrypto, ShamirTamperedShareChangesTheResult) {
  for (std::size_t which = 0; which < 3; ++which) {
    std::vector<ShamirShare> three{kShamirVector[0], kShamirVector[2], kShamirVector[4]};
    three[which].y[1] = (three[which].y[1] + 1) % kShamirPrime;
    try {
      auto secret = shamir_combine(three, 3, kShamirSecret.size());
      EXPECT_NE(std::string(secret.begin(), secret.end()), kShamirSecret);
    } catch (const core::Error& e) {
      EXPECT_NE(std::string(e.what()).find("inconsistent"), std::string::npos) << e.what();
    }
  }
  auto five = kShamirVector;
  five[4].y[0] ^= 1;
  EXPECT_FALSE(shamir_consistent(five, 3));
}

TEST(SecAggCrypto, ShamirRefusesMalformedShares) {
  const std::size_t n = kShamirSecret.size();
  auto shares = kShamirVector;
  shares[1].x = shares[0].x;
  EXPECT_NE(error_of([&] { shamir_combine(shares, 3, n); }).find("same x"), std::string::npos);
  shares = kShamirVector;
  shares[2].x = 0;
  EXPECT_NE(error_of([&] { shamir_combine(shares, 3, n); }).find("x = 0"), std::string::npos);
  shares = kShamirVector;
  shares[0].y[0] = kShamirPrime;
  EXPECT_NE(error_of([&] { shamir_combine(shares, 3, n); }).find("outside the field"), std::string::npos);
  shares = kShamirVector;
  shares[3].y.push_back(1);
  EXPECT_NE(error_of([&] { shamir_combine(shares, 3, n); }).find("chunks"), std::string::npos);
  EXPECT_NE(error_of([&] { shamir_combine(kShamirVector, 3, 20); }).find("chunks"), std::string::npos);
  EXPECT_FALSE(error_of([&] { shamir_combine(kShamirVector, 0, n); }).empty());
}

TEST(SecAggCrypto, ShamirSplitRoundTripsAndHidesTheSecret) {
  const auto key = x25519_generate().private_key;
  auto shares = shamir_split(key, 3, 5);
  ASSERT_EQ(shares.size(), 5u);
  for (std::uint32_t i = 0; i < 5; ++i) {
    EXPECT_EQ(shares[i].x, i + 1);
    EXPECT_EQ(shares[i].y.size(), shamir_chunk_count(32));
  }
  EXPECT_TRUE(shamir_consistent(shares, 3));
  for (int a = 0; a < 5; ++a)
    for (int b = a + 1; b < 5; ++b)
      for (int c = b + 1; c < 5; ++c) {
        const std::vector<ShamirShare> three{shares[a], shares[b], shares[c]};
        auto secret = shamir_combine(three, 3, 32);
        EXPECT_TRUE(std::equal(secret.begin(), secret.end(), key.begin()));
      }
  // Fresh coefficients each time: two splittings of one secret differ.
  EXPECT_NE(shamir_split(key, 3, 5), shares);
  // Threshold 1 is the constant polynomial: every share is the secret.
  auto copies = shamir_split(std::span<const std::uint8_t>(key).first(7), 1, 3);
  std::uint64_t chunk = 0;
  for (int b = 0; b < 7; ++b) chunk |= std::uint64_t(key[b]) << (8 * b);
  for (const auto& s : copies) EXPECT_EQ(s.y[0], chunk);
  EXPECT_FALSE(error_of([&] { shamir_split(key, 4, 3); }).empty());
  EXPECT_FALSE(error_of([&] { shamir_split(key, 0, 3); }).empty());
  EXPECT_FALSE(error_of([&] { shamir_split({}, 2, 3); }).empty());
}

// ---- fixed point ----

TEST(SecAggCrypto, FixedPointScaleLeavesRoomForEveryParticipant) {
  FixedPoint fp{1.0, 5};
  EXPECT_EQ(fp.scale(), std::floor(2147483647.0 / 5));
  EXPECT_FALSE(error_of([] { FixedPoint{0.0, 5}.scale(); }).empty());
  EXPECT_FALSE(error_of([] { FixedPoint{1.0, 0}.scale(); }).empty());
  EXPECT_FALSE(error_of([] { FixedPoint{std::numeric_limits<double>::infinity(), 1}.scale(); }).empty());
  EXPECT_FALSE(error_of([] { FixedPoint{3e9, 1}.scale(); }).empty());
}

TEST(SecAggCrypto, FixedPointRoundTripsWithinQuantisation) {
  const FixedPoint fp{2.0, 100};
  std::vector<float> values;
  for (int i = -1000; i <= 1000; ++i) values.push_back(static_cast<float>(i) / 500.0f);  // -2 .. 2
  values.push_back(3.5f);   // clamps to 2
  values.push_back(-7.0f);  // clamps to -2
  std::vector<std::uint32_t> words(values.size());
  encode_fixed_point(values, fp, words);
  std::vector<float> back(values.size());
  decode_fixed_point(words, fp, back);
  const double step = 1.0 / fp.scale();
  for (std::size_t i = 0; i + 2 < values.size(); ++i) EXPECT_NEAR(back[i], values[i], step) << i;
  EXPECT_NEAR(back[back.size() - 2], 2.0f, step);
  EXPECT_NEAR(back.back(), -2.0f, step);
  EXPECT_EQ(static_cast<std::int32_t>(words[0]), -static_cast<std::int32_t>(words[2000]));  // symmetric
}

TEST(SecAggCrypto, FixedPointSumOfMaxParticipantsAtTheClipDoesNotWrap) {
  // Clips that are not powers of two, so that clip * scale is not an integer. The last case rounds
  // up past floor((2^31 - 1) / 10): clip * scale = 214748364.6 with scale = 10^6, and ten values
  // of 214748365 would sum to 2^31 + 2, which only the integer clamp prevents.
  const std::vector<FixedPoint> cases{{1.37, 1}, {1.37, 3}, {1.37, 7}, {1.37, 1000}, {214.7483646, 10}};
  for (const auto& fp : cases) {
    for (float sign : {1.0f, -1.0f}) {
      std::vector<float> value{static_cast<float>(sign * 2 * fp.clip)};  // clamps to exactly the clip
      std::vector<std::uint32_t> word(1);
      encode_fixed_point(value, fp, word);
      std::uint32_t sum = 0;
      for (std::uint32_t p = 0; p < fp.max_participants; ++p) sum += word[0];
      std::vector<float> decoded(1);
      decode_fixed_point(std::span(&sum, 1), fp, decoded);
      const double expected = sign * fp.clip * fp.max_participants;
      EXPECT_EQ(decoded[0] > 0, sign > 0) << "the sum wrapped around: clip " << fp.clip << ", " << fp.max_participants;
      EXPECT_NEAR(decoded[0], expected, fp.max_participants / fp.scale() + 1e-6 * std::abs(expected))
          << "clip " << fp.clip << ", " << fp.max_participants << " participants";
    }
  }
}

TEST(SecAggCrypto, FixedPointRefusesNaNAndInfinity) {
  const FixedPoint fp{1.0, 2};
  std::vector<std::uint32_t> out(2);
  std::vector<float> nan{0.5f, std::numeric_limits<float>::quiet_NaN()};
  std::vector<float> inf{std::numeric_limits<float>::infinity(), 0.5f};
  EXPECT_NE(error_of([&] { encode_fixed_point(nan, fp, out); }).find("value 1"), std::string::npos);
  EXPECT_NE(error_of([&] { encode_fixed_point(inf, fp, out); }).find("value 0"), std::string::npos);
  std::vector<std::uint32_t> short_out(1);
  EXPECT_FALSE(error_of([&] { encode_fixed_point(std::vector<float>{1, 2}, fp, short_out); }).empty());
}

}  // namespace
}  // namespace aegis::federated
