// The infra rule files: one YAML file per service (data/infra/infra_<service>.yaml, embedded), each
// with static rules (`rules:`) and, for network services, fingerprints and live probes. Every regex
// is compiled once here so that a broken user rule fails at load time with its file and line.
#include <re2/re2.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <set>
#include <sstream>

#include "aegis/core/error.h"
#include "aegis/infra/infra.h"

namespace aegis::data {
extern const std::string_view infra_jupyter;
extern const std::string_view infra_mlflow;
extern const std::string_view infra_ray;
extern const std::string_view infra_torchserve;
extern const std::string_view infra_triton;
extern const std::string_view infra_vllm;
extern const std::string_view infra_ollama;
extern const std::string_view infra_tgi;
extern const std::string_view infra_gradio;
extern const std::string_view infra_docker;
extern const std::string_view infra_kubernetes;
extern const std::string_view infra_ci;
extern const std::string_view infra_notebooks;
}  // namespace aegis::data

namespace aegis::infra {
namespace {

const std::set<std::string> kStructuralKinds = {"dockerfile", "compose", "kubernetes", "workflow", "notebook"};
const std::set<std::string> kSafeMethods = {"GET", "HEAD", "OPTIONS"};
const std::set<std::string> kJsonTypes = {"object", "array", "string", "number", "boolean", "any"};

struct Context {
  std::string origin;
  [[noreturn]] void fail(const YAML::Node& node, const std::string& what) const {
    std::string where = origin;
    if (node && node.Mark().line >= 0) where += ":" + std::to_string(node.Mark().line + 1);
    throw core::Error("infra rules " + where + ": " + what,
                      "fix the entry; data/infra/README.md describes the rule file schema");
  }
};

std::string scalar(const Context& cx, const YAML::Node& node, const char* key, bool required) {
  const YAML::Node value = node[key];
  if (!value) {
    if (required) cx.fail(node, std::string("missing '") + key + "'");
    return {};
  }
  if (!value.IsScalar()) cx.fail(value, std::string("'") + key + "' must be a string");
  return value.as<std::string>();
}

std::vector<std::string> strings(const Context& cx, const YAML::Node& node, const char* key) {
  std::vector<std::string> out;
  const YAML::Node value = node[key];
  if (!value || value.IsNull()) return out;
  if (value.IsScalar()) return {value.as<std::string>()};
  if (!value.IsSequence()) cx.fail(value, std::string("'") + key + "' must be a list of strings");
  for (const auto& item : value) {
    if (!item.IsScalar()) cx.fail(item, std::string("'") + key + "' must be a list of strings");
    out.push_back(item.as<std::string>());
  }
  return out;
}

std::vector<int> ports(const Context& cx, const YAML::Node& node, const char* key) {
  std::vector<int> out;
  const YAML::Node value = node[key];
  if (!value || value.IsNull()) return out;
  if (!value.IsSequence()) cx.fail(value, std::string("'") + key + "' must be a list of port numbers");
  for (const auto& item : value) {
    int port = 0;
    try {
      port = item.as<int>();
    } catch (const YAML::Exception&) {
      cx.fail(item, std::string("'") + key + "' must be a list of port numbers");
    }
    if (port < 1 || port > 65535) cx.fail(item, "port " + std::to_string(port) + " is out of range");
    out.push_back(port);
  }
  return out;
}

std::map<std::string, std::string> string_map(const Context& cx, const YAML::Node& node, const char* key) {
  std::map<std::string, std::string> out;
  const YAML::Node value = node[key];
  if (!value || value.IsNull()) return out;
  if (!value.IsMap()) cx.fail(value, std::string("'") + key + "' must be a mapping of strings");
  for (const auto& item : value) {
    if (!item.first.IsScalar() || !(item.second.IsScalar() || item.second.IsNull()))
      cx.fail(item.first, std::string("'") + key + "' must map strings to strings");
    out[item.first.as<std::string>()] = item.second.IsNull() ? std::string() : item.second.as<std::string>();
  }
  return out;
}

void check_regex(const Context& cx, const YAML::Node& node, const std::string& pattern, const std::string& what) {
  if (pattern.empty()) return;
  RE2::Options options;
  options.set_log_errors(false);
  RE2 re(pattern, options);
  if (!re.ok()) cx.fail(node, what + " is not a valid RE2 regex (" + re.error() + "): " + pattern);
}

RuleInfo parse_info(const Context& cx, const YAML::Node& node, const std::string& service) {
  RuleInfo info;
  info.id = scalar(cx, node, "id", true);
  static const RE2 id_shape(R"(infra\.[a-z0-9][a-z0-9_-]*\.[a-z0-9][a-z0-9_.-]*)");
  if (!RE2::FullMatch(info.id, id_shape))
    cx.fail(node, "rule id '" + info.id + "' must look like infra.<service>.<name> (lower case, digits, - _ .)");
  info.service = service;
  const std::string severity = scalar(cx, node, "severity", true);
  const auto parsed = core::parse_severity(severity);
  if (!parsed) cx.fail(node["severity"], "severity '" + severity + "' is not one of critical, high, medium, low, info");
  info.severity = *parsed;
  info.title = scalar(cx, node, "title", true);
  info.cves = strings(cx, node, "cve");
  static const RE2 cve_shape(R"(CVE-\d{4}-\d{4,7})");
  for (const auto& cve : info.cves)
    if (!RE2::FullMatch(cve, cve_shape)) cx.fail(node["cve"], "'" + cve + "' is not a CVE id (CVE-YYYY-NNNN)");
  info.advisory = scalar(cx, node, "advisory", false);
  info.atlas = strings(cx, node, "atlas");
  if (info.atlas.empty()) cx.fail(node, "rule '" + info.id + "' names no ATLAS technique ('atlas: [AML.T0049]')");
  static const RE2 atlas_shape(R"(AML\.T\d{4}(\.\d{3})?)");
  for (const auto& id : info.atlas)
    if (!RE2::FullMatch(id, atlas_shape)) cx.fail(node["atlas"], "'" + id + "' is not an ATLAS technique id (AML.T0049)");
  info.nist_ai_rmf = strings(cx, node, "nist_ai_rmf");
  if (info.nist_ai_rmf.empty()) info.nist_ai_rmf = {"MEASURE 2.7"};
  info.remediation = scalar(cx, node, "remediation", true);
  info.source_file = cx.origin;
  return info;
}

ProbeRequest parse_request(const Context& cx, const YAML::Node& node) {
  ProbeRequest request;
  if (!node || node.IsNull()) return request;
  if (!node.IsMap()) cx.fail(node, "'request' must be a mapping (method, path, headers)");
  request.method = scalar(cx, node, "method", false);
  if (request.method.empty()) request.method = "GET";
  std::transform(request.method.begin(), request.method.end(), request.method.begin(),
                 [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  if (!kSafeMethods.count(request.method))
    cx.fail(node, "method '" + request.method + "' is not allowed: probes send only GET, HEAD and OPTIONS");
  request.path = scalar(cx, node, "path", false);
  if (!request.path.empty() && request.path.front() != '/') cx.fail(node, "path '" + request.path + "' must start with '/'");
  for (char c : request.path)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) cx.fail(node, "path has a space or control character");
  request.headers = string_map(cx, node, "headers");
  for (const auto& [name, value] : request.headers)
    if (name.find_first_of("\r\n:") != std::string::npos || value.find_first_of("\r\n") != std::string::npos)
      cx.fail(node, "header '" + name + "' has a line break or colon");
  return request;
}

ResponseMatch parse_expect(const Context& cx, const YAML::Node& node) {
  ResponseMatch match;
  if (!node || node.IsNull()) return match;
  if (!node.IsMap()) cx.fail(node, "'expect' must be a mapping (status, headers, body, json)");
  if (node["status"]) {
    if (node["status"].IsScalar()) {
      match.status.push_back(node["status"].as<int>());
    } else {
      for (const auto& item : node["status"]) match.status.push_back(item.as<int>());
    }
    for (int s : match.status)
      if (s < 100 || s > 599) cx.fail(node["status"], "status " + std::to_string(s) + " is not an HTTP status");
  }
  match.headers = string_map(cx, node, "headers");
  for (const auto& [name, pattern] : match.headers) check_regex(cx, node, pattern, "header regex for '" + name + "'");
  match.body = scalar(cx, node, "body", false);
  check_regex(cx, node, match.body, "body regex");
  match.json = string_map(cx, node, "json");
  for (const auto& [pointer, type] : match.json) {
    if (!pointer.empty() && pointer.front() != '/') cx.fail(node["json"], "JSON pointer '" + pointer + "' must start with '/'");
    if (!kJsonTypes.count(type))
      cx.fail(node["json"], "JSON type '" + type + "' is not one of object, array, string, number, boolean, any");
  }
  return match;
}

Fingerprint parse_fingerprint(const Context& cx, const YAML::Node& node) {
  if (!node.IsMap()) cx.fail(node, "a fingerprint must be a mapping (request, expect, version)");
  Fingerprint fp;
  fp.request = parse_request(cx, node["request"]);
  if (fp.request.path.empty()) cx.fail(node, "a fingerprint needs request.path");
  fp.expect = parse_expect(cx, node["expect"]);
  if (const YAML::Node version = node["version"]) {
    if (!version.IsMap()) cx.fail(version, "'version' must be a mapping (pointer | header | regex)");
    fp.version_pointer = scalar(cx, version, "pointer", false);
    fp.version_header = scalar(cx, version, "header", false);
    fp.version_regex = scalar(cx, version, "regex", false);
    check_regex(cx, version, fp.version_regex, "version regex");
  }
  return fp;
}

ProbeRule parse_probe(const Context& cx, const YAML::Node& node, const std::string& service) {
  if (!node.IsMap()) cx.fail(node, "a probe must be a mapping");
  ProbeRule rule;
  rule.info = parse_info(cx, node, service);
  rule.request = parse_request(cx, node["request"]);
  rule.expect = parse_expect(cx, node["expect"]);
  rule.version_below = scalar(cx, node, "version_below", false);
  if (rule.request.path.empty() && rule.version_below.empty())
    cx.fail(node, "probe '" + rule.info.id + "' needs a request.path or a version_below");
  if (!rule.version_below.empty() && !compare_versions(rule.version_below, rule.version_below))
    cx.fail(node, "version_below '" + rule.version_below + "' is not a dotted version");
  return rule;
}

CommandMatch parse_command(const Context& cx, const YAML::Node& node) {
  if (!node.IsMap()) cx.fail(node, "'command' must be a mapping");
  CommandMatch m;
  m.program = scalar(cx, node, "program", true);
  check_regex(cx, node, m.program, "program regex");
  m.subcommand = scalar(cx, node, "subcommand", false);
  check_regex(cx, node, m.subcommand, "subcommand regex");
  m.host_flags = strings(cx, node, "host_flags");
  m.host_env = strings(cx, node, "host_env");
  m.default_host = scalar(cx, node, "default_host", false);
  if ((!m.host_flags.empty() || !m.host_env.empty()) && m.default_host.empty())
    cx.fail(node, "a listening condition (host_flags/host_env) needs default_host (the service's own default)");
  m.without_flags = strings(cx, node, "without_flags");
  m.without_env = strings(cx, node, "without_env");
  m.flag_values = string_map(cx, node, "flag_values");
  for (const auto& [flag, pattern] : m.flag_values) check_regex(cx, node, pattern, "flag_values regex for " + flag);
  m.any_flag_values = string_map(cx, node, "any_flag_values");
  for (const auto& [flag, pattern] : m.any_flag_values) check_regex(cx, node, pattern, "any_flag_values regex for " + flag);
  m.env_values = string_map(cx, node, "env_values");
  for (const auto& [name, pattern] : m.env_values) check_regex(cx, node, pattern, "env_values regex for " + name);
  return m;
}

PropertiesMatch parse_properties(const Context& cx, const YAML::Node& node) {
  if (!node.IsMap()) cx.fail(node, "'properties' must be a mapping (files, all)");
  PropertiesMatch m;
  m.files = strings(cx, node, "files");
  if (m.files.empty()) cx.fail(node, "'properties' needs files (name globs)");
  const YAML::Node all = node["all"];
  if (!all || !all.IsSequence() || all.size() == 0) cx.fail(node, "'properties' needs 'all', a list of conditions");
  for (const auto& item : all) {
    if (!item.IsMap()) cx.fail(item, "a property condition must be a mapping (key, matches, default)");
    PropertyCondition c;
    c.keys = strings(cx, item, "key");
    if (c.keys.empty()) cx.fail(item, "a property condition needs 'key' (one name or a list of alternatives)");
    c.matches = scalar(cx, item, "matches", false);
    check_regex(cx, item, c.matches, "matches");
    c.not_matches = scalar(cx, item, "not_matches", false);
    check_regex(cx, item, c.not_matches, "not_matches");
    if (item["default"]) c.default_value = item["default"].IsNull() ? std::string() : item["default"].as<std::string>();
    m.all.push_back(std::move(c));
  }
  return m;
}

StructuralMatch parse_structural(const Context& cx, const YAML::Node& node, const std::string& kind) {
  if (!node.IsMap()) cx.fail(node, "'" + kind + "' must be a mapping with a 'check'");
  StructuralMatch m;
  m.kind = kind;
  m.check = scalar(cx, node, "check", true);
  m.ports = ports(cx, node, "ports");
  for (const auto& item : node) {
    const std::string key = item.first.as<std::string>();
    if (key == "check" || key == "ports") continue;
    if (!item.second.IsScalar()) cx.fail(item.second, "parameter '" + key + "' must be a string");
    m.params[key] = item.second.as<std::string>();
    if (key.size() > 6 && key.compare(key.size() - 6, 6, "_regex") == 0)
      check_regex(cx, item.second, m.params[key], "parameter " + key);
  }
  return m;
}

StaticRule parse_static(const Context& cx, const YAML::Node& node, const std::string& service) {
  if (!node.IsMap()) cx.fail(node, "a rule must be a mapping");
  StaticRule rule;
  rule.info = parse_info(cx, node, service);
  int kinds = 0;
  if (node["command"]) {
    rule.kind = StaticRule::Kind::Command;
    rule.command = parse_command(cx, node["command"]);
    ++kinds;
  }
  if (node["properties"]) {
    rule.kind = StaticRule::Kind::Properties;
    rule.properties = parse_properties(cx, node["properties"]);
    ++kinds;
  }
  for (const auto& kind : kStructuralKinds) {
    if (!node[kind]) continue;
    rule.kind = StaticRule::Kind::Structural;
    rule.structural = parse_structural(cx, node[kind], kind);
    ++kinds;
  }
  if (kinds != 1)
    cx.fail(node, "rule '" + rule.info.id +
                      "' needs exactly one matcher: command, properties, dockerfile, compose, kubernetes, workflow or notebook");
  return rule;
}

template <typename Rule>
void upsert(std::vector<Rule>& rules, Rule rule) {
  for (auto& existing : rules)
    if (existing.info.id == rule.info.id) {
      existing = std::move(rule);
      return;
    }
  rules.push_back(std::move(rule));
}

}  // namespace

std::vector<const RuleInfo*> RuleSet::all_rules() const {
  std::vector<const RuleInfo*> out;
  for (const auto& rule : static_rules) out.push_back(&rule.info);
  for (const auto& service : services)
    for (const auto& probe : service.probes) out.push_back(&probe.info);
  return out;
}

void load_rule_text(RuleSet& rules, const std::string& text, const std::string& origin) {
  const Context cx{origin};
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw core::Error("infra rules " + origin + ": not valid YAML (line " + std::to_string(e.mark.line + 1) + "): " + e.msg,
                      "fix the YAML; data/infra/README.md describes the rule file schema");
  }
  if (!root.IsMap()) cx.fail(root, "the file must be a mapping with 'service' and 'rules' (or 'probes')");
  const std::string service = scalar(cx, root, "service", true);
  static const RE2 service_shape(R"([a-z0-9][a-z0-9_-]*)");
  if (!RE2::FullMatch(service, service_shape)) cx.fail(root, "service '" + service + "' must be lower case letters, digits, - or _");

