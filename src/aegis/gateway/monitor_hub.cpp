#include "aegis/gateway/monitor_hub.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <optional>

#include "aegis/core/error.h"
#include "aegis/formats/npy.h"
#include "aegis/gateway/alerts.h"
#include "aegis/monitor/drift.h"
#include "aegis/monitor/extraction_detector.h"

namespace aegis::gateway {
namespace {

constexpr std::size_t kMaxRowsPerRequest = 256;
constexpr std::size_t kMaxRowFloats = 1 << 20;
constexpr std::size_t kMaxRawFeatures = 64;

std::int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void only_keys(const std::string& file, const YAML::Node& node, const std::string& where, std::initializer_list<const char*> allowed) {
  if (!node.IsMap()) throw_config_error(file, node, where + " must be a mapping");
  for (const auto& item : node) {
    const auto key = item.first.as<std::string>();
    if (std::none_of(allowed.begin(), allowed.end(), [&](const char* a) { return key == a; })) {
      std::string list;
      for (const char* a : allowed) list += std::string(list.empty() ? "" : ", ") + a;
      throw_config_error(file, item.first, "unknown key '" + key + "' in " + where, "the keys allowed here are: " + list);
    }
  }
}

double number_at(const std::string& file, const YAML::Node& node, const std::string& what, double low, double high) {
  double value = 0;
  try {
    value = node.as<double>();
  } catch (const YAML::Exception&) {
    throw_config_error(file, node, what + " must be a number");
  }
  if (!(value >= low && value <= high))
    throw_config_error(file, node, what + " must be between " + std::to_string(low) + " and " + std::to_string(high));
  return value;
}

std::size_t count_at(const std::string& file, const YAML::Node& node, const std::string& what, std::size_t low, std::size_t high) {
  const double value = number_at(file, node, what, double(low), double(high));
  if (value != std::floor(value)) throw_config_error(file, node, what + " must be a whole number");
  return static_cast<std::size_t>(value);
}

// Flattens a nested numeric JSON array (one input) into floats; false when it holds anything else.
bool flatten(const nlohmann::json& value, std::vector<float>& out, int depth = 0) {
  if (depth > 8 || out.size() > kMaxRowFloats) return false;
  if (value.is_number()) {
    out.push_back(value.get<float>());
    return true;
  }
  if (!value.is_array()) return false;
  for (const auto& item : value)
    if (!flatten(item, out, depth + 1)) return false;
  return true;
}

// The classifier API's inputs: {"inputs": [row, ...]} or {"input": row}.
bool read_rows(const nlohmann::json& body, const char* many, const char* one, std::vector<std::vector<float>>& rows) {
  if (!body.is_object()) return false;
  if (auto it = body.find(many); it != body.end() && it->is_array()) {
    for (const auto& row : *it) {
      if (rows.size() >= kMaxRowsPerRequest) break;
      rows.emplace_back();
      if (!flatten(row, rows.back())) return false;
    }
    return !rows.empty();
  }
  if (auto it = body.find(one); it != body.end()) {
    rows.emplace_back();
    return flatten(*it, rows.back());
  }
  return false;
}

std::vector<float> read_npy_rows(const std::string& path, std::size_t& row_size) {
  auto array = formats::read_npy_file(path, std::uint64_t(1) << 28);
  if (array.shape.empty()) throw core::Error(path + " holds a scalar, not rows of inputs");
  row_size = 1;
  for (std::size_t i = 1; i < array.shape.size(); ++i) row_size *= static_cast<std::size_t>(array.shape[i]);
  return std::move(array.values);
}

}  // namespace

struct MonitorHub::RouteMonitors {
  std::string config_text;  // to keep state across reloads when unchanged
  std::optional<monitor::PradaDetector> prada;
  std::optional<monitor::SimilarityDetector> similarity;
  core::Severity extraction_severity = core::Severity::High;
  std::optional<monitor::DriftMonitor> drift;
  std::string drift_features = "summary";  // summary (mean, std, min, max of the input) or raw
  std::optional<monitor::DriftMonitorOptions> drift_options_raw;  // raw: built at the first input, which sets the size
  std::size_t evaluate_every = 100;
  std::size_t since_evaluation = 0;
  core::Severity drift_severity = core::Severity::Medium;
  RouteStatus status;
};

MonitorHub::MonitorHub(const GatewayConfig& config, AlertDispatcher* alerts, std::size_t queue_size)
    : alerts_(alerts), queue_size_(queue_size) {
  routes_ = build(config, {});
  worker_ = std::thread([this] { run(); });
}

MonitorHub::~MonitorHub() { stop(); }

std::map<std::string, std::shared_ptr<MonitorHub::RouteMonitors>> MonitorHub::build(
    const GatewayConfig& config, const std::map<std::string, std::shared_ptr<RouteMonitors>>& keep) {
  std::map<std::string, std::shared_ptr<RouteMonitors>> built;
  const auto& file = config.file;
  for (const auto& route : config.routes) {
    if (!route.monitors.enabled()) continue;
    const std::string text = (MonitorConfig::present(route.monitors.extraction) ? YAML::Dump(route.monitors.extraction) : "") +
                             "\n---\n" + (MonitorConfig::present(route.monitors.drift) ? YAML::Dump(route.monitors.drift) : "");
    if (auto old = keep.find(route.info.name); old != keep.end() && old->second->config_text == text) {
      built.emplace(route.info.name, old->second);
      continue;
    }
    auto monitors = std::make_shared<RouteMonitors>();
    monitors->config_text = text;
    if (const auto& node = route.monitors.extraction; MonitorConfig::present(node)) {
      only_keys(file, node, "monitors.extraction",
                {"detectors", "delta", "min_queries", "projection_dims", "max_clients", "k", "threshold", "calibrate_npy",
                 "calibrate_clients", "history", "severity"});
      std::vector<std::string> detectors = {"prada"};
      if (const auto d = node["detectors"]) {
        if (!d.IsSequence()) throw_config_error(file, d, "detectors must be a list: [prada, similarity]");
        detectors.clear();
        for (const auto& item : d) {
          const auto name = item.as<std::string>();
          if (name != "prada" && name != "similarity")
            throw_config_error(file, item, "unknown extraction detector '" + name + "'", "the detectors are prada and similarity");
          detectors.push_back(name);
        }
      }
      if (node["severity"]) {
        auto severity = core::parse_severity(node["severity"].as<std::string>());
        if (!severity) throw_config_error(file, node["severity"], "severity is critical, high, medium, low or info");
        monitors->extraction_severity = *severity;
      }
      if (std::find(detectors.begin(), detectors.end(), "prada") != detectors.end()) {
        monitor::PradaOptions options;
        if (node["delta"]) options.delta = number_at(file, node["delta"], "delta", 0.01, 1.0);
        if (node["min_queries"]) options.min_distances = count_at(file, node["min_queries"], "min_queries", 20, 5000);
        if (node["projection_dims"]) options.projection_dims = count_at(file, node["projection_dims"], "projection_dims", 0, 4096);
        if (node["max_clients"]) options.max_clients = count_at(file, node["max_clients"], "max_clients", 1, 1'000'000);
        monitors->prada.emplace(options);
      }
      if (std::find(detectors.begin(), detectors.end(), "similarity") != detectors.end()) {
        monitor::SimilarityOptions options;
        if (node["k"]) options.k = count_at(file, node["k"], "k", 1, 1000);
        if (node["history"]) options.history = count_at(file, node["history"], "history", 2, 100'000);
        if (node["projection_dims"]) options.projection_dims = count_at(file, node["projection_dims"], "projection_dims", 0, 4096);
        if (node["max_clients"]) options.max_clients = count_at(file, node["max_clients"], "max_clients", 1, 1'000'000);
        if (node["threshold"]) options.threshold = number_at(file, node["threshold"], "threshold", 0, 1e12);
        monitors->similarity.emplace(options);
        if (const auto npy = node["calibrate_npy"]) {
          std::string path = npy.as<std::string>();
          if (!path.empty() && path[0] != '/' && !config.file.empty()) {
            const auto slash = config.file.rfind('/');
            if (slash != std::string::npos) path = config.file.substr(0, slash + 1) + path;
          }
          const std::size_t clients = node["calibrate_clients"] ? count_at(file, node["calibrate_clients"], "calibrate_clients", 1, 1000) : 1;
          try {
            std::size_t row_size = 0;
            auto rows = read_npy_rows(path, row_size);
            monitors->similarity->calibrate(rows, row_size, clients);
          } catch (const std::exception& e) {
            throw_config_error(file, npy, std::string("cannot calibrate the similarity detector: ") + e.what(),
                               "give a .npy of benign inputs (rows shaped as the model takes them)");
          }
        } else if (!node["threshold"]) {
          throw_config_error(file, node, "the similarity detector needs threshold: or calibrate_npy: (benign inputs)");
        }
      }
    }
    if (const auto& node = route.monitors.drift; MonitorConfig::present(node)) {
      only_keys(file, node, "monitors.drift",
                {"features", "reference_size", "window_size", "min_current", "evaluate_every", "numeric_test", "categorical_test",
                 "numeric_threshold", "categorical_threshold", "drift_share", "severity"});
      monitor::DriftMonitorOptions options;
      if (node["features"]) {
        monitors->drift_features = node["features"].as<std::string>();
        if (monitors->drift_features != "summary" && monitors->drift_features != "raw")
          throw_config_error(file, node["features"], "features is summary (mean, std, min, max of each input) or raw (each value, up to 64)");
      }
      if (monitors->drift_features == "summary") options.feature_names = {"input_mean", "input_std", "input_min", "input_max"};
      if (node["reference_size"]) options.reference_size = count_at(file, node["reference_size"], "reference_size", 10, 1'000'000);
      if (node["window_size"]) options.window_size = count_at(file, node["window_size"], "window_size", 10, 1'000'000);
      if (node["min_current"]) options.min_current = count_at(file, node["min_current"], "min_current", 1, 1'000'000);
      if (options.min_current > options.window_size)
        throw_config_error(file, node, "min_current is larger than window_size");
      if (node["evaluate_every"]) monitors->evaluate_every = count_at(file, node["evaluate_every"], "evaluate_every", 1, 1'000'000);
      try {
        if (node["numeric_test"]) options.numeric_test = monitor::parse_drift_test(node["numeric_test"].as<std::string>());
        if (node["categorical_test"]) options.categorical_test = monitor::parse_drift_test(node["categorical_test"].as<std::string>());
      } catch (const core::Error& e) {
        throw_config_error(file, node["numeric_test"] ? node["numeric_test"] : node["categorical_test"], e.what());
      }
      if (node["numeric_threshold"]) options.numeric_threshold = number_at(file, node["numeric_threshold"], "numeric_threshold", 0, 1e6);
      if (node["categorical_threshold"])
        options.categorical_threshold = number_at(file, node["categorical_threshold"], "categorical_threshold", 0, 1e6);
      if (node["drift_share"]) options.drift_share = number_at(file, node["drift_share"], "drift_share", 0.0001, 1);
      if (node["severity"]) {
        auto severity = core::parse_severity(node["severity"].as<std::string>());
        if (!severity) throw_config_error(file, node["severity"], "severity is critical, high, medium, low or info");
        monitors->drift_severity = *severity;
      }
      if (monitors->drift_features == "summary") monitors->drift.emplace(options);
      else monitors->drift_options_raw = options;
    }
    built.emplace(route.info.name, monitors);
  }
  return built;
}

void MonitorHub::observe(const RouteConfig& route, Exchange& exchange) {
  MonitorObservation observation;
  observation.route = route.info.name;
  observation.client = exchange.identity.subject.empty() ? exchange.request.client_ip : exchange.identity.subject;
  const auto* request = exchange.request_json();
  const auto* response = exchange.response_json();
  if (!request || !response || !read_rows(*request, "inputs", "input", observation.inputs) ||
      !read_rows(*response, "probabilities", "probability", observation.probabilities)) {
    malformed_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  // a flat single row of probabilities answers a single input
  if (observation.probabilities.size() != observation.inputs.size()) {
    if (auto it = response->find("probabilities"); observation.inputs.size() == 1 && it != response->end() && it->is_array() &&
                                                   !it->empty() && (*it)[0].is_number()) {
      observation.probabilities.assign(1, {});
      flatten(*it, observation.probabilities[0]);
    } else {
      malformed_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }
  submit(std::move(observation));
}

void MonitorHub::submit(MonitorObservation observation) {
  std::lock_guard lock(mutex_);
  if (stopping_ || queue_.size() >= queue_size_) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  queue_.push_back(std::move(observation));
  wake_.notify_one();
}

void MonitorHub::run() {
  for (;;) {
    MonitorObservation observation;
    std::shared_ptr<RouteMonitors> keep_alive;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping with nothing left
      observation = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    try {
      process(observation);
    } catch (const std::exception&) {
      malformed_.fetch_add(1, std::memory_order_relaxed);  // e.g. an input of another size than the first
    }
    std::lock_guard lock(mutex_);
    busy_ = false;
    if (queue_.empty()) idle_.notify_all();
  }
}

void MonitorHub::process(MonitorObservation& observation) {
  std::shared_ptr<RouteMonitors> monitors;
  {
    std::lock_guard lock(mutex_);
    auto it = routes_.find(observation.route);
    if (it == routes_.end()) return;
    monitors = it->second;
  }
  auto& m = *monitors;
  for (std::size_t row = 0; row < observation.inputs.size(); ++row) {
    const auto& input = observation.inputs[row];
    const auto& scores = observation.probabilities[row];
    if (input.empty() || scores.empty()) continue;
    const auto best = std::max_element(scores.begin(), scores.end()) - scores.begin();
    {
      std::lock_guard lock(mutex_);
      ++m.status.observations;
    }
    auto raise = [&](const monitor::ExtractionAlert& alert) {
      {
        std::lock_guard lock(mutex_);
        ++m.status.extraction_alerts;
        m.status.flagged_clients.push_back(alert.client);
      }
      if (!alerts_) return;
      Alert out;
      out.rule_id = "gateway.extraction-suspected";
      out.severity = m.extraction_severity;
      out.title = "query pattern of client " + alert.client + " on route " + observation.route + " looks like model extraction (" +
                  alert.detector + ")";
      out.client = alert.client;
      out.route = observation.route;
      nlohmann::json detail = {{"detector", alert.detector},
                               {"queries_seen", alert.queries_seen},
                               {"statistic", alert.statistic},
                               {"threshold", alert.threshold},
                               {"atlas", {"AML.T0024.002", "AML.T0040"}}};
      out.detail_json = detail.dump();
      out.time_ms = now_ms();
      alerts_->raise(std::move(out));
    };
    if (m.prada)
      if (auto alert = m.prada->observe(observation.client, input, best)) raise(*alert);
    if (m.similarity)
      if (auto alert = m.similarity->observe(observation.client, input)) raise(*alert);
    if (!m.drift && m.drift_options_raw) {
      auto options = *m.drift_options_raw;
      const std::size_t features = std::min(input.size(), kMaxRawFeatures);
      for (std::size_t i = 0; i < features; ++i) options.feature_names.push_back("input_" + std::to_string(i));
      m.drift.emplace(options);
    }
    if (m.drift) {
      monitor::DriftObservation o;
      if (m.drift_features == "summary") {
        double sum = 0, sq = 0, lo = input[0], hi = input[0];
        for (float v : input) {
          sum += v;
          sq += double(v) * v;
          lo = std::min(lo, double(v));
          hi = std::max(hi, double(v));
        }
        const double n = double(input.size());
        const double mean = sum / n;
        o.features = {mean, std::sqrt(std::max(0.0, sq / n - mean * mean)), lo, hi};
      } else {
        const std::size_t features = m.drift->options().feature_names.size();
        if (input.size() < features) continue;
        o.features.assign(input.begin(), input.begin() + static_cast<std::ptrdiff_t>(features));
      }
      o.predicted_class = best;
      o.confidence = scores[static_cast<std::size_t>(best)];
      m.drift->observe(o);
      if (m.drift->reference_ready() && m.drift->current_count() >= m.drift->options().min_current &&
          ++m.since_evaluation >= m.evaluate_every) {
        m.since_evaluation = 0;
        const auto report = m.drift->evaluate();
        bool newly = false;
        {
          std::lock_guard lock(mutex_);
          ++m.status.drift_evaluations;
          m.status.drifted_share = report.drifted_share;
          newly = report.dataset_drift && !m.status.drifting;
          m.status.drifting = report.dataset_drift;
          if (newly) ++m.status.drift_alerts;
        }
        // alert on the change into drift; the state re-arms when the window is back to normal
        if (newly && alerts_) {
          Alert out;
          out.rule_id = "gateway.drift";
          out.severity = m.drift_severity;
          out.title = "inputs or predictions of route " + observation.route + " drifted from the reference (" +
                      std::to_string(report.drifted_features) + " of " + std::to_string(report.features.size()) + " features)";
          out.route = observation.route;
          out.client = "*";
          nlohmann::json features = nlohmann::json::array();
          for (const auto& f : report.features)
            features.push_back({{"feature", f.feature},
                                {"test", monitor::to_string(f.test)},
                                {"statistic", f.statistic},
                                {"p_value", std::isnan(f.p_value) ? nlohmann::json() : nlohmann::json(f.p_value)},
                                {"threshold", f.threshold},
                                {"drifted", f.drifted}});
          out.detail_json = nlohmann::json{{"drifted_share", report.drifted_share}, {"features", features}}.dump();
          out.time_ms = now_ms();
          alerts_->raise(std::move(out));
        }
      }
    }
  }
}

void MonitorHub::reconfigure(const GatewayConfig& config) {
  std::map<std::string, std::shared_ptr<RouteMonitors>> current;
  {
    std::lock_guard lock(mutex_);
    current = routes_;
  }
  auto next = build(config, current);
  std::lock_guard lock(mutex_);
  routes_ = std::move(next);
}

void MonitorHub::drain() {
  std::unique_lock lock(mutex_);
  idle_.wait(lock, [this] { return queue_.empty() && !busy_; });
}

void MonitorHub::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && !worker_.joinable()) return;
    stopping_ = true;
    wake_.notify_all();
  }
  if (worker_.joinable()) worker_.join();
}

MonitorHub::RouteStatus MonitorHub::status(const std::string& route) const {
  std::lock_guard lock(mutex_);
  auto it = routes_.find(route);
  return it == routes_.end() ? RouteStatus{} : it->second->status;
}

void MonitorHub::write_metrics(MetricsWriter& writer) const {
  writer.counter("aegis_monitor_dropped_total", "observations dropped because the monitor queue was full", {}, double(dropped_.load()));
  writer.counter("aegis_monitor_malformed_total", "classifier exchanges the monitors could not read", {}, double(malformed_.load()));
  std::lock_guard lock(mutex_);
  writer.gauge("aegis_monitor_queue_length", "observations waiting for the monitor thread", {}, double(queue_.size()));
  for (const auto& [name, m] : routes_) {
    const std::vector<Header> labels = {{"route", name}};
    writer.counter("aegis_monitor_observations_total", "inputs the monitors saw", labels, double(m->status.observations));
    writer.counter("aegis_monitor_extraction_alerts_total", "clients flagged for extraction-like querying", labels,
                   double(m->status.extraction_alerts));
    writer.counter("aegis_monitor_drift_evaluations_total", "drift tests run", labels, double(m->status.drift_evaluations));
    writer.counter("aegis_monitor_drift_alerts_total", "changes into dataset drift", labels, double(m->status.drift_alerts));
    writer.gauge("aegis_monitor_drifted_share", "share of features drifted at the last evaluation", labels, m->status.drifted_share);
  }
}

}  // namespace aegis::gateway
