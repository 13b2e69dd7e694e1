#include "aegis/web/http_server.h"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <thread>
#include <vector>

#include "aegis/core/error.h"

namespace aegis::web {
namespace {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
using tcp = net::ip::tcp;

struct Shared {
  HttpServerOptions options;
  HttpServer::Handler handler;
  std::atomic<std::size_t> connections{0};
};

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(tcp::socket socket, std::shared_ptr<Shared> shared)
      : stream_(std::move(socket)), shared_(std::move(shared)) {
    shared_->connections.fetch_add(1);
    beast::error_code ec;
    const auto remote = stream_.socket().remote_endpoint(ec);
    if (!ec) client_ = remote.address().to_string();
  }
  ~Connection() { shared_->connections.fetch_sub(1); }

  void start() { read(); }

 private:
  void read() {
    parser_.emplace();
    parser_->body_limit(shared_->options.max_body_bytes);
    parser_->header_limit(static_cast<std::uint32_t>(shared_->options.max_header_bytes));
    stream_.expires_after(shared_->options.idle_timeout);
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, std::size_t) { self->on_read(ec); });
  }

  void on_read(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == net::error::connection_reset) return close();
    if (ec) {
      // A request the parser refused (too large, malformed): answer once, then close.
      const bool too_large = ec == http::error::body_limit || ec == http::error::header_limit;
      ApiResponse response;
      response.status = too_large ? 413 : 400;
      response.body = std::string(R"({"error":")") + (too_large ? "too_large" : "bad_request") +
                      R"(","message":"the request could not be read: )" + (too_large ? "it is too large" : "malformed HTTP") + "\"}";
      return write(response, false, 11);
    }
    const auto& request = parser_->get();
    ApiRequest api;
    api.method = std::string(request.method_string());
    api.target = std::string(request.target());
    for (const auto& field : request) {
      std::string name(field.name_string());
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
      auto [it, inserted] = api.headers.emplace(name, std::string(field.value()));
      if (!inserted) it->second += (name == "cookie" ? "; " : ", ") + std::string(field.value());
    }
    api.body = request.body();
    api.client = client_;
    ApiResponse response;
    try {
      response = shared_->handler(api);
    } catch (const std::exception& e) {
      response.status = 500;
      response.body = R"({"error":"internal_error","message":"the request failed"})";
    }
    const bool head = request.method() == http::verb::head;
    if (head) response.body.clear();
    write(response, request.keep_alive(), request.version());
  }

  void write(const ApiResponse& api, bool keep_alive, unsigned version) {
    auto response = std::make_shared<http::response<http::string_body>>(static_cast<http::status>(api.status), version);
    response->set(http::field::server, "aegis-serve");
    if (!api.content_type.empty()) response->set(http::field::content_type, api.content_type);
    for (const auto& [name, value] : api.headers) response->insert(name, value);
    response->body() = api.body;
    response->keep_alive(keep_alive);
    response->prepare_payload();
    stream_.expires_after(shared_->options.idle_timeout);
    http::async_write(stream_, *response, [self = shared_from_this(), response, keep_alive](beast::error_code ec, std::size_t) {
      if (ec || !keep_alive) return self->close();
      self->read();
    });
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<Shared> shared_;
  std::string client_;
};

}  // namespace

struct HttpServer::Impl {
  std::shared_ptr<Shared> shared = std::make_shared<Shared>();
  net::io_context io;
  tcp::acceptor acceptor{io};
  net::signal_set signals{io};
  unsigned short port = 0;

  void accept() {
    acceptor.async_accept(net::make_strand(io), [this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted) return;
      if (!ec) {
        if (shared->connections.load() >= shared->options.max_connections) {
          beast::error_code ignored;
          socket.close(ignored);
        } else {
          std::make_shared<Connection>(std::move(socket), shared)->start();
        }
      }
      accept();
    });
  }
};

HttpServer::HttpServer(HttpServerOptions options, Handler handler) : impl_(std::make_unique<Impl>()) {
  impl_->shared->options = std::move(options);
  impl_->shared->handler = std::move(handler);
  const auto& o = impl_->shared->options;
  beast::error_code ec;
  const auto address = net::ip::make_address(o.host, ec);
  if (ec) throw core::Error("'" + o.host + "' is not an IP address to listen on; use e.g. 127.0.0.1 or 0.0.0.0");
  const tcp::endpoint endpoint(address, o.port);
  impl_->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(endpoint, ec);
  if (!ec) impl_->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec)
    throw core::Error("cannot listen on " + o.host + ":" + std::to_string(o.port) + ": " + ec.message() +
                      " (is another server on that port? pick another with --listen)");
  impl_->port = impl_->acceptor.local_endpoint().port();
}

HttpServer::~HttpServer() { stop(); }

unsigned short HttpServer::port() const { return impl_->port; }

void HttpServer::run() {
  if (impl_->shared->options.stop_on_signals) {
    impl_->signals.add(SIGINT);
    impl_->signals.add(SIGTERM);
    impl_->signals.async_wait([this](beast::error_code ec, int) {
      if (!ec) stop();
    });
  }
  impl_->accept();
  const std::size_t n = std::max<std::size_t>(1, impl_->shared->options.threads);
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < n; ++i) threads.emplace_back([this] { impl_->io.run(); });
  impl_->io.run();
  for (auto& t : threads) t.join();
}

void HttpServer::stop() {
  net::post(impl_->io, [this] {
    beast::error_code ec;
    impl_->acceptor.close(ec);
    impl_->signals.cancel(ec);
  });
  impl_->io.stop();
}

std::pair<int, std::string> http_get(const std::string& url, std::chrono::milliseconds timeout) {
  if (url.rfind("http://", 0) != 0)
    throw core::Error("the gateway URL must start with http:// (got '" + url + "')");
  std::string rest = url.substr(7);
  const std::size_t slash = rest.find('/');
  std::string hostport = rest.substr(0, slash);
  std::string target = slash == std::string::npos ? "/" : rest.substr(slash);
  std::string host = hostport, port = "80";
  if (const std::size_t colon = hostport.rfind(':'); colon != std::string::npos) {
    host = hostport.substr(0, colon);
    port = hostport.substr(colon + 1);
  }
  net::io_context io;
  tcp::resolver resolver(io);
  beast::tcp_stream stream(io);
  beast::error_code ec;
  const auto results = resolver.resolve(host, port, ec);
  if (ec) throw core::Error("cannot resolve " + host + ": " + ec.message());
  http::request<http::empty_body> request(http::verb::get, target, 11);
  request.set(http::field::host, hostport);
  request.set(http::field::user_agent, "aegis-serve");
  http::response_parser<http::string_body> parser;
  parser.body_limit(8 << 20);
  beast::flat_buffer buffer;
  bool done = false;
  std::string failure;
  stream.expires_after(timeout);
  stream.async_connect(results, [&](beast::error_code e, const tcp::endpoint&) {
    if (e) {
      failure = "cannot connect to " + hostport + ": " + e.message();
      return;
    }
    http::async_write(stream, request, [&](beast::error_code e2, std::size_t) {
      if (e2) {
        failure = "cannot send to " + hostport + ": " + e2.message();
        return;
      }
      http::async_read(stream, buffer, parser, [&](beast::error_code e3, std::size_t) {
        if (e3) failure = "no answer from " + hostport + ": " + e3.message();
        else done = true;
      });
    });
  });
  io.run();
  if (!done) throw core::Error(failure.empty() ? "no answer from " + hostport : failure);
  return {static_cast<int>(parser.get().result_int()), parser.get().body()};
}

}  // namespace aegis::web
