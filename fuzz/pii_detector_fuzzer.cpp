// libFuzzer target for the PII/secret detector: any bytes as a text (the first byte, when it is a
// small number, picks a field name from a list so that the field-name paths run too), then the
// promises scan() makes are checked (sorted, inside the text, not overlapping, scores in 0..1), and
// every detection is redacted and sampled. A broken promise aborts.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "aegis/privacy/detector.h"

namespace {

const aegis::privacy::Detector& detector() {
  static const aegis::privacy::Detector instance;
  return instance;
}

constexpr std::string_view kFields[] = {"", "ssn", "dob", "mrn", "passport_number", "phone", "env.API_SECRET",
                                        "insurance.member_id", "nhs_number", "drivers_license"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view field;
  if (size > 0 && data[0] < sizeof(kFields) / sizeof(kFields[0])) {
    field = kFields[data[0]];
    ++data;
    --size;
  }
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const auto detections = detector().scan(text, field);
  std::size_t last_end = 0;
  for (const auto& d : detections) {
    if (d.begin >= d.end || d.end > text.size() || d.begin < last_end) std::abort();
    if (!(d.score > 0 && d.score <= 1) || d.entity_type.empty() || d.rule_id.empty()) std::abort();
    last_end = d.end;
    const std::string sample = aegis::privacy::masked_sample(text.substr(d.begin, d.end - d.begin), d.entity_type);
    if (!sample.empty() && sample == text.substr(d.begin, d.end - d.begin)) std::abort();  // never the whole value
  }
  aegis::privacy::RedactionPolicy policy;
  policy.default_action = size % 2 == 0 ? aegis::privacy::RedactAction::Mask : aegis::privacy::RedactAction::Hash;
  const std::string redacted = aegis::privacy::redact(text, detections, policy);
  (void)detector().count_candidates(redacted);
  return 0;
}
