#include "aegis/privacy/rule_file.h"

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include <re2/re2.h>
#include <toml++/toml.h>

#include "aegis/core/error.h"

namespace aegis::privacy {
namespace {

constexpr const char* kHint =
    "rule files are TOML in gitleaks' shape: [[rules]] with id, regex (RE2 syntax) and optionally description, "
    "secretGroup, entropy, keywords, entity, validator, context, context_required, score, field_names";

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// Where a node sits in the file, for messages ("line 12").
std::string where(const toml::node& node) {
  const auto& begin = node.source().begin;
  if (begin.line == 0) return {};
  return " (line " + std::to_string(begin.line) + ")";
}

struct Context {
  const std::string& source;
  std::string rule_id;

  [[noreturn]] void fail(const std::string& reason) const {
    std::string what = source + ": ";
    if (!rule_id.empty()) what += "rule '" + rule_id + "': ";
    throw core::Error(what + reason, kHint);
  }

  std::string string_field(const toml::table& t, std::string_view key, const std::string& fallback = {}) const {
    const toml::node* node = t.get(key);
    if (node == nullptr) return fallback;
    if (const auto* s = node->as_string()) return s->get();
    fail(std::string(key) + " must be a string" + where(*node));
  }

  double number_field(const toml::table& t, std::string_view key, double fallback) const {
    const toml::node* node = t.get(key);
    if (node == nullptr) return fallback;
    if (const auto* i = node->as_integer()) return static_cast<double>(i->get());
    if (const auto* f = node->as_floating_point()) return f->get();
    fail(std::string(key) + " must be a number" + where(*node));
  }

  bool bool_field(const toml::table& t, std::string_view key, bool fallback) const {
    const toml::node* node = t.get(key);
    if (node == nullptr) return fallback;
    if (const auto* b = node->as_boolean()) return b->get();
    fail(std::string(key) + " must be true or false" + where(*node));
  }

