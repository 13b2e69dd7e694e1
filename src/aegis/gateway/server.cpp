#include "aegis/gateway/server.h"

#include <openssl/evp.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <thread>

#include "aegis/core/error.h"

namespace aegis::gateway {
namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using Clock = std::chrono::steady_clock;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

double ms_since(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

std::string sha256_hex(std::string_view data) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  EVP_Digest(data.data(), data.size(), digest, &size, EVP_sha256(), nullptr);
  static const char* hex = "0123456789abcdef";
  std::string out(size * 2, '0');
  for (unsigned i = 0; i < size; ++i) {
    out[2 * i] = hex[digest[i] >> 4];
    out[2 * i + 1] = hex[digest[i] & 15];
  }
  return out;
}

// Incremental SHA-256 for streamed bodies.
class StreamDigest {
 public:
  StreamDigest() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~StreamDigest() { EVP_MD_CTX_free(ctx_); }
  StreamDigest(const StreamDigest&) = delete;
  StreamDigest& operator=(const StreamDigest&) = delete;
  void update(std::string_view data) { EVP_DigestUpdate(ctx_, data.data(), data.size()); }
  std::string hex() {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    EVP_DigestFinal_ex(ctx_, digest, &size);
    static const char* hexdigits = "0123456789abcdef";
    std::string out(size * 2, '0');
    for (unsigned i = 0; i < size; ++i) {
      out[2 * i] = hexdigits[digest[i] >> 4];
      out[2 * i + 1] = hexdigits[digest[i] & 15];
    }
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

std::string lower(std::string_view text) {
  std::string out(text);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

bool hop_by_hop(std::string_view name) {
  static const std::array<std::string_view, 9> names = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
                                                        "te", "trailer", "transfer-encoding", "upgrade", "content-length"};
  for (auto n : names)
    if (n == name) return true;
  return false;
}

std::string random_request_id() {
  static std::atomic<std::uint64_t> counter{0};
  thread_local std::uint64_t seed = [] {
    std::uint64_t s = 0;
    auto t = static_cast<std::uint64_t>(std::chrono::high_resolution_clock::now().time_since_epoch().count());
    s = t ^ (reinterpret_cast<std::uintptr_t>(&s) << 16);
    return s;
  }();
  std::uint64_t x = seed ^ (counter.fetch_add(1, std::memory_order_relaxed) * 0x9E3779B97F4A7C15ull);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  char buffer[17];
  std::snprintf(buffer, sizeof buffer, "%016llx", static_cast<unsigned long long>(x));
  return buffer;
}

std::string json_error(int status, std::string_view code, std::string_view message, std::string_view request_id) {
  nlohmann::json body = {{"error", {{"status", status}, {"code", code}, {"message", message}, {"request_id", request_id}}}};
  return body.dump();
}

// Latency histogram with Prometheus' cumulative buckets.
class LatencyHistogram {
 public:
  static constexpr std::array<double, 12> kBounds = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5};
  void observe(double seconds) {
    for (std::size_t i = 0; i < kBounds.size(); ++i)
      if (seconds <= kBounds[i]) {
        buckets_[i].fetch_add(1, std::memory_order_relaxed);
        break;
      }
    count_.fetch_add(1, std::memory_order_relaxed);
    sum_micros_.fetch_add(static_cast<std::uint64_t>(seconds * 1e6), std::memory_order_relaxed);
  }
  void write(std::string& out, std::string_view family, std::string_view labels) const {
    std::uint64_t cumulative = 0;
    char line[256];
    for (std::size_t i = 0; i < kBounds.size(); ++i) {
      cumulative += buckets_[i].load(std::memory_order_relaxed);
      std::snprintf(line, sizeof line, "%.*s_bucket{%.*s%sle=\"%g\"} %llu\n", int(family.size()), family.data(),
                    int(labels.size()), labels.data(), labels.empty() ? "" : ",", kBounds[i],
                    static_cast<unsigned long long>(cumulative));
      out += line;
    }
    const auto count = count_.load(std::memory_order_relaxed);
    std::snprintf(line, sizeof line, "%.*s_bucket{%.*s%sle=\"+Inf\"} %llu\n", int(family.size()), family.data(),
                  int(labels.size()), labels.data(), labels.empty() ? "" : ",", static_cast<unsigned long long>(count));
    out += line;
    std::snprintf(line, sizeof line, "%.*s_sum{%.*s} %.6f\n%.*s_count{%.*s} %llu\n", int(family.size()), family.data(),
                  int(labels.size()), labels.data(), sum_micros_.load(std::memory_order_relaxed) / 1e6, int(family.size()),
                  family.data(), int(labels.size()), labels.data(), static_cast<unsigned long long>(count));
    out += line;
  }

 private:
  std::array<std::atomic<std::uint64_t>, kBounds.size()> buckets_{};
  std::atomic<std::uint64_t> count_{0};
  std::atomic<std::uint64_t> sum_micros_{0};
};

struct RouteCounters {
  std::array<std::atomic<std::uint64_t>, 6> by_class{};  // 1xx..5xx, [0] other
  LatencyHistogram latency;
  std::atomic<std::uint64_t> upstream_errors{0};
  std::atomic<std::uint64_t> upstream_timeouts{0};
};

// One JSON line per request; a mutex and a buffered FILE keep lines whole across threads.
class AccessLog {
 public:
  explicit AccessLog(const std::string& target) {
    if (target == "off") return;
    if (target == "-") {
      file_ = stdout;
      interactive_ = isatty(fileno(stdout));
      return;
    }
    file_ = std::fopen(target.c_str(), "a");
    owned_ = true;
    if (!file_) throw core::Error("cannot open access log " + target, "check that its folder exists and is writable");
  }
  ~AccessLog() {
    if (owned_ && file_) std::fclose(file_);
  }
  AccessLog(const AccessLog&) = delete;
  AccessLog& operator=(const AccessLog&) = delete;
  bool enabled() const { return file_ != nullptr; }
  void write(const std::string& line) {
    std::lock_guard lock(mutex_);
    std::fwrite(line.data(), 1, line.size(), file_);
    std::fputc('\n', file_);
    if (interactive_ || ++unflushed_ >= 64 || Clock::now() - last_flush_ > std::chrono::milliseconds(200)) flush_locked();
  }
  void flush() {
    std::lock_guard lock(mutex_);
    if (file_) flush_locked();
  }

