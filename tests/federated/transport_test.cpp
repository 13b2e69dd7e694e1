#include "aegis/federated/transport.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/federated/pki.h"
#include "test_support.h"

namespace aegis::federated {
namespace {

namespace fs = std::filesystem;

// Waits for something another thread does (a server-side counter, a log line): a bound on waiting,
// not a timing assertion. False when it did not happen within 20 s.
template <class Predicate>
bool eventually(Predicate predicate) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!predicate()) {
    if (std::chrono::steady_clock::now() > give_up) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

class LogLines {
 public:
  LogSink sink() {
    return [this](std::string_view line) {
      std::lock_guard lock(mutex_);
      lines_.emplace_back(line);
    };
  }
  std::vector<std::string> lines() {
    std::lock_guard lock(mutex_);
    return lines_;
  }
  bool has(const std::string& part) {
    for (const auto& line : lines())
      if (contains(line, part)) return true;
    return false;
  }
  std::string all() {
    std::string out;
    for (const auto& line : lines()) out += line + "\n";
    return out;
  }

 private:
  std::mutex mutex_;
  std::vector<std::string> lines_;
};

// A federation with two participants, and a second, unrelated federation whose participant
// "mallory" tries to get in.
class MtlsTransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    PkiOptions options;
    options.participants = {"alice", "bob"};
    pki_ = create_federation_pki(temp_.path / "federation", options);
    PkiOptions other;
    other.participants = {"mallory", "alice"};
    other_ = create_federation_pki(temp_.path / "other", other);
  }

  TlsIdentity server_identity() const {
    return {pki_.ca_certificate().string(), pki_.aggregator_certificate().string(), pki_.aggregator_key().string()};
  }
  TlsIdentity participant(const std::string& id) const {
    return {pki_.ca_certificate().string(), pki_.participant_certificate(id).string(), pki_.participant_key(id).string()};
  }

  // Echoes the body and says who asked.
  Handler echo() {
    return [this](const Request& request) {
      calls_.fetch_add(1);
      {
        std::lock_guard lock(seen_mutex_);
        last_ = request;
      }
      Response response;
      response.content_type = "application/octet-stream";
      response.body = request.body;
      response.headers["X-Peer"] = request.peer_id;
      response.headers["X-Method"] = request.method;
      return response;
    };
  }

  std::unique_ptr<MtlsServer> start_server(ServerOptions options = {}, Handler handler = {}) {
    auto server = std::make_unique<MtlsServer>(server_identity(), options, handler ? handler : echo(), log_.sink());
    server->start();
    return server;
  }

  Request last_request() {
    std::lock_guard lock(seen_mutex_);
    return last_;
  }

  test::TempDir temp_{"aegis_mtls"};
  FederationPki pki_;
  FederationPki other_;
  LogLines log_;
  std::atomic<int> calls_{0};
  std::mutex seen_mutex_;
  Request last_;
};

std::string expect_refused(MtlsClient& client, const std::string& method = "GET") {
  try {
    client.request(method, "/round");
  } catch (const core::Error& e) {
    return std::string(e.what()) + " | hint: " + e.hint();
  }
  ADD_FAILURE() << "the request was not refused";
  return {};
}

TEST_F(MtlsTransportTest, RoundTripCarriesTheVerifiedParticipantId) {
  auto server = start_server();
  MtlsClient client(participant("alice"), "127.0.0.1", server->port());
  const Response response = client.request("POST", "/update?round=3", "weights", "application/octet-stream", {{"X-Round", "3"}});
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "weights");
  EXPECT_EQ(response.content_type, "application/octet-stream");
  EXPECT_EQ(response.headers.at("x-peer"), "alice");

  const Request seen = last_request();
  EXPECT_EQ(seen.peer_id, certificate_common_name(pki_.participant_certificate("alice")));
  EXPECT_EQ(seen.method, "POST");
  EXPECT_EQ(seen.target, "/update?round=3");
  EXPECT_EQ(seen.headers.at("x-round"), "3");
  EXPECT_EQ(seen.headers.at("content-type"), "application/octet-stream");
  EXPECT_TRUE(seen.peer_address.rfind("127.0.0.1:", 0) == 0) << seen.peer_address;

  // The connection is kept: a second request opens no new one.
  const Response again = client.request("GET", "/status");
  EXPECT_EQ(again.status, 200);
  EXPECT_EQ(again.headers.at("x-method"), "GET");
  EXPECT_EQ(client.reconnects(), 0u);
  EXPECT_EQ(server->rejected_handshakes(), 0u);
  EXPECT_EQ(calls_.load(), 2);

  MtlsClient bob(participant("bob"), "localhost", server->port());
  EXPECT_EQ(bob.request("GET", "/status").headers.at("x-peer"), "bob");
}

