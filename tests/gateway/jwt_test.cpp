// JWT verification against tokens signed by an independent implementation (python3 `cryptography`,
// tests/fixtures/jwt_tokens.py): every algorithm, the registered claims, and the classic attacks.
#include "aegis/gateway/jwt.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>

#include "aegis/core/base64.h"
#include "aegis/core/error.h"
#include "test_support.h"

namespace aegis::gateway {
namespace {

using nlohmann::json;

// A fixed clock: the tokens' times are relative to it, so no test depends on the wall clock.
constexpr std::int64_t kNow = 1'800'000'000;

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

json claims(std::string subject = "alice") {
  return {{"sub", std::move(subject)}, {"iss", "https://issuer.test"}, {"aud", "aegis"}, {"iat", kNow - 60},
          {"exp", kNow + 3600}, {"roles", {"scorer"}}};
}

json spec(const std::string& name, const std::string& alg, const std::string& key, json payload = claims(),
          json header = json::object()) {
  return {{"name", name}, {"alg", alg}, {"key", key}, {"payload", std::move(payload)}, {"header", std::move(header)}};
}

class JwtTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<test::TempDir>("aegis_jwt");
    json specs = json::array();
    for (const char* alg : {"RS256", "RS384", "RS512", "PS256"}) specs.push_back(spec(alg, alg, "rsa"));
    for (const char* alg : {"HS256", "HS384", "HS512"}) specs.push_back(spec(alg, alg, "hmac"));
    specs.push_back(spec("ES256", "ES256", "ec256"));
    specs.push_back(spec("ES384", "ES384", "ec384"));

    json expired = claims();
    expired["exp"] = kNow - 3600;
    specs.push_back(spec("expired", "RS256", "rsa", expired));
    json just_expired = claims();
    just_expired["exp"] = kNow - 10;  // inside the default 30 s leeway
    specs.push_back(spec("within_leeway", "RS256", "rsa", just_expired));
    json fractional = claims();
    fractional["exp"] = static_cast<double>(kNow) - 40.5;
    specs.push_back(spec("fractional_expired", "RS256", "rsa", fractional));
    json future = claims();
    future["nbf"] = kNow + 600;
    specs.push_back(spec("nbf_future", "RS256", "rsa", future));
    json issued_later = claims();
    issued_later["iat"] = kNow + 600;
    specs.push_back(spec("iat_future", "RS256", "rsa", issued_later));
    json no_exp = claims();
    no_exp.erase("exp");
    specs.push_back(spec("no_exp", "RS256", "rsa", no_exp));
    json exp_text = claims();
    exp_text["exp"] = "tomorrow";
    specs.push_back(spec("exp_text", "RS256", "rsa", exp_text));
    json other_issuer = claims();
    other_issuer["iss"] = "https://evil.test";
    specs.push_back(spec("wrong_iss", "RS256", "rsa", other_issuer));
    json other_audience = claims();
    other_audience["aud"] = "someone-else";
    specs.push_back(spec("wrong_aud", "RS256", "rsa", other_audience));
    json audience_list = claims();
    audience_list["aud"] = {"other", "aegis"};
    specs.push_back(spec("aud_list", "RS256", "rsa", audience_list));
    json no_audience = claims();
    no_audience.erase("aud");
    specs.push_back(spec("no_aud", "RS256", "rsa", no_audience));