 private:
  void flush_locked() {
    std::fflush(file_);
    unflushed_ = 0;
    last_flush_ = Clock::now();
  }
  std::FILE* file_ = nullptr;
  bool owned_ = false;
  bool interactive_ = false;  // a terminal sees each line at once; files and pipes get batches
  std::mutex mutex_;
  int unflushed_ = 0;
  Clock::time_point last_flush_ = Clock::now();
};

// A connection to an upstream, plain or TLS.
class UpstreamConnection {
 public:
  explicit UpstreamConnection(net::any_io_executor executor) : plain_(std::make_unique<beast::tcp_stream>(executor)) {}
  UpstreamConnection(net::any_io_executor executor, ssl::context& context)
      : tls_(std::make_unique<beast::ssl_stream<beast::tcp_stream>>(executor, context)) {}
  beast::tcp_stream& tcp() { return plain_ ? *plain_ : beast::get_lowest_layer(*tls_); }
  bool is_tls() const { return tls_ != nullptr; }
  beast::ssl_stream<beast::tcp_stream>& tls() { return *tls_; }
  template <class F>
  void visit(F&& f) {
    if (plain_) f(*plain_);
    else f(*tls_);
  }
  beast::flat_buffer buffer;
  bool reused = false;

 private:
  std::unique_ptr<beast::tcp_stream> plain_;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> tls_;
};

// Keeps idle keep-alive connections to one upstream, bounded in number.
class UpstreamPool {
 public:
  UpstreamPool(UpstreamConfig config, net::io_context& io, bool single_thread)
      : config_(std::move(config)), io_(io), single_thread_(single_thread) {
    if (config_.tls) {
      tls_context_.emplace(ssl::context::tls_client);
      if (config_.verify_tls) {
        tls_context_->set_verify_mode(ssl::verify_peer);
        if (!config_.ca_file.empty()) tls_context_->load_verify_file(config_.ca_file);
        else tls_context_->set_default_verify_paths();
      } else {
        tls_context_->set_verify_mode(ssl::verify_none);
      }
    }
  }
  const UpstreamConfig& config() const { return config_; }
  std::unique_ptr<UpstreamConnection> take_idle() {
    std::lock_guard lock(mutex_);
    if (idle_.empty()) return nullptr;
    auto connection = std::move(idle_.back());
    idle_.pop_back();
    connection->reused = true;
    return connection;
  }
  // nullptr when the pool is at max_connections.
  std::unique_ptr<UpstreamConnection> make_new() {
    if (open_.fetch_add(1) >= config_.max_connections) {
      open_.fetch_sub(1);
      return nullptr;
    }
    // one I/O thread needs no strand: every handler already runs on that thread, in order
    net::any_io_executor executor = single_thread_ ? net::any_io_executor(io_.get_executor()) : net::make_strand(io_);
    if (tls_context_) return std::make_unique<UpstreamConnection>(executor, *tls_context_);
    return std::make_unique<UpstreamConnection>(executor);
  }
  void give_back(std::unique_ptr<UpstreamConnection> connection) {
    connection->tcp().expires_never();
    std::lock_guard lock(mutex_);
    if (idle_.size() < config_.max_connections) idle_.push_back(std::move(connection));
    else open_.fetch_sub(1);
  }
  void discard(std::unique_ptr<UpstreamConnection> connection) {
    if (!connection) return;
    beast::error_code ignored;
    connection->tcp().socket().shutdown(tcp::socket::shutdown_both, ignored);
    connection->tcp().close();
    open_.fetch_sub(1);
  }
  std::size_t open() const { return open_.load(); }
  std::size_t idle() {
    std::lock_guard lock(mutex_);
    return idle_.size();
  }
  ssl::context* tls_context() { return tls_context_ ? &*tls_context_ : nullptr; }

 private:
  UpstreamConfig config_;
  net::io_context& io_;
  bool single_thread_;
  std::optional<ssl::context> tls_context_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<UpstreamConnection>> idle_;
  std::atomic<std::size_t> open_{0};
};

// What requests run against: one loaded config and its pools and counters. Replaced on reload.
struct Runtime {
  GatewayConfig config;
  std::map<std::string, std::shared_ptr<UpstreamPool>> pools;
  std::map<std::string, std::unique_ptr<RouteCounters>> counters;
  std::uint64_t generation = 0;
};

}  // namespace

struct ServerState {
  GatewayServices services;
  LimitsConfig limits;
  std::vector<std::string> trusted_proxies;
  std::unique_ptr<AccessLog> access_log;
  std::optional<ssl::context> tls;
  std::mutex runtime_mutex;
  std::shared_ptr<Runtime> runtime;
  std::atomic<std::uint64_t> connections_open{0};
  std::atomic<std::uint64_t> connections_total{0};
  std::atomic<std::uint64_t> connections_refused{0};
  std::atomic<std::uint64_t> requests_total{0};
  std::atomic<std::uint64_t> bad_requests{0};
  std::atomic<std::uint64_t> timeouts{0};
  std::atomic<std::uint64_t> not_found{0};
  std::atomic<std::uint64_t> audit_failures{0};
  std::atomic<std::uint64_t> reloads{0};
  std::atomic<std::uint64_t> reload_failures{0};
  std::atomic<bool> stopping{false};
  // Last, so that it goes first: the sessions it still holds see every other member alive.
  net::io_context io;

  std::shared_ptr<Runtime> current() {
    std::lock_guard lock(runtime_mutex);
    return runtime;
  }
};

namespace {

std::shared_ptr<Runtime> make_runtime(GatewayConfig config, net::io_context& io, std::uint64_t generation, bool single_thread) {
  auto runtime = std::make_shared<Runtime>();
  runtime->config = std::move(config);
  runtime->generation = generation;
  for (const auto& [name, upstream] : runtime->config.upstreams)
    runtime->pools.emplace(name, std::make_shared<UpstreamPool>(upstream, io, single_thread));
  for (const auto& route : runtime->config.routes)
    runtime->counters.emplace(route.info.name, std::make_unique<RouteCounters>());
  return runtime;
}

template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  Session(ServerState& state, Stream stream, std::string client_ip)
      : state_(state), stream_(std::move(stream)), peer_ip_(std::move(client_ip)) {}

  ~Session() { state_.connections_open.fetch_sub(1, std::memory_order_relaxed); }

  void start() {
    if constexpr (std::is_same_v<Stream, beast::tcp_stream>) {
      wait_for_request();
    } else {
      beast::get_lowest_layer(stream_).expires_after(std::chrono::milliseconds(state_.limits.header_timeout_ms));
      stream_.async_handshake(ssl::stream_base::server,
                              [self = this->shared_from_this()](beast::error_code ec) {
                                if (ec) return;  // a failed handshake only closes this connection
                                self->wait_for_request();
                              });
    }
  }

 private:
  using Self = Session<Stream>;

  // Keep-alive idle wait first (long), then the whole request under the header timeout (short), so a
  // slow-loris client cannot hold a connection open by trickling bytes.
  void wait_for_request() {
    parser_.emplace();
    parser_->header_limit(state_.limits.max_header_bytes);
    parser_->body_limit(state_.limits.max_body_bytes);
    if (buffer_.size() > 0) {
      read_rest();
      return;
    }
    // the first bytes under the idle timeout, raw: an HTTP read would wait for a whole header
    beast::get_lowest_layer(stream_).expires_after(std::chrono::milliseconds(state_.limits.idle_timeout_ms));
    stream_.async_read_some(buffer_.prepare(8192), [self = this->shared_from_this()](beast::error_code ec, std::size_t n) {
      self->buffer_.commit(n);
      if (ec) return self->read_failed(ec);
      self->read_rest();
    });
  }

