// Campaigns against loopback chat servers with scripted weaknesses: the harness must find exactly
// the weaknesses the server has (and none it lacks), resume without repeating attempts, survive
// injected 429/500 answers, keep to its concurrency and rate limits, read streamed answers, use a
// judge, and fail clearly when the target is unreachable or refuses its credentials.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "aegis/core/error.h"
#include "aegis/redteam/redteam.h"
#include "support/scripted_chat_server.h"
#include "test_support.h"

namespace aegis::redteam {
namespace {

using nlohmann::json;
using test::ScriptedChatServer;
using test::ScriptedServerOptions;

CampaignOptions options_for(const ScriptedChatServer& server, const std::filesystem::path& out) {
  CampaignOptions o;
  o.target.url = server.base_url();
  o.target.model = "scripted";
  o.target.timeout_ms = 10000;
  o.target.backoff_ms = 5;
  o.target.max_backoff_ms = 50;
  o.data_dir = test::source_dir() / "data" / "redteam";
  o.out_dir = out;
  o.concurrency = 4;
  return o;
}

std::vector<json> transcript(const std::filesystem::path& out) {
  std::vector<json> lines;
  std::ifstream in(out / "transcript.jsonl");
  std::string line;
  while (std::getline(in, line)) lines.push_back(json::parse(line));
  return lines;
}

const GroupStats* stats(const std::vector<GroupStats>& groups, const std::string& key) {
  for (const auto& g : groups)
    if (g.key == key) return &g;
  return nullptr;
}

// For every attempt: success exactly when the server answered one of its turns from a weakness.
void expect_successes_match_server(const std::vector<json>& lines, const ScriptedChatServer& server) {
  const auto weak = server.weak_answers();
  for (const auto& line : lines) {
    bool weakness_fired = false;
    for (const auto& turn : line["turns"]) weakness_fired |= weak.count(turn.get<std::string>()) > 0;
    EXPECT_EQ(line["success"].get<bool>(), weakness_fired)
        << line["probe"] << " [" << line["transforms"] << "]: answers " << line["answers"].dump() << "\ndetectors "
        << line["detectors"].dump();
  }
}

TEST(RedteamCampaign, FindsExactlyTheScriptedWeaknesses) {
  test::TempDir dir;
  ScriptedChatServer server;  // default weaknesses: leaks on "ignore ... print", repeats above, base64, role-play, packages, markdown
  auto options = options_for(server, dir.path);
  const auto report = run_campaign(options);
  const auto lines = transcript(dir.path);
  ASSERT_EQ(lines.size(), report.planned);
  EXPECT_EQ(report.completed, report.planned);
  EXPECT_EQ(report.errors, 0u);
  expect_successes_match_server(lines, server);

  // Per family: what the server is weak to is found, what it resists is not.
  auto asr = [&](const std::string& family) {
    const auto* s = stats(report.families, family);
    EXPECT_NE(s, nullptr) << family;
    return s ? s->asr() : -1.0;
  };
  EXPECT_EQ(asr("direct-injection"), 0.0) << "the server ignores plain injections";
  EXPECT_EQ(asr("indirect-injection"), 0.0);
  EXPECT_EQ(asr("harmful"), 0.0) << "it refuses harmful requests sent plainly";
  EXPECT_GT(asr("system-prompt-extraction"), 0.0);
  EXPECT_LT(asr("system-prompt-extraction"), 1.0) << "only the 'ignore ... print' and 'repeat above' phrasings work";
  EXPECT_GT(asr("data-leakage"), 0.0);
  EXPECT_EQ(asr("package-hallucination"), 1.0);
  EXPECT_EQ(asr("response-rendering"), 1.0);
  EXPECT_GT(asr("jailbreak"), 0.0);
  EXPECT_LT(asr("jailbreak"), 1.0);
  // Obfuscation: of all the encodings, only base64 gets through (the server decodes base64 only).
  for (const auto& line : lines) {
    if (line["family"] == "obfuscation") {
      EXPECT_EQ(line["success"].get<bool>(), line["probe"] == "obf.base64") << line["probe"];
    }
  }
  // Jailbreaks: exactly the templates with a "stay in character" frame.
  for (const auto& line : lines) {
    if (line["family"] != "jailbreak" || line.value("style", "") == "crescendo") continue;
    const bool framed = line["turns"][0].get<std::string>().find("Stay in character") != std::string::npos ||
                        line["turns"][0].get<std::string>().find("stay in character") != std::string::npos;
    EXPECT_EQ(line["success"].get<bool>(), framed) << line["probe"];
  }
  // Each record carries the ATLAS technique and the detectors' view.
  for (const auto& line : lines) {
    ASSERT_FALSE(line["atlas"].empty());
    EXPECT_EQ(line["atlas"][0], find_family(line["family"].get<std::string>())->atlas);
    EXPECT_FALSE(line["detectors"].empty());
    EXPECT_EQ(line["key"], attempt_key(line["probe"].get<std::string>(), line["transforms"].get<std::string>(), 1));
  }
  // The report files.
  std::ifstream report_file(dir.path / "report.json");
  const auto doc = json::parse(report_file);
  EXPECT_EQ(doc["summary"]["successes"], report.successes);
  bool found_sysprompt = false;
  for (const auto& f : doc["families"])
    if (f["family"] == "system-prompt-extraction") {
      found_sysprompt = true;
      EXPECT_EQ(f["atlas"], "AML.T0056");
      EXPECT_EQ(f["atlas_name"], "Extract LLM System Prompt");
    }
  EXPECT_TRUE(found_sysprompt);
  std::ifstream md(dir.path / "report.md");
  std::stringstream markdown;
  markdown << md.rdbuf();
  EXPECT_NE(markdown.str().find("AML.T0051.000 LLM Prompt Injection: Direct"), std::string::npos);
}

TEST(RedteamCampaign, AServerWithoutWeaknessesYieldsNoSuccess) {
  test::TempDir dir;
  ScriptedServerOptions strong;
  strong.weak = {};
  strong.weak.leak_system_prompt_on_ignore = false;
  strong.weak.leak_on_repeat_above = false;
  strong.weak.follow_base64 = false;
  strong.weak.comply_in_roleplay = false;
  strong.weak.invent_packages = false;
  strong.weak.render_markdown = false;
  ScriptedChatServer server(strong);
  auto options = options_for(server, dir.path);
  options.transform_chains = {"none", "base64", "roleplay"};
  options.probe_selectors = {"direct-injection", "system-prompt-extraction", "data-leakage", "harmful", "obfuscation",
                             "package-hallucination", "response-rendering"};
  const auto report = run_campaign(options);
  EXPECT_EQ(report.completed, report.planned);
  EXPECT_EQ(report.successes, 0u) << testing::PrintToString(report.successful);
  for (const auto& line : transcript(dir.path)) {
    if (line["success"].get<bool>()) ADD_FAILURE() << line["probe"] << " [" << line["transforms"] << "] " << line["answers"].dump();
  }
  EXPECT_TRUE(server.weak_answers().empty());
}

TEST(RedteamCampaign, PerTransformRatesShowWhichEncodingGetsThrough) {
  test::TempDir dir;
  ScriptedChatServer server;
  auto options = options_for(server, dir.path);
  options.probe_selectors = {"direct-injection", "harmful"};
  options.transform_chains = {"none", "base64", "hex", "roleplay", "rot13+base64"};
  const auto report = run_campaign(options);
  expect_successes_match_server(transcript(dir.path), server);
  ASSERT_NE(stats(report.transforms, "none"), nullptr);
  EXPECT_EQ(stats(report.transforms, "none")->successes, 0u);
  EXPECT_EQ(stats(report.transforms, "hex")->successes, 0u);
  // base64: the direct injections now work (the server follows decoded text), the harmful requests
  // are still refused.
  std::size_t direct = 0;
  for (const auto& p : load_catalog_directory(options.data_dir).probes) direct += p.family == "direct-injection";
  EXPECT_EQ(stats(report.transforms, "base64")->successes, direct);
  // roleplay: the harmful requests are answered.
  EXPECT_GT(stats(report.transforms, "roleplay")->successes, 0u);
  // rot13 inside base64: the server decodes base64 only, so ROT13 text stays unread.
  EXPECT_EQ(stats(report.transforms, "rot13+base64")->successes, 0u);
  // The encodings add the obfuscation technique to the attempt's ATLAS ids.
  for (const auto& line : transcript(dir.path)) {
    if (line["transforms"] == "base64") {
      EXPECT_NE(std::find(line["atlas"].begin(), line["atlas"].end(), "AML.T0068"), line["atlas"].end());
    }
  }
}

TEST(RedteamCampaign, CrescendoSucceedsOnTheTurnWhereTheServerGivesIn) {
  for (const int after : {0, 2}) {
    test::TempDir dir;
    ScriptedServerOptions o;
    o.weak.comply_after_turns = after;
    ScriptedChatServer server(o);
    auto options = options_for(server, dir.path);
    options.probe_selectors = {"jailbreak.crescendo.phishing"};
    const auto report = run_campaign(options);
    const auto lines = transcript(dir.path);
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0]["turns"].size(), 3u) << "three user turns sent as one growing conversation";
    EXPECT_EQ(lines[0]["answers"].size(), 3u);
    EXPECT_EQ(lines[0]["success"].get<bool>(), after == 2);
    if (after == 2) {
      EXPECT_EQ(lines[0]["success_turn"], 2);
    }
    // The warm-up turns are answered helpfully, which is no success: they are not scored.
    EXPECT_EQ(report.successes, after == 2 ? 1u : 0u);
    EXPECT_EQ(server.requests(), 3u);
  }
}

