// The dashboard's REST API end to end below the socket (DashboardApi::handle over a real SQLite
// store with real users), and once over a real loopback socket (HttpServer).
#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <nlohmann/json.hpp>

#include <fstream>
#include <thread>

#include "aegis/core/finding.h"
#include "aegis/store/finding_store.h"
#include "aegis/web/dashboard_api.h"
#include "aegis/web/dashboard_store.h"
#include "aegis/web/http_server.h"
#include "test_support.h"

namespace aegis::web {
namespace {

using json = nlohmann::json;

core::Finding make_finding(std::string rule, core::Severity severity, std::vector<std::string> atlas, std::string file) {
  core::Finding f;
  f.rule_id = std::move(rule);
  f.severity = severity;
  f.title = "title of " + f.rule_id;
  f.location.file = std::move(file);
  f.evidence = "evidence for " + f.rule_id;
  f.atlas = std::move(atlas);
  f.remediation = "fix it";
  return f;
}

class DashboardApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    file_ = dir_.path / "store.db";
    {
      store::FindingStore findings(file_);
      store::RunRecord run;
      run.command = "scan";
      run.asset = "fraud-model";
      run.started_at = "2026-01-01T00:00:00Z";
      findings.record_run(run, {make_finding("pickle.exec", core::Severity::Critical, {"AML.T0011.000"}, "model.pkl"),
                                make_finding("pickle.import", core::Severity::High, {"AML.T0010"}, "model.pkl"),
                                make_finding("zip.comment", core::Severity::Low, {}, "weights.zip")});
      store::RunRecord attack;
      attack.command = "assess:robustness";
      attack.asset = "fraud-model";
      attack.started_at = "2026-01-02T00:00:00Z";
      attack.summary_json = R"({"results":{"clean_accuracy":0.9,"results":[{"attack":"pgd","norm":"linf","eps":0.1,"robust_accuracy":0.4},
                                {"attack":"pgd","norm":"linf","eps":0.2,"robust_accuracy":0.1}]}})";
      findings.record_run(attack, {make_finding("attack.pgd", core::Severity::High, {"AML.T0043"}, "")});
    }
    store_ = std::make_unique<DashboardStore>(file_);
    store_->add_user("alice", "admin", "alice-password-123", "test");
    store_->add_user("bob", "analyst", "bob-password-1234", "test");
    store_->add_user("vera", "viewer", "vera-password-123", "test");
    web_root_ = dir_.path / "dist";
    std::filesystem::create_directories(web_root_);
    std::ofstream(web_root_ / "index.html") << "<!doctype html><title>Aegis</title>";
    std::ofstream(web_root_ / "app.js") << "console.log('aegis')";
    std::ofstream(dir_.path / "secret.txt") << "not for the web";
    DashboardApiOptions options;
    options.web_root = web_root_;
    options.alert_token = "0123456789abcdef0123";
    options.gateway_url = "http://127.0.0.1:9";
    options.fetch_metrics = [](const std::string&) {
      return std::pair<int, std::string>(200, "# HELP aegis_requests_total requests\naegis_requests_total{route=\"chat\"} 42\nup 1\n");
    };
    api_ = std::make_unique<DashboardApi>(*store_, options);
  }

  ApiResponse call(const std::string& method, const std::string& target, const std::string& body = "",
                   std::map<std::string, std::string> headers = {}) {
    ApiRequest request;
    request.method = method;
    request.target = target;
    request.body = body;
    request.client = "127.0.0.1";
    request.headers = std::move(headers);
    request.headers.emplace("host", "127.0.0.1:8080");
    if (!body.empty()) request.headers.emplace("content-type", "application/json");
    return api_->handle(request);
  }

  struct Login {
    std::string cookie, csrf;
  };
  Login login(const std::string& user, const std::string& password) {
    const auto response = call("POST", "/api/v1/login", json{{"username", user}, {"password", password}}.dump());
    EXPECT_EQ(response.status, 200) << response.body;
    Login out;
    for (const auto& [name, value] : response.headers)
      if (name == "set-cookie") out.cookie = value.substr(0, value.find(';'));
    out.csrf = json::parse(response.body).value("csrf_token", "");
    return out;
  }
  ApiResponse as(const Login& who, const std::string& method, const std::string& target, const std::string& body = "") {
    std::map<std::string, std::string> headers = {{"cookie", who.cookie}};
    if (method != "GET") headers["x-csrf-token"] = who.csrf;
    return call(method, target, body, headers);
  }

  test::TempDir dir_{"aegis_dashboard_api"};
  std::filesystem::path file_, web_root_;
  std::unique_ptr<DashboardStore> store_;
  std::unique_ptr<DashboardApi> api_;
};

