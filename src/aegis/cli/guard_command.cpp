#include "aegis/cli/guard_command.h"

#include <openssl/evp.h>

#include <fstream>
#include <iomanip>
#include <iostream>
#include <memory>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "aegis/core/error.h"
#include "aegis/core/progress.h"
#include "aegis/guard/evaluation.h"
#include "aegis/guard/input_guard.h"

namespace aegis::cli {
namespace {

struct GuardFlags {
  std::string model;
  std::vector<std::string> rules;
  double threshold = -1;
  bool no_signatures = false;
  bool no_learned = false;
  bool no_decode = false;
};

void add_guard_flags(CLI::App* cmd, GuardFlags& f) {
  cmd->add_option("--model", f.model, "guard model written by `aegis guard train` (default: the shipped model)");
  cmd->add_option("--rules", f.rules, "extra signature file (TOML [[rule]] tables; same id replaces a shipped rule)");
  cmd->add_option("--threshold", f.threshold, "learned-tier threshold, 0..1 (default: the model's own)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_flag("--no-signatures", f.no_signatures, "skip the signature tier");
  cmd->add_flag("--no-learned", f.no_learned, "skip the learned tier");
  cmd->add_flag("--no-decode", f.no_decode, "do not decode smuggled payloads (base64, hex, rot13, ...)");
}

guard::InputGuardOptions guard_options(const GuardFlags& f) {
  guard::InputGuardOptions o;
  o.model_file = f.model;
  o.rule_files = f.rules;
  o.threshold = f.threshold;
  o.signatures = !f.no_signatures;
  o.learned = !f.no_learned;
  o.decode = !f.no_decode;
  if (!o.signatures && !o.learned)
    throw core::Error("both tiers are switched off", "drop --no-signatures or --no-learned");
  return o;
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), &EVP_MD_CTX_free);
  EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr);
  std::vector<char> block(1 << 16);
  while (in) {
    in.read(block.data(), static_cast<std::streamsize>(block.size()));
    EVP_DigestUpdate(ctx.get(), block.data(), static_cast<std::size_t>(in.gcount()));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  EVP_DigestFinal_ex(ctx.get(), digest, &length);
  std::ostringstream hex;
  for (unsigned int i = 0; i < length; ++i) hex << std::hex << std::setw(2) << std::setfill('0') << static_cast<int>(digest[i]);
  return hex.str();
}

// ---- scan ----

struct ScanFlags {
  std::string input;
  std::string format = "text";
  std::string field = "text";
  bool quiet = false;
  GuardFlags guard;
};

nlohmann::json verdict_json(const guard::InputVerdict& v) {
  nlohmann::json j;
  j["label"] = v.flagged ? "injection" : "benign";
  j["score"] = std::round(v.score * 1e4) / 1e4;
  j["tier"] = std::string(guard::tier_name(v.tier));
  if (!v.category.empty()) j["category"] = v.category;
  if (!v.atlas.empty()) j["atlas"] = v.atlas;
  j["signature_score"] = std::round(v.signature_score * 1e4) / 1e4;
  j["learned_score"] = std::round(v.learned_score * 1e4) / 1e4;
  if (v.obfuscated) j["obfuscated"] = true;
  if (!v.decodings.empty()) j["decodings"] = v.decodings;
  nlohmann::json evidence = nlohmann::json::array();
  for (const auto& e : v.evidence) {
    nlohmann::json ej{{"begin", e.begin}, {"end", e.end}, {"rule", e.rule}, {"excerpt", e.excerpt}};
    if (!e.via.empty()) ej["via"] = e.via;
    evidence.push_back(std::move(ej));
  }
  j["evidence"] = std::move(evidence);
  return j;
}

int run_scan(const ScanFlags& flags) {
  const guard::InputGuard guard(guard_options(flags.guard));
  std::ifstream file;
  std::istream* in = &std::cin;
  if (flags.input != "-") {
    file.open(flags.input, std::ios::binary);
    if (!file) throw core::Error("cannot read " + flags.input, "check the path, or pass - to read standard input");
    in = &file;
  }
  const bool json_out = flags.format == "json";
  std::string line;
  std::size_t number = 0, scanned = 0, flagged = 0;
  while (std::getline(*in, line)) {
    ++number;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    // JSON Lines with a text field, or a plain line
    std::string text = line;
    nlohmann::json id;
    if (line.front() == '{') {
      auto j = nlohmann::json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.is_object() && j.contains(flags.field) && j[flags.field].is_string()) {
        text = j[flags.field].get<std::string>();
        if (j.contains("id")) id = j["id"];
      }
    }
    const guard::InputVerdict v = guard.scan(text);
    ++scanned;
    if (v.flagged) ++flagged;
    if (json_out) {
      nlohmann::json out = verdict_json(v);
      out["line"] = number;
      if (!id.is_null()) out["id"] = id;
      std::cout << out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    } else if (v.flagged) {
      std::cout << "line " << number << ": injection (" << guard::tier_name(v.tier) << ", score " << std::fixed
                << std::setprecision(2) << v.score << (v.category.empty() ? "" : ", " + v.category)
                << (v.atlas.empty() ? "" : ", " + v.atlas) << ")";
      if (!v.evidence.empty()) {
        const auto& e = v.evidence.front();
        std::cout << " " << e.rule << (e.via.empty() ? "" : " via " + e.via) << ": \"" << e.excerpt << "\"";
      }
      std::cout << '\n';
    }
  }
  if (!json_out && !flags.quiet)
    std::cerr << "aegis guard: " << scanned << " inputs scanned, " << flagged << " flagged\n";
  return flagged > 0 ? 1 : 0;
}

