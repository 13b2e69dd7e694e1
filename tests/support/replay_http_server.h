// A loopback HTTP server for the audit-infra probe tests: it replays the documented answers of ML
// services that Debian does not package (a table of (method, path) -> answer), records every
// request it got, and has hostile modes that misbehave on purpose (garbage, an endless header, a
// slow drip, a huge body). Boost.Beast on a thread of its own, a thread per connection, optional TLS
// with a self-signed certificate made at start (it records the SNI name the client sent).
#pragma once

#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace aegis::test {

struct ReplayAnswer {
  int status = 200;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
};

struct ReplayRequest {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;  // names lower-cased
  std::chrono::steady_clock::time_point at;
};

// What every connection gets: an answer from the table, or one kind of misbehaviour.
enum class ReplayMode {
  Table,          // the route's answer, or `not_found`
  Garbage,        // random bytes, then close
  EndlessHeader,  // a status line, then header lines that never end
  SlowDrip,       // a valid answer, one byte every 25 ms
  HugeBody,       // a 100 MB body announced and sent
};

struct ReplayOptions {
  ReplayMode mode = ReplayMode::Table;
  bool tls = false;
  ReplayAnswer not_found{404, {{"Content-Type", "text/plain"}}, "Not Found"};
};

class ReplayHttpServer {
 public:
  using Routes = std::map<std::pair<std::string, std::string>, ReplayAnswer>;  // (method, target)

