// The gateway's configuration (gateway.yaml): listener, limits, upstreams, routes with their filter
// chains and monitors, shared services. Loading validates everything and names the line of any error.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "aegis/gateway/filter.h"

namespace aegis::gateway {

struct TlsFiles {
  std::string certificate_file;  // PEM chain
  std::string key_file;          // PEM private key
  bool enabled() const { return !certificate_file.empty(); }
};

struct ListenConfig {
  std::string address = "127.0.0.1";
  std::uint16_t port = 8080;
  TlsFiles tls;
};

// Bounds on what one client may make the gateway hold (slow-loris, oversized requests).
struct LimitsConfig {
  std::uint32_t max_header_bytes = 16 * 1024;
  std::uint64_t max_body_bytes = 8 * 1024 * 1024;
  std::uint64_t max_upstream_body_bytes = 64 * 1024 * 1024;
  std::uint32_t header_timeout_ms = 10'000;  // whole request must arrive within this (slow-loris)
  std::uint32_t idle_timeout_ms = 60'000;    // keep-alive connection without a request
  std::uint32_t max_connections = 20'000;    // client connections held at once; more are closed at accept
};

struct UpstreamConfig {
  std::string name;
  std::string host;
  std::string port;
  bool tls = false;
  bool verify_tls = true;
  std::string ca_file;
  std::string base_path;  // prefix added before the route's upstream path
  std::uint32_t max_connections = 512;
  std::uint32_t connect_timeout_ms = 2'000;
  std::uint32_t timeout_ms = 30'000;  // whole upstream exchange
};

struct MonitorConfig {
  YAML::Node extraction;  // null when off; parsed by the monitor hub
  YAML::Node drift;
  bool enabled() const { return present(extraction) || present(drift); }
  // A default YAML::Node is a defined null: "set in the file" needs both checks.
  static bool present(const YAML::Node& node) { return node.IsDefined() && !node.IsNull(); }
};

struct RouteConfig {
  RouteInfo info;
  std::vector<std::string> methods;  // empty: any
  std::string upstream;
  std::string upstream_path;  // empty: the request path as is
  std::vector<std::shared_ptr<Filter>> filters;  // shared: routes are copied when the list grows
  MonitorConfig monitors;
  bool matches(std::string_view path) const;
};

struct AuditConfig {
  bool enabled = true;
  std::string store = "aegis-store.db";
  bool record_bodies = false;
  std::uint32_t checkpoint_every = 10'000;
  std::uint32_t checkpoint_seconds = 60;
  std::string signing_key_file;
  bool synchronous_full = false;
};

struct GatewayConfig {
  std::string file;  // where it was read from
  ListenConfig listen;
  unsigned threads = 0;  // 0: one per core
  LimitsConfig limits;
  std::map<std::string, UpstreamConfig> upstreams;
  std::vector<RouteConfig> routes;
  YAML::Node redis;   // null: no Redis
  YAML::Node alerts;  // null: log only
  AuditConfig audit;
  std::string access_log = "-";  // "-" stdout, "off", or a file path
  std::vector<std::string> trusted_proxies;  // peers whose X-Forwarded-For is believed
  std::shared_ptr<RedisClient> redis_client;  // connected when `redis:` is set
  const RouteConfig* find_route(std::string_view path) const;
};

// Reads and validates a gateway config, building every filter (which may read key files). Throws
// core::Error naming FILE:LINE:COLUMN and the reason.
GatewayConfig load_gateway_config(const std::string& path);
GatewayConfig parse_gateway_config(const std::string& yaml_text, const std::string& file_name, const std::string& base_dir);

// The filter types a route may list, in the order the documentation gives them (filter_registry.cpp).
std::vector<std::string> known_filter_types();
// Builds one filter of a known type; nullptr for an unknown type.
std::unique_ptr<Filter> make_filter(const std::string& type, const YAML::Node& options, const FilterBuildContext& context);
std::shared_ptr<RedisClient> make_shared_redis_client(const YAML::Node& section, const std::string& config_file);

}  // namespace aegis::gateway
