// The Detector: every rule (the shipped pii_rules.toml and secret_rules.toml, then the user's rule
// files) compiled once into one Hyperscan block-mode database, then each candidate confirmed.
//
// Pipeline per scan():
//   1. Hyperscan over the text. Each rule is first compiled alone to see how it can run (cached per
//      process), then takes one of these modes in the shared database:
//        plain      the rule's pattern as it is: exact match ends. Used whenever the pattern has a
//                   bounded width (hs_expression_info, or the rule's max_width): RE2 then finds the
//                   start within [end - width, end]. Measured on our corpus, HS_FLAG_SOM_LEFTMOST on
//                   these patterns cost 3.6x the scan time, so it is kept for where it is needed:
//        som        HS_FLAG_SOM_LEFTMOST for patterns of unbounded width that compile with it (exact
//                   [from, to) spans; for each start the longest span that passes every check wins);
//        prefilter  HS_FLAG_PREFILTER for patterns Hyperscan cannot take otherwise (candidates are
//                   ends of a relaxed pattern; RE2 searches the window before each);
//        trigger    context_required rules (a 9-digit number is a passport only next to "passport"):
//                   Hyperscan looks for the context words instead, caseless; RE2 looks for the
//                   value in the context window after each word. With a matching field name the
//                   whole field is searched. This keeps bare-digit shapes out of the Hyperscan pass.
//      A pattern that compiles alone but not together with the rest steps down to prefilter.
//   2. RE2 (Latin-1, so bytes are bytes as for Hyperscan) confirms each candidate and finds its
//      capture groups, left to right over merged windows; when a match does not stand, the shorter
//      spans from its start that end where Hyperscan saw a match end are tried.
//   3. The secret group (secretGroup, else the first non-empty capture group, else the match) is
//      the entity. Entropy, gitleaks keywords, allowlists, the validator and the context words
//      (before the match on its line and inside it, and the field name) decide whether it stays and
//      its score.
//   4. Detections under min_score go; overlaps are resolved (higher score, then longer span).
//
// Bounds (any bytes, any length, linear time and bounded memory):
//   - at most kMaxCandidates (100,000) Hyperscan candidates per scan() call: scanning stops at the
//     cap, so a text that yields more is only examined up to that point (scan big inputs by line or
//     field, as pii_scan does); hence also at most 100,000 detections per call;
//   - RE2 only ever sees a window of at most kMaxWindow (64 KiB) bytes per candidate (for patterns
//     of unbounded width: 4 KiB within the line, or 16 KiB when the pattern can match a newline),
//     and a call feeds RE2 at most 8 x the text size + 1 MiB in total (past that, the remaining
//     candidates are dropped);
//   - texts over 1 GiB are scanned by Hyperscan in 1 GiB pieces that overlap by kMaxWindow.
// Scratch: each thread keeps one hs_scratch_t (thread_local), grown with hs_alloc_scratch for every
// database it meets and freed when the thread exits.
#include "aegis/privacy/detector.h"

#include <hs/hs.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <re2/re2.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <tuple>

#include "aegis/core/error.h"
#include "aegis/privacy/rule_file.h"
#include "aegis/privacy/validators.h"

namespace aegis::data {
extern const std::string_view pii_rules;
extern const std::string_view secret_rules;
}  // namespace aegis::data

namespace aegis::privacy {
namespace {

constexpr std::size_t kMaxCandidates = 100'000;
constexpr std::size_t kMaxWindow = 64 * 1024;
constexpr std::size_t kChunk = std::size_t{1} << 30;
constexpr std::size_t kMaxInside = 512;   // bytes of a match searched for context words
constexpr std::size_t kLineWindow = 4096;     // look-back of an unbounded pattern (within its line)
constexpr std::size_t kCrossLineWindow = 16 * 1024;  // look-back of an unbounded pattern that can match \n
constexpr std::size_t kPrefilterSlack = 256;         // look-ahead past a prefiltered candidate's end

bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_alnum(char c) { return is_digit(c) || is_alpha(c); }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }
char to_lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = to_lower(c);
  return out;
}

// Lower-case words of a field or keyword: split at anything but letters and digits and at
// lower-to-upper case changes ("dateOfBirth" -> date, of, birth).
std::vector<std::string> words_of(std::string_view s) {
  std::vector<std::string> words;
  std::string current;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (!is_alnum(c)) {
      if (!current.empty()) words.push_back(std::move(current)), current.clear();
      continue;
    }
    if (c >= 'A' && c <= 'Z' && i > 0 && s[i - 1] >= 'a' && s[i - 1] <= 'z' && !current.empty())
      words.push_back(std::move(current)), current.clear();
    current.push_back(to_lower(c));
  }
  if (!current.empty()) words.push_back(std::move(current));
  return words;
}

std::string joined(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) out += w;
  return out;
}

// `word` (lower case) in `hay` (lower case) as a word: no letter or digit right before it, and for
// words of three characters or fewer none right after it either ("dl" is not in "handle", but
// "birth" is in "birthday").
bool has_word(std::string_view hay, std::string_view word) {
  if (word.empty()) return false;
  for (std::size_t pos = hay.find(word); pos != std::string_view::npos; pos = hay.find(word, pos + 1)) {
    if (pos > 0 && is_alnum(hay[pos - 1]) && is_alnum(word.front())) continue;
    const std::size_t after = pos + word.size();
    if (word.size() <= 3 && after < hay.size() && is_alnum(hay[after]) && is_alnum(word.back())) continue;
    return true;
  }
  return false;
}

// What a validator sees: the whole text, the entity span and the whole match span.
struct Check {
  std::string_view text;
  std::size_t begin, end;              // the entity
  std::size_t match_begin, match_end;  // the whole regex match
  const std::string* region;
  bool field_context;  // the field name is one of the rule's context words or field names
  std::string_view value() const { return text.substr(begin, end - begin); }
  char before(std::size_t n = 1) const { return begin >= n ? text[begin - n] : '\0'; }
  char after(std::size_t n = 0) const { return end + n < text.size() ? text[end + n] : '\0'; }
};
// A validator's confidence: 0 rejects the match, 1 keeps the rule's scores, a value between scales
// them (for validators that can only half vouch for a match).
using ValidatorFn = double (*)(const Check&);

