// Shell, Dockerfile and properties readers for the static review (see deployment_files.h).
#include "aegis/infra/deployment_files.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>

namespace aegis::infra::detail {
namespace {

constexpr std::size_t kMaxWords = 4096;         // per command
constexpr std::size_t kMaxCommands = 20000;     // per script
constexpr int kMaxNesting = 4;                  // bash -c "bash -c '...'"
constexpr std::size_t kMaxInstructions = 100000;

std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

std::string upper(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(), [](unsigned char c) { return static_cast<char>(std::toupper(c)); });
  return out;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.remove_suffix(1);
  return text;
}

bool is_name_char(char c, bool first) {
  return c == '_' || std::isalpha(static_cast<unsigned char>(c)) || (!first && std::isdigit(static_cast<unsigned char>(c)));
}

// "NAME=value" at the start of a command is an assignment when NAME is a shell name.
std::optional<std::pair<std::string, std::string>> assignment(const std::string& word) {
  const auto eq = word.find('=');
  if (eq == std::string::npos || eq == 0) return std::nullopt;
  for (std::size_t i = 0; i < eq; ++i)
    if (!is_name_char(word[i], i == 0)) return std::nullopt;
  return std::make_pair(word.substr(0, eq), word.substr(eq + 1));
}

std::string basename_of(const std::string& path) {
  const auto slash = path.find_last_of('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

struct Command {
  std::vector<std::string> words;
  std::size_t line = 0;
};

// POSIX-shell word splitting without expansion. Variables stay as written ($HOST) so that rules can
// resolve them against the environment they know.
std::vector<Command> split_commands(std::string_view text, std::size_t first_line) {
  std::vector<Command> commands;
  Command current;
  std::string word;
  bool in_word = false;
  std::size_t line = first_line;
  current.line = line;
  const auto end_word = [&] {
    if (in_word && current.words.size() < kMaxWords) current.words.push_back(word);
    word.clear();
    in_word = false;
  };
  const auto end_command = [&] {
    end_word();
    if (!current.words.empty() && commands.size() < kMaxCommands) commands.push_back(std::move(current));
    current = Command{};
    current.line = line;
  };
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (!in_word && current.words.empty() && word.empty()) current.line = line;
    if (c == '\n') {
      ++line;
      end_command();
      continue;
    }
    if (c == '\\') {
      if (i + 1 < text.size()) {
        if (text[i + 1] == '\n') {
          ++line;
          ++i;
          continue;
        }
        word += text[++i];
        in_word = true;
      }
      continue;
    }
    if (c == '\'') {
      in_word = true;
      for (++i; i < text.size() && text[i] != '\''; ++i) {
        if (text[i] == '\n') ++line;
        word += text[i];
      }
      continue;
    }
    if (c == '"') {
      in_word = true;
      for (++i; i < text.size() && text[i] != '"'; ++i) {
        if (text[i] == '\\' && i + 1 < text.size() &&
            (text[i + 1] == '"' || text[i + 1] == '\\' || text[i + 1] == '$' || text[i + 1] == '`' || text[i + 1] == '\n')) {
          if (text[i + 1] == '\n') {
            ++line;
            ++i;
            continue;
          }
          word += text[++i];
          continue;
        }
        if (text[i] == '\n') ++line;
        word += text[i];
      }
      continue;
    }
    if (c == '#' && !in_word) {
      while (i + 1 < text.size() && text[i + 1] != '\n') ++i;
      continue;
    }
    if (c == ';' || c == '&' || c == '|' || c == '(' || c == ')') {
      // `2>&1` keeps its '&' inside a redirection, not a command separator
      if (c == '&' && !word.empty() && word.back() == '>') {
        word += c;
        continue;
      }
      end_command();
      continue;
    }
    if (c == ' ' || c == '\t' || c == '\r') {
      end_word();
      continue;
    }
    word += c;
    in_word = true;
  }
  end_command();
  // Redirections are not arguments.
  for (auto& command : commands) {
    std::vector<std::string> kept;
    for (std::size_t i = 0; i < command.words.size(); ++i) {
      const std::string& w = command.words[i];
      std::size_t digits = 0;
      while (digits < w.size() && std::isdigit(static_cast<unsigned char>(w[digits]))) ++digits;
      if (digits < w.size() && (w[digits] == '>' || w[digits] == '<')) {
        std::size_t op = digits;
        while (op < w.size() && (w[op] == '>' || w[op] == '<' || w[op] == '&')) ++op;
        if (op == w.size() && i + 1 < command.words.size()) ++i;  // "> file": the target is the next word
        continue;
      }
      kept.push_back(w);
    }
    command.words = std::move(kept);
  }
  return commands;
}

void normalize(std::vector<std::string> words, Environment env, std::size_t line, int depth, std::vector<Invocation>& out);

// Removes one wrapper from the front of `words`; false when the first word is the real program.
bool strip_wrapper(std::vector<std::string>& words, Environment& env) {
  if (words.empty()) return false;
  const std::string program = basename_of(words.front());
  const auto drop = [&](std::size_t n) { words.erase(words.begin(), words.begin() + static_cast<long>(std::min(n, words.size()))); };
  const auto drop_options = [&](const std::vector<std::string>& with_value) {
    while (!words.empty() && words.front().size() > 1 && words.front()[0] == '-') {
      const std::string option = words.front();
      drop(1);
      if (option == "--") break;
      if (std::find(with_value.begin(), with_value.end(), option) != with_value.end()) drop(1);
    }
  };
  if (program == "exec" || program == "nohup" || program == "setsid" || program == "time" || program == "command" ||
      program == "dumb-init" || program == "catatonit") {
    drop(1);
    drop_options({});
    return true;
  }
  if (program == "tini" || program == "tini-static") {
    drop(1);
    drop_options({"-s", "-e", "-p", "-l"});
    return true;
  }
  if (program == "sudo") {
    drop(1);
    drop_options({"-u", "-g", "-h", "-p", "-U", "-C", "-D", "-r", "-t"});
    return true;
  }
  if (program == "nice" || program == "ionice" || program == "stdbuf") {
    drop(1);
    drop_options({"-n", "-c"});
    return true;
  }
  if (program == "timeout") {
    drop(1);
    drop_options({"-s", "-k", "--signal", "--kill-after"});
    drop(1);  // the duration
    return true;
  }
  if (program == "gosu" || program == "su-exec" || program == "chpst") {
    drop(2);  // the user
    return true;
  }
  if (program == "env") {
    drop(1);
    drop_options({"-u", "-C", "-S"});
    while (!words.empty()) {
      const auto a = assignment(words.front());
      if (!a) break;
      env[a->first] = a->second;
      drop(1);
    }
    return true;
  }
  if ((program == "uv" || program == "poetry" || program == "pipenv" || program == "pdm" || program == "hatch") &&
      words.size() > 1 && words[1] == "run") {
    drop(2);
    drop_options({"--with", "--python", "-p", "--env-file", "--project", "--directory", "--extra", "--group"});
    return true;
  }
  if ((program == "conda" || program == "mamba" || program == "micromamba") && words.size() > 1 && words[1] == "run") {
    drop(2);
    drop_options({"-n", "--name", "-p", "--prefix", "--cwd"});
    return true;
  }
  return false;
}

bool is_shell(const std::string& program) {
  return program == "sh" || program == "bash" || program == "dash" || program == "zsh" || program == "ash" || program == "ksh";
}

bool is_python(const std::string& program) {
  if (program.rfind("python", 0) != 0) return false;
  for (std::size_t i = 6; i < program.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(program[i])) && program[i] != '.') return false;
  return true;
}

void normalize(std::vector<std::string> words, Environment env, std::size_t line, int depth, std::vector<Invocation>& out) {
  for (int guard = 0; guard < 16 && !words.empty(); ++guard) {
    while (!words.empty()) {
      const auto a = assignment(words.front());
      if (!a) break;
      env[a->first] = a->second;
      words.erase(words.begin());
    }
    if (!strip_wrapper(words, env)) break;
  }
  if (words.empty()) return;
  const std::string program = basename_of(words.front());
  if (is_shell(program)) {
    // sh -c 'string' [name args...]; sh -lc, -ec, -xc; sh script.sh is a script we may not have.
    for (std::size_t i = 1; i < words.size(); ++i) {
      const std::string& w = words[i];
      if (w.size() > 1 && w[0] == '-' && w.find('c') != std::string::npos && w.find('-', 1) == std::string::npos) {
        std::size_t script = i + 1;
        if (script < words.size() && words[script] == "--") ++script;  // bash -c -- 'command'
        if (script < words.size() && depth < kMaxNesting) {
          for (auto& command : split_commands(words[script], line))
            normalize(std::move(command.words), env, line, depth + 1, out);
        }
        return;
      }
      if (w.empty() || w[0] != '-') break;
    }
  }
  Invocation invocation;
  invocation.line = line;
  invocation.env = std::move(env);
  std::size_t first_arg = 1;
  invocation.program = program;
  if (is_python(program)) {
    for (std::size_t i = 1; i < words.size(); ++i) {
      const std::string& w = words[i];
      if (w == "-m" && i + 1 < words.size()) {
        invocation.program = words[i + 1];
        first_arg = i + 2;
        break;
      }
      if (w.rfind("-m", 0) == 0 && w.size() > 2 && w[2] != '-') {  // -mvllm.entrypoints...
        invocation.program = w.substr(2);
        first_arg = i + 1;
        break;
      }
      if (w == "-X" || w == "-W") {
        ++i;
        continue;
      }
      if (!w.empty() && w[0] == '-') continue;
      invocation.program = basename_of(w);  // python app.py
      first_arg = i + 1;
      break;
    }
  }
  invocation.args.assign(words.begin() + static_cast<long>(std::min(first_arg, words.size())), words.end());
  for (const auto& w : words) {
    if (!invocation.text.empty()) invocation.text += ' ';
    invocation.text += w;
    if (invocation.text.size() > 400) {
      invocation.text += " ...";
      break;
    }
  }
  out.push_back(std::move(invocation));
}

}  // namespace

