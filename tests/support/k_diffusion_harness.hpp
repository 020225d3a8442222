// SPDX-License-Identifier: Apache-2.0
// diffusers' harness for its k-diffusion-class schedulers (Euler, Heun, LMS, KDPM2; docs/parity.md
// §1.2, loop pattern K): their test config, the training betas exactly as torch builds them, the
// variance-exploding trajectory they step on, x0 and the derivative as their step() computes them,
// and the loop itself with a tstitch solver as step().
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "diffusers_harness.hpp"
#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"

namespace tstitch::testing {

/// The schedule options of test_scheduler_euler.py, test_scheduler_heun.py, test_scheduler_lms.py
/// and test_scheduler_kdpm2_discrete.py: N = 1100, linear betas 1e-4 .. 0.02, linspace spacing
/// with float32 (unrounded) timesteps.
inline DiscreteScheduleOptions k_config() {
  DiscreteScheduleOptions o;
  o.num_train_timesteps = 1100;
  o.spacing = TimestepSpacing::linspace;
  o.round_timesteps = false;
  return o;
}

/// `torch.linspace(start, end, n, dtype=torch.float32)` as torch's CPU kernel evaluates it
/// element by element: float32 start, end and step; the first half counted up from start, the
/// second half down from end.
inline std::vector<double> torch_linspace_f32(double start, double end, int n) {
  const auto a = static_cast<float>(start), b = static_cast<float>(end);
  const float step = (b - a) / static_cast<float>(n - 1);
  std::vector<double> out(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i)
    out[static_cast<std::size_t>(i)] =
        i < n / 2 ? a + step * static_cast<float>(i) : b - step * static_cast<float>(n - 1 - i);
  return out;
}

/// The schedule of `options`, for `beta_schedule = "linear"` with the training table exactly as
/// torch builds it for diffusers (other beta schedules as DiscreteSchedule builds them).
/// DiscreteSchedule's built-in linear betas round a double linspace instead, which differs by one
/// ulp in 369 of the 1100 betas of k_config() and puts the noisiest sigma at 261.05560 instead of
/// 261.05557: harmless elsewhere, but the with_noise sums (Euler 57062.93, Heun 75074.89, LMS
/// 27663.69, KDPM2 70408.41, tolerance 0.01) move by about as much with it. With this table the
/// loops reproduce diffusers' float32 results (Euler's and Heun's, summed in torch's order, give
/// the asserted 57062.9297 and 75074.8906 exactly).
inline DiscreteSchedule torch_schedule(const DiscreteScheduleOptions& options) {
  if (options.beta_schedule != BetaSchedule::linear)
    return DiscreteSchedule(options);
  return DiscreteSchedule::from_betas(
      torch_linspace_f32(options.beta_start, options.beta_end, options.num_train_timesteps),
      options);
}

/// diffusers' k-diffusion schedulers work on y = x / alpha with sigma = sigma / alpha, which in
/// tstitch is the trajectory of points (t, alpha = 1, sigma = ve_sigma): the same solvers, on a
/// variance-exploding schedule. Sigmas are stored as float32, as diffusers stores `self.sigmas`.
inline Trajectory ve_trajectory(const Trajectory& vp) {
  Trajectory ve{{}, vp.num_train_timesteps};
  for (const TimePoint& p : vp.points)
    ve.points.push_back(TimePoint{static_cast<double>(static_cast<float>(p.timestep)), 1.0,
                                  static_cast<double>(static_cast<float>(p.ve_sigma()))});
  return ve;
}

/// ve_trajectory of schedule's n-step trajectory, with the schedule's maps in the same VE form, so
/// that a point between the trajectory's points (KDPM2's midpoint) is
/// (timestep_at(s), 1, s).
inline Trajectory ve_trajectory(const DiscreteSchedule& schedule, int n) {
  Trajectory ve = ve_trajectory(schedule.trajectory(n));
  ve.timestep_at = [schedule](double s) { return schedule.timestep_at(s); };
  ve.point_at = [schedule](double t) { return TimePoint{t, 1.0, schedule.point(t).ve_sigma()}; };
  return ve;
}

/// x0 and the ODE derivative eps = (x - x0) / sigma exactly as diffusers' k-diffusion step()
/// computes them from the sample it is handed (VE sigma of the evaluation), in float32 like torch.
inline void diffusers_outputs(Prediction prediction, double ve_sigma, const Tensor& x,
                              const Tensor& m, Tensor& x0, Tensor& eps) {
  const auto s = static_cast<float>(ve_sigma);
  for (std::int64_t i = 0; i < x.numel(); ++i) {
    switch (prediction) {
    case Prediction::epsilon:
      x0[i] = x[i] - s * m[i];
      break;
    case Prediction::v: {
      const float root = std::sqrt(s * s + 1.0f);
      x0[i] = m[i] * (-s / root) + x[i] / (s * s + 1.0f);
      break;
    }
    case Prediction::sample:
      x0[i] = m[i];
      break;
    default:
      FAIL("the harness has no formula for this prediction");
    }
    eps[i] = (x[i] - x0[i]) / s;
  }
}

/// Where a solver evaluates the model at `step`: its evaluation_point, else the step's start.
template <class SolverT>
TimePoint evaluation_point_of(const SolverT& solver, const SolverStep& step) {
  if constexpr (requires { solver.evaluation_point(step); })
    return solver.evaluation_point(step);
  else
    return step.from();
}

/// What a solver hands the model at `step`: its evaluation_input, else x.
template <class SolverT>
ConstView evaluation_input_of(const SolverT& solver, const SolverStep& step, ConstView x) {
  if constexpr (requires { solver.evaluation_input(step, x); })
    return solver.evaluation_input(step, x);
  else
    return x;
}

/// diffusers' loop pattern K (§1.2), with a tstitch solver as step(), on the VE trajectory `ve`:
///   x = sample * init_noise_sigma
///   with_noise: x = add_noise(x, noise, ts[first_step]) = x + noise * sigma
///   for each evaluation: x = scale_model_input(x) (stored back!), x = step(model(x, t), t, x)
/// init_noise_sigma is the largest sigma (linspace, trailing) or sqrt(max^2 + 1)
/// (`leading_init_sigma`, leading spacing). For a second evaluation (Heun, KDPM2) diffusers' step()
/// output is the predictor, which the loop scales and hands back to the model and to step(); here
/// that predictor is the solver's evaluation_input, scaled into a scratch tensor, while x keeps the
/// step's (scaled) start, which is what diffusers stores in `self.sample`.
template <class SolverT>
Tensor k_loop(SolverT solver, const Trajectory& ve, Prediction prediction, int first_step = 0,
              bool leading_init_sigma = false) {
  HostBackend backend;
  Tensor x = harness_tensor(false);
  double max_sigma = 0;
  for (const TimePoint& p : ve.points)
    max_sigma = std::max(max_sigma, p.sigma);
  const double init_noise_sigma =
      leading_init_sigma ? std::sqrt(max_sigma * max_sigma + 1.0) : max_sigma;
  backend.combine(x, Term{static_cast<float>(init_noise_sigma), ConstView(x)});
  if (first_step > 0)
    backend.combine(x, Term{1.0f, ConstView(x)},
                    Term{static_cast<float>(ve[first_step].sigma), harness_tensor(true)});

  solver.begin(backend, ve, x.batch(), harness_shape);
  Tensor scaled(4, harness_shape), m(4, harness_shape), x0(4, harness_shape), eps(4, harness_shape);
  for (int i = first_step; i < ve.steps(); ++i) {
    SolverStep step{i, 0, &ve, NoiseKey{}};
    for (int e = 0; e < evaluations_of(solver, i); ++e) {
      step.evaluation = e;
      const TimePoint p = evaluation_point_of(solver, step);
      // sample / (sigma**2 + 1) ** 0.5 in float32, as torch evaluates it
      const auto s = static_cast<float>(p.sigma);
      const float root = std::sqrt(s * s + 1.0f);
      Tensor& in = e == 0 ? x : scaled;
      backend.map(
          in, [root](float v) { return v / root; }, evaluation_input_of(solver, step, x));
      dummy_model(p.timestep, in, m);
      diffusers_outputs(prediction, p.sigma, in, m, x0, eps);
      solver.update(backend, step, ModelOutput{x0, eps, m, prediction}, x);
    }
  }
  return x;
}

/// k-diffusion's get_ancestral_step from VE sigma s to sn at `eta`: the fresh noise sigma_up
/// (capped at sn) and the deterministic target sigma_down, with down^2 + up^2 = sn^2.
struct AncestralStep {
  double up, down;
};

inline AncestralStep ancestral_step(double s, double sn, double eta) {
  const double up = std::min(sn, eta * std::sqrt(sn * sn * (s * s - sn * sn) / (s * s)));
  return {up, std::sqrt(sn * sn - up * up)};
}

} // namespace tstitch::testing
