#include "aegis/gateway/llm_filters.h"
#include "aegis/gateway/output_filters.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <yaml-cpp/yaml.h>

#include "aegis/core/error.h"
#include "aegis/gateway/validation_filters.h"
#include "aegis/guard/input_guard.h"
#include "aegis/guard/output_guard.h"

namespace aegis::gateway {
namespace {

using nlohmann::json;

constexpr std::size_t kMaxChoices = 64;          // streamed choices tracked per exchange
constexpr std::size_t kMaxSystemPromptBytes = 1u << 20;
constexpr char kPromptMarker[] = "[REDACTED:SYSTEM_PROMPT]";

std::uint64_t load(const std::atomic<std::uint64_t>& counter) { return counter.load(std::memory_order_relaxed); }

std::vector<Header> with_label(std::vector<Header> labels, std::string name, std::string value) {
  labels.emplace_back(std::move(name), std::move(value));
  return labels;
}

std::string fixed(double value, int digits) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, value);
  return text;
}

bool chat_route(const Exchange& exchange) { return !exchange.route || exchange.route->api == ApiStyle::OpenAiChat; }
bool is_success(const Exchange& exchange) { return exchange.response.status >= 200 && exchange.response.status < 300; }

// Adds flags to x-aegis-flags, keeping those another filter set and never repeating one.

// The text of a message's content: a string, or the text parts of a content-part list.
std::string content_text(const json& content) {
  if (content.is_string()) return content.get<std::string>();
  std::string out;
  if (!content.is_array()) return out;
  for (const auto& part : content) {
    if (!part.is_object()) continue;
    const auto text = part.find("text");
    if (text == part.end() || !text->is_string()) continue;
    if (!out.empty()) out += '\n';
    out += text->get_ref<const std::string&>();
  }
  return out;
}

std::string role_of(const json& message) {
  if (!message.is_object()) return {};
  const auto role = message.find("role");
  return role != message.end() && role->is_string() ? role->get<std::string>() : std::string();
}

bool system_role(const std::string& role) { return role == "system" || role == "developer"; }

// ---- options ----

enum class InputAction { Block, Annotate };
enum class OutputAction { Block, Redact, Annotate };

struct InputSettings {
  std::vector<std::string> roles{"user"};
  InputAction action = InputAction::Block;
  int status = 403;  // 400 keeps clients that give up on 403 (promptfoo) going
  std::unique_ptr<guard::InputGuard> guard;
};

struct OutputSettings {
  OutputAction action = OutputAction::Block;
  bool refusal = true;
  guard::LeakageOptions leakage;
  std::unique_ptr<guard::OutputGuard> guard;
};

struct Settings {
  std::optional<InputSettings> input;
  bool canary = false;
  std::optional<OutputSettings> output;
};

// ---- per exchange ----

// What an answer (or the part of a stream seen so far) leaked.
struct Leaks {
  bool canary = false;
  std::string canary_via;
  bool prompt = false;
  std::string prompt_detail;
  std::size_t pii = 0;
  std::size_t secrets = 0;
  bool refusal = false;
  std::string refusal_rule;
  bool any() const { return canary || prompt || pii > 0 || secrets > 0; }

  void add(const guard::OutputVerdict& v) {
    if (v.canary_leaked && !canary) {
      canary = true;
      for (const auto& f : v.findings)
        if (f.kind == "canary") {
          canary_via = f.detail;
          break;
        }
    }
    if (v.leakage.leaked && !prompt) {
      prompt = true;
      prompt_detail = "overlap " + fixed(v.leakage.overlap, 2) + ", run " + std::to_string(v.leakage.longest_run) + " words" +
                      (v.leakage.via.empty() ? "" : ", via " + v.leakage.via);
    }
    pii += v.pii_count;
    secrets += v.secret_count;
    if (v.refusal.refused && !refusal) {
      refusal = true;
      refusal_rule = v.refusal.rule;
    }
  }