// Whether the span sits in the groups of an IBAN-shaped run ("DE89 3704 0044 0532 0130 00" holds
// "0532 0130 00" and "3704 0044 0532 0130"): looking back over upper-case letters, digits and spaces
// for a token shaped like an IBAN's start (two letters, two digits, a space).
bool inside_iban_shape(const Check& c) {
  std::size_t i = c.begin;
  while (i > 0 && c.begin - i < 40 &&
         (is_digit(c.text[i - 1]) || (c.text[i - 1] >= 'A' && c.text[i - 1] <= 'Z') || c.text[i - 1] == ' '))
    --i;
  for (std::size_t p = i; p + 5 <= c.begin; ++p) {
    if (p > i && c.text[p - 1] != ' ') continue;
    if (c.text[p] >= 'A' && c.text[p] <= 'Z' && c.text[p + 1] >= 'A' && c.text[p + 1] <= 'Z' && is_digit(c.text[p + 2]) &&
        is_digit(c.text[p + 3]) && c.text[p + 4] == ' ')
      return true;
  }
  return false;
}

// Whether the span is a piece of a longer run of digit groups: the separator it uses itself comes
// right before or after it, next to another digit ("7534 1234 56" inside "4123 7534 1234 5678").
bool continues_digit_groups(const Check& c) {
  const std::string_view v = c.value();
  char separator = 0;
  for (std::size_t i = 1; i + 1 < v.size() && separator == 0; ++i)
    if ((v[i] == ' ' || v[i] == '-' || v[i] == '.') && is_digit(v[i - 1]) && is_digit(v[i + 1])) separator = v[i];
  if (separator == 0) return false;
  if (c.before() == separator && is_digit(c.before(2))) return true;
  return c.after() == separator && is_digit(c.after(1));
}

double v_credit_card(const Check& c) {
  if (inside_iban_shape(c)) return 0;
  return validators::credit_card(c.value());
}

double v_iban(const Check& c) { return validators::iban(c.value()); }
double v_us_ssn(const Check& c) { return validators::us_ssn(c.value()); }
double v_us_itin(const Check& c) { return validators::us_itin(c.value()); }
double v_uk_nhs(const Check& c) { return validators::uk_nhs(c.value()); }
double v_uk_nino(const Check& c) { return validators::uk_nino(c.value()); }
double v_email(const Check& c) {
  // user:password@host in a URL is a credential, not an address: look back over the token for "://".
  std::size_t i = c.begin;
  while (i > 0 && c.begin - i < 256 && c.text[i - 1] != ' ' && c.text[i - 1] != '"' && c.text[i - 1] != '\'' &&
         c.text[i - 1] != '\n' && c.text[i - 1] != '\t' && c.text[i - 1] != '=')
    --i;
  if (c.text.substr(i, c.begin - i).find("://") != std::string_view::npos) return 0;
  return validators::email(c.value());
}
double v_jwt(const Check& c) { return validators::jwt(c.value()); }
double v_date_of_birth(const Check& c) { return validators::date_of_birth(c.value()); }
double v_not_placeholder(const Check& c) { return !validators::placeholder(c.value()); }

double v_ipv4(const Check& c) {
  if (!validators::ipv4(c.value())) return false;
  // Part of a longer dotted number (an OID, a five-part version) is not an address.
  if (c.before() == '.' && is_digit(c.before(2))) return false;
  if (c.after() == '.' && is_digit(c.after(1))) return false;
  return true;
}

double v_ipv6(const Check& c) {
  const std::string_view v = c.value();
  const char b = c.before(), a = c.after();
  if (is_alnum(b) || b == ':' || b == '_' || is_alnum(a) || a == ':' || a == '_') return false;
  if (a == '.' && is_digit(c.after(1))) return false;
  std::size_t hex = 0, groups = 0;
  bool in_group = false;
  for (char ch : v) {
    if (is_hex(ch)) {
      ++hex;
      if (!in_group) ++groups;
      in_group = true;
    } else {
      in_group = false;
    }
  }
  return groups >= 2 && hex >= 4 && validators::ipv6(v);
}

double v_mac(const Check& c) {
  const std::string_view v = c.value();
  if (!validators::mac_address(v)) return false;
  bool zero = true, ones = true;
  for (char ch : v) {
    if (!is_hex(ch)) continue;
    zero = zero && ch == '0';
    ones = ones && (ch == 'f' || ch == 'F');
  }
  return !zero && !ones;
}

double v_phone(const Check& c) {
  const std::string_view v = c.value();
  const std::string digits = validators::digits_of(v);
  if (digits.size() < 7 || digits.size() > 20) return false;
  // Times and dates are not phone numbers: "2023-10-12 14:30", "12-05-2023".
  if (c.after() == ':' || c.before() == ':') return false;
  // Nor a piece of a longer run of digit groups (a card, an IBAN, an address's octets).
  if (continues_digit_groups(c)) return false;
  {
    // A dotted quad is an IPv4 address (valid or not), never a phone number.
    std::size_t dots = 0;
    bool only = true;
    for (char ch : v) {
      dots += ch == '.';
      only = only && (is_digit(ch) || ch == '.');
    }
    if (only && dots == 3) return false;
  }
  if (inside_iban_shape(c)) return false;
  {
    std::size_t groups = 0, i = 0, end = v.size();
    while (i < v.size() && groups < 3) {
      while (i < v.size() && !is_digit(v[i])) ++i;
      if (i == v.size()) break;
      while (i < v.size() && is_digit(v[i])) ++i;
      ++groups;
      end = i;
    }
    validators::Date date;
    if (groups == 3 && validators::parse_date(v.substr(0, end), date)) return false;
  }
  return validators::phone_number(v, *c.region);
}

