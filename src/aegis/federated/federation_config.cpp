// fl.yaml: the aggregator's settings, checked strictly (an unknown key is a typo that would
// otherwise silently train without the defence the operator asked for).
#include <yaml-cpp/yaml.h>

#include <cmath>
#include <fstream>
#include <set>
#include <sstream>

#include "aegis/core/error.h"
#include "aegis/core/yaml_guard.h"
#include "aegis/federated/federated.h"

namespace aegis::federated {
namespace {

class ConfigReader {
 public:
  explicit ConfigReader(std::string source) : source_(std::move(source)) {}

  [[noreturn]] void fail(const YAML::Node& node, const std::string& problem, const std::string& hint = {}) const {
    const auto line = node.Mark().line >= 0 ? " line " + std::to_string(node.Mark().line + 1) + ":" : std::string(":");
    throw core::Error(source_ + line + " " + problem,
                      hint.empty() ? "see examples/federated/fl.yaml for every key and its meaning" : hint);
  }

  void only_keys(const YAML::Node& map, const std::string& where, const std::set<std::string>& known) const {
    if (!map.IsMap()) fail(map, "'" + where + "' must be a mapping");
    for (const auto& entry : map) {
      if (!entry.first.IsScalar()) fail(entry.first, "a key in " + where + " is not a plain name");
      const auto key = entry.first.as<std::string>();
      if (!known.count(key)) {
        std::string list;
        for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
        fail(entry.first, "unknown key '" + key + "' in " + where, "known keys there: " + list);
      }
    }
  }

  template <typename T>
  T scalar(const YAML::Node& node, const std::string& key, const char* type) const {
    if (!node.IsScalar()) fail(node, "'" + key + "' must be " + type);
    try {
      return node.as<T>();
    } catch (const YAML::Exception&) {
      fail(node, "'" + key + "' must be " + type + ", not '" + node.Scalar() + "'");
    }
  }

  double number(const YAML::Node& map, const std::string& key, double value, double lo, double hi) const {
    if (!map[key]) return value;
    const auto n = map[key];
    const double v = scalar<double>(n, key, "a number");
    if (!std::isfinite(v) || v < lo || v > hi)
      fail(n, "'" + key + "' is " + n.Scalar() + "; it must lie in [" + trim(lo) + ", " + trim(hi) + "]");
    return v;
  }

  std::uint64_t count(const YAML::Node& map, const std::string& key, std::uint64_t value, std::uint64_t lo,
                      std::uint64_t hi) const {
    if (!map[key]) return value;
    const auto n = map[key];
    const auto text = n.IsScalar() ? n.Scalar() : std::string();
    if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos)
      fail(n, "'" + key + "' must be a whole number");
    const auto v = scalar<std::uint64_t>(n, key, "a whole number");
    if (v < lo || v > hi)
      fail(n, "'" + key + "' is " + text + "; it must lie in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]");
    return v;
  }

  bool flag(const YAML::Node& map, const std::string& key, bool value) const {
    return map[key] ? scalar<bool>(map[key], key, "true or false") : value;
  }

  std::string text(const YAML::Node& map, const std::string& key, std::string value,
                   const std::set<std::string>& allowed = {}) const {
    if (!map[key]) return value;
    auto v = scalar<std::string>(map[key], key, "a string");
    if (!allowed.empty() && !allowed.count(v)) {
      std::string list;
      for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
      fail(map[key], "'" + key + "' is '" + v + "'; use one of " + list);
    }
    return v;
  }

 private:
  static std::string trim(double v) {
    std::ostringstream out;
    out << v;
    return out.str();
  }
  std::string source_;
};

}  // namespace

namespace {

FederationConfig parse_checked(const std::string& yaml, const std::filesystem::path& config_dir, const std::string& source_name) {
  const std::string source = "federation config " + source_name;
  if (yaml.size() > (1u << 20)) throw core::Error(source + " is larger than 1 MiB", "this is a settings file; check the path");
  try {
    if (core::yaml_too_deep(yaml, 16)) throw core::Error(source + " nests deeper than 16 levels", "write the settings as in examples/federated/fl.yaml");
  } catch (const core::FormatError& error) {  // YAML that would make yaml-cpp loop
    throw core::Error(source + ": " + error.what(), "write the settings as in examples/federated/fl.yaml");
  }
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& error) {
    throw core::Error(source + ": not YAML: " + error.what(), "fix the line named");
  }
  ConfigReader r(source);
  if (!root.IsMap()) r.fail(root, "the file must be a mapping with federation:, model:, training: ...");
  r.only_keys(root, "the top level",
              {"federation", "model", "training", "secure_aggregation", "robust", "differential_privacy", "evaluation"});

  FederationConfig c;
  c.config_dir = config_dir;
  auto resolve = [&](const std::string& p) {
    std::filesystem::path path(p);
    return path.is_absolute() ? path : config_dir / path;
  };
  c.pki_dir = resolve("fl-pki");
  c.state_dir = resolve("fl-state");

