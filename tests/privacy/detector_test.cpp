// The PII, PHI and secret detector as a user meets it: true entities found with their exact byte
// offsets, decoys left alone, context words and field names deciding the identifiers that are only
// identifiers in context, the options, rule files (ours and gitleaks'), hostile input and threads.
#include "aegis/privacy/detector.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <set>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "aegis/core/error.h"
#include "test_support.h"

namespace privacy = aegis::privacy;
using privacy::Detection;
using privacy::Detector;
using privacy::DetectorOptions;

namespace {

// One detector with the default options for every test that needs no other (building one compiles
// every rule, about a second).
const Detector& shared() {
  static const Detector detector;
  return detector;
}

std::string value_of(const std::string& text, const Detection& d) { return text.substr(d.begin, d.end - d.begin); }

// Deterministic characters from `alphabet`, for tokens that must look random.
std::string random_chars(std::string_view alphabet, std::size_t n, std::uint32_t seed) {
  std::string out;
  for (std::size_t i = 0; i < n; ++i) {
    seed = seed * 1664525u + 1013904223u;
    out.push_back(alphabet[(seed >> 16) % alphabet.size()]);
  }
  return out;
}
constexpr std::string_view kAlnum = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
constexpr std::string_view kLetters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
constexpr std::string_view kBase32 = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
constexpr std::string_view kBase64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::string_view kHex = "0123456789abcdef";

// The detections of `type` in `text`.
std::vector<Detection> of_type(const std::vector<Detection>& all, const std::string& type) {
  std::vector<Detection> out;
  for (const auto& d : all)
    if (d.entity_type == type) out.push_back(d);
  return out;
}

std::string describe(const std::string& text, const std::vector<Detection>& all) {
  std::string out;
  for (const auto& d : all)
    out += "\n  " + d.entity_type + " " + d.rule_id + " " + std::to_string(d.score) + " '" + value_of(text, d) + "'";
  return out.empty() ? " (none)" : out;
}

// Sorted by begin, inside the text, not overlapping: what scan() promises.
void expect_well_formed(const std::string& text, const std::vector<Detection>& all) {
  for (std::size_t i = 0; i < all.size(); ++i) {
    EXPECT_LT(all[i].begin, all[i].end);
    EXPECT_LE(all[i].end, text.size());
    EXPECT_GT(all[i].score, 0.0);
    EXPECT_LE(all[i].score, 1.0);
    if (i > 0) {
      EXPECT_LE(all[i - 1].end, all[i].begin) << "overlap or out of order";
    }
  }
}

struct Case {
  std::string text;
  std::string type;
  std::string value;  // the exact entity the detector must report
};

// One true entity per text, with the words people write around it.
std::vector<Case> true_entities() {
  return {
      {"Contact jane.doe@example.com for details.", "EMAIL_ADDRESS", "jane.doe@example.com"},
      {"Reach me at (212) 736-5000 after 5pm.", "PHONE_NUMBER", "(212) 736-5000"},
      {"Office: 650-253-0000 x1234, ask for Ann.", "PHONE_NUMBER", "650-253-0000 x1234"},
      {"London office +44 20 7031 3000 today", "PHONE_NUMBER", "+44 20 7031 3000"},
      {"mobile 6502530000", "PHONE_NUMBER", "6502530000"},
      {"Paid with 4111 1111 1111 1111 yesterday.", "CREDIT_CARD", "4111 1111 1111 1111"},
      {"card=5555555555554444;", "CREDIT_CARD", "5555555555554444"},
      {"Amex 3782-822463-10005 on file", "CREDIT_CARD", "3782-822463-10005"},
      {"Wire to DE89 3704 0044 0532 0130 00 by Friday.", "IBAN_CODE", "DE89 3704 0044 0532 0130 00"},
      {"IBAN GB82WEST12345698765432", "IBAN_CODE", "GB82WEST12345698765432"},
      {"Her SSN is 123-45-6789.", "US_SSN", "123-45-6789"},
      {"Alice Smith, 219 09 9999, Springfield", "US_SSN", "219 09 9999"},
      {"ssn: 219099999", "US_SSN", "219099999"},
      {"Social Security number 078051120 on the W-2", "US_SSN", "078051120"},
      {"ITIN 912-70-1234 filed with W-7", "US_ITIN", "912-70-1234"},
      {"NHS number 943 476 5919, GP in Leeds", "UK_NHS", "943 476 5919"},
      {"NHS No: 9434765919", "UK_NHS", "9434765919"},
      {"NI number AB 12 34 56 C on payslip", "UK_NINO", "AB 12 34 56 C"},
      {"nino=AB123456C", "UK_NINO", "AB123456C"},
      {"Passport number: 123456789 (US)", "US_PASSPORT", "123456789"},
      {"US passport no. A12345678, issued 2019", "US_PASSPORT", "A12345678"},
      {"Driver's license D1234567 (CA)", "US_DRIVER_LICENSE", "D1234567"},
      {"DL# W497-465-07-529-1 checked", "US_DRIVER_LICENSE", "W497-465-07-529-1"},
      {"Login from 203.0.113.42 at noon", "IP_ADDRESS", "203.0.113.42"},
      {"client 2001:db8::8a2e:370:7334 blocked", "IP_ADDRESS", "2001:db8::8a2e:370:7334"},
      {"mapped ::ffff:192.0.2.1 seen", "IP_ADDRESS", "::ffff:192.0.2.1"},
      {"Device MAC 00:1A:2B:3C:4D:5E registered", "MAC_ADDRESS", "00:1A:2B:3C:4D:5E"},
      {"switch port 001a.2b3c.4d5e up", "MAC_ADDRESS", "001a.2b3c.4d5e"},
      {"Patient DOB: 03/14/1985, allergies none", "DATE_OF_BIRTH", "03/14/1985"},
      {"Ann (born March 14, 1985) called", "DATE_OF_BIRTH", "March 14, 1985"},
      {"Date of birth 14-Mar-1985.", "DATE_OF_BIRTH", "14-Mar-1985"},
      {"MRN: 00123456, ward 4", "MEDICAL_RECORD_NUMBER", "00123456"},
      {"medical record number 7654321 reviewed", "MEDICAL_RECORD_NUMBER", "7654321"},
      {"Insurance member ID XYZ123456789 (plan Acme)", "HEALTH_PLAN_NUMBER", "XYZ123456789"},
      {"Medicare beneficiary number 1EG4-TE5-MK72 confirmed", "HEALTH_PLAN_NUMBER", "1EG4-TE5-MK72"},
      {"Ship to 50598 Jason Union, Lake Amy", "STREET_ADDRESS", "50598 Jason Union"},
      {"lives at 123 Smith Crossing Apt. 4, Springfield", "STREET_ADDRESS", "123 Smith Crossing Apt. 4"},
      {"2184 Sherry Circle Suite 704", "STREET_ADDRESS", "2184 Sherry Circle Suite 704"},
      {"Flat 3, 12 High Street, Oxford", "STREET_ADDRESS", "12 High Street"},
      {"Visit us at 350 5th Avenue, New York", "STREET_ADDRESS", "350 5th Avenue"},
  };
}

TEST(Detector, FindsEachEntityTypeWithExactOffsets) {
  for (const auto& c : true_entities()) {
    const auto all = shared().scan(c.text);
    expect_well_formed(c.text, all);
    const auto found = of_type(all, c.type);
    ASSERT_EQ(found.size(), 1u) << c.type << " in '" << c.text << "':" << describe(c.text, all);
    EXPECT_EQ(value_of(c.text, found[0]), c.value) << c.text;
    EXPECT_EQ(c.text.find(c.value), found[0].begin) << c.text;
    EXPECT_GE(found[0].score, 0.5);
  }
}

TEST(Detector, StreetAddressesWithUnusualSuffixes) {
  // Python Faker 0.9.3 en_US draws suffixes from USPS Publication 28, unusual ones included.
  for (const std::string address : {"50598 Jason Union", "7751 Lori Pass", "864 Ortiz Crossing", "43 Brenda Ville",
                                    "2 Katie Ways Suite 310", "8836 Hale Mills Apt. 077", "199 Kim Stravenue",
                                    "4023 Debra Throughway", "51 Amy Loaf", "7 Roberts Mews", "12 W Jones St #4B"}) {
    const std::string text = "address: " + address + ".";
    const auto found = of_type(shared().scan(text), "STREET_ADDRESS");
    ASSERT_EQ(found.size(), 1u) << text;
    EXPECT_EQ(value_of(text, found[0]), address);
  }
  EXPECT_TRUE(of_type(shared().scan("we ordered 12 large pizzas"), "STREET_ADDRESS").empty());
}

TEST(Detector, SentenceWithManyEntitiesKeepsEachWhole) {
  const std::string text =
      "Customer Jane Doe (jane.doe@example.com, (212) 736-5000) paid 4111-1111-1111-1111; SSN 123-45-6789, "
      "IBAN DE89370400440532013000, from 203.0.113.42 / 00-1a-2b-3c-4d-5e.";
  const auto all = shared().scan(text);
  expect_well_formed(text, all);
  std::multiset<std::string> values;
  for (const auto& d : all) values.insert(d.entity_type + "=" + value_of(text, d));
  const std::multiset<std::string> expected{"EMAIL_ADDRESS=jane.doe@example.com", "PHONE_NUMBER=(212) 736-5000",
                                            "CREDIT_CARD=4111-1111-1111-1111",  "US_SSN=123-45-6789",
                                            "IBAN_CODE=DE89370400440532013000", "IP_ADDRESS=203.0.113.42",
                                            "MAC_ADDRESS=00-1a-2b-3c-4d-5e"};
  EXPECT_EQ(values, expected) << describe(text, all);
}

TEST(Detector, ScoresFollowTheEvidence) {
  auto score_of = [](const std::string& text, const std::string& type) {
    for (const auto& x : shared().scan(text))
      if (x.entity_type == type) return x.score;
    return 0.0;
  };
  // Checksums and libphonenumber: near certain.
  EXPECT_GE(score_of("4111 1111 1111 1111", "CREDIT_CARD"), 0.95);
  EXPECT_GE(score_of("DE89370400440532013000", "IBAN_CODE"), 0.95);
  EXPECT_GE(score_of("call (212) 736-5000", "PHONE_NUMBER"), 0.95);
  // A shape with the context it needs: 0.8-0.9.
  const double passport = score_of("passport 123456789", "US_PASSPORT");
  EXPECT_GE(passport, 0.8);
  EXPECT_LE(passport, 0.9);
  // Context raises a shape that stands on its own.
  EXPECT_GT(score_of("Social security number 123-45-6789", "US_SSN"), score_of("id 123-45-6789", "US_SSN"));
  // A 3-3-4 number passing mod 11 is too often something else to report without context.
  EXPECT_EQ(score_of("ref 401 023 4563", "UK_NHS"), 0.0);
  EXPECT_GE(score_of("NHS 943 476 5919", "UK_NHS"), 0.95);
}

TEST(Detector, DecoysAreNotReported) {
  const std::vector<std::string> decoys = {
      "Order #123456789012 shipped on 2023-10-12.",
      "Order 48213977 was delivered.",
      "Invoice INV-2023-004512 issued.",
      "request_id=550e8400-e29b-41d4-a716-446655440000",
      "Deployed commit da39a3ee5e6b4b0d3255bfef95601890afd80709 (release 2.14.3)",
      "Fixed in 3f2a9c1, shipped in v1.20.4",
      "Upgraded to version 10.0.19045.2364",
      "Installed version 1.2.3.4 today",
      "Certificate signed with 1.2.840.113549.1.1.11",
      "SNMP OID 1.3.6.1.4.1.9.9.46.1.3.1",
      "Updated at 2023-10-12 14:30:00,123 by admin",
      "ts=2021-03-04T05:06:07.123456+00:00",
      "Job finished 1699999999, 12 rows written",
      "Transaction 4111111111111112 declined",
      "SSN 000-12-3456 is not valid",
      "SSN 666-12-3456 rejected",
      "SSN 912-12-3456 (9xx, not an ITIN group)",
      "IBAN DE88370400440532013000 rejected: check digits",
      "IBAN NL38 EHBB 9489 2845 68 rejected",
      "NI number QQ 12 34 56 C is the sample number",
      "NI number BG123456A",
      "NHS number 401 023 4564 did not pass the checksum",
      "Tel (123) 456-7890 is not real",
      "Call 555-0142 later",
      "Appointment on 03/14/2025 at 10:30",
      "Invoice 123456789 paid",
      "Packet from 256.12.4.1 dropped",
      "API_KEY=changeme",
      "token: ${GITHUB_TOKEN}",
      "api_key: <your-api-key>",
      "AWS_ACCESS_KEY_ID=AKIAIOSFODNN7EXAMPLE",
      "password=password123",
      "GITHUB_TOKEN=ghp_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
      "secret: {{ .Values.secret }}",
      "  image_digest: sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      "author = jonathan.livingston.seagull.2024",
      "std::vector<int> v; a::b::c",
      "The meeting is at 12:30:45 in room 101.",
  };
  for (const auto& text : decoys) {
    const auto all = shared().scan(text);
    EXPECT_TRUE(all.empty()) << "'" << text << "':" << describe(text, all);
  }
}

TEST(Detector, BareDottedQuadIsAnAddressButNotAfterVersion) {
  // Decision: four dotted numbers in 0-255 are an IPv4 address unless a version word comes before
  // them (or they are part of a longer dotted number).
  EXPECT_EQ(of_type(shared().scan("peer 1.2.3.4 connected"), "IP_ADDRESS").size(), 1u);
  EXPECT_TRUE(shared().scan("version 1.2.3.4").empty());
  EXPECT_TRUE(shared().scan("1.2.3.4.5").empty());
}

TEST(Detector, IdentifiersThatNeedContextNeedIt) {
  // The same digits: reported with the word that says what they are, not without.
  EXPECT_EQ(of_type(shared().scan("passport 123456789"), "US_PASSPORT").size(), 1u);
  EXPECT_TRUE(shared().scan("invoice 123456789").empty());
  EXPECT_EQ(of_type(shared().scan("US_PASSPORT=123456789"), "US_PASSPORT").size(), 1u);  // _ is a boundary
  EXPECT_EQ(of_type(shared().scan("DL: D1234567"), "US_DRIVER_LICENSE").size(), 1u);
  EXPECT_TRUE(shared().scan("handle D1234567").empty());  // "dl" inside a word is no context
  EXPECT_EQ(of_type(shared().scan("MRN 7654321"), "MEDICAL_RECORD_NUMBER").size(), 1u);
  EXPECT_TRUE(shared().scan("ticket 7654321").empty());
  EXPECT_EQ(of_type(shared().scan("born 1985-03-14"), "DATE_OF_BIRTH").size(), 1u);
  EXPECT_TRUE(shared().scan("created 1985-03-14").empty());
  EXPECT_TRUE(shared().scan("DOB: 2999-01-01").empty());  // in the future
  EXPECT_TRUE(shared().scan("DOB: 1985-02-30").empty());  // no such day
}

TEST(Detector, FieldNameIsContext) {
  struct FieldCase {
    std::string text, field, type;
  };
  const std::vector<FieldCase> cases = {
      {"219099999", "ssn", "US_SSN"},
      {"123456789", "passport_number", "US_PASSPORT"},
      {"A12345678", "passportNo", "US_PASSPORT"},
      {"D1234567", "drivers_license", "US_DRIVER_LICENSE"},
      {"1985-03-14", "date_of_birth", "DATE_OF_BIRTH"},
      {"03/14/1985", "DOB", "DATE_OF_BIRTH"},
      {"00123456", "patient.mrn", "MEDICAL_RECORD_NUMBER"},
      {"XYZ123456789", "insurance.member_id", "HEALTH_PLAN_NUMBER"},
      {"9434765919", "nhs_number", "UK_NHS"},
      {"6502530000", "phone", "PHONE_NUMBER"},
      {"q8Zr1XvB7mN4pQ9fT2kLw3Ys", "env.SESSION_SECRET", "SECRET"},
  };
  for (const auto& c : cases) {
    const auto all = shared().scan(c.text, c.field);
    ASSERT_EQ(all.size(), 1u) << c.text << " [" << c.field << "]:" << describe(c.text, all);
    EXPECT_EQ(all[0].entity_type, c.type) << c.field;
    EXPECT_EQ(value_of(c.text, all[0]), c.text);
    // Without the field name, or under an unrelated one, the same value is nothing.
    EXPECT_TRUE(shared().scan(c.text).empty()) << c.text;
    EXPECT_TRUE(shared().scan(c.text, "order_id").empty()) << c.text;
  }
  // A field name also raises what is reported anyway.
  const auto plain = shared().scan("50598 Jason Union");
  const auto field = shared().scan("50598 Jason Union", "street_address");
  ASSERT_EQ(plain.size(), 1u);
  ASSERT_EQ(field.size(), 1u);
  EXPECT_GT(field[0].score, plain[0].score);
}

TEST(Detector, MinScoreDropsWeakerDetections) {
  const std::string spaced_ssn = "Alice, 219 09 9999, Springfield";  // a shape without context: 0.6
  ASSERT_EQ(of_type(shared().scan(spaced_ssn), "US_SSN").size(), 1u);
  DetectorOptions strict;
  strict.min_score = 0.7;
  const Detector high(strict);
  EXPECT_TRUE(of_type(high.scan(spaced_ssn), "US_SSN").empty());
  EXPECT_EQ(of_type(high.scan("SSN 219 09 9999"), "US_SSN").size(), 1u);  // context lifts it over 0.7

  DetectorOptions lenient;
  lenient.min_score = 0.3;
  const Detector low(lenient);
  const auto nhs = of_type(low.scan("ref 401 023 4563"), "UK_NHS");
  ASSERT_EQ(nhs.size(), 1u);
  EXPECT_LT(nhs[0].score, 0.5);

  DetectorOptions bad;
  bad.min_score = 1.5;
  EXPECT_THROW(Detector{bad}, aegis::core::Error);
}

TEST(Detector, EntityFilterAndSecretsOption) {
  DetectorOptions only_email;
  only_email.entities = {"EMAIL_ADDRESS"};
  const Detector email(only_email);
  EXPECT_EQ(email.entity_types(), std::vector<std::string>{"EMAIL_ADDRESS"});
  const std::string text = "jane@example.com SSN 123-45-6789 token ghp_" + random_chars(kAlnum, 36, 1);
  const auto all = email.scan(text);
  ASSERT_EQ(all.size(), 1u) << describe(text, all);
  EXPECT_EQ(all[0].entity_type, "EMAIL_ADDRESS");

  DetectorOptions no_secrets;
  no_secrets.secrets = false;
  const Detector pii(no_secrets);
  const auto types = pii.entity_types();
  EXPECT_EQ(std::count(types.begin(), types.end(), "SECRET"), 0);
  EXPECT_TRUE(of_type(pii.scan(text), "SECRET").empty());
  EXPECT_EQ(of_type(pii.scan(text), "US_SSN").size(), 1u);

  DetectorOptions unknown;
  unknown.entities = {"EMAIL"};
  try {
    Detector d(unknown);
    FAIL() << "an unknown entity type was accepted";
  } catch (const aegis::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("EMAIL"), std::string::npos);
    EXPECT_NE(e.hint().find("EMAIL_ADDRESS"), std::string::npos);  // the hint lists the known ones
  }
}

