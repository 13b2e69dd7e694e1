#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "aegis/formats/safetensors.h"
#include "test_support.h"

namespace aegis::formats {
namespace {

using Bytes = std::vector<std::uint8_t>;

Bytes safetensors_file(const std::string& header, std::size_t buffer_bytes, std::uint64_t stated_length = 0) {
  const std::uint64_t length = stated_length ? stated_length : header.size();
  Bytes out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(length >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), buffer_bytes, 0xAB);
  return out;
}

bool has_problem(const SafetensorsInfo& info, std::string_view kind, std::string_view tensor = {}) {
  return std::any_of(info.problems.begin(), info.problems.end(), [&](const SafetensorsProblem& p) {
    return p.kind == kind && (tensor.empty() || p.tensor == tensor);
  });
}

std::string describe(const SafetensorsInfo& info) {
  std::string text;
  for (const auto& p : info.problems) text += p.kind + "(" + p.tensor + ": " + p.detail + ") ";
  return text;
}

TEST(Safetensors, AcceptsRealFile) {
  const Bytes file = test::read_file(test::fixture("benign/model.safetensors"));
  ASSERT_TRUE(looks_like_safetensors(file));
  const SafetensorsInfo info = validate_safetensors(file);
  EXPECT_TRUE(info.problems.empty()) << describe(info);
  EXPECT_FALSE(info.tensors.empty());
}

TEST(Safetensors, AcceptsValidPaddedHeader) {
  const std::string header =
      R"({"__metadata__":{"format":"pt"},"b":{"dtype":"I64","shape":[4],"data_offsets":[0,32]},)"
      R"("w":{"dtype":"F32","shape":[3,4],"data_offsets":[32,80]},"e":{"dtype":"F16","shape":[0],"data_offsets":[80,80]}}    )";
  const SafetensorsInfo info = validate_safetensors(safetensors_file(header, 80));
  EXPECT_TRUE(info.problems.empty()) << describe(info);
  ASSERT_EQ(info.tensors.size(), 3u);
  EXPECT_EQ(info.metadata_entries, 1u);
  EXPECT_EQ(info.header_length, header.size());
}

TEST(Safetensors, AcceptsNewerDtypes) {
  const std::string header =
      R"({"a":{"dtype":"F4","shape":[4],"data_offsets":[0,2]},"b":{"dtype":"F8_E8M0","shape":[2],"data_offsets":[2,4]},)"
      R"("c":{"dtype":"C64","shape":[1],"data_offsets":[4,12]},"d":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[12,15]}})";
  const SafetensorsInfo info = validate_safetensors(safetensors_file(header, 15));
  EXPECT_TRUE(info.problems.empty()) << describe(info);
}

TEST(Safetensors, ReportsGap) {
  const std::string header = R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[8,12]}})";
  const SafetensorsInfo info = validate_safetensors(safetensors_file(header, 12));
  EXPECT_TRUE(has_problem(info, "gap", "b")) << describe(info);
  const SafetensorsInfo tail = validate_safetensors(safetensors_file(R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}})", 100));
  EXPECT_TRUE(has_problem(tail, "gap")) << describe(tail);
}

TEST(Safetensors, ReportsOverlap) {
  const std::string header = R"({"a":{"dtype":"U8","shape":[8],"data_offsets":[0,8]},"b":{"dtype":"U8","shape":[4],"data_offsets":[4,8]}})";
  const SafetensorsInfo info = validate_safetensors(safetensors_file(header, 8));
  EXPECT_TRUE(has_problem(info, "overlap", "b")) << describe(info);
}

TEST(Safetensors, ReportsWrongSizeForShape) {
  const std::string header = R"({"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,8]}})";
  const SafetensorsInfo info = validate_safetensors(safetensors_file(header, 8));
  EXPECT_TRUE(has_problem(info, "size", "a")) << describe(info);
  const std::string misaligned = R"({"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}})";
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file(misaligned, 2)), "size", "a"));
}

TEST(Safetensors, ReportsBadDtypeAndShape) {
  const std::string header = R"({"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]},"b":{"dtype":"U8","shape":[-1],"data_offsets":[16,17]},)"
                             R"("c":{"dtype":"U8","shape":"4","data_offsets":[17,21]},"d":{"dtype":"U8","shape":[1.5],"data_offsets":[21,22]}})";
  const SafetensorsInfo info = validate_safetensors(safetensors_file(header, 22));
  EXPECT_TRUE(has_problem(info, "dtype", "a")) << describe(info);
  EXPECT_TRUE(has_problem(info, "shape", "b"));
  EXPECT_TRUE(has_problem(info, "shape", "c"));
  EXPECT_TRUE(has_problem(info, "shape", "d"));
  EXPECT_FALSE(has_problem(info, "gap")) << "broken tensors still account for their bytes";
}

