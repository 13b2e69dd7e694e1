#include "aegis/models/http_classifier.h"

#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <sstream>
#include <thread>

#include "aegis/core/error.h"
#include "aegis/core/json_shape.h"
#include "aegis/core/text.h"

namespace aegis::models {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kBodyPreviewBytes = 200;
constexpr std::uint32_t kHeaderLimit = 64 * 1024;
constexpr std::uintmax_t kMaxConfigBytes = 1 << 20;
constexpr int kMaxYamlDepth = 64;
constexpr std::size_t kMaxYamlNodes = 100000;
constexpr std::size_t kMaxSampleSize = std::size_t{1} << 28;
constexpr int kMaxClasses = 1000000;

const char* const kConfigKeys =
    "url, method, headers, input_shape, num_classes, request_template, batch_size, scores_pointer, scores, "
    "label_pointer, timeout_ms, concurrency, retries, backoff_ms, max_backoff_ms, max_retry_after_ms, "
    "max_response_bytes, max_json_depth, max_json_values, insecure_skip_verify, ca_file";

// ---------------------------------------------------------------------------------------------
// Config

// Replaces ${NAME} with the environment variable's value; an unset variable is an error so that a
// missing token does not turn into an anonymous request.
std::string expand_environment(const std::string& text, const std::string& where) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size();) {
    if (text[i] != '$' || i + 1 >= text.size() || text[i + 1] != '{') {
      out += text[i++];
      continue;
    }
    const std::size_t close = text.find('}', i + 2);
    if (close == std::string::npos)
      throw core::Error(where + ": '${' without a closing '}'", "write environment references as ${NAME}");
    const std::string name = text.substr(i + 2, close - i - 2);
    const bool valid = !name.empty() && !std::isdigit(static_cast<unsigned char>(name[0])) &&
                       std::all_of(name.begin(), name.end(), [](char c) {
                         return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
                       });
    if (!valid)
      throw core::Error(where + ": '${" + core::printable(name, 64) + "}' is not an environment variable name",
                        "names are letters, digits and '_', not starting with a digit");
    const char* value = std::getenv(name.c_str());
    if (value == nullptr)
      throw core::Error("environment variable " + name + " (referenced by " + where + ") is not set",
                        "export " + name + " before running, or remove the reference from the endpoint config");
    out += value;
    i = close + 1;
  }
  return out;
}

std::string lowercase(std::string text) {
  for (char& c : text) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return text;
}

[[noreturn]] void config_error(const std::string& origin, const std::string& key, const std::string& problem) {
  throw core::Error(origin + ": '" + key + "' " + problem, std::string("the endpoint config keys are: ") + kConfigKeys);
}

std::string get_string(const json& value, const std::string& origin, const std::string& key) {
  if (!value.is_string()) config_error(origin, key, "must be a string");
  return value.get<std::string>();
}

std::int64_t get_integer(const json& value, const std::string& origin, const std::string& key, std::int64_t low,
                         std::int64_t high) {
  std::int64_t number = 0;
  if (value.is_number_unsigned()) {
    const auto u = value.get<std::uint64_t>();
    number = u > static_cast<std::uint64_t>(high) ? high + 1 : static_cast<std::int64_t>(u);
  } else if (value.is_number_integer()) {
    number = value.get<std::int64_t>();
  } else {
    config_error(origin, key, "must be an integer");
  }
  if (number < low || number > high)
    config_error(origin, key, "must be between " + std::to_string(low) + " and " + std::to_string(high));
  return number;
}

bool get_bool(const json& value, const std::string& origin, const std::string& key) {
  if (!value.is_boolean()) config_error(origin, key, "must be true or false");
  return value.get<bool>();
}

// yaml-cpp leaves scalars untyped: plain scalars that read as YAML 1.2 core-schema booleans, nulls,
// integers or decimals become those; quoted ones stay strings.
json yaml_to_json(const YAML::Node& node, int depth, std::size_t& nodes, const std::string& origin) {
  if (depth > kMaxYamlDepth || ++nodes > kMaxYamlNodes)
    throw core::Error(origin + ": the YAML document is too deeply nested or too large for an endpoint config");
  switch (node.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      return nullptr;
    case YAML::NodeType::Sequence: {
      json array = json::array();
      for (const auto& item : node) array.push_back(yaml_to_json(item, depth + 1, nodes, origin));
      return array;
    }
    case YAML::NodeType::Map: {
      json object = json::object();
      for (const auto& item : node)
        object[item.first.as<std::string>()] = yaml_to_json(item.second, depth + 1, nodes, origin);
      return object;
    }
    case YAML::NodeType::Scalar:
      break;
  }
  const std::string& text = node.Scalar();
  if (node.Tag() == "!") return text;  // quoted
  if (text == "true" || text == "True" || text == "TRUE") return true;
  if (text == "false" || text == "False" || text == "FALSE") return false;
  if (text.empty() || text == "~" || text == "null" || text == "Null" || text == "NULL") return nullptr;
  const char* begin = text.data();
  const char* end = text.data() + text.size();
  std::int64_t integer = 0;
  if (auto [ptr, ec] = std::from_chars(begin, end, integer); ec == std::errc() && ptr == end) return integer;
  const bool decimal_chars = text.find_first_not_of("0123456789.eE+-") == std::string::npos;
  double real = 0;
  if (decimal_chars) {
    if (auto [ptr, ec] = std::from_chars(begin, end, real); ec == std::errc() && ptr == end) return real;
  }
  return text;
}

// ---------------------------------------------------------------------------------------------
// URL

struct ParsedUrl {
  bool tls = false;
  std::string host;         // without brackets
  std::string port;
  std::string target;       // path and query
  std::string host_header;  // host[:port] as the Host header wants it
};

bool is_ip_address(const std::string& host) {
  beast::error_code ec;
  asio::ip::make_address(host, ec);
  return !ec;
}

