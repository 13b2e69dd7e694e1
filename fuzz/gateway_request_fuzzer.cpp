// The gateway's request path on hostile bytes: the HTTP parser with the server's limits, then every
// request filter of a full chain (API key, JWT, RBAC, rate limit, body limit, JSON schema) and the
// response filters (confidence, output hardening, redaction, SSE events) on an answer cut from the
// same bytes. Nothing may crash, leak or run away.
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "aegis/gateway/config.h"

namespace {

namespace beast = boost::beast;
namespace http = boost::beast::http;
using namespace aegis::gateway;

const char* kConfig = R"(
listen: 127.0.0.1:0
audit: false
upstreams:
  model: {url: http://127.0.0.1:9}
routes:
  - name: predict
    path: /v1/*
    upstream: model
    api: classifier
    filters:
      - api_key: {optional: true, keys: [{id: alice, hash: "sha256:72ee9d4355ccb9d3a4c9dbf37382e38e75c1b1a225b5bd1f729ee91bbda30c20", roles: [scorer]}]}
      - jwt: {algorithms: [HS256], secret_env: AEGIS_FUZZ_JWT_SECRET, optional: true}
      - rbac: {rules: [{methods: [POST, GET], roles: [scorer, "*"]}]}
      - rate_limit: {per: ip, rate: 1000000/s, burst: 1000000}
      - body_limit: {max_bytes: 65536}
      - json_schema: {schema: {type: object, properties: {inputs: {type: array, maxItems: 8, items: {type: array, items: {type: number, minimum: 0, maximum: 1}}}}}}
      - confidence: {min_confidence: 0.5, max_entropy: 0.9, action: flag}
      - output_hardening: {top_k: 3, decimals: 2}
      - redact: {action: mask}
)";

RouteConfig* route_of(GatewayConfig& config) { return &config.routes.front(); }

GatewayConfig& config() {
  static GatewayConfig loaded = [] {
    setenv("AEGIS_FUZZ_JWT_SECRET", "fuzz-secret-of-enough-length-0123456789", 1);
    return parse_gateway_config(kConfig, "fuzz.yaml", "");
  }();
  return loaded;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto& gateway = config();
  RouteConfig& route = *route_of(gateway);
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  // The first part is the request as it came off the wire, the rest the upstream's answer.
  const auto cut = bytes.find("\n--\n");
  const auto wire = bytes.substr(0, cut);
  const auto answer = cut == std::string_view::npos ? std::string_view() : bytes.substr(cut + 4);

  http::request_parser<http::string_body> parser;
  parser.header_limit(16 * 1024);
  parser.body_limit(1024 * 1024);
  parser.eager(true);
  beast::error_code ec;
  parser.put(boost::asio::buffer(wire.data(), wire.size()), ec);
  if (ec && ec != http::error::need_more) return 0;
  if (!parser.is_header_done()) return 0;
  auto& request = parser.get();

  Exchange exchange;
  exchange.route = &route.info;
  exchange.request.method = std::string(request.method_string());
  exchange.request.target = std::string(request.target());
  exchange.request.path = exchange.request.target.substr(0, exchange.request.target.find('?'));
  exchange.request.client_ip = "192.0.2.1";
  for (const auto& field : request)
    exchange.request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
  for (auto& [name, value] : exchange.request.headers)
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  exchange.request.body = request.body();

  for (auto& filter : route.filters) {
    if (filter->asynchronous()) continue;
    if (filter->on_request(exchange).rejected) return 0;
  }
  exchange.response.status = 200;
  exchange.response.headers.emplace_back("content-type", "application/json");
  exchange.response.body = std::string(answer);
  for (auto& filter : route.filters)
    if (filter->on_response(exchange).rejected) break;
  exchange.commit_response_json();
  std::string event(answer);
  for (auto& filter : route.filters) filter->on_response_event(exchange, event);
  return 0;
}
