#include "aegis/cli/lineage_command.h"

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <set>

#include "aegis/cli/common_options.h"
#include "aegis/core/error.h"
#include "aegis/provenance/manifest.h"
#include "aegis/store/lineage_store.h"

namespace aegis::cli {

namespace {

namespace fs = std::filesystem;
using core::Finding;
using core::Severity;

constexpr std::size_t kMaxDepth = 64;  // steps followed back from an artifact

std::string absolute_path(const std::string& path) {
  std::error_code ec;
  fs::path resolved = fs::weakly_canonical(fs::absolute(path, ec), ec);
  return (ec ? fs::absolute(path) : resolved).string();
}

store::ArtifactRecord hash_artifact(const std::string& path) {
  store::ArtifactRecord record;
  record.path = absolute_path(path);
  auto manifest = provenance::build_manifest(record.path, {});
  record.subject_digest = provenance::to_hex(manifest.subject_digest());
  for (const auto& resource : manifest.resources) record.resources.emplace_back(resource.name, provenance::to_hex(resource.digest));
  return record;
}

struct LineageFlags {
  CommonOptions common;
  std::string store;
  std::vector<std::string> inputs, outputs;
  std::string step;
  std::string actor;
  std::string artifact;
};

fs::path store_path(const LineageFlags& flags) {
  return flags.store.empty() ? store::LineageStore::default_path() : fs::path(flags.store);
}

store::ArtifactRecord recorded(const store::LineageStore& db, const std::string& path) {
  auto record = db.latest_artifact(absolute_path(path));
  if (!record)
    throw core::Error("no lineage is recorded for " + absolute_path(path),
                      "record it with `aegis lineage record --inputs ... --output " + path + " --step ...`");
  return *record;
}

// Every artifact from `start` back through the steps that produced it, each once, nearest first.
std::vector<std::pair<std::size_t, store::ArtifactRecord>> ancestry(const store::LineageStore& db,
                                                                     const store::ArtifactRecord& start) {
  std::vector<std::pair<std::size_t, store::ArtifactRecord>> out{{0, start}};
  std::set<std::int64_t> seen{start.id};
  for (std::size_t i = 0; i < out.size(); ++i) {
    if (out[i].first >= kMaxDepth) continue;
    for (const auto& step : db.steps_producing(out[i].second.id))
      for (auto input : step.inputs)
        if (seen.insert(input).second) out.push_back({out[i].first + 1, db.artifact(input)});
  }
  return out;
}

void print_tree(const store::LineageStore& db, const store::ArtifactRecord& artifact, std::size_t depth,
                std::set<std::int64_t>& path) {
  std::string indent(depth * 4, ' ');
  std::cout << indent << artifact.path << "  sha256:" << artifact.subject_digest.substr(0, 16) << "  ("
            << artifact.resources.size() << " file(s), recorded " << artifact.recorded_at << ")\n";
  if (depth >= kMaxDepth || !path.insert(artifact.id).second) return;
  for (const auto& step : db.steps_producing(artifact.id)) {
    std::cout << indent << "  <- step \"" << step.step << "\" by " << step.actor << " at " << step.recorded_at << "\n";
    for (auto input : step.inputs) print_tree(db, db.artifact(input), depth + 1, path);
  }
  path.erase(artifact.id);
}

}  // namespace

void register_lineage_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<LineageFlags>();
  auto* lineage = app.add_subcommand("lineage", "Record and check where data and models came from (the Aegis store)");
  lineage->require_subcommand(1);
  lineage->add_option("--store", flags->store, "SQLite store file (default: $AEGIS_STORE or ~/.local/share/aegis/aegis.db)");

