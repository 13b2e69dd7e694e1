// The Redis Streams job queue against a real redis-server: every job reaches one worker, a silent
// worker's job is claimed by another, a heartbeat keeps a long job, bad entries are set aside, and a
// lost server gives a clear error and then recovers.
#include <gtest/gtest.h>
#include <hiredis.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "aegis/assess/job.h"
#include "aegis/assess/job_queue.h"
#include "aegis/core/error.h"
#include "gateway/redis_server.h"

namespace aegis::assess {
namespace {

using std::chrono::milliseconds;
using test::RedisServerProcess;
using Clock = std::chrono::steady_clock;

// Generous bounds for loops that wait for something the protocol promises; not timing assertions.
constexpr auto kPatience = std::chrono::seconds(30);

Job make_job(int index) {
  Job job;
  job.assessment_id = 7;
  job.asset = "asset-" + std::to_string(index % 13);
  job.check = "scan";
  job.arguments = {"scan", "models/model-" + std::to_string(index) + ".pt", "--format", "json"};
  job.inputs = {"models/model-" + std::to_string(index) + ".pt"};
  char digits[17];
  std::snprintf(digits, sizeof digits, "%016x", static_cast<unsigned>(index));
  job.key = std::string(48, 'c') + digits;
  job.timeout_seconds = 600;
  return job;
}

std::vector<Job> make_jobs(int count) {
  std::vector<Job> jobs;
  for (int i = 0; i < count; ++i) jobs.push_back(make_job(i));
  return jobs;
}

using StreamEntry = std::map<std::string, std::string>;

// A stream's entries as field maps, read straight from Redis (not through the code under test).
std::vector<StreamEntry> read_stream(const RedisServerProcess& server, const std::string& key) {
  std::vector<StreamEntry> entries;
  redisContext* context = redisConnectWithTimeout("127.0.0.1", server.port(), timeval{2, 0});
  if (!context || context->err) {
    ADD_FAILURE() << "cannot connect to the test redis-server";
    if (context) redisFree(context);
    return entries;
  }
  auto* reply = static_cast<redisReply*>(redisCommand(context, "XRANGE %s - +", key.c_str()));
  if (reply && reply->type == REDIS_REPLY_ARRAY) {
    for (std::size_t i = 0; i < reply->elements; ++i) {
      const redisReply* entry = reply->element[i];
      StreamEntry fields;
      fields["id"] = std::string(entry->element[0]->str, entry->element[0]->len);
      const redisReply* pairs = entry->element[1];
      for (std::size_t f = 0; f + 1 < pairs->elements; f += 2)
        fields[std::string(pairs->element[f]->str, pairs->element[f]->len)] =
            std::string(pairs->element[f + 1]->str, pairs->element[f + 1]->len);
      entries.push_back(std::move(fields));
    }
  }
  if (reply) freeReplyObject(reply);
  redisFree(context);
  return entries;
}

// One redis-server for the suite; each test works on a stream of its own name.
class RedisJobQueueTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!RedisServerProcess::available()) return;
    server_ = new RedisServerProcess();
    if (!server_->start()) start_error_ = new std::string(server_->why());
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
    delete start_error_;
    start_error_ = nullptr;
  }
  void SetUp() override {
    ASSERT_TRUE(RedisServerProcess::available()) << "redis-server is not installed: `make deps` (or apt-get install redis-server) installs it";
    ASSERT_EQ(start_error_, nullptr) << *start_error_;
    stream_ = std::string("test:") + ::testing::UnitTest::GetInstance()->current_test_info()->name();
  }

  RedisJobQueueOptions options() const {
    RedisJobQueueOptions options;
    options.stream = stream_;
    options.command_timeout = milliseconds(10'000);
    return options;
  }
  RedisJobQueue queue(RedisJobQueueOptions custom) const { return RedisJobQueue(server_->url(), std::move(custom)); }
  RedisJobQueue queue() const { return queue(options()); }

  static RedisServerProcess* server_;
  static std::string* start_error_;
  std::string stream_;
};

RedisServerProcess* RedisJobQueueTest::server_ = nullptr;
std::string* RedisJobQueueTest::start_error_ = nullptr;

