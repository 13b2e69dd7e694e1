#include "aegis/federated/transport.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>
#include <poll.h>

#include <utility>  // before Asio: its awaitable.hpp uses std::exchange without including it

#include <algorithm>
#include <array>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>
#include <vector>

#include "aegis/core/error.h"

namespace aegis::federated {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using Clock = std::chrono::steady_clock;

// Sits between the TLS layer and the TCP stream and counts what passes: the TLS records as they go
// to and come from the socket, handshakes included. Forwards everything else, so Beast's timeouts
// (on the tcp_stream below) still apply.
template <class NextLayer>
class WireCounter {
 public:
  using next_layer_type = NextLayer;
  // asio::ssl::stream wants lowest_layer(); Beast's tcp_stream shows it to ssl::stream only.
  using lowest_layer_type = typename NextLayer::socket_type;
  using executor_type = typename NextLayer::executor_type;

  template <class Arg>
  explicit WireCounter(Arg&& arg) : next_(std::forward<Arg>(arg)) {}

  void count_into(std::atomic<std::uint64_t>* received, std::atomic<std::uint64_t>* sent) {
    received_ = received;
    sent_ = sent;
  }

  executor_type get_executor() noexcept { return next_.get_executor(); }
  next_layer_type& next_layer() noexcept { return next_; }
  lowest_layer_type& lowest_layer() noexcept { return next_.socket(); }
  const lowest_layer_type& lowest_layer() const noexcept { return next_.socket(); }

  template <class MutableBuffers, class ReadHandler>
  void async_read_some(const MutableBuffers& buffers, ReadHandler&& handler) {
    next_.async_read_some(buffers, counting(received_, std::forward<ReadHandler>(handler)));
  }

  template <class ConstBuffers, class WriteHandler>
  void async_write_some(const ConstBuffers& buffers, WriteHandler&& handler) {
    next_.async_write_some(buffers, counting(sent_, std::forward<WriteHandler>(handler)));
  }

 private:
  // The wrapper keeps the handler's executor (a strand, or the TLS operation's), so completions run
  // where they would have run without it.
  template <class Handler>
  auto counting(std::atomic<std::uint64_t>* counter, Handler&& handler) {
    auto executor = net::get_associated_executor(handler, next_.get_executor());
    return net::bind_executor(
        executor, [counter, inner = std::decay_t<Handler>(std::forward<Handler>(handler))](
                      const beast::error_code& ec, std::size_t bytes) mutable {
          if (counter) counter->fetch_add(bytes, std::memory_order_relaxed);
          std::move(inner)(ec, bytes);
        });
  }

  NextLayer next_;
  std::atomic<std::uint64_t>* received_ = nullptr;
  std::atomic<std::uint64_t>* sent_ = nullptr;
};

using TlsStream = beast::ssl_stream<WireCounter<beast::tcp_stream>>;

std::string openssl_reason() {
  std::string out;
  while (const unsigned long code = ERR_get_error()) {
    const char* reason = ERR_reason_error_string(code);
    if (!out.empty()) out += "; ";
    out += reason ? reason : "unknown OpenSSL error";
  }
  return out.empty() ? std::string("no detail from OpenSSL") : out;
}

bool has_control_characters(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) { return c == '\r' || c == '\n' || c == '\0'; });
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

template <class Fields>
std::map<std::string, std::string> lower_case_headers(const Fields& fields) {
  std::map<std::string, std::string> out;
  for (const auto& field : fields) {
    const auto name = field.name_string();
    auto [it, inserted] = out.emplace(lower(std::string_view(name.data(), name.size())), std::string(field.value()));
    if (!inserted) it->second += ", " + std::string(field.value());
  }
  return out;
}

std::string endpoint_text(const tcp::endpoint& endpoint) {
  const auto address = endpoint.address();
  if (address.is_v6()) return "[" + address.to_string() + "]:" + std::to_string(endpoint.port());
  return address.to_string() + ":" + std::to_string(endpoint.port());
}

bool is_ip_address(const std::string& host) {
  beast::error_code ec;
  net::ip::make_address(host, ec);
  return !ec;
}

// OpenSSL reason codes >= SSL_AD_REASON_OFFSET name a TLS alert that the peer sent us.
bool is_alert_from_peer(const beast::error_code& ec) {
  if (ec.category() != net::error::get_ssl_category()) return false;
  const auto code = static_cast<unsigned long>(ec.value());
  const int reason = ERR_GET_REASON(code);
  return ERR_GET_LIB(code) == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET && reason < SSL_AD_REASON_OFFSET + 256;
}

bool is_closed_by_peer(const beast::error_code& ec) {
  return ec == net::error::eof || ec == net::error::connection_reset || ec == net::error::broken_pipe ||
         ec == net::error::connection_aborted || ec == ssl::error::stream_truncated || ec == http::error::end_of_stream;
}

bool is_timeout(const beast::error_code& ec) { return ec == beast::error::timeout || ec == net::error::timed_out; }

