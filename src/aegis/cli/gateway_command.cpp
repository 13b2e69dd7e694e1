// `aegis gateway`: runs the inference gateway from a YAML config until SIGINT/SIGTERM; SIGHUP reloads.
#include "aegis/cli/gateway_command.h"

#include <iostream>
#include <nlohmann/json.hpp>
#include <memory>
#include <string>

#include "aegis/cli/common_options.h"
#include "aegis/core/error.h"
#include "aegis/gateway/config_review.h"
#include "aegis/gateway/auth_filters.h"
#include "aegis/gateway/config.h"
#include "aegis/gateway/monitor_hub.h"
#include "aegis/gateway/server.h"
#include "aegis/gateway/services.h"

namespace aegis::cli {
namespace {

struct GatewayFlags {
  std::string config;
  std::string review_config;
  CommonOptions common;
  bool check = false;
  std::string key_env = "AEGIS_API_KEY";
};

int run_gateway(const GatewayFlags& flags) {
  if (flags.config.empty())
    throw core::Error("aegis gateway needs --config FILE", "write a gateway.yaml (see examples/gateway/gateway.yaml) and pass it");
  auto config = gateway::load_gateway_config(flags.config);
  if (flags.check) {
    gateway::MonitorHub(config, nullptr).stop();  // the monitors' sections are checked where they are built
    std::size_t filters = 0;
    for (const auto& route : config.routes) filters += route.filters.size();
    std::cout << flags.config << ": valid — " << config.routes.size() << " route(s), " << config.upstreams.size()
              << " upstream(s), " << filters << " filter(s)\n";
    return 0;
  }
  auto services = std::make_shared<gateway::GatewayServiceSet>(config);
  gateway::GatewayServer server(std::move(config), services->services());
  server.start();
  std::cerr << "aegis gateway: listening on " << server.port() << " (SIGHUP reloads " << flags.config
            << ", SIGINT/SIGTERM stop)\n";
  server.handle_signals([path = flags.config, services] {
    auto next = gateway::load_gateway_config(path);
    services->reconfigure(next);
    return next;
  });
  server.wait();
  services->shutdown();
  return 0;
}

int run_hash_key(const GatewayFlags& flags) {
  std::string key;
  if (const char* from_env = std::getenv(flags.key_env.c_str()); from_env && *from_env) {
    key = from_env;
  } else {
    if (!std::getline(std::cin, key) || key.empty())
      throw core::Error("no API key to hash", "pipe the key on standard input, or set $" + flags.key_env);
  }
  while (!key.empty() && (key.back() == '\r' || key.back() == ' ')) key.pop_back();
  std::cout << gateway::hash_api_key(key) << "\n";
  return 0;
}

// `aegis gateway review CONFIG`: the controls each route lacks, as findings (what `aegis assess`
// runs on an endpoint's gateway). The config is loaded exactly as the gateway loads it.
int run_review(const GatewayFlags& flags) {
  auto config = gateway::load_gateway_config(flags.review_config);
  const auto findings = gateway::review_gateway_config(config);
  std::size_t filters = 0;
  for (const auto& route : config.routes) filters += route.filters.size();
  const nlohmann::json extra = {{"listen", config.listen.address + ":" + std::to_string(config.listen.port)},
                                {"routes", config.routes.size()}, {"filters", filters},
                                {"audit_log", config.audit.enabled}};
  return finish_results(flags.common, "gateway review", {flags.review_config}, findings, extra.dump());
}

}  // namespace

void register_gateway_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<GatewayFlags>();
  auto* command = app.add_subcommand(
      "gateway", "Inference gateway: a reverse proxy in front of model endpoints with auth, rate limits, validation, "
                 "output hardening, redaction, extraction and drift monitors, a hash-chained audit log and /metrics");
  command->add_option("--config", flags->config, "gateway YAML file (listen, upstreams, routes with filters and monitors)");
  command->add_flag("--check", flags->check, "only load and validate the config (and its key files), then exit");
  command->require_subcommand(0, 1);
  auto* hash = command->add_subcommand("hash-key",
                                       "print the hash of an API key (read from stdin or $AEGIS_API_KEY) for the api_key filter's keys:");
  hash->add_option("--env", flags->key_env, "environment variable holding the key (default AEGIS_API_KEY)");
  hash->callback([flags, &exit_code] { exit_code = run_hash_key(*flags); });
  auto* review = command->add_subcommand(
      "review", "review a gateway config for missing controls: authentication, rate limits, raw probabilities, "
                "input validation, LLM guards, audit log, TLS (findings; exit 1 at or above --fail-on)");
  review->add_option("config", flags->review_config, "gateway YAML file")->required();
  add_common_options(*review, flags->common);
  review->callback([flags, &exit_code] { exit_code = run_review(*flags); });
  command->callback([command, flags, &exit_code] {
    if (!command->get_subcommands().empty()) return;
    exit_code = run_gateway(*flags);
  });
}

}  // namespace aegis::cli
