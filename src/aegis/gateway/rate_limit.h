// Rate limiting for the gateway: the generic cell rate algorithm (GCRA) in memory and in Redis (one
// limit shared by every replica), and the `rate_limit` filter that puts either in front of a route.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "aegis/gateway/filter.h"

namespace YAML {
class Node;
}

namespace aegis::gateway {

class RedisClient;
class RedisScript;

// Monotonic time since an arbitrary origin; injected so that tests can drive time by hand.
using MonotonicClock = std::function<std::chrono::nanoseconds()>;
MonotonicClock steady_monotonic_clock();

// `count` requests per `period`, with up to `burst` of them at once.
struct RateLimitPolicy {
  std::uint64_t count = 1;
  std::chrono::nanoseconds period{std::chrono::seconds(1)};
  std::uint32_t burst = 1;
  // The spacing GCRA keeps between requests (period / count), rounded up so that rounding can only
  // make the limit stricter, never looser.
  std::chrono::nanoseconds emission_interval() const;
  std::string describe() const;  // "100/s burst 100"
};

// Parses "100/s", "6000/min", "10/h" (also sec, second, m, minute, hour, d, day); nullopt when the
// text is none of these or the count is 0 or above 1e9.
std::optional<RateLimitPolicy> parse_rate(std::string_view text);

struct RateDecision {
  bool allowed = false;
  bool table_full = false;           // refused because the limiter tracks max_keys keys already
  std::uint32_t limit = 0;           // the burst: what a client may send at once
  std::uint64_t remaining = 0;       // requests that would still pass right now
  std::chrono::nanoseconds retry_after{0};  // when refused: until the next request may pass
  std::chrono::nanoseconds reset{0};        // until the full burst is available again
};

// In-memory GCRA: per key one theoretical arrival time (TAT). A request passes when, after adding one
// emission interval to the TAT, the TAT lies at most burst intervals ahead of now; so no interval of
// length t ever lets more than burst + t / interval requests through, wherever it starts. Keys live in
// 64 independently locked shards so that many I/O threads can decide at once.
class GcraLimiter {
 public:
  GcraLimiter(RateLimitPolicy policy, std::size_t max_keys, MonotonicClock clock = steady_monotonic_clock());
  GcraLimiter(const GcraLimiter&) = delete;
  GcraLimiter& operator=(const GcraLimiter&) = delete;

  RateDecision decide(std::string_view key);

  const RateLimitPolicy& policy() const { return policy_; }
  std::size_t keys_tracked() const { return keys_.load(std::memory_order_relaxed); }
  std::uint64_t refused_new_keys() const { return refused_new_keys_.load(std::memory_order_relaxed); }
  std::uint64_t evicted_keys() const { return evicted_.load(std::memory_order_relaxed); }

 private:
  struct TransparentHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view text) const { return std::hash<std::string_view>{}(text); }
  };
  struct Shard {
    std::mutex mutex;
    std::unordered_map<std::string, std::int64_t, TransparentHash, std::equal_to<>> tat;  // nanoseconds
    std::size_t size_after_sweep = 0;
  };
  static constexpr std::size_t kShards = 64;

  std::size_t sweep(Shard& shard, std::int64_t now);  // caller holds shard.mutex; returns removed
  bool reserve_key();  // takes one of the max_keys slots, if any is free
  RateDecision decide_at(std::int64_t& tat, std::int64_t now) const;

  RateLimitPolicy policy_;
  std::int64_t interval_;   // ns
  std::int64_t tolerance_;  // burst * interval, ns
  std::size_t max_keys_;
  MonotonicClock clock_;
  std::array<Shard, kShards> shards_;
  std::atomic<std::size_t> keys_{0};
  std::atomic<std::uint64_t> refused_new_keys_{0};
  std::atomic<std::uint64_t> evicted_{0};
  std::atomic<std::int64_t> next_full_sweep_;
};

// The same algorithm as one atomic Lua script in Redis, timed by the Redis server's clock (TIME), so
// replicas whose clocks disagree still share one limit. Keys carry a PEXPIRE so idle ones vanish.
class RedisGcraLimiter {
 public:
  struct Outcome {
    std::optional<RateDecision> decision;  // nullopt: Redis failed, see error
    std::string error;
  };
  using Callback = std::function<void(Outcome)>;

  RedisGcraLimiter(RedisClient& client, RateLimitPolicy policy);
  // `done` runs exactly once, from the Redis I/O thread or before decide() returns.
  void decide(std::string key, Callback done);
  const RateLimitPolicy& policy() const { return policy_; }

 private:
  RedisClient& client_;
  RateLimitPolicy policy_;
  std::shared_ptr<const RedisScript> script_;
  std::string interval_us_;
  std::string burst_;
};

// The Redis key for one limited subject: aegis:rl:<route>:<dimension>:<value>, with values longer
// than 128 bytes replaced by their SHA-256 so that a hostile identity cannot inflate Redis memory.
std::string rate_limit_key(std::string_view route, std::string_view dimension, std::string_view value);

// The `rate_limit` filter. Options (YAML):
//   per: key | ip | route     key: the authenticated subject, the client IP when anonymous
//   rate: "100/s"             also "6000/min", "10/h"
//   burst: N                  default one second's worth of requests, at least 1
//   backend: memory | redis   redis needs the gateway's `redis:` section
//   on_backend_error: local | deny | allow   when Redis fails: the in-memory limiter, 503, or let through
//   max_keys: 1000000         keys the in-memory limiter tracks; new keys beyond are refused
// Refusals are 429 "rate_limited" with retry-after and ratelimit-limit/-remaining/-reset headers.
std::unique_ptr<Filter> make_rate_limit_filter(const YAML::Node& options, const FilterBuildContext& context);
std::unique_ptr<Filter> make_rate_limit_filter(const YAML::Node& options, const FilterBuildContext& context,
                                               MonotonicClock clock);

}  // namespace aegis::gateway
