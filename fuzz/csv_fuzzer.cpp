// Fuzzes the CSV reader with small limits; the first byte picks the delimiter and the options.
#include <cstddef>
#include <cstdint>
#include <span>

#include "aegis/core/error.h"
#include "aegis/formats/csv_table.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t mode = data[0];
  const std::span<const std::uint8_t> bytes(data + 1, size - 1);
  aegis::formats::CsvOptions options;
  options.delimiter = ",;\t|"[mode & 3];
  options.header = static_cast<aegis::formats::CsvHeader>((mode >> 2) % 3);
  options.allow_ragged = (mode & 0x20) != 0;
  options.max_field_bytes = 256;
  options.max_columns = 64;
  options.max_rows = 256;
  try {
    const auto table = aegis::formats::read_csv(bytes, options);
    for (std::size_t r = 0; r < table.row_count(); ++r) {
      for (std::size_t c = 0; c < table.column_count(); ++c) aegis::formats::parse_csv_number(table.field(r, c));
    }
  } catch (const aegis::core::FormatError&) {
  }
  return 0;
}
