// A real PostgreSQL server for tests: a fresh cluster (Debian's initdb) in a temp folder, started on
// a free loopback port with trust authentication, one database per test, stopped and removed at the
// end. PostgreSQL refuses to run as root, and tests run as root in CI: then the cluster belongs to
// the `postgres` system user and the server runs as that user.
#pragma once

#include <fcntl.h>
#include <grp.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <pqxx/pqxx>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace aegis::test {

class PostgresServerProcess {
 public:
  static constexpr const char* kBinDir = "/usr/lib/postgresql/15/bin";
  // The superuser of the test cluster (trust authentication: no password).
  static constexpr const char* kSuperuser = "aegis";

  // Empty when the server binaries are installed; otherwise what to do.
  static std::string missing() {
    for (const char* tool : {"initdb", "postgres"}) {
      const std::string path = std::string(kBinDir) + "/" + tool;
      if (::access(path.c_str(), X_OK) != 0)
        return path + " is missing: install the Debian package postgresql (`make deps` does)";
    }
    return {};
  }

  PostgresServerProcess() = default;
  ~PostgresServerProcess() { stop(); }
  PostgresServerProcess(const PostgresServerProcess&) = delete;
  PostgresServerProcess& operator=(const PostgresServerProcess&) = delete;

  // Makes the cluster and starts the server; waits until it takes connections. On failure returns
  // false and why() says what happened (with the server's log).
  bool start() {
    if (auto why = missing(); !why.empty()) return failed(why);
    if (!make_cluster()) return false;
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = free_port();
      if (port_ == 0) return failed("no free loopback port");
      if (spawn_server() && wait_until_ready()) return true;
      stop_server();
      // The port may have been taken between our probe and the server's bind: pick another.
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  // Fast shutdown (clients disconnected, no waiting for them), then the folder is removed.
  void stop() {
    stop_server();
    if (!root_.empty()) {
      std::error_code ec;
      std::filesystem::remove_all(root_, ec);
      root_.clear();
    }
  }

  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& why() const { return why_; }

  // postgresql://user[:password]@127.0.0.1:port/database
  std::string url(const std::string& database, const std::string& user = kSuperuser, const std::string& password = {}) const {
    return "postgresql://" + user + (password.empty() ? "" : ":" + password) + "@127.0.0.1:" + std::to_string(port_) + "/" +
           database;
  }

  // A new, empty database (t_1, t_2, ...) for one test; returns its URL.
  std::string create_database() {
    const std::string name = "t_" + std::to_string(++databases_);
    execute("CREATE DATABASE " + name);
    return url(name);
  }

  // Runs SQL as the superuser outside a transaction (CREATE DATABASE cannot run inside one).
  void execute(const std::string& sql, const std::string& database = "postgres") const {
    pqxx::connection connection(url(database));
    pqxx::nontransaction tx(connection);
    tx.exec(sql);
  }

  // The first column of the first row of a query, as text ("(none)" when it returns no row).
  std::string query(const std::string& sql, const std::string& database) const {
    pqxx::connection connection(url(database));
    pqxx::nontransaction tx(connection);
    const pqxx::result rows = tx.exec(sql);
    if (rows.empty()) return "(none)";
    return rows[0][0].is_null() ? "(null)" : rows[0][0].c_str();
  }

  // A loopback port nothing listens on (the kernel's pick, released at once); 0 when none.
  static int free_port() {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return 0;
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    int port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0)
      port = ntohs(address.sin_port);
    ::close(fd);
    return port;
  }

 private:
  bool failed(std::string why) {
    why_ = std::move(why);
    return false;
  }


  std::string log_tail() const {
    std::ifstream in(root_ + "/postgres.log");
    std::stringstream text;
    text << in.rdbuf();
    std::string log = text.str();
    return log.size() > 2000 ? log.substr(log.size() - 2000) : log;
  }

