// Tests of the Rényi-DP accountant (src/aegis/privacy/accountant.h).
#include "aegis/privacy/accountant.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "aegis/core/error.h"
#include "aegis/privacy/pld_accountant.h"

namespace aegis::privacy {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// The three MNIST runs of Opacus's README / tutorials: batch 240 of 60,000, delta 1e-5.
constexpr double kMnistQ = 240.0 / 60000.0;
constexpr double kMnistDelta = 1e-5;
struct Published {
  double sigma;
  std::uint64_t steps;
  double classic;   // Opacus's published figures (classic conversion), printed to 2 decimals
  double improved;  // what current Opacus reports for the same run, printed to 3 decimals
  double classic_order;
  double improved_order;  // the best orders current Opacus returns (measured with its rdp.py)
};
constexpr Published kPublished[] = {
    {1.3, 3750, 1.16, 0.922, 17, 17},
    {1.1, 15000, 2.91, 2.503, 9.1, 8.4},
    {0.7, 11250, 6.86, 6.093, 3.9, 3.8},
};

TEST(RdpAccountant, OpacusPublishedClassicFigures) {
  for (const auto& run : kPublished) {
    const auto spent = epsilon_spent(kMnistQ, run.sigma, run.steps, kMnistDelta, RdpConversion::Classic);
    EXPECT_NEAR(spent.epsilon, run.classic, 0.005) << "sigma " << run.sigma;
    EXPECT_EQ(spent.conversion, RdpConversion::Classic);
    EXPECT_DOUBLE_EQ(spent.best_order, run.classic_order) << "sigma " << run.sigma;
  }
}

TEST(RdpAccountant, OpacusCurrentImprovedFigures) {
  for (const auto& run : kPublished) {
    const auto spent = epsilon_spent(kMnistQ, run.sigma, run.steps, kMnistDelta, RdpConversion::Improved);
    EXPECT_NEAR(spent.epsilon, run.improved, 1e-3) << "sigma " << run.sigma;
    EXPECT_EQ(spent.conversion, RdpConversion::Improved);
    EXPECT_DOUBLE_EQ(spent.best_order, run.improved_order) << "sigma " << run.sigma;
  }
}

TEST(RdpAccountant, ImprovedConversionIsTighterThanClassic) {
  for (const double sigma : {0.5, 0.8, 1.0, 2.0, 4.0})
    for (const std::uint64_t steps : {1ULL, 100ULL, 10000ULL}) {
      const double classic = epsilon_spent(0.01, sigma, steps, 1e-6, RdpConversion::Classic).epsilon;
      const double improved = epsilon_spent(0.01, sigma, steps, 1e-6, RdpConversion::Improved).epsilon;
      EXPECT_LT(improved, classic) << sigma << " " << steps;
    }
}

// ---------------------------------------------------------------------------------------------------
// Independent check: the Rényi divergence between mu = (1-q) N(0,s^2) + q N(1,s^2) and mu0 = N(0,s^2)
// by plain composite Simpson quadrature, both directions. To keep the relative accuracy where A is
// close to 1, the integrand is mu0 * ((mu/mu0)^lambda - 1), whose integral is A - 1.

// log((1 - q) + q e^x) for any x.
double log_mixture_ratio(double q, double x) {
  if (x > 0) return x + std::log(q + (1 - q) * std::exp(-x));
  return std::log1p(q * std::expm1(x));
}

// integral over z of mu0(z) * ((mu(z)/mu0(z))^lambda - 1).
double quadrature_a_minus_one(double q, double sigma, double lambda, double lo, double hi, int intervals) {
  const double h = (hi - lo) / intervals;
  const double log_norm = -0.5 * std::log(2 * M_PI) - std::log(sigma);
  auto f = [&](double z) {
    const double log_mu0 = log_norm - z * z / (2 * sigma * sigma);
    const double t = lambda * log_mixture_ratio(q, (2 * z - 1) / (2 * sigma * sigma));
    if (t > 1) return std::exp(log_mu0 + t) * -std::expm1(-t);
    return std::exp(log_mu0) * std::expm1(t);
  };
  double sum = f(lo) + f(hi);
  for (int k = 1; k < intervals; ++k) sum += f(lo + k * h) * (k % 2 ? 4.0 : 2.0);
  return sum * h / 3;
}

double quadrature_rdp(double q, double sigma, double alpha) {
  const double lo = -(alpha + 1) - 16 * sigma;
  const double hi = alpha + 1 + 16 * sigma;
  const int intervals = 400000;
  // D_a(mu || mu0) = log E_mu0[(mu/mu0)^a] / (a - 1); D_a(mu0 || mu) = log E_mu0[(mu/mu0)^(1-a)] / (a - 1).
  const double forward = std::log1p(quadrature_a_minus_one(q, sigma, alpha, lo, hi, intervals)) / (alpha - 1);
  const double backward = std::log1p(quadrature_a_minus_one(q, sigma, 1 - alpha, lo, hi, intervals)) / (alpha - 1);
  return std::max(forward, backward);
}

TEST(RdpSampledGaussian, MatchesNumericalIntegrationOfRenyiDivergence) {
  struct Case {
    double q, sigma, alpha;
  };
  const Case cases[] = {
      {0.01, 1.0, 2.0},   {0.01, 1.0, 2.5},  {0.004, 1.3, 1.5},  {0.05, 0.7, 3.3},   {0.2, 2.0, 10.5},
      {0.001, 0.5, 7.25}, {0.5, 1.0, 1.7},   {0.9, 1.5, 4.4},    {0.3, 0.8, 6.0},    {0.01, 50.0, 2.5},
      {0.05, 1.0, 1.1},   {0.004, 0.7, 3.8}, {0.1, 5.0, 32.0},   {0.02, 3.0, 20.5},
  };
  for (const auto& c : cases) {
    const double expected = quadrature_rdp(c.q, c.sigma, c.alpha);
    const double got = rdp_sampled_gaussian(c.q, c.sigma, c.alpha);
    EXPECT_NEAR(got, expected, 1e-7 * expected) << "q " << c.q << " sigma " << c.sigma << " alpha " << c.alpha;
  }
}

TEST(RdpSampledGaussian, FullBatchIsThePlainGaussian) {
  for (const double sigma : {0.3, 1.0, 2.5, 100.0})
    for (const double alpha : {1.1, 1.5, 2.0, 7.0, 12.5, 63.0})
      EXPECT_DOUBLE_EQ(rdp_sampled_gaussian(1.0, sigma, alpha), alpha / (2 * sigma * sigma));
}

TEST(RdpSampledGaussian, EdgeCases) {
  EXPECT_EQ(rdp_sampled_gaussian(0.0, 1.0, 2.0), 0.0);
  EXPECT_EQ(rdp_sampled_gaussian(0.0, 0.0, 2.5), 0.0);  // nothing sampled: nothing leaks, noise or not
  EXPECT_EQ(rdp_sampled_gaussian(0.01, 0.0, 2.0), kInf);
  EXPECT_EQ(rdp_sampled_gaussian(0.01, 0.0, 2.5), kInf);
  EXPECT_EQ(rdp_sampled_gaussian(0.01, 1e-170, 2.5), kInf);  // sigma^2 underflows
  EXPECT_EQ(rdp_sampled_gaussian(0.01, kInf, 2.5), 0.0);
  EXPECT_EQ(rdp_sampled_gaussian(0.01, 1e170, 2.0), 0.0);  // sigma^2 overflows

  // Order 2 in closed form: A_2 = 1 + q^2 (e^{1/sigma^2} - 1); stays accurate for huge sigma.
  for (const double q : {1e-6, 0.004, 0.3, 0.9})
    for (const double sigma : {0.4, 1.0, 10.0, 1e3, 1e6}) {
      const double expected = std::log1p(q * q * std::expm1(1 / (sigma * sigma)));
      EXPECT_NEAR(rdp_sampled_gaussian(q, sigma, 2.0), expected, 1e-12 * expected) << q << " " << sigma;
    }
  // Fractional orders at huge sigma: RDP -> alpha q^2 / (2 sigma^2), no rounding floor.
  for (const double alpha : {1.1, 2.5, 10.5}) {
    const double expected = alpha * 0.01 * 0.01 / (2 * 1e8);
    EXPECT_NEAR(rdp_sampled_gaussian(0.01, 1e4, alpha), expected, 1e-6 * expected) << alpha;
  }
  // Tiny q, large orders, small sigma: finite, positive, and below the plain Gaussian.
  for (const double alpha : {10.5, 63.0, 256.0, 1000.5}) {
    const double rdp = rdp_sampled_gaussian(1e-9, 0.5, alpha);
    EXPECT_TRUE(std::isfinite(rdp)) << alpha;
    EXPECT_GT(rdp, 0) << alpha;
    EXPECT_LE(rdp, alpha / (2 * 0.25)) << alpha;
  }
}

TEST(RdpSampledGaussian, FractionalSeriesJoinsIntegerExpansion) {
  for (const double q : {0.001, 0.01, 0.1, 0.4, 0.7})
    for (const double sigma : {0.6, 1.0, 3.0})
      for (const double n : {2.0, 3.0, 8.0, 20.0}) {
        const double at = rdp_sampled_gaussian(q, sigma, n);
        const double below = rdp_sampled_gaussian(q, sigma, n - 1e-7);
        const double above = rdp_sampled_gaussian(q, sigma, n + 1e-7);
        EXPECT_LE(below, at * (1 + 1e-9)) << q << " " << sigma << " " << n;
        EXPECT_GE(above, at * (1 - 1e-9)) << q << " " << sigma << " " << n;
        EXPECT_NEAR(below, at, 1e-5 * at) << q << " " << sigma << " " << n;
        EXPECT_NEAR(above, at, 1e-5 * at) << q << " " << sigma << " " << n;
      }
}

TEST(RdpSampledGaussian, NonDecreasingInOrderAndNonIncreasingInSigma) {
  const auto orders = default_rdp_orders();
  for (const double q : {0.001, 0.02, 0.3}) {
    double previous = 0;
    for (const double alpha : orders) {
      const double rdp = rdp_sampled_gaussian(q, 1.1, alpha);
      EXPECT_GE(rdp, previous * (1 - 1e-12)) << q << " " << alpha;
      previous = rdp;
    }
    for (const double alpha : {1.5, 4.0, 12.0}) {
      double last = kInf;
      for (const double sigma : {0.4, 0.6, 0.9, 1.3, 2.0, 5.0, 20.0}) {
        const double rdp = rdp_sampled_gaussian(q, sigma, alpha);
        EXPECT_LT(rdp, last) << q << " " << alpha << " " << sigma;
        last = rdp;
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------------

TEST(RdpAccountant, MoreStepsSpendMoreAndMoreNoiseSpendsLess) {
  for (const auto conversion : {RdpConversion::Classic, RdpConversion::Improved}) {
    double last = 0;
    for (const std::uint64_t steps : {1ULL, 10ULL, 100ULL, 1000ULL, 10000ULL, 100000ULL}) {
      const double eps = epsilon_spent(0.01, 1.0, steps, 1e-5, conversion).epsilon;
      EXPECT_GT(eps, last) << steps;
      last = eps;
    }
    last = kInf;
    for (const double sigma : {0.5, 0.7, 1.0, 1.3, 2.0, 4.0, 10.0}) {
      const double eps = epsilon_spent(0.01, sigma, 1000, 1e-5, conversion).epsilon;
      EXPECT_LT(eps, last) << sigma;
      last = eps;
    }
  }
}

TEST(RdpAccountant, AccumulatesHeterogeneousSegments) {
  // Opacus's rdp.py docstring: (q, sigma, steps) = (1e-5, 1.0, 10) then (1e-4, 3.0, 4), orders 2..32,
  // delta 1e-5 -> (0.336, 23) with its (improved) conversion.
  std::vector<double> orders;
  for (int a = 2; a <= 32; ++a) orders.push_back(a);
  RdpAccountant accountant(orders);
  EXPECT_EQ(accountant.steps(), 0u);
  accountant.step(1e-5, 1.0, 10);
  accountant.step(1e-4, 3.0, 4);
  EXPECT_EQ(accountant.steps(), 14u);
  const auto improved = accountant.spent(1e-5, RdpConversion::Improved);
  EXPECT_NEAR(improved.epsilon, 0.336, 5e-4);
  EXPECT_EQ(improved.best_order, 23);

  // The classic value by hand from the per-order RDP.
  double best = kInf;
  for (const double a : orders) {
    const double rdp = 10 * rdp_sampled_gaussian(1e-5, 1.0, a) + 4 * rdp_sampled_gaussian(1e-4, 3.0, a);
    best = std::min(best, rdp + std::log(1e5) / (a - 1));
  }
  EXPECT_NEAR(accountant.spent(1e-5, RdpConversion::Classic).epsilon, best, 1e-12);
}

TEST(RdpAccountant, StepByStepEqualsOneSegment) {
  RdpAccountant one, many;
  one.step(kMnistQ, 1.1, 1500);
  for (int k = 0; k < 1500; ++k) many.step(kMnistQ, 1.1);
  EXPECT_EQ(many.steps(), 1500u);
  const auto direct = epsilon_spent(kMnistQ, 1.1, 1500, kMnistDelta, RdpConversion::Improved);
  for (const auto* accountant : {&one, &many}) {
    const auto spent = accountant->spent(kMnistDelta, RdpConversion::Improved);
    EXPECT_NEAR(spent.epsilon, direct.epsilon, 1e-9);
    EXPECT_EQ(spent.best_order, direct.best_order);
  }
}

TEST(RdpAccountant, NothingSpentBeforeTrainingOrWithoutSampling) {
  RdpAccountant accountant;
  auto spent = accountant.spent(1e-5, RdpConversion::Improved);
  EXPECT_EQ(spent.epsilon, 0);
  EXPECT_EQ(spent.best_order, 0);
  accountant.step(0.0, 1.0, 100);
  EXPECT_EQ(accountant.spent(1e-5, RdpConversion::Classic).epsilon, 0);
  EXPECT_EQ(epsilon_spent(0.01, 1.0, 0, 1e-5, RdpConversion::Classic).epsilon, 0);
  EXPECT_EQ(epsilon_spent(0.01, 0.0, 0, 1e-5, RdpConversion::Classic).epsilon, 0);

  const auto no_noise = epsilon_spent(0.01, 0.0, 10, 1e-5, RdpConversion::Improved);
  EXPECT_EQ(no_noise.epsilon, kInf);
  EXPECT_TRUE(std::isnan(no_noise.best_order));
}

TEST(RdpAccountant, DefaultOrdersAreOpacuss) {
  const auto orders = default_rdp_orders();
  ASSERT_EQ(orders.size(), 99u + 52u);
  EXPECT_DOUBLE_EQ(orders.front(), 1.1);
  EXPECT_DOUBLE_EQ(orders[98], 10.9);
  EXPECT_EQ(orders[99], 12.0);
  EXPECT_EQ(orders.back(), 63.0);
  EXPECT_EQ(to_string(RdpConversion::Classic), "classic");
  EXPECT_EQ(to_string(RdpConversion::Improved), "improved");
}

// ---------------------------------------------------------------------------------------------------

TEST(CalibrateNoiseMultiplier, RoundTrip) {
  struct Case {
    double target, q;
    std::uint64_t steps;
  };
  const Case cases[] = {{1.0, kMnistQ, 3750}, {3.0, kMnistQ, 15000}, {8.0, 0.01, 2000}, {0.5, 0.001, 100000}};
  for (const auto conversion : {RdpConversion::Classic, RdpConversion::Improved})
    for (const auto& c : cases) {
      const double tolerance = 1e-4;
      const double sigma = calibrate_noise_multiplier(c.target, c.q, c.steps, 1e-5, conversion, tolerance);
      const double eps = epsilon_spent(c.q, sigma, c.steps, 1e-5, conversion).epsilon;
      EXPECT_LE(eps, c.target) << c.target;
      EXPECT_GE(eps, c.target - tolerance) << c.target;
      EXPECT_GT(epsilon_spent(c.q, sigma - 1e-3, c.steps, 1e-5, conversion).epsilon, c.target) << c.target;
    }
}

TEST(CalibrateNoiseMultiplier, InvertsThePublishedRuns) {
  for (const auto& run : kPublished) {
    const double classic =
        calibrate_noise_multiplier(run.classic, kMnistQ, run.steps, kMnistDelta, RdpConversion::Classic, 1e-4);
    EXPECT_NEAR(classic, run.sigma, 0.01);
    const double improved =
        calibrate_noise_multiplier(run.improved, kMnistQ, run.steps, kMnistDelta, RdpConversion::Improved, 1e-4);
    EXPECT_NEAR(improved, run.sigma, 0.005);
  }
}

TEST(CalibrateNoiseMultiplier, DefaultToleranceKeepsWithinTarget) {
  const double sigma = calibrate_noise_multiplier(2.0, 0.01, 5000, 1e-5, RdpConversion::Improved);
  const double eps = epsilon_spent(0.01, sigma, 5000, 1e-5, RdpConversion::Improved).epsilon;
  EXPECT_LE(eps, 2.0);
  EXPECT_GE(eps, 2.0 - 0.01);
  EXPECT_EQ(calibrate_noise_multiplier(2.0, 0.0, 5000, 1e-5, RdpConversion::Improved), 0.0);
  EXPECT_EQ(calibrate_noise_multiplier(2.0, 0.01, 0, 1e-5, RdpConversion::Improved), 0.0);
}

template <typename F>
std::string error_hint(F&& f) {
  try {
    f();
  } catch (const core::Error& e) {
    return std::string(e.what()) + " | " + e.hint();
  }
  return "";
}

TEST(CalibrateNoiseMultiplier, RefusesUnreachableTargets) {
  for (const double target : {0.0, -1.0, kNaN, kInf}) {
    const auto message = error_hint([&] { calibrate_noise_multiplier(target, 0.01, 100, 1e-5, RdpConversion::Improved); });
    EXPECT_NE(message.find("--target-epsilon"), std::string::npos) << message;
  }
  // Below what any noise can certify with orders up to 63 at delta 1e-5.
  for (const auto conversion : {RdpConversion::Classic, RdpConversion::Improved}) {
    const auto message = error_hint([&] { calibrate_noise_multiplier(0.05, 0.01, 100, 1e-5, conversion); });
    EXPECT_NE(message.find("cannot be reached"), std::string::npos) << message;
    EXPECT_NE(message.find("--delta"), std::string::npos) << message;
  }
  // A target that needs more noise than the search allows.
  const auto message = error_hint([&] { calibrate_noise_multiplier(0.2, 1.0, 100000000000000ULL, 1e-5, RdpConversion::Improved); });
  EXPECT_NE(message.find("noise multiplier above"), std::string::npos) << message;
}

TEST(RdpAccountant, RefusesBadInputs) {
  for (const double delta : {0.0, -1e-5, 1.0, 2.0, kNaN}) {
    EXPECT_THROW(epsilon_spent(0.01, 1.0, 10, delta, RdpConversion::Classic), core::Error) << delta;
    RdpAccountant accountant;
    EXPECT_THROW(accountant.spent(delta, RdpConversion::Improved), core::Error) << delta;
    EXPECT_THROW(calibrate_noise_multiplier(1.0, 0.01, 100, delta, RdpConversion::Improved), core::Error) << delta;
  }
  for (const double q : {-0.1, 1.0000001, 2.0, kNaN}) {
    EXPECT_THROW(rdp_sampled_gaussian(q, 1.0, 2.0), core::Error) << q;
    EXPECT_THROW(epsilon_spent(q, 1.0, 10, 1e-5, RdpConversion::Classic), core::Error) << q;
    RdpAccountant accountant;
    EXPECT_THROW(accountant.step(q, 1.0, 10), core::Error) << q;
    EXPECT_THROW(calibrate_noise_multiplier(1.0, q, 100, 1e-5, RdpConversion::Improved), core::Error) << q;
  }
  EXPECT_THROW(rdp_sampled_gaussian(0.01, -1.0, 2.0), core::Error);
  EXPECT_THROW(rdp_sampled_gaussian(0.01, kNaN, 2.0), core::Error);
  for (const double alpha : {1.0, 0.5, -2.0, kInf, kNaN}) EXPECT_THROW(rdp_sampled_gaussian(0.01, 1.0, alpha), core::Error);
  EXPECT_THROW(RdpAccountant(std::vector<double>{}), core::Error);
  EXPECT_THROW(RdpAccountant(std::vector<double>{2.0, 1.0}), core::Error);
  EXPECT_THROW(epsilon_spent(0.01, 1.0, 10, 1e-5, RdpConversion::Classic, {}), core::Error);
  EXPECT_THROW(calibrate_noise_multiplier(1.0, 0.01, 100, 1e-5, RdpConversion::Improved, 0.0), core::Error);
  RdpAccountant accountant;
  accountant.step(0.01, 1.0, 10);
  EXPECT_THROW(accountant.step(0.01, -1.0, 10), core::Error);
  EXPECT_EQ(accountant.steps(), 10u);  // a refused step leaves the record unchanged
}


// ---------------------------------------------------------------------------------------------------
// PLD accountant.

double normal_cdf(double t) { return 0.5 * std::erfc(-t / std::sqrt(2.0)); }

// The exact delta(epsilon) of the Gaussian mechanism with sensitivity 1 and noise sigma (Balle and Wang 2018).
double gaussian_delta(double sigma, double eps) {
  return normal_cdf(0.5 / sigma - eps * sigma) - std::exp(eps) * normal_cdf(-0.5 / sigma - eps * sigma);
}

TEST(PldAccountant, FullBatchMatchesTheExactGaussianAndStaysAbove) {
  // Four full-batch steps at sigma 2 compose to one Gaussian at sigma 1.
  PldAccountant accountant;
  accountant.step(1.0, 2.0, 4);
  for (const double eps : {0.0, 0.5, 1.0, 2.0, 4.0}) {
    const double exact = gaussian_delta(1.0, eps);
    const double pld = accountant.delta(eps);
    EXPECT_GE(pld, exact) << eps;  // pessimistic: an upper bound
    EXPECT_NEAR(pld, exact, 1e-6 * exact) << eps;
  }
}

TEST(PldAccountant, MatchesGoogleDpAccountingOnThePublishedRuns) {
  // dp_accounting's PLDAccountant (commit b5b0286, value_discretization_interval 1e-4, the same grid) on
  // PoissonSampledDpEvent(240/60000, GaussianDpEvent(sigma)) x steps, delta 1e-5.
  const double expected[] = {0.8335891193828229, 2.2954679416517916, 5.4312227300041815};
  for (std::size_t k = 0; k < 3; ++k) {
    const auto& run = kPublished[k];
    const double pld = pld_epsilon(kMnistQ, run.sigma, run.steps, kMnistDelta);
    EXPECT_NEAR(pld, expected[k], 1e-4) << run.sigma;
    EXPECT_LT(pld, epsilon_spent(kMnistQ, run.sigma, run.steps, kMnistDelta, RdpConversion::Improved).epsilon);
  }
}

TEST(PldAccountant, NeverAboveTheRdpBound) {
  for (const double q : {0.001, 0.01, 0.05})
    for (const double sigma : {0.7, 1.0, 2.0})
      for (const std::uint64_t steps : {10ULL, 1000ULL}) {
        const double pld = pld_epsilon(q, sigma, steps, 1e-5, 1e-3);
        const double rdp = epsilon_spent(q, sigma, steps, 1e-5, RdpConversion::Improved).epsilon;
        EXPECT_LE(pld, rdp) << q << " " << sigma << " " << steps;
        EXPECT_GT(pld, 0) << q << " " << sigma << " " << steps;
      }
}

TEST(PldAccountant, HeterogeneousSegmentsAndMonotonicity) {
  PldAccountant both;
  both.step(0.01, 1.0, 500);
  both.step(0.02, 2.0, 300);
  EXPECT_EQ(both.steps(), 800u);
  const double eps = both.epsilon(1e-5);
  EXPECT_NEAR(eps, 1.5022587098238824, 1e-4);  // dp_accounting, same events
  EXPECT_GT(eps, pld_epsilon(0.01, 1.0, 500, 1e-5));
  EXPECT_GT(eps, pld_epsilon(0.02, 2.0, 300, 1e-5));

  // Steps recorded one at a time merge into one segment.
  PldAccountant split;
  for (int k = 0; k < 50; ++k) split.step(0.01, 1.0, 10);
  EXPECT_DOUBLE_EQ(split.epsilon(1e-5), pld_epsilon(0.01, 1.0, 500, 1e-5));
  EXPECT_LT(split.delta(eps), 1e-5);

  double last = 0;
  for (const std::uint64_t steps : {1ULL, 10ULL, 100ULL, 1000ULL}) {
    const double e = pld_epsilon(0.01, 1.0, steps, 1e-5, 1e-3);
    EXPECT_GT(e, last) << steps;
    last = e;
  }
  // A coarser grid is more pessimistic, and converges.
  const double fine = pld_epsilon(0.01, 1.0, 1000, 1e-5, 1e-4);
  const double coarse = pld_epsilon(0.01, 1.0, 1000, 1e-5, 1e-2);
  EXPECT_GT(coarse, fine);
  EXPECT_NEAR(pld_epsilon(0.01, 1.0, 1000, 1e-5, 1e-3), fine, 2e-3);
}

TEST(PldAccountant, EdgeCasesAndBadInputs) {
  PldAccountant none;
  EXPECT_EQ(none.epsilon(1e-5), 0);
  EXPECT_EQ(none.delta(0.0), 0);
  none.step(0.0, 1.0, 100);
  EXPECT_EQ(none.epsilon(1e-5), 0);
  PldAccountant open;
  open.step(0.01, 0.0, 1);
  EXPECT_EQ(open.epsilon(1e-5), kInf);
  EXPECT_EQ(open.delta(3.0), 1.0);

  EXPECT_THROW(PldAccountant(0.0), core::Error);
  EXPECT_THROW(PldAccountant(-1e-4), core::Error);
  PldAccountant accountant;
  EXPECT_THROW(accountant.step(1.5, 1.0, 1), core::Error);
  EXPECT_THROW(accountant.step(-0.1, 1.0, 1), core::Error);
  EXPECT_THROW(accountant.step(0.1, -1.0, 1), core::Error);
  accountant.step(0.1, 1.0, 1);
  for (const double delta : {0.0, 1.0, -1.0, kNaN}) EXPECT_THROW(accountant.epsilon(delta), core::Error) << delta;
  EXPECT_THROW(accountant.delta(-1.0), core::Error);
}

}  // namespace
}  // namespace aegis::privacy