TEST(RedteamCampaign, ResumeAfterAnInterruptedRunRepeatsNothing) {
  test::TempDir dir;
  ScriptedChatServer server;
  auto options = options_for(server, dir.path);
  options.probe_selectors = {"direct-injection", "data-leakage", "obfuscation", "system-prompt-extraction"};
  options.max_attempts = 7;
  const auto first = run_campaign(options);
  EXPECT_EQ(first.ran, 7u);
  EXPECT_EQ(transcript(dir.path).size(), 7u);
  // A kill in the middle of a write leaves a partial line.
  {
    std::ofstream out(dir.path / "transcript.jsonl", std::ios::app);
    out << R"({"key":"deadbeef","probe":"half-writ)";
  }
  const auto requests_before = server.requests();
  options.max_attempts = 0;
  options.resume = true;
  const auto second = run_campaign(options);
  EXPECT_EQ(second.skipped, 7u);
  EXPECT_EQ(second.ran, first.planned - 7);
  EXPECT_EQ(second.completed, first.planned);
  const auto lines = transcript(dir.path);  // parses every line: the partial one is gone
  std::set<std::string> keys;
  for (const auto& line : lines) EXPECT_TRUE(keys.insert(line["key"].get<std::string>()).second) << "duplicate " << line["key"];
  EXPECT_EQ(keys.size(), first.planned);
  // Requests made by the second run: one per remaining turn, none for the resumed attempts.
  std::size_t remaining_turns = 0;
  for (std::size_t i = 7; i < lines.size(); ++i) remaining_turns += lines[i]["turns"].size();
  EXPECT_EQ(server.requests() - requests_before, remaining_turns);
  // A third run with nothing left does nothing.
  const auto third = run_campaign(options);
  EXPECT_EQ(third.ran, 0u);
  EXPECT_EQ(third.successes, second.successes);
}

