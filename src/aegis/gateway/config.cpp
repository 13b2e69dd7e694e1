#include "aegis/gateway/config.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "aegis/core/error.h"

namespace aegis::gateway {
namespace {

struct Reader {
  std::string file;
  std::string base_dir;

  [[noreturn]] void fail(const YAML::Node& node, const std::string& message, const std::string& hint = {}) const {
    throw_config_error(file, node, message, hint);
  }

  void only_keys(const YAML::Node& node, const std::string& where, std::initializer_list<const char*> allowed) const {
    if (!node.IsMap()) fail(node, where + " must be a mapping (key: value lines)");
    for (const auto& item : node) {
      const auto key = item.first.as<std::string>();
      bool known = false;
      for (const char* name : allowed) known = known || key == name;
      if (!known) {
        std::string list;
        for (const char* name : allowed) list += std::string(list.empty() ? "" : ", ") + name;
        fail(item.first, "unknown key '" + key + "' in " + where, "the keys allowed here are: " + list);
      }
    }
  }

  std::string text(const YAML::Node& node, const std::string& what) const {
    if (!node.IsScalar()) fail(node, what + " must be a single value");
    return node.as<std::string>();
  }

  std::uint64_t number(const YAML::Node& node, const std::string& what, std::uint64_t low, std::uint64_t high) const {
    if (!node.IsScalar()) fail(node, what + " must be a number");
    const auto value = node.as<std::string>();
    std::uint64_t parsed = 0;
    std::size_t used = 0;
    try {
      parsed = std::stoull(value, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != value.size() || value[0] == '-')
      fail(node, what + " must be a whole number, not '" + value + "'");
    if (parsed < low || parsed > high)
      fail(node, what + " is " + value + ", outside " + std::to_string(low) + ".." + std::to_string(high));
    return parsed;
  }

  bool boolean(const YAML::Node& node, const std::string& what) const {
    if (!node.IsScalar()) fail(node, what + " must be true or false");
    const auto value = node.as<std::string>();
    if (value == "true" || value == "yes" || value == "on") return true;
    if (value == "false" || value == "no" || value == "off") return false;
    fail(node, what + " must be true or false, not '" + value + "'");
  }

  std::string path(const YAML::Node& node, const std::string& what) const {
    auto value = text(node, what);
    if (value.empty()) fail(node, what + " is empty");
    std::filesystem::path p(value);
    if (p.is_relative() && !base_dir.empty()) p = std::filesystem::path(base_dir) / p;
    return p.string();
  }

  std::string existing_file(const YAML::Node& node, const std::string& what) const {
    auto value = path(node, what);
    std::error_code ec;
    if (!std::filesystem::is_regular_file(value, ec))
      fail(node, what + " '" + value + "' does not exist or is not a file", "check the path (relative paths start at the config file's folder)");
    return value;
  }
};

// host:port, [v6]:port or :port
void split_host_port(const Reader& reader, const YAML::Node& node, const std::string& value, std::string& host,
                     std::string& port) {
  auto colon = value.rfind(':');
  if (colon == std::string::npos) reader.fail(node, "'" + value + "' has no port", "write it as HOST:PORT, e.g. 127.0.0.1:8080");
  host = value.substr(0, colon);
  port = value.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  if (port.empty() || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      port.size() > 5 || std::stoul(port) > 65535)
    reader.fail(node, "'" + port + "' is not a port number (0-65535)");
}

void parse_listen(const Reader& reader, const YAML::Node& node, ListenConfig& listen) {
  if (node.IsScalar()) {
    std::string host, port;
    split_host_port(reader, node, node.as<std::string>(), host, port);
    listen.address = host.empty() ? "0.0.0.0" : host;
    listen.port = static_cast<std::uint16_t>(std::stoul(port));
    return;
  }
  reader.only_keys(node, "listen", {"address", "port", "tls"});
  if (node["address"]) listen.address = reader.text(node["address"], "listen.address");
  if (node["port"]) listen.port = static_cast<std::uint16_t>(reader.number(node["port"], "listen.port", 0, 65535));
  if (const auto tls = node["tls"]) {
    reader.only_keys(tls, "listen.tls", {"certificate", "key"});
    if (!tls["certificate"] || !tls["key"])
      reader.fail(tls, "listen.tls needs both certificate and key (PEM files)");
    listen.tls.certificate_file = reader.existing_file(tls["certificate"], "listen.tls.certificate");
    listen.tls.key_file = reader.existing_file(tls["key"], "listen.tls.key");
  }
}

void parse_limits(const Reader& reader, const YAML::Node& node, LimitsConfig& limits) {
  reader.only_keys(node, "limits",
                   {"max_header_bytes", "max_body_bytes", "max_upstream_body_bytes", "header_timeout_ms", "idle_timeout_ms",
                    "max_connections"});
  if (node["max_header_bytes"])
    limits.max_header_bytes = static_cast<std::uint32_t>(reader.number(node["max_header_bytes"], "limits.max_header_bytes", 1024, 1 << 20));
  if (node["max_body_bytes"])
    limits.max_body_bytes = reader.number(node["max_body_bytes"], "limits.max_body_bytes", 0, std::uint64_t(1) << 32);
  if (node["max_upstream_body_bytes"])
    limits.max_upstream_body_bytes =
        reader.number(node["max_upstream_body_bytes"], "limits.max_upstream_body_bytes", 1024, std::uint64_t(1) << 34);
  if (node["header_timeout_ms"])
    limits.header_timeout_ms = static_cast<std::uint32_t>(reader.number(node["header_timeout_ms"], "limits.header_timeout_ms", 10, 3'600'000));
  if (node["idle_timeout_ms"])
    limits.idle_timeout_ms = static_cast<std::uint32_t>(reader.number(node["idle_timeout_ms"], "limits.idle_timeout_ms", 10, 86'400'000));
  if (node["max_connections"])
    limits.max_connections = static_cast<std::uint32_t>(reader.number(node["max_connections"], "limits.max_connections", 1, 1'000'000));
}

UpstreamConfig parse_upstream(const Reader& reader, const std::string& name, const YAML::Node& node) {
  UpstreamConfig upstream;
  upstream.name = name;
  YAML::Node url_node = node;
  if (node.IsMap()) {
    reader.only_keys(node, "upstream '" + name + "'",
                     {"url", "max_connections", "connect_timeout_ms", "timeout_ms", "verify_tls", "ca_file"});
    url_node.reset(node["url"]);
    if (!url_node) reader.fail(node, "upstream '" + name + "' has no url", "e.g. url: http://127.0.0.1:9000");
    if (node["max_connections"])
      upstream.max_connections = static_cast<std::uint32_t>(reader.number(node["max_connections"], "max_connections", 1, 100'000));
    if (node["connect_timeout_ms"])
      upstream.connect_timeout_ms = static_cast<std::uint32_t>(reader.number(node["connect_timeout_ms"], "connect_timeout_ms", 1, 600'000));
    if (node["timeout_ms"])
      upstream.timeout_ms = static_cast<std::uint32_t>(reader.number(node["timeout_ms"], "timeout_ms", 1, 3'600'000));
    if (node["verify_tls"]) upstream.verify_tls = reader.boolean(node["verify_tls"], "verify_tls");
    if (node["ca_file"]) upstream.ca_file = reader.existing_file(node["ca_file"], "ca_file");
  }
  auto url = reader.text(url_node, "upstream url");
  std::string rest;
  if (url.rfind("http://", 0) == 0) {
    rest = url.substr(7);
  } else if (url.rfind("https://", 0) == 0) {
    rest = url.substr(8);
    upstream.tls = true;
  } else {
    reader.fail(url_node, "upstream url '" + url + "' must start with http:// or https://");
  }
  const auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  if (slash != std::string::npos) upstream.base_path = rest.substr(slash);
  while (!upstream.base_path.empty() && upstream.base_path.back() == '/') upstream.base_path.pop_back();
  if (authority.find(':') == std::string::npos || authority.back() == ']') authority += upstream.tls ? ":443" : ":80";
  split_host_port(reader, url_node, authority, upstream.host, upstream.port);
  if (upstream.host.empty()) reader.fail(url_node, "upstream url '" + url + "' has no host");
  return upstream;
}

ApiStyle parse_api(const Reader& reader, const YAML::Node& node) {
  const auto value = reader.text(node, "api");
  if (value == "classifier") return ApiStyle::Classifier;
  if (value == "openai-chat" || value == "openai") return ApiStyle::OpenAiChat;
  if (value == "passthrough") return ApiStyle::Passthrough;
  reader.fail(node, "api '" + value + "' is not one of classifier, openai-chat, passthrough");
}

void parse_route(const Reader& reader, const YAML::Node& node, std::size_t index, GatewayConfig& config) {
  reader.only_keys(node, "route", {"name", "path", "methods", "upstream", "upstream_path", "api", "filters", "monitors"});
  RouteConfig route;
  if (!node["path"]) reader.fail(node, "route " + std::to_string(index + 1) + " has no path", "e.g. path: /v1/predict (or a prefix: /v1/*)");
  route.info.path = reader.text(node["path"], "path");
  if (route.info.path.empty() || route.info.path[0] != '/') reader.fail(node["path"], "path must start with '/'");
  const auto star = route.info.path.find('*');
  if (star != std::string::npos && star + 1 != route.info.path.size())
    reader.fail(node["path"], "'*' may only end a path (a prefix route)");
  route.info.name = node["name"] ? reader.text(node["name"], "name") : route.info.path;
  for (const auto& other : config.routes)
    if (other.info.name == route.info.name) reader.fail(node, "two routes are named '" + route.info.name + "'");
  if (node["methods"]) {
    if (!node["methods"].IsSequence()) reader.fail(node["methods"], "methods must be a list, e.g. [POST]");
    for (const auto& m : node["methods"]) {
      auto method = reader.text(m, "method");
      std::transform(method.begin(), method.end(), method.begin(), [](unsigned char c) { return std::toupper(c); });
      static const std::set<std::string> known = {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"};
      if (!known.count(method)) reader.fail(m, "'" + method + "' is not an HTTP method this gateway proxies");
      route.methods.push_back(method);
    }
  }
  if (!node["upstream"]) reader.fail(node, "route '" + route.info.name + "' names no upstream");
  route.upstream = reader.text(node["upstream"], "upstream");
  if (!config.upstreams.count(route.upstream))
    reader.fail(node["upstream"], "route '" + route.info.name + "' names upstream '" + route.upstream + "', which is not under upstreams:");
  if (node["upstream_path"]) {
    route.upstream_path = reader.text(node["upstream_path"], "upstream_path");
    if (route.upstream_path.empty() || route.upstream_path[0] != '/') reader.fail(node["upstream_path"], "upstream_path must start with '/'");
  }
  if (node["api"]) route.info.api = parse_api(reader, node["api"]);
  config.routes.push_back(std::move(route));
  RouteConfig& stored = config.routes.back();
  if (const auto filters = node["filters"]) {
    if (!filters.IsSequence()) reader.fail(filters, "filters must be a list, each item one filter: '- rate_limit: {...}'");
    FilterBuildContext context;
    context.config_file = reader.file;
    context.config_dir = reader.base_dir;
    context.route_name = stored.info.name;
    context.redis = config.redis_client.get();
    for (const auto& item : filters) {
      std::string type;
      YAML::Node options;
      if (item.IsScalar()) {
        type = item.as<std::string>();
        options = YAML::Node(YAML::NodeType::Map);
      } else if (item.IsMap() && item.size() == 1) {
        type = item.begin()->first.as<std::string>();
        options = item.begin()->second;
        if (options.IsNull()) options = YAML::Node(YAML::NodeType::Map);
      } else {
        reader.fail(item, "each filter is one item with one key, e.g. '- rate_limit: {rate: 100/s}'");
      }
      auto filter = make_filter(type, options, context);
      if (!filter) {
        std::string list;
        for (const auto& known : known_filter_types()) list += (list.empty() ? "" : ", ") + known;
        reader.fail(item, "unknown filter '" + type + "'", "the filters are: " + list);
      }
      stored.filters.push_back(std::move(filter));
    }
  }
  if (const auto monitors = node["monitors"]) {
    reader.only_keys(monitors, "monitors", {"extraction", "drift"});
    if (stored.info.api != ApiStyle::Classifier)
      reader.fail(monitors, "monitors watch classifier traffic; route '" + stored.info.name + "' is not api: classifier");
    // a missing key gives an invalid node, which yaml-cpp refuses to assign
    if (monitors["extraction"]) stored.monitors.extraction = monitors["extraction"];
    if (monitors["drift"]) stored.monitors.drift = monitors["drift"];
  }
}

void parse_audit(const Reader& reader, const YAML::Node& node, AuditConfig& audit) {
  if (node.IsScalar()) {
    audit.enabled = reader.boolean(node, "audit");
    return;
  }
  reader.only_keys(node, "audit", {"enabled", "store", "record_bodies", "checkpoint_every", "checkpoint_seconds", "signing_key", "synchronous"});
  if (node["enabled"]) audit.enabled = reader.boolean(node["enabled"], "audit.enabled");
  if (node["store"]) audit.store = reader.path(node["store"], "audit.store");
  if (node["record_bodies"]) audit.record_bodies = reader.boolean(node["record_bodies"], "audit.record_bodies");
  if (node["checkpoint_every"])
    audit.checkpoint_every = static_cast<std::uint32_t>(reader.number(node["checkpoint_every"], "audit.checkpoint_every", 1, 100'000'000));
  if (node["checkpoint_seconds"])
    audit.checkpoint_seconds = static_cast<std::uint32_t>(reader.number(node["checkpoint_seconds"], "audit.checkpoint_seconds", 1, 86'400));
  if (node["signing_key"]) audit.signing_key_file = reader.existing_file(node["signing_key"], "audit.signing_key");
  if (node["synchronous"]) {
    const auto mode = reader.text(node["synchronous"], "audit.synchronous");
    if (mode != "normal" && mode != "full") reader.fail(node["synchronous"], "audit.synchronous is normal or full");
    audit.synchronous_full = mode == "full";
  }
}

}  // namespace

bool RouteConfig::matches(std::string_view path) const {
  const std::string& p = info.path;
  if (!p.empty() && p.back() == '*') return path.substr(0, p.size() - 1) == std::string_view(p).substr(0, p.size() - 1);
  return path == p;
}

const RouteConfig* GatewayConfig::find_route(std::string_view path) const {
  // exact routes win over prefixes; among prefixes the longest wins
  const RouteConfig* best = nullptr;
  for (const auto& route : routes) {
    if (!route.matches(path)) continue;
    if (route.info.path.back() != '*') return &route;
    if (!best || route.info.path.size() > best->info.path.size()) best = &route;
  }
  return best;
}

GatewayConfig parse_gateway_config(const std::string& yaml_text, const std::string& file_name, const std::string& base_dir) {
  Reader reader{file_name, base_dir};
  YAML::Node root;
  try {
    root = YAML::Load(yaml_text);
  } catch (const YAML::Exception& e) {
    std::string where = file_name;
    if (e.mark.line >= 0) where += ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1);
    throw core::Error(where + ": not valid YAML: " + e.msg, "fix the YAML syntax (indentation, quotes, colons)");
  }
  if (!root.IsMap()) throw core::Error(file_name + ": the gateway config must be a YAML mapping with listen:, upstreams: and routes:");
  reader.only_keys(root, "the gateway config",
                   {"listen", "threads", "limits", "upstreams", "routes", "redis", "alerts", "audit", "access_log", "trusted_proxies"});
  GatewayConfig config;
  config.file = file_name;
  if (root["listen"]) parse_listen(reader, root["listen"], config.listen);
  if (root["threads"]) config.threads = static_cast<unsigned>(reader.number(root["threads"], "threads", 0, 256));
  if (root["limits"]) parse_limits(reader, root["limits"], config.limits);
  if (root["access_log"]) {
    config.access_log = reader.text(root["access_log"], "access_log");
    if (config.access_log != "-" && config.access_log != "off") config.access_log = reader.path(root["access_log"], "access_log");
  }
  if (const auto proxies = root["trusted_proxies"]) {
    if (!proxies.IsSequence()) reader.fail(proxies, "trusted_proxies must be a list of IP addresses");
    for (const auto& p : proxies) config.trusted_proxies.push_back(reader.text(p, "trusted proxy"));
  }
  if (root["audit"]) parse_audit(reader, root["audit"], config.audit);
  if (root["alerts"]) config.alerts = root["alerts"];
  if (root["redis"]) {
    config.redis = root["redis"];
    config.redis_client = make_shared_redis_client(config.redis, file_name);
    if (!config.redis_client) reader.fail(root["redis"], "this build has no Redis support");
  }
  const auto upstreams = root["upstreams"];
  if (!upstreams || !upstreams.IsMap() || upstreams.size() == 0)
    reader.fail(upstreams ? upstreams : root, "upstreams: must name at least one model endpoint",
                "e.g. upstreams: {model: {url: http://127.0.0.1:9000}}");
  for (const auto& item : upstreams) {
    const auto name = item.first.as<std::string>();
    config.upstreams.emplace(name, parse_upstream(reader, name, item.second));
  }
  const auto routes = root["routes"];
  if (!routes || !routes.IsSequence() || routes.size() == 0)
    reader.fail(routes ? routes : root, "routes: must list at least one route", "e.g. routes: [{path: /predict, upstream: model}]");
  for (std::size_t i = 0; i < routes.size(); ++i) parse_route(reader, routes[i], i, config);
  return config;
}

GatewayConfig load_gateway_config(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::Error("cannot read gateway config " + path, "check the path given to --config");
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto base = std::filesystem::path(path).parent_path().string();
  return parse_gateway_config(buffer.str(), path, base);
}

}  // namespace aegis::gateway