  void read_rest() {
    beast::get_lowest_layer(stream_).expires_after(std::chrono::milliseconds(state_.limits.header_timeout_ms));
    http::async_read(stream_, buffer_, *parser_, [self = this->shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) return self->read_failed(ec);
      self->on_request();
    });
  }

  void read_failed(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
        ec == net::error::operation_aborted)
      return close();
    if (ec == beast::error::timeout) {
      state_.timeouts.fetch_add(1, std::memory_order_relaxed);
      return close();  // nothing useful to say to a client that sends nothing
    }
    state_.bad_requests.fetch_add(1, std::memory_order_relaxed);
    keep_alive_ = false;
    exchange_ = std::make_unique<Exchange>();
    exchange_->request_id = random_request_id();
    exchange_->request.client_ip = peer_ip_;
    if (ec == http::error::body_limit)
      return send_error(413, "body_too_large",
                        "the request body is larger than " + std::to_string(state_.limits.max_body_bytes) + " bytes");
    if (ec == http::error::header_limit)
      return send_error(431, "headers_too_large",
                        "the request headers are larger than " + std::to_string(state_.limits.max_header_bytes) + " bytes");
    send_error(400, "bad_request", std::string("malformed HTTP request: ") + ec.message());
  }

  std::string client_ip(const http::request<http::string_body>& request) const {
    if (state_.trusted_proxies.empty()) return peer_ip_;
    bool trusted = false;
    for (const auto& p : state_.trusted_proxies) trusted = trusted || p == peer_ip_;
    if (!trusted) return peer_ip_;
    auto it = request.find("x-forwarded-for");
    if (it == request.end()) return peer_ip_;
    std::string_view value(it->value().data(), it->value().size());
    auto comma = value.rfind(',');
    auto last = comma == std::string_view::npos ? value : value.substr(comma + 1);
    while (!last.empty() && last.front() == ' ') last.remove_prefix(1);
    while (!last.empty() && last.back() == ' ') last.remove_suffix(1);
    return last.empty() ? peer_ip_ : std::string(last);
  }

  void on_request() {
    runtime_ = state_.current();
    state_.requests_total.fetch_add(1, std::memory_order_relaxed);
    auto request = parser_->release();
    keep_alive_ = request.keep_alive();
    exchange_ = std::make_unique<Exchange>();
    Exchange& ex = *exchange_;
    ex.started = Clock::now();
    ex.request.method = std::string(request.method_string());
    ex.request.target = std::string(request.target());
    const auto query = ex.request.target.find('?');
    ex.request.path = ex.request.target.substr(0, query);
    ex.request.client_ip = client_ip(request);
    ex.request.headers.reserve(16);
    for (const auto& field : request) ex.request.headers.emplace_back(lower(std::string_view(field.name_string().data(), field.name_string().size())), std::string(field.value()));
    auto incoming_id = request.find("x-request-id");
    ex.request_id = incoming_id != request.end() && incoming_id->value().size() <= 64 ? std::string(incoming_id->value())
                                                                                       : random_request_id();
    ex.request.body = std::move(request.body());

    if (ex.request.method == "GET" && handle_builtin()) return;
    route_ = runtime_->config.find_route(ex.request.path);
    if (!route_) {
      state_.not_found.fetch_add(1, std::memory_order_relaxed);
      return send_error(404, "no_route", "no route serves " + ex.request.path);
    }
    ex.route = &route_->info;
    counters_ = runtime_->counters.at(route_->info.name).get();
    if (!route_->methods.empty() &&
        std::find(route_->methods.begin(), route_->methods.end(), ex.request.method) == route_->methods.end()) {
      std::string allowed;
      for (const auto& m : route_->methods) allowed += (allowed.empty() ? "" : ", ") + m;
      return send_error(405, "method_not_allowed", ex.request.method + " is not allowed on " + route_->info.path,
                        {{"allow", allowed}});
    }
    run_request_filters(0);
  }

  bool handle_builtin() {
    const auto& path = exchange_->request.path;
    if (path == "/healthz") {
      send_plain(200, "application/json", R"({"status":"ok"})");
      return true;
    }
    if (path == "/readyz") {
      const bool ready = !state_.stopping && (!state_.services.ready || state_.services.ready());
      send_plain(ready ? 200 : 503, "application/json", ready ? R"({"status":"ready"})" : R"({"status":"not ready"})");
      return true;
    }
    if (path == "/metrics") {
      send_plain(200, "text/plain; version=0.0.4; charset=utf-8", metrics_text(state_));
      return true;
    }
    return false;
  }

 public:
  static std::string metrics_text(ServerState& state);

 private:
  // Runs filters from `index` on; an asynchronous filter re-enters here from its completion.
  void run_request_filters(std::size_t index) {
    auto& filters = route_->filters;
    for (; index < filters.size(); ++index) {
      Filter& filter = *filters[index];
      filter.stats().requests.fetch_add(1, std::memory_order_relaxed);
      if (filter.asynchronous()) {
        const auto started = Clock::now();
        auto self = this->shared_from_this();
        auto executor = beast::get_lowest_layer(stream_).get_executor();
        try {
          filter.on_request_async(*exchange_, [self, executor, index, started](FilterResult result) {
            net::post(executor, [self, index, started, result = std::move(result)]() mutable {
              Filter& f = *self->route_->filters[index];
              f.stats().nanoseconds.fetch_add(
                  static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count()),
                  std::memory_order_relaxed);
              if (result.rejected) return self->reject(f, result);
              self->run_request_filters(index + 1);
            });
          });
        } catch (const std::exception& e) {
          return filter_failed(filter, e.what());
        }
        return;
      }
      FilterResult result;
      const auto started = Clock::now();
      try {
        result = filter.on_request(*exchange_);
      } catch (const std::exception& e) {
        return filter_failed(filter, e.what());
      }
      filter.stats().nanoseconds.fetch_add(
          static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count()),
          std::memory_order_relaxed);
      if (result.rejected) return reject(filter, result);
    }
    forward();
  }

  void filter_failed(Filter& filter, const std::string& what) {
    filter.stats().errors.fetch_add(1, std::memory_order_relaxed);
    exchange_->verdicts.push_back({filter.name(), "reject", "internal error: " + what});
    send_error(500, "filter_error", "the gateway could not check this request (" + filter.name() + "); try again later");
  }

  void reject(Filter& filter, const FilterResult& result) {
    filter.stats().rejected.fetch_add(1, std::memory_order_relaxed);
    bool recorded = false;
    for (const auto& v : exchange_->verdicts) recorded = recorded || (v.filter == filter.name() && v.outcome == "reject");
    if (!recorded) exchange_->verdicts.push_back({filter.name(), "reject", result.code});
    send_error(result.status ? result.status : 403, result.code.empty() ? "rejected" : result.code, result.message, result.headers);
  }

  // ---- upstream ----

  void forward() {
    auto& pool = *runtime_->pools.at(route_->upstream);
    const auto& upstream = pool.config();
    Exchange& ex = *exchange_;
    std::string target = upstream.base_path;
    if (route_->upstream_path.empty()) {
      target += ex.request.target;
    } else {
      target += route_->upstream_path;
      const auto query = ex.request.target.find('?');
      if (query != std::string::npos) target += ex.request.target.substr(query);
    }
    upstream_request_ = {};
    upstream_request_.version(11);
    upstream_request_.method_string(ex.request.method);
    upstream_request_.target(target);
    std::string forwarded_for;
    for (const auto& [name, value] : ex.request.headers) {
      if (hop_by_hop(name) || name == "host") continue;
      if (name == "x-forwarded-for") {
        forwarded_for = value;
        continue;
      }
      upstream_request_.insert(name, value);
    }
    upstream_request_.set(http::field::host, upstream.host + ":" + upstream.port);
    upstream_request_.set("x-forwarded-for", forwarded_for.empty() ? ex.request.client_ip : forwarded_for + ", " + ex.request.client_ip);
    upstream_request_.set("x-request-id", ex.request_id);
    upstream_request_.keep_alive(true);
    upstream_request_.body() = ex.request.body;
    upstream_request_.prepare_payload();
    upstream_started_ = Clock::now();
    attempt_ = 0;
    send_upstream(pool.take_idle());
  }

  void send_upstream(std::unique_ptr<UpstreamConnection> connection) {
    auto& pool = *runtime_->pools.at(route_->upstream);
    ++attempt_;
    if (!connection) {
      connection = pool.make_new();
      if (!connection) return upstream_failed(503, "upstream_busy", "the upstream's connection pool is full; try again");
      upstream_ = std::move(connection);
      return connect_upstream();
    }
    upstream_ = std::move(connection);
    write_upstream();
  }

  void connect_upstream() {
    auto& pool = *runtime_->pools.at(route_->upstream);
    const auto& upstream = pool.config();
    auto self = this->shared_from_this();
    auto executor = beast::get_lowest_layer(stream_).get_executor();
    auto resolver = std::make_shared<tcp::resolver>(executor);
    resolver->async_resolve(upstream.host, upstream.port,
                            [self, resolver](beast::error_code ec, tcp::resolver::results_type results) {
                              if (ec) return self->upstream_failed(502, "upstream_unreachable", "cannot resolve the upstream host: " + ec.message());
                              auto& pool = *self->runtime_->pools.at(self->route_->upstream);
                              self->upstream_->tcp().expires_after(std::chrono::milliseconds(pool.config().connect_timeout_ms));
                              self->upstream_->tcp().async_connect(
                                  results, net::bind_executor(beast::get_lowest_layer(self->stream_).get_executor(),
                                                              [self](beast::error_code ec, const tcp::endpoint&) {
                                                                if (ec == beast::error::timeout)
                                                                  return self->upstream_failed(504, "upstream_timeout", "connecting to the upstream timed out");
                                                                if (ec)
                                                                  return self->upstream_failed(502, "upstream_unreachable",
                                                                                               "cannot connect to the upstream: " + ec.message());
                                                                self->upstream_->tcp().socket().set_option(tcp::no_delay(true));
                                                                if (self->upstream_->is_tls()) return self->handshake_upstream();
                                                                self->write_upstream();
                                                              }));
                            });
  }

  void handshake_upstream() {
    auto& pool = *runtime_->pools.at(route_->upstream);
    const auto& host = pool.config().host;
    auto& tls = upstream_->tls();
    if (!SSL_set_tlsext_host_name(tls.native_handle(), host.c_str()))
      return upstream_failed(502, "upstream_tls", "cannot set the TLS server name for the upstream");
    if (pool.config().verify_tls) tls.set_verify_callback(ssl::host_name_verification(host));
    auto self = this->shared_from_this();
    tls.async_handshake(ssl::stream_base::client,
                        net::bind_executor(beast::get_lowest_layer(stream_).get_executor(), [self](beast::error_code ec) {
                          if (ec) return self->upstream_failed(502, "upstream_tls", "TLS handshake with the upstream failed: " + ec.message());
                          self->write_upstream();
                        }));
  }

  void write_upstream() {
    auto& pool = *runtime_->pools.at(route_->upstream);
    upstream_->tcp().expires_after(std::chrono::milliseconds(pool.config().timeout_ms));
    auto self = this->shared_from_this();
    upstream_->visit([&](auto& s) {
      http::async_write(s, upstream_request_,
                        net::bind_executor(beast::get_lowest_layer(stream_).get_executor(),
                                           [self](beast::error_code ec, std::size_t) {
                                             if (ec) return self->upstream_io_failed(ec, false);
                                             self->read_upstream_header();
                                           }));
    });
  }

  void read_upstream_header() {
    auto& pool = *runtime_->pools.at(route_->upstream);
    header_parser_.emplace();
    header_parser_->header_limit(64 * 1024);
    header_parser_->body_limit(state_.limits.max_upstream_body_bytes);
    auto self = this->shared_from_this();
    upstream_->visit([&](auto& s) {
      http::async_read_header(s, upstream_->buffer, *header_parser_,
                              net::bind_executor(beast::get_lowest_layer(stream_).get_executor(),
                                                 [self](beast::error_code ec, std::size_t) {
                                                   if (ec) return self->upstream_io_failed(ec, true);
                                                   self->on_upstream_header();
                                                 }));
    });
    (void)pool;
  }

  // A reused keep-alive connection may have been closed by the upstream meanwhile: retry once on a
  // fresh one when nothing of the answer arrived.
  void upstream_io_failed(beast::error_code ec, bool reading) {
    auto& pool = *runtime_->pools.at(route_->upstream);
    const bool stale = upstream_ && upstream_->reused &&
                       (ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
                        ec == net::error::broken_pipe) &&
                       attempt_ == 1;
    pool.discard(std::move(upstream_));
    if (stale) return send_upstream(nullptr);
    if (ec == beast::error::timeout) {
      counters_->upstream_timeouts.fetch_add(1, std::memory_order_relaxed);
      return upstream_failed(504, "upstream_timeout",
                             "the upstream did not answer within " + std::to_string(pool.config().timeout_ms) + " ms");
    }
    upstream_failed(502, "bad_upstream_response",
                    std::string(reading ? "the upstream's answer could not be read: " : "sending to the upstream failed: ") + ec.message());
  }

  void upstream_failed(int status, std::string code, std::string message) {
    counters_->upstream_errors.fetch_add(1, std::memory_order_relaxed);
    if (upstream_) runtime_->pools.at(route_->upstream)->discard(std::move(upstream_));
    exchange_->verdicts.push_back({"upstream", "reject", code});
    send_error(status, code, message);
  }

  void on_upstream_header() {
    const auto& header = header_parser_->get();
    const auto content_type = lower(std::string_view(header[http::field::content_type].data(), header[http::field::content_type].size()));
    if (content_type.rfind("text/event-stream", 0) == 0) return start_stream();
    body_parser_.emplace(std::move(*header_parser_));
    header_parser_.reset();
    auto self = this->shared_from_this();
    upstream_->visit([&](auto& s) {
      http::async_read(s, upstream_->buffer, *body_parser_,
                       net::bind_executor(beast::get_lowest_layer(stream_).get_executor(),
                                          [self](beast::error_code ec, std::size_t) {
                                            if (ec == http::error::body_limit) {
                                              self->runtime_->pools.at(self->route_->upstream)->discard(std::move(self->upstream_));
                                              return self->upstream_failed(502, "upstream_response_too_large",
                                                                           "the upstream's answer is larger than the gateway's limit");
                                            }
                                            if (ec) return self->upstream_io_failed(ec, true);
                                            self->on_upstream_response();
                                          }));
    });
  }

  void release_upstream(bool keep) {
    if (!upstream_) return;
    auto& pool = *runtime_->pools.at(route_->upstream);
    if (keep) pool.give_back(std::move(upstream_));
    else pool.discard(std::move(upstream_));
  }

  void copy_upstream_headers(const http::fields& fields) {
    Exchange& ex = *exchange_;
    ex.response.headers.clear();
    for (const auto& field : fields) {
      auto name = lower(std::string_view(field.name_string().data(), field.name_string().size()));
      if (hop_by_hop(name)) continue;
      ex.response.headers.emplace_back(std::move(name), std::string(field.value()));
    }
  }

  void on_upstream_response() {
    auto response = body_parser_->release();
    body_parser_.reset();
    release_upstream(response.keep_alive());
    Exchange& ex = *exchange_;
    ex.response.status = static_cast<int>(response.result_int());
    copy_upstream_headers(response);
    ex.response.body = std::move(response.body());
    upstream_ms_ = ms_since(upstream_started_);
    for (auto& filter_ptr : route_->filters) {
      Filter& filter = *filter_ptr;
      FilterResult result;
      const auto started = Clock::now();
      try {
        result = filter.on_response(ex);
      } catch (const std::exception& e) {
        return filter_failed(filter, e.what());
      }
      filter.stats().nanoseconds.fetch_add(
          static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started).count()),
          std::memory_order_relaxed);
      if (result.rejected) return reject(filter, result);
    }
    ex.commit_response_json();
    if (state_.services.observe && route_->monitors.enabled() && ex.response.status < 300) {
      try {
        state_.services.observe(*route_, ex);
      } catch (const std::exception&) {
        // monitors never fail a request
      }
    }
    http::response<http::string_body> out{static_cast<http::status>(ex.response.status), 11};
    for (const auto& [name, value] : ex.response.headers) out.insert(name, value);
    out.set("x-request-id", ex.request_id);
    out.body() = ex.response.body;
    finish(std::move(out));
  }

  // ---- server-sent events: forwarded event by event, never buffered whole ----

  void start_stream() {
    stream_parser_.emplace(std::move(*header_parser_));
    header_parser_.reset();
    Exchange& ex = *exchange_;
    const auto& header = stream_parser_->get();
    ex.response.status = static_cast<int>(header.result_int());
    copy_upstream_headers(header);
    stream_header_.emplace(static_cast<http::status>(ex.response.status), 11);
    for (const auto& [name, value] : ex.response.headers) stream_header_->insert(name, value);
    stream_header_->set("x-request-id", ex.request_id);
    stream_header_->chunked(true);
    stream_header_->keep_alive(keep_alive_);
    stream_serializer_.emplace(*stream_header_);
    stream_digest_ = std::make_unique<StreamDigest>();
    auto self = this->shared_from_this();
    beast::get_lowest_layer(stream_).expires_after(std::chrono::milliseconds(runtime_->pools.at(route_->upstream)->config().timeout_ms));
    http::async_write_header(stream_, *stream_serializer_, [self](beast::error_code ec, std::size_t) {
      if (ec) {
        self->release_upstream(false);
        return self->close();
      }
      self->read_stream_piece();
    });
  }

  void read_stream_piece() {
    if (stream_parser_->is_done()) return end_stream();
    stream_parser_->get().body().data = stream_chunk_.data();
    stream_parser_->get().body().size = stream_chunk_.size();
    auto self = this->shared_from_this();
    upstream_->tcp().expires_after(std::chrono::milliseconds(runtime_->pools.at(route_->upstream)->config().timeout_ms));
    upstream_->visit([&](auto& s) {
      http::async_read_some(s, upstream_->buffer, *stream_parser_,
                       net::bind_executor(beast::get_lowest_layer(stream_).get_executor(),
                                          [self](beast::error_code ec, std::size_t) {
                                            if (ec == http::error::need_buffer) ec = {};
                                            if (ec) {
                                              // the client already has a 200 header: end the stream with what arrived
                                              self->release_upstream(false);
                                              self->exchange_->verdicts.push_back({"upstream", "flag", "stream broken: " + ec.message()});
                                              return self->end_stream();
                                            }
                                            const auto got = self->stream_chunk_.size() - self->stream_parser_->get().body().size;
                                            self->pending_events_.append(self->stream_chunk_.data(), got);
                                            self->forward_events(false);
                                          }));
    });
  }

  // Cuts pending_events_ into complete events ("\n\n"-terminated), filters each, writes them as one chunk.
  void forward_events(bool final) {
    out_chunk_.clear();
    std::size_t start = 0;
    for (;;) {
      auto end = pending_events_.find("\n\n", start);
      std::size_t skip = 2;
      const auto crlf = pending_events_.find("\r\n\r\n", start);
      if (crlf != std::string::npos && (end == std::string::npos || crlf < end)) {
        end = crlf;
        skip = 4;
      }
      if (end == std::string::npos) break;
      std::string event = pending_events_.substr(start, end + skip - start);
      filter_event(event);
      out_chunk_ += event;
      start = end + skip;
    }
    pending_events_.erase(0, start);
    // An event larger than this is not waited for (bounded memory): it goes through unfiltered.
    if (final || pending_events_.size() > 1024 * 1024) {
      if (!pending_events_.empty()) {
        filter_event(pending_events_);
        out_chunk_ += pending_events_;
        pending_events_.clear();
      }
    }
    if (out_chunk_.empty()) {
      if (final) return finish_stream();
      return read_stream_piece();
    }
    stream_digest_->update(out_chunk_);
    stream_bytes_ += out_chunk_.size();
    auto self = this->shared_from_this();
    net::async_write(stream_, http::make_chunk(net::buffer(out_chunk_)), [self, final](beast::error_code ec, std::size_t) {
      if (ec) {
        self->release_upstream(false);
        return self->close();
      }
      if (final) return self->finish_stream();
      self->read_stream_piece();
    });
  }

  void filter_event(std::string& event) {
    for (auto& filter : route_->filters) {
      try {
        filter->on_response_event(*exchange_, event);
      } catch (const std::exception& e) {
        filter->stats().errors.fetch_add(1, std::memory_order_relaxed);
        event = "event: error\ndata: {\"error\":{\"code\":\"filter_error\"}}\n\n";
      }
    }
  }

  void end_stream() {
    if (upstream_ && stream_parser_ && stream_parser_->is_done()) release_upstream(stream_parser_->get().keep_alive());
    forward_events(true);
  }

  void finish_stream() {
    stream_parser_.reset();
    exchange_->response.body.clear();
    auto self = this->shared_from_this();
    audit_then(stream_digest_->hex(), [self](bool durable) {
      if (!durable) self->keep_alive_ = false;  // the status is already sent: end the connection
      self->account(self->exchange_->response.status, self->stream_bytes_);
      net::async_write(self->stream_, http::make_chunk_last(), [self](beast::error_code ec, std::size_t) {
        if (ec || !self->keep_alive_) return self->close();
        self->next_request();
      });
    });
  }

  // ---- answers ----

  void send_error(int status, std::string_view code, const std::string& message, const std::vector<Header>& headers = {}) {
    Exchange& ex = *exchange_;
    http::response<http::string_body> out{static_cast<http::status>(status), 11};
    out.set(http::field::content_type, "application/json");
    out.set("x-request-id", ex.request_id);
    for (const auto& [name, value] : headers) out.set(name, value);
    out.body() = json_error(status, code, message, ex.request_id);
    ex.response.status = status;
    finish(std::move(out));
  }

  void send_plain(int status, std::string_view content_type, std::string body) {
    http::response<http::string_body> out{static_cast<http::status>(status), 11};
    out.set(http::field::content_type, std::string(content_type));
    out.body() = std::move(body);
    exchange_->response.status = status;
    route_ = nullptr;
    respond(std::move(out), /*audit=*/false);
  }

  void finish(http::response<http::string_body> out) { respond(std::move(out), /*audit=*/true); }

  void respond(http::response<http::string_body> out, bool audit) {
    out.set(http::field::server, "aegis-gateway");
    out.keep_alive(keep_alive_ && !state_.stopping);
    out.prepare_payload();
    response_ = std::move(out);
    exchange_->response.status = static_cast<int>(response_.result_int());
    if (!audit || !state_.services.audit) return write_response();
    auto self = this->shared_from_this();
    audit_then(sha256_hex(response_.body()), [self](bool durable) {
      if (!durable) {
        self->state_.audit_failures.fetch_add(1, std::memory_order_relaxed);
        // fail closed: what could not be recorded is not answered
        http::response<http::string_body> failed{http::status::service_unavailable, 11};
        failed.set(http::field::content_type, "application/json");
        failed.set(http::field::server, "aegis-gateway");
        failed.body() = json_error(503, "audit_unavailable", "the audit log cannot record this request; try again later",
                                   self->exchange_->request_id);
        failed.keep_alive(false);
        failed.prepare_payload();
        self->keep_alive_ = false;
        self->response_ = std::move(failed);
      }
      self->write_response();
    });
  }

  template <class Then>
  void audit_then(std::string response_digest, Then then) {
    if (!state_.services.audit) return then(true);
    Exchange& ex = *exchange_;
    DecisionRecord record;
    record.time_ms = now_ms();
    record.request_id = ex.request_id;
    record.client_ip = ex.request.client_ip;
    record.subject = ex.identity.subject;
    record.route = route_ ? route_->info.name : std::string();
    record.method = ex.request.method;
    record.path = ex.request.path;
    record.status = ex.response.status;
    record.verdicts = ex.verdicts;
    record.request_sha256 = sha256_hex(ex.request.body);
    record.response_sha256 = std::move(response_digest);
    if (state_.services.audit_records_bodies) {
      record.request_body = ex.request.body;
      record.response_body = response_.body();
    }
    record.latency_ms = ms_since(ex.started);
    auto self = this->shared_from_this();
    auto executor = beast::get_lowest_layer(stream_).get_executor();
    try {
      state_.services.audit(std::move(record), [self, executor, then = std::move(then)](bool durable) mutable {
        net::post(executor, [durable, then = std::move(then)]() mutable { then(durable); });
      });
    } catch (const std::exception&) {
      then(false);
    }
  }

  void write_response() {
    auto self = this->shared_from_this();
    beast::get_lowest_layer(stream_).expires_after(std::chrono::milliseconds(state_.limits.idle_timeout_ms));
    account(response_.result_int(), response_.body().size());
    http::async_write(stream_, response_, [self](beast::error_code ec, std::size_t) {
      if (ec || !self->response_.keep_alive()) return self->close();
      self->next_request();
    });
  }

  void account(unsigned status, std::size_t bytes) {
    Exchange& ex = *exchange_;
    if (route_ && counters_) {
      const auto cls = status / 100;
      counters_->by_class[cls >= 1 && cls <= 5 ? cls : 0].fetch_add(1, std::memory_order_relaxed);
      counters_->latency.observe(ms_since(ex.started) / 1000.0);
    }
    if (state_.access_log && state_.access_log->enabled()) {
      nlohmann::json line = {{"time_ms", now_ms()},
                             {"request_id", ex.request_id},
                             {"client", ex.request.client_ip},
                             {"method", ex.request.method},
                             {"path", ex.request.path},
                             {"route", route_ ? route_->info.name : ""},
                             {"status", status},
                             {"bytes", bytes},
                             {"ms", std::round(ms_since(ex.started) * 1000) / 1000},
                             {"upstream_ms", std::round(upstream_ms_ * 1000) / 1000},
                             {"subject", ex.identity.subject}};
      if (!ex.verdicts.empty()) {
        auto& verdicts = line["verdicts"] = nlohmann::json::array();
        for (const auto& v : ex.verdicts) verdicts.push_back({{"filter", v.filter}, {"outcome", v.outcome}, {"detail", v.detail}});
      }
      state_.access_log->write(line.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
    }
  }

  void next_request() {
    exchange_.reset();
    route_ = nullptr;
    counters_ = nullptr;
    upstream_ms_ = 0;
    stream_bytes_ = 0;
    runtime_.reset();
    if (state_.stopping) return close();
    wait_for_request();
  }

  void close() {
    release_upstream(false);
    beast::error_code ignored;
    beast::get_lowest_layer(stream_).socket().shutdown(tcp::socket::shutdown_both, ignored);
    beast::get_lowest_layer(stream_).close();
  }

  ServerState& state_;
  Stream stream_;
  std::string peer_ip_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::shared_ptr<Runtime> runtime_;
  const RouteConfig* route_ = nullptr;
  RouteCounters* counters_ = nullptr;
  std::unique_ptr<Exchange> exchange_;
  bool keep_alive_ = true;
  http::response<http::string_body> response_;
  // upstream side
  http::request<http::string_body> upstream_request_;
  std::unique_ptr<UpstreamConnection> upstream_;
  std::optional<http::response_parser<http::empty_body>> header_parser_;
  std::optional<http::response_parser<http::string_body>> body_parser_;
  std::optional<http::response_parser<http::buffer_body>> stream_parser_;
  Clock::time_point upstream_started_;
  double upstream_ms_ = 0;
  int attempt_ = 0;
  // streaming
  std::optional<http::response<http::empty_body>> stream_header_;
  std::optional<http::response_serializer<http::empty_body>> stream_serializer_;
  std::array<char, 16 * 1024> stream_chunk_{};
  std::string pending_events_;
  std::string out_chunk_;
  std::unique_ptr<StreamDigest> stream_digest_;
  std::size_t stream_bytes_ = 0;
};

