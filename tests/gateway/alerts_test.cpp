// Alert delivery against a real HTTP receiver on loopback: JSON bodies and headers, the log line,
// the per-webhook rate limit and its "suppressed K alerts" summary, de-duplication within the
// cooldown, a dead webhook and a hanging one that never hold up the caller, and config errors.
#include "aegis/gateway/alerts.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <atomic>
#include <condition_variable>
#include <cstdlib>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "aegis/core/error.h"

namespace aegis::test {
namespace {

using gateway::Alert;
using gateway::AlertConfig;
using gateway::AlertDispatcher;
using json = nlohmann::json;

struct ReceivedPost {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;  // lower-case names
  json body;
};

// A webhook endpoint: one connection at a time, reads a Content-Length request, records it and
// answers `status`, or keeps the client waiting while held.
class WebhookReceiver {
 public:
  explicit WebhookReceiver(int status = 200) : status_(status) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0 || ::listen(listen_fd_, 64) != 0)
      throw std::runtime_error("cannot listen on loopback");
    socklen_t size = sizeof address;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&address), &size);
    port_ = ntohs(address.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~WebhookReceiver() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
      held_ = false;
    }
    changed_.notify_all();
    ::shutdown(listen_fd_, SHUT_RDWR);
    thread_.join();
    ::close(listen_fd_);
  }
  std::string url(const std::string& path = "/hook") const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  void hold() {
    std::lock_guard lock(mutex_);
    held_ = true;
  }
  void release() {
    {
      std::lock_guard lock(mutex_);
      held_ = false;
    }
    changed_.notify_all();
  }
  // Blocks until `count` requests have arrived (read in full, answered or not).
  void wait_for(std::size_t count) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return posts_.size() >= count; });
  }
  std::vector<ReceivedPost> posts() const {
    std::lock_guard lock(mutex_);
    return posts_;
  }

 private:
  void serve() {
    for (;;) {
      const int fd = ::accept(listen_fd_, nullptr, nullptr);
      if (fd < 0) return;
      timeval timeout{5, 0};
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
      ReceivedPost post;
      if (read_request(fd, post)) {
        std::unique_lock lock(mutex_);
        posts_.push_back(std::move(post));
        changed_.notify_all();
        changed_.wait(lock, [&] { return !held_; });
        lock.unlock();
        const std::string answer = "HTTP/1.1 " + std::to_string(status_) + " Whatever\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok";
        (void)!::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL);
      }
      ::close(fd);
    }
  }
  static bool read_request(int fd, ReceivedPost& post) {
    std::string data;
    char buffer[4096];
    std::size_t head_end = std::string::npos;
    while ((head_end = data.find("\r\n\r\n")) == std::string::npos) {
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) return false;
      data.append(buffer, static_cast<std::size_t>(n));
    }
    std::size_t line_end = data.find("\r\n");
    const std::string request_line = data.substr(0, line_end);
    post.method = request_line.substr(0, request_line.find(' '));
    post.target = request_line.substr(request_line.find(' ') + 1, request_line.rfind(' ') - request_line.find(' ') - 1);
    std::size_t length = 0;
    for (std::size_t at = line_end + 2; at < head_end;) {
      const std::size_t end = data.find("\r\n", at);
      const std::string line = data.substr(at, end - at);
      const std::size_t colon = line.find(':');
      std::string name = line.substr(0, colon);
      for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      std::string value = line.substr(line.find_first_not_of(' ', colon + 1));
      if (name == "content-length") length = std::stoul(value);
      post.headers[name] = value;
      at = end + 2;
    }
    while (data.size() < head_end + 4 + length) {
      const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
      if (n <= 0) return false;
      data.append(buffer, static_cast<std::size_t>(n));
    }
    post.body = json::parse(data.substr(head_end + 4, length), nullptr, false);
    return true;
  }

  int status_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::vector<ReceivedPost> posts_;
  bool held_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

// A port on which nothing listens: connections to it are refused.
std::uint16_t closed_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address);
  socklen_t size = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &size);
  ::close(fd);
  return ntohs(address.sin_port);
}

// A clock the test moves by hand, so that rate limits and cooldowns are checked without sleeping.
struct ManualClock {
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  std::atomic<std::int64_t> offset_ms{0};
  AlertDispatcher::Clock function() {
    return [this] { return start + std::chrono::milliseconds(offset_ms.load()); };
  }
  void advance(std::chrono::seconds by) { offset_ms += by.count() * 1000; }
};

