// SPDX-License-Identifier: Apache-2.0
#pragma once

#include "tstitch/core/step.hpp"

namespace tstitch {

// The Gaussian transition and posterior between two points t (noisier) and s of any schedule
// x_t = alpha_t x0 + sigma_t eps (Kingma et al., "Variational Diffusion Models", eq. 2-4).
// For DDPM's variance-preserving schedule they reduce to the textbook quantities, with
// alpha^2 = alphas_cumprod: the transition variance is the (respaced) beta_t = 1 - abar_t/abar_s
// and the posterior variance is beta_t (1 - abar_s) / (1 - abar_t).

/// Var[x_t | x_s] = sigma_t^2 - (alpha_t / alpha_s)^2 sigma_s^2: the respaced beta_t.
[[nodiscard]] inline double transition_variance(const TimePoint& t, const TimePoint& s) {
  const double ratio = t.alpha / s.alpha;
  return t.sigma * t.sigma - ratio * ratio * s.sigma * s.sigma;
}

/// Var[x_s | x_t, x0]: transition variance * sigma_s^2 / sigma_t^2 (0 when s is clean).
[[nodiscard]] inline double posterior_variance(const TimePoint& t, const TimePoint& s) {
  return transition_variance(t, s) * (s.sigma * s.sigma) / (t.sigma * t.sigma);
}

/// E[x_s | x_t, x0] = x0_coeff * x0 + xt_coeff * x_t.
struct PosteriorMean {
  double x0_coeff;
  double xt_coeff;
};

[[nodiscard]] inline PosteriorMean posterior_mean(const TimePoint& t, const TimePoint& s) {
  const double sigma_t2 = t.sigma * t.sigma;
  return {s.alpha * transition_variance(t, s) / sigma_t2,
          (t.alpha / s.alpha) * s.sigma * s.sigma / sigma_t2};
}

} // namespace tstitch
