#include "aegis/scan/callable_policy.h"

#include <fstream>

#include "aegis/core/error.h"

namespace aegis::data {
extern const std::string_view pickle_allowlist;
extern const std::string_view pickle_denylist;
}  // namespace aegis::data

namespace aegis::scan {

namespace {
std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t' || s.front() == '\r')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

bool module_in_subtree(std::string_view module, std::string_view root) {
  return module == root || (module.size() > root.size() && module.starts_with(root) && module[root.size()] == '.');
}
}  // namespace

std::vector<CallablePolicy::Rule> CallablePolicy::parse_table(std::string_view text) {
  std::vector<Rule> rules;
  while (!text.empty()) {
    auto eol = text.find('\n');
    std::string_view line = trim(text.substr(0, eol));
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    if (line.empty() || line.front() == '#') continue;
    auto space = line.find_first_of(" \t");
    if (space == std::string_view::npos) continue;
    Rule rule;
    std::string_view module = line.substr(0, space);
    if (module.ends_with(".*")) {
      rule.subtree = true;
      module.remove_suffix(2);
    }
    rule.module = std::string(module);
    rule.name = std::string(trim(line.substr(space + 1)));
    // A whole deny-listed module covers its submodules too (os.path is as dangerous as os).
    if (rule.name == "*") rule.subtree = true;
    rules.push_back(std::move(rule));
  }
  return rules;
}

CallablePolicy::CallablePolicy()
    : allowed_(parse_table(data::pickle_allowlist)), denied_(parse_table(data::pickle_denylist)) {}

void CallablePolicy::allow(std::string_view dotted) {
  dotted = trim(dotted);
  if (dotted.empty()) return;
  Rule rule;
  auto colon = dotted.find(':');
  auto split = colon != std::string_view::npos ? colon : dotted.rfind('.');
  if (split == std::string_view::npos || split == 0 || split + 1 >= dotted.size())
    throw core::Error("cannot read allowed callable '" + std::string(dotted) + "'",
                      "write it as module.name (for example mypkg.layers.MyBlock) or module.* for a whole module");
  rule.module = std::string(dotted.substr(0, split));
  rule.name = std::string(dotted.substr(split + 1));
  if (rule.name == "*") rule.subtree = true;
  allowed_.push_back(std::move(rule));
}

void CallablePolicy::allow_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw core::Error("cannot read allow-list file " + path, "check the path given to --allow-file");
  std::string line;
  while (std::getline(in, line)) {
    std::string_view view = trim(line);
    if (view.empty() || view.front() == '#') continue;
    allow(view);
  }
}

bool CallablePolicy::matches(const Rule& rule, std::string_view module, std::string_view name, bool attribute_paths) {
  bool module_ok = rule.subtree ? module_in_subtree(module, rule.module) : module == rule.module;
  if (!module_ok) return false;
  if (rule.name == "*") return true;
  if (rule.name == "@class") return !name.empty() && name.front() >= 'A' && name.front() <= 'Z' &&
                                    name.find('.') == std::string_view::npos;
  if (name == rule.name) return true;
  if (!attribute_paths) return false;
  // A dotted name such as "Trace.run" reaches an attribute of the listed object.
  return name.size() > rule.name.size() && name.starts_with(rule.name) && name[rule.name.size()] == '.';
}

CallableVerdict CallablePolicy::classify(std::string_view module, std::string_view name) const {
  for (const auto& rule : allowed_)
    if (matches(rule, module, name, false)) return CallableVerdict::Allowed;
  for (const auto& rule : denied_)
    if (matches(rule, module, name, true)) return CallableVerdict::Denied;
  return CallableVerdict::Unknown;
}

}  // namespace aegis::scan