struct LogLines {
  std::mutex mutex;
  std::vector<std::string> lines;
  AlertDispatcher::LogSink sink() {
    return [this](std::string_view line) {
      std::lock_guard lock(mutex);
      lines.emplace_back(line);
    };
  }
  std::vector<std::string> copy() {
    std::lock_guard lock(mutex);
    return lines;
  }
};

Alert make_alert(std::string rule, core::Severity severity, std::string client) {
  Alert alert;
  alert.rule_id = std::move(rule);
  alert.severity = severity;
  alert.title = "test alert";
  alert.client = std::move(client);
  alert.route = "classifier";
  return alert;
}

AlertConfig config_from_yaml(const std::string& yaml) {
  YAML::Node root = YAML::Load(yaml);
  return gateway::parse_alert_config(root["alerts"], "gateway.yaml");
}

TEST(AlertDispatcher, DeliversJsonToTheLogAndTheWebhook) {
  WebhookReceiver receiver;
  ::setenv("AEGIS_TEST_ALERT_TOKEN", "s3cret-token", 1);
  AlertConfig config = config_from_yaml("alerts:\n"
                                        "  cooldown_seconds: 0\n"
                                        "  webhooks:\n"
                                        "    - url: " + receiver.url("/hooks/aegis?team=ml") + "\n"
                                        "      headers: {Authorization: \"Bearer ${AEGIS_TEST_ALERT_TOKEN}\"}\n"
                                        "      min_severity: high\n");
  ASSERT_EQ(config.webhooks.size(), 1u);
  LogLines log;
  AlertDispatcher dispatcher(config, log.sink());
  Alert alert = make_alert("gateway.extraction-suspected", core::Severity::High, "key-analytics");
  alert.detail_json = R"({"queries": 1200, "window_s": 60})";
  EXPECT_TRUE(dispatcher.raise(alert));
  EXPECT_TRUE(dispatcher.raise(make_alert("gateway.drift", core::Severity::Low, "key-analytics")));  // below min_severity
  dispatcher.flush();

  auto posts = receiver.posts();
  ASSERT_EQ(posts.size(), 1u);
  EXPECT_EQ(posts[0].method, "POST");
  EXPECT_EQ(posts[0].target, "/hooks/aegis?team=ml");
  EXPECT_EQ(posts[0].headers["authorization"], "Bearer s3cret-token");
  EXPECT_EQ(posts[0].headers["content-type"], "application/json");
  ASSERT_TRUE(posts[0].body.is_object());
  EXPECT_EQ(posts[0].body["rule_id"], "gateway.extraction-suspected");
  EXPECT_EQ(posts[0].body["severity"], "high");
  EXPECT_EQ(posts[0].body["client"], "key-analytics");
  EXPECT_EQ(posts[0].body["detail"]["queries"], 1200);
  EXPECT_GT(posts[0].body["time_ms"].get<std::int64_t>(), 0);

  auto lines = log.copy();
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(json::parse(lines[0])["rule_id"], "gateway.extraction-suspected");
  EXPECT_EQ(json::parse(lines[1])["rule_id"], "gateway.drift");

  auto counters = dispatcher.counters();
  EXPECT_EQ(counters.raised, 2u);
  EXPECT_EQ(counters.sent, 1u);
  EXPECT_EQ(counters.logged, 2u);
  EXPECT_EQ(counters.failed, 0u);

  gateway::MetricsWriter metrics;
  dispatcher.write_metrics(metrics);
  const std::string label = "webhook=\"http://127.0.0.1:" + receiver.url("").substr(17) + "/hooks/aegis\"";
  EXPECT_NE(metrics.text().find("aegis_gateway_alerts_sent_total{" + label + "} 1\n"), std::string::npos) << metrics.text();
  EXPECT_EQ(metrics.text().find("team=ml"), std::string::npos);  // the query may carry a secret
}

