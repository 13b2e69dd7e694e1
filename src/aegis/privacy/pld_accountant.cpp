// Privacy-loss-distribution accountant of the Poisson-sampled Gaussian (see pld_accountant.h).
//
// Notation: mu0 = N(0, s^2), mu1 = N(1, s^2), mu = (1 - q) mu0 + q mu1. For a pair (P, Q) the privacy loss
// is L = log(P / Q) and the hockey-stick divergence delta(eps) = P[L > eps] - e^eps Q[L > eps] =
// E_P[(1 - e^(eps - L))_+]. Both pairs have monotone losses in the outcome x, so delta(eps) is exact in
// terms of Gaussian tails:
//   remove, (P, Q) = (mu, mu0): L(x) = log(1 - q + q e^((2x - 1)/(2 s^2))), increasing, > log(1 - q);
//   add,    (P, Q) = (mu0, mu): L(x) = -log(1 - q + q e^((2x - 1)/(2 s^2))), decreasing, < -log(1 - q).
#include "aegis/privacy/log_erfc.h"
#include "aegis/privacy/pld_accountant.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string>
#include <utility>

#include "aegis/core/error.h"

namespace aegis::privacy {

struct PldAccountant::Composed {
  struct Direction {
    std::int64_t offset = 0;   // privacy-loss index of pmf[0]; loss = (offset + r) * h
    std::vector<double> pmf;   // composed mass per grid point
    double infinity_mass = 0;  // mass at loss +inf: truncated tails, bounded by the window
  };
  Direction remove, add;
  bool nothing = true;  // no step released anything: (0, 0)
  bool infinite = false;
};

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kLn2 = 0.69314718055994530942;
constexpr double kSqrt2 = 1.41421356237309504880;
constexpr double kPi = 3.14159265358979323846;

// Tails: the mass at +inf a single step may get from the upper truncation is at most
// kInfinityBudget / steps (so at most about kInfinityBudget after composition); the lower truncation
// drops at most kLowerTail of a step's mass (the construction stays pessimistic whatever it drops);
// the FFT window leaves out at most kWindowTail on each side, counted as mass at +inf.
constexpr double kInfinityBudget = 1e-14;
constexpr double kLowerTail = 1e-16;
constexpr double kWindowTail = 1e-18;
constexpr std::int64_t kMaxGrid = std::int64_t{1} << 22;  // 4M points: about 200 MB of FFT buffers

std::string num(double v) {
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.6g", v);
  return buffer;
}

double log_normal_cdf(double t) { return -kLn2 + log_erfc(-t / kSqrt2); }  // log P[N(0,1) <= t]
double log_normal_sf(double t) { return -kLn2 + log_erfc(t / kSqrt2); }   // log P[N(0,1) > t]
double log_expm1(double c) { return c > 40 ? c + std::log1p(-std::exp(-c)) : std::log(std::expm1(c)); }
// e^a - e^b for a >= b (0 otherwise).
double exp_diff(double a, double b) { return a > b ? std::exp(a) * -std::expm1(b - a) : 0.0; }

// One direction of one step of the sampled Gaussian.
class StepPair {
 public:
  StepPair(double q, double sigma, bool remove)
      : q_(q), s_(sigma), remove_(remove), log_q_(std::log(q)), log_1mq_(std::log1p(-q)) {}

  // delta(eps), the hockey-stick divergence of P over Q.
  double delta(double eps) const {
    if (remove_) {
      if (eps <= log_1mq_) return -std::expm1(eps);  // L > eps everywhere
      const double log_diff = q_ == 1 ? eps : log_1mq_ + log_expm1(eps - log_1mq_);  // log(e^eps - (1-q))
      const double x = s_ * s_ * (log_diff - log_q_) + 0.5;                           // L(x) = eps
      return exp_diff(log_q_ + log_normal_sf((x - 1) / s_), log_diff + log_normal_sf(x / s_));
    }
    if (q_ < 1 && eps >= -log_1mq_) return 0.0;  // L < -log(1-q) everywhere
    const double log_diff = q_ == 1 ? -eps : log_1mq_ + log_expm1(-eps - log_1mq_);  // log(e^-eps - (1-q))
    const double x = s_ * s_ * (log_diff - log_q_) + 0.5;                              // L(x) = eps
    return exp_diff(eps + log_diff + log_normal_cdf(x / s_), eps + log_q_ + log_normal_cdf((x - 1) / s_));
  }

