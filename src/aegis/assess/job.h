// One unit of an assessment's work: one Aegis check on one asset, run as `aegis <arguments>` so that a
// check that crashes or hangs on hostile input cannot take the assessment with it, and so that any
// machine with Aegis can run it (`aegis worker`).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::assess {

struct Job {
  std::int64_t assessment_id = 0;
  std::string asset;                   // inventory asset id
  std::string check;                   // threat::kCheck* name
  std::vector<std::string> arguments;  // the aegis subcommand and its flags, without the program name
  // Files and targets whose content decides the result; with the arguments they make the key.
  std::vector<std::string> inputs;
  std::string key;                     // hex SHA-256 over check, arguments and the inputs' digests
  std::string artifacts;               // a folder name the check writes images into (under the job's scratch dir); "" for none
  unsigned timeout_seconds = 3600;     // the job is killed after this
};

// One line of JSON, for queues and logs.
std::string to_json(const Job& job);
// Parses what to_json wrote. Hostile input (a queue is shared): size, types and fields are checked;
// returns nullopt and sets `why` on anything else.
std::optional<Job> job_from_json(std::string_view text, std::string* why = nullptr);

}  // namespace aegis::assess
