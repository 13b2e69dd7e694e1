// The static half of `aegis audit-infra`: rule files, the shell/Dockerfile/properties readers, and
// every built-in rule against real-shaped deployment files (tests/infra/cases) on both sides.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <fstream>
#include <random>
#include <set>

#include "aegis/core/error.h"
#include "aegis/infra/deployment_files.h"
#include "aegis/infra/infra.h"
#include "test_support.h"

namespace aegis::infra {
namespace {

namespace fs = std::filesystem;

const RuleSet& rules() {
  static const RuleSet set = builtin_rules();
  return set;
}

std::set<std::string> fired(const StaticReport& report) {
  std::set<std::string> ids;
  for (const auto& f : report.findings) ids.insert(f.rule_id);
  return ids;
}

fs::path cases_dir() { return test::source_dir() / "tests" / "infra" / "cases"; }

void write(const fs::path& path, const std::string& text) {
  fs::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

std::string join(const std::set<std::string>& ids) {
  std::string out;
  for (const auto& id : ids) out += id + " ";
  return out;
}

// ---- the rule files ----

TEST(InfraRules, BuiltinRulesLoadWithCompleteMetadata) {
  const auto all = rules().all_rules();
  ASSERT_GE(rules().static_rules.size(), 40u);
  std::set<std::string> ids;
  for (const RuleInfo* r : all) {
    EXPECT_TRUE(ids.insert(r->id).second) << "duplicate id " << r->id;
    EXPECT_EQ(r->id.rfind("infra.", 0), 0u) << r->id;
    EXPECT_FALSE(r->title.empty()) << r->id;
    EXPECT_GE(r->remediation.size(), 40u) << r->id << ": a remediation tells the operator what to do";
    EXPECT_FALSE(r->atlas.empty()) << r->id;
    EXPECT_FALSE(r->nist_ai_rmf.empty()) << r->id;
  }
  // The issue's named threats carry their CVEs.
  const auto cves_of = [&](const std::string& id) {
    for (const RuleInfo* r : all)
      if (r->id == id) return r->cves;
    return std::vector<std::string>{};
  };
  EXPECT_EQ(cves_of("infra.ray.dashboard-exposed"), std::vector<std::string>{"CVE-2023-48022"});
  EXPECT_EQ(cves_of("infra.torchserve.management-api-exposed"), std::vector<std::string>{"CVE-2023-43654"});
}

TEST(InfraRules, AtlasIdsExistInTheAtlasDistribution) {
  const auto path = test::source_dir() / ".." / "shared" / "data" / "atlas" / "ATLAS.yaml";
  if (!fs::exists(path)) GTEST_SKIP() << "no ATLAS distribution at " << path;
  std::set<std::string> known;
  const YAML::Node root = YAML::LoadFile(path.string());
  for (const auto& matrix : root["matrices"])
    for (const auto& t : matrix["techniques"]) known.insert(t["id"].as<std::string>());
  ASSERT_GT(known.size(), 100u);
  for (const RuleInfo* r : rules().all_rules())
    for (const auto& id : r->atlas) EXPECT_TRUE(known.count(id)) << r->id << " names " << id << ", which ATLAS does not have";
}

TEST(InfraRules, AUserFileAddsARuleAndReplacesOneById) {
  test::TempDir dir;
  const auto file = dir.path / "my_rules.yaml";
  write(file, R"(service: inhouse
rules:
  - id: infra.inhouse.model-server-exposed
    severity: high
    title: Our model server listens on the network
    atlas: [AML.T0049]
    remediation: Bind serve-model to 127.0.0.1 and publish it through the gateway.
    command:
      program: serve-model
      host_flags: [--bind]
      default_host: 0.0.0.0
  - id: infra.docker.user-root
    severity: info
    title: Root containers (we accept them in this repository)
    atlas: [AML.T0049]
    remediation: Nothing to do here; the platform team accepted this risk in RISK-123.
    dockerfile: {check: user-root}
)");
  RuleSet set = builtin_rules();
  const std::size_t before = set.static_rules.size();
  load_rule_file(set, file);
  EXPECT_EQ(set.static_rules.size(), before + 1);

  const auto report = review_text("start.sh", "exec serve-model --bind 0.0.0.0:9000 --model /m\n", set);
  ASSERT_EQ(fired(report), std::set<std::string>{"infra.inhouse.model-server-exposed"});
  EXPECT_NE(report.findings[0].evidence.find("0.0.0.0:9000"), std::string::npos) << report.findings[0].evidence;
  EXPECT_TRUE(fired(review_text("start.sh", "serve-model --bind 127.0.0.1:9000\n", set)).empty());

  const auto docker = review_text("Dockerfile", "FROM python:3.12@sha256:abc\nCMD [\"python\"]\n", set);
  bool saw = false;
  for (const auto& f : docker.findings)
    if (f.rule_id == "infra.docker.user-root") {
      saw = true;
      EXPECT_EQ(f.severity, core::Severity::Info) << "the user's file replaced the built-in rule";
    }
  EXPECT_TRUE(saw);
}

TEST(InfraRules, BrokenRuleFilesNameTheFileTheLineAndTheProblem) {
  const auto error_of = [](const std::string& text) -> std::string {
    RuleSet set;
    try {
      load_rule_text(set, text, "my.yaml");
    } catch (const core::Error& e) {
      return e.what();
    }
    return "";
  };
  const std::string head = "service: x\nrules:\n  - id: infra.x.y\n    title: t\n    atlas: [AML.T0049]\n    remediation: r\n";
  EXPECT_NE(error_of(head + "    severity: severe\n    command: {program: x}\n").find("severity 'severe'"), std::string::npos);
  const std::string bad_regex = error_of(head + "    severity: high\n    command: {program: '(unclosed'}\n");
  EXPECT_NE(bad_regex.find("my.yaml:"), std::string::npos) << bad_regex;
  EXPECT_NE(bad_regex.find("not a valid RE2 regex"), std::string::npos) << bad_regex;
  EXPECT_NE(error_of(head + "    severity: high\n").find("exactly one matcher"), std::string::npos);
  EXPECT_NE(error_of("service: x\nrules:\n  - id: infra.x.y\n    severity: high\n    title: t\n    remediation: r\n    command: {program: x}\n")
                .find("names no ATLAS technique"),
            std::string::npos);
  EXPECT_NE(error_of("service: x\nfingerprints:\n  - request: {method: POST, path: /api}\n").find("only GET, HEAD and OPTIONS"),
            std::string::npos);
  EXPECT_NE(error_of("service: x\nrules: [").find("not valid YAML"), std::string::npos);
  EXPECT_NE(error_of(head + "    severity: high\n    cve: [CVE-23-1]\n    command: {program: x}\n").find("is not a CVE id"),
            std::string::npos);
}

// ---- the readers ----

TEST(InfraShell, WrappersQuotesAndNestedShellsReadAsTheProgramThatRuns) {
  using detail::parse_shell;
  auto inv = parse_shell("exec sudo -u svc env A=1 nohup python3 -u -m vllm.entrypoints.openai.api_server --host '0.0.0.0'", {});
  ASSERT_EQ(inv.size(), 1u);
  EXPECT_EQ(inv[0].program, "vllm.entrypoints.openai.api_server");
  EXPECT_EQ(detail::flag_value(inv[0], "--host").value_or("?"), "0.0.0.0");
  EXPECT_EQ(inv[0].env.at("A"), "1");

  inv = parse_shell("set -e\nexport OLLAMA_HOST=0.0.0.0\nbash -lc \"cd /srv && ollama serve\" > /var/log/o.log 2>&1 &\n", {});
  ASSERT_EQ(inv.size(), 3u);  // set, cd, ollama
  EXPECT_EQ(inv[2].program, "ollama");
  EXPECT_EQ(inv[2].args, std::vector<std::string>{"serve"});
  EXPECT_EQ(inv[2].env.at("OLLAMA_HOST"), "0.0.0.0");
  EXPECT_EQ(inv[2].line, 3u);

  inv = parse_shell("tini -- gosu app uv run mlflow server --host=0.0.0.0 \\\n  --port 5000 # comment --app-name x\n", {});
  ASSERT_EQ(inv.size(), 1u);
  EXPECT_EQ(inv[0].program, "mlflow");
  EXPECT_FALSE(detail::flag_value(inv[0], "--app-name").has_value()) << "a comment is not an argument";
  EXPECT_EQ(detail::flag_value(inv[0], "--port").value_or("?"), "5000");
  EXPECT_EQ(detail::flag_value(inv[0], "--host").value_or("?"), "0.0.0.0");

  // A flag given without a value, and one given twice (the last wins, as argparse does).
  inv = parse_shell("ray start --head --dashboard-host 127.0.0.1 --dashboard-host 0.0.0.0", {});
  EXPECT_EQ(detail::flag_value(inv[0], "--head").value_or("?"), "");
  EXPECT_EQ(detail::flag_value(inv[0], "--dashboard-host").value_or("?"), "0.0.0.0");

  // Nesting is bounded: a command string nested deeper than the limit is not followed forever.
  std::string deep = "ollama serve";
  for (int i = 0; i < 8; ++i) {  // quoting grows the text about threefold per level
    std::string quoted;
    for (char c : deep) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
    deep = "sh -c '" + quoted + "'";
  }
  EXPECT_LE(parse_shell(deep, {}).size(), 1u);
}

TEST(InfraShell, VariablesAndAddresses) {
  const detail::Environment env = {{"HOST", "0.0.0.0"}, {"EMPTY", ""}};
  EXPECT_EQ(detail::expand_variables("$HOST:8000", env).value_or("?"), "0.0.0.0:8000");
  EXPECT_EQ(detail::expand_variables("${HOST}", env).value_or("?"), "0.0.0.0");
  EXPECT_EQ(detail::expand_variables("${EMPTY:-127.0.0.1}", env).value_or("?"), "127.0.0.1");
  EXPECT_EQ(detail::expand_variables("${MISSING:-::1}", env).value_or("?"), "::1");
  EXPECT_FALSE(detail::expand_variables("$MISSING", env).has_value());
  for (const char* loopback : {"127.0.0.1", "localhost:8888", "[::1]:8000", "::1", "http://127.0.0.2:11434"})
    EXPECT_TRUE(detail::is_loopback_address(loopback).value_or(false)) << loopback;
  for (const char* open : {"0.0.0.0", "0.0.0.0:11434", "[::]:80", "::", "", ":8080", "10.1.2.3", "http://0.0.0.0:8000", "*"})
    EXPECT_FALSE(detail::is_loopback_address(open).value_or(true)) << open;
}

TEST(InfraDockerfile, ContinuationsHeredocsStagesAndExecForm) {
  const auto file = detail::parse_dockerfile(R"(# syntax=docker/dockerfile:1
ARG BASE=python:3.12
FROM --platform=linux/amd64 ${BASE} AS build
RUN apt-get update \
# a comment inside a continuation is dropped
 && apt-get install -y curl
RUN <<EOF
echo one
echo two
EOF
FROM build
ENV A=1 B="two words"
ENV LEGACY value with spaces
CMD ["python", "-m", "app"]
)");
  ASSERT_EQ(file.preamble.size(), 1u);
  ASSERT_EQ(file.stages.size(), 2u);
  EXPECT_EQ(file.stages[0].image, "${BASE}");
  EXPECT_EQ(file.stages[0].alias, "build");
  ASSERT_EQ(file.stages[0].instructions.size(), 2u);
  EXPECT_EQ(file.stages[0].instructions[0].args, "apt-get update && apt-get install -y curl");
  EXPECT_NE(file.stages[0].instructions[1].args.find("echo two"), std::string::npos);
  const auto& last = file.stages[1].instructions;
  ASSERT_EQ(last.size(), 3u);
  const auto env = detail::parse_env_assignments(last[0].args, true);
  ASSERT_EQ(env.size(), 2u);
  EXPECT_EQ(env[1].second, "two words");
  const auto legacy = detail::parse_env_assignments(last[1].args, true);
  ASSERT_EQ(legacy.size(), 1u);
  EXPECT_EQ(legacy[0].second, "value with spaces");
  EXPECT_EQ(detail::parse_exec_form(last[2].args).value_or(std::vector<std::string>{}),
            (std::vector<std::string>{"python", "-m", "app"}));
  EXPECT_EQ(last[2].line, 14u);
}

TEST(InfraProperties, JavaAndPythonAssignments) {
  const auto entries = detail::parse_properties(
      "# comment\n! also a comment\nmanagement_address=http://0.0.0.0:8081\nkey: value\nlong=a\\\n  b\n"
      "c.ServerApp.token = ''  # empty\nc.ServerApp.ip = u\"0.0.0.0\"\n");
  ASSERT_EQ(entries.size(), 5u);
  EXPECT_EQ(entries[0].value, "http://0.0.0.0:8081");
  EXPECT_EQ(entries[0].line, 3u);
  EXPECT_EQ(entries[1].value, "value");
  EXPECT_EQ(entries[2].value, "ab");
  EXPECT_EQ(entries[3].key, "c.ServerApp.token");
  EXPECT_EQ(entries[3].value, "");
  EXPECT_EQ(entries[4].value, "0.0.0.0");
}

// ---- every rule, true and false ----

TEST(InfraStatic, EveryCaseFiresItsRulesAndNotTheOthers) {
  const YAML::Node manifest = YAML::LoadFile((cases_dir() / "cases.yaml").string());
  ASSERT_GT(manifest.size(), 20u);
  for (const auto& item : manifest) {
    const std::string name = item.first.as<std::string>();
    const auto report = review_paths({cases_dir() / name}, rules());
    const auto ids = fired(report);
    EXPECT_FALSE(report.files.empty()) << name << ": no file was recognised";
    for (const auto& id : item.second["expect"]) EXPECT_TRUE(ids.count(id.as<std::string>())) << name << " should fire " << id << "; fired: " << join(ids);
    for (const auto& id : item.second["absent"]) EXPECT_FALSE(ids.count(id.as<std::string>())) << name << " should not fire " << id;
  }
}

// Notebooks are written by nbformat (the library Jupyter itself saves with), with fresh random
// secrets each run.
struct Notebooks {
  test::TempDir dir{"aegis_nb"};
  std::string openai_key, aws_secret;
  Notebooks() {
    std::mt19937_64 rng(std::random_device{}());
    const std::string alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    const auto random_text = [&](std::size_t n, const std::string& chars) {
      std::string s;
      for (std::size_t i = 0; i < n; ++i) s += chars[rng() % chars.size()];
      return s;
    };
    openai_key = "sk-proj-" + random_text(48, alphabet);
    aws_secret = random_text(40, alphabet + "/+");
    const auto script = dir.path / "make.py";
    write(script, R"PY(import sys, nbformat
from nbformat.v4 import new_notebook, new_code_cell, new_markdown_cell, new_output
out, openai_key, aws_secret = sys.argv[1], sys.argv[2], sys.argv[3]
leaky = new_notebook()
leaky.cells = [
  new_markdown_cell("# Churn model exploration"),
  new_code_cell("import openai\nopenai.api_key = \"%s\"\nowner = 'jane.doe@acme-corp.com'" % openai_key),
  new_code_cell("!env | grep AWS", outputs=[new_output("stream", name="stdout",
      text="AWS_REGION=eu-west-1\naws_secret_access_key=%s\n" % aws_secret)]),
  new_code_cell("df.head()", execution_count=3, outputs=[new_output("execute_result", execution_count=3, data={
      "text/plain": "   name          email                      ssn\n0  John Smith   john.smith@example-mail.com  536-22-8765\n1  Mary Jones   mary.jones@example-mail.com  412-67-2231"})]),
]
nbformat.write(leaky, out + "/leaky.ipynb")
clean = new_notebook()
clean.cells = [
  new_code_cell("import os, openai\nopenai.api_key = os.environ['OPENAI_API_KEY']"),
  new_code_cell("print(f'accuracy {acc:.3f}')", execution_count=1, outputs=[new_output("stream", name="stdout", text="accuracy 0.931\n")]),
]
nbformat.write(clean, out + "/clean.ipynb")
)PY");
    const std::string command = "/usr/bin/python3 " + script.string() + " " + dir.path.string() + " " + openai_key + " '" + aws_secret + "'";
    if (std::system(command.c_str()) != 0) throw std::runtime_error("python3 with nbformat (Debian python3-nbformat) could not write the notebooks");
  }
};

const std::vector<std::string> kNotebookRules = {"infra.notebook.secret-in-code", "infra.notebook.secret-in-output",
                                                  "infra.notebook.pii-in-output", "infra.notebook.pii-in-code"};

TEST(InfraStatic, NotebookSecretsAndPersonalDataAreFoundAndNeverEchoed) {
  Notebooks nb;
  const auto leaky = review_paths({nb.dir.path / "leaky.ipynb"}, rules());
  const auto ids = fired(leaky);
  for (const auto& id : kNotebookRules) EXPECT_TRUE(ids.count(id)) << id << "; fired: " << join(ids);
  for (const auto& f : leaky.findings) {
    EXPECT_EQ(f.evidence.find(nb.openai_key), std::string::npos) << "a report must not repeat the secret";
    EXPECT_EQ(f.evidence.find(nb.aws_secret), std::string::npos) << "a report must not repeat the secret";
    EXPECT_TRUE(f.location.row.has_value());
    if (f.rule_id == "infra.notebook.secret-in-output") {
      EXPECT_EQ(*f.location.row, 3u) << "the third cell printed the secret";
      EXPECT_EQ(f.location.column, "cells[2].outputs[0]");
      EXPECT_EQ(f.location.line.value_or(0), 2u);
    }
  }
  const auto clean = fired(review_paths({nb.dir.path / "clean.ipynb"}, rules()));
  for (const auto& id : kNotebookRules) EXPECT_FALSE(clean.count(id)) << id;
}

TEST(InfraStatic, EveryStaticRuleHasATrueAndAFalseCase) {
  const YAML::Node manifest = YAML::LoadFile((cases_dir() / "cases.yaml").string());
  std::set<std::string> expected(kNotebookRules.begin(), kNotebookRules.end()), absent = expected;
  for (const auto& item : manifest) {
    for (const auto& id : item.second["expect"]) expected.insert(id.as<std::string>());
    for (const auto& id : item.second["absent"]) absent.insert(id.as<std::string>());
  }
  for (const auto& rule : rules().static_rules) {
    EXPECT_TRUE(expected.count(rule.info.id)) << rule.info.id << " has no case where it must fire";
    EXPECT_TRUE(absent.count(rule.info.id)) << rule.info.id << " has no case where it must stay quiet";
  }
}

TEST(InfraStatic, FindingsCarryTheLineTheEvidenceAndTheReferences) {
  const auto report = review_paths({cases_dir() / "torchserve-open"}, rules());
  const core::Finding* management = nullptr;
  for (const auto& f : report.findings)
    if (f.rule_id == "infra.torchserve.management-api-exposed") management = &f;
  ASSERT_NE(management, nullptr);
  EXPECT_EQ(management->severity, core::Severity::Critical);
  EXPECT_EQ(management->location.line.value_or(0), 2u);
  EXPECT_NE(management->location.file.find("config.properties"), std::string::npos);
  EXPECT_NE(management->evidence.find("http://0.0.0.0:8081"), std::string::npos) << management->evidence;
  EXPECT_NE(management->properties_json.find("CVE-2023-43654"), std::string::npos);
  EXPECT_EQ(management->atlas.front(), "AML.T0049");
  EXPECT_FALSE(management->remediation.empty());

  // An image default explains itself: a Compose file that only names the image is read as what it runs.
  const auto compose = review_paths({cases_dir() / "ollama-compose"}, rules());
  bool explained = false;
  for (const auto& f : compose.findings)
    if (f.rule_id == "infra.ollama.listens-on-all-interfaces") {
      explained = f.evidence.find("image ollama/ollama") != std::string::npos && f.evidence.find("OLLAMA_HOST") != std::string::npos;
      EXPECT_EQ(f.location.column, "services.ollama");
    }
  EXPECT_TRUE(explained);
}

TEST(InfraStatic, WalksFoldersButNotSymlinksOrVendoredTrees) {
  test::TempDir dir;
  write(dir.path / "deploy" / "start.sh", "ollama serve\n");
  write(dir.path / "node_modules" / "pkg" / "start.sh", "OLLAMA_HOST=0.0.0.0 ollama serve\n");
  write(dir.path / "outside" / "start.sh", "OLLAMA_HOST=0.0.0.0 ollama serve\n");
  write(dir.path / "deploy" / "README.md", "OLLAMA_HOST=0.0.0.0 ollama serve\n");
  fs::create_directory_symlink(dir.path / "outside", dir.path / "deploy" / "linked");
  const auto report = review_paths({dir.path / "deploy"}, rules());
  EXPECT_TRUE(fired(report).empty()) << join(fired(report));
  EXPECT_EQ(report.files.size(), 1u);
  EXPECT_EQ(report.skipped, 1u);  // README.md
  EXPECT_THROW(review_paths({dir.path / "missing"}, rules()), core::Error);

  StaticOptions small;
  small.max_file_bytes = 8;
  const auto big = review_paths({dir.path / "deploy"}, rules(), small);
  ASSERT_EQ(fired(big), std::set<std::string>{"infra.file-too-large"});
}

TEST(InfraStatic, HostileFilesAreFindingsNeverCrashes) {
  std::uint32_t state = 7;
  const auto garbage = test::pseudo_random_bytes(200000, state);
  const std::string noise(garbage.begin(), garbage.end());
  for (const char* name : {"Dockerfile", "docker-compose.yml", "deploy.yaml", "config.properties", "start.sh", "x.ipynb",
                           ".gitlab-ci.yml", "jupyter_server_config.py", "ollama.service"}) {
    const auto report = review_text(name, noise, rules());
    for (const auto& f : report.findings) EXPECT_FALSE(f.rule_id.empty());
  }
  // Nesting far deeper than any deployment file: refused as a parse error, not a stack overflow.
  const std::string deep_yaml = "services:\n  a: " + std::string(100000, '[') + std::string(100000, ']') + "\n";
  EXPECT_EQ(fired(review_text("compose.yaml", deep_yaml, rules())), std::set<std::string>{"infra.parse-error"});
  const std::string deep_json = "{\"cells\": " + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_EQ(fired(review_text("x.ipynb", deep_json, rules())), std::set<std::string>{"infra.parse-error"});
  // JSON-ish objects separated by commas outside any collection: yaml-cpp 0.7 allocates without end on
  // it (found by the fuzz target), so it is refused before yaml-cpp sees it.
  EXPECT_EQ(fired(review_text(".github/workflows/x.yml", " {\n  \"file\": \"x\"\n },\n {\n  \"d\": 1\n }\n", rules())),
            std::set<std::string>{"infra.parse-error"});
  // Aliases (the "billion laughs" shape) are references in yaml-cpp; the review reads only the keys it needs.
  std::string laughs = "a: &a [\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\",\"x\"]\n";
  for (char c = 'b'; c <= 'j'; ++c) {
    laughs += std::string(1, c) + ": &" + c + " [";
    for (int i = 0; i < 10; ++i) laughs += std::string(i ? "," : "") + "*" + static_cast<char>(c - 1);
    laughs += "]\n";
  }
  laughs += "services:\n  api:\n    image: ollama/ollama\n    command: *j\n    environment: *j\n";
  const auto bomb = review_text("docker-compose.yml", laughs, rules());
  EXPECT_LE(bomb.findings.size(), 200u);
  // A shell script of a million separators and a very long line.
  EXPECT_NO_THROW(review_text("start.sh", std::string(1000000, ';') + std::string(1000000, 'a'), rules()));
}

}  // namespace
}  // namespace aegis::infra
