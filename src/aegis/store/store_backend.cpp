// What both finding-store backends share: RFC 3339 times, fingerprints and the other per-finding
// columns, reference lists as JSON, and how a PostgreSQL location is told apart and shown.
#include "aegis/store/store_backend.h"

#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "aegis/core/error.h"
#include "aegis/core/json_shape.h"

namespace aegis::store {

namespace {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Time

// Days from 1970-01-01 to the given proleptic Gregorian date. Years are shifted to start in March
// so that the leap day falls at the end of the year.
std::int64_t days_from_civil(std::int64_t year, unsigned month, unsigned day) {
  year -= month <= 2;
  const std::int64_t era = (year >= 0 ? year : year - 399) / 400;
  const std::int64_t year_of_era = year - era * 400;                              // [0, 399]
  const std::int64_t day_of_year = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1;  // [0, 365]
  const std::int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + day_of_era - 719468;
}

bool is_leap(int year) { return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0; }

// Reads `count` decimal digits at `pos`.
std::optional<int> digits(std::string_view text, std::size_t& pos, std::size_t count) {
  if (pos + count > text.size()) return std::nullopt;
  int value = 0;
  for (std::size_t i = 0; i < count; ++i) {
    const char c = text[pos + i];
    if (c < '0' || c > '9') return std::nullopt;
    value = value * 10 + (c - '0');
  }
  pos += count;
  return value;
}

bool expect(std::string_view text, std::size_t& pos, std::string_view allowed) {
  if (pos >= text.size() || allowed.find(text[pos]) == std::string_view::npos) return false;
  ++pos;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Fingerprints

template <typename T, void (*Free)(T*)>
struct OpenSslFree {
  void operator()(T* p) const { Free(p); }
};

// SHA-256 through EVP, with the algorithm fetched once and the context reused across findings.
class Sha256 {
 public:
  Sha256() : md_(EVP_MD_fetch(nullptr, "SHA256", nullptr)), ctx_(EVP_MD_CTX_new()) {
    if (!md_ || !ctx_) throw core::Error("OpenSSL offers no SHA-256", "check the OpenSSL installation (libssl3)");
  }
  std::string hex(std::string_view bytes, std::size_t digits) {
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int size = 0;
    if (EVP_DigestInit_ex2(ctx_.get(), md_.get(), nullptr) != 1 || EVP_DigestUpdate(ctx_.get(), bytes.data(), bytes.size()) != 1 ||
        EVP_DigestFinal_ex(ctx_.get(), digest, &size) != 1)
      throw core::Error("SHA-256 failed in OpenSSL", "check the OpenSSL installation (libssl3)");
    static constexpr char kHex[] = "0123456789abcdef";
    std::string out;
    out.reserve(std::min<std::size_t>(digits, 2 * size));
    for (unsigned int i = 0; i < size && out.size() < digits; ++i) {
      out += kHex[digest[i] >> 4];
      if (out.size() < digits) out += kHex[digest[i] & 0xf];
    }
    return out;
  }

 private:
  std::unique_ptr<EVP_MD, OpenSslFree<EVP_MD, EVP_MD_free>> md_;
  std::unique_ptr<EVP_MD_CTX, OpenSslFree<EVP_MD_CTX, EVP_MD_CTX_free>> ctx_;
};

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

// The encoding hashed for a fingerprint: the tag "aegis.finding.v1", then as netstrings ("LEN:BYTES,",
// so that no two field lists encode alike) rule_id, file, member, offset, row, line (decimal; an
// absent number is "~,", distinct from any number), column, and the evidence with leading and
// trailing whitespace removed and every inner run of it replaced by one space. Stored rows keep the
// fingerprint they were written with: a change here needs a new tag and a schema migration that
// recomputes the old rows, or every finding would look fixed and new at the next reassessment.
std::string fingerprint_input(const core::Finding& finding) {
  std::string encoded = "aegis.finding.v1";
  auto field = [&encoded](std::string_view value) {
    encoded += std::to_string(value.size());
    encoded += ':';
    encoded += value;
    encoded += ',';
  };
  auto number = [&](const std::optional<std::uint64_t>& value) {
    if (value) field(std::to_string(*value));
    else encoded += "~,";
  };
  field(finding.rule_id);
  field(finding.location.file);
  field(finding.location.member);
  number(finding.location.offset);
  number(finding.location.row);
  number(finding.location.line);
  field(finding.location.column);
  std::string evidence;
  evidence.reserve(finding.evidence.size());
  bool pending_space = false;
  for (char c : finding.evidence) {
    if (is_space(c)) {
      pending_space = !evidence.empty();
      continue;
    }
    if (pending_space) evidence += ' ';
    pending_space = false;
    evidence += c;
  }
  field(evidence);
  return encoded;
}

constexpr std::size_t kFingerprintDigits = 32;

}  // namespace

namespace backend {

// The hasher, one per encoder: fetching the algorithm is the slow part.
struct FindingEncoder::Hasher : Sha256 {};

FindingEncoder::FindingEncoder() : hasher_(std::make_unique<Hasher>()) {}
FindingEncoder::~FindingEncoder() = default;

const FindingEncoder::Columns& FindingEncoder::encode(const core::Finding& finding) {
  const auto index = static_cast<std::size_t>(finding.severity);
  if (index >= counts_.size())
    throw core::Error("finding '" + finding.rule_id + "' has no valid severity (" +
                          std::to_string(static_cast<int>(finding.severity)) + ")",
                      "this is a bug in the command that reported it");
  ++counts_[index];
  columns_.fingerprint = hasher_->hex(fingerprint_input(finding), kFingerprintDigits);
  columns_.severity = core::to_string(finding.severity);
  columns_.atlas = json_list(finding.atlas);
  columns_.nist_ai_rmf = json_list(finding.nist_ai_rmf);
  return columns_;
}

// RFC 3339 date-time (section 5.6; 'T' may be 't' or a space, as the RFC allows) -> milliseconds
// since the epoch, UTC. Fractions beyond milliseconds are dropped; a leap second counts as :59.
std::optional<std::int64_t> parse_rfc3339(std::string_view text) {
  std::size_t pos = 0;
  auto year = digits(text, pos, 4);
  if (!year || !expect(text, pos, "-")) return std::nullopt;
  auto month = digits(text, pos, 2);
  if (!month || *month < 1 || *month > 12 || !expect(text, pos, "-")) return std::nullopt;
  auto day = digits(text, pos, 2);
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (!day || *day < 1 || *day > kDays[*month - 1] + (*month == 2 && is_leap(*year) ? 1 : 0)) return std::nullopt;
  if (!expect(text, pos, "Tt ")) return std::nullopt;
  auto hour = digits(text, pos, 2);
  if (!hour || *hour > 23 || !expect(text, pos, ":")) return std::nullopt;
  auto minute = digits(text, pos, 2);
  if (!minute || *minute > 59 || !expect(text, pos, ":")) return std::nullopt;
  auto second = digits(text, pos, 2);
  if (!second || *second > 60) return std::nullopt;
  int millis = 0;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    std::size_t count = 0;
    for (; pos < text.size() && text[pos] >= '0' && text[pos] <= '9'; ++pos, ++count)
      if (count < 3) millis = millis * 10 + (text[pos] - '0');
    if (count == 0) return std::nullopt;
    for (; count < 3; ++count) millis *= 10;
  }
  int offset_minutes = 0;
  if (expect(text, pos, "Zz")) {
  } else if (pos < text.size() && (text[pos] == '+' || text[pos] == '-')) {
    const int sign = text[pos++] == '-' ? -1 : 1;
    auto offset_hours = digits(text, pos, 2);
    if (!offset_hours || *offset_hours > 23 || !expect(text, pos, ":")) return std::nullopt;
    auto offset_mins = digits(text, pos, 2);
    if (!offset_mins || *offset_mins > 59) return std::nullopt;
    offset_minutes = sign * (*offset_hours * 60 + *offset_mins);
  } else {
    return std::nullopt;
  }
  if (pos != text.size()) return std::nullopt;
  const std::int64_t days = days_from_civil(*year, static_cast<unsigned>(*month), static_cast<unsigned>(*day));
  const std::int64_t seconds = days * 86400 + *hour * 3600 + (*minute - offset_minutes) * 60 + std::min(*second, 59);
  return seconds * 1000 + millis;
}

std::string now_utc() {
  const auto now = std::chrono::system_clock::now();
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::time_t seconds = std::chrono::system_clock::to_time_t(now);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  char text[40];
  const std::size_t length = std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%S", &utc);
  std::snprintf(text + length, sizeof text - length, ".%03dZ", static_cast<int>(millis));
  return text;
}

std::string json_list(const std::vector<std::string>& items) {
  if (items.empty()) return "[]";  // most findings: skip building a JSON value
  json array = json::array();
  for (const auto& item : items) array.push_back(item);
  return array.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::vector<std::string> parse_list(const std::string& text) {
  std::vector<std::string> items;
  if (text == "[]") return items;
  if (core::measure_json(text, 2).depth > 1) return items;
  json parsed = json::parse(text, nullptr, false);
  if (parsed.is_array())
    for (const auto& item : parsed)
      if (item.is_string()) items.push_back(item.get<std::string>());
  return items;
}

bool is_postgres_url(std::string_view location) {
  auto starts = [location](std::string_view prefix) {
    if (location.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i)
      if (std::tolower(static_cast<unsigned char>(location[i])) != prefix[i]) return false;
    return true;
  };
  return starts("postgresql://") || starts("postgres://");
}

// Where a URL's passwords are, as [begin, end) spans in order: the user part's (everything between
// the first ':' after the scheme and the last '@' before the query — libpq stops the authority at
// '/', but a password with an unescaped '/' is still a password, and hiding too much beats showing
// it) and the values of password= parameters.
std::vector<std::pair<std::size_t, std::size_t>> secret_spans(std::string_view url) {
  std::vector<std::pair<std::size_t, std::size_t>> spans;
  const std::size_t scheme_end = url.find("://");
  if (scheme_end != std::string_view::npos) {
    const std::size_t begin = scheme_end + 3;
    std::size_t end = url.find_first_of("?#", begin);
    if (end == std::string_view::npos) end = url.size();
    const std::size_t at = end == 0 ? std::string_view::npos : url.rfind('@', end - 1);
    const std::size_t colon = url.find(':', begin);
    if (at != std::string_view::npos && at >= begin && colon != std::string_view::npos && colon < at)
      spans.emplace_back(colon + 1, at);
  }
  for (std::size_t query = url.find('?'); query != std::string_view::npos && query < url.size();) {
    const std::size_t begin = query + 1;
    std::size_t end = url.find('&', begin);
    if (end == std::string_view::npos) end = url.size();
    const std::size_t equals = url.find('=', begin);
    if (equals != std::string_view::npos && equals < end) {
      std::string key(url.substr(begin, equals - begin));
      std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
      if (key == "password") spans.emplace_back(equals + 1, end);
    }
    query = end < url.size() ? end : std::string_view::npos;
  }
  return spans;
}

std::string redact_url(std::string_view url) {
  std::string out;
  std::size_t from = 0;
  for (const auto& [begin, end] : secret_spans(url)) {
    if (begin < from) continue;
    out.append(url.substr(from, begin - from));
    out += "***";
    from = end;
  }
  out.append(url.substr(from));
  return out;
}

std::vector<std::string> url_secrets(std::string_view url) {
  auto hex_value = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::vector<std::string> secrets;
  for (const auto& [begin, end] : secret_spans(url)) {
    if (end <= begin) continue;
    const std::string raw(url.substr(begin, end - begin));
    secrets.push_back(raw);
    std::string decoded;  // as libpq sends it
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '%' && i + 2 < raw.size() + 0 && hex_value(raw[i + 1]) >= 0 && hex_value(raw[i + 2]) >= 0) {
        decoded += static_cast<char>(hex_value(raw[i + 1]) << 4 | hex_value(raw[i + 2]));
        i += 2;
      } else {
        decoded += raw[i];
      }
    }
    if (decoded != raw && !decoded.empty()) secrets.push_back(decoded);
  }
  return secrets;
}

}  // namespace backend

std::string finding_fingerprint(const core::Finding& finding) {
  return Sha256().hex(fingerprint_input(finding), kFingerprintDigits);
}

}  // namespace aegis::store