// What went wrong in words: OpenSSL's reason for TLS errors, with the certificate verification
// result when there is one.
std::string describe(const beast::error_code& ec, SSL* native) {
  std::string out;
  if (ec.category() == net::error::get_ssl_category()) {
    const char* reason = ERR_reason_error_string(static_cast<unsigned long>(ec.value()));
    out = reason ? reason : ec.message();
  } else {
    out = ec.message();
  }
  if (native) {
    const long verify = SSL_get_verify_result(native);
    if (verify != X509_V_OK) out += std::string(" (") + X509_verify_cert_error_string(verify) + ")";
  }
  return out;
}

std::string common_name(X509* certificate) {
  X509_NAME* subject = X509_get_subject_name(certificate);
  const int index = subject ? X509_NAME_get_index_by_NID(subject, NID_commonName, -1) : -1;
  if (index < 0) return {};
  unsigned char* utf8 = nullptr;
  const int size = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index)));
  if (size < 0) return {};
  std::string out(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(size));
  OPENSSL_free(utf8);
  return out;
}

// Both ends: TLS 1.3 only (we speak to ourselves, no legacy peer to serve), the federation's CA as
// the only trust anchor, the peer's certificate required and verified.
void configure_tls(ssl::context& context, const TlsIdentity& identity, bool server) {
  SSL_CTX* native = context.native_handle();
  ERR_clear_error();
  if (SSL_CTX_set_min_proto_version(native, TLS1_3_VERSION) != 1)
    throw core::Error("this OpenSSL cannot do TLS 1.3: " + openssl_reason(), "install OpenSSL 3");
  if (identity.ca_file.empty())
    throw core::Error("no federation CA certificate given", "pass the ca.pem that `aegis federated init` wrote");
  if (SSL_CTX_load_verify_locations(native, identity.ca_file.c_str(), nullptr) != 1)
    throw core::Error("cannot load the federation CA certificate " + identity.ca_file + ": " + openssl_reason(),
                      "pass the ca.pem that `aegis federated init` wrote");
  const bool has_certificate = !identity.certificate_file.empty() || !identity.key_file.empty();
  if (server || has_certificate) {
    if (SSL_CTX_use_certificate_chain_file(native, identity.certificate_file.c_str()) != 1)
      throw core::Error("cannot load the TLS certificate " + identity.certificate_file + ": " + openssl_reason(),
                        server ? "pass the aggregator.pem that `aegis federated init` wrote"
                               : "pass this participant's .pem from the federation's participants/ folder");
    if (SSL_CTX_use_PrivateKey_file(native, identity.key_file.c_str(), SSL_FILETYPE_PEM) != 1)
      throw core::Error("cannot load the TLS private key " + identity.key_file + ": " + openssl_reason(),
                        "pass the .key file written beside the certificate (unencrypted PEM)");
    if (SSL_CTX_check_private_key(native) != 1)
      throw core::Error(identity.key_file + " is not the private key of " + identity.certificate_file + ": " + openssl_reason(),
                        "pass the .key file that was written with this certificate");
  }
  // Each side already holds the CA: sending it along with the leaf would only add bytes.
  SSL_CTX_set_mode(native, SSL_MODE_NO_AUTO_CHAIN);
  if (server) {
    SSL_CTX_set_verify(native, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(identity.ca_file.c_str()))
      SSL_CTX_set_client_CA_list(native, names);  // tells clients which CA we accept
    // No resumption: every connection proves its certificate again, and no ticket bytes are sent.
    SSL_CTX_set_num_tickets(native, 0);
    SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
  } else {
    SSL_CTX_set_verify(native, SSL_VERIFY_PEER, nullptr);
  }
  ERR_clear_error();
}

std::string json_error(std::string_view message) { return nlohmann::json{{"error", message}}.dump(); }

std::chrono::milliseconds transfer_budget(int base_ms, std::size_t bytes, std::size_t bytes_per_second) {
  const std::size_t rate = std::max<std::size_t>(bytes_per_second, 1);
  return std::chrono::milliseconds(base_ms) + std::chrono::milliseconds(bytes / rate * 1000 + (bytes % rate) * 1000 / rate);
}

// Runs handler calls. Each connection has at most one request in a handler (no pipelining: the next
// request is read only after the answer went out), so at most max_connections calls run at once,
// and a thread is started whenever no idle one is left, up to that bound. A fixed pool smaller than
// the number of participants would deadlock a round: participants long-polling for the next model
// would hold every thread while the uploads that complete the round waited in the queue.
class HandlerThreads {
 public:
  explicit HandlerThreads(std::size_t max_threads) : max_threads_(std::max<std::size_t>(max_threads, 1)) {}
  ~HandlerThreads() { stop(); }
  HandlerThreads(const HandlerThreads&) = delete;
  HandlerThreads& operator=(const HandlerThreads&) = delete;