TEST(Detector, KnowsEveryEntityType) {
  const auto types = shared().entity_types();
  for (const char* type : {"EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "US_ITIN", "UK_NHS",
                           "UK_NINO", "US_PASSPORT", "US_DRIVER_LICENSE", "IP_ADDRESS", "MAC_ADDRESS", "DATE_OF_BIRTH",
                           "MEDICAL_RECORD_NUMBER", "HEALTH_PLAN_NUMBER", "STREET_ADDRESS", "SECRET"})
    EXPECT_EQ(std::count(types.begin(), types.end(), type), 1) << type;
  const auto stats = shared().stats();
  EXPECT_EQ(stats.rules, shared().rule_count());
  EXPECT_EQ(stats.som + stats.plain + stats.prefilter + stats.triggered, stats.rules);
  EXPECT_GE(shared().rule_count(), 40u);
}

TEST(Detector, DefaultRegionAndContextWindowOptions) {
  DetectorOptions gb;
  gb.default_region = "GB";
  EXPECT_EQ(of_type(Detector(gb).scan("call 020 7031 3000"), "PHONE_NUMBER").size(), 1u);
  EXPECT_TRUE(of_type(shared().scan("call 020 7031 3000"), "PHONE_NUMBER").empty());
  DetectorOptions nowhere;
  nowhere.default_region = "XX";
  EXPECT_THROW(Detector{nowhere}, aegis::core::Error);

  const std::string far = "passport" + std::string(100, ' ') + "123456789";
  EXPECT_TRUE(shared().scan(far).empty());  // the word is 100 bytes back; the window is 64
  DetectorOptions wide;
  wide.context_window = 128;
  EXPECT_EQ(of_type(Detector(wide).scan(far), "US_PASSPORT").size(), 1u);
}

