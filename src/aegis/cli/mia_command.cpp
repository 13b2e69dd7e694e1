#include "aegis/cli/mia_command.h"


#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "aegis/attacks/inference/membership_inference.h"
#include "aegis/attacks/inference/roc_plot.h"
#include "aegis/cli/common_options.h"
#include "aegis/cli/model_loading.h"
#include "aegis/cli/stage_progress.h"
#include "aegis/core/error.h"
#include "aegis/core/mapped_file.h"
#include "aegis/formats/npy.h"

namespace aegis::cli {
namespace {

struct MiaFlags {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  std::string members, nonmembers;
  std::string attacks;
  int references = 16;
  int parallel = 1;
  std::string recipe;
  std::string fprs = "0.01,0.001";
  int bootstrap = 200;
  bool per_record_variance = false;
  std::uint64_t seed = 0;
  std::string output_dir;
};

// 0.01 -> "1pct", 0.001 -> "0_1pct": the JSON keys tpr_at_1pct_fpr, tpr_at_0_1pct_fpr.
std::string rate_key(double fpr) {
  std::ostringstream text;
  text << std::setprecision(6) << 100 * fpr;
  std::string key = text.str();
  for (auto& c : key)
    if (c == '.') c = '_';
  return key + "pct";
}

std::string percent(double value, int digits = 2) {
  std::ostringstream text;
  text << std::fixed << std::setprecision(digits) << 100 * value << "%";
  return text.str();
}

void write_scores_csv(const std::string& path, const attacks::MembershipAuditReport& report,
                      const std::vector<std::size_t>& member_rows, const std::vector<std::size_t>& nonmember_rows,
                      const std::string& nonmember_split) {
  std::ofstream out(path);
  if (!out) throw core::Error("cannot write " + path, "check that the --output-dir folder is writable");
  out << "record,member,split,index";
  for (const auto& r : report.results) out << "," << attacks::to_string(r.attack);
  out << "\n" << std::setprecision(9);
  const std::size_t n = member_rows.size() + nonmember_rows.size();
  for (std::size_t i = 0; i < n; ++i) {
    const bool member = i < member_rows.size();
    out << i << "," << (member ? 1 : 0) << "," << (member ? "train" : nonmember_split) << ","
        << (member ? member_rows[i] : nonmember_rows[i - member_rows.size()]);
    for (const auto& r : report.results) out << "," << r.scores[i];
    out << "\n";
  }
  if (!out.flush()) throw core::Error("could not finish writing " + path, "check the disk space");
}

// A 1-D .npy is a list of record indices; anything else given as --nonmembers is a data set.
bool is_index_file(const std::string& path) {
  if (path.size() < 4 || path.compare(path.size() - 4, 4, ".npy") != 0) return false;
  try {
    const core::MappedFile file(path);
    return formats::parse_npy_header(file.bytes()).shape.size() == 1;
  } catch (const std::exception&) {
    return false;  // not readable as .npy: load_dataset will say why
  }
}

int run_mia(MiaFlags& flags) {
  if (flags.members.empty()) throw core::Error("no --members file", "give --members IDX.npy: the indices of the training records within the train split");
  const bool references_asked = !flags.recipe.empty();
  attacks::MembershipAuditOptions options;
  options.attacks = attacks::parse_membership_attacks(
      flags.attacks.empty() ? (references_asked ? std::string("all") : std::string("loss,confidence,entropy,modified-entropy"))
                            : flags.attacks);
  options.references = flags.references;
  // Reference models side by side, sharing the cores (0: one per core). One at a time is the
  // default: on 2 cores, 4 CNN references took 22.3 s one at a time on 2 LibTorch threads and
  // 23.9 s two at a time on one thread each; more cores or smaller models may gain.
  const int cores = flags.model.threads > 0 ? flags.model.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  if (flags.parallel < 0) throw core::Error("--parallel must be 0 (one per core) or more");
  options.parallel_references = flags.parallel == 0 ? cores : flags.parallel;
  options.bootstrap = flags.bootstrap;
  options.fixed_variance = !flags.per_record_variance;
  options.seed = flags.seed;
  options.fprs.clear();
  for (float f : parse_floats(flags.fprs, "--fpr")) options.fprs.push_back(f);
  if (!flags.recipe.empty()) options.recipe = models::load_training_recipe(flags.recipe);
  if (flags.bootstrap < 0 || flags.bootstrap > 100000) throw core::Error("--bootstrap must be between 0 and 100000");

  // Members: records of the train split; non-members: of the test split (or another data set).
  DataFlags train_flags = flags.data;
  train_flags.split = "train";
  train_flags.limit = 0;
  train_flags.offset = 0;
  const auto train = load_data(train_flags);
  const auto member_rows = load_indices(flags.members, train.size(), "--members");
  models::Dataset nonmember_pool;
  std::vector<std::size_t> nonmember_rows;
  std::string nonmember_split = "test";
  const bool nonmembers_are_indices = !flags.nonmembers.empty() && is_index_file(flags.nonmembers);
  if (flags.nonmembers.empty() || nonmembers_are_indices) {
    DataFlags test_flags = flags.data;
    test_flags.split = "test";
    test_flags.limit = 0;
    test_flags.offset = 0;
    nonmember_pool = load_data(test_flags);
    if (nonmembers_are_indices) {
      nonmember_rows = load_indices(flags.nonmembers, nonmember_pool.size(), "--nonmembers");
    } else {
      for (std::size_t i = 0; i < std::min(member_rows.size(), nonmember_pool.size()); ++i) nonmember_rows.push_back(i);
    }
  } else {
    DataFlags other = flags.data;
    other.data = flags.nonmembers;
    other.limit = 0;
    other.offset = 0;
    nonmember_pool = load_data(other);
    nonmember_split = flags.nonmembers;
    for (std::size_t i = 0; i < nonmember_pool.size(); ++i) nonmember_rows.push_back(i);
  }
  if (nonmember_pool.sample_shape != train.sample_shape)
    throw core::Error("the non-members' samples are of another shape than the members'", "give non-members of the same kind of data");

  auto records = select_records(train, member_rows);
  const auto nonmembers = select_records(nonmember_pool, nonmember_rows);
  records.x.insert(records.x.end(), nonmembers.x.begin(), nonmembers.x.end());
  records.y.insert(records.y.end(), nonmembers.y.begin(), nonmembers.y.end());

  auto loaded = load_model(flags.model, train.sample_shape);
  auto& target = loaded.view();
  const bool need_references = std::any_of(options.attacks.begin(), options.attacks.end(), attacks::needs_reference_models);
  std::unique_ptr<ArchitectureFactory> factory;
  if (need_references) {
    if (loaded.normalized)
      throw core::Error("reference models cannot be trained for a model given with --mean/--std",
                        "put the normalisation inside the TorchScript model");
    std::string architecture = options.recipe.architecture;
    if (architecture.empty()) {
      if (!loaded.trainable)
        throw core::Error("LiRA and the shadow attack train reference models of the target's architecture, but '" +
                              flags.model.model + "' is not TorchScript",
                          "give a recipe with `architecture: arch.pt` (a TorchScript file of the same architecture)");
      architecture = flags.model.model;
    }
    ModelFlags reference_flags = flags.model;
    reference_flags.threads = std::max(1, cores / std::max(1, options.parallel_references));
    factory = std::make_unique<ArchitectureFactory>(architecture, reference_flags, target.info().input_shape,
                                                    options.recipe.optimizer_options());
  }

  StageProgress progress(progress_wanted(flags.common));
  auto report = attacks::run_membership_audit(
      target, records.x, records.y, member_rows.size(), options,
      [&](int index) { return factory->make(options.recipe.seed * 7919 + static_cast<std::uint64_t>(index) + 1); },
      [&](const std::string& stage, std::size_t done, std::size_t total) { progress.update(stage, done, total); });
  progress.finish();

  nlohmann::json extra;
  std::string scores_path, png_path, svg_path;
  if (!flags.output_dir.empty()) {
    std::filesystem::create_directories(flags.output_dir);
    scores_path = (std::filesystem::path(flags.output_dir) / "scores.csv").string();
    png_path = (std::filesystem::path(flags.output_dir) / "roc.png").string();
    svg_path = (std::filesystem::path(flags.output_dir) / "roc.svg").string();
    write_scores_csv(scores_path, report, member_rows, nonmember_rows, nonmember_split);
    std::vector<attacks::RocSeries> series;
    for (const auto& r : report.results) series.push_back({attacks::to_string(r.attack), r.metrics.roc, r.metrics.auc});
    attacks::write_roc_png(png_path, series);
    attacks::write_roc_svg(svg_path, series);
    extra["outputs"] = {{"scores", scores_path}, {"roc_png", png_path}, {"roc_svg", svg_path}};
  }
  nlohmann::json results = nlohmann::json::array();
  for (const auto& r : report.results) {
    const auto& m = r.metrics;
    nlohmann::json item = {{"attack", attacks::to_string(r.attack)},
                           {"auc", m.auc},
                           {"auc_ci", {m.auc_ci.low, m.auc_ci.high}},
                           {"balanced_accuracy", m.balanced_accuracy},
                           {"seconds", r.seconds}};
    for (std::size_t i = 0; i < m.fprs.size(); ++i) {
      item["tpr_at_" + rate_key(m.fprs[i]) + "_fpr"] = m.tpr_at[i];
      item["tpr_at_" + rate_key(m.fprs[i]) + "_fpr_ci"] = {m.tpr_ci[i].low, m.tpr_ci[i].high};
    }
    results.push_back(std::move(item));
  }
  extra["attacks"] = results;
  extra["model"] = {{"source", target.info().source}, {"backend", target.info().backend}, {"classes", target.num_classes()}};
  extra["members"] = report.members;
  extra["nonmembers"] = report.nonmembers;
  extra["nonmember_source"] = nonmember_split;
  extra["member_accuracy"] = report.member_accuracy;
  extra["nonmember_accuracy"] = report.nonmember_accuracy;
  extra["fprs"] = options.fprs;
  extra["bootstrap"] = options.bootstrap;
  if (report.references > 0) {
    extra["reference_models"] = report.references;
    extra["reference_training_seconds"] = report.reference_training_seconds;
    extra["reference_member_accuracy"] = report.reference_member_accuracy;
    extra["reference_nonmember_accuracy"] = report.reference_nonmember_accuracy;
    extra["recipe"] = {{"architecture", factory->path()}, {"epochs", options.recipe.epochs},
                       {"batch", options.recipe.batch}, {"optimizer", options.recipe.optimizer},
                       {"learning_rate", options.recipe.learning_rate}, {"weight_decay", options.recipe.weight_decay},
                       {"seed", options.recipe.seed}, {"augment", options.recipe.flip_augment ? "flip" : "none"}};
    extra["lira_variance"] = options.fixed_variance ? "fixed" : "per-record";
  }

  if (table_wanted(flags.common)) {
    std::cout << "model " << target.info().source << ": accuracy " << percent(report.member_accuracy, 1) << " on "
              << report.members << " members, " << percent(report.nonmember_accuracy, 1) << " on " << report.nonmembers
              << " non-members\n";
    if (report.references > 0)
      std::cout << report.references << " reference models trained in " << std::fixed << std::setprecision(1)
                << report.reference_training_seconds << " s (accuracy " << percent(report.reference_member_accuracy, 1)
                << " on their members, " << percent(report.reference_nonmember_accuracy, 1) << " on the rest)\n";
    std::cout << "\n" << std::left << std::setw(18) << "attack" << std::right << std::setw(22) << "AUC (95% CI)"
              << std::setw(10) << "bal.acc";
    for (double f : options.fprs) std::cout << std::setw(26) << ("TPR@" + percent(f, f < 0.01 ? 1 : 0) + " FPR");
    std::cout << "\n";
    for (const auto& r : report.results) {
      const auto& m = r.metrics;
      std::ostringstream auc;
      auc << std::fixed << std::setprecision(3) << m.auc << " (" << m.auc_ci.low << "-" << m.auc_ci.high << ")";
      std::cout << std::left << std::setw(18) << attacks::to_string(r.attack) << std::right << std::setw(22) << auc.str()
                << std::setw(10) << percent(m.balanced_accuracy, 1);
      for (std::size_t i = 0; i < m.fprs.size(); ++i)
        std::cout << std::setw(26) << (percent(m.tpr_at[i]) + " (" + percent(m.tpr_ci[i].low) + "-" + percent(m.tpr_ci[i].high) + ")");
      std::cout << "\n";
    }
    if (!png_path.empty()) std::cout << "\nwrote " << scores_path << ", " << png_path << ", " << svg_path << "\n";
    std::cout << "\n";
  }
  return finish_results(flags.common, "mia", {flags.model.model}, report.findings, extra.dump());
}

}  // namespace

void register_mia_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<MiaFlags>();
  auto* command = app.add_subcommand(
      "mia", "Membership inference audit: loss, confidence, entropy, shadow-model and LiRA attacks, TPR at low FPR");
  add_model_flags(*command, flags->model);
  add_data_flags(*command, flags->data);
  command->add_option("--members", flags->members, "1-D .npy of the training records' indices in the train split")->required();
  command->add_option("--nonmembers", flags->nonmembers,
                      "1-D .npy of indices in the test split, or a data set of non-members (default: as many test records as members)");
  command->add_option("--attacks", flags->attacks,
                      "loss, confidence, entropy, modified-entropy, shadow, lira-offline, lira-online or all (default: "
                      "the four threshold attacks; all when --recipe is given)");
  command->add_option("--references", flags->references, "reference (shadow) models to train for LiRA and shadow (default 16)");
  command->add_option("--parallel", flags->parallel,
                      "reference models trained at once, sharing the cores (default 1; 0: one per core)");
  command->add_option("--recipe", flags->recipe,
                      "YAML training recipe of the target: epochs, batch, optimizer, learning_rate, weight_decay, seed, augment, architecture");
  command->add_option("--fpr", flags->fprs, "false-positive rates to report the TPR at (default 0.01,0.001)");
  command->add_option("--bootstrap", flags->bootstrap, "bootstrap resamples for the 95% confidence intervals (default 200)");
  command->add_flag("--per-record-variance", flags->per_record_variance,
                    "LiRA: fit each record's own variance (needs 64+ reference models) instead of one shared variance");
  command->add_option("--seed", flags->seed, "random seed");
  command->add_option("--output-dir", flags->output_dir, "write per-record scores (scores.csv) and ROC plots (roc.png, roc.svg) here");
  add_common_options(*command, flags->common);
  command->callback([flags, &exit_code] { exit_code = run_mia(*flags); });
}

}  // namespace aegis::cli
