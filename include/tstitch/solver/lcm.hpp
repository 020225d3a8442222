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
#include "tstitch/solver/clip.hpp"
#include "tstitch/solver/concept.hpp"

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
