// Rényi-DP accounting of the Poisson-sampled Gaussian mechanism (see accountant.h).
//
// Notation: mu0 = N(0, sigma^2), mu1 = N(1, sigma^2), mu = (1 - q) mu0 + q mu1. The RDP of one step at
// order a is log(A_a) / (a - 1) with A_a = E_{mu0}[(mu / mu0)^a]; Mironov, Talwar and Zhang (2019,
// "Rényi Differential Privacy of the Sampled Gaussian Mechanism", arXiv:1908.10530) show that this
// direction dominates the other one, D_a(mu0 || mu). Everything is computed in log space.
#include "aegis/privacy/log_erfc.h"
#include "aegis/privacy/accountant.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>

#include "aegis/core/error.h"

namespace aegis::privacy {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kLn2 = 0.69314718055994530942;
constexpr double kSqrt2 = 1.41421356237309504880;
// The fractional-order series stops when its estimated truncation error is below exp(-kStop) of the sum
// so far and its last term below exp(-kStopTerm) of it.
constexpr double kStop = 32;
constexpr double kStopTerm = 20;

// The largest noise multiplier the calibration tries before it gives up.
constexpr double kMaxSigma = 1e8;

std::string num(double v) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.6g", v);
  return buffer;
}

// log(e^x + e^y).
double log_add(double x, double y) {
  if (x < y) std::swap(x, y);
  if (y == -kInf) return x;
  return x + std::log1p(std::exp(y - x));
}

// log(1 - e^d) for d < 0, accurate at both ends.
double log1mexp(double d) { return d > -kLn2 ? std::log(-std::expm1(d)) : std::log1p(-std::exp(d)); }

// log(e^x - e^y) for x >= y; a difference that rounding made non-positive is 0 (log: -inf).
double log_sub(double x, double y) {
  if (y == -kInf) return x;
  if (!(x > y)) return -kInf;
  return x + log1mexp(y - x);
}

// log(e^c - 1) for c >= 0.
double log_expm1(double c) {
  if (c > 40) return c + std::log1p(-std::exp(-c));
  return std::log(std::expm1(c));  // c == 0 (or underflowed) gives -inf, a zero term
}

// log(1 + e^l), i.e. log(A) from log(A - 1).
double log1pexp(double l) {
  if (l == -kInf) return 0;
  return l > 0 ? l + std::log1p(std::exp(-l)) : std::log1p(std::exp(l));
}


// log((1 - q) + q e^x) for x >= 0.
double log_mix(double q, double x) {
  if (x < 1) return std::log1p(q * std::expm1(x));
  return x + std::log(q + (1 - q) * std::exp(-x));
}

// Integer order n >= 2: A_n = sum_{i=0}^{n} C(n,i) q^i (1-q)^{n-i} exp((i^2 - i) / (2 sigma^2)). The binomial
// weights sum to 1 and the i = 0, 1 exponents are 0, so A_n - 1 = sum_{i>=2} w_i expm1(c_i), a sum of
// positive terms; returns log(A_n - 1), which keeps the tiny RDP of huge sigma accurate.
double log_a_minus_one_integer(double q, double sigma, double n) {
  const double log_q = std::log(q);
  const double log_1mq = std::log1p(-q);
  const double two_var = 2.0 * sigma * sigma;
  double log_coef = 0;  // log C(n, i)
  double acc = -kInf;
  for (double i = 1; i <= n; ++i) {
    log_coef += std::log((n - i + 1) / i);
    if (i < 2) continue;
    const double c = i * (i - 1) / two_var;
    acc = log_add(acc, log_coef + i * log_q + (n - i) * log_1mq + log_expm1(c));
  }
  return acc;
}

