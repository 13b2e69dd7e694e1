// The static review: walks a repository or deployment folder, reads each file it knows (Dockerfiles,
// Compose, Kubernetes and Helm-rendered manifests, serving configs, start scripts, CI workflows,
// notebooks) into the commands, containers and settings it describes, and evaluates the rules.
#include <fnmatch.h>
#include <re2/re2.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "aegis/core/error.h"
#include "aegis/core/yaml_guard.h"
#include "aegis/infra/deployment_files.h"
#include "aegis/infra/infra.h"
#include "aegis/privacy/detector.h"

namespace aegis::infra {
namespace {

using detail::Environment;
using detail::Invocation;
namespace fs = std::filesystem;

constexpr std::size_t kMaxFindingsPerRulePerFile = 50;
constexpr int kMaxYamlDepth = 64;

enum class FileKind { None, Dockerfile, Compose, Kubernetes, Workflow, Properties, Script, Notebook };

std::string kind_name(FileKind kind) {
  switch (kind) {
    case FileKind::Dockerfile: return "dockerfile";
    case FileKind::Compose: return "compose";
    case FileKind::Kubernetes: return "kubernetes";
    case FileKind::Workflow: return "workflow";
    case FileKind::Properties: return "properties";
    case FileKind::Script: return "script";
    case FileKind::Notebook: return "notebook";
    case FileKind::None: break;
  }
  return "none";
}

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.compare(text.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_yaml_name(std::string_view name) { return ends_with(name, ".yml") || ends_with(name, ".yaml"); }

FileKind classify(const std::string& path, std::string_view content) {
  std::string generic = lower(path);
  std::replace(generic.begin(), generic.end(), '\\', '/');
  const auto slash = generic.find_last_of('/');
  const std::string name = slash == std::string::npos ? generic : generic.substr(slash + 1);
  if (name == "dockerfile" || name == "containerfile" || name.rfind("dockerfile.", 0) == 0 || ends_with(name, ".dockerfile") ||
      ends_with(name, ".containerfile"))
    return FileKind::Dockerfile;
  if (ends_with(name, ".ipynb")) return FileKind::Notebook;
  if (ends_with(name, ".properties") || (name.rfind("jupyter_", 0) == 0 && ends_with(name, "_config.py")))
    return FileKind::Properties;
  if (ends_with(name, ".sh") || ends_with(name, ".bash") || name == "procfile" || ends_with(name, ".service") ||
      (name.rfind("supervisord", 0) == 0 && ends_with(name, ".conf")) || name == "entrypoint" || name == "docker-entrypoint")
    return FileKind::Script;
  if (is_yaml_name(name)) {
    if (name == ".gitlab-ci.yml" || generic.find(".github/workflows/") != std::string::npos) return FileKind::Workflow;
    if (name.rfind("docker-compose", 0) == 0 || name.rfind("compose.", 0) == 0 || name.rfind("compose-", 0) == 0)
      return FileKind::Compose;
    const std::string_view head = content.substr(0, 1u << 16);
    if (head.find("apiVersion") != std::string_view::npos && head.find("kind") != std::string_view::npos)
      return FileKind::Kubernetes;
    if (head.find("services:") != std::string_view::npos && content.find("image:") != std::string_view::npos)
      return FileKind::Compose;
  }
  return FileKind::None;
}

std::string printable(std::string_view text, std::size_t limit = 240) {
  std::string out;
  for (char c : text.substr(0, limit)) out += (static_cast<unsigned char>(c) < 0x20 && c != '\t') ? ' ' : c;
  if (text.size() > limit) out += "...";
  return out;
}

// The review's own rules (not from a rule file): about files it could not review.
RuleInfo review_rule(std::string id, core::Severity severity, std::string title, std::string remediation) {
  RuleInfo r;
  r.id = std::move(id);
  r.service = "infra";
  r.severity = severity;
  r.title = std::move(title);
  r.atlas = {"AML.T0049"};
  r.nist_ai_rmf = {"MEASURE 2.7"};
  r.remediation = std::move(remediation);
  return r;
}

const RuleInfo& parse_error_rule() {
  static const RuleInfo rule = review_rule(
      "infra.parse-error", core::Severity::Low, "A deployment file could not be read, so it was not reviewed",
      "Fix the file's syntax (a file a tool cannot read is also one a deployment may read differently), "
      "or render templates first (helm template ... > rendered.yaml) and review the output.");
  return rule;
}

const RuleInfo& too_large_rule() {
  static const RuleInfo rule = review_rule(
      "infra.file-too-large", core::Severity::Info, "A deployment file is larger than the review reads, so it was not reviewed",
      "Review it by hand or raise the limit; deployment files this large are unusual.");
  return rule;
}

struct Site {
  std::string file;
  std::size_t line = 0;
  std::string column;  // e.g. "services.api" or "Deployment/vllm containers[0]"
};

std::vector<YAML::Node> load_yaml_documents(std::string_view text) {
  if (core::yaml_too_deep(text, kMaxYamlDepth)) throw core::FormatError("YAML nested deeper than the review reads");
  return YAML::LoadAll(std::string(text));
}

// node[a][b]... without yaml-cpp's InvalidNode exception when a key on the way is missing.
YAML::Node at(const YAML::Node& node, std::initializer_list<const char*> path) {
  YAML::Node current;
  current.reset(node);  // YAML::Node's operator= writes through to the node; reset() rebinds
  for (const char* key : path) {
    if (!current || !current.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node next = current[key];
    if (!next) return YAML::Node(YAML::NodeType::Undefined);
    current.reset(next);
  }
  return current;
}

std::string yaml_scalar(const YAML::Node& node) {
  if (!node || !node.IsScalar()) return {};
  return node.as<std::string>();
}

std::size_t yaml_line(const YAML::Node& node) {
  if (!node || node.Mark().line < 0) return 0;
  return static_cast<std::size_t>(node.Mark().line) + 1;
}

bool yaml_true(const YAML::Node& node) {
  const std::string v = lower(yaml_scalar(node));
  return v == "true" || v == "yes" || v == "on";
}

std::vector<std::string> yaml_words(const YAML::Node& node, bool* is_list) {
  std::vector<std::string> out;
  if (is_list) *is_list = false;
  if (!node) return out;
  if (node.IsSequence()) {
    if (is_list) *is_list = true;
    for (const auto& item : node)
      if (item.IsScalar()) out.push_back(item.as<std::string>());
  } else if (node.IsScalar()) {
    out.push_back(node.as<std::string>());
  }
  return out;
}

// Compose `environment:` and Kubernetes `env:` into a map; values from secrets read as set.
Environment compose_environment(const YAML::Node& node) {
  Environment env;
  if (!node) return env;
  if (node.IsMap()) {
    for (const auto& item : node) env[yaml_scalar(item.first)] = item.second.IsNull() ? std::string() : yaml_scalar(item.second);
  } else if (node.IsSequence()) {
    for (const auto& item : node) {
      const std::string entry = yaml_scalar(item);
      const auto eq = entry.find('=');
      if (eq == std::string::npos)
        env[entry] = "";
      else
        env[entry.substr(0, eq)] = entry.substr(eq + 1);
    }
  }
  return env;
}

class Reviewer {
 public:
  explicit Reviewer(const RuleSet& rules) : rules_(rules) {
    RE2::Options options;
    options.set_log_errors(false);
    for (const auto& rule : rules_.static_rules) {
      if (rule.kind == StaticRule::Kind::Command) {
        CompiledCommand c;
        c.rule = &rule;
        c.program = std::make_unique<RE2>(rule.command.program, options);
        if (!rule.command.subcommand.empty()) c.subcommand = std::make_unique<RE2>(rule.command.subcommand, options);
        for (const auto& [flag, pattern] : rule.command.flag_values)
          c.flag_values.emplace_back(flag, pattern.empty() ? nullptr : std::make_shared<RE2>(pattern, options));
        for (const auto& [flag, pattern] : rule.command.any_flag_values)
          c.any_flag_values.emplace_back(flag, pattern.empty() ? nullptr : std::make_shared<RE2>(pattern, options));
        for (const auto& [name, pattern] : rule.command.env_values)
          c.env_values.emplace_back(name, pattern.empty() ? nullptr : std::make_shared<RE2>(pattern, options));
        commands_.push_back(std::move(c));
      }
    }
    for (const auto& image : rules_.images) images_.emplace_back(&image, std::make_unique<RE2>(image.image, options));
  }

  void review(const std::string& path, std::string_view content, StaticReport& report) {
    const FileKind kind = classify(path, content);
    if (kind == FileKind::None) {
      ++report.skipped;
      return;
    }
    report.files.push_back({path, kind_name(kind), content.size()});
    findings_ = &report.findings;
    per_rule_.clear();
    try {
      switch (kind) {
        case FileKind::Dockerfile: review_dockerfile(path, content); break;
        case FileKind::Compose: review_compose(path, content); break;
        case FileKind::Kubernetes: review_kubernetes(path, content); break;
        case FileKind::Workflow: review_workflow(path, content); break;
        case FileKind::Properties: review_properties(path, content); break;
        case FileKind::Script: review_script(path, content); break;
        case FileKind::Notebook: review_notebook(path, content); break;
        case FileKind::None: break;
      }
    } catch (const YAML::Exception& e) {
      Site site{path, e.mark.line >= 0 ? static_cast<std::size_t>(e.mark.line) + 1 : 0, {}};
      emit(parse_error_rule(), site, "not valid YAML: " + printable(e.msg));
    } catch (const core::FormatError& e) {
      emit(parse_error_rule(), Site{path, 0, {}}, e.what());
    } catch (const nlohmann::json::exception& e) {
      emit(parse_error_rule(), Site{path, 0, {}}, std::string("not valid JSON: ") + printable(e.what()));
    }
  }

 private:
  struct CompiledCommand {
    const StaticRule* rule = nullptr;
    std::unique_ptr<RE2> program;
    std::unique_ptr<RE2> subcommand;
    std::vector<std::pair<std::string, std::shared_ptr<RE2>>> flag_values;
    std::vector<std::pair<std::string, std::shared_ptr<RE2>>> any_flag_values;
    std::vector<std::pair<std::string, std::shared_ptr<RE2>>> env_values;
  };

  const RuleSet& rules_;
  std::vector<CompiledCommand> commands_;
  std::vector<std::pair<const ImageDefault*, std::unique_ptr<RE2>>> images_;
  std::vector<core::Finding>* findings_ = nullptr;
  std::map<std::string, std::size_t> per_rule_;
  std::unique_ptr<privacy::Detector> detector_;
  std::map<std::string, std::unique_ptr<RE2>> regex_cache_;

  void emit(const RuleInfo& rule, const Site& site, std::string evidence) {
    if (++per_rule_[rule.id] > kMaxFindingsPerRulePerFile) return;
    core::Finding f = make_finding(rule, std::move(evidence));
    f.location.file = site.file;
    if (site.line) f.location.line = site.line;
    f.location.column = site.column;
    findings_->push_back(std::move(f));
  }

  template <typename Fn>
  void for_structural(const std::string& kind, const std::string& check, Fn&& fn) {
    for (const auto& rule : rules_.static_rules)
      if (rule.kind == StaticRule::Kind::Structural && rule.structural.kind == kind && rule.structural.check == check)
        fn(rule);
  }

  static std::string param(const StaticRule& rule, const std::string& name, const std::string& fallback = {}) {
    const auto it = rule.structural.params.find(name);
    return it == rule.structural.params.end() ? fallback : it->second;
  }

  // Rule regexes are compiled once per review, not once per use.
  const RE2& compiled(const std::string& pattern) {
    auto& slot = regex_cache_[pattern];
    if (!slot) {
      RE2::Options options;
      options.set_log_errors(false);
      slot = std::make_unique<RE2>(pattern, options);
    }
    return *slot;
  }

  bool search(const std::string& pattern, std::string_view text) {
    if (pattern.empty()) return false;
    const RE2& re = compiled(pattern);
    return re.ok() && RE2::PartialMatch(text, re);
  }

  // ---- commands ----

  // Why the rule holds for this invocation (non-empty), or "" when it does not.
  std::string command_holds(const CompiledCommand& c, const Invocation& inv) const {
    const CommandMatch& m = c.rule->command;
    if (!RE2::FullMatch(inv.program, *c.program)) return {};
    std::vector<std::string> why;
    if (c.subcommand) {
      const std::string sub = !inv.args.empty() && !inv.args.front().empty() && inv.args.front()[0] != '-' ? inv.args.front() : "";
      if (!RE2::FullMatch(sub, *c.subcommand)) return {};
    }
    if (!m.host_flags.empty() || !m.host_env.empty()) {
      std::optional<std::string> value;
      std::string from;
      for (const auto& flag : m.host_flags)
        if (auto v = detail::flag_value(inv, flag)) {
          value = std::move(v);
          from = flag;
          break;
        }
      if (!value)
        for (const auto& name : m.host_env) {
          const auto it = inv.env.find(name);
          if (it != inv.env.end() && !it->second.empty()) {
            value = it->second;
            from = name;
            break;
          }
        }
      if (!value) {
        value = m.default_host;
        from = "the default";
      }
      const auto expanded = detail::expand_variables(*value, inv.env);
      if (!expanded) return {};  // a variable we cannot resolve: not provable from the file
      const auto loopback = detail::is_loopback_address(*expanded);
      if (!loopback || *loopback) return {};
      why.push_back("listens on '" + (expanded->empty() ? std::string("all interfaces") : *expanded) + "' (" + from + ")");
    }
    for (const auto& flag : m.without_flags)
      if (detail::flag_value(inv, flag)) return {};
    for (const auto& name : m.without_env) {
      const auto it = inv.env.find(name);
      if (it != inv.env.end() && !it->second.empty()) return {};
    }
    for (const auto& [flag, re] : c.flag_values) {
      const auto v = detail::flag_value(inv, flag);
      if (!v) return {};
      const std::string value = detail::expand_variables(*v, inv.env).value_or(*v);
      if (re && !RE2::PartialMatch(value, *re)) return {};
      why.push_back(flag + (value.empty() ? std::string() : "=" + value));
    }
    if (!c.any_flag_values.empty()) {
      bool any = false;
      for (const auto& [flag, re] : c.any_flag_values) {
        const auto v = detail::flag_value(inv, flag);
        if (!v) continue;
        const std::string value = detail::expand_variables(*v, inv.env).value_or(*v);
        if (re && !RE2::PartialMatch(value, *re)) continue;
        why.push_back(flag + "=" + (value.empty() ? std::string("''") : value));
        any = true;
        break;
      }
      if (!any) return {};
    }
    for (const auto& [name, re] : c.env_values) {
      const auto it = inv.env.find(name);
      if (it == inv.env.end()) return {};
      if (re && !RE2::PartialMatch(it->second, *re)) return {};
      why.push_back(name + "=" + it->second);
    }
    if (!m.without_flags.empty()) {
      std::string none = "no ";
      for (std::size_t i = 0; i < m.without_flags.size(); ++i) none += (i ? " or " : "") + m.without_flags[i];
      why.push_back(none);
    }
    if (!m.without_env.empty()) {
      std::string none;
      for (std::size_t i = 0; i < m.without_env.size(); ++i) none += (i ? ", " : "") + m.without_env[i];
      why.push_back(none + " not set");
    }
    std::string out;
    for (const auto& w : why) out += (out.empty() ? "" : "; ") + w;
    return out.empty() ? std::string("matches") : out;
  }

  void check_invocations(const std::vector<Invocation>& invocations, const std::string& file, const std::string& origin,
                         std::size_t fallback_line = 0, const std::string& column = {}, bool network_reachable = true) {
    for (const auto& inv : invocations)
      for (const auto& c : commands_) {
        // Inside a container every server binds 0.0.0.0; whether the network reaches it is decided
        // by what publishes its ports (a Compose service published only on loopback is not reached).
        const bool listening_rule = !c.rule->command.host_flags.empty() || !c.rule->command.host_env.empty();
        if (listening_rule && !network_reachable) continue;
        const std::string why = command_holds(c, inv);
        if (why.empty()) continue;
        // The reason first: table reports shorten long evidence from the end.
        std::string evidence = why + " — " + (origin.empty() ? std::string() : origin + ": ") + "`" + printable(inv.text, 300) + "`";
        emit(c.rule->info, Site{file, inv.line ? inv.line : fallback_line, column}, std::move(evidence));
      }
  }

  const ImageDefault* image_default(const std::string& reference) const {
    const auto ref = detail::parse_image_reference(reference);
    for (const auto& [image, re] : images_)
      if (RE2::FullMatch(ref.name, *re)) return image;
    return nullptr;
  }

  static std::vector<std::string> shell_words(const std::string& text) {
    // Words as written (no wrapper stripping): a JSON list, or a split honouring quotes.
    std::vector<std::string> out;
    if (auto exec = detail::parse_exec_form(text)) return *exec;
    std::string word;
    bool in_word = false;
    char quote = 0;
    for (char c : text) {
      if (quote) {
        if (c == quote)
          quote = 0;
        else
          word += c;
        continue;
      }
      if (c == '"' || c == '\'') {
        quote = c;
        in_word = true;
      } else if (c == ' ' || c == '\t' || c == '\n') {
        if (in_word) out.push_back(word);
        word.clear();
        in_word = false;
      } else {
        word += c;
        in_word = true;
      }
    }
    if (in_word) out.push_back(word);
    return out;
  }

  // The program a container runs: its own entrypoint/command, or what its image runs by default.
  // `entrypoint`/`cmd` are nullopt when the deployment does not set them.
  void check_container(const std::string& image, std::optional<std::vector<std::string>> entrypoint,
                       std::optional<std::vector<std::string>> cmd, const Environment& file_env,
                       const std::string& file, std::size_t line, const std::string& origin, const std::string& column,
                       bool network_reachable = true) {
    const ImageDefault* defaults = image.empty() ? nullptr : image_default(image);
    Environment env;
    if (defaults) env = defaults->env;
    for (const auto& [k, v] : file_env) env[k] = v;
    std::vector<std::string> words;
    if (entrypoint) {
      words = *entrypoint;
    } else if (defaults) {
      words = shell_words(defaults->entrypoint);
    }
    if (cmd) {
      words.insert(words.end(), cmd->begin(), cmd->end());
    } else if (!entrypoint && defaults && !defaults->cmd.empty()) {
      const auto more = shell_words(defaults->cmd);
      words.insert(words.end(), more.begin(), more.end());
    }
    if (words.empty()) return;
    std::string where = origin;
    if (defaults && !entrypoint) where += " (image " + image + " runs " + defaults->entrypoint + ")";
    check_invocations(detail::invocation_from_words(words, env, line), file, where, line, column, network_reachable);
  }

  // ---- Dockerfiles ----

  // A literal that looks like a credential: not a reference ($VAR, ${VAR}), not a flag or a number,
  // not a placeholder.
  static bool is_secret_value(const std::string& value) {
    if (value.size() < 8 || value.front() == '$' || value.find("${") != std::string::npos) return false;
    const std::string v = lower(value);
    for (const char* placeholder : {"changeme", "change-me", "change_me", "<", "xxxx", "your-", "your_", "replace", "example", "dummy"})
      if (v.find(placeholder) != std::string::npos) return false;
    return !std::all_of(v.begin(), v.end(), [](unsigned char c) { return std::isdigit(c) != 0; });
  }

  void review_dockerfile(const std::string& path, std::string_view content) {
    const auto file = detail::parse_dockerfile(content);
    if (file.stages.empty()) throw core::FormatError("no FROM instruction: not a Dockerfile the builder would accept");
    std::set<std::string> aliases;
    std::map<std::string, std::string> alias_user;  // stage alias -> USER set in it (inherited by FROM alias)
    Environment args;
    for (const auto& instruction : file.preamble)
      if (instruction.keyword == "ARG")
        for (const auto& [k, v] : detail::parse_env_assignments(instruction.args, false)) args[k] = v;

    for (std::size_t s = 0; s < file.stages.size(); ++s) {
      const auto& stage = file.stages[s];
      const bool final_stage = s + 1 == file.stages.size();
      const std::string base = lower(stage.image);
      const bool from_alias = aliases.count(base) > 0;
      // base images
      if (!from_alias && base != "scratch" && base.find('$') == std::string::npos) {
        const auto ref = detail::parse_image_reference(stage.image);
        for_structural("dockerfile", "unpinned-base", [&](const StaticRule& rule) {
          if (!ref.digest.empty()) return;
          const std::string tags = param(rule, "tag_regex", ".*");
          if (!RE2::FullMatch(ref.tag, tags)) return;
          if (const std::string except = param(rule, "except_tag_regex"); !except.empty() && RE2::FullMatch(ref.tag, except)) return;
          emit(rule.info, Site{path, stage.line, "FROM"},
               "FROM " + stage.image + (ref.tag.empty() ? " (no tag: whatever 'latest' is at build time)" : " (tag only, no @sha256 digest)"));
        });
      }
      Environment env = args;
      std::optional<std::string> user;
      if (from_alias && alias_user.count(base)) user = alias_user[base];
      std::optional<std::vector<std::string>> entrypoint, cmd;
      std::size_t cmd_line = stage.line;
      for (const auto& instruction : stage.instructions) {
        const std::string& kw = instruction.keyword;
        if (kw == "ENV" || kw == "ARG") {
          for (const auto& assignment : detail::parse_env_assignments(instruction.args, kw == "ENV")) {
            const std::string& name = assignment.first;  // not a structured binding: clang 14 cannot capture those
            const std::string& value = assignment.second;
            env[name] = value;
            for_structural("dockerfile", "secret-in-env", [&](const StaticRule& rule) {
              if (!search(param(rule, "name_regex"), name) || !is_secret_value(value)) return;
              emit(rule.info, Site{path, instruction.line, kw + " " + name},
                   kw + " " + name + " has a literal value (" + std::to_string(value.size()) +
                       " characters): it is stored in the image's layers and history");
            });
          }
        } else if (kw == "USER") {
          user = std::string(instruction.args);
        } else if (kw == "EXPOSE") {
          for_structural("dockerfile", "exposed-port", [&](const StaticRule& rule) {
            for (const auto& word : shell_words(instruction.args)) {
              const int port = std::atoi(word.c_str());
              if (std::find(rule.structural.ports.begin(), rule.structural.ports.end(), port) != rule.structural.ports.end())
                emit(rule.info, Site{path, instruction.line, "EXPOSE"},
                     "EXPOSE " + word + ": the port of " + param(rule, "service_name", "an ML service"));
            }
          });
        } else if (kw == "RUN" || kw == "ADD") {
          check_download(path, instruction);
        } else if (kw == "ENTRYPOINT" || kw == "CMD") {
          std::vector<std::string> words;
          if (auto exec = detail::parse_exec_form(instruction.args)) {
            words = std::move(*exec);
          } else {
            words = {"/bin/sh", "-c", instruction.args};
          }
          if (kw == "ENTRYPOINT") {
            entrypoint = std::move(words);
            cmd.reset();  // ENTRYPOINT resets CMD inherited from before
          } else {
            cmd = std::move(words);
          }
          cmd_line = instruction.line;
        }
      }
      if (!stage.alias.empty()) {
        aliases.insert(lower(stage.alias));
        if (user) alias_user[lower(stage.alias)] = *user;
      }
      if (!final_stage) continue;
      if (!user && !from_alias)
        if (const ImageDefault* base_image = image_default(stage.image); base_image && !base_image->user.empty())
          user = base_image->user;  // the base image's own USER carries over
      for_structural("dockerfile", "user-root", [&](const StaticRule& rule) {
        if (!user) {
          emit(rule.info, Site{path, stage.line, "USER"},
               "the final stage (FROM " + stage.image + ") sets no USER: the container runs as the base image's user, root for most images");
          return;
        }
        const std::string u = lower(std::string(detail::expand_variables(*user, env).value_or(*user)));
        const std::string name = u.substr(0, u.find(':'));
        if (name == "root" || name == "0")
          emit(rule.info, Site{path, stage.line, "USER"}, "the final stage runs as USER " + *user);
      });
      const std::string image = from_alias ? std::string() : stage.image;
      check_container(image, entrypoint, cmd, env, path, cmd_line, "Dockerfile", "CMD");
    }
  }

  void check_download(const std::string& path, const detail::DockerInstruction& instruction) {
    for_structural("dockerfile", "insecure-download", [&](const StaticRule& rule) {
      const std::string url_regex = param(rule, "url_regex");
      if (url_regex.empty()) return;
      const RE2& re = compiled(url_regex);
      if (!re.ok()) return;
      std::string url;  // the first capture group, when the pattern has one, is the URL
      if (re.NumberOfCapturingGroups() >= 1) {
        if (!RE2::PartialMatch(instruction.args, re, &url)) return;
      } else {
        if (!RE2::PartialMatch(instruction.args, re)) return;
      }
      const std::string verify = param(rule, "verify_regex");
      if (!verify.empty() && search(verify, instruction.args)) return;
      emit(rule.info, Site{path, instruction.line, instruction.keyword},
           instruction.keyword + " fetches " + printable(url.empty() ? instruction.args : url, 200) +
               (verify.empty() ? std::string() : " and checks no digest"));
    });
  }

  // ---- Compose ----

  void review_compose(const std::string& path, std::string_view content) {
    for (const auto& doc : load_yaml_documents(content)) {
      if (!doc.IsMap()) continue;
      const YAML::Node services = doc["services"];
      if (!services || !services.IsMap()) continue;
      for (const auto& item : services) {
        const std::string name = yaml_scalar(item.first);
        const YAML::Node svc = item.second;
        if (!svc.IsMap()) continue;
        const std::string column = "services." + name;
        const std::size_t line = yaml_line(item.first);
        const Environment env = compose_environment(svc["environment"]);
        if (yaml_true(svc["privileged"]))
          for_structural("compose", "privileged", [&](const StaticRule& rule) {
            emit(rule.info, Site{path, yaml_line(svc["privileged"]), column}, "service '" + name + "' runs privileged: true");
          });
        const std::string network = yaml_scalar(svc["network_mode"]);
        if (network == "host" || yaml_scalar(svc["pid"]) == "host" || yaml_scalar(svc["ipc"]) == "host")
          for_structural("compose", "host-network", [&](const StaticRule& rule) {
            emit(rule.info, Site{path, line, column}, "service '" + name + "' shares the host's network, PID or IPC namespace");
          });
        const std::string user = lower(yaml_scalar(svc["user"]));
        if (user == "root" || user == "0" || user.rfind("0:", 0) == 0 || user.rfind("root:", 0) == 0)
          for_structural("compose", "user-root", [&](const StaticRule& rule) {
            emit(rule.info, Site{path, yaml_line(svc["user"]), column}, "service '" + name + "' sets user: " + user);
          });
        for (const auto& entry : env)
          for_structural("compose", "secret-in-env", [&, &var = entry.first, &value = entry.second](const StaticRule& rule) {
            if (!search(param(rule, "name_regex"), var) || !is_secret_value(value)) return;
            emit(rule.info, Site{path, yaml_line(svc["environment"]), column},
                 "service '" + name + "' sets " + var + " to a literal value (" + std::to_string(value.size()) + " characters) in the Compose file");
          });
        if (const YAML::Node volumes = svc["volumes"]; volumes && volumes.IsSequence())
          for (const auto& volume : volumes) {
            std::string source = volume.IsMap() ? yaml_scalar(volume["source"]) : yaml_scalar(volume);
            source = source.substr(0, source.find(':'));
            if (source.find("docker.sock") != std::string::npos)
              for_structural("compose", "docker-socket", [&](const StaticRule& rule) {
                emit(rule.info, Site{path, yaml_line(volume), column}, "service '" + name + "' mounts " + source);
              });
          }
        bool reachable = network == "host";
        if (const YAML::Node ports = svc["ports"]; ports && ports.IsSequence())
          for (const auto& port : ports)
            if (check_compose_port(path, name, column, port)) reachable = true;
        bool entry_list = false, cmd_list = false;
        std::optional<std::vector<std::string>> entrypoint, cmd;
        if (svc["entrypoint"]) {
          auto words = yaml_words(svc["entrypoint"], &entry_list);
          entrypoint = entry_list ? words : shell_words(words.empty() ? std::string() : words.front());
        }
        if (svc["command"]) {
          auto words = yaml_words(svc["command"], &cmd_list);
          cmd = cmd_list ? words : shell_words(words.empty() ? std::string() : words.front());
        }
        check_container(yaml_scalar(svc["image"]), entrypoint, cmd, env, path, line, "service '" + name + "'", column, reachable);
      }
    }
  }

  // Reports an ML port published on every interface; returns whether the port is published beyond loopback.
  bool check_compose_port(const std::string& path, const std::string& name, const std::string& column, const YAML::Node& port) {
    std::string host_ip;
    int container_port = 0;
    if (port.IsMap()) {
      host_ip = yaml_scalar(port["host_ip"]);
      container_port = std::atoi(yaml_scalar(port["target"]).c_str());
    } else {
      std::string spec = yaml_scalar(port);
      spec = spec.substr(0, spec.find('/'));  // "8080:80/tcp"
      std::vector<std::string> parts;
      std::string current;
      int bracket = 0;
      for (char c : spec) {
        if (c == '[') ++bracket;
        if (c == ']') --bracket;
        if (c == ':' && bracket == 0) {
          parts.push_back(current);
          current.clear();
        } else {
          current += c;
        }
      }
      parts.push_back(current);
      if (parts.size() == 3) host_ip = parts[0];
      container_port = std::atoi(parts.back().c_str());
    }
    // "8888" alone, or a long form without `published`, still publishes: on a random host port.
    if (!host_ip.empty()) {
      const auto loopback = detail::is_loopback_address(host_ip);
      if (loopback && *loopback) return false;
    }
    for_structural("compose", "published-port", [&](const StaticRule& rule) {
      const auto& ports = rule.structural.ports;
      if (std::find(ports.begin(), ports.end(), container_port) == ports.end()) return;
      emit(rule.info, Site{path, yaml_line(port), column},
           "service '" + name + "' publishes container port " + std::to_string(container_port) + " on " +
               (host_ip.empty() ? std::string("every host interface") : host_ip) + " (" + yaml_scalar(port) + ")");
    });
    return true;
  }

  // ---- Kubernetes ----

  static YAML::Node pod_spec(const YAML::Node& doc, const std::string& kind) {
    if (kind == "Pod") return at(doc, {"spec"});
    if (kind == "CronJob") return at(doc, {"spec", "jobTemplate", "spec", "template", "spec"});
    static const std::set<std::string> workloads = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job",
                                                     "ReplicationController", "DeploymentConfig"};
    if (workloads.count(kind)) return at(doc, {"spec", "template", "spec"});
    return YAML::Node();
  }

  bool runs_ml_service(const YAML::Node& container) const {
    const std::string image = yaml_scalar(container["image"]);
    if (!image.empty() && image_default(image)) return true;
    std::vector<std::string> words = yaml_words(container["command"], nullptr);
    const auto args = yaml_words(container["args"], nullptr);
    words.insert(words.end(), args.begin(), args.end());
    for (const auto& inv : detail::invocation_from_words(words, {}, 0))
      for (const auto& c : commands_)
        if (RE2::FullMatch(inv.program, *c.program)) return true;
    return false;
  }

  void review_kubernetes(const std::string& path, std::string_view content) {
    const auto docs = load_yaml_documents(content);
    // Services first known by their selector, so that an exposed Service can name the ML pods behind it.
    for (const auto& doc : docs) {
      if (!doc.IsMap()) continue;
      const std::string kind = yaml_scalar(doc["kind"]);
      if (kind == "List" && doc["items"].IsSequence()) {
        for (const auto& item : doc["items"]) review_kubernetes_object(path, item);
        continue;
      }
      review_kubernetes_object(path, doc);
    }
  }

  void review_kubernetes_object(const std::string& path, const YAML::Node& doc) {
    if (!doc.IsMap()) return;
    const std::string kind = yaml_scalar(doc["kind"]);
    const std::string name = yaml_scalar(at(doc, {"metadata", "name"}));
    const std::string object = kind + "/" + (name.empty() ? std::string("?") : name);
    const std::size_t line = yaml_line(doc["kind"]);
    if (kind == "Service") {
      const std::string type = yaml_scalar(at(doc, {"spec", "type"}));
      if (type != "LoadBalancer" && type != "NodePort") return;
      if (const YAML::Node ports = at(doc, {"spec", "ports"}); ports && ports.IsSequence())
        for (const auto& port : ports) {
          const int p = std::atoi(yaml_scalar(port["port"]).c_str());
          const int t = std::atoi(yaml_scalar(port["targetPort"]).c_str());
          for_structural("kubernetes", "exposed-service", [&](const StaticRule& rule) {
            const auto& list = rule.structural.ports;
            const bool hit = std::find(list.begin(), list.end(), p) != list.end() || std::find(list.begin(), list.end(), t) != list.end();
            if (!hit) return;
            emit(rule.info, Site{path, yaml_line(port), object},
                 object + " is type " + type + " and exposes port " + std::to_string(p) +
                     (t ? " (targetPort " + std::to_string(t) + ")" : std::string()) +
                     ", an ML service port, outside the cluster; Kubernetes adds no authentication");
          });
        }
      return;
    }
    const YAML::Node spec = pod_spec(doc, kind);
    if (!spec || !spec.IsMap()) return;
    if (yaml_true(spec["hostNetwork"]) || yaml_true(spec["hostPID"]) || yaml_true(spec["hostIPC"]))
      for_structural("kubernetes", "host-namespace", [&](const StaticRule& rule) {
        std::string which;
        for (const char* key : {"hostNetwork", "hostPID", "hostIPC"})
          if (yaml_true(spec[key])) which += (which.empty() ? "" : ", ") + std::string(key) + ": true";
        emit(rule.info, Site{path, line, object}, object + " sets " + which);
      });
    if (const YAML::Node volumes = spec["volumes"]; volumes && volumes.IsSequence())
      for (const auto& volume : volumes)
        if (volume["hostPath"])
          for_structural("kubernetes", "host-path", [&](const StaticRule& rule) {
            emit(rule.info, Site{path, yaml_line(volume), object},
                 object + " mounts hostPath " + yaml_scalar(at(volume, {"hostPath", "path"})) + " (volume '" + yaml_scalar(volume["name"]) + "')");
          });
    bool ml_pod = false;
    for (const char* list : {"containers", "initContainers"}) {
      const YAML::Node containers = spec[list];
      if (!containers || !containers.IsSequence()) continue;
      for (std::size_t i = 0; i < containers.size(); ++i) {
        const YAML::Node c = containers[i];
        if (!c.IsMap()) continue;
        const std::string cname = yaml_scalar(c["name"]);
        const std::string column = object + " " + list + "[" + std::to_string(i) + "]" + (cname.empty() ? "" : " (" + cname + ")");
        const std::size_t cline = yaml_line(c["name"]) ? yaml_line(c["name"]) : yaml_line(c["image"]);
        const bool is_init = std::string(list) == "initContainers";
        if (!is_init && runs_ml_service(c)) ml_pod = true;
        const YAML::Node sc = c["securityContext"];
        const bool privileged = sc && yaml_true(sc["privileged"]);
        bool sys_admin = false;
        if (const YAML::Node add = at(c, {"securityContext", "capabilities", "add"}); add && add.IsSequence())
          for (const auto& cap : add) {
            const std::string v = lower(yaml_scalar(cap));
            if (v == "sys_admin" || v == "all" || v == "cap_sys_admin") sys_admin = true;
          }
        if (privileged || sys_admin)
          for_structural("kubernetes", "privileged", [&](const StaticRule& rule) {
            emit(rule.info, Site{path, cline, column},
                 column + (privileged ? " runs privileged: true" : " adds the SYS_ADMIN (or ALL) capability"));
          });
        const YAML::Node pod_sc = spec["securityContext"];
        const std::string run_as = sc && sc["runAsUser"] ? yaml_scalar(sc["runAsUser"]) : (pod_sc ? yaml_scalar(pod_sc["runAsUser"]) : "");
        if (run_as == "0")
          for_structural("kubernetes", "run-as-root", [&](const StaticRule& rule) {
            emit(rule.info, Site{path, cline, column}, column + " sets runAsUser: 0");
          });
        if (!is_init) {
          const YAML::Node limits = at(c, {"resources", "limits"});
          const bool has_memory = limits && limits.IsMap() && limits["memory"];
          if (!has_memory)
            for_structural("kubernetes", "no-limits", [&](const StaticRule& rule) {
              emit(rule.info, Site{path, cline, column}, column + " sets no resources.limits.memory: one container can exhaust its node");
            });
        }
        Environment env;
        if (const YAML::Node list_env = c["env"]; list_env && list_env.IsSequence())
          for (const auto& e : list_env) {
            const std::string var = yaml_scalar(e["name"]);
            if (e["valueFrom"]) {
              env[var] = "<valueFrom>";
              continue;
            }
            const std::string value = yaml_scalar(e["value"]);
            env[var] = value;
            for_structural("kubernetes", "secret-in-env", [&](const StaticRule& rule) {
              if (!search(param(rule, "name_regex"), var) || !is_secret_value(value)) return;
              emit(rule.info, Site{path, yaml_line(e), column},
                   column + " sets " + var + " to a literal value (" + std::to_string(value.size()) + " characters) in the manifest");
            });
          }
        std::optional<std::vector<std::string>> entrypoint, cmd;
        if (c["command"]) entrypoint = yaml_words(c["command"], nullptr);
        if (c["args"]) cmd = yaml_words(c["args"], nullptr);
        check_container(yaml_scalar(c["image"]), entrypoint, cmd, env, path, cline, column, column);
      }
    }
    if (ml_pod) {
      const std::string automount = lower(yaml_scalar(spec["automountServiceAccountToken"]));
      if (automount != "false")
        for_structural("kubernetes", "automount-token", [&](const StaticRule& rule) {
          emit(rule.info, Site{path, line, object},
               object + " serves a model and mounts its service-account token (automountServiceAccountToken is " +
                   (automount.empty() ? std::string("not set, so true") : automount) + ")");
        });
    }
  }

  // ---- CI workflows ----

  void review_workflow(const std::string& path, std::string_view content) {
    for (const auto& doc : load_yaml_documents(content)) {
      if (!doc.IsMap()) continue;
      // GitHub Actions: jobs.<id>.steps[].run; GitLab CI: <job>.script / before_script.
      std::vector<std::pair<std::string, std::vector<std::pair<std::string, std::size_t>>>> jobs;
      if (at(doc, {"jobs"}).IsMap()) {
        for (const auto& job : doc["jobs"]) {
          std::vector<std::pair<std::string, std::size_t>> scripts;
          const YAML::Node steps = job.second.IsMap() ? at(job.second, {"steps"}) : YAML::Node();
          if (steps && steps.IsSequence())
            for (const auto& step : steps) {
              if (!step.IsMap()) continue;
              if (step["run"]) scripts.emplace_back(yaml_scalar(step["run"]), yaml_line(step["run"]));
              if (step["uses"]) {
                std::string text = "uses: " + yaml_scalar(step["uses"]);
                if (step["with"] && step["with"].IsMap())
                  for (const auto& w : step["with"]) text += " " + yaml_scalar(w.first) + "=" + yaml_scalar(w.second);
                scripts.emplace_back(text, yaml_line(step["uses"]));
              }
            }
          jobs.emplace_back("jobs." + yaml_scalar(job.first), std::move(scripts));
        }
      } else {
        for (const auto& job : doc) {
          if (!job.second.IsMap()) continue;
          std::vector<std::pair<std::string, std::size_t>> scripts;
          for (const char* key : {"before_script", "script", "after_script"}) {
            const YAML::Node s = job.second[key];
            if (!s) continue;
            if (s.IsSequence()) {
              for (const auto& line : s) scripts.emplace_back(yaml_scalar(line), yaml_line(line));
            } else {
              scripts.emplace_back(yaml_scalar(s), yaml_line(s));
            }
          }
          if (!scripts.empty()) jobs.emplace_back(yaml_scalar(job.first), std::move(scripts));
        }
      }
      for (const auto& entry : jobs)
        for_structural("workflow", "unverified-model-download", [&, &job = entry.first, &scripts = entry.second](const StaticRule& rule) {
          const std::string download = param(rule, "download_regex");
          const std::string verify = param(rule, "verify_regex");
          const std::string load = param(rule, "load_regex");
          bool verified = false;
          for (const auto& [text, line] : scripts)
            if (search(verify, text)) verified = true;
          if (verified) return;
          bool loads = load.empty();
          for (const auto& [text, line] : scripts)
            if (search(load, text)) loads = true;
          if (!loads) return;
          for (const auto& [text, line] : scripts) {
            if (!search(download, text)) continue;
            // report the line of the script that downloads
            std::size_t offset = 0;
            std::string shown = text;
            std::size_t pos = 0;
            while (pos <= text.size()) {
              auto eol = text.find('\n', pos);
              if (eol == std::string::npos) eol = text.size();
              const std::string row = text.substr(pos, eol - pos);
              if (search(download, row)) {
                shown = row;
                break;
              }
              ++offset;
              pos = eol + 1;
            }
            // a block scalar (run: |) starts on the line after the key
            const std::size_t at = line + offset + (text.find('\n') != std::string::npos ? 1 : 0);
            emit(rule.info, Site{path, at, job},
                 job + " downloads a model (`" + printable(shown, 200) +
                     "`) and no step checks a digest or signature before it is used");
            break;
          }
        });
    }
  }

  // ---- key = value configs ----

  void review_properties(const std::string& path, std::string_view content) {
    const auto entries = detail::parse_properties(content);
    const std::string name = fs::path(path).filename().string();
    for (const auto& rule : rules_.static_rules) {
      if (rule.kind != StaticRule::Kind::Properties) continue;
      bool file_matches = false;
      for (const auto& glob : rule.properties.files)
        if (fnmatch(glob.c_str(), name.c_str(), 0) == 0) file_matches = true;
      if (!file_matches) continue;
      std::vector<std::string> why;
      std::size_t line = 0;
      bool holds = true;
      for (const auto& c : rule.properties.all) {
        const detail::PropertyEntry* found = nullptr;
        for (const auto& key : c.keys) {
          for (const auto& e : entries)
            if (e.key == key) found = &e;  // the last assignment wins
          if (found) break;
        }
        std::string value;
        if (found) {
          value = found->value;
          if (!line) line = found->line;
          why.push_back(found->key + "=" + printable(value, 120));
        } else if (c.default_value) {
          value = *c.default_value;
          why.push_back(c.keys.front() + " not set (default " + (value.empty() ? std::string("empty") : value) + ")");
        } else {
          holds = false;
          break;
        }
        if (!c.matches.empty() && !search(c.matches, value)) holds = false;
        if (!c.not_matches.empty() && search(c.not_matches, value)) holds = false;
        if (!holds) break;
      }
      if (!holds) continue;
      std::string evidence;
      for (const auto& w : why) evidence += (evidence.empty() ? "" : "; ") + w;
      emit(rule.info, Site{path, line, {}}, evidence);
    }
  }

  // ---- scripts, Procfiles, systemd units, supervisord ----

  void review_script(const std::string& path, std::string_view content) {
    const std::string name = lower(fs::path(path).filename().string());
    if (name == "procfile" || ends_with(name, ".service") || ends_with(name, ".conf")) {
      // systemd and supervisord apply Environment= to the unit whatever its position: read it first.
      Environment env;
      for (std::size_t pos = 0; pos < content.size();) {
        auto eol = content.find('\n', pos);
        if (eol == std::string_view::npos) eol = content.size();
        const std::string row(content.substr(pos, eol - pos));
        pos = eol + 1;
        if (row.rfind("Environment=", 0) == 0 || row.rfind("environment=", 0) == 0)
          for (const auto& [k, v] : detail::parse_env_assignments(row.substr(12), false)) env[k] = v;
      }
      std::size_t pos = 0, line = 0;
      while (pos < content.size()) {
        auto eol = content.find('\n', pos);
        if (eol == std::string_view::npos) eol = content.size();
        std::string row(content.substr(pos, eol - pos));
        pos = eol + 1;
        ++line;
        std::string command;
        if (name == "procfile") {
          const auto colon = row.find(':');
          if (colon == std::string::npos || row.empty() || row[0] == '#') continue;
          command = row.substr(colon + 1);
        } else if (row.rfind("ExecStart=", 0) == 0) {
          command = row.substr(10);
          while (!command.empty() && (command[0] == '-' || command[0] == '@' || command[0] == '+' || command[0] == '!')) command.erase(0, 1);
        } else if (row.rfind("command=", 0) == 0 || row.rfind("command =", 0) == 0) {
          command = row.substr(row.find('=') + 1);
        } else {
          continue;
        }
        check_invocations(detail::parse_shell(command, env, line), path, fs::path(path).filename().string());
      }
      return;
    }
    check_invocations(detail::parse_shell(content, {}, 1), path, "script");
  }

  // ---- notebooks ----

  static std::string joined(const nlohmann::json& value) {
    if (value.is_string()) return value.get<std::string>();
    std::string out;
    if (value.is_array())
      for (const auto& part : value)
        if (part.is_string()) out += part.get<std::string>();
    return out;
  }

  void review_notebook(const std::string& path, std::string_view content) {
    bool too_deep = false;
    const auto doc = nlohmann::json::parse(
        content,
        [&too_deep](int depth, nlohmann::json::parse_event_t, nlohmann::json&) {
          if (depth > kMaxYamlDepth) too_deep = true;
          return depth <= kMaxYamlDepth;
        },
        false);
    if (too_deep) throw core::FormatError("notebook JSON nested deeper than " + std::to_string(kMaxYamlDepth) + " levels");
    if (doc.is_discarded() || !doc.is_object()) throw core::FormatError("not a Jupyter notebook (the file is not a JSON object)");
    if (!doc.contains("cells") || !doc["cells"].is_array())
      throw core::FormatError("not a Jupyter notebook (no 'cells' list; nbformat 4 is read)");
    std::vector<const StaticRule*> rules;
    for (const auto& rule : rules_.static_rules)
      if (rule.kind == StaticRule::Kind::Structural && rule.structural.kind == "notebook") rules.push_back(&rule);
    if (rules.empty()) return;
    if (!detector_) detector_ = std::make_unique<privacy::Detector>();
    const auto& cells = doc["cells"];
    for (std::size_t i = 0; i < cells.size(); ++i) {
      const auto& cell = cells[i];
      if (!cell.is_object()) continue;
      const std::string type = cell.contains("cell_type") && cell["cell_type"].is_string() ? cell["cell_type"].get<std::string>() : "";
      std::vector<std::pair<std::string, std::string>> texts;  // where, text
      if (cell.contains("source")) texts.emplace_back("source", joined(cell["source"]));
      if (cell.contains("outputs") && cell["outputs"].is_array()) {
        const auto& outputs = cell["outputs"];
        for (std::size_t j = 0; j < outputs.size(); ++j) {
          const auto& out = outputs[j];
          if (!out.is_object()) continue;
          std::string text;
          if (out.contains("text")) text += joined(out["text"]);
          if (out.contains("data") && out["data"].is_object())
            for (const char* mime : {"text/plain", "text/html", "text/markdown", "application/json"})
              if (out["data"].contains(mime)) {
                const auto& d = out["data"][mime];
                text += d.is_string() || d.is_array() ? joined(d) : d.dump();
                text += '\n';
              }
          if (out.contains("traceback")) text += joined(out["traceback"]);
          texts.emplace_back("outputs[" + std::to_string(j) + "]", text);
        }
      }
      for (const auto& [where, text] : texts) {
        if (text.empty()) continue;
        const bool is_output = where != "source";
        const auto detections = detector_->scan(text);
        for (const auto& d : detections) {
          const bool secret = d.entity_type == "SECRET";
          for (const StaticRule* rule : rules) {
            if (rule->structural.check != "sensitive-data") continue;
            const std::string entities = param(*rule, "entities", "secret");
            const std::string in = param(*rule, "where", "source");
            if ((entities == "secret") != secret) continue;
            if ((in == "outputs") != is_output) continue;
            const std::size_t line_in_cell = static_cast<std::size_t>(std::count(text.begin(), text.begin() + static_cast<long>(d.begin), '\n')) + 1;
            core::Finding f = make_finding(rule->info, "");
            const std::string sample = privacy::masked_sample(std::string_view(text).substr(d.begin, d.end - d.begin), d.entity_type);
            f.evidence = "cell " + std::to_string(i + 1) + (type.empty() ? "" : " (" + type + ")") + " " + where + ", line " +
                         std::to_string(line_in_cell) + ": " + d.entity_type + " (" + d.rule_id + ") " + sample;
            if (++per_rule_[rule->info.id] > kMaxFindingsPerRulePerFile) continue;
            f.location.file = path;
            f.location.row = i + 1;
            f.location.line = line_in_cell;
            f.location.column = "cells[" + std::to_string(i) + "]." + where;
            f.properties_json = f.properties_json.substr(0, f.properties_json.size() - 1) + ",\"entity_type\":\"" + d.entity_type +
                                "\",\"detector_rule\":\"" + d.rule_id + "\"}";
            findings_->push_back(std::move(f));
          }
        }
      }
    }
  }
};

bool skipped_directory(const std::string& name) {
  static const std::set<std::string> skip = {".git", ".hg", ".svn", "node_modules", ".venv", "venv", "__pycache__",
                                             ".tox", ".mypy_cache", ".pytest_cache", ".ipynb_checkpoints"};
  return skip.count(name) > 0;
}

std::string read_file(const fs::path& path, std::uint64_t size) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw core::Error("cannot open " + path.string(), "check that the file exists and is readable");
  std::string text(size, '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  text.resize(static_cast<std::size_t>(in.gcount()));
  return text;
}

}  // namespace

StaticReport review_text(const std::string& name, std::string_view content, const RuleSet& rules) {
  StaticReport report;
  Reviewer reviewer(rules);
  reviewer.review(name, content, report);
  return report;
}

StaticReport review_paths(const std::vector<fs::path>& paths, const RuleSet& rules, const StaticOptions& options) {
  StaticReport report;
  Reviewer reviewer(rules);
  std::size_t done = 0;
  const auto visit = [&](const fs::path& file, const std::string& shown) {
    std::error_code ec;
    const auto size = fs::file_size(file, ec);
    if (ec) return;
    if (options.progress) options.progress(done, shown);
    ++done;
    if (classify(shown, {}) == FileKind::None && !is_yaml_name(lower(file.filename().string()))) {
      ++report.skipped;
      return;
    }
    if (size > options.max_file_bytes) {
      core::Finding f = make_finding(too_large_rule(), std::to_string(size) + " bytes, over the limit of " +
                                                           std::to_string(options.max_file_bytes));
      f.location.file = shown;
      report.findings.push_back(std::move(f));
      return;
    }
    reviewer.review(shown, read_file(file, size), report);
  };
  for (const auto& root : paths) {
    std::error_code ec;
    const auto status = options.follow_symlinks ? fs::status(root, ec) : fs::symlink_status(root, ec);
    if (ec || !fs::exists(status))
      throw core::Error("cannot read " + root.string() + ": no such file or folder", "give a repository or deployment folder, or files in it");
    if (fs::is_regular_file(status)) {
      visit(root, root.string());
      continue;
    }
    if (!fs::is_directory(status)) continue;
    auto options_it = fs::directory_options::skip_permission_denied;
    if (options.follow_symlinks) options_it |= fs::directory_options::follow_directory_symlink;
    fs::recursive_directory_iterator it(root, options_it, ec);
    if (ec) throw core::Error("cannot list " + root.string() + ": " + ec.message(), "check the folder's permissions");
    for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) break;
      const auto& entry = *it;
      const std::string name = entry.path().filename().string();
      std::error_code sec;
      const auto st = options.follow_symlinks ? entry.status(sec) : entry.symlink_status(sec);
      if (fs::is_directory(st)) {
        if (skipped_directory(name) || static_cast<std::size_t>(it.depth()) >= options.max_depth) it.disable_recursion_pending();
        continue;
      }
      if (!fs::is_regular_file(st)) continue;
      if (done >= options.max_files) break;
      visit(entry.path(), entry.path().string());
    }
  }
  return report;
}

}  // namespace aegis::infra
