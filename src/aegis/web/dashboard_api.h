// The dashboard's REST API as a pure function from request to response: routing, sessions and
// roles, CSRF and origin checks, security headers, the static single-page app. The HTTP transport
// (http_server.cpp, Boost.Beast) only moves bytes; this layer is where every decision is made, so
// it is tested without sockets.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "aegis/web/dashboard_store.h"

namespace aegis::web {

struct ApiRequest {
  std::string method;                         // GET, POST, ...
  std::string target;                         // path and query as sent: /api/v1/findings?severity=high
  std::map<std::string, std::string> headers;  // names in lower case
  std::string body;
  std::string client;  // the peer's address, for the audit log and the login lockout
};

struct ApiResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::vector<std::pair<std::string, std::string>> headers;  // besides content-type and the security headers
  std::string body;
};

// Fetches the gateway's Prometheus /metrics text: (status, body). Injected so that the API can be
// tested; the server passes an HTTP client.
using MetricsFetcher = std::function<std::pair<int, std::string>(const std::string& url)>;

struct DashboardApiOptions {
  std::filesystem::path web_root;  // the built single-page app (web/dist); empty: the compiled-in one
  std::string gateway_url;         // the gateway's base URL (its /metrics is polled); empty: none
  std::string alert_token;         // bearer token of POST /api/v1/gateway/alerts; empty: webhook off
  bool secure_cookies = false;     // add Secure to the session cookie (set behind HTTPS)
  std::size_t max_alerts = 1000;   // alerts kept in memory, newest first
  // Failed logins one client address may make per minute, across all user names (the store's
  // lockout is per user; this stops one address from spraying passwords over many names).
  std::size_t max_failed_logins_per_minute = 20;
  MetricsFetcher fetch_metrics;
};

class DashboardApi {
 public:
  DashboardApi(DashboardStore& store, DashboardApiOptions options);
  ApiResponse handle(const ApiRequest& request);

 private:
  struct Route;
  ApiResponse dispatch(const ApiRequest& request, const std::string& path, const std::map<std::string, std::string>& query);
  ApiResponse static_file(const std::string& path) const;

  DashboardStore& store_;
  DashboardApiOptions options_;
  // Whether `client` may try another login now; seconds to wait otherwise.
  std::int64_t login_wait_seconds(const std::string& client);
  void record_failed_login(const std::string& client);

  std::mutex alerts_mutex_;
  std::deque<nlohmann::json> alerts_;
  std::mutex failures_mutex_;
  std::map<std::string, std::deque<std::chrono::steady_clock::time_point>> failures_;
};

// The OpenAPI 3.1 document of the API (served at /api/v1/openapi.json).
const std::string& openapi_document();

// Percent-decodes a URL component ('+' is a space in queries); nullopt for a malformed escape.
std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space);
// Parses Prometheus text exposition into {"name","labels","value"} items (at most `limit`).
nlohmann::json parse_prometheus_text(std::string_view text, std::size_t limit = 2000);

}  // namespace aegis::web