// Fractional order a: split the integral at z0, where (1 - q) mu0 = q mu1, and expand (1 - q + q L)^a
// (L = mu1 / mu0) as a binomial series in the smaller of the two parts on each side:
//   A0 = sum_i C(a,i) q^i (1-q)^(a-i) exp((i^2 - i)/(2 sigma^2)) * P[N(i, sigma^2) <= z0]
//   A1 = sum_i C(a,i) q^(a-i) (1-q)^i exp((j^2 - j)/(2 sigma^2)) * P[N(j, sigma^2) >= z0],  j = a - i.
// C(a,i) changes sign from i = floor(a) + 2 on, so positive and negative terms are summed apart in log
// space. For i > a both series' terms decrease in magnitude (|C(a,i)| does, and the integrands are
// bounded by a power of a ratio <= 1 that increases with i), so the alternating tail after the last
// term added is smaller than that term.
//
// For q < 1/2 the weights w_i = C(a,i) q^i (1-q)^(a-i) sum to (q + 1 - q)^a = 1, so the series is summed
// as A - 1 = sum_i [w_i expm1(c_i) P0_i - w_i Q0_i] + A1 (c_i = (i^2 - i)/(2 sigma^2), P0_i the probability
// above, Q0_i = 1 - P0_i): its terms are small where A is close to 1 (large sigma, small q), so the RDP
// keeps its relative accuracy there instead of drowning in the rounding of 1 + tiny. Returns log(A).
double log_a_fractional(double q, double sigma, double a) {
  const double log_q = std::log(q);
  const double log_1mq = std::log1p(-q);
  const double two_var = 2.0 * sigma * sigma;
  const double z0 = sigma * sigma * (log_1mq - log_q) + 0.5;
  const double inv_scale = 1.0 / (kSqrt2 * sigma);
  const bool minus_one = q < 0.5;
  double positive = -kInf, negative = -kInf;
  auto add = [&](bool is_negative, double log_term) {
    if (is_negative) {
      negative = log_add(negative, log_term);
    } else {
      positive = log_add(positive, log_term);
    }
  };
  double log_coef = 0;  // log |C(a, i)|
  bool coef_negative = false;
  double last_term = kInf;
  bool last_negative = false;
  constexpr double kMaxTerms = 5e7;  // never reached for finite inputs in practice; a guard against hangs
  for (double i = 0; i < kMaxTerms; ++i) {
    if (i > 0) {
      const double factor = a - (i - 1);
      log_coef += std::log(std::fabs(factor) / i);
      if (factor < 0) coef_negative = !coef_negative;
    }
    const double j = a - i;
    const double log_w = log_coef + i * log_q + j * log_1mq;
    const double log_p0 = -kLn2 + log_erfc((i - z0) * inv_scale);
    const double s1 = log_coef + j * log_q + i * log_1mq + (j * j - j) / two_var - kLn2 + log_erfc((z0 - j) * inv_scale);
    // The signed term of this i, as sign and log magnitude.
    double term;
    bool term_negative = coef_negative;
    if (minus_one) {
      const double s0 = log_w + log_expm1((i * i - i) / two_var) + log_p0;
      const double r0 = log_w - kLn2 + log_erfc((z0 - i) * inv_scale);
      add(coef_negative, s0);
      add(coef_negative, s1);
      add(!coef_negative, r0);
      const double same = log_add(s0, s1);
      if (same >= r0) {
        term = log_sub(same, r0);
      } else {
        term = log_sub(r0, same);
        term_negative = !term_negative;
      }
    } else {
      const double s0 = log_w + (i * i - i) / two_var + log_p0;
      term = log_add(s0, s1);
      add(coef_negative, term);
    }
    if (i > a + 1) {
      // In the tail the terms alternate in sign and shrink smoothly, so the sum lies between the last two
      // partial sums; taking back half of the last term leaves an error of about a quarter of the
      // difference of the last two magnitudes (Euler-Boole), far below the last magnitude itself.
      const double log_sum = std::max(log_sub(positive, negative), -800.0);
      const bool alternating = term_negative != last_negative && term < last_term;
      if (alternating && term < log_sum - kStopTerm && log_sub(last_term, term) - kLn2 < log_sum - kStop) {
        add(!term_negative, term - kLn2);
        break;
      }
      if (term < log_sum - kStop) break;  // fallback where the tail does not alternate
    }
    last_term = term;
    last_negative = term_negative;
  }
  const double log_sum = log_sub(positive, negative);
  return minus_one ? log1pexp(log_sum) : log_sum;
}

void check_delta(double delta) {
  if (!(delta > 0 && delta < 1))
    throw core::Error("delta must lie strictly between 0 and 1, got " + num(delta),
                      "use a delta well below 1/N for N training records, e.g. --delta 1e-5");
}

void check_orders(const std::vector<double>& orders) {
  if (orders.empty()) throw core::Error("the RDP accountant needs at least one order", "use default_rdp_orders()");
  for (const double a : orders)
    if (!(a > 1) || !std::isfinite(a))
      throw core::Error("RDP orders must be finite and above 1, got " + num(a), "use default_rdp_orders()");
}

