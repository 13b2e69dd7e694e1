// The asset inventory: parsed with every problem reported by line (an inventory is written by hand,
// and one error at a time is a slow way to fix a file), and proposed from a folder by `discover`.
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "aegis/core/error.h"
#include "aegis/core/yaml_guard.h"
#include "aegis/formats/sniff.h"
#include "aegis/threat/threat.h"

namespace aegis::threat {

namespace {

constexpr std::uintmax_t kMaxInventoryBytes = 16u << 20;
constexpr std::size_t kMaxAssets = 100'000;
constexpr int kMaxDepth = 32;

constexpr std::array<std::string_view, 4> kKindNames{"model", "dataset", "endpoint", "pipeline"};
const std::set<std::string, std::less<>> kCriticality{"low", "medium", "high", "critical"};
const std::set<std::string, std::less<>> kSectors{"finance", "health", "government", "other"};
const std::set<std::string, std::less<>> kExposure{"internal", "external"};
const std::set<std::string, std::less<>> kSensitivity{"pii", "phi", "financial", "public", "confidential"};
const std::set<std::string, std::less<>> kSources{"internal", "third-party", "public", "user-generated", "web-scraped"};
const std::set<std::string, std::less<>> kApis{"classifier", "openai-chat", "other"};
const std::set<std::string, std::less<>> kStages{"registry", "ci", "serving", "training"};
const std::set<std::string, std::less<>> kLlmTasks{"text-generation", "chat", "llm", "text2text-generation", "conversational"};

SourceMark mark_of(const YAML::Node& node) {
  const auto m = node.Mark();
  if (m.line < 0) return {};
  return {static_cast<std::uint64_t>(m.line) + 1, static_cast<std::uint64_t>(m.column) + 1};
}

std::string join(const std::set<std::string, std::less<>>& values) {
  std::string out;
  for (const auto& v : values) out += (out.empty() ? "" : ", ") + v;
  return out;
}

// Reads one asset's keys, recording each problem against the key's line. yaml-cpp's typed reads
// throw on a mismatch; every read here goes through the checks below instead.
class AssetReader {
 public:
  AssetReader(std::vector<InventoryIssue>& issues) : issues_(issues) {}

  void error(const YAML::Node& at, std::string message) { issues_.push_back({mark_of(at), "error", std::move(message)}); }
  void warning(const YAML::Node& at, std::string message) { issues_.push_back({mark_of(at), "warning", std::move(message)}); }

