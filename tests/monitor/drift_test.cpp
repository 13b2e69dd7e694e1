// Drift statistics against scipy/numpy computed at test time on data the test generates, the
// Evidently default-test rule, and drift detection on real Fashion-MNIST images.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "aegis/core/error.h"
#include "aegis/models/dataset.h"
#include "aegis/models/torchscript_classifier.h"
#include "aegis/monitor/drift.h"
#include "test_support.h"

namespace aegis::monitor {
namespace {

using nlohmann::json;

// Runs a Python script with Debian's python3 (which has numpy and scipy) and parses its stdout as JSON.
json run_python(const std::filesystem::path& folder, const std::string& script, const json& input) {
  const auto script_path = folder / "reference.py", input_path = folder / "input.json";
  std::ofstream(script_path) << script;
  std::ofstream(input_path) << input.dump();
  const std::string command = "/usr/bin/python3 " + script_path.string() + " " + input_path.string();
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) throw std::runtime_error("cannot run " + command);
  std::string out;
  char buffer[4096];
  while (std::size_t got = std::fread(buffer, 1, sizeof buffer, pipe)) out.append(buffer, got);
  const int status = pclose(pipe);
  if (status != 0) throw std::runtime_error("python failed (" + std::to_string(status) + "): " + out);
  return json::parse(out);
}

std::vector<double> normal_sample(std::size_t n, double mean, double sd, std::mt19937_64& rng, double round_to = 0) {
  std::normal_distribution<double> draw(mean, sd);
  std::vector<double> out(n);
  for (double& v : out) {
    v = draw(rng);
    if (round_to > 0) v = std::round(v / round_to) * round_to;  // ties, as real data has them
  }
  return out;
}

std::vector<std::int64_t> category_sample(std::size_t n, const std::vector<double>& weights, std::mt19937_64& rng) {
  std::discrete_distribution<std::int64_t> draw(weights.begin(), weights.end());
  std::vector<std::int64_t> out(n);
  for (auto& v : out) v = draw(rng);
  return out;
}

// The reference semantics, written with scipy/numpy the way Evidently calls them.
constexpr const char* kReferenceScript = R"PY(
import json, sys
import numpy as np
from scipy import stats
from scipy.spatial import distance
cases = json.load(open(sys.argv[1]))
out = []
def shares(ref, cur):
    keys = sorted(set(ref) | set(cur))
    r = np.array([ref.count(k) for k in keys], float)
    c = np.array([cur.count(k) for k in keys], float)
    return r, c
for case in cases:
    a = np.array(case["reference"], float); b = np.array(case["current"], float)
    kind = case["kind"]
    if kind == "ks":
        res = stats.ks_2samp(a, b)
        out.append([float(res.statistic), float(res.pvalue)])
    elif kind == "ks_asymp":
        res = stats.ks_2samp(a, b, method="asymp")
        out.append([float(res.statistic), float(res.pvalue)])
    elif kind == "wasserstein":
        out.append([float(stats.wasserstein_distance(a, b) / max(np.std(a), 0.001)), None])
    elif kind == "chisquare":
        r, c = shares(list(a), list(b))
        res = stats.chisquare(c, r * len(b) / len(a))
        out.append([float(res.statistic), float(res.pvalue)])
    elif kind == "z":
        keys = sorted(set(a) | set(b))
        p1 = np.mean(a != keys[0]); p2 = np.mean(b != keys[0])
        P = (p1 * len(a) + p2 * len(b)) / (len(a) + len(b))
        z = (p1 - p2) / np.sqrt(P * (1 - P) * (1 / len(a) + 1 / len(b)))
        out.append([float(z), float(2 * (1 - stats.norm.cdf(abs(z))))])
    elif kind == "jensenshannon":
        if len(np.unique(a)) > 20:
            edges = np.histogram_bin_edges(np.concatenate([a, b]), bins="sturges")
            r = np.histogram(a, edges)[0] / len(a); c = np.histogram(b, edges)[0] / len(b)
        else:
            r, c = shares(list(a), list(b)); r /= len(a); c /= len(b)
        out.append([float(distance.jensenshannon(r, c, 2)), None])
    elif kind == "psi":
        edges = np.unique(np.quantile(a, np.arange(1, 10) / 10))
        r = np.bincount(np.searchsorted(edges, a, side="right"), minlength=len(edges) + 1) / len(a)
        c = np.bincount(np.searchsorted(edges, b, side="right"), minlength=len(edges) + 1) / len(b)
        for s in (r, c):
            m = s[s > 0].min()
            s[s == 0] = m / 1e6 if m <= 1e-4 else 1e-4
        out.append([float(np.sum((r - c) * np.log(r / c))), None])
print(json.dumps(out))
)PY";

