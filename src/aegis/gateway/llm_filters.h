// The gateway's LLM guard: prompt-injection checks on OpenAI-style chat requests, a canary planted
// in the system prompt, and output guards (canary, system-prompt leakage, PII, secrets, refusals)
// on the answers, whole or streamed as server-sent events. The checks themselves live in guard/.
#pragma once

#include <memory>

#include "aegis/gateway/filter.h"

namespace aegis::gateway {

// llm_guard: {input: {...}, canary: true, output: {...}}    (at least one of the three)
// Only routes with api: openai-chat are checked; other routes pass untouched.
//
// input: {roles: [user], action: block | annotate, status: 403, threshold: 0.5, rules: [extra.toml],
//         model: guard.bin, learned: true}
//   Runs the input guard (guard/input_guard.h: signatures, then the learned model) on the content
//   of every message whose role is listed (default: user): string content, or the text parts of
//   an OpenAI content-part list, joined. threshold overrides the model's own; rules adds signature
//   files; model replaces the shipped model; learned: false uses the signatures alone. A flagged
//   message with action block (the default) is answered `status` (403 by default; 400 is what
//   OpenAI answers for a policy refusal, and keeps clients going that stop a whole run at the first
//   403, such as promptfoo) with the code "prompt_injection" naming the
//   category, tier, score and rule, never the prompt; with annotate the request goes on, the
//   Verdict is "flag" and a whole (not streamed) answer gets x-aegis-flags: prompt-injection
//   (merged with the flags other filters set; a stream's headers leave before any filter sees an
//   answer, so there the flag is in the Verdict only). A body that is not a chat request (not
//   JSON, no messages list) is not checked: the upstream refuses it.
//
// canary: true
//   Plants a fresh canary token (guard::make_canary, from a CSPRNG) in the first system (or
//   developer) message, adding a system message when there is none, and looks for it in the
//   answer (as written, spread out, in another case, base64, hex, reversed, ...). Needs output.
//
// output: {system_prompts: [text, ...], system_prompt_files: [file, ...], action: block | redact | annotate,
//          pii: true, secrets: true, entities: [EMAIL_ADDRESS, ...], refusal: annotate | ignore,
//          ngram: 5, leak_threshold: 0.25}
//   Runs the output guard on choices[].message.content, and on streamed answers on each choice's
//   choices[].delta.content incrementally (guard::OutputGuard::Stream: only the bytes that could
//   still begin a canary, a secret or PII are held back, at most 256 per choice; they are released
//   with the choice's finish_reason event or in an extra chunk before "data: [DONE]"; a stream that
//   breaks off before either never sends them: fail closed). System-prompt leakage is
//   checked against the configured prompts (files are read when the config loads) and against the
//   request's own system messages. A leak is a canary, a leaked system prompt, a secret, or PII
//   (pii: false or secrets: false leave those out; entities limits the PII types).
//     block (default): a whole answer is replaced by 403 "output_blocked" naming what leaked; in a
//       stream the event that revealed the leak becomes an error event ({"error": {...}}) followed
//       by "data: [DONE]", and everything after it is dropped.
//     redact: PII, secrets and canaries are replaced in place ("[REDACTED:EMAIL_ADDRESS]",
//       "[REDACTED:SECRET]", "[REDACTED:CANARY]"; a payload that decodes to one goes whole); a
//       leaked system prompt cannot be cut out word by word, so the choice's content becomes
//       "[REDACTED:SYSTEM_PROMPT]" (in a stream: from the event that revealed it on, once).
//     annotate: the answer passes; whole answers get x-aegis-flags (canary-leak, system-prompt-leak,
//       pii, secret).
//   refusal: annotate (default) marks answers that refuse ("I can't help with that") with the flag
//   "refusal" and counts them; ignore skips the check.
// Verdicts: "reject" (blocked), "modify" (redacted) or "flag", one per phase, the output one
// updated as a stream goes on. Metrics: aegis_llm_guard_injections_total{action},
// aegis_llm_guard_canaries_planted_total, aegis_llm_guard_leaks_total{kind},
// aegis_llm_guard_refusals_total.
std::unique_ptr<Filter> make_llm_guard_filter(const YAML::Node& options, const FilterBuildContext& context);

}  // namespace aegis::gateway
