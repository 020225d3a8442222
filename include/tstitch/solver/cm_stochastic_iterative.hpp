// SPDX-License-Identifier: Apache-2.0
#pragma once

// Consistency-model sampling (Song et al. 2023; diffusers' CMStochasticIterativeScheduler): the
// Karras sigma schedule of consistency models, written so that the latents are the network's
// scaled input, and the multistep consistency step with its boundary-condition scalings.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "tstitch/core/config.hpp"
#include "tstitch/core/error.hpp"
#include "tstitch/schedule/trajectory.hpp"
#include "tstitch/solver/clip.hpp"
#include "tstitch/solver/concept.hpp"

namespace tstitch {

/// Options of a CMKarrasSchedule; the defaults are diffusers' CMStochasticIterativeScheduler's.
struct CMKarrasScheduleOptions {
  int num_train_timesteps = 40; ///< N: points of the training Karras grid
  double sigma_min = 0.002;
  double sigma_max = 80.0;
  double sigma_data = 0.5; ///< sets c_in = 1 / sqrt(sigma^2 + sigma_data^2), the latent scale
  double rho = 7.0;

  friend bool operator==(const CMKarrasScheduleOptions&, const CMKarrasScheduleOptions&) = default;
};

/// The noise schedule of consistency models (EDM / VE: y = x0 + s eps with Karras sigmas s in
/// [sigma_min, sigma_max]). A consistency network is fed c_in * y, c_in = 1 / sqrt(s^2 +
/// sigma_data^2) (diffusers' scale_model_input), and tstitch feeds the network the latents
/// themselves, so the points of this schedule are
///   alpha = c_in(s),  sigma = s * c_in(s),  timestep = 1000 * 0.25 * log(s + 1e-44)
/// (diffusers' sigma_to_t, the c_noise of the network). The latents are therefore c_in * y: about
/// unit variance at sigma_max, so x_T is fill_initial_noise's standard normal noise (diffusers'
/// y_T = sigma_max * randn is x_T / c_in(sigma_max)). The final point is clean, alpha = 1,
/// sigma = 0: the consistency step's last denoised estimate is the result, as in diffusers.
///
/// An n-step run visits diffusers' set_timesteps(n) grid: the integers round(arange(n) * (N //
/// n)) (noisiest first), read in reverse as ramp positions r = i / (N - 1) of the Karras ramp
///   s(r) = (sigma_max^(1/rho) + r (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho.
/// As in diffusers, s is stored as float32 (its `sigmas`) while the timestep is taken from the
/// double s.
class CMKarrasSchedule {
public:
  explicit CMKarrasSchedule(CMKarrasScheduleOptions options = {}) : options_(options) {
    require(options.num_train_timesteps >= 2, "CMKarrasScheduleOptions::num_train_timesteps",
            options.num_train_timesteps, "must be at least 2 (the ramp divides by N - 1)");
    require(std::isfinite(options.sigma_min) && options.sigma_min > 0,
            "CMKarrasScheduleOptions::sigma_min", options.sigma_min, "must be finite and > 0");
    require(std::isfinite(options.sigma_max) && options.sigma_max > options.sigma_min,
            "CMKarrasScheduleOptions::sigma_max", options.sigma_max,
            detail::concat("must be finite and above sigma_min = ", options.sigma_min));
    require(std::isfinite(options.sigma_data) && options.sigma_data > 0,
            "CMKarrasScheduleOptions::sigma_data", options.sigma_data, "must be finite and > 0");
    require(std::isfinite(options.rho) && options.rho > 0, "CMKarrasScheduleOptions::rho",
            options.rho, "must be finite and > 0");
  }

  /// diffusers' sigma_to_t: the model time (c_noise) of VE sigma s.
  [[nodiscard]] static double timestep_of(double s) { return 1000 * 0.25 * std::log(s + 1e-44); }

  /// The point of VE sigma s, model time `timestep`.
  [[nodiscard]] TimePoint point_of_sigma(double s, double timestep) const {
    const double alpha = 1.0 / std::sqrt(s * s + options_.sigma_data * options_.sigma_data);
    return TimePoint{timestep, alpha, s * alpha};
  }

  /// The Karras sigma at ramp position r in [0, 1] (0: sigma_max, 1: sigma_min), in double.
  [[nodiscard]] double karras_sigma(double r) const {
    const double min_inv_rho = std::pow(options_.sigma_min, 1.0 / options_.rho);
    const double max_inv_rho = std::pow(options_.sigma_max, 1.0 / options_.rho);
    return std::pow(max_inv_rho + r * (min_inv_rho - max_inv_rho), options_.rho);
  }

  // ---- NoiseSchedule -------------------------------------------------------------------------

  /// The point at model time t: s = exp(t / 250) (the inverse of timestep_of, up to its 1e-44).
  [[nodiscard]] TimePoint point(double t) const {
    require(std::isfinite(t), "t", t, "must be finite");
    return point_of_sigma(std::exp(t / 250.0), t);
  }
  [[nodiscard]] double timestep_at(double ve_sigma) const {
    require(ve_sigma >= 0, "ve_sigma", ve_sigma, "must be non-negative (and not NaN)");
    return timestep_of(ve_sigma);
  }

