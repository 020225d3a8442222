// SPDX-License-Identifier: Apache-2.0
#pragma once

// Trajectory Consistency Distillation sampling (Zheng et al. 2024; diffusers' TCDScheduler): its
// schedule (LCM's distillation timesteps, optionally truncated by img2img strength) and its
// strategic stochastic sampling step.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "tstitch/core/config.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/schedule/discrete.hpp"
#include "tstitch/solver/concept.hpp"
#include "tstitch/solver/lcm.hpp"

namespace tstitch {

/// The timesteps of an n-step TCD run (diffusers' TCDScheduler.set_timesteps(n, strength)): LCM's
/// distillation schedule k*j - 1 (k = N // original_inference_steps), of which only the first
/// L = int(original_inference_steps * strength) entries remain (img2img starts from a less noisy
/// point), sampled noisiest first at indices floor(linspace(0, L, n, endpoint=False)).
/// That is lcm_timesteps over a training range of k*L timesteps with L distillation steps (same
/// k, same index rule), so the LCM code is reused as is; strength 1 is lcm_timesteps itself.
[[nodiscard]] inline std::vector<double>
tcd_timesteps(int num_train_timesteps, int original_inference_steps, int n, double strength = 1.0) {
  require(std::isfinite(strength) && strength > 0 && strength <= 1, "strength", strength,
          "must be in (0, 1]");
  if (strength == 1.0)
    return lcm_timesteps(num_train_timesteps, original_inference_steps, n);
  require(num_train_timesteps >= 1, "num_train_timesteps", num_train_timesteps,
          "must be at least 1");
  require(original_inference_steps >= 1 && original_inference_steps <= num_train_timesteps,
          "original_inference_steps", original_inference_steps,
          detail::concat("must be in [1, num_train_timesteps = ", num_train_timesteps, "]"));
  // Python's int(original * strength): the double product, truncated.
  const auto kept = static_cast<int>(static_cast<double>(original_inference_steps) * strength);
  require(n >= 1 && n <= kept, "num_steps", n,
          detail::concat("must be in [1, int(original_inference_steps * strength) = ", kept,
                         "] (original_inference_steps = ", original_inference_steps,
                         ", strength = ", strength, ")"));
  const int k = num_train_timesteps / original_inference_steps;
  return lcm_timesteps(k * kept, kept, n);
}

/// The schedule of diffusers' TCDScheduler: LCMSchedule's timesteps (times `strength`, see
/// tcd_timesteps) on a DiscreteSchedule, ending at the first training timestep by default. TCD's
/// last step moves to timestep 0, alphas_cumprod[0] - never to alpha = 1, whatever
/// set_alpha_to_one says - so FinalPoint::first_train_step is what reproduces diffusers.
class TCDSchedule {
public:
  /// diffusers' TCDScheduler defaults: N = 1000, scaled_linear betas 0.00085 .. 0.012, and the
  /// final point at timestep 0.
  [[nodiscard]] static DiscreteScheduleOptions default_options() {
    DiscreteScheduleOptions o = LCMSchedule::default_options();
    o.final_point = FinalPoint::first_train_step;
    return o;
  }

  TCDSchedule() : TCDSchedule(DiscreteSchedule(default_options())) {}
  explicit TCDSchedule(DiscreteSchedule base, int original_inference_steps = 50,
                       double strength = 1.0)
      : lcm_(std::move(base), original_inference_steps), strength_(strength) {
    require(std::isfinite(strength) && strength > 0 && strength <= 1, "strength", strength,
            "must be in (0, 1]");
    const auto kept = static_cast<int>(static_cast<double>(original_inference_steps) * strength);
    require(kept >= 1, "strength", strength,
            detail::concat("leaves int(original_inference_steps * strength) = ", kept,
                           " timesteps; at least 1 is needed"));
  }

  [[nodiscard]] TimePoint point(double t) const { return lcm_.point(t); }
  [[nodiscard]] double timestep_at(double ve_sigma) const { return lcm_.timestep_at(ve_sigma); }
  [[nodiscard]] std::vector<double> timesteps(int n) const {
    return tcd_timesteps(base().num_train_timesteps(), original_inference_steps(), n, strength_);
  }
  /// The TCD timesteps, then the base schedule's final point.
  [[nodiscard]] Trajectory trajectory(int n) const {
    return base().trajectory_through(timesteps(n));
  }
  /// diffusers' set_timesteps(timesteps=[...], strength): user timesteps (decreasing, in
  /// [0, N-1]) of which the last min(int(n * strength), n) are kept, then the final point.
  [[nodiscard]] Trajectory trajectory_through(const std::vector<double>& custom) const {
    const auto n = static_cast<int>(custom.size());
    const int kept = std::min(static_cast<int>(static_cast<double>(n) * strength_), n);
    require(kept >= 1, "strength", strength_,
            detail::concat("keeps int(", n, " * strength) = ", kept,
                           " of the custom timesteps; at least 1 is needed"));
    return base().trajectory_through(std::vector<double>(custom.end() - kept, custom.end()));
  }

