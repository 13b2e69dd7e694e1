#include "aegis/cli/pii_command.h"

#include <iomanip>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <tuple>

#include "aegis/cli/common_options.h"
#include "aegis/cli/stage_progress.h"
#include "aegis/core/error.h"
#include "aegis/core/text.h"
#include "aegis/core/name_list.h"
#include "aegis/privacy/pii_scan.h"

namespace aegis::cli {
namespace {

struct PiiFlags {
  CommonOptions common;
  std::vector<std::string> paths;
  std::string entities;
  bool no_secrets = false;
  std::vector<std::string> rule_files;
  double min_score = 0.5;
  std::string region = "US";
  std::string input_format = "auto";
  bool no_header = false;
  std::string quasi_identifiers;
  std::size_t k = 5;
  std::size_t max_findings = 1000;
  std::size_t samples = 3;
  std::uint64_t max_records = 0;
  std::size_t threads = 0;
};

std::string where_of(const privacy::FileReport& file) { return file.path + (file.table.empty() ? "" : " [" + file.table + "]"); }

nlohmann::json k_json(const privacy::KAnonymity& k) {
  nlohmann::json without = nlohmann::json::object();
  for (const auto& [column, value] : k.k_without) without[column] = value;
  nlohmann::json out = {{"columns", k.columns},   {"records", k.records},
                        {"classes", k.classes},   {"k", k.k},
                        {"unique_records", k.unique_records}, {"records_at_risk", k.records_at_risk},
                        {"average_risk", k.average_risk},     {"k_without", without}};
  if (!k.note.empty()) out["note"] = k.note;
  return out;
}

// Table output: one finding per file, column and entity type instead of one per occurrence.
std::vector<core::Finding> grouped_findings(const privacy::PiiScanReport& report) {
  std::vector<core::Finding> out;
  for (const auto& file : report.files)
    for (const auto& column : file.columns)
      for (const auto& [type, count] : column.entities) {
        core::Finding f;
        f.rule_id = type == "SECRET" ? "pii.secret" : "pii." + type;
        f.severity = privacy::pii_severity(type);
        f.title = std::to_string(count) + " x " + type + (column.column.empty() ? "" : " in column " + column.column);
        f.location.file = file.path;
        if (!file.table.empty()) f.location.member = file.table;
        auto samples = column.samples.find(type);
        if (samples != column.samples.end())
          for (const auto& s : samples->second) f.evidence += (f.evidence.empty() ? "" : ", ") + s;
        out.push_back(std::move(f));
      }
  for (const auto& f : report.findings)
    if (f.rule_id == "pii.reidentification-risk" || f.rule_id == "pii.unreadable") out.push_back(f);
  return out;
}

void print_table(const privacy::PiiScanReport& report, bool verbose) {
  std::cout << report.files.size() << " file(s)/table(s), " << std::fixed << std::setprecision(1) << report.bytes / 1e6
            << " MB in " << std::setprecision(2) << report.seconds << " s";
  if (report.seconds > 0) std::cout << " (" << std::setprecision(0) << report.bytes / 1e6 / report.seconds << " MB/s)";
  std::cout << "; " << report.occurrences_total << " entities found\n\n";
  for (const auto& file : report.files) {
    std::cout << where_of(file) << "  (" << privacy::to_string(file.format) << ", " << file.records << " records)";
    if (!file.error.empty()) std::cout << "  ERROR: " << file.error;
    std::cout << "\n";
    for (const auto& note : file.notes) std::cout << "  note: " << note << "\n";
    for (const auto& column : file.columns) {
      if (column.entities.empty() && !verbose) continue;
      std::cout << "  " << std::left << std::setw(24) << (column.column.empty() ? "(text)" : column.column) << std::right << " ";
      std::string entities;
      for (const auto& [type, count] : column.entities) entities += (entities.empty() ? "" : ", ") + type + " " + std::to_string(count);
      std::cout << (entities.empty() ? "-" : entities);
      if (!column.samples.empty()) {
        std::string samples;  // a few, whatever their type: the JSON report has them all
        std::size_t shown = 0;
        for (const auto& [type, list] : column.samples)
          for (const auto& s : list)
            if (shown++ < 3) samples += (samples.empty() ? "" : ", ") + s;
        std::cout << "   e.g. " << samples;
      }
      std::cout << "\n";
    }
    if (file.k_anonymity) {
      const auto& k = *file.k_anonymity;
      std::string columns;
      for (const auto& c : k.columns) columns += (columns.empty() ? "" : ", ") + c;
      std::cout << "  k-anonymity over (" << columns << "): ";
      if (!k.note.empty()) {
        std::cout << k.note << "\n";
      } else {
        std::cout << "k = " << k.k << ", " << k.classes << " classes, " << k.unique_records << " unique record(s), "
                  << k.records_at_risk << " at risk, average re-identification risk " << std::setprecision(3) << k.average_risk;
        for (const auto& [column, value] : k.k_without) std::cout << "; without " << column << " k = " << value;
        std::cout << "\n";
      }
    }
  }
  std::cout << "\n";
}

int run_pii(PiiFlags& flags) {
  privacy::PiiScanOptions options;
  options.detector.entities = core::split_comma_list(flags.entities);
  options.detector.secrets = !flags.no_secrets;
  options.detector.rule_files = flags.rule_files;
  if (!(flags.min_score >= 0 && flags.min_score <= 1)) throw core::Error("--min-score must be between 0 and 1");
  options.detector.min_score = flags.min_score;
  options.detector.default_region = flags.region;
  if (flags.input_format != "auto") {
    options.format = privacy::parse_data_format(flags.input_format);
    if (!options.format) throw core::Error("unknown --input-format " + flags.input_format, "use auto, csv, tsv, jsonl, json, sqlite or text");
  }
  options.csv_header = !flags.no_header;
  options.quasi_identifiers = core::split_comma_list(flags.quasi_identifiers);
  if (flags.k < 2) throw core::Error("--k must be at least 2", "k-anonymity asks that each combination be shared by k records");
  options.k_threshold = flags.k;
  options.max_occurrences = flags.max_findings;
  options.samples_per_column = flags.samples;
  options.max_records = flags.max_records;
  options.threads = flags.threads;

  StageProgress progress(progress_wanted(flags.common));
  const auto report = privacy::scan_pii(flags.paths, options, [&](std::uint64_t done, std::uint64_t total) {
    progress.update("scanning for personal data", done, total);
  });
  progress.finish();

  nlohmann::json files = nlohmann::json::array();
  for (const auto& file : report.files) {
    nlohmann::json columns = nlohmann::json::array();
    for (const auto& c : file.columns)
      columns.push_back({{"column", c.column}, {"values", c.values}, {"values_with_pii", c.values_with_pii},
                         {"entities", c.entities}, {"samples", c.samples}});
    nlohmann::json item = {{"file", file.path}, {"format", privacy::to_string(file.format)}, {"bytes", file.bytes},
                           {"records", file.records}, {"entities", file.entities}, {"columns", columns}, {"notes", file.notes}};
    if (!file.table.empty()) item["table"] = file.table;
    if (!file.error.empty()) item["error"] = file.error;
    if (file.k_anonymity) item["k_anonymity"] = k_json(*file.k_anonymity);
    files.push_back(std::move(item));
  }
  nlohmann::json extra = {{"files", files},
                          {"entities", report.entities},
                          {"occurrences", report.occurrences_total},
                          {"occurrences_listed", report.occurrences.size()},
                          {"bytes", report.bytes},
                          {"seconds", report.seconds}};
  if (report.occurrences.size() < report.occurrences_total)
    extra["truncated"] = "findings list the first " + std::to_string(report.occurrences.size()) + " of " +
                         std::to_string(report.occurrences_total) + " occurrences; --max-findings 0 lists all";

  const bool table = table_wanted(flags.common);
  if (table) print_table(report, flags.common.verbose);
  std::vector<std::string> inputs = flags.paths;
  int status = finish_results(flags.common, "pii", inputs, table ? grouped_findings(report) : report.findings,
                              extra.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  // the exit status counts every occurrence, also those past --max-findings
  const auto threshold = core::parse_severity(flags.common.fail_on);
  for (const auto& [type, count] : report.entities)
    if (count && threshold && privacy::pii_severity(type) >= *threshold) status = std::max(status, 1);
  return status;
}

}  // namespace

void register_pii_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<PiiFlags>();
  auto* command = app.add_subcommand(
      "pii", "Personal, health and secret data in datasets (CSV, JSON Lines, JSON, SQLite, text): per column, with k-anonymity");
  command->add_option("paths", flags->paths, "data files or folders")->required();
  command->add_option("--entities", flags->entities,
                      "entity types to report, comma-separated (default all), e.g. US_SSN,CREDIT_CARD,EMAIL_ADDRESS,SECRET");
  command->add_flag("--no-secrets", flags->no_secrets, "personal data only, no secret rules");
  command->add_option("--rules", flags->rule_files,
                      "extra TOML rule file (Aegis or gitleaks format, e.g. gitleaks' own config); repeatable")
      ->check(CLI::ExistingFile);
  command->add_option("--min-score", flags->min_score, "drop detections scored below this (0..1, default 0.5)");
  command->add_option("--region", flags->region, "region for phone numbers without +country code (default US)");
  command->add_option("--input-format", flags->input_format, "auto (default), csv, tsv, jsonl, json, sqlite or text");
  command->add_flag("--no-header", flags->no_header, "the first CSV row is data, not column names");
  command->add_option("--quasi-identifiers", flags->quasi_identifiers,
                      "columns whose combination is checked for k-anonymity, comma-separated (default: zip, dob, gender... by name)");
  command->add_option("--k", flags->k, "k-anonymity threshold: smaller classes are a finding (default 5)");
  command->add_option("--max-findings", flags->max_findings, "occurrences listed as findings (default 1000, 0 = all)");
  command->add_option("--samples", flags->samples, "masked samples per column and entity type (default 3)");
  command->add_option("--max-records", flags->max_records, "stop each file or table after this many records (default all)");
  command->add_option("--threads", flags->threads, "worker threads (default: every core)");
  add_common_options(*command, flags->common);
  command->callback([flags, &exit_code] { exit_code = run_pii(*flags); });
}

}  // namespace aegis::cli
