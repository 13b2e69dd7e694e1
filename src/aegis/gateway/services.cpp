#include "aegis/gateway/services.h"

#include <yaml-cpp/yaml.h>

#include <iostream>
#include <mutex>

#include "aegis/core/error.h"
#include "aegis/gateway/alerts.h"
#include "aegis/gateway/monitor_hub.h"
#include "aegis/store/audit_log.h"

namespace aegis::gateway {

GatewayServiceSet::GatewayServiceSet(const GatewayConfig& config) {
  if (config.audit.enabled) {
    store::AuditLogOptions options;
    options.file = config.audit.store;
    options.synchronous_full = config.audit.synchronous_full;
    options.checkpoint_every = config.audit.checkpoint_every;
    options.checkpoint_interval = std::chrono::seconds(config.audit.checkpoint_seconds);
    options.signing_key = config.audit.signing_key_file;
    audit_ = std::make_unique<store::AuditLog>(options);
    record_bodies_ = config.audit.record_bodies;
  }
  AlertConfig alert_config;
  if (MonitorConfig::present(config.alerts)) alert_config = parse_alert_config(config.alerts, config.file);
  alerts_ = std::make_unique<AlertDispatcher>(alert_config, [](std::string_view line) {
    static std::mutex mutex;
    std::lock_guard lock(mutex);
    std::cerr << "aegis gateway: alert " << line << "\n";
  });
  monitors_ = std::make_unique<MonitorHub>(config, alerts_.get());
}

GatewayServiceSet::~GatewayServiceSet() { shutdown(); }

GatewayServices GatewayServiceSet::services() {
  GatewayServices services;
  if (audit_) {
    services.audit_records_bodies = record_bodies_;
    services.audit = [log = audit_.get()](DecisionRecord decision, std::function<void(bool)> durable) {
      store::AuditRecord record;
      record.time_ms = decision.time_ms;
      record.request_id = std::move(decision.request_id);
      record.client_ip = std::move(decision.client_ip);
      record.subject = std::move(decision.subject);
      record.route = std::move(decision.route);
      record.method = std::move(decision.method);
      record.path = std::move(decision.path);
      record.status = decision.status;
      record.verdicts.reserve(decision.verdicts.size());
      for (auto& v : decision.verdicts) record.verdicts.push_back({std::move(v.filter), std::move(v.outcome), std::move(v.detail)});
      record.request_sha256 = std::move(decision.request_sha256);
      record.response_sha256 = std::move(decision.response_sha256);
      if (!decision.request_body.empty() || !decision.response_body.empty()) {
        record.request_body = std::move(decision.request_body);
        record.response_body = std::move(decision.response_body);
      }
      record.latency_ms = decision.latency_ms;
      log->append(std::move(record), std::move(durable));
    };
    services.ready = [log = audit_.get()] { return log->healthy(); };
  }
  services.observe = [hub = monitors_.get()](const RouteConfig& route, Exchange& exchange) { hub->observe(route, exchange); };
  services.write_metrics = [this](MetricsWriter& writer) {
    if (audit_) {
      const auto c = audit_->counters();
      writer.counter("aegis_audit_records_total", "decisions committed to the audit log", {}, double(c.appended));
      writer.counter("aegis_audit_rejected_total", "decisions refused by a full audit queue (answered 503)", {}, double(c.rejected));
      writer.counter("aegis_audit_failed_total", "decisions lost to a failed audit transaction (answered 503)", {}, double(c.failed));
      writer.counter("aegis_audit_transactions_total", "audit log transactions (group commits)", {}, double(c.transactions));
      writer.counter("aegis_audit_checkpoints_total", "audit checkpoints written", {}, double(c.checkpoints));
      writer.gauge("aegis_audit_queue_length", "decisions waiting for the audit writer", {}, double(c.queued));
      writer.gauge("aegis_audit_last_seq", "sequence number of the last committed decision", {}, double(c.last_seq));
    }
    alerts_->write_metrics(writer);
    monitors_->write_metrics(writer);
  };
  return services;
}

void GatewayServiceSet::reconfigure(const GatewayConfig& config) { monitors_->reconfigure(config); }

void GatewayServiceSet::shutdown() {
  if (monitors_) monitors_->stop();
  if (alerts_) alerts_->stop();
  if (audit_) audit_->close();
}

}  // namespace aegis::gateway