double v_generic_secret(const Check& c) {
  const std::string key = lower(c.text.substr(c.match_begin, c.begin - c.match_begin));
  if (key.find("author") != std::string::npos && key.find("authoriz") == std::string::npos) return false;
  bool strong = c.field_context;  // the field name says what the value is
  static constexpr std::array<std::string_view, 13> kStrong{"api_key", "api-key",   "apikey",     "secret",  "password",
                                                            "passwd",  "pwd",       "access_key", "access-key",
                                                            "accesskey", "private_key", "private-key", "credential"};
  for (auto word : kStrong) strong = strong || key.find(word) != std::string::npos;
  return validators::generic_secret(c.value(), strong);
}

double v_db_password(const Check& c) {
  return !validators::placeholder(c.value()) && lower(c.value()) != "password";
}

double v_has_digit(const Check& c) {
  for (char ch : c.value())
    if (is_digit(ch)) return true;
  return false;
}

ValidatorFn validator_for(std::string_view name) {
  static const std::map<std::string_view, ValidatorFn> table{
      {"credit_card", v_credit_card},
      {"iban", v_iban},
      {"us_ssn", v_us_ssn},
      {"us_itin", v_us_itin},
      {"uk_nhs", v_uk_nhs},
      {"uk_nino", v_uk_nino},
      {"ipv4", v_ipv4},
      {"ipv6", v_ipv6},
      {"mac", v_mac},
      {"phone", v_phone},
      {"date_of_birth", v_date_of_birth},
      {"email", v_email},
      {"jwt", v_jwt},
      {"generic_secret", v_generic_secret},
      {"not_placeholder", v_not_placeholder},
      {"db_password", v_db_password},
      {"has_digit", v_has_digit},
  };
  const auto it = table.find(name);
  return it == table.end() ? nullptr : it->second;
}

re2::RE2::Options re2_options() {
  re2::RE2::Options options;
  options.set_encoding(re2::RE2::Options::EncodingLatin1);
  options.set_log_errors(false);
  options.set_max_mem(64 << 20);
  return options;
}

// How a pattern compiles on its own (the per-rule trial), remembered for the process: the shipped
// rules are tried once however many Detectors are built.
struct Trial {
  bool som = false;        // compiles with HS_FLAG_SOM_LEFTMOST
  bool plain = false;      // compiles as it is (exact end offsets)
  bool prefilter = false;  // compiles with HS_FLAG_PREFILTER
  unsigned max_width = UINT_MAX;
  std::string error;
};

bool compiles(const std::string& pattern, unsigned flags, std::string* message = nullptr) {
  hs_database_t* db = nullptr;
  hs_compile_error_t* error = nullptr;
  const bool ok = hs_compile(pattern.c_str(), flags, HS_MODE_BLOCK, nullptr, &db, &error) == HS_SUCCESS;
  if (!ok && message != nullptr) *message = error != nullptr && error->message != nullptr ? error->message : "unknown error";
  hs_free_compile_error(error);
  hs_free_database(db);
  return ok;
}

Trial try_pattern(const std::string& pattern) {
  static std::mutex mutex;
  static std::map<std::string, Trial> cache;
  {
    const std::lock_guard lock(mutex);
    if (auto it = cache.find(pattern); it != cache.end()) return it->second;
  }
  Trial trial;
  hs_expr_info_t* info = nullptr;
  hs_compile_error_t* error = nullptr;
  if (hs_expression_info(pattern.c_str(), 0, &info, &error) == HS_SUCCESS && info != nullptr) {
    trial.max_width = info->max_width;
    free(info);  // NOLINT: Hyperscan's misc allocator is malloc
  }
  hs_free_compile_error(error);
  trial.plain = compiles(pattern, 0, &trial.error);
  // SOM is only worth its cost where the pattern has no bound: with one, RE2 finds the start.
  if (trial.max_width == UINT_MAX) trial.som = compiles(pattern, HS_FLAG_SOM_LEFTMOST);
  if (!trial.plain && !trial.som) trial.prefilter = compiles(pattern, HS_FLAG_PREFILTER, &trial.error);
  const std::lock_guard lock(mutex);
  cache.emplace(pattern, trial);
  return trial;
}

// Whether a pattern may match a newline (so that its matches can span lines): it has a construct
// that takes \n (\s, [\s\S], a negated class, (?s), \n itself, ...). A guess on the text of the
// pattern, erring towards yes.
bool may_cross_lines(std::string_view pattern) {
  for (std::string_view construct : {"\\s", "\\S", "\\W", "\\D", "\\v", "\\n", "\\x0a", "\\x0A", "\\pZ", "[^", "(?s", "[[:space:]]", "\\C"})
    if (pattern.find(construct) != std::string_view::npos) return true;
  return false;
}

// A Hyperscan pattern that finds any of `words` (matched without case), with the boundaries
// has_word() asks for. A word that another, shorter word already finds is left out ("birth" finds
// "birthday", "passport" finds "passport number"): fewer literals, a faster scan.
std::string trigger_pattern(const std::vector<std::string>& words) {
  auto covers = [](const std::string& shorter, const std::string& longer) {
    if (shorter.size() >= longer.size() || longer.compare(0, shorter.size(), shorter) != 0) return false;
    // has_word() needs no word character after a word of three characters or fewer.
    return shorter.size() > 3 || !is_alnum(shorter.back()) || !is_alnum(longer[shorter.size()]);
  };
  std::string out;
  for (const auto& word : words) {
    if (word.empty()) continue;
    bool redundant = false;
    for (const auto& other : words) redundant = redundant || (!other.empty() && covers(other, word));
    if (redundant) continue;
    if (!out.empty()) out += '|';
    // Boundaries as has_word() draws them: letters and digits only (an underscore is a boundary,
    // so US_PASSPORT holds "passport").
    if (is_alnum(word.front())) out += "(?:^|[^A-Za-z0-9])";
    for (char c : word) {
      if (!is_alnum(c) && c != ' ' && c != '_') out += '\\';
      out += c;
    }
    if (word.size() <= 3 && is_alnum(word.back())) out += "(?:[^A-Za-z0-9]|$)";
  }
  return out;
}

