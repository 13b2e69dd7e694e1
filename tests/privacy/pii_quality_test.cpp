// The detectors' quality gate: precision and recall of aegis::privacy::Detector, per entity type, on
// the labelled corpus that tests/fixtures/pii_corpus.py writes (seed 7: customers.csv, patients.jsonl,
// employees.json, deployments.json, crm.sqlite, notes.txt, config_snippets.txt). The test reads the
// generator's fields.jsonl, one object per scanned unit (a CSV cell, a JSON string, a SQLite value, a
// line of text) with its text, the byte spans of its true entities and of its decoys, and runs the
// detector with default options on each unit, the column or key path as the field name (without
// array indices, as `aegis pii` passes it; text lines have none). It does not go through `aegis pii`:
// the file readers have tests of their own (bench/pii/evaluate.py scores the CLI end to end).
//
// Matching, per unit and per entity type T:
//   - a detection of type T is a true positive when its span [begin, end) shares at least one byte
//     with the span of a label of type T in the same unit; otherwise it is a false positive (also
//     when it lands on a label of another type: that is a confusion, counted against T);
//   - a label of type T is found when at least one detection of type T shares a byte with it;
//   - precision(T) = true-positive detections / detections of T; recall(T) = labels found / labels.
// Overlap rather than equal offsets, because labels and rules may draw the edges of one entity a
// little differently (a secret with or without its "key=" prefix, a street address with or without
// its unit); the share of exact spans is printed beside the figures.
//
// The gate, for every entity type: at least 100 labelled instances, precision >= 0.95, recall >= 0.90.
// And no decoy (an order number, a UUID, a 16-digit number failing Luhn, an SSN with area 000, a
// placeholder secret, ...) may be reported as anything: a detection of any type that shares a byte
// with a decoy's span fails it.
//
// A second pass scans notes.txt and config_snippets.txt whole, many lines in one scan() call as
// `aegis pii` does with a text file, and maps the detections back to lines: the same gate for every
// type with 30 labels or more there, and no decoy reported.
//
// AEGIS_PII_QUALITY_SEED=N runs the same gate on the corpus of another seed (same templates, other
// values); AEGIS_PII_QUALITY_DUMP=FILE writes every miss to FILE.
//
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "aegis/privacy/detector.h"
#include "test_support.h"

namespace {

using nlohmann::json;
namespace privacy = aegis::privacy;
namespace test = aegis::test;

constexpr double kMinPrecision = 0.95;
constexpr double kMinRecall = 0.90;
constexpr std::size_t kMinInstances = 100;
constexpr std::size_t kExamples = 8;  // misses shown per entity type or decoy kind

const std::vector<std::string> kEntityTypes = {
    "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD",       "IBAN_CODE",          "US_SSN",
    "US_ITIN",       "UK_NHS",       "UK_NINO",           "US_PASSPORT",        "US_DRIVER_LICENSE",
    "IP_ADDRESS",    "MAC_ADDRESS",  "DATE_OF_BIRTH",     "MEDICAL_RECORD_NUMBER", "HEALTH_PLAN_NUMBER",
    "STREET_ADDRESS", "SECRET"};

struct Span {
  std::string type;  // entity type, or decoy kind
  std::size_t begin = 0, end = 0;
};

struct ScanUnit {
  std::string where;  // "customers.csv row 12 [ssn]", "notes.txt line 40"
  std::string file;
  std::uint64_t line = 0;  // text files: the 1-based line; 0 for fields
  std::string column;
  std::string text;
  std::vector<Span> entities;
  std::vector<Span> decoys;
};

// Up to kExamples of `all`, spread evenly over it (so that they come from every file), one a line.
std::string examples(const std::vector<std::string>& all, const std::string& prefix = "") {
  std::string out;
  const std::size_t n = std::min(all.size(), kExamples);
  for (std::size_t i = 0; i < n; ++i) out += "\n    " + prefix + all[i * all.size() / n];
  return out;
}

// The field name `aegis pii` gives the detector for a column: JSON key paths without array indices
// ("visits.0.date" -> "visits.date"), as pii_scan.cpp spells them.
std::string field_name(const std::string& column) {
  std::string out;
  std::size_t at = 0;
  while (at <= column.size()) {
    std::size_t dot = column.find('.', at);
    if (dot == std::string::npos) dot = column.size();
    const std::string part = column.substr(at, dot - at);
    const bool index = !part.empty() && part.find_first_not_of("0123456789") == std::string::npos;
    if (!index) out += (out.empty() ? "" : ".") + part;
    at = dot + 1;
  }
  return out;
}

bool overlaps(std::size_t b1, std::size_t e1, std::size_t b2, std::size_t e2) { return b1 < e2 && b2 < e1; }

// A printable excerpt of `text` around [begin, end), the span itself in [[ ]].
std::string excerpt(const std::string& text, std::size_t begin, std::size_t end) {
  constexpr std::size_t kAround = 40;
  begin = std::min(begin, text.size());
  end = std::min(std::max(end, begin), text.size());
  const std::size_t from = begin > kAround ? begin - kAround : 0;
  const std::size_t to = std::min(text.size(), end + kAround);
  std::string out = (from > 0 ? "..." : "") + text.substr(from, begin - from) + "[[" + text.substr(begin, end - begin) +
                    "]]" + text.substr(end, to - end) + (to < text.size() ? "..." : "");
  for (auto& c : out)
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  return out;
}

struct TypeStats {
  std::size_t labels = 0;        // true instances
  std::size_t found = 0;         // labels overlapped by a detection of the type
  std::size_t exact = 0;         // labels with a detection of exactly their span
  std::size_t detections = 0;    // detections of the type
  std::size_t true_positive = 0; // detections overlapping a label of the type
  std::vector<std::string> missed;           // labels not found
  std::vector<std::string> false_positives;  // detections matching no label of the type

