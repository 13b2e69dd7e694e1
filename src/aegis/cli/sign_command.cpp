#include "aegis/cli/sign_command.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "aegis/cli/common_options.h"
#include "aegis/core/error.h"
#include "aegis/provenance/signature.h"

namespace aegis::cli {

namespace {

namespace fs = std::filesystem;
using core::Finding;
using core::Severity;

const std::vector<std::string> kAtlasTamper = {"AML.T0010", "AML.T0018"};  // supply chain; backdoor ML model
const std::vector<std::string> kRmfProvenance = {"MEASURE 2.7", "MAP 4.1", "GOVERN 6.1"};

// Never from a command-line argument (it would sit in shell history and in `ps`).
std::string key_passphrase(bool confirm) {
  if (const char* env = std::getenv("AEGIS_KEY_PASSPHRASE")) return env;
  if (!::isatty(STDIN_FILENO)) return {};
  std::string first = ::getpass("key passphrase (empty for none): ");
  if (confirm && !first.empty() && first != std::string(::getpass("again: ")))
    throw core::Error("the two passphrases differ", "run the command again");
  return first;
}

// A private key is created readable by its owner only (0600), whatever the umask.
void write_file(const fs::path& path, const std::string& text, bool private_key) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, private_key ? 0600 : 0644);
  bool ok = fd >= 0;
  for (std::size_t done = 0; ok && done < text.size();) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    ok = n > 0;
    if (ok) done += static_cast<std::size_t>(n);
  }
  if (fd >= 0 && ::close(fd) != 0) ok = false;
  if (!ok) throw core::Error("cannot write " + path.string(), "check that the folder exists and is writable");
}

struct KeygenFlags {
  std::string out = "aegis-signing-key";
};

struct SignFlags {
  std::string model;
  std::string key;
  std::string signature;
  std::vector<std::string> certificates;
  std::vector<std::string> ignore;
  std::string method = "files";
  std::uint64_t shard_size = 1'000'000'000;
  bool allow_symlinks = false;
  std::size_t threads = 0;
};

struct VerifyFlags {
  CommonOptions common;
  std::string model;
  std::string signature;
  std::string key;
  std::string certificate_chain;
  std::vector<std::string> ignore;
  std::size_t threads = 0;
};

int run_verify(const VerifyFlags& flags) {
  provenance::VerifyOptions options;
  if (!flags.key.empty()) options.public_key = flags.key;
  if (!flags.certificate_chain.empty()) options.certificate_chain = flags.certificate_chain;
  options.ignore_paths = flags.ignore;
  options.threads = flags.threads;
  auto result = provenance::verify_model(flags.model, flags.signature, options);

  std::vector<Finding> findings;
  auto add = [&](std::string rule, std::string title, std::string file, std::string evidence, std::string remedy) {
    Finding finding;
    finding.rule_id = std::move(rule);
    finding.severity = Severity::Critical;
    finding.title = std::move(title);
    finding.location.file = std::move(file);
    finding.evidence = std::move(evidence);
    finding.atlas = kAtlasTamper;
    finding.nist_ai_rmf = kRmfProvenance;
    finding.remediation = std::move(remedy);
    findings.push_back(std::move(finding));
  };
  const std::string root = flags.model;
  auto path_of = [&](const std::string& name) { return name == "." ? root : (fs::path(root) / name).string(); };
  for (const auto& name : result.changed)
    add("signature.file-changed", "File differs from the signed manifest", path_of(name), "digest changed since signing",
        "Do not use this model: restore the file from the signed release, or sign again if the change is yours.");
  for (const auto& name : result.added)
    add("signature.file-added", "File not in the signed manifest", path_of(name), "present now, absent when signed",
        "Remove the file or find out who added it; loaders may pick it up.");
  for (const auto& name : result.removed)
    add("signature.file-removed", "Signed file is missing", path_of(name), "signed, absent now",
        "Restore the file from the signed release.");
  if (!result.ok && findings.empty())
    add("signature.invalid", "Signature does not verify", flags.signature, result.failure,
        "Do not trust this model: get the signature and the key or CA certificate from its publisher again.");

  core::ReportContext context;
  context.command = "verify";
  context.inputs = {flags.model, flags.signature};
  context.summary = core::summarize(findings);
  context.summary.files_scanned = result.resources;
  nlohmann::ordered_json verdict = {{"verified", result.ok}, {"signer", result.signer},
                                    {"predicate_type", result.predicate_type}, {"resources", result.resources}};
  if (!result.ok) verdict["failure"] = result.failure;
  context.extra_json = nlohmann::ordered_json{{"verification", verdict}}.dump(-1, ' ', false,
                                                                              nlohmann::json::error_handler_t::replace);
  if (!flags.common.quiet) {
    if (result.ok)
      std::cerr << "verified: " << result.resources << " file(s) match the signature (" << result.signer << ")\n";
    else
      std::cerr << "NOT verified: " << result.failure << "\n";
  }
  int code = finish_command(flags.common, findings, context);
  return result.ok ? code : std::max(code, 1);
}

}  // namespace