std::vector<Invocation> parse_shell(std::string_view script, const Environment& env, std::size_t first_line) {
  std::vector<Invocation> out;
  Environment current = env;
  for (auto& command : split_commands(script, first_line)) {
    if (command.words.empty()) continue;
    if (command.words.front() == "export" || command.words.front() == "declare" || command.words.front() == "readonly" ||
        command.words.front() == "local") {
      for (std::size_t i = 1; i < command.words.size(); ++i)
        if (const auto a = assignment(command.words[i])) current[a->first] = a->second;
      continue;
    }
    // A line of assignments only sets shell variables for the rest of the script.
    bool only_assignments = true;
    for (const auto& w : command.words)
      if (!assignment(w)) only_assignments = false;
    if (only_assignments) {
      for (const auto& w : command.words) {
        const auto a = assignment(w);
        current[a->first] = a->second;
      }
      continue;
    }
    normalize(std::move(command.words), current, command.line, 0, out);
    if (out.size() > kMaxCommands) break;
  }
  return out;
}

std::vector<Invocation> invocation_from_words(std::vector<std::string> words, const Environment& env, std::size_t line) {
  std::vector<Invocation> out;
  if (words.size() > kMaxWords) words.resize(kMaxWords);
  normalize(std::move(words), env, line, 0, out);
  return out;
}

