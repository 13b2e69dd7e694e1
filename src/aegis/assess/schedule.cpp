// Reassessment: an asset is due when the inventory's policy says so — its last assessment is older
// than every_days, a model file changed since, ATLAS has a newer release than the one it was mapped
// to, or one of its findings was marked fixed since (a fix is only a claim until a test confirms it).
#include <ctime>

#include "aegis/assess/assess.h"
#include "aegis/core/error.h"

namespace aegis::assess {

namespace {

using nlohmann::json;

std::string format_time(std::chrono::system_clock::time_point at) {
  const std::time_t t = std::chrono::system_clock::to_time_t(at);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof buffer, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

}  // namespace

std::optional<std::chrono::system_clock::time_point> parse_rfc3339(const std::string& text) {
  std::tm tm{};
  const char* end = strptime(text.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!end) return std::nullopt;
  while (*end == '.' || (*end >= '0' && *end <= '9')) ++end;  // fractions of a second
  long offset = 0;
  if (*end == '+' || *end == '-') {
    int hours = 0, minutes = 0;
    if (std::sscanf(end + 1, "%2d:%2d", &hours, &minutes) != 2) return std::nullopt;
    offset = (hours * 3600L + minutes * 60L) * (*end == '+' ? 1 : -1);
  } else if (*end != 'Z' && *end != 'z') {
    return std::nullopt;
  }
  return std::chrono::system_clock::from_time_t(timegm(&tm) - offset);
}

std::vector<DueAsset> due_assets(const threat::Inventory& inventory, const store::FindingStore& store,
                                 const threat::AtlasCatalog& catalog, std::chrono::system_clock::time_point now) {
  // The newest finished assessment of each asset, with its stored plan entry.
  struct Last {
    store::AssessmentRecord record;
    json asset;
  };
  std::map<std::string, Last> last;
  for (const auto& listed : store.assessments(10'000)) {
    if (listed.status != "finished") continue;
    bool needed = false;
    for (const auto& asset : inventory.assets) needed = needed || !last.contains(asset.id);
    if (!needed) break;
    const auto record = store.assessment(listed.id);
    if (!record) continue;
    const json plan = json::parse(record->summary_json.empty() ? "{}" : record->summary_json, nullptr, false);
    if (!plan.is_object() || !plan.contains("assets") || !plan["assets"].is_array()) continue;
    for (const auto& asset : plan["assets"]) {
      if (!asset.is_object() || !asset.contains("id") || !asset["id"].is_string()) continue;
      const auto id = asset["id"].get<std::string>();
      if (!last.contains(id) && inventory.find(id)) {
        json entry = asset;
        entry["atlas_version"] = plan.value("atlas_version", "");
        last.emplace(id, Last{*record, entry});
      }
    }
  }
  const auto& policy = inventory.policy;
  std::vector<DueAsset> out;
  for (const auto& asset : inventory.assets) {
    DueAsset due;
    due.asset = asset.id;
    const auto it = last.find(asset.id);
    if (it == last.end()) {
      due.due = true;
      due.reasons.push_back("never assessed");
      out.push_back(std::move(due));
      continue;
    }
    const auto& [record, planned] = it->second;
    due.last_assessment = record.id;
    due.last_assessed_at = record.finished_at.empty() ? record.started_at : record.finished_at;
    if (const auto at = parse_rfc3339(due.last_assessed_at)) {
      const auto next = *at + std::chrono::hours(24) * policy.every_days;
      const auto days = std::chrono::duration_cast<std::chrono::hours>(now - *at).count() / 24;
      if (now >= next) due.reasons.push_back("last assessed " + std::to_string(days) + " days ago (policy: every " + std::to_string(policy.every_days) + " days)");
      else due.next_due_at = format_time(next);
    } else {
      due.reasons.push_back("the last assessment has no readable date");
    }
    if (policy.on_model_change) {
      const json digests = planned.value("digests", json::object());
      for (const auto& file : asset.resolved_files) {
        const auto current = input_digest(file);
        const auto before = digests.is_object() && digests.contains(file) && digests[file].is_string() ? digests[file].get<std::string>() : std::string();
        if (before.empty()) due.reasons.push_back(file + " was not part of the last assessment");
        else if (before != current) due.reasons.push_back(file + " changed since the last assessment (digest " + before.substr(0, 12) + " -> " + current.substr(0, 12) + ")");
      }
    }
    if (policy.on_atlas_release) {
      const auto version = planned.value("atlas_version", "");
      if (version != catalog.version())
        due.reasons.push_back("ATLAS " + catalog.version() + " is newer than the " + (version.empty() ? std::string("unknown") : version) + " it was mapped to");
    }
    if (policy.after_fix) {
      std::size_t fixed = 0;
      for (const auto& job : store.jobs(record.id)) {
        if (job.asset != asset.id || job.run_id == 0) continue;
        for (const auto& f : store.findings(job.run_id)) fixed += f.status == store::kStatusFixed;
      }
      if (fixed) due.reasons.push_back(std::to_string(fixed) + " finding(s) marked fixed since: retest to confirm");
    }
    due.due = !due.reasons.empty();
    if (due.due) due.next_due_at.clear();
    out.push_back(std::move(due));
  }
  return out;
}

}  // namespace aegis::assess
