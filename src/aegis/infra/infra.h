// ML infrastructure review: static rules over deployment files (Dockerfiles, Compose, Kubernetes,
// serving configs, start commands, CI workflows, Jupyter notebooks) and read-only live probes of ML
// services (Jupyter, MLflow, Ray, TorchServe, Triton, vLLM, Ollama, TGI, Gradio). Rules are data:
// one YAML file per service under data/infra/ (embedded), plus any files a user adds.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "aegis/core/finding.h"

namespace aegis::infra {

// ---------------------------------------------------------------------------------------------
// Rules
// ---------------------------------------------------------------------------------------------

// What every rule carries into its findings.
struct RuleInfo {
  std::string id;        // "infra.<service>.<name>", unique across all files
  std::string service;   // the file's `service` (jupyter, mlflow, docker, kubernetes, ...)
  core::Severity severity = core::Severity::Medium;
  std::string title;
  std::vector<std::string> cves;   // CVE ids, may be empty
  std::string advisory;            // GHSA id or vendor advisory URL, may be empty
  std::vector<std::string> atlas;  // ATLAS technique ids (at least one)
  std::vector<std::string> nist_ai_rmf;
  std::string remediation;
  std::string source_file;         // where the rule was defined ("<builtin>/jupyter.yaml" or a path)
};

// ---- static rules ----

// A command-line condition: every field that is set must hold.
struct CommandMatch {
  std::string program;       // regex on the program (basename; "python -m x" reads as program x)
  std::string subcommand;    // regex on the first positional argument; empty: any
  // The process listens beyond loopback: the first of `host_flags` (or `host_env`) that is given
  // names a non-loopback address, or none is given and `default_host` is not loopback. A value
  // "host:port" counts by its host part. Empty host_flags and host_env: no listening condition.
  std::vector<std::string> host_flags;
  std::vector<std::string> host_env;
  std::string default_host;  // "0.0.0.0" or "127.0.0.1"
  std::vector<std::string> without_flags;  // none of these flags is given
  std::vector<std::string> without_env;    // none of these variables is set (non-empty)
  std::map<std::string, std::string> flag_values;  // flag -> regex its value must match ("" = present)
  std::map<std::string, std::string> any_flag_values;  // at least one of these flags matches (alternative spellings)
  std::map<std::string, std::string> env_values;   // variable -> regex its value must match
};

// A key = value file condition (Java properties, Python config assignments).
struct PropertyCondition {
  std::vector<std::string> keys;  // alternatives: the first present one is used
  std::string matches;            // regex the value must match (searched)
  std::string not_matches;        // regex the value must not match
  std::optional<std::string> default_value;  // value when no key is present; none: condition false
};
struct PropertiesMatch {
  std::vector<std::string> files;  // file-name globs ("config.properties", "jupyter_*_config.py")
  std::vector<PropertyCondition> all;
};

// A structural check implemented in C++ over a parsed file, parameterised by the rule.
// kind: dockerfile | compose | kubernetes | workflow | notebook. The check names and their
// parameters are documented in data/infra/README.md.
struct StructuralMatch {
  std::string kind;
  std::string check;
  std::map<std::string, std::string> params;   // scalar parameters (regexes, thresholds)
  std::vector<int> ports;                       // port lists (exposed ML ports)
};

struct StaticRule {
  RuleInfo info;
  enum class Kind { Command, Properties, Structural } kind = Kind::Command;
  CommandMatch command;
  PropertiesMatch properties;
  StructuralMatch structural;
};

// ---- live probe rules ----

// One read-only HTTP request and what its answer must look like for the rule to hold.
struct ProbeRequest {
  std::string method = "GET";  // GET, HEAD or OPTIONS only: probes never change a service
  std::string path;            // "/api/kernels"
  std::map<std::string, std::string> headers;
};
struct ResponseMatch {
  std::vector<int> status;                        // any of these; empty: any 2xx
  std::map<std::string, std::string> headers;     // header name -> regex
  std::string body;                               // regex searched in the body
  std::map<std::string, std::string> json;        // JSON pointer -> type (object, array, string,
                                                  // number, boolean, any) the body must have there
};
struct ProbeRule {
  RuleInfo info;
  ProbeRequest request;
  ResponseMatch expect;
  // Versions: the rule holds only when the fingerprinted version is below this (dotted numbers);
  // with no request of its own (request.path empty) the rule is decided by the version alone.
  std::string version_below;
};

// How a service is recognised on a port.
struct Fingerprint {
  ProbeRequest request;
  ResponseMatch expect;
  std::string version_pointer;  // JSON pointer to the version in this answer, or
  std::string version_header;   // a header carrying it, or
  std::string version_regex;    // a regex over the body whose first group is the version
};

struct ServiceSpec {
  std::string service;  // "jupyter"
  std::string name;     // "Jupyter Server / Notebook"
  std::vector<int> default_ports;
  std::vector<Fingerprint> fingerprints;  // tried in order; the first match identifies the service
  std::vector<ProbeRule> probes;
};

// What a well-known image runs when a deployment does not override its entrypoint (vllm/vllm-openai
// runs the OpenAI server, ollama/ollama runs `ollama serve` with OLLAMA_HOST=0.0.0.0): a Compose file
// that only says `image: ollama/ollama` is reviewed as that command.
struct ImageDefault {
  std::string service;
  std::string image;       // RE2 regex, full match, on the image name without registry tag or digest
  std::string entrypoint;  // the image's ENTRYPOINT, as shell words (Kubernetes `command` replaces it)
  std::string cmd;         // the image's CMD (Compose `command` and Kubernetes `args` replace it)
  std::map<std::string, std::string> env;  // environment the image sets
  std::string user;        // the image's USER ("" = root, as for most images)
};

struct RuleSet {
  std::vector<StaticRule> static_rules;
  std::vector<ImageDefault> images;
  std::vector<ServiceSpec> services;  // services with live probes, in file order
  // Every rule's metadata by id (static and probe), for listing and validation.
  std::vector<const RuleInfo*> all_rules() const;
};

// The shipped rules (data/infra/*.yaml, embedded). Throws core::Error if they do not load.
RuleSet builtin_rules();
// Adds the rules of a user file (same schema); a rule with an existing id replaces it.
// Throws core::Error naming the file, the rule and what is wrong.
void load_rule_file(RuleSet& rules, const std::filesystem::path& path);
void load_rule_text(RuleSet& rules, const std::string& text, const std::string& origin);

// ---------------------------------------------------------------------------------------------
// Static review
// ---------------------------------------------------------------------------------------------

struct StaticOptions {
  std::uint64_t max_file_bytes = 16u << 20;  // larger files are reported, not read
  std::size_t max_files = 200000;
  std::size_t max_depth = 32;                // directory depth
  bool follow_symlinks = false;
  std::function<void(std::size_t files_done, const std::string& current)> progress;
};

// What a static review looked at.
struct ReviewedFile {
  std::string path;   // as reported (relative to the root given, or the file itself)
  std::string kind;   // dockerfile, compose, kubernetes, properties, script, workflow, notebook, config
  std::uint64_t bytes = 0;
};

struct StaticReport {
  std::vector<core::Finding> findings;
  std::vector<ReviewedFile> files;
  std::size_t skipped = 0;  // files of no kind we review
};

// Reviews files and folders. Never executes anything it reads; a file it cannot parse is reported
// as a finding (infra.parse-error), never silently passed.
StaticReport review_paths(const std::vector<std::filesystem::path>& paths, const RuleSet& rules,
                          const StaticOptions& options = {});

// Reviews one in-memory file whose kind is decided from `name` and its content (for tests and fuzzing).
StaticReport review_text(const std::string& name, std::string_view content, const RuleSet& rules);

// ---------------------------------------------------------------------------------------------
// Live probing
// ---------------------------------------------------------------------------------------------

struct Target {
  bool tls = false;
  std::string host;   // name or address as given
  int port = 0;       // 0: every known service's default ports
  std::string text;   // as the user wrote it
};

// Parses "HOST:PORT", "HOST" (default ports), "[::1]:PORT", "http://HOST:PORT", "https://HOST:PORT".
// Refuses ranges, CIDR blocks and wildcards: only explicitly named hosts are probed.
// Throws core::Error with an example of what is accepted.
Target parse_target(const std::string& text);

struct ProbeOptions {
  double rate = 5;  // requests per second across the whole run
  std::chrono::milliseconds timeout{3000};  // connect + request + answer
  std::uint64_t max_body_bytes = 1u << 20;  // answers are read up to this and cut
  bool allow_remote = false;  // hosts that do not resolve to loopback are refused unless set
  std::function<void(const std::string& what)> progress;
};

// What was found listening on one port.
struct ServiceObservation {
  std::string target;   // "127.0.0.1:8888"
  std::string service;  // "jupyter", or "" when nothing was recognised
  std::string name;
  std::string version;  // "" when unknown
  bool reachable = false;
  std::string error;    // connection error when !reachable
  std::size_t requests = 0;
};

struct ProbeReport {
  std::vector<core::Finding> findings;
  std::vector<ServiceObservation> observations;
  std::size_t requests = 0;
};

// Probes each target: fingerprints the service on each port, then runs that service's probe rules.
// Only GET, HEAD and OPTIONS are ever sent; redirects are not followed. Throws core::Error for a
// target that is refused (remote without allow_remote, unresolvable name).
ProbeReport probe_targets(const std::vector<Target>& targets, const RuleSet& rules, const ProbeOptions& options = {});

// Compares dotted versions numerically ("0.1.9" < "0.1.34"); a suffix like "rc1" or "+cpu" is ignored.
// Returns nullopt when either side has no leading number.
std::optional<int> compare_versions(const std::string& a, const std::string& b);

// The finding a rule produces, with its metadata filled in.
core::Finding make_finding(const RuleInfo& rule, std::string evidence);

}  // namespace aegis::infra
