#include "aegis/cli/scan_command.h"

#include <algorithm>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "aegis/cli/common_options.h"
#include "aegis/core/progress.h"
#include "aegis/scan/scan.h"

namespace aegis::cli {

namespace {

struct ScanFlags {
  CommonOptions common;
  std::vector<std::string> paths;
  std::vector<std::string> allow;
  std::vector<std::string> allow_files;
  std::size_t threads = 0;
  std::size_t max_depth = 6;
  bool no_crc = false;
  bool follow_symlinks = false;
  std::uint64_t max_inflated_mb = 1024;  // memory bound per member being inspected
};

int run_scan(const ScanFlags& flags) {
  scan::CallablePolicy policy;
  for (const auto& name : flags.allow) policy.allow(name);
  for (const auto& file : flags.allow_files) policy.allow_file(file);
  scan::ScanOptions options;
  options.threads = flags.threads;
  options.max_container_depth = flags.max_depth;
  options.check_zip_crc = !flags.no_crc;
  options.follow_symlinks = flags.follow_symlinks;
  options.zip_limits.max_inflated_size = flags.max_inflated_mb << 20;
  options.archive_limits.max_entry_size = flags.max_inflated_mb << 20;
  scan::ModelScanner scanner(std::move(policy), options);

  core::Progress progress("scanning", progress_wanted(flags.common));
  auto result = scanner.scan(flags.paths, &progress);

  core::ReportContext context;
  context.command = "scan";
  context.inputs = flags.paths;
  context.summary = core::summarize(result.findings);
  context.summary.files_scanned = 0;
  for (const auto& file : result.files)
    if (!file.skipped) ++context.summary.files_scanned;
  context.summary.bytes_scanned = result.bytes;
  nlohmann::ordered_json files = nlohmann::ordered_json::array();
  for (const auto& file : result.files) {
    nlohmann::ordered_json entry = {{"path", file.path},     {"format", file.format},   {"size", file.size},
                                    {"model", file.model},   {"findings", file.findings}, {"skipped", file.skipped}};
    if (!file.details.empty()) entry["details"] = nlohmann::ordered_json::parse(file.details, nullptr, false);
    files.push_back(std::move(entry));
    if (!file.skipped) context.artifacts.push_back({file.path, file.size, file.format, file.model});
  }
  context.extra_json =
      nlohmann::ordered_json{{"files", files}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);

  // Per model: the findings of its files summed, so a registry reads as a list of models.
  std::map<std::string, std::size_t> group_of_file;
  for (const auto& model : result.models) {
    core::ReportGroup group{model.name, model.kind, model.path, 0, 0, {}};
    for (std::size_t index : model.files) {
      const auto& file = result.files[index];
      group_of_file[file.path] = context.groups.size();
      if (file.skipped) continue;
      ++group.files;
      group.bytes += file.size;
    }
    context.groups.push_back(std::move(group));
  }
  for (const auto& finding : result.findings) {
    auto it = group_of_file.find(finding.location.file);
    if (it == group_of_file.end()) continue;
    auto& summary = context.groups[it->second].summary;
    ++summary.counts[static_cast<int>(finding.severity)];
    if (!summary.highest || finding.severity > *summary.highest) summary.highest = finding.severity;
  }
  // Worst models first, so a registry's problems head the list.
  std::stable_sort(context.groups.begin(), context.groups.end(), [](const core::ReportGroup& a, const core::ReportGroup& b) {
    int sa = a.summary.highest ? static_cast<int>(*a.summary.highest) : -1;
    int sb = b.summary.highest ? static_cast<int>(*b.summary.highest) : -1;
    return sa != sb ? sa > sb : a.name < b.name;
  });
  // Folders of files that are not models at all (a docs folder) need no line of their own.
  std::erase_if(context.groups, [](const core::ReportGroup& group) { return group.files == 0 && !group.summary.highest; });
  return finish_command(flags.common, result.findings, context);
}

}  // namespace

void register_scan_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ScanFlags>();
  auto* command = app.add_subcommand(
      "scan", "Statically analyse model artifacts (pickle, PyTorch, joblib, NumPy, safetensors, GGUF, Keras, TensorFlow, ONNX, archives) without loading them");
  command->add_option("paths", flags->paths, "files or directories to scan")->required();
  add_common_options(*command, flags->common);
  // One value per flag, repeated as often as needed, so that the paths after it stay paths.
  command->add_option("--allow", flags->allow, "accept a callable you trust: module.name, or module.* (repeatable)")
      ->allow_extra_args(false);
  command->add_option("--allow-file", flags->allow_files, "file of accepted callables, one module.name per line")
      ->allow_extra_args(false)
      ->check(CLI::ExistingFile);
  command->add_option("--threads,-j", flags->threads, "worker threads (default: one per core)");
  command->add_option("--max-depth", flags->max_depth, "deepest nesting of archives to open")->check(CLI::Range(1, 32));
  command->add_option("--max-inflate-mb", flags->max_inflated_mb, "largest decompressed member to inspect, in MiB")
      ->check(CLI::Range(1, 1 << 20));
  command->add_flag("--no-crc", flags->no_crc, "skip CRC checks of zip members that are read");
  command->add_flag("--follow-symlinks", flags->follow_symlinks, "follow symbolic links to directories while walking (links to files are always followed)");
  command->callback([flags, &exit_code] { exit_code = run_scan(*flags); });
}

}  // namespace aegis::cli
