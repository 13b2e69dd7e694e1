// A progress line on stderr for long work: shown only on a terminal and never with --quiet.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace aegis::core {

class Progress {
 public:
  // enabled == false makes every call a no-op (not a terminal, --quiet, or JSON to a pipe).
  Progress(std::string label, bool enabled);
  ~Progress();

  void set_total(std::uint64_t files, std::uint64_t bytes);
  // Called by workers as each file completes; redraws at most every 100 ms.
  void advance(std::uint64_t bytes);
  void finish();

  static bool stderr_is_terminal();

 private:
  void draw(bool final_line);

  std::string label_;
  bool enabled_;
  std::atomic<std::uint64_t> done_files_{0}, done_bytes_{0};
  std::uint64_t total_files_ = 0, total_bytes_ = 0;
  std::chrono::steady_clock::time_point start_, last_draw_;
  std::mutex draw_mutex_;
  bool finished_ = false;
};

}  // namespace aegis::core
