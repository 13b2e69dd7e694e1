// The api_key, jwt and rbac filters as the gateway builds them from YAML: identities, 401/403
// answers, configuration errors that name the line, and hostile Authorization headers.
#include "aegis/gateway/auth_filters.h"

#include <gtest/gtest.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iterator>
#include <map>
#include <memory>
#include <thread>

#include "aegis/core/error.h"
#include "aegis/gateway/jwt.h"
#include "test_support.h"

namespace aegis::gateway {
namespace {

using nlohmann::json;

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Exchange request(std::string method, std::vector<Header> headers = {}) {
  Exchange exchange;
  exchange.request.method = std::move(method);
  exchange.request.target = exchange.request.path = "/v1/score";
  exchange.request.headers = std::move(headers);
  exchange.request.client_ip = "127.0.0.1";
  return exchange;
}

Exchange bearer(const std::string& credential, std::string method = "POST") {
  return request(std::move(method), {{"authorization", "Bearer " + credential}});
}

std::string response_header(const FilterResult& result, const std::string& name) {
  for (const auto& [key, value] : result.headers)
    if (key == name) return value;
  return {};
}

std::string metrics_of(const Filter& filter) {
  MetricsWriter writer;
  filter.write_metrics(writer, {{"route", "score"}});
  return writer.text();
}

// A config file on disk, so that errors can be checked for "FILE:LINE".
struct ConfigFile {
  test::TempDir dir{"aegis_auth_config"};
  std::filesystem::path path;
  YAML::Node root;
  explicit ConfigFile(const std::string& text) : path(dir.path / "gateway.yaml") {
    std::ofstream(path) << text;
    root = YAML::LoadFile(path.string());
  }
  FilterBuildContext context() const {
    FilterBuildContext c;
    c.config_file = path.string();
    c.route_name = "score";
    c.config_dir = dir.path.string();
    return c;
  }
};

using Factory = std::unique_ptr<Filter> (*)(const YAML::Node&, const FilterBuildContext&);

std::unique_ptr<Filter> build(Factory factory, const std::string& name, const std::string& yaml,
                              const std::string& config_dir = {}) {
  const YAML::Node root = YAML::Load(yaml);
  FilterBuildContext context;
  context.config_file = "inline.yaml";
  context.route_name = "score";
  context.config_dir = config_dir;
  return factory(root[name], context);
}

// The message of the configuration error the factory throws, or a note that it threw none.
std::string config_error(Factory factory, const std::string& name, const std::string& yaml,
                         const std::string& config_dir = {}, std::string* file = nullptr) {
  ConfigFile config(yaml);
  FilterBuildContext context = config.context();
  if (!config_dir.empty()) context.config_dir = config_dir;
  if (file) *file = config.path.string();
  try {
    factory(config.root[name], context);
  } catch (const core::Error& error) {
    EXPECT_FALSE(error.hint().empty()) << error.what();
    std::string message = error.what();
    if (message.rfind(config.path.string(), 0) == 0) message.replace(0, config.path.string().size(), "FILE");
    return message;
  }
  return "no error";
}

// ---------------------------------------------------------------------------------------------

TEST(HashApiKeyTest, IsSha256InHex) {
  // FIPS 180-2 appendix B.1: SHA-256("abc").
  EXPECT_EQ(hash_api_key("abc"), "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_NE(hash_api_key("key-1"), hash_api_key("key-2"));
}

class ApiKeyFilterTest : public ::testing::Test {
 protected:
  static std::string config(const std::string& extra = {}) {
    return "api_key:\n"
           "  keys:\n"
           "    - {id: alice, hash: \"" + hash_api_key(kAlice) + "\", roles: [scorer]}\n"
           "    - {id: bob, hash: \"" + hash_api_key(kBob) + "\", roles: [viewer, auditor]}\n" + extra;
  }
  static constexpr const char* kAlice = "ak_live_3f9a1c0e7b2d4a6f8e1c3b5d7f9a2c4e";
  static constexpr const char* kBob = "ak_live_0d2b4f6a8c1e3a5c7e9b1d3f5a7c9e2b";
};

TEST_F(ApiKeyFilterTest, AuthenticatesARightKey) {
  auto filter = build(make_api_key_filter, "api_key", config());
  Exchange exchange = bearer(kAlice);
  const FilterResult result = filter->on_request(exchange);
  EXPECT_FALSE(result.rejected) << result.message;
  EXPECT_EQ(exchange.identity.subject, "alice");
  EXPECT_EQ(exchange.identity.scheme, "api-key");
  EXPECT_EQ(exchange.identity.roles, std::vector<std::string>{"scorer"});
  ASSERT_EQ(exchange.verdicts.size(), 1u);
  EXPECT_EQ(exchange.verdicts[0].outcome, "allow");

  Exchange lower_case_scheme = request("GET", {{"authorization", std::string("bearer   ") + kBob + "  "}});
  EXPECT_FALSE(filter->on_request(lower_case_scheme).rejected);
  EXPECT_EQ(lower_case_scheme.identity.subject, "bob");
  EXPECT_EQ(lower_case_scheme.identity.roles, (std::vector<std::string>{"viewer", "auditor"}));
}

TEST_F(ApiKeyFilterTest, RejectsWrongAndMissingKeys) {
  auto filter = build(make_api_key_filter, "api_key", config());
  std::string wrong = kAlice;
  wrong.back() = wrong.back() == 'e' ? 'f' : 'e';
  Exchange bad = bearer(wrong);
  const FilterResult refused = filter->on_request(bad);
  EXPECT_TRUE(refused.rejected);
  EXPECT_EQ(refused.status, 401);
  EXPECT_EQ(refused.code, "invalid_api_key");
  EXPECT_NE(response_header(refused, "www-authenticate").find("error=\"invalid_token\""), std::string::npos);
  EXPECT_FALSE(bad.identity.authenticated());

  const std::vector<std::vector<Header>> without_key = {
      {}, {{"authorization", "Basic YWxpY2U6cHc="}}, {{"authorization", "Bearer "}}, {{"x-api-key", kAlice}}};
  for (const auto& headers : without_key) {
    Exchange missing = request("POST", headers);
    const FilterResult result = filter->on_request(missing);
    EXPECT_TRUE(result.rejected);
    EXPECT_EQ(result.status, 401);
    EXPECT_EQ(result.code, "missing_credentials");
    EXPECT_EQ(response_header(result, "www-authenticate"), "Bearer realm=\"aegis\"");
  }
  Exchange huge = bearer(std::string(100'000, 'k'));
  EXPECT_EQ(filter->on_request(huge).code, "invalid_api_key");

  Exchange good = bearer(kAlice);
  filter->on_request(good);
  const std::string metrics = metrics_of(*filter);
  EXPECT_NE(metrics.find("aegis_api_key_outcomes_total{route=\"score\",outcome=\"allow\"} 1"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("aegis_api_key_outcomes_total{route=\"score\",outcome=\"invalid\"} 2"), std::string::npos);
  EXPECT_NE(metrics.find("aegis_api_key_outcomes_total{route=\"score\",outcome=\"missing\"} 4"), std::string::npos);
  EXPECT_NE(metrics.find("aegis_api_key_requests_total{route=\"score\",key=\"alice\"} 1"), std::string::npos);
  EXPECT_NE(metrics.find("aegis_api_key_requests_total{route=\"score\",key=\"bob\"} 0"), std::string::npos);
}

TEST_F(ApiKeyFilterTest, ReadsACustomHeader) {
  auto filter = build(make_api_key_filter, "api_key", config("  header: X-API-Key\n"));
  Exchange in_header = request("POST", {{"x-api-key", kBob}});
  EXPECT_FALSE(filter->on_request(in_header).rejected);
  EXPECT_EQ(in_header.identity.subject, "bob");
  Exchange in_authorization = bearer(kBob);
  const FilterResult result = filter->on_request(in_authorization);
  EXPECT_EQ(result.code, "missing_credentials");
  EXPECT_NE(response_header(result, "www-authenticate").find("x-api-key"), std::string::npos);
}

TEST_F(ApiKeyFilterTest, OptionalLetsAnonymousAndJwtsThroughButNotWrongKeys) {
  auto filter = build(make_api_key_filter, "api_key", config("  optional: true\n"));
  Exchange anonymous = request("GET");
  EXPECT_FALSE(filter->on_request(anonymous).rejected);
  EXPECT_FALSE(anonymous.identity.authenticated());
  Exchange jwt_shaped = bearer("eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln");
  EXPECT_FALSE(filter->on_request(jwt_shaped).rejected);
  EXPECT_FALSE(jwt_shaped.identity.authenticated());
  Exchange wrong = bearer("ak_live_not_a_key");
  EXPECT_EQ(filter->on_request(wrong).code, "invalid_api_key");
}

TEST_F(ApiKeyFilterTest, LoadsKeysFromAFileBesideTheConfig) {
  test::TempDir dir("aegis_keys");
  std::ofstream(dir.path / "keys.yaml") << "- id: carol\n  hash: \"" << hash_api_key("carol-secret-key-0001")
                                        << "\"\n  roles: admin\n";
  auto filter = build(make_api_key_filter, "api_key", "api_key: {keys_file: keys.yaml}\n", dir.path.string());
  Exchange exchange = bearer("carol-secret-key-0001");
  EXPECT_FALSE(filter->on_request(exchange).rejected);
  EXPECT_EQ(exchange.identity.subject, "carol");
  EXPECT_EQ(exchange.identity.roles, std::vector<std::string>{"admin"});
}

// ---------------------------------------------------------------------------------------------

class JwtFilterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<test::TempDir>("aegis_jwt_filter");
    const std::int64_t now = unix_now();
    auto claims = [&](json extra) {
      json c = {{"sub", "dana"}, {"iss", "https://issuer.test"}, {"aud", "aegis"}, {"iat", now - 5},
                {"exp", now + 3600}, {"roles", {"scorer"}}, {"scope", "read write"}};
      for (auto& [key, value] : extra.items()) c[key] = value;
      return c;
    };
    auto spec = [](std::string name, std::string alg, std::string key, json payload, json header = json::object()) {
      return json{{"name", std::move(name)}, {"alg", std::move(alg)}, {"key", std::move(key)},
                  {"payload", std::move(payload)}, {"header", std::move(header)}};
    };
    json no_subject = claims({});
    no_subject.erase("sub");
    const json specs = {
        spec("valid", "RS256", "rsa", claims({})),
        spec("valid_ec", "ES256", "ec256", claims({{"sub", "erin"}}), {{"kid", "ec-1"}}),
        spec("expired", "RS256", "rsa", claims({{"exp", now - 3600}})),
        spec("wrong_aud", "RS256", "rsa", claims({{"aud", "billing"}})),
        spec("nested_roles", "RS256", "rsa", claims({{"realm_access", {{"roles", {"admin", "auditor"}}}}})),
        spec("no_subject", "RS256", "rsa", no_subject),
        spec("viewer", "RS256", "rsa", claims({{"sub", "vic"}, {"roles", {"viewer"}}, {"scope", ""}})),
        spec("alg_none", "none", "none", claims({})),
        spec("confusion", "HS256", "rsa_public_pem", claims({})),
        spec("hs256", "HS256", "hmac", claims({{"sub", "hal"}})),
    };
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
      ::setenv("AEGIS_TEST_JWT_SECRET", slurp(dir_->path / "keys" / "hmac_secret.txt").c_str(), 1);
    }
  }
  static void TearDownTestSuite() {
    tokens_.clear();
    dir_.reset();
  }
  void SetUp() override {
    ASSERT_EQ(python_status_, 0) << "tests/fixtures/jwt_tokens.py needs /usr/bin/python3 with `cryptography`";
  }

  static std::unique_ptr<Filter> rsa_filter(const std::string& extra = {}) {
    return build(make_jwt_filter, "jwt",
                 "jwt:\n"
                 "  algorithms: [RS256]\n"
                 "  public_key_file: keys/rsa_public.pem\n"
                 "  issuer: https://issuer.test\n"
                 "  audience: [aegis, other]\n" +
                     extra,
                 dir_->path.string());
  }
  static const std::string& token(const std::string& name) { return tokens_.at(name); }

  static inline std::unique_ptr<test::TempDir> dir_;
  static inline std::map<std::string, std::string> tokens_;
  static inline int python_status_ = -1;
};

TEST_F(JwtFilterTest, AuthenticatesAValidTokenWithRolesAndScopes) {
  auto filter = rsa_filter();
  Exchange exchange = bearer(token("valid"));
  const FilterResult result = filter->on_request(exchange);
  EXPECT_FALSE(result.rejected) << result.message;
  EXPECT_EQ(exchange.identity.subject, "dana");
  EXPECT_EQ(exchange.identity.scheme, "jwt");
  EXPECT_EQ(exchange.identity.roles, (std::vector<std::string>{"scorer", "read", "write"}));

  auto nested = rsa_filter("  roles_claim: realm_access.roles\n");
  Exchange keycloak = bearer(token("nested_roles"));
  EXPECT_FALSE(nested->on_request(keycloak).rejected);
  EXPECT_EQ(keycloak.identity.roles, (std::vector<std::string>{"admin", "auditor"}));
}

TEST_F(JwtFilterTest, AnswersBadTokensWith401AndAReason) {
  auto filter = rsa_filter();
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"expired", "expired"},
      {"wrong_aud", "wrong audience"},
      {"alg_none", "algorithm not allowed"},
      {"confusion", "algorithm not allowed"},
      {"valid_ec", "algorithm not allowed"},
      {"no_subject", "no subject (sub)"},
  };
  for (const auto& [name, reason] : cases) {
    Exchange exchange = bearer(token(name));
    const FilterResult result = filter->on_request(exchange);
    EXPECT_TRUE(result.rejected) << name;
    EXPECT_EQ(result.status, 401) << name;
    EXPECT_EQ(result.code, "invalid_token") << name;
    EXPECT_NE(result.message.find(reason), std::string::npos) << name << ": " << result.message;
    EXPECT_NE(response_header(result, "www-authenticate").find("error_description=\"" + reason + "\""),
              std::string::npos)
        << name;
    EXPECT_FALSE(exchange.identity.authenticated()) << name;
  }
  Exchange missing = request("GET");
  EXPECT_EQ(filter->on_request(missing).code, "missing_credentials");
  Exchange oversized = bearer(std::string(9000, 'e'));
  EXPECT_NE(filter->on_request(oversized).message.find("token too long"), std::string::npos);
  const std::string metrics = metrics_of(*filter);
  EXPECT_NE(metrics.find("aegis_jwt_outcomes_total{route=\"score\",outcome=\"expired\"} 1"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("aegis_jwt_outcomes_total{route=\"score\",outcome=\"algorithm not allowed\"} 3"),
            std::string::npos);
}

TEST_F(JwtFilterTest, VerifiesJwksAndHmacKeysTogether) {
  auto filter = build(make_jwt_filter, "jwt",
                      "jwt:\n"
                      "  algorithms: [RS256, ES256, HS256]\n"
                      "  jwks_file: keys/jwks.json\n"
                      "  secret_env: AEGIS_TEST_JWT_SECRET\n"
                      "  audience: aegis\n",
                      dir_->path.string());
  for (const auto& [name, subject] : std::vector<std::pair<std::string, std::string>>{
           {"valid", "dana"}, {"valid_ec", "erin"}, {"hs256", "hal"}}) {
    Exchange exchange = bearer(token(name));
    const FilterResult result = filter->on_request(exchange);
    EXPECT_FALSE(result.rejected) << name << ": " << result.message;
    EXPECT_EQ(exchange.identity.subject, subject);
  }
  // HS256 is allowed here, yet the RSA public key still cannot serve as the HMAC secret.
  Exchange confusion = bearer(token("confusion"));
  EXPECT_NE(filter->on_request(confusion).message.find("bad signature"), std::string::npos);
}

TEST_F(JwtFilterTest, CachesVerifiedTokensButNotPastTheirExpiry) {
  auto filter = build(make_jwt_filter, "jwt",
                      "jwt: {algorithms: [HS256], secret_env: AEGIS_TEST_JWT_SECRET, leeway_seconds: 0}\n");
  // Signed here with OpenSSL's HMAC so that the expiry can be two seconds away.
  const std::int64_t expiry = unix_now() + 2;
  const std::string signing_input = encode_base64url(R"({"alg":"HS256","typ":"JWT"})") + "." +
                                    encode_base64url(json{{"sub", "quick"}, {"exp", expiry}}.dump());
  const std::string secret = slurp(dir_->path / "keys" / "hmac_secret.txt");
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_length = 0;
  HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
       reinterpret_cast<const unsigned char*>(signing_input.data()), signing_input.size(), mac, &mac_length);
  const std::string short_lived =
      signing_input + "." + encode_base64url(std::string(reinterpret_cast<const char*>(mac), mac_length));