    specs.push_back(spec("alg_none", "none", "none"));
    specs.push_back(spec("alg_none_upper", "NONE", "none"));
    specs.push_back(spec("confusion", "HS256", "rsa_public_pem"));
    specs.push_back(spec("other_key", "RS256", "rsa_other"));
    specs.push_back(spec("crit", "RS256", "rsa", claims(), {{"crit", {"b64"}}, {"b64", false}}));
    specs.push_back(spec("kid_rsa", "RS256", "rsa", claims(), {{"kid", "rsa-1"}}));
    specs.push_back(spec("kid_ec", "ES256", "ec256", claims(), {{"kid", "ec-1"}}));
    specs.push_back(spec("kid_ec384", "ES384", "ec384", claims(), {{"kid", "ec384-1"}}));
    specs.push_back(spec("kid_unknown", "RS256", "rsa", claims(), {{"kid", "nobody"}}));
    specs.push_back(spec("kid_enc", "RS256", "rsa", claims(), {{"kid", "enc-1"}}));
    specs.push_back(spec("kid_rsa_forged", "RS256", "rsa_other", claims(), {{"kid", "rsa-1"}}));
    // ES256 claimed, but the key id points at the P-384 key.
    specs.push_back(spec("kid_ec384_as_es256", "ES256", "ec256", claims(), {{"kid", "ec384-1"}}));
    json big = claims();
    big["padding"] = std::string(9000, 'x');
    specs.push_back(spec("oversized", "RS256", "rsa", big));
    json not_json = spec("payload_not_json", "RS256", "rsa");
    not_json.erase("payload");
    not_json["raw_payload"] = "this is not json";
    specs.push_back(not_json);
    json array_payload = spec("payload_array", "RS256", "rsa");
    array_payload.erase("payload");
    array_payload["raw_payload"] = "[1,2,3]";
    specs.push_back(array_payload);
    json deep = spec("payload_deep", "RS256", "rsa");
    deep.erase("payload");
    deep["raw_payload"] = std::string(200, '[') + std::string(200, ']');
    specs.push_back(deep);

    const auto specs_file = dir_->path / "specs.json";
    const auto tokens_file = dir_->path / "tokens.json";
    std::ofstream(specs_file) << specs.dump();
    const std::string command = "/usr/bin/python3 '" + (test::source_dir() / "tests/fixtures/jwt_tokens.py").string() +
                                "' '" + (dir_->path / "keys").string() + "' < '" + specs_file.string() + "' > '" +
                                tokens_file.string() + "'";
    python_status_ = std::system(command.c_str());
    if (python_status_ == 0) {
      const json parsed = json::parse(slurp(tokens_file));
      for (const auto& [name, token] : parsed.items()) tokens_[name] = token.get<std::string>();
    }
  }
  static void TearDownTestSuite() {
    tokens_.clear();
    dir_.reset();
  }
  void SetUp() override {
    ASSERT_EQ(python_status_, 0) << "tests/fixtures/jwt_tokens.py needs /usr/bin/python3 with `cryptography`";
  }

  static std::string key_file(const std::string& name) { return slurp(dir_->path / "keys" / name); }
  static const std::string& token(const std::string& name) {
    const auto it = tokens_.find(name);
    if (it == tokens_.end()) throw std::runtime_error("no fixture token " + name);
    return it->second;
  }
  static JwtKey rsa_key() { return JwtKey::from_pem(key_file("rsa_public.pem")); }
  static JwtKey hmac_key() { return JwtKey::hmac(key_file("hmac_secret.txt")); }

  static JwtPolicy policy(std::vector<JwtAlgorithm> algorithms) {
    JwtPolicy p;
    p.algorithms = std::move(algorithms);
    p.issuer = "https://issuer.test";
    p.audiences = {"aegis"};
    return p;
  }
  static JwtVerifier rsa_verifier() { return JwtVerifier({rsa_key()}, policy({JwtAlgorithm::RS256})); }

  static inline std::unique_ptr<test::TempDir> dir_;
  static inline std::map<std::string, std::string> tokens_;
  static inline int python_status_ = -1;
};

// Replaces one character of `text` at `index` with a different base64url character.
std::string flip(std::string text, std::size_t index) {
  text[index] = text[index] == 'A' ? 'B' : 'A';
  return text;
}

TEST(Base64UrlTest, MatchesStandardBase64WithTheUrlAlphabet) {
  std::uint32_t state = 7;
  for (std::size_t size = 0; size < 70; ++size) {
    const auto bytes = test::pseudo_random_bytes(size, state);
    const std::string raw(bytes.begin(), bytes.end());
    // The reference: RFC 4648 base64 with '+' '/' swapped for '-' '_' and padding removed.
    std::string expected = core::encode_base64(raw);
    while (!expected.empty() && expected.back() == '=') expected.pop_back();
    for (auto& c : expected) c = c == '+' ? '-' : c == '/' ? '_' : c;
    const std::string encoded = encode_base64url(raw);
    EXPECT_EQ(encoded, expected);
    const auto decoded = decode_base64url(encoded);
    ASSERT_TRUE(decoded.has_value());
    EXPECT_EQ(*decoded, raw);
  }
}

