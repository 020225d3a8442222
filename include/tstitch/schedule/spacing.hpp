// SPDX-License-Identifier: Apache-2.0
#pragma once

// The number sequences the schedules are built from (linspace, Karras and exponential ramps,
// numpy rounding), written element by element the way numpy and torch compute them. Users compare
// tstitch against diffusers, whose schedules come out of these exact calls, so "the same formula"
// is not enough: the order of the roundings decides whether a timestep lands on 166 or 167.

#include <cmath>
#include <cstddef>
#include <vector>

#include "tstitch/core/error.hpp"

namespace tstitch::spacing {

/// numpy's `round` / `ndarray.round`: half-integers go to the even neighbour. std::round would
/// send np.linspace(0, 999, 7)'s 166.5 to 167, where diffusers gets 166. std::nearbyint follows
/// the current rounding mode, which is round-to-nearest-even unless a caller changed it.
[[nodiscard]] inline double round_half_even(double x) { return std::nearbyint(x); }

/// `np.linspace(start, stop, num)` (endpoint=True) element for element: numpy computes
/// `i * ((stop - start) / (num - 1)) + start` (two roundings) and then overwrites the last element
/// with `stop`; num == 1 gives {start}.
[[nodiscard]] inline std::vector<double> numpy_linspace(double start, double stop, int num) {
  require(num >= 1, "num", num, "a linspace needs at least one point");
  std::vector<double> out(static_cast<std::size_t>(num));
  if (num == 1) {
    out[0] = start;
    return out;
  }
  const double step = (stop - start) / static_cast<double>(num - 1);
  for (int i = 0; i < num; ++i)
    out[static_cast<std::size_t>(i)] = static_cast<double>(i) * step + start;
  out.back() = stop;
  return out;
}

/// `torch.linspace(start, stop, steps, dtype=torch.float64)` on the CPU: torch fills the first
/// half forwards from `start` and the second half backwards from `stop`, so both ends are exact
/// and the two halves round differently from numpy's version.
[[nodiscard]] inline std::vector<double> torch_linspace(double start, double stop, int steps) {
  require(steps >= 1, "steps", steps, "a linspace needs at least one point");
  std::vector<double> out(static_cast<std::size_t>(steps));
  if (steps == 1) {
    out[0] = start;
    return out;
  }
  const double step = (stop - start) / static_cast<double>(steps - 1);
  const int halfway = steps / 2;
  for (int i = 0; i < steps; ++i)
    out[static_cast<std::size_t>(i)] = i < halfway
                                           ? start + step * static_cast<double>(i)
                                           : stop - step * static_cast<double>(steps - i - 1);
  return out;
}

/// The Karras et al. (2022, eq. 5) ramp: n sigmas from sigma_max down to sigma_min, uniform in
/// sigma^(1/rho). Written as k-diffusion / diffusers `_convert_to_karras` evaluate it (a numpy
/// linspace ramp in [0, 1], then `(max^(1/rho) + ramp * (min^(1/rho) - max^(1/rho)))^rho`), so
/// the double values match theirs bit for bit. n == 1 gives {sigma_max}.
[[nodiscard]] inline std::vector<double> karras_sigmas(double sigma_min, double sigma_max, int n,
                                                       double rho = 7.0) {
  require(n >= 1, "num_steps", n, "must be at least 1");
  require(rho > 0 && std::isfinite(rho), "karras_rho", rho, "must be positive and finite");
  require(sigma_min > 0 && std::isfinite(sigma_min), "sigma_min", sigma_min,
          "must be positive and finite");
  require(sigma_max > sigma_min && std::isfinite(sigma_max), "sigma_max", sigma_max,
          "must be finite and above sigma_min");
  const double min_inv_rho = std::pow(sigma_min, 1.0 / rho);
  const double max_inv_rho = std::pow(sigma_max, 1.0 / rho);
  std::vector<double> out = numpy_linspace(0.0, 1.0, n);
  for (double& r : out)
    r = std::pow(max_inv_rho + r * (min_inv_rho - max_inv_rho), rho);
  return out;
}

/// n sigmas from sigma_max down to sigma_min, uniform in log sigma (diffusers
/// `_convert_to_exponential`: exp of a numpy linspace between the two logs). n == 1 gives
/// {sigma_max}.
[[nodiscard]] inline std::vector<double> exponential_sigmas(double sigma_min, double sigma_max,
                                                            int n) {
  require(n >= 1, "num_steps", n, "must be at least 1");
  require(sigma_min > 0 && std::isfinite(sigma_min), "sigma_min", sigma_min,
          "must be positive and finite");
  require(sigma_max > sigma_min && std::isfinite(sigma_max), "sigma_max", sigma_max,
          "must be finite and above sigma_min");
  std::vector<double> out = numpy_linspace(std::log(sigma_max), std::log(sigma_min), n);
  for (double& l : out)
    l = std::exp(l);
  return out;
}

/// `torch.linspace(start, stop, steps)` in torch's default float32 on the CPU: start, stop and the
/// step are float32, the first half counts up from start and the second half down from stop, each
/// element rounded to float32 (diffusers' Euler `interpolation_type="log_linear"`).
[[nodiscard]] inline std::vector<float> torch_linspace_f32(double start, double stop, int steps) {
  require(steps >= 1, "steps", steps, "a linspace needs at least one point");
  const auto a = static_cast<float>(start);
  const auto b = static_cast<float>(stop);
  std::vector<float> out(static_cast<std::size_t>(steps));
  if (steps == 1) {
    out[0] = a;
    return out;
  }
  const float step = (b - a) / static_cast<float>(steps - 1);
  const int halfway = steps / 2;
  for (int i = 0; i < steps; ++i)
    out[static_cast<std::size_t>(i)] = i < halfway ? a + step * static_cast<float>(i)
                                                   : b - step * static_cast<float>(steps - i - 1);
  return out;
}

[[nodiscard]] inline double regularized_incomplete_beta(double a, double b, double x);

namespace detail {

/// The continued fraction of the incomplete beta function (the even/odd terms d_2m, d_2m+1 of
/// DLMF 8.17.22), evaluated by the modified Lentz method. Converges fast for x < (a+1)/(a+b+2).
[[nodiscard]] inline double incomplete_beta_fraction(double a, double b, double x) {
  constexpr double tiny = 1e-300;
  constexpr double eps = 1e-16;
  double c = 1.0;
  double d = 1.0 - (a + b) * x / (a + 1.0);
  d = 1.0 / (std::abs(d) < tiny ? tiny : d);
  double f = d;
  for (int m = 1; m <= 1000; ++m) {
    const double dm = static_cast<double>(m);
    for (int parity = 0; parity < 2; ++parity) {
      const double coeff = parity == 0
                               ? dm * (b - dm) * x / ((a + 2 * dm - 1) * (a + 2 * dm))
                               : -(a + dm) * (a + b + dm) * x / ((a + 2 * dm) * (a + 2 * dm + 1));
      d = 1.0 + coeff * d;
      d = 1.0 / (std::abs(d) < tiny ? tiny : d);
      c = 1.0 + coeff / c;
      if (std::abs(c) < tiny)
        c = tiny;
      const double delta = c * d;
      f *= delta;
      if (parity == 1 && std::abs(delta - 1.0) < eps)
        return f;
    }
  }
  return f;
}

/// log B(a, b).
[[nodiscard]] inline double log_beta(double a, double b) {
  return std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b);
}

/// I_x(a, b) for x in the lower region, where the continued fraction converges: relative accuracy
/// ~1e-15 even when the value is tiny.
[[nodiscard]] inline double incomplete_beta_lower(double a, double b, double x) {
  const double front = std::exp(a * std::log(x) + b * std::log1p(-x) - log_beta(a, b)) / a;
  return front * incomplete_beta_fraction(a, b, x);
}

/// The x in (0, 1) with I_x(a, b) = p, for 0 < p <= 1/2 (the lower half, where x and I_x(a, b)
/// are small together and relative accuracy in x is kept). Newton's method on I_x(a, b) - p,
/// falling back to bisection of a bracket whenever a step leaves it.
[[nodiscard]] inline double inverse_incomplete_beta_lower(double a, double b, double p) {
  const double lbeta = log_beta(a, b);
  // I_x(a, b) ~ x^a / (a B(a, b)) for small x: exact in the limit, a good start elsewhere.
  double x = std::exp((std::log(p) + std::log(a) + lbeta) / a);
  if (!(x > 0 && x < 1))
    x = 0.5;
  double lo = 0.0, hi = 1.0;
  for (int iteration = 0; iteration < 200; ++iteration) {
    const double f = regularized_incomplete_beta(a, b, x) - p;
    if (f == 0)
      return x;
    (f < 0 ? lo : hi) = x;
    const double density = std::exp((a - 1) * std::log(x) + (b - 1) * std::log1p(-x) - lbeta);
    double next = x - f / density;
    if (!(next > lo && next < hi))
      next = lo == 0.0 ? 0.5 * hi : 0.5 * (lo + hi);
    const double moved = std::abs(next - x);
    x = next;
    if (moved <= 4e-16 * x || hi - lo <= 4e-16 * x)
      return x;
  }
  return x;
}

} // namespace detail

