// The engagement's model of what is being protected and from what: the asset inventory (YAML), the
// MITRE ATLAS catalog (shipped data), and the threat model that maps each asset to the ATLAS
// techniques that apply to it, with mitigations, the Aegis checks that produce evidence, and STRIDE.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::threat {

// ---------------------------------------------------------------- inventory

enum class AssetKind { Model, Dataset, Endpoint, Pipeline };
std::string_view to_string(AssetKind kind);
std::optional<AssetKind> parse_asset_kind(std::string_view text);

// Where in the inventory file a value came from, for errors and findings.
struct SourceMark {
  std::uint64_t line = 0;    // 1-based; 0 when unknown
  std::uint64_t column = 0;  // 1-based
};

// What an assessment may run against a model, as the inventory configures it. Every field is
// optional: a test that is not configured is not run, and the technique it would test stays
// untested (the report says so).
struct RobustnessTest {
  std::string data;                 // dataset folder or file for `aegis attack --data`
  std::string split = "test";
  std::size_t limit = 200;
  std::vector<std::string> attacks{"fgsm", "pgd"};
  std::vector<double> eps{0.05, 0.1, 0.2};
  std::size_t steps = 10;
};
struct MembershipTest {
  std::string members;              // .npy of member row indices (aegis mia --members)
  std::string data;                 // empty: the Fashion-MNIST default of `aegis mia`
  std::vector<std::string> attacks; // empty: the command's default
};
struct ExtractionTest {
  std::string surrogate;            // TorchScript architecture to train (aegis extract --surrogate)
  std::size_t budget = 1000;
  std::string strategy = "natural";
  std::size_t epochs = 5;
};
struct RedteamTest {
  std::string model;                // the model name sent to the endpoint
  std::vector<std::string> probes;  // empty: the command's default set
  std::vector<std::string> transforms;
};

struct Asset {
  std::string id;                   // unique within the inventory: [A-Za-z0-9._-]+
  AssetKind kind = AssetKind::Model;
  std::string name;                 // display name; defaults to id
  std::string description;
  std::string owner;
  std::string criticality = "medium";  // low | medium | high | critical
  std::string sector;                  // finance | health | government | other | ""
  std::vector<std::string> tags;
  std::vector<std::string> files;      // model files, dataset files, deployment files (paths as written, resolved against the inventory's folder in `resolved_files`)
  std::vector<std::string> resolved_files;
  // models
  std::string framework;     // pytorch | onnx | keras | tensorflow | sklearn | gguf | safetensors | ...
  std::string task;          // image-classification | text-generation | ... ; an LLM when llm is true
  bool llm = false;          // set explicitly or implied by task (text-generation, chat, llm)
  std::string exposure = "internal";  // internal | external
  std::string endpoint;      // id of the endpoint asset that serves this model, or a URL
  std::vector<std::string> datasets;  // ids of dataset assets it was trained on
  std::string signature;     // model-signing bundle to verify the files against (aegis verify)
  std::string signature_key; // the signer's public key (PEM) for a key-signed bundle
  std::optional<RobustnessTest> robustness;
  std::optional<MembershipTest> membership;
  std::optional<ExtractionTest> extraction;
  // datasets
  std::vector<std::string> sensitivity;  // pii | phi | financial | public
  std::string source;                    // internal | third-party | public | user-generated | web-scraped
  // endpoints
  std::string url;
  std::string api;                       // classifier | openai-chat | other
  std::string gateway;                   // the Aegis gateway config in front of it (path, resolved)
  std::optional<RedteamTest> redteam;
  // pipelines
  std::string stage;                     // registry | ci | serving | training
  std::vector<std::string> targets;      // live services to probe read-only (aegis audit-infra --target)
  SourceMark mark;
};

// When an asset is due for reassessment (see `aegis schedule`).
struct ReassessmentPolicy {
  int every_days = 90;
  bool on_model_change = true;   // a model file's digest differs from the last assessment's
  bool on_atlas_release = true;  // the shipped ATLAS version differs from the last assessment's
  bool after_fix = true;         // a finding was marked fixed since the last assessment
};

struct Inventory {
  std::filesystem::path file;    // where it was read from; relative paths start at its folder
  std::string organisation;
  ReassessmentPolicy policy;
  std::vector<Asset> assets;
  const Asset* find(std::string_view id) const;
};

// One problem in an inventory file, by line.
struct InventoryIssue {
  SourceMark mark;
  std::string severity;  // "error" | "warning"
  std::string message;   // what is wrong and what to write instead
};

// Parses and validates an inventory. Every problem found is returned (not only the first); the
// inventory is usable when no issue is an error. Throws core::Error only when the file cannot be
// read. Hostile input: size, depth and asset count are bounded; files named in it are only checked
// to exist (a warning when they do not), never opened.
struct InventoryLoad {
  Inventory inventory;
  std::vector<InventoryIssue> issues;
  bool ok() const;
};
InventoryLoad load_inventory(const std::filesystem::path& file);
InventoryLoad parse_inventory(std::string_view text, const std::filesystem::path& file);

// Writes an inventory back as YAML (what `inventory discover` proposes).
std::string to_yaml(const Inventory& inventory);

// Walks `root` (bounded, symlinks not followed) and proposes assets for the model files, datasets
// and deployment files it finds, identified by content where the format allows.
Inventory discover_inventory(const std::filesystem::path& root);

