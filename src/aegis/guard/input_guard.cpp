#include "aegis/guard/input_guard.h"

#include <hs/hs.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>
#include <toml++/toml.h>

#include "aegis/core/error.h"

namespace aegis::data {
extern const std::string_view injection_signatures;
extern const std::string_view injection_model;
}  // namespace aegis::data

namespace aegis::guard {
namespace {

constexpr const char* kRuleHint =
    "signature files are TOML: [[rule]] tables with id, category, pattern (Hyperscan/PCRE syntax, matched "
    "case-insensitively against the normalised lower-case text), and optionally score (0..1), atlas, description";

// ---- hashing ----

inline std::uint64_t mix64(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

inline std::uint64_t hash_bytes(const char* data, std::size_t n, std::uint64_t seed) {
  std::uint64_t h = 0xcbf29ce484222325ULL ^ seed;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= 0x100000001b3ULL;
  }
  return mix64(h);
}

constexpr std::uint64_t kCharSeed = 0x9e3779b97f4a7c15ULL;
constexpr std::uint64_t kWordSeed = 0xd1b54a32d192ed03ULL;
constexpr std::uint64_t kBigramSeed = 0x8cb92ba72f3d8dd7ULL;

bool is_word_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c >= 0x80 || (c >= 'A' && c <= 'Z');
}
bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// Calls emit(hash, position) for every hashed feature of `text`: character n-grams of each
// whitespace-separated word padded with one space on either side, word unigrams and bigrams.
// `position` is the byte offset of the feature's first byte in `text` (for evidence spans).
template <class Emit>
void for_each_char_feature(std::string_view text, const FeatureConfig& config, Emit&& emit) {
  // character n-grams, word by word
  char padded[80];
  std::size_t i = 0;
  const std::size_t n = text.size();
  while (i < n) {
    while (i < n && is_space(static_cast<unsigned char>(text[i]))) ++i;
    if (i >= n) break;
    std::size_t j = i;
    while (j < n && !is_space(static_cast<unsigned char>(text[j]))) ++j;
    // words longer than the buffer are taken in pieces (base64 blobs, URLs)
    for (std::size_t piece = i; piece < j; piece += 64) {
      const std::size_t len = std::min<std::size_t>(64, j - piece);
      padded[0] = ' ';
      std::memcpy(padded + 1, text.data() + piece, len);
      padded[len + 1] = ' ';
      const std::size_t plen = len + 2;
      for (int g = config.char_min; g <= config.char_max; ++g) {
        const auto gn = static_cast<std::size_t>(g);
        if (plen < gn) break;
        for (std::size_t k = 0; k + gn <= plen; ++k) {
          std::uint64_t key = 0;
          std::memcpy(&key, padded + k, gn);  // g <= 7 bytes
          key |= static_cast<std::uint64_t>(gn) << 56;
          const std::size_t pos = piece + (k == 0 ? 0 : k - 1);
          emit(mix64(key ^ kCharSeed), pos);
        }
      }
    }
    i = j;
  }
}

// Word unigrams and bigrams: runs of letters, digits, '_' and non-ASCII bytes, two bytes or more.
template <class Emit>
void for_each_word_feature(std::string_view text, const FeatureConfig& config, Emit&& emit) {
  const std::size_t n = text.size();
  std::size_t i = 0;
  if (!config.word_unigrams && !config.word_bigrams) return;
  std::uint64_t previous = 0;
  bool have_previous = false;
  while (i < n) {
    while (i < n && !is_word_byte(static_cast<unsigned char>(text[i]))) ++i;
    if (i >= n) break;
    std::size_t j = i;
    while (j < n && is_word_byte(static_cast<unsigned char>(text[j]))) ++j;
    if (j - i >= 2) {
      const std::uint64_t h = hash_bytes(text.data() + i, std::min<std::size_t>(j - i, 64), kWordSeed);
      if (config.word_unigrams) emit(h, i);
      if (config.word_bigrams && have_previous) emit(mix64(previous * 31 + h + kBigramSeed), i);
      previous = h;
      have_previous = true;
    }
    i = j;
  }
}

template <class Emit>
void for_each_feature(std::string_view text, const FeatureConfig& config, Emit&& emit) {
  for_each_char_feature(text, config, emit);
  for_each_word_feature(text, config, emit);
}

// The text the features are taken from: long texts keep their beginning and their end.
std::string_view feature_window(std::string_view text, std::size_t max_chars, std::string& buffer) {
  if (max_chars == 0 || text.size() <= max_chars) return text;
  const std::size_t half = max_chars / 2;
  buffer.assign(text.substr(0, half));
  buffer += ' ';
  buffer.append(text.substr(text.size() - half));
  return buffer;
}

// Accumulates signed hashed counts per bucket (open addressing, key and count side by side so that
// one cache line serves both), reused per thread.
struct FeatureTable {
  struct Slot {
    std::uint32_t key;  // bucket + 1; 0 = empty
    float count;
  };
  std::vector<Slot> slots;
  std::vector<std::uint32_t> used;  // slots in use
  std::uint32_t mask = 0;

