// Output guards for LLM completions: canary tokens planted in system prompts and found again in
// completions, system-prompt leakage by n-gram overlap with the configured prompt, PII and secrets
// through privacy::Detector (found and redacted), and refusal detection. Each check runs on the
// normalised completion and on the payloads decoded from it (a system prompt leaked as base64 or
// reversed text is still a leak). OutputStream does the same incrementally for streamed (SSE)
// completions without keeping the whole stream: it holds back only the bytes that could still be
// the start of a match.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "aegis/guard/decode.h"
#include "aegis/guard/text_normalize.h"

namespace aegis::privacy {
class Detector;
}

namespace aegis::guard {

// ---- canaries ----
struct Canary {
  std::string token;        // random, e.g. "cnry-5f1c9a0e7b2d4c83" (prefix + 16 hex digits from a CSPRNG)
  std::string instruction;  // the line planted in the system prompt, containing the token
};
Canary make_canary(std::string_view prefix = "cnry-");
// The system prompt with the canary's instruction appended on its own line.
std::string plant_canary(std::string_view system_prompt, const Canary& canary);
// Whether `completion` contains the token: as written, with separators or invisible characters
// inserted between its characters, in another case, or inside a decoded payload (base64, hex,
// reversed, ...). `via` receives the decoding chain ("" when found as written).
bool contains_canary(std::string_view completion, std::string_view token, std::string* via = nullptr);

// ---- system-prompt leakage ----
struct LeakageOptions {
  int ngram = 5;            // word n-grams (words of the normalised text)
  double threshold = 0.25;  // share of the prompt's n-grams found in the completion that counts as a leak
  std::size_t min_prompt_words = 8;  // shorter prompts compare by longest common word run instead
};
struct LeakageResult {
  double overlap = 0;          // share of the prompt's n-grams present in the completion, 0..1
  std::size_t longest_run = 0; // longest run of consecutive prompt words reproduced
  bool leaked = false;
  std::string via;             // decoding chain where the overlap was highest ("" = as written)
};
class LeakageDetector {
 public:
  LeakageDetector(std::string_view system_prompt, LeakageOptions options = {});
  LeakageResult check(std::string_view completion) const;
  const LeakageOptions& options() const { return options_; }
  std::size_t prompt_ngrams() const { return prompt_ngrams_.size(); }

 private:
  LeakageOptions options_;
  std::vector<std::string> prompt_words_;
  std::vector<std::uint64_t> prompt_ngrams_;  // sorted hashes
};

// ---- refusals ----
// "I can't help with that", "As an AI language model, I cannot ...", "I'm sorry, but ...": a rule
// set (data/guard/refusal_patterns.toml, same shape as the signature rules) over the normalised
// completion, weighted towards the start of the answer.
struct RefusalResult {
  bool refused = false;
  double score = 0;
  std::string rule;  // the pattern that decided
};
RefusalResult detect_refusal(std::string_view completion);

// ---- the whole output check ----
struct OutputGuardOptions {
  std::vector<std::string> system_prompts;  // leakage reference texts
  LeakageOptions leakage;
  bool pii = true;                          // PII and secrets through privacy::Detector
  std::vector<std::string> pii_entities;    // empty: all
  bool secrets = true;
  bool refusal = true;
};

struct OutputFinding {
  std::string kind;   // "canary" | "system-prompt-leak" | "pii" | "secret" | "refusal"
  std::string detail; // entity type, rule id, overlap figure, decoding chain
  std::size_t begin = 0, end = 0;  // span in the completion when known
  double score = 0;
};

struct OutputVerdict {
  bool canary_leaked = false;
  LeakageResult leakage;
  RefusalResult refusal;
  std::size_t pii_count = 0;
  std::size_t secret_count = 0;
  std::vector<OutputFinding> findings;
  // Leak of any kind (canary, system prompt, secret, PII): what a gateway blocks or redacts.
  bool leaked() const { return canary_leaked || leakage.leaked || secret_count > 0 || pii_count > 0; }
};

// Thread-safe after construction.
class OutputGuard {
 public:
  explicit OutputGuard(OutputGuardOptions options = {});
  ~OutputGuard();
  OutputGuard(const OutputGuard&) = delete;
  OutputGuard& operator=(const OutputGuard&) = delete;

  // `canaries`: the tokens planted for this exchange (may be empty).
  OutputVerdict check(std::string_view completion, const std::vector<std::string>& canaries = {}) const;
  // The completion with PII and secrets replaced by "[REDACTED:<ENTITY>]" and canary tokens by
  // "[REDACTED:CANARY]".
  std::string redact(std::string_view completion, const std::vector<std::string>& canaries = {}) const;
  const OutputGuardOptions& options() const;

  class Stream;
  // An incremental check of one streamed completion (one choice of an SSE stream).
  std::unique_ptr<Stream> stream(std::vector<std::string> canaries = {}) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Incremental state for one streamed completion. Memory is bounded: at most 256 bytes are held
// back, plus a few kilobytes of context and line buffers (constants in output_guard.cpp) and the
// running leakage n-gram state; the text already released is not kept.
class OutputGuard::Stream {
 public:
  virtual ~Stream() = default;
  // Adds the next piece of the completion. Returns the text that may be forwarded now, redacted
  // when `redact` is set (PII, secrets and canaries replaced); bytes that could still be the start
  // of a match are held back until a later feed() or finish().
  virtual std::string feed(std::string_view delta, bool redact) = 0;
  // The held-back rest.
  virtual std::string finish(bool redact) = 0;
  // What was found so far (cumulative).
  virtual const OutputVerdict& verdict() const = 0;
};

}  // namespace aegis::guard
