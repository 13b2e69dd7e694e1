// A client for OpenAI-compatible chat endpoints (vLLM, llama.cpp server, Ollama's /v1, hosted APIs):
// one keep-alive HTTP/1.1 or HTTPS connection per worker, a deadline on every request, retries with
// exponential backoff and jitter on connect errors, timeouts, 429 and 5xx (Retry-After honoured),
// a global request rate, and SSE streams read back into one answer.
#include <openssl/ssl.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <nlohmann/json.hpp>
#include <thread>

#include "aegis/core/error.h"
#include "aegis/redteam/redteam.h"

namespace aegis::redteam {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kBodyLimit = std::uint64_t{16} << 20;

struct ParsedUrl {
  bool tls = false;
  std::string host;
  std::string port;
  std::string host_header;
  std::string base_path;  // without a trailing '/'
};

ParsedUrl parse_url(const std::string& url, const std::string& flag) {
  const auto bad = [&](const std::string& why) -> core::Error {
    return core::Error(flag + " '" + url + "': " + why,
                       "give the OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (vLLM), "
                       "http://127.0.0.1:8080/v1 (llama.cpp) or http://127.0.0.1:11434/v1 (Ollama)");
  };
  ParsedUrl out;
  std::string_view rest = url;
  if (rest.rfind("https://", 0) == 0) {
    out.tls = true;
    rest.remove_prefix(8);
  } else if (rest.rfind("http://", 0) == 0) {
    rest.remove_prefix(7);
  } else {
    throw bad("not an http:// or https:// URL");
  }
  const auto slash = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view{} : rest.substr(slash);
  if (path.find_first_of("?#") != std::string_view::npos) throw bad("a base URL has no query or fragment");
  if (authority.find('@') != std::string_view::npos) throw bad("credentials in the URL are not supported; use --api-key-env");
  if (authority.empty()) throw bad("no host");
  out.host_header = std::string(authority);
  if (authority.front() == '[') {
    const auto close = authority.find(']');
    if (close == std::string_view::npos) throw bad("unclosed IPv6 bracket");
    out.host = std::string(authority.substr(1, close - 1));
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') throw bad("bad port");
      out.port = std::string(authority.substr(close + 2));
    }
  } else if (const auto colon = authority.find(':'); colon != std::string_view::npos) {
    out.host = std::string(authority.substr(0, colon));
    out.port = std::string(authority.substr(colon + 1));
  } else {
    out.host = std::string(authority);
  }
  if (out.port.empty()) out.port = out.tls ? "443" : "80";
  for (char c : out.port)
    if (!std::isdigit(static_cast<unsigned char>(c))) throw bad("bad port");
  if (out.port.size() > 5 || std::stoi(out.port) == 0 || std::stoi(out.port) > 65535) throw bad("bad port");
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  out.base_path = std::string(path);
  return out;
}

struct Failure {
  std::string message;
  bool retryable = true;
  bool fatal = false;
  std::string hint;
};

// Text from the server, shortened and made printable for an error message.
std::string excerpt(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 200)) out += (static_cast<unsigned char>(c) < 0x20) ? ' ' : c;
  if (text.size() > 200) out += "...";
  return out;
}

// A target under test may be hostile: its JSON is parsed with values nested deeper than kMaxDepth
// dropped (nlohmann's parser is iterative, but dump() and our walks are not).
constexpr int kMaxDepth = 64;
nlohmann::json parse_bounded(std::string_view text) {
  return nlohmann::json::parse(
      text, [](int depth, nlohmann::json::parse_event_t, nlohmann::json&) { return depth <= kMaxDepth; }, false);
}

// The answer text of a chat completion body, or a Failure.
std::string parse_completion(const std::string& body) {
  const auto doc = parse_bounded(body);
  if (doc.is_discarded() || !doc.is_object())
    throw Failure{"the endpoint's answer is not JSON: " + excerpt(body), true, false, {}};
  if (doc.contains("error")) throw Failure{"the endpoint answered an error: " + excerpt(doc["error"].dump()), false, false, {}};
  if (!doc.contains("choices") || !doc["choices"].is_array() || doc["choices"].empty() || !doc["choices"][0].is_object())
    throw Failure{"the endpoint's answer has no choices[0]: " + excerpt(body), false, false, {}};
  const auto& choice = doc["choices"][0];
  const nlohmann::json* content = nullptr;
  if (choice.contains("message") && choice["message"].is_object() && choice["message"].contains("content"))
    content = &choice["message"]["content"];
  else if (choice.contains("text"))
    content = &choice["text"];
  if (!content || content->is_null()) return {};
  if (content->is_string()) return content->get<std::string>();
  if (content->is_array()) {  // content parts
    std::string text;
    for (const auto& part : *content)
      if (part.is_object() && part.contains("text") && part["text"].is_string()) text += part["text"].get<std::string>();
    return text;
  }
  throw Failure{"choices[0].message.content is neither text nor parts", false, false, {}};
}