/// The regularized incomplete beta function I_x(a, b) = B(x; a, b) / B(a, b), the CDF of the
/// Beta(a, b) distribution, for a, b > 0 and x in [0, 1]. Accurate to about 1e-15 (relative in
/// the lower tail).
[[nodiscard]] inline double regularized_incomplete_beta(double a, double b, double x) {
  require(a > 0 && std::isfinite(a), "a", a, "must be positive and finite");
  require(b > 0 && std::isfinite(b), "b", b, "must be positive and finite");
  require(x >= 0 && x <= 1, "x", x, "must lie in [0, 1]");
  if (x == 0 || x == 1)
    return x;
  if (x < (a + 1) / (a + b + 2))
    return detail::incomplete_beta_lower(a, b, x);
  return 1.0 - detail::incomplete_beta_lower(b, a, 1.0 - x);
}

/// The quantile function of Beta(a, b): the x with I_x(a, b) = p (scipy.stats.beta.ppf, which
/// diffusers' use_beta_sigmas calls). p above 1/2 is solved in the upper tail through
/// I_x(a, b) = 1 - I_{1-x}(b, a), so both tails keep their accuracy: |x - exact| <~ 1e-15.
[[nodiscard]] inline double inverse_regularized_incomplete_beta(double a, double b, double p) {
  require(a > 0 && std::isfinite(a), "a", a, "must be positive and finite");
  require(b > 0 && std::isfinite(b), "b", b, "must be positive and finite");
  require(p >= 0 && p <= 1, "p", p, "must lie in [0, 1]");
  if (p == 0 || p == 1)
    return p;
  if (p <= 0.5)
    return detail::inverse_incomplete_beta_lower(a, b, p);
  return 1.0 - detail::inverse_incomplete_beta_lower(b, a, 1.0 - p);
}

