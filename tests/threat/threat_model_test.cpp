// The ATLAS catalog as shipped, and the threat model's rules: which techniques an asset gets follows
// from its attributes, with mitigations from the catalog and the checks that test them.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <set>

#include "aegis/core/error.h"
#include "aegis/threat/threat.h"
#include "test_support.h"

namespace aegis::threat {
namespace {

std::vector<std::string> technique_ids(const ThreatModel& model, const std::string& asset) {
  std::vector<std::string> ids;
  for (const auto& a : model.assets)
    if (a.asset == asset)
      for (const auto& t : a.techniques) ids.push_back(t.id);
  return ids;
}

bool has(const std::vector<std::string>& ids, const std::string& id) { return std::find(ids.begin(), ids.end(), id) != ids.end(); }

ThreatModel model_of(const std::string& yaml) {
  auto load = parse_inventory(yaml, "/tmp/inventory.yaml");
  for (const auto& i : load.issues)
    if (i.severity == "error") ADD_FAILURE() << i.mark.line << ": " << i.message;
  const auto& catalog = AtlasCatalog::shipped();
  return build_threat_model(load.inventory, catalog, shipped_threat_rules(catalog));
}

TEST(AtlasCatalog, ShippedDistributionIsComplete) {
  const auto& catalog = AtlasCatalog::shipped();
  EXPECT_EQ(catalog.version(), "5.6.0");
  EXPECT_EQ(catalog.tactics().size(), 16u);
  EXPECT_EQ(catalog.techniques().size(), 170u);
  EXPECT_EQ(catalog.mitigations().size(), 35u);
  const auto* extract = catalog.technique("AML.T0024.002");
  ASSERT_NE(extract, nullptr);
  EXPECT_EQ(extract->name, "Extract AI Model");
  EXPECT_EQ(extract->parent, "AML.T0024");
  EXPECT_EQ(extract->tactics, std::vector<std::string>{"AML.TA0010"}) << "a sub-technique sits under its parent's tactics";
  for (const auto& t : catalog.techniques()) EXPECT_FALSE(t.tactics.empty()) << t.id;
  EXPECT_FALSE(catalog.mitigations_for("AML.T0015").empty());
}

TEST(AtlasCatalog, RejectsWhatIsNotAnAtlasFile) {
  EXPECT_THROW(AtlasCatalog::parse("just: text\n", "x.yaml"), core::Error);
  EXPECT_THROW(AtlasCatalog::parse(std::string(5000, '{'), "deep.yaml"), core::Error);
  EXPECT_THROW(AtlasCatalog::parse("matrices: [{tactics: [], techniques: []}]\n", "empty.yaml"), core::Error);
  const auto tiny = AtlasCatalog::parse(
      "version: 9.9.9\nmatrices:\n- id: ATLAS\n  tactics: [{id: AML.TA0001, name: Staging}]\n"
      "  techniques: [{id: AML.T9000, name: New, tactics: [AML.TA0001]}, {id: AML.T9000.001, name: Sub, subtechnique-of: AML.T9000}]\n",
      "tiny.yaml");
  EXPECT_EQ(tiny.version(), "9.9.9");
  EXPECT_EQ(tiny.technique("AML.T9000.001")->tactics, std::vector<std::string>{"AML.TA0001"});
}

TEST(ThreatModel, ShippedRulesNameRealTechniquesAndChecks) {
  const auto& catalog = AtlasCatalog::shipped();
  const auto rules = shipped_threat_rules(catalog);
  EXPECT_GE(rules.size(), 30u);
  std::set<std::string> checks_used;
  for (const auto& r : rules) {
    EXPECT_NE(catalog.technique(r.technique), nullptr) << r.technique;
    EXPECT_FALSE(r.rationale.empty());
    checks_used.insert(r.checks.begin(), r.checks.end());
  }
  for (auto check : all_checks()) EXPECT_TRUE(checks_used.contains(std::string(check))) << "no rule calls for " << check;
}

TEST(ThreatModel, TechniquesFollowTheAssetsAttributes) {
  const auto model = model_of(
      "assets:\n"
      "  - {id: credit, kind: model, files: [m.pt], exposure: external, endpoint: api, datasets: [loans]}\n"
      "  - {id: loans, kind: dataset, files: [l.csv], sensitivity: [pii, financial], source: internal}\n"
      "  - {id: api, kind: endpoint, url: 'http://x/v1', api: classifier, exposure: external}\n"
      "  - {id: internal-model, kind: model, files: [i.pt]}\n"
      "  - {id: bot, kind: endpoint, url: 'http://x/v1', api: openai-chat}\n"
      "  - {id: platform, kind: pipeline, stage: registry, files: [deploy]}\n");
  const auto credit = technique_ids(model, "credit");
  EXPECT_TRUE(has(credit, "AML.T0024.000")) << "trained on personal data and reachable: membership inference";
  EXPECT_TRUE(has(credit, "AML.T0024.001")) << "trained on PII: inversion";
  EXPECT_TRUE(has(credit, "AML.T0024.002"));
  EXPECT_TRUE(has(credit, "AML.T0015"));
  EXPECT_TRUE(has(credit, "AML.T0020")) << "it has training datasets";
  EXPECT_FALSE(has(credit, "AML.T0051.000")) << "not an LLM";
  const auto internal = technique_ids(model, "internal-model");
  EXPECT_TRUE(has(internal, "AML.T0011.000"));
  EXPECT_FALSE(has(internal, "AML.T0024.002")) << "no endpoint, internal: nobody can query it";
  EXPECT_FALSE(has(internal, "AML.T0040"));
  const auto bot = technique_ids(model, "bot");
  for (const char* id : {"AML.T0051.000", "AML.T0051.001", "AML.T0054", "AML.T0056", "AML.T0057"}) EXPECT_TRUE(has(bot, id)) << id;
  EXPECT_FALSE(has(bot, "AML.T0015"));
  const auto platform = technique_ids(model, "platform");
  EXPECT_TRUE(has(platform, "AML.T0035")) << "a registry hands out artifacts";
  EXPECT_TRUE(has(technique_ids(model, "loans"), "AML.T0036"));
  // Matrix order: techniques sorted by their first tactic's position in ATLAS.
  const auto& catalog = AtlasCatalog::shipped();
  auto position = [&](const std::string& id) {
    const auto& first = catalog.technique(id)->tactics.front();
    for (std::size_t i = 0; i < catalog.tactics().size(); ++i)
      if (catalog.tactics()[i].id == first) return i;
    return catalog.tactics().size();
  };
  for (std::size_t i = 1; i < credit.size(); ++i) EXPECT_LE(position(credit[i - 1]), position(credit[i]));
}

TEST(ThreatModel, MergedRulesCarryChecksMitigationsAndStride) {
  const auto model = model_of("assets:\n  - {id: m, kind: model, files: [m.pt], exposure: external, endpoint: 'http://x'}\n");
  const auto& techniques = model.assets.at(0).techniques;
  const auto it = std::find_if(techniques.begin(), techniques.end(), [](const ApplicableTechnique& t) { return t.id == "AML.T0024.002"; });
  ASSERT_NE(it, techniques.end());
  EXPECT_EQ(it->checks, (std::vector<std::string>{"extraction", "gateway-review"}));
  EXPECT_EQ(it->rationales.size(), 2u) << "two rules (has an endpoint, is external) both apply";
  EXPECT_FALSE(it->mitigations.empty()) << "mitigations come from the parent technique where the sub-technique has none";
  EXPECT_EQ(it->stride, std::vector<Stride>{Stride::InformationDisclosure});
}

TEST(ThreatModel, BadRuleFilesAreRefusedWithTheReason) {
  test::TempDir dir;
  const auto& catalog = AtlasCatalog::shipped();
  auto expect_error = [&](const std::string& text, const std::string& needle) {
    std::ofstream(dir.path / "rules.yaml") << text;
    try {
      load_threat_rules(dir.path / "rules.yaml", catalog);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const core::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error("rules:\n  - {technique: AML.T9999, rationale: x}\n", "AML.T9999");
  expect_error("rules:\n  - {technique: AML.T0015, rationale: x, checks: [fuzz]}\n", "fuzz");
  expect_error("rules:\n  - {technique: AML.T0015, rationale: x, when: {colour: red}}\n", "colour");
  expect_error("rules:\n  - {technique: AML.T0015}\n", "rationale");
  expect_error("nothing: here\n", "rules");
}

}  // namespace
}  // namespace aegis::threat
