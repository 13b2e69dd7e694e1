// The NIST AI RMF section of the assessment report: which Core subcategories the assessment gave
// evidence for, with the Core's own text (data/nist/ai_rmf_core.json, compiled in).
#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "aegis/assess/report_json_view.h"
#include "aegis/assess/report_writer.h"
#include "aegis/core/error.h"

namespace aegis::data {
extern const std::string_view ai_rmf_core;
}  // namespace aegis::data

namespace aegis::assess {
namespace {

using nlohmann::json;
using namespace report_view;

constexpr std::size_t kMaxEvidencePerSubcategory = 50;

struct CoreSubcategory {
  std::string id;        // "MEASURE 2.7"
  std::string function;  // "MEASURE"
  std::string category;  // "MEASURE 2"
  std::string text;
  std::size_t order = 0;  // position in the Core
};

struct Core {
  std::string framework, document, doi;
  std::vector<std::string> functions;  // in the Core's order
  std::map<std::string, CoreSubcategory> subcategories;
  std::map<std::string, std::string> function_by_abbrev;  // "MS" -> "MEASURE"
};

Core load_core() {
  const json parsed = json::parse(data::ai_rmf_core, nullptr, false);
  if (!parsed.is_object())
    throw core::Error("the built-in NIST AI RMF core (data/nist/ai_rmf_core.json) is not valid JSON",
                      "rebuild Aegis from an unmodified source tree");
  Core core;
  core.framework = text(parsed, "framework");
  core.document = text(parsed, "document");
  core.doi = text(parsed, "doi");
  std::size_t order = 0;
  for (const auto& function : list(parsed, "functions")) {
    const std::string function_id = text(function, "id");
    core.functions.push_back(function_id);
    if (auto abbrev = text(function, "abbrev"); !abbrev.empty()) core.function_by_abbrev[abbrev] = function_id;
    core.function_by_abbrev[function_id] = function_id;
    for (const auto& category : list(function, "categories"))
      for (const auto& subcategory : list(category, "subcategories")) {
        CoreSubcategory entry{text(subcategory, "id"), function_id, text(category, "id"), text(subcategory, "text"), order++};
        core.subcategories.emplace(entry.id, std::move(entry));
      }
  }
  if (core.subcategories.empty())
    throw core::Error("the built-in NIST AI RMF core has no subcategories", "rebuild Aegis from an unmodified source tree");
  return core;
}

// "measure 2.7", "MS-2.7", "MEASURE_2.7" -> "MEASURE 2.7" when the Core has it; "" otherwise.
std::string normalize_reference(const Core& core, std::string_view reference) {
  std::string letters, number;
  std::size_t i = 0;
  while (i < reference.size() && reference[i] == ' ') ++i;
  while (i < reference.size() && std::isalpha(static_cast<unsigned char>(reference[i])))
    letters += static_cast<char>(std::toupper(static_cast<unsigned char>(reference[i++])));
  while (i < reference.size() && (reference[i] == ' ' || reference[i] == '-' || reference[i] == '_')) ++i;
  while (i < reference.size() && (std::isdigit(static_cast<unsigned char>(reference[i])) || reference[i] == '.'))
    number += reference[i++];
  while (i < reference.size() && reference[i] == ' ') ++i;
  if (i != reference.size() || number.empty()) return {};
  const auto function = core.function_by_abbrev.find(letters);
  if (function == core.function_by_abbrev.end()) return {};
  std::string id = function->second + " " + number;
  return core.subcategories.count(id) ? id : std::string();
}

int severity_rank(const std::string& severity) {
  static const std::map<std::string, int> kRanks = {{"critical", 4}, {"high", 3}, {"medium", 2}, {"low", 1}, {"info", 0}};
  const auto it = kRanks.find(severity);
  return it == kRanks.end() ? -1 : it->second;
}

class EvidenceCollector {
 public:
  explicit EvidenceCollector(const Core& core) : core_(core) {}

  void add(std::string_view reference, json evidence) {
    const std::string id = normalize_reference(core_, reference);
    if (id.empty()) {
      if (!reference.empty()) unmatched_.insert(std::string(reference));
      return;
    }
    if (id != reference) aliases_[std::string(reference)] = id;
    auto& entries = by_id_[id];
    if (entries.seen.insert(evidence.dump(-1, ' ', false, json::error_handler_t::replace)).second)
      entries.items.push_back(std::move(evidence));
  }

