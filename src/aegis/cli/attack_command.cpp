#include "aegis/cli/attack_command.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <iomanip>
#include <iostream>
#include <set>
#include <nlohmann/json.hpp>
#include <sstream>

#include "aegis/attacks/evasion_runner.h"
#include "aegis/cli/common_options.h"
#include "aegis/cli/model_loading.h"
#include "aegis/cli/stage_progress.h"
#include "aegis/core/error.h"
#include "aegis/core/progress.h"

namespace aegis::cli {
namespace {

namespace fs = std::filesystem;

struct AttackFlags {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  std::string plan;
  std::string attacks;  // comma-separated
  std::string norm = "linf";
  std::string eps;
  int steps = 0;
  float step_size = 0;
  bool random_start = false;
  int restarts = 1;
  int max_queries = 0;
  std::string targeted;
  std::uint64_t seed = 0;
  float confidence = 0;
  float overshoot = 0.02f;
  double min_robust_accuracy = 0.5;
  std::string output_dir;
  bool no_images = false;
  bool reference = false;
  std::set<std::string> given;  // the flags of the command line, which win over the plan's defaults
};

attacks::Norm parse_norm(const std::string& text) {
  if (text == "linf" || text == "inf" || text == "Linf") return attacks::Norm::Linf;
  if (text == "l2" || text == "L2" || text == "2") return attacks::Norm::L2;
  throw core::Error("norm '" + text + "' is not linf or l2", "use --norm linf or --norm l2");
}

// Settings of one attack from flags (or a plan entry that overrides them).
attacks::AttackSpec spec_from(const std::string& name, const AttackFlags& f) {
  attacks::AttackSpec spec;
  spec.name = name;
  spec.norm = parse_norm(f.norm);
  if (name == "cw" || name == "deepfool" || name == "cw-l2") spec.norm = attacks::Norm::L2;
  if (name == "hopskipjump" && f.norm == "linf" && f.eps.empty()) spec.norm = attacks::Norm::L2;
  if (!f.eps.empty()) spec.eps = parse_floats(f.eps, "--eps");
  spec.targeted = f.targeted;
  spec.seed = f.seed;
  if (f.steps > 0) {
    spec.pgd.steps = f.steps;
    spec.apgd.steps = f.steps;
    spec.cw.max_iterations = f.steps;
    spec.deepfool.max_iterations = f.steps;
    spec.hsj.max_iterations = f.steps;
  }
  if (f.step_size > 0) spec.pgd.step_size = f.step_size;
  spec.pgd.random_start = f.random_start;
  spec.pgd.restarts = f.restarts;
  spec.apgd.restarts = f.restarts;
  if (f.max_queries > 0) {
    spec.square.max_queries = f.max_queries;
    spec.hsj.max_queries = f.max_queries;
  }
  spec.cw.confidence = f.confidence;
  spec.deepfool.overshoot = f.overshoot;
  return spec;
}

template <typename T>
void read_if(const YAML::Node& node, const char* key, T& into) {
  if (node[key]) into = node[key].as<T>();
}

// A plan: defaults for model and data, and a list of attacks that share one clean pass.
std::vector<attacks::AttackSpec> load_plan(AttackFlags& flags) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(flags.plan);
  } catch (const YAML::Exception& error) {
    throw core::Error("cannot read the attack plan " + flags.plan + ": " + error.what(),
                      "a plan is YAML or JSON with `attacks:` (see examples/fashion-mnist/attack_plan.yaml)");
  }
  const fs::path base = fs::path(flags.plan).parent_path();
  auto relative = [&](const std::string& p) {
    return fs::path(p).is_absolute() || p.rfind("http", 0) == 0 ? p : (base / p).string();
  };
  try {
    if (flags.model.model.empty() && root["model"]) flags.model.model = relative(root["model"].as<std::string>());
    if (flags.data.data.empty() && root["data"]) flags.data.data = relative(root["data"].as<std::string>());
    auto unless_given = [&](const char* flag, const char* key, auto& into) {
      if (!flags.given.count(flag)) read_if(root, key, into);
    };
    unless_given("--split", "split", flags.data.split);
    unless_given("--limit", "limit", flags.data.limit);
    if (root["range"] && !flags.given.count("--range")) {
      auto range = root["range"].as<std::vector<float>>();
      if (range.size() != 2) throw core::Error("the plan's range must be [lo, hi]", "write range: [0, 1]");
      flags.data.range = std::to_string(range[0]) + "," + std::to_string(range[1]);
    }
    unless_given("--min-robust-accuracy", "min_robust_accuracy", flags.min_robust_accuracy);
    if (!root["attacks"] || !root["attacks"].IsSequence())
      throw core::Error("the plan " + flags.plan + " has no `attacks:` list", "see examples/fashion-mnist/attack_plan.yaml");
    std::vector<attacks::AttackSpec> plan;
    for (const auto& entry : root["attacks"]) {
      AttackFlags local = flags;
      local.eps.clear();
      if (!entry["attack"])
        throw core::Error("an entry of the plan at line " + std::to_string(entry.Mark().line + 1) + " has no `attack:`",
                          "name the attack, e.g. attack: pgd");
      read_if(entry, "norm", local.norm);
      read_if(entry, "steps", local.steps);
      read_if(entry, "step_size", local.step_size);
      read_if(entry, "random_start", local.random_start);
      read_if(entry, "restarts", local.restarts);
      read_if(entry, "max_queries", local.max_queries);
      read_if(entry, "targeted", local.targeted);
      read_if(entry, "seed", local.seed);
      read_if(entry, "confidence", local.confidence);
      read_if(entry, "overshoot", local.overshoot);
      auto spec = spec_from(entry["attack"].as<std::string>(), local);
      if (entry["eps"]) {
        spec.eps = entry["eps"].IsSequence() ? entry["eps"].as<std::vector<float>>()
                                             : std::vector<float>{entry["eps"].as<float>()};
      }
      plan.push_back(std::move(spec));
    }
    return plan;
  } catch (const YAML::Exception& error) {
    throw core::Error("the attack plan " + flags.plan + " is malformed at line " + std::to_string(error.mark.line + 1) + ": " +
                          error.msg,
                      "see examples/fashion-mnist/attack_plan.yaml for the format");
  }
}