TEST_F(RedisJobQueueTest, ManyJobsReachCompetingConsumersOnceEach) {
  constexpr int kJobs = 5'000;
  auto producer = queue();
  const auto jobs = make_jobs(kJobs);
  const auto started = Clock::now();
  producer.enqueue(jobs);
  const auto enqueue_ms = std::chrono::duration_cast<milliseconds>(Clock::now() - started).count();
  RecordProperty("enqueue_5000_ms", std::to_string(enqueue_ms));
  EXPECT_EQ(producer.stats().waiting, static_cast<std::uint64_t>(kJobs));

  std::atomic<int> acked{0};
  struct Taken {
    std::vector<std::string> keys;
    std::vector<std::string> entry_ids;
    std::string error;
  };
  Taken taken[2];
  auto work = [&](int index) {
    try {
      auto consumer = queue();
      const std::string name = "worker-" + std::to_string(index);
      int empty_reads = 0;
      while (acked.load() < kJobs && empty_reads < 50) {
        auto delivered = consumer.next(name, milliseconds(100));
        if (!delivered) {
          ++empty_reads;
          continue;
        }
        EXPECT_FALSE(delivered->claimed_from_dead_worker);
        EXPECT_EQ(delivered->delivery_count, 1u);
        taken[index].keys.push_back(delivered->job.key);
        taken[index].entry_ids.push_back(delivered->entry_id);
        EXPECT_TRUE(consumer.ack(*delivered));
        acked.fetch_add(1);
      }
    } catch (const std::exception& error) {
      taken[index].error = error.what();
    }
  };
  std::thread first(work, 0);
  std::thread second(work, 1);
  first.join();
  second.join();
  ASSERT_EQ(taken[0].error, "");
  ASSERT_EQ(taken[1].error, "");

  std::multiset<std::string> keys(taken[0].keys.begin(), taken[0].keys.end());
  keys.insert(taken[1].keys.begin(), taken[1].keys.end());
  EXPECT_EQ(keys.size(), static_cast<std::size_t>(kJobs));
  for (const auto& job : jobs) EXPECT_EQ(keys.count(job.key), 1u) << job.key;
  std::set<std::string> ids(taken[0].entry_ids.begin(), taken[0].entry_ids.end());
  ids.insert(taken[1].entry_ids.begin(), taken[1].entry_ids.end());
  EXPECT_EQ(ids.size(), static_cast<std::size_t>(kJobs));
  EXPECT_GT(taken[0].keys.size(), 0u) << "both consumers compete for the jobs";
  EXPECT_GT(taken[1].keys.size(), 0u) << "both consumers compete for the jobs";

  const QueueStats stats = producer.stats();
  EXPECT_EQ(stats.length, 0u) << "acknowledged entries are deleted";
  EXPECT_EQ(stats.pending, 0u);
  EXPECT_EQ(stats.waiting, 0u);
  EXPECT_EQ(stats.dead_letters, 0u);
  std::set<std::string> consumers;
  for (const auto& consumer : stats.consumers) {
    consumers.insert(consumer.name);
    EXPECT_EQ(consumer.pending, 0u);
  }
  EXPECT_EQ(consumers, (std::set<std::string>{"worker-0", "worker-1"}));
}

TEST_F(RedisJobQueueTest, JobOfASilentWorkerIsClaimedAfterClaimIdle) {
  auto custom = options();
  custom.claim_idle = milliseconds(300);
  auto dead = queue(custom);
  auto rescuer = queue(custom);
  dead.enqueue({make_job(1)});

  const auto before_delivery = Clock::now();
  const auto original = dead.next("dead-worker", milliseconds(0));
  ASSERT_TRUE(original);
  EXPECT_EQ(original->delivery_count, 1u);
  EXPECT_FALSE(original->claimed_from_dead_worker);
  // The dead worker never acks nor touches. Before claim_idle has passed the job is not free.
  const auto early = rescuer.next("rescuer", milliseconds(0));
  if (Clock::now() - before_delivery < milliseconds(250)) {
    EXPECT_FALSE(early) << "claimed before claim_idle";
  }

  std::optional<DeliveredJob> rescued = early;
  while (!rescued && Clock::now() - before_delivery < kPatience) rescued = rescuer.next("rescuer", milliseconds(100));
  ASSERT_TRUE(rescued) << "the silent worker's job was never claimed";
  EXPECT_GE(Clock::now() - before_delivery, milliseconds(300)) << "claimed before claim_idle";
  EXPECT_EQ(rescued->entry_id, original->entry_id);
  EXPECT_EQ(rescued->job.key, original->job.key);
  EXPECT_TRUE(rescued->claimed_from_dead_worker);
  EXPECT_EQ(rescued->delivery_count, 2u);

  EXPECT_EQ(dead.touch(*original, "dead-worker"), TouchResult::ClaimedByOther);
  EXPECT_TRUE(rescuer.ack(*rescued));
  EXPECT_FALSE(dead.ack(*original)) << "already acknowledged by the rescuer";
  EXPECT_EQ(dead.touch(*original, "dead-worker"), TouchResult::NotPending);
  const QueueStats stats = rescuer.stats();
  EXPECT_EQ(stats.pending, 0u);
  EXPECT_EQ(stats.length, 0u);
  EXPECT_FALSE(rescuer.next("rescuer", milliseconds(0)));
}