TEST_F(MtlsTransportTest, ClientWithAnotherCasCertificateIsRefused) {
  auto server = start_server();
  // Trusts our CA (so it accepts the server) but holds a certificate from the other federation, for
  // an id that exists in ours: the CN alone must not let it in.
  MtlsClient client({pki_.ca_certificate().string(), other_.participant_certificate("alice").string(),
                     other_.participant_key("alice").string()},
                    "127.0.0.1", server->port());
  const std::string error = expect_refused(client);
  EXPECT_TRUE(contains(error, "refused this client's TLS certificate")) << error;
  EXPECT_TRUE(contains(error, "unknown ca")) << error;
  ASSERT_TRUE(eventually([&] { return server->rejected_handshakes() >= 1; }));
  // Certificate errors are not retried: one connection, one rejection.
  EXPECT_EQ(server->rejected_handshakes(), 1u);
  ASSERT_TRUE(eventually([&] { return log_.has("rejected TLS connection from 127.0.0.1:"); })) << log_.all();
  EXPECT_TRUE(log_.has("certificate verify failed (unable to get local issuer certificate)")) << log_.all();
  EXPECT_EQ(calls_.load(), 0);
}

TEST_F(MtlsTransportTest, ClientWithoutCertificateIsRefused) {
  auto server = start_server();
  MtlsClient client({pki_.ca_certificate().string(), "", ""}, "127.0.0.1", server->port());
  const std::string error = expect_refused(client, "POST");
  EXPECT_TRUE(contains(error, "refused this client's TLS certificate")) << error;
  EXPECT_TRUE(contains(error, "certificate required")) << error;
  ASSERT_TRUE(eventually([&] { return server->rejected_handshakes() >= 1; }));
  EXPECT_EQ(server->rejected_handshakes(), 1u);
  ASSERT_TRUE(eventually([&] { return log_.has("peer did not return a certificate"); })) << log_.all();
  EXPECT_EQ(calls_.load(), 0);
}

TEST_F(MtlsTransportTest, ClientThatDoesNotTrustTheServersCaRefusesIt) {
  auto server = start_server();
  MtlsClient client({other_.ca_certificate().string(), pki_.participant_certificate("alice").string(),
                     pki_.participant_key("alice").string()},
                    "127.0.0.1", server->port());
  const std::string error = expect_refused(client);
  EXPECT_TRUE(contains(error, "TLS handshake with 127.0.0.1:")) << error;
  EXPECT_TRUE(contains(error, "certificate verify failed (unable to get local issuer certificate)")) << error;
  EXPECT_FALSE(contains(error, "attempts")) << "a verification failure must not be retried: " << error;
  EXPECT_EQ(calls_.load(), 0);
  // The server sees the client's alert and says so.
  ASSERT_TRUE(eventually([&] { return log_.has("unknown ca"); })) << log_.all();
}

TEST_F(MtlsTransportTest, ClientChecksTheServerCertificateNamesTheHostItDialled) {
  PkiOptions options;
  options.participants = {"alice"};
  options.aggregator_names = {"localhost"};
  const FederationPki named = create_federation_pki(temp_.path / "named", options);
  MtlsServer server({named.ca_certificate().string(), named.aggregator_certificate().string(), named.aggregator_key().string()},
                    {}, echo(), log_.sink());
  server.start();
  const TlsIdentity alice{named.ca_certificate().string(), named.participant_certificate("alice").string(),
                          named.participant_key("alice").string()};
  MtlsClient by_address(alice, "127.0.0.1", server.port());
  const std::string error = expect_refused(by_address);
  EXPECT_TRUE(contains(error, "IP address mismatch")) << error;
  MtlsClient by_name(alice, "localhost", server.port());
  EXPECT_EQ(by_name.request("GET", "/status").status, 200);
}

