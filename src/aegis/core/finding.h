// The one Finding that every Aegis module reports, with its severity scale and framework references.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::core {

enum class Severity : int { Info = 0, Low = 1, Medium = 2, High = 3, Critical = 4 };

std::string_view to_string(Severity severity);
// Accepts the lower-case names (critical, high, medium, low, info); nullopt otherwise.
std::optional<Severity> parse_severity(std::string_view text);

// Where a finding was seen. `member` names the path inside containers, outermost first,
// joined with "!" (for example "model.7z!archive/data.pkl"), empty for the file itself.
struct Location {
  std::string file;
  std::string member;
  std::optional<std::uint64_t> offset;  // byte offset inside the innermost member (or file)
  // Tabular and text data: the 1-based record (row) or line, and the column (CSV header, JSON key
  // path joined with '.', SQLite "table.column").
  std::optional<std::uint64_t> row;
  std::optional<std::uint64_t> line;
  std::string column;
};

struct Finding {
  std::string rule_id;
  Severity severity = Severity::Info;
  std::string title;
  Location location;
  std::string evidence;
  std::vector<std::string> atlas;        // MITRE ATLAS technique ids, e.g. AML.T0010
  std::vector<std::string> nist_ai_rmf;  // NIST AI RMF subcategories, e.g. MEASURE 2.7
  std::string remediation;
  // Command-specific fields as a serialized JSON object whose members join the finding's JSON
  // object (for example entity_type and score for PII) and its SARIF properties; empty for none.
  std::string properties_json;
};

// Common ATLAS references for artifact findings.
inline constexpr std::string_view kAtlasSupplyChain = "AML.T0010";      // ML Supply Chain Compromise
inline constexpr std::string_view kAtlasUserExecution = "AML.T0011";    // User Execution
inline constexpr std::string_view kAtlasUnsafeArtifact = "AML.T0011.000";  // Unsafe ML Artifacts

struct Summary {
  std::size_t files_scanned = 0;
  std::size_t bytes_scanned = 0;
  std::size_t counts[5] = {0, 0, 0, 0, 0};  // indexed by Severity
  std::optional<Severity> highest;
};

Summary summarize(const std::vector<Finding>& findings);

}  // namespace aegis::core
