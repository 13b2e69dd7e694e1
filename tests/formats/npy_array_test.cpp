#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/formats/npy.h"
#include "test_support.h"

namespace aegis::formats {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::uint8_t>;

int run_python(const fs::path& dir, const std::string& script) {
  const fs::path file = dir / "script.py";
  std::ofstream(file) << script;
  return std::system(("/usr/bin/python3 '" + file.string() + "' '" + dir.string() + "'").c_str());
}

// The arrays numpy writes for these tests, and beside each NAME.npy a NAME.f32 with its values
// as numpy converts them to float32, in C order: what read_npy_array must return.
constexpr const char* kMakeArrays = R"(import sys, numpy as np
d = sys.argv[1]
rng = np.random.default_rng(1)
arrays = {
    "f4": rng.standard_normal((4, 3, 2)).astype("<f4"),
    "f8": rng.standard_normal((5, 7)),
    "u1": rng.integers(0, 256, (3, 1, 4, 4), dtype=np.uint8),
    "i8": rng.integers(-2**40, 2**40, (6,), dtype=np.int64),
    "i1": np.array([-128, -1, 0, 127], dtype=np.int8),
    "u2": np.array([0, 1, 65535], dtype=np.uint16),
    "i2": np.array([[-32768, 5], [32767, -2]], dtype=np.int16),
    "i4_big": np.array([-70000, 3, 2**31 - 1], dtype=">i4"),
    "f8_big": rng.standard_normal((3, 2)).astype(">f8"),
    "u4": np.array([0, 4000000000], dtype=np.uint32),
    "u8": np.array([0, 2**40], dtype=np.uint64),
    "f2": np.array([0.5, -2.0, 65504.0, 6e-8, np.inf], dtype=np.float16),
    "b1": np.array([[True, False], [False, True]]),
    "fortran": np.asfortranarray(rng.standard_normal((3, 4, 5)).astype("f4")),
    "fortran_u1": np.asfortranarray(rng.integers(0, 256, (7, 2, 3), dtype=np.uint8)),
    "scalar": np.array(3.25, dtype="f4"),
    "empty": np.zeros((0, 5), dtype="f4"),
}
for name, a in arrays.items():
    np.save(f"{d}/{name}.npy", a)
    np.ascontiguousarray(a).astype("<f4").tofile(f"{d}/{name}.f32")
np.save(f"{d}/object.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
np.save(f"{d}/unicode.npy", np.array(["ab", "c"]))
np.save(f"{d}/complex.npy", np.array([1 + 2j]))
np.save(f"{d}/structured.npy", np.zeros(2, dtype=[("x", "<f4"), ("y", "<i4")]))
)";

std::vector<float> read_f32(const fs::path& path) {
  const Bytes bytes = test::read_file(path);
  std::vector<float> values(bytes.size() / 4);
  if (!values.empty()) std::memcpy(values.data(), bytes.data(), values.size() * 4);
  return values;
}

// numpy's files, made once for the tests that read them (removed at exit).
struct NumpyFiles {
  test::TempDir dir{"aegis_npy_array"};
  int status = run_python(dir.path, kMakeArrays);
};

fs::path numpy_file(const std::string& name) {
  static const NumpyFiles files;
  if (files.status != 0) throw std::runtime_error("/usr/bin/python3 with numpy (python3-numpy) must be installed");
  return files.dir.path / name;
}

bool same_values(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return false;  // bit for bit, infinity included
  }
  return true;
}

TEST(NpyArray, ReadsEveryNumericDtypeAsNumpyConvertsIt) {
  const std::vector<std::pair<const char*, std::vector<std::uint64_t>>> cases = {
      {"f4", {4, 3, 2}}, {"f8", {5, 7}},  {"u1", {3, 1, 4, 4}}, {"i8", {6}},      {"i1", {4}},       {"u2", {3}},
      {"i2", {2, 2}},    {"i4_big", {3}}, {"f8_big", {3, 2}},   {"u4", {2}},      {"u8", {2}},       {"f2", {5}},
      {"b1", {2, 2}},    {"fortran", {3, 4, 5}}, {"fortran_u1", {7, 2, 3}}, {"scalar", {}}, {"empty", {0, 5}},
  };
  for (const auto& [name, shape] : cases) {
    const NpyArray array = read_npy_file(numpy_file(std::string(name) + ".npy").string(), 1 << 20);
    EXPECT_EQ(array.shape, shape) << name;
    EXPECT_TRUE(same_values(array.values, read_f32(numpy_file(std::string(name) + ".f32")))) << name << " (" << array.descr << ")";
  }
  EXPECT_EQ(read_npy_file(numpy_file("i4_big.npy").string(), 100).descr, ">i4");
  EXPECT_EQ(read_npy_file(numpy_file("u1.npy").string(), 100).descr, "|u1");
}