struct CompiledAllowlist {
  RuleAllowlist::Target target;
  std::vector<std::unique_ptr<re2::RE2>> regexes;
  std::vector<std::string> stopwords;
};

// How Hyperscan finds a rule's candidates.
enum class Mode {
  Som,        // HS_FLAG_SOM_LEFTMOST: exact [from, to) spans (unbounded patterns)
  End,        // plain: exact end offsets; RE2 finds the start within [to - width, to]
  Prefilter,  // HS_FLAG_PREFILTER: ends of a relaxed pattern; RE2 searches [to - width, to]
  Trigger,    // context_required: Hyperscan finds the context words; RE2 searches after them
  FieldOnly,  // context_required with only field names: RE2 runs when the field name matches
};

struct CompiledRule {
  RuleSpec spec;
  std::unique_ptr<re2::RE2> re;
  int groups = 1;  // capture groups + the whole match
  std::vector<CompiledAllowlist> allowlists;
  ValidatorFn validator = nullptr;
  Mode mode = Mode::End;
  std::string hs_pattern;
  std::size_t width = kMaxWindow;  // widest match: how far before a candidate end RE2 looks
  bool line_window = false;        // unbounded, one-line pattern: RE2 looks back to the line start only
  std::size_t reach = 0;           // Trigger: the longest context word
  std::vector<std::vector<std::string>> field_words;  // context words and field names, as words
  std::vector<std::string> field_joined;              // the same words run together
};

struct ThreadScratch {
  hs_scratch_t* scratch = nullptr;
  std::vector<std::uint64_t> fitted;  // databases (by Detector serial) this scratch is big enough for
  ~ThreadScratch() {
    if (scratch != nullptr) hs_free_scratch(scratch);
  }
};

hs_scratch_t* scratch_for(const hs_database_t* db, std::uint64_t serial) {
  thread_local ThreadScratch local;
  if (std::find(local.fitted.begin(), local.fitted.end(), serial) == local.fitted.end()) {
    if (hs_alloc_scratch(db, &local.scratch) != HS_SUCCESS)
      throw core::Error("cannot allocate Hyperscan scratch space", "the machine may be out of memory");
    if (local.fitted.size() >= 64) local.fitted.clear();  // scratch only grows: re-checking is cheap
    local.fitted.push_back(serial);
  }
  return local.scratch;
}

struct Candidate {
  std::uint32_t rule;
  std::uint64_t from, to;
};

struct Collector {
  std::vector<Candidate>* out;
  const std::vector<std::uint32_t>* rule_of;  // Hyperscan id -> rule
  std::uint64_t base = 0;
  bool full = false;
};

int collect(unsigned int id, unsigned long long from, unsigned long long to, unsigned int, void* context) {
  auto* c = static_cast<Collector*>(context);
  if (c->out->size() >= kMaxCandidates) {
    c->full = true;
    return 1;
  }
  c->out->push_back({(*c->rule_of)[id], c->base + from, c->base + to});
  return 0;
}

int count(unsigned int, unsigned long long, unsigned long long, unsigned int, void* context) {
  ++*static_cast<std::size_t*>(context);
  return 0;
}

std::atomic<std::uint64_t> next_serial{1};

}  // namespace

struct Detector::Impl {
  DetectorOptions options;
  std::vector<CompiledRule> rules;
  std::vector<std::uint32_t> rule_of;  // Hyperscan pattern id -> rule index
  hs_database_t* db = nullptr;
  std::uint64_t serial = next_serial++;
  Stats stats;

  ~Impl() { hs_free_database(db); }

  void compile(std::vector<RuleSpec> specs);
  template <class Fn>
  void hyperscan(std::string_view text, Fn&& each_piece) const;
  std::vector<Detection> scan(std::string_view text, std::string_view field_name) const;
};