void register_sign_commands(CLI::App& app, int& exit_code) {
  auto keygen = std::make_shared<KeygenFlags>();
  auto* keygen_command = app.add_subcommand(
      "keygen", "Generate an ECDSA P-256 signing key: PREFIX.pem (private, encrypted when a passphrase is given) and PREFIX.pub.pem");
  keygen_command->add_option("--out", keygen->out, "file name prefix");
  keygen_command->callback([keygen, &exit_code] {
    auto pair = provenance::generate_key(key_passphrase(true));
    write_file(keygen->out + ".pem", pair.private_pem, true);
    write_file(keygen->out + ".pub.pem", pair.public_pem, false);
    std::cerr << "wrote " << keygen->out << ".pem (keep it secret) and " << keygen->out << ".pub.pem\n";
    exit_code = 0;
  });

  auto sign = std::make_shared<SignFlags>();
  auto* sign_command = app.add_subcommand(
      "sign", "Sign a model or dataset folder (or file): an OpenSSF model-signing bundle (in-toto statement, DSSE, Sigstore bundle)");
  sign_command->add_option("model", sign->model, "folder or file to sign")->required()->check(CLI::ExistingPath);
  sign_command->add_option("--key", sign->key, "PEM ECDSA private key (passphrase from AEGIS_KEY_PASSPHRASE or a prompt)")
      ->required()
      ->check(CLI::ExistingFile);
  sign_command->add_option("--signature", sign->signature, "where to write the bundle (default MODEL/model.sig)");
  sign_command->add_option("--certificate-chain", sign->certificates,
                           "certificate method: the key's PEM certificate, then intermediates (repeatable)")
      ->allow_extra_args(false)
      ->check(CLI::ExistingFile);
  sign_command->add_option("--ignore-paths", sign->ignore, "paths to leave out (repeatable)")->allow_extra_args(false);
  sign_command->add_option("--method", sign->method, "files or shards")->check(CLI::IsMember({"files", "shards"}));
  sign_command->add_option("--shard-size", sign->shard_size, "bytes per shard with --method shards")->check(CLI::PositiveNumber);
  sign_command->add_flag("--allow-symlinks", sign->allow_symlinks, "follow symbolic links instead of refusing them");
  sign_command->add_option("--threads,-j", sign->threads, "hashing threads (default: one per core)");
  sign_command->callback([sign, &exit_code] {
    provenance::SignOptions options;
    options.private_key = sign->key;
    options.passphrase = key_passphrase(false);
    options.manifest.method = sign->method == "shards" ? provenance::HashMethod::Shards : provenance::HashMethod::Files;
    options.manifest.shard_size = sign->shard_size;
    options.manifest.ignore_paths = sign->ignore;
    options.manifest.allow_symlinks = sign->allow_symlinks;
    options.manifest.threads = sign->threads;
    fs::path signature = sign->signature.empty()
                             ? (fs::is_directory(sign->model) ? fs::path(sign->model) / "model.sig"
                                                              : fs::path(sign->model + ".sig"))
                             : fs::path(sign->signature);
    options.signature_path = signature;
    for (const auto& path : sign->certificates) options.certificate_chain.push_back(path);
    write_file(signature, provenance::sign_model(sign->model, options), false);
    std::cerr << "signed " << sign->model << " -> " << signature.string() << "\n";
    exit_code = 0;
  });

  auto verify = std::make_shared<VerifyFlags>();
  auto* verify_command = app.add_subcommand(
      "verify", "Verify a model-signing bundle and report every file added, removed or changed since signing");
  verify_command->add_option("model", verify->model, "folder or file that was signed")->required()->check(CLI::ExistingPath);
  verify_command->add_option("--signature", verify->signature, "the bundle (model.sig)")->required()->check(CLI::ExistingFile);
  verify_command->add_option("--key", verify->key, "PEM public key (key method)")->check(CLI::ExistingFile);
  verify_command->add_option("--certificate-chain", verify->certificate_chain, "PEM CA certificates you trust (certificate method)")
      ->check(CLI::ExistingFile);
  verify_command->add_option("--ignore-paths", verify->ignore, "paths to leave out besides those the signature lists (repeatable)")
      ->allow_extra_args(false);
  verify_command->add_option("--threads,-j", verify->threads, "hashing threads (default: one per core)");
  add_common_options(*verify_command, verify->common);
  verify_command->callback([verify, &exit_code] { exit_code = run_verify(*verify); });
}

}  // namespace aegis::cli
