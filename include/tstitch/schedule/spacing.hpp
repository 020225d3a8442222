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

} // namespace tstitch::spacing