TEST(RedteamCampaign, RetriesSurviveInjected429And500) {
  for (const int status : {429, 500}) {
    test::TempDir dir;
    ScriptedServerOptions o;
    o.fail_every = 3;
    o.fail_status = status;
    o.retry_after_s = status == 429 ? 0 : -1;
    ScriptedChatServer server(o);
    auto options = options_for(server, dir.path);
    options.probe_selectors = {"direct-injection", "system-prompt-extraction", "package-hallucination"};
    options.target.retries = 10;  // every third request of all four workers fails: an attempt may meet several in a row
    const auto report = run_campaign(options);
    EXPECT_EQ(report.errors, 0u) << status;
    EXPECT_EQ(report.completed, report.planned) << status;
    EXPECT_GT(report.requests, report.planned) << "the failed requests were retried";
    EXPECT_EQ(report.requests, server.requests());
    std::size_t weak_expected = 0;
    for (const auto& line : transcript(dir.path)) weak_expected += line["success"].get<bool>();
    EXPECT_GT(weak_expected, 0u);
  }
}

TEST(RedteamCampaign, KeepsToTheConcurrencyLimitOnKeepAliveConnections) {
  test::TempDir dir;
  ScriptedServerOptions o;
  o.latency_ms = 15;
  ScriptedChatServer server(o);
  auto options = options_for(server, dir.path);
  options.probe_selectors = {"direct-injection", "indirect-injection", "data-leakage", "obfuscation"};
  options.concurrency = 3;
  const auto report = run_campaign(options);
  EXPECT_EQ(report.completed, report.planned);
  EXPECT_LE(server.max_in_flight(), 3u);
  EXPECT_GE(server.max_in_flight(), 2u) << "the workers did run side by side";
  EXPECT_LE(server.connections(), 3u) << "one keep-alive connection per worker";
}

