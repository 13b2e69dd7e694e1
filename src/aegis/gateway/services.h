// What runs beside the gateway's request path, built from its config: the audit log in the store,
// the monitors (extraction, drift) on their own thread, and alert delivery.
#pragma once

#include <memory>

#include "aegis/gateway/config.h"
#include "aegis/gateway/server.h"

namespace aegis::store {
class AuditLog;
}

namespace aegis::gateway {

class AlertDispatcher;
class MonitorHub;

class GatewayServiceSet {
 public:
  // Opens the audit store and starts the alert and monitor threads. Throws core::Error (with the
  // config line where one applies) when a part cannot start.
  explicit GatewayServiceSet(const GatewayConfig& config);
  ~GatewayServiceSet();
  GatewayServiceSet(const GatewayServiceSet&) = delete;
  GatewayServiceSet& operator=(const GatewayServiceSet&) = delete;

  // The hooks for GatewayServer; they hold this object by raw pointer, so it must outlive the server.
  GatewayServices services();
  // After a SIGHUP reload: the monitors follow the new routes (state of unchanged routes is kept).
  void reconfigure(const GatewayConfig& config);
  // Flushes the audit log (final checkpoint), delivers queued alerts, stops the threads.
  void shutdown();

  store::AuditLog* audit_log() { return audit_.get(); }
  MonitorHub* monitors() { return monitors_.get(); }

 private:
  bool record_bodies_ = false;
  std::unique_ptr<store::AuditLog> audit_;
  std::unique_ptr<AlertDispatcher> alerts_;
  std::unique_ptr<MonitorHub> monitors_;
};

}  // namespace aegis::gateway