  double precision() const { return detections == 0 ? 1.0 : double(true_positive) / double(detections); }
  double recall() const { return labels == 0 ? 0.0 : double(found) / double(labels); }
};

// Everything one pass over the corpus measured.
struct Scores {
  std::map<std::string, TypeStats> stats;  // by entity type
  std::map<std::string, std::size_t> decoys_total, decoys_reported;  // by decoy kind
  std::map<std::string, std::vector<std::string>> decoy_examples;
  std::vector<std::string> bad_spans;  // detections outside their text

  Scores() {
    for (const auto& type : kEntityTypes) stats[type];
  }

  // Scores one unit's detections against its labels and decoys (the matching the header describes).
  void add(const ScanUnit& unit, const std::vector<privacy::Detection>& all) {
    std::vector<privacy::Detection> detections;
    for (const auto& d : all) {
      if (d.begin <= d.end && d.end <= unit.text.size()) {
        detections.push_back(d);
      } else {
        bad_spans.push_back(unit.where + ": " + d.entity_type + " [" + std::to_string(d.begin) + ", " +
                            std::to_string(d.end) + ") in " + std::to_string(unit.text.size()) + " bytes");
      }
    }
    for (const auto& d : detections) {
      auto& s = stats[d.entity_type];
      ++s.detections;
      bool matched = false;
      std::string other;  // a label of another type under it
      for (const auto& label : unit.entities) {
        if (!overlaps(d.begin, d.end, label.begin, label.end)) continue;
        if (label.type == d.entity_type)
          matched = true;
        else
          other = label.type;
      }
      if (matched) {
        ++s.true_positive;
      } else {
        s.false_positives.push_back(unit.where + " " + d.rule_id + " score " + std::to_string(d.score).substr(0, 4) +
                                    (other.empty() ? "" : " (labelled " + other + ")") + ": " +
                                    excerpt(unit.text, d.begin, d.end));
      }
    }
    for (const auto& decoy : unit.decoys) {
      ++decoys_total[decoy.type];
      for (const auto& d : detections) {
        if (!overlaps(d.begin, d.end, decoy.begin, decoy.end)) continue;
        ++decoys_reported[decoy.type];
        decoy_examples[decoy.type].push_back(unit.where + " as " + d.entity_type + " (" + d.rule_id + "): " +
                                             excerpt(unit.text, d.begin, d.end));
        break;
      }
    }
    for (const auto& label : unit.entities) {
      auto& s = stats[label.type];
      ++s.labels;
      bool found = false, exact = false;
      for (const auto& d : detections) {
        if (d.entity_type != label.type || !overlaps(d.begin, d.end, label.begin, label.end)) continue;
        found = true;
        exact = exact || (d.begin == label.begin && d.end == label.end);
      }
      s.found += found;
      s.exact += exact;
      if (!found) {
        std::string instead;  // what, if anything, the detector reported there
        for (const auto& d : detections)
          if (overlaps(d.begin, d.end, label.begin, label.end)) instead += " reported as " + d.entity_type;
        s.missed.push_back(unit.where + instead + ": " + excerpt(unit.text, label.begin, label.end));
      }
    }
  }

  std::size_t decoys_hit() const {
    std::size_t n = 0;
    for (const auto& [kind, hit] : decoys_reported) n += hit;
    return n;
  }

  std::string table() const {
    std::ostringstream out;
    out << "| entity type | labels | detections | TP | FP | FN | precision | recall | exact spans |\n"
        << "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    out << std::fixed;
    for (const auto& [type, s] : stats) {
      out << "| " << type << " | " << s.labels << " | " << s.detections << " | " << s.true_positive << " | "
          << s.detections - s.true_positive << " | " << s.labels - s.found << " | " << std::setprecision(4)
          << s.precision() << " | " << s.recall() << " | " << std::setprecision(3)
          << (s.labels ? double(s.exact) / double(s.labels) : 0.0) << " |\n";
    }
    return out.str();
  }

