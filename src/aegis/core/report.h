// Report writers shared by every command: terminal table, JSON, SARIF 2.1.0 and Markdown.
#pragma once

#include <ostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aegis/core/finding.h"

namespace aegis::core {

enum class ReportFormat { Table, Json, Sarif, Markdown };
std::optional<ReportFormat> parse_report_format(std::string_view text);

struct ReportContext {
  std::string command;             // e.g. "scan"
  std::vector<std::string> inputs; // what the user asked us to look at
  Summary summary;
  bool color = false;              // ANSI colours in the table
  bool verbose = false;            // table: show evidence and remediation in full
  // Command-specific results placed beside "findings" in the JSON document, as serialized JSON.
  std::string extra_json;
};

void write_report(std::ostream& out, ReportFormat format, const std::vector<Finding>& findings,
                  const ReportContext& context);

}  // namespace aegis::core
