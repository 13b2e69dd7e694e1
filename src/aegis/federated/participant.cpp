// A participant: keeps its data, asks the aggregator what to do, trains the global model locally and
// sends back only its update — masked, when the federation uses secure aggregation.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>
#include <thread>

#include "aegis/core/error.h"
#include "aegis/federated/federated.h"
#include "aegis/federated/pki.h"
#include "aegis/federated/secure_aggregation.h"
#include "aegis/federated/transport.h"
#include "aegis/federated/wire.h"
#include "aegis/models/dataset.h"
#include "aegis/models/torchscript_classifier.h"
#include "aegis/models/training.h"

namespace aegis::federated {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

std::string header(const Response& response, const char* name) {
  auto it = response.headers.find(name);
  return it == response.headers.end() ? std::string() : it->second;
}

std::string error_of(const Response& response) {
  try {
    return json::parse(response.body).value("error", response.body);
  } catch (const json::exception&) {
    return response.body.substr(0, 200);
  }
}

class Participant {
 public:
  explicit Participant(const ParticipantOptions& options) : options_(options) {}

  ParticipantResult run() {
    load_data();
    identity_ = certificate_common_name(options_.certificate_file);
    client_ = std::make_unique<MtlsClient>(
        TlsIdentity{options_.ca_file.string(), options_.certificate_file.string(), options_.key_file.string()},
        options_.aggregator_host, options_.aggregator_port, ClientOptions{60000, 3, 500});
    say_hello();
    models::TorchScriptOptions model_options;
    model_options.input_shape = data_.sample_shape;
    model_options.threads = options_.threads;
    model_options.batch = std::max<std::size_t>(1, settings_.value("batch", 32));
    models::TrainingOptions training;
    training.optimizer = settings_.value("optimizer", "sgd");
    training.learning_rate = settings_.value("learning_rate", 0.05);
    model_ = models::load_torchscript(options_.model.string(), model_options, training);
    if (model_->parameter_vector().size() != settings_.value("parameters", std::size_t{0}))
      throw core::Error("the local model has " + std::to_string(model_->parameter_vector().size()) +
                            " parameters, the federation's " + std::to_string(settings_.value("parameters", 0)),
                        "use the same TorchScript file as the aggregator");
    result_.samples = data_.size();
    loop();
    result_.bytes_sent = client_->bytes_sent();
    result_.bytes_received = client_->bytes_received();
    return result_;
  }

 private:
  void log(const std::string& line) const {
    if (options_.log) options_.log(line);
  }

  void load_data() {
    models::DataOptions data_options;
    data_options.split = options_.data_split;
    data_options.limit = options_.data_limit;
    data_ = models::load_dataset(options_.data.string(), data_options);
    if (options_.partition_count > 0) {
      if (options_.partition_index >= options_.partition_count)
        throw core::Error("partition " + std::to_string(options_.partition_index) + " of " + std::to_string(options_.partition_count) +
                              " does not exist",
                          "number the partitions 0.." + std::to_string(options_.partition_count - 1));
      const auto parts = partition_indices(data_.y, options_.partition_count, options_.partition_scheme, options_.partition_alpha,
                                           options_.partition_seed);
      const auto& mine = parts[options_.partition_index];
      models::Dataset part;
      part.sample_shape = data_.sample_shape;
      part.class_names = data_.class_names;
      part.is_image = data_.is_image;
      const auto size = data_.sample_size();
      part.x.reserve(mine.size() * size);
      for (auto i : mine) {
        const auto sample = data_.sample(i);
        part.x.insert(part.x.end(), sample.begin(), sample.end());
        part.y.push_back(data_.y[i]);
      }
      data_ = std::move(part);
    }
    if (data_.size() == 0) throw core::Error("no local samples to train on", "check --data and --partition");
    if (options_.poison.kind == "backdoor") {
      // The attacker's data: part of its samples carry the trigger and the target label.
      std::mt19937_64 rng(options_.partition_seed * 31 + options_.partition_index);
      std::vector<std::size_t> order(data_.size());
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng);
      const auto count = static_cast<std::size_t>(options_.poison.backdoor_fraction * static_cast<double>(data_.size()));
      const auto size = data_.sample_size();
      for (std::size_t k = 0; k < count; ++k) {
        const auto i = order[k];
        stamp_trigger(std::span<float>(data_.x).subspan(i * size, size), data_.sample_shape);
        data_.y[i] = options_.poison.backdoor_target;
      }
    }
  }

