// The `aegis` command line: one subcommand per capability, all with the same face (see DESIGN.md).
#include <CLI/CLI.hpp>
#include <iostream>

#include "aegis/cli/assess_command.h"
#include "aegis/cli/attack_command.h"
#include "aegis/cli/inventory_command.h"
#include "aegis/cli/report_command.h"
#include "aegis/cli/schedule_command.h"
#include "aegis/cli/federated_command.h"
#include "aegis/cli/threat_model_command.h"
#include "aegis/cli/audit_command.h"
#include "aegis/cli/audit_infra_command.h"
#include "aegis/cli/certify_command.h"
#include "aegis/cli/extract_command.h"
#include "aegis/cli/gateway_command.h"
#include "aegis/cli/guard_command.h"
#include "aegis/cli/harden_command.h"
#include "aegis/cli/lineage_command.h"
#include "aegis/cli/mia_command.h"
#include "aegis/cli/pii_command.h"
#include "aegis/cli/redact_command.h"
#include "aegis/cli/redteam_command.h"
#include "aegis/cli/train_dp_command.h"
#include "aegis/cli/poison_command.h"
#include "aegis/cli/scan_command.h"
#include "aegis/cli/serve_command.h"
#include "aegis/cli/sign_command.h"
#include "aegis/core/error.h"

int main(int argc, char** argv) {
  CLI::App app{"Aegis: AI-security toolkit. Exit codes: 0 clean, 1 findings at or above --fail-on, 2 usage or I/O error."};
  app.set_version_flag("--version", std::string("aegis ") + AEGIS_VERSION);
  app.set_config("--config", "", "read options from a TOML or INI file");
  app.require_subcommand(1);
  int exit_code = 0;
  aegis::cli::register_scan_command(app, exit_code);
  aegis::cli::register_sign_commands(app, exit_code);
  aegis::cli::register_lineage_command(app, exit_code);
  aegis::cli::register_attack_command(app, exit_code);
  aegis::cli::register_harden_command(app, exit_code);
  aegis::cli::register_certify_command(app, exit_code);
  aegis::cli::register_mia_command(app, exit_code);
  aegis::cli::register_extract_command(app, exit_code);
  aegis::cli::register_poison_command(app, exit_code);
  aegis::cli::register_pii_command(app, exit_code);
  aegis::cli::register_redact_command(app, exit_code);
  aegis::cli::register_train_dp_command(app, exit_code);
  aegis::cli::register_gateway_command(app, exit_code);
  aegis::cli::register_audit_command(app, exit_code);
  aegis::cli::register_guard_command(app, exit_code);
  aegis::cli::register_redteam_command(app, exit_code);
  aegis::cli::register_audit_infra_command(app, exit_code);
  aegis::cli::register_inventory_command(app, exit_code);
  aegis::cli::register_threat_model_command(app, exit_code);
  aegis::cli::register_assess_command(app, exit_code);
  aegis::cli::register_report_command(app, exit_code);
  aegis::cli::register_schedule_command(app, exit_code);
  aegis::cli::register_worker_command(app, exit_code);
  aegis::cli::register_federated_command(app, exit_code);
  aegis::cli::register_serve_command(app, exit_code);
  aegis::cli::register_users_command(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "aegis: " << e.what() << "\n";
    std::cerr << "Run 'aegis --help' or 'aegis COMMAND --help' for usage.\n";
    return 2;
  } catch (const aegis::core::Error& e) {
    std::cerr << "aegis: " << e.what() << "\n";
    if (!e.hint().empty()) std::cerr << "what to do: " << e.hint() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "aegis: unexpected error: " << e.what() << "\n";
    return 2;
  }
  return exit_code;
}
