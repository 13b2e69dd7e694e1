// What the engagement commands (inventory, threat-model, assess, report, schedule, worker) share:
// loading an inventory with its problems printed by line, the store's default location, the path of
// this executable (jobs run it), and writing an assessment document in each report format.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

#include "aegis/cli/common_options.h"
#include "aegis/threat/threat.h"

namespace aegis::cli {

// The store every engagement command uses unless --store says otherwise (also $AEGIS_STORE).
std::string default_store();

// Loads and validates the inventory; prints warnings to stderr and throws core::Error (exit 2) with
// every error listed by line when it has errors.
threat::Inventory load_inventory_or_fail(const std::string& file, bool quiet);

// "FILE:LINE:COLUMN: error: message" for each issue.
void print_inventory_issues(std::ostream& out, const std::string& file, const std::vector<threat::InventoryIssue>& issues);

std::filesystem::path this_executable();

// The common options, with html added to --format (assess, report).
void add_engagement_options(CLI::App& command, CommonOptions& options);

// The ATLAS catalog to use: the shipped one, or --atlas FILE (kept alive by the caller's holder).
const threat::AtlasCatalog& atlas_catalog(const std::string& atlas_file, threat::AtlasCatalog& holder);

// Writes an assessment document as --format asks (json: the document itself; html and markdown: the
// report writers; sarif and table: the shared writers over its findings) and returns the exit code
// for --fail-on. `format` may also be "html".
int write_assessment(const CommonOptions& options, const nlohmann::json& document, const std::string& command);

}  // namespace aegis::cli
