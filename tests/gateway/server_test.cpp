// The gateway server against a real (misbehaving) upstream on loopback: proxying, keep-alive,
// built-in endpoints, the filter chain (synchronous and asynchronous), streams, reloads and
// every way a client or an upstream can go wrong.
#include "aegis/gateway/server.h"

#include <gtest/gtest.h>

#include <future>
#include <nlohmann/json.hpp>
#include <thread>

#include "aegis/core/error.h"
#include "gateway/test_upstream.h"

namespace aegis::gateway {
namespace {

using test::TestClient;
using test::TestUpstream;

std::string base_config(int upstream_port, const std::string& extra_routes = {}, const std::string& limits = {}, int threads = 2) {
  return "listen: 127.0.0.1:0\nthreads: " + std::to_string(threads) + "\naccess_log: 'off'\naudit: false\n" + limits +
         "upstreams:\n  model: {url: http://127.0.0.1:" + std::to_string(upstream_port) + ", timeout_ms: 500}\n"
         "routes:\n"
         "  - name: predict\n    path: /v1/predict\n    methods: [POST]\n    upstream: model\n    upstream_path: /predict\n    api: classifier\n"
         "  - name: any\n    path: /raw/*\n    upstream: model\n" +
         extra_routes;
}

GatewayConfig config_from(const std::string& yaml) { return parse_gateway_config(yaml, "gateway.yaml", ""); }

// Records the order filters ran in and can reject or rewrite.
class ProbeFilter : public Filter {
 public:
  ProbeFilter(std::string name, std::vector<std::string>* trail, bool reject = false)
      : Filter(std::move(name)), trail_(trail), reject_(reject) {}
  FilterResult on_request(Exchange& exchange) override {
    trail_->push_back(name());
    exchange.verdicts.push_back({name(), reject_ ? "reject" : "allow", ""});
    if (reject_) return FilterResult::reject(429, "probe_says_no", "try later", {{"retry-after", "7"}});
    return FilterResult::pass();
  }
  FilterResult on_response(Exchange& exchange) override {
    auto* json = exchange.response_json_mutable();
    if (json && json->contains("probabilities")) (*json)["seen_by"] = name();
    exchange.response.set_header("x-probe", name());
    return FilterResult::pass();
  }
  void on_response_event(Exchange&, std::string& event) override {
    const auto at = event.find("jane.doe@example.com");
    if (at != std::string::npos) event.replace(at, 20, "<EMAIL>");
  }

 private:
  std::vector<std::string>* trail_;
  bool reject_;
};

// Answers from another thread later, as the Redis-backed limiter does.
class LaterFilter : public Filter {
 public:
  explicit LaterFilter(std::vector<std::string>* trail) : Filter("later"), trail_(trail) {}
  bool asynchronous() const override { return true; }
  void on_request_async(Exchange&, FilterDone done) override {
    trail_->push_back("later");
    std::thread([done = std::move(done)] {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      done(FilterResult::pass());
    }).detach();
  }

