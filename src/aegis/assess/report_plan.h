// What the HTML and Markdown writers both work out from the assessment document before writing:
// unique anchors, severity counts, the top findings, risk buckets, the NIST section and the filled-in
// playbooks. Internal to the report writers.
#pragma once

#include <array>
#include <cstddef>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "aegis/assess/report_text.h"

namespace aegis::assess::report_plan {

inline constexpr std::array<std::string_view, 5> kSeverities = {"critical", "high", "medium", "low", "info"};
inline constexpr std::array<std::string_view, 4> kRiskLevels = {"critical", "high", "medium", "low"};
inline constexpr std::size_t kTopFindings = 10;
inline constexpr std::size_t kFullFindingsPerAsset = 50;  // in full; the next ones as one table row each
inline constexpr std::size_t kMaxFindingsPerAsset = 500;  // more are counted, not listed
inline constexpr std::size_t kMaxRowEvidenceBytes = 160;
inline constexpr std::size_t kMaxEvidenceBytes = 4000;

// 4 critical .. 0 info; -1 for anything else.
int severity_rank(std::string_view severity);
// The severity as a CSS/label token: one of kSeverities, or "unknown".
std::string severity_token(const nlohmann::json& finding);

struct AssetEntry {
  const nlohmann::json* asset;
  std::string id, label, anchor;            // label: name, or id
  // The findings the report lists: most severe first (document order within a severity), at most
  // kMaxFindingsPerAsset, so that a cut drops the least severe; and their anchors, in the same order.
  std::vector<const nlohmann::json*> listed;
  std::vector<std::string> finding_anchors;
};

struct FindingEntry {
  std::size_t asset;       // index into ReportPlan::assets
  std::size_t finding;     // index into that asset's `listed` findings
  const nlohmann::json* value;
};

struct ReportPlan {
  report_text::AnchorRegistry anchors;
  std::vector<AssetEntry> assets;
  std::map<std::string, std::size_t> asset_by_id;  // the first asset with each id
  std::array<std::size_t, 5> counts{};          // by kSeverities
  std::vector<FindingEntry> top_findings;       // most severe first, document order within a severity
  std::map<std::string, std::vector<std::size_t>> assets_by_risk;  // level (or "unrated") -> asset indexes
  nlohmann::json nist;                          // nist_ai_rmf_section()
  nlohmann::json playbooks;                     // fill_playbooks()
  std::map<std::string, std::string> nist_anchors;  // subcategory id (or alias) and function id -> anchor
  std::map<std::string, std::string> playbook_anchors;  // playbook id, and playbook id + "\n" + index of the asset in it -> anchor
};

ReportPlan plan_report(const nlohmann::json& document);

// "file!member @offset row 3:7 [column]" or the request, from a finding's location object.
std::string location_text(const nlohmann::json& location);
// A finding's evidence as text: a string as it is, anything else as compact JSON.
std::string evidence_text(const nlohmann::json& finding);

// ATLAS ids that are safe to put into a URL path (and are ATLAS ids at all).
bool is_atlas_technique(std::string_view id);
bool is_atlas_tactic(std::string_view id);
bool is_atlas_mitigation(std::string_view id);

// The colour class of a technique in the ATLAS matrix: "findings", "clean" or "untested".
std::string technique_state(const nlohmann::json& technique);

// The robustness results of a check split by norm (one object per norm, each with the check's
// clean_accuracy), so that l2 and linf budgets do not share an axis. Empty when there are none.
std::vector<std::pair<std::string, nlohmann::json>> robustness_by_norm(const nlohmann::json& results);

// The check's PNG artifacts whose bytes really are a PNG, as (name, base64 of the bytes).
std::vector<std::pair<std::string, std::string>> png_artifacts(const nlohmann::json& check);

}  // namespace aegis::assess::report_plan