TEST(Base64UrlTest, RejectsEverySecondSpelling) {
  EXPECT_FALSE(decode_base64url("QQ==").has_value()) << "padding";
  EXPECT_FALSE(decode_base64url("a+b/").has_value()) << "standard alphabet";
  EXPECT_FALSE(decode_base64url("QU JD").has_value()) << "whitespace";
  EXPECT_FALSE(decode_base64url("QUJDR").has_value()) << "length 1 mod 4";
  EXPECT_FALSE(decode_base64url("QR").has_value()) << "non-zero unused bits";
  EXPECT_EQ(decode_base64url("QQ").value_or("?"), "A");
  EXPECT_EQ(decode_base64url("").value_or("?"), "");
}

TEST_F(JwtTest, AcceptsEveryAlgorithmFromAnIndependentSigner) {
  std::vector<JwtKey> keys = {rsa_key(), hmac_key(), JwtKey::from_pem(key_file("ec256_public.pem")),
                              JwtKey::from_pem(key_file("ec384_public.pem"))};
  const std::vector<std::pair<std::string, JwtAlgorithm>> algorithms = {
      {"RS256", JwtAlgorithm::RS256}, {"RS384", JwtAlgorithm::RS384}, {"RS512", JwtAlgorithm::RS512},
      {"PS256", JwtAlgorithm::PS256}, {"HS256", JwtAlgorithm::HS256}, {"HS384", JwtAlgorithm::HS384},
      {"HS512", JwtAlgorithm::HS512}, {"ES256", JwtAlgorithm::ES256}, {"ES384", JwtAlgorithm::ES384}};
  for (const auto& [name, algorithm] : algorithms) {
    JwtVerifier verifier(keys, policy({algorithm}));
    const auto result = verifier.verify(token(name), kNow);
    EXPECT_TRUE(result.valid) << name << ": " << result.reason;
    EXPECT_EQ(result.claims.value("sub", ""), "alice") << name;
    EXPECT_EQ(result.header.value("alg", ""), name);
  }
}

TEST_F(JwtTest, RefusesAnAlgorithmOutsideTheAllowList) {
  JwtVerifier verifier({rsa_key(), hmac_key()}, policy({JwtAlgorithm::RS256}));
  EXPECT_TRUE(verifier.verify(token("RS256"), kNow).valid);
  EXPECT_EQ(verifier.verify(token("HS256"), kNow).reason, "algorithm not allowed");
  EXPECT_EQ(verifier.verify(token("RS512"), kNow).reason, "algorithm not allowed");
  EXPECT_EQ(verifier.verify(token("PS256"), kNow).reason, "algorithm not allowed");
}

TEST_F(JwtTest, NeverAcceptsAlgNone) {
  JwtVerifier verifier({rsa_key(), hmac_key(), JwtKey::from_pem(key_file("ec256_public.pem"))},
                       policy({JwtAlgorithm::RS256, JwtAlgorithm::HS256, JwtAlgorithm::ES256}));
  for (const char* name : {"alg_none", "alg_none_upper"}) {
    const auto result = verifier.verify(token(name), kNow);
    EXPECT_FALSE(result.valid) << name;
    EXPECT_EQ(result.reason, "algorithm not allowed") << name;
  }
  EXPECT_FALSE(parse_jwt_algorithm("none").has_value());
}

TEST_F(JwtTest, DefeatsAlgorithmConfusionWithTheRsaPublicKeyAsHmacSecret) {
  // Allow-list without HS256: refused before any key is touched.
  EXPECT_EQ(rsa_verifier().verify(token("confusion"), kNow).reason, "algorithm not allowed");
  // Both allowed: the RSA key is typed and never serves as an HMAC secret, so only the real
  // secret is tried and the forged MAC fails.
  JwtVerifier both({rsa_key(), hmac_key()}, policy({JwtAlgorithm::RS256, JwtAlgorithm::HS256}));
  const auto result = both.verify(token("confusion"), kNow);
  EXPECT_FALSE(result.valid);
  EXPECT_EQ(result.reason, "bad signature");
  EXPECT_TRUE(both.verify(token("HS256"), kNow).valid);
  // HS256 allowed with only the RSA key configured is a configuration error, not a fallback.
  EXPECT_THROW(JwtVerifier({rsa_key()}, policy({JwtAlgorithm::RS256, JwtAlgorithm::HS256})), core::Error);
}