std::string route_labels(const std::string& route) {
  std::string out = "route=\"";
  for (char c : route) {
    if (c == '"' || c == '\\') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out + "\"";
}

}  // namespace

template <class Stream>
std::string Session<Stream>::metrics_text(ServerState& state) {
  auto runtime = state.current();
  MetricsWriter writer;
  const std::vector<Header> none;
  writer.gauge("aegis_gateway_connections_open", "client connections open now", none, double(state.connections_open.load()));
  writer.counter("aegis_gateway_connections_total", "client connections accepted", none, double(state.connections_total.load()));
  writer.counter("aegis_gateway_connections_refused_total", "connections closed at accept because limits.max_connections was reached",
                 none, double(state.connections_refused.load()));
  writer.counter("aegis_gateway_requests_total", "requests read", none, double(state.requests_total.load()));
  writer.counter("aegis_gateway_bad_requests_total", "malformed, oversized or unreadable requests", none, double(state.bad_requests.load()));
  writer.counter("aegis_gateway_timeouts_total", "connections closed because a request did not arrive in time", none,
                 double(state.timeouts.load()));
  writer.counter("aegis_gateway_not_found_total", "requests that matched no route", none, double(state.not_found.load()));
  writer.counter("aegis_gateway_audit_failures_total", "requests answered 503 because the audit log could not record them", none,
                 double(state.audit_failures.load()));
  writer.counter("aegis_gateway_reloads_total", "configuration reloads applied", none, double(state.reloads.load()));
  writer.counter("aegis_gateway_reload_failures_total", "configuration reloads refused (the old config stayed)", none,
                 double(state.reload_failures.load()));
  writer.gauge("aegis_gateway_config_generation", "how many configs were loaded", none, double(runtime->generation));
  static const char* classes[] = {"other", "1xx", "2xx", "3xx", "4xx", "5xx"};
  for (const auto& route : runtime->config.routes) {
    const auto& c = *runtime->counters.at(route.info.name);
    for (int i = 0; i < 6; ++i)
      writer.counter("aegis_gateway_responses_total", "responses by route and status class",
                     {{"route", route.info.name}, {"code", classes[i]}}, double(c.by_class[i].load()));
  }
  for (const auto& route : runtime->config.routes) {
    const auto& c = *runtime->counters.at(route.info.name);
    writer.counter("aegis_gateway_upstream_errors_total", "upstream failures answered 502/503/504", {{"route", route.info.name}},
                   double(c.upstream_errors.load()));
  }
  // position tells apart two filters of one type on a route (e.g. a per-key and a per-IP limit)
  auto filter_labels = [](const RouteConfig& route, std::size_t i) {
    return std::vector<Header>{{"route", route.info.name}, {"filter", route.filters[i]->name()}, {"position", std::to_string(i + 1)}};
  };
  for (const auto& route : runtime->config.routes)
    for (std::size_t i = 0; i < route.filters.size(); ++i) {
      const auto& f = route.filters[i];
      const auto labels = filter_labels(route, i);
      auto& s = f->stats();
      writer.counter("aegis_filter_requests_total", "exchanges each filter ran on", labels, double(s.requests.load()));
      writer.counter("aegis_filter_rejected_total", "requests each filter rejected", labels, double(s.rejected.load()));
      writer.counter("aegis_filter_flagged_total", "exchanges each filter let through but flagged", labels, double(s.flagged.load()));
      writer.counter("aegis_filter_modified_total", "responses each filter changed", labels, double(s.modified.load()));
      writer.counter("aegis_filter_errors_total", "internal filter failures (failed closed)", labels, double(s.errors.load()));
      writer.counter("aegis_filter_seconds_total", "time spent in each filter", labels, double(s.nanoseconds.load()) / 1e9);
    }
  for (const auto& route : runtime->config.routes)
    for (std::size_t i = 0; i < route.filters.size(); ++i) route.filters[i]->write_metrics(writer, filter_labels(route, i));
  for (const auto& [name, pool] : runtime->pools) {
    writer.gauge("aegis_upstream_connections_open", "upstream connections open", {{"upstream", name}}, double(pool->open()));
    writer.gauge("aegis_upstream_connections_idle", "upstream connections idle in the pool", {{"upstream", name}}, double(pool->idle()));
  }
  if (state.services.write_metrics) state.services.write_metrics(writer);
  std::string text = writer.text();
  text += "# HELP aegis_gateway_request_duration_seconds time from request read to response written, by route\n";
  text += "# TYPE aegis_gateway_request_duration_seconds histogram\n";
  for (const auto& route : runtime->config.routes)
    runtime->counters.at(route.info.name)->latency.write(text, "aegis_gateway_request_duration_seconds", route_labels(route.info.name));
  return text;
}

