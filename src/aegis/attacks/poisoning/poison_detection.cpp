#include "aegis/attacks/poisoning/poison_detection.h"

#include "aegis/core/error.h"

namespace aegis::attacks {

DetectionQuality detection_quality(std::span<const std::uint8_t> flagged, std::span<const std::uint8_t> truly_poisoned) {
  if (flagged.size() != truly_poisoned.size())
    throw core::Error("detection quality: " + std::to_string(flagged.size()) + " flags but " +
                          std::to_string(truly_poisoned.size()) + " ground-truth entries",
                      "compare flags and ground truth for the same records");
  DetectionQuality q;
  for (std::size_t i = 0; i < flagged.size(); ++i) {
    const bool f = flagged[i] != 0, p = truly_poisoned[i] != 0;
    q.flagged += f;
    q.poisoned += p;
    q.true_positives += f && p;
  }
  q.precision = q.flagged == 0 ? 1.0 : static_cast<double>(q.true_positives) / static_cast<double>(q.flagged);
  q.recall = q.poisoned == 0 ? 1.0 : static_cast<double>(q.true_positives) / static_cast<double>(q.poisoned);
  q.f1 = q.precision + q.recall > 0 ? 2 * q.precision * q.recall / (q.precision + q.recall) : 0.0;
  return q;
}

}  // namespace aegis::attacks
