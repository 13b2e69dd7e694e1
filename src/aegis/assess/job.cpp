#include "aegis/assess/job.h"

#include <nlohmann/json.hpp>

#include <limits>
#include <set>

#include "aegis/core/error.h"

namespace aegis::assess {
namespace {

using nlohmann::json;

// Bounds for text that arrives from a shared queue. A real job is a few hundred bytes; these leave
// room for an inventory of many files while keeping a hostile entry from costing much.
constexpr std::size_t kMaxJobText = 1 << 20;
constexpr std::size_t kMaxArguments = 512;
constexpr std::size_t kMaxInputs = 4096;
constexpr std::size_t kMaxNameBytes = 4096;       // asset and check
constexpr std::size_t kMaxArtifactsBytes = 255;   // one file-name component (NAME_MAX)
constexpr unsigned kMaxTimeoutSeconds = 30 * 24 * 3600;
// A job is an object of strings and arrays of strings: nothing nests deeper than 2.
constexpr int kMaxDepth = 2;

constexpr const char* kFields[] = {"assessment_id", "asset", "check", "arguments", "inputs", "key", "artifacts",
                                   "timeout_seconds"};

bool has_control_character(std::string_view text) {
  for (unsigned char c : text)
    if (c < 0x20 || c == 0x7f) return true;
  return false;
}

bool is_sha256_hex(std::string_view text) {
  if (text.size() != 64) return false;
  for (char c : text)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::optional<Job> reject(std::string* why, std::string reason) {
  if (why) *why = std::move(reason);
  return std::nullopt;
}

// Reads a required string field; on failure sets `error`.
bool read_string(const json& object, const char* name, std::string& out, std::string& error) {
  const auto found = object.find(name);
  if (found == object.end()) {
    error = std::string("job has no '") + name + "' field";
    return false;
  }
  if (!found->is_string()) {
    error = std::string("job field '") + name + "' must be a string";
    return false;
  }
  out = found->get<std::string>();
  return true;
}

bool read_string_array(const json& object, const char* name, std::size_t limit, std::vector<std::string>& out,
                       std::string& error) {
  const auto found = object.find(name);
  if (found == object.end()) {
    error = std::string("job has no '") + name + "' field";
    return false;
  }
  if (!found->is_array()) {
    error = std::string("job field '") + name + "' must be an array of strings";
    return false;
  }
  if (found->size() > limit) {
    error = std::string("job field '") + name + "' has " + std::to_string(found->size()) + " elements; at most " +
            std::to_string(limit) + " are accepted";
    return false;
  }
  out.clear();
  out.reserve(found->size());
  for (std::size_t i = 0; i < found->size(); ++i) {
    const json& element = (*found)[i];
    if (!element.is_string()) {
      error = std::string("job field '") + name + "' element " + std::to_string(i) + " is not a string";
      return false;
    }
    out.push_back(element.get<std::string>());
    // A NUL cannot travel through execve() or a path: the job would run with a different argument.
    if (out.back().find('\0') != std::string::npos) {
      error = std::string("job field '") + name + "' element " + std::to_string(i) + " contains a NUL byte";
      return false;
    }
  }
  return true;
}

}  // namespace

std::string to_json(const Job& job) {
  json document = {{"assessment_id", job.assessment_id},
                   {"asset", job.asset},
                   {"check", job.check},
                   {"arguments", job.arguments},
                   {"inputs", job.inputs},
                   {"key", job.key},
                   {"artifacts", job.artifacts},
                   {"timeout_seconds", job.timeout_seconds}};
  try {
    // Compact output has no newline: one job, one line.
    return document.dump();
  } catch (const json::type_error&) {
    // Replacing the bytes would send the worker a path or argument that is not the one the job's key
    // was computed over, so the job is refused instead.
    throw core::Error("job " + job.check + " on asset '" + job.asset + "' has an argument or input that is not valid UTF-8",
                      "rename the file to a UTF-8 name, or run this check locally instead of through --workers");
  }
}

std::optional<Job> job_from_json(std::string_view text, std::string* why) {
  if (text.size() > kMaxJobText)
    return reject(why, "job text has " + std::to_string(text.size()) + " bytes; at most " + std::to_string(kMaxJobText) +
                           " are accepted");
  // The callback sees every value as it is parsed: it refuses nesting deeper than a job has and a
  // field given twice (two readers of the same text must not see two different jobs).
  bool too_deep = false;
  std::string duplicate_field;
  std::set<std::string> seen_fields;
  const json::parser_callback_t check = [&](int depth, json::parse_event_t event, json& parsed) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) && depth >= kMaxDepth) {
      too_deep = true;
      return false;
    }
    if (event == json::parse_event_t::key && depth == 1 && parsed.is_string()) {
      if (!seen_fields.insert(parsed.get<std::string>()).second && duplicate_field.empty())
        duplicate_field = parsed.get<std::string>();
    }
    return true;
  };
  json document;
  try {
    document = json::parse(text.begin(), text.end(), check, /*allow_exceptions=*/false);
  } catch (const std::exception& error) {
    // parse() reports syntax errors by a discarded value; this catches what remains (allocation).
    return reject(why, std::string("job text could not be parsed: ") + error.what());
  }
  if (document.is_discarded()) return reject(why, "job text is not valid JSON (or not UTF-8)");
  if (too_deep) return reject(why, "job text nests deeper than a job does");
  if (!duplicate_field.empty()) return reject(why, "job field '" + duplicate_field + "' appears more than once");
  if (!document.is_object()) return reject(why, "job text must be a JSON object");

  try {
    for (const auto& item : document.items()) {
      bool known = false;
      for (const char* field : kFields) known = known || item.key() == field;
      if (!known)
        return reject(why, "job has an unknown field '" + item.key().substr(0, 64) +
                               "' (written by a newer aegis? run the same version on producer and workers)");
    }

    Job job;
    std::string error;
    const auto id = document.find("assessment_id");
    if (id == document.end()) return reject(why, "job has no 'assessment_id' field");
    if (id->is_number_unsigned()) {
      if (id->get<std::uint64_t>() > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        return reject(why, "job field 'assessment_id' is out of range");
      job.assessment_id = static_cast<std::int64_t>(id->get<std::uint64_t>());
    } else if (id->is_number_integer()) {
      job.assessment_id = id->get<std::int64_t>();
    } else {
      return reject(why, "job field 'assessment_id' must be an integer");
    }
    if (job.assessment_id < 0) return reject(why, "job field 'assessment_id' must not be negative");

    if (!read_string(document, "asset", job.asset, error) || !read_string(document, "check", job.check, error) ||
        !read_string(document, "key", job.key, error) || !read_string(document, "artifacts", job.artifacts, error) ||
        !read_string_array(document, "arguments", kMaxArguments, job.arguments, error) ||
        !read_string_array(document, "inputs", kMaxInputs, job.inputs, error))
      return reject(why, error);

    for (const auto& [name, value] : {std::pair<const char*, const std::string*>{"asset", &job.asset},
                                      std::pair<const char*, const std::string*>{"check", &job.check}}) {
      if (value->empty()) return reject(why, std::string("job field '") + name + "' is empty");
      if (value->size() > kMaxNameBytes)
        return reject(why, std::string("job field '") + name + "' is longer than " + std::to_string(kMaxNameBytes) + " bytes");
      if (has_control_character(*value)) return reject(why, std::string("job field '") + name + "' contains a control character");
    }
    if (has_control_character(job.key)) return reject(why, "job field 'key' contains a control character");
    if (!is_sha256_hex(job.key)) return reject(why, "job field 'key' must be 64 lower-case hexadecimal digits (a SHA-256)");
    if (job.arguments.empty()) return reject(why, "job field 'arguments' is empty: a job must name an aegis subcommand");

    // The worker makes this folder under the job's scratch directory: one plain name, no way out of it.
    if (job.artifacts.size() > kMaxArtifactsBytes)
      return reject(why, "job field 'artifacts' is longer than " + std::to_string(kMaxArtifactsBytes) + " bytes");
    if (has_control_character(job.artifacts) || job.artifacts.find_first_of("/\\") != std::string::npos ||
        job.artifacts == "." || job.artifacts == "..")
      return reject(why, "job field 'artifacts' must be a plain folder name (no '/', '\\', '.', '..' or control characters)");

    const auto timeout = document.find("timeout_seconds");
    if (timeout == document.end()) return reject(why, "job has no 'timeout_seconds' field");
    // nlohmann stores a non-negative integer as unsigned; a negative one is signed and out of range.
    const bool in_range = timeout->is_number_unsigned() && timeout->get<std::uint64_t>() >= 1 &&
                          timeout->get<std::uint64_t>() <= kMaxTimeoutSeconds;
    if (!in_range) return reject(why, "job field 'timeout_seconds' must be an integer from 1 to " + std::to_string(kMaxTimeoutSeconds));
    job.timeout_seconds = static_cast<unsigned>(timeout->get<std::uint64_t>());
    return job;
  } catch (const std::exception& error) {
    // Every access above is type-checked first; this is the last line of "never throws".
    return reject(why, std::string("job text could not be read: ") + error.what());
  }
}

}  // namespace aegis::assess