  [[nodiscard]] const DiscreteSchedule& base() const { return lcm_.base(); }
  [[nodiscard]] const LCMSchedule& lcm() const { return lcm_; }
  [[nodiscard]] int original_inference_steps() const { return lcm_.original_inference_steps(); }
  [[nodiscard]] double strength() const { return strength_; }

private:
  LCMSchedule lcm_;
  double strength_;
};

static_assert(NoiseSchedule<TCDSchedule>);

struct TCDOptions {
  /// The stochastic parameter gamma of the paper (diffusers' `eta` argument of step(), 0.3 by
  /// default there and in its pipelines): 0 is deterministic (DDIM between the points), 1 jumps
  /// to the cleanest point and re-noises fully. Must lie in [0, 1].
  double gamma = 0.3;

  friend bool operator==(const TCDOptions&, const TCDOptions&) = default;
};

/// Strategic stochastic sampling of Trajectory Consistency Distillation (diffusers'
/// TCDScheduler.step). From point t to the next point p, with x0 and eps the model's estimates:
///   s   = floor((1 - gamma) * timestep(p))           (an earlier, cleaner model time)
///   x_s = alpha_s x0 + sigma_s eps                  (a DDIM jump from t to s)
///   x_p = (alpha_p / alpha_s) x_s + sqrt(sigma_p^2 - (alpha_p / alpha_s)^2 sigma_s^2) z
/// i.e. the forward process re-noises x_s to p with fresh noise z from step.noise (on a VP
/// schedule the noise scale is sqrt(1 - abar_p / abar_s), diffusers' formula). gamma = 0 gives
/// s = p and no noise: the deterministic DDIM step. The last step returns x_s and draws nothing.
///
/// The point at s comes from the trajectory's point_at map (set by the sampling loop). diffusers
/// computes (1 - gamma) * timestep in float32 (torch's int64 tensor times a Python float), so this
/// does too before flooring; where s equals the next point's timestep the next point itself is
/// used (so a clean final point stays clean).
///
/// TCDScheduler's clip_sample, thresholding and timestep_scaling settings are not read by its
/// step() (diffusers 0.31), so there is nothing of them here.
class TCD {
public:
  explicit TCD(TCDOptions options = {}) : options_(options) {
    require(std::isfinite(options.gamma) && options.gamma >= 0 && options.gamma <= 1,
            "TCDOptions::gamma", options.gamma, "must be in [0, 1]");
  }

  [[nodiscard]] const TCDOptions& options() const { return options_; }

  /// The model time s of the intermediate point for a step landing at model time `next`.
  [[nodiscard]] double intermediate_timestep(double next) const {
    const auto keep = static_cast<float>(1.0 - options_.gamma);
    return std::floor(static_cast<double>(keep * static_cast<float>(next)));
  }

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape) {
    require_towards_data(trajectory, "TCD");
    if (options_.gamma > 0) {
      require(static_cast<bool>(trajectory.point_at), "trajectory.point_at", "empty",
              "TCD with gamma > 0 evaluates the schedule between the points; sample() sets it");
      if (trajectory.steps() > 1)
        ensure_workspace(backend, noise_, batch, shape);
    }
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    const TimePoint& p = step.to();
    TimePoint s = p;
    if (options_.gamma > 0) {
      const double ts = intermediate_timestep(p.timestep);
      if (ts != p.timestep)
        s = step.trajectory->point_at(ts);
    }
    const bool renoise = options_.gamma > 0 && !step.last();
    const double ratio = renoise ? p.alpha / s.alpha : 1.0;
    const double noise_var = renoise ? p.sigma * p.sigma - ratio * ratio * s.sigma * s.sigma : 0.0;
    const auto x0_coeff = static_cast<float>(ratio * s.alpha);
    const auto eps_coeff = static_cast<float>(ratio * s.sigma);
    if (noise_var > 0) {
      backend.fill_normal(noise_.view(), step.noise);
      backend.combine(x, Term{x0_coeff, out.x0}, Term{eps_coeff, out.eps},
                      Term{static_cast<float>(std::sqrt(noise_var)), ConstView(noise_.view())});
    } else {
      backend.combine(x, Term{x0_coeff, out.x0}, Term{eps_coeff, out.eps});
    }
  }

private:
  TCDOptions options_;
  AnyTensor noise_;
};

} // namespace tstitch
