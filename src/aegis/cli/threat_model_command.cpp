#include "aegis/cli/threat_model_command.h"

#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "aegis/cli/engagement_support.h"
#include "aegis/core/error.h"

namespace aegis::cli {
namespace {

struct ThreatModelFlags {
  std::string inventory;
  std::string rules;
  std::string atlas;
  std::string view = "atlas";
  std::string format;
  std::string output;
  bool quiet = false;
};

nlohmann::json model_json(const threat::ThreatModel& model, const threat::AtlasCatalog& catalog, const threat::Inventory& inventory) {
  nlohmann::json assets = nlohmann::json::array();
  std::map<std::string, nlohmann::json> stride;
  for (const auto& a : model.assets) {
    const auto* asset = inventory.find(a.asset);
    nlohmann::json techniques = nlohmann::json::array();
    for (const auto& t : a.techniques) {
      nlohmann::json mitigations = nlohmann::json::array();
      for (const auto& id : t.mitigations)
        for (const auto& m : catalog.mitigations())
          if (m.id == id) mitigations.push_back({{"id", m.id}, {"name", m.name}});
      nlohmann::json tactics = nlohmann::json::array();
      for (const auto& id : t.tactics)
        if (const auto* tactic = catalog.tactic(id)) tactics.push_back({{"id", id}, {"name", tactic->name}});
      nlohmann::json categories = nlohmann::json::array();
      for (auto s : t.stride) {
        categories.push_back(std::string(threat::to_string(s)));
        stride[std::string(threat::to_string(s))].push_back({{"technique", t.id}, {"name", t.name}, {"asset", a.asset}});
      }
      techniques.push_back({{"id", t.id}, {"name", t.name}, {"tactics", tactics}, {"rationales", t.rationales},
                            {"checks", t.checks}, {"mitigations", mitigations}, {"stride", categories}, {"nist_ai_rmf", t.nist_ai_rmf}});
    }
    assets.push_back({{"id", a.asset}, {"kind", asset ? std::string(threat::to_string(asset->kind)) : ""}, {"techniques", techniques}});
  }
  nlohmann::json stride_view = nlohmann::json::array();
  for (std::string_view c : {"spoofing", "tampering", "repudiation", "information-disclosure", "denial-of-service", "elevation-of-privilege"})
    stride_view.push_back({{"category", c}, {"threats", stride.contains(std::string(c)) ? stride[std::string(c)] : nlohmann::json::array()}});
  return {{"aegis", {{"version", AEGIS_VERSION}, {"command", "threat-model"}}},
          {"inventory", inventory.file.string()},
          {"atlas_version", model.atlas_version},
          {"assets", assets},
          {"stride", stride_view}};
}

void write_text(std::ostream& out, const nlohmann::json& doc, const std::string& view, bool markdown) {
  if (view == "stride") {
    out << (markdown ? "# STRIDE-for-ML view\n\n" : "STRIDE-for-ML view (ATLAS " + doc["atlas_version"].get<std::string>() + ")\n");
    for (const auto& c : doc["stride"]) {
      out << (markdown ? "\n## " : "\n") << c["category"].get<std::string>() << " (" << c["threats"].size() << ")\n";
      for (const auto& t : c["threats"])
        out << (markdown ? "- `" : "  ") << t["technique"].get<std::string>() << (markdown ? "` " : " ") << t["name"].get<std::string>()
            << " — " << t["asset"].get<std::string>() << "\n";
    }
    return;
  }
  out << (markdown ? "# Threat model (MITRE ATLAS " : "Threat model (MITRE ATLAS ") << doc["atlas_version"].get<std::string>() << ")\n";
  for (const auto& a : doc["assets"]) {
    out << (markdown ? "\n## " : "\n") << a["id"].get<std::string>() << " (" << a["kind"].get<std::string>() << "): "
        << a["techniques"].size() << " technique(s)\n";
    for (const auto& t : a["techniques"]) {
      std::string checks, tactics, mitigations;
      for (const auto& c : t["checks"]) checks += (checks.empty() ? "" : ", ") + c.get<std::string>();
      for (const auto& c : t["tactics"]) tactics += (tactics.empty() ? "" : ", ") + c["name"].get<std::string>();
      for (const auto& m : t["mitigations"]) mitigations += (mitigations.empty() ? "" : ", ") + m["id"].get<std::string>();
      if (markdown) {
        out << "- **" << t["id"].get<std::string>() << " " << t["name"].get<std::string>() << "** (" << tactics << "): "
            << t["rationales"][0].get<std::string>() << " Checks: " << (checks.empty() ? "none" : checks)
            << ". Mitigations: " << (mitigations.empty() ? "none listed" : mitigations) << ".\n";
      } else {
        out << "  " << t["id"].get<std::string>() << "  " << t["name"].get<std::string>() << "  [" << tactics << "]\n"
            << "      checks: " << (checks.empty() ? "none" : checks) << "; mitigations: " << (mitigations.empty() ? "none listed" : mitigations) << "\n";
      }
    }
  }
}

int run_threat_model(const ThreatModelFlags& flags) {
  const auto inventory = load_inventory_or_fail(flags.inventory, flags.quiet);
  threat::AtlasCatalog holder;
  const auto& catalog = atlas_catalog(flags.atlas, holder);
  const auto rules = flags.rules.empty() ? threat::shipped_threat_rules(catalog) : threat::load_threat_rules(flags.rules, catalog);
  const auto model = threat::build_threat_model(inventory, catalog, rules);
  const auto doc = model_json(model, catalog, inventory);
  std::ofstream file;
  if (!flags.output.empty()) {
    file.open(flags.output, std::ios::binary);
    if (!file) throw core::Error("cannot write " + flags.output, "check the folder exists and is writable");
  }
  std::ostream& out = flags.output.empty() ? std::cout : file;
  const std::string format = flags.format.empty() ? "table" : flags.format;
  if (format == "json") out << doc.dump(2) << "\n";
  else write_text(out, doc, flags.view, format == "markdown");
  return 0;
}

}  // namespace

void register_threat_model_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ThreatModelFlags>();
  auto* command = app.add_subcommand("threat-model", "Map each inventory asset to the MITRE ATLAS techniques that apply, with mitigations, "
                                                     "the Aegis checks that produce evidence, and a STRIDE-for-ML view");
  command->add_option("inventory", flags->inventory, "inventory YAML")->required();
  command->add_option("--rules", flags->rules, "threat-model rules in the shape of data/threat/threat_rules.yaml (default: the shipped rules)");
  command->add_option("--atlas", flags->atlas, "an ATLAS.yaml release to use instead of the shipped one");
  command->add_option("--view", flags->view, "atlas (per asset) or stride")->check(CLI::IsMember({"atlas", "stride"}));
  command->add_option("--format", flags->format, "table, json or markdown")->check(CLI::IsMember({"table", "json", "markdown"}));
  command->add_option("--output,-o", flags->output, "write here instead of stdout");
  command->add_flag("--quiet,-q", flags->quiet, "no warnings about the inventory");
  command->callback([flags, &exit_code] { exit_code = run_threat_model(*flags); });
}

}  // namespace aegis::cli
