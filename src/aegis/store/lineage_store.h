// The Aegis store's lineage graph (SQLite, embedded): artifacts (a folder or file as hashed at one
// moment: its manifest, resource by resource) and the steps that turned inputs into outputs.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

struct sqlite3;

namespace aegis::store {

struct ArtifactRecord {
  std::int64_t id = 0;
  std::string path;            // absolute, as recorded
  std::string subject_digest;  // hex SHA-256 over the resource digests
  std::vector<std::pair<std::string, std::string>> resources;  // name, hex digest
  std::string recorded_at;     // UTC, ISO 8601
};

struct StepRecord {
  std::int64_t id = 0;
  std::string step;
  std::string actor;
  std::string recorded_at;
  std::vector<std::int64_t> inputs, outputs;  // artifact ids
};

class LineageStore {
 public:
  // Opens (creating when needed) the SQLite file. Throws core::Error saying why it cannot.
  explicit LineageStore(const std::filesystem::path& file);
  ~LineageStore();
  LineageStore(const LineageStore&) = delete;
  LineageStore& operator=(const LineageStore&) = delete;

  std::int64_t add_artifact(const ArtifactRecord& artifact);
  std::int64_t add_step(const std::string& step, const std::string& actor, const std::vector<std::int64_t>& inputs,
                        const std::vector<std::int64_t>& outputs);
  // The newest record of the artifact at `path` (absolute).
  std::optional<ArtifactRecord> latest_artifact(const std::string& path) const;
  ArtifactRecord artifact(std::int64_t id) const;
  // The steps whose outputs include `artifact_id`, newest first.
  std::vector<StepRecord> steps_producing(std::int64_t artifact_id) const;

  // Where the store lives unless --store says otherwise: $AEGIS_STORE, else
  // $XDG_DATA_HOME/aegis/aegis.db, else ~/.local/share/aegis/aegis.db.
  static std::filesystem::path default_path();

 private:
  void exec(const std::string& sql) const;
  sqlite3* db_ = nullptr;
};

}  // namespace aegis::store