  void submit(std::function<void()> task) {
    std::lock_guard lock(mutex_);
    if (stopping_) return;
    tasks_.push_back(std::move(task));
    if (tasks_.size() > idle_ && threads_.size() < max_threads_) threads_.emplace_back([this] { run(); });
    else ready_.notify_one();
  }

  // Waits for running calls; queued ones are dropped (destroyed here, after the threads ended).
  void stop() {
    std::deque<std::function<void()>> dropped;
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      dropped.swap(tasks_);
    }
    ready_.notify_all();
    for (auto& thread : threads_)
      if (thread.joinable()) thread.join();
  }

 private:
  void run() {
    std::unique_lock lock(mutex_);
    for (;;) {
      ++idle_;
      ready_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      --idle_;
      if (stopping_) return;
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      task = nullptr;  // what it holds goes before the next wait
      lock.lock();
    }
  }

  const std::size_t max_threads_;
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> tasks_;
  std::vector<std::thread> threads_;
  std::size_t idle_ = 0;
  bool stopping_ = false;
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Server

namespace {

// What every connection of one server shares. Outlives the sessions: MtlsServer::Impl destroys the
// io_context (and with it every session) before it.
struct ServerShared {
  ServerOptions options;
  Handler handler;
  LogSink log_sink;
  ssl::context tls{ssl::context::tls_server};
  std::atomic<std::uint64_t> received{0};
  std::atomic<std::uint64_t> sent{0};
  std::atomic<std::uint64_t> rejected{0};
  std::atomic<std::size_t> open_connections{0};
  std::atomic<bool> stopping{false};
  std::mutex log_mutex;
  std::unique_ptr<HandlerThreads> handler_threads;

  void log(const std::string& line) {
    if (!log_sink) return;
    std::lock_guard lock(log_mutex);
    try {
      log_sink(line);
    } catch (...) {
      // a failing log sink must not take a connection (or an I/O thread) down with it
    }
  }
};

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(ServerShared& shared, tcp::socket socket, std::string peer_address)
      : shared_(shared),
        stream_(std::move(socket), shared.tls),
        executor_(stream_.get_executor()),
        handler_timer_(executor_),
        peer_address_(std::move(peer_address)) {
    stream_.next_layer().count_into(&shared_.received, &shared_.sent);
  }
  ~Session() { shared_.open_connections.fetch_sub(1, std::memory_order_relaxed); }

  void start() {
    tcp_layer().expires_after(std::chrono::milliseconds(shared_.options.handshake_timeout_ms));
    stream_.async_handshake(ssl::stream_base::server,
                            [self = shared_from_this()](const beast::error_code& ec) { self->on_handshake(ec); });
  }

 private:
  beast::tcp_stream& tcp_layer() { return beast::get_lowest_layer(stream_); }

  void on_handshake(const beast::error_code& ec) {
    if (ec) {
      std::string reason = is_timeout(ec) ? "no TLS handshake within " + std::to_string(shared_.options.handshake_timeout_ms) + " ms"
                           : is_closed_by_peer(ec) ? "the peer closed the connection during the TLS handshake (" + describe(ec, nullptr) + ")"
                                                   : describe(ec, stream_.native_handle());
      reject_handshake(reason);
      return;
    }
    // The handshake verified the chain to our CA and the clientAuth purpose; the CN is the id.
    X509* certificate = SSL_get0_peer_certificate(stream_.native_handle());
    peer_id_ = certificate ? common_name(certificate) : std::string();
    if (peer_id_.empty() || SSL_get_verify_result(stream_.native_handle()) != X509_V_OK) {
      reject_handshake("the client certificate has no common name");
      return;
    }
    wait_for_request();
  }

  void reject_handshake(const std::string& reason) {
    shared_.rejected.fetch_add(1, std::memory_order_relaxed);
    shared_.log("rejected TLS connection from " + peer_address_ + ": " + reason);
    linger();
  }

  // Closing with unread input makes the kernel send a reset, which can destroy our last words (a
  // TLS alert, a 413) before the peer reads them. So: half-close, read and discard what still comes
  // for a short while, then close.
  void linger() {
    beast::error_code ignored;
    tcp_layer().socket().shutdown(tcp::socket::shutdown_send, ignored);
    tcp_layer().expires_after(std::chrono::milliseconds(std::min(shared_.options.header_timeout_ms, 5000)));
    drain();
  }

  void drain() {
    stream_.next_layer().async_read_some(net::buffer(drain_buffer_),
                                         [self = shared_from_this()](const beast::error_code& ec, std::size_t) {
                                           if (ec) return self->close();
                                           self->drain();
                                         });
  }

  void close() {
    beast::error_code ignored;
    tcp_layer().socket().shutdown(tcp::socket::shutdown_both, ignored);
    tcp_layer().close();
  }

  std::string who() const { return peer_id_ + " (" + peer_address_ + ")"; }

