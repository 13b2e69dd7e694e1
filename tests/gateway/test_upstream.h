// A small, deliberately plain model endpoint for the gateway tests (POSIX sockets, a thread per
// connection, HTTP/1.1 keep-alive), whose paths misbehave on purpose: slow, garbage, hang-up, SSE.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace aegis::test {

struct SeenRequest {
  std::string method;
  std::string target;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

inline bool send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    const auto n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return false;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

// Reads one HTTP/1.1 message with Content-Length framing (what the gateway sends); false at EOF.
inline bool read_http_message(int fd, std::string& carry, std::string& head, std::string& body) {
  char buffer[16384];
  for (;;) {
    const auto end = carry.find("\r\n\r\n");
    if (end != std::string::npos) {
      head = carry.substr(0, end);
      std::size_t length = 0;
      std::string lower_head = head;
      for (auto& c : lower_head) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      const auto cl = lower_head.find("\r\ncontent-length:");
      if (cl != std::string::npos) length = std::stoul(head.substr(cl + 17));
      while (carry.size() < end + 4 + length) {
        const auto n = ::recv(fd, buffer, sizeof buffer, 0);
        if (n <= 0) return false;
        carry.append(buffer, static_cast<std::size_t>(n));
      }
      body = carry.substr(end + 4, length);
      carry.erase(0, end + 4 + length);
      return true;
    }
    const auto n = ::recv(fd, buffer, sizeof buffer, 0);
    if (n <= 0) return false;
    carry.append(buffer, static_cast<std::size_t>(n));
  }
}

class TestUpstream {
 public:
  TestUpstream() {
    listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    ::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof address);
    ::listen(listener_, 1024);
    socklen_t size = sizeof address;
    ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &size);
    port_ = ntohs(address.sin_port);
    acceptor_ = std::thread([this] { accept_loop(); });
  }

  ~TestUpstream() {
    stopping_ = true;
    ::shutdown(listener_, SHUT_RDWR);
    ::close(listener_);
    acceptor_.join();
    {
      std::lock_guard lock(mutex_);
      for (int fd : open_) ::shutdown(fd, SHUT_RDWR);
    }
    release_stream();
    for (auto& t : workers_) t.join();
  }

  int port() const { return port_; }
  int connections() const { return connections_.load(); }
  int requests() const { return requests_.load(); }
  SeenRequest last() {
    std::lock_guard lock(mutex_);
    return last_;
  }
  // The /sse path sends its first event, then waits here until the test calls release_stream().
  void release_stream() {
    std::lock_guard lock(mutex_);
    stream_released_ = true;
    released_.notify_all();
  }
  std::atomic<int> slow_ms{2000};

 private:
  void accept_loop() {
    while (!stopping_) {
      const int fd = ::accept(listener_, nullptr, nullptr);
      if (fd < 0) {
        if (stopping_) return;
        continue;
      }
      connections_.fetch_add(1);
      int one = 1;
      ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      std::lock_guard lock(mutex_);
      open_.push_back(fd);
      workers_.emplace_back([this, fd] { serve(fd); });
    }
  }

  void serve(int fd) {
    std::string carry, head, body;
    while (!stopping_ && read_http_message(fd, carry, head, body)) {
      requests_.fetch_add(1);
      SeenRequest seen;
      const auto line_end = head.find("\r\n");
      const auto request_line = head.substr(0, line_end);
      const auto sp1 = request_line.find(' ');
      const auto sp2 = request_line.find(' ', sp1 + 1);
      seen.method = request_line.substr(0, sp1);
      seen.target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
      std::size_t pos = line_end + 2;
      while (pos < head.size()) {
        auto next = head.find("\r\n", pos);
        if (next == std::string::npos) next = head.size();
        const auto line = head.substr(pos, next - pos);
        const auto colon = line.find(':');
        if (colon != std::string::npos) {
          std::string name = line.substr(0, colon);
          for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          auto value = line.substr(colon + 1);
          while (!value.empty() && value.front() == ' ') value.erase(0, 1);
          seen.headers[name] = value;
        }
        pos = next + 2;
      }
      seen.body = body;
      {
        std::lock_guard lock(mutex_);
        last_ = seen;
      }
      const auto path = seen.target.substr(0, seen.target.find('?'));
      if (path == "/garbage") {
        send_all(fd, "THIS IS NOT HTTP\r\n\r\n\x01\x02\x03");
        break;
      }
      if (path == "/hangup") break;
      if (path == "/slow") std::this_thread::sleep_for(std::chrono::milliseconds(slow_ms.load()));
      if (path == "/sse") {
        send_all(fd, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n");
        auto chunk = [&](const std::string& data) {
          char size[32];
          std::snprintf(size, sizeof size, "%zx\r\n", data.size());
          send_all(fd, std::string(size) + data + "\r\n");
        };
        chunk("data: {\"choices\":[{\"delta\":{\"content\":\"Hello \"}}]}\n\n");
        {
          std::unique_lock lock(mutex_);
          released_.wait_for(lock, std::chrono::seconds(20), [this] { return stream_released_ || stopping_; });
        }
        // one event split across two chunks, to check that the gateway joins them
        chunk("data: {\"choices\":[{\"delta\":{\"content\":\"mail me at ");
        chunk("jane.doe@example.com\"}}]}\n\n");
        chunk("data: [DONE]\n\n");
        send_all(fd, "0\r\n\r\n");
        continue;
      }
      std::string answer;
      std::string content_type = "application/json";
      int status = 200;
      if (path == "/predict" || path == "/slow" || path == "/v2/classify") {
        // one probability row per input: a fixed, valid distribution
        std::size_t rows = 1;
        const auto inputs = body.find("\"inputs\"");
        if (inputs != std::string::npos) {
          rows = 0;
          int depth = 0;
          for (std::size_t i = body.find('[', inputs); i < body.size(); ++i) {
            if (body[i] == '[') {
              ++depth;
              if (depth == 2) ++rows;
            } else if (body[i] == ']') {
              if (--depth == 0) break;
            }
          }
          if (rows == 0) rows = 1;
        }
        answer = "{\"probabilities\":[";
        for (std::size_t r = 0; r < rows; ++r)
          answer += std::string(r ? "," : "") + "[0.0123456,0.7012345,0.1,0.05,0.05,0.02,0.02,0.02,0.02,0.0164199]";
        answer += "],\"contact\":\"ops@example.com\"}";
      } else if (path == "/echo") {
        answer = body;
      } else {
        status = 404;
        answer = "{\"detail\":\"not found\"}";
      }
      std::string response = "HTTP/1.1 " + std::to_string(status) + (status == 200 ? " OK" : " Not Found") +
                             "\r\nContent-Type: " + content_type + "\r\nContent-Length: " + std::to_string(answer.size()) +
                             "\r\nX-Upstream: test\r\n\r\n" + answer;
      if (!send_all(fd, response)) break;
    }
    ::close(fd);
    std::lock_guard lock(mutex_);
    open_.erase(std::remove(open_.begin(), open_.end(), fd), open_.end());
  }

  int listener_ = -1;
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::atomic<int> connections_{0};
  std::atomic<int> requests_{0};
  std::thread acceptor_;
  std::mutex mutex_;
  std::condition_variable released_;
  bool stream_released_ = false;
  std::vector<int> open_;
  std::vector<std::thread> workers_;
  SeenRequest last_;
};