  // P[L <= eps].
  double lower_mass(double eps) const {
    if (remove_) {
      if (eps <= log_1mq_) return 0.0;
      const double log_diff = q_ == 1 ? eps : log_1mq_ + log_expm1(eps - log_1mq_);
      const double x = s_ * s_ * (log_diff - log_q_) + 0.5;
      return (1 - q_) * std::exp(log_normal_cdf(x / s_)) + q_ * std::exp(log_normal_cdf((x - 1) / s_));
    }
    if (q_ < 1 && eps >= -log_1mq_) return 1.0;
    const double log_diff = q_ == 1 ? -eps : log_1mq_ + log_expm1(-eps - log_1mq_);
    const double x = s_ * s_ * (log_diff - log_q_) + 0.5;
    return std::exp(log_normal_sf(x / s_));
  }

  // The largest loss of the add pair (q < 1), or +inf.
  double max_loss() const { return remove_ || q_ == 1 ? kInf : -log_1mq_; }

 private:
  double q_, s_;
  bool remove_;
  double log_q_, log_1mq_;
};

// A discretised single-step PLD: mass pmf[k - lo] at loss k * h, and mass at +inf.
struct StepPld {
  std::int64_t lo = 0;
  std::vector<double> pmf;
  double infinity_mass = 0;
  std::uint64_t steps = 0;
};

void check_grid(std::int64_t points, double h) {
  if (points > kMaxGrid)
    throw core::Error("the privacy loss spreads over more than " + std::to_string(kMaxGrid) + " grid points of " + num(h),
                      "use a coarser PLD discretization, more noise, or the RDP accountant");
}

// Connect-the-dots (Doroshenko et al. 2022): the PLD whose delta(eps), as a function of e^eps, is the
// piecewise-linear interpolation of the true one through the grid points k * h for lo <= k <= hi (and
// through (e^eps = 0, delta = 1), constant beyond hi). delta(eps) is convex in e^eps, so the
// interpolation lies above it: the discrete PLD dominates the true one, and so do their compositions.
StepPld connect_the_dots(const StepPair& pair, double h, std::uint64_t steps) {
  const double infinity_budget = kInfinityBudget / static_cast<double>(steps);
  // Upper end: delta(hi h) <= budget (it becomes the mass at +inf), or the largest loss.
  std::int64_t hi = 1;
  const double cap = pair.max_loss() == kInf ? kInf : std::ceil(pair.max_loss() / h);
  if (static_cast<double>(hi) < cap) {
    while (pair.delta(static_cast<double>(hi) * h) > infinity_budget && static_cast<double>(hi) < cap) {
      check_grid(hi, h);
      hi *= 2;
    }
    std::int64_t below = hi / 2;  // delta(below h) > budget unless hi == 1
    while (hi - below > 1) {
      const std::int64_t mid = below + (hi - below) / 2;
      if (pair.delta(static_cast<double>(mid) * h) > infinity_budget) {
        below = mid;
      } else {
        hi = mid;
      }
    }
    if (static_cast<double>(hi) > cap) hi = static_cast<std::int64_t>(cap);
  } else {
    hi = static_cast<std::int64_t>(cap);
  }
  // Lower end: P[L <= lo h] <= kLowerTail.
  std::int64_t lo = 0;
  if (pair.lower_mass(0.0) > kLowerTail) {
    std::int64_t step = 1;
    while (pair.lower_mass(static_cast<double>(-step) * h) > kLowerTail) {
      check_grid(step, h);
      step *= 2;
    }
    std::int64_t above = -(step / 2), low = -step;  // lower_mass(above h) > tail >= lower_mass(low h)
    if (step == 1) above = 0;
    while (above - low > 1) {
      const std::int64_t mid = low + (above - low) / 2;
      if (pair.lower_mass(static_cast<double>(mid) * h) > kLowerTail) {
        above = mid;
      } else {
        low = mid;
      }
    }
    lo = low;
  }
  if (hi <= lo) hi = lo + 1;
  check_grid(hi - lo + 1, h);

  const std::size_t n = static_cast<std::size_t>(hi - lo + 1);
  std::vector<double> d(n);
  for (std::size_t k = 0; k < n; ++k) d[k] = pair.delta(static_cast<double>(lo + static_cast<std::int64_t>(k)) * h);
  // With y_k = e^(k h): p_k = y_k (slope right of y_k - slope left of y_k) of the interpolation.
  const double em1 = std::expm1(h), eh = std::exp(h);
  StepPld out;
  out.lo = lo;
  out.steps = steps;
  out.pmf.resize(n);
  out.pmf[0] = (d[1] - d[0]) / em1 + (1 - d[0]);  // the left segment comes from (0, 1)
  for (std::size_t k = 1; k + 1 < n; ++k) out.pmf[k] = ((d[k + 1] - d[k]) - (d[k] - d[k - 1]) * eh) / em1;
  out.pmf[n - 1] = (d[n - 2] - d[n - 1]) * eh / em1;  // flat to the right
  for (double& p : out.pmf) p = std::max(p, 0.0);
  out.infinity_mass = d[n - 1];
  return out;
}

// The non-zero masses of a step PLD as (grid index, log mass), for its moment generating function.
std::vector<std::pair<double, double>> log_masses(const StepPld& pld) {
  std::vector<std::pair<double, double>> out;
  for (std::size_t k = 0; k < pld.pmf.size(); ++k)
    if (pld.pmf[k] > 0) out.emplace_back(static_cast<double>(pld.lo + static_cast<std::int64_t>(k)), std::log(pld.pmf[k]));
  return out;
}

// log sum_k p_k e^(lambda k): the log moment generating function in grid units.
double log_mgf(const std::vector<std::pair<double, double>>& masses, double lambda) {
  double top = -kInf;
  for (const auto& [index, log_p] : masses) top = std::max(top, log_p + lambda * index);
  if (top == -kInf) return -kInf;
  double sum = 0;
  for (const auto& [index, log_p] : masses) sum += std::exp(log_p + lambda * index - top);
  return top + std::log(sum);
}

// In-place radix-2 FFT on separate real and imaginary arrays; `inverse` uses e^(+2 pi i / n) and does not
// scale. (Plain arithmetic rather than std::complex, whose operator* handles inf/NaN the slow way.)
void fft(std::vector<double>& re, std::vector<double>& im, bool inverse) {
  const std::size_t n = re.size();
  for (std::size_t i = 1, j = 0; i < n; ++i) {
    std::size_t bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) {
      std::swap(re[i], re[j]);
      std::swap(im[i], im[j]);
    }
  }
  std::vector<double> wr(n / 2), wi(n / 2);
  for (std::size_t k = 0; k < n / 2; ++k) {
    const double angle = (inverse ? 2 : -2) * kPi * static_cast<double>(k) / static_cast<double>(n);
    wr[k] = std::cos(angle);
    wi[k] = std::sin(angle);
  }
  std::vector<double> sr(n / 2), si(n / 2);  // this stage's twiddles, contiguous
  for (std::size_t len = 2; len <= n; len <<= 1) {
    const std::size_t half = len / 2, stride = n / len;
    for (std::size_t k = 0; k < half; ++k) {
      sr[k] = wr[k * stride];
      si[k] = wi[k * stride];
    }
    for (std::size_t i = 0; i < n; i += len)
      for (std::size_t k = 0; k < half; ++k) {
        const std::size_t p = i + k, q = p + half;
        const double vr = re[q] * sr[k] - im[q] * si[k];
        const double vi = re[q] * si[k] + im[q] * sr[k];
        re[q] = re[p] - vr;
        im[q] = im[p] - vi;
        re[p] += vr;
        im[p] += vi;
      }
  }
}

