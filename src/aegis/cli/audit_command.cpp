// `aegis audit verify [STORE]`: recomputes the gateway's hash-chained audit log and reports every
// record that was changed, dropped or moved, a truncated tail, and checkpoints whose signature
// fails. `aegis audit show [STORE] --last N`: the newest records as JSON Lines.
#include "aegis/cli/audit_command.h"

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "aegis/cli/common_options.h"
#include "aegis/core/base64.h"
#include "aegis/core/error.h"
#include "aegis/store/audit_log.h"

namespace aegis::cli {

namespace {

using core::Finding;
using core::Severity;
using json = nlohmann::json;

struct AuditFlags {
  CommonOptions common;
  std::string store = "aegis-store.db";
  std::string public_key;
  std::size_t last = 10;
};

struct RuleText {
  const char* rule_id;
  const char* title;
  const char* remediation;
};

RuleText rule_for(store::AuditIssueKind kind) {
  switch (kind) {
    case store::AuditIssueKind::RecordChanged:
      return {"audit.record-changed", "Audit record was changed after it was written",
              "Treat the store as tampered: keep a copy as evidence, find who had write access to it, and compare with "
              "backups or the access log for the original decision."};
    case store::AuditIssueKind::RecordDropped:
      return {"audit.record-dropped", "Audit records are missing from the chain",
              "Records were deleted; restore them from a backup if one exists, and find who had write access to the store."};
    case store::AuditIssueKind::RecordsReordered:
      return {"audit.records-reordered", "Audit records are out of the order they were written in",
              "Rows were moved or renumbered; keep the store as evidence and investigate write access to it."};
    case store::AuditIssueKind::CheckpointSignature:
      return {"audit.checkpoint-signature", "Audit checkpoint signature does not verify",
              "Check that --public-key is the half of the gateway's audit.signing_key; if it is, the checkpoints were forged "
              "or altered."};
    case store::AuditIssueKind::Truncated:
      return {"audit.truncated", "Audit log was truncated after records were written",
              "The newest records were deleted; restore them from a backup and find who had write access to the store."};
  }
  return {"audit.unknown", "Audit log problem", ""};
}

Finding finding_for(const store::AuditIssue& issue, const std::string& store_path) {
  const RuleText text = rule_for(issue.kind);
  Finding finding;
  finding.rule_id = text.rule_id;
  finding.severity = Severity::High;
  finding.title = text.title;
  finding.location.file = store_path;
  finding.location.row = static_cast<std::uint64_t>(issue.seq > 0 ? issue.seq : 0);
  finding.location.column = issue.kind == store::AuditIssueKind::CheckpointSignature ? "audit_checkpoints.seq" : "audit_log.seq";
  finding.evidence = issue.detail;
  // Erasing the record of what was done is defence evasion; the RMF asks for monitoring that can
  // be relied on afterwards (MANAGE 4.1) and for accountability (MEASURE 2.8).
  finding.atlas = {"AML.TA0007"};
  finding.nist_ai_rmf = {"MANAGE 4.1", "MEASURE 2.8"};
  finding.remediation = text.remediation;
  finding.properties_json = json{{"seq", issue.seq}, {"issue", std::string(store::to_string(issue.kind))}}.dump();
  return finding;
}

json record_json(const store::AuditRecord& record) {
  json verdicts = json::array();
  for (const auto& verdict : record.verdicts)
    verdicts.push_back({{"filter", verdict.filter}, {"outcome", verdict.outcome}, {"detail", verdict.detail}});
  json out = {{"seq", record.seq},
              {"time_ms", record.time_ms},
              {"request_id", record.request_id},
              {"client_ip", record.client_ip},
              {"subject", record.subject},
              {"route", record.route},
              {"method", record.method},
              {"path", record.path},
              {"status", record.status},
              {"verdicts", verdicts},
              {"request_sha256", record.request_sha256},
              {"response_sha256", record.response_sha256},
              {"latency_ms", record.latency_ms},
              {"prev_hash", record.prev_hash},
              {"hash", record.hash}};
  // Bodies are whatever the client and model sent: base64 keeps the JSON line valid.
  if (record.request_body) out["request_body_base64"] = core::encode_base64(*record.request_body);
  if (record.response_body) out["response_body_base64"] = core::encode_base64(*record.response_body);
  return out;
}

}  // namespace

void register_audit_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<AuditFlags>();
  auto* audit = app.add_subcommand("audit", "Check and read the gateway's hash-chained audit log");
  audit->require_subcommand(1);

