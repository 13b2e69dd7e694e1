// The assessment report writers: sections, in-page links, embedded images, the NIST AI RMF section,
// the filled-in playbooks, escaping of hostile documents, partial documents, and the robustness SVG.
#include "aegis/assess/report_writer.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "aegis/core/base64.h"
#include "assess/report_test_documents.h"
#include "test_support.h"

namespace {

using nlohmann::json;
using aegis::assess::fill_playbooks;
using aegis::assess::html_escape;
using aegis::assess::nist_ai_rmf_section;
using aegis::assess::robustness_curve_svg;

std::string html_of(const json& document) {
  std::ostringstream out;
  aegis::assess::write_html_report(out, document);
  return out.str();
}
std::string markdown_of(const json& document) {
  std::ostringstream out;
  aegis::assess::write_markdown_report(out, document);
  return out.str();
}

std::vector<std::string> all_matches(const std::string& text, const std::string& pattern, int group = 1) {
  std::vector<std::string> found;
  const std::regex re(pattern);
  for (auto it = std::sregex_iterator(text.begin(), text.end(), re); it != std::sregex_iterator(); ++it)
    found.push_back((*it)[group].str());
  return found;
}

// Every href="#x" has exactly one element with id="x", and no id is used twice.
void expect_in_page_links_resolve(const std::string& html) {
  const auto ids = all_matches(html, R"re(\sid="([^"]*)")re");
  std::map<std::string, int> id_count;
  for (const auto& id : ids) ++id_count[id];
  for (const auto& [id, count] : id_count) EXPECT_EQ(count, 1) << "duplicate id " << id;
  const auto links = all_matches(html, R"re(href="#([^"]*)")re");
  EXPECT_FALSE(links.empty());
  for (const auto& link : links) EXPECT_EQ(id_count.count(link), 1u) << "in-page link #" << link << " has no target";
}

// The <img ...> tags, found without std::regex: a data: URI is far longer than libstdc++'s
// recursive regex matcher can take.
std::vector<std::string> img_tags(const std::string& html) {
  std::vector<std::string> tags;
  for (std::size_t at = html.find("<img "); at != std::string::npos; at = html.find("<img ", at + 1))
    tags.push_back(html.substr(at, html.find('>', at) - at + 1));
  return tags;
}

// The base64 payloads of data: URIs of one MIME type, found without std::regex.
std::vector<std::string> data_uri_payloads(const std::string& html, const std::string& mime) {
  std::vector<std::string> payloads;
  const std::string prefix = "data:" + mime + ";base64,";
  for (std::size_t at = html.find(prefix); at != std::string::npos; at = html.find(prefix, at + 1)) {
    const std::size_t start = at + prefix.size();
    std::size_t end = start;
    while (end < html.size() && (std::isalnum(static_cast<unsigned char>(html[end])) || html[end] == '+' || html[end] == '/' || html[end] == '='))
      ++end;
    payloads.push_back(html.substr(start, end - start));
  }
  return payloads;
}

bool lower_contains(std::string text, const std::string& needle) {
  std::transform(text.begin(), text.end(), text.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return text.find(needle) != std::string::npos;
}

// Tags balance: every <name ...> is closed by </name> in order, or self-closed; <?...?> and
// <!...> are declarations. Returns "" or what is wrong.
std::string unbalanced_tags(const std::string& xml) {
  std::vector<std::string> stack;
  std::size_t position = 0;
  while ((position = xml.find('<', position)) != std::string::npos) {
    const std::size_t end = xml.find('>', position);
    if (end == std::string::npos) return "unterminated tag at " + std::to_string(position);
    const std::string tag = xml.substr(position + 1, end - position - 1);
    position = end + 1;
    if (tag.empty()) return "empty tag";
    if (tag[0] == '?' || tag[0] == '!') continue;
    if (tag[0] == '/') {
      const std::string name = tag.substr(1);
      if (stack.empty() || stack.back() != name) return "</" + name + "> closes " + (stack.empty() ? "nothing" : stack.back());
      stack.pop_back();
      continue;
    }
    if (tag.back() == '/') continue;
    stack.push_back(tag.substr(0, tag.find_first_of(" \t\n")));
  }
  return stack.empty() ? "" : "unclosed <" + stack.back() + ">";
}

struct SvgPoint {
  int series;
  double eps, accuracy, cx, cy;
};
std::vector<SvgPoint> svg_points(const std::string& svg) {
  std::vector<SvgPoint> points;
  const std::regex re(R"re(<circle class="point" data-series="(\d+)" data-eps="([^"]+)" data-accuracy="([^"]+)" cx="([^"]+)" cy="([^"]+)")re");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it)
    points.push_back({std::stoi((*it)[1]), std::strtod((*it)[2].str().c_str(), nullptr), std::strtod((*it)[3].str().c_str(), nullptr),
                      std::strtod((*it)[4].str().c_str(), nullptr), std::strtod((*it)[5].str().c_str(), nullptr)});
  return points;
}

// The document with every string value made hostile (the original kept after the payload, so that
// references between assets still match), except the enumerations that decide which paths the
// writers take (kind, severity, state, risk level, API), and the PNG bytes.
json hostile_copy(const json& value) {
  const std::string payload = "<script>alert(1)</script>\"'</style><img src=x onerror=alert(2)>&amp;\x01\xff`|*";
  if (value.is_string()) return payload + value.get<std::string>();
  if (value.is_array()) {
    json out = json::array();
    for (const auto& item : value) out.push_back(hostile_copy(item));
    return out;
  }
  if (value.is_object()) {
    static const std::set<std::string> kKept = {"kind", "severity", "state", "level", "api", "roc.png"};
    json out = json::object();
    for (const auto& [key, item] : value.items()) out[key] = kKept.count(key) ? item : hostile_copy(item);
    return out;
  }
  return value;
}

TEST(AssessReportHtml, HasEverySectionAndTheirContents) {
  const json document = aegis::test::realistic_document();
  const std::string html = html_of(document);
  for (const char* id : {"summary", "assets", "atlas-matrix", "stride", "nist", "playbooks", "asset-fashion-classifier",
                         "asset-fashion-train", "asset-fashion-api", "asset-support-chat", "playbook-model-extraction",
                         "playbook-data-poisoning", "playbook-prompt-injection", "nist-MAP", "nist-MEASURE", "nist-MANAGE",
                         "nist-MEASURE-2-7"})
    EXPECT_NE(html.find(std::string("id=\"") + id + "\""), std::string::npos) << id;
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_NE(html.find("</html>"), std::string::npos);
  // Executive summary: counts, risk buckets, coverage, top findings (most severe first).
  EXPECT_NE(html.find("7 / 9"), std::string::npos);
  EXPECT_NE(html.find("(78%)"), std::string::npos);
  const auto critical = html.find("Indirect prompt injection overrides the system prompt");
  const auto medium = html.find("Membership inference AUC 0.71");
  ASSERT_NE(critical, std::string::npos);
  ASSERT_NE(medium, std::string::npos);
  EXPECT_LT(critical, medium);
  // Per asset: attributes, techniques with ATLAS links, checks with their reasons, evidence truncated.
  EXPECT_NE(html.find("href=\"https://atlas.mitre.org/techniques/AML.T0024.002\""), std::string::npos);
  EXPECT_NE(html.find("href=\"https://atlas.mitre.org/tactics/AML.TA0010\""), std::string::npos);
  EXPECT_NE(html.find("href=\"https://atlas.mitre.org/mitigations/AML.M0004\""), std::string::npos);
  EXPECT_NE(html.find("no <code>signature:</code> bundle file"), std::string::npos);
  EXPECT_NE(html.find("state-not-possible"), std::string::npos);
  EXPECT_NE(html.find("Evidence truncated"), std::string::npos);
  EXPECT_EQ(html.find("end-of-evidence-marker"), std::string::npos);
  // The matrix: a column per tactic in document order, cells coloured by state, a legend.
  const auto resource = html.find(">Resource Development<");
  const auto exfiltration = html.find(">Exfiltration<");
  ASSERT_NE(resource, std::string::npos);
  ASSERT_NE(exfiltration, std::string::npos);
  EXPECT_LT(resource, exfiltration);
  EXPECT_NE(html.find("class=\"cell cell-findings\""), std::string::npos);
  EXPECT_NE(html.find("class=\"cell cell-clean\""), std::string::npos);
  EXPECT_NE(html.find("class=\"cell cell-untested\""), std::string::npos);
  EXPECT_NE(html.find("class=\"legend\""), std::string::npos);
}

TEST(AssessReportHtml, IsSelfContainedAndEveryInPageLinkResolves) {
  const std::string html = html_of(aegis::test::realistic_document());
  expect_in_page_links_resolve(html);
  EXPECT_FALSE(lower_contains(html, "<script"));
  EXPECT_FALSE(lower_contains(html, "<link"));
  EXPECT_FALSE(lower_contains(html, "@import"));
  EXPECT_FALSE(lower_contains(html, "url("));
  for (const auto& image : img_tags(html)) EXPECT_EQ(image.rfind("<img src=\"data:", 0), 0u) << image.substr(0, 80);
  EXPECT_EQ(html.find(" src=\"http"), std::string::npos);
  EXPECT_NE(html.find("Content-Security-Policy"), std::string::npos);
}

TEST(AssessReportHtml, ImagesAreDataUrisThatDecodeWithAltText) {
  const std::string html = html_of(aegis::test::realistic_document());
  const auto images = img_tags(html);
  ASSERT_EQ(images.size(), 2u) << "one robustness curve (linf; the l2 result has no eps) and one ROC plot";
  int png = 0, svg = 0;
  for (const auto& image : images) {
    const std::size_t alt_at = image.find(" alt=\"");
    ASSERT_NE(alt_at, std::string::npos) << image.substr(0, 200);
    const std::string alt = image.substr(alt_at + 6, image.find('"', alt_at + 6) - alt_at - 6);
    EXPECT_GT(alt.size(), 20u);
    const bool is_png = image.rfind("<img src=\"data:image/png;base64,", 0) == 0;
    const bool is_svg = image.rfind("<img src=\"data:image/svg+xml;base64,", 0) == 0;
    ASSERT_TRUE(is_png || is_svg) << image.substr(0, 200);
    const auto payloads = data_uri_payloads(image, is_png ? "image/png" : "image/svg+xml");
    ASSERT_EQ(payloads.size(), 1u);
    EXPECT_EQ(image[image.find(";base64,") + 8 + payloads[0].size()], '"') << "the payload is base64 up to the quote";
    const auto bytes = aegis::core::decode_base64(payloads[0]);
    ASSERT_TRUE(bytes.has_value());
    const std::string decoded(bytes->begin(), bytes->end());
    if (is_png) {
      ++png;
      EXPECT_EQ(decoded.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
      EXPECT_NE(alt.find("ROC"), std::string::npos);
    } else {
      ++svg;
      EXPECT_EQ(decoded.rfind("<?xml", 0), 0u);
      EXPECT_NE(decoded.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
      EXPECT_EQ(unbalanced_tags(decoded), "");
      EXPECT_NE(alt.find("Fashion-MNIST CNN"), std::string::npos);
    }
  }
  EXPECT_EQ(png, 1);
  EXPECT_EQ(svg, 1);
}

TEST(AssessReportHtml, OneRobustnessCurvePerNorm) {
  json document = aegis::test::realistic_document();
  auto& results = document["assets"][0]["checks"][0]["results"]["results"];
  results.push_back({{"attack", "pgd"}, {"norm", "l2"}, {"eps", 1.5}, {"robust_accuracy", 0.2}, {"success_rate", 0.7}});
  const std::string html = html_of(document);
  EXPECT_EQ(data_uri_payloads(html, "image/svg+xml").size(), 2u);
  EXPECT_NE(html.find("perturbation budget (l2)"), std::string::npos);
  EXPECT_NE(html.find("perturbation budget (linf)"), std::string::npos);
}

TEST(AssessReportHtml, BrokenArtifactIsNotEmbedded) {
  json document = aegis::test::realistic_document();
  document["assets"][0]["checks"][1]["artifacts"]["roc.png"] = aegis::core::encode_base64(std::string_view("GIF89a not a png"));
  document["assets"][0]["checks"][1]["artifacts"]["extra.png"] = "%%% not base64 \" onerror=x";
  const std::string html = html_of(document);
  EXPECT_EQ(data_uri_payloads(html, "image/png").size(), 0u);
  EXPECT_EQ(html.find("onerror"), std::string::npos);
}

TEST(AssessReportNist, ListsRealSubcategoriesWithTheCoreText) {
  std::ifstream core_file(aegis::test::source_dir() / "data/nist/ai_rmf_core.json");
  const json core = json::parse(core_file);
  std::map<std::string, std::string> core_text;
  for (const auto& function : core["functions"])
    for (const auto& category : function["categories"])
      for (const auto& subcategory : category["subcategories"]) core_text[subcategory["id"]] = subcategory["text"];
  ASSERT_EQ(core_text.size(), 72u);

  const json section = nist_ai_rmf_section(aegis::test::realistic_document());
  std::vector<std::string> functions;
  std::set<std::string> ids;
  for (const auto& function : section["functions"]) {
    functions.push_back(function["id"]);
    for (const auto& subcategory : function["subcategories"]) {
      const std::string id = subcategory["id"];
      ids.insert(id);
      ASSERT_EQ(core_text.count(id), 1u) << id;
      EXPECT_EQ(subcategory["text"], core_text[id]) << id;
      EXPECT_EQ(id.rfind(function["id"].get<std::string>() + " ", 0), 0u) << id << " under " << function["id"];
      EXPECT_FALSE(subcategory["evidence"].empty()) << id;
    }
  }
  EXPECT_EQ(functions, (std::vector<std::string>{"MAP", "MEASURE", "MANAGE"}));
  // From findings and tested techniques; "MS-2.10" is read as MEASURE 2.10; the fixed set from the
  // assessment itself; MANAGE 2.4 comes from a tested technique; untested AML.T0020 gives nothing extra.
  for (const char* id : {"MEASURE 2.7", "MEASURE 2.10", "MANAGE 2.4", "MAP 2.1", "MAP 4.1", "MEASURE 1.1", "MEASURE 2.1",
                         "MANAGE 1.4", "MANAGE 2.3"})
    EXPECT_EQ(ids.count(id), 1u) << id;
  EXPECT_EQ(section["unmatched"], json::array({"MEASURE 9.9"}));
  EXPECT_EQ(section["aliases"], (json{{"MS-2.10", "MEASURE 2.10"}}));

  bool robustness_evidence = false;
  for (const auto& function : section["functions"])
    for (const auto& subcategory : function["subcategories"])
      if (subcategory["id"] == "MEASURE 2.7")
        for (const auto& evidence : subcategory["evidence"])
          robustness_evidence |= evidence.value("source", "") == "finding" && evidence.value("asset", "") == "fashion-classifier" &&
                                  evidence.value("check", "") == "robustness" && evidence.value("rule_id", "") == "attack.robust-accuracy";
  EXPECT_TRUE(robustness_evidence);

  const std::string html = html_of(aegis::test::realistic_document());
  EXPECT_NE(html.find(html_escape(core_text["MEASURE 2.7"])), std::string::npos);
  EXPECT_NE(html.find(html_escape(core_text["MEASURE 2.10"])), std::string::npos);
  EXPECT_NE(html.find("<a href=\"#nist-MEASURE-2-10\">MS-2.10</a>"), std::string::npos) << "an alias links to its subcategory";
  EXPECT_NE(html.find("MEASURE 9.9"), std::string::npos);
  EXPECT_EQ(html.find("href=\"#nist-MEASURE-9-9\""), std::string::npos);
}

TEST(AssessReportNist, GovernOnlyWhenReferenced) {
  json document = aegis::test::realistic_document();
  document["assets"][0]["findings"][0]["nist_ai_rmf"].push_back("gv-1.6");
  const json section = nist_ai_rmf_section(document);
  ASSERT_FALSE(section["functions"].empty());
  EXPECT_EQ(section["functions"][0]["id"], "GOVERN");
  EXPECT_EQ(section["functions"][0]["subcategories"][0]["id"], "GOVERN 1.6");
}

TEST(AssessReportPlaybooks, FilledInForTheAssetsTheyApplyTo) {
  const json filled = fill_playbooks(aegis::test::realistic_document());
  std::map<std::string, std::vector<std::string>> assets_by_playbook;
  const std::regex placeholder(R"(\{[a-z_]+\})");
  for (const auto& playbook : filled["playbooks"])
    for (const auto& target : playbook["assets"]) {
      assets_by_playbook[playbook["id"]].push_back(target["asset"]);
      std::vector<std::string> phases;
      for (const auto& phase : target["phases"]) {
        phases.push_back(phase["phase"]);
        EXPECT_FALSE(phase["steps"].empty()) << playbook["id"] << " " << phase["phase"];
        for (const auto& step : phase["steps"]) {
          const std::string text = step;
          EXPECT_FALSE(std::regex_search(text, placeholder)) << text;
        }
      }
      EXPECT_EQ(phases, (std::vector<std::string>{"detect", "contain", "eradicate", "recover", "lessons-learned"}));
    }
  EXPECT_EQ(assets_by_playbook["model-extraction"], (std::vector<std::string>{"fashion-classifier"}));
  EXPECT_EQ(assets_by_playbook["data-poisoning"], (std::vector<std::string>{"fashion-classifier", "fashion-train"}));
  EXPECT_EQ(assets_by_playbook["prompt-injection"], (std::vector<std::string>{"support-chat"}));

  const auto steps_of = [&filled](const std::string& playbook_id, const std::string& asset) {
    std::string all;
    for (const auto& playbook : filled["playbooks"])
      if (playbook["id"] == playbook_id)
        for (const auto& target : playbook["assets"])
          if (target["asset"] == asset)
            for (const auto& phase : target["phases"])
              for (const auto& step : phase["steps"]) all += step.get<std::string>() + "\n";
    return all;
  };
  const std::string extraction = steps_of("model-extraction", "fashion-classifier");
  EXPECT_NE(extraction.find("https://api.example.com/v1/classify"), std::string::npos);
  EXPECT_NE(extraction.find("/etc/aegis/gateway.yaml"), std::string::npos);
  EXPECT_NE(extraction.find("gateway.extraction-suspected"), std::string::npos);
  EXPECT_NE(extraction.find("`aegis audit verify STORE`"), std::string::npos);
  EXPECT_NE(extraction.find("`aegis verify /models/fashion/model.pt --signature /models/fashion/model.sig`"), std::string::npos);
  EXPECT_NE(extraction.find("vision@example.com"), std::string::npos);
  EXPECT_NE(extraction.find("A surrogate reaches 93% agreement"), std::string::npos);
  EXPECT_EQ(extraction.find("Membership inference"), std::string::npos) << "membership is not model extraction";

  const std::string poisoning = steps_of("data-poisoning", "fashion-train");
  EXPECT_NE(poisoning.find("`aegis poison --model /models/fashion/model.pt --data /data/fashion/train.npz"), std::string::npos);
  EXPECT_NE(poisoning.find("data@example.com"), std::string::npos);

  const std::string injection = steps_of("prompt-injection", "support-chat");
  EXPECT_NE(injection.find("`aegis guard scan"), std::string::npos);
  EXPECT_NE(injection.find("`aegis redteam --target https://chat.example.com/v1 --model support-7b"), std::string::npos);
  EXPECT_NE(injection.find("No Aegis gateway config is recorded for Support assistant"), std::string::npos);
  EXPECT_NE(injection.find("Indirect prompt injection"), std::string::npos);

  // The quoted findings are the relevant ones (by ATLAS technique, sub-techniques included, or check).
  for (const auto& playbook : filled["playbooks"])
    if (playbook["id"] == "prompt-injection") {
      ASSERT_EQ(playbook["assets"][0]["findings"].size(), 1u);
      EXPECT_EQ(playbook["assets"][0]["findings"][0]["rule_id"], "redteam.injection");
    }
}

TEST(AssessReportPlaybooks, NoneForAssetsTheyDoNotFit) {
  const json document = {{"assets", json::array({{{"id", "batch-model"}, {"kind", "model"}, {"exposure", "internal"}},
                                                  {{"id", "infra"}, {"kind", "pipeline"}}})}};
  EXPECT_TRUE(fill_playbooks(document)["playbooks"].empty());
  const std::string html = html_of(document);
  EXPECT_NE(html.find("No playbook applies"), std::string::npos);
  // An external model without a recorded endpoint, owner or signature gets the fallback steps.
  const json external = {{"assets", json::array({{{"id", "m"}, {"kind", "model"}, {"exposure", "external"}}})}};
  const json filled = fill_playbooks(external);
  ASSERT_EQ(filled["playbooks"].size(), 1u);
  const std::string text = filled["playbooks"][0].dump();
  EXPECT_NE(text.find("No Aegis gateway config is recorded"), std::string::npos);
  EXPECT_NE(text.find("No owner is recorded for m"), std::string::npos);
  EXPECT_NE(text.find("aegis sign MODEL"), std::string::npos);
}

TEST(AssessReportEscaping, HtmlEscapeNeutralisesHostileText) {
  EXPECT_EQ(html_escape("<script>alert(1)</script>"), "&lt;script&gt;alert(1)&lt;/script&gt;");
  EXPECT_EQ(html_escape("\"'&"), "&quot;&#39;&amp;");
  EXPECT_EQ(html_escape("</style><style>"), "&lt;/style&gt;&lt;style&gt;");
  EXPECT_EQ(html_escape("caf\xC3\xA9 \xE2\x9C\x93"), "caf\xC3\xA9 \xE2\x9C\x93");  // valid UTF-8 kept
  const std::string replacement = "\xEF\xBF\xBD";
  EXPECT_EQ(html_escape(std::string("a\0b", 3)), "a" + replacement + "b");
  EXPECT_EQ(html_escape("\x01\x7F"), replacement + replacement);
  EXPECT_EQ(html_escape("\xFF"), replacement);                // not UTF-8
  EXPECT_EQ(html_escape("\xC0\xBC"), replacement + replacement);  // overlong '<'
  EXPECT_EQ(html_escape("\xED\xA0\x80"), replacement + replacement + replacement);  // surrogate
  EXPECT_EQ(html_escape("\xC2\x85"), replacement);            // C1 control
  EXPECT_EQ(html_escape("\xEF\xBF\xBF"), replacement);        // XML non-character
  EXPECT_EQ(html_escape("\xE2\x82"), replacement + replacement);  // truncated sequence
  EXPECT_EQ(html_escape("tab\tnew\nline"), "tab\tnew\nline");
}

TEST(AssessReportEscaping, HostileDocumentCannotInjectMarkup) {
  const json document = hostile_copy(aegis::test::realistic_document());
  const std::string html = html_of(document);
  EXPECT_FALSE(lower_contains(html, "<script"));
  EXPECT_FALSE(lower_contains(html, "<img src=x"));
  EXPECT_EQ(all_matches(html, R"re((</style>))re").size(), 1u);
  EXPECT_EQ(html.find('\x01'), std::string::npos);
  EXPECT_EQ(html.find('\xff'), std::string::npos);
  EXPECT_NE(html.find("&lt;script&gt;alert(1)"), std::string::npos);
  expect_in_page_links_resolve(html);
  // Hostile ids and names do not break anchors, and no link is built from a hostile ATLAS id.
  EXPECT_EQ(html.find("href=\"https://atlas.mitre.org/techniques/<"), std::string::npos);
  // The SVG inside carries the hostile attack names escaped.
  const auto svgs = data_uri_payloads(html, "image/svg+xml");
  EXPECT_EQ(svgs.size(), 1u);
  for (const auto& encoded : svgs) {
    const auto bytes = aegis::core::decode_base64(encoded);
    ASSERT_TRUE(bytes.has_value());
    const std::string svg(bytes->begin(), bytes->end());
    EXPECT_FALSE(lower_contains(svg, "<script"));
    EXPECT_EQ(unbalanced_tags(svg), "");
  }
  const std::string markdown = markdown_of(document);
  EXPECT_FALSE(lower_contains(markdown, "<script"));
  EXPECT_FALSE(lower_contains(markdown, "<img"));
  EXPECT_NE(markdown.find("&lt;script&gt;"), std::string::npos);
}

TEST(AssessReportHtml, ManyFindingsBecomeRowsThenACount) {
  json document = aegis::test::realistic_document();
  auto& findings = document["assets"][1]["findings"];
  for (int i = 0; i < 620; ++i)
    findings.push_back(aegis::test::finding("pii.email", i == 600 ? "critical" : "medium", "EMAIL_ADDRESS in data row " + std::to_string(i),
                                            "pii", {"AML.T0057"}, {"MEASURE 2.10"}, "j***@example.com", "/data/fashion/train.npz"));
  const std::string html = html_of(document);
  expect_in_page_links_resolve(html);
  EXPECT_EQ(all_matches(html, R"re((<article class="finding[^"]*" id="finding-fashion-train-))re").size(), 50u);
  EXPECT_NE(html.find("<tr id=\"finding-fashion-train-51\">"), std::string::npos);
  EXPECT_NE(html.find("<tr id=\"finding-fashion-train-500\">"), std::string::npos);
  EXPECT_EQ(html.find("id=\"finding-fashion-train-501\""), std::string::npos);
  EXPECT_NE(html.find("120 more findings are not listed here"), std::string::npos);
  // Listed most severe first, so that the cut drops medium ones: the critical row 600 leads, and
  // rows 499 and later are the ones left out.
  const auto first_article = html.find("id=\"finding-fashion-train-1\"");
  ASSERT_NE(first_article, std::string::npos);
  EXPECT_EQ(html.find("EMAIL_ADDRESS in data row 600", first_article), html.find("EMAIL_ADDRESS in data row", first_article));
  EXPECT_NE(html.find("<a href=\"#finding-fashion-train-1\">EMAIL_ADDRESS in data row 600</a>"), std::string::npos)
      << "the critical one is among the top findings";
  EXPECT_NE(html.find("EMAIL_ADDRESS in data row 498<"), std::string::npos);
  EXPECT_EQ(html.find("EMAIL_ADDRESS in data row 499<"), std::string::npos);
  const std::string markdown = markdown_of(document);
  EXPECT_NE(markdown.find("| <a id=\"finding-fashion-train-51\"></a>**medium** | EMAIL\\_ADDRESS in data row 49 |"), std::string::npos);
  EXPECT_NE(markdown.find("120 more findings are not listed here"), std::string::npos);
}

TEST(AssessReportEscaping, CollidingAssetIdsGetDistinctAnchors) {
  json document = aegis::test::realistic_document();
  document["assets"][1]["id"] = "fashion.classifier";  // slugs to the same anchor as fashion-classifier
  document["assets"][2]["id"] = "fashion-classifier";  // a duplicate id outright
  const std::string html = html_of(document);
  expect_in_page_links_resolve(html);
  EXPECT_NE(html.find("id=\"asset-fashion-classifier\""), std::string::npos);
  EXPECT_NE(html.find("id=\"asset-fashion-classifier-2\""), std::string::npos);
  EXPECT_NE(html.find("id=\"asset-fashion-classifier-3\""), std::string::npos);
}

TEST(AssessReportPartial, MissingKeysAndWrongTypesRenderAsEmpty) {
  const std::vector<json> documents = {
      json(),
      json::array({1, 2}),
      json("text"),
      json::object(),
      {{"assets", "not a list"}, {"summary", 3}, {"tactics", {{"x", 1}}}},
      {{"assets", json::array({nullptr, 1, "a", json::array(), json::object()})}},
      {{"assets", json::array({{{"id", 5},
                                {"kind", json::array()},
                                {"findings", json::array({nullptr, 3, {{"severity", 4}, {"title", json::object()},
                                                                        {"evidence", {{"deep", {1, 2, "\xff"}}}},
                                                                        {"location", "here"}, {"atlas", "AML.T0015"}}})},
                                {"checks", json::array({{{"results", {{"results", "bad"}, {"attacks", 4}}}},
                                                        {{"results", {{"results", json::array({{{"eps", "x"}}, nullptr})}}},
                                                         {"artifacts", {{"roc.png", 12}, {"a.png", "!!!"}}}},
                                                        nullptr})},
                                {"techniques", json::array({nullptr, {{"mitigations", "AML.M0002"}}})},
                                {"risk", json::array()},
                                {"coverage", {{"applicable", "nine"}}}}})},
       {"summary", {{"counts", {{"high", "many"}, {"low", -3}}}}},
       {"tactics", json::array({{{"techniques", json::array({nullptr, {{"findings", "x"}}})}}, 7})},
       {"stride", json::array({{{"techniques", 1}}})}},
      {{"assessment", {{"status", "interrupted"}}}, {"findings", json::array({{{"asset", "gone"}, {"nist_ai_rmf", {"MAP 1.1"}}}})}},
  };
  for (const auto& document : documents) {
    SCOPED_TRACE(document.dump(-1, ' ', false, json::error_handler_t::replace).substr(0, 200));
    std::string html, markdown;
    ASSERT_NO_THROW(html = html_of(document));
    ASSERT_NO_THROW(markdown = markdown_of(document));
    ASSERT_NO_THROW(nist_ai_rmf_section(document));
    ASSERT_NO_THROW(fill_playbooks(document));
    for (const char* id : {"summary", "assets", "atlas-matrix", "nist", "playbooks"})
      EXPECT_NE(html.find(std::string("id=\"") + id + "\""), std::string::npos) << id;
    expect_in_page_links_resolve(html);
    EXPECT_NE(html.find("</html>"), std::string::npos);
    EXPECT_NE(markdown.find("## Executive summary"), std::string::npos);
  }
  // An interrupted assessment says so; a flat findings list still gives NIST evidence.
  const std::string interrupted = html_of(documents.back());
  EXPECT_NE(interrupted.find("This assessment is <strong>interrupted</strong>"), std::string::npos);
  EXPECT_NE(interrupted.find("id=\"nist-MAP-1-1\""), std::string::npos);
}

TEST(AssessReportMarkdown, SameSectionsNoImagesAndLinksResolve) {
  const std::string markdown = markdown_of(aegis::test::realistic_document());
  for (const char* heading : {"## Executive summary", "## Assets", "### Fashion-MNIST CNN", "## MITRE ATLAS coverage matrix",
                              "## NIST AI RMF subcategories addressed", "### MEASURE", "## Incident-response playbooks",
                              "### Model extraction", "#### Findings (3)"})
    EXPECT_NE(markdown.find(heading), std::string::npos) << heading;
  for (const char* image_text : {";base64,", "data:image"}) {
    const auto at = markdown.find(image_text);
    EXPECT_EQ(at, std::string::npos) << markdown.substr(at < 200 ? 0 : at - 200, 400);
  }
  EXPECT_NE(markdown.find("see the HTML report"), std::string::npos);
  EXPECT_NE(markdown.find("[AML.T0024.002](https://atlas.mitre.org/techniques/AML.T0024.002)"), std::string::npos);
  EXPECT_NE(markdown.find("`aegis audit verify STORE`"), std::string::npos);
  std::set<std::string> anchors;
  for (const auto& id : all_matches(markdown, R"re(<a id="([^"]+)"></a>)re")) EXPECT_TRUE(anchors.insert(id).second) << id;
  const auto links = all_matches(markdown, R"re(\]\(#([^)]+)\))re");
  EXPECT_GT(links.size(), 10u);
  for (const auto& link : links) EXPECT_EQ(anchors.count(link), 1u) << link;
}

TEST(AssessReportSvg, CurvesAreBalancedAndMonotonicInEps) {
  const json results = aegis::test::realistic_document()["assets"][0]["checks"][0]["results"];
  const std::string svg = robustness_curve_svg(results);
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_EQ(unbalanced_tags(svg), "");
  for (const char* part : {"robust accuracy", "perturbation budget (eps)", "fgsm (linf)", "pgd (linf)", "class=\"legend\""})
    EXPECT_NE(svg.find(part), std::string::npos) << part;
  EXPECT_EQ(svg.find("deepfool"), std::string::npos) << "a result without eps has no place on the eps axis";

  const auto points = svg_points(svg);
  std::map<int, std::vector<SvgPoint>> by_series;
  for (const auto& point : points) by_series[point.series].push_back(point);
  ASSERT_EQ(by_series.size(), 2u);
  for (const auto& [series, list] : by_series) {
    ASSERT_EQ(list.size(), 4u) << "clean accuracy at eps 0 plus three budgets";
    EXPECT_EQ(list.front().eps, 0.0);
    EXPECT_DOUBLE_EQ(list.front().accuracy, 0.91);
    for (std::size_t i = 1; i < list.size(); ++i) {
      EXPECT_GT(list[i].eps, list[i - 1].eps);
      EXPECT_GT(list[i].cx, list[i - 1].cx);
      // Lower accuracy is drawn lower (larger y), in proportion.
      EXPECT_EQ(list[i].accuracy < list[i - 1].accuracy, list[i].cy > list[i - 1].cy);
    }
  }
  // Same eps, same x whichever series; same accuracy, same y.
  EXPECT_DOUBLE_EQ(by_series[0][2].cx, by_series[1][2].cx);
  EXPECT_DOUBLE_EQ(by_series[0][0].cy, by_series[1][0].cy);
}

TEST(AssessReportSvg, EmptyAndExtremeResultsStillDrawAValidChart) {
  for (const json& results : {json(), json::object(), json{{"results", json::array()}},
                              json{{"results", json::array({{{"attack", "a"}, {"eps", 1e308}, {"robust_accuracy", 2.0}},
                                                            {{"attack", "a"}, {"eps", 5e-324}, {"robust_accuracy", -1.0}},
                                                            {{"attack", "b"}, {"eps", -1.0}, {"robust_accuracy", 0.5}},
                                                            {{"attack", "c"}, {"eps", std::numeric_limits<double>::quiet_NaN()},
                                                             {"robust_accuracy", 0.5}}})}}}) {
    const std::string svg = robustness_curve_svg(results);
    EXPECT_EQ(unbalanced_tags(svg), "") << results.dump();
    EXPECT_EQ(svg.find("nan"), std::string::npos) << svg;
    EXPECT_EQ(svg.find("inf"), std::string::npos) << svg;
    for (const auto& point : svg_points(svg)) {
      EXPECT_GE(point.cy, 0.0);
      EXPECT_LE(point.cy, 460.0);
      EXPECT_GE(point.cx, 0.0);
      EXPECT_LE(point.cx, 760.0);
    }
  }
  EXPECT_NE(robustness_curve_svg(json::object()).find("no results with a perturbation budget"), std::string::npos);
}

}  // namespace