class GatewayServer::Impl {
 public:
  Impl(GatewayConfig config, GatewayServices services) {
    state_.services = std::move(services);
    state_.limits = config.limits;
    state_.trusted_proxies = config.trusted_proxies;
    listen_ = config.listen;
    threads_ = config.threads ? config.threads : std::max(1u, std::thread::hardware_concurrency());
    state_.access_log = std::make_unique<AccessLog>(config.access_log);
    if (listen_.tls.enabled()) {
      state_.tls.emplace(ssl::context::tls_server);
      state_.tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                              ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
      try {
        state_.tls->use_certificate_chain_file(listen_.tls.certificate_file);
        state_.tls->use_private_key_file(listen_.tls.key_file, ssl::context::pem);
      } catch (const std::exception& e) {
        throw core::Error("cannot load the TLS certificate or key: " + std::string(e.what()),
                          "check listen.tls.certificate and listen.tls.key (PEM files, the key matching the certificate)");
      }
    }
    state_.runtime = make_runtime(std::move(config), state_.io, 1, threads_ == 1);
  }

  ~Impl() {
    stop();
    if (stopper_.joinable()) stopper_.join();
    for (auto& t : threads) t.join();
    std::lock_guard lock(reload_mutex_);
    // The pools' idle sockets belong to the io_context: they must close before it goes (the
    // sessions it still holds drop their references while it shuts down).
    std::lock_guard runtime_lock(state_.runtime_mutex);
    state_.runtime.reset();
  }

