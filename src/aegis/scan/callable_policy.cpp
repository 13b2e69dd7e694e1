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
  // An allow rule never covers a dotted name: "torch.nn.functional" + "torch.os.system" walks module
  // attributes to somewhere else entirely.
  if (!attribute_paths && name.find('.') != std::string_view::npos) return false;
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

std::string_view CallablePolicy::python3_module(std::string_view module) {
  // The renames that Python 3's Unpickler applies to protocol 0-2 pickles (fix_imports=True).
  static constexpr std::pair<std::string_view, std::string_view> kRenames[] = {
      {"__builtin__", "builtins"}, {"copy_reg", "copyreg"}, {"cPickle", "pickle"}, {"Queue", "queue"},
      {"exceptions", "builtins"}, {"UserDict", "collections"}, {"UserList", "collections"},
      {"UserString", "collections"}, {"commands", "subprocess"}, {"urllib2", "urllib.request"},
      {"httplib", "http.client"}, {"cStringIO", "io"}, {"StringIO", "io"}, {"thread", "_thread"},
      {"dummy_thread", "_dummy_thread"}, {"SocketServer", "socketserver"}, {"repr", "reprlib"},
      {"_winreg", "winreg"}, {"ConfigParser", "configparser"}, {"__main__", "__main__"}};
  for (const auto& [old_name, new_name] : kRenames)
    if (module == old_name) return new_name;
  return module;
}

CallableVerdict CallablePolicy::classify_exact(std::string_view module, std::string_view name) const {
  for (const auto& rule : allowed_)
    if (matches(rule, module, name, false)) return CallableVerdict::Allowed;
  for (const auto& rule : denied_)
    if (matches(rule, module, name, true)) return CallableVerdict::Denied;
  return CallableVerdict::Unknown;
}

CallableVerdict CallablePolicy::classify(std::string_view module, std::string_view name) const {
  module = python3_module(module);
  auto verdict = classify_exact(module, name);
  if (verdict != CallableVerdict::Unknown || name.find('.') == std::string_view::npos) return verdict;
  // Protocol 4 resolves a dotted name by getattr from the module: torch + "serialization.os.system"
  // reaches os.system through module attributes. Grade every module/name split of the path, so
  // that a denied callable anywhere along it is caught.
  std::vector<std::string_view> parts;
  std::string path = std::string(module) + "." + std::string(name);
  std::string_view rest = path;
  while (!rest.empty() && parts.size() < 32) {
    auto dot = rest.find('.');
    parts.push_back(rest.substr(0, dot));
    rest = dot == std::string_view::npos ? std::string_view{} : rest.substr(dot + 1);
  }
  for (std::size_t start = 1; start + 1 < parts.size(); ++start) {
    for (std::size_t split = start + 1; split < parts.size(); ++split) {
      std::string sub_module, sub_name;
      for (std::size_t i = start; i < split; ++i) sub_module += (i > start ? "." : "") + std::string(parts[i]);
      for (std::size_t i = split; i < parts.size(); ++i) sub_name += (i > split ? "." : "") + std::string(parts[i]);
      if (classify_exact(sub_module, sub_name) == CallableVerdict::Denied) return CallableVerdict::Denied;
    }
  }
  return CallableVerdict::Unknown;
}

}  // namespace aegis::scan
