#include "aegis/assess/job_queue.h"

#include <hiredis.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <signal.h>
#include <sys/time.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string_view>

#include "aegis/core/error.h"
#include "aegis/gateway/redis_client.h"

namespace aegis::assess {
namespace {

using std::chrono::milliseconds;

// XADDs per pipelined round trip: large enough that thousands of jobs take a few round trips, small
// enough that a failure in the middle leaves a short span whose fate is unknown.
constexpr std::size_t kPipelineChunk = 512;
// XAUTOCLAIM calls per next(); each examines up to ten pending entries (COUNT 1 × Redis's factor 10).
constexpr int kMaxClaimScans = 64;
// What a dead letter keeps of the entry it replaces: enough to see what it was, not a copy of a flood.
constexpr std::size_t kDeadLetterPayloadBytes = 64 * 1024;
constexpr std::size_t kMaxConsumerName = 256;
constexpr const char* kJobField = "job";
constexpr const char* kSignatureField = "sig";

// Atomic, so that a heartbeat never takes an entry back from a consumer that claimed it meanwhile
// (that would leave two workers each believing the job is theirs, taking it from each other).
constexpr const char* kTouchScript = R"lua(
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #pending == 0 then return 0 end
if pending[1][2] ~= ARGV[2] then return 2 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
)lua";

struct ReplyDeleter {
  void operator()(redisReply* reply) const {
    if (reply) freeReplyObject(reply);
  }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

timeval to_timeval(milliseconds duration) {
  timeval value{};
  value.tv_sec = static_cast<time_t>(duration.count() / 1000);
  value.tv_usec = static_cast<suseconds_t>((duration.count() % 1000) * 1000);
  return value;
}

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }

bool is_error(const redisReply* reply) { return reply && reply->type == REDIS_REPLY_ERROR; }
bool is_array(const redisReply* reply) { return reply && reply->type == REDIS_REPLY_ARRAY; }
bool is_text(const redisReply* reply) {
  return reply && (reply->type == REDIS_REPLY_STRING || reply->type == REDIS_REPLY_STATUS || reply->type == REDIS_REPLY_ERROR);
}
std::string text_of(const redisReply* reply) { return is_text(reply) ? std::string(reply->str, reply->len) : std::string(); }

// Redis sends some counts as integers and, inside XINFO maps, some as strings.
std::uint64_t number_of(const redisReply* reply) {
  if (!reply) return 0;
  if (reply->type == REDIS_REPLY_INTEGER) return reply->integer > 0 ? static_cast<std::uint64_t>(reply->integer) : 0;
  if (is_text(reply)) return std::strtoull(text_of(reply).c_str(), nullptr, 10);
  return 0;
}

std::string hint_for(std::string_view error) {
  if (starts_with(error, "WRONGTYPE"))
    return "the key holds something other than a stream: choose another stream name, or delete the key if it is stale";
  if (starts_with(error, "NOAUTH"))
    return "Redis wants a password: set AEGIS_REDIS_PASSWORD or write redis://:PASSWORD@HOST:PORT";
  if (starts_with(error, "WRONGPASS") || error.find("invalid password") != std::string_view::npos)
    return "check AEGIS_REDIS_PASSWORD or the password in the URL";
  if (starts_with(error, "OOM"))
    return "Redis reached its maxmemory: start workers to drain the queue, or raise maxmemory";
  if (starts_with(error, "READONLY")) return "this Redis is a read-only replica: point the URL at the primary";
  if (starts_with(error, "NOPERM")) return "the Redis user lacks a permission: grant it the stream commands (+@stream) and EVAL on these keys";
  if (error.find("unknown command") != std::string_view::npos)
    return "the job queue needs Redis 7.0 or newer (XAUTOCLAIM, XINFO, consumer groups)";
  return "see the Redis server's log";
}

std::string hex(const unsigned char* data, std::size_t length) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(length * 2);
  for (std::size_t i = 0; i < length; ++i) {
    out += kDigits[data[i] >> 4];
    out += kDigits[data[i] & 0x0f];
  }
  return out;
}

