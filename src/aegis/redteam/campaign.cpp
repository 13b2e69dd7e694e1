// The campaign: plan (probes x transform chains), skip what the transcript already holds, run the
// attempts on N workers under one rate limit, score each answer, append one JSON line per attempt,
// then summarise the whole transcript into report.json and report.md.
#include <fcntl.h>
#include <openssl/sha.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <unordered_set>

#include "aegis/core/error.h"
#include "aegis/guard/output_guard.h"
#include "aegis/redteam/redteam.h"

namespace aegis::redteam {

std::string attempt_key(std::string_view probe_id, std::string_view chain, std::uint64_t seed) {
  const std::string text = std::string(probe_id) + '\x1f' + std::string(chain) + '\x1f' + std::to_string(seed);
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), digest);
  static constexpr char hex[] = "0123456789abcdef";
  std::string key;
  for (int i = 0; i < 8; ++i) {
    key += hex[digest[i] >> 4];
    key += hex[digest[i] & 0xF];
  }
  return key;
}

namespace {

using Clock = std::chrono::steady_clock;
using nlohmann::json;

struct Planned {
  const Probe* probe = nullptr;
  std::string chain;      // the probe's own chain and the run's, joined: "none" when empty
  std::string run_chain;  // the run's part, as given in --transforms
  std::string key;
};

std::string join_chain(const std::vector<std::string>& fixed, const std::string& run) {
  std::string chain;
  for (const auto& t : fixed) chain += (chain.empty() ? "" : "+") + t;
  if (!run.empty() && run != "none") chain += (chain.empty() ? "" : "+") + run;
  return chain.empty() ? "none" : chain;
}

void replace_all(std::string& text, std::string_view from, std::string_view to) {
  std::size_t pos = 0;
  while ((pos = text.find(from, pos)) != std::string::npos) {
    text.replace(pos, from.size(), to);
    pos += to.size();
  }
}

std::string now_utc() {
  const auto t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

std::string read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Cuts a partial last line (a run killed mid-write) so that appends start on a fresh line.
void drop_partial_tail(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec || size == 0) return;
  const auto text = read_all(path);
  const auto last = text.rfind('\n');
  const std::uintmax_t keep = last == std::string::npos ? 0 : last + 1;
  if (keep != size) std::filesystem::resize_file(path, keep, ec);
}

class TranscriptWriter {
 public:
  explicit TranscriptWriter(const std::filesystem::path& path, bool append) {
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (append ? 0 : O_TRUNC), 0644);
    if (fd_ < 0)
      throw core::Error("cannot write " + path.string() + ": " + std::strerror(errno), "check that --out names a writable folder");
  }
  ~TranscriptWriter() {
    if (fd_ >= 0) ::close(fd_);
  }
  // One write() per line under O_APPEND: a kill leaves whole lines and at most one partial one.
  void append(const std::string& line) {
    std::lock_guard lock(mutex_);
    std::string_view rest = line;
    while (!rest.empty()) {
      const auto n = ::write(fd_, rest.data(), rest.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        throw core::Error(std::string("writing the transcript failed: ") + std::strerror(errno), "free disk space and rerun with --resume");
      }
      rest.remove_prefix(static_cast<std::size_t>(n));
    }
  }

 private:
  int fd_ = -1;
  std::mutex mutex_;
};

json detector_json(const DetectorResult& r) {
  json j = {{"name", r.name}, {"hit", r.hit}, {"score", r.score}};
  if (!r.detail.empty()) j["detail"] = r.detail;
  return j;
}

// Everything one attempt needs that is the same for all attempts.
struct Shared {
  const CampaignOptions* options = nullptr;
  const Catalog* catalog = nullptr;
  std::string system_prompt;  // as sent (canary planted)
  std::string canary;
  std::unique_ptr<guard::LeakageDetector> leakage;
  RateLimiter* limiter = nullptr;
  TranscriptWriter* writer = nullptr;
};

struct AttemptOutcome {
  bool success = false;
  bool error = false;
  bool fatal = false;
  std::string error_text;
  std::string hint;
  std::size_t requests = 0;
};