TEST(AlertDispatcher, RateLimitSurplusArrivesAsOneSummary) {
  WebhookReceiver receiver;
  ManualClock clock;
  AlertConfig config;
  config.cooldown_seconds = 0;
  config.max_per_minute = 3;
  config.webhooks.push_back({receiver.url(), {}, core::Severity::Info, std::nullopt});
  AlertDispatcher dispatcher(config, {}, clock.function());
  for (int i = 0; i < 3; ++i) dispatcher.raise(make_alert("rule.first", core::Severity::Medium, "c" + std::to_string(i)));
  for (int i = 0; i < 4; ++i) dispatcher.raise(make_alert("rule.a", core::Severity::High, "c" + std::to_string(i)));
  for (int i = 0; i < 3; ++i) dispatcher.raise(make_alert("rule.b", core::Severity::Low, "c" + std::to_string(i)));
  dispatcher.flush();
  EXPECT_EQ(receiver.posts().size(), 3u);
  EXPECT_EQ(dispatcher.counters().suppressed, 7u);

  clock.advance(std::chrono::seconds(10));  // half a token at 3 per minute: nothing yet
  dispatcher.flush();
  EXPECT_EQ(receiver.posts().size(), 3u);

  clock.advance(std::chrono::seconds(10));
  dispatcher.flush();
  auto posts = receiver.posts();
  ASSERT_EQ(posts.size(), 4u);
  const json& summary = posts[3].body;
  EXPECT_EQ(summary["rule_id"], "aegis.alerts-suppressed");
  EXPECT_EQ(summary["severity"], "high");  // the worst of what it stands for
  EXPECT_EQ(summary["detail"]["suppressed"], 7);
  EXPECT_EQ(summary["detail"]["by_rule"]["rule.a"], 4);
  EXPECT_EQ(summary["detail"]["by_rule"]["rule.b"], 3);
  EXPECT_NE(summary["title"].get<std::string>().find("suppressed 7 alerts"), std::string::npos);
  auto counters = dispatcher.counters();
  EXPECT_EQ(counters.summaries, 1u);
  EXPECT_EQ(counters.sent, 4u);
}

TEST(AlertDispatcher, RepeatsWithinTheCooldownAreCountedIntoTheNextAlert) {
  WebhookReceiver receiver;
  ManualClock clock;
  AlertConfig config;
  config.cooldown_seconds = 60;
  config.max_per_minute = 0;
  config.webhooks.push_back({receiver.url(), {}, core::Severity::Info, std::nullopt});
  AlertDispatcher dispatcher(config, {}, clock.function());
  for (int i = 0; i < 5; ++i) dispatcher.raise(make_alert("gateway.injection", core::Severity::High, "key-1"));
  dispatcher.raise(make_alert("gateway.injection", core::Severity::High, "key-2"));
  dispatcher.flush();
  EXPECT_EQ(receiver.posts().size(), 2u);
  EXPECT_EQ(dispatcher.counters().deduplicated, 4u);

  clock.advance(std::chrono::seconds(61));
  dispatcher.raise(make_alert("gateway.injection", core::Severity::High, "key-1"));
  dispatcher.flush();
  auto posts = receiver.posts();
  ASSERT_EQ(posts.size(), 3u);
  EXPECT_EQ(posts[2].body["client"], "key-1");
  EXPECT_EQ(posts[2].body["repeats_suppressed"], 4);
  EXPECT_FALSE(posts[1].body.contains("repeats_suppressed"));
}

TEST(AlertDispatcher, DeadWebhookFailsWithoutHoldingUpTheOthers) {
  WebhookReceiver live;
  AlertConfig config;
  config.cooldown_seconds = 0;
  config.max_per_minute = 0;
  config.retries = 2;
  config.backoff_ms = 5;
  config.webhooks.push_back({"http://127.0.0.1:" + std::to_string(closed_port()) + "/dead", {}, core::Severity::Info, std::nullopt});
  config.webhooks.push_back({live.url(), {}, core::Severity::Info, std::nullopt});
  LogLines log;
  AlertDispatcher dispatcher(config, log.sink());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(dispatcher.raise(make_alert("rule", core::Severity::High, "c" + std::to_string(i))));
  dispatcher.flush();
  EXPECT_EQ(live.posts().size(), 3u);
  auto counters = dispatcher.counters();
  EXPECT_EQ(counters.sent, 3u);
  EXPECT_EQ(counters.failed, 3u);
  std::size_t failures = 0;
  for (const auto& line : log.copy()) {
    auto parsed = json::parse(line);
    if (parsed["type"] == "alert-delivery-failed") {
      ++failures;
      EXPECT_NE(parsed["error"].get<std::string>().find("connect"), std::string::npos) << line;
      EXPECT_NE(parsed["webhook"].get<std::string>().find("/dead"), std::string::npos) << line;
    }
  }
  EXPECT_EQ(failures, 3u);
}

