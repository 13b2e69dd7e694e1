// The input guard: is this prompt an injection or a jailbreak? Three tiers over the normalised text
// and every smuggled payload decoded from it (text_normalize.h, decode.h):
//   1. signatures: rules as data (data/guard/injection_signatures.toml, and user files in the same
//      shape) compiled into one Hyperscan database;
//   2. learned: a logistic model over hashed character and word n-grams (`aegis guard train`), the
//      shipped one embedded in the binary (data/guard/injection_model.bin);
//   3. optionally a user-supplied transformer classifier (not in this library: models/).
// Each verdict carries a score, the deciding tier and the evidence span in the input.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "aegis/guard/decode.h"
#include "aegis/guard/text_normalize.h"

namespace aegis::guard {

// One signature rule. `pattern` is a Hyperscan/PCRE regex matched case-insensitively against the
// normalised text (lower-cased, NFKC, confusables folded) and the decoded payloads.
struct SignatureRule {
  std::string id;        // e.g. "injection.ignore-previous"
  std::string category;  // injection | jailbreak | system-prompt-extraction | obfuscation | exfiltration
  std::string pattern;
  double score = 0.9;    // 0..1
  std::string atlas;     // e.g. "AML.T0051.000"
  std::string description;
};

// Parses a rule file (TOML: [[rule]] id, category, pattern, score, atlas, description). Throws
// core::Error naming the file and the rule on a bad entry.
std::vector<SignatureRule> parse_signature_rules(std::string_view toml_text, const std::string& source_name);
// The shipped rules.
std::vector<SignatureRule> default_signature_rules();

// ---- the learned tier ----

// Feature extraction shared by training and scoring: character n-grams (min..max over the
// normalised text, padded with spaces at word edges) and word unigrams and bigrams, hashed (signed,
// MurmurHash3-style) into 2^hash_bits buckets, counts log-scaled (1 + ln tf) and L2-normalised.
struct FeatureConfig {
  int hash_bits = 18;
  int char_min = 3;
  int char_max = 5;
  bool word_unigrams = true;
  bool word_bigrams = true;
  std::size_t max_chars = 16384;  // longer texts: the first and last max_chars/2 are used
};

struct SparseVector {
  std::vector<std::uint32_t> index;  // sorted, unique
  std::vector<float> value;
};

SparseVector extract_features(std::string_view normalized_text, const FeatureConfig& config);

// A logistic model over the hashed features: p(injection) = sigmoid(w·x + b).
class LinearModel {
 public:
  LinearModel() = default;
  LinearModel(FeatureConfig config, std::vector<float> weights, float bias, double threshold);
  double score(const SparseVector& x) const;  // probability, 0..1
  double score_text(std::string_view normalized_text) const;
  const FeatureConfig& config() const { return config_; }
  double threshold() const { return threshold_; }
  void set_threshold(double t) { threshold_ = t; }
  float bias() const { return bias_; }
  const std::vector<float>& weights() const { return weights_; }
  bool empty() const { return weights_.empty(); }
  // The n-grams of `normalized_text` that pushed its score up most: byte spans of the text.
  struct Contribution {
    std::size_t begin = 0, end = 0;
    double weight = 0;
  };
  std::vector<Contribution> top_contributions(std::string_view normalized_text, std::size_t k) const;

  // Binary model file: magic "AEGISLM1", a JSON header line (config, threshold, bias, training
  // metadata), then the weights as little-endian int16 with one float scale. Throws core::Error on
  // a truncated or foreign file.
  std::string serialize(const std::string& metadata_json) const;
  static LinearModel deserialize(std::string_view bytes, const std::string& source_name, std::string* metadata_json = nullptr);

 private:
  FeatureConfig config_;
  std::vector<float> weights_;
  float bias_ = 0;
  double threshold_ = 0.5;
};

struct TrainOptions {
  FeatureConfig features;
  int epochs = 12;
  double l2 = 1e-6;
  double learning_rate = 0.5;  // AdaGrad
  std::uint64_t seed = 1;
  double positive_weight = 0;  // 0: balance classes automatically
};

struct LabelledText {
  std::string text;   // raw, normalised inside train()
  int label = 0;      // 1 = injection / jailbreak
  std::string source; // the evaluation group (evaluation.h: eval_group) for per-source reports
  std::string id;     // stable id (the split hashes it); the text when the file has none
};

// Trains on the texts (normalised and with their decoded payloads appended, as scoring sees them).
// progress(epoch, epochs) is called after each epoch when set.
LinearModel train_linear_model(const std::vector<LabelledText>& data, const TrainOptions& options,
                               const std::function<void(int, int)>& progress = {});
// The two halves of train_linear_model, for callers that train many models on the same rows
// (cross-validation): the features of each text as the guard sees it, then the fit on a subset.
std::vector<SparseVector> training_features(const std::vector<LabelledText>& data, const FeatureConfig& features);
LinearModel train_on_features(const std::vector<SparseVector>& xs, const std::vector<int>& labels,
                              const std::vector<std::size_t>& rows, const TrainOptions& options,
                              const std::function<void(int, int)>& progress = {});

// ---- the guard ----

enum class Tier { None, Signature, Learned, Transformer };
std::string_view tier_name(Tier tier);  // "none", "signature", "learned", "transformer"

struct Evidence {
  std::size_t begin = 0;  // byte span in the original input
  std::size_t end = 0;
  std::string excerpt;    // the matched text (decoded form when it came from a payload), at most 200 bytes
  std::string rule;       // signature rule id, or "learned"
  std::string via;        // "" for the text itself, else the decoding chain: "base64", "base64+rot13", "unicode-tags"
};

struct InputVerdict {
  bool flagged = false;
  double score = 0;        // 0..1, the highest of the tiers
  Tier tier = Tier::None;  // the tier that decided (the highest score)
  std::string category;    // of the deciding signature, or "injection" for the learned tier
  std::string atlas;       // ATLAS technique id
  std::vector<Evidence> evidence;  // deciding evidence first
  double signature_score = 0;
  double learned_score = 0;
  bool obfuscated = false;                 // invisible characters, confusables, tag characters
  std::vector<std::string> decodings;      // encodings found ("base64", ...)
};

struct InputGuardOptions {
  bool signatures = true;
  std::vector<std::string> rule_files;  // extra signature files
  bool learned = true;
  std::string model_file;               // empty: the shipped model
  const LinearModel* model = nullptr;   // when set, copied and used instead of model_file
  double threshold = -1;                // < 0: the model's own threshold
  bool decode = true;
  NormalizeOptions normalize;
  DecodeOptions decoding;
  // Smuggling alone (a decoded payload that the tiers find benign, or invisible characters) raises
  // the score to this (0 to disable): hiding text from a filter is itself suspicious (AML.T0068).
  double obfuscation_score = 0;
};

// Thread-safe after construction (Hyperscan scratch per thread).
class InputGuard {
 public:
  explicit InputGuard(InputGuardOptions options = {});
  ~InputGuard();
  InputGuard(const InputGuard&) = delete;
  InputGuard& operator=(const InputGuard&) = delete;

  InputVerdict scan(std::string_view text) const;
  double threshold() const;
  std::size_t signature_count() const;
  const LinearModel& model() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aegis::guard