TEST_F(MtlsTransportTest, ParticipantCertificateCannotPoseAsTheAggregator) {
  // bob's certificate is for clientAuth only; a server presenting it is refused by purpose.
  MtlsServer server(participant("bob"), {}, echo(), log_.sink());
  server.start();
  MtlsClient client(participant("alice"), "127.0.0.1", server.port());
  const std::string error = expect_refused(client);
  EXPECT_TRUE(contains(error, "certificate verify failed")) << error;
  EXPECT_TRUE(contains(error, "unsuitable certificate purpose")) << error;
  EXPECT_TRUE(contains(error, "serverAuth")) << error;
  EXPECT_EQ(calls_.load(), 0);
}

TEST_F(MtlsTransportTest, OversizedBodyGets413AndTheClientGoesOn) {
  ServerOptions options;
  options.max_body_bytes = 1024;
  auto server = start_server(options);
  MtlsClient client(participant("alice"), "127.0.0.1", server->port());
  const Response refused = client.request("POST", "/update", std::string(64 * 1024, 'x'));
  EXPECT_EQ(refused.status, 413);
  EXPECT_TRUE(contains(refused.body, "1024")) << refused.body;
  EXPECT_EQ(calls_.load(), 0);
  ASSERT_TRUE(eventually([&] { return log_.has("max_body_bytes"); })) << log_.all();

  // The server closed that connection; the next request gets a new one.
  const Response accepted = client.request("POST", "/update", std::string(1024, 'y'));
  EXPECT_EQ(accepted.status, 200);
  EXPECT_EQ(accepted.body.size(), 1024u);
  EXPECT_EQ(calls_.load(), 1);
}

TEST_F(MtlsTransportTest, SameClientReconnectsToARestartedServer) {
  auto server = start_server();
  const std::uint16_t port = server->port();
  MtlsClient client(participant("alice"), "127.0.0.1", port);
  EXPECT_EQ(client.request("POST", "/update", "round 1").status, 200);
  EXPECT_EQ(client.reconnects(), 0u);

  server->stop();
  server.reset();
  ServerOptions same_port;
  same_port.port = port;
  server = start_server(same_port);
  ASSERT_EQ(server->port(), port);

  // POST is not idempotent: this only works because the dead kept-alive connection is noticed
  // and replaced before the request goes out.
  const Response response = client.request("POST", "/update", "round 2");
  EXPECT_EQ(response.status, 200);
  EXPECT_EQ(response.body, "round 2");
  EXPECT_GT(client.reconnects(), 0u);
}

TEST_F(MtlsTransportTest, RetriesUntilTheServerIsBackAndGivesUpWithTheReason) {
  std::uint16_t port = 0;
  {
    auto probe = start_server();
    port = probe->port();
  }
  // Nothing listens now: the client says so after its attempts.
  ClientOptions options;
  options.retries = 2;
  options.retry_backoff_ms = 1;
  MtlsClient client(participant("alice"), "127.0.0.1", port, options);
  const std::string error = expect_refused(client, "POST");
  EXPECT_TRUE(contains(error, "cannot connect to 127.0.0.1:" + std::to_string(port))) << error;
  EXPECT_TRUE(contains(error, "Connection refused")) << error;
  EXPECT_TRUE(contains(error, "after 3 attempts")) << error;
}

TEST_F(MtlsTransportTest, ConcurrentRequestsFromEightThreads) {
  ServerOptions options;
  options.threads = 2;
  auto server = start_server(options);
  constexpr int kThreads = 8;
  constexpr int kRequests = 25;
  std::atomic<int> correct{0};
  std::vector<std::string> failures(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      try {
        const std::string id = t % 2 ? "bob" : "alice";
        MtlsClient client(participant(id), "127.0.0.1", server->port());
        for (int i = 0; i < kRequests; ++i) {
          const std::string body = "thread " + std::to_string(t) + " request " + std::to_string(i) + std::string(t * 100 + i, '.');
          const Response response = client.request("POST", "/update", body);
          if (response.status == 200 && response.body == body && response.headers.at("x-peer") == id) correct.fetch_add(1);
        }
      } catch (const std::exception& e) {
        failures[t] = e.what();
      }
    });
  // And one client shared by four threads: its calls take turns on the one connection.
  MtlsClient shared(participant("alice"), "127.0.0.1", server->port());
  std::atomic<int> shared_correct{0};
  std::vector<std::thread> sharers;
  for (int t = 0; t < 4; ++t)
    sharers.emplace_back([&, t] {
      for (int i = 0; i < 10; ++i) {
        const std::string body = "shared " + std::to_string(t) + "/" + std::to_string(i);
        try {
          if (shared.request("POST", "/update", body).body == body) shared_correct.fetch_add(1);
        } catch (const std::exception&) {
        }
      }
    });
  for (auto& thread : threads) thread.join();
  for (auto& thread : sharers) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], "") << "thread " << t;
  EXPECT_EQ(correct.load(), kThreads * kRequests);
  EXPECT_EQ(shared_correct.load(), 40);
  EXPECT_EQ(shared.reconnects(), 0u);
  EXPECT_EQ(calls_.load(), kThreads * kRequests + 40);
}

