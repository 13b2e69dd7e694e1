#include "aegis/gateway/filter.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "aegis/core/error.h"

namespace aegis::gateway {
namespace {

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = static_cast<char>(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = static_cast<char>(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

std::string_view find_header(const std::vector<Header>& headers, std::string_view name) {
  for (const auto& [key, value] : headers)
    if (iequals(key, name)) return value;
  return {};
}

std::string lower(std::string text) {
  for (auto& c : text)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return text;
}

// Label values escape backslash, double quote and newline (Prometheus text format 0.0.4).
void append_label_value(std::string& out, std::string_view value) {
  for (char c : value) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
}

}  // namespace

std::string_view Request::header(std::string_view name) const { return find_header(headers, name); }
std::string_view Response::header(std::string_view name) const { return find_header(headers, name); }

void Response::set_header(std::string name, std::string value) {
  name = lower(std::move(name));
  headers.erase(std::remove_if(headers.begin(), headers.end(), [&](const Header& h) { return h.first == name; }),
                headers.end());
  headers.emplace_back(std::move(name), std::move(value));
}

std::optional<nlohmann::json> parse_bounded_json(std::string_view text, int max_depth) {
  bool too_deep = false;
  auto callback = [&](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
    if (depth > max_depth) too_deep = true;
    return !too_deep;
  };
  try {
    auto value = nlohmann::json::parse(text.begin(), text.end(), callback, /*allow_exceptions=*/true);
    if (too_deep) return std::nullopt;
    return value;
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;
  }
}

struct Exchange::Parsed {
  bool request_done = false;
  std::optional<nlohmann::json> request;
  bool response_done = false;
  std::optional<nlohmann::json> response;
};

Exchange::Exchange() = default;
Exchange::~Exchange() = default;
Exchange::Exchange(Exchange&&) noexcept = default;
Exchange& Exchange::operator=(Exchange&&) noexcept = default;

const nlohmann::json* Exchange::request_json() {
  if (!parsed_) parsed_ = std::make_unique<Parsed>();
  if (!parsed_->request_done) {
    parsed_->request_done = true;
    if (!request.body.empty()) parsed_->request = parse_bounded_json(request.body);
  }
  return parsed_->request ? &*parsed_->request : nullptr;
}

nlohmann::json* Exchange::response_json_mutable() {
  if (!parsed_) parsed_ = std::make_unique<Parsed>();
  if (!parsed_->response_done) {
    parsed_->response_done = true;
    if (!response.body.empty()) parsed_->response = parse_bounded_json(response.body);
  }
  if (!parsed_->response) return nullptr;
  response_json_dirty_ = true;
  return &*parsed_->response;
}

void Exchange::commit_response_json() {
  if (!response_json_dirty_ || !parsed_ || !parsed_->response) return;
  response.body = parsed_->response->dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  response_json_dirty_ = false;
}

void Exchange::response_body_replaced() {
  if (parsed_) {
    parsed_->response_done = false;
    parsed_->response.reset();
  }
  response_json_dirty_ = false;
}

void Exchange::request_body_replaced() {
  if (parsed_) {
    parsed_->request_done = false;
    parsed_->request.reset();
  }
}

void MetricsWriter::counter(std::string_view family, std::string_view help, const std::vector<Header>& labels,
                            double value) {
  sample("counter", family, help, labels, value);
}

void MetricsWriter::gauge(std::string_view family, std::string_view help, const std::vector<Header>& labels,
                          double value) {
  sample("gauge", family, help, labels, value);
}

void MetricsWriter::sample(std::string_view type, std::string_view family, std::string_view help,
                           const std::vector<Header>& labels, double value) {
  if (std::find(declared_.begin(), declared_.end(), family) == declared_.end()) {
    declared_.emplace_back(family);
    text_ += "# HELP ";
    text_ += family;
    text_ += ' ';
    text_ += help;
    text_ += "\n# TYPE ";
    text_ += family;
    text_ += ' ';
    text_ += type;
    text_ += '\n';
  }
  text_ += family;
  if (!labels.empty()) {
    text_ += '{';
    for (std::size_t i = 0; i < labels.size(); ++i) {
      if (i) text_ += ',';
      text_ += labels[i].first;
      text_ += "=\"";
      append_label_value(text_, labels[i].second);
      text_ += '"';
    }
    text_ += '}';
  }
  char number[64];
  if (std::isfinite(value) && value == std::floor(value) && std::fabs(value) < 1e15)
    std::snprintf(number, sizeof number, " %.0f\n", value);
  else
    std::snprintf(number, sizeof number, " %.17g\n", value);
  text_ += number;
}

void throw_config_error(const std::string& config_file, const YAML::Node& node, const std::string& message,
                        const std::string& hint) {
  std::string where = config_file.empty() ? std::string("gateway config") : config_file;
  const YAML::Mark mark = node.Mark();
  if (mark.line >= 0) where += ":" + std::to_string(mark.line + 1) + ":" + std::to_string(mark.column + 1);
  throw core::Error(where + ": " + message, hint.empty() ? "fix the gateway configuration and start again" : hint);
}

void throw_config_error(const FilterBuildContext& context, const YAML::Node& node, const std::string& message,
                        const std::string& hint) {
  throw_config_error(context.config_file, node, message, hint);
}

}  // namespace aegis::gateway