  void reset(std::size_t expected) {
    std::size_t want = 1024;
    while (want < expected * 2) want <<= 1;
    if (slots.size() < want) {
      slots.assign(want, Slot{0, 0.f});
      mask = static_cast<std::uint32_t>(want - 1);
    } else {
      for (const std::uint32_t slot : used) slots[slot].key = 0;
    }
    used.clear();
  }
  void add(std::uint32_t bucket, float sign) {
    std::uint32_t slot = (bucket * 2654435761u) & mask;
    while (true) {
      Slot& s = slots[slot];
      if (s.key == bucket + 1) {
        s.count += sign;
        return;
      }
      if (s.key == 0) {
        s.key = bucket + 1;
        s.count = sign;
        used.push_back(slot);
        return;
      }
      slot = (slot + 1) & mask;
    }
  }
};

inline float scaled(float count) { return count >= 0 ? std::log1p(count) : -std::log1p(-count); }

inline std::uint32_t bucket_of(std::uint64_t h, int bits) { return static_cast<std::uint32_t>(h & ((1ULL << bits) - 1)); }
inline float sign_of(std::uint64_t h) { return (h >> 63) != 0 ? -1.f : 1.f; }

void fill_table(FeatureTable& table, std::string_view text, const FeatureConfig& config) {
  // distinct features are far fewer than occurrences (about one per byte of English text)
  const std::size_t expected = text.size() + 64;
  table.reset(expected);
  for_each_feature(text, config, [&](std::uint64_t h, std::size_t) { table.add(bucket_of(h, config.hash_bits), sign_of(h)); });
}

double sigmoid(double z) {
  if (z >= 0) return 1.0 / (1.0 + std::exp(-z));
  const double e = std::exp(z);
  return e / (1.0 + e);
}

void check_config(const FeatureConfig& c, const std::string& source) {
  if (c.hash_bits < 10 || c.hash_bits > 24 || c.char_min < 1 || c.char_max > 7 || c.char_min > c.char_max)
    throw core::Error(source + ": feature settings out of range (hash_bits 10..24, 1 <= char_min <= char_max <= 7)",
                      "retrain the model with `aegis guard train`");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// signatures

std::vector<SignatureRule> parse_signature_rules(std::string_view toml_text, const std::string& source_name) {
  toml::table root;
  try {
    root = toml::parse(toml_text, source_name);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    throw core::Error(source_name + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) + ": " +
                          std::string(e.description()),
                      kRuleHint);
  }
  std::vector<SignatureRule> rules;
  const toml::node* list = root.get("rule");
  if (list == nullptr) return rules;
  const auto* array = list->as_array();
  if (array == nullptr) throw core::Error(source_name + ": 'rule' must be an array of tables ([[rule]])", kRuleHint);
  for (const auto& entry : *array) {
    const auto* table = entry.as_table();
    const std::string line = std::to_string(entry.source().begin.line);
    if (table == nullptr) throw core::Error(source_name + ":" + line + ": each [[rule]] must be a table", kRuleHint);
    SignatureRule rule;
    auto text_field = [&](std::string_view key, bool required) -> std::string {
      const toml::node* node = table->get(key);
      if (node == nullptr) {
        if (required)
          throw core::Error(source_name + ":" + line + ": rule '" + rule.id + "' has no " + std::string(key), kRuleHint);
        return {};
      }
      const auto* s = node->as_string();
      if (s == nullptr)
        throw core::Error(source_name + ":" + std::to_string(node->source().begin.line) + ": " + std::string(key) +
                              " must be a string",
                          kRuleHint);
      return s->get();
    };
    for (const auto& [key, value] : *table) {
      static const char* const known[] = {"id", "category", "pattern", "score", "atlas", "description"};
      if (std::find(std::begin(known), std::end(known), key.str()) == std::end(known))
        throw core::Error(source_name + ":" + std::to_string(value.source().begin.line) + ": unknown key '" +
                              std::string(key.str()) + "' in a rule",
                          kRuleHint);
    }
    rule.id = text_field("id", true);
    rule.category = text_field("category", true);
    rule.pattern = text_field("pattern", true);
    rule.atlas = text_field("atlas", false);
    rule.description = text_field("description", false);
    if (const toml::node* s = table->get("score")) {
      if (const auto* f = s->as_floating_point()) rule.score = f->get();
      else if (const auto* i = s->as_integer()) rule.score = static_cast<double>(i->get());
      else throw core::Error(source_name + ":" + line + ": rule '" + rule.id + "': score must be a number", kRuleHint);
      if (!(rule.score >= 0 && rule.score <= 1))
        throw core::Error(source_name + ":" + line + ": rule '" + rule.id + "': score must be within 0..1", kRuleHint);
    }
    if (rule.pattern.empty())
      throw core::Error(source_name + ":" + line + ": rule '" + rule.id + "' has an empty pattern", kRuleHint);
    rules.push_back(std::move(rule));
  }
  return rules;
}

std::vector<SignatureRule> default_signature_rules() {
  return parse_signature_rules(data::injection_signatures, "injection_signatures.toml (shipped)");
}

// ---------------------------------------------------------------------------------------------
// features and the linear model

SparseVector extract_features(std::string_view normalized_text, const FeatureConfig& config) {
  thread_local FeatureTable table;
  std::string buffer;
  const std::string_view text = feature_window(normalized_text, config.max_chars, buffer);
  fill_table(table, text, config);
  std::vector<std::pair<std::uint32_t, float>> entries;
  entries.reserve(table.used.size());
  double norm = 0;
  for (const std::uint32_t slot : table.used) {
    const float v = scaled(table.slots[slot].count);
    if (v == 0.f) continue;
    entries.emplace_back(table.slots[slot].key - 1, v);
    norm += static_cast<double>(v) * v;
  }
  std::sort(entries.begin(), entries.end());
  SparseVector out;
  out.index.reserve(entries.size());
  out.value.reserve(entries.size());
  const float inv = norm > 0 ? static_cast<float>(1.0 / std::sqrt(norm)) : 0.f;
  for (const auto& [index, v] : entries) {
    out.index.push_back(index);
    out.value.push_back(v * inv);
  }
  return out;
}

LinearModel::LinearModel(FeatureConfig config, std::vector<float> weights, float bias, double threshold)
    : config_(config), weights_(std::move(weights)), bias_(bias), threshold_(threshold) {
  check_config(config_, "linear model");
  if (weights_.size() != (std::size_t{1} << config_.hash_bits))
    throw core::Error("linear model: " + std::to_string(weights_.size()) + " weights for 2^" +
                          std::to_string(config_.hash_bits) + " buckets",
                      "retrain the model with `aegis guard train`");
}

double LinearModel::score(const SparseVector& x) const {
  if (weights_.empty()) return 0;
  double z = bias_;
  for (std::size_t i = 0; i < x.index.size(); ++i) z += static_cast<double>(weights_[x.index[i]]) * x.value[i];
  return sigmoid(z);
}

double LinearModel::score_text(std::string_view normalized_text) const {
  if (weights_.empty()) return 0;
  thread_local FeatureTable table;
  std::string buffer;
  const std::string_view text = feature_window(normalized_text, config_.max_chars, buffer);
  fill_table(table, text, config_);
  double dot = 0, norm = 0;
  for (const std::uint32_t slot : table.used) {
    const double v = scaled(table.slots[slot].count);
    norm += v * v;
    dot += v * weights_[table.slots[slot].key - 1];
  }
  if (norm <= 0) return sigmoid(bias_);
  return sigmoid(bias_ + dot / std::sqrt(norm));
}

std::vector<LinearModel::Contribution> LinearModel::top_contributions(std::string_view normalized_text, std::size_t k) const {
  std::vector<Contribution> out;
  if (weights_.empty() || normalized_text.empty() || k == 0) return out;
  std::string buffer;
  const std::string_view text = feature_window(normalized_text, config_.max_chars, buffer);
  // The contribution of every byte position: the weights of the word features that start there
  // (words and word pairs carry the meaning; the character n-grams would cost a second full pass).
  std::vector<double> at(text.size() + 1, 0.0);
  for_each_word_feature(text, config_, [&](std::uint64_t h, std::size_t pos) {
    at[std::min(pos, text.size())] += sign_of(h) * weights_[bucket_of(h, config_.hash_bits)];
  });
  // Sum per word, then the best windows of up to 12 consecutive words.
  struct Word {
    std::size_t begin, end;
    double weight;
  };
  std::vector<Word> words;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && is_space(static_cast<unsigned char>(text[i]))) ++i;
    if (i >= text.size()) break;
    std::size_t j = i;
    double sum = 0;
    while (j < text.size() && !is_space(static_cast<unsigned char>(text[j]))) sum += at[j++];
    words.push_back({i, j, sum});
    i = j;
  }
  std::vector<bool> taken(words.size(), false);
  for (std::size_t round = 0; round < k; ++round) {
    double best = 0;
    std::size_t best_begin = 0, best_end = 0;
    for (std::size_t b = 0; b < words.size(); ++b) {
      double sum = 0;
      for (std::size_t e = b; e < words.size() && e < b + 12; ++e) {
        if (taken[e]) break;
        sum += words[e].weight;
        if (sum > best) {
          best = sum;
          best_begin = b;
          best_end = e + 1;
        }
      }
    }
    if (best <= 0) break;
    for (std::size_t w = best_begin; w < best_end; ++w) taken[w] = true;
    Contribution c;
    c.begin = words[best_begin].begin;
    c.end = words[best_end - 1].end;
    c.weight = best;
    // positions past the first half of a windowed text belong to the end of the original
    if (text.data() != normalized_text.data()) {
      const std::size_t half = config_.max_chars / 2;
      auto map = [&](std::size_t p) { return p <= half ? p : normalized_text.size() - (text.size() - p); };
      c.begin = map(c.begin);
      c.end = map(c.end);
    }
    out.push_back(c);
  }
  return out;
}