  if (const auto f = root["federation"]) {
    r.only_keys(f, "federation", {"pki", "listen", "state", "population"});
    if (f["pki"]) c.pki_dir = resolve(r.text(f, "pki", ""));
    if (f["state"]) c.state_dir = resolve(r.text(f, "state", ""));
    if (f["listen"]) {
      const auto listen = r.text(f, "listen", "");
      const auto colon = listen.rfind(':');
      const auto port_text = colon == std::string::npos ? std::string() : listen.substr(colon + 1);
      if (colon == std::string::npos || colon == 0 || port_text.empty() ||
          port_text.find_first_not_of("0123456789") != std::string::npos || port_text.size() > 5 ||
          std::stoul(port_text) > 65535)
        r.fail(f["listen"], "'listen' is '" + listen + "'; write ADDRESS:PORT, e.g. 127.0.0.1:8443 (port 0 picks a free one)");
      c.listen_address = listen.substr(0, colon);
      if (c.listen_address.size() > 2 && c.listen_address.front() == '[' && c.listen_address.back() == ']')
        c.listen_address = c.listen_address.substr(1, c.listen_address.size() - 2);
      c.listen_port = static_cast<std::uint16_t>(std::stoul(port_text));
    }
    c.population = r.count(f, "population", 0, 0, 100000000);
  }

  const auto m = root["model"];
  if (!m) r.fail(root, "no 'model:' section", "name the TorchScript file to train: model: {torchscript: model.pt, input_shape: [1, 28, 28]}");
  r.only_keys(m, "model", {"torchscript", "input_shape"});
  if (!m["torchscript"]) r.fail(m, "'model' has no 'torchscript:' file");
  c.model = resolve(r.text(m, "torchscript", ""));
  if (m["input_shape"]) {
    const auto shape = m["input_shape"];
    if (!shape.IsSequence() || shape.size() == 0 || shape.size() > 8)
      r.fail(shape, "'input_shape' must be a list of 1 to 8 sizes, e.g. [1, 28, 28]");
    for (const auto& d : shape) {
      const auto v = r.scalar<std::int64_t>(d, "input_shape", "a whole number");
      if (v < 1 || v > 1000000) r.fail(d, "a size in 'input_shape' must lie in [1, 1000000]");
      c.input_shape.push_back(v);
    }
  } else {
    c.input_shape = {1, 28, 28};
  }

  if (const auto t = root["training"]) {
    r.only_keys(t, "training", {"rounds", "participants_per_round", "min_participants", "join_timeout_s", "round_deadline_s",
                                "seed", "algorithm", "proximal_mu", "local_epochs", "batch", "optimizer", "learning_rate",
                                "server_learning_rate"});
    c.rounds = r.count(t, "rounds", c.rounds, 1, 100000);
    c.participants_per_round = static_cast<std::uint32_t>(r.count(t, "participants_per_round", c.participants_per_round, 1, 100000));
    c.min_participants = static_cast<std::uint32_t>(r.count(t, "min_participants", std::min<std::uint32_t>(c.min_participants, c.participants_per_round), 1, 100000));
    c.join_timeout_s = r.number(t, "join_timeout_s", c.join_timeout_s, 0.1, 86400 * 7);
    c.round_deadline_s = r.number(t, "round_deadline_s", c.round_deadline_s, 0.1, 86400);
    c.seed = r.count(t, "seed", c.seed, 0, UINT64_MAX);
    c.algorithm = r.text(t, "algorithm", c.algorithm, {"fedavg", "fedprox"});
    c.proximal_mu = r.number(t, "proximal_mu", c.proximal_mu, 0, 1000);
    c.local_epochs = static_cast<std::uint32_t>(r.count(t, "local_epochs", c.local_epochs, 1, 1000));
    c.batch = static_cast<std::uint32_t>(r.count(t, "batch", c.batch, 1, 65536));
    c.optimizer = r.text(t, "optimizer", c.optimizer, {"sgd", "adam"});
    c.learning_rate = r.number(t, "learning_rate", c.learning_rate, 1e-9, 100);
    c.server_learning_rate = r.number(t, "server_learning_rate", c.server_learning_rate, 1e-6, 100);
    if (c.min_participants > c.participants_per_round)
      r.fail(t["min_participants"] ? t["min_participants"] : t, "'min_participants' (" + std::to_string(c.min_participants) +
                                                                  ") exceeds 'participants_per_round' (" +
                                                                  std::to_string(c.participants_per_round) + ")");
  }

  if (const auto s = root["secure_aggregation"]) {
    r.only_keys(s, "secure_aggregation", {"enabled", "threshold", "clip"});
    c.secure_aggregation = r.flag(s, "enabled", true);
    c.secure_threshold = r.number(s, "threshold", c.secure_threshold, 0.51, 1.0);  // > n/2: see SecAggParams
    c.secure_clip = r.number(s, "clip", c.secure_clip, 1e-6, 1e6);
  }

