#include "aegis/gateway/rate_limit.h"

#include <openssl/evp.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "aegis/core/error.h"
#include "aegis/gateway/redis_client.h"

namespace aegis::gateway {
namespace {

using std::chrono::nanoseconds;

// A full sweep of every shard costs O(max_keys); when the table is full of live keys a flood of new
// keys would otherwise pay it on every request.
constexpr std::int64_t kFullSweepSpacingNs = 1'000'000'000;
// Keeps burst * interval far from the int64 range of nanoseconds (about 292 years).
constexpr std::int64_t kMaxToleranceNs = 400LL * 86'400 * 1'000'000'000;
constexpr std::size_t kMaxKeyValueBytes = 128;

// GCRA in Redis. Time comes from the server (TIME), so every replica measures against one clock; the
// whole read-decide-write runs atomically inside Redis. Times are microseconds. Values are written
// with %.0f because Lua's default number formatting (%.14g) would round a 16-digit timestamp.
constexpr const char* kGcraScript = R"lua(-- aegis GCRA rate limit: KEYS[1] subject, ARGV[1] emission interval (us), ARGV[2] burst
if redis.replicate_commands then pcall(redis.replicate_commands) end
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then
  return {0, 0, allow_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now + tolerance - new_tat) / interval), 0, new_tat - now}
)lua";

std::string sha256_hex(std::string_view text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  if (EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha256(), nullptr) != 1)
    throw core::Error("OpenSSL could not compute SHA-256 for a rate-limit key", "check the OpenSSL installation");
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < length; ++i) {
    out += kDigits[digest[i] >> 4];
    out += kDigits[digest[i] & 0x0f];
  }
  return out;
}

std::int64_t ceil_seconds(nanoseconds duration) {
  const auto ns = std::max<std::int64_t>(duration.count(), 0);
  return (ns + 999'999'999) / 1'000'000'000;
}

std::optional<std::uint64_t> parse_whole(std::string_view text, std::uint64_t low, std::uint64_t high) {
  if (text.empty() || text.size() > 12) return std::nullopt;
  std::uint64_t value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + static_cast<std::uint64_t>(c - '0');
  }
  if (value < low || value > high) return std::nullopt;
  return value;
}

}  // namespace

MonotonicClock steady_monotonic_clock() {
  return [] { return std::chrono::duration_cast<nanoseconds>(std::chrono::steady_clock::now().time_since_epoch()); };
}

nanoseconds RateLimitPolicy::emission_interval() const {
  const auto per = static_cast<std::uint64_t>(std::max<std::int64_t>(period.count(), 1));
  const auto n = std::max<std::uint64_t>(count, 1);
  return nanoseconds(static_cast<std::int64_t>((per + n - 1) / n));
}