TEST(AlertDispatcher, HangingWebhookNeverBlocksRaiseAndTheQueueStaysBounded) {
  WebhookReceiver hanging;
  hanging.hold();
  AlertConfig config;
  config.cooldown_seconds = 0;
  config.max_per_minute = 0;
  config.queue_size = 2;
  config.retries = 0;
  config.timeout_ms = 300;
  config.webhooks.push_back({hanging.url(), {}, core::Severity::Info, std::nullopt});
  AlertDispatcher dispatcher(config, {});
  ASSERT_TRUE(dispatcher.raise(make_alert("rule", core::Severity::High, "c0")));
  hanging.wait_for(1);  // the worker is now inside the POST, waiting for an answer
  EXPECT_TRUE(dispatcher.raise(make_alert("rule", core::Severity::High, "c1")));
  EXPECT_TRUE(dispatcher.raise(make_alert("rule", core::Severity::High, "c2")));
  EXPECT_FALSE(dispatcher.raise(make_alert("rule", core::Severity::High, "c3")));  // queue full: dropped, counted
  EXPECT_EQ(dispatcher.counters().dropped, 1u);
  hanging.release();
  dispatcher.flush();
  auto counters = dispatcher.counters();
  EXPECT_EQ(counters.sent + counters.failed, 3u);
  EXPECT_EQ(counters.raised, 3u);
}

TEST(AlertConfig, ErrorsNameTheLineAndWhatToDo) {
  auto error_of = [](const std::string& yaml) -> std::string {
    try {
      config_from_yaml(yaml);
    } catch (const core::Error& error) {
      return error.what() + std::string(" | ") + error.hint();
    }
    return "no error";
  };
  EXPECT_NE(error_of("alerts:\n  log: true\n  max_per_hour: 3\n").find("gateway.yaml:3:"), std::string::npos);
  EXPECT_NE(error_of("alerts:\n  log: true\n  max_per_hour: 3\n").find("max_per_minute"), std::string::npos);
  EXPECT_NE(error_of("alerts:\n  webhooks:\n    - url: ftp://example.com/x\n").find("gateway.yaml:3:"), std::string::npos);
  EXPECT_NE(error_of("alerts:\n  webhooks:\n    - url: http://example.com/x\n      min_severity: urgent\n").find("min_severity"),
            std::string::npos);
  EXPECT_NE(error_of("alerts:\n  cooldown_seconds: -5\n").find("cooldown_seconds"), std::string::npos);
  EXPECT_NE(error_of("alerts:\n  webhooks:\n    - url: http://example.com:99999/x\n").find("port"), std::string::npos);
  ::unsetenv("AEGIS_TEST_UNSET_VARIABLE");
  const std::string unset = error_of(
      "alerts:\n  webhooks:\n    - url: http://example.com/x\n      headers: {X-Token: \"${AEGIS_TEST_UNSET_VARIABLE}\"}\n");
  EXPECT_NE(unset.find("AEGIS_TEST_UNSET_VARIABLE"), std::string::npos) << unset;
  EXPECT_NE(unset.find("gateway.yaml:4:"), std::string::npos) << unset;

  AlertConfig defaults = config_from_yaml("alerts:\n");
  EXPECT_TRUE(defaults.webhooks.empty());
  EXPECT_TRUE(defaults.log);
  AlertConfig custom = config_from_yaml(
      "alerts:\n  log: false\n  max_per_minute: 12\n  cooldown_seconds: 5\n  webhooks:\n    - url: https://hooks.example.com/a\n"
      "      max_per_minute: 2\n");
  EXPECT_FALSE(custom.log);
  EXPECT_EQ(custom.max_per_minute, 12u);
  EXPECT_EQ(custom.cooldown_seconds, 5u);
  ASSERT_EQ(custom.webhooks.size(), 1u);
  EXPECT_EQ(custom.webhooks[0].max_per_minute, 2u);
  EXPECT_EQ(custom.webhooks[0].min_severity, core::Severity::Medium);
}

}  // namespace
}  // namespace aegis::test
