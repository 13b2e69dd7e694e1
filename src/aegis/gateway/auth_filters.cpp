#include "aegis/gateway/auth_filters.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <list>
#include <map>
#include <mutex>
#include <unordered_map>

#include "aegis/core/error.h"
#include "aegis/core/text.h"
#include "aegis/gateway/jwt.h"

namespace aegis::gateway {
namespace {

constexpr std::size_t kDigestBytes = 32;
// Longer credentials are not hashed at all: no real API key is this long.
constexpr std::size_t kMaxApiKeyBytes = 4096;
// Key files and JWKS documents are small; anything bigger is a wrong path, not a key.
constexpr std::uintmax_t kMaxKeyFileBytes = 1 << 20;
constexpr std::size_t kMinHmacSecretBytes = 32;
constexpr char kRealm[] = "Bearer realm=\"aegis\"";

std::string sha256(std::string_view data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> digest{};
  unsigned int length = 0;
  if (EVP_Digest(data.data(), data.size(), digest.data(), &length, EVP_sha256(), nullptr) != 1 ||
      length != kDigestBytes)
    throw core::Error("SHA-256 failed in OpenSSL", "check the OpenSSL installation");
  return std::string(reinterpret_cast<const char*>(digest.data()), length);
}

std::string to_hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out += kDigits[b >> 4];
    out += kDigits[b & 15];
  }
  return out;
}

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
           return lower(x) == lower(y);
         });
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

std::string lower_case(std::string text) {
  for (auto& c : text)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return text;
}

// "Bearer X" -> X. An Authorization header with another scheme carries no credential for us.
std::string_view bearer_credential(std::string_view value) {
  value = trim(value);
  constexpr std::string_view kScheme = "bearer";
  if (value.size() <= kScheme.size() || !iequals(value.substr(0, kScheme.size()), kScheme)) return {};
  if (value[kScheme.size()] != ' ' && value[kScheme.size()] != '\t') return {};
  return trim(value.substr(kScheme.size()));
}

// The credential a filter reads from its header: Bearer-only on Authorization, the value (with an
// optional "Bearer " prefix) on any other header.
std::string_view credential_from(const Request& request, const std::string& header) {
  const std::string_view value = request.header(header);
  if (header == "authorization") return bearer_credential(value);
  const std::string_view bearer = bearer_credential(value);
  return bearer.empty() ? trim(value) : bearer;
}

// Three base64url segments: a JWT, which an optional api_key filter leaves to the jwt filter.
bool has_jwt_shape(std::string_view credential) {
  if (std::count(credential.begin(), credential.end(), '.') != 2) return false;
  return std::all_of(credential.begin(), credential.end(), [](char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
           c == '.';
  });
}

bool valid_header_name(std::string_view name) {
  return !name.empty() && std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
  });
}

std::string join(const std::vector<std::string>& items, std::string_view separator) {
  std::string out;
  for (std::size_t i = 0; i < items.size(); ++i) {
    if (i) out += separator;
    out += items[i];
  }
  return out;
}

// Reads and type-checks one filter's option map; every error names the file and line. Options not
// in the known list are errors, so that a typo cannot silently switch a check off.
class OptionMap {
 public:
  OptionMap(const YAML::Node& options, std::string file, std::string filter,
            std::initializer_list<std::string_view> known)
      : options_(options), file_(std::move(file)), filter_(std::move(filter)) {
    if (options_.IsNull() || !options_.IsDefined()) return;
    if (!options_.IsMap()) fail(options_, filter_ + " options must be a map", "write `" + filter_ + ": {key: value, ...}`");
    std::vector<std::string> names(known.begin(), known.end());
    for (auto it = options_.begin(); it != options_.end(); ++it) {
      const std::string name = it->first.IsScalar() ? it->first.Scalar() : std::string("?");
      if (std::find(names.begin(), names.end(), name) == names.end())
        fail(it->first, "unknown option '" + name + "' for " + filter_, "known options: " + join(names, ", "));
    }
  }

  [[noreturn]] void fail(const YAML::Node& node, const std::string& message, const std::string& hint = {}) const {
    throw_config_error(file_, node, message, hint);
  }

  const std::string& file() const { return file_; }
  const YAML::Node& node() const { return options_; }

