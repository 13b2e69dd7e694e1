#include "aegis/gateway/alerts.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <atomic>
#include <boost/asio.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <condition_variable>
#include <cstdlib>
#include <ctime>
#include <deque>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <unordered_map>

#include "aegis/core/error.h"

namespace aegis::gateway {

namespace {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
namespace http = boost::beast::http;
using tcp = boost::asio::ip::tcp;
using json = nlohmann::json;
using SteadyTime = std::chrono::steady_clock::time_point;

constexpr std::size_t kMaxResponseBytes = 64 * 1024;  // a webhook's answer is read and discarded
constexpr std::size_t kMaxCooldownKeys = 100'000;     // (rule, client) pairs remembered for de-duplication
constexpr std::size_t kMaxSummaryRules = 64;          // rule ids named one by one in a summary
constexpr auto kSummaryPoll = std::chrono::milliseconds(500);

struct WebhookTarget {
  bool tls = false;
  std::string host;
  std::string port;
  std::string target;      // path and query
  std::string host_header;
  std::string label;       // for metrics and messages: no credentials, no query
};

// http(s)://[user@]host[:port][/path[?query]]; IPv6 literals in brackets. nullopt with `why` set.
std::optional<WebhookTarget> parse_webhook_url(std::string_view url, std::string& why) {
  WebhookTarget out;
  std::string_view rest;
  if (url.starts_with("http://")) {
    rest = url.substr(7);
  } else if (url.starts_with("https://")) {
    out.tls = true;
    rest = url.substr(8);
  } else {
    why = "a webhook URL starts with http:// or https://";
    return std::nullopt;
  }
  const std::size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  std::string target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (target.front() == '?') target.insert(target.begin(), '/');
  if (auto at = authority.rfind('@'); at != std::string_view::npos) authority = authority.substr(at + 1);
  std::string_view host = authority, port = out.tls ? "443" : "80";
  if (authority.starts_with('[')) {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      why = "the IPv6 address in the webhook URL lacks its closing ']'";
      return std::nullopt;
    }
    host = authority.substr(1, close - 1);
    if (close + 1 < authority.size()) {
      if (authority[close + 1] != ':') {
        why = "unexpected text after the IPv6 address in the webhook URL";
        return std::nullopt;
      }
      port = authority.substr(close + 2);
    }
  } else if (auto colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) {
    why = "the webhook URL has no host";
    return std::nullopt;
  }
  unsigned long port_number = 0;
  if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      (port_number = std::stoul(std::string(port))) == 0 || port_number > 65535) {
    why = "the webhook URL's port is not a number from 1 to 65535";
    return std::nullopt;
  }
  for (char c : target)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      why = "the webhook URL's path contains spaces or control characters (percent-encode them)";
      return std::nullopt;
    }
  out.host = std::string(host);
  out.port = std::string(port);
  out.target = target;
  const bool default_port = port == (out.tls ? "443" : "80");
  const std::string bracketed = host.find(':') != std::string_view::npos ? "[" + out.host + "]" : out.host;
  out.host_header = default_port ? bracketed : bracketed + ":" + out.port;
  out.label = std::string(out.tls ? "https://" : "http://") + bracketed + ":" + out.port +
              target.substr(0, target.find('?'));
  return out;
}