  // Ids are unique across all files; a later file replaces a rule by id (that is how users override).
  std::set<std::string> seen;
  const auto once = [&](const YAML::Node& node, const std::string& id) {
    if (!seen.insert(id).second) cx.fail(node, "rule id '" + id + "' appears twice in this file");
  };

  if (const YAML::Node list = root["rules"]; list && !list.IsNull()) {
    if (!list.IsSequence()) cx.fail(list, "'rules' must be a list");
    for (const auto& node : list) {
      StaticRule rule = parse_static(cx, node, service);
      once(node, rule.info.id);
      upsert(rules.static_rules, std::move(rule));
    }
  }

  if (const YAML::Node list = root["images"]; list && !list.IsNull()) {
    if (!list.IsSequence()) cx.fail(list, "'images' must be a list of {image, entrypoint, cmd, env, user}");
    for (const auto& node : list) {
      if (!node.IsMap()) cx.fail(node, "an image default must be a mapping {image, entrypoint, env}");
      ImageDefault image;
      image.service = service;
      image.image = scalar(cx, node, "image", true);
      check_regex(cx, node, image.image, "image regex");
      image.entrypoint = scalar(cx, node, "entrypoint", false);
      image.cmd = scalar(cx, node, "cmd", false);
      image.user = scalar(cx, node, "user", false);
      image.env = string_map(cx, node, "env");
      rules.images.push_back(std::move(image));
    }
  }