// Server-sent events: the concatenated choices[0].delta.content of every "data:" line up to [DONE].
std::string parse_sse(const std::string& body) {
  std::string text;
  std::size_t line = 0;
  bool any = false;
  while (line < body.size()) {
    auto eol = body.find('\n', line);
    if (eol == std::string::npos) eol = body.size();
    std::string_view row(body.data() + line, eol - line);
    if (!row.empty() && row.back() == '\r') row.remove_suffix(1);
    line = eol + 1;
    if (row.rfind("data:", 0) != 0) continue;
    row.remove_prefix(5);
    while (!row.empty() && row.front() == ' ') row.remove_prefix(1);
    if (row == "[DONE]") break;
    const auto event = parse_bounded(row);
    if (event.is_discarded() || !event.is_object()) continue;
    if (event.contains("error")) throw Failure{"the stream carried an error: " + excerpt(event["error"].dump()), false, false, {}};
    if (!event.contains("choices") || !event["choices"].is_array() || event["choices"].empty()) continue;
    const auto& choice = event["choices"][0];
    any = true;
    if (choice.contains("delta") && choice["delta"].is_object() && choice["delta"].contains("content") &&
        choice["delta"]["content"].is_string())
      text += choice["delta"]["content"].get<std::string>();
    else if (choice.contains("text") && choice["text"].is_string())
      text += choice["text"].get<std::string>();
  }
  if (!any) throw Failure{"the stream had no data events: " + excerpt(body), true, false, {}};
  return text;
}

}  // namespace

void check_endpoint_url(const std::string& url, const std::string& flag) { (void)parse_url(url, flag); }

RateLimiter::RateLimiter(double per_second) : per_second_(per_second) {}

void RateLimiter::acquire() {
  if (per_second_ <= 0) return;
  const auto interval = std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / per_second_));
  Clock::time_point slot;
  {
    std::lock_guard lock(mutex_);
    const auto now = Clock::now();
    slot = std::max(now, next_);
    next_ = slot + interval;
  }
  std::this_thread::sleep_until(slot);
}

struct ChatClient::Impl {
  Endpoint endpoint;
  ParsedUrl url;
  std::string target_path;
  RateLimiter* limiter;
  std::mt19937_64 rng;
  asio::io_context ioc;
  std::unique_ptr<ssl::context> tls;
  std::unique_ptr<beast::tcp_stream> plain;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;
  std::uint64_t connections = 0;

  Impl(Endpoint e, RateLimiter* l, std::uint64_t seed)
      : endpoint(std::move(e)), url(parse_url(endpoint.url, "--target")), limiter(l), rng(seed ^ 0x9E3779B97F4A7C15ull) {
    target_path = url.base_path + "/chat/completions";
    if (url.tls) {
      tls = std::make_unique<ssl::context>(ssl::context::tls_client);
      tls->set_default_verify_paths();
      if (!endpoint.ca_file.empty()) {
        beast::error_code ec;
        tls->load_verify_file(endpoint.ca_file, ec);
        if (ec) throw core::Error("cannot load the CA file " + endpoint.ca_file + ": " + ec.message(), "pass a PEM file with --ca-file");
      }
      tls->set_verify_mode(ssl::verify_peer);
    }
  }

  ~Impl() { close(); }

  beast::tcp_stream& lowest() { return secure ? beast::get_lowest_layer(*secure) : *plain; }
  bool is_open() const {
    if (secure) return beast::get_lowest_layer(*secure).socket().is_open();
    return plain && plain->socket().is_open();
  }
  void close() {
    beast::error_code ignored;
    if (secure) beast::get_lowest_layer(*secure).socket().close(ignored);
    if (plain) plain->socket().close(ignored);
    secure.reset();
    plain.reset();
    buffer.consume(buffer.size());
  }

