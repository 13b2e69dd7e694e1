#include "aegis/gateway/rate_limit.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "aegis/core/error.h"

namespace aegis::gateway {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

// A clock the test moves by hand.
struct ManualClock {
  std::shared_ptr<std::atomic<std::int64_t>> now = std::make_shared<std::atomic<std::int64_t>>(0);
  MonotonicClock function() const {
    return [now = now] { return nanoseconds(now->load()); };
  }
  void advance(nanoseconds by) { now->fetch_add(by.count()); }
  std::int64_t ns() const { return now->load(); }
};

RateLimitPolicy policy(const char* rate, std::uint32_t burst) {
  auto parsed = parse_rate(rate);
  EXPECT_TRUE(parsed.has_value()) << rate;
  RateLimitPolicy out = parsed.value_or(RateLimitPolicy{});
  out.burst = burst;
  return out;
}

// The largest amount by which any run of allowed requests exceeds burst + elapsed / interval; a
// correct limiter never exceeds it (<= 0), whichever interval one looks at.
std::int64_t worst_excess(const std::vector<std::int64_t>& allowed_at, std::int64_t burst, std::int64_t interval) {
  std::int64_t worst = std::numeric_limits<std::int64_t>::min();
  for (std::size_t i = 0; i < allowed_at.size(); ++i)
    for (std::size_t j = i; j < allowed_at.size(); ++j) {
      const auto passed = static_cast<std::int64_t>(j - i + 1);
      worst = std::max(worst, passed - (burst + (allowed_at[j] - allowed_at[i]) / interval));
    }
  return worst;
}

TEST(GcraLimiter, BurstThenSteadyRate) {
  ManualClock clock;
  GcraLimiter limiter(policy("10/s", 5), 100, clock.function());
  const auto interval = limiter.policy().emission_interval();
  ASSERT_EQ(interval, milliseconds(100));
  for (std::uint64_t i = 0; i < 5; ++i) {
    const auto decision = limiter.decide("client");
    EXPECT_TRUE(decision.allowed) << "request " << i << " of the burst";
    EXPECT_EQ(decision.remaining, 4 - i);
    EXPECT_EQ(decision.limit, 5u);
  }
  const auto refused = limiter.decide("client");
  EXPECT_FALSE(refused.allowed);
  EXPECT_FALSE(refused.table_full);
  EXPECT_EQ(refused.remaining, 0u);
  EXPECT_EQ(refused.retry_after, interval);
  EXPECT_EQ(refused.reset, 5 * interval);

  // One request every millisecond for 10 s: exactly one passes per interval, evenly spaced.
  std::vector<std::int64_t> allowed_at;
  for (int ms = 1; ms <= 10'000; ++ms) {
    clock.advance(milliseconds(1));
    if (limiter.decide("client").allowed) allowed_at.push_back(clock.ns());
  }
  ASSERT_EQ(allowed_at.size(), static_cast<std::size_t>(milliseconds(10'000) / interval));
  for (std::size_t i = 1; i < allowed_at.size(); ++i) EXPECT_EQ(allowed_at[i] - allowed_at[i - 1], interval.count());
}

TEST(GcraLimiter, NoSlidingIntervalPassesMoreThanBurstPlusRate) {
  ManualClock clock;
  const std::int64_t burst = 10;
  GcraLimiter limiter(policy("100/s", burst), 100, clock.function());
  const std::int64_t interval = limiter.policy().emission_interval().count();

  // Demand every millisecond, pseudo-random bursts, and floods on both sides of every second: where
  // a fixed-window counter would let two windows' worth through.
  std::uint32_t state = 12345;
  auto next = [&] { return state = state * 1664525u + 1013904223u; };
  std::vector<std::int64_t> allowed_at;
  std::vector<std::int64_t> offered_at;
  const int run_ms = 5'000;
  for (int ms = 0; ms < run_ms; ++ms) {
    int attempts = 1 + static_cast<int>(next() % 3);
    if (ms % 1000 == 999 || ms % 1000 == 0) attempts += 150;
    if (next() % 50 == 0) attempts += 40;
    for (int a = 0; a < attempts; ++a) {
      offered_at.push_back(clock.ns());
      if (limiter.decide("edge").allowed) allowed_at.push_back(clock.ns());
    }
    clock.advance(milliseconds(1));
  }
  EXPECT_LE(worst_excess(allowed_at, burst, interval), 0);
  // Not stricter than promised either: with constant demand the whole run gets burst + t / interval.
  const std::int64_t last = (run_ms - 1) * 1'000'000LL;
  EXPECT_EQ(static_cast<std::int64_t>(allowed_at.size()), burst + last / interval);

  // The check has teeth: a fixed one-second window of 100 requests fails it at the window edges.
  std::vector<std::int64_t> fixed_window_allowed;
  std::int64_t window = -1, used = 0;
  for (auto t : offered_at) {
    if (t / 1'000'000'000 != window) {
      window = t / 1'000'000'000;
      used = 0;
    }
    if (used < 100) {
      ++used;
      fixed_window_allowed.push_back(t);
    }
  }
  EXPECT_GT(worst_excess(fixed_window_allowed, burst, interval), 0);
}

TEST(GcraLimiter, KeysAreIsolated) {
  ManualClock clock;
  GcraLimiter limiter(policy("1/s", 3), 100, clock.function());
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.decide("alice").allowed);
  EXPECT_FALSE(limiter.decide("alice").allowed);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(limiter.decide("bob").allowed) << "bob must not pay for alice";
  EXPECT_FALSE(limiter.decide("bob").allowed);
  EXPECT_EQ(limiter.keys_tracked(), 2u);
}

TEST(GcraLimiter, RefusesNewKeysWhenFullAndAdmitsThemOnceOldOnesExpire) {
  ManualClock clock;
  GcraLimiter limiter(policy("10/s", 2), 8, clock.function());
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(limiter.decide("client-" + std::to_string(i)).allowed);
  EXPECT_EQ(limiter.keys_tracked(), 8u);

  const auto refused = limiter.decide("newcomer");
  EXPECT_FALSE(refused.allowed) << "a full table must fail closed";
  EXPECT_TRUE(refused.table_full);
  EXPECT_GT(refused.retry_after.count(), 0);
  EXPECT_EQ(limiter.refused_new_keys(), 1u);
  EXPECT_EQ(limiter.keys_tracked(), 8u);
  EXPECT_TRUE(limiter.decide("client-3").allowed) << "known clients keep their burst";

  // Once the old entries' arrival times have passed they carry no state and make room.
  clock.advance(std::chrono::seconds(2));
  EXPECT_TRUE(limiter.decide("newcomer").allowed);
  EXPECT_LE(limiter.keys_tracked(), 8u);
  EXPECT_GE(limiter.evicted_keys(), 1u);
}

TEST(GcraLimiter, ExpiredKeysAreSweptWithoutTheTableFilling) {
  ManualClock clock;
  GcraLimiter limiter(policy("1000/s", 1), 1'000'000, clock.function());
  const int clients = 200'000;
  for (int i = 0; i < clients; ++i) {
    ASSERT_TRUE(limiter.decide("one-shot-" + std::to_string(i)).allowed);
    clock.advance(milliseconds(1));  // each entry expires a millisecond after it was made
  }
  EXPECT_LT(limiter.keys_tracked(), static_cast<std::size_t>(clients / 4));
  EXPECT_GT(limiter.evicted_keys(), static_cast<std::uint64_t>(clients / 2));
}

TEST(GcraLimiter, ConcurrentCallersShareOneBurstExactly) {
  ManualClock clock;  // frozen: nothing refills while the threads race
  GcraLimiter limiter(policy("1/s", 50), 1000, clock.function());
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) {
        if (limiter.decide("shared").allowed) allowed.fetch_add(1);
        limiter.decide("own-" + std::to_string(t));
      }
    });
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(allowed.load(), 50);
  EXPECT_EQ(limiter.keys_tracked(), 9u);
}

