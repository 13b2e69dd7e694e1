// The HTML assessment report in a real browser (Debian's headless Chromium): every image decodes
// and has a size, every in-page link has its target, the page lays out, the report's own
// Content-Security-Policy lets its images and styles through and stops scripts it did not allow,
// and a screenshot renders.
//
// The checks run as a probe script that this test injects into a copy of the report just before
// </body> (the report itself has no scripts), allowed by adding the probe's hash to the copy's CSP.
#include "aegis/assess/report_writer.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "aegis/core/base64.h"
#include "aegis/provenance/manifest.h"
#include "assess/report_test_documents.h"
#include "test_support.h"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr const char* kChromium = "/usr/bin/chromium";
constexpr auto kChromiumTimeout = std::chrono::seconds(60);

// Runs after load: the verdict goes into <pre id="aegis-probe"> as JSON.
constexpr std::string_view kProbe = R"js(
window.addEventListener('load', function () {
  var images = Array.prototype.slice.call(document.images);
  var broken = images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); })
                     .map(function (i) { return i.alt || i.src.slice(0, 40); });
  var links = Array.prototype.slice.call(document.querySelectorAll('a[href^="#"]'));
  var missing = links.map(function (a) { return decodeURIComponent(a.getAttribute('href').slice(1)); })
                     .filter(function (id) { return !document.getElementById(id); });
  var verdict = {images: images.length, broken: broken, links: links.length, missing: missing,
                 height: document.documentElement.scrollHeight, bodyHeight: document.body.getBoundingClientRect().height,
                 styled: getComputedStyle(document.querySelector('header.report')).backgroundColor};
  document.getElementById('aegis-probe').textContent = JSON.stringify(verdict);
});
)js";

// An inline script without a hash: the report's CSP must keep it from running.
constexpr std::string_view kUnhashedScript = "document.getElementById('aegis-csp').textContent = 'ran';";

struct ProcessResult {
  bool started = false;
  bool timed_out = false;
  int exit_code = -1;
  std::string why;
};

// Runs `arguments` in its own process group with stdout and stderr to files; kills the whole group
// (the browser and its helpers) on timeout and after it exits.
ProcessResult run_with_timeout(std::vector<std::string> arguments, const fs::path& stdout_path, const fs::path& stderr_path,
                               std::chrono::seconds timeout) {
  ProcessResult result;
  std::vector<char*> argv;
  for (auto& argument : arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDIN_FILENO, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, stdout_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, stderr_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
  posix_spawnattr_setpgroup(&attributes, 0);
  pid_t pid = -1;
  // posix_spawn rather than fork: the test process has threads, and only exec is safe after fork.
  const int error = posix_spawn(&pid, argv[0], &actions, &attributes, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  if (error != 0) {
    result.why = "cannot start " + arguments[0] + ": error " + std::to_string(error);
    return result;
  }
  result.started = true;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  int status = 0;
  while (true) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      result.timed_out = true;
      result.why = arguments[0] + " did not finish within " + std::to_string(timeout.count()) + " s";
      return result;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  ::kill(-pid, SIGKILL);  // helpers the browser left behind, if any; only our own process group
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

std::string read_text(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

std::string tail(const std::string& text, std::size_t bytes) {
  return text.size() <= bytes ? text : text.substr(text.size() - bytes);
}

std::vector<std::string> chromium_arguments(const fs::path& profile) {
  return {kChromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
          "--user-data-dir=" + profile.string(), "--no-first-run", "--disable-extensions", "--virtual-time-budget=5000"};
}

std::uint32_t big_endian_32(const std::string& bytes, std::size_t at) {
  return (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at])) << 24) |
         (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at + 1])) << 16) |
         (static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at + 2])) << 8) |
         static_cast<std::uint32_t>(static_cast<unsigned char>(bytes[at + 3]));
}

