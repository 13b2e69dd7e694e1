#include "aegis/core/report.h"
#include "aegis/core/finding_json.h"

#include <algorithm>
#include <cctype>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>

namespace aegis::core {

using nlohmann::ordered_json;

ordered_json finding_json(const Finding& finding) {
  ordered_json location = {{"file", finding.location.file}};
  if (!finding.location.member.empty()) location["member"] = finding.location.member;
  if (finding.location.offset) location["offset"] = *finding.location.offset;
  if (finding.location.row) location["row"] = *finding.location.row;
  if (finding.location.line) location["line"] = *finding.location.line;
  if (!finding.location.column.empty()) location["column"] = finding.location.column;
  ordered_json item = {{"rule_id", finding.rule_id},
                       {"severity", to_string(finding.severity)},
                       {"title", finding.title},
                       {"location", location},
                       {"evidence", finding.evidence},
                       {"atlas", finding.atlas},
                       {"nist_ai_rmf", finding.nist_ai_rmf},
                       {"remediation", finding.remediation}};
  if (!finding.properties_json.empty()) {
    const auto properties = ordered_json::parse(finding.properties_json);
    for (const auto& [key, value] : properties.items()) item[key] = value;
  }
  return item;
}

std::optional<Finding> finding_from_json(const nlohmann::json& object, std::string* why) {
  auto fail = [&](std::string reason) -> std::optional<Finding> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  if (!object.is_object()) return fail("a finding is a JSON object");
  auto text = [](const nlohmann::json& o, const char* key) {
    const auto it = o.find(key);
    return it != o.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  auto strings = [](const nlohmann::json& o, const char* key) {
    std::vector<std::string> out;
    const auto it = o.find(key);
    if (it != o.end() && it->is_array())
      for (const auto& v : *it)
        if (v.is_string()) out.push_back(v.get<std::string>());
    return out;
  };
  Finding f;
  f.rule_id = text(object, "rule_id");
  if (f.rule_id.empty()) return fail("a finding without a rule_id");
  const auto severity = parse_severity(text(object, "severity"));
  if (!severity) return fail("finding " + f.rule_id + " has no valid severity");
  f.severity = *severity;
  f.title = text(object, "title");
  f.evidence = text(object, "evidence");
  f.remediation = text(object, "remediation");
  f.atlas = strings(object, "atlas");
  f.nist_ai_rmf = strings(object, "nist_ai_rmf");
  if (const auto it = object.find("location"); it != object.end() && it->is_object()) {
    const auto& l = *it;
    f.location.file = text(l, "file");
    if (f.location.file.empty()) f.location.file = text(l, "request");
    f.location.member = text(l, "member");
    f.location.column = text(l, "column");
    auto number = [&](const char* key) -> std::optional<std::uint64_t> {
      const auto n = l.find(key);
      if (n != l.end() && n->is_number_unsigned()) return n->get<std::uint64_t>();
      return std::nullopt;
    };
    f.location.offset = number("offset");
    f.location.row = number("row");
    f.location.line = number("line");
  }
  nlohmann::json properties = nlohmann::json::object();
  for (const auto& [key, value] : object.items())
    if (key != "rule_id" && key != "severity" && key != "title" && key != "location" && key != "evidence" &&
        key != "atlas" && key != "nist_ai_rmf" && key != "remediation")
      properties[key] = value;
  if (!properties.empty()) f.properties_json = properties.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return f;
}

std::optional<ReportFormat> parse_report_format(std::string_view text) {
  if (text == "table") return ReportFormat::Table;
  if (text == "json") return ReportFormat::Json;
  if (text == "sarif") return ReportFormat::Sarif;
  if (text == "markdown" || text == "md") return ReportFormat::Markdown;
  return std::nullopt;
}

namespace {

std::string location_text(const Location& location) {
  std::string text = location.file;
  if (!location.member.empty()) text += "!" + location.member;
  if (location.offset) text += " @" + std::to_string(*location.offset);
  if (location.row) text += " row " + std::to_string(*location.row);
  if (location.line) text += ":" + std::to_string(*location.line);
  if (!location.column.empty()) text += " [" + location.column + "]";
  return text;
}

ordered_json summary_json(const ReportContext& context, std::size_t count) {
  ordered_json by_severity = ordered_json::object();
  for (int s = static_cast<int>(Severity::Critical); s >= 0; --s)
    by_severity[std::string(to_string(static_cast<Severity>(s)))] = context.summary.counts[s];
  return {{"files", context.summary.files_scanned},
          {"bytes", context.summary.bytes_scanned},
          {"findings", count},
          {"by_severity", by_severity},
          {"highest", context.summary.highest ? ordered_json(to_string(*context.summary.highest)) : ordered_json()}};
}

ordered_json group_json(const ReportGroup& group) {
  ordered_json by_severity = ordered_json::object();
  for (int s = static_cast<int>(Severity::Critical); s >= 0; --s)
    by_severity[std::string(to_string(static_cast<Severity>(s)))] = group.summary.counts[s];
  return {{"name", group.name},
          {"kind", group.kind},
          {"path", group.path},
          {"files", group.files},
          {"bytes", group.bytes},
          {"by_severity", by_severity},
          {"highest", group.summary.highest ? ordered_json(to_string(*group.summary.highest)) : ordered_json()}};
}

std::string severity_counts(const Summary& summary) {
  std::string text;
  for (int s = static_cast<int>(Severity::Critical); s >= 0; --s)
    if (summary.counts[s])
      text += (text.empty() ? "" : ", ") + std::to_string(summary.counts[s]) + " " +
              std::string(to_string(static_cast<Severity>(s)));
  return text.empty() ? "no findings" : text;
}

void write_json(std::ostream& out, const std::vector<Finding>& findings, const ReportContext& context) {
  ordered_json doc;
  doc["aegis"] = {{"version", AEGIS_VERSION}, {"command", context.command}};
  doc["inputs"] = context.inputs;
  doc["findings"] = ordered_json::array();
  for (const auto& finding : findings) doc["findings"].push_back(finding_json(finding));
  doc["summary"] = summary_json(context, findings.size());
  if (!context.groups.empty()) {
    ordered_json groups = ordered_json::array();
    for (const auto& group : context.groups) groups.push_back(group_json(group));
    doc[context.group_label + "s"] = groups;
  }
  if (!context.extra_json.empty()) {
    auto extra = ordered_json::parse(context.extra_json, nullptr, false);
    if (extra.is_object())
      for (auto& [key, value] : extra.items()) doc[key] = value;
  }
  // File names and strings from hostile files need not be UTF-8: invalid bytes become U+FFFD.
  out << doc.dump(2, ' ', false, ordered_json::error_handler_t::replace) << "\n";
}

// SARIF levels: GitHub code scanning maps error/warning/note; the numeric security-severity
// property decides how GitHub labels a security alert (critical >= 9.0, high >= 7.0, ...).
std::string_view sarif_level(Severity severity) {
  switch (severity) {
    case Severity::Critical:
    case Severity::High: return "error";
    case Severity::Medium: return "warning";
    default: return "note";
  }
}

std::string_view security_severity(Severity severity) {
  switch (severity) {
    case Severity::Critical: return "9.8";
    case Severity::High: return "8.0";
    case Severity::Medium: return "5.5";
    case Severity::Low: return "3.0";
    default: return "0.0";
  }
}

std::string fingerprint(const Finding& finding) {
  std::string key = finding.rule_id + "\n" + finding.location.file + "\n" + finding.location.member + "\n" + finding.title;
  // records and lines of data files tell findings apart that share a file and a title
  if (finding.location.row || finding.location.line || !finding.location.column.empty())
    key += "\n" + std::to_string(finding.location.row.value_or(0)) + "\n" +
           std::to_string(finding.location.line.value_or(0)) + "\n" + finding.location.column;
  std::size_t h = std::hash<std::string>{}(key);
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "%016zx", h);
  return buffer;
}

std::string sarif_uri(const std::string& path) {
  // Relative paths stay relative to the checkout (GitHub resolves them); absolute ones become file URIs.
  std::string uri;
  if (!path.empty() && path.front() == '/') uri = "file://";
  for (unsigned char c : path) {
    if (std::isalnum(c) || std::string_view("/-_.~").find(static_cast<char>(c)) != std::string_view::npos) {
      uri += static_cast<char>(c);
    } else {
      char buffer[4];
      std::snprintf(buffer, sizeof buffer, "%%%02X", c);
      uri += buffer;
    }
  }
  if (uri.starts_with("./")) uri.erase(0, 2);
  return uri;
}

void write_sarif(std::ostream& out, const std::vector<Finding>& findings, const ReportContext& context) {
  ordered_json rules = ordered_json::array();
  std::map<std::string, std::size_t> rule_index;
  for (const auto& finding : findings) {
    if (rule_index.contains(finding.rule_id)) {
      // a rule keeps the highest severity any of its results had
      auto& rule = rules[rule_index[finding.rule_id]];
      double current = std::stod(rule["properties"]["security-severity"].get<std::string>());
      if (std::stod(std::string(security_severity(finding.severity))) > current) {
        rule["properties"]["security-severity"] = security_severity(finding.severity);
        rule["defaultConfiguration"]["level"] = sarif_level(finding.severity);
      }
      continue;
    }
    rule_index[finding.rule_id] = rules.size();
    ordered_json tags = {"security"};
    for (const auto& id : finding.atlas) tags.push_back("atlas/" + id);
    rules.push_back({{"id", finding.rule_id},
                     {"name", finding.rule_id},
                     {"shortDescription", {{"text", finding.title}}},
                     {"help", {{"text", finding.remediation.empty() ? finding.title : finding.remediation}}},
                     {"defaultConfiguration", {{"level", sarif_level(finding.severity)}}},
                     {"properties", {{"tags", tags}, {"security-severity", security_severity(finding.severity)}}}});
  }
  // Every scanned file is an artifact, so a viewer shows clean files as scanned too; results
  // point at their file by index.
  ordered_json artifacts = ordered_json::array();
  std::map<std::string, std::size_t> artifact_index;
  std::map<std::string, std::string> group_of;
  for (const auto& artifact : context.artifacts) {
    if (artifact_index.contains(artifact.path)) continue;
    artifact_index[artifact.path] = artifacts.size();
    ordered_json properties = {{"format", artifact.format}};
    if (!artifact.group.empty()) {
      properties[context.group_label] = artifact.group;
      group_of[artifact.path] = artifact.group;
    }
    artifacts.push_back({{"location", {{"uri", sarif_uri(artifact.path)}}},
                         {"length", artifact.size},
                         {"properties", properties}});
  }
  ordered_json results = ordered_json::array();
  for (const auto& finding : findings) {
    ordered_json artifact_location = {{"uri", sarif_uri(finding.location.file)}};
    if (auto it = artifact_index.find(finding.location.file); it != artifact_index.end())
      artifact_location["index"] = it->second;
    ordered_json physical = {{"artifactLocation", artifact_location}};
    if (finding.location.offset && finding.location.member.empty())
      physical["region"] = {{"byteOffset", *finding.location.offset}};
    else if (finding.location.line)
      physical["region"] = {{"startLine", *finding.location.line}};
    std::string message = finding.title;
    if (!finding.location.member.empty()) message += " [in " + finding.location.member + "]";
    if (!finding.evidence.empty()) message += ". Evidence: " + finding.evidence;
    ordered_json result = {{"ruleId", finding.rule_id},
                           {"ruleIndex", rule_index[finding.rule_id]},
                           {"level", sarif_level(finding.severity)},
                           {"message", {{"text", message}}},
                           {"locations", ordered_json::array({{{"physicalLocation", physical}}})},
                           {"partialFingerprints", {{"aegisFinding/v1", fingerprint(finding)}}}};
    ordered_json properties = {{"severity", to_string(finding.severity)}, {"atlas", finding.atlas},
                               {"nist_ai_rmf", finding.nist_ai_rmf}};
    if (!finding.location.member.empty()) properties["member"] = finding.location.member;
    if (finding.location.offset) properties["offset"] = *finding.location.offset;
    if (finding.location.row) properties["row"] = *finding.location.row;
    if (!finding.location.column.empty()) properties["column"] = finding.location.column;
    if (!finding.properties_json.empty()) {
      const auto extra = ordered_json::parse(finding.properties_json);
      for (const auto& [key, value] : extra.items()) properties[key] = value;
    }
    if (auto it = group_of.find(finding.location.file); it != group_of.end()) properties[context.group_label] = it->second;
    result["properties"] = properties;
    results.push_back(result);
  }
  ordered_json doc = {
      {"$schema", "https://json.schemastore.org/sarif-2.1.0.json"},
      {"version", "2.1.0"},
      {"runs", ordered_json::array({{{"tool", {{"driver", {{"name", "Aegis"},
                                                           {"version", AEGIS_VERSION},
                                                           {"rules", rules}}}}},
                                     {"automationDetails", {{"id", "aegis/" + context.command + "/"}}},
                                     {"artifacts", artifacts},
                                     {"results", results}}})}};
  // File names and strings from hostile files need not be UTF-8: invalid bytes become U+FFFD.
  out << doc.dump(2, ' ', false, ordered_json::error_handler_t::replace) << "\n";
}

std::string markdown_escape(std::string_view text) {
  std::string escaped;
  for (char c : text) {
    if (c == '|' || c == '`' || c == '*' || c == '_' || c == '<' || c == '>') escaped += '\\';
    if (c == '\n') {
      escaped += "<br>";
      continue;
    }
    escaped += c;
  }
  return escaped;
}

void write_markdown(std::ostream& out, const std::vector<Finding>& findings, const ReportContext& context) {
  out << "# Aegis " << context.command << " report\n\n";
  if (context.summary.files_scanned > 0)
    out << "Scanned " << context.summary.files_scanned << " file(s), " << context.summary.bytes_scanned << " bytes. ";
  out << "Findings: " << findings.size();
  for (int s = static_cast<int>(Severity::Critical); s >= 0; --s)
    if (context.summary.counts[s]) out << ", " << context.summary.counts[s] << " " << to_string(static_cast<Severity>(s));
  out << ".\n\n";
  if (context.groups.size() > 1) {
    std::string label = context.group_label;
    if (!label.empty()) label[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(label[0])));
    out << "| " << label << " | Kind | Files | Highest | Findings |\n|---|---|---|---|---|\n";
    for (const auto& group : context.groups)
      out << "| " << markdown_escape(group.name) << " | " << group.kind << " | " << group.files << " | "
          << (group.summary.highest ? to_string(*group.summary.highest) : "none") << " | "
          << severity_counts(group.summary) << " |\n";
    out << "\n";
  }
  if (findings.empty()) {
    out << "No findings.\n";
    return;
  }
  out << "| Severity | Rule | Location | Finding | ATLAS |\n|---|---|---|---|---|\n";
  for (const auto& finding : findings) {
    std::string atlas;
    for (const auto& id : finding.atlas) atlas += (atlas.empty() ? "" : ", ") + id;
    out << "| " << to_string(finding.severity) << " | " << markdown_escape(finding.rule_id) << " | "
        << markdown_escape(location_text(finding.location)) << " | " << markdown_escape(finding.title) << " | "
        << atlas << " |\n";
  }
  out << "\n## Details\n";
  for (std::size_t i = 0; i < findings.size(); ++i) {
    const auto& finding = findings[i];
    out << "\n### " << i + 1 << ". " << markdown_escape(finding.title) << "\n\n"
        << "- **Severity:** " << to_string(finding.severity) << "\n"
        << "- **Rule:** " << markdown_escape(finding.rule_id) << "\n"
        << "- **Location:** " << markdown_escape(location_text(finding.location)) << "\n"
        << "- **Evidence:** " << markdown_escape(finding.evidence) << "\n";
    if (!finding.nist_ai_rmf.empty()) {
      out << "- **NIST AI RMF:** ";
      for (std::size_t j = 0; j < finding.nist_ai_rmf.size(); ++j) out << (j ? ", " : "") << finding.nist_ai_rmf[j];
      out << "\n";
    }
    out << "- **Remediation:** " << markdown_escape(finding.remediation) << "\n";
  }
}

std::string_view severity_colour(Severity severity) {
  switch (severity) {
    case Severity::Critical: return "\033[1;97;41m";
    case Severity::High: return "\033[1;31m";
    case Severity::Medium: return "\033[33m";
    case Severity::Low: return "\033[36m";
    default: return "\033[2m";
  }
}

std::string shorten(std::string_view text, std::size_t width) {
  if (text.size() <= width) return std::string(text);
  return std::string(text.substr(0, width > 3 ? width - 3 : 0)) + "...";
}

void write_table(std::ostream& out, const std::vector<Finding>& findings, const ReportContext& context) {
  const std::string reset = context.color ? "\033[0m" : "";
  for (const auto& finding : findings) {
    std::string severity(to_string(finding.severity));
    for (auto& c : severity) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    std::string padded = severity + std::string(9 - std::min<std::size_t>(9, severity.size()), ' ');
    if (context.color) out << severity_colour(finding.severity);
    out << padded << reset << finding.rule_id << "  " << location_text(finding.location) << "\n";
    out << "         " << finding.title << "\n";
    if (!finding.evidence.empty())
      out << "         evidence: " << (context.verbose ? finding.evidence : shorten(finding.evidence, 160)) << "\n";
    if (!finding.atlas.empty()) {
      out << "         atlas: ";
      for (std::size_t i = 0; i < finding.atlas.size(); ++i) out << (i ? ", " : "") << finding.atlas[i];
      out << "\n";
    }
    if (context.verbose && !finding.remediation.empty()) out << "         fix: " << finding.remediation << "\n";
  }
  if (!findings.empty()) out << "\n";
  if (context.groups.size() > 1) {
    out << "per " << context.group_label << ":\n";
    // A registry of thousands of clean models would bury the ones that matter: past a screenful,
    // clean ones are counted, not listed (JSON and Markdown list them all).
    const bool list_clean = context.groups.size() <= 30 || context.verbose;
    std::size_t clean = 0;
    for (const auto& group : context.groups) {
      if (!group.summary.highest && !list_clean) {
        ++clean;
        continue;
      }
      std::string highest = group.summary.highest ? std::string(to_string(*group.summary.highest)) : "clean";
      for (auto& c : highest) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
      if (context.color && group.summary.highest) out << severity_colour(*group.summary.highest);
      out << "  " << highest << std::string(9 - std::min<std::size_t>(9, highest.size()), ' ') << reset
          << group.name << "  (" << group.kind << ", " << group.files << " file(s)): " << severity_counts(group.summary)
          << "\n";
    }
    if (clean) out << "  " << clean << " " << context.group_label << "(s) without findings (--verbose lists them)\n";
    out << "\n";
  }
  // Commands that scan files say how much they read; the others (attack, mia...) just count findings.
  if (context.summary.files_scanned > 0)
    out << context.summary.files_scanned << " file(s), " << context.summary.bytes_scanned / 1000000.0 << " MB scanned: ";
  else
    out << context.command << ": ";
  if (findings.empty()) {
    out << "no findings\n";
    return;
  }
  out << findings.size() << " finding(s)";
  for (int s = static_cast<int>(Severity::Critical); s >= 0; --s)
    if (context.summary.counts[s]) out << ", " << context.summary.counts[s] << " " << to_string(static_cast<Severity>(s));
  out << "\n";
}

}  // namespace

void write_report(std::ostream& out, ReportFormat format, const std::vector<Finding>& findings,
                  const ReportContext& context) {
  switch (format) {
    case ReportFormat::Table: write_table(out, findings, context); break;
    case ReportFormat::Json: write_json(out, findings, context); break;
    case ReportFormat::Sarif: write_sarif(out, findings, context); break;
    case ReportFormat::Markdown: write_markdown(out, findings, context); break;
  }
}

}  // namespace aegis::core