void Detector::Impl::compile(std::vector<RuleSpec> specs) {
  for (auto& spec : specs) {
    auto fail = [&](const std::string& reason) -> void {
      throw core::Error(spec.source + ": rule '" + spec.file_id + "': " + reason,
                        "fix or remove the rule; patterns must compile with both Hyperscan and RE2");
    };
    CompiledRule rule;
    rule.re = std::make_unique<re2::RE2>(spec.regex, re2_options());
    if (!rule.re->ok()) fail("regex does not compile: " + rule.re->error());
    rule.groups = rule.re->NumberOfCapturingGroups() + 1;
    // The value pattern must compile with Hyperscan in some mode even when context words trigger
    // the rule: a rule file then means the same whichever way it runs.
    const Trial trial = try_pattern(spec.regex);
    if (!trial.plain && !trial.som && !trial.prefilter) fail("Hyperscan cannot compile the regex: " + trial.error);
    const bool bounded = spec.max_width > 0 || trial.max_width != UINT_MAX;
    if (spec.max_width > 0) {
      rule.width = std::min(spec.max_width, kMaxWindow);
    } else if (trial.max_width != UINT_MAX) {
      rule.width = std::min<std::size_t>(trial.max_width, kMaxWindow);
    } else if (may_cross_lines(spec.regex)) {
      rule.width = kCrossLineWindow;  // a PEM block, a YAML secret over two lines
    } else {
      rule.width = kLineWindow;
      rule.line_window = true;
    }
    if (spec.context_required) {
      rule.hs_pattern = trigger_pattern(spec.context);
      rule.mode = rule.hs_pattern.empty() ? Mode::FieldOnly : Mode::Trigger;
      for (const auto& word : spec.context) rule.reach = std::max(rule.reach, word.size());
    } else {
      rule.hs_pattern = spec.regex;
      if (trial.plain && (bounded || !trial.som)) rule.mode = Mode::End;
      else if (trial.som) rule.mode = Mode::Som;
      else rule.mode = Mode::Prefilter;
    }
    if (!spec.validator.empty()) {
      rule.validator = validator_for(spec.validator);
      if (rule.validator == nullptr) fail("unknown validator '" + spec.validator + "'");
    }
    for (const auto& list : spec.allowlists) {
      CompiledAllowlist compiled{list.target, {}, list.stopwords};
      for (const auto& regex : list.regexes) {
        auto re = std::make_unique<re2::RE2>(regex, re2_options());
        if (!re->ok()) fail("allowlist regex '" + regex + "' does not compile: " + re->error());
        compiled.regexes.push_back(std::move(re));
      }
      rule.allowlists.push_back(std::move(compiled));
    }
    for (const auto& word : spec.context) rule.field_words.push_back(words_of(word));
    for (const auto& word : spec.field_names) rule.field_words.push_back(words_of(word));
    for (const auto& words : rule.field_words) rule.field_joined.push_back(joined(words));
    rule.spec = std::move(spec);
    rules.push_back(std::move(rule));
  }
  stats.rules = rules.size();

  std::vector<const char*> patterns;
  std::vector<unsigned> flags, ids;
  for (std::size_t i = 0; i < rules.size(); ++i) {
    if (rules[i].mode == Mode::FieldOnly) continue;
    patterns.push_back(rules[i].hs_pattern.c_str());
    ids.push_back(static_cast<unsigned>(rule_of.size()));
    rule_of.push_back(static_cast<std::uint32_t>(i));
  }
  // Patterns that compile alone may not all fit together: the one Hyperscan names steps down
  // (SOM or plain to prefilter) until the whole set compiles.
  for (std::size_t attempt = 0; !patterns.empty(); ++attempt) {
    flags.clear();
    for (const std::uint32_t index : rule_of) {
      switch (rules[index].mode) {
        case Mode::Som: flags.push_back(HS_FLAG_SOM_LEFTMOST); break;
        case Mode::Prefilter: flags.push_back(HS_FLAG_PREFILTER); break;
        case Mode::Trigger: flags.push_back(HS_FLAG_CASELESS); break;
        default: flags.push_back(0); break;
      }
    }
    hs_compile_error_t* error = nullptr;
    if (hs_compile_multi(patterns.data(), flags.data(), ids.data(), static_cast<unsigned>(patterns.size()), HS_MODE_BLOCK,
                         nullptr, &db, &error) == HS_SUCCESS)
      break;
    const int which = error != nullptr ? error->expression : -1;
    const std::string message = error != nullptr && error->message != nullptr ? error->message : "unknown error";
    hs_free_compile_error(error);
    if (which >= 0 && static_cast<std::size_t>(which) < rule_of.size()) {
      CompiledRule& rule = rules[rule_of[static_cast<std::size_t>(which)]];
      if ((rule.mode == Mode::Som || rule.mode == Mode::End) && attempt < 2 * rules.size() &&
          compiles(rule.spec.regex, HS_FLAG_PREFILTER)) {
        rule.mode = Mode::Prefilter;
        continue;
      }
      throw core::Error(rule.spec.source + ": rule '" + rule.spec.file_id + "': Hyperscan cannot compile the regex: " + message,
                        "fix or remove the rule");
    }
    throw core::Error("cannot compile the detector's " + std::to_string(rules.size()) + " rules together: " + message,
                      "load fewer rule files");
  }
  for (const auto& rule : rules) {
    switch (rule.mode) {
      case Mode::Som: ++stats.som; break;
      case Mode::End: ++stats.plain; break;
      case Mode::Prefilter: ++stats.prefilter; break;
      default: ++stats.triggered; break;
    }
  }
}

template <class Fn>
void Detector::Impl::hyperscan(std::string_view text, Fn&& each_piece) const {
  hs_scratch_t* scratch = scratch_for(db, serial);
  std::size_t base = 0;
  while (true) {
    const std::size_t length = std::min(text.size() - base, kChunk);
    if (!each_piece(scratch, text.data() + base, static_cast<unsigned>(length), base)) return;
    if (base + length >= text.size()) return;
    base += length - kMaxWindow;
  }
}

