// The dashboard's request handling on hostile bytes: the method, target (path, percent escapes,
// query parameters for every findings filter), headers (cookies, CSRF token, origin) and JSON body
// of each request come from the input, and go through DashboardApi::handle over a real SQLite store
// with findings, users and a logged-in session. Nothing may crash, leak or answer 5xx. The input's
// first byte picks whether the request carries the valid session (so the authenticated paths and
// the SQL behind them are reached) and its CSRF token.
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "aegis/core/finding.h"
#include "aegis/store/finding_store.h"
#include "aegis/web/dashboard_api.h"
#include "aegis/web/dashboard_store.h"

namespace {

using namespace aegis;

struct World {
  std::filesystem::path dir;
  std::unique_ptr<web::DashboardStore> store;
  std::unique_ptr<web::DashboardApi> api;
  std::string cookie, csrf;
};

World& world() {
  static World w = [] {
    World out;
    char name[] = "/tmp/aegis-web-fuzz-XXXXXX";
    out.dir = mkdtemp(name);
    const auto file = out.dir / "store.db";
    {
      store::FindingStore findings(file);
      store::RunRecord run;
      run.command = "assess:robustness";
      run.asset = "model";
      run.summary_json = R"({"results":{"clean_accuracy":0.9,"results":[{"attack":"pgd","eps":0.1,"robust_accuracy":0.3}]}})";
      core::Finding f;
      f.rule_id = "pickle.exec";
      f.severity = core::Severity::Critical;
      f.title = "exec";
      f.evidence = "os.system";
      f.atlas = {"AML.T0011.000"};
      findings.record_run(run, {f, f});
    }
    out.store = std::make_unique<web::DashboardStore>(file);
    out.store->add_user("admin", "admin", "fuzz-admin-password", "fuzz");
    const auto login = out.store->login("admin", "fuzz-admin-password", "127.0.0.1");
    out.cookie = "aegis_session=" + login.token;
    out.csrf = login.session.csrf_token;
    web::DashboardApiOptions options;
    options.web_root = out.dir;
    options.alert_token = "fuzz-alert-token-0123456789";
    options.max_alerts = 16;
    out.api = std::make_unique<web::DashboardApi>(*out.store, options);
    std::atexit([] {
      std::error_code ec;
      std::filesystem::remove_all(world().dir, ec);
    });
    return out;
  }();
  return w;
}

// Splits the input at '\n' into up to five fields: method, target, header lines ("name: value"
// separated by '\r'), content type, body (the rest).
std::vector<std::string> fields(const std::uint8_t* data, std::size_t size, std::size_t count) {
  std::vector<std::string> out;
  std::string current;
  for (std::size_t i = 0; i < size; ++i) {
    if (data[i] == '\n' && out.size() + 1 < count) {
      out.push_back(std::move(current));
      current.clear();
    } else {
      current.push_back(static_cast<char>(data[i]));
    }
  }
  out.push_back(std::move(current));
  while (out.size() < count) out.emplace_back();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0 || size > 64 * 1024) return 0;
  World& w = world();
  const std::uint8_t mode = data[0];
  const auto parts = fields(data + 1, size - 1, 5);
  web::ApiRequest request;
  static const char* kMethods[] = {"GET", "POST", "PATCH", "DELETE", "HEAD", "PUT"};
  request.method = parts[0].empty() ? kMethods[mode % 6] : parts[0];
  request.target = parts[1].empty() || parts[1][0] != '/' ? "/api/v1/" + parts[1] : parts[1];
  std::size_t start = 0;
  while (start < parts[2].size()) {
    std::size_t end = parts[2].find('\r', start);
    if (end == std::string::npos) end = parts[2].size();
    const std::string line = parts[2].substr(start, end - start);
    const std::size_t colon = line.find(':');
    if (colon != std::string::npos) request.headers[line.substr(0, colon)] = line.substr(colon + 1);
    start = end + 1;
  }
  request.headers["host"] = "127.0.0.1:8080";
  if (!parts[3].empty()) request.headers["content-type"] = parts[3];
  // Logging out or removing the fuzz user would end the session for the inputs after this one.
  const bool mutating_self = request.target.find("logout") != std::string::npos || request.target.find("users") != std::string::npos;
  if ((mode & 0x10) && !mutating_self) request.headers["cookie"] = w.cookie;
  if (mode & 0x20) request.headers["x-csrf-token"] = w.csrf;
  if (mode & 0x40) request.headers["authorization"] = "Bearer fuzz-alert-token-0123456789";
  // A login runs argon2 over 64 MiB: keep those rare so the fuzzer keeps its pace.
  if (request.target.find("login") != std::string::npos && (mode & 0x0f) != 0) return 0;
  request.body = parts[4];
  request.client = "127.0.0.1";
  const web::ApiResponse response = w.api->handle(request);
  if (response.status >= 500 && response.status != 503) std::abort();
  return 0;
}