  /// diffusers' integer `timesteps` of set_timesteps(n), noisiest first: (n - 1 - i) * (N // n).
  [[nodiscard]] std::vector<int> grid(int n) const {
    require(
        n >= 1 && n <= options_.num_train_timesteps, "num_steps", n,
        detail::concat("must be in [1, num_train_timesteps = ", options_.num_train_timesteps, "]"));
    const int ratio = options_.num_train_timesteps / n;
    std::vector<int> out(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i)
      out[static_cast<std::size_t>(i)] = (n - 1 - i) * ratio;
    return out;
  }

  /// The model timesteps of an n-step run (diffusers' scheduler.timesteps after set_timesteps).
  [[nodiscard]] std::vector<double> timesteps(int n) const {
    std::vector<double> out;
    for (const TimePoint& p : trajectory(n).points)
      out.push_back(p.timestep);
    out.pop_back();
    return out;
  }

  [[nodiscard]] Trajectory trajectory(int n) const { return trajectory_through(grid(n)); }

  /// diffusers' set_timesteps(timesteps=[...]): integers of the training grid, decreasing, in
  /// [0, N - 1], read in reverse as ramp positions (so the first point is always at ramp
  /// position timesteps.back() / (N - 1)), then the clean final point.
  [[nodiscard]] Trajectory trajectory_through(const std::vector<int>& timesteps) const {
    require(!timesteps.empty(), "timesteps.size()", 0, "must be at least 1");
    const int n_train = options_.num_train_timesteps;
    require(timesteps.front() < n_train, "timesteps[0]", timesteps.front(),
            detail::concat("must be below num_train_timesteps = ", n_train));
    for (std::size_t i = 1; i < timesteps.size(); ++i)
      if (!(timesteps[i] < timesteps[i - 1]))
        throw_invalid_argument(
            detail::concat("timesteps[", i, "]"), timesteps[i],
            detail::concat("must be below timesteps[", i - 1, "] = ", timesteps[i - 1]));
    require(timesteps.back() >= 0, detail::concat("timesteps[", timesteps.size() - 1, "]"),
            timesteps.back(), "must be >= 0");
    Trajectory traj;
    traj.num_train_timesteps = static_cast<double>(n_train);
    for (auto it = timesteps.rbegin(); it != timesteps.rend(); ++it) {
      const double r = static_cast<double>(*it) / static_cast<double>(n_train - 1);
      const double s = karras_sigma(r);
      traj.points.push_back(point_of_sigma(static_cast<float>(s), timestep_of(s)));
    }
    traj.points.push_back(TimePoint{timestep_of(0.0), 1.0, 0.0});
    return traj;
  }

  [[nodiscard]] const CMKarrasScheduleOptions& options() const { return options_; }
  [[nodiscard]] int num_train_timesteps() const { return options_.num_train_timesteps; }

private:
  CMKarrasScheduleOptions options_;
};

static_assert(NoiseSchedule<CMKarrasSchedule>);

/// Options of CMStochasticIterative; the defaults are diffusers'. sigma_min, sigma_max and
/// sigma_data must be those of the schedule the model was distilled on (see for_schedule).
struct CMStochasticIterativeOptions {
  double sigma_min = 0.002;  ///< the boundary: f(y, sigma_min) = y
  double sigma_max = 80.0;   ///< caps the re-noising sigma
  double sigma_data = 0.5;   ///< of the scalings c_skip, c_out
  double s_noise = 1.0;      ///< scales the fresh noise of each step
  bool clip_denoised = true; ///< clamp the consistency estimate to [-1, 1]

  /// The solver options matching a schedule (s_noise and clip_denoised at their defaults).
  [[nodiscard]] static CMStochasticIterativeOptions for_schedule(const CMKarrasSchedule& s) {
    CMStochasticIterativeOptions o;
    o.sigma_min = s.options().sigma_min;
    o.sigma_max = s.options().sigma_max;
    o.sigma_data = s.options().sigma_data;
    return o;
  }

