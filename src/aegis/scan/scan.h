// `aegis scan`: static analysis of model artifacts. Walks paths, sniffs each file's format from its
// bytes, opens containers the way the victim's loader does, and turns what the parsers in
// formats/ describe into findings. Nothing it reads is ever loaded or executed.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "aegis/core/finding.h"
#include "aegis/formats/archive.h"
#include "aegis/formats/hdf5.h"
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
  formats::Hdf5Limits hdf5_limits;     // the sandboxed HDF5 reader's time and memory
};

// What one input file turned out to be, for the report's "files" list.
struct FileResult {
  std::string path;
  std::string format;        // sniffed from the bytes: "pytorch-zip", "pickle", "npy", ...
  std::uint64_t size = 0;
  std::size_t findings = 0;
  bool skipped = false;      // not a model artifact (directory walk only): nothing to analyse
  std::string model;         // the model this file belongs to (ModelGroup::name)
  std::string details;       // JSON object: format inventory (ops per function, opsets, Keras version)
};

// Files grouped the way a registry holds them: one Hugging Face cache entry (org/name@revision), one
// model folder (a repository clone, a SavedModel, a diffusers pipeline), or a file on its own.
struct ModelGroup {
  std::string name;
  std::string kind;      // "hf-cache", "model-folder", "file"
  std::string path;      // its root on disk
  std::vector<std::size_t> files;  // indexes into ScanResult::files
};

struct ScanResult {
  std::vector<core::Finding> findings;  // sorted by file, then severity (highest first), then offset
  std::vector<FileResult> files;
  std::vector<ModelGroup> models;  // in the order first seen; every file in exactly one
  std::uint64_t bytes = 0;
};

// Which model a file belongs to, from its path: inside a Hugging Face cache
// (models--org--name/snapshots/REV/...) the cache entry and revision; else the outermost folder
// below `root` that holds a model's marker files (config.json, model_index.json, saved_model.pb,
// .gitattributes, ...); else the file itself. `is_marked` answers whether a folder holds markers.
struct ModelKey {
  std::string name;
  std::string kind;
  std::string path;
};
ModelKey model_of(const std::filesystem::path& file, const std::filesystem::path& root,
                  const std::function<bool(const std::filesystem::path&)>& is_marked);

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