  YAML::Node get(const std::string& name) const {
    if (!options_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    return options_[name];
  }
  bool has(const std::string& name) const { return get(name).IsDefined(); }

  std::string string(const std::string& name, std::string fallback = {}) const {
    const YAML::Node node = get(name);
    if (!node.IsDefined()) return fallback;
    return scalar_string(node, name);
  }

  std::string scalar_string(const YAML::Node& node, const std::string& what) const {
    if (!node.IsScalar() || node.Scalar().empty()) fail(node, what + " must be a non-empty string");
    return node.Scalar();
  }

  bool boolean(const std::string& name, bool fallback) const {
    const YAML::Node node = get(name);
    if (!node.IsDefined()) return fallback;
    bool value = false;
    if (!node.IsScalar() || !YAML::convert<bool>::decode(node, value)) fail(node, name + " must be true or false");
    return value;
  }

  std::int64_t integer(const std::string& name, std::int64_t fallback, std::int64_t low, std::int64_t high) const {
    const YAML::Node node = get(name);
    if (!node.IsDefined()) return fallback;
    long long value = 0;
    if (!node.IsScalar() || !YAML::convert<long long>::decode(node, value))
      fail(node, name + " must be an integer");
    if (value < low || value > high)
      fail(node, name + " must be between " + std::to_string(low) + " and " + std::to_string(high));
    return value;
  }

  // A string or a list of strings.
  std::vector<std::string> strings(const YAML::Node& node, const std::string& what) const {
    std::vector<std::string> out;
    if (node.IsScalar()) {
      out.push_back(scalar_string(node, what));
    } else if (node.IsSequence()) {
      for (const auto& item : node) out.push_back(scalar_string(item, "each entry of " + what));
    } else {
      fail(node, what + " must be a string or a list of strings");
    }
    return out;
  }

  std::filesystem::path resolve(const std::string& config_dir, const std::string& path) const {
    std::filesystem::path p(path);
    if (p.is_relative() && !config_dir.empty()) p = std::filesystem::path(config_dir) / p;
    return p;
  }

  std::string read_file(const YAML::Node& node, const std::filesystem::path& path, const std::string& what) const {
    std::error_code error;
    const auto size = std::filesystem::file_size(path, error);
    if (error)
      fail(node, "cannot read " + what + " '" + path.string() + "': " + error.message(),
           "check the path (relative paths start at the config file's folder)");
    if (size > kMaxKeyFileBytes) fail(node, what + " '" + path.string() + "' is larger than 1 MiB", "check the path");
    std::ifstream in(path, std::ios::binary);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (!in && !in.eof()) fail(node, "cannot read " + what + " '" + path.string() + "'");
    return text;
  }

 private:
  YAML::Node options_;
  std::string file_;
  std::string filter_;
};

std::uint64_t load(const std::atomic<std::uint64_t>& counter) { return counter.load(std::memory_order_relaxed); }
void bump(std::atomic<std::uint64_t>& counter) { counter.fetch_add(1, std::memory_order_relaxed); }

std::vector<Header> with_label(const std::vector<Header>& labels, std::string name, std::string value) {
  std::vector<Header> out = labels;
  out.emplace_back(std::move(name), std::move(value));
  return out;
}

// ---------------------------------------------------------------------------------------------
// api_key

struct ApiKeyEntry {
  std::string id;
  std::string digest;  // raw SHA-256 of the key
  std::vector<std::string> roles;
  std::size_t index = 0;  // into the per-key counters
};

class ApiKeyFilter : public Filter {
 public:
  ApiKeyFilter(std::string header, bool optional, std::vector<ApiKeyEntry> entries)
      : Filter("api_key"), header_(std::move(header)), optional_(optional),
        per_key_(std::make_unique<std::atomic<std::uint64_t>[]>(entries.size())) {
    for (auto& entry : entries) {
      entry.index = ids_.size();
      ids_.push_back(entry.id);
      std::string digest = entry.digest;
      by_digest_.emplace(std::move(digest), std::move(entry));
    }
  }