struct Case {
  std::string kind;
  std::vector<double> reference, current;
};

TEST(MonitorDrift, StatisticsMatchScipyOnGeneratedSamples) {
  std::mt19937_64 rng(20261127);
  std::vector<Case> cases;
  // KS: equal and unequal sizes, no shift and shifts, ties from rounding, tiny samples.
  cases.push_back({"ks", normal_sample(200, 0, 1, rng), normal_sample(200, 0, 1, rng)});
  cases.push_back({"ks", normal_sample(300, 0, 1, rng), normal_sample(170, 0.3, 1, rng)});
  cases.push_back({"ks", normal_sample(1000, 0, 1, rng, 0.25), normal_sample(777, 0.1, 1.2, rng, 0.25)});
  cases.push_back({"ks", normal_sample(7, 0, 1, rng), normal_sample(5, 1, 1, rng)});
  cases.push_back({"ks", normal_sample(40, 0, 1, rng), normal_sample(60, 2, 1, rng)});
  cases.push_back({"ks_asymp", normal_sample(5000, 0, 1, rng), normal_sample(4000, 0.05, 1, rng)});
  cases.push_back({"wasserstein", normal_sample(1500, 0, 2, rng), normal_sample(1200, 0.3, 2.5, rng)});
  cases.push_back({"wasserstein", normal_sample(300, 5, 1, rng, 0.5), normal_sample(900, 5, 1, rng, 0.5)});
  cases.push_back({"psi", normal_sample(2000, 0, 1, rng), normal_sample(1500, 0.4, 1, rng)});
  cases.push_back({"psi", normal_sample(500, 0, 1, rng, 1.0), normal_sample(500, 0.2, 1, rng, 1.0)});
  cases.push_back({"jensenshannon", normal_sample(2000, 0, 1, rng), normal_sample(1500, 0.5, 1, rng)});
  cases.push_back({"jensenshannon", normal_sample(1500, 0, 1, rng, 1.0), normal_sample(1200, 0.3, 1, rng, 1.0)});
  for (const auto& [n, m, w1, w2] : std::vector<std::tuple<int, int, std::vector<double>, std::vector<double>>>{
           {600, 400, {5, 3, 2, 1}, {4, 3, 3, 2}}, {1000, 1000, {1, 1, 1, 1, 1}, {1, 1, 1, 1, 1}}}) {
    Case c{"chisquare", {}, {}};
    for (auto v : category_sample(n, w1, rng)) c.reference.push_back(static_cast<double>(v));
    for (auto v : category_sample(m, w2, rng)) c.current.push_back(static_cast<double>(v));
    cases.push_back(c);
  }
  Case z{"z", {}, {}};
  for (auto v : category_sample(800, {7, 3}, rng)) z.reference.push_back(static_cast<double>(v));
  for (auto v : category_sample(500, {6, 4}, rng)) z.current.push_back(static_cast<double>(v));
  cases.push_back(z);

  json input = json::array();
  for (const auto& c : cases) input.push_back({{"kind", c.kind}, {"reference", c.reference}, {"current", c.current}});
  test::TempDir dir("aegis_drift");
  const json expected = run_python(dir.path, kReferenceScript, input);
  ASSERT_EQ(expected.size(), cases.size());

  for (std::size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    SCOPED_TRACE(c.kind + " case " + std::to_string(i));
    const double want = expected[i][0].get<double>();
    const bool has_p = !expected[i][1].is_null();
    const double want_p = has_p ? expected[i][1].get<double>() : 0;
    std::vector<std::int64_t> ri(c.reference.begin(), c.reference.end()), ci(c.current.begin(), c.current.end());
    if (c.kind == "ks" || c.kind == "ks_asymp") {
      const auto got = ks_two_sample(c.reference, c.current);
      EXPECT_NEAR(got.statistic, want, 1e-12);
      // Exact p-values agree to rounding; our asymptotic form (Stephens' correction) and scipy's
      // (the one-sample exact distribution at n = nm/(n+m)) are different approximations.
      if (c.kind == "ks") {
        EXPECT_NEAR(got.p_value, want_p, 1e-9 + 1e-7 * want_p);
      } else {
        EXPECT_NEAR(got.p_value, want_p, 0.02);
      }
    } else if (c.kind == "wasserstein") {
      const auto got = numeric_drift(c.reference, c.current, DriftTest::Wasserstein);
      EXPECT_NEAR(got.statistic, want, 1e-9);
      EXPECT_TRUE(std::isnan(got.p_value));
      EXPECT_EQ(got.drifted, want >= 0.1);
    } else if (c.kind == "psi") {
      EXPECT_NEAR(population_stability_index(c.reference, c.current), want, 1e-9);
      EXPECT_NEAR(numeric_drift(c.reference, c.current, DriftTest::Psi).statistic, want, 1e-9);
    } else if (c.kind == "jensenshannon") {
      EXPECT_NEAR(numeric_drift(c.reference, c.current, DriftTest::JensenShannon).statistic, want, 1e-9);
    } else if (c.kind == "chisquare") {
      const auto got = categorical_drift(ri, ci, DriftTest::ChiSquared);
      EXPECT_NEAR(got.statistic, want, 1e-9 * std::max(1.0, want));
      EXPECT_NEAR(got.p_value, want_p, 1e-9 + 1e-7 * want_p);
      EXPECT_EQ(got.drifted, want_p < 0.05);
    } else if (c.kind == "z") {
      const auto got = categorical_drift(ri, ci, DriftTest::ZTest);
      EXPECT_NEAR(got.statistic, want, 1e-9);
      EXPECT_NEAR(got.p_value, want_p, 1e-9);
    }
  }
}

