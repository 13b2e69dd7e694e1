#include <gtest/gtest.h>

#include <cctype>

#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "aegis/formats/pymarshal.h"
#include "test_support.h"

namespace aegis::formats {
namespace {

using Bytes = std::vector<std::uint8_t>;

bool has(const std::vector<std::string>& items, const std::string& item) {
  return std::find(items.begin(), items.end(), item) != items.end();
}

// Writes marshal data by hand, following Python/marshal.c, so that tests can build code objects
// of every Python layout and break them one field at a time.
class MarshalWriter {
 public:
  MarshalWriter& byte(std::uint8_t b) {
    out_.push_back(b);
    return *this;
  }
  MarshalWriter& i32(std::int32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<std::uint8_t>(static_cast<std::uint32_t>(v) >> (8 * i)));
    return *this;
  }
  MarshalWriter& raw(const std::string& s) {
    out_.insert(out_.end(), s.begin(), s.end());
    return *this;
  }
  // A string with a 4-byte length under `type` ('s', 't', 'u', 'a', 'A').
  MarshalWriter& str(char type, const std::string& s) {
    byte(static_cast<std::uint8_t>(type)).i32(static_cast<std::int32_t>(s.size()));
    return raw(s);
  }
  // A short ASCII string ('z').
  MarshalWriter& short_str(const std::string& s) {
    byte('z').byte(static_cast<std::uint8_t>(s.size()));
    return raw(s);
  }
  MarshalWriter& tuple(std::int32_t n) { return byte('(').i32(n); }
  MarshalWriter& none() { return byte('N'); }
  Bytes bytes() const { return out_; }

