// A pipelining Redis client for state the gateway's replicas share (rate limits, detector counters):
// one I/O thread per client, completion callbacks instead of blocking calls, fail-fast while down.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace YAML {
class Node;
}

namespace aegis::gateway {

// A reply as Redis sent it, or a client-side failure (not connected, queue full, I/O error), which
// arrives as an Error reply whose `transport_error` is set.
struct RedisReply {
  enum class Type { Error, Status, String, Integer, Nil, Array };
  Type type = Type::Nil;
  std::string text;  // Error, Status and String replies
  long long integer = 0;
  std::vector<RedisReply> elements;
  bool transport_error = false;  // the command may not have reached Redis

  bool is_error() const { return type == Type::Error; }
  static RedisReply error(std::string message, bool transport);
};

using RedisCallback = std::function<void(RedisReply)>;

// Where and how to connect. `url` is redis://host[:port][/db] (IPv6 hosts in brackets) or
// unix:///path/to/socket[?db=N].
struct RedisClientOptions {
  std::string url = "redis://127.0.0.1:6379";
  std::string password;  // AUTH after connecting; empty: none
  std::chrono::milliseconds timeout{250};  // connect, and each write/read of a pipelined batch
  std::size_t max_queue = 100'000;         // commands waiting for the I/O thread; more fail at once
  std::chrono::milliseconds reconnect_min{50};
  std::chrono::milliseconds reconnect_max{2'000};
};

// The parsed endpoint of a RedisClientOptions::url. Throws core::Error on a malformed URL.
struct RedisEndpoint {
  std::string host;         // empty for a Unix socket
  int port = 6379;
  std::string socket_path;  // set for unix://
  int database = 0;
  static RedisEndpoint parse(const std::string& url);
};

// A Lua script that the client loads with SCRIPT LOAD and runs with EVALSHA.
class RedisScript {
 public:
  explicit RedisScript(std::string source);
  const std::string& source() const { return source_; }
  const std::string& sha1() const { return sha1_; }  // lower-case hex, as Redis names it

 private:
  std::string source_;
  std::string sha1_;
};

struct RedisClientStats {
  std::uint64_t commands = 0;        // handed to Redis
  std::uint64_t failed_fast = 0;     // answered with an error without reaching Redis
  std::uint64_t io_errors = 0;       // connections lost mid-batch
  std::uint64_t connects = 0;        // successful (re)connections
  std::uint64_t script_loads = 0;    // SCRIPT LOAD sent (on connect and after NOSCRIPT)
  std::uint64_t batches = 0;         // pipelined round trips
  bool connected = false;
};

class RedisClient {
 public:
  // Starts the I/O thread and waits (at most options.timeout) for the first connection attempt, so
  // that a gateway started next to a healthy Redis does not fail its first requests.
  explicit RedisClient(RedisClientOptions options);
  // Stops the I/O thread; commands still queued get an error reply.
  ~RedisClient();
  RedisClient(const RedisClient&) = delete;
  RedisClient& operator=(const RedisClient&) = delete;

  // Queues one command (each argument one binary-safe string). `done` runs exactly once: from the
  // I/O thread with Redis's reply, or before command() returns when the client is down, the queue
  // is full or the client is stopping. Callbacks must be quick: they hold up the pipeline.
  void command(std::vector<std::string> arguments, RedisCallback done);
  // EVALSHA with the script's digest; on NOSCRIPT (Redis restarted or SCRIPT FLUSH) loads it again
  // and retries once.
  void run_script(std::shared_ptr<const RedisScript> script, std::vector<std::string> keys,
                  std::vector<std::string> arguments, RedisCallback done);
  // Scripts loaded again after every (re)connection.
  void preload(std::shared_ptr<const RedisScript> script);

  bool connected() const { return connected_.load(std::memory_order_acquire); }
  // Blocks until connected or until `limit` passed; for start-up checks and tests.
  bool wait_connected(std::chrono::milliseconds limit) const;
  RedisClientStats stats() const;
  std::string last_error() const;  // why the last connection attempt or batch failed; empty when healthy
  const RedisEndpoint& endpoint() const { return endpoint_; }

 private:
  struct Pending {
    std::vector<std::string> arguments;
    RedisCallback done;
  };
  struct Connection;

  void run();
  bool connect(std::string& error);
  void fail_queue(const std::string& message);
  void run_batch(std::deque<Pending>& batch);

  RedisClientOptions options_;
  RedisEndpoint endpoint_;
  std::unique_ptr<Connection> connection_;  // only the I/O thread touches it

  mutable std::mutex mutex_;  // guards queue_, stopping_, scripts_, last_error_ and the first-attempt flag
  std::condition_variable work_;                     // the I/O thread waits here for commands
  mutable std::condition_variable connection_changed_;  // wait_connected() and the constructor wait here
  std::deque<Pending> queue_;
  bool stopping_ = false;
  bool first_attempt_done_ = false;
  std::vector<std::shared_ptr<const RedisScript>> scripts_;

  std::atomic<bool> connected_{false};
  std::atomic<std::uint64_t> commands_{0};
  std::atomic<std::uint64_t> failed_fast_{0};
  std::atomic<std::uint64_t> io_errors_{0};
  std::atomic<std::uint64_t> connects_{0};
  std::atomic<std::uint64_t> script_loads_{0};
  std::atomic<std::uint64_t> batches_{0};
  std::string last_error_;  // guarded by mutex_
  std::thread thread_;
};

// Builds the client for the gateway's `redis:` section: {url, password_env, timeout_ms, max_queue}.
// Bad values throw core::Error naming FILE:LINE:COLUMN. A Redis that is down is not an error here:
// the client keeps reconnecting and the filters apply their on_backend_error policy meanwhile.
std::unique_ptr<RedisClient> make_redis_client(const YAML::Node& redis_section, const std::string& config_file);

}  // namespace aegis::gateway
