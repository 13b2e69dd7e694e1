// Progress for work that runs in named stages ("training reference model 3/16", "querying"): one
// progress line per stage, each with its own total, fed by (stage, done, total) callbacks.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include "aegis/core/progress.h"

namespace aegis::cli {

class StageProgress {
 public:
  explicit StageProgress(bool enabled) : enabled_(enabled) {}
  ~StageProgress() { finish(); }

  void update(const std::string& stage, std::size_t done, std::size_t total) {
    if (!enabled_) return;
    if (!line_ || stage != stage_) {
      finish();
      line_ = std::make_unique<core::Progress>(stage, true);
      line_->set_total(total, total);
      stage_ = stage;
      done_ = 0;
    }
    if (done > done_) {
      line_->advance(done - done_);
      done_ = done;
    }
  }

  void finish() {
    if (line_) line_->finish();
    line_.reset();
  }

 private:
  bool enabled_;
  std::unique_ptr<core::Progress> line_;
  std::string stage_;
  std::size_t done_ = 0;
};

}  // namespace aegis::cli
