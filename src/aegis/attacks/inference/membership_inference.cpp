#include "aegis/attacks/inference/membership_inference.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <mutex>
#include <thread>
#include <chrono>
#include <cmath>
#include <iomanip>
#include <numeric>
#include <random>
#include <sstream>

#include "aegis/attacks/inference/membership_scores.h"
#include "aegis/core/error.h"
#include "aegis/core/name_list.h"

namespace aegis::attacks {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

constexpr core::NamedValue<MembershipAttack> kAttacks[] = {
    {MembershipAttack::Loss, "loss"},
    {MembershipAttack::Confidence, "confidence"},
    {MembershipAttack::Entropy, "entropy"},
    {MembershipAttack::ModifiedEntropy, "modified-entropy"},
    {MembershipAttack::Shadow, "shadow"},
    {MembershipAttack::LiraOffline, "lira-offline"},
    {MembershipAttack::LiraOnline, "lira-online"},
};

// Mirrors every image sample left-right: LiRA queries each record as the model saw it in training,
// both ways round when the recipe trained with flips.
std::vector<float> mirrored(std::span<const float> x, std::span<const std::int64_t> shape) {
  std::vector<float> out(x.begin(), x.end());
  const auto width = static_cast<std::size_t>(shape.back());
  for (std::size_t row = 0; row < out.size() / width; ++row)
    std::reverse(out.begin() + static_cast<std::ptrdiff_t>(row * width),
                 out.begin() + static_cast<std::ptrdiff_t>((row + 1) * width));
  return out;
}

double accuracy_of(std::span<const float> scores, std::span<const int> y, std::size_t classes, std::size_t begin,
                   std::size_t end) {
  if (end <= begin) return 0;
  std::size_t correct = 0;
  for (std::size_t i = begin; i < end; ++i) {
    const float* row = scores.data() + i * classes;
    if (std::max_element(row, row + classes) - row == y[i]) ++correct;
  }
  return static_cast<double>(correct) / static_cast<double>(end - begin);
}

std::string percent(double value) {
  std::ostringstream text;
  text << std::setprecision(value < 0.01 ? 2 : 3) << 100 * value << "%";
  return text.str();
}

// Scores of every record under one model, optionally also mirrored (augmentation-major within a
// record: record i's rows are i * augmentations + a).
struct Predictions {
  std::vector<float> scores;  // n * augmentations * classes
  models::ScoreKind kind = models::ScoreKind::Logits;
};

Predictions predict_all(models::Classifier& model, std::span<const float> x, const std::vector<float>& x_mirrored,
                        std::size_t n) {
  const auto classes = static_cast<std::size_t>(model.num_classes());
  Predictions p;
  p.kind = model.info().scores;
  std::vector<float> plain(n * classes);
  model.predict(x, plain);
  if (x_mirrored.empty()) {
    p.scores = std::move(plain);
    return p;
  }
  std::vector<float> flipped(n * classes);
  model.predict(x_mirrored, flipped);
  p.scores.resize(2 * n * classes);
  for (std::size_t i = 0; i < n; ++i) {
    std::copy_n(plain.data() + i * classes, classes, p.scores.data() + (2 * i) * classes);
    std::copy_n(flipped.data() + i * classes, classes, p.scores.data() + (2 * i + 1) * classes);
  }
  return p;
}

std::vector<int> repeat_labels(std::span<const int> y, std::size_t times) {
  std::vector<int> out(y.size() * times);
  for (std::size_t i = 0; i < y.size(); ++i)
    for (std::size_t a = 0; a < times; ++a) out[i * times + a] = y[i];
  return out;
}

// The first augmentation's rows only (the plain query), for the single-query attacks.
std::vector<float> plain_rows(const Predictions& p, std::size_t n, std::size_t classes, std::size_t augmentations) {
  if (augmentations == 1) return p.scores;
  std::vector<float> out(n * classes);
  for (std::size_t i = 0; i < n; ++i)
    std::copy_n(p.scores.data() + (i * augmentations) * classes, classes, out.data() + i * classes);
  return out;
}

core::Finding leakage_finding(const MembershipAuditReport& report, const MembershipAuditOptions& options) {
  // Judged at the lowest requested FPR, where an attacker's confident guesses are: the rate at
  // which members are singled out against the rate at which chance would single them out. The
  // lower ends of the confidence intervals decide, so that sampling noise in a small audit is not
  // reported as leakage.
  const auto lowest = static_cast<std::size_t>(std::min_element(options.fprs.begin(), options.fprs.end()) - options.fprs.begin());
  const double fpr = options.fprs[lowest];
  // Without bootstrap resamples there are no intervals: the point estimates stand in.
  const auto tpr_low = [&](const MembershipAttackResult& r) {
    const double low = r.metrics.tpr_ci[lowest].low;
    return std::isnan(low) ? r.metrics.tpr_at[lowest] : low;
  };
  const auto auc_low_of = [](const MembershipAttackResult& r) {
    return std::isnan(r.metrics.auc_ci.low) ? r.metrics.auc : r.metrics.auc_ci.low;
  };
  const MembershipAttackResult* best = nullptr;
  for (const auto& r : report.results)
    if (!best || tpr_low(r) > tpr_low(*best)) best = &r;
  const double tpr = best->metrics.tpr_at[lowest];
  const double ratio = tpr_low(*best) / fpr;
  const MembershipAttackResult* best_auc = &report.results.front();
  for (const auto& r : report.results)
    if (auc_low_of(r) > auc_low_of(*best_auc)) best_auc = &r;
  const double auc_low = auc_low_of(*best_auc);
  core::Finding f;
  f.rule_id = "mia.membership-leakage";
  const auto& ci = best->metrics.tpr_ci[lowest];
  if (ratio >= 10 || auc_low >= 0.75) f.severity = core::Severity::High;
  else if (ratio >= 3 || auc_low >= 0.6) f.severity = core::Severity::Medium;
  else if (ratio >= 1.5 || auc_low >= 0.52) f.severity = core::Severity::Low;
  else f.severity = core::Severity::Info;
  f.title = f.severity == core::Severity::Info  ? "Membership inference found no leakage above chance"
            : f.severity == core::Severity::Low ? "A weak membership signal: the model's answers differ slightly on its training records"
                                                : "The model reveals which records it was trained on";
  std::ostringstream evidence;
  evidence << to_string(best->attack) << " identifies " << percent(tpr) << " of members (95% CI " << percent(ci.low) << "–"
           << percent(ci.high) << ") at " << percent(fpr) << " FPR, at least " << std::setprecision(3) << ratio
           << "x chance; best AUC " << std::setprecision(3) << best_auc->metrics.auc << " (95% CI from " << auc_low << ", " << to_string(best_auc->attack)
           << "); accuracy on members " << percent(report.member_accuracy) << " vs non-members "
           << percent(report.nonmember_accuracy) << " (" << report.members << " members, " << report.nonmembers
           << " non-members)";
  f.evidence = evidence.str();
  f.atlas = {"AML.T0024.000"};
  f.nist_ai_rmf = {"MEASURE 2.10", "MEASURE 2.7"};
  f.remediation =
      "Train with differential privacy (DP-SGD), regularise and stop before the model memorises (close the "
      "member/non-member accuracy gap), and return labels or rounded top-k scores instead of full probabilities at "
      "the endpoint.";
  return f;
}

}  // namespace

