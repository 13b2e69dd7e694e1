#include "aegis/cli/federated_command.h"

#include <csignal>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "aegis/cli/common_options.h"
#include "aegis/core/error.h"
#include "aegis/federated/federated.h"
#include "aegis/federated/pki.h"

namespace aegis::cli {
namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop = true; }

struct InitFlags {
  std::string dir = "fl-pki";
  std::vector<std::string> participants;
  std::uint32_t count = 0;
  std::vector<std::string> names = {"localhost", "127.0.0.1"};
  int days = 365;
  bool overwrite = false;
  std::string add;
};

struct ServeFlags {
  std::string config;
  std::string listen;
  CommonOptions common;
};

struct JoinFlags {
  std::string aggregator = "127.0.0.1:8443";
  std::string pki;
  std::string id;
  std::string ca, certificate, key;
  std::string model;
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string split = "train";
  std::size_t limit = 0;
  std::string partition;  // I/N
  std::string scheme = "dirichlet";
  double alpha = 0.5;
  std::uint64_t seed = 0;
  int threads = 1;
  std::string poison;
  double boost = 1.0;
  int backdoor_target = 0;
  double backdoor_fraction = 0.5;
  std::uint64_t drop_at_round = 0;
  std::string drop_at_stage;
  bool quiet = false;
};

void log_line(const std::string& line) { std::cerr << line << std::endl; }

int run_init(const InitFlags& flags) {
  if (!flags.add.empty()) {
    federated::issue_participant_certificate(federated::FederationPki{flags.dir}, flags.add, flags.days);
    std::cout << "issued a certificate for " << flags.add << " in " << flags.dir << "/participants/\n";
    return 0;
  }
  federated::PkiOptions options;
  options.participants = flags.participants;
  for (std::uint32_t i = 0; i < flags.count; ++i) options.participants.push_back("participant-" + std::to_string(i));
  if (options.participants.empty())
    throw core::Error("no participants named", "give --participants N (participant-0..N-1) or --participant ID for each");
  options.aggregator_names = flags.names;
  options.days = flags.days;
  options.overwrite = flags.overwrite;
  const auto pki = federated::create_federation_pki(flags.dir, options);
  std::cout << "federation CA and certificates written to " << pki.dir.string() << ":\n"
            << "  " << pki.ca_certificate().string() << "  (trust anchor: give it to everyone)\n"
            << "  " << pki.aggregator_certificate().string() << " + key  (the aggregator)\n"
            << "  " << options.participants.size() << " participant certificates + keys in " << (pki.dir / "participants").string()
            << "  (give each participant only its own)\n"
            << "keep ca.key offline; `aegis federated init --dir " << flags.dir << " --add ID` issues another participant.\n";
  return 0;
}

std::string number(double v) {
  std::ostringstream out;
  out.precision(4);
  out << v;
  return out.str();
}

int run_serve(ServeFlags& flags) {
  auto config = federated::load_federation_config(flags.config);
  if (!flags.listen.empty()) {
    const auto colon = flags.listen.rfind(':');
    if (colon == std::string::npos) throw core::Error("--listen takes ADDRESS:PORT, not '" + flags.listen + "'", "e.g. --listen 127.0.0.1:8443");
    config.listen_address = flags.listen.substr(0, colon);
    config.listen_port = static_cast<std::uint16_t>(std::stoul(flags.listen.substr(colon + 1)));
  }
  std::signal(SIGINT, on_signal);
  std::signal(SIGTERM, on_signal);
  federated::AggregatorRunOptions options;
  const bool quiet = flags.common.quiet;
  options.log = [quiet](const std::string& line) {
    if (!quiet) log_line(line);
  };
  options.stop = &g_stop;
  const auto result = federated::run_aggregator(config, options);

  nlohmann::json rounds = nlohmann::json::array();
  for (const auto& r : result.rounds) {
    nlohmann::json j = {{"round", r.round},       {"selected", r.selected.size()}, {"aggregated", r.aggregated},
                        {"dropped", r.dropped},   {"rejected", r.rejected},        {"seconds", r.seconds},
                        {"bytes_received", r.bytes_received}, {"bytes_sent", r.bytes_sent}, {"update_norm", r.update_norm}};
    if (r.accuracy) j["accuracy"] = *r.accuracy;
    if (r.backdoor_success) j["backdoor_success"] = *r.backdoor_success;
    if (r.epsilon) j["epsilon"] = *r.epsilon;
    rounds.push_back(j);
  }
  nlohmann::json extra = {{"rounds", rounds},
                          {"model", result.model_path.string()},
                          {"resumed_from", result.resumed_from},
                          {"secure_aggregation", config.secure_aggregation},
                          {"aggregation", std::string(federated::to_string(config.robust.rule))},
                          {"differential_privacy", config.differential_privacy}};
  if (!result.rounds.empty()) {
    const auto& last = result.rounds.back();
    if (last.accuracy) extra["final_accuracy"] = *last.accuracy;
    if (last.backdoor_success) extra["final_backdoor_success"] = *last.backdoor_success;
    if (last.epsilon) extra["epsilon"] = *last.epsilon, extra["delta"] = config.dp.delta;
  }
  if (table_wanted(flags.common)) {
    std::printf("%-6s %-9s %-8s %-8s %-9s %-10s %-9s %s\n", "ROUND", "UPDATES", "DROPPED", "REJECTED", "SECONDS", "ACCURACY", "BACKDOOR",
                "EPSILON");
    for (const auto& r : result.rounds)
      std::printf("%-6llu %-9zu %-8zu %-8zu %-9s %-10s %-9s %s\n", static_cast<unsigned long long>(r.round), r.aggregated.size(),
                  r.dropped.size(), r.rejected.size(), number(r.seconds).c_str(), r.accuracy ? number(*r.accuracy).c_str() : "-",
                  r.backdoor_success ? number(*r.backdoor_success).c_str() : "-", r.epsilon ? number(*r.epsilon).c_str() : "-");
    std::printf("global model: %s\n\n", result.model_path.string().c_str());
  }
  return finish_results(flags.common, "federated serve", {flags.config}, result.findings, extra.dump());
}