// ---------------------------------------------------------------- ATLAS catalog

struct AtlasTactic {
  std::string id;    // AML.TA0002
  std::string name;
};
struct AtlasTechnique {
  std::string id;    // AML.T0015 or AML.T0024.002
  std::string name;
  std::string parent;                  // for sub-techniques
  std::vector<std::string> tactics;    // for sub-techniques: the parent's
  std::string description;             // first paragraph
  std::string maturity;
};
struct AtlasMitigation {
  std::string id;    // AML.M0015
  std::string name;
  std::map<std::string, std::string> uses;  // technique id -> how it applies
};

class AtlasCatalog {
 public:
  // The ATLAS.yaml distribution compiled into Aegis (data/atlas/ATLAS.yaml).
  static const AtlasCatalog& shipped();
  // Another ATLAS.yaml (for a newer release). Throws core::Error naming the file and the problem.
  static AtlasCatalog load(const std::filesystem::path& file);
  static AtlasCatalog parse(std::string_view yaml_text, std::string_view origin);

  const std::string& version() const { return version_; }
  const std::vector<AtlasTactic>& tactics() const { return tactics_; }  // matrix order
  const std::vector<AtlasTechnique>& techniques() const { return techniques_; }
  const std::vector<AtlasMitigation>& mitigations() const { return mitigations_; }
  const AtlasTechnique* technique(std::string_view id) const;
  const AtlasTactic* tactic(std::string_view id) const;
  std::vector<const AtlasMitigation*> mitigations_for(std::string_view technique_id) const;

 private:
  std::string version_;
  std::vector<AtlasTactic> tactics_;
  std::vector<AtlasTechnique> techniques_;
  std::vector<AtlasMitigation> mitigations_;
};

// ---------------------------------------------------------------- threat model

// The Aegis checks that produce evidence for techniques. Names are stable (they appear in reports,
// rule files and the store's `command` column as "assess:<check>").
inline constexpr std::string_view kCheckScan = "scan";              // aegis scan on model files
inline constexpr std::string_view kCheckVerify = "verify";          // aegis verify against a signature
inline constexpr std::string_view kCheckPii = "pii";                // aegis pii on dataset files
inline constexpr std::string_view kCheckRobustness = "robustness";  // aegis attack
inline constexpr std::string_view kCheckMembership = "membership";  // aegis mia
inline constexpr std::string_view kCheckExtraction = "extraction";  // aegis extract
inline constexpr std::string_view kCheckRedteam = "redteam";        // aegis redteam on an LLM endpoint
inline constexpr std::string_view kCheckGateway = "gateway-review"; // aegis gateway review on its config
inline constexpr std::string_view kCheckInfra = "infra";            // aegis audit-infra on deployment files/targets
std::vector<std::string_view> all_checks();

enum class Stride { Spoofing, Tampering, Repudiation, InformationDisclosure, DenialOfService, ElevationOfPrivilege };
std::string_view to_string(Stride category);  // "spoofing", ..., "information-disclosure", ...
std::optional<Stride> parse_stride(std::string_view text);

// One rule of the threat model (data/threat/threat_rules.yaml): when an asset matches `when`, the
// technique applies, for the reason given, and these checks produce evidence about it.
struct ThreatRule {
  std::string technique;                              // ATLAS id
  std::map<std::string, std::vector<std::string>> when;  // attribute -> accepted values (any of)
  std::string rationale;
  std::vector<std::string> checks;
  std::vector<Stride> stride;
  std::vector<std::string> nist_ai_rmf;
};

struct ApplicableTechnique {
  std::string id;
  std::string name;
  std::vector<std::string> tactics;          // tactic ids
  std::vector<std::string> rationales;       // one per matching rule
  std::vector<std::string> checks;           // union over the matching rules, in all_checks() order
  std::vector<std::string> mitigations;      // ATLAS mitigation ids
  std::vector<Stride> stride;
  std::vector<std::string> nist_ai_rmf;
};

struct AssetThreatModel {
  std::string asset;
  std::vector<ApplicableTechnique> techniques;  // in ATLAS matrix order
};

struct ThreatModel {
  std::string atlas_version;
  std::vector<AssetThreatModel> assets;  // inventory order
};

// The shipped rules (data/threat/threat_rules.yaml), or a file in the same shape. Every technique
// id must exist in the catalog and every check in all_checks(); throws core::Error otherwise.
std::vector<ThreatRule> shipped_threat_rules(const AtlasCatalog& catalog);
std::vector<ThreatRule> load_threat_rules(const std::filesystem::path& file, const AtlasCatalog& catalog);
std::vector<ThreatRule> parse_threat_rules(std::string_view yaml_text, std::string_view origin, const AtlasCatalog& catalog);

// The attribute values an asset exposes to rules: kind, exposure, llm (true/false), task,
// framework, sensitivity (each), source, stage, criticality, sector, has_files, has_endpoint,
// has_gateway, has_datasets, third_party (model files or data from outside).
std::map<std::string, std::vector<std::string>> asset_attributes(const Asset& asset, const Inventory& inventory);

ThreatModel build_threat_model(const Inventory& inventory, const AtlasCatalog& catalog,
                               const std::vector<ThreatRule>& rules);

}  // namespace aegis::threat