TEST_F(JwtTest, ChecksExpiryNotBeforeAndIssuedAtWithLeeway) {
  const JwtVerifier verifier = rsa_verifier();
  EXPECT_EQ(verifier.verify(token("expired"), kNow).reason, "expired");
  EXPECT_EQ(verifier.verify(token("fractional_expired"), kNow).reason, "expired");
  EXPECT_TRUE(verifier.verify(token("within_leeway"), kNow).valid);
  EXPECT_EQ(verifier.verify(token("nbf_future"), kNow).reason, "not yet valid");
  EXPECT_TRUE(verifier.verify(token("nbf_future"), kNow + 600).valid);
  EXPECT_EQ(verifier.verify(token("iat_future"), kNow).reason, "issued in the future");
  EXPECT_EQ(verifier.verify(token("no_exp"), kNow).reason, "no expiry (exp)");
  EXPECT_EQ(verifier.verify(token("exp_text"), kNow).reason, "malformed exp claim");
  // The valid token expires an hour after kNow.
  EXPECT_TRUE(verifier.verify(token("RS256"), kNow + 3600 + 29).valid);
  EXPECT_EQ(verifier.verify(token("RS256"), kNow + 3600 + 30).reason, "expired");

  JwtPolicy strict = policy({JwtAlgorithm::RS256});
  strict.leeway_seconds = 0;
  EXPECT_EQ(JwtVerifier({rsa_key()}, strict).verify(token("within_leeway"), kNow).reason, "expired");
  JwtPolicy lenient = policy({JwtAlgorithm::RS256});
  lenient.require_expiry = false;
  EXPECT_TRUE(JwtVerifier({rsa_key()}, lenient).verify(token("no_exp"), kNow).valid);
}

TEST_F(JwtTest, ChecksIssuerAndAudience) {
  const JwtVerifier verifier = rsa_verifier();
  EXPECT_EQ(verifier.verify(token("wrong_iss"), kNow).reason, "wrong issuer");
  EXPECT_EQ(verifier.verify(token("wrong_aud"), kNow).reason, "wrong audience");
  EXPECT_EQ(verifier.verify(token("no_aud"), kNow).reason, "wrong audience");
  EXPECT_TRUE(verifier.verify(token("aud_list"), kNow).valid);

  JwtPolicy open = policy({JwtAlgorithm::RS256});
  open.issuer.clear();
  open.audiences.clear();
  const JwtVerifier unchecked({rsa_key()}, open);
  EXPECT_TRUE(unchecked.verify(token("wrong_iss"), kNow).valid);
  EXPECT_TRUE(unchecked.verify(token("wrong_aud"), kNow).valid);
}

TEST_F(JwtTest, RejectsTamperedPayloadAndSignature) {
  const JwtVerifier verifier = rsa_verifier();
  const std::string& original = token("RS256");
  const auto first_dot = original.find('.');
  const auto second_dot = original.rfind('.');

  json elevated = claims("mallory");
  elevated["roles"] = {"admin"};
  const std::string forged = original.substr(0, first_dot + 1) + encode_base64url(elevated.dump()) +
                             original.substr(second_dot);
  EXPECT_EQ(verifier.verify(forged, kNow).reason, "bad signature");

  const std::size_t middle = second_dot + (original.size() - second_dot) / 2;
  EXPECT_EQ(verifier.verify(flip(original, middle), kNow).reason, "bad signature");
  EXPECT_EQ(verifier.verify(token("other_key"), kNow).reason, "bad signature");

  // ECDSA: a flipped byte, and a signature cut short (raw r||s must be exactly 64 bytes).
  JwtVerifier ec({JwtKey::from_pem(key_file("ec256_public.pem"))}, policy({JwtAlgorithm::ES256}));
  const std::string& es = token("ES256");
  const auto es_dot = es.rfind('.');
  EXPECT_EQ(ec.verify(flip(es, es_dot + 10), kNow).reason, "bad signature");
  const std::string short_signature = decode_base64url(es.substr(es_dot + 1)).value().substr(0, 63);
  EXPECT_EQ(ec.verify(es.substr(0, es_dot + 1) + encode_base64url(short_signature), kNow).reason, "bad signature");

  // HMAC: one flipped character of the MAC.
  JwtVerifier hs({hmac_key()}, policy({JwtAlgorithm::HS256}));
  const std::string& mac = token("HS256");
  EXPECT_EQ(hs.verify(flip(mac, mac.rfind('.') + 5), kNow).reason, "bad signature");
}

