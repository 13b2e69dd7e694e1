// The one place that knows every filter type: config names -> factories.
#include <yaml-cpp/yaml.h>

#include "aegis/gateway/auth_filters.h"
#include "aegis/gateway/config.h"
#include "aegis/gateway/llm_filters.h"
#include "aegis/gateway/output_filters.h"
#include "aegis/gateway/rate_limit.h"
#include "aegis/gateway/redis_client.h"
#include "aegis/gateway/validation_filters.h"

namespace aegis::gateway {
namespace {

using Factory = std::unique_ptr<Filter> (*)(const YAML::Node&, const FilterBuildContext&);

struct Entry {
  const char* type;
  Factory make;
};

// In the order a chain usually runs them: authenticate, authorise, limit, validate, then the
// response filters.
std::unique_ptr<Filter> make_rate_limit(const YAML::Node& options, const FilterBuildContext& context) {
  return make_rate_limit_filter(options, context);
}

const Entry kFilters[] = {
    {"api_key", &make_api_key_filter},
    {"jwt", &make_jwt_filter},
    {"rbac", &make_rbac_filter},
    {"rate_limit", &make_rate_limit},
    {"body_limit", &make_body_limit_filter},
    {"json_schema", &make_json_schema_filter},
    {"confidence", &make_confidence_filter},
    {"output_hardening", &make_output_hardening_filter},
    {"redact", &make_redact_filter},
    {"llm_guard", &make_llm_guard_filter},
};

}  // namespace

std::vector<std::string> known_filter_types() {
  std::vector<std::string> types;
  for (const auto& entry : kFilters) types.emplace_back(entry.type);
  return types;
}

std::unique_ptr<Filter> make_filter(const std::string& type, const YAML::Node& options, const FilterBuildContext& context) {
  for (const auto& entry : kFilters)
    if (type == entry.type) return entry.make(options, context);
  return nullptr;
}

std::shared_ptr<RedisClient> make_shared_redis_client(const YAML::Node& section, const std::string& config_file) {
  return std::shared_ptr<RedisClient>(make_redis_client(section, config_file));
}

}  // namespace aegis::gateway