  // Forks a child that drops to the postgres user when we are root, sends its output to the log,
  // and runs `arguments` (argv and environment built before the fork: the test process has threads,
  // and between fork and exec only async-signal-safe calls are allowed). `tie_to_parent`: the child
  // gets SIGINT (fast shutdown) when the test process dies, so a crashed test leaves no server.
  pid_t spawn(const std::vector<std::string>& arguments, bool tie_to_parent) {
    std::vector<std::string> copy = arguments;
    std::vector<char*> argv;
    for (auto& argument : copy) argv.push_back(argument.data());
    argv.push_back(nullptr);
    std::string env_lang = "LC_ALL=C", env_path = "PATH=/usr/bin:/bin", env_tz = "TZ=UTC";
    char* envp[] = {env_lang.data(), env_path.data(), env_tz.data(), nullptr};
    const std::string log = root_ + "/postgres.log";
    const int log_fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) return -1;
    if (as_root_) (void)::fchown(log_fd, uid_, gid_);
    const pid_t parent = ::getpid();
    const pid_t child = ::fork();
    if (child == 0) {
      if (as_root_ && (::setgroups(0, nullptr) != 0 || ::setgid(gid_) != 0 || ::setuid(uid_) != 0)) ::_exit(126);
      // After setuid: a change of credentials clears the parent-death signal.
      if (tie_to_parent && (::prctl(PR_SET_PDEATHSIG, SIGINT) != 0 || ::getppid() != parent)) ::_exit(125);
      if (::chdir(root_.c_str()) != 0) ::_exit(124);
      const int null_fd = ::open("/dev/null", O_RDONLY);
      if (null_fd >= 0) ::dup2(null_fd, STDIN_FILENO);
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
      ::execve(argv[0], argv.data(), envp);
      ::_exit(127);
    }
    ::close(log_fd);
    return child;
  }

  bool make_cluster() {
    std::string pattern = (std::filesystem::temp_directory_path() / "aegis_pg_XXXXXX").string();
    if (!::mkdtemp(pattern.data())) return failed("cannot create a temp folder " + pattern);
    root_ = pattern;
    as_root_ = ::geteuid() == 0;
    if (as_root_) {
      const passwd* user = ::getpwnam("postgres");
      if (!user) return failed("tests run as root, and PostgreSQL refuses root, but there is no `postgres` user: install the Debian package postgresql");
      uid_ = user->pw_uid;
      gid_ = user->pw_gid;
      if (::chown(root_.c_str(), uid_, gid_) != 0) return failed("cannot hand " + root_ + " to the postgres user");
    }
    ::chmod(root_.c_str(), 0700);
    const std::string sockets = root_ + "/sockets";
    ::mkdir(sockets.c_str(), 0700);
    if (as_root_ && ::chown(sockets.c_str(), uid_, gid_) != 0) return failed("cannot hand " + sockets + " to the postgres user");

    const pid_t initdb = spawn({std::string(kBinDir) + "/initdb", "-D", root_ + "/data", "-U", kSuperuser, "--auth=trust",
                                "--no-sync", "--encoding=UTF8", "--locale=C", "--no-instructions"},
                               false);
    if (initdb < 0) return failed("cannot start initdb");
    int status = 0;
    if (!wait_for(initdb, status, std::chrono::seconds(120)) || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
      return failed("initdb failed (status " + std::to_string(status) + "): " + log_tail());
    // Trust for everyone, except the one role the tests use to check password handling.
    std::ofstream hba(root_ + "/data/pg_hba.conf", std::ios::trunc);
    hba << "local all all trust\n"
           "host all aegis_password_user 127.0.0.1/32 scram-sha-256\n"
           "host all all 127.0.0.1/32 trust\n";
    return static_cast<bool>(hba.flush()) || failed("cannot write pg_hba.conf");
  }

  bool spawn_server() {
    pid_ = spawn({std::string(kBinDir) + "/postgres", "-D", root_ + "/data", "-p", std::to_string(port_), "-c",
                  "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=" + root_ + "/sockets", "-c", "fsync=off",
                  "-c", "synchronous_commit=off", "-c", "full_page_writes=off", "-c", "max_connections=60", "-c",
                  "shared_buffers=16MB", "-c", "log_min_messages=warning", "-c", "logging_collector=off"},
                 true);
    if (pid_ < 0) return failed("cannot start postgres");
    return true;
  }

  bool wait_until_ready() {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    std::string last;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return failed("postgres exited at start (port " + std::to_string(port_) + " taken?): " + log_tail());
      }
      try {
        pqxx::connection probe(url("postgres"));
        return true;
      } catch (const std::exception& error) {
        last = error.what();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return failed("postgres took no connection within 30 s (" + last + "): " + log_tail());
  }

  static bool wait_for(pid_t pid, int& status, std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (::waitpid(pid, &status, WNOHANG) == pid) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return false;
  }

  void stop_server() {
    if (pid_ <= 0) return;
    int status = 0;
    // SIGINT: fast shutdown. SIGQUIT if that hangs: the postmaster still takes its backends down,
    // which SIGKILL would not.
    ::kill(pid_, SIGINT);
    if (!wait_for_signal(status, std::chrono::seconds(20))) {
      ::kill(pid_, SIGQUIT);
      if (!wait_for_signal(status, std::chrono::seconds(10))) {
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
      }
    }
    pid_ = -1;
  }

  bool wait_for_signal(int& status, std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }

  std::string root_;
  bool as_root_ = false;
  uid_t uid_ = 0;
  gid_t gid_ = 0;
  pid_t pid_ = -1;
  int port_ = 0;
  int databases_ = 0;
  std::string why_;
};

}  // namespace aegis::test
