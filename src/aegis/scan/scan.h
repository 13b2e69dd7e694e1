// `aegis scan`: static analysis of model artifacts. Walks paths, sniffs each file's format from its
// bytes, opens containers the way the victim's loader does, and turns what the parsers in
// formats/ describe into findings. Nothing it reads is ever loaded or executed.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "aegis/core/finding.h"
#include "aegis/formats/archive.h"
#include "aegis/formats/pickle.h"
#include "aegis/formats/zip.h"
#include "aegis/scan/callable_policy.h"

namespace aegis::core {
class Progress;
}

namespace aegis::scan {

struct ScanOptions {
  std::size_t threads = 0;             // 0: one per core
  std::size_t max_container_depth = 6; // archives inside archives inside ...
  bool check_zip_crc = true;           // CRC of the members that are read anyway (pickles, small files)
  bool follow_symlinks = false;        // links to directories (links to files are always followed)
  formats::PickleLimits pickle_limits;
  formats::ZipLimits zip_limits;
  formats::ArchiveLimits archive_limits;
};

// What one input file turned out to be, for the report's "files" list.
struct FileResult {
  std::string path;
  std::string format;        // sniffed from the bytes: "pytorch-zip", "pickle", "npy", ...
  std::uint64_t size = 0;
  std::size_t findings = 0;
  bool skipped = false;      // not a model artifact (directory walk only): nothing to analyse
};

struct ScanResult {
  std::vector<core::Finding> findings;  // sorted by file, then severity (highest first), then offset
  std::vector<FileResult> files;
  std::uint64_t bytes = 0;
};

class ModelScanner {
 public:
  ModelScanner(CallablePolicy policy, ScanOptions options);

  // Scans files and directories. Paths that do not exist or cannot be read become findings of
  // their own ("file.unreadable"), so a caller never mistakes them for clean.
  ScanResult scan(const std::vector<std::string>& paths, core::Progress* progress = nullptr) const;

  // Scans bytes already in memory as if they were the file `display_path`.
  ScanResult scan_bytes(std::span<const std::uint8_t> data, const std::string& display_path) const;

 private:
  CallablePolicy policy_;
  ScanOptions options_;
};

}  // namespace aegis::scan
