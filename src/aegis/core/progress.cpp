#include "aegis/core/progress.h"

#include <unistd.h>

#include <cstdio>

namespace aegis::core {

Progress::Progress(std::string label, bool enabled)
    : label_(std::move(label)), enabled_(enabled), start_(std::chrono::steady_clock::now()), last_draw_(start_) {}

Progress::~Progress() { finish(); }

bool Progress::stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

void Progress::set_total(std::uint64_t files, std::uint64_t bytes) {
  total_files_ = files;
  total_bytes_ = bytes;
}

void Progress::advance(std::uint64_t bytes) {
  done_files_.fetch_add(1, std::memory_order_relaxed);
  done_bytes_.fetch_add(bytes, std::memory_order_relaxed);
  if (!enabled_) return;
  std::unique_lock lock(draw_mutex_, std::try_to_lock);
  if (!lock.owns_lock()) return;
  auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ < std::chrono::milliseconds(100)) return;
  last_draw_ = now;
  draw(false);
}

void Progress::finish() {
  if (!enabled_ || finished_) return;
  std::lock_guard lock(draw_mutex_);
  finished_ = true;
  draw(true);
}

void Progress::draw(bool final_line) {
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  double mb = static_cast<double>(done_bytes_.load()) / 1e6;
  double rate = seconds > 0 ? mb / seconds : 0.0;
  std::fprintf(stderr, "\r\033[K%s %llu/%llu files, %.1f/%.1f MB, %.1f MB/s%s", label_.c_str(),
               static_cast<unsigned long long>(done_files_.load()), static_cast<unsigned long long>(total_files_), mb,
               static_cast<double>(total_bytes_) / 1e6, rate, final_line ? "\n" : "");
  std::fflush(stderr);
}

}  // namespace aegis::core