  std::vector<std::string> flags() const {
    std::vector<std::string> out;
    if (canary) out.emplace_back("canary-leak");
    if (prompt) out.emplace_back("system-prompt-leak");
    if (pii) out.emplace_back("pii");
    if (secrets) out.emplace_back("secret");
    return out;
  }

  // For the client: what leaked, no content.
  std::string summary() const {
    std::vector<std::string> parts;
    if (canary) parts.emplace_back("the canary token planted in the system prompt");
    if (prompt) parts.emplace_back("the system prompt");
    if (secrets) parts.emplace_back(std::to_string(secrets) + (secrets == 1 ? " secret" : " secrets"));
    if (pii) parts.emplace_back(std::to_string(pii) + " personal data item" + (pii == 1 ? "" : "s"));
    std::string out;
    for (std::size_t i = 0; i < parts.size(); ++i) out += (i == 0 ? "" : (i + 1 == parts.size() ? " and " : ", ")) + parts[i];
    return out;
  }

  // For the audit log.
  std::string detail() const {
    std::vector<std::string> parts;
    if (canary) parts.push_back("canary-leak (" + canary_via + ")");
    if (prompt) parts.push_back("system-prompt-leak (" + prompt_detail + ")");
    if (secrets) parts.push_back("secret=" + std::to_string(secrets));
    if (pii) parts.push_back("pii=" + std::to_string(pii));
    if (refusal) parts.push_back("refusal (" + refusal_rule + ")");
    std::string out;
    for (const auto& p : parts) out += (out.empty() ? "" : "; ") + p;
    return out;
  }
};

struct ChoiceStreams {
  std::unique_ptr<guard::OutputGuard::Stream> main;
  std::unique_ptr<guard::OutputGuard::Stream> own_prompt;  // leakage of the request's system messages
  bool finished = false;
  bool suppressed = false;  // redact: a leaked system prompt withholds the rest of this choice
};

struct ExchangeState {
  std::vector<std::string> canaries;
  std::unique_ptr<guard::OutputGuard> own_prompt_guard;  // the request's system messages (leakage only)
  bool injection_flagged = false;
  // streams
  std::map<long long, ChoiceStreams> choices;
  bool blocked = false;
  json last_chunk = json::object();  // id, model, created of the last chunk: for the synthetic ones
  std::vector<std::string> counted;  // leak kinds already counted in the metrics
};

// ---- server-sent events ----

struct Event {
  std::vector<std::string> other_lines;  // event:, id:, retry:, comments: kept before the data
  std::string data;
  bool has_data = false;
  std::string newline = "\n";
};

Event parse_event(std::string_view event) {
  Event out;
  std::size_t end = event.size();
  while (end > 0 && (event[end - 1] == '\n' || event[end - 1] == '\r')) --end;
  const std::string_view body = event.substr(0, end);
  if (body.find("\r\n") != std::string_view::npos) out.newline = "\r\n";
  int data_lines = 0;
  for (std::size_t start = 0; start <= body.size();) {
    auto nl = body.find('\n', start);
    if (nl == std::string_view::npos) nl = body.size();
    std::string_view line = body.substr(start, nl - start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.substr(0, 5) == "data:") {
      std::string_view value = line.substr(5);
      if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
      if (data_lines++) out.data += '\n';
      out.data.append(value);
      out.has_data = true;
    } else if (!line.empty()) {
      out.other_lines.emplace_back(line);
    }
    start = nl + 1;
  }
  return out;
}

std::string data_event(std::string_view data, const std::string& newline = "\n", const std::vector<std::string>& other = {}) {
  std::string out;
  for (const auto& line : other) out += line + newline;
  std::string_view rest = data;
  for (;;) {
    const auto nl = rest.find('\n');
    out += "data: ";
    out.append(rest.substr(0, nl));
    out += newline;
    if (nl == std::string_view::npos) break;
    rest.remove_prefix(nl + 1);
  }
  return out + newline;
}