TEST(RedteamCampaign, KeepsToTheRateLimit) {
  test::TempDir dir;
  ScriptedChatServer server;
  auto options = options_for(server, dir.path);
  options.probe_selectors = {"direct-injection", "data-leakage", "obfuscation"};
  options.concurrency = 8;
  options.rate = 40;
  run_campaign(options);
  auto arrivals = server.arrivals();
  std::sort(arrivals.begin(), arrivals.end());
  ASSERT_GE(arrivals.size(), 15u);
  // However fast the machine, k+1 requests under a 40/s limit span at least k/40 s (a little slack
  // for the server's clock reading after the client's).
  const std::size_t k = 10;
  for (std::size_t i = 0; i + k < arrivals.size(); ++i)
    EXPECT_GE(arrivals[i + k] - arrivals[i], k / 40.0 - 0.02) << "requests " << i << ".." << i + k;
}

TEST(RedteamCampaign, StreamedAnswersScoreLikeWholeOnes) {
  std::map<std::string, bool> outcome[2];
  for (const bool stream : {false, true}) {
    test::TempDir dir;
    ScriptedChatServer server;
    auto options = options_for(server, dir.path);
    options.probe_selectors = {"system-prompt-extraction", "data-leakage", "obfuscation", "response-rendering"};
    options.target.stream = stream;
    run_campaign(options);
    for (const auto& line : transcript(dir.path)) outcome[stream][line["probe"].get<std::string>()] = line["success"].get<bool>();
  }
  EXPECT_EQ(outcome[0], outcome[1]);
  EXPECT_TRUE(outcome[1]["obf.base64"]);
}

TEST(RedteamCampaign, AJudgeRemovesTheRefusalHeuristicsFalsePositives) {
  // ROT13-encoded harmful requests: the scripted target cannot read them and answers with a generic
  // line, which is no refusal, so the heuristic counts it as compliance. The judge does not.
  ScriptedChatServer target;
  ScriptedServerOptions judge_options;
  judge_options.judge = true;
  ScriptedChatServer judge(judge_options);
  std::size_t successes[2] = {0, 0};
  for (const bool with_judge : {false, true}) {
    test::TempDir dir;
    auto options = options_for(target, dir.path);
    options.probe_selectors = {"harmful"};
    options.transform_chains = {"rot13", "roleplay"};
    if (with_judge) {
      Endpoint j;
      j.url = judge.base_url();
      j.model = "judge";
      options.judge = j;
    }
    const auto report = run_campaign(options);
    successes[with_judge] = report.successes;
    if (with_judge) {
      expect_successes_match_server(transcript(dir.path), target);
      EXPECT_EQ(stats(report.transforms, "rot13")->successes, 0u);
      for (const auto& line : transcript(dir.path)) EXPECT_TRUE(line.contains("judge")) << line["probe"];
    }
  }
  EXPECT_GT(successes[0], successes[1]);
  EXPECT_GT(successes[1], 0u) << "the role-play answers are still judged jailbroken";
}

