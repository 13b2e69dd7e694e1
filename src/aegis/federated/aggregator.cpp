// The aggregator: a round driver (this thread) and HTTPS handlers (the transport's threads) that
// share one state under a mutex. Participants long-poll for their task, so a deadline, a dropout or
// a restart of either side needs no extra machinery: a stage closes when everyone expected has
// answered or its deadline passes, and whoever is missing is dropped from the round.
#include <openssl/rand.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
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

using Clock = std::chrono::steady_clock;
using nlohmann::json;

enum class Stage { Idle, Train, Share, Masked, Unmask, Done };

const char* stage_name(Stage stage) {
  switch (stage) {
    case Stage::Idle: return "wait";
    case Stage::Train: return "train";
    case Stage::Share: return "share";
    case Stage::Masked: return "masked";
    case Stage::Unmask: return "unmask";
    case Stage::Done: return "done";
  }
  return "wait";
}

std::string random_hex(std::size_t bytes) {
  std::vector<unsigned char> raw(bytes);
  if (RAND_bytes(raw.data(), static_cast<int>(raw.size())) != 1) throw core::Error("OpenSSL's CSPRNG failed", "check the system's entropy source");
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (auto b : raw) {
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

json record_json(const RoundRecord& r) {
  json j = {{"round", r.round},     {"selected", r.selected},   {"aggregated", r.aggregated},
            {"dropped", r.dropped}, {"rejected", r.rejected},   {"seconds", r.seconds},
            {"bytes_received", r.bytes_received}, {"bytes_sent", r.bytes_sent}, {"update_norm", r.update_norm}};
  if (r.accuracy) j["accuracy"] = *r.accuracy;
  if (r.backdoor_success) j["backdoor_success"] = *r.backdoor_success;
  if (r.epsilon) j["epsilon"] = *r.epsilon;
  return j;
}

RoundRecord record_from_json(const json& j) {
  RoundRecord r;
  r.round = j.at("round").get<std::uint64_t>();
  r.selected = j.at("selected").get<std::vector<std::string>>();
  r.aggregated = j.at("aggregated").get<std::vector<std::string>>();
  r.dropped = j.at("dropped").get<std::vector<std::string>>();
  r.rejected = j.at("rejected").get<std::vector<std::string>>();
  r.seconds = j.at("seconds").get<double>();
  r.bytes_received = j.at("bytes_received").get<std::uint64_t>();
  r.bytes_sent = j.at("bytes_sent").get<std::uint64_t>();
  r.update_norm = j.value("update_norm", 0.0);
  if (j.contains("accuracy")) r.accuracy = j["accuracy"].get<double>();
  if (j.contains("backdoor_success")) r.backdoor_success = j["backdoor_success"].get<double>();
  if (j.contains("epsilon")) r.epsilon = j["epsilon"].get<double>();
  return r;
}

json finding_to_json(const core::Finding& f) {
  return {{"rule_id", f.rule_id}, {"severity", std::string(core::to_string(f.severity))}, {"title", f.title},
          {"file", f.location.file}, {"evidence", f.evidence}, {"atlas", f.atlas}, {"nist_ai_rmf", f.nist_ai_rmf},
          {"remediation", f.remediation}};
}

core::Finding finding_from_json(const json& j) {
  core::Finding f;
  f.rule_id = j.at("rule_id").get<std::string>();
  f.severity = core::parse_severity(j.at("severity").get<std::string>()).value_or(core::Severity::Medium);
  f.title = j.at("title").get<std::string>();
  f.location.file = j.at("file").get<std::string>();
  f.evidence = j.at("evidence").get<std::string>();
  f.atlas = j.at("atlas").get<std::vector<std::string>>();
  f.nist_ai_rmf = j.at("nist_ai_rmf").get<std::vector<std::string>>();
  f.remediation = j.at("remediation").get<std::string>();
  return f;
}

void write_atomically(const std::filesystem::path& path, std::string_view bytes) {
  const auto temporary = path.string() + ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    out.flush();
    if (!out) throw core::Error("cannot write '" + temporary + "'", "check free space and permissions of the state folder");
  }
  std::filesystem::rename(temporary, path);
}

double l2(std::span<const float> v) {
  double s = 0;
  for (float x : v) s += static_cast<double>(x) * x;
  return std::sqrt(s);
}

// What the aggregator keeps about a participant it has heard from.
struct Member {
  std::uint64_t samples = 0;
  Clock::time_point last_seen{};
};

class Aggregator {
 public:
  Aggregator(const FederationConfig& config, const AggregatorRunOptions& options) : config_(config), options_(options) {}

  FederationResult run() {
    FederationPki pki{config_.pki_dir};
    for (const auto& p : {pki.ca_certificate(), pki.aggregator_certificate(), pki.aggregator_key()})
      if (!std::filesystem::exists(p))
        throw core::Error("the federation's certificates are missing: no " + p.string(),
                          "create them with `aegis federated init --dir " + config_.pki_dir.string() + " --participants N`");
    prepare();
    ServerOptions server_options;
    server_options.bind_address = config_.listen_address;
    server_options.port = config_.listen_port;
    server_options.threads = 4;
    server_options.max_body_bytes = std::max<std::size_t>(64u << 20, parameters_ * 8 + (1u << 20));
    server_ = std::make_unique<MtlsServer>(
        TlsIdentity{pki.ca_certificate().string(), pki.aggregator_certificate().string(), pki.aggregator_key().string()},
        server_options, [this](const Request& request) { return handle(request); },
        [this](std::string_view line) { log(std::string(line)); });
    server_->start();
    log("aggregator listening on https://" + config_.listen_address + ":" + std::to_string(server_->port()) + " (mutual TLS, CA " +
        pki.ca_certificate().string() + "), " + std::to_string(parameters_) + " parameters, rounds " +
        std::to_string(result_.resumed_from + 1) + ".." + std::to_string(config_.rounds));
    if (options_.on_listening) options_.on_listening(server_->port());

    std::uint64_t failures = 0;
    while (round_done_ < config_.rounds && !stopped()) {
      if (run_round(round_done_ + 1)) {
        failures = 0;
      } else if (++failures >= 3) {
        throw core::Error("round " + std::to_string(round_done_ + 1) + " failed three times in a row",
                          "see the log lines above: too few participants answered before the deadline");
      }
    }
    {
      std::lock_guard lock(mutex_);
      stage_ = Stage::Done;
      expected_.clear();
    }
    changed_.notify_all();
    // Participants long-poll: give them a moment to hear "done" before the listener closes.
    const auto grace_end = Clock::now() + std::chrono::seconds(3);
    {
      std::unique_lock lock(mutex_);
      changed_.wait_until(lock, grace_end, [&] { return told_done_.size() >= members_.size(); });
    }
    // The last "done" answers are still being written by the transport's I/O threads.
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    server_->stop();
    save_final_model();
    return result_;
  }

 private:
  // ---- setup and state -------------------------------------------------------------------------

  void prepare() {
    model_sha256_ = wire::model_sha256(config_.model);
    models::TorchScriptOptions model_options;
    model_options.input_shape = config_.input_shape;
    model_options.threads = 1;
    model_ = models::load_torchscript(config_.model.string(), model_options);
    global_ = model_->parameter_vector();
    parameters_ = global_.size();
    if (!config_.evaluation_data.empty()) {
      models::DataOptions data_options;
      data_options.split = config_.evaluation_split;
      data_options.limit = config_.evaluation_limit;
      evaluation_ = models::load_dataset(config_.evaluation_data.string(), data_options);
    }
    if (config_.differential_privacy) accountant_ = std::make_unique<ClientDpAccountant>(config_.dp);
    std::filesystem::create_directories(config_.state_dir);
    resume();
  }

  void resume() {
    const auto state_path = config_.state_dir / "state.json";
    if (!std::filesystem::exists(state_path)) return;
    json state;
    try {
      std::ifstream in(state_path);
      state = json::parse(in);
    } catch (const std::exception& error) {
      throw core::Error("the aggregator state " + state_path.string() + " is unreadable: " + error.what(),
                        "restore it from a backup, or move the state folder away to start over");
    }
    if (state.value("model_sha256", "") != model_sha256_)
      throw core::Error("the state in " + config_.state_dir.string() + " was made for another model (sha256 " +
                            state.value("model_sha256", "?") + ")",
                        "point federation.state at a fresh folder, or use the model it was made for");
    const auto weights_path = config_.state_dir / state.value("global", "global.f32");
    std::ifstream in(weights_path, std::ios::binary);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    std::vector<float> weights;
    if (!in || !wire::bytes_to_floats(bytes.str(), weights) || weights.size() != parameters_)
      throw core::Error("the saved global model " + weights_path.string() + " is missing or has the wrong size",
                        "move the state folder away to start over");
    global_ = std::move(weights);
    round_done_ = state.at("round").get<std::uint64_t>();
    for (const auto& r : state.at("history")) result_.rounds.push_back(record_from_json(r));
    for (const auto& f : state.value("findings", json::array())) result_.findings.push_back(finding_from_json(f));
    if (accountant_) accountant_->restore(round_done_);
    result_.resumed_from = round_done_;
    log("resumed from " + state_path.string() + ": " + std::to_string(round_done_) + " of " + std::to_string(config_.rounds) +
        " rounds done");
  }

  void save_state() {
    const auto weights_name = "global-" + std::to_string(round_done_) + ".f32";
    write_atomically(config_.state_dir / weights_name, wire::floats_to_bytes(global_));
    json history = json::array();
    for (const auto& r : result_.rounds) history.push_back(record_json(r));
    json findings = json::array();
    {
      std::lock_guard lock(mutex_);
      for (const auto& f : result_.findings) findings.push_back(finding_to_json(f));
    }
    json state = {{"version", 1},      {"model", config_.model.string()}, {"model_sha256", model_sha256_},
                  {"round", round_done_}, {"global", weights_name},      {"history", history},
                  {"findings", findings}};
    write_atomically(config_.state_dir / "state.json", state.dump(1));
    // The previous round's weights are no longer referenced.
    if (round_done_ > 1) std::filesystem::remove(config_.state_dir / ("global-" + std::to_string(round_done_ - 1) + ".f32"));
  }

  void save_final_model() {
    model_->set_parameter_vector(global_);
    result_.model_path = config_.state_dir / "global.pt";
    model_->save(result_.model_path.string());
  }

  void log(const std::string& line) const {
    if (options_.log) options_.log(line);
  }

  bool stopped() const { return options_.stop && options_.stop->load(); }

  // ---- one round --------------------------------------------------------------------------------

  std::vector<std::string> available_members() {
    std::vector<std::string> ids;
    const auto now = Clock::now();
    for (const auto& [id, member] : members_)
      if (now - member.last_seen < std::chrono::seconds(60)) ids.push_back(id);
    return ids;
  }

  // Waits for enough participants, then picks this round's sample.
  std::vector<std::string> select(std::uint64_t round) {
    const auto start = Clock::now();
    const auto join_deadline = start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(config_.join_timeout_s));
    std::unique_lock lock(mutex_);
    std::vector<std::string> available;
    bool announced = false;
    while (true) {
      available = available_members();
      const auto now = Clock::now();
      // Everyone asked for is there, or the minimum is and late joiners had a few seconds.
      if (available.size() >= config_.participants_per_round) break;
      if (available.size() >= config_.min_participants && now - start > std::chrono::seconds(5)) break;
      if (now > join_deadline || stopped())
        throw core::Error("only " + std::to_string(available.size()) + " of the " + std::to_string(config_.min_participants) +
                              " participants needed joined within " + std::to_string(config_.join_timeout_s) + " s",
                          "start the participants (`aegis federated join`), check that they trust this CA and reach " +
                              config_.listen_address + ":" + std::to_string(server_->port()) +
                              ", or lower training.min_participants");
      if (!announced) {
        log("round " + std::to_string(round) + ": waiting for participants (" + std::to_string(available.size()) + " of " +
            std::to_string(config_.participants_per_round) + " here)");
        announced = true;
      }
      changed_.wait_for(lock, std::chrono::milliseconds(250));
    }
    std::sort(available.begin(), available.end());
    if (available.size() > config_.participants_per_round) {
      std::mt19937_64 rng(config_.seed * 1000003ULL + round);
      std::shuffle(available.begin(), available.end(), rng);
      available.resize(config_.participants_per_round);
      std::sort(available.begin(), available.end());
    }
    return available;
  }

  // Opens a stage for `expected` with one payload each, and waits for their answers or the deadline.
  // Returns who answered.
  std::set<std::string> run_stage(Stage stage, const std::set<std::string>& expected, std::map<std::string, std::string> payloads) {
    std::unique_lock lock(mutex_);
    stage_ = stage;
    expected_ = expected;
    answered_.clear();
    payloads_ = std::move(payloads);
    changed_.notify_all();
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(config_.round_deadline_s));
    changed_.wait_until(lock, deadline, [&] { return answered_.size() >= expected_.size() || stopped(); });
    std::set<std::string> answered = answered_;
    std::vector<std::string> late;
    for (const auto& id : expected_)
      if (!answered.count(id)) late.push_back(id);
    if (!late.empty()) {
      std::string names;
      for (const auto& id : late) names += (names.empty() ? "" : ", ") + id;
      log("round " + std::to_string(round_) + ": stage " + stage_name(stage) + " closed at its deadline without " + names +
          " (dropped from the round)");
    }
    stage_ = Stage::Idle;
    expected_.clear();
    payloads_.clear();
    return answered;
  }

  bool run_round(std::uint64_t round) {
    const auto started = Clock::now();
    const auto bytes_in = server_->bytes_received(), bytes_out = server_->bytes_sent();
    auto selected = select(round);
    RoundRecord record;
    record.round = round;
    record.selected = selected;
    const std::set<std::string> selected_set(selected.begin(), selected.end());
    // t above half the round (and at least 2): two disjoint groups of t survivors could otherwise be
    // told different stories about who dropped out and reveal both secrets of one participant.
    const auto n = static_cast<std::uint32_t>(selected.size());
    const auto threshold = std::min<std::uint32_t>(
        n, std::max<std::uint32_t>({2u, n / 2 + 1, static_cast<std::uint32_t>(std::ceil(config_.secure_threshold * n))}));
    {
      std::lock_guard lock(mutex_);
      round_ = round;
      round_id_ = random_hex(16);
      threshold_ = threshold;
      selected_count_ = static_cast<std::uint32_t>(selected.size());
      updates_.clear();
      rejected_.clear();
      if (config_.secure_aggregation) secagg_ = std::make_unique<SecAggServer>(SecAggParams{round_id_, threshold, parameters_});
    }
    log("round " + std::to_string(round) + " of " + std::to_string(config_.rounds) + ": " + std::to_string(selected.size()) +
        " participants selected" + (config_.secure_aggregation ? ", secure aggregation t=" + std::to_string(threshold) : std::string()));

    std::map<std::string, std::string> model_payload;
    const auto model_bytes = wire::floats_to_bytes(global_);
    for (const auto& id : selected) model_payload[id] = model_bytes;
    auto trained = run_stage(Stage::Train, selected_set, std::move(model_payload));

    std::vector<float> delta;
    try {
      delta = config_.secure_aggregation ? secure_round(trained, record) : plain_round(trained, record);
    } catch (const core::Error& error) {
      log("round " + std::to_string(round) + " failed: " + error.what() + " (" + error.hint() + "); it will be run again");
      return false;
    }
    for (const auto& id : selected)
      if (!std::count(record.aggregated.begin(), record.aggregated.end(), id) &&
          !std::count(record.rejected.begin(), record.rejected.end(), id))
        record.dropped.push_back(id);

    std::vector<float> next = global_;
    for (std::size_t i = 0; i < next.size(); ++i) next[i] += static_cast<float>(config_.server_learning_rate * delta[i]);
    if (std::any_of(next.begin(), next.end(), [](float v) { return !std::isfinite(v); })) {
      // Only a rule that lets one update through unbounded gets here (mean without norm_bound).
      log("round " + std::to_string(round) + ": the aggregated update overflows the global model; it is discarded and the round run "
          "again (set robust.norm_bound or a robust rule)");
      return false;
    }
    global_ = std::move(next);
    record.update_norm = l2(delta);
    if (accountant_) {
      accountant_->record_round();
      record.epsilon = accountant_->epsilon();
    }
    evaluate(record);
    record.seconds = std::chrono::duration<double>(Clock::now() - started).count();
    record.bytes_received = server_->bytes_received() - bytes_in;
    record.bytes_sent = server_->bytes_sent() - bytes_out;
    round_done_ = round;
    result_.rounds.push_back(record);
    save_state();
    std::ostringstream line;
    line << "round " << round << " done in " << record.seconds << " s: " << record.aggregated.size() << " updates aggregated";
    if (!record.dropped.empty()) line << ", " << record.dropped.size() << " dropped";
    if (!record.rejected.empty()) line << ", " << record.rejected.size() << " rejected";
    if (record.accuracy) line << ", accuracy " << *record.accuracy;
    if (record.backdoor_success) line << ", backdoor success " << *record.backdoor_success;
    if (record.epsilon) line << ", epsilon " << *record.epsilon << " (delta " << config_.dp.delta << ")";
    log(line.str());
    if (options_.on_round) options_.on_round(record);
    return true;
  }

  std::vector<float> plain_round(const std::set<std::string>& answered, RoundRecord& record) {
    std::vector<ClientUpdate> updates;
    {
      std::lock_guard lock(mutex_);
      for (const auto& id : answered) {
        auto it = updates_.find(id);
        if (it != updates_.end()) updates.push_back(it->second);
      }
      record.rejected.assign(rejected_.begin(), rejected_.end());
    }
    if (updates.size() < config_.min_participants)
      throw core::Error("only " + std::to_string(updates.size()) + " valid updates arrived (" +
                            std::to_string(config_.min_participants) + " needed)",
                        "raise training.round_deadline_s or lower training.min_participants");
    if (config_.differential_privacy) {
      // DP-FedAvg: every update clipped (enforced here, whatever the participant did), the sum
      // noised, divided by the expected number of participants so that one's influence is bounded.
      auto result = aggregate_client_dp(updates, config_.dp, record.round);
      record.aggregated = result.used;
      return std::move(result.delta);
    }
    cap_weights(updates, record.round);
    const auto result = aggregate(updates, config_.robust);
    record.aggregated = result.used;
    for (const auto& outlier : result.outliers) {
      log("round " + std::to_string(record.round) + ": suspicious update from " + outlier.participant + ": " + outlier.reason);
      if (!std::count(record.rejected.begin(), record.rejected.end(), outlier.participant) &&
          !std::count(result.used.begin(), result.used.end(), outlier.participant))
        record.rejected.push_back(outlier.participant);
    }
    auto findings = outlier_findings(record.round, result.outliers);
    std::lock_guard lock(mutex_);
    result_.findings.insert(result_.findings.end(), findings.begin(), findings.end());
    return result.delta;
  }

  // FedAvg weighs updates by the sample counts participants claim: a participant claiming a million
  // samples would own the average. Claims above 4x the round's median count are cut to it.
  void cap_weights(std::vector<ClientUpdate>& updates, std::uint64_t round) {
    std::vector<double> weights;
    for (const auto& u : updates) weights.push_back(u.weight);
    std::nth_element(weights.begin(), weights.begin() + static_cast<std::ptrdiff_t>(weights.size() / 2), weights.end());
    const double cap = 4.0 * weights[weights.size() / 2];
    for (auto& u : updates)
      if (u.weight > cap) {
        log("round " + std::to_string(round) + ": " + u.participant + " claims " + std::to_string(static_cast<long long>(u.weight)) +
            " samples, more than 4x the round's median; weighed as " + std::to_string(static_cast<long long>(cap)));
        u.weight = cap;
      }
  }

  std::vector<float> secure_round(const std::set<std::string>& advertised, RoundRecord& record) {
    if (advertised.size() < threshold_)
      throw core::Error("only " + std::to_string(advertised.size()) + " participants advertised keys; secure aggregation needs " +
                            std::to_string(threshold_),
                        "raise training.round_deadline_s, or lower secure_aggregation.threshold");
    KeyDirectory directory;
    {
      std::lock_guard lock(mutex_);
      directory = secagg_->directory();
    }
    const auto directory_bytes = wire::to_string_view_bytes(directory.encode());
    std::map<std::string, std::string> payloads;
    for (const auto& id : advertised) payloads[id] = directory_bytes;
    const auto shared = run_stage(Stage::Share, advertised, std::move(payloads));

    payloads.clear();
    {
      std::lock_guard lock(mutex_);
      for (const auto& id : shared) payloads[id] = wire::to_string_view_bytes(secagg_->delivery_for(id).encode());
    }
    const auto masked = run_stage(Stage::Masked, shared, std::move(payloads));

    UnmaskRequest request;
    {
      std::lock_guard lock(mutex_);
      request = secagg_->unmask_request();  // throws when fewer than t sent their masked input
    }
    const auto request_bytes = wire::to_string_view_bytes(request.encode());
    payloads.clear();
    for (const auto& id : request.survivors) payloads[id] = request_bytes;
    run_stage(Stage::Unmask, std::set<std::string>(request.survivors.begin(), request.survivors.end()), std::move(payloads));

    std::vector<std::uint32_t> sum;
    {
      std::lock_guard lock(mutex_);
      if (!secagg_->can_finish())
        throw core::Error("fewer than t=" + std::to_string(threshold_) + " survivors revealed their shares",
                          "raise training.round_deadline_s");
      sum = secagg_->finish();
      record.rejected.assign(rejected_.begin(), rejected_.end());
    }
    record.aggregated = request.survivors;
    std::vector<float> delta(parameters_);
    FixedPoint fixed_point{config_.secure_clip, selected_count_};
    decode_fixed_point(sum, fixed_point, delta);
    if (config_.differential_privacy) {
      // Participants clipped before masking; the aggregator can only add the noise to the sum.
      privatize_update_sum(delta, config_.dp, record.round);
    } else {
      for (auto& v : delta) v /= static_cast<float>(request.survivors.size());
    }
    return delta;
  }

  void evaluate(RoundRecord& record) {
    if (evaluation_.size() == 0) return;
    model_->set_parameter_vector(global_);
    record.accuracy = models::accuracy(*model_, evaluation_.x, evaluation_.y);
    if (config_.backdoor_target < 0) return;
    std::vector<float> triggered;
    std::vector<int> targets;
    const auto size = evaluation_.sample_size();
    for (std::size_t i = 0; i < evaluation_.size(); ++i) {
      if (evaluation_.y[i] == config_.backdoor_target) continue;
      const auto sample = evaluation_.sample(i);
      const auto at = triggered.size();
      triggered.insert(triggered.end(), sample.begin(), sample.end());
      stamp_trigger(std::span<float>(triggered).subspan(at, size), evaluation_.sample_shape);
      targets.push_back(config_.backdoor_target);
    }
    if (!targets.empty()) record.backdoor_success = models::accuracy(*model_, triggered, targets);
  }

  // ---- HTTPS handlers ---------------------------------------------------------------------------

  static Response error_response(int status, const std::string& message) {
    Response response;
    response.status = status;
    response.body = json{{"error", message}}.dump();
    return response;
  }

  Response handle(const Request& request) {
    try {
      if (request.peer_id.empty()) return error_response(401, "a client certificate is required");
      if (request.method == "POST" && request.target == wire::kHello) return hello(request);
      if (request.method == "GET" && request.target.rfind(wire::kTask, 0) == 0) return task(request);
      if (request.method == "POST" && request.target == wire::kSubmit) return submit(request);
      return error_response(404, "no such endpoint: " + request.method + " " + request.target);
    } catch (const std::exception& error) {
      log("rejected a request from " + request.peer_id + ": " + error.what());
      return error_response(400, error.what());
    }
  }

  Response hello(const Request& request) {
    json body;
    try {
      body = json::parse(request.body);
    } catch (const json::exception&) {
      return error_response(400, "the hello is not JSON");
    }
    const auto their_model = body.value("model_sha256", "");
    if (their_model != model_sha256_) {
      log("refused " + request.peer_id + ": its model (sha256 " + their_model + ") is not the federation's (" + model_sha256_ + ")");
      return error_response(409, "model mismatch: the aggregator trains sha256 " + model_sha256_ + ", you have " + their_model);
    }
    const auto samples = body.value("samples", std::uint64_t{0});
    bool fresh = false;
    {
      std::lock_guard lock(mutex_);
      auto& member = members_[request.peer_id];
      fresh = member.last_seen == Clock::time_point{};
      member.samples = samples;
      member.last_seen = Clock::now();
    }
    changed_.notify_all();
    if (fresh) log(request.peer_id + " joined from " + request.peer_address + " with " + std::to_string(samples) + " samples");
    json reply = {{"parameters", parameters_},
                  {"rounds", config_.rounds},
                  {"algorithm", config_.algorithm},
                  {"proximal_mu", config_.proximal_mu},
                  {"local_epochs", config_.local_epochs},
                  {"batch", config_.batch},
                  {"optimizer", config_.optimizer},
                  {"learning_rate", config_.learning_rate},
                  {"secure_aggregation", config_.secure_aggregation},
                  {"secure_clip", config_.secure_clip},
                  // Participants clip their own update when it will be masked (nobody else can).
                  {"clip_norm", config_.differential_privacy ? config_.dp.clip_norm : config_.robust.norm_bound}};
    Response response;
    response.body = reply.dump();
    return response;
  }

  Response task(const Request& request) {
    const auto& id = request.peer_id;
    std::unique_lock lock(mutex_);
    auto member = members_.find(id);
    if (member == members_.end()) return error_response(409, "say hello first (POST " + std::string(wire::kHello) + ")");
    member->second.last_seen = Clock::now();
    changed_.notify_all();
    auto has_task = [&] { return stage_ == Stage::Done || (expected_.count(id) && !answered_.count(id)); };
    changed_.wait_for(lock, std::chrono::seconds(10), has_task);
    members_[id].last_seen = Clock::now();
    Response response;
    response.content_type = "application/octet-stream";
    if (stage_ == Stage::Done) {
      told_done_.insert(id);
      changed_.notify_all();
      response.headers[wire::kAction] = "done";
      return response;
    }
    if (!has_task()) {
      response.headers[wire::kAction] = "wait";
      return response;
    }
    response.headers[wire::kAction] = stage_name(stage_);
    response.headers[wire::kRound] = std::to_string(round_);
    response.headers[wire::kRoundId] = round_id_;
    response.headers[wire::kThreshold] = std::to_string(threshold_);
    response.headers[wire::kSelected] = std::to_string(selected_count_);
    response.body = payloads_[id];
    return response;
  }

  Response reject(const std::string& id, const std::string& action, const std::string& why, int status) {
    log("rejected " + (action.empty() ? std::string("a") : "a '" + action + "'") + " message from " + id + " (round " +
        std::to_string(round_) + ", stage " + stage_name(stage_) + "): " + why);
    return error_response(status, why);
  }

  Response submit(const Request& request) {
    const auto& id = request.peer_id;
    const auto header = [&](const char* name) {
      auto it = request.headers.find(name);
      return it == request.headers.end() ? std::string() : it->second;
    };
    const auto action = header(wire::kAction);
    const auto round_id = header(wire::kRoundId);
    if (options_.on_receive) options_.on_receive(id, action, request.body);
    std::unique_lock lock(mutex_);
    if (round_id != round_id_)
      return reject(id, action, "the message belongs to another round (" + (round_id.empty() ? std::string("no round id") : round_id) +
                            "): replayed or late", 409);
    if (action != stage_name(stage_) || stage_ == Stage::Idle || stage_ == Stage::Done)
      return reject(id, action, "a '" + action + "' message arrived while the round is in stage '" + stage_name(stage_) + "': late", 409);
    if (!expected_.count(id)) return reject(id, action, "not expected in this stage of the round", 403);
    if (answered_.count(id)) return reject(id, action, "already answered this stage: a replayed message", 409);

    const auto bytes = wire::as_bytes(request.body);
    try {
      switch (stage_) {
        case Stage::Train:
          if (config_.secure_aggregation) {
            const auto message = AdvertiseKeys::decode(bytes);
            if (message.participant != id) throw core::Error("keys advertised for '" + message.participant + "'", "");
            secagg_->receive_keys(message);
          } else {
            ClientUpdate update;
            update.participant = id;
            if (!wire::bytes_to_floats(request.body, update.delta))
              return invalid(id, std::to_string(request.body.size()) + " bytes is not a whole number of float32 values");
            if (auto why = invalid_update_reason(update.delta, parameters_)) return invalid(id, *why);
            const auto samples = header(wire::kSamples);
            update.weight = samples.empty() ? 1.0 : std::max(1.0, std::strtod(samples.c_str(), nullptr));
            if (!std::isfinite(update.weight) || update.weight > 1e12) return invalid(id, "its sample count '" + samples + "' is not a count");
            updates_[id] = std::move(update);
          }
          break;
        case Stage::Share: {
          const auto message = ShareUpload::decode(bytes);
          if (message.participant != id) throw core::Error("shares uploaded for '" + message.participant + "'", "");
          secagg_->receive_shares(message);
          break;
        }
        case Stage::Masked: {
          const auto message = MaskedInput::decode(bytes);
          if (message.participant != id) throw core::Error("masked input sent for '" + message.participant + "'", "");
          secagg_->receive_masked(message);
          break;
        }
        case Stage::Unmask: {
          const auto message = UnmaskResponse::decode(bytes);
          if (message.participant != id) throw core::Error("shares revealed for '" + message.participant + "'", "");
          secagg_->receive_unmask(message);
          break;
        }
        default: break;
      }
    } catch (const core::Error& error) {
      return invalid(id, error.what());
    }
    answered_.insert(id);
    changed_.notify_all();
    Response response;
    response.body = "{\"accepted\":true}";
    return response;
  }

  // An answer that cannot be used: refused, logged, and a finding (a participant sending garbage is
  // either broken or probing the aggregator).
  Response invalid(const std::string& id, const std::string& why) {
    rejected_.insert(id);
    answered_.insert(id);  // it had its one chance this stage: do not wait for it until the deadline
    changed_.notify_all();
    core::Finding finding;
    finding.rule_id = "FL003";
    finding.severity = core::Severity::High;
    finding.title = "Invalid update refused from participant " + id;
    finding.location.file = "round " + std::to_string(round_);
    finding.evidence = std::string(stage_name(stage_)) + " message: " + why;
    finding.atlas = {"AML.T0020"};
    finding.nist_ai_rmf = {"MEASURE 2.7"};
    finding.remediation = "Check the participant's software and data; revoke its certificate if it keeps sending invalid updates.";
    result_.findings.push_back(finding);
    return reject(id, stage_name(stage_), why, 400);
  }

  const FederationConfig& config_;
  const AggregatorRunOptions& options_;
  std::unique_ptr<models::TrainableClassifier> model_;
  std::string model_sha256_;
  std::vector<float> global_;
  std::size_t parameters_ = 0;
  models::Dataset evaluation_;
  std::unique_ptr<ClientDpAccountant> accountant_;
  std::unique_ptr<MtlsServer> server_;
  FederationResult result_;
  std::uint64_t round_done_ = 0;

  std::mutex mutex_;
  std::condition_variable changed_;
  std::map<std::string, Member> members_;
  std::set<std::string> told_done_;
  Stage stage_ = Stage::Idle;
  std::uint64_t round_ = 0;
  std::string round_id_;
  std::uint32_t threshold_ = 0;
  std::uint32_t selected_count_ = 0;
  std::set<std::string> expected_, answered_, rejected_;
  std::map<std::string, std::string> payloads_;
  std::map<std::string, ClientUpdate> updates_;
  std::unique_ptr<SecAggServer> secagg_;
};

}  // namespace

FederationResult run_aggregator(const FederationConfig& config, const AggregatorRunOptions& options) {
  Aggregator aggregator(config, options);
  return aggregator.run();
}

}  // namespace aegis::federated