  if (const auto b = root["robust"]) {
    r.only_keys(b, "robust", {"rule", "norm_bound", "trim_fraction", "byzantine", "multi_krum_select", "outlier_threshold"});
    const auto name = r.text(b, "rule", "mean");
    const auto rule = parse_aggregation_rule(name);
    if (!rule) r.fail(b["rule"], "'rule' is '" + name + "'; use mean, median, trimmed-mean, krum or multi-krum");
    c.robust.rule = *rule;
    c.robust.norm_bound = r.number(b, "norm_bound", 0, 0, 1e9);
    c.robust.trim_fraction = r.number(b, "trim_fraction", c.robust.trim_fraction, 0, 0.49);
    c.robust.byzantine = static_cast<std::uint32_t>(r.count(b, "byzantine", 0, 0, 100000));
    c.robust.multi_krum_select = static_cast<std::uint32_t>(r.count(b, "multi_krum_select", 0, 0, 100000));
    c.robust.outlier_threshold = r.number(b, "outlier_threshold", c.robust.outlier_threshold, 0.5, 1e6);
    if (c.secure_aggregation && c.robust.rule != AggregationRule::Mean)
      r.fail(b["rule"], "robust rule '" + name + "' needs every participant's update, which secure aggregation hides from the aggregator",
             "use rule: mean with norm_bound (participants clip before masking), or turn secure_aggregation off");
    if ((c.robust.rule == AggregationRule::Krum || c.robust.rule == AggregationRule::MultiKrum) &&
        c.participants_per_round <= 2 * c.robust.byzantine + 2)
      r.fail(b["byzantine"] ? b["byzantine"] : b, "Krum with byzantine: " + std::to_string(c.robust.byzantine) + " needs more than " +
                                                    std::to_string(2 * c.robust.byzantine + 2) + " participants per round");
  }

  if (const auto d = root["differential_privacy"]) {
    r.only_keys(d, "differential_privacy", {"enabled", "clip_norm", "noise_multiplier", "delta", "secure_noise", "seed"});
    c.differential_privacy = r.flag(d, "enabled", true);
    c.dp.clip_norm = r.number(d, "clip_norm", c.dp.clip_norm, 1e-9, 1e9);
    c.dp.noise_multiplier = r.number(d, "noise_multiplier", c.dp.noise_multiplier, 0, 1000);
    c.dp.delta = r.number(d, "delta", c.dp.delta, 1e-300, 0.5);
    c.dp.secure_noise = r.flag(d, "secure_noise", true);
    c.dp.seed = r.count(d, "seed", 0, 0, UINT64_MAX);
  }

  if (const auto e = root["evaluation"]) {
    r.only_keys(e, "evaluation", {"data", "split", "limit", "backdoor_target"});
    if (e["data"]) c.evaluation_data = resolve(r.text(e, "data", ""));
    c.evaluation_split = r.text(e, "split", c.evaluation_split, {"train", "test"});
    c.evaluation_limit = r.count(e, "limit", 0, 0, 100000000);
    if (e["backdoor_target"]) c.backdoor_target = static_cast<int>(r.count(e, "backdoor_target", 0, 0, 100000));
  }

  if (c.population == 0) c.population = c.participants_per_round;
  if (c.population < c.participants_per_round) c.population = c.participants_per_round;
  c.dp.population = c.population;
  c.dp.per_round = c.participants_per_round;
  if (c.differential_privacy) check_client_dp_options(c.dp);
  if (c.differential_privacy && c.robust.rule != AggregationRule::Mean)
    r.fail(root["robust"], "client-level DP bounds the noised sum of clipped updates; robust rule '" +
                               std::string(to_string(c.robust.rule)) + "' changes that sum and voids the guarantee",
           "use rule: mean (clipping to clip_norm already bounds every participant's influence)");
  return c;
}

}  // namespace

FederationConfig parse_federation_config(const std::string& yaml, const std::filesystem::path& config_dir,
                                         const std::string& source_name) {
  try {
    return parse_checked(yaml, config_dir, source_name);
  } catch (const YAML::Exception& error) {  // a shape the checks above did not expect (a key that is a list...)
    throw core::Error("federation config " + source_name + ": " + error.what(), "write the settings as in examples/federated/fl.yaml");
  }
}

FederationConfig load_federation_config(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::Error("cannot read the federation config '" + path.string() + "'", "check the path given to --config");
  std::ostringstream text;
  text << in.rdbuf();
  auto config = parse_federation_config(text.str(), path.has_parent_path() ? path.parent_path() : std::filesystem::path("."),
                                        path.string());
  return config;
}

}  // namespace aegis::federated