// ---- train ----

struct TrainFlags {
  std::vector<std::string> data;
  std::string out;
  std::string split = "train";
  int epochs = 12;
  int hash_bits = 18;
  double target_fpr = 0.005;
  std::uint64_t seed = 1;
  bool quiet = false;
};

guard::EvalPlan plan_from(int epochs, int hash_bits, double target_fpr, std::uint64_t seed) {
  guard::EvalPlan plan;
  plan.train.epochs = epochs;
  plan.train.features.hash_bits = hash_bits;
  plan.train.seed = seed;
  plan.target_fpr = target_fpr;
  return plan;
}

std::vector<guard::LabelledText> load_all(const std::vector<std::string>& files) {
  std::vector<guard::LabelledText> rows;
  for (const auto& f : files) {
    auto part = guard::load_labelled_jsonl(f);
    rows.insert(rows.end(), std::make_move_iterator(part.begin()), std::make_move_iterator(part.end()));
  }
  return rows;
}

int run_train(const TrainFlags& flags) {
  auto rows = load_all(flags.data);
  const std::size_t total = rows.size();
  if (flags.split == "train") {
    std::erase_if(rows, [](const guard::LabelledText& r) { return guard::fold_of(r.id, 5) == 0; });
  } else if (flags.split != "all") {
    throw core::Error("unknown --split '" + flags.split + "'", "use train (hold out fold 0 of 5 for evaluation) or all");
  }
  const bool show = !flags.quiet && core::Progress::stderr_is_terminal();
  auto progress = [&](const std::string& what) {
    if (show) std::cerr << "aegis guard train: " << what << "\n";
  };
  const guard::EvalPlan plan = plan_from(flags.epochs, flags.hash_bits, flags.target_fpr, flags.seed);
  const guard::LinearModel model = guard::train_with_threshold(rows, plan, progress);
  std::size_t positives = 0;
  for (const auto& r : rows) positives += r.label != 0 ? 1 : 0;
  nlohmann::json meta;
  meta["rows"] = rows.size();
  meta["positives"] = positives;
  meta["split"] = flags.split == "train" ? "folds 1-4 of 5 by SHA-256(id) (fold 0 held out)" : "all rows";
  meta["epochs"] = flags.epochs;
  meta["target_fpr"] = flags.target_fpr;
  meta["seed"] = flags.seed;
  for (const auto& f : flags.data) {
    const auto slash = f.find_last_of('/');
    meta["data"].push_back({{"file", slash == std::string::npos ? f : f.substr(slash + 1)}, {"sha256", sha256_file(f)}});
  }
  const std::string bytes = model.serialize(meta.dump());
  std::ofstream out(flags.out, std::ios::binary | std::ios::trunc);
  if (!out) throw core::Error("cannot write " + flags.out, "check the directory exists and is writable");
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw core::Error("writing " + flags.out + " failed", "check the free disk space");
  if (!flags.quiet)
    std::cerr << "aegis guard train: " << rows.size() << " of " << total << " rows (" << positives << " injections), threshold "
              << std::fixed << std::setprecision(3) << model.threshold() << ", model written to " << flags.out << " ("
              << bytes.size() << " bytes)\n";
  return 0;
}