 private:
  std::vector<std::string>* trail_;
};

TEST(GatewayConfig, ErrorsNameTheLine) {
  const std::string yaml = "listen: 127.0.0.1:0\nupstreams:\n  model: {url: http://127.0.0.1:9}\nroutes:\n  - path: /p\n    upstream: nosuch\n";
  try {
    config_from(yaml);
    FAIL() << "a route naming a missing upstream was accepted";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("gateway.yaml:6:"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nosuch"), std::string::npos) << e.what();
  }
  try {
    config_from("listen: 127.0.0.1:0\nlimts: {}\n");
    FAIL() << "a misspelt key was accepted";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("gateway.yaml:2:1: unknown key 'limts'"), std::string::npos) << e.what();
  }
  try {
    config_from(base_config(9, "  - path: /x\n    upstream: model\n    filters:\n      - no_such_filter: {}\n"));
    FAIL() << "an unknown filter was accepted";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("gateway.yaml:20:"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no_such_filter"), std::string::npos) << e.what();
  }
  EXPECT_THROW(config_from("listen: [unclosed\n"), core::Error);
  EXPECT_THROW(config_from("upstreams:\n  m: {url: ftp://x}\nroutes: [{path: /a, upstream: m}]\n"), core::Error);
  EXPECT_THROW(config_from("upstreams:\n  m: {url: http://x:99999}\nroutes: [{path: /a, upstream: m}]\n"), core::Error);
}

TEST(GatewayConfig, RoutesMatchExactBeforeLongestPrefix) {
  auto config = config_from(base_config(9, "  - name: deeper\n    path: /raw/deep/*\n    upstream: model\n"));
  EXPECT_EQ(config.find_route("/v1/predict")->info.name, "predict");
  EXPECT_EQ(config.find_route("/v1/predict/x"), nullptr);
  EXPECT_EQ(config.find_route("/raw/a")->info.name, "any");
  EXPECT_EQ(config.find_route("/raw/deep/a")->info.name, "deeper");
  EXPECT_EQ(config.find_route("/other"), nullptr);
}

TEST(GatewayServer, ProxiesWithKeepAliveAndRewrites) {
  TestUpstream upstream;
  GatewayServer server(config_from(base_config(upstream.port())), {});
  server.start();
  TestClient client(server.port());
  ASSERT_TRUE(client.connected());
  for (int i = 0; i < 20; ++i) {
    auto answer = client.request("POST", "/v1/predict?v=1", R"({"inputs": [[0.1, 0.2], [0.3, 0.4]]})", {{"X-Request-Id", "req-" + std::to_string(i)}});
    ASSERT_TRUE(answer.ok);
    EXPECT_EQ(answer.status, 200);
    auto body = nlohmann::json::parse(answer.body);
    EXPECT_EQ(body["probabilities"].size(), 2u);
    EXPECT_EQ(answer.headers["x-request-id"], "req-" + std::to_string(i));
    EXPECT_EQ(answer.headers["x-upstream"], "test");
  }
  const auto seen = upstream.last();
  EXPECT_EQ(seen.target, "/predict?v=1");
  EXPECT_EQ(seen.headers.at("x-forwarded-for"), "127.0.0.1");
  EXPECT_EQ(seen.headers.at("x-request-id"), "req-19");
  EXPECT_EQ(upstream.requests(), 20);
  EXPECT_LE(upstream.connections(), 2) << "the upstream connection was not kept alive";
}

TEST(GatewayServer, BuiltInEndpointsAndErrors) {
  TestUpstream upstream;
  GatewayServer server(config_from(base_config(upstream.port())), {});
  server.start();
  TestClient client(server.port());
  auto health = client.request("GET", "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(client.request("GET", "/readyz").status, 200);
  auto missing = client.request("GET", "/nowhere");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(nlohmann::json::parse(missing.body)["error"]["code"], "no_route");
  auto wrong_method = client.request("GET", "/v1/predict");
  EXPECT_EQ(wrong_method.status, 405);
  EXPECT_EQ(wrong_method.headers["allow"], "POST");
  client.request("POST", "/v1/predict", R"({"input": [1]})");
  auto metrics = client.request("GET", "/metrics");
  ASSERT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.headers["content-type"].find("text/plain; version=0.0.4"), std::string::npos);
  EXPECT_NE(metrics.body.find("aegis_gateway_responses_total{route=\"predict\",code=\"2xx\"} 1"), std::string::npos) << metrics.body;
  EXPECT_NE(metrics.body.find("aegis_gateway_not_found_total 1"), std::string::npos);
  EXPECT_NE(metrics.body.find("aegis_gateway_request_duration_seconds_count{route=\"predict\"} 2"), std::string::npos);
}

TEST(GatewayServer, UpstreamDownSlowOrGarbageGetsJsonErrors) {
  TestUpstream upstream;
  const std::string routes =
      "  - {name: slow, path: /slow, upstream: model}\n  - {name: garbage, path: /garbage, upstream: model}\n"
      "  - {name: hangup, path: /hangup, upstream: model}\n  - {name: dead, path: /dead, upstream: dead}\n";
  auto yaml = base_config(upstream.port(), routes);
  yaml.replace(yaml.find("routes:"), 7, "  dead: {url: http://127.0.0.1:1, connect_timeout_ms: 500}\nroutes:");
  GatewayServer server(config_from(yaml), {});
  server.start();
  TestClient client(server.port());
  auto slow = client.request("POST", "/slow", "{}");
  EXPECT_EQ(slow.status, 504);
  EXPECT_EQ(nlohmann::json::parse(slow.body)["error"]["code"], "upstream_timeout");
  auto garbage = client.request("POST", "/garbage", "{}");
  EXPECT_EQ(garbage.status, 502);
  EXPECT_EQ(nlohmann::json::parse(garbage.body)["error"]["code"], "bad_upstream_response");
  auto hangup = client.request("POST", "/hangup", "{}");
  EXPECT_EQ(hangup.status, 502);
  auto dead = client.request("POST", "/dead", "{}");
  EXPECT_EQ(dead.status, 502);
  EXPECT_EQ(nlohmann::json::parse(dead.body)["error"]["code"], "upstream_unreachable");
  // and the same connection still works
  EXPECT_EQ(client.request("POST", "/v1/predict", R"({"input": [1]})").status, 200);
  EXPECT_NE(server.metrics_text().find("aegis_gateway_upstream_errors_total{route=\"slow\"} 1"), std::string::npos);
}

TEST(GatewayServer, HostileClientsAreBounded) {
  TestUpstream upstream;
  GatewayServer server(config_from(base_config(upstream.port(), {},
                                               "limits: {max_body_bytes: 1024, max_header_bytes: 2048, header_timeout_ms: 300}\n")),
                       {});
  server.start();
  {
    TestClient client(server.port());
    auto big = client.request("POST", "/v1/predict", std::string(4096, 'x'));
    EXPECT_EQ(big.status, 413);
  }
  {
    TestClient client(server.port());
    auto fat = client.request("GET", "/healthz", {}, {{"X-Fill", std::string(4096, 'y')}});
    EXPECT_EQ(fat.status, 431);
  }
  {
    TestClient client(server.port());
    client.send_raw("THIS IS NOT HTTP AT ALL\r\n\r\n");
    auto answer = client.read_answer();
    EXPECT_EQ(answer.status, 400);
  }
  {
    // slow loris: half a request line, then silence; the gateway hangs up after header_timeout_ms
    TestClient client(server.port());
    client.send_raw("POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Le");
    EXPECT_TRUE(client.closed_by_server());
  }
  {
    // a body that never finishes is cut off the same way
    TestClient client(server.port());
    client.send_raw("POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"in");
    EXPECT_TRUE(client.closed_by_server());
  }
  TestClient fine(server.port());
  EXPECT_EQ(fine.request("GET", "/healthz").status, 200);
  // Beast closes a timed-out socket before the handler that counts the timeout runs: the client
  // may see the close first, so the count is awaited (bounded).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (server.metrics_text().find("aegis_gateway_timeouts_total 2") == std::string::npos &&
         std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_NE(server.metrics_text().find("aegis_gateway_timeouts_total 2"), std::string::npos) << server.metrics_text();
}

TEST(GatewayServer, FiltersRunInOrderAndCanRejectOrRewrite) {
  TestUpstream upstream;
  auto config = config_from(base_config(upstream.port()));
  std::vector<std::string> trail;
  config.routes[0].filters.push_back(std::make_shared<ProbeFilter>("first", &trail));
  config.routes[0].filters.push_back(std::make_shared<LaterFilter>(&trail));
  config.routes[0].filters.push_back(std::make_shared<ProbeFilter>("third", &trail));
  config.routes[1].filters.push_back(std::make_shared<ProbeFilter>("bouncer", &trail, /*reject=*/true));
  GatewayServer server(std::move(config), {});
  server.start();
  TestClient client(server.port());
  auto answer = client.request("POST", "/v1/predict", R"({"input": [1, 2]})");
  ASSERT_EQ(answer.status, 200);
  EXPECT_EQ(trail, (std::vector<std::string>{"first", "later", "third"}));
  // response filters edit the parsed JSON; the server re-serialises it once
  EXPECT_EQ(nlohmann::json::parse(answer.body)["seen_by"], "third");
  EXPECT_EQ(answer.headers["x-probe"], "third");
  trail.clear();
  auto rejected = client.request("POST", "/raw/x", "{}");
  EXPECT_EQ(rejected.status, 429);
  EXPECT_EQ(rejected.headers["retry-after"], "7");
  EXPECT_EQ(nlohmann::json::parse(rejected.body)["error"]["code"], "probe_says_no");
  EXPECT_EQ(upstream.requests(), 1) << "a rejected request reached the upstream";
  const auto metrics = server.metrics_text();
  EXPECT_NE(metrics.find("aegis_filter_rejected_total{route=\"any\",filter=\"bouncer\",position=\"1\"} 1"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("aegis_filter_requests_total{route=\"predict\",filter=\"later\",position=\"2\"} 1"), std::string::npos);
}

TEST(GatewayServer, StreamsEventsWithoutBufferingTheWholeStream) {
  TestUpstream upstream;
  auto config = config_from(base_config(upstream.port(), "  - {name: chat, path: /sse, upstream: model, api: openai-chat}\n"));
  std::vector<std::string> trail;
  config.routes[2].filters.push_back(std::make_shared<ProbeFilter>("redactor", &trail));
  GatewayServer server(std::move(config), {});
  server.start();
  TestClient client(server.port());
  ASSERT_TRUE(client.send_raw("POST /sse HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"));
  auto head = client.read_head();
  ASSERT_TRUE(head.ok);
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.headers["transfer-encoding"], "chunked");
  // the first event arrives while the upstream is still holding the rest back
  auto first = client.read_chunked_until("Hello");
  EXPECT_NE(first.find("Hello"), std::string::npos);
  EXPECT_EQ(first.find("[DONE]"), std::string::npos);
  upstream.release_stream();
  auto all = client.read_chunked_until("[DONE]");
  EXPECT_NE(all.find("<EMAIL>"), std::string::npos) << all;
  EXPECT_EQ(all.find("jane.doe"), std::string::npos) << "an event split across chunks escaped the filter: " << all;
  client.finish_chunked();
  // the connection stays usable after the stream
  EXPECT_EQ(client.request("GET", "/healthz").status, 200);
}

TEST(GatewayServer, AuditGetsEveryDecisionBeforeTheAnswer) {
  TestUpstream upstream;
  auto config = config_from(base_config(upstream.port()));
  std::vector<std::string> trail;
  config.routes[1].filters.push_back(std::make_shared<ProbeFilter>("bouncer", &trail, true));
  std::mutex mutex;
  std::vector<DecisionRecord> records;
  std::atomic<bool> refuse{false};
  GatewayServices services;
  services.audit = [&](DecisionRecord record, std::function<void(bool)> durable) {
    {
      std::lock_guard lock(mutex);
      records.push_back(record);
    }
    durable(!refuse.load());
  };
  GatewayServer server(std::move(config), services);
  server.start();
  TestClient client(server.port());
  ASSERT_EQ(client.request("POST", "/v1/predict", R"({"input": [1]})").status, 200);
  ASSERT_EQ(client.request("POST", "/raw/a", "secret body").status, 429);
  {
    std::lock_guard lock(mutex);
    ASSERT_EQ(records.size(), 2u);
    EXPECT_EQ(records[0].route, "predict");
    EXPECT_EQ(records[0].status, 200);
    EXPECT_EQ(records[0].request_sha256.size(), 64u);
    EXPECT_TRUE(records[0].request_body.empty()) << "bodies are recorded only when configured";
    EXPECT_EQ(records[1].status, 429);
    ASSERT_FALSE(records[1].verdicts.empty());
    EXPECT_EQ(records[1].verdicts[0].filter, "bouncer");
  }
  refuse = true;
  auto refused = client.request("POST", "/v1/predict", R"({"input": [1]})");
  EXPECT_EQ(refused.status, 503) << "an answer that could not be audited went out";
  EXPECT_EQ(nlohmann::json::parse(refused.body)["error"]["code"], "audit_unavailable");
}

TEST(GatewayServer, ReloadSwapsRoutesWithoutDroppingConnections) {
  TestUpstream upstream;
  GatewayServer server(config_from(base_config(upstream.port())), {});
  server.start();
  TestClient client(server.port());
  ASSERT_EQ(client.request("POST", "/v1/predict", R"({"input": [1]})").status, 200);
  EXPECT_EQ(client.request("POST", "/v2/classify", "{}").status, 404);
  server.reload(config_from(base_config(upstream.port(), "  - {name: v2, path: /v2/classify, upstream: model}\n")));
  // the same keep-alive connection sees the new route
  EXPECT_EQ(client.request("POST", "/v2/classify", R"({"input": [1]})").status, 200);
  EXPECT_EQ(client.request("POST", "/v1/predict", R"({"input": [1]})").status, 200);
  EXPECT_EQ(server.reloads(), 1u);
  EXPECT_NE(server.metrics_text().find("aegis_gateway_config_generation 2"), std::string::npos);
}

TEST(GatewayServer, ManyClientsAtOnceOnOneThread) {
  // one I/O thread runs without strands: the same traffic must come through whole
  TestUpstream upstream;
  GatewayServer server(config_from(base_config(upstream.port(), {}, {}, 1)), {});
  server.start();
  std::vector<std::future<int>> results;
  for (int t = 0; t < 8; ++t)
    results.push_back(std::async(std::launch::async, [&] {
      int ok = 0;
      TestClient client(server.port());
      for (int i = 0; i < 50; ++i) ok += client.request("POST", "/v1/predict", R"({"inputs": [[1,2],[3,4]]})").status == 200;
      return ok;
    }));
  int total = 0;
  for (auto& r : results) total += r.get();
  EXPECT_EQ(total, 400);
}

}  // namespace
}  // namespace aegis::gateway