std::optional<std::string> flag_value(const Invocation& invocation, std::string_view flag) {
  const auto& args = invocation.args;
  std::optional<std::string> found;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == flag) {
      if (i + 1 < args.size() && !(args[i + 1].size() > 1 && args[i + 1][0] == '-' && !std::isdigit(static_cast<unsigned char>(args[i + 1][1]))))
        found = args[i + 1];
      else
        found = std::string();
    } else if (a.size() > flag.size() && a.compare(0, flag.size(), flag) == 0 && a[flag.size()] == '=') {
      found = a.substr(flag.size() + 1);
    }
  }
  return found;  // the last occurrence wins, as with most argument parsers
}

std::optional<std::string> expand_variables(std::string_view text, const Environment& env) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] != '$' || i + 1 >= text.size()) {
      out += text[i];
      continue;
    }
    std::string name;
    std::optional<std::string> fallback;
    if (text[i + 1] == '{') {
      const auto close = text.find('}', i + 2);
      if (close == std::string_view::npos) return std::nullopt;
      std::string_view inner = text.substr(i + 2, close - i - 2);
      const auto dash = inner.find(":-");
      const auto plain_dash = inner.find('-');
      if (dash != std::string_view::npos) {
        name = std::string(inner.substr(0, dash));
        fallback = std::string(inner.substr(dash + 2));
      } else if (plain_dash != std::string_view::npos) {
        name = std::string(inner.substr(0, plain_dash));
        fallback = std::string(inner.substr(plain_dash + 1));
      } else {
        name = std::string(inner);
      }
      i = close;
    } else if (is_name_char(text[i + 1], true)) {
      std::size_t j = i + 1;
      while (j < text.size() && is_name_char(text[j], false)) ++j;
      name = std::string(text.substr(i + 1, j - i - 1));
      i = j - 1;
    } else {
      out += text[i];
      continue;
    }
    const auto it = env.find(name);
    if (it != env.end() && !(fallback && it->second.empty())) {
      if (it->second.find('$') != std::string::npos) return std::nullopt;  // no recursive expansion
      out += it->second;
    } else if (fallback) {
      out += *fallback;
    } else {
      return std::nullopt;
    }
  }
  return out;
}

