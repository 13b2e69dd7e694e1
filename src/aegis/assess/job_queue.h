// The distributed job queue of `aegis assess --workers redis://…`: jobs travel to `aegis worker`
// processes through a Redis Stream read by one consumer group, so that each job reaches one worker,
// a worker that dies leaves its job to be claimed by another, and nothing is lost on the way.
//
// Delivery is at least once: a job can run twice (a worker that stalled past claim_idle and then
// finished), never zero times. The store records one result per (assessment, job key), which turns
// that into exactly-once results.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aegis/assess/job.h"

struct redisContext;
struct redisReply;

namespace aegis::assess {

struct RedisJobQueueOptions {
  std::string stream = "aegis:jobs";      // the Redis key of the stream; dead letters go to "<stream>:dead"
  std::string group = "aegis-workers";    // the consumer group every worker reads through
  // AUTH password; empty: the one in the URL, else the environment variable AEGIS_REDIS_PASSWORD.
  std::string password;
  std::chrono::milliseconds connect_timeout{2'000};
  std::chrono::milliseconds command_timeout{5'000};  // each reply; next() adds its block time on top
  // How long a delivered, unacknowledged job may stay silent before another worker may claim it. A
  // worker running a long job calls touch() every claim_idle/3 to keep it.
  std::chrono::milliseconds claim_idle{60'000};
  // enqueue() refuses to grow the stream past this many entries (workers missing or stuck): a safeguard
  // for Redis's memory. The stream is never trimmed, since trimming would drop jobs.
  std::size_t max_stream_length = 1'000'000;
  // A job delivered more often than this without an ack (every worker that took it died) is moved to
  // the dead-letter stream instead of being handed out again. 0: no limit.
  unsigned max_deliveries = 5;
  std::size_t max_dead_letters = 100'000;  // the dead-letter stream is trimmed (approximately) to this
  // When set, enqueue() signs each job with HMAC-SHA256 and next() dead-letters any entry whose
  // signature is missing or wrong, so that whoever can write to Redis cannot make workers run
  // commands. Producer and workers need the same key. Empty: entries are not signed nor checked.
  std::string signing_key;
};

// A job as one worker received it. Hand it back to ack() when done, to touch() while it runs.
struct DeliveredJob {
  std::string entry_id;  // the stream entry id, "<ms>-<seq>"
  Job job;
  std::uint64_t delivery_count = 1;        // 1 on first delivery; each claim after a silent worker adds one
  bool claimed_from_dead_worker = false;   // taken over after claim_idle without an ack or touch
};

// What touch() found.
enum class TouchResult {
  Held,            // still this consumer's: its idle time is reset
  ClaimedByOther,  // another consumer holds it (took it over after this one was silent too long): both may
                   // run it, and the store keeps one result
  NotPending,      // acknowledged already (by another consumer) or gone: stop and do not ack
};

struct ConsumerStats {
  std::string name;
  std::uint64_t pending = 0;  // jobs delivered to it and not yet acknowledged
  std::uint64_t idle_ms = 0;  // since its last read, claim or touch
};

struct QueueStats {
  std::uint64_t length = 0;        // entries in the stream (acknowledged ones are deleted)
  std::uint64_t pending = 0;       // delivered, not yet acknowledged
  std::uint64_t waiting = 0;       // not yet delivered to any worker
  std::uint64_t dead_letters = 0;  // entries in "<stream>:dead"
  std::vector<ConsumerStats> consumers;
};

// One connection to Redis, used synchronously (hiredis). An object is used by one thread at a time:
// a worker's heartbeat thread opens its own RedisJobQueue for touch(). After a connection error the
// call throws and the next call connects again. Every failure throws core::Error saying what failed
// and what to do.
class RedisJobQueue {
 public:
  // url: redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] or unix:///PATH[?db=N]. Throws core::Error on a
  // malformed URL; connects on the first call, not here.
  explicit RedisJobQueue(const std::string& url, RedisJobQueueOptions options = {});
  ~RedisJobQueue();
  RedisJobQueue(const RedisJobQueue&) = delete;
  RedisJobQueue& operator=(const RedisJobQueue&) = delete;
  RedisJobQueue(RedisJobQueue&&) noexcept;
  RedisJobQueue& operator=(RedisJobQueue&&) noexcept;

  // Connects if needed and checks that Redis answers; for a clear error before work starts.
  void ping();

  // Adds the jobs in order, pipelined, creating the stream and the group when missing. On failure
  // says how many were added before it: adding them all again is safe (results are recorded once per
  // job key) and reruns only those.
  void enqueue(const std::vector<Job>& jobs);

  // The next job for `consumer`: first a job that a silent worker left behind for longer than
  // claim_idle, else a new one, waiting up to `block` for it (0 or less: no wait). nullopt when none
  // came. Malformed, unsigned or too-often-delivered entries are acknowledged and moved to the
  // dead-letter stream with the reason, and the search goes on.
  std::optional<DeliveredJob> next(const std::string& consumer, std::chrono::milliseconds block);

  // Acknowledges and deletes the entry. False when it was no longer pending (another consumer that
  // had claimed it acknowledged it first); the call is then harmless.
  bool ack(const DeliveredJob& delivered);

  // Heartbeat: resets the entry's idle time if `consumer` still holds it, so that no other worker
  // claims a job that is merely long. Never takes an entry back from another consumer.
  TouchResult touch(const DeliveredJob& delivered, const std::string& consumer);

  QueueStats stats();

  const RedisJobQueueOptions& options() const { return options_; }
  std::string dead_letter_stream() const { return options_.stream + ":dead"; }
  // The URL without its password, for messages.
  const std::string& display_url() const { return display_url_; }

 private:
  struct Entry;
  struct Connection;

  redisContext* connection();
  void ensure_group();
  std::optional<Entry> claim_abandoned(const std::string& consumer);
  std::optional<Entry> read_new(const std::string& consumer, std::chrono::milliseconds block);
  static void read_fields(const redisReply* fields, Entry& entry);
  std::optional<DeliveredJob> accept(Entry entry, const std::string& consumer);
  void dead_letter(const Entry& entry, const std::string& consumer, const std::string& reason);
  std::string signature(const std::string& payload) const;

  RedisJobQueueOptions options_;
  std::string display_url_;
  std::string host_;
  int port_ = 6379;
  std::string socket_path_;
  int database_ = 0;
  std::string username_;
  std::unique_ptr<Connection> connection_;
  bool group_ready_ = false;       // XGROUP CREATE done on this connection
  std::string autoclaim_cursor_ = "0-0";
};

}  // namespace aegis::assess