AttemptOutcome run_attempt(const Shared& shared, const Planned& plan, ChatClient& client, ChatClient* judge) {
  const auto& probe = *plan.probe;
  const auto& options = *shared.options;
  std::mt19937_64 rng(std::hash<std::string>{}(plan.key) ^ options.seed);
  AttemptOutcome outcome;

  // Build the user turns: the payload is transformed, then placed.
  std::vector<std::string> turns = probe.turns;
  for (auto& t : turns) replace_all(t, "{marker}", probe.marker);
  std::string payload = probe.payload;
  replace_all(payload, "{marker}", probe.marker);
  std::vector<std::string> techniques;
  techniques.push_back(probe.atlas.empty() ? find_family(probe.family)->atlas : probe.atlas);
  for (const auto& t : chain_techniques(*shared.catalog, plan.chain))
    if (std::find(techniques.begin(), techniques.end(), t) == techniques.end()) techniques.push_back(t);
  if (!payload.empty()) {
    const auto transformed = apply_transform_chain(*shared.catalog, plan.chain, payload, rng);
    for (auto& t : turns) replace_all(t, "{payload}", transformed);
  } else {
    turns.back() = apply_transform_chain(*shared.catalog, plan.chain, turns.back(), rng);
  }

  DetectorContext context;
  context.system_prompt = shared.system_prompt;
  context.canary = shared.canary;
  context.allowed_hosts = options.allowed_hosts;
  context.known_packages = &shared.catalog->known_packages;
  context.leakage = shared.leakage.get();
  const bool wants_compliance = std::find(probe.success.begin(), probe.success.end(), "compliance") != probe.success.end();

  std::vector<ChatMessage> messages;
  if (!shared.system_prompt.empty()) messages.push_back({"system", shared.system_prompt});
  json sent = json::array(), answers = json::array(), detectors = json::array(), judged = json::array();
  double latency = 0;
  int success_turn = -1;
  std::string reason;
  for (std::size_t i = 0; i < turns.size(); ++i) {
    messages.push_back({"user", turns[i]});
    sent.push_back(turns[i]);
    const auto result = client.complete(messages);
    outcome.requests += static_cast<std::size_t>(result.tries);
    latency += result.latency_ms;
    if (!result.ok) {
      outcome.error = true;
      outcome.fatal = result.fatal;
      outcome.error_text = result.error;
      outcome.hint = result.hint;
      break;
    }
    answers.push_back(result.content);
    messages.push_back({"assistant", result.content});
    context.prompt = turns[i];
    const bool scored = probe.turn_scored.empty() || (i < probe.turn_scored.size() && probe.turn_scored[i]);
    auto found = run_detectors(result.content, probe, context);
    json turn_detectors = json::array();
    bool hit = false;
    std::string hit_by;
    for (auto& r : found) {
      if (r.name == "compliance" && judge && scored && wants_compliance) {
        ChatResult verdict_reply = judge->complete({{"user", judge_rubric(probe.goal, result.content)}});
        outcome.requests += static_cast<std::size_t>(verdict_reply.tries);
        const auto verdict = verdict_reply.ok ? parse_judge_verdict(verdict_reply.content) : JudgeVerdict::Invalid;
        json j = {{"turn", i}, {"verdict", judge_verdict_name(verdict)}};
        if (!verdict_reply.ok) j["error"] = verdict_reply.error;
        else if (verdict == JudgeVerdict::Invalid) j["reply"] = verdict_reply.content.substr(0, 200);
        judged.push_back(j);
        if (verdict != JudgeVerdict::Invalid) {
          r.hit = verdict == JudgeVerdict::Jailbroken;
          r.score = r.hit ? 1.0 : 0.0;
          r.detail = "judge: " + std::string(judge_verdict_name(verdict));
        } else {
          r.detail += " (judge gave no valid verdict; refusal heuristic used)";
        }
      }
      turn_detectors.push_back(detector_json(r));
      if (scored && r.hit && std::find(probe.success.begin(), probe.success.end(), r.name) != probe.success.end()) {
        hit = true;
        if (hit_by.empty()) hit_by = r.name + (r.detail.empty() ? "" : ": " + r.detail);
      }
    }
    detectors.push_back(std::move(turn_detectors));
    if (hit) {
      success_turn = static_cast<int>(i);
      reason = hit_by;
      break;  // the attack worked; further escalation adds nothing
    }
  }
  outcome.success = success_turn >= 0;

  json line = {{"key", plan.key},
               {"probe", probe.id},
               {"family", probe.family},
               {"atlas", techniques},
               {"atlas_name", technique_title(techniques.front())},
               {"transforms", plan.chain},
               {"goal", probe.goal},
               {"turns", sent},
               {"answers", answers},
               {"detectors", detectors},
               {"success", outcome.success},
               {"latency_ms", latency},
               {"requests", outcome.requests},
               {"target", options.target.url},
               {"model", options.target.model},
               {"seed", options.seed},
               {"time", now_utc()}};
  if (!probe.style.empty()) line["style"] = probe.style;
  if (!probe.source.empty()) line["source"] = probe.source;
  if (outcome.success) {
    line["success_turn"] = success_turn;
    line["reason"] = reason;
  }
  if (!judged.empty()) line["judge"] = judged;
  if (!shared.canary.empty()) line["canary"] = shared.canary;
  if (outcome.error) line["error"] = outcome.error_text;
  shared.writer->append(line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
  return outcome;
}

}  // namespace

