// A real redis-server for tests: started on a free loopback port, stopped (or killed, paused,
// restarted on the same port) by the test, so that Redis-backed code is tested against Redis itself.
#pragma once

#include <hiredis.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace aegis::test {

class RedisServerProcess {
 public:
  static constexpr const char* kBinary = "/usr/bin/redis-server";
  static bool available() { return ::access(kBinary, X_OK) == 0; }

  // Extra arguments go to redis-server as given, e.g. {"--requirepass", "secret"}.
  explicit RedisServerProcess(std::vector<std::string> extra_arguments = {}) : extra_(std::move(extra_arguments)) {}
  ~RedisServerProcess() { kill(); }
  RedisServerProcess(const RedisServerProcess&) = delete;
  RedisServerProcess& operator=(const RedisServerProcess&) = delete;

  // Starts the server (on the port it had before, if any) and waits until it answers PING. On
  // failure returns false and why() says what happened.
  bool start() {
    for (int attempt = 0; attempt < 5; ++attempt) {
      const bool first = port_ == 0;
      if (first) port_ = free_port();
      if (port_ == 0) {
        why_ = "no free loopback port";
        return false;
      }
      if (spawn() && wait_until_ready()) return true;
      kill();
      // A port picked by us may have been taken in between: pick another. A restart keeps its port.
      if (first) port_ = 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  // SIGKILL: the server vanishes mid-conversation, as a crash would.
  void kill() {
    if (pid_ <= 0) return;
    if (paused_) ::kill(pid_, SIGCONT);
    ::kill(pid_, SIGKILL);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    paused_ = false;
  }
  // SIGSTOP/SIGCONT: the server stalls with its connections open.
  void pause() {
    if (pid_ > 0 && ::kill(pid_, SIGSTOP) == 0) paused_ = true;
  }
  void resume() {
    if (pid_ > 0 && ::kill(pid_, SIGCONT) == 0) paused_ = false;
  }

  int port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }
  const std::string& why() const { return why_; }

  // Runs one command on a fresh connection and returns the reply as text: a string, status or error
  // as sent, an integer in decimal, "(nil)", or "ERR-CONNECT ..." when Redis cannot be reached.
  std::string run(const std::vector<std::string>& arguments, const std::string& password = {}) const {
    timeval timeout{2, 0};
    redisContext* context = redisConnectWithTimeout("127.0.0.1", port_, timeout);
    if (!context || context->err) {
      std::string error = "ERR-CONNECT " + std::string(context ? context->errstr : "out of memory");
      if (context) redisFree(context);
      return error;
    }
    redisSetTimeout(context, timeout);
    if (!password.empty()) {
      void* auth = redisCommand(context, "AUTH %s", password.c_str());
      if (auth) freeReplyObject(auth);
    }
    std::vector<const char*> argv;
    std::vector<std::size_t> lengths;
    for (const auto& argument : arguments) {
      argv.push_back(argument.data());
      lengths.push_back(argument.size());
    }
    auto* reply = static_cast<redisReply*>(redisCommandArgv(context, static_cast<int>(argv.size()), argv.data(), lengths.data()));
    std::string text;
    if (!reply) {
      text = "ERR-CONNECT " + std::string(context->errstr);
    } else {
      switch (reply->type) {
        case REDIS_REPLY_INTEGER: text = std::to_string(reply->integer); break;
        case REDIS_REPLY_NIL: text = "(nil)"; break;
        case REDIS_REPLY_ARRAY: text = "(array " + std::to_string(reply->elements) + ")"; break;
        default: text.assign(reply->str, reply->len);
      }
      freeReplyObject(reply);
    }
    redisFree(context);
    return text;
  }

 private:
  static int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof address;
    int port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0)
      port = ntohs(address.sin_port);
    ::close(fd);
    return port;
  }

  bool spawn() {
    std::vector<std::string> arguments = {kBinary,    "--port",       std::to_string(port_), "--bind", "127.0.0.1",
                                          "--save",   "",             "--appendonly",       "no",     "--daemonize",
                                          "no",       "--dir",        "/tmp",               "--loglevel", "warning"};
    arguments.insert(arguments.end(), extra_.begin(), extra_.end());
    std::vector<char*> argv;
    for (auto& argument : arguments) argv.push_back(argument.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
    // posix_spawn rather than fork: the test process has threads, and only exec is safe after fork.
    const int error = posix_spawn(&pid_, kBinary, &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (error != 0) {
      pid_ = -1;
      why_ = "cannot start " + std::string(kBinary) + ": error " + std::to_string(error);
      return false;
    }
    return true;
  }

  bool wait_until_ready() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    std::string password;
    for (std::size_t i = 0; i + 1 < extra_.size(); ++i)
      if (extra_[i] == "--requirepass") password = extra_[i + 1];
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        why_ = "redis-server exited at start (port " + std::to_string(port_) + " taken?)";
        return false;
      }
      if (run({"PING"}, password) == "PONG") return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    why_ = "redis-server did not answer PING within 10 s";
    return false;
  }

  std::vector<std::string> extra_;
  pid_t pid_ = -1;
  int port_ = 0;
  bool paused_ = false;
  std::string why_;
};

}  // namespace aegis::test

// Skips the calling test when redis-server is not installed; fails it when it cannot start.
#define AEGIS_START_REDIS_OR_SKIP(server)                                                      \
  if (!::aegis::test::RedisServerProcess::available()) GTEST_SKIP() << "redis-server is not installed"; \
  ASSERT_TRUE((server).start()) << (server).why()