TEST_F(MtlsTransportTest, ByteCountersCountMoreThanTheBodies) {
  auto server = start_server();
  MtlsClient client(participant("alice"), "127.0.0.1", server->port());
  const std::string body(100000, 'w');
  ASSERT_EQ(client.request("POST", "/update", body).body, body);
  // TLS records, headers and the handshake come on top of the bodies.
  EXPECT_GT(client.bytes_sent(), body.size());
  EXPECT_GT(client.bytes_received(), body.size());
  // Both ends count the same records; the server's count of its last write may land a moment
  // after the client has read it.
  EXPECT_TRUE(eventually([&] {
    return server->bytes_received() == client.bytes_sent() && server->bytes_sent() == client.bytes_received();
  })) << "server received " << server->bytes_received() << " of " << client.bytes_sent() << ", sent "
      << server->bytes_sent() << " of " << client.bytes_received();
}

TEST_F(MtlsTransportTest, LongPollDoesNotHoldUpOtherParticipants) {
  // /wait blocks until /release arrives on another connection. With handler calls queued behind a
  // fixed pool of busy threads this would never finish; here it must, before handler_timeout_ms.
  std::mutex mutex;
  std::condition_variable released_cv;
  bool released = false;
  Handler handler = [&](const Request& request) {
    Response response;
    if (request.target == "/wait") {
      std::unique_lock lock(mutex);
      response.body = released_cv.wait_for(lock, std::chrono::seconds(30), [&] { return released; }) ? "released" : "gave up";
    } else {
      std::lock_guard lock(mutex);
      released = true;
      released_cv.notify_all();
      response.body = "ok";
    }
    return response;
  };
  ServerOptions options;
  options.threads = 1;
  auto server = start_server(options, handler);
  std::vector<std::thread> waiters;
  std::atomic<int> released_count{0};
  for (int i = 0; i < 6; ++i)
    waiters.emplace_back([&] {
      MtlsClient client(participant("alice"), "127.0.0.1", server->port());
      if (client.request("GET", "/wait").body == "released") released_count.fetch_add(1);
    });
  // Let the waiters reach the handler before releasing them (not required for correctness: a late
  // waiter finds `released` already set).
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  MtlsClient releaser(participant("bob"), "127.0.0.1", server->port());
  EXPECT_EQ(releaser.request("POST", "/release").body, "ok");
  for (auto& thread : waiters) thread.join();
  EXPECT_EQ(released_count.load(), 6);
}

TEST_F(MtlsTransportTest, HandlerThatOverrunsItsTimeoutGets503) {
  std::mutex mutex;
  std::condition_variable cv;
  bool finish = false;
  Handler stuck = [&](const Request&) {
    std::unique_lock lock(mutex);
    cv.wait(lock, [&] { return finish; });
    return Response{200, "text/plain", "too late", {}};
  };
  ServerOptions options;
  options.handler_timeout_ms = 100;
  auto server = start_server(options, stuck);
  MtlsClient client(participant("alice"), "127.0.0.1", server->port());
  const Response response = client.request("POST", "/update", "x");
  EXPECT_EQ(response.status, 503);
  EXPECT_TRUE(log_.has("handler_timeout_ms")) << log_.all();
  {
    std::lock_guard lock(mutex);
    finish = true;
  }
  cv.notify_all();
  server->stop();
}

TEST_F(MtlsTransportTest, HandlerExceptionBecomes500) {
  auto server = start_server({}, [](const Request&) -> Response { throw std::runtime_error("secret internal detail"); });
  MtlsClient client(participant("alice"), "127.0.0.1", server->port());
  const Response response = client.request("POST", "/update", "x");
  EXPECT_EQ(response.status, 500);
  EXPECT_FALSE(contains(response.body, "secret internal detail")) << response.body;
  ASSERT_TRUE(eventually([&] { return log_.has("secret internal detail"); })) << log_.all();
}