  void wait_for_request() {
    if (shared_.stopping.load()) return close();
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(std::min<std::size_t>(shared_.options.max_header_bytes, UINT32_MAX)));
    parser_->body_limit(shared_.options.max_body_bytes);
    if (buffer_.size() > 0) return read_header();
    // The first byte under the (long) idle timeout, raw: an HTTP read would wait for a whole header,
    // and the header then gets the short one.
    tcp_layer().expires_after(std::chrono::milliseconds(shared_.options.idle_timeout_ms));
    stream_.async_read_some(buffer_.prepare(4096), [self = shared_from_this()](const beast::error_code& ec, std::size_t n) {
      self->buffer_.commit(n);
      if (ec) return self->close();  // idle timeout or the client went away: nothing to report
      self->read_header();
    });
  }

  void read_header() {
    tcp_layer().expires_after(std::chrono::milliseconds(shared_.options.header_timeout_ms));
    http::async_read_header(stream_, buffer_, *parser_, [self = shared_from_this()](const beast::error_code& ec, std::size_t) {
      self->on_header(ec);
    });
  }

  void on_header(const beast::error_code& ec) {
    if (ec) return read_failed(ec, "request header");
    const auto length = parser_->content_length();
    if (parser_->is_done()) return dispatch();
    const std::size_t expected = length ? static_cast<std::size_t>(*length) : shared_.options.max_body_bytes;
    tcp_layer().expires_after(transfer_budget(shared_.options.header_timeout_ms, expected, shared_.options.min_bytes_per_second));
    http::async_read(stream_, buffer_, *parser_, [self = shared_from_this()](const beast::error_code& ec, std::size_t) {
      if (ec) return self->read_failed(ec, "request body");
      self->dispatch();
    });
  }

  void read_failed(const beast::error_code& ec, const char* part) {
    if (ec == http::error::body_limit) {
      shared_.log("rejected request from " + who() + ": body larger than max_body_bytes (" +
                  std::to_string(shared_.options.max_body_bytes) + ")");
      return respond_and_close(413, "request body larger than the server's limit of " +
                                        std::to_string(shared_.options.max_body_bytes) + " bytes");
    }
    if (ec == http::error::header_limit) {
      shared_.log("rejected request from " + who() + ": header larger than " + std::to_string(shared_.options.max_header_bytes) + " bytes");
      return respond_and_close(431, "request header larger than the server's limit");
    }
    if (is_timeout(ec)) {
      shared_.log("closed connection from " + who() + ": " + part + " not received in time (slow or stalled client)");
      return close();
    }
    if (is_closed_by_peer(ec) || ec == net::error::operation_aborted) return close();
    shared_.log("rejected malformed request from " + who() + ": " + ec.message());
    respond_and_close(400, std::string("malformed HTTP request: ") + ec.message());
  }

  void respond_and_close(int status, const std::string& message) {
    Response response;
    response.status = status;
    response.body = json_error(message);
    write_response(std::move(response), false);
  }

  void dispatch() {
    tcp_layer().expires_never();
    auto& message = parser_->get();
    Request request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    request.headers = lower_case_headers(message);
    request.body = std::move(message.body());
    request.peer_id = peer_id_;
    request.peer_address = peer_address_;
    keep_alive_ = message.keep_alive();
    const std::uint64_t sequence = ++sequence_;
    answered_ = false;

    handler_timer_.expires_after(std::chrono::milliseconds(shared_.options.handler_timeout_ms));
    handler_timer_.async_wait([self = shared_from_this(), sequence](const beast::error_code& ec) {
      if (ec || sequence != self->sequence_ || self->answered_) return;
      self->answered_ = true;
      self->shared_.log("handler did not answer " + self->who() + " within handler_timeout_ms (" +
                        std::to_string(self->shared_.options.handler_timeout_ms) + ")");
      self->respond_and_close(503, "the server did not answer in time; try again");
    });

    shared_.handler_threads->submit([self = shared_from_this(), sequence, request = std::move(request)]() {
      Response response;
      try {
        response = self->shared_.handler(request);
      } catch (const std::exception& e) {
        self->shared_.log("handler failed on " + request.method + " " + request.target + " from " + self->who() + ": " + e.what());
        response = Response{500, "application/json", json_error("internal error in the server"), {}};
      } catch (...) {
        self->shared_.log("handler failed on " + request.method + " " + request.target + " from " + self->who());
        response = Response{500, "application/json", json_error("internal error in the server"), {}};
      }
      net::post(self->executor_, [self, sequence, response = std::move(response)]() mutable {
        if (sequence != self->sequence_ || self->answered_) return;  // timed out: already answered 503
        self->answered_ = true;
        self->handler_timer_.cancel();
        self->write_response(std::move(response), self->keep_alive_);
      });
    });
  }

  void write_response(Response response, bool keep_alive) {
    response_.emplace();
    const int status = response.status >= 100 && response.status <= 599 ? response.status : 500;
    response_->result(static_cast<unsigned>(status));
    response_->version(11);
    if (!response.content_type.empty() && !has_control_characters(response.content_type))
      response_->set(http::field::content_type, response.content_type);
    for (const auto& [name, value] : response.headers) {
      const std::string key = lower(name);
      if (name.empty() || has_control_characters(name) || has_control_characters(value) || name.find(':') != std::string::npos ||
          name.find(' ') != std::string::npos || key == "content-length" || key == "transfer-encoding" || key == "connection")
        continue;  // framing is ours to set; a broken name or value would split the response
      response_->set(name, value);
    }
    response_->body() = std::move(response.body);
    response_->keep_alive(keep_alive && !shared_.stopping.load());
    response_->prepare_payload();
    tcp_layer().expires_after(
        transfer_budget(shared_.options.header_timeout_ms, response_->body().size(), shared_.options.min_bytes_per_second));
    http::async_write(stream_, *response_, [self = shared_from_this()](const beast::error_code& ec, std::size_t) {
      if (ec) return self->close();
      const bool keep = self->response_->keep_alive();
      self->response_.reset();
      if (keep) self->wait_for_request();
      else self->linger();
    });
  }

  ServerShared& shared_;
  TlsStream stream_;
  const TlsStream::executor_type executor_;  // the connection's strand, read by handler threads too
  net::steady_timer handler_timer_;
  std::string peer_address_;
  std::string peer_id_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::response<http::string_body>> response_;
  std::array<char, 16384> drain_buffer_{};
  bool keep_alive_ = false;
  bool answered_ = false;
  std::uint64_t sequence_ = 0;
};

}  // namespace