  void start() {
    raise_file_limit();
    beast::error_code ec;
    auto address = net::ip::make_address(listen_.address, ec);
    if (ec) throw core::Error("listen address '" + listen_.address + "' is not an IP address", "use e.g. 127.0.0.1 or 0.0.0.0");
    tcp::endpoint endpoint{address, listen_.port};
    acceptor_.emplace(state_.io);
    acceptor_->open(endpoint.protocol(), ec);
    if (!ec) acceptor_->set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_->bind(endpoint, ec);
    if (!ec) acceptor_->listen(net::socket_base::max_listen_connections, ec);
    if (ec)
      throw core::Error("cannot listen on " + listen_.address + ":" + std::to_string(listen_.port) + ": " + ec.message(),
                        "pick a free port (listen:) or stop what holds this one");
    port_ = acceptor_->local_endpoint().port();
    accept();
    work_.emplace(net::make_work_guard(state_.io));
    for (unsigned i = 0; i < threads_; ++i) threads.emplace_back([this] { state_.io.run(); });
  }

  void accept() {
    const net::any_io_executor executor =
        threads_ == 1 ? net::any_io_executor(state_.io.get_executor()) : net::any_io_executor(net::make_strand(state_.io));
    acceptor_->async_accept(executor, [this](beast::error_code ec, tcp::socket socket) {
      if (ec == net::error::operation_aborted || state_.stopping) return;
      if (!ec) {
        state_.connections_total.fetch_add(1, std::memory_order_relaxed);
        if (state_.connections_open.load(std::memory_order_relaxed) >= state_.limits.max_connections) {
          state_.connections_refused.fetch_add(1, std::memory_order_relaxed);
          beast::error_code ignored;
          socket.close(ignored);
        } else {
          state_.connections_open.fetch_add(1, std::memory_order_relaxed);
          beast::error_code ignored;
          socket.set_option(tcp::no_delay(true), ignored);
          auto endpoint = socket.remote_endpoint(ignored);
          std::string ip = ignored ? std::string("unknown") : endpoint.address().to_string();
          if (state_.tls) {
            std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(
                state_, beast::ssl_stream<beast::tcp_stream>(std::move(socket), *state_.tls), std::move(ip))
                ->start();
          } else {
            std::make_shared<Session<beast::tcp_stream>>(state_, beast::tcp_stream(std::move(socket)), std::move(ip))->start();
          }
        }
      } else if (ec == net::error::no_descriptors) {
        // out of file descriptors: back off a moment instead of spinning
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      accept();
    });
  }

  void stop() {
    if (state_.stopping.exchange(true)) return;
    net::post(state_.io, [this] {
      beast::error_code ignored;
      if (acceptor_) acceptor_->close(ignored);
      if (signals_) signals_->cancel(ignored);
    });
    // requests in flight get a moment to finish before the loop stops
    stopper_ = std::thread([this] {
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
      work_.reset();
      state_.io.stop();
      std::lock_guard lock(stopped_mutex_);
      stopped_ = true;
      stopped_cv_.notify_all();
    });
  }

  void wait() {
    std::unique_lock lock(stopped_mutex_);
    stopped_cv_.wait(lock, [this] { return stopped_; });
    if (state_.access_log) state_.access_log->flush();
  }

  void handle_signals(std::function<GatewayConfig()> reload) {
    reload_ = std::move(reload);
    signals_.emplace(state_.io, SIGHUP, SIGINT, SIGTERM);
    wait_signal();
  }

  void wait_signal() {
    signals_->async_wait([this](beast::error_code ec, int signal) {
      if (ec) return;
      if (signal == SIGHUP) {
        // loading may read key files: do it off the I/O threads
        std::thread([this] {
          std::lock_guard lock(reload_mutex_);
          if (state_.stopping) return;
          try {
            apply(reload_());
            std::cerr << "aegis gateway: configuration reloaded\n";
          } catch (const std::exception& e) {
            state_.reload_failures.fetch_add(1);
            std::cerr << "aegis gateway: reload refused, the old configuration stays: " << e.what() << "\n";
          }
        }).detach();
        return wait_signal();
      }
      std::cerr << "aegis gateway: stopping\n";
      stop();
    });
  }

  void apply(GatewayConfig config) {
    auto current = state_.current();
    auto next = make_runtime(std::move(config), state_.io, current->generation + 1, threads_ == 1);
    std::lock_guard lock(state_.runtime_mutex);
    state_.runtime = std::move(next);
    state_.reloads.fetch_add(1);
  }

  static void raise_file_limit() {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
      limit.rlim_cur = limit.rlim_max;
      setrlimit(RLIMIT_NOFILE, &limit);
    }
  }

