#include "aegis/cli/poison_command.h"


#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "aegis/attacks/poisoning/poisoning_audit.h"
#include "aegis/cli/common_options.h"
#include "aegis/cli/model_loading.h"
#include "aegis/cli/stage_progress.h"
#include "aegis/core/error.h"

namespace aegis::cli {
namespace {

struct PoisonFlags {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  std::string methods = "all";
  std::string layer;
  double expected_fraction = 0.10;
  int clusters = 2;
  int components = 10;
  int neighbours = 10;
  std::string truth;
  std::string output_dir;
  std::size_t max_suspects = 200;
  std::uint64_t seed = 0;
};

nlohmann::json quality_json(const attacks::DetectionQuality& q) {
  return {{"flagged", q.flagged}, {"true_positives", q.true_positives}, {"poisoned", q.poisoned},
          {"precision", q.precision}, {"recall", q.recall}, {"f1", q.f1}};
}

std::string join(const std::vector<std::string>& items, const char* separator) {
  std::string out;
  for (const auto& item : items) out += (out.empty() ? "" : separator) + item;
  return out;
}

int run_poison(PoisonFlags& flags) {
  attacks::PoisonAuditOptions options;
  options.methods = attacks::parse_poison_methods(flags.methods);
  options.layer = flags.layer;
  if (!(flags.expected_fraction > 0 && flags.expected_fraction < 0.5))
    throw core::Error("--expected-fraction must be in (0, 0.5)", "the share of a class assumed poisoned, e.g. 0.1");
  options.spectral.expected_fraction = flags.expected_fraction;
  options.clustering.clusters = flags.clusters;
  options.clustering.components = flags.components;
  options.clustering.seed = flags.seed;
  options.knn.k = flags.neighbours;
  if (flags.clusters < 2 || flags.components < 1 || flags.neighbours < 1)
    throw core::Error("--clusters must be at least 2, --components and --k at least 1");

  const auto data = load_data(flags.data);
  if (!flags.truth.empty()) {
    options.truly_poisoned.assign(data.size(), 0);
    for (auto row : load_indices(flags.truth, data.size(), "--truth")) options.truly_poisoned[row] = 1;
  }
  auto loaded = load_model(flags.model, data.sample_shape);
  auto& model = loaded.view();
  models::TrainableClassifier* white_box = loaded.normalized ? nullptr : loaded.trainable;
  if (loaded.normalized && std::any_of(options.methods.begin(), options.methods.end(), attacks::needs_activations))
    throw core::Error("activations cannot be read through --mean/--std", "put the normalisation inside the TorchScript model");

  StageProgress progress(progress_wanted(flags.common));
  auto report = attacks::run_poison_audit(model, white_box, data.x, data.y, options,
                                          [&](const std::string& stage, std::size_t done, std::size_t total) {
                                            progress.update(stage, done, total);
                                          });
  progress.finish();

  std::string suspects_path;
  if (!flags.output_dir.empty()) {
    std::filesystem::create_directories(flags.output_dir);
    suspects_path = (std::filesystem::path(flags.output_dir) / "suspects.csv").string();
    std::ofstream out(suspects_path);
    if (!out) throw core::Error("cannot write " + suspects_path, "check that the --output-dir folder is writable");
    out << "index,label,predicted,score,methods";
    for (const auto& d : report.detectors) out << "," << d.method;
    out << "\n" << std::setprecision(6);
    std::vector<const attacks::Suspect*> suspect_of(data.size(), nullptr);
    for (const auto& s : report.suspects) suspect_of[s.index] = &s;
    for (std::size_t i = 0; i < data.size(); ++i) {
      const auto* s = suspect_of[i];
      out << i << "," << data.y[i] << "," << report.predicted[i] << "," << (s ? s->score : 0.0) << ","
          << (s ? join(s->methods, ";") : "");
      for (const auto& d : report.detectors) out << "," << d.score[i];
      out << "\n";
    }
    if (!out.flush()) throw core::Error("could not finish writing " + suspects_path, "check the disk space");
  }

  nlohmann::json detectors = nlohmann::json::array();
  for (std::size_t m = 0; m < report.detectors.size(); ++m) {
    const auto& d = report.detectors[m];
    nlohmann::json item = {{"method", d.method},
                           {"flagged", std::count(d.flagged.begin(), d.flagged.end(), 1)},
                           {"seconds", d.seconds},
                           {"notes", d.notes}};
    if (!report.quality.empty()) {
      const auto& q = report.quality[m];
      item["precision"] = q.precision;
      item["recall"] = q.recall;
      item["f1"] = q.f1;
      item["true_positives"] = q.true_positives;
    }
    detectors.push_back(std::move(item));
  }
  nlohmann::json suspects = nlohmann::json::array();
  for (std::size_t i = 0; i < std::min(flags.max_suspects, report.suspects.size()); ++i) {
    const auto& s = report.suspects[i];
    suspects.push_back({{"index", s.index}, {"label", s.label}, {"predicted", s.predicted}, {"score", s.score}, {"methods", s.methods}});
  }
  nlohmann::json extra;
  extra["detectors"] = detectors;
  extra["suspects"] = suspects;
  extra["suspect_count"] = report.suspects.size();
  extra["records"] = report.records;
  extra["feature_width"] = report.feature_width;
  extra["activation_seconds"] = report.activation_seconds;
  extra["agreement_with_labels"] = report.agreement_with_labels;
  extra["data"] = data.description;
  if (report.combined_quality) {
    extra["combined"] = quality_json(*report.combined_quality);
    extra["poisoned"] = report.combined_quality->poisoned;
  }
  if (!suspects_path.empty()) extra["suspects_file"] = suspects_path;

  if (table_wanted(flags.common)) {
    std::cout << report.records << " records, model agrees with " << std::fixed << std::setprecision(1)
              << 100 * report.agreement_with_labels << "% of their labels";
    if (report.feature_width) std::cout << "; activations of width " << report.feature_width;
    std::cout << "\n\n" << std::left << std::setw(24) << "detector" << std::right << std::setw(9) << "flagged";
    if (!report.quality.empty()) std::cout << std::setw(11) << "precision" << std::setw(9) << "recall";
    std::cout << std::setw(10) << "seconds" << "\n";
    for (std::size_t m = 0; m < report.detectors.size(); ++m) {
      const auto& d = report.detectors[m];
      std::cout << std::left << std::setw(24) << d.method << std::right << std::setw(9)
                << std::count(d.flagged.begin(), d.flagged.end(), 1);
      if (!report.quality.empty())
        std::cout << std::setw(10) << 100 * report.quality[m].precision << "%" << std::setw(8) << 100 * report.quality[m].recall << "%";
      std::cout << std::setw(10) << std::setprecision(2) << d.seconds << std::setprecision(1) << "\n";
    }
    if (flags.common.verbose)
      for (const auto& d : report.detectors)
        for (const auto& note : d.notes) std::cout << "  " << d.method << ": " << note << "\n";
    std::cout << "\n" << report.suspects.size() << " suspect records";
    if (!report.suspects.empty()) {
      std::cout << ", most suspicious first:\n";
      for (std::size_t i = 0; i < std::min<std::size_t>(10, report.suspects.size()); ++i) {
        const auto& s = report.suspects[i];
        std::cout << "  record " << s.index << " (label " << s.label << ", predicted " << s.predicted << "): "
                  << join(s.methods, ", ") << "\n";
      }
    } else {
      std::cout << "\n";
    }
    if (!suspects_path.empty()) std::cout << "all records' scores: " << suspects_path << "\n";
    std::cout << "\n";
  }
  return finish_results(flags.common, "poison", {flags.model.model, flags.data.data}, report.findings, extra.dump());
}

}  // namespace

void register_poison_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<PoisonFlags>();
  auto* command = app.add_subcommand(
      "poison", "Poisoning/backdoor audit: activation clustering, spectral signatures, k-NN and confident-learning label noise");
  add_model_flags(*command, flags->model);
  add_data_flags(*command, flags->data);
  flags->data.split = "train";
  command->add_option("--methods", flags->methods,
                      "activation-clustering, spectral-signature, knn, confident-learning or all (default all)");
  command->add_option("--layer", flags->layer, "top-level layer whose output is read (default: the input of the last layer)");
  command->add_option("--expected-fraction", flags->expected_fraction,
                      "share of a class assumed poisoned, for spectral signatures (default 0.1)");
  command->add_option("--clusters", flags->clusters, "activation clustering: clusters per class (default 2)");
  command->add_option("--components", flags->components, "activation clustering: PCA dimensions (default 10)");
  command->add_option("--k", flags->neighbours, "k-NN: neighbours per record (default 10)");
  command->add_option("--truth", flags->truth, "1-D .npy of the indices known to be poisoned: adds precision and recall");
  command->add_option("--output-dir", flags->output_dir, "write every record's scores (suspects.csv) here");
  command->add_option("--max-suspects", flags->max_suspects, "suspects listed in the JSON report (default 200)");
  command->add_option("--seed", flags->seed, "random seed");
  add_common_options(*command, flags->common);
  command->callback([flags, &exit_code] { exit_code = run_poison(*flags); });
}

}  // namespace aegis::cli
