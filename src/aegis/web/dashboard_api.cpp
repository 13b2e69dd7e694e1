#include "aegis/web/dashboard_api.h"

#include <openssl/crypto.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <set>
#include <cctype>
#include <charconv>
#include <chrono>
#include <fstream>
#include <sstream>

#include "aegis/core/error.h"
#include "aegis/store/finding_store.h"
#include "aegis/threat/threat.h"

#ifndef AEGIS_WEB_DIST
#define AEGIS_WEB_DIST "web/dist"
#endif

namespace aegis::web {
namespace {

using json = nlohmann::json;

constexpr std::size_t kMaxJsonDepth = 32;
constexpr std::size_t kMaxAlertBytes = 64 * 1024;
constexpr std::size_t kMaxStaticBytes = 16 * 1024 * 1024;

// Applied to every response: the app loads nothing from elsewhere, runs no inline script and may
// not be framed; the browser must not guess types or leak the URL to other sites.
const std::vector<std::pair<std::string, std::string>>& security_headers() {
  static const std::vector<std::pair<std::string, std::string>> kHeaders = {
      {"content-security-policy",
       "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"},
      {"x-content-type-options", "nosniff"},
      {"x-frame-options", "DENY"},
      {"referrer-policy", "no-referrer"},
      {"cross-origin-opener-policy", "same-origin"},
      {"cross-origin-resource-policy", "same-origin"},
  };
  return kHeaders;
}

ApiResponse json_response(int status, const json& body) {
  ApiResponse response;
  response.status = status;
  response.body = body.dump(-1, ' ', false, json::error_handler_t::replace);
  return response;
}

ApiResponse error_response(int status, std::string_view code, std::string_view message) {
  return json_response(status, json{{"error", code}, {"message", message}});
}

ApiResponse no_content() {
  ApiResponse response;
  response.status = 204;
  response.content_type.clear();
  return response;
}

std::string header(const ApiRequest& request, const std::string& name) {
  const auto it = request.headers.find(name);
  return it == request.headers.end() ? std::string() : it->second;
}

// The value of one cookie in a Cookie header ("a=1; b=2").
std::string cookie_value(const std::string& cookies, std::string_view name) {
  std::size_t start = 0;
  while (start < cookies.size()) {
    std::size_t end = cookies.find(';', start);
    if (end == std::string::npos) end = cookies.size();
    std::string_view part(cookies.data() + start, end - start);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    if (part.size() > name.size() && part.substr(0, name.size()) == name && part[name.size()] == '=')
      return std::string(part.substr(name.size() + 1));
    start = end + 1;
  }
  return {};
}

bool equal_secrets(std::string_view a, std::string_view b) {
  return a.size() == b.size() && !a.empty() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// Strict, depth-limited JSON for request bodies: anything else is a 400 with the reason.
std::optional<json> parse_body(const std::string& body, std::string& why) {
  std::size_t depth = 0;
  bool too_deep = false;
  json::parser_callback_t limit = [&](int d, json::parse_event_t event, json&) {
    if (event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) {
      depth = static_cast<std::size_t>(d) + 1;
      if (depth > kMaxJsonDepth) too_deep = true;
    }
    return !too_deep;
  };
  json value = json::parse(body, limit, false);
  if (too_deep) {
    why = "the JSON body nests deeper than " + std::to_string(kMaxJsonDepth) + " levels";
    return std::nullopt;
  }
  if (value.is_discarded() || !value.is_object()) {
    why = "the body must be a JSON object";
    return std::nullopt;
  }
  return value;
}

std::optional<std::string> string_field(const json& body, const char* name) {
  const auto it = body.find(name);
  if (it == body.end() || !it->is_string()) return std::nullopt;
  return it->get<std::string>();
}

std::optional<std::int64_t> parse_id(std::string_view text) {
  std::int64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value <= 0) return std::nullopt;
  return value;
}

std::size_t parse_count(const std::map<std::string, std::string>& query, const std::string& name, std::size_t fallback,
                        std::size_t max) {
  const auto it = query.find(name);
  if (it == query.end() || it->second.empty()) return fallback;
  std::size_t value = 0;
  const auto [end, ec] = std::from_chars(it->second.data(), it->second.data() + it->second.size(), value);
  if (ec != std::errc() || end != it->second.data() + it->second.size())
    throw core::Error(name + " must be a whole number, not '" + it->second + "'");
  return std::min(value, max);
}

std::optional<std::string> optional_param(const std::map<std::string, std::string>& query, const std::string& name) {
  const auto it = query.find(name);
  if (it == query.end() || it->second.empty()) return std::nullopt;
  return it->second;
}

std::vector<std::string> split_list(const std::string& text) {
  std::vector<std::string> items;
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t end = text.find(',', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) items.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return items;
}

std::vector<std::string> split_path(const std::string& path) {
  std::vector<std::string> parts;
  std::size_t start = 1;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    parts.push_back(path.substr(start, end - start));
    start = end + 1;
  }
  if (!parts.empty() && parts.back().empty()) parts.pop_back();
  return parts;
}

std::string now_rfc3339() {
  const auto now = std::chrono::system_clock::now();
  const auto seconds = std::chrono::system_clock::to_time_t(now);
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&seconds, &tm);
  char buffer[96];
  std::snprintf(buffer, sizeof buffer, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(millis));
  return buffer;
}

