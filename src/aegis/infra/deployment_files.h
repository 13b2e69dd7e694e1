// Readers for the deployment files the static review understands: shell command lines, Dockerfiles
// and key = value configuration files. Internal to infra/. They read text only: nothing is expanded
// by a shell, fetched or run, and every reader is bounded in the words, lines and nesting it keeps.
#pragma once

#include <cstddef>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::infra::detail {

using Environment = std::map<std::string, std::string>;

// One program start as a deployment file describes it, wrappers removed: `exec`, `sudo -u x`, `nohup`,
// `env A=b`, `tini --`, `gosu user`, `uv run`, `conda run -n x`, `bash -c "..."` (its string is read
// as commands in turn) and `python -m module` (the program is then the module).
struct Invocation {
  std::string program;            // basename of the program, or the module of `python -m`
  std::vector<std::string> args;  // the arguments after it
  Environment env;                // the environment it starts with (file context + inline A=b)
  std::size_t line = 0;           // 1-based line in the file where the command starts
  std::string text;               // the words joined by spaces, for evidence
};

// The commands of a shell script or a command string: split at ; && || | & and newlines, quotes
// and backslashes as a POSIX shell reads them, comments dropped, `export A=b` lines added to the
// environment of later commands. `first_line` is the line of the script's first character.
std::vector<Invocation> parse_shell(std::string_view script, const Environment& env, std::size_t first_line = 1);

// An exec-form argument vector (Dockerfile JSON form, Kubernetes command + args) as an invocation.
std::vector<Invocation> invocation_from_words(std::vector<std::string> words, const Environment& env, std::size_t line);

// The value of a flag: "--host 0.0.0.0", "--host=0.0.0.0", "-p 80"; an empty string when the flag
// is given without a value; nullopt when it is absent.
std::optional<std::string> flag_value(const Invocation& invocation, std::string_view flag);

// Expands $NAME, ${NAME} and ${NAME:-default} from `env`; nullopt when a variable is unknown (the
// value is then not known statically).
std::optional<std::string> expand_variables(std::string_view text, const Environment& env);

// Whether an address (host, host:port, [v6]:port, a URL) is loopback; nullopt when it cannot be told.
std::optional<bool> is_loopback_address(std::string_view address);

// ---- Dockerfiles ----
struct DockerInstruction {
  std::string keyword;  // upper case: FROM, RUN, CMD, ENTRYPOINT, ENV, ARG, USER, EXPOSE, ADD, COPY, ...
  std::string args;     // the rest of the logical line (continuations joined, heredoc bodies appended)
  std::size_t line = 0;
};
struct DockerStage {
  std::string image;  // FROM's image reference as written
  std::string alias;  // AS name
  std::size_t line = 0;
  std::vector<DockerInstruction> instructions;  // after FROM
};
struct Dockerfile {
  std::vector<DockerInstruction> preamble;  // ARGs before the first FROM
  std::vector<DockerStage> stages;
};
Dockerfile parse_dockerfile(std::string_view text);

// ENV and ARG arguments: "A=1 B='two words'" or the legacy "A value with spaces".
std::vector<std::pair<std::string, std::string>> parse_env_assignments(std::string_view args, bool legacy_allowed);

// The exec-form JSON array of CMD/ENTRYPOINT/RUN, or nullopt for the shell form.
std::optional<std::vector<std::string>> parse_exec_form(std::string_view args);

// ---- key = value files ----
struct PropertyEntry {
  std::string key;
  std::string value;  // quotes around the whole value removed
  std::size_t line = 0;
};
// Java .properties (key=value, key: value, key value, # and ! comments, \ continuations) and Python
// configuration assignments (c.ServerApp.token = '').
std::vector<PropertyEntry> parse_properties(std::string_view text);

// An image reference split: registry/name, tag, digest ("docker.io/library/python:3.11@sha256:..").
struct ImageReference {
  std::string name;    // without registry default prefixes ("python", "vllm/vllm-openai", "ghcr.io/x/y")
  std::string tag;     // "" when none
  std::string digest;  // "sha256:..." or ""
};
ImageReference parse_image_reference(std::string_view reference);

}  // namespace aegis::infra::detail
