// A check on YAML text before yaml-cpp sees it: yaml-cpp recurses while it builds nodes and, in 0.7,
// loops allocating on some malformed flow text, so hostile YAML is refused by shape first.
#pragma once

#include <cstddef>
#include <string_view>

namespace aegis::core {

// True when flow collections nest deeper than `max_depth` or block indentation runs past 400 columns. Throws core::FormatError for a flow collection followed by ',' outside any
// collection (" {...},\n {...}"): not YAML, and what makes yaml-cpp 0.7 allocate without end.
bool yaml_too_deep(std::string_view text, int max_depth);

}  // namespace aegis::core