  Exchange first = bearer(short_lived);
  Exchange second = bearer(short_lived);
  const FilterResult first_result = filter->on_request(first);
  if (unix_now() >= expiry) GTEST_SKIP() << "the machine was too slow to verify within one second";
  EXPECT_FALSE(first_result.rejected) << first_result.message;
  EXPECT_FALSE(filter->on_request(second).rejected);
  EXPECT_EQ(second.identity.subject, "quick");
  std::string metrics = metrics_of(*filter);
  EXPECT_NE(metrics.find("aegis_jwt_cache_total{route=\"score\",result=\"hit\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("aegis_jwt_cache_total{route=\"score\",result=\"miss\"} 1"), std::string::npos);

  while (unix_now() < expiry) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  Exchange late = bearer(short_lived);
  const FilterResult late_result = filter->on_request(late);
  EXPECT_TRUE(late_result.rejected);
  EXPECT_NE(late_result.message.find("expired"), std::string::npos) << late_result.message;
  metrics = metrics_of(*filter);
  EXPECT_NE(metrics.find("aegis_jwt_cache_total{route=\"score\",result=\"hit\"} 2"), std::string::npos) << metrics;
}

TEST_F(JwtFilterTest, OptionalAndEarlierIdentities) {
  auto filter = rsa_filter("  optional: true\n  header: x-token\n");
  Exchange anonymous = request("GET");
  EXPECT_FALSE(filter->on_request(anonymous).rejected);
  EXPECT_FALSE(anonymous.identity.authenticated());
  Exchange custom = request("GET", {{"x-token", token("valid")}});
  EXPECT_FALSE(filter->on_request(custom).rejected);
  EXPECT_EQ(custom.identity.subject, "dana");
  Exchange bad = request("GET", {{"x-token", token("expired")}});
  EXPECT_TRUE(filter->on_request(bad).rejected) << "optional never lets a bad token through";

  auto required = rsa_filter();
  Exchange already = request("POST");
  already.identity = {"alice", "api-key", {"scorer"}};
  EXPECT_FALSE(required->on_request(already).rejected);
  EXPECT_EQ(already.identity.scheme, "api-key");
}

// ---------------------------------------------------------------------------------------------

const char* const kRbac =
    "rbac:\n"
    "  rules:\n"
    "    - {methods: [POST], roles: [scorer, admin]}\n"
    "    - {methods: [get], roles: [\"*\"]}\n"
    "  default: deny\n";

TEST(RbacFilterTest, AllowsAndDeniesByMethodAndRole) {
  auto filter = build(make_rbac_filter, "rbac", kRbac);
  Exchange scorer = request("POST");
  scorer.identity = {"alice", "api-key", {"scorer"}};
  EXPECT_FALSE(filter->on_request(scorer).rejected);

  Exchange viewer = request("POST");
  viewer.identity = {"vic", "jwt", {"viewer"}};
  const FilterResult forbidden = filter->on_request(viewer);
  EXPECT_TRUE(forbidden.rejected);
  EXPECT_EQ(forbidden.status, 403);
  EXPECT_EQ(forbidden.code, "forbidden");
  EXPECT_NE(forbidden.message.find("scorer, admin"), std::string::npos) << forbidden.message;
  EXPECT_NE(forbidden.message.find("route 'score'"), std::string::npos) << forbidden.message;

  Exchange viewer_get = request("GET");
  viewer_get.identity = viewer.identity;
  EXPECT_FALSE(filter->on_request(viewer_get).rejected);

  Exchange anonymous_get = request("GET");
  const FilterResult unauthenticated = filter->on_request(anonymous_get);
  EXPECT_EQ(unauthenticated.status, 401);
  EXPECT_FALSE(response_header(unauthenticated, "www-authenticate").empty());

  Exchange admin_delete = request("DELETE");
  admin_delete.identity = {"root", "jwt", {"admin"}};
  EXPECT_EQ(filter->on_request(admin_delete).status, 403) << "no rule names DELETE and the default denies";

  const std::string metrics = metrics_of(*filter);
  EXPECT_NE(metrics.find("aegis_rbac_decisions_total{route=\"score\",decision=\"allow\"} 2"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("aegis_rbac_decisions_total{route=\"score\",decision=\"forbidden\"} 2"), std::string::npos);
  EXPECT_NE(metrics.find("aegis_rbac_decisions_total{route=\"score\",decision=\"unauthenticated\"} 1"),
            std::string::npos);
}

TEST(RbacFilterTest, DefaultAllowCoversMethodsWithoutARule) {
  auto filter = build(make_rbac_filter, "rbac", "rbac: {rules: [{methods: [POST], roles: [admin]}], default: allow}\n");
  Exchange anonymous_get = request("GET");
  EXPECT_FALSE(filter->on_request(anonymous_get).rejected);
  Exchange anonymous_post = request("POST");
  EXPECT_EQ(filter->on_request(anonymous_post).status, 401);
}

TEST_F(JwtFilterTest, ChainOfApiKeyJwtAndRbac) {
  const std::string alice_key = "ak_chain_5e7c9a1b3d5f7e9c1a3b5d7f9e1c3a5b";
  std::vector<std::unique_ptr<Filter>> chain;
  chain.push_back(build(make_api_key_filter, "api_key",
                        "api_key:\n  optional: true\n  keys: [{id: alice, hash: \"" + hash_api_key(alice_key) +
                            "\", roles: [scorer]}]\n"));
  chain.push_back(rsa_filter("  optional: true\n"));
  chain.push_back(build(make_rbac_filter, "rbac", kRbac));
  auto run = [&](Exchange& exchange) {
    for (auto& filter : chain) {
      FilterResult result = filter->on_request(exchange);
      if (result.rejected) return result;
    }
    return FilterResult::pass();
  };
  Exchange by_key = bearer(alice_key);
  EXPECT_FALSE(run(by_key).rejected);
  EXPECT_EQ(by_key.identity.scheme, "api-key");
  Exchange by_token = bearer(token("valid"));
  EXPECT_FALSE(run(by_token).rejected);
  EXPECT_EQ(by_token.identity.scheme, "jwt");
  Exchange viewer = bearer(token("viewer"));
  EXPECT_EQ(run(viewer).status, 403);
  Exchange viewer_get = bearer(token("viewer"), "GET");
  EXPECT_FALSE(run(viewer_get).rejected);
  Exchange nobody = request("POST");
  const FilterResult unauthenticated = run(nobody);
  EXPECT_EQ(unauthenticated.status, 401);
  EXPECT_EQ(unauthenticated.code, "unauthenticated");
  Exchange expired = bearer(token("expired"));
  EXPECT_EQ(run(expired).code, "invalid_token");
  Exchange wrong_key = bearer("ak_chain_wrong");
  EXPECT_EQ(run(wrong_key).code, "invalid_api_key");
}

TEST_F(JwtFilterTest, RandomAuthorizationHeadersNeverAuthenticate) {
  std::vector<std::unique_ptr<Filter>> filters;
  filters.push_back(build(make_api_key_filter, "api_key",
                          "api_key: {optional: true, keys: [{id: a, hash: \"" + hash_api_key("k") + "\"}]}\n"));
  filters.push_back(rsa_filter());
  filters.push_back(build(make_rbac_filter, "rbac", kRbac));
  std::uint32_t state = 99;
  const std::vector<std::string> prefixes = {"", "Bearer ", "bearer\t", "Basic ", "Bearer eyJ"};
  for (int round = 0; round < 2000; ++round) {
    const auto bytes = test::pseudo_random_bytes(static_cast<std::size_t>(round % 700), state);
    std::string value = prefixes[static_cast<std::size_t>(round) % prefixes.size()];
    value.append(bytes.begin(), bytes.end());
    if (round % 7 == 0) value += "." + std::string(bytes.begin(), bytes.end()) + ".";
    Exchange exchange = request(round % 2 ? "GET" : "POST", {{"authorization", value}});
    bool rejected = false;
    for (auto& filter : filters) {
      const FilterResult result = filter->on_request(exchange);
      if (result.rejected) {
        EXPECT_TRUE(result.status == 401 || result.status == 403);
        EXPECT_FALSE(result.message.empty());
        rejected = true;
        break;
      }
    }
    EXPECT_TRUE(rejected) << "round " << round;
    EXPECT_FALSE(exchange.identity.authenticated()) << "round " << round;
  }
}

// ---------------------------------------------------------------------------------------------

TEST(AuthConfigTest, UnknownOptionsAndBadHashesNameTheirLine) {
  const std::string good_hash = hash_api_key("x");
  EXPECT_EQ(config_error(make_api_key_filter, "api_key",
                         "api_key:\n  keys: [{id: a, hash: \"" + good_hash + "\"}]\n  optinal: true\n")
                .substr(0, 9),
            "FILE:3:3:");
  const std::string bad_hash = config_error(make_api_key_filter, "api_key",
                                            "api_key:\n  keys:\n    - id: a\n      hash: md5:abcdef\n");
  EXPECT_EQ(bad_hash.substr(0, 7), "FILE:4:") << bad_hash;
  EXPECT_NE(bad_hash.find("bad hash format"), std::string::npos) << bad_hash;
  const std::string non_hex = config_error(make_api_key_filter, "api_key",
                                           "api_key:\n  keys:\n    - id: a\n      hash: \"sha256:" +
                                               std::string(63, 'a') + "g\"\n");
  EXPECT_EQ(non_hex.substr(0, 7), "FILE:4:") << non_hex;
  const std::string typo_in_entry = config_error(
      make_api_key_filter, "api_key", "api_key:\n  keys:\n    - id: a\n      hash: \"" + good_hash + "\"\n      role: [x]\n");
  EXPECT_EQ(typo_in_entry.substr(0, 7), "FILE:5:") << typo_in_entry;
  const std::string duplicate = config_error(make_api_key_filter, "api_key",
                                             "api_key:\n  keys:\n    - {id: a, hash: \"" + good_hash +
                                                 "\"}\n    - {id: a, hash: \"" + hash_api_key("y") + "\"}\n");
  EXPECT_EQ(duplicate.substr(0, 7), "FILE:4:") << duplicate;
  EXPECT_EQ(config_error(make_api_key_filter, "api_key", "api_key:\n  optional: maybe\n  keys: []\n").substr(0, 7),
            "FILE:2:");
  EXPECT_NE(config_error(make_api_key_filter, "api_key", "api_key:\n  header: authorization\n").find("no keys"),
            std::string::npos);
}

TEST(AuthConfigTest, KeyFileErrorsNameTheKeyFile) {
  test::TempDir dir("aegis_keys_bad");
  std::ofstream(dir.path / "keys.yaml") << "- id: a\n  hash: \"" << hash_api_key("a") << "\"\n- id: b\n  hash: nope\n";
  std::string config_file;
  const std::string bad_entry = config_error(make_api_key_filter, "api_key", "api_key:\n  keys_file: keys.yaml\n",
                                             dir.path.string(), &config_file);
  EXPECT_NE(bad_entry.find((dir.path / "keys.yaml").string() + ":4:"), std::string::npos) << bad_entry;
  const std::string missing =
      config_error(make_api_key_filter, "api_key", "api_key:\n  optional: true\n  keys_file: absent.yaml\n");
  EXPECT_EQ(missing.substr(0, 7), "FILE:3:") << missing;
  EXPECT_NE(missing.find("absent.yaml"), std::string::npos) << missing;
}

TEST_F(JwtFilterTest, JwtConfigErrorsNameTheirLine) {
  const std::string keys = dir_->path.string();
  auto jwt_error = [&](const std::string& yaml) { return config_error(make_jwt_filter, "jwt", yaml, keys); };
  const std::string none = jwt_error("jwt:\n  algorithms:\n    - RS256\n    - none\n  public_key_file: keys/rsa_public.pem\n");
  EXPECT_EQ(none.substr(0, 7), "FILE:4:") << none;
  EXPECT_NE(none.find("'none'"), std::string::npos) << none;
  const std::string unknown = jwt_error("jwt:\n  algorithms: [RS257]\n  public_key_file: keys/rsa_public.pem\n");
  EXPECT_EQ(unknown.substr(0, 7), "FILE:2:") << unknown;
  const std::string missing_file = jwt_error("jwt:\n  algorithms: [RS256]\n  public_key_file: keys/nope.pem\n");
  EXPECT_EQ(missing_file.substr(0, 7), "FILE:3:") << missing_file;
  EXPECT_NE(missing_file.find("nope.pem"), std::string::npos);
  const std::string private_key = jwt_error("jwt:\n  algorithms: [RS256]\n  public_key_file: keys/rsa_private.pem\n");
  EXPECT_NE(private_key.find("private key"), std::string::npos) << private_key;
  const std::string leeway =
      jwt_error("jwt:\n  algorithms: [RS256]\n  public_key_file: keys/rsa_public.pem\n  leeway_seconds: soon\n");
  EXPECT_EQ(leeway.substr(0, 7), "FILE:4:") << leeway;
  const std::string typo =
      jwt_error("jwt:\n  algorithms: [RS256]\n  public_key_file: keys/rsa_public.pem\n  audiance: aegis\n");
  EXPECT_EQ(typo.substr(0, 7), "FILE:4:") << typo;
  EXPECT_NE(typo.find("audiance"), std::string::npos);
  const std::string unset = jwt_error("jwt:\n  algorithms: [HS256]\n  secret_env: AEGIS_TEST_UNSET_VARIABLE_7\n");
  EXPECT_EQ(unset.substr(0, 7), "FILE:3:") << unset;
  ::setenv("AEGIS_TEST_SHORT_SECRET", "short", 1);
  const std::string short_secret = jwt_error("jwt:\n  algorithms: [HS256]\n  secret_env: AEGIS_TEST_SHORT_SECRET\n");
  EXPECT_NE(short_secret.find("at least 32"), std::string::npos) << short_secret;
  const std::string mismatch =
      jwt_error("jwt:\n  public_key_file: keys/rsa_public.pem\n  algorithms: [RS256, HS256]\n");
  EXPECT_EQ(mismatch.substr(0, 7), "FILE:3:") << mismatch;
  EXPECT_NE(mismatch.find("HS256"), std::string::npos);
  EXPECT_NE(jwt_error("jwt:\n  public_key_file: keys/rsa_public.pem\n").find("algorithms"), std::string::npos);
  EXPECT_NE(jwt_error("jwt:\n  algorithms: [RS256]\n").find("no key"), std::string::npos);
  const std::string off_curve = jwt_error("jwt:\n  algorithms: [ES256]\n  jwks_file: keys/jwks_off_curve.json\n");
  EXPECT_EQ(off_curve.substr(0, 7), "FILE:3:") << off_curve;
}

TEST(AuthConfigTest, RbacConfigErrorsNameTheirLine) {
  EXPECT_EQ(config_error(make_rbac_filter, "rbac", "rbac:\n  rules:\n    - {methods: [GET], roles: [a]}\n  default: maybe\n")
                .substr(0, 7),
            "FILE:4:");
  EXPECT_EQ(config_error(make_rbac_filter, "rbac", "rbac:\n  rules:\n    - methods: [GET]\n      role: [a]\n").substr(0, 7),
            "FILE:4:");
  EXPECT_EQ(config_error(make_rbac_filter, "rbac", "rbac:\n  rules:\n    - methods: [GET]\n").substr(0, 7), "FILE:3:");
  EXPECT_EQ(config_error(make_rbac_filter, "rbac", "rbac:\n  rules:\n    - {methods: [\"GET POST\"], roles: [a]}\n")
                .substr(0, 7),
            "FILE:3:");
  EXPECT_EQ(config_error(make_rbac_filter, "rbac", "rbac:\n  rule: []\n").substr(0, 7), "FILE:2:");
  EXPECT_NE(config_error(make_rbac_filter, "rbac", "rbac:\n  default: allow\n").find("rules"), std::string::npos);
}

}  // namespace
}  // namespace aegis::gateway