std::string LinearModel::serialize(const std::string& metadata_json) const {
  nlohmann::json header;
  header["format"] = "aegis-linear-model";
  header["version"] = 1;
  header["hash_bits"] = config_.hash_bits;
  header["char_min"] = config_.char_min;
  header["char_max"] = config_.char_max;
  header["word_unigrams"] = config_.word_unigrams;
  header["word_bigrams"] = config_.word_bigrams;
  header["max_chars"] = config_.max_chars;
  header["bias"] = bias_;
  header["threshold"] = threshold_;
  float max_abs = 0;
  for (const float w : weights_) max_abs = std::max(max_abs, std::fabs(w));
  const float scale = max_abs > 0 ? max_abs / 32767.f : 1.f;
  header["scale"] = scale;
  if (!metadata_json.empty()) header["training"] = nlohmann::json::parse(metadata_json, nullptr, false);
  std::string out = "AEGISLM1\n" + header.dump() + "\n";
  const std::size_t base = out.size();
  out.resize(base + weights_.size() * 2);
  for (std::size_t i = 0; i < weights_.size(); ++i) {
    const long q = std::lround(weights_[i] / scale);
    const auto v = static_cast<std::uint16_t>(static_cast<std::int16_t>(std::clamp<long>(q, -32767, 32767)));
    out[base + 2 * i] = static_cast<char>(v & 0xff);
    out[base + 2 * i + 1] = static_cast<char>(v >> 8);
  }
  return out;
}

