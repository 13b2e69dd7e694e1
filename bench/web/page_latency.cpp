// Times every REST call the dashboard's pages make against a running `aegis serve`, the way a browser
// makes them: logged in, over one keep-alive connection, one request after another. Prints per call
// its status, body size and p50/p95/max latency, and exits 1 when any answer took longer than the
// limit (200 ms: the "every page in under 200 ms") or was not a 2xx. A benchmark, run by
// bench/web/run.sh against a seeded store, not a test: its numbers depend on the machine.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <nlohmann/json.hpp>

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using nlohmann::json;

constexpr int kUsageError = 2;
constexpr double kLimitMs = 200.0;

[[noreturn]] void usage_error(const std::string& what) {
  std::cerr << "web_page_latency: " << what << "\n"
            << "usage: web_page_latency --url http://127.0.0.1:PORT --user NAME --password PASSWORD [--repeat 20]\n"
            << "  logs in to `aegis serve` and times each API call of each dashboard page REPEAT times\n";
  std::exit(kUsageError);
}

struct Options {
  std::string host, port;
  std::string user, password;
  int repeat = 20;
};

Options parse_arguments(int argc, char** argv) {
  Options options;
  std::string url;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::cout << "usage: web_page_latency --url http://127.0.0.1:PORT --user NAME --password PASSWORD [--repeat 20]\n";
      std::exit(0);
    }
    if (flag != "--url" && flag != "--user" && flag != "--password" && flag != "--repeat")
      usage_error("unknown argument '" + std::string(flag) + "'");
    if (i + 1 >= argc) usage_error(std::string(flag) + " needs a value");
    const std::string value = argv[++i];
    if (flag == "--url") url = value;
    else if (flag == "--user") options.user = value;
    else if (flag == "--password") options.password = value;
    else {
      int n = 0;
      const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
      if (value.empty() || ec != std::errc() || end != value.data() + value.size() || n < 1 || n > 100000)
        usage_error("--repeat '" + value + "' is not a whole number from 1 to 100000");
      options.repeat = n;
    }
  }
  if (url.empty()) usage_error("--url http://HOST:PORT is required");
  if (options.user.empty() || options.password.empty()) usage_error("--user and --password are required");
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) usage_error("--url '" + url + "' must start with http:// (the benchmark speaks plain HTTP on loopback)");
  std::string authority = url.substr(kScheme.size());
  if (const auto slash = authority.find('/'); slash != std::string::npos) authority.resize(slash);
  std::size_t colon;
  if (!authority.empty() && authority.front() == '[') {  // [::1]:8080
    const auto close = authority.find(']');
    if (close == std::string::npos) usage_error("--url '" + url + "' has an unclosed [ in its host");
    options.host = authority.substr(1, close - 1);
    colon = authority.find(':', close);
  } else {
    colon = authority.rfind(':');
    options.host = authority.substr(0, colon);
  }
  options.port = colon == std::string::npos ? "80" : authority.substr(colon + 1);
  if (options.host.empty() || options.port.empty()) usage_error("--url '" + url + "' has no host or port");
  return options;
}

struct Response {
  unsigned status = 0;
  std::string body;
  std::string set_cookie;
};

// One keep-alive connection; reconnects once when the server has closed it in between.
class Client {
 public:
  Client(std::string host, std::string port) : host_(std::move(host)), port_(std::move(port)) {}

  std::string cookie;
  std::string csrf_token;

  Response request(http::verb verb, const std::string& target, const std::string& body = {}) {
    for (int attempt = 0;; ++attempt) {
      try {
        if (!connected_) connect();
        return exchange(verb, target, body);
      } catch (const std::exception&) {
        connected_ = false;
        beast::error_code ignored;
        stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
        stream_.close();
        if (attempt == 1) throw;
      }
    }
  }

 private:
  void connect() {
    tcp::resolver resolver(io_);
    stream_.expires_after(std::chrono::seconds(10));
    stream_.connect(resolver.resolve(host_, port_));
    stream_.socket().set_option(tcp::no_delay(true));
    connected_ = true;
  }

  Response exchange(http::verb verb, const std::string& target, const std::string& body) {
    http::request<http::string_body> request{verb, target, 11};
    request.set(http::field::host, host_ + ":" + port_);
    request.set(http::field::user_agent, "aegis-web-page-latency");
    request.set(http::field::accept, "application/json");
    request.keep_alive(true);
    if (!cookie.empty()) request.set(http::field::cookie, "aegis_session=" + cookie);
    if (verb != http::verb::get && verb != http::verb::head && !csrf_token.empty()) request.set("X-CSRF-Token", csrf_token);
    if (!body.empty()) {
      request.set(http::field::content_type, "application/json");
      request.body() = body;
    }
    request.prepare_payload();
    stream_.expires_after(std::chrono::seconds(60));
    http::write(stream_, request);
    http::response_parser<http::string_body> parser;
    parser.body_limit(512u << 20);
    http::read(stream_, buffer_, parser);
    auto& message = parser.get();
    Response response;
    response.status = message.result_int();
    response.body = std::move(message.body());
    if (auto it = message.find(http::field::set_cookie); it != message.end()) response.set_cookie = std::string(it->value());
    if (!message.keep_alive()) {
      connected_ = false;
      beast::error_code ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
      stream_.close();
    }
    return response;
  }

