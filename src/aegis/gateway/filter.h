// The gateway's filter chain contract: what a filter sees of one request/response exchange, what it
// may answer, and the counters every filter keeps. Filters are small classes with one job each
// (Envoy's idea); the server runs them in the configured order and never on a blocking call.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace YAML {
class Node;
}

namespace aegis::gateway {

using Header = std::pair<std::string, std::string>;  // name in lower case, value as sent
class Filter;

// One HTTP request as the filters see it (the server copies it out of the wire parser).
struct Request {
  std::string method;     // upper case: GET, POST, ...
  std::string target;     // as sent: path and query
  std::string path;       // target without the query, not percent-decoded
  std::vector<Header> headers;
  std::string body;
  std::string client_ip;  // the peer address (X-Forwarded-For is not trusted unless configured)
  // The first header with this name (case-insensitive), or empty.
  std::string_view header(std::string_view name) const;
};

struct Response {
  int status = 0;
  std::vector<Header> headers;  // names in lower case
  std::string body;
  std::string_view header(std::string_view name) const;
  void set_header(std::string name, std::string value);  // replaces, name lower-cased
};

// Who is calling, once an authentication filter has run.
struct Identity {
  std::string subject;              // API key id or JWT "sub"; empty: anonymous
  std::string scheme;               // "api-key", "jwt" or empty
  std::vector<std::string> roles;
  bool authenticated() const { return !subject.empty(); }
};

// How the route's upstream speaks: a JSON classifier ({"inputs": [...]} -> {"probabilities": [...]}),
// the OpenAI chat-completions API (possibly streamed as server-sent events), or anything else.
enum class ApiStyle { Classifier, OpenAiChat, Passthrough };

struct RouteInfo {
  std::string name;
  std::string path;  // as configured: exact, or a prefix ending in '*'
  ApiStyle api = ApiStyle::Passthrough;
};

// One line of the decision record: which filter did what. Goes to the audit log and the access log.
struct Verdict {
  std::string filter;  // filter name, e.g. "jwt", "rate_limit"
  std::string outcome; // "allow", "reject", "flag" (let through, marked) or "modify" (changed the response)
  std::string detail;  // short reason, e.g. "expired token", "top_k=3"
};

// A request and, once the upstream answered, its response. Filters read and modify it.
struct Exchange {
  Request request;
  Response response;
  const RouteInfo* route = nullptr;
  Identity identity;
  std::vector<Verdict> verdicts;
  std::string request_id;
  // State a filter keeps for this exchange between its phases (a canary planted in the request and
  // looked for in the answer, the incremental scanner of a streamed answer), keyed by the filter.
  template <class T>
  T* filter_state(const Filter* filter) const {
    for (const auto& [owner, state] : filter_states_)
      if (owner == filter) return static_cast<T*>(state.get());
    return nullptr;
  }
  template <class T>
  T& set_filter_state(const Filter* filter, std::shared_ptr<T> state) {
    T& ref = *state;
    for (auto& [owner, existing] : filter_states_)
      if (owner == filter) {
        existing = std::move(state);
        return ref;
      }
    filter_states_.emplace_back(filter, std::move(state));
    return ref;
  }
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  // The request body parsed as JSON (depth-bounded), parsed on first use and cached; nullptr when
  // the body is not JSON. A filter that replaces request.body calls request_body_replaced().
  const nlohmann::json* request_json();
  // The response body parsed as JSON, likewise; response_json_mutable() lets an output filter edit
  // it, and the server re-serialises the body once after the response filters ran.
  nlohmann::json* response_json_mutable();
  const nlohmann::json* response_json() { return response_json_mutable(); }
  bool response_json_dirty() const { return response_json_dirty_; }
  // Re-serialises an edited response JSON into response.body (the server calls this).
  void commit_response_json();
  // Drops the cached parse after response.body was replaced as text.
  void response_body_replaced();
  // Drops the cached request parse after request.body was replaced (e.g. a canary planted).
  void request_body_replaced();
  Exchange();
  ~Exchange();
  Exchange(Exchange&&) noexcept;
  Exchange& operator=(Exchange&&) noexcept;

