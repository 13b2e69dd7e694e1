#include "aegis/formats/csv_table.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>

#include "aegis/core/error.h"

namespace aegis::formats {
namespace {

bool is_line_end(char c) { return c == '\n' || c == '\r'; }

// Auto header detection: some column holds text in the first record and a number in the second.
bool first_record_is_header(const std::vector<std::string>& first, const std::vector<std::string_view>* second) {
  if (second == nullptr) {
    for (const auto& field : first) {
      if (field.empty() || parse_csv_number(field)) return false;
    }
    return !first.empty();
  }
  const std::size_t n = std::min(first.size(), second->size());
  for (std::size_t c = 0; c < n; ++c) {
    if (!parse_csv_number(first[c]) && parse_csv_number((*second)[c])) return true;
  }
  return false;
}

}  // namespace

bool parse_csv_number(std::string_view text, double* value) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  if (!text.empty() && text.front() == '+') {
    text.remove_prefix(1);
    if (!text.empty() && text.front() == '-') return false;
  }
  if (text.empty()) return false;
  double parsed = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), parsed);
  // from_chars reports out-of-range for 1e999 and 1e-999; strtod gives inf and 0, which is what a
  // table means by them.
  if (end != text.data() + text.size()) return false;
  if (error == std::errc::result_out_of_range) {
    std::string copy(text);
    parsed = std::strtod(copy.c_str(), nullptr);
  } else if (error != std::errc()) {
    return false;
  }
  if (value) *value = parsed;
  return true;
}

CsvReader::CsvReader(std::span<const std::uint8_t> data, CsvOptions options)
    : text_(reinterpret_cast<const char*>(data.data()), data.size()), options_(options) {
  if (options_.delimiter == '"' || is_line_end(options_.delimiter)) {
    throw core::Error("a CSV delimiter cannot be a quote or a line break", "choose another delimiter, such as ',' ';' or tab");
  }
  if (text_.substr(0, 3) == "\xEF\xBB\xBF") pos_ = 3;
}

void CsvReader::fail(const std::string& message, std::uint64_t offset, std::size_t line) const {
  throw core::FormatError("CSV line " + std::to_string(line) + ": " + message, offset);
}

bool CsvReader::next(std::vector<std::string_view>& fields) {
  fields.clear();
  buffer_.clear();
  spans_.clear();
  const std::size_t size = text_.size();
  while (pos_ < size && is_line_end(text_[pos_])) {
    if (text_[pos_] == '\r' && pos_ + 1 < size && text_[pos_ + 1] == '\n') ++pos_;
    ++pos_;
    ++line_;
  }
  if (pos_ >= size) return false;
  if (records_ >= options_.max_rows) {
    fail("more than " + std::to_string(options_.max_rows) + " rows, the limit", pos_, line_);
  }
  record_offset_ = pos_;
  record_line_ = line_;
  while (true) {
    const std::size_t start = buffer_.size();
    if (pos_ < size && text_[pos_] == '"') {
      const std::size_t quote_offset = pos_;
      const std::size_t quote_line = line_;
      ++pos_;
      while (true) {
        if (pos_ >= size) {
          fail("a quoted field (column " + std::to_string(spans_.size() + 1) + ") is never closed; the quote opens at line " +
                   std::to_string(quote_line),
               quote_offset, quote_line);
        }
        const char c = text_[pos_];
        if (c == '"') {
          if (pos_ + 1 < size && text_[pos_ + 1] == '"') {
            buffer_.push_back('"');
            pos_ += 2;
            continue;
          }
          ++pos_;
          break;
        }
        if (c == '\n' || (c == '\r' && !(pos_ + 1 < size && text_[pos_ + 1] == '\n'))) ++line_;
        buffer_.push_back(c);
        ++pos_;
        if (buffer_.size() - start > options_.max_field_bytes) {
          fail("a field is longer than " + std::to_string(options_.max_field_bytes) + " bytes, the limit", quote_offset, quote_line);
        }
      }
      if (pos_ < size && text_[pos_] != options_.delimiter && !is_line_end(text_[pos_])) {
        fail("text after the closing quote of a field (column " + std::to_string(spans_.size() + 1) +
                 "); a quote inside a quoted field must be doubled",
             pos_, line_);
      }
    } else {
      std::size_t end = pos_;
      while (end < size && text_[end] != options_.delimiter && !is_line_end(text_[end])) ++end;
      if (end - pos_ > options_.max_field_bytes) {
        fail("a field is longer than " + std::to_string(options_.max_field_bytes) + " bytes, the limit", pos_, line_);
      }
      buffer_.append(text_.substr(pos_, end - pos_));
      pos_ = end;
    }
    spans_.emplace_back(start, buffer_.size() - start);
    if (spans_.size() > options_.max_columns) {
      fail("more than " + std::to_string(options_.max_columns) + " fields in a row, the limit", pos_, line_);
    }
    if (pos_ >= size) break;
    const char c = text_[pos_];
    if (c == options_.delimiter) {
      ++pos_;
      continue;  // a delimiter at the very end of the data still opens one last, empty field
    }
    if (c == '\r' && pos_ + 1 < size && text_[pos_ + 1] == '\n') ++pos_;
    ++pos_;
    ++line_;
    break;
  }
  ++records_;
  fields.reserve(spans_.size());
  for (const auto& [start, length] : spans_) fields.emplace_back(buffer_.data() + start, length);
  return true;
}

