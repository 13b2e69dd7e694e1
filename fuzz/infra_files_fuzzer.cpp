// libFuzzer target for the static half of `aegis audit-infra`: the first byte picks the kind of
// deployment file (the reviewer decides by name), the rest is its content. Every reader (shell,
// Dockerfile, YAML for Compose/Kubernetes/CI, properties, notebook JSON) must turn any bytes into
// findings or a parse-error finding, never a crash; the same bytes are also read as a rule file,
// which must load or throw core::Error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "aegis/core/error.h"
#include "aegis/infra/infra.h"

namespace {

const aegis::infra::RuleSet& rules() {
  static const aegis::infra::RuleSet set = aegis::infra::builtin_rules();
  return set;
}

constexpr const char* kNames[] = {"Dockerfile", "docker-compose.yml", "deploy.yaml",      ".github/workflows/ci.yml",
                                  ".gitlab-ci.yml", "config.properties", "jupyter_server_config.py",
                                  "start.sh",     "Procfile",           "ollama.service", "notebook.ipynb"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const char* name = kNames[data[0] % (sizeof(kNames) / sizeof(kNames[0]))];
  const std::string_view content(reinterpret_cast<const char*>(data + 1), size - 1);
  const auto report = aegis::infra::review_text(name, content, rules());
  for (const auto& finding : report.findings)
    if (finding.rule_id.empty() || finding.title.empty()) std::abort();
  aegis::infra::RuleSet extra;
  try {
    aegis::infra::load_rule_text(extra, std::string(content), "fuzz.yaml");
  } catch (const aegis::core::Error&) {
  }
  return 0;
}
