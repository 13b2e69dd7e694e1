#include "aegis/cli/schedule_command.h"

#include <iostream>
#include <nlohmann/json.hpp>

#include "aegis/assess/assess.h"
#include "aegis/cli/engagement_support.h"
#include "aegis/core/error.h"

namespace aegis::cli {
namespace {

struct ScheduleFlags {
  std::string inventory;
  std::string store = default_store();
  std::string atlas;
  std::string format = "table";
  bool cron = false;
  bool systemd = false;
  std::string at = "03:17";
  bool quiet = false;
};

// Single quotes for a shell line; a path with a quote in it gets the quote escaped.
std::string shell_quote(const std::string& text) {
  std::string out = "'";
  for (char c : text) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

int run_schedule(const ScheduleFlags& flags) {
  const auto inventory = load_inventory_or_fail(flags.inventory, flags.quiet);
  threat::AtlasCatalog holder;
  const auto& catalog = atlas_catalog(flags.atlas, holder);
  int hour = 3, minute = 17;
  if (std::sscanf(flags.at.c_str(), "%d:%d", &hour, &minute) != 2 || hour < 0 || hour > 23 || minute < 0 || minute > 59)
    throw core::Error("--at takes HH:MM, not '" + flags.at + "'", "for example --at 02:30");
  const auto inventory_path = std::filesystem::absolute(inventory.file).string();
  const bool url = flags.store.find("://") != std::string::npos;
  const auto store_path = url ? flags.store : std::filesystem::absolute(flags.store).string();
  // Runs every day; `--only-due` makes a day with nothing due cost one look at the store, and unchanged
  // inputs are reused unless older than the policy's period.
  const std::string command = this_executable().string() + " assess " + shell_quote(inventory_path) + " --store " + shell_quote(store_path) +
                              " --only-due --max-age-days " + std::to_string(inventory.policy.every_days) + " --quiet --format json --output " +
                              shell_quote(std::filesystem::absolute(inventory.file).parent_path().string() + "/aegis-assessment.json");
  if (flags.cron) {
    std::cout << "# aegis: reassess " << inventory_path << " when due (policy: every " << inventory.policy.every_days
              << " days, on model change, on ATLAS release, after a fix); add with `crontab -e`\n";
    std::printf("%d %d * * * %s\n", minute, hour, command.c_str());
    return 0;
  }
  if (flags.systemd) {
    std::printf("# /etc/systemd/system/aegis-assess.service\n[Unit]\nDescription=Aegis reassessment of %s\nAfter=network-online.target\n\n"
                "[Service]\nType=oneshot\nExecStart=%s\nNice=10\n\n"
                "# /etc/systemd/system/aegis-assess.timer  (enable: systemctl enable --now aegis-assess.timer)\n"
                "[Unit]\nDescription=Daily Aegis reassessment check\n\n[Timer]\nOnCalendar=*-*-* %02d:%02d:00\nPersistent=true\n"
                "RandomizedDelaySec=15m\n\n[Install]\nWantedBy=timers.target\n",
                inventory_path.c_str(), command.c_str(), hour, minute);
    return 0;
  }
  store::FindingStore store(flags.store);
  const auto due = assess::due_assets(inventory, store, catalog, std::chrono::system_clock::now());
  std::size_t n = 0;
  for (const auto& d : due) n += d.due;
  if (flags.format == "json") {
    nlohmann::json assets = nlohmann::json::array();
    for (const auto& d : due)
      assets.push_back({{"asset", d.asset}, {"due", d.due}, {"reasons", d.reasons}, {"last_assessment", d.last_assessment},
                        {"last_assessed_at", d.last_assessed_at}, {"next_due_at", d.next_due_at}});
    std::cout << nlohmann::json{{"aegis", {{"version", AEGIS_VERSION}, {"command", "schedule"}}}, {"inventory", inventory_path},
                                {"atlas_version", catalog.version()}, {"due", n}, {"assets", assets}}.dump(2) << "\n";
    return 0;
  }
  std::printf("%-28s %-5s %-8s %s\n", "ASSET", "DUE", "LAST", "WHY / NEXT");
  for (const auto& d : due) {
    std::string why;
    for (const auto& r : d.reasons) why += (why.empty() ? "" : "; ") + r;
    if (!d.due) why = "next due " + d.next_due_at;
    std::printf("%-28s %-5s %-8s %s\n", d.asset.c_str(), d.due ? "yes" : "no",
                d.last_assessment ? ("#" + std::to_string(d.last_assessment)).c_str() : "-", why.c_str());
  }
  std::cout << n << " of " << due.size() << " asset(s) due. `aegis assess " << flags.inventory << " --only-due` assesses them; "
            << "`aegis schedule " << flags.inventory << " --cron` (or --systemd) prints a daily job that does.\n";
  return 0;
}

}  // namespace

void register_schedule_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ScheduleFlags>();
  auto* command = app.add_subcommand("schedule", "List the assets due for reassessment (every N days, new model digest, new ATLAS release, "
                                                 "after a fix) and print cron or systemd-timer lines that reassess them");
  command->add_option("inventory", flags->inventory, "inventory YAML (its policy: section sets the rules)")->required();
  command->add_option("--store", flags->store, "store file or postgresql:// URL (default aegis-store.db or $AEGIS_STORE)");
  command->add_option("--atlas", flags->atlas, "the ATLAS.yaml release to compare against (default: the shipped one)");
  command->add_option("--format", flags->format, "table or json")->check(CLI::IsMember({"table", "json"}));
  command->add_flag("--cron", flags->cron, "print a crontab line that reassesses what is due, daily");
  command->add_flag("--systemd", flags->systemd, "print a systemd service and timer that do the same");
  command->add_option("--at", flags->at, "time of day for --cron/--systemd, HH:MM (default 03:17)");
  command->add_flag("--quiet,-q", flags->quiet, "no warnings about the inventory");
  command->callback([flags, &exit_code] { exit_code = run_schedule(*flags); });
}

}  // namespace aegis::cli
