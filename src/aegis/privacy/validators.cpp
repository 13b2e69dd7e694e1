#include "aegis/privacy/validators.h"

#include <arpa/inet.h>

#include <array>
#include <cmath>
#include <cstring>
#include <set>
#include <vector>

#include <phonenumbers/phonenumber.pb.h>
#include <phonenumbers/phonenumberutil.h>

namespace aegis::privacy::validators {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_upper(char c) { return c >= 'A' && c <= 'Z'; }
bool is_lower(char c) { return c >= 'a' && c <= 'z'; }
bool is_alpha(char c) { return is_upper(c) || is_lower(c); }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
char to_lower(char c) { return is_upper(c) ? static_cast<char>(c - 'A' + 'a') : c; }
char to_upper(char c) { return is_lower(c) ? static_cast<char>(c - 'a' + 'A') : c; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = to_lower(c);
  return out;
}

// Splits `text` into groups of digits separated by one separator character each; the separator
// must be the same throughout and one of `allowed`. Returns false on anything else.
bool split_groups(std::string_view text, std::string_view allowed, std::vector<std::string_view>& groups) {
  groups.clear();
  char sep = 0;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && is_digit(text[i])) continue;
    if (i == start) return false;  // empty group (leading, trailing or doubled separator)
    groups.push_back(text.substr(start, i - start));
    if (i == text.size()) break;
    const char c = text[i];
    if (allowed.find(c) == std::string_view::npos) return false;
    if (sep != 0 && c != sep) return false;
    sep = c;
    start = i + 1;
  }
  return true;
}

int to_int(std::string_view digits) {
  int v = 0;
  for (char c : digits) v = v * 10 + (c - '0');
  return v;
}

bool prefix_in(std::string_view digits, int len, int lo, int hi) {
  if (static_cast<int>(digits.size()) < len) return false;
  const int p = to_int(digits.substr(0, static_cast<std::size_t>(len)));
  return p >= lo && p <= hi;
}

struct IbanCountry {
  const char* code;
  int length;
};
// Lengths from the SWIFT IBAN registry for the countries most often seen.
constexpr std::array<IbanCountry, 78> kIbanLengths{{
    {"AD", 24}, {"AE", 23}, {"AL", 28}, {"AT", 20}, {"AZ", 28}, {"BA", 20}, {"BE", 16}, {"BG", 22},
    {"BH", 22}, {"BR", 29}, {"BY", 28}, {"CH", 21}, {"CR", 22}, {"CY", 28}, {"CZ", 24}, {"DE", 22},
    {"DK", 18}, {"DO", 28}, {"EE", 20}, {"EG", 29}, {"ES", 24}, {"FI", 18}, {"FO", 18}, {"FR", 27},
    {"GB", 22}, {"GE", 22}, {"GI", 23}, {"GL", 18}, {"GR", 27}, {"GT", 28}, {"HR", 21}, {"HU", 28},
    {"IE", 22}, {"IL", 23}, {"IQ", 23}, {"IS", 26}, {"IT", 27}, {"JO", 30}, {"KW", 30}, {"KZ", 20},
    {"LB", 28}, {"LC", 32}, {"LI", 21}, {"LT", 20}, {"LU", 20}, {"LV", 21}, {"LY", 25}, {"MC", 27},
    {"MD", 24}, {"ME", 22}, {"MK", 19}, {"MR", 27}, {"MT", 31}, {"MU", 30}, {"NL", 18}, {"NO", 15},
    {"PK", 24}, {"PL", 28}, {"PS", 29}, {"PT", 25}, {"QA", 29}, {"RO", 24}, {"RS", 22}, {"SA", 24},
    {"SC", 31}, {"SE", 24}, {"SI", 19}, {"SK", 24}, {"SM", 27}, {"ST", 25}, {"SV", 28}, {"TL", 23},
    {"TN", 24}, {"TR", 26}, {"UA", 29}, {"VA", 22}, {"VG", 24}, {"XK", 20},
}};

int month_from_name(std::string_view word) {
  static constexpr std::array<const char*, 12> kNames{"january", "february", "march",     "april",   "may",      "june",
                                                      "july",    "august",   "september", "october", "november", "december"};
  const std::string w = lower(word);
  if (w.size() < 3) return 0;
  for (std::size_t i = 0; i < kNames.size(); ++i) {
    const std::string_view name = kNames[i];
    if (w == name || w == name.substr(0, 3) || (i == 8 && w == "sept")) return static_cast<int>(i) + 1;
  }
  return 0;
}