  FilterResult on_request(Exchange& exchange) override {
    if (exchange.identity.authenticated()) {
      bump(kept_);
      return FilterResult::pass();
    }
    const std::string_view credential = credential_from(exchange.request, header_);
    if (credential.empty() || (optional_ && has_jwt_shape(credential))) {
      if (optional_) {
        bump(anonymous_);
        return FilterResult::pass();
      }
      bump(missing_);
      return FilterResult::reject(401, "missing_credentials",
                                  "no API key: send it as " + how_to_send() + ", or ask the operator for a key",
                                  {{"www-authenticate", challenge(false)}});
    }
    const ApiKeyEntry* entry = nullptr;
    if (credential.size() <= kMaxApiKeyBytes) {
      // The lookup is keyed by the digest, so its timing says nothing about the key's characters.
      const std::string digest = sha256(credential);
      const auto it = by_digest_.find(digest);
      if (it != by_digest_.end() && CRYPTO_memcmp(it->second.digest.data(), digest.data(), kDigestBytes) == 0)
        entry = &it->second;
    }
    if (!entry) {
      bump(invalid_);
      return FilterResult::reject(401, "invalid_api_key", "the API key is not valid: check it, or ask for a new one",
                                  {{"www-authenticate", challenge(true)}});
    }
    bump(allowed_);
    bump(per_key_[entry->index]);
    exchange.identity.subject = entry->id;
    exchange.identity.scheme = "api-key";
    exchange.identity.roles = entry->roles;
    exchange.verdicts.push_back({name(), "allow", "api key " + entry->id});
    return FilterResult::pass();
  }

  void write_metrics(MetricsWriter& out, const std::vector<Header>& labels) const override {
    constexpr std::string_view kFamily = "aegis_api_key_outcomes_total";
    constexpr std::string_view kHelp = "API key checks by outcome";
    out.counter(kFamily, kHelp, with_label(labels, "outcome", "allow"), static_cast<double>(load(allowed_)));
    out.counter(kFamily, kHelp, with_label(labels, "outcome", "invalid"), static_cast<double>(load(invalid_)));
    out.counter(kFamily, kHelp, with_label(labels, "outcome", "missing"), static_cast<double>(load(missing_)));
    out.counter(kFamily, kHelp, with_label(labels, "outcome", "anonymous"), static_cast<double>(load(anonymous_)));
    out.counter(kFamily, kHelp, with_label(labels, "outcome", "already_authenticated"),
                static_cast<double>(load(kept_)));
    for (std::size_t i = 0; i < ids_.size(); ++i)
      out.counter("aegis_api_key_requests_total", "requests authenticated by each API key",
                  with_label(labels, "key", ids_[i]), static_cast<double>(load(per_key_[i])));
  }

 private:
  std::string how_to_send() const {
    return header_ == "authorization" ? std::string("'Authorization: Bearer <key>'") : "the " + header_ + " header";
  }
  std::string challenge(bool invalid) const {
    std::string value = header_ == "authorization" ? std::string(kRealm) : "ApiKey realm=\"aegis\", header=\"" + header_ + "\"";
    if (invalid) value += ", error=\"invalid_token\"";
    return value;
  }