 private:
  Bytes out_;
};

enum class Layout { Py27, Py30, Py38, Py311 };

// def f(x): return system("hi")  -- in the field order of each layout (the bytecode is dummy).
Bytes code_object(Layout layout, const std::string& name = "f", const std::string& constant = "hi") {
  const bool py2 = layout == Layout::Py27;
  const char text = py2 ? 't' : 'u';
  MarshalWriter w;
  w.byte('c').i32(1);                                          // argcount
  if (layout == Layout::Py38 || layout == Layout::Py311) w.i32(0);  // posonlyargcount
  if (!py2) w.i32(0);                                          // kwonlyargcount
  if (layout != Layout::Py311) w.i32(1);                       // nlocals
  w.i32(2).i32(67);                                            // stacksize, flags
  w.str('s', std::string("\x74\x00\x64\x01\x83\x01\x53", 7));  // co_code
  w.tuple(2).none().str(text, constant);                       // co_consts
  w.tuple(1).str(text, "system");                              // co_names
  if (layout == Layout::Py311) {
    w.tuple(1).str(text, "x");                                 // co_localsplusnames
    w.str('s', "\x20");                                        // co_localspluskinds: CO_FAST_LOCAL
    w.str(text, "evil.py").str(text, name).str(text, name);    // filename, name, qualname
    w.i32(7);                                                  // firstlineno
    w.str('s', "").str('s', "");                               // linetable, exceptiontable
  } else {
    w.tuple(1).str(text, "x").tuple(0).tuple(0);               // varnames, freevars, cellvars
    w.str(py2 ? 's' : 'u', "evil.py").str(text, name);        // filename, name
    w.i32(7);                                                  // firstlineno
    w.str('s', "");                                            // lnotab
  }
  return w.bytes();
}

Bytes fixture_bytes(const std::string& name) { return test::read_file(test::fixture("keras_parts/" + name)); }

// ---- real marshal data from CPython 3.11 (tests/fixtures/keras_fixtures.py) ----

TEST(PyMarshal, ReadsTheMaliciousLambdaFromPython311) {
  const MarshalResult result = read_marshalled_code(fixture_bytes("lambda_code_311.marshal"));
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(result.python_family, "3.11+");
  EXPECT_EQ(result.top_level, "code");
  EXPECT_EQ(result.trailing_bytes, 0u);
  ASSERT_TRUE(result.code.has_value());
  const MarshalCode& code = *result.code;
  EXPECT_EQ(code.name, "<lambda>");
  EXPECT_EQ(code.filename, "model.py");
  EXPECT_TRUE(has(code.names, "__import__"));
  EXPECT_TRUE(has(code.names, "system"));
  EXPECT_TRUE(has(code.string_constants, "os"));
  EXPECT_TRUE(has(code.string_constants, "echo aegis-test"));
  EXPECT_TRUE(has(code.varnames, "x"));
  EXPECT_EQ(code.arg_count, 1u);

  const std::string line = summarize_code(code);
  EXPECT_NE(line.find("<lambda>"), std::string::npos) << line;
  EXPECT_NE(line.find("system"), std::string::npos) << line;
  EXPECT_NE(line.find("'echo aegis-test'"), std::string::npos) << line;
}

TEST(PyMarshal, ReadsABenignLambda) {
  const MarshalResult result = read_marshalled_code(fixture_bytes("benign_lambda_311.marshal"));
  ASSERT_TRUE(result.ok) << result.error;
  ASSERT_TRUE(result.code.has_value());
  EXPECT_TRUE(result.code->names.empty());
  EXPECT_TRUE(result.code->string_constants.empty());
  EXPECT_TRUE(has(result.code->other_constants, "2.5"));
}

TEST(PyMarshal, DescribesNestedCodeClosuresAndConstantsOfManyTypes) {
  const MarshalResult result = read_marshalled_code(fixture_bytes("nested_code_311.marshal"));
  ASSERT_TRUE(result.ok) << result.error;
  ASSERT_TRUE(result.code.has_value());
  const MarshalCode& outer = *result.code;
  EXPECT_EQ(outer.name, "scale");
  EXPECT_EQ(outer.filename, "layers.py");
  EXPECT_TRUE(has(outer.varnames, "x"));
  EXPECT_TRUE(has(outer.varnames, "factor"));
  ASSERT_EQ(outer.nested.size(), 1u);
  EXPECT_EQ(outer.nested[0].name, "inner");
  EXPECT_TRUE(has(outer.nested[0].freevars, "factor"));
  EXPECT_TRUE(has(outer.nested[0].freevars, "offset"));
  // ("tuple", 7), b"\x00bytes", -12345678901234567890, 1j, True, ... as Python would print them.
  EXPECT_TRUE(has(outer.string_constants, "tuple"));
  EXPECT_TRUE(has(outer.constants, "('tuple', 7)"));
  EXPECT_TRUE(has(outer.constants, "b'\\x00bytes'"));
  EXPECT_TRUE(has(outer.constants, "-12345678901234567890"));
  EXPECT_TRUE(has(outer.constants, "True"));
  EXPECT_TRUE(has(outer.constants, "Ellipsis"));
  EXPECT_TRUE(has(outer.constants, "<code inner>"));
  const std::string line = summarize_code(outer);
  EXPECT_NE(line.find("nested code"), std::string::npos) << line;
  EXPECT_NE(line.find("closure [factor, offset]"), std::string::npos) << line;
}

TEST(PyMarshal, Base64FixtureDecodesToTheMarshalBytes) {
  const Bytes text = fixture_bytes("lambda_code_311.b64");
  const auto decoded = decode_base64(std::string(text.begin(), text.end()));
  ASSERT_TRUE(decoded.has_value());
  EXPECT_EQ(*decoded, fixture_bytes("lambda_code_311.marshal"));
}

// ---- every code layout ----

struct LayoutCase {
  Layout layout;
  const char* family;
};

class PyMarshalLayouts : public ::testing::TestWithParam<LayoutCase> {};

TEST_P(PyMarshalLayouts, PicksTheLayoutThatReadsTheWholeBuffer) {
  const MarshalResult result = read_marshalled_code(code_object(GetParam().layout));
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(result.python_family, GetParam().family);
  ASSERT_TRUE(result.code.has_value());
  EXPECT_EQ(result.code->name, "f");
  EXPECT_EQ(result.code->filename, "evil.py");
  EXPECT_EQ(result.code->first_line, 7u);
  EXPECT_EQ(result.code->names, std::vector<std::string>{"system"});
  EXPECT_TRUE(has(result.code->string_constants, "hi"));
  EXPECT_TRUE(has(result.code->varnames, "x"));
}

INSTANTIATE_TEST_SUITE_P(AllFamilies, PyMarshalLayouts,
                         ::testing::Values(LayoutCase{Layout::Py27, "2.7"}, LayoutCase{Layout::Py30, "3.0-3.7"},
                                           LayoutCase{Layout::Py38, "3.8-3.10"}, LayoutCase{Layout::Py311, "3.11+"}),
                         // Stable names (the default prints the struct's bytes, pointers included,
                         // which differ between CTest's discovery run and the test run).
                         [](const ::testing::TestParamInfo<LayoutCase>& info) {
                           std::string name = "py";
                           for (char c : std::string(info.param.family))
                             name += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
                           return name;
                         });

TEST(PyMarshal, TrailingBytesAreReportedNotFatal) {
  Bytes data = fixture_bytes("lambda_code_311.marshal");
  data.insert(data.end(), {'j', 'u', 'n', 'k'});
  const MarshalResult result = read_marshalled_code(data);
  ASSERT_TRUE(result.ok) << result.error;  // marshal.loads ignores them too
  EXPECT_EQ(result.trailing_bytes, 4u);
  ASSERT_TRUE(result.code.has_value());
  EXPECT_TRUE(has(result.code->names, "system"));
}

TEST(PyMarshal, TopLevelObjectThatIsNotCode) {
  MarshalWriter w;
  w.tuple(3).none().short_str("abc").byte('i').i32(-5);
  const MarshalResult result = read_marshalled_code(w.bytes());
  ASSERT_TRUE(result.ok) << result.error;
  EXPECT_EQ(result.top_level, "tuple");
  EXPECT_FALSE(result.code.has_value());
  EXPECT_TRUE(result.python_family.empty());
}

TEST(PyMarshal, LongStringsKeepOnlyTheirStart) {
  const std::string big(10000, 'A');
  const MarshalResult result = read_marshalled_code(code_object(Layout::Py311, "f", big));
  ASSERT_TRUE(result.ok) << result.error;
  ASSERT_TRUE(result.code.has_value());
  ASSERT_EQ(result.code->string_constants.size(), 1u);
  const std::string& kept = result.code->string_constants[0];
  EXPECT_LE(kept.size(), kMarshalKeepBytes + 3);
  EXPECT_EQ(kept.substr(0, 10), "AAAAAAAAAA");
  EXPECT_EQ(kept.substr(kept.size() - 3), "...");
}

TEST(PyMarshal, ControlCharactersAndBadUtf8AreEscaped) {
  const MarshalResult result = read_marshalled_code(code_object(Layout::Py311, "f", std::string("a\x01\xff\n", 4)));
  ASSERT_TRUE(result.ok) << result.error;
  ASSERT_TRUE(result.code.has_value());
  EXPECT_EQ(result.code->string_constants.at(0), "a\\x01\\xff\\x0a");
  EXPECT_TRUE(has(result.code->constants, "'a\\x01\\xff\\n'"));
}

TEST(PyMarshal, SummaryRespectsItsLimit) {
  const MarshalResult result = read_marshalled_code(code_object(Layout::Py311, "f", std::string(200, 'B')));
  ASSERT_TRUE(result.code.has_value());
  const std::string line = summarize_code(*result.code, 60);
  EXPECT_LE(line.size(), 60u);
  EXPECT_EQ(line.substr(line.size() - 3), "...");
}

// ---- bad input ----

TEST(PyMarshalBadInput, EmptyInput) {
  const MarshalResult result = read_marshalled_code({});
  EXPECT_FALSE(result.ok);
  EXPECT_FALSE(result.error.empty());
}

TEST(PyMarshalBadInput, EveryTruncationOfRealDataIsAnError) {
  const Bytes data = fixture_bytes("lambda_code_311.marshal");
  for (std::size_t n = 0; n < data.size(); ++n) {
    const MarshalResult result = read_marshalled_code(std::span<const std::uint8_t>(data.data(), n));
    EXPECT_FALSE(result.ok) << "prefix of " << n << " bytes";
    EXPECT_FALSE(result.error.empty());
  }
}

TEST(PyMarshalBadInput, FlippedBytesNeverCrash) {
  const Bytes data = fixture_bytes("nested_code_311.marshal");
  for (std::size_t i = 0; i < data.size(); ++i) {
    for (std::uint8_t x : {0x01, 0x80, 0xFF}) {
      Bytes copy = data;
      copy[i] ^= x;
      const MarshalResult result = read_marshalled_code(copy);
      if (!result.ok) {
        EXPECT_FALSE(result.error.empty());
      }
    }
  }
}

TEST(PyMarshalBadInput, RandomBytesAndEveryTypeCode) {
  std::mt19937 rng(7);
  for (int round = 0; round < 2000; ++round) {
    Bytes data(1 + rng() % 64);
    for (auto& b : data) b = static_cast<std::uint8_t>(rng());
    read_marshalled_code(data);
  }
  for (int code = 0; code < 256; ++code) {
    const Bytes one{static_cast<std::uint8_t>(code)};
    read_marshalled_code(one);
    const Bytes padded{static_cast<std::uint8_t>(code), 0xFF, 0xFF, 0xFF, 0x7F, 'N'};
    read_marshalled_code(padded);
  }
}

TEST(PyMarshalBadInput, DeepNestingIsRefused) {
  Bytes data;
  for (int i = 0; i < 5000; ++i) data.insert(data.end(), {')', 0x01});
  data.push_back('N');
  const MarshalResult result = read_marshalled_code(data);
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("deeper"), std::string::npos) << result.error;
}