std::string eps_string(float eps) {
  std::ostringstream out;
  out << eps;
  return out.str();
}

std::string percent(double fraction) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1) << 100 * fraction << "%";
  return out.str();
}

void print_table(std::ostream& out, const attacks::EvasionReport& report, const models::Classifier& model,
                 const std::string& data) {
  out << "model " << model.info().source << " (" << model.info().backend << ", " << model.num_classes() << " classes)\n";
  out << "data  " << data << "\n";
  out << "clean accuracy " << percent(report.clean_accuracy) << " on " << report.samples << " samples\n\n";
  out << std::left << std::setw(12) << "attack" << std::setw(6) << "norm" << std::setw(8) << "eps" << std::right
      << std::setw(10) << "robust" << std::setw(10) << "success" << std::setw(10) << "med L2" << std::setw(10)
      << "med Linf" << std::setw(12) << "queries" << std::setw(10) << "seconds" << "\n";
  for (const auto& r : report.results) {
    std::ostringstream eps;
    if (r.eps) eps << *r.eps;
    else eps << "-";
    out << std::left << std::setw(12) << (r.attack + (r.targeted ? "*" : "")) << std::setw(6) << attacks::to_string(r.norm)
        << std::setw(8) << eps.str() << std::right << std::setw(10) << percent(r.robust_accuracy) << std::setw(10)
        << percent(r.success_rate) << std::setw(10) << std::fixed << std::setprecision(3) << r.median_l2 << std::setw(10)
        << r.median_linf << std::setw(12) << r.queries << std::setw(10) << std::setprecision(2) << r.seconds << "\n";
  }
  out << "\n";
}

