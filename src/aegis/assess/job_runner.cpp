// Runs one check as a child `aegis` process: a check that crashes, hangs or runs out of memory on a
// hostile model fails its job, not the assessment.
#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>
#include <thread>

#include "aegis/assess/assess.h"
#include "aegis/core/base64.h"
#include "aegis/core/error.h"
#include "aegis/core/finding_json.h"

namespace aegis::assess {

namespace {

constexpr std::uintmax_t kMaxReportBytes = 512u << 20;
constexpr std::uintmax_t kMaxArtifactBytes = 8u << 20;

std::string now_rfc3339() {
  const auto now = std::chrono::system_clock::now();
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

std::string read_text(const std::filesystem::path& path, std::uintmax_t limit) {
  std::ifstream in(path, std::ios::binary);
  std::string text;
  if (!in) return text;
  text.resize(static_cast<std::size_t>(std::min<std::uintmax_t>(limit, std::filesystem::file_size(path))));
  in.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(in.gcount()));
  return text;
}

// The end of a check's stderr: where its "error: ... / hint: ..." lines are.
std::string stderr_tail(const std::filesystem::path& path) {
  std::string text = read_text(path, 1u << 20);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r' || text.back() == ' ')) text.pop_back();
  // Progress redraws use carriage returns; keep what followed the last one on each line.
  if (text.size() > 1500) text = "..." + text.substr(text.size() - 1500);
  return text;
}

}  // namespace

JobOutcome execute_job(const Job& job, const std::filesystem::path& aegis_binary, const std::filesystem::path& scratch,
                       bool keep_scratch) {
  JobOutcome outcome;
  outcome.started_at = now_rfc3339();
  auto finish = [&](std::string error) {
    outcome.finished_at = now_rfc3339();
    outcome.error = std::move(error);
    if (!keep_scratch) {
      std::error_code ec;
      std::filesystem::remove_all(scratch, ec);
    }
    return outcome;
  };
  std::error_code ec;
  std::filesystem::create_directories(scratch, ec);
  if (ec) return finish("cannot create the job's scratch folder " + scratch.string() + ": " + ec.message());
  if (!job.artifacts.empty()) std::filesystem::create_directories(scratch / job.artifacts, ec);

  std::vector<std::string> arguments{aegis_binary.string()};
  arguments.insert(arguments.end(), job.arguments.begin(), job.arguments.end());
  if (std::find(job.arguments.begin(), job.arguments.end(), "--format") == job.arguments.end())
    arguments.insert(arguments.end(), {"--format", "json"});
  std::vector<char*> argv;
  for (auto& a : arguments) argv.push_back(a.data());
  argv.push_back(nullptr);

  const auto out_path = scratch / "report.json";
  const auto err_path = scratch / "stderr.txt";
  // fork + exec rather than posix_spawn: the child also asks to be killed when its parent dies, so
  // that a worker killed mid-job does not leave its check running on. Only async-signal-safe calls
  // between fork and exec; everything they need is prepared here.
  const std::string out_text = out_path.string(), err_text = err_path.string(), dir_text = scratch.string();
  const std::string binary = aegis_binary.string();
  const pid_t pid = ::fork();
  if (pid < 0) return finish(std::string("cannot start the check: ") + std::strerror(errno));
  if (pid == 0) {
    ::setpgid(0, 0);  // its own group: a timeout kills the check and its children
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = ::open(out_text.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    const int err = ::open(err_text.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (in < 0 || out < 0 || err < 0 || ::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(err, 2) < 0 || ::chdir(dir_text.c_str()) != 0) ::_exit(127);
    ::execv(binary.c_str(), argv.data());
    ::_exit(127);
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(job.timeout_seconds);
  int status = 0;
  bool timed_out = false;
  for (;;) {
    const pid_t done = ::waitpid(pid, &status, WNOHANG);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) return finish(std::string("lost the check's process: ") + std::strerror(errno));
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      timed_out = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (timed_out) return finish("the check ran longer than its " + std::to_string(job.timeout_seconds) + " s limit and was stopped");
  if (WIFSIGNALED(status))
    return finish("the check died of signal " + std::to_string(WTERMSIG(status)) + " (" + strsignal(WTERMSIG(status)) + "): " + stderr_tail(err_path));
  outcome.exit_code = WEXITSTATUS(status);
  if (outcome.exit_code == 127 && std::filesystem::file_size(err_path, ec) == 0)
    return finish("cannot run " + binary + " in " + dir_text);
  if (outcome.exit_code != 0 && outcome.exit_code != 1) return finish(stderr_tail(err_path));

  std::error_code size_ec;
  const auto size = std::filesystem::file_size(out_path, size_ec);
  if (size_ec || size > kMaxReportBytes) return finish("the check's JSON report is missing or larger than 512 MiB");
  nlohmann::json report;
  try {
    report = nlohmann::json::parse(read_text(out_path, kMaxReportBytes));
  } catch (const nlohmann::json::exception& e) {
    return finish(std::string("the check's report is not JSON: ") + e.what());
  }
  if (!report.is_object()) return finish("the check's report is not a JSON object");
  if (const auto it = report.find("findings"); it != report.end() && it->is_array()) {
    for (const auto& item : *it) {
      std::string why;
      if (auto finding = core::finding_from_json(item, &why)) outcome.findings.push_back(std::move(*finding));
      else return finish("the check reported a malformed finding: " + why);
    }
  }
  report.erase("findings");
  report.erase("aegis");
  outcome.results = std::move(report);
  if (!job.artifacts.empty()) {
    for (const auto& entry : std::filesystem::directory_iterator(scratch / job.artifacts, ec)) {
      if (entry.path().extension() != ".png" || !entry.is_regular_file() || entry.file_size() > kMaxArtifactBytes) continue;
      const std::string bytes = read_text(entry.path(), kMaxArtifactBytes);
      outcome.artifacts[entry.path().filename().string()] = core::encode_base64(std::string_view(bytes));
    }
  }
  outcome.ok = true;
  return finish("");
}

std::pair<std::int64_t, bool> record_outcome(store::FindingStore& store, const Job& job, const JobOutcome& outcome,
                                             const std::string& worker) {
  store::JobRecord record;
  record.assessment_id = job.assessment_id;
  record.job_key = job.key;
  record.asset = job.asset;
  record.check = job.check;
  record.state = outcome.ok ? "done" : "failed";
  record.error = outcome.error;
  record.worker = worker;
  store::RunRecord run;
  run.command = "assess:" + job.check;
  run.asset = job.asset;
  run.inputs = job.inputs;
  run.started_at = outcome.started_at;
  run.finished_at = outcome.finished_at;
  run.aegis_version = AEGIS_VERSION;
  run.exit_code = outcome.exit_code;
  std::string command_line = "aegis";
  for (const auto& a : job.arguments) command_line += " " + a;
  nlohmann::json summary = {{"results", outcome.results}, {"command", command_line}, {"job_key", job.key}};
  if (!outcome.artifacts.empty()) summary["artifacts"] = outcome.artifacts;
  run.summary_json = summary.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return store.record_job(record, std::move(run), outcome.findings);
}

}  // namespace aegis::assess
