#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "aegis/formats/gguf.h"

namespace aegis::formats {
namespace {

using Bytes = std::vector<std::uint8_t>;

// Builds GGUF files byte by byte, so that each test can break exactly one thing.
class GgufWriter {
 public:
  explicit GgufWriter(std::uint32_t version = 3) : version_(version) {}

  static void put_u32(Bytes& out, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  static void put_u64(Bytes& out, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  }
  static void put_string(Bytes& out, const std::string& s) {
    put_u64(out, s.size());
    out.insert(out.end(), s.begin(), s.end());
  }

  // A key, its value type, and the value's raw encoding.
  GgufWriter& kv(const std::string& key, std::uint32_t type, const Bytes& value) {
    put_string(kvs_, key);
    put_u32(kvs_, type);
    kvs_.insert(kvs_.end(), value.begin(), value.end());
    ++kv_count_;
    return *this;
  }
  GgufWriter& kv_string(const std::string& key, const std::string& value) {
    Bytes v;
    put_string(v, value);
    return kv(key, 8, v);
  }
  GgufWriter& kv_u32(const std::string& key, std::uint32_t value) {
    Bytes v;
    put_u32(v, value);
    return kv(key, 4, v);
  }
  GgufWriter& alignment(std::uint32_t value) {
    alignment_ = value;
    return kv_u32("general.alignment", value);
  }

  // A tensor whose offset is placed after the previous one unless given.
  GgufWriter& tensor(const std::string& name, std::vector<std::uint64_t> dims, std::uint32_t type, std::uint64_t bytes,
                     std::optional<std::uint64_t> offset = std::nullopt) {
    const std::uint64_t at = offset ? *offset : next_offset_;
    tensors_.push_back({name, std::move(dims), type, at});
    next_offset_ = std::max(next_offset_, align(at + bytes));
    data_end_ = std::max(data_end_, at + bytes);
    return *this;
  }

  GgufWriter& tensor_count(std::uint64_t n) {
    tensor_count_ = n;
    return *this;
  }
  GgufWriter& kv_count(std::uint64_t n) {
    kv_count_override_ = n;
    return *this;
  }

  Bytes build() const {
    Bytes out = {'G', 'G', 'U', 'F'};
    put_u32(out, version_);
    put_u64(out, tensor_count_ ? *tensor_count_ : tensors_.size());
    put_u64(out, kv_count_override_ ? *kv_count_override_ : kv_count_);
    out.insert(out.end(), kvs_.begin(), kvs_.end());
    for (const auto& t : tensors_) {
      put_string(out, t.name);
      put_u32(out, static_cast<std::uint32_t>(t.dims.size()));
      for (std::uint64_t d : t.dims) put_u64(out, d);
      put_u32(out, t.type);
      put_u64(out, t.offset);
    }
    out.resize(static_cast<std::size_t>(align(out.size())), 0);
    const std::size_t data_start = out.size();
    out.resize(data_start + static_cast<std::size_t>(data_end_), 0x5A);
    return out;
  }

 private:
  struct Tensor {
    std::string name;
    std::vector<std::uint64_t> dims;
    std::uint32_t type;
    std::uint64_t offset;
  };
  std::uint64_t align(std::uint64_t v) const {
    const std::uint64_t a = (alignment_ == 0 || (alignment_ & (alignment_ - 1))) ? 32 : alignment_;
    return (v + a - 1) / a * a;
  }

  std::uint32_t version_;
  std::uint32_t alignment_ = 32;
  Bytes kvs_;
  std::uint64_t kv_count_ = 0;
  std::optional<std::uint64_t> kv_count_override_, tensor_count_;
  std::vector<Tensor> tensors_;
  std::uint64_t next_offset_ = 0, data_end_ = 0;
};

Bytes u32_bytes(std::uint32_t v) {
  Bytes out;
  GgufWriter::put_u32(out, v);
  return out;
}

Bytes u64_bytes(std::uint64_t v) {
  Bytes out;
  GgufWriter::put_u64(out, v);
  return out;
}

Bytes array_header(std::uint32_t element_type, std::uint64_t count) {
  Bytes out = u32_bytes(element_type);
  GgufWriter::put_u64(out, count);
  return out;
}

// Metadata of every value type, arrays of fixed-size values, of strings, and of arrays.
GgufWriter full_writer(std::uint32_t version) {
  GgufWriter w(version);
  w.kv_string("general.architecture", "llama")
      .kv("u8", 0, {7})
      .kv("i8", 1, {0xFF})
      .kv("u16", 2, {1, 2})
      .kv("i16", 3, {3, 4})
      .kv_u32("u32", 5)
      .kv("i32", 5, u32_bytes(0xFFFFFFFF))
      .kv("f32", 6, u32_bytes(0x3F800000))
      .kv("bool", 7, {1})
      .kv("u64", 10, u64_bytes(1ull << 40))
      .kv("i64", 11, u64_bytes(~0ull))
      .kv("f64", 12, u64_bytes(0x3FF0000000000000ull));
  Bytes ints = array_header(4, 3);
  for (std::uint32_t v : {1u, 2u, 3u}) GgufWriter::put_u32(ints, v);
  w.kv("tokenizer.ggml.token_type", 9, ints);
  Bytes strings = array_header(8, 2);
  GgufWriter::put_string(strings, "<s>");
  GgufWriter::put_string(strings, "</s>");
  w.kv("tokenizer.ggml.tokens", 9, strings);
  Bytes nested = array_header(9, 2);
  for (int i = 0; i < 2; ++i) {
    Bytes inner = array_header(0, 2);
    inner.push_back(1);
    inner.push_back(2);
    nested.insert(nested.end(), inner.begin(), inner.end());
  }
  w.kv("nested", 9, nested);
  w.kv_string("tokenizer.chat_template", "{% for m in messages %}{{ m['content'] }}{% endfor %}");
  w.kv_string("tokenizer.chat_template.tool_use", "{{ bos_token }}");
  w.tensor("token_embd.weight", {4, 3}, 0, 48)   // F32
      .tensor("blk.0.attn_q.weight", {64}, 2, 36)  // Q4_0: two 18-byte blocks
      .tensor("output_norm.weight", {3}, 1, 6)     // F16
      .tensor("blk.0.ffn.weight", {256, 2}, 12, 288);  // Q4_K: two 144-byte blocks
  return w;
}

bool has_problem(const GgufInfo& info, std::string_view kind) {
  return std::any_of(info.problems.begin(), info.problems.end(), [&](const GgufProblem& p) { return p.kind == kind; });
}

std::string describe(const GgufInfo& info) {
  std::string text;
  for (const auto& p : info.problems) text += p.kind + "@" + std::to_string(p.offset) + "(" + p.detail + ") ";
  return text;
}

TEST(Gguf, AcceptsValidVersion3) {
  const Bytes file = full_writer(3).build();
  ASSERT_TRUE(looks_like_gguf(file));
  const GgufInfo info = validate_gguf(file);
  EXPECT_TRUE(info.problems.empty()) << describe(info);
  EXPECT_EQ(info.version, 3u);
  EXPECT_EQ(info.metadata_count, 17u);
  EXPECT_EQ(info.tensor_count, 4u);
  EXPECT_EQ(info.alignment, 32u);
  ASSERT_EQ(info.tensors.size(), 4u);
  EXPECT_EQ(info.tensors[0].name, "token_embd.weight");
  EXPECT_EQ(info.tensors[0].dims, (std::vector<std::uint64_t>{4, 3}));
  EXPECT_EQ(info.tensors[1].type, 2u);
  EXPECT_EQ(info.tensors[1].offset, 64u);
  EXPECT_EQ(info.data_offset % 32, 0u);
  ASSERT_EQ(info.templates.size(), 2u);
  EXPECT_EQ(info.templates[0].key, "tokenizer.chat_template");
  EXPECT_EQ(info.templates[1].key, "tokenizer.chat_template.tool_use");
  EXPECT_EQ(info.templates[1].text, "{{ bos_token }}");
}

TEST(Gguf, AcceptsValidVersion2) {
  const GgufInfo info = validate_gguf(full_writer(2).build());
  EXPECT_TRUE(info.problems.empty()) << describe(info);
  EXPECT_EQ(info.version, 2u);
}

TEST(Gguf, AcceptsCustomAlignmentAndNoTensors) {
  GgufWriter w;
  w.alignment(64).tensor("a", {3}, 0, 12).tensor("b", {5}, 0, 20);
  const GgufInfo info = validate_gguf(w.build());
  EXPECT_TRUE(info.problems.empty()) << describe(info);
  EXPECT_EQ(info.alignment, 64u);
  EXPECT_EQ(info.tensors[1].offset, 64u);
  const GgufInfo empty = validate_gguf(GgufWriter().kv_string("general.name", "x").build());
  EXPECT_TRUE(empty.problems.empty()) << describe(empty);
}

TEST(Gguf, ReportsBadMagic) {
  Bytes file = full_writer(3).build();
  file[0] = 'X';
  EXPECT_FALSE(looks_like_gguf(file));
  EXPECT_TRUE(has_problem(validate_gguf(file), "magic"));
  EXPECT_TRUE(has_problem(validate_gguf(Bytes{'G', 'G'}), "truncated"));
}

TEST(Gguf, ReportsUnsupportedVersions) {
  for (std::uint32_t version : {0u, 1u, 4u, 0x03000000u}) {
    const GgufInfo info = validate_gguf(GgufWriter(version).build());
    EXPECT_TRUE(has_problem(info, "version")) << version;
  }
}

TEST(Gguf, ReportsCountsThatCannotFit) {
  const GgufInfo kvs = validate_gguf(GgufWriter().kv_count(1ull << 60).build());
  EXPECT_TRUE(has_problem(kvs, "count")) << describe(kvs);
  const GgufInfo tensors = validate_gguf(GgufWriter().tensor_count(~0ull).build());
  EXPECT_TRUE(has_problem(tensors, "count")) << describe(tensors);
  // Enough room for the metadata count alone, but not for the tensors after the metadata.
  GgufWriter w;
  w.kv_string("k", std::string(200, 'x')).tensor_count(5);
  const GgufInfo after = validate_gguf(w.build());
  EXPECT_TRUE(has_problem(after, "count")) << describe(after);
}

TEST(Gguf, ReportsStringPastEnd) {
  Bytes value;
  GgufWriter::put_u64(value, 1ull << 50);
  const GgufInfo info = validate_gguf(GgufWriter().kv("k", 8, value).build());
  EXPECT_TRUE(has_problem(info, "string")) << describe(info);
}

TEST(Gguf, ReportsUnknownValueType) {
  const GgufInfo info = validate_gguf(GgufWriter().kv("k", 13, {0, 0, 0, 0}).build());
  EXPECT_TRUE(has_problem(info, "value-type")) << describe(info);
}

TEST(Gguf, ReportsUnknownArrayElementType) {
  const GgufInfo info = validate_gguf(GgufWriter().kv("k", 9, array_header(99, 1)).build());
  EXPECT_TRUE(has_problem(info, "array-type")) << describe(info);
}

TEST(Gguf, ReportsArraysNestedTooDeep) {
  auto nest = [](int levels) {
    Bytes value = array_header(0, 0);
    for (int i = 1; i < levels; ++i) {
      Bytes outer = array_header(9, 1);
      outer.insert(outer.end(), value.begin(), value.end());
      value = outer;
    }
    return value;
  };
  const GgufInfo ok = validate_gguf(GgufWriter().kv("k", 9, nest(4)).build());
  EXPECT_TRUE(ok.problems.empty()) << describe(ok);
  const GgufInfo deep = validate_gguf(GgufWriter().kv("k", 9, nest(5)).build());
  EXPECT_TRUE(has_problem(deep, "array-depth")) << describe(deep);
}

TEST(Gguf, ReportsArrayLengthPastEnd) {
  const GgufInfo info = validate_gguf(GgufWriter().kv("k", 9, array_header(12, 1ull << 61)).build());
  EXPECT_TRUE(has_problem(info, "array-length")) << describe(info);
  const GgufInfo strings = validate_gguf(GgufWriter().kv("k", 9, array_header(8, 100)).build());
  EXPECT_TRUE(has_problem(strings, "array-length")) << describe(strings);
}

TEST(Gguf, ReportsDuplicateKey) {
  const GgufInfo info = validate_gguf(GgufWriter().kv_u32("a", 1).kv_u32("a", 2).build());
  EXPECT_TRUE(has_problem(info, "duplicate-key")) << describe(info);
}

TEST(Gguf, ReportsTooManyDims) {
  const GgufInfo info = validate_gguf(GgufWriter().tensor("t", {1, 1, 1, 1, 1}, 0, 4).build());
  EXPECT_TRUE(has_problem(info, "n-dims")) << describe(info);
}

TEST(Gguf, ReportsDimsOverflow) {
  const GgufInfo info = validate_gguf(GgufWriter().tensor("t", {1ull << 32, 1ull << 32, 4}, 0, 4).build());
  EXPECT_TRUE(has_problem(info, "dims")) << describe(info);
  const GgufInfo negative = validate_gguf(GgufWriter().tensor("t", {~0ull}, 0, 4).build());
  EXPECT_TRUE(has_problem(negative, "dims")) << describe(negative);
}

TEST(Gguf, ReportsUnknownTensorType) {
  for (std::uint32_t type : {4u, 31u, 40u, 1000u}) {
    const GgufInfo info = validate_gguf(GgufWriter().tensor("t", {32}, type, 32).build());
    EXPECT_TRUE(has_problem(info, "tensor-type")) << type << ": " << describe(info);
  }
}

TEST(Gguf, ReportsMisalignedOffset) {
  const GgufInfo info = validate_gguf(GgufWriter().tensor("t", {4}, 0, 16, 8).build());
  EXPECT_TRUE(has_problem(info, "tensor-offset")) << describe(info);
}

TEST(Gguf, ReportsDataBeyondEnd) {
  Bytes file = GgufWriter().tensor("t", {16}, 0, 64).build();
  file.pop_back();
  const GgufInfo info = validate_gguf(file);
  EXPECT_TRUE(has_problem(info, "tensor-bounds")) << describe(info);
}

TEST(Gguf, ReportsOverlap) {
  const GgufInfo info = validate_gguf(GgufWriter().tensor("a", {16}, 0, 64).tensor("b", {16}, 0, 64, 32).build());
  EXPECT_TRUE(has_problem(info, "overlap")) << describe(info);
}

TEST(Gguf, ReportsGapAsLayout) {
  const GgufInfo info = validate_gguf(GgufWriter().tensor("a", {8}, 0, 32).tensor("b", {8}, 0, 32, 96).build());
  EXPECT_TRUE(has_problem(info, "layout")) << describe(info);
}

TEST(Gguf, ReportsBadAlignment) {
  const GgufInfo info = validate_gguf(GgufWriter().alignment(48).build());
  EXPECT_TRUE(has_problem(info, "alignment")) << describe(info);
  const GgufInfo zero = validate_gguf(GgufWriter().alignment(0).build());
  EXPECT_TRUE(has_problem(zero, "alignment")) << describe(zero);
  const GgufInfo wrong_type = validate_gguf(GgufWriter().kv("general.alignment", 10, u64_bytes(32)).build());
  EXPECT_TRUE(has_problem(wrong_type, "alignment")) << describe(wrong_type);
}

TEST(Gguf, ReportsTensorNames) {
  const GgufInfo info =
      validate_gguf(GgufWriter().tensor("a", {8}, 0, 32).tensor("a", {8}, 0, 32).tensor(std::string(64, 'n'), {8}, 0, 32).build());
  EXPECT_TRUE(has_problem(info, "duplicate-tensor")) << describe(info);
  EXPECT_TRUE(has_problem(info, "tensor-name")) << describe(info);
}

TEST(Gguf, EveryTruncationIsReported) {
  const Bytes file = full_writer(3).build();
  for (std::size_t size = 0; size < file.size(); ++size) {
    const GgufInfo info = validate_gguf(std::span<const std::uint8_t>(file.data(), size));
    EXPECT_FALSE(info.problems.empty()) << "prefix of " << size << " bytes";
  }
}

TEST(Gguf, CapsProblems) {
  GgufWriter w;
  for (int i = 0; i < 300; ++i) w.tensor("t" + std::to_string(i), {8}, 0, 32, 1);
  const GgufInfo info = validate_gguf(w.build());
  EXPECT_EQ(info.problems.size(), 100u);
}

// ---- templates ----

std::string describe(const std::vector<TemplateRisk>& risks) {
  std::string text;
  for (const auto& r : risks) text += r.kind + "/" + r.severity + "@" + std::to_string(r.offset) + " [" + r.excerpt + "] ";
  return text;
}

bool has_critical(const std::vector<TemplateRisk>& risks) {
  return std::any_of(risks.begin(), risks.end(), [](const TemplateRisk& r) { return r.severity == "critical"; });
}

TEST(JinjaReview, BenignTemplatesHaveNoRisks) {
  const std::string llama3 =
      "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
      "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}"
      "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
      "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";
  const std::string chatml =
      "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + "
      "'\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";
  const std::string mistral =
      "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
      "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
      "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
      "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
      "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";
  const std::string with_namespace =
      "{#- The system prompt, if any, goes first -#}\n"
      "{%- set ns = namespace(system='', found=false) -%}\n"
      "{%- for message in messages -%}{%- if message.role == 'system' -%}{%- set ns.system = message.content -%}"
      "{%- set ns.found = true -%}{%- endif -%}{%- endfor -%}\n"
      "{%- if ns.found %}{{ '<<SYS>>' ~ ns.system ~ '<</SYS>>' }}{% endif -%}\n"
      "{{- {'a': 1}['a'] }}{% if tools is defined %}{{ tools | tojson(indent=2) }}{% endif %}";
  for (const std::string& text : {llama3, chatml, mistral, with_namespace}) {
    const auto risks = review_jinja_template(text);
    EXPECT_TRUE(risks.empty()) << describe(risks) << "\n" << text;
  }
}

TEST(JinjaReview, FlagsKnownPayloads) {
  const std::vector<std::string> payloads = {
      "{{ self._TemplateReference__context.cycler.__init__.__globals__.os.popen('id').read() }}",
      "{{ ''.__class__.__mro__[1].__subclasses__() }}",
      "{{ cycler.__init__.__globals__.os.system('x') }}",
      "{{ joiner.__init__.__globals__ }}",
      "{{ (''|attr('__cla' ~ 'ss__')) }}",
      "{% import 'os' as os %}",
      "{{ x['__glo' + ('bals__')] }}",
      "{{ ''['\\x5f\\x5fclass\\x5f\\x5f'] }}",
      "{% from 'helpers' import evil %}",
      "{{- lipsum.__globals__['os'] -}}",
  };
  for (const std::string& text : payloads) {
    const auto risks = review_jinja_template(text);
    EXPECT_TRUE(has_critical(risks)) << text << ": " << describe(risks);
  }
}

TEST(JinjaReview, FlagsHighRiskConstructs) {
  for (const std::string text : {"{% include '/etc/passwd' %}", "{% extends 'base.html' %}", "{{ config.items() }}",
                                 "{{ request.args }}", "{{ x|attr(name) }}", "{{ foo.popen('id') }}",
                                 "{{ d['os'] }}"}) {
    const auto risks = review_jinja_template(text);
    EXPECT_FALSE(risks.empty()) << text;
  }
}

TEST(JinjaReview, ReportsOffsetExcerptAndSeverity) {
  const std::string text = std::string(200, 'x') + "{{ joiner.__init__.__globals__ }}" + std::string(200, 'y');
  const auto risks = review_jinja_template(text);
  ASSERT_FALSE(risks.empty());
  for (const auto& risk : risks) {
    EXPECT_LE(risk.excerpt.size(), 120u);
    EXPECT_GE(risk.offset, 200u);
    EXPECT_NE(risk.excerpt.find(text.substr(risk.offset, 3)), std::string::npos);
  }
  const auto dunder = std::find_if(risks.begin(), risks.end(), [](const TemplateRisk& r) { return r.kind == "dunder-attribute"; });
  ASSERT_NE(dunder, risks.end());
  EXPECT_EQ(dunder->severity, "critical");
  EXPECT_EQ(text.substr(dunder->offset, 8), "__init__");
}

TEST(JinjaReview, IgnoresProseAndComments) {
  const auto risks = review_jinja_template("Use os.system with care. {# cycler.__init__ #}{{ 'done' }} {{ '}}' }} text __x__");
  EXPECT_TRUE(risks.empty()) << describe(risks);
  // A closer inside brackets or a string does not end the tag, as in Jinja's lexer.
  EXPECT_TRUE(has_critical(review_jinja_template("{{ {'a': '}}'}['a'].__class__ }}")));
}

}  // namespace
}  // namespace aegis::formats