std::string percent_decode(std::string_view text, const std::string& display_url) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '%') {
      out += text[i];
      continue;
    }
    if (i + 2 >= text.size() || digit(text[i + 1]) < 0 || digit(text[i + 2]) < 0)
      throw core::Error("redis url '" + display_url + "': a '%' in the credentials must be followed by two hex digits",
                        "percent-encode special characters of the password (%40 for '@', %25 for '%')");
    out += static_cast<char>(digit(text[i + 1]) * 16 + digit(text[i + 2]));
    i += 2;
  }
  return out;
}

// hiredis writes with write(2): a server that vanished raises SIGPIPE, whose default action kills the
// process. Blocked on this thread for one exchange, the signal stays pending, write() fails with
// EPIPE and the exchange reports a lost connection instead.
class SigpipeBlocked {
 public:
  SigpipeBlocked() {
    sigemptyset(&pipe_);
    sigaddset(&pipe_, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_, &previous_);
  }
  ~SigpipeBlocked() {
    // A SIGPIPE raised meanwhile is consumed here, so that unblocking does not deliver it. When the
    // caller had it blocked already, what is pending is the caller's business.
    if (sigismember(&previous_, SIGPIPE) != 1) {
      timespec zero{};
      while (sigtimedwait(&pipe_, nullptr, &zero) > 0) {
      }
    }
    pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
  }
  SigpipeBlocked(const SigpipeBlocked&) = delete;
  SigpipeBlocked& operator=(const SigpipeBlocked&) = delete;

 private:
  sigset_t pipe_{};
  sigset_t previous_{};
};

}  // namespace

// A stream entry as read from Redis, before its payload is trusted.
struct RedisJobQueue::Entry {
  std::string id;
  std::optional<std::string> payload;    // the "job" field
  std::optional<std::string> signature;  // the "sig" field
  std::size_t job_fields = 0;            // how many "job" fields the entry has (one is right)
  bool claimed = false;                  // taken over from a silent consumer
  std::uint64_t delivery_count = 1;
};

// An entry's [field, value, ...] list: the job and its signature; other fields are ignored.
void RedisJobQueue::read_fields(const redisReply* fields, Entry& entry) {
  for (std::size_t f = 0; f + 1 < fields->elements; f += 2) {
    const std::string name = text_of(fields->element[f]);
    if (name == kJobField) {
      ++entry.job_fields;
      entry.payload = text_of(fields->element[f + 1]);
    } else if (name == kSignatureField) {
      entry.signature = text_of(fields->element[f + 1]);
    }
  }
}

