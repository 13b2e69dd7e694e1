#include <gtest/gtest.h>

#include <cstdlib>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/formats/csv_table.h"
#include "test_support.h"

namespace aegis::formats {
namespace {

std::span<const std::uint8_t> bytes_of(std::string_view text) {
  return {reinterpret_cast<const std::uint8_t*>(text.data()), text.size()};
}

std::vector<std::vector<std::string>> rows_of(const CsvTable& table) {
  std::vector<std::vector<std::string>> rows;
  for (std::size_t r = 0; r < table.row_count(); ++r) {
    std::vector<std::string> row;
    for (auto field : table.row(r)) row.emplace_back(field);
    rows.push_back(row);
  }
  return rows;
}

using Rows = std::vector<std::vector<std::string>>;

// The error a CSV text raises, or nothing.
std::optional<core::FormatError> error_of(std::string_view text, const CsvOptions& options = {}) {
  try {
    read_csv(bytes_of(text), options);
  } catch (const core::FormatError& e) {
    return e;
  }
  return std::nullopt;
}

TEST(CsvTable, ReadsWhatPythonsCsvModuleWrites) {
  // Python's csv writer quotes fields with delimiters, quotes and line breaks, doubles quotes and
  // ends rows with CRLF; the reader must give back exactly the rows it was given.
  test::TempDir dir;
  const auto script = dir.path / "write.py";
  std::ofstream(script) << R"(import csv, json, sys
rows = [["name", "value", "note"],
        ["plain", "1.5", ""],
        ["comma, inside", "-2", "quote \" inside"],
        ["line\nbreak", "3e-4", "crlf\r\ninside"],
        ["  spaced  ", "+7", "\"\"double\"\""],
        ["unicode \u00e9\u4e2d", "nan", "tab\there"]]
for name, options in [("minimal", {}), ("all", {"quoting": csv.QUOTE_ALL}), ("semicolon", {"delimiter": ";"}),
                      ("lf", {"lineterminator": "\n"})]:
    with open(sys.argv[1] + "/" + name + ".csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f, **options).writerows(rows)
json.dump(rows, open(sys.argv[1] + "/expected.json", "w"))
)";
  ASSERT_EQ(std::system(("/usr/bin/python3 " + script.string() + " " + dir.path.string()).c_str()), 0);
  const auto expected = nlohmann::json::parse(std::ifstream(dir.path / "expected.json")).get<Rows>();
  for (const char* name : {"minimal", "all", "semicolon", "lf"}) {
    const auto data = test::read_file(dir.path / (std::string(name) + ".csv"));
    CsvOptions options;
    options.delimiter = std::string(name) == "semicolon" ? ';' : ',';
    options.header = CsvHeader::Present;
    const CsvTable table = read_csv(data, options);
    EXPECT_TRUE(table.has_header());
    EXPECT_EQ(table.header(), expected[0]) << name;
    EXPECT_EQ(rows_of(table), Rows(expected.begin() + 1, expected.end())) << name;
    EXPECT_EQ(table.column_count(), 3u);
    EXPECT_EQ(table.column_index("note"), 2u);
    EXPECT_FALSE(table.column_index("missing").has_value());
  }
}

TEST(CsvTable, DetectsHeaderRows) {
  const CsvTable named = read_csv(bytes_of("sepal,petal,species\n5.1,1.4,setosa\n6.2,4.5,versicolor\n"));
  EXPECT_TRUE(named.has_header());
  EXPECT_EQ(named.header(), (std::vector<std::string>{"sepal", "petal", "species"}));
  EXPECT_EQ(named.row_count(), 2u);
  EXPECT_EQ(named.field(1, 2), "versicolor");
  EXPECT_EQ(named.row_line(0), 2u);

  const CsvTable bare = read_csv(bytes_of("5.1,1.4,0\n6.2,4.5,1\n"));
  EXPECT_FALSE(bare.has_header());
  EXPECT_EQ(bare.row_count(), 2u);
  EXPECT_EQ(bare.field(0, 0), "5.1");

  CsvOptions absent;
  absent.header = CsvHeader::Absent;
  EXPECT_EQ(read_csv(bytes_of("a,b\nc,d\n"), absent).row_count(), 2u);
  EXPECT_FALSE(read_csv(bytes_of("a,b\nc,d\n")).has_header());  // text only: no header unless asked
}

TEST(CsvTable, HandlesLineEndsBlankLinesAndBom) {
  const CsvTable table = read_csv(bytes_of("\xEF\xBB\xBFx,y\r\n1,2\r\n\r\n\n3,4\r5,6"));
  EXPECT_TRUE(table.has_header());
  EXPECT_EQ(table.header()[0], "x");
  EXPECT_EQ(rows_of(table), (Rows{{"1", "2"}, {"3", "4"}, {"5", "6"}}));
  EXPECT_EQ(table.row_line(1), 5u);
  EXPECT_EQ(table.row_offset(0), 8u);

  EXPECT_EQ(rows_of(read_csv(bytes_of("1,,3,\n"))), (Rows{{"1", "", "3", ""}}));
  EXPECT_EQ(rows_of(read_csv(bytes_of("\"\",\"a\"\"\"\n"))), (Rows{{"", "a\""}}));
  EXPECT_EQ(read_csv(bytes_of("")).row_count(), 0u);
}

TEST(CsvTable, TabDelimiter) {
  CsvOptions options;
  options.delimiter = '\t';
  EXPECT_EQ(rows_of(read_csv(bytes_of("1\t2,5\t\"x\ty\"\n"), options)), (Rows{{"1", "2,5", "x\ty"}}));
  options.delimiter = '"';
  EXPECT_THROW(CsvReader(bytes_of("a"), options), core::Error);
}

TEST(CsvTable, RaggedRowsAreErrorsWithTheirLine) {
  const auto error = error_of("a,b,c\n1,2,3\n4,5\n");
  ASSERT_TRUE(error);
  EXPECT_EQ(error->offset(), 12u);
  EXPECT_NE(std::string(error->what()).find("line 3"), std::string::npos) << error->what();
  EXPECT_NE(std::string(error->what()).find("2 fields"), std::string::npos) << error->what();

  CsvOptions ragged;
  ragged.allow_ragged = true;
  const CsvTable table = read_csv(bytes_of("1,2,3\n4,5\n6,7,8,9\n"), ragged);
  EXPECT_EQ(table.column_count(), 4u);
  EXPECT_EQ(table.field_count(1), 2u);
  EXPECT_EQ(table.field(1, 2), "");
  EXPECT_EQ(table.field(2, 3), "9");
}

TEST(CsvTable, UnterminatedQuoteNamesWhereItOpens) {
  const auto error = error_of("a,b\n1,\"open\n2,3\n4,5\n");
  ASSERT_TRUE(error);
  EXPECT_EQ(error->offset(), 6u);
  EXPECT_NE(std::string(error->what()).find("never closed"), std::string::npos) << error->what();
  EXPECT_NE(std::string(error->what()).find("line 2"), std::string::npos) << error->what();
}

TEST(CsvTable, TextAfterAClosingQuoteIsAnError) {
  const auto error = error_of("\"ab\"c,d\n");
  ASSERT_TRUE(error);
  EXPECT_EQ(error->offset(), 4u);
  // A bare quote inside an unquoted field is text, as Python reads it.
  CsvOptions no_header;
  no_header.header = CsvHeader::Absent;
  EXPECT_EQ(rows_of(read_csv(bytes_of("5\"6,x\n"), no_header)), (Rows{{"5\"6", "x"}}));
}

TEST(CsvTable, LimitsAreErrors) {
  CsvOptions options;
  options.max_field_bytes = 8;
  EXPECT_TRUE(error_of("123456789,1\n", options));
  EXPECT_TRUE(error_of("\"123456789\",1\n", options));
  EXPECT_FALSE(error_of("12345678,1\n", options));
  options = {};
  options.max_columns = 3;
  EXPECT_TRUE(error_of("1,2,3,4\n", options));
  EXPECT_FALSE(error_of("1,2,3\n", options));
  options = {};
  options.max_rows = 2;
  EXPECT_FALSE(error_of("1\n2\n", options));
  const auto rows = error_of("1\n2\n3\n", options);
  ASSERT_TRUE(rows);
  EXPECT_EQ(rows->offset(), 4u);
}

TEST(CsvTable, StreamingReaderGivesRecordsAndPlaces) {
  CsvReader reader(bytes_of("a,\"b\nc\"\n\n1,2\n"));
  std::vector<std::string_view> fields;
  ASSERT_TRUE(reader.next(fields));
  EXPECT_EQ(fields, (std::vector<std::string_view>{"a", "b\nc"}));
  EXPECT_EQ(reader.record_line(), 1u);
  ASSERT_TRUE(reader.next(fields));
  EXPECT_EQ(fields, (std::vector<std::string_view>{"1", "2"}));
  EXPECT_EQ(reader.record_line(), 4u);
  EXPECT_EQ(reader.record_offset(), 9u);
  EXPECT_FALSE(reader.next(fields));
  EXPECT_EQ(reader.records_read(), 2u);
}

TEST(CsvTable, ParsesNumbers) {
  double v = 0;
  EXPECT_TRUE(parse_csv_number(" 1.5 ", &v));
  EXPECT_EQ(v, 1.5);
  EXPECT_TRUE(parse_csv_number("+7", &v));
  EXPECT_EQ(v, 7);
  EXPECT_TRUE(parse_csv_number("-3e-2", &v));
  EXPECT_EQ(v, -0.03);
  EXPECT_TRUE(parse_csv_number("1e999", &v));
  EXPECT_TRUE(std::isinf(v));
  EXPECT_TRUE(parse_csv_number("nan"));
  for (const char* text : {"", " ", "abc", "1.5x", "+-1", "1,5", "0x10"}) EXPECT_FALSE(parse_csv_number(text)) << text;
}

TEST(CsvTable, GarbageNeverCrashes) {
  std::uint32_t state = 11;
  CsvOptions options;
  options.max_field_bytes = 64;
  options.max_columns = 16;
  options.max_rows = 32;
  for (int round = 0; round < 3000; ++round) {
    auto bytes = test::pseudo_random_bytes(static_cast<std::size_t>(round % 200), state);
    // Bias toward the characters that steer the parser.
    for (auto& b : bytes) {
      if (b % 4 == 0) b = static_cast<std::uint8_t>(",\"\n\r"[b % 16 / 4]);
    }
    options.allow_ragged = round % 2 == 0;
    try {
      const CsvTable table = read_csv(bytes, options);
      for (std::size_t r = 0; r < table.row_count(); ++r) table.row(r);
    } catch (const core::FormatError&) {
    }
  }
}

}  // namespace
}  // namespace aegis::formats
