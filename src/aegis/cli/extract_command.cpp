#include "aegis/cli/extract_command.h"


#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>

#include "aegis/attacks/extraction/model_extraction.h"
#include "aegis/cli/common_options.h"
#include "aegis/cli/model_loading.h"
#include "aegis/cli/stage_progress.h"
#include "aegis/core/error.h"
#include "aegis/formats/npy.h"

namespace aegis::cli {
namespace {

struct ExtractFlags {
  CommonOptions common;
  ModelFlags model;
  DataFlags data;
  std::string surrogate;
  std::string test_data;
  std::string test_split = "test";
  std::size_t test_limit = 0;
  std::string budgets = "1000";
  std::string strategies = "natural";
  std::string recipe;
  int epochs = 10;
  std::size_t train_batch = 64;
  double learning_rate = 1e-3;
  std::string optimizer = "adam";
  std::string labels = "soft";
  std::string query_log;
  std::uint64_t seed = 0;
  std::set<std::string> given;
};

std::vector<std::size_t> parse_budgets(const std::string& text) {
  std::vector<std::size_t> budgets;
  for (float b : parse_floats(text, "--budget")) {
    if (!(b >= 1) || b != std::floor(b) || b > 1e8)
      throw core::Error("--budget '" + text + "' holds " + std::to_string(b) + ", not a whole number of queries",
                        "e.g. --budget 500,1000,5000");
    budgets.push_back(static_cast<std::size_t>(b));
  }
  return budgets;
}

void write_query_log(const std::string& folder, const attacks::QueryLog& log, const std::vector<std::int64_t>& shape,
                     std::size_t classes) {
  std::filesystem::create_directories(folder);
  const std::string name = "queries-" + attacks::to_string(log.strategy);
  const auto base = std::filesystem::path(folder) / name;
  const std::size_t n = log.source.size();
  std::vector<std::uint64_t> input_shape{n};
  for (auto d : shape) input_shape.push_back(static_cast<std::uint64_t>(d));
  formats::write_npy_f32(base.string() + ".npy", input_shape, log.inputs);
  std::ofstream out(base.string() + ".jsonl");
  if (!out) throw core::Error("cannot write " + base.string() + ".jsonl", "check that the --query-log folder is writable");
  for (std::size_t i = 0; i < n; ++i) {
    const float* p = log.probabilities.data() + i * classes;
    const auto label = std::max_element(p, p + classes) - p;
    nlohmann::json line = {{"seq", i},
                           {"ms", log.milliseconds[i]},
                           {"client", "aegis-extract/" + attacks::to_string(log.strategy)},
                           {"input", name + ".npy"},
                           {"row", i},
                           {"source_index", log.source[i]},
                           {"label", label},
                           {"confidence", p[label]}};
    out << line.dump() << "\n";
  }
  if (!out.flush()) throw core::Error("could not finish writing " + base.string() + ".jsonl", "check the disk space");
}

int run_extract(ExtractFlags& flags) {
  attacks::ExtractionOptions options;
  options.strategies = attacks::parse_extraction_strategies(flags.strategies);
  options.budgets = parse_budgets(flags.budgets);
  if (!flags.recipe.empty()) options.recipe = models::load_training_recipe(flags.recipe);
  // Flags given on the command line win over the recipe.
  if (flags.recipe.empty() || flags.given.count("--epochs")) options.recipe.epochs = flags.epochs;
  if (flags.recipe.empty() || flags.given.count("--train-batch")) options.recipe.batch = flags.train_batch;
  if (flags.recipe.empty() || flags.given.count("--lr")) options.recipe.learning_rate = flags.learning_rate;
  if (flags.recipe.empty() || flags.given.count("--optimizer")) options.recipe.optimizer = flags.optimizer;
  if (flags.recipe.empty() || flags.given.count("--seed")) options.recipe.seed = flags.seed;
  if (flags.labels != "soft" && flags.labels != "hard") throw core::Error("--answers must be soft or hard", "soft trains on the probabilities the API returns, hard on its top-1 labels");
  options.soft_labels = flags.labels == "soft";
  options.seed = flags.seed;
  auto range = parse_floats(flags.data.range, "--range");
  if (range.size() != 2 || !(range[0] < range[1])) throw core::Error("--range must be LO,HI", "e.g. --range 0,1");
  options.bounds = {range[0], range[1]};

  if (flags.data.split.empty()) flags.data.split = "train";
  const auto pool = load_data(flags.data);
  DataFlags test_flags = flags.data;
  if (!flags.test_data.empty()) test_flags.data = flags.test_data;
  test_flags.split = flags.test_split;
  test_flags.limit = flags.test_limit;
  test_flags.offset = 0;
  const auto test = load_data(test_flags);
  if (test.sample_shape != pool.sample_shape)
    throw core::Error("the test data's samples are of another shape than the thief data's", "give test data of the same kind");

  auto loaded = load_model(flags.model, pool.sample_shape);
  auto& target = loaded.view();
  std::string architecture = flags.surrogate;
  if (architecture.empty()) {
    if (!loaded.trainable || loaded.normalized)
      throw core::Error("no --surrogate architecture, and the target is not a TorchScript model to copy the architecture of",
                        "give --surrogate arch.pt: a TorchScript model of the architecture the attacker would train");
    architecture = flags.model.model;
  }
  ArchitectureFactory factory(architecture, flags.model, target.info().input_shape, options.recipe.optimizer_options());
  std::uint64_t made = 0;
  StageProgress progress(progress_wanted(flags.common));
  auto report = attacks::run_extraction(
      target, pool.x, pool.y, test.x, test.y, options,
      [&] { return factory.make(options.recipe.seed * 7919 + ++made); },
      [&](const std::string& stage, std::size_t done, std::size_t total) { progress.update(stage, done, total); });
  progress.finish();

  if (!flags.query_log.empty())
    for (const auto& log : report.logs)
      write_query_log(flags.query_log, log, target.info().input_shape, static_cast<std::size_t>(target.num_classes()));

  nlohmann::json results = nlohmann::json::array();
  for (const auto& r : report.results)
    results.push_back({{"strategy", attacks::to_string(r.strategy)},
                       {"budget", r.budget},
                       {"queries", r.queries},
                       {"fidelity", r.fidelity},
                       {"surrogate_accuracy", r.surrogate_accuracy},
                       {"target_accuracy", report.target_accuracy},
                       {"query_seconds", r.query_seconds},
                       {"train_seconds", r.train_seconds},
                       {"seconds", r.query_seconds + r.train_seconds}});
  nlohmann::json extra;
  extra["results"] = results;
  extra["target"] = {{"source", target.info().source}, {"backend", target.info().backend}, {"classes", target.num_classes()}};
  extra["surrogate"] = architecture;
  extra["labels"] = flags.labels;
  extra["thief_data"] = {{"description", pool.description}, {"records", pool.size()}};
  extra["test_records"] = report.test_records;
  extra["target_accuracy"] = report.target_accuracy;
  extra["recipe"] = {{"epochs", options.recipe.epochs}, {"batch", options.recipe.batch},
                     {"optimizer", options.recipe.optimizer}, {"learning_rate", options.recipe.learning_rate}};
  if (!flags.query_log.empty()) extra["query_log"] = flags.query_log;

  if (table_wanted(flags.common)) {
    std::cout << "target " << target.info().source << ": accuracy " << std::fixed << std::setprecision(1)
              << 100 * report.target_accuracy << "% on " << report.test_records << " held-out records\n\n"
              << std::left << std::setw(10) << "strategy" << std::right << std::setw(10) << "queries" << std::setw(10)
              << "fidelity" << std::setw(12) << "accuracy" << std::setw(12) << "query s" << std::setw(10) << "train s"
              << "\n";
    for (const auto& r : report.results)
      std::cout << std::left << std::setw(10) << attacks::to_string(r.strategy) << std::right << std::setw(10) << r.queries
                << std::setw(9) << 100 * r.fidelity << "%" << std::setw(11) << 100 * r.surrogate_accuracy << "%"
                << std::setw(12) << std::setprecision(2) << r.query_seconds << std::setw(10) << r.train_seconds
                << std::setprecision(1) << "\n";
    if (!flags.query_log.empty()) std::cout << "\nquery log: " << flags.query_log << "\n";
    std::cout << "\n";
  }
  return finish_results(flags.common, "extract", {flags.model.model}, report.findings, extra.dump());
}

}  // namespace

void register_extract_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ExtractFlags>();
  auto* command = app.add_subcommand(
      "extract", "Model extraction audit: steal a surrogate through the prediction API within a query budget");
  add_model_flags(*command, flags->model, "--target,-t");
  add_data_flags(*command, flags->data);
  flags->data.split = "train";
  command->add_option("--surrogate", flags->surrogate,
                      "TorchScript architecture the attacker trains (re-initialised; default: the target's, if TorchScript)");
  command->add_option("--test-data", flags->test_data, "held-out data for fidelity and accuracy (default: --data)");
  command->add_option("--test-split", flags->test_split, "split of the held-out data (default test)");
  command->add_option("--test-limit", flags->test_limit, "held-out records to use (0 = all)");
  command->add_option("--budget", flags->budgets, "query budgets, ascending (default 1000), e.g. 500,1000,5000");
  command->add_option("--strategy", flags->strategies, "random, natural, adaptive or all (default natural)");
  command->add_option("--recipe", flags->recipe, "YAML training recipe for the surrogate (flags below override it)");
  command->add_option("--epochs", flags->epochs, "surrogate training epochs (default 10)");
  command->add_option("--train-batch", flags->train_batch, "surrogate training batch (default 64)");
  command->add_option("--lr", flags->learning_rate, "surrogate learning rate (default 1e-3)");
  command->add_option("--optimizer", flags->optimizer, "adam or sgd");
  command->add_option("--answers", flags->labels, "soft (train on the probabilities the target returns) or hard (its top-1 labels only)");
  command->add_option("--query-log", flags->query_log,
                      "folder for the queries sent: queries-STRATEGY.npy (inputs) and .jsonl (one line per query)");
  command->add_option("--seed", flags->seed, "random seed");
  add_common_options(*command, flags->common);
  command->callback([flags, command, &exit_code] {
    for (const char* flag : {"--epochs", "--train-batch", "--lr", "--optimizer", "--seed"})
      if (command->count(flag) > 0) flags->given.insert(flag);
    exit_code = run_extract(*flags);
  });
}

}  // namespace aegis::cli