  void dump(std::ostream& out, const std::string& pass) const {
    for (const auto& [type, s] : stats) {
      for (const auto& m : s.missed) out << pass << " " << type << " missed " << m << "\n";
      for (const auto& f : s.false_positives) out << pass << " " << type << " false-positive " << f << "\n";
    }
    for (const auto& [kind, hits] : decoy_examples)
      for (const auto& h : hits) out << pass << " " << kind << " decoy " << h << "\n";
  }
};

class PiiQuality : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<test::TempDir>("aegis_pii_corpus");
    const char* seed = std::getenv("AEGIS_PII_QUALITY_SEED");  // another corpus, same gate
    seed_ = seed && *seed ? std::atoi(seed) : 7;
    const std::string command = "/usr/bin/python3 '" + (test::source_dir() / "tests/fixtures/pii_corpus.py").string() +
                                "' '" + dir_->path.string() + "' --seed " + std::to_string(seed_);
    python_status_ = std::system(command.c_str());
    if (python_status_ != 0) return;
    read_units();
    try {
      detector_ = std::make_unique<privacy::Detector>();
    } catch (const std::exception& e) {
      detector_error_ = e.what();
      return;
    }
    score();
  }
  static void TearDownTestSuite() {
    detector_.reset();
    dir_.reset();
  }

  void SetUp() override {
    ASSERT_EQ(python_status_, 0) << "tests/fixtures/pii_corpus.py needs /usr/bin/python3 with Debian's "
                                    "python3-fake-factory and python3-cryptography";
    ASSERT_FALSE(units_.empty()) << "fields.jsonl is empty";
    ASSERT_TRUE(detector_error_.empty()) << "Detector{} threw: " << detector_error_;
  }

  static void read_units() {
    std::ifstream in(dir_->path / "fields.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      const auto object = json::parse(line);
      ScanUnit unit;
      unit.file = object.at("file").get<std::string>();
      if (object.contains("line")) unit.line = object.at("line").get<std::uint64_t>();
      unit.column = object.at("column").get<std::string>();
      unit.text = object.at("text").get<std::string>();
      std::ostringstream where;
      where << object.at("file").get<std::string>();
      if (object.contains("table")) where << ":" << object.at("table").get<std::string>();
      if (object.contains("row")) where << " row " << object.at("row").get<std::uint64_t>();
      if (object.contains("line")) where << " line " << object.at("line").get<std::uint64_t>();
      if (!unit.column.empty()) where << " [" << unit.column << "]";
      unit.where = where.str();
      for (const auto& e : object.at("entities"))
        unit.entities.push_back({e.at("entity_type").get<std::string>(), e.at("begin").get<std::size_t>(),
                                 e.at("end").get<std::size_t>()});
      for (const auto& d : object.at("decoys"))
        unit.decoys.push_back({d.at("kind").get<std::string>(), d.at("begin").get<std::size_t>(),
                               d.at("end").get<std::size_t>()});
      units_.push_back(std::move(unit));
    }
  }

  static void score() {
    for (const auto& unit : units_)
      units_scores_.add(unit, unit.column.empty() ? detector_->scan(unit.text)
                                                  : detector_->scan(unit.text, field_name(unit.column)));
    // The text files again, each scanned in one piece as `aegis pii` hands a chunk of lines to the
    // detector: the detections mapped back to their lines (a detection is scored on the line where it
    // begins, its end cut at that line's end).
    std::map<std::string, std::vector<const ScanUnit*>> text_files;
    for (const auto& unit : units_)
      if (unit.line) text_files[unit.file].push_back(&unit);
    for (auto& [file, lines] : text_files) {
      std::sort(lines.begin(), lines.end(), [](const ScanUnit* a, const ScanUnit* b) { return a->line < b->line; });
      std::string whole;
      std::vector<std::size_t> starts;
      for (const auto* unit : lines) {
        starts.push_back(whole.size());
        whole += unit->text;
        whole += '\n';
      }
      std::vector<std::vector<privacy::Detection>> per_line(lines.size());
      for (auto d : detector_->scan(whole)) {
        const std::size_t i = std::upper_bound(starts.begin(), starts.end(), d.begin) - starts.begin() - 1;
        d.begin -= starts[i];
        d.end = std::min(d.end - starts[i], lines[i]->text.size());
        per_line[i].push_back(d);
      }
      for (std::size_t i = 0; i < lines.size(); ++i) whole_scores_.add(*lines[i], per_line[i]);
    }
  }

  static inline std::unique_ptr<test::TempDir> dir_;
  static inline int python_status_ = -1;
  static inline int seed_ = 7;
  static inline std::unique_ptr<privacy::Detector> detector_;
  static inline std::string detector_error_;
  static inline std::vector<ScanUnit> units_;
  static inline Scores units_scores_;  // every unit scanned on its own, with its field name
  static inline Scores whole_scores_;  // the text files, each scanned whole
};