std::optional<bool> is_loopback_address(std::string_view address) {
  std::string_view a = trim(address);
  if (const auto scheme = a.find("://"); scheme != std::string_view::npos) a.remove_prefix(scheme + 3);
  if (const auto slash = a.find('/'); slash != std::string_view::npos) a = a.substr(0, slash);
  std::string host;
  if (!a.empty() && a.front() == '[') {
    const auto close = a.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = std::string(a.substr(1, close - 1));
  } else if (std::count(a.begin(), a.end(), ':') == 1) {
    host = std::string(a.substr(0, a.find(':')));
  } else {
    host = std::string(a);
  }
  host = lower(host);
  if (host.empty()) return false;  // ":8080" binds every interface
  if (host.find('$') != std::string::npos || host.find('{') != std::string::npos) return std::nullopt;
  if (host == "localhost" || host == "ip6-localhost" || host == "::1" || host == "0:0:0:0:0:0:0:1") return true;
  if (host.rfind("127.", 0) == 0) return true;
  return false;
}

Dockerfile parse_dockerfile(std::string_view text) {
  Dockerfile file;
  char escape = '\\';
  std::size_t pos = 0;
  std::size_t line_no = 0;
  bool directives_open = true;
  std::size_t count = 0;
  const auto next_line = [&](std::string_view& out) -> bool {
    if (pos >= text.size()) return false;
    const auto eol = text.find('\n', pos);
    const std::size_t end = eol == std::string_view::npos ? text.size() : eol;
    out = text.substr(pos, end - pos);
    if (!out.empty() && out.back() == '\r') out.remove_suffix(1);
    pos = end + 1;
    ++line_no;
    return true;
  };
  std::string_view raw;
  while (next_line(raw)) {
    std::string_view line = trim(raw);
    if (line.empty()) continue;
    if (line.front() == '#') {
      if (directives_open) {
        std::string directive = lower(trim(line.substr(1)));
        if (directive.rfind("escape=", 0) == 0 && directive.size() > 7) escape = directive[7];
      }
      continue;
    }
    directives_open = false;
    DockerInstruction instruction;
    instruction.line = line_no;
    std::string logical;
    std::string_view current = line;
    for (;;) {
      std::string_view piece = trim(current);
      const bool continued = !piece.empty() && piece.back() == escape;
      if (continued) piece = trim(piece.substr(0, piece.size() - 1));
      if (!logical.empty()) logical += ' ';
      logical += std::string(piece);
      if (!continued || logical.size() > (1u << 20)) break;
      // comment lines inside a continuation are dropped, as BuildKit does
      std::string_view follow;
      bool got = false;
      while (next_line(follow)) {
        const auto t = trim(follow);
        if (t.empty() || t.front() == '#') continue;
        got = true;
        break;
      }
      if (!got) break;
      current = follow;
    }
    const auto space = logical.find_first_of(" \t");
    instruction.keyword = upper(logical.substr(0, space));
    instruction.args = space == std::string::npos ? std::string() : std::string(trim(std::string_view(logical).substr(space + 1)));
    // Heredocs: RUN <<EOF ... EOF (the body is part of the instruction).
    if (const auto heredoc = instruction.args.find("<<"); heredoc != std::string::npos && instruction.keyword != "ENV") {
      std::size_t k = heredoc + 2;
      if (k < instruction.args.size() && instruction.args[k] == '-') ++k;
      std::string delimiter;
      while (k < instruction.args.size() && (instruction.args[k] == '"' || instruction.args[k] == '\'')) ++k;
      while (k < instruction.args.size() && is_name_char(instruction.args[k], false)) delimiter += instruction.args[k++];
      if (!delimiter.empty()) {
        std::string body;
        std::string_view follow;
        while (next_line(follow)) {
          if (trim(follow) == delimiter) break;
          if (body.size() < (1u << 20)) {
            body += std::string(follow);
            body += '\n';
          }
        }
        instruction.args = instruction.args.substr(0, heredoc) + "\n" + body;
      }
    }
    if (++count > kMaxInstructions) break;
    if (instruction.keyword == "FROM") {
      DockerStage stage;
      stage.line = instruction.line;
      std::vector<std::string> words;
      for (auto& command : split_commands(instruction.args, instruction.line))
        for (auto& w : command.words) words.push_back(std::move(w));
      std::size_t i = 0;
      while (i < words.size() && words[i].rfind("--", 0) == 0) ++i;  // --platform=...
      if (i < words.size()) stage.image = words[i];
      if (i + 2 < words.size() && lower(words[i + 1]) == "as") stage.alias = words[i + 2];
      file.stages.push_back(std::move(stage));
    } else if (file.stages.empty()) {
      file.preamble.push_back(std::move(instruction));
    } else {
      file.stages.back().instructions.push_back(std::move(instruction));
    }
  }
  return file;
}

