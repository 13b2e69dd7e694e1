#include "aegis/cli/serve_command.h"

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "aegis/cli/engagement_support.h"
#include "aegis/core/error.h"
#include "aegis/web/dashboard_api.h"
#include "aegis/web/dashboard_store.h"
#include "aegis/web/http_server.h"

namespace aegis::cli {
namespace {

struct ServeFlags {
  std::string store = default_store();
  std::string listen = "127.0.0.1:8080";
  std::string web_root;
  std::string gateway_url;
  std::string alert_token_file;
  std::size_t threads = 4;
  bool secure_cookies = false;
};

struct UsersFlags {
  std::string store = default_store();
  std::string name;
  std::string role;
  bool disable = false;
  bool password_stdin = false;
};

// A secret from a file: its first line, without the line end. The file must not be readable by
// others (it would let anyone on the machine post alerts).
std::string read_secret_file(const std::string& file) {
  std::ifstream in(file);
  if (!in) throw core::Error("cannot read " + file, "create it with e.g. `openssl rand -hex 32 > " + file + "; chmod 600 " + file + "`");
  std::string line;
  std::getline(in, line);
  while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
  if (line.size() < 16) throw core::Error(file + " holds a token shorter than 16 characters", "use `openssl rand -hex 32`");
  return line;
}

// The new password: the first line of stdin (piped), or asked twice on a terminal without echo.
std::string read_password(const std::string& prompt) {
  if (isatty(STDIN_FILENO)) {
    const std::string first = getpass((prompt + ": ").c_str());
    const std::string again = getpass("again: ");
    if (first != again) throw core::Error("the two passwords differ", "run the command again");
    return first;
  }
  std::string line;
  if (!std::getline(std::cin, line)) throw core::Error("no password on standard input", "pipe it in: printf '%s\\n' \"$PASSWORD\" | aegis users ...");
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

std::pair<std::string, unsigned short> parse_listen(const std::string& listen) {
  const std::size_t colon = listen.rfind(':');
  if (colon == std::string::npos) throw core::Error("--listen takes HOST:PORT, not '" + listen + "'", "for example --listen 127.0.0.1:8080");
  std::string host = listen.substr(0, colon);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  int port = -1;
  try {
    std::size_t used = 0;
    port = std::stoi(listen.substr(colon + 1), &used);
    if (used != listen.size() - colon - 1) port = -1;
  } catch (const std::exception&) {
    port = -1;
  }
  if (port < 0 || port > 65535) throw core::Error("--listen has a bad port in '" + listen + "'", "use a number from 0 (any free port) to 65535");
  return {host, static_cast<unsigned short>(port)};
}

int run_serve(const ServeFlags& flags) {
  web::DashboardStore store(flags.store);
  web::DashboardApiOptions options;
  options.web_root = flags.web_root;
  options.gateway_url = flags.gateway_url;
  options.secure_cookies = flags.secure_cookies;
  if (!flags.alert_token_file.empty()) options.alert_token = read_secret_file(flags.alert_token_file);
  options.fetch_metrics = [](const std::string& url) {
    std::string base = url;
    while (!base.empty() && base.back() == '/') base.pop_back();
    return web::http_get(base + "/metrics", std::chrono::seconds(3));
  };
  web::DashboardApi api(store, options);
  const auto [host, port] = parse_listen(flags.listen);
  web::HttpServerOptions server_options;
  server_options.host = host;
  server_options.port = port;
  server_options.threads = std::max<std::size_t>(1, flags.threads);
  web::HttpServer server(server_options, [&api](const web::ApiRequest& request) { return api.handle(request); });
  const std::string shown_host = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  std::cout << "listening on http://" << shown_host << ":" << server.port() << std::endl;
  if (store.user_count() == 0)
    std::cerr << "aegis serve: the store has no users yet; add one with `aegis users add NAME --role admin --store " << flags.store
              << "`\n";
  if (host != "127.0.0.1" && host != "::1" && host != "localhost" && !flags.secure_cookies)
    std::cerr << "aegis serve: listening beyond loopback over plain HTTP; put it behind HTTPS (e.g. the gateway or nginx) and pass "
                 "--secure-cookies\n";
  server.run();
  std::cerr << "aegis serve: stopped\n";
  return 0;
}

}  // namespace

void register_serve_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<ServeFlags>();
  auto* command = app.add_subcommand("serve", "Serve the dashboard: a web app and REST API (OpenAPI at /api/v1/openapi.json) over the "
                                              "store's assessments, runs and findings, with users, roles and an audit log");
  command->add_option("--store", flags->store, "SQLite store file (default aegis-store.db or $AEGIS_STORE)");
  command->add_option("--listen", flags->listen, "HOST:PORT to listen on (default 127.0.0.1:8080; port 0: any free one)");
  command->add_option("--web-root", flags->web_root, "the built front end (default: web/dist of the source tree; `make web` builds it)");
  command->add_option("--gateway-url", flags->gateway_url, "the Aegis gateway's base URL, whose /metrics the dashboard shows live");
  command->add_option("--alert-token-file", flags->alert_token_file,
                      "file holding the bearer token the gateway's alert webhook sends to POST /api/v1/gateway/alerts");
  command->add_option("--threads", flags->threads, "HTTP worker threads (default 4)");
  command->add_flag("--secure-cookies", flags->secure_cookies, "mark the session cookie Secure (when served behind HTTPS)");
  command->callback([flags, &exit_code] { exit_code = run_serve(*flags); });
}

void register_users_command(CLI::App& app, int& exit_code) {
  auto flags = std::make_shared<UsersFlags>();
  auto* users = app.add_subcommand("users", "Manage the dashboard's users (roles: viewer, analyst, admin); passwords are read from "
                                            "standard input and stored as argon2id hashes");
  users->require_subcommand(1);
  const auto store_option = [&](CLI::App* c) {
    c->add_option("--store", flags->store, "SQLite store file (default aegis-store.db or $AEGIS_STORE)");
  };
  auto* add = users->add_subcommand("add", "Add a user (password from stdin, at least 12 characters)");
  add->add_option("name", flags->name, "user name")->required();
  add->add_option("--role", flags->role, "viewer, analyst or admin")->required()->check(CLI::IsMember({"viewer", "analyst", "admin"}));
  store_option(add);
  add->callback([flags, &exit_code] {
    web::DashboardStore store(flags->store);
    store.add_user(flags->name, flags->role, read_password("password for " + flags->name), "cli");
    std::cout << "added " << flags->name << " (" << flags->role << ")\n";
    exit_code = 0;
  });
  auto* list = users->add_subcommand("list", "List the users");
  store_option(list);
  list->callback([flags, &exit_code] {
    web::DashboardStore store(flags->store);
    const auto users_json = store.users();
    std::printf("%-24s %-8s %-9s %s\n", "NAME", "ROLE", "DISABLED", "LAST LOGIN");
    for (const auto& u : users_json["items"])
      std::printf("%-24s %-8s %-9s %s\n", u.value("name", "").c_str(), u.value("role", "").c_str(),
                  u.value("disabled", false) ? "yes" : "no",
                  u.contains("last_login_at") && u["last_login_at"].is_string() ? u["last_login_at"].get<std::string>().c_str() : "-");
    exit_code = 0;
  });
  auto* role = users->add_subcommand("set-role", "Change a user's role");
  role->add_option("name", flags->name, "user name")->required();
  role->add_option("--role", flags->role, "viewer, analyst or admin")->required()->check(CLI::IsMember({"viewer", "analyst", "admin"}));
  store_option(role);
  role->callback([flags, &exit_code] {
    web::DashboardStore(flags->store).set_role(flags->name, flags->role, "cli");
    std::cout << flags->name << " is now " << flags->role << "\n";
    exit_code = 0;
  });
  auto* passwd = users->add_subcommand("passwd", "Set a user's password (stdin); ends the user's sessions");
  passwd->add_option("name", flags->name, "user name")->required();
  store_option(passwd);
  passwd->callback([flags, &exit_code] {
    web::DashboardStore store(flags->store);
    store.set_password(flags->name, read_password("new password for " + flags->name), "cli");
    std::cout << "password of " << flags->name << " changed\n";
    exit_code = 0;
  });
  auto* disable = users->add_subcommand("disable", "Disable a user (keeps the record); ends the user's sessions");
  disable->add_option("name", flags->name, "user name")->required();
  store_option(disable);
  disable->callback([flags, &exit_code] {
    web::DashboardStore(flags->store).set_disabled(flags->name, true, "cli");
    std::cout << flags->name << " disabled\n";
    exit_code = 0;
  });
  auto* enable = users->add_subcommand("enable", "Enable a disabled user");
  enable->add_option("name", flags->name, "user name")->required();
  store_option(enable);
  enable->callback([flags, &exit_code] {
    web::DashboardStore(flags->store).set_disabled(flags->name, false, "cli");
    std::cout << flags->name << " enabled\n";
    exit_code = 0;
  });
  auto* verify = users->add_subcommand("verify-audit",
                                      "Recompute the hash chain of the dashboard's audit log; exit 1 naming every record that was "
                                      "changed, dropped or moved");
  store_option(verify);
  verify->callback([flags, &exit_code] {
    web::DashboardStore store(flags->store);
    const auto broken = store.verify_audit_log();
    const auto total = store.audit_log(1, 0).value("total", 0);
    if (broken.empty()) {
      std::cout << "audit log intact: " << total << " record(s) chain up to the genesis hash\n";
      exit_code = 0;
      return;
    }
    std::cout << "audit log altered: " << broken.size() << " of " << total << " record(s) do not match their hashes:";
    for (const auto seq : broken) std::cout << " " << seq;
    std::cout << "\nkeep the store for inspection; the records before the first of these are intact\n";
    exit_code = 1;
  });
  auto* remove = users->add_subcommand("remove", "Remove a user");
  remove->add_option("name", flags->name, "user name")->required();
  store_option(remove);
  remove->callback([flags, &exit_code] {
    web::DashboardStore(flags->store).remove_user(flags->name, "cli");
    std::cout << flags->name << " removed\n";
    exit_code = 0;
  });
}

}  // namespace aegis::cli