  std::string host_, port_;
  asio::io_context io_;
  beast::tcp_stream stream_{io_};
  beast::flat_buffer buffer_;
  bool connected_ = false;
};

// "aegis_session=VALUE; HttpOnly; ..." -> VALUE
std::string session_cookie(const std::string& set_cookie) {
  constexpr std::string_view kName = "aegis_session=";
  const auto at = set_cookie.find(kName);
  if (at == std::string::npos) return {};
  const auto start = at + kName.size();
  return set_cookie.substr(start, set_cookie.find(';', start) - start);
}

std::string url_encode(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const unsigned char c : text) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') out.push_back(static_cast<char>(c));
    else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

json get_json(Client& client, const std::string& target) {
  const auto response = client.request(http::verb::get, target);
  if (response.status / 100 != 2)
    throw std::runtime_error("GET " + target + " answered " + std::to_string(response.status) + ": " + response.body.substr(0, 300));
  return json::parse(response.body);
}

struct Call {
  std::string page;    // the dashboard page that makes it
  std::string target;  // path and query
};

struct Measured {
  Call call;
  std::vector<unsigned> statuses;
  std::size_t bytes = 0;
  std::vector<double> ms;
};

double percentile(std::vector<double> values, double p) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const auto rank = static_cast<std::size_t>(std::max(1.0, std::ceil(p * static_cast<double>(values.size()))));
  return values[std::min(rank, values.size()) - 1];
}