std::string dump(const json& value) { return value.dump(-1, ' ', false, json::error_handler_t::replace); }

// ---- the filter ----

class LlmGuardFilter final : public Filter {
 public:
  explicit LlmGuardFilter(Settings settings) : Filter("llm_guard"), settings_(std::move(settings)) {}

  FilterResult on_request(Exchange& exchange) override {
    if (!chat_route(exchange)) return FilterResult::pass();
    const json* request = exchange.request_json();
    if (request == nullptr || !request->is_object()) return FilterResult::pass();
    const auto messages = request->find("messages");
    if (messages == request->end() || !messages->is_array()) return FilterResult::pass();
    auto state = std::make_shared<ExchangeState>();

    if (settings_.input) {
      const InputSettings& in = *settings_.input;
      std::optional<guard::InputVerdict> worst;
      std::string worst_role;
      for (const auto& message : *messages) {
        const std::string role = role_of(message);
        if (std::find(in.roles.begin(), in.roles.end(), role) == in.roles.end()) continue;
        const auto content = message.find("content");
        if (content == message.end()) continue;
        const std::string text = content_text(*content);
        if (text.empty()) continue;
        guard::InputVerdict verdict = in.guard->scan(text);
        if (verdict.flagged && (!worst || verdict.score > worst->score)) {
          worst = std::move(verdict);
          worst_role = role;
        }
      }
      if (worst) {
        const std::string rule = worst->evidence.empty() ? std::string("-") : worst->evidence.front().rule;
        const std::string what = "category " + (worst->category.empty() ? std::string("injection") : worst->category) +
                                 ", tier " + std::string(guard::tier_name(worst->tier)) + ", score " + fixed(worst->score, 2) +
                                 ", rule " + rule;
        std::string detail = "prompt-injection in a " + worst_role + " message: " + what;
        if (!worst->decodings.empty()) {
          detail += ", decoded from";
          for (const auto& d : worst->decodings) detail += " " + d;
        }
        if (in.action == InputAction::Block) {
          injections_blocked_.fetch_add(1, std::memory_order_relaxed);
          exchange.verdicts.push_back({name(), "reject", detail});
          return FilterResult::reject(in.status, "prompt_injection",
                                      "the request was refused: a " + worst_role + " message looks like a prompt injection (" +
                                          what + "). Rephrase the request; if it is legitimate, ask the operator to review the rule");
        }
        injections_flagged_.fetch_add(1, std::memory_order_relaxed);
        stats().flagged.fetch_add(1, std::memory_order_relaxed);
        exchange.verdicts.push_back({name(), "flag", detail});
        state->injection_flagged = true;
      }
    }

    if (settings_.output) {
      // The request's own system messages are leakage references too.
      std::vector<std::string> own;
      std::size_t bytes = 0;
      for (const auto& message : *messages) {
        if (!system_role(role_of(message))) continue;
        const auto content = message.find("content");
        if (content == message.end()) continue;
        std::string text = content_text(*content);
        bytes += text.size();
        if (!text.empty() && bytes <= kMaxSystemPromptBytes) own.push_back(std::move(text));
      }
      if (!own.empty()) {
        guard::OutputGuardOptions options;
        options.system_prompts = std::move(own);
        options.leakage = settings_.output->leakage;
        options.pii = false;
        options.secrets = false;
        options.refusal = false;
        state->own_prompt_guard = std::make_unique<guard::OutputGuard>(std::move(options));
      }
    }

    if (settings_.canary) {
      const guard::Canary canary = guard::make_canary();
      json body = *request;
      json& list = body["messages"];
      bool planted = false;
      for (auto& message : list) {
        if (!system_role(role_of(message))) continue;
        json& content = message["content"];
        if (content.is_string()) {
          content = guard::plant_canary(content.get<std::string>(), canary);
        } else if (content.is_array()) {
          content.push_back({{"type", "text"}, {"text", canary.instruction}});
        } else {
          content = canary.instruction;
        }
        planted = true;
        break;
      }
      if (!planted) list.insert(list.begin(), json{{"role", "system"}, {"content", canary.instruction}});
      exchange.request.body = dump(body);
      exchange.request_body_replaced();  // later filters see the planted canary
      state->canaries.push_back(canary.token);
      canaries_planted_.fetch_add(1, std::memory_order_relaxed);
    }

    exchange.set_filter_state(this, std::move(state));
    return FilterResult::pass();
  }