// A blocking HTTP/1.1 client connection for the tests (keep-alive, Content-Length or chunked answers).
class TestClient {
 public:
  explicit TestClient(int port, int timeout_ms = 20000) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  }
  ~TestClient() {
    if (fd_ >= 0) ::close(fd_);
  }
  TestClient(const TestClient&) = delete;
  TestClient& operator=(const TestClient&) = delete;
  bool connected() const { return connected_; }
  int fd() const { return fd_; }
  bool send_raw(std::string_view data) { return send_all(fd_, data); }

  struct Answer {
    int status = 0;
    std::map<std::string, std::string> headers;
    std::string body;
    bool ok = false;  // a whole answer arrived
  };

  Answer request(const std::string& method, const std::string& target, const std::string& body = {},
                 const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    std::string text = method + " " + target + " HTTP/1.1\r\nHost: test\r\n";
    for (const auto& [n, v] : headers) text += n + ": " + v + "\r\n";
    if (!body.empty() || method == "POST") text += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    text += "\r\n" + body;
    if (!send_all(fd_, text)) return {};
    return read_answer();
  }

  // Reads the status line and headers only (for streams).
  Answer read_head() {
    Answer answer;
    chunks_done_ = false;
    char buffer[4096];
    for (;;) {
      const auto end = carry_.find("\r\n\r\n");
      if (end != std::string::npos) {
        parse_head(carry_.substr(0, end), answer);
        carry_.erase(0, end + 4);
        answer.ok = true;
        return answer;
      }
      const auto n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) return answer;
      carry_.append(buffer, static_cast<std::size_t>(n));
    }
  }

  // Reads chunked data until `needle` appears in the decoded body so far; returns that body.
  std::string read_chunked_until(const std::string& needle) {
    char buffer[4096];
    for (;;) {
      decode_chunks();
      if (decoded_.find(needle) != std::string::npos) return decoded_;
      const auto n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) return decoded_;
      carry_.append(buffer, static_cast<std::size_t>(n));
    }
  }

  // Reads the rest of a chunked body up to and including its last (zero) chunk.
  void finish_chunked() {
    char buffer[4096];
    if (chunks_done_) return;
    while (!decode_chunks()) {
      const auto n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) return;
      carry_.append(buffer, static_cast<std::size_t>(n));
    }
  }

  Answer read_answer() {
    Answer answer = read_head();
    if (!answer.ok) return answer;
    answer.ok = false;
    char buffer[16384];
    if (answer.headers.count("transfer-encoding")) {
      decoded_.clear();
      for (;;) {
        if (decode_chunks()) break;
        const auto n = ::recv(fd_, buffer, sizeof buffer, 0);
        if (n <= 0) return answer;
        carry_.append(buffer, static_cast<std::size_t>(n));
      }
      answer.body = decoded_;
      answer.ok = true;
      return answer;
    }
    std::size_t length = answer.headers.count("content-length") ? std::stoul(answer.headers["content-length"]) : 0;
    while (carry_.size() < length) {
      const auto n = ::recv(fd_, buffer, sizeof buffer, 0);
      if (n <= 0) return answer;
      carry_.append(buffer, static_cast<std::size_t>(n));
    }
    answer.body = carry_.substr(0, length);
    carry_.erase(0, length);
    answer.ok = true;
    return answer;
  }

  // True when the server closed the connection (recv returns 0) before the receive timeout.
  bool closed_by_server() {
    char byte;
    for (;;) {
      const auto n = ::recv(fd_, &byte, 1, 0);
      if (n == 0) return true;
      if (n < 0) return errno == ECONNRESET;
    }
  }

 private:
  static void parse_head(const std::string& head, Answer& answer) {
    const auto line_end = head.find("\r\n");
    const auto status_line = head.substr(0, line_end);
    if (status_line.size() > 12) answer.status = std::atoi(status_line.c_str() + 9);
    std::size_t pos = line_end == std::string::npos ? head.size() : line_end + 2;
    while (pos < head.size()) {
      auto next = head.find("\r\n", pos);
      if (next == std::string::npos) next = head.size();
      const auto line = head.substr(pos, next - pos);
      const auto colon = line.find(':');
      if (colon != std::string::npos) {
        std::string name = line.substr(0, colon);
        for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        auto value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ') value.erase(0, 1);
        answer.headers[name] = value;
      }
      pos = next + 2;
    }
  }

  // Moves whole chunks from carry_ to decoded_; true after the last (zero) chunk.
  bool decode_chunks() {
    for (;;) {
      const auto line_end = carry_.find("\r\n");
      if (line_end == std::string::npos) return false;
      const auto size = std::stoul(carry_.substr(0, line_end), nullptr, 16);
      if (carry_.size() < line_end + 2 + size + 2) return false;
      decoded_ += carry_.substr(line_end + 2, size);
      carry_.erase(0, line_end + 2 + size + 2);
      if (size == 0) {
        chunks_done_ = true;
        return true;
      }
    }
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string carry_;
  std::string decoded_;
  bool chunks_done_ = false;
};

}  // namespace aegis::test