TEST(PyMarshalBadInput, NestingWithinTheLimitIsRead) {
  Bytes data;
  for (int i = 0; i < 60; ++i) data.insert(data.end(), {')', 0x01});
  data.push_back('N');
  EXPECT_TRUE(read_marshalled_code(data).ok);
}

TEST(PyMarshalBadInput, HugeCountsAreCheckedAgainstTheBytesLeft) {
  for (char type : {'(', '[', '<', '>', 's', 'u', 'a'}) {
    MarshalWriter w;
    w.byte(static_cast<std::uint8_t>(type)).i32(0x7FFFFFFF).none();
    const MarshalResult result = read_marshalled_code(w.bytes());
    EXPECT_FALSE(result.ok) << type;
  }
  MarshalWriter negative;
  negative.tuple(-1);
  EXPECT_FALSE(read_marshalled_code(negative.bytes()).ok);
  MarshalWriter long_int;
  long_int.byte('l').i32(-0x7FFFFFFF - 1);
  EXPECT_FALSE(read_marshalled_code(long_int.bytes()).ok);
}

TEST(PyMarshalBadInput, ObjectCountIsCapped) {
  MarshalWriter w;
  w.tuple(150000);
  for (int i = 0; i < 150000; ++i) w.none();
  const MarshalResult result = read_marshalled_code(w.bytes());
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("objects"), std::string::npos) << result.error;
}