LinearModel LinearModel::deserialize(std::string_view bytes, const std::string& source_name, std::string* metadata_json) {
  const std::string hint = "pass a model written by `aegis guard train`, or leave --model out to use the shipped one";
  if (bytes.substr(0, 9) != "AEGISLM1\n") throw core::Error(source_name + ": not an Aegis guard model (bad magic)", hint);
  const std::size_t eol = bytes.find('\n', 9);
  if (eol == std::string_view::npos || eol - 9 > (1u << 20))
    throw core::Error(source_name + ": truncated model header", hint);
  const auto header = nlohmann::json::parse(bytes.substr(9, eol - 9), nullptr, false);
  if (header.is_discarded() || !header.is_object() || header.value("format", "") != "aegis-linear-model")
    throw core::Error(source_name + ": unreadable model header", hint);
  FeatureConfig config;
  float bias = 0, scale = 0;
  double threshold = 0.5;
  try {
    config.hash_bits = header.at("hash_bits").get<int>();
    config.char_min = header.at("char_min").get<int>();
    config.char_max = header.at("char_max").get<int>();
    config.word_unigrams = header.at("word_unigrams").get<bool>();
    config.word_bigrams = header.at("word_bigrams").get<bool>();
    config.max_chars = header.at("max_chars").get<std::size_t>();
    bias = header.at("bias").get<float>();
    threshold = header.at("threshold").get<double>();
    scale = header.at("scale").get<float>();
  } catch (const nlohmann::json::exception& e) {
    throw core::Error(source_name + ": model header lacks a field (" + std::string(e.what()) + ")", hint);
  }
  check_config(config, source_name);
  if (!(scale > 0) || !std::isfinite(scale) || !std::isfinite(bias) || !(threshold > 0 && threshold < 1))
    throw core::Error(source_name + ": model header has an invalid scale, bias or threshold", hint);
  const std::size_t count = std::size_t{1} << config.hash_bits;
  const std::string_view body = bytes.substr(eol + 1);
  if (body.size() != count * 2)
    throw core::Error(source_name + ": expected " + std::to_string(count * 2) + " bytes of weights, found " +
                          std::to_string(body.size()),
                      hint);
  std::vector<float> weights(count);
  for (std::size_t i = 0; i < count; ++i) {
    const auto lo = static_cast<unsigned char>(body[2 * i]);
    const auto hi = static_cast<unsigned char>(body[2 * i + 1]);
    weights[i] = static_cast<float>(static_cast<std::int16_t>(static_cast<std::uint16_t>(lo | (hi << 8)))) * scale;
  }
  if (metadata_json != nullptr) *metadata_json = header.contains("training") ? header["training"].dump() : "{}";
  return LinearModel(config, std::move(weights), bias, threshold);
}