// ---- eval ----

struct EvalFlags {
  std::vector<std::string> data;
  std::vector<std::string> benign;
  std::string method = "holdout";
  std::string format = "text";
  int epochs = 12;
  int hash_bits = 18;
  double target_fpr = 0.005;
  std::uint64_t seed = 1;
  bool quiet = false;
  bool given_model = false;
  GuardFlags guard;
};

int run_eval(const EvalFlags& flags) {
  const auto rows = load_all(flags.data);
  const bool show = !flags.quiet && core::Progress::stderr_is_terminal();
  auto progress = [&](const std::string& what) {
    if (show) std::cerr << "aegis guard eval: " << what << "\n";
  };
  guard::EvalPlan plan = plan_from(flags.epochs, flags.hash_bits, flags.target_fpr, flags.seed);
  plan.guard = guard_options(flags.guard);
  std::vector<guard::EvalReport> reports;
  const bool fixed_model = !flags.guard.model.empty() || flags.guard.no_learned;
  if (fixed_model) {
    // a given model (or signatures alone): score the held-out split and, separately, every row
    std::vector<guard::LabelledText> held;
    for (const auto& r : rows)
      if (guard::fold_of(r.id, 5) == 0) held.push_back(r);
    reports.push_back(guard::evaluate_guard(held, plan.guard, nullptr, "held-out split (fold 0 of 5), given model"));
    reports.push_back(guard::evaluate_guard(rows, plan.guard, nullptr, "all rows, given model (includes its training rows)"));
  } else {
    // training happens here: the guard's signature tier runs as configured, the learned tier is trained
    plan.guard.model_file.clear();
    auto want = [&](const char* m) { return flags.method == m || flags.method == "all"; };
    if (!(want("holdout") || want("cv") || want("loso")))
      throw core::Error("unknown --method '" + flags.method + "'", "use holdout, cv, loso or all");
    if (want("holdout")) reports.push_back(guard::holdout_evaluation(rows, plan, progress));
    if (want("cv")) reports.push_back(guard::cross_validation(rows, plan, progress));
    if (want("loso")) reports.push_back(guard::leave_one_source_out(rows, plan, progress));
  }
  for (const auto& file : flags.benign) {
    auto extra = guard::load_labelled_jsonl(file);
    if (fixed_model) {
      reports.push_back(guard::evaluate_guard(extra, plan.guard, nullptr, "over-defence set " + file));
    } else {
      std::vector<guard::LabelledText> train;
      for (const auto& r : rows)
        if (guard::fold_of(r.id, 5) != 0) train.push_back(r);
      const auto model = guard::train_with_threshold(train, plan, progress);
      // rows of the benign file that were in the training split are skipped: only unseen texts count
      std::vector<guard::LabelledText> unseen;
      std::set<std::string> trained_ids;
      for (const auto& r : train) trained_ids.insert(r.id);
      for (auto& r : extra)
        if (!trained_ids.contains(r.id)) unseen.push_back(std::move(r));
      reports.push_back(guard::evaluate_guard(unseen, plan.guard, &model, "over-defence set " + file + " (rows not trained on)"));
    }
  }
  if (flags.format == "json") {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& r : reports) out.push_back(r.to_json());
    std::cout << out.dump(2) << "\n";
  } else {
    for (const auto& r : reports) std::cout << r.to_text() << "\n";
  }
  return 0;
}

}  // namespace

