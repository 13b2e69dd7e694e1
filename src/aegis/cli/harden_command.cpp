#include "aegis/cli/harden_command.h"

#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>

#include "aegis/attacks/adversarial_training.h"
#include "aegis/attacks/evasion_runner.h"
#include "aegis/cli/common_options.h"
#include "aegis/cli/model_loading.h"
#include "aegis/core/error.h"
#include "aegis/core/progress.h"

namespace aegis::cli {
namespace {

struct HardenFlags {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  std::string method = "pgd";
  attacks::HardeningOptions options;
  std::string optimizer = "adam";
  std::string output;
  std::size_t eval_limit = 1000;
  int eval_steps = 20;
};

int run_harden(HardenFlags& flags) {
  if (flags.output.empty()) throw core::Error("no --output for the hardened model", "give --output hardened.pt");
  flags.options.method = attacks::parse_hardening_method(flags.method);
  auto range = parse_floats(flags.data.range, "--range");
  if (range.size() != 2 || !(range[0] < range[1])) throw core::Error("--range must be LO,HI", "e.g. --range 0,1");
  flags.options.bounds = {range[0], range[1]};
  if (flags.data.split.empty()) flags.data.split = "train";
  auto train = load_data(flags.data);
  auto loaded = load_model(flags.model, train.sample_shape);
  if (!loaded.trainable || loaded.normalized)
    throw core::Error("aegis harden trains TorchScript models (without --mean/--std)",
                      "export the model definition with torch.jit.script(model).save('model.pt') and put the "
                      "normalisation inside the model");
  auto& model = *loaded.trainable;

  core::Progress progress("training (" + flags.method + ")", progress_wanted(flags.common));
  progress.set_total(train.size() * static_cast<std::size_t>(flags.options.epochs), 0);
  std::size_t last = 0;
  auto epochs = attacks::harden(model, train.x, train.y, flags.options, [&](std::size_t done, std::size_t) {
    progress.advance(done - last);
    last = done;
  });
  progress.finish();
  model.save(flags.output);

  // The trade-off, measured at once on held-out data: clean accuracy and PGD robust accuracy.
  DataFlags eval_flags = flags.data;
  eval_flags.split = "test";
  eval_flags.limit = flags.eval_limit;
  eval_flags.offset = 0;
  auto test = load_data(eval_flags);
  attacks::AttackSpec pgd;
  pgd.name = "pgd";
  pgd.norm = attacks::Norm::Linf;
  pgd.eps = {flags.options.eps};
  pgd.pgd.steps = flags.eval_steps;
  attacks::RunnerOptions runner;
  runner.bounds = flags.options.bounds;
  runner.min_robust_accuracy = 0;
  auto evaluation = attacks::run_evasion_plan(model, test.x, test.y, {pgd}, runner);

  nlohmann::json extra;
  extra["method"] = flags.method;
  extra["output"] = flags.output;
  extra["eps"] = flags.options.eps;
  extra["steps"] = flags.options.steps;
  nlohmann::json epoch_list = nlohmann::json::array();
  for (const auto& e : epochs) epoch_list.push_back({{"epoch", e.epoch}, {"loss", e.mean_loss}, {"seconds", e.seconds}});
  extra["epochs"] = epoch_list;
  extra["clean_accuracy"] = evaluation.clean_accuracy;
  extra["pgd_robust_accuracy"] = evaluation.results.empty() ? 0.0 : evaluation.results[0].robust_accuracy;
  extra["evaluation_samples"] = test.size();

  if (table_wanted(flags.common)) {
    for (const auto& e : epochs)
      std::cout << "epoch " << e.epoch << ": loss " << std::fixed << std::setprecision(4) << e.mean_loss << " ("
                << std::setprecision(1) << e.seconds << " s)\n";
    std::cout << "wrote " << flags.output << "\n" << std::setprecision(1) << "held-out (" << test.size()
              << " test samples): clean accuracy " << 100 * evaluation.clean_accuracy << "%, PGD-" << flags.eval_steps
              << " L-inf eps " << flags.options.eps << " robust accuracy "
              << 100 * (evaluation.results.empty() ? 0.0 : evaluation.results[0].robust_accuracy) << "%\n\n";
  }
  return finish_results(flags.common, "harden", {flags.model.model}, {}, extra.dump());
}

}  // namespace

void register_harden_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<HardenFlags>();
  auto* command = app.add_subcommand("harden", "Adversarial training (PGD/Madry, TRADES) or Gaussian augmentation of a TorchScript model");
  add_model_flags(*command, flags->model);
  add_data_flags(*command, flags->data);
  flags->data.split = "train";
  command->add_option("--method", flags->method, "pgd (Madry), trades, or gaussian (for aegis certify)");
  command->add_option("--eps", flags->options.eps, "L-inf budget of the training attack (default 0.1)");
  command->add_option("--steps", flags->options.steps, "inner attack steps (default 7)");
  command->add_option("--step-size", flags->options.step_size, "inner step size (default 2.5 * eps / steps)");
  command->add_option("--beta", flags->options.beta, "TRADES beta (default 6)");
  command->add_option("--sigma", flags->options.sigma, "gaussian: noise standard deviation (default 0.25)");
  command->add_option("--epochs", flags->options.epochs, "passes over the training data (default 1)");
  command->add_option("--train-batch", flags->options.batch, "training batch size (default 128)");
  command->add_option("--lr", flags->options.learning_rate, "learning rate (default 1e-3, Adam)");
  command->add_option("--seed", flags->options.seed, "random seed");
  command->add_option("--output,-o", flags->output, "where to write the hardened TorchScript model")->required();
  command->add_option("--eval-limit", flags->eval_limit, "test samples for the clean/robust evaluation (default 1000)");
  command->add_option("--eval-steps", flags->eval_steps, "PGD steps of the evaluation (default 20)");
  // --output is ours here; the report goes to stdout (or --report)
  command->add_option("--format", flags->common.format, "table, json, sarif or markdown");
  command->add_option("--report", flags->common.output, "write the report to this file instead of stdout");
  command->add_option("--fail-on", flags->common.fail_on, "critical|high|medium|low|info");
  command->add_flag("--quiet,-q", flags->common.quiet, "no progress");
  command->add_flag("--verbose,-v", flags->common.verbose, "more detail");
  command->callback([flags, &exit_code] { exit_code = run_harden(*flags); });
}

}  // namespace aegis::cli