TEST(GcraLimiter, ParsesRates) {
  auto per_second = parse_rate("100/s");
  ASSERT_TRUE(per_second);
  EXPECT_EQ(per_second->emission_interval(), milliseconds(10));
  EXPECT_EQ(per_second->burst, 100u);
  auto per_minute = parse_rate("6000/min");
  ASSERT_TRUE(per_minute);
  EXPECT_EQ(per_minute->emission_interval(), milliseconds(10));
  EXPECT_EQ(per_minute->burst, 100u);
  auto per_hour = parse_rate("10/h");
  ASSERT_TRUE(per_hour);
  EXPECT_EQ(per_hour->emission_interval(), std::chrono::minutes(6));
  EXPECT_EQ(per_hour->burst, 1u);
  // An interval that does not divide evenly is rounded up: never looser than configured.
  auto thirds = parse_rate("3/s");
  ASSERT_TRUE(thirds);
  EXPECT_GE(thirds->emission_interval() * 3, std::chrono::seconds(1));
  for (const char* bad : {"", "100", "0/s", "-1/s", "1.5/s", "100/fortnight", "/s", "10000000000/s", "ten/s"})
    EXPECT_FALSE(parse_rate(bad)) << bad;
}

TEST(GcraLimiter, MeasuresDecisionsPerSecond) {
  GcraLimiter limiter(policy("1000000/s", 1000), 1'000'000);
  std::vector<std::string> keys;
  for (int i = 0; i < 10'000; ++i) keys.push_back("client-" + std::to_string(i));
  const int per_thread = 500'000;
  for (int threads : {1, 2}) {
    std::atomic<std::uint64_t> allowed{0};
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
      workers.emplace_back([&, t] {
        std::uint64_t mine = 0;
        for (int i = 0; i < per_thread; ++i) mine += limiter.decide(keys[(i * 7 + t) % keys.size()]).allowed;
        allowed.fetch_add(mine);
      });
    for (auto& worker : workers) worker.join();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = threads * per_thread / seconds;
    std::cout << "[ measure  ] in-memory GCRA: " << static_cast<long long>(rate) << " decisions/s with " << threads
              << " thread(s), 10000 keys\n";
    RecordProperty("decisions_per_second_" + std::to_string(threads) + "_threads", static_cast<int>(rate));
    EXPECT_GT(allowed.load(), 0u);
  }
}

// --- the filter, in-memory backend -------------------------------------------------------------

struct FilterUnderTest {
  std::string yaml;
  std::unique_ptr<Filter> filter;
  ManualClock clock;
  explicit FilterUnderTest(const std::string& options, const std::string& route = "chat") {
    FilterBuildContext context;
    context.config_file = "gateway.yaml";
    context.route_name = route;
    filter = make_rate_limit_filter(YAML::Load(options), context, clock.function());
  }
  FilterResult call(const std::string& subject, const std::string& ip) {
    Exchange exchange;
    exchange.identity.subject = subject;
    exchange.request.client_ip = ip;
    EXPECT_FALSE(filter->asynchronous());
    return filter->on_request(exchange);
  }
  std::string metrics() const {
    MetricsWriter writer;
    filter->write_metrics(writer, {{"route", "chat"}});
    return writer.text();
  }
};

std::string header(const FilterResult& result, const std::string& name) {
  for (const auto& [key, value] : result.headers)
    if (key == name) return value;
  return "(absent)";
}

TEST(RateLimitFilter, RefusesWith429AndRateLimitHeaders) {
  FilterUnderTest test("{per: key, rate: 10/s, burst: 2}");
  EXPECT_FALSE(test.call("alice", "10.0.0.1").rejected);
  EXPECT_FALSE(test.call("alice", "10.0.0.1").rejected);
  Exchange exchange;
  exchange.identity.subject = "alice";
  const auto refused = test.filter->on_request(exchange);
  ASSERT_TRUE(refused.rejected);
  EXPECT_EQ(refused.status, 429);
  EXPECT_EQ(refused.code, "rate_limited");
  EXPECT_NE(refused.message.find("10/s"), std::string::npos) << refused.message;
  EXPECT_EQ(header(refused, "retry-after"), "1");  // 100 ms, rounded up to whole seconds
  EXPECT_EQ(header(refused, "ratelimit-limit"), "2");
  EXPECT_EQ(header(refused, "ratelimit-remaining"), "0");
  EXPECT_EQ(header(refused, "ratelimit-reset"), "1");
  ASSERT_EQ(exchange.verdicts.size(), 1u);
  EXPECT_EQ(exchange.verdicts[0].filter, "rate_limit");
  EXPECT_EQ(exchange.verdicts[0].outcome, "reject");

  test.clock.advance(milliseconds(100));
  EXPECT_FALSE(test.call("alice", "10.0.0.1").rejected) << "one interval later one more request fits";
  EXPECT_TRUE(test.call("alice", "10.0.0.1").rejected);

  const auto metrics = test.metrics();
  EXPECT_NE(metrics.find("aegis_rate_limit_decisions_total{route=\"chat\",outcome=\"allowed\"} 3"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("aegis_rate_limit_decisions_total{route=\"chat\",outcome=\"limited\"} 2"), std::string::npos) << metrics;
  EXPECT_NE(metrics.find("aegis_rate_limit_keys{route=\"chat\"} 1"), std::string::npos) << metrics;
}

TEST(RateLimitFilter, RetryAfterCountsWholeSecondsOfTheConfiguredUnit) {
  FilterUnderTest hourly("{rate: 10/h}");
  EXPECT_FALSE(hourly.call("alice", "").rejected);
  const auto refused = hourly.call("alice", "");
  ASSERT_TRUE(refused.rejected);
  EXPECT_EQ(header(refused, "retry-after"), "360");
  EXPECT_EQ(header(refused, "ratelimit-limit"), "1");

  FilterUnderTest per_minute("{rate: 6000/min}");
  int passed = 0;
  while (!per_minute.call("bob", "").rejected && passed < 1000) ++passed;
  EXPECT_EQ(passed, 100) << "the default burst is one second's worth";
}

TEST(RateLimitFilter, PerKeyFallsBackToTheClientAddressForAnonymousCallers) {
  FilterUnderTest test("{per: key, rate: 1/min, burst: 1}");
  EXPECT_FALSE(test.call("", "10.0.0.1").rejected);
  EXPECT_TRUE(test.call("", "10.0.0.1").rejected) << "the same anonymous address shares one limit";
  EXPECT_FALSE(test.call("", "10.0.0.2").rejected) << "another address has its own";
  EXPECT_FALSE(test.call("alice", "10.0.0.1").rejected) << "an API key is limited apart from its address";
  EXPECT_TRUE(test.call("alice", "10.0.0.3").rejected) << "and follows the key, not the address";
}

TEST(RateLimitFilter, PerIpIgnoresTheKeyAndPerRouteSharesOneLimit) {
  FilterUnderTest per_ip("{per: ip, rate: 1/min, burst: 1}");
  EXPECT_FALSE(per_ip.call("alice", "10.0.0.1").rejected);
  EXPECT_TRUE(per_ip.call("bob", "10.0.0.1").rejected);
  EXPECT_FALSE(per_ip.call("alice", "10.0.0.2").rejected);

  FilterUnderTest per_route("{per: route, rate: 1/min, burst: 2}");
  EXPECT_FALSE(per_route.call("alice", "10.0.0.1").rejected);
  EXPECT_FALSE(per_route.call("bob", "10.0.0.2").rejected);
  EXPECT_TRUE(per_route.call("carol", "10.0.0.3").rejected);
}

TEST(RateLimitFilter, HostileIdentitiesAreBoundedByMaxKeys) {
  FilterUnderTest test("{per: key, rate: 1/min, burst: 1, max_keys: 100}");
  int admitted = 0, refused = 0;
  for (int i = 0; i < 1000; ++i) {
    const auto result = test.call(std::string(10'000, 'x') + std::to_string(i), "10.0.0.1");
    if (result.rejected) {
      ++refused;
      EXPECT_EQ(result.status, 429);
    } else {
      ++admitted;
    }
  }
  EXPECT_EQ(admitted, 100);
  EXPECT_EQ(refused, 900);
  const auto metrics = test.metrics();
  EXPECT_NE(metrics.find("aegis_rate_limit_table_full_total{route=\"chat\"} 900"), std::string::npos) << metrics;
}

TEST(RateLimitFilter, LongIdentitiesBecomeFixedSizeKeys) {
  const auto key = rate_limit_key("chat", "key", std::string(100'000, 'k'));
  EXPECT_EQ(key.rfind("aegis:rl:chat:key:", 0), 0u) << key;
  EXPECT_LE(key.size(), 18u + 64u);
  EXPECT_NE(key, rate_limit_key("chat", "key", std::string(100'001, 'k')));
  EXPECT_EQ(rate_limit_key("chat", "ip", "10.0.0.1"), "aegis:rl:chat:ip:10.0.0.1");
}

// --- configuration errors name the line -----------------------------------------------------

std::string config_error(const std::string& yaml) {
  const YAML::Node root = YAML::Load(yaml);
  FilterBuildContext context;
  context.config_file = "gateway.yaml";
  context.route_name = "chat";
  try {
    make_rate_limit_filter(root["rate_limit"], context);
  } catch (const core::Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(RateLimitConfig, ErrorsNameTheLineAndTheProblem) {
  struct Case {
    std::string yaml;
    std::string where;
    std::string says;
  };
  const std::vector<Case> cases = {
      {"rate_limit:\n  per: key\n  rate: 100/fortnight\n", "gateway.yaml:3:", "is not a rate"},
      {"rate_limit:\n  rate: 100/s\n  burst: 0\n", "gateway.yaml:3:", "burst"},
      {"rate_limit:\n  rate: 100/s\n  per: user\n", "gateway.yaml:3:", "key, ip or route"},
      {"rate_limit:\n  rate: 100/s\n  rat: 5\n", "gateway.yaml:3:", "unknown rate_limit option 'rat'"},
      {"rate_limit:\n  rate: 100/s\n\n  backend: redis\n", "gateway.yaml:4:", "no redis: section"},
      {"rate_limit:\n  rate: 100/s\n  backend: etcd\n", "gateway.yaml:3:", "memory or redis"},
      {"rate_limit:\n  rate: 100/s\n  on_backend_error: maybe\n", "gateway.yaml:3:", "local, deny or allow"},
      {"rate_limit:\n  rate: 100/s\n  max_keys: -5\n", "gateway.yaml:3:", "max_keys"},
      {"rate_limit:\n  per: ip\n", "gateway.yaml:2:", "needs a rate"},
      {"rate_limit:\n  rate: [100, s]\n", "gateway.yaml:2:", "single value"},
      {"rate_limit:\n  rate: 1/d\n  burst: 10000000\n", "gateway.yaml:3:", "400 days"},
  };
  for (const auto& c : cases) {
    const auto message = config_error(c.yaml);
    EXPECT_NE(message.find(c.where), std::string::npos) << c.yaml << " -> " << message;
    EXPECT_NE(message.find(c.says), std::string::npos) << c.yaml << " -> " << message;
  }
  EXPECT_EQ(config_error("rate_limit:\n  rate: 100/s\n  burst: 5\n  per: route\n  max_keys: 10\n"), "(no error)");
}

}  // namespace
}  // namespace aegis::gateway