std::string content_type_of(const std::filesystem::path& file) {
  const std::string ext = file.extension().string();
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".js" || ext == ".mjs") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".json" || ext == ".map") return "application/json";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".ico") return "image/x-icon";
  if (ext == ".woff2") return "font/woff2";
  if (ext == ".txt") return "text/plain; charset=utf-8";
  return "application/octet-stream";
}

// The results a check recorded: an `aegis assess` job wraps the command's report in "results".
const json* check_results(const json& summary) {
  if (!summary.is_object()) return nullptr;
  const auto it = summary.find("results");
  if (it != summary.end() && it->is_object()) return &*it;
  return &summary;
}

std::optional<double> number_at(const json& object, const char* name) {
  if (!object.is_object()) return std::nullopt;
  const auto it = object.find(name);
  if (it == object.end() || !it->is_number()) return std::nullopt;
  return it->get<double>();
}

std::string text_at(const json& object, const char* name) {
  if (!object.is_object()) return {};
  const auto it = object.find(name);
  return it != object.end() && it->is_string() ? it->get<std::string>() : std::string();
}

json latest_of(const DashboardStore& store, std::initializer_list<std::string_view> commands) {
  json all = json::array();
  for (const auto command : commands)
    for (auto& item : store.latest_summaries(command)) all.push_back(std::move(item));
  return all;
}

// A run entry of latest_summaries: {"run_id","asset","summary"}; tolerant of anything else.
json robustness_points(const DashboardStore& store) {
  json points = json::array();
  for (const auto& entry : latest_of(store, {"assess:robustness", "attack"})) {
    const json summary = entry.value("summary", json());
    const json* results = check_results(summary);
    if (!results) continue;
    const auto clean = number_at(*results, "clean_accuracy");
    const auto list = results->find("results");
    if (list == results->end() || !list->is_array()) continue;
    for (const auto& r : *list) {
      const auto eps = number_at(r, "eps");
      const auto accuracy = number_at(r, "robust_accuracy");
      if (!eps || !accuracy || *eps < 0) continue;
      json point = {{"run_id", entry.value("run_id", json())}, {"asset", entry.value("asset", json())},
                    {"attack", text_at(r, "attack")}, {"norm", text_at(r, "norm")}, {"epsilon", *eps},
                    {"accuracy", *accuracy}, {"clean_accuracy", clean ? json(*clean) : json()}};
      points.push_back(std::move(point));
    }
  }
  return json{{"points", points}};
}