  std::string header_;
  bool optional_;
  std::unordered_map<std::string, ApiKeyEntry> by_digest_;
  std::vector<std::string> ids_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> per_key_;
  std::atomic<std::uint64_t> allowed_{0}, invalid_{0}, missing_{0}, anonymous_{0}, kept_{0};
};

std::string parse_key_hash(const OptionMap& reader, const YAML::Node& node) {
  const std::string text = reader.scalar_string(node, "hash");
  constexpr std::string_view kPrefix = "sha256:";
  const char* hint = "store what `aegis gateway hash-key` prints: sha256:<64 hex digits>";
  if (text.size() != kPrefix.size() + 2 * kDigestBytes || text.compare(0, kPrefix.size(), kPrefix) != 0)
    reader.fail(node, "bad hash format '" + text.substr(0, 80) + "'", hint);
  std::string digest;
  for (std::size_t i = kPrefix.size(); i < text.size(); i += 2) {
    const int high = core::hex_digit_value(static_cast<unsigned char>(text[i]));
    const int low = core::hex_digit_value(static_cast<unsigned char>(text[i + 1]));
    if (high < 0 || low < 0) reader.fail(node, "bad hash format: '" + text + "' has a non-hex digit", hint);
    digest += static_cast<char>(high * 16 + low);
  }
  return digest;
}

void read_key_entries(const OptionMap& reader, const YAML::Node& list, std::vector<ApiKeyEntry>& entries) {
  if (!list.IsSequence())
    reader.fail(list, "API keys must be a list of {id, hash, roles}", "write keys: [{id: alice, hash: \"sha256:...\"}]");
  for (const auto& item : list) {
    if (!item.IsMap()) reader.fail(item, "an API key entry must be a map {id, hash, roles}");
    OptionMap entry_reader(item, reader.file(), "an API key entry", {"id", "hash", "roles"});
    if (!entry_reader.has("id")) reader.fail(item, "API key entry without id", "give every key an id (who holds it)");
    if (!entry_reader.has("hash"))
      reader.fail(item, "API key entry without hash", "store what `aegis gateway hash-key` prints");
    ApiKeyEntry entry;
    entry.id = entry_reader.string("id");
    entry.digest = parse_key_hash(entry_reader, item["hash"]);
    if (entry_reader.has("roles")) entry.roles = entry_reader.strings(item["roles"], "roles");
    for (const auto& other : entries) {
      if (other.id == entry.id) reader.fail(item["id"], "API key id '" + entry.id + "' is listed twice");
      if (other.digest == entry.digest)
        reader.fail(item["hash"], "keys '" + other.id + "' and '" + entry.id + "' have the same hash",
                    "issue every client its own key");
    }
    entries.push_back(std::move(entry));
  }
}

// ---------------------------------------------------------------------------------------------
// jwt

// Verified tokens by the SHA-256 of their text, least recently used first out. A hit skips the
// signature check but not the time checks, so an entry dies with its token.
class VerifiedTokenCache {
 public:
  struct Entry {
    Identity identity;
    nlohmann::json times;  // exp, nbf, iat as the token had them
  };

  explicit VerifiedTokenCache(std::size_t capacity) : capacity_(capacity) {}

  std::optional<Entry> find(const std::string& digest) {
    if (capacity_ == 0) return std::nullopt;
    std::lock_guard lock(mutex_);
    const auto it = index_.find(digest);
    if (it == index_.end()) return std::nullopt;
    order_.splice(order_.begin(), order_, it->second);
    return it->second->second;
  }

  void insert(const std::string& digest, Entry entry) {
    if (capacity_ == 0) return;
    std::lock_guard lock(mutex_);
    if (const auto it = index_.find(digest); it != index_.end()) {
      order_.erase(it->second);
      index_.erase(it);
    }
    order_.emplace_front(digest, std::move(entry));
    index_[digest] = order_.begin();
    while (order_.size() > capacity_) {
      index_.erase(order_.back().first);
      order_.pop_back();
    }
  }

  void erase(const std::string& digest) {
    std::lock_guard lock(mutex_);
    if (const auto it = index_.find(digest); it != index_.end()) {
      order_.erase(it->second);
      index_.erase(it);
    }
  }

 private:
  using Item = std::pair<std::string, Entry>;
  std::size_t capacity_;
  std::mutex mutex_;
  std::list<Item> order_;
  std::unordered_map<std::string, std::list<Item>::iterator> index_;
};

// A claim by dotted path ("realm_access.roles"), or nullptr.
const nlohmann::json* find_claim(const nlohmann::json& claims, std::string_view path) {
  const nlohmann::json* node = &claims;
  while (!path.empty()) {
    const auto dot = path.find('.');
    const std::string key(path.substr(0, dot));
    if (!node->is_object()) return nullptr;
    const auto it = node->find(key);
    if (it == node->end()) return nullptr;
    node = &*it;
    path = dot == std::string_view::npos ? std::string_view{} : path.substr(dot + 1);
  }
  return node;
}

void add_role(std::vector<std::string>& roles, std::string role) {
  if (!role.empty() && std::find(roles.begin(), roles.end(), role) == roles.end()) roles.push_back(std::move(role));
}

// Roles from an array of strings or a space-separated string (the OAuth "scope" form).
std::vector<std::string> roles_from(const nlohmann::json& claims, const std::vector<std::string>& claim_paths) {
  std::vector<std::string> roles;
  for (const auto& path : claim_paths) {
    const nlohmann::json* value = find_claim(claims, path);
    if (!value) continue;
    if (value->is_array()) {
      for (const auto& item : *value)
        if (item.is_string()) add_role(roles, item.get<std::string>());
    } else if (value->is_string()) {
      const std::string& text = value->get_ref<const std::string&>();
      std::size_t start = 0;
      while (start < text.size()) {
        const auto space = text.find(' ', start);
        const auto end = space == std::string::npos ? text.size() : space;
        add_role(roles, text.substr(start, end - start));
        start = end + 1;
      }
    }
  }
  return roles;
}

class JwtFilter : public Filter {
 public:
  JwtFilter(JwtVerifier verifier, std::string header, bool optional, std::vector<std::string> roles_claims,
            std::string subject_claim, std::size_t cache_size)
      : Filter("jwt"), verifier_(std::move(verifier)), header_(std::move(header)), optional_(optional),
        roles_claims_(std::move(roles_claims)), subject_claim_(std::move(subject_claim)), cache_(cache_size) {}