  FilterResult on_response(Exchange& exchange) override {
    ExchangeState* state = exchange.filter_state<ExchangeState>(this);
    if (state == nullptr || !chat_route(exchange)) return FilterResult::pass();
    std::vector<std::string> flags;
    if (state->injection_flagged) flags.emplace_back("prompt-injection");
    if (!settings_.output || !is_success(exchange)) {
      add_flags(exchange.response, flags);
      return FilterResult::pass();
    }
    const OutputSettings& out = *settings_.output;
    json* document = exchange.response_json_mutable();
    if (document == nullptr || !document->is_object() || !document->contains("choices") || !(*document)["choices"].is_array()) {
      add_flags(exchange.response, flags);
      return FilterResult::pass();
    }
    Leaks leaks;
    bool changed = false;
    for (auto& choice : (*document)["choices"]) {
      if (!choice.is_object() || !choice.contains("message") || !choice["message"].is_object()) continue;
      json& message = choice["message"];
      if (!message.contains("content") || !message["content"].is_string()) continue;
      const std::string content = message["content"].get<std::string>();
      Leaks mine;
      mine.add(out.guard->check(content, state->canaries));
      if (state->own_prompt_guard) mine.add(state->own_prompt_guard->check(content));
      if (out.action == OutputAction::Redact && mine.any()) {
        std::string redacted = mine.prompt ? std::string(kPromptMarker) : out.guard->redact(content, state->canaries);
        if (redacted != content) {
          message["content"] = std::move(redacted);
          changed = true;
        }
      }
      merge(leaks, mine);
    }
    count(*state, leaks);
    if (leaks.refusal && out.refusal) flags.emplace_back("refusal");
    if (leaks.any()) {
      if (out.action == OutputAction::Block) {
        exchange.verdicts.push_back({name(), "reject", leaks.detail()});
        add_flags(exchange.response, flags);
        return FilterResult::reject(403, "output_blocked",
                                    "the model's answer was withheld because it revealed " + leaks.summary() +
                                        "; ask differently, or ask the operator to review the answer with the request id");
      }
      const auto kinds = leaks.flags();
      flags.insert(flags.end(), kinds.begin(), kinds.end());
      if (out.action == OutputAction::Redact && changed) {
        exchange.verdicts.push_back({name(), "modify", leaks.detail()});
        stats().modified.fetch_add(1, std::memory_order_relaxed);
      } else {
        exchange.verdicts.push_back({name(), "flag", leaks.detail()});
        stats().flagged.fetch_add(1, std::memory_order_relaxed);
      }
    } else if (leaks.refusal && out.refusal) {
      exchange.verdicts.push_back({name(), "flag", leaks.detail()});
      stats().flagged.fetch_add(1, std::memory_order_relaxed);
    }
    add_flags(exchange.response, flags);
    return FilterResult::pass();
  }

