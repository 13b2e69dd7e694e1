// The Shapiro-Wilk test of normality, for PRADA's check of a client's query-distance distribution.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace aegis::monitor {

struct NormalityTest {
  double w = 1;        // the W statistic, in (0, 1]; small means far from normal
  double p_value = 1;  // probability of a W this small from normal data
};

// Royston's (1995) algorithm AS R94, as R's shapiro.test and scipy.stats.shapiro compute it:
// coefficients from normal order statistics with Royston's polynomial corrections, and the
// p-value from his normalising transformations of W (exact for n = 3). Needs 3 <= n <= 5000
// finite values (core::Error otherwise; beyond 5000 the approximation is not validated). When
// all values are equal W is undefined; we answer W = 1, p = 1 (no evidence against normality).
NormalityTest shapiro_wilk(std::span<const double> values);

// The same with coefficients computed once per sample size: PRADA tests a window of the same
// length again after every query.
class ShapiroWilk {
 public:
  NormalityTest operator()(std::span<const double> values);

 private:
  std::size_t n_ = 0;
  std::vector<double> coefficients_;  // a_1..a_{n/2}, for the largest values minus the smallest
  std::vector<double> sorted_;
};

}  // namespace aegis::monitor
