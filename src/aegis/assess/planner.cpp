// From threat model to jobs: the checks each asset's techniques call for, narrowed to those its
// inventory entry makes possible, each with a key over its exact inputs so that unchanged work is
// never redone.
#include <openssl/evp.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <set>

#include "aegis/assess/assess.h"
#include "aegis/core/error.h"

namespace aegis::assess {

namespace {

std::string hex(const unsigned char* bytes, unsigned size) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < size; ++i) {
    out += digits[bytes[i] >> 4];
    out += digits[bytes[i] & 15];
  }
  return out;
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, std::size_t size) { EVP_DigestUpdate(ctx_, data, size); }
  void update(const std::string& text) {
    update(text.data(), text.size());
    update("\0", 1);  // a separator, so that ("ab","c") and ("a","bc") differ
  }
  std::string hex_digest() {
    unsigned char out[EVP_MAX_MD_SIZE];
    unsigned size = 0;
    EVP_DigestFinal_ex(ctx_, out, &size);
    return hex(out, size);
  }

 private:
  EVP_MD_CTX* ctx_;
};

std::string file_digest(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return "unreadable:" + path.string();
  Sha256 hash;
  std::vector<char> buffer(1 << 20);
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    if (in.gcount() > 0) hash.update(buffer.data(), static_cast<std::size_t>(in.gcount()));
  }
  return hash.hex_digest();
}

bool is_live(const std::string& input) { return input.find("://") != std::string::npos || input.starts_with("live:"); }

bool scannable_model(const std::string& file) {
  const auto ext = std::filesystem::path(file).extension().string();
  return ext == ".pt" || ext == ".pth" || ext == ".ts" || ext == ".onnx";
}