  void on_response_event(Exchange& exchange, std::string& event) override {
    ExchangeState* state = exchange.filter_state<ExchangeState>(this);
    if (state == nullptr || !settings_.output || !chat_route(exchange)) return;
    if (state->blocked) {
      event.clear();  // everything after a blocked event is dropped
      return;
    }
    const OutputSettings& out = *settings_.output;
    const bool redact = out.action == OutputAction::Redact;
    Event parsed = parse_event(event);
    if (!parsed.has_data) return;

    std::string prefix;  // events to send before this one (the held-back rest before [DONE])
    if (parsed.data == "[DONE]") {
      std::vector<std::pair<long long, std::string>> rests;
      for (auto& [index, streams] : state->choices) {
        if (streams.finished) continue;
        std::string rest = finish(streams, redact);
        if (!rest.empty()) rests.emplace_back(index, std::move(rest));
      }
      for (auto& [index, rest] : rests) {
        json chunk = state->last_chunk;
        chunk["object"] = "chat.completion.chunk";
        chunk["choices"] = json::array({json{{"index", index}, {"delta", {{"content", rest}}}, {"finish_reason", nullptr}}});
        prefix += data_event(dump(chunk), parsed.newline);
      }
      if (conclude(exchange, *state, event)) return;
      event = prefix + event;
      return;
    }

    std::optional<json> chunk = parse_bounded_json(parsed.data);
    if (!chunk || !chunk->is_object()) return;
    for (const char* key : {"id", "model", "created", "system_fingerprint"})
      if (chunk->contains(key)) state->last_chunk[key] = (*chunk)[key];
    const auto choices = chunk->find("choices");
    if (choices == chunk->end() || !choices->is_array()) return;
    bool changed = false;
    long long position = 0;
    for (auto& choice : *choices) {
      if (!choice.is_object()) continue;
      long long index = position++;
      if (const auto i = choice.find("index"); i != choice.end() && i->is_number_integer()) index = i->get<long long>();
      auto found = state->choices.find(index);
      if (found == state->choices.end()) {
        if (state->choices.size() >= kMaxChoices) {
          block(exchange, *state, event, "the answer streamed more than " + std::to_string(kMaxChoices) + " choices",
                "stream has more than " + std::to_string(kMaxChoices) + " choices");
          return;
        }
        ChoiceStreams streams;
        streams.main = out.guard->stream(state->canaries);
        if (state->own_prompt_guard) streams.own_prompt = state->own_prompt_guard->stream();
        found = state->choices.emplace(index, std::move(streams)).first;
      }
      ChoiceStreams& streams = found->second;
      json* delta = choice.contains("delta") && choice["delta"].is_object() ? &choice["delta"] : nullptr;
      const bool has_content = delta && delta->contains("content") && (*delta)["content"].is_string();
      std::string released;
      if (has_content && !streams.finished) {
        const std::string piece = (*delta)["content"].get<std::string>();
        released = streams.main->feed(piece, redact);
        if (streams.own_prompt) (void)streams.own_prompt->feed(piece, false);
      }
      const bool done = choice.contains("finish_reason") && !choice["finish_reason"].is_null();
      if (done && !streams.finished) released += finish(streams, redact);
      if (redact && !streams.suppressed && prompt_leaked(streams)) {
        streams.suppressed = true;
        released = kPromptMarker;
      } else if (streams.suppressed && has_content) {
        released.clear();
      }
      if (has_content || !released.empty()) {
        if (delta == nullptr) {
          choice["delta"] = json::object();
          delta = &choice["delta"];
        }
        if (!has_content || (*delta)["content"].get_ref<const std::string&>() != released) {
          (*delta)["content"] = released;
          changed = true;
        }
      }
    }
    if (conclude(exchange, *state, event)) return;
    if (changed) event = data_event(dump(*chunk), parsed.newline, parsed.other_lines);
  }

