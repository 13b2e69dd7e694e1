// `aegis users` and `aegis serve` as a user runs them: passwords on standard input, clear errors
// with exit 2, the audit log's verification, and the server over a real socket until SIGTERM.
#include <gtest/gtest.h>

#include <signal.h>
#include <sqlite3.h>

#include <nlohmann/json.hpp>
#include <fstream>
#include <thread>

#include "aegis/web/http_server.h"
#include "support/background_process.h"
#include "test_support.h"

namespace aegis {
namespace {

using test::run_cli;

TEST(ServeCli, UsersAreAddedListedChangedAndTheAuditLogVerifies) {
  test::TempDir dir("aegis_serve_cli");
  const std::string store = (dir.path / "store.db").string();
  auto added = run_cli({"users", "add", "root", "--role", "admin", "--store", store}, "root-password-12345\n");
  ASSERT_EQ(added.exit_code, 0) << added.err;
  EXPECT_NE(added.out.find("added root (admin)"), std::string::npos);
  ASSERT_EQ(run_cli({"users", "add", "ana", "--role", "viewer", "--store", store}, "ana-password-12345\n").exit_code, 0);

  const auto again = run_cli({"users", "add", "ana", "--role", "viewer", "--store", store}, "ana-password-12345\n");
  EXPECT_EQ(again.exit_code, 2);
  EXPECT_NE(again.err.find("ana"), std::string::npos) << again.err;
  const auto short_password = run_cli({"users", "add", "bo", "--role", "viewer", "--store", store}, "short\n");
  EXPECT_EQ(short_password.exit_code, 2);
  EXPECT_NE(short_password.err.find("12"), std::string::npos) << short_password.err;
  const auto no_password = run_cli({"users", "add", "cy", "--role", "viewer", "--store", store});
  EXPECT_EQ(no_password.exit_code, 2);
  EXPECT_NE(no_password.err.find("standard input"), std::string::npos) << no_password.err;
  EXPECT_EQ(run_cli({"users", "add", "dee", "--role", "root", "--store", store}, "dee-password-12345\n").exit_code, 2);

  ASSERT_EQ(run_cli({"users", "set-role", "ana", "--role", "analyst", "--store", store}).exit_code, 0);
  const auto list = run_cli({"users", "list", "--store", store});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_NE(list.out.find("root"), std::string::npos);
  EXPECT_NE(list.out.find("analyst"), std::string::npos);
  const auto last_admin = run_cli({"users", "remove", "root", "--store", store});
  EXPECT_EQ(last_admin.exit_code, 2);
  EXPECT_NE(last_admin.err.find("admin"), std::string::npos) << last_admin.err;

  const auto intact = run_cli({"users", "verify-audit", "--store", store});
  EXPECT_EQ(intact.exit_code, 0) << intact.out << intact.err;
  EXPECT_NE(intact.out.find("intact"), std::string::npos);

  // Someone with write access to the file rewrites who did something: the chain names the record.
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(store.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "UPDATE web_audit SET user = 'mallory' WHERE seq = 2", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  const auto altered = run_cli({"users", "verify-audit", "--store", store});
  EXPECT_EQ(altered.exit_code, 1);
  EXPECT_NE(altered.out.find("altered"), std::string::npos) << altered.out;
  EXPECT_NE(altered.out.find(" 2"), std::string::npos) << altered.out;
}

TEST(ServeCli, BadOptionsAndStoresAreRefusedWithWhatToDo) {
  test::TempDir dir("aegis_serve_cli");
  const std::string store = (dir.path / "store.db").string();
  const auto listen = run_cli({"serve", "--store", store, "--listen", "localhost"});
  EXPECT_EQ(listen.exit_code, 2);
  EXPECT_NE(listen.err.find("HOST:PORT"), std::string::npos) << listen.err;
  const auto port = run_cli({"serve", "--store", store, "--listen", "127.0.0.1:99999"});
  EXPECT_EQ(port.exit_code, 2);
  const auto postgres = run_cli({"serve", "--store", "postgresql://aegis@127.0.0.1:1/aegis"});
  EXPECT_EQ(postgres.exit_code, 2);
  EXPECT_NE(postgres.err.find("SQLite"), std::string::npos) << postgres.err;
  std::ofstream(dir.path / "not-a-store.db") << "this is not a database, just text that is long enough to be read as a header";
  const auto not_db = run_cli({"serve", "--store", (dir.path / "not-a-store.db").string()});
  EXPECT_EQ(not_db.exit_code, 2);
  EXPECT_NE(not_db.err.find("not an SQLite database"), std::string::npos) << not_db.err;
  std::ofstream(dir.path / "token.txt") << "short\n";
  const auto token = run_cli({"serve", "--store", store, "--alert-token-file", (dir.path / "token.txt").string()});
  EXPECT_EQ(token.exit_code, 2);
  EXPECT_NE(token.err.find("openssl rand"), std::string::npos) << token.err;
}

TEST(ServeCli, ServesOverLoopbackUntilSigterm) {
  test::TempDir dir("aegis_serve_cli");
  const std::string store = (dir.path / "store.db").string();
  test::Background server({"serve", "--store", store, "--listen", "127.0.0.1:0", "--web-root", (dir.path / "none").string()},
                          dir.path / "serve.log", dir.path / "serve.out");
  std::string url;
  for (int i = 0; i < 300 && url.empty(); ++i) {
    const std::string out = test::slurp_file(dir.path / "serve.out");
    const auto at = out.find("listening on ");
    if (at != std::string::npos && out.find('\n', at) != std::string::npos) url = out.substr(at + 13, out.find('\n', at) - at - 13);
    else std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_FALSE(url.empty()) << test::slurp_file(dir.path / "serve.log");
  // A store without users says how to add one.
  EXPECT_NE(test::slurp_file(dir.path / "serve.log").find("aegis users add"), std::string::npos);
  const auto [status, body] = web::http_get(url + "/api/v1/openapi.json", std::chrono::seconds(10));
  EXPECT_EQ(status, 200);
  EXPECT_EQ(nlohmann::json::parse(body)["openapi"], "3.1.0");
  EXPECT_EQ(web::http_get(url + "/api/v1/me", std::chrono::seconds(10)).first, 401);
  // No front end in --web-root: the page says how to build it instead of a bare 404.
  const auto [page_status, page] = web::http_get(url + "/", std::chrono::seconds(10));
  EXPECT_EQ(page_status, 503);
  EXPECT_NE(page.find("make web"), std::string::npos);
  ASSERT_EQ(::kill(server.pid, SIGTERM), 0);
  EXPECT_EQ(server.wait(std::chrono::seconds(30)), 0) << test::slurp_file(dir.path / "serve.log");
}

}  // namespace
}  // namespace aegis
