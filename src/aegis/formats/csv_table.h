// RFC 4180 CSV, bounded: quoted fields with doubled quotes, CRLF or LF (or CR) line ends, an
// optional header row and a chosen delimiter. Used for tabular data sets (numeric feature columns
// and a label column). Every limit is checked and every malformed row is an error with its place.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::formats {

enum class CsvHeader { Auto, Present, Absent };

struct CsvOptions {
  char delimiter = ',';
  CsvHeader header = CsvHeader::Auto;
  std::size_t max_field_bytes = 1 << 20;
  std::size_t max_columns = 1 << 16;
  std::size_t max_rows = 10'000'000;  // records, header included
  bool allow_ragged = false;          // rows with another field count than the first are errors unless set
};

// Reads one record at a time without keeping the table; views stay valid until the next call.
// Blank lines are skipped. A UTF-8 byte-order mark at the start is skipped. Errors are
// core::FormatError whose offset() is the byte where the problem is, with the 1-based line in
// the message. A quote inside an unquoted field is kept as text (as Python's csv module does).
class CsvReader {
 public:
  explicit CsvReader(std::span<const std::uint8_t> data, CsvOptions options = {});

  // Fills `fields` with the next record and returns true, or returns false at the end of the data.
  // Throws core::FormatError on an unterminated quote, text after a closing quote, or a limit.
  bool next(std::vector<std::string_view>& fields);

  std::uint64_t record_offset() const { return record_offset_; }  // byte where the last record starts
  std::size_t record_line() const { return record_line_; }        // its 1-based line number
  std::size_t records_read() const { return records_; }

 private:
  [[noreturn]] void fail(const std::string& message, std::uint64_t offset, std::size_t line) const;

  std::string_view text_;
  CsvOptions options_;
  std::size_t pos_ = 0;
  std::size_t line_ = 1;
  std::uint64_t record_offset_ = 0;
  std::size_t record_line_ = 0;
  std::size_t records_ = 0;
  std::string buffer_;  // the unquoted text of every field of the current record, back to back
  std::vector<std::pair<std::size_t, std::size_t>> spans_;
};

// A whole table. Cells are stored back to back in one string, so the memory is about the size of
// the input plus 16 bytes a cell.
class CsvTable {
 public:
  bool has_header() const { return has_header_; }
  const std::vector<std::string>& header() const { return header_; }  // empty without a header
  std::size_t row_count() const { return row_first_cell_.size(); }     // data rows, header excluded
  std::size_t column_count() const { return columns_; }                // fields in the widest row
  std::size_t field_count(std::size_t row) const;
  // The field, or an empty view when the row (allowed to be ragged) is shorter.
  std::string_view field(std::size_t row, std::size_t column) const;
  std::vector<std::string_view> row(std::size_t row) const;
  std::uint64_t row_offset(std::size_t row) const { return row_offsets_[row]; }
  std::size_t row_line(std::size_t row) const { return row_lines_[row]; }
  // Index of the header column with exactly this name.
  std::optional<std::size_t> column_index(std::string_view name) const;

 private:
  friend CsvTable read_csv(std::span<const std::uint8_t> data, const CsvOptions& options);
  bool has_header_ = false;
  std::vector<std::string> header_;
  std::size_t columns_ = 0;
  std::string cells_;
  std::vector<std::size_t> cell_ends_;        // end of each cell in cells_
  std::vector<std::size_t> row_first_cell_;   // index into cell_ends_
  std::vector<std::uint64_t> row_offsets_;
  std::vector<std::size_t> row_lines_;
};

// Reads the whole table. With CsvHeader::Auto the first record is a header when some column holds
// a non-number there and a number in the second record (numeric tables with named columns); a
// table with only text columns is taken as having no header, so name CsvHeader::Present for it.
// Throws core::FormatError with the byte offset, and the line in the message.
CsvTable read_csv(std::span<const std::uint8_t> data, const CsvOptions& options = {});

// True when the text (spaces around it allowed, a leading '+' allowed) is a number as
// std::from_chars reads one: decimal or exponent notation, "inf" and "nan" included (callers that
// need finite values check). Stores it in *value when given.
bool parse_csv_number(std::string_view text, double* value = nullptr);

}  // namespace aegis::formats