  FilterResult on_request(Exchange& exchange) override {
    if (exchange.identity.authenticated()) {
      count("already_authenticated");
      return FilterResult::pass();
    }
    const std::string_view token = credential_from(exchange.request, header_);
    if (token.empty()) {
      if (optional_) {
        count("anonymous");
        return FilterResult::pass();
      }
      count("missing");
      return FilterResult::reject(401, "missing_credentials",
                                  "no bearer token: send it as " + how_to_send() + " (a JWT from your identity provider)",
                                  {{"www-authenticate", kRealm}});
    }
    if (token.size() > verifier_.policy().max_token_bytes) return invalid("token too long");
    const auto now =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    const std::string digest = sha256(token);
    if (auto cached = cache_.find(digest)) {
      bump(cache_hits_);
      if (std::string problem = verifier_.check_times(cached->times, now); !problem.empty()) {
        cache_.erase(digest);
        return invalid(problem);
      }
      return accept(exchange, std::move(cached->identity));
    }
    bump(cache_misses_);
    JwtVerification verification = verifier_.verify(token, now);
    if (!verification.valid) return invalid(verification.reason);
    const nlohmann::json* subject = find_claim(verification.claims, subject_claim_);
    if (!subject || !subject->is_string() || subject->get_ref<const std::string&>().empty())
      return invalid("no subject (" + subject_claim_ + ")");
    VerifiedTokenCache::Entry entry;
    entry.identity.subject = subject->get<std::string>();
    entry.identity.scheme = "jwt";
    entry.identity.roles = roles_from(verification.claims, roles_claims_);
    entry.times = nlohmann::json::object();
    for (const char* claim : {"exp", "nbf", "iat"})
      if (const auto it = verification.claims.find(claim); it != verification.claims.end()) entry.times[claim] = *it;
    cache_.insert(digest, entry);
    return accept(exchange, std::move(entry.identity));
  }

  void write_metrics(MetricsWriter& out, const std::vector<Header>& labels) const override {
    std::map<std::string, std::uint64_t> outcomes;
    {
      std::lock_guard lock(outcomes_mutex_);
      outcomes = outcomes_;
    }
    for (const auto& [outcome, count] : outcomes)
      out.counter("aegis_jwt_outcomes_total", "JWT checks by outcome (allow, or why the token was refused)",
                  with_label(labels, "outcome", outcome), static_cast<double>(count));
    out.counter("aegis_jwt_cache_total", "verified-token cache lookups", with_label(labels, "result", "hit"),
                static_cast<double>(load(cache_hits_)));
    out.counter("aegis_jwt_cache_total", "verified-token cache lookups", with_label(labels, "result", "miss"),
                static_cast<double>(load(cache_misses_)));
  }

 private:
  FilterResult accept(Exchange& exchange, Identity identity) {
    count("allow");
    exchange.verdicts.push_back({name(), "allow", "jwt subject " + identity.subject});
    exchange.identity = std::move(identity);
    return FilterResult::pass();
  }

  FilterResult invalid(const std::string& reason) {
    count(reason);
    // RFC 6750 section 3: the challenge names the error; the description is our short reason.
    return FilterResult::reject(401, "invalid_token", "invalid token: " + reason + "; get a new token and retry",
                                {{"www-authenticate", std::string(kRealm) + ", error=\"invalid_token\", "
                                                      "error_description=\"" + reason + "\""}});
  }

  // Reasons come from a fixed set of phrases, so the label set stays bounded.
  void count(const std::string& outcome) {
    std::lock_guard lock(outcomes_mutex_);
    ++outcomes_[outcome];
  }

