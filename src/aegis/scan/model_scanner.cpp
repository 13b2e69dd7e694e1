#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <system_error>
#include <utility>

#include "aegis/core/error.h"
#include "aegis/core/mapped_file.h"
#include "aegis/core/progress.h"
#include "aegis/core/thread_pool.h"
#include "aegis/formats/gguf.h"
#include "aegis/formats/hdf5.h"
#include "aegis/formats/keras_config.h"
#include "aegis/formats/npy.h"
#include "aegis/formats/onnx_model.h"
#include "aegis/formats/safetensors.h"
#include "aegis/formats/sniff.h"
#include "aegis/formats/tf_graph.h"
#include "aegis/scan/scan.h"

namespace aegis::scan {

namespace fs = std::filesystem;
using core::Finding;
using core::Severity;
using formats::FileKind;

namespace {

const std::vector<std::string> kAtlasCode = {"AML.T0010.003", "AML.T0011.000"};
const std::vector<std::string> kAtlasContainer = {"AML.T0010.003"};
const std::vector<std::string> kRmfCode = {"MEASURE 2.7", "MANAGE 3.1"};
const std::vector<std::string> kRmfContainer = {"MAP 4.2", "MEASURE 2.7"};

constexpr std::string_view kRemedyDenied =
    "Do not load this file. Treat it as malicious: report it to where it came from, and get the weights in "
    "a format that cannot carry code (safetensors) or load them with torch.load(weights_only=True).";
constexpr std::string_view kRemedyUnknown =
    "Loading this file imports and runs this callable. If it is your own trusted class, allow it with "
    "--allow module.name (or --allow-file); otherwise do not load the file, and prefer safetensors.";
constexpr std::string_view kRemedyMalformed =
    "A loader runs everything before the damage before it fails. Do not load the file; get an intact copy "
    "from a trusted source and scan it again.";
constexpr std::string_view kRemedyFormatCode =
    "Loading or running this model reaches outside it. Do not load it until the named layer, node or "
    "operator is understood; re-export the model from a trusted source without it.";
constexpr std::string_view kRemedyFormatContainer =
    "Readers may disagree about this file. Re-export it with the framework's own writer from a trusted source.";
constexpr std::string_view kRemedyContainer =
    "Loaders and scanners read this archive differently, which is how scanners get bypassed. Rebuild the "
    "archive with the framework's own writer (torch.save, numpy.savez) from a trusted source.";

bool has_model_extension(const fs::path& path) {
  static const std::set<std::string> kExtensions = {
      ".pt", ".pth", ".bin", ".pkl", ".pickle", ".joblib", ".jbl", ".ckpt", ".npy", ".npz", ".safetensors",
      ".model", ".mar", ".dill", ".gguf", ".h5", ".hdf5", ".keras", ".onnx", ".pb", ".sav", ".dat", ".p", ".7z", ".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".data"};
  std::string ext = path.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return kExtensions.contains(ext);
}

bool has_pickle_name(std::string_view name) {
  return name.ends_with(".pkl") || name.ends_with(".pickle") || name.ends_with("data.pkl") ||
         name.ends_with(".debug_pkl");
}

std::string hex_offset(std::uint64_t offset) {
  char buffer[32];
  std::snprintf(buffer, sizeof buffer, "0x%llx", static_cast<unsigned long long>(offset));
  return buffer;
}

std::string join_member(const std::string& outer, std::string_view inner) {
  if (outer.empty()) return std::string(inner);
  return outer + "!" + std::string(inner);
}

bool starts_with_local_header(std::span<const std::uint8_t> data) {
  return data.size() >= 4 && data[0] == 'P' && data[1] == 'K' && data[2] == 3 && data[3] == 4;
}

std::string_view format_label(FileKind kind) { return formats::to_string(kind); }

// Inspects one input file (and everything nested in it), appending findings.
class ArtifactInspector {
 public:
  ArtifactInspector(const CallablePolicy& policy, const ScanOptions& options, std::string file,
                    std::vector<Finding>& findings)
      : policy_(policy), options_(options), file_(std::move(file)), findings_(findings) {}

  // Returns the format label of the outermost layer.
  std::string inspect_file(std::span<const std::uint8_t> data, bool explicit_input, bool model_extension,
                           bool& skipped) {
    FileKind kind = formats::sniff(data, file_);
    skipped = false;
    if (!explicit_input && !model_extension) {
      // While walking a tree, a text file can start with bytes that are also protocol-0 opcodes;
      // only a stream shaped like a real pickle is worth analysing there.
      bool weak_pickle = kind == FileKind::Pickle && !formats::looks_like_pickle(data);
      if (kind == FileKind::Unknown || weak_pickle) {
        skipped = true;
        return "other";
      }
    }
    inspect(data, "", 0, kind);
    return zip_flavour_.empty() ? std::string(format_label(kind)) : zip_flavour_;
  }

  // Format-specific inventory for the report's "files" list (ops per function, opsets, versions).
  const nlohmann::ordered_json& details() const { return details_; }

 private:
  void add(std::string rule, Severity severity, std::string title, const std::string& member,
           std::optional<std::uint64_t> offset, std::string evidence, const std::vector<std::string>& atlas,
           const std::vector<std::string>& rmf, std::string_view remediation) {
    Finding finding;
    finding.rule_id = std::move(rule);
    finding.severity = severity;
    finding.title = std::move(title);
    finding.location.file = file_;
    finding.location.member = member;
    finding.location.offset = offset;
    finding.evidence = std::move(evidence);
    finding.atlas = atlas;
    finding.nist_ai_rmf = rmf;
    finding.remediation = std::string(remediation);
    findings_.push_back(std::move(finding));
  }

  void inspect(std::span<const std::uint8_t> data, const std::string& member, std::size_t depth, FileKind kind) {
    if (depth > options_.max_container_depth) {
      add("archive.too-deep", Severity::High, "Containers nested deeper than the scan limit; not inspected",
          member, std::nullopt,
          "nesting depth " + std::to_string(depth) + " > " + std::to_string(options_.max_container_depth),
          kAtlasContainer, kRmfContainer,
          "Unpack the layers by hand in a sandbox and scan the contents, or raise --max-depth.");
      return;
    }
    switch (kind) {
      case FileKind::Empty:
        if (depth == 0)
          add("file.empty", Severity::Low, "Empty file: nothing a loader could use", member, std::nullopt,
              "0 bytes", {}, {}, "Check that the download or copy of this artifact completed.");
        return;
      case FileKind::Pickle:
        inspect_pickle(data, member, options_.pickle_limits);
        return;
      case FileKind::LegacyTorch: {
        // magic number, protocol, sys_info, the object, the storage keys; raw storages follow.
        formats::PickleLimits limits = options_.pickle_limits;
        limits.max_pickles = 5;
        auto report = formats::analyze_pickle(data, limits);
        report.trailing_bytes = 0;
        report_pickle(report, member, "legacy torch.save stream");
        return;
      }
      case FileKind::Zip:
        inspect_zip(data, member, depth);
        // torch.load only takes the zip path when the file starts with a local header; otherwise it
        // unpickles from byte 0. A pickle with a zip behind it is read both ways, so scan both.
        if (!starts_with_local_header(data) && formats::looks_like_pickle(data))
          inspect_pickle(data, member, options_.pickle_limits, "pickle stream in front of a zip");
        return;
      case FileKind::Npy:
        inspect_npy(data, member);
        return;
      case FileKind::Safetensors:
        inspect_safetensors(data, member);
        return;
      case FileKind::Gguf:
        inspect_gguf(data, member);
        return;
      case FileKind::Hdf5:
        inspect_hdf5(data, member, depth);
        return;
      case FileKind::Onnx:
        inspect_onnx(data, member, depth);
        return;
      case FileKind::TfSavedModel:
      case FileKind::TfGraphDef:
      case FileKind::KerasMetadata:
      case FileKind::TfFingerprint:
        inspect_tf(data, member, depth, kind);
        return;
      case FileKind::Tar:
      case FileKind::SevenZip:
        inspect_archive(data, member, depth, kind);
        return;
      case FileKind::Gzip:
      case FileKind::Bzip2:
      case FileKind::Xz:
      case FileKind::Lzma:
      case FileKind::Zlib:
        inspect_stream(data, member, depth, kind);
        return;
      case FileKind::Unknown:
        if (depth == 0)
          add("file.unknown-format", Severity::Medium,
              "Format not recognised: the file could not be checked", member, std::nullopt,
              "the first bytes match no format Aegis reads (pickle, PyTorch, NumPy, joblib, safetensors, GGUF, HDF5, "
              "ONNX, TensorFlow, archives)",
              kAtlasContainer, kRmfContainer,
              "Find out which program reads this file; do not load it with a pickle-based loader until it is checked.");
        return;
    }
  }

  void inspect_pickle(std::span<const std::uint8_t> data, const std::string& member,
                      const formats::PickleLimits& limits, std::string_view context = "pickle stream") {
    auto report = formats::analyze_pickle(data, limits);
    report_pickle(report, member, context);
    if (report.joblib_arrays_skipped > 0 && limits.skip_joblib_arrays) inspect_as_plain_pickle(data, member, limits, report);
  }

  // joblib.load skips the array bytes that follow each NumpyArrayWrapper; pickle.load runs them as
  // opcodes. An attacker can hide a payload there that only the plain reading sees. Honest array
  // bytes decode as garbage in that reading, so only what it adds at deny-list grade is reported.
  void inspect_as_plain_pickle(std::span<const std::uint8_t> data, const std::string& member,
                               formats::PickleLimits limits, const formats::PickleReport& joblib_reading) {
    limits.skip_joblib_arrays = false;
    auto plain = formats::analyze_pickle(data, limits);
    std::set<std::string> seen;
    for (const auto& import : joblib_reading.imports) seen.insert(import.module + "." + import.name);
    std::set<std::string> reported;
    for (const auto& import : plain.imports) {
      std::string dotted = import.module + "." + import.name;
      if (!import.resolved || seen.contains(dotted) || !reported.insert(dotted).second) continue;
      if (policy_.classify(import.module, import.name) != CallableVerdict::Denied) continue;
      add("pickle.joblib-array-payload", Severity::Critical,
          "Bytes joblib treats as array data import " + dotted + " when the file is read with pickle.load", member,
          import.offset,
          import.opcode + " " + dotted + " at " + hex_offset(import.offset) +
              " lies inside an inline joblib array; joblib.load skips it, pickle.load runs it",
          kAtlasCode, kRmfCode, kRemedyDenied);
    }
  }

  struct ImportGroup {
    const formats::PickleImport* first = nullptr;
    std::size_t count = 0;
    CallableVerdict verdict = CallableVerdict::Unknown;
    std::vector<const formats::PickleCall*> uses;
  };

  void report_pickle(const formats::PickleReport& report, const std::string& member, std::string_view context) {
    std::map<std::string, ImportGroup> groups;
    std::size_t unresolved_reported = 0;
    for (const auto& import : report.imports) {
      if (!import.resolved) {
        if (unresolved_reported++ < 20)
          add("pickle.unresolved-global", Severity::High,
              "Pickle imports a callable whose name cannot be resolved statically", member, import.offset,
              import.opcode + " at " + hex_offset(import.offset) + ": " + import.detail, kAtlasCode, kRmfCode,
              kRemedyUnknown);
        continue;
      }
      std::string dotted = std::string(CallablePolicy::python3_module(import.module)) + "." + import.name;
      auto [it, inserted] = groups.try_emplace(dotted);
      auto& group = it->second;
      if (inserted) {
        group.first = &import;
        group.verdict = policy_.classify(import.module, import.name);
      }
      ++group.count;
    }
    std::size_t loose_calls = 0;
    for (const auto& call : report.calls) {
      if (call.module.empty()) {
        if (call.kind == "call" && loose_calls++ < 20)
          add("pickle.unresolved-call", Severity::High, "Pickle calls a value that is not an imported callable",
              member, call.offset, call.opcode + " at " + hex_offset(call.offset) + ": " + call.callee + call.arguments,
              kAtlasCode, kRmfCode, kRemedyUnknown);
        continue;
      }
      auto it = groups.find(std::string(CallablePolicy::python3_module(call.module)) + "." + call.name);
      if (it != groups.end() && it->second.uses.size() < 5) it->second.uses.push_back(&call);
    }
    for (const auto& [dotted, group] : groups) {
      if (group.verdict == CallableVerdict::Allowed) continue;
      bool denied = group.verdict == CallableVerdict::Denied;
      std::string evidence = group.first->opcode + " " + group.first->module + "." + group.first->name + " at " +
                             hex_offset(group.first->offset);
      if (group.first->module != CallablePolicy::python3_module(group.first->module))
        evidence += " (Python 3 imports it as " + dotted + ")";
      if (group.count > 1) evidence += " (imported " + std::to_string(group.count) + " times)";
      for (const auto* use : group.uses) {
        evidence += "; " + use->kind + " " + use->callee;
        if (!use->arguments.empty()) evidence += " " + use->arguments;
        evidence += " at " + hex_offset(use->offset);
      }
      if (denied)
        add("pickle.denied-callable", Severity::Critical,
            "Pickle imports " + dotted + ", a callable that runs code or touches the system, when loaded", member,
            group.first->offset, std::move(evidence), kAtlasCode, kRmfCode, kRemedyDenied);
      else
        add("pickle.unknown-callable", Severity::High,
            "Pickle imports " + dotted + ", which is not on the allow-list", member, group.first->offset,
            std::move(evidence), kAtlasCode, kRmfCode, kRemedyUnknown);
    }
    if (report.malformed)
      add("pickle.malformed", Severity::High,
          "Damaged " + std::string(context) + ": a loader runs everything before the damage", member,
          report.malformed_offset,
          *report.malformed + " (after " + std::to_string(report.opcodes) + " opcodes, " +
              std::to_string(report.pickles) + " complete pickle(s))",
          kAtlasCode, kRmfCode, kRemedyMalformed);
    if (report.trailing_bytes > 0)
      add("pickle.trailing-data", Severity::Low, "Bytes after the last pickle that no loader reads", member,
          report.bytes_consumed, std::to_string(report.trailing_bytes) + " trailing bytes", {}, {},
          "Harmless to a loader; check where the extra bytes came from.");
    if (report.records_dropped > 0)
      add("pickle.records-dropped", Severity::Medium, "Too many imports and calls to record them all", member,
          std::nullopt, std::to_string(report.records_dropped) + " records beyond the limit were counted, not kept",
          kAtlasCode, kRmfCode, "Inspect the file by hand; an ordinary model has few distinct imports.");
    for (const auto& embedded : report.embedded) {
      const auto& inner = *embedded.report;
      if (inner.pickles == 0 && inner.imports.empty() && inner.calls.empty()) continue;  // bytes that only looked like one
      std::string inner_member =
          join_member(member, "<" + embedded.encoding + " pickle at " + hex_offset(embedded.offset) + ">");
      add("pickle.embedded-pickle", Severity::Medium, "Pickle data holds another pickle (" + embedded.encoding + ")",
          member, embedded.offset,
          std::to_string(inner.imports.size()) + " import(s) and " + std::to_string(inner.calls.size()) +
              " call(s) inside; code that unpickles this value runs them",
          kAtlasCode, kRmfCode, "Do not unpickle values taken from this file; scan findings inside it are listed.");
      report_pickle(inner, inner_member, "embedded pickle");
    }
  }

  void inspect_zip(std::span<const std::uint8_t> data, const std::string& member, std::size_t depth) {
    formats::ZipArchive archive;
    try {
      archive = formats::read_zip(data, options_.zip_limits);
    } catch (const core::FormatError& error) {
      add("zip.unreadable", Severity::High, "Zip archive cannot be read: it could not be checked", member,
          error.offset(), error.what(), kAtlasContainer, kRmfContainer, kRemedyContainer);
      return;
    }
    report_zip_anomalies(archive.anomalies, member);

    // PyTorch's reader takes the record prefix from the first entry and loads <prefix>/data.pkl.
    std::string prefix;
    if (!archive.entries.empty()) {
      const auto& first = archive.entries.front().name;
      auto slash = first.find('/');
      if (slash != std::string::npos) prefix = first.substr(0, slash + 1);
    }
    std::set<std::string> names;
    for (const auto& entry : archive.entries) names.insert(entry.name);
    bool torch = !prefix.empty() && names.contains(prefix + "data.pkl");
    bool torchscript = torch && names.contains(prefix + "constants.pkl");
    // Keras 3 writes config.json, metadata.json and model.weights.h5 at the archive's root.
    bool keras = names.contains("config.json") && (names.contains("metadata.json") || names.contains("model.weights.h5"));
    if (depth == 0) zip_flavour_ = torchscript ? "torchscript-zip" : torch ? "pytorch-zip" : keras ? "keras-v3" : "zip";

    std::vector<bool> done(archive.entries.size(), false);
    std::set<std::string> storage_keys;
    std::vector<std::uint8_t> storage;
    std::vector<formats::ZipAnomaly> crc_anomalies;
    for (std::size_t i = 0; i < archive.entries.size(); ++i) {
      const auto& entry = archive.entries[i];
      if (!has_pickle_name(entry.name) || !entry.readable) continue;
      done[i] = true;
      auto content = read_member(data, entry, member, storage, true, crc_anomalies);
      if (!content) continue;
      auto report = formats::analyze_pickle(*content, options_.pickle_limits);
      for (const auto& key : report.storage_keys) storage_keys.insert(key);
      report_pickle(report, join_member(member, entry.name), "pickle member");
    }
    for (std::size_t i = 0; i < archive.entries.size(); ++i) {
      const auto& entry = archive.entries[i];
      if (done[i] || !entry.readable || entry.name.ends_with("/")) continue;
      // Tensor payloads that the pickle refers to are never read: they are data, not code.
      if (torch && entry.name.starts_with(prefix + "data/") &&
          storage_keys.contains(entry.name.substr(prefix.size() + 5)))
        continue;
      auto content = read_member(data, entry, member, storage, entry.method != 0, crc_anomalies);
      if (!content) continue;
      FileKind kind = formats::sniff(*content, entry.name);
      std::string inner = join_member(member, entry.name);
      if (keras && (entry.name == "config.json" || entry.name == "metadata.json")) {
        std::string_view text(reinterpret_cast<const char*>(content->data()), content->size());
        if (entry.name == "config.json")
          review_keras(text, inner, "config.json of a .keras archive");
        else
          note_keras_metadata(text);
        continue;
      }
      if (kind == FileKind::Pickle || kind == FileKind::LegacyTorch) {
        add("zip.hidden-pickle", Severity::Medium, "Archive holds a pickle under a name that is not a pickle's",
            member, entry.local_header_offset,
            "member '" + entry.name + "' is a pickle stream; scanners that pick members by name miss it",
            kAtlasContainer, kRmfContainer, kRemedyContainer);
        inspect(*content, inner, depth + 1, kind);
      } else if (kind != FileKind::Unknown && kind != FileKind::Empty) {
        inspect(*content, inner, depth + 1, kind);
      }
    }
    report_zip_anomalies(crc_anomalies, member);
  }

  std::optional<std::span<const std::uint8_t>> read_member(std::span<const std::uint8_t> data,
                                                           const formats::ZipEntry& entry, const std::string& member,
                                                           std::vector<std::uint8_t>& storage, bool check_crc,
                                                           std::vector<formats::ZipAnomaly>& anomalies) {
    try {
      return formats::read_zip_member(data, entry, storage, options_.zip_limits,
                                      check_crc && options_.check_zip_crc, &anomalies);
    } catch (const core::FormatError& error) {
      add("zip.member-unreadable", Severity::High, "Archive member cannot be read: it could not be checked",
          join_member(member, entry.name), entry.local_header_offset, error.what(), kAtlasContainer,
          kRmfContainer, kRemedyContainer);
      return std::nullopt;
    }
  }

  void report_zip_anomalies(const std::vector<formats::ZipAnomaly>& anomalies, const std::string& member) {
    static const std::map<std::string, std::pair<Severity, std::string_view>> kGrades = {
        {"name-mismatch", {Severity::High, "Central directory and local header name a member differently"}},
        {"flags-mismatch", {Severity::Medium, "Central directory and local header disagree on a member's flags"}},
        {"size-mismatch", {Severity::Medium, "Central directory and local header disagree on a member's size"}},
        {"crc-mismatch", {Severity::High, "Member's CRC does not match its data (Python's zipfile rejects it, PyTorch loads it)"}},
        {"encrypted", {Severity::High, "Encrypted member: it could not be checked"}},
        {"unsupported-method", {Severity::High, "Member compressed with an unsupported method: it could not be checked"}},
        {"overlap", {Severity::High, "Members' data overlap"}},
        {"prefix-data", {Severity::Medium, "Data before the zip archive (a polyglot file)"}},
        {"trailing-data", {Severity::Medium, "Data after the end of the zip archive"}},
        {"duplicate-name", {Severity::High, "Two members share one name: loaders and scanners may pick different ones"}},
        {"bad-local-header", {Severity::High, "Member's local header is damaged"}},
        {"out-of-bounds", {Severity::High, "Member lies outside the file"}},
        {"entry-count-mismatch", {Severity::Medium, "End record and central directory disagree on the member count"}},
        {"multiple-eocd", {Severity::Medium, "More than one end-of-central-directory record"}},
        {"comment", {Severity::Info, "Archive carries a comment"}},
        {"zip-bomb", {Severity::High, "Member inflates beyond the scan's limits: it could not be checked"}},
        {"absolute-or-parent-path", {Severity::Medium, "Member name is absolute or climbs out with '..'"}},
    };
    std::map<std::string, std::size_t> seen;
    for (const auto& anomaly : anomalies) {
      if (seen[anomaly.kind]++ >= 20) continue;  // one kind repeated on every member says nothing new
      auto it = kGrades.find(anomaly.kind);
      Severity severity = it != kGrades.end() ? it->second.first : Severity::Medium;
      std::string title = it != kGrades.end() ? std::string(it->second.second) : "Zip anomaly: " + anomaly.kind;
      std::string evidence = anomaly.detail;
      if (!anomaly.member.empty()) evidence = "member '" + anomaly.member + "': " + evidence;
      add("zip." + anomaly.kind, severity, std::move(title), member, anomaly.offset, std::move(evidence),
          kAtlasContainer, kRmfContainer, kRemedyContainer);
    }
  }

  void inspect_npy(std::span<const std::uint8_t> data, const std::string& member) {
    formats::NpyHeader header;
    try {
      header = formats::parse_npy_header(data);
    } catch (const core::FormatError& error) {
      add("npy.malformed", Severity::Medium, "NumPy array header is damaged: the file could not be checked", member,
          error.offset(), error.what(), kAtlasContainer, kRmfContainer,
          "Regenerate the array with numpy.save from a trusted source.");
      return;
    }
    if (header.has_object) {
      add("npy.object-array", Severity::Medium,
          "NumPy array of Python objects: numpy.load(allow_pickle=True) unpickles it", member, header.data_offset,
          "dtype " + header.descr, kAtlasCode, kRmfCode,
          "Store plain numeric arrays; never pass allow_pickle=True for files you did not make.");
      if (header.data_offset <= data.size())
        inspect_pickle(data.subspan(header.data_offset), member, options_.pickle_limits, "object array pickle");
      return;
    }
    std::uint64_t available = data.size() - std::min<std::uint64_t>(data.size(), header.data_offset);
    if (header.expected_data_bytes > 0 && available < header.expected_data_bytes)
      add("npy.truncated", Severity::Medium, "NumPy array holds fewer bytes than its header declares", member,
          header.data_offset,
          std::to_string(available) + " bytes present, " + std::to_string(header.expected_data_bytes) + " declared",
          kAtlasContainer, kRmfContainer, "Get an intact copy of the array.");
  }

  void inspect_safetensors(std::span<const std::uint8_t> data, const std::string& member) {
    auto info = formats::validate_safetensors(data);
    std::size_t reported = 0;
    for (const auto& problem : info.problems) {
      if (reported++ >= 20) break;
      std::string evidence = problem.detail;
      if (!problem.tensor.empty()) evidence = "tensor '" + problem.tensor + "': " + evidence;
      add("safetensors." + problem.kind, Severity::Medium, "Safetensors file is not valid: " + problem.kind, member,
          std::nullopt, std::move(evidence), kAtlasContainer, kRmfContainer,
          "Re-export the tensors with the safetensors library; a reader may mis-handle this file.");
    }
  }

  void inspect_gguf(std::span<const std::uint8_t> data, const std::string& member) {
    auto info = formats::validate_gguf(data);
    std::size_t reported = 0;
    for (const auto& problem : info.problems) {
      if (reported++ >= 20) break;
      add("gguf." + problem.kind, Severity::Medium, "GGUF file is not valid: " + problem.kind, member, problem.offset,
          problem.detail, kAtlasContainer, kRmfContainer,
          "Re-export the model with the ggml/llama.cpp tools from a trusted source; a runtime may mis-read this file.");
    }
    // Runtimes render tokenizer.chat_template with Jinja, some unsandboxed (CVE-2024-34359).
    for (const auto& chat_template : info.templates) {
      for (const auto& risk : formats::review_jinja_template(chat_template.text)) {
        Severity severity = risk.severity == "critical" ? Severity::Critical : Severity::High;
        add("gguf.template-" + risk.kind, severity,
            "Chat template in '" + chat_template.key + "' reaches outside the template sandbox: " + risk.kind, member,
            std::nullopt, "at character " + std::to_string(risk.offset) + ": " + risk.excerpt,
            kAtlasCode, kRmfCode,
            "Do not load this model in a runtime that renders its chat template; replace the template with a "
            "reviewed one (or render it in a sandboxed Jinja environment).");
      }
    }
  }

  // Issues the format analysers graded, turned into findings at this file and member.
  void add_issues(const std::vector<formats::FormatIssue>& issues, const std::string& member) {
    std::size_t reported = 0;
    for (const auto& issue : issues) {
      if (reported++ >= formats::kMaxIssuesPerFile) break;
      bool code = issue.kind == formats::IssueClass::Code;
      std::string evidence = issue.where.empty() ? issue.evidence : issue.where + ": " + issue.evidence;
      add(issue.rule, issue.severity, issue.title, member, issue.offset, std::move(evidence),
          code ? kAtlasCode : kAtlasContainer, code ? kRmfCode : kRmfContainer,
          issue.remediation.empty() ? (code ? kRemedyFormatCode : kRemedyFormatContainer)
                                    : std::string_view(issue.remediation));
    }
  }

  void review_keras(std::string_view json, const std::string& member, std::string_view origin) {
    auto review = formats::review_keras_config(json, origin);
    add_issues(review.issues, member);
    auto& keras = details_["keras"];
    if (!keras.is_object()) keras = nlohmann::ordered_json::object();
    if (!review.keras_version.empty()) keras["keras_version"] = review.keras_version;
    if (!review.backend.empty()) keras["backend"] = review.backend;
    keras["layers"] = keras.value("layers", std::size_t{0}) + review.layers;
    for (const auto& name : review.layer_classes) {
      auto& classes = keras["layer_classes"];
      if (std::find(classes.begin(), classes.end(), name) == classes.end()) classes.push_back(name);
    }
  }

  void note_keras_metadata(std::string_view json) {
    auto parsed = nlohmann::json::parse(json, nullptr, false);
    if (parsed.is_object())
      for (const char* key : {"keras_version", "date_saved"})
        if (parsed.contains(key) && parsed[key].is_string()) details_["keras"][key] = parsed[key].get<std::string>();
  }

  void inspect_hdf5(std::span<const std::uint8_t> data, const std::string& member, std::size_t depth) {
    // A whole file on disk is opened by the reader itself; anything else is handed over as bytes.
    auto extract = formats::extract_hdf5(data, options_.hdf5_limits,
                                         depth == 0 && member.empty() && file_backed_ ? file_ : std::string());
    if (extract.child_died) {
      add("h5.reader-crash", Severity::High, "libhdf5 failed on this file in the sandbox: it could not be checked",
          member, std::nullopt, extract.error, kAtlasContainer, kRmfContainer,
          "h5py and Keras use the same library and would fail the same way, or worse: do not open this file "
          "outside a sandbox; get an intact copy from a trusted source.");
      return;
    }
    if (!extract.opened) {
      add("h5.unreadable", Severity::Medium, "HDF5 file cannot be opened: it could not be checked", member,
          std::nullopt, extract.error, kAtlasContainer, kRmfContainer,
          "Get an intact copy from a trusted source and scan it again.");
      return;
    }
    if (!extract.error.empty() || extract.limit_hit)
      add("h5.incomplete", Severity::Medium, "HDF5 file could only be read in part: the rest was not checked", member,
          std::nullopt, extract.error.empty() ? "a read limit was reached" : extract.error, kAtlasContainer,
          kRmfContainer, "Get an intact copy from a trusted source and scan it again.");
    for (const auto& link : extract.links) {
      if (link.kind != "external") continue;
      add("h5.external-link", Severity::High, "HDF5 file links to an object in another file", member, std::nullopt,
          link.object + (link.object == "/" ? "" : "/") + link.name + " -> " + link.target, kAtlasCode, kRmfCode,
          "h5py follows external links when the object is read, opening files outside the model; re-export the "
          "model without them.");
    }
    bool keras = false;
    for (const auto& attribute : extract.attributes) {
      std::string where = join_member(member, "attribute " + attribute.object + "@" + attribute.name);
      if (attribute.name == "model_config" || attribute.name == "training_config") {
        keras = keras || attribute.name == "model_config";
        if (attribute.truncated)
          add("h5.limit", Severity::Medium, "Keras configuration is larger than the read limit: its end was not checked",
              where, std::nullopt, std::to_string(attribute.value.size()) + " bytes read", kAtlasContainer,
              kRmfContainer, "Review the model configuration by hand in a sandbox.");
        review_keras(attribute.value, where, attribute.name + " attribute");
      } else if ((attribute.name == "keras_version" || attribute.name == "backend") && attribute.object == "/") {
        details_["keras"][attribute.name] = attribute.value.substr(0, 64);
      }
    }
    if (depth == 0) zip_flavour_ = keras ? "keras-h5" : "hdf5";
    details_["hdf5"] = {{"objects", extract.objects},
                        {"string_attributes", extract.attributes.size()},
                        {"reader_sandbox", extract.confined ? "seccomp" : "limits-only"}};
  }

  void inspect_onnx(std::span<const std::uint8_t> data, const std::string& member, std::size_t depth) {
    // External data is resolved against the model's folder; inside an archive there is none.
    fs::path model_dir;
    if (depth == 0 && member.empty()) model_dir = fs::path(file_).parent_path();
    if (depth == 0 && member.empty() && model_dir.empty()) model_dir = ".";
    auto info = formats::analyze_onnx(data, model_dir);
    add_issues(info.issues, member);
    if (!info.parsed) return;
    nlohmann::ordered_json onnx = {{"ir_version", info.ir_version}, {"producer", info.producer}};
    nlohmann::ordered_json opsets = nlohmann::ordered_json::object();
    for (const auto& [domain, version] : info.opsets) opsets[domain.empty() ? "ai.onnx" : domain] = version;
    onnx["opsets"] = opsets;
    onnx["nodes"] = info.nodes;
    onnx["initializers"] = info.initializers;
    onnx["functions"] = info.functions;
    onnx["ops"] = info.op_counts;
    if (!info.external_files.empty()) onnx["external_data"] = info.external_files;
    details_["onnx"] = std::move(onnx);
  }

  void inspect_tf(std::span<const std::uint8_t> data, const std::string& member, std::size_t depth, FileKind kind) {
    formats::TfFileKind tf_kind = kind == FileKind::TfSavedModel    ? formats::TfFileKind::SavedModel
                                  : kind == FileKind::KerasMetadata ? formats::TfFileKind::KerasMetadata
                                  : kind == FileKind::TfFingerprint ? formats::TfFileKind::Fingerprint
                                                                    : formats::TfFileKind::GraphDef;
    auto info = formats::analyze_tf(data, tf_kind);
    add_issues(info.issues, member);
    (void)depth;
    if (!info.parsed) return;
    // Every op of every function, as the issue's reviewers asked: the inventory goes to the report.
    if (!info.functions.empty()) {
      nlohmann::ordered_json functions = nlohmann::ordered_json::object();
      for (const auto& function : info.functions) functions[function.function] = function.op_counts;
      details_["tensorflow"]["ops"] = std::move(functions);
    }
    if (!info.tags.empty()) details_["tensorflow"]["tags"] = info.tags;
    if (!info.fingerprint.empty()) details_["tensorflow"]["fingerprint"] = info.fingerprint;
    std::size_t index = 0;
    for (const auto& json : info.keras_metadata_json)
      review_keras(json, join_member(member, "keras metadata node " + std::to_string(index++)), "keras_metadata.pb");
  }

  void inspect_archive(std::span<const std::uint8_t> data, const std::string& member, std::size_t depth,
                       FileKind kind) {
    std::vector<std::string> problems;
    try {
      problems = formats::for_each_archive_entry(data, options_.archive_limits, [&](const formats::ArchiveEntry& entry) {
        std::string inner = join_member(member, entry.name);
        if (entry.truncated)
          add("archive.limit", Severity::High, "Archive entry exceeds the scan's limits: only its start was checked",
              inner, std::nullopt, entry.limit_hit, kAtlasContainer, kRmfContainer,
              "Unpack it in a sandbox and scan the contents, or raise the limits.");
        FileKind inner_kind = formats::sniff(entry.content, entry.name);
        if (inner_kind != FileKind::Unknown || has_model_extension(entry.name))
          inspect(entry.content, inner, depth + 1, inner_kind);
      });
    } catch (const core::FormatError& error) {
      add("archive.unreadable", Severity::High,
          std::string(format_label(kind)) + " archive cannot be read: it could not be checked", member,
          error.offset(), error.what(), kAtlasContainer, kRmfContainer, "Get an intact copy and scan it again.");
      return;
    }
    for (const auto& problem : problems)
      add("archive.problem", Severity::Medium, std::string(format_label(kind)) + " archive could not be read whole",
          member, std::nullopt, problem, kAtlasContainer, kRmfContainer,
          "Unpack it in a sandbox and scan the contents.");
  }

  void inspect_stream(std::span<const std::uint8_t> data, const std::string& member, std::size_t depth,
                      FileKind kind) {
    std::vector<std::uint8_t> out;
    std::string reason = formats::decompress_stream(data, options_.archive_limits, out);
    std::string inner = join_member(member, "<" + std::string(format_label(kind)) + " content>");
    if (!reason.empty())
      add("archive.stream", Severity::High,
          std::string(format_label(kind)) + " stream could not be decompressed whole: the rest was not checked",
          member, std::nullopt, reason, kAtlasContainer, kRmfContainer,
          "Get an intact copy; a loader may still read what comes before the damage.");
    if (!out.empty()) inspect(out, inner, depth + 1, formats::sniff(out));
  }

  const CallablePolicy& policy_;
  const ScanOptions& options_;
  std::string file_;
  std::vector<Finding>& findings_;
  std::string zip_flavour_;
  nlohmann::ordered_json details_ = nlohmann::ordered_json::object();

 public:
  bool file_backed_ = false;  // file_ names the file whose bytes are being inspected
};

struct WorkItem {
  fs::path path;
  bool explicit_input = false;
  fs::path root;  // the input it was found under (its folder, for a file input): models are grouped below it
};

// Hugging Face cache entries are folders named models--org--name (datasets--, spaces-- likewise).
std::optional<std::pair<std::string, std::string>> hf_cache_repo(const std::string& component) {
  for (auto [prefix, label] : {std::pair{"models--", ""}, std::pair{"datasets--", "datasets/"}, std::pair{"spaces--", "spaces/"}}) {
    std::string_view view(component);
    if (!view.starts_with(prefix) || view.size() == std::string_view(prefix).size()) continue;
    std::string repo(view.substr(std::string_view(prefix).size()));
    if (auto split = repo.find("--"); split != std::string::npos) repo.replace(split, 2, "/");
    return std::pair{std::string(label) + repo, std::string(prefix)};
  }
  return std::nullopt;
}

// A file reached through blobs/ of a cache entry is scanned under its snapshot name when it has one.
bool is_hf_blob(const fs::path& path) {
  fs::path previous;
  for (const auto& part : path) {
    if (part == "blobs" && hf_cache_repo(previous.string())) return true;
    previous = part;
  }
  return false;
}

bool holds_model_markers(const fs::path& dir) {
  static constexpr std::string_view kMarkers[] = {"config.json", "model_index.json", "saved_model.pb", ".gitattributes",
                                                  "modules.json", "adapter_config.json", "params.json", "MLmodel"};
  std::error_code ec;
  for (auto marker : kMarkers)
    if (fs::exists(dir / marker, ec)) return true;
  return false;
}

void sort_findings(std::vector<Finding>& findings) {
  std::stable_sort(findings.begin(), findings.end(), [](const Finding& a, const Finding& b) {
    if (a.location.file != b.location.file) return a.location.file < b.location.file;
    if (a.severity != b.severity) return a.severity > b.severity;
    if (a.location.member != b.location.member) return a.location.member < b.location.member;
    return a.location.offset.value_or(0) < b.location.offset.value_or(0);
  });
}

}  // namespace

namespace {

// ONNX keeps big weights in files beside the model (model.onnx.data, weights.bin) that have no
// format of their own. A file that a scanned ONNX model names as its external data is that, not
// an unknown format: its "file.unknown-format" finding is withdrawn and the file labelled.
// Returns, for each such file, the index of the model file that names it.
std::map<std::size_t, std::size_t> recognise_onnx_external_data(const std::vector<WorkItem>& items,
                                                                std::vector<FileResult>& files,
                                                                std::vector<std::vector<Finding>>& per_file) {
  std::map<fs::path, std::size_t> external;
  std::map<std::size_t, std::size_t> owner;
  for (std::size_t i = 0; i < files.size(); ++i) {
    if (files[i].format != "onnx" || files[i].details.empty()) continue;
    auto details = nlohmann::json::parse(files[i].details, nullptr, false);
    if (!details.is_object() || !details.contains("onnx")) continue;
    const auto& locations = details["onnx"].value("external_data", nlohmann::json::array());
    for (const auto& location : locations)
      if (location.is_string())
        external.try_emplace((items[i].path.parent_path() / location.get<std::string>()).lexically_normal(), i);
  }
  for (std::size_t i = 0; i < files.size() && !external.empty(); ++i) {
    auto it = external.find(items[i].path.lexically_normal());
    if (files[i].format != "unknown" || it == external.end()) continue;
    owner[i] = it->second;
    std::erase_if(per_file[i], [](const Finding& f) { return f.rule_id == "file.unknown-format"; });
    files[i].format = "onnx-external-data";
    files[i].findings = per_file[i].size();
  }
  return owner;
}

}  // namespace

ModelKey model_of(const fs::path& file, const fs::path& root, const std::function<bool(const fs::path&)>& is_marked) {
  std::vector<fs::path> parts(file.begin(), file.end());
  for (std::size_t i = 0; i < parts.size(); ++i) {
    auto repo = hf_cache_repo(parts[i].string());
    if (!repo || i + 1 >= parts.size() - 1) continue;
    fs::path base;
    for (std::size_t j = 0; j <= i; ++j) base /= parts[j];
    if (parts[i + 1] == "snapshots" && i + 2 < parts.size() - 1) {
      std::string revision = parts[i + 2].string();
      return {repo->first + "@" + revision.substr(0, 12), "hf-cache", (base / "snapshots" / parts[i + 2]).string()};
    }
    return {repo->first + " (" + parts[i + 1].string() + ")", "hf-cache", (base / parts[i + 1]).string()};
  }
  fs::path dir = root;
  if (!dir.empty() && is_marked(dir)) return {dir.string(), "model-folder", dir.string()};
  fs::path relative = file.parent_path().lexically_relative(root);
  if (!root.empty() && !relative.empty() && *relative.begin() != "..") {
    for (const auto& part : relative) {
      if (part == ".") continue;
      dir /= part;
      if (is_marked(dir)) return {dir.string(), "model-folder", dir.string()};
    }
  }
  return {file.string(), "file", file.string()};
}

ModelScanner::ModelScanner(CallablePolicy policy, ScanOptions options)
    : policy_(std::move(policy)), options_(std::move(options)) {
  formats::silence_protobuf_logging();
  formats::prepare_hdf5();
}

ScanResult ModelScanner::scan_bytes(std::span<const std::uint8_t> data, const std::string& display_path) const {
  ScanResult result;
  FileResult file{display_path, "", data.size(), 0, false, display_path, ""};
  ArtifactInspector inspector(policy_, options_, display_path, result.findings);
  bool skipped = false;
  file.format = inspector.inspect_file(data, true, true, skipped);
  if (!inspector.details().empty()) file.details = inspector.details().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  file.model = display_path;
  file.findings = result.findings.size();
  result.models.push_back({display_path, "file", display_path, {0}});
  result.files.push_back(file);
  result.bytes = data.size();
  sort_findings(result.findings);
  return result;
}

ScanResult ModelScanner::scan(const std::vector<std::string>& paths, core::Progress* progress) const {
  std::vector<WorkItem> items;
  std::uint64_t total_bytes = 0;
  std::vector<Finding> walk_findings;
  // A Hugging Face snapshot folder holds symbolic links into blobs/: links to files are followed
  // (else such a folder would pass unscanned), and each file is scanned once however it is reached.
  std::set<std::pair<dev_t, ino_t>> seen_files;
  auto first_visit = [&seen_files](const fs::path& path) {
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0) return true;  // let the scan report why it cannot be read
    return seen_files.insert({st.st_dev, st.st_ino}).second;
  };
  std::vector<WorkItem> candidates;
  for (const auto& input : paths) {
    std::error_code ec;
    auto status = fs::status(input, ec);
    if (ec || !fs::exists(status))
      throw core::Error("cannot scan " + input + ": no such file or directory", "check the path and try again");
    if (fs::is_regular_file(status)) {
      candidates.push_back({input, true, fs::path(input).parent_path()});
      continue;
    }
    if (!fs::is_directory(status))
      throw core::Error("cannot scan " + input + ": not a regular file or directory", "pass files or directories");
    auto options = fs::directory_options::skip_permission_denied;
    if (options_.follow_symlinks) options |= fs::directory_options::follow_directory_symlink;
    fs::recursive_directory_iterator it(input, options, ec), end;
    if (ec) throw core::Error("cannot read directory " + input + ": " + ec.message(), "check its permissions");
    for (; it != end; it.increment(ec)) {
      if (ec) {
        Finding finding;
        finding.rule_id = "file.unreadable";
        finding.severity = Severity::High;
        finding.title = "Part of the directory tree could not be read: it was not checked";
        finding.location.file = it->path().string();
        finding.evidence = ec.message();
        finding.remediation = "Scan as a user who can read every file.";
        walk_findings.push_back(std::move(finding));
        ec.clear();
        continue;
      }
      const auto& entry = *it;
      if (entry.is_directory(ec) && entry.path().filename() == ".git") {
        it.disable_recursion_pending();
        continue;
      }
      if (!entry.is_regular_file(ec)) continue;
      candidates.push_back({entry.path(), false, fs::path(input)});
    }
  }
  // The same order on every file system, then each file once: under its snapshot name rather than
  // its blob name when it has both.
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const WorkItem& a, const WorkItem& b) { return a.path < b.path; });
  std::stable_partition(candidates.begin(), candidates.end(), [](const WorkItem& item) { return !is_hf_blob(item.path); });
  for (auto& candidate : candidates) {
    if (!first_visit(candidate.path)) continue;
    std::error_code ec;
    total_bytes += fs::file_size(candidate.path, ec);
    items.push_back(std::move(candidate));
  }
  if (progress) progress->set_total(items.size(), total_bytes);

  std::vector<std::vector<Finding>> per_file(items.size());
  std::vector<FileResult> files(items.size());
  {
    core::ThreadPool pool(std::min<std::size_t>(options_.threads ? options_.threads : std::thread::hardware_concurrency(),
                                                std::max<std::size_t>(items.size(), 1)));
    for (std::size_t i = 0; i < items.size(); ++i) {
      pool.submit([&, i] {
        const auto& item = items[i];
        auto& findings = per_file[i];
        auto& file = files[i];
        file.path = item.path.string();
        try {
          core::MappedFile mapped(file.path);
          file.size = mapped.size();
          ArtifactInspector inspector(policy_, options_, file.path, findings);
          inspector.file_backed_ = true;
          bool skipped = false;
          file.format = inspector.inspect_file(mapped.bytes(), item.explicit_input, has_model_extension(item.path), skipped);
          file.skipped = skipped;
          if (!inspector.details().empty()) file.details = inspector.details().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
        } catch (const core::Error& error) {
          Finding finding;
          finding.rule_id = "file.unreadable";
          finding.severity = Severity::High;
          finding.title = "File could not be read: it was not checked";
          finding.location.file = file.path;
          finding.evidence = error.what();
          finding.remediation = "Scan as a user who can read the file, and check that it is intact.";
          findings.push_back(std::move(finding));
          file.format = "unreadable";
        } catch (const std::exception& error) {
          // A parser bug must never turn into a silent pass: report it as a finding.
          Finding finding;
          finding.rule_id = "scan.internal-error";
          finding.severity = Severity::High;
          finding.title = "Scanner failed on this file: it was not fully checked";
          finding.location.file = file.path;
          finding.evidence = error.what();
          finding.remediation = "Report this to the Aegis developers with the file, and do not load it meanwhile.";
          findings.push_back(std::move(finding));
          file.format = "error";
        }
        file.findings = findings.size();
        if (progress) progress->advance(file.size);
      });
    }
    pool.wait();
  }
  if (progress) progress->finish();
  auto external_data_owner = recognise_onnx_external_data(items, files, per_file);

  ScanResult result;
  result.findings = std::move(walk_findings);
  for (std::size_t i = 0; i < items.size(); ++i) {
    result.bytes += files[i].size;
    for (auto& finding : per_file[i]) result.findings.push_back(std::move(finding));
  }
  result.files = std::move(files);
  // Group the files into models, in the order first seen.
  std::map<fs::path, bool> marked;
  auto is_marked = [&marked](const fs::path& dir) {
    auto [it, inserted] = marked.try_emplace(dir, false);
    if (inserted) it->second = holds_model_markers(dir);
    return it->second;
  };
  std::map<std::string, std::size_t> model_index;
  for (std::size_t i = 0; i < items.size(); ++i) {
    // External data belongs to the model that names it.
    auto owner = external_data_owner.find(i);
    ModelKey key = model_of(items[owner == external_data_owner.end() ? i : owner->second].path,
                            items[owner == external_data_owner.end() ? i : owner->second].root, is_marked);
    auto [it, inserted] = model_index.try_emplace(key.name, result.models.size());
    if (inserted) result.models.push_back({key.name, key.kind, key.path, {}});
    result.models[it->second].files.push_back(i);
    result.files[i].model = key.name;
  }
  sort_findings(result.findings);
  return result;
}

}  // namespace aegis::scan
