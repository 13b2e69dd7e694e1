// libFuzzer target for the engagement's YAML readers: the first byte picks the reader — an asset
// inventory (parse_inventory, then the threat model over whatever assets it yielded), threat-model
// rules, or an ATLAS distribution file. Any bytes must give issues, findings or core::Error, never a
// crash, a hang or unbounded memory.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "aegis/core/error.h"
#include "aegis/threat/threat.h"

namespace {

const std::vector<aegis::threat::ThreatRule>& rules() {
  static const auto shipped = aegis::threat::shipped_threat_rules(aegis::threat::AtlasCatalog::shipped());
  return shipped;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view text(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto& catalog = aegis::threat::AtlasCatalog::shipped();
  switch (data[0] % 3) {
    case 0: {
      const auto load = aegis::threat::parse_inventory(text, "/nonexistent/fuzz/inventory.yaml");
      const auto model = aegis::threat::build_threat_model(load.inventory, catalog, rules());
      (void)aegis::threat::to_yaml(load.inventory);
      (void)model;
      break;
    }
    case 1:
      try {
        (void)aegis::threat::AtlasCatalog::parse(text, "fuzz ATLAS.yaml");
      } catch (const aegis::core::Error&) {
      }
      break;
    default:
      try {
        (void)aegis::threat::parse_threat_rules(text, "fuzz rules", catalog);
      } catch (const aegis::core::Error&) {
      }
      break;
  }
  return 0;
}
