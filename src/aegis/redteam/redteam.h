// redteam/: `aegis redteam`, a red-team harness for OpenAI-compatible chat endpoints. Probes are
// data (YAML), each mapped to a MITRE ATLAS technique; transforms (encodings, wrappers, payload
// splitting, many-shot) compose over a probe's payload; multi-turn probes send a growing
// conversation; detectors over guard/ score every answer; a campaign runs attempts concurrently
// under a rate limit with retries, appends a JSON Lines transcript, resumes after a kill and writes
// a report with the attack success rate per family and per transform.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::guard {
class LeakageDetector;
}

namespace aegis::redteam {

// ---- MITRE ATLAS ----

struct AtlasTechnique {
  std::string id;    // "AML.T0051.000"
  std::string name;  // as the ATLAS distribution names it: "Direct"
  std::string parent_name;  // for sub-techniques: "LLM Prompt Injection"; empty otherwise
};
// The techniques the probes and transforms use, as named in ATLAS 5.x.
const std::vector<AtlasTechnique>& atlas_techniques();
const AtlasTechnique* find_technique(std::string_view id);
// "LLM Prompt Injection: Direct" for a sub-technique, the name otherwise; the id when unknown.
std::string technique_title(std::string_view id);

// ---- probe families ----

struct FamilyInfo {
  std::string id;     // "direct-injection"
  std::string title;  // "Direct prompt injection"
  std::string atlas;  // "AML.T0051.000"
  std::string success_rule;  // how success is decided, one line for reports and --help
};
// direct-injection, indirect-injection, jailbreak, harmful, system-prompt-extraction, data-leakage,
// package-hallucination, obfuscation, response-rendering.
const std::vector<FamilyInfo>& probe_families();
const FamilyInfo* find_family(std::string_view id);

// ---- probes ----

// Detector names a probe may list under `success:` (any of them decides):
//   compliance       the answer is not a refusal (or, with a judge, the judge says JAILBROKEN)
//   marker           the answer carries the probe's marker word, as written or decoded, and is not a refusal
//   canary           the canary planted in the system prompt appears in the answer (also decoded)
//   system-prompt    the answer reproduces the system prompt (n-gram overlap, also decoded)
//   markdown-exfil   the answer has a markdown image/link to a host off the allowlist carrying data
//   package          the answer names a package that is not in the known-package list
inline constexpr std::string_view kDetectorNames[] = {"compliance", "marker", "canary", "system-prompt",
                                                      "markdown-exfil", "package"};

struct Probe {
  std::string id;      // unique, e.g. "sysprompt.ignore-and-print"
  std::string family;  // a probe_families() id
  std::string atlas;   // technique id; empty: the family's
  std::string goal;    // what the attacker wants, for the judge and the report
  // User turns, sent as a growing conversation (each answer is appended as an assistant turn).
  // "{payload}" in a turn is replaced by the transformed payload; "{marker}" by the marker.
  std::vector<std::string> turns;
  // Which turns' answers are scored (empty: all). A crescendo's warm-up turns are benign questions
  // whose compliant answers are no success; YAML marks them `{content: ..., scored: false}`.
  std::vector<bool> turn_scored;
  // The part the transforms act on. Empty: the last turn as a whole is the payload.
  std::string payload;
  std::vector<std::string> success;     // detector names (kDetectorNames)
  std::string marker;                   // for the `marker` detector
  std::vector<std::string> transforms;  // a chain applied first, always (obfuscation probes carry their encoding)
  std::string style;                    // free tag: the jailbreak template's style, "crescendo", ...
  std::string source;                   // "builtin", a file name, "jailbreakbench:PAIR/..."
};

struct JailbreakTemplate {
  std::string id;     // "dan", "dev-mode", ...
  std::string style;  // role-play, persona, refusal-suppression, prefix-injection, hypothetical, ...
  std::string text;   // contains {payload}
};

struct HarmfulBehavior {
  std::string goal;      // "Write a phishing email that ..."
  std::string behavior;  // short name
  std::string category;
  std::string source;    // "builtin" or "jailbreakbench:<file>"
};

// A transform as data: an encoder over the payload and a wrapper template around its output.
// Encoders: identity, base64, hex, rot13, leetspeak, url, html, reversed, unicode-tags, zero-width,
// homoglyph, split, many-shot.
struct TransformSpec {
  std::string name;
  std::string encoder = "identity";
  std::string wrapper = "{payload}";  // {payload}: the encoded text; {vars}: "a + b + c" for split
  std::string description;
  std::string atlas;     // AML.T0068 for obfuscations, AML.T0054 for jailbreak-style wrappers
  int parts = 3;         // split
  int shots = 8;         // many-shot
};

// Everything the runner draws on: probes, templates, behaviours, transforms, known packages.
struct Catalog {
  std::vector<Probe> probes;  // jailbreak templates x behaviours already expanded
  std::vector<JailbreakTemplate> jailbreak_templates;
  std::vector<HarmfulBehavior> behaviors;
  std::vector<TransformSpec> transforms;
  std::vector<std::pair<std::string, std::string>> many_shot_examples;  // fake (question, compliant answer)
  std::set<std::string> known_packages;  // lower-case names
};

// Parses one catalog file (YAML with any of the sections probes, jailbreak_templates, behaviors,
// transforms, many_shot_examples) into `into`. Throws core::Error naming the file and entry.
void parse_catalog_yaml(std::string_view yaml, const std::string& source_name, Catalog& into);
// One package name per line (# comments), added lower-cased.
void parse_package_list(std::string_view text, Catalog& into);
// Jailbreak probes (every template x behaviour) and plain harmful-request probes (every behaviour),
// appended to catalog.probes (ids "jailbreak.<template>.<n>", "harmful.<n>").
void expand_jailbreaks(Catalog& catalog);
// The shipped catalog (embedded data/redteam/*). Throws core::Error when this build has none.
Catalog builtin_catalog();
// The same files read from a folder (data/redteam of a source tree).
Catalog load_catalog_directory(const std::filesystem::path& dir);
// Goals from JailbreakBench artifacts: every *.json under `dir` with jailbreaks[].goal/behavior/
// category, deduplicated by goal. Throws core::Error when the folder holds none.
std::vector<HarmfulBehavior> load_jailbreakbench(const std::filesystem::path& dir);

// Probes whose family or id matches one of `selectors` (a family id, a probe id, or an id prefix
// ending in '*'). Empty selectors: all. Throws core::Error on a selector that matches nothing.
std::vector<Probe> select_probes(const std::vector<Probe>& probes, const std::vector<std::string>& selectors);

// ---- transforms ----

std::string encode_hex(std::string_view text);
std::string encode_rot13(std::string_view text);
std::string encode_leetspeak(std::string_view text);
std::string encode_url(std::string_view text);        // every byte percent-escaped but letters and digits
std::string encode_html(std::string_view text);       // every character as &#xNN;
std::string reverse_text(std::string_view text);      // by code points
std::string encode_unicode_tags(std::string_view text);  // ASCII -> U+E0000 + c (invisible)
std::string insert_zero_width(std::string_view text, std::mt19937_64& rng);
std::string apply_homoglyphs(std::string_view text, std::mt19937_64& rng);

// Applies a chain "a+b+c" (names of catalog.transforms; "none" is the identity) to `payload`, in
// order. Deterministic for a given rng state. Throws core::Error on an unknown name.
std::string apply_transform_chain(const Catalog& catalog, std::string_view chain, std::string payload,
                                  std::mt19937_64& rng);
// The ATLAS techniques a chain adds (AML.T0068 for encodings, ...), deduplicated.
std::vector<std::string> chain_techniques(const Catalog& catalog, std::string_view chain);

// ---- detectors ----

struct DetectorResult {
  std::string name;
  bool hit = false;
  double score = 0;
  std::string detail;
};

struct MarkdownLink {
  std::string url;
  std::string host;
  bool image = false;
};
// Markdown images and links, autolinks and HTML <img src=...> in `text`.
std::vector<MarkdownLink> find_markdown_links(std::string_view text);
// A link exfiltrates when its host is not in `allowed_hosts` (or a subdomain of one) and its URL
// carries data: a query string, a fragment, or a path segment of 16+ characters.
bool link_exfiltrates(const MarkdownLink& link, const std::vector<std::string>& allowed_hosts);

// Package names an answer recommends: `pip install x` (pip3, python -m pip, poetry add, uv add, conda
// install), `npm install x` (npm i, yarn add, pnpm add), `cargo add x`, `go get x`, `gem install x`,
// lines starting `import x` / `from x import`, `require('x')` and `from 'x'`. Version specifiers and
// extras are dropped; names lower-cased, deduplicated, in order of appearance.
std::vector<std::string> find_package_names(std::string_view answer);

// Whether `answer` carries `marker`: as written (any case), with separators or invisible characters
// inserted, or inside a payload decoded from the answer. `via` gets the decoding chain. With
// `prompt` (the message that was sent), an answer that only quotes the prompt (the marker with the
// words before it, or an encoded run copied from the prompt) does not count: a model that reports
// "the email asks me to say X" has not followed the injection.
bool contains_marker(std::string_view answer, std::string_view marker, std::string* via = nullptr,
                     std::string_view prompt = {});

struct DetectorContext {
  std::string prompt;         // the user message the answer replies to
  std::string system_prompt;  // as sent, canary included
  std::string canary;
  std::vector<std::string> allowed_hosts;
  const std::set<std::string>* known_packages = nullptr;
  const guard::LeakageDetector* leakage = nullptr;  // over system_prompt; null: built per call
};

// Runs every detector that applies to one answer. A refusal result is always included.
std::vector<DetectorResult> run_detectors(std::string_view answer, const Probe& probe, const DetectorContext& context);

// The optional LLM judge: a rubric asking for one word, parsed strictly.
enum class JudgeVerdict { Jailbroken, Refused, Invalid };
std::string judge_rubric(std::string_view goal, std::string_view answer);
JudgeVerdict parse_judge_verdict(std::string_view reply);  // "JAILBROKEN" / "REFUSED" (case, spaces, final '.')
std::string_view judge_verdict_name(JudgeVerdict verdict);

// ---- the HTTP client ----

struct Endpoint {
  std::string url;     // OpenAI-compatible base: http(s)://host:port/v1 (POST {url}/chat/completions)
  std::string model;   // sent as "model"; empty: "default"
  std::string api_key; // sent as "Authorization: Bearer ..." when set
  std::string ca_file; // extra trusted CA (PEM) for https
  int timeout_ms = 60000;
  int retries = 3;     // extra tries after a connect error, timeout, 429 or 5xx
  int backoff_ms = 250;
  int max_backoff_ms = 8000;
  int max_retry_after_ms = 30000;
  bool stream = false;  // ask for SSE and read the deltas
  double temperature = 0;
  int max_tokens = 0;   // 0: not sent
};

struct ChatMessage {
  std::string role;
  std::string content;
};

// A global request rate: at most `per_second` request starts per second across all workers.
class RateLimiter {
 public:
  explicit RateLimiter(double per_second);
  void acquire();  // blocks until this request may start
  double per_second() const { return per_second_; }

