// The MITRE ATLAS catalog read from the official ATLAS.yaml distribution (compiled in, or a newer
// file given by the user).
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>

#include "aegis/core/error.h"
#include "aegis/core/yaml_guard.h"
#include "aegis/threat/threat.h"

namespace aegis::data {
extern const std::string_view ATLAS;
}

namespace aegis::threat {

namespace {

std::string text_of(const YAML::Node& node, const char* key) {
  const YAML::Node value = node[key];
  return value && value.IsScalar() ? value.Scalar() : std::string();
}

std::string first_paragraph(const std::string& text) {
  const auto end = text.find("\n\n");
  std::string out = end == std::string::npos ? text : text.substr(0, end);
  for (auto& c : out)
    if (c == '\n') c = ' ';
  return out;
}

}  // namespace

const AtlasCatalog& AtlasCatalog::shipped() {
  static const AtlasCatalog catalog = parse(data::ATLAS, "the shipped ATLAS.yaml");
  return catalog;
}

AtlasCatalog AtlasCatalog::load(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw core::Error("cannot read the ATLAS file " + file.string(), "give the ATLAS.yaml of an ATLAS release (github.com/mitre-atlas/atlas-data, dist/ATLAS.yaml)");
  std::ostringstream text;
  text << in.rdbuf();
  if (text.str().size() > (64u << 20)) throw core::Error("the ATLAS file " + file.string() + " is larger than 64 MiB", "give the ATLAS.yaml of an ATLAS release");
  return parse(text.str(), file.string());
}

AtlasCatalog AtlasCatalog::parse(std::string_view yaml_text, std::string_view origin) {
  const std::string where(origin);
  const std::string hint = "give the ATLAS.yaml of an ATLAS release (github.com/mitre-atlas/atlas-data, dist/ATLAS.yaml)";
  YAML::Node root;
  try {
    if (core::yaml_too_deep(yaml_text, 64)) throw core::Error(where + " nests deeper than an ATLAS distribution does", hint);
    root = YAML::Load(std::string(yaml_text));
  } catch (const YAML::Exception& e) {
    throw core::Error(where + " is not valid YAML (line " + std::to_string(e.mark.line + 1) + "): " + e.msg, hint);
  } catch (const core::FormatError& e) {
    throw core::Error(where + " is not valid YAML: " + e.what(), hint);
  }
  AtlasCatalog catalog;
  if (!root.IsMap() || !root["matrices"] || !root["matrices"].IsSequence() || root["matrices"].size() == 0)
    throw core::Error(where + " has no 'matrices' list: not an ATLAS distribution file", hint);
  catalog.version_ = text_of(root, "version");
  const YAML::Node matrix = root["matrices"][0];
  if (!matrix.IsMap() || !matrix["tactics"] || !matrix["techniques"])
    throw core::Error(where + ": the first matrix has no tactics or techniques", hint);
  for (const auto& node : matrix["tactics"]) {
    if (!node.IsMap()) continue;
    catalog.tactics_.push_back({text_of(node, "id"), text_of(node, "name")});
  }
  for (const auto& node : matrix["techniques"]) {
    if (!node.IsMap()) continue;
    AtlasTechnique technique;
    technique.id = text_of(node, "id");
    technique.name = text_of(node, "name");
    technique.parent = text_of(node, "subtechnique-of");
    technique.description = first_paragraph(text_of(node, "description"));
    technique.maturity = text_of(node, "maturity");
    if (const YAML::Node tactics = node["tactics"]; tactics && tactics.IsSequence())
      for (const auto& t : tactics)
        if (t.IsScalar()) technique.tactics.push_back(t.Scalar());
    if (!technique.id.empty()) catalog.techniques_.push_back(std::move(technique));
  }
  // Sub-techniques sit under their parent's tactics in the matrix.
  for (auto& technique : catalog.techniques_) {
    if (technique.parent.empty() || !technique.tactics.empty()) continue;
    if (const auto* parent = catalog.technique(technique.parent)) technique.tactics = parent->tactics;
  }
  if (const YAML::Node mitigations = matrix["mitigations"]; mitigations && mitigations.IsSequence()) {
    for (const auto& node : mitigations) {
      if (!node.IsMap()) continue;
      AtlasMitigation mitigation{text_of(node, "id"), text_of(node, "name"), {}};
      if (const YAML::Node uses = node["techniques"]; uses && uses.IsSequence())
        for (const auto& use : uses)
          if (use.IsMap()) mitigation.uses[text_of(use, "id")] = first_paragraph(text_of(use, "use"));
      catalog.mitigations_.push_back(std::move(mitigation));
    }
  }
  if (catalog.tactics_.empty() || catalog.techniques_.empty())
    throw core::Error(where + " lists no tactics or no techniques: not an ATLAS distribution file", hint);
  return catalog;
}

const AtlasTechnique* AtlasCatalog::technique(std::string_view id) const {
  for (const auto& t : techniques_)
    if (t.id == id) return &t;
  return nullptr;
}

const AtlasTactic* AtlasCatalog::tactic(std::string_view id) const {
  for (const auto& t : tactics_)
    if (t.id == id) return &t;
  return nullptr;
}

std::vector<const AtlasMitigation*> AtlasCatalog::mitigations_for(std::string_view technique_id) const {
  std::vector<const AtlasMitigation*> out;
  for (const auto& m : mitigations_)
    if (m.uses.contains(std::string(technique_id))) out.push_back(&m);
  return out;
}

}  // namespace aegis::threat
