// The gateway's monitors, off the request path: the server hands each classifier exchange's inputs
// and answers to a bounded queue; one worker thread feeds the per-route extraction detectors
// (PRADA, similarity) and drift monitors, and raises alerts when they fire.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "aegis/gateway/config.h"
#include "aegis/gateway/filter.h"

namespace aegis::gateway {

class AlertDispatcher;

struct MonitorObservation {
  std::string route;
  std::string client;                         // subject when authenticated, else the client address
  std::vector<std::vector<float>> inputs;     // one row per input of the request
  std::vector<std::vector<float>> probabilities;  // one row per input, as answered
};

class MonitorHub {
 public:
  // Validates every route's `monitors:` section (errors name the line) and starts the worker.
  // `alerts` may be nullptr (alerts are then only counted).
  MonitorHub(const GatewayConfig& config, AlertDispatcher* alerts, std::size_t queue_size = 4096);
  ~MonitorHub();
  MonitorHub(const MonitorHub&) = delete;
  MonitorHub& operator=(const MonitorHub&) = delete;

  // On the request's thread: copies the classifier inputs and probabilities out of the exchange
  // and queues them; never blocks (drops and counts when the queue is full).
  void observe(const RouteConfig& route, Exchange& exchange);
  void submit(MonitorObservation observation);
  // Rebuilds the monitors of routes whose monitor config changed; others keep their state.
  void reconfigure(const GatewayConfig& config);
  // Blocks until the queue is empty and processed.
  void drain();
  void stop();
  void write_metrics(MetricsWriter& writer) const;

  struct RouteStatus {
    std::uint64_t observations = 0;
    std::uint64_t extraction_alerts = 0;
    std::uint64_t drift_evaluations = 0;
    std::uint64_t drift_alerts = 0;
    double drifted_share = 0;
    bool drifting = false;
    std::vector<std::string> flagged_clients;
  };
  RouteStatus status(const std::string& route) const;

 private:
  struct RouteMonitors;
  void run();
  void process(MonitorObservation& observation);
  std::map<std::string, std::shared_ptr<RouteMonitors>> build(const GatewayConfig& config,
                                                              const std::map<std::string, std::shared_ptr<RouteMonitors>>& keep);

  AlertDispatcher* alerts_;
  std::size_t queue_size_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable idle_;
  std::deque<MonitorObservation> queue_;
  bool busy_ = false;
  bool stopping_ = false;
  std::map<std::string, std::shared_ptr<RouteMonitors>> routes_;  // guarded by mutex_ for swaps
  std::atomic<std::uint64_t> dropped_{0};
  std::atomic<std::uint64_t> malformed_{0};
  std::thread worker_;
};

}  // namespace aegis::gateway