std::pair<std::string, std::uint16_t> split_host_port(const std::string& text) {
  auto colon = text.rfind(':');
  std::string host = text, port = "8443";
  if (colon != std::string::npos) {
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  if (host.rfind("https://", 0) == 0) host = host.substr(8);
  if (port.empty() || port.find_first_not_of("0123456789") != std::string::npos || port.size() > 5 || std::stoul(port) > 65535)
    throw core::Error("--aggregator takes HOST:PORT, not '" + text + "'", "e.g. --aggregator 127.0.0.1:8443");
  return {host, static_cast<std::uint16_t>(std::stoul(port))};
}

int run_join(const JoinFlags& flags) {
  federated::ParticipantOptions options;
  std::tie(options.aggregator_host, options.aggregator_port) = split_host_port(flags.aggregator);
  if (!flags.pki.empty()) {
    if (flags.id.empty()) throw core::Error("--pki needs --id (which participant's certificate to use)", "e.g. --pki fl-pki --id participant-3");
    federated::FederationPki pki{flags.pki};
    options.ca_file = pki.ca_certificate();
    options.certificate_file = pki.participant_certificate(flags.id);
    options.key_file = pki.participant_key(flags.id);
  }
  if (!flags.ca.empty()) options.ca_file = flags.ca;
  if (!flags.certificate.empty()) options.certificate_file = flags.certificate;
  if (!flags.key.empty()) options.key_file = flags.key;
  if (options.ca_file.empty() || options.certificate_file.empty() || options.key_file.empty())
    throw core::Error("no certificate to join with", "give --pki DIR --id ID, or --ca, --cert and --key");
  options.model = flags.model;
  options.data = flags.data;
  options.data_split = flags.split;
  options.data_limit = flags.limit;
  if (!flags.partition.empty()) {
    unsigned index = 0, count = 0;
    char slash = 0;
    std::istringstream in(flags.partition);
    if (!(in >> index >> slash >> count) || slash != '/' || count == 0 || index >= count)
      throw core::Error("--partition takes I/N with 0 <= I < N, not '" + flags.partition + "'", "e.g. --partition 3/10");
    options.partition_index = index;
    options.partition_count = count;
  }
  options.partition_scheme = flags.scheme;
  options.partition_alpha = flags.alpha;
  options.partition_seed = flags.seed;
  options.threads = flags.threads;
  options.poison.kind = flags.poison;
  options.poison.boost = flags.boost;
  options.poison.backdoor_target = flags.backdoor_target;
  options.poison.backdoor_fraction = flags.backdoor_fraction;
  options.drop_at_round = flags.drop_at_round;
  options.drop_at_stage = flags.drop_at_stage;
  const bool quiet = flags.quiet;
  options.log = [quiet](const std::string& line) {
    if (!quiet) log_line(line);
  };
  const auto result = federated::run_participant(options);
  if (!quiet)
    std::cerr << "trained " << result.rounds_trained << " rounds; " << result.bytes_sent << " bytes sent, " << result.bytes_received
              << " received\n";
  return result.dropped ? 3 : 0;
}

}  // namespace

