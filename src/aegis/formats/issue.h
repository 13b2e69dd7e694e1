// What the model-format analysers (Keras, TensorFlow, ONNX) hand to the scanner: one issue per
// thing a user should know about, already graded. The scanner adds the file, the member chain and
// the framework references, and turns each into a core::Finding.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "aegis/core/finding.h"

namespace aegis::formats {

enum class IssueClass {
  Code,       // runs code or reaches outside the model when loaded or run (ATLAS AML.T0011.000)
  Container,  // malformed, inconsistent or over-limit structure (ATLAS AML.T0010.003)
};

struct FormatIssue {
  std::string rule;            // full rule id, "<format>.<kind>", e.g. "onnx.external-data-escape"
  core::Severity severity = core::Severity::Medium;
  std::string title;           // one line, names the thing found
  std::string evidence;        // what was seen: node/layer names, values, decoded constants
  std::string where;           // path inside the model: "graph/node 'x'", "layers[3] 'lambda'"; may be empty
  std::optional<std::uint64_t> offset;  // byte offset in the file, when known
  std::string remediation;     // what the user should do
  IssueClass kind = IssueClass::Container;
};

// Caps the number of issues one analyser reports per file, so hostile input cannot flood a report.
inline constexpr std::size_t kMaxIssuesPerFile = 200;

}  // namespace aegis::formats