  auto* verify = audit->add_subcommand("verify", "Recompute the audit chain; report changed, dropped, reordered or truncated records");
  verify->add_option("store", flags->store, "the gateway's store file (audit.store; default aegis-store.db)");
  verify->add_option("--public-key", flags->public_key,
                     "Ed25519 public key (PEM) whose private half signs the checkpoints (audit.signing_key)");
  add_common_options(*verify, flags->common);
  verify->callback([flags, &exit_code] {
    std::optional<std::filesystem::path> key;
    if (!flags->public_key.empty()) key = flags->public_key;
    const store::AuditVerifyReport report = store::verify_audit_log(flags->store, key);

    std::vector<Finding> findings;
    for (const auto& issue : report.issues) findings.push_back(finding_for(issue, flags->store));
    std::vector<std::string> notes;
    if (report.issues_omitted > 0)
      notes.push_back(std::to_string(report.issues_omitted) + " more problems were found but not listed");
    if (report.records == 0) notes.push_back("the audit log is empty");
    if (report.checkpoints == 0)
      notes.push_back("no checkpoints: a rewrite of the whole chain, or of its tail, cannot be detected");
    else if (report.signed_checkpoints == 0)
      notes.push_back("checkpoints are unsigned hashes: someone who can write the store can recompute them; set "
                      "audit.signing_key to sign them");
    else if (!report.signatures_checked)
      notes.push_back("checkpoint signatures were not checked: pass --public-key");

    json summary = {{"records", report.records},
                    {"first_seq", report.first_seq},
                    {"last_seq", report.last_seq},
                    {"last_hash", report.last_hash},
                    {"checkpoints", report.checkpoints},
                    {"signed_checkpoints", report.signed_checkpoints},
                    {"signatures_checked", report.signatures_checked},
                    {"verified_signatures", report.verified_signatures},
                    {"intact", report.intact()},
                    {"notes", notes}};
    if (!flags->common.quiet)
      for (const auto& note : notes) std::cerr << "aegis audit verify: note: " << note << "\n";
    if (table_wanted(flags->common))
      std::cout << "audit log " << flags->store << ": " << report.records << " records (seq " << report.first_seq << ".."
                << report.last_seq << "), " << report.checkpoints << " checkpoints (" << report.signed_checkpoints
                << " signed" << (report.signatures_checked ? ", " + std::to_string(report.verified_signatures) + " verified" : "")
                << "): " << (report.intact() ? "intact" : "NOT intact") << "\n\n";

    core::ReportContext context;
    context.command = "audit verify";
    context.inputs = {flags->store};
    context.summary = core::summarize(findings);
    context.extra_json = json{{"audit", summary}}.dump();
    exit_code = finish_command(flags->common, findings, context);
  });

  auto* show = audit->add_subcommand("show", "Print the newest audit records as JSON Lines, oldest first");
  show->add_option("store", flags->store, "the gateway's store file (default aegis-store.db)");
  show->add_option("--last", flags->last, "how many records (default 10)")->check(CLI::Range(std::size_t{1}, std::size_t{1'000'000}));
  show->callback([flags, &exit_code] {
    for (const auto& record : store::read_audit_tail(flags->store, flags->last))
      std::cout << record_json(record).dump(-1, ' ', false, json::error_handler_t::replace) << "\n";
    std::cout.flush();
    exit_code = 0;
  });
}

}  // namespace aegis::cli