// What the guard and the trainer score: the normalised text, the hidden tag payload and every
// decoded payload, as separate views.
namespace {

struct ScanViews {
  NormalizedText normalized;
  std::vector<DecodedSegment> segments;  // decoded payloads (normalised), tag payload first when present
  std::vector<std::string> segment_via;
};

ScanViews prepare(std::string_view text, const NormalizeOptions& normalize, const DecodeOptions& decoding, bool decode) {
  ScanViews views;
  views.normalized = normalize_text(text, normalize);
  const NormalizedText& norm = views.normalized;
  if (decode) {
    // Decoded from the input as written (lower-casing would destroy base64); spans are input offsets.
    // The tag payload comes back from here as a unicode-tags segment.
    views.segments = decode_smuggled(text.substr(0, std::min(text.size(), normalize.max_input_bytes)), decoding);
    // When the text hides itself (invisible characters inside a payload, look-alike letters), the
    // normalised text is decoded too; its spans are mapped back to the input.
    if (norm.obfuscated()) {
      for (auto& segment : decode_smuggled(norm.text, decoding)) {
        const bool seen = std::any_of(views.segments.begin(), views.segments.end(),
                                      [&](const DecodedSegment& s) { return s.text == segment.text; });
        if (seen) continue;
        segment.begin = norm.offsets[std::min(segment.begin, norm.offsets.size() - 1)];
        segment.end = norm.offsets[std::min(segment.end, norm.offsets.size() - 1)];
        views.segments.push_back(std::move(segment));
      }
    }
    for (auto& segment : views.segments) segment.text = normalize_text(segment.text, normalize).text;
  }
  if (!norm.tag_payload.empty() &&
      std::none_of(views.segments.begin(), views.segments.end(), [](const DecodedSegment& s) {
        return !s.chain.empty() && s.chain.front() == Encoding::UnicodeTags;
      })) {
    DecodedSegment tags;
    tags.chain = {Encoding::UnicodeTags};
    tags.begin = 0;
    tags.end = text.size();
    tags.text = normalize_text(norm.tag_payload, normalize).text;
    views.segments.insert(views.segments.begin(), std::move(tags));
  }
  for (const auto& segment : views.segments) {
    std::string via;
    for (const Encoding e : segment.chain) {
      if (!via.empty()) via += '+';
      via += encoding_name(e);
    }
    views.segment_via.push_back(std::move(via));
  }
  return views;
}

}  // namespace

std::vector<SparseVector> training_features(const std::vector<LabelledText>& data, const FeatureConfig& features) {
  check_config(features, "training options");
  std::vector<SparseVector> xs(data.size());
  for (std::size_t i = 0; i < data.size(); ++i) {
    // the text as the guard sees it, with its decoded payloads appended
    const ScanViews views = prepare(data[i].text, NormalizeOptions{}, DecodeOptions{}, true);
    std::string joined = views.normalized.text;
    for (const auto& segment : views.segments) {
      joined += ' ';
      joined += segment.text;
    }
    xs[i] = extract_features(joined, features);
  }
  return xs;
}

LinearModel train_on_features(const std::vector<SparseVector>& xs, const std::vector<int>& labels,
                              const std::vector<std::size_t>& rows, const TrainOptions& options,
                              const std::function<void(int, int)>& progress) {
  check_config(options.features, "training options");
  if (rows.empty()) throw core::Error("no training data", "pass a JSON Lines file with text and label fields");
  std::size_t positives = 0;
  for (const std::size_t i : rows) positives += labels.at(i) != 0 ? 1 : 0;
  if (positives == 0 || positives == rows.size())
    throw core::Error("training data has only one class (" + std::to_string(positives) + " of " +
                          std::to_string(rows.size()) + " rows are positive)",
                      "the data needs both injections (label 1) and benign texts (label 0)");
  const double pos_weight = options.positive_weight > 0
                                ? options.positive_weight
                                : static_cast<double>(rows.size() - positives) / static_cast<double>(positives);
  const std::size_t dims = std::size_t{1} << options.features.hash_bits;
  std::vector<float> w(dims, 0.f);
  std::vector<float> g2(dims, 0.f);
  double bias = 0, bias_g2 = 0;
  std::vector<std::size_t> order = rows;
  std::mt19937_64 rng(options.seed);
  const double eta = options.learning_rate;
  for (int epoch = 0; epoch < options.epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    for (const std::size_t i : order) {
      const SparseVector& x = xs.at(i);
      double z = bias;
      for (std::size_t k = 0; k < x.index.size(); ++k) z += static_cast<double>(w[x.index[k]]) * x.value[k];
      const double y = labels[i] != 0 ? 1.0 : 0.0;
      const double weight = labels[i] != 0 ? pos_weight : 1.0;
      const double gradient = (sigmoid(z) - y) * weight;
      for (std::size_t k = 0; k < x.index.size(); ++k) {
        const std::uint32_t j = x.index[k];
        const double gj = gradient * x.value[k] + options.l2 * w[j];
        g2[j] += static_cast<float>(gj * gj);
        w[j] -= static_cast<float>(eta * gj / (std::sqrt(static_cast<double>(g2[j])) + 1e-8));
      }
      bias_g2 += gradient * gradient;
      bias -= eta * gradient / (std::sqrt(bias_g2) + 1e-8);
    }
    if (progress) progress(epoch + 1, options.epochs);
  }
  return LinearModel(options.features, std::move(w), static_cast<float>(bias), 0.5);
}

