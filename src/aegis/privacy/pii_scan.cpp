#include "aegis/privacy/pii_scan.h"

#include <sqlite3.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <semaphore>
#include <unordered_map>

#include "aegis/core/error.h"
#include "aegis/core/mapped_file.h"
#include "aegis/core/thread_pool.h"
#include "aegis/formats/csv_table.h"

namespace aegis::privacy {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kBatchBytes = 1u << 20;       // text handed to one worker job
constexpr std::size_t kTextChunk = 1u << 20;        // plain text is cut into pieces of about this size
constexpr std::size_t kChunkLookBehind = 256;       // context a chunk sees before its start
constexpr std::size_t kChunkLookAhead = 16u << 10;  // an entity that starts in a chunk may end this far past it
constexpr std::uint64_t kMaxClasses = 50'000'000;   // k-anonymity gives up above this many distinct combinations

std::string lower(std::string_view text) {
  std::string out(text);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string trimmed_lower(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return lower(text);
}

// Column names that usually hold quasi-identifiers (Sweeney: ZIP code, birth date and sex single
// out most people), compared without case, spaces, dashes or underscores.
bool looks_like_quasi_identifier(std::string_view name) {
  std::string key;
  for (char c : name)
    if (std::isalnum(static_cast<unsigned char>(c))) key += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  static const char* const kNames[] = {"zip", "zipcode", "postcode", "postalcode", "dob", "dateofbirth", "birthdate",
                                       "birthday", "birthyear", "yearofbirth", "age", "gender", "sex", "race",
                                       "ethnicity", "city", "state", "county", "maritalstatus", "occupation",
                                       "nationality", "jobtitle", "job"};
  return std::any_of(std::begin(kNames), std::end(kNames), [&](const char* n) { return key == n; });
}

std::uint64_t mix(std::uint64_t h, std::string_view value) {
  // FNV-1a over the value, then a separator, so that ("ab","c") and ("a","bc") differ
  for (unsigned char c : value) h = (h ^ c) * 0x100000001b3ULL;
  return (h ^ 0xff) * 0x100000001b3ULL;
}

// Equivalence classes of the quasi-identifier tuple, and of the tuple without each column.
class KAnonymityCounter {
 public:
  explicit KAnonymityCounter(std::vector<std::string> columns) : columns_(std::move(columns)), counts_(columns_.size() + 1) {}
  const std::vector<std::string>& columns() const { return columns_; }

  void add(const std::vector<std::string>& values) {
    if (overflow_) return;
    ++records_;
    std::vector<std::string> normalised(values.size());
    for (std::size_t i = 0; i < values.size(); ++i) normalised[i] = trimmed_lower(values[i]);
    for (std::size_t skip = 0; skip <= columns_.size(); ++skip) {
      if (columns_.size() == 1 && skip < columns_.size()) continue;  // nothing left without it
      std::uint64_t h = 0xcbf29ce484222325ULL;
      for (std::size_t i = 0; i < normalised.size(); ++i)
        if (i != skip) h = mix(h, normalised[i]);
      ++counts_[skip][h];
    }
    if (counts_.back().size() > kMaxClasses) overflow_ = true;
  }

  KAnonymity result(std::size_t threshold) const {
    KAnonymity out;
    out.columns = columns_;
    out.records = records_;
    if (overflow_) {
      out.note = "more than " + std::to_string(kMaxClasses) + " distinct combinations; not computed";
      return out;
    }
    if (records_ == 0) {
      out.note = "no records";
      return out;
    }
    const auto& full = counts_.back();
    out.classes = full.size();
    out.k = UINT64_MAX;
    for (const auto& [hash, count] : full) {
      out.k = std::min<std::uint64_t>(out.k, count);
      if (count == 1) ++out.unique_records;
      if (count < threshold) out.records_at_risk += count;
    }
    out.average_risk = static_cast<double>(out.classes) / static_cast<double>(records_);
    if (columns_.size() > 1)
      for (std::size_t skip = 0; skip < columns_.size(); ++skip) {
        std::uint64_t k = UINT64_MAX;
        for (const auto& [hash, count] : counts_[skip]) k = std::min<std::uint64_t>(k, count);
        out.k_without.emplace_back(columns_[skip], k);
      }
    return out;
  }

 private:
  std::vector<std::string> columns_;
  std::vector<std::unordered_map<std::uint64_t, std::uint32_t>> counts_;  // [skip]; the last is the full tuple
  std::uint64_t records_ = 0;
  bool overflow_ = false;
};

// A field to scan, copied into its batch (CSV, JSON and SQLite values) or pointing into the mapped
// file (plain-text chunks, which carry their window and line bookkeeping).
struct Unit {
  std::uint32_t column = 0;
  std::uint64_t row = 0, line = 0;
  std::size_t offset = 0, length = 0;  // into Batch::storage, or into the mapped file for chunks
  // plain-text chunks: detections are kept when they begin in [keep_begin, keep_end) of the
  // window [offset, offset + length) (absolute file offsets); `line` is the line at offset
  bool chunk = false;
  std::size_t keep_begin = 0, keep_end = 0;
};

struct FoundEntity {
  std::uint32_t column;
  std::uint64_t row, line;
  Detection detection;  // begin/end relative to the field (text: to the line)
  std::string sample;
};

struct BatchResult {
  std::size_t file = 0;     // index into the file states
  std::size_t sequence = 0; // order within the whole scan
  std::vector<FoundEntity> found;
  std::uint64_t found_total = 0;
  std::vector<ColumnStats> columns;  // indexed like the file's columns (grown as needed)
};

struct Batch {
  std::size_t file = 0;
  std::size_t sequence = 0;
  std::string storage;
  std::vector<Unit> units;
  const char* external = nullptr;  // the mapped file, for chunks
  std::shared_ptr<core::MappedFile> mapping;  // kept alive until the chunk is scanned
};

struct FileState {
  FileReport report;
  std::vector<std::string> column_names;
  std::unordered_map<std::string, std::uint32_t> column_index;

  std::uint32_t column(const std::string& name) {
    auto [it, added] = column_index.emplace(name, static_cast<std::uint32_t>(column_names.size()));
    if (added) column_names.push_back(name);
    return it->second;
  }
};

class Scanner {
 public:
  Scanner(const PiiScanOptions& options, const PiiProgress& progress)
      : options_(options),
        detector_(options.detector),
        pool_(options.threads),
        in_flight_(static_cast<std::ptrdiff_t>(2 * pool_.size() + 2)),
        progress_(progress) {}

  PiiScanReport run(const std::vector<std::string>& paths) {
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::pair<std::string, std::uint64_t>> files;
    for (const auto& path : paths) collect(path, files);
    for (const auto& [path, size] : files) total_bytes_ += size;

    for (const auto& [path, size] : files) {
      try {
        scan_file(path, size);
      } catch (const core::Error& e) {
        auto& state = new_state(path, DataFormat::Text);
        state.report.error = e.what();
      }
    }
    flush();
    pool_.wait();
    auto report = assemble();
    report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return report;
  }

 private:
  static void collect(const std::string& path, std::vector<std::pair<std::string, std::uint64_t>>& files) {
    std::error_code ec;
    const auto status = fs::symlink_status(path, ec);
    if (ec || !fs::exists(status)) throw core::Error("no such file or folder: " + path, "check the path");
    if (fs::is_regular_file(status)) {
      files.emplace_back(path, fs::file_size(path, ec));
      return;
    }
    if (!fs::is_directory(status)) return;
    std::vector<std::pair<std::string, std::uint64_t>> found;
    for (auto it = fs::recursive_directory_iterator(path, fs::directory_options::skip_permission_denied, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_symlink()) continue;
      if (it->is_regular_file()) found.emplace_back(it->path().string(), it->file_size());
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }

  FileState& new_state(const std::string& path, DataFormat format, const std::string& table = {}) {
    auto state = std::make_unique<FileState>();
    state->report.path = path;
    state->report.format = format;
    state->report.table = table;
    std::lock_guard lock(columns_mutex_);  // workers read states_ under it
    states_.push_back(std::move(state));
    return *states_.back();
  }

  // ---- batches ---------------------------------------------------------------------------------

  void add_field(std::size_t file, std::uint32_t column, std::uint64_t row, std::uint64_t line, std::string_view text) {
    if (text.empty()) return;
    if (!batch_ || batch_->file != file) start_batch(file);
    Unit unit;
    unit.column = column;
    unit.row = row;
    unit.line = line;
    unit.offset = batch_->storage.size();
    unit.length = text.size();
    batch_->storage.append(text);
    batch_->units.push_back(unit);
    if (batch_->storage.size() >= kBatchBytes) flush();
  }

  void start_batch(std::size_t file) {
    flush();
    batch_ = std::make_unique<Batch>();
    batch_->file = file;
    batch_->sequence = next_sequence_++;
  }

  void flush() {
    if (!batch_) return;
    if (batch_->units.empty()) {
      batch_.reset();
      return;
    }
    in_flight_.acquire();
    auto batch = std::shared_ptr<Batch>(std::move(batch_));
    pool_.submit([this, batch] {
      auto result = scan_batch(*batch);
      {
        std::lock_guard lock(results_mutex_);
        results_.push_back(std::move(result));
      }
      in_flight_.release();
    });
  }

  std::unique_ptr<BatchResult> scan_batch(const Batch& batch) {
    auto result = std::make_unique<BatchResult>();
    result->file = batch.file;
    result->sequence = batch.sequence;
    std::vector<std::string> column_names;
    {
      std::lock_guard lock(columns_mutex_);  // the producer adds files and columns as it reads
      column_names = states_[batch.file]->column_names;
    }
    const std::size_t keep = options_.max_occurrences;
    for (const auto& unit : batch.units) {
      if (result->columns.size() <= unit.column) result->columns.resize(unit.column + 1);
      auto& stats = result->columns[unit.column];
      ++stats.values;
      const char* base = unit.chunk ? batch.external : batch.storage.data();
      const std::string_view text(base + unit.offset, unit.length);
      const std::string_view field = unit.column < column_names.size() ? std::string_view(column_names[unit.column]) : "";
      auto detections = detector_.scan(text, field);
      bool any = false;
      std::uint64_t line = unit.line;
      std::size_t line_start = 0, counted_to = 0;  // within text: where `line` starts, and how far newlines are counted
      for (auto& d : detections) {
        std::uint64_t d_line = unit.line;
        std::size_t rel_begin = d.begin, rel_end = d.end;
        if (unit.chunk) {
          const std::size_t absolute = unit.offset + d.begin;
          if (absolute < unit.keep_begin || absolute >= unit.keep_end) continue;
          for (; counted_to < d.begin; ++counted_to)
            if (text[counted_to] == '\n') {
              ++line;
              line_start = counted_to + 1;
            }
          d_line = line;
          rel_begin = d.begin - line_start;
          rel_end = d.end - line_start;
        }
        any = true;
        ++stats.entities[d.entity_type];
        ++result->found_total;
        std::string sample = masked_sample(text.substr(d.begin, d.end - d.begin), d.entity_type);
        auto& samples = stats.samples[d.entity_type];
        if (samples.size() < options_.samples_per_column) samples.push_back(sample);
        if (keep == 0 || result->found.size() < keep) {
          FoundEntity found{unit.column, unit.row, d_line, d, std::move(sample)};
          found.detection.begin = rel_begin;
          found.detection.end = rel_end;
          result->found.push_back(std::move(found));
        }
      }
      if (any) ++stats.values_with_pii;
    }
    return result;
  }

  // ---- formats ---------------------------------------------------------------------------------

  void scan_file(const std::string& path, std::uint64_t size) {
    if (size == 0) {
      new_state(path, options_.format.value_or(DataFormat::Text));
      return;
    }
    // SQLite is read through its own library, not the mapping
    std::string head;
    {
      core::MappedFile probe(path);
      const auto bytes = probe.bytes();
      head.assign(reinterpret_cast<const char*>(bytes.data()), std::min<std::size_t>(bytes.size(), 512));
    }
    const DataFormat format = options_.format.value_or(detect_data_format(path, head));
    if (format == DataFormat::Sqlite) {
      scan_sqlite(path, size);
      return;
    }
    mapping_ = std::make_shared<core::MappedFile>(path);
    const std::string_view data(reinterpret_cast<const char*>(mapping_->bytes().data()), mapping_->size());
    const std::size_t index = states_.size();
    auto& state = new_state(path, format);
    state.report.bytes = size;
    switch (format) {
      case DataFormat::Csv:
      case DataFormat::Tsv: scan_csv(index, data, format == DataFormat::Tsv ? '\t' : ','); break;
      case DataFormat::JsonLines: scan_json_lines(index, data); break;
      case DataFormat::Json: scan_json(index, data); break;
      default: scan_text(index, data, 0, 1); break;
    }
    flush();
    mapping_.reset();  // the chunks still queued hold it
    advance(size);
  }

  void advance(std::uint64_t bytes) {
    done_bytes_ += bytes;
    if (progress_) progress_(done_bytes_, total_bytes_);
  }

  std::vector<std::string> quasi_identifiers_for(const std::vector<std::string>& columns, std::vector<std::size_t>& where,
                                                 FileState& state) {
    where.clear();
    std::vector<std::string> chosen;
    if (!options_.quasi_identifiers.empty()) {
      for (const auto& wanted : options_.quasi_identifiers) {
        auto it = std::find_if(columns.begin(), columns.end(), [&](const std::string& c) { return lower(c) == lower(wanted); });
        if (it == columns.end()) {
          state.report.notes.push_back("k-anonymity: no column named '" + wanted + "'");
          where.clear();
          return {};
        }
        where.push_back(static_cast<std::size_t>(it - columns.begin()));
        chosen.push_back(*it);
      }
      return chosen;
    }
    for (std::size_t i = 0; i < columns.size(); ++i)
      if (looks_like_quasi_identifier(columns[i])) {
        where.push_back(i);
        chosen.push_back(columns[i]);
      }
    if (chosen.size() < 2) {
      where.clear();
      return {};
    }
    return chosen;
  }

  void scan_csv(std::size_t index, std::string_view data, char delimiter) {
    auto& state = *states_[index];
    formats::CsvOptions csv;
    csv.delimiter = delimiter;
    csv.header = formats::CsvHeader::Absent;
    csv.allow_ragged = true;
    csv.max_field_bytes = options_.max_field_bytes;
    csv.max_rows = SIZE_MAX;
    csv.max_columns = 1 << 16;
    formats::CsvReader reader({reinterpret_cast<const std::uint8_t*>(data.data()), data.size()}, csv);
    std::vector<std::string_view> fields;
    std::vector<std::uint32_t> column_of;
    std::vector<std::string> header;
    std::unique_ptr<KAnonymityCounter> k;
    std::vector<std::size_t> qi_where;
    std::vector<std::string> qi_values;
    std::uint64_t row = 0, last_offset = 0;
    try {
      while (reader.next(fields)) {
        if (options_.csv_header && reader.records_read() == 1) {
          for (auto f : fields) header.emplace_back(f);
          {
            std::lock_guard lock(columns_mutex_);
            for (const auto& h : header) column_of.push_back(state.column(h));
          }
          auto chosen = quasi_identifiers_for(header, qi_where, state);
          if (!chosen.empty()) k = std::make_unique<KAnonymityCounter>(chosen);
          continue;
        }
        ++row;
        while (column_of.size() < fields.size()) {
          std::lock_guard lock(columns_mutex_);
          column_of.push_back(state.column(header.size() > column_of.size() ? header[column_of.size()]
                                                                            : "column " + std::to_string(column_of.size() + 1)));
        }
        for (std::size_t c = 0; c < fields.size(); ++c) add_field(index, column_of[c], row, reader.record_line(), fields[c]);
        if (k) {
          qi_values.assign(qi_where.size(), {});
          for (std::size_t i = 0; i < qi_where.size(); ++i)
            if (qi_where[i] < fields.size()) qi_values[i] = fields[qi_where[i]];
          k->add(qi_values);
        }
        if (reader.record_offset() - last_offset > (8u << 20)) {
          advance(reader.record_offset() - last_offset);
          last_offset = reader.record_offset();
        }
        if (options_.max_records && row >= options_.max_records) {
          state.report.notes.push_back("stopped after " + std::to_string(row) + " records (--max-records)");
          break;
        }
      }
    } catch (const core::FormatError& e) {
      // the rest of the file is still scanned, as text, so that a stray quote cannot hide anything
      const std::uint64_t from = std::min<std::uint64_t>(e.offset(), data.size());
      state.report.notes.push_back(std::string("not valid CSV from byte ") + std::to_string(from) + " (" + e.what() +
                                   "); the rest was scanned as text");
      std::uint64_t line = 1 + static_cast<std::uint64_t>(std::count(data.begin(), data.begin() + from, '\n'));
      const std::size_t line_start = data.rfind('\n', from ? from - 1 : 0);
      const std::size_t start = line_start == std::string_view::npos || from == 0 ? 0 : line_start + 1;
      if (start == 0) line = 1;
      scan_text(index, data, start, line);
    }
    state.report.records = row;
    if (k) state.report.k_anonymity = k->result(options_.k_threshold);
  }

  // Plain text: the mapped bytes in chunks, each scanned with a little context on either side.
  void scan_text(std::size_t index, std::string_view data, std::size_t from, std::uint64_t first_line) {
    flush();
    std::uint32_t column;
    {
      std::lock_guard lock(columns_mutex_);
      column = states_[index]->column("");
    }
    std::uint64_t line = first_line;
    std::size_t pos = from;
    while (pos < data.size()) {
      std::size_t end = std::min(data.size(), pos + kTextChunk);
      if (end < data.size()) {  // end at a line break when there is one near
        const auto nl = data.rfind('\n', end);
        if (nl != std::string_view::npos && nl > pos + kTextChunk / 2) end = nl + 1;
      }
      const std::size_t window_begin = pos >= from + kChunkLookBehind ? pos - kChunkLookBehind : from;
      const std::size_t window_end = std::min(data.size(), end + kChunkLookAhead);
      // the line number at window_begin
      const std::uint64_t lines_in_lookbehind =
          static_cast<std::uint64_t>(std::count(data.begin() + window_begin, data.begin() + pos, '\n'));
      auto batch = std::make_unique<Batch>();
      batch->file = index;
      batch->sequence = next_sequence_++;
      batch->external = data.data();
      batch->mapping = mapping_;
      Unit unit;
      unit.chunk = true;
      unit.column = column;
      unit.offset = window_begin;
      unit.length = window_end - window_begin;
      unit.keep_begin = pos;
      unit.keep_end = end;
      unit.line = line - lines_in_lookbehind;
      batch->units.push_back(unit);
      batch_ = std::move(batch);
      flush();
      line += static_cast<std::uint64_t>(std::count(data.begin() + pos, data.begin() + end, '\n'));
      pos = end;
    }
    auto& report = states_[index]->report;
    report.records = line - 1 + (data.empty() || data.back() == '\n' ? 0 : 1);
  }

  // A SAX handler that scans every scalar with its key path as the column.
  class JsonFields : public nlohmann::json_sax<nlohmann::json> {
   public:
    JsonFields(Scanner& scanner, std::size_t index, std::size_t max_depth, std::uint64_t line, bool records_are_top_level_elements)
        : scanner_(scanner), index_(index), max_depth_(max_depth), line_(line), elements_(records_are_top_level_elements) {}

    std::uint64_t row = 0;        // current record
    std::string error;
    KAnonymityCounter* k = nullptr;
    std::vector<std::string> qi_values;
    const std::vector<std::string>* qi_paths = nullptr;

    bool null() override { return true; }
    bool boolean(bool) override { return true; }
    bool number_integer(number_integer_t value) override { return scalar(std::to_string(value)); }
    bool number_unsigned(number_unsigned_t value) override { return scalar(std::to_string(value)); }
    bool number_float(number_float_t, const string_t& text) override { return scalar(text); }
    bool string(string_t& value) override { return scalar(value); }
    bool binary(binary_t&) override { return true; }
    bool start_object(std::size_t) override { return open(false); }
    bool end_object() override { return close(); }
    bool start_array(std::size_t) override { return open(true); }
    bool end_array() override { return close(); }
    bool key(string_t& name) override {
      if (!stack_.empty()) stack_.back().key = name;
      return true;
    }
    bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) override {
      error = "not valid JSON at byte " + std::to_string(position) + ": " + e.what();
      return false;
    }

   private:
    struct Level {
      bool array;
      std::string key;
    };

    bool open(bool array) {
      if (stack_.size() >= max_depth_) {
        error = "nested deeper than " + std::to_string(max_depth_) + " levels";
        return false;
      }
      // a record starts at the root (JSON Lines) or at each element of a root array (JSON)
      if ((elements_ && stack_.size() == 1 && stack_[0].array) || (!elements_ && stack_.empty())) begin_record();
      stack_.push_back({array, {}});
      return true;
    }
    bool close() {
      stack_.pop_back();
      if ((elements_ && stack_.size() == 1 && stack_[0].array) || (!elements_ && stack_.empty())) end_record();
      return true;
    }
    void begin_record() {
      ++row;
      if (k) qi_values.assign(qi_paths->size(), {});
    }
    void end_record() {
      if (k) k->add(qi_values);
    }
    std::string path() const {
      std::string out;
      const std::size_t first = elements_ ? 2 : 1;  // the record's own keys start below the root array
      for (std::size_t i = first; i <= stack_.size(); ++i) {
        const auto& level = stack_[i - 1];
        if (level.array) continue;
        if (!out.empty()) out += '.';
        out += level.key;
      }
      return out;
    }
    bool scalar(const std::string& value) {
      if (elements_ && stack_.size() == 1 && stack_[0].array) ++row;  // a scalar element is a record too
      const std::string column = path();
      std::uint32_t id;
      {
        std::lock_guard lock(scanner_.columns_mutex_);
        id = scanner_.states_[index_]->column(column);
      }
      scanner_.add_field(index_, id, std::max<std::uint64_t>(row, 1), line_, value);
      if (k)
        for (std::size_t i = 0; i < qi_paths->size(); ++i)
          if (lower((*qi_paths)[i]) == lower(column)) qi_values[i] = value;
      return true;
    }

    Scanner& scanner_;
    std::size_t index_;
    std::size_t max_depth_;
    std::uint64_t line_;
    bool elements_;
    std::vector<Level> stack_;
  };

  std::unique_ptr<KAnonymityCounter> json_k_anonymity() const {
    if (options_.quasi_identifiers.empty()) return nullptr;  // JSON has no header to recognise names from
    return std::make_unique<KAnonymityCounter>(options_.quasi_identifiers);
  }

  void scan_json_lines(std::size_t index, std::string_view data) {
    auto& state = *states_[index];
    auto k = json_k_anonymity();
    std::uint64_t line = 0, records = 0, bad_lines = 0;
    std::size_t pos = 0;
    std::uint64_t last_advance = 0;
    while (pos < data.size()) {
      auto nl = data.find('\n', pos);
      if (nl == std::string_view::npos) nl = data.size();
      const std::string_view text = data.substr(pos, nl - pos);
      ++line;
      if (text.find_first_not_of(" \t\r") != std::string_view::npos) {
        ++records;
        JsonFields handler(*this, index, options_.max_json_depth, line, false);
        handler.row = records - 1;
        if (k) {
          handler.k = k.get();
          handler.qi_paths = &options_.quasi_identifiers;
        }
        const bool ok = nlohmann::json::sax_parse(text.begin(), text.end(), &handler);
        if (!ok) {
          // what a broken line holds is still scanned, as text
          if (++bad_lines <= 10) state.report.notes.push_back("line " + std::to_string(line) + ": " + handler.error + "; scanned as text");
          std::uint32_t column;
          {
            std::lock_guard lock(columns_mutex_);
            column = state.column("");
          }
          add_field(index, column, records, line, text);
        }
        if (options_.max_records && records >= options_.max_records) {
          state.report.notes.push_back("stopped after " + std::to_string(records) + " records (--max-records)");
          break;
        }
      }
      pos = nl + 1;
      if (pos - last_advance > (8u << 20)) {
        advance(pos - last_advance);
        last_advance = pos;
      }
    }
    if (bad_lines > 10) state.report.notes.push_back(std::to_string(bad_lines) + " lines in all were not valid JSON");
    state.report.records = records;
    if (k) state.report.k_anonymity = k->result(options_.k_threshold);
  }

  void scan_json(std::size_t index, std::string_view data) {
    auto& state = *states_[index];
    const auto first = data.find_first_not_of(" \t\r\n\xEF\xBB\xBF");
    const bool root_array = first != std::string_view::npos && data[first] == '[';
    auto k = root_array ? json_k_anonymity() : nullptr;
    JsonFields handler(*this, index, options_.max_json_depth, 0, root_array);
    if (k) {
      handler.k = k.get();
      handler.qi_paths = &options_.quasi_identifiers;
    }
    const bool ok = nlohmann::json::sax_parse(data.begin(), data.end(), &handler);
    state.report.records = std::max<std::uint64_t>(handler.row, 1);
    if (!ok) {
      state.report.notes.push_back(handler.error + "; the whole file was scanned as text as well");
      scan_text(index, data, 0, 1);
    }
    if (k) state.report.k_anonymity = k->result(options_.k_threshold);
  }

  void scan_sqlite(const std::string& path, std::uint64_t size) {
    sqlite3* db = nullptr;
    // a URI, so that the file is opened read-only and immutable (no locks, no journal); '%', '?'
    // and '#' in the name are escaped so that they stay part of the path
    std::string uri = "file:";
    for (char c : path) {
      if (c == '%' || c == '?' || c == '#') {
        char buffer[4];
        std::snprintf(buffer, sizeof buffer, "%%%02X", static_cast<unsigned char>(c));
        uri += buffer;
      } else {
        uri += c;
      }
    }
    uri += "?mode=ro&immutable=1";
    const int rc = sqlite3_open_v2(uri.c_str(), &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI, nullptr);
    std::unique_ptr<sqlite3, decltype(&sqlite3_close)> guard(db, &sqlite3_close);
    if (rc != SQLITE_OK) {
      auto& state = new_state(path, DataFormat::Sqlite);
      state.report.bytes = size;
      state.report.error = std::string("cannot open as SQLite: ") + (db ? sqlite3_errmsg(db) : "out of memory");
      return;
    }
    std::vector<std::string> tables;
    {
      sqlite3_stmt* stmt = nullptr;
      if (sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name", -1, &stmt, nullptr) != SQLITE_OK) {
        auto& state = new_state(path, DataFormat::Sqlite);
        state.report.bytes = size;
        state.report.error = std::string("not a readable SQLite database: ") + sqlite3_errmsg(db);
        return;
      }
      while (sqlite3_step(stmt) == SQLITE_ROW)
        if (auto* name = sqlite3_column_text(stmt, 0)) tables.emplace_back(reinterpret_cast<const char*>(name));
      sqlite3_finalize(stmt);
    }
    if (tables.empty()) {
      auto& state = new_state(path, DataFormat::Sqlite);
      state.report.bytes = size;
      state.report.notes.push_back("no tables");
    }
    for (const auto& table : tables) {
      const std::size_t index = states_.size();
      auto& state = new_state(path, DataFormat::Sqlite, table);
      state.report.bytes = tables.size() == 1 ? size : 0;
      std::string quoted = "\"";
      for (char c : table) quoted += c == '"' ? std::string("\"\"") : std::string(1, c);
      quoted += "\"";
      sqlite3_stmt* stmt = nullptr;
      if (sqlite3_prepare_v2(db, ("SELECT * FROM " + quoted).c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
        state.report.notes.push_back(std::string("cannot read table: ") + sqlite3_errmsg(db));
        continue;
      }
      const int columns = sqlite3_column_count(stmt);
      std::vector<std::string> names;
      std::vector<std::uint32_t> ids;
      for (int c = 0; c < columns; ++c) {
        const char* name = sqlite3_column_name(stmt, c);
        names.emplace_back(name ? name : "column " + std::to_string(c + 1));
      }
      {
        std::lock_guard lock(columns_mutex_);
        for (const auto& n : names) ids.push_back(state.column(n));
      }
      std::vector<std::size_t> qi_where;
      auto chosen = quasi_identifiers_for(names, qi_where, state);
      std::unique_ptr<KAnonymityCounter> k;
      if (!chosen.empty()) k = std::make_unique<KAnonymityCounter>(chosen);
      std::vector<std::string> qi_values;
      std::uint64_t row = 0;
      int step;
      while ((step = sqlite3_step(stmt)) == SQLITE_ROW) {
        ++row;
        if (k) qi_values.assign(qi_where.size(), {});
        for (int c = 0; c < columns; ++c) {
          const int type = sqlite3_column_type(stmt, c);
          if (type == SQLITE_NULL) continue;
          const void* bytes = type == SQLITE_BLOB ? sqlite3_column_blob(stmt, c) : sqlite3_column_text(stmt, c);
          const int length = sqlite3_column_bytes(stmt, c);
          if (!bytes || length <= 0) continue;
          const std::string_view value(static_cast<const char*>(bytes), static_cast<std::size_t>(length));
          add_field(index, ids[static_cast<std::size_t>(c)], row, 0, value);
          if (k)
            for (std::size_t i = 0; i < qi_where.size(); ++i)
              if (qi_where[i] == static_cast<std::size_t>(c)) qi_values[i] = value;
        }
        if (k) k->add(qi_values);
        if (options_.max_records && row >= options_.max_records) {
          state.report.notes.push_back("stopped after " + std::to_string(row) + " rows (--max-records)");
          break;
        }
      }
      if (step != SQLITE_ROW && step != SQLITE_DONE)
        state.report.notes.push_back("stopped reading after row " + std::to_string(row) + ": " + sqlite3_errmsg(db));
      sqlite3_finalize(stmt);
      state.report.records = row;
      if (k) state.report.k_anonymity = k->result(options_.k_threshold);
    }
    flush();
    advance(size);
  }

  // ---- results ---------------------------------------------------------------------------------

  PiiScanReport assemble() {
    PiiScanReport report;
    std::sort(results_.begin(), results_.end(), [](const auto& a, const auto& b) { return a->sequence < b->sequence; });
    for (auto& state : states_) {
      state->report.columns.clear();
      for (const auto& name : state->column_names) state->report.columns.push_back({name, 0, 0, {}, {}});
    }
    for (auto& result : results_) {
      auto& state = *states_[result->file];
      auto& columns = state.report.columns;
      for (std::size_t c = 0; c < result->columns.size(); ++c) {
        auto& from = result->columns[c];
        auto& into = columns[c];
        into.values += from.values;
        into.values_with_pii += from.values_with_pii;
        for (const auto& [type, count] : from.entities) {
          into.entities[type] += count;
          state.report.entities[type] += count;
          report.entities[type] += count;
        }
        for (auto& [type, samples] : from.samples) {
          auto& kept = into.samples[type];
          for (auto& s : samples)
            if (kept.size() < options_.samples_per_column) kept.push_back(std::move(s));
        }
      }
      report.occurrences_total += result->found_total;
      for (auto& found : result->found) {
        if (options_.max_occurrences && report.occurrences.size() >= options_.max_occurrences) break;
        Occurrence o;
        o.entity_type = found.detection.entity_type;
        o.rule_id = found.detection.rule_id;
        o.file = state.report.path;
        o.table = state.report.table;
        o.column = state.column_names[found.column];
        const bool text_like = state.report.format == DataFormat::Text || o.column.empty();
        o.row = text_like && state.report.format != DataFormat::JsonLines ? 0 : found.row;
        o.line = found.line;
        o.begin = found.detection.begin;
        o.end = found.detection.end;
        o.score = found.detection.score;
        o.sample = std::move(found.sample);
        report.occurrences.push_back(std::move(o));
      }
    }
    // columns that never held a value (a header with no rows) are kept; drop the text pseudo-column
    // from tabular files where nothing was scanned as text
    for (auto& state : states_) {
      auto& columns = state->report.columns;
      columns.erase(std::remove_if(columns.begin(), columns.end(),
                                   [](const ColumnStats& c) { return c.column.empty() && c.values == 0; }),
                    columns.end());
      report.bytes += state->report.bytes;
      report.files.push_back(std::move(state->report));
    }
    findings(report);
    return report;
  }

  static std::string json_text(const nlohmann::json& value) { return value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

  void findings(PiiScanReport& report) const {
    for (const auto& o : report.occurrences) {
      core::Finding f;
      f.rule_id = o.rule_id;
      f.severity = pii_severity(o.entity_type);
      const bool secret = o.entity_type == "SECRET";
      f.title = secret ? "Secret in data (" + o.rule_id + ")" : o.entity_type + " in data";
      f.location.file = o.file;
      if (!o.table.empty()) f.location.member = o.table;
      if (o.row) f.location.row = o.row;
      if (o.line) f.location.line = o.line;
      f.location.column = o.column;
      f.evidence = o.sample;
      if (secret) {
        f.atlas = {"AML.T0055"};  // Unsecured Credentials
        f.nist_ai_rmf = {"MANAGE 2.2", "MEASURE 2.7"};
        f.remediation = "Revoke and rotate the credential, remove it from the data set and its history, and keep secrets "
                        "in a secret store.";
      } else {
        f.atlas = {"AML.T0057", "AML.T0024"};  // LLM Data Leakage; Exfiltration via AI Inference API
        f.nist_ai_rmf = {"MEASURE 2.10", "MAP 4.1"};
        f.remediation = "Remove or pseudonymise the field before training (aegis redaction: mask, hash or drop), or "
                        "train with differential privacy (aegis train-dp) so that the model cannot repeat it.";
      }
      nlohmann::json props = {{"entity_type", o.entity_type}, {"file", o.file}, {"column", o.column},
                              {"score", o.score}, {"begin", o.begin}, {"end", o.end}, {"sample", o.sample}};
      if (o.row) props["row"] = o.row;
      if (o.line) props["line"] = o.line;
      if (!o.table.empty()) props["table"] = o.table;
      f.properties_json = json_text(props);
      report.findings.push_back(std::move(f));
    }
    for (const auto& file : report.files) {
      if (!file.error.empty()) {
        core::Finding f;
        f.rule_id = "pii.unreadable";
        f.severity = core::Severity::Low;
        f.title = "Data file could not be scanned for personal data";
        f.location.file = file.path;
        f.evidence = file.error;
        f.nist_ai_rmf = {"MEASURE 2.10"};
        f.remediation = "Check the file's format (or name it with --format) and scan it again.";
        report.findings.push_back(std::move(f));
      }
      if (!file.k_anonymity || file.k_anonymity->records == 0 || !file.k_anonymity->note.empty()) continue;
      const auto& k = *file.k_anonymity;
      if (k.k >= options_.k_threshold) continue;
      core::Finding f;
      f.rule_id = "pii.reidentification-risk";
      f.severity = k.unique_records > 0 ? core::Severity::High : core::Severity::Medium;
      std::string columns;
      for (const auto& c : k.columns) columns += (columns.empty() ? "" : ", ") + c;
      f.title = "Records can be re-identified from quasi-identifiers (k = " + std::to_string(k.k) + ")";
      f.location.file = file.path;
      if (!file.table.empty()) f.location.member = file.table;
      char share[32];
      std::snprintf(share, sizeof share, "%.1f%%", 100.0 * static_cast<double>(k.unique_records) / static_cast<double>(k.records));
      f.evidence = "(" + columns + "): " + std::to_string(k.unique_records) + " of " + std::to_string(k.records) +
                   " records are unique (" + share + "), " + std::to_string(k.records_at_risk) + " are in classes smaller than " +
                   std::to_string(options_.k_threshold);
      if (!k.k_without.empty()) {
        auto best = std::max_element(k.k_without.begin(), k.k_without.end(),
                                     [](const auto& a, const auto& b) { return a.second < b.second; });
        f.evidence += "; without " + best->first + " k would be " + std::to_string(best->second);
      }
      f.atlas = {"AML.T0024.001", "AML.T0057"};
      f.nist_ai_rmf = {"MEASURE 2.10", "MAP 4.1"};
      f.remediation = "Generalise or suppress the quasi-identifiers (dates to years, ZIP codes to 3 digits) until every "
                      "combination is shared by at least k records, or drop the column that singles records out.";
      // shaped like the entity findings (entity_type, file, column, score) so that one reader takes both;
      // the score is the share of records that are unique
      nlohmann::json props = {{"entity_type", "QUASI_IDENTIFIERS"},
                              {"file", file.path},
                              {"column", columns},
                              {"score", static_cast<double>(k.unique_records) / static_cast<double>(k.records)},
                              {"k", k.k},
                              {"columns", k.columns},
                              {"unique_records", k.unique_records},
                              {"records_at_risk", k.records_at_risk}};
      if (!file.table.empty()) props["table"] = file.table;
      f.properties_json = json_text(props);
      report.findings.push_back(std::move(f));
    }
  }

  const PiiScanOptions& options_;
  Detector detector_;
  core::ThreadPool pool_;
  std::counting_semaphore<1 << 20> in_flight_;
  const PiiProgress& progress_;
  std::vector<std::unique_ptr<FileState>> states_;
  std::mutex columns_mutex_;
  std::mutex results_mutex_;
  std::vector<std::unique_ptr<BatchResult>> results_;
  std::unique_ptr<Batch> batch_;
  std::size_t next_sequence_ = 0;
  std::shared_ptr<core::MappedFile> mapping_;  // the file being read
  std::uint64_t total_bytes_ = 0, done_bytes_ = 0;
};

}  // namespace

std::string_view to_string(DataFormat format) {
  switch (format) {
    case DataFormat::Csv: return "csv";
    case DataFormat::Tsv: return "tsv";
    case DataFormat::JsonLines: return "jsonl";
    case DataFormat::Json: return "json";
    case DataFormat::Sqlite: return "sqlite";
    case DataFormat::Text: return "text";
  }
  return "text";
}

std::optional<DataFormat> parse_data_format(std::string_view name) {
  const std::string key = lower(name);
  if (key == "csv") return DataFormat::Csv;
  if (key == "tsv") return DataFormat::Tsv;
  if (key == "jsonl" || key == "ndjson" || key == "json-lines") return DataFormat::JsonLines;
  if (key == "json") return DataFormat::Json;
  if (key == "sqlite" || key == "sqlite3") return DataFormat::Sqlite;
  if (key == "text" || key == "txt") return DataFormat::Text;
  return std::nullopt;
}

DataFormat detect_data_format(const std::string& path, std::string_view head) {
  if (head.substr(0, 16) == std::string_view("SQLite format 3\0", 16)) return DataFormat::Sqlite;
  const std::string ext = lower(fs::path(path).extension().string());
  if (ext == ".csv") return DataFormat::Csv;
  if (ext == ".tsv" || ext == ".tab") return DataFormat::Tsv;
  if (ext == ".jsonl" || ext == ".ndjson") return DataFormat::JsonLines;
  if (ext == ".json") {
    // a .json file that is really one object per line is read as JSON Lines
    const auto first = head.find_first_not_of(" \t\r\n");
    if (first != std::string_view::npos && head[first] == '{') {
      const auto nl = head.find('\n', first);
      if (nl != std::string_view::npos && head.find_first_not_of(" \t\r\n", nl) != std::string_view::npos) {
        const auto next = head.find_first_not_of(" \t\r\n", nl);
        if (head[next] == '{' && head.substr(first, nl - first).find_last_of('}') != std::string_view::npos)
          return DataFormat::JsonLines;
      }
    }
    return DataFormat::Json;
  }
  if (ext == ".db" || ext == ".sqlite" || ext == ".sqlite3") return DataFormat::Sqlite;
  return DataFormat::Text;
}

core::Severity pii_severity(std::string_view type) {
  static const char* const kHigh[] = {"SECRET", "CREDIT_CARD", "US_SSN", "US_ITIN", "UK_NINO", "UK_NHS", "IBAN_CODE",
                                      "US_PASSPORT", "US_DRIVER_LICENSE", "MEDICAL_RECORD_NUMBER", "HEALTH_PLAN_NUMBER"};
  static const char* const kMedium[] = {"EMAIL_ADDRESS", "PHONE_NUMBER", "STREET_ADDRESS", "DATE_OF_BIRTH"};
  for (const char* t : kHigh)
    if (type == t) return core::Severity::High;
  for (const char* t : kMedium)
    if (type == t) return core::Severity::Medium;
  return core::Severity::Low;
}

PiiScanReport scan_pii(const std::vector<std::string>& paths, const PiiScanOptions& options, const PiiProgress& progress) {
  if (paths.empty()) throw core::Error("nothing to scan", "name one or more data files or folders");
  Scanner scanner(options, progress);
  return scanner.run(paths);
}

}  // namespace aegis::privacy