struct RedisJobQueue::Connection {
  Connection(redisContext* raw, std::string url, milliseconds timeout)
      : context(raw), display_url(std::move(url)), command_timeout(timeout) {}
  ~Connection() {
    if (context) redisFree(context);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  redisContext* context;
  std::string display_url;
  milliseconds command_timeout;
  bool broken = false;  // an I/O error left the protocol state unknown: the next call reconnects

  [[noreturn]] void fail(std::string_view what) {
    broken = true;
    std::string reason = context->errstr[0] ? context->errstr : "the connection was lost";
    if (context->err == REDIS_ERR_IO && reason.find("temporarily unavailable") != std::string::npos)
      reason = "no answer within the command timeout (" + std::to_string(command_timeout.count()) + " ms)";
    throw core::Error(std::string(what) + " on Redis at " + display_url + " failed: " + reason,
                      "check that Redis runs there and is reachable; the next call connects again");
  }

  // One command. Error replies come back as replies; a lost connection throws. `extra_wait` lengthens
  // the socket timeout for a command that blocks on the server (XREADGROUP BLOCK).
  Reply run(const std::vector<std::string>& arguments, std::string_view what, milliseconds extra_wait = milliseconds(0)) {
    SigpipeBlocked guard;
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    argv.reserve(arguments.size());
    lengths.reserve(arguments.size());
    for (const auto& argument : arguments) {
      argv.push_back(argument.data());
      lengths.push_back(argument.size());
    }
    if (extra_wait.count() > 0) redisSetTimeout(context, to_timeval(command_timeout + extra_wait));
    void* raw = redisCommandArgv(context, static_cast<int>(argv.size()), argv.data(), lengths.data());
    if (!raw) fail(what);
    if (extra_wait.count() > 0) redisSetTimeout(context, to_timeval(command_timeout));
    return Reply(static_cast<redisReply*>(raw));
  }

  // Several commands in one round trip; the replies in order. `answered` counts replies received, so
  // that a caller can tell how far a failed pipeline got.
  std::vector<Reply> run_all(const std::vector<std::vector<std::string>>& commands, std::string_view what,
                             std::size_t* answered = nullptr) {
    SigpipeBlocked guard;
    if (answered) *answered = 0;
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const auto& command : commands) {
      argv.clear();
      lengths.clear();
      for (const auto& argument : command) {
        argv.push_back(argument.data());
        lengths.push_back(argument.size());
      }
      if (redisAppendCommandArgv(context, static_cast<int>(argv.size()), argv.data(), lengths.data()) != REDIS_OK) fail(what);
    }
    std::vector<Reply> replies;
    replies.reserve(commands.size());
    for (std::size_t i = 0; i < commands.size(); ++i) {
      void* raw = nullptr;
      if (redisGetReply(context, &raw) != REDIS_OK || !raw) fail(what);
      replies.emplace_back(static_cast<redisReply*>(raw));
      if (answered) ++*answered;
    }
    return replies;
  }
};

namespace {

[[noreturn]] void throw_reply_error(const redisReply* reply, std::string_view what, const std::string& display_url) {
  const std::string error = text_of(reply);
  throw core::Error(std::string(what) + " on Redis at " + display_url + " failed: " + error, hint_for(error));
}

[[noreturn]] void throw_unexpected(std::string_view what, const std::string& display_url) {
  throw core::Error(std::string("unexpected reply to ") + std::string(what) + " from Redis at " + display_url,
                    "the job queue needs Redis 7.0 or newer; check what listens at that address");
}

}  // namespace

RedisJobQueue::RedisJobQueue(const std::string& url, RedisJobQueueOptions options) : options_(std::move(options)) {
  display_url_ = url;
  std::string endpoint_url = url;
  std::string url_password;
  if (starts_with(url, "redis://")) {
    // Credentials end at the last '@': a host, port or database never holds one, a password may.
    const auto at = url.rfind('@');
    if (at != std::string::npos) {
      display_url_ = "redis://***@" + url.substr(at + 1);
      const std::string_view userinfo = std::string_view(url).substr(8, at - 8);
      const auto colon = userinfo.find(':');
      if (colon == std::string_view::npos)
        throw core::Error("redis url '" + display_url_ + "' names a user without a password",
                          "write redis://:PASSWORD@HOST:PORT or redis://USER:PASSWORD@HOST:PORT, or set AEGIS_REDIS_PASSWORD");
      username_ = percent_decode(userinfo.substr(0, colon), display_url_);
      url_password = percent_decode(userinfo.substr(colon + 1), display_url_);
      endpoint_url = "redis://" + url.substr(at + 1);
    }
  }
  gateway::RedisEndpoint endpoint;
  try {
    endpoint = gateway::RedisEndpoint::parse(endpoint_url);
  } catch (const core::Error& error) {
    // parse() quotes the URL it was given, which no longer holds the password.
    throw core::Error(std::string("job queue: ") + error.what(),
                      "write --workers redis://[:PASSWORD@]HOST[:PORT][/DB] or unix:///PATH/TO/SOCKET[?db=N]");
  }
  host_ = endpoint.host;
  port_ = endpoint.port;
  socket_path_ = endpoint.socket_path;
  database_ = endpoint.database;

  if (options_.password.empty()) options_.password = url_password;
  if (options_.password.empty())
    if (const char* from_environment = std::getenv("AEGIS_REDIS_PASSWORD")) options_.password = from_environment;

  if (options_.stream.empty() || options_.group.empty())
    throw core::Error("job queue: the stream and group names must not be empty", "leave them at their defaults");
  if (options_.claim_idle.count() <= 0)
    throw core::Error("job queue: claim_idle must be positive", "give the time after which a silent worker's job is retried");
  if (options_.connect_timeout.count() <= 0 || options_.command_timeout.count() <= 0)
    throw core::Error("job queue: the connect and command timeouts must be positive", "leave them at their defaults");
}