  std::string how_to_send() const {
    return header_ == "authorization" ? std::string("'Authorization: Bearer <token>'") : "the " + header_ + " header";
  }

  JwtVerifier verifier_;
  std::string header_;
  bool optional_;
  std::vector<std::string> roles_claims_;
  std::string subject_claim_;
  VerifiedTokenCache cache_;
  std::atomic<std::uint64_t> cache_hits_{0}, cache_misses_{0};
  mutable std::mutex outcomes_mutex_;
  std::map<std::string, std::uint64_t> outcomes_;
};

std::vector<JwtAlgorithm> parse_algorithms(const OptionMap& reader) {
  const YAML::Node node = reader.get("algorithms");
  if (!node.IsDefined())
    reader.fail(reader.node(), "jwt needs `algorithms`, the allow-list of signature algorithms",
                "e.g. algorithms: [RS256] (the algorithms your identity provider signs with)");
  std::vector<JwtAlgorithm> algorithms;
  const YAML::Node& list = node;
  auto add = [&](const YAML::Node& item) {
    const std::string name = reader.scalar_string(item, "each algorithm");
    if (iequals(name, "none"))
      reader.fail(item, "algorithm 'none' is never accepted: unsigned tokens would let anyone in",
                  "list signature algorithms only, e.g. RS256 or ES256");
    const auto algorithm = parse_jwt_algorithm(name);
    if (!algorithm)
      reader.fail(item, "unknown JWT algorithm '" + name + "'",
                  "supported: HS256, HS384, HS512, RS256, RS384, RS512, PS256, ES256, ES384");
    if (std::find(algorithms.begin(), algorithms.end(), *algorithm) == algorithms.end()) algorithms.push_back(*algorithm);
  };
  if (list.IsSequence()) {
    if (list.size() == 0) reader.fail(list, "algorithms is empty", "list at least one, e.g. [RS256]");
    for (const auto& item : list) add(item);
  } else {
    add(list);
  }
  return algorithms;
}

// ---------------------------------------------------------------------------------------------
// rbac

struct RbacRule {
  std::vector<std::string> methods;  // upper case; "*" any
  std::vector<std::string> roles;    // "*": any authenticated caller
  bool matches(std::string_view method) const {
    return std::any_of(methods.begin(), methods.end(), [&](const std::string& m) { return m == "*" || m == method; });
  }
  bool grants(const Identity& identity) const {
    for (const auto& role : roles) {
      if (role == "*") return true;
      if (std::find(identity.roles.begin(), identity.roles.end(), role) != identity.roles.end()) return true;
    }
    return false;
  }
};

class RbacFilter : public Filter {
 public:
  RbacFilter(std::vector<RbacRule> rules, bool default_allow, std::string route)
      : Filter("rbac"), rules_(std::move(rules)), default_allow_(default_allow), route_(std::move(route)) {}

  FilterResult on_request(Exchange& exchange) override {
    std::string method = exchange.request.method;
    for (auto& c : method)
      if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
    const Identity& identity = exchange.identity;
    bool any_rule = false;
    std::vector<std::string> needed;
    for (const auto& rule : rules_) {
      if (!rule.matches(method)) continue;
      any_rule = true;
      if (identity.authenticated() && rule.grants(identity)) {
        bump(allowed_);
        exchange.verdicts.push_back({name(), "allow", method + " as " + identity.subject});
        return FilterResult::pass();
      }
      for (const auto& role : rule.roles) add_role(needed, role == "*" ? std::string("any authenticated caller") : role);
    }
    if (!any_rule && default_allow_) {
      bump(allowed_);
      exchange.verdicts.push_back({name(), "allow", "no rule for " + method + ", default allow"});
      return FilterResult::pass();
    }
    const std::string where = method + " on route '" + route_ + "'";
    if (!identity.authenticated()) {
      bump(unauthenticated_);
      return FilterResult::reject(401, "unauthenticated", where + " needs an authenticated caller: send credentials",
                                  {{"www-authenticate", kRealm}});
    }
    bump(forbidden_);
    if (!any_rule)
      return FilterResult::reject(403, "forbidden", where + " is not allowed for any role",
                                  {});
    return FilterResult::reject(403, "forbidden",
                                where + " needs one of the roles: " + join(needed, ", ") + " (caller '" +
                                    identity.subject + "' has " +
                                    (identity.roles.empty() ? std::string("none") : join(identity.roles, ", ")) + ")");
  }