LinearModel train_linear_model(const std::vector<LabelledText>& data, const TrainOptions& options,
                               const std::function<void(int, int)>& progress) {
  if (data.empty()) throw core::Error("no training data", "pass a JSON Lines file with text and label fields");
  const auto xs = training_features(data, options.features);
  std::vector<int> labels;
  std::vector<std::size_t> rows;
  for (std::size_t i = 0; i < data.size(); ++i) {
    labels.push_back(data[i].label != 0 ? 1 : 0);
    rows.push_back(i);
  }
  return train_on_features(xs, labels, rows, options, progress);
}

std::string_view tier_name(Tier tier) {
  switch (tier) {
    case Tier::None: return "none";
    case Tier::Signature: return "signature";
    case Tier::Learned: return "learned";
    case Tier::Transformer: return "transformer";
  }
  return "none";
}

// ---------------------------------------------------------------------------------------------
// the guard

namespace {

struct ThreadScratch {
  hs_scratch_t* scratch = nullptr;
  std::uint64_t owner = 0;  // serial of the guard the scratch was last fitted to (0: none)
  ~ThreadScratch() {
    if (scratch != nullptr) hs_free_scratch(scratch);
  }
};

constexpr unsigned long long kNoSomWindow = 120;

struct Match {
  unsigned rule;
  unsigned long long from, to;
};

int on_match(unsigned int id, unsigned long long from, unsigned long long to, unsigned int, void* context) {
  auto* matches = static_cast<std::vector<Match>*>(context);
  for (auto& m : *matches)
    if (m.rule == id) {
      // the first match of a rule is enough; a longer match from the same start extends it
      // ("instruction" then "instructions")
      if (m.from == from && to > m.to && to - m.to <= 16) m.to = to;
      return 0;
    }
  matches->push_back({id, from, to});
  return matches->size() >= 256 ? 1 : 0;
}

std::string excerpt_of(std::string_view text, std::size_t begin, std::size_t end) {
  begin = std::min(begin, text.size());
  end = std::clamp(end, begin, text.size());
  std::string out(text.substr(begin, std::min<std::size_t>(end - begin, 200)));
  // do not cut a UTF-8 sequence in half
  while (!out.empty() && (static_cast<unsigned char>(out.back()) & 0xC0) == 0x80) out.pop_back();
  if (!out.empty() && static_cast<unsigned char>(out.back()) >= 0xC0) out.pop_back();
  return out;
}

}  // namespace

struct InputGuard::Impl {
  InputGuardOptions options;
  std::vector<SignatureRule> rules;
  hs_database_t* db = nullptr;
  std::vector<bool> som;  // per rule: exact match starts
  // Identifies this guard to the per-thread scratch (an address could be reused by the next guard
  // after a reload, with another database).
  const std::uint64_t serial = next_serial();
  static std::uint64_t next_serial() {
    static std::atomic<std::uint64_t> counter{0};
    return ++counter;
  }
  LinearModel model;
  double threshold = 0.5;

  ~Impl() {
    if (db != nullptr) hs_free_database(db);
  }

  hs_scratch_t* scratch() const {
    thread_local ThreadScratch local;
    if (local.owner != serial || local.scratch == nullptr) {
      // grows the thread's scratch to fit this database (it never shrinks)
      if (hs_alloc_scratch(db, &local.scratch) != HS_SUCCESS)
        throw core::Error("cannot allocate Hyperscan scratch space", "the machine may be out of memory");
      local.owner = serial;
    }
    return local.scratch;
  }

  std::vector<Match> match(std::string_view text) const {
    std::vector<Match> matches;
    if (db == nullptr || text.empty()) return matches;
    const std::size_t limit = std::min<std::size_t>(text.size(), 1u << 30);
    const hs_error_t rc = hs_scan(db, text.data(), static_cast<unsigned>(limit), 0, scratch(), on_match, &matches);
    if (rc != HS_SUCCESS && rc != HS_SCAN_TERMINATED) throw core::Error("Hyperscan scan failed (" + std::to_string(rc) + ")");
    return matches;
  }
};