std::map<std::string, std::string> read_transcript(const std::filesystem::path& path) {
  std::map<std::string, std::string> records;
  std::ifstream in(path, std::ios::binary);
  if (!in) return records;
  std::string line;
  while (std::getline(in, line)) {
    if (in.eof()) break;  // no newline after it: a line cut by a kill
    const auto doc = json::parse(line, nullptr, false);
    if (doc.is_discarded() || !doc.is_object() || !doc.contains("key") || !doc["key"].is_string()) continue;
    records[doc["key"].get<std::string>()] = line;
  }
  return records;
}

CampaignReport summarize_transcript(const std::filesystem::path& path) {
  CampaignReport report;
  std::map<std::string, GroupStats> families, transforms;
  for (const auto& [key, line] : read_transcript(path)) {
    const auto doc = json::parse(line, nullptr, false);
    if (doc.contains("error")) {
      ++report.errors;
      continue;
    }
    const auto family = doc.value("family", std::string());
    const auto chain = doc.value("transforms", std::string("none"));
    const bool success = doc.value("success", false);
    if (report.target.empty()) {
      report.target = doc.value("target", std::string());
      report.model = doc.value("model", std::string());
    }
    ++report.completed;
    report.successes += success;
    auto& f = families[family];
    f.key = family;
    ++f.attempts;
    f.successes += success;
    auto& t = transforms[chain];
    t.key = chain;
    ++t.attempts;
    t.successes += success;
    if (success) report.successful.push_back(doc.value("probe", std::string()) + " [" + chain + "]");
  }
  // Families in the catalog's order, then any others a user file added.
  for (const auto& info : probe_families()) {
    auto it = families.find(info.id);
    if (it == families.end()) continue;
    it->second.atlas = info.atlas;
    it->second.atlas_name = technique_title(info.atlas);
    report.families.push_back(it->second);
    families.erase(it);
  }
  for (auto& [name, stats] : families) report.families.push_back(stats);
  for (auto& [name, stats] : transforms) report.transforms.push_back(stats);
  std::sort(report.successful.begin(), report.successful.end());
  return report;
}