json privacy_series(const DashboardStore& store) {
  json mia = json::array(), extraction = json::array(), pii = json::array();
  for (const auto& entry : latest_of(store, {"assess:membership", "mia"})) {
    const json summary = entry.value("summary", json());
    const json* results = check_results(summary);
    if (!results) continue;
    const auto attacks = results->find("attacks");
    if (attacks == results->end() || !attacks->is_array()) continue;
    for (const auto& a : *attacks) {
      const auto auc = number_at(a, "auc");
      if (!auc) continue;
      // The lowest false-positive rate the run reported (keys tpr_at_<rate>_fpr).
      std::optional<double> tpr;
      std::string rate;
      if (a.is_object())
        for (const auto& [key, value] : a.items())
          if (key.rfind("tpr_at_", 0) == 0 && key.size() > 11 && key.compare(key.size() - 4, 4, "_fpr") == 0 &&
              value.is_number()) {
            const std::string r = key.substr(7, key.size() - 11);
            if (!tpr || r.size() > rate.size()) tpr = value.get<double>(), rate = r;
          }
      mia.push_back({{"run_id", entry.value("run_id", json())}, {"asset", entry.value("asset", json())},
                     {"attack", text_at(a, "attack")}, {"auc", *auc},
                     {"tpr_at_low_fpr", tpr ? json(*tpr) : json()}, {"fpr", rate}});
    }
  }
  for (const auto& entry : latest_of(store, {"assess:extraction", "extract"})) {
    const json summary = entry.value("summary", json());
    const json* results = check_results(summary);
    if (!results) continue;
    const auto list = results->find("results");
    if (list == results->end() || !list->is_array()) continue;
    for (const auto& r : *list) {
      const auto fidelity = number_at(r, "fidelity");
      const auto budget = number_at(r, "budget");
      if (!fidelity || !budget) continue;
      extraction.push_back({{"run_id", entry.value("run_id", json())}, {"asset", entry.value("asset", json())},
                            {"strategy", text_at(r, "strategy")}, {"budget", *budget}, {"fidelity", *fidelity}});
    }
  }
  for (const auto& entry : latest_of(store, {"assess:pii", "pii"})) {
    const json summary = entry.value("summary", json());
    const json* results = check_results(summary);
    json counts = json::object();
    if (results && results->contains("entities") && (*results)["entities"].is_object())
      counts = (*results)["entities"];
    pii.push_back({{"run_id", entry.value("run_id", json())}, {"asset", entry.value("asset", json())}, {"entities", counts}});
  }
  return json{{"mia", mia}, {"extraction", extraction}, {"pii", pii}};
}

json atlas_coverage(const DashboardStore& store) {
  const auto counts = store.atlas_counts();
  std::map<std::string, const DashboardStore::TechniqueCount*> by_id;
  for (const auto& c : counts) by_id[c.id] = &c;
  const auto& catalog = threat::AtlasCatalog::shipped();
  static constexpr std::array<std::string_view, 5> kOrder = {"info", "low", "medium", "high", "critical"};
  const auto rank = [](const std::string& s) {
    const auto it = std::find(kOrder.begin(), kOrder.end(), s);
    return it == kOrder.end() ? -1 : static_cast<int>(it - kOrder.begin());
  };
  std::set<std::string> mapped;
  json tactics = json::array();
  for (const auto& tactic : catalog.tactics()) {
    json techniques = json::array();
    for (const auto& technique : catalog.techniques()) {
      if (!technique.parent.empty()) continue;  // sub-techniques count towards their parent's cell
      if (std::find(technique.tactics.begin(), technique.tactics.end(), tactic.id) == technique.tactics.end()) continue;
      std::size_t findings = 0, open = 0;
      std::string highest;
      for (const auto& [id, c] : by_id) {
        if (id != technique.id && id.rfind(technique.id + ".", 0) != 0) continue;
        findings += c->findings;
        open += c->open;
        if (rank(c->highest) > rank(highest)) highest = c->highest;
        mapped.insert(id);
      }
      techniques.push_back({{"id", technique.id}, {"name", technique.name}, {"findings", findings}, {"open", open},
                            {"highest", highest.empty() ? json() : json(highest)}});
    }
    tactics.push_back({{"id", tactic.id}, {"name", tactic.name}, {"techniques", techniques}});
  }
  json unmapped = json::array();
  for (const auto& c : counts)
    if (!mapped.count(c.id)) unmapped.push_back({{"id", c.id}, {"findings", c.findings}});
  return json{{"atlas_version", catalog.version()}, {"tactics", tactics}, {"unmapped", unmapped}};
}

}  // namespace

std::optional<std::string> percent_decode(std::string_view text, bool plus_is_space) {
  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '%') {
      if (i + 2 >= text.size()) return std::nullopt;
      const auto hex = [](char h) -> int {
        if (h >= '0' && h <= '9') return h - '0';
        if (h >= 'a' && h <= 'f') return h - 'a' + 10;
        if (h >= 'A' && h <= 'F') return h - 'A' + 10;
        return -1;
      };
      const int hi = hex(text[i + 1]), lo = hex(text[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out.push_back(static_cast<char>(hi * 16 + lo));
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out.push_back(' ');
    } else {
      out.push_back(c);
    }
  }
  return out;
}

