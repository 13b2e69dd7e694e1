// A remote model endpoint (REST/JSON over HTTP or HTTPS) seen as a black-box classifier, so that
// every score- and decision-based attack runs against a deployed model as it runs against a file.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "aegis/models/classifier.h"

namespace aegis::models {

// How to talk to the endpoint. Loaded from a JSON or YAML file (load_http_config) or made from a
// URL alone (http_config_from_url); the HttpClassifier constructor validates it.
struct HttpEndpointConfig {
  // http:// or https://, host, optional port, path and query. May reference environment
  // variables as ${NAME}; messages and reports show the URL as written, never the expanded one.
  std::string url;
  std::string method = "POST";
  // Extra request headers. Values may reference environment variables ("Bearer ${AEGIS_ENDPOINT_TOKEN}")
  // so that secrets stay out of config files; an unset variable is an error, not an empty string.
  std::map<std::string, std::string> headers;

  std::vector<std::int64_t> input_shape;  // one sample, without the batch dimension (required)
  int num_classes = 0;                    // 0: discovered from the answer to one probe request

  // The request body: any JSON document in which exactly one string value is a placeholder,
  // replaced by the data:
  //   "$inputs"         a list of samples, each a flat list of numbers (batch_size samples per request)
  //   "$input"          one sample as a flat list (one sample per request)
  //   "$inputs_shaped", "$input_shaped"   the same, nested to input_shape (as TF Serving expects)
  nlohmann::json request_template = nlohmann::json{{"inputs", "$inputs"}};
  std::size_t batch_size = 32;  // samples per request (forced to 1 by the single-sample placeholders)

  // The response: an RFC 6901 JSON pointer to the scores, a list of rows (one per sample of the
  // request) for the batch placeholders, one row for the single-sample ones.
  std::string scores_pointer = "/probabilities";
  ScoreKind scores = ScoreKind::Probabilities;
  // For decision-only APIs: a pointer to the predicted label (a list of integers for a batch, one
  // integer for one sample). When set, scores_pointer is not used, num_classes is required, scores
  // are one-hot probabilities and the classifier reports decision_only().
  std::string label_pointer;

  int timeout_ms = 10000;            // per attempt: connect, TLS handshake, send and receive together
  std::size_t concurrency = 4;       // requests in flight at once, one worker and connection each
  int retries = 3;                   // extra attempts after a connect error, timeout, HTTP 429 or 5xx
  int backoff_ms = 200;              // first retry delay; doubles each retry, with jitter
  int max_backoff_ms = 10000;        // cap of the exponential backoff
  int max_retry_after_ms = 30000;    // cap on an endpoint's Retry-After
  std::size_t max_response_bytes = std::size_t{16} << 20;  // a larger body is refused, not buffered
  int max_json_depth = 32;           // deeper responses are refused before parsing
  std::uint64_t max_json_values = 4'000'000;  // so are responses with more values than this

  // TLS: the system CA store (plus ca_file when set), SNI and hostname verification are always
  // on unless insecure_skip_verify, which is for test endpoints only.
  bool insecure_skip_verify = false;
  std::string ca_file;  // extra PEM CA bundle (relative paths in a config file are relative to it)
};

// Reads a config file: JSON (.json) or YAML (.yaml, .yml), the keys being the field names above;
// `scores` is "probabilities" or "logits". Unknown keys are an error (a typo must not silently
// fall back to a default). Throws core::Error naming the file and the key.
HttpEndpointConfig load_http_config(const std::string& path);
// Defaults for everything but the URL and the input shape.
HttpEndpointConfig http_config_from_url(const std::string& url, std::vector<std::int64_t> input_shape = {});
// Same as load_http_config, from a parsed document; `origin` names it in messages and relative
// ca_file paths are resolved against `base_dir` when not empty.
HttpEndpointConfig http_config_from_json(const nlohmann::json& doc, const std::string& origin,
                                         const std::string& base_dir = {});

// Traffic counters, for the report.
struct HttpStats {
  std::uint64_t requests = 0;  // HTTP requests sent, every attempt counted (and the discovery probe)
  std::uint64_t retries = 0;   // attempts that repeated a failed one
  std::uint64_t failures = 0;  // attempts that failed (transport error, bad status, invalid answer)
  std::uint64_t connections = 0;  // TCP (and TLS) connections opened
};

namespace detail {
class HttpConnection;
struct HttpTarget;
struct RequestCodec;
}  // namespace detail

class HttpClassifier : public Classifier {
 public:
  // Validates the config, expands environment references and, when num_classes is 0, sends one
  // probe request (a zero sample) to learn it. Throws core::Error on a bad config or endpoint.
  explicit HttpClassifier(HttpEndpointConfig config);
  ~HttpClassifier() override;
  HttpClassifier(const HttpClassifier&) = delete;
  HttpClassifier& operator=(const HttpClassifier&) = delete;

  const ClassifierInfo& info() const override { return info_; }
  std::size_t preferred_batch() const override;

  // True when the endpoint returns labels only (label_pointer): scores are one-hot.
  bool decision_only() const { return decision_only_; }
  const HttpEndpointConfig& config() const { return config_; }

  HttpStats stats() const;
  std::uint64_t requests_sent() const { return requests_.load(); }
  std::uint64_t retries() const { return retries_.load(); }
  std::uint64_t failures() const { return failures_.load(); }

 protected:
  // Splits the batch into requests of batch_size samples and sends them on up to `concurrency`
  // workers, each with its own keep-alive connection; scores land in input order. Safe to call
  // from several threads at once.
  void do_predict(std::span<const float> inputs, std::size_t n, std::span<float> scores) override;

 private:
  // Sends one request for `rows` samples (with retries) and returns its validated scores,
  // rows x num_classes (learning num_classes when it is still 0).
  // `stop`, when given, cancels the retries once another worker has failed.
  std::vector<float> query(detail::HttpConnection& connection, std::span<const float> samples, std::size_t rows,
                           std::uint32_t jitter_seed, const std::atomic<bool>* stop, int& classes);
  std::unique_ptr<detail::HttpConnection> checkout();
  void checkin(std::unique_ptr<detail::HttpConnection> connection);

  HttpEndpointConfig config_;
  ClassifierInfo info_;
  bool decision_only_ = false;
  std::unique_ptr<detail::HttpTarget> target_;
  std::unique_ptr<detail::RequestCodec> codec_;

  std::mutex pool_mutex_;
  std::vector<std::unique_ptr<detail::HttpConnection>> idle_;

  std::atomic<std::uint64_t> requests_{0}, retries_{0}, failures_{0}, connections_{0};
};

}  // namespace aegis::models