std::size_t CsvTable::field_count(std::size_t row) const {
  const std::size_t first = row_first_cell_[row];
  const std::size_t end = row + 1 < row_first_cell_.size() ? row_first_cell_[row + 1] : cell_ends_.size();
  return end - first;
}

std::string_view CsvTable::field(std::size_t row, std::size_t column) const {
  if (row >= row_count() || column >= field_count(row)) return {};
  const std::size_t cell = row_first_cell_[row] + column;
  const std::size_t begin = cell == 0 ? 0 : cell_ends_[cell - 1];
  return std::string_view(cells_).substr(begin, cell_ends_[cell] - begin);
}

std::vector<std::string_view> CsvTable::row(std::size_t row) const {
  std::vector<std::string_view> fields;
  const std::size_t n = field_count(row);
  fields.reserve(n);
  for (std::size_t c = 0; c < n; ++c) fields.push_back(field(row, c));
  return fields;
}

std::optional<std::size_t> CsvTable::column_index(std::string_view name) const {
  for (std::size_t i = 0; i < header_.size(); ++i) {
    if (header_[i] == name) return i;
  }
  return std::nullopt;
}

CsvTable read_csv(std::span<const std::uint8_t> data, const CsvOptions& options) {
  CsvReader reader(data, options);
  CsvTable table;
  std::vector<std::string_view> fields;
  std::size_t expected_fields = 0;

  auto add_row = [&](const auto& row, std::uint64_t offset, std::size_t line) {
    if (!options.allow_ragged && row.size() != expected_fields) {
      throw core::FormatError("CSV line " + std::to_string(line) + ": " + std::to_string(row.size()) + " fields where the first row has " +
                                  std::to_string(expected_fields) + " (a ragged table)",
                              offset);
    }
    table.row_first_cell_.push_back(table.cell_ends_.size());
    table.row_offsets_.push_back(offset);
    table.row_lines_.push_back(line);
    for (const auto& field : row) {
      table.cells_.append(field);
      table.cell_ends_.push_back(table.cells_.size());
    }
    table.columns_ = std::max(table.columns_, row.size());
  };

  if (!reader.next(fields)) return table;
  const std::vector<std::string> first(fields.begin(), fields.end());
  const std::uint64_t first_offset = reader.record_offset();
  const std::size_t first_line = reader.record_line();
  expected_fields = first.size();
  const bool has_second = reader.next(fields);

  bool header = options.header == CsvHeader::Present;
  if (options.header == CsvHeader::Auto) header = first_record_is_header(first, has_second ? &fields : nullptr);
  if (header) {
    table.has_header_ = true;
    table.header_ = first;
    table.columns_ = first.size();
  } else {
    add_row(first, first_offset, first_line);
  }
  if (!has_second) return table;
  add_row(fields, reader.record_offset(), reader.record_line());
  while (reader.next(fields)) add_row(fields, reader.record_offset(), reader.record_line());
  return table;
}

}  // namespace aegis::formats