RedisJobQueue::~RedisJobQueue() = default;
RedisJobQueue::RedisJobQueue(RedisJobQueue&&) noexcept = default;
RedisJobQueue& RedisJobQueue::operator=(RedisJobQueue&&) noexcept = default;

redisContext* RedisJobQueue::connection() {
  if (connection_ && !connection_->broken) return connection_->context;
  connection_.reset();
  group_ready_ = false;
  autoclaim_cursor_ = "0-0";

  SigpipeBlocked guard;
  const timeval timeout = to_timeval(options_.connect_timeout);
  redisContext* raw = socket_path_.empty() ? redisConnectWithTimeout(host_.c_str(), port_, timeout)
                                           : redisConnectUnixWithTimeout(socket_path_.c_str(), timeout);
  if (!raw) throw core::Error("cannot connect to Redis at " + display_url_ + ": out of memory", "free memory and try again");
  auto fresh = std::make_unique<Connection>(raw, display_url_, options_.command_timeout);
  if (raw->err)
    throw core::Error("cannot connect to Redis at " + display_url_ + ": " + raw->errstr,
                      "start Redis there or correct the URL (redis://[:PASSWORD@]HOST[:PORT][/DB]); the next call tries again");
  if (redisSetTimeout(raw, to_timeval(options_.command_timeout)) != REDIS_OK)
    throw core::Error("cannot set the socket timeout for Redis at " + display_url_, "check the system's socket limits");
  if (socket_path_.empty()) redisEnableKeepAlive(raw);

  if (!options_.password.empty()) {
    std::vector<std::string> auth = {"AUTH"};
    if (!username_.empty()) auth.push_back(username_);
    auth.push_back(options_.password);
    const Reply reply = fresh->run(auth, "AUTH");
    if (is_error(reply.get()))
      throw core::Error("Redis at " + display_url_ + " refused the password: " + text_of(reply.get()),
                        "check AEGIS_REDIS_PASSWORD or the password in the URL");
  }
  if (database_ != 0) {
    const Reply reply = fresh->run({"SELECT", std::to_string(database_)}, "SELECT");
    if (is_error(reply.get())) throw_reply_error(reply.get(), "SELECT " + std::to_string(database_), display_url_);
  }
  // PING proves that the server answers and that no password is missing.
  const Reply pong = fresh->run({"PING"}, "PING");
  if (is_error(pong.get())) {
    if (starts_with(text_of(pong.get()), "NOAUTH"))
      throw core::Error("Redis at " + display_url_ + " requires a password", hint_for("NOAUTH"));
    throw_reply_error(pong.get(), "PING", display_url_);
  }
  connection_ = std::move(fresh);
  return connection_->context;
}

void RedisJobQueue::ping() { connection(); }

void RedisJobQueue::ensure_group() {
  connection();
  if (group_ready_) return;
  // From id 0, so that jobs added before any group existed are delivered too.
  const Reply reply = connection_->run({"XGROUP", "CREATE", options_.stream, options_.group, "0", "MKSTREAM"}, "XGROUP CREATE");
  if (is_error(reply.get()) && !starts_with(text_of(reply.get()), "BUSYGROUP"))
    throw_reply_error(reply.get(), "creating the consumer group '" + options_.group + "' on '" + options_.stream + "'",
                      display_url_);
  group_ready_ = true;
}

