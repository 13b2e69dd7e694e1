// Alert delivery for the gateway: filters and monitors raise alerts without waiting; one worker
// thread writes them to the log and POSTs them to webhooks, with retries, a per-webhook rate limit
// (the surplus is summarised, never silently lost) and de-duplication of repeats.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aegis/core/finding.h"
#include "aegis/gateway/filter.h"

namespace YAML {
class Node;
}

namespace aegis::gateway {

struct Alert {
  std::string rule_id;        // e.g. "gateway.extraction-suspected"
  core::Severity severity = core::Severity::Medium;
  std::string title;
  std::string client;         // subject or client address: what repeats are counted by
  std::string route;
  std::string detail_json;    // a JSON value as text (sent as is when it parses); empty: none
  std::int64_t time_ms = 0;   // UTC milliseconds; 0: when raised
};

struct WebhookConfig {
  std::string url;                 // http://host[:port]/path or https://...
  std::vector<Header> headers;     // sent with each POST (after ${ENV} expansion)
  core::Severity min_severity = core::Severity::Medium;
  std::optional<unsigned> max_per_minute;  // overrides AlertConfig::max_per_minute
};

struct AlertConfig {
  std::vector<WebhookConfig> webhooks;
  unsigned max_per_minute = 30;    // per webhook; 0: unlimited
  unsigned cooldown_seconds = 60;  // one alert per (rule, client) per cooldown; 0: no de-duplication
  bool log = true;                 // one JSON line per alert to the log sink
  std::size_t queue_size = 1024;   // alerts waiting for the worker; more are dropped and counted
  unsigned timeout_ms = 5000;      // per delivery attempt, connect to response
  unsigned retries = 2;            // after the first attempt
  unsigned backoff_ms = 500;       // before the first retry, doubled after each
};

// Reads the `alerts:` section. Throws core::Error "FILE:LINE:COLUMN: ..." (gateway::throw_config_error)
// on an unknown key, a bad value, a URL that is not http(s), or an unset ${ENV} in a header.
AlertConfig parse_alert_config(const YAML::Node& node, const std::string& config_file);

// The JSON object that a log line and a webhook body carry for one alert.
std::string alert_json(const Alert& alert, std::uint64_t repeats_suppressed = 0);

struct AlertCounters {
  std::uint64_t raised = 0;        // accepted by raise()
  std::uint64_t dropped = 0;       // refused: queue full or dispatcher stopped
  std::uint64_t deduplicated = 0;  // repeats within the cooldown (counted into the next alert)
  std::uint64_t logged = 0;
  std::uint64_t sent = 0;          // webhook deliveries answered 2xx (summaries included)
  std::uint64_t failed = 0;        // webhook deliveries given up after the retries
  std::uint64_t suppressed = 0;    // withheld by a webhook's rate limit (reported in a summary)
  std::uint64_t summaries = 0;     // "suppressed K alerts" deliveries
};

class AlertDispatcher {
 public:
  using LogSink = std::function<void(std::string_view line)>;  // called on the worker thread
  using Clock = std::function<std::chrono::steady_clock::time_point()>;

  // `log_sink` may be empty (no log even when config.log). `clock` drives the rate limit and the
  // cooldown; empty: std::chrono::steady_clock. Throws core::Error on a webhook URL it cannot use.
  AlertDispatcher(AlertConfig config, LogSink log_sink, Clock clock = {});
  ~AlertDispatcher();  // stop()
  AlertDispatcher(const AlertDispatcher&) = delete;
  AlertDispatcher& operator=(const AlertDispatcher&) = delete;

  // Queues the alert and returns at once; false (and counted as dropped) when the queue is full.
  bool raise(Alert alert);
  // Blocks until everything raised before the call has been handled (delivered, failed or
  // suppressed) and due summaries have gone out.
  void flush();
  // Handles what is queued (one attempt per delivery, no back-off waits) and stops the worker.
  void stop();

  AlertCounters counters() const;
  // aegis_gateway_alerts_*_total, per webhook where it applies (URL without query or credentials).
  void write_metrics(MetricsWriter& writer) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aegis::gateway