 private:
  struct Parsed;
  std::unique_ptr<Parsed> parsed_;
  bool response_json_dirty_ = false;
  std::vector<std::pair<const Filter*, std::shared_ptr<void>>> filter_states_;
};

// Parses JSON with a nesting bound; nullopt when the text is not JSON or nests deeper than max_depth.
std::optional<nlohmann::json> parse_bounded_json(std::string_view text, int max_depth = 64);

// What a filter decided. reject(): the chain stops and the client gets status/code/message as the
// gateway's JSON error ({"error": {"code", "message", "request_id"}}) with the extra headers.
struct FilterResult {
  bool rejected = false;
  int status = 0;
  std::string code;     // machine-readable, e.g. "rate_limited", "invalid_token"
  std::string message;  // for the client: what failed and what to do
  std::vector<Header> headers;  // e.g. retry-after, www-authenticate
  static FilterResult pass() { return {}; }
  static FilterResult reject(int status, std::string code, std::string message, std::vector<Header> headers = {}) {
    FilterResult r;
    r.rejected = true;
    r.status = status;
    r.code = std::move(code);
    r.message = std::move(message);
    r.headers = std::move(headers);
    return r;
  }
};

// Counters every filter keeps; the server exports them at /metrics with the filter and route names.
struct FilterStats {
  std::atomic<std::uint64_t> requests{0};   // exchanges the filter ran on
  std::atomic<std::uint64_t> rejected{0};   // of which it rejected
  std::atomic<std::uint64_t> flagged{0};    // let through but marked (e.g. low confidence)
  std::atomic<std::uint64_t> modified{0};   // responses it changed
  std::atomic<std::uint64_t> errors{0};     // internal failures (fail closed: these are rejections too)
  std::atomic<std::uint64_t> nanoseconds{0};// time spent in the filter
};

// Prometheus text exposition: the server owns one and passes it to every filter's write_metrics.
class MetricsWriter {
 public:
  // Writes "# HELP"/"# TYPE" once per family, then one sample line per call.
  void counter(std::string_view family, std::string_view help, const std::vector<Header>& labels, double value);
  void gauge(std::string_view family, std::string_view help, const std::vector<Header>& labels, double value);
  const std::string& text() const { return text_; }

 private:
  void sample(std::string_view type, std::string_view family, std::string_view help, const std::vector<Header>& labels,
              double value);
  std::string text_;
  std::vector<std::string> declared_;
};

using FilterDone = std::function<void(FilterResult)>;

class Filter {
 public:
  explicit Filter(std::string name) : name_(std::move(name)) {}
  virtual ~Filter() = default;
  Filter(const Filter&) = delete;
  Filter& operator=(const Filter&) = delete;

  const std::string& name() const { return name_; }
  FilterStats& stats() { return stats_; }

  // Request phase. A filter that must wait on I/O (Redis) returns true from asynchronous() and
  // answers through on_request_async's `done`, from any thread, exactly once; the server calls
  // only the one of the two methods that applies.
  virtual bool asynchronous() const { return false; }
  virtual FilterResult on_request(Exchange&) { return FilterResult::pass(); }
  virtual void on_request_async(Exchange& exchange, FilterDone done) { done(on_request(exchange)); }
  // Response phase, after the upstream answered (whole bodies). May edit exchange.response (or
  // response_json_mutable()) and append a Verdict; returning reject() replaces the response.
  virtual FilterResult on_response(Exchange&) { return FilterResult::pass(); }
  // Streamed responses (server-sent events): called once per complete event, which the filter may
  // rewrite in place; never sees the whole stream at once.
  virtual void on_response_event(Exchange&, std::string& /*event*/) {}
  // Filter-specific series beyond FilterStats (the server writes FilterStats itself).
  virtual void write_metrics(MetricsWriter&, const std::vector<Header>& /*labels*/) const {}

 private:
  std::string name_;
  FilterStats stats_;
};

class RedisClient;  // gateway/redis_client.h: shared by filters that keep state across replicas

// What a filter's factory gets besides its own options: where the config came from (for errors
// that name the line), and the services the gateway shares.
struct FilterBuildContext {
  std::string config_file;
  std::string route_name;
  RedisClient* redis = nullptr;  // nullptr unless the config has a `redis:` section
  std::string config_dir;        // relative paths in options resolve against this
};

// A configuration error at a node: "FILE:LINE:COLUMN: MESSAGE" (1-based), as a core::Error with
// `hint` as what to do. Every factory reports bad options through this.
[[noreturn]] void throw_config_error(const FilterBuildContext& context, const YAML::Node& node, const std::string& message,
                                     const std::string& hint = {});
[[noreturn]] void throw_config_error(const std::string& config_file, const YAML::Node& node, const std::string& message,
                                     const std::string& hint = {});

}  // namespace aegis::gateway
