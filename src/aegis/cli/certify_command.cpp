#include "aegis/cli/certify_command.h"

#include <chrono>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "aegis/attacks/smoothing.h"
#include "aegis/cli/common_options.h"
#include "aegis/cli/model_loading.h"
#include "aegis/core/error.h"
#include "aegis/core/progress.h"

namespace aegis::cli {
namespace {

struct CertifyFlags {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  attacks::SmoothingOptions smoothing;
  std::string radii = "0,0.25,0.5,0.75,1.0";
  double min_certified_accuracy = 0.0;  // at the first non-zero radius; 0 = no findings
};

int run_certify(CertifyFlags& flags) {
  auto dataset = load_data(flags.data);
  auto loaded = load_model(flags.model, dataset.sample_shape);
  auto& model = loaded.view();
  const auto radii = parse_floats(flags.radii, "--radii");
  const bool show = progress_wanted(flags.common);
  core::Progress progress("certifying", show);
  progress.set_total(dataset.size(), dataset.size());
  std::size_t last = 0;
  const auto start = std::chrono::steady_clock::now();
  auto certificates = attacks::certify(model, dataset.x, flags.smoothing, [&](std::size_t done) {
    progress.advance(done - last);
    last = done;
  });
  progress.finish();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  const std::size_t n = dataset.size();
  std::size_t abstained = 0, correct = 0;
  std::vector<double> radius_of_correct;
  for (std::size_t i = 0; i < n; ++i) {
    if (certificates[i].predicted < 0) ++abstained;
    if (certificates[i].predicted == dataset.y[i]) {
      ++correct;
      radius_of_correct.push_back(certificates[i].radius);
    }
  }
  nlohmann::json table = nlohmann::json::array();
  std::vector<double> certified(radii.size());
  for (std::size_t r = 0; r < radii.size(); ++r) {
    std::size_t count = 0;
    for (double radius : radius_of_correct) count += radius >= radii[r];
    certified[r] = n ? static_cast<double>(count) / static_cast<double>(n) : 0;
    table.push_back({{"radius", radii[r]}, {"certified_accuracy", certified[r]}});
  }
  std::vector<core::Finding> findings;
  for (std::size_t r = 0; r < radii.size(); ++r) {
    if (radii[r] <= 0 || flags.min_certified_accuracy <= 0) continue;
    if (certified[r] < flags.min_certified_accuracy) {
      core::Finding f;
      f.rule_id = "robustness.low-certified-accuracy";
      f.severity = core::Severity::Medium;
      std::ostringstream title;
      title << std::fixed << std::setprecision(1) << "certified accuracy at L2 radius " << radii[r] << " is "
            << 100 * certified[r] << "%";
      f.title = title.str();
      f.location.file = flags.model.model;
      f.evidence = "below --min-certified-accuracy " + std::to_string(flags.min_certified_accuracy) + " (sigma " +
                   std::to_string(flags.smoothing.sigma) + ", n " + std::to_string(flags.smoothing.n) + ")";
      f.atlas = {"AML.T0015", "AML.T0043"};
      f.nist_ai_rmf = {"MEASURE 2.7"};
      f.remediation = "train the base model with Gaussian noise (aegis harden --method gaussian --sigma S) and certify with the same sigma";
      findings.push_back(f);
      break;
    }
  }
  nlohmann::json extra;
  extra["samples"] = n;
  extra["sigma"] = flags.smoothing.sigma;
  extra["n0"] = flags.smoothing.n0;
  extra["n"] = flags.smoothing.n;
  extra["alpha"] = flags.smoothing.alpha;
  extra["smoothed_accuracy"] = n ? static_cast<double>(correct) / static_cast<double>(n) : 0;
  extra["abstain_rate"] = n ? static_cast<double>(abstained) / static_cast<double>(n) : 0;
  extra["certified_accuracy"] = table;
  extra["queries"] = model.queries();
  extra["seconds"] = seconds;
  nlohmann::json per_sample = nlohmann::json::array();
  for (std::size_t i = 0; i < n; ++i)
    per_sample.push_back({{"label", dataset.y[i]}, {"predicted", certificates[i].predicted},
                          {"radius", certificates[i].radius}, {"p_lower", certificates[i].p_lower}});
  extra["certificates"] = per_sample;

  if (table_wanted(flags.common)) {
    std::cout << "smoothed classifier: sigma " << flags.smoothing.sigma << ", n0 " << flags.smoothing.n0 << ", n "
              << flags.smoothing.n << ", alpha " << flags.smoothing.alpha << ", " << n << " samples, " << std::fixed
              << std::setprecision(1) << seconds << " s\n";
    std::cout << "accuracy " << 100.0 * static_cast<double>(correct) / static_cast<double>(std::max<std::size_t>(n, 1))
              << "%, abstained " << 100.0 * static_cast<double>(abstained) / static_cast<double>(std::max<std::size_t>(n, 1))
              << "%\n  radius  certified accuracy\n";
    for (std::size_t r = 0; r < radii.size(); ++r)
      std::cout << "  " << std::setw(6) << std::setprecision(2) << radii[r] << "  " << std::setw(8) << std::setprecision(1)
                << 100 * certified[r] << "%\n";
    std::cout << "\n";
  }
  return finish_results(flags.common, "certify", {flags.model.model}, findings, extra.dump());
}

}  // namespace

void register_certify_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<CertifyFlags>();
  auto* command = app.add_subcommand("certify", "Randomized-smoothing certified L2 radii (Cohen et al.) with Clopper-Pearson bounds");
  add_model_flags(*command, flags->model);
  add_data_flags(*command, flags->data);
  command->add_option("--sigma", flags->smoothing.sigma, "noise standard deviation (default 0.25)");
  command->add_option("--n0", flags->smoothing.n0, "noisy copies that select the class (default 100)");
  command->add_option("--n", flags->smoothing.n, "noisy copies that bound its probability (default 10000)");
  command->add_option("--alpha", flags->smoothing.alpha, "failure probability of each certificate (default 0.001)");
  command->add_option("--seed", flags->smoothing.seed, "random seed");
  command->add_option("--radii", flags->radii, "radii at which certified accuracy is reported");
  command->add_option("--min-certified-accuracy", flags->min_certified_accuracy,
                      "a finding when certified accuracy at a radius falls below this (0 = none)");
  add_common_options(*command, flags->common);
  command->callback([flags, &exit_code] { exit_code = run_certify(*flags); });
}

}  // namespace aegis::cli
