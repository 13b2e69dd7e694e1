// `aegis pii`: personal data, health data and secrets in datasets. Reads CSV/TSV, JSON Lines, JSON
// documents, SQLite tables and plain text (anything else is scanned as bytes), streaming from a
// memory map with bounded memory, runs the Detector over every field (the column name is context),
// and reports per file and per column: entity counts, masked samples, each occurrence (capped),
// and the re-identification risk of quasi-identifier combinations (k-anonymity), as findings
// mapped to MITRE ATLAS and the NIST AI RMF.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "aegis/core/finding.h"
#include "aegis/privacy/detector.h"

namespace aegis::privacy {

enum class DataFormat { Csv, Tsv, JsonLines, Json, Sqlite, Text };
std::string_view to_string(DataFormat format);
// csv, tsv, jsonl (ndjson), json, sqlite, text; nullopt otherwise.
std::optional<DataFormat> parse_data_format(std::string_view name);
// From the extension, then the first bytes (SQLite's magic, '{'/'[' for JSON); Text otherwise.
DataFormat detect_data_format(const std::string& path, std::string_view head);

struct PiiScanOptions {
  DetectorOptions detector;
  std::size_t threads = 0;                     // 0 = every core
  std::optional<DataFormat> format;            // force one format for every file
  bool csv_header = true;                      // the first CSV record names the columns
  std::size_t max_occurrences = 1000;          // occurrences kept for the report (0 = all); counts are always complete
  std::size_t samples_per_column = 3;          // masked samples kept per column and entity type
  std::vector<std::string> quasi_identifiers;  // k-anonymity columns; empty = recognised by name (zip, dob, gender, ...)
  std::size_t k_threshold = 5;                 // classes smaller than this put records at risk
  std::uint64_t max_records = 0;               // per file or table; 0 = all
  std::size_t max_json_depth = 128;
  std::size_t max_field_bytes = 64u << 20;     // a single CSV field or JSON string longer than this is an error
};

// One detected entity in one field.
struct Occurrence {
  std::string entity_type;
  std::string rule_id;
  std::string file;
  std::string table;              // SQLite only
  std::string column;             // CSV header, JSON key path ('.'-joined), SQLite column; empty for text
  std::uint64_t row = 0;          // 1-based record (CSV data row, JSON Lines record, array element, table row); 0 for text
  std::uint64_t line = 0;         // 1-based line (text and JSON Lines; CSV: where the record starts)
  std::uint64_t begin = 0, end = 0;  // byte offsets within the field (text: within the line)
  double score = 0;
  std::string sample;             // masked
};

struct ColumnStats {
  std::string column;
  std::uint64_t values = 0;           // fields scanned
  std::uint64_t values_with_pii = 0;  // fields with at least one detection
  std::map<std::string, std::uint64_t> entities;           // entity type -> occurrences
  std::map<std::string, std::vector<std::string>> samples;  // entity type -> masked samples
};

struct KAnonymity {
  std::vector<std::string> columns;   // the quasi-identifiers, as named in the data
  std::uint64_t records = 0;
  std::uint64_t classes = 0;          // distinct combinations
  std::uint64_t k = 0;                // the smallest class
  std::uint64_t unique_records = 0;   // records alone in their class (re-identifiable outright)
  std::uint64_t records_at_risk = 0;  // records in classes smaller than the threshold
  double average_risk = 0;            // classes / records: expected share re-identified by a prosecutor
  std::vector<std::pair<std::string, std::uint64_t>> k_without;  // k after dropping each column
  std::string note;                   // why it was not computed, when it was not
};

struct FileReport {
  std::string path;
  std::string table;  // SQLite: one report per table
  DataFormat format = DataFormat::Text;
  std::uint64_t bytes = 0;
  std::uint64_t records = 0;  // rows, records or lines read
  std::vector<ColumnStats> columns;
  std::map<std::string, std::uint64_t> entities;
  std::optional<KAnonymity> k_anonymity;
  std::vector<std::string> notes;  // what could not be read and how it was handled
  std::string error;               // set when the file could not be read at all
};

struct PiiScanReport {
  std::vector<FileReport> files;
  std::vector<Occurrence> occurrences;  // sorted by file, row/line, column, offset; capped
  std::uint64_t occurrences_total = 0;
  std::map<std::string, std::uint64_t> entities;
  std::uint64_t bytes = 0;
  double seconds = 0;
  std::vector<core::Finding> findings;  // one per kept occurrence, one per risky k-anonymity result, errors
};

using PiiProgress = std::function<void(std::uint64_t bytes_done, std::uint64_t bytes_total)>;

// Scans files and folders (recursively; symbolic links are not followed). Throws core::Error when a
// path does not exist; unreadable or malformed files are reported in FileReport::error/notes and
// scanned as far as they can be.
PiiScanReport scan_pii(const std::vector<std::string>& paths, const PiiScanOptions& options,
                       const PiiProgress& progress = {});

// The severity, ATLAS techniques and NIST AI RMF subcategories of an entity type's findings.
core::Severity pii_severity(std::string_view entity_type);

}  // namespace aegis::privacy