  json section(const Core& core) const {
    std::map<std::string, std::vector<const CoreSubcategory*>> by_function;
    for (const auto& [id, entries] : by_id_) by_function[core.subcategories.at(id).function].push_back(&core.subcategories.at(id));
    json functions = json::array();
    for (const auto& function : core.functions) {
      auto it = by_function.find(function);
      const bool always_shown = function == "MAP" || function == "MEASURE" || function == "MANAGE";
      if (it == by_function.end() && !always_shown) continue;
      json subcategories = json::array();
      if (it != by_function.end()) {
        auto& members = it->second;
        std::sort(members.begin(), members.end(), [](auto* a, auto* b) { return a->order < b->order; });
        for (const auto* subcategory : members) {
          const auto& entries = by_id_.at(subcategory->id);
          std::vector<json> items = entries.items;
          // Assessment-wide evidence first, then findings (most severe first), then tested techniques.
          std::stable_sort(items.begin(), items.end(), [](const json& a, const json& b) {
            const auto source_rank = [](const json& e) {
              const std::string source = text(e, "source");
              return source == "assessment" ? 0 : source == "finding" ? 1 : 2;
            };
            if (source_rank(a) != source_rank(b)) return source_rank(a) < source_rank(b);
            return severity_rank(text(a, "severity")) > severity_rank(text(b, "severity"));
          });
          json evidence = json::array();
          for (std::size_t i = 0; i < items.size() && i < kMaxEvidencePerSubcategory; ++i) evidence.push_back(items[i]);
          json entry = {{"id", subcategory->id}, {"category", subcategory->category}, {"text", subcategory->text},
                        {"evidence", std::move(evidence)}};
          if (items.size() > kMaxEvidencePerSubcategory) entry["evidence_omitted"] = items.size() - kMaxEvidencePerSubcategory;
          subcategories.push_back(std::move(entry));
        }
      }
      functions.push_back({{"id", function}, {"subcategories", std::move(subcategories)}});
    }
    json unmatched = json::array();
    for (const auto& reference : unmatched_) unmatched.push_back(reference);
    json aliases = json::object();
    for (const auto& [reference, id] : aliases_) aliases[reference] = id;
    return {{"framework", core.framework}, {"document", core.document}, {"doi", core.doi},
            {"functions", std::move(functions)}, {"unmatched", std::move(unmatched)}, {"aliases", std::move(aliases)}};
  }

