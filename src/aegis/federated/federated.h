// Federated training: an aggregator (`aegis federated serve`) and participants (`aegis federated
// join`) that train one LibTorch model on data that never leaves its owners, over HTTPS with mutual
// TLS. Rounds with client sampling and deadlines; FedAvg or FedProx; secure aggregation
// (secure_aggregation.h) so that the aggregator sees only the sum; client-level differential
// privacy and robust aggregation against poisoned participants (aggregation.h).
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "aegis/core/finding.h"
#include "aegis/federated/aggregation.h"

namespace aegis::federated {

// What `aegis federated serve --config fl.yaml` reads. Every key is optional except model.torchscript.
struct FederationConfig {
  std::filesystem::path config_dir;        // relative paths in the file are taken from here
  std::filesystem::path pki_dir = "fl-pki";  // made by `aegis federated init`
  std::string listen_address = "127.0.0.1";
  std::uint16_t listen_port = 8443;
  std::filesystem::path state_dir = "fl-state";  // global model and round state: survives a restart

  std::filesystem::path model;             // TorchScript file: the architecture and initial weights
  std::vector<std::int64_t> input_shape;   // one sample, e.g. {1, 28, 28}

  std::uint64_t rounds = 10;
  std::uint32_t participants_per_round = 10;  // client sampling: this many of those available
  std::uint32_t min_participants = 2;          // a round starts with at least this many available
  double join_timeout_s = 300;                 // how long to wait for min_participants
  double round_deadline_s = 300;               // a stage's deadline; stragglers after it are dropped
  std::uint64_t seed = 0;                      // client sampling

  // Told to participants; they train with it.
  std::string algorithm = "fedavg";  // fedavg | fedprox
  double proximal_mu = 0.01;         // fedprox
  std::uint32_t local_epochs = 1;
  std::uint32_t batch = 32;
  std::string optimizer = "sgd";
  double learning_rate = 0.05;
  double server_learning_rate = 1.0;  // global += server_learning_rate * aggregated delta

  bool secure_aggregation = false;
  double secure_threshold = 0.6;      // share of a round's participants whose shares recover the sum (t of n)
  double secure_clip = 1.0;           // fixed-point range of one coordinate of an update

  RobustOptions robust;
  bool differential_privacy = false;
  ClientDpOptions dp;                 // population and per_round are filled from the other settings

  std::filesystem::path evaluation_data;  // the aggregator's held-out set (e.g. Fashion-MNIST's test split)
  std::string evaluation_split = "test";
  std::size_t evaluation_limit = 0;
  int backdoor_target = -1;               // >= 0: also report the backdoor success rate with stamp_trigger()
  std::uint64_t population = 0;           // participants expected to exist (DP accounting); 0 = participants_per_round
};

// Reads and checks the YAML: unknown keys, types and ranges are refused with their line, and so are
// combinations that cannot work (secure aggregation with a robust rule that needs individual updates).
FederationConfig load_federation_config(const std::filesystem::path& path);
FederationConfig parse_federation_config(const std::string& yaml, const std::filesystem::path& config_dir,
                                         const std::string& source_name = "fl.yaml");

struct RoundRecord {
  std::uint64_t round = 0;
  std::vector<std::string> selected;
  std::vector<std::string> aggregated;   // whose updates entered the result (survivors, Krum's pick)
  std::vector<std::string> dropped;      // selected but missing at a deadline
  std::vector<std::string> rejected;     // invalid or outlying updates
  double seconds = 0;
  std::uint64_t bytes_received = 0;      // on the wire (TLS) during the round
  std::uint64_t bytes_sent = 0;
  std::optional<double> accuracy;        // of the global model after the round
  std::optional<double> backdoor_success;
  std::optional<double> epsilon;         // client-level DP spent so far
  double update_norm = 0;                // of the aggregated delta
};

struct FederationResult {
  std::vector<RoundRecord> rounds;
  std::vector<core::Finding> findings;
  std::filesystem::path model_path;      // the final global model (TorchScript)
  std::uint64_t resumed_from = 0;        // rounds already done when this run started
};

using LogLine = std::function<void(const std::string& line)>;

struct AggregatorRunOptions {
  LogLine log;                            // one line per event (stderr in the CLI)
  std::function<void(const RoundRecord&)> on_round;
  std::function<void(std::uint16_t port)> on_listening;  // once the listener is bound (port 0 picks one)
  std::atomic<bool>* stop = nullptr;      // set to end after the current stage
  // Test hook: every message body the aggregator receives from a participant, as received.
  std::function<void(const std::string& participant, const std::string& action, const std::string& body)> on_receive;
};

// Runs the aggregator until `rounds` rounds are done (resuming from state_dir), then serves
// "done" to participants for a short grace period. Throws core::Error on setup failures.
FederationResult run_aggregator(const FederationConfig& config, const AggregatorRunOptions& options);

// How a participant misbehaves in the poisoning experiments (none for an honest participant).
struct PoisonOptions {
  std::string kind;          // "" | "scale" | "sign-flip" | "backdoor" | "nan"
  double boost = 1.0;        // multiply the update (model replacement: about participants / server lr)
  int backdoor_target = 0;
  double backdoor_fraction = 0.5;  // share of local samples stamped and relabelled
};

struct ParticipantOptions {
  std::string aggregator_host = "127.0.0.1";
  std::uint16_t aggregator_port = 8443;
  std::filesystem::path ca_file, certificate_file, key_file;
  std::filesystem::path model;                // the same TorchScript file as the aggregator's (checked by hash)
  std::filesystem::path data;                 // local data (any models::load_dataset input)
  std::string data_split = "train";
  std::size_t data_limit = 0;
  // Optional: keep only this participant's part of a shared data set (simulations and experiments).
  std::uint32_t partition_index = 0, partition_count = 0;
  std::string partition_scheme = "dirichlet";
  double partition_alpha = 0.5;
  std::uint64_t partition_seed = 0;
  int threads = 1;                            // LibTorch threads
  PoisonOptions poison;
  double give_up_s = 600;                     // stop when the aggregator is unreachable this long
  std::uint64_t drop_at_round = 0;            // test hook: leave the federation in this round, after computing the answer to...
  std::string drop_at_stage;                  // "train" | "share" | "masked" | "unmask"
  // Test hook: each update as computed (after any poisoning), before it is masked or sent.
  std::function<void(std::uint64_t round, std::span<const float> delta)> on_update;
  LogLine log;
};

struct ParticipantResult {
  std::uint64_t rounds_trained = 0;
  bool dropped = false;                       // left through the drop_at test hook
  std::uint64_t samples = 0;
  std::uint64_t bytes_sent = 0, bytes_received = 0;
};

ParticipantResult run_participant(const ParticipantOptions& options);

}  // namespace aegis::federated