std::string RedisJobQueue::signature(const std::string& payload) const {
  // Bound to the stream's name, so that a job signed for one queue is not accepted from another.
  const std::string message = "aegis-job-v1\n" + options_.stream + "\n" + payload;
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned length = 0;
  if (!HMAC(EVP_sha256(), options_.signing_key.data(), static_cast<int>(options_.signing_key.size()),
            reinterpret_cast<const unsigned char*>(message.data()), message.size(), digest, &length))
    throw core::Error("OpenSSL could not compute HMAC-SHA256 for a job", "check the OpenSSL installation");
  return hex(digest, length);
}

void RedisJobQueue::enqueue(const std::vector<Job>& jobs) {
  if (jobs.empty()) return;
  // Every job is written before any is sent: one that cannot be written fails the call with nothing queued.
  std::vector<std::string> payloads;
  payloads.reserve(jobs.size());
  for (const auto& job : jobs) payloads.push_back(to_json(job));

  ensure_group();
  const Reply length = connection_->run({"XLEN", options_.stream}, "XLEN");
  if (is_error(length.get())) throw_reply_error(length.get(), "reading the length of '" + options_.stream + "'", display_url_);
  const std::uint64_t queued = number_of(length.get());
  if (queued + jobs.size() > options_.max_stream_length)
    throw core::Error("the job stream '" + options_.stream + "' on " + display_url_ + " holds " + std::to_string(queued) +
                          " entries; adding " + std::to_string(jobs.size()) + " would pass its limit of " +
                          std::to_string(options_.max_stream_length),
                      "start workers (aegis worker) to drain it, or raise the queue's maximum length");

  std::size_t added = 0;
  std::vector<std::vector<std::string>> commands;
  while (added < payloads.size()) {
    const std::size_t chunk = std::min(kPipelineChunk, payloads.size() - added);
    commands.clear();
    for (std::size_t i = added; i < added + chunk; ++i) {
      std::vector<std::string> command = {"XADD", options_.stream, "*", kJobField, payloads[i]};
      if (!options_.signing_key.empty()) {
        command.emplace_back(kSignatureField);
        command.push_back(signature(payloads[i]));
      }
      commands.push_back(std::move(command));
    }
    std::size_t answered = 0;
    std::vector<Reply> replies;
    try {
      replies = connection_->run_all(commands, "XADD", &answered);
    } catch (const core::Error& error) {
      throw core::Error(std::string(error.what()) + " after " + std::to_string(added + answered) + " of " +
                            std::to_string(jobs.size()) + " jobs were queued (the next " +
                            std::to_string(chunk - answered) + " may or may not have been)",
                        error.hint() + "; queueing all jobs again is safe: results are recorded once per job key");
    }
    for (std::size_t i = 0; i < replies.size(); ++i)
      if (is_error(replies[i].get()))
        throw_reply_error(replies[i].get(),
                          "XADD of job " + std::to_string(added + i + 1) + " of " + std::to_string(jobs.size()) + " to '" +
                              options_.stream + "' (the jobs before it were queued)",
                          display_url_);
    added += chunk;
  }
}

namespace {

// Reads one entry, [id, [field, value, ...]], of an XREADGROUP or XAUTOCLAIM reply.
bool read_entry(const redisReply* raw, std::string& id, const redisReply*& fields) {
  if (!is_array(raw) || raw->elements != 2 || !is_text(raw->element[0])) return false;
  id = text_of(raw->element[0]);
  fields = raw->element[1];
  return true;
}

}  // namespace

