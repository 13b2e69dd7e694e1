// The threat model: rules as data (data/threat/threat_rules.yaml) keyed on an asset's attributes say
// which ATLAS techniques apply to it, why, and which Aegis checks produce evidence about them.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <set>
#include <sstream>

#include "aegis/core/error.h"
#include "aegis/core/yaml_guard.h"
#include "aegis/threat/threat.h"

namespace aegis::data {
extern const std::string_view threat_rules;
}

namespace aegis::threat {

namespace {

constexpr std::array<std::string_view, 6> kStrideNames{"spoofing", "tampering", "repudiation", "information-disclosure",
                                                       "denial-of-service", "elevation-of-privilege"};

const std::set<std::string, std::less<>> kAttributes{
    "kind", "exposure", "llm", "task", "framework", "sensitivity", "source", "stage", "criticality", "sector", "api",
    "has_files", "has_endpoint", "has_gateway", "has_datasets", "third_party"};

std::vector<std::string> strings(const YAML::Node& node) {
  std::vector<std::string> out;
  if (!node) return out;
  if (node.IsScalar()) return {node.Scalar()};
  if (node.IsSequence())
    for (const auto& item : node)
      if (item.IsScalar()) out.push_back(item.Scalar());
  return out;
}

std::vector<ThreatRule> parse_rules(std::string_view text, const std::string& origin, const AtlasCatalog& catalog) {
  const std::string hint = "fix the rule file (its shape is described in data/threat/README.md)";
  YAML::Node root;
  try {
    if (core::yaml_too_deep(text, 16)) throw core::Error(origin + " nests deeper than a rule file does", hint);
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    throw core::Error(origin + " line " + std::to_string(e.mark.line + 1) + ": not valid YAML: " + e.msg, hint);
  } catch (const core::FormatError& e) {
    throw core::Error(origin + ": not valid YAML: " + e.what(), hint);
  }
  const YAML::Node list = root.IsMap() ? root["rules"] : YAML::Node();
  if (!list || !list.IsSequence()) throw core::Error(origin + " has no 'rules:' list", hint);
  const auto checks = all_checks();
  std::vector<ThreatRule> rules;
  for (const auto& node : list) {
    const std::string where = origin + " line " + std::to_string(node.Mark().line + 1);
    if (!node.IsMap()) throw core::Error(where + ": a rule is a mapping", hint);
    ThreatRule rule;
    rule.technique = node["technique"] && node["technique"].IsScalar() ? node["technique"].Scalar() : "";
    if (!catalog.technique(rule.technique))
      throw core::Error(where + ": technique '" + rule.technique + "' is not in ATLAS " + catalog.version(), hint);
    if (node["when"]) {
      if (!node["when"].IsMap()) throw core::Error(where + ": 'when' maps attributes to values", hint);
      for (const auto& entry : node["when"]) {
        const std::string attribute = entry.first.Scalar();
        if (!kAttributes.contains(attribute)) throw core::Error(where + ": unknown attribute '" + attribute + "' in 'when'", hint);
        rule.when[attribute] = strings(entry.second);
      }
    }
    rule.rationale = node["rationale"] && node["rationale"].IsScalar() ? node["rationale"].Scalar() : "";
    if (rule.rationale.empty()) throw core::Error(where + ": the rule needs a 'rationale' (why the technique applies)", hint);
    rule.checks = strings(node["checks"]);
    for (const auto& check : rule.checks)
      if (std::find(checks.begin(), checks.end(), check) == checks.end()) throw core::Error(where + ": unknown check '" + check + "'", hint);
    for (const auto& s : strings(node["stride"])) {
      auto category = parse_stride(s);
      if (!category) throw core::Error(where + ": unknown STRIDE category '" + s + "'", hint);
      rule.stride.push_back(*category);
    }
    rule.nist_ai_rmf = strings(node["nist_ai_rmf"]);
    rules.push_back(std::move(rule));
  }
  return rules;
}

bool matches(const ThreatRule& rule, const std::map<std::string, std::vector<std::string>>& attributes) {
  for (const auto& condition : rule.when) {
    const auto& accepted = condition.second;
    const auto it = attributes.find(condition.first);
    if (it == attributes.end()) return false;
    const bool any = std::any_of(it->second.begin(), it->second.end(), [&](const std::string& value) {
      return std::find(accepted.begin(), accepted.end(), value) != accepted.end();
    });
    if (!any) return false;
  }
  return true;
}

template <typename T>
void add_unique(std::vector<T>& into, const std::vector<T>& values) {
  for (const auto& v : values)
    if (std::find(into.begin(), into.end(), v) == into.end()) into.push_back(v);
}

}  // namespace

std::vector<std::string_view> all_checks() {
  return {kCheckScan, kCheckVerify, kCheckPii, kCheckRobustness, kCheckMembership, kCheckExtraction, kCheckRedteam, kCheckGateway, kCheckInfra};
}

std::string_view to_string(Stride category) { return kStrideNames[static_cast<std::size_t>(category)]; }

std::optional<Stride> parse_stride(std::string_view text) {
  for (std::size_t i = 0; i < kStrideNames.size(); ++i)
    if (kStrideNames[i] == text) return static_cast<Stride>(i);
  return std::nullopt;
}

std::vector<ThreatRule> shipped_threat_rules(const AtlasCatalog& catalog) {
  return parse_rules(data::threat_rules, "the shipped threat_rules.yaml", catalog);
}

std::vector<ThreatRule> load_threat_rules(const std::filesystem::path& file, const AtlasCatalog& catalog) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw core::Error("cannot read the threat rules " + file.string(), "check the path given to --rules");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_rules(text.str(), file.string(), catalog);
}