TEST(Detector, OverlapsResolveToTheStrongerWholeEntity) {
  // A card is also phone-, NHS- and digit-shaped: one detection, the card.
  const std::string card = "4111 1111 1111 1111";
  const auto all = shared().scan(card);
  ASSERT_EQ(all.size(), 1u) << describe(card, all);
  EXPECT_EQ(all[0].entity_type, "CREDIT_CARD");
  // A secret beats the e-mail-looking password@host inside a database URL.
  const std::string url = "DATABASE_URL=postgres://app:S3cr3tPa55w0rd9@db.internal:5432/app";
  const auto in_url = shared().scan(url);
  ASSERT_EQ(in_url.size(), 1u) << describe(url, in_url);
  EXPECT_EQ(in_url[0].entity_type, "SECRET");
  EXPECT_EQ(value_of(url, in_url[0]), "S3cr3tPa55w0rd9");
}

struct SecretCase {
  std::string text;
  std::string rule_id;
  std::string value;
};

std::vector<SecretCase> secrets() {
  const std::string aws_id = "AKIA" + random_chars(kBase32, 16, 2);
  const std::string aws_secret = random_chars(kBase64, 40, 3);
  const std::string gcp = "AIza" + random_chars(kAlnum, 35, 4);
  const std::string ghp = "ghp_" + random_chars(kAlnum, 36, 5);
  const std::string pat = "github_pat_" + random_chars(kAlnum, 22, 6) + "_" + random_chars(kAlnum, 59, 7);
  const std::string glpat = "glpat-" + random_chars(kAlnum, 20, 8);
  const std::string slack = "xoxb-" + random_chars("0123456789", 11, 9) + "-" + random_chars("0123456789", 13, 10) + "-" +
                            random_chars(kAlnum, 24, 11);
  const std::string hook = "https://hooks.slack.com/services/T" + random_chars("ABCDEFGHJK0123456789", 8, 12) + "/B" +
                           random_chars("ABCDEFGHJK0123456789", 10, 13) + "/" + random_chars(kAlnum, 24, 14);
  const std::string stripe = "sk_live_" + random_chars(kAlnum, 24, 15);
  const std::string openai = "sk-proj-" + random_chars(kAlnum, 74, 16);
  const std::string openai_legacy = "sk-" + random_chars(kAlnum, 20, 17) + "T3BlbkFJ" + random_chars(kAlnum, 20, 18);
  const std::string anthropic = "sk-ant-api03-" + random_chars(kAlnum, 93, 19) + "AA";
  const std::string hf = "hf_" + random_chars(kLetters, 34, 20);
  const std::string npm = "npm_" + random_chars(kAlnum, 36, 21);
  const std::string pypi = "pypi-AgEIcHlwaS5vcmc" + random_chars(kAlnum, 70, 22);
  const std::string sendgrid = "SG." + random_chars(kAlnum, 22, 23) + "." + random_chars(kAlnum, 43, 24);
  const std::string twilio = "SK" + random_chars(kHex, 32, 25);
  const std::string twilio_token = random_chars(kHex, 32, 26);
  const std::string azure = random_chars(kBase64, 86, 27) + "==";
  const std::string jwt =
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
      "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
  std::string pem = "-----BEGIN RSA PRIVATE KEY-----\n";
  for (std::uint32_t line = 0; line < 6; ++line) pem += random_chars(kBase64, 64, 30 + line) + "\n";
  pem += "-----END RSA PRIVATE KEY-----";
  std::string escaped_pem = pem;
  for (std::size_t at = escaped_pem.find('\n'); at != std::string::npos; at = escaped_pem.find('\n', at + 2))
    escaped_pem.replace(at, 1, "\\n");
  const std::string generic = random_chars(kAlnum, 24, 40);
  return {
      {"AWS_ACCESS_KEY_ID=" + aws_id, "secret.aws-access-key-id", aws_id},
      {"aws_secret_access_key = " + aws_secret, "secret.aws-secret-access-key", aws_secret},
      {"const key = \"" + gcp + "\";", "secret.gcp-api-key", gcp},
      {"{\"type\": \"service_account\", \"private_key\": \"" + escaped_pem + "\\n\"}", "secret.gcp-service-account-key",
       escaped_pem + "\\n"},
      {"git clone https://" + ghp + "@github.com/x/y", "secret.github-token", ghp},
      {"GH=" + pat, "secret.github-fine-grained-token", pat},
      {"GITLAB_TOKEN=" + glpat, "secret.gitlab-token", glpat},
      {"SLACK_BOT_TOKEN=" + slack, "secret.slack-token", slack},
      {"webhook: " + hook, "secret.slack-webhook-url", hook},
      {"STRIPE=" + stripe, "secret.stripe-live-key", stripe},
      {"OPENAI_API_KEY=" + openai, "secret.openai-api-key", openai},
      {"key " + openai_legacy, "secret.openai-api-key", openai_legacy},
      {"ANTHROPIC_API_KEY=" + anthropic, "secret.anthropic-api-key", anthropic},
      {"HF_TOKEN=" + hf, "secret.huggingface-token", hf},
      {"//registry.npmjs.org/:_authToken=" + npm, "secret.npm-token", npm},
      {"password = " + pypi, "secret.pypi-token", pypi},
      {"SENDGRID_API_KEY=" + sendgrid, "secret.sendgrid-api-key", sendgrid},
      {"sid " + twilio, "secret.twilio-api-key", twilio},
      {"TWILIO_AUTH_TOKEN=" + twilio_token, "secret.twilio-auth-token", twilio_token},
      {"DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=" + azure + ";EndpointSuffix=core.windows.net",
       "secret.azure-storage-account-key", azure},
      {"key file:\n" + pem + "\nend", "secret.private-key", pem},
      {"Authorization: Bearer " + jwt, "secret.jwt", jwt},
      {"url: mysql://svc:Xk9-fT2_q8Zr~1v@db-1.internal:3306/app", "secret.database-url-password", "Xk9-fT2_q8Zr~1v"},
      {"api_key = \"" + generic + "\"", "secret.generic-secret", generic},
      {"{\"client_secret\": \"" + generic + "\"}", "secret.generic-secret", generic},
      {"DB_PASSWORD=" + generic, "secret.generic-secret", generic},
  };
}