class MtlsServer::Impl {
 public:
  Impl(TlsIdentity identity, ServerOptions options, Handler handler, LogSink log) {
    if (!handler) throw core::Error("an MtlsServer needs a request handler");
    if (options.threads < 1) options.threads = 1;
    if (options.max_connections < 1) options.max_connections = 1;
    shared_.options = std::move(options);
    shared_.handler = std::move(handler);
    shared_.log_sink = std::move(log);
    configure_tls(shared_.tls, identity, true);
  }
  ~Impl() { stop(); }

  void start() {
    if (started_) throw core::Error("this MtlsServer was already started", "create a new MtlsServer to listen again");
    started_ = true;
    const auto& options = shared_.options;
    beast::error_code ec;
    const auto address = net::ip::make_address(options.bind_address, ec);
    if (ec)
      throw core::Error("invalid bind address '" + options.bind_address + "'", "give an IPv4 or IPv6 address, e.g. 0.0.0.0 or 127.0.0.1");
    const tcp::endpoint endpoint(address, options.port);
    shared_.handler_threads = std::make_unique<HandlerThreads>(options.max_connections);
    io_ = std::make_unique<net::io_context>(options.threads);
    acceptor_.emplace(*io_);
    acceptor_->open(endpoint.protocol(), ec);
    if (!ec) acceptor_->set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_->bind(endpoint, ec);
    if (!ec) acceptor_->listen(net::socket_base::max_listen_connections, ec);
    if (ec) {
      acceptor_.reset();
      throw core::Error("cannot listen on " + endpoint_text(endpoint) + ": " + ec.message(),
                        "choose another port, or stop the process that holds this one");
    }
    port_ = acceptor_->local_endpoint().port();
    accept_retry_.emplace(*io_);
    accept();
    for (int i = 0; i < options.threads; ++i)
      threads_.emplace_back([this] {
        for (;;) {
          try {
            io_->run();
            return;
          } catch (const std::exception& e) {
            shared_.log(std::string("internal error on an I/O thread (the server goes on): ") + e.what());
          }
        }
      });
  }

  void stop() {
    if (!started_ || stopped_) return;
    stopped_ = true;
    shared_.stopping.store(true);
    io_->stop();
    for (auto& thread : threads_) thread.join();
    threads_.clear();
    // Handlers post their answers to the stopped io_context; those (and every session) go with it.
    shared_.handler_threads->stop();
    beast::error_code ignored;
    if (acceptor_) acceptor_->close(ignored);
    acceptor_.reset();
    accept_retry_.reset();
    io_.reset();
  }

  std::uint16_t port() const { return port_; }
  ServerShared& shared() { return shared_; }

