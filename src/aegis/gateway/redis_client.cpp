#include "aegis/gateway/redis_client.h"

#include <hiredis.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <optional>

#include "aegis/core/error.h"
#include "aegis/gateway/filter.h"

namespace aegis::gateway {
namespace {

// Bounds the bytes one pipelined write holds and how long the first callback of a batch waits.
constexpr std::size_t kMaxBatch = 1024;

std::string hex_digest(const unsigned char* data, unsigned length) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(length * 2);
  for (unsigned i = 0; i < length; ++i) {
    out += kDigits[data[i] >> 4];
    out += kDigits[data[i] & 0x0f];
  }
  return out;
}

std::string sha1_hex(const std::string& text) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  if (EVP_Digest(text.data(), text.size(), digest, &length, EVP_sha1(), nullptr) != 1)
    throw core::Error("OpenSSL could not compute SHA-1 for a Redis script", "check the OpenSSL installation");
  return hex_digest(digest, length);
}

RedisReply convert(const redisReply& raw) {
  RedisReply out;
  switch (raw.type) {
    case REDIS_REPLY_STRING:
      out.type = RedisReply::Type::String;
      out.text.assign(raw.str, raw.len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = RedisReply::Type::Status;
      out.text.assign(raw.str, raw.len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = RedisReply::Type::Error;
      out.text.assign(raw.str, raw.len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = RedisReply::Type::Integer;
      out.integer = raw.integer;
      break;
    case REDIS_REPLY_ARRAY:
      out.type = RedisReply::Type::Array;
      // hiredis's reader bounds the nesting of replies, so this recursion is bounded too.
      out.elements.reserve(raw.elements);
      for (std::size_t i = 0; i < raw.elements; ++i) out.elements.push_back(convert(*raw.element[i]));
      break;
    default:
      out.type = RedisReply::Type::Nil;
  }
  return out;
}

// Runs a callback on the I/O thread; one that throws must not take the pipeline down with it.
void deliver(RedisCallback& done, RedisReply reply) {
  if (!done) return;
  try {
    done(std::move(reply));
  } catch (...) {
  }
}

std::optional<long> parse_number(std::string_view text, long low, long high) {
  if (text.empty() || text.size() > 9) return std::nullopt;
  long value = 0;
  for (char c : text) {
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  if (value < low || value > high) return std::nullopt;
  return value;
}

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

}  // namespace

RedisReply RedisReply::error(std::string message, bool transport) {
  RedisReply reply;
  reply.type = Type::Error;
  reply.text = std::move(message);
  reply.transport_error = transport;
  return reply;
}

RedisEndpoint RedisEndpoint::parse(const std::string& url) {
  const std::string hint = "write redis://HOST:PORT[/DB] or unix:///PATH/TO/SOCKET[?db=N]";
  RedisEndpoint endpoint;
  if (url.rfind("unix://", 0) == 0) {
    std::string rest = url.substr(7);
    const auto query = rest.find('?');
    if (query != std::string::npos) {
      const std::string option = rest.substr(query + 1);
      rest.resize(query);
      auto db = option.rfind("db=", 0) == 0 ? parse_number(std::string_view(option).substr(3), 0, 65535) : std::nullopt;
      if (!db) throw core::Error("redis url '" + url + "': the only option a unix socket takes is ?db=N", hint);
      endpoint.database = static_cast<int>(*db);
    }
    if (rest.empty() || rest.front() != '/')
      throw core::Error("redis url '" + url + "': a unix socket needs an absolute path (unix:///run/redis.sock)", hint);
    endpoint.socket_path = rest;
    return endpoint;
  }
  if (url.rfind("rediss://", 0) == 0)
    throw core::Error("redis url '" + url + "': TLS to Redis is not supported by this build",
                      "reach Redis over loopback, a Unix socket or a TLS tunnel (stunnel, a sidecar)");
  if (url.rfind("redis://", 0) != 0) throw core::Error("redis url '" + url + "' must start with redis:// or unix://", hint);
  std::string rest = url.substr(8);
  if (rest.find('@') != std::string::npos)
    throw core::Error("redis url '" + url + "' carries credentials",
                      "keep the password out of the config: name an environment variable in redis.password_env");
  const auto slash = rest.find('/');
  if (slash != std::string::npos) {
    auto db = parse_number(std::string_view(rest).substr(slash + 1), 0, 65535);
    if (!db) throw core::Error("redis url '" + url + "': the database after '/' must be a number", hint);
    endpoint.database = static_cast<int>(*db);
    rest.resize(slash);
  }
  std::string port_text;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string::npos) throw core::Error("redis url '" + url + "': unterminated IPv6 address", hint);
    endpoint.host = rest.substr(1, close - 1);
    const std::string after = rest.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') throw core::Error("redis url '" + url + "': expected ':PORT' after the IPv6 address", hint);
      port_text = after.substr(1);
    }
  } else {
    const auto colon = rest.find(':');
    endpoint.host = rest.substr(0, colon);
    if (colon != std::string::npos) port_text = rest.substr(colon + 1);
  }
  if (endpoint.host.empty()) throw core::Error("redis url '" + url + "' names no host", hint);
  if (!port_text.empty()) {
    auto port = parse_number(port_text, 1, 65535);
    if (!port) throw core::Error("redis url '" + url + "': the port must be a number from 1 to 65535", hint);
    endpoint.port = static_cast<int>(*port);
  }
  return endpoint;
}

