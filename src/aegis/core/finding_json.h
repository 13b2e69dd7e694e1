// A Finding as the JSON object every Aegis report writes, and back: `aegis assess` reads the findings
// of the checks it runs from their JSON reports.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "aegis/core/finding.h"

namespace aegis::core {

nlohmann::ordered_json finding_json(const Finding& finding);

// Reads one finding object. Members beyond the shared ones (entity_type, score, ...) go back into
// properties_json. Returns nullopt and sets `why` when rule_id or severity is missing or malformed;
// other fields of the wrong type are left empty. `location.request` (findings about a live
// request) is read into location.file.
std::optional<Finding> finding_from_json(const nlohmann::json& object, std::string* why = nullptr);

}  // namespace aegis::core