std::string utc_iso8601(std::int64_t time_ms) {
  std::time_t seconds = static_cast<std::time_t>(time_ms / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[40];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  char millis[8];
  std::snprintf(millis, sizeof millis, ".%03dZ", static_cast<int>(((time_ms % 1000) + 1000) % 1000));
  return std::string(text) + millis;
}

std::int64_t now_utc_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// The outcome of one POST.
struct Delivery {
  bool ok = false;
  bool retryable = true;  // a 4xx other than 408/429 will not get better by trying again
  std::string error;
};

// One POST on its own io_context, bounded as a whole by `timeout` (resolve, connect, TLS, write,
// read): the worker thread may block here, callers of raise() never do.
class WebhookPost {
 public:
  WebhookPost(const WebhookTarget& target, const std::vector<Header>& headers, const std::string& body,
              std::chrono::milliseconds timeout, ssl::context* tls)
      : target_(target), timeout_(timeout), tls_(tls) {
    request_.method(http::verb::post);
    request_.target(target.target);
    request_.version(11);
    request_.set(http::field::host, target.host_header);
    request_.set(http::field::user_agent, "aegis-gateway");
    request_.set(http::field::content_type, "application/json");
    request_.set(http::field::connection, "close");
    for (const auto& [name, value] : headers) request_.set(name, value);
    request_.body() = body;
    request_.prepare_payload();
    parser_.body_limit(kMaxResponseBytes);
    parser_.header_limit(16 * 1024);
  }

  Delivery run() {
    result_.error = "no answer within " + std::to_string(timeout_.count()) + " ms";
    resolver_.async_resolve(target_.host, target_.port, [this](beast::error_code ec, tcp::resolver::results_type results) {
      if (ec) return fail("cannot resolve " + target_.host + ": " + ec.message());
      if (target_.tls) {
        tls_stream_.emplace(ioc_, *tls_);
        if (!SSL_set_tlsext_host_name(tls_stream_->native_handle(), target_.host.c_str()))
          return fail("cannot set the TLS server name");
        tls_stream_->set_verify_mode(ssl::verify_peer);
        tls_stream_->set_verify_callback(ssl::host_name_verification(target_.host));
        beast::get_lowest_layer(*tls_stream_).async_connect(results, [this](beast::error_code ec2, const tcp::endpoint&) {
          if (ec2) return fail("cannot connect: " + ec2.message());
          tls_stream_->async_handshake(ssl::stream_base::client, [this](beast::error_code ec3) {
            if (ec3) return fail("TLS handshake failed: " + ec3.message());
            exchange(*tls_stream_);
          });
        });
      } else {
        plain_stream_.emplace(ioc_);
        plain_stream_->async_connect(results, [this](beast::error_code ec2, const tcp::endpoint&) {
          if (ec2) return fail("cannot connect: " + ec2.message());
          exchange(*plain_stream_);
        });
      }
    });
    ioc_.run_for(timeout_);
    return result_;
  }

 private:
  template <class Stream>
  void exchange(Stream& stream) {
    http::async_write(stream, request_, [this, &stream](beast::error_code ec, std::size_t) {
      if (ec) return fail("cannot send: " + ec.message());
      http::async_read(stream, buffer_, parser_, [this](beast::error_code ec2, std::size_t) {
        if (ec2) return fail("no valid HTTP answer: " + ec2.message());
        const unsigned status = parser_.get().result_int();
        result_.ok = status >= 200 && status < 300;
        result_.retryable = status >= 500 || status == 408 || status == 429;
        result_.error = result_.ok ? std::string() : "answered HTTP " + std::to_string(status);
        ioc_.stop();
      });
    });
  }

  void fail(std::string why) {
    result_.ok = false;
    result_.error = std::move(why);
    ioc_.stop();
  }

  const WebhookTarget& target_;
  std::chrono::milliseconds timeout_;
  ssl::context* tls_;
  Delivery result_;
  // Declared before the streams so that they are destroyed first: pending handlers die with ioc_.
  net::io_context ioc_;
  tcp::resolver resolver_{ioc_};
  std::optional<beast::tcp_stream> plain_stream_;
  std::optional<beast::ssl_stream<beast::tcp_stream>> tls_stream_;
  http::request<http::string_body> request_;
  beast::flat_buffer buffer_;
  http::response_parser<http::string_body> parser_;
};

std::string expand_environment(const std::string& text, const std::string& config_file, const YAML::Node& node) {
  std::string out;
  std::size_t i = 0;
  while (i < text.size()) {
    const std::size_t open = text.find("${", i);
    if (open == std::string::npos) {
      out.append(text, i, std::string::npos);
      break;
    }
    const std::size_t close = text.find('}', open + 2);
    if (close == std::string::npos) throw_config_error(config_file, node, "unterminated ${ in a webhook header", "write ${NAME}");
    out.append(text, i, open - i);
    const std::string name = text.substr(open + 2, close - open - 2);
    const char* value = std::getenv(name.c_str());
    if (name.empty() || !value)
      throw_config_error(config_file, node, "environment variable " + name + " (named in a webhook header) is not set",
                         "export it before starting the gateway");
    out += value;
    i = close + 1;
  }
  return out;
}

unsigned read_unsigned(const YAML::Node& node, const std::string& what, unsigned low, unsigned high,
                       const std::string& config_file) {
  long long value = 0;
  try {
    value = node.as<long long>();
  } catch (const YAML::Exception&) {
    throw_config_error(config_file, node, what + " must be a whole number");
  }
  if (value < static_cast<long long>(low) || value > static_cast<long long>(high))
    throw_config_error(config_file, node, what + " must be from " + std::to_string(low) + " to " + std::to_string(high));
  return static_cast<unsigned>(value);
}

std::string read_text(const YAML::Node& node, const std::string& what, const std::string& config_file) {
  if (!node.IsScalar()) throw_config_error(config_file, node, what + " must be a text value");
  return node.Scalar();
}

bool read_bool(const YAML::Node& node, const std::string& what, const std::string& config_file) {
  try {
    return node.as<bool>();
  } catch (const YAML::Exception&) {
    throw_config_error(config_file, node, what + " must be true or false");
  }
}

void only_keys(const YAML::Node& map, const std::string& where, const std::vector<std::string>& allowed,
               const std::string& config_file) {
  if (!map.IsMap()) throw_config_error(config_file, map, where + " must be a mapping");
  for (const auto& entry : map) {
    const std::string key = entry.first.IsScalar() ? entry.first.Scalar() : std::string();
    if (std::find(allowed.begin(), allowed.end(), key) == allowed.end()) {
      std::string list;
      for (const auto& name : allowed) list += (list.empty() ? "" : ", ") + name;
      throw_config_error(config_file, entry.first, "unknown key '" + key + "' in " + where, "use one of: " + list);
    }
  }
}

bool valid_header_name(std::string_view name) {
  if (name.empty()) return false;
  for (char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos))
      return false;
  return true;
}

}  // namespace