  auto* record = lineage->add_subcommand("record", "Hash inputs and outputs and store the step that made the outputs");
  record->add_option("--inputs", flags->inputs, "files or folders the step read")->required()->check(CLI::ExistingPath);
  record->add_option("--output", flags->outputs, "files or folders the step wrote")->required()->check(CLI::ExistingPath);
  record->add_option("--step", flags->step, "the command or pipeline step, e.g. \"python train.py --epochs 3\"")->required();
  record->add_option("--actor", flags->actor, "who ran it (default: $USER)");
  record->callback([flags, &exit_code] {
    store::LineageStore db(store_path(*flags));
    std::string actor = flags->actor;
    if (actor.empty()) actor = std::getenv("USER") ? std::getenv("USER") : "unknown";
    // An artifact whose content is what was last recorded at its path is the same node of the graph
    // (the output of one step becomes the input of the next); changed content is a new node.
    auto node = [&db](const std::string& path) {
      auto artifact = hash_artifact(path);
      auto last = db.latest_artifact(artifact.path);
      return last && last->subject_digest == artifact.subject_digest ? last->id : db.add_artifact(artifact);
    };
    std::vector<std::int64_t> inputs, outputs;
    for (const auto& path : flags->inputs) inputs.push_back(node(path));
    for (const auto& path : flags->outputs) outputs.push_back(node(path));
    db.add_step(flags->step, actor, inputs, outputs);
    std::cerr << "recorded \"" << flags->step << "\": " << inputs.size() << " input(s) -> " << outputs.size()
              << " output(s) in " << store_path(*flags).string() << "\n";
    exit_code = 0;
  });

  auto* show = lineage->add_subcommand("show", "Print where an artifact came from, step by step");
  show->add_option("artifact", flags->artifact, "file or folder")->required();
  show->callback([flags, &exit_code] {
    store::LineageStore db(store_path(*flags));
    std::set<std::int64_t> path;
    print_tree(db, recorded(db, flags->artifact), 0, path);
    exit_code = 0;
  });

  auto* verify = lineage->add_subcommand("verify", "Re-hash an artifact and everything it came from; report what changed");
  verify->add_option("artifact", flags->artifact, "file or folder")->required();
  add_common_options(*verify, flags->common);
  verify->callback([flags, &exit_code] {
    store::LineageStore db(store_path(*flags));
    std::vector<Finding> findings;
    auto nodes = ancestry(db, recorded(db, flags->artifact));
    for (const auto& [depth, node] : nodes) {
      Finding finding;
      finding.severity = Severity::High;
      finding.location.file = node.path;
      finding.atlas = {"AML.T0010", "AML.T0020"};  // supply chain; poison training data
      finding.nist_ai_rmf = {"MAP 4.1", "MEASURE 2.7", "GOVERN 6.1"};
      try {
        auto now = hash_artifact(node.path);
        if (now.subject_digest == node.subject_digest) continue;
        std::map<std::string, std::string> before(node.resources.begin(), node.resources.end());
        std::map<std::string, std::string> after(now.resources.begin(), now.resources.end());
        std::string changed;
        auto note = [&changed](const std::string& what, const std::string& name) {
          if (changed.size() < 2000) changed += (changed.empty() ? "" : ", ") + what + " " + name;
        };
        for (const auto& [name, digest] : after)
          if (!before.contains(name)) note("added", name);
          else if (before[name] != digest) note("changed", name);
        for (const auto& [name, digest] : before)
          if (!after.contains(name)) note("removed", name);
        finding.rule_id = "lineage.changed";
        finding.title = "Content differs from what the lineage recorded";
        finding.evidence = changed + " (recorded " + node.recorded_at + ", " + std::to_string(depth) + " step(s) upstream)";
        finding.remediation = "Find out who changed it after the recorded step; retrain or re-record only from verified data.";
      } catch (const core::Error& error) {
        finding.rule_id = "lineage.missing";
        finding.title = "Recorded artifact can no longer be hashed";
        finding.evidence = error.what();
        finding.remediation = "Restore it, or record the lineage again from what exists now.";
      }
      findings.push_back(std::move(finding));
    }
    core::ReportContext context;
    context.command = "lineage verify";
    context.inputs = {flags->artifact};
    context.summary = core::summarize(findings);
    context.summary.files_scanned = nodes.size();
    exit_code = finish_command(flags->common, findings, context);
  });
}

}  // namespace aegis::cli