std::string to_string(MembershipAttack attack) { return core::name_of<MembershipAttack>(attack, kAttacks); }

std::vector<MembershipAttack> parse_membership_attacks(const std::string& list) {
  return core::parse_name_list<MembershipAttack>(list, kAttacks, "membership-inference attack", "--attacks loss,lira-online");
}

bool needs_reference_models(MembershipAttack attack) {
  return attack == MembershipAttack::Shadow || attack == MembershipAttack::LiraOffline ||
         attack == MembershipAttack::LiraOnline;
}

MembershipAuditReport run_membership_audit(models::Classifier& target, std::span<const float> x, std::span<const int> y,
                                           std::size_t members, const MembershipAuditOptions& options,
                                           const ReferenceFactory& make_reference, const MembershipProgress& progress) {
  const std::size_t n = y.size();
  const std::size_t sample = target.sample_size();
  const auto classes = static_cast<std::size_t>(target.num_classes());
  if (options.attacks.empty()) throw core::Error("no membership-inference attack to run");
  if (members == 0 || members >= n)
    throw core::Error("a membership audit needs both members and non-members (got " + std::to_string(members) +
                          " members of " + std::to_string(n) + " records)",
                      "give --members and non-members (the test split or --nonmembers)");
  if (x.size() != n * sample)
    throw core::Error("the records hold " + std::to_string(x.size() / std::max<std::size_t>(n, 1)) +
                          " values each, but the model takes " + std::to_string(sample),
                      "the data's sample shape must match the model's input shape (--input-shape)");
  for (std::size_t i = 0; i < n; ++i)
    if (y[i] < 0 || static_cast<std::size_t>(y[i]) >= classes)
      throw core::Error("record " + std::to_string(i) + " has label " + std::to_string(y[i]) + ", but the model has " +
                            std::to_string(classes) + " classes",
                        "use the labels the model was trained with");
  if (options.fprs.empty()) throw core::Error("no false-positive rate to report at", "e.g. --fpr 0.01,0.001");
  for (double fpr : options.fprs)
    if (!(fpr > 0 && fpr < 1)) throw core::Error("false-positive rate " + std::to_string(fpr) + " is not in (0, 1)", "e.g. --fpr 0.01,0.001");
  check_fpr_resolvable(n - members, options.fprs);
  const bool need_references = std::any_of(options.attacks.begin(), options.attacks.end(), needs_reference_models);
  if (need_references) {
    if (options.references < 2)
      throw core::Error("the shadow and LiRA attacks need at least 2 reference models (" +
                            std::to_string(options.references) + " asked for)",
                        "use --references 16 or more (the LiRA paper uses 64 to 256), or only the threshold attacks");
    if (!make_reference) throw core::Error("no way to build reference models was given");
  }
  const auto& shape = target.info().input_shape;
  const bool mirror = options.recipe.flip_augment && shape.size() >= 2;
  const std::size_t augmentations = mirror ? 2 : 1;
  const std::size_t kept = (need_references ? static_cast<std::size_t>(options.references) + 1 : 1) * n * augmentations * classes;
  if (kept > options.max_score_values)
    throw core::Error("the audit would keep " + std::to_string(kept) + " scores (references x records x classes), above the bound of " +
                          std::to_string(options.max_score_values),
                      "audit fewer records or train fewer reference models");
  const std::vector<float> x_mirrored = mirror ? mirrored(x, shape) : std::vector<float>{};

  MembershipAuditReport report;
  report.members = members;
  report.nonmembers = n - members;
  if (progress) progress("scoring the target", 0, 1);
  const auto target_predictions = predict_all(target, x, x_mirrored, n);
  const auto target_plain = plain_rows(target_predictions, n, classes, augmentations);
  report.member_accuracy = accuracy_of(target_plain, y, classes, 0, members);
  report.nonmember_accuracy = accuracy_of(target_plain, y, classes, members, n);
  if (progress) progress("scoring the target", 1, 1);

  // Reference models: record i is IN for exactly half of them (LiRA's balanced assignment), so each
  // record has both IN and OUT models to fit its two distributions.
  const std::size_t refs = need_references ? static_cast<std::size_t>(options.references) : 0;
  std::vector<std::uint8_t> in(refs * n, 0);
  std::vector<Predictions> reference_predictions;
  if (refs > 0) {
    std::mt19937_64 rng(options.seed ^ 0x9e3779b97f4a7c15ull);
    std::vector<std::size_t> order(refs);
    for (std::size_t i = 0; i < n; ++i) {
      std::iota(order.begin(), order.end(), 0);
      std::shuffle(order.begin(), order.end(), rng);
      for (std::size_t k = 0; k < refs / 2; ++k) in[order[k] * n + i] = 1;
    }
    const auto start = Clock::now();
    const std::size_t total =
        static_cast<std::size_t>(std::count(in.begin(), in.end(), 1)) * static_cast<std::size_t>(options.recipe.epochs);
    const std::string stage = "training " + std::to_string(refs) + " reference models";
    reference_predictions.resize(refs);
    std::vector<double> in_accuracy(refs), out_accuracy(refs);
    std::mutex progress_mutex;
    std::size_t samples_done = 0;
    if (progress) progress(stage, 0, total);
    // Reference model k: trained on its IN records, then asked about every record.
    const auto train_one = [&](std::size_t k) {
      auto model = make_reference(static_cast<int>(k));
      if (model->num_classes() != target.num_classes() || model->sample_size() != sample)
        throw core::Error("reference model " + std::to_string(k) + " takes " + std::to_string(model->sample_size()) +
                              " values and has " + std::to_string(model->num_classes()) +
                              " classes, the target takes " + std::to_string(sample) + " and has " +
                              std::to_string(classes),
                          "the recipe's architecture must be the audited model's");
      std::vector<float> xin;
      std::vector<int> yin;
      for (std::size_t i = 0; i < n; ++i) {
        if (!in[k * n + i]) continue;
        xin.insert(xin.end(), x.begin() + static_cast<std::ptrdiff_t>(i * sample),
                   x.begin() + static_cast<std::ptrdiff_t>((i + 1) * sample));
        yin.push_back(y[i]);
      }
      auto recipe = options.recipe;
      recipe.seed = options.recipe.seed + 1000003ull * (k + 1);
      std::size_t last = 0;
      models::fit(*model, xin, yin, recipe, [&](std::size_t done) {
        if (!progress) return;
        const std::lock_guard lock(progress_mutex);
        samples_done += done - last;
        last = done;
        progress(stage, std::min(samples_done, total), total);
      });
      reference_predictions[k] = predict_all(*model, x, x_mirrored, n);
      const auto plain = plain_rows(reference_predictions[k], n, classes, augmentations);
      // Accuracy on the records this model trained on, and on those it did not.
      std::size_t in_correct = 0, in_count = 0, out_correct = 0, out_count = 0;
      for (std::size_t i = 0; i < n; ++i) {
        const float* row = plain.data() + i * classes;
        const bool correct = std::max_element(row, row + classes) - row == y[i];
        if (in[k * n + i]) {
          ++in_count;
          in_correct += correct;
        } else {
          ++out_count;
          out_correct += correct;
        }
      }
      in_accuracy[k] = in_count ? static_cast<double>(in_correct) / static_cast<double>(in_count) : 0;
      out_accuracy[k] = out_count ? static_cast<double>(out_correct) / static_cast<double>(out_count) : 0;
    };
    // Several small models trained side by side, one LibTorch thread each, use the cores better
    // than one model at a time whose small batches leave threads waiting on each other.
    const std::size_t workers = std::clamp<std::size_t>(static_cast<std::size_t>(std::max(1, options.parallel_references)), 1, refs);
    std::atomic<std::size_t> next{0};
    std::exception_ptr failure;
    std::mutex failure_mutex;
    const auto work = [&] {
      for (std::size_t k = next++; k < refs; k = next++) {
        try {
          train_one(k);
        } catch (...) {
          const std::lock_guard lock(failure_mutex);
          if (!failure) failure = std::current_exception();
          next = refs;  // the others stop after their current model
        }
      }
    };
    if (workers == 1) {
      work();
    } else {
      std::vector<std::thread> pool;
      for (std::size_t w = 0; w < workers; ++w) pool.emplace_back(work);
      for (auto& t : pool) t.join();
    }
    if (failure) std::rethrow_exception(failure);
    for (std::size_t k = 0; k < refs; ++k) {
      report.reference_member_accuracy += in_accuracy[k];
      report.reference_nonmember_accuracy += out_accuracy[k];
    }
    report.reference_member_accuracy /= static_cast<double>(refs);
    report.reference_nonmember_accuracy /= static_cast<double>(refs);
    report.references = static_cast<int>(refs);
    report.reference_training_seconds = seconds_since(start);
  }

  const auto y_augmented = repeat_labels(y, augmentations);
  std::vector<double> target_phi, reference_phi;
  auto lira_inputs = [&] {
    if (!target_phi.empty()) return;
    target_phi = logit_scaled_confidence(target_predictions.scores, y_augmented, classes, target_predictions.kind);
    reference_phi.reserve(refs * n * augmentations);
    for (const auto& p : reference_predictions) {
      auto phi = logit_scaled_confidence(p.scores, y_augmented, classes, p.kind);
      reference_phi.insert(reference_phi.end(), phi.begin(), phi.end());
    }
  };

  for (std::size_t a = 0; a < options.attacks.size(); ++a) {
    const auto attack = options.attacks[a];
    if (progress) progress("attack " + to_string(attack), a, options.attacks.size());
    const auto start = Clock::now();
    MembershipAttackResult result;
    result.attack = attack;
    switch (attack) {
      case MembershipAttack::Loss:
        result.scores = loss_scores(target_plain, y, classes, target_predictions.kind);
        break;
      case MembershipAttack::Confidence:
        result.scores = confidence_scores(target_plain, y, classes, target_predictions.kind);
        break;
      case MembershipAttack::Entropy:
        result.scores = entropy_scores(target_plain, y, classes, target_predictions.kind);
        break;
      case MembershipAttack::ModifiedEntropy:
        result.scores = modified_entropy_scores(target_plain, y, classes, target_predictions.kind);
        break;
      case MembershipAttack::Shadow: {
        // The reference models are the shadows: their predictions on records whose membership is
        // known train the attack model, which then reads the target's predictions.
        std::vector<float> shadow_scores;
        std::vector<int> shadow_labels;
        std::vector<std::uint8_t> shadow_in;
        shadow_scores.reserve(refs * n * classes);
        for (std::size_t k = 0; k < refs; ++k) {
          const auto plain = plain_rows(reference_predictions[k], n, classes, augmentations);
          shadow_scores.insert(shadow_scores.end(), plain.begin(), plain.end());
          shadow_labels.insert(shadow_labels.end(), y.begin(), y.end());
          shadow_in.insert(shadow_in.end(), in.begin() + static_cast<std::ptrdiff_t>(k * n),
                           in.begin() + static_cast<std::ptrdiff_t>((k + 1) * n));
        }
        ShadowAttackModel model;
        model.fit(shadow_scores, shadow_labels, classes, reference_predictions.front().kind, shadow_in);
        result.scores = model.score(target_plain, y, classes, target_predictions.kind);
        break;
      }
      case MembershipAttack::LiraOffline:
      case MembershipAttack::LiraOnline: {
        lira_inputs();
        LiraOptions lira;
        lira.fixed_variance = options.fixed_variance;
        result.scores = attack == MembershipAttack::LiraOnline
                            ? lira_online(target_phi, reference_phi, in, refs, n, augmentations, lira)
                            : lira_offline(target_phi, reference_phi, in, refs, n, augmentations, lira);
        break;
      }
    }
    const std::span<const double> all(result.scores);
    result.metrics = evaluate_membership(all.first(members), all.subspan(members), options.fprs, options.bootstrap,
                                         options.seed + a);
    result.seconds = seconds_since(start);
    report.results.push_back(std::move(result));
  }
  if (progress) progress("done", options.attacks.size(), options.attacks.size());
  report.findings.push_back(leakage_finding(report, options));
  return report;
}

}  // namespace aegis::attacks