InputGuard::InputGuard(InputGuardOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  const InputGuardOptions& o = impl_->options;
  if (o.signatures) {
    impl_->rules = default_signature_rules();
    for (const auto& file : o.rule_files) {
      std::ifstream in(file, std::ios::binary);
      if (!in) throw core::Error("cannot read signature file " + file, "check the path and its permissions");
      std::stringstream buffer;
      buffer << in.rdbuf();
      auto extra = parse_signature_rules(buffer.str(), file);
      for (auto& rule : extra) {
        auto same = std::find_if(impl_->rules.begin(), impl_->rules.end(), [&](const SignatureRule& r) { return r.id == rule.id; });
        if (same != impl_->rules.end()) *same = std::move(rule);
        else impl_->rules.push_back(std::move(rule));
      }
    }
    if (!impl_->rules.empty()) {
      // Exact match starts (SOM) where Hyperscan can afford them; a pattern with long bounded
      // repeats may be too large with SOM and is compiled without (its evidence then starts up
      // to kNoSomWindow bytes before the match end).
      constexpr unsigned kBase = HS_FLAG_CASELESS | HS_FLAG_DOTALL;  // bytes: UTF-8 mode makes negated classes huge
      std::vector<const char*> patterns;
      std::vector<unsigned> flags, ids;
      impl_->som.assign(impl_->rules.size(), true);
      for (std::size_t i = 0; i < impl_->rules.size(); ++i) {
        patterns.push_back(impl_->rules[i].pattern.c_str());
        flags.push_back(kBase | HS_FLAG_SOM_LEFTMOST);
        ids.push_back(static_cast<unsigned>(i));
      }
      // Compiled together; a rule Hyperscan refuses with SOM is retried without it (and its evidence
      // then starts up to kNoSomWindow bytes before the match end); a rule refused without SOM too
      // is a configuration error naming the rule.
      for (std::size_t attempt = 0; attempt <= impl_->rules.size(); ++attempt) {
        hs_compile_error_t* error = nullptr;
        if (hs_compile_multi(patterns.data(), flags.data(), ids.data(), static_cast<unsigned>(patterns.size()),
                             HS_MODE_BLOCK, nullptr, &impl_->db, &error) == HS_SUCCESS)
          break;
        const std::string what = error != nullptr && error->message != nullptr ? error->message : "unknown error";
        const int expression = error != nullptr ? error->expression : -1;
        hs_free_compile_error(error);
        impl_->db = nullptr;
        if (expression < 0 || static_cast<std::size_t>(expression) >= impl_->rules.size())
          throw core::Error("the signature rules do not compile together: " + what,
                            "remove the rule files added with --rules one by one to find the culprit");
        const auto index = static_cast<std::size_t>(expression);
        if (!impl_->som[index]) {
          throw core::Error("signature rule '" + impl_->rules[index].id + "' does not compile: " + what,
                            "Hyperscan supports PCRE syntax without backreferences or lookarounds");
        }
        impl_->som[index] = false;
        flags[index] = kBase;
      }
    }
  }
  if (o.learned) {
    if (o.model != nullptr) {
      impl_->model = *o.model;
    } else if (o.model_file.empty()) {
      if (data::injection_model.empty())
        throw core::Error("this build ships no guard model", "train one with `aegis guard train` and pass --model FILE");
      impl_->model = LinearModel::deserialize(data::injection_model, "injection_model.bin (shipped)");
    } else {
      std::ifstream in(o.model_file, std::ios::binary);
      if (!in) throw core::Error("cannot read guard model " + o.model_file, "check the path, or leave --model out");
      std::stringstream buffer;
      buffer << in.rdbuf();
      impl_->model = LinearModel::deserialize(buffer.str(), o.model_file);
    }
    impl_->threshold = o.threshold > 0 ? o.threshold : impl_->model.threshold();
  } else if (o.threshold > 0) {
    impl_->threshold = o.threshold;
  }
}

InputGuard::~InputGuard() = default;
double InputGuard::threshold() const { return impl_->threshold; }
std::size_t InputGuard::signature_count() const { return impl_->rules.size(); }
const LinearModel& InputGuard::model() const { return impl_->model; }