/// n sigmas from sigma_max down to sigma_min at the quantiles of a Beta(alpha, beta) distribution
/// (Lee et al. 2024, "Beta Sampling is All You Need"; diffusers `_convert_to_beta`):
///   sigma_i = sigma_min + ppf(1 - r_i) * (sigma_max - sigma_min),  r = np.linspace(0, 1, n).
/// With alpha = beta = 0.6 (diffusers' values) the steps crowd at both ends. n == 1 gives
/// {sigma_max}. Double precision; diffusers then stores them as float32.
[[nodiscard]] inline std::vector<double> beta_sigmas(double sigma_min, double sigma_max, int n,
                                                     double alpha = 0.6, double beta = 0.6) {
  require(n >= 1, "num_steps", n, "must be at least 1");
  require(alpha > 0 && std::isfinite(alpha), "beta_sigmas alpha", alpha,
          "must be positive and finite");
  require(beta > 0 && std::isfinite(beta), "beta_sigmas beta", beta, "must be positive and finite");
  require(sigma_min >= 0 && std::isfinite(sigma_min), "sigma_min", sigma_min,
          "must be non-negative and finite");
  require(sigma_max > sigma_min && std::isfinite(sigma_max), "sigma_max", sigma_max,
          "must be finite and above sigma_min");
  std::vector<double> out = numpy_linspace(0.0, 1.0, n);
  for (double& r : out)
    r = sigma_min +
        inverse_regularized_incomplete_beta(alpha, beta, 1.0 - r) * (sigma_max - sigma_min);
  return out;
}

} // namespace tstitch::spacing