AlertConfig parse_alert_config(const YAML::Node& node, const std::string& config_file) {
  AlertConfig config;
  if (!node || node.IsNull()) return config;
  only_keys(node, "alerts",
            {"webhooks", "max_per_minute", "cooldown_seconds", "log", "queue_size", "timeout_ms", "retries", "backoff_ms"},
            config_file);
  if (node["max_per_minute"])
    config.max_per_minute = read_unsigned(node["max_per_minute"], "alerts.max_per_minute", 0, 100'000, config_file);
  if (node["cooldown_seconds"])
    config.cooldown_seconds = read_unsigned(node["cooldown_seconds"], "alerts.cooldown_seconds", 0, 86'400, config_file);
  if (node["log"]) config.log = read_bool(node["log"], "alerts.log", config_file);
  if (node["queue_size"]) config.queue_size = read_unsigned(node["queue_size"], "alerts.queue_size", 1, 1'000'000, config_file);
  if (node["timeout_ms"]) config.timeout_ms = read_unsigned(node["timeout_ms"], "alerts.timeout_ms", 1, 600'000, config_file);
  if (node["retries"]) config.retries = read_unsigned(node["retries"], "alerts.retries", 0, 10, config_file);
  if (node["backoff_ms"]) config.backoff_ms = read_unsigned(node["backoff_ms"], "alerts.backoff_ms", 0, 600'000, config_file);
  if (const YAML::Node hooks = node["webhooks"]) {
    if (!hooks.IsSequence()) throw_config_error(config_file, hooks, "alerts.webhooks must be a list of {url: ...}");
    for (const auto& hook : hooks) {
      only_keys(hook, "a webhook", {"url", "headers", "min_severity", "max_per_minute"}, config_file);
      WebhookConfig webhook;
      if (!hook["url"]) throw_config_error(config_file, hook, "a webhook needs a url", "add url: https://...");
      webhook.url = read_text(hook["url"], "url", config_file);
      std::string why;
      if (!parse_webhook_url(webhook.url, why)) throw_config_error(config_file, hook["url"], why);
      if (const YAML::Node headers = hook["headers"]) {
        if (!headers.IsMap()) throw_config_error(config_file, headers, "headers must be a mapping of name: value");
        for (const auto& entry : headers) {
          const std::string name = read_text(entry.first, "a header name", config_file);
          if (!valid_header_name(name)) throw_config_error(config_file, entry.first, "'" + name + "' is not a valid header name");
          std::string value = expand_environment(read_text(entry.second, "header " + name, config_file), config_file, entry.second);
          if (value.find_first_of("\r\n") != std::string::npos || value.find('\0') != std::string::npos)
            throw_config_error(config_file, entry.second, "header " + name + " contains a line break or NUL");
          std::string lower = name;
          for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          webhook.headers.emplace_back(std::move(lower), std::move(value));
        }
      }
      if (hook["min_severity"]) {
        auto severity = core::parse_severity(read_text(hook["min_severity"], "min_severity", config_file));
        if (!severity)
          throw_config_error(config_file, hook["min_severity"], "min_severity must be critical, high, medium, low or info");
        webhook.min_severity = *severity;
      }
      if (hook["max_per_minute"])
        webhook.max_per_minute = read_unsigned(hook["max_per_minute"], "max_per_minute", 0, 100'000, config_file);
      config.webhooks.push_back(std::move(webhook));
    }
  }
  return config;
}

std::string alert_json(const Alert& alert, std::uint64_t repeats_suppressed) {
  json out = {{"type", "alert"},
              {"rule_id", alert.rule_id},
              {"severity", std::string(core::to_string(alert.severity))},
              {"title", alert.title},
              {"client", alert.client},
              {"route", alert.route},
              {"time", utc_iso8601(alert.time_ms)},
              {"time_ms", alert.time_ms}};
  if (!alert.detail_json.empty()) {
    auto detail = parse_bounded_json(alert.detail_json, 32);
    out["detail"] = detail ? std::move(*detail) : json(alert.detail_json);
  }
  if (repeats_suppressed > 0) out["repeats_suppressed"] = repeats_suppressed;
  return out.dump(-1, ' ', false, json::error_handler_t::replace);
}

// ---------------------------------------------------------------------------------------------

struct AlertDispatcher::Impl {
  struct Webhook {
    WebhookConfig config;
    WebhookTarget target;
    unsigned per_minute = 0;
    // Token bucket: `per_minute` tokens, refilled evenly over a minute.
    double tokens = 0;
    SteadyTime refilled{};
    // Withheld by the rate limit, waiting for a token to be reported as one summary.
    std::uint64_t pending = 0;
    std::map<std::string, std::uint64_t> pending_by_rule;
    core::Severity pending_severity = core::Severity::Info;
    bool dead_during_stop = false;
    std::atomic<std::uint64_t> sent{0}, failed{0}, suppressed{0}, summaries{0};
  };
  struct Repeats {
    SteadyTime last_sent;
    std::uint64_t count = 0;
  };

  AlertConfig config;
  LogSink log_sink;
  Clock clock;
  std::vector<std::unique_ptr<Webhook>> webhooks;
  std::unique_ptr<ssl::context> tls;
  std::unordered_map<std::string, Repeats> repeats;  // worker thread only

  mutable std::mutex mutex;
  std::condition_variable wake;
  std::condition_variable done;
  std::deque<Alert> queue;
  std::uint64_t enqueued = 0, handled = 0;
  std::uint64_t flush_requests = 0, flushes_served = 0;
  bool stopping = false;
  std::atomic<std::uint64_t> raised{0}, dropped{0}, deduplicated{0}, logged{0};
  std::thread worker;

  SteadyTime now() const { return clock ? clock() : std::chrono::steady_clock::now(); }

  bool take_token(Webhook& hook) {
    if (hook.per_minute == 0) return true;
    const SteadyTime t = now();
    const double elapsed = std::chrono::duration<double>(t - hook.refilled).count();
    if (elapsed > 0) {
      hook.tokens = std::min<double>(hook.per_minute, hook.tokens + elapsed * hook.per_minute / 60.0);
      hook.refilled = t;
    }
    if (hook.tokens < 1.0) return false;
    hook.tokens -= 1.0;
    return true;
  }

  // Waits on the stop flag rather than sleeping, so that stop() is not held up by a back-off.
  bool backoff(std::chrono::milliseconds delay) {
    std::unique_lock lock(mutex);
    return !wake.wait_for(lock, delay, [&] { return stopping; });
  }

  void deliver(Webhook& hook, const std::string& body) {
    if (hook.dead_during_stop) {
      hook.failed.fetch_add(1);
      return;
    }
    Delivery result;
    const bool shutting_down = [&] {
      std::lock_guard lock(mutex);
      return stopping;
    }();
    const unsigned attempts = shutting_down ? 1 : config.retries + 1;
    auto delay = std::chrono::milliseconds(config.backoff_ms);
    for (unsigned attempt = 0; attempt < attempts; ++attempt) {
      if (attempt > 0) {
        if (!backoff(delay)) break;
        delay *= 2;
      }
      result = WebhookPost(hook.target, hook.config.headers, body, std::chrono::milliseconds(config.timeout_ms), tls.get()).run();
      if (result.ok || !result.retryable) break;
    }
    if (result.ok) {
      hook.sent.fetch_add(1);
      return;
    }
    hook.failed.fetch_add(1);
    if (shutting_down) hook.dead_during_stop = true;
    if (log_sink && config.log) {
      json line = {{"type", "alert-delivery-failed"}, {"webhook", hook.target.label}, {"error", result.error}};
      log_sink(line.dump(-1, ' ', false, json::error_handler_t::replace));
    }
  }

  // One "suppressed K alerts" delivery when a token allows it; the count is reset either way, so a
  // dead webhook does not accumulate an ever-growing summary.
  void send_summary_if_due(Webhook& hook) {
    if (hook.pending == 0 || !take_token(hook)) return;
    json by_rule = json::object();
    for (const auto& [rule, count] : hook.pending_by_rule) by_rule[rule] = count;
    Alert summary;
    summary.rule_id = "aegis.alerts-suppressed";
    summary.severity = hook.pending_severity;
    summary.title = "suppressed " + std::to_string(hook.pending) + " alerts (rate limit " + std::to_string(hook.per_minute) +
                    " per minute)";
    summary.detail_json = json{{"suppressed", hook.pending}, {"by_rule", by_rule}}.dump(-1, ' ', false, json::error_handler_t::replace);
    summary.time_ms = now_utc_ms();
    hook.pending = 0;
    hook.pending_by_rule.clear();
    hook.pending_severity = core::Severity::Info;
    hook.summaries.fetch_add(1);
    deliver(hook, alert_json(summary));
  }

  void handle(Alert& alert) {
    if (alert.time_ms == 0) alert.time_ms = now_utc_ms();
    std::uint64_t repeated = 0;
    if (config.cooldown_seconds > 0) {
      const SteadyTime t = now();
      const auto cooldown = std::chrono::seconds(config.cooldown_seconds);
      if (repeats.size() >= kMaxCooldownKeys)
        std::erase_if(repeats, [&](const auto& entry) { return t - entry.second.last_sent >= cooldown; });
      std::string key = alert.rule_id;
      key += '\x1f';
      key += alert.client;
      auto [it, inserted] = repeats.try_emplace(std::move(key));
      if (!inserted && t - it->second.last_sent < cooldown) {
        ++it->second.count;
        deduplicated.fetch_add(1);
        return;
      }
      repeated = inserted ? 0 : it->second.count;
      it->second = {t, 0};
      if (repeats.size() > kMaxCooldownKeys) repeats.erase(it);  // full of live keys: forget, do not grow
    }
    const std::string body = alert_json(alert, repeated);
    if (log_sink && config.log) {
      log_sink(body);
      logged.fetch_add(1);
    }
    for (auto& hook : webhooks) {
      if (alert.severity < hook->config.min_severity) continue;
      send_summary_if_due(*hook);
      if (!take_token(*hook)) {
        ++hook->pending;
        if (hook->pending_by_rule.size() < kMaxSummaryRules || hook->pending_by_rule.count(alert.rule_id))
          ++hook->pending_by_rule[alert.rule_id];
        hook->pending_severity = std::max(hook->pending_severity, alert.severity);
        hook->suppressed.fetch_add(1);
        continue;
      }
      deliver(*hook, body);
    }
  }

  void run() {
    for (;;) {
      std::deque<Alert> batch;
      std::uint64_t flush_seen = 0;
      bool last_round = false;
      {
        std::unique_lock lock(mutex);
        wake.wait_for(lock, kSummaryPoll, [&] { return !queue.empty() || stopping || flush_requests > flushes_served; });
        batch.swap(queue);
        flush_seen = flush_requests;
        last_round = stopping;
      }
      for (auto& alert : batch) handle(alert);
      for (auto& hook : webhooks) send_summary_if_due(*hook);
      {
        std::lock_guard lock(mutex);
        handled += batch.size();
        flushes_served = flush_seen;
        if (last_round && queue.empty()) {
          done.notify_all();
          return;
        }
      }
      done.notify_all();
    }
  }
};

AlertDispatcher::AlertDispatcher(AlertConfig config, LogSink log_sink, Clock clock) : impl_(std::make_unique<Impl>()) {
  impl_->config = std::move(config);
  impl_->log_sink = std::move(log_sink);
  impl_->clock = std::move(clock);
  const SteadyTime start = impl_->now();
  for (const auto& webhook : impl_->config.webhooks) {
    std::string why;
    auto target = parse_webhook_url(webhook.url, why);
    if (!target) throw core::Error("cannot use the webhook " + webhook.url + ": " + why, "fix alerts.webhooks in the gateway config");
    auto hook = std::make_unique<Impl::Webhook>();
    hook->config = webhook;
    hook->target = std::move(*target);
    hook->per_minute = webhook.max_per_minute.value_or(impl_->config.max_per_minute);
    hook->tokens = hook->per_minute;
    hook->refilled = start;
    if (hook->target.tls && !impl_->tls) {
      impl_->tls = std::make_unique<ssl::context>(ssl::context::tls_client);
      impl_->tls->set_default_verify_paths();
    }
    impl_->webhooks.push_back(std::move(hook));
  }
  impl_->worker = std::thread([impl = impl_.get()] { impl->run(); });
}

AlertDispatcher::~AlertDispatcher() { stop(); }

bool AlertDispatcher::raise(Alert alert) {
  {
    std::lock_guard lock(impl_->mutex);
    if (!impl_->stopping && impl_->queue.size() < impl_->config.queue_size) {
      impl_->queue.push_back(std::move(alert));
      ++impl_->enqueued;
      impl_->raised.fetch_add(1);
      impl_->wake.notify_one();
      return true;
    }
  }
  impl_->dropped.fetch_add(1);
  return false;
}

void AlertDispatcher::flush() {
  std::unique_lock lock(impl_->mutex);
  if (impl_->stopping) return;
  const std::uint64_t target = impl_->enqueued;
  const std::uint64_t request = ++impl_->flush_requests;
  impl_->wake.notify_all();
  impl_->done.wait(lock, [&] { return (impl_->handled >= target && impl_->flushes_served >= request) || impl_->stopping; });
}

void AlertDispatcher::stop() {
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->stopping) return;
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  if (impl_->worker.joinable()) impl_->worker.join();
}

AlertCounters AlertDispatcher::counters() const {
  AlertCounters out;
  out.raised = impl_->raised.load();
  out.dropped = impl_->dropped.load();
  out.deduplicated = impl_->deduplicated.load();
  out.logged = impl_->logged.load();
  for (const auto& hook : impl_->webhooks) {
    out.sent += hook->sent.load();
    out.failed += hook->failed.load();
    out.suppressed += hook->suppressed.load();
    out.summaries += hook->summaries.load();
  }
  return out;
}

void AlertDispatcher::write_metrics(MetricsWriter& writer) const {
  writer.counter("aegis_gateway_alerts_raised_total", "alerts raised by filters and monitors", {}, double(impl_->raised.load()));
  writer.counter("aegis_gateway_alerts_dropped_total", "alerts dropped because the alert queue was full", {},
                 double(impl_->dropped.load()));
  writer.counter("aegis_gateway_alerts_deduplicated_total", "repeats of a rule for a client within the cooldown", {},
                 double(impl_->deduplicated.load()));
  writer.counter("aegis_gateway_alerts_logged_total", "alerts written to the log", {}, double(impl_->logged.load()));
  for (const auto& hook : impl_->webhooks) {
    const std::vector<Header> labels{{"webhook", hook->target.label}};
    writer.counter("aegis_gateway_alerts_sent_total", "webhook deliveries answered 2xx", labels, double(hook->sent.load()));
    writer.counter("aegis_gateway_alerts_failed_total", "webhook deliveries given up after retries", labels,
                   double(hook->failed.load()));
    writer.counter("aegis_gateway_alerts_suppressed_total", "alerts withheld by a webhook's rate limit (summarised)", labels,
                   double(hook->suppressed.load()));
    writer.counter("aegis_gateway_alerts_summaries_total", "'suppressed K alerts' summaries sent", labels,
                   double(hook->summaries.load()));
  }
}

}  // namespace aegis::gateway
