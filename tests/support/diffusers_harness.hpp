// SPDX-License-Identifier: Apache-2.0
// diffusers' scheduler-test harness (docs/parity.md §1) for the parity
// tests: the deterministic sample and noise, the dummy model, the sum and mean of |x| that
// diffusers asserts, custom timesteps, the full loops P and N (§1.2) with a tstitch solver, and
// the runs of a history-policy check at a model switch.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include "tstitch/sample.hpp"
#include "tstitch/schedule/discrete.hpp"

namespace tstitch::testing {

/// The per-sample shape of the harness of diffusers' 2-D scheduler tests, (4, 3, 8, 8).
inline constexpr Shape harness_shape{3, 8, 8};

/// diffusers' deterministic harness sample, a batch of 4: the element at (b, c, h, w) holds
/// k / count with k = ((c*H + h)*W + w)*4 + b (laid out (C, H, W, B), then permuted); the noise
/// (`reversed`) holds (count - 1 - k) / count. For the 2-D class k = ((c*8 + h)*8 + w)*4 + b over
/// 768 values; for the 1-D class (H = 1) k = (c*8 + w)*4 + b over 96 values.
inline Tensor harness_tensor(Shape shape, bool reversed) {
  Tensor t(4, shape);
  const auto count = static_cast<int>(4 * shape.numel());
  for (int b = 0; b < 4; ++b)
    for (int c = 0; c < shape.channels; ++c)
      for (int h = 0; h < shape.height; ++h)
        for (int w = 0; w < shape.width; ++w) {
          const auto k = static_cast<int>(((c * shape.height + h) * shape.width + w) * 4 + b);
          t.at(b, c, h, w) =
              static_cast<float>(reversed ? count - 1 - k : k) / static_cast<float>(count);
        }
  return t;
}

/// The 2-D harness sample (or, `reversed`, its noise).
inline Tensor harness_tensor(bool reversed = false) {
  return harness_tensor(harness_shape, reversed);
}

/// diffusers' dummy model: sample * t / (t + 1), in float32, t cast to float32 first.
inline void dummy_model(double timestep, ConstView x, View out) {
  const auto t = static_cast<float>(timestep);
  HostBackend{}.map(
      out, [t](float v) { return v * t / (t + 1.0f); }, x);
}

/// The dummy model as a denoiser of `prediction` on `shape`.
inline auto harness_model(Prediction prediction, Shape shape = harness_shape) {
  return make_denoiser(prediction, shape,
                       [](ConstView x, const StepContext& ctx, const NoCondition&, View out) {
                         dummy_model(ctx.point.timestep, x, out);
                       });
}

/// What diffusers' full-loop tests assert: the sum and the mean of |x|.
struct Result {
  double sum, mean;
};

inline Result abs_sum(const Tensor& x) {
  double sum = 0; // accumulated in double (§2.3)
  for (std::int64_t i = 0; i < x.numel(); ++i)
    sum += std::abs(static_cast<double>(x[i]));
  return {sum, sum / static_cast<double>(x.numel())};
}

/// A schedule whose n-step trajectory runs through given timesteps (diffusers'
/// set_timesteps(timesteps=[...])).
struct CustomTimesteps {
  const DiscreteSchedule* schedule;
  std::vector<double> timesteps;
  TimePoint point(double t) const { return schedule->point(t); }
  double timestep_at(double ve_sigma) const { return schedule->timestep_at(ve_sigma); }
  Trajectory trajectory(int) const { return schedule->trajectory_through(timesteps); }
};

/// Loop P (or N from start_step, §1.2) with n = 10 on the harness of `shape`, returning the final
/// latents. `solver` runs in place: pass a named one to inspect it afterwards.
template <class Schedule, class SolverT>
Tensor full_loop_latents(const Schedule& schedule, SolverT&& solver, Prediction prediction,
                         Shape shape, int start_step = -1) {
  auto model = harness_model(prediction, shape);
  Tensor x = harness_tensor(shape, false);
  SampleOptions options;
  options.steps = 10;
  if (start_step >= 0) { // "with_noise": add_noise at the first remaining timestep
    add_noise(x, harness_tensor(shape, true), schedule.trajectory(10)[start_step]);
    options.start_step = start_step;
  }
  sample(model, schedule, solver, x, NoCondition{}, options);
  return x;
}

/// full_loop_latents on the 2-D harness.
template <class Schedule, class SolverT>
Tensor full_loop_latents(const Schedule& schedule, SolverT&& solver, Prediction prediction,
                         int start_step = -1) {
  return full_loop_latents(schedule, std::forward<SolverT>(solver), prediction, harness_shape,
                           start_step);
}

/// full_loop_latents on DiscreteSchedule(schedule_options), as diffusers sums it.
template <class SolverT>
Result full_loop(const DiscreteScheduleOptions& schedule_options, SolverT&& solver,
                 Prediction prediction, Shape shape, int start_step = -1) {
  return abs_sum(full_loop_latents(DiscreteSchedule(schedule_options),
                                   std::forward<SolverT>(solver), prediction, shape, start_step));
}

/// full_loop on the 2-D harness.
template <class SolverT>
Result full_loop(const DiscreteScheduleOptions& schedule_options, SolverT&& solver,
                 Prediction prediction, int start_step = -1) {
  return full_loop(schedule_options, std::forward<SolverT>(solver), prediction, harness_shape,
                   start_step);
}

/// The runs of a history-policy check at a model switch (see switch_runs), each from the 2-D
/// harness sample.
template <class Probe> struct SwitchRuns {
  Tensor alone = harness_tensor(false); ///< the model alone, with the solver options as given
  Tensor kept = harness_tensor(false);  ///< through the stitcher, HistoryPolicy::keep
  Tensor reset = harness_tensor(false); ///< through the stitcher, HistoryPolicy::reset
  /// The model alone, reset: stopped before the switch step, then resumed there by a fresh solver.
  Tensor restarted = harness_tensor(false);
  int kept_switches = 0; ///< SampleResult::switches of the kept and reset runs
  int reset_switches = 0;
  std::vector<Probe> kept_after_step, reset_after_step; ///< probe(solver) after each step
};

/// The runs of a history-policy check at a model switch. Each samples the 2-D harness sample on
/// DiscreteSchedule(schedule_options) with a clean final point, with `options` (its steps and
/// seed; start_step and on_step are set here) and a fresh SolverT(solver_options): `model` alone;
/// `stitcher` (which switches before `switch_step`) with HistoryPolicy keep, then reset; and the
/// reset policy on `model` alone, stopped after step switch_step - 1 and resumed from the same
/// latents at switch_step. probe(solver) is recorded after each step of the kept and reset runs.
template <class SolverT, class SolverOptions, class Model, class Stitcher, class Probe>
auto switch_runs(Model& model, Stitcher& stitcher, SolverOptions solver_options,
                 DiscreteScheduleOptions schedule_options, const SampleOptions& options,
                 int switch_step, Probe probe) {
  using Value = std::decay_t<decltype(probe(std::declval<const SolverT&>()))>;
  schedule_options.final_point = FinalPoint::clean;
  const DiscreteSchedule schedule(schedule_options);
  auto run = [&](auto& denoiser, Tensor& x, int start_step, int stop_after,
                 std::vector<Value>* probes) {
    SolverT solver(solver_options);
    SampleOptions run_options = options;
    run_options.start_step = start_step;
    run_options.on_step = [&](const StepRecord& r) {
      if (probes)
        probes->push_back(probe(solver));
      return stop_after < 0 || r.step < stop_after;
    };
    return sample(denoiser, schedule, solver, x, NoCondition{}, run_options).switches;
  };
  SwitchRuns<Value> runs;
  run(model, runs.alone, 0, -1, nullptr);
  solver_options.history = HistoryPolicy::keep;
  runs.kept_switches = run(stitcher, runs.kept, 0, -1, &runs.kept_after_step);
  solver_options.history = HistoryPolicy::reset;
  runs.reset_switches = run(stitcher, runs.reset, 0, -1, &runs.reset_after_step);
  run(model, runs.restarted, 0, switch_step - 1, nullptr); // steps 0 .. switch_step - 1, then stop
  run(model, runs.restarted, switch_step, -1, nullptr);
  return runs;
}

} // namespace tstitch::testing
