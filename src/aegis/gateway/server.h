// The gateway server: an asynchronous HTTP/1.1 reverse proxy (Boost.Beast/Asio) that runs each
// route's filter chain around the upstream call, hands decisions to the audit log and traffic to
// the monitors, and serves /healthz, /readyz and /metrics. Beast stays inside server.cpp.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "aegis/gateway/config.h"
#include "aegis/gateway/filter.h"

namespace aegis::gateway {

// One decision for the audit log: who asked what, what the filters said, what went back.
struct DecisionRecord {
  std::int64_t time_ms = 0;  // UTC
  std::string request_id;
  std::string client_ip;
  std::string subject;
  std::string route;
  std::string method;
  std::string path;
  int status = 0;
  std::vector<Verdict> verdicts;
  std::string request_sha256;   // hex digest of the request body
  std::string response_sha256;  // hex digest of the response body (of the stream as sent, for SSE)
  std::string request_body;     // only when the audit config records bodies
  std::string response_body;
  double latency_ms = 0;
};

// Services the server calls; each may be empty. `audit` must call `durable` exactly once (from any
// thread): the client gets its response only after durable(true); durable(false) turns it into a 503.
struct GatewayServices {
  std::function<void(DecisionRecord, std::function<void(bool durable)>)> audit;
  bool audit_records_bodies = false;
  // Called after the response filters ran, on the request's thread: must only copy what it needs
  // and queue it (the monitors work on their own thread).
  std::function<void(const RouteConfig&, Exchange&)> observe;
  std::function<void(MetricsWriter&)> write_metrics;  // the services' own series at /metrics
  std::function<bool()> ready;                       // /readyz: false -> 503 (e.g. the store is unwritable)
};

class GatewayServer {
 public:
  GatewayServer(GatewayConfig config, GatewayServices services);
  ~GatewayServer();
  GatewayServer(const GatewayServer&) = delete;
  GatewayServer& operator=(const GatewayServer&) = delete;

  // Binds the listener (port 0 picks a free port) and starts the I/O threads; returns at once.
  void start();
  std::uint16_t port() const;
  // Blocks until stop() or SIGINT/SIGTERM (when handle_signals was called).
  void wait();
  void stop();
  // SIGHUP calls `reload` (which should load the config file and may throw core::Error: the old
  // config then stays), SIGINT/SIGTERM stop the server.
  void handle_signals(std::function<GatewayConfig()> reload);
  // Swaps routes, filters and upstreams for the next requests; connections stay open, requests in
  // flight finish with the config they started with. The listener and thread count stay as they are.
  void reload(GatewayConfig config);
  std::string metrics_text() const;
  std::uint64_t reloads() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aegis::gateway