TEST_F(RedisJobQueueTest, TouchedJobStaysWithItsWorker) {
  auto custom = options();
  custom.claim_idle = milliseconds(600);
  auto worker = queue(custom);
  auto other = queue(custom);
  worker.enqueue({make_job(2)});
  const auto held = worker.next("long-job-worker", milliseconds(0));
  ASSERT_TRUE(held);

  // The heartbeat thread owns its own queue object, as the worker's does.
  std::atomic<bool> beating{true};
  std::atomic<int> beats{0};
  std::atomic<int> not_held{0};
  std::string heartbeat_error;
  std::thread heartbeat([&] {
    try {
      auto own = queue(custom);
      while (beating.load()) {
        if (own.touch(*held, "long-job-worker") == TouchResult::Held) beats.fetch_add(1);
        else not_held.fetch_add(1);
        std::this_thread::sleep_for(milliseconds(100));  // claim_idle / 6
      }
    } catch (const std::exception& error) {
      heartbeat_error = error.what();
    }
  });
  // Three claim_idle periods and at least a dozen heartbeats pass; nobody may take the job meanwhile.
  const auto watch_started = Clock::now();
  while ((Clock::now() - watch_started < milliseconds(1'800) || beats.load() < 12) && Clock::now() - watch_started < kPatience) {
    const auto stolen = other.next("other-worker", milliseconds(100));
    EXPECT_FALSE(stolen) << "a touched job was claimed by another worker";
    if (stolen) break;
  }
  beating = false;
  heartbeat.join();
  ASSERT_EQ(heartbeat_error, "");
  EXPECT_EQ(not_held.load(), 0);

  // Someone else's touch neither keeps the job alive for them nor takes it.
  EXPECT_EQ(other.touch(*held, "intruder"), TouchResult::ClaimedByOther);
  bool owner_kept = false;
  for (const auto& consumer : other.stats().consumers)
    if (consumer.name == "long-job-worker") owner_kept = consumer.pending == 1;
  EXPECT_TRUE(owner_kept);

  // Heartbeat stopped: now the job is free after claim_idle.
  std::optional<DeliveredJob> rescued;
  const auto stopped = Clock::now();
  while (!rescued && Clock::now() - stopped < kPatience) rescued = other.next("other-worker", milliseconds(100));
  ASSERT_TRUE(rescued);
  EXPECT_TRUE(rescued->claimed_from_dead_worker);
  EXPECT_EQ(rescued->entry_id, held->entry_id);
  // The late heartbeat does not take it back.
  EXPECT_EQ(worker.touch(*held, "long-job-worker"), TouchResult::ClaimedByOther);
  EXPECT_EQ(other.touch(*rescued, "other-worker"), TouchResult::Held);
  EXPECT_TRUE(other.ack(*rescued));
  EXPECT_EQ(other.touch(*rescued, "other-worker"), TouchResult::NotPending);
}

TEST_F(RedisJobQueueTest, MalformedEntriesGoToTheDeadLetterStream) {
  auto consumer = queue();
  EXPECT_FALSE(consumer.next("worker", milliseconds(0)));  // makes the stream and the group

  const std::string huge(2 << 20, 'x');
  const std::string valid = to_json(make_job(3));
  ASSERT_NE(server_->run({"XADD", stream_, "*", "job", "not json at all"}).find('-'), std::string::npos);
  server_->run({"XADD", stream_, "*", "job", R"({"assessment_id": "seven"})"});
  server_->run({"XADD", stream_, "*", "note", "no job field here"});
  server_->run({"XADD", stream_, "*", "job", huge});
  server_->run({"XADD", stream_, "*", "job", valid, "job", valid});
  consumer.enqueue({make_job(4)});

  const auto delivered = consumer.next("worker", milliseconds(0));
  ASSERT_TRUE(delivered) << "bad entries must not block the good one behind them";
  EXPECT_EQ(delivered->job.key, make_job(4).key);
  EXPECT_TRUE(consumer.ack(*delivered));

  const QueueStats stats = consumer.stats();
  EXPECT_EQ(stats.dead_letters, 5u);
  EXPECT_EQ(stats.pending, 0u) << "dead letters are acknowledged";
  EXPECT_EQ(stats.length, 0u) << "and deleted from the job stream";

  const auto dead = read_stream(*server_, consumer.dead_letter_stream());
  ASSERT_EQ(dead.size(), 5u);
  EXPECT_NE(dead[0].at("reason").find("not valid JSON"), std::string::npos) << dead[0].at("reason");
  EXPECT_EQ(dead[0].at("payload"), "not json at all");
  EXPECT_NE(dead[1].at("reason").find("assessment_id"), std::string::npos) << dead[1].at("reason");
  EXPECT_NE(dead[2].at("reason").find("no 'job' field"), std::string::npos) << dead[2].at("reason");
  EXPECT_NE(dead[3].at("reason").find("bytes"), std::string::npos) << dead[3].at("reason");
  EXPECT_EQ(dead[3].at("payload_bytes"), std::to_string(huge.size()));
  EXPECT_LT(dead[3].at("payload").size(), huge.size()) << "a dead letter keeps a bounded excerpt";
  EXPECT_NE(dead[4].at("reason").find("more than one"), std::string::npos) << dead[4].at("reason");
  for (const auto& letter : dead) {
    EXPECT_EQ(letter.at("consumer"), "worker");
    EXPECT_FALSE(letter.at("entry").empty());
  }
}

TEST_F(RedisJobQueueTest, JobThatKillsEveryWorkerIsSetAsideAfterMaxDeliveries) {
  auto custom = options();
  custom.claim_idle = milliseconds(100);
  custom.max_deliveries = 2;
  auto first = queue(custom);
  auto second = queue(custom);
  auto third = queue(custom);
  first.enqueue({make_job(5)});
  ASSERT_TRUE(first.next("first", milliseconds(0)));  // delivery 1; this worker "dies"
  std::optional<DeliveredJob> again;
  const auto started = Clock::now();
  while (!again && Clock::now() - started < kPatience) again = second.next("second", milliseconds(50));
  ASSERT_TRUE(again);
  EXPECT_EQ(again->delivery_count, 2u);  // delivery 2; this worker "dies" too
  // The third claim would be delivery 3: the job goes to the dead-letter stream instead.
  while (third.stats().dead_letters == 0 && Clock::now() - started < kPatience)
    EXPECT_FALSE(third.next("third", milliseconds(50)));
  const auto dead = read_stream(*server_, third.dead_letter_stream());
  ASSERT_EQ(dead.size(), 1u);
  EXPECT_NE(dead[0].at("reason").find("delivered 3 times"), std::string::npos) << dead[0].at("reason");
  EXPECT_EQ(dead[0].at("entry"), again->entry_id);
  auto job = job_from_json(dead[0].at("payload"));
  ASSERT_TRUE(job) << "the dead letter keeps the whole job, to run it by hand";
  EXPECT_EQ(job->key, make_job(5).key);
  EXPECT_EQ(third.stats().pending, 0u);
}

TEST_F(RedisJobQueueTest, SignedQueueSetsAsideUnsignedAndForgedJobs) {
  auto signed_options = options();
  signed_options.signing_key = "shared secret of this engagement";
  auto producer = queue(signed_options);
  auto consumer = queue(signed_options);
  auto forger_options = options();
  forger_options.signing_key = "another key";
  auto forger = queue(forger_options);

  producer.enqueue({make_job(10)});
  server_->run({"XADD", stream_, "*", "job", to_json(make_job(11))});  // unsigned
  forger.enqueue({make_job(12)});

  const auto delivered = consumer.next("worker", milliseconds(0));
  ASSERT_TRUE(delivered);
  EXPECT_EQ(delivered->job.key, make_job(10).key);
  EXPECT_TRUE(consumer.ack(*delivered));
  EXPECT_FALSE(consumer.next("worker", milliseconds(0)));
  const auto dead = read_stream(*server_, consumer.dead_letter_stream());
  ASSERT_EQ(dead.size(), 2u);
  EXPECT_NE(dead[0].at("reason").find("not signed"), std::string::npos) << dead[0].at("reason");
  EXPECT_NE(dead[1].at("reason").find("signature does not match"), std::string::npos) << dead[1].at("reason");

  // A queue without a key takes signed jobs as they are.
  producer.enqueue({make_job(13)});
  auto unsigned_consumer = queue();
  const auto plain = unsigned_consumer.next("worker", milliseconds(0));
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->job.key, make_job(13).key);
}

TEST_F(RedisJobQueueTest, StreamLengthSafeguardRefusesBeforeAdding) {
  auto custom = options();
  custom.max_stream_length = 10;
  auto producer = queue(custom);
  producer.enqueue(make_jobs(8));
  try {
    producer.enqueue(make_jobs(3));
    FAIL() << "expected the length limit to refuse";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("limit of 10"), std::string::npos) << error.what();
    EXPECT_FALSE(error.hint().empty());
  }
  EXPECT_EQ(producer.stats().length, 8u) << "nothing of the refused batch was added";
}