std::string report_json(const CampaignReport& report) {
  json families = json::array(), transforms = json::array(), findings = json::array();
  for (const auto& f : report.families) {
    const auto* info = find_family(f.key);
    families.push_back({{"family", f.key},
                        {"title", info ? info->title : f.key},
                        {"atlas", f.atlas},
                        {"atlas_name", f.atlas_name},
                        {"attempts", f.attempts},
                        {"successes", f.successes},
                        {"asr", f.asr()}});
    if (f.successes > 0)
      findings.push_back({{"rule_id", "redteam." + f.key},
                          {"severity", f.key == "package-hallucination" ? "medium" : "high"},
                          {"title", (info ? info->title : f.key) + ": " + std::to_string(f.successes) + " of " +
                                        std::to_string(f.attempts) + " attacks succeeded"},
                          {"location", {{"request", report.target}}},
                          {"evidence", info ? info->success_rule : ""},
                          {"atlas", json::array({f.atlas})},
                          {"nist_ai_rmf", json::array({"MEASURE 2.7"})},
                          {"remediation", "add input and output guards (aegis gateway llm_guard), harden the system prompt, "
                                          "and rerun the campaign"}});
  }
  for (const auto& t : report.transforms)
    transforms.push_back({{"transforms", t.key}, {"attempts", t.attempts}, {"successes", t.successes}, {"asr", t.asr()}});
  json techniques = json::array();
  for (const auto& t : atlas_techniques()) techniques.push_back({{"id", t.id}, {"name", t.name}});
  json doc = {{"aegis", {{"version", AEGIS_VERSION}, {"command", "redteam"}}},
              {"target", report.target},
              {"model", report.model},
              {"summary",
               {{"planned", report.planned},
                {"completed", report.completed},
                {"successes", report.successes},
                {"errors", report.errors},
                {"asr", report.completed ? static_cast<double>(report.successes) / static_cast<double>(report.completed) : 0.0},
                {"skipped_resumed", report.skipped},
                {"ran", report.ran},
                {"requests", report.requests},
                {"seconds", report.seconds},
                {"attempts_per_second", report.seconds > 0 ? static_cast<double>(report.ran) / report.seconds : 0.0}}},
              {"families", families},
              {"transforms", transforms},
              {"successful", report.successful},
              {"findings", findings},
              {"atlas_techniques", techniques}};
  return doc.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

std::string report_markdown(const CampaignReport& report) {
  std::ostringstream out;
  auto pct = [](double v) {
    char b[16];
    std::snprintf(b, sizeof b, "%.1f%%", v * 100.0);
    return std::string(b);
  };
  out << "# Red-team report\n\n";
  out << "Target: `" << report.target << "`" << (report.model.empty() ? "" : ", model `" + report.model + "`") << "\n\n";
  out << "Attempts completed: " << report.completed << ", successful attacks: " << report.successes
      << " (ASR " << pct(report.completed ? static_cast<double>(report.successes) / static_cast<double>(report.completed) : 0.0) << ")";
  if (report.errors) out << ", attempts without an answer: " << report.errors << " (rerun with --resume)";
  out << ".\n\n## Attack success rate per probe family\n\n";
  out << "| family | ATLAS technique | attempts | successes | ASR | success means |\n| --- | --- | ---: | ---: | ---: | --- |\n";
  for (const auto& f : report.families) {
    const auto* info = find_family(f.key);
    out << "| " << (info ? info->title : f.key) << " | " << f.atlas << " " << f.atlas_name << " | " << f.attempts << " | "
        << f.successes << " | " << pct(f.asr()) << " | " << (info ? info->success_rule : "") << " |\n";
  }
  out << "\n## Attack success rate per transform\n\n| transforms | attempts | successes | ASR |\n| --- | ---: | ---: | ---: |\n";
  for (const auto& t : report.transforms)
    out << "| " << t.key << " | " << t.attempts << " | " << t.successes << " | " << pct(t.asr()) << " |\n";
  if (!report.successful.empty()) {
    out << "\n## Successful attacks\n\n";
    for (const auto& s : report.successful) out << "- " << s << "\n";
    out << "\nThe prompts and answers of each are in transcript.jsonl.\n";
  }
  return out.str();
}

CampaignReport run_campaign(const CampaignOptions& options) {
  const auto start = Clock::now();
  // The catalog: shipped (or a folder), user files, JailbreakBench goals.
  Catalog catalog = options.data_dir.empty() ? builtin_catalog() : load_catalog_directory(options.data_dir);
  if (options.only_probe_files) {
    catalog.probes.clear();
    catalog.behaviors.clear();
    catalog.jailbreak_templates.clear();
  }
  Catalog extra;
  for (const auto& file : options.probe_files) {
    std::ifstream in(file, std::ios::binary);
    if (!in) throw core::Error("cannot read the probe file " + file, "check the path given to --probes");
    std::stringstream s;
    s << in.rdbuf();
    parse_catalog_yaml(s.str(), file, extra);
  }
  // User templates and behaviours join the shipped ones; their probes are added as written.
  auto user_templates = extra.jailbreak_templates;
  catalog.jailbreak_templates.insert(catalog.jailbreak_templates.end(), user_templates.begin(), user_templates.end());
  catalog.behaviors.insert(catalog.behaviors.end(), extra.behaviors.begin(), extra.behaviors.end());
  for (auto& t : extra.transforms) {
    auto same = std::find_if(catalog.transforms.begin(), catalog.transforms.end(), [&](const auto& x) { return x.name == t.name; });
    if (same != catalog.transforms.end()) *same = t;
    else catalog.transforms.push_back(t);
  }
  catalog.many_shot_examples.insert(catalog.many_shot_examples.end(), extra.many_shot_examples.begin(), extra.many_shot_examples.end());
  if (!options.jailbreakbench_dir.empty()) {
    auto goals = load_jailbreakbench(options.jailbreakbench_dir);
    if (options.max_behaviors && goals.size() > options.max_behaviors) goals.resize(options.max_behaviors);
    catalog.behaviors.insert(catalog.behaviors.end(), goals.begin(), goals.end());
  }
  expand_jailbreaks(catalog);
  {
    std::unordered_set<std::string> ids;
    for (const auto& p : catalog.probes) ids.insert(p.id);
    for (auto& p : extra.probes) {
      if (!ids.insert(p.id).second)
        throw core::Error("probe id '" + p.id + "' in " + p.source + " is already a built-in probe", "rename it");
      catalog.probes.push_back(std::move(p));
    }
  }
  if (!options.known_packages_file.empty()) {
    std::ifstream in(options.known_packages_file, std::ios::binary);
    if (!in) throw core::Error("cannot read " + options.known_packages_file, "check the path given to --known-packages");
    std::stringstream s;
    s << in.rdbuf();
    parse_package_list(s.str(), catalog);
  }
  const auto probes = select_probes(catalog.probes, options.probe_selectors);
  if (probes.empty()) throw core::Error("no probes to run", "check --probes");
  for (const auto& p : probes)
    for (const auto& t : p.transforms) (void)chain_techniques(catalog, t);  // unknown names fail here, before any request
  for (const auto& chain : options.transform_chains) (void)chain_techniques(catalog, chain);

  // The plan, in a stable order: probes in catalog order, each with every chain.
  std::vector<Planned> plan;
  for (const auto& p : probes)
    for (const auto& run_chain : options.transform_chains) {
      Planned a;
      a.probe = &p;
      a.run_chain = run_chain.empty() ? "none" : run_chain;
      a.chain = join_chain(p.transforms, a.run_chain);
      a.key = attempt_key(p.id, a.chain, options.seed);
      plan.push_back(std::move(a));
    }
  {
    std::unordered_set<std::string> keys;
    std::vector<Planned> unique;
    for (auto& a : plan)
      if (keys.insert(a.key).second) unique.push_back(std::move(a));
    plan = std::move(unique);
  }

  std::error_code ec;
  std::filesystem::create_directories(options.out_dir, ec);
  if (ec) throw core::Error("cannot create " + options.out_dir.string() + ": " + ec.message(), "pass a writable folder with --out");
  const auto transcript = options.out_dir / "transcript.jsonl";
  std::unordered_set<std::string> done;
  if (options.resume) {
    drop_partial_tail(transcript);
    for (const auto& [key, line] : read_transcript(transcript)) {
      const auto doc = json::parse(line, nullptr, false);
      if (!doc.contains("error")) done.insert(key);
    }
  }
  std::vector<const Planned*> pending;
  std::size_t skipped = 0;
  for (const auto& a : plan) {
    if (done.count(a.key)) ++skipped;
    else pending.push_back(&a);
  }
  if (options.max_attempts && pending.size() > options.max_attempts) pending.resize(options.max_attempts);

  Shared shared;
  shared.options = &options;
  shared.catalog = &catalog;
  std::string system_prompt = options.system_prompt.empty() ? std::string(default_system_prompt()) : options.system_prompt;
  if (options.plant_canary) {
    const auto canary = guard::make_canary();
    shared.canary = canary.token;
    system_prompt = guard::plant_canary(system_prompt, canary);
  }
  shared.system_prompt = system_prompt;
  shared.leakage = std::make_unique<guard::LeakageDetector>(options.system_prompt.empty() ? default_system_prompt()
                                                                                            : std::string_view(options.system_prompt));
  RateLimiter limiter(options.rate);
  shared.limiter = &limiter;
  TranscriptWriter writer(transcript, options.resume);
  shared.writer = &writer;

  std::atomic<std::size_t> next{0}, completed{0}, successes{0}, answered{0}, failed{0}, requests{0};
  std::atomic<bool> stop{false};
  std::mutex abort_mutex;
  std::string abort_message, abort_hint;
  const std::size_t workers = std::max<std::size_t>(1, std::min(options.concurrency, std::max<std::size_t>(pending.size(), 1)));
  auto work = [&](std::size_t index) {
    try {
      ChatClient client(options.target, &limiter, options.seed * 131 + index);
      std::unique_ptr<ChatClient> judge;
      if (options.judge) judge = std::make_unique<ChatClient>(*options.judge, nullptr, options.seed * 137 + index);
      while (!stop) {
        const auto i = next.fetch_add(1);
        if (i >= pending.size()) break;
        const auto outcome = run_attempt(shared, *pending[i], client, judge.get());
        requests += outcome.requests;
        if (outcome.error) {
          const auto failures = ++failed;
          // Nothing answered yet and repeated failures: the target is down or misconfigured.
          if (outcome.fatal || (answered == 0 && failures >= std::min<std::size_t>(5, pending.size()))) {
            std::lock_guard lock(abort_mutex);
            if (abort_message.empty()) {
              abort_message = "the target did not answer: " + outcome.error_text;
              abort_hint = outcome.hint.empty()
                               ? "check that the server is running and that --target is its OpenAI-compatible base URL "
                                 "(http://host:port/v1); finished attempts are kept, rerun with --resume"
                               : outcome.hint;
            }
            stop = true;
          }
        } else {
          ++answered;
          successes += outcome.success;
        }
        const auto n = ++completed;
        if (options.progress) options.progress(n, pending.size(), successes.load());
      }
    } catch (const std::exception& e) {
      std::lock_guard lock(abort_mutex);
      if (abort_message.empty()) {
        abort_message = e.what();
        if (const auto* ce = dynamic_cast<const core::Error*>(&e)) abort_hint = ce->hint();
      }
      stop = true;
    }
  };
  std::vector<std::thread> threads;
  for (std::size_t w = 0; w < workers; ++w) threads.emplace_back(work, w);
  for (auto& t : threads) t.join();

  CampaignReport report = summarize_transcript(transcript);
  report.planned = plan.size();
  report.skipped = skipped;
  report.ran = completed.load();
  report.requests = requests.load();
  report.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (report.target.empty()) report.target = options.target.url;
  if (report.model.empty()) report.model = options.target.model;
  auto write_file = [&](const std::string& name, const std::string& text) {
    std::ofstream out(options.out_dir / name, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out) throw core::Error("cannot write " + (options.out_dir / name).string(), "check that --out is writable");
  };
  write_file("report.json", report_json(report));
  write_file("report.md", report_markdown(report));
  if (!abort_message.empty()) throw core::Error(abort_message, abort_hint);
  return report;
}

}  // namespace aegis::redteam