bool ordinal_suffix(std::string_view word) {
  const std::string w = lower(word);
  return w == "st" || w == "nd" || w == "rd" || w == "th";
}

}  // namespace

std::string digits_of(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text)
    if (is_digit(c)) out.push_back(c);
  return out;
}

bool luhn(std::string_view digits) {
  if (digits.empty()) return false;
  int sum = 0;
  bool doubled = false;
  for (std::size_t i = digits.size(); i-- > 0;) {
    if (!is_digit(digits[i])) return false;
    int d = digits[i] - '0';
    if (doubled) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
    doubled = !doubled;
  }
  return sum % 10 == 0;
}

std::string_view card_brand(std::string_view digits) {
  if (digits.empty()) return {};
  if (digits[0] == '4') return "visa";
  if (prefix_in(digits, 2, 51, 55) || prefix_in(digits, 4, 2221, 2720)) return "mastercard";
  if (prefix_in(digits, 2, 34, 34) || prefix_in(digits, 2, 37, 37)) return "amex";
  if (prefix_in(digits, 4, 6011, 6011) || prefix_in(digits, 2, 65, 65) || prefix_in(digits, 3, 644, 649)) return "discover";
  if (prefix_in(digits, 4, 3528, 3589)) return "jcb";
  if (prefix_in(digits, 3, 300, 305) || prefix_in(digits, 2, 36, 36) || prefix_in(digits, 2, 38, 38)) return "diners";
  return {};
}

bool credit_card(std::string_view text) {
  std::vector<std::string_view> groups;
  if (!split_groups(text, " -", groups)) return false;
  const std::string digits = digits_of(text);
  const std::size_t n = digits.size();
  if (n < 13 || n > 19) return false;
  if (groups.size() > 1) {
    // Grouped as cards are printed: the first group has 4 digits, no group has more than 6.
    if (groups.front().size() != 4) return false;
    for (auto g : groups)
      if (g.size() > 6) return false;
  }
  const std::string_view brand = card_brand(digits);
  if (brand.empty()) return false;
  bool length_ok = false;
  if (brand == "visa") length_ok = n == 13 || n == 16 || n == 19;
  else if (brand == "mastercard") length_ok = n == 16;
  else if (brand == "amex") length_ok = n == 15;
  else if (brand == "discover" || brand == "jcb") length_ok = n >= 16;
  else if (brand == "diners") length_ok = n >= 14;
  return length_ok && luhn(digits);
}

int iban_mod97(std::string_view compact) {
  if (compact.size() < 5) return -1;
  int rem = 0;
  auto feed = [&](char c) -> bool {
    if (is_digit(c)) {
      rem = (rem * 10 + (c - '0')) % 97;
    } else if (is_alpha(c)) {
      const int v = to_upper(c) - 'A' + 10;
      rem = (rem * 100 + v) % 97;
    } else {
      return false;
    }
    return true;
  };
  for (std::size_t i = 4; i < compact.size(); ++i)
    if (!feed(compact[i])) return -1;
  for (std::size_t i = 0; i < 4; ++i)
    if (!feed(compact[i])) return -1;
  return rem;
}

namespace {
// The IBAN without its spaces, upper case; empty when the shape is wrong.
std::string iban_compact(std::string_view text) {
  std::string compact;
  // Optional single spaces, only between groups of four counted from the start.
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ' ') {
      if (compact.empty() || compact.size() % 4 != 0 || i + 1 >= text.size() || text[i + 1] == ' ') return {};
      continue;
    }
    if (!is_digit(c) && !is_alpha(c)) return {};
    compact.push_back(to_upper(c));
  }
  if (compact.size() < 15 || compact.size() > 34) return {};
  if (!is_upper(compact[0]) || !is_upper(compact[1]) || !is_digit(compact[2]) || !is_digit(compact[3])) return {};
  return compact;
}
}  // namespace

bool iban_checksum(std::string_view text) {
  const std::string compact = iban_compact(text);
  return !compact.empty() && iban_mod97(compact) == 1;
}

bool iban(std::string_view text) {
  const std::string compact = iban_compact(text);
  if (compact.empty()) return false;
  const std::string_view country = std::string_view(compact).substr(0, 2);
  for (const auto& entry : kIbanLengths) {
    if (country == entry.code) {
      if (static_cast<int>(compact.size()) != entry.length) return false;
      break;
    }
  }
  return iban_mod97(compact) == 1;
}

