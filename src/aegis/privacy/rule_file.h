// Rule files for the Detector, in gitleaks' TOML shape: `[[rules]]` tables with id, description,
// regex, secretGroup, entropy and keywords, plus the fields our PII rules need (all optional):
//
//   entity            entity type reported (default SECRET)
//   validator         a name from validator_names(): credit_card, iban, us_ssn, phone, ...
//   context           words that make the match more likely when they occur in the context window
//                     before it (or inside it), case-insensitive, or in the field name
//   negative_context  words that make it less likely (the score is halved): "version" before an IPv4
//   context_required  no detection without context (a 9-digit number is a passport only near "passport")
//   score             the score without context (default 0.9 for SECRET, 0.6 otherwise)
//   context_score     the score with context (default: the higher of score and 0.9)
//   field_names       column names that count as context besides the `context` words
//   max_width         the widest match in bytes, for rules whose pattern is unbounded (the RE2 window)
//
// gitleaks' own config loads as it is: rules without `regex` (path-only rules) are skipped and
// counted; allowlists (`[rules.allowlist]`, `[[rules.allowlists]]`, the global `[allowlist]` /
// `[[allowlists]]`) apply their `regexes` (regexTarget secret, match or line) and `stopwords`;
// allowlists that also need a path or commit to hold (condition = "AND") cannot hold on text and
// are ignored, as are tags, path, paths, commits, title, minVersion and [extend].
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::privacy {

struct RuleAllowlist {
  enum class Target { Secret, Match, Line };
  Target target = Target::Secret;
  std::vector<std::string> regexes;    // RE2 syntax; a hit on the target drops the detection
  std::vector<std::string> stopwords;  // lower case; a secret containing one is dropped
};

struct RuleSpec {
  std::string id;           // "pii.credit-card", "secret.github-pat": a file's own ids get the prefix
                            // of their entity ("secret." for SECRET, "pii." otherwise)
  std::string file_id;      // the id as the file writes it, for messages
  std::string description;
  std::string entity = "SECRET";
  std::string regex;
  int secret_group = 0;  // 0: the first non-empty capture group, or the whole match when there is none
  double entropy = 0;    // minimum Shannon entropy (bits per byte) of the secret
  std::vector<std::string> keywords;  // lower case; one must occur in the match or the context window
  std::string validator;
  std::vector<std::string> context;           // lower case
  std::vector<std::string> negative_context;  // lower case
  bool context_required = false;
  double score = 0.9;
  double context_score = 0.9;
  std::vector<std::string> field_names;  // lower case
  std::size_t max_width = 0;             // 0: from the pattern
  std::vector<RuleAllowlist> allowlists;
  std::string source;  // the file (or "pii_rules.toml" for the shipped ones), for messages
};

struct RuleFile {
  std::string source;
  std::vector<RuleSpec> rules;
  std::vector<std::string> skipped;  // ids of rules without a regex (gitleaks' path-only rules)
};

// Parses rule-file text. Throws core::Error("<source>: rule '<id>': <reason>") for a TOML syntax
// error (with line and column), a missing id, a rule with neither regex nor path, a field of the
// wrong type, an unknown validator, a score outside 0..1, a bad entity name, a duplicate id, a
// regex or allowlist regex that RE2 rejects, or a secretGroup the regex does not have.
RuleFile parse_rule_file(std::string_view text, const std::string& source);
// Reads and parses a file (core::Error when it cannot be read).
RuleFile load_rule_file(const std::string& path);

// The validator names a rule may use.
const std::vector<std::string_view>& validator_names();

}  // namespace aegis::privacy