std::optional<RedisJobQueue::Entry> RedisJobQueue::claim_abandoned(const std::string& consumer) {
  for (int scan = 0; scan < kMaxClaimScans; ++scan) {
    const std::vector<std::string> command = {"XAUTOCLAIM", options_.stream, options_.group, consumer,
                                              std::to_string(options_.claim_idle.count()), autoclaim_cursor_, "COUNT", "1"};
    Reply reply = connection_->run(command, "XAUTOCLAIM");
    if (is_error(reply.get()) && starts_with(text_of(reply.get()), "NOGROUP")) {
      // The stream or its group vanished (deleted, or Redis restarted empty): make them again.
      group_ready_ = false;
      ensure_group();
      reply = connection_->run(command, "XAUTOCLAIM");
    }
    if (is_error(reply.get())) throw_reply_error(reply.get(), "XAUTOCLAIM on '" + options_.stream + "'", display_url_);
    const redisReply* top = reply.get();
    if (!is_array(top) || top->elements < 2 || !is_text(top->element[0]) || !is_array(top->element[1]))
      throw_unexpected("XAUTOCLAIM", display_url_);
    autoclaim_cursor_ = text_of(top->element[0]);
    const redisReply* entries = top->element[1];
    for (std::size_t i = 0; i < entries->elements; ++i) {
      Entry entry;
      const redisReply* fields = nullptr;
      if (!read_entry(entries->element[i], entry.id, fields)) throw_unexpected("XAUTOCLAIM", display_url_);
      entry.claimed = true;
      if (!is_array(fields)) {
        // Redis before 7.0 hands out an entry deleted from the stream with no fields: nothing to run.
        const Reply ack = connection_->run({"XACK", options_.stream, options_.group, entry.id}, "XACK");
        if (is_error(ack.get())) throw_reply_error(ack.get(), "XACK of a deleted entry", display_url_);
        continue;
      }
      read_fields(fields, entry);
      return entry;
    }
    if (autoclaim_cursor_ == "0-0") return std::nullopt;  // the whole pending list was looked at
  }
  return std::nullopt;
}

std::optional<RedisJobQueue::Entry> RedisJobQueue::read_new(const std::string& consumer, milliseconds block) {
  std::vector<std::string> command = {"XREADGROUP", "GROUP", options_.group, consumer, "COUNT", "1"};
  // BLOCK 0 would wait forever: no wait is asked by leaving BLOCK out.
  if (block.count() > 0) {
    command.emplace_back("BLOCK");
    command.push_back(std::to_string(block.count()));
  }
  command.emplace_back("STREAMS");
  command.push_back(options_.stream);
  command.emplace_back(">");
  Reply reply = connection_->run(command, "XREADGROUP", block);
  if (is_error(reply.get()) && starts_with(text_of(reply.get()), "NOGROUP")) {
    group_ready_ = false;
    ensure_group();
    reply = connection_->run(command, "XREADGROUP", block);
  }
  if (is_error(reply.get())) throw_reply_error(reply.get(), "XREADGROUP on '" + options_.stream + "'", display_url_);
  const redisReply* top = reply.get();
  if (top->type == REDIS_REPLY_NIL) return std::nullopt;
  // [[stream, [[id, [field, value, ...]]]]]
  if (!is_array(top) || top->elements != 1 || !is_array(top->element[0]) || top->element[0]->elements != 2 ||
      !is_array(top->element[0]->element[1]))
    throw_unexpected("XREADGROUP", display_url_);
  const redisReply* entries = top->element[0]->element[1];
  if (entries->elements == 0) return std::nullopt;
  Entry entry;
  const redisReply* fields = nullptr;
  if (!read_entry(entries->element[0], entry.id, fields) || !is_array(fields)) throw_unexpected("XREADGROUP", display_url_);
  read_fields(fields, entry);
  return entry;
}