std::string join(const std::vector<std::string>& items, const char* separator = ",") {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

std::string number(double value) {
  std::string text = std::to_string(value);
  while (!text.empty() && text.back() == '0') text.pop_back();
  if (!text.empty() && text.back() == '.') text.pop_back();
  return text;
}

// The endpoint asset that serves a model, when the inventory names one.
const threat::Asset* endpoint_of(const threat::Asset& asset, const threat::Inventory& inventory) {
  if (asset.endpoint.empty() || asset.endpoint.find("://") != std::string::npos) return nullptr;
  return inventory.find(asset.endpoint);
}

struct Planner {
  const threat::Inventory& inventory;
  const PlanOptions& options;
  Plan plan;
  std::set<std::string> keys;
  std::map<std::string, std::string> digests;  // a model file feeds several checks: hash it once

  const std::string& digest(const std::string& input) {
    auto it = digests.find(input);
    if (it == digests.end()) it = digests.emplace(input, input_digest(input)).first;
    return it->second;
  }

  void add(const std::string& asset, const std::string& check, std::vector<std::string> arguments,
           std::vector<std::string> inputs, std::string artifacts = {}, unsigned timeout = 3600) {
    Job job;
    job.asset = asset;
    job.check = check;
    job.arguments = std::move(arguments);
    job.inputs = std::move(inputs);
    job.artifacts = std::move(artifacts);
    job.timeout_seconds = timeout;
    job.assessment_id = options.assessment_id;
    Sha256 key;
    key.update(check);
    for (const auto& a : job.arguments) key.update(a);
    bool live = false;
    for (const auto& input : job.inputs) {
      live = live || is_live(input);
      key.update(input);
      key.update(is_live(input) ? std::string("live") : digest(input));
    }
    // A live service can change without any file changing: its checks are redone each assessment.
    if (live) key.update("assessment " + std::to_string(options.assessment_id));
    job.key = key.hex_digest();
    plan.checks[asset].push_back({check, "planned", "", job.key});
    if (keys.insert(job.key).second) plan.jobs.push_back(std::move(job));
  }
  void impossible(const std::string& asset, const std::string& check, std::string reason) {
    plan.checks[asset].push_back({check, "not-possible", std::move(reason), ""});
  }

  void plan_check(const threat::Asset& asset, std::string_view check_view) {
    const std::string check(check_view);
    using threat::AssetKind;
    const auto& files = asset.resolved_files;
    const threat::Asset* endpoint = endpoint_of(asset, inventory);
    std::string model_file;
    for (const auto& f : files)
      if (scannable_model(f)) {
        model_file = f;
        break;
      }
    if (check == threat::kCheckScan) {
      if (files.empty()) return impossible(asset.id, check, "no 'files:' to scan; list the model files");
      std::vector<std::string> args{"scan"};
      args.insert(args.end(), files.begin(), files.end());
      return add(asset.id, check, args, files);
    }
    if (check == threat::kCheckVerify) {
      if (asset.signature.empty())
        return impossible(asset.id, check, "no 'signature:'; sign the files with `aegis sign` and name the bundle in the inventory");
      if (files.empty()) return impossible(asset.id, check, "no 'files:' to verify against the signature");
      // A signature covers one file or one folder: the folder that holds all the files.
      std::filesystem::path root = files.size() == 1 ? std::filesystem::path(files.front()) : std::filesystem::path(files.front()).parent_path();
      std::vector<std::string> args{"verify", root.string(), "--signature", asset.signature};
      std::vector<std::string> inputs{root.string(), asset.signature};
      if (!asset.signature_key.empty()) {
        args.insert(args.end(), {"--key", asset.signature_key});
        inputs.push_back(asset.signature_key);
      }
      return add(asset.id, check, args, inputs);
    }
    if (check == threat::kCheckPii) {
      if (files.empty()) return impossible(asset.id, check, "no 'files:' to search for personal data");
      std::vector<std::string> args{"pii"};
      args.insert(args.end(), files.begin(), files.end());
      return add(asset.id, check, args, files);
    }
    if (check == threat::kCheckRobustness) {
      if (model_file.empty()) return impossible(asset.id, check, "no TorchScript (.pt) or ONNX model in 'files:' to attack");
      if (!asset.robustness || asset.robustness->data.empty())
        return impossible(asset.id, check, "no 'tests: {robustness: {data: ...}}' naming labelled test data to attack the model with");
      const auto& t = *asset.robustness;
      std::vector<std::string> eps;
      for (double e : t.eps) eps.push_back(number(e));
      return add(asset.id, check,
                 {"attack", "--model", model_file, "--data", t.data, "--split", t.split, "--limit", std::to_string(t.limit),
                  "--attack", join(t.attacks), "--eps", join(eps), "--steps", std::to_string(t.steps), "--no-images"},
                 {model_file, t.data});
    }
    if (check == threat::kCheckMembership) {
      if (model_file.empty()) return impossible(asset.id, check, "no TorchScript (.pt) or ONNX model in 'files:' to audit");
      if (!asset.membership) return impossible(asset.id, check, "no 'tests: {membership: {members: rows.npy}}' naming the training rows the model saw");
      const auto& t = *asset.membership;
      std::vector<std::string> args{"mia", "--model", model_file, "--members", t.members, "--output-dir", "artifacts"};
      std::vector<std::string> inputs{model_file, t.members};
      if (!t.data.empty()) {
        args.insert(args.end(), {"--data", t.data});
        inputs.push_back(t.data);
      }
      if (!t.attacks.empty()) args.insert(args.end(), {"--attacks", join(t.attacks)});
      return add(asset.id, check, args, inputs, "artifacts");
    }
    if (check == threat::kCheckExtraction) {
      if (model_file.empty()) return impossible(asset.id, check, "no TorchScript (.pt) or ONNX model in 'files:' to extract");
      if (!asset.extraction) return impossible(asset.id, check, "no 'tests: {extraction: {surrogate: arch.pt}}' naming the architecture to train a copy into");
      const auto& t = *asset.extraction;
      return add(asset.id, check,
                 {"extract", "--target", model_file, "--surrogate", t.surrogate, "--budget", std::to_string(t.budget),
                  "--strategy", t.strategy, "--epochs", std::to_string(t.epochs), "--test-limit", "2000"},
                 {model_file, t.surrogate});
    }
    if (check == threat::kCheckRedteam) {
      std::string url = asset.url;
      const threat::RedteamTest* test = asset.redteam ? &*asset.redteam : nullptr;
      if (url.empty() && endpoint) {
        url = endpoint->url;
        if (!test && endpoint->redteam) test = &*endpoint->redteam;
      }
      if (url.empty() && asset.endpoint.find("://") != std::string::npos) url = asset.endpoint;
      if (url.empty()) return impossible(asset.id, check, "no 'url:' of an OpenAI-compatible endpoint to red-team");
      std::vector<std::string> args{"redteam", "--target", url, "--out", "redteam", "--format", "json", "--quiet"};
      if (test && !test->model.empty()) args.insert(args.end(), {"--model", test->model});
      if (test && !test->probes.empty()) args.insert(args.end(), {"--probes", join(test->probes)});
      if (test && !test->transforms.empty()) args.insert(args.end(), {"--transforms", join(test->transforms)});
      return add(asset.id, check, args, {url});
    }
    if (check == threat::kCheckGateway) {
      std::string gateway = asset.gateway;
      if (gateway.empty() && endpoint) gateway = endpoint->gateway;
      if (gateway.empty())
        return impossible(asset.id, check, "no 'gateway:' config in front of the endpoint; without one nothing enforces authentication, rate limits or output hardening");
      return add(asset.id, check, {"gateway", "review", gateway}, {gateway});
    }
    if (check == threat::kCheckInfra) {
      if (files.empty() && asset.targets.empty())
        return impossible(asset.id, check, "no deployment 'files:' or live 'targets:' to review");
      std::vector<std::string> args{"audit-infra"};
      args.insert(args.end(), files.begin(), files.end());
      std::vector<std::string> inputs = files;
      for (const auto& target : asset.targets) {
        args.insert(args.end(), {"--target", target});
        inputs.push_back("live:" + target);
      }
      return add(asset.id, check, args, inputs);
    }
  }
};

}  // namespace

