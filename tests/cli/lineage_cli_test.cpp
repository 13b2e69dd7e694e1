// `aegis lineage`: a chain of steps is recorded in a real SQLite store, shown back, and verified
// against what is on disk now, upstream artifacts included.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "../test_support.h"

namespace aegis::test {
namespace {

namespace fs = std::filesystem;

TEST(LineageCli, RecordShowVerifyAndUpstreamTamperingIsFound) {
  TempDir temp("aegis_lineage");
  const std::string store = (temp.path / "store.db").string();
  for (const char* dir : {"raw", "clean", "model"}) fs::create_directories(temp.path / dir);
  std::ofstream(temp.path / "raw/a.csv") << "1,2,3\n";
  std::ofstream(temp.path / "clean/a.csv") << "1,2\n";
  std::ofstream(temp.path / "model/weights.bin") << "weights";
  auto p = [&](const char* name) { return (temp.path / name).string(); };

  ASSERT_EQ(run_cli({"lineage", "--store", store, "record", "--inputs", p("raw"), "--output", p("clean"), "--step",
                     "python clean.py", "--actor", "ci"}).exit_code, 0);
  ASSERT_EQ(run_cli({"lineage", "--store", store, "record", "--inputs", p("clean"), "--output", p("model"), "--step",
                     "python train.py", "--actor", "ci"}).exit_code, 0);
  ASSERT_TRUE(fs::exists(store));

  auto show = run_cli({"lineage", "--store", store, "show", p("model")});
  ASSERT_EQ(show.exit_code, 0) << show.err;
  for (const char* expected : {"python train.py", "python clean.py", "raw", "clean", "model"})
    EXPECT_NE(show.out.find(expected), std::string::npos) << expected << "\n" << show.out;

  auto clean = run_cli({"lineage", "--store", store, "verify", p("model"), "--format", "json"});
  EXPECT_EQ(clean.exit_code, 0) << clean.out;

  std::ofstream(temp.path / "raw/a.csv") << "1,2,3,poison\n";  // two steps upstream
  auto tampered = run_cli({"lineage", "--store", store, "verify", p("model"), "--format", "json"});
  EXPECT_EQ(tampered.exit_code, 1);
  auto doc = nlohmann::json::parse(tampered.out);
  ASSERT_EQ(doc["findings"].size(), 1u) << tampered.out;
  EXPECT_EQ(doc["findings"][0]["rule_id"], "lineage.changed");
  EXPECT_NE(doc["findings"][0]["evidence"].get<std::string>().find("a.csv"), std::string::npos);

  fs::remove_all(temp.path / "clean");
  auto missing = run_cli({"lineage", "--store", store, "verify", p("model"), "--format", "json"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.out.find("lineage.missing"), std::string::npos);

  auto unknown = run_cli({"lineage", "--store", store, "show", p("raw/a.csv")});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("aegis lineage record"), std::string::npos) << unknown.err;
}

}  // namespace
}  // namespace aegis::test
