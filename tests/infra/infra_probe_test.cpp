// Live probes (aegis audit-infra --target): the shipped fingerprints and probe rules against loopback
// servers that replay each service's documented answers (open, patched and hardened), against a real
// Jupyter server from Debian's jupyter-server package, and against hostile servers (garbage, an
// endless header, a slow drip, a huge body, deep JSON, redirects). And which targets are accepted.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/infra/infra.h"
#include "support/replay_http_server.h"
#include "test_support.h"

extern char** environ;

namespace aegis::infra {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using test::ReplayAnswer;
using test::ReplayHttpServer;
using test::ReplayMode;
using test::ReplayOptions;

const std::vector<std::string> kServices = {"jupyter", "mlflow", "ray", "torchserve", "triton",
                                            "vllm",    "ollama", "tgi", "gradio"};

const RuleSet& shipped() {
  static const RuleSet rules = builtin_rules();
  return rules;
}

const ServiceSpec& spec_of(const std::string& service) {
  for (const auto& spec : shipped().services)
    if (spec.service == service) return spec;
  throw std::runtime_error("no shipped service " + service);
}

ProbeOptions quick() {
  ProbeOptions options;
  options.rate = 1000;
  options.timeout = std::chrono::milliseconds(3000);
  return options;
}

ProbeOptions hostile() {
  ProbeOptions options;
  options.rate = 1000;
  options.timeout = std::chrono::milliseconds(300);
  return options;
}

Target loopback(int port) { return parse_target("127.0.0.1:" + std::to_string(port)); }

std::set<std::string> fired(const ProbeReport& report) {
  std::set<std::string> ids;
  for (const auto& finding : report.findings) ids.insert(finding.rule_id);
  return ids;
}

bool safe_method(const std::string& method) { return method == "GET" || method == "HEAD" || method == "OPTIONS"; }

// ---------------------------------------------------------------------------------------------
// Replay data: tests/infra/replay/<service>.json, variants of listeners (one per port), a variant
// may extend another and override routes by (method, path).
// ---------------------------------------------------------------------------------------------

struct Listener {
  std::string name;
  std::string version;     // what a probe should read on this port ("" when the port does not tell)
  bool recognised = true;  // whether the service can be recognised on this port at all
  ReplayHttpServer::Routes routes;
  ReplayAnswer not_found{404, {{"Content-Type", "text/plain"}}, "Not Found"};
};

json replay_doc(const std::string& service) {
  std::ifstream in(test::source_dir() / "tests" / "infra" / "replay" / (service + ".json"));
  if (!in) throw std::runtime_error("no replay file for " + service);
  return json::parse(in);
}

ReplayAnswer answer_from(const json& entry) {
  ReplayAnswer answer;
  answer.status = entry.at("status").get<int>();
  if (entry.contains("headers"))
    for (const auto& [name, value] : entry["headers"].items()) answer.headers.emplace_back(name, value.get<std::string>());
  answer.body = entry.value("body", std::string());
  return answer;
}

std::vector<Listener> listeners_of(const json& doc, const std::string& variant_name) {
  const json& variant = doc.at("variants").at(variant_name);
  std::vector<Listener> out;
  if (variant.contains("extends")) out = listeners_of(doc, variant["extends"].get<std::string>());
  for (const auto& entry : variant.at("listeners")) {
    const std::string name = entry.at("name").get<std::string>();
    auto it = std::find_if(out.begin(), out.end(), [&](const Listener& l) { return l.name == name; });
    if (it == out.end()) {
      out.push_back(Listener{});
      it = out.end() - 1;
      it->name = name;
    }
    if (entry.contains("version")) it->version = entry["version"].get<std::string>();
    if (entry.contains("recognised")) it->recognised = entry["recognised"].get<bool>();
    if (entry.contains("not_found")) it->not_found = answer_from(entry["not_found"]);
    for (const auto& route : entry.value("routes", json::array()))
      it->routes[{route.at("method").get<std::string>(), route.at("path").get<std::string>()}] = answer_from(route);
  }
  return out;
}

struct VariantRun {
  std::vector<Listener> listeners;
  std::vector<std::unique_ptr<ReplayHttpServer>> servers;
  ProbeReport report;
};

VariantRun run_variant(const std::string& service, const std::string& variant, const ProbeOptions& options = quick()) {
  VariantRun run;
  run.listeners = listeners_of(replay_doc(service), variant);
  std::vector<Target> targets;
  for (const auto& listener : run.listeners) {
    ReplayOptions server_options;
    server_options.not_found = listener.not_found;
    run.servers.push_back(std::make_unique<ReplayHttpServer>(listener.routes, server_options));
    targets.push_back(loopback(run.servers.back()->port()));
  }
  run.report = probe_targets(targets, shipped(), options);
  return run;
}

// Every port's observation: reachable, and the service and version the replay data says.
void expect_observations(const VariantRun& run, const std::string& service) {
  ASSERT_EQ(run.report.observations.size(), run.listeners.size());
  for (std::size_t i = 0; i < run.listeners.size(); ++i) {
    const auto& listener = run.listeners[i];
    const auto& seen = run.report.observations[i];
    SCOPED_TRACE("listener " + listener.name);
    EXPECT_EQ(seen.target, "127.0.0.1:" + std::to_string(run.servers[i]->port()));
    EXPECT_TRUE(seen.reachable);
    EXPECT_EQ(seen.service, listener.recognised ? service : std::string());
    if (listener.recognised) {
      EXPECT_EQ(seen.version, listener.version);
      EXPECT_EQ(seen.name, spec_of(service).name);
    }
    EXPECT_EQ(seen.requests, run.servers[i]->requests().size());
    for (const auto& request : run.servers[i]->requests())
      EXPECT_TRUE(safe_method(request.method)) << request.method << " " << request.target;
  }
}

// ---------------------------------------------------------------------------------------------
// The shipped rules against the replays
// ---------------------------------------------------------------------------------------------

TEST(InfraProbe, EveryShippedServiceHasFingerprintsProbesAndAReplay) {
  std::set<std::string> shipped_services;
  for (const auto& spec : shipped().services) {
    shipped_services.insert(spec.service);
    SCOPED_TRACE(spec.service);
    EXPECT_FALSE(spec.fingerprints.empty());
    EXPECT_FALSE(spec.probes.empty());
    EXPECT_FALSE(spec.default_ports.empty());
    for (const auto& probe : spec.probes) {
      EXPECT_FALSE(probe.info.remediation.empty()) << probe.info.id;
      EXPECT_FALSE(probe.info.atlas.empty()) << probe.info.id;
      EXPECT_TRUE(safe_method(probe.request.method)) << probe.info.id;
    }
    EXPECT_NO_THROW(replay_doc(spec.service));
  }
  EXPECT_EQ(shipped_services, std::set<std::string>(kServices.begin(), kServices.end()));
}

TEST(InfraProbe, OpenServicesAreRecognisedAndEveryProbeRuleFires) {
  for (const auto& service : kServices) {
    SCOPED_TRACE(service);
    const auto run = run_variant(service, "open");
    expect_observations(run, service);
    std::set<std::string> expected = {"infra." + service + ".detected"};
    for (const auto& probe : spec_of(service).probes) expected.insert(probe.info.id);
    EXPECT_EQ(fired(run.report), expected);
    for (const auto& finding : run.report.findings) {
      EXPECT_FALSE(finding.evidence.empty()) << finding.rule_id;
      EXPECT_FALSE(finding.remediation.empty()) << finding.rule_id;
      EXPECT_FALSE(finding.atlas.empty()) << finding.rule_id;
      EXPECT_EQ(finding.location.file.rfind("127.0.0.1:", 0), 0u) << finding.rule_id;
    }
  }
}

TEST(InfraProbe, PatchedVersionsFireNoVersionRule) {
  for (const auto& service : kServices) {
    const json doc = replay_doc(service);
    if (!doc.at("variants").contains("patched")) continue;  // no version rule for this service
    SCOPED_TRACE(service);
    const auto run = run_variant(service, "patched");
    expect_observations(run, service);
    std::set<std::string> expected = {"infra." + service + ".detected"};
    for (const auto& probe : spec_of(service).probes)
      if (probe.version_below.empty()) expected.insert(probe.info.id);
    EXPECT_EQ(fired(run.report), expected);
  }
}

TEST(InfraProbe, EveryVersionRuleIsExercisedByAnOldAndANewReplay) {
  for (const auto& service : kServices) {
    const auto& spec = spec_of(service);
    const bool has_version_rule =
        std::any_of(spec.probes.begin(), spec.probes.end(), [](const ProbeRule& p) { return !p.version_below.empty(); });
    EXPECT_EQ(replay_doc(service).at("variants").contains("patched"), has_version_rule) << service;
  }
}

TEST(InfraProbe, HardenedServicesFireNoUnauthenticatedRule) {
  for (const auto& service : kServices) {
    SCOPED_TRACE(service);
    const auto run = run_variant(service, "hardened");
    expect_observations(run, service);
    for (const auto& id : fired(run.report)) {
      EXPECT_EQ(id.find(".unauthenticated"), std::string::npos) << id;
      EXPECT_EQ(id.rfind("infra." + service + ".", 0), 0u) << id;
    }
    for (const auto& finding : run.report.findings)
      for (const auto& probe : spec_of(service).probes)
        if (probe.info.id == finding.rule_id) {
          EXPECT_TRUE(probe.version_below.empty()) << finding.rule_id;
        }
  }
}

TEST(InfraProbe, FindingsSayWhatWasAskedAndWhatCameBack) {
  const auto run = run_variant("ollama", "open");
  const core::Finding* open_api = nullptr;
  const core::Finding* cve = nullptr;
  for (const auto& finding : run.report.findings) {
    if (finding.rule_id == "infra.ollama.unauthenticated-api") open_api = &finding;
    if (finding.rule_id == "infra.ollama.cve-2024-37032") cve = &finding;
  }
  ASSERT_NE(open_api, nullptr);
  EXPECT_NE(open_api->evidence.find("GET /api/tags -> HTTP 200"), std::string::npos) << open_api->evidence;
  EXPECT_NE(open_api->evidence.find("llama3:latest"), std::string::npos) << open_api->evidence;
  EXPECT_EQ(open_api->location.column, "/api/tags");
  EXPECT_EQ(open_api->severity, core::Severity::High);
  ASSERT_NE(cve, nullptr);
  EXPECT_NE(cve->evidence.find("0.1.32"), std::string::npos) << cve->evidence;
  EXPECT_NE(cve->evidence.find("0.1.34"), std::string::npos) << cve->evidence;
  EXPECT_NE(cve->properties_json.find("CVE-2024-37032"), std::string::npos);
}

TEST(InfraProbe, OnlyGetHeadAndOptionsAreSentAndRequestsArePaced) {
  ProbeOptions options = quick();
  options.rate = 20;
  // When each request was released (progress is called right before it goes out).
  std::vector<std::chrono::steady_clock::time_point> released;
  options.progress = [&](const std::string&) { released.push_back(std::chrono::steady_clock::now()); };
  const auto run = run_variant("torchserve", "open", options);

  std::size_t logged = 0;
  for (std::size_t i = 0; i < run.servers.size(); ++i) {
    for (const auto& request : run.servers[i]->requests()) {
      ++logged;
      EXPECT_TRUE(safe_method(request.method)) << request.method << " " << request.target;
      EXPECT_EQ(request.headers.at("connection"), "close");
      EXPECT_EQ(request.headers.at("host"), "127.0.0.1:" + std::to_string(run.servers[i]->port()));
      EXPECT_EQ(request.headers.at("user-agent").rfind("aegis-audit-infra/", 0), 0u);
    }
  }
  EXPECT_EQ(run.report.requests, logged);
  ASSERT_EQ(released.size(), logged);
  ASSERT_GE(logged, 10u) << "too few requests for the pacing check to mean anything";
  // The count respects the rate: by the time the k-th request went out, at most
  // 1 + rate * (time since the first) had gone. A slow machine only spreads requests further apart;
  // an unpaced run sends them all within milliseconds and fails.
  for (std::size_t k = 1; k < released.size(); ++k) {
    const double since_first = std::chrono::duration<double>(released[k] - released[0]).count();
    EXPECT_LE(static_cast<double>(k + 1), 1 + options.rate * since_first + 0.5) << "request " << k + 1;
  }
}

TEST(InfraProbe, EachDistinctRequestIsSentOncePerPort) {
  const auto run = run_variant("mlflow", "open");
  std::set<std::string> seen;
  for (const auto& request : run.servers[0]->requests())
    EXPECT_TRUE(seen.insert(request.method + " " + request.target).second) << "asked twice: " << request.target;
}

// A service recognised by `fp`, from hand-built rules: what version does the probe read?
std::string version_read(const Fingerprint& fp, const ReplayAnswer& answer) {
  RuleSet rules;
  ServiceSpec spec;
  spec.service = "handmade";
  spec.name = "Handmade";
  spec.fingerprints.push_back(fp);
  rules.services.push_back(spec);
  ReplayHttpServer server({{{"GET", "/"}, answer}});
  const auto report = probe_targets({loopback(server.port())}, rules, quick());
  if (report.observations.size() != 1 || report.observations[0].service != "handmade") return "(not recognised)";
  return report.observations[0].version;
}

TEST(InfraProbe, VersionsComeFromAPointerAHeaderOrARegexGroupAndMustLookLikeVersions) {
  Fingerprint by_header;
  by_header.request.path = "/";
  by_header.version_header = "Server";
  by_header.version_regex = R"(ModelServer/([0-9][0-9.]*))";
  EXPECT_EQ(version_read(by_header, {200, {{"server", "ModelServer/3.2.1 (Linux)"}}, "ok"}), "3.2.1");

  Fingerprint whole_header;
  whole_header.request.path = "/";
  whole_header.version_header = "X-Model-Server-Version";
  EXPECT_EQ(version_read(whole_header, {200, {{"X-Model-Server-Version", " 0.9.0rc1 "}}, "ok"}), "0.9.0rc1");

  Fingerprint by_body;
  by_body.request.path = "/";
  by_body.version_regex = R"(build ([0-9]+\.[0-9]+\.[0-9]+))";
  EXPECT_EQ(version_read(by_body, {200, {}, "<footer>build 1.4.2, 2024</footer>"}), "1.4.2");

  Fingerprint by_pointer;
  by_pointer.request.path = "/";
  by_pointer.version_pointer = "/server/version";
  EXPECT_EQ(version_read(by_pointer, {200, {}, R"({"server": {"version": "2.0.0+cpu"}})"}), "2.0.0+cpu");
  EXPECT_EQ(version_read(by_pointer, {200, {}, R"({"server": {"version": 7}})"}), "7");
  // What a hostile server puts where a version goes is dropped, not carried into a report title.
  EXPECT_EQ(version_read(by_pointer, {200, {}, R"({"server": {"version": "1.0\u001b[31m red"}})"}), "");
  EXPECT_EQ(version_read(by_pointer, {200, {}, R"({"server": {"version": ")" + std::string(500, '9') + R"("}})"}), "");
  EXPECT_EQ(version_read(by_pointer, {200, {}, R"({"server": {"version": ["1.0"]}})"}), "");
  EXPECT_EQ(version_read(by_pointer, {200, {}, "not json"}), "");
}

// ---------------------------------------------------------------------------------------------
// Reachability, the loopback rule and rule checks
// ---------------------------------------------------------------------------------------------

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw std::runtime_error("cannot find a free port");
  ::close(fd);
  return ntohs(addr.sin_port);
}

TEST(InfraProbe, AClosedPortIsAnUnreachableObservationNotAFinding) {
  const int port = free_port();
  const auto report = probe_targets({loopback(port)}, shipped(), quick());
  ASSERT_EQ(report.observations.size(), 1u);
  EXPECT_FALSE(report.observations[0].reachable);
  EXPECT_NE(report.observations[0].error.find("refused"), std::string::npos) << report.observations[0].error;
  EXPECT_EQ(report.observations[0].service, "");
  EXPECT_EQ(report.observations[0].requests, 1u);
  EXPECT_TRUE(report.findings.empty());
}

TEST(InfraProbe, AHostWithoutPortTriesEveryKnownServicePortOnce) {
  std::vector<int> expected;
  for (const auto& spec : shipped().services)
    for (int port : spec.default_ports)
      if (std::find(expected.begin(), expected.end(), port) == expected.end()) expected.push_back(port);
  const auto report = probe_targets({parse_target("127.0.0.1")}, shipped(), hostile());
  ASSERT_EQ(report.observations.size(), expected.size());
  for (std::size_t i = 0; i < expected.size(); ++i)
    EXPECT_EQ(report.observations[i].target, "127.0.0.1:" + std::to_string(expected[i]));
}

TEST(InfraProbe, RefusesARemoteTargetBeforeSendingAnything) {
  ReplayHttpServer local;
  try {
    (void)probe_targets({loopback(local.port()), parse_target("192.0.2.10:8080")}, shipped(), quick());
    FAIL() << "a remote target was accepted without allow_remote";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("192.0.2.10"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("--allow-remote"), std::string::npos) << e.hint();
  }
  EXPECT_TRUE(local.requests().empty()) << "a refused run sent requests";
}

TEST(InfraProbe, RefusesUnsafeMethodsInHandBuiltRulesBeforeSendingAnything) {
  ReplayHttpServer local;
  for (const std::string method : {"POST", "DELETE", "PUT", "PATCH"}) {
    RuleSet rules;
    ServiceSpec spec;
    spec.service = "handmade";
    spec.name = "Handmade";
    Fingerprint fp;
    fp.request.path = "/";
    spec.fingerprints.push_back(fp);
    ProbeRule rule;
    rule.info.id = "infra.handmade.write";
    rule.info.atlas = {"AML.T0049"};
    rule.request.method = method;
    rule.request.path = "/api/jobs/";
    spec.probes.push_back(rule);
    rules.services.push_back(spec);
    EXPECT_THROW((void)probe_targets({loopback(local.port())}, rules, quick()), core::Error) << method;
  }
  EXPECT_TRUE(local.requests().empty());
}

TEST(InfraProbe, TlsTargetsAreProbedWithoutTrustingTheCertificateAndSendTheServerName) {
  auto listeners = listeners_of(replay_doc("jupyter"), "open");
  ReplayOptions options;
  options.tls = true;
  options.not_found = listeners[0].not_found;
  ReplayHttpServer server(listeners[0].routes, options);
  const auto report = probe_targets({parse_target("https://localhost:" + std::to_string(server.port()))}, shipped(), quick());
  ASSERT_EQ(report.observations.size(), 1u);
  EXPECT_EQ(report.observations[0].target, "https://localhost:" + std::to_string(server.port()));
  EXPECT_EQ(report.observations[0].service, "jupyter");
  EXPECT_TRUE(fired(report).count("infra.jupyter.unauthenticated-kernels"));
  const auto names = server.sni_names();
  ASSERT_FALSE(names.empty());
  EXPECT_EQ(names.front(), "localhost");

  // TLS asked of a plain-HTTP port: a failed handshake, reported, nothing recognised.
  ReplayHttpServer plain(listeners[0].routes);
  const auto mismatch = probe_targets({parse_target("https://127.0.0.1:" + std::to_string(plain.port()))}, shipped(), hostile());
  ASSERT_EQ(mismatch.observations.size(), 1u);
  EXPECT_EQ(mismatch.observations[0].service, "");
  EXPECT_FALSE(mismatch.observations[0].error.empty());
  EXPECT_TRUE(mismatch.findings.empty());
}

// ---------------------------------------------------------------------------------------------
// Hostile servers: never a crash, never a hang (the timeout bounds every exchange), never a
// followed redirect; at most an observation saying what went wrong.
// ---------------------------------------------------------------------------------------------

struct HostileRun {
  std::unique_ptr<ReplayHttpServer> server;
  ProbeReport report;
};

HostileRun probe_hostile(ReplayMode mode) {
  ReplayOptions options;
  options.mode = mode;
  HostileRun run;
  run.server = std::make_unique<ReplayHttpServer>(ReplayHttpServer::Routes{}, options);
  run.report = probe_targets({loopback(run.server->port())}, shipped(), hostile());
  return run;
}

TEST(InfraProbe, HostileGarbageIsNoServiceAndIsGivenUpQuickly) {
  const auto run = probe_hostile(ReplayMode::Garbage);
  const auto& report = run.report;
  ASSERT_EQ(report.observations.size(), 1u);
  EXPECT_TRUE(report.observations[0].reachable);
  EXPECT_EQ(report.observations[0].service, "");
  EXPECT_FALSE(report.observations[0].error.empty());
  EXPECT_LE(report.requests, 2u);
  EXPECT_TRUE(report.findings.empty());
  for (const auto& request : run.server->requests()) EXPECT_TRUE(safe_method(request.method));
}

TEST(InfraProbe, HostileEndlessHeaderStopsAtTheHeaderLimit) {
  const auto run = probe_hostile(ReplayMode::EndlessHeader);
  const auto& report = run.report;
  ASSERT_EQ(report.observations.size(), 1u);
  EXPECT_NE(report.observations[0].error.find("64 KiB"), std::string::npos) << report.observations[0].error;
  EXPECT_LE(report.requests, 2u);
  EXPECT_TRUE(report.findings.empty());
}

TEST(InfraProbe, HostileSlowDripEndsAtTheTimeout) {
  const auto run = probe_hostile(ReplayMode::SlowDrip);
  const auto& report = run.report;
  ASSERT_EQ(report.observations.size(), 1u);
  EXPECT_NE(report.observations[0].error.find("300 ms"), std::string::npos) << report.observations[0].error;
  EXPECT_LE(report.requests, 2u);
  EXPECT_TRUE(report.findings.empty());
}

TEST(InfraProbe, HostileHugeBodyIsCutAndNoted) {
  const auto run = probe_hostile(ReplayMode::HugeBody);
  const auto& report = run.report;
  ASSERT_EQ(report.observations.size(), 1u);
  EXPECT_TRUE(report.observations[0].reachable);
  EXPECT_EQ(report.observations[0].service, "");
  EXPECT_TRUE(report.findings.empty());

  // A rule that does match the cut answer still holds, and says the answer was cut.
  RuleSet rules;
  ServiceSpec spec;
  spec.service = "bulky";
  spec.name = "Bulky";
  Fingerprint fp;
  fp.request.path = "/";
  fp.expect.body = "^a+";
  spec.fingerprints.push_back(fp);
  rules.services.push_back(spec);
  ReplayOptions options;
  options.mode = ReplayMode::HugeBody;
  ReplayHttpServer server({}, options);
  ProbeOptions probe_options = hostile();
  probe_options.max_body_bytes = 256 * 1024;
  const auto cut = probe_targets({loopback(server.port())}, rules, probe_options);
  ASSERT_EQ(cut.findings.size(), 1u);
  EXPECT_EQ(cut.findings[0].rule_id, "infra.bulky.detected");
  EXPECT_NE(cut.findings[0].evidence.find("cut at 262144 bytes"), std::string::npos) << cut.findings[0].evidence;
}

TEST(InfraProbe, HostileDeepJsonIsReadWithoutCrashing) {
  std::string deep(200000, '[');
  deep += std::string(200000, ']');
  ReplayOptions options;
  options.not_found = ReplayAnswer{200, {{"Content-Type", "application/json"}}, deep};
  ReplayHttpServer server({}, options);
  const auto report = probe_targets({loopback(server.port())}, shipped(), hostile());
  ASSERT_EQ(report.observations.size(), 1u);
  EXPECT_EQ(report.observations[0].service, "");
  EXPECT_TRUE(report.findings.empty());

  // Pointers into the deep document: past the depth limit they find nothing, and a malformed
  // pointer is no match rather than an exception.
  for (const std::string pointer : {"/0/0/0", "/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0/0", "/x/~2", "/-"}) {
    RuleSet rules;
    ServiceSpec spec;
    spec.service = "deep";
    spec.name = "Deep";
    Fingerprint fp;
    fp.request.path = "/";
    fp.expect.json[pointer] = "array";
    spec.fingerprints.push_back(fp);
    rules.services.push_back(spec);
    const auto probed = probe_targets({loopback(server.port())}, rules, hostile());
    EXPECT_EQ(probed.findings.size(), pointer == "/0/0/0" ? 1u : 0u) << pointer;
  }
}

TEST(InfraProbe, RedirectsAreNeverFollowed) {
  // The "other host" would be recognised as Jupyter if anything followed the redirect to it.
  auto listeners = listeners_of(replay_doc("jupyter"), "open");
  ReplayHttpServer other(listeners[0].routes);
  ReplayOptions options;
  options.not_found = ReplayAnswer{302, {{"Location", "http://127.0.0.1:" + std::to_string(other.port()) + "/api"}}, ""};
  ReplayHttpServer redirecting({}, options);
  const auto report = probe_targets({loopback(redirecting.port())}, shipped(), quick());
  EXPECT_TRUE(other.requests().empty()) << "a redirect was followed";
  ASSERT_EQ(report.observations.size(), 1u);
  EXPECT_TRUE(report.observations[0].reachable);
  EXPECT_EQ(report.observations[0].service, "");
  EXPECT_TRUE(report.findings.empty());
}

// ---------------------------------------------------------------------------------------------
// A real Jupyter server (Debian's jupyter-server), on loopback, with and without a token
// ---------------------------------------------------------------------------------------------

constexpr const char* kJupyterServer = "/usr/bin/jupyter-server";

class JupyterProcess {
 public:
  JupyterProcess(const fs::path& dir, const std::string& token) : dir_(dir), port_(free_port()) {
    for (const char* sub : {"runtime", "config", "data", "root"}) fs::create_directories(dir / sub);
    std::vector<std::string> args = {kJupyterServer,
                                     "--allow-root",  // the test machines run as root; harmless otherwise
                                     "--ServerApp.token=" + token,
                                     "--ServerApp.password=",
                                     "--ServerApp.ip=127.0.0.1",
                                     "--ServerApp.port=" + std::to_string(port_),
                                     "--ServerApp.port_retries=0",
                                     "--ServerApp.open_browser=False",
                                     "--ServerApp.root_dir=" + (dir / "root").string()};
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      const std::string entry(*e);
      const bool ours = entry.rfind("HOME=", 0) == 0 || entry.rfind("JUPYTER_", 0) == 0;
      if (!ours) env.push_back(entry);
    }
    env.push_back("HOME=" + dir.string());
    env.push_back("JUPYTER_RUNTIME_DIR=" + (dir / "runtime").string());
    env.push_back("JUPYTER_CONFIG_DIR=" + (dir / "config").string());
    env.push_back("JUPYTER_DATA_DIR=" + (dir / "data").string());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    std::vector<char*> envp;
    for (auto& e : env) envp.push_back(e.data());
    envp.push_back(nullptr);
    const std::string log = (dir / "jupyter.log").string();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
      ::execve(argv[0], argv.data(), envp.data());
      ::_exit(127);
    }
    if (pid_ > 0) ::setpgid(pid_, pid_);
  }
  ~JupyterProcess() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGTERM);
    for (int i = 0; i < 50; ++i) {
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(-pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
  JupyterProcess(const JupyterProcess&) = delete;
  JupyterProcess& operator=(const JupyterProcess&) = delete;

  int port() const { return port_; }

  // Waits (bounded) until the server accepts connections; false if it exited or never listened.
  bool wait_ready(std::chrono::seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (pid_ <= 0 || ::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return false;
      }
      const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(static_cast<std::uint16_t>(port_));
      const bool up = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
      ::close(fd);
      if (up) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  std::string log() const {
    std::ifstream in(dir_ / "jupyter.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

 private:
  fs::path dir_;
  int port_;
  pid_t pid_ = -1;
};

TEST(InfraProbe, RealJupyterServerWithoutATokenIsOpenAndWithATokenIsNot) {
  ASSERT_TRUE(fs::exists(kJupyterServer))
      << kJupyterServer << " is missing: install Debian's jupyter-server package (apt-get install jupyter-server)";
  test::TempDir open_dir("aegis_jupyter_open");
  test::TempDir token_dir("aegis_jupyter_token");
  JupyterProcess open(open_dir.path, "");
  JupyterProcess locked(token_dir.path, "aegis-test-token-d41d8cd98f00b204");
  ASSERT_TRUE(open.wait_ready(std::chrono::seconds(60))) << "jupyter-server did not start:\n" << open.log();
  ASSERT_TRUE(locked.wait_ready(std::chrono::seconds(60))) << "jupyter-server did not start:\n" << locked.log();

  const auto report = probe_targets({loopback(open.port())}, shipped(), quick());
  ASSERT_EQ(report.observations.size(), 1u);
  EXPECT_EQ(report.observations[0].service, "jupyter");
  EXPECT_FALSE(report.observations[0].version.empty());
  const auto ids = fired(report);
  EXPECT_TRUE(ids.count("infra.jupyter.unauthenticated-kernels")) << "fired: " << ::testing::PrintToString(ids);
  EXPECT_TRUE(ids.count("infra.jupyter.unauthenticated-contents")) << "fired: " << ::testing::PrintToString(ids);

  const auto guarded = probe_targets({loopback(locked.port())}, shipped(), quick());
  ASSERT_EQ(guarded.observations.size(), 1u);
  EXPECT_EQ(guarded.observations[0].service, "jupyter");
  EXPECT_EQ(guarded.observations[0].version, report.observations[0].version);
  for (const auto& id : fired(guarded)) EXPECT_EQ(id.find(".unauthenticated"), std::string::npos) << id;
  EXPECT_TRUE(fired(guarded).count("infra.jupyter.detected"));
}

// ---------------------------------------------------------------------------------------------
// Targets
// ---------------------------------------------------------------------------------------------

TEST(InfraTarget, AcceptsNamedHostsAndAddresses) {
  struct Case {
    std::string text;
    std::string host;
    int port;
    bool tls;
  };
  const Case cases[] = {
      {"127.0.0.1:8888", "127.0.0.1", 8888, false},
      {"localhost", "localhost", 0, false},
      {"[::1]:8000", "::1", 8000, false},
      {"[::1]", "::1", 0, false},
      {"http://127.0.0.1:8265", "127.0.0.1", 8265, false},
      {"https://gpu-box.internal:8443", "gpu-box.internal", 8443, true},
      {"HTTPS://gpu-box:443/", "gpu-box", 443, true},
      {"http://localhost:5000/", "localhost", 5000, false},
      {"  10.1.2.3:80  ", "10.1.2.3", 80, false},
      {"ml-node_7:11434", "ml-node_7", 11434, false},
      {"https://[::1]:65535", "::1", 65535, true},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    const Target t = parse_target(c.text);
    EXPECT_EQ(t.host, c.host);
    EXPECT_EQ(t.port, c.port);
    EXPECT_EQ(t.tls, c.tls);
  }
  EXPECT_EQ(parse_target("  10.1.2.3:80  ").text, "10.1.2.3:80");
}

TEST(InfraTarget, RefusesRangesBlocksWildcardsPathsAndCredentials) {
  struct Case {
    std::string text;
    std::string why;  // a word the reason must carry
  };
  const Case cases[] = {
      {"", "no host"},
      {"   ", "no host"},
      {"10.0.0.1-20", "range"},
      {"10.0.0.1-10.0.0.20:80", "range"},
      {"10.0.0.0/24", "CIDR"},
      {"http://10.0.0.0/8", "CIDR"},
      {"*", "wildcard"},
      {"*.corp.example:8888", "wildcard"},
      {"10.0.0.*", "wildcard"},
      {"http://gpu-box:8888/api/kernels", "path"},
      {"http://admin:secret@gpu-box:8888", "credentials"},
      {"gpu-box:0", "port"},
      {"gpu-box:65536", "port"},
      {"gpu-box:http", "port"},
      {"gpu-box:", "port"},
      {"gpu-box:-1", "port"},
      {"::1:8000", "brackets"},
      {"[::1:8000", "unclosed"},
      {"[gpu-box]:80", "IPv6"},
      {"ftp://gpu-box:21", "scheme"},
      {"0.0.0.0:8888", "every address"},
      {"[::]:8888", "every address"},
      {"gpu-a,gpu-b", "one host"},
      {"gpu-box:8888?token=x", "query"},
      {"10.1", "IPv4"},
      {"2130706433", "IPv4"},
      {"-gpu-box", "not a host"},
      {"gpu box:8888", "spaces"},
      {"gpu..box", "not a host"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE("'" + c.text + "'");
    try {
      (void)parse_target(c.text);
      ADD_FAILURE() << "accepted";
    } catch (const core::Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.why), std::string::npos) << e.what();
      EXPECT_NE(e.hint().find("127.0.0.1:8888"), std::string::npos) << "the hint shows what is accepted: " << e.hint();
    }
  }
}

}  // namespace
}  // namespace aegis::infra