  bool scalar(const YAML::Node& node, std::string_view key, std::string& out) {
    if (!node.IsScalar()) {
      error(node, "'" + std::string(key) + "' must be a single value (a string), not a list or a mapping");
      return false;
    }
    out = node.Scalar();
    return true;
  }
  void choice(const YAML::Node& node, std::string_view key, const std::set<std::string, std::less<>>& allowed, std::string& out) {
    std::string value;
    if (!scalar(node, key, value)) return;
    if (!allowed.contains(value)) {
      error(node, "'" + std::string(key) + "' is '" + value + "'; write one of: " + join(allowed));
      return;
    }
    out = value;
  }
  void list(const YAML::Node& node, std::string_view key, std::vector<std::string>& out) {
    if (node.IsScalar()) {  // a single value where a list is expected is what people mean
      out.push_back(node.Scalar());
      return;
    }
    if (!node.IsSequence()) {
      error(node, "'" + std::string(key) + "' must be a list of strings");
      return;
    }
    for (const auto& item : node) {
      if (!item.IsScalar()) {
        error(item, "each entry of '" + std::string(key) + "' must be a string");
        continue;
      }
      out.push_back(item.Scalar());
    }
  }
  void choices(const YAML::Node& node, std::string_view key, const std::set<std::string, std::less<>>& allowed, std::vector<std::string>& out) {
    std::vector<std::string> values;
    list(node, key, values);
    for (auto& v : values) {
      if (!allowed.contains(v)) error(node, "'" + std::string(key) + "' has '" + v + "'; write one of: " + join(allowed));
      else out.push_back(std::move(v));
    }
  }
  bool boolean(const YAML::Node& node, std::string_view key, bool& out) {
    std::string value;
    if (!scalar(node, key, value)) return false;
    if (value == "true" || value == "yes" || value == "on") out = true;
    else if (value == "false" || value == "no" || value == "off") out = false;
    else {
      error(node, "'" + std::string(key) + "' must be true or false, not '" + value + "'");
      return false;
    }
    return true;
  }
  template <typename Number>
  void number(const YAML::Node& node, std::string_view key, Number low, Number high, Number& out) {
    std::string value;
    if (!scalar(node, key, value)) return;
    try {
      std::size_t used = 0;
      const double parsed = std::stod(value, &used);
      if (used != value.size() || !(parsed >= static_cast<double>(low) && parsed <= static_cast<double>(high))) throw std::invalid_argument("range");
      if constexpr (std::is_integral_v<Number>) {
        if (parsed != static_cast<double>(static_cast<long long>(parsed))) throw std::invalid_argument("integer");
      }
      out = static_cast<Number>(parsed);
    } catch (const std::exception&) {
      error(node, "'" + std::string(key) + "' must be a number from " + std::to_string(low) + " to " + std::to_string(high) + ", not '" + value + "'");
    }
  }
  void numbers(const YAML::Node& node, std::string_view key, double low, double high, std::vector<double>& out) {
    if (!node.IsSequence()) {
      double one = 0;
      const auto before = issues_.size();
      number(node, key, low, high, one);
      if (issues_.size() == before) out = {one};
      return;
    }
    out.clear();
    for (const auto& item : node) {
      double value = 0;
      const auto before = issues_.size();
      number(item, key, low, high, value);
      if (issues_.size() == before) out.push_back(value);
    }
  }

  // Calls `read(key, value)` for each key of the mapping; unknown keys are reported with the list of
  // known ones (a misspelt key would otherwise silently drop a test).
  template <typename Reader>
  void mapping(const YAML::Node& node, std::string_view what, const std::set<std::string, std::less<>>& known, Reader&& read) {
    if (!node.IsMap()) {
      error(node, std::string(what) + " must be a mapping of keys to values");
      return;
    }
    for (const auto& entry : node) {
      std::string key = entry.first.IsScalar() ? entry.first.Scalar() : std::string();
      if (!known.contains(key)) {
        error(entry.first, "unknown key '" + key + "' in " + std::string(what) + "; known keys: " + join(known));
        continue;
      }
      read(key, entry.second);
    }
  }

