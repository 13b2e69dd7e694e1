// ROC plots of membership-inference attacks, on log-log axes by default as in Carlini et al. 2022,
// where the low-FPR region that matters is visible instead of squeezed into a corner.
#pragma once

#include <span>
#include <string>

#include "aegis/attacks/inference/membership_metrics.h"

namespace aegis::attacks {

struct RocSeries {
  std::string name;
  RocCurve roc;
  double auc = 0;
};

// Both write an 800 x 800 plot: one curve per series in distinct colours, the chance diagonal dashed,
// gridlines and labels at each decade (tenths on linear axes), and a legend "name (AUC 0.xxx)".
// Log axes run from the decade at or below the smallest non-zero rate in any series (about
// 1 / non-members; 1e-4 when there is none, never below 1e-8) to 1; zeros are drawn on that minimum.
// Throws core::Error when there is no series or the file cannot be written.
void write_roc_svg(const std::string& path, std::span<const RocSeries> series, bool log_scale = true);
// The PNG's text is ASCII (OpenCV's Hershey fonts): other characters in names are drawn as '?'.
void write_roc_png(const std::string& path, std::span<const RocSeries> series, bool log_scale = true);

}  // namespace aegis::attacks
