// The probe catalog: the shipped YAML loads, every family is covered, every ATLAS id and name the
// harness uses exists in the MITRE ATLAS distribution, JailbreakBench goals load, bad files are
// refused with the file and line named.
#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <functional>
#include <map>
#include <set>

#include "aegis/core/error.h"
#include "aegis/redteam/redteam.h"
#include "test_support.h"

namespace aegis::redteam {
namespace {

std::filesystem::path catalog_dir() { return test::source_dir() / "data" / "redteam"; }

Catalog expanded_catalog() {
  auto catalog = load_catalog_directory(catalog_dir());
  expand_jailbreaks(catalog);
  return catalog;
}

// Every (id, name) pair anywhere in the ATLAS distribution.
std::map<std::string, std::string> atlas_ids(const YAML::Node& node) {
  std::map<std::string, std::string> out;
  std::function<void(const YAML::Node&)> walk = [&](const YAML::Node& n) {
    if (n.IsMap()) {
      if (n["id"] && n["name"] && n["id"].IsScalar() && n["name"].IsScalar())
        out[n["id"].as<std::string>()] = n["name"].as<std::string>();
      for (const auto& kv : n) walk(kv.second);
    } else if (n.IsSequence()) {
      for (const auto& item : n) walk(item);
    }
  };
  walk(node);
  return out;
}

TEST(RedteamCatalog, TechniquesAgreeWithTheShippedAtlasCatalog) {
  const auto path = test::source_dir() / ".." / "shared" / "data" / "atlas" / "ATLAS.yaml";
  if (!std::filesystem::exists(path)) GTEST_SKIP() << "no ATLAS distribution at " << path;
  const auto ids = atlas_ids(YAML::LoadFile(path.string()));
  ASSERT_GT(ids.size(), 100u);
  for (const auto& t : atlas_techniques()) {
    ASSERT_TRUE(ids.count(t.id)) << t.id << " is not in ATLAS";
    EXPECT_EQ(ids.at(t.id), t.name) << t.id;
    if (!t.parent_name.empty()) {
      const auto parent = t.id.substr(0, t.id.rfind('.'));
      ASSERT_TRUE(ids.count(parent)) << parent;
      EXPECT_EQ(ids.at(parent), t.parent_name) << parent;
    }
  }
  // Every id that a family, probe or transform carries is one of them, so it is in ATLAS too.
  const auto catalog = expanded_catalog();
  for (const auto& f : probe_families()) EXPECT_NE(find_technique(f.atlas), nullptr) << f.id;
  for (const auto& p : catalog.probes) {
    if (!p.atlas.empty()) {
      EXPECT_NE(find_technique(p.atlas), nullptr) << p.id;
    }
  }
  for (const auto& t : catalog.transforms) {
    if (!t.atlas.empty()) {
      EXPECT_TRUE(ids.count(t.atlas)) << t.name;
    }
  }
  // The pairs the issue names.
  EXPECT_EQ(technique_title("AML.T0051.000"), "LLM Prompt Injection: Direct");
  EXPECT_EQ(find_family("system-prompt-extraction")->atlas, "AML.T0056");
  EXPECT_EQ(find_family("data-leakage")->atlas, "AML.T0057");
  EXPECT_EQ(find_family("response-rendering")->atlas, "AML.T0077");
  EXPECT_EQ(find_family("obfuscation")->atlas, "AML.T0068");
  EXPECT_EQ(find_family("package-hallucination")->atlas, "AML.T0062");
  EXPECT_EQ(find_family("indirect-injection")->atlas, "AML.T0051.001");
  EXPECT_EQ(find_family("jailbreak")->atlas, "AML.T0054");
}

TEST(RedteamCatalog, ShippedDataCoversEveryFamilyAndTransform) {
  const auto catalog = expanded_catalog();
  std::map<std::string, std::size_t> per_family;
  std::set<std::string> ids;
  for (const auto& p : catalog.probes) {
    ++per_family[p.family];
    EXPECT_TRUE(ids.insert(p.id).second) << "duplicate id " << p.id;
    EXPECT_FALSE(p.turns.empty()) << p.id;
    EXPECT_FALSE(p.success.empty()) << p.id;
  }
  for (const auto& f : probe_families()) EXPECT_GE(per_family[f.id], 3u) << f.id << " has too few probes";
  EXPECT_GE(catalog.jailbreak_templates.size(), 6u);
  EXPECT_EQ(per_family["jailbreak"], catalog.jailbreak_templates.size() * catalog.behaviors.size() + 1)  // + the crescendo
      << "every template with every behaviour";
  for (const char* name : {"base64", "hex", "rot13", "leetspeak", "url", "html", "reversed", "unicode-tags", "zero-width",
                           "homoglyph", "split", "roleplay", "many-shot", "translate"}) {
    bool found = false;
    for (const auto& t : catalog.transforms) found |= t.name == name;
    EXPECT_TRUE(found) << name;
  }
  EXPECT_GE(catalog.many_shot_examples.size(), 8u);
  EXPECT_TRUE(catalog.known_packages.count("requests"));
  EXPECT_TRUE(catalog.known_packages.count("numpy"));
  bool multi_turn = false;
  for (const auto& p : catalog.probes) multi_turn |= p.turns.size() >= 3;
  EXPECT_TRUE(multi_turn);
}

TEST(RedteamCatalog, EmbeddedCatalogMatchesTheSourceFiles) {
  Catalog embedded;
  try {
    embedded = builtin_catalog();
  } catch (const core::Error& e) {
    GTEST_SKIP() << e.what();
  }
  const auto from_files = load_catalog_directory(catalog_dir());
  EXPECT_EQ(embedded.probes.size(), from_files.probes.size());
  EXPECT_EQ(embedded.transforms.size(), from_files.transforms.size());
  EXPECT_EQ(embedded.known_packages, from_files.known_packages);
}

TEST(RedteamCatalog, BadFilesAreRefusedNamingFileAndLine) {
  Catalog c;
  try {
    parse_catalog_yaml("probes:\n  - id: x\n    family: nonsense\n    turns: [hi]\n    success: [compliance]\n", "mine.yaml", c);
    FAIL() << "an unknown family was accepted";
  } catch (const core::Error& e) {
    EXPECT_NE(std::string(e.what()).find("mine.yaml:2"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nonsense"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_catalog_yaml("probes:\n  - {id: x, family: jailbreak, success: [compliance]}\n", "m.yaml", c), core::Error);
  EXPECT_THROW(parse_catalog_yaml("probes:\n  - {id: x, family: jailbreak, turns: [a], success: [vibes]}\n", "m.yaml", c), core::Error);
  EXPECT_THROW(parse_catalog_yaml("probes:\n  - {id: x, family: direct-injection, turns: [a], success: [marker]}\n", "m.yaml", c),
               core::Error);  // the marker detector without a marker
  EXPECT_THROW(parse_catalog_yaml("probes: [\n", "m.yaml", c), core::Error);
  EXPECT_THROW(parse_catalog_yaml("transforms:\n  - {name: t, encoder: rot47}\n", "m.yaml", c), core::Error);
  EXPECT_THROW(parse_catalog_yaml("something_else: 1\n", "m.yaml", c), core::Error);
  // A good user file: a probe with a custom family member and a transform.
  Catalog ok;
  parse_catalog_yaml("probes:\n  - {id: my.probe, family: direct-injection, marker: MY-MARKER-9, turns: ['say {marker}'], success: [marker]}\n"
                     "transforms:\n  - {name: shout, encoder: identity, wrapper: 'LOUDLY: {payload}'}\n",
                     "ok.yaml", ok);
  ASSERT_EQ(ok.probes.size(), 1u);
  EXPECT_EQ(ok.probes[0].marker, "MY-MARKER-9");
  ASSERT_EQ(ok.transforms.size(), 1u);
}

TEST(RedteamCatalog, SelectorsPickFamiliesIdsAndPrefixes) {
  const auto catalog = expanded_catalog();
  const auto leak = select_probes(catalog.probes, {"data-leakage"});
  ASSERT_FALSE(leak.empty());
  for (const auto& p : leak) EXPECT_EQ(p.family, "data-leakage");
  const auto one = select_probes(catalog.probes, {"sysprompt.ignore-and-print"});
  ASSERT_EQ(one.size(), 1u);
  const auto prefixed = select_probes(catalog.probes, {"obf.*"});
  EXPECT_EQ(prefixed.size(), select_probes(catalog.probes, {"obfuscation"}).size());
  EXPECT_EQ(select_probes(catalog.probes, {}).size(), catalog.probes.size());
  EXPECT_THROW(select_probes(catalog.probes, {"no-such-family"}), core::Error);
}

TEST(RedteamCatalog, LoadsJailbreakBenchGoals) {
  const auto dir = test::source_dir() / ".." / "shared" / "data" / "llm" / "jailbreakbench" / "attack-artifacts";
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "no JailbreakBench artifacts at " << dir;
  const auto goals = load_jailbreakbench(dir);
  // JailbreakBench has 100 behaviours; every artifact file repeats them.
  EXPECT_GE(goals.size(), 100u);
  std::set<std::string> unique;
  std::size_t with_category = 0;
  for (const auto& g : goals) {
    unique.insert(g.goal);
    with_category += !g.category.empty();
    EXPECT_EQ(g.source.rfind("jailbreakbench:", 0), 0u);
  }
  EXPECT_EQ(unique.size(), goals.size());
  EXPECT_EQ(with_category, goals.size());
  EXPECT_THROW(load_jailbreakbench(test::source_dir() / "data" / "redteam"), core::Error);
}

}  // namespace
}  // namespace aegis::redteam