TEST(AssessReportChromium, ImagesLoadLinksResolveAndThePageRenders) {
  ASSERT_EQ(::access(kChromium, X_OK), 0) << kChromium
                                          << " is missing: install Debian's chromium package (`make deps` installs it; "
                                             "or `apt-get install chromium`)";
  aegis::test::TempDir dir("aegis_report_chromium");
  fs::path artifacts = dir.path;
  if (const char* wanted = std::getenv("AEGIS_TEST_ARTIFACTS"); wanted && *wanted) {
    artifacts = wanted;
    fs::create_directories(artifacts);
  }

  const json document = aegis::test::realistic_document();
  std::ostringstream html_stream;
  aegis::assess::write_html_report(html_stream, document);
  const std::string html = html_stream.str();
  const fs::path report = artifacts / "assessment-report.html";
  std::ofstream(report, std::ios::binary) << html;
  {  // The Markdown twin and the input beside it, for whoever looks at the artifacts.
    std::ofstream markdown(artifacts / "assessment-report.md", std::ios::binary);
    aegis::assess::write_markdown_report(markdown, document);
    std::ofstream(artifacts / "assessment-document.json", std::ios::binary) << document.dump(1);
  }

  // The probed copy: the probe before </body>, its hash added to the CSP's script-src.
  std::string probed = html;
  const auto body_end = probed.rfind("</body>");
  ASSERT_NE(body_end, std::string::npos);
  probed.insert(body_end, "<pre id=\"aegis-probe\">pending</pre><pre id=\"aegis-csp\">blocked</pre>\n<script>" +
                              std::string(kProbe) + "</script>\n<script>" + std::string(kUnhashedScript) + "</script>\n");
  const auto digest = aegis::provenance::sha256(kProbe.data(), kProbe.size());
  const std::string policy = "default-src 'none';";
  const auto policy_at = probed.find(policy);
  ASSERT_NE(policy_at, std::string::npos) << "the report has no default-src 'none' policy";
  probed.insert(policy_at + policy.size(),
                " script-src 'sha256-" + aegis::core::encode_base64(std::span<const std::uint8_t>(digest.data(), digest.size())) + "';");
  const fs::path probe_page = dir.path / "probed-report.html";
  std::ofstream(probe_page, std::ios::binary) << probed;

  auto dump = chromium_arguments(dir.path / "profile-dom");
  dump.push_back("--dump-dom");
  dump.push_back("file://" + probe_page.string());
  const auto dumped = run_with_timeout(dump, dir.path / "dom.html", dir.path / "dom.err", kChromiumTimeout);
  ASSERT_TRUE(dumped.started) << dumped.why;
  ASSERT_FALSE(dumped.timed_out) << dumped.why << "\n" << tail(read_text(dir.path / "dom.err"), 2000);
  ASSERT_EQ(dumped.exit_code, 0) << tail(read_text(dir.path / "dom.err"), 2000);

  const std::string dom = read_text(dir.path / "dom.html");
  const std::string open = "<pre id=\"aegis-probe\">";
  const auto verdict_at = dom.find(open);
  ASSERT_NE(verdict_at, std::string::npos) << "no probe element in the dumped DOM:\n" << tail(dom, 2000);
  const auto verdict_end = dom.find("</pre>", verdict_at);
  const std::string verdict_text = dom.substr(verdict_at + open.size(), verdict_end - verdict_at - open.size());
  ASSERT_NE(verdict_text, "pending") << "the probe did not run (blocked by the CSP, or no load event)\n"
                                     << tail(read_text(dir.path / "dom.err"), 2000);
  const json verdict = json::parse(verdict_text, nullptr, false);
  ASSERT_TRUE(verdict.is_object()) << verdict_text;
  EXPECT_EQ(verdict["images"], 2) << verdict_text;
  EXPECT_TRUE(verdict["broken"].empty()) << "images that did not decode: " << verdict["broken"].dump();
  EXPECT_GT(verdict["links"].get<int>(), 20) << verdict_text;
  EXPECT_TRUE(verdict["missing"].empty()) << "in-page links without a target: " << verdict["missing"].dump();
  EXPECT_GT(verdict["height"].get<double>(), 2000) << verdict_text;
  EXPECT_GT(verdict["bodyHeight"].get<double>(), 0) << verdict_text;
  EXPECT_EQ(verdict["styled"], "rgb(20, 33, 61)") << "the inline stylesheet was not applied";
  EXPECT_NE(dom.find("<pre id=\"aegis-csp\">blocked</pre>"), std::string::npos)
      << "a script without the probe's hash ran: the report's Content-Security-Policy does not hold";

  // A screenshot of the report itself (no probe), kept with the test's artifacts.
  const fs::path screenshot = artifacts / "assessment-report.png";
  fs::remove(screenshot);
  auto shot = chromium_arguments(dir.path / "profile-shot");
  shot.push_back("--screenshot=" + screenshot.string());
  shot.push_back("--window-size=1280,2000");
  shot.push_back("--hide-scrollbars");
  shot.push_back("file://" + report.string());
  const auto shot_result = run_with_timeout(shot, dir.path / "shot.out", dir.path / "shot.err", kChromiumTimeout);
  ASSERT_TRUE(shot_result.started) << shot_result.why;
  ASSERT_FALSE(shot_result.timed_out) << shot_result.why;
  ASSERT_EQ(shot_result.exit_code, 0) << tail(read_text(dir.path / "shot.err"), 2000);
  const std::string png = read_text(screenshot);
  ASSERT_GT(png.size(), 24u) << "no screenshot at " << screenshot;
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(png.substr(12, 4), "IHDR");
  EXPECT_EQ(big_endian_32(png, 16), 1280u);
  EXPECT_EQ(big_endian_32(png, 20), 2000u);
  // Something was drawn: a blank page has no variation at all.
  const cv::Mat image = cv::imread(screenshot.string(), cv::IMREAD_GRAYSCALE);
  ASSERT_FALSE(image.empty());
  cv::Scalar mean, deviation;
  cv::meanStdDev(image, mean, deviation);
  EXPECT_GT(deviation[0], 10.0) << "the screenshot is nearly uniform (mean " << mean[0] << ")";
}

}  // namespace