  ServerState state_;
  ListenConfig listen_;
  unsigned threads_ = 1;
  std::optional<tcp::acceptor> acceptor_;
  std::optional<net::executor_work_guard<net::io_context::executor_type>> work_;
  std::optional<net::signal_set> signals_;
  std::function<GatewayConfig()> reload_;
  std::vector<std::thread> threads;
  std::thread stopper_;
  std::mutex reload_mutex_;  // a SIGHUP reload in progress finishes before the server goes
  std::uint16_t port_ = 0;
  std::mutex stopped_mutex_;
  std::condition_variable stopped_cv_;
  bool stopped_ = false;
};

GatewayServer::GatewayServer(GatewayConfig config, GatewayServices services)
    : impl_(std::make_unique<Impl>(std::move(config), std::move(services))) {}
GatewayServer::~GatewayServer() = default;
void GatewayServer::start() { impl_->start(); }
std::uint16_t GatewayServer::port() const { return impl_->port_; }
void GatewayServer::wait() { impl_->wait(); }
void GatewayServer::stop() { impl_->stop(); }
void GatewayServer::handle_signals(std::function<GatewayConfig()> reload) { impl_->handle_signals(std::move(reload)); }
void GatewayServer::reload(GatewayConfig config) { impl_->apply(std::move(config)); }
std::string GatewayServer::metrics_text() const { return Session<beast::tcp_stream>::metrics_text(impl_->state_); }
std::uint64_t GatewayServer::reloads() const { return impl_->state_.reloads.load(); }

}  // namespace aegis::gateway