std::string RateLimitPolicy::describe() const {
  std::string unit;
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(period).count();
  if (seconds == 1) unit = "s";
  else if (seconds == 60) unit = "min";
  else if (seconds == 3600) unit = "h";
  else if (seconds == 86'400) unit = "d";
  else unit = std::to_string(seconds) + "s";
  return std::to_string(count) + "/" + unit + " burst " + std::to_string(burst);
}

std::optional<RateLimitPolicy> parse_rate(std::string_view text) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  const auto slash = text.find('/');
  if (slash == std::string_view::npos) return std::nullopt;
  std::string_view number = text.substr(0, slash);
  std::string_view unit = text.substr(slash + 1);
  while (!number.empty() && number.back() == ' ') number.remove_suffix(1);
  while (!unit.empty() && unit.front() == ' ') unit.remove_prefix(1);
  const auto count = parse_whole(number, 1, 1'000'000'000);
  if (!count) return std::nullopt;
  RateLimitPolicy policy;
  policy.count = *count;
  if (unit == "s" || unit == "sec" || unit == "second") policy.period = std::chrono::seconds(1);
  else if (unit == "m" || unit == "min" || unit == "minute") policy.period = std::chrono::minutes(1);
  else if (unit == "h" || unit == "hour") policy.period = std::chrono::hours(1);
  else if (unit == "d" || unit == "day") policy.period = std::chrono::hours(24);
  else return std::nullopt;
  // One second's worth, at least one: a client keeps its steady rate without being punished for
  // the jitter of a network path.
  const auto per_second = static_cast<double>(policy.count) / std::chrono::duration<double>(policy.period).count();
  policy.burst = static_cast<std::uint32_t>(std::clamp(std::ceil(per_second), 1.0, 10'000'000.0));
  return policy;
}

GcraLimiter::GcraLimiter(RateLimitPolicy policy, std::size_t max_keys, MonotonicClock clock)
    : policy_(policy),
      interval_(policy.emission_interval().count()),
      tolerance_(0),
      max_keys_(std::max<std::size_t>(max_keys, 1)),
      clock_(clock ? std::move(clock) : steady_monotonic_clock()),
      next_full_sweep_(std::numeric_limits<std::int64_t>::min()) {
  if (policy_.burst == 0) policy_.burst = 1;
  if (interval_ <= 0 || interval_ > kMaxToleranceNs / static_cast<std::int64_t>(policy_.burst))
    throw core::Error("rate limit " + policy_.describe() + " spans more than 400 days", "use a higher rate or a smaller burst");
  tolerance_ = interval_ * static_cast<std::int64_t>(policy_.burst);
}

RateDecision GcraLimiter::decide_at(std::int64_t& tat, std::int64_t now) const {
  RateDecision decision;
  decision.limit = policy_.burst;
  const std::int64_t base = std::max(tat, now);
  const std::int64_t new_tat = base + interval_;
  const std::int64_t allow_at = new_tat - tolerance_;
  if (allow_at > now) {
    decision.allowed = false;
    decision.retry_after = nanoseconds(allow_at - now);
    decision.reset = nanoseconds(base - now);
    return decision;
  }
  tat = new_tat;
  decision.allowed = true;
  decision.remaining = static_cast<std::uint64_t>((now + tolerance_ - new_tat) / interval_);
  decision.reset = nanoseconds(new_tat - now);
  return decision;
}

std::size_t GcraLimiter::sweep(Shard& shard, std::int64_t now) {
  // An entry whose TAT has passed says nothing a fresh entry would not: dropping it loses no state.
  const std::size_t removed = std::erase_if(shard.tat, [now](const auto& entry) { return entry.second <= now; });
  shard.size_after_sweep = shard.tat.size();
  if (removed) {
    keys_.fetch_sub(removed, std::memory_order_relaxed);
    evicted_.fetch_add(removed, std::memory_order_relaxed);
  }
  return removed;
}

bool GcraLimiter::reserve_key() {
  std::size_t current = keys_.load(std::memory_order_relaxed);
  while (current < max_keys_)
    if (keys_.compare_exchange_weak(current, current + 1, std::memory_order_relaxed)) return true;
  return false;
}

RateDecision GcraLimiter::decide(std::string_view key) {
  const std::int64_t now = clock_().count();
  const std::size_t index = TransparentHash{}(key) % kShards;
  Shard& shard = shards_[index];

  auto insert_new = [&]() {
    std::int64_t tat = now;
    RateDecision decision = decide_at(tat, now);
    shard.tat.emplace(std::string(key), tat);
    // Amortised lazy sweep: a shard that doubled since it was last swept drops its expired keys.
    if (shard.tat.size() >= 64 && shard.tat.size() >= 2 * shard.size_after_sweep) sweep(shard, now);
    return decision;
  };

  {
    std::lock_guard lock(shard.mutex);
    if (auto found = shard.tat.find(key); found != shard.tat.end()) return decide_at(found->second, now);
    if (reserve_key()) return insert_new();
    sweep(shard, now);
    if (reserve_key()) return insert_new();
  }
  // Still full: sweep every shard, at most once per spacing, taking one shard lock at a time.
  std::int64_t due = next_full_sweep_.load(std::memory_order_relaxed);
  if (now >= due && next_full_sweep_.compare_exchange_strong(due, now + kFullSweepSpacingNs, std::memory_order_relaxed)) {
    for (auto& other : shards_) {
      std::lock_guard lock(other.mutex);
      sweep(other, now);
    }
  }
  {
    std::lock_guard lock(shard.mutex);
    if (auto found = shard.tat.find(key); found != shard.tat.end()) return decide_at(found->second, now);
    if (reserve_key()) return insert_new();
  }
  // Fail closed: a flood of fresh identities must not buy unlimited traffic or unbounded memory.
  refused_new_keys_.fetch_add(1, std::memory_order_relaxed);
  RateDecision refused;
  refused.allowed = false;
  refused.table_full = true;
  refused.limit = policy_.burst;
  refused.retry_after = nanoseconds(std::max<std::int64_t>(kFullSweepSpacingNs, interval_));
  refused.reset = refused.retry_after;
  return refused;
}

RedisGcraLimiter::RedisGcraLimiter(RedisClient& client, RateLimitPolicy policy)
    : client_(client), policy_(policy), script_(std::make_shared<const RedisScript>(kGcraScript)) {
  if (policy_.burst == 0) policy_.burst = 1;
  const auto interval_ns = policy_.emission_interval().count();
  interval_us_ = std::to_string(std::max<std::int64_t>((interval_ns + 999) / 1000, 1));
  burst_ = std::to_string(policy_.burst);
  client_.preload(script_);
  // Loads it now too, so that the first requests need not wait for a NOSCRIPT round trip.
  client_.command({"SCRIPT", "LOAD", script_->source()}, nullptr);
}

void RedisGcraLimiter::decide(std::string key, Callback done) {
  const std::uint32_t burst = policy_.burst;
  client_.run_script(script_, {std::move(key)}, {interval_us_, burst_}, [burst, done = std::move(done)](RedisReply reply) {
    Outcome outcome;
    if (reply.is_error()) {
      outcome.error = reply.text;
    } else if (reply.type != RedisReply::Type::Array || reply.elements.size() != 4 ||
               std::any_of(reply.elements.begin(), reply.elements.end(),
                           [](const RedisReply& e) { return e.type != RedisReply::Type::Integer; })) {
      outcome.error = "unexpected reply from the rate-limit script";
    } else {
      RateDecision decision;
      decision.allowed = reply.elements[0].integer == 1;
      decision.limit = burst;
      decision.remaining = static_cast<std::uint64_t>(std::max<long long>(reply.elements[1].integer, 0));
      decision.retry_after = std::chrono::microseconds(std::max<long long>(reply.elements[2].integer, 0));
      decision.reset = std::chrono::microseconds(std::max<long long>(reply.elements[3].integer, 0));
      outcome.decision = decision;
    }
    done(std::move(outcome));
  });
}

std::string rate_limit_key(std::string_view route, std::string_view dimension, std::string_view value) {
  std::string key = "aegis:rl:";
  key += route.size() > kMaxKeyValueBytes ? sha256_hex(route) : std::string(route);
  key += ':';
  key += dimension;
  key += ':';
  key += value.size() > kMaxKeyValueBytes ? sha256_hex(value) : std::string(value);
  return key;
}

namespace {

enum class Scope { Key, Ip, Route };
enum class OnBackendError { Local, Deny, Allow };

// What a Redis callback needs after the filter is gone (a reload may drop the filter while replies
// are in flight), so it is owned jointly by the filter and every pending callback.
struct RateLimitState {
  std::string filter_name;
  RateLimitPolicy policy;
  OnBackendError on_backend_error = OnBackendError::Local;
  GcraLimiter local;
  std::atomic<std::uint64_t> allowed{0};
  std::atomic<std::uint64_t> limited{0};
  std::atomic<std::uint64_t> backend_errors{0};
  std::atomic<std::uint64_t> fallbacks{0};
  std::atomic<std::uint64_t> allowed_unchecked{0};
  std::atomic<std::uint64_t> denied_unavailable{0};

  RateLimitState(std::string name, RateLimitPolicy p, OnBackendError on_error, std::size_t max_keys, MonotonicClock clock)
      : filter_name(std::move(name)), policy(p), on_backend_error(on_error), local(p, max_keys, std::move(clock)) {}

  FilterResult answer(const RateDecision& decision, std::string_view scope_name, std::vector<Verdict>& verdicts) {
    if (decision.allowed) {
      allowed.fetch_add(1, std::memory_order_relaxed);
      return FilterResult::pass();
    }
    limited.fetch_add(1, std::memory_order_relaxed);
    const auto retry = std::max<std::int64_t>(ceil_seconds(decision.retry_after), 1);
    std::vector<Header> headers = {
        {"retry-after", std::to_string(retry)},
        {"ratelimit-limit", std::to_string(decision.limit)},
        {"ratelimit-remaining", std::to_string(decision.remaining)},
        {"ratelimit-reset", std::to_string(ceil_seconds(decision.reset))},
    };
    if (decision.table_full) {
      verdicts.push_back({filter_name, "reject", "rate limiter full: new client refused"});
      return FilterResult::reject(429, "rate_limited",
                                  "the gateway is tracking as many clients as it may; retry after " + std::to_string(retry) + " s",
                                  std::move(headers));
    }
    verdicts.push_back({filter_name, "reject", policy.describe() + " exceeded per " + std::string(scope_name)});
    return FilterResult::reject(429, "rate_limited",
                                "too many requests: the limit is " + policy.describe() + " per " + std::string(scope_name) +
                                    "; retry after " + std::to_string(retry) + " s",
                                std::move(headers));
  }

  FilterResult backend_failed(const std::string& key, std::string_view scope_name, const std::string& error,
                              std::vector<Verdict>& verdicts) {
    backend_errors.fetch_add(1, std::memory_order_relaxed);
    switch (on_backend_error) {
      case OnBackendError::Allow:
        allowed_unchecked.fetch_add(1, std::memory_order_relaxed);
        verdicts.push_back({filter_name, "flag", "rate limit not checked: " + error});
        return FilterResult::pass();
      case OnBackendError::Deny:
        denied_unavailable.fetch_add(1, std::memory_order_relaxed);
        verdicts.push_back({filter_name, "reject", "rate limit backend unavailable: " + error});
        return FilterResult::reject(503, "rate_limit_unavailable",
                                    "the rate limiter cannot reach its shared store; retry shortly", {{"retry-after", "1"}});
      case OnBackendError::Local:
        break;
    }
    fallbacks.fetch_add(1, std::memory_order_relaxed);
    const RateDecision decision = local.decide(key);
    if (decision.allowed) verdicts.push_back({filter_name, "flag", "shared rate limit unavailable; limited by this replica alone"});
    return answer(decision, scope_name, verdicts);
  }
};

class RateLimitFilter final : public Filter {
 public:
  RateLimitFilter(std::string route, Scope scope, std::shared_ptr<RateLimitState> state, RedisClient* redis)
      : Filter("rate_limit"), route_(std::move(route)), scope_(scope), state_(std::move(state)) {
    if (redis) redis_ = std::make_unique<RedisGcraLimiter>(*redis, state_->policy);
  }

  bool asynchronous() const override { return redis_ != nullptr; }

  FilterResult on_request(Exchange& exchange) override {
    const auto [key, scope_name] = key_for(exchange);
    return state_->answer(state_->local.decide(key), scope_name, exchange.verdicts);
  }

  void on_request_async(Exchange& exchange, FilterDone done) override {
    if (!redis_) {
      done(on_request(exchange));
      return;
    }
    auto keyed = key_for(exchange);
    std::string key = std::move(keyed.first);
    const std::string_view scope_name = keyed.second;
    // The server keeps the exchange alive and untouched until `done` runs, so the callback may
    // record its verdict in it.
    std::vector<Verdict>* verdicts = &exchange.verdicts;
    redis_->decide(key, [state = state_, key, scope_name, verdicts, done = std::move(done)](RedisGcraLimiter::Outcome outcome) {
      if (outcome.decision) {
        done(state->answer(*outcome.decision, scope_name, *verdicts));
        return;
      }
      done(state->backend_failed(key, scope_name, outcome.error, *verdicts));
    });
  }

  void write_metrics(MetricsWriter& out, const std::vector<Header>& labels) const override {
    auto with = [&](std::string name, std::string value) {
      auto extended = labels;
      extended.emplace_back(std::move(name), std::move(value));
      return extended;
    };
    const char* decisions_help = "Rate-limit decisions by outcome";
    out.counter("aegis_rate_limit_decisions_total", decisions_help, with("outcome", "allowed"),
                static_cast<double>(state_->allowed.load(std::memory_order_relaxed)));
    out.counter("aegis_rate_limit_decisions_total", decisions_help, with("outcome", "limited"),
                static_cast<double>(state_->limited.load(std::memory_order_relaxed)));
    out.counter("aegis_rate_limit_backend_errors_total", "Rate-limit checks whose shared store (Redis) failed", labels,
                static_cast<double>(state_->backend_errors.load(std::memory_order_relaxed)));
    out.counter("aegis_rate_limit_fallbacks_total", "Checks decided by this replica's in-memory limiter because Redis failed",
                labels, static_cast<double>(state_->fallbacks.load(std::memory_order_relaxed)));
    out.counter("aegis_rate_limit_unchecked_total", "Requests let through unchecked because Redis failed (on_backend_error: allow)",
                labels, static_cast<double>(state_->allowed_unchecked.load(std::memory_order_relaxed)));
    out.counter("aegis_rate_limit_unavailable_total", "Requests refused with 503 because Redis failed (on_backend_error: deny)",
                labels, static_cast<double>(state_->denied_unavailable.load(std::memory_order_relaxed)));
    out.counter("aegis_rate_limit_table_full_total", "New clients refused because the in-memory limiter tracks max_keys keys",
                labels, static_cast<double>(state_->local.refused_new_keys()));
    out.gauge("aegis_rate_limit_keys", "Keys the in-memory limiter tracks", labels,
              static_cast<double>(state_->local.keys_tracked()));
  }

 private:
  std::pair<std::string, std::string_view> key_for(const Exchange& exchange) const {
    switch (scope_) {
      case Scope::Route:
        return {rate_limit_key(route_, "route", route_), "route"};
      case Scope::Key:
        if (exchange.identity.authenticated()) return {rate_limit_key(route_, "key", exchange.identity.subject), "API key"};
        [[fallthrough]];
      case Scope::Ip:
        break;
    }
    const std::string& ip = exchange.request.client_ip;
    return {rate_limit_key(route_, "ip", ip.empty() ? std::string_view("unknown") : std::string_view(ip)), "client address"};
  }

  std::string route_;
  Scope scope_;
  std::shared_ptr<RateLimitState> state_;
  std::unique_ptr<RedisGcraLimiter> redis_;
};

}  // namespace

std::unique_ptr<Filter> make_rate_limit_filter(const YAML::Node& options, const FilterBuildContext& context) {
  return make_rate_limit_filter(options, context, steady_monotonic_clock());
}

std::unique_ptr<Filter> make_rate_limit_filter(const YAML::Node& options, const FilterBuildContext& context,
                                               MonotonicClock clock) {
  const std::string example = "e.g. rate_limit: {per: key, rate: 100/s, burst: 20}";
  if (!options.IsMap()) throw_config_error(context, options, "rate_limit options must be a mapping", example);
  for (const auto& item : options) {
    const std::string name = item.first.as<std::string>();
    static constexpr std::string_view kKnown[] = {"per", "rate", "burst", "backend", "on_backend_error", "max_keys"};
    if (std::find(std::begin(kKnown), std::end(kKnown), name) == std::end(kKnown))
      throw_config_error(context, item.first, "unknown rate_limit option '" + name + "'",
                         "rate_limit takes per, rate, burst, backend, on_backend_error and max_keys");
  }
  auto text = [&](const char* name) -> std::optional<std::string> {
    const YAML::Node node = options[name];
    if (!node) return std::nullopt;
    if (!node.IsScalar()) throw_config_error(context, node, std::string("rate_limit.") + name + " must be a single value", example);
    return node.Scalar();
  };

  const auto rate_text = text("rate");
  if (!rate_text) throw_config_error(context, options, "rate_limit needs a rate", example);
  auto policy = parse_rate(*rate_text);
  if (!policy)
    throw_config_error(context, options["rate"], "rate_limit.rate '" + *rate_text + "' is not a rate",
                       "write COUNT/UNIT with a whole COUNT from 1 to 1000000000 and UNIT s, min, h or d, e.g. 100/s or 6000/min");
  if (const auto burst = text("burst")) {
    const auto value = parse_whole(*burst, 1, 10'000'000);
    if (!value) throw_config_error(context, options["burst"], "rate_limit.burst must be a whole number from 1 to 10000000");
    policy->burst = static_cast<std::uint32_t>(*value);
  }
  if (policy->emission_interval().count() > kMaxToleranceNs / policy->burst)
    throw_config_error(context, options["burst"] ? options["burst"] : options["rate"],
                       "rate_limit burst times the interval between requests spans more than 400 days",
                       "use a higher rate or a smaller burst");

  Scope scope = Scope::Key;
  if (const auto per = text("per")) {
    if (*per == "key") scope = Scope::Key;
    else if (*per == "ip") scope = Scope::Ip;
    else if (*per == "route") scope = Scope::Route;
    else throw_config_error(context, options["per"], "rate_limit.per must be key, ip or route, not '" + *per + "'");
  }
  bool use_redis = false;
  if (const auto backend = text("backend")) {
    if (*backend == "redis") use_redis = true;
    else if (*backend != "memory")
      throw_config_error(context, options["backend"], "rate_limit.backend must be memory or redis, not '" + *backend + "'");
  }
  if (use_redis && !context.redis)
    throw_config_error(context, options["backend"], "rate_limit.backend is redis but the gateway config has no redis: section",
                       "add redis: {url: redis://HOST:6379} at the top level, or use backend: memory");
  OnBackendError on_error = OnBackendError::Local;
  if (const auto policy_text = text("on_backend_error")) {
    if (*policy_text == "local") on_error = OnBackendError::Local;
    else if (*policy_text == "deny") on_error = OnBackendError::Deny;
    else if (*policy_text == "allow") on_error = OnBackendError::Allow;
    else
      throw_config_error(context, options["on_backend_error"],
                         "rate_limit.on_backend_error must be local, deny or allow, not '" + *policy_text + "'");
  }
  std::size_t max_keys = 1'000'000;
  if (const auto keys = text("max_keys")) {
    const auto value = parse_whole(*keys, 1, 100'000'000);
    if (!value) throw_config_error(context, options["max_keys"], "rate_limit.max_keys must be a whole number from 1 to 100000000");
    max_keys = static_cast<std::size_t>(*value);
  }
  const std::string route = context.route_name.empty() ? std::string("default") : context.route_name;
  auto state = std::make_shared<RateLimitState>("rate_limit", *policy, on_error, max_keys, std::move(clock));
  return std::make_unique<RateLimitFilter>(route, scope, std::move(state), use_redis ? context.redis : nullptr);
}

}  // namespace aegis::gateway