TEST(Detector, EverySecretRuleFindsItsSecret) {
  for (const auto& c : secrets()) {
    const auto all = shared().scan(c.text);
    expect_well_formed(c.text, all);
    const auto found = of_type(all, "SECRET");
    ASSERT_EQ(found.size(), 1u) << c.rule_id << " in '" << c.text << "':" << describe(c.text, all);
    EXPECT_EQ(found[0].rule_id, c.rule_id) << c.text;
    EXPECT_EQ(value_of(c.text, found[0]), c.value) << c.rule_id;
  }
}

TEST(Detector, TextScannedWholeFindsWhatItsLinesFind) {
  // Many records in one scan() (a text file), each line ending in a newline: the same detections as
  // line by line, and no context word reaching across a line into the next.
  std::vector<std::string> lines;
  for (const auto& c : true_entities()) lines.push_back(c.text);
  for (const auto& c : secrets())
    if (c.text.find('\n') == std::string::npos) lines.push_back(c.text);
  std::string whole;
  std::set<std::tuple<std::string, std::size_t, std::size_t>> expected, got;
  for (const auto& line : lines) {
    for (const auto& d : shared().scan(line)) expected.insert({d.rule_id, whole.size() + d.begin, whole.size() + d.end});
    whole += line + "\n";
  }
  for (const auto& d : shared().scan(whole)) got.insert({d.rule_id, d.begin, d.end});
  EXPECT_EQ(got, expected);
  EXPECT_GE(got.size(), lines.size());

  EXPECT_TRUE(shared().scan("passport\n123456789").empty());
  EXPECT_TRUE(shared().scan("Patient MRN\n7654321 items shipped").empty());
  EXPECT_TRUE(shared().scan("date of birth:\n1985-03-14").empty());
}