std::string header_of(const ApiResponse& response, const std::string& name) {
  for (const auto& [n, v] : response.headers)
    if (n == name) return v;
  return {};
}

TEST_F(DashboardApiTest, LoginSetsAnHttpOnlyStrictCookieAndMeNeedsIt) {
  EXPECT_EQ(call("GET", "/api/v1/me").status, 401);
  const auto response = call("POST", "/api/v1/login", R"({"username":"bob","password":"bob-password-1234"})");
  ASSERT_EQ(response.status, 200) << response.body;
  const std::string cookie = header_of(response, "set-cookie");
  EXPECT_NE(cookie.find("aegis_session="), std::string::npos);
  EXPECT_NE(cookie.find("HttpOnly"), std::string::npos);
  EXPECT_NE(cookie.find("SameSite=Strict"), std::string::npos);
  const auto body = json::parse(response.body);
  EXPECT_EQ(body["user"]["name"], "bob");
  EXPECT_EQ(body["user"]["role"], "analyst");
  const Login bob{cookie.substr(0, cookie.find(';')), body["csrf_token"]};
  const auto me = as(bob, "GET", "/api/v1/me");
  ASSERT_EQ(me.status, 200);
  EXPECT_EQ(json::parse(me.body)["csrf_token"], bob.csrf);
  // A made-up cookie is no session.
  EXPECT_EQ(call("GET", "/api/v1/me", "", {{"cookie", "aegis_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}}).status, 401);
}

TEST_F(DashboardApiTest, WrongPasswordsAreRefusedWithoutSayingWhichPartWasWrong) {
  const auto wrong_password = call("POST", "/api/v1/login", R"({"username":"bob","password":"nope-nope-nope"})");
  const auto no_user = call("POST", "/api/v1/login", R"({"username":"mallory","password":"nope-nope-nope"})");
  EXPECT_EQ(wrong_password.status, 401);
  EXPECT_EQ(no_user.status, 401);
  EXPECT_EQ(wrong_password.body, no_user.body);
  EXPECT_EQ(call("POST", "/api/v1/login", "username=bob&password=x", {{"content-type", "application/x-www-form-urlencoded"}}).status,
            415);
  EXPECT_EQ(call("POST", "/api/v1/login", "[[[[").status, 400);
}

TEST_F(DashboardApiTest, OneAddressSprayingPasswordsOverManyNamesIsSlowedDown) {
  // Twenty failures from one address within a minute, each on another name (so no user is locked).
  for (int i = 0; i < 20; ++i)
    EXPECT_EQ(call("POST", "/api/v1/login", json{{"username", "user" + std::to_string(i)}, {"password", "guess-guess-guess"}}.dump()).status,
              401);
  // Now even the right password from that address waits, and is told for how long.
  const auto refused = call("POST", "/api/v1/login", R"({"username":"bob","password":"bob-password-1234"})");
  EXPECT_EQ(refused.status, 429);
  EXPECT_EQ(json::parse(refused.body)["error"], "too_many_attempts");
  EXPECT_FALSE(header_of(refused, "retry-after").empty());
  // Another address is not affected.
  ApiRequest other;
  other.method = "POST";
  other.target = "/api/v1/login";
  other.body = R"({"username":"bob","password":"bob-password-1234"})";
  other.client = "10.1.2.3";
  other.headers = {{"host", "127.0.0.1:8080"}, {"content-type", "application/json"}};
  EXPECT_EQ(api_->handle(other).status, 200);
}

TEST_F(DashboardApiTest, MutationsNeedTheCsrfTokenAndTheSameOrigin) {
  const auto bob = login("bob", "bob-password-1234");
  const std::string body = R"({"status":"fixed","comment":"patched the loader"})";
  auto no_token = call("POST", "/api/v1/findings/1/status", body, {{"cookie", bob.cookie}});
  EXPECT_EQ(no_token.status, 403);
  EXPECT_EQ(json::parse(no_token.body)["error"], "csrf");
  auto wrong_token = call("POST", "/api/v1/findings/1/status", body, {{"cookie", bob.cookie}, {"x-csrf-token", bob.csrf + "x"}});
  EXPECT_EQ(wrong_token.status, 403);
  auto other_origin = call("POST", "/api/v1/findings/1/status", body,
                           {{"cookie", bob.cookie}, {"x-csrf-token", bob.csrf}, {"origin", "https://evil.example"}});
  EXPECT_EQ(other_origin.status, 403);
  EXPECT_EQ(json::parse(other_origin.body)["error"], "cross_origin");
  // Nothing changed.
  EXPECT_EQ(json::parse(as(bob, "GET", "/api/v1/findings/1").body)["status"], "open");
  auto same_origin = call("POST", "/api/v1/findings/1/status", body,
                          {{"cookie", bob.cookie}, {"x-csrf-token", bob.csrf}, {"origin", "http://127.0.0.1:8080"}});
  EXPECT_EQ(same_origin.status, 200) << same_origin.body;
}

TEST_F(DashboardApiTest, AnAnalystTriagesAFindingAndTheHistoryAndAuditLogKeepIt) {
  const auto bob = login("bob", "bob-password-1234");
  const auto list = json::parse(as(bob, "GET", "/api/v1/findings?severity=critical").body);
  ASSERT_EQ(list["total"], 1);
  const auto id = list["items"][0]["id"].get<std::int64_t>();
  EXPECT_EQ(list["items"][0]["rule_id"], "pickle.exec");
  const auto changed = as(bob, "POST", "/api/v1/findings/" + std::to_string(id) + "/status",
                          R"({"status":"accepted-risk","comment":"model is only loaded in the sandbox"})");
  ASSERT_EQ(changed.status, 200) << changed.body;
  const auto finding = json::parse(as(bob, "GET", "/api/v1/findings/" + std::to_string(id)).body);
  EXPECT_EQ(finding["status"], "accepted-risk");
  ASSERT_EQ(finding["history"].size(), 1u);
  EXPECT_EQ(finding["history"][0]["user"], "bob");
  EXPECT_EQ(finding["history"][0]["to"], "accepted-risk");
  EXPECT_EQ(finding["history"][0]["comment"], "model is only loaded in the sandbox");
  EXPECT_EQ(json::parse(as(bob, "GET", "/api/v1/findings?status=accepted-risk").body)["total"], 1);
  // An empty comment is refused.
  EXPECT_EQ(as(bob, "POST", "/api/v1/findings/" + std::to_string(id) + "/status", R"({"status":"fixed","comment":""})").status, 400);
  // The analyst cannot read the audit log; the admin sees the change in it.
  EXPECT_EQ(as(bob, "GET", "/api/v1/audit").status, 403);
  const auto alice = login("alice", "alice-password-123");
  const auto audit = json::parse(as(alice, "GET", "/api/v1/audit").body);
  bool seen = false;
  for (const auto& item : audit["items"])
    if (item.value("action", "") == "finding.status" && item.value("user", "") == "bob") seen = true;
  EXPECT_TRUE(seen) << audit.dump();
  EXPECT_TRUE(store_->verify_audit_log().empty());
}

TEST_F(DashboardApiTest, ViewersReadButCannotChangeAnything) {
  const auto vera = login("vera", "vera-password-123");
  EXPECT_EQ(as(vera, "GET", "/api/v1/findings").status, 200);
  EXPECT_EQ(as(vera, "GET", "/api/v1/summary").status, 200);
  const auto refused = as(vera, "POST", "/api/v1/findings/1/status", R"({"status":"fixed","comment":"x"})");
  EXPECT_EQ(refused.status, 403);
  EXPECT_EQ(json::parse(refused.body)["error"], "forbidden");
  EXPECT_EQ(as(vera, "GET", "/api/v1/users").status, 403);
  EXPECT_EQ(as(vera, "POST", "/api/v1/users", R"({"name":"eve","role":"admin","password":"eve-password-123"})").status, 403);
  EXPECT_EQ(json::parse(as(vera, "GET", "/api/v1/findings/1").body)["status"], "open");
}

TEST_F(DashboardApiTest, AdminsManageUsersAndTheChangesAreAudited) {
  const auto alice = login("alice", "alice-password-123");
  EXPECT_EQ(as(alice, "POST", "/api/v1/users", R"({"name":"carol","role":"viewer","password":"carol-password-1"})").status, 201);
  EXPECT_EQ(as(alice, "POST", "/api/v1/users", R"({"name":"dave","role":"viewer","password":"short"})").status, 400);
  const auto carol = login("carol", "carol-password-1");
  EXPECT_EQ(as(alice, "PATCH", "/api/v1/users/carol", R"({"role":"analyst"})").status, 200);
  EXPECT_EQ(json::parse(as(carol, "GET", "/api/v1/me").body)["user"]["role"], "analyst");
  const auto disabled = as(alice, "PATCH", "/api/v1/users/carol", R"({"disabled":true})");
  EXPECT_EQ(disabled.status, 200) << disabled.body;
  EXPECT_EQ(as(carol, "GET", "/api/v1/me").status, 401);  // disabling ends the session
  EXPECT_EQ(as(alice, "DELETE", "/api/v1/users/carol").status, 204);
  EXPECT_EQ(as(alice, "DELETE", "/api/v1/users/alice").status, 400);  // the last admin stays
  const auto audit = json::parse(as(alice, "GET", "/api/v1/audit?limit=100").body);
  std::set<std::string> actions;
  for (const auto& item : audit["items"]) actions.insert(item.value("action", ""));
  for (const char* action : {"user.add", "user.role", "user.disable", "user.remove", "login"})
    EXPECT_TRUE(actions.count(action)) << action << " missing from " << audit.dump();
}

TEST_F(DashboardApiTest, LogoutEndsTheSession) {
  const auto bob = login("bob", "bob-password-1234");
  EXPECT_EQ(as(bob, "POST", "/api/v1/logout").status, 204);
  EXPECT_EQ(as(bob, "GET", "/api/v1/me").status, 401);
}

TEST_F(DashboardApiTest, QueryParametersAreCheckedAndExplained) {
  const auto bob = login("bob", "bob-password-1234");
  for (const char* target : {"/api/v1/findings?severity=urgent", "/api/v1/findings?sort=random", "/api/v1/findings?limit=ten",
                             "/api/v1/findings?scope=some", "/api/v1/findings?run=-4", "/api/v1/findings?q=%zz"}) {
    const auto response = as(bob, "GET", target);
    EXPECT_EQ(response.status, 400) << target;
    EXPECT_FALSE(json::parse(response.body).value("message", "").empty()) << target;
  }
  EXPECT_EQ(as(bob, "GET", "/api/v1/findings/999999").status, 404);
  EXPECT_EQ(as(bob, "GET", "/api/v1/runs/abc").status, 404);
  EXPECT_EQ(as(bob, "GET", "/api/v1/nothing").status, 404);
  EXPECT_EQ(as(bob, "DELETE", "/api/v1/summary").status, 405);
  // Filters combine: text search is case-insensitive, atlas matches sub-techniques.
  EXPECT_EQ(json::parse(as(bob, "GET", "/api/v1/findings?q=PICKLE").body)["total"], 2);
  EXPECT_EQ(json::parse(as(bob, "GET", "/api/v1/findings?atlas=AML.T0011").body)["total"], 1);
  EXPECT_EQ(json::parse(as(bob, "GET", "/api/v1/findings?severity=high,critical&asset=fraud-model").body)["total"], 3);
}

TEST_F(DashboardApiTest, CoverageAndChartsComeFromTheStoredRuns) {
  const auto bob = login("bob", "bob-password-1234");
  const auto coverage = json::parse(as(bob, "GET", "/api/v1/atlas/coverage").body);
  ASSERT_TRUE(coverage["tactics"].is_array());
  ASSERT_FALSE(coverage["tactics"].empty());
  std::map<std::string, std::size_t> by_technique;
  for (const auto& tactic : coverage["tactics"])
    for (const auto& t : tactic["techniques"]) by_technique[t["id"]] = std::max(by_technique[t["id"]], t["findings"].get<std::size_t>());
  EXPECT_EQ(by_technique["AML.T0011"], 1u);  // its sub-technique AML.T0011.000
  EXPECT_EQ(by_technique["AML.T0010"], 1u);
  EXPECT_EQ(by_technique["AML.T0043"], 1u);
  const auto robustness = json::parse(as(bob, "GET", "/api/v1/charts/robustness").body);
  ASSERT_EQ(robustness["points"].size(), 2u);
  EXPECT_DOUBLE_EQ(robustness["points"][0]["epsilon"].get<double>(), 0.1);
  EXPECT_DOUBLE_EQ(robustness["points"][1]["accuracy"].get<double>(), 0.1);
  EXPECT_DOUBLE_EQ(robustness["points"][0]["clean_accuracy"].get<double>(), 0.9);
  const auto metrics = json::parse(as(bob, "GET", "/api/v1/gateway/metrics").body);
  EXPECT_TRUE(metrics["configured"].get<bool>());
  ASSERT_EQ(metrics["series"].size(), 2u);
  EXPECT_EQ(metrics["series"][0]["name"], "aegis_requests_total");
  EXPECT_EQ(metrics["series"][0]["labels"]["route"], "chat");
  EXPECT_DOUBLE_EQ(metrics["series"][0]["value"].get<double>(), 42);
}

TEST_F(DashboardApiTest, TheAlertWebhookNeedsItsTokenAndFeedsTheAlertList) {
  const std::string alert = R"({"rule_id":"gateway.extraction-suspected","severity":"high","client":"10.0.0.7"})";
  EXPECT_EQ(call("POST", "/api/v1/gateway/alerts", alert).status, 401);
  EXPECT_EQ(call("POST", "/api/v1/gateway/alerts", alert, {{"authorization", "Bearer wrong-token-wrong-token"}}).status, 401);
  EXPECT_EQ(call("POST", "/api/v1/gateway/alerts", alert, {{"authorization", "Bearer 0123456789abcdef0123"}}).status, 202);
  const auto vera = login("vera", "vera-password-123");
  const auto alerts = json::parse(as(vera, "GET", "/api/v1/gateway/alerts").body);
  ASSERT_EQ(alerts["items"].size(), 1u);
  EXPECT_EQ(alerts["items"][0]["rule_id"], "gateway.extraction-suspected");
  EXPECT_TRUE(alerts["items"][0].contains("received_at"));
}

TEST_F(DashboardApiTest, StaticFilesStayInsideTheWebRootAndCarrySecurityHeaders) {
  const auto index = call("GET", "/");
  EXPECT_EQ(index.status, 200);
  EXPECT_EQ(index.body, "<!doctype html><title>Aegis</title>");
  EXPECT_EQ(index.content_type, "text/html; charset=utf-8");
  EXPECT_NE(header_of(index, "content-security-policy").find("default-src 'self'"), std::string::npos);
  EXPECT_EQ(header_of(index, "x-content-type-options"), "nosniff");
  EXPECT_EQ(header_of(index, "x-frame-options"), "DENY");
  EXPECT_EQ(call("GET", "/app.js").content_type, "text/javascript; charset=utf-8");
  EXPECT_EQ(call("GET", "/findings").body, index.body);  // an app route gets the app
  for (const char* target : {"/../secret.txt", "/%2e%2e/secret.txt", "/.hidden.txt", "/a/..%2f..%2fsecret.txt", "/missing.js"})
    EXPECT_EQ(call("GET", target).status, 404) << target;
  EXPECT_EQ(call("POST", "/").status, 405);
  const auto openapi = call("GET", "/api/v1/openapi.json");
  ASSERT_EQ(openapi.status, 200);
  const auto doc = json::parse(openapi.body);
  EXPECT_EQ(doc["openapi"], "3.1.0");
  for (const char* route : {"/login", "/findings", "/findings/{id}/status", "/atlas/coverage", "/users", "/audit", "/gateway/alerts"})
    EXPECT_TRUE(doc["paths"].contains(route)) << route;
  EXPECT_EQ(header_of(openapi, "cache-control"), "no-store");
}

TEST(DashboardApiParsing, PercentDecodingAndPrometheusText) {
  EXPECT_EQ(percent_decode("a%20b+c", true), "a b c");
  EXPECT_EQ(percent_decode("a%20b+c", false), "a b+c");
  EXPECT_FALSE(percent_decode("%", true));
  EXPECT_FALSE(percent_decode("%4", true));
  EXPECT_FALSE(percent_decode("%g0", true));
  const auto series = parse_prometheus_text(
      "# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"uote\"} 3.5\nbad line here\ny NaN\n{nolabel} 4\nz 1e3 1700000000\n");
  ASSERT_EQ(series.size(), 3u);
  EXPECT_EQ(series[0]["labels"]["b"], "q\"uote");
  EXPECT_DOUBLE_EQ(series[0]["value"].get<double>(), 3.5);
  EXPECT_EQ(series[1]["value"], "NaN");
  EXPECT_DOUBLE_EQ(series[2]["value"].get<double>(), 1000);
}

TEST_F(DashboardApiTest, TheHttpServerAnswersOverLoopbackWithKeepAliveAndRefusesHugeBodies) {
  HttpServerOptions options;
  options.port = 0;
  options.threads = 2;
  options.max_body_bytes = 4096;
  options.stop_on_signals = false;
  HttpServer server(options, [this](const ApiRequest& request) { return api_->handle(request); });
  std::thread runner([&] { server.run(); });
  namespace beast = boost::beast;
  namespace http = beast::http;
  boost::asio::io_context io;
  boost::asio::ip::tcp::socket socket(io);
  socket.connect({boost::asio::ip::make_address("127.0.0.1"), server.port()});
  beast::flat_buffer buffer;
  // Two requests on one connection.
  for (int i = 0; i < 2; ++i) {
    http::request<http::string_body> request(http::verb::post, "/api/v1/login", 11);
    request.set(http::field::host, "127.0.0.1");
    request.set(http::field::content_type, "application/json");
    request.body() = R"({"username":"vera","password":"vera-password-123"})";
    request.prepare_payload();
    http::write(socket, request);
    http::response<http::string_body> response;
    http::read(socket, buffer, response);
    EXPECT_EQ(response.result_int(), 200u) << response.body();
    EXPECT_NE(std::string(response[http::field::set_cookie]).find("HttpOnly"), std::string::npos);
    EXPECT_EQ(std::string(response["x-frame-options"]), "DENY");
  }
  http::request<http::string_body> huge(http::verb::post, "/api/v1/login", 11);
  huge.set(http::field::host, "127.0.0.1");
  huge.set(http::field::content_type, "application/json");
  huge.body() = std::string(10000, 'x');
  huge.prepare_payload();
  http::write(socket, huge);
  http::response<http::string_body> refused;
  http::read(socket, buffer, refused);
  EXPECT_EQ(refused.result_int(), 413u);
  server.stop();
  runner.join();
}

}  // namespace
}  // namespace aegis::web