std::vector<std::pair<std::string, std::string>> parse_env_assignments(std::string_view args, bool legacy_allowed) {
  std::vector<std::pair<std::string, std::string>> out;
  std::vector<std::string> words;
  for (auto& command : split_commands(args, 1))
    for (auto& w : command.words) words.push_back(std::move(w));
  if (words.empty()) return out;
  if (legacy_allowed && words.front().find('=') == std::string::npos) {
    // ENV NAME the rest of the line
    std::string_view rest = trim(args);
    const auto space = rest.find_first_of(" \t");
    if (space == std::string_view::npos) {
      out.emplace_back(std::string(rest), std::string());
    } else {
      std::string value;
      for (std::size_t i = 1; i < words.size(); ++i) value += (i > 1 ? " " : "") + words[i];
      out.emplace_back(words.front(), value);
    }
    return out;
  }
  for (const auto& w : words) {
    const auto eq = w.find('=');
    if (eq == std::string::npos)
      out.emplace_back(w, std::string());  // ARG NAME without a default
    else
      out.emplace_back(w.substr(0, eq), w.substr(eq + 1));
  }
  return out;
}

std::optional<std::vector<std::string>> parse_exec_form(std::string_view args) {
  const auto t = trim(args);
  if (t.empty() || t.front() != '[') return std::nullopt;
  const auto doc = nlohmann::json::parse(t, nullptr, false);
  if (doc.is_discarded() || !doc.is_array()) return std::nullopt;
  std::vector<std::string> words;
  for (const auto& item : doc) {
    if (!item.is_string()) return std::nullopt;
    words.push_back(item.get<std::string>());
    if (words.size() >= kMaxWords) break;
  }
  return words;
}

