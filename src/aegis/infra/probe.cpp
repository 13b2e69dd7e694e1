// Live probes of ML services: parses the targets a user names, recognises what answers on each port
// and runs that service's read-only probe rules. Every exchange is one HTTP/1.1 request on a fresh
// connection (Connection: close) under one deadline, with bounded headers and body. Only GET, HEAD
// and OPTIONS are ever sent; redirects are reported as they are, never followed. The answering side
// may be hostile: it can stall, drip, lie about lengths, send garbage or nest JSON without end.
#include <openssl/ssl.h>
#include <re2/re2.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cctype>
#include <chrono>
#include <cmath>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <thread>

#include "aegis/core/error.h"
#include "aegis/core/text.h"
#include "aegis/infra/infra.h"

namespace aegis::infra {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using json = nlohmann::json;

constexpr std::uint32_t kHeaderLimit = 64 * 1024;
constexpr int kMaxJsonDepth = 64;
constexpr std::size_t kEvidenceBytes = 240;
constexpr std::size_t kMaxVersionLength = 64;
// A port that failed this many exchanges in a row (after connecting) is given up: a hostile or
// broken server must not cost a timeout per fingerprint of every service.
constexpr int kMaxFailuresInARow = 2;

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

constexpr const char* kTargetHint =
    "name one host per target, for example 127.0.0.1:8888, localhost (every known service port), "
    "[::1]:8000, http://127.0.0.1:8265 or https://gpu-box:8443";

[[noreturn]] void refuse_target(const std::string& text, const std::string& why) {
  throw core::Error("target '" + core::printable(text, 200) + "': " + why, kTargetHint);
}

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool all_of_chars(std::string_view text, std::string_view allowed_punct) {
  return std::all_of(text.begin(), text.end(), [&](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || allowed_punct.find(c) != std::string_view::npos;
  });
}

bool digits_only(std::string_view text) {
  return !text.empty() &&
         std::all_of(text.begin(), text.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}

bool is_loopback(const asio::ip::address& address) {
  if (address.is_v4()) return address.to_v4().is_loopback();
  const auto v6 = address.to_v6();
  if (v6.is_loopback()) return true;
  if (v6.is_v4_mapped()) return asio::ip::make_address_v4(asio::ip::v4_mapped, v6).is_loopback();
  return false;
}

// "host:port" as it goes into a report and a Host header; IPv6 in brackets.
std::string host_port(const std::string& host, int port) {
  const bool v6 = host.find(':') != std::string::npos;
  return (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

// ---------------------------------------------------------------------------------------------
// Rule checks done before anything is sent (a hand-built RuleSet has not been through the loader)
// ---------------------------------------------------------------------------------------------

class RegexCache {
 public:
  const RE2& get(const std::string& pattern) {
    auto it = cache_.find(pattern);
    if (it == cache_.end()) {
      RE2::Options options;
      options.set_log_errors(false);
      it = cache_.emplace(pattern, std::make_unique<RE2>(pattern, options)).first;
    }
    return *it->second;
  }

 private:
  std::map<std::string, std::unique_ptr<RE2>> cache_;
};

const std::set<std::string> kSafeMethods = {"GET", "HEAD", "OPTIONS"};
const std::set<std::string> kJsonTypes = {"object", "array", "string", "number", "boolean", "any"};

void check_request(const ProbeRequest& request, const std::string& owner, bool path_required) {
  const auto bad = [&](const std::string& why) {
    throw core::Error("infra rule " + owner + ": " + why, "fix the rule; probes send only GET, HEAD or OPTIONS to a path");
  };
  if (!kSafeMethods.count(request.method))
    bad("method '" + core::printable(request.method, 40) + "' is refused: probes send only GET, HEAD and OPTIONS");
  if (request.path.empty()) {
    if (path_required) bad("no request path");
    return;
  }
  if (request.path.front() != '/') bad("path '" + core::printable(request.path, 80) + "' must start with '/'");
  for (char c : request.path)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) bad("path has a space or control character");
  for (const auto& [name, value] : request.headers) {
    if (name.empty() || !all_of_chars(name, "!#$%&'*+-.^_`|~")) bad("header name '" + core::printable(name, 60) + "' is not a token");
    if (value.find_first_of(std::string("\r\n\0", 3)) != std::string::npos) bad("header '" + name + "' has a line break");
  }
}

void check_match(const ResponseMatch& match, const std::string& owner, RegexCache& regexes) {
  const auto check_regex = [&](const std::string& pattern, const std::string& what) {
    if (pattern.empty()) return;
    const RE2& re = regexes.get(pattern);
    if (!re.ok())
      throw core::Error("infra rule " + owner + ": " + what + " is not a valid RE2 regex (" + re.error() + ")",
                        "fix the rule's regex");
  };
  for (const auto& [name, pattern] : match.headers) check_regex(pattern, "header regex for " + name);
  check_regex(match.body, "body regex");
  for (const auto& [pointer, type] : match.json)
    if (!kJsonTypes.count(type))
      throw core::Error("infra rule " + owner + ": JSON type '" + type + "' for " + pointer + " is not one of object, array, string, number, boolean, any",
                        "fix the rule");
}

void check_rules(const RuleSet& rules, RegexCache& regexes) {
  for (const auto& spec : rules.services) {
    for (std::size_t i = 0; i < spec.fingerprints.size(); ++i) {
      const auto& fp = spec.fingerprints[i];
      const std::string owner = spec.service + " fingerprint " + std::to_string(i + 1);
      check_request(fp.request, owner, true);
      check_match(fp.expect, owner, regexes);
      if (!fp.version_regex.empty() && !regexes.get(fp.version_regex).ok())
        throw core::Error("infra rule " + owner + ": the version regex is not a valid RE2 regex", "fix the rule's regex");
    }
    for (const auto& probe : spec.probes) {
      check_request(probe.request, probe.info.id, false);
      check_match(probe.expect, probe.info.id, regexes);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// One HTTP exchange
// ---------------------------------------------------------------------------------------------

struct Answer {
  bool connected = false;  // TCP (and TLS) connection made
  bool answered = false;   // a status line and headers were read
  std::string error;       // why there is no complete answer
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased, in order
  std::string body;
  bool cut = false;  // the body is not the whole answer
  std::string cut_reason;
  // The body as JSON, parsed on first use (discarded when it is not JSON).
  mutable std::optional<json> parsed;

  const json& document() const {
    if (!parsed) {
      parsed = json::parse(
          body, [](int depth, json::parse_event_t, json&) { return depth <= kMaxJsonDepth; }, false);
    }
    return *parsed;
  }
  std::string header(std::string_view name) const {
    for (const auto& [key, value] : headers)
      if (key == name) return value;
    return {};
  }
};

// All requests of a run share one schedule: `rate` requests per second at most.
class Pacer {
 public:
  explicit Pacer(double per_second)
      : interval_(std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(1.0 / per_second))) {}
  void wait() {
    Clock::time_point slot;
    {
      std::lock_guard lock(mutex_);
      const auto now = Clock::now();
      slot = std::max(now, next_);
      next_ = slot + interval_;
    }
    std::this_thread::sleep_until(slot);
  }

 private:
  std::mutex mutex_;
  Clock::duration interval_;
  Clock::time_point next_{};
};

struct Endpoint {
  std::string host;                  // as the user named it
  std::vector<tcp::endpoint> peers;  // resolved, all loopback unless allowed otherwise
  int port = 0;
  bool tls = false;
  std::string label;  // "127.0.0.1:8888" or "https://host:8443"
};

class HttpClient {
 public:
  explicit HttpClient(const ProbeOptions& options) : options_(options), tls_(ssl::context::tls_client) {
    // We fingerprint; we do not trust. A self-signed certificate must not hide an exposed service.
    tls_.set_verify_mode(ssl::verify_none);
  }

  Answer exchange(const Endpoint& endpoint, const ProbeRequest& request) {
    Answer answer;
    asio::io_context ioc;
    const auto deadline = Clock::now() + options_.timeout;
    std::unique_ptr<beast::tcp_stream> plain;
    std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> secure;
    if (endpoint.tls)
      secure = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ioc, tls_);
    else
      plain = std::make_unique<beast::tcp_stream>(ioc);
    beast::tcp_stream& lowest = secure ? beast::get_lowest_layer(*secure) : *plain;

    lowest.expires_at(deadline);
    auto ec = run(ioc, [&](auto handler) { lowest.async_connect(endpoint.peers, handler); });
    if (ec) {
      answer.error = failure("could not connect", ec);
      return answer;
    }
    if (secure) {
      // SNI carries names only (RFC 6066); an address is left out.
      beast::error_code address_ec;
      (void)asio::ip::make_address(endpoint.host, address_ec);
      if (address_ec) SSL_set_tlsext_host_name(secure->native_handle(), endpoint.host.c_str());
      lowest.expires_at(deadline);
      ec = run(ioc, [&](auto handler) { secure->async_handshake(ssl::stream_base::client, handler); });
      if (ec) {
        answer.error = failure("TLS handshake failed", ec);
        close(lowest);
        return answer;
      }
    }
    answer.connected = true;

    http::request<http::empty_body> message{http::string_to_verb(request.method), request.path, 11};
    message.set(http::field::host, host_port(endpoint.host, endpoint.port));
    message.set(http::field::user_agent, std::string("aegis-audit-infra/") + AEGIS_VERSION);
    message.set(http::field::accept, "*/*");
    for (const auto& [name, value] : request.headers) message.set(name, value);
    message.set(http::field::connection, "close");

    lowest.expires_at(deadline);
    ec = secure ? run(ioc, [&](auto h) { http::async_write(*secure, message, h); })
                : run(ioc, [&](auto h) { http::async_write(*plain, message, h); });
    if (ec) {
      answer.error = failure("could not send the request", ec);
      close(lowest);
      return answer;
    }

    beast::flat_buffer buffer(kHeaderLimit + 64 * 1024);
    http::response_parser<http::buffer_body> parser;
    parser.header_limit(kHeaderLimit);
    // We stop reading at max_body_bytes ourselves and keep what came. Not boost::none: Boost 1.74
    // compares a Content-Length against the optional and reads "none" as smaller than any length.
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    if (request.method == "HEAD") parser.skip(true);
    ec = secure ? run(ioc, [&](auto h) { http::async_read_header(*secure, buffer, parser, h); })
                : run(ioc, [&](auto h) { http::async_read_header(*plain, buffer, parser, h); });
    if (ec) {
      answer.error = failure("no readable HTTP answer", ec);
      close(lowest);
      return answer;
    }
    answer.answered = true;
    answer.status = static_cast<int>(parser.get().result_int());
    for (const auto& field : parser.get())
      answer.headers.emplace_back(lower(std::string(field.name_string())), std::string(field.value()));

    char chunk[16 * 1024];
    while (!parser.is_done()) {
      parser.get().body().data = chunk;
      parser.get().body().size = sizeof chunk;
      ec = secure ? run(ioc, [&](auto h) { http::async_read(*secure, buffer, parser, h); })
                  : run(ioc, [&](auto h) { http::async_read(*plain, buffer, parser, h); });
      if (ec == http::error::need_buffer) ec = {};
      const std::size_t got = sizeof chunk - parser.get().body().size;
      const std::uint64_t room = options_.max_body_bytes - std::min<std::uint64_t>(options_.max_body_bytes, answer.body.size());
      answer.body.append(chunk, static_cast<std::size_t>(std::min<std::uint64_t>(got, room)));
      if (got > room || (answer.body.size() >= options_.max_body_bytes && !parser.is_done())) {
        answer.cut = true;
        answer.cut_reason = "cut at " + std::to_string(options_.max_body_bytes) + " bytes";
        break;
      }
      if (ec) {
        answer.cut = true;
        answer.cut_reason = "unfinished: " + failure("", ec).substr(2);
        break;
      }
    }
    close(lowest);
    return answer;
  }

 private:
  template <class Start>
  static beast::error_code run(asio::io_context& ioc, Start&& start) {
    beast::error_code result = asio::error::would_block;
    std::forward<Start>(start)([&result](const beast::error_code& ec, auto&&...) { result = ec; });
    ioc.restart();
    ioc.run();
    return result;
  }

  static void close(beast::tcp_stream& stream) {
    beast::error_code ignored;
    stream.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream.socket().close(ignored);
  }

  std::string failure(const std::string& what, const beast::error_code& ec) const {
    std::string why;
    if (ec == beast::error::timeout || ec == asio::error::timed_out || ec == asio::error::operation_aborted)
      why = "no answer within " + std::to_string(options_.timeout.count()) + " ms";
    else if (ec == http::error::header_limit)
      why = "the header is larger than 64 KiB";
    else if (ec == asio::error::connection_refused)
      why = "connection refused";
    else
      why = ec.message();
    return what + ": " + why;
  }

  const ProbeOptions& options_;
  ssl::context tls_;
};

// ---------------------------------------------------------------------------------------------
// Matching answers against rules
// ---------------------------------------------------------------------------------------------

bool json_type_is(const json& value, const std::string& type) {
  if (type == "any") return true;
  if (type == "object") return value.is_object();
  if (type == "array") return value.is_array();
  if (type == "string") return value.is_string();
  if (type == "number") return value.is_number();
  if (type == "boolean") return value.is_boolean();
  return false;
}

// The value at `pointer`, or nullptr: a bad pointer, a missing key or a non-JSON body all read as
// "not there", never as an exception.
const json* json_at(const Answer& answer, const std::string& pointer) {
  const json& doc = answer.document();
  if (doc.is_discarded()) return nullptr;
  try {
    const json::json_pointer where(pointer);
    if (!doc.contains(where)) return nullptr;
    return &doc.at(where);
  } catch (const json::exception&) {
    return nullptr;
  }
}

bool matches(const ResponseMatch& expect, const Answer& answer, RegexCache& regexes) {
  if (!answer.answered) return false;
  if (expect.status.empty()) {
    if (answer.status < 200 || answer.status > 299) return false;
  } else if (std::find(expect.status.begin(), expect.status.end(), answer.status) == expect.status.end()) {
    return false;
  }
  for (const auto& [name, pattern] : expect.headers) {
    const std::string wanted = lower(name);
    bool found = false;
    for (const auto& [key, value] : answer.headers)
      if (key == wanted && RE2::PartialMatch(value, regexes.get(pattern))) found = true;
    if (!found) return false;
  }
  if (!expect.body.empty() && !RE2::PartialMatch(answer.body, regexes.get(expect.body))) return false;
  for (const auto& [pointer, type] : expect.json) {
    const json* value = json_at(answer, pointer);
    if (!value || !json_type_is(*value, type)) return false;
  }
  return true;
}

// What a version may look like once it leaves a hostile server: short, printable, no spaces.
std::string clean_version(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  if (text.empty() || text.size() > kMaxVersionLength || !all_of_chars(text, ".-+_~")) return {};
  return std::string(text);
}

std::string extract_version(const Fingerprint& fp, const Answer& answer, RegexCache& regexes) {
  const auto group_one = [&](const std::string& text) -> std::string {
    std::string group;
    if (!RE2::PartialMatch(text, regexes.get(fp.version_regex), &group)) return {};
    return group;
  };
  if (!fp.version_pointer.empty()) {
    const json* value = json_at(answer, fp.version_pointer);
    if (!value) return {};
    if (value->is_string()) {
      const auto& text = value->get_ref<const std::string&>();
      return clean_version(fp.version_regex.empty() ? text : group_one(text));
    }
    if (value->is_number()) return clean_version(value->dump());
    return {};
  }
  if (!fp.version_header.empty()) {
    const std::string value = answer.header(lower(fp.version_header));
    return clean_version(fp.version_regex.empty() ? value : group_one(value));
  }
  if (!fp.version_regex.empty()) return clean_version(group_one(answer.body));
  return {};
}

bool has_version_source(const Fingerprint& fp) {
  return !fp.version_pointer.empty() || !fp.version_header.empty() || !fp.version_regex.empty();
}

std::string describe(const ProbeRequest& request) { return request.method + " " + request.path; }

// The start of a body with every run of white space (pretty-printed JSON's line breaks and
// indentation) written as one space, so that an excerpt shows content, not layout.
std::string squeeze(std::string_view text, std::size_t max_bytes) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (out.size() >= max_bytes) break;
    if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  if (out.size() >= max_bytes) out += "...";
  return out;
}

// What a JSON value is, in a few words ("an array of 3 items", "the string \"1.2\"").
std::string json_shape(const json& value) {
  if (value.is_array()) return "an array of " + std::to_string(value.size()) + " item(s)";
  if (value.is_object()) return "an object of " + std::to_string(value.size()) + " key(s)";
  return core::printable(value.dump(-1, ' ', false, json::error_handler_t::replace), 80);
}

// The part of an answer that shows why a rule held: what its body regex matched, or the shape of
// the value at its first JSON pointer followed by the start of the body as sent (nlohmann's objects
// are sorted, so the body itself keeps the server's order), or the start of the body. Bounded and
// printable.
std::string telling_part(const ResponseMatch& expect, const Answer& answer, RegexCache& regexes) {
  if (!expect.body.empty()) {
    const RE2& re = regexes.get(expect.body);
    re2::StringPiece hit;
    if (re.Match(answer.body, 0, answer.body.size(), RE2::UNANCHORED, &hit, 1) && !hit.empty())
      return core::printable(std::string_view(hit.data(), hit.size()), kEvidenceBytes);
  }
  std::string part;
  if (!expect.json.empty()) {
    const auto& [pointer, type] = *expect.json.begin();
    if (const json* value = json_at(answer, pointer))
      part = (pointer.empty() ? std::string("the answer") : pointer) + " is " + json_shape(*value) + ": ";
  }
  return part + core::printable(squeeze(answer.body, kEvidenceBytes * 2), kEvidenceBytes);
}

std::string answer_summary(const ProbeRequest& request, const ResponseMatch& expect, const Answer& answer,
                           RegexCache& regexes) {
  std::string text = describe(request) + " -> HTTP " + std::to_string(answer.status);
  const std::string type = answer.header("content-type");
  if (!type.empty()) text += " (" + core::printable(type, 60) + ")";
  const std::string part = telling_part(expect, answer, regexes);
  if (!part.empty()) text += ": " + part;
  if (answer.cut) text += " [answer " + answer.cut_reason + "]";
  return text;
}

// ---------------------------------------------------------------------------------------------
// One port of one target
// ---------------------------------------------------------------------------------------------

struct Run {
  const ProbeOptions& options;
  Pacer pacer;
  HttpClient client;
  RegexCache regexes;
  ProbeReport report;
};

class PortProbe {
 public:
  PortProbe(Run& run, const Endpoint& endpoint) : run_(run), endpoint_(endpoint) {
    observation_.target = endpoint.label;
  }

  // The answer to `request`, asked once per port; nullptr when it could not be had.
  const Answer* fetch(const ProbeRequest& request) {
    std::string key = request.method + " " + request.path;
    for (const auto& [name, value] : request.headers) key += "\n" + lower(name) + ": " + value;
    if (const auto it = cache_.find(key); it != cache_.end()) return it->second.answered ? &it->second : nullptr;
    if (given_up_) return nullptr;

    run_.pacer.wait();
    if (run_.options.progress)
      run_.options.progress(request.method + " " + (endpoint_.tls ? "" : "http://") + endpoint_.label + request.path);
    ++run_.report.requests;
    ++observation_.requests;
    Answer answer = run_.client.exchange(endpoint_, request);
    if (answer.connected) observation_.reachable = true;
    if (!answer.answered) {
      if (observation_.error.empty()) observation_.error = answer.error;
      // Nothing listening (or a filtered port): no point asking again.
      if (!answer.connected || ++failures_in_a_row_ >= kMaxFailuresInARow) given_up_ = true;
    } else {
      failures_in_a_row_ = 0;
      answered_any_ = true;
    }
    const auto& stored = cache_.emplace(std::move(key), std::move(answer)).first->second;
    return stored.answered ? &stored : nullptr;
  }

  void probe(const RuleSet& rules) {
    const ServiceSpec* spec = nullptr;
    const Fingerprint* matched_fp = nullptr;
    const Answer* matched_answer = nullptr;
    for (const ServiceSpec* candidate : service_order(rules)) {
      for (const auto& fp : candidate->fingerprints) {
        const Answer* answer = fetch(fp.request);
        if (given_up_ && !answer) break;
        if (answer && matches(fp.expect, *answer, run_.regexes)) {
          spec = candidate;
          matched_fp = &fp;
          matched_answer = answer;
          break;
        }
      }
      if (spec || given_up_) break;
    }
    // An error is kept only when the port never gave an HTTP answer.
    if (answered_any_) observation_.error.clear();
    if (!spec) {
      run_.report.observations.push_back(observation_);
      return;
    }

    // The version: from the fingerprint that recognised the service, or from the first later
    // fingerprint of the same service that answers with one.
    std::string version = extract_version(*matched_fp, *matched_answer, run_.regexes);
    const Fingerprint* version_fp = matched_fp;
    const auto first_later = static_cast<std::size_t>(matched_fp - spec->fingerprints.data()) + 1;
    for (std::size_t i = first_later; version.empty() && i < spec->fingerprints.size(); ++i) {
      const Fingerprint& fp = spec->fingerprints[i];
      if (!has_version_source(fp)) continue;
      const Answer* answer = fetch(fp.request);
      if (answer && matches(fp.expect, *answer, run_.regexes)) {
        version = extract_version(fp, *answer, run_.regexes);
        if (!version.empty()) version_fp = &fp;
      }
    }
    observation_.service = spec->service;
    observation_.name = spec->name;
    observation_.version = version;

    run_.report.findings.push_back(detected_finding(*spec, *matched_fp, *matched_answer, version));
    for (const auto& rule : spec->probes) evaluate(*spec, rule, version, *version_fp);
    run_.report.observations.push_back(observation_);
  }

 private:
  // Services whose default ports include this one are asked first; then the rest, in file order.
  std::vector<const ServiceSpec*> service_order(const RuleSet& rules) const {
    std::vector<const ServiceSpec*> order;
    for (const auto& spec : rules.services)
      if (std::find(spec.default_ports.begin(), spec.default_ports.end(), endpoint_.port) != spec.default_ports.end())
        order.push_back(&spec);
    for (const auto& spec : rules.services)
      if (std::find(order.begin(), order.end(), &spec) == order.end()) order.push_back(&spec);
    return order;
  }

  core::Finding detected_finding(const ServiceSpec& spec, const Fingerprint& fp, const Answer& answer,
                                 const std::string& version) {
    RuleInfo info;
    info.id = "infra." + spec.service + ".detected";
    info.service = spec.service;
    info.severity = core::Severity::Info;
    info.title = spec.name + (version.empty() ? "" : " " + version) + " answers on " + endpoint_.label;
    info.atlas = {"AML.T0007"};  // Discover AI Artifacts
    info.nist_ai_rmf = {"GOVERN 1.6"};
    info.remediation = "Record this " + spec.name +
                       " instance in the AI asset inventory with its owner and version, keep it patched, and let "
                       "only the clients that need it reach it (bind it to 127.0.0.1 or firewall the port).";
    info.source_file = spec.probes.empty() ? std::string() : spec.probes.front().info.source_file;
    core::Finding finding = make_finding(info, "recognised by " + answer_summary(fp.request, fp.expect, answer, run_.regexes));
    finding.location.file = endpoint_.label;
    finding.location.column = fp.request.path;
    return finding;
  }

  void evaluate(const ServiceSpec& spec, const ProbeRule& rule, const std::string& version, const Fingerprint& version_fp) {
    std::string version_note;
    if (!rule.version_below.empty()) {
      if (version.empty()) return;
      const auto order = compare_versions(version, rule.version_below);
      if (!order || *order >= 0) return;
      version_note = spec.name + " reports version " + version + " (" + describe(version_fp.request) +
                     "), below " + rule.version_below + " where this is fixed";
    }
    std::string evidence;
    std::string column;
    if (rule.request.path.empty()) {
      evidence = version_note;
      column = version_fp.request.path;
    } else {
      const Answer* answer = fetch(rule.request);
      if (!answer || !matches(rule.expect, *answer, run_.regexes)) return;
      evidence = answer_summary(rule.request, rule.expect, *answer, run_.regexes);
      if (!version_note.empty()) evidence += "; " + version_note;
      column = rule.request.path;
    }
    core::Finding finding = make_finding(rule.info, std::move(evidence));
    finding.location.file = endpoint_.label;
    finding.location.column = column;
    run_.report.findings.push_back(std::move(finding));
  }

  Run& run_;
  const Endpoint& endpoint_;
  ServiceObservation observation_;
  std::map<std::string, Answer> cache_;
  int failures_in_a_row_ = 0;
  bool given_up_ = false;
  bool answered_any_ = false;
};

// ---------------------------------------------------------------------------------------------
// Resolution and the loopback rule
// ---------------------------------------------------------------------------------------------

std::vector<asio::ip::address> resolve(const Target& target, std::chrono::milliseconds timeout) {
  beast::error_code literal_ec;
  const auto literal = asio::ip::make_address(target.host, literal_ec);
  if (!literal_ec) return {literal};

  asio::io_context ioc;
  tcp::resolver resolver(ioc);
  asio::steady_timer timer(ioc);
  timer.expires_after(std::max(timeout, std::chrono::milliseconds(1000)));
  beast::error_code resolve_ec = asio::error::would_block;
  tcp::resolver::results_type results;
  resolver.async_resolve(target.host, "0", [&](const beast::error_code& ec, tcp::resolver::results_type found) {
    resolve_ec = ec;
    results = std::move(found);
    timer.cancel();
  });
  timer.async_wait([&](const beast::error_code& ec) {
    if (!ec) resolver.cancel();
  });
  ioc.run();
  if (resolve_ec)
    throw core::Error("cannot resolve '" + target.host + "' (target '" + target.text + "'): " + resolve_ec.message(),
                      "check the name, or give the address, for example 127.0.0.1:8888");
  std::vector<asio::ip::address> addresses;
  for (const auto& entry : results) {
    const auto address = entry.endpoint().address();
    if (std::find(addresses.begin(), addresses.end(), address) == addresses.end()) addresses.push_back(address);
  }
  if (addresses.empty())
    throw core::Error("'" + target.host + "' (target '" + target.text + "') resolves to no address",
                      "check the name, or give the address, for example 127.0.0.1:8888");
  return addresses;
}

}  // namespace

Target parse_target(const std::string& text) {
  std::string_view rest = text;
  while (!rest.empty() && (rest.front() == ' ' || rest.front() == '\t')) rest.remove_prefix(1);
  while (!rest.empty() && (rest.back() == ' ' || rest.back() == '\t')) rest.remove_suffix(1);
  Target target;
  target.text = std::string(rest);
  if (rest.empty()) refuse_target(text, "no host given");
  for (char c : rest)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) refuse_target(text, "a target has no spaces or control characters");
  if (rest.find_first_of(",;") != std::string_view::npos)
    refuse_target(text, "one host per target: give each host as its own target");
  if (rest.find('*') != std::string_view::npos)
    refuse_target(text, "wildcards are refused: only explicitly named hosts are probed");

  bool url = false;
  if (const auto scheme_end = rest.find("://"); scheme_end != std::string_view::npos) {
    const std::string scheme = lower(rest.substr(0, scheme_end));
    if (scheme == "https")
      target.tls = true;
    else if (scheme != "http")
      refuse_target(text, "scheme '" + scheme + "' is not http or https");
    rest.remove_prefix(scheme_end + 3);
    url = true;
  }
  if (rest.find('@') != std::string_view::npos)
    refuse_target(text, "credentials in a target are refused: probes never log in");
  if (const auto slash = rest.find('/'); slash != std::string_view::npos) {
    const std::string_view after = rest.substr(slash + 1);
    if (url && after.empty()) {
      rest = rest.substr(0, slash);
    } else if (digits_only(after) && after.size() <= 3) {
      refuse_target(text, "address blocks (CIDR) are refused: only explicitly named hosts are probed");
    } else {
      refuse_target(text, "a target has no path: the probes choose their own paths");
    }
  }
  if (rest.find_first_of("?#") != std::string_view::npos) refuse_target(text, "a target has no query or fragment");

  std::string host;
  std::string_view port_text;
  bool has_port = false;
  bool bracketed = false;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) refuse_target(text, "unclosed '[' around an IPv6 address");
    host = std::string(rest.substr(1, close - 1));
    const std::string_view after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') refuse_target(text, "expected ':PORT' after ']'");
      port_text = after.substr(1);
      has_port = true;
    }
    bracketed = true;
    beast::error_code ec;
    (void)asio::ip::make_address_v6(host, ec);
    if (ec) refuse_target(text, "'" + host + "' is not an IPv6 address");
  } else {
    const auto colons = std::count(rest.begin(), rest.end(), ':');
    if (colons > 1) refuse_target(text, "write an IPv6 address in brackets, for example [::1]:8000");
    if (colons == 1) {
      const auto colon = rest.find(':');
      host = std::string(rest.substr(0, colon));
      port_text = rest.substr(colon + 1);
      has_port = true;
    } else {
      host = std::string(rest);
    }
  }
  if (host.empty()) refuse_target(text, "no host given");
  if (!bracketed) {
    if (host.find('-') != std::string::npos && all_of_chars(host, ".-") &&
        std::none_of(host.begin(), host.end(), [](char c) { return std::isalpha(static_cast<unsigned char>(c)); }))
      refuse_target(text, "address ranges are refused: only explicitly named hosts are probed");
    if (!all_of_chars(host, ".-_") || host.size() > 253 || host.front() == '.' || host.front() == '-' ||
        host.find("..") != std::string::npos)
      refuse_target(text, "'" + core::printable(host, 80) + "' is not a host name or address");
    if (all_of_chars(host, ".") &&
        std::none_of(host.begin(), host.end(), [](char c) { return std::isalpha(static_cast<unsigned char>(c)); })) {
      // Only digits and dots: it must be a whole dotted quad (inet_aton would read "10.1" or
      // "2130706433" as some other address).
      beast::error_code ec;
      (void)asio::ip::make_address_v4(host, ec);
      if (ec || std::count(host.begin(), host.end(), '.') != 3) refuse_target(text, "'" + host + "' is not a complete IPv4 address");
    }
  }
  {
    beast::error_code ec;
    const auto address = asio::ip::make_address(host, ec);
    if (!ec && address.is_unspecified())
      refuse_target(text, host + " means every address, not a host: name 127.0.0.1 or the machine's own address");
  }
  if (has_port) {
    if (port_text.empty()) refuse_target(text, "no port after ':'");
    if (!digits_only(port_text) || port_text.size() > 5)
      refuse_target(text, "port '" + core::printable(port_text, 20) + "' is not a number from 1 to 65535");
    const int port = std::stoi(std::string(port_text));
    if (port < 1 || port > 65535) refuse_target(text, "port " + std::to_string(port) + " is not a number from 1 to 65535");
    target.port = port;
  }
  target.host = host;
  return target;
}