TEST(Detector, LowEntropyAndPlaceholderSecretsAreNot) {
  for (const std::string& text : std::vector<std::string>{"api_key = \"aaaaaaaaaaaaaaaaaaaaaaaa\"", "SECRET_KEY=your_secret_key_here_1234",
                                 "token: xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "password: ${DB_PASSWORD}",
                                 "api_key = \"" + std::string("0123456789abcdef0123") + "\"",
                                 "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                                 "sk_live_" + std::string(24, 'x'), "commit: da39a3ee5e6b4b0d3255bfef95601890afd80709"}) {
    const auto all = shared().scan(text);
    EXPECT_TRUE(of_type(all, "SECRET").empty()) << text << describe(text, all);
  }
}

TEST(Detector, HostileInputIsBoundedAndLinear) {
  // A 10 MB line of digits: no word boundary inside, nothing to report, and quick.
  const std::string digits(10u << 20, '7');
  auto start = std::chrono::steady_clock::now();
  auto all = shared().scan(digits);
  EXPECT_TRUE(all.empty());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));

  // 10 MB of random bytes (NULs, invalid UTF-8, everything).
  std::uint32_t state = 12345;
  const auto bytes = aegis::test::pseudo_random_bytes(10u << 20, state);
  const std::string blob(bytes.begin(), bytes.end());
  start = std::chrono::steady_clock::now();
  all = shared().scan(blob);
  expect_well_formed(blob, all);
  EXPECT_LE(all.size(), 100000u);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));

  // More candidates than the cap: the result is capped, not the memory blown.
  std::string dense;
  for (int i = 0; i < 150000; ++i) dense += "123-45-6789 ";
  all = shared().scan(dense);
  expect_well_formed(dense, all);
  EXPECT_FALSE(all.empty());
  EXPECT_LE(all.size(), 100000u);
  EXPECT_GT(shared().count_candidates(dense), 100000u);  // the regex stage itself counts them all
}

