// Report writers shared by every command: terminal table, JSON, SARIF 2.1.0 and Markdown.
#pragma once

#include <cstdint>
#include <ostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aegis/core/finding.h"

namespace aegis::core {

enum class ReportFormat { Table, Json, Sarif, Markdown };
std::optional<ReportFormat> parse_report_format(std::string_view text);

// One input file, for SARIF's artifacts list and the per-group tables.
struct ReportArtifact {
  std::string path;
  std::uint64_t size = 0;
  std::string format;
  std::string group;  // the model (or other unit) the file belongs to; may be empty
};

// A unit the user thinks in above files: one model of a registry, with its files' findings summed.
struct ReportGroup {
  std::string name;    // "org/name@rev", a folder, or a file
  std::string kind;    // "hf-cache", "model-folder", "file"
  std::string path;    // its root on disk
  std::size_t files = 0;
  std::uint64_t bytes = 0;
  Summary summary;
};

struct ReportContext {
  std::string command;             // e.g. "scan"
  std::vector<std::string> inputs; // what the user asked us to look at
  Summary summary;
  bool color = false;              // ANSI colours in the table
  bool verbose = false;            // table: show evidence and remediation in full
  // Command-specific results placed beside "findings" in the JSON document, as serialized JSON.
  std::string extra_json;
  std::vector<ReportArtifact> artifacts;  // SARIF run.artifacts; empty: only files with findings appear
  std::vector<ReportGroup> groups;        // per-model summary (table, Markdown, JSON "models", SARIF)
  std::string group_label = "model";
};

void write_report(std::ostream& out, ReportFormat format, const std::vector<Finding>& findings,
                  const ReportContext& context);

}  // namespace aegis::core