void RedisJobQueue::dead_letter(const Entry& entry, const std::string& consumer, const std::string& reason) {
  const std::string payload = entry.payload.value_or("");
  std::vector<std::string> command = {"XADD", dead_letter_stream()};
  if (options_.max_dead_letters > 0) {
    command.insert(command.end(), {"MAXLEN", "~", std::to_string(options_.max_dead_letters)});
  }
  command.insert(command.end(), {"*", "entry", entry.id, "reason", reason, "consumer", consumer, "delivery_count",
                                 std::to_string(entry.delivery_count), "payload_bytes", std::to_string(payload.size()),
                                 "payload", payload.substr(0, kDeadLetterPayloadBytes)});
  // The dead letter is written before the entry is acknowledged: if this fails, the entry stays
  // pending and comes back after claim_idle, instead of vanishing.
  const Reply added = connection_->run(command, "XADD to the dead-letter stream");
  if (is_error(added.get())) throw_reply_error(added.get(), "XADD to '" + dead_letter_stream() + "'", display_url_);
  const auto replies = connection_->run_all(
      {{"XACK", options_.stream, options_.group, entry.id}, {"XDEL", options_.stream, entry.id}}, "XACK of a dead letter");
  for (const auto& reply : replies)
    if (is_error(reply.get())) throw_reply_error(reply.get(), "acknowledging dead letter " + entry.id, display_url_);
}

std::optional<DeliveredJob> RedisJobQueue::accept(Entry entry, const std::string& consumer) {
  if (entry.claimed) {
    // XAUTOCLAIM counted this delivery; XPENDING says how many there were.
    const Reply reply = connection_->run({"XPENDING", options_.stream, options_.group, entry.id, entry.id, "1"}, "XPENDING");
    if (is_error(reply.get())) throw_reply_error(reply.get(), "XPENDING on '" + options_.stream + "'", display_url_);
    if (!is_array(reply.get())) throw_unexpected("XPENDING", display_url_);
    if (reply->elements == 0) return std::nullopt;  // acknowledged by its first worker in the meantime
    const redisReply* row = reply->element[0];
    if (!is_array(row) || row->elements < 4) throw_unexpected("XPENDING", display_url_);
    entry.delivery_count = number_of(row->element[3]);
    if (options_.max_deliveries > 0 && entry.delivery_count > options_.max_deliveries) {
      dead_letter(entry, consumer,
                  "delivered " + std::to_string(entry.delivery_count) +
                      " times without an acknowledgement: every worker that took it died or went silent for longer than "
                      "claim_idle; run it by hand to see why");
      return std::nullopt;
    }
  }
  if (entry.job_fields != 1 || !entry.payload) {
    dead_letter(entry, consumer,
                entry.job_fields == 0 ? "entry has no 'job' field" : "entry has more than one 'job' field");
    return std::nullopt;
  }
  if (!options_.signing_key.empty()) {
    if (!entry.signature) {
      dead_letter(entry, consumer, "entry is not signed, and this queue accepts signed jobs only (same signing key on producer and workers?)");
      return std::nullopt;
    }
    const std::string expected = signature(*entry.payload);
    if (entry.signature->size() != expected.size() ||
        CRYPTO_memcmp(entry.signature->data(), expected.data(), expected.size()) != 0) {
      dead_letter(entry, consumer, "entry's signature does not match: signed with another key, or forged or altered");
      return std::nullopt;
    }
  }
  std::string why;
  auto job = job_from_json(*entry.payload, &why);
  if (!job) {
    dead_letter(entry, consumer, "malformed job: " + why);
    return std::nullopt;
  }
  DeliveredJob delivered;
  delivered.entry_id = std::move(entry.id);
  delivered.job = std::move(*job);
  delivered.delivery_count = entry.delivery_count;
  delivered.claimed_from_dead_worker = entry.claimed;
  return delivered;
}

std::optional<DeliveredJob> RedisJobQueue::next(const std::string& consumer, milliseconds block) {
  if (consumer.empty() || consumer.size() > kMaxConsumerName)
    throw core::Error("job queue: a consumer name must have 1 to " + std::to_string(kMaxConsumerName) + " bytes",
                      "name each worker uniquely, for example after its host and process id");
  const auto deadline = std::chrono::steady_clock::now() + std::max(block, milliseconds(0));
  // Each turn either returns or has moved one bad entry to the dead-letter stream, so the loop ends.
  for (;;) {
    ensure_group();
    if (auto claimed = claim_abandoned(consumer)) {
      if (auto delivered = accept(std::move(*claimed), consumer)) return delivered;
      continue;
    }
    const auto left = std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    auto fresh = read_new(consumer, std::max(left, milliseconds(0)));
    if (!fresh) return std::nullopt;
    if (auto delivered = accept(std::move(*fresh), consumer)) return delivered;
  }
}

