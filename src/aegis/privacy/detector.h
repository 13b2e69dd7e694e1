// PII, PHI and secret detection in text: every pattern compiled once into one Hyperscan database,
// each candidate confirmed by its validator (checksums, valid ranges, libphonenumber, entropy,
// context keywords). The library that `aegis pii`, the gateway's redaction filter and the LLM
// output guards share. Rules are data: the shipped pii_rules.toml and secret_rules.toml (gitleaks'
// TOML shape) and any rule files a user adds, gitleaks' own config included.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::privacy {

// One detected entity in a scanned text.
struct Detection {
  std::string entity_type;  // Presidio's name where Presidio has one: EMAIL_ADDRESS, PHONE_NUMBER,
                            // CREDIT_CARD, IBAN_CODE, US_SSN, US_ITIN, UK_NHS, UK_NINO, US_PASSPORT,
                            // US_DRIVER_LICENSE, IP_ADDRESS, MAC_ADDRESS, DATE_OF_BIRTH,
                            // MEDICAL_RECORD_NUMBER, HEALTH_PLAN_NUMBER, STREET_ADDRESS; SECRET for secrets
  std::string rule_id;      // e.g. "pii.credit-card", "secret.aws-access-key-id"
  std::size_t begin = 0;    // byte offsets of the whole entity in the scanned text, [begin, end)
  std::size_t end = 0;
  double score = 0;         // 0..1: how sure the validator and the context make it
};

struct DetectorOptions {
  std::vector<std::string> entities;      // entity types to report; empty = all
  bool secrets = true;                    // include the secret rules
  std::vector<std::string> rule_files;    // extra TOML rule files (ours or gitleaks' config)
  double min_score = 0.5;                 // detections below are dropped
  std::string default_region = "US";      // for phone numbers written without +country code
  std::size_t context_window = 64;        // bytes before a candidate searched for context keywords
};

// Thread-safe after construction: scan() may be called from any number of threads at once (each
// thread keeps its own Hyperscan scratch).
class Detector {
 public:
  // Compiles the rules. Throws core::Error naming the rule file, the rule id and the reason when
  // a rule does not compile or a file does not parse.
  explicit Detector(DetectorOptions options = {});
  ~Detector();
  Detector(const Detector&) = delete;
  Detector& operator=(const Detector&) = delete;

  // Detections in `text`, sorted by begin, overlaps resolved (the higher score wins, then the
  // longer span). Any bytes are accepted (invalid UTF-8, NULs); time is linear in the text.
  // Bounded per call: at most 100,000 regex candidates are examined (the scan stops there, so a
  // text that yields more is only examined up to that point: scan big inputs by line or field),
  // hence at most 100,000 detections; RE2 confirms each candidate within 64 KiB.
  std::vector<Detection> scan(std::string_view text) const;
  // As scan(), with a column or field name as extra context (e.g. "ssn", "dob", "mrn").
  std::vector<Detection> scan(std::string_view text, std::string_view field_name) const;

  // The entity types this detector can report, and the number of compiled rules.
  std::vector<std::string> entity_types() const;
  std::size_t rule_count() const;

  // How the rules were loaded and compiled.
  struct Stats {
    std::size_t rules = 0;      // compiled (after the entity and secrets filters)
    std::size_t skipped = 0;    // rules without a regex (gitleaks' path-only rules)
    std::size_t replaced = 0;   // rules a later file replaced by id
    std::size_t som = 0;        // HS_FLAG_SOM_LEFTMOST: exact spans (patterns of unbounded width)
    std::size_t plain = 0;      // exact match ends; RE2 finds the start within the pattern's width
    std::size_t prefilter = 0;  // HS_FLAG_PREFILTER: RE2 searches a window before each end
    std::size_t triggered = 0;  // context_required: Hyperscan finds the context words instead
  };
  Stats stats() const;

  // The regex stage alone (Hyperscan over the text, candidates counted, no validation): for the
  // throughput benchmark against Python's re with the same patterns.
  std::size_t count_candidates(std::string_view text) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// What redaction does to each entity it replaces.
enum class RedactAction { Mask, Hash, Drop };

struct RedactionPolicy {
  RedactAction default_action = RedactAction::Mask;
  std::vector<std::pair<std::string, RedactAction>> per_entity;  // overrides by entity type
  std::string hash_key;  // HMAC-SHA-256 key for Hash (a per-deployment secret); empty = plain SHA-256
  RedactAction action_for(std::string_view entity_type) const;
};

// Replaces every detection in `text` (sorted, non-overlapping as scan() returns them) whole:
// Mask -> "<ENTITY_TYPE>", Hash -> "<ENTITY_TYPE:first 12 hex of the (keyed) SHA-256>", Drop -> "".
// Never leaves part of an identifier behind.
std::string redact(std::string_view text, const std::vector<Detection>& detections, const RedactionPolicy& policy);

// A masked sample for reports: keeps at most the last 4 characters of identifiers longer than 8
// and masks the rest ("***-**-6789"; secrets keep their first 4 only), never the whole value.
std::string masked_sample(std::string_view value, std::string_view entity_type);

}  // namespace aegis::privacy