TEST(MonitorDrift, DefaultTestFollowsEvidentlysSizeRule) {
  std::mt19937_64 rng(7);
  const auto small = normal_sample(1000, 0, 1, rng), large = normal_sample(1001, 0, 1, rng);
  const auto current = normal_sample(300, 0, 1, rng);
  EXPECT_EQ(numeric_drift(small, current).test, DriftTest::Ks);
  EXPECT_EQ(numeric_drift(large, current).test, DriftTest::Wasserstein);
  EXPECT_EQ(numeric_drift(small, current).threshold, 0.05);
  EXPECT_EQ(numeric_drift(large, current).threshold, 0.1);
  // Few distinct values make a numeric feature categorical in all but name.
  std::vector<double> three(500), two(500), four_large(2000);
  for (std::size_t i = 0; i < three.size(); ++i) three[i] = static_cast<double>(i % 3);
  for (std::size_t i = 0; i < two.size(); ++i) two[i] = static_cast<double>(i % 2);
  for (std::size_t i = 0; i < four_large.size(); ++i) four_large[i] = static_cast<double>(i % 4);
  EXPECT_EQ(numeric_drift(three, three).test, DriftTest::ChiSquared);
  EXPECT_EQ(numeric_drift(two, two).test, DriftTest::ZTest);
  EXPECT_EQ(numeric_drift(four_large, three).test, DriftTest::JensenShannon);
  std::vector<std::int64_t> classes(1000), many(1500);
  for (std::size_t i = 0; i < classes.size(); ++i) classes[i] = static_cast<std::int64_t>(i % 10);
  for (std::size_t i = 0; i < many.size(); ++i) many[i] = static_cast<std::int64_t>(i % 10);
  EXPECT_EQ(categorical_drift(classes, classes).test, DriftTest::ChiSquared);
  EXPECT_EQ(categorical_drift(many, classes).test, DriftTest::JensenShannon);
  std::vector<std::int64_t> binary(classes.size());
  for (std::size_t i = 0; i < binary.size(); ++i) binary[i] = static_cast<std::int64_t>(i % 2);
  EXPECT_EQ(categorical_drift(binary, binary).test, DriftTest::ZTest);
  // The same data never drifts against itself; a category new in the current window always does.
  EXPECT_FALSE(categorical_drift(classes, classes).drifted);
  std::vector<std::int64_t> with_new = classes;
  with_new[0] = 42;
  const auto novel = categorical_drift(classes, with_new, DriftTest::ChiSquared);
  EXPECT_TRUE(std::isinf(novel.statistic));
  EXPECT_TRUE(novel.drifted);
}

