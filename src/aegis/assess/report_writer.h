// The assessment report: one self-contained HTML file (and the same content in GitHub Markdown) from
// the assessment document that `aegis assess` stores, with the NIST AI RMF subcategories it gives
// evidence for and the incident-response playbooks filled in for the assessed assets.
//
// The document comes from user files (inventory, model outputs): every string is escaped, and a
// partial or malformed document (missing keys, wrong types) renders as if the missing parts were empty.
#pragma once

#include <ostream>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace aegis::assess {

// The NIST AI RMF 1.0 subcategories the assessment produced evidence for, grouped by function in
// the Core's order (GOVERN when any, MAP, MEASURE, MANAGE), each with the Core's statement text and
// its evidence (which check on which asset, which findings, which tested technique):
//   {"framework", "document", "doi",
//    "functions": [{"id": "MAP", "subcategories": [{"id": "MAP 4.1", "category": "MAP 4", "text",
//                    "evidence": [{"source": "finding"|"technique"|"assessment", "asset", "check",
//                                  "technique", "rule_id", "severity", "title", "note"}],
//                    "evidence_omitted": N}]}],
//    "unmatched": [ids referenced by the document that are not subcategories of the Core],
//    "aliases": {"MS-2.10": "MEASURE 2.10", ...: references written otherwise, read as that subcategory}}
nlohmann::json nist_ai_rmf_section(const nlohmann::json& document);

// The incident-response playbooks that apply to the assessed assets (model extraction, data
// poisoning, prompt injection; templates in data/assess/playbooks.yaml), filled in per asset:
//   {"playbooks": [{"id", "title", "threat", "atlas": [], "nist_ai_rmf": [],
//                   "assets": [{"asset", "name", "kind", "owner", "why",
//                               "findings": [{"asset", "rule_id", "severity", "title"}],
//                               "phases": [{"phase", "title", "steps": [text]}]}]}]}
// Step texts are plain text with commands in `backticks`; a playbook that applies to no asset is left out.
nlohmann::json fill_playbooks(const nlohmann::json& document);

// A complete SVG document: robust accuracy (y, 0..1) against the perturbation budget eps (x), one
// series per attack and norm, from a robustness check's results object (the `aegis attack` JSON:
// its "results" array, and "clean_accuracy" drawn as each series' eps = 0 point). Axis labels,
// ticks and a legend; each point is a <circle class="point"> with data-series and data-eps.
// Results without a finite eps (minimal-perturbation attacks) are not drawn.
std::string robustness_curve_svg(const nlohmann::json& check_results);

// One HTML file with no external resources: inline CSS, images as data: URIs, a Content-Security-
// Policy that forbids scripts, and in-page anchors for every section and asset.
void write_html_report(std::ostream& out, const nlohmann::json& document);
// The same sections in GitHub Markdown; images are referred to the HTML report.
void write_markdown_report(std::ostream& out, const nlohmann::json& document);

// Text made safe for HTML and XML element content and quoted attribute values: & < > " ' escaped,
// invalid UTF-8, control characters (except tab, line feed, carriage return) and the XML
// non-characters U+FFFE/U+FFFF replaced with U+FFFD.
std::string html_escape(std::string_view text);

// A fragment identifier made of [A-Za-z0-9_-] only (other bytes become '-', runs collapsed); "x" when
// nothing is left. Distinct inputs may collide: the writers make anchors unique themselves.
std::string anchor_slug(std::string_view text);

}  // namespace aegis::assess