  void write_metrics(MetricsWriter& out, const std::vector<Header>& labels) const override {
    constexpr const char* kInjections = "aegis_llm_guard_injections_total";
    constexpr const char* kInjectionsHelp = "chat requests the input guard flagged, by what was done";
    out.counter(kInjections, kInjectionsHelp, with_label(labels, "action", "blocked"), static_cast<double>(load(injections_blocked_)));
    out.counter(kInjections, kInjectionsHelp, with_label(labels, "action", "annotated"), static_cast<double>(load(injections_flagged_)));
    out.counter("aegis_llm_guard_canaries_planted_total", "canary tokens planted in system prompts", labels,
                static_cast<double>(load(canaries_planted_)));
    constexpr const char* kLeaks = "aegis_llm_guard_leaks_total";
    constexpr const char* kLeaksHelp = "answers that leaked, by kind";
    out.counter(kLeaks, kLeaksHelp, with_label(labels, "kind", "canary"), static_cast<double>(load(leaks_canary_)));
    out.counter(kLeaks, kLeaksHelp, with_label(labels, "kind", "system-prompt"), static_cast<double>(load(leaks_prompt_)));
    out.counter(kLeaks, kLeaksHelp, with_label(labels, "kind", "secret"), static_cast<double>(load(leaks_secret_)));
    out.counter(kLeaks, kLeaksHelp, with_label(labels, "kind", "pii"), static_cast<double>(load(leaks_pii_)));
    out.counter("aegis_llm_guard_refusals_total", "answers in which the model refused", labels, static_cast<double>(load(refusals_)));
  }

 private:
  static void merge(Leaks& into, const Leaks& from) {
    if (from.canary && !into.canary) {
      into.canary = true;
      into.canary_via = from.canary_via;
    }
    if (from.prompt && !into.prompt) {
      into.prompt = true;
      into.prompt_detail = from.prompt_detail;
    }
    into.pii += from.pii;
    into.secrets += from.secrets;
    if (from.refusal && !into.refusal) {
      into.refusal = true;
      into.refusal_rule = from.refusal_rule;
    }
  }

  static bool prompt_leaked(const ChoiceStreams& s) {
    return s.main->verdict().leakage.leaked || (s.own_prompt && s.own_prompt->verdict().leakage.leaked);
  }

  static std::string finish(ChoiceStreams& streams, bool redact) {
    streams.finished = true;
    std::string rest = streams.main->finish(redact);
    if (streams.own_prompt) (void)streams.own_prompt->finish(false);
    if (streams.suppressed) rest.clear();
    return rest;
  }

  // Counts each kind once per exchange.
  void count(ExchangeState& state, const Leaks& leaks) {
    auto once = [&](bool present, const char* kind, std::atomic<std::uint64_t>& counter) {
      if (!present || std::find(state.counted.begin(), state.counted.end(), kind) != state.counted.end()) return;
      state.counted.emplace_back(kind);
      counter.fetch_add(1, std::memory_order_relaxed);
    };
    once(leaks.canary, "canary", leaks_canary_);
    once(leaks.prompt, "system-prompt", leaks_prompt_);
    once(leaks.secrets > 0, "secret", leaks_secret_);
    once(leaks.pii > 0, "pii", leaks_pii_);
    once(leaks.refusal && settings_.output->refusal, "refusal", refusals_);
  }

  // After a streamed event: what the streams found so far decides. True when the event was
  // replaced by the block.
  bool conclude(Exchange& exchange, ExchangeState& state, std::string& event) {
    const OutputSettings& out = *settings_.output;
    Leaks leaks;
    for (const auto& [index, streams] : state.choices) {
      Leaks mine;
      mine.add(streams.main->verdict());
      if (streams.own_prompt) mine.add(streams.own_prompt->verdict());
      merge(leaks, mine);
    }
    count(state, leaks);
    const bool report_refusal = leaks.refusal && out.refusal;
    if (!leaks.any() && !report_refusal) return false;
    if (leaks.any() && out.action == OutputAction::Block) {
      block(exchange, state, event, "the model's answer was stopped because it revealed " + leaks.summary(), leaks.detail());
      return true;
    }
    const std::string outcome = leaks.any() && out.action == OutputAction::Redact ? "modify" : "flag";
    record(exchange, outcome, leaks.detail());
    return false;
  }

