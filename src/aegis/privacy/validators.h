// The checks that turn a pattern match into a detection: checksums (Luhn, ISO 7064 mod 97, NHS
// mod 11), issuing rules (SSN areas, ITIN groups, NINO prefixes), address and date validity,
// libphonenumber, Shannon entropy and the look of placeholders. Pure functions over the matched
// bytes (any bytes are accepted and simply fail), so each can be tested on its own.
#pragma once

#include <chrono>
#include <string>
#include <string_view>

namespace aegis::privacy::validators {

// The ASCII digits of `text`, in order (separators dropped).
std::string digits_of(std::string_view text);

// Luhn (mod 10) over a string of ASCII digits; false for an empty string or any non-digit.
bool luhn(std::string_view digits);
// The card scheme whose issuer prefix (IIN) starts `digits`: "visa", "mastercard", "amex",
// "discover", "jcb", "diners"; empty when none matches.
std::string_view card_brand(std::string_view digits);
// A payment card number: 13 to 19 digits, optionally grouped by single spaces or single dashes
// (one kind of separator throughout), a known issuer prefix with a length it issues, and Luhn.
bool credit_card(std::string_view text);

// An IBAN: two letters, two check digits, the BBAN, optional single spaces between groups of four;
// the length the country uses (for the countries in our table; 15 to 34 for others) and
// ISO 7064 mod 97 == 1. Letters may be upper or lower case.
bool iban(std::string_view text);
// As iban() but without the country length table: the shape and mod 97 only (Python Faker 0.9.3,
// for one, writes 21-character GB IBANs with right check digits).
bool iban_checksum(std::string_view text);
// ISO 7064 MOD 97-10 of an IBAN (spaces removed) moved into check position; 1 when valid.
int iban_mod97(std::string_view compact);

// A US Social Security number, AAA-GG-SSSS, AAA GG SSSS or AAAGGSSSS (one separator kind): area
// not 000, 666 or 900-999, group not 00, serial not 0000.
bool us_ssn(std::string_view text);
// A US ITIN: 9XX-XX-XXXX (same separators as an SSN) with the group in 50-65, 70-88, 90-92 or 94-99.
bool us_itin(std::string_view text);
// A UK NHS number: 10 digits, plain or grouped 3-3-4 by spaces or dashes, whose mod-11 check digit
// is right (a remainder giving 10 is never issued).
bool uk_nhs(std::string_view text);
// A UK National Insurance number: two prefix letters (neither D, F, I, Q, U or V; the second not
// O; not BG, GB, NK, KN, TN, NT or ZZ), six digits (optionally spaced in pairs), suffix A to D.
bool uk_nino(std::string_view text);

// Dotted-quad IPv4 with every octet 0-255 and no leading zeros ("01" is ambiguous: octal or not).
bool ipv4(std::string_view text);
// An IPv6 address as inet_pton reads it (no zone index, no brackets).
bool ipv6(std::string_view text);
// Six hex pairs joined by ':' or by '-' (one kind), or Cisco's xxxx.xxxx.xxxx.
bool mac_address(std::string_view text);

// A calendar date as written in text: ISO 2023-01-31 (or 2023/01/31), US 1/31/2023 (or with
// dashes; a day-first 31/1/2023 is accepted when it cannot be month-first), 31.01.2023,
// "31 January 2023", "31st Jan 2023", "January 31, 2023", "Jan 31st 2023".
struct Date {
  int year = 0, month = 0, day = 0;
};
bool parse_date(std::string_view text, Date& out);
bool valid_calendar_date(int year, int month, int day);
// A parsed, valid date between 1900-01-01 and `today` (inclusive): a plausible date of birth.
bool date_of_birth(std::string_view text, std::chrono::year_month_day today);
bool date_of_birth(std::string_view text);  // today from the system clock (UTC)

// A phone number as libphonenumber sees it: parsed with `default_region` for numbers without a
// +country code and IsValidNumber. Extensions ("x1234", "ext. 12") are allowed.
bool phone_number(std::string_view text, const std::string& default_region);
// Whether libphonenumber knows the region code (e.g. "US", "GB").
bool phone_region_supported(const std::string& region);

// An e-mail address: local part of 1-64 characters without leading, trailing or doubled dots;
// domain labels of letters, digits and inner hyphens; an alphabetic top-level domain of 2+.
bool email(std::string_view text);

// Shannon entropy in bits per byte (0 for an empty string).
double shannon_entropy(std::string_view text);
// A JWT: three base64url parts (the last may be empty) whose first decodes to a JSON object that
// has an "alg" member.
bool jwt(std::string_view token);
// Decodes base64url or standard base64 (padding optional); false on any other character.
bool base64_decode(std::string_view in, std::string& out);

// 8-4-4-4-12 hex digits.
bool uuid(std::string_view text);
// Only hex digits (and at least one).
bool all_hex(std::string_view text);
// A value that only stands in for a secret: "changeme", "xxxxxxxx", "<your-key>", "${VAR}",
// "{{ var }}", "%(var)s", "your_api_key_here", "example", "dummy", "redacted", one repeated
// character, and the like. Case-insensitive.
bool placeholder(std::string_view value);
// What a generic "key = value" secret must look like: 16+ characters, Shannon entropy of 3.5 bits per
// character (3.0 when it is all hex), not a placeholder, not a lower-case path, not dashed or
// underscored lower-case words, not a UUID or bare hex (git SHAs, ids) unless `strong_key` (the key
// name says api_key, secret, password, access_key, ...), and at least one digit or one of + / =.
bool generic_secret(std::string_view value, bool strong_key);

}  // namespace aegis::privacy::validators
