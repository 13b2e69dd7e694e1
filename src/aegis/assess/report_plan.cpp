#include "aegis/assess/report_plan.h"

#include <algorithm>
#include <cctype>

#include "aegis/assess/report_json_view.h"
#include "aegis/assess/report_writer.h"
#include "aegis/core/base64.h"

namespace aegis::assess::report_plan {
namespace {

using nlohmann::json;
using namespace report_view;

constexpr std::size_t kMaxImageBytes = 16u << 20;  // a ROC plot is ~100 KB; anything near this is not one

bool digits(std::string_view text, std::size_t count) {
  return text.size() == count && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

}  // namespace

int severity_rank(std::string_view severity) {
  for (std::size_t i = 0; i < kSeverities.size(); ++i)
    if (kSeverities[i] == severity) return static_cast<int>(kSeverities.size() - 1 - i);
  return -1;
}

std::string severity_token(const json& finding) {
  const std::string severity = text(finding, "severity");
  return severity_rank(severity) >= 0 ? severity : "unknown";
}

ReportPlan plan_report(const json& document) {
  ReportPlan plan;
  for (const char* section : {"summary", "assets", "atlas-matrix", "stride", "nist", "playbooks", "contents"})
    plan.anchors.anchor(std::string("section\n") + section, "", section);

  const auto& assets = list(document, "assets");
  for (std::size_t i = 0; i < assets.size(); ++i) {
    const json& asset = assets[i];
    AssetEntry entry{&asset, text(asset, "id"), {}, {}, {}, {}};
    entry.label = text(asset, "name").empty() ? entry.id : text(asset, "name");
    if (entry.label.empty()) entry.label = "asset " + std::to_string(i + 1);
    entry.anchor = plan.anchors.anchor("asset\n" + std::to_string(i), "asset-", entry.id.empty() ? entry.label : entry.id);
    std::vector<const json*> findings;
    for (const auto& finding : list(asset, "findings")) findings.push_back(&finding);
    std::stable_sort(findings.begin(), findings.end(), [](const json* a, const json* b) {
      return severity_rank(text(*a, "severity")) > severity_rank(text(*b, "severity"));
    });
    if (findings.size() > kMaxFindingsPerAsset) findings.resize(kMaxFindingsPerAsset);
    entry.listed = std::move(findings);
    for (std::size_t k = 0; k < entry.listed.size(); ++k)
      entry.finding_anchors.push_back(plan.anchors.anchor("finding\n" + std::to_string(i) + "\n" + std::to_string(k),
                                                          "finding-", (entry.id.empty() ? "asset" : entry.id) + "-" + std::to_string(k + 1)));
    std::string level = text(member(asset, "risk"), "level");
    if (std::find(kRiskLevels.begin(), kRiskLevels.end(), level) == kRiskLevels.end()) level = "unrated";
    plan.assets_by_risk[level].push_back(i);
    if (!entry.id.empty()) plan.asset_by_id.emplace(entry.id, i);
    plan.assets.push_back(std::move(entry));
  }

  // Severity counts: the producer's summary when it has one, else counted here.
  const json& counts = member(member(document, "summary"), "counts");
  bool counted = false;
  if (counts.is_object()) {
    for (std::size_t s = 0; s < kSeverities.size(); ++s)
      if (auto n = number(counts, kSeverities[s]); n && *n >= 0) {
        plan.counts[s] = static_cast<std::size_t>(std::min(*n, 1e15));
        counted = true;
      }
  }
  std::vector<FindingEntry> all;
  for (std::size_t i = 0; i < plan.assets.size(); ++i) {
    if (!counted)
      for (const auto& finding : list(*plan.assets[i].asset, "findings"))
        if (int rank = severity_rank(text(finding, "severity")); rank >= 0) ++plan.counts[kSeverities.size() - 1 - rank];
    const auto& listed = plan.assets[i].listed;
    for (std::size_t k = 0; k < listed.size(); ++k) all.push_back({i, k, listed[k]});
  }
  std::stable_sort(all.begin(), all.end(), [](const FindingEntry& a, const FindingEntry& b) {
    return severity_rank(text(*a.value, "severity")) > severity_rank(text(*b.value, "severity"));
  });
  for (std::size_t i = 0; i < all.size() && i < kTopFindings; ++i) plan.top_findings.push_back(all[i]);

  plan.nist = nist_ai_rmf_section(document);
  for (const auto& function : list(plan.nist, "functions")) {
    const std::string function_id = text(function, "id");
    plan.nist_anchors[function_id] = plan.anchors.anchor("nist-function\n" + function_id, "nist-", function_id);
    for (const auto& subcategory : list(function, "subcategories")) {
      const std::string id = text(subcategory, "id");
      plan.nist_anchors[id] = plan.anchors.anchor("nist\n" + id, "nist-", id);
    }
  }
  if (const json& aliases = member(plan.nist, "aliases"); aliases.is_object())
    for (const auto& [reference, id] : aliases.items())
      if (auto it = plan.nist_anchors.find(text_of(id)); it != plan.nist_anchors.end()) plan.nist_anchors.emplace(reference, it->second);
  plan.playbooks = fill_playbooks(document);
  for (const auto& playbook : list(plan.playbooks, "playbooks")) {
    const std::string id = text(playbook, "id");
    plan.playbook_anchors[id] = plan.anchors.anchor("playbook\n" + id, "playbook-", id);
    const auto& targets = list(playbook, "assets");
    for (std::size_t t = 0; t < targets.size(); ++t) {
      const std::string key = id + "\n" + std::to_string(t);
      plan.playbook_anchors[key] = plan.anchors.anchor("playbook\n" + key, "playbook-", id + "-" + text(targets[t], "asset"));
    }
  }
  return plan;
}

std::string location_text(const json& location) {
  if (location.is_string()) return location.get<std::string>();
  if (!location.is_object()) return {};
  std::string out = text(location, "file");
  if (auto member_path = text(location, "member"); !member_path.empty()) out += "!" + member_path;
  if (auto offset = text(location, "offset"); !offset.empty()) out += " @" + offset;
  if (auto row = text(location, "row"); !row.empty()) out += " row " + row;
  if (auto line = text(location, "line"); !line.empty()) out += ":" + line;
  if (auto column = text(location, "column"); !column.empty()) out += " [" + column + "]";
  const json& request = member(location, "request");
  if (!request.is_null()) out += (out.empty() ? "" : " ") + std::string("request ") + dump_of(request);
  for (const auto& [key, value] : location.items()) {
    static const char* kKnown[] = {"file", "member", "offset", "row", "line", "column", "request"};
    if (std::find_if(std::begin(kKnown), std::end(kKnown), [&key = key](const char* k) { return key == k; }) != std::end(kKnown))
      continue;
    if (auto scalar = text_of(value); !scalar.empty()) out += (out.empty() ? "" : " ") + key + "=" + scalar;
  }
  return out;
}

std::string evidence_text(const json& finding) {
  const json& evidence = member(finding, "evidence");
  if (evidence.is_null()) return {};
  return dump_of(evidence);
}

bool is_atlas_technique(std::string_view id) {
  if (id.substr(0, 5) != "AML.T" || id.size() < 9 || !digits(id.substr(5, 4), 4)) return false;
  if (id.size() == 9) return true;
  return id.size() == 13 && id[9] == '.' && digits(id.substr(10, 3), 3);
}
bool is_atlas_tactic(std::string_view id) { return id.substr(0, 6) == "AML.TA" && digits(id.substr(6), 4); }
bool is_atlas_mitigation(std::string_view id) { return id.substr(0, 5) == "AML.M" && digits(id.substr(5), 4); }

std::string technique_state(const json& technique) {
  if (number_or(technique, "findings", 0) > 0) return "findings";
  if (number_or(technique, "tested", 0) > 0 || flag(technique, "tested")) return "clean";
  return "untested";
}

std::vector<std::pair<std::string, json>> robustness_by_norm(const json& results) {
  std::vector<std::pair<std::string, json>> groups;
  for (const auto& result : list(results, "results")) {
    if (!number(result, "eps") || !number(result, "robust_accuracy")) continue;
    const std::string norm = text(result, "norm");
    auto it = std::find_if(groups.begin(), groups.end(), [&](const auto& group) { return group.first == norm; });
    if (it == groups.end()) {
      json group = {{"results", json::array()}};
      if (auto clean = number(results, "clean_accuracy")) group["clean_accuracy"] = *clean;
      groups.emplace_back(norm, std::move(group));
      it = groups.end() - 1;
    }
    it->second["results"].push_back(result);
  }
  return groups;
}

std::vector<std::pair<std::string, std::string>> png_artifacts(const json& check) {
  std::vector<std::pair<std::string, std::string>> images;
  const json& artifacts = member(check, "artifacts");
  if (!artifacts.is_object()) return images;
  for (const auto& [name, value] : artifacts.items()) {
    if (name.size() < 4 || name.compare(name.size() - 4, 4, ".png") != 0 || !value.is_string()) continue;
    const auto& encoded = value.get_ref<const std::string&>();
    if (encoded.size() > kMaxImageBytes / 3 * 4 + 4096) continue;
    const auto bytes = core::decode_base64(encoded);
    static constexpr unsigned char kPngMagic[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
    if (!bytes || bytes->size() < sizeof kPngMagic || !std::equal(std::begin(kPngMagic), std::end(kPngMagic), bytes->begin()))
      continue;
    // Re-encoded from the bytes: the attribute then holds the base64 alphabet only, whatever the input had.
    images.emplace_back(name, core::encode_base64(std::span<const std::uint8_t>(bytes->data(), bytes->size())));
  }
  return images;
}

}  // namespace aegis::assess::report_plan
