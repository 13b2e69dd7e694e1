// Incident-response playbooks filled in for the assessed assets: the templates are data
// (data/assess/playbooks.yaml, compiled in); this file decides which assets each one applies to and
// what its placeholders stand for.
#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <yaml-cpp/yaml.h>

#include "aegis/assess/report_json_view.h"
#include "aegis/assess/report_writer.h"
#include "aegis/core/error.h"

namespace aegis::data {
extern const std::string_view playbooks;
}  // namespace aegis::data

namespace aegis::assess {
namespace {

using nlohmann::json;
using namespace report_view;

constexpr std::size_t kMaxQuotedFindings = 20;

struct StepTemplate {
  std::string text;
  std::vector<std::string> requires_values;
  std::string otherwise;
};
struct PhaseTemplate {
  std::string phase;
  std::vector<StepTemplate> steps;
};
struct PlaybookTemplate {
  std::string id, title, threat, applies_to;
  std::vector<std::string> atlas, checks, nist_ai_rmf;
  std::vector<PhaseTemplate> phases;
};

// Placeholder -> what stands in when the document has no value and the step does not require it.
const std::map<std::string, std::string>& placeholder_fallbacks() {
  static const std::map<std::string, std::string> kFallbacks = {
      {"asset", "the asset"},
      {"asset_name", "the asset"},
      {"kind", "asset"},
      {"owner", "the owner (none recorded in the inventory)"},
      {"criticality", "unrated"},
      {"exposure", "unknown"},
      {"endpoint", "the serving endpoint"},
      {"endpoint_url", "URL not recorded"},
      {"gateway_config", "the gateway config"},
      {"model_file", "MODEL"},
      {"model_files", "the model files (none recorded)"},
      {"models", "the models trained on it"},
      {"dataset_file", "DATA"},
      {"datasets", "training data not recorded"},
      {"signature", "MODEL.sig"},
      {"redteam_model", "NAME"},
      {"findings", "no findings"},
  };
  return kFallbacks;
}

constexpr std::string_view kPhaseOrder[] = {"detect", "contain", "eradicate", "recover", "lessons-learned"};
constexpr std::string_view kSelectors[] = {"served-model", "trained-model", "llm"};

std::string_view phase_title(std::string_view phase) {
  if (phase == "detect") return "Detect";
  if (phase == "contain") return "Contain";
  if (phase == "eradicate") return "Eradicate";
  if (phase == "recover") return "Recover";
  return "Lessons learned";
}

// Names between braces made only of [a-z_]: the placeholders. Braces around anything else (YAML
// flow maps in config snippets such as {top_k: 1}) are text.
std::vector<std::string> placeholders_in(std::string_view text) {
  std::vector<std::string> names;
  for (std::size_t open = text.find('{'); open != std::string_view::npos; open = text.find('{', open + 1)) {
    std::size_t end = open + 1;
    while (end < text.size() && ((text[end] >= 'a' && text[end] <= 'z') || text[end] == '_')) ++end;
    if (end > open + 1 && end < text.size() && text[end] == '}') names.emplace_back(text.substr(open + 1, end - open - 1));
  }
  return names;
}

std::vector<std::string> yaml_strings(const YAML::Node& node) {
  std::vector<std::string> items;
  if (node.IsSequence())
    for (const auto& item : node) items.push_back(item.as<std::string>());
  else if (node.IsScalar())
    items.push_back(node.as<std::string>());
  return items;
}

[[noreturn]] void bad_template(const std::string& playbook, const std::string& what) {
  throw core::Error("the built-in incident-response playbooks (data/assess/playbooks.yaml) are invalid: playbook '" +
                        playbook + "': " + what,
                    "rebuild Aegis from an unmodified source tree");
}

void check_placeholders(const std::string& playbook, std::string_view text) {
  for (const auto& name : placeholders_in(text))
    if (!placeholder_fallbacks().count(name)) bad_template(playbook, "unknown placeholder {" + name + "}");
}

std::vector<PlaybookTemplate> load_templates() {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(data::playbooks));
  } catch (const YAML::Exception& error) {
    bad_template("(all)", error.what());
  }
  std::vector<PlaybookTemplate> templates;
  try {
    for (const auto& node : root["playbooks"]) {
      PlaybookTemplate playbook;
      playbook.id = node["id"].as<std::string>();
      playbook.title = node["title"].as<std::string>();
      playbook.threat = node["threat"].as<std::string>("");
      playbook.applies_to = node["applies_to"].as<std::string>();
      if (std::find(std::begin(kSelectors), std::end(kSelectors), playbook.applies_to) == std::end(kSelectors))
        bad_template(playbook.id, "unknown applies_to '" + playbook.applies_to + "'");
      playbook.atlas = yaml_strings(node["atlas"]);
      playbook.checks = yaml_strings(node["checks"]);
      playbook.nist_ai_rmf = yaml_strings(node["nist_ai_rmf"]);
      for (const auto& phase_node : node["phases"]) {
        PhaseTemplate phase;
        phase.phase = phase_node["phase"].as<std::string>();
        for (const auto& step_node : phase_node["steps"]) {
          StepTemplate step;
          if (step_node.IsScalar()) {
            step.text = step_node.as<std::string>();
          } else {
            step.text = step_node["text"].as<std::string>();
            step.requires_values = yaml_strings(step_node["requires"]);
            step.otherwise = step_node["otherwise"].as<std::string>("");
          }
          check_placeholders(playbook.id, step.text);
          check_placeholders(playbook.id, step.otherwise);
          for (const auto& name : step.requires_values)
            if (!placeholder_fallbacks().count(name)) bad_template(playbook.id, "requires unknown placeholder '" + name + "'");
          phase.steps.push_back(std::move(step));
        }
        playbook.phases.push_back(std::move(phase));
      }
      const bool phases_in_order =
          playbook.phases.size() == std::size(kPhaseOrder) &&
          std::equal(playbook.phases.begin(), playbook.phases.end(), std::begin(kPhaseOrder),
                     [](const PhaseTemplate& phase, std::string_view name) { return phase.phase == name; });
      if (!phases_in_order) bad_template(playbook.id, "phases must be detect, contain, eradicate, recover, lessons-learned");
      templates.push_back(std::move(playbook));
    }
  } catch (const YAML::Exception& error) {
    bad_template("#" + std::to_string(templates.size() + 1), error.what());
  }
  return templates;
}

