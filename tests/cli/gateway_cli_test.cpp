// `aegis gateway` as a user runs it: a separate process with a YAML file, a real upstream, the audit
// store on disk. Config errors, SIGHUP reloads under open connections, kill -9 under load (no
// acknowledged decision lost), and 10,000 client connections held at once.
#include <gtest/gtest.h>
#include <signal.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "aegis/store/audit_log.h"
#include "gateway/test_upstream.h"
#include "test_support.h"

namespace aegis::test {
namespace {

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// A gateway process with stderr to a file; the port comes from its "listening on" line.
class GatewayProcess {
 public:
  GatewayProcess(const std::filesystem::path& config, const std::filesystem::path& log) : log_(log) {
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 2);
      const int null = ::open("/dev/null", O_WRONLY);
      ::dup2(null, 1);
      ::execl(AEGIS_CLI_PATH, AEGIS_CLI_PATH, "gateway", "--config", config.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    const std::regex listening("listening on ([0-9]+)");
    for (int i = 0; i < 600 && port_ == 0; ++i) {
      std::smatch m;
      const auto text = slurp(log_);
      if (std::regex_search(text, m, listening)) port_ = std::stoi(m[1]);
      else std::this_thread::sleep_for(std::chrono::milliseconds(50));
      int status = 0;
      if (port_ == 0 && ::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
    }
  }
  ~GatewayProcess() { stop(SIGTERM); }
  int port() const { return port_; }
  std::string log() const { return slurp(log_); }
  void signal(int sig) { ::kill(pid_, sig); }
  int stop(int sig) {
    if (pid_ <= 0) return -1;
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return status;
  }

 private:
  std::filesystem::path log_;
  pid_t pid_ = -1;
  int port_ = 0;
};

std::string config_text(int upstream_port, const std::filesystem::path& store, const std::string& extra_routes = {}) {
  return "listen: 127.0.0.1:0\nthreads: 2\naccess_log: 'off'\n"
         "audit: {store: " + store.string() + ", checkpoint_every: 500}\n"
         "upstreams:\n  model: {url: http://127.0.0.1:" + std::to_string(upstream_port) + "}\n"
         "routes:\n  - name: predict\n    path: /v1/predict\n    methods: [POST]\n    upstream: model\n"
         "    upstream_path: /predict\n    api: classifier\n" + extra_routes;
}

void write(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path);
  out << text;
}

TEST(GatewayCli, RefusesABadConfigNamingTheLine) {
  TempDir dir;
  write(dir.path / "gateway.yaml",
        "listen: 127.0.0.1:0\nupstreams:\n  model: {url: http://127.0.0.1:9}\nroutes:\n  - path: /p\n    upstream: model\n"
        "    filters:\n      - rate_limit: {rate: lots}\n");
  auto result = run_cli({"gateway", "--config", (dir.path / "gateway.yaml").string(), "--check"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find("gateway.yaml:8:"), std::string::npos) << result.err;
  write(dir.path / "good.yaml", "listen: 127.0.0.1:0\naudit: false\nupstreams:\n  model: {url: http://127.0.0.1:9}\nroutes:\n  - {path: /p, upstream: model}\n");
  result = run_cli({"gateway", "--config", (dir.path / "good.yaml").string(), "--check"});
  EXPECT_EQ(result.exit_code, 0) << result.err;
  EXPECT_NE(result.out.find("valid"), std::string::npos);
}

TEST(GatewayCli, HashKeyPrintsWhatTheApiKeyFilterStores) {
  setenv("AEGIS_API_KEY", "alice-key", 1);
  auto result = run_cli({"gateway", "hash-key"});
  unsetenv("AEGIS_API_KEY");
  EXPECT_EQ(result.exit_code, 0) << result.err;
  // sha256("alice-key"), as `printf alice-key | sha256sum` prints it
  EXPECT_EQ(result.out, "sha256:72ee9d4355ccb9d3a4c9dbf37382e38e75c1b1a225b5bd1f729ee91bbda30c20\n");
}

TEST(GatewayCli, SighupReloadsWithoutDroppingConnections) {
  TempDir dir;
  TestUpstream upstream;
  const auto config = dir.path / "gateway.yaml";
  write(config, config_text(upstream.port(), dir.path / "store.db"));
  GatewayProcess gateway(config, dir.path / "gateway.log");
  ASSERT_NE(gateway.port(), 0) << gateway.log();
  TestClient client(gateway.port());
  ASSERT_EQ(client.request("POST", "/v1/predict", R"({"input": [1]})").status, 200);
  EXPECT_EQ(client.request("POST", "/v2/predict", R"({"input": [1]})").status, 404);
  // a broken config is refused and the old one keeps serving
  write(config, "routes: [oops\n");
  gateway.signal(SIGHUP);
  for (int i = 0; i < 100 && gateway.log().find("reload refused") == std::string::npos; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_NE(gateway.log().find("reload refused"), std::string::npos) << gateway.log();
  EXPECT_EQ(client.request("POST", "/v1/predict", R"({"input": [1]})").status, 200);
  write(config, config_text(upstream.port(), dir.path / "store.db",
                            "  - {name: v2, path: /v2/predict, upstream: model, upstream_path: /predict}\n"));
  gateway.signal(SIGHUP);
  int status = 404;
  for (int i = 0; i < 100 && status == 404; ++i) {
    status = client.request("POST", "/v2/predict", R"({"input": [1]})").status;
    if (status == 404) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_EQ(status, 200) << "the same keep-alive connection did not see the reloaded route";
  EXPECT_EQ(gateway.stop(SIGTERM), 0);
}

TEST(GatewayCli, KillNineUnderLoadLosesNoAcknowledgedDecision) {
  TempDir dir;
  TestUpstream upstream;
  const auto config = dir.path / "gateway.yaml";
  const auto store = dir.path / "store.db";
  write(config, config_text(upstream.port(), store));
  GatewayProcess gateway(config, dir.path / "gateway.log");
  ASSERT_NE(gateway.port(), 0) << gateway.log();
  std::mutex mutex;
  std::set<std::string> acknowledged;
  std::atomic<bool> go{true};
  std::vector<std::thread> clients;
  for (int t = 0; t < 4; ++t)
    clients.emplace_back([&, t] {
      TestClient client(gateway.port(), 5000);
      for (int i = 0; go; ++i) {
        const std::string id = "c" + std::to_string(t) + "-" + std::to_string(i);
        auto answer = client.request("POST", "/v1/predict", R"({"input": [1, 2]})", {{"X-Request-Id", id}});
        if (!answer.ok) break;
        if (answer.status == 200) {
          std::lock_guard lock(mutex);
          acknowledged.insert(id);
        }
      }
    });
  while (true) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::lock_guard lock(mutex);
    if (acknowledged.size() >= 1500) break;
  }
  gateway.stop(SIGKILL);
  go = false;
  for (auto& c : clients) c.join();
  ASSERT_GE(acknowledged.size(), 1500u);
  auto verify = run_cli({"audit", "verify", store.string(), "--format", "json"});
  EXPECT_EQ(verify.exit_code, 0) << verify.out << verify.err;
  const auto records = store::read_audit_tail(store, 1'000'000);
  std::set<std::string> logged;
  for (const auto& r : records) logged.insert(r.request_id);
  std::size_t missing = 0;
  for (const auto& id : acknowledged) missing += !logged.count(id);
  EXPECT_EQ(missing, 0u) << missing << " of " << acknowledged.size() << " acknowledged decisions are not in the audit log";
}

TEST(GatewayCli, HoldsTenThousandConnections) {
  rlimit limit{};
  getrlimit(RLIMIT_NOFILE, &limit);
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
  if (limit.rlim_cur < 10'100) GTEST_SKIP() << "this machine allows only " << limit.rlim_cur << " open files per process";
  TempDir dir;
  TestUpstream upstream;
  write(dir.path / "gateway.yaml", config_text(upstream.port(), dir.path / "store.db"));
  GatewayProcess gateway(dir.path / "gateway.yaml", dir.path / "gateway.log");
  ASSERT_NE(gateway.port(), 0) << gateway.log();
  constexpr int kConnections = 10'000;
  std::vector<std::unique_ptr<TestClient>> clients;
  clients.reserve(kConnections);
  for (int i = 0; i < kConnections; ++i) {
    clients.push_back(std::make_unique<TestClient>(gateway.port(), 30'000));
    ASSERT_TRUE(clients.back()->connected()) << "connection " << i << " failed";
  }
  for (auto& c : clients) ASSERT_TRUE(c->send_raw("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"));
  int answered = 0;
  for (auto& c : clients) answered += c->read_answer().status == 200;
  EXPECT_EQ(answered, kConnections);
  // all of them are still open, and the gateway says so
  TestClient probe(gateway.port());
  auto metrics = probe.request("GET", "/metrics");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(metrics.body, m, std::regex("aegis_gateway_connections_open ([0-9]+)"))) << metrics.body;
  EXPECT_GE(std::stoi(m[1]), kConnections);
  // and a model request still goes through
  EXPECT_EQ(probe.request("POST", "/v1/predict", R"({"input": [1]})").status, 200);
}

}  // namespace
}  // namespace aegis::test