RedisScript::RedisScript(std::string source) : source_(std::move(source)), sha1_(sha1_hex(source_)) {}

struct RedisClient::Connection {
  redisContext* context = nullptr;
  explicit Connection(redisContext* c) : context(c) {}
  ~Connection() {
    if (context) redisFree(context);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
};

RedisClient::RedisClient(RedisClientOptions options) : options_(std::move(options)), endpoint_(RedisEndpoint::parse(options_.url)) {
  if (options_.max_queue == 0) options_.max_queue = 1;
  if (options_.timeout.count() <= 0) options_.timeout = std::chrono::milliseconds(1);
  if (options_.reconnect_min.count() <= 0) options_.reconnect_min = std::chrono::milliseconds(1);
  options_.reconnect_max = std::max(options_.reconnect_max, options_.reconnect_min);
  thread_ = std::thread([this] { run(); });
  std::unique_lock lock(mutex_);
  // Name resolution is not covered by hiredis's timeout, hence the extra second.
  connection_changed_.wait_for(lock, options_.timeout + std::chrono::seconds(1), [this] { return first_attempt_done_; });
}

RedisClient::~RedisClient() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_.notify_all();
  connection_changed_.notify_all();
  thread_.join();
}

void RedisClient::command(std::vector<std::string> arguments, RedisCallback done) {
  std::unique_lock lock(mutex_);
  std::string refusal;
  if (stopping_) {
    refusal = "redis client is shutting down";
  } else if (!connected_.load(std::memory_order_acquire)) {
    refusal = "redis at " + options_.url + " is unavailable" + (last_error_.empty() ? "" : ": " + last_error_);
  } else if (queue_.size() >= options_.max_queue) {
    refusal = "redis queue is full (" + std::to_string(options_.max_queue) + " commands waiting)";
  } else if (arguments.empty()) {
    refusal = "empty redis command";
  }
  if (!refusal.empty()) {
    lock.unlock();
    failed_fast_.fetch_add(1, std::memory_order_relaxed);
    deliver(done, RedisReply::error(std::move(refusal), true));
    return;
  }
  queue_.push_back(Pending{std::move(arguments), std::move(done)});
  lock.unlock();
  work_.notify_one();
}

void RedisClient::run_script(std::shared_ptr<const RedisScript> script, std::vector<std::string> keys,
                             std::vector<std::string> arguments, RedisCallback done) {
  auto call = std::make_shared<std::vector<std::string>>();
  call->reserve(3 + keys.size() + arguments.size());
  call->push_back("EVALSHA");
  call->push_back(script->sha1());
  call->push_back(std::to_string(keys.size()));
  for (auto& key : keys) call->push_back(std::move(key));
  for (auto& argument : arguments) call->push_back(std::move(argument));
  std::vector<std::string> first = *call;
  command(std::move(first), [this, script, call, done = std::move(done)](RedisReply reply) mutable {
    if (reply.is_error() && !reply.transport_error && reply.text.rfind("NOSCRIPT", 0) == 0) {
      // Redis lost its script cache (restart, SCRIPT FLUSH): load it and retry once. The queue keeps
      // order, so the load runs before the retry on the same connection.
      script_loads_.fetch_add(1, std::memory_order_relaxed);
      command({"SCRIPT", "LOAD", script->source()}, nullptr);
      command(std::move(*call), std::move(done));
      return;
    }
    deliver(done, std::move(reply));
  });
}

void RedisClient::preload(std::shared_ptr<const RedisScript> script) {
  std::lock_guard lock(mutex_);
  for (const auto& known : scripts_)
    if (known->sha1() == script->sha1()) return;
  scripts_.push_back(std::move(script));
}

bool RedisClient::wait_connected(std::chrono::milliseconds limit) const {
  std::unique_lock lock(mutex_);
  return connection_changed_.wait_for(lock, limit, [this] { return stopping_ || connected_.load(std::memory_order_acquire); }) &&
         connected_.load(std::memory_order_acquire);
}

