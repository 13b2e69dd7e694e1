// `aegis worker`: takes assessment jobs from Redis Streams, runs them, records them in the shared
// store exactly once and only then acknowledges them. A worker that dies mid-job leaves its entry
// pending; after the claim timeout another worker takes it over, and the store's (assessment, key)
// constraint keeps the result single even if both finish.
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "aegis/assess/assess.h"
#include "aegis/assess/job_queue.h"
#include "aegis/core/error.h"

namespace aegis::assess {

namespace {

// Resets the job's idle time in Redis while it runs, so that a long check is not taken for a dead
// worker's. Uses its own connection (a RedisJobQueue is one thread's).
class Heartbeat {
 public:
  Heartbeat(const WorkerOptions& options, const RedisJobQueueOptions& queue_options, const DeliveredJob& job,
            std::string consumer)
      : thread_([this, &options, queue_options, job, consumer] {
          try {
            RedisJobQueue queue(options.queue, queue_options);
            const auto period = std::max(std::chrono::milliseconds(50), options.claim_idle / 3);
            std::unique_lock lock(mutex_);
            while (!stopping_) {
              if (wake_.wait_for(lock, period, [this] { return stopping_; })) break;
              lock.unlock();
              const auto held = queue.touch(job, consumer);
              lock.lock();
              if (held != TouchResult::Held) {
                lost_ = true;
                break;
              }
            }
          } catch (const std::exception&) {
            // Redis is away: the job may be claimed by another worker; the store keeps one result.
          }
        }) {}
  ~Heartbeat() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    thread_.join();
  }
  bool lost() {
    std::lock_guard lock(mutex_);
    return lost_;
  }

 private:
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  bool lost_ = false;
  std::thread thread_;
};

}  // namespace

// A worker runs only what an assessment plans: check subcommands, never a flag that writes a report
// to a path of the sender's choosing. Whoever can write to the queue should not get more than that.
static std::string refuse_reason(const Job& job) {
  static const std::set<std::string> kChecks{"scan", "verify", "pii", "attack", "mia", "extract", "redteam", "gateway", "audit-infra"};
  if (job.arguments.empty() || !kChecks.contains(job.arguments.front())) return "not an assessment check: " + (job.arguments.empty() ? std::string("(empty)") : job.arguments.front());
  if (job.arguments.front() == "gateway" && (job.arguments.size() < 2 || job.arguments[1] != "review")) return "only `gateway review` runs as a job";
  for (const auto& a : job.arguments)
    if (a == "--output" || a == "-o" || a.starts_with("--output=")) return "jobs may not choose where reports are written";
  return "";
}

std::size_t run_worker(const WorkerOptions& options) {
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  const std::string name = options.name.empty() ? std::string(host) + ":" + std::to_string(::getpid()) : options.name;
  RedisJobQueueOptions queue_options;
  queue_options.claim_idle = options.claim_idle;
  if (const char* key = std::getenv("AEGIS_QUEUE_KEY"); key && *key) queue_options.signing_key = key;
  RedisJobQueue queue(options.queue, queue_options);
  store::FindingStore store(options.store);
  auto log = [&](const std::string& line) {
    if (options.log) options.log(line);
  };
  log("aegis worker " + name + ": waiting for jobs on " + queue.display_url() + ", results to " + store.location());
  const auto scratch = options.scratch.empty() ? std::filesystem::temp_directory_path() / ("aegis-worker-" + std::to_string(::getpid()))
                                               : options.scratch;
  // An assessment's status, looked up at most every few seconds: reading the stored record brings
  // its whole plan (megabytes for a large inventory), too much to fetch for every job.
  std::map<std::int64_t, std::pair<std::string, std::chrono::steady_clock::time_point>> statuses;
  auto assessment_status = [&](std::int64_t id) {
    const auto now = std::chrono::steady_clock::now();
    auto it = statuses.find(id);
    if (it == statuses.end() || now - it->second.second > std::chrono::seconds(5)) {
      const auto record = store.assessment(id);
      it = statuses.insert_or_assign(id, std::make_pair(record ? record->status : std::string("not in this store"), now)).first;
    }
    return it->second.first;
  };
  std::size_t ran = 0;
  while (!(options.stop && options.stop()) && (options.max_jobs == 0 || ran < options.max_jobs)) {
    std::optional<DeliveredJob> delivered;
    try {
      delivered = queue.next(name, std::chrono::milliseconds(500));
    } catch (const core::Error& e) {
      log(std::string("queue: ") + e.what() + "; retrying");
      std::this_thread::sleep_for(std::chrono::seconds(1));
      continue;
    }
    if (!delivered) continue;
    const Job& job = delivered->job;
    auto acknowledge = [&] {
      try {
        queue.ack(*delivered);
      } catch (const core::Error& e) {
        log(std::string("queue: ") + e.what() + "; the job stays pending and will be claimed again");
      }
    };
    if (const auto why = refuse_reason(job); !why.empty()) {
      log("job " + job.key.substr(0, 12) + " refused: " + why);
      acknowledge();
      continue;
    }
    if (const auto status = assessment_status(job.assessment_id); status != "running") {
      log("job " + job.key.substr(0, 12) + " skipped: assessment " + std::to_string(job.assessment_id) + " is " + status);
      acknowledge();
      continue;
    }
    log("job " + job.key.substr(0, 12) + ": " + job.asset + " " + job.check + " (assessment " + std::to_string(job.assessment_id) +
        (delivered->claimed_from_dead_worker ? ", taken over from a silent worker" : "") + ")");
    JobOutcome outcome;
    {
      Heartbeat heartbeat(options, queue_options, *delivered, name);
      outcome = execute_job(job, options.aegis_binary, scratch / job.key.substr(0, 16));
    }
    const auto [run_id, stored] = record_outcome(store, job, outcome, name);
    acknowledge();
    ++ran;
    log("job " + job.key.substr(0, 12) + ": " + (outcome.ok ? "done" : "failed: " + outcome.error) +
        (stored ? ", run " + std::to_string(run_id) : ", already recorded by another worker (run " + std::to_string(run_id) + ")"));
  }
  std::error_code ec;
  if (options.scratch.empty()) std::filesystem::remove_all(scratch, ec);
  return ran;
}

}  // namespace aegis::assess