TEST(MonitorDrift, RejectsWhatItCannotTest) {
  std::vector<double> empty, some{1, 2, 3}, nan_only{std::nan("")};
  EXPECT_THROW(numeric_drift(empty, some), core::Error);
  EXPECT_THROW(numeric_drift(some, nan_only), core::Error);  // nothing left after dropping NaN
  std::vector<std::int64_t> cats{1, 2};
  EXPECT_THROW(categorical_drift(cats, cats, DriftTest::Ks), core::Error);
  EXPECT_THROW(parse_drift_test("kolmogorov"), core::Error);
  // Values at the ends of the double range: every test still answers, with a verdict.
  std::vector<double> extreme{-1.7e308, 1.7e308, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21};
  for (DriftTest test : {DriftTest::Ks, DriftTest::Wasserstein, DriftTest::Psi, DriftTest::JensenShannon, DriftTest::ChiSquared})
    EXPECT_NO_THROW(numeric_drift(extreme, some, test)) << to_string(test);
  EXPECT_EQ(parse_drift_test("wasserstein"), DriftTest::Wasserstein);
  DriftMonitorOptions bad;
  bad.feature_names = {"a"};
  bad.reference_size = 0;
  EXPECT_THROW(DriftMonitor{bad}, core::Error);

  DriftMonitorOptions options;
  options.feature_names = {"a", "b"};
  options.reference_size = 3;
  options.window_size = 3;
  options.min_current = 2;
  DriftMonitor monitor(options);
  EXPECT_FALSE(monitor.observe({{1.0}, 0, 0.5}));                // one feature short
  EXPECT_FALSE(monitor.observe({{1.0, std::nan("")}, 0, 0.5}));  // a NaN feature
  EXPECT_EQ(monitor.rejected(), 2u);
  EXPECT_THROW(monitor.evaluate(), core::Error);  // no reference yet
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(monitor.observe({{1.0 * i, 2.0}, i % 2, 0.5}));
  EXPECT_TRUE(monitor.reference_ready());
  EXPECT_EQ(monitor.current_count(), 1u);
  EXPECT_THROW(monitor.evaluate(), core::Error);  // window below min_current
  for (int i = 0; i < 5; ++i) monitor.observe({{1.0 * i, 2.0}, i % 2, 0.5});
  EXPECT_EQ(monitor.current_count(), 3u);  // the window slides
  EXPECT_NO_THROW(monitor.evaluate());
}

// Summary features of a 28x28 image a gateway can afford per request.
std::vector<double> image_features(std::span<const float> pixels) {
  double sum = 0, squares = 0, bright = 0, centre = 0, top = 0;
  for (std::size_t i = 0; i < pixels.size(); ++i) {
    const double v = pixels[i];
    sum += v;
    squares += v * v;
    bright += v > 0.5 ? 1 : 0;
    const std::size_t row = i / 28, col = i % 28;
    if (row >= 7 && row < 21 && col >= 7 && col < 21) centre += v;
    if (row < 14) top += v;
  }
  const double n = static_cast<double>(pixels.size()), mean = sum / n;
  return {mean, std::sqrt(std::max(0.0, squares / n - mean * mean)), bright / n, centre / 196, top / 392};
}

