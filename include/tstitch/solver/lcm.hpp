// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <cmath>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "tstitch/core/config.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/schedule/lcm.hpp"
#include "tstitch/solver/clip.hpp"
#include "tstitch/solver/concept.hpp"

namespace tstitch {

struct LCMOptions {
  /// Multiplies the timestep in the boundary-condition scalings (diffusers' timestep_scaling).
  double timestep_scaling = 10.0;
  /// sigma_data of the scalings (diffusers hard-codes 0.5).
  double sigma_data = 0.5;
  /// Clip x0 to [-r, r] before the scalings (diffusers' clip_sample / clip_sample_range; off).
  std::optional<float> clip_sample;

  friend bool operator==(const LCMOptions&, const LCMOptions&) = default;
};

/// Latent Consistency Model sampling (Luo et al. 2023; diffusers' LCMScheduler). The consistency
/// function at points[i] with model time t is
///   denoised = c_out x0 + c_skip x,   c_skip = sd^2 / (u^2 + sd^2),  c_out = u / sqrt(u^2 + sd^2),
/// u = t * timestep_scaling, sd = sigma_data (the boundary condition f(x, 0) = x). Multistep LCM
/// re-noises the estimate to the next point with fresh noise from step.noise:
///   x_next = alpha_next denoised + sigma_next z.
/// The last step returns `denoised` itself, whatever the final point (as diffusers does: its
/// set_alpha_to_one never matters), so a one-step run draws no noise.
class LCM {
public:
  explicit LCM(LCMOptions options = {}) : options_(options) {
    require(std::isfinite(options.timestep_scaling) && options.timestep_scaling > 0,
            "LCMOptions::timestep_scaling", options.timestep_scaling, "must be finite and > 0");
    require(std::isfinite(options.sigma_data) && options.sigma_data > 0, "LCMOptions::sigma_data",
            options.sigma_data, "must be finite and > 0");
    if (options.clip_sample)
      require(*options.clip_sample > 0, "LCMOptions::clip_sample", *options.clip_sample,
              "must be > 0");
  }

  [[nodiscard]] const LCMOptions& options() const { return options_; }

  /// The boundary-condition scalings at model time t.
  struct Scalings {
    double c_skip, c_out;
  };
  [[nodiscard]] Scalings scalings(double timestep) const {
    const double u = timestep * options_.timestep_scaling;
    const double sd2 = options_.sigma_data * options_.sigma_data;
    return {sd2 / (u * u + sd2), u / std::sqrt(u * u + sd2)};
  }

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape) {
    require_towards_data(trajectory, "LCM");
    if (trajectory.steps() > 1)
      ensure_workspace(backend, noise_, batch, shape);
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    const Scalings c = scalings(step.from().timestep);
    const TimePoint& s = step.to();
    const double scale = step.last() ? 1.0 : s.alpha; // the last step returns `denoised`
    const auto x0_coeff = static_cast<float>(scale * c.c_out);
    const auto x_coeff = static_cast<float>(scale * c.c_skip);
    const float clip = options_.clip_sample.value_or(0.0f);
    const ConstView x_in = x;
    const bool noisy = !step.last() && s.sigma > 0;
    if (noisy)
      backend.fill_normal(noise_.view(), step.noise);
    const auto noise_coeff = static_cast<float>(noisy ? s.sigma : 0.0);
    if (clip > 0) {
      if (noisy)
        backend.map(x, ClippedCombination{x0_coeff, x_coeff, noise_coeff, clip}, out.x0, x_in,
                    ConstView(noise_.view()));
      else
        backend.map(x, ClippedCombination{x0_coeff, x_coeff, 0.0f, clip}, out.x0, x_in);
    } else if (noisy) {
      backend.combine(x, Term{x0_coeff, out.x0}, Term{x_coeff, x_in},
                      Term{noise_coeff, ConstView(noise_.view())});
    } else {
      backend.combine(x, Term{x0_coeff, out.x0}, Term{x_coeff, x_in});
    }
  }

private:
  LCMOptions options_;
  AnyTensor noise_;
};

} // namespace tstitch