TEST(NpyArray, ReadsRecordSlicesOfBothOrders) {
  for (const char* name : {"f4", "fortran", "fortran_u1", "u1"}) {
    const Bytes bytes = test::read_file(numpy_file(std::string(name) + ".npy"));
    const NpyArray whole = read_npy_array(bytes, 1 << 20);
    const std::size_t record = whole.values.size() / whole.shape[0];
    const NpyArray slice = read_npy_records(bytes, 1 << 20, 1, 2);
    EXPECT_EQ(slice.shape[0], 2u) << name;
    EXPECT_EQ(slice.values, std::vector<float>(whole.values.begin() + static_cast<std::ptrdiff_t>(record),
                                               whole.values.begin() + static_cast<std::ptrdiff_t>(3 * record)))
        << name;
    EXPECT_TRUE(read_npy_records(bytes, 1 << 20, 50, 2).values.empty()) << name;
  }
}

TEST(NpyArray, RefusesObjectAndOtherDtypes) {
  try {
    read_npy_file(numpy_file("object.npy").string(), 100);
    FAIL() << "an object array was accepted";
  } catch (const core::FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("pickle"), std::string::npos) << e.what();
  }
  for (const char* name : {"unicode.npy", "complex.npy", "structured.npy"}) {
    try {
      read_npy_file(numpy_file(name).string(), 100);
      FAIL() << name << " was accepted";
    } catch (const core::FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("not a plain number type"), std::string::npos) << e.what();
    }
  }
}

TEST(NpyArray, EnforcesLimitsAndSize) {
  const Bytes bytes = test::read_file(numpy_file("f8.npy"));
  EXPECT_THROW(read_npy_array(bytes, 34), core::FormatError);
  EXPECT_NO_THROW(read_npy_array(bytes, 35));
  EXPECT_EQ(read_npy_records(bytes, 7, 2, 1).values.size(), 7u);  // the limit counts what is returned
  const Bytes cut(bytes.begin(), bytes.end() - 1);
  try {
    read_npy_array(cut, 1000);
    FAIL() << "a cut-off array was accepted";
  } catch (const core::FormatError& e) {
    EXPECT_EQ(e.offset(), cut.size());
  }
  Bytes longer = bytes;
  longer.push_back(0);  // numpy.load ignores bytes after the data, and so do we
  EXPECT_EQ(read_npy_array(longer, 1000).values.size(), 35u);
}