  explicit ReplayHttpServer(Routes routes = {}, ReplayOptions options = {})
      : routes_(std::move(routes)), options_(std::move(options)), acceptor_(ioc_) {
    namespace asio = boost::asio;
    if (options_.tls) setup_tls();
    const asio::ip::tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
    acceptor_.open(endpoint.protocol());
    acceptor_.set_option(asio::socket_base::reuse_address(true));
    acceptor_.bind(endpoint);
    acceptor_.listen(64);
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { accept_loop(); });
  }
  ~ReplayHttpServer() { stop(); }
  ReplayHttpServer(const ReplayHttpServer&) = delete;
  ReplayHttpServer& operator=(const ReplayHttpServer&) = delete;

  int port() const { return port_; }

  std::vector<ReplayRequest> requests() const {
    std::lock_guard lock(mutex_);
    return log_;
  }
  std::vector<std::string> sni_names() const {
    std::lock_guard lock(mutex_);
    return sni_;
  }

  void stop() {
    if (stopping_.exchange(true)) return;
    namespace asio = boost::asio;
    {  // wake the blocking accept
      boost::system::error_code ignored;
      asio::ip::tcp::socket poke(ioc_);
      poke.connect({asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port_)}, ignored);
    }
    if (thread_.joinable()) thread_.join();
    std::vector<std::thread> workers;
    {
      std::lock_guard lock(mutex_);
      for (auto& socket : sockets_) {
        boost::system::error_code ignored;
        socket->shutdown(asio::ip::tcp::socket::shutdown_both, ignored);
      }
      workers.swap(workers_);
    }
    for (auto& worker : workers) worker.join();
  }

 private:
  void setup_tls() {
    tls_ = std::make_unique<boost::asio::ssl::context>(boost::asio::ssl::context::tls_server);
    EVP_PKEY* key = EVP_EC_gen("P-256");
    X509* cert = X509_new();
    if (!key || !cert) throw std::runtime_error("cannot make a test key");
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), -3600);
    X509_gmtime_adj(X509_getm_notAfter(cert), 3600);
    X509_set_pubkey(cert, key);
    X509_NAME* name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>("replay.test"), -1, -1, 0);
    X509_set_issuer_name(cert, name);
    if (!X509_sign(cert, key, EVP_sha256())) throw std::runtime_error("cannot sign the test certificate");
    SSL_CTX* ctx = tls_->native_handle();
    SSL_CTX_use_certificate(ctx, cert);
    SSL_CTX_use_PrivateKey(ctx, key);
    X509_free(cert);
    EVP_PKEY_free(key);
    SSL_CTX_set_tlsext_servername_arg(ctx, this);
    SSL_CTX_set_tlsext_servername_callback(ctx, &ReplayHttpServer::on_server_name);
  }

  static int on_server_name(SSL* ssl, int*, void* arg) {
    auto* self = static_cast<ReplayHttpServer*>(arg);
    if (const char* name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name)) {
      std::lock_guard lock(self->mutex_);
      self->sni_.emplace_back(name);
    }
    return SSL_TLSEXT_ERR_OK;
  }

  void accept_loop() {
    for (;;) {
      auto socket = std::make_shared<boost::asio::ip::tcp::socket>(ioc_);
      boost::system::error_code ec;
      acceptor_.accept(*socket, ec);
      if (stopping_) return;
      if (ec) continue;
      std::lock_guard lock(mutex_);
      sockets_.push_back(socket);
      workers_.emplace_back([this, socket] { serve(socket); });
    }
  }

  void serve(const std::shared_ptr<boost::asio::ip::tcp::socket>& socket) {
    namespace ssl = boost::asio::ssl;
    try {
      if (tls_) {
        ssl::stream<boost::asio::ip::tcp::socket&> stream(*socket, *tls_);
        boost::system::error_code ec;
        stream.handshake(ssl::stream_base::server, ec);
        if (!ec) converse(stream);
      } else {
        converse(*socket);
      }
    } catch (const std::exception&) {
      // The client went away mid-answer; that is what hostile tests make it do.
    }
    // Shut down, not closed: stop() may shut the same socket down from its thread, and a close
    // here would race with it. The descriptors close when the server is destroyed.
    boost::system::error_code ignored;
    socket->shutdown(boost::asio::ip::tcp::socket::shutdown_both, ignored);
  }

  template <class Stream>
  void converse(Stream& stream) {
    namespace beast = boost::beast;
    namespace http = beast::http;
    beast::flat_buffer buffer;
    http::request_parser<http::string_body> parser;
    parser.body_limit(1 << 20);
    boost::system::error_code ec;
    http::read(stream, buffer, parser, ec);
    if (ec) return;
    const auto& request = parser.get();
    ReplayRequest seen;
    seen.method = std::string(request.method_string());
    seen.target = std::string(request.target());
    seen.at = std::chrono::steady_clock::now();
    for (const auto& field : request) {
      std::string name(field.name_string());
      std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      seen.headers[name] = std::string(field.value());
    }
    {
      std::lock_guard lock(mutex_);
      log_.push_back(seen);
    }
    switch (options_.mode) {
      case ReplayMode::Table: answer(stream, seen); return;
      case ReplayMode::Garbage: garbage(stream); return;
      case ReplayMode::EndlessHeader: endless_header(stream); return;
      case ReplayMode::SlowDrip: slow_drip(stream); return;
      case ReplayMode::HugeBody: huge_body(stream); return;
    }
  }

  template <class Stream>
  void answer(Stream& stream, const ReplayRequest& seen) {
    namespace http = boost::beast::http;
    const auto it = routes_.find({seen.method, seen.target});
    const ReplayAnswer& chosen = it != routes_.end() ? it->second : options_.not_found;
    http::response<http::string_body> response;
    response.version(11);
    response.result(static_cast<unsigned>(chosen.status));
    for (const auto& [name, value] : chosen.headers) response.insert(name, value);
    response.set(http::field::connection, "close");
    response.body() = chosen.body;
    response.prepare_payload();
    boost::system::error_code ec;
    http::write(stream, response, ec);
  }

  template <class Stream>
  void garbage(Stream& stream) {
    std::string bytes(4096, '\0');
    std::uint32_t state = 12345;
    for (auto& b : bytes) {
      state = state * 1664525u + 1013904223u;
      b = static_cast<char>(state >> 24);
    }
    boost::system::error_code ec;
    boost::asio::write(stream, boost::asio::buffer(bytes), ec);
  }

  template <class Stream>
  void endless_header(Stream& stream) {
    boost::system::error_code ec;
    boost::asio::write(stream, boost::asio::buffer(std::string("HTTP/1.1 200 OK\r\n")), ec);
    const std::string line = "X-Filler: " + std::string(1000, 'a') + "\r\n";
    for (int i = 0; i < 16 * 1024 && !ec && !stopping_; ++i) boost::asio::write(stream, boost::asio::buffer(line), ec);
  }

  template <class Stream>
  void slow_drip(Stream& stream) {
    const std::string text =
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 21\r\n\r\n{\"version\": \"1.0.0\"}\n";
    boost::system::error_code ec;
    for (std::size_t i = 0; i < text.size() && !ec && !stopping_; ++i) {
      boost::asio::write(stream, boost::asio::buffer(&text[i], 1), ec);
      std::this_thread::sleep_for(std::chrono::milliseconds(25));
    }
  }

  template <class Stream>
  void huge_body(Stream& stream) {
    constexpr std::uint64_t kSize = 100ull << 20;
    boost::system::error_code ec;
    boost::asio::write(stream,
                       boost::asio::buffer("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                                           std::to_string(kSize) + "\r\n\r\n"),
                       ec);
    const std::string chunk(64 * 1024, 'a');
    for (std::uint64_t sent = 0; sent < kSize && !ec && !stopping_; sent += chunk.size())
      boost::asio::write(stream, boost::asio::buffer(chunk), ec);
  }

  Routes routes_;
  ReplayOptions options_;
  boost::asio::io_context ioc_;
  boost::asio::ip::tcp::acceptor acceptor_;
  std::unique_ptr<boost::asio::ssl::context> tls_;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread thread_;
  mutable std::mutex mutex_;
  std::vector<std::shared_ptr<boost::asio::ip::tcp::socket>> sockets_;
  std::vector<std::thread> workers_;
  std::vector<ReplayRequest> log_;
  std::vector<std::string> sni_;
};

}  // namespace aegis::test