 private:
  void accept() {
    acceptor_->async_accept(net::make_strand(*io_), [this](const beast::error_code& ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || shared_.stopping.load()) return;
      if (ec) {
        // Out of file descriptors, typically: wait a little instead of spinning on the error.
        shared_.log("accepting a connection failed: " + ec.message());
        accept_retry_->expires_after(std::chrono::milliseconds(100));
        accept_retry_->async_wait([this](const beast::error_code& wait_ec) {
          if (!wait_ec && !shared_.stopping.load()) accept();
        });
        return;
      }
      on_accept(std::move(socket));
      accept();
    });
  }

  void on_accept(tcp::socket socket) {
    beast::error_code ec;
    const auto remote = socket.remote_endpoint(ec);
    const std::string peer = ec ? std::string("an unknown address") : endpoint_text(remote);
    if (shared_.open_connections.fetch_add(1, std::memory_order_relaxed) >= shared_.options.max_connections) {
      shared_.open_connections.fetch_sub(1, std::memory_order_relaxed);
      shared_.log("refused connection from " + peer + ": max_connections (" + std::to_string(shared_.options.max_connections) +
                  ") are open");
      socket.close(ec);
      return;
    }
    socket.set_option(tcp::no_delay(true), ec);
    std::make_shared<Session>(shared_, std::move(socket), peer)->start();
  }

  // Declared first, destroyed last: sessions refer to it until io_ is gone.
  ServerShared shared_;
  std::unique_ptr<net::io_context> io_;
  std::optional<tcp::acceptor> acceptor_;
  std::optional<net::steady_timer> accept_retry_;
  std::vector<std::thread> threads_;
  std::uint16_t port_ = 0;
  bool started_ = false;
  bool stopped_ = false;
};

MtlsServer::MtlsServer(TlsIdentity identity, ServerOptions options, Handler handler, LogSink log)
    : impl_(std::make_unique<Impl>(std::move(identity), std::move(options), std::move(handler), std::move(log))) {}
MtlsServer::~MtlsServer() = default;
void MtlsServer::start() { impl_->start(); }
std::uint16_t MtlsServer::port() const { return impl_->port(); }
void MtlsServer::stop() { impl_->stop(); }
std::uint64_t MtlsServer::bytes_received() const { return impl_->shared().received.load(); }
std::uint64_t MtlsServer::bytes_sent() const { return impl_->shared().sent.load(); }
std::uint64_t MtlsServer::rejected_handshakes() const { return impl_->shared().rejected.load(); }

// ---------------------------------------------------------------------------------------------
// Client

namespace {

// One failed attempt, and whether another may follow.
struct AttemptFailure {
  std::string message;
  std::string hint;
  bool permanent = false;     // certificate or protocol trouble: trying again cannot help
  bool nothing_sent = false;  // the request never left: safe to retry whatever the method
  bool stale = false;         // a kept-alive connection the server had closed before answering
};

bool is_idempotent(const std::string& method, const std::map<std::string, std::string>& headers) {
  static const char* const methods[] = {"GET", "HEAD", "PUT", "DELETE", "OPTIONS"};
  for (const char* m : methods)
    if (method == m) return true;
  for (const auto& [name, value] : headers)
    if (lower(name) == "idempotency-key") return true;
  return false;
}

bool is_token(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text)
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
          std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos))
      return false;
  return true;
}

}  // namespace

class MtlsClient::Impl {
 public:
  Impl(TlsIdentity identity, std::string host, std::uint16_t port, ClientOptions options)
      : host_(std::move(host)), port_(port), options_(options), tls_(ssl::context::tls_client) {
    if (host_.empty()) throw core::Error("no server host given", "give the aggregator's DNS name or IP address");
    configure_tls(tls_, identity, false);
    authority_ = (host_.find(':') != std::string::npos ? "[" + host_ + "]" : host_) + ":" + std::to_string(port_);
  }
  ~Impl() { close(); }

  Response request(const std::string& method, const std::string& target, const std::string& body,
                   const std::string& content_type, const std::map<std::string, std::string>& headers) {
    if (!is_token(method)) throw core::Error("invalid HTTP method '" + method + "'", "use GET, POST, PUT, ...");
    if (target.empty() || target.front() != '/' || has_control_characters(target) || target.find(' ') != std::string::npos)
      throw core::Error("invalid request target '" + target + "'", "give a path that starts with '/', without spaces");

    http::request<http::string_body> message;
    message.method_string(method);
    message.target(target);
    message.version(11);
    message.set(http::field::host, authority_);
    message.set(http::field::user_agent, "aegis-federated");
    if (!content_type.empty() && !has_control_characters(content_type)) message.set(http::field::content_type, content_type);
    for (const auto& [name, value] : headers) {
      const std::string key = lower(name);
      if (!is_token(name) || has_control_characters(value))
        throw core::Error("invalid header '" + name + "'", "header names are tokens; values hold no CR, LF or NUL");
      if (key == "content-length" || key == "transfer-encoding" || key == "connection" || key == "host") continue;
      message.set(name, value);
    }
    message.body() = body;
    message.keep_alive(true);
    message.prepare_payload();
    const bool idempotent = is_idempotent(method, headers);

    std::lock_guard lock(mutex_);
    bool replaced_stale = false;
    for (int attempt = 0;; ++attempt) {
      std::optional<AttemptFailure> failure;
      try {
        return once(message);
      } catch (AttemptFailure& f) {
        failure = std::move(f);
      }
      if (failure->stale && !replaced_stale) {
        replaced_stale = true;
        --attempt;  // the server had closed it while idle: a fresh connection is no retry
        continue;
      }
      const bool may_retry = !failure->permanent && (failure->nothing_sent || idempotent);
      if (!may_retry || attempt >= options_.retries) {
        std::string what = method + " https://" + authority_ + target + " failed: " + failure->message;
        if (attempt > 0) what += " (after " + std::to_string(attempt + 1) + " attempts)";
        throw core::Error(what, failure->hint);
      }
      const long long backoff = std::min<long long>(30000, static_cast<long long>(std::max(options_.retry_backoff_ms, 0))
                                                               << std::min(attempt, 20));
      std::this_thread::sleep_for(std::chrono::milliseconds(backoff));
    }
  }