TEST(Detector, InvalidUtf8AndNulsAroundEntities) {
  std::string text = std::string("\xff\xfe\0\x80", 4) + " mail ";
  const std::size_t at = text.size();
  text += "jane.doe@example.com";
  text += std::string("\0\xc3\x28\xed\xa0\x80", 6) + " SSN 123-45-6789 \xf0";
  const auto all = shared().scan(text);
  expect_well_formed(text, all);
  const auto email = of_type(all, "EMAIL_ADDRESS");
  ASSERT_EQ(email.size(), 1u) << describe(text, all);
  EXPECT_EQ(email[0].begin, at);
  EXPECT_EQ(value_of(text, email[0]), "jane.doe@example.com");
  const auto ssn = of_type(all, "US_SSN");
  ASSERT_EQ(ssn.size(), 1u);
  EXPECT_EQ(value_of(text, ssn[0]), "123-45-6789");
  EXPECT_TRUE(shared().scan(std::string()).empty());
  EXPECT_TRUE(shared().scan(std::string(1, '\0')).empty());
}

TEST(Detector, CountCandidatesIsTheRegexStage) {
  EXPECT_EQ(shared().count_candidates(""), 0u);
  EXPECT_EQ(shared().count_candidates("nothing to see here"), 0u);
  EXPECT_GE(shared().count_candidates("jane@example.com 123-45-6789 passport"), 3u);
}

