// The dashboard's HTTP transport over Boost.Beast (the gateway's stack): keep-alive connections on a
// few threads, bounded request sizes, idle timeouts. Every decision is the handler's (DashboardApi).
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>

#include "aegis/web/dashboard_api.h"

namespace aegis::web {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  unsigned short port = 8080;  // 0: any free port (see HttpServer::port)
  std::size_t threads = 4;
  std::size_t max_body_bytes = 1 << 20;
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_connections = 512;  // more are closed at once
  std::chrono::seconds idle_timeout{30};
  bool stop_on_signals = true;        // SIGINT and SIGTERM end run()
};

class HttpServer {
 public:
  using Handler = std::function<ApiResponse(const ApiRequest&)>;
  // Binds the listening socket; throws core::Error saying why it could not (address in use, ...).
  HttpServer(HttpServerOptions options, Handler handler);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  unsigned short port() const;
  // Serves until stop() (or a signal); returns when every thread has finished.
  void run();
  // Thread-safe.
  void stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// GET of an http:// URL (the gateway's /metrics): (status, body). Throws core::Error when the host
// cannot be reached or answers nothing HTTP within `timeout`. Bodies above 8 MiB are refused.
std::pair<int, std::string> http_get(const std::string& url, std::chrono::milliseconds timeout);

}  // namespace aegis::web