  std::vector<std::string> strings_field(const toml::table& t, std::string_view key, bool to_lower) const {
    std::vector<std::string> out;
    const toml::node* node = t.get(key);
    if (node == nullptr) return out;
    const toml::array* array = node->as_array();
    if (array == nullptr) fail(std::string(key) + " must be an array of strings" + where(*node));
    for (const toml::node& element : *array) {
      const auto* s = element.as_string();
      if (s == nullptr) fail(std::string(key) + " must be an array of strings" + where(element));
      out.push_back(to_lower ? lower(s->get()) : s->get());
    }
    return out;
  }
};

re2::RE2::Options re2_options() {
  re2::RE2::Options options;
  options.set_encoding(re2::RE2::Options::EncodingLatin1);  // bytes, as Hyperscan sees them
  options.set_log_errors(false);
  options.set_max_mem(64 << 20);
  return options;
}

void check_regex(const Context& ctx, const std::string& pattern, const std::string& what) {
  const re2::RE2 re(pattern, re2_options());
  if (!re.ok()) ctx.fail(what + " does not compile: " + re.error());
}

// One allowlist table; returns false when it can never hold on text (it needs a path or a commit).
bool parse_allowlist(const Context& ctx, const toml::table& t, RuleAllowlist& out) {
  const std::string condition = lower(ctx.string_field(t, "condition", "or"));
  if (condition != "or" && condition != "and") ctx.fail("allowlist condition must be OR or AND" + where(t));
  const auto paths = ctx.strings_field(t, "paths", false);
  const auto commits = ctx.strings_field(t, "commits", false);
  out.regexes = ctx.strings_field(t, "regexes", false);
  out.stopwords = ctx.strings_field(t, "stopwords", true);
  const std::string target = lower(ctx.string_field(t, "regexTarget", "secret"));
  if (target == "secret") out.target = RuleAllowlist::Target::Secret;
  else if (target == "match") out.target = RuleAllowlist::Target::Match;
  else if (target == "line") out.target = RuleAllowlist::Target::Line;
  else ctx.fail("allowlist regexTarget must be secret, match or line, not '" + target + "'" + where(t));
  for (const auto& regex : out.regexes) check_regex(ctx, regex, "allowlist regex '" + regex + "'");
  if (condition == "and" && (!paths.empty() || !commits.empty())) return false;
  return !out.regexes.empty() || !out.stopwords.empty();
}

// `[allowlist]` (a table) or `[[allowlists]]` (an array of tables) under `t`.
std::vector<RuleAllowlist> parse_allowlists(const Context& ctx, const toml::table& t) {
  std::vector<RuleAllowlist> out;
  if (const toml::node* node = t.get("allowlist")) {
    const toml::table* table = node->as_table();
    if (table == nullptr) ctx.fail("allowlist must be a table" + where(*node));
    RuleAllowlist list;
    if (parse_allowlist(ctx, *table, list)) out.push_back(std::move(list));
  }
  if (const toml::node* node = t.get("allowlists")) {
    const toml::array* array = node->as_array();
    if (array == nullptr) ctx.fail("allowlists must be an array of tables" + where(*node));
    for (const toml::node& element : *array) {
      const toml::table* table = element.as_table();
      if (table == nullptr) ctx.fail("allowlists must be an array of tables" + where(element));
      RuleAllowlist list;
      if (parse_allowlist(ctx, *table, list)) out.push_back(std::move(list));
    }
  }
  return out;
}

bool entity_name_ok(std::string_view name) {
  if (name.empty() || name.size() > 64 || !(name[0] >= 'A' && name[0] <= 'Z')) return false;
  for (char c : name)
    if (!((c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_')) return false;
  return true;
}

}  // namespace

const std::vector<std::string_view>& validator_names() {
  static const std::vector<std::string_view> names{
      "credit_card", "iban",  "us_ssn",   "us_itin",       "uk_nhs", "uk_nino",        "ipv4",
      "ipv6",        "mac",   "phone",    "date_of_birth", "email",  "jwt",            "generic_secret",
      "not_placeholder", "db_password", "has_digit"};
  return names;
}

RuleFile parse_rule_file(std::string_view text, const std::string& source) {
  Context ctx{source, {}};
  toml::table root;
  try {
    root = toml::parse(text, source);
  } catch (const toml::parse_error& e) {
    const auto& begin = e.source().begin;
    ctx.fail("TOML syntax error at line " + std::to_string(begin.line) + ", column " + std::to_string(begin.column) + ": " +
             std::string(e.description()));
  }
  RuleFile file;
  file.source = source;
  const std::vector<RuleAllowlist> global = parse_allowlists(ctx, root);
  const toml::node* rules_node = root.get("rules");
  if (rules_node == nullptr) return file;  // an empty file: no rules
  const toml::array* rules = rules_node->as_array();
  if (rules == nullptr) ctx.fail("rules must be an array of tables ([[rules]])" + where(*rules_node));

  std::set<std::string> ids;
  std::size_t index = 0;
  for (const toml::node& element : *rules) {
    ++index;
    const toml::table* t = element.as_table();
    ctx.rule_id.clear();
    if (t == nullptr) ctx.fail("rules must be an array of tables ([[rules]])" + where(element));
    std::string id = ctx.string_field(*t, "id");
    if (id.empty()) ctx.fail("rule #" + std::to_string(index) + " has no id" + where(*t));
    ctx.rule_id = id;
    if (!ids.insert(id).second) ctx.fail("duplicate id" + where(*t));

    RuleSpec rule;
    rule.source = source;
    rule.file_id = id;
    rule.description = ctx.string_field(*t, "description");
    rule.entity = ctx.string_field(*t, "entity", "SECRET");
    if (!entity_name_ok(rule.entity)) ctx.fail("entity '" + rule.entity + "' must be upper case letters, digits and _");
    const bool secret = rule.entity == "SECRET";
    if (id.rfind("pii.", 0) == 0 || id.rfind("secret.", 0) == 0) rule.id = id;
    else rule.id = (secret ? "secret." : "pii.") + id;

    rule.regex = ctx.string_field(*t, "regex");
    if (rule.regex.empty()) {
      if (t->get("path") != nullptr) {  // gitleaks: a rule on file names only
        file.skipped.push_back(rule.id);
        continue;
      }
      ctx.fail("no regex" + where(*t));
    }
    const double group = ctx.number_field(*t, "secretGroup", 0);
    if (group < 0 || group > 99 || group != static_cast<int>(group)) ctx.fail("secretGroup must be a whole number 0..99");
    rule.secret_group = static_cast<int>(group);
    rule.entropy = ctx.number_field(*t, "entropy", 0);
    if (rule.entropy < 0 || rule.entropy > 8) ctx.fail("entropy must be between 0 and 8 bits per byte");
    rule.keywords = ctx.strings_field(*t, "keywords", true);
    rule.validator = ctx.string_field(*t, "validator");
    if (!rule.validator.empty()) {
      const auto& names = validator_names();
      if (std::find(names.begin(), names.end(), rule.validator) == names.end()) {
        std::string known;
        for (auto name : names) known += (known.empty() ? "" : ", ") + std::string(name);
        ctx.fail("unknown validator '" + rule.validator + "' (known: " + known + ")");
      }
    }
    rule.context = ctx.strings_field(*t, "context", true);
    rule.negative_context = ctx.strings_field(*t, "negative_context", true);
    rule.context_required = ctx.bool_field(*t, "context_required", false);
    rule.field_names = ctx.strings_field(*t, "field_names", true);
    rule.score = ctx.number_field(*t, "score", secret ? 0.9 : 0.6);
    rule.context_score = ctx.number_field(*t, "context_score", std::max(rule.score, 0.9));
    if (rule.score < 0 || rule.score > 1) ctx.fail("score must be between 0 and 1");
    if (rule.context_score < 0 || rule.context_score > 1) ctx.fail("context_score must be between 0 and 1");
    if (rule.context_required && rule.context.empty() && rule.field_names.empty())
      ctx.fail("context_required needs context words or field_names");
    const double width = ctx.number_field(*t, "max_width", 0);
    if (width < 0 || width > (1 << 20)) ctx.fail("max_width must be between 0 and 1048576");
    rule.max_width = static_cast<std::size_t>(width);

    const re2::RE2 re(rule.regex, re2_options());
    if (!re.ok()) ctx.fail("regex does not compile: " + re.error());
    if (rule.secret_group > re.NumberOfCapturingGroups())
      ctx.fail("secretGroup " + std::to_string(rule.secret_group) + " but the regex has " +
               std::to_string(re.NumberOfCapturingGroups()) + " capture groups");
    rule.allowlists = parse_allowlists(ctx, *t);
    rule.allowlists.insert(rule.allowlists.end(), global.begin(), global.end());
    file.rules.push_back(std::move(rule));
  }
  return file;
}

RuleFile load_rule_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::Error("cannot read rule file " + path, "check the path given as a rule file");
  std::ostringstream buffer;
  buffer << in.rdbuf();
  if (in.bad()) throw core::Error("cannot read rule file " + path, "check the path given as a rule file");
  return parse_rule_file(buffer.str(), path);
}

}  // namespace aegis::privacy
