// The checks behind the PII and secret detector, one by one, on the edge cases that decide between
// a detection and a decoy: checksums, issuing ranges, forbidden prefixes, calendar dates.
#include "aegis/privacy/validators.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>

namespace v = aegis::privacy::validators;
using namespace std::chrono_literals;

namespace {

TEST(Validators, LuhnAcceptsValidAndRejectsAltered) {
  EXPECT_TRUE(v::luhn("79927398713"));
  EXPECT_TRUE(v::luhn("4111111111111111"));
  EXPECT_FALSE(v::luhn("4111111111111112"));
  EXPECT_FALSE(v::luhn("79927398710"));
  EXPECT_FALSE(v::luhn(""));
  EXPECT_FALSE(v::luhn("4111-1111"));  // digits only
}

TEST(Validators, CreditCardBrandsLengthsAndGrouping) {
  // One valid number per scheme (Luhn holds, issuer prefix and length match).
  EXPECT_TRUE(v::credit_card("4111111111111111"));        // Visa 16
  EXPECT_TRUE(v::credit_card("4222222222222"));           // Visa 13
  EXPECT_TRUE(v::credit_card("5555555555554444"));        // Mastercard 51-55
  EXPECT_TRUE(v::credit_card("2223003122003222"));        // Mastercard 2221-2720
  EXPECT_TRUE(v::credit_card("378282246310005"));         // Amex 37
  EXPECT_TRUE(v::credit_card("3782 822463 10005"));       // Amex grouped 4-6-5
  EXPECT_TRUE(v::credit_card("6011111111111117"));        // Discover 6011
  EXPECT_TRUE(v::credit_card("3530111333300000"));        // JCB 3528-3589
  EXPECT_TRUE(v::credit_card("30569309025904"));          // Diners 300-305, 14 digits
  EXPECT_TRUE(v::credit_card("4111 1111 1111 1111"));
  EXPECT_TRUE(v::credit_card("4111-1111-1111-1111"));

  EXPECT_FALSE(v::credit_card("4111111111111112"));       // Luhn fails
  EXPECT_FALSE(v::credit_card("4111 1111-1111 1111"));    // mixed separators
  EXPECT_FALSE(v::credit_card("4111  1111 1111 1111"));   // doubled separator
  EXPECT_FALSE(v::credit_card("411111111111"));           // 12 digits
  EXPECT_FALSE(v::credit_card("41111111111111111111"));   // 20 digits
  EXPECT_FALSE(v::credit_card("9111111111111110"));       // Luhn holds, no scheme starts with 9
  EXPECT_FALSE(v::credit_card("411111111111116"));        // Luhn holds, but Visa has no 15-digit cards
  EXPECT_FALSE(v::credit_card("5555555555554444 "));      // only digits and separators

  EXPECT_EQ(v::card_brand("2221000000000009"), "mastercard");
  EXPECT_EQ(v::card_brand("2720990000000000"), "mastercard");
  EXPECT_EQ(v::card_brand("2721000000000000"), "");
  EXPECT_EQ(v::card_brand("3528000000000000"), "jcb");
  EXPECT_EQ(v::card_brand("3589000000000000"), "jcb");
  EXPECT_EQ(v::card_brand("3590000000000000"), "");
  EXPECT_EQ(v::card_brand("6440000000000000"), "discover");
  EXPECT_EQ(v::card_brand("6490000000000000"), "discover");
  EXPECT_EQ(v::card_brand("6500000000000000"), "discover");
  EXPECT_EQ(v::card_brand("6430000000000000"), "");
  EXPECT_EQ(v::card_brand("3050000000000000"), "diners");
  EXPECT_EQ(v::card_brand("3060000000000000"), "");
  EXPECT_EQ(v::card_brand("3400000000000000"), "amex");
  EXPECT_EQ(v::card_brand("3500000000000000"), "");
}

TEST(Validators, IbanCountriesChecksumAndLength) {
  EXPECT_TRUE(v::iban("DE89370400440532013000"));
  EXPECT_TRUE(v::iban("DE89 3704 0044 0532 0130 00"));
  EXPECT_TRUE(v::iban("GB82WEST12345698765432"));
  EXPECT_TRUE(v::iban("FR1420041010050500013M02606"));
  EXPECT_TRUE(v::iban("NL91ABNA0417164300"));
  EXPECT_TRUE(v::iban("ES9121000418450200051332"));
  EXPECT_TRUE(v::iban("CH9300762011623852957"));
  EXPECT_TRUE(v::iban("BE68539007547034"));
  EXPECT_TRUE(v::iban("NO9386011117947"));  // the shortest, 15
  EXPECT_TRUE(v::iban("gb82west12345698765432"));

  EXPECT_FALSE(v::iban("DE88370400440532013000"));        // wrong check digits
  EXPECT_FALSE(v::iban("GB82WEST12345698765433"));        // altered account number
  EXPECT_FALSE(v::iban("DE8937040044053201300"));         // 21 characters: Germany uses 22
  EXPECT_FALSE(v::iban("DE89  3704 0044 0532 0130 00"));  // doubled space
  EXPECT_FALSE(v::iban("DE893 7040 0440 5320 1300 0"));   // spaces not between groups of four
  EXPECT_FALSE(v::iban("DE89-3704-0044-0532-0130-00"));
  EXPECT_FALSE(v::iban("1289370400440532013000"));        // no country letters
  // The checksum alone, for countries whose length the table does not decide.
  EXPECT_TRUE(v::iban_checksum("DE89370400440532013000"));
  EXPECT_FALSE(v::iban_checksum("DE88370400440532013000"));
  EXPECT_EQ(v::iban_mod97("GB82WEST12345698765432"), 1);
}

TEST(Validators, SsnForbiddenAreasGroupsAndSerials) {
  EXPECT_TRUE(v::us_ssn("123-45-6789"));
  EXPECT_TRUE(v::us_ssn("123 45 6789"));
  EXPECT_TRUE(v::us_ssn("123456789"));
  EXPECT_TRUE(v::us_ssn("899-99-9999"));
  EXPECT_TRUE(v::us_ssn("001-01-0001"));

  EXPECT_FALSE(v::us_ssn("000-45-6789"));  // area 000
  EXPECT_FALSE(v::us_ssn("666-45-6789"));  // area 666
  EXPECT_FALSE(v::us_ssn("900-45-6789"));  // areas 900-999
  EXPECT_FALSE(v::us_ssn("999-45-6789"));
  EXPECT_FALSE(v::us_ssn("123-00-6789"));  // group 00
  EXPECT_FALSE(v::us_ssn("123-45-0000"));  // serial 0000
  EXPECT_FALSE(v::us_ssn("123-45 6789"));  // mixed separators
  EXPECT_FALSE(v::us_ssn("12-345-6789"));  // wrong grouping
  EXPECT_FALSE(v::us_ssn("1234567890"));
}

TEST(Validators, ItinGroups) {
  for (const char* ok : {"912-50-1234", "912-65-1234", "912-70-1234", "912-88-1234", "912-90-1234", "912-92-1234",
                         "912-94-1234", "999-99-1234", "900 70 0001", "900700001"})
    EXPECT_TRUE(v::us_itin(ok)) << ok;
  for (const char* bad : {"912-49-1234", "912-66-1234", "912-69-1234", "912-89-1234", "912-93-1234", "812-70-1234",
                          "912-70 1234"})
    EXPECT_FALSE(v::us_itin(bad)) << bad;
}

TEST(Validators, NhsCheckDigitIncludingRemainderTen) {
  EXPECT_TRUE(v::uk_nhs("943 476 5919"));
  EXPECT_TRUE(v::uk_nhs("9434765919"));
  EXPECT_TRUE(v::uk_nhs("943-476-5919"));
  EXPECT_TRUE(v::uk_nhs("4000000020"));  // 11 - remainder 0 = 11: the check digit is 0
  EXPECT_FALSE(v::uk_nhs("9434765918"));  // wrong check digit
  // 400000008 leaves a check value of 10, which is never issued: no last digit makes it valid.
  for (char last = '0'; last <= '9'; ++last) EXPECT_FALSE(v::uk_nhs(std::string("400000008") + last)) << last;
  EXPECT_FALSE(v::uk_nhs("943 4765 919"));  // not 3-3-4
  EXPECT_FALSE(v::uk_nhs("943 476-5919"));  // mixed separators
  EXPECT_FALSE(v::uk_nhs("943476591"));
}

TEST(Validators, NinoPrefixesAndSuffix) {
  EXPECT_TRUE(v::uk_nino("AB123456C"));
  EXPECT_TRUE(v::uk_nino("AB 12 34 56 C"));
  EXPECT_TRUE(v::uk_nino("ZY123456D"));
  for (const char* prefix : {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"})
    EXPECT_FALSE(v::uk_nino(std::string(prefix) + "123456A")) << prefix;
  for (char letter : std::string("DFIQUV")) {
    EXPECT_FALSE(v::uk_nino(std::string(1, letter) + "A123456A")) << letter << " first";
    EXPECT_FALSE(v::uk_nino(std::string("A") + letter + "123456A")) << letter << " second";
  }
  EXPECT_FALSE(v::uk_nino("AO123456A"));   // O never second
  EXPECT_TRUE(v::uk_nino("OA123456A"));    // but may come first
  EXPECT_FALSE(v::uk_nino("AB123456E"));   // suffix A-D only
  EXPECT_FALSE(v::uk_nino("AB12345C"));    // five digits
  EXPECT_FALSE(v::uk_nino("AB 123 456 C")); // spaces only between pairs
}

TEST(Validators, Ipv4OctetsAndLeadingZeros) {
  EXPECT_TRUE(v::ipv4("192.168.1.1"));
  EXPECT_TRUE(v::ipv4("0.0.0.0"));
  EXPECT_TRUE(v::ipv4("255.255.255.255"));
  EXPECT_FALSE(v::ipv4("256.1.1.1"));
  EXPECT_FALSE(v::ipv4("1.2.3.999"));
  EXPECT_FALSE(v::ipv4("01.2.3.4"));     // octal or decimal? ambiguous
  EXPECT_FALSE(v::ipv4("1.2.3.04"));
  EXPECT_FALSE(v::ipv4("1.2.3"));
  EXPECT_FALSE(v::ipv4("1.2.3.4.5"));
  EXPECT_FALSE(v::ipv4("1..2.3"));
  EXPECT_FALSE(v::ipv4("1.2.3.4."));
}

TEST(Validators, Ipv6AsInetPtonReadsIt) {
  EXPECT_TRUE(v::ipv6("2001:db8::1"));
  EXPECT_TRUE(v::ipv6("2001:0db8:85a3:0000:0000:8a2e:0370:7334"));
  EXPECT_TRUE(v::ipv6("::ffff:192.0.2.1"));
  EXPECT_TRUE(v::ipv6("fe80::1ff:fe23:4567:890a"));
  EXPECT_FALSE(v::ipv6("12:30:45"));
  EXPECT_FALSE(v::ipv6("2001:db8:::1"));
  EXPECT_FALSE(v::ipv6("gggg::1"));
  EXPECT_FALSE(v::ipv6("1:2:3:4:5:6:7:8:9"));
}

TEST(Validators, MacAddressForms) {
  EXPECT_TRUE(v::mac_address("00:1A:2B:3C:4D:5E"));
  EXPECT_TRUE(v::mac_address("00-1a-2b-3c-4d-5e"));
  EXPECT_TRUE(v::mac_address("001a.2b3c.4d5e"));
  EXPECT_FALSE(v::mac_address("00:1A-2B:3C:4D:5E"));  // mixed separators
  EXPECT_FALSE(v::mac_address("00:1A:2B:3C:4D"));     // five pairs
  EXPECT_FALSE(v::mac_address("00:1G:2B:3C:4D:5E"));  // not hex
  EXPECT_FALSE(v::mac_address("001a2b3c4d5e"));
  EXPECT_FALSE(v::mac_address("001a:2b3c:4d5e"));
}

TEST(Validators, DatesOfBirthAreRealDatesUpToToday) {
  const std::chrono::year_month_day today{2024y / 6 / 15};
  EXPECT_TRUE(v::date_of_birth("1985-03-14", today));
  EXPECT_TRUE(v::date_of_birth("1985/03/14", today));
  EXPECT_TRUE(v::date_of_birth("03/14/1985", today));       // US month first
  EXPECT_TRUE(v::date_of_birth("3/4/1985", today));
  EXPECT_TRUE(v::date_of_birth("31/12/1985", today));       // day first when month first cannot be
  EXPECT_TRUE(v::date_of_birth("31.12.1985", today));
  EXPECT_TRUE(v::date_of_birth("14 March 1985", today));
  EXPECT_TRUE(v::date_of_birth("14th Mar 1985", today));
  EXPECT_TRUE(v::date_of_birth("14-Mar-1985", today));
  EXPECT_TRUE(v::date_of_birth("March 14, 1985", today));
  EXPECT_TRUE(v::date_of_birth("Sept 1st 1985", today));
  EXPECT_TRUE(v::date_of_birth("2024-02-29", today));       // a leap day
  EXPECT_TRUE(v::date_of_birth("1900-01-01", today));
  EXPECT_TRUE(v::date_of_birth("2024-06-15", today));       // born today

  EXPECT_FALSE(v::date_of_birth("2023-02-29", today));      // 2023 is no leap year
  EXPECT_FALSE(v::date_of_birth("1900-02-29", today));      // nor is 1900
  EXPECT_FALSE(v::date_of_birth("February 30, 1990", today));
  EXPECT_FALSE(v::date_of_birth("13/13/1985", today));
  EXPECT_FALSE(v::date_of_birth("1985-04-31", today));
  EXPECT_FALSE(v::date_of_birth("1899-12-31", today));      // before 1900
  EXPECT_FALSE(v::date_of_birth("2024-06-16", today));      // tomorrow
  EXPECT_FALSE(v::date_of_birth("14 Smarch 1985", today));
  EXPECT_FALSE(v::date_of_birth("14/03/85", today));        // two-digit years are not read

  v::Date d;
  ASSERT_TRUE(v::parse_date("July 4, 1976", d));
  EXPECT_EQ(d.year, 1976);
  EXPECT_EQ(d.month, 7);
  EXPECT_EQ(d.day, 4);
  EXPECT_TRUE(v::valid_calendar_date(2000, 2, 29));
  EXPECT_FALSE(v::valid_calendar_date(2100, 2, 29));
}

TEST(Validators, PhoneNumbersThroughLibphonenumber) {
  EXPECT_TRUE(v::phone_number("(212) 736-5000", "US"));
  EXPECT_TRUE(v::phone_number("650-253-0000", "US"));
  EXPECT_TRUE(v::phone_number("+1 650 253 0000", "US"));
  EXPECT_TRUE(v::phone_number("650-253-0000 x1234", "US"));       // an extension
  EXPECT_TRUE(v::phone_number("(650) 253-0000 ext. 12", "US"));
  EXPECT_TRUE(v::phone_number("+44 20 7031 3000", "US"));         // another country, by its code
  EXPECT_TRUE(v::phone_number("+49 30 901820", "US"));
  EXPECT_TRUE(v::phone_number("020 7031 3000", "GB"));            // national, with the right region
  EXPECT_FALSE(v::phone_number("020 7031 3000", "US"));
  EXPECT_FALSE(v::phone_number("(123) 456-7890", "US"));          // no area code starts with 1
  EXPECT_FALSE(v::phone_number("555-1234", "US"));                // no area code at all
  EXPECT_FALSE(v::phone_number("+1 999 999 9999", "US"));
  EXPECT_FALSE(v::phone_number("123-45-6789", "US"));             // SSN-shaped
  EXPECT_TRUE(v::phone_region_supported("US"));
  EXPECT_TRUE(v::phone_region_supported("GB"));
  EXPECT_FALSE(v::phone_region_supported("XX"));
}

TEST(Validators, EmailShape) {
  EXPECT_TRUE(v::email("john.smith@example.com"));
  EXPECT_TRUE(v::email("a+tag@mail.example.co.uk"));
  EXPECT_FALSE(v::email(".john@example.com"));
  EXPECT_FALSE(v::email("john..smith@example.com"));
  EXPECT_FALSE(v::email("john@example"));         // no top-level domain
  EXPECT_FALSE(v::email("john@example.c0m"));     // the top-level domain is letters
  EXPECT_FALSE(v::email("john@-example.com"));
  EXPECT_FALSE(v::email("john@@example.com"));
  EXPECT_FALSE(v::email(std::string(65, 'a') + "@example.com"));  // local part over 64
}

TEST(Validators, ShannonEntropy) {
  EXPECT_DOUBLE_EQ(v::shannon_entropy(""), 0.0);
  EXPECT_DOUBLE_EQ(v::shannon_entropy("aaaaaaaa"), 0.0);
  EXPECT_DOUBLE_EQ(v::shannon_entropy("abcd"), 2.0);
  EXPECT_DOUBLE_EQ(v::shannon_entropy("0123456789abcdef"), 4.0);
  EXPECT_GT(v::shannon_entropy("q8Zr1XvB7mN4pQ9fT2kL"), 4.0);
}

TEST(Validators, JwtNeedsJsonHeaderWithAlg) {
  // The example token of RFC 7519's era (jwt.io): HS256 header, a JSON payload.
  const std::string token =
      "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ."
      "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
  EXPECT_TRUE(v::jwt(token));
  EXPECT_TRUE(v::jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."));  // {"alg":"none"}, unsigned
  EXPECT_FALSE(v::jwt("eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJ4In0.c2ln"));  // {"typ":"JWT"}: no alg
  EXPECT_FALSE(v::jwt("aGVsbG8gd29ybGQ.eyJzdWIiOiJ4In0.c2ln"));      // "hello world"
  EXPECT_FALSE(v::jwt("eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0"));       // two parts
  std::string out;
  ASSERT_TRUE(v::base64_decode("aGVsbG8", out));
  EXPECT_EQ(out, "hello");
  EXPECT_FALSE(v::base64_decode("a*b", out));
}

TEST(Validators, PlaceholdersAndGenericSecrets) {
  for (const char* p : {"changeme", "<your-api-key>", "${API_KEY}", "{{ .Values.apiKey }}", "xxxxxxxxxxxxxxxx",
                        "your_api_key_here", "$AWS_SECRET_ACCESS_KEY", "%(SECRET_KEY)s", "REDACTED", "********",
                        "AKIAIOSFODNN7EXAMPLE", "dummy-token-value", ""})
    EXPECT_TRUE(v::placeholder(p)) << p;
  EXPECT_FALSE(v::placeholder("9fT2kLq8Zr1XvB7mN4pQ"));

  EXPECT_TRUE(v::generic_secret("9fT2kLq8Zr1XvB7mN4pQ", false));
  EXPECT_TRUE(v::generic_secret("wJalrXUtnFEMI/K7MDENG/bPxRfiCYzz8kd", false));  // base64 with /
  // Ids are not secrets unless the key says they are.
  EXPECT_FALSE(v::generic_secret("9f1c2a7e-3b4d-4e8f-a1b2-7c6d5e4f3a21", false));
  EXPECT_TRUE(v::generic_secret("9f1c2a7e-3b4d-4e8f-a1b2-7c6d5e4f3a21", true));
  EXPECT_FALSE(v::generic_secret("da39a3ee5e6b4b0d3255bfef95601890afd80709", false));  // a git SHA
  EXPECT_TRUE(v::generic_secret("da39a3ee5e6b4b0d3255bfef95601890afd80709", true));
  EXPECT_FALSE(v::generic_secret("my-service-account-name", false));
  EXPECT_FALSE(v::generic_secret("/var/run/secrets/kubernetes.io/token", true));
  EXPECT_FALSE(v::generic_secret("aaaaaaaaaaaaaaaaaaab1", true));     // entropy far under 3.5
  EXPECT_FALSE(v::generic_secret("abcdefghijklmnopqrst", true));      // letters only
  EXPECT_FALSE(v::generic_secret("q8Zr1XvB7mN4pQ", true));            // 14 characters
  EXPECT_FALSE(v::generic_secret("changeme-changeme-1234", true));
}

TEST(Validators, DigitsOf) {
  EXPECT_EQ(v::digits_of("(415) 555-2671 x12"), "415555267112");
  EXPECT_EQ(v::digits_of("abc"), "");
}

}  // namespace