json parse_prometheus_text(std::string_view text, std::size_t limit) {
  json series = json::array();
  std::size_t start = 0;
  while (start < text.size() && series.size() < limit) {
    std::size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(start, end - start);
    start = end + 1;
    if (line.empty() || line.front() == '#') continue;
    std::size_t name_end = 0;
    while (name_end < line.size() && (std::isalnum(static_cast<unsigned char>(line[name_end])) || line[name_end] == '_' ||
                                      line[name_end] == ':'))
      ++name_end;
    if (name_end == 0) continue;
    json labels = json::object();
    std::size_t pos = name_end;
    if (pos < line.size() && line[pos] == '{') {
      const std::size_t close = line.find('}', pos);
      if (close == std::string_view::npos) continue;
      std::string_view body = line.substr(pos + 1, close - pos - 1);
      std::size_t p = 0;
      while (p < body.size()) {
        const std::size_t eq = body.find('=', p);
        if (eq == std::string_view::npos || eq + 1 >= body.size() || body[eq + 1] != '"') break;
        std::string value;
        std::size_t q = eq + 2;
        for (; q < body.size() && body[q] != '"'; ++q) {
          if (body[q] == '\\' && q + 1 < body.size()) ++q;
          value.push_back(body[q]);
        }
        std::string key(body.substr(p, eq - p));
        while (!key.empty() && key.front() == ' ') key.erase(0, 1);
        labels[key] = value;
        p = q + 1;
        if (p < body.size() && body[p] == ',') ++p;
      }
      pos = close + 1;
    }
    while (pos < line.size() && line[pos] == ' ') ++pos;
    std::size_t value_end = pos;
    while (value_end < line.size() && line[value_end] != ' ') ++value_end;
    const std::string value_text(line.substr(pos, value_end - pos));
    char* parse_end = nullptr;
    const double value = std::strtod(value_text.c_str(), &parse_end);
    if (value_text.empty() || parse_end != value_text.c_str() + value_text.size()) continue;
    json item = {{"name", std::string(line.substr(0, name_end))}, {"labels", labels}};
    if (std::isfinite(value)) item["value"] = value;
    else item["value"] = value_text;
    series.push_back(std::move(item));
  }
  return series;
}

DashboardApi::DashboardApi(DashboardStore& store, DashboardApiOptions options) : store_(store), options_(std::move(options)) {
  if (options_.web_root.empty()) options_.web_root = AEGIS_WEB_DIST;
}

ApiResponse DashboardApi::handle(const ApiRequest& request) {
  ApiResponse response;
  const std::size_t question = request.target.find('?');
  const auto path = percent_decode(std::string_view(request.target).substr(0, question), false);
  std::map<std::string, std::string> query;
  bool query_ok = path.has_value();
  if (query_ok && question != std::string::npos) {
    std::string_view rest = std::string_view(request.target).substr(question + 1);
    while (!rest.empty()) {
      const std::size_t amp = rest.find('&');
      const std::string_view part = rest.substr(0, amp);
      const std::size_t eq = part.find('=');
      const auto key = percent_decode(part.substr(0, eq), true);
      const auto value = eq == std::string_view::npos ? std::optional<std::string>("") : percent_decode(part.substr(eq + 1), true);
      if (!key || !value) {
        query_ok = false;
        break;
      }
      if (!key->empty()) query[*key] = *value;
      if (amp == std::string_view::npos) break;
      rest.remove_prefix(amp + 1);
    }
  }
  if (!query_ok) {
    response = error_response(400, "bad_request", "the URL has a malformed percent escape");
  } else if (path->find('\0') != std::string::npos || path->empty() || path->front() != '/') {
    response = error_response(400, "bad_request", "the path must start with / and contain no NUL");
  } else {
    try {
      response = dispatch(request, *path, query);
    } catch (const core::Error& e) {
      response = error_response(400, "bad_request", e.what());
    } catch (const std::exception& e) {
      response = error_response(500, "internal_error", std::string("the dashboard failed to answer: ") + e.what());
    }
  }
  for (const auto& h : security_headers()) response.headers.push_back(h);
  if (path && path->rfind("/api/", 0) == 0) response.headers.emplace_back("cache-control", "no-store");
  return response;
}