// The composition of every segment's steps of one direction.
PldAccountant::Composed::Direction compose(const std::vector<StepPld>& parts, double h) {
  PldAccountant::Composed::Direction out;
  // Mass at +inf: 1 - prod (1 - p_inf)^steps.
  double log_finite = 0;
  for (const auto& part : parts) log_finite += static_cast<double>(part.steps) * std::log1p(-part.infinity_mass);

  // Window [a, b] of the sum of all losses (grid units) by Chernoff bounds: P[S >= b] <= e^(Lambda(l) - l b),
  // P[S <= a] <= e^(Lambda(-l) + l a), Lambda the summed log MGF.
  const double log_tail = std::log(kWindowTail);
  double b = kInf, a = -kInf;
  std::int64_t min_index = 0, max_index = 0;
  for (const auto& part : parts) {
    min_index += part.lo * static_cast<std::int64_t>(part.steps);
    max_index += (part.lo + static_cast<std::int64_t>(part.pmf.size()) - 1) * static_cast<std::int64_t>(part.steps);
  }
  std::vector<std::vector<std::pair<double, double>>> masses;
  for (const auto& part : parts) masses.push_back(log_masses(part));
  for (double lambda = 1e-7; lambda <= 10; lambda *= 2) {  // per grid unit: 1e-7 / h .. 10 / h per unit of loss
    double up = 0, down = 0;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      up += static_cast<double>(parts[i].steps) * log_mgf(masses[i], lambda);
      down += static_cast<double>(parts[i].steps) * log_mgf(masses[i], -lambda);
    }
    b = std::min(b, (up - log_tail) / lambda);
    a = std::max(a, (log_tail - down) / lambda);
  }
  const double lo_bound = std::max(std::floor(a), static_cast<double>(min_index));
  const double hi_bound = std::min(std::ceil(b), static_cast<double>(max_index));
  const auto lo = static_cast<std::int64_t>(lo_bound);
  const auto hi = std::max(static_cast<std::int64_t>(hi_bound), lo);
  check_grid(hi - lo + 1, h);
  std::size_t n = 1;
  while (static_cast<std::int64_t>(n) < hi - lo + 1) n <<= 1;
  if (n < 2) n = 2;

  // Product of the characteristic functions, each segment's raised to its step count.
  std::vector<double> total_re(n, 1.0), total_im(n, 0.0), re(n), im(n);
  const auto wrap = [n](std::int64_t index) {
    const auto m = static_cast<std::int64_t>(n);
    return static_cast<std::size_t>(((index % m) + m) % m);
  };
  for (const auto& part : parts) {
    std::fill(re.begin(), re.end(), 0.0);
    std::fill(im.begin(), im.end(), 0.0);
    for (std::size_t k = 0; k < part.pmf.size(); ++k) re[wrap(part.lo + static_cast<std::int64_t>(k))] += part.pmf[k];
    fft(re, im, false);
    const double power = static_cast<double>(part.steps);
    for (std::size_t k = 0; k < n; ++k) {
      // (r e^(i phi))^steps, in polar form: |.|^steps e^(i steps phi)
      const double magnitude = std::hypot(re[k], im[k]);
      const double scaled = magnitude == 0 ? 0.0 : std::pow(magnitude, power);
      const double phase = power * std::atan2(im[k], re[k]);
      const double pr = scaled * std::cos(phase), pi = scaled * std::sin(phase);
      const double tr = total_re[k] * pr - total_im[k] * pi;
      total_im[k] = total_re[k] * pi + total_im[k] * pr;
      total_re[k] = tr;
    }
  }
  fft(total_re, total_im, true);
  out.offset = lo;
  out.pmf.assign(n, 0.0);
  for (std::size_t r = 0; r < n; ++r) {
    // residue r holds the sums S = r (mod n); the one in the window is lo + ((r - lo) mod n).
    const std::size_t slot = wrap(static_cast<std::int64_t>(r) - lo);
    out.pmf[slot] = std::max(total_re[r] / static_cast<double>(n), 0.0);
  }
  out.infinity_mass = std::min(1.0, -std::expm1(log_finite) + 2 * kWindowTail);
  return out;
}