namespace {
bool ssn_shape(std::string_view text, int& area, int& group, int& serial) {
  std::vector<std::string_view> groups;
  if (!split_groups(text, " -", groups)) return false;
  if (groups.size() == 3) {
    if (groups[0].size() != 3 || groups[1].size() != 2 || groups[2].size() != 4) return false;
  } else if (groups.size() != 1 || groups[0].size() != 9) {
    return false;
  }
  const std::string d = digits_of(text);
  area = to_int(std::string_view(d).substr(0, 3));
  group = to_int(std::string_view(d).substr(3, 2));
  serial = to_int(std::string_view(d).substr(5, 4));
  return true;
}
}  // namespace

bool us_ssn(std::string_view text) {
  int area = 0, group = 0, serial = 0;
  if (!ssn_shape(text, area, group, serial)) return false;
  if (area == 0 || area == 666 || area >= 900) return false;
  return group != 0 && serial != 0;
}

bool us_itin(std::string_view text) {
  int area = 0, group = 0, serial = 0;
  if (!ssn_shape(text, area, group, serial)) return false;
  if (area < 900) return false;
  return (group >= 50 && group <= 65) || (group >= 70 && group <= 88) || (group >= 90 && group <= 92) ||
         (group >= 94 && group <= 99);
}

bool uk_nhs(std::string_view text) {
  std::vector<std::string_view> groups;
  if (!split_groups(text, " -", groups)) return false;
  if (groups.size() == 3) {
    if (groups[0].size() != 3 || groups[1].size() != 3 || groups[2].size() != 4) return false;
  } else if (groups.size() != 1 || groups[0].size() != 10) {
    return false;
  }
  const std::string d = digits_of(text);
  int sum = 0;
  for (int i = 0; i < 9; ++i) sum += (d[static_cast<std::size_t>(i)] - '0') * (10 - i);
  int check = 11 - sum % 11;
  if (check == 11) check = 0;
  if (check == 10) return false;
  return check == d[9] - '0';
}

bool uk_nino(std::string_view text) {
  std::string compact;
  for (char c : text)
    if (c != ' ') compact.push_back(to_upper(c));
  if (compact.size() != 9) return false;
  // Spaces only between the prefix, the digit pairs and the suffix.
  {
    std::size_t letters = 0;
    for (std::size_t i = 0; i < text.size(); ++i) {
      if (text[i] == ' ') {
        if (i == 0 || text[i - 1] == ' ' || (letters != 2 && letters != 4 && letters != 6 && letters != 8)) return false;
      } else {
        ++letters;
      }
    }
  }
  const char a = compact[0], b = compact[1];
  if (!is_upper(a) || !is_upper(b)) return false;
  constexpr std::string_view kNever = "DFIQUV";
  if (kNever.find(a) != std::string_view::npos || kNever.find(b) != std::string_view::npos || b == 'O') return false;
  const std::string_view prefix = std::string_view(compact).substr(0, 2);
  for (std::string_view bad : {"BG", "GB", "NK", "KN", "TN", "NT", "ZZ"})
    if (prefix == bad) return false;
  for (std::size_t i = 2; i < 8; ++i)
    if (!is_digit(compact[i])) return false;
  return compact[8] >= 'A' && compact[8] <= 'D';
}

bool ipv4(std::string_view text) {
  int parts = 0;
  std::size_t i = 0;
  while (true) {
    const std::size_t start = i;
    while (i < text.size() && is_digit(text[i])) ++i;
    const std::size_t len = i - start;
    if (len == 0 || len > 3) return false;
    if (len > 1 && text[start] == '0') return false;  // leading zero: octal or decimal?
    if (to_int(text.substr(start, len)) > 255) return false;
    ++parts;
    if (i == text.size()) break;
    if (text[i] != '.' || parts == 4) return false;
    ++i;
  }
  return parts == 4;
}

bool ipv6(std::string_view text) {
  if (text.size() < 2 || text.size() > 45) return false;
  const std::string s(text);
  in6_addr addr{};
  return inet_pton(AF_INET6, s.c_str(), &addr) == 1;
}