ApiResponse DashboardApi::dispatch(const ApiRequest& request, const std::string& path,
                                   const std::map<std::string, std::string>& query) {
  const std::string& method = request.method;
  if (path.rfind("/api/", 0) != 0) {
    if (method != "GET" && method != "HEAD") return error_response(405, "method_not_allowed", "static files are read with GET");
    return static_file(path);
  }
  const auto parts = split_path(path);  // api, v1, ...
  if (parts.size() < 3 || parts[1] != "v1")
    return error_response(404, "not_found", "no such API endpoint: " + path + " (see /api/v1/openapi.json)");
  const std::string& resource = parts[2];
  const bool reading = method == "GET" || method == "HEAD";

  if (resource == "openapi.json" && parts.size() == 3) {
    if (!reading) return error_response(405, "method_not_allowed", "use GET");
    ApiResponse response;
    response.body = openapi_document();
    return response;
  }

  // Cross-site requests are refused before anything else: a browser names the page's origin.
  const std::string origin = header(request, "origin");
  if (!reading && !origin.empty()) {
    const std::string host = header(request, "host");
    if (origin != "http://" + host && origin != "https://" + host)
      return error_response(403, "cross_origin", "requests from " + origin + " are not accepted; open the dashboard at its own address");
  }

  // The gateway's alert webhook authenticates with its bearer token, not a session.
  if (resource == "gateway" && parts.size() == 4 && parts[3] == "alerts" && method == "POST") {
    const std::string auth = header(request, "authorization");
    if (options_.alert_token.empty())
      return error_response(404, "not_found", "the alert webhook is off; start aegis serve with --alert-token-file");
    if (auth.rfind("Bearer ", 0) != 0 || !equal_secrets(auth.substr(7), options_.alert_token))
      return error_response(401, "unauthorized", "the webhook needs Authorization: Bearer <the token given to aegis serve>");
    if (request.body.size() > kMaxAlertBytes) return error_response(413, "too_large", "an alert is at most 64 KiB");
    std::string why;
    auto alert = parse_body(request.body, why);
    if (!alert) return error_response(400, "bad_request", why);
    (*alert)["received_at"] = now_rfc3339();
    {
      std::lock_guard lock(alerts_mutex_);
      alerts_.push_front(std::move(*alert));
      while (alerts_.size() > options_.max_alerts) alerts_.pop_back();
    }
    ApiResponse response = json_response(202, json{{"accepted", true}});
    return response;
  }

  if (resource == "login" && parts.size() == 3) {
    if (method != "POST") return error_response(405, "method_not_allowed", "log in with POST");
    if (header(request, "content-type").rfind("application/json", 0) != 0)
      return error_response(415, "unsupported_media_type", "send the credentials as application/json");
    std::string why;
    const auto body = parse_body(request.body, why);
    if (!body) return error_response(400, "bad_request", why);
    const auto username = string_field(*body, "username");
    const auto password = string_field(*body, "password");
    if (!username || !password) return error_response(400, "bad_request", "send {\"username\": ..., \"password\": ...}");
    if (const auto wait = login_wait_seconds(request.client); wait > 0) {
      ApiResponse response = error_response(429, "too_many_attempts", "too many failed logins from this address; try again in " +
                                                                           std::to_string(wait) + " s");
      response.headers.emplace_back("retry-after", std::to_string(wait));
      return response;
    }
    const LoginResult result = store_.login(*username, *password, request.client);
    if (result.outcome != LoginResult::Outcome::Ok) record_failed_login(request.client);
    if (result.outcome == LoginResult::Outcome::LockedOut) {
      ApiResponse response = error_response(429, "locked_out", "too many failed logins for this user; try again in " +
                                                                   std::to_string(result.retry_after_s) + " s");
      response.headers.emplace_back("retry-after", std::to_string(result.retry_after_s));
      return response;
    }
    if (result.outcome != LoginResult::Outcome::Ok)
      return error_response(401, "invalid_credentials", "wrong user name or password");
    ApiResponse response = json_response(200, json{{"user", {{"name", result.session.user}, {"role", result.session.role}}},
                                                   {"csrf_token", result.session.csrf_token}});
    response.headers.emplace_back("set-cookie", "aegis_session=" + result.token + "; Path=/; HttpOnly; SameSite=Strict" +
                                                    (options_.secure_cookies ? "; Secure" : ""));
    return response;
  }

  // Everything else needs a session.
  const std::string token = cookie_value(header(request, "cookie"), "aegis_session");
  const std::optional<Session> session = token.empty() ? std::nullopt : store_.session(token);
  if (!session) return error_response(401, "unauthenticated", "log in first (POST /api/v1/login)");
  if (!reading && !equal_secrets(header(request, "x-csrf-token"), session->csrf_token))
    return error_response(403, "csrf", "the X-CSRF-Token header is missing or wrong; reload the dashboard");
  const auto needs = [&](std::string_view role) { return role_rank(session->role) >= role_rank(role); };
  const auto forbidden = [&](std::string_view role) {
    return error_response(403, "forbidden", "this needs the " + std::string(role) + " role; you are " + session->role);
  };
  const auto not_found = [&](const std::string& what) { return error_response(404, "not_found", "no such " + what); };
  const auto wrong_method = [&]() { return error_response(405, "method_not_allowed", method + " is not allowed on " + path); };

  if (resource == "logout" && parts.size() == 3) {
    if (method != "POST") return wrong_method();
    store_.logout(token);
    ApiResponse response = no_content();
    response.headers.emplace_back("set-cookie", "aegis_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    return response;
  }
  if (resource == "me" && parts.size() == 3) {
    if (!reading) return wrong_method();
    return json_response(200, json{{"user", {{"name", session->user}, {"role", session->role}}}, {"csrf_token", session->csrf_token}});
  }
  if (resource == "summary" && parts.size() == 3) {
    if (!reading) return wrong_method();
    return json_response(200, store_.summary());
  }
  if (resource == "inventory" && parts.size() == 3) {
    if (!reading) return wrong_method();
    return json_response(200, store_.inventory());
  }
  if (resource == "assessments") {
    if (!reading) return wrong_method();
    if (parts.size() == 3)
      return json_response(200, store_.assessments(parse_count(query, "limit", 50, 500), parse_count(query, "offset", 0, SIZE_MAX)));
    const auto id = parts.size() == 4 ? parse_id(parts[3]) : std::nullopt;
    if (!id) return not_found("assessment");
    auto found = store_.assessment(*id);
    return found ? json_response(200, *found) : not_found("assessment " + parts[3]);
  }
  if (resource == "runs") {
    if (!reading) return wrong_method();
    if (parts.size() == 3) {
      std::optional<std::int64_t> assessment;
      if (auto a = optional_param(query, "assessment")) {
        assessment = parse_id(*a);
        if (!assessment) throw core::Error("assessment must be a positive id, not '" + *a + "'");
      }
      return json_response(200, store_.runs(optional_param(query, "asset"), optional_param(query, "command"), assessment,
                                            parse_count(query, "limit", 50, 500), parse_count(query, "offset", 0, SIZE_MAX)));
    }
    const auto id = parts.size() == 4 ? parse_id(parts[3]) : std::nullopt;
    if (!id) return not_found("run");
    auto found = store_.run(*id);
    return found ? json_response(200, *found) : not_found("run " + parts[3]);
  }
  if (resource == "findings") {
    if (parts.size() == 3) {
      if (!reading) return wrong_method();
      FindingQuery q;
      if (auto scope = optional_param(query, "scope")) {
        if (*scope != "current" && *scope != "all") throw core::Error("scope is current or all, not '" + *scope + "'");
        q.scope = *scope;
      }
      for (const char* name : {"run", "assessment"})
        if (auto v = optional_param(query, name)) {
          const auto id = parse_id(*v);
          if (!id) throw core::Error(std::string(name) + " must be a positive id, not '" + *v + "'");
          (std::string_view(name) == "run" ? q.run : q.assessment) = id;
        }
      q.asset = optional_param(query, "asset");
      q.command = optional_param(query, "command");
      q.atlas = optional_param(query, "atlas");
      q.q = optional_param(query, "q");
      if (auto s = optional_param(query, "severity")) {
        q.severities = split_list(*s);
        for (const auto& sev : q.severities)
          if (sev != "critical" && sev != "high" && sev != "medium" && sev != "low" && sev != "info")
            throw core::Error("severity is a comma list of critical, high, medium, low, info; not '" + sev + "'");
      }
      if (auto s = optional_param(query, "status")) {
        q.statuses = split_list(*s);
        for (const auto& st : q.statuses)
          if (!store::is_finding_status(st))
            throw core::Error("status is a comma list of open, acknowledged, accepted-risk, false-positive, fixed; not '" + st + "'");
      }
      if (auto s = optional_param(query, "sort")) {
        static const std::set<std::string> kSorts = {"severity", "-severity", "id", "-id", "asset", "rule"};
        if (!kSorts.count(*s)) throw core::Error("sort is one of severity, -severity, id, -id, asset, rule; not '" + *s + "'");
        q.sort = *s;
      }
      q.limit = parse_count(query, "limit", 50, 500);
      q.offset = parse_count(query, "offset", 0, SIZE_MAX);
      return json_response(200, store_.findings(q));
    }
    const auto id = parse_id(parts[3]);
    if (!id) return not_found("finding");
    if (parts.size() == 4) {
      if (!reading) return wrong_method();
      auto found = store_.finding(*id);
      return found ? json_response(200, *found) : not_found("finding " + parts[3]);
    }
    if (parts.size() == 5 && parts[4] == "status") {
      if (method != "POST") return wrong_method();
      if (!needs(kRoleAnalyst)) return forbidden(kRoleAnalyst);
      std::string why;
      const auto body = parse_body(request.body, why);
      if (!body) return error_response(400, "bad_request", why);
      const auto status = string_field(*body, "status");
      const auto comment = string_field(*body, "comment");
      if (!status || !comment) return error_response(400, "bad_request", "send {\"status\": ..., \"comment\": ...}");
      if (!store_.finding(*id)) return not_found("finding " + parts[3]);
      return json_response(200, store_.set_finding_status(*id, *status, *comment, session->user));
    }
    return not_found("finding endpoint");
  }
  if (resource == "atlas" && parts.size() == 4 && parts[3] == "coverage") {
    if (!reading) return wrong_method();
    return json_response(200, atlas_coverage(store_));
  }
  if (resource == "charts" && parts.size() == 4) {
    if (!reading) return wrong_method();
    if (parts[3] == "robustness") return json_response(200, robustness_points(store_));
    if (parts[3] == "privacy") return json_response(200, privacy_series(store_));
    return not_found("chart");
  }
  if (resource == "gateway" && parts.size() == 4) {
    if (!reading) return wrong_method();
    if (parts[3] == "alerts") {
      const std::size_t limit = parse_count(query, "limit", 100, 1000);
      json items = json::array();
      std::lock_guard lock(alerts_mutex_);
      for (const auto& alert : alerts_) {
        if (items.size() >= limit) break;
        items.push_back(alert);
      }
      return json_response(200, json{{"webhook", !options_.alert_token.empty()}, {"items", items}});
    }
    if (parts[3] == "metrics") {
      json out = {{"configured", !options_.gateway_url.empty()}, {"url", options_.gateway_url},
                  {"fetched_at", now_rfc3339()}, {"error", nullptr}, {"series", json::array()}};
      if (options_.gateway_url.empty() || !options_.fetch_metrics) return json_response(200, out);
      try {
        const auto [status, body] = options_.fetch_metrics(options_.gateway_url);
        if (status == 200) out["series"] = parse_prometheus_text(body);
        else out["error"] = "the gateway answered " + std::to_string(status) + " for /metrics";
      } catch (const std::exception& e) {
        out["error"] = std::string("could not reach the gateway: ") + e.what();
      }
      return json_response(200, out);
    }
    return not_found("gateway endpoint");
  }
  if (resource == "audit" && parts.size() == 3) {
    if (!reading) return wrong_method();
    if (!needs(kRoleAdmin)) return forbidden(kRoleAdmin);
    return json_response(200, store_.audit_log(parse_count(query, "limit", 100, 1000), parse_count(query, "offset", 0, SIZE_MAX)));
  }
  if (resource == "users") {
    if (!needs(kRoleAdmin)) return forbidden(kRoleAdmin);
    if (parts.size() == 3) {
      if (reading) return json_response(200, store_.users());
      if (method != "POST") return wrong_method();
      std::string why;
      const auto body = parse_body(request.body, why);
      if (!body) return error_response(400, "bad_request", why);
      const auto name = string_field(*body, "name");
      const auto role = string_field(*body, "role");
      const auto password = string_field(*body, "password");
      if (!name || !role || !password) return error_response(400, "bad_request", "send {\"name\", \"role\", \"password\"}");
      store_.add_user(*name, *role, *password, session->user);
      return json_response(201, json{{"name", *name}, {"role", *role}, {"disabled", false}});
    }
    if (parts.size() != 4) return not_found("user endpoint");
    const std::string& name = parts[3];
    if (method == "DELETE") {
      store_.remove_user(name, session->user);
      return no_content();
    }
    if (method == "PATCH") {
      std::string why;
      const auto body = parse_body(request.body, why);
      if (!body) return error_response(400, "bad_request", why);
      if (auto role = string_field(*body, "role")) store_.set_role(name, *role, session->user);
      if (auto password = string_field(*body, "password")) store_.set_password(name, *password, session->user);
      if (body->contains("disabled")) {
        if (!(*body)["disabled"].is_boolean()) return error_response(400, "bad_request", "disabled is true or false");
        store_.set_disabled(name, (*body)["disabled"].get<bool>(), session->user);
      }
      const json users = store_.users();
      for (const auto& item : users["items"])
        if (item.value("name", "") == name) return json_response(200, item);
      return not_found("user " + name);
    }
    return wrong_method();
  }
  return error_response(404, "not_found", "no such API endpoint: " + path + " (see /api/v1/openapi.json)");
}

std::int64_t DashboardApi::login_wait_seconds(const std::string& client) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(failures_mutex_);
  const auto it = failures_.find(client);
  if (it == failures_.end()) return 0;
  auto& times = it->second;
  while (!times.empty() && now - times.front() >= std::chrono::minutes(1)) times.pop_front();
  if (times.empty()) {
    failures_.erase(it);
    return 0;
  }
  if (times.size() < options_.max_failed_logins_per_minute) return 0;
  return std::max<std::int64_t>(
      1, std::chrono::duration_cast<std::chrono::seconds>(times.front() + std::chrono::minutes(1) - now).count() + 1);
}