int severity_rank(const std::string& severity) {
  static const std::map<std::string, int> kRanks = {{"critical", 4}, {"high", 3}, {"medium", 2}, {"low", 1}, {"info", 0}};
  const auto it = kRanks.find(severity);
  return it == kRanks.end() ? -1 : it->second;
}

std::string join(const std::vector<std::string>& items, std::string_view separator = ", ") {
  std::string joined;
  for (const auto& item : items) {
    if (!joined.empty()) joined += separator;
    joined += item;
  }
  return joined;
}

// The document's assets by id, and the links between them (model -> endpoint, model -> datasets).
class AssetGraph {
 public:
  explicit AssetGraph(const json& document) {
    for (const auto& asset : list(document, "assets"))
      if (asset.is_object()) {
        assets_.push_back(&asset);
        if (auto id = text(asset, "id"); !id.empty()) by_id_.emplace(id, &asset);
      }
  }
  const std::vector<const json*>& assets() const { return assets_; }
  const json* find(const std::string& id) const {
    const auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : it->second;
  }
  // Models whose `endpoint` is this asset, or whose `datasets` name it.
  std::vector<const json*> models_served_by(const std::string& id) const { return models_where("endpoint", id); }
  std::vector<const json*> models_trained_on(const std::string& id) const { return models_where("datasets", id); }

 private:
  std::vector<const json*> models_where(std::string_view key, const std::string& id) const {
    std::vector<const json*> models;
    if (id.empty()) return models;
    for (const auto* asset : assets_) {
      if (text(*asset, "kind") != "model") continue;
      const auto values = strings(*asset, key);
      if (std::find(values.begin(), values.end(), id) != values.end()) models.push_back(asset);
    }
    return models;
  }
  std::vector<const json*> assets_;
  std::map<std::string, const json*> by_id_;
};

std::string display_name(const json& asset) {
  auto name = text(asset, "name");
  return name.empty() ? text(asset, "id") : name;
}

bool serves_llm(const AssetGraph& graph, const json& endpoint) {
  for (const auto* model : graph.models_served_by(text(endpoint, "id")))
    if (flag(*model, "llm")) return true;
  return false;
}

// Whether the playbook applies to the asset, and why (for the report).
std::string applies_because(const AssetGraph& graph, const PlaybookTemplate& playbook, const json& asset) {
  const std::string kind = text(asset, "kind");
  if (playbook.applies_to == "served-model") {
    if (kind != "model") return {};
    const std::string endpoint = text(asset, "endpoint");
    const bool external = text(asset, "exposure") == "external";
    if (!endpoint.empty() && external) return "served by " + endpoint + " and externally exposed";
    if (!endpoint.empty()) return "served by " + endpoint;
    if (external) return "externally exposed";
    return {};
  }
  if (playbook.applies_to == "trained-model") {
    if (kind == "dataset") return "training data";
    if (kind == "model") {
      const auto datasets = strings(asset, "datasets");
      if (!datasets.empty()) return "trained on " + join(datasets);
    }
    return {};
  }
  if (playbook.applies_to == "llm") {
    if (kind == "model" && flag(asset, "llm")) return "a large language model";
    if (kind == "endpoint") {
      if (flag(asset, "llm")) return "an LLM endpoint";
      if (text(asset, "api") == "openai-chat") return "an OpenAI-compatible chat endpoint";
      if (serves_llm(graph, asset)) return "serves a large language model";
    }
  }
  return {};
}

