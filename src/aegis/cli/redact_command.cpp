#include "aegis/cli/redact_command.h"

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "aegis/core/error.h"
#include "aegis/core/text.h"
#include "aegis/privacy/detector.h"

namespace aegis::cli {
namespace {

// Text is redacted in pieces that end at a line break; a line longer than this is cut at its last
// space or tab before the limit (or, without one, at the limit), so memory stays bounded.
constexpr std::size_t kPieceLimit = 16u << 20;

struct RedactFlags {
  std::vector<std::string> paths;
  std::string output;
  std::string action = "mask";
  std::vector<std::string> entity_actions;
  std::string hash_key_env = "AEGIS_REDACT_KEY";
  std::string entities;
  bool no_secrets = false;
  std::vector<std::string> rule_files;
  double min_score = 0.5;
  std::string region = "US";
  bool stats = false;
};

privacy::RedactAction parse_action(const std::string& name, const std::string& flag) {
  if (name == "mask") return privacy::RedactAction::Mask;
  if (name == "hash") return privacy::RedactAction::Hash;
  if (name == "drop") return privacy::RedactAction::Drop;
  throw core::Error("unknown " + flag + " action '" + name + "'", "use mask, hash or drop");
}

class Redactor {
 public:
  Redactor(const privacy::DetectorOptions& options, privacy::RedactionPolicy policy, std::ostream& out)
      : detector_(options), policy_(std::move(policy)), out_(out) {}

  void feed(std::istream& in) {
    std::string pending;
    std::vector<char> block(1 << 20);
    while (in) {
      in.read(block.data(), static_cast<std::streamsize>(block.size()));
      const auto got = static_cast<std::size_t>(in.gcount());
      if (got == 0) break;
      pending.append(block.data(), got);
      // hand over everything up to the last line break; keep the unfinished line
      auto nl = pending.rfind('\n');
      if (nl != std::string::npos) {
        emit(std::string_view(pending).substr(0, nl + 1));
        pending.erase(0, nl + 1);
      } else if (pending.size() > kPieceLimit) {
        auto cut = pending.find_last_of(" \t", kPieceLimit);
        cut = cut == std::string::npos || cut == 0 ? kPieceLimit : cut + 1;
        emit(std::string_view(pending).substr(0, cut));
        pending.erase(0, cut);
      }
    }
    if (!pending.empty()) emit(pending);
  }

  std::size_t redacted() const { return redacted_; }
  std::size_t bytes() const { return bytes_; }

 private:
  void emit(std::string_view text) {
    const auto found = detector_.scan(text);
    redacted_ += found.size();
    bytes_ += text.size();
    out_ << privacy::redact(text, found, policy_);
  }

  privacy::Detector detector_;
  privacy::RedactionPolicy policy_;
  std::ostream& out_;
  std::size_t redacted_ = 0, bytes_ = 0;
};

int run_redact(const RedactFlags& flags) {
  privacy::DetectorOptions options;
  options.entities = core::split_comma_list(flags.entities);
  options.secrets = !flags.no_secrets;
  options.rule_files = flags.rule_files;
  options.min_score = flags.min_score;
  options.default_region = flags.region;
  privacy::RedactionPolicy policy;
  policy.default_action = parse_action(flags.action, "--action");
  for (const auto& item : flags.entity_actions) {
    const auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0)
      throw core::Error("--entity-action needs TYPE=ACTION, got '" + item + "'", "for example US_SSN=hash or EMAIL_ADDRESS=drop");
    policy.per_entity.emplace_back(item.substr(0, eq), parse_action(item.substr(eq + 1), "--entity-action"));
  }
  if (const char* key = std::getenv(flags.hash_key_env.c_str())) policy.hash_key = key;

  std::ofstream file;
  if (!flags.output.empty()) {
    file.open(flags.output, std::ios::binary | std::ios::trunc);
    if (!file) throw core::Error("cannot write " + flags.output, "check that its folder exists and is writable");
  }
  std::ostream& out = flags.output.empty() ? std::cout : file;
  Redactor redactor(options, policy, out);
  if (flags.paths.empty() || (flags.paths.size() == 1 && flags.paths[0] == "-")) {
    redactor.feed(std::cin);
  } else {
    for (const auto& path : flags.paths) {
      std::ifstream in(path, std::ios::binary);
      if (!in) throw core::Error("cannot read " + path, "check the path and its permissions");
      redactor.feed(in);
    }
  }
  out.flush();
  if (!out) throw core::Error("could not write the redacted text", "check free disk space");
  if (flags.stats)
    std::cerr << "redacted " << redactor.redacted() << " entities in " << redactor.bytes() << " bytes\n";
  return 0;
}

}  // namespace

void register_redact_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<RedactFlags>();
  auto* command = app.add_subcommand(
      "redact", "Copy text with personal data and secrets replaced (mask, keyed hash or drop, per entity type)");
  command->add_option("paths", flags->paths, "text files (default: standard input)");
  command->add_option("--output,-o", flags->output, "write here instead of standard output");
  command->add_option("--action", flags->action, "what replaces an entity: mask (<TYPE>, default), hash (<TYPE:hmac>) or drop");
  command->add_option("--entity-action", flags->entity_actions, "TYPE=ACTION for one entity type, e.g. EMAIL_ADDRESS=hash; repeatable");
  command->add_option("--hash-key-env", flags->hash_key_env,
                      "environment variable holding the HMAC key for hash (default AEGIS_REDACT_KEY; unset: plain SHA-256)");
  command->add_option("--entities", flags->entities, "entity types to redact, comma-separated (default all)");
  command->add_flag("--no-secrets", flags->no_secrets, "personal data only, leave secrets");
  command->add_option("--rules", flags->rule_files, "extra TOML rule file (Aegis or gitleaks format); repeatable")
      ->check(CLI::ExistingFile);
  command->add_option("--min-score", flags->min_score, "redact detections scored at least this (default 0.5)");
  command->add_option("--region", flags->region, "region for phone numbers without +country code (default US)");
  command->add_flag("--stats", flags->stats, "print how many entities were redacted to stderr");
  command->callback([flags, &exit_code] { exit_code = run_redact(*flags); });
}

}  // namespace aegis::cli
