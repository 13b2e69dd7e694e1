#include "aegis/monitor/shapiro_wilk.h"

#include <algorithm>
#include <cmath>
#include <string>

#include <boost/math/distributions/normal.hpp>

#include "aegis/core/error.h"

namespace aegis::monitor {
namespace {

constexpr std::size_t kMaxSize = 5000;

// c[0] + c[1] x + c[2] x^2 + ...
template <std::size_t N>
double polynomial(const double (&c)[N], double x) {
  double value = 0;
  for (std::size_t i = N; i-- > 0;) value = value * x + c[i];
  return value;
}

// Royston's coefficients a_i (i = 1..n/2), positive, weighting x_(n+1-i) - x_(i).
std::vector<double> royston_coefficients(std::size_t n) {
  const std::size_t half = n / 2;
  std::vector<double> a(half);
  if (n == 3) {
    a[0] = std::sqrt(0.5);
    return a;
  }
  static constexpr double c1[] = {0.0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056};
  static constexpr double c2[] = {0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633};
  const boost::math::normal standard;
  const double size = static_cast<double>(n);
  // Blom-type scores: expected normal order statistics approximated as quantiles.
  std::vector<double> m(half);
  double sum_squares = 0;
  for (std::size_t i = 0; i < half; ++i) {
    m[i] = boost::math::quantile(standard, (static_cast<double>(i + 1) - 0.375) / (size + 0.25));
    sum_squares += m[i] * m[i];
  }
  sum_squares *= 2;
  const double root = std::sqrt(sum_squares);
  const double u = 1 / std::sqrt(size);
  const double a1 = polynomial(c1, u) - m[0] / root;
  std::size_t first_plain;
  double scale;
  if (n > 5) {
    const double a2 = polynomial(c2, u) - m[1] / root;
    scale = std::sqrt((sum_squares - 2 * m[0] * m[0] - 2 * m[1] * m[1]) / (1 - 2 * a1 * a1 - 2 * a2 * a2));
    a[1] = a2;
    first_plain = 2;
  } else {
    scale = std::sqrt((sum_squares - 2 * m[0] * m[0]) / (1 - 2 * a1 * a1));
    first_plain = 1;
  }
  a[0] = a1;
  for (std::size_t i = first_plain; i < half; ++i) a[i] = -m[i] / scale;
  return a;
}

double royston_p_value(double w, std::size_t n) {
  const double size = static_cast<double>(n);
  if (n == 3) {
    constexpr double six_over_pi = 1.90985931710274, pi_over_three = 1.04719755119660;
    return std::clamp(six_over_pi * (std::asin(std::sqrt(w)) - pi_over_three), 0.0, 1.0);
  }
  double y = std::log(1 - w);
  double mean, sd;
  if (n <= 11) {
    static constexpr double g[] = {-2.273, 0.459};
    static constexpr double c3[] = {0.5440, -0.39978, 0.025054, -6.714e-4};
    static constexpr double c4[] = {1.3822, -0.77857, 0.062767, -0.0020322};
    const double gamma = polynomial(g, size);
    if (y >= gamma) return 1e-99;  // W this small lies beyond the transformation's range
    y = -std::log(gamma - y);
    mean = polynomial(c3, size);
    sd = std::exp(polynomial(c4, size));
  } else {
    static constexpr double c5[] = {-1.5861, -0.31082, -0.083751, 0.0038915};
    static constexpr double c6[] = {-0.4803, -0.082676, 0.0030302};
    const double log_n = std::log(size);
    mean = polynomial(c5, log_n);
    sd = std::exp(polynomial(c6, log_n));
  }
  return 0.5 * std::erfc((y - mean) / sd / std::sqrt(2.0));
}

}  // namespace

NormalityTest ShapiroWilk::operator()(std::span<const double> values) {
  const std::size_t n = values.size();
  if (n < 3 || n > kMaxSize)
    throw core::Error("Shapiro-Wilk test: " + std::to_string(n) + " values, the test takes 3 to 5000",
                      "test a window of at most 5000 values");
  sorted_.assign(values.begin(), values.end());
  for (double v : sorted_)
    if (!std::isfinite(v)) throw core::Error("Shapiro-Wilk test: a value is not finite", "drop NaN and infinite values first");
  std::sort(sorted_.begin(), sorted_.end());
  if (n != n_) {
    coefficients_ = royston_coefficients(n);
    n_ = n;
  }
  const double range = sorted_.back() - sorted_.front();
  if (!(range > 0)) return {1, 1};
  // Scale by the range first so that sums of squares of large values keep their precision.
  double mean = 0;
  for (double v : sorted_) mean += v / range;
  mean /= static_cast<double>(n);
  double spread = 0;
  for (double v : sorted_) spread += (v / range - mean) * (v / range - mean);
  double numerator = 0;
  for (std::size_t i = 0; i < coefficients_.size(); ++i)
    numerator += coefficients_[i] * (sorted_[n - 1 - i] - sorted_[i]) / range;
  const double w = std::min(1.0, numerator * numerator / spread);
  return {w, royston_p_value(w, n)};
}

NormalityTest shapiro_wilk(std::span<const double> values) {
  ShapiroWilk test;
  return test(values);
}

}  // namespace aegis::monitor