// The conversion's epsilon at order a for RDP value r.
double convert_one(double a, double r, double log_delta, RdpConversion conversion) {
  if (conversion == RdpConversion::Classic) return r - log_delta / (a - 1);
  // Balle et al. 2020, Theorem 21: r + log((a - 1)/a) - (log(delta) + log(a)) / (a - 1).
  return r + std::log1p(-1.0 / a) - (log_delta + std::log(a)) / (a - 1);
}

// The minimum over orders. RDP that is exactly 0 at every order means identical output distributions,
// which is (0, 0)-DP: epsilon 0 with best_order 0 (as Opacus reports for an empty history). Orders
// whose epsilon is NaN are skipped; with no finite epsilon the result is +inf with best_order NaN.
// A negative minimum (possible for the improved conversion at large delta) is reported as 0.
PrivacySpent convert(const std::vector<double>& orders, const std::vector<double>& rdp, double delta,
                     RdpConversion conversion) {
  PrivacySpent out;
  out.conversion = conversion;
  if (std::all_of(rdp.begin(), rdp.end(), [](double r) { return r == 0; })) return out;
  out.epsilon = kInf;
  out.best_order = kNaN;
  const double log_delta = std::log(delta);
  for (std::size_t k = 0; k < orders.size(); ++k) {
    const double eps = convert_one(orders[k], rdp[k], log_delta, conversion);
    if (std::isnan(eps) || eps == kInf) continue;
    if (std::isnan(out.best_order) || eps < out.epsilon) {
      out.epsilon = eps;
      out.best_order = orders[k];
    }
  }
  if (out.epsilon < 0) out.epsilon = 0;
  return out;
}

// The epsilon the conversion cannot go below whatever the noise: its value at RDP -> 0.
double epsilon_floor(const std::vector<double>& orders, double delta, RdpConversion conversion) {
  const double log_delta = std::log(delta);
  double best = kInf;
  for (const double a : orders) best = std::min(best, convert_one(a, 0.0, log_delta, conversion));
  return std::max(best, 0.0);
}

}  // namespace

std::string_view to_string(RdpConversion conversion) {
  switch (conversion) {
    case RdpConversion::Classic:
      return "classic";
    case RdpConversion::Improved:
      return "improved";
  }
  return "unknown";
}

std::vector<double> default_rdp_orders() {
  std::vector<double> orders;
  orders.reserve(99 + 52);
  for (int x = 1; x < 100; ++x) orders.push_back(1.0 + x / 10.0);  // the same doubles as Opacus's 1 + x / 10.0
  for (int a = 12; a < 64; ++a) orders.push_back(a);
  return orders;
}

double rdp_sampled_gaussian(double q, double sigma, double alpha) {
  if (!(q >= 0 && q <= 1))
    throw core::Error("sampling rate q must lie in [0, 1], got " + num(q), "q is the expected batch size over the dataset size");
  if (!(sigma >= 0)) throw core::Error("noise multiplier must be non-negative, got " + num(sigma));
  if (!(alpha > 1) || !std::isfinite(alpha)) throw core::Error("RDP order must be finite and above 1, got " + num(alpha));
  if (q == 0) return 0;
  if (sigma == 0) return kInf;
  if (std::isinf(sigma)) return 0;
  const double gaussian = alpha / (2.0 * sigma * sigma);
  if (std::isinf(gaussian)) return kInf;  // sigma^2 underflows
  if (gaussian == 0) return 0;            // sigma^2 overflows
  if (q == 1) return gaussian;

  double rdp;
  if (alpha == std::floor(alpha)) {
    rdp = log1pexp(log_a_minus_one_integer(q, sigma, alpha)) / (alpha - 1);
  } else {
    rdp = log_a_fractional(q, sigma, alpha) / (alpha - 1);
  }
  // Joint convexity of E_{mu0}[(.)^a] gives A_a <= (1 - q) + q exp((a - 1) a / (2 sigma^2)); the bound is
  // never below the exact value, so clamping to it (and to 0) only removes rounding.
  const double bound = log_mix(q, (alpha - 1) * gaussian) / (alpha - 1);
  if (!(rdp >= 0)) rdp = 0;  // also catches NaN from a fully cancelled sum
  return std::min(rdp, bound);
}