// The gate on one pass: precision and recall for every type with at least `min_labels` labels.
void expect_precision_and_recall(const Scores& scores, std::size_t min_labels, const std::string& pass) {
  for (const auto& type : kEntityTypes) {
    const auto& s = scores.stats.at(type);
    if (s.labels < min_labels) continue;
    const std::string missed = examples(s.missed), wrong = examples(s.false_positives);
    EXPECT_GE(s.precision(), kMinPrecision) << pass << ", " << type << ": " << s.detections - s.true_positive
                                            << " of " << s.detections << " detections match no " << type
                                            << " label, e.g." << wrong;
    EXPECT_GE(s.recall(), kMinRecall) << pass << ", " << type << ": " << s.labels - s.found << " of " << s.labels
                                      << " labels not found, e.g." << missed;
  }
}

// And no decoy reported, as anything.
void expect_no_decoys(const Scores& scores, const std::string& pass) {
  std::string shown;
  for (const auto& [kind, n] : scores.decoys_total) {
    const auto it = scores.decoys_reported.find(kind);
    const std::size_t hit = it == scores.decoys_reported.end() ? 0 : it->second;
    std::printf("decoy %-20s %6zu, reported %zu\n", kind.c_str(), n, hit);
    if (hit) shown += examples(scores.decoy_examples.at(kind), kind + ": ");
  }
  std::fflush(stdout);
  EXPECT_EQ(scores.decoys_hit(), 0u) << pass << ": decoys reported, e.g." << shown;
}

// The corpus holds enough of every type for the figures to mean something, the detector knows every
// type, and every span it reports lies inside the text it was given.
TEST_F(PiiQuality, CorpusAndDetectorCoverEveryType) {
  for (const auto& type : kEntityTypes)
    EXPECT_GE(units_scores_.stats.at(type).labels, kMinInstances) << type << ": too few labelled instances to mean much";
  for (const auto& [kind, n] : units_scores_.decoys_total) EXPECT_GE(n, 20u) << "decoy kind " << kind;
  const auto types = detector_->entity_types();
  const std::set<std::string> known(types.begin(), types.end());
  for (const auto& type : kEntityTypes) EXPECT_TRUE(known.count(type)) << type << " is not in entity_types()";
  for (const auto* scores : {&units_scores_, &whole_scores_})
    EXPECT_TRUE(scores->bad_spans.empty()) << scores->bad_spans.size() << " detections out of range, e.g. "
                                           << scores->bad_spans.front();
}

// Every unit on its own: the gate for all 17 types. With
// AEGIS_PII_QUALITY_DUMP=FILE set, every miss, false positive and decoy reported of both passes also
// goes to FILE, one a line: "<pass> <type> missed|false-positive <where>: <excerpt>".
TEST_F(PiiQuality, PrecisionAndRecallPerType) {
  std::printf("PII detector quality on tests/fixtures/pii_corpus.py --seed %d, %zu units one by one:\n%s", seed_,
              units_.size(), units_scores_.table().c_str());
  std::fflush(stdout);
  if (const char* path = std::getenv("AEGIS_PII_QUALITY_DUMP"); path && *path) {
    std::ofstream out(path);
    EXPECT_TRUE(out) << "cannot write " << path;
    units_scores_.dump(out, "units");
    whole_scores_.dump(out, "whole-text");
  }
  expect_precision_and_recall(units_scores_, 0, "units one by one");
  // Detections of types outside the corpus's list (a rule file adding its own): reported, not gated.
  for (const auto& [type, s] : units_scores_.stats)
    if (std::find(kEntityTypes.begin(), kEntityTypes.end(), type) == kEntityTypes.end())
      std::printf("note: %zu detections of %s, a type the corpus does not label\n", s.detections, type.c_str());
}

TEST_F(PiiQuality, NoDecoyReported) { expect_no_decoys(units_scores_, "units one by one"); }

// notes.txt and config_snippets.txt scanned whole, many lines in one scan() as `aegis pii` scans a text
// file: context words must not reach across a line into the next, and a rule must find in a block of
// lines what it finds in the line alone. The same gate for every type with 30 labels or more there.
TEST_F(PiiQuality, TextFilesScannedWhole) {
  std::printf("the text files scanned whole:\n%s", whole_scores_.table().c_str());
  std::fflush(stdout);
  expect_precision_and_recall(whole_scores_, 30, "text files scanned whole");
  expect_no_decoys(whole_scores_, "text files scanned whole");
}

}  // namespace