std::vector<PropertyEntry> parse_properties(std::string_view text) {
  std::vector<PropertyEntry> out;
  std::size_t pos = 0;
  std::size_t line_no = 0;
  while (pos < text.size() && out.size() < 100000) {
    auto eol = text.find('\n', pos);
    if (eol == std::string_view::npos) eol = text.size();
    std::string logical(trim(text.substr(pos, eol - pos)));
    pos = eol + 1;
    const std::size_t start_line = ++line_no;
    while (!logical.empty() && logical.back() == '\\' && pos < text.size() && logical.size() < (1u << 20)) {
      logical.pop_back();
      eol = text.find('\n', pos);
      if (eol == std::string_view::npos) eol = text.size();
      logical += std::string(trim(text.substr(pos, eol - pos)));
      pos = eol + 1;
      ++line_no;
    }
    if (logical.empty() || logical.front() == '#' || logical.front() == '!') continue;
    std::size_t sep = logical.find_first_of("=: \t");
    if (sep == std::string::npos) {
      out.push_back({logical, "", start_line});
      continue;
    }
    std::string key(trim(std::string_view(logical).substr(0, sep)));
    std::string_view value = trim(std::string_view(logical).substr(sep));
    if (!value.empty() && (value.front() == '=' || value.front() == ':')) value = trim(value.substr(1));
    // Python: trailing comments and u''/r'' prefixes; quotes around the whole value.
    if (value.size() >= 2 && (value.front() == 'u' || value.front() == 'r' || value.front() == 'b') &&
        (value[1] == '\'' || value[1] == '"'))
      value.remove_prefix(1);
    if (!value.empty() && (value.front() == '\'' || value.front() == '"')) {
      const char quote = value.front();
      const auto close = value.find(quote, 1);
      if (close != std::string_view::npos) value = value.substr(1, close - 1);
    } else if (const auto hash = value.find(" #"); hash != std::string_view::npos) {
      value = trim(value.substr(0, hash));
    }
    out.push_back({std::move(key), std::string(value), start_line});
  }
  return out;
}

ImageReference parse_image_reference(std::string_view reference) {
  ImageReference out;
  std::string_view r = trim(reference);
  if (const auto at = r.find('@'); at != std::string_view::npos) {
    out.digest = std::string(r.substr(at + 1));
    r = r.substr(0, at);
  }
  const auto slash = r.rfind('/');
  const auto colon = r.rfind(':');
  if (colon != std::string_view::npos && (slash == std::string_view::npos || colon > slash)) {
    out.tag = std::string(r.substr(colon + 1));
    r = r.substr(0, colon);
  }
  std::string name(r);
  for (const char* prefix : {"docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"})
    if (name.rfind(prefix, 0) == 0) {
      name = name.substr(std::string_view(prefix).size());
      break;
    }
  if (name.rfind("library/", 0) == 0) name = name.substr(8);
  out.name = lower(name);
  return out;
}

}  // namespace aegis::infra::detail