void write_file(const std::filesystem::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
}

TEST(Detector, UserRuleFileAddsRules) {
  aegis::test::TempDir dir("aegis_rules");
  const auto path = dir.path / "acme.toml";
  write_file(path, R"toml(
title = "acme rules"

[[rules]]
id = "employee-id"
entity = "EMPLOYEE_ID"
description = "ACME employee number"
regex = '''\bEMP-\d{6}\b'''
context = ["employee"]
score = 0.7
context_score = 0.95

[[rules]]
id = "acme-token"
description = "ACME API token (gitleaks shape)"
regex = '''\b(acme_[a-z0-9]{24})\b'''
secretGroup = 1
entropy = 3.0
keywords = ["acme_"]
tags = ["api", "acme"]
[[rules.allowlists]]
stopwords = ["test"]

[[rules]]
id = "acme-order"
description = "needs its keyword somewhere near"
regex = '''\b[A-Z]{3}-\d{8}\b'''
keywords = ["acme order"]

[[rules]]
id = "acme-keyfile"
description = "a path-only rule, as gitleaks has"
path = '''\.acmekey$'''
)toml");
  DetectorOptions options;
  options.rule_files = {path.string()};
  const Detector d(options);
  EXPECT_EQ(d.rule_count(), shared().rule_count() + 3);
  EXPECT_EQ(d.stats().skipped, 1u);
  const auto types = d.entity_types();
  EXPECT_EQ(std::count(types.begin(), types.end(), "EMPLOYEE_ID"), 1);

  const std::string token = "acme_" + random_chars("abcdefghijklmnopqrstuvwxyz0123456789", 24, 50);
  const std::string text = "employee EMP-123456 uses " + token + " for ACME order XYZ-12345678";
  const auto all = d.scan(text);
  expect_well_formed(text, all);
  ASSERT_EQ(all.size(), 3u) << describe(text, all);
  EXPECT_EQ(all[0].rule_id, "pii.employee-id");
  EXPECT_EQ(all[0].entity_type, "EMPLOYEE_ID");
  EXPECT_EQ(value_of(text, all[0]), "EMP-123456");
  EXPECT_DOUBLE_EQ(all[0].score, 0.95);
  EXPECT_EQ(all[1].rule_id, "secret.acme-token");
  EXPECT_EQ(all[1].entity_type, "SECRET");
  EXPECT_EQ(value_of(text, all[1]), token);
  EXPECT_EQ(all[2].rule_id, "secret.acme-order");

  EXPECT_TRUE(d.scan("XYZ-12345678").empty());  // its keyword is missing
  EXPECT_TRUE(d.scan("acme_test0123456789abcdefghij").empty());  // the allowlist's stopword
}

