// Redaction and masked samples: whole entities replaced per policy (Mask, Hash, Drop), nothing of an
// identifier left behind, and report samples that never show a whole value.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "aegis/privacy/detector.h"

namespace privacy = aegis::privacy;
using privacy::Detection;
using privacy::RedactAction;
using privacy::RedactionPolicy;

namespace {

const privacy::Detector& shared() {
  static const privacy::Detector detector;
  return detector;
}

// Texts holding one or more entities of every kind the detector reports.
const std::vector<std::string>& samples() {
  static const std::vector<std::string> texts = {
      "Contact jane.doe@example.com or (212) 736-5000 x1234 today.",
      "Card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00.",
      "SSN 123-45-6789 / ITIN 912-70-1234 / NHS number 943 476 5919 / NI AB 12 34 56 C.",
      "Passport number 123456789, driver's license D1234567.",
      "From 203.0.113.42 and 2001:db8::8a2e:370:7334, MAC 00:1A:2B:3C:4D:5E.",
      "Patient DOB: 03/14/1985, MRN: 00123456, member ID XYZ123456789.",
      "Ship to 123 Smith Crossing Apt. 4, Springfield.",
      "GITHUB_TOKEN=ghp_R4nd0mLooking4ndL0ng3n0ughT0k3n12345 and api_key = \"q8Zr1XvB7mN4pQ9fT2kLw3Ys\"",
      "DATABASE_URL=postgres://app:S3cr3tPa55w0rd9@db.internal:5432/app",
  };
  return texts;
}

// The runs of four or more digits in `s`.
std::vector<std::string> digit_runs(const std::string& s) {
  std::vector<std::string> out;
  for (std::size_t i = 0; i < s.size();) {
    std::size_t j = i;
    while (j < s.size() && s[j] >= '0' && s[j] <= '9') ++j;
    if (j - i >= 4) out.push_back(s.substr(i, j - i));
    i = j > i ? j : i + 1;
  }
  return out;
}

TEST(Redact, MaskReplacesWholeEntities) {
  const std::string text = "SSN 123-45-6789, mail jane.doe@example.com.";
  const auto detections = shared().scan(text);
  ASSERT_EQ(detections.size(), 2u);
  EXPECT_EQ(privacy::redact(text, detections, RedactionPolicy{}), "SSN <US_SSN>, mail <EMAIL_ADDRESS>.");
}

TEST(Redact, HashIsKeyedStableAndTwelveHexDigits) {
  const std::string text = "SSN 123-45-6789.";
  const auto detections = shared().scan(text);
  ASSERT_EQ(detections.size(), 1u);
  RedactionPolicy plain;
  plain.default_action = RedactAction::Hash;
  // SHA-256("123-45-6789") = 01a54629efb9...; HMAC-SHA-256 with key "deployment-key" = 28fa40c8f300...
  EXPECT_EQ(privacy::redact(text, detections, plain), "SSN <US_SSN:01a54629efb9>.");
  RedactionPolicy keyed = plain;
  keyed.hash_key = "deployment-key";
  EXPECT_EQ(privacy::redact(text, detections, keyed), "SSN <US_SSN:28fa40c8f300>.");
  // The same value hashes the same wherever it is; another value differently.
  const std::string two = "a 123-45-6789 b 123-45-6788 c 123-45-6789";
  const std::string out = privacy::redact(two, shared().scan(two), keyed);
  const std::string head = "a <US_SSN:28fa40c8f300> b <US_SSN:", tail = "> c <US_SSN:28fa40c8f300>";
  ASSERT_EQ(out.size(), head.size() + 12 + tail.size()) << out;
  EXPECT_EQ(out.substr(0, head.size()), head);
  EXPECT_EQ(out.substr(head.size() + 12), tail);
  const std::string middle = out.substr(head.size(), 12);
  EXPECT_EQ(middle.find_first_not_of("0123456789abcdef"), std::string::npos) << middle;
  EXPECT_NE(middle, "28fa40c8f300");
}

TEST(Redact, DropRemovesAndPerEntityOverrides) {
  const std::string text = "jane.doe@example.com 123-45-6789 4111111111111111";
  const auto detections = shared().scan(text);
  ASSERT_EQ(detections.size(), 3u);
  RedactionPolicy policy;
  policy.default_action = RedactAction::Drop;
  EXPECT_EQ(privacy::redact(text, detections, policy), "  ");
  policy.per_entity = {{"EMAIL_ADDRESS", RedactAction::Mask}, {"US_SSN", RedactAction::Hash}};
  EXPECT_EQ(privacy::redact(text, detections, policy), "<EMAIL_ADDRESS> <US_SSN:01a54629efb9> ");
  EXPECT_EQ(policy.action_for("EMAIL_ADDRESS"), RedactAction::Mask);
  EXPECT_EQ(policy.action_for("US_SSN"), RedactAction::Hash);
  EXPECT_EQ(policy.action_for("CREDIT_CARD"), RedactAction::Drop);
  EXPECT_EQ(RedactionPolicy{}.action_for("SECRET"), RedactAction::Mask);
}

TEST(Redact, RedactedTextHasNothingLeftToFind) {
  for (const auto& text : samples()) {
    const auto detections = shared().scan(text);
    ASSERT_FALSE(detections.empty()) << text;
    for (const auto action : {RedactAction::Mask, RedactAction::Hash, RedactAction::Drop}) {
      RedactionPolicy policy;
      policy.default_action = action;
      policy.hash_key = "k";
      const std::string out = privacy::redact(text, detections, policy);
      // Re-scanned, no entity of a redacted type is there any more.
      for (const auto& again : shared().scan(out))
        for (const auto& d : detections)
          EXPECT_NE(again.entity_type, d.entity_type)
              << "'" << out << "' still holds " << again.entity_type << " '"
              << out.substr(again.begin, again.end - again.begin) << "'";
      // And no run of four digits of any redacted identifier survives.
      for (const auto& d : detections)
        for (const auto& run : digit_runs(text.substr(d.begin, d.end - d.begin)))
          EXPECT_EQ(out.find(run), std::string::npos) << "'" << run << "' of " << d.entity_type << " left in '" << out << "'";
    }
  }
}

TEST(Redact, NeverLeavesPartOfAnIdentifier) {
  const std::string text = "id 4111111111111111 end";
  // A detection that covers only part of the number (as a careless caller might pass): the whole
  // number goes.
  const std::vector<Detection> partial = {{"CREDIT_CARD", "pii.credit-card", 6, 12, 1.0}};
  EXPECT_EQ(privacy::redact(text, partial, RedactionPolicy{}), "id <CREDIT_CARD> end");
  // Overlapping, unsorted and out-of-range spans are merged and clamped.
  const std::vector<Detection> messy = {{"US_SSN", "x", 8, 14, 1.0}, {"CREDIT_CARD", "y", 3, 10, 1.0}, {"X", "z", 40, 50, 1.0}};
  EXPECT_EQ(privacy::redact(text, messy, RedactionPolicy{}), "id <CREDIT_CARD> end");
  EXPECT_EQ(privacy::redact(text, {}, RedactionPolicy{}), text);
  EXPECT_EQ(privacy::redact("", partial, RedactionPolicy{}), "");
}

TEST(MaskedSample, KeepsAtMostTheLastFour) {
  EXPECT_EQ(privacy::masked_sample("123-45-6789", "US_SSN"), "***-**-6789");
  EXPECT_EQ(privacy::masked_sample("4111 1111 1111 1111", "CREDIT_CARD"), "**** **** **** 1111");
  EXPECT_EQ(privacy::masked_sample("12345678", "MEDICAL_RECORD_NUMBER"), "********");  // 8 or fewer: all masked
  EXPECT_EQ(privacy::masked_sample("jane.doe@example.com", "EMAIL_ADDRESS"), "****.***@******e.com");
  EXPECT_EQ(privacy::masked_sample("", "US_SSN"), "");
}

TEST(MaskedSample, SecretsKeepTheirFirstFour) {
  const std::string token = "ghp_R4nd0mLooking4ndL0ng3n0ughT0k3n12345";
  const std::string sample = privacy::masked_sample(token, "SECRET");
  EXPECT_EQ(sample.substr(0, 4), "ghp_");
  EXPECT_EQ(sample.find_first_not_of('*', 4), std::string::npos);
  EXPECT_EQ(sample.find("R4nd"), std::string::npos);
  EXPECT_EQ(privacy::masked_sample("short", "SECRET"), "*****");
}

TEST(MaskedSample, NeverTheWholeValue) {
  for (const auto& text : samples())
    for (const auto& d : shared().scan(text)) {
      const std::string value = text.substr(d.begin, d.end - d.begin);
      const std::string sample = privacy::masked_sample(value, d.entity_type);
      EXPECT_NE(sample, value) << d.entity_type;
      EXPECT_NE(sample.find('*'), std::string::npos) << d.entity_type << " " << sample;
    }
}

}  // namespace
