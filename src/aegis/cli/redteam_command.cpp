// `aegis redteam`: probes an OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama's /v1,
// hosted APIs) with injection, jailbreak, extraction, leakage, hallucination, obfuscation and
// rendering attacks, scores the answers and writes a transcript and a report mapped to MITRE ATLAS.
// Exit codes: 0 no attack succeeded, 1 at least one did, 2 usage or connection error.
#include "aegis/cli/redteam_command.h"

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/core/progress.h"
#include "aegis/core/text.h"
#include "aegis/redteam/redteam.h"

namespace aegis::cli {
namespace {

struct RedteamFlags {
  std::string target, model, api_key_env, system_prompt_file, probes, transforms = "none", jailbreakbench;
  std::size_t max_behaviors = 0;
  std::string known_packages, judge, judge_model, judge_api_key_env, ca_file, rate, out = "aegis-redteam", format = "text";
  std::string data_dir;
  std::vector<std::string> allow_hosts;
  std::size_t concurrency = 4, max_attempts = 0;
  int retries = 3, timeout_ms = 60000, max_tokens = 0;
  double temperature = 0;
  std::uint64_t seed = 1;
  bool resume = false, stream = false, no_canary = false, list = false, quiet = false;
};

std::string read_file(const std::string& path, const std::string& flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::Error(flag + ": cannot read " + path, "check the path");
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string key_from_env(const std::string& var, const std::string& flag) {
  if (var.empty()) return {};
  const char* value = std::getenv(var.c_str());
  if (!value || !*value) throw core::Error(flag + ": the environment variable " + var + " is not set", "export " + var + "=<key> first");
  return value;
}

// "10", "10/s", "600/m", "3600/h" -> requests per second.
double parse_rate(const std::string& text) {
  if (text.empty()) return 0;
  const auto slash = text.find('/');
  double value = 0;
  try {
    std::size_t used = 0;
    value = std::stod(text.substr(0, slash), &used);
    if (used != (slash == std::string::npos ? text.size() : slash)) throw std::invalid_argument("trailing text");
  } catch (const std::exception&) {
    throw core::Error("--rate '" + text + "' is not a rate", "write it as 10, 10/s, 600/m or 3600/h");
  }
  if (value <= 0) throw core::Error("--rate must be positive", "write it as 10, 10/s, 600/m or 3600/h");
  if (slash == std::string::npos) return value;
  const auto unit = text.substr(slash + 1);
  if (unit == "s") return value;
  if (unit == "m") return value / 60.0;
  if (unit == "h") return value / 3600.0;
  throw core::Error("--rate unit '" + unit + "' is not s, m or h", "write it as 10, 10/s, 600/m or 3600/h");
}

int list_catalog(const RedteamFlags& flags) {
  auto catalog = flags.data_dir.empty() ? redteam::builtin_catalog() : redteam::load_catalog_directory(flags.data_dir);
  redteam::expand_jailbreaks(catalog);
  std::cout << "Probe families (" << catalog.probes.size() << " built-in probes):\n";
  for (const auto& f : redteam::probe_families()) {
    std::size_t n = 0;
    for (const auto& p : catalog.probes) n += p.family == f.id;
    std::cout << "  " << std::left << std::setw(26) << f.id << std::setw(5) << n << f.atlas << " "
              << redteam::technique_title(f.atlas) << "\n      success: " << f.success_rule << "\n";
  }
  std::cout << "\nTransforms (chain with '+', e.g. rot13+base64; 'none' sends the probe as written):\n";
  for (const auto& t : catalog.transforms)
    std::cout << "  " << std::left << std::setw(14) << t.name << std::setw(11) << t.atlas << t.description << "\n";
  std::cout << "\nProbes:\n";
  for (const auto& p : catalog.probes)
    if (p.family != "jailbreak" || p.style == "crescendo" || p.id.size() < 2 || p.id.back() == '1')
      std::cout << "  " << p.id << "  (" << p.family << (p.turns.size() > 1 ? ", " + std::to_string(p.turns.size()) + " turns" : "") << ")\n";
  std::cout << "  (jailbreak.<template>.<n>: every template with every behaviour; only .1 shown)\n";
  return 0;
}

int run_redteam(const RedteamFlags& flags) {
  if (flags.list) return list_catalog(flags);
  if (flags.target.empty())
    throw core::Error("aegis redteam needs --target URL",
                      "give the endpoint's OpenAI-compatible base URL, e.g. --target http://127.0.0.1:8000/v1");
  if (flags.format != "text" && flags.format != "json") throw core::Error("--format must be text or json", "use --format text or --format json");
  if (flags.concurrency == 0 || flags.concurrency > 1024) throw core::Error("--concurrency must be 1..1024", "pick a smaller number");
  if (flags.retries < 0 || flags.retries > 20) throw core::Error("--retries must be 0..20", "pick a smaller number");
  if (flags.timeout_ms < 100) throw core::Error("--timeout-ms must be at least 100", "give the per-request limit in milliseconds");
  redteam::check_endpoint_url(flags.target, "--target");

  redteam::CampaignOptions options;
  options.target.url = flags.target;
  options.target.model = flags.model;
  options.target.api_key = key_from_env(flags.api_key_env, "--api-key-env");
  options.target.ca_file = flags.ca_file;
  options.target.timeout_ms = flags.timeout_ms;
  options.target.retries = flags.retries;
  options.target.stream = flags.stream;
  options.target.temperature = flags.temperature;
  options.target.max_tokens = flags.max_tokens;
  if (!flags.judge.empty()) {
    redteam::check_endpoint_url(flags.judge, "--judge");
    redteam::Endpoint judge;
    judge.url = flags.judge;
    judge.model = flags.judge_model.empty() ? flags.model : flags.judge_model;
    judge.api_key = key_from_env(flags.judge_api_key_env, "--judge-api-key-env");
    judge.ca_file = flags.ca_file;
    judge.timeout_ms = flags.timeout_ms;
    judge.retries = flags.retries;
    judge.max_tokens = 8;
    options.judge = judge;
  } else if (!flags.judge_model.empty()) {
    throw core::Error("--judge-model needs --judge URL", "give the judge's OpenAI-compatible base URL with --judge");
  }
  if (!flags.system_prompt_file.empty()) {
    options.system_prompt = read_file(flags.system_prompt_file, "--system-prompt");
    while (!options.system_prompt.empty() && (options.system_prompt.back() == '\n' || options.system_prompt.back() == '\r'))
      options.system_prompt.pop_back();
    if (options.system_prompt.empty()) throw core::Error("--system-prompt: " + flags.system_prompt_file + " is empty", "put the system prompt in it");
  }
  options.plant_canary = !flags.no_canary;
  for (const auto& item : core::split_comma_list(flags.probes)) {
    const bool file = item.size() > 5 && (item.ends_with(".yaml") || item.ends_with(".yml"));
    if (file) options.probe_files.push_back(item);
    else options.probe_selectors.push_back(item);
  }
  // Only files given: run those probes (plus any family or id named beside them).
  options.only_probe_files = !options.probe_files.empty() && options.probe_selectors.empty();
  options.transform_chains = core::split_comma_list(flags.transforms);
  if (options.transform_chains.empty()) options.transform_chains = {"none"};
  options.jailbreakbench_dir = flags.jailbreakbench;
  options.max_behaviors = flags.max_behaviors;
  options.known_packages_file = flags.known_packages;
  for (const auto& h : flags.allow_hosts)
    for (const auto& host : core::split_comma_list(h)) options.allowed_hosts.push_back(host);
  options.concurrency = flags.concurrency;
  options.rate = parse_rate(flags.rate);
  options.out_dir = flags.out;
  options.resume = flags.resume;
  options.max_attempts = flags.max_attempts;
  options.seed = flags.seed;
  options.data_dir = flags.data_dir;

  const bool progress = !flags.quiet && core::Progress::stderr_is_terminal();
  if (progress) {
    auto last = std::make_shared<std::chrono::steady_clock::time_point>();
    auto mutex = std::make_shared<std::mutex>();
    options.progress = [last, mutex](std::size_t done, std::size_t total, std::size_t successes) {
      std::lock_guard lock(*mutex);
      const auto now = std::chrono::steady_clock::now();
      if (done != total && now - *last < std::chrono::milliseconds(100)) return;
      *last = now;
      std::cerr << "\raegis redteam: " << done << "/" << total << " attempts, " << successes << " successful" << std::flush;
      if (done == total) std::cerr << "\n";
    };
  }
  if (!flags.resume && std::filesystem::exists(std::filesystem::path(flags.out) / "transcript.jsonl") && !flags.quiet)
    std::cerr << "aegis redteam: starting a new transcript in " << flags.out << " (use --resume to continue the old one)\n";

  const auto report = redteam::run_campaign(options);
  if (flags.format == "json") {
    std::cout << redteam::report_json(report);
  } else {
    std::cout << "aegis redteam: " << report.target << (report.model.empty() ? "" : " (" + report.model + ")") << "\n";
    std::cout << "attempts: " << report.completed << " completed (" << report.ran << " this run, " << report.skipped
              << " resumed), " << report.successes << " successful";
    if (report.errors) std::cout << ", " << report.errors << " without an answer (rerun with --resume)";
    std::cout << "\n\n" << std::left << std::setw(28) << "family" << std::setw(15) << "ATLAS" << std::right << std::setw(9)
              << "attempts" << std::setw(11) << "successes" << std::setw(8) << "ASR" << "\n";
    for (const auto& f : report.families)
      std::cout << std::left << std::setw(28) << f.key << std::setw(15) << f.atlas << std::right << std::setw(9) << f.attempts
                << std::setw(11) << f.successes << std::setw(7) << std::fixed << std::setprecision(1) << f.asr() * 100 << "%\n";
    if (report.transforms.size() > 1) {
      std::cout << "\n" << std::left << std::setw(43) << "transforms" << std::right << std::setw(9) << "attempts" << std::setw(11)
                << "successes" << std::setw(8) << "ASR" << "\n";
      for (const auto& t : report.transforms)
        std::cout << std::left << std::setw(43) << t.key << std::right << std::setw(9) << t.attempts << std::setw(11) << t.successes
                  << std::setw(7) << std::fixed << std::setprecision(1) << t.asr() * 100 << "%\n";
    }
    std::cout << "\nreport: " << (std::filesystem::path(flags.out) / "report.md").string() << ", "
              << (std::filesystem::path(flags.out) / "report.json").string() << "; transcript: "
              << (std::filesystem::path(flags.out) / "transcript.jsonl").string() << "\n";
  }
  return report.successes > 0 ? 1 : 0;
}

}  // namespace

void register_redteam_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<RedteamFlags>();
  auto* c = app.add_subcommand(
      "redteam",
      "Red-team an OpenAI-compatible chat endpoint (vLLM, llama.cpp, Ollama /v1, hosted APIs): prompt injection, "
      "jailbreaks, system-prompt extraction, canary leakage, package hallucination, encoded and rendering attacks, "
      "mapped to MITRE ATLAS. Exit 1 when any attack succeeded, 2 on usage or connection errors.");
  c->add_option("--target", flags->target, "OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1 (POST {URL}/chat/completions)");
  c->add_option("--model", flags->model, "model name sent with each request");
  c->add_option("--api-key-env", flags->api_key_env, "environment variable holding the API key (sent as a Bearer token)");
  c->add_option("--system-prompt", flags->system_prompt_file,
                "file with the system prompt to send (a canary is planted in it); default: a built-in support-bot prompt");
  c->add_flag("--no-canary", flags->no_canary, "do not plant a canary token in the system prompt");
  c->add_option("--probes", flags->probes,
                "comma list of families, probe ids, id prefixes ending in '*', or YAML probe files (default: all built-in)");
  c->add_option("--transforms", flags->transforms,
                "comma list of transform chains applied to every probe, e.g. none,base64,rot13+base64,roleplay (default none)");
  c->add_option("--jailbreakbench", flags->jailbreakbench, "JailbreakBench attack-artifacts folder: its goals join the harmful behaviours");
  c->add_option("--max-behaviors", flags->max_behaviors, "use at most this many JailbreakBench goals");
  c->add_option("--known-packages", flags->known_packages, "file of real package names (one a line) for the package-hallucination detector");
  c->add_option("--allow-host", flags->allow_hosts, "host that markdown links may point to (repeatable; subdomains included)");
  c->add_option("--judge", flags->judge, "OpenAI-compatible base URL of an LLM judge for harmful-request answers");
  c->add_option("--judge-model", flags->judge_model, "the judge's model name (default: --model)");
  c->add_option("--judge-api-key-env", flags->judge_api_key_env, "environment variable holding the judge's API key");
  c->add_option("--concurrency", flags->concurrency, "requests in flight at once, one keep-alive connection each (default 4)");
  c->add_option("--rate", flags->rate, "global request rate limit: 10, 10/s, 600/m (default: none)");
  c->add_option("--retries", flags->retries, "extra tries after connect errors, timeouts, 429 and 5xx, with backoff (default 3)");
  c->add_option("--timeout-ms", flags->timeout_ms, "per-request time limit in milliseconds (default 60000)");
  c->add_option("--max-tokens", flags->max_tokens, "max_tokens sent with each request (default: not sent)");
  c->add_option("--temperature", flags->temperature, "sampling temperature sent with each request (default 0)");
  c->add_flag("--stream", flags->stream, "ask for streamed (SSE) answers");
  c->add_option("--ca-file", flags->ca_file, "extra trusted CA certificate (PEM) for https targets");
  c->add_option("--out", flags->out, "folder for transcript.jsonl, report.json and report.md (default aegis-redteam)");
  c->add_flag("--resume", flags->resume, "continue the transcript in --out: attempts already there are skipped");
  c->add_option("--max-attempts", flags->max_attempts, "run at most this many new attempts, then stop (continue with --resume)");
  c->add_option("--seed", flags->seed, "seed of the randomised transforms; part of each attempt's key (default 1)");
  c->add_option("--format", flags->format, "summary on stdout: text or json (default text)");
  c->add_option("--data-dir", flags->data_dir, "read the probe catalog from this folder instead of the built-in one");
  c->add_flag("--list", flags->list, "list the probe families, transforms and probes, then exit");
  c->add_flag("--quiet,-q", flags->quiet, "no progress line");
  c->callback([flags, &exit_code] { exit_code = run_redteam(*flags); });
}

}  // namespace aegis::cli
