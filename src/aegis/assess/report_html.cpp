// The assessment report as one self-contained HTML file: inline CSS, images as data: URIs, no
// scripts (the Content-Security-Policy forbids them), every in-page link to an id in the file.
#include <algorithm>
#include <ostream>
#include <string>
#include <string_view>

#include "aegis/assess/report_json_view.h"
#include "aegis/assess/report_plan.h"
#include "aegis/assess/report_text.h"
#include "aegis/assess/report_writer.h"
#include "aegis/core/base64.h"

namespace aegis::assess {
namespace {

using nlohmann::json;
using namespace report_view;
using namespace report_plan;

constexpr std::string_view kStyle = R"css(
:root { --fg: #1d2330; --muted: #5b6472; --line: #d9dde3; --bg-soft: #f5f7fa; --accent: #1f4e99; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg); background: #fff; }
header.report { background: #14213d; color: #fff; padding: 24px 40px; }
header.report h1 { margin: 0 0 6px; font-size: 26px; }
header.report p { margin: 2px 0; color: #d0d6e2; }
header.report code { background: rgba(255, 255, 255, 0.15); color: #ffffff; }
main { padding: 8px 40px 40px; max-width: 1400px; }
nav.toc { background: var(--bg-soft); border: 1px solid var(--line); border-radius: 6px; padding: 10px 20px; margin: 20px 0; }
nav.toc ul { margin: 4px 0; padding-left: 20px; }
h2 { border-bottom: 2px solid var(--line); padding-bottom: 4px; margin-top: 40px; }
h3 { margin-top: 28px; }
a { color: var(--accent); }
table { border-collapse: collapse; margin: 10px 0 16px; font-size: 14px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--bg-soft); }
td.num, th.num { text-align: right; }
code, pre { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 13px; }
code { background: var(--bg-soft); padding: 0 3px; border-radius: 3px; overflow-wrap: anywhere; }
pre.evidence { background: var(--bg-soft); border: 1px solid var(--line); padding: 8px; white-space: pre-wrap; overflow-wrap: anywhere; max-height: 420px; overflow: auto; }
.muted, .note { color: var(--muted); }
.note { font-size: 13px; }
.warning { background: #fff4e5; border: 1px solid #f0b45b; padding: 8px 12px; border-radius: 4px; }
.sev, .risk, .state { display: inline-block; white-space: nowrap; padding: 0 7px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; background: #7a8290; }
.sev-critical, .risk-critical { background: #7b1020; }
.sev-high, .risk-high { background: #c0392b; }
.sev-medium, .risk-medium { background: #d68910; }
.sev-low, .risk-low { background: #2e86c1; }
.sev-info { background: #5d6d7e; }
.state-done, .state-reused { background: #1e8449; }
.state-failed { background: #c0392b; }
.state-not-possible { background: #d68910; }
.state-not-called-for { background: #95a5a6; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 16px; min-width: 130px; background: var(--bg-soft); }
.card .value { font-size: 24px; font-weight: 700; }
.card .label { color: var(--muted); font-size: 13px; }
section.asset { border-top: 1px solid var(--line); margin-top: 28px; }
dl.attributes { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 10px 0; }
dl.attributes dt { color: var(--muted); }
dl.attributes dd { margin: 0; }
article.finding { border: 1px solid var(--line); border-left: 5px solid #7a8290; border-radius: 4px; padding: 6px 14px; margin: 10px 0; }
article.finding.sev-border-critical { border-left-color: #7b1020; }
article.finding.sev-border-high { border-left-color: #c0392b; }
article.finding.sev-border-medium { border-left-color: #d68910; }
article.finding.sev-border-low { border-left-color: #2e86c1; }
article.finding h4 { margin: 6px 0; }
figure { margin: 12px 0; }
figure img { max-width: min(100%, 760px); height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13px; }
.matrix { display: flex; gap: 6px; overflow-x: auto; padding-bottom: 8px; }
.tactic { flex: 0 0 150px; background: var(--bg-soft); border: 1px solid var(--line); border-radius: 4px; padding: 6px; }
.tactic h4 { margin: 0 0 2px; font-size: 13px; }
.tactic ul { list-style: none; margin: 6px 0 0; padding: 0; }
.cell { border-radius: 3px; padding: 4px 6px; margin-bottom: 4px; font-size: 12px; border: 1px solid var(--line); }
.cell a { color: inherit; font-weight: 600; }
.cell-findings { background: #f5b7b1; }
.cell-clean { background: #abebc6; }
.cell-untested { background: #ffffff; border-style: dashed; }
.legend { display: flex; gap: 16px; font-size: 13px; margin: 8px 0; }
.legend span.swatch { display: inline-block; width: 14px; height: 14px; vertical-align: middle; margin-right: 4px; border: 1px solid var(--line); }
.subcategory { border-left: 3px solid var(--accent); padding: 2px 12px; margin: 12px 0; }
.subcategory p.statement { margin: 2px 0 6px; font-style: italic; }
.playbook-asset { border: 1px solid var(--line); border-radius: 6px; padding: 6px 16px; margin: 12px 0; }
.playbook-asset ol { margin: 4px 0 10px; }
footer { color: var(--muted); font-size: 13px; border-top: 1px solid var(--line); margin-top: 40px; padding-top: 10px; }
@media print { nav.toc { display: none; } .matrix { flex-wrap: wrap; } pre.evidence { max-height: none; } }
)css";

// Escaped text with `backtick` spans as <code>: playbook steps and check reasons name commands.
std::string with_code_spans(std::string_view text) {
  return report_text::split_code_spans(text, html_escape, [](std::string_view code) { return "<code>" + html_escape(code) + "</code>"; });
}

// "tpr_at_0_1pct_fpr" (the `aegis mia` JSON key) -> "TPR at 0.1% FPR"; other keys as they are.
std::string rate_label(const std::string& key) {
  constexpr std::string_view kPrefix = "tpr_at_", kSuffix = "pct_fpr";
  if (key.size() <= kPrefix.size() + kSuffix.size() || key.rfind(kPrefix, 0) != 0 ||
      key.compare(key.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0)
    return key;
  std::string rate = key.substr(kPrefix.size(), key.size() - kPrefix.size() - kSuffix.size());
  std::replace(rate.begin(), rate.end(), '_', '.');
  return "TPR at " + rate + "% FPR";
}

std::string severity_badge(const std::string& severity) {
  const std::string token = severity_rank(severity) >= 0 ? severity : "unknown";
  return "<span class=\"sev sev-" + token + "\">" + html_escape(severity.empty() ? "unknown" : severity) + "</span>";
}

std::string risk_badge(const std::string& level) {
  const bool known = std::find(kRiskLevels.begin(), kRiskLevels.end(), level) != kRiskLevels.end();
  return "<span class=\"risk risk-" + std::string(known ? level : "unrated") + "\">" + html_escape(level.empty() ? "unrated" : level) +
         "</span>";
}

std::string state_badge(const std::string& state) {
  static const char* kStates[] = {"done", "reused", "failed", "not-possible", "not-called-for"};
  const bool known = std::find(std::begin(kStates), std::end(kStates), state) != std::end(kStates);
  return "<span class=\"state state-" + std::string(known ? state : "unknown") + "\">" + html_escape(state.empty() ? "unknown" : state) +
         "</span>";
}

std::string atlas_link(const std::string& id, std::string_view kind) {
  const bool valid = kind == "techniques" ? is_atlas_technique(id) : kind == "tactics" ? is_atlas_tactic(id) : is_atlas_mitigation(id);
  if (!valid) return "<code>" + html_escape(id) + "</code>";
  return "<a href=\"https://atlas.mitre.org/" + std::string(kind) + "/" + id + "\">" + id + "</a>";
}

std::string nist_reference(const ReportPlan& plan, const std::string& id) {
  const auto it = plan.nist_anchors.find(id);
  if (it == plan.nist_anchors.end()) return html_escape(id);
  return "<a href=\"#" + it->second + "\">" + html_escape(id) + "</a>";
}

std::string joined_html(const std::vector<std::string>& items, const auto& render) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : ", ") + render(item);
  return out;
}

std::string data_image(std::string_view mime, const std::string& base64, const std::string& alt) {
  return "<img src=\"data:" + std::string(mime) + ";base64," + base64 + "\" alt=\"" + html_escape(alt) + "\">";
}

class HtmlReport {
 public:
  HtmlReport(std::ostream& out, const json& document) : out_(out), document_(document), plan_(plan_report(document)) {}

  void write() {
    const json& assessment = member(document_, "assessment");
    std::string organisation = text(assessment, "organisation");
    out_ << "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
         << "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; style-src 'unsafe-inline'\">\n"
         << "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
         << "<meta name=\"generator\" content=\"Aegis " << html_escape(text(member(document_, "aegis"), "version")) << "\">\n"
         << "<title>AI security assessment" << (organisation.empty() ? "" : " — " + html_escape(organisation)) << "</title>\n"
         << "<style>" << kStyle << "</style>\n</head>\n<body>\n";
    write_header(assessment, organisation);
    out_ << "<main>\n";
    write_contents();
    write_summary(assessment);
    write_assets();
    write_matrix();
    write_stride();
    write_nist();
    write_playbooks();
    out_ << "<footer>Generated by Aegis " << html_escape(text(member(document_, "aegis"), "version"))
         << " from assessment " << html_escape(text(assessment, "id"))
         << ". MITRE ATLAS&trade; is a trademark of The MITRE Corporation; NIST AI RMF 1.0 text from NIST AI 100-1.</footer>\n";
    out_ << "</main>\n</body>\n</html>\n";
  }

 private:
  const std::string& section(const char* name) { return plan_.anchors.get(std::string("section\n") + name); }

  void write_header(const json& assessment, const std::string& organisation) {
    out_ << "<header class=\"report\">\n<h1>AI security assessment" << (organisation.empty() ? "" : ": " + html_escape(organisation))
         << "</h1>\n";
    std::string line;
    if (auto id = text(assessment, "id"); !id.empty()) line += "Assessment " + html_escape(id);
    if (auto inventory = text(assessment, "inventory"); !inventory.empty())
      line += (line.empty() ? "" : " · ") + std::string("inventory <code>") + html_escape(inventory) + "</code>";
    if (!line.empty()) out_ << "<p>" << line << "</p>\n";
    std::string times;
    if (auto started = text(assessment, "started_at"); !started.empty()) times += "started " + html_escape(started);
    if (auto finished = text(assessment, "finished_at"); !finished.empty())
      times += (times.empty() ? "" : " · ") + std::string("finished ") + html_escape(finished);
    if (auto version = text(assessment, "atlas_version"); !version.empty())
      times += (times.empty() ? "" : " · ") + std::string("MITRE ATLAS ") + html_escape(version);
    if (!times.empty()) out_ << "<p>" << times << "</p>\n";
    out_ << "</header>\n";
  }

  void write_contents() {
    out_ << "<nav class=\"toc\" id=\"" << section("contents") << "\" aria-label=\"Contents\">\n<strong>Contents</strong>\n<ul>\n"
         << "<li><a href=\"#" << section("summary") << "\">Executive summary</a></li>\n"
         << "<li><a href=\"#" << section("assets") << "\">Assets</a>\n<ul>\n";
    for (const auto& asset : plan_.assets)
      out_ << "<li><a href=\"#" << asset.anchor << "\">" << html_escape(asset.label) << "</a></li>\n";
    out_ << "</ul></li>\n"
         << "<li><a href=\"#" << section("atlas-matrix") << "\">MITRE ATLAS coverage matrix</a></li>\n"
         << "<li><a href=\"#" << section("stride") << "\">STRIDE view</a></li>\n"
         << "<li><a href=\"#" << section("nist") << "\">NIST AI RMF subcategories addressed</a></li>\n"
         << "<li><a href=\"#" << section("playbooks") << "\">Incident-response playbooks</a>\n<ul>\n";
    for (const auto& playbook : list(plan_.playbooks, "playbooks"))
      out_ << "<li><a href=\"#" << plan_.playbook_anchors.at(text(playbook, "id")) << "\">" << html_escape(text(playbook, "title"))
           << "</a></li>\n";
    out_ << "</ul></li>\n</ul>\n</nav>\n";
  }

  void write_summary(const json& assessment) {
    const json& summary = member(document_, "summary");
    out_ << "<section id=\"" << section("summary") << "\">\n<h2>Executive summary</h2>\n";
    const std::string status = text(assessment, "status");
    if (!status.empty() && status != "finished")
      out_ << "<p class=\"warning\">This assessment is <strong>" << html_escape(status)
           << "</strong>: checks that did not run are missing from the results below.</p>\n";

    std::size_t total = 0;
    for (auto n : plan_.counts) total += n;
    const auto applicable = number(summary, "techniques_applicable");
    const auto tested = number(summary, "techniques_tested");
    out_ << "<div class=\"cards\">\n";
    card(std::to_string(plan_.assets.size() > 0 ? plan_.assets.size() : static_cast<std::size_t>(number_or(summary, "assets", 0))),
         "assets assessed");
    card(std::to_string(total), "findings");
    if (applicable && tested)
      card(html_escape(text(summary, "techniques_tested")) + " / " + html_escape(text(summary, "techniques_applicable")),
           "ATLAS techniques tested / applicable" +
               (*applicable > 0 ? " (" + report_text::percent(*tested / *applicable, 0) + ")" : std::string()));
    if (auto checks = text(summary, "checks_run"); !checks.empty())
      card(html_escape(checks), "checks run" + (number_or(summary, "checks_failed", 0) > 0
                                                   ? ", " + html_escape(text(summary, "checks_failed")) + " failed"
                                                   : std::string()));
    if (auto highest = text(summary, "highest"); !highest.empty()) card(severity_badge(highest), "highest severity");
    out_ << "</div>\n";

    out_ << "<h3>Findings by severity</h3>\n<table class=\"severity-counts\">\n<tr>";
    for (auto severity : kSeverities) out_ << "<th>" << severity_badge(std::string(severity)) << "</th>";
    out_ << "</tr>\n<tr>";
    for (auto n : plan_.counts) out_ << "<td class=\"num\">" << n << "</td>";
    out_ << "</tr>\n</table>\n";

    out_ << "<h3>Assets by residual risk</h3>\n";
    if (plan_.assets.empty()) {
      out_ << "<p class=\"muted\">The document lists no assets.</p>\n";
    } else {
      out_ << "<table class=\"risk-levels\">\n<tr><th>Residual risk</th><th class=\"num\">Assets</th><th>Which</th></tr>\n";
      std::vector<std::string> levels(kRiskLevels.begin(), kRiskLevels.end());
      levels.push_back("unrated");
      for (const auto& level : levels) {
        const auto it = plan_.assets_by_risk.find(level);
        if (it == plan_.assets_by_risk.end() && level == "unrated") continue;
        out_ << "<tr><td>" << risk_badge(level) << "</td><td class=\"num\">" << (it == plan_.assets_by_risk.end() ? 0 : it->second.size())
             << "</td><td>";
        if (it != plan_.assets_by_risk.end())
          for (std::size_t k = 0; k < it->second.size(); ++k) {
            const auto& asset = plan_.assets[it->second[k]];
            out_ << (k ? ", " : "") << "<a href=\"#" << asset.anchor << "\">" << html_escape(asset.label) << "</a>";
          }
        out_ << "</td></tr>\n";
      }
      out_ << "</table>\n";
    }

    out_ << "<h3>Top findings</h3>\n";
    if (plan_.top_findings.empty()) {
      out_ << "<p class=\"muted\">No findings.</p>\n";
    } else {
      out_ << "<table class=\"top-findings\">\n<tr><th>Severity</th><th>Finding</th><th>Asset</th><th>Check</th></tr>\n";
      for (const auto& entry : plan_.top_findings) {
        const auto& asset = plan_.assets[entry.asset];
        out_ << "<tr><td>" << severity_badge(text(*entry.value, "severity")) << "</td><td><a href=\"#"
             << asset.finding_anchors[entry.finding] << "\">" << html_escape(text(*entry.value, "title")) << "</a></td><td><a href=\"#"
             << asset.anchor << "\">" << html_escape(asset.label) << "</a></td><td>" << html_escape(text(*entry.value, "check"))
             << "</td></tr>\n";
      }
      out_ << "</table>\n";
    }
    out_ << "</section>\n";
  }

  void card(const std::string& value_html, const std::string& label_html) {
    out_ << "<div class=\"card\"><div class=\"value\">" << value_html << "</div><div class=\"label\">" << label_html << "</div></div>\n";
  }

  void write_assets() {
    out_ << "<section id=\"" << section("assets") << "\">\n<h2>Assets</h2>\n";
    if (plan_.assets.empty()) {
      out_ << "<p class=\"muted\">The document lists no assets.</p>\n</section>\n";
      return;
    }
    out_ << "<table class=\"asset-overview\">\n<tr><th>Asset</th><th>Kind</th><th>Owner</th><th>Criticality</th><th>Exposure</th>"
            "<th>Residual risk</th><th class=\"num\">Techniques tested</th><th class=\"num\">Findings</th></tr>\n";
    for (const auto& asset : plan_.assets) {
      const json& a = *asset.asset;
      const json& risk = member(a, "risk");
      const json& coverage = member(a, "coverage");
      out_ << "<tr><td><a href=\"#" << asset.anchor << "\">" << html_escape(asset.label) << "</a></td><td>"
           << html_escape(text(a, "kind")) << "</td><td>" << html_escape(text(a, "owner")) << "</td><td>"
           << html_escape(text(a, "criticality")) << "</td><td>" << html_escape(text(a, "exposure")) << "</td><td>"
           << risk_badge(text(risk, "level")) << " " << html_escape(text(risk, "score")) << "</td><td class=\"num\">"
           << html_escape(text(coverage, "tested")) << " / " << html_escape(text(coverage, "applicable")) << "</td><td class=\"num\">"
           << list(a, "findings").size() << "</td></tr>\n";
    }
    out_ << "</table>\n";
    for (const auto& asset : plan_.assets) write_asset(asset);
    out_ << "</section>\n";
  }

  void write_asset(const AssetEntry& entry) {
    const json& asset = *entry.asset;
    out_ << "<section class=\"asset\" id=\"" << entry.anchor << "\">\n<h3>" << html_escape(entry.label);
    if (!entry.id.empty() && entry.id != entry.label) out_ << " <span class=\"muted\">(" << html_escape(entry.id) << ")</span>";
    out_ << "</h3>\n";
    if (auto description = text(asset, "description"); !description.empty()) out_ << "<p>" << html_escape(description) << "</p>\n";

    out_ << "<dl class=\"attributes\">\n";
    const auto attribute = [this](std::string_view label, const std::string& value_html) {
      if (!value_html.empty()) out_ << "<dt>" << label << "</dt><dd>" << value_html << "</dd>\n";
    };
    const auto plain = [&asset](std::string_view key) { return html_escape(text(asset, key)); };
    const auto codes = [&asset](std::string_view key) {
      return joined_html(strings(asset, key), [](const std::string& item) { return "<code>" + html_escape(item) + "</code>"; });
    };
    attribute("Kind", plain("kind"));
    attribute("Owner", plain("owner"));
    attribute("Criticality", plain("criticality"));
    attribute("Sector", plain("sector"));
    attribute("Exposure", plain("exposure"));
    if (member(asset, "llm").is_boolean()) attribute("LLM", flag(asset, "llm") ? "yes" : "no");
    attribute("Task", plain("task"));
    attribute("Framework", plain("framework"));
    attribute("Files", codes("files"));
    attribute("URL", text(asset, "url").empty() ? "" : "<code>" + plain("url") + "</code>");
    attribute("API", plain("api"));
    attribute("Gateway config", text(asset, "gateway").empty() ? "" : "<code>" + plain("gateway") + "</code>");
    attribute("Endpoint", endpoint_html(text(asset, "endpoint")));
    attribute("Serves", served_models_html(entry.id));
    attribute("Training data", joined_html(strings(asset, "datasets"), [this](const std::string& id) { return asset_link(id); }));
    attribute("Sensitivity", html_escape(join_text(strings(asset, "sensitivity"))));
    attribute("Source", plain("source"));
    out_ << "</dl>\n";

    const json& risk = member(asset, "risk");
    const json& coverage = member(asset, "coverage");
    out_ << "<p><strong>Residual risk:</strong> " << risk_badge(text(risk, "level"));
    if (auto score = text(risk, "score"); !score.empty()) out_ << " score " << html_escape(score) << "/100";
    if (auto rationale = text(risk, "rationale"); !rationale.empty()) out_ << " — " << html_escape(rationale);
    out_ << "</p>\n";
    if (auto applicable = number(coverage, "applicable"); applicable) {
      const double tested = number_or(coverage, "tested", 0);
      out_ << "<p><strong>Coverage:</strong> " << html_escape(text(coverage, "tested")) << " of " << html_escape(text(coverage, "applicable"))
           << " applicable ATLAS techniques tested" << (*applicable > 0 ? " (" + report_text::percent(tested / *applicable, 0) + ")" : "")
           << ".</p>\n";
    }

    write_techniques(asset);
    write_checks(entry);
    write_findings(entry);
    out_ << "</section>\n";
  }

  std::string join_text(const std::vector<std::string>& items) {
    std::string joined;
    for (const auto& item : items) joined += (joined.empty() ? "" : ", ") + item;
    return joined;
  }

  // An asset id as a link to its section when the document has that asset, else as text.
  std::string asset_link(const std::string& id) {
    if (const auto it = plan_.asset_by_id.find(id); it != plan_.asset_by_id.end()) {
      const auto& asset = plan_.assets[it->second];
      return "<a href=\"#" + asset.anchor + "\">" + html_escape(asset.label) + "</a>";
    }
    return "<code>" + html_escape(id) + "</code>";
  }
  std::string endpoint_html(const std::string& endpoint) { return endpoint.empty() ? std::string() : asset_link(endpoint); }
  // For an endpoint: links to the models whose `endpoint` names it.
  std::string served_models_html(const std::string& endpoint_id) {
    std::string out;
    if (endpoint_id.empty()) return out;
    for (const auto& asset : plan_.assets)
      if (text(*asset.asset, "endpoint") == endpoint_id)
        out += (out.empty() ? "" : ", ") + std::string("<a href=\"#") + asset.anchor + "\">" + html_escape(asset.label) + "</a>";
    return out;
  }

  void write_techniques(const json& asset) {
    const auto& techniques = list(asset, "techniques");
    out_ << "<h4>Applicable ATLAS techniques</h4>\n";
    if (techniques.empty()) {
      out_ << "<p class=\"muted\">No applicable techniques in the document.</p>\n";
      return;
    }
    out_ << "<table class=\"techniques\">\n<tr><th>Technique</th><th>Tactics</th><th>Tested</th><th>Checks</th><th class=\"num\">Findings</th>"
            "<th>Mitigations</th><th>Why it applies</th></tr>\n";
    for (const auto& technique : techniques) {
      const bool tested = flag(technique, "tested");
      out_ << "<tr><td>" << atlas_link(text(technique, "id"), "techniques") << " " << html_escape(text(technique, "name")) << "</td><td>"
           << joined_html(strings(technique, "tactics"), [](const std::string& id) { return atlas_link(id, "tactics"); }) << "</td><td>"
           << (tested ? "yes" : "<strong>no</strong>") << "</td><td>" << html_escape(join_text(strings(technique, "checks")))
           << "</td><td class=\"num\">" << html_escape(text(technique, "findings")) << "</td><td>";
      bool first = true;
      for (const auto& mitigation : list(technique, "mitigations")) {
        out_ << (first ? "" : "<br>");
        first = false;
        if (mitigation.is_object())
          out_ << atlas_link(text(mitigation, "id"), "mitigations") << " " << html_escape(text(mitigation, "name"));
        else
          out_ << atlas_link(text_of(mitigation), "mitigations");
      }
      out_ << "</td><td>" << html_escape(join_text(strings(technique, "rationales"))) << "</td></tr>\n";
    }
    out_ << "</table>\n";
  }

  void write_checks(const AssetEntry& entry) {
    const auto& checks = list(*entry.asset, "checks");
    out_ << "<h4>Checks</h4>\n";
    if (checks.empty()) {
      out_ << "<p class=\"muted\">No checks in the document.</p>\n";
      return;
    }
    out_ << "<table class=\"checks\">\n<tr><th>Check</th><th>State</th><th>Run</th><th>Exit code</th><th>Reason</th><th>Command</th></tr>\n";
    for (const auto& check : checks) {
      out_ << "<tr><td>" << html_escape(text(check, "check")) << "</td><td>" << state_badge(text(check, "state")) << "</td><td>"
           << html_escape(text(check, "run_id")) << "</td><td>" << html_escape(text(check, "exit_code")) << "</td><td>"
           << with_code_spans(text(check, "reason")) << "</td><td>"
           << (text(check, "command").empty() ? "" : "<code>" + html_escape(text(check, "command")) + "</code>") << "</td></tr>\n";
    }
    out_ << "</table>\n";
    for (const auto& check : checks) write_check_results(entry, check);
  }

  void write_check_results(const AssetEntry& entry, const json& check) {
    const std::string name = text(check, "check");
    const json& results = member(check, "results");
    const auto by_norm = robustness_by_norm(results);
    if (!by_norm.empty()) {
      out_ << "<h4>Robustness (" << html_escape(name) << ")</h4>\n";
      if (auto clean = number(results, "clean_accuracy"))
        out_ << "<p>Clean accuracy " << report_text::percent(*clean) << ".</p>\n";
      for (const auto& [norm, group] : by_norm) {
        std::string attacks;
        for (const auto& result : list(group, "results"))
          if (auto attack = text(result, "attack"); attacks.find(attack) == std::string::npos)
            attacks += (attacks.empty() ? "" : ", ") + attack;
        const std::string alt = "Robust accuracy against perturbation budget" + (norm.empty() ? "" : " (" + norm + ")") + " for " +
                                entry.label + ": " + attacks;
        const std::string svg = robustness_curve_svg(group);
        out_ << "<figure>" << data_image("image/svg+xml", core::encode_base64(svg), alt) << "<figcaption>" << html_escape(alt)
             << "</figcaption></figure>\n";
      }
      out_ << "<table class=\"robustness\">\n<tr><th>Attack</th><th>Norm</th><th class=\"num\">eps</th><th class=\"num\">Robust accuracy</th>"
              "<th class=\"num\">Success rate</th></tr>\n";
      for (const auto& result : list(results, "results")) {
        const auto robust = number(result, "robust_accuracy");
        const auto success = number(result, "success_rate");
        out_ << "<tr><td>" << html_escape(text(result, "attack")) << "</td><td>" << html_escape(text(result, "norm"))
             << "</td><td class=\"num\">" << html_escape(text(result, "eps")) << "</td><td class=\"num\">"
             << (robust ? report_text::percent(*robust) : "-") << "</td><td class=\"num\">" << (success ? report_text::percent(*success) : "-")
             << "</td></tr>\n";
      }
      out_ << "</table>\n";
    }
    const auto& attacks = list(results, "attacks");
    const bool membership = !attacks.empty() && std::any_of(attacks.begin(), attacks.end(), [](const json& a) { return number(a, "auc").has_value(); });
    if (membership) {
      out_ << "<h4>Membership inference (" << html_escape(name) << ")</h4>\n<table class=\"membership\">\n<tr><th>Attack</th><th class=\"num\">AUC</th>"
              "<th>TPR at fixed FPR</th></tr>\n";
      for (const auto& attack : attacks) {
        std::string rates;
        if (attack.is_object())
          for (const auto& [key, value] : attack.items())
            if (key.rfind("tpr_at_", 0) == 0 && key.size() > 4 && key.compare(key.size() - 3, 3, "_ci") != 0)
              if (auto rate = number_of(value))
                rates += (rates.empty() ? "" : "; ") + html_escape(rate_label(key)) + ": " + report_text::percent(*rate, 2);
        const auto auc = number(attack, "auc");
        out_ << "<tr><td>" << html_escape(text(attack, "attack")) << "</td><td class=\"num\">" << (auc ? report_text::fixed(*auc, 3) : "-")
             << "</td><td>" << rates << "</td></tr>\n";
      }
      out_ << "</table>\n";
    }
    for (const auto& [artifact, base64] : png_artifacts(check)) {
      const std::string alt = artifact == "roc.png"
                                  ? "ROC curves of the membership-inference attacks on " + entry.label + " (log-log axes)"
                                  : artifact + " from the " + name + " check on " + entry.label;
      out_ << "<figure>" << data_image("image/png", base64, alt) << "<figcaption>" << html_escape(alt) << "</figcaption></figure>\n";
    }
  }

  void write_findings(const AssetEntry& entry) {
    const auto& findings = list(*entry.asset, "findings");
    out_ << "<h4>Findings (" << findings.size() << ")</h4>\n";
    if (findings.empty()) {
      out_ << "<p class=\"muted\">No findings for this asset.</p>\n";
      return;
    }
    const std::size_t listed = entry.listed.size();
    for (std::size_t k = 0; k < listed && k < kFullFindingsPerAsset; ++k) {
      const json& finding = *entry.listed[k];
      const std::string severity = text(finding, "severity");
      out_ << "<article class=\"finding sev-border-" << severity_token(finding) << "\" id=\"" << entry.finding_anchors[k] << "\">\n<h4>"
           << severity_badge(severity) << " " << html_escape(text(finding, "title")) << "</h4>\n<dl class=\"attributes\">\n";
      const auto row = [this](std::string_view label, const std::string& value_html) {
        if (!value_html.empty()) out_ << "<dt>" << label << "</dt><dd>" << value_html << "</dd>\n";
      };
      row("Rule", text(finding, "rule_id").empty() ? "" : "<code>" + html_escape(text(finding, "rule_id")) + "</code>");
      row("Check", html_escape(text(finding, "check")));
      row("Status", html_escape(text(finding, "status")));
      const std::string location = location_text(member(finding, "location"));
      row("Location", location.empty() ? "" : "<code>" + html_escape(location) + "</code>");
      row("ATLAS", joined_html(strings(finding, "atlas"), [](const std::string& id) { return atlas_link(id, "techniques"); }));
      row("NIST AI RMF", joined_html(strings(finding, "nist_ai_rmf"), [this](const std::string& id) { return nist_reference(plan_, id); }));
      out_ << "</dl>\n";
      const std::string evidence = evidence_text(finding);
      if (!evidence.empty()) {
        bool cut = false;
        const auto shown = report_text::utf8_prefix(evidence, kMaxEvidenceBytes, cut);
        out_ << "<pre class=\"evidence\">" << html_escape(shown) << "</pre>\n";
        if (cut)
          out_ << "<p class=\"note\">Evidence truncated: the first " << shown.size() << " of " << evidence.size()
               << " bytes are shown; <code>aegis report RUN --format json</code> has all of it.</p>\n";
      }
      if (auto remediation = text(finding, "remediation"); !remediation.empty())
        out_ << "<p><strong>Remediation:</strong> " << with_code_spans(remediation) << "</p>\n";
      out_ << "</article>\n";
    }
    // Past the first ones (a PII scan can report hundreds), one row each keeps the page readable.
    if (listed > kFullFindingsPerAsset) {
      out_ << "<table class=\"more-findings\">\n<tr><th>Severity</th><th>Finding</th><th>Rule</th><th>Location</th><th>Evidence</th></tr>\n";
      for (std::size_t k = kFullFindingsPerAsset; k < listed; ++k) {
        const json& finding = *entry.listed[k];
        bool cut = false;
        const std::string evidence = evidence_text(finding);
        const auto shown = report_text::utf8_prefix(evidence, kMaxRowEvidenceBytes, cut);
        out_ << "<tr id=\"" << entry.finding_anchors[k] << "\"><td>" << severity_badge(text(finding, "severity")) << "</td><td>"
             << html_escape(text(finding, "title")) << "</td><td><code>" << html_escape(text(finding, "rule_id")) << "</code></td><td>"
             << html_escape(location_text(member(finding, "location"))) << "</td><td>" << html_escape(shown) << (cut ? "&hellip;" : "")
             << "</td></tr>\n";
      }
      out_ << "</table>\n";
    }
    if (findings.size() > listed)
      out_ << "<p class=\"note\">" << findings.size() - listed
           << " more findings are not listed here; <code>aegis report RUN --format json</code> has all of them.</p>\n";
  }

  void write_matrix() {
    out_ << "<section id=\"" << section("atlas-matrix") << "\">\n<h2>MITRE ATLAS coverage matrix</h2>\n";
    const auto& tactics = list(document_, "tactics");
    if (tactics.empty()) {
      out_ << "<p class=\"muted\">The document has no ATLAS matrix.</p>\n</section>\n";
      return;
    }
    out_ << "<p>One column per ATLAS tactic; the cells are the techniques that apply to at least one assessed asset.</p>\n"
         << "<div class=\"legend\"><span><span class=\"swatch cell-findings\"></span>tested, with findings</span>"
         << "<span><span class=\"swatch cell-clean\"></span>tested, no findings</span>"
         << "<span><span class=\"swatch cell-untested\"></span>not tested</span></div>\n<div class=\"matrix\">\n";
    for (const auto& tactic : tactics) {
      const auto& techniques = list(tactic, "techniques");
      out_ << "<div class=\"tactic\"><h4>" << atlas_link(text(tactic, "id"), "tactics") << "<br>" << html_escape(text(tactic, "name"))
           << "</h4><div class=\"muted note\">" << techniques.size() << " of " << html_escape(text(tactic, "catalog_techniques"))
           << " apply</div><ul>\n";
      for (const auto& technique : techniques) {
        const std::string state = technique_state(technique);
        out_ << "<li class=\"cell cell-" << state << "\">" << atlas_link(text(technique, "id"), "techniques") << " "
             << html_escape(text(technique, "name")) << "<br><small>tested on " << html_escape(text(technique, "tested")) << " of "
             << html_escape(text(technique, "assets")) << " assets";
        if (const double findings = number_or(technique, "findings", 0); findings > 0)
          out_ << " · " << html_escape(text(technique, "findings")) << (findings == 1 ? " finding" : " findings");
        out_ << "</small></li>\n";
      }
      out_ << "</ul></div>\n";
    }
    out_ << "</div>\n</section>\n";
  }

  void write_stride() {
    out_ << "<section id=\"" << section("stride") << "\">\n<h2>STRIDE view</h2>\n";
    const auto& categories = list(document_, "stride");
    if (categories.empty()) {
      out_ << "<p class=\"muted\">The document has no STRIDE view.</p>\n</section>\n";
      return;
    }
    out_ << "<table class=\"stride\">\n<tr><th>Category</th><th>Techniques (asset)</th></tr>\n";
    for (const auto& category : categories) {
      out_ << "<tr><td>" << html_escape(text(category, "category")) << "</td><td>";
      bool first = true;
      for (const auto& technique : list(category, "techniques")) {
        out_ << (first ? "" : ", ") << atlas_link(text(technique, "id"), "techniques") << " (" << asset_link(text(technique, "asset")) << ")";
        first = false;
      }
      out_ << "</td></tr>\n";
    }
    out_ << "</table>\n</section>\n";
  }

  void write_nist() {
    const json& nist = plan_.nist;
    out_ << "<section id=\"" << section("nist") << "\">\n<h2>NIST AI RMF subcategories addressed</h2>\n"
         << "<p>The subcategories of the " << html_escape(text(nist, "framework")) << " Core (" << html_escape(text(nist, "document"))
         << ") that this assessment produced evidence for, with the Core's text.</p>\n";
    for (const auto& function : list(nist, "functions")) {
      const std::string function_id = text(function, "id");
      out_ << "<h3 id=\"" << plan_.nist_anchors.at(function_id) << "\">" << html_escape(function_id) << "</h3>\n";
      const auto& subcategories = list(function, "subcategories");
      if (subcategories.empty()) out_ << "<p class=\"muted\">No evidence for this function.</p>\n";
      for (const auto& subcategory : subcategories) {
        const std::string id = text(subcategory, "id");
        out_ << "<div class=\"subcategory\" id=\"" << plan_.nist_anchors.at(id) << "\">\n<strong>" << html_escape(id)
             << "</strong>\n<p class=\"statement\">" << html_escape(text(subcategory, "text")) << "</p>\n<ul>\n";
        for (const auto& evidence : list(subcategory, "evidence")) out_ << "<li>" << evidence_line(evidence) << "</li>\n";
        if (auto omitted = text(subcategory, "evidence_omitted"); !omitted.empty())
          out_ << "<li class=\"muted\">and " << html_escape(omitted) << " more</li>\n";
        out_ << "</ul>\n</div>\n";
      }
    }
    if (const auto unmatched = strings(nist, "unmatched"); !unmatched.empty())
      out_ << "<p class=\"note\">References that are not AI RMF 1.0 subcategories: " << html_escape(join_text(unmatched)) << ".</p>\n";
    out_ << "</section>\n";
  }

  std::string evidence_line(const json& evidence) {
    const std::string source = text(evidence, "source");
    std::string line;
    if (auto asset = text(evidence, "asset"); !asset.empty()) line += asset_link(asset) + ": ";
    if (source == "finding") {
      line += severity_badge(text(evidence, "severity")) + " " + html_escape(text(evidence, "title"));
      std::string details;
      if (auto rule = text(evidence, "rule_id"); !rule.empty()) details = "<code>" + html_escape(rule) + "</code>";
      if (auto check = text(evidence, "check"); !check.empty()) details += (details.empty() ? "" : ", ") + std::string("check ") + html_escape(check);
      if (!details.empty()) line += " (" + details + ")";
    } else if (source == "technique") {
      line += atlas_link(text(evidence, "technique"), "techniques") + " " + html_escape(text(evidence, "title")) + ": " +
              html_escape(text(evidence, "note"));
    } else {
      // Assessment-wide evidence: a note, or for a check the command line it ran.
      if (auto check = text(evidence, "check"); !check.empty())
        line += html_escape(check) + ": <code>" + html_escape(text(evidence, "note")) + "</code>";
      else
        line += with_code_spans(text(evidence, "note"));
    }
    return line;
  }

  void write_playbooks() {
    out_ << "<section id=\"" << section("playbooks") << "\">\n<h2>Incident-response playbooks</h2>\n";
    const auto& playbooks = list(plan_.playbooks, "playbooks");
    if (playbooks.empty()) out_ << "<p class=\"muted\">No playbook applies to the assessed assets.</p>\n";
    for (const auto& playbook : playbooks) {
      const std::string id = text(playbook, "id");
      out_ << "<h3 id=\"" << plan_.playbook_anchors.at(id) << "\">" << html_escape(text(playbook, "title")) << "</h3>\n<p>"
           << html_escape(text(playbook, "threat")) << "</p>\n<p class=\"note\">ATLAS: "
           << joined_html(strings(playbook, "atlas"), [](const std::string& t) { return atlas_link(t, "techniques"); })
           << " · NIST AI RMF: "
           << joined_html(strings(playbook, "nist_ai_rmf"), [this](const std::string& s) { return nist_reference(plan_, s); }) << "</p>\n";
      const auto& targets = list(playbook, "assets");
      for (std::size_t t = 0; t < targets.size(); ++t) {
        const json& target = targets[t];
        const std::string key = id + "\n" + std::to_string(t);
        out_ << "<div class=\"playbook-asset\" id=\"" << plan_.playbook_anchors.at(key) << "\">\n<h4>" << asset_link(text(target, "asset"))
             << " <span class=\"muted\">— " << html_escape(text(target, "why")) << "; owner "
             << html_escape(text(target, "owner").empty() ? "not recorded" : text(target, "owner")) << "</span></h4>\n";
        const auto& findings = list(target, "findings");
        if (!findings.empty()) {
          out_ << "<p><strong>Relevant findings:</strong></p>\n<ul>\n";
          for (const auto& finding : findings)
            out_ << "<li>" << severity_badge(text(finding, "severity")) << " " << html_escape(text(finding, "title")) << " ("
                 << asset_link(text(finding, "asset")) << ")</li>\n";
          if (auto omitted = text(target, "findings_omitted"); !omitted.empty())
            out_ << "<li class=\"muted\">and " << html_escape(omitted) << " more</li>\n";
          out_ << "</ul>\n";
        }
        for (const auto& phase : list(target, "phases")) {
          out_ << "<h5>" << html_escape(text(phase, "title")) << "</h5>\n<ol>\n";
          for (const auto& step : strings(phase, "steps")) out_ << "<li>" << with_code_spans(step) << "</li>\n";
          out_ << "</ol>\n";
        }
        out_ << "</div>\n";
      }
    }
    out_ << "</section>\n";
  }

  std::ostream& out_;
  const json& document_;
  ReportPlan plan_;
};

}  // namespace

void write_html_report(std::ostream& out, const json& document) { HtmlReport(out, document).write(); }

}  // namespace aegis::assess