int run_attack(AttackFlags& flags) {
  std::vector<attacks::AttackSpec> plan;
  if (!flags.plan.empty()) plan = load_plan(flags);
  if (!flags.attacks.empty()) {
    std::stringstream in(flags.attacks);
    std::string name;
    while (std::getline(in, name, ',')) plan.push_back(spec_from(name, flags));
  }
  if (plan.empty()) throw core::Error("no attack was asked for", "give --attack pgd (or fgsm, apgd-ce, apgd-dlr, cw, deepfool, square, hopskipjump) or --plan FILE");
  if (flags.model.model.empty()) throw core::Error("no model was given", "give --model FILE, or model: in the plan");

  auto range = parse_floats(flags.data.range, "--range");
  if (range.size() != 2 || !(range[0] < range[1]))
    throw core::Error("--range '" + flags.data.range + "' is not LO,HI with LO < HI", "for pixels scaled to [0,1] use --range 0,1");
  auto dataset = load_data(flags.data);
  auto loaded = load_model(flags.model, dataset.sample_shape);
  auto& model = loaded.view();

  const bool show = progress_wanted(flags.common);
  attacks::RunnerOptions options;
  options.bounds = {range[0], range[1]};
  options.batch = flags.model.batch;
  options.min_robust_accuracy = flags.min_robust_accuracy;
  options.output_dir = flags.output_dir;
  options.write_images = !flags.no_images && dataset.is_image;
  options.sample_shape = dataset.sample_shape;
  options.model_label = flags.model.model;
  StageProgress progress(show);
  options.progress = [&](const std::string& label, std::size_t done, std::size_t total) { progress.update(label, done, total); };
  auto report = attacks::run_evasion_plan(model, dataset.x, dataset.y, plan, options);
  progress.finish();

  nlohmann::json extra;
  extra["model"] = {{"source", model.info().source}, {"backend", model.info().backend},
                    {"classes", model.num_classes()}, {"input_shape", model.info().input_shape},
                    {"scores", model.info().scores == models::ScoreKind::Logits ? "logits" : "probabilities"}};
  extra["data"] = {{"source", flags.data.data.empty() ? models::kFashionMnistDir : flags.data.data},
                   {"description", dataset.description}, {"samples", dataset.size()}};
  extra["clean_accuracy"] = report.clean_accuracy;
  extra["clean_seconds"] = report.clean_seconds;
  extra["range"] = range;
  extra["min_robust_accuracy"] = flags.min_robust_accuracy;
  nlohmann::json results = nlohmann::json::array();
  for (const auto& r : report.results) {
    nlohmann::json item = {{"attack", r.attack}, {"norm", attacks::to_string(r.norm)},
                           {"eps", r.eps ? nlohmann::json(std::stod(eps_string(*r.eps))) : nlohmann::json(nullptr)},
                           {"targeted", r.targeted}, {"samples", r.samples}, {"attacked", r.attacked},
                           {"successes", r.successes}, {"robust_accuracy", r.robust_accuracy},
                           {"success_rate", r.success_rate}, {"queries", r.queries},
                           {"gradient_queries", r.gradient_queries}, {"queries_per_success", r.queries_per_success},
                           {"perturbation", {{"mean_l2", r.mean_l2}, {"median_l2", r.median_l2},
                                             {"mean_linf", r.mean_linf}, {"median_linf", r.median_linf}}},
                           {"seconds", r.seconds}};
    if (!r.adversarial_path.empty()) item["adversarial_examples"] = r.adversarial_path;
    if (!r.grid_path.empty()) item["image_grid"] = r.grid_path;
    results.push_back(std::move(item));
  }
  // The model's own cost for the same gradient passes, to weigh the attacks' overhead against.
  if (flags.reference && loaded.trainable && !loaded.normalized) {
    std::vector<int> labels(dataset.y.begin(), dataset.y.end());
    const double seconds = loaded.trainable->time_forward_backward(dataset.x, labels, 3);
    const double per_sample_pass = seconds / (3.0 * static_cast<double>(dataset.size()));
    for (std::size_t i = 0; i < report.results.size(); ++i) {
      const auto& r = report.results[i];
      if (r.gradient_queries == 0) continue;
      const double reference = per_sample_pass * static_cast<double>(r.gradient_queries);
      results[i]["reference_seconds"] = reference;
      results[i]["overhead"] = reference > 0 ? r.seconds / reference : 0;
    }
  }
  extra["results"] = results;

  if (table_wanted(flags.common)) print_table(std::cout, report, model, dataset.description);
  return finish_results(flags.common, "attack", {flags.model.model}, report.findings, extra.dump());
}

}  // namespace

void register_attack_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<AttackFlags>();
  auto* command = app.add_subcommand(
      "attack", "Evasion robustness test: FGSM, PGD, APGD, C&W, DeepFool, Square, HopSkipJump on a model and data set");
  add_model_flags(*command, flags->model);
  command->get_option("--model")->required(false);
  add_data_flags(*command, flags->data);
  command->add_option("--plan", flags->plan, "YAML/JSON attack plan: several attacks sharing one clean pass");
  command->add_option("--attack,-a", flags->attacks,
                      "fgsm, pgd, apgd-ce, apgd-dlr, cw, deepfool, square, hopskipjump (comma-separated for several)");
  command->add_option("--norm", flags->norm, "linf or l2");
  command->add_option("--eps", flags->eps, "budgets, e.g. 0.03,0.1,0.2 (thresholds for cw, deepfool, hopskipjump)");
  command->add_option("--steps", flags->steps, "iterations (pgd 40, apgd 100, cw 100, deepfool 50, hopskipjump 64)");
  command->add_option("--step-size", flags->step_size, "pgd step size (default 2.5 * eps / steps)");
  command->add_flag("--random-start", flags->random_start, "pgd: start from a random point in the ball");
  command->add_option("--restarts", flags->restarts, "pgd/apgd restarts");
  command->add_option("--max-queries", flags->max_queries, "square/hopskipjump query budget per sample (default 5000)");
  command->add_option("--targeted", flags->targeted, "random (a random other class per sample) or a class index");
  command->add_option("--seed", flags->seed, "random seed");
  command->add_option("--confidence", flags->confidence, "cw: margin kappa");
  command->add_option("--overshoot", flags->overshoot, "deepfool: overshoot");
  command->add_option("--min-robust-accuracy", flags->min_robust_accuracy,
                      "a result below this robust accuracy is a finding (default 0.5)");
  command->add_option("--output-dir", flags->output_dir, "write adversarial examples (.npy) and PNG grids here");
  command->add_flag("--no-images", flags->no_images, "do not write PNG grids");
  command->add_flag("--reference", flags->reference,
                    "also time the model's own forward+backward for the same gradient passes (TorchScript)");
  add_common_options(*command, flags->common);
  command->callback([flags, command, &exit_code] {
    for (const char* flag : {"--split", "--limit", "--range", "--min-robust-accuracy"})
      if (command->count(flag) > 0) flags->given.insert(flag);
    exit_code = run_attack(*flags);
  });
}

}  // namespace aegis::cli