int connect_tcp(std::uint16_t port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(port);
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

TEST_F(MtlsTransportTest, ConnectionThatNeverHandshakesIsCutOff) {
  ServerOptions options;
  options.handshake_timeout_ms = 200;
  auto server = start_server(options);
  const int fd = connect_tcp(server->port());
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(eventually([&] { return server->rejected_handshakes() == 1; }));
  ASSERT_TRUE(eventually([&] { return log_.has("no TLS handshake within 200 ms"); })) << log_.all();
  // The server closed its end: reading gives end of file.
  char byte = 0;
  EXPECT_EQ(::recv(fd, &byte, 1, 0), 0);
  ::close(fd);
}

// A TLS client that sends raw bytes, for requests MtlsClient would never write.
class RawTlsClient {
 public:
  RawTlsClient(const TlsIdentity& identity, std::uint16_t port) {
    context_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(context_, identity.ca_file.c_str(), nullptr);
    SSL_CTX_use_certificate_file(context_, identity.certificate_file.c_str(), SSL_FILETYPE_PEM);
    SSL_CTX_use_PrivateKey_file(context_, identity.key_file.c_str(), SSL_FILETYPE_PEM);
    fd_ = connect_tcp(port);
    ssl_ = SSL_new(context_);
    SSL_set_fd(ssl_, fd_);
    connected_ = fd_ >= 0 && SSL_connect(ssl_) == 1;
  }
  ~RawTlsClient() {
    SSL_free(ssl_);
    SSL_CTX_free(context_);
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return connected_; }
  void send(const std::string& bytes) { SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size())); }
  // Everything until the server closes.
  std::string receive_all() {
    std::string out;
    char buffer[4096];
    int n = 0;
    while ((n = SSL_read(ssl_, buffer, sizeof buffer)) > 0) out.append(buffer, static_cast<std::size_t>(n));
    ERR_clear_error();
    return out;
  }

 private:
  SSL_CTX* context_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
  bool connected_ = false;
};

TEST_F(MtlsTransportTest, MalformedRequestGets400AndALogLine) {
  auto server = start_server();
  RawTlsClient raw(participant("alice"), server->port());
  ASSERT_TRUE(raw.connected());
  raw.send("THIS IS NOT HTTP\r\n\r\n");
  const std::string answer = raw.receive_all();
  EXPECT_EQ(answer.rfind("HTTP/1.1 400", 0), 0u) << answer;
  EXPECT_TRUE(log_.has("rejected malformed request from alice (127.0.0.1:")) << log_.all();
  EXPECT_EQ(calls_.load(), 0);
}

TEST_F(MtlsTransportTest, OversizedHeaderGets431) {
  ServerOptions options;
  options.max_header_bytes = 1024;
  auto server = start_server(options);
  RawTlsClient raw(participant("alice"), server->port());
  ASSERT_TRUE(raw.connected());
  raw.send("GET / HTTP/1.1\r\nHost: x\r\nX-Padding: " + std::string(4096, 'p') + "\r\n\r\n");
  const std::string answer = raw.receive_all();
  EXPECT_EQ(answer.rfind("HTTP/1.1 431", 0), 0u) << answer;
  EXPECT_EQ(calls_.load(), 0);
}

TEST_F(MtlsTransportTest, BadIdentityFilesAndBusyPortsAreClearErrors) {
  try {
    MtlsServer server({pki_.ca_certificate().string(), (temp_.path / "missing.pem").string(), pki_.aggregator_key().string()}, {},
                      echo(), {});
    FAIL() << "a missing certificate must be refused";
  } catch (const core::Error& e) {
    EXPECT_TRUE(contains(e.what(), "missing.pem")) << e.what();
  }
  // A key that is not the certificate's.
  EXPECT_THROW(MtlsClient({pki_.ca_certificate().string(), pki_.participant_certificate("alice").string(),
                           pki_.participant_key("bob").string()},
                          "127.0.0.1", 1),
               core::Error);
  auto server = start_server();
  ServerOptions same_port;
  same_port.port = server->port();
  MtlsServer second(server_identity(), same_port, echo(), {});
  try {
    second.start();
    FAIL() << "a port in use must be refused";
  } catch (const core::Error& e) {
    EXPECT_TRUE(contains(e.what(), "cannot listen on 127.0.0.1:" + std::to_string(server->port()))) << e.what();
  }
}

}  // namespace
}  // namespace aegis::federated