  std::uint64_t sent() const { return sent_.load(); }
  std::uint64_t received() const { return received_.load(); }
  std::uint64_t reconnects() const { return reconnects_.load(); }

 private:
  beast::tcp_stream& tcp_layer() { return beast::get_lowest_layer(*stream_); }

  void close() {
    if (stream_) {
      beast::error_code ignored;
      tcp_layer().socket().shutdown(tcp::socket::shutdown_both, ignored);
      tcp_layer().socket().close(ignored);
    }
    stream_.reset();
    buffer_.consume(buffer_.size());
  }

  // Runs one asynchronous operation to completion on this client's io_context.
  template <class Start>
  beast::error_code run(Start&& start) {
    beast::error_code result = net::error::would_block;
    std::forward<Start>(start)([&result](const beast::error_code& ec, auto&&...) { result = ec; });
    io_.restart();
    io_.run();
    return result;
  }

  // A kept-alive connection that has something to read while we sent nothing was closed (or
  // reset) by the server in the meantime: a restarted aggregator, an idle timeout.
  bool still_usable() {
    if (buffer_.size() > 0 || SSL_pending(stream_->native_handle()) > 0) return false;
    pollfd descriptor{tcp_layer().socket().native_handle(), POLLIN, 0};
    const int ready = ::poll(&descriptor, 1, 0);
    return ready == 0;
  }

  void connect(Clock::time_point deadline) {
    // Name resolution has no stream to carry a deadline: a timer cancels it.
    tcp::resolver resolver(io_);
    net::steady_timer timer(io_);
    timer.expires_at(deadline);
    tcp::resolver::results_type endpoints;
    beast::error_code resolve_ec = net::error::would_block;
    bool timed_out = false;
    resolver.async_resolve(host_, std::to_string(port_), [&](const beast::error_code& ec, tcp::resolver::results_type results) {
      resolve_ec = ec;
      endpoints = std::move(results);
      timer.cancel();
    });
    timer.async_wait([&](const beast::error_code& ec) {
      if (!ec) {
        timed_out = true;
        resolver.cancel();
      }
    });
    io_.restart();
    io_.run();
    if (timed_out) throw AttemptFailure{"resolving " + host_ + " timed out", "check the name and the DNS", false, true};
    if (resolve_ec)
      throw AttemptFailure{"cannot resolve " + host_ + ": " + resolve_ec.message(), "check the aggregator's name", false, true};

    stream_ = std::make_unique<TlsStream>(io_, tls_);
    stream_->next_layer().count_into(&received_, &sent_);
    SSL* native = stream_->native_handle();
    // The server's certificate must name the host we dialled: DNS names by SAN (and SNI), IP
    // addresses by IP SAN.
    const bool ip = is_ip_address(host_);
    const int named = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(native), host_.c_str())
                         : (SSL_set_tlsext_host_name(native, host_.c_str()) == 1 ? SSL_set1_host(native, host_.c_str()) : 0);
    if (named != 1) {
      close();
      throw AttemptFailure{"cannot check the server's certificate against '" + host_ + "': " + openssl_reason(),
                           "give the aggregator's DNS name or IP address", true, true};
    }