void DashboardApi::record_failed_login(const std::string& client) {
  const auto now = std::chrono::steady_clock::now();
  std::lock_guard lock(failures_mutex_);
  // Bounded memory whatever the number of addresses: forget addresses whose failures are old.
  if (failures_.size() >= 100'000)
    for (auto it = failures_.begin(); it != failures_.end();)
      it = !it->second.empty() && now - it->second.back() < std::chrono::minutes(1) ? std::next(it) : failures_.erase(it);
  auto& times = failures_[client];
  times.push_back(now);
  while (times.size() > options_.max_failed_logins_per_minute) times.pop_front();
}

ApiResponse DashboardApi::static_file(const std::string& path) const {
  // Only plain names below the root: no dot segments, no hidden files, no backslashes.
  std::filesystem::path relative;
  for (const auto& part : split_path(path)) {
    if (part.empty() || part.front() == '.' || part.find('\\') != std::string::npos)
      return error_response(404, "not_found", "no such file");
    relative /= part;
  }
  std::filesystem::path file = options_.web_root / relative;
  std::error_code ec;
  // A route of the app (no extension) gets the app itself.
  if (relative.empty() || !relative.has_extension()) file = options_.web_root / "index.html";
  const auto status = std::filesystem::symlink_status(file, ec);
  if (ec || !std::filesystem::is_regular_file(status)) {
    if (file.filename() == "index.html") {
      ApiResponse response;
      response.status = 503;
      response.content_type = "text/plain; charset=utf-8";
      response.body = "The dashboard's front end is not built in " + options_.web_root.string() +
                      ". Build it with `make web` (npm ci && npm run build in web/), or pass --web-root. "
                      "The REST API is up: /api/v1/openapi.json\n";
      return response;
    }
    return error_response(404, "not_found", "no such file: " + path);
  }
  const auto size = std::filesystem::file_size(file, ec);
  if (ec || size > kMaxStaticBytes) return error_response(404, "not_found", "no such file: " + path);
  std::ifstream in(file, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  ApiResponse response;
  response.content_type = content_type_of(file);
  response.body = bytes.str();
  response.headers.emplace_back("cache-control", file.filename() == "index.html" ? "no-cache" : "public, max-age=300");
  return response;
}

}  // namespace aegis::web

namespace aegis::data {
extern const std::string_view openapi;
}  // namespace aegis::data

namespace aegis::web {

const std::string& openapi_document() {
  static const std::string kDocument(data::openapi);
  return kDocument;
}

}  // namespace aegis::web