TEST_F(JwtTest, RejectsMalformedTokens) {
  const JwtVerifier verifier = rsa_verifier();
  const std::string& good = token("RS256");
  const std::string header = good.substr(0, good.find('.'));
  const std::string signature = good.substr(good.rfind('.'));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "malformed token"},
      {"abc", "malformed token"},
      {"a.b", "malformed token"},
      {good + ".extra", "malformed token"},
      {"@@@." + good.substr(good.find('.') + 1), "malformed token header"},
      {encode_base64url("not json") + ".e30" + signature, "malformed token header"},
      {encode_base64url("[\"RS256\"]") + ".e30" + signature, "malformed token header"},
      {encode_base64url("{\"typ\":\"JWT\"}") + ".e30" + signature, "malformed token header"},
      {encode_base64url("{\"alg\":256}") + ".e30" + signature, "malformed token header"},
      {encode_base64url("{\"alg\":\"RS256\",\"kid\":7}") + ".e30" + signature, "malformed token header"},
      {header + "==.e30" + signature, "malformed token header"},
      {good.substr(0, good.rfind('.') + 1), "malformed signature"},
      {good.substr(0, good.rfind('.') + 1) + "***", "malformed signature"},
  };
  for (const auto& [text, reason] : cases) {
    const auto result = verifier.verify(text, kNow);
    EXPECT_FALSE(result.valid) << text;
    EXPECT_EQ(result.reason, reason) << text;
  }
  // Signed, but the payload is not a JSON object (or nests absurdly deep).
  EXPECT_EQ(verifier.verify(token("payload_not_json"), kNow).reason, "malformed claims");
  EXPECT_EQ(verifier.verify(token("payload_array"), kNow).reason, "malformed claims");
  EXPECT_EQ(verifier.verify(token("payload_deep"), kNow).reason, "malformed claims");
  EXPECT_EQ(verifier.verify(token("crit"), kNow).reason, "unsupported critical header");
}

TEST_F(JwtTest, BoundsTokenLength) {
  ASSERT_GT(token("oversized").size(), 8192u);
  EXPECT_EQ(rsa_verifier().verify(token("oversized"), kNow).reason, "token too long");
  EXPECT_EQ(rsa_verifier().verify(std::string(1 << 20, 'a'), kNow).reason, "token too long");
  JwtPolicy roomy = policy({JwtAlgorithm::RS256});
  roomy.max_token_bytes = 16 * 1024;
  EXPECT_TRUE(JwtVerifier({rsa_key()}, roomy).verify(token("oversized"), kNow).valid);
}

TEST_F(JwtTest, SelectsJwksKeysByKid) {
  const auto keys = JwtKey::from_jwks(key_file("jwks.json"));
  // The "enc" key and the Ed25519 key are skipped; RSA, P-256 and P-384 remain.
  ASSERT_EQ(keys.size(), 3u);
  EXPECT_EQ(keys[0].kid(), "rsa-1");
  EXPECT_EQ(keys[0].type(), JwtKey::Type::Rsa);
  EXPECT_EQ(keys[1].type(), JwtKey::Type::EcP256);
  EXPECT_EQ(keys[2].type(), JwtKey::Type::EcP384);
  JwtVerifier verifier(keys, policy({JwtAlgorithm::RS256, JwtAlgorithm::ES256, JwtAlgorithm::ES384}));
  EXPECT_TRUE(verifier.verify(token("kid_rsa"), kNow).valid);
  EXPECT_TRUE(verifier.verify(token("kid_ec"), kNow).valid);
  EXPECT_TRUE(verifier.verify(token("kid_ec384"), kNow).valid);
  EXPECT_TRUE(verifier.verify(token("RS256"), kNow).valid) << "no kid: every suitable key is tried";
  EXPECT_EQ(verifier.verify(token("kid_unknown"), kNow).reason, "unknown key id");
  EXPECT_EQ(verifier.verify(token("kid_enc"), kNow).reason, "unknown key id");
  EXPECT_EQ(verifier.verify(token("kid_rsa_forged"), kNow).reason, "bad signature");
  EXPECT_EQ(verifier.verify(token("kid_ec384_as_es256"), kNow).reason, "algorithm does not match key");
}

