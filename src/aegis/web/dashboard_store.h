// The dashboard's side of the Aegis store (an SQLite file shared with the findings, the lineage graph
// and the gateway's audit log): users and their argon2id password hashes, login sessions, the
// hash-chained audit log of every change made through the dashboard, each finding's triage history,
// and the read queries behind the REST API, answered as the API's JSON documents.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "aegis/web/password_hash.h"

namespace aegis::web {

// The web component's schema version in aegis_schema.
inline constexpr int kWebSchemaVersion = 1;

inline constexpr std::string_view kRoleViewer = "viewer";
inline constexpr std::string_view kRoleAnalyst = "analyst";
inline constexpr std::string_view kRoleAdmin = "admin";
bool is_role(std::string_view role);
// viewer < analyst < admin
int role_rank(std::string_view role);

struct SessionPolicy {
  std::chrono::minutes idle_timeout{30};
  std::chrono::hours absolute_timeout{12};
  int max_failed_logins = 5;                    // in a row, per user: then locked for lockout
  std::chrono::seconds lockout{std::chrono::minutes(5)};
  // The cost of new password hashes (and of the dummy hash checked for unknown names); hashes made
  // with less are re-hashed at their user's next good login. Tests lower it to stay fast.
  Argon2Params argon2{};
  // Where "now" comes from; empty: the system clock. Tests set it to step through timeouts.
  std::function<std::chrono::system_clock::time_point()> clock;
};

struct Session {
  std::string user;
  std::string role;
  std::string csrf_token;  // 43 characters of base64url (256 random bits)
};

struct LoginResult {
  enum class Outcome { Ok, InvalidCredentials, LockedOut } outcome = Outcome::InvalidCredentials;
  std::string token;        // the session cookie's value (43 characters base64url); only for Ok
  Session session;          // only for Ok
  std::int64_t retry_after_s = 0;  // only for LockedOut
};

// A filter over findings: the /api/v1/findings query (see the API contract).
struct FindingQuery {
  std::string scope = "current";  // current | all
  std::optional<std::int64_t> run;
  std::optional<std::int64_t> assessment;
  std::optional<std::string> asset, command, atlas, q;
  std::vector<std::string> severities, statuses;  // empty: any
  std::string sort = "-severity";  // severity | -severity | id | -id | asset | rule
  std::size_t limit = 50, offset = 0;  // limit at most 500
};

class DashboardStore {
 public:
  // Opens the SQLite store at `file` (creating the file and the web tables when needed, and the
  // indexes the queries need over the findings tables). Throws core::Error saying what failed and
  // what to do (also for a store written by a newer schema, or a PostgreSQL URL: not supported yet).
  explicit DashboardStore(const std::filesystem::path& file, SessionPolicy policy = {});
  ~DashboardStore();
  DashboardStore(const DashboardStore&) = delete;
  DashboardStore& operator=(const DashboardStore&) = delete;

  // Users. Names: 1-64 of [A-Za-z0-9._@-]; passwords: 12-1024 bytes. `actor` is who did it (for the
  // audit log; "cli" from the command line). Throw core::Error with a clear message on bad input,
  // an existing/unknown name, or removing/demoting the last admin.
  void add_user(std::string_view name, std::string_view role, std::string_view password, std::string_view actor);
  void set_role(std::string_view name, std::string_view role, std::string_view actor);
  void set_password(std::string_view name, std::string_view password, std::string_view actor);  // ends its sessions
  void set_disabled(std::string_view name, bool disabled, std::string_view actor);              // ends its sessions
  void remove_user(std::string_view name, std::string_view actor);                               // ends its sessions
  nlohmann::json users() const;  // {"items":[{"name","role","disabled","created_at","last_login_at"|null}]}
  std::size_t user_count() const;

  // Checks the password (argon2id; the same work for unknown users, so timing does not tell which
  // names exist), applies the lockout, creates a session and audits the login (and failures).
  LoginResult login(std::string_view name, std::string_view password, std::string_view client);
  // The session of a cookie value, refreshing its idle timer; nullopt when unknown, expired or its
  // user is disabled or removed.
  std::optional<Session> session(std::string_view token);
  void logout(std::string_view token);

  // Sets a finding's status with a comment, records the history and the audit record in ONE
  // transaction and returns finding_json(id). Throws core::Error for an unknown finding or status or
  // a missing/too long comment.
  nlohmann::json set_finding_status(std::int64_t finding_id, std::string_view status, std::string_view comment,
                                    std::string_view user);

  // Appends to the audit log (hash-chained: hash = SHA-256 over prev_hash and the fields).
  void audit(std::string_view user, std::string_view action, std::string_view target, const nlohmann::json& detail);
  nlohmann::json audit_log(std::size_t limit, std::size_t offset) const;
  // Recomputes the chain; the seqs whose hash does not match (empty: intact).
  std::vector<std::int64_t> verify_audit_log() const;

  // Read queries: each returns the API's JSON document (see /tmp/notes/web_api.md). Those that take
  // an id return nullopt when there is no such object.
  nlohmann::json summary() const;
  nlohmann::json inventory() const;
  nlohmann::json assessments(std::size_t limit, std::size_t offset) const;
  std::optional<nlohmann::json> assessment(std::int64_t id) const;
  nlohmann::json runs(const std::optional<std::string>& asset, const std::optional<std::string>& command,
                      std::optional<std::int64_t> assessment, std::size_t limit, std::size_t offset) const;
  std::optional<nlohmann::json> run(std::int64_t id) const;  // with "summary"
  nlohmann::json findings(const FindingQuery& query) const;
  std::optional<nlohmann::json> finding(std::int64_t id) const;  // with "history"
  // Per ATLAS technique id (current scope): findings and open findings, highest severity.
  struct TechniqueCount { std::string id; std::size_t findings = 0, open = 0; std::string highest; };
  std::vector<TechniqueCount> atlas_counts() const;
  // Summaries of the newest run of `command` per asset (parsed summary_json), for the charts.
  std::vector<nlohmann::json> latest_summaries(std::string_view command) const;

  const std::filesystem::path& file() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace aegis::web