  void write_metrics(MetricsWriter& out, const std::vector<Header>& labels) const override {
    constexpr std::string_view kFamily = "aegis_rbac_decisions_total";
    constexpr std::string_view kHelp = "authorisation decisions";
    out.counter(kFamily, kHelp, with_label(labels, "decision", "allow"), static_cast<double>(load(allowed_)));
    out.counter(kFamily, kHelp, with_label(labels, "decision", "unauthenticated"),
                static_cast<double>(load(unauthenticated_)));
    out.counter(kFamily, kHelp, with_label(labels, "decision", "forbidden"), static_cast<double>(load(forbidden_)));
  }

 private:
  std::vector<RbacRule> rules_;
  bool default_allow_;
  std::string route_;
  std::atomic<std::uint64_t> allowed_{0}, unauthenticated_{0}, forbidden_{0};
};

}  // namespace

std::string hash_api_key(std::string_view key) { return "sha256:" + to_hex(sha256(key)); }

std::unique_ptr<Filter> make_api_key_filter(const YAML::Node& options, const FilterBuildContext& context) {
  OptionMap reader(options, context.config_file, "api_key", {"header", "keys", "keys_file", "optional"});
  std::string header = lower_case(reader.string("header", "authorization"));
  if (!valid_header_name(header)) reader.fail(reader.get("header"), "header '" + header + "' is not a header name");
  const bool optional = reader.boolean("optional", false);
  std::vector<ApiKeyEntry> entries;
  if (reader.has("keys")) read_key_entries(reader, reader.get("keys"), entries);
  if (reader.has("keys_file")) {
    const YAML::Node node = reader.get("keys_file");
    const auto path = reader.resolve(context.config_dir, reader.scalar_string(node, "keys_file"));
    const std::string text = reader.read_file(node, path, "keys_file");
    YAML::Node document;
    try {
      document = YAML::Load(text);
    } catch (const YAML::Exception& error) {
      throw core::Error(path.string() + ":" + std::to_string(error.mark.line + 1) + ":" +
                            std::to_string(error.mark.column + 1) + ": " + error.msg,
                        "keys_file must be a YAML list of {id, hash, roles}");
    }
    OptionMap file_reader(YAML::Node(), path.string(), "keys_file", {});
    read_key_entries(file_reader, document, entries);
  }
  if (entries.empty())
    reader.fail(options, "api_key has no keys", "add keys: [{id, hash, roles}] or keys_file: PATH");
  return std::make_unique<ApiKeyFilter>(std::move(header), optional, std::move(entries));
}

