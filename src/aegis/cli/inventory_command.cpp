#include "aegis/cli/inventory_command.h"

#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "aegis/cli/engagement_support.h"
#include "aegis/core/error.h"
#include "aegis/store/finding_store.h"

namespace aegis::cli {
namespace {

struct InventoryFlags {
  std::string file;
  std::string path;
  std::string output;
  std::string format;
  std::string store = default_store();
};

int run_validate(const InventoryFlags& flags) {
  const auto load = threat::load_inventory(flags.file);
  std::size_t errors = 0;
  for (const auto& issue : load.issues) errors += issue.severity == "error";
  if (flags.format == "json") {
    nlohmann::json issues = nlohmann::json::array();
    for (const auto& i : load.issues)
      issues.push_back({{"line", i.mark.line}, {"column", i.mark.column}, {"severity", i.severity}, {"message", i.message}});
    nlohmann::json kinds = nlohmann::json::object();
    for (const auto& a : load.inventory.assets) kinds[std::string(threat::to_string(a.kind))] = kinds.value(std::string(threat::to_string(a.kind)), 0) + 1;
    std::cout << nlohmann::json{{"aegis", {{"version", AEGIS_VERSION}, {"command", "inventory validate"}}},
                                {"inventory", flags.file}, {"valid", errors == 0}, {"assets", load.inventory.assets.size()},
                                {"kinds", kinds}, {"issues", issues}}.dump(2) << "\n";
  } else {
    print_inventory_issues(std::cout, flags.file, load.issues);
    std::cout << flags.file << ": " << (errors ? "invalid" : "valid") << " — " << load.inventory.assets.size() << " asset(s), "
              << errors << " error(s), " << load.issues.size() - errors << " warning(s)\n";
  }
  return errors ? 1 : 0;
}

int run_discover(const InventoryFlags& flags) {
  const auto inventory = threat::discover_inventory(flags.path);
  std::string yaml = "# Proposed by `aegis inventory discover " + flags.path + "`: review owners, criticality, exposure,\n"
                     "# dataset sensitivity and the tests to run, then `aegis inventory validate` this file.\n" + threat::to_yaml(inventory);
  if (flags.output.empty()) {
    std::cout << yaml;
  } else {
    std::ofstream out(flags.output, std::ios::binary);
    if (!out) throw core::Error("cannot write " + flags.output, "check the folder exists and is writable");
    out << yaml;
  }
  std::map<std::string, int> kinds;
  for (const auto& a : inventory.assets) ++kinds[std::string(threat::to_string(a.kind))];
  std::cerr << "aegis inventory discover: " << inventory.assets.size() << " asset(s) proposed";
  for (const auto& [kind, n] : kinds) std::cerr << ", " << n << " " << kind;
  std::cerr << (flags.output.empty() ? "" : " -> " + flags.output) << "\n";
  return 0;
}

// The assets the store knows, from the newest assessment that covered each.
int run_list(const InventoryFlags& flags) {
  store::FindingStore store(flags.store, {.read_only = true});
  nlohmann::json assets = nlohmann::json::array();
  std::map<std::string, bool> seen;
  for (const auto& listed : store.assessments(1000)) {
    const auto record = store.assessment(listed.id);
    if (!record) continue;
    const auto plan = nlohmann::json::parse(record->summary_json.empty() ? "{}" : record->summary_json, nullptr, false);
    if (!plan.is_object() || !plan.contains("assets") || !plan["assets"].is_array()) continue;
    for (const auto& a : plan["assets"]) {
      const auto id = a.value("id", "");
      if (id.empty() || seen[id]) continue;
      seen[id] = true;
      assets.push_back({{"id", id}, {"kind", a.value("kind", "")}, {"owner", a.value("owner", "")},
                        {"criticality", a.value("criticality", "")}, {"inventory", record->inventory},
                        {"last_assessment", record->id}, {"assessed_at", record->started_at}});
    }
  }
  if (flags.format == "json") {
    std::cout << nlohmann::json{{"store", store.location()}, {"assets", assets}}.dump(2) << "\n";
    return 0;
  }
  std::printf("%-28s %-9s %-10s %-28s %s\n", "ASSET", "KIND", "CRITICAL.", "OWNER", "LAST ASSESSMENT");
  for (const auto& a : assets)
    std::printf("%-28s %-9s %-10s %-28s #%lld %s\n", a["id"].get<std::string>().c_str(), a["kind"].get<std::string>().c_str(),
                a["criticality"].get<std::string>().c_str(), a["owner"].get<std::string>().c_str(),
                static_cast<long long>(a["last_assessment"].get<std::int64_t>()), a["assessed_at"].get<std::string>().c_str());
  if (assets.empty()) std::cout << "(no assessed assets in " << store.location() << "; run `aegis assess INVENTORY` first)\n";
  return 0;
}

}  // namespace

void register_inventory_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<InventoryFlags>();
  auto* command = app.add_subcommand("inventory", "The asset inventory (models, datasets, endpoints, pipelines): validate, discover, list");
  command->require_subcommand(1);
  auto* validate = command->add_subcommand("validate", "check an inventory file and explain every problem by line (exit 1 when it has errors)");
  validate->add_option("file", flags->file, "inventory YAML")->required();
  validate->add_option("--format", flags->format, "text or json (default text)")->check(CLI::IsMember({"text", "json"}));
  validate->callback([flags, &exit_code] { exit_code = run_validate(*flags); });
  auto* discover = command->add_subcommand("discover", "propose inventory entries for the model, data and deployment files under PATH");
  discover->add_option("path", flags->path, "folder (or file) to walk")->required();
  discover->add_option("--output,-o", flags->output, "write the proposed inventory here (default stdout)");
  discover->callback([flags, &exit_code] { exit_code = run_discover(*flags); });
  auto* list = command->add_subcommand("list", "list the assets recorded in the store by assessments");
  list->add_option("--store", flags->store, "store file or postgresql:// URL (default aegis-store.db or $AEGIS_STORE)");
  list->add_option("--format", flags->format, "text or json")->check(CLI::IsMember({"text", "json"}));
  list->callback([flags, &exit_code] { exit_code = run_list(*flags); });
}

}  // namespace aegis::cli