std::string input_digest(const std::string& path_text) {
  const std::filesystem::path path(path_text);
  std::error_code ec;
  const auto status = std::filesystem::symlink_status(path, ec);
  if (ec || !std::filesystem::exists(status)) return "missing:" + path_text;
  if (std::filesystem::is_regular_file(std::filesystem::status(path, ec))) return file_digest(path);
  if (!std::filesystem::is_directory(status)) return "special:" + path_text;
  std::vector<std::pair<std::string, std::string>> entries;
  std::filesystem::recursive_directory_iterator it(path, std::filesystem::directory_options::skip_permission_denied, ec);
  for (; !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_symlink(ec) || !it->is_regular_file(ec)) continue;
    if (entries.size() >= 100'000) break;
    entries.emplace_back(it->path().lexically_relative(path).string(), file_digest(it->path()));
  }
  std::sort(entries.begin(), entries.end());
  Sha256 hash;
  for (const auto& [name, digest] : entries) {
    hash.update(name);
    hash.update(digest);
  }
  return hash.hex_digest();
}

Plan plan_assessment(const threat::Inventory& inventory, const threat::ThreatModel& model, const PlanOptions& options) {
  Planner planner{inventory, options, {}, {}, {}};
  planner.plan.model = model;
  const auto checks = threat::all_checks();
  for (const auto& asset_model : model.assets) {
    const threat::Asset* asset = inventory.find(asset_model.asset);
    if (!asset) continue;
    for (const auto& file : asset->resolved_files) planner.plan.digests[file] = planner.digest(file);
    planner.plan.checks[asset->id];  // every asset has an entry, even with nothing to run
    std::set<std::string> called_for;
    for (const auto& technique : asset_model.techniques) called_for.insert(technique.checks.begin(), technique.checks.end());
    for (const auto check : checks) {
      if (!called_for.contains(std::string(check))) continue;
      if (!options.only_checks.empty() &&
          std::find(options.only_checks.begin(), options.only_checks.end(), check) == options.only_checks.end())
        continue;
      planner.plan_check(*asset, check);
    }
  }
  return std::move(planner.plan);
}

}  // namespace aegis::assess