RedisClientStats RedisClient::stats() const {
  RedisClientStats stats;
  stats.commands = commands_.load(std::memory_order_relaxed);
  stats.failed_fast = failed_fast_.load(std::memory_order_relaxed);
  stats.io_errors = io_errors_.load(std::memory_order_relaxed);
  stats.connects = connects_.load(std::memory_order_relaxed);
  stats.script_loads = script_loads_.load(std::memory_order_relaxed);
  stats.batches = batches_.load(std::memory_order_relaxed);
  stats.connected = connected();
  return stats;
}

std::string RedisClient::last_error() const {
  std::lock_guard lock(mutex_);
  return last_error_;
}

bool RedisClient::connect(std::string& error) {
  const timeval timeout = to_timeval(options_.timeout);
  redisContext* raw = endpoint_.socket_path.empty()
                          ? redisConnectWithTimeout(endpoint_.host.c_str(), endpoint_.port, timeout)
                          : redisConnectUnixWithTimeout(endpoint_.socket_path.c_str(), timeout);
  if (!raw) {
    error = "out of memory creating a redis connection";
    return false;
  }
  auto connection = std::make_unique<Connection>(raw);
  if (raw->err) {
    error = "cannot connect to " + options_.url + ": " + raw->errstr;
    return false;
  }
  // The same timeout bounds every later write and read, so a stalled server fails a batch instead of
  // hanging the pipeline.
  if (redisSetTimeout(raw, timeout) != REDIS_OK) {
    error = "cannot set the socket timeout for " + options_.url;
    return false;
  }
  if (endpoint_.socket_path.empty()) redisEnableKeepAlive(raw);

  auto run_now = [&](const std::vector<std::string>& arguments, std::string_view what) -> std::optional<RedisReply> {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const auto& argument : arguments) {
      argv.push_back(argument.data());
      lengths.push_back(argument.size());
    }
    void* reply = redisCommandArgv(raw, static_cast<int>(argv.size()), argv.data(), lengths.data());
    if (!reply) {
      error = std::string(what) + " on " + options_.url + " failed: " + raw->errstr;
      return std::nullopt;
    }
    RedisReply converted = convert(*static_cast<redisReply*>(reply));
    freeReplyObject(reply);
    if (converted.is_error()) {
      error = std::string(what) + " on " + options_.url + " failed: " + converted.text;
      return std::nullopt;
    }
    return converted;
  };

  if (!options_.password.empty() && !run_now({"AUTH", options_.password}, "AUTH")) return false;
  if (endpoint_.database != 0 && !run_now({"SELECT", std::to_string(endpoint_.database)}, "SELECT")) return false;
  // PING proves the server answers and that no password is missing.
  if (!run_now({"PING"}, "PING")) return false;
  std::vector<std::shared_ptr<const RedisScript>> scripts;
  {
    std::lock_guard lock(mutex_);
    scripts = scripts_;
  }
  for (const auto& script : scripts) {
    script_loads_.fetch_add(1, std::memory_order_relaxed);
    auto loaded = run_now({"SCRIPT", "LOAD", script->source()}, "SCRIPT LOAD");
    if (!loaded) return false;
    if (loaded->text != script->sha1()) {
      error = "SCRIPT LOAD on " + options_.url + " returned digest " + loaded->text + ", expected " + script->sha1();
      return false;
    }
  }
  connection_ = std::move(connection);
  return true;
}

void RedisClient::fail_queue(const std::string& message) {
  std::deque<Pending> failed;
  {
    std::lock_guard lock(mutex_);
    failed.swap(queue_);
  }
  for (auto& pending : failed) {
    failed_fast_.fetch_add(1, std::memory_order_relaxed);
    deliver(pending.done, RedisReply::error(message, true));
  }
}

void RedisClient::run_batch(std::deque<Pending>& batch) {
  redisContext* context = connection_->context;
  for (const auto& pending : batch) {
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    argv.reserve(pending.arguments.size());
    lengths.reserve(pending.arguments.size());
    for (const auto& argument : pending.arguments) {
      argv.push_back(argument.data());
      lengths.push_back(argument.size());
    }
    redisAppendCommandArgv(context, static_cast<int>(argv.size()), argv.data(), lengths.data());
  }
  batches_.fetch_add(1, std::memory_order_relaxed);
  commands_.fetch_add(batch.size(), std::memory_order_relaxed);
  std::size_t answered = 0;
  std::string failure;
  for (; answered < batch.size(); ++answered) {
    void* raw = nullptr;
    if (redisGetReply(context, &raw) != REDIS_OK || !raw) {
      failure = context->err ? std::string(context->errstr) : std::string("no reply");
      break;
    }
    RedisReply reply = convert(*static_cast<redisReply*>(raw));
    freeReplyObject(raw);
    deliver(batch[answered].done, std::move(reply));
  }
  if (answered == batch.size()) return;

  // The connection is in an unknown state (a reply may be half read): drop it, fail what it carried
  // and what waits, and let run() reconnect with backoff.
  io_errors_.fetch_add(1, std::memory_order_relaxed);
  connection_.reset();
  const std::string message = "redis at " + options_.url + " failed: " + failure;
  {
    std::lock_guard lock(mutex_);
    connected_.store(false, std::memory_order_release);
    last_error_ = message;
  }
  connection_changed_.notify_all();
  for (; answered < batch.size(); ++answered) deliver(batch[answered].done, RedisReply::error(message, true));
  fail_queue(message);
}