// Everything a playbook step may name, for one asset.
struct AssetContext {
  std::map<std::string, std::string> values;  // placeholder -> value ("" when the document has none)
  std::vector<const json*> related;           // the asset and the assets linked to it, for findings
};

AssetContext context_for(const AssetGraph& graph, const json& asset) {
  AssetContext context;
  auto& v = context.values;
  const std::string id = text(asset, "id"), kind = text(asset, "kind");
  v["asset"] = id;
  v["asset_name"] = display_name(asset);
  v["kind"] = kind;
  v["owner"] = text(asset, "owner");
  v["criticality"] = text(asset, "criticality");
  v["exposure"] = text(asset, "exposure");
  context.related.push_back(&asset);
  const auto relate = [&context](const json* other) {
    if (other && std::find(context.related.begin(), context.related.end(), other) == context.related.end())
      context.related.push_back(other);
  };

  // The models this playbook is about: the asset itself, or the models it serves or trained.
  std::vector<const json*> models;
  if (kind == "model") models.push_back(&asset);
  else if (kind == "endpoint") models = graph.models_served_by(id);
  else if (kind == "dataset") models = graph.models_trained_on(id);
  for (const auto* model : models) relate(model);

  // The endpoint: the asset itself, or the one its (first) model names, by id or as a URL.
  const json* endpoint_asset = kind == "endpoint" ? &asset : nullptr;
  std::string endpoint_reference;
  for (const auto* model : models) {
    if (endpoint_asset || !endpoint_reference.empty()) break;
    endpoint_reference = text(*model, "endpoint");
    endpoint_asset = graph.find(endpoint_reference);
  }
  if (endpoint_asset) {
    relate(endpoint_asset);
    v["endpoint"] = display_name(*endpoint_asset) == text(*endpoint_asset, "id")
                        ? text(*endpoint_asset, "id")
                        : display_name(*endpoint_asset) + " (" + text(*endpoint_asset, "id") + ")";
    v["endpoint_url"] = text(*endpoint_asset, "url");
    v["gateway_config"] = text(*endpoint_asset, "gateway");
  } else if (!endpoint_reference.empty()) {
    v["endpoint"] = endpoint_reference;
    if (endpoint_reference.find("://") != std::string::npos) v["endpoint_url"] = endpoint_reference;
  }
  if (v["gateway_config"].empty()) v["gateway_config"] = text(asset, "gateway");

  std::vector<std::string> model_files, model_names;
  for (const auto* model : models) {
    for (auto& file : strings(*model, "files")) model_files.push_back(std::move(file));
    model_names.push_back(display_name(*model));
  }
  v["model_files"] = join(model_files);
  v["model_file"] = model_files.empty() ? "" : model_files.front();
  v["models"] = join(model_names);
  if (!models.empty()) v["signature"] = text(*models.front(), "signature");
  if (v["signature"].empty()) v["signature"] = text(asset, "signature");

  // Training data: the models' datasets (assets when the inventory has them), or the dataset itself.
  std::vector<std::string> dataset_names, dataset_files;
  const auto add_dataset = [&](const json& dataset) {
    dataset_names.push_back(display_name(dataset));
    for (auto& file : strings(dataset, "files")) dataset_files.push_back(std::move(file));
    relate(&dataset);
  };
  if (kind == "dataset") add_dataset(asset);
  std::set<std::string> seen_datasets;
  for (const auto* model : models)
    for (const auto& dataset_id : strings(*model, "datasets")) {
      if (dataset_id == id || !seen_datasets.insert(dataset_id).second) continue;
      if (const json* dataset = graph.find(dataset_id)) add_dataset(*dataset);
      else dataset_names.push_back(dataset_id);
    }
  v["datasets"] = join(dataset_names);
  v["dataset_file"] = dataset_files.empty() ? "" : dataset_files.front();

  // The model name an LLM endpoint expects (the inventory's redteam: model), on the asset or its endpoint.
  v["redteam_model"] = text(member(asset, "redteam"), "model");
  if (v["redteam_model"].empty() && endpoint_asset) v["redteam_model"] = text(member(*endpoint_asset, "redteam"), "model");
  return context;
}

bool finding_matches(const PlaybookTemplate& playbook, const json& finding) {
  const std::string check = text(finding, "check");
  if (!check.empty() && std::find(playbook.checks.begin(), playbook.checks.end(), check) != playbook.checks.end()) return true;
  for (const auto& tagged : strings(finding, "atlas"))
    for (const auto& wanted : playbook.atlas)
      if (tagged == wanted || (tagged.size() > wanted.size() && tagged.compare(0, wanted.size(), wanted) == 0 &&
                               tagged[wanted.size()] == '.'))
        return true;
  return false;
}