ParsedUrl parse_url(const std::string& url, const std::string& shown) {
  const auto bad = [&](const std::string& problem) -> core::Error {
    return core::Error("endpoint url '" + core::printable(shown, 200) + "': " + problem,
                       "write it as http[s]://host[:port]/path, e.g. https://models.example.com/v1/predict");
  };
  const std::size_t scheme_end = url.find("://");
  if (scheme_end == std::string::npos) throw bad("no scheme");
  const std::string scheme = lowercase(url.substr(0, scheme_end));
  ParsedUrl parsed;
  if (scheme == "https") parsed.tls = true;
  else if (scheme != "http") throw bad("the scheme must be http or https");
  const std::string rest = url.substr(scheme_end + 3);
  const std::size_t authority_end = rest.find_first_of("/?#");
  const std::string authority = rest.substr(0, authority_end);
  std::string target = authority_end == std::string::npos ? "/" : rest.substr(authority_end);
  if (const auto hash = target.find('#'); hash != std::string::npos) target.erase(hash);
  if (target.empty() || target[0] != '/') target.insert(0, "/");
  for (unsigned char c : target)
    if (c <= 0x20 || c == 0x7F) throw bad("the path has spaces or control characters (percent-encode them)");
  if (authority.find('@') != std::string::npos)
    throw bad("credentials in the url are not supported (put them in a header that references an environment variable)");
  std::string host, port;
  if (!authority.empty() && authority[0] == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string::npos) throw bad("unterminated IPv6 address");
    host = authority.substr(1, close - 1);
    const std::string after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') throw bad("unexpected text after the IPv6 address");
      port = after.substr(1);
    }
  } else {
    const std::size_t colon = authority.rfind(':');
    host = authority.substr(0, colon);
    if (colon != std::string::npos) port = authority.substr(colon + 1);
  }
  if (host.empty()) throw bad("no host");
  for (unsigned char c : host)
    if (!(std::isalnum(c) || c == '.' || c == '-' || c == '_' || c == ':' || c == '%')) throw bad("invalid host name");
  const bool default_port = port.empty();
  if (default_port) {
    port = parsed.tls ? "443" : "80";
  } else {
    int number = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), number);
    if (ec != std::errc() || ptr != port.data() + port.size() || number < 1 || number > 65535)
      throw bad("invalid port '" + core::printable(port, 16) + "'");
  }
  parsed.host = host;
  parsed.port = port;
  parsed.target = target;
  const bool v6 = host.find(':') != std::string::npos;
  parsed.host_header = v6 ? "[" + host + "]" : host;
  if (!default_port) parsed.host_header += ":" + port;
  return parsed;
}

// The URL as it may appear in messages and reports: as written (environment references not
// expanded), without a query string that might carry a key.
std::string url_for_messages(const std::string& url) {
  std::string shown = url.substr(0, url.find_first_of("?#"));
  return core::printable(shown, 300);
}

bool is_header_token(const std::string& name) {
  if (name.empty()) return false;
  return std::all_of(name.begin(), name.end(), [](char ch) {
    const auto c = static_cast<unsigned char>(ch);
    return std::isalnum(c) || std::string_view("!#$%&'*+-.^_`|~").find(ch) != std::string_view::npos;
  });
}

// ---------------------------------------------------------------------------------------------
// Attempt failures (internal): what went wrong with one attempt, and whether another may help.

enum class FailureKind { Transport, Status, Response, Cancelled };

struct AttemptFailure : std::runtime_error {
  AttemptFailure(FailureKind kind, const std::string& message, bool retryable)
      : std::runtime_error(message), kind(kind), retryable(retryable) {}
  FailureKind kind;
  bool retryable;
  bool tls = false;        // a TLS protocol or certificate failure
  bool timed_out = false;  // the attempt ran out of timeout_ms
  unsigned status = 0;
  std::string reason;
  std::string body_preview;
  int retry_after_ms = -1;
};

