// Prints Aegis's DP-SGD epsilon as CSV for bench/privacy/opacus_accountant_compare.py:
//   q,sigma,steps,delta,eps_classic,eps_improved,order_classic,order_improved[,eps_pld]
// one row per cell of the grid q in {0.001, 0.004, 0.01, 0.05} x sigma in {0.5, 0.7, 1.0, 1.3, 2.0} x
// steps in {100, 1000, 10000} at delta 1e-5, then the three published Opacus MNIST runs (q = 240/60000,
// (sigma, steps) = (1.3, 3750), (1.1, 15000), (0.7, 11250)). eps_classic / eps_improved: the RDP
// accountant's two conversions (accountant.h); eps_pld (only with --pld): the PLD accountant
// (pld_accountant.h, discretisation 1e-4). On stderr: the mean time of one epsilon_spent call over the
// grid (best of 5 passes) and, with --pld, of one PLD epsilon. No LibTorch.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "aegis/privacy/accountant.h"
#include "aegis/privacy/pld_accountant.h"

int main(int argc, char** argv) {
  using aegis::privacy::RdpConversion;
  using aegis::privacy::epsilon_spent;
  bool pld = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--pld") == 0) {
      pld = true;
    } else {
      std::fprintf(stderr, "usage: %s [--pld]\n", argv[0]);
      return 2;
    }
  }
  const double delta = 1e-5;
  const double rates[] = {0.001, 0.004, 0.01, 0.05};
  const double sigmas[] = {0.5, 0.7, 1.0, 1.3, 2.0};
  const std::uint64_t step_counts[] = {100, 1000, 10000};

  double pld_seconds = 0;
  int pld_calls = 0;
  auto row = [&](double q, double sigma, std::uint64_t steps) {
    const auto classic = epsilon_spent(q, sigma, steps, delta, RdpConversion::Classic);
    const auto improved = epsilon_spent(q, sigma, steps, delta, RdpConversion::Improved);
    std::printf("%.17g,%.17g,%llu,%.17g,%.17g,%.17g,%.17g,%.17g", q, sigma, static_cast<unsigned long long>(steps), delta,
                classic.epsilon, improved.epsilon, classic.best_order, improved.best_order);
    if (pld) {
      const auto start = std::chrono::steady_clock::now();
      const double eps = aegis::privacy::pld_epsilon(q, sigma, steps, delta);
      pld_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      ++pld_calls;
      std::printf(",%.17g", eps);
    }
    std::printf("\n");
  };
  std::printf("q,sigma,steps,delta,eps_classic,eps_improved,order_classic,order_improved%s\n", pld ? ",eps_pld" : "");
  for (const double q : rates)
    for (const double sigma : sigmas)
      for (const std::uint64_t steps : step_counts) row(q, sigma, steps);
  row(240.0 / 60000.0, 1.3, 3750);
  row(240.0 / 60000.0, 1.1, 15000);
  row(240.0 / 60000.0, 0.7, 11250);
  std::fflush(stdout);

  // Timing: every grid cell, both conversions; the best of five passes.
  double best = 1e300;
  int calls = 0;
  double sink = 0;
  for (int pass = 0; pass < 5; ++pass) {
    calls = 0;
    const auto start = std::chrono::steady_clock::now();
    for (const double q : rates)
      for (const double sigma : sigmas)
        for (const std::uint64_t steps : step_counts)
          for (const auto conversion : {RdpConversion::Classic, RdpConversion::Improved}) {
            sink += epsilon_spent(q, sigma, steps, delta, conversion).epsilon;
            ++calls;
          }
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::fprintf(stderr, "aegis rdp: %d epsilon_spent calls in %.4f s (best of 5 passes), %.3f ms per call (checksum %.6g)\n",
               calls, best, 1e3 * best / calls, sink);
  if (pld)
    std::fprintf(stderr, "aegis pld: %d pld_epsilon calls in %.3f s, %.1f ms per call (grid and published runs, one pass)\n",
                 pld_calls, pld_seconds, 1e3 * pld_seconds / pld_calls);
  return 0;
}
