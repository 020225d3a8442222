// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "tstitch/core/error.hpp"
#include "tstitch/solver/concept.hpp"

namespace tstitch {

struct EulerAncestralOptions {
  /// Scales the fresh noise of each step (k-diffusion's eta): 1 is diffusers'
  /// EulerAncestralDiscreteScheduler (which has no eta), 0 the deterministic Euler step. Must be
  /// finite and >= 0; above 1, sigma_up is capped at sigma_next (all of the next noise level is
  /// fresh noise), as in k-diffusion.
  double eta = 1.0;

  friend bool operator==(const EulerAncestralOptions&, const EulerAncestralOptions&) = default;
};

/// Euler ancestral sampling (k-diffusion's sample_euler_ancestral; diffusers'
/// EulerAncestralDiscreteScheduler is eta = 1). In y = x / alpha, s = sigma / alpha coordinates
/// each step splits s_next into a deterministic and a fresh-noise part,
///   s_up   = min(s_next, eta * sqrt(s_next^2 (s^2 - s_next^2) / s^2)),
///   s_down = sqrt(s_next^2 - s_up^2),
/// takes an Euler step to s_down and adds s_up z:
///   y_next = y + (s_down - s) eps + s_up z,  written back for x = alpha * y:
///   x_next = (alpha_next / alpha) x + alpha_next (s_down - s) eps + alpha_next s_up z.
/// Steps into sigma = 0 draw no noise (s_up = 0): the last step returns alpha_next x0 as Euler
/// does. From alpha = 0 (flow pure noise, s infinite) the limit alpha_next (x0 + s_down eps + s_up
/// z) with s_up = min(1, eta) s_next is used.
class EulerAncestral {
public:
  explicit EulerAncestral(EulerAncestralOptions options = {}) : options_(options) {
    require(std::isfinite(options.eta) && options.eta >= 0, "EulerAncestralOptions::eta",
            options.eta, "must be finite and >= 0");
  }

  [[nodiscard]] const EulerAncestralOptions& options() const { return options_; }

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape) {
    require_towards_data(trajectory, "EulerAncestral");
    if (options_.eta > 0)
      ensure_workspace(backend, noise_, batch, shape);
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    const TimePoint& t = step.from();
    const TimePoint& s = step.to();
    const double s_next = s.ve_sigma();
    double s_up = 0;
    if (options_.eta > 0 && s.sigma > 0) {
      if (t.alpha == 0) {
        s_up = std::min(s_next, options_.eta * s_next);
      } else {
        const double s_from = t.ve_sigma();
        const double ratio = s_next * s_next * (s_from * s_from - s_next * s_next) /
                             (s_from * s_from); // k-diffusion's order of operations
        s_up = std::min(s_next, options_.eta * std::sqrt(std::max(0.0, ratio)));
      }
    }
    // alpha_next * s_down; without noise that is sigma_next itself, which keeps eta = 0
    // bit-identical to tstitch::Euler.
    const double alpha_s_down =
        s_up == 0 ? s.sigma : s.alpha * std::sqrt(std::max(0.0, s_next * s_next - s_up * s_up));
    const auto noise_coeff = static_cast<float>(s.alpha * s_up);
    const ConstView x_in = x;

    if (t.alpha == 0) {
      const auto x0_coeff = static_cast<float>(s.alpha);
      const auto eps_coeff = static_cast<float>(alpha_s_down);
      if (noise_coeff > 0) {
        backend.fill_normal(noise_.view(), step.noise);
        backend.combine(x, Term{x0_coeff, out.x0}, Term{eps_coeff, out.eps},
                        Term{noise_coeff, ConstView(noise_.view())});
      } else {
        backend.combine(x, Term{x0_coeff, out.x0}, Term{eps_coeff, out.eps});
      }
      return;
    }
    const auto x_coeff = static_cast<float>(s.alpha / t.alpha);
    // alpha_next (s_down - s), with s = sigma / alpha.
    const auto eps_coeff = static_cast<float>(alpha_s_down - s.alpha * (t.sigma / t.alpha));
    if (noise_coeff > 0) {
      backend.fill_normal(noise_.view(), step.noise);
      backend.combine(x, Term{x_coeff, x_in}, Term{eps_coeff, out.eps},
                      Term{noise_coeff, ConstView(noise_.view())});
    } else {
      backend.combine(x, Term{x_coeff, x_in}, Term{eps_coeff, out.eps});
    }
  }

private:
  EulerAncestralOptions options_;
  AnyTensor noise_;
};

} // namespace tstitch