TEST_F(JwtTest, RefusesUnfitKeys) {
  EXPECT_THROW(JwtKey::from_pem(key_file("rsa1024_public.pem")), core::Error);
  EXPECT_THROW(JwtKey::from_pem(key_file("ec521_public.pem")), core::Error);
  EXPECT_THROW(JwtKey::from_pem(key_file("rsa_private.pem")), core::Error);
  EXPECT_THROW(JwtKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"), core::Error);
  EXPECT_THROW(JwtKey::from_jwks(key_file("jwks_off_curve.json")), core::Error);
  EXPECT_THROW(JwtKey::from_jwks("{\"keys\": 3}"), core::Error);
  EXPECT_THROW(JwtKey::from_jwks("not json"), core::Error);
  EXPECT_THROW(JwtKey::from_jwks("{\"keys\": [{\"kty\": \"RSA\", \"n\": \"AQAB\"}]}"), core::Error);
  EXPECT_THROW(JwtKey::from_jwks("{\"keys\": [{\"kty\": \"RSA\", \"use\": \"enc\", \"n\": \"AQAB\", \"e\": \"AQAB\"}]}"),
               core::Error)
      << "no usable key left";
  EXPECT_THROW(JwtKey::hmac(""), core::Error);
  // A certificate is as good as its public key.
  const JwtKey from_certificate = JwtKey::from_pem(key_file("rsa_cert.pem"));
  EXPECT_EQ(from_certificate.type(), JwtKey::Type::Rsa);
  EXPECT_TRUE(JwtVerifier({from_certificate}, policy({JwtAlgorithm::RS256})).verify(token("RS256"), kNow).valid);
}

TEST_F(JwtTest, SurvivesRandomAndMutatedTokens) {
  JwtVerifier verifier({rsa_key(), hmac_key(), JwtKey::from_pem(key_file("ec256_public.pem"))},
                       policy({JwtAlgorithm::RS256, JwtAlgorithm::HS256, JwtAlgorithm::ES256}));
  std::uint32_t state = 12345;
  const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \x01\xff";
  const std::vector<std::string> seeds = {token("RS256"), token("HS256"), token("ES256")};
  int accepted = 0;
  for (int round = 0; round < 3000; ++round) {
    std::string text;
    if (round % 3 == 0) {
      const auto bytes = test::pseudo_random_bytes(round % 300, state);
      text.assign(bytes.begin(), bytes.end());
    } else {
      text = seeds[static_cast<std::size_t>(round) % seeds.size()];
      const auto picks = test::pseudo_random_bytes(6, state);
      const std::size_t at = (picks[0] * 256u + picks[1]) % text.size();
      text[at] = alphabet[picks[2] % alphabet.size()];
      if (picks[3] % 4 == 0) text.erase((picks[4] * 256u + picks[5]) % text.size(), 1);
      if (text == seeds[static_cast<std::size_t>(round) % seeds.size()]) continue;
    }
    const auto result = verifier.verify(text, kNow);
    if (result.valid) {
      ++accepted;
    } else {
      EXPECT_FALSE(result.reason.empty());
    }
  }
  // A change that decodes to the same bytes cannot exist (strict base64url), so every mutation
  // that changed the token must have been refused.
  EXPECT_EQ(accepted, 0);
}

// Not a timing assertion: prints the cost of one verification per algorithm for the notes.
TEST_F(JwtTest, ReportsVerificationCostPerAlgorithm) {
  std::vector<JwtKey> keys = {rsa_key(), hmac_key(), JwtKey::from_pem(key_file("ec256_public.pem")),
                              JwtKey::from_pem(key_file("ec384_public.pem"))};
  for (const auto& [name, algorithm] : std::vector<std::pair<std::string, JwtAlgorithm>>{
           {"HS256", JwtAlgorithm::HS256}, {"RS256", JwtAlgorithm::RS256}, {"PS256", JwtAlgorithm::PS256},
           {"ES256", JwtAlgorithm::ES256}, {"ES384", JwtAlgorithm::ES384}}) {
    JwtVerifier verifier(keys, policy({algorithm}));
    constexpr int kRounds = 200;
    int valid = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kRounds; ++i) valid += verifier.verify(token(name), kNow).valid ? 1 : 0;
    const auto elapsed = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start);
    EXPECT_EQ(valid, kRounds);
    std::printf("[ jwt cost ] %s: %.1f us per verification\n", name.c_str(), elapsed.count() / kRounds);
  }
}

}  // namespace
}  // namespace aegis::gateway
