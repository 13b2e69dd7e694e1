#include "aegis/attacks/evasion_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <iomanip>
#include <random>
#include <sstream>

#include "aegis/attacks/evasion/vector_ops.h"
#include "aegis/core/error.h"
#include "aegis/formats/npy.h"
#include "aegis/models/dataset.h"

namespace aegis::attacks {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

double median(std::vector<double> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  const std::size_t mid = values.size() / 2;
  return values.size() % 2 ? values[mid] : (values[mid - 1] + values[mid]) / 2;
}

std::string eps_text(float eps) {
  std::ostringstream out;
  out << eps;
  return out.str();
}

// Per-sample outcome of one attack run, kept so that minimal-norm attacks can be scored at each eps.
struct SampleOutcome {
  bool attacked = false;
  bool adversarial = false;  // the model's decision on x_adv is what the attacker wanted
  bool still_correct = true; // the model still gives the true label on x_adv
  double l2 = 0, linf = 0;
  std::uint64_t queries = 0;
};

std::vector<int> choose_targets(const AttackSpec& spec, std::span<const int> y, int classes) {
  if (spec.targeted.empty()) return {};
  std::vector<int> targets(y.size());
  if (spec.targeted == "random") {
    std::mt19937_64 rng(spec.seed ^ 0x7a5f3c1du);
    for (std::size_t i = 0; i < y.size(); ++i) {
      std::uniform_int_distribution<int> pick(0, classes - 2);
      int t = pick(rng);
      targets[i] = t >= y[i] ? t + 1 : t;
    }
    return targets;
  }
  int target = -1;
  try {
    std::size_t used = 0;
    target = std::stoi(spec.targeted, &used);
    if (used != spec.targeted.size()) target = -1;
  } catch (const std::exception&) {
  }
  if (target < 0 || target >= classes)
    throw core::Error("--targeted '" + spec.targeted + "' is neither 'random' nor a class index below " + std::to_string(classes),
                      "use --targeted random, or --targeted N for one target class");
  for (std::size_t i = 0; i < y.size(); ++i) targets[i] = target;
  return targets;
}

}  // namespace

std::vector<std::string> attack_names() {
  return {"fgsm", "pgd", "apgd-ce", "apgd-dlr", "cw", "deepfool", "square", "hopskipjump"};
}

std::unique_ptr<EvasionAttack> make_attack(const AttackSpec& spec) {
  const std::string& name = spec.name;
  auto only_l2 = [&](const char* method) {
    if (spec.norm != Norm::L2)
      throw core::Error(std::string(method) + " is an L2 attack", "use --norm l2 with it, or pgd/apgd-ce for L-inf");
  };
  if (name == "fgsm") return make_fgsm({spec.norm});
  if (name == "pgd") {
    auto options = spec.pgd;
    options.norm = spec.norm;
    options.seed = spec.seed;
    return make_pgd(options);
  }
  if (name == "apgd-ce" || name == "apgd-dlr" || name == "apgd") {
    auto options = spec.apgd;
    options.norm = spec.norm;
    options.seed = spec.seed;
    options.loss = name == "apgd-dlr" ? ApgdLoss::Dlr : ApgdLoss::CrossEntropy;
    return make_apgd(options);
  }
  if (name == "cw" || name == "cw-l2" || name == "carlini-wagner") {
    only_l2("Carlini-Wagner");
    return make_carlini_wagner_l2(spec.cw);
  }
  if (name == "deepfool") {
    only_l2("DeepFool");
    return make_deepfool(spec.deepfool);
  }
  if (name == "square") {
    auto options = spec.square;
    options.norm = spec.norm;
    options.seed = spec.seed;
    return make_square(options);
  }
  if (name == "hopskipjump" || name == "hsj") {
    auto options = spec.hsj;
    options.norm = spec.norm;
    options.seed = spec.seed;
    return make_hop_skip_jump(options);
  }
  std::string known;
  for (const auto& n : attack_names()) known += (known.empty() ? "" : ", ") + n;
  throw core::Error("unknown attack '" + name + "'", "choose one of: " + known);
}

