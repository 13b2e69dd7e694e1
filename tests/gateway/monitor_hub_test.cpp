// The gateway's monitor thread end to end: observations in, extraction and drift alerts out
// through the alert dispatcher, config errors with lines, state kept across an unchanged reload.
#include "aegis/gateway/monitor_hub.h"

#include <gtest/gtest.h>

#include <mutex>
#include <random>

#include "aegis/core/error.h"
#include "aegis/gateway/alerts.h"

namespace aegis::gateway {
namespace {

GatewayConfig config_with(const std::string& monitors) {
  return parse_gateway_config("listen: 127.0.0.1:0\naudit: false\nupstreams:\n  m: {url: http://127.0.0.1:9}\nroutes:\n"
                              "  - name: classify\n    path: /c\n    upstream: m\n    api: classifier\n    monitors:\n" + monitors,
                              "gateway.yaml", "");
}

struct CapturedAlerts {
  std::mutex mutex;
  std::vector<std::string> lines;
  AlertDispatcher dispatcher{AlertConfig{}, [this](std::string_view line) {
                               std::lock_guard lock(mutex);
                               lines.emplace_back(line);
                             }};
  std::vector<std::string> with(const std::string& needle) {
    dispatcher.flush();
    std::lock_guard lock(mutex);
    std::vector<std::string> out;
    for (const auto& l : lines)
      if (l.find(needle) != std::string::npos) out.push_back(l);
    return out;
  }
};

MonitorObservation one(const std::string& client, std::vector<float> input) {
  MonitorObservation o;
  o.route = "classify";
  o.client = client;
  std::vector<float> scores(10, 0.05f);
  scores[input.empty() ? 0 : static_cast<std::size_t>(input[0] * 9.99f) % 10] = 0.55f;
  o.inputs.push_back(std::move(input));
  o.probabilities.push_back(std::move(scores));
  return o;
}

TEST(MonitorHub, FlagsACrowdingClientButNotABenignOne) {
  CapturedAlerts alerts;
  auto config = config_with("      extraction: {detectors: [similarity], k: 5, threshold: 0.5, projection_dims: 0}\n");
  MonitorHub hub(config, &alerts.dispatcher);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(0, 1);
  std::normal_distribution<float> tiny(0, 0.001f);
  std::vector<float> seed(64);
  for (auto& v : seed) v = uniform(rng);
  for (int i = 0; i < 200; ++i) {
    std::vector<float> probe = seed, benign(64);
    for (auto& v : probe) v += tiny(rng);
    for (auto& v : benign) v = uniform(rng);
    hub.submit(one("thief", probe));
    hub.submit(one("customer", benign));
  }
  hub.drain();
  const auto status = hub.status("classify");
  EXPECT_EQ(status.observations, 400u);
  ASSERT_EQ(status.flagged_clients, std::vector<std::string>{"thief"});
  const auto lines = alerts.with("gateway.extraction-suspected");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("thief"), std::string::npos);
  EXPECT_NE(lines[0].find("similarity"), std::string::npos);
}

TEST(MonitorHub, RaisesDriftOnceWhenTheInputsShift) {
  CapturedAlerts alerts;
  auto config = config_with("      drift: {reference_size: 200, window_size: 200, min_current: 100, evaluate_every: 50}\n");
  MonitorHub hub(config, &alerts.dispatcher);
  std::mt19937 rng(11);
  std::uniform_real_distribution<float> low(0, 0.5f), high(0.5f, 1);
  auto row = [&](auto& dist) {
    std::vector<float> v(32);
    for (auto& x : v) x = dist(rng);
    return v;
  };
  for (int i = 0; i < 400; ++i) hub.submit(one("c" + std::to_string(i % 7), row(low)));
  hub.drain();
  EXPECT_GT(hub.status("classify").drift_evaluations, 0u);
  EXPECT_FALSE(hub.status("classify").drifting) << "same distribution reported as drift";
  for (int i = 0; i < 400; ++i) hub.submit(one("c" + std::to_string(i % 7), row(high)));
  hub.drain();
  const auto status = hub.status("classify");
  EXPECT_TRUE(status.drifting);
  EXPECT_EQ(status.drift_alerts, 1u) << "drift is alerted when it starts, not at every evaluation";
  const auto lines = alerts.with("gateway.drift");
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_NE(lines[0].find("input_mean"), std::string::npos);
}

TEST(MonitorHub, ConfigErrorsNameTheLineAndReloadKeepsState) {
  try {
    config_with("      extraction: {detectors: [prada, magic]}\n");
    GatewayConfig config = config_with("      extraction: {detectors: [prada, magic]}\n");
    MonitorHub hub(config, nullptr);
    FAIL() << "an unknown detector was accepted";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("gateway.yaml:11:"), std::string::npos) << e.what();
  }
  EXPECT_THROW(
      {
        auto config = config_with("      extraction: {detectors: [similarity]}\n");
        MonitorHub hub(config, nullptr);
      },
      core::Error);
  auto config = config_with("      extraction: {detectors: [similarity], k: 2, threshold: 0.5}\n");
  MonitorHub hub(config, nullptr);
  for (int i = 0; i < 5; ++i) hub.submit(one("a", std::vector<float>(8, 0.25f)));
  hub.drain();
  hub.reconfigure(config_with("      extraction: {detectors: [similarity], k: 2, threshold: 0.5}\n"));
  EXPECT_EQ(hub.status("classify").observations, 5u) << "an unchanged monitor lost its state on reload";
  hub.reconfigure(config_with("      extraction: {detectors: [similarity], k: 3, threshold: 0.5}\n"));
  EXPECT_EQ(hub.status("classify").observations, 0u);
}

}  // namespace
}  // namespace aegis::gateway
