// A job's JSON line: what to_json writes reads back the same, and what a hostile queue holds is refused
// with a reason instead of crashing or reaching a worker.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <string>
#include <vector>

#include "aegis/assess/job.h"
#include "aegis/core/error.h"

namespace aegis::assess {
namespace {

using nlohmann::json;

Job sample_job() {
  Job job;
  job.assessment_id = 42;
  job.asset = "fashion-classifier";
  job.check = "scan";
  job.arguments = {"scan", "models/fashion.pt", "--format", "json", "--output", "résultat ✓.json"};
  job.inputs = {"models/fashion.pt", "data/train \"quoted\".npy"};
  job.key = std::string(64, 'a');
  job.key[0] = '0';
  job.key[63] = 'f';
  job.artifacts = "images";
  job.timeout_seconds = 900;
  return job;
}

json sample_document() { return json::parse(to_json(sample_job())); }

// The reason job_from_json gives for `text`, or "accepted".
std::string refusal(const std::string& text) {
  std::string why;
  const auto job = job_from_json(text, &why);
  if (job) return "accepted";
  EXPECT_FALSE(why.empty()) << "a refusal must say why";
  return why;
}

std::string refusal_of(const json& document) { return refusal(document.dump()); }

TEST(JobJson, RoundTripKeepsEveryField) {
  const Job job = sample_job();
  const std::string line = to_json(job);
  EXPECT_EQ(line.find('\n'), std::string::npos) << "one job, one line";
  std::string why;
  const auto back = job_from_json(line, &why);
  ASSERT_TRUE(back) << why;
  EXPECT_EQ(back->assessment_id, job.assessment_id);
  EXPECT_EQ(back->asset, job.asset);
  EXPECT_EQ(back->check, job.check);
  EXPECT_EQ(back->arguments, job.arguments);
  EXPECT_EQ(back->inputs, job.inputs);
  EXPECT_EQ(back->key, job.key);
  EXPECT_EQ(back->artifacts, job.artifacts);
  EXPECT_EQ(back->timeout_seconds, job.timeout_seconds);
}

TEST(JobJson, RoundTripOfEmptyOptionalParts) {
  Job job = sample_job();
  job.inputs.clear();
  job.artifacts.clear();
  job.assessment_id = 0;
  const auto back = job_from_json(to_json(job));
  ASSERT_TRUE(back);
  EXPECT_TRUE(back->inputs.empty());
  EXPECT_TRUE(back->artifacts.empty());
  EXPECT_EQ(back->assessment_id, 0);
}

TEST(JobJson, ArgumentWithNewlineStaysOneLine) {
  Job job = sample_job();
  job.arguments.push_back("line one\nline two");
  const std::string line = to_json(job);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  const auto back = job_from_json(line);
  ASSERT_TRUE(back);
  EXPECT_EQ(back->arguments.back(), "line one\nline two");
}

TEST(JobJson, NonUtf8ArgumentIsRefusedWhenWriting) {
  Job job = sample_job();
  job.inputs.push_back(std::string("model-\xff\xfe.pt"));
  EXPECT_THROW(to_json(job), core::Error);
}

TEST(JobJson, RefusesTextThatIsNotAJobObject) {
  EXPECT_NE(refusal(""), "accepted");
  EXPECT_NE(refusal("not json"), "accepted");
  EXPECT_NE(refusal("{\"assessment_id\": 1,"), "accepted");
  EXPECT_NE(refusal("[1, 2, 3]"), "accepted");
  EXPECT_NE(refusal("\"a string\""), "accepted");
  EXPECT_NE(refusal("null"), "accepted");
  EXPECT_NE(refusal(std::string("{\"asset\": \"a\xc3\x28\"}")), "accepted");  // invalid UTF-8
  // A valid job followed by a second value is two documents, not one job.
  EXPECT_NE(refusal(to_json(sample_job()) + " {}"), "accepted");
}

TEST(JobJson, RefusesEachMissingField) {
  for (const char* field : {"assessment_id", "asset", "check", "arguments", "inputs", "key", "artifacts", "timeout_seconds"}) {
    json document = sample_document();
    document.erase(field);
    const std::string why = refusal_of(document);
    EXPECT_NE(why.find(field), std::string::npos) << field << ": " << why;
  }
}

TEST(JobJson, RefusesWrongTypes) {
  const std::vector<std::pair<const char*, json>> cases = {
      {"assessment_id", "42"},        {"assessment_id", 4.5},       {"assessment_id", true},
      {"assessment_id", -1},          {"asset", 7},                 {"asset", json::array({"a"})},
      {"check", nullptr},             {"arguments", "scan"},        {"arguments", json::array({"scan", 1})},
      {"arguments", json::object()},  {"inputs", json::array({nullptr})}, {"key", 1},
      {"artifacts", false},           {"timeout_seconds", "900"},   {"timeout_seconds", -5},
      {"timeout_seconds", 0},         {"timeout_seconds", 1.5},     {"timeout_seconds", 100'000'000},
      {"assessment_id", json(18446744073709551615ULL)},
  };
  for (const auto& [field, value] : cases) {
    json document = sample_document();
    document[field] = value;
    const std::string why = refusal_of(document);
    EXPECT_NE(why.find(field), std::string::npos) << field << " = " << value.dump() << ": " << why;
  }
}

TEST(JobJson, RefusesUnknownAndDuplicateFields) {
  json document = sample_document();
  document["shell"] = "rm -rf /";
  EXPECT_NE(refusal_of(document).find("unknown field"), std::string::npos);

  // Two readers of a duplicated field may disagree about which one counts: refuse the entry.
  std::string text = to_json(sample_job());
  text.insert(1, "\"check\":\"poison\",");
  EXPECT_NE(refusal(text).find("more than once"), std::string::npos);
}

TEST(JobJson, RefusesBadKeys) {
  const std::vector<std::string> keys = {
      "",
      std::string(63, 'a'),
      std::string(65, 'a'),
      std::string(64, 'A'),                       // upper case
      std::string(63, 'a') + "g",                 // not hex
      std::string(63, 'a') + "\n",                // control character
      std::string(32, 'a') + std::string(1, '\0') + std::string(31, 'a'),
  };
  for (const auto& key : keys) {
    json document = sample_document();
    document["key"] = key;
    EXPECT_NE(refusal_of(document).find("key"), std::string::npos) << json(key).dump();
  }
}

TEST(JobJson, RefusesControlCharactersInNames) {
  for (const char* field : {"asset", "check"}) {
    for (const std::string& bad : std::vector<std::string>{"ok\x1b[31mred", "two\nlines", std::string("nul\0x", 5), "del\x7f"}) {
      json document = sample_document();
      document[field] = bad;
      EXPECT_NE(refusal_of(document).find("control character"), std::string::npos) << field << " " << json(bad).dump();
    }
    json document = sample_document();
    document[field] = "";
    EXPECT_NE(refusal_of(document).find("empty"), std::string::npos) << field;
  }
}

TEST(JobJson, RefusesNulInArgumentsAndInputs) {
  for (const char* field : {"arguments", "inputs"}) {
    json document = sample_document();
    document[field].push_back(std::string("model.pt\0--evil", 15));
    EXPECT_NE(refusal_of(document).find("NUL"), std::string::npos) << field;
  }
  json document = sample_document();
  document["arguments"] = json::array();
  EXPECT_NE(refusal_of(document).find("arguments"), std::string::npos);
}

TEST(JobJson, RefusesArtifactsFolderThatLeavesTheScratchDirectory) {
  for (const std::string& bad : std::vector<std::string>{"..", ".", "../../etc", "a/b", "a\\b", "/tmp", std::string(256, 'x'), "x\ty"}) {
    json document = sample_document();
    document["artifacts"] = bad;
    EXPECT_NE(refusal_of(document).find("artifacts"), std::string::npos) << bad;
  }
  json document = sample_document();
  document["artifacts"] = "images..v2";
  EXPECT_EQ(refusal_of(document), "accepted");
}

TEST(JobJson, BoundsCountsAtTheirLimits) {
  json document = sample_document();
  document["arguments"] = json::array();
  for (int i = 0; i < 512; ++i) document["arguments"].push_back("a");
  EXPECT_EQ(refusal_of(document), "accepted");
  document["arguments"].push_back("a");
  EXPECT_NE(refusal_of(document).find("arguments"), std::string::npos);

  document = sample_document();
  document["inputs"] = json::array();
  for (int i = 0; i < 4096; ++i) document["inputs"].push_back("i");
  EXPECT_EQ(refusal_of(document), "accepted");
  document["inputs"].push_back("i");
  EXPECT_NE(refusal_of(document).find("inputs"), std::string::npos);
}

TEST(JobJson, RefusesHugeTextBeforeParsing) {
  json document = sample_document();
  document["asset"] = std::string(1 << 20, 'a');
  const std::string why = refusal_of(document);
  EXPECT_NE(why.find("bytes"), std::string::npos) << why;

  // Just under the limit but with an over-long name: refused by the field's own bound.
  document["asset"] = std::string((1 << 20) - 400, 'a');
  ASSERT_LE(document.dump().size(), std::size_t{1} << 20);
  EXPECT_NE(refusal_of(document).find("asset"), std::string::npos);
}

TEST(JobJson, RefusesDeepNestingWithoutRecursing) {
  // Half a million open brackets: a recursive reader would run out of stack.
  std::string deep = "{\"arguments\":" + std::string(500'000, '[') + std::string(500'000, ']') + "}";
  EXPECT_NE(refusal(deep), "accepted");
  json document = sample_document();
  document["inputs"] = json::array({json::array({"nested"})});
  EXPECT_NE(refusal_of(document), "accepted");
  document = sample_document();
  document["arguments"].push_back(json::object({{"a", 1}}));
  EXPECT_NE(refusal_of(document), "accepted");
}

TEST(JobJson, NullWhyIsAllowed) {
  EXPECT_FALSE(job_from_json("{}", nullptr));
  EXPECT_TRUE(job_from_json(to_json(sample_job()), nullptr));
}

}  // namespace
}  // namespace aegis::assess