json quoted_findings(const PlaybookTemplate& playbook, const AssetContext& context, std::size_t& total) {
  std::vector<json> matched;
  for (const auto* asset : context.related)
    for (const auto& finding : list(*asset, "findings"))
      if (finding_matches(playbook, finding))
        matched.push_back({{"asset", text(*asset, "id")}, {"rule_id", text(finding, "rule_id")},
                           {"severity", text(finding, "severity")}, {"title", text(finding, "title")}});
  std::stable_sort(matched.begin(), matched.end(), [](const json& a, const json& b) {
    return severity_rank(text(a, "severity")) > severity_rank(text(b, "severity"));
  });
  total = matched.size();
  json quoted = json::array();
  for (std::size_t i = 0; i < matched.size() && i < kMaxQuotedFindings; ++i) quoted.push_back(std::move(matched[i]));
  return quoted;
}

std::string findings_summary(const json& quoted, std::size_t total) {
  if (total == 0) return "no findings of this kind from this assessment";
  std::string summary = std::to_string(total) + (total == 1 ? " finding" : " findings");
  std::vector<std::string> items;
  for (std::size_t i = 0; i < quoted.size() && i < 3; ++i) {
    const json& finding = quoted[i];
    items.push_back("[" + text(finding, "severity") + "] " + text(finding, "title") + " (" + text(finding, "asset") + ")");
  }
  summary += ": " + join(items, "; ");
  if (total > items.size()) summary += "; and " + std::to_string(total - items.size()) + " more";
  return summary;
}

std::string fill(std::string_view text, const std::map<std::string, std::string>& values) {
  std::string out;
  std::size_t position = 0;
  while (position < text.size()) {
    const std::size_t open = text.find('{', position);
    if (open == std::string_view::npos) break;
    std::size_t end = open + 1;
    while (end < text.size() && ((text[end] >= 'a' && text[end] <= 'z') || text[end] == '_')) ++end;
    out.append(text.substr(position, open - position));
    if (end > open + 1 && end < text.size() && text[end] == '}') {
      const std::string name(text.substr(open + 1, end - open - 1));
      const auto value = values.find(name);
      if (value != values.end() && !value->second.empty()) out += value->second;
      else out += placeholder_fallbacks().at(name);  // names were checked when the templates loaded
      position = end + 1;
    } else {
      out += '{';
      position = open + 1;
    }
  }
  out.append(text.substr(std::min(position, text.size())));
  return out;
}

json fill_for_asset(const PlaybookTemplate& playbook, const AssetContext& context, const std::string& why) {
  std::size_t total = 0;
  json findings = quoted_findings(playbook, context, total);
  auto values = context.values;
  values["findings"] = findings_summary(findings, total);
  json phases = json::array();
  for (const auto& phase : playbook.phases) {
    json steps = json::array();
    for (const auto& step : phase.steps) {
      const bool complete = std::all_of(step.requires_values.begin(), step.requires_values.end(),
                                        [&values](const std::string& name) {
                                          const auto it = values.find(name);
                                          return it != values.end() && !it->second.empty();
                                        });
      if (complete) steps.push_back(fill(step.text, values));
      else if (!step.otherwise.empty()) steps.push_back(fill(step.otherwise, values));
    }
    phases.push_back({{"phase", phase.phase}, {"title", phase_title(phase.phase)}, {"steps", std::move(steps)}});
  }
  json entry = {{"asset", values["asset"]},       {"name", values["asset_name"]}, {"kind", values["kind"]},
                {"owner", values["owner"]},       {"why", why},                   {"findings", std::move(findings)},
                {"phases", std::move(phases)}};
  if (total > kMaxQuotedFindings) entry["findings_omitted"] = total - kMaxQuotedFindings;
  return entry;
}

}  // namespace

json fill_playbooks(const json& document) {
  const auto templates = load_templates();
  const AssetGraph graph(document);
  json playbooks = json::array();
  for (const auto& playbook : templates) {
    json assets = json::array();
    for (const auto* asset : graph.assets()) {
      const std::string why = applies_because(graph, playbook, *asset);
      if (why.empty()) continue;
      assets.push_back(fill_for_asset(playbook, context_for(graph, *asset), why));
    }
    if (assets.empty()) continue;
    playbooks.push_back({{"id", playbook.id}, {"title", playbook.title}, {"threat", playbook.threat},
                         {"atlas", playbook.atlas}, {"nist_ai_rmf", playbook.nist_ai_rmf}, {"assets", std::move(assets)}});
  }
  return {{"playbooks", std::move(playbooks)}};
}

}  // namespace aegis::assess
