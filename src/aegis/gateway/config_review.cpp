#include "aegis/gateway/config_review.h"

#include <algorithm>

#include "aegis/gateway/filter.h"

namespace aegis::gateway {

namespace {

bool has_filter(const RouteConfig& route, std::initializer_list<std::string_view> types) {
  return std::any_of(route.filters.begin(), route.filters.end(), [&](const std::shared_ptr<Filter>& filter) {
    return std::find(types.begin(), types.end(), filter->name()) != types.end();
  });
}

bool loopback(const std::string& address) {
  return address == "127.0.0.1" || address == "::1" || address == "localhost" || address.starts_with("127.");
}

std::string_view api_name(ApiStyle api) {
  switch (api) {
    case ApiStyle::Classifier: return "classifier";
    case ApiStyle::OpenAiChat: return "openai-chat";
    case ApiStyle::Passthrough: return "passthrough";
  }
  return "passthrough";
}

struct Reporter {
  const GatewayConfig& config;
  std::vector<core::Finding> findings;

  void add(std::string rule, core::Severity severity, std::string title, std::string column, std::string evidence,
           std::vector<std::string> atlas, std::vector<std::string> rmf, std::string remediation) {
    core::Finding f;
    f.rule_id = "gateway." + rule;
    f.severity = severity;
    f.title = std::move(title);
    f.location.file = config.file;
    f.location.column = std::move(column);
    f.evidence = std::move(evidence);
    f.atlas = std::move(atlas);
    f.nist_ai_rmf = std::move(rmf);
    f.remediation = std::move(remediation);
    findings.push_back(std::move(f));
  }
};

}  // namespace

std::vector<core::Finding> review_gateway_config(const GatewayConfig& config) {
  Reporter r{config, {}};
  using core::Severity;
  const bool public_listener = !loopback(config.listen.address);
  const std::string listen = config.listen.address + ":" + std::to_string(config.listen.port);
  if (public_listener && !config.listen.tls.enabled())
    r.add("listen-without-tls", Severity::High, "The gateway listens beyond loopback without TLS", "listen",
          "listen " + listen + " with no tls: keys, prompts and answers cross the network in clear text",
          {"AML.T0040", "AML.T0012"}, {"MEASURE 2.7"},
          "Add `listen: {tls: {certificate: ..., key: ...}}`, or listen on 127.0.0.1 behind a TLS-terminating proxy.");
  if (!config.audit.enabled)
    r.add("no-audit-log", Severity::Medium, "The gateway keeps no audit log of its decisions", "audit",
          "audit: {enabled: false}: who queried the model, and what was blocked, cannot be reconstructed after an incident",
          {"AML.T0024.002", "AML.T0012"}, {"MEASURE 2.8", "MANAGE 4.1"},
          "Enable the audit log (`audit: {enabled: true}`), keep it on durable storage and check it with `aegis audit verify`.");
  if (config.access_log == "off")
    r.add("access-log-off", Severity::Low, "The gateway's access log is off", "access_log",
          "access_log: off", {"AML.T0040"}, {"MANAGE 4.1"},
          "Write the access log to stdout or a file so that query patterns can be monitored.");
  for (const auto& [name, upstream] : config.upstreams) {
    if (upstream.tls && !upstream.verify_tls)
      r.add("upstream-tls-unverified", Severity::Medium, "An upstream's TLS certificate is not verified", "upstreams." + name,
            "upstream '" + name + "' (" + upstream.host + ":" + upstream.port + ") has verify_tls: false",
            {"AML.T0040"}, {"MEASURE 2.7"}, "Verify the upstream's certificate (give `ca_file` for a private CA).");
  }
  for (const auto& route : config.routes) {
    const std::string where = "routes." + route.info.name;
    const std::string what = "route '" + route.info.name + "' (" + route.info.path + ", api " + std::string(api_name(route.info.api)) + ")";
    if (!has_filter(route, {"api_key", "jwt"}))
      r.add("route-without-auth", public_listener ? Severity::Critical : Severity::High,
            "A route answers without authentication", where,
            what + " has no api_key or jwt filter: anyone who reaches " + listen + " can query the model",
            {"AML.T0040", "AML.T0012", "AML.T0024.002"}, {"MEASURE 2.7"},
            "Add an `api_key` or `jwt` filter first in the route's filters, and `rbac` to scope what each caller may do.");
    if (!has_filter(route, {"rate_limit"}))
      r.add("route-without-rate-limit", Severity::High, "A route has no rate limit", where,
            what + " has no rate_limit filter: extraction and membership attacks need many queries, and floods cost compute",
            {"AML.T0029", "AML.T0034", "AML.T0024.002"}, {"MEASURE 2.7", "MANAGE 2.4"},
            "Add `rate_limit: {per: key, rate: 20/s, burst: 40}` (and one per IP); share the counters through Redis across replicas.");
    if (!has_filter(route, {"body_limit", "json_schema"}))
      r.add("route-without-input-validation", Severity::Low, "A route does not validate its inputs", where,
            what + " has neither body_limit nor json_schema: malformed and oversized inputs reach the model",
            {"AML.T0043", "AML.T0029"}, {"MEASURE 2.7"},
            "Add `body_limit` and a `json_schema` describing the model's input (shape, ranges).");
    if (route.info.api == ApiStyle::Classifier) {
      if (!has_filter(route, {"output_hardening"}))
        r.add("classifier-raw-probabilities", Severity::Medium, "A classifier route returns raw probabilities", where,
              what + " has no output_hardening filter: full-precision probability vectors make membership inference, inversion and extraction far cheaper",
              {"AML.T0024.000", "AML.T0024.001", "AML.T0024.002"}, {"MEASURE 2.10", "MEASURE 2.7"},
              "Add `output_hardening: {top_k: 1, decimals: 2}` (or return labels only).");
      if (!MonitorConfig::present(route.monitors.extraction))
        r.add("classifier-without-extraction-monitor", Severity::Low, "No extraction monitor watches a classifier route", where,
              what + " has no monitors.extraction: a client stealing the model with many queries goes unnoticed",
              {"AML.T0024.002"}, {"MANAGE 4.1"},
              "Add `monitors: {extraction: {detectors: [prada], delta: 0.9}}` and alert on it.");
    }
    if (route.info.api == ApiStyle::OpenAiChat && !has_filter(route, {"llm_guard"}))
      r.add("llm-route-without-guard", Severity::High, "An LLM route has no prompt-injection or output guard", where,
            what + " has no llm_guard filter: injected instructions reach the model and leaked system prompts, secrets and personal data reach the user",
            {"AML.T0051.000", "AML.T0056", "AML.T0057"}, {"MEASURE 2.7", "MEASURE 2.10"},
            "Add `llm_guard: {input: {action: block}, canary: true, output: {action: redact, pii: true, secrets: true}}`.");
  }
  return std::move(r.findings);
}

}  // namespace aegis::gateway
