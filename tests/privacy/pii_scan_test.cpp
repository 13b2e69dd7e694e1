// `aegis pii` over real files of every format it reads: what is found where (file, row or line,
// column), per-column counts, k-anonymity against an independent count, and hostile inputs (binary
// files, invalid UTF-8, a 10 MB line, broken CSV and JSON) scanned without a crash.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "aegis/core/error.h"
#include "aegis/privacy/pii_scan.h"
#include "test_support.h"

namespace aegis::privacy {
namespace {

namespace fs = std::filesystem;

// Valid by construction: a Luhn-valid Visa number, an SSN outside the forbidden areas, a real-shaped
// AWS key id, an e-mail address.
constexpr const char* kCard = "4539 1488 0343 6467";
constexpr const char* kSsn = "536-22-8841";
constexpr const char* kEmail = "maria.lopez@example.org";
constexpr const char* kAwsKey = "AKIA2OGYBAH6QTHKJXVW";

void write(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

const ColumnStats* column(const FileReport& file, const std::string& name) {
  for (const auto& c : file.columns)
    if (c.column == name) return &c;
  return nullptr;
}

std::uint64_t count(const ColumnStats* c, const std::string& type) {
  if (!c) return 0;
  auto it = c->entities.find(type);
  return it == c->entities.end() ? 0 : it->second;
}

const Occurrence* find(const PiiScanReport& report, const std::string& type, const std::string& column = "*") {
  for (const auto& o : report.occurrences)
    if (o.entity_type == type && (column == "*" || o.column == column)) return &o;
  return nullptr;
}

PiiScanOptions options() {
  PiiScanOptions o;
  o.threads = 2;
  o.max_occurrences = 0;
  return o;
}

TEST(PiiScan, CsvColumnsRowsAndSamples) {
  test::TempDir dir;
  const auto path = dir.path / "customers.csv";
  write(path, std::string("id,email,card,comment\n") + "1," + kEmail + "," + kCard + ",paid\n" +
                  "2,nobody,none,\"called back, \"\"ssn " + kSsn + "\"\" on file\"\n");
  const auto report = scan_pii({path.string()}, options());
  ASSERT_EQ(report.files.size(), 1u);
  const auto& file = report.files[0];
  EXPECT_EQ(file.format, DataFormat::Csv);
  EXPECT_EQ(file.records, 2u);
  EXPECT_EQ(count(column(file, "email"), "EMAIL_ADDRESS"), 1u);
  EXPECT_EQ(count(column(file, "card"), "CREDIT_CARD"), 1u);
  EXPECT_EQ(count(column(file, "comment"), "US_SSN"), 1u);
  EXPECT_EQ(count(column(file, "id"), "US_SSN") + column(file, "id")->entities.size(), 0u);

  const auto* card = find(report, "CREDIT_CARD");
  ASSERT_NE(card, nullptr);
  EXPECT_EQ(card->row, 1u);
  EXPECT_EQ(card->column, "card");
  EXPECT_EQ(card->begin, 0u);
  EXPECT_EQ(card->end, std::string(kCard).size());
  EXPECT_GE(card->score, 0.5);
  // the sample never shows the whole number
  EXPECT_EQ(card->sample.find("4539 1488 0343"), std::string::npos) << card->sample;
  const auto* ssn = find(report, "US_SSN");
  ASSERT_NE(ssn, nullptr);
  EXPECT_EQ(ssn->row, 2u);
  // offsets are within the unquoted field: `called back, "ssn 536-22-8841" on file`
  EXPECT_EQ(ssn->begin, std::string("called back, \"ssn ").size());

  // findings carry what a user needs to find the value again
  ASSERT_FALSE(report.findings.empty());
  bool found = false;
  for (const auto& f : report.findings) {
    if (f.rule_id.find("credit") == std::string::npos) continue;
    const auto props = nlohmann::json::parse(f.properties_json);
    EXPECT_EQ(props["entity_type"], "CREDIT_CARD");
    EXPECT_EQ(props["row"], 1);
    EXPECT_EQ(props["column"], "card");
    EXPECT_EQ(f.severity, core::Severity::High);
    EXPECT_FALSE(f.atlas.empty());
    found = true;
  }
  EXPECT_TRUE(found);
}

TEST(PiiScan, JsonLinesAndNestedJsonUseKeyPaths) {
  test::TempDir dir;
  write(dir.path / "patients.jsonl", std::string("{\"id\": 1, \"contact\": {\"email\": \"") + kEmail +
                                         "\"}}\n\n{\"id\": 2, \"contact\": {\"phones\": [\"x\"]}, \"ssn\": \"" + kSsn + "\"}\n");
  write(dir.path / "doc.json", std::string("[{\"user\": {\"card\": \"") + kCard + "\"}}, {\"user\": {\"card\": 4539148803436467}}]");
  const auto report = scan_pii({dir.path.string()}, options());
  ASSERT_EQ(report.files.size(), 2u);
  const auto& json = report.files[0].path.ends_with("doc.json") ? report.files[0] : report.files[1];
  const auto& jsonl = report.files[0].path.ends_with("doc.json") ? report.files[1] : report.files[0];
  EXPECT_EQ(jsonl.format, DataFormat::JsonLines);
  EXPECT_EQ(jsonl.records, 2u);
  EXPECT_EQ(count(column(jsonl, "contact.email"), "EMAIL_ADDRESS"), 1u);
  const auto* ssn = find(report, "US_SSN", "ssn");
  ASSERT_NE(ssn, nullptr);
  EXPECT_EQ(ssn->row, 2u);
  EXPECT_EQ(ssn->line, 3u);  // the blank line counts as a line, not as a record

  EXPECT_EQ(json.format, DataFormat::Json);
  EXPECT_EQ(json.records, 2u);
  // the card as a string and as a bare JSON number, both in the array's elements
  EXPECT_EQ(count(column(json, "user.card"), "CREDIT_CARD"), 2u);
  std::set<std::uint64_t> rows;
  for (const auto& o : report.occurrences)
    if (o.file == json.path) rows.insert(o.row);
  EXPECT_EQ(rows, (std::set<std::uint64_t>{1, 2}));
}

TEST(PiiScan, SqliteTablesAreReadOnlyAndPerColumn) {
  test::TempDir dir;
  const auto path = dir.path / "crm.sqlite";
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.string().c_str(), &db), SQLITE_OK);
  const std::string sql = std::string("CREATE TABLE people(name TEXT, email TEXT, note BLOB);") +
                          "CREATE TABLE \"odd \"\"name\"(secret TEXT);" + "INSERT INTO people VALUES('Ann', '" + kEmail +
                          "', 'ssn " + kSsn + "');" + "INSERT INTO people VALUES('Bob', NULL, NULL);" +
                          "INSERT INTO \"odd \"\"name\" VALUES('aws_access_key_id = " + kAwsKey + "');";
  ASSERT_EQ(sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  const auto before = fs::last_write_time(path);

  const auto report = scan_pii({path.string()}, options());
  ASSERT_EQ(report.files.size(), 2u);
  std::map<std::string, const FileReport*> tables;
  for (const auto& f : report.files) tables[f.table] = &f;
  ASSERT_TRUE(tables.count("people"));
  ASSERT_TRUE(tables.count("odd \"name"));
  EXPECT_EQ(tables["people"]->records, 2u);
  EXPECT_EQ(count(column(*tables["people"], "email"), "EMAIL_ADDRESS"), 1u);
  EXPECT_EQ(count(column(*tables["people"], "note"), "US_SSN"), 1u);
  EXPECT_EQ(count(column(*tables["odd \"name"], "secret"), "SECRET"), 1u);
  EXPECT_EQ(fs::last_write_time(path), before);  // read-only: nothing written, no journal
  EXPECT_FALSE(fs::exists(dir.path / "crm.sqlite-journal"));
}

TEST(PiiScan, TextLinesAcrossChunkBoundaries) {
  test::TempDir dir;
  const auto path = dir.path / "notes.txt";
  // entities placed around the 1 MiB chunk boundaries, each on a known line
  std::string text;
  std::map<std::uint64_t, std::string> expected_lines;  // line -> entity type
  std::uint64_t line = 1;
  const std::string filler(99, 'a');
  for (int block = 0; block < 3; ++block) {
    while (text.size() + 100 < static_cast<std::size_t>(block + 1) * (1u << 20) - 10) {
      text += filler + "\n";
      ++line;
    }
    text += std::string("contact ") + kEmail + " now\n";
    expected_lines[line++] = "EMAIL_ADDRESS";
  }
  text += std::string("card ") + kCard;  // no final newline
  expected_lines[line] = "CREDIT_CARD";
  write(path, text);
  const auto report = scan_pii({path.string()}, options());
  ASSERT_EQ(report.files.size(), 1u);
  EXPECT_EQ(report.files[0].records, line);
  std::map<std::uint64_t, std::string> seen;
  for (const auto& o : report.occurrences) {
    seen[o.line] = o.entity_type;
    EXPECT_EQ(o.row, 0u);
    if (o.entity_type == "EMAIL_ADDRESS") {
      EXPECT_EQ(o.begin, 8u);  // within its line
    }
  }
  EXPECT_EQ(seen, expected_lines);
  EXPECT_EQ(report.occurrences_total, expected_lines.size());  // nothing counted twice in the overlaps
}

TEST(PiiScan, KAnonymityMatchesAnIndependentCount) {
  test::TempDir dir;
  const auto path = dir.path / "survey.csv";
  std::mt19937 rng(11);
  std::string csv = "zip,dob,sex,answer\n";
  std::map<std::string, int> classes;
  std::map<std::string, int> without_dob;
  for (int i = 0; i < 400; ++i) {
    const std::string zip = std::to_string(10000 + rng() % 6);
    const std::string dob = std::to_string(1950 + rng() % 40);
    const std::string sex = rng() % 2 ? "F" : "m";
    csv += zip + "," + dob + "," + (i % 7 ? sex : " " + sex + " ") + ",yes\n";
    std::string s = sex;
    for (auto& c : s) c = static_cast<char>(std::tolower(c));
    ++classes[zip + "|" + dob + "|" + s];
    ++without_dob[zip + "|" + s];
  }
  write(path, csv);
  auto o = options();
  o.k_threshold = 3;
  const auto report = scan_pii({path.string()}, o);
  ASSERT_TRUE(report.files[0].k_anonymity.has_value());
  const auto& k = *report.files[0].k_anonymity;
  EXPECT_EQ(k.columns, (std::vector<std::string>{"zip", "dob", "sex"}));  // recognised by name
  int min = 1 << 30, unique = 0, at_risk = 0;
  for (const auto& [key, n] : classes) {
    min = std::min(min, n);
    unique += n == 1;
    if (n < 3) at_risk += n;
  }
  EXPECT_EQ(k.records, 400u);
  EXPECT_EQ(k.classes, classes.size());
  EXPECT_EQ(k.k, static_cast<std::uint64_t>(min));
  EXPECT_EQ(k.unique_records, static_cast<std::uint64_t>(unique));
  EXPECT_EQ(k.records_at_risk, static_cast<std::uint64_t>(at_risk));
  int min_without_dob = 1 << 30;
  for (const auto& [key, n] : without_dob) min_without_dob = std::min(min_without_dob, n);
  bool checked = false;
  for (const auto& [name, value] : k.k_without)
    if (name == "dob") {
      EXPECT_EQ(value, static_cast<std::uint64_t>(min_without_dob));
      checked = true;
    }
  EXPECT_TRUE(checked);
  bool finding = false;
  for (const auto& f : report.findings) finding |= f.rule_id == "pii.reidentification-risk";
  EXPECT_EQ(finding, min < 3);

  // named columns that are not there are a note, not a crash
  o.quasi_identifiers = {"zip", "postcode"};
  const auto named = scan_pii({path.string()}, o);
  EXPECT_FALSE(named.files[0].k_anonymity.has_value());
  ASSERT_FALSE(named.files[0].notes.empty());
  EXPECT_NE(named.files[0].notes[0].find("postcode"), std::string::npos);
}

TEST(PiiScan, HostileInputsAreScannedWithoutCrashing) {
  test::TempDir dir;
  std::uint32_t state = 5;
  const auto noise = test::pseudo_random_bytes(3u << 20, state);
  std::string binary(noise.begin(), noise.end());
  binary += std::string(" ") + kEmail + " ";  // still found inside binary data
  write(dir.path / "blob.bin", binary);
  write(dir.path / "long.txt", std::string(10u << 20, '7') + "\n" + kEmail + "\n");  // a 10 MB line of digits
  write(dir.path / "utf8.txt", std::string("caf\xC3 \xFF\xFE ") + kEmail + " \xED\xA0\x80\n");
  write(dir.path / "broken.csv", std::string("a,b\n1,\"unterminated ") + kEmail + "\n2,3\n");
  write(dir.path / "broken.jsonl", std::string("{\"a\": \"") + kEmail + "\"\n{\"b\": 1}\n");
  std::string deep(100000, '[');
  write(dir.path / "deep.json", deep + "\"" + kEmail + "\"");
  write(dir.path / "not.sqlite", std::string("SQLite format 3\0", 16) + std::string(200, '\x01'));
  write(dir.path / "empty.csv", "");

  const auto report = scan_pii({dir.path.string()}, options());
  std::map<std::string, const FileReport*> files;
  for (const auto& f : report.files) files[fs::path(f.path).filename().string()] = &f;
  for (const char* name : {"blob.bin", "long.txt", "utf8.txt", "broken.csv", "broken.jsonl", "deep.json"}) {
    ASSERT_TRUE(files.count(name)) << name;
    EXPECT_GE(files[name]->entities.count("EMAIL_ADDRESS"), 1u) << name << " should still be scanned";
  }
  EXPECT_EQ(files["long.txt"]->records, 2u);
  EXPECT_FALSE(files["broken.csv"]->notes.empty());
  EXPECT_FALSE(files["broken.jsonl"]->notes.empty());
  EXPECT_NE(files["deep.json"]->notes.at(0).find("deeper"), std::string::npos);
  ASSERT_TRUE(files.count("not.sqlite"));
  EXPECT_FALSE(files["not.sqlite"]->error.empty());
  bool unreadable = false;
  for (const auto& f : report.findings) unreadable |= f.rule_id == "pii.unreadable";
  EXPECT_TRUE(unreadable);

  EXPECT_THROW(scan_pii({(dir.path / "absent").string()}, options()), core::Error);
}

TEST(PiiScan, OccurrenceCapKeepsCountsCompleteAndOrder) {
  test::TempDir dir;
  std::string csv = "email\n";
  for (int i = 0; i < 3000; ++i) csv += "user" + std::to_string(i) + "@example.com\n";
  write(dir.path / "emails.csv", csv);
  auto o = options();
  o.max_occurrences = 25;
  o.threads = 2;
  const auto report = scan_pii({(dir.path / "emails.csv").string()}, o);
  EXPECT_EQ(report.occurrences_total, 3000u);
  EXPECT_EQ(report.entities.at("EMAIL_ADDRESS"), 3000u);
  ASSERT_EQ(report.occurrences.size(), 25u);
  for (std::size_t i = 0; i < 25; ++i) EXPECT_EQ(report.occurrences[i].row, i + 1);  // the first ones, in order
  EXPECT_EQ(report.findings.size(), 25u);

  o.max_records = 100;
  const auto limited = scan_pii({(dir.path / "emails.csv").string()}, o);
  EXPECT_EQ(limited.files[0].records, 100u);
  EXPECT_EQ(limited.occurrences_total, 100u);
}

TEST(PiiScan, FormatDetection) {
  EXPECT_EQ(detect_data_format("a.csv", "x,y"), DataFormat::Csv);
  EXPECT_EQ(detect_data_format("a.TSV", "x\ty"), DataFormat::Tsv);
  EXPECT_EQ(detect_data_format("a.ndjson", "{}"), DataFormat::JsonLines);
  EXPECT_EQ(detect_data_format("a.json", "{\"a\": 1}\n{\"a\": 2}\n"), DataFormat::JsonLines);
  EXPECT_EQ(detect_data_format("a.json", "{\n  \"a\": 1\n}\n"), DataFormat::Json);
  EXPECT_EQ(detect_data_format("a.bin", std::string("SQLite format 3\0", 16)), DataFormat::Sqlite);
  EXPECT_EQ(detect_data_format("README", "hello"), DataFormat::Text);
  EXPECT_EQ(parse_data_format("NDJSON"), DataFormat::JsonLines);
  EXPECT_FALSE(parse_data_format("xml").has_value());
}

}  // namespace
}  // namespace aegis::privacy