TEST(PyMarshalBadInput, DictWithoutEndMarker) {
  MarshalWriter w;
  w.byte('{').short_str("k").none();
  EXPECT_FALSE(read_marshalled_code(w.bytes()).ok);
  MarshalWriter ok;
  ok.byte('{').short_str("k").none().byte('0');
  const MarshalResult result = read_marshalled_code(ok.bytes());
  EXPECT_TRUE(result.ok) << result.error;
  EXPECT_EQ(result.top_level, "dict");
}

TEST(PyMarshalBadInput, References) {
  // A list that contains itself (allowed: Python enters it into the table before its items).
  MarshalWriter self;
  self.byte('[' | 0x80).i32(2).byte('r').i32(0).none();
  EXPECT_TRUE(read_marshalled_code(self.bytes()).ok);
  // A reference past the table.
  MarshalWriter past;
  past.tuple(2).byte('z' | 0x80).byte(1).raw("a").byte('r').i32(5);
  EXPECT_FALSE(read_marshalled_code(past.bytes()).ok);
  // A reference to a code object that is still being read (its own slot, 0).
  MarshalWriter w;
  w.byte('c' | 0x80).i32(1).i32(0).i32(0).i32(2).i32(67).str('s', "x");
  w.tuple(1).byte('r').i32(0);
  const MarshalResult result = read_marshalled_code(w.bytes());
  EXPECT_FALSE(result.ok);
  // 'R' (Python 2 string references) and FLAG_REF do not mix.
  MarshalWriter py2ref;
  py2ref.byte('R').i32(0);
  EXPECT_FALSE(read_marshalled_code(py2ref.bytes()).ok);
}