  void block(Exchange& exchange, ExchangeState& state, std::string& event, const std::string& message, const std::string& detail) {
    state.blocked = true;
    stats().rejected.fetch_add(1, std::memory_order_relaxed);
    record(exchange, "reject", detail);
    const json error = {{"error",
                         {{"code", "output_blocked"},
                          {"message", message + "; ask differently, or ask the operator to review the answer with the request id"},
                          {"request_id", exchange.request_id}}}};
    event = data_event(dump(error)) + data_event("[DONE]");
  }

  // One output verdict per exchange, updated as a stream goes on.
  void record(Exchange& exchange, const std::string& outcome, const std::string& detail) {
    for (auto& verdict : exchange.verdicts) {
      if (verdict.filter != name() || verdict.detail.rfind("prompt-injection", 0) == 0) continue;
      if (verdict.outcome != outcome) {
        if (outcome == "reject" || (outcome == "modify" && verdict.outcome == "flag")) counted_outcome(outcome);
        verdict.outcome = outcome;
      }
      verdict.detail = detail;
      return;
    }
    counted_outcome(outcome);
    exchange.verdicts.push_back({name(), outcome, detail});
  }

  void counted_outcome(const std::string& outcome) {
    if (outcome == "modify") stats().modified.fetch_add(1, std::memory_order_relaxed);
    else if (outcome == "flag") stats().flagged.fetch_add(1, std::memory_order_relaxed);
  }

  Settings settings_;
  std::atomic<std::uint64_t> injections_blocked_{0}, injections_flagged_{0}, canaries_planted_{0};
  std::atomic<std::uint64_t> leaks_canary_{0}, leaks_prompt_{0}, leaks_secret_{0}, leaks_pii_{0}, refusals_{0};
};

std::string read_text_file(const FilterOptions& reader, const YAML::Node& node, const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) reader.fail(node, "cannot read system prompt file '" + path.string() + "'", "check the path (relative paths start at the config's folder)");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  std::string text = buffer.str();
  if (text.size() > kMaxSystemPromptBytes)
    reader.fail(node, "system prompt file '" + path.string() + "' is larger than 1 MiB", "point to the prompt itself");
  return text;
}

std::filesystem::path resolve(const FilterBuildContext& context, const std::string& name) {
  std::filesystem::path path(name);
  if (path.is_relative() && !context.config_dir.empty()) path = std::filesystem::path(context.config_dir) / path;
  return path;
}

InputSettings parse_input(const YAML::Node& node, const FilterBuildContext& context) {
  if (!node.IsMap()) throw_config_error(context, node, "llm_guard input must be a map", "for example input: {roles: [user], action: block}");
  FilterOptions reader(node, context, "llm_guard input", {"roles", "action", "status", "threshold", "rules", "model", "learned"});
  InputSettings settings;
  if (reader.has("roles")) {
    settings.roles = reader.strings("roles");
    if (settings.roles.empty()) reader.fail(reader.get("roles"), "roles is empty: the input guard would check nothing", "for example roles: [user]");
  }
  settings.action = reader.choice("action", "block", {"block", "annotate"}) == "block" ? InputAction::Block : InputAction::Annotate;
  settings.status = static_cast<int>(reader.integer("status", 403, 400, 499));
  guard::InputGuardOptions options;
  if (reader.has("threshold")) options.threshold = reader.number("threshold", 0.5, 0.01, 1);
  options.learned = reader.boolean("learned", true);
  for (const auto& file : reader.strings("rules")) {
    const auto path = resolve(context, file);
    if (!std::filesystem::is_regular_file(path))
      reader.fail(reader.get("rules"), "signature file '" + path.string() + "' does not exist", "check the path (relative paths start at the config's folder)");
    options.rule_files.push_back(path.string());
  }
  if (reader.has("model")) {
    if (!options.learned) reader.fail(reader.get("model"), "model is set but learned is false", "drop one of the two");
    const auto path = reader.path("model");
    if (!std::filesystem::is_regular_file(path))
      reader.fail(reader.get("model"), "guard model '" + path.string() + "' does not exist", "train one with `aegis guard train`, or drop model to use the shipped one");
    options.model_file = path.string();
  }
  try {
    settings.guard = std::make_unique<guard::InputGuard>(std::move(options));
  } catch (const core::Error& e) {
    const YAML::Node where = reader.has("rules") ? reader.get("rules") : (reader.has("model") ? reader.get("model") : node);
    reader.fail(where, std::string("llm_guard input: ") + e.what(), e.hint());
  }
  return settings;
}