void register_guard_command(CLI::App& app, int& exit_code) {
  auto* guard_cmd = app.add_subcommand("guard", "prompt-injection and jailbreak guard: scan, train, eval");
  guard_cmd->require_subcommand(1);

  auto scan = std::make_shared<ScanFlags>();
  auto* scan_cmd = guard_cmd->add_subcommand("scan", "scan texts (JSON Lines with a text field, or plain lines); exit 1 when any is flagged");
  scan_cmd->add_option("file", scan->input, "input file, - for standard input")->required();
  scan_cmd->add_option("--format", scan->format, "text (flagged inputs only) or json (one object per input, in order)")
      ->check(CLI::IsMember({"text", "json"}));
  scan_cmd->add_option("--field", scan->field, "JSON field holding the text (default: text)");
  scan_cmd->add_flag("--quiet", scan->quiet, "no summary on stderr");
  add_guard_flags(scan_cmd, scan->guard);
  scan_cmd->callback([scan, &exit_code] { exit_code = run_scan(*scan); });

  auto train = std::make_shared<TrainFlags>();
  auto* train_cmd = guard_cmd->add_subcommand("train", "fit the learned tier (hashed n-gram logistic model) on labelled JSON Lines");
  train_cmd->add_option("--data", train->data, "labelled JSON Lines: text, label (0/1), optionally source, subset, id")->required();
  train_cmd->add_option("--out", train->out, "model file to write")->required();
  train_cmd->add_option("--split", train->split, "train: fit folds 1-4 of 5 and keep fold 0 for evaluation (default); all")
      ->check(CLI::IsMember({"train", "all"}));
  train_cmd->add_option("--epochs", train->epochs, "passes over the data (default 12)")->check(CLI::Range(1, 200));
  train_cmd->add_option("--hash-bits", train->hash_bits, "feature buckets 2^N (default 18)")->check(CLI::Range(10, 24));
  train_cmd->add_option("--target-fpr", train->target_fpr,
                        "threshold chosen for this false-positive rate on cross-validated benign rows (default 0.005; 0: 0.5)")
      ->check(CLI::Range(0.0, 0.5));
  train_cmd->add_option("--seed", train->seed, "shuffle seed");
  train_cmd->add_flag("--quiet", train->quiet, "no summary on stderr");
  train_cmd->callback([train, &exit_code] { exit_code = run_train(*train); });

  auto eval = std::make_shared<EvalFlags>();
  auto* eval_cmd = guard_cmd->add_subcommand("eval", "precision, recall, F1 and false-positive rate per source");
  eval_cmd->add_option("--data", eval->data, "labelled JSON Lines")->required();
  eval_cmd->add_option("--benign", eval->benign, "over-defence set (benign rows) scored by a model trained on the train split");
  eval_cmd->add_option("--method", eval->method, "holdout (default), cv (5-fold), loso (leave one source out) or all")
      ->check(CLI::IsMember({"holdout", "cv", "loso", "all"}));
  eval_cmd->add_option("--format", eval->format, "text or json")->check(CLI::IsMember({"text", "json"}));
  eval_cmd->add_option("--epochs", eval->epochs, "passes over the data (default 12)")->check(CLI::Range(1, 200));
  eval_cmd->add_option("--hash-bits", eval->hash_bits, "feature buckets 2^N (default 18)")->check(CLI::Range(10, 24));
  eval_cmd->add_option("--target-fpr", eval->target_fpr, "threshold target as for train (default 0.005)")->check(CLI::Range(0.0, 0.5));
  eval_cmd->add_option("--seed", eval->seed, "shuffle seed");
  eval_cmd->add_flag("--quiet", eval->quiet, "no progress on stderr");
  add_guard_flags(eval_cmd, eval->guard);
  eval_cmd->callback([eval, &exit_code] { exit_code = run_eval(*eval); });
}

}  // namespace aegis::cli
