// Assessment documents for the report-writer tests, shaped as `aegis assess` writes them
// (/tmp/notes/assessment_document.md): a classifier served behind a gateway with robustness,
// membership (with a real ROC PNG from the real plotter) and extraction results, its training data,
// the classifier's endpoint, and an LLM chat endpoint with red-team findings.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aegis/attacks/inference/membership_metrics.h"
#include "aegis/attacks/inference/roc_plot.h"
#include "aegis/core/base64.h"
#include "test_support.h"

namespace aegis::test {

// Base64 of a real ROC plot PNG drawn by attacks::write_roc_png from two overlapping score sets.
inline std::string roc_png_base64() {
  std::vector<double> members, nonmembers;
  for (int i = 0; i < 200; ++i) {
    members.push_back(0.3 + 0.7 * ((i * 37) % 200) / 200.0);
    nonmembers.push_back(0.9 * ((i * 53) % 200) / 200.0);
  }
  attacks::RocSeries series{"loss", attacks::roc_curve(members, nonmembers), attacks::roc_auc(members, nonmembers)};
  TempDir dir("aegis_report_roc");
  const auto path = (dir.path / "roc.png").string();
  attacks::write_roc_png(path, std::span<const attacks::RocSeries>(&series, 1));
  const auto bytes = read_file(path);
  return core::encode_base64(std::span<const std::uint8_t>(bytes.data(), bytes.size()));
}

inline nlohmann::json finding(const std::string& rule, const std::string& severity, const std::string& title,
                              const std::string& check, std::vector<std::string> atlas, std::vector<std::string> nist,
                              const std::string& evidence, const std::string& file = "") {
  return {{"rule_id", rule}, {"severity", severity}, {"title", title}, {"location", {{"file", file}}},
          {"evidence", evidence}, {"atlas", atlas}, {"nist_ai_rmf", nist},
          {"remediation", "Run `aegis harden` and re-assess."}, {"check", check}, {"status", "open"},
          {"fingerprint", rule + "-" + check}};
}

inline nlohmann::json realistic_document() {
  using nlohmann::json;
  json robustness = {
      {"clean_accuracy", 0.91},
      {"results", json::array({
                      {{"attack", "fgsm"}, {"norm", "linf"}, {"eps", 0.1}, {"robust_accuracy", 0.32}, {"success_rate", 0.65}},
                      {{"attack", "fgsm"}, {"norm", "linf"}, {"eps", 0.05}, {"robust_accuracy", 0.55}, {"success_rate", 0.4}},
                      {{"attack", "pgd"}, {"norm", "linf"}, {"eps", 0.05}, {"robust_accuracy", 0.41}, {"success_rate", 0.55}},
                      {{"attack", "pgd"}, {"norm", "linf"}, {"eps", 0.1}, {"robust_accuracy", 0.08}, {"success_rate", 0.91}},
                      {{"attack", "fgsm"}, {"norm", "linf"}, {"eps", 0.2}, {"robust_accuracy", 0.12}, {"success_rate", 0.87}},
                      {{"attack", "pgd"}, {"norm", "linf"}, {"eps", 0.2}, {"robust_accuracy", 0.01}, {"success_rate", 0.99}},
                      {{"attack", "deepfool"}, {"norm", "l2"}, {"eps", nullptr}, {"robust_accuracy", 0.0}, {"success_rate", 1.0}},
                  })}};
  json membership = {{"attacks", json::array({{{"attack", "loss"}, {"auc", 0.63}, {"tpr_at_0_1pct_fpr", 0.004}},
                                              {{"attack", "lira-offline"}, {"auc", 0.71}, {"tpr_at_0_1pct_fpr", 0.021}}})},
                     {"members", 1000}, {"nonmembers", 1000}};
  json classifier_findings = json::array({
      finding("attack.robust-accuracy", "high", "PGD (linf, eps 0.1) drops accuracy from 91% to 8%", "robustness",
              {"AML.T0015", "AML.T0043"}, {"MEASURE 2.7"}, "robust accuracy 0.08 below the 0.5 threshold at eps 0.1",
              "/models/fashion/model.pt"),
      finding("extract.fidelity", "high", "A surrogate reaches 93% agreement within 1000 queries", "extraction",
              {"AML.T0024.002"}, {"MEASURE 2.7", "MS-2.10"}, "fidelity 0.93 at budget 1000 (strategy natural)"),
      finding("mia.auc", "medium", "Membership inference AUC 0.71 (LiRA offline)", "membership", {"AML.T0024.000"},
              {"MEASURE 2.10", "MEASURE 9.9"}, std::string(9000, 'e') + " end-of-evidence-marker"),
  });
  json classifier = {
      {"id", "fashion-classifier"}, {"kind", "model"}, {"name", "Fashion-MNIST CNN"},
      {"description", "Classifies product photos for the catalogue."}, {"owner", "vision@example.com"},
      {"criticality", "high"}, {"sector", "finance"}, {"exposure", "external"}, {"llm", false},
      {"task", "image-classification"}, {"framework", "pytorch"}, {"files", {"/models/fashion/model.pt"}},
      {"url", ""}, {"endpoint", "fashion-api"}, {"datasets", {"fashion-train"}}, {"sensitivity", json::array()},
      {"source", ""}, {"signature", "/models/fashion/model.sig"},
      {"risk", {{"score", 72}, {"level", "high"}, {"rationale", "2 high findings open; 1 of 4 applicable techniques untested"}}},
      {"coverage", {{"applicable", 4}, {"tested", 3}}},
      {"techniques", json::array({
           {{"id", "AML.T0015"}, {"name", "Evade AI Model"}, {"tactics", {"AML.TA0004", "AML.TA0007", "AML.TA0011"}},
            {"rationales", {"an externally reachable classifier"}}, {"checks", {"robustness"}}, {"tested", true}, {"findings", 1},
            {"mitigations", json::array({{{"id", "AML.M0002"}, {"name", "Passive AI Output Obfuscation"}}})},
            {"stride", {"tampering"}}, {"nist_ai_rmf", {"MEASURE 2.7"}}},
           {{"id", "AML.T0024.002"}, {"name", "Extract AI Model"}, {"tactics", {"AML.TA0010"}},
            {"rationales", {"prediction API exposed"}}, {"checks", {"extraction"}}, {"tested", true}, {"findings", 1},
            {"mitigations", json::array({{{"id", "AML.M0004"}, {"name", "Restrict Number of AI Model Queries"}}})},
            {"stride", {"information-disclosure"}}, {"nist_ai_rmf", {"MEASURE 2.7", "MANAGE 2.4"}}},
           {{"id", "AML.T0024.000"}, {"name", "Infer Training Data Membership"}, {"tactics", {"AML.TA0010"}},
            {"rationales", {"trained on customer data"}}, {"checks", {"membership"}}, {"tested", true}, {"findings", 1},
            {"mitigations", json::array()}, {"stride", {"information-disclosure"}}, {"nist_ai_rmf", {"MEASURE 2.10"}}},
           {{"id", "AML.T0020"}, {"name", "Poison Training Data"}, {"tactics", {"AML.TA0003"}},
            {"rationales", {"trained on third-party data"}}, {"checks", json::array()}, {"tested", false}, {"findings", 0},
            {"mitigations", json::array()}, {"stride", {"tampering"}}, {"nist_ai_rmf", {"MEASURE 2.7"}}},
       })},
      {"checks", json::array({
           {{"check", "robustness"}, {"state", "done"}, {"run_id", 12}, {"exit_code", 1}, {"reason", ""},
            {"command", "aegis attack --model /models/fashion/model.pt --attack fgsm,pgd --eps 0.05,0.1,0.2 --format json"},
            {"results", robustness}},
           {{"check", "membership"}, {"state", "done"}, {"run_id", 13}, {"exit_code", 1}, {"reason", ""},
            {"command", "aegis mia --model /models/fashion/model.pt --members members.npy --format json"},
            {"results", membership}, {"artifacts", {{"roc.png", roc_png_base64()}}}},
           {{"check", "extraction"}, {"state", "done"}, {"run_id", 14}, {"exit_code", 1}, {"reason", ""},
            {"command", "aegis extract --target https://api.example.com/v1/classify --budget 1000 --format json"},
            {"results", {{"fidelity", 0.93}}}},
           {{"check", "verify"}, {"state", "not-possible"}, {"reason", "no `signature:` bundle file at /models/fashion/model.sig"}},
       })},
      {"findings", classifier_findings},
  };
  json dataset = {
      {"id", "fashion-train"}, {"kind", "dataset"}, {"name", "Fashion training set"}, {"owner", "data@example.com"},
      {"criticality", "medium"}, {"files", {"/data/fashion/train.npz"}}, {"sensitivity", {"pii"}}, {"source", "third-party"},
      {"risk", {{"score", 35}, {"level", "medium"}, {"rationale", "no findings; 1 of 2 techniques untested"}}},
      {"coverage", {{"applicable", 2}, {"tested", 1}}},
      {"techniques", json::array({{{"id", "AML.T0020"}, {"name", "Poison Training Data"}, {"tactics", {"AML.TA0003"}},
                                   {"checks", {"pii"}}, {"tested", false}, {"findings", 0}, {"nist_ai_rmf", {"MEASURE 2.7"}}}})},
      {"checks", json::array({{{"check", "pii"}, {"state", "done"}, {"run_id", 15}, {"exit_code", 0},
                               {"command", "aegis pii /data/fashion/train.npz --format json"}, {"results", json::object()}}})},
      {"findings", json::array()},
  };
  json api = {
      {"id", "fashion-api"}, {"kind", "endpoint"}, {"name", "Catalogue classifier API"}, {"owner", "platform@example.com"},
      {"criticality", "high"}, {"exposure", "external"}, {"url", "https://api.example.com/v1/classify"}, {"api", "classifier"},
      {"gateway", "/etc/aegis/gateway.yaml"},
      {"risk", {{"score", 40}, {"level", "medium"}, {"rationale", "gateway reviewed"}}},
      {"coverage", {{"applicable", 1}, {"tested", 1}}},
      {"techniques", json::array({{{"id", "AML.T0040"}, {"name", "AI Model Inference API Access"}, {"tactics", {"AML.TA0000"}},
                                   {"checks", {"gateway-review"}}, {"tested", true}, {"findings", 0}}})},
      {"checks", json::array({{{"check", "gateway-review"}, {"state", "done"}, {"run_id", 16}, {"exit_code", 0},
                               {"command", "aegis gateway --config /etc/aegis/gateway.yaml --check"}}})},
      {"findings", json::array()},
  };
  json chat = {
      {"id", "support-chat"}, {"kind", "endpoint"}, {"name", "Support assistant"}, {"owner", "cx@example.com"},
      {"criticality", "critical"}, {"exposure", "external"}, {"llm", true}, {"url", "https://chat.example.com/v1"},
      {"api", "openai-chat"}, {"gateway", ""}, {"redteam", {{"model", "support-7b"}}},
      {"risk", {{"score", 88}, {"level", "critical"}, {"rationale", "1 critical finding open"}}},
      {"coverage", {{"applicable", 2}, {"tested", 2}}},
      {"techniques", json::array({
           {{"id", "AML.T0051"}, {"name", "LLM Prompt Injection"}, {"tactics", {"AML.TA0004", "AML.TA0005"}},
            {"checks", {"redteam"}}, {"tested", true}, {"findings", 1}, {"nist_ai_rmf", {"MEASURE 2.7"}}},
           {{"id", "AML.T0056"}, {"name", "Extract LLM System Prompt"}, {"tactics", {"AML.TA0010"}}, {"checks", {"redteam"}},
            {"tested", true}, {"findings", 0}, {"nist_ai_rmf", {"MEASURE 2.7"}}},
       })},
      {"checks", json::array({{{"check", "redteam"}, {"state", "done"}, {"run_id", 17}, {"exit_code", 1},
                               {"command", "aegis redteam --target https://chat.example.com/v1 --model support-7b"}}})},
      {"findings", json::array({finding("redteam.injection", "critical", "Indirect prompt injection overrides the system prompt",
                                        "redteam", {"AML.T0051.001"}, {"MEASURE 2.7"},
                                        "probe injection/indirect-doc: 14 of 20 attempts followed the injected instruction")})},
  };
  json all_findings = json::array();
  for (const auto* asset : {&classifier, &dataset, &api, &chat})
    for (auto f : (*asset)["findings"]) {
      f["asset"] = (*asset)["id"];
      all_findings.push_back(f);
    }
  return {
      {"aegis", {{"version", "0.9.0"}, {"command", "report"}}},
      {"assessment", {{"id", 7}, {"inventory", "examples/assess/inventory.yaml"}, {"organisation", "Example Fashion Co"},
                      {"started_at", "2026-11-27T17:00:00Z"}, {"finished_at", "2026-11-27T17:05:00Z"}, {"status", "finished"},
                      {"atlas_version", "5.6.0"}, {"store", "aegis-store.db"}}},
      {"summary", {{"counts", {{"critical", 1}, {"high", 2}, {"medium", 1}, {"low", 0}, {"info", 0}}}, {"highest", "critical"},
                   {"assets", 4}, {"techniques_applicable", 9}, {"techniques_tested", 7}, {"checks_run", 7}, {"checks_failed", 0}}},
      {"assets", {classifier, dataset, api, chat}},
      {"tactics", json::array({
           {{"id", "AML.TA0000"}, {"name", "AI Model Access"}, {"catalog_techniques", 4},
            {"techniques", json::array({{{"id", "AML.T0040"}, {"name", "AI Model Inference API Access"}, {"assets", 1}, {"tested", 1}, {"findings", 0}}})}},
           {{"id", "AML.TA0003"}, {"name", "Resource Development"}, {"catalog_techniques", 12},
            {"techniques", json::array({{{"id", "AML.T0020"}, {"name", "Poison Training Data"}, {"assets", 2}, {"tested", 0}, {"findings", 0}}})}},
           {{"id", "AML.TA0004"}, {"name", "Initial Access"}, {"catalog_techniques", 6},
            {"techniques", json::array({{{"id", "AML.T0015"}, {"name", "Evade AI Model"}, {"assets", 1}, {"tested", 1}, {"findings", 1}},
                                        {{"id", "AML.T0051"}, {"name", "LLM Prompt Injection"}, {"assets", 1}, {"tested", 1}, {"findings", 1}}})}},
           {{"id", "AML.TA0008"}, {"name", "Discovery"}, {"catalog_techniques", 8}, {"techniques", json::array()}},
           {{"id", "AML.TA0010"}, {"name", "Exfiltration"}, {"catalog_techniques", 6},
            {"techniques", json::array({{{"id", "AML.T0024.002"}, {"name", "Extract AI Model"}, {"assets", 1}, {"tested", 1}, {"findings", 1}},
                                        {{"id", "AML.T0056"}, {"name", "Extract LLM System Prompt"}, {"assets", 1}, {"tested", 1}, {"findings", 0}}})}},
       })},
      {"findings", all_findings},
      {"stride", json::array({{{"category", "tampering"}, {"techniques", json::array({{{"id", "AML.T0015"}, {"asset", "fashion-classifier"}}})}},
                              {{"category", "information-disclosure"},
                               {"techniques", json::array({{{"id", "AML.T0024.002"}, {"asset", "fashion-classifier"}},
                                                           {{"id", "AML.T0056"}, {"asset", "support-chat"}}})}}})},
  };
}

}  // namespace aegis::test
