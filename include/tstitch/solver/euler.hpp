// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "tstitch/solver/concept.hpp"

namespace tstitch {

/// Euler's method on the probability-flow ODE in k-diffusion's coordinates y = x / alpha,
/// s = sigma / alpha (diffusers' EulerDiscreteScheduler; Karras et al. 2022, Alg. 1 without
/// churn): y_next = y + (s_next - s) * eps, written back for x = alpha * y:
///   x_next = (alpha_next / alpha) * x + alpha_next * (s_next - s) * eps.
/// With the model's x0 and eps consistent this equals DDIM with eta = 0 and flow matching's
/// x + (sigma_next - sigma) * u; it is first order, and the base that Heun and Euler ancestral
/// extend. Where alpha = 0 (pure noise of a flow schedule, or a zero-SNR DiscreteSchedule with
/// ZeroSnrTerminal::zero) the limit alpha_next x0 + sigma_next eps is used. diffusers' Euler
/// instead steps from alphas_cumprod[-1] = 2^-24 (ZeroSnrTerminal::fp16_min_subnormal, VE sigma
/// ~4096), which the general formula handles.
class Euler {
public:
  template <class Backend> void begin(Backend&, const Trajectory&, std::int64_t, Shape) {}

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    const TimePoint& t = step.from();
    const TimePoint& s = step.to();
    if (t.alpha == 0) {
      backend.combine(x, Term{static_cast<float>(s.alpha), out.x0},
                      Term{static_cast<float>(s.sigma), out.eps});
      return;
    }
    // alpha_next * (s_next - s), without dividing by alpha_next.
    const double eps_coeff = s.sigma - s.alpha * (t.sigma / t.alpha);
    backend.combine(x, Term{static_cast<float>(s.alpha / t.alpha), ConstView(x)},
                    Term{static_cast<float>(eps_coeff), out.eps});
  }
};

} // namespace tstitch
