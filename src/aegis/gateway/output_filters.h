// The gateway's response filters: confidence and out-of-distribution flags on classifier scores,
// output hardening against model extraction (top-k, rounding, labels only), and PII/secret
// redaction of responses and streamed events.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "aegis/gateway/filter.h"

namespace aegis::gateway {

// confidence: {min_confidence: 0.6, max_entropy: 0.8, action: flag | reject, ood_action: flag | reject,
//              malformed: flag | reject | ignore, sum_tolerance: 0.01, field: probabilities}
// Classifier responses (2xx): for each score row (a list of rows, or one flat row) the maximum
// probability below min_confidence is "low-confidence" and the normalised entropy H/log(K) above
// max_entropy is "ood". Rows that are not probability vectors (non-numbers, negatives, values
// above 1, a sum more than sum_tolerance away from 1, or no rows at all) are "malformed-scores"
// (the upstream may be compromised or misconfigured). A flag lets the response through with a
// Verdict {"confidence", "flag", ...} and the header x-aegis-flags: low-confidence,ood (merged
// with flags already there); reject answers 422 "low_confidence" / "out_of_distribution" or
// 502 "malformed_scores" without revealing any score. One row that trips a check decides for the
// whole response. Routes whose api is not classifier are left alone. List it before
// output_hardening in a route's filters: it needs the model's own scores, not the hardened ones.
std::unique_ptr<Filter> make_confidence_filter(const YAML::Node& options, const FilterBuildContext& context);

// output_hardening: {top_k: 3, decimals: 2, labels_only: false, field: probabilities}
// Limits what a classifier's answer reveals (model-extraction defence). top_k keeps the k largest
// probabilities of each row and writes 0 for the rest, so the row keeps its length (clients that
// index by class keep working); among equal values the lower class index is kept. decimals rounds
// every kept value half away from zero; when rounding would make another class equal to the
// predicted one (the argmax: the first maximum of the original row), the predicted class is
// rounded up one step instead, so the argmax never changes. labels_only replaces the field by
// "labels": [argmax of each row] (one entry for a flat row). A 2xx response without a readable
// score field is refused with 502 "malformed_scores" (fail closed: an unhardened answer never
// leaves). Verdict "modify".
std::unique_ptr<Filter> make_output_hardening_filter(const YAML::Node& options, const FilterBuildContext& context);

// redact: {entities: [EMAIL_ADDRESS, ...], secrets: true, min_score: 0.5, action: mask | hash | drop,
//          entity_actions: {EMAIL_ADDRESS: hash}, hash_key_env: AEGIS_REDACT_KEY, rules: [file.toml],
//          region: US, fields: [choices.*.message.content]}
// As `aegis redact`, on responses: JSON bodies have their string values redacted (all of them, or
// only those the `fields` paths reach: dot-separated member names, "*" for any member or element;
// object keys are never changed); other text bodies (text/*, XML, JSON that does not parse, no
// content type) are redacted whole; other media types (images, octet streams) pass untouched.
// Server-sent events are redacted one event at a time: the JSON of each "data:" payload as above
// (so list choices.*.delta.content in `fields` for streamed chat), non-JSON data as text.
// Limitation: a value split across two events (an e-mail address streamed as "jane@" then
// "example.com") is not joined and may pass; issue 9 adds incremental scanning. Verdict "modify"
// with counts per entity type ("EMAIL_ADDRESS=1 SECRET=2"); per-entity counters in the metrics.
// hash_key_env names the variable with the HMAC key for `hash`; when it is set explicitly in the
// config but missing from the environment the config is refused (the default variable, when unset,
// falls back to plain SHA-256 as `aegis redact` does).
std::unique_ptr<Filter> make_redact_filter(const YAML::Node& options, const FilterBuildContext& context);

// Adds flags to the x-aegis-flags header, keeping those another filter set and never repeating one.
void add_flags(Response& response, const std::vector<std::string>& flags);

// What the classifier filters read from a response: the score rows under `field`.
struct ScoreRows {
  std::vector<std::vector<double>> rows;
  bool flat = false;  // the field held one row, not a list of rows
};
// nullopt when the field is absent or is not a non-empty list of numbers / of non-empty lists of
// numbers.
std::optional<ScoreRows> read_score_rows(const nlohmann::json& response, const std::string& field);

// The class index with the largest score (the first one among equals).
std::size_t argmax(const std::vector<double>& row);

// top_k then rounding as output_hardening does it, keeping argmax(row) the unique top class.
std::vector<double> harden_row(const std::vector<double>& row, std::optional<std::size_t> top_k, std::optional<int> decimals);

// Entropy of the row divided by log(K): 0 for one-hot, 1 for uniform (0 when K < 2).
double normalized_entropy(const std::vector<double>& row);

}  // namespace aegis::gateway