TEST(MonitorDrift, DetectsShiftedFashionMnistButNotFreshTestImages) {
  AEGIS_SKIP_WITHOUT_FASHION_MNIST();
  models::DataOptions data;
  data.split = "test";
  data.limit = 4000;
  const auto images = models::load_dataset(models::kFashionMnistDir, data);
  models::TorchScriptOptions model_options;
  model_options.threads = 1;
  model_options.input_shape = {1, 28, 28};
  auto model = models::load_torchscript((test::source_dir() / "examples/fashion-mnist/model.pt").string(), model_options);

  // Observations as the gateway would make them: features of the input, the model's answer.
  auto observe = [&](std::size_t first, std::size_t count, auto&& transform) {
    std::vector<float> batch(count * 784);
    for (std::size_t i = 0; i < count; ++i) {
      auto sample = images.sample(first + i);
      for (std::size_t p = 0; p < 784; ++p) batch[i * 784 + p] = std::clamp(transform(sample[p], i * 784 + p), 0.0f, 1.0f);
    }
    std::vector<float> logits(count * 10);
    model->predict(batch, logits);
    std::vector<DriftObservation> out(count);
    for (std::size_t i = 0; i < count; ++i) {
      const float* l = logits.data() + i * 10;
      const auto top = std::max_element(l, l + 10) - l;
      double total = 0;
      for (int k = 0; k < 10; ++k) total += std::exp(static_cast<double>(l[k] - l[top]));
      out[i] = {image_features(std::span<const float>(batch).subspan(i * 784, 784)), top, 1 / total};
    }
    return out;
  };
  auto same = [](float v, std::size_t) { return v; };
  std::mt19937 rng(3);
  std::normal_distribution<float> noise(0, 0.15f);
  std::vector<float> noise_field(1000 * 784);
  for (float& v : noise_field) v = noise(rng);
  auto noised = [&](float v, std::size_t at) { return v + noise_field[at]; };
  auto brightened = [](float v, std::size_t) { return 0.75f * v + 0.25f; };

  const std::vector<std::string> names{"mean", "std", "bright_share", "centre_mean", "top_mean"};
  for (std::size_t reference_size : {1000u, 2000u}) {
    SCOPED_TRACE("reference of " + std::to_string(reference_size));
    auto reference = observe(0, reference_size, same);
    DriftMonitorOptions options;
    options.feature_names = names;
    options.reference_size = reference_size;
    options.window_size = 1000;
    options.min_current = 500;
    auto run = [&](const std::vector<DriftObservation>& current) {
      DriftMonitor monitor(options);
      for (const auto& o : reference) monitor.observe(o);
      for (const auto& o : current) monitor.observe(o);
      return monitor.evaluate();
    };
    const auto fresh = run(observe(reference_size, 1000, same));
    const auto noisy = run(observe(reference_size, 1000, noised));
    const auto bright = run(observe(reference_size, 1000, brightened));
    const DriftTest expected_numeric = reference_size <= 1000 ? DriftTest::Ks : DriftTest::Wasserstein;
    EXPECT_EQ(fresh.features[0].test, expected_numeric);
    EXPECT_EQ(fresh.features.size(), names.size() + 2);
    EXPECT_EQ(fresh.features.back().feature, "predicted_class");
    EXPECT_FALSE(fresh.dataset_drift) << "share " << fresh.drifted_share;
    EXPECT_LE(fresh.drifted_features, 1u);
    EXPECT_TRUE(noisy.dataset_drift) << "share " << noisy.drifted_share;
    EXPECT_TRUE(bright.dataset_drift) << "share " << bright.drifted_share;
    EXPECT_TRUE(bright.features[0].drifted);  // the mean pixel moved
    EXPECT_GE(bright.drifted_share, 0.5);
  }
}

}  // namespace
}  // namespace aegis::monitor