TEST(PyMarshalBadInput, CyclicConstantsRenderBounded) {
  // A 3.11 code object whose co_consts holds a list containing itself many times over.
  MarshalWriter w;
  w.byte('c').i32(0).i32(0).i32(0).i32(1).i32(0).str('s', "");
  w.byte('(' | 0x80).i32(1);  // co_consts (ref slot 0)
  w.byte('[' | 0x80).i32(50);  // a list (ref slot 1) holding itself 50 times
  for (int i = 0; i < 50; ++i) w.byte('r').i32(1);
  w.tuple(0).tuple(0).str('s', "").short_str("f.py").short_str("f").short_str("f").i32(1).str('s', "").str('s', "");
  const MarshalResult result = read_marshalled_code(w.bytes());
  ASSERT_TRUE(result.ok) << result.error;
  ASSERT_TRUE(result.code.has_value());
  ASSERT_EQ(result.code->constants.size(), 1u);
  EXPECT_LT(result.code->constants[0].size(), 1000u);
}

TEST(PyMarshalBadInput, WrongFieldTypesAreRejected) {
  // co_names holding an int: no layout accepts it.
  MarshalWriter w;
  w.byte('c').i32(0).i32(0).i32(0).i32(1).i32(0).str('s', "").tuple(0);
  w.tuple(1).byte('i').i32(3);
  w.tuple(0).str('s', "").short_str("f.py").short_str("f").short_str("f").i32(1).str('s', "").str('s', "");
  const MarshalResult result = read_marshalled_code(w.bytes());
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.error.find("code"), std::string::npos) << result.error;
}

// ---- base64 ----

std::string text_of(const std::optional<Bytes>& bytes) { return bytes ? std::string(bytes->begin(), bytes->end()) : "<none>"; }

TEST(Base64, DecodesPaddedInputAndSkipsWhitespace) {
  EXPECT_EQ(text_of(decode_base64("")), "");
  EXPECT_EQ(text_of(decode_base64("QQ==")), "A");
  EXPECT_EQ(text_of(decode_base64("QUI=")), "AB");
  EXPECT_EQ(text_of(decode_base64("QUJD")), "ABC");
  EXPECT_EQ(text_of(decode_base64(" QU\nJD\r\n\tRA= =\n")), "ABCD");
  EXPECT_EQ(text_of(decode_base64("+/+/")), std::string("\xfb\xff\xbf", 3));
}

TEST(Base64, RejectsEverythingElse) {
  for (const char* bad : {"QQ", "Q", "QUJ", "Q===", "====", "QQ==QQ==", "QUJD!", "QU-D", "QQ=A", "=QQQ", "QUJDRA==x"}) {
    EXPECT_FALSE(decode_base64(bad).has_value()) << bad;
  }
}

}  // namespace
}  // namespace aegis::formats