std::vector<Detection> Detector::Impl::scan(std::string_view text, std::string_view field_name) const {
  std::vector<Detection> found;
  if (text.empty()) return found;

  // 1. Candidates.
  std::vector<Candidate> candidates;
  if (db != nullptr) {
    Collector collector{&candidates, &rule_of};
    hyperscan(text, [&](hs_scratch_t* scratch, const char* data, unsigned length, std::size_t base) {
      collector.base = base;
      const hs_error_t rc = hs_scan(db, data, length, 0, scratch, collect, &collector);
      if (rc != HS_SUCCESS && rc != HS_SCAN_TERMINATED)
        throw core::Error("Hyperscan scan failed (" + std::to_string(rc) + ")");
      return !collector.full;
    });
  }
  std::sort(candidates.begin(), candidates.end(), [](const Candidate& a, const Candidate& b) {
    if (a.rule != b.rule) return a.rule < b.rule;
    if (a.from != b.from) return a.from < b.from;
    return a.to > b.to;
  });
  if (text.size() > kChunk) {  // pieces overlap: the same candidate may come twice
    candidates.erase(std::unique(candidates.begin(), candidates.end(),
                                 [](const Candidate& a, const Candidate& b) {
                                   return a.rule == b.rule && a.from == b.from && a.to == b.to;
                                 }),
                     candidates.end());
  }

  // The field name as words, once.
  const std::vector<std::string> field_words = words_of(field_name);
  const std::string field_joined = joined(field_words);
  auto field_matches = [&](const CompiledRule& rule) {
    if (field_words.empty()) return false;
    for (std::size_t w = 0; w < rule.field_words.size(); ++w) {
      const auto& words = rule.field_words[w];
      if (words.empty()) continue;
      const std::string& whole = rule.field_joined[w];
      if (whole == field_joined) return true;
      if (whole.size() >= 5 && field_joined.find(whole) != std::string::npos) return true;
      if (words.size() <= field_words.size()) {
        for (std::size_t i = 0; i + words.size() <= field_words.size(); ++i)
          if (std::equal(words.begin(), words.end(), field_words.begin() + static_cast<std::ptrdiff_t>(i))) return true;
      }
    }
    return false;
  };

  std::size_t budget = 8 * text.size() + (1u << 20);  // bytes RE2 may read in this call
  auto spend = [&](std::size_t bytes) {
    if (bytes > budget) return false;
    budget -= bytes;
    return true;
  };
  std::string window;  // lower-cased context window, reused
  std::vector<re2::StringPiece> groups;
  const std::size_t cw = options.context_window;

  // 3. One confirmed match: the checks and the score; false when it does not stand.
  auto evaluate = [&](const CompiledRule& rule, bool field_context, std::size_t match_begin, std::size_t match_end) -> bool {
    const RuleSpec& spec = rule.spec;
    std::size_t begin = match_begin, end = match_end;
    auto take = [&](const re2::StringPiece& g) {
      begin = static_cast<std::size_t>(g.data() - text.data());
      end = begin + g.size();
    };
    if (spec.secret_group > 0) {
      const auto& g = groups[static_cast<std::size_t>(spec.secret_group)];
      if (g.data() == nullptr || g.empty()) return false;
      take(g);
    } else {
      for (std::size_t i = 1; i < groups.size(); ++i)
        if (groups[i].data() != nullptr && !groups[i].empty()) {
          take(groups[i]);
          break;
        }
    }
    if (begin >= end) return false;
    const std::string_view value = text.substr(begin, end - begin);
    if (spec.entropy > 0 && validators::shannon_entropy(value) < spec.entropy) return false;

    // The context window: cw bytes before the match, not reaching back past the start of its line
    // (a word on the line before belongs to another record), and a bounded part of the match.
    std::size_t from = match_begin > cw ? match_begin - cw : 0;
    if (match_begin > from) {
      const void* nl = memrchr(text.data() + from, '\n', match_begin - from);
      if (nl != nullptr) from = static_cast<std::size_t>(static_cast<const char*>(nl) - text.data()) + 1;
    }
    const std::size_t to = std::min(match_end, match_begin + kMaxInside);
    window.assign(text.data() + from, to - from);
    for (auto& c : window) c = to_lower(c);
    if (!spec.keywords.empty()) {
      bool any = false;
      for (const auto& keyword : spec.keywords) any = any || window.find(keyword) != std::string::npos;
      if (!any) return false;
    }
    for (const auto& list : rule.allowlists) {
      if (!list.stopwords.empty()) {
        const std::string v = lower(value);
        for (const auto& word : list.stopwords)
          if (v.find(word) != std::string::npos) return false;
      }
      if (list.regexes.empty()) continue;
      std::string_view target = value;
      if (list.target == RuleAllowlist::Target::Match) {
        target = text.substr(match_begin, match_end - match_begin);
      } else if (list.target == RuleAllowlist::Target::Line) {
        std::size_t a = match_begin, b = match_end;
        while (a > 0 && text[a - 1] != '\n' && match_begin - a < 4096) --a;
        while (b < text.size() && text[b] != '\n' && b - match_end < 4096) ++b;
        target = text.substr(a, b - a);
      }
      for (const auto& re : list.regexes)
        if (re2::RE2::PartialMatch(target, *re)) return false;
    }
    double confidence = 1;
    if (rule.validator != nullptr) {
      const Check check{text, begin, end, match_begin, match_end, &options.default_region, field_context};
      confidence = rule.validator(check);
      if (!(confidence > 0)) return false;
    }
    bool context = field_context;
    for (std::size_t i = 0; !context && i < spec.context.size(); ++i) context = has_word(window, spec.context[i]);
    double score = spec.score;
    if (context) {
      score = std::max(score, spec.context_score);
    } else {
      if (spec.context_required) return false;
      bool negative = false;
      const std::string_view before = std::string_view(window).substr(0, match_begin - from);
      for (std::size_t i = 0; !negative && i < spec.negative_context.size(); ++i)
        negative = has_word(before, spec.negative_context[i]);
      if (negative) score *= 0.5;
    }
    score *= confidence;
    if (score < options.min_score) return false;
    found.push_back({spec.entity, spec.id, begin, end, score});
    return true;
  };

  // RE2 over windows (sorted, merged): every match found, left to right. When one does not stand,
  // the shorter spans from the same start that end where Hyperscan saw a match end (`ends`, exact
  // in plain mode) are tried, then the search goes on one byte further.
  auto search_windows = [&](const CompiledRule& rule, bool field_context, const std::vector<std::pair<std::size_t, std::size_t>>& windows,
                            const std::vector<std::uint64_t>* ends) {
    for (const auto& [a, b] : windows) {
      std::size_t pos = a;
      while (pos <= b && budget > 0) {
        // RE2 reads up to the end of the match it finds, or to the window's end when there is none.
        if (!rule.re->Match(text, pos, b, re2::RE2::UNANCHORED, groups.data(), rule.groups)) {
          budget -= std::min(budget, b - pos);
          break;
        }
        const std::size_t mb = static_cast<std::size_t>(groups[0].data() - text.data());
        std::size_t me = mb + groups[0].size();
        budget -= std::min(budget, me - pos + 1);
        bool ok = me > mb && evaluate(rule, field_context, mb, me);
        if (!ok && ends != nullptr && me > mb) {
          auto it = std::lower_bound(ends->begin(), ends->end(), static_cast<std::uint64_t>(me));
          while (it != ends->begin() && !ok) {
            --it;
            if (*it <= mb) break;
            const std::size_t e = *it;
            if (spend(e - mb) && rule.re->Match(text, mb, e, re2::RE2::ANCHOR_BOTH, groups.data(), rule.groups) &&
                evaluate(rule, field_context, mb, e)) {
              ok = true;
              me = e;
            }
          }
        }
        pos = ok ? std::max(me, mb + 1) : mb + 1;
      }
    }
  };

  // 2. Confirmation, rule by rule.
  std::vector<std::pair<std::size_t, std::size_t>> windows;
  std::vector<std::uint64_t> ends;
  std::size_t next = 0;
  for (std::uint32_t index = 0; index < rules.size(); ++index) {
    const CompiledRule& rule = rules[index];
    const std::size_t first = next;
    while (next < candidates.size() && candidates[next].rule == index) ++next;
    const bool field_context = field_matches(rule);
    const bool gated = rule.mode == Mode::Trigger || rule.mode == Mode::FieldOnly;
    if (first == next && !(gated && field_context)) continue;
    groups.assign(static_cast<std::size_t>(rule.groups), re2::StringPiece());
    windows.clear();
    ends.clear();
    if (gated) {
      if (field_context) {
        windows.emplace_back(0, text.size());  // the field name is the context: the whole field
      } else {
        // After each context word: values starting within the context window, whole.
        for (std::size_t k = first; k < next; ++k) ends.push_back(candidates[k].to);
        std::sort(ends.begin(), ends.end());
        for (const std::uint64_t to : ends) {
          const std::size_t a = to > rule.reach + rule.width ? to - rule.reach - rule.width : 0;
          const std::size_t b = std::min<std::size_t>(text.size(), to + cw + rule.width);
          if (!windows.empty() && a <= windows.back().second) windows.back().second = std::max(windows.back().second, b);
          else windows.emplace_back(a, b);
        }
      }
      search_windows(rule, field_context, windows, nullptr);
    } else if (rule.mode == Mode::Som) {
      std::size_t last_end = 0;
      for (std::size_t k = first; k < next;) {
        const std::uint64_t from = candidates[k].from;
        std::size_t group_end = k;
        while (group_end < next && candidates[group_end].from == from) ++group_end;
        if (from >= last_end) {
          for (std::size_t m = k; m < group_end; ++m) {  // the longest span first
            const std::size_t to = candidates[m].to;
            if (to - from > kMaxWindow || !spend(to - from)) continue;
            if (!rule.re->Match(text, from, to, re2::RE2::ANCHOR_BOTH, groups.data(), rule.groups)) continue;
            if (evaluate(rule, field_context, from, to)) {
              last_end = to;
              break;
            }
          }
        }
        k = group_end;
      }
    } else {
      for (std::size_t k = first; k < next; ++k) ends.push_back(candidates[k].to);
      std::sort(ends.begin(), ends.end());
      ends.erase(std::unique(ends.begin(), ends.end()), ends.end());
      // Plain mode: the ends are exact. Prefilter mode: the relaxed pattern may end a little before
      // the real match (a dropped trailing assertion), so the window reaches kPrefilterSlack further.
      const std::size_t slack = rule.mode == Mode::Prefilter ? kPrefilterSlack : 0;
      for (const std::uint64_t to : ends) {
        std::size_t a = to > rule.width ? to - rule.width : 0;
        if (rule.line_window && to > a + 1) {  // (the match may end with the newline itself)
          const void* nl = memrchr(text.data() + a, '\n', to - 1 - a);
          if (nl != nullptr) a = static_cast<std::size_t>(static_cast<const char*>(nl) - text.data()) + 1;
        }
        const std::size_t b = std::min<std::size_t>(text.size(), to + slack);
        if (!windows.empty() && a <= windows.back().second) windows.back().second = std::max(windows.back().second, b);
        else windows.emplace_back(a, b);
      }
      search_windows(rule, field_context, windows, rule.mode == Mode::End ? &ends : nullptr);
    }
  }

  // 4. Overlaps: the higher score, then the longer span, then the earlier start, then the first rule.
  std::vector<std::size_t> order(found.size());
  for (std::size_t k = 0; k < order.size(); ++k) order[k] = k;
  std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
    const Detection& a = found[x];
    const Detection& b = found[y];
    if (a.score != b.score) return a.score > b.score;
    if (a.end - a.begin != b.end - b.begin) return a.end - a.begin > b.end - b.begin;
    return a.begin < b.begin;
  });
  std::map<std::size_t, std::size_t> taken;  // begin -> end of kept detections
  std::vector<Detection> kept;
  for (std::size_t k : order) {
    const Detection& d = found[k];
    auto after = taken.lower_bound(d.begin);
    if (after != taken.end() && after->first < d.end) continue;
    if (after != taken.begin() && std::prev(after)->second > d.begin) continue;
    taken.emplace(d.begin, d.end);
    kept.push_back(d);
    if (kept.size() >= kMaxCandidates) break;
  }
  std::sort(kept.begin(), kept.end(), [](const Detection& a, const Detection& b) { return a.begin < b.begin; });
  return kept;
}