TEST_F(RedisJobQueueTest, KeyOfAnotherTypeGivesAClearError) {
  server_->run({"SET", stream_, "a string, not a stream"});
  auto producer = queue();
  try {
    producer.enqueue({make_job(1)});
    FAIL() << "expected an error";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("WRONGTYPE"), std::string::npos) << error.what();
    EXPECT_NE(error.hint().find("stream"), std::string::npos) << error.hint();
  }
  EXPECT_THROW(producer.next("worker", milliseconds(0)), core::Error);
  EXPECT_THROW(producer.stats(), core::Error);
}

TEST_F(RedisJobQueueTest, NextWithNothingQueuedReturnsNothing) {
  auto consumer = queue();
  EXPECT_FALSE(consumer.next("idle-worker", milliseconds(0)));
  EXPECT_FALSE(consumer.next("idle-worker", milliseconds(150)));
  const QueueStats stats = consumer.stats();
  EXPECT_EQ(stats.length, 0u);
  EXPECT_EQ(stats.pending, 0u);
  // Redis 7.2 lists a consumer from its first read on, 7.0 only once it was handed an entry.
  for (const auto& listed : stats.consumers) EXPECT_EQ(listed.name, "idle-worker");
  EXPECT_THROW(consumer.next("", milliseconds(0)), core::Error);
  EXPECT_THROW(consumer.next(std::string(300, 'w'), milliseconds(0)), core::Error);
}