double direction_delta(const PldAccountant::Composed::Direction& d, double h, double eps) {
  double delta = d.infinity_mass;
  for (std::size_t r = d.pmf.size(); r-- > 0;) {
    const double loss = static_cast<double>(d.offset + static_cast<std::int64_t>(r)) * h;
    if (loss <= eps) break;
    delta += d.pmf[r] * -std::expm1(eps - loss);
  }
  return std::min(delta, 1.0);
}

// The smallest eps with delta(eps) <= target for one direction (may be negative), or +inf.
double direction_epsilon(const PldAccountant::Composed::Direction& d, double h, double target) {
  if (d.infinity_mass >= target) return kInf;
  // Scanning down: for eps in [t_j, t_(j+1)), delta(eps) = inf + A_j - e^(eps - t_j) C_j with
  // A_j = sum_(i>j) p_i and C_j = sum_(i>j) p_i e^(t_j - t_i).
  double above = 0, weighted = 0;
  for (std::size_t j = d.pmf.size(); j-- > 0;) {
    const double t = static_cast<double>(d.offset + static_cast<std::int64_t>(j)) * h;
    const double delta_here = d.infinity_mass + above - weighted;
    if (delta_here > target) return t + std::log((d.infinity_mass + above - target) / weighted);
    above += d.pmf[j];
    weighted = (weighted + d.pmf[j]) * std::exp(-h);
  }
  return -kInf;  // delta is below the target everywhere on the window
}