  const YAML::Node fingerprints = root["fingerprints"];
  const YAML::Node probes = root["probes"];
  const bool has_network = (fingerprints && fingerprints.IsSequence() && fingerprints.size() > 0) ||
                           (probes && probes.IsSequence() && probes.size() > 0);
  if (!has_network) return;
  ServiceSpec* spec = nullptr;
  for (auto& existing : rules.services)
    if (existing.service == service) spec = &existing;
  if (!spec) {
    rules.services.push_back(ServiceSpec{});
    spec = &rules.services.back();
    spec->service = service;
  }
  const std::string name = scalar(cx, root, "name", false);
  if (!name.empty()) spec->name = name;
  if (spec->name.empty()) spec->name = service;
  if (const auto p = ports(cx, root, "ports"); !p.empty()) spec->default_ports = p;
  if (fingerprints && !fingerprints.IsNull()) {
    if (!fingerprints.IsSequence()) cx.fail(fingerprints, "'fingerprints' must be a list");
    if (fingerprints.size() > 0) spec->fingerprints.clear();
    for (const auto& node : fingerprints) spec->fingerprints.push_back(parse_fingerprint(cx, node));
  }
  if (probes && !probes.IsNull()) {
    if (!probes.IsSequence()) cx.fail(probes, "'probes' must be a list");
    for (const auto& node : probes) {
      ProbeRule rule = parse_probe(cx, node, service);
      once(node, rule.info.id);
      upsert(spec->probes, std::move(rule));
    }
  }
  if (spec->fingerprints.empty())
    cx.fail(root, "service '" + service + "' has probes but no fingerprints: how is it recognised on a port?");
}

void load_rule_file(RuleSet& rules, const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec) throw core::Error("cannot read infra rule file " + path.string() + ": " + ec.message(), "check the --rules path");
  if (size > (4u << 20)) throw core::Error("infra rule file " + path.string() + " is over 4 MiB", "split it per service");
  std::ifstream in(path, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  if (!in && !in.eof()) throw core::Error("cannot read infra rule file " + path.string(), "check its permissions");
  load_rule_text(rules, text.str(), path.string());
}

RuleSet builtin_rules() {
  RuleSet rules;
  const std::pair<const char*, std::string_view> files[] = {
      {"jupyter", data::infra_jupyter},     {"mlflow", data::infra_mlflow}, {"ray", data::infra_ray},
      {"torchserve", data::infra_torchserve}, {"triton", data::infra_triton}, {"vllm", data::infra_vllm},
      {"ollama", data::infra_ollama},       {"tgi", data::infra_tgi},       {"gradio", data::infra_gradio},
      {"docker", data::infra_docker},       {"kubernetes", data::infra_kubernetes}, {"ci", data::infra_ci},
      {"notebooks", data::infra_notebooks}};
  for (const auto& [name, text] : files)
    load_rule_text(rules, std::string(text), std::string("<builtin>/infra_") + name + ".yaml");
  return rules;
}

std::optional<int> compare_versions(const std::string& a, const std::string& b) {
  // Leading "v" and anything after the numeric dotted part ("rc1", "+cpu", ".dev0") are ignored.
  const auto numbers = [](std::string_view text) -> std::optional<std::vector<long>> {
    if (!text.empty() && (text.front() == 'v' || text.front() == 'V')) text.remove_prefix(1);
    std::vector<long> out;
    std::size_t i = 0;
    while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
      long value = 0;
      std::size_t digits = 0;
      while (i < text.size() && std::isdigit(static_cast<unsigned char>(text[i]))) {
        if (digits < 9) value = value * 10 + (text[i] - '0');
        ++digits;
        ++i;
      }
      out.push_back(value);
      if (out.size() >= 8) break;
      if (i + 1 < text.size() && text[i] == '.' && std::isdigit(static_cast<unsigned char>(text[i + 1])))
        ++i;
      else
        break;
    }
    if (out.empty()) return std::nullopt;
    return out;
  };
  const auto x = numbers(a);
  const auto y = numbers(b);
  if (!x || !y) return std::nullopt;
  const std::size_t n = std::max(x->size(), y->size());
  for (std::size_t i = 0; i < n; ++i) {
    const long p = i < x->size() ? (*x)[i] : 0;
    const long q = i < y->size() ? (*y)[i] : 0;
    if (p != q) return p < q ? -1 : 1;
  }
  return 0;
}

core::Finding make_finding(const RuleInfo& rule, std::string evidence) {
  core::Finding f;
  f.rule_id = rule.id;
  f.severity = rule.severity;
  f.title = rule.title;
  f.evidence = std::move(evidence);
  f.atlas = rule.atlas;
  f.nist_ai_rmf = rule.nist_ai_rmf;
  f.remediation = rule.remediation;
  std::string props = "{\"service\":\"" + rule.service + "\"";
  if (!rule.cves.empty()) {
    props += ",\"cve\":[";
    for (std::size_t i = 0; i < rule.cves.size(); ++i) props += (i ? ",\"" : "\"") + rule.cves[i] + "\"";
    props += "]";
  }
  if (!rule.advisory.empty()) {
    std::string escaped;
    for (char c : rule.advisory)
      if (c != '"' && c != '\\' && static_cast<unsigned char>(c) >= 0x20) escaped += c;
    props += ",\"advisory\":\"" + escaped + "\"";
  }
  props += "}";
  f.properties_json = props;
  return f;
}

}  // namespace aegis::infra