  friend bool operator==(const CMStochasticIterativeOptions&,
                         const CMStochasticIterativeOptions&) = default;
};

/// Multistep consistency sampling (diffusers' CMStochasticIterativeScheduler.step). At a point of
/// VE sigma s = sigma / alpha (y = x / alpha) the network's raw output F gives the consistency
/// estimate
///   d = c_skip y + c_out F,  c_skip = sd^2 / ((s - s_min)^2 + sd^2),
///                            c_out  = (s - s_min) sd / sqrt(s^2 + sd^2),
/// (sd = sigma_data; the boundary condition f(y, s_min) = y), clamped to [-1, 1] with
/// clip_denoised; then it re-noises to the next point with fresh noise z from step.noise:
///   y_next = d + s_noise sqrt(s_hat^2 - s_min^2) z,  s_hat = clamp(s_next, s_min, s_max),
/// and x_next = alpha_next y_next. Into the clean final point (s_next = 0) the noise term is 0
/// and x = d, which is what diffusers returns (it ends at s_min with a zero noise term).
///
/// F is the denoiser's raw output (ModelOutput::raw, its first C channels), whatever prediction
/// type the denoiser declares: the consistency network's output is none of tstitch's types, so
/// declare Prediction::sample (x0 = raw is then passed through unconverted; on_preview shows F).
/// The solver itself works on any schedule, since y = x / alpha; the network's input scale c_in
/// is the schedule's business (CMKarrasSchedule). Like diffusers, a one-step run draws no noise.
class CMStochasticIterative {
public:
  explicit CMStochasticIterative(CMStochasticIterativeOptions options = {}) : options_(options) {
    require(std::isfinite(options.sigma_min) && options.sigma_min > 0,
            "CMStochasticIterativeOptions::sigma_min", options.sigma_min, "must be finite and > 0");
    require(std::isfinite(options.sigma_max) && options.sigma_max > options.sigma_min,
            "CMStochasticIterativeOptions::sigma_max", options.sigma_max,
            detail::concat("must be finite and above sigma_min = ", options.sigma_min));
    require(std::isfinite(options.sigma_data) && options.sigma_data > 0,
            "CMStochasticIterativeOptions::sigma_data", options.sigma_data,
            "must be finite and > 0");
    require(std::isfinite(options.s_noise) && options.s_noise >= 0,
            "CMStochasticIterativeOptions::s_noise", options.s_noise, "must be finite and >= 0");
  }

  [[nodiscard]] const CMStochasticIterativeOptions& options() const { return options_; }

  /// The boundary-condition scalings at VE sigma s (get_scalings_for_boundary_condition).
  struct Scalings {
    double c_skip, c_out;
  };
  [[nodiscard]] Scalings scalings(double s) const {
    const double sd2 = options_.sigma_data * options_.sigma_data;
    const double d = s - options_.sigma_min;
    return {sd2 / (d * d + sd2), d * options_.sigma_data / std::sqrt(s * s + sd2)};
  }

  /// The VE noise scale added towards a point of VE sigma s_next (before s_noise).
  [[nodiscard]] double renoise_sigma(double s_next) const {
    const double s_hat = std::clamp(s_next, options_.sigma_min, options_.sigma_max);
    return std::sqrt(std::max(0.0, s_hat * s_hat - options_.sigma_min * options_.sigma_min));
  }

  template <class Backend>
  void begin(Backend& backend, const Trajectory& trajectory, std::int64_t batch, Shape shape) {
    require_towards_data(trajectory, "CMStochasticIterative");
    require(trajectory.steps() >= 1 && trajectory[0].alpha > 0, "trajectory[0].alpha",
            trajectory.steps() >= 1 ? trajectory[0].alpha : 0.0,
            "must be > 0: the consistency step works on y = x / alpha");
    if (trajectory.steps() > 1 && options_.s_noise > 0)
      ensure_workspace(backend, noise_, batch, shape);
  }

  template <class Backend>
  void update(Backend& backend, const SolverStep& step, const ModelOutput& out, View x) {
    const TimePoint& t = step.from();
    const TimePoint& next = step.to();
    const Scalings c = scalings(t.ve_sigma());
    const bool noisy = step.trajectory->steps() > 1 && options_.s_noise > 0;
    const double noise = noisy ? options_.s_noise * renoise_sigma(next.ve_sigma()) : 0.0;
    const Consistency f{static_cast<float>(c.c_out), static_cast<float>(c.c_skip / t.alpha),
                        options_.clip_denoised ? 1.0f : 0.0f, static_cast<float>(next.alpha),
                        static_cast<float>(noise)};
    const ConstView raw = out.raw.channels(0, x.shape().channels);
    const ConstView x_in = x;
    if (noise > 0) {
      backend.fill_normal(noise_.view(), step.noise);
      backend.map(x, f, raw, x_in, ConstView(noise_.view()));
    } else {
      backend.map(x, f, raw, x_in);
    }
  }

  // Public only because nvcc cannot instantiate a kernel template with a private nested type.
  /// alpha_next * (clip(c_out F + c_skip / alpha x) [+ noise z]).
  struct Consistency {
    float out_coeff, x_coeff, clip, alpha_next, noise;
    TSTITCH_HOST_DEVICE float operator()(float f, float x) const {
      return alpha_next * clip_sample(out_coeff * f + x_coeff * x, clip);
    }
    TSTITCH_HOST_DEVICE float operator()(float f, float x, float z) const {
      return alpha_next * (clip_sample(out_coeff * f + x_coeff * x, clip) + noise * z);
    }
  };

private:
  CMStochasticIterativeOptions options_;
  AnyTensor noise_;
};

} // namespace tstitch