bool RedisJobQueue::ack(const DeliveredJob& delivered) {
  connection();
  const auto replies = connection_->run_all(
      {{"XACK", options_.stream, options_.group, delivered.entry_id}, {"XDEL", options_.stream, delivered.entry_id}}, "XACK");
  for (const auto& reply : replies)
    if (is_error(reply.get())) throw_reply_error(reply.get(), "acknowledging job " + delivered.entry_id, display_url_);
  return replies[0]->type == REDIS_REPLY_INTEGER && replies[0]->integer == 1;
}

TouchResult RedisJobQueue::touch(const DeliveredJob& delivered, const std::string& consumer) {
  connection();
  const Reply reply = connection_->run(
      {"EVAL", kTouchScript, "1", options_.stream, options_.group, consumer, delivered.entry_id}, "touch (XCLAIM JUSTID)");
  if (is_error(reply.get())) {
    // A stream or group that is gone holds no pending entry: the job is nobody's any more.
    if (text_of(reply.get()).find("NOGROUP") != std::string::npos) return TouchResult::NotPending;
    throw_reply_error(reply.get(), "touching job " + delivered.entry_id, display_url_);
  }
  if (reply->type != REDIS_REPLY_INTEGER) throw_unexpected("the touch script", display_url_);
  switch (reply->integer) {
    case 1: return TouchResult::Held;
    case 2: return TouchResult::ClaimedByOther;
    default: return TouchResult::NotPending;
  }
}

QueueStats RedisJobQueue::stats() {
  connection();
  const auto replies = connection_->run_all({{"XLEN", options_.stream},
                                             {"XLEN", dead_letter_stream()},
                                             {"XPENDING", options_.stream, options_.group},
                                             {"XINFO", "CONSUMERS", options_.stream, options_.group}},
                                            "reading queue statistics");
  if (is_error(replies[0].get())) throw_reply_error(replies[0].get(), "XLEN " + options_.stream, display_url_);
  if (is_error(replies[1].get())) throw_reply_error(replies[1].get(), "XLEN " + dead_letter_stream(), display_url_);
  // A stream or group not made yet (no job queued, no worker started) is an empty queue.
  auto absent = [](const redisReply* reply) {
    const std::string error = text_of(reply);
    return starts_with(error, "NOGROUP") || error.find("no such key") != std::string::npos;
  };
  for (std::size_t i = 2; i < 4; ++i)
    if (is_error(replies[i].get()) && !absent(replies[i].get()))
      throw_reply_error(replies[i].get(), "reading the consumer group of '" + options_.stream + "'", display_url_);

  QueueStats stats;
  stats.length = number_of(replies[0].get());
  stats.dead_letters = number_of(replies[1].get());
  const redisReply* pending = replies[2].get();
  if (is_array(pending) && pending->elements >= 1) stats.pending = number_of(pending->element[0]);
  stats.waiting = stats.length > stats.pending ? stats.length - stats.pending : 0;
  const redisReply* consumers = replies[3].get();
  if (is_array(consumers)) {
    for (std::size_t i = 0; i < consumers->elements; ++i) {
      const redisReply* map = consumers->element[i];
      if (!is_array(map)) continue;
      ConsumerStats consumer;
      for (std::size_t f = 0; f + 1 < map->elements; f += 2) {
        const std::string name = text_of(map->element[f]);
        if (name == "name") consumer.name = text_of(map->element[f + 1]);
        else if (name == "pending") consumer.pending = number_of(map->element[f + 1]);
        else if (name == "idle") consumer.idle_ms = number_of(map->element[f + 1]);
      }
      stats.consumers.push_back(std::move(consumer));
    }
  }
  return stats;
}

}  // namespace aegis::assess
