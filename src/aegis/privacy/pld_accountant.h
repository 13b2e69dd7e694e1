// Privacy-loss-distribution (PLD) accounting of the Poisson-sampled Gaussian mechanism: a tighter
// (epsilon, delta) than the RDP conversions of accountant.h, for the same DP-SGD run.
//
// Each step's privacy loss distribution (add-or-remove-one adjacency: the "remove" pair
// ((1-q) N(0,s^2) + q N(1,s^2), N(0,s^2)) and the "add" pair with the roles swapped) is discretised on
// the grid k * discretization with the pessimistic connect-the-dots construction (Doroshenko, Ghazi,
// Kamath, Kumar, Manurangsi 2022), so the resulting delta(epsilon) is an upper bound on the true one;
// the steps are composed by FFT (Koskela, Jälkö, Honkela 2020), with Chernoff bounds choosing the
// window and the mass outside it counted as privacy loss at infinity. delta(epsilon) is the larger of
// the two directions'. The method is the one of Google's dp_accounting PLDAccountant (whose default
// discretisation, 1e-4, is the default here too). Pure arithmetic, no LibTorch.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

namespace aegis::privacy {

class PldAccountant {
 public:
  // `discretization`: the grid step of the privacy loss; smaller is tighter and slower.
  explicit PldAccountant(double discretization = 1e-4);

  // Records `steps` steps at sampling rate q with noise multiplier sigma (same checks as
  // rdp_sampled_gaussian). q = 0 or steps = 0 spends nothing; sigma = 0 makes epsilon infinite.
  void step(double q, double sigma, std::uint64_t steps = 1);

  // The smallest epsilon >= 0 with delta(epsilon) <= delta (0 < delta < 1); +inf when none is.
  // The first call after step() composes (milliseconds to a second); later calls reuse it. Not safe to
  // call concurrently on one object (the cache is filled lazily).
  double epsilon(double delta) const;
  // The delta at a given epsilon (>= 0).
  double delta(double epsilon) const;

  std::uint64_t steps() const { return steps_; }
  double discretization() const { return discretization_; }

  struct Composed;  // the composed distributions, built on first use and cached

 private:
  struct Segment {
    double q, sigma;
    std::uint64_t steps;
  };
  const Composed& composed() const;

  double discretization_;
  std::vector<Segment> segments_;
  std::uint64_t steps_ = 0;
  bool non_private_ = false;  // a step with q > 0 and sigma = 0
  mutable std::shared_ptr<const Composed> composed_;
};

// PLD epsilon of `steps` steps at rate q and noise multiplier sigma, at `delta`.
double pld_epsilon(double q, double sigma, std::uint64_t steps, double delta, double discretization = 1e-4);

}  // namespace aegis::privacy