  template <class Start>
  beast::error_code run(Start&& start) {
    beast::error_code result = asio::error::would_block;
    std::forward<Start>(start)([&result](const beast::error_code& ec, auto&&...) { result = ec; });
    ioc.restart();
    ioc.run();
    return result;
  }

  Failure transport(const std::string& what, const beast::error_code& ec) const {
    const bool timed_out = ec == beast::error::timeout || ec == asio::error::timed_out || ec == asio::error::operation_aborted;
    Failure f{what + " " + url.host_header + ": " + (timed_out ? std::string("timed out") : ec.message()), true, false, {}};
    if (ec.category() == asio::error::get_ssl_category()) {
      f.retryable = false;
      f.fatal = true;
      f.hint = "check the server's certificate (pass its CA with --ca-file) or use http:// for a local server";
    }
    return f;
  }

  void connect(Clock::time_point deadline) {
    tcp::resolver resolver(ioc);
    asio::steady_timer timer(ioc);
    timer.expires_at(deadline);
    beast::error_code resolve_ec = asio::error::would_block;
    tcp::resolver::results_type endpoints;
    resolver.async_resolve(url.host, url.port, [&](const beast::error_code& ec, tcp::resolver::results_type results) {
      resolve_ec = ec;
      endpoints = std::move(results);
      timer.cancel();
    });
    timer.async_wait([&](const beast::error_code& ec) {
      if (!ec) resolver.cancel();
    });
    ioc.restart();
    ioc.run();
    if (resolve_ec) throw Failure{"could not resolve " + url.host + ": " + resolve_ec.message(), true, false, {}};
    if (url.tls) secure = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ioc, *tls);
    else plain = std::make_unique<beast::tcp_stream>(ioc);
    lowest().expires_at(deadline);
    auto ec = run([&](auto handler) { lowest().async_connect(endpoints, handler); });
    if (ec) {
      close();
      throw transport("could not connect to", ec);
    }
    ++connections;
    if (secure) {
      if (!SSL_set_tlsext_host_name(secure->native_handle(), url.host.c_str())) {
        close();
        throw Failure{"TLS: cannot set the server name " + url.host, false, true, "use a host name, not an address, in --target"};
      }
      secure->set_verify_callback(ssl::host_name_verification(url.host));
      ec = run([&](auto handler) { secure->async_handshake(ssl::stream_base::client, handler); });
      if (ec) {
        close();
        throw transport("TLS handshake with", ec);
      }
    }
  }

  static bool stale(const beast::error_code& ec) {
    return ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
           ec == asio::error::broken_pipe || ec == asio::error::connection_aborted || ec == ssl::error::stream_truncated;
  }

  http::response<http::string_body> exchange(const std::string& body, Clock::time_point deadline) {
    http::request<http::string_body> request{http::verb::post, target_path, 11};
    request.set(http::field::host, url.host_header);
    request.set(http::field::user_agent, "aegis-redteam");
    request.set(http::field::content_type, "application/json");
    request.set(http::field::accept, endpoint.stream ? "text/event-stream" : "application/json");
    if (!endpoint.api_key.empty()) request.set(http::field::authorization, "Bearer " + endpoint.api_key);
    request.keep_alive(true);
    request.body() = body;
    request.prepare_payload();
    for (int round = 0;; ++round) {
      const bool reused = is_open();
      if (!reused) connect(deadline);
      lowest().expires_at(deadline);
      auto ec = secure ? run([&](auto h) { http::async_write(*secure, request, h); })
                       : run([&](auto h) { http::async_write(*plain, request, h); });
      if (ec) {
        close();
        if (reused && round == 0 && stale(ec)) continue;
        throw transport("sending the request to", ec);
      }
      http::response_parser<http::string_body> parser;
      parser.body_limit(kBodyLimit);
      parser.header_limit(64 * 1024);
      ec = secure ? run([&](auto h) { http::async_read_header(*secure, buffer, parser, h); })
                  : run([&](auto h) { http::async_read_header(*plain, buffer, parser, h); });
      // Boost 1.74's eager parser can miss body_limit when header and body arrive together: check here.
      if (!ec && parser.content_length() && *parser.content_length() > kBodyLimit) ec = http::error::body_limit;
      if (!ec && !parser.is_done())
        ec = secure ? run([&](auto h) { http::async_read(*secure, buffer, parser, h); })
                    : run([&](auto h) { http::async_read(*plain, buffer, parser, h); });
      if (!ec && parser.get().body().size() > kBodyLimit) ec = http::error::body_limit;
      if (ec) {
        const bool got_some = parser.got_some();
        close();
        if (reused && round == 0 && !got_some && stale(ec)) continue;
        if (ec == http::error::body_limit) throw Failure{"the answer is larger than 16 MiB; refused", false, false, {}};
        throw transport("reading the answer from", ec);
      }
      auto response = parser.release();
      if (!response.keep_alive()) close();
      return response;
    }
  }

  std::string request_body(const std::vector<ChatMessage>& messages) const {
    nlohmann::json body;
    body["model"] = endpoint.model.empty() ? "default" : endpoint.model;
    auto& list = body["messages"] = nlohmann::json::array();
    for (const auto& m : messages) list.push_back({{"role", m.role}, {"content", m.content}});
    body["temperature"] = endpoint.temperature;
    if (endpoint.max_tokens > 0) body["max_tokens"] = endpoint.max_tokens;
    body["stream"] = endpoint.stream;
    // Probes hold invalid UTF-8 only by mistake; replace rather than fail the attempt.
    return body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  }

  void backoff(int retry, int retry_after_ms) {
    long long delay = 0;
    if (retry_after_ms >= 0) {
      delay = std::min(retry_after_ms, endpoint.max_retry_after_ms);
    } else {
      const long long cap = std::min<long long>(endpoint.max_backoff_ms, static_cast<long long>(endpoint.backoff_ms) << std::min(retry, 20));
      // Equal jitter: half fixed, half random, so that workers that failed together spread out.
      delay = cap / 2 + (cap > 1 ? static_cast<long long>(rng() % static_cast<std::uint64_t>(cap / 2 + 1)) : 0);
    }
    if (delay > 0) std::this_thread::sleep_for(std::chrono::milliseconds(delay));
  }

  ChatResult complete(const std::vector<ChatMessage>& messages) {
    ChatResult result;
    const auto body = request_body(messages);
    const auto start = Clock::now();
    for (int attempt = 0;; ++attempt) {
      int retry_after_ms = -1;
      Failure failure;
      try {
        if (limiter) limiter->acquire();
        ++result.tries;
        const auto deadline = Clock::now() + std::chrono::milliseconds(std::max(1, endpoint.timeout_ms));
        auto response = exchange(body, deadline);
        result.status = static_cast<int>(response.result_int());
        const int status = result.status;
        if (status == 200) {
          const auto& type = response[http::field::content_type];
          const bool sse = type.find("text/event-stream") != beast::string_view::npos ||
                           (endpoint.stream && response.body().rfind("data:", 0) == 0);
          result.content = sse ? parse_sse(response.body()) : parse_completion(response.body());
          result.ok = true;
          break;
        }
        const auto retry_after = response[http::field::retry_after];
        if (!retry_after.empty() && retry_after.size() < 9 &&
            std::all_of(retry_after.begin(), retry_after.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); }))
          retry_after_ms = std::stoi(std::string(retry_after)) * 1000;
        const std::string what = "HTTP " + std::to_string(status) + " from " + url.host_header + target_path + ": " +
                                 excerpt(response.body());
        if (status == 429 || status >= 500) {
          failure = Failure{what, true, false, {}};
        } else if (status == 401 || status == 403) {
          failure = Failure{what, false, true, "the endpoint wants credentials: put the API key in an environment variable and pass --api-key-env NAME"};
        } else if (status == 404 || status == 405) {
          failure = Failure{what, false, true,
                            "--target must be the OpenAI-compatible base URL (ending in /v1); aegis POSTs to {base}/chat/completions"};
        } else {
          failure = Failure{what, false, false, {}};
        }
      } catch (const Failure& f) {
        failure = f;
      }
      result.error = failure.message;
      result.fatal = failure.fatal;
      result.hint = failure.hint;
      if (!failure.retryable || attempt >= endpoint.retries) break;
      backoff(attempt, retry_after_ms);
    }
    result.latency_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    if (result.ok) result.error.clear();
    return result;
  }
};

ChatClient::ChatClient(Endpoint endpoint, RateLimiter* limiter, std::uint64_t jitter_seed)
    : impl_(std::make_unique<Impl>(std::move(endpoint), limiter, jitter_seed)) {}
ChatClient::~ChatClient() = default;
ChatResult ChatClient::complete(const std::vector<ChatMessage>& messages) { return impl_->complete(messages); }
std::uint64_t ChatClient::connections_opened() const { return impl_->connections; }

}  // namespace aegis::redteam
