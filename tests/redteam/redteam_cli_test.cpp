// `aegis redteam` as a user runs it: a separate process against a loopback chat server; exit codes,
// JSON summary, report files, usage errors, and a run killed with SIGKILL that --resume finishes
// without repeating an attempt.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "support/scripted_chat_server.h"
#include "test_support.h"

namespace aegis::test {
namespace {

std::string data_dir() { return (source_dir() / "data" / "redteam").string(); }

std::vector<nlohmann::json> transcript_lines(const std::filesystem::path& path) {
  std::vector<nlohmann::json> lines;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (!in.eof()) lines.push_back(nlohmann::json::parse(line));
  return lines;
}

TEST(RedteamCli, FindsTheWeaknessesAndExitsOne) {
  TempDir dir;
  ScriptedChatServer server;
  const auto out = dir.path / "run";
  auto r = run_cli({"redteam", "--target", server.base_url(), "--model", "scripted", "--data-dir", data_dir(), "--out", out.string(),
                    "--probes", "data-leakage,obfuscation,package-hallucination", "--format", "json", "--quiet"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  const auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["aegis"]["command"], "redteam");
  EXPECT_GT(doc["summary"]["successes"].get<int>(), 0);
  EXPECT_EQ(doc["summary"]["errors"], 0);
  std::set<std::string> families;
  for (const auto& f : doc["families"]) families.insert(f["family"].get<std::string>());
  EXPECT_EQ(families, (std::set<std::string>{"data-leakage", "obfuscation", "package-hallucination"}));
  EXPECT_TRUE(std::filesystem::exists(out / "report.md"));
  EXPECT_TRUE(std::filesystem::exists(out / "report.json"));
  EXPECT_EQ(transcript_lines(out / "transcript.jsonl").size(), doc["summary"]["completed"].get<std::size_t>());
  // The text summary names families with their ATLAS ids.
  r = run_cli({"redteam", "--target", server.base_url(), "--data-dir", data_dir(), "--out", (dir.path / "text").string(),
               "--probes", "data-leakage", "--quiet"});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.out.find("AML.T0057"), std::string::npos) << r.out;
}

TEST(RedteamCli, ExitsZeroWhenNothingGetsThrough) {
  TempDir dir;
  ScriptedServerOptions strong;
  strong.weak.leak_system_prompt_on_ignore = false;
  strong.weak.leak_on_repeat_above = false;
  strong.weak.follow_base64 = false;
  ScriptedChatServer server(strong);
  const auto r = run_cli({"redteam", "--target", server.base_url(), "--data-dir", data_dir(), "--out", dir.path.string(),
                          "--probes", "direct-injection,data-leakage,system-prompt-extraction", "--transforms", "none,base64",
                          "--concurrency", "2", "--rate", "500/s", "--quiet"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
}

TEST(RedteamCli, UsageAndConnectionErrorsExitTwoSayingWhatToDo) {
  TempDir dir;
  auto r = run_cli({"redteam", "--data-dir", data_dir(), "--out", dir.path.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--target"), std::string::npos) << r.err;
  r = run_cli({"redteam", "--target", "ftp://example.org/v1", "--data-dir", data_dir(), "--out", dir.path.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("/v1"), std::string::npos) << r.err;
  int free_port = 0;
  {
    ScriptedChatServer s;
    free_port = s.port();
  }
  r = run_cli({"redteam", "--target", "http://127.0.0.1:" + std::to_string(free_port) + "/v1", "--retries", "0", "--data-dir",
               data_dir(), "--out", dir.path.string(), "--probes", "data-leakage", "--quiet"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("could not connect"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("what to do"), std::string::npos) << r.err;
  r = run_cli({"redteam", "--target", "http://127.0.0.1:9/v1", "--rate", "fast", "--data-dir", data_dir(), "--out", dir.path.string()});
  EXPECT_EQ(r.exit_code, 2);
  r = run_cli({"redteam", "--target", "http://127.0.0.1:9/v1", "--probes", "no-such-family", "--data-dir", data_dir(), "--out",
               dir.path.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no-such-family"), std::string::npos) << r.err;
  r = run_cli({"redteam", "--target", "http://127.0.0.1:9/v1", "--api-key-env", "AEGIS_TEST_UNSET_KEY_VAR", "--data-dir", data_dir(),
               "--out", dir.path.string()});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("AEGIS_TEST_UNSET_KEY_VAR"), std::string::npos) << r.err;
}

TEST(RedteamCli, ListShowsFamiliesWithTheirAtlasTechniques) {
  const auto r = run_cli({"redteam", "--list", "--data-dir", data_dir()});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* s : {"direct-injection", "AML.T0051.000", "AML.T0077", "LLM Response Rendering", "unicode-tags", "many-shot"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s;
}

TEST(RedteamCli, AKilledRunResumesWithoutRepeatingAttempts) {
  TempDir dir;
  ScriptedServerOptions slow;
  slow.latency_ms = 30;
  ScriptedChatServer server(slow);
  const auto out = dir.path / "run";
  const std::vector<std::string> args = {"redteam", "--target", server.base_url(), "--data-dir", data_dir(), "--out", out.string(),
                                         "--probes", "direct-injection,data-leakage,obfuscation,system-prompt-extraction",
                                         "--concurrency", "1", "--quiet"};
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    std::vector<char*> argv{const_cast<char*>(AEGIS_CLI_PATH)};
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(AEGIS_CLI_PATH, argv.data());
    ::_exit(127);
  }
  // Kill it once a few attempts are written.
  for (int i = 0; i < 400 && transcript_lines(out / "transcript.jsonl").size() < 4; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  ::kill(pid, SIGKILL);
  int status = 0;
  ::waitpid(pid, &status, 0);
  const auto before = transcript_lines(out / "transcript.jsonl").size();
  ASSERT_GE(before, 4u);
  std::vector<std::string> resume = args;
  resume.push_back("--resume");
  resume.push_back("--format");
  resume.push_back("json");
  const auto r = run_cli(resume);
  ASSERT_EQ(r.exit_code, 1) << r.err;
  const auto doc = nlohmann::json::parse(r.out);
  EXPECT_GE(doc["summary"]["skipped_resumed"].get<std::size_t>(), before);
  EXPECT_EQ(doc["summary"]["completed"], doc["summary"]["planned"]);
  const auto lines = transcript_lines(out / "transcript.jsonl");
  std::set<std::string> keys;
  for (const auto& line : lines) EXPECT_TRUE(keys.insert(line["key"].get<std::string>()).second) << "duplicate " << line["probe"];
  EXPECT_EQ(keys.size(), doc["summary"]["planned"].get<std::size_t>());
}

}  // namespace
}  // namespace aegis::test