  void say_hello() {
    const json hello = {{"samples", data_.size()}, {"model_sha256", wire::model_sha256(options_.model)}};
    const auto response = call("POST", wire::kHello, hello.dump(), "application/json");
    if (response.status != 200)
      throw core::Error("the aggregator refused to admit " + identity_ + ": " + error_of(response),
                        response.status == 409 ? "use the same model file as the aggregator" : "check the aggregator's log");
    settings_ = json::parse(response.body);
    log(identity_ + " joined with " + std::to_string(data_.size()) + " local samples (" + settings_.value("algorithm", "fedavg") +
        (settings_.value("secure_aggregation", false) ? ", secure aggregation" : "") + ")");
  }

  // A request that survives an aggregator restart: connection failures are retried until give_up_s.
  Response call(const std::string& method, const std::string& target, const std::string& body, const std::string& type,
                const std::map<std::string, std::string>& headers = {}) {
    const auto give_up = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options_.give_up_s));
    while (true) {
      try {
        return client_->request(method, target, body, type, headers);
      } catch (const core::Error& error) {
        if (Clock::now() > give_up) throw;
        log(identity_ + ": the aggregator is unreachable (" + error.what() + "); retrying");
        std::this_thread::sleep_for(std::chrono::seconds(1));
      }
    }
  }

  bool drops_out(std::uint64_t round, const std::string& action) {
    if (options_.drop_at_round != round || options_.drop_at_stage != action) return false;
    log(identity_ + " drops out of round " + std::to_string(round) + " at stage " + action + " (test hook)");
    result_.dropped = true;
    return true;
  }

  void loop() {
    while (true) {
      auto task = call("GET", wire::kTask, {}, "application/octet-stream");
      if (task.status == 409) {  // the aggregator restarted and forgot us
        say_hello();
        continue;
      }
      if (task.status != 200) throw core::Error("the aggregator answered " + std::to_string(task.status) + ": " + error_of(task), "check its log");
      const auto action = header(task, wire::kAction);
      if (action == "done") {
        log(identity_ + ": training finished after " + std::to_string(result_.rounds_trained) + " rounds");
        return;
      }
      if (action == "wait" || action.empty()) continue;
      const auto round = std::strtoull(header(task, wire::kRound).c_str(), nullptr, 10);
      round_id_ = header(task, wire::kRoundId);
      try {
        std::string answer;
        if (action == "train") {
          answer = train(task, round);
        } else if (!secagg_ || secagg_round_ != round) {
          log(identity_ + ": asked for '" + action + "' in round " + std::to_string(round) + " without its keys (restarted?); skipping");
          continue;
        } else if (action == "share") {
          answer = wire::to_string_view_bytes(secagg_->share_keys(KeyDirectory::decode(wire::as_bytes(task.body))).encode());
        } else if (action == "masked") {
          answer = wire::to_string_view_bytes(secagg_->masked_input(ShareDelivery::decode(wire::as_bytes(task.body)), encoded_).encode());
        } else if (action == "unmask") {
          answer = wire::to_string_view_bytes(secagg_->unmask(UnmaskRequest::decode(wire::as_bytes(task.body))).encode());
        } else {
          log(identity_ + ": unknown task '" + action + "'; ignored");
          continue;
        }
        if (drops_out(round, action)) return;
        std::map<std::string, std::string> headers = {{wire::kAction, action}, {wire::kRoundId, round_id_}};
        if (action == "train") headers[wire::kSamples] = std::to_string(data_.size());
        const auto reply = call("POST", wire::kSubmit, answer, "application/octet-stream", headers);
        if (reply.status != 200) log(identity_ + ": the aggregator refused its " + action + " message: " + error_of(reply));
      } catch (const core::Error& error) {
        // A malformed or hostile task is refused, not obeyed; the round goes on without us.
        log(identity_ + ": refused the '" + action + "' task of round " + std::to_string(round) + ": " + error.what());
      }
    }
  }

  std::string train(const Response& task, std::uint64_t round) {
    std::vector<float> global;
    if (!wire::bytes_to_floats(task.body, global) || global.size() != settings_.value("parameters", std::size_t{0}))
      throw core::Error("the global model sent has " + std::to_string(task.body.size()) + " bytes, not " +
                            std::to_string(settings_.value("parameters", 0) * 4),
                        "");
    for (float v : global)
      if (!std::isfinite(v)) throw core::Error("the global model sent holds non-finite values", "");
    model_->set_parameter_vector(global);
    model_->reset_optimizer();
    model_->set_proximal_term(global, settings_.value("algorithm", "fedavg") == "fedprox" ? settings_.value("proximal_mu", 0.0) : 0.0);
    models::TrainingRecipe recipe;
    recipe.epochs = settings_.value("local_epochs", 1);
    recipe.batch = settings_.value("batch", 32);
    recipe.optimizer = settings_.value("optimizer", "sgd");
    recipe.learning_rate = settings_.value("learning_rate", 0.05);
    recipe.seed = round * 1000 + options_.partition_index;
    const auto report = models::fit(*model_, data_.x, data_.y, recipe);
    model_->set_proximal_term({}, 0);
    auto local = model_->parameter_vector();
    std::vector<float> delta(local.size());
    for (std::size_t i = 0; i < local.size(); ++i) delta[i] = local[i] - global[i];
    poison(delta);
    if (options_.on_update) options_.on_update(round, delta);
    ++result_.rounds_trained;
    log(identity_ + ": round " + std::to_string(round) + " trained on " + std::to_string(data_.size()) + " samples, loss " +
        std::to_string(report.final_loss));

    if (!settings_.value("secure_aggregation", false)) return wire::floats_to_bytes(delta);
    // Masked updates cannot be checked by the aggregator: an honest participant clips its own.
    const double clip = settings_.value("clip_norm", 0.0);
    if (clip > 0) clip_to_norm(delta, clip);
    const auto selected = static_cast<std::uint32_t>(std::strtoul(header(task, wire::kSelected).c_str(), nullptr, 10));
    const auto threshold = static_cast<std::uint32_t>(std::strtoul(header(task, wire::kThreshold).c_str(), nullptr, 10));
    FixedPoint fixed_point{settings_.value("secure_clip", 1.0), std::max<std::uint32_t>(1, selected)};
    encoded_.assign(delta.size(), 0);
    if (options_.poison.kind == "nan") {
      // The NaN attacker cannot reach the aggregator through the fixed-point encoding; send garbage words.
      std::fill(encoded_.begin(), encoded_.end(), 0x7fffffffu);
    } else {
      encode_fixed_point(delta, fixed_point, encoded_);
    }
    secagg_ = std::make_unique<SecAggClient>(identity_, SecAggParams{round_id_, threshold, delta.size()});
    secagg_round_ = round;
    return wire::to_string_view_bytes(secagg_->advertise().encode());
  }

  void poison(std::vector<float>& delta) const {
    const auto& kind = options_.poison.kind;
    if (kind.empty()) return;
    double factor = options_.poison.boost;
    if (kind == "sign-flip") factor = -factor;
    if (kind == "nan") {
      for (std::size_t i = 0; i < delta.size(); i += 97) delta[i] = std::nanf("");
      return;
    }
    for (auto& v : delta) v = static_cast<float>(v * factor);
  }

  const ParticipantOptions& options_;
  std::string identity_;
  models::Dataset data_;
  std::unique_ptr<MtlsClient> client_;
  json settings_;
  std::unique_ptr<models::TrainableClassifier> model_;
  std::unique_ptr<SecAggClient> secagg_;
  std::uint64_t secagg_round_ = 0;
  std::vector<std::uint32_t> encoded_;
  std::string round_id_;
  ParticipantResult result_;
};

}  // namespace

ParticipantResult run_participant(const ParticipantOptions& options) {
  Participant participant(options);
  auto result = participant.run();
  return result;
}

}  // namespace aegis::federated
