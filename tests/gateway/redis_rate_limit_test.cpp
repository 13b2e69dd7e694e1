// The Redis client and the Redis-backed rate limit, against a real redis-server started by each test.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <future>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/gateway/rate_limit.h"
#include "aegis/gateway/redis_client.h"
#include "gateway/redis_server.h"

namespace aegis::gateway {
namespace {

using std::chrono::milliseconds;
using test::RedisServerProcess;

// Counts callbacks and wakes the test when the expected number arrived.
class CallbackLatch {
 public:
  explicit CallbackLatch(int expected) : expected_(expected) {}
  void arrive() {
    std::lock_guard lock(mutex_);
    ++arrived_;
    changed_.notify_all();
  }
  // A generous bound for a loaded machine; not a timing assertion.
  bool wait(milliseconds limit = milliseconds(20'000)) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, limit, [&] { return arrived_ >= expected_; });
  }
  int arrived() {
    std::lock_guard lock(mutex_);
    return arrived_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  int expected_;
  int arrived_ = 0;
};

RedisReply run_sync(RedisClient& client, std::vector<std::string> arguments) {
  std::promise<RedisReply> promise;
  auto answer = promise.get_future();
  client.command(std::move(arguments), [&promise](RedisReply reply) { promise.set_value(std::move(reply)); });
  return answer.get();
}

RedisClientOptions options_for(const RedisServerProcess& server) {
  RedisClientOptions options;
  options.url = server.url();
  options.timeout = milliseconds(500);
  options.reconnect_min = milliseconds(20);
  options.reconnect_max = milliseconds(200);
  return options;
}

// Runs a filter's asynchronous request phase to completion.
FilterResult decide(Filter& filter, const std::string& subject, const std::string& ip = "10.0.0.1",
                    std::vector<Verdict>* verdicts = nullptr) {
  Exchange exchange;
  exchange.identity.subject = subject;
  exchange.request.client_ip = ip;
  std::promise<FilterResult> promise;
  auto answer = promise.get_future();
  std::atomic<int> calls{0};
  filter.on_request_async(exchange, [&](FilterResult result) {
    calls.fetch_add(1);
    promise.set_value(std::move(result));
  });
  auto result = answer.get();
  EXPECT_EQ(calls.load(), 1);
  if (verdicts) *verdicts = exchange.verdicts;
  return result;
}

std::unique_ptr<Filter> redis_filter(const std::string& options, RedisClient& client, const std::string& route = "chat") {
  FilterBuildContext context;
  context.config_file = "gateway.yaml";
  context.route_name = route;
  context.redis = &client;
  auto filter = make_rate_limit_filter(YAML::Load(options), context);
  EXPECT_TRUE(filter->asynchronous());
  return filter;
}

double metric(const Filter& filter, const std::string& series) {
  MetricsWriter writer;
  filter.write_metrics(writer, {{"route", "chat"}});
  const auto& text = writer.text();
  const auto at = text.find(series + " ");
  if (at == std::string::npos) return -1;
  return std::atof(text.c_str() + at + series.size() + 1);
}

TEST(RedisClient, PipelinesCommandsAndAnswersInOrder) {
  RedisServerProcess server;
  AEGIS_START_REDIS_OR_SKIP(server);
  RedisClient client(options_for(server));
  ASSERT_TRUE(client.wait_connected(milliseconds(5'000))) << client.last_error();

  const int count = 5'000;
  std::vector<long long> values(count, -1);
  CallbackLatch latch(count);
  for (int i = 0; i < count; ++i)
    client.command({"INCR", "counter"}, [&, i](RedisReply reply) {
      values[i] = reply.type == RedisReply::Type::Integer ? reply.integer : -1;
      latch.arrive();
    });
  ASSERT_TRUE(latch.wait());
  for (int i = 0; i < count; ++i) ASSERT_EQ(values[i], i + 1) << "replies must reach the callback of their own command";
  const auto stats = client.stats();
  std::cout << "[ measure  ] " << count << " commands in " << stats.batches << " pipelined round trips\n";
  EXPECT_GE(stats.commands, static_cast<std::uint64_t>(count));

  auto reply = run_sync(client, {"SET", "binary", std::string("a\0b\r\n", 5)});
  EXPECT_EQ(reply.text, "OK");
  reply = run_sync(client, {"GET", "binary"});
  EXPECT_EQ(reply.text, std::string("a\0b\r\n", 5));
  reply = run_sync(client, {"GET", "missing"});
  EXPECT_EQ(reply.type, RedisReply::Type::Nil);
  reply = run_sync(client, {"NOSUCHCOMMAND"});
  EXPECT_TRUE(reply.is_error());
  EXPECT_FALSE(reply.transport_error) << "Redis answered: the connection is fine";
  EXPECT_TRUE(client.connected());
}

TEST(RedisClient, FailsFastWhileDownAndReconnectsWhenRedisReturns) {
  RedisServerProcess server;
  AEGIS_START_REDIS_OR_SKIP(server);
  RedisClient client(options_for(server));
  ASSERT_TRUE(client.wait_connected(milliseconds(5'000))) << client.last_error();
  EXPECT_EQ(run_sync(client, {"PING"}).text, "PONG");

  server.kill();
  // Every command gets exactly one answer: the first may die with the connection, the rest fail fast.
  const int count = 200;
  std::vector<std::atomic<int>> calls(count);
  CallbackLatch latch(count);
  std::atomic<int> transport_errors{0};
  for (int i = 0; i < count; ++i)
    client.command({"PING"}, [&, i](RedisReply reply) {
      calls[i].fetch_add(1);
      if (reply.is_error() && reply.transport_error) transport_errors.fetch_add(1);
      latch.arrive();
    });
  ASSERT_TRUE(latch.wait());
  std::this_thread::sleep_for(milliseconds(50));  // room for a (wrong) second call to show up
  for (int i = 0; i < count; ++i) EXPECT_EQ(calls[i].load(), 1) << "command " << i;
  EXPECT_EQ(transport_errors.load(), count);
  EXPECT_FALSE(client.connected());
  const auto down = run_sync(client, {"PING"});
  EXPECT_TRUE(down.transport_error);
  EXPECT_NE(down.text.find(server.url()), std::string::npos) << "the error names the server: " << down.text;

  ASSERT_TRUE(server.start()) << server.why();
  ASSERT_TRUE(client.wait_connected(milliseconds(10'000))) << client.last_error();
  EXPECT_EQ(run_sync(client, {"PING"}).text, "PONG");
  EXPECT_GE(client.stats().connects, 2u);
}

TEST(RedisClient, StalledRedisTimesOutAndTheQueueStaysBounded) {
  RedisServerProcess server;
  AEGIS_START_REDIS_OR_SKIP(server);
  auto options = options_for(server);
  options.timeout = milliseconds(200);
  options.max_queue = 16;
  RedisClient client(options);
  ASSERT_TRUE(client.wait_connected(milliseconds(5'000))) << client.last_error();

  server.pause();
  const int count = 500;
  CallbackLatch latch(count);
  std::atomic<int> queue_full{0}, errors{0};
  for (int i = 0; i < count; ++i)
    client.command({"PING"}, [&](RedisReply reply) {
      if (reply.is_error()) errors.fetch_add(1);
      if (reply.text.find("queue is full") != std::string::npos) queue_full.fetch_add(1);
      latch.arrive();
    });
  ASSERT_TRUE(latch.wait()) << "every command must be answered even though Redis never replies; got " << latch.arrived();
  EXPECT_EQ(errors.load(), count);
  EXPECT_GT(queue_full.load(), 0) << "more than max_queue commands were waiting";

  server.resume();
  ASSERT_TRUE(client.wait_connected(milliseconds(10'000))) << client.last_error();
  EXPECT_EQ(run_sync(client, {"PING"}).text, "PONG");
}

TEST(RedisClient, AuthenticatesWithThePasswordFromTheEnvironment) {
  RedisServerProcess server({"--requirepass", "s3cret-for-test"});
  AEGIS_START_REDIS_OR_SKIP(server);
  const std::string variable = "AEGIS_TEST_REDIS_PASSWORD_" + std::to_string(::getpid());
  ::setenv(variable.c_str(), "s3cret-for-test", 1);
  const auto section = YAML::Load("url: " + server.url() + "\npassword_env: " + variable + "\ntimeout_ms: 500\n");
  auto client = make_redis_client(section, "gateway.yaml");
  ASSERT_TRUE(client->wait_connected(milliseconds(5'000))) << client->last_error();
  EXPECT_EQ(run_sync(*client, {"PING"}).text, "PONG");
  ::unsetenv(variable.c_str());

  auto no_password = make_redis_client(YAML::Load("url: " + server.url() + "\ntimeout_ms: 500\n"), "gateway.yaml");
  EXPECT_FALSE(no_password->wait_connected(milliseconds(300)));
  EXPECT_NE(no_password->last_error().find("NOAUTH"), std::string::npos) << no_password->last_error();
}

TEST(RedisClient, ConfigErrorsNameTheLine) {
  auto error_of = [](const std::string& yaml) -> std::string {
    try {
      make_redis_client(YAML::Load(yaml), "gateway.yaml");
    } catch (const core::Error& e) {
      return std::string(e.what()) + " | hint: " + e.hint();
    }
    return "(no error)";
  };
  EXPECT_NE(error_of("timeout_ms: 100\nurl: http://127.0.0.1:6379\n").find("gateway.yaml:2:"), std::string::npos);
  EXPECT_NE(error_of("url: redis://:pw@127.0.0.1:6379\n").find("carries credentials | hint: keep the password out of the config"),
            std::string::npos);
  EXPECT_NE(error_of("url: redis://127.0.0.1:99999\n").find("port"), std::string::npos);
  EXPECT_NE(error_of("url: redis://127.0.0.1\npassword_env: AEGIS_TEST_SURELY_UNSET_VARIABLE\n").find("gateway.yaml:2:"),
            std::string::npos);
  EXPECT_NE(error_of("url: redis://127.0.0.1\nhost: x\n").find("unknown redis option 'host'"), std::string::npos);
  EXPECT_NE(error_of("url: redis://127.0.0.1\ntimeout_ms: 0\n").find("gateway.yaml:2:"), std::string::npos);

  const auto tcp = RedisEndpoint::parse("redis://[::1]:6380/3");
  EXPECT_EQ(tcp.host, "::1");
  EXPECT_EQ(tcp.port, 6380);
  EXPECT_EQ(tcp.database, 3);
  const auto unix_socket = RedisEndpoint::parse("unix:///run/redis/redis.sock?db=2");
  EXPECT_EQ(unix_socket.socket_path, "/run/redis/redis.sock");
  EXPECT_EQ(unix_socket.database, 2);
}

TEST(RedisRateLimit, TwoReplicasShareOneLimit) {
  RedisServerProcess server;
  AEGIS_START_REDIS_OR_SKIP(server);
  RedisClient replica_a(options_for(server));
  RedisClient replica_b(options_for(server));
  ASSERT_TRUE(replica_a.wait_connected(milliseconds(5'000))) << replica_a.last_error();
  ASSERT_TRUE(replica_b.wait_connected(milliseconds(5'000))) << replica_b.last_error();
  const double rate = 200, burst = 40;
  const std::string options = "{per: route, rate: 200/s, burst: 40, backend: redis, on_backend_error: deny}";
  auto filter_a = redis_filter(options, replica_a);
  auto filter_b = redis_filter(options, replica_b);

  std::atomic<bool> stop{false};
  std::atomic<int> allowed{0}, limited{0}, other{0};
  auto hammer = [&](Filter& filter, int thread) {
    while (!stop.load()) {
      const auto result = decide(filter, "client-" + std::to_string(thread));
      if (!result.rejected) allowed.fetch_add(1);
      else if (result.status == 429) limited.fetch_add(1);
      else other.fetch_add(1);
    }
  };
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back(hammer, std::ref(*filter_a), t);
    threads.emplace_back(hammer, std::ref(*filter_b), t + 4);
  }
  std::this_thread::sleep_for(milliseconds(2'000));
  stop.store(true);
  for (auto& thread : threads) thread.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const double expected = rate * seconds + burst;
  std::cout << "[ measure  ] two replicas, " << seconds << " s: " << allowed.load() << " allowed, " << limited.load()
            << " limited; rate * t + burst = " << expected << "\n";
  EXPECT_EQ(other.load(), 0);
  EXPECT_GT(limited.load(), 0) << "the replicas must have offered more than the limit";
  EXPECT_LE(allowed.load(), expected * 1.05);
  EXPECT_GE(allowed.load(), expected * 0.95);
  EXPECT_GT(metric(*filter_a, "aegis_rate_limit_decisions_total{route=\"chat\",outcome=\"allowed\"}"), 0);
  EXPECT_GT(metric(*filter_b, "aegis_rate_limit_decisions_total{route=\"chat\",outcome=\"allowed\"}"), 0);
}

TEST(RedisRateLimit, BackendErrorPoliciesAndRecovery) {
  RedisServerProcess server;
  AEGIS_START_REDIS_OR_SKIP(server);
  RedisClient client(options_for(server));
  ASSERT_TRUE(client.wait_connected(milliseconds(5'000))) << client.last_error();
  auto deny = redis_filter("{rate: 1/min, burst: 3, backend: redis, on_backend_error: deny}", client, "deny");
  auto allow = redis_filter("{rate: 1/min, burst: 3, backend: redis, on_backend_error: allow}", client, "allow");
  auto local = redis_filter("{rate: 1/min, burst: 3, backend: redis}", client, "local");

  EXPECT_FALSE(decide(*deny, "alice").rejected);
  EXPECT_FALSE(decide(*allow, "alice").rejected);
  EXPECT_FALSE(decide(*local, "alice").rejected);
  EXPECT_EQ(server.run({"EXISTS", "aegis:rl:local:key:alice"}), "1");
  // The key expires once its arrival time has passed (one interval, 60 s, after a single request).
  const auto ttl = std::atoll(server.run({"PTTL", "aegis:rl:local:key:alice"}).c_str());
  EXPECT_GT(ttl, 0);
  EXPECT_LE(ttl, 60'001);

  server.kill();
  for (int i = 0; i < 5; ++i) {
    const auto refused = decide(*deny, "bob");
    EXPECT_TRUE(refused.rejected);
    EXPECT_EQ(refused.status, 503);
    EXPECT_EQ(refused.code, "rate_limit_unavailable");
    EXPECT_FALSE(decide(*allow, "bob").rejected) << "allow lets traffic through while Redis is down";
  }
  // local: this replica's own limiter takes over with the same rate and burst.
  std::vector<Verdict> verdicts;
  EXPECT_FALSE(decide(*local, "bob", "10.0.0.1", &verdicts).rejected);
  ASSERT_EQ(verdicts.size(), 1u);
  EXPECT_EQ(verdicts[0].outcome, "flag");
  EXPECT_FALSE(decide(*local, "bob").rejected);
  EXPECT_FALSE(decide(*local, "bob").rejected);
  const auto limited = decide(*local, "bob");
  EXPECT_TRUE(limited.rejected);
  EXPECT_EQ(limited.status, 429);
  EXPECT_EQ(metric(*local, "aegis_rate_limit_fallbacks_total{route=\"chat\"}"), 4);
  EXPECT_EQ(metric(*deny, "aegis_rate_limit_unavailable_total{route=\"chat\"}"), 5);
  EXPECT_EQ(metric(*allow, "aegis_rate_limit_unchecked_total{route=\"chat\"}"), 5);

  ASSERT_TRUE(server.start()) << server.why();
  ASSERT_TRUE(client.wait_connected(milliseconds(10'000))) << client.last_error();
  const double errors_before = metric(*local, "aegis_rate_limit_backend_errors_total{route=\"chat\"}");
  // Back on Redis (which lost its data with the restart): the shared limit decides again.
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(decide(*local, "carol").rejected);
  EXPECT_TRUE(decide(*local, "carol").rejected);
  EXPECT_EQ(server.run({"EXISTS", "aegis:rl:local:key:carol"}), "1");
  EXPECT_EQ(metric(*local, "aegis_rate_limit_backend_errors_total{route=\"chat\"}"), errors_before);
  EXPECT_EQ(metric(*local, "aegis_rate_limit_fallbacks_total{route=\"chat\"}"), 4);
}

TEST(RedisRateLimit, RecoversWhenRedisForgetsTheScript) {
  RedisServerProcess server;
  AEGIS_START_REDIS_OR_SKIP(server);
  RedisClient client(options_for(server));
  ASSERT_TRUE(client.wait_connected(milliseconds(5'000))) << client.last_error();
  auto filter = redis_filter("{rate: 1/min, burst: 2, backend: redis, on_backend_error: deny}", client);
  EXPECT_FALSE(decide(*filter, "alice").rejected);
  const auto loads_before = client.stats().script_loads;

  EXPECT_EQ(server.run({"SCRIPT", "FLUSH"}), "OK");
  EXPECT_FALSE(decide(*filter, "alice").rejected) << "NOSCRIPT must be answered by loading the script again";
  EXPECT_TRUE(decide(*filter, "alice").rejected) << "and the state kept in Redis still counts";
  EXPECT_EQ(metric(*filter, "aegis_rate_limit_backend_errors_total{route=\"chat\"}"), 0);
  EXPECT_GT(client.stats().script_loads, loads_before);
}

TEST(RedisRateLimit, MeasuresPipelinedDecisionsPerSecond) {
  RedisServerProcess server;
  AEGIS_START_REDIS_OR_SKIP(server);
  RedisClient client(options_for(server));
  ASSERT_TRUE(client.wait_connected(milliseconds(5'000))) << client.last_error();
  RateLimitPolicy policy = parse_rate("1000000/s").value();
  RedisGcraLimiter limiter(client, policy);

  // Keeps up to `window` decisions in flight, as many concurrent requests would.
  const int total = 40'000, window = 2'000;
  std::mutex mutex;
  std::condition_variable changed;
  int in_flight = 0, answered = 0, failed = 0;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < total; ++i) {
    {
      std::unique_lock lock(mutex);
      changed.wait(lock, [&] { return in_flight < window; });
      ++in_flight;
    }
    limiter.decide("aegis:rl:bench:key:client-" + std::to_string(i % 1000), [&](RedisGcraLimiter::Outcome outcome) {
      std::lock_guard lock(mutex);
      --in_flight;
      ++answered;
      if (!outcome.decision) ++failed;
      changed.notify_all();
    });
  }
  {
    std::unique_lock lock(mutex);
    ASSERT_TRUE(changed.wait_for(lock, std::chrono::seconds(60), [&] { return answered == total; }));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto stats = client.stats();
  std::cout << "[ measure  ] Redis GCRA: " << static_cast<long long>(total / seconds) << " decisions/s pipelined, "
            << stats.batches << " round trips for " << stats.commands << " commands\n";
  RecordProperty("redis_decisions_per_second", static_cast<int>(total / seconds));
  EXPECT_EQ(failed, 0);
}

}  // namespace
}  // namespace aegis::gateway