ProbeReport probe_targets(const std::vector<Target>& targets, const RuleSet& rules, const ProbeOptions& options) {
  if (!std::isfinite(options.rate) || options.rate < 1.0 / 3600)
    throw core::Error("the probe rate must be a positive number of requests per second (at least one an hour)",
                      "give --rate 5, for example");
  if (options.timeout.count() <= 0) throw core::Error("the probe timeout must be positive", "give --timeout 3000 (milliseconds)");
  if (options.max_body_bytes == 0) throw core::Error("the answer size limit must be positive", "keep the default (1 MiB)");

  Run run{options, Pacer(options.rate), HttpClient(options), RegexCache{}, ProbeReport{}};
  check_rules(rules, run.regexes);

  std::vector<int> default_ports;
  for (const auto& spec : rules.services)
    for (int port : spec.default_ports)
      if (std::find(default_ports.begin(), default_ports.end(), port) == default_ports.end()) default_ports.push_back(port);

  // Every target is resolved and checked before the first request, so that a refused target stops
  // the run before anything was sent anywhere.
  std::vector<Endpoint> endpoints;
  for (const auto& target : targets) {
    if (target.host.empty()) throw core::Error("a target has no host", kTargetHint);
    const auto addresses = resolve(target, options.timeout);
    if (!options.allow_remote) {
      for (const auto& address : addresses)
        if (!is_loopback(address))
          throw core::Error("target '" + target.text + "' resolves to " + address.to_string() +
                                ", which is not a loopback address: aegis probes only this machine unless told otherwise",
                            "name it with --allow-remote if you are authorised to test it");
    }
    std::vector<int> ports = target.port ? std::vector<int>{target.port} : default_ports;
    if (ports.empty())
      throw core::Error("no known service ports to try on '" + target.text + "'", "give the port: HOST:PORT");
    for (int port : ports) {
      Endpoint endpoint;
      endpoint.host = target.host;
      endpoint.port = port;
      endpoint.tls = target.tls;
      endpoint.label = (target.tls ? "https://" : "") + host_port(target.host, port);
      for (const auto& address : addresses) endpoint.peers.emplace_back(address, static_cast<unsigned short>(port));
      endpoints.push_back(std::move(endpoint));
    }
  }

  for (const auto& endpoint : endpoints) PortProbe(run, endpoint).probe(rules);
  return std::move(run.report);
}

}  // namespace aegis::infra