TEST_F(RedisJobQueueTest, StatsOfAQueueNeverUsedAreZero) {
  auto fresh = queue();
  const QueueStats stats = fresh.stats();
  EXPECT_EQ(stats.length, 0u);
  EXPECT_EQ(stats.pending, 0u);
  EXPECT_EQ(stats.dead_letters, 0u);
  EXPECT_TRUE(stats.consumers.empty());
}

TEST_F(RedisJobQueueTest, WorkerStartedBeforeTheProducerGetsEveryJob) {
  auto consumer = queue();
  EXPECT_FALSE(consumer.next("early-worker", milliseconds(0)));
  auto producer = queue();
  producer.enqueue(make_jobs(3));
  for (int i = 0; i < 3; ++i) {
    const auto delivered = consumer.next("early-worker", milliseconds(0));
    ASSERT_TRUE(delivered);
    EXPECT_EQ(delivered->job.key, make_job(i).key) << "jobs come in the order they were queued";
    consumer.ack(*delivered);
  }
}

TEST_F(RedisJobQueueTest, DatabaseNumberInTheUrlIsUsed) {
  auto custom = options();
  RedisJobQueue in_db_3(server_->url() + "/3", custom);
  in_db_3.enqueue({make_job(1)});
  EXPECT_EQ(server_->run({"XLEN", stream_}), "0") << "database 0 holds nothing";
  EXPECT_EQ(in_db_3.stats().length, 1u);
  const auto delivered = in_db_3.next("worker", milliseconds(0));
  ASSERT_TRUE(delivered);
  EXPECT_TRUE(in_db_3.ack(*delivered));
}

TEST(RedisJobQueueUrl, MalformedUrlsAreRefusedWithoutShowingThePassword) {
  for (const char* url : {"http://127.0.0.1:6379", "redis://", "redis://127.0.0.1:99999", "redis://127.0.0.1/notadb",
                          "redis://user@127.0.0.1", "redis://:bad%zzpw@127.0.0.1"})
    EXPECT_THROW(RedisJobQueue{url}, core::Error) << url;
  try {
    RedisJobQueue queue("redis://:hunter2@127.0.0.1:notaport");
    FAIL() << "expected a refusal";
  } catch (const core::Error& error) {
    EXPECT_EQ(std::string(error.what()).find("hunter2"), std::string::npos) << error.what();
  }
  RedisJobQueueOptions empty_group;
  empty_group.group = "";
  EXPECT_THROW(RedisJobQueue("redis://127.0.0.1", empty_group), core::Error);
  RedisJobQueue fine("redis://:pass@127.0.0.1:6390/2");
  EXPECT_EQ(fine.display_url().find("pass"), std::string::npos);
}

