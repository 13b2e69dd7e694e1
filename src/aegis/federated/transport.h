// HTTPS/1.1 with mutual TLS between the aggregator and the participants: TLS 1.3 only, both sides
// present a certificate from the federation's CA (pki.h) and verify the other's. The server hands
// each request, with the verified participant id, to a handler that may block (long-poll); the
// client keeps one connection alive and reconnects when the server went away. Beast stays inside
// transport.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>

namespace aegis::federated {

// PEM files. The server's certificate must carry serverAuth, a client's clientAuth (OpenSSL checks
// the purpose). A client with empty certificate_file and key_file presents no certificate, which
// every MtlsServer refuses: only useful to check that it does.
struct TlsIdentity {
  std::string ca_file;
  std::string certificate_file;
  std::string key_file;
};

struct Request {
  std::string method;
  std::string target;
  std::string body;
  std::map<std::string, std::string> headers;  // lower-case names; repeated headers joined with ", "
  std::string peer_id;                         // CN of the VERIFIED client certificate
  std::string peer_address;                    // "ip:port"
};

struct Response {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  // Extra headers to send; on the client, every header received (lower-case names). Names or
  // values with CR, LF or NUL are dropped, never sent.
  std::map<std::string, std::string> headers;
};

// Called on a worker thread, never on an I/O thread; may block (long-poll) up to
// ServerOptions::handler_timeout_ms. An exception becomes a 500 (its what() goes to the log only).
using Handler = std::function<Response(const Request&)>;
// One line per rejected connection or request, e.g. "rejected TLS connection from 127.0.0.1:53312:
// certificate verify failed (unable to get local issuer certificate)". Called from I/O and worker
// threads, one call at a time per server.
using LogSink = std::function<void(std::string_view line)>;

struct ServerOptions {
  std::string bind_address = "127.0.0.1";
  std::uint16_t port = 0;  // 0: any free port (see MtlsServer::port)
  std::size_t max_body_bytes = 64 << 20;  // larger bodies get 413
  int threads = 4;                        // I/O threads; handlers run on their own threads
  std::size_t max_connections = 256;      // more are closed at once, with a log line
  int idle_timeout_ms = 60000;            // a keep-alive connection with no request is closed
  // Added to the brief's options:
  std::size_t max_header_bytes = 16 << 10;  // larger request headers get 431
  int handshake_timeout_ms = 10000;         // TCP connect to finished TLS handshake
  int header_timeout_ms = 10000;            // first byte of a request to its last header byte
  // Body and response deadlines: header_timeout_ms + size / this rate, so a client that trickles
  // bytes (slowloris) is cut off while a large model update on a slow link still arrives.
  std::size_t min_bytes_per_second = 64 << 10;
  // A handler that has not returned by then gets its client a 503 and its connection closed; its
  // late result is dropped. Long-polls should return well before this and before the clients'
  // ClientOptions::timeout_ms.
  int handler_timeout_ms = 60000;
};

class MtlsServer {
 public:
  // Loads the identity at once: throws core::Error naming the file that cannot be used.
  MtlsServer(TlsIdentity identity, ServerOptions options, Handler handler, LogSink log);
  ~MtlsServer();  // stop()
  MtlsServer(const MtlsServer&) = delete;
  MtlsServer& operator=(const MtlsServer&) = delete;

  // Binds (SO_REUSEADDR, so a restarted server gets its port back) and starts the I/O threads;
  // returns at once. Throws core::Error when the address cannot be bound. Once per object.
  void start();
  std::uint16_t port() const;  // the bound port, after start()
  // Closes the listener and every connection, then waits for running handler calls to return
  // (wake long-polls before calling it). Requests still queued are dropped.
  void stop();

  // Bytes on the wire: counted where the TLS layer reads from and writes to the TCP socket, so
  // they include TLS records' headers and tags and the handshakes (not TCP/IP headers).
  std::uint64_t bytes_received() const;
  std::uint64_t bytes_sent() const;
  // Connections closed before or during the TLS handshake: certificate refused or missing,
  // handshake timeout, not TLS at all.
  std::uint64_t rejected_handshakes() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

struct ClientOptions {
  int timeout_ms = 30000;  // one attempt: connect, handshake, send, and the whole answer
  int retries = 3;         // further attempts after the first; see MtlsClient::request
  int retry_backoff_ms = 200;  // doubled after each retry, at most 30 s
  // Added to the brief's options:
  std::size_t max_response_bytes = 256 << 20;  // a larger answer is an error, not an allocation
};

// Calls from several threads are serialised on the one connection: give each thread its own client
// for parallel requests.
class MtlsClient {
 public:
  // Loads the identity at once: throws core::Error naming the file that cannot be used. host is a
  // DNS name or an IP address and must match a SAN of the server's certificate.
  MtlsClient(TlsIdentity identity, std::string host, std::uint16_t port, ClientOptions options = {});
  ~MtlsClient();
  MtlsClient(const MtlsClient&) = delete;
  MtlsClient& operator=(const MtlsClient&) = delete;

  // Returns any HTTP answer, whatever its status. Throws core::Error saying what failed (connection
  // refused, TLS verification with OpenSSL's reason, the server refusing this client's certificate,
  // timeout) once the attempts are used up. Retried, with backoff: failures before the request was
  // sent (connect refused, handshake cut off) for any method; failures after it for idempotent
  // methods only (GET, HEAD, PUT, DELETE, OPTIONS, or any request with an Idempotency-Key header).
  // Never retried: certificate and TLS protocol errors. A kept-alive connection that the server had
  // closed is replaced once without counting as a retry.
  Response request(const std::string& method, const std::string& target, const std::string& body = {},
                   const std::string& content_type = "application/octet-stream",
                   const std::map<std::string, std::string>& headers = {});

  // Bytes on the wire, counted as in MtlsServer.
  std::uint64_t bytes_sent() const;
  std::uint64_t bytes_received() const;
  // Connections opened after the first one (the server closed or lost the previous one).
  std::uint64_t reconnects() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aegis::federated
