#include "aegis/core/finding.h"

#include <array>

namespace aegis::core {

namespace {
constexpr std::array<std::string_view, 5> kNames = {"info", "low", "medium", "high", "critical"};
}

std::string_view to_string(Severity severity) { return kNames.at(static_cast<std::size_t>(severity)); }

std::optional<Severity> parse_severity(std::string_view text) {
  for (std::size_t i = 0; i < kNames.size(); ++i)
    if (kNames[i] == text) return static_cast<Severity>(i);
  return std::nullopt;
}

Summary summarize(const std::vector<Finding>& findings) {
  Summary summary;
  for (const auto& finding : findings) {
    ++summary.counts[static_cast<int>(finding.severity)];
    if (!summary.highest || finding.severity > *summary.highest) summary.highest = finding.severity;
  }
  return summary;
}

}  // namespace aegis::core