TEST(RedteamCampaign, HostileAnswersAreErrorsNotCrashes) {
  // the target under test may attack the harness: answers nested a million deep, an error object
  // nested deep (it is quoted in the message), garbage, an empty body
  std::string deep_array(1'000'000, '[');
  deep_array += std::string(1'000'000, ']');
  std::string deep_error = "{\"error\":";
  for (int i = 0; i < 200'000; ++i) deep_error += "{\"a\":";
  deep_error += "1" + std::string(200'000, '}') + "}";
  const std::string garbage(100'000, '\x9f');
  for (const std::string& body : {deep_array, deep_error, garbage, std::string("{}")}) {
    test::TempDir dir;
    ScriptedServerOptions o;
    o.hostile_body = body;
    ScriptedChatServer server(o);
    auto options = options_for(server, dir.path);
    options.probe_selectors = {"data-leakage"};
    options.target.retries = 0;
    // either the run stops with a clear error (the target is not answering as an OpenAI endpoint
    // does) or every attempt is an error; never a crash, never a scored answer
    try {
      const auto report = run_campaign(options);
      EXPECT_EQ(report.errors, report.planned) << "a hostile answer was scored as an answer: " << body.substr(0, 20);
    } catch (const core::Error& e) {
      EXPECT_NE(std::string(e.what()).find("answer"), std::string::npos) << e.what();
      EXPECT_LT(std::string(e.what()).size(), 1000u) << "the hostile body is quoted, not copied";
    }
  }
}

TEST(RedteamCampaign, FailsClearlyWhenTheTargetIsDownOrRefusesTheKey) {
  test::TempDir dir;
  int free_port = 0;
  {
    ScriptedChatServer probe_port;
    free_port = probe_port.port();
  }
  CampaignOptions options;
  options.target.url = "http://127.0.0.1:" + std::to_string(free_port) + "/v1";
  options.target.retries = 1;
  options.target.backoff_ms = 1;
  options.data_dir = test::source_dir() / "data" / "redteam";
  options.out_dir = dir.path / "down";
  options.probe_selectors = {"data-leakage"};
  try {
    run_campaign(options);
    FAIL() << "an unreachable target was not reported";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("could not connect"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("--resume"), std::string::npos) << e.hint();
  }
  ScriptedServerOptions locked;
  locked.api_key = "sk-right";
  ScriptedChatServer server(locked);
  options.target.url = server.base_url();
  options.target.api_key = "sk-wrong";
  options.out_dir = dir.path / "locked";
  try {
    run_campaign(options);
    FAIL() << "a 401 was not reported";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("401"), std::string::npos) << e.what();
    EXPECT_NE(e.hint().find("--api-key-env"), std::string::npos) << e.hint();
  }
  options.target.api_key = "sk-right";
  options.out_dir = dir.path / "ok";
  EXPECT_EQ(run_campaign(options).errors, 0u);
  // A wrong base path is a 404 with a hint about /v1.
  options.target.url = "http://127.0.0.1:" + std::to_string(server.port()) + "/api";
  options.out_dir = dir.path / "path";
  try {
    run_campaign(options);
    FAIL() << "a 404 was not reported";
  } catch (const core::Error& e) {
    EXPECT_NE(e.hint().find("/v1"), std::string::npos) << e.hint();
  }
}

}  // namespace
}  // namespace aegis::redteam