    tcp_layer().expires_at(deadline);
    beast::error_code ec = run([&](auto handler) { tcp_layer().async_connect(endpoints, handler); });
    if (ec) {
      close();
      throw AttemptFailure{"cannot connect to " + authority_ + ": " + (is_timeout(ec) ? std::string("timed out") : ec.message()),
                           "check that the aggregator is running and reachable at that address and port", false, true};
    }
    tcp_layer().socket().set_option(tcp::no_delay(true), ec);
    ec = run([&](auto handler) { stream_->async_handshake(ssl::stream_base::client, handler); });
    if (ec) {
      AttemptFailure failure;
      failure.nothing_sent = true;
      const long verify = SSL_get_verify_result(native);
      failure.message = "TLS handshake with " + authority_ + " failed: " + describe(ec, native);
      if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        failure.permanent = true;
        failure.hint = "the aggregator's certificate does not name '" + host_ +
                       "': connect with a name it lists, or issue it again with that name among the aggregator names";
      } else if (verify == X509_V_ERR_INVALID_PURPOSE) {
        failure.permanent = true;
        failure.hint = "the server presented a certificate that is not for serving (no serverAuth): the aggregator must use "
                       "the aggregator.pem of the federation folder";
      } else if (verify != X509_V_OK) {
        failure.permanent = true;
        failure.hint = "the aggregator's certificate must be issued by the CA in the ca_file given here; check that both "
                       "sides use the same federation folder";
      } else if (is_timeout(ec)) {
        failure.message = "TLS handshake with " + authority_ + " timed out";
        failure.hint = "check that this port serves the aggregator";
      } else if (!is_closed_by_peer(ec)) {
        failure.permanent = true;
        failure.hint = "the server does not speak TLS 1.3 with this federation's certificates";
      }
      close();
      throw failure;
    }
    if (connections_++ > 0) reconnects_.fetch_add(1, std::memory_order_relaxed);
  }

  Response once(http::request<http::string_body>& message) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(std::max(options_.timeout_ms, 1));
    if (stream_ && !still_usable()) close();
    const bool reused = stream_ != nullptr;
    if (!stream_) connect(deadline);

    tcp_layer().expires_at(deadline);
    beast::error_code ec = run([&](auto handler) { http::async_write(*stream_, message, handler); });
    if (ec) {
      close();
      if (reused && is_closed_by_peer(ec)) throw AttemptFailure{"the kept-alive connection was closed", {}, false, false, true};
      if (is_timeout(ec))
        throw AttemptFailure{"sending the request to " + authority_ + " timed out after " + std::to_string(options_.timeout_ms) + " ms",
                             "raise the client timeout for large bodies, or check the network", false, false};
      throw AttemptFailure{"sending the request to " + authority_ + " failed: " + describe(ec, nullptr),
                           is_closed_by_peer(ec) ? "the server closed the connection while the request was sent; a body "
                                                   "larger than its limit is refused (413) and cut off"
                                                 : "check the network",
                           is_alert_from_peer(ec), false};
    }

    http::response_parser<http::string_body> parser;
    parser.body_limit(options_.max_response_bytes);
    parser.header_limit(64 << 10);
    ec = run([&](auto handler) { http::async_read(*stream_, buffer_, parser, handler); });
    if (ec) {
      const bool got_some = parser.got_some();
      close();
      if (is_alert_from_peer(ec))
        throw AttemptFailure{"the server at " + authority_ + " refused this client's TLS certificate (" + describe(ec, nullptr) + ")",
                             "use a certificate and key issued for this participant by the federation's CA "
                             "(participants/<id>.pem and .key from the aggregator's federation folder)",
                             true, false};
      if (reused && !got_some && is_closed_by_peer(ec)) throw AttemptFailure{"the kept-alive connection was closed", {}, false, false, true};
      if (ec == http::error::body_limit)
        throw AttemptFailure{"the answer from " + authority_ + " is larger than max_response_bytes (" +
                                 std::to_string(options_.max_response_bytes) + ")",
                             "raise ClientOptions::max_response_bytes if the answer is expected to be this large", true, false};
      if (is_timeout(ec))
        throw AttemptFailure{"no answer from " + authority_ + " within " + std::to_string(options_.timeout_ms) + " ms",
                             "check that the aggregator is running; raise the timeout for slow rounds", false, false};
      if (is_closed_by_peer(ec))
        throw AttemptFailure{"the server at " + authority_ + " closed the connection without answering (" + describe(ec, nullptr) + ")",
                             "the aggregator may have refused this client's certificate or stopped; its log says which",
                             false, false};
      throw AttemptFailure{"reading the answer from " + authority_ + " failed: " + describe(ec, nullptr),
                           "the server does not speak HTTP/1.1 as expected; check the address", true, false};
    }
    auto& answer = parser.get();
    Response out;
    out.status = static_cast<int>(answer.result_int());
    out.content_type = std::string(answer[http::field::content_type]);
    out.headers = lower_case_headers(answer);
    const bool keep_alive = answer.keep_alive();
    out.body = std::move(answer.body());
    if (!keep_alive) close();
    return out;
  }

  std::string host_;
  std::uint16_t port_;
  ClientOptions options_;
  std::string authority_;
  ssl::context tls_;
  net::io_context io_{1};
  std::unique_ptr<TlsStream> stream_;
  beast::flat_buffer buffer_;
  std::uint64_t connections_ = 0;
  std::atomic<std::uint64_t> sent_{0};
  std::atomic<std::uint64_t> received_{0};
  std::atomic<std::uint64_t> reconnects_{0};
  std::mutex mutex_;
};

MtlsClient::MtlsClient(TlsIdentity identity, std::string host, std::uint16_t port, ClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(identity), std::move(host), port, options)) {}
MtlsClient::~MtlsClient() = default;
Response MtlsClient::request(const std::string& method, const std::string& target, const std::string& body,
                             const std::string& content_type, const std::map<std::string, std::string>& headers) {
  return impl_->request(method, target, body, content_type, headers);
}
std::uint64_t MtlsClient::bytes_sent() const { return impl_->sent(); }
std::uint64_t MtlsClient::bytes_received() const { return impl_->received(); }
std::uint64_t MtlsClient::reconnects() const { return impl_->reconnects(); }

}  // namespace aegis::federated