PrivacySpent epsilon_spent(double q, double sigma, std::uint64_t steps, double delta, RdpConversion conversion,
                           const std::vector<double>& orders) {
  check_delta(delta);
  check_orders(orders);
  std::vector<double> rdp(orders.size());
  for (std::size_t k = 0; k < orders.size(); ++k) {
    const double r = rdp_sampled_gaussian(q, sigma, orders[k]);
    rdp[k] = steps == 0 ? 0.0 : r * static_cast<double>(steps);
  }
  return convert(orders, rdp, delta, conversion);
}

RdpAccountant::RdpAccountant(std::vector<double> orders) : orders_(std::move(orders)) {
  check_orders(orders_);
  rdp_.assign(orders_.size(), 0.0);
}

void RdpAccountant::step(double q, double sigma, std::uint64_t steps) {
  // Training calls this once per batch with the same (q, sigma): keep the last per-order RDP vector
  // (per thread) so that a step costs a comparison, not a series per order.
  struct Cache {
    double q = kNaN, sigma = kNaN;
    std::vector<double> orders, rdp;
  };
  thread_local Cache cache;
  if (!(cache.q == q && cache.sigma == sigma && cache.orders == orders_)) {
    std::vector<double> rdp(orders_.size());
    for (std::size_t k = 0; k < orders_.size(); ++k) rdp[k] = rdp_sampled_gaussian(q, sigma, orders_[k]);  // validates
    cache.q = q;
    cache.sigma = sigma;
    cache.orders = orders_;
    cache.rdp = std::move(rdp);
  }
  if (steps == 0) return;
  for (std::size_t k = 0; k < orders_.size(); ++k) rdp_[k] += cache.rdp[k] * static_cast<double>(steps);
  steps_ += steps;
}

PrivacySpent RdpAccountant::spent(double delta, RdpConversion conversion) const {
  check_delta(delta);
  return convert(orders_, rdp_, delta, conversion);
}

double calibrate_noise_multiplier(double target_epsilon, double q, std::uint64_t steps, double delta,
                                  RdpConversion conversion, double tolerance) {
  if (!(target_epsilon > 0) || !std::isfinite(target_epsilon))
    throw core::Error("target epsilon must be a positive number, got " + num(target_epsilon),
                      "pass --target-epsilon with a value above 0, e.g. 3 (smaller means more noise)");
  if (!(tolerance > 0)) throw core::Error("calibration tolerance must be positive, got " + num(tolerance));
  check_delta(delta);
  if (!(q >= 0 && q <= 1))
    throw core::Error("sampling rate q must lie in [0, 1], got " + num(q), "q is the expected batch size over the dataset size");
  if (q == 0 || steps == 0) return 0.0;  // nothing is ever released: no noise is needed

  const std::vector<double> orders = default_rdp_orders();
  const double floor = epsilon_floor(orders, delta, conversion);
  if (target_epsilon <= floor)
    throw core::Error("target epsilon " + num(target_epsilon) + " cannot be reached at delta " + num(delta) +
                          ": with RDP orders up to " + num(orders.back()) + " the " + std::string(to_string(conversion)) +
                          " conversion gives at least epsilon " + num(floor) + " whatever the noise",
                      "raise --target-epsilon above " + num(floor) + " or raise --delta");
  auto eps = [&](double sigma) { return epsilon_spent(q, sigma, steps, delta, conversion, orders).epsilon; };

  // Bracket: eps(lo) > target >= eps(hi); eps is non-increasing in sigma because every order's RDP is.
  double lo = 0, hi = 1, eps_hi = eps(hi);
  while (eps_hi > target_epsilon) {
    lo = hi;
    hi *= 2;
    if (hi > kMaxSigma)
      throw core::Error("target epsilon " + num(target_epsilon) + " needs a noise multiplier above " + num(kMaxSigma) + " for " +
                            std::to_string(steps) + " steps at sampling rate " + num(q),
                        "raise --target-epsilon or --delta, train for fewer epochs, or use a smaller batch");
    eps_hi = eps(hi);
  }
  while (target_epsilon - eps_hi > tolerance && hi - lo > 1e-12 * hi) {
    const double mid = 0.5 * (lo + hi);
    const double eps_mid = eps(mid);
    if (eps_mid <= target_epsilon) {
      hi = mid;
      eps_hi = eps_mid;
    } else {
      lo = mid;
    }
  }
  return hi;
}

}  // namespace aegis::privacy