 private:
  std::vector<InventoryIssue>& issues_;
};

const std::set<std::string, std::less<>> kAssetKeys{
    "id", "kind", "name", "description", "owner", "criticality", "sector", "tags", "files", "framework", "task", "llm",
    "exposure", "endpoint", "datasets", "signature", "signature_key", "tests", "sensitivity", "source", "url", "api", "gateway",
    "stage", "targets"};

void read_tests(AssetReader& reader, const YAML::Node& node, Asset& asset) {
  reader.mapping(node, "tests", {"robustness", "membership", "extraction", "redteam"}, [&](const std::string& key, const YAML::Node& value) {
    if (key == "robustness") {
      RobustnessTest test;
      reader.mapping(value, "tests.robustness", {"data", "split", "limit", "attacks", "eps", "steps"}, [&](const std::string& k, const YAML::Node& v) {
        if (k == "data") reader.scalar(v, k, test.data);
        else if (k == "split") reader.choice(v, k, {"train", "test"}, test.split);
        else if (k == "limit") reader.number(v, k, std::size_t{1}, std::size_t{1'000'000}, test.limit);
        else if (k == "attacks") { test.attacks.clear(); reader.list(v, k, test.attacks); }
        else if (k == "eps") reader.numbers(v, k, 0.0, 1e6, test.eps);
        else if (k == "steps") reader.number(v, k, std::size_t{1}, std::size_t{100'000}, test.steps);
      });
      asset.robustness = test;
    } else if (key == "membership") {
      MembershipTest test;
      reader.mapping(value, "tests.membership", {"members", "data", "attacks"}, [&](const std::string& k, const YAML::Node& v) {
        if (k == "members") reader.scalar(v, k, test.members);
        else if (k == "data") reader.scalar(v, k, test.data);
        else if (k == "attacks") reader.list(v, k, test.attacks);
      });
      if (test.members.empty()) reader.error(value, "tests.membership needs 'members': a .npy of the training rows (indices) the model saw");
      asset.membership = test;
    } else if (key == "extraction") {
      ExtractionTest test;
      reader.mapping(value, "tests.extraction", {"surrogate", "budget", "strategy", "epochs"}, [&](const std::string& k, const YAML::Node& v) {
        if (k == "surrogate") reader.scalar(v, k, test.surrogate);
        else if (k == "budget") reader.number(v, k, std::size_t{1}, std::size_t{100'000'000}, test.budget);
        else if (k == "strategy") reader.scalar(v, k, test.strategy);
        else if (k == "epochs") reader.number(v, k, std::size_t{1}, std::size_t{10'000}, test.epochs);
      });
      if (test.surrogate.empty()) reader.error(value, "tests.extraction needs 'surrogate': a TorchScript model of the architecture to train");
      asset.extraction = test;
    } else if (key == "redteam") {
      RedteamTest test;
      reader.mapping(value, "tests.redteam", {"model", "probes", "transforms"}, [&](const std::string& k, const YAML::Node& v) {
        if (k == "model") reader.scalar(v, k, test.model);
        else if (k == "probes") reader.list(v, k, test.probes);
        else if (k == "transforms") reader.list(v, k, test.transforms);
      });
      asset.redteam = test;
    }
  });
}

Asset read_asset(AssetReader& reader, const YAML::Node& node, const std::map<std::string, std::string>& defaults) {
  Asset asset;
  asset.mark = mark_of(node);
  if (auto it = defaults.find("owner"); it != defaults.end()) asset.owner = it->second;
  if (auto it = defaults.find("sector"); it != defaults.end()) asset.sector = it->second;
  if (auto it = defaults.find("criticality"); it != defaults.end()) asset.criticality = it->second;
  bool kind_seen = false;
  bool llm_seen = false;
  reader.mapping(node, "an asset", kAssetKeys, [&](const std::string& key, const YAML::Node& value) {
    if (key == "id") {
      if (reader.scalar(value, key, asset.id) && !std::regex_match(asset.id, std::regex("[A-Za-z0-9][A-Za-z0-9._-]{0,127}")))
        reader.error(value, "asset id '" + asset.id + "' must be 1-128 letters, digits, '.', '_' or '-' (it names the asset in reports and the store)");
    } else if (key == "kind") {
      std::string text;
      if (reader.scalar(value, key, text)) {
        if (auto kind = parse_asset_kind(text)) {
          asset.kind = *kind;
          kind_seen = true;
        } else {
          reader.error(value, "kind '" + text + "' is not one of: model, dataset, endpoint, pipeline");
          kind_seen = true;
        }
      }
    } else if (key == "name") reader.scalar(value, key, asset.name);
    else if (key == "description") reader.scalar(value, key, asset.description);
    else if (key == "owner") reader.scalar(value, key, asset.owner);
    else if (key == "criticality") reader.choice(value, key, kCriticality, asset.criticality);
    else if (key == "sector") reader.choice(value, key, kSectors, asset.sector);
    else if (key == "tags") reader.list(value, key, asset.tags);
    else if (key == "files") reader.list(value, key, asset.files);
    else if (key == "framework") reader.scalar(value, key, asset.framework);
    else if (key == "task") reader.scalar(value, key, asset.task);
    else if (key == "llm") llm_seen = reader.boolean(value, key, asset.llm);
    else if (key == "exposure") reader.choice(value, key, kExposure, asset.exposure);
    else if (key == "endpoint") reader.scalar(value, key, asset.endpoint);
    else if (key == "datasets") reader.list(value, key, asset.datasets);
    else if (key == "signature") reader.scalar(value, key, asset.signature);
    else if (key == "signature_key") reader.scalar(value, key, asset.signature_key);
    else if (key == "tests") read_tests(reader, value, asset);
    else if (key == "sensitivity") reader.choices(value, key, kSensitivity, asset.sensitivity);
    else if (key == "source") reader.choice(value, key, kSources, asset.source);
    else if (key == "url") reader.scalar(value, key, asset.url);
    else if (key == "api") reader.choice(value, key, kApis, asset.api);
    else if (key == "gateway") reader.scalar(value, key, asset.gateway);
    else if (key == "stage") reader.choice(value, key, kStages, asset.stage);
    else if (key == "targets") reader.list(value, key, asset.targets);
  });
  if (node.IsMap()) {
    if (asset.id.empty() && !node["id"]) reader.error(node, "an asset needs an 'id' (for example: id: fraud-model)");
    if (!kind_seen) reader.error(node, "asset '" + asset.id + "' needs a 'kind': model, dataset, endpoint or pipeline");
  }
  if (!llm_seen && (kLlmTasks.contains(asset.task) || asset.api == "openai-chat")) asset.llm = true;
  if (asset.name.empty()) asset.name = asset.id;
  return asset;
}

std::filesystem::path resolve(const std::filesystem::path& base, const std::string& path) {
  const std::filesystem::path p(path);
  return p.is_absolute() ? p : (base / p).lexically_normal();
}

// Cross-asset checks: unique ids, references, what each kind needs to be assessed.
void check_inventory(const YAML::Node& assets_node, Inventory& inventory, AssetReader& reader) {
  std::map<std::string, std::size_t> seen;
  // Absolute, so that checks running in their own folders (or on other machines) find the files.
  std::error_code absolute_ec;
  const auto base = std::filesystem::absolute(inventory.file, absolute_ec).parent_path();
  for (std::size_t i = 0; i < inventory.assets.size(); ++i) {
    auto& asset = inventory.assets[i];
    const YAML::Node node = assets_node[i];
    if (asset.id.empty()) continue;
    if (auto [it, fresh] = seen.emplace(asset.id, i); !fresh)
      reader.error(node, "asset id '" + asset.id + "' is used twice (first at line " + std::to_string(inventory.assets[it->second].mark.line) + "); ids must be unique");
    for (const auto& file : asset.files) {
      auto path = resolve(base, file);
      std::error_code ec;
      if (!std::filesystem::exists(path, ec))
        reader.warning(node, "asset '" + asset.id + "': file '" + file + "' does not exist (looked for " + path.string() + "); checks on it will be reported as not possible");
      asset.resolved_files.push_back(path.string());
    }
    for (auto* field : {&asset.gateway, &asset.signature, &asset.signature_key}) {
      if (field->empty()) continue;
      *field = resolve(base, *field).string();
    }
    auto resolve_test_path = [&](std::string& p) {
      if (!p.empty()) p = resolve(base, p).string();
    };
    if (asset.robustness) resolve_test_path(asset.robustness->data);
    if (asset.membership) {
      resolve_test_path(asset.membership->members);
      resolve_test_path(asset.membership->data);
    }
    if (asset.extraction) resolve_test_path(asset.extraction->surrogate);
    switch (asset.kind) {
      case AssetKind::Model:
        if (asset.files.empty() && asset.endpoint.empty())
          reader.warning(node, "model '" + asset.id + "' has neither 'files' nor an 'endpoint': nothing about it can be tested");
        break;
      case AssetKind::Dataset:
        if (asset.files.empty()) reader.warning(node, "dataset '" + asset.id + "' has no 'files': it cannot be scanned for personal data");
        break;
      case AssetKind::Endpoint:
        if (asset.url.empty() && asset.gateway.empty())
          reader.warning(node, "endpoint '" + asset.id + "' has neither 'url' nor 'gateway': it cannot be probed or reviewed");
        break;
      case AssetKind::Pipeline:
        if (asset.files.empty() && asset.targets.empty())
          reader.warning(node, "pipeline '" + asset.id + "' has neither 'files' nor 'targets': its infrastructure cannot be reviewed");
        break;
    }
  }
  for (std::size_t i = 0; i < inventory.assets.size(); ++i) {
    const auto& asset = inventory.assets[i];
    const YAML::Node node = assets_node[i];
    for (const auto& dataset : asset.datasets) {
      const auto it = seen.find(dataset);
      if (it == seen.end()) reader.error(node, "asset '" + asset.id + "' names dataset '" + dataset + "', which is not in the inventory");
      else if (inventory.assets[it->second].kind != AssetKind::Dataset)
        reader.error(node, "asset '" + asset.id + "' names '" + dataset + "' as a dataset, but it is a " + std::string(to_string(inventory.assets[it->second].kind)));
    }
    if (!asset.endpoint.empty() && asset.endpoint.find("://") == std::string::npos) {
      const auto it = seen.find(asset.endpoint);
      if (it == seen.end()) reader.error(node, "asset '" + asset.id + "' names endpoint '" + asset.endpoint + "', which is not in the inventory (give an endpoint asset's id or a URL)");
      else if (inventory.assets[it->second].kind != AssetKind::Endpoint)
        reader.error(node, "asset '" + asset.id + "' names '" + asset.endpoint + "' as its endpoint, but it is a " + std::string(to_string(inventory.assets[it->second].kind)));
    }
  }
}

}  // namespace

std::string_view to_string(AssetKind kind) { return kKindNames[static_cast<std::size_t>(kind)]; }

std::optional<AssetKind> parse_asset_kind(std::string_view text) {
  for (std::size_t i = 0; i < kKindNames.size(); ++i)
    if (kKindNames[i] == text) return static_cast<AssetKind>(i);
  return std::nullopt;
}

const Asset* Inventory::find(std::string_view id) const {
  for (const auto& asset : assets)
    if (asset.id == id) return &asset;
  return nullptr;
}

bool InventoryLoad::ok() const {
  return std::none_of(issues.begin(), issues.end(), [](const InventoryIssue& i) { return i.severity == "error"; });
}

InventoryLoad parse_inventory(std::string_view text, const std::filesystem::path& file) {
  InventoryLoad load;
  load.inventory.file = file;
  AssetReader reader(load.issues);
  auto fail = [&](SourceMark mark, std::string message) {
    load.issues.push_back({mark, "error", std::move(message)});
    return load;
  };
  if (text.size() > kMaxInventoryBytes) return fail({}, "the inventory is larger than 16 MiB; split it into several files");
  YAML::Node root;
  try {
    if (core::yaml_too_deep(text, kMaxDepth)) return fail({}, "the inventory nests deeper than " + std::to_string(kMaxDepth) + " levels; an inventory is a list of assets, each a flat mapping");
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    return fail({static_cast<std::uint64_t>(e.mark.line) + 1, static_cast<std::uint64_t>(e.mark.column) + 1}, "not valid YAML: " + e.msg);
  } catch (const core::FormatError& e) {
    return fail({}, std::string("not valid YAML: ") + e.what());
  }
  if (!root.IsMap()) return fail(mark_of(root), "an inventory is a mapping with an 'assets:' list (see examples/assess/inventory.yaml)");
  std::map<std::string, std::string> defaults;
  YAML::Node assets_node;
  reader.mapping(root, "the inventory", {"inventory", "organisation", "organization", "policy", "defaults", "assets"}, [&](const std::string& key, const YAML::Node& value) {
    if (key == "inventory") {
      int version = 1;
      reader.number(value, key, 1, 1, version);
    } else if (key == "organisation" || key == "organization") reader.scalar(value, key, load.inventory.organisation);
    else if (key == "policy") {
      auto& policy = load.inventory.policy;
      reader.mapping(value, "policy", {"every_days", "on_model_change", "on_atlas_release", "after_fix"}, [&](const std::string& k, const YAML::Node& v) {
        if (k == "every_days") reader.number(v, k, 1, 3650, policy.every_days);
        else if (k == "on_model_change") reader.boolean(v, k, policy.on_model_change);
        else if (k == "on_atlas_release") reader.boolean(v, k, policy.on_atlas_release);
        else if (k == "after_fix") reader.boolean(v, k, policy.after_fix);
      });
    } else if (key == "defaults") {
      reader.mapping(value, "defaults", {"owner", "sector", "criticality"}, [&](const std::string& k, const YAML::Node& v) {
        std::string out;
        if (k == "owner") reader.scalar(v, k, out);
        else if (k == "sector") reader.choice(v, k, kSectors, out);
        else reader.choice(v, k, kCriticality, out);
        if (!out.empty()) defaults[k] = out;
      });
    } else if (key == "assets") {
      assets_node.reset(value);
    }
  });
  if (!assets_node) return fail(mark_of(root), "the inventory has no 'assets:' list; add one entry per model, dataset, endpoint and pipeline");
  if (!assets_node.IsSequence()) return fail(mark_of(assets_node), "'assets' must be a list (each entry starts with '- id: ...')");
  if (assets_node.size() > kMaxAssets) return fail(mark_of(assets_node), "more than " + std::to_string(kMaxAssets) + " assets; split the inventory");
  for (const auto& node : assets_node) load.inventory.assets.push_back(read_asset(reader, node, defaults));
  check_inventory(assets_node, load.inventory, reader);
  std::stable_sort(load.issues.begin(), load.issues.end(), [](const InventoryIssue& a, const InventoryIssue& b) { return a.mark.line < b.mark.line; });
  return load;
}

InventoryLoad load_inventory(const std::filesystem::path& file) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(file, ec);
  if (ec) throw core::Error("cannot read the inventory " + file.string() + ": " + ec.message(), "give the path of an inventory YAML file (aegis inventory discover DIR proposes one)");
  if (size > kMaxInventoryBytes) {
    InventoryLoad load;
    load.inventory.file = file;
    load.issues.push_back({{}, "error", "the inventory is larger than 16 MiB; split it into several files"});
    return load;
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw core::Error("cannot open the inventory " + file.string(), "check the path and its permissions");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_inventory(text.str(), file);
}

// ---------------------------------------------------------------- writing and discovery

namespace {

void emit_list(YAML::Emitter& out, const char* key, const std::vector<std::string>& values) {
  if (values.empty()) return;
  out << YAML::Key << key << YAML::Value << YAML::Flow << values << YAML::Block;
}

void emit(YAML::Emitter& out, const char* key, const std::string& value) {
  if (!value.empty()) out << YAML::Key << key << YAML::Value << value;
}

}  // namespace

std::string to_yaml(const Inventory& inventory) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "inventory" << YAML::Value << 1;
  emit(out, "organisation", inventory.organisation);
  out << YAML::Key << "policy" << YAML::Value << YAML::BeginMap << YAML::Key << "every_days" << YAML::Value
      << inventory.policy.every_days << YAML::Key << "on_model_change" << YAML::Value << inventory.policy.on_model_change
      << YAML::Key << "on_atlas_release" << YAML::Value << inventory.policy.on_atlas_release << YAML::Key << "after_fix"
      << YAML::Value << inventory.policy.after_fix << YAML::EndMap;
  out << YAML::Key << "assets" << YAML::Value << YAML::BeginSeq;
  for (const auto& asset : inventory.assets) {
    out << YAML::BeginMap;
    emit(out, "id", asset.id);
    out << YAML::Key << "kind" << YAML::Value << std::string(to_string(asset.kind));
    if (asset.name != asset.id) emit(out, "name", asset.name);
    emit(out, "description", asset.description);
    emit(out, "owner", asset.owner);
    emit(out, "criticality", asset.criticality);
    emit(out, "sector", asset.sector);
    emit_list(out, "files", asset.files);
    emit(out, "framework", asset.framework);
    emit(out, "task", asset.task);
    if (asset.kind == AssetKind::Model) {
      if (asset.llm) out << YAML::Key << "llm" << YAML::Value << true;
      emit(out, "exposure", asset.exposure);
    }
    emit(out, "signature", asset.signature);
    emit(out, "signature_key", asset.signature_key);
    emit(out, "endpoint", asset.endpoint);
    emit_list(out, "datasets", asset.datasets);
    emit_list(out, "sensitivity", asset.sensitivity);
    emit(out, "source", asset.source);
    emit(out, "url", asset.url);
    emit(out, "api", asset.api);
    emit(out, "gateway", asset.gateway);
    emit(out, "stage", asset.stage);
    emit_list(out, "targets", asset.targets);
    out << YAML::EndMap;
  }
  out << YAML::EndSeq << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

namespace {

constexpr std::size_t kDiscoverMaxFiles = 200'000;
constexpr int kDiscoverMaxDepth = 24;

std::string lower(std::string text) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text;
}

// The framework a model file belongs to, from its bytes first and its name where the bytes say
// nothing; "" when it is not a model file.
std::string model_framework(formats::FileKind kind, const std::string& name) {
  const auto ext = lower(std::filesystem::path(name).extension().string());
  using formats::FileKind;
  switch (kind) {
    case FileKind::Safetensors: return "safetensors";
    case FileKind::Gguf: return "gguf";
    case FileKind::Onnx: return "onnx";
    case FileKind::TfSavedModel:
    case FileKind::TfGraphDef: return "tensorflow";
    case FileKind::Hdf5: return (ext == ".h5" || ext == ".hdf5" || ext == ".keras") ? "keras" : "";
    case FileKind::LegacyTorch: return "pytorch";
    case FileKind::Pickle:
      if (ext == ".joblib" || ext == ".pkl" || ext == ".pickle") return ext == ".joblib" ? "sklearn" : "pickle";
      return (ext == ".pt" || ext == ".pth" || ext == ".bin" || ext == ".ckpt") ? "pytorch" : "";
    case FileKind::Zlib: return ext == ".joblib" ? "sklearn" : "";
    case FileKind::Zip:
      if (ext == ".pt" || ext == ".pth" || ext == ".bin" || ext == ".ckpt" || ext == ".ptl") return "pytorch";
      if (ext == ".keras") return "keras";
      return "";
    default: return "";
  }
}

bool dataset_file(const std::string& name) {
  const auto n = lower(name);
  for (std::string_view ext : {".csv", ".tsv", ".jsonl", ".ndjson", ".parquet", ".sqlite", ".sqlite3", ".db", "-ubyte", "-ubyte.gz", ".arrow", ".tfrecord"})
    if (n.size() >= ext.size() && n.compare(n.size() - ext.size(), ext.size(), ext) == 0) return true;
  return false;
}

bool deployment_file(const std::string& name) {
  const auto n = lower(name);
  return n == "dockerfile" || n.ends_with(".dockerfile") || n == "containerfile" || n.starts_with("docker-compose") ||
         n.starts_with("compose.") || n.ends_with(".properties") || n == ".gitlab-ci.yml" || n == "procfile" ||
         n.ends_with(".service");
}

std::string asset_id(const std::filesystem::path& relative, std::set<std::string>& taken) {
  std::string id;
  for (char c : relative.string()) id += (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-') ? c : '-';
  while (!id.empty() && !std::isalnum(static_cast<unsigned char>(id.front()))) id.erase(id.begin());
  if (id.empty()) id = "asset";
  if (id.size() > 100) id = id.substr(id.size() - 100);
  std::string unique = id;
  for (int n = 2; taken.contains(unique); ++n) unique = id + "-" + std::to_string(n);
  taken.insert(unique);
  return unique;
}

}  // namespace

Inventory discover_inventory(const std::filesystem::path& root) {
  std::error_code ec;
  if (!std::filesystem::exists(root, ec)) throw core::Error("cannot discover assets in " + root.string() + ": it does not exist", "give a folder with model and data files");
  Inventory inventory;
  inventory.file = std::filesystem::absolute(root, ec) / "inventory.yaml";
  std::set<std::string> taken;
  std::map<std::filesystem::path, std::vector<std::string>> data_by_folder;
  std::vector<std::string> deployment;
  std::size_t files = 0;
  auto consider = [&](const std::filesystem::path& path) {
    const auto relative = std::filesystem::is_directory(root, ec) ? path.lexically_relative(root) : path.filename();
    const auto name = path.filename().string();
    if (deployment_file(name) || relative.string().starts_with(".github/workflows/")) {
      deployment.push_back(relative.string());
      return;
    }
    if (dataset_file(name)) {
      data_by_folder[relative.parent_path()].push_back(relative.string());
      return;
    }
    std::ifstream in(path, std::ios::binary);
    std::vector<std::uint8_t> head(4096);
    in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<std::size_t>(in.gcount()));
    const auto framework = model_framework(formats::sniff(head, name), name);
    if (framework.empty()) return;
    Asset asset;
    asset.kind = AssetKind::Model;
    asset.id = asset_id(relative.parent_path().empty() ? relative.stem() : relative.parent_path() / relative.stem(), taken);
    asset.name = asset.id;
    asset.framework = framework;
    asset.files = {relative.string()};
    asset.owner = "TODO: owner";
    asset.task = framework == "gguf" ? "text-generation" : "";
    asset.llm = framework == "gguf";
    inventory.assets.push_back(std::move(asset));
  };
  if (std::filesystem::is_regular_file(root, ec)) {
    consider(root);
  } else {
    std::filesystem::recursive_directory_iterator it(root, std::filesystem::directory_options::skip_permission_denied, ec);
    if (ec) throw core::Error("cannot read " + root.string() + ": " + ec.message(), "check the folder's permissions");
    for (; it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      const auto& entry = *it;
      const auto name = entry.path().filename().string();
      if (entry.is_directory(ec) && !entry.is_symlink(ec)) {
        if (name == ".git" || name == "node_modules" || name == "__pycache__" || name == ".venv" || it.depth() >= kDiscoverMaxDepth)
          it.disable_recursion_pending();
        continue;
      }
      if (entry.is_symlink(ec) || !entry.is_regular_file(ec)) continue;
      if (++files > kDiscoverMaxFiles) break;
      consider(entry.path());
    }
  }
  for (auto& [folder, data_files] : data_by_folder) {
    std::sort(data_files.begin(), data_files.end());
    Asset asset;
    asset.kind = AssetKind::Dataset;
    asset.id = asset_id(folder.empty() ? std::filesystem::path("data") : folder, taken);
    asset.name = asset.id;
    asset.files = data_files;
    asset.owner = "TODO: owner";
    asset.source = "internal";
    inventory.assets.push_back(std::move(asset));
  }
  if (!deployment.empty()) {
    std::sort(deployment.begin(), deployment.end());
    Asset asset;
    asset.kind = AssetKind::Pipeline;
    asset.id = asset_id("deployment", taken);
    asset.files = deployment;
    asset.owner = "TODO: owner";
    asset.stage = "serving";
    inventory.assets.push_back(std::move(asset));
  }
  std::sort(inventory.assets.begin(), inventory.assets.end(), [](const Asset& a, const Asset& b) {
    return std::tie(a.kind, a.id) < std::tie(b.kind, b.id);
  });
  return inventory;
}

}  // namespace aegis::threat