TEST(NpyArray, WritersProduceWhatNumpyLoadsAndWrites) {
  test::TempDir dir("aegis_npy_write");
  const std::vector<std::uint64_t> shape = {2, 3};
  const std::vector<float> values = {0.5f, -1.25f, 3.0f, 1e-8f, 65504.0f, -0.0f};
  write_npy_f32((dir.path / "f32.npy").string(), shape, values);
  const std::vector<std::uint64_t> vector_shape = {4};
  write_npy_i64((dir.path / "i64.npy").string(), vector_shape, std::vector<std::int64_t>{0, -1, 1ll << 40, 9});
  write_npy_i32((dir.path / "i32.npy").string(), vector_shape, std::vector<std::int32_t>{7, -7, 0, 2147483647});
  const std::vector<std::uint64_t> no_shape = {};
  write_npy_f32((dir.path / "scalar.npy").string(), no_shape, std::vector<float>{2.5f});

  // Written batch by batch: 10,000 images of 1x28x28 in batches of 128, never all in memory.
  const std::vector<std::uint64_t> big_shape = {10000, 1, 28, 28};
  {
    NpyWriter writer((dir.path / "images.npy").string(), NpyDtype::Float32, big_shape);
    std::vector<float> batch;
    for (std::uint64_t first = 0; first < 10000; first += 128) {
      const std::uint64_t n = std::min<std::uint64_t>(128, 10000 - first);
      batch.resize(n * 784);
      for (std::size_t i = 0; i < batch.size(); ++i) batch[i] = static_cast<float>((first * 784 + i) % 1000) / 1000.0f;
      writer.append(batch);
    }
    EXPECT_EQ(writer.written_elements(), writer.total_elements());
    writer.finish();
  }
  EXPECT_FALSE(fs::exists(dir.path / "images.npy.partial"));

  const int status = run_python(dir.path, R"(import io, sys, numpy as np
d = sys.argv[1]
def same_bytes(path, array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    assert open(path, "rb").read() == buffer.getvalue(), path
a = np.load(f"{d}/f32.npy")
assert a.dtype == np.float32 and a.shape == (2, 3), (a.dtype, a.shape)
assert np.array_equal(a, np.array([[0.5, -1.25, 3.0], [1e-8, 65504.0, -0.0]], dtype=np.float32))
same_bytes(f"{d}/f32.npy", a)
b = np.load(f"{d}/i64.npy")
assert b.dtype == np.int64 and b.tolist() == [0, -1, 2**40, 9]
same_bytes(f"{d}/i64.npy", b)
c = np.load(f"{d}/i32.npy")
assert c.dtype == np.int32 and c.tolist() == [7, -7, 0, 2**31 - 1]
same_bytes(f"{d}/i32.npy", c)
s = np.load(f"{d}/scalar.npy")
assert s.shape == () and s == 2.5
same_bytes(f"{d}/scalar.npy", s)
m = np.load(f"{d}/images.npy", mmap_mode="r")
assert m.shape == (10000, 1, 28, 28) and m.dtype == np.float32
expected = (np.arange(10000 * 784, dtype=np.int64) % 1000).astype(np.float32) / np.float32(1000)
assert np.array_equal(np.asarray(m).ravel(), expected)
same_bytes(f"{d}/images.npy", np.asarray(m))
)");
  EXPECT_EQ(status, 0) << "numpy did not read back what the writers wrote";

  // And we read our own files.
  const NpyArray back = read_npy_file((dir.path / "f32.npy").string(), 100);
  EXPECT_EQ(back.shape, shape);
  EXPECT_EQ(back.values, values);
  EXPECT_EQ(read_npy_file((dir.path / "i64.npy").string(), 100).values, (std::vector<float>{0, -1, 1099511627776.0f, 9}));
}

TEST(NpyArray, HeaderMatchesNumpysPadding) {
  const std::vector<std::uint64_t> shape = {10000, 1, 28, 28};
  const std::string header = npy_header_bytes(NpyDtype::Float32, shape);
  EXPECT_EQ(header.size() % 64, 0u);
  EXPECT_EQ(header.back(), '\n');
  const NpyHeader parsed = parse_npy_header(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(header.data()), header.size()));
  EXPECT_EQ(parsed.major, 1);
  EXPECT_EQ(parsed.descr, "<f4");
  EXPECT_EQ(parsed.shape, shape);
  EXPECT_EQ(parsed.data_offset, header.size());
}

TEST(NpyArray, WriterMisuseIsCaught) {
  test::TempDir dir("aegis_npy_misuse");
  const std::vector<std::uint64_t> shape = {2, 2};
  const std::string path = (dir.path / "x.npy").string();
  {
    NpyWriter writer(path, NpyDtype::Float32, shape);
    EXPECT_THROW(writer.append(std::vector<std::int64_t>{1}), std::logic_error);
    writer.append(std::vector<float>{1, 2, 3});
    EXPECT_THROW(writer.append(std::vector<float>{4, 5}), std::logic_error);
    EXPECT_THROW(writer.finish(), core::Error);  // 3 of 4 elements
  }
  EXPECT_FALSE(fs::exists(path));
  {
    NpyWriter abandoned(path, NpyDtype::Int64, shape);
    abandoned.append(std::vector<std::int64_t>{1, 2});
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".partial"));
  EXPECT_THROW(write_npy_f32(path, shape, std::vector<float>{1, 2, 3}), core::Error);
  EXPECT_THROW(NpyWriter((dir.path / "missing" / "x.npy").string(), NpyDtype::Float32, shape), core::Error);
}

TEST(NpyArray, GarbageNeverCrashes) {
  test::TempDir dir("aegis_npy_garbage");
  const std::vector<std::uint64_t> shape = {3, 4};
  write_npy_f32((dir.path / "seed.npy").string(), shape, std::vector<float>(12, 1.0f));
  const Bytes seed = test::read_file(dir.path / "seed.npy");
  std::uint32_t state = 5;
  for (int round = 0; round < 3000; ++round) {
    Bytes bytes = seed;
    const auto noise = test::pseudo_random_bytes(4, state);
    bytes[noise[0] % bytes.size()] = noise[1];
    bytes[static_cast<std::size_t>(noise[2] % 64) + 10] = noise[3];  // inside the header dict
    bytes.resize(seed.size() - static_cast<std::size_t>(noise[3] % 8));
    try {
      read_npy_records(bytes, 64, noise[0] % 4, noise[1] % 4);
    } catch (const core::FormatError&) {
    }
  }
}

}  // namespace
}  // namespace aegis::formats