std::unique_ptr<Filter> make_jwt_filter(const YAML::Node& options, const FilterBuildContext& context) {
  OptionMap reader(options, context.config_file, "jwt",
                   {"algorithms", "secret_env", "public_key_file", "jwks_file", "issuer", "audience", "leeway_seconds",
                    "roles_claim", "subject_claim", "header", "optional", "require_exp", "max_token_bytes",
                    "cache_size"});
  JwtPolicy policy;
  policy.algorithms = parse_algorithms(reader);
  policy.issuer = reader.string("issuer");
  if (reader.has("audience")) policy.audiences = reader.strings(reader.get("audience"), "audience");
  policy.leeway_seconds = reader.integer("leeway_seconds", 30, 0, 3600);
  policy.require_expiry = reader.boolean("require_exp", true);
  policy.max_token_bytes = static_cast<std::size_t>(reader.integer("max_token_bytes", 8 * 1024, 256, 64 * 1024));

  std::vector<JwtKey> keys;
  if (reader.has("secret_env")) {
    const YAML::Node node = reader.get("secret_env");
    const std::string variable = reader.scalar_string(node, "secret_env");
    const char* value = std::getenv(variable.c_str());
    if (!value || !*value)
      reader.fail(node, "environment variable " + variable + " (the HMAC secret) is not set",
                  "export " + variable + " before starting the gateway");
    const std::string secret(value);
    if (secret.size() < kMinHmacSecretBytes)
      reader.fail(node, "the HMAC secret in " + variable + " is " + std::to_string(secret.size()) +
                            " bytes; at least 32 are needed",
                  "generate one with `openssl rand -base64 48`");
    keys.push_back(JwtKey::hmac(secret));
  }
  if (reader.has("public_key_file")) {
    const YAML::Node node = reader.get("public_key_file");
    const auto path = reader.resolve(context.config_dir, reader.scalar_string(node, "public_key_file"));
    const std::string pem = reader.read_file(node, path, "public_key_file");
    try {
      keys.push_back(JwtKey::from_pem(pem));
    } catch (const core::Error& error) {
      reader.fail(node, "public_key_file '" + path.string() + "': " + error.what(), error.hint());
    }
  }
  if (reader.has("jwks_file")) {
    const YAML::Node node = reader.get("jwks_file");
    const auto path = reader.resolve(context.config_dir, reader.scalar_string(node, "jwks_file"));
    const std::string json = reader.read_file(node, path, "jwks_file");
    try {
      for (auto& key : JwtKey::from_jwks(json)) keys.push_back(std::move(key));
    } catch (const core::Error& error) {
      reader.fail(node, "jwks_file '" + path.string() + "': " + error.what(), error.hint());
    }
  }
  if (keys.empty())
    reader.fail(options, "jwt has no key to verify with", "give secret_env, public_key_file or jwks_file");

  std::vector<std::string> roles_claims = {"roles", "scope"};
  if (reader.has("roles_claim")) roles_claims = reader.strings(reader.get("roles_claim"), "roles_claim");
  const std::string subject_claim = reader.string("subject_claim", "sub");
  std::string header = lower_case(reader.string("header", "authorization"));
  if (!valid_header_name(header)) reader.fail(reader.get("header"), "header '" + header + "' is not a header name");
  const bool optional = reader.boolean("optional", false);
  const auto cache_size = static_cast<std::size_t>(reader.integer("cache_size", 1024, 0, 1'000'000));

  try {
    JwtVerifier verifier(std::move(keys), std::move(policy));
    return std::make_unique<JwtFilter>(std::move(verifier), std::move(header), optional, std::move(roles_claims),
                                       subject_claim, cache_size);
  } catch (const core::Error& error) {
    reader.fail(reader.get("algorithms"), error.what(), error.hint());
  }
}

std::unique_ptr<Filter> make_rbac_filter(const YAML::Node& options, const FilterBuildContext& context) {
  OptionMap reader(options, context.config_file, "rbac", {"rules", "default"});
  const YAML::Node rules_node = reader.get("rules");
  if (!rules_node.IsDefined() || !rules_node.IsSequence() || rules_node.size() == 0)
    reader.fail(rules_node.IsDefined() ? rules_node : options, "rbac needs a non-empty list of rules",
                "e.g. rules: [{methods: [POST], roles: [scorer]}]");
  std::vector<RbacRule> rules;
  for (const auto& item : rules_node) {
    if (!item.IsMap()) reader.fail(item, "an rbac rule must be a map {methods, roles}");
    OptionMap rule_reader(item, context.config_file, "an rbac rule", {"methods", "roles"});
    if (!rule_reader.has("roles"))
      reader.fail(item, "rbac rule without roles", "list the roles it grants, or \"*\" for any authenticated caller");
    RbacRule rule;
    rule.methods = {"*"};
    if (rule_reader.has("methods")) {
      rule.methods = rule_reader.strings(item["methods"], "methods");
      for (auto& method : rule.methods) {
        for (auto& c : method)
          if (c >= 'a' && c <= 'z') c = static_cast<char>(c - 'a' + 'A');
        const bool is_token = method == "*" || std::all_of(method.begin(), method.end(), [](char c) {
                                return (c >= 'A' && c <= 'Z') || c == '-' || c == '_';
                              });
        if (!is_token) reader.fail(item["methods"], "'" + method + "' is not an HTTP method", "e.g. GET, POST or \"*\"");
      }
    }
    rule.roles = rule_reader.strings(item["roles"], "roles");
    rules.push_back(std::move(rule));
  }
  const std::string fallback = reader.string("default", "deny");
  if (fallback != "deny" && fallback != "allow") reader.fail(reader.get("default"), "default must be deny or allow");
  return std::make_unique<RbacFilter>(std::move(rules), fallback == "allow", context.route_name);
}

}  // namespace aegis::gateway