Detector::Detector(DetectorOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->options = std::move(options);
  const DetectorOptions& opts = impl_->options;
  if (!(opts.min_score >= 0 && opts.min_score <= 1))
    throw core::Error("min_score must be between 0 and 1", "e.g. 0.5 (the default)");
  if (!validators::phone_region_supported(opts.default_region))
    throw core::Error("unknown phone region '" + opts.default_region + "'", "use a two-letter region code such as US, GB or DE");

  std::vector<RuleFile> files;
  files.push_back(parse_rule_file(data::pii_rules, "pii_rules.toml"));
  if (opts.secrets) files.push_back(parse_rule_file(data::secret_rules, "secret_rules.toml"));
  for (const auto& path : opts.rule_files) files.push_back(load_rule_file(path));

  // Later files replace rules of the same id (a user file may override a shipped rule).
  std::vector<RuleSpec> specs;
  std::map<std::string, std::size_t> by_id;
  std::set<std::string> known_entities{"SECRET"};
  for (auto& file : files) {
    impl_->stats.skipped += file.skipped.size();
    for (auto& spec : file.rules) {
      known_entities.insert(spec.entity);
      if (auto it = by_id.find(spec.id); it != by_id.end()) {
        specs[it->second] = std::move(spec);
        ++impl_->stats.replaced;
      } else {
        by_id.emplace(spec.id, specs.size());
        specs.push_back(std::move(spec));
      }
    }
  }
  for (const auto& entity : opts.entities) {
    if (known_entities.count(entity) == 0) {
      std::string list;
      for (const auto& e : known_entities) list += (list.empty() ? "" : ", ") + e;
      throw core::Error("unknown entity type '" + entity + "'", "known entity types: " + list);
    }
  }
  std::vector<RuleSpec> selected;
  for (auto& spec : specs) {
    if (!opts.secrets && spec.entity == "SECRET") continue;
    if (!opts.entities.empty() && std::find(opts.entities.begin(), opts.entities.end(), spec.entity) == opts.entities.end())
      continue;
    selected.push_back(std::move(spec));
  }
  impl_->compile(std::move(selected));
}