int run(const Options& options) {
  Client client(options.host, options.port);

  // Log in as the browser does.
  const json credentials = {{"username", options.user}, {"password", options.password}};
  const auto login = client.request(http::verb::post, "/api/v1/login", credentials.dump());
  if (login.status != 200) {
    std::cerr << "web_page_latency: login as '" << options.user << "' answered " << login.status << ": " << login.body.substr(0, 300)
              << "\n  add the user with `aegis users add " << options.user << " --role admin --store FILE` (password on stdin)\n";
    return 1;
  }
  client.cookie = session_cookie(login.set_cookie);
  const json login_body = json::parse(login.body, nullptr, false);
  if (client.cookie.empty() || !login_body.is_object() || !login_body.contains("csrf_token")) {
    std::cerr << "web_page_latency: the login answer has no aegis_session cookie or no csrf_token\n";
    return 1;
  }
  client.csrf_token = login_body["csrf_token"].get<std::string>();

  // The ids and values the pages' links would carry, taken from the store being served.
  const json first_finding = get_json(client, "/api/v1/findings?limit=1");
  const json all_findings = get_json(client, "/api/v1/findings?scope=all&limit=1");
  const json assessments = get_json(client, "/api/v1/assessments?limit=1");
  const json runs = get_json(client, "/api/v1/runs?limit=1");
  const std::size_t current_total = first_finding.value("total", std::size_t{0});
  const std::size_t all_total = all_findings.value("total", std::size_t{0});
  std::vector<Call> calls = {
      {"app", "/api/v1/me"},
      {"overview", "/api/v1/summary"},
      {"overview", "/api/v1/inventory"},
      {"assessments", "/api/v1/assessments?limit=50&offset=0"},
      {"runs", "/api/v1/runs?limit=50&offset=0"},
      {"runs", "/api/v1/runs?command=scan&limit=50&offset=0"},
      {"findings", "/api/v1/findings"},
      {"findings", "/api/v1/findings?severity=critical,high"},
      {"findings", "/api/v1/findings?severity=critical"},
      {"findings", "/api/v1/findings?status=open,acknowledged"},
      {"findings", "/api/v1/findings?status=accepted-risk"},
      {"findings", "/api/v1/findings?atlas=AML.T0011"},
      {"findings", "/api/v1/findings?atlas=AML.T0057"},
      {"findings", "/api/v1/findings?q=os.system"},
      {"findings", "/api/v1/findings?q=example.com"},
      {"findings", "/api/v1/findings?command=pii"},
      {"findings", "/api/v1/findings?sort=severity"},
      {"findings", "/api/v1/findings?sort=-severity"},
      {"findings", "/api/v1/findings?sort=id"},
      {"findings", "/api/v1/findings?sort=-id"},
      {"findings", "/api/v1/findings?sort=asset"},
      {"findings", "/api/v1/findings?sort=rule"},
      {"findings", "/api/v1/findings?limit=500"},
      {"findings", "/api/v1/findings?offset=" + std::to_string(current_total > 50 ? current_total - 50 : 0)},
      {"findings", "/api/v1/findings?scope=all"},
      {"findings", "/api/v1/findings?scope=all&sort=rule"},
      {"findings", "/api/v1/findings?scope=all&q=denied"},
      {"findings", "/api/v1/findings?scope=all&offset=" + std::to_string(all_total > 50 ? all_total - 50 : 0)},
      {"atlas", "/api/v1/atlas/coverage"},
      {"charts", "/api/v1/charts/robustness"},
      {"charts", "/api/v1/charts/privacy"},
      {"gateway", "/api/v1/gateway/metrics"},
      {"gateway", "/api/v1/gateway/alerts?limit=100"},
      {"audit", "/api/v1/audit?limit=100&offset=0"},
      {"users", "/api/v1/users"},
      {"api", "/api/v1/openapi.json"},
      {"static", "/"},
      {"static", "/index.html"},
  };
  if (const auto& items = first_finding["items"]; items.is_array() && !items.empty()) {
    const auto& f = items[0];
    const std::string asset = f.value("asset", "");
    calls.push_back({"findings", "/api/v1/findings?asset=" + url_encode(asset)});
    calls.push_back({"findings", "/api/v1/findings?asset=" + url_encode(asset) + "&severity=high,critical&status=open&sort=rule"});
    calls.push_back({"finding", "/api/v1/findings/" + std::to_string(f.value("id", std::int64_t{0}))});
    calls.push_back({"runs", "/api/v1/runs?asset=" + url_encode(asset) + "&limit=50&offset=0"});
  }
  if (const auto& items = assessments["items"]; items.is_array() && !items.empty()) {
    const auto id = std::to_string(items[0].value("id", std::int64_t{0}));
    calls.push_back({"assessment", "/api/v1/assessments/" + id});
    calls.push_back({"assessment", "/api/v1/runs?assessment=" + id + "&limit=50&offset=0"});
    calls.push_back({"assessment", "/api/v1/findings?assessment=" + id});
  }
  if (const auto& items = runs["items"]; items.is_array() && !items.empty()) {
    const auto id = std::to_string(items[0].value("id", std::int64_t{0}));
    calls.push_back({"run", "/api/v1/runs/" + id});
    calls.push_back({"run", "/api/v1/findings?run=" + id});
  }
  // The biggest run (the slowest run page): the first run of the page sorted newest first is not it.
  if (const json pii_runs = get_json(client, "/api/v1/runs?command=pii&limit=1"); pii_runs["items"].is_array() && !pii_runs["items"].empty()) {
    const auto id = std::to_string(pii_runs["items"][0].value("id", std::int64_t{0}));
    calls.push_back({"run", "/api/v1/runs/" + id});
    calls.push_back({"run", "/api/v1/findings?run=" + id + "&sort=rule"});
  }

  std::vector<Measured> measured;
  for (const auto& call : calls) measured.push_back({call, {}, 0, {}});
  // Round-robin, as a user clicking through pages does, rather than one call `repeat` times in a row.
  for (int r = 0; r < options.repeat; ++r) {
    for (auto& m : measured) {
      const auto start = std::chrono::steady_clock::now();
      const auto response = client.request(http::verb::get, m.call.target);
      const auto stop = std::chrono::steady_clock::now();
      m.ms.push_back(std::chrono::duration<double, std::milli>(stop - start).count());
      m.statuses.push_back(response.status);
      m.bytes = std::max(m.bytes, response.body.size());
    }
  }
  client.request(http::verb::post, "/api/v1/logout");

  std::printf("%-11s %-78s %6s %9s %8s %8s %8s\n", "page", "call", "status", "bytes", "p50 ms", "p95 ms", "max ms");
  const Measured* slowest = nullptr;
  bool failed = false;
  for (const auto& m : measured) {
    const double p50 = percentile(m.ms, 0.5), p95 = percentile(m.ms, 0.95), max = percentile(m.ms, 1.0);
    const auto bad = std::find_if(m.statuses.begin(), m.statuses.end(), [](unsigned s) { return s / 100 != 2; });
    const unsigned status = bad != m.statuses.end() ? *bad : m.statuses.front();
    std::string target = m.call.target;
    if (target.size() > 78) target = target.substr(0, 75) + "...";
    std::printf("%-11s %-78s %6u %9zu %8.1f %8.1f %8.1f%s\n", m.call.page.c_str(), target.c_str(), status, m.bytes, p50, p95, max,
                max > kLimitMs ? "  OVER LIMIT" : bad != m.statuses.end() ? "  NOT 2xx" : "");
    if (bad != m.statuses.end() || max > kLimitMs) failed = true;
    if (!slowest || max > percentile(slowest->ms, 1.0)) slowest = &m;
  }
  std::printf("%zu calls x %d, current-scope findings %zu, all findings %zu\n", measured.size(), options.repeat, current_total, all_total);
  std::printf("slowest page: %s (GET %s) max %.1f ms (limit %.0f ms)\n", slowest->call.page.c_str(), slowest->call.target.c_str(),
              percentile(slowest->ms, 1.0), kLimitMs);
  return failed ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse_arguments(argc, argv);
  try {
    return run(options);
  } catch (const std::exception& e) {
    std::cerr << "web_page_latency: " << e.what() << "\n  is `aegis serve` listening on " << options.host << ":" << options.port << "?\n";
    return 1;
  }
}
