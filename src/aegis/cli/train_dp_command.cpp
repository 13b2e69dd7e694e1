#include "aegis/cli/train_dp_command.h"

#include <chrono>
#include <cmath>
#include <iomanip>
#include <iostream>
#include <limits>
#include <random>
#include <nlohmann/json.hpp>
#include <sstream>

#include "aegis/cli/common_options.h"
#include "aegis/cli/model_loading.h"
#include "aegis/cli/stage_progress.h"
#include "aegis/core/error.h"
#include "aegis/models/dp_sgd.h"
#include "aegis/models/training.h"
#include "aegis/privacy/accountant.h"
#include "aegis/privacy/pld_accountant.h"

namespace aegis::cli {
namespace {

struct TrainDpFlags {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  std::string members;
  std::string output;
  double target_epsilon = 0;      // 0: use --noise-multiplier
  double noise_multiplier = -1;   // < 0: calibrate from --target-epsilon
  double delta = 0;               // 0: 1 / (10 N), below 1/N as is customary
  std::string conversion = "improved";
  int epochs = 10;
  std::size_t batch = 256;        // expected (Poisson) batch size
  double max_grad_norm = 1.0;
  std::string optimizer = "sgd";
  double learning_rate = 0.1;
  double momentum = 0.0;
  std::uint64_t seed = 0;
  bool secure_noise = false;
  std::string test_split = "test";
  std::size_t test_limit = 10000;
};

privacy::RdpConversion parse_conversion(const std::string& name) {
  if (name == "classic") return privacy::RdpConversion::Classic;
  if (name == "improved") return privacy::RdpConversion::Improved;
  throw core::Error("unknown --conversion " + name, "use improved (Balle et al. 2020, Opacus's current) or classic");
}

std::string epsilon_text(double epsilon) {
  if (!std::isfinite(epsilon)) return "inf";
  std::ostringstream out;
  out << std::setprecision(4) << epsilon;
  return out.str();
}

int run_train_dp(TrainDpFlags& flags) {
  if (flags.output.empty()) throw core::Error("--save is required", "name the TorchScript file to write the trained model to");
  if (flags.epochs < 1) throw core::Error("--epochs must be at least 1");
  if (!(flags.max_grad_norm > 0)) throw core::Error("--max-grad-norm must be positive", "a per-sample clipping bound such as 1.0");
  const auto conversion = parse_conversion(flags.conversion);
  const bool calibrate = flags.noise_multiplier < 0;
  if (calibrate && !(flags.target_epsilon > 0))
    throw core::Error("give --target-epsilon or --noise-multiplier",
                      "--target-epsilon 3 calibrates the noise to spend at most epsilon 3; --noise-multiplier 0 trains without privacy");

  auto data = load_data(flags.data);
  if (!flags.members.empty()) data = select_records(data, load_indices(flags.members, data.size(), "--members"));
  const std::size_t n = data.size();
  if (n < 2) throw core::Error("the training data has fewer than 2 records", "check --data, --split, --limit and --members");
  const double q = std::min(1.0, static_cast<double>(flags.batch) / static_cast<double>(n));
  const auto steps = static_cast<std::uint64_t>(std::ceil(flags.epochs / q));
  const double delta = flags.delta > 0 ? flags.delta : 1.0 / (10.0 * static_cast<double>(n));
  if (!(delta < 1)) throw core::Error("--delta must be below 1", "use a value well below 1/N, e.g. 1e-5");

  double sigma = flags.noise_multiplier;
  if (calibrate) sigma = privacy::calibrate_noise_multiplier(flags.target_epsilon, q, steps, delta, conversion);

  // the model file is scanned before LibTorch loads it, as for every other command
  (void)load_model(flags.model, data.sample_shape);
  models::TorchScriptOptions model_options;
  model_options.device = flags.model.device;
  model_options.threads = flags.model.threads;
  model_options.input_shape = flags.model.input_shape.empty() ? data.sample_shape : parse_shape(flags.model.input_shape, "--input-shape");
  model_options.batch = flags.model.batch;
  models::DpSgdOptions options;
  options.noise_multiplier = sigma;
  options.max_grad_norm = flags.max_grad_norm;
  options.sample_rate = q;
  options.optimizer = flags.optimizer;
  options.learning_rate = flags.learning_rate;
  options.momentum = flags.momentum;
  options.seed = flags.seed;
  options.secure_noise = flags.secure_noise;
  if (flags.secure_noise) {
    // the subsampling the accountant credits must be unpredictable too, not only the noise
    std::random_device device;
    options.seed = (static_cast<std::uint64_t>(device()) << 32) ^ device();
  }
  models::DpSgdTrainer trainer(flags.model.model, model_options, options);

  StageProgress progress(progress_wanted(flags.common));
  double clipped = 0, loss = 0;
  std::uint64_t counted = 0;
  const auto start = std::chrono::steady_clock::now();
  trainer.train(data.x, data.y, steps, [&](std::uint64_t step, std::uint64_t total, const models::DpStepStats& stats) {
    progress.update("DP-SGD steps", step, total);
    // the last epoch's figures describe the model as trained
    if (step + static_cast<std::uint64_t>(std::ceil(1 / q)) > total) {
      clipped += stats.clipped_fraction;
      loss += stats.mean_loss;
      ++counted;
    }
  });
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  progress.finish();
  trainer.save(flags.output);

  privacy::RdpAccountant accountant;
  double classic = std::numeric_limits<double>::infinity(), improved = classic, order = 0;
  if (sigma > 0) {
    accountant.step(q, sigma, steps);
    const auto c = accountant.spent(delta, privacy::RdpConversion::Classic);
    const auto i = accountant.spent(delta, privacy::RdpConversion::Improved);
    classic = c.epsilon;
    improved = i.epsilon;
    order = conversion == privacy::RdpConversion::Classic ? c.best_order : i.best_order;
  }
  const double epsilon = conversion == privacy::RdpConversion::Classic ? classic : improved;
  // the PLD accountant's (tighter) figure for the same run, reported beside the RDP one
  double pld = std::numeric_limits<double>::infinity();
  if (sigma > 0) {
    try {
      pld = privacy::pld_epsilon(q, sigma, steps, delta);
    } catch (const core::Error&) {
      pld = std::numeric_limits<double>::quiet_NaN();  // a grid too large for this run: RDP only
    }
  }

  double train_accuracy = models::accuracy(trainer.classifier(), data.x, data.y);
  double test_accuracy = -1;
  DataFlags test_flags = flags.data;
  test_flags.split = flags.test_split;
  test_flags.limit = flags.test_limit;
  test_flags.offset = 0;
  std::string test_note;
  try {
    const auto test = load_data(test_flags);
    test_accuracy = models::accuracy(trainer.classifier(), test.x, test.y);
  } catch (const core::Error& e) {
    test_note = std::string("no test accuracy: ") + e.what();
  }

  std::vector<core::Finding> findings;
  if (!(epsilon <= 10)) {
    core::Finding f;
    f.rule_id = "dp.weak-guarantee";
    f.severity = core::Severity::Medium;
    f.title = std::isfinite(epsilon) ? "Differential-privacy guarantee too weak to bound membership inference (epsilon " +
                                           epsilon_text(epsilon) + ")"
                                     : "Model trained without differential privacy (noise multiplier 0)";
    f.location.file = flags.output;
    f.evidence = "epsilon " + epsilon_text(epsilon) + " at delta " + epsilon_text(delta) + " after " + std::to_string(steps) +
                 " steps at sampling rate " + epsilon_text(q) + ", noise multiplier " + epsilon_text(sigma);
    f.atlas = {"AML.T0024.000", "AML.T0024.001"};
    f.nist_ai_rmf = {"MEASURE 2.10", "MANAGE 2.2"};
    f.remediation = "Train with a target epsilon of 8 or less (aegis train-dp --target-epsilon 8), and confirm with aegis mia.";
    findings.push_back(std::move(f));
  }

  nlohmann::json accounting = {{"accountant", "rdp"},
                               {"conversion", privacy::to_string(conversion)},
                               {"epsilon", std::isfinite(epsilon) ? nlohmann::json(epsilon) : nlohmann::json("inf")},
                               {"epsilon_classic", std::isfinite(classic) ? nlohmann::json(classic) : nlohmann::json("inf")},
                               {"epsilon_improved", std::isfinite(improved) ? nlohmann::json(improved) : nlohmann::json("inf")},
                               {"epsilon_pld", std::isfinite(pld) ? nlohmann::json(pld) : std::isnan(pld) ? nlohmann::json() : nlohmann::json("inf")},
                               {"best_order", order},
                               {"delta", delta},
                               {"noise_multiplier", sigma},
                               {"noise_calibrated", calibrate},
                               {"sample_rate", q},
                               {"steps", steps}};
  if (calibrate) accounting["target_epsilon"] = flags.target_epsilon;
  nlohmann::json extra = {{"privacy", accounting},
                          {"training",
                           {{"records", n},
                            {"epochs", flags.epochs},
                            {"expected_batch", flags.batch},
                            {"max_grad_norm", flags.max_grad_norm},
                            {"optimizer", flags.optimizer},
                            {"learning_rate", flags.learning_rate},
                            {"seconds", seconds},
                            {"last_epoch_loss", counted ? loss / static_cast<double>(counted) : 0.0},
                            {"last_epoch_clipped_fraction", counted ? clipped / static_cast<double>(counted) : 0.0}}},
                          {"train_accuracy", train_accuracy},
                          {"test_accuracy", test_accuracy >= 0 ? nlohmann::json(test_accuracy) : nlohmann::json()},
                          {"model", flags.output},
                          {"data", data.description}};
  if (!test_note.empty()) extra["note"] = test_note;

  if (table_wanted(flags.common)) {
    std::cout << "DP-SGD on " << n << " records: " << steps << " steps at sampling rate " << epsilon_text(q) << " (expected batch "
              << flags.batch << "), noise multiplier " << epsilon_text(sigma) << (calibrate ? " (calibrated)" : "")
              << ", clipping norm " << flags.max_grad_norm << "\n"
              << "privacy spent: epsilon " << epsilon_text(epsilon) << " at delta " << epsilon_text(delta) << " (RDP, "
              << privacy::to_string(conversion) << " conversion; classic " << epsilon_text(classic) << ", improved "
              << epsilon_text(improved) << "; PLD accountant " << epsilon_text(pld) << ")\n"
              << std::fixed << std::setprecision(2) << "accuracy: train " << 100 * train_accuracy << "%";
    if (test_accuracy >= 0) std::cout << ", test " << 100 * test_accuracy << "%";
    std::cout << "; " << seconds << " s of training; model written to " << flags.output << "\n\n";
  }
  return finish_results(flags.common, "train-dp", {flags.model.model, flags.data.data}, findings, extra.dump());
}

}  // namespace

void register_train_dp_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<TrainDpFlags>();
  auto* command = app.add_subcommand(
      "train-dp", "Train a TorchScript model with DP-SGD (Poisson sampling, per-sample clipping, Gaussian noise, RDP accountant)");
  add_model_flags(*command, flags->model);
  add_data_flags(*command, flags->data);
  flags->data.split = "train";
  command->add_option("--members", flags->members, "1-D .npy of the record indices to train on (default: all of --data)");
  command->add_option("--save", flags->output, "TorchScript file to write the trained model to")->required();
  command->add_option("--target-epsilon", flags->target_epsilon, "calibrate the noise to spend at most this epsilon");
  command->add_option("--noise-multiplier", flags->noise_multiplier, "noise multiplier sigma instead of --target-epsilon (0: no privacy)");
  command->add_option("--delta", flags->delta, "delta of (epsilon, delta)-DP (default 1/(10 N))");
  command->add_option("--conversion", flags->conversion, "RDP to (epsilon, delta): improved (default) or classic");
  command->add_option("--epochs", flags->epochs, "passes over the data in expectation (default 10)");
  command->add_option("--expected-batch", flags->batch, "expected (Poisson) batch size; the sampling rate is this / N (default 256)");
  command->add_option("--max-grad-norm", flags->max_grad_norm, "per-sample gradient clipping bound C (default 1.0)");
  command->add_option("--optimizer", flags->optimizer, "sgd (default) or adam")->check(CLI::IsMember({"sgd", "adam"}));
  command->add_option("--lr", flags->learning_rate, "learning rate (default 0.1)");
  command->add_option("--momentum", flags->momentum, "SGD momentum (default 0)");
  command->add_option("--seed", flags->seed, "seed of the sampling and, without --secure-noise, of the noise");
  command->add_flag("--secure-noise", flags->secure_noise, "noise from OpenSSL's CSPRNG and Poisson sampling seeded by the OS (not reproducible; use for releases)");
  command->add_option("--test-split", flags->test_split, "split the test accuracy is measured on (default test)");
  command->add_option("--test-limit", flags->test_limit, "test records used (default 10000)");
  add_common_options(*command, flags->common);
  command->callback([flags, &exit_code] { exit_code = run_train_dp(*flags); });
}

}  // namespace aegis::cli
