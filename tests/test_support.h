// Helpers shared by the tests: where fixtures live, reading files, running the CLI.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace aegis::test {

inline std::filesystem::path fixture_dir() { return AEGIS_FIXTURE_DIR; }
inline std::filesystem::path fixture(const std::string& name) { return fixture_dir() / name; }
inline std::filesystem::path source_dir() { return AEGIS_SOURCE_DIR; }

std::vector<std::uint8_t> read_file(const std::filesystem::path& path);

// Compresses with zlib's deflate at level 9. window_bits as zlib takes them: -15 raw deflate
// (zip members), 15 zlib framing, 31 gzip framing.
std::vector<std::uint8_t> deflate_bytes(const std::vector<std::uint8_t>& data, int window_bits);

struct CommandResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the built `aegis` binary with the given arguments (no shell involved); `stdin_text` is its
// standard input (empty: /dev/null).
CommandResult run_cli(const std::vector<std::string>& args, const std::string& stdin_text = {});

// Deterministic garbage for bad-input tests: `n` bytes from a linear congruential generator whose
// state carries over between calls.
std::vector<std::uint8_t> pseudo_random_bytes(std::size_t n, std::uint32_t& state);

// A fresh folder under the system's temp dir, removed with everything in it when the test ends.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "aegis_test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

// The real Fashion-MNIST test split comes from the Debian package dataset-fashion-mnist (installed by
// `make deps`). Empty when it is there; otherwise why a test that needs it cannot run.
std::string fashion_mnist_missing();

}  // namespace aegis::test

// Skips the calling test, saying why, when the Fashion-MNIST package is not installed.
#define AEGIS_SKIP_WITHOUT_FASHION_MNIST() \
  if (auto why = ::aegis::test::fashion_mnist_missing(); !why.empty()) GTEST_SKIP() << why