bool mac_address(std::string_view text) {
  if (text.size() == 14) {  // xxxx.xxxx.xxxx
    for (std::size_t i = 0; i < 14; ++i) {
      if (i == 4 || i == 9) {
        if (text[i] != '.') return false;
      } else if (!is_hex(text[i])) {
        return false;
      }
    }
    return true;
  }
  if (text.size() != 17) return false;
  const char sep = text[2];
  if (sep != ':' && sep != '-') return false;
  for (std::size_t i = 0; i < 17; ++i) {
    if (i % 3 == 2) {
      if (text[i] != sep) return false;
    } else if (!is_hex(text[i])) {
      return false;
    }
  }
  return true;
}

bool valid_calendar_date(int year, int month, int day) {
  if (year < 1 || month < 1 || month > 12 || day < 1) return false;
  const auto ymd = std::chrono::year_month_day{std::chrono::year{year}, std::chrono::month{static_cast<unsigned>(month)},
                                               std::chrono::day{static_cast<unsigned>(day)}};
  return ymd.ok();
}

bool parse_date(std::string_view text, Date& out) {
  if (text.size() > 64) return false;
  struct Token {
    std::string_view text;
    bool digits;
  };
  std::vector<Token> tokens;
  std::string seps;  // separators between numeric tokens, for the dotted (day-first) form
  for (std::size_t i = 0; i < text.size();) {
    const char c = text[i];
    if (is_digit(c) || is_alpha(c)) {
      const bool d = is_digit(c);
      std::size_t j = i;
      while (j < text.size() && (d ? is_digit(text[j]) : is_alpha(text[j]))) ++j;
      const std::string_view word = text.substr(i, j - i);
      if (!d && ordinal_suffix(word) && !tokens.empty() && tokens.back().digits) {
        i = j;  // "31st"
        continue;
      }
      tokens.push_back({word, d});
      i = j;
    } else if (c == ' ' || c == ',' || c == '/' || c == '-' || c == '.') {
      seps.push_back(c);
      ++i;
    } else {
      return false;
    }
  }
  if (tokens.size() != 3) return false;
  auto num = [](const Token& t, std::size_t max_len) { return t.digits && t.text.size() <= max_len; };
  int y = 0, m = 0, d = 0;
  if (tokens[0].digits && tokens[1].digits && tokens[2].digits) {
    if (tokens[0].text.size() == 4 && num(tokens[1], 2) && num(tokens[2], 2)) {
      y = to_int(tokens[0].text), m = to_int(tokens[1].text), d = to_int(tokens[2].text);
    } else if (num(tokens[0], 2) && num(tokens[1], 2) && tokens[2].text.size() == 4) {
      y = to_int(tokens[2].text);
      const int a = to_int(tokens[0].text), b = to_int(tokens[1].text);
      const bool dotted = seps.find('.') != std::string::npos;
      if (dotted) {
        d = a, m = b;  // 31.01.2023 is day-first
      } else if (valid_calendar_date(y, a, b)) {
        m = a, d = b;
      } else {
        d = a, m = b;
      }
    } else {
      return false;
    }
  } else if (num(tokens[0], 2) && !tokens[1].digits && tokens[2].digits && tokens[2].text.size() == 4) {
    d = to_int(tokens[0].text), m = month_from_name(tokens[1].text), y = to_int(tokens[2].text);
  } else if (!tokens[0].digits && num(tokens[1], 2) && tokens[2].digits && tokens[2].text.size() == 4) {
    m = month_from_name(tokens[0].text), d = to_int(tokens[1].text), y = to_int(tokens[2].text);
  } else {
    return false;
  }
  if (!valid_calendar_date(y, m, d)) return false;
  out = {y, m, d};
  return true;
}

bool date_of_birth(std::string_view text, std::chrono::year_month_day today) {
  Date date;
  if (!parse_date(text, date)) return false;
  if (date.year < 1900) return false;
  const std::chrono::year_month_day ymd{std::chrono::year{date.year}, std::chrono::month{static_cast<unsigned>(date.month)},
                                        std::chrono::day{static_cast<unsigned>(date.day)}};
  return ymd <= today;
}

bool date_of_birth(std::string_view text) {
  const auto now = std::chrono::floor<std::chrono::days>(std::chrono::system_clock::now());
  return date_of_birth(text, std::chrono::year_month_day{now});
}

