// Hash manifests of model and dataset folders, the way the OpenSSF Model Signing format describes
// them: each file (method "files") or each fixed-size shard of each file (method "shards") gets a
// SHA-256 digest under its path relative to the model root, with '/' separators; resources are
// sorted by name, and the subject digest is the SHA-256 of their raw digests concatenated in that
// order. A single-file model has one resource named ".". Files are memory-mapped and hashed in
// parallel (shards of one file too); nothing is ever left out silently: an unreadable file, a
// symbolic link (unless allowed) or anything that is not a file or folder is an error.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace aegis::core {
class Progress;
}

namespace aegis::provenance {

using Digest = std::array<std::uint8_t, 32>;

enum class HashMethod { Files, Shards };

struct ManifestOptions {
  HashMethod method = HashMethod::Files;
  std::uint64_t shard_size = 1'000'000'000;  // method Shards: bytes per shard (the last may be shorter)
  // Paths relative to the model root (files or folders) left out of the manifest. The reference
  // implementation always leaves out .git, .gitattributes, .github and .gitignore, and the signature.
  std::vector<std::string> ignore_paths;
  bool allow_symlinks = false;
  std::size_t threads = 0;  // 0: one per core
};

// The names the reference implementation leaves out of every manifest, whatever the options say.
const std::vector<std::string>& default_ignored_paths();

struct Resource {
  std::string name;   // "dir/file", "dir/file:START:END" for a shard, "." for a single-file model
  Digest digest{};
  std::uint64_t size = 0;  // bytes hashed
};

struct Manifest {
  std::string model_name;           // the root's file name, as the statement's subject names it
  HashMethod method = HashMethod::Files;
  std::uint64_t shard_size = 0;
  std::vector<std::string> ignored; // ignore paths in effect, relative to the root, sorted
  std::vector<Resource> resources;  // sorted by name
  std::uint64_t bytes = 0;

  // SHA-256 over the raw resource digests in name order (the statement's subject digest).
  Digest subject_digest() const;
};

// Hashes `root` (a folder or a single file). Throws core::Error, naming the path, on anything it
// cannot hash; a manifest that silently lacks a file would verify what was never checked.
Manifest build_manifest(const std::filesystem::path& root, const ManifestOptions& options,
                        core::Progress* progress = nullptr);

Digest sha256(const void* data, std::size_t size);
std::string to_hex(const Digest& digest);
// Lower- or upper-case hex of exactly 64 digits; false otherwise.
bool from_hex(std::string_view text, Digest& digest);

}  // namespace aegis::provenance