std::vector<ThreatRule> parse_threat_rules(std::string_view yaml_text, std::string_view origin, const AtlasCatalog& catalog) {
  return parse_rules(yaml_text, std::string(origin), catalog);
}

std::map<std::string, std::vector<std::string>> asset_attributes(const Asset& asset, const Inventory& inventory) {
  std::map<std::string, std::vector<std::string>> a;
  auto flag = [](bool b) { return std::vector<std::string>{b ? "true" : "false"}; };
  a["kind"] = {std::string(to_string(asset.kind))};
  std::string exposure = asset.exposure;
  std::string gateway = asset.gateway;
  bool llm = asset.llm;
  std::vector<std::string> sensitivity = asset.sensitivity;
  std::string source = asset.source;
  // A model carries its training data's sensitivity (membership inference and inversion reveal
  // it) and the exposure and gateway of the endpoint that serves it.
  for (const auto& id : asset.datasets) {
    if (const Asset* dataset = inventory.find(id)) {
      add_unique(sensitivity, dataset->sensitivity);
      if (source.empty() || dataset->source == "third-party" || dataset->source == "web-scraped") source = dataset->source;
    }
  }
  const Asset* endpoint = asset.endpoint.empty() ? nullptr : inventory.find(asset.endpoint);
  if (endpoint) {
    if (endpoint->exposure == "external") exposure = "external";
    if (gateway.empty()) gateway = endpoint->gateway;
    llm = llm || endpoint->llm;
  }
  a["exposure"] = {exposure};
  a["llm"] = flag(llm);
  if (!asset.task.empty()) a["task"] = {asset.task};
  if (!asset.framework.empty()) a["framework"] = {asset.framework};
  if (!sensitivity.empty()) a["sensitivity"] = sensitivity;
  if (!source.empty()) a["source"] = {source};
  if (!asset.stage.empty()) a["stage"] = {asset.stage};
  a["criticality"] = {asset.criticality};
  if (!asset.sector.empty()) a["sector"] = {asset.sector};
  if (!asset.api.empty()) a["api"] = {asset.api};
  a["has_files"] = flag(!asset.files.empty());
  a["has_endpoint"] = flag(!asset.endpoint.empty() || !asset.url.empty());
  a["has_gateway"] = flag(!gateway.empty());
  a["has_datasets"] = flag(!asset.datasets.empty());
  a["third_party"] = flag(source == "third-party" || source == "public" || source == "web-scraped" ||
                          std::find(asset.tags.begin(), asset.tags.end(), "third-party") != asset.tags.end());
  return a;
}

ThreatModel build_threat_model(const Inventory& inventory, const AtlasCatalog& catalog, const std::vector<ThreatRule>& rules) {
  ThreatModel model;
  model.atlas_version = catalog.version();
  // Matrix order: by the first tactic's position, then by technique id.
  auto order = [&](const std::string& id) {
    const auto* technique = catalog.technique(id);
    std::size_t tactic_index = catalog.tactics().size();
    if (technique && !technique->tactics.empty())
      for (std::size_t i = 0; i < catalog.tactics().size(); ++i)
        if (catalog.tactics()[i].id == technique->tactics.front()) tactic_index = i;
    return std::make_pair(tactic_index, id);
  };
  const auto checks_order = all_checks();
  for (const auto& asset : inventory.assets) {
    AssetThreatModel entry{asset.id, {}};
    const auto attributes = asset_attributes(asset, inventory);
    for (const auto& rule : rules) {
      if (!matches(rule, attributes)) continue;
      auto it = std::find_if(entry.techniques.begin(), entry.techniques.end(), [&](const ApplicableTechnique& t) { return t.id == rule.technique; });
      if (it == entry.techniques.end()) {
        const auto* technique = catalog.technique(rule.technique);
        ApplicableTechnique applicable;
        applicable.id = technique->id;
        applicable.name = technique->name;
        applicable.tactics = technique->tactics;
        auto mitigations = catalog.mitigations_for(technique->id);
        if (mitigations.empty() && !technique->parent.empty()) mitigations = catalog.mitigations_for(technique->parent);
        for (const auto* m : mitigations) applicable.mitigations.push_back(m->id);
        entry.techniques.push_back(std::move(applicable));
        it = std::prev(entry.techniques.end());
      }
      if (std::find(it->rationales.begin(), it->rationales.end(), rule.rationale) == it->rationales.end()) it->rationales.push_back(rule.rationale);
      add_unique(it->checks, rule.checks);
      add_unique(it->stride, rule.stride);
      add_unique(it->nist_ai_rmf, rule.nist_ai_rmf);
    }
    for (auto& technique : entry.techniques) {
      std::sort(technique.checks.begin(), technique.checks.end(), [&](const std::string& a, const std::string& b) {
        return std::find(checks_order.begin(), checks_order.end(), a) < std::find(checks_order.begin(), checks_order.end(), b);
      });
      std::sort(technique.stride.begin(), technique.stride.end());
    }
    std::sort(entry.techniques.begin(), entry.techniques.end(),
              [&](const ApplicableTechnique& a, const ApplicableTechnique& b) { return order(a.id) < order(b.id); });
    model.assets.push_back(std::move(entry));
  }
  return model;
}

}  // namespace aegis::threat