Detector::~Detector() = default;

std::vector<Detection> Detector::scan(std::string_view text) const { return impl_->scan(text, {}); }

std::vector<Detection> Detector::scan(std::string_view text, std::string_view field_name) const {
  return impl_->scan(text, field_name);
}

std::vector<std::string> Detector::entity_types() const {
  std::set<std::string> types;
  for (const auto& rule : impl_->rules) types.insert(rule.spec.entity);
  return {types.begin(), types.end()};
}

std::size_t Detector::rule_count() const { return impl_->rules.size(); }

Detector::Stats Detector::stats() const { return impl_->stats; }

std::size_t Detector::count_candidates(std::string_view text) const {
  std::size_t n = 0;
  if (impl_->db == nullptr || text.empty()) return n;
  impl_->hyperscan(text, [&](hs_scratch_t* scratch, const char* data, unsigned length, std::size_t) {
    if (hs_scan(impl_->db, data, length, 0, scratch, count, &n) != HS_SUCCESS)
      throw core::Error("Hyperscan scan failed");
    return true;
  });
  return n;
}

RedactAction RedactionPolicy::action_for(std::string_view entity_type) const {
  for (const auto& [entity, action] : per_entity)
    if (entity == entity_type) return action;
  return default_action;
}

namespace {
std::string hex12(const unsigned char* digest) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (int i = 0; i < 6; ++i) {
    out.push_back(kHex[digest[i] >> 4]);
    out.push_back(kHex[digest[i] & 15]);
  }
  return out;
}

std::string digest12(std::string_view value, const std::string& key) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int length = 0;
  const auto* data = reinterpret_cast<const unsigned char*>(value.data());
  if (key.empty()) {
    SHA256(data, value.size(), md);
  } else if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), data, value.size(), md, &length) == nullptr) {
    throw core::Error("HMAC-SHA-256 failed", "check the OpenSSL installation");
  }
  return hex12(md);
}
}  // namespace

std::string redact(std::string_view text, const std::vector<Detection>& detections, const RedactionPolicy& policy) {
  // Spans in the order of their starts, clamped to the text, widened to whole words (never half an
  // identifier left), and merged where they overlap (the earliest-starting detection names the
  // merged span).
  struct Span {
    std::size_t begin, end;
    const Detection* detection;
  };
  std::vector<const Detection*> order;
  for (const auto& d : detections) order.push_back(&d);
  std::stable_sort(order.begin(), order.end(), [](const Detection* a, const Detection* b) { return a->begin < b->begin; });
  std::vector<Span> spans;
  for (const Detection* d : order) {
    std::size_t begin = std::min(d->begin, text.size()), end = std::min(d->end, text.size());
    if (begin >= end) continue;
    while (begin > 0 && is_alnum(text[begin - 1]) && is_alnum(text[begin])) --begin;
    while (end < text.size() && is_alnum(text[end]) && is_alnum(text[end - 1])) ++end;
    spans.push_back({begin, end, d});
  }
  std::stable_sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) { return a.begin < b.begin; });
  std::vector<Span> merged;
  for (const auto& s : spans) {
    if (!merged.empty() && s.begin < merged.back().end) merged.back().end = std::max(merged.back().end, s.end);
    else merged.push_back(s);
  }
  std::string out;
  out.reserve(text.size());
  std::size_t pos = 0;
  for (const auto& s : merged) {
    out.append(text.substr(pos, s.begin - pos));
    const std::string& entity = s.detection->entity_type;
    switch (policy.action_for(entity)) {
      case RedactAction::Mask:
        out += "<" + entity + ">";
        break;
      case RedactAction::Hash:
        out += "<" + entity + ":" + digest12(text.substr(s.begin, s.end - s.begin), policy.hash_key) + ">";
        break;
      case RedactAction::Drop:
        break;
    }
    pos = s.end;
  }
  out.append(text.substr(pos));
  return out;
}

std::string masked_sample(std::string_view value, std::string_view entity_type) {
  std::string out;
  if (entity_type == "SECRET") {
    // The first four characters of a long secret, the rest as stars (at most 16).
    const std::size_t keep = value.size() > 8 ? 4 : 0;
    for (std::size_t i = 0; i < keep; ++i) {
      const auto c = static_cast<unsigned char>(value[i]);
      out.push_back(c >= 0x21 && c < 0x7f ? static_cast<char>(c) : '*');
    }
    out.append(std::min<std::size_t>(value.size() - keep, 16), '*');
    return out;
  }
  // Letters and digits are the identifier; the last four survive when there are more than eight.
  std::size_t alnum = 0;
  for (char c : value) alnum += is_alnum(c) ? 1 : 0;
  const std::size_t keep_from = alnum > 8 ? alnum - 4 : alnum;  // index (among alnums) of the first kept
  std::size_t seen = 0;
  for (char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (is_alnum(c)) {
      out.push_back(seen >= keep_from ? c : '*');
      ++seen;
    } else if (u >= 0x20 && u < 0x7f) {
      out.push_back(c);  // separators show the shape: ***-**-6789
    } else if (c == '\n' || c == '\t' || c == '\r') {
      out.push_back(' ');
    } else {
      out.push_back('*');
    }
  }
  return out;
}

}  // namespace aegis::privacy