namespace {
// Regions of the North American Numbering Plan (+1): ten digits, area code and exchange from 2-9.
bool nanp_region(const std::string& region) {
  static const std::set<std::string> regions{"US", "CA", "AG", "AI", "AS", "BB", "BM", "BS", "DM", "DO", "GD", "GU", "JM",
                                             "KN", "KY", "LC", "MP", "MS", "PR", "SX", "TC", "TT", "VC", "VG", "VI"};
  return regions.count(region) > 0;
}

// Conditions every valid number meets, checked before libphonenumber (which is slow): E.164 has at
// most 15 digits, and a NANP number written without an international prefix is [2-9]XX-[2-9]XX-XXXX
// with an optional leading 1.
bool phone_plausible(std::string_view text, const std::string& region) {
  std::string digits;
  bool plus = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (c == '+' && digits.empty()) plus = true;
    if (c == 'x' || c == 'X' || c == 'e' || c == 'E' || c == '#' || c == ',' || c == ';') break;  // an extension
    if (is_digit(c)) digits.push_back(c);
  }
  if (digits.size() < 5 || digits.size() > 17) return false;
  if (plus || digits.rfind("00", 0) == 0 || digits.rfind("011", 0) == 0 || !nanp_region(region)) return true;
  std::string_view national = digits;
  if (national.size() == 11 && national[0] == '1') national.remove_prefix(1);
  return national.size() == 10 && national[0] >= '2' && national[3] >= '2';
}
}  // namespace

bool phone_number(std::string_view text, const std::string& default_region) {
  if (text.empty() || text.size() > 64) return false;
  if (!phone_plausible(text, default_region)) return false;
  using i18n::phonenumbers::PhoneNumber;
  using i18n::phonenumbers::PhoneNumberUtil;
  const PhoneNumberUtil* util = PhoneNumberUtil::GetInstance();
  PhoneNumber number;
  if (util->Parse(std::string(text), default_region, &number) != PhoneNumberUtil::NO_PARSING_ERROR) return false;
  return util->IsValidNumber(number);
}

bool phone_region_supported(const std::string& region) {
  static const std::set<std::string> regions = [] {
    std::set<std::string> r;
    i18n::phonenumbers::PhoneNumberUtil::GetInstance()->GetSupportedRegions(&r);
    return r;
  }();
  return regions.count(region) > 0;
}

bool email(std::string_view text) {
  const std::size_t at = text.find('@');
  if (at == std::string_view::npos || text.find('@', at + 1) != std::string_view::npos) return false;
  const std::string_view local = text.substr(0, at), domain = text.substr(at + 1);
  if (local.empty() || local.size() > 64 || domain.size() < 4 || domain.size() > 253) return false;
  if (local.front() == '.' || local.back() == '.' || local.find("..") != std::string_view::npos) return false;
  for (char c : local)
    if (!(is_alpha(c) || is_digit(c) || std::strchr("._%+-'", c) != nullptr)) return false;
  std::size_t labels = 0;
  std::size_t start = 0;
  while (true) {
    const std::size_t dot = domain.find('.', start);
    const std::string_view label = domain.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') return false;
    for (char c : label)
      if (!(is_alpha(c) || is_digit(c) || c == '-')) return false;
    ++labels;
    if (dot == std::string_view::npos) {
      if (label.size() < 2) return false;
      for (char c : label)
        if (!is_alpha(c)) return false;  // the top-level domain
      break;
    }
    start = dot + 1;
  }
  return labels >= 2;
}

double shannon_entropy(std::string_view text) {
  if (text.empty()) return 0;
  std::array<std::size_t, 256> counts{};
  for (unsigned char c : text) ++counts[c];
  double h = 0;
  const double n = static_cast<double>(text.size());
  for (std::size_t count : counts) {
    if (count == 0) continue;
    const double p = static_cast<double>(count) / n;
    h -= p * std::log2(p);
  }
  return h;
}

bool base64_decode(std::string_view in, std::string& out) {
  out.clear();
  while (!in.empty() && in.back() == '=') in.remove_suffix(1);
  std::uint32_t acc = 0;
  int bits = 0;
  for (char c : in) {
    int v;
    if (is_upper(c)) v = c - 'A';
    else if (is_lower(c)) v = c - 'a' + 26;
    else if (is_digit(c)) v = c - '0' + 52;
    else if (c == '-' || c == '+') v = 62;
    else if (c == '_' || c == '/') v = 63;
    else return false;
    acc = (acc << 6) | static_cast<std::uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((acc >> bits) & 0xFF));
    }
  }
  return bits < 6;  // a lone trailing 6-bit group cannot come from whole bytes
}