TEST(Safetensors, ReportsShapeOverflow) {
  const std::string header = R"({"a":{"dtype":"F64","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}})";
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file(header, 8)), "shape"));
  const std::string bytes_overflow = R"({"a":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,8]}})";
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file(bytes_overflow, 8)), "shape"));
}

TEST(Safetensors, ReportsOffsetsOutsideBuffer) {
  const std::string header = R"({"a":{"dtype":"U8","shape":[100],"data_offsets":[0,100]}})";
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file(header, 10)), "offsets", "a"));
  const std::string reversed = R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[5,2]}})";
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file(reversed, 5)), "offsets", "a"));
  const std::string missing = R"({"a":{"dtype":"U8","shape":[1]}})";
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file(missing, 1)), "offsets", "a"));
}

TEST(Safetensors, ReportsHeaderLengthProblems) {
  EXPECT_TRUE(has_problem(validate_safetensors(Bytes{1, 2, 3}), "header-length"));
  const std::string header = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file(header, 1, 5000)), "header-length"));
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file(header, 1, 200'000'000)), "header-length"));
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file(header, 1, ~0ull)), "header-length"));
}

TEST(Safetensors, RefusesDeepJsonWithoutRecursing) {
  const std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  const SafetensorsInfo info = validate_safetensors(safetensors_file(deep, 0));
  EXPECT_TRUE(has_problem(info, "depth")) << describe(info);
  // Brackets inside strings do not count.
  const std::string quoted = R"({"__metadata__":{"x":")" + std::string(1000, '[') + R"("}})";
  EXPECT_FALSE(has_problem(validate_safetensors(safetensors_file(quoted, 0)), "depth"));
}

TEST(Safetensors, RefusesHeadersTooBigToCheck) {
  std::string many = "{\"__metadata__\":{\"x\":\"y\"},\"a\":[";
  for (int i = 0; i < 4'100'000; ++i) many += "0,";
  many += "0]}";
  const SafetensorsInfo info = validate_safetensors(safetensors_file(many, 0));
  EXPECT_TRUE(has_problem(info, "json")) << describe(info);
}

TEST(Safetensors, ReportsMetadataThatIsNotStrings) {
  const std::string header = R"({"__metadata__":{"format":"pt","n":3,"nested":{"a":"b"}}})";
  const SafetensorsInfo info = validate_safetensors(safetensors_file(header, 0));
  EXPECT_TRUE(has_problem(info, "metadata")) << describe(info);
  EXPECT_EQ(std::count_if(info.problems.begin(), info.problems.end(), [](const auto& p) { return p.kind == "metadata"; }), 2);
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file(R"({"__metadata__":[1]})", 0)), "metadata"));
}

TEST(Safetensors, ReportsBrokenJson) {
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file(R"({"a": )", 0)), "json"));
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file(R"(["a"])", 0)), "json"));
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file("{\"\xff\xfe\":1}", 0)), "json"));
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file(R"({"a":5})", 0)), "json"));
  const std::string duplicate = R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})";
  EXPECT_TRUE(has_problem(validate_safetensors(safetensors_file(duplicate, 1)), "json", "a"));
}

TEST(Safetensors, LooksLikeSafetensors) {
  EXPECT_TRUE(looks_like_safetensors(safetensors_file("{}", 0)));
  const std::string text = "plain text {}";
  EXPECT_FALSE(looks_like_safetensors(Bytes(text.begin(), text.end())));
  EXPECT_FALSE(looks_like_safetensors(Bytes{2, 0, 0, 0, 0, 0, 0, 0, '[', ']'}));
  EXPECT_FALSE(looks_like_safetensors(Bytes{}));
  // A header length far past the file is still safetensors, so that its validation explains why.
  const std::string header = R"({"__metadata__":{}})";
  EXPECT_TRUE(looks_like_safetensors(safetensors_file(header, 0, 1ull << 40)));
  EXPECT_FALSE(looks_like_safetensors(Bytes{0, 0, 0, 0, 0, 1, 0, 0, '{', 0x80}));
}

}  // namespace
}  // namespace aegis::formats