AttemptFailure invalid_response(const std::string& problem) {
  return AttemptFailure(FailureKind::Response, problem, false);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// The endpoint as resolved at construction: where to connect and what every request carries.

namespace detail {

struct HttpTarget {
  std::string shown_url;
  ParsedUrl url;
  http::verb verb = http::verb::post;
  std::vector<std::pair<std::string, std::string>> headers;
  bool has_content_type = false, has_accept = false, has_user_agent = false;
  std::unique_ptr<ssl::context> tls_context;
  bool verify_peer = true;
};

// Writes request bodies (the template around the data) and reads scores out of responses.
struct RequestCodec {
  enum class Placeholder { Batch, Single, BatchShaped, SingleShaped };
  Placeholder placeholder = Placeholder::Batch;
  std::string prefix, suffix;  // the template's serialisation before and after the placeholder
  std::vector<std::int64_t> shape;
  std::size_t sample_size = 0;
  json::json_pointer scores_pointer;
  json::json_pointer label_pointer;
  bool labels = false;
  int max_depth = 32;
  std::uint64_t max_values = 0;

  bool single() const { return placeholder == Placeholder::Single || placeholder == Placeholder::SingleShaped; }
  bool shaped() const { return placeholder == Placeholder::BatchShaped || placeholder == Placeholder::SingleShaped; }

  static void append_number(std::string& out, float value) {
    char buffer[40];
    // The float's exact value as the shortest double that reads back to it: a server that parses
    // into double and casts to float32, or parses straight into float32, gets this very float.
    const auto result = std::to_chars(buffer, buffer + sizeof buffer, static_cast<double>(value));
    out.append(buffer, result.ptr);
  }

  void append_shaped(std::string& out, const float*& data, std::size_t dim) const {
    out += '[';
    for (std::int64_t i = 0; i < shape[dim]; ++i) {
      if (i) out += ',';
      if (dim + 1 == shape.size()) append_number(out, *data++);
      else append_shaped(out, data, dim + 1);
    }
    out += ']';
  }

  void append_sample(std::string& out, const float* data) const {
    if (shaped()) {
      append_shaped(out, data, 0);
      return;
    }
    out += '[';
    for (std::size_t i = 0; i < sample_size; ++i) {
      if (i) out += ',';
      append_number(out, data[i]);
    }
    out += ']';
  }

  std::string encode(std::span<const float> samples, std::size_t rows) const {
    for (std::size_t i = 0; i < rows * sample_size; ++i)
      if (!std::isfinite(samples[i]))
        throw core::Error("input sample has a NaN or infinite value at index " + std::to_string(i % sample_size) +
                              "; JSON cannot carry it to the endpoint",
                          "clip or sanitise the inputs before querying a remote model");
    std::string body;
    body.reserve(prefix.size() + suffix.size() + rows * sample_size * 8 + 16);
    body += prefix;
    if (single()) {
      append_sample(body, samples.data());
    } else {
      body += '[';
      for (std::size_t r = 0; r < rows; ++r) {
        if (r) body += ',';
        append_sample(body, samples.data() + r * sample_size);
      }
      body += ']';
    }
    body += suffix;
    return body;
  }

  static const json* find(const json& doc, const json::json_pointer& pointer) {
    try {
      if (!doc.contains(pointer)) return nullptr;
      return &doc.at(pointer);
    } catch (const json::exception&) {
      return nullptr;
    }
  }

  static std::string kind_of(const json& value) { return value.type_name(); }

  // One row of scores; `columns` is learnt from the first row when 0.
  static void read_row(const json& row, std::size_t index, std::size_t& columns, std::vector<float>& out) {
    if (!row.is_array())
      throw invalid_response("row " + std::to_string(index) + " of the scores is a " + kind_of(row) +
                             ", not a list of numbers");
    if (columns == 0) {
      if (row.size() < 2 || row.size() > static_cast<std::size_t>(kMaxClasses))
        throw invalid_response("the scores have " + std::to_string(row.size()) +
                               " columns; a classifier needs at least 2 classes");
      columns = row.size();
    }
    if (row.size() != columns)
      throw invalid_response("row " + std::to_string(index) + " of the scores has " + std::to_string(row.size()) +
                             " columns, expected " + std::to_string(columns) + " (one per class)");
    for (const auto& cell : row) {
      if (!cell.is_number())
        throw invalid_response("row " + std::to_string(index) + " of the scores holds a " + kind_of(cell) +
                               ", not a number");
      const float value = static_cast<float>(cell.get<double>());
      if (!std::isfinite(value))
        throw invalid_response("row " + std::to_string(index) + " of the scores holds a value that is not finite");
      out.push_back(value);
    }
  }

  static std::int64_t read_label(const json& value, std::size_t index, int classes) {
    std::int64_t label = -1;
    if (value.is_number_integer()) {
      label = value.is_number_unsigned() && value.get<std::uint64_t>() > static_cast<std::uint64_t>(kMaxClasses)
                  ? -1
                  : value.get<std::int64_t>();
    } else if (value.is_number_float() && std::isfinite(value.get<double>()) &&
               value.get<double>() == std::floor(value.get<double>()) && std::fabs(value.get<double>()) < 1e9) {
      label = static_cast<std::int64_t>(value.get<double>());
    } else {
      throw invalid_response("label " + std::to_string(index) + " is a " + kind_of(value) + ", not a class index");
    }
    if (label < 0 || label >= classes)
      throw invalid_response("label " + std::to_string(index) + " is " + value.dump() + ", outside 0.." +
                             std::to_string(classes - 1));
    return label;
  }

  // Scores for `rows` samples, rows x classes; `classes` is learnt from the response when 0.
  std::vector<float> decode(const std::string& body, std::size_t rows, int& classes) const {
    const core::JsonShape measured = core::measure_json(body, max_depth);
    if (measured.depth > max_depth)
      throw invalid_response("the response is nested deeper than max_json_depth (" + std::to_string(max_depth) + ")");
    if (measured.values > max_values)
      throw invalid_response("the response holds more than max_json_values (" + std::to_string(max_values) +
                             ") values");
    const json doc = json::parse(body, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) throw invalid_response("the response is not valid JSON");

    std::vector<float> scores;
    if (labels) {
      const json* found = find(doc, label_pointer);
      if (found == nullptr)
        throw invalid_response("the response has nothing at label_pointer '" + label_pointer.to_string() + "'");
      std::vector<std::int64_t> picked;
      if (single()) {
        const json& value = found->is_array() && found->size() == 1 ? (*found)[0] : *found;
        picked.push_back(read_label(value, 0, classes));
      } else {
        if (!found->is_array() || found->size() != rows)
          throw invalid_response("label_pointer '" + label_pointer.to_string() + "' should hold a list of " +
                                 std::to_string(rows) + " labels (one per sample sent), found " +
                                 (found->is_array() ? "a list of " + std::to_string(found->size()) : kind_of(*found)));
        for (std::size_t r = 0; r < rows; ++r) picked.push_back(read_label((*found)[r], r, classes));
      }
      scores.assign(rows * static_cast<std::size_t>(classes), 0.0f);
      for (std::size_t r = 0; r < rows; ++r)
        scores[r * static_cast<std::size_t>(classes) + static_cast<std::size_t>(picked[r])] = 1.0f;
      return scores;
    }

    const json* found = find(doc, scores_pointer);
    if (found == nullptr)
      throw invalid_response("the response has nothing at scores_pointer '" + scores_pointer.to_string() + "'");
    std::size_t columns = static_cast<std::size_t>(classes);
    scores.reserve(rows * std::max<std::size_t>(columns, 2));
    if (single()) {
      // One row: [p0, p1, ...], or the same wrapped in a one-row batch.
      const bool wrapped = found->is_array() && found->size() == 1 && (*found)[0].is_array();
      read_row(wrapped ? (*found)[0] : *found, 0, columns, scores);
    } else {
      if (!found->is_array() || found->size() != rows)
        throw invalid_response("scores_pointer '" + scores_pointer.to_string() + "' should hold a list of " +
                               std::to_string(rows) + " rows (one per sample sent), found " +
                               (found->is_array() ? "a list of " + std::to_string(found->size()) : kind_of(*found)));
      for (std::size_t r = 0; r < rows; ++r) read_row((*found)[r], r, columns, scores);
    }
    classes = static_cast<int>(columns);
    return scores;
  }
};

// One keep-alive connection, driven synchronously by its own io_context so that every step has
// a deadline (Beast's tcp_stream timeouts apply to asynchronous operations only).
class HttpConnection {
 public:
  explicit HttpConnection(const HttpTarget& target) : target_(target) {}
  ~HttpConnection() { close(); }

  struct Response {
    unsigned status = 0;
    std::string reason;
    std::string body;
    std::string retry_after;
  };

  // Sends one request and reads its response within `timeout`. A reused connection that the
  // server closed meanwhile is reopened once, transparently.
  Response exchange(const std::string& body, std::chrono::milliseconds timeout, std::uint64_t body_limit,
                    std::atomic<std::uint64_t>& connections) {
    const auto deadline = Clock::now() + timeout;
    http::request<http::string_body> request{target_.verb, target_.url.target, 11};
    request.set(http::field::host, target_.url.host_header);
    if (!target_.has_user_agent) request.set(http::field::user_agent, "aegis");
    if (!target_.has_content_type) request.set(http::field::content_type, "application/json");
    if (!target_.has_accept) request.set(http::field::accept, "application/json");
    for (const auto& [name, value] : target_.headers) request.set(name, value);
    request.keep_alive(true);
    request.body() = body;
    request.prepare_payload();

    for (int attempt = 0;; ++attempt) {
      const bool reused = is_open();
      if (!reused) {
        connect(deadline);
        ++connections;
      }
      lowest().expires_at(deadline);
      beast::error_code ec = secure_ ? run([&](auto handler) { http::async_write(*secure_, request, handler); })
                                     : run([&](auto handler) { http::async_write(*plain_, request, handler); });
      if (ec) {
        close();
        if (reused && attempt == 0 && is_stale(ec)) continue;
        throw transport_failure("sending the request failed", ec);
      }
      http::response_parser<http::string_body> parser;
      parser.body_limit(body_limit);
      parser.header_limit(kHeaderLimit);
      // The header first, then the limit checked here: Boost 1.74's eager parser (what async_read
      // uses) loses the body_limit error when the header and some body arrive in one read, and then
      // reads a body of any announced length.
      ec = secure_ ? run([&](auto handler) { http::async_read_header(*secure_, buffer_, parser, handler); })
                   : run([&](auto handler) { http::async_read_header(*plain_, buffer_, parser, handler); });
      if (!ec && parser.content_length() && *parser.content_length() > body_limit) ec = http::error::body_limit;
      if (!ec && !parser.is_done())
        ec = secure_ ? run([&](auto handler) { http::async_read(*secure_, buffer_, parser, handler); })
                     : run([&](auto handler) { http::async_read(*plain_, buffer_, parser, handler); });
      if (!ec && parser.get().body().size() > body_limit) ec = http::error::body_limit;
      if (ec) {
        const bool got_some = parser.got_some();
        close();
        if (reused && attempt == 0 && !got_some && is_stale(ec)) continue;
        if (ec == http::error::body_limit)
          throw AttemptFailure(FailureKind::Transport,
                               "the response body is larger than max_response_bytes (" + std::to_string(body_limit) +
                                   " bytes); refused",
                               false);
        if (ec == http::error::header_limit)
          throw AttemptFailure(FailureKind::Transport, "the response headers are larger than 64 KiB; refused", false);
        throw transport_failure("reading the response failed", ec);
      }
      auto response = parser.release();
      Response out;
      out.status = response.result_int();
      out.reason = std::string(response.reason());
      out.retry_after = std::string(response[http::field::retry_after]);
      const bool keep_alive = response.keep_alive();
      out.body = std::move(response.body());
      if (!keep_alive) close();
      return out;
    }
  }

 private:
  beast::tcp_stream& lowest() { return secure_ ? beast::get_lowest_layer(*secure_) : *plain_; }

  bool is_open() const {
    if (secure_) return beast::get_lowest_layer(*secure_).socket().is_open();
    return plain_ && plain_->socket().is_open();
  }

  void close() {
    beast::error_code ignored;
    if (secure_) beast::get_lowest_layer(*secure_).socket().close(ignored);
    if (plain_) plain_->socket().close(ignored);
    secure_.reset();
    plain_.reset();
    buffer_.consume(buffer_.size());
  }

  // Runs one asynchronous operation to completion on this connection's io_context.
  template <class Start>
  beast::error_code run(Start&& start) {
    beast::error_code result = asio::error::would_block;
    std::forward<Start>(start)([&result](const beast::error_code& ec, auto&&...) { result = ec; });
    ioc_.restart();
    ioc_.run();
    return result;
  }

  static bool is_stale(const beast::error_code& ec) {
    return ec == http::error::end_of_stream || ec == asio::error::eof || ec == asio::error::connection_reset ||
           ec == asio::error::broken_pipe || ec == asio::error::connection_aborted ||
           ec == ssl::error::stream_truncated;
  }

  AttemptFailure transport_failure(const std::string& what, const beast::error_code& ec) const {
    const bool timed_out = ec == beast::error::timeout || ec == asio::error::timed_out;
    std::string message = what + ": " + (timed_out ? std::string("timed out") : ec.message());
    // TLS protocol and certificate errors do not heal by trying again.
    const bool tls_error = ec.category() == asio::error::get_ssl_category();
    AttemptFailure failure(FailureKind::Transport, message, timed_out || !tls_error);
    failure.tls = tls_error;
    failure.timed_out = timed_out;
    return failure;
  }

  void connect(Clock::time_point deadline) {
    const ParsedUrl& url = target_.url;
    // Name resolution has no stream to carry a deadline: a timer cancels it.
    tcp::resolver resolver(ioc_);
    asio::steady_timer timer(ioc_);
    timer.expires_at(deadline);
    tcp::resolver::results_type endpoints;
    beast::error_code resolve_ec = asio::error::would_block;
    bool timed_out = false;
    resolver.async_resolve(url.host, url.port,
                           [&](const beast::error_code& ec, tcp::resolver::results_type results) {
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
    ioc_.restart();
    ioc_.run();
    if (timed_out) {
      AttemptFailure failure(FailureKind::Transport, "resolving " + url.host + " timed out", true);
      failure.timed_out = true;
      throw failure;
    }
    if (resolve_ec)
      throw AttemptFailure(FailureKind::Transport, "could not resolve " + url.host + ": " + resolve_ec.message(), true);

    if (target_.url.tls) secure_ = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ioc_, *target_.tls_context);
    else plain_ = std::make_unique<beast::tcp_stream>(ioc_);
    lowest().expires_at(deadline);
    beast::error_code ec = run([&](auto handler) { lowest().async_connect(endpoints, handler); });
    if (ec) {
      close();
      throw transport_failure("could not connect to " + url.host_header, ec);
    }
    lowest().socket().set_option(tcp::no_delay(true), ec);
    if (!secure_) return;

    SSL* native = secure_->native_handle();
    if (!is_ip_address(url.host) && SSL_set_tlsext_host_name(native, url.host.c_str()) != 1) {
      close();
      throw AttemptFailure(FailureKind::Transport, "could not set the TLS server name " + url.host, false);
    }
    if (target_.verify_peer) {
      secure_->set_verify_mode(ssl::verify_peer);
      secure_->set_verify_callback(ssl::host_name_verification(url.host));
    } else {
      secure_->set_verify_mode(ssl::verify_none);
    }
    ec = run([&](auto handler) { secure_->async_handshake(ssl::stream_base::client, handler); });
    if (ec) {
      std::string detail;
      const long verify = SSL_get_verify_result(native);
      if (target_.verify_peer && verify != X509_V_OK)
        detail = std::string(" (certificate: ") + X509_verify_cert_error_string(verify) + ")";
      close();
      const AttemptFailure failure = transport_failure("TLS handshake with " + url.host_header + " failed", ec);
      AttemptFailure with_detail(failure.kind, failure.what() + detail, failure.retryable);
      with_detail.tls = failure.tls;
      with_detail.timed_out = failure.timed_out;
      throw with_detail;
    }
  }

  const HttpTarget& target_;
  asio::io_context ioc_{1};
  std::unique_ptr<beast::tcp_stream> plain_;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> secure_;
  beast::flat_buffer buffer_;
};

}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Config loading

HttpEndpointConfig http_config_from_url(const std::string& url, std::vector<std::int64_t> input_shape) {
  HttpEndpointConfig config;
  config.url = url;
  config.input_shape = std::move(input_shape);
  return config;
}

HttpEndpointConfig http_config_from_json(const json& doc, const std::string& origin, const std::string& base_dir) {
  if (!doc.is_object())
    throw core::Error(origin + ": an endpoint config must be an object (key: value pairs)",
                      std::string("the keys are: ") + kConfigKeys);
  HttpEndpointConfig config;
  bool has_url = false;
  for (const auto& [key, value] : doc.items()) {
    if (key == "url") {
      config.url = get_string(value, origin, key);
      has_url = true;
    } else if (key == "method") {
      config.method = get_string(value, origin, key);
    } else if (key == "headers") {
      if (!value.is_object()) config_error(origin, key, "must be a map of header names to values");
      for (const auto& [name, header] : value.items()) config.headers[name] = get_string(header, origin, key + "." + name);
    } else if (key == "input_shape") {
      if (!value.is_array() || value.empty()) config_error(origin, key, "must be a non-empty list of dimensions");
      config.input_shape.clear();
      for (const auto& dim : value) config.input_shape.push_back(get_integer(dim, origin, key, 1, 1 << 24));
    } else if (key == "num_classes") {
      config.num_classes = static_cast<int>(get_integer(value, origin, key, 0, kMaxClasses));
    } else if (key == "request_template") {
      config.request_template = value;
    } else if (key == "batch_size") {
      config.batch_size = static_cast<std::size_t>(get_integer(value, origin, key, 1, 1 << 20));
    } else if (key == "scores_pointer") {
      config.scores_pointer = get_string(value, origin, key);
    } else if (key == "scores") {
      const std::string kind = lowercase(get_string(value, origin, key));
      if (kind == "probabilities") config.scores = ScoreKind::Probabilities;
      else if (kind == "logits") config.scores = ScoreKind::Logits;
      else config_error(origin, key, "must be \"probabilities\" or \"logits\"");
    } else if (key == "label_pointer") {
      config.label_pointer = get_string(value, origin, key);
    } else if (key == "timeout_ms") {
      config.timeout_ms = static_cast<int>(get_integer(value, origin, key, 1, 3600000));
    } else if (key == "concurrency") {
      config.concurrency = static_cast<std::size_t>(get_integer(value, origin, key, 1, 256));
    } else if (key == "retries") {
      config.retries = static_cast<int>(get_integer(value, origin, key, 0, 100));
    } else if (key == "backoff_ms") {
      config.backoff_ms = static_cast<int>(get_integer(value, origin, key, 0, 600000));
    } else if (key == "max_backoff_ms") {
      config.max_backoff_ms = static_cast<int>(get_integer(value, origin, key, 0, 3600000));
    } else if (key == "max_retry_after_ms") {
      config.max_retry_after_ms = static_cast<int>(get_integer(value, origin, key, 0, 3600000));
    } else if (key == "max_response_bytes") {
      config.max_response_bytes = static_cast<std::size_t>(get_integer(value, origin, key, 1024, std::int64_t{1} << 34));
    } else if (key == "max_json_depth") {
      config.max_json_depth = static_cast<int>(get_integer(value, origin, key, 2, 1000));
    } else if (key == "max_json_values") {
      config.max_json_values = static_cast<std::uint64_t>(get_integer(value, origin, key, 16, std::int64_t{1} << 34));
    } else if (key == "insecure_skip_verify") {
      config.insecure_skip_verify = get_bool(value, origin, key);
    } else if (key == "ca_file") {
      config.ca_file = get_string(value, origin, key);
      if (!base_dir.empty() && !config.ca_file.empty() && std::filesystem::path(config.ca_file).is_relative())
        config.ca_file = (std::filesystem::path(base_dir) / config.ca_file).string();
    } else {
      config_error(origin, key, "is not an endpoint config key");
    }
  }
  if (!has_url) config_error(origin, "url", "is missing");
  if (config.input_shape.empty()) config_error(origin, "input_shape", "is missing (e.g. [1, 28, 28])");
  return config;
}

HttpEndpointConfig load_http_config(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw core::Error("cannot read endpoint config " + path + ": " + ec.message(), "check the path");
  if (size > kMaxConfigBytes) throw core::Error("endpoint config " + path + " is larger than 1 MiB; refused");
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  if (!in) throw core::Error("cannot read endpoint config " + path, "check the path and its permissions");
  const std::string base_dir = std::filesystem::path(path).parent_path().string();
  const std::string extension = lowercase(std::filesystem::path(path).extension().string());
  if (extension == ".yaml" || extension == ".yml") {
    json doc;
    try {
      const YAML::Node root = YAML::Load(text.str());
      std::size_t nodes = 0;
      doc = yaml_to_json(root, 0, nodes, path);
    } catch (const YAML::Exception& e) {
      throw core::Error("endpoint config " + path + " is not valid YAML: " + e.what(), "fix the YAML syntax");
    }
    return http_config_from_json(doc, path, base_dir);
  }
  const std::string content = text.str();
  if (core::measure_json(content, kMaxYamlDepth).depth > kMaxYamlDepth)
    throw core::Error("endpoint config " + path + " is nested too deeply");
  const json doc = json::parse(content, nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded())
    throw core::Error("endpoint config " + path + " is not valid JSON",
                      "fix the syntax, or name the file .yaml / .yml to write it in YAML");
  return http_config_from_json(doc, path, base_dir);
}

// ---------------------------------------------------------------------------------------------
// The classifier

namespace {

// Finds the single placeholder string in the template and swaps it for a sentinel.
int replace_placeholder(json& node, const std::string& sentinel, detail::RequestCodec::Placeholder& kind) {
  using Placeholder = detail::RequestCodec::Placeholder;
  if (node.is_string()) {
    const auto& text = node.get_ref<const std::string&>();
    Placeholder found;
    if (text == "$inputs") found = Placeholder::Batch;
    else if (text == "$input") found = Placeholder::Single;
    else if (text == "$inputs_shaped") found = Placeholder::BatchShaped;
    else if (text == "$input_shaped") found = Placeholder::SingleShaped;
    else return 0;
    kind = found;
    node = sentinel;
    return 1;
  }
  int count = 0;
  if (node.is_array() || node.is_object())
    for (auto& child : node) count += replace_placeholder(child, sentinel, kind);
  return count;
}

json::json_pointer parse_pointer(const std::string& text, const std::string& key) {
  try {
    return json::json_pointer(text);
  } catch (const json::exception&) {
    throw core::Error("endpoint config: " + key + " '" + core::printable(text, 100) + "' is not a JSON pointer",
                      "write it as in RFC 6901, e.g. \"/probabilities\" or \"/outputs/0/scores\"");
  }
}

}  // namespace

HttpClassifier::HttpClassifier(HttpEndpointConfig config)
    : config_(std::move(config)),
      target_(std::make_unique<detail::HttpTarget>()),
      codec_(std::make_unique<detail::RequestCodec>()) {
  const HttpEndpointConfig& c = config_;
  const std::string hint = std::string("the endpoint config keys are: ") + kConfigKeys;
  if (c.url.empty()) throw core::Error("endpoint config: no url", hint);
  target_->shown_url = url_for_messages(c.url);
  target_->url = parse_url(expand_environment(c.url, "the endpoint url"), target_->shown_url);

  if (c.input_shape.empty()) throw core::Error("endpoint config: input_shape is required (e.g. [1, 28, 28])", hint);
  std::size_t sample_size = 1;
  for (auto dim : c.input_shape) {
    if (dim < 1) throw core::Error("endpoint config: input_shape dimensions must be positive", hint);
    sample_size *= static_cast<std::size_t>(dim);
    if (sample_size > kMaxSampleSize) throw core::Error("endpoint config: input_shape is too large", hint);
  }
  if (c.num_classes < 0 || c.num_classes == 1 || c.num_classes > kMaxClasses)
    throw core::Error("endpoint config: num_classes must be 0 (ask the endpoint) or at least 2", hint);
  if (c.batch_size < 1) throw core::Error("endpoint config: batch_size must be at least 1", hint);
  if (c.concurrency < 1 || c.concurrency > 256) throw core::Error("endpoint config: concurrency must be 1..256", hint);
  if (c.retries < 0 || c.timeout_ms < 1 || c.backoff_ms < 0 || c.max_backoff_ms < 0 || c.max_retry_after_ms < 0)
    throw core::Error("endpoint config: retries, timeouts and backoffs must not be negative", hint);
  if (c.max_response_bytes < 1 || c.max_json_depth < 2)
    throw core::Error("endpoint config: max_response_bytes and max_json_depth are too small", hint);

  const std::string method = c.method.empty() ? "POST" : c.method;
  target_->verb = http::string_to_verb(method);
  if (target_->verb == http::verb::unknown)
    throw core::Error("endpoint config: unknown HTTP method '" + core::printable(method, 20) + "'", "use POST or PUT");
  for (const auto& [name, raw] : c.headers) {
    if (!is_header_token(name))
      throw core::Error("endpoint config: '" + core::printable(name, 60) + "' is not a valid header name", hint);
    const std::string value = expand_environment(raw, "header " + name);
    // Never echo the value: it is usually a secret.
    if (value.find_first_of(std::string("\r\n\0", 3)) != std::string::npos)
      throw core::Error("endpoint config: the value of header " + name + " contains a line break or NUL",
                        "check the header and the environment variable it references");
    const std::string lower = lowercase(name);
    if (lower == "host" || lower == "content-length" || lower == "transfer-encoding" || lower == "connection")
      throw core::Error("endpoint config: header " + name + " is set by Aegis itself", "remove it from headers");
    if (lower == "content-type") target_->has_content_type = true;
    if (lower == "accept") target_->has_accept = true;
    if (lower == "user-agent") target_->has_user_agent = true;
    target_->headers.emplace_back(name, value);
  }

  if (target_->url.tls) {
    target_->verify_peer = !c.insecure_skip_verify;
    target_->tls_context = std::make_unique<ssl::context>(ssl::context::tls_client);
    auto& context = *target_->tls_context;
    SSL_CTX_set_min_proto_version(context.native_handle(), TLS1_2_VERSION);
    beast::error_code ec;
    context.set_default_verify_paths(ec);
    if (ec)
      throw core::Error("cannot load the system CA store: " + ec.message(),
                        "install ca-certificates, or set ca_file in the endpoint config");
    if (!c.ca_file.empty()) {
      context.load_verify_file(c.ca_file, ec);
      if (ec)
        throw core::Error("cannot load ca_file " + c.ca_file + ": " + ec.message(), "ca_file must be a PEM CA bundle");
    }
  }

  // Request body: the template serialised once around a sentinel that stands for the data.
  auto& codec = *codec_;
  json request = c.request_template;
  const std::string sentinel = "\x01" "aegis-data-placeholder" "\x01";
  const int placeholders = replace_placeholder(request, sentinel, codec.placeholder);
  if (placeholders != 1)
    throw core::Error("endpoint config: request_template must hold exactly one of \"$inputs\", \"$input\", "
                      "\"$inputs_shaped\", \"$input_shaped\" (found " + std::to_string(placeholders) + ")",
                      "e.g. {\"inputs\": \"$inputs\"} sends {\"inputs\": [[x0, x1, ...], ...]}");
  const std::string serialised = request.dump();
  const std::string token = json(sentinel).dump();
  const std::size_t at = serialised.find(token);
  if (at == std::string::npos || serialised.find(token, at + 1) != std::string::npos)
    throw core::Error("endpoint config: request_template: a key may not be a placeholder", hint);
  codec.prefix = serialised.substr(0, at);
  codec.suffix = serialised.substr(at + token.size());
  codec.shape = c.input_shape;
  codec.sample_size = sample_size;
  codec.max_depth = c.max_json_depth;
  codec.max_values = c.max_json_values;
  if (codec.single()) config_.batch_size = 1;

  decision_only_ = !c.label_pointer.empty();
  codec.labels = decision_only_;
  if (decision_only_) {
    codec.label_pointer = parse_pointer(c.label_pointer, "label_pointer");
    if (c.num_classes < 2)
      throw core::Error("endpoint config: num_classes is required with label_pointer (labels alone do not tell how "
                        "many classes there are)",
                        "set num_classes");
  } else {
    codec.scores_pointer = parse_pointer(c.scores_pointer, "scores_pointer");
  }

  info_.input_shape = c.input_shape;
  info_.num_classes = c.num_classes;
  // A decision-only endpoint yields one-hot rows: probabilities, though only their argmax means anything.
  info_.scores = decision_only_ ? ScoreKind::Probabilities : c.scores;
  info_.has_gradients = false;
  info_.backend = "http";
  info_.source = target_->shown_url;

  if (info_.num_classes == 0) {
    // Learn the number of classes from the answer to one zero sample.
    auto connection = checkout();
    const std::vector<float> zeros(sample_size, 0.0f);
    int classes = 0;
    query(*connection, zeros, 1, std::random_device{}(), nullptr, classes);
    info_.num_classes = classes;
    checkin(std::move(connection));
  }
}

HttpClassifier::~HttpClassifier() = default;

std::size_t HttpClassifier::preferred_batch() const { return config_.batch_size * config_.concurrency; }

HttpStats HttpClassifier::stats() const {
  return HttpStats{requests_.load(), retries_.load(), failures_.load(), connections_.load()};
}

std::unique_ptr<detail::HttpConnection> HttpClassifier::checkout() {
  {
    std::lock_guard lock(pool_mutex_);
    if (!idle_.empty()) {
      auto connection = std::move(idle_.back());
      idle_.pop_back();
      return connection;
    }
  }
  return std::make_unique<detail::HttpConnection>(*target_);
}

void HttpClassifier::checkin(std::unique_ptr<detail::HttpConnection> connection) {
  std::lock_guard lock(pool_mutex_);
  if (idle_.size() < config_.concurrency) idle_.push_back(std::move(connection));
}

std::vector<float> HttpClassifier::query(detail::HttpConnection& connection, std::span<const float> samples,
                                         std::size_t rows, std::uint32_t jitter_seed, const std::atomic<bool>* stop,
                                         int& classes) {
  const std::string body = codec_->encode(samples, rows);
  std::minstd_rand jitter(jitter_seed == 0 ? 1 : jitter_seed);
  const int attempts = config_.retries + 1;
  std::optional<AttemptFailure> last;
  int made = 0;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    if (attempt > 0) {
      // Exponential backoff with jitter (half fixed, half random), or the endpoint's Retry-After.
      const double exponential = std::min<double>(config_.max_backoff_ms,
                                                  static_cast<double>(config_.backoff_ms) * std::pow(2.0, attempt - 1));
      double delay_ms = exponential * std::uniform_real_distribution<double>(0.5, 1.0)(jitter);
      if (last->retry_after_ms >= 0)
        delay_ms = std::max(delay_ms, static_cast<double>(std::min(last->retry_after_ms, config_.max_retry_after_ms)));
      const auto until = Clock::now() + std::chrono::microseconds(static_cast<std::int64_t>(delay_ms * 1000));
      while (Clock::now() < until) {
        if (stop && stop->load()) throw AttemptFailure(FailureKind::Cancelled, "cancelled", false);
        std::this_thread::sleep_for(std::min<Clock::duration>(until - Clock::now(), std::chrono::milliseconds(20)));
      }
      ++retries_;
    }
    if (stop && stop->load()) throw AttemptFailure(FailureKind::Cancelled, "cancelled", false);
    ++requests_;
    ++made;
    std::optional<AttemptFailure> failure;
    try {
      auto response = connection.exchange(body, std::chrono::milliseconds(config_.timeout_ms),
                                          config_.max_response_bytes, connections_);
      const unsigned status = response.status;
      if (status >= 200 && status < 300) {
        try {
          int learnt = classes;
          auto scores = codec_->decode(response.body, rows, learnt);
          classes = learnt;
          return scores;
        } catch (AttemptFailure& invalid) {
          failure = std::move(invalid);
        }
      } else {
        const bool retryable = status == 408 || status == 429 || (status >= 500 && status < 600);
        failure.emplace(FailureKind::Status, "HTTP " + std::to_string(status), retryable);
        int seconds = -1;
        const std::string& after = response.retry_after;
        if (auto [ptr, ec] = std::from_chars(after.data(), after.data() + after.size(), seconds);
            ec == std::errc() && ptr == after.data() + after.size() && seconds >= 0)
          failure->retry_after_ms = std::min(seconds, 3600) * 1000;
      }
      failure->status = status;
      failure->reason = core::printable(response.reason, 60);
      failure->body_preview = core::printable(response.body, kBodyPreviewBytes);
    } catch (AttemptFailure& broken) {
      failure = std::move(broken);
    }
    ++failures_;
    last = std::move(failure);
    if (!last->retryable) break;
  }

  const std::string url = target_->shown_url;
  const std::string after = made == 1 ? "" : " (after " + std::to_string(made) + " attempts)";
  const std::string status_text =
      "HTTP " + std::to_string(last->status) + (last->reason.empty() ? "" : " " + last->reason);
  switch (last->kind) {
    case FailureKind::Status: {
      const unsigned status = last->status;
      std::string hint;
      if (status == 401 || status == 403)
        hint = "the endpoint refused the credentials: check the Authorization (or API key) header in the endpoint "
               "config, and that the environment variable it references (e.g. ${AEGIS_ENDPOINT_TOKEN}) is set and "
               "current";
      else if (status == 404 || status == 405)
        hint = "check the url's path and the method against the endpoint's API";
      else if (status == 429)
        hint = "the endpoint is rate limiting: lower concurrency, or raise retries and backoff_ms";
      else if (status >= 500)
        hint = "the endpoint failed: check its logs; if it is overloaded lower concurrency or batch_size, or raise "
               "retries and timeout_ms";
      else
        hint = "the endpoint rejected the request: check the request_template, input_shape and headers against its "
               "API, and the endpoint's logs";
      throw core::Error("the endpoint " + url + " answered " + status_text + after + "; body: " + last->body_preview,
                        hint);
    }
    case FailureKind::Response:
      throw core::Error("the endpoint " + url + " answered " + status_text + " but " + last->what() +
                            "; body: " + last->body_preview,
                        "check that the request_template and scores_pointer (or label_pointer) match the endpoint's "
                        "API (send one request by hand and compare), and check the endpoint's logs");
    case FailureKind::Transport:
    case FailureKind::Cancelled:
      break;
  }
  if (last->tls)
    throw core::Error("the endpoint " + url + " could not be queried: " + last->what() + " (no HTTP status)",
                      "the server's certificate must verify against the system CA store (and ca_file) for the url's "
                      "host: set ca_file to the CA that signed it; insecure_skip_verify: true is for test endpoints "
                      "only");
  if (!last->retryable)
    throw core::Error("the endpoint " + url + " could not be queried: " + last->what() + " (no HTTP status)",
                      "check the endpoint's logs; raise max_response_bytes only for an endpoint you trust");
  if (last->timed_out)
    throw core::Error("the endpoint " + url + " could not be queried" + after + ": " + last->what() +
                          " (no HTTP status)",
                      "the endpoint did not answer within timeout_ms (" + std::to_string(config_.timeout_ms) +
                          " ms): raise timeout_ms or lower batch_size, and check the endpoint's logs");
  throw core::Error("the endpoint " + url + " could not be queried" + after + ": " + last->what() +
                        " (no HTTP status)",
                    "check that the endpoint is running and that the url (scheme, host, port) is right; timeout_ms is " +
                        std::to_string(config_.timeout_ms) + ", retries " + std::to_string(config_.retries));
}

void HttpClassifier::do_predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) {
  if (n == 0) return;
  const std::size_t d = info_.sample_size();
  const std::size_t k = static_cast<std::size_t>(info_.num_classes);
  const std::size_t batch = config_.batch_size;
  const std::size_t chunks = (n + batch - 1) / batch;
  const std::size_t workers = std::min(chunks, config_.concurrency);

  std::atomic<std::size_t> next{0};
  std::atomic<bool> stop{false};
  std::mutex error_mutex;
  std::exception_ptr first_error;
  std::random_device seeds;
  std::vector<std::uint32_t> worker_seeds(workers);
  for (auto& seed : worker_seeds) seed = seeds();

  auto work = [&](std::size_t worker) {
    std::unique_ptr<detail::HttpConnection> connection;
    try {
      connection = checkout();
      for (std::size_t chunk; !stop.load() && (chunk = next.fetch_add(1)) < chunks;) {
        const std::size_t begin = chunk * batch;
        const std::size_t rows = std::min(batch, n - begin);
        int classes = info_.num_classes;
        const auto result = query(*connection, inputs.subspan(begin * d, rows * d), rows,
                                  worker_seeds[worker] + static_cast<std::uint32_t>(chunk), &stop, classes);
        std::copy(result.begin(), result.end(), scores.begin() + static_cast<std::ptrdiff_t>(begin * k));
      }
    } catch (const AttemptFailure&) {
      // Cancelled because another worker failed first; that worker's error is the one reported.
    } catch (...) {
      std::lock_guard lock(error_mutex);
      if (!first_error) first_error = std::current_exception();
      stop = true;
    }
    if (connection) checkin(std::move(connection));
  };

  {
    std::vector<std::jthread> threads;
    threads.reserve(workers - 1);
    for (std::size_t w = 1; w < workers; ++w) threads.emplace_back(work, w);
    work(0);
  }
  if (first_error) std::rethrow_exception(first_error);
}

}  // namespace aegis::models