bool jwt(std::string_view token) {
  const std::size_t dot1 = token.find('.');
  if (dot1 == std::string_view::npos) return false;
  const std::size_t dot2 = token.find('.', dot1 + 1);
  if (dot2 == std::string_view::npos || token.find('.', dot2 + 1) != std::string_view::npos) return false;
  std::string header, payload;
  if (!base64_decode(token.substr(0, dot1), header) || !base64_decode(token.substr(dot1 + 1, dot2 - dot1 - 1), payload))
    return false;
  auto object = [](std::string_view json) {
    while (!json.empty() && (json.front() == ' ' || json.front() == '\n' || json.front() == '\r' || json.front() == '\t'))
      json.remove_prefix(1);
    while (!json.empty() && (json.back() == ' ' || json.back() == '\n' || json.back() == '\r' || json.back() == '\t'))
      json.remove_suffix(1);
    return json.size() >= 2 && json.front() == '{' && json.back() == '}';
  };
  if (!object(header) || !object(payload)) return false;
  std::size_t pos = header.find("\"alg\"");
  if (pos == std::string::npos) return false;
  pos += 5;
  while (pos < header.size() && header[pos] == ' ') ++pos;
  return pos < header.size() && header[pos] == ':';
}

bool uuid(std::string_view text) {
  if (text.size() != 36) return false;
  for (std::size_t i = 0; i < 36; ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return false;
    } else if (!is_hex(text[i])) {
      return false;
    }
  }
  return true;
}

bool all_hex(std::string_view text) {
  if (text.empty()) return false;
  for (char c : text)
    if (!is_hex(c)) return false;
  return true;
}

bool placeholder(std::string_view value) {
  if (value.empty()) return true;
  const std::string v = lower(value);
  if (v.find_first_not_of(v[0]) == std::string::npos) return true;  // one character repeated
  static constexpr std::array<std::string_view, 40> kMarks{
      "changeme",    "change_me",   "change-me",  "changeit",    "xxxx",        "****",       "${",
      "{{",          "}}",          "%(",         "<",           ">",           "your_",      "your-",
      "yourapi",     "yourkey",     "yoursecret", "yourtoken",   "yourpass",    "example",    "placeholder",
      "dummy",       "redacted",    "sample",     "insert_",     "insert-",     "replace_",   "replace-",
      "replaceme",   "fake",        "notreal",    "not_real",    "not-a-real",  "_here",      "-here",
      "process.env", "os.environ",  "getenv",     "0123456789",  "abcdefghij"};
  for (auto mark : kMarks)
    if (v.find(mark) != std::string::npos) return true;
  if (v[0] == '$' && v.size() > 1 && (is_alpha(v[1]) || v[1] == '_' || v[1] == '{' || v[1] == '(')) return true;
  if (v[0] == '%' && v.back() == '%') return true;  // %VAR%
  return false;
}

bool generic_secret(std::string_view value, bool strong_key) {
  if (value.size() < 16 || placeholder(value)) return false;
  // Random-looking: 3.5 bits per character, or 3.0 for hex (at most 4 bits per character to begin
  // with) and UUIDs.
  bool hexish = true;  // hex digits and dashes: a hash, a UUID
  for (char c : value) hexish = hexish && (is_hex(c) || c == '-');
  if (shannon_entropy(value) < (hexish ? 3.0 : 3.5)) return false;
  if (value.front() == '/' || value.rfind("./", 0) == 0 || value.rfind("~/", 0) == 0) {  // a path?
    bool path = true;
    for (char c : value) path = path && (is_lower(c) || is_digit(c) || c == '/' || c == '.' || c == '_' || c == '-' || c == '~');
    if (path) return false;
  }
  if (uuid(value) && !strong_key) return false;
  if (all_hex(value) && !strong_key) return false;
  // Words joined by - _ . (an identifier, a resource name, a path): "my-service-account-name".
  {
    bool words_only = true;
    std::size_t joins = 0;
    for (char c : value) {
      if (is_lower(c)) continue;
      if (c == '-' || c == '_' || c == '.' || c == '/') {
        ++joins;
        continue;
      }
      words_only = false;
      break;
    }
    if (words_only && joins > 0) return false;
  }
  bool digit = false, symbol = false;
  for (char c : value) {
    digit = digit || is_digit(c);
    symbol = symbol || c == '+' || c == '/' || c == '=';
  }
  return digit || symbol;
}

}  // namespace aegis::privacy::validators
