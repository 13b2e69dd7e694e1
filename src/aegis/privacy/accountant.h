// Privacy accounting for DP-SGD: Rényi DP of the sampled Gaussian mechanism (Mironov, Talwar and
// Zhang 2019), composed over steps, converted to (epsilon, delta) two ways, and the noise
// calibration that hits a target epsilon. Pure arithmetic, no LibTorch.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace aegis::privacy {

// How RDP is turned into (epsilon, delta).
enum class RdpConversion {
  // eps = min over orders a of RDP(a) + log(1/delta) / (a - 1)  (Mironov 2017, Abadi et al.;
  // Opacus's published 1.16 / 2.91 / 6.86)
  Classic,
  // eps = min over a of RDP(a) + log((a - 1) / a) - (log(delta) + log(a)) / (a - 1)
  // (Balle et al. 2020; what current Opacus reports)
  Improved,
};
std::string_view to_string(RdpConversion conversion);

// The orders Opacus uses by default: 1.1, 1.2, ..., 10.9, 12, 13, ..., 63.
std::vector<double> default_rdp_orders();

// RDP at order `alpha` (> 1, integer or fractional) of one step of the sampled Gaussian mechanism
// with sampling rate q (Poisson) and noise multiplier sigma. q = 1 is the plain Gaussian
// alpha / (2 sigma^2); q = 0 is 0; sigma = 0 is infinity.
double rdp_sampled_gaussian(double q, double sigma, double alpha);

struct PrivacySpent {
  double epsilon = 0;
  double best_order = 0;  // the order the minimum was reached at
  RdpConversion conversion = RdpConversion::Classic;
};

// Composition over `steps` steps and conversion to epsilon at `delta`.
PrivacySpent epsilon_spent(double q, double sigma, std::uint64_t steps, double delta,
                           RdpConversion conversion, const std::vector<double>& orders = default_rdp_orders());

// The accountant used while training: records (q, sigma, steps) segments as they happen.
class RdpAccountant {
 public:
  explicit RdpAccountant(std::vector<double> orders = default_rdp_orders());
  void step(double q, double sigma, std::uint64_t steps = 1);
  PrivacySpent spent(double delta, RdpConversion conversion) const;
  std::uint64_t steps() const { return steps_; }

 private:
  std::vector<double> orders_;
  std::vector<double> rdp_;  // accumulated RDP per order
  std::uint64_t steps_ = 0;
};

// The smallest noise multiplier (to within `tolerance` in epsilon) whose epsilon after `steps`
// steps at rate q is at most target_epsilon. Throws core::Error when the target cannot be met
// (for example target_epsilon <= 0) with what to change.
double calibrate_noise_multiplier(double target_epsilon, double q, std::uint64_t steps, double delta,
                                  RdpConversion conversion, double tolerance = 0.01);

}  // namespace aegis::privacy