void RedisClient::run() {
  // hiredis writes with write(2): a peer that vanished would raise SIGPIPE and kill the process.
  // Blocked here, the signal stays pending on this thread only and write() returns EPIPE instead.
  sigset_t pipe_only;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe_only, nullptr);

  auto backoff = options_.reconnect_min;
  std::deque<Pending> batch;
  for (;;) {
    if (!connection_) {
      std::string error;
      const bool ok = connect(error);
      {
        std::lock_guard lock(mutex_);
        first_attempt_done_ = true;
        if (ok) {
          connected_.store(true, std::memory_order_release);
          last_error_.clear();
        } else {
          last_error_ = error;
        }
      }
      connection_changed_.notify_all();
      if (ok) {
        connects_.fetch_add(1, std::memory_order_relaxed);
        backoff = options_.reconnect_min;
      } else {
        std::unique_lock lock(mutex_);
        if (work_.wait_for(lock, backoff, [this] { return stopping_; })) break;
        backoff = std::min(backoff * 2, options_.reconnect_max);
        continue;
      }
    }
    {
      std::unique_lock lock(mutex_);
      work_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) break;
      const std::size_t take = std::min(queue_.size(), kMaxBatch);
      for (std::size_t i = 0; i < take; ++i) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    run_batch(batch);
    batch.clear();
  }
  connection_.reset();
  {
    std::lock_guard lock(mutex_);
    connected_.store(false, std::memory_order_release);
  }
  connection_changed_.notify_all();
  fail_queue("redis client is shutting down");
  // Drain the SIGPIPE this thread may hold pending, so it is not delivered if the mask ever changes.
  timespec zero{};
  while (sigtimedwait(&pipe_only, nullptr, &zero) > 0) {
  }
}

std::unique_ptr<RedisClient> make_redis_client(const YAML::Node& section, const std::string& config_file) {
  if (!section.IsMap())
    throw_config_error(config_file, section, "redis: must be a mapping",
                       "e.g. redis: {url: redis://127.0.0.1:6379, password_env: AEGIS_REDIS_PASSWORD}");
  for (const auto& item : section) {
    const auto key = item.first.as<std::string>();
    if (key != "url" && key != "password_env" && key != "timeout_ms" && key != "max_queue")
      throw_config_error(config_file, item.first, "unknown redis option '" + key + "'",
                         "redis takes url, password_env, timeout_ms and max_queue");
  }
  RedisClientOptions options;
  auto number = [&](const char* name, long low, long high) -> long {
    const YAML::Node node = section[name];
    std::optional<long> value;
    if (node.IsScalar()) value = parse_number(node.Scalar(), low, high);
    if (!value)
      throw_config_error(config_file, node, std::string("redis.") + name + " must be a whole number from " + std::to_string(low) +
                                                " to " + std::to_string(high));
    return *value;
  };
  if (const auto url = section["url"]) {
    if (!url.IsScalar()) throw_config_error(config_file, url, "redis.url must be a string such as redis://127.0.0.1:6379");
    options.url = url.Scalar();
    try {
      RedisEndpoint::parse(options.url);
    } catch (const core::Error& e) {
      throw_config_error(config_file, url, e.what(), e.hint());
    }
  }
  if (const auto env = section["password_env"]) {
    if (!env.IsScalar() || env.Scalar().empty())
      throw_config_error(config_file, env, "redis.password_env must name an environment variable");
    const char* value = std::getenv(env.Scalar().c_str());
    if (!value || !*value)
      throw_config_error(config_file, env, "environment variable " + env.Scalar() + " (redis.password_env) is not set",
                         "export " + env.Scalar() + " with the Redis password before starting the gateway");
    options.password = value;
  }
  if (section["timeout_ms"]) options.timeout = std::chrono::milliseconds(number("timeout_ms", 1, 60'000));
  if (section["max_queue"]) options.max_queue = static_cast<std::size_t>(number("max_queue", 1, 10'000'000));
  return std::make_unique<RedisClient>(std::move(options));
}

}  // namespace aegis::gateway
