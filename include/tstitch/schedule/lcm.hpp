// SPDX-License-Identifier: Apache-2.0
#pragma once

// LCM's timesteps and the schedule that visits them (diffusers' LCMScheduler.set_timesteps); the
// LCM solver itself is in solver/lcm.hpp.
#include <cmath>
#include <cstddef>
#include <utility>
#include <vector>

#include "tstitch/core/error.hpp"
#include "tstitch/core/step.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/schedule/trajectory.hpp"

namespace tstitch {

/// The timesteps of an n-step LCM run (diffusers' LCMScheduler.set_timesteps(n), strength 1): the
/// distillation schedule k*j - 1 for j = 1..original_inference_steps with k = N //
/// original_inference_steps, noisiest first, sampled at indices floor(linspace(0, original, n,
/// endpoint=False)). E.g. N = 1000, original 50: n = 1 gives {999}, n = 4 {999, 759, 499, 259}.
/// Use with DiscreteSchedule::trajectory_through, or through LCMSchedule.
[[nodiscard]] inline std::vector<double> lcm_timesteps(int num_train_timesteps,
                                                       int original_inference_steps, int n) {
  require(num_train_timesteps >= 1, "num_train_timesteps", num_train_timesteps,
          "must be at least 1");
  require(original_inference_steps >= 1 && original_inference_steps <= num_train_timesteps,
          "original_inference_steps", original_inference_steps,
          detail::concat("must be in [1, num_train_timesteps = ", num_train_timesteps, "]"));
  require(n >= 1 && n <= original_inference_steps, "num_steps", n,
          detail::concat("must be in [1, original_inference_steps = ", original_inference_steps,
                         "]: LCM picks its timesteps from the distillation schedule"));
  const int k = num_train_timesteps / original_inference_steps;
  // np.linspace(0, original, n, endpoint=False) is i * (original / n) in double, then floored.
  const double stride = static_cast<double>(original_inference_steps) / static_cast<double>(n);
  std::vector<double> out(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    const auto index = static_cast<int>(std::floor(static_cast<double>(i) * stride));
    out[static_cast<std::size_t>(i)] =
        static_cast<double>((original_inference_steps - index) * k - 1);
  }
  return out;
}

/// A DiscreteSchedule whose n-step trajectories visit lcm_timesteps(N, original, n): what sample()
/// needs to run LCM with diffusers' timesteps.
class LCMSchedule {
public:
  /// diffusers' LCMScheduler defaults: N = 1000, scaled_linear betas 0.00085 .. 0.012.
  [[nodiscard]] static DiscreteScheduleOptions default_options() {
    DiscreteScheduleOptions o;
    o.beta_start = 0.00085;
    o.beta_end = 0.012;
    o.beta_schedule = BetaSchedule::scaled_linear;
    return o;
  }

  LCMSchedule() : LCMSchedule(DiscreteSchedule(default_options())) {}
  explicit LCMSchedule(DiscreteSchedule base, int original_inference_steps = 50)
      : base_(std::move(base)), original_(original_inference_steps) {
    require(
        original_ >= 1 && original_ <= base_.num_train_timesteps(), "original_inference_steps",
        original_,
        detail::concat("must be in [1, num_train_timesteps = ", base_.num_train_timesteps(), "]"));
  }

  [[nodiscard]] TimePoint point(double t) const { return base_.point(t); }
  [[nodiscard]] double timestep_at(double ve_sigma) const { return base_.timestep_at(ve_sigma); }
  [[nodiscard]] std::vector<double> timesteps(int n) const {
    return lcm_timesteps(base_.num_train_timesteps(), original_, n);
  }
  /// The LCM timesteps, then the base schedule's final point.
  [[nodiscard]] Trajectory trajectory(int n) const {
    return base_.trajectory_through(timesteps(n));
  }

  [[nodiscard]] const DiscreteSchedule& base() const { return base_; }
  [[nodiscard]] int original_inference_steps() const { return original_; }

private:
  DiscreteSchedule base_;
  int original_;
};

static_assert(NoiseSchedule<LCMSchedule>);

} // namespace tstitch