TEST(Detector, UserRuleReplacesAShippedRuleById) {
  aegis::test::TempDir dir("aegis_rules");
  const auto path = dir.path / "override.toml";
  write_file(path, R"toml([[rules]]
id = "pii.us-passport"
entity = "US_PASSPORT"
regex = '''\bP\d{7}\b'''
context_required = true
context = ["pass"]
score = 0.85
)toml");
  DetectorOptions options;
  options.rule_files = {path.string()};
  const Detector d(options);
  EXPECT_EQ(d.rule_count(), shared().rule_count());
  EXPECT_EQ(d.stats().replaced, 1u);
  EXPECT_EQ(of_type(d.scan("pass P1234567"), "US_PASSPORT").size(), 1u);
  EXPECT_TRUE(of_type(d.scan("passport 123456789"), "US_PASSPORT").empty());
}

// Loading `toml` as a rule file throws core::Error whose message holds every piece of `expected`.
void expect_refused(const std::string& toml, const std::vector<std::string>& expected) {
  aegis::test::TempDir dir("aegis_rules");
  const auto path = dir.path / "broken.toml";
  write_file(path, toml);
  DetectorOptions options;
  options.rule_files = {path.string()};
  try {
    Detector d(options);
    ADD_FAILURE() << "accepted:\n" << toml;
  } catch (const aegis::core::Error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(path.string()), std::string::npos) << what;
    for (const auto& piece : expected) EXPECT_NE(what.find(piece), std::string::npos) << "'" << piece << "' not in: " << what;
  }
}

TEST(Detector, BrokenRuleFilesAreRefusedWithFileRuleAndReason) {
  expect_refused("[[rules]]\nid = \"broken-rule\"\nregex = '''\\b(unclosed'''\n",
                 {"rule 'broken-rule'", "does not compile"});
  expect_refused("[[rules]]\nid = \"bad-validator\"\nregex = '''\\d+'''\nvalidator = \"luhnish\"\n",
                 {"rule 'bad-validator'", "unknown validator 'luhnish'"});
  expect_refused("[[rules]]\nregex = '''\\d+'''\n", {"rule #1 has no id"});
  expect_refused("[[rules]]\nid = \"dup\"\nregex = 'a1'\n[[rules]]\nid = \"dup\"\nregex = 'b2'\n",
                 {"rule 'dup'", "duplicate id"});
  expect_refused("[[rules]]\nid = \"group\"\nregex = '''(a)(b)'''\nsecretGroup = 3\n",
                 {"rule 'group'", "secretGroup 3", "2 capture groups"});
  expect_refused("[[rules]]\nid = \"no-regex\"\ndescription = \"neither regex nor path\"\n", {"rule 'no-regex'", "no regex"});
  expect_refused("[[rules]]\nid = \"score\"\nregex = 'x1'\nscore = 2\n", {"rule 'score'", "score"});
  expect_refused("[[rules]]\nid = \"kw\"\nregex = 'x1'\nkeywords = \"one\"\n", {"rule 'kw'", "keywords must be an array"});
  expect_refused("[[rules]]\nid = \"allow\"\nregex = 'x1'\n[[rules.allowlists]]\nregexes = ['''(''']\n",
                 {"rule 'allow'", "allowlist regex"});
  expect_refused("[[rules]\nid = 1\n", {"TOML syntax error at line 1"});
  expect_refused("[[rules]]\nid = \"empty\"\nregex = '''a?'''\n", {"rule 'empty'", "Hyperscan"});  // matches empty

  DetectorOptions missing;
  missing.rule_files = {"/nonexistent/rules.toml"};
  try {
    Detector d(missing);
    ADD_FAILURE() << "a missing rule file was accepted";
  } catch (const aegis::core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/rules.toml"), std::string::npos);
  }
}

TEST(Detector, ScansFromSeveralThreadsAtOnce) {
  std::vector<std::string> texts;
  for (const auto& c : true_entities()) texts.push_back(c.text);
  for (const auto& c : secrets()) texts.push_back(c.text);
  std::vector<std::vector<Detection>> expected;
  for (const auto& t : texts) expected.push_back(shared().scan(t));
  // A second detector (another database) used on the same threads: each thread's scratch grows.
  DetectorOptions only_ssn;
  only_ssn.entities = {"US_SSN"};
  const Detector other(only_ssn);

  std::vector<int> mismatches(2, 0);
  auto work = [&](int id) {
    for (int round = 0; round < 20; ++round) {
      for (std::size_t i = 0; i < texts.size(); ++i) {
        const auto got = shared().scan(texts[i]);
        bool same = got.size() == expected[i].size();
        for (std::size_t k = 0; same && k < got.size(); ++k)
          same = got[k].begin == expected[i][k].begin && got[k].end == expected[i][k].end &&
                 got[k].rule_id == expected[i][k].rule_id && got[k].score == expected[i][k].score;
        mismatches[static_cast<std::size_t>(id)] += same ? 0 : 1;
        for (const auto& d : other.scan(texts[i])) mismatches[static_cast<std::size_t>(id)] += d.entity_type == "US_SSN" ? 0 : 1;
      }
    }
  };
  std::thread a(work, 0), b(work, 1);
  a.join();
  b.join();
  EXPECT_EQ(mismatches[0], 0);
  EXPECT_EQ(mismatches[1], 0);
}

}  // namespace
