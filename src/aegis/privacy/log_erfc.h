// log(erfc(x)) with full relative accuracy, also where erfc(x) underflows: shared by the RDP and
// PLD accountants.
#pragma once

#include <cmath>

namespace aegis::privacy {

inline double log_erfc(double x) {
  constexpr double kLn2 = 0.69314718055994530942;
  constexpr double kLogSqrtPi = 0.57236494292470008707;  // log(sqrt(pi))
  if (x < 0) return kLn2 + std::log1p(-0.5 * std::erfc(-x));  // erfc(x) = 2 - erfc(-x)
  if (x < 26) return std::log(std::erfc(x));
  // Asymptotic series erfc(x) = exp(-x^2) / (x sqrt(pi)) * sum_k (-1)^k (2k-1)!! / (2x^2)^k; at x >= 26
  // the eighth term is below 1e-25 of the first.
  const double inv = 1.0 / (2.0 * x * x);
  double term = 1.0, sum = 1.0;
  for (int k = 1; k <= 8; ++k) {
    term *= -(2.0 * k - 1.0) * inv;
    sum += term;
  }
  return -x * x - std::log(x) - kLogSqrtPi + std::log(sum);
}

}  // namespace aegis::privacy
