// Times provenance::build_manifest on a folder: the hashing engine behind `aegis sign`/`verify`.
//   hash_folder FOLDER [files|shards] [threads]
// Prints bytes, seconds and GB/s on one line; bench/hash_bench.sh puts it beside the machine's limit.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "aegis/provenance/manifest.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FOLDER [files|shards] [threads]\n", argv[0]);
    return 2;
  }
  aegis::provenance::ManifestOptions options;
  if (argc > 2 && std::string(argv[2]) == "shards") options.method = aegis::provenance::HashMethod::Shards;
  if (argc > 3) options.threads = static_cast<std::size_t>(std::atoi(argv[3]));
  try {
    auto start = std::chrono::steady_clock::now();
    auto manifest = aegis::provenance::build_manifest(argv[1], options);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("%llu bytes %zu resources %.3f s %.3f GB/s subject %s\n",
                static_cast<unsigned long long>(manifest.bytes), manifest.resources.size(), seconds,
                manifest.bytes / seconds / 1e9, aegis::provenance::to_hex(manifest.subject_digest()).c_str());
  } catch (const std::exception& error) {
    std::fprintf(stderr, "hash_folder: %s\n", error.what());
    return 1;
  }
  return 0;
}