OutputSettings parse_output(const YAML::Node& node, const FilterBuildContext& context) {
  if (!node.IsMap()) throw_config_error(context, node, "llm_guard output must be a map", "for example output: {action: block}");
  FilterOptions reader(node, context, "llm_guard output",
                       {"system_prompts", "system_prompt_files", "action", "pii", "secrets", "entities", "refusal", "ngram",
                        "leak_threshold"});
  OutputSettings settings;
  const std::string action = reader.choice("action", "block", {"block", "redact", "annotate"});
  settings.action = action == "block" ? OutputAction::Block : action == "redact" ? OutputAction::Redact : OutputAction::Annotate;
  settings.refusal = reader.choice("refusal", "annotate", {"annotate", "ignore"}) == "annotate";
  settings.leakage.ngram = static_cast<int>(reader.integer("ngram", 5, 2, 16));
  settings.leakage.threshold = reader.number("leak_threshold", 0.25, 0.01, 1);
  guard::OutputGuardOptions options;
  options.leakage = settings.leakage;
  options.refusal = settings.refusal;
  options.pii = reader.boolean("pii", true);
  options.secrets = reader.boolean("secrets", true);
  options.pii_entities = reader.strings("entities");
  if (!options.pii && !options.pii_entities.empty())
    reader.fail(reader.get("entities"), "entities lists PII types but pii is false", "drop entities, or set pii: true");
  options.system_prompts = reader.strings("system_prompts");
  for (const auto& prompt : options.system_prompts)
    if (prompt.size() > kMaxSystemPromptBytes) reader.fail(reader.get("system_prompts"), "a system prompt is larger than 1 MiB");
  if (const YAML::Node files = reader.get("system_prompt_files"); files.IsDefined()) {
    const auto names = reader.strings("system_prompt_files");
    for (std::size_t i = 0; i < names.size(); ++i) {
      const YAML::Node where = files.IsSequence() ? files[i] : files;
      options.system_prompts.push_back(read_text_file(reader, where, resolve(context, names[i])));
    }
  }
  try {
    settings.guard = std::make_unique<guard::OutputGuard>(std::move(options));
  } catch (const core::Error& e) {
    reader.fail(reader.has("entities") ? reader.get("entities") : node, std::string("llm_guard output: ") + e.what(), e.hint());
  }
  return settings;
}

}  // namespace

std::unique_ptr<Filter> make_llm_guard_filter(const YAML::Node& options, const FilterBuildContext& context) {
  FilterOptions reader(options, context, "llm_guard", {"input", "canary", "output"});
  Settings settings;
  settings.canary = reader.boolean("canary", false);
  if (reader.has("output")) settings.output = parse_output(reader.get("output"), context);
  if (settings.canary && !settings.output)
    reader.fail(reader.get("canary"), "canary: true plants a token that only the output checks look for",
                "add output: {action: block} (or redact / annotate)");
  if (reader.has("input")) settings.input = parse_input(reader.get("input"), context);
  if (!settings.input && !settings.output)
    reader.fail(options, "llm_guard checks nothing: configure input, output or both",
                "for example llm_guard: {input: {action: block}, canary: true, output: {action: block}}");
  return std::make_unique<LlmGuardFilter>(std::move(settings));
}

}  // namespace aegis::gateway