EvasionReport run_evasion_plan(models::Classifier& model, std::span<const float> x, std::span<const int> y,
                               const std::vector<AttackSpec>& plan, const RunnerOptions& options) {
  const std::size_t d = model.sample_size();
  const std::size_t k = static_cast<std::size_t>(model.num_classes());
  const std::size_t n = y.size();
  if (x.size() != n * d)
    throw core::Error("the data's samples hold " + std::to_string(n ? x.size() / n : 0) + " values but the model takes " +
                          std::to_string(d),
                      "check --input-shape against the data, or reshape the data with --data-shape");
  for (int label : y)
    if (label < 0 || static_cast<std::size_t>(label) >= k)
      throw core::Error("a label (" + std::to_string(label) + ") is not one of the model's " + std::to_string(k) + " classes",
                        "check that the data's labels match the model's classes");
  for (float v : x)
    if (!(v >= options.bounds.lo && v <= options.bounds.hi))
      throw core::Error("the data holds values outside the stated range [" + eps_text(options.bounds.lo) + ", " +
                            eps_text(options.bounds.hi) + "]",
                        "state the range of the data as the attack sees it with --range LO,HI, or scale it with --scale");
  const std::size_t batch = options.batch ? options.batch : std::max<std::size_t>(model.preferred_batch(), 1);

  // Every attack is built and checked before any work starts, so a bad plan fails at once.
  std::vector<std::unique_ptr<EvasionAttack>> attacks;
  for (const auto& spec : plan) {
    auto attack = make_attack(spec);
    attack->validate(model.info(), options.bounds);
    if (!spec.targeted.empty() && !attack->supports_targeted())
      throw core::Error(attack->name() + " has no targeted form", "drop --targeted, or use pgd, apgd-ce, cw, square or hopskipjump");
    if (attack->kind() == AttackKind::Budgeted && spec.eps.empty())
      throw core::Error(attack->name() + " needs a budget", "give --eps, e.g. --eps 0.03,0.1");
    for (float e : spec.eps)
      if (!(e > 0) || !std::isfinite(e))
        throw core::Error("eps " + eps_text(e) + " is not a positive budget", "give positive budgets, e.g. --eps 0.03,0.1");
    attacks.push_back(std::move(attack));
  }

  EvasionReport report;
  report.samples = n;
  // The clean pass, shared by every attack.
  std::vector<float> scores(n * k);
  const auto clean_start = Clock::now();
  for (std::size_t start = 0; start < n; start += batch) {
    const std::size_t count = std::min(batch, n - start);
    model.predict(x.subspan(start * d, count * d), std::span<float>(scores).subspan(start * k, count * k));
    if (options.progress) options.progress("clean pass", start + count, n);
  }
  report.clean_seconds = seconds_since(clean_start);
  std::vector<int> clean_pred(n);
  std::size_t clean_correct = 0;
  for (std::size_t i = 0; i < n; ++i) {
    clean_pred[i] = models::argmax(std::span<const float>(scores).subspan(i * k, k));
    clean_correct += clean_pred[i] == y[i];
  }
  report.clean_accuracy = n ? static_cast<double>(clean_correct) / static_cast<double>(n) : 0;

  if (!options.output_dir.empty()) std::filesystem::create_directories(options.output_dir);

  for (std::size_t a = 0; a < plan.size(); ++a) {
    const AttackSpec& spec = plan[a];
    EvasionAttack& attack = *attacks[a];
    const auto targets = choose_targets(spec, y, static_cast<int>(k));
    const bool targeted = !targets.empty();
    // Budgeted attacks run once per eps; minimal-norm ones run once and are scored at each eps.
    std::vector<std::optional<float>> runs;
    if (attack.kind() == AttackKind::Budgeted)
      for (float e : spec.eps) runs.emplace_back(e);
    else
      runs.emplace_back(std::nullopt);

    for (const auto& run_eps : runs) {
      const std::string label = attack.name() + (run_eps ? " eps " + eps_text(*run_eps) : "");
      std::vector<SampleOutcome> outcome(n);
      std::unique_ptr<formats::NpyWriter> writer;
      std::string stem;
      if (!options.output_dir.empty()) {
        stem = options.output_dir + "/" + attack.name() + "_" + std::string(to_string(attack.norm())) +
               (run_eps ? "_eps" + eps_text(*run_eps) : "") + (targeted ? "_targeted" : "");
        std::vector<std::uint64_t> shape{n};
        for (auto dim : options.sample_shape.empty() ? model.info().input_shape : options.sample_shape)
          shape.push_back(static_cast<std::uint64_t>(dim));
        writer = std::make_unique<formats::NpyWriter>(stem + ".npy", formats::NpyDtype::Float32, shape);
      }
      std::vector<float> grid_orig, grid_adv;
      const std::size_t grid_rows = 8;
      double attack_seconds = 0;
      std::uint64_t attack_queries = 0, attack_gradients = 0;
      std::vector<float> adv_scores;

      for (std::size_t start = 0; start < n; start += batch) {
        const std::size_t count = std::min(batch, n - start);
        // Only samples the model gets right are attacked (as AutoAttack does); the rest are
        // already errors and are written out unchanged.
        std::vector<std::size_t> chosen;
        for (std::size_t i = start; i < start + count; ++i)
          if (clean_pred[i] == y[i] && (!targeted || targets[i] != y[i])) chosen.push_back(i);
        std::vector<float> bx(chosen.size() * d);
        std::vector<int> by(chosen.size()), bt;
        for (std::size_t j = 0; j < chosen.size(); ++j) {
          std::copy_n(x.data() + chosen[j] * d, d, bx.data() + j * d);
          by[j] = y[chosen[j]];
          if (targeted) bt.push_back(targets[chosen[j]]);
        }
        std::vector<float> out(x.begin() + static_cast<std::ptrdiff_t>(start * d),
                               x.begin() + static_cast<std::ptrdiff_t>((start + count) * d));
        if (!chosen.empty()) {
          const auto before_queries = model.queries();
          const auto before_gradients = model.gradient_queries();
          const auto t0 = Clock::now();
          AttackOutcome result = attack.run(model, AttackInput{bx, by, bt}, run_eps.value_or(0.0f), options.bounds);
          attack_seconds += seconds_since(t0);
          attack_queries += model.queries() - before_queries;
          attack_gradients += model.gradient_queries() - before_gradients;
          adv_scores.resize(chosen.size() * k);
          model.predict(result.x_adv, adv_scores);
          for (std::size_t j = 0; j < chosen.size(); ++j) {
            const std::size_t i = chosen[j];
            std::span<const float> xa(result.x_adv.data() + j * d, d);
            std::copy(xa.begin(), xa.end(), out.begin() + static_cast<std::ptrdiff_t>((i - start) * d));
            const int predicted = models::argmax(std::span<const float>(adv_scores).subspan(j * k, k));
            auto& o = outcome[i];
            o.attacked = true;
            o.adversarial = targeted ? predicted == bt[j] : predicted != by[j];
            o.still_correct = predicted == by[j];
            std::vector<float> delta(d);
            for (std::size_t e = 0; e < d; ++e) delta[e] = xa[e] - bx[j * d + e];
            o.l2 = detail::l2_norm(delta);
            o.linf = detail::linf_norm(delta);
            o.queries = j < result.queries.size() ? result.queries[j] : 0;
            if (o.adversarial && grid_orig.size() < grid_rows * d) {
              grid_orig.insert(grid_orig.end(), bx.begin() + static_cast<std::ptrdiff_t>(j * d),
                               bx.begin() + static_cast<std::ptrdiff_t>((j + 1) * d));
              grid_adv.insert(grid_adv.end(), xa.begin(), xa.end());
            }
          }
        }
        if (writer) writer->append(std::span<const float>(out));
        if (options.progress) options.progress(label, start + count, n);
      }
      if (writer) writer->finish();

      // One result per eps: budgeted attacks have their own; minimal-norm ones are scored at each
      // threshold (an adversarial farther than eps does not count), or once without one.
      std::vector<std::optional<float>> scored;
      if (run_eps) scored.push_back(run_eps);
      else if (spec.eps.empty()) scored.emplace_back(std::nullopt);
      else for (float e : spec.eps) scored.emplace_back(e);
      for (const auto& eps : scored) {
        AttackResult r;
        r.attack = attack.name();
        r.norm = attack.norm();
        r.eps = eps;
        r.targeted = targeted;
        r.samples = n;
        r.seconds = attack_seconds;
        r.queries = attack_queries;
        r.gradient_queries = attack_gradients;
        std::vector<double> l2s, linfs;
        std::uint64_t success_queries = 0;
        std::size_t robust = 0;
        for (std::size_t i = 0; i < n; ++i) {
          const auto& o = outcome[i];
          if (!o.attacked) {
            robust += clean_pred[i] == y[i];
            continue;
          }
          ++r.attacked;
          const double distance = attack.norm() == Norm::Linf ? o.linf : o.l2;
          const bool within = !eps || run_eps || distance <= *eps * (1 + 1e-6);
          const bool success = o.adversarial && within;
          if (success) {
            ++r.successes;
            l2s.push_back(o.l2);
            linfs.push_back(o.linf);
            success_queries += o.queries;
          }
          // Robust = still classified correctly within the budget (a targeted attack that missed its
          // target may still have changed the decision).
          robust += (o.still_correct || !within) ? 1 : 0;
        }
        r.robust_accuracy = n ? static_cast<double>(robust) / static_cast<double>(n) : 0;
        r.success_rate = r.attacked ? static_cast<double>(r.successes) / static_cast<double>(r.attacked) : 0;
        if (r.successes) {
          double sum2 = 0, suminf = 0;
          for (double v : l2s) sum2 += v;
          for (double v : linfs) suminf += v;
          r.mean_l2 = sum2 / static_cast<double>(l2s.size());
          r.mean_linf = suminf / static_cast<double>(linfs.size());
          r.median_l2 = median(l2s);
          r.median_linf = median(linfs);
          r.queries_per_success = success_queries ? static_cast<double>(success_queries) / static_cast<double>(r.successes)
                                                  : static_cast<double>(attack_queries) / static_cast<double>(r.successes);
        }
        if (writer) r.adversarial_path = stem + ".npy";
        report.results.push_back(std::move(r));
      }
      // The grid shows successful adversarials of image data.
      if (!stem.empty() && options.write_images && !grid_orig.empty()) {
        const std::string grid = stem + ".png";
        models::write_attack_grid(grid, options.sample_shape.empty() ? model.info().input_shape : options.sample_shape,
                                  grid_orig, grid_adv, grid_orig.size() / d, options.bounds.lo, options.bounds.hi);
        for (auto it = report.results.rbegin(); it != report.results.rend() && it->attack == attack.name(); ++it)
          if (it->grid_path.empty() && it->adversarial_path == stem + ".npy") it->grid_path = grid;
      }
    }
  }

  // Findings: a result whose robust accuracy is below the threshold. One finding per attack, at the
  // smallest budget that breaks the threshold, so that a sweep does not repeat itself.
  std::vector<std::string> reported;
  for (const auto& r : report.results) {
    if (!r.eps || r.robust_accuracy >= options.min_robust_accuracy) continue;
    const std::string key = r.attack + "/" + std::string(to_string(r.norm)) + (r.targeted ? "/t" : "");
    if (std::find(reported.begin(), reported.end(), key) != reported.end()) continue;
    reported.push_back(key);
    const bool black_box = r.attack == "square" || r.attack == "hopskipjump";
    core::Finding f;
    f.rule_id = black_box ? "evasion.black-box" : "evasion.white-box";
    const double drop = report.clean_accuracy - r.robust_accuracy;
    f.severity = r.robust_accuracy < options.min_robust_accuracy / 2 ? core::Severity::High : core::Severity::Medium;
    std::ostringstream title, evidence;
    title << std::fixed << std::setprecision(1) << r.attack << " (" << to_string(r.norm) << ", eps " << eps_text(*r.eps)
          << ") drops accuracy from " << 100 * report.clean_accuracy << "% to " << 100 * r.robust_accuracy << "%";
    f.title = title.str();
    f.location.file = options.model_label.empty() ? model.info().source : options.model_label;
    evidence << std::fixed << std::setprecision(4) << "robust accuracy " << r.robust_accuracy << " < threshold "
             << options.min_robust_accuracy << " over " << r.samples << " samples; success rate " << r.success_rate
             << "; accuracy drop " << drop << "; median L2 " << r.median_l2 << ", median Linf " << r.median_linf;
    if (black_box) evidence << "; " << std::setprecision(0) << r.queries_per_success << " queries per success";
    if (!r.adversarial_path.empty()) evidence << "; adversarial examples in " << r.adversarial_path;
    f.evidence = evidence.str();
    f.atlas = {"AML.T0015", black_box ? "AML.T0043.001" : "AML.T0043.000"};
    f.nist_ai_rmf = {"MEASURE 2.7", "MEASURE 2.5"};
    f.remediation = black_box
                        ? "An attacker with score or label access alone can evade the model: limit and monitor queries "
                          "per client (aegis gateway), return labels or rounded scores only, and harden the model "
                          "(aegis harden)."
                        : "Harden the model with adversarial training (aegis harden --method pgd|trades), weigh the "
                          "robustness gained against clean accuracy, and consider certified defences (aegis certify).";
    report.findings.push_back(std::move(f));
  }
  return report;
}

}  // namespace aegis::attacks
