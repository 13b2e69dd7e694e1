#include "aegis/gateway/output_filters.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <cstdlib>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string_view>
#include <yaml-cpp/yaml.h>

#include "aegis/core/error.h"
#include "aegis/core/text.h"
#include "aegis/gateway/validation_filters.h"
#include "aegis/privacy/detector.h"

namespace aegis::gateway {
namespace {

using nlohmann::json;

constexpr char kFlagsHeader[] = "x-aegis-flags";
// Texts longer than this are scanned piece by piece (cut at a line break or space), because one
// Detector::scan examines a bounded number of candidates and must not stop half-way through.
constexpr std::size_t kScanPieceBytes = 1u << 20;
// Rows quoted in a verdict: enough to find the case in the audit log, bounded for huge batches.
constexpr std::size_t kRowsInDetail = 3;

std::uint64_t load(const std::atomic<std::uint64_t>& counter) { return counter.load(std::memory_order_relaxed); }

std::vector<Header> with_label(std::vector<Header> labels, std::string name, std::string value) {
  labels.emplace_back(std::move(name), std::move(value));
  return labels;
}

std::string lower_case(std::string_view text) {
  std::string out(text);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::string media_type(std::string_view content_type) {
  content_type = content_type.substr(0, content_type.find(';'));
  while (!content_type.empty() && (content_type.front() == ' ' || content_type.front() == '\t')) content_type.remove_prefix(1);
  while (!content_type.empty() && (content_type.back() == ' ' || content_type.back() == '\t')) content_type.remove_suffix(1);
  return lower_case(content_type);
}

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_success(const Exchange& exchange) { return exchange.response.status >= 200 && exchange.response.status < 300; }

// The classifier filters apply to classifier routes; a route-less exchange (tests, tools) counts as one.
bool classifier_route(const Exchange& exchange) { return !exchange.route || exchange.route->api == ApiStyle::Classifier; }

std::string fixed(double value, int digits) {
  char text[64];
  std::snprintf(text, sizeof text, "%.*f", digits, value);
  return text;
}


// ---- confidence ----

enum class FlagAction { Flag, Reject, Ignore };

FlagAction parse_flag_action(const std::string& name) {
  if (name == "reject") return FlagAction::Reject;
  if (name == "ignore") return FlagAction::Ignore;
  return FlagAction::Flag;
}

struct ConfidenceOptions {
  std::optional<double> min_confidence;
  std::optional<double> max_entropy;
  FlagAction low_confidence = FlagAction::Flag;
  FlagAction ood = FlagAction::Flag;
  FlagAction malformed = FlagAction::Flag;
  double sum_tolerance = 0.01;
  std::string field = "probabilities";
};

class ConfidenceFilter final : public Filter {
 public:
  explicit ConfidenceFilter(ConfidenceOptions options) : Filter("confidence"), options_(std::move(options)) {}

  FilterResult on_response(Exchange& exchange) override {
    if (!is_success(exchange) || !classifier_route(exchange)) return FilterResult::pass();
    const json* document = exchange.response_json();
    std::optional<ScoreRows> scores;
    if (document) scores = read_score_rows(*document, options_.field);

    std::vector<std::string> low, ood, malformed;
    if (!scores) {
      malformed.push_back("no '" + options_.field + "' score rows in the response");
    } else {
      for (std::size_t i = 0; i < scores->rows.size(); ++i) {
        const auto& row = scores->rows[i];
        if (auto problem = malformed_reason(row)) {
          malformed.push_back("row " + std::to_string(i) + " " + *problem);
          continue;
        }
        const double top = row[argmax(row)];
        if (options_.min_confidence && top < *options_.min_confidence)
          low.push_back("row " + std::to_string(i) + " max p " + fixed(top, 3) + " < " + fixed(*options_.min_confidence, 3));
        if (options_.max_entropy) {
          const double entropy = normalized_entropy(row);
          if (entropy > *options_.max_entropy)
            ood.push_back("row " + std::to_string(i) + " entropy " + fixed(entropy, 3) + " > " + fixed(*options_.max_entropy, 3));
        }
      }
    }
    if (options_.malformed == FlagAction::Ignore) malformed.clear();
    if (options_.low_confidence == FlagAction::Ignore) low.clear();
    if (options_.ood == FlagAction::Ignore) ood.clear();
    if (!malformed.empty()) malformed_.fetch_add(1, std::memory_order_relaxed);
    if (!low.empty()) low_confidence_.fetch_add(1, std::memory_order_relaxed);
    if (!ood.empty()) ood_.fetch_add(1, std::memory_order_relaxed);
    if (malformed.empty() && low.empty() && ood.empty()) return FilterResult::pass();

    // Reject in order of how much the answer can be trusted: broken scores first.
    if (!malformed.empty() && options_.malformed == FlagAction::Reject) {
      exchange.verdicts.push_back({name(), "reject", "malformed-scores: " + summary(malformed)});
      return FilterResult::reject(502, "malformed_scores",
                                  "the model returned scores that are not probabilities; the gateway withheld the answer. "
                                  "Report this to the operator of the model");
    }
    if (!low.empty() && options_.low_confidence == FlagAction::Reject) {
      exchange.verdicts.push_back({name(), "reject", "low-confidence: " + summary(low)});
      return FilterResult::reject(422, "low_confidence",
                                  "the model is not confident enough about this input to answer; check the input or ask a person");
    }
    if (!ood.empty() && options_.ood == FlagAction::Reject) {
      exchange.verdicts.push_back({name(), "reject", "ood: " + summary(ood)});
      return FilterResult::reject(422, "out_of_distribution",
                                  "this input does not look like what the model was trained on; check the input or ask a person");
    }
    std::vector<std::string> flags;
    std::string detail;
    auto add = [&](const char* flag, const std::vector<std::string>& reasons) {
      if (reasons.empty()) return;
      flags.emplace_back(flag);
      detail += (detail.empty() ? "" : "; ") + std::string(flag) + ": " + summary(reasons);
    };
    add("low-confidence", low);
    add("ood", ood);
    add("malformed-scores", malformed);
    add_flags(exchange.response, flags);
    exchange.verdicts.push_back({name(), "flag", detail});
    stats().flagged.fetch_add(1, std::memory_order_relaxed);
    return FilterResult::pass();
  }

  void write_metrics(MetricsWriter& out, const std::vector<Header>& labels) const override {
    constexpr const char* kFamily = "aegis_confidence_responses_total";
    constexpr const char* kHelp = "classifier responses with at least one row tripping each check";
    out.counter(kFamily, kHelp, with_label(labels, "check", "low-confidence"), static_cast<double>(load(low_confidence_)));
    out.counter(kFamily, kHelp, with_label(labels, "check", "ood"), static_cast<double>(load(ood_)));
    out.counter(kFamily, kHelp, with_label(labels, "check", "malformed-scores"), static_cast<double>(load(malformed_)));
  }

 private:
  std::optional<std::string> malformed_reason(const std::vector<double>& row) const {
    double sum = 0;
    for (double p : row) {
      if (!std::isfinite(p)) return "has a non-finite score";
      if (p < 0) return "has a negative score " + fixed(p, 4);
      if (p > 1 + options_.sum_tolerance) return "has a score above 1: " + fixed(p, 4);
      sum += p;
    }
    if (std::fabs(sum - 1) > options_.sum_tolerance) return "sums to " + fixed(sum, 4) + ", not 1";
    return std::nullopt;
  }

  static std::string summary(const std::vector<std::string>& reasons) {
    std::string out;
    for (std::size_t i = 0; i < reasons.size() && i < kRowsInDetail; ++i) out += (i ? ", " : "") + reasons[i];
    if (reasons.size() > kRowsInDetail) out += " and " + std::to_string(reasons.size() - kRowsInDetail) + " more";
    return out;
  }

  ConfidenceOptions options_;
  std::atomic<std::uint64_t> low_confidence_{0}, ood_{0}, malformed_{0};
};

// ---- output hardening ----

struct HardeningOptions {
  std::optional<std::size_t> top_k;
  std::optional<int> decimals;
  bool labels_only = false;
  std::string field = "probabilities";
};

class OutputHardeningFilter final : public Filter {
 public:
  explicit OutputHardeningFilter(HardeningOptions options) : Filter("output_hardening"), options_(std::move(options)) {
    if (options_.labels_only) {
      detail_ = "labels_only";
    } else {
      if (options_.top_k) detail_ = "top_k=" + std::to_string(*options_.top_k);
      if (options_.decimals) detail_ += (detail_.empty() ? "" : " ") + std::string("decimals=") + std::to_string(*options_.decimals);
    }
  }

  FilterResult on_response(Exchange& exchange) override {
    if (!is_success(exchange) || !classifier_route(exchange)) return FilterResult::pass();
    json* document = exchange.response_json_mutable();
    std::optional<ScoreRows> scores;
    if (document) scores = read_score_rows(*document, options_.field);
    if (!scores) {
      exchange.verdicts.push_back({name(), "reject", "no readable '" + options_.field + "' in the response"});
      return FilterResult::reject(502, "malformed_scores",
                                  "the model's answer had no scores the gateway could harden, so it was withheld; "
                                  "report this to the operator of the model");
    }
    if (options_.labels_only) {
      json labels = json::array();
      for (const auto& row : scores->rows) labels.push_back(argmax(row));
      document->erase(options_.field);
      (*document)["labels"] = std::move(labels);
    } else {
      json rows = json::array();
      for (const auto& row : scores->rows) rows.push_back(harden_row(row, options_.top_k, options_.decimals));
      (*document)[options_.field] = scores->flat ? std::move(rows[0]) : std::move(rows);
    }
    exchange.verdicts.push_back({name(), "modify", detail_});
    stats().modified.fetch_add(1, std::memory_order_relaxed);
    return FilterResult::pass();
  }

 private:
  HardeningOptions options_;
  std::string detail_;
};

// ---- redaction ----

privacy::RedactAction parse_redact_action(const FilterOptions& reader, const YAML::Node& node, const std::string& name) {
  if (name == "mask") return privacy::RedactAction::Mask;
  if (name == "hash") return privacy::RedactAction::Hash;
  if (name == "drop") return privacy::RedactAction::Drop;
  reader.fail(node, "unknown redaction action '" + name + "'", "use mask, hash or drop");
}

// "EMAIL_ADDRESS=1 SECRET=2" <-> counts: the verdict detail is the per-exchange tally, so that a
// stream's events add to one verdict without the filter keeping state per exchange.
using EntityCounts = std::map<std::string, std::size_t>;

EntityCounts parse_counts(std::string_view detail) {
  EntityCounts counts;
  while (!detail.empty()) {
    const auto space = detail.find(' ');
    const std::string_view item = detail.substr(0, space);
    const auto eq = item.find('=');
    if (eq != std::string_view::npos) counts[std::string(item.substr(0, eq))] += std::strtoull(std::string(item.substr(eq + 1)).c_str(), nullptr, 10);
    if (space == std::string_view::npos) break;
    detail.remove_prefix(space + 1);
  }
  return counts;
}

std::string render_counts(const EntityCounts& counts) {
  std::string out;
  for (const auto& [entity, count] : counts) out += (out.empty() ? "" : " ") + entity + "=" + std::to_string(count);
  return out;
}

struct RedactSettings {
  std::unique_ptr<privacy::Detector> detector;  // expensive to compile: built once, in the factory
  privacy::RedactionPolicy policy;
  std::vector<std::vector<std::string>> fields;  // dot paths split; empty: every string value
};

class RedactFilter final : public Filter {
 public:
  explicit RedactFilter(RedactSettings settings)
      : Filter("redact"),
        detector_(std::move(settings.detector)),
        policy_(std::move(settings.policy)),
        fields_(std::move(settings.fields)),
        entity_names_(detector_->entity_types()),
        entity_counts_(std::make_unique<std::atomic<std::uint64_t>[]>(entity_names_.size() + 1)) {}

  FilterResult on_response(Exchange& exchange) override {
    if (exchange.response.body.empty()) return FilterResult::pass();
    const std::string type = media_type(exchange.response.header("content-type"));
    EntityCounts counts;
    if (type == "text/event-stream") {
      std::string body;
      const std::string& original = exchange.response.body;
      std::size_t start = 0;
      bool changed = false;
      while (start < original.size()) {
        // Events end at a blank line, written "\n\n" or "\r\n\r\n" (as the server cuts streams).
        auto end = original.find("\n\n", start);
        std::size_t skip = 2;
        const auto crlf = original.find("\r\n\r\n", start);
        if (crlf != std::string::npos && (end == std::string::npos || crlf < end)) {
          end = crlf;
          skip = 4;
        }
        end = end == std::string::npos ? original.size() : end + skip;
        std::string event = original.substr(start, end - start);
        changed = redact_event(event, counts) || changed;
        body += event;
        start = end;
      }
      if (changed) {
        exchange.response.body = std::move(body);
        exchange.response_body_replaced();
      }
    } else if (json_type(type) || type.empty() || textual(type)) {
      // A body that claims JSON but does not parse is still redacted, as text.
      json* document = json_type(type) || type.empty() ? exchange.response_json_mutable() : nullptr;
      if (document) {
        redact_json(*document, counts);
      } else if (auto redacted = redact_text(exchange.response.body, {}, counts)) {
        exchange.response.body = std::move(*redacted);
        exchange.response_body_replaced();
      }
    }
    record(exchange, counts);
    return FilterResult::pass();
  }

  void on_response_event(Exchange& exchange, std::string& event) override {
    EntityCounts counts;
    redact_event(event, counts);
    record(exchange, counts);
  }

  void write_metrics(MetricsWriter& out, const std::vector<Header>& labels) const override {
    constexpr const char* kFamily = "aegis_redact_entities_total";
    constexpr const char* kHelp = "entities replaced in responses, by entity type";
    for (std::size_t i = 0; i < entity_names_.size(); ++i)
      out.counter(kFamily, kHelp, with_label(labels, "entity", entity_names_[i]), static_cast<double>(load(entity_counts_[i])));
    out.counter(kFamily, kHelp, with_label(labels, "entity", "other"),
                static_cast<double>(load(entity_counts_[entity_names_.size()])));
  }

 private:
  static bool json_type(const std::string& type) {
    return type == "application/json" || ends_with(type, "+json") || type == "text/json";
  }
  static bool textual(const std::string& type) {
    return type.rfind("text/", 0) == 0 || type == "application/xml" || ends_with(type, "+xml") ||
           type == "application/x-ndjson" || type == "application/javascript" || type == "application/x-www-form-urlencoded";
  }

  // The redacted text, or nullopt when nothing was found.
  std::optional<std::string> redact_text(std::string_view text, std::string_view field, EntityCounts& counts) const {
    std::string out;
    bool found_any = false;
    std::size_t start = 0;
    while (start < text.size()) {
      std::size_t cut = text.size();
      if (cut - start > kScanPieceBytes) {
        const std::string_view window = text.substr(start, kScanPieceBytes);
        auto at = window.rfind('\n');
        if (at == std::string_view::npos || at == 0) at = window.find_last_of(" \t");
        cut = (at == std::string_view::npos || at == 0) ? start + kScanPieceBytes : start + at + 1;
      }
      const std::string_view piece = text.substr(start, cut - start);
      const auto detections = field.empty() ? detector_->scan(piece) : detector_->scan(piece, field);
      if (detections.empty()) {
        out.append(piece);
      } else {
        found_any = true;
        for (const auto& d : detections) ++counts[d.entity_type];
        out += privacy::redact(piece, detections, policy_);
      }
      start = cut;
    }
    if (!found_any) return std::nullopt;
    return out;
  }

  // Redacts the string values the configured fields reach (or all of them); true when any changed.
  bool redact_json(json& document, EntityCounts& counts) const {
    if (fields_.empty()) return redact_strings(document, {}, counts);
    bool changed = false;
    for (const auto& path : fields_) changed = redact_path(document, path, 0, {}, counts) || changed;
    return changed;
  }

  bool redact_path(json& value, const std::vector<std::string>& path, std::size_t step, std::string_view field,
                   EntityCounts& counts) const {
    if (step == path.size()) return redact_strings(value, field, counts);
    const std::string& token = path[step];
    bool changed = false;
    if (value.is_object()) {
      if (token == "*") {
        for (auto it = value.begin(); it != value.end(); ++it)
          changed = redact_path(it.value(), path, step + 1, it.key(), counts) || changed;
      } else if (auto it = value.find(token); it != value.end()) {
        changed = redact_path(*it, path, step + 1, token, counts);
      }
    } else if (value.is_array() && token == "*") {
      for (auto& element : value) changed = redact_path(element, path, step + 1, field, counts) || changed;
    }
    return changed;
  }

  // Every string at or under `value`; the nearest member name is the detector's context. Depth is
  // bounded by the gateway's JSON parser (64 levels).
  bool redact_strings(json& value, std::string_view field, EntityCounts& counts) const {
    if (value.is_string()) {
      auto redacted = redact_text(value.get_ref<const std::string&>(), field, counts);
      if (!redacted) return false;
      value = std::move(*redacted);
      return true;
    }
    bool changed = false;
    if (value.is_object()) {
      for (auto it = value.begin(); it != value.end(); ++it) changed = redact_strings(it.value(), it.key(), counts) || changed;
    } else if (value.is_array()) {
      for (auto& element : value) changed = redact_strings(element, field, counts) || changed;
    }
    return changed;
  }

  // One server-sent event, rewritten in place when something was redacted. Lines other than data
  // lines (event:, id:, retry:, comments) are kept; the data lines become one (JSON) or one per
  // line of the redacted text.
  bool redact_event(std::string& event, EntityCounts& counts) const {
    std::size_t body_end = event.size();
    while (body_end > 0 && (event[body_end - 1] == '\n' || event[body_end - 1] == '\r')) --body_end;
    const std::string ending = event.substr(body_end);
    const std::string_view body(event.data(), body_end);
    const bool crlf = body.find("\r\n") != std::string_view::npos;

    std::vector<std::string_view> lines;
    std::string data;
    int data_lines = 0;
    for (std::size_t start = 0; start <= body.size();) {
      auto end = body.find('\n', start);
      if (end == std::string_view::npos) end = body.size();
      std::string_view line = body.substr(start, end - start);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      lines.push_back(line);
      if (line.substr(0, 5) == "data:") {
        std::string_view value = line.substr(5);
        if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
        if (data_lines++) data += '\n';
        data.append(value);
      }
      start = end + 1;
    }
    if (data_lines == 0 || data == "[DONE]") return false;

    std::string replacement;
    if (auto parsed = parse_bounded_json(data)) {
      if (!redact_json(*parsed, counts)) return false;
      replacement = parsed->dump(-1, ' ', false, json::error_handler_t::replace);
    } else {
      auto redacted = redact_text(data, {}, counts);
      if (!redacted) return false;
      replacement = std::move(*redacted);
    }

    const char* newline = crlf ? "\r\n" : "\n";
    std::string out;
    bool data_written = false;
    for (const auto& line : lines) {
      if (line.substr(0, 5) == "data:") {
        if (data_written) continue;
        data_written = true;
        std::string_view rest = replacement;
        for (;;) {
          const auto nl = rest.find('\n');
          out += "data: ";
          out.append(rest.substr(0, nl));
          if (nl == std::string_view::npos) break;
          out += newline;
          rest.remove_prefix(nl + 1);
        }
      } else {
        out.append(line);
      }
      out += newline;
    }
    out.resize(out.size() - std::string_view(newline).size());
    event = out + ending;
    return true;
  }

  void record(Exchange& exchange, const EntityCounts& counts) {
    if (counts.empty()) return;
    for (const auto& [entity, count] : counts) {
      const auto found = std::lower_bound(entity_names_.begin(), entity_names_.end(), entity);
      const std::size_t slot =
          found != entity_names_.end() && *found == entity ? static_cast<std::size_t>(found - entity_names_.begin()) : entity_names_.size();
      entity_counts_[slot].fetch_add(count, std::memory_order_relaxed);
    }
    for (auto& verdict : exchange.verdicts) {
      if (verdict.filter == name() && verdict.outcome == "modify") {
        EntityCounts total = parse_counts(verdict.detail);
        for (const auto& [entity, count] : counts) total[entity] += count;
        verdict.detail = render_counts(total);
        return;
      }
    }
    exchange.verdicts.push_back({name(), "modify", render_counts(counts)});
    stats().modified.fetch_add(1, std::memory_order_relaxed);
  }

  std::unique_ptr<privacy::Detector> detector_;
  privacy::RedactionPolicy policy_;
  std::vector<std::vector<std::string>> fields_;
  std::vector<std::string> entity_names_;  // sorted (Detector::entity_types returns them sorted)
  std::unique_ptr<std::atomic<std::uint64_t>[]> entity_counts_;  // one per name, then "other"
};

}  // namespace

// ---- shared helpers ----

std::optional<ScoreRows> read_score_rows(const nlohmann::json& response, const std::string& field) {
  if (!response.is_object()) return std::nullopt;
  const auto found = response.find(field);
  if (found == response.end() || !found->is_array() || found->empty()) return std::nullopt;
  auto read_row = [](const json& values, std::vector<double>& row) {
    if (!values.is_array() || values.empty()) return false;
    row.reserve(values.size());
    for (const auto& value : values) {
      if (!value.is_number()) return false;
      row.push_back(value.get<double>());
    }
    return true;
  };
  ScoreRows scores;
  if (found->front().is_number()) {
    scores.flat = true;
    scores.rows.emplace_back();
    if (!read_row(*found, scores.rows.back())) return std::nullopt;
    return scores;
  }
  scores.rows.reserve(found->size());
  for (const auto& values : *found) {
    scores.rows.emplace_back();
    if (!read_row(values, scores.rows.back())) return std::nullopt;
  }
  return scores;
}

std::size_t argmax(const std::vector<double>& row) {
  std::size_t best = 0;
  for (std::size_t i = 1; i < row.size(); ++i)
    if (row[i] > row[best]) best = i;
  return best;
}

std::vector<double> harden_row(const std::vector<double>& row, std::optional<std::size_t> top_k, std::optional<int> decimals) {
  std::vector<double> out(row);
  if (out.empty()) return out;
  const std::size_t predicted = argmax(row);
  if (top_k && *top_k < out.size()) {
    // Order by value, larger first, lower index first among equals: the kept set is deterministic
    // and always holds the predicted class.
    std::vector<std::size_t> order(out.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return row[a] > row[b]; });
    for (std::size_t rank = *top_k; rank < order.size(); ++rank) out[order[rank]] = 0;
  }
  if (decimals) {
    const double scale = std::pow(10.0, *decimals);
    for (auto& value : out) value = std::round(value * scale) / scale;
    // Rounding is monotone, so it can only tie the predicted class, never overtake it; a tie that
    // the original row did not have is broken in the predicted class's favour.
    bool tied = false;
    for (std::size_t i = 0; i < out.size(); ++i)
      if (i != predicted && out[i] >= out[predicted] && row[i] < row[predicted]) tied = true;
    if (tied) out[predicted] = (std::round(out[predicted] * scale) + 1) / scale;
  }
  return out;
}

double normalized_entropy(const std::vector<double>& row) {
  if (row.size() < 2) return 0;
  double entropy = 0;
  for (double p : row)
    if (p > 0) entropy -= p * std::log(p);
  return std::clamp(entropy / std::log(static_cast<double>(row.size())), 0.0, 1.0);
}

// ---- factories ----

std::unique_ptr<Filter> make_confidence_filter(const YAML::Node& options, const FilterBuildContext& context) {
  FilterOptions reader(options, context, "confidence",
                       {"min_confidence", "max_entropy", "action", "ood_action", "malformed", "sum_tolerance", "field"});
  ConfidenceOptions settings;
  if (reader.has("min_confidence")) settings.min_confidence = reader.number("min_confidence", 0, 0, 1);
  if (reader.has("max_entropy")) settings.max_entropy = reader.number("max_entropy", 1, 0, 1);
  settings.low_confidence = parse_flag_action(reader.choice("action", "flag", {"flag", "reject"}));
  settings.ood = parse_flag_action(reader.choice("ood_action", "flag", {"flag", "reject"}));
  settings.malformed = parse_flag_action(reader.choice("malformed", "flag", {"flag", "reject", "ignore"}));
  settings.sum_tolerance = reader.number("sum_tolerance", 0.01, 0, 0.5);
  settings.field = reader.string("field", "probabilities");
  if (!settings.min_confidence && !settings.max_entropy && settings.malformed == FlagAction::Ignore)
    reader.fail(options, "confidence checks nothing: set min_confidence, max_entropy, or malformed: flag | reject");
  return std::make_unique<ConfidenceFilter>(std::move(settings));
}

std::unique_ptr<Filter> make_output_hardening_filter(const YAML::Node& options, const FilterBuildContext& context) {
  FilterOptions reader(options, context, "output_hardening", {"top_k", "decimals", "labels_only", "field"});
  HardeningOptions settings;
  if (reader.has("top_k")) settings.top_k = static_cast<std::size_t>(reader.integer("top_k", 1, 1, 1'000'000));
  if (reader.has("decimals")) settings.decimals = static_cast<int>(reader.integer("decimals", 2, 0, 12));
  settings.labels_only = reader.boolean("labels_only", false);
  settings.field = reader.string("field", "probabilities");
  if (settings.labels_only && (settings.top_k || settings.decimals))
    reader.fail(options, "labels_only removes the scores, so top_k and decimals would do nothing",
                "keep labels_only: true alone, or drop it to return hardened scores");
  if (!settings.labels_only && !settings.top_k && !settings.decimals)
    reader.fail(options, "output_hardening changes nothing: set top_k, decimals or labels_only: true");
  if (settings.field == "labels" && settings.labels_only)
    reader.fail(reader.get("field"), "field 'labels' would be overwritten by labels_only");
  return std::make_unique<OutputHardeningFilter>(std::move(settings));
}

std::unique_ptr<Filter> make_redact_filter(const YAML::Node& options, const FilterBuildContext& context) {
  FilterOptions reader(options, context, "redact",
                       {"entities", "secrets", "min_score", "action", "entity_actions", "hash_key_env", "rules", "region",
                        "fields"});
  privacy::DetectorOptions detector_options;
  detector_options.entities = reader.strings("entities");
  detector_options.secrets = reader.boolean("secrets", true);
  detector_options.min_score = reader.number("min_score", 0.5, 0, 1);
  detector_options.default_region = reader.string("region", "US");
  for (const auto& rule_file : reader.strings("rules")) {
    std::filesystem::path path(rule_file);
    if (path.is_relative() && !context.config_dir.empty()) path = std::filesystem::path(context.config_dir) / path;
    if (!std::filesystem::is_regular_file(path))
      reader.fail(reader.get("rules"), "rule file '" + path.string() + "' does not exist",
                  "check the path (relative paths start at the config's folder)");
    detector_options.rule_files.push_back(path.string());
  }
  RedactSettings settings;
  // Everything that needs no detector is checked first: compiling the rules takes a while.
  settings.policy.default_action = parse_redact_action(reader, reader.get("action"), reader.string("action", "mask"));
  bool hashes = settings.policy.default_action == privacy::RedactAction::Hash;
  std::vector<YAML::Node> entity_nodes;
  if (const YAML::Node actions = reader.get("entity_actions"); actions.IsDefined()) {
    if (!actions.IsMap()) reader.fail(actions, "entity_actions must map entity types to actions", "for example {EMAIL_ADDRESS: hash}");
    for (auto it = actions.begin(); it != actions.end(); ++it) {
      if (!it->first.IsScalar() || !it->second.IsScalar())
        reader.fail(it->first, "entity_actions must map entity types to actions", "for example {EMAIL_ADDRESS: hash}");
      const auto action = parse_redact_action(reader, it->second, it->second.Scalar());
      hashes = hashes || action == privacy::RedactAction::Hash;
      settings.policy.per_entity.emplace_back(it->first.Scalar(), action);
      entity_nodes.push_back(it->first);
    }
  }
  const std::string key_env = reader.string("hash_key_env", "AEGIS_REDACT_KEY");
  if (const char* key = std::getenv(key_env.c_str()); key && *key) {
    settings.policy.hash_key = key;
  } else if (hashes && reader.has("hash_key_env")) {
    reader.fail(reader.get("hash_key_env"), "hash_key_env names " + key_env + ", which is not set",
                "export " + key_env + " with the deployment's secret key before starting the gateway");
  }
  for (const auto& field : reader.strings("fields")) {
    std::vector<std::string> steps;
    std::string_view rest = field;
    for (;;) {
      const auto dot = rest.find('.');
      steps.emplace_back(rest.substr(0, dot));
      if (steps.back().empty())
        reader.fail(reader.get("fields"), "field path '" + field + "' has an empty step",
                    "write member names separated by dots, * for any member or element: choices.*.message.content");
      if (dot == std::string_view::npos) break;
      rest.remove_prefix(dot + 1);
    }
    settings.fields.push_back(std::move(steps));
  }
  try {
    settings.detector = std::make_unique<privacy::Detector>(detector_options);
  } catch (const core::Error& e) {
    const YAML::Node where = reader.has("entities") ? reader.get("entities") : (reader.has("rules") ? reader.get("rules") : options);
    reader.fail(where, std::string("redact: ") + e.what(), e.hint());
  }
  const auto known = settings.detector->entity_types();
  for (std::size_t i = 0; i < entity_nodes.size(); ++i) {
    const std::string& entity = settings.policy.per_entity[i].first;
    if (std::find(known.begin(), known.end(), entity) != known.end()) continue;
    std::string list;
    for (const auto& name : known) list += (list.empty() ? "" : ", ") + name;
    reader.fail(entity_nodes[i], "entity_actions names '" + entity + "', which this filter does not detect", "known: " + list);
  }
  return std::make_unique<RedactFilter>(std::move(settings));
}

// Adds flags to x-aegis-flags, keeping those another filter set and never repeating one.
void add_flags(Response& response, const std::vector<std::string>& flags) {
  if (flags.empty()) return;
  std::vector<std::string> all;
  std::string_view existing = response.header(kFlagsHeader);
  while (!existing.empty()) {
    const auto comma = existing.find(',');
    std::string_view item = existing.substr(0, comma);
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (!item.empty()) all.emplace_back(item);
    if (comma == std::string_view::npos) break;
    existing.remove_prefix(comma + 1);
  }
  for (const auto& flag : flags)
    if (std::find(all.begin(), all.end(), flag) == all.end()) all.push_back(flag);
  std::string value;
  for (const auto& flag : all) value += (value.empty() ? "" : ",") + flag;
  response.set_header(kFlagsHeader, value);
}

}  // namespace aegis::gateway
