// The gateway's authentication (api_key, jwt) and authorisation (rbac) filters: who is calling, and
// whether their roles allow this method on this route.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "aegis/gateway/filter.h"

namespace aegis::gateway {

// What the config stores for an API key: "sha256:<64 lower-case hex digits>" (`aegis gateway
// hash-key` prints it). API keys are long random strings, so a fast hash is enough; the plaintext
// never needs to be on the gateway's disk.
std::string hash_api_key(std::string_view key);

// api_key: {header: authorization | x-api-key | <any header>, keys: [{id, hash, roles}],
//           keys_file: path, optional: false}
// Sets exchange.identity {subject = id, scheme = "api-key", roles}. With the authorization header
// only the "Bearer" scheme is read. optional: a request without a key (or whose bearer credential
// has a JWT's shape) passes as anonymous for a later filter; a wrong key is always rejected.
std::unique_ptr<Filter> make_api_key_filter(const YAML::Node& options, const FilterBuildContext& context);

// jwt: {algorithms: [RS256, ...], secret_env: NAME, public_key_file: pem, jwks_file: json,
//       issuer: ..., audience: x | [x, y], leeway_seconds: 30, roles_claim: roles | [roles, scope],
//       subject_claim: sub, header: authorization, optional: false, require_exp: true,
//       max_token_bytes: 8192, cache_size: 1024}
// Sets exchange.identity {subject = sub, scheme = "jwt", roles}. Either authentication filter keeps
// an identity an earlier one already established.
std::unique_ptr<Filter> make_jwt_filter(const YAML::Node& options, const FilterBuildContext& context);

// rbac: {rules: [{methods: [POST], roles: [scorer, admin]}, {methods: ["*"], roles: ["*"]}],
//        default: deny | allow}
// A request is allowed when any rule that names its method grants one of the caller's roles ("*":
// any authenticated caller). No matching rule: `default`. Unauthenticated callers get 401, callers
// without a needed role 403 "forbidden".
std::unique_ptr<Filter> make_rbac_filter(const YAML::Node& options, const FilterBuildContext& context);

}  // namespace aegis::gateway