TEST(RedisJobQueueServer, LostServerGivesAClearErrorThenRecovers) {
  RedisServerProcess server;
  AEGIS_START_REDIS_OR_SKIP(server);
  RedisJobQueueOptions options;
  options.connect_timeout = milliseconds(1'000);
  RedisJobQueue queue(server.url(), options);
  queue.enqueue({make_job(1)});

  server.kill();
  // The next calls write to a socket whose peer is gone (no SIGPIPE may end the test process) and then
  // find nobody listening.
  for (int call = 0; call < 3; ++call) {
    try {
      if (call == 0) queue.enqueue({make_job(2)});
      else if (call == 1) queue.next("worker", milliseconds(0));
      else queue.stats();
      ADD_FAILURE() << "call " << call << " should fail while Redis is down";
    } catch (const core::Error& error) {
      EXPECT_NE(std::string(error.what()).find("127.0.0.1:" + std::to_string(server.port())), std::string::npos)
          << error.what();
      EXPECT_FALSE(error.hint().empty());
    }
  }

  ASSERT_TRUE(server.start()) << server.why();
  // This test server keeps nothing across a restart (no persistence): only what is queued now exists.
  queue.enqueue({make_job(3)});
  const auto delivered = queue.next("worker", milliseconds(0));
  ASSERT_TRUE(delivered);
  EXPECT_EQ(delivered->job.key, make_job(3).key);
  EXPECT_TRUE(queue.ack(*delivered));
}

TEST(RedisJobQueueServer, KilledWhileAWorkerWaitsGivesAnError) {
  RedisServerProcess server;
  AEGIS_START_REDIS_OR_SKIP(server);
  RedisJobQueue queue(server.url());
  queue.ping();
  std::thread killer([&] {
    std::this_thread::sleep_for(milliseconds(200));
    server.kill();
  });
  EXPECT_THROW(queue.next("waiting-worker", milliseconds(20'000)), core::Error);
  killer.join();
}

TEST(RedisJobQueueServer, PasswordComesFromTheUrlOrTheEnvironment) {
  const std::string password = "s3cr@t/pw";
  RedisServerProcess server({"--requirepass", password});
  AEGIS_START_REDIS_OR_SKIP(server);
  const std::string hostport = "127.0.0.1:" + std::to_string(server.port());

  // Whatever the environment holds must not decide this test.
  const char* saved = std::getenv("AEGIS_REDIS_PASSWORD");
  const std::string saved_value = saved ? saved : "";
  ::unsetenv("AEGIS_REDIS_PASSWORD");

  try {
    RedisJobQueue("redis://" + hostport).ping();
    ADD_FAILURE() << "expected a refusal without a password";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("requires a password"), std::string::npos) << error.what();
    EXPECT_NE(error.hint().find("AEGIS_REDIS_PASSWORD"), std::string::npos);
  }
  try {
    RedisJobQueue("redis://:wrong-secret@" + hostport).ping();
    ADD_FAILURE() << "expected a refusal of the wrong password";
  } catch (const core::Error& error) {
    EXPECT_NE(std::string(error.what()).find("refused the password"), std::string::npos) << error.what();
    EXPECT_EQ(std::string(error.what()).find("wrong-secret"), std::string::npos) << "the password leaked into the message";
  }
  EXPECT_NO_THROW(RedisJobQueue("redis://:s3cr%40t%2Fpw@" + hostport).ping());
  EXPECT_NO_THROW(RedisJobQueue("redis://:" + password + "@" + hostport).ping());
  EXPECT_NO_THROW(RedisJobQueue("redis://default:" + password + "@" + hostport).ping());

  ::setenv("AEGIS_REDIS_PASSWORD", password.c_str(), 1);
  RedisJobQueue from_environment("redis://" + hostport);
  EXPECT_NO_THROW(from_environment.enqueue({make_job(1)}));
  EXPECT_EQ(from_environment.stats().waiting, 1u);
  if (saved) ::setenv("AEGIS_REDIS_PASSWORD", saved_value.c_str(), 1);
  else ::unsetenv("AEGIS_REDIS_PASSWORD");
}

}  // namespace
}  // namespace aegis::assess