 private:
  struct Entries {
    std::vector<json> items;
    std::set<std::string> seen;
  };
  const Core& core_;
  std::map<std::string, Entries> by_id_;
  std::set<std::string> unmatched_;
  std::map<std::string, std::string> aliases_;  // reference as written -> subcategory id, where they differ
};

bool check_ran(const json& check) {
  const std::string state = text(check, "state");
  return state == "done" || state == "reused";
}

// The subcategories that the assessment addresses by what it is, whatever the checks found. Kept
// to what an inventory-driven assessment demonstrably documents:
//   MAP 2.1   the inventory defines each model's task and method (task, framework);
//   MAP 4.1   the threat model maps every inventoried component, third-party data and models
//             included, to the ATLAS techniques that apply to it (technology risk; not legal risk);
//   MEASURE 1.1  the checks are chosen from the techniques the threat model enumerated;
//   MEASURE 2.1  every check records the tool and command line it ran (data, budgets) and its metrics;
//   MANAGE 1.4   residual risk is documented per asset, untested techniques included;
//   MANAGE 2.3   response procedures (the filled-in playbooks) are documented for the risks found.
// Not claimed: MAP 1.1 (a description field is not the study of purpose, laws and norms it asks
// for), MAP 5.1 (the risk score ranks assets; it does not estimate likelihood and magnitude per
// impact), GOVERN (policies and roles are the organisation's, outside what a tool can show).
void add_assessment_evidence(EvidenceCollector& collector, const json& document, bool playbooks_filled) {
  for (const auto& asset : list(document, "assets")) {
    const std::string id = text(asset, "id");
    const std::string task = text(asset, "task"), framework = text(asset, "framework");
    if (text(asset, "kind") == "model" && (!task.empty() || !framework.empty())) {
      std::string note = "the inventory defines the model's task";
      if (!task.empty()) note += " (" + task + ")";
      if (!framework.empty()) note += " and framework (" + framework + ")";
      collector.add("MAP 2.1", {{"source", "assessment"}, {"asset", id}, {"note", note}});
    }
    const auto& techniques = list(asset, "techniques");
    if (!techniques.empty()) {
      std::string note = std::to_string(techniques.size()) + " applicable ATLAS technique(s) mapped by the threat model";
      if (auto source = text(asset, "source"); !source.empty()) note += "; data source: " + source;
      collector.add("MAP 4.1", {{"source", "assessment"}, {"asset", id}, {"note", note}});
    }
    std::vector<std::string> checks_run;
    for (const auto& check : list(asset, "checks")) {
      if (!check_ran(check)) continue;
      const std::string name = text(check, "check");
      checks_run.push_back(name);
      std::string note = "command recorded with its results";
      if (auto command = text(check, "command"); !command.empty()) note = command;
      collector.add("MEASURE 2.1", {{"source", "assessment"}, {"asset", id}, {"check", name}, {"note", note}});
    }
    if (!checks_run.empty() && !techniques.empty()) {
      std::string names;
      for (const auto& name : checks_run) names += (names.empty() ? "" : ", ") + name;
      collector.add("MEASURE 1.1", {{"source", "assessment"}, {"asset", id},
                                    {"note", "checks selected from the threat model's techniques: " + names}});
    }
    const json& risk = member(asset, "risk");
    if (auto level = text(risk, "level"); !level.empty()) {
      std::string note = "residual risk " + level;
      if (auto rationale = text(risk, "rationale"); !rationale.empty()) note += ": " + rationale;
      collector.add("MANAGE 1.4", {{"source", "assessment"}, {"asset", id}, {"note", note}});
    }
  }
  if (playbooks_filled)
    collector.add("MANAGE 2.3", {{"source", "assessment"},
                                 {"note", "incident-response playbooks filled in for the assessed assets (see the playbooks section)"}});
}

json finding_evidence(const json& finding, const std::string& asset) {
  return {{"source", "finding"}, {"asset", asset}, {"check", text(finding, "check")}, {"rule_id", text(finding, "rule_id")},
          {"severity", text(finding, "severity")}, {"title", text(finding, "title")}};
}

}  // namespace

json nist_ai_rmf_section(const json& document) {
  const Core core = load_core();
  EvidenceCollector collector(core);
  const json playbooks = fill_playbooks(document);
  add_assessment_evidence(collector, document, !list(playbooks, "playbooks").empty());

  bool per_asset_findings = false;
  for (const auto& asset : list(document, "assets")) {
    const std::string asset_id = text(asset, "id");
    if (member(asset, "findings").is_array()) per_asset_findings = true;
    for (const auto& finding : list(asset, "findings"))
      for (const auto& reference : strings(finding, "nist_ai_rmf")) collector.add(reference, finding_evidence(finding, asset_id));
    for (const auto& technique : list(asset, "techniques")) {
      if (!flag(technique, "tested")) continue;  // mapped but not tested: no evidence yet
      std::string checks;
      for (const auto& check : strings(technique, "checks")) checks += (checks.empty() ? "" : ", ") + check;
      const double findings = number_or(technique, "findings", 0);
      std::string note = "tested";
      if (!checks.empty()) note += " by " + checks;
      note += findings > 0 ? "; " + std::to_string(static_cast<long long>(findings)) + " finding(s)" : "; no findings";
      for (const auto& reference : strings(technique, "nist_ai_rmf"))
        collector.add(reference, {{"source", "technique"}, {"asset", asset_id}, {"technique", text(technique, "id")},
                                  {"title", text(technique, "name")}, {"check", checks}, {"note", note}});
    }
  }
  // A document without per-asset findings (an older or partial one) still has the flat list.
  if (!per_asset_findings)
    for (const auto& finding : list(document, "findings"))
      for (const auto& reference : strings(finding, "nist_ai_rmf"))
        collector.add(reference, finding_evidence(finding, text(finding, "asset")));
  return collector.section(core);
}

}  // namespace aegis::assess