void register_federated_command(CLI::App& app, int& exit_code) {
  auto* command = app.add_subcommand("federated", "Federated training over mutual TLS: secure aggregation, client-level DP, robust "
                                                   "aggregation against poisoned participants");
  command->require_subcommand(1);

  auto init = std::make_shared<InitFlags>();
  auto* init_command = command->add_subcommand("init", "Create the federation's CA, the aggregator's certificate and one per participant");
  init_command->add_option("--dir", init->dir, "folder for the certificates and keys (default fl-pki)");
  init_command->add_option("--participants", init->count, "N participants named participant-0..N-1");
  init_command->add_option("--participant", init->participants, "a participant id (repeatable)");
  init_command->add_option("--aggregator-name", init->names, "DNS names / IPs in the aggregator's certificate (default localhost 127.0.0.1)");
  init_command->add_option("--days", init->days, "validity (default 365)");
  init_command->add_flag("--overwrite", init->overwrite, "replace an existing CA (every old certificate stops working)");
  init_command->add_option("--add", init->add, "issue a certificate for one more participant with the existing CA");
  init_command->callback([init, &exit_code] { exit_code = run_init(*init); });

  auto serve = std::make_shared<ServeFlags>();
  auto* serve_command = command->add_subcommand("serve", "Run the aggregator: rounds, sampling, deadlines, aggregation; resumes after a restart");
  serve_command->add_option("--config", serve->config, "federation YAML (see examples/federated/fl.yaml)")->required();
  serve_command->add_option("--listen", serve->listen, "ADDRESS:PORT, overriding the config's federation.listen");
  add_common_options(*serve_command, serve->common);
  serve_command->callback([serve, &exit_code] { exit_code = run_serve(*serve); });

  auto join = std::make_shared<JoinFlags>();
  auto* join_command = command->add_subcommand("join", "Run a participant: train the global model on local data, send only the update");
  join_command->add_option("--aggregator", join->aggregator, "HOST:PORT of the aggregator (default 127.0.0.1:8443)");
  join_command->add_option("--pki", join->pki, "the folder `aegis federated init` wrote (with --id)");
  join_command->add_option("--id", join->id, "this participant's id (its certificate in PKI/participants/)");
  join_command->add_option("--ca", join->ca, "the federation CA certificate (instead of --pki)");
  join_command->add_option("--cert", join->certificate, "this participant's certificate (instead of --pki)");
  join_command->add_option("--key", join->key, "this participant's private key (instead of --pki)");
  join_command->add_option("--model", join->model, "the federation's TorchScript model file (checked against the aggregator's)")->required();
  join_command->add_option("--data", join->data, "local training data (IDX folder, .npy/.npz, image folder, CSV; default Fashion-MNIST)");
  join_command->add_option("--split", join->split, "train or test (IDX and image folders; default train)");
  join_command->add_option("--limit", join->limit, "use at most this many samples");
  join_command->add_option("--partition", join->partition, "I/N: keep only part I of N of the data (simulations)");
  join_command->add_option("--partition-scheme", join->scheme, "dirichlet (non-IID), shards or iid")
      ->check(CLI::IsMember({"dirichlet", "shards", "iid"}));
  join_command->add_option("--alpha", join->alpha, "Dirichlet concentration: smaller is more skewed (default 0.5)");
  join_command->add_option("--partition-seed", join->seed, "the same on every participant");
  join_command->add_option("--threads", join->threads, "LibTorch threads (default 1)");
  join_command->add_option("--poison", join->poison, "misbehave, for testing defences: scale, sign-flip, backdoor, nan")
      ->check(CLI::IsMember({"", "scale", "sign-flip", "backdoor", "nan"}));
  join_command->add_option("--boost", join->boost, "multiply the poisoned update (model replacement)");
  join_command->add_option("--backdoor-target", join->backdoor_target, "label the trigger maps to (default 0)");
  join_command->add_option("--backdoor-fraction", join->backdoor_fraction, "share of local samples stamped (default 0.5)");
  join_command->add_option("--drop-at-round", join->drop_at_round, "testing: exit in this round ...")->group("");
  join_command->add_option("--drop-at-stage", join->drop_at_stage, "... at this stage (train, share, masked, unmask)")->group("");
  join_command->add_flag("--quiet,-q", join->quiet, "no log lines");
  join_command->callback([join, &exit_code] { exit_code = run_join(*join); });
}

}  // namespace aegis::cli