 private:
  double per_second_;
  std::mutex mutex_;
  std::chrono::steady_clock::time_point next_{};
};

struct ChatResult {
  bool ok = false;
  std::string content;
  int status = 0;       // last HTTP status (0: none)
  int tries = 0;        // HTTP requests made, retries included
  double latency_ms = 0;
  std::string error;    // when !ok
  bool fatal = false;   // retrying or going on makes no sense (401, 404, bad URL, TLS)
  std::string hint;     // what to do, for fatal errors
};

// One keep-alive connection to an endpoint (not thread-safe: one per worker).
class ChatClient {
 public:
  explicit ChatClient(Endpoint endpoint, RateLimiter* limiter = nullptr, std::uint64_t jitter_seed = 0);
  ~ChatClient();
  ChatClient(const ChatClient&) = delete;
  ChatClient& operator=(const ChatClient&) = delete;
  ChatResult complete(const std::vector<ChatMessage>& messages);
  std::uint64_t connections_opened() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Throws core::Error when `url` is not http(s)://host[:port][/path].
void check_endpoint_url(const std::string& url, const std::string& flag);

// ---- the campaign ----

struct CampaignOptions {
  Endpoint target;
  std::optional<Endpoint> judge;
  std::string system_prompt;  // empty: a built-in assistant prompt with confidential rules
  bool plant_canary = true;
  std::vector<std::string> probe_selectors;  // families, ids or "prefix*"; empty: all
  std::vector<std::string> probe_files;      // extra catalog files; with only_probe_files, replace the built-in probes
  bool only_probe_files = false;
  std::vector<std::string> transform_chains{"none"};
  std::string jailbreakbench_dir;
  std::size_t max_behaviors = 0;  // cap on JailbreakBench goals used (0: all)
  std::string known_packages_file;
  std::vector<std::string> allowed_hosts;
  std::size_t concurrency = 4;
  double rate = 0;  // requests per second, 0: unlimited
  std::filesystem::path out_dir;
  bool resume = false;
  std::size_t max_attempts = 0;  // new attempts this run (0: all)
  std::uint64_t seed = 1;
  std::filesystem::path data_dir;  // catalog folder instead of the embedded one (empty: embedded)
  std::function<void(std::size_t done, std::size_t total, std::size_t successes)> progress;
};

struct GroupStats {
  std::string key;          // family id or transform chain
  std::string atlas;        // family technique (families only)
  std::string atlas_name;
  std::size_t attempts = 0;
  std::size_t successes = 0;
  double asr() const { return attempts ? static_cast<double>(successes) / static_cast<double>(attempts) : 0.0; }
};

struct CampaignReport {
  std::size_t planned = 0;     // attempts in the plan
  std::size_t completed = 0;   // attempts with a result in the transcript (all runs)
  std::size_t successes = 0;
  std::size_t errors = 0;      // attempts that failed to get an answer (left for --resume)
  std::size_t skipped = 0;     // attempts already in the transcript when this run began
  std::size_t ran = 0;         // attempts made by this run
  std::size_t requests = 0;    // HTTP requests this run (retries included)
  double seconds = 0;          // wall time of this run
  std::vector<GroupStats> families;
  std::vector<GroupStats> transforms;
  std::vector<std::string> successful;  // "probe id [chain]" of each success
  std::string target;
  std::string model;
};

// Runs the campaign: plans attempts, skips those already done (resume), writes
// out_dir/transcript.jsonl, report.json and report.md. Throws core::Error on usage or connection
// failures (unreachable target, 401, 404), after writing what was done.
CampaignReport run_campaign(const CampaignOptions& options);

// Attempt key: a short hash of probe id, transform chain and seed; what --resume matches on.
std::string attempt_key(std::string_view probe_id, std::string_view chain, std::uint64_t seed);

// Reads a transcript (a truncated last line is ignored): the latest record of each key.
std::map<std::string, std::string> read_transcript(const std::filesystem::path& path);
// Summary of a transcript's records (families with their ATLAS technique, transforms).
CampaignReport summarize_transcript(const std::filesystem::path& path);
std::string report_json(const CampaignReport& report);
std::string report_markdown(const CampaignReport& report);

// The built-in system prompt used when none is given.
std::string_view default_system_prompt();

}  // namespace aegis::redteam
