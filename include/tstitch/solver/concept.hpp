// SPDX-License-Identifier: Apache-2.0
#pragma once

#include <concepts>
#include <cstdint>
#include <string_view>
#include <type_traits>

#include "tstitch/core/error.hpp"
#include "tstitch/core/host_backend.hpp"
#include "tstitch/core/philox.hpp"
#include "tstitch/core/prediction.hpp"
#include "tstitch/core/tensor.hpp"
#include "tstitch/schedule/trajectory.hpp"

namespace tstitch {

/// A model's output at one evaluation, converted into the spaces solvers work in.
struct ModelOutput {
  ConstView x0;          ///< (N, C, H, W) the data prediction
  ConstView eps;         ///< (N, C, H, W) the noise prediction
  ConstView raw;         ///< (N, C or 2C, H, W) the raw output, e.g. for learned variances
  Prediction prediction; ///< what `raw` means
};

/// What a multistep solver does with its history of model outputs when the serving model changes
/// in the middle of a trajectory (the sampling loop calls `solver.on_model_switch()` then).
enum class HistoryPolicy {
  keep, ///< the next model continues from the previous model's outputs (the T-Stitch paper)
  reset ///< restart at first order, as if the trajectory began at the switch
};

/// Where a solver stands: step i of the trajectory, moving from points[i] to points[i + 1].
struct SolverStep {
  int step = 0;
  int evaluation = 0; ///< model evaluation within the step (0 unless a solver takes several)
  const Trajectory* trajectory = nullptr;
  NoiseKey noise{}; ///< the solver's noise for this step: (seed, first sample, step, solver)

  [[nodiscard]] const TimePoint& from() const { return (*trajectory)[step]; }
  [[nodiscard]] const TimePoint& to() const { return (*trajectory)[step + 1]; }
  [[nodiscard]] bool last() const { return step + 1 == trajectory->steps(); }
};

/// 1. A solver prepares for a run: allocates its workspace once, for this batch and shape, so the
///    sampling loop allocates nothing per step.
template <class S, class Backend = HostBackend>
concept prepares_for_a_run = requires(S& s, Backend& backend, const Trajectory& trajectory,
                                      std::int64_t batch, Shape shape) {
  s.begin(backend, trajectory, batch, shape);
};

/// 2. It advances the latents x in place from points[i] to points[i + 1] given the model output.
template <class S, class Backend = HostBackend>
concept advances_latents = requires(S& s, Backend& backend, const SolverStep& step,
                                    const ModelOutput& output, View x) {
  s.update(backend, step, output, x);
};

/// A solver of the sampling ODE/SDE. It never knows which model produced an output.
///
/// Optional members:
///   void on_model_switch();   called before the first evaluation of a step served by a different
///                             model than the step before (multistep solvers apply their
///                             HistoryPolicy here)
/// and, for solvers that evaluate the model more than once per step (Heun):
///   int evaluations(int step) const;                      default 1
///   TimePoint evaluation_point(const SolverStep&) const;  default step.from()
///   ConstView evaluation_input(const SolverStep&, ConstView x) const;  default x
template <class S, class Backend = HostBackend>
concept Solver = prepares_for_a_run<S, Backend> && advances_latents<S, Backend>;

/// Makes `t` a workspace tensor of `backend` for (batch, shape): allocated by the backend on the
/// first run, kept while batch, shape and backend stay the same (so later runs allocate nothing),
/// re-allocated when one changes - including a solver moving from the host backend to a device
/// backend, whose kernels must never see host memory.
template <class Backend>
void ensure_workspace(Backend& backend, AnyTensor& t, std::int64_t batch, Shape shape) {
  using Held = std::remove_cvref_t<decltype(backend.allocate(batch, shape))>;
  if (!t.holds<Held>() || t.batch() != batch || t.shape() != shape)
    t = backend.allocate(batch, shape);
}

/// For solvers that only step towards the data (the stochastic ones, whose noise split needs the
/// noise level to fall): refuses a trajectory whose VE sigma grows at some step (an inversion),
/// naming the solver. Allocates nothing unless it throws.
inline void require_towards_data(const Trajectory& trajectory, std::string_view solver) {
  for (int i = 0; i < trajectory.steps(); ++i)
    if (trajectory[i + 1].ve_sigma() > trajectory[i].ve_sigma())
      throw_invalid_argument(solver, "a trajectory towards noise (an inversion)",
                             detail::concat("steps only towards the data; step ", i,
                                            " raises sigma / alpha from ", trajectory[i].ve_sigma(),
                                            " to ", trajectory[i + 1].ve_sigma(),
                                            " (DDIM with eta = 0 and the ODE DPM-Solvers invert)"));
}

/// The number of model evaluations a solver needs at step i.
template <class S> [[nodiscard]] int evaluations_of(const S& solver, int step) {
  if constexpr (requires {
                  { solver.evaluations(step) } -> std::convertible_to<int>;
                })
    return solver.evaluations(step);
  else
    return 1;
}

} // namespace tstitch