void check_step(double q, double sigma) {
  if (!(q >= 0 && q <= 1))
    throw core::Error("sampling rate q must lie in [0, 1], got " + num(q), "q is the expected batch size over the dataset size");
  if (!(sigma >= 0)) throw core::Error("noise multiplier must be non-negative, got " + num(sigma));
}

}  // namespace

PldAccountant::PldAccountant(double discretization) : discretization_(discretization) {
  if (!(discretization > 0 && discretization <= 1))
    throw core::Error("PLD discretization must lie in (0, 1], got " + num(discretization), "the default 1e-4 is a good choice");
}

void PldAccountant::step(double q, double sigma, std::uint64_t steps) {
  check_step(q, sigma);
  if (steps == 0) return;
  steps_ += steps;
  if (q == 0 || std::isinf(sigma)) return;
  composed_.reset();
  if (sigma == 0) {
    non_private_ = true;
    return;
  }
  if (!segments_.empty() && segments_.back().q == q && segments_.back().sigma == sigma) {
    segments_.back().steps += steps;
  } else {
    segments_.push_back({q, sigma, steps});
  }
}

const PldAccountant::Composed& PldAccountant::composed() const {
  if (composed_) return *composed_;
  auto c = std::make_shared<Composed>();
  c->infinite = non_private_;
  c->nothing = segments_.empty() && !non_private_;
  if (!segments_.empty() && !non_private_) {
    std::vector<StepPld> remove, add;
    for (const auto& s : segments_) {
      remove.push_back(connect_the_dots(StepPair(s.q, s.sigma, true), discretization_, s.steps));
      add.push_back(connect_the_dots(StepPair(s.q, s.sigma, false), discretization_, s.steps));
    }
    c->remove = compose(remove, discretization_);
    c->add = compose(add, discretization_);
  }
  composed_ = std::move(c);
  return *composed_;
}

double PldAccountant::epsilon(double delta) const {
  if (!(delta > 0 && delta < 1))
    throw core::Error("delta must lie strictly between 0 and 1, got " + num(delta),
                      "use a delta well below 1/N for N training records, e.g. --delta 1e-5");
  const auto& c = composed();
  if (c.infinite) return kInf;
  if (c.nothing) return 0.0;
  const double eps = std::max(direction_epsilon(c.remove, discretization_, delta), direction_epsilon(c.add, discretization_, delta));
  return std::max(eps, 0.0);
}

double PldAccountant::delta(double epsilon) const {
  if (!(epsilon >= 0)) throw core::Error("epsilon must be non-negative, got " + num(epsilon));
  const auto& c = composed();
  if (c.infinite) return 1.0;
  if (c.nothing) return 0.0;
  return std::max(direction_delta(c.remove, discretization_, epsilon), direction_delta(c.add, discretization_, epsilon));
}

double pld_epsilon(double q, double sigma, std::uint64_t steps, double delta, double discretization) {
  PldAccountant accountant(discretization);
  accountant.step(q, sigma, steps);
  return accountant.epsilon(delta);
}

}  // namespace aegis::privacy