InputVerdict InputGuard::scan(std::string_view text) const {
  const Impl& g = *impl_;
  InputVerdict verdict;
  const ScanViews views = prepare(text, g.options.normalize, g.options.decoding, g.options.decode);
  const NormalizedText& norm = views.normalized;
  verdict.obfuscated = norm.obfuscated();
  for (const auto& via : views.segment_via) {
    for (std::size_t b = 0, e; b <= via.size(); b = e + 1) {
      e = via.find('+', b);
      if (e == std::string::npos) e = via.size();
      std::string name = via.substr(b, e - b);
      if (std::find(verdict.decodings.begin(), verdict.decodings.end(), name) == verdict.decodings.end())
        verdict.decodings.push_back(std::move(name));
    }
  }
  auto to_input = [&](std::size_t b) { return norm.offsets.empty() ? b : norm.offsets[std::min(b, norm.offsets.size() - 1)]; };

  // signatures, on the text and on each payload
  std::vector<std::pair<double, Evidence>> found;
  std::string best_category, best_atlas;
  auto run_signatures = [&](std::string_view scanned, std::size_t seg_begin, std::size_t seg_end, const std::string& via) {
    for (Match m : g.match(scanned)) {
      const SignatureRule& rule = g.rules[m.rule];
      if (!g.som[m.rule]) m.from = m.to > kNoSomWindow ? m.to - kNoSomWindow : 0;
      Evidence e;
      if (via.empty()) {
        e.begin = to_input(static_cast<std::size_t>(m.from));
        e.end = to_input(static_cast<std::size_t>(m.to));
      } else {
        e.begin = seg_begin;  // segments carry input offsets
        e.end = seg_end;
      }
      e.excerpt = excerpt_of(scanned, static_cast<std::size_t>(m.from), static_cast<std::size_t>(m.to));
      e.rule = rule.id;
      e.via = via;
      if (rule.score > verdict.signature_score) {
        verdict.signature_score = rule.score;
        best_category = rule.category;
        best_atlas = rule.atlas;
      }
      found.emplace_back(rule.score, std::move(e));
    }
  };
  if (g.db != nullptr) {
    run_signatures(norm.text, 0, norm.text.size(), "");
    for (std::size_t i = 0; i < views.segments.size(); ++i)
      run_signatures(views.segments[i].text, views.segments[i].begin, views.segments[i].end, views.segment_via[i]);
  }

  // the learned tier: the text, and each payload on its own
  std::size_t learned_view = 0;  // 0 = the text, i+1 = segment i
  if (!g.model.empty()) {
    verdict.learned_score = g.model.score_text(norm.text);
    for (std::size_t i = 0; i < views.segments.size(); ++i) {
      const double s = g.model.score_text(views.segments[i].text);
      if (s > verdict.learned_score) {
        verdict.learned_score = s;
        learned_view = i + 1;
      }
    }
  }

  const bool signature_flag = verdict.signature_score >= 0.5;
  const bool learned_flag = !g.model.empty() && verdict.learned_score >= g.threshold;
  verdict.flagged = signature_flag || learned_flag;
  
  // The cheap, specific tier decides when it flags (its rule and ATLAS id say what the attack is);
  // the score is the highest of the tiers.
  if (signature_flag) {
    verdict.tier = Tier::Signature;
    verdict.score = std::max(verdict.signature_score, verdict.learned_score);
    verdict.category = best_category;
    verdict.atlas = best_atlas;
  } else if (learned_flag || verdict.learned_score > 0) {
    verdict.tier = verdict.flagged || verdict.learned_score >= verdict.signature_score ? Tier::Learned : Tier::Signature;
    verdict.score = std::max(verdict.learned_score, verdict.signature_score);
    if (verdict.tier == Tier::Learned) {
      verdict.category = "injection";
      verdict.atlas = "AML.T0051";
    } else {
      verdict.category = best_category;
      verdict.atlas = best_atlas;
    }
  }
  if (!verdict.flagged && g.options.obfuscation_score > 0 && (verdict.obfuscated || !verdict.decodings.empty())) {
    verdict.score = std::max(verdict.score, g.options.obfuscation_score);
    verdict.flagged = g.options.obfuscation_score >= 0.5;
    verdict.tier = Tier::Signature;
    verdict.category = "obfuscation";
    verdict.atlas = "AML.T0068";
    Evidence e;
    e.rule = "obfuscation";
    if (!views.segments.empty()) {
      e.begin = views.segments.front().begin;
      e.end = views.segments.front().end;
      e.via = views.segment_via.front();
      e.excerpt = excerpt_of(views.segments.front().text, 0, 200);
    } else {
      e.end = text.size();
      e.excerpt = excerpt_of(norm.text, 0, 200);
    }
    verdict.evidence.push_back(std::move(e));
  }

  // evidence: the deciding tier first
  std::stable_sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<Evidence> learned_evidence;
  if (verdict.flagged && learned_flag) {
    const std::string_view view = learned_view == 0 ? std::string_view(norm.text) : std::string_view(views.segments[learned_view - 1].text);
    for (const auto& c : g.model.top_contributions(view, 2)) {
      Evidence e;
      if (learned_view == 0) {
        e.begin = to_input(c.begin);
        e.end = to_input(c.end);
      } else {
        e.begin = views.segments[learned_view - 1].begin;
        e.end = views.segments[learned_view - 1].end;
        e.via = views.segment_via[learned_view - 1];
      }
      e.excerpt = excerpt_of(view, c.begin, c.end);
      e.rule = "learned";
      learned_evidence.push_back(std::move(e));
    }
  }
  auto add_signature_evidence = [&] {
    for (std::size_t i = 0; i < found.size() && i < 8; ++i) verdict.evidence.push_back(std::move(found[i].second));
  };
  if (verdict.tier == Tier::Learned) {
    for (auto& e : learned_evidence) verdict.evidence.push_back(std::move(e));
    add_signature_evidence();
  } else {
    add_signature_evidence();
    for (auto& e : learned_evidence) verdict.evidence.push_back(std::move(e));
  }
  return verdict;
}

}  // namespace aegis::guard
